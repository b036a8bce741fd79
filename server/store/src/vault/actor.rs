//! The vault actor: the only code that touches the `LoroDoc` and the vault tables.

use std::mem;

use loro::{ExportMode, LoroDoc, VersionVector};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use volli_core::Timestamp;

use super::doc::{ContactCache, VaultDoc};
use super::{Command, Finish, VaultOptions, VaultStats};
use crate::{Db, OutboxChange, StoreError};

/// Most writes folded into one commit.
const MAX_BATCH: usize = 256;

struct Actor {
    db: Db,
    runtime: Handle,
    options: VaultOptions,
    doc: VaultDoc,
    /// Version of everything already in SQLite.
    persisted: VersionVector,
    /// Highest update row written so far.
    last_seq: i64,
    stats: VaultStats,
}

struct Loaded {
    doc: LoroDoc,
    last_seq: i64,
    stats: VaultStats,
}

pub(super) fn run(
    db: Db,
    options: VaultOptions,
    contacts: ContactCache,
    runtime: Handle,
    mut rx: mpsc::Receiver<Command>,
    ready: oneshot::Sender<Result<(), StoreError>>,
) {
    let loaded = match runtime.block_on(load(&db, options.peer)) {
        Ok(loaded) => loaded,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut actor = Actor {
        persisted: loaded.doc.oplog_vv(),
        doc: VaultDoc::new(loaded.doc, contacts),
        last_seq: loaded.last_seq,
        stats: loaded.stats,
        db,
        runtime,
        options,
    };
    let _ = ready.send(Ok(()));

    while let Some(first) = rx.blocking_recv() {
        let mut pending: Vec<Finish> = Vec::new();
        let mut outbox: Vec<OutboxChange> = Vec::new();
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Write(job) => pending.push(job(&actor.doc)),
                Command::Outbox(change, finish) => {
                    outbox.push(change);
                    pending.push(finish);
                }
                // Reads see the document as it is, including writes of this batch that are
                // about to be committed; flushing before each read would split every batch
                // at every interleaved read and cost one fsync each. No writer hears
                // "saved" any earlier for it.
                Command::Read(job) => job(&actor.doc),
                other => {
                    actor.flush(mem::take(&mut pending), mem::take(&mut outbox));
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
        actor.flush(pending, outbox);
        actor.maybe_compact();
    }
    actor.flush(Vec::new(), Vec::new());
}

impl Actor {
    /// Handles a non-write command. Returns the reply channel when the actor must stop.
    fn handle(&mut self, command: Command) -> Option<oneshot::Sender<()>> {
        match command {
            Command::Write(_) | Command::Read(_) | Command::Outbox(..) => {
                unreachable!("handled in the batch loop")
            }
            Command::ReadSaved(job) => job(&self.doc),
            Command::Import(bytes, reply) => {
                let _ = reply.send(self.import(bytes));
            }
            Command::Compact(reply) => {
                let _ = reply.send(self.compact());
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.stats.clone());
            }
            Command::Close(reply) => return Some(reply),
        }
        None
    }

    /// Commits local changes and appends them as one update row, in one transaction with
    /// the batch's outbox changes, then answers the writers.
    fn flush(&mut self, finishers: Vec<Finish>, outbox: Vec<OutboxChange>) {
        let doc = self.doc.loro();
        doc.commit();
        let now = doc.oplog_vv();
        let result = if now == self.persisted {
            if outbox.is_empty() {
                Ok(())
            } else {
                self.append(None, &outbox)
            }
        } else {
            doc.export(ExportMode::updates(&self.persisted))
                .map_err(StoreError::from)
                .and_then(|bytes| self.append(Some(bytes), &outbox))
                .map(|()| self.persisted = now)
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "vault write failed; reloading the last saved state");
            self.reload();
        }
        for finish in finishers {
            finish(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Document(format!("not saved: {e}"))),
            });
        }
    }

    fn import(&mut self, bytes: Vec<u8>) -> Result<bool, StoreError> {
        self.doc.forget_contacts();
        let before = self.doc.loro().oplog_vv();
        let had_pending = self.doc.loro().export_pending_updates()?.is_some();
        self.doc.loro().import(&bytes)?;
        let after = self.doc.loro().oplog_vv();
        let now_pending = self.doc.loro().export_pending_updates()?.is_some();
        if before == after && !now_pending && !had_pending {
            return Ok(false);
        }
        // Keep the raw bytes: they may hold updates still waiting for their dependencies.
        self.append(Some(bytes), &[])?;
        self.persisted = after.clone();
        Ok(before != after)
    }

    /// Appends an update row (if any) and applies outbox changes, in one transaction.
    fn append(
        &mut self,
        bytes: Option<Vec<u8>>,
        outbox: &[OutboxChange],
    ) -> Result<(), StoreError> {
        let len = bytes.as_ref().map_or(0, |b| b.len() as u64);
        let seq = self.runtime.block_on(async {
            let mut tx = self.db.writer().begin().await?;
            let mut seq = None;
            if let Some(bytes) = bytes {
                let row: (i64,) = sqlx::query_as(
                    "INSERT INTO vault_updates (bytes, created_at) VALUES (?, ?) RETURNING seq",
                )
                .bind(bytes)
                .bind(Timestamp::now().as_millis())
                .fetch_one(&mut *tx)
                .await?;
                seq = Some(row.0);
            }
            crate::messaging::apply_outbox(&mut tx, outbox).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(seq)
        })?;
        if let Some(seq) = seq {
            self.last_seq = seq;
            self.stats.updates += 1;
            self.stats.update_bytes += len;
        }
        Ok(())
    }

    fn maybe_compact(&mut self) {
        let due = self.stats.updates >= self.options.compact_after_updates
            || self.stats.update_bytes >= self.options.compact_after_bytes;
        if due && let Err(e) = self.compact() {
            tracing::warn!(error = %e, "vault compaction failed; the update log is kept");
        }
    }

    /// Writes a snapshot covering every stored update and deletes those updates, atomically.
    fn compact(&mut self) -> Result<(), StoreError> {
        let doc = self.doc.loro();
        let snapshot = doc.export(ExportMode::Snapshot)?;
        let pending = doc.export_pending_updates()?;
        let snapshot_len = snapshot.len() as u64;
        let upto = self.last_seq;
        self.runtime.block_on(async {
            let mut tx = self.db.writer().begin().await?;
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO vault_snapshots (upto_seq, snapshot, pending, created_at) \
                 VALUES (?, ?, ?, ?) RETURNING id",
            )
            .bind(upto)
            .bind(snapshot)
            .bind(pending)
            .bind(Timestamp::now().as_millis())
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM vault_updates WHERE seq <= ?")
                .bind(upto)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM vault_snapshots WHERE id < ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, StoreError>(())
        })?;
        self.stats.updates = 0;
        self.stats.update_bytes = 0;
        self.stats.snapshot_bytes = snapshot_len;
        self.stats.compactions += 1;
        tracing::debug!(
            snapshot_bytes = snapshot_len,
            upto_seq = upto,
            "vault compacted"
        );
        Ok(())
    }

    /// Replaces the in-memory document with what SQLite holds, dropping unsaved changes.
    fn reload(&mut self) {
        match self.runtime.block_on(load(&self.db, self.options.peer)) {
            Ok(loaded) => {
                self.persisted = loaded.doc.oplog_vv();
                self.doc.forget_contacts();
                self.doc = VaultDoc::new(loaded.doc, self.doc.contacts());
                self.last_seq = loaded.last_seq;
                let compactions = self.stats.compactions;
                self.stats = loaded.stats;
                self.stats.compactions = compactions;
            }
            Err(e) => tracing::error!(error = %e, "vault reload failed"),
        }
    }
}

async fn load(db: &Db, peer: u64) -> Result<Loaded, StoreError> {
    let doc = LoroDoc::new();
    doc.set_peer_id(peer)?;
    let mut stats = VaultStats::default();
    let snapshot: Option<(i64, Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT upto_seq, snapshot, pending FROM vault_snapshots ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(db.pool())
    .await?;
    let mut last_seq = 0;
    if let Some((upto, snapshot, pending)) = snapshot {
        doc.import(&snapshot)?;
        if let Some(pending) = pending {
            doc.import(&pending)?;
        }
        stats.snapshot_bytes = snapshot.len() as u64;
        last_seq = upto;
    }
    let updates: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT seq, bytes FROM vault_updates WHERE seq > ? ORDER BY seq")
            .bind(last_seq)
            .fetch_all(db.pool())
            .await?;
    if let Some((seq, _)) = updates.last() {
        last_seq = *seq;
    }
    stats.updates = updates.len() as u64;
    stats.update_bytes = updates.iter().map(|(_, b)| b.len() as u64).sum();
    let blobs: Vec<Vec<u8>> = updates.into_iter().map(|(_, b)| b).collect();
    if !blobs.is_empty() {
        doc.import_batch(&blobs)?;
    }
    Ok(Loaded {
        doc,
        last_seq,
        stats,
    })
}
