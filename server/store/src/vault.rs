//! The vault: the user's synced state (contacts, conversations, settings, devices) as one
//! Loro document, owned by a single actor thread.
//!
//! Persistence is an append-only log of Loro updates plus periodic snapshots in SQLite.
//! Writes are applied in the order they arrive; the actor drains whatever is queued, commits
//! the Loro transaction, appends one update row (`synchronous=FULL`) and only then answers
//! every writer of the batch: one fsync for many writes, and no writer hears "saved" before
//! its change is durable. The outbox's changes ride in the same transaction
//! ([`Vault::outbox`]), so a sent message's outbox row and conversation entry cost one fsync
//! between them, and so do a delivery's status change and outbox removal. Compaction folds
//! the log into a new snapshot in one transaction.
//!
//! The actor runs on its own OS thread, so Loro work (including exporting large snapshots)
//! never blocks the async workers. This module does not sync with other devices; it exposes
//! `import` and `export_since` for the component that does.

mod actor;
mod contacts;
mod conversations;
mod devices;
mod doc;
mod settings;

use tokio::sync::{mpsc, oneshot};

pub use contacts::Contact;
pub use conversations::{MessageStatus, StoredMessage};
pub use devices::DeviceRecord;
pub use doc::{VaultDoc, root};

use crate::{Db, StoreError};

/// How the vault is opened.
#[derive(Clone, Debug)]
pub struct VaultOptions {
    /// This device's Loro peer id. Must be unique per device and stable across restarts.
    pub peer: u64,
    /// Compact once this many updates follow the snapshot.
    pub compact_after_updates: u64,
    /// Compact once the updates after the snapshot reach this many bytes.
    pub compact_after_bytes: u64,
}

impl VaultOptions {
    /// Default thresholds for the given device peer id.
    pub fn for_peer(peer: u64) -> Self {
        Self {
            peer,
            compact_after_updates: 1_000,
            compact_after_bytes: 4 << 20,
        }
    }
}

/// Figures about the vault's storage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VaultStats {
    /// Update rows stored after the latest snapshot.
    pub updates: u64,
    /// Their total size.
    pub update_bytes: u64,
    /// Size of the latest snapshot (0 if none yet).
    pub snapshot_bytes: u64,
    /// Compactions performed since the vault was opened.
    pub compactions: u64,
}

type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type WriteJob = Box<dyn FnOnce(&VaultDoc) -> Finish + Send>;
type ReadJob = Box<dyn FnOnce(&VaultDoc) + Send>;

enum Command {
    Write(WriteJob),
    Outbox(crate::OutboxChange, Finish),
    Read(ReadJob),
    /// A read that must not see unsaved changes: what leaves this device.
    ReadSaved(ReadJob),
    Import(Vec<u8>, oneshot::Sender<Result<bool, StoreError>>),
    Compact(oneshot::Sender<Result<(), StoreError>>),
    Stats(oneshot::Sender<VaultStats>),
    Close(oneshot::Sender<()>),
}

/// A handle to the vault actor. Cheap to clone; the actor stops when `close` is called or
/// every handle is dropped.
#[derive(Clone)]
pub struct Vault {
    tx: mpsc::Sender<Command>,
    contacts: doc::ContactCache,
}

impl Vault {
    /// Loads the vault from `db` and starts its actor.
    pub async fn open(db: Db, options: VaultOptions) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel(1024);
        let (ready_tx, ready_rx) = oneshot::channel();
        let runtime = tokio::runtime::Handle::current();
        let contacts = doc::ContactCache::default();
        let cache = contacts.clone();
        std::thread::Builder::new()
            .name("volli-vault".into())
            .spawn(move || actor::run(db, options, cache, runtime, rx, ready_tx))?;
        ready_rx.await.map_err(|_| StoreError::Closed)??;
        Ok(Self { tx, contacts })
    }

    /// Runs `f` against the document and returns once its changes are durable.
    ///
    /// `f` must validate before it mutates: if it returns an error its changes (if any)
    /// are still saved with the batch.
    pub(crate) async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&VaultDoc) -> Result<R, StoreError> + Send + 'static,
    {
        self.write_queued(f).await?.await
    }

    /// Like [`Self::write`], but returns as soon as the actor has the job: every later call
    /// sees its changes. The returned future resolves once they are durable.
    pub(crate) async fn write_queued<R, F>(
        &self,
        f: F,
    ) -> Result<impl Future<Output = Result<R, StoreError>> + Send + 'static, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&VaultDoc) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: WriteJob = Box::new(move |doc| {
            let result = f(doc);
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

    /// Runs `f` against the document. It sees every earlier write, including those still
    /// being committed.
    pub(crate) async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&VaultDoc) -> R + Send + 'static,
    {
        self.ask(Command::Read, f).await
    }

    /// Like [`Self::read`], but only after every earlier write is durable. For what leaves
    /// the device: a change another device has seen must never be lost here, or this
    /// device would reuse its Loro operation ids after a restart.
    pub(crate) async fn read_saved<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&VaultDoc) -> R + Send + 'static,
    {
        self.ask(Command::ReadSaved, f).await
    }

    /// Sends `f` as a read job of the given kind and waits for its answer.
    async fn ask<R, F>(&self, kind: fn(ReadJob) -> Command, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&VaultDoc) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.send(kind(Box::new(move |doc| {
            let _ = tx.send(f(doc));
        })))
        .await?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// Imports updates from another device and persists them. Returns whether anything new
    /// was learnt.
    pub async fn import(&self, bytes: Vec<u8>) -> Result<bool, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Import(bytes, tx)).await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// This vault's version vector, encoded, to send to another device.
    pub async fn version(&self) -> Result<Vec<u8>, StoreError> {
        self.read_saved(|doc| doc.loro().oplog_vv().encode()).await
    }

    /// Every update the holder of `version` (an encoded version vector from [`Self::version`];
    /// `None` for an empty vault) is missing.
    pub async fn export_since(&self, version: Option<Vec<u8>>) -> Result<Vec<u8>, StoreError> {
        self.read_saved(move |doc| {
            let vv = match version {
                Some(bytes) => loro::VersionVector::decode(&bytes)?,
                None => loro::VersionVector::default(),
            };
            Ok(doc.loro().export(loro::ExportMode::updates(&vv))?)
        })
        .await?
    }

    /// Folds the update log into a fresh snapshot now.
    pub async fn compact(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Compact(tx)).await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Storage figures.
    pub async fn stats(&self) -> Result<VaultStats, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Stats(tx)).await?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// Saves what is queued and stops the actor. Later calls fail with `Closed`.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// The whole document as JSON, for tests and diagnostics.
    pub async fn to_json(&self) -> Result<serde_json::Value, StoreError> {
        self.read(|doc| {
            serde_json::to_value(doc.loro().get_deep_value())
                .map_err(|e| StoreError::Document(e.to_string()))
        })
        .await?
    }

    async fn send(&self, command: Command) -> Result<(), StoreError> {
        self.tx.send(command).await.map_err(|_| StoreError::Closed)
    }
}
