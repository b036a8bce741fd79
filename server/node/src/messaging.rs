//! Messages: sealing, the persistent outbox, direct delivery with signed receipts, deposits
//! at friends' relays, and taking in what arrives (directly or fetched from relays).
//!
//! Sending seals the text once, writes the envelope to the outbox and the message to the
//! vault (both durable before the client hears 202), then tries at once. An attempt that
//! does not deliver deposits the envelope at the recipient's relays (again each time:
//! deposits are idempotent, and a relay that lost it gets it back) and is retried with
//! backoff; a refusal is retried too (a contact whose invite just completed may not know us
//! yet), until the time to live runs out and the message is `failed`. When a recipient is
//! unreachable its other messages skip the direct attempt until it cools down or one of its
//! devices connects, and at most [`PER_RECIPIENT`] attempts to one recipient run at once, so
//! a returning contact does not set off a storm. A signed receipt marks a message
//! `delivered`. Incoming messages come only from contacts' own devices (or their relays),
//! within a daily quota per contact; they are stored by id, so a message that arrives twice
//! (a retry, two relays) is shown once, and are acknowledged only after they are durable.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;

use tokio::sync::{Notify, Semaphore};
use volli_core::wire::{self, Deliver, DeliverMany, Delivered, RelayRequest, RelayResponse};
use volli_core::{
    Content, Envelope, Mail, MessageId, MlsMail, PeerId, Receipt, ReceiptBatch, Timestamp, UserId,
};
use volli_net::Protocol;
use volli_store::vault::{MessageStatus, StoredMessage};
use volli_store::{Db, OutboxChange, OutboxEntry, Vault};

use crate::conversations::{Conversations, Opened};
use crate::timeline::Where;

mod kinds;
use crate::events::{Event, EventBus};
use crate::identity::Identity;
use crate::limits::RateLimiter;
use crate::limits::backoff;
use crate::outbound::Outbound;
use crate::peers::Peers;
use crate::relay::Relay;
pub use kinds::{ChatSummary, TYPING_EVERY, is_one_emoji};

const FIRST_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(300);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts running at once.
const MAX_ATTEMPTS: usize = 256;
/// Attempts running at once to one recipient (what waits for one of them goes along with it
/// when it can: mail of a conversation on MLS, in one delivery).
pub const PER_RECIPIENT: usize = 16;
/// Attempts running at once to one recipient for mail that can go along in one delivery:
/// fewer places, so that under load what waits is carried in batches (one receipt each)
/// rather than one delivery and one signature per message.
const PER_RECIPIENT_BATCHED: usize = 4;
/// Bytes of mail one delivery carries at most.
const BATCH_BYTES: usize = 192 << 10;
/// Due messages held in memory while their recipient has no free place.
const MAX_WAITING: usize = 8192;
/// Group mail this node carries for others at most: rows, and bytes.
const MAX_CARRIED_ROWS: i64 = 20_000;
const MAX_CARRIED_BYTES: i64 = 256 << 20;
/// Incoming messages a sender may send at once, and per second after that.
const INBOUND_BURST: u32 = 20_000;
const INBOUND_PER_SECOND: u32 = 5_000;
/// How often connected relays are asked for mail, besides when they connect and whenever
/// they say some waits (`Waiting`): a safety net, for relays of older versions.
const FETCH_EVERY: Duration = Duration::from_secs(600);
/// The longest the outbox worker sleeps when messages wait but none is due sooner.
const IDLE_CHECK: Duration = Duration::from_secs(60);
/// The longest it sleeps with an empty outbox (every new message wakes it).
const EMPTY_CHECK: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Why a message was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    /// The recipient is not a contact.
    #[error("{0} is not a contact")]
    UnknownContact(UserId),
    /// The text is empty or too long.
    #[error("{0}")]
    Invalid(String),
    /// A page was asked for before a message that is not in the conversation.
    #[error("`before` is not a message of this conversation")]
    UnknownMessage,
    /// No message (not deleted) has this id.
    #[error("no message has this id")]
    NoSuchMessage,
    /// Too many messages; retry after this many seconds.
    #[error("too many messages; retry in {0} s")]
    RateLimited(u64),
    /// An edit or a deletion for everyone of another's message.
    #[error("only its author may change a message for everyone")]
    NotAuthor,
    /// A reply to a message that is not in the conversation.
    #[error("`reply_to` is not a message of this conversation")]
    InvalidReply,
    /// A reaction that is not one emoji.
    #[error("a reaction is one emoji")]
    InvalidReaction,
    /// An edit of a message deleted for everyone, or of one that is not a text.
    #[error("{0}")]
    NotEditable(String),
    /// A disappearing timer out of range.
    #[error("a timer is 0 (off) or 30 seconds to 28 days")]
    InvalidTimer,
    /// Storage failed.
    #[error("storage: {0}")]
    Store(#[from] volli_store::StoreError),
    /// A group operation failed.
    #[error(transparent)]
    Group(#[from] crate::conversations::GroupError),
}

/// Messages one group takes from this user at once, and per second after that.
const GROUP_BURST: u32 = 100;
const GROUP_PER_SECOND: u32 = 20;

/// Messages deleted per vault write when deleting many (a conversation, retention).
pub const DELETE_BATCH: u32 = 512;

/// The messaging service. Cheap to clone.
#[derive(Clone)]
pub struct Messaging {
    inner: Arc<Inner>,
}

/// How much one contact may send this node.
#[derive(Clone, Copy, Debug)]
pub struct InboundQuota {
    /// Messages per day.
    pub messages_per_day: u64,
    /// Bytes of text per day.
    pub bytes_per_day: u64,
}

/// What one contact sent today.
struct Taken {
    since: Instant,
    messages: u64,
    bytes: u64,
}

struct Inner {
    db: Db,
    vault: Vault,
    outbound: Outbound,
    identity: Arc<Identity>,
    peers: Peers,
    events: EventBus,
    relay: Relay,
    conversations: Conversations,
    wake: Notify,
    /// When the outbox worker wakes next by itself (ms since the epoch).
    worker_wakes_at: std::sync::atomic::AtomicI64,
    in_flight: Mutex<InFlight>,
    attempts: Arc<Semaphore>,
    sends: RateLimiter<()>,
    /// Messages sent per group.
    group_sends: RateLimiter<volli_mls::GroupRef>,
    /// Typing frames, per conversation.
    typing: RateLimiter<UserId>,
    inbound: RateLimiter<UserId>,
    quota: InboundQuota,
    taken: Mutex<HashMap<UserId, Taken>>,
    ttl: Duration,
}

/// Attempts under way, and recipients found unreachable.
#[derive(Default)]
struct InFlight {
    messages: HashSet<[u8; 16]>,
    per_recipient: HashMap<String, usize>,
    /// Recipients whose direct attempts wait until then (after one found them unreachable).
    cooling: HashMap<UserId, (Instant, u32)>,
    /// Due messages waiting for one of their recipient's places, in order (at most
    /// [`MAX_WAITING`] in all; beyond that the next scan of the outbox finds them).
    waiting: HashMap<String, std::collections::VecDeque<OutboxEntry>>,
    waiting_total: usize,
}

impl Messaging {
    /// The service; `sends` limits `POST /v1/messages`; `ttl` is how long a message is
    /// retried before it is marked failed; `quota` bounds what each contact may send.
    #[allow(clippy::too_many_arguments)] // the handles it is wired from, once, in `Node::start`
    pub fn new(
        db: Db,
        vault: Vault,
        outbound: Outbound,
        identity: Arc<Identity>,
        peers: Peers,
        events: EventBus,
        relay: Relay,
        conversations: Conversations,
        sends: RateLimiter<()>,
        ttl: Duration,
        quota: InboundQuota,
    ) -> Self {
        let this = Self {
            inner: Arc::new(Inner {
                db,
                vault,
                outbound,
                identity,
                peers,
                events,
                relay,
                conversations,
                wake: Notify::new(),
                worker_wakes_at: std::sync::atomic::AtomicI64::new(0),
                in_flight: Mutex::new(InFlight::default()),
                attempts: Arc::new(Semaphore::new(MAX_ATTEMPTS)),
                sends,
                group_sends: RateLimiter::new(GROUP_BURST, GROUP_PER_SECOND),
                typing: RateLimiter::per_minute(1, 20),
                inbound: RateLimiter::new(INBOUND_BURST, INBOUND_PER_SECOND),
                quota,
                taken: Mutex::new(HashMap::new()),
                ttl: ttl.min(wire::MAX_TTL),
            }),
        };
        // Mail that waited for a commit is taken in later, by the conversations: it counts
        // against the same quota.
        let weak = Arc::downgrade(&this.inner);
        this.inner
            .conversations
            .check_inbound(Arc::new(move |sender, len| {
                let inner = weak.upgrade().ok_or("shutting down")?;
                let messaging = Self { inner };
                if messaging.within_quota(sender, len) {
                    Ok(())
                } else {
                    Err("the sender's daily quota is used up".to_owned())
                }
            }));
        this
    }

    /// Sends `body` to contact `to` (answering `reply_to`, a message of the same
    /// conversation): sealed, queued durably, then tried at once.
    pub async fn send(
        &self,
        to: UserId,
        body: String,
        reply_to: Option<MessageId>,
    ) -> Result<StoredMessage, MessagingError> {
        Self::check_body(&body)?;
        self.inner
            .vault
            .contact(to)
            .await?
            .ok_or(MessagingError::UnknownContact(to))?;
        let at = Where::Direct(to);
        self.check_reply(at, reply_to).await?;
        self.inner
            .sends
            .check(())
            .map_err(MessagingError::RateLimited)?;
        let id = MessageId::random().map_err(|e| MessagingError::Invalid(e.to_string()))?;
        let sent_at = Timestamp::now();
        let expires_at = self.expiry(at, sent_at).await?;
        let (content, legacy) = message_content(id, sent_at, &body, reply_to, expires_at);
        let message = StoredMessage {
            id,
            from: self.inner.identity.user_id(),
            to,
            body,
            sent_at,
            status: MessageStatus::Queued,
            extra: volli_store::vault::Extra {
                reply_to,
                expires_at,
                ..volli_store::vault::Extra::default()
            },
        };
        // The outbox row (the durable copy that is retried) and the conversation entry are
        // queued together, so they commit in one transaction; the client hears 202 once both
        // are durable.
        let row = self.queue_direct(to, &content, Some(&legacy)).await?;
        let saved = self.inner.vault.queue_message(to, message.clone()).await?;
        let entry = match row {
            Some((entry, durable)) => {
                durable.await?;
                Some(entry)
            }
            None => None,
        };
        saved.await?;
        crate::metrics::metrics().sent();
        if let Some(entry) = entry {
            self.try_now(entry);
        }
        Ok(message)
    }

    /// Seals `content` for contact `to` and queues its outbox row; `legacy` is what a
    /// node of an earlier release gets instead (and what a conversation not on MLS yet
    /// carries, as a text): without it, such a contact gets nothing. Returns the row, to
    /// try once the returned future says it is durable.
    pub(crate) async fn queue_direct(
        &self,
        to: UserId,
        content: &Content,
        legacy: Option<&Content>,
    ) -> Result<Option<(OutboxEntry, Durable)>, MessagingError> {
        let contact = self
            .inner
            .vault
            .contact(to)
            .await?
            .ok_or(MessagingError::UnknownContact(to))?;
        let plain = legacy == Some(content);
        if !plain {
            self.inner.conversations.learn_features(to, false).await;
        }
        // Not known yet whether the contact's node reads it: kept unsealed, and sealed (or
        // not sent) once the outbox knows.
        let reads = if plain {
            Some(true)
        } else {
            self.inner.conversations.reads_kinds_in(to, None).await
        };
        let undecided = reads.is_none();
        let content = if reads != Some(false) {
            content
        } else {
            match legacy {
                Some(legacy) => legacy,
                None => return Ok(None),
            }
        };
        let (id, sent_at, body) = row_fields(content);
        // On MLS when the conversation is (or can start there now); sealed to the user key
        // otherwise. The state the encryption left is queued before the mail.
        let sealing = if undecided {
            Err(crate::conversations::ConversationError::Waiting)
        } else {
            self.inner.conversations.seal(to, content).await
        };
        let (envelope, state) = match sealing {
            Ok(Some(sealed)) => (sealed.mail, Some(sealed.durable)),
            Ok(None) => match legacy {
                Some(Content::Text { body, .. }) => {
                    let envelope = Envelope::seal(
                        &self.inner.identity.signer(),
                        to,
                        &contact.card.keys().kem,
                        id,
                        sent_at,
                        body,
                    )
                    .map_err(|e| MessagingError::Invalid(e.to_string()))?;
                    (envelope.to_bytes(), None)
                }
                // Only texts travel outside MLS.
                _ => return Ok(None),
            },
            // Kept unsealed (its content is in the row) until the device revoked is out of
            // the conversation: the outbox seals it then.
            Err(crate::conversations::ConversationError::Waiting) => (Vec::new(), None),
            Err(crate::conversations::ConversationError::Store(e)) => return Err(e.into()),
            Err(e) => return Err(MessagingError::Invalid(e.to_string())),
        };
        let entry = OutboxEntry {
            id: *id.as_bytes(),
            recipient: to.to_string(),
            envelope,
            body,
            sent_at,
            expires_at: sent_at.saturating_add(self.inner.ttl),
            attempts: 0,
            relayed: false,
            device: None,
            handshake: false,
            group: None,
            content: stored_content(content)?,
        };
        let queued = self
            .inner
            .vault
            .outbox_queued(OutboxChange::Add(entry.clone()))
            .await?;
        let durable: Durable = Box::pin(async move {
            if let Some(state) = state {
                state.await?;
            }
            queued.await?;
            Ok(())
        });
        Ok(Some((entry, durable)))
    }

    /// Sends `body` to group `group` (answering `reply_to`): sealed once, one outbox row per
    /// member (each delivered like one-to-one mail, or carried by a member who knows the
    /// recipient), queued durably, then tried at once.
    pub async fn send_group(
        &self,
        group: volli_mls::GroupRef,
        body: String,
        reply_to: Option<MessageId>,
    ) -> Result<StoredMessage, MessagingError> {
        Self::check_body(&body)?;
        let at = Where::Group(group);
        self.check_reply(at, reply_to).await?;
        let id = MessageId::random().map_err(|e| MessagingError::Invalid(e.to_string()))?;
        let sent_at = Timestamp::now();
        let expires_at = self.expiry(at, sent_at).await?;
        let (content, legacy) = message_content(id, sent_at, &body, reply_to, expires_at);
        let message = StoredMessage {
            id,
            from: self.inner.identity.user_id(),
            to: crate::conversations::conversation_key(&group),
            body,
            sent_at,
            status: MessageStatus::Queued,
            extra: volli_store::vault::Extra {
                reply_to,
                expires_at,
                ..volli_store::vault::Extra::default()
            },
        };
        self.queue_group(group, &content, Some(&legacy), Some(message))
            .await?
            .ok_or_else(|| MessagingError::Invalid("the message was not kept".into()))
    }

    /// Offers a file to group `group` (its transfer already recorded): the offer is sealed
    /// once and goes to every member as a group message does, in order with the others
    /// (with its type and thumbnail to members whose nodes read them).
    pub async fn send_group_offer(
        &self,
        group: volli_mls::GroupRef,
        offer: volli_core::OfferContent,
        meta: &crate::files::FileMeta,
    ) -> Result<(), MessagingError> {
        let legacy = Content::FileOffer(offer.clone());
        let content = Content::File {
            offer,
            mime: meta.mime.clone(),
            thumbnail: meta.thumbnail.clone(),
        };
        self.queue_group(group, &content, Some(&legacy), None)
            .await
            .map(|_| ())
    }

    /// Seals `content` once into `group` and queues it for every member (one outbox row
    /// each, durably), keeping `message` in the group's conversation when it is one; then
    /// tries it at once. Members whose nodes are of an earlier release get `legacy`
    /// instead (sealed apart), or nothing. The outbox rows keep `message`'s body (a text),
    /// the offered file's name (an offer, sealed again from its transfer when needed) and
    /// the content when it is not a plain text.
    pub(crate) async fn queue_group(
        &self,
        group: volli_mls::GroupRef,
        content: &Content,
        legacy: Option<&Content>,
        message: Option<StoredMessage>,
    ) -> Result<Option<StoredMessage>, MessagingError> {
        use crate::conversations::{conversation_key, mail_id};
        self.inner
            .sends
            .check(())
            .map_err(MessagingError::RateLimited)?;
        self.inner
            .group_sends
            .check(group)
            .map_err(MessagingError::RateLimited)?;
        let (id, sent_at, _) = row_fields(content);
        let receipts = is_message(content);
        let me = self.inner.identity.user_id();
        let all = self
            .inner
            .conversations
            .group_users(&group.to_string())
            .await
            .ok_or(crate::conversations::GroupError::UnknownGroup)?;
        let plain = legacy == Some(content);
        let (mut current, mut earlier, mut undecided) = (Vec::new(), Vec::new(), Vec::new());
        for user in all.into_iter().filter(|u| *u != me) {
            if !plain {
                self.inner.conversations.learn_features(user, false).await;
            }
            if plain {
                current.push(user);
                continue;
            }
            match self
                .inner
                .conversations
                .reads_kinds_in(user, Some(group))
                .await
            {
                Some(true) => current.push(user),
                Some(false) => earlier.push(user),
                // Sealed for them (or not sent) once the outbox knows what they read.
                None => undecided.push(user),
            }
        }
        // Who gets what: the content, or what earlier releases read (when it differs).
        let mut parts: Vec<(&Content, Vec<UserId>, bool)> = Vec::with_capacity(3);
        if !undecided.is_empty() {
            parts.push((content, undecided, false));
        }
        match legacy {
            Some(legacy) if legacy == content => {
                parts.push((content, current.into_iter().chain(earlier).collect(), true));
            }
            Some(legacy) => {
                parts.push((content, current, true));
                if !earlier.is_empty() {
                    parts.push((legacy, earlier, true));
                }
            }
            None => parts.push((content, current, true)),
        }
        let mut members = Vec::new();
        let mut entries = Vec::new();
        let mut durable = Vec::new();
        for (content, users, seal) in parts {
            if users.is_empty() {
                continue;
            }
            let sealing = if seal {
                self.inner.conversations.seal_group(group, content).await
            } else {
                Err(crate::conversations::GroupError::Conversation(
                    crate::conversations::ConversationError::Waiting,
                ))
            };
            let sealed = match sealing {
                Ok((_, sealed)) => Some(sealed),
                // Kept unsealed until the device revoked is out of the group: each
                // member's row is sealed then.
                Err(crate::conversations::GroupError::Conversation(
                    crate::conversations::ConversationError::Waiting,
                )) => None,
                Err(e) => return Err(e.into()),
            };
            let (_, _, body) = row_fields(content);
            let stored = stored_content(content)?;
            for member in &users {
                let mail_id = mail_id(id, member);
                let envelope = match &sealed {
                    Some(sealed) => volli_core::Mail::Mls(MlsMail::new(
                        me,
                        *member,
                        None,
                        volli_core::MailKind::Application,
                        mail_id,
                        vec![sealed.mail.clone()],
                    ))
                    .to_bytes(),
                    None => Vec::new(),
                };
                entries.push(OutboxEntry {
                    id: *mail_id.as_bytes(),
                    recipient: member.to_string(),
                    envelope,
                    body: body.clone(),
                    sent_at,
                    expires_at: sent_at.saturating_add(self.inner.ttl),
                    attempts: 0,
                    relayed: false,
                    device: None,
                    handshake: false,
                    group: Some(group.to_string()),
                    content: stored.clone(),
                });
            }
            members.extend(users);
            if let Some(sealed) = sealed {
                durable.push(sealed.durable);
            }
        }
        let mut queued = Vec::with_capacity(entries.len());
        for entry in &entries {
            queued.push(
                self.inner
                    .vault
                    .outbox_queued(OutboxChange::Add(entry.clone()))
                    .await?,
            );
        }
        let key = conversation_key(&group);
        let message = message.map(|mut m| {
            if members.is_empty() {
                m.status = MessageStatus::Delivered;
            }
            m
        });
        let saved = match &message {
            Some(m) => Some(self.inner.vault.queue_message(key, m.clone()).await?),
            None => None,
        };
        for d in durable {
            d.await?;
        }
        for q in queued {
            q.await?;
        }
        if let Some(saved) = saved {
            saved.await?;
        }
        if receipts {
            let users: Vec<String> = members.iter().map(ToString::to_string).collect();
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            self.inner
                .db
                .group_receipts_at(id.as_bytes(), &users, MessageStatus::Queued.rank(), sent_at)
                .await?;
            crate::metrics::metrics().sent();
        }
        for entry in entries {
            self.try_now(entry);
        }
        Ok(message)
    }

    /// Each member's status for group message `id` that this device sent.
    pub async fn group_receipts(
        &self,
        id: MessageId,
    ) -> Result<Vec<(String, MessageStatus)>, MessagingError> {
        Ok(self
            .inner
            .db
            .group_receipts(id.as_bytes())
            .await?
            .into_iter()
            .filter_map(|(user, rank)| Some((user, MessageStatus::from_rank(rank)?)))
            .collect())
    }

    /// Group message `id` moved on with `member` (`relayed`, `delivered`, `failed`): the
    /// member's receipt, and the message's own status once every member is that far.
    async fn group_progress(
        &self,
        group: &str,
        member: UserId,
        id: MessageId,
        status: MessageStatus,
    ) -> Result<(), MessagingError> {
        let Some(group) = crate::conversations::parse_group(group) else {
            return Ok(());
        };
        self.inner
            .db
            .group_receipt(
                id.as_bytes(),
                &member.to_string(),
                status.rank(),
                Timestamp::now(),
            )
            .await?;
        let receipts = self.inner.db.group_receipts(id.as_bytes()).await?;
        // The message as a whole: as far as its least advanced member.
        let Some(least) = receipts
            .iter()
            .filter_map(|(_, rank)| MessageStatus::from_rank(*rank))
            .min()
        else {
            return Ok(());
        };
        let key = crate::conversations::conversation_key(&group);
        if least != MessageStatus::Queued
            && self.inner.vault.set_message_status(key, id, least).await?
        {
            self.inner.events.publish(Event::MessageStatus {
                id: id.to_string(),
                to: group.to_string(),
                status: least.as_str().to_owned(),
            });
        }
        Ok(())
    }

    /// Group `group`'s messages, oldest first: up to `limit` before `before`.
    pub async fn group_conversation(
        &self,
        group: volli_mls::GroupRef,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, MessagingError> {
        self.conversation(
            crate::conversations::conversation_key(&group),
            before,
            limit,
        )
        .await
    }

    fn check_body(body: &str) -> Result<(), MessagingError> {
        if body.trim().is_empty() {
            return Err(MessagingError::Invalid("the message is empty".into()));
        }
        if body.len() > volli_core::envelope::MAX_BODY_LEN {
            return Err(MessagingError::Invalid(format!(
                "the message is longer than {} bytes",
                volli_core::envelope::MAX_BODY_LEN
            )));
        }
        Ok(())
    }

    /// Deletes message `id` on every device of the user; one still waiting to be sent is
    /// no longer sent. Returns the conversation it was in.
    pub async fn delete(&self, id: MessageId) -> Result<UserId, MessagingError> {
        let with = self
            .inner
            .vault
            .conversation_of(id)
            .await?
            .ok_or(MessagingError::NoSuchMessage)?;
        self.delete_in(with, vec![id]).await?;
        Ok(with)
    }

    /// Deletes the whole conversation with `with` on every device of the user, in batches;
    /// returns how many messages were deleted.
    pub async fn delete_conversation(&self, with: UserId) -> Result<usize, MessagingError> {
        let mut deleted = 0;
        loop {
            let ids = self
                .inner
                .vault
                .expired_messages(
                    with,
                    Some(Timestamp::from_millis(i64::MAX)),
                    None,
                    DELETE_BATCH,
                )
                .await?;
            if ids.is_empty() {
                return Ok(deleted);
            }
            deleted += self.delete_in(with, ids).await?;
        }
    }

    /// Deletes `ids` of the conversation with `with` (and their outbox rows, in the same
    /// transaction); publishes `messages.deleted`. Returns how many were deleted.
    pub async fn delete_in(
        &self,
        with: UserId,
        ids: Vec<MessageId>,
    ) -> Result<usize, MessagingError> {
        let vault = &self.inner.vault;
        let mut unsent = Vec::with_capacity(ids.len());
        for id in &ids {
            unsent.push(
                vault
                    .outbox_queued(OutboxChange::Remove(*id.as_bytes()))
                    .await?,
            );
        }
        let deleted = vault.delete_messages(with, ids.clone()).await?;
        for removed in unsent {
            removed.await?;
        }
        if deleted > 0 {
            self.inner.events.publish(Event::MessagesDeleted {
                with: with.to_string(),
                ids: ids.iter().map(ToString::to_string).collect(),
            });
        }
        Ok(deleted)
    }

    /// The conversation with `with`, oldest first: up to `limit` messages before `before`.
    pub async fn conversation(
        &self,
        with: UserId,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, MessagingError> {
        self.inner
            .vault
            .messages(with, before, limit)
            .await?
            .ok_or(MessagingError::UnknownMessage)
    }

    /// Starts the outbox worker and the periodic relay fetch; first puts back into the
    /// vault any queued message whose vault write a crash lost.
    pub fn spawn(&self) {
        self.spawn_expiry();
        if let Some(mut mail) = self.inner.conversations.take_mail() {
            let this = self.clone();
            tokio::spawn(async move {
                while let Some(entry) = mail.recv().await {
                    this.try_now(entry);
                }
            });
        }
        let this = self.clone();
        tokio::spawn(async move {
            this.reconcile().await;
            loop {
                this.run_due().await;
                let wait = this.until_due().await;
                this.inner.worker_wakes_at.store(
                    Timestamp::now().saturating_add(wait).as_millis(),
                    std::sync::atomic::Ordering::Relaxed,
                );
                tokio::select! {
                    () = this.inner.wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        });
        let this = self.clone();
        tokio::spawn(async move {
            let mut next = tokio::time::Instant::now() + FETCH_EVERY;
            loop {
                tokio::select! {
                    // A relay said mail waits there: fetch it now.
                    told = this.inner.relay.told_waiting() => {
                        for user in told {
                            this.fetch_from(user).await;
                        }
                    }
                    () = tokio::time::sleep_until(next) => {
                        next = tokio::time::Instant::now() + FETCH_EVERY;
                        // Read from memory: with no contact connected, nothing else wakes.
                        for user in this.inner.peers.connected_contacts() {
                            this.fetch_from(user).await;
                        }
                    }
                }
            }
        });
    }

    async fn reconcile(&self) {
        let Ok(entries) = self.inner.db.outbox_all().await else {
            return;
        };
        let me = self.inner.identity.user_id();
        let mut missing = Vec::new();
        for e in entries
            .into_iter()
            .filter(|e| !e.handshake && !is_change(e))
        {
            let Ok(recipient) = e.recipient.parse::<UserId>() else {
                continue;
            };
            // A group's message is stored once, in the group's conversation, under its own id.
            let (to, id) = match e
                .group
                .as_deref()
                .and_then(crate::conversations::parse_group)
            {
                Some(group) => (
                    crate::conversations::conversation_key(&group),
                    crate::conversations::mail_id(MessageId::from_bytes(e.id), &recipient),
                ),
                None => (recipient, MessageId::from_bytes(e.id)),
            };
            missing.push((
                to,
                StoredMessage {
                    id,
                    from: me,
                    to,
                    body: e.body,
                    sent_at: e.sent_at,
                    status: if e.relayed {
                        MessageStatus::Relayed
                    } else {
                        MessageStatus::Queued
                    },
                    extra: volli_store::vault::Extra::default(),
                },
            ));
        }
        if !missing.is_empty()
            && let Err(e) = self.inner.vault.put_messages(missing).await
        {
            tracing::warn!(error = %e, "cannot reconcile the outbox with the vault");
        }
    }

    /// A device of contact `user` connected and proved who it is.
    pub async fn contact_ready(&self, user: UserId) {
        self.lock_flight().cooling.remove(&user);
        match self
            .inner
            .db
            .outbox_wake(&user.to_string(), Timestamp::now())
            .await
        {
            Ok(n) if n > 0 => {
                tracing::debug!(%user, rows = n, "a contact is back: what waits for it is due");
                self.inner.wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot wake the outbox"),
        }
        self.fetch_from(user).await;
    }

    /// How long the outbox worker may sleep: until the next message is due (a second while
    /// some are due but held back: in flight, or waiting for their recipient), at most
    /// [`IDLE_CHECK`]. An idle node does not wake for an empty outbox.
    async fn until_due(&self) -> Duration {
        let now = Timestamp::now();
        match self.inner.db.outbox_next_due().await {
            Ok(Some(next)) if next <= now => Duration::from_secs(1),
            Ok(Some(next)) => now.until(next).min(IDLE_CHECK),
            Ok(None) => EMPTY_CHECK,
            Err(_) => Duration::from_secs(1),
        }
    }

    async fn run_due(&self) {
        let due = match self.inner.db.outbox_due(Timestamp::now(), 512).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outbox");
                return;
            }
        };
        if !due.is_empty() {
            tracing::debug!(rows = due.len(), "outbox rows due");
        }
        for entry in due {
            self.try_now(entry);
        }
    }

    fn lock_flight(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.inner
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Attempts delivery of `entry` in the background unless an attempt is running for it.
    /// When its recipient already has [`PER_RECIPIENT`] attempts running it waits in memory
    /// for the next free place (or, past [`MAX_WAITING`], for the next scan of the outbox).
    fn try_now(&self, entry: OutboxEntry) {
        {
            let mut flight = self.lock_flight();
            if flight.messages.contains(&entry.id) {
                return;
            }
            let running = flight
                .per_recipient
                .get(&entry.recipient)
                .copied()
                .unwrap_or(0);
            let places = if batchable(&entry) {
                PER_RECIPIENT_BATCHED
            } else {
                PER_RECIPIENT
            };
            if running >= places {
                if flight.waiting_total < MAX_WAITING {
                    flight.messages.insert(entry.id);
                    flight.waiting_total += 1;
                    flight
                        .waiting
                        .entry(entry.recipient.clone())
                        .or_default()
                        .push_back(entry);
                }
                return;
            }
            flight.messages.insert(entry.id);
            *flight
                .per_recipient
                .entry(entry.recipient.clone())
                .or_default() += 1;
        }
        self.spawn_attempt(entry);
    }

    /// Runs one attempt; then starts the next message waiting for the same recipient.
    fn spawn_attempt(&self, entry: OutboxEntry) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut entry = entry;
            loop {
                let recipient = entry.recipient.clone();
                // Mail of a conversation on MLS waiting for the same recipient goes along in
                // the same delivery, acknowledged with one receipt.
                let mut batch = vec![entry];
                if batchable(&batch[0]) {
                    let mut flight = this.lock_flight();
                    let mut bytes = batch[0].envelope.len();
                    let mut taken = 0;
                    if let Some(queue) = flight.waiting.get_mut(&recipient) {
                        while batch.len() < volli_core::envelope::MAX_BATCH
                            && bytes < BATCH_BYTES
                            && queue.front().is_some_and(batchable)
                        {
                            if let Some(next) = queue.pop_front() {
                                bytes += next.envelope.len();
                                batch.push(next);
                                taken += 1;
                            }
                        }
                        if queue.is_empty() {
                            flight.waiting.remove(&recipient);
                        }
                    }
                    flight.waiting_total -= taken;
                }
                let ids: Vec<[u8; 16]> = batch.iter().map(|e| e.id).collect();
                {
                    let Ok(_permit) = this.inner.attempts.clone().acquire_owned().await else {
                        return;
                    };
                    let attempted = if batch.len() > 1 {
                        this.attempt_many(batch).await
                    } else {
                        match batch.pop() {
                            Some(entry) => this.attempt(entry).await,
                            None => Ok(()),
                        }
                    };
                    if let Err(e) = attempted {
                        tracing::warn!(error = %e, "delivery attempt failed");
                    }
                }
                let mut flight = this.lock_flight();
                for id in &ids {
                    flight.messages.remove(id);
                }
                let next = flight
                    .waiting
                    .get_mut(&recipient)
                    .and_then(std::collections::VecDeque::pop_front);
                match next {
                    // The place goes straight to the next message for this recipient.
                    Some(next) => {
                        flight.waiting_total -= 1;
                        if flight.waiting.get(&recipient).is_some_and(|q| q.is_empty()) {
                            flight.waiting.remove(&recipient);
                        }
                        entry = next;
                    }
                    None => {
                        if let Some(n) = flight.per_recipient.get_mut(&recipient) {
                            *n -= 1;
                            if *n == 0 {
                                flight.per_recipient.remove(&recipient);
                            }
                        }
                        drop(flight);
                        // The attempt may have set a retry sooner than the worker wakes.
                        let soon = Timestamp::now().saturating_add(FIRST_RETRY).as_millis();
                        if this
                            .inner
                            .worker_wakes_at
                            .load(std::sync::atomic::Ordering::Relaxed)
                            > soon
                        {
                            this.inner.wake.notify_one();
                        }
                        return;
                    }
                }
            }
        });
    }

    /// Whether direct attempts to `user` wait (it was unreachable a moment ago).
    fn cooling(&self, user: &UserId) -> bool {
        self.lock_flight()
            .cooling
            .get(user)
            .is_some_and(|(until, _)| Instant::now() < *until)
    }

    /// How long direct attempts to `user` still wait, if they do.
    fn cooling_left(&self, user: &UserId) -> Option<Duration> {
        self.lock_flight()
            .cooling
            .get(user)
            .and_then(|(until, _)| until.checked_duration_since(Instant::now()))
    }

    /// `user` was unreachable: its next direct attempts wait, longer each time.
    fn cool(&self, user: UserId) {
        let mut flight = self.lock_flight();
        // Other attempts that failed while it was held unreachable are the same outage.
        if flight
            .cooling
            .get(&user)
            .is_some_and(|(until, _)| Instant::now() < *until)
        {
            return;
        }
        let strikes = flight.cooling.get(&user).map_or(0, |(_, n)| n + 1);
        let wait = backoff(FIRST_RETRY, MAX_RETRY, strikes);
        tracing::debug!(%user, ?wait, "unreachable: direct attempts wait");
        flight
            .cooling
            .insert(user, (Instant::now() + wait, strikes));
    }

    async fn attempt(&self, entry: OutboxEntry) -> Result<(), MessagingError> {
        let id = MessageId::from_bytes(entry.id);
        let Ok(to) = entry.recipient.parse::<UserId>() else {
            self.inner
                .vault
                .outbox(OutboxChange::Remove(entry.id))
                .await?;
            return Ok(());
        };
        let now = Timestamp::now();
        if now >= entry.expires_at {
            return self
                .finish_entry(&entry, to, id, MessageStatus::Failed)
                .await;
        }
        // Not sealed yet (the conversation had a revoked device to remove first): sealed
        // now if it can be, else tried again later.
        let mut entry = entry;
        if entry.envelope.is_empty() {
            match self.reseal(to, &entry).await? {
                Some(envelope) => entry.envelope = envelope,
                None => return self.retry_later(&entry, false).await,
            }
        }
        // Handshake mail is for one device: of a contact, or of this user.
        let device: Option<PeerId> = entry.device.as_deref().and_then(|d| d.parse().ok());
        let contact = if to == self.inner.identity.user_id() {
            None
        } else {
            match self.inner.vault.contact(to).await? {
                Some(contact) => Some(contact),
                // A group member this user does not know: a member who does carries it.
                None if entry.group.is_some() => return self.attempt_carried(entry, to, id).await,
                None => {
                    return self
                        .finish_entry(&entry, to, id, MessageStatus::Failed)
                        .await;
                }
            }
        };
        let devices: Vec<volli_core::DeviceCertificate> = match (&contact, device) {
            (Some(c), None) => c.devices.clone(),
            (Some(c), Some(d)) => c
                .devices
                .iter()
                .filter(|c| c.peer_id() == d)
                .cloned()
                .collect(),
            (None, Some(d)) => self
                .inner
                .vault
                .devices_of(to)
                .await?
                .into_iter()
                .filter(|r| r.revoked_at.is_none() && r.peer_id() == d)
                .map(|r| r.certificate)
                .collect(),
            (None, None) => Vec::new(),
        };
        if devices.is_empty() {
            // The device it was for is gone (revoked, or no longer listed).
            return self
                .finish_entry(&entry, to, id, MessageStatus::Failed)
                .await;
        }
        let mut resealed = false;
        // Group mail this node carries for another member: the receipt is addressed to it.
        let carried = carried_for(&entry, self.inner.identity.user_id());
        let sender = carried.map_or_else(|| self.inner.identity.user_id(), |(s, _)| s);
        while !self.cooling(&to) {
            match self
                .deliver_direct(&devices, sender, to, id, &entry.envelope)
                .await
            {
                Outcome::Delivered(receipt) => {
                    // A message's receipt is left here for its sender, who fetches it as
                    // from a relay (handshake mail needs none).
                    if carried.is_some_and(|(_, application)| application) {
                        self.inner.relay.hold_receipts(vec![*receipt]).await;
                    }
                    return self
                        .finish_entry(&entry, to, id, MessageStatus::Delivered)
                        .await;
                }
                // Its keys are gone on the other side (it was overtaken by too many later
                // messages, or an epoch passed): sealed again, once, and offered at once.
                Outcome::Refused(reason)
                    if reason == wire::REFUSED_SEAL_AGAIN && !resealed && batchable(&entry) =>
                {
                    resealed = true;
                    if let Some(envelope) = self.reseal(to, &entry).await? {
                        entry.envelope = envelope;
                        continue;
                    }
                }
                // Waiting for a commit on the other side, or sealed again in vain: a matter
                // of moments, so the recipient is not held unreachable for it.
                Outcome::Refused(reason)
                    if reason == wire::REFUSED_WAITING || reason == wire::REFUSED_SEAL_AGAIN =>
                {
                    tracing::debug!(%to, %reason, "the recipient cannot read a message yet; will retry");
                }
                Outcome::Refused(reason) => {
                    // Possibly passing (an invite whose redemption the recipient has not
                    // finished, a quota): kept trying until the time to live runs out.
                    tracing::info!(%to, %reason, "the recipient refused a message; will retry");
                    self.cool(to);
                }
                Outcome::Unreachable => self.cool(to),
            }
            break;
        }
        // Every attempt deposits again: a relay that holds it already just says so, and one
        // that lost it (a restart from an old backup, a full disk) gets it back. Mail for the
        // user's own devices waits for them to connect.
        let left = now.until(entry.expires_at);
        let held = match &contact {
            Some(contact) => {
                self.inner
                    .relay
                    .deposit(&contact.card, &entry.envelope, left)
                    .await
            }
            None => 0,
        };
        let relayed = entry.relayed || held > 0;
        if held > 0 && !entry.relayed && !entry.handshake && !is_change(&entry) {
            if let Some(group) = &entry.group {
                self.group_progress(
                    group,
                    to,
                    crate::conversations::mail_id(id, &to),
                    MessageStatus::Relayed,
                )
                .await?;
            } else if self
                .inner
                .vault
                .set_message_status(to, id, MessageStatus::Relayed)
                .await?
            {
                self.status_event(to, id, MessageStatus::Relayed);
            }
        }
        self.retry_later(&entry, relayed).await
    }

    /// Hands group mail for `to` (not a contact) to the member on the way to it (ADR 0018),
    /// whose receipt ends this row: the recipient's own receipt does not come back this
    /// way, so the member's status is `relayed`.
    async fn attempt_carried(
        &self,
        entry: OutboxEntry,
        to: UserId,
        id: MessageId,
    ) -> Result<(), MessagingError> {
        let group = entry.group.clone().unwrap_or_default();
        let carrier = self
            .inner
            .conversations
            .carrier_or_guess(&group, &to, entry.attempts)
            .await;
        let contact = match carrier {
            Some(c) => self.inner.vault.contact(c).await?,
            None => None,
        };
        let Some(contact) = contact else {
            // Nobody on the way (the group is gone here, or no member knows the recipient):
            // tried again later, until the time to live runs out.
            tracing::debug!(%to, %group, "no member to carry group mail; will retry");
            return self.retry_later(&entry, entry.relayed).await;
        };
        let carrier = contact.user_id;
        if !self.cooling(&carrier) {
            let me = self.inner.identity.user_id();
            match self
                .deliver_direct(&contact.devices, me, carrier, id, &entry.envelope)
                .await
            {
                Outcome::Delivered(_) if entry.handshake || is_change(&entry) => {
                    self.inner
                        .vault
                        .outbox(OutboxChange::Remove(entry.id))
                        .await?;
                    return Ok(());
                }
                // The carrier holds it: `relayed`. The row stays, offered to the carrier
                // again now and then as mail held by relays is, until the recipient's own
                // receipt comes back through the carrier (fetched as from a relay).
                Outcome::Delivered(_) => {
                    if !entry.relayed {
                        self.group_progress(
                            &group,
                            to,
                            crate::conversations::mail_id(id, &to),
                            MessageStatus::Relayed,
                        )
                        .await?;
                    }
                    return self.retry_later(&entry, true).await;
                }
                Outcome::Refused(reason) => {
                    tracing::info!(%to, %carrier, %reason, "a member refused to carry group mail; will retry");
                }
                Outcome::Unreachable => self.cool(carrier),
            }
        }
        self.retry_later(&entry, entry.relayed).await
    }

    async fn retry_later(&self, entry: &OutboxEntry, relayed: bool) -> Result<(), MessagingError> {
        let mut wait = backoff(FIRST_RETRY, MAX_RETRY, entry.attempts);
        // A recipient held unreachable for a while (one failed request: it may have been
        // busy, or just starting) is tried again with everything that waits for it when that
        // while ends, rather than each message after its own back-off, which grew while the
        // recipient was away.
        if let Some(left) = entry
            .recipient
            .parse::<UserId>()
            .ok()
            .and_then(|to| self.cooling_left(&to))
        {
            wait = wait.min(left + Duration::from_millis(50));
        }
        self.inner
            .vault
            .outbox(OutboxChange::Retry {
                id: entry.id,
                next: Timestamp::now().saturating_add(wait),
                relayed,
            })
            .await?;
        Ok(())
    }

    /// Seals a message's text again in its conversation as it is now, under the same id;
    /// the new mail once it and the conversation's state are durable (never offered
    /// before: a state lost in a crash would hand out the same keys twice). `None` when the
    /// conversation cannot seal it now.
    async fn reseal(
        &self,
        to: UserId,
        entry: &OutboxEntry,
    ) -> Result<Option<Vec<u8>>, MessagingError> {
        if let Some(group) = entry.group.as_deref() {
            return self.reseal_group(to, group, entry).await;
        }
        let content = entry_content(entry).unwrap_or_else(|| Content::Text {
            id: MessageId::from_bytes(entry.id),
            sent_at: entry.sent_at,
            body: entry.body.clone(),
        });
        let Some(content) = self.fit(to, entry, content).await? else {
            return Ok(None);
        };
        let sealed = match self.inner.conversations.seal(to, &content).await {
            Ok(Some(sealed)) => sealed,
            Ok(None) => return Ok(None),
            Err(crate::conversations::ConversationError::Store(e)) => return Err(e.into()),
            Err(e) => {
                tracing::debug!(%to, error = %e, "cannot seal a message again");
                return Ok(None);
            }
        };
        let queued = self
            .inner
            .vault
            .outbox_queued(OutboxChange::Reseal {
                id: entry.id,
                envelope: sealed.mail.clone(),
            })
            .await?;
        sealed.durable.await?;
        queued.await?;
        Ok(Some(sealed.mail))
    }

    /// What of `content` (outbox row `entry`'s) to seal for `to`: all of it when `to`'s
    /// node reads this release's kinds, what earlier releases read instead when it does not
    /// (a change they cannot read leaves the outbox). `None`: not known yet, or dropped.
    async fn fit(
        &self,
        to: UserId,
        entry: &OutboxEntry,
        content: Content,
    ) -> Result<Option<Content>, MessagingError> {
        if matches!(content, Content::Text { .. } | Content::FileOffer(_)) {
            return Ok(Some(content));
        }
        self.inner.conversations.learn_features(to, true).await;
        let group = entry
            .group
            .as_deref()
            .and_then(crate::conversations::parse_group);
        match self.inner.conversations.reads_kinds_in(to, group).await {
            Some(true) => Ok(Some(content)),
            Some(false) => match content {
                Content::Message {
                    id, sent_at, body, ..
                } => Ok(Some(Content::Text { id, sent_at, body })),
                Content::File { offer, .. } => Ok(Some(Content::FileOffer(offer))),
                _ => {
                    self.inner
                        .vault
                        .outbox(OutboxChange::Remove(entry.id))
                        .await?;
                    Ok(None)
                }
            },
            None => Ok(None),
        }
    }

    /// Like [`Self::reseal`], for a group message's row for member `to`: sealed again in the
    /// group (for this member's row only; the others keep theirs).
    async fn reseal_group(
        &self,
        to: UserId,
        group: &str,
        entry: &OutboxEntry,
    ) -> Result<Option<Vec<u8>>, MessagingError> {
        use crate::conversations::{mail_id, parse_group};
        let Some(group) = parse_group(group) else {
            return Ok(None);
        };
        let id = mail_id(MessageId::from_bytes(entry.id), &to);
        // A file offered to the group is sealed again from its transfer.
        let offered = self
            .inner
            .db
            .transfer(id.as_bytes())
            .await?
            .filter(|t| t.outgoing && t.group.as_deref() == Some(group.to_string().as_str()));
        let content = match offered {
            _ if entry.content.is_some() => match entry_content(entry) {
                Some(content) => content,
                None => return Ok(None),
            },
            Some(t) => match crate::files::offer_content(&t) {
                Some(offer) => Content::FileOffer(offer),
                None => return Ok(None),
            },
            None => Content::Text {
                id,
                sent_at: entry.sent_at,
                body: entry.body.clone(),
            },
        };
        let Some(content) = self.fit(to, entry, content).await? else {
            return Ok(None);
        };
        let sealed = match self.inner.conversations.seal_group(group, &content).await {
            Ok((_, sealed)) => sealed,
            Err(crate::conversations::GroupError::Conversation(
                crate::conversations::ConversationError::Store(e),
            )) => return Err(e.into()),
            Err(e) => {
                tracing::debug!(%to, error = %e, "cannot seal a group message again");
                return Ok(None);
            }
        };
        let mail = volli_core::Mail::Mls(MlsMail::new(
            self.inner.identity.user_id(),
            to,
            None,
            volli_core::MailKind::Application,
            MessageId::from_bytes(entry.id),
            vec![sealed.mail],
        ))
        .to_bytes();
        let queued = self
            .inner
            .vault
            .outbox_queued(OutboxChange::Reseal {
                id: entry.id,
                envelope: mail.clone(),
            })
            .await?;
        sealed.durable.await?;
        queued.await?;
        Ok(Some(mail))
    }

    /// Delivers several messages of a conversation on MLS to `entries`' recipient in one
    /// request, acknowledged with one receipt; what that does not deliver is attempted one by
    /// one (directly again, and through relays).
    async fn attempt_many(&self, entries: Vec<OutboxEntry>) -> Result<(), MessagingError> {
        let Some(to) = entries
            .first()
            .and_then(|e| e.recipient.parse::<UserId>().ok())
        else {
            return Ok(());
        };
        let delivered = match self.inner.vault.contact(to).await? {
            Some(contact) if !self.cooling(&to) => {
                let now = Timestamp::now();
                let live: Vec<&OutboxEntry> =
                    entries.iter().filter(|e| now < e.expires_at).collect();
                match self.deliver_many(&contact.devices, to, &live).await {
                    Some(ids) => ids,
                    None => {
                        self.cool(to);
                        HashSet::new()
                    }
                }
            }
            _ => HashSet::new(),
        };
        let mut finished = Vec::new();
        for entry in entries {
            if !delivered.contains(&entry.id) {
                self.attempt(entry).await?;
            } else if entry.group.is_some() {
                let id = MessageId::from_bytes(entry.id);
                self.finish_entry(&entry, to, id, MessageStatus::Delivered)
                    .await?;
            } else {
                finished.push(MessageId::from_bytes(entry.id));
            }
        }
        self.finish_all(to, finished, MessageStatus::Delivered)
            .await
    }

    /// Sends `payload` to every reachable device in `devices` at once; their answers as
    /// they come, each within [`ATTEMPT_TIMEOUT`].
    fn offer(
        &self,
        devices: &[volli_core::DeviceCertificate],
        payload: &[u8],
    ) -> futures::stream::FuturesUnordered<impl Future<Output = (PeerId, Answer)> + use<'_>> {
        self.inner
            .peers
            .dial_targets(devices)
            .into_iter()
            .filter(|(_, connected, addrs)| *connected || !addrs.is_empty())
            .map(|(peer, _, addrs)| {
                let call =
                    self.inner
                        .outbound
                        .request(peer, Protocol::Message, payload.to_vec(), addrs);
                async move { (peer, tokio::time::timeout(ATTEMPT_TIMEOUT, call).await) }
            })
            .collect()
    }

    /// Offers `entries` to every device of `to` at once in one request each; the first
    /// valid receipt decides. The ids delivered, or `None` when no device was reached.
    async fn deliver_many(
        &self,
        devices: &[volli_core::DeviceCertificate],
        to: UserId,
        entries: &[&OutboxEntry],
    ) -> Option<HashSet<[u8; 16]>> {
        let payload = wire::encode(&DeliverMany {
            version: 2,
            mail: entries.iter().map(|e| e.envelope.clone()).collect(),
        });
        let sent: HashSet<[u8; 16]> = entries.iter().map(|e| e.id).collect();
        let me = self.inner.identity.user_id();
        let mut calls = self.offer(devices, &payload);
        let mut reached = false;
        while let Some((peer, answer)) = calls.next().await {
            let Ok(Ok(bytes)) = answer else {
                continue;
            };
            reached = true;
            match wire::decode::<Delivered>(&bytes, Protocol::Message.max_response()) {
                Ok(Delivered::Many { receipt, refused }) => {
                    if !refused.is_empty() {
                        tracing::debug!(%peer, refused = refused.len(), first = ?refused.first(), "part of a delivery was refused");
                    }
                    let Some(receipt) = receipt else {
                        return Some(HashSet::new());
                    };
                    if receipt.verify(me, to).is_ok() {
                        return Some(
                            receipt
                                .ids
                                .iter()
                                .map(|id| *id.as_bytes())
                                .filter(|id| sent.contains(id))
                                .collect(),
                        );
                    }
                    tracing::debug!(%peer, "a receipt that does not verify");
                }
                Ok(other) => tracing::debug!(%peer, ?other, "no receipt for a delivery"),
                Err(_) => tracing::debug!(%peer, "unreadable delivery response"),
            }
        }
        reached.then(HashSet::new)
    }

    /// Marks `ids` (messages to `to`) `status` and forgets them in the outbox, queued so
    /// that they commit together.
    async fn finish_all(
        &self,
        to: UserId,
        ids: Vec<MessageId>,
        status: MessageStatus,
    ) -> Result<(), MessagingError> {
        let mut changed = Vec::with_capacity(ids.len());
        let mut removed = Vec::with_capacity(ids.len());
        for id in &ids {
            changed.push(
                self.inner
                    .vault
                    .queue_message_status(to, *id, status)
                    .await?,
            );
            removed.push(
                self.inner
                    .vault
                    .outbox_queued(OutboxChange::Remove(*id.as_bytes()))
                    .await?,
            );
        }
        for (id, changed) in ids.into_iter().zip(changed) {
            if changed.await? {
                self.status_event(to, id, status);
            }
        }
        for removed in removed {
            removed.await?;
        }
        Ok(())
    }

    /// Ends an outbox entry: a message moves to `status`; handshake mail just leaves.
    async fn finish_entry(
        &self,
        entry: &OutboxEntry,
        to: UserId,
        id: MessageId,
        status: MessageStatus,
    ) -> Result<(), MessagingError> {
        if entry.handshake || entry.group.is_some() || is_change(entry) {
            if let Some(group) = entry
                .group
                .as_deref()
                .filter(|_| !entry.handshake && !is_change(entry))
            {
                self.group_progress(group, to, crate::conversations::mail_id(id, &to), status)
                    .await?;
            }
            self.inner
                .vault
                .outbox(OutboxChange::Remove(entry.id))
                .await?;
            return Ok(());
        }
        self.finish(to, id, status).await
    }

    async fn finish(
        &self,
        to: UserId,
        id: MessageId,
        status: MessageStatus,
    ) -> Result<(), MessagingError> {
        // Queued in this order, the removal never commits before the status: a crash in
        // between at worst leaves a row that is delivered again (and dropped as a duplicate).
        let changed = self
            .inner
            .vault
            .queue_message_status(to, id, status)
            .await?;
        let removed = self
            .inner
            .vault
            .outbox_queued(OutboxChange::Remove(*id.as_bytes()))
            .await?;
        if changed.await? {
            self.status_event(to, id, status);
        }
        removed.await?;
        Ok(())
    }

    fn status_event(&self, to: UserId, id: MessageId, status: MessageStatus) {
        self.inner.events.publish(Event::MessageStatus {
            id: id.to_string(),
            to: to.to_string(),
            status: status.as_str().to_owned(),
        });
    }

    /// Offers the envelope to every device of the recipient at once; the first receipt (or
    /// refusal) decides. The receipt must be addressed to `sender`: this user, or the
    /// member whose group mail this node carries.
    async fn deliver_direct(
        &self,
        devices: &[volli_core::DeviceCertificate],
        sender: UserId,
        to: UserId,
        id: MessageId,
        envelope: &[u8],
    ) -> Outcome {
        let payload = wire::encode(&Deliver {
            version: 1,
            envelope: envelope.to_vec(),
        });
        let mut calls = self.offer(devices, &payload);
        let mut outcome = Outcome::Unreachable;
        while let Some((peer, answer)) = calls.next().await {
            let bytes = match answer {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "direct delivery failed");
                    continue;
                }
                Err(_) => continue,
            };
            match wire::decode::<Delivered>(&bytes, Protocol::Message.max_response()) {
                Ok(Delivered::Receipt(r)) if r.verify(id, sender, to).is_ok() => {
                    return Outcome::Delivered(r);
                }
                Ok(Delivered::Refused(reason)) => outcome = Outcome::Refused(reason),
                Ok(other) => tracing::debug!(%peer, ?other, "no valid receipt"),
                Err(_) => tracing::debug!(%peer, "unreadable delivery response"),
            }
        }
        outcome
    }

    /// Answers `/volli/msg/1` from a device of `contact`: stores the message (once) and
    /// returns a signed receipt. Only the contact's own messages are taken this way.
    pub async fn handle(&self, from: UserId, payload: &[u8]) -> Vec<u8> {
        if payload.first() == Some(&2) {
            return wire::encode(&self.handle_many(from, payload).await);
        }
        let response = match wire::decode::<Deliver>(payload, Protocol::Message.max_request()) {
            Ok(d) => match Mail::from_bytes(&d.envelope) {
                Ok(mail) => self.answer(self.take_in(&mail, Some(from)).await),
                Err(e) => Delivered::Refused(e.to_string()),
            },
            Err(_) => Delivered::Refused("malformed delivery".into()),
        };
        wire::encode(&response)
    }

    /// Takes in several pieces of mail from one device of `from`: one receipt, signed once,
    /// for everything stored.
    async fn handle_many(&self, from: UserId, payload: &[u8]) -> Delivered {
        let Ok(many) = wire::decode::<DeliverMany>(payload, Protocol::Message.max_request()) else {
            return Delivered::Refused("malformed delivery".into());
        };
        if many.mail.len() > volli_core::envelope::MAX_BATCH {
            return Delivered::Refused("too much mail in one delivery".into());
        }
        // Every message is queued first and waited for together: one commit for all.
        let mut queued = Vec::with_capacity(many.mail.len());
        for bytes in &many.mail {
            queued.push(match Mail::from_bytes(bytes) {
                // Only mail of conversations on MLS goes in batches.
                Ok(Mail::Mls(mail)) if from != self.inner.identity.user_id() => {
                    self.take_in_mls_queued(&mail, Some(from)).await
                }
                Ok(_) => Queued::Now(TakenIn::Refused(
                    "only mail of conversations on MLS goes in batches".into(),
                )),
                Err(e) => Queued::Now(TakenIn::Refused(e.to_string())),
            });
        }
        let mut stored = Vec::with_capacity(many.mail.len());
        let mut refused = Vec::new();
        for (i, queued) in queued.into_iter().enumerate() {
            let at = u16::try_from(i).unwrap_or(u16::MAX);
            let taken = match queued {
                Queued::Now(taken) => taken,
                Queued::Saving { id, sender, saved } => Self::saved(id, sender, saved.await),
            };
            match taken {
                // Everything in one delivery comes from `from` (checked for each).
                TakenIn::Stored { id, .. } => stored.push(id),
                TakenIn::Refused(reason) => refused.push((at, refusal_reason(reason))),
                TakenIn::RateLimited(wait) => refused.push((at, format!("retry in {wait} s"))),
            }
        }
        let receipt = (!stored.is_empty()).then(|| {
            Box::new(ReceiptBatch::issue(
                &self.inner.identity.signer(),
                stored,
                from,
                Timestamp::now(),
            ))
        });
        Delivered::Many { receipt, refused }
    }

    /// The answer to one piece of mail: its signed receipt when it was stored.
    fn answer(&self, taken: TakenIn) -> Delivered {
        match taken {
            TakenIn::Stored { id, sender } => Delivered::Receipt(Box::new(Receipt::issue(
                &self.inner.identity.signer(),
                id,
                sender,
                Timestamp::now(),
            ))),
            TakenIn::Refused(reason) => Delivered::Refused(reason),
            TakenIn::RateLimited(wait) => Delivered::RateLimited(wait),
        }
    }

    /// Takes in mail of either kind; the answer to give its sender. `direct` is the user
    /// whose device handed it over (a contact, or this user for handshake mail between its
    /// own devices), absent for mail fetched from a relay.
    async fn take_in(&self, mail: &Mail, direct: Option<UserId>) -> TakenIn {
        let me = self.inner.identity.user_id();
        match mail {
            // (A request to a group's committer is the one application message for one
            // device: the user's other device may send it.)
            Mail::Sealed(_)
            | Mail::Mls(MlsMail {
                kind: volli_core::MailKind::Application,
                device: None,
                ..
            }) if direct == Some(me) => {
                TakenIn::Refused("a device of this user sends it handshake mail only".into())
            }
            Mail::Sealed(envelope) => self.take_in_sealed(envelope, direct).await,
            Mail::Mls(mail) => self.take_in_mls(mail, direct).await,
        }
    }

    /// Takes in mail of a conversation on MLS: stored (a message) or processed (a commit, a
    /// Welcome) or kept until what it depends on arrives, then acknowledged.
    async fn take_in_mls(&self, mail: &MlsMail, direct: Option<UserId>) -> TakenIn {
        match self.take_in_mls_queued(mail, direct).await {
            Queued::Now(taken) => taken,
            Queued::Saving { id, sender, saved } => Self::saved(id, sender, saved.await),
        }
    }

    /// What a message being saved becomes once its write is done (or failed).
    fn saved(
        id: MessageId,
        sender: UserId,
        saved: Result<bool, volli_store::StoreError>,
    ) -> TakenIn {
        match saved {
            Ok(_) => TakenIn::Stored { id, sender },
            Err(e) => {
                // Not stored, so not acknowledged: the sender (or the relay) keeps it.
                tracing::warn!(error = %e, "cannot store an incoming message");
                TakenIn::RateLimited(1)
            }
        }
    }

    /// Like [`Self::take_in_mls`], but a message's write is left for the caller to wait
    /// for (with others: one commit for a delivery of many).
    async fn take_in_mls_queued(&self, mail: &MlsMail, direct: Option<UserId>) -> Queued {
        let me = self.inner.identity.user_id();
        // Mail of a group this device is in may come from a member this user does not know,
        // carried by a member who is a contact; or be for such a member, to carry on.
        let group = self.inner.conversations.group_of(mail).await;
        if mail.recipient != me {
            return Queued::Now(match direct {
                Some(deliverer) if self.inner.conversations.may_carry(mail, deliverer).await => {
                    self.carry(mail, deliverer).await
                }
                _ => TakenIn::Refused("mail for another user".into()),
            });
        }
        let in_group = |u: &UserId| group.as_ref().is_some_and(|(_, info)| info.includes(u));
        // A Welcome into a group this node is not in yet may come from a stranger (the
        // committer), carried by a contact (the member who brought this user in).
        let carried_welcome = |d: &UserId| {
            mail.kind == volli_core::MailKind::Welcome && self.inner.peers.is_contact(d)
        };
        if direct.is_some_and(|d| d != mail.sender && !in_group(&d) && !carried_welcome(&d)) {
            return Queued::Now(TakenIn::Refused(
                "a device may only deliver its own user's mail".into(),
            ));
        }
        if mail.sender != me
            && !self.inner.peers.is_contact(&mail.sender)
            && !in_group(&mail.sender)
        {
            // A Welcome into a group comes from its committer, maybe a stranger, carried by
            // a contact or held by a relay: the group is kept only if the member who brought
            // this user in is a contact (checked where it is joined).
            if mail.kind != volli_core::MailKind::Welcome {
                return Queued::Now(TakenIn::Refused("the sender is not a contact".into()));
            }
        }
        // The receipt is addressed to the sender, also when a member carried the mail here:
        // that member checks it and passes it back (ADR 0018).
        let acker = mail.sender;
        if direct.is_some()
            && mail.kind == volli_core::MailKind::Application
            && let Err(wait) = self.inner.inbound.check(mail.sender)
        {
            return Queued::Now(TakenIn::RateLimited(
                u32::try_from(wait).unwrap_or(u32::MAX),
            ));
        }
        let claimed = mail.sender;
        let mut over_quota = false;
        let mut accept = |sender: UserId, len: usize| {
            if sender != claimed {
                return Err("sent by another user than the mail says".to_owned());
            }
            if !self.within_quota(sender, len) {
                over_quota = true;
                return Err("the sender's daily quota is used up".to_owned());
            }
            Ok(())
        };
        let opened = self
            .inner
            .conversations
            .open(mail, direct, &mut accept)
            .await;
        if over_quota {
            tracing::warn!(sender = %mail.sender, "a contact's daily quota is used up");
            return Queued::Now(TakenIn::RateLimited(3600));
        }
        match opened {
            Ok(Opened::Text { saved, .. }) => Queued::Saving {
                id: mail.id,
                sender: acker,
                saved,
            },
            Ok(Opened::Done | Opened::Duplicate) => Queued::Now(TakenIn::Stored {
                id: mail.id,
                sender: acker,
            }),
            Ok(Opened::Waiting) => Queued::Now(TakenIn::Refused(wire::REFUSED_WAITING.into())),
            Err(e) => Queued::Now(TakenIn::Refused(e.to_string())),
        }
    }

    /// Takes group mail for another member on, as this user's own outbox row (delivered
    /// directly when the recipient is a contact, else carried further): acknowledged to
    /// `deliverer` once durable. The same mail twice is queued once.
    async fn carry(&self, mail: &MlsMail, deliverer: UserId) -> TakenIn {
        let Some((group, _)) = self.inner.conversations.group_of(mail).await else {
            return TakenIn::Refused("not mail of a group of this node".into());
        };
        if let Err(wait) = self.inner.inbound.check(deliverer) {
            return TakenIn::RateLimited(u32::try_from(wait).unwrap_or(u32::MAX));
        }
        // Carried mail is stored and retried for days: it counts against the daily quota of
        // the contact who handed it over, and all of it together is bounded.
        let bytes = volli_core::Mail::Mls(mail.clone()).to_bytes();
        if !self.within_quota(deliverer, bytes.len()) {
            tracing::warn!(%deliverer, "a contact's daily quota is used up (carried mail)");
            return TakenIn::RateLimited(3600);
        }
        match self.inner.db.outbox_carried().await {
            Ok((rows, held)) if rows < MAX_CARRIED_ROWS && held < MAX_CARRIED_BYTES => {}
            Ok(_) => {
                tracing::warn!("carrying as much group mail as it may; refused more");
                return TakenIn::RateLimited(600);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot count carried mail");
                return TakenIn::RateLimited(1);
            }
        }
        let now = Timestamp::now();
        let entry = OutboxEntry {
            id: *mail.id.as_bytes(),
            recipient: mail.recipient.to_string(),
            envelope: bytes,
            body: String::new(),
            sent_at: now,
            expires_at: now.saturating_add(self.inner.ttl),
            attempts: 0,
            relayed: false,
            device: mail.device.map(|d| d.to_string()),
            // Not a message of this user's: no status, no copy in its conversations.
            handshake: true,
            group: Some(group.to_string()),
            content: None,
        };
        match self
            .inner
            .vault
            .outbox(OutboxChange::Add(entry.clone()))
            .await
        {
            Ok(()) => {
                tracing::debug!(to = %mail.recipient, from = %mail.sender, %group, "carrying group mail");
                self.try_now(entry);
                TakenIn::Stored {
                    id: mail.id,
                    sender: deliverer,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot queue group mail to carry");
                TakenIn::RateLimited(1)
            }
        }
    }

    /// The answer to a message from a peer that is not a contact's device.
    pub fn refuse_stranger(&self) -> Vec<u8> {
        wire::encode(&Delivered::Refused(
            "this node takes messages from its contacts' devices only".into(),
        ))
    }

    /// Counts a message of `len` bytes from `sender` against its daily quota; false when
    /// the quota is used up.
    fn within_quota(&self, sender: UserId, len: usize) -> bool {
        let mut taken = self.inner.taken.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if taken.len() >= 4096 {
            taken.retain(|_, t| now.duration_since(t.since) < DAY);
        }
        let t = taken.entry(sender).or_insert(Taken {
            since: now,
            messages: 0,
            bytes: 0,
        });
        if now.duration_since(t.since) >= DAY {
            *t = Taken {
                since: now,
                messages: 0,
                bytes: 0,
            };
        }
        if t.messages >= self.inner.quota.messages_per_day
            || t.bytes + len as u64 > self.inner.quota.bytes_per_day
        {
            return false;
        }
        t.messages += 1;
        t.bytes += len as u64;
        true
    }

    /// Opens, checks and stores an envelope; the answer to give its sender. `direct` is the
    /// contact whose device handed it over (absent for envelopes fetched from a relay):
    /// a device may only deliver its own user's messages, at its sustained rate.
    async fn take_in_sealed(&self, envelope: &Envelope, direct: Option<UserId>) -> TakenIn {
        let identity = &self.inner.identity;
        let me = identity.user_id();
        let message = match envelope.open(me, &identity.keyring()) {
            Ok(m) => m,
            Err(e) => return TakenIn::Refused(e.to_string()),
        };
        if direct.is_some_and(|contact| contact != message.sender) {
            return TakenIn::Refused("a device may only deliver its own user's messages".into());
        }
        let Ok(Some(sender)) = self.inner.vault.contact(message.sender).await else {
            return TakenIn::Refused("the sender is not a contact".into());
        };
        // A device signed it: it must be one the sender's latest card lists (a revoked
        // device is dropped from the card, and from then on not believed).
        if let Some(device) = message.device
            && !sender.devices.iter().any(|d| d.peer_id() == device)
        {
            return TakenIn::Refused("signed by a device the sender's card does not list".into());
        }
        if direct.is_some()
            && let Err(wait) = self.inner.inbound.check(message.sender)
        {
            return TakenIn::RateLimited(u32::try_from(wait).unwrap_or(u32::MAX));
        }
        if !self.within_quota(message.sender, message.body.len()) {
            tracing::warn!(sender = %message.sender, "a contact's daily quota is used up");
            return TakenIn::RateLimited(3600);
        }
        let stored = StoredMessage {
            id: message.id,
            from: message.sender,
            to: me,
            body: message.body.clone(),
            sent_at: message.sent_at,
            status: MessageStatus::Received,
            extra: volli_store::vault::Extra::default(),
        };
        match self.inner.vault.put_message(message.sender, stored).await {
            Ok(true) => {
                crate::metrics::metrics().received();
                self.inner.events.publish(Event::MessageReceived {
                    id: message.id.to_string(),
                    from: message.sender.to_string(),
                    body: message.body,
                    sent_at: message.sent_at.to_rfc3339(),
                    reply_to: None,
                });
            }
            Ok(false) => {}
            Err(e) => {
                // Not stored, so not acknowledged: the sender (or the relay) keeps it.
                tracing::warn!(error = %e, "cannot store an incoming message");
                return TakenIn::RateLimited(1);
            }
        }
        TakenIn::Stored {
            id: message.id,
            sender: message.sender,
        }
    }

    /// Fetches, stores and acknowledges what relay `relay` holds for this user, leaves there
    /// the receipts for what it took in (for senders who are offline), and collects the
    /// receipts it holds for this user's own messages. A device without `messages` cannot
    /// open mail and keeps no outbox: it leaves both for the devices that can.
    pub async fn fetch_from(&self, relay: UserId) {
        if !self
            .inner
            .identity
            .permissions()
            .contains(volli_core::Permissions::MESSAGES)
        {
            return;
        }
        self.fetch_envelopes(relay).await;
        self.fetch_receipts(relay).await;
    }

    /// Takes in what `relay` holds, page after page. Only what was stored is acknowledged
    /// (and so deleted there): an envelope this device cannot open — sealed to a key
    /// generation it has not received yet, say — stays for the user's other devices, or for
    /// this one once it has the key, until it expires.
    async fn fetch_envelopes(&self, relay: UserId) {
        let mut after = None;
        for _ in 0..64 {
            let request = RelayRequest::FetchAfter { limit: 64, after };
            let (envelopes, next) = match self.inner.relay.request(relay, request).await {
                Ok(RelayResponse::EnvelopePage { envelopes, next }) => (envelopes, next),
                // A relay of an older release pages without a cursor: one page, then stop.
                Ok(RelayResponse::Refused(_)) => {
                    match self
                        .inner
                        .relay
                        .request(relay, RelayRequest::Fetch { limit: 64 })
                        .await
                    {
                        Ok(RelayResponse::Envelopes { envelopes, .. }) => (envelopes, None),
                        _ => return,
                    }
                }
                Ok(_) | Err(_) => return,
            };
            if envelopes.is_empty() {
                return;
            }
            let mut ids = Vec::with_capacity(envelopes.len());
            let mut receipts = Vec::new();
            let mut again = Vec::new();
            for bytes in envelopes {
                let Ok(mail) = Mail::from_bytes(&bytes) else {
                    continue;
                };
                match self.take_in(&mail, None).await {
                    TakenIn::Stored { id, sender } => {
                        ids.push(mail.digest());
                        receipts.push(Receipt::issue(
                            &self.inner.identity.signer(),
                            id,
                            sender,
                            Timestamp::now(),
                        ));
                    }
                    TakenIn::Refused(reason) => {
                        tracing::debug!(%relay, %reason, "left a relayed envelope this device does not take");
                        // A message that waited for a Welcome or a commit later in this page
                        // has been read by now: acknowledged on a second look.
                        if matches!(mail, Mail::Mls(_)) {
                            again.push(mail);
                        }
                    }
                    // Not stored: leave it at the relay for the next fetch.
                    TakenIn::RateLimited(_) => {}
                }
            }
            for mail in again {
                match self.take_in(&mail, None).await {
                    TakenIn::Stored { id, sender } => {
                        ids.push(mail.digest());
                        receipts.push(Receipt::issue(
                            &self.inner.identity.signer(),
                            id,
                            sender,
                            Timestamp::now(),
                        ));
                    }
                    // Still waiting: this device keeps it until it can read it, and the
                    // relay's copy may go — without a receipt, its sender keeps it too and
                    // deposits it again.
                    TakenIn::Refused(_) if self.inner.conversations.holds(&mail).await => {
                        ids.push(mail.digest());
                    }
                    _ => {}
                }
            }
            // Receipts first: once the envelopes are acknowledged, nothing else would make
            // their senders hear of the delivery until the two meet.
            if !receipts.is_empty() {
                let _ = self
                    .inner
                    .relay
                    .request(relay, RelayRequest::DepositReceipts { receipts })
                    .await;
            }
            if !ids.is_empty() {
                let _ = self
                    .inner
                    .relay
                    .request(relay, RelayRequest::Ack { ids })
                    .await;
            }
            match next {
                Some(cursor) => after = Some(cursor),
                None => return,
            }
        }
    }

    /// Takes the receipts relay `relay` holds for this user's messages: each verified one
    /// marks its message delivered, as a direct receipt would. A receipt for a message
    /// another device of the user sent (not in this outbox) is left for that device.
    async fn fetch_receipts(&self, relay: UserId) {
        let me = self.inner.identity.user_id();
        let mut after = None;
        for _ in 0..64 {
            let request = RelayRequest::FetchReceiptsAfter { limit: 64, after };
            let (receipts, next) = match self.inner.relay.request(relay, request).await {
                Ok(RelayResponse::ReceiptPage { receipts, next }) => (receipts, next),
                Ok(RelayResponse::Refused(_)) => {
                    match self
                        .inner
                        .relay
                        .request(relay, RelayRequest::FetchReceipts { limit: 64 })
                        .await
                    {
                        Ok(RelayResponse::Receipts { receipts, .. }) => (receipts, None),
                        _ => return,
                    }
                }
                Ok(_) | Err(_) => return,
            };
            if receipts.is_empty() {
                return;
            }
            let mut ids = Vec::with_capacity(receipts.len());
            for r in receipts {
                if r.verify(r.id, me, r.recipient).is_err() {
                    tracing::debug!(%relay, "dropped a receipt that does not verify");
                    ids.push(r.id);
                    continue;
                }
                let entry = match self.inner.db.outbox_get(r.id.as_bytes()).await {
                    Ok(Some(entry)) if entry.recipient == r.recipient.to_string() => entry,
                    _ => {
                        // Known here as delivered (or deleted): nobody needs it any more. Not
                        // known: sent by another device of the user, which takes it itself.
                        if matches!(
                            self.inner.vault.message_status(r.id).await,
                            Ok(Some(MessageStatus::Delivered | MessageStatus::Deleted))
                        ) {
                            ids.push(r.id);
                        }
                        continue;
                    }
                };
                // A message, or group mail a member carried (that member's status moves on).
                let finished = self
                    .finish_entry(&entry, r.recipient, r.id, MessageStatus::Delivered)
                    .await;
                match finished {
                    Ok(()) => ids.push(r.id),
                    // Not recorded and not acknowledged: fetched again next time.
                    Err(e) => tracing::warn!(error = %e, "cannot record a relayed receipt"),
                }
            }
            if !ids.is_empty() {
                let _ = self
                    .inner
                    .relay
                    .request(relay, RelayRequest::AckReceipts { ids })
                    .await;
            }
            match next {
                Some(cursor) => after = Some(cursor),
                None => return,
            }
        }
    }
}

/// Resolves once what was queued is durable.
pub(crate) type Durable = futures::future::BoxFuture<'static, Result<(), MessagingError>>;

/// A message's content, and what nodes of earlier releases read instead (a plain text):
/// the same when it is nothing more than a text.
fn message_content(
    id: MessageId,
    sent_at: Timestamp,
    body: &str,
    reply_to: Option<MessageId>,
    expires_at: Option<Timestamp>,
) -> (Content, Content) {
    let text = Content::Text {
        id,
        sent_at,
        body: body.to_owned(),
    };
    if reply_to.is_none() && expires_at.is_none() {
        return (text.clone(), text);
    }
    (
        Content::Message {
            id,
            sent_at,
            body: body.to_owned(),
            reply_to,
            expires_at,
        },
        text,
    )
}

/// An outbox row's id, time and text for `content`: a message's own, a file's name, or
/// none for a change (a reaction, an edit...), whose time is now.
fn row_fields(content: &Content) -> (MessageId, Timestamp, String) {
    match content {
        Content::Text { id, sent_at, body }
        | Content::Message {
            id, sent_at, body, ..
        } => (*id, *sent_at, body.clone()),
        Content::FileOffer(offer) | Content::File { offer, .. } => (
            MessageId::from_bytes(*offer.id.as_bytes()),
            offer.created_at,
            offer.name.clone(),
        ),
        Content::Timer { id, sent_at, .. } => (*id, *sent_at, String::new()),
        Content::Reaction { id, .. }
        | Content::Edit { id, .. }
        | Content::Unsend { id, .. }
        | Content::Read { id, .. }
        | Content::GroupRequest { id, .. } => (*id, Timestamp::now(), String::new()),
        _ => (
            MessageId::from_bytes([0; 16]),
            Timestamp::now(),
            String::new(),
        ),
    }
}

/// Whether `content` is an item with a status of its own (a message, a file), rather than
/// a change to others.
fn is_message(content: &Content) -> bool {
    matches!(
        content,
        Content::Text { .. }
            | Content::Message { .. }
            | Content::FileOffer(_)
            | Content::File { .. }
    )
}

/// What an outbox row keeps of `content`: nothing for a plain text or offer (sealed again
/// from the row's text, or the transfer), the encoding otherwise.
fn stored_content(content: &Content) -> Result<Option<Vec<u8>>, MessagingError> {
    match content {
        Content::Text { .. } | Content::FileOffer(_) => Ok(None),
        other => other
            .to_padded()
            .map(Some)
            .map_err(|e| MessagingError::Invalid(e.to_string())),
    }
}

/// The content an outbox row keeps, if any.
fn entry_content(entry: &OutboxEntry) -> Option<Content> {
    entry
        .content
        .as_deref()
        .and_then(|bytes| Content::from_padded(bytes).ok())
}

/// Whether `entry` carries a change (a reaction, an edit, a deletion, a read receipt, a
/// timer): it has no status of its own and just leaves the outbox once delivered.
fn is_change(entry: &OutboxEntry) -> bool {
    entry.content.is_some() && entry_content(entry).is_none_or(|c| !is_message(&c))
}

/// For group mail this node carries for another member (`me` is not its sender): that
/// member, and whether it is a message (rather than a commit or a Welcome).
fn carried_for(entry: &OutboxEntry, me: UserId) -> Option<(UserId, bool)> {
    if !entry.handshake || entry.group.is_none() {
        return None;
    }
    match Mail::from_bytes(&entry.envelope) {
        Ok(Mail::Mls(m)) if m.sender != me => {
            Some((m.sender, m.kind == volli_core::MailKind::Application))
        }
        _ => None,
    }
}

/// Whether `entry` can go in one delivery with other mail to its recipient: a message of a
/// conversation on MLS (mail of version 2), for the user rather than one device.
fn batchable(entry: &OutboxEntry) -> bool {
    !entry.handshake && entry.device.is_none() && entry.envelope.first() == Some(&2)
}

/// A device's answer to a delivery: its bytes, a network error, or no answer in time.
type Answer = Result<Result<Vec<u8>, volli_net::NetError>, tokio::time::error::Elapsed>;

enum Outcome {
    /// With the recipient's receipt.
    Delivered(Box<Receipt>),
    Refused(String),
    Unreachable,
}

/// Mail taken in, with its message's write still under way.
enum Queued {
    /// Decided.
    Now(TakenIn),
    /// Stored once `saved` resolves.
    Saving {
        id: MessageId,
        sender: UserId,
        saved: futures::future::BoxFuture<'static, Result<bool, volli_store::StoreError>>,
    },
}

/// What taking in one piece of mail did.
enum TakenIn {
    /// Stored (now or before): acknowledge it to `sender`.
    Stored { id: MessageId, sender: UserId },
    /// Not taken, and why.
    Refused(String),
    /// Not taken now; retry after this many seconds.
    RateLimited(u32),
}

/// Longest reason given for one refused message of a batch: a batch's answer must fit
/// [`Protocol::max_response`] with every one of [`volli_core::envelope::MAX_BATCH`] refused.
const MAX_REASON: usize = 200;

fn refusal_reason(mut reason: String) -> String {
    if reason.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use volli_core::{DeviceCertificate, Permissions, Signer, UserSecret};

    /// The answer to a full batch, through a device (the longest proof), with every message
    /// refused at the longest reason or every one stored: within what the sender reads.
    #[test]
    fn the_answer_to_a_full_batch_fits_the_response_limit() {
        let (sender, recipient) = (
            UserSecret::from_master([1; 32]),
            UserSecret::from_master([2; 32]),
        );
        let key = libp2p_identity::Keypair::generate_ed25519();
        let cert = DeviceCertificate::issue(
            &recipient,
            key.public().to_peer_id(),
            &"n".repeat(64),
            Permissions::MESSAGES,
            Timestamp::now(),
        );
        let device = Signer::Device {
            key: &key,
            certificate: &cert,
        };
        let max = volli_core::envelope::MAX_BATCH;
        let ids: Vec<MessageId> = (0..max).map(|_| MessageId::random().unwrap()).collect();
        let stored = Delivered::Many {
            receipt: Some(Box::new(ReceiptBatch::issue(
                &device,
                ids,
                sender.user_id(),
                Timestamp::now(),
            ))),
            refused: Vec::new(),
        };
        let refused = Delivered::Many {
            receipt: None,
            refused: (0..max)
                .map(|i| (i as u16, refusal_reason("é".repeat(MAX_REASON))))
                .collect(),
        };
        for answer in [stored, refused] {
            let bytes = wire::encode(&answer);
            assert!(
                bytes.len() <= Protocol::Message.max_response(),
                "{} bytes",
                bytes.len()
            );
            assert_eq!(
                wire::decode::<Delivered>(&bytes, Protocol::Message.max_response()).unwrap(),
                answer
            );
        }
    }
}
