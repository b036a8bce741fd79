//! The `messages` table: every message of every conversation, derived from the chunk
//! documents and written in the same transaction as their updates. History is read from
//! here, a page at a time, in `(sent_at, id)` order, so reading it never loads a document
//! and costs the same at any depth.

use std::collections::HashSet;

use sqlx::SqliteConnection;
use volli_core::{MessageId, Timestamp, UserId};

use super::conversations::{MessageStatus, StoredMessage};
use super::docs::DocId;
use crate::{Db, StoreError};

/// A message as the index stores it.
#[derive(Clone, Debug)]
pub(super) struct Row {
    pub(super) conversation: UserId,
    pub(super) message: StoredMessage,
    /// The chunk that holds it.
    pub(super) doc: DocId,
}

/// Rows per statement: 8 parameters each, well under SQLite's limit of 32,766.
const ROWS_PER_STATEMENT: usize = 256;

/// Writes `rows` inside `tx`, a few hundred per statement. A message already indexed keeps
/// its place and body; its status becomes the further of the two, so copies of a message in
/// two chunks (two devices that stored it at the same time) show as one with the status both
/// agree it reached.
pub(super) async fn upsert(tx: &mut SqliteConnection, rows: &[Row]) -> Result<(), StoreError> {
    for part in rows.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO messages (id, conversation, sent_at, sender, recipient, body, status, doc) VALUES ",
        );
        for i in 0..part.len() {
            sql.push_str(if i == 0 {
                "(?,?,?,?,?,?,?,?)"
            } else {
                ",(?,?,?,?,?,?,?,?)"
            });
        }
        // A deleted copy (another device deleted it) takes the text out of the index too.
        sql.push_str(
            " ON CONFLICT (id) DO UPDATE SET status = MAX(status, excluded.status), \
             body = CASE WHEN excluded.status = 5 THEN '' ELSE body END",
        );
        // Only placeholders are formatted into the text; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in part {
            let m = &row.message;
            query = query
                .bind(m.id.as_bytes().to_vec())
                .bind(row.conversation.to_string())
                .bind(m.sent_at.as_millis())
                .bind(m.from.to_string())
                .bind(m.to.to_string())
                .bind(m.body.clone())
                .bind(m.status.rank())
                .bind(row.doc.to_string());
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

/// Moves indexed messages on to new statuses, inside `tx` (never back: the index keeps the
/// furthest).
pub(super) async fn set_statuses(
    tx: &mut SqliteConnection,
    statuses: &[(MessageId, MessageStatus)],
) -> Result<(), StoreError> {
    for part in statuses.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::from("UPDATE messages SET status = MAX(status, CASE id");
        for _ in part {
            sql.push_str(" WHEN ? THEN ?");
        }
        sql.push_str(" END) WHERE id IN (");
        for i in 0..part.len() {
            sql.push_str(if i == 0 { "?" } else { ",?" });
        }
        sql.push(')');
        // Only placeholders are formatted into the text; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (id, status) in part {
            query = query.bind(id.as_bytes().to_vec()).bind(status.rank());
        }
        for (id, _) in part {
            query = query.bind(id.as_bytes().to_vec());
        }
        query.execute(&mut *tx).await?;
    }
    // Deleted messages keep their row (so a copy that arrives again is known, and stays
    // deleted) but not their text.
    let deleted: Vec<&MessageId> = statuses
        .iter()
        .filter(|(_, s)| *s == MessageStatus::Deleted)
        .map(|(id, _)| id)
        .collect();
    for part in deleted.chunks(ROWS_PER_STATEMENT * 4) {
        let mut sql = String::from("UPDATE messages SET body = '' WHERE id IN (");
        for i in 0..part.len() {
            sql.push_str(if i == 0 { "?" } else { ",?" });
        }
        sql.push(')');
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in part {
            query = query.bind(id.as_bytes().to_vec());
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

/// Which of `ids` are already indexed, inside `tx`.
pub(super) async fn existing(
    tx: &mut SqliteConnection,
    ids: &[MessageId],
) -> Result<HashSet<MessageId>, StoreError> {
    let mut found = HashSet::new();
    for part in ids.chunks(ROWS_PER_STATEMENT * 4) {
        let mut sql = String::from("SELECT id FROM messages WHERE id IN (");
        for i in 0..part.len() {
            sql.push_str(if i == 0 { "?" } else { ",?" });
        }
        sql.push(')');
        let mut query = sqlx::query_as::<_, (Vec<u8>,)>(sqlx::AssertSqlSafe(sql));
        for id in part {
            query = query.bind(id.as_bytes().to_vec());
        }
        for (id,) in query.fetch_all(&mut *tx).await? {
            if let Ok(bytes) = <[u8; 16]>::try_from(id) {
                found.insert(MessageId::from_bytes(bytes));
            }
        }
    }
    Ok(found)
}

/// Where a stored message lives and how far it got.
#[derive(Clone, Copy, Debug)]
pub(super) struct Located {
    pub(super) conversation: UserId,
    pub(super) doc: DocId,
    pub(super) status: MessageStatus,
}

/// Finds message `id`.
pub(super) async fn locate(db: &Db, id: MessageId) -> Result<Option<Located>, StoreError> {
    let row: Option<(String, String, i64)> =
        sqlx::query_as("SELECT conversation, doc, status FROM messages WHERE id = ?")
            .bind(&id.as_bytes()[..])
            .fetch_optional(db.pool())
            .await?;
    Ok(row.and_then(|(conversation, doc, status)| {
        Some(Located {
            conversation: conversation.parse().ok()?,
            doc: doc.parse().ok()?,
            status: MessageStatus::from_rank(status)?,
        })
    }))
}

type MessageRow = (Vec<u8>, String, String, String, i64, i64);

fn message(row: MessageRow) -> Option<StoredMessage> {
    let (id, from, to, body, sent_at, status) = row;
    Some(StoredMessage {
        id: MessageId::from_bytes(id.try_into().ok()?),
        from: from.parse().ok()?,
        to: to.parse().ok()?,
        body,
        sent_at: Timestamp::from_millis(sent_at),
        status: MessageStatus::from_rank(status)?,
    })
}

/// Why a page could not be read.
#[derive(Debug)]
pub(super) enum PageError {
    /// `before` names no message of this conversation.
    UnknownCursor,
    /// SQLite failed.
    Store(StoreError),
}

/// Up to `limit` messages of the conversation with `with` that come before message `before`
/// (or the latest ones), oldest first. Messages with the same time are ordered by id, so
/// pages never overlap or skip one, whatever arrives meanwhile.
pub(super) async fn page(
    db: &Db,
    with: UserId,
    before: Option<MessageId>,
    limit: u32,
) -> Result<Vec<StoredMessage>, PageError> {
    let conversation = with.to_string();
    let rows: Vec<MessageRow> = match before {
        Some(cursor) => {
            let at: Option<(i64,)> =
                sqlx::query_as("SELECT sent_at FROM messages WHERE id = ? AND conversation = ?")
                    .bind(&cursor.as_bytes()[..])
                    .bind(&conversation)
                    .fetch_optional(db.pool())
                    .await
                    .map_err(|e| PageError::Store(e.into()))?;
            let (sent_at,) = at.ok_or(PageError::UnknownCursor)?;
            sqlx::query_as(
                "SELECT id, sender, recipient, body, sent_at, status FROM messages \
                 WHERE conversation = ? AND (sent_at, id) < (?, ?) AND status < 5 \
                 ORDER BY sent_at DESC, id DESC LIMIT ?",
            )
            .bind(&conversation)
            .bind(sent_at)
            .bind(&cursor.as_bytes()[..])
            .bind(limit)
            .fetch_all(db.pool())
            .await
        }
        None => {
            sqlx::query_as(
                "SELECT id, sender, recipient, body, sent_at, status FROM messages \
                 WHERE conversation = ? AND status < 5 ORDER BY sent_at DESC, id DESC LIMIT ?",
            )
            .bind(&conversation)
            .bind(limit)
            .fetch_all(db.pool())
            .await
        }
    }
    .map_err(|e| PageError::Store(e.into()))?;
    let mut out: Vec<StoredMessage> = rows.into_iter().filter_map(message).collect();
    out.reverse();
    Ok(out)
}

/// The messages (not deleted) of the conversation with `with` that a retention rule lets
/// go: sent before `before`, or beyond the newest `keep_last`. Oldest first, at most `limit`.
pub(super) async fn expired(
    db: &Db,
    with: UserId,
    before: Option<Timestamp>,
    keep_last: Option<u64>,
    limit: u32,
) -> Result<Vec<MessageId>, StoreError> {
    let conversation = with.to_string();
    let mut ids: Vec<Vec<u8>> = Vec::new();
    if let Some(before) = before {
        let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
            "SELECT id FROM messages WHERE conversation = ? AND sent_at < ? AND status < 5 \
             ORDER BY sent_at, id LIMIT ?",
        )
        .bind(&conversation)
        .bind(before.as_millis())
        .bind(limit)
        .fetch_all(db.pool())
        .await?;
        ids.extend(rows.into_iter().map(|(id,)| id));
    }
    if let Some(keep) = keep_last {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
            "SELECT id FROM messages WHERE conversation = ? AND status < 5 \
             ORDER BY sent_at DESC, id DESC LIMIT ? OFFSET ?",
        )
        .bind(&conversation)
        .bind(limit)
        .bind(keep)
        .fetch_all(db.pool())
        .await?;
        ids.extend(rows.into_iter().map(|(id,)| id));
    }
    let mut out: Vec<MessageId> = ids
        .into_iter()
        .filter_map(|id| Some(MessageId::from_bytes(id.try_into().ok()?)))
        .collect();
    out.sort_unstable_by_key(|id| *id.as_bytes());
    out.dedup();
    out.truncate(limit as usize);
    Ok(out)
}

/// The conversations that hold messages (not deleted).
pub(super) async fn conversations(db: &Db) -> Result<Vec<UserId>, StoreError> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT DISTINCT conversation FROM messages WHERE status < 5")
            .fetch_all(db.pool())
            .await?;
    Ok(rows.into_iter().filter_map(|(c,)| c.parse().ok()).collect())
}

/// Whether message `id` is stored in the conversation with `with`.
pub(super) async fn contains(db: &Db, with: UserId, id: MessageId) -> Result<bool, StoreError> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT 1 FROM messages WHERE id = ? AND conversation = ?")
            .bind(&id.as_bytes()[..])
            .bind(with.to_string())
            .fetch_optional(db.pool())
            .await?;
    Ok(row.is_some())
}
