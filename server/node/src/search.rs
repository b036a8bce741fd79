//! Search over every conversation: the store's full-text index (`volli_store::search`), the
//! background build of that index for a vault that held messages before it, and which
//! conversation a result belongs to (a contact, or a group: group messages are stored under a
//! key derived from the group's id, mapped back through the groups this device is in).
//!
//! It does not render messages (the API does, as `GET /v1/messages` does) and keeps nothing
//! but the build's progress.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use volli_core::{MessageId, UserId};
use volli_mls::GroupRef;
use volli_store::Db;
use volli_store::search::{Hit, Progress, Query, Search, SearchError};

use crate::conversations::{Conversations, conversation_key};
use crate::events::{Event, EventBus};

/// Rows the build takes per transaction: short enough that the vault's commits, which use
/// the same writer connection, wait a few milliseconds at most.
const BUILD_BATCH: u32 = 2_000;
/// How long new messages wait to be indexed together after a commit, at most (a search
/// does not wait: it indexes what is queued first).
const FLUSH_AFTER: Duration = Duration::from_millis(250);
/// Progress events at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Where a result was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The conversation with this user.
    With(UserId),
    /// This group.
    Group(GroupRef),
}

/// One result: the message, where it is, and a snippet of it.
#[derive(Debug, Clone)]
pub struct Found {
    /// The message.
    pub hit: Hit,
    /// Its conversation.
    pub place: Place,
    /// A piece of its text around the first match.
    pub snippet: volli_store::search::Snippet,
}

/// What a search found, and how far each reader read in each of their conversations (by
/// conversation key), for their read ticks and `read_by`.
#[derive(Default)]
pub struct Results {
    /// The messages, newest first.
    pub found: Vec<Found>,
    /// Each reader's read mark, by conversation key.
    pub marks: HashMap<UserId, Vec<(UserId, volli_core::Timestamp)>>,
}

/// The search service. Cheap to clone.
#[derive(Clone)]
pub struct Searcher {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    events: EventBus,
    conversations: Conversations,
    progress: Mutex<Progress>,
    /// Each group's conversation key, computed once (it is a key derivation).
    keys: Mutex<HashMap<GroupRef, UserId>>,
}

impl Searcher {
    /// The service; reads how far the index is built.
    pub async fn new(db: Db, events: EventBus, conversations: Conversations) -> Self {
        let progress = match db.search_progress().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read how far the search index is built");
                Progress::default()
            }
        };
        Self {
            inner: Arc::new(Inner {
                db,
                events,
                conversations,
                progress: Mutex::new(progress),
                keys: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// How far the index is built.
    pub fn progress(&self) -> Progress {
        *self.lock_progress()
    }

    fn lock_progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.inner
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Indexes new messages a moment after the vault stored them (`changes` ticks at each
    /// commit), in batches: at most one index write per [`FLUSH_AFTER`] however many
    /// messages come and go. A search indexes what is still queued before it reads.
    pub fn spawn_flusher(&self, mut changes: tokio::sync::watch::Receiver<u64>) {
        let db = self.inner.db.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = db.search_flush().await {
                    tracing::warn!(error = %e, "cannot index new messages for search");
                }
                if changes.changed().await.is_err() {
                    return;
                }
                tokio::time::sleep(FLUSH_AFTER).await;
                changes.mark_unchanged();
            }
        });
    }

    /// Builds the index of the messages stored before it existed, in batches, in the
    /// background (`search.progress` events, then `search.ready`). Whatever is indexed is
    /// searchable meanwhile; new messages are indexed as they are stored.
    pub fn spawn(&self) {
        if self.progress().ready() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut told = tokio::time::Instant::now();
            loop {
                match this.inner.db.search_build(BUILD_BATCH).await {
                    Ok(0) => break,
                    Ok(n) => {
                        let progress = {
                            let mut p = this.lock_progress();
                            p.indexed = (p.indexed + n).min(p.total);
                            *p
                        };
                        if told.elapsed() >= PROGRESS_EVERY {
                            told = tokio::time::Instant::now();
                            this.inner.events.publish(Event::SearchProgress {
                                indexed: progress.indexed,
                                total: progress.total,
                            });
                        }
                    }
                    Err(e) => {
                        // The node goes on without the rest of the index; a restart tries again.
                        tracing::warn!(error = %e, "building the search index failed");
                        return;
                    }
                }
                // Let the vault's commits (same writer) go first.
                tokio::task::yield_now().await;
            }
            let indexed = {
                let mut p = this.lock_progress();
                p.indexed = p.total;
                p.indexed
            };
            tracing::info!(
                messages = indexed,
                took = ?started.elapsed(),
                "search index built"
            );
            this.inner.events.publish(Event::SearchReady { indexed });
        });
    }

    /// The conversation key of `group`.
    pub fn key_of(&self, group: GroupRef) -> UserId {
        let mut keys = self.inner.keys.lock().unwrap_or_else(|e| e.into_inner());
        *keys
            .entry(group)
            .or_insert_with(|| conversation_key(&group))
    }

    /// Messages with every word of `query`, newest first, in `with`'s conversation or
    /// `group` or everywhere, before message `before`.
    pub async fn search(
        &self,
        query: Query,
        place: Option<Place>,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<Results, SearchError> {
        let conversation = place.map(|p| match p {
            Place::With(user) => user,
            Place::Group(group) => self.key_of(group),
        });
        let started = std::time::Instant::now();
        let volli_store::search::Page { hits, marks } = self
            .inner
            .db
            .search(&Search {
                query: query.clone(),
                conversation,
                before,
                limit,
            })
            .await?;
        tracing::debug!(took = ?started.elapsed(), found = hits.len(), "searched");
        if hits.is_empty() {
            return Ok(Results::default());
        }
        let groups: HashMap<UserId, GroupRef> = self
            .inner
            .conversations
            .group_ids()
            .await
            .into_iter()
            .map(|g| (self.key_of(g), g))
            .collect();
        let found = hits
            .into_iter()
            .map(|hit| {
                // A group this device left keeps its messages under a key nobody can map
                // back; they show as a conversation with that key.
                let place = match groups.get(&hit.conversation) {
                    Some(group) => Place::Group(*group),
                    None => Place::With(hit.conversation),
                };
                let snippet = query.snippet(&hit.message.body);
                Found {
                    hit,
                    place,
                    snippet,
                }
            })
            .collect();
        Ok(Results { found, marks })
    }
}
