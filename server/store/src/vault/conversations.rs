//! Conversations: each is a series of chunk documents (`c/<user id>/<n>`) of at most
//! [`CHUNK_MESSAGES`] messages or [`CHUNK_BYTES`] of text, each a mergeable map of messages
//! keyed by message id, so the same message stored twice (a retry, a second relay, another
//! device) is one message. New messages go to the conversation's newest chunk; a full chunk
//! is never written again except for a status change. Only the chunks being written are in
//! memory ([`MAX_LOADED`] at most); history is read from the index.
//!
//! A message's status only moves forward — `queued` → `relayed` → `failed` → `delivered` —
//! and is stored as flags that are only ever set, so concurrent changes on two devices
//! merge to the furthest one (a receipt that arrives after the time to live still shows the
//! message delivered).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use loro::{LoroDoc, LoroMap, LoroValue, ValueOrContainer};
use tokio::runtime::Handle;
use volli_core::{MessageId, Timestamp, UserId};

use super::Vault;
use super::docs::{self, DocId, DocWrite, Stored};
use super::index::{self, Located, Row};
use super::root;
use crate::{Db, StoreError};

/// Messages per chunk before a new one is started.
pub const CHUNK_MESSAGES: u64 = 1024;
/// Text per chunk before a new one is started.
pub const CHUNK_BYTES: u64 = 1 << 20;
/// Messages an imported chunk may hold at most: devices writing at once can overfill one,
/// but never by this much.
const MAX_IMPORTED_MESSAGES: u64 = 4 * CHUNK_MESSAGES;
/// Chunk documents kept in memory at most.
pub const MAX_LOADED: usize = 16;
/// Messages whose place is remembered without asking SQLite (the ones whose status is about
/// to change are the recent ones).
const MAX_RECENT: usize = 1 << 16;

/// Where a message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MessageStatus {
    /// Waiting for the recipient.
    Queued,
    /// Held by at least one friend's node.
    Relayed,
    /// Its time to live ran out undelivered.
    Failed,
    /// The recipient's node acknowledged it.
    Delivered,
    /// An incoming message.
    Received,
    /// Deleted by the user (on any of their devices): its text is gone, its id stays so a
    /// copy that arrives again stays deleted. Never listed.
    Deleted,
}

impl MessageStatus {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Relayed => "relayed",
            Self::Failed => "failed",
            Self::Delivered => "delivered",
            Self::Received => "received",
            Self::Deleted => "deleted",
        }
    }

    /// Parses an API name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "relayed" => Self::Relayed,
            "failed" => Self::Failed,
            "delivered" => Self::Delivered,
            "received" => Self::Received,
            "deleted" => Self::Deleted,
            _ => return None,
        })
    }

    /// The index's number for it (its order of progress).
    pub fn rank(self) -> i64 {
        self as i64
    }

    /// The status with this index number.
    pub fn from_rank(rank: i64) -> Option<Self> {
        Some(match rank {
            0 => Self::Queued,
            1 => Self::Relayed,
            2 => Self::Failed,
            3 => Self::Delivered,
            4 => Self::Received,
            5 => Self::Deleted,
            _ => return None,
        })
    }

    /// Whether moving from `self` to `next` is progress. Incoming messages never change.
    fn advances_to(self, next: Self) -> bool {
        if next == Self::Deleted {
            return self != Self::Deleted;
        }
        self != Self::Received && self != Self::Deleted && next != Self::Received && next > self
    }
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its id.
    pub id: MessageId,
    /// The sender.
    pub from: UserId,
    /// The recipient.
    pub to: UserId,
    /// The text.
    pub body: String,
    /// When it was sent (sender's clock).
    pub sent_at: Timestamp,
    /// Where it stands.
    pub status: MessageStatus,
    /// What it is besides its text: a reply, its reactions, an edit, a file, a timer.
    pub extra: Extra,
}

/// What a message is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MessageKind {
    /// A text.
    #[default]
    Text,
    /// A file offered in the conversation.
    File,
    /// A line about the conversation itself ("Carol was added", a timer set).
    System,
}

impl MessageKind {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::File => "file",
            Self::System => "system",
        }
    }

    /// Parses an API name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "text" => Self::Text,
            "file" => Self::File,
            "system" => Self::System,
            _ => return None,
        })
    }
}

/// A file in a conversation's timeline.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileItem {
    /// The transfer (32 hex digits).
    pub transfer: String,
    /// The file's name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type, as the sender said.
    pub mime: String,
    /// A small image of it (a `data:` URL), for pictures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<String>,
}

/// Reactions a message keeps at most (one per user).
pub const MAX_REACTIONS: usize = 256;
/// Longest reaction, in bytes (one emoji, with its modifiers).
pub const MAX_REACTION_LEN: usize = 32;
/// Readers a message is the read marker of at most.
pub(super) const MAX_READERS: usize = 256;
/// Longest file or system entry, in bytes (a thumbnail included).
pub const MAX_ITEM_LEN: usize = 32 << 10;

/// What a message carries besides its text and status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extra {
    /// What it is.
    pub kind: MessageKind,
    /// The message it answers.
    pub reply_to: Option<MessageId>,
    /// When its author last edited it.
    pub edited_at: Option<Timestamp>,
    /// Deleted for everyone by its author: a tombstone, without text.
    pub unsent: bool,
    /// When it disappears from every device.
    pub expires_at: Option<Timestamp>,
    /// Each user's reaction (one emoji per user).
    pub reactions: std::collections::BTreeMap<UserId, String>,
    /// The users who read the conversation up to this message (their read marker).
    pub read_by: std::collections::BTreeSet<UserId>,
    /// For a file: what it is.
    pub file: Option<FileItem>,
    /// For a system line: what happened, as JSON (`{"timer": 86400}`, `{"added": user}`…).
    pub system: Option<String>,
}

impl Extra {
    /// The timer a system line set, if it is one (seconds; 0: off).
    pub fn timer(&self) -> Option<u64> {
        let system: serde_json::Value = serde_json::from_str(self.system.as_deref()?).ok()?;
        system.get("timer")?.as_u64()
    }
}

fn map_of(value: ValueOrContainer) -> Option<LoroMap> {
    match value {
        ValueOrContainer::Container(loro::Container::Map(m)) => Some(m),
        _ => None,
    }
}

fn text(map: &LoroMap, key: &str) -> Option<String> {
    match map.get(key)? {
        ValueOrContainer::Value(LoroValue::String(s)) => Some(s.to_string()),
        _ => None,
    }
}

/// Progress flags a message entry may carry besides its first `status`.
const FLAGS: [MessageStatus; 3] = [
    MessageStatus::Relayed,
    MessageStatus::Failed,
    MessageStatus::Delivered,
];

/// Reads the message stored under `id` in a chunk's entry map.
pub(super) fn read_entry(id: &str, map: &LoroMap) -> Option<StoredMessage> {
    let sent_at = match map.get("sent_at")? {
        ValueOrContainer::Value(LoroValue::I64(ms)) => Timestamp::from_millis(ms),
        _ => return None,
    };
    let mut status = MessageStatus::parse(&text(map, "status")?)?;
    let deleted = matches!(
        map.get(MessageStatus::Deleted.as_str()),
        Some(ValueOrContainer::Value(LoroValue::Bool(true)))
    );
    if deleted {
        status = MessageStatus::Deleted;
    } else if status != MessageStatus::Received {
        for flag in FLAGS {
            if matches!(
                map.get(flag.as_str()),
                Some(ValueOrContainer::Value(LoroValue::Bool(true)))
            ) {
                status = status.max(flag);
            }
        }
    }
    let extra = read_extra(map)?;
    Some(StoredMessage {
        id: id.parse().ok()?,
        from: text(map, "from")?.parse().ok()?,
        to: text(map, "to")?.parse().ok()?,
        body: if deleted || extra.unsent {
            String::new()
        } else {
            text(map, "body")?
        },
        sent_at,
        status,
        extra,
    })
}

fn flag(map: &LoroMap, key: &str) -> bool {
    matches!(
        map.get(key),
        Some(ValueOrContainer::Value(LoroValue::Bool(true)))
    )
}

fn millis(map: &LoroMap, key: &str) -> Option<Timestamp> {
    match map.get(key)? {
        ValueOrContainer::Value(LoroValue::I64(ms)) => Some(Timestamp::from_millis(ms)),
        _ => None,
    }
}

/// Reads what an entry carries besides its text and status; `None` when it is out of bounds
/// (an entry written by a patched device, refused with its import).
fn read_extra(map: &LoroMap) -> Option<Extra> {
    let mut extra = Extra {
        kind: match text(map, "kind") {
            Some(k) => MessageKind::parse(&k)?,
            None => MessageKind::Text,
        },
        reply_to: match text(map, "reply_to") {
            Some(r) => Some(r.parse().ok()?),
            None => None,
        },
        edited_at: millis(map, "edited_at"),
        unsent: flag(map, "unsent"),
        expires_at: millis(map, "expires_at"),
        ..Extra::default()
    };
    if let Some(reactions) = map.get("reactions").and_then(map_of) {
        if reactions.len() > MAX_REACTIONS {
            return None;
        }
        let mut bad = false;
        reactions.for_each(|user, v| {
            if let ValueOrContainer::Value(LoroValue::String(emoji)) = v
                && !emoji.is_empty()
            {
                match user.parse::<UserId>() {
                    Ok(user) if emoji.len() <= MAX_REACTION_LEN => {
                        extra.reactions.insert(user, emoji.to_string());
                    }
                    _ => bad = true,
                }
            }
        });
        if bad {
            return None;
        }
    }
    if let Some(readers) = map.get("read_by").and_then(map_of) {
        if readers.len() > MAX_READERS {
            return None;
        }
        let mut bad = false;
        readers.for_each(|user, _| match user.parse::<UserId>() {
            Ok(user) => {
                extra.read_by.insert(user);
            }
            Err(_) => bad = true,
        });
        if bad {
            return None;
        }
    }
    if let Some(file) = text(map, "file") {
        if file.len() > MAX_ITEM_LEN {
            return None;
        }
        extra.file = Some(serde_json::from_str(&file).ok()?);
    }
    if let Some(system) = text(map, "system") {
        if system.len() > MAX_ITEM_LEN {
            return None;
        }
        extra.system = Some(system);
    }
    Some(extra)
}

/// Writes `m` as a new entry of a chunk's `messages` map.
pub(super) fn write_entry(messages: &LoroMap, m: &StoredMessage) -> Result<(), StoreError> {
    let entry = messages.ensure_mergeable_map(&m.id.to_string())?;
    entry.insert("from", m.from.to_string())?;
    entry.insert("to", m.to.to_string())?;
    entry.insert("body", m.body.as_str())?;
    entry.insert("sent_at", m.sent_at.as_millis())?;
    entry.insert("status", m.status.as_str())?;
    let x = &m.extra;
    if x.kind != MessageKind::Text {
        entry.insert("kind", x.kind.as_str())?;
    }
    if let Some(r) = x.reply_to {
        entry.insert("reply_to", r.to_string())?;
    }
    if let Some(at) = x.expires_at {
        entry.insert("expires_at", at.as_millis())?;
    }
    if let Some(file) = &x.file {
        entry.insert(
            "file",
            serde_json::to_string(file).map_err(|e| StoreError::Document(e.to_string()))?,
        )?;
    }
    if let Some(system) = &x.system {
        entry.insert("system", system.as_str())?;
    }
    Ok(())
}

/// A change to a stored message, by its author or a reader.
#[derive(Clone, Debug)]
pub enum Change {
    /// `user`'s reaction is now `emoji` (`None`: taken back).
    React {
        /// Who reacts.
        user: UserId,
        /// The emoji.
        emoji: Option<String>,
    },
    /// Its author's new text, as of `at`.
    Edit {
        /// The text.
        body: String,
        /// When it was edited.
        at: Timestamp,
    },
    /// Deleted for everyone by its author.
    Unsend,
    /// `reader` read the conversation up to this message.
    ReadUpTo {
        /// The reader.
        reader: UserId,
    },
}

/// Applies `change` to a message's entry; whether it changed anything.
fn apply(entry: &LoroMap, change: &Change) -> Result<bool, StoreError> {
    Ok(match change {
        Change::React { user, emoji } => {
            let reactions = entry.ensure_mergeable_map("reactions")?;
            let key = user.to_string();
            let now = match reactions.get(&key) {
                Some(ValueOrContainer::Value(LoroValue::String(e))) if !e.is_empty() => {
                    Some(e.to_string())
                }
                _ => None,
            };
            if now == *emoji {
                return Ok(false);
            }
            reactions.insert(&key, emoji.clone().unwrap_or_default())?;
            true
        }
        Change::Edit { body, at } => {
            if flag(entry, "unsent") || flag(entry, MessageStatus::Deleted.as_str()) {
                return Ok(false);
            }
            if millis(entry, "edited_at").is_some_and(|before| before >= *at) {
                return Ok(false);
            }
            entry.insert("body", body.as_str())?;
            entry.insert("edited_at", at.as_millis())?;
            true
        }
        Change::Unsend => {
            if flag(entry, "unsent") {
                return Ok(false);
            }
            entry.insert("unsent", true)?;
            entry.delete("body")?;
            entry.delete("file")?;
            true
        }
        Change::ReadUpTo { reader } => {
            let readers = entry.ensure_mergeable_map("read_by")?;
            let key = reader.to_string();
            if readers.get(&key).is_some() {
                return Ok(false);
            }
            readers.insert(&key, true)?;
            true
        }
    })
}

/// Whether an appended message was new: known at once, or once its batch is written.
pub(super) enum Appended {
    Known(bool),
    AtCommit(Arc<OnceLock<bool>>),
}

impl Appended {
    /// The answer; only called after the batch was written.
    pub(super) fn was_new(&self) -> bool {
        match self {
            Self::Known(new) => *new,
            Self::AtCommit(flag) => flag.get().copied().unwrap_or(false),
        }
    }
}

struct LoadedChunk {
    doc: LoroDoc,
    stored: Stored,
    used: u64,
}

/// The conversation chunks as the vault actor sees them: those in memory, the newest chunk
/// of each conversation, and the index rows of the batch being written.
pub(super) struct Chunks {
    db: Db,
    runtime: Handle,
    peer: u64,
    capacity: u64,
    loaded: HashMap<DocId, LoadedChunk>,
    clock: u64,
    tips: HashMap<UserId, u32>,
    dirty: HashSet<DocId>,
    staged: HashMap<MessageId, Row>,
    /// Status changes of this batch to messages stored before it.
    statuses: HashMap<MessageId, Located>,
    /// Appended messages of this batch whose newness the commit settles.
    unsettled: Vec<(MessageId, Arc<OnceLock<bool>>)>,
    recent: HashMap<MessageId, Located>,
    /// Chunks with messages deleted here whose stored history still holds their text:
    /// compacted without history as soon as possible.
    erase: HashSet<DocId>,
}

/// A batch's changes to the chunks, to be written in one transaction.
#[derive(Default)]
pub(super) struct ChunkChanges {
    pub(super) writes: Vec<DocWrite>,
    pub(super) rows: Vec<Row>,
    /// New statuses of messages indexed before.
    pub(super) statuses: Vec<(MessageId, MessageStatus)>,
    /// Messages to tell apart, new or already indexed, in the same transaction.
    pub(super) unsettled: Vec<(MessageId, Arc<OnceLock<bool>>)>,
    /// Messages stored here that an import deleted (deleted on another device).
    pub(super) deleted: Vec<(UserId, MessageId)>,
}

impl Chunks {
    pub(super) fn new(db: Db, runtime: Handle, peer: u64, capacity: u64) -> Self {
        Self {
            db,
            runtime,
            peer,
            capacity: capacity.max(1),
            loaded: HashMap::new(),
            clock: 0,
            tips: HashMap::new(),
            dirty: HashSet::new(),
            staged: HashMap::new(),
            statuses: HashMap::new(),
            unsettled: Vec::new(),
            recent: HashMap::new(),
            erase: HashSet::new(),
        }
    }

    /// The chunk `id`, loaded from SQLite if it is not in memory.
    fn get(&mut self, id: DocId) -> Result<&mut LoadedChunk, StoreError> {
        self.clock += 1;
        if !self.loaded.contains_key(&id) {
            let opened = self.runtime.block_on(docs::open(&self.db, id, self.peer))?;
            self.loaded.insert(
                id,
                LoadedChunk {
                    doc: opened.doc,
                    stored: opened.stored,
                    used: 0,
                },
            );
        }
        let chunk = self
            .loaded
            .get_mut(&id)
            .ok_or_else(|| StoreError::Document("chunk vanished".into()))?;
        chunk.used = self.clock;
        Ok(chunk)
    }

    /// Makes sure chunk `id` is in memory.
    pub(super) fn load(&mut self, id: DocId) -> Result<(), StoreError> {
        self.get(id).map(|_| ())
    }

    /// Where message `id` is, from this batch, the recent ones, or the index.
    fn locate(&mut self, id: MessageId) -> Result<Option<Located>, StoreError> {
        if let Some(row) = self.staged.get(&id) {
            return Ok(Some(Located {
                conversation: row.conversation,
                doc: row.doc,
                status: row.message.status,
            }));
        }
        if let Some(found) = self.statuses.get(&id) {
            return Ok(Some(*found));
        }
        if let Some(found) = self.recent.get(&id) {
            return Ok(Some(*found));
        }
        self.runtime.block_on(index::locate(&self.db, id))
    }

    /// The newest chunk of the conversation with `with`.
    fn tip(&mut self, with: UserId) -> Result<u32, StoreError> {
        if let Some(tip) = self.tips.get(&with) {
            return Ok(*tip);
        }
        let (max,): (Option<i64>,) = self.runtime.block_on(
            sqlx::query_as("SELECT MAX(chunk) FROM vault_docs WHERE conversation = ?")
                .bind(with.to_string())
                .fetch_one(self.db.pool()),
        )?;
        let tip = max.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
        self.tips.insert(with, tip);
        Ok(tip)
    }

    /// Stores `m` in the conversation with `with` unless a message with its id is stored
    /// already. `fresh` says the id was just made up by this device, so it cannot be.
    ///
    /// Whether it was new is known here when the answer is in memory (this batch, the
    /// recent messages, the chunk being written); otherwise it is settled when the batch is
    /// written, by one query for the whole batch — no round trip to SQLite per message. A
    /// message that turns out to be stored in an older chunk leaves a second copy in the
    /// newest one, which the index shows as one message.
    pub(super) fn append(
        &mut self,
        with: UserId,
        m: StoredMessage,
        fresh: bool,
    ) -> Result<Appended, StoreError> {
        if !fresh && (self.staged.contains_key(&m.id) || self.recent.contains_key(&m.id)) {
            return Ok(Appended::Known(false));
        }
        let mut chunk = self.tip(with)?;
        let capacity = self.capacity;
        let key = m.id.to_string();
        let (full, present) = {
            let id = DocId::Chunk {
                conversation: with,
                chunk,
            };
            let loaded = self.get(id)?;
            let messages = loaded.doc.get_map(root::MESSAGES);
            (
                docs::messages_in(id, &loaded.doc) >= capacity
                    || loaded.stored.bytes >= CHUNK_BYTES,
                !fresh && messages.get(&key).is_some(),
            )
        };
        if present {
            return Ok(Appended::Known(false));
        }
        if full {
            chunk += 1;
            self.tips.insert(with, chunk);
        }
        let id = DocId::Chunk {
            conversation: with,
            chunk,
        };
        let loaded = self.get(id)?;
        write_entry(&loaded.doc.get_map(root::MESSAGES), &m)?;
        loaded.stored.bytes += m.body.len() as u64;
        self.dirty.insert(id);
        let appended = if fresh {
            Appended::Known(true)
        } else {
            let flag = Arc::new(OnceLock::new());
            self.unsettled.push((m.id, Arc::clone(&flag)));
            Appended::AtCommit(flag)
        };
        self.staged.insert(
            m.id,
            Row {
                conversation: with,
                message: m,
                doc: id,
            },
        );
        Ok(appended)
    }

    /// Moves message `id` of the conversation with `with` on to `status`; whether it did.
    pub(super) fn set_status(
        &mut self,
        with: UserId,
        id: MessageId,
        status: MessageStatus,
    ) -> Result<bool, StoreError> {
        let Some(found) = self.locate(id)? else {
            return Ok(false);
        };
        if found.conversation != with || !found.status.advances_to(status) {
            return Ok(false);
        }
        let loaded = self.get(found.doc)?;
        let Some(entry) = loaded
            .doc
            .get_map(root::MESSAGES)
            .get(&id.to_string())
            .and_then(map_of)
        else {
            return Ok(false);
        };
        entry.insert(status.as_str(), true)?;
        if status == MessageStatus::Deleted {
            // The text leaves the document's state; compaction drops it from the history
            // stored on disk (see `Self::compact`).
            entry.delete("body")?;
            self.erase.insert(found.doc);
        }
        self.dirty.insert(found.doc);
        let status = found.status.max(status);
        match self.staged.get_mut(&id) {
            // Stored in this batch: its row goes in with the new status.
            Some(row) => row.message.status = status,
            None => {
                self.statuses.insert(id, Located { status, ..found });
            }
        }
        Ok(true)
    }

    /// Applies `change` to message `id` of the conversation with `with`; whether it changed.
    /// The message's whole index row is written again with the batch (its text, reactions,
    /// read markers…).
    pub(super) fn modify(
        &mut self,
        with: UserId,
        id: MessageId,
        change: &Change,
    ) -> Result<bool, StoreError> {
        let Some(found) = self.locate(id)? else {
            return Ok(false);
        };
        if found.conversation != with || found.status == MessageStatus::Deleted {
            return Ok(false);
        }
        let key = id.to_string();
        let loaded = self.get(found.doc)?;
        let Some(entry) = loaded
            .doc
            .get_map(root::MESSAGES)
            .get(&key)
            .and_then(map_of)
        else {
            return Ok(false);
        };
        if !apply(&entry, change)? {
            return Ok(false);
        }
        let Some(mut message) = read_entry(&key, &entry) else {
            return Err(StoreError::Document(format!(
                "message {key:.32} is unreadable"
            )));
        };
        if matches!(change, Change::Unsend) {
            // Its text leaves the stored history too (see `Self::compact`).
            self.erase.insert(found.doc);
        }
        self.dirty.insert(found.doc);
        // A status changed in this batch stays.
        message.status = message.status.max(found.status);
        if let Some(row) = self.staged.get(&id) {
            message.status = message.status.max(row.message.status);
        }
        self.staged.insert(
            id,
            Row {
                conversation: with,
                message,
                doc: found.doc,
            },
        );
        Ok(true)
    }

    /// Takes updates from another device into chunk `id`; returns what to write and whether
    /// anything is new, or `None` when they add nothing. Updates that leave the chunk with
    /// more messages than devices write into one, with text longer than a message may be,
    /// or with a message of another conversation are refused (and the caller reloads).
    pub(super) fn import(
        &mut self,
        id: DocId,
        blobs: Vec<Vec<u8>>,
    ) -> Result<Option<(ChunkChanges, bool)>, StoreError> {
        let DocId::Chunk { conversation, .. } = id else {
            return Err(StoreError::Document("not a chunk".into()));
        };
        let loaded = self.get(id)?;
        let doc = &loaded.doc;
        let before = doc.oplog_vv();
        let had_pending = doc.export_pending_updates()?.is_some();
        docs::import_all(doc, &blobs)?;
        let after = doc.oplog_vv();
        let now_pending = doc.export_pending_updates()?.is_some();
        if before == after && !now_pending && !had_pending {
            return Ok(None);
        }
        let messages = doc.get_map(root::MESSAGES);
        let count = docs::messages_in(id, doc);
        if count > MAX_IMPORTED_MESSAGES {
            return Err(StoreError::Refused(format!(
                "chunk {id} would hold {count} messages"
            )));
        }
        super::devices::only_roots(doc, &[root::MESSAGES]).map_err(StoreError::Refused)?;
        let mut rows = Vec::new();
        for key in changed_messages(doc, &before) {
            let Some(entry) = messages.get(&key).and_then(map_of) else {
                continue;
            };
            let Some(message) = read_entry(&key, &entry) else {
                return Err(StoreError::Refused(format!(
                    "message {key:.32} in chunk {id} is unreadable or out of bounds"
                )));
            };
            {
                if message.body.len() > volli_core::envelope::MAX_BODY_LEN
                    || (message.from != conversation && message.to != conversation)
                {
                    return Err(StoreError::Refused(format!(
                        "message {key:.32} in chunk {id} is not one of this conversation's"
                    )));
                }
                rows.push(Row {
                    conversation,
                    message,
                    doc: id,
                });
            }
        }
        // Text of the messages that are new here (not status changes of known ones), and
        // the known ones deleted on another device.
        let mut added = 0u64;
        let mut deleted = Vec::new();
        for row in &rows {
            let gone = row.message.status == MessageStatus::Deleted;
            if gone {
                // Deleted on another device: the text goes from this device's disk as well.
                self.erase.insert(id);
            }
            match self.locate(row.message.id)? {
                None => added += row.message.body.len() as u64,
                Some(known) if gone && known.status != MessageStatus::Deleted => {
                    deleted.push((conversation, row.message.id));
                }
                Some(_) => {}
            }
        }
        let loaded = self.get(id)?;
        loaded.stored.bytes += added;
        let write = DocWrite {
            id,
            blobs,
            version: after,
            messages: count,
            bytes: loaded.stored.bytes,
        };
        let new = write.version != before;
        Ok(Some((
            ChunkChanges {
                writes: vec![write],
                rows,
                deleted,
                ..ChunkChanges::default()
            },
            new,
        )))
    }

    /// What this batch changed, to be written in one transaction.
    pub(super) fn changes(&mut self) -> Result<ChunkChanges, StoreError> {
        let mut writes = Vec::new();
        for id in self.dirty.iter() {
            if let Some(loaded) = self.loaded.get(id)
                && let Some(write) = DocWrite::since(*id, &loaded.doc, &loaded.stored)?
            {
                writes.push(write);
            }
        }
        Ok(ChunkChanges {
            writes,
            rows: self.staged.values().cloned().collect(),
            statuses: self
                .statuses
                .iter()
                .map(|(id, l)| (*id, l.status))
                .collect(),
            unsettled: std::mem::take(&mut self.unsettled),
            deleted: Vec::new(),
        })
    }

    /// The changes are durable: remember where their messages are and what each chunk
    /// now has in SQLite. Returns the chunks that are due for compaction.
    pub(super) fn committed(
        &mut self,
        changes: &ChunkChanges,
        compact_after: (u64, u64),
    ) -> Vec<DocId> {
        let mut due = Vec::new();
        for write in &changes.writes {
            if let Some(loaded) = self.loaded.get_mut(&write.id) {
                loaded.stored.persisted = write.version.clone();
                loaded.stored.log_rows += write.blobs.len() as u64;
                loaded.stored.log_bytes += write.len();
                if loaded.stored.log_rows >= compact_after.0
                    || loaded.stored.log_bytes >= compact_after.1
                    || self.erase.contains(&write.id)
                {
                    due.push(write.id);
                }
            }
            if let DocId::Chunk {
                conversation,
                chunk,
            } = write.id
                && self.tips.get(&conversation).is_some_and(|tip| *tip < chunk)
            {
                self.tips.insert(conversation, chunk);
            }
        }
        if self.recent.len() + changes.rows.len() + self.statuses.len() > MAX_RECENT {
            self.recent.clear();
        }
        for (id, found) in self.statuses.drain() {
            self.recent.insert(id, found);
        }
        for row in &changes.rows {
            let known = self.recent.get(&row.message.id).map(|l| l.status);
            self.recent.insert(
                row.message.id,
                Located {
                    conversation: row.conversation,
                    doc: row.doc,
                    status: known.map_or(row.message.status, |s| s.max(row.message.status)),
                },
            );
        }
        self.staged.clear();
        self.unsettled.clear();
        self.dirty.clear();
        self.evict();
        due
    }

    /// Folds chunk `id`'s log into a snapshot. A chunk with messages deleted since its last
    /// compaction is folded without history when the user's other devices allow it, so the
    /// deleted text leaves the disk; it is then dropped from memory (it still holds the
    /// history) and read back from that snapshot when next needed.
    pub(super) fn compact(&mut self, id: DocId) -> Result<u64, StoreError> {
        let Some(loaded) = self.loaded.get_mut(&id) else {
            return Ok(0);
        };
        let shallow = self.erase.contains(&id)
            && self
                .runtime
                .block_on(docs::others_hold(&self.db, id, &loaded.doc.oplog_vv()))?;
        let len = self
            .runtime
            .block_on(docs::compact(&self.db, id, &loaded.doc, shallow))?;
        loaded.stored.log_rows = 0;
        loaded.stored.log_bytes = 0;
        if shallow {
            // The log rows that held the text are deleted; their pages leave the file too.
            if let Err(e) = self.runtime.block_on(self.db.drop_free_pages()) {
                tracing::warn!(error = %e, "free pages could not be dropped after an erase");
            }
            self.erase.remove(&id);
            if !self.dirty.contains(&id) {
                self.loaded.remove(&id);
            }
        }
        Ok(len)
    }

    /// Chunks with deleted messages whose stored history still holds the text.
    pub(super) fn erase_pending(&self) -> Vec<DocId> {
        self.erase.iter().copied().collect()
    }

    /// Exports what a device at `version` lacks of chunk `id` (loading it if needed). A
    /// chunk stored without its early history (see [`Self::compact`]) goes whole to a device
    /// that does not reach where that history ends.
    pub(super) fn export(
        &mut self,
        id: DocId,
        version: &loro::VersionVector,
    ) -> Result<Vec<u8>, StoreError> {
        let loaded = self.get(id)?;
        let doc = &loaded.doc;
        if doc.is_shallow() && !version.includes_vv(&doc.shallow_since_vv().to_vv()) {
            return Ok(doc.export(loro::ExportMode::Snapshot)?);
        }
        Ok(doc.export(loro::ExportMode::updates(version))?)
    }

    /// Forgets everything not in SQLite (after a failed write).
    pub(super) fn reset(&mut self) {
        self.loaded.clear();
        self.tips.clear();
        self.dirty.clear();
        self.staged.clear();
        self.statuses.clear();
        self.unsettled.clear();
        self.recent.clear();
    }

    /// Chunks in memory.
    pub(super) fn loaded(&self) -> usize {
        self.loaded.len()
    }

    /// Drops the least recently used chunks beyond [`MAX_LOADED`]; all are saved by now.
    fn evict(&mut self) {
        while self.loaded.len() > MAX_LOADED {
            let Some(oldest) = self
                .loaded
                .iter()
                .filter(|(id, _)| !self.dirty.contains(id))
                .min_by_key(|(_, c)| c.used)
                .map(|(id, _)| *id)
            else {
                return;
            };
            self.loaded.remove(&oldest);
        }
    }
}

/// The keys of the messages that changed in `doc` since `before`.
fn changed_messages(doc: &LoroDoc, before: &loro::VersionVector) -> Vec<String> {
    let after = doc.oplog_vv();
    if before.is_empty() {
        let mut all = Vec::new();
        doc.get_map(root::MESSAGES)
            .for_each(|key, _| all.push(key.to_owned()));
        return all;
    }
    let mut containers = HashSet::new();
    for (peer, span) in after.sub_vec(before).iter() {
        let len = usize::try_from(span.end - span.start).unwrap_or(0);
        containers.extend(doc.get_changed_containers_in(loro::ID::new(*peer, span.start), len));
    }
    let mut keys = HashSet::new();
    for container in containers {
        if let Some(path) = doc.get_path_to_container(&container)
            && let [(_, loro::Index::Key(top)), (_, loro::Index::Key(key)), ..] = path.as_slice()
            && top.as_str() == root::MESSAGES
        {
            keys.insert(key.to_string());
        }
    }
    keys.into_iter().collect()
}

impl Vault {
    /// Stores a message in the conversation with `with`. Storing an id that is already
    /// there changes nothing and returns `false`.
    pub async fn put_message(
        &self,
        with: UserId,
        message: StoredMessage,
    ) -> Result<bool, StoreError> {
        self.put_messages(vec![(with, message)])
            .await
            .map(|new| new[0])
    }

    /// Queues a message this device just created (its id is new) and returns as soon as the
    /// vault has it. The returned future resolves once it is durable. For callers that keep
    /// the message durable elsewhere meanwhile (the outbox).
    pub async fn queue_message(
        &self,
        with: UserId,
        message: StoredMessage,
    ) -> Result<impl Future<Output = Result<bool, StoreError>> + Send + 'static, StoreError> {
        let saved = self
            .write_ctx_queued(move |ctx| ctx.chunks.append(with, message, true))
            .await?;
        Ok(async move { saved.await.map(|a| a.was_new()) })
    }

    /// Stores several messages in one write; for each, whether it was new.
    pub async fn put_messages(
        &self,
        messages: Vec<(UserId, StoredMessage)>,
    ) -> Result<Vec<bool>, StoreError> {
        let appended: Vec<Appended> = self
            .write_ctx_queued(move |ctx| {
                messages
                    .into_iter()
                    .map(|(with, m)| ctx.chunks.append(with, m, false))
                    .collect()
            })
            .await?
            .await?;
        Ok(appended.iter().map(Appended::was_new).collect())
    }

    /// Moves a message's status forward; returns whether it changed.
    pub async fn set_message_status(
        &self,
        with: UserId,
        id: MessageId,
        status: MessageStatus,
    ) -> Result<bool, StoreError> {
        self.queue_message_status(with, id, status).await?.await
    }

    /// Like [`Self::set_message_status`], but returns as soon as the vault has the change;
    /// the returned future says whether the status changed, once that is durable.
    pub async fn queue_message_status(
        &self,
        with: UserId,
        id: MessageId,
        status: MessageStatus,
    ) -> Result<impl Future<Output = Result<bool, StoreError>> + Send + 'static, StoreError> {
        self.write_ctx_queued(move |ctx| ctx.chunks.set_status(with, id, status))
            .await
    }

    /// Deletes messages of the conversation with `with` on every device of the user (the
    /// deletion is a flag in the vault, which syncs); returns how many were there to delete.
    /// A deleted message's text leaves the index at once; its id stays, so a copy that
    /// arrives again (a retry, a relay) stays deleted.
    pub async fn delete_messages(
        &self,
        with: UserId,
        ids: Vec<MessageId>,
    ) -> Result<usize, StoreError> {
        let deleted: Vec<bool> = self
            .write_ctx_queued(move |ctx| {
                ids.into_iter()
                    .map(|id| ctx.chunks.set_status(with, id, MessageStatus::Deleted))
                    .collect::<Result<Vec<bool>, StoreError>>()
            })
            .await?
            .await?;
        Ok(deleted.into_iter().filter(|d| *d).count())
    }

    /// Applies `change` to message `id` of the conversation with `with`, on every device of
    /// the user (the change is in the vault, which syncs); whether it changed anything.
    pub async fn change_message(
        &self,
        with: UserId,
        id: MessageId,
        change: Change,
    ) -> Result<bool, StoreError> {
        self.write_ctx_queued(move |ctx| ctx.chunks.modify(with, id, &change))
            .await?
            .await
    }

    /// Like [`Self::change_message`], but returns as soon as the vault has the change; the
    /// returned future says whether it changed anything, once that is durable.
    pub async fn queue_change(
        &self,
        with: UserId,
        id: MessageId,
        change: Change,
    ) -> Result<impl Future<Output = Result<bool, StoreError>> + Send + 'static, StoreError> {
        self.write_ctx_queued(move |ctx| ctx.chunks.modify(with, id, &change))
            .await
    }

    /// Message `id` and its conversation, if it is stored and not deleted for this user.
    pub async fn message(
        &self,
        id: MessageId,
    ) -> Result<Option<(UserId, StoredMessage)>, StoreError> {
        index::get(&self.db, id).await
    }

    /// How far each reader of the conversation with `with` read (this user's devices and
    /// those who sent read receipts): the send time of the newest message each marked.
    pub async fn read_marks(&self, with: UserId) -> Result<Vec<(UserId, Timestamp)>, StoreError> {
        index::read_marks(&self.db, with).await
    }

    /// Every conversation holding messages, with its newest message, what `me` has not read
    /// yet and its timer.
    pub async fn summaries(&self, me: UserId) -> Result<Vec<index::Summary>, StoreError> {
        index::summaries(&self.db, me).await
    }

    /// The conversation with `with`, as [`Self::summaries`] shows it.
    pub async fn summary(&self, with: UserId, me: UserId) -> Result<index::Summary, StoreError> {
        index::summary(&self.db, with, me).await
    }

    /// The timer of the conversation with `with`, in seconds (0: off).
    pub async fn timer(&self, with: UserId) -> Result<u64, StoreError> {
        index::timer(&self.db, &self.timers, with).await
    }

    /// Messages whose time ran out by `now`, with their conversations (at most `limit`), and
    /// when the next one does.
    pub async fn expiring(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<(Vec<(UserId, MessageId)>, Option<Timestamp>), StoreError> {
        index::expiring(&self.db, now, limit).await
    }

    /// Which conversation message `id` belongs to, if it is stored and not deleted.
    pub async fn conversation_of(&self, id: MessageId) -> Result<Option<UserId>, StoreError> {
        Ok(index::locate(&self.db, id)
            .await?
            .filter(|l| l.status != MessageStatus::Deleted)
            .map(|l| l.conversation))
    }

    /// The status of message `id`, if it is stored (deleted ones included).
    pub async fn message_status(&self, id: MessageId) -> Result<Option<MessageStatus>, StoreError> {
        Ok(index::locate(&self.db, id).await?.map(|l| l.status))
    }

    /// Messages of the conversation with `with` that a retention rule lets go: sent before
    /// `before`, or beyond the newest `keep_last`; at most `limit`.
    pub async fn expired_messages(
        &self,
        with: UserId,
        before: Option<Timestamp>,
        keep_last: Option<u64>,
        limit: u32,
    ) -> Result<Vec<MessageId>, StoreError> {
        index::expired(&self.db, with, before, keep_last, limit).await
    }

    /// The conversations that hold messages.
    pub async fn conversations(&self) -> Result<Vec<UserId>, StoreError> {
        index::conversations(&self.db).await
    }

    /// Whether a message is stored (durably) in the conversation with `with`.
    pub async fn has_message(&self, with: UserId, id: MessageId) -> Result<bool, StoreError> {
        index::contains(&self.db, with, id).await
    }

    /// The conversation with `with`, oldest first: the last `limit` messages before the
    /// message `before` (or the latest ones). Reads what is durable, from the index, without
    /// waiting for the vault actor. `Ok(None)` when `before` is not a message of this
    /// conversation.
    pub async fn messages(
        &self,
        with: UserId,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Option<Vec<StoredMessage>>, StoreError> {
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        match index::page(&self.db, with, before, limit).await {
            Ok(page) => Ok(Some(page)),
            Err(index::PageError::UnknownCursor) => Ok(None),
            Err(index::PageError::Store(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use volli_core::UserSecret;

    use super::*;
    use crate::{Db, VaultOptions};

    #[tokio::test]
    async fn a_conversations_timer_is_read_from_the_index_of_timer_lines() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("v.db")).await.unwrap();
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {}",
            crate::vault::index::TIMER_QUERY
        )))
        .bind("x")
        .fetch_all(db.pool())
        .await
        .unwrap();
        assert!(
            plan.iter().any(|p| p.3.contains("messages_timer")),
            "{plan:?}"
        );
    }

    async fn vault() -> (tempfile::TempDir, Vault) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("v.db")).await.unwrap();
        let vault = Vault::open(db, VaultOptions::default()).await.unwrap();
        (dir, vault)
    }

    fn message(from: UserId, to: UserId, n: i64, status: MessageStatus) -> StoredMessage {
        StoredMessage {
            id: MessageId::random().unwrap(),
            from,
            to,
            body: format!("message {n}"),
            sent_at: Timestamp::from_millis(1_000 + n),
            status,
            extra: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_conversations_timer_follows_each_new_timer_line_while_it_is_kept() {
        let (_dir, vault) = vault().await;
        let a = UserSecret::from_master([1; 32]).user_id();
        let b = UserSecret::from_master([2; 32]).user_id();
        assert_eq!(vault.timer(b).await.unwrap(), 0);
        let line = |n: i64, secs: u64| {
            let mut m = message(a, b, n, MessageStatus::Received);
            m.extra.kind = MessageKind::System;
            m.extra.system = Some(format!(r#"{{"timer":{secs}}}"#));
            m
        };
        for (n, secs) in [(1, 3600), (2, 60), (3, 0)] {
            assert!(vault.put_message(b, line(n, secs)).await.unwrap());
            assert_eq!(vault.timer(b).await.unwrap(), secs, "after line {n}");
            // Read again: from what is kept.
            assert_eq!(vault.timer(b).await.unwrap(), secs);
            // Other messages leave it as it is.
            let plain = message(a, b, 10 + n, MessageStatus::Received);
            assert!(vault.put_message(b, plain).await.unwrap());
            assert_eq!(vault.timer(b).await.unwrap(), secs);
        }
        assert_eq!(vault.timer(a).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn messages_are_stored_once_paged_and_only_move_forward() {
        let (_dir, vault) = vault().await;
        let a = UserSecret::from_master([1; 32]).user_id();
        let b = UserSecret::from_master([2; 32]).user_id();
        let ms: Vec<_> = (0..5)
            .map(|n| message(a, b, n, MessageStatus::Queued))
            .collect();
        for m in &ms {
            assert!(vault.put_message(b, m.clone()).await.unwrap());
        }
        assert!(!vault.put_message(b, ms[0].clone()).await.unwrap());
        let all = vault.messages(b, None, 100).await.unwrap().unwrap();
        assert_eq!(all, ms);
        let page = vault.messages(b, Some(ms[3].id), 2).await.unwrap().unwrap();
        assert_eq!(page, ms[1..3].to_vec());
        let set = |id, s| vault.set_message_status(b, id, s);
        assert!(set(ms[0].id, MessageStatus::Failed).await.unwrap());
        assert!(!set(ms[0].id, MessageStatus::Relayed).await.unwrap());
        assert!(set(ms[0].id, MessageStatus::Delivered).await.unwrap());
        assert!(!set(ms[0].id, MessageStatus::Failed).await.unwrap());
        assert!(
            !vault
                .set_message_status(a, ms[1].id, MessageStatus::Relayed)
                .await
                .unwrap()
        );
        let page = vault.messages(b, None, 5).await.unwrap().unwrap();
        assert_eq!(page[0].status, MessageStatus::Delivered);
        assert_eq!(page[1].status, MessageStatus::Queued);
        assert!(vault.has_message(b, ms[4].id).await.unwrap());
        assert!(!vault.has_message(a, ms[4].id).await.unwrap());
        let stranger = MessageId::random().unwrap();
        assert_eq!(vault.messages(b, Some(stranger), 5).await.unwrap(), None);
    }

    #[test]
    fn status_order_is_progress() {
        use MessageStatus::*;
        assert!(Queued.advances_to(Relayed));
        assert!(Relayed.advances_to(Failed));
        assert!(Failed.advances_to(Delivered));
        assert!(!Delivered.advances_to(Failed));
        assert!(!Received.advances_to(Delivered));
        assert!(!Queued.advances_to(Received));
        for s in [Queued, Relayed, Failed, Delivered, Received] {
            assert_eq!(MessageStatus::from_rank(s.rank()), Some(s));
            assert_eq!(MessageStatus::parse(s.as_str()), Some(s));
        }
    }
}
