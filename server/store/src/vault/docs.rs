//! The vault's documents: their names, and how one is loaded from and written to SQLite.
//!
//! Every document is stored the same way: a snapshot in `vault_docs` (taken by compaction)
//! plus the updates logged after it in `vault_log`, and its current version vector, so what
//! a document holds can be compared with another device's copy without loading it.

use std::fmt;
use std::str::FromStr;

use loro::{ExportMode, LoroDoc, VersionVector};
use volli_core::{Timestamp, UserId};

use crate::{Db, StoreError};

/// The name of one of the vault's documents. Part of the on-disk and sync format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DocId {
    /// The contacts (`contacts`).
    Contacts,
    /// The settings (`settings`).
    Settings,
    /// The user's devices, its key generation and its own latest contact card (`devices`).
    Devices,
    /// Chunk `chunk` of the conversation with `conversation` (`c/<user id>/<chunk>`).
    Chunk {
        /// The other party.
        conversation: UserId,
        /// The chunk's number, from 0.
        chunk: u32,
    },
}

/// The highest chunk number accepted from another device: about a billion messages per
/// conversation, and a bound on what a garbled name can make this node create.
pub(super) const MAX_CHUNK: u32 = 1 << 20;

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Contacts => f.write_str("contacts"),
            Self::Settings => f.write_str("settings"),
            Self::Devices => f.write_str("devices"),
            Self::Chunk {
                conversation,
                chunk,
            } => write!(f, "c/{conversation}/{chunk}"),
        }
    }
}

impl FromStr for DocId {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::Document(format!("not a vault document name: {s:.80}"));
        match s {
            "contacts" => return Ok(Self::Contacts),
            "settings" => return Ok(Self::Settings),
            "devices" => return Ok(Self::Devices),
            _ => {}
        }
        let rest = s.strip_prefix("c/").ok_or_else(bad)?;
        let (user, chunk) = rest.split_once('/').ok_or_else(bad)?;
        let conversation = user.parse().map_err(|_| bad())?;
        // Canonical digits only, so one document has one name.
        if chunk.is_empty() || (chunk.len() > 1 && chunk.starts_with('0')) {
            return Err(bad());
        }
        let chunk: u32 = chunk.parse().map_err(|_| bad())?;
        if chunk > MAX_CHUNK {
            return Err(bad());
        }
        Ok(Self::Chunk {
            conversation,
            chunk,
        })
    }
}

/// Imports `blobs` into `doc` in order. The first may be a snapshot — one without history
/// among them, which Loro takes only on its own: in one batch with the updates that follow
/// it, nothing of the batch is applied (it all waits as pending).
pub(super) fn import_all(doc: &LoroDoc, blobs: &[Vec<u8>]) -> Result<(), StoreError> {
    let Some((first, rest)) = blobs.split_first() else {
        return Ok(());
    };
    doc.import(first)?;
    if !rest.is_empty() {
        doc.import_batch(rest)?;
    }
    Ok(())
}

/// What is known about a loaded document's storage.
#[derive(Clone, Debug, Default)]
pub(super) struct Stored {
    /// The version of everything SQLite holds for the document.
    pub(super) persisted: VersionVector,
    /// Log rows after the snapshot, and their bytes.
    pub(super) log_rows: u64,
    pub(super) log_bytes: u64,
    /// For chunks: body bytes held (messages are counted from the document itself).
    pub(super) bytes: u64,
}

/// A document read back from SQLite.
pub(super) struct Opened {
    pub(super) doc: LoroDoc,
    pub(super) stored: Stored,
}

/// `(snapshot, pending, upto_seq, bytes)` of a `vault_docs` row.
type StoredRow = (Option<Vec<u8>>, Option<Vec<u8>>, i64, i64);

/// Loads document `id` (empty if SQLite has none) and makes `peer` its writer.
pub(super) async fn open(db: &Db, id: DocId, peer: u64) -> Result<Opened, StoreError> {
    let doc = LoroDoc::new();
    doc.set_peer_id(peer)?;
    let name = id.to_string();
    let row: Option<StoredRow> =
        sqlx::query_as("SELECT snapshot, pending, upto_seq, bytes FROM vault_docs WHERE id = ?")
            .bind(&name)
            .fetch_optional(db.pool())
            .await?;
    let Some((snapshot, pending, upto, bytes)) = row else {
        return Ok(Opened {
            doc,
            stored: Stored::default(),
        });
    };
    if let Some(snapshot) = snapshot {
        doc.import(&snapshot)?;
    }
    if let Some(pending) = pending {
        doc.import(&pending)?;
    }
    let log: Vec<(Vec<u8>,)> =
        sqlx::query_as("SELECT bytes FROM vault_log WHERE doc = ? AND seq > ? ORDER BY seq")
            .bind(&name)
            .bind(upto)
            .fetch_all(db.pool())
            .await?;
    let blobs: Vec<Vec<u8>> = log.into_iter().map(|(b,)| b).collect();
    let stored = Stored {
        persisted: VersionVector::default(),
        log_rows: blobs.len() as u64,
        log_bytes: blobs.iter().map(|b| b.len() as u64).sum(),
        bytes: u64::try_from(bytes).unwrap_or(0),
    };
    if !blobs.is_empty() {
        doc.import_batch(&blobs)?;
    }
    let stored = Stored {
        persisted: doc.oplog_vv(),
        ..stored
    };
    Ok(Opened { doc, stored })
}

/// A document's new updates, ready to be written in a batch's transaction.
pub(super) struct DocWrite {
    pub(super) id: DocId,
    /// Update blobs to append to the log (raw imports may be several).
    pub(super) blobs: Vec<Vec<u8>>,
    /// The document's version once they are stored.
    pub(super) version: VersionVector,
    /// For chunks: messages and body bytes it now holds.
    pub(super) messages: u64,
    pub(super) bytes: u64,
}

impl DocWrite {
    /// The updates of `doc` since `stored.persisted`, or `None` if there are none.
    pub(super) fn since(
        id: DocId,
        doc: &LoroDoc,
        stored: &Stored,
    ) -> Result<Option<Self>, StoreError> {
        doc.commit();
        let version = doc.oplog_vv();
        if version == stored.persisted {
            return Ok(None);
        }
        let bytes = doc.export(ExportMode::updates(&stored.persisted))?;
        Ok(Some(Self {
            id,
            blobs: vec![bytes],
            version,
            messages: messages_in(id, doc),
            bytes: stored.bytes,
        }))
    }

    /// Appends the blobs and records the document's new version, inside `tx`.
    pub(super) async fn apply(
        &self,
        tx: &mut sqlx::SqliteConnection,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let name = self.id.to_string();
        for blob in &self.blobs {
            sqlx::query("INSERT INTO vault_log (doc, bytes, created_at) VALUES (?, ?, ?)")
                .bind(&name)
                .bind(blob)
                .bind(now.as_millis())
                .execute(&mut *tx)
                .await?;
        }
        let (conversation, chunk) = match self.id {
            DocId::Contacts | DocId::Settings | DocId::Devices => (None, None),
            DocId::Chunk {
                conversation,
                chunk,
            } => (Some(conversation.to_string()), Some(i64::from(chunk))),
        };
        sqlx::query(
            "INSERT INTO vault_docs (id, conversation, chunk, version, messages, bytes) \
             VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, \
                 messages = excluded.messages, bytes = excluded.bytes",
        )
        .bind(&name)
        .bind(conversation)
        .bind(chunk)
        .bind(self.version.encode())
        .bind(i64::try_from(self.messages).unwrap_or(i64::MAX))
        .bind(i64::try_from(self.bytes).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Total bytes appended.
    pub(super) fn len(&self) -> u64 {
        self.blobs.iter().map(|b| b.len() as u64).sum()
    }
}

/// Messages in a chunk (0 for other documents).
pub(super) fn messages_in(id: DocId, doc: &LoroDoc) -> u64 {
    match id {
        DocId::Contacts | DocId::Settings | DocId::Devices => 0,
        DocId::Chunk { .. } => doc.get_map(super::root::MESSAGES).len() as u64,
    }
}

/// Writes a snapshot of `doc` covering every logged update of it, and deletes those rows,
/// in one transaction. Returns the snapshot's size.
///
/// `shallow`: the snapshot keeps the document's current state and no history before it, so
/// what was deleted (the text of deleted messages) is no longer stored at all. Only when
/// every other device already holds this version (see [`others_hold`]): one that is
/// behind would need the history.
pub(super) async fn compact(
    db: &Db,
    id: DocId,
    doc: &LoroDoc,
    shallow: bool,
) -> Result<u64, StoreError> {
    doc.commit();
    let snapshot = if shallow {
        doc.export(ExportMode::shallow_snapshot(&doc.oplog_frontiers()))?
    } else {
        doc.export(ExportMode::Snapshot)?
    };
    let pending = doc.export_pending_updates()?;
    let len = snapshot.len() as u64;
    let name = id.to_string();
    let mut tx = db.writer().begin().await?;
    let (upto,): (Option<i64>,) = sqlx::query_as("SELECT MAX(seq) FROM vault_log WHERE doc = ?")
        .bind(&name)
        .fetch_one(&mut *tx)
        .await?;
    let upto = upto.unwrap_or(0);
    let updated = sqlx::query(
        "UPDATE vault_docs SET snapshot = ?, pending = ?, upto_seq = MAX(upto_seq, ?) WHERE id = ?",
    )
    .bind(snapshot)
    .bind(pending)
    .bind(upto)
    .bind(&name)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        // Nothing was ever written for it: nothing to fold.
        return Ok(0);
    }
    sqlx::query("DELETE FROM vault_log WHERE doc = ? AND seq <= ?")
        .bind(&name)
        .bind(upto)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(len)
}

/// Whether every other device of the user that has synced with this one holds `version` of
/// document `id` (or later). A device that never synced gets the whole document (a shallow
/// snapshot) when it first asks, so it does not count.
pub(super) async fn others_hold(
    db: &Db,
    id: DocId,
    version: &loro::VersionVector,
) -> Result<bool, StoreError> {
    let (devices,): (i64,) = sqlx::query_as("SELECT COUNT(DISTINCT device) FROM vault_acks")
        .fetch_one(db.pool())
        .await?;
    let acks: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT version FROM vault_acks WHERE doc = ?")
        .bind(id.to_string())
        .fetch_all(db.pool())
        .await?;
    if i64::try_from(acks.len()).unwrap_or(0) < devices {
        return Ok(false);
    }
    for (bytes,) in acks {
        if !loro::VersionVector::decode(&bytes)?.includes_vv(version) {
            return Ok(false);
        }
    }
    Ok(true)
}

impl DocId {
    /// The documents that are not conversation chunks: always loaded.
    pub const META: [DocId; 3] = [DocId::Contacts, DocId::Settings, DocId::Devices];

    /// Whether it is a conversation chunk.
    pub fn is_chunk(&self) -> bool {
        matches!(self, DocId::Chunk { .. })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use volli_core::UserSecret;

    use super::*;

    #[test]
    fn names_round_trip_and_garbage_is_refused() {
        let user = UserSecret::from_master([3; 32]).user_id();
        for id in [
            DocId::Contacts,
            DocId::Settings,
            DocId::Devices,
            DocId::Chunk {
                conversation: user,
                chunk: 0,
            },
            DocId::Chunk {
                conversation: user,
                chunk: 41,
            },
        ] {
            assert_eq!(id.to_string().parse::<DocId>().unwrap(), id);
        }
        for bad in [
            "",
            "Meta",
            "meta",
            "c/",
            "c/x/1",
            &format!("c/{user}"),
            &format!("c/{user}/"),
            &format!("c/{user}/01"),
            &format!("c/{user}/-1"),
            &format!("c/{user}/{}", MAX_CHUNK + 1),
            &format!("c/{user}/1/2"),
        ] {
            assert!(bad.parse::<DocId>().is_err(), "{bad}");
        }
    }
}
