//! The `messages` table: every message of every conversation, derived from the chunk
//! documents and written in the same transaction as their updates. History is read from
//! here, a page at a time, in `(sent_at, id)` order, so reading it never loads a document
//! and costs the same at any depth.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use rusqlite::OptionalExtension as _;
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

/// Rows per statement: 15 parameters each, well under SQLite's limit of 32,766.
const ROWS_PER_STATEMENT: usize = 256;

/// The `extra` column: what a message carries that no query looks into.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct ExtraColumn {
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    reactions: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file: Option<super::conversations::FileItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    system: Option<String>,
}

fn extra_column(m: &StoredMessage) -> String {
    let x = &m.extra;
    if x.reactions.is_empty() && x.file.is_none() && x.system.is_none() {
        return String::new();
    }
    serde_json::to_string(&ExtraColumn {
        reactions: x
            .reactions
            .iter()
            .map(|(u, e)| (u.to_string(), e.clone()))
            .collect(),
        file: x.file.clone(),
        system: x.system.clone(),
    })
    .unwrap_or_default()
}

/// Writes `rows` inside `tx`, a few hundred per statement. A message already indexed keeps
/// its place; its status becomes the further of the two, so copies of a message in two
/// chunks (two devices that stored it at the same time) show as one with the status both
/// agree it reached; its text is the newest edit's, and what else it carries (reactions,
/// a timer, a tombstone) is as the chunk has it now. Readers' marks move forward.
pub(super) async fn upsert(tx: &mut SqliteConnection, rows: &[Row]) -> Result<(), StoreError> {
    for part in rows.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO messages (id, conversation, sent_at, sender, recipient, body, status, doc, \
             kind, reply_to, edited_at, unsent, expires_at, timer, extra) VALUES ",
        );
        for i in 0..part.len() {
            sql.push_str(if i == 0 {
                "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
            } else {
                ",(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
            });
        }
        // A deleted copy (another device deleted it, or its author for everyone) takes the
        // text out of the index too; a later edit brings its text.
        sql.push_str(
            " ON CONFLICT (id) DO UPDATE SET status = MAX(status, excluded.status), \
             body = CASE WHEN excluded.status = 5 OR excluded.unsent = 1 OR unsent = 1 THEN '' \
                         WHEN COALESCE(excluded.edited_at, 0) > COALESCE(edited_at, 0) \
                         THEN excluded.body ELSE body END, \
             edited_at = MAX(COALESCE(edited_at, 0), COALESCE(excluded.edited_at, 0)), \
             unsent = MAX(unsent, excluded.unsent), \
             expires_at = COALESCE(expires_at, excluded.expires_at), \
             extra = CASE WHEN excluded.unsent = 1 OR unsent = 1 THEN '' ELSE excluded.extra END",
        );
        // Only placeholders are formatted into the text; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in part {
            let m = &row.message;
            let x = &m.extra;
            query = query
                .bind(m.id.as_bytes().to_vec())
                .bind(row.conversation.to_string())
                .bind(m.sent_at.as_millis())
                .bind(m.from.to_string())
                .bind(m.to.to_string())
                .bind(m.body.clone())
                .bind(m.status.rank())
                .bind(row.doc.to_string())
                .bind(x.kind.as_str())
                .bind(x.reply_to.map(|r| r.to_string()))
                .bind(x.edited_at.map(Timestamp::as_millis))
                .bind(i64::from(x.unsent))
                .bind(x.expires_at.map(Timestamp::as_millis))
                .bind(x.timer().and_then(|t| i64::try_from(t).ok()))
                .bind(extra_column(m));
        }
        query.execute(&mut *tx).await?;
    }
    // Read marks: the newest message each reader marked, per conversation.
    for row in rows {
        for reader in &row.message.extra.read_by {
            sqlx::query(
                "INSERT INTO read_marks (conversation, reader, sent_at, id) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (conversation, reader) DO UPDATE SET sent_at = excluded.sent_at, \
                 id = excluded.id WHERE (excluded.sent_at, excluded.id) > (read_marks.sent_at, read_marks.id)",
            )
            .bind(row.conversation.to_string())
            .bind(reader.to_string())
            .bind(row.message.sent_at.as_millis())
            .bind(row.message.id.as_bytes().to_vec())
            .execute(&mut *tx)
            .await?;
        }
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

/// The columns a message is read back from, in [`MessageRow`]'s order.
pub(super) const MESSAGE_COLUMNS: &str = "id, sender, recipient, body, sent_at, status, kind, \
     reply_to, edited_at, unsent, expires_at, extra";

pub(crate) type MessageRow = (
    Vec<u8>,
    String,
    String,
    String,
    i64,
    i64,
    String,
    Option<String>,
    Option<i64>,
    i64,
    Option<i64>,
    String,
);

/// A [`MessageRow`] read from `r`'s first columns ([`MESSAGE_COLUMNS`]' order), on a reader
/// called directly.
pub(crate) fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
    ))
}

pub(crate) fn message(row: MessageRow) -> Option<StoredMessage> {
    message_with(row, &mut |s| s.parse().ok())
}

/// [`message`], with its user ids read by `user` (a search reads the same few ids over
/// and over, and remembers them).
pub(crate) fn message_with(
    row: MessageRow,
    user: &mut impl FnMut(&str) -> Option<UserId>,
) -> Option<StoredMessage> {
    let (id, from, to, body, sent_at, status, kind, reply_to, edited_at, unsent, expires_at, extra) =
        row;
    let column: ExtraColumn = if extra.is_empty() {
        ExtraColumn::default()
    } else {
        serde_json::from_str(&extra).unwrap_or_default()
    };
    Some(StoredMessage {
        id: MessageId::from_bytes(id.try_into().ok()?),
        from: user(&from)?,
        to: user(&to)?,
        body,
        sent_at: Timestamp::from_millis(sent_at),
        status: MessageStatus::from_rank(status)?,
        extra: super::conversations::Extra {
            kind: super::conversations::MessageKind::parse(&kind).unwrap_or_default(),
            reply_to: reply_to.and_then(|r| r.parse().ok()),
            edited_at: edited_at.filter(|at| *at > 0).map(Timestamp::from_millis),
            unsent: unsent != 0,
            expires_at: expires_at.map(Timestamp::from_millis),
            reactions: column
                .reactions
                .into_iter()
                .filter_map(|(u, e)| Some((user(&u)?, e)))
                .collect(),
            // Who read up to where is in `read_marks`, read with the page.
            read_by: std::collections::BTreeSet::new(),
            file: column.file,
            system: column.system,
        },
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
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages \
                 WHERE conversation = ? AND (sent_at, id) < (?, ?) AND status < 5 \
                 ORDER BY sent_at DESC, id DESC LIMIT ?"
            )))
            .bind(&conversation)
            .bind(sent_at)
            .bind(&cursor.as_bytes()[..])
            .bind(limit)
            .fetch_all(db.pool())
            .await
        }
        None => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages \
                 WHERE conversation = ? AND status < 5 ORDER BY sent_at DESC, id DESC LIMIT ?"
            )))
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

/// Message `id`, with its conversation, if it is stored and not deleted for this user.
pub(super) async fn get(
    db: &Db,
    id: MessageId,
) -> Result<Option<(UserId, StoredMessage)>, StoreError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT conversation FROM messages WHERE id = ? AND status < 5")
            .bind(&id.as_bytes()[..])
            .fetch_optional(db.pool())
            .await?;
    let Some((conversation,)) = row else {
        return Ok(None);
    };
    let row: Option<MessageRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?"
    )))
    .bind(&id.as_bytes()[..])
    .fetch_optional(db.pool())
    .await?;
    Ok(row
        .and_then(message)
        .and_then(|m| Some((conversation.parse().ok()?, m))))
}

/// Where each reader of a conversation has read up to: (reader, sent_at of the message).
pub(super) async fn read_marks(
    db: &Db,
    conversation: UserId,
) -> Result<Vec<(UserId, Timestamp)>, StoreError> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT reader, sent_at FROM read_marks WHERE conversation = ?")
            .bind(conversation.to_string())
            .fetch_all(db.pool())
            .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(r, at)| Some((r.parse().ok()?, Timestamp::from_millis(at))))
        .collect())
}

/// How far each reader read in each of `conversations` (as [`read_marks`], for many in one
/// query), on a reader called directly (search reads them beside its results).
pub(crate) fn read_marks_in(
    conn: &rusqlite::Connection,
    conversations: &[UserId],
    user: &mut impl FnMut(&str) -> Option<UserId>,
) -> Result<HashMap<UserId, Vec<(UserId, Timestamp)>>, StoreError> {
    let mut out: HashMap<UserId, Vec<(UserId, Timestamp)>> = HashMap::new();
    if conversations.is_empty() {
        return Ok(out);
    }
    // One statement of one shape whatever the number of conversations (a list bound as
    // JSON), so it is prepared once per connection.
    let list = serde_json::to_string(
        &conversations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<String>>(),
    )
    // A list of strings always serializes.
    .unwrap_or_else(|_| "[]".to_owned());
    let mut statement = conn.prepare_cached(
        "SELECT conversation, reader, sent_at FROM read_marks \
         WHERE conversation IN (SELECT value FROM json_each(?))",
    )?;
    let rows = statement.query_map([list], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (conversation, reader, at) = row?;
        if let (Some(conversation), Some(reader)) = (user(&conversation), user(&reader)) {
            out.entry(conversation)
                .or_default()
                .push((reader, Timestamp::from_millis(at)));
        }
    }
    Ok(out)
}

/// A conversation as a chat list shows it.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The conversation (a contact's user id, or a group's conversation key).
    pub conversation: UserId,
    /// Its newest message (a tombstone included), if any.
    pub last: Option<StoredMessage>,
    /// Messages received after this user's read mark.
    pub unread: u64,
    /// Its timer, in seconds (0: off).
    pub timer: u64,
}

/// Every conversation that holds messages, with its newest message, what `me` has not read
/// and its timer, read on a reader called directly ([`CHATS_PER_READ`] conversations per
/// read transaction: three statements each, without a hand-over to another thread for each,
/// and without holding a reader or a snapshot for the whole of a long list).
pub(super) async fn summaries(db: &Db, me: UserId) -> Result<Vec<Summary>, StoreError> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let from = std::mem::take(&mut after);
        let (these, last) = db
            .direct()
            .run(move |conn| summaries_after(conn, me, &from))
            .await?;
        out.extend(these);
        match last {
            Some(last) => after = last,
            None => return Ok(out),
        }
    }
}

/// Conversations listed per read of [`summaries`].
const CHATS_PER_READ: i64 = 32;

/// The [`Summary`] of each of the next [`CHATS_PER_READ`] conversations after `after` (in
/// the order of their keys; `""` for the first), and the last key read when there may be
/// more.
fn summaries_after(
    conn: &rusqlite::Connection,
    me: UserId,
    after: &str,
) -> Result<(Vec<Summary>, Option<String>), StoreError> {
    let read = conn.unchecked_transaction()?;
    // The conversations, one step of the page index each (`DISTINCT` read every row).
    let keys: Vec<String> = read
        .prepare_cached(
            "WITH RECURSIVE k(c, n) AS (\
               SELECT (SELECT MIN(conversation) FROM messages WHERE conversation > ?1), 1 \
               UNION ALL SELECT (SELECT MIN(conversation) FROM messages WHERE conversation > k.c), \
                 n + 1 FROM k WHERE k.c IS NOT NULL AND n < ?2) \
             SELECT c FROM k WHERE c IS NOT NULL",
        )?
        .query_map(rusqlite::params![after, CHATS_PER_READ], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(keys.len());
    for key in &keys {
        let Ok(conversation) = key.parse::<UserId>() else {
            continue;
        };
        let summary = summary_in(&read, conversation, me)?;
        // Only deleted messages (on this device): no conversation to list.
        if summary.last.is_some() {
            out.push(summary);
        }
    }
    read.commit()?;
    let more = usize::try_from(CHATS_PER_READ).is_ok_and(|n| keys.len() == n);
    Ok((out, keys.last().filter(|_| more).cloned()))
}

/// How many messages of conversation `?1` reader `?2` has not read: received, not unsent, not
/// a system line, after the reader's mark.
const UNREAD_QUERY: &str = "SELECT COUNT(*) FROM messages WHERE conversation = ?1 AND status = 4 \
     AND unsent = 0 AND kind != 'system' AND sender != ?2 AND sent_at > \
     COALESCE((SELECT sent_at FROM read_marks WHERE conversation = ?1 AND reader = ?2), -1)";

/// One conversation's [`Summary`], on a reader called directly (three statements, one
/// hand-over).
pub(super) async fn summary(
    db: &Db,
    conversation: UserId,
    me: UserId,
) -> Result<Summary, StoreError> {
    db.direct()
        .run(move |conn| summary_in(conn, conversation, me))
        .await
}

/// [`summary`] on `conn`, inside the caller's read.
fn summary_in(
    conn: &rusqlite::Connection,
    conversation: UserId,
    me: UserId,
) -> Result<Summary, StoreError> {
    let key = conversation.to_string();
    let last = conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation = ?1 AND status < 5 \
             ORDER BY sent_at DESC, id DESC LIMIT 1"
        ))?
        .query_row([&key], message_row)
        .optional()?;
    let unread: i64 = conn
        .prepare_cached(UNREAD_QUERY)?
        .query_row(rusqlite::params![key, me.to_string()], |r| r.get(0))?;
    let timer: Option<i64> = conn
        .prepare_cached(TIMER_QUERY)?
        .query_row([&key], |r| r.get(0))
        .optional()?;
    Ok(Summary {
        conversation,
        last: last.and_then(message),
        unread: u64::try_from(unread).unwrap_or(0),
        timer: timer.map_or(0, |t| u64::try_from(t).unwrap_or(0)),
    })
}

/// The newest line that set a conversation's timer. Through the index of timer lines only:
/// left to itself SQLite walks the conversation's page index for the order, reading every
/// message of the conversation back to the last timer line — at every message sent.
pub(super) const TIMER_QUERY: &str = "SELECT timer FROM messages INDEXED BY messages_timer \
     WHERE conversation = ? AND timer IS NOT NULL ORDER BY sent_at DESC, id DESC LIMIT 1";

/// The timer of the conversation `conversation`, in seconds (0: off): the newest line
/// that set one. Every message sent reads it, so it is kept in `timers` once read, until a
/// row that sets a timer in that conversation is written.
pub(super) async fn timer(
    db: &Db,
    timers: &Timers,
    conversation: UserId,
) -> Result<u64, StoreError> {
    let generation = match timers.get(conversation) {
        Ok(secs) => return Ok(secs),
        Err(generation) => generation,
    };
    let timer: Option<(i64,)> = sqlx::query_as(TIMER_QUERY)
        .bind(conversation.to_string())
        .fetch_optional(db.pool())
        .await?;
    let secs = timer.map_or(0, |(t,)| u64::try_from(t).unwrap_or(0));
    timers.put(conversation, generation, secs);
    Ok(secs)
}

/// Conversations' timers as last read from the index. Rows are never removed from the
/// index, so only a written row that sets a timer changes one; each such write (after its
/// commit) forgets that conversation's timer and moves the generation on, so a read that
/// began before it cannot put back what it read.
#[derive(Clone, Default)]
pub(crate) struct Timers(Arc<Mutex<TimersInner>>);

#[derive(Default)]
struct TimersInner {
    known: HashMap<UserId, u64>,
    generation: u64,
}

/// Conversations whose timers are kept at most (forgotten all at once past it).
const TIMERS_KEPT: usize = 4096;

impl Timers {
    fn lock(&self) -> std::sync::MutexGuard<'_, TimersInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The timer kept for `conversation`, or the generation to read it under.
    fn get(&self, conversation: UserId) -> Result<u64, u64> {
        let inner = self.lock();
        inner
            .known
            .get(&conversation)
            .copied()
            .ok_or(inner.generation)
    }

    fn put(&self, conversation: UserId, generation: u64, secs: u64) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.known.len() >= TIMERS_KEPT {
            inner.known.clear();
        }
        inner.known.insert(conversation, secs);
    }

    /// `rows` are committed: forgets the timers they set.
    pub(super) fn written(&self, rows: &[Row]) {
        let mut set = rows
            .iter()
            .filter(|r| r.message.extra.timer().is_some())
            .map(|r| r.conversation)
            .peekable();
        if set.peek().is_none() {
            return;
        }
        let mut inner = self.lock();
        inner.generation += 1;
        for conversation in set {
            inner.known.remove(&conversation);
        }
    }
}

/// Messages whose time ran out before `now` (not yet deleted), oldest first, at most
/// `limit`; and when the next one runs out.
pub(super) async fn expiring(
    db: &Db,
    now: Timestamp,
    limit: u32,
) -> Result<(Vec<(UserId, MessageId)>, Option<Timestamp>), StoreError> {
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT conversation, id FROM messages WHERE expires_at IS NOT NULL AND expires_at <= ? \
         AND status < 5 ORDER BY expires_at LIMIT ?",
    )
    .bind(now.as_millis())
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    let (next,): (Option<i64>,) = sqlx::query_as(
        "SELECT MIN(expires_at) FROM messages WHERE expires_at IS NOT NULL AND expires_at > ? \
         AND status < 5",
    )
    .bind(now.as_millis())
    .fetch_one(db.pool())
    .await?;
    Ok((
        rows.into_iter()
            .filter_map(|(c, id)| {
                Some((c.parse().ok()?, MessageId::from_bytes(id.try_into().ok()?)))
            })
            .collect(),
        next.map(Timestamp::from_millis),
    ))
}
