//! The vault actor: the only code that touches the Loro documents and the vault tables.

use std::collections::BTreeMap;
use std::mem;

use loro::VersionVector;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use volli_core::Timestamp;

use super::conversations::{ChunkChanges, Chunks};
use super::doc::{ContactCache, VaultDoc, root};
use super::docs::{self, DocId, DocWrite, Stored};
use super::{
    Command, Ctx, Finish, Imported, VaultDelta, VaultOptions, VaultStats, VaultVersion, contacts,
    devices, index, migrate, settings,
};
use crate::{Db, MlsChange, OutboxChange, StoreError};
use tokio::sync::watch;

/// Most writes folded into one commit.
const MAX_BATCH: usize = 256;
/// Most documents taken from one delta.
const MAX_IMPORT_DOCS: usize = 4096;

struct Actor {
    db: Db,
    runtime: Handle,
    options: VaultOptions,
    peer: u64,
    /// The contacts, settings and devices documents.
    meta: VaultDoc,
    /// What SQLite holds of each of them, in the order of [`DocId::META`].
    meta_stored: [Stored; 3],
    chunks: Chunks,
    compactions: u64,
    /// Counts committed changes to any document, for whoever syncs them.
    changed: watch::Sender<u64>,
    /// Conversations' timers, as the vault's readers keep them.
    timers: index::Timers,
}

/// Opens the three always-loaded documents.
async fn open_meta(db: &Db, peer: u64) -> Result<([loro::LoroDoc; 3], [Stored; 3]), StoreError> {
    let [c, s, d] = DocId::META;
    let (c, s, d) = (
        docs::open(db, c, peer).await?,
        docs::open(db, s, peer).await?,
        docs::open(db, d, peer).await?,
    );
    Ok(([c.doc, s.doc, d.doc], [c.stored, s.stored, d.stored]))
}

/// The index of a meta document in [`DocId::META`].
fn meta_index(id: DocId) -> Option<usize> {
    DocId::META.iter().position(|m| *m == id)
}

#[allow(clippy::too_many_arguments)] // the handles it is wired from, once, in `Vault::open`
pub(super) fn run(
    db: Db,
    options: VaultOptions,
    contacts: ContactCache,
    timers: index::Timers,
    changed: watch::Sender<u64>,
    runtime: Handle,
    mut rx: mpsc::Receiver<Command>,
    ready: oneshot::Sender<Result<(), StoreError>>,
) {
    let opened = runtime.block_on(async {
        let peer = new_peer(&db).await?;
        migrate::run(&db, peer).await?;
        let meta = open_meta(&db, peer).await?;
        Ok::<_, StoreError>((peer, meta))
    });
    let (peer, meta) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let (meta_docs, meta_stored) = meta;
    let mut actor = Actor {
        meta: VaultDoc::new(meta_docs, contacts),
        meta_stored,
        chunks: Chunks::new(db.clone(), runtime.clone(), peer, options.chunk_messages),
        db,
        runtime,
        options,
        peer,
        compactions: 0,
        changed,
        timers,
    };
    let _ = ready.send(Ok(()));

    while let Some(first) = rx.blocking_recv() {
        let mut pending: Vec<Finish> = Vec::new();
        let mut side = Side::default();
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Write(job) => {
                    let mut ctx = Ctx {
                        meta: &actor.meta,
                        chunks: &mut actor.chunks,
                    };
                    pending.push(job(&mut ctx));
                }
                Command::Outbox(change, finish) => {
                    side.outbox.push(change);
                    pending.push(finish);
                }
                Command::Mls(changes, finish) => {
                    side.mls.extend(changes);
                    pending.push(finish);
                }
                // Reads see the document as it is, including writes of this batch that are
                // about to be committed; flushing before each read would split every batch
                // at every interleaved read and cost one fsync each. No writer hears
                // "saved" any earlier for it.
                Command::Read(job) => job(&actor.meta),
                other => {
                    actor.flush(mem::take(&mut pending), mem::take(&mut side));
                    if let Some(reply) = actor.handle(other) {
                        let _ = reply.send(());
                        return;
                    }
                }
            }
            if pending.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        actor.flush(pending, side);
    }
    actor.flush(Vec::new(), Side::default());
}

/// Changes to tables beside the documents that commit with the batch they were queued in.
#[derive(Default)]
struct Side {
    outbox: Vec<OutboxChange>,
    mls: Vec<MlsChange>,
}

impl Side {
    fn is_empty(&self) -> bool {
        self.outbox.is_empty() && self.mls.is_empty()
    }
}

/// A Loro peer id never used before by this vault, recorded as used.
async fn new_peer(db: &Db) -> Result<u64, StoreError> {
    loop {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes)
            .map_err(|_| StoreError::Document("no randomness available".into()))?;
        // Loro reserves the top of the range; stay well clear of it.
        let peer = u64::from_le_bytes(bytes) >> 1;
        let inserted = sqlx::query(
            "INSERT INTO vault_peers (peer, opened_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(i64::try_from(peer).unwrap_or(i64::MAX))
        .bind(Timestamp::now().as_millis())
        .execute(db.writer())
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(peer);
        }
    }
}

impl Actor {
    /// Handles a command that is not part of a batch. Returns the reply channel when the
    /// actor must stop.
    fn handle(&mut self, command: Command) -> Option<oneshot::Sender<()>> {
        match command {
            Command::Write(_) | Command::Read(_) | Command::Outbox(..) | Command::Mls(..) => {
                unreachable!("handled in the batch loop")
            }
            Command::Version(reply) => {
                let _ = reply.send(self.runtime.block_on(version(&self.db)));
            }
            Command::Export(version, budget, allow, reply) => {
                let _ = reply.send(self.export(&version, budget, allow.as_ref()));
            }
            Command::Import(delta, allow, reply) => {
                // The bytes come from another device: a panic inside the CRDT library on
                // them must not take the vault thread (and every write after it) down.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.import(delta, allow.as_ref())
                }))
                .unwrap_or_else(|_| {
                    Err(StoreError::Refused(
                        "the update made the document library fail".into(),
                    ))
                });
                if result.is_err() {
                    self.reload();
                }
                let _ = reply.send(result);
            }
            Command::Compact(reply) => {
                let _ = reply.send(self.compact_all());
            }
            Command::Erase => {
                for id in self.chunks.erase_pending() {
                    if self.chunks.load(id).is_ok() {
                        self.compact(id);
                    }
                }
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Command::Json(reply) => {
                let _ = reply.send(self.json());
            }
            Command::Close(reply) => return Some(reply),
        }
        None
    }

    /// Commits the batch's changes to every document, its index rows, its outbox and MLS
    /// changes in one transaction, then answers the writers.
    fn flush(&mut self, finishers: Vec<Finish>, side: Side) {
        let result = self.persist(&side);
        let due = match &result {
            Ok(due) => due.clone(),
            Err(e) => {
                tracing::error!(error = %e, "vault write failed; reloading the last saved state");
                self.reload();
                Vec::new()
            }
        };
        for finish in finishers {
            finish(match &result {
                Ok(_) => Ok(()),
                Err(e) => Err(StoreError::Document(format!("not saved: {e}"))),
            });
        }
        for id in due {
            self.compact(id);
        }
    }

    /// Writes what changed; returns the documents due for compaction.
    fn persist(&mut self, side: &Side) -> Result<Vec<DocId>, StoreError> {
        let mut meta = Vec::new();
        for (i, id) in DocId::META.into_iter().enumerate() {
            if let Some(doc) = self.meta.doc(id)
                && let Some(write) = DocWrite::since(id, doc, &self.meta_stored[i])?
            {
                meta.push(write);
            }
        }
        let chunks = self.chunks.changes()?;
        if meta.is_empty()
            && chunks.writes.is_empty()
            && chunks.rows.is_empty()
            && chunks.statuses.is_empty()
            && side.is_empty()
        {
            return Ok(Vec::new());
        }
        self.write(&meta, &chunks, side)?;
        Ok(self.committed(meta, &chunks))
    }

    /// One transaction: document updates, index rows, outbox and MLS changes.
    fn write(
        &self,
        meta: &[DocWrite],
        chunks: &ChunkChanges,
        side: &Side,
    ) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let written = self.runtime.block_on(async {
            let now = Timestamp::now();
            let mut tx = self.db.writer().begin().await?;
            for write in meta.iter().chain(&chunks.writes) {
                write.apply(&mut tx, now).await?;
            }
            let ids: Vec<_> = chunks.unsettled.iter().map(|(id, _)| *id).collect();
            let known = index::existing(&mut tx, &ids).await?;
            index::upsert(&mut tx, &chunks.rows).await?;
            index::set_statuses(&mut tx, &chunks.statuses).await?;
            crate::messaging::apply_outbox(&mut tx, &side.outbox).await?;
            crate::mls::apply(&mut tx, &side.mls).await?;
            tx.commit().await?;
            self.timers.written(&chunks.rows);
            for (id, new) in &chunks.unsettled {
                let _ = new.set(!known.contains(id));
            }
            Ok(())
        });
        if written.is_ok()
            && let Some(observe) = &self.options.on_commit
        {
            (observe.0)(started.elapsed());
        }
        written
    }

    /// Records what a successful [`Self::write`] stored; returns the documents due for
    /// compaction.
    fn committed(&mut self, meta: Vec<DocWrite>, chunks: &ChunkChanges) -> Vec<DocId> {
        let limits = (
            self.options.compact_after_updates,
            self.options.compact_after_bytes,
        );
        let mut due = self.chunks.committed(chunks, limits);
        if !meta.is_empty() {
            self.changed.send_modify(|n| *n += 1);
        }
        for write in meta {
            let Some(i) = meta_index(write.id) else {
                continue;
            };
            let stored = &mut self.meta_stored[i];
            stored.persisted = write.version.clone();
            stored.log_rows += write.blobs.len() as u64;
            stored.log_bytes += write.len();
            if stored.log_rows >= limits.0 || stored.log_bytes >= limits.1 {
                due.push(write.id);
            }
        }
        if !chunks.writes.is_empty() {
            self.changed.send_modify(|n| *n += 1);
        }
        due
    }

    fn import(
        &mut self,
        delta: VaultDelta,
        allow: &(dyn Fn(&DocId) -> bool + Send),
    ) -> Result<Imported, StoreError> {
        if delta.docs.len() > MAX_IMPORT_DOCS {
            return Err(StoreError::Refused(format!(
                "a delta may carry at most {MAX_IMPORT_DOCS} documents"
            )));
        }
        let mut meta = Vec::new();
        let mut chunks = ChunkChanges::default();
        let mut learnt = false;
        let mut skipped = 0;
        for (name, blobs) in delta.docs {
            let id: DocId = name.parse()?;
            if !allow(&id) {
                skipped += 1;
                continue;
            }
            match id {
                DocId::Contacts | DocId::Settings | DocId::Devices => {
                    if let Some((write, new)) = self.import_meta(id, blobs)? {
                        learnt |= new;
                        meta.push(write);
                    }
                }
                DocId::Chunk { .. } => {
                    if let Some((changes, new)) = self.chunks.import(id, blobs)? {
                        learnt |= new;
                        chunks.writes.extend(changes.writes);
                        chunks.rows.extend(changes.rows);
                        chunks.deleted.extend(changes.deleted);
                    }
                }
            }
        }
        if skipped > 0 {
            tracing::warn!(
                documents = skipped,
                "left out documents the sending device may not write"
            );
        }
        if meta.is_empty() && chunks.writes.is_empty() {
            return Ok(Imported {
                skipped,
                ..Imported::default()
            });
        }
        self.write(&meta, &chunks, &Side::default())?;
        for id in self.committed(meta, &chunks) {
            self.compact(id);
        }
        Ok(Imported {
            new: learnt,
            skipped,
            deleted: mem::take(&mut chunks.deleted),
        })
    }

    /// Imports into one of the contacts, settings and devices documents; the write to make,
    /// and whether anything is new. Refused (the caller reloads what is stored) when the
    /// result breaks what that document must keep (see `devices::check`,
    /// `contacts::check`, `settings::check`).
    fn import_meta(
        &mut self,
        id: DocId,
        blobs: Vec<Vec<u8>>,
    ) -> Result<Option<(DocWrite, bool)>, StoreError> {
        self.meta.forget_contacts();
        let before = Before::of(id, &self.meta);
        let doc = self.meta.doc(id).ok_or_else(|| {
            StoreError::Document("not a contacts, settings or devices document".into())
        })?;
        doc.commit();
        let before_vv = doc.oplog_vv();
        let had_pending = doc.export_pending_updates()?.is_some();
        docs::import_all(doc, &blobs)?;
        let after = doc.oplog_vv();
        let now_pending = doc.export_pending_updates()?.is_some();
        if before_vv == after && !now_pending && !had_pending {
            return Ok(None);
        }
        before
            .check(&self.meta)
            .map_err(|reason| StoreError::Refused(format!("{id}: {reason}")))?;
        // Keep the raw bytes: they may hold updates still waiting for their dependencies.
        let new = before_vv != after;
        Ok(Some((
            DocWrite {
                id,
                blobs,
                version: after,
                messages: 0,
                bytes: 0,
            },
            new,
        )))
    }

    /// What the holder of `remote` lacks, document by document, up to about `budget` bytes.
    fn export(
        &mut self,
        remote: &VaultVersion,
        budget: usize,
        allow: &(dyn Fn(&DocId) -> bool + Send),
    ) -> Result<(VaultDelta, bool), StoreError> {
        let local = self.runtime.block_on(version(&self.db))?;
        let mut delta = VaultDelta::default();
        let mut size = 0;
        for (id, ours) in &local.docs {
            if !allow(id) {
                continue;
            }
            let theirs = remote.get(id);
            if theirs.is_some_and(|t| t.includes_vv(ours)) {
                continue;
            }
            if size >= budget && !delta.is_empty() {
                return Ok((delta, true));
            }
            let blobs = match (theirs, id) {
                // A document the other side does not have at all goes as stored: no need
                // to load it here.
                (None, _) => self.runtime.block_on(stored_blobs(&self.db, *id))?,
                (Some(theirs), DocId::Chunk { .. }) => vec![self.chunks.export(*id, theirs)?],
                (Some(theirs), meta) => match self.meta.doc(*meta) {
                    // Stored without the history the other device lacks: it gets it whole.
                    Some(doc)
                        if doc.is_shallow()
                            && !theirs.includes_vv(&doc.shallow_since_vv().to_vv()) =>
                    {
                        vec![doc.export(loro::ExportMode::Snapshot)?]
                    }
                    Some(doc) => vec![doc.export(loro::ExportMode::updates(theirs))?],
                    None => continue,
                },
            };
            size += blobs.iter().map(Vec::len).sum::<usize>();
            delta.push(*id, blobs);
        }
        Ok((delta, false))
    }

    /// Folds document `id`'s log into a snapshot; failures are logged and the log kept.
    fn compact(&mut self, id: DocId) {
        let result = match (meta_index(id), self.meta.doc(id)) {
            (Some(i), Some(doc)) => {
                // History every other device already holds is of no use to anyone: drop it,
                // so these always-loaded documents (and what a pairing hands over) stay the
                // size of what they hold.
                let shallow = self
                    .runtime
                    .block_on(docs::others_hold(&self.db, id, &doc.oplog_vv()))
                    .unwrap_or(false);
                let done = self
                    .runtime
                    .block_on(docs::compact(&self.db, id, doc, shallow));
                if done.is_ok() {
                    self.meta_stored[i].log_rows = 0;
                    self.meta_stored[i].log_bytes = 0;
                }
                done
            }
            _ => self.chunks.compact(id),
        };
        match result {
            Ok(bytes) => {
                self.compactions += 1;
                tracing::debug!(doc = %id, snapshot_bytes = bytes, "vault document compacted");
            }
            Err(e) => {
                tracing::warn!(doc = %id, error = %e, "vault compaction failed; the log is kept")
            }
        }
    }

    /// Compacts every document that has a log, loading each in turn.
    fn compact_all(&mut self) -> Result<(), StoreError> {
        let ids: Vec<(String,)> = self.runtime.block_on(
            sqlx::query_as("SELECT DISTINCT doc FROM vault_log").fetch_all(self.db.pool()),
        )?;
        for (name,) in ids {
            let id: DocId = name.parse()?;
            match (meta_index(id), self.meta.doc(id)) {
                (Some(i), Some(doc)) => {
                    self.runtime
                        .block_on(docs::compact(&self.db, id, doc, false))?;
                    self.meta_stored[i].log_rows = 0;
                    self.meta_stored[i].log_bytes = 0;
                }
                _ => {
                    self.chunks.load(id)?;
                    self.chunks.compact(id)?;
                }
            }
            self.compactions += 1;
        }
        Ok(())
    }

    fn stats(&self) -> Result<VaultStats, StoreError> {
        let (updates, update_bytes, snapshot_bytes, docs, messages): (i64, i64, i64, i64, i64) =
            self.runtime.block_on(
                sqlx::query_as(
                    "SELECT (SELECT COUNT(*) FROM vault_log), \
                            (SELECT COALESCE(SUM(LENGTH(bytes)), 0) FROM vault_log), \
                            (SELECT COALESCE(SUM(LENGTH(snapshot)), 0) FROM vault_docs), \
                            (SELECT COUNT(*) FROM vault_docs), \
                            (SELECT COUNT(*) FROM messages)",
                )
                .fetch_one(self.db.pool()),
            )?;
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(VaultStats {
            updates: n(updates),
            update_bytes: n(update_bytes),
            snapshot_bytes: n(snapshot_bytes),
            compactions: self.compactions,
            docs: n(docs),
            loaded: DocId::META.len() as u64 + self.chunks.loaded() as u64,
            messages: n(messages),
        })
    }

    fn json(&mut self) -> Result<serde_json::Value, StoreError> {
        let local = self.runtime.block_on(version(&self.db))?;
        let mut out = serde_json::Map::new();
        for id in local.docs.keys() {
            let value = match self.meta.doc(*id) {
                Some(doc) => doc.get_deep_value(),
                None => {
                    let opened = self
                        .runtime
                        .block_on(docs::open(&self.db, *id, self.peer))?;
                    opened.doc.get_deep_value()
                }
            };
            out.insert(
                id.to_string(),
                serde_json::to_value(value).map_err(|e| StoreError::Document(e.to_string()))?,
            );
        }
        Ok(serde_json::Value::Object(out))
    }

    /// Replaces every document in memory with what SQLite holds, dropping unsaved changes.
    fn reload(&mut self) {
        self.chunks.reset();
        self.meta.forget_contacts();
        match self.runtime.block_on(open_meta(&self.db, self.peer)) {
            Ok((docs, stored)) => {
                self.meta = VaultDoc::new(docs, self.meta.contacts());
                self.meta_stored = stored;
            }
            Err(e) => tracing::error!(error = %e, "vault reload failed"),
        }
    }
}

/// What an import into one of the always-loaded documents must be checked against.
enum Before {
    Contacts(std::collections::BTreeMap<String, Timestamp>),
    Settings,
    Devices(Box<devices::View>),
}

impl Before {
    fn of(id: DocId, meta: &VaultDoc) -> Self {
        match id {
            DocId::Contacts => Self::Contacts(contacts::issued(meta)),
            DocId::Devices => Self::Devices(Box::new(devices::View::of(meta))),
            DocId::Settings | DocId::Chunk { .. } => Self::Settings,
        }
    }

    fn check(&self, meta: &VaultDoc) -> Result<(), String> {
        match self {
            Self::Contacts(issued) => {
                contacts::check(issued, meta)?;
                meta.doc(DocId::Contacts)
                    .map_or(Ok(()), |d| devices::only_roots(d, &[root::CONTACTS]))
            }
            Self::Settings => {
                settings::check(meta)?;
                meta.doc(DocId::Settings)
                    .map_or(Ok(()), |d| devices::only_roots(d, &[root::SETTINGS]))
            }
            Self::Devices(before) => match meta.doc(DocId::Devices) {
                Some(doc) => devices::check(before, &devices::View::of(meta), doc),
                None => Ok(()),
            },
        }
    }
}

/// Every stored document's version.
async fn version(db: &Db) -> Result<VaultVersion, StoreError> {
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT id, version FROM vault_docs")
        .fetch_all(db.pool())
        .await?;
    let mut docs = BTreeMap::new();
    for (name, vv) in rows {
        docs.insert(name.parse()?, VersionVector::decode(&vv)?);
    }
    Ok(VaultVersion { docs })
}

/// Document `id` as stored: its snapshot, pending updates and log, to import in order.
async fn stored_blobs(db: &Db, id: DocId) -> Result<Vec<Vec<u8>>, StoreError> {
    let name = id.to_string();
    let (snapshot, pending, upto): (Option<Vec<u8>>, Option<Vec<u8>>, i64) =
        sqlx::query_as("SELECT snapshot, pending, upto_seq FROM vault_docs WHERE id = ?")
            .bind(&name)
            .fetch_one(db.pool())
            .await?;
    let log: Vec<(Vec<u8>,)> =
        sqlx::query_as("SELECT bytes FROM vault_log WHERE doc = ? AND seq > ? ORDER BY seq")
            .bind(&name)
            .bind(upto)
            .fetch_all(db.pool())
            .await?;
    Ok(snapshot
        .into_iter()
        .chain(pending)
        .chain(log.into_iter().map(|(b,)| b))
        .collect())
}
