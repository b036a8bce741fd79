//! The vault: the user's synced state (contacts, settings, devices, conversations) as Loro
//! documents, owned by a single actor thread, with an SQLite index for reading history.
//!
//! Layout ([ADR 0008](../../../docs/adr/0008-vault-as-many-documents.md)): one small `meta`
//! document (contacts, settings, devices), always in memory, and each conversation as a
//! series of chunk documents of about a thousand messages, loaded only while they are
//! written and evicted after. Every message is also a row of the `messages` table, written
//! in the same transaction as the chunk's update, and pages of history are read from there
//! without the actor. Memory therefore does not grow with history, and a page costs the same
//! at any depth.
//!
//! Persistence per document is an append-only log of Loro updates plus a snapshot that
//! compaction folds the log into. Writes are applied in the order they arrive; the actor
//! drains whatever is queued, commits, appends the updates and index rows in one transaction
//! (`synchronous=FULL`) and only then answers every writer of the batch: one fsync for many
//! writes, and no writer hears "saved" before its change is durable. The outbox's changes
//! ride in the same transaction ([`Vault::outbox`]).
//!
//! For sync between the user's devices the vault reports a version vector per document
//! ([`Vault::version`]), exports what another device lacks ([`Vault::export_since`]) and
//! imports what it is sent ([`Vault::import`]). Each opening writes under a fresh Loro peer
//! id, so an id is never reused, not even by a restored backup. This module does not talk
//! to other devices.

mod actor;
mod contacts;
mod conversations;
mod devices;
mod doc;
mod docs;
#[cfg(test)]
mod import_tests;
pub(crate) mod index;
mod migrate;
mod settings;

use std::collections::BTreeMap;

use loro::VersionVector;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use volli_core::{MessageId, UserId};

pub use contacts::Contact;
pub use conversations::{
    CHUNK_BYTES, CHUNK_MESSAGES, Change, Extra, FileItem, MAX_ITEM_LEN, MAX_LOADED,
    MAX_REACTION_LEN, MAX_REACTIONS, MessageKind, MessageStatus, StoredMessage,
};
pub use devices::DeviceRecord;
pub use doc::{VaultDoc, root};
pub use docs::DocId;
pub use index::Summary;

use crate::{Db, StoreError};

/// How the vault is opened.
#[derive(Clone, Debug)]
pub struct VaultOptions {
    /// Compact a document once this many updates follow its snapshot.
    pub compact_after_updates: u64,
    /// Compact a document once the updates after its snapshot reach this many bytes.
    pub compact_after_bytes: u64,
    /// Start a new chunk of a conversation once the newest holds this many messages.
    pub chunk_messages: u64,
    /// Called after each commit of the vault with how long its transaction took (metrics).
    pub on_commit: Option<CommitObserver>,
}

/// Observes the duration of the vault's commits.
#[derive(Clone)]
pub struct CommitObserver(pub std::sync::Arc<dyn Fn(std::time::Duration) + Send + Sync>);

impl std::fmt::Debug for CommitObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitObserver")
    }
}

impl Default for VaultOptions {
    fn default() -> Self {
        Self {
            compact_after_updates: 64,
            compact_after_bytes: 1 << 20,
            chunk_messages: CHUNK_MESSAGES,
            on_commit: None,
        }
    }
}

/// Figures about the vault's storage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VaultStats {
    /// Update rows stored after the documents' snapshots.
    pub updates: u64,
    /// Their total size.
    pub update_bytes: u64,
    /// Size of the documents' snapshots.
    pub snapshot_bytes: u64,
    /// Compactions performed since the vault was opened.
    pub compactions: u64,
    /// Documents stored.
    pub docs: u64,
    /// Documents in memory (the meta document and the chunks being written).
    pub loaded: u64,
    /// Messages in the index.
    pub messages: u64,
}

/// What a vault holds: the version vector of each of its documents. Sent to another device
/// so it can tell what this one lacks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VaultVersion {
    docs: BTreeMap<DocId, VersionVector>,
}

#[derive(Serialize, Deserialize)]
struct VersionWire {
    docs: Vec<(String, Vec<u8>)>,
}

impl VaultVersion {
    /// The version of an empty vault.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Documents it covers.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether it covers no document.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// The version of one document, if present.
    pub(crate) fn get(&self, id: &DocId) -> Option<&VersionVector> {
        self.docs.get(id)
    }

    /// Keeps only the documents `allow` admits.
    pub fn retain(&mut self, allow: impl Fn(&DocId) -> bool) {
        self.docs.retain(|id, _| allow(id));
    }

    /// Whether every document's version in `other` is contained in this one.
    pub fn includes(&self, other: &Self) -> bool {
        other.docs.iter().all(|(id, theirs)| {
            self.docs
                .get(id)
                .is_some_and(|ours| ours.includes_vv(theirs))
        })
    }

    /// Each document with a fingerprint of its version (the BLAKE3 hash of its encoded
    /// version vector): equal fingerprints, equal contents.
    pub fn fingerprints(&self) -> Vec<(DocId, [u8; 32])> {
        self.docs
            .iter()
            .map(|(id, vv)| (*id, *blake3::hash(&vv.encode()).as_bytes()))
            .collect()
    }

    /// Encodes it for the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let wire = VersionWire {
            docs: self
                .docs
                .iter()
                .map(|(id, vv)| (id.to_string(), vv.encode()))
                .collect(),
        };
        postcard::to_allocvec(&wire).unwrap_or_default()
    }

    /// Decodes what [`Self::to_bytes`] made.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StoreError> {
        let wire: VersionWire = postcard::from_bytes(bytes)
            .map_err(|e| StoreError::Document(format!("not a vault version: {e}")))?;
        let mut docs = BTreeMap::new();
        for (id, vv) in wire.docs {
            docs.insert(id.parse()?, VersionVector::decode(&vv)?);
        }
        Ok(Self { docs })
    }
}

/// Updates for another device: for each document it lacks something of, the blobs to import
/// in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultDelta {
    docs: Vec<(String, Vec<Vec<u8>>)>,
}

impl VaultDelta {
    /// Whether it carries nothing.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Documents it carries.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether it carries only conversation chunks (messages), none of the contacts,
    /// settings or devices documents.
    pub fn only_messages(&self) -> bool {
        self.docs
            .iter()
            .all(|(id, _)| matches!(id.parse(), Ok(DocId::Chunk { .. })))
    }

    /// Its size in bytes, roughly as sent.
    pub fn size(&self) -> usize {
        self.docs
            .iter()
            .map(|(id, blobs)| id.len() + blobs.iter().map(Vec::len).sum::<usize>())
            .sum()
    }

    /// Encodes it for the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes what [`Self::to_bytes`] made.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StoreError> {
        postcard::from_bytes(bytes)
            .map_err(|e| StoreError::Document(format!("not a vault delta: {e}")))
    }

    /// The same, also carrying `blobs` for document `id` (for tests, fuzzing and tools that
    /// make deltas by hand).
    pub fn with(mut self, id: DocId, blobs: Vec<Vec<u8>>) -> Self {
        self.push(id, blobs);
        self
    }

    /// The documents it carries (by name), each with its blobs in order.
    pub fn into_docs(self) -> Vec<(String, Vec<Vec<u8>>)> {
        self.docs
    }

    /// Adds what `other` carries.
    pub fn extend(&mut self, other: VaultDelta) {
        self.docs.extend(other.docs);
    }

    fn push(&mut self, id: DocId, blobs: Vec<Vec<u8>>) {
        self.docs.push((id.to_string(), blobs));
    }
}

/// What a write job may touch: the meta document, and the conversation chunks.
struct Ctx<'a> {
    meta: &'a VaultDoc,
    chunks: &'a mut conversations::Chunks,
}

type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type WriteJob = Box<dyn FnOnce(&mut Ctx<'_>) -> Finish + Send>;
type ReadJob = Box<dyn FnOnce(&VaultDoc) + Send>;
type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What an import from another device changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Whether anything new was learnt.
    pub new: bool,
    /// Documents left out because the sender may not write them.
    pub skipped: usize,
    /// Messages stored here that the other device had deleted, with their conversation.
    pub deleted: Vec<(UserId, MessageId)>,
}

/// Which documents an export may carry.
type DocFilter = Box<dyn Fn(&DocId) -> bool + Send>;

enum Command {
    Write(WriteJob),
    Outbox(crate::OutboxChange, Finish),
    Mls(Vec<crate::MlsChange>, Finish),
    Read(ReadJob),
    Version(Reply<VaultVersion>),
    Export(VaultVersion, usize, DocFilter, Reply<(VaultDelta, bool)>),
    Import(VaultDelta, DocFilter, Reply<Imported>),
    Compact(Reply<()>),
    Erase,
    Stats(Reply<VaultStats>),
    Json(Reply<serde_json::Value>),
    Close(oneshot::Sender<()>),
}

/// A handle to the vault actor. Cheap to clone; the actor stops when `close` is called or
/// every handle is dropped.
#[derive(Clone)]
pub struct Vault {
    tx: mpsc::Sender<Command>,
    contacts: doc::ContactCache,
    timers: index::Timers,
    db: Db,
    changed: tokio::sync::watch::Receiver<u64>,
}

impl Vault {
    /// Loads the vault from `db` (migrating a vault of the single-document layout first) and
    /// starts its actor.
    pub async fn open(db: Db, options: VaultOptions) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel(1024);
        let (ready_tx, ready_rx) = oneshot::channel();
        let runtime = tokio::runtime::Handle::current();
        let contacts = doc::ContactCache::default();
        let cache = contacts.clone();
        let timers = index::Timers::default();
        let actor_timers = timers.clone();
        let actor_db = db.clone();
        let (changed_tx, changed) = tokio::sync::watch::channel(0);
        std::thread::Builder::new()
            .name("volli-vault".into())
            .spawn(move || {
                actor::run(
                    actor_db,
                    options,
                    cache,
                    actor_timers,
                    changed_tx,
                    runtime,
                    rx,
                    ready_tx,
                )
            })?;
        ready_rx.await.map_err(|_| StoreError::Closed)??;
        Ok(Self {
            tx,
            contacts,
            timers,
            db,
            changed,
        })
    }

    /// Ticks whenever a change to any document is durable (a local write or an import): what
    /// sync with the user's other devices follows.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.clone()
    }

    /// Runs `f` against the contacts, settings and devices documents and returns once its
    /// changes are durable.
    ///
    /// `f` must validate before it mutates: if it returns an error its changes (if any)
    /// are still saved with the batch.
    pub(crate) async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&VaultDoc) -> Result<R, StoreError> + Send + 'static,
    {
        self.write_ctx_queued(move |ctx| f(ctx.meta)).await?.await
    }

    /// Queues `f` against every document; returns as soon as the actor has the job: every
    /// later call sees its changes. The returned future resolves once they are durable.
    async fn write_ctx_queued<R, F>(
        &self,
        f: F,
    ) -> Result<impl Future<Output = Result<R, StoreError>> + Send + 'static, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Ctx<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: WriteJob = Box::new(move |ctx| {
            let result = f(ctx);
            Box::new(move |saved: Result<(), StoreError>| {
                let _ = tx.send(saved.and(result));
            })
        });
        self.send(Command::Write(job)).await?;
        Ok(async move { rx.await.map_err(|_| StoreError::Closed)? })
    }

    /// Commits an outbox change with the vault's next batch; returns once it is durable.
    pub async fn outbox(&self, change: crate::OutboxChange) -> Result<(), StoreError> {
        self.outbox_queued(change).await?.await
    }

    /// Like [`Self::outbox`], but returns as soon as the actor has the change; the returned
    /// future resolves once it is durable. A change and a vault write queued one after the
    /// other commit in the same transaction unless the batch was full, and never in the
    /// opposite order.
    pub async fn outbox_queued(
        &self,
        change: crate::OutboxChange,
    ) -> Result<impl Future<Output = Result<(), StoreError>> + Send + 'static, StoreError> {
        let (tx, rx) = oneshot::channel();
        let finish: Finish = Box::new(move |saved| {
            let _ = tx.send(saved);
        });
        self.send(Command::Outbox(change, finish)).await?;
        Ok(async move { rx.await.map_err(|_| StoreError::Closed)? })
    }

    /// Queues changes to this device's MLS state; returns as soon as the actor has them. The
    /// returned future resolves once they are durable. Like outbox changes, they commit with
    /// the batch they were queued in, never after anything queued later: queue the state an
    /// encryption left before the mail it made, and a decrypted message before the state
    /// that no longer opens it.
    pub async fn mls_queued(
        &self,
        changes: Vec<crate::MlsChange>,
    ) -> Result<impl Future<Output = Result<(), StoreError>> + Send + 'static, StoreError> {
        let (tx, rx) = oneshot::channel();
        let finish: Finish = Box::new(move |saved| {
            let _ = tx.send(saved);
        });
        self.send(Command::Mls(changes, finish)).await?;
        Ok(async move { rx.await.map_err(|_| StoreError::Closed)? })
    }

    /// Runs `f` against the contacts, settings and devices documents. It sees every earlier
    /// write, including those still being committed.
    pub(crate) async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&VaultDoc) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Read(Box::new(move |doc| {
            let _ = tx.send(f(doc));
        })))
        .await?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(command(tx)).await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// What this vault holds, per document, once every earlier write is durable (a change
    /// another device has seen must never be lost here).
    pub async fn version(&self) -> Result<VaultVersion, StoreError> {
        self.ask(Command::Version).await
    }

    /// What the holder of `version` lacks, up to about `budget` bytes (at least one
    /// document's worth); the flag says whether more remains.
    pub async fn export_since(
        &self,
        version: VaultVersion,
        budget: usize,
    ) -> Result<(VaultDelta, bool), StoreError> {
        self.export_where(version, budget, |_| true).await
    }

    /// Like [`Self::export_since`], carrying only the documents `allow` admits (what another
    /// device may hold).
    pub async fn export_where(
        &self,
        version: VaultVersion,
        budget: usize,
        allow: impl Fn(&DocId) -> bool + Send + 'static,
    ) -> Result<(VaultDelta, bool), StoreError> {
        self.ask(|tx| Command::Export(version, budget, Box::new(allow), tx))
            .await
    }

    /// Imports updates from another device and persists them. Returns what it changed. A
    /// delta that does not import changes nothing.
    pub async fn import(&self, delta: VaultDelta) -> Result<Imported, StoreError> {
        self.import_from(delta, |_| true).await
    }

    /// Like [`Self::import`], taking only the documents `allow` admits (what the sending
    /// device may write; the rest is skipped). Whatever the sender, an update that would
    /// undo what only the user key signs — a revocation, a key generation, a card, a
    /// certificate — roll back a contact's card, or break a document's bounds refuses the
    /// whole delta ([`StoreError::Refused`]).
    pub async fn import_from(
        &self,
        delta: VaultDelta,
        allow: impl Fn(&DocId) -> bool + Send + 'static,
    ) -> Result<Imported, StoreError> {
        self.ask(|tx| Command::Import(delta, Box::new(allow), tx))
            .await
    }

    /// Records that another device (`device`, its peer id) holds at least `version`.
    pub async fn acknowledge(
        &self,
        device: &str,
        version: &VaultVersion,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.writer().begin().await?;
        for (id, vv) in &version.docs {
            sqlx::query(
                "INSERT INTO vault_acks (device, doc, version) VALUES (?, ?, ?) \
                 ON CONFLICT (device, doc) DO UPDATE SET version = excluded.version",
            )
            .bind(device)
            .bind(id.to_string())
            .bind(vv.encode())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        // What waited for this device to catch up (deleted text kept in history) may go now.
        let _ = self.tx.try_send(Command::Erase);
        Ok(())
    }

    /// What another device last acknowledged holding (empty if it never did).
    pub async fn acknowledged(&self, device: &str) -> Result<VaultVersion, StoreError> {
        let rows: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT doc, version FROM vault_acks WHERE device = ?")
                .bind(device)
                .fetch_all(self.db.pool())
                .await?;
        let mut docs = BTreeMap::new();
        for (id, vv) in rows {
            docs.insert(id.parse()?, VersionVector::decode(&vv)?);
        }
        Ok(VaultVersion { docs })
    }

    /// Forgets what `device` acknowledged (it was revoked).
    pub async fn forget_device(&self, device: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM vault_acks WHERE device = ?")
            .bind(device)
            .execute(self.db.writer())
            .await?;
        Ok(())
    }

    /// Folds every document's update log into a fresh snapshot now.
    pub async fn compact(&self) -> Result<(), StoreError> {
        self.ask(Command::Compact).await
    }

    /// Storage figures.
    pub async fn stats(&self) -> Result<VaultStats, StoreError> {
        self.ask(Command::Stats).await
    }

    /// Saves what is queued and stops the actor. Later calls fail with `Closed`.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Every document as JSON, keyed by name, for tests and diagnostics. Loads every
    /// document: not for large vaults.
    pub async fn to_json(&self) -> Result<serde_json::Value, StoreError> {
        self.ask(Command::Json).await
    }

    async fn send(&self, command: Command) -> Result<(), StoreError> {
        self.tx.send(command).await.map_err(|_| StoreError::Closed)
    }
}
