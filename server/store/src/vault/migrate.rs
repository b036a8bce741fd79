//! Upgrades a vault of the single-document layout — one Loro document holding contacts,
//! settings, devices and every message, in `vault_snapshots` and `vault_updates` — to the
//! layout of many documents ([`super::docs`]).
//!
//! Contacts, settings and devices each become a document of their own; each conversation a
//! series of chunks. The whole upgrade is one SQLite transaction, and the old tables are dropped in it: a
//! crash at any moment leaves either the old layout untouched (and the next start upgrades
//! again from the beginning) or the new one complete. Nothing else touches the database
//! before it has run. The old document's history is not carried over: no other device ever
//! held a copy of it, so its state is all that matters.

use std::time::Instant;

use loro::{ExportMode, LoroDoc, LoroMap, ValueOrContainer};
use volli_core::{Timestamp, UserId};

use super::conversations::{CHUNK_BYTES, CHUNK_MESSAGES, StoredMessage, read_entry, write_entry};
use super::docs::{DocId, DocWrite};
use super::index::{self, Row};
use super::root;
use crate::{Db, StoreError};

/// Upgrades the vault in `db` if it is in the single-document layout; writes under `peer`.
pub(super) async fn run(db: &Db, peer: u64) -> Result<(), StoreError> {
    let old: Option<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'vault_snapshots'",
    )
    .fetch_optional(db.pool())
    .await?;
    if old.is_none() {
        return Ok(());
    }
    let started = Instant::now();
    let doc = load_old(db).await?;
    let messages = count_old_messages(&doc);
    if messages > 0 {
        tracing::info!(
            messages,
            "migrating the vault to one document per conversation chunk"
        );
    }
    let mut tx = db.writer().begin().await?;
    let now = Timestamp::now();
    for (id, name) in [
        (DocId::Contacts, root::CONTACTS),
        (DocId::Settings, root::SETTINGS),
        (DocId::Devices, root::DEVICES),
    ] {
        let old = doc.get_map(name);
        if old.is_empty() {
            continue;
        }
        let meta = LoroDoc::new();
        meta.set_peer_id(peer)?;
        copy_map(&old, &meta.get_map(name))?;
        meta.commit();
        write_doc(&mut tx, id, &meta, 0, 0, now).await?;
    }
    let conversations = doc.get_map(root::CONVERSATIONS);
    let mut users = Vec::new();
    conversations.for_each(|user, value| {
        if let (Ok(user), Some(messages)) = (
            user.parse::<UserId>(),
            map_of(value)
                .and_then(|c| c.get(root::MESSAGES))
                .and_then(map_of),
        ) {
            users.push((user, messages));
        }
    });
    for (user, list) in users {
        let mut all: Vec<StoredMessage> = Vec::new();
        list.for_each(|id, value| {
            if let Some(m) = map_of(value).and_then(|e| read_entry(id, &e)) {
                all.push(m);
            }
        });
        all.sort_by_key(|m| (m.sent_at, m.id));
        let mut chunk = 0u32;
        let mut rest = all.as_slice();
        while !rest.is_empty() {
            let mut take = 0;
            let mut bytes = 0u64;
            while take < rest.len() && (take as u64) < CHUNK_MESSAGES && bytes < CHUNK_BYTES {
                bytes += rest[take].body.len() as u64;
                take += 1;
            }
            let (these, later) = rest.split_at(take);
            rest = later;
            let id = DocId::Chunk {
                conversation: user,
                chunk,
            };
            let doc = LoroDoc::new();
            doc.set_peer_id(peer)?;
            let messages = doc.get_map(root::MESSAGES);
            for m in these {
                write_entry(&messages, m)?;
            }
            doc.commit();
            write_doc(&mut tx, id, &doc, these.len() as u64, bytes, now).await?;
            let rows: Vec<Row> = these
                .iter()
                .map(|m| Row {
                    conversation: user,
                    message: m.clone(),
                    doc: id,
                })
                .collect();
            index::upsert(&mut tx, &rows).await?;
            chunk += 1;
        }
    }
    sqlx::query("DROP TABLE vault_updates")
        .execute(&mut *tx)
        .await?;
    sqlx::query("DROP TABLE vault_snapshots")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    if messages > 0 {
        tracing::info!(
            messages,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "vault migrated"
        );
    }
    Ok(())
}

/// The single-document vault: its snapshot, the snapshot's pending sidecar, later updates.
async fn load_old(db: &Db) -> Result<LoroDoc, StoreError> {
    let doc = LoroDoc::new();
    let snapshot: Option<(i64, Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT upto_seq, snapshot, pending FROM vault_snapshots ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(db.pool())
    .await?;
    let mut after = 0;
    if let Some((upto, snapshot, pending)) = snapshot {
        doc.import(&snapshot)?;
        if let Some(pending) = pending {
            doc.import(&pending)?;
        }
        after = upto;
    }
    let updates: Vec<(Vec<u8>,)> =
        sqlx::query_as("SELECT bytes FROM vault_updates WHERE seq > ? ORDER BY seq")
            .bind(after)
            .fetch_all(db.pool())
            .await?;
    let blobs: Vec<Vec<u8>> = updates.into_iter().map(|(b,)| b).collect();
    if !blobs.is_empty() {
        doc.import_batch(&blobs)?;
    }
    Ok(doc)
}

fn count_old_messages(doc: &LoroDoc) -> usize {
    let mut n = 0;
    doc.get_map(root::CONVERSATIONS).for_each(|_, value| {
        if let Some(list) = map_of(value)
            .and_then(|c| c.get(root::MESSAGES))
            .and_then(map_of)
        {
            n += list.len();
        }
    });
    n
}

/// Stores a new document as one snapshot.
async fn write_doc(
    tx: &mut sqlx::SqliteConnection,
    id: DocId,
    doc: &LoroDoc,
    messages: u64,
    bytes: u64,
    now: Timestamp,
) -> Result<(), StoreError> {
    let snapshot = doc.export(ExportMode::Snapshot)?;
    DocWrite {
        id,
        blobs: vec![snapshot],
        version: doc.oplog_vv(),
        messages,
        bytes,
    }
    .apply(tx, now)
    .await
}

fn map_of(value: ValueOrContainer) -> Option<LoroMap> {
    match value {
        ValueOrContainer::Container(loro::Container::Map(m)) => Some(m),
        _ => None,
    }
}

/// Copies every value of `from` into `to`; child maps become mergeable child maps, as the
/// vault writes them.
fn copy_map(from: &LoroMap, to: &LoroMap) -> Result<(), StoreError> {
    let mut entries = Vec::new();
    from.for_each(|key, value| entries.push((key.to_owned(), value)));
    for (key, value) in entries {
        match value {
            ValueOrContainer::Value(v) => {
                to.insert(&key, v)?;
            }
            ValueOrContainer::Container(loro::Container::Map(child)) => {
                copy_map(&child, &to.ensure_mergeable_map(&key)?)?;
            }
            // The old layout has no other kind of container.
            ValueOrContainer::Container(_) => {}
        }
    }
    Ok(())
}
