//! Conversations on MLS: every one-to-one conversation is an MLS group whose members are the
//! `messages` devices of both users ([`volli_mls`] holds the cryptography and the rules; this
//! module wires it to the vault, the outbox and the network).
//!
//! - **State.** This device's MLS state lives in memory behind one lock and is persisted by
//!   the vault actor: what an encryption changed is queued before the mail it made (a crash
//!   never hands out a ratchet position twice), and a decrypted message is queued before the
//!   state that no longer opens it (a crash never loses an acknowledged message).
//! - **Key packages.** When a contact's device or one of the user's own devices connects,
//!   both hand each other a last-resort package and a few one-time ones (each one-time
//!   package goes to one device only). The first message to a contact creates the group
//!   from the packages held for its devices, with no round trip the user waits on; without
//!   any, the message is sealed to the user key as before.
//! - **Commits.** Only a conversation's committer commits ([`volli_mls`]): it adds the
//!   devices the users' cards and device lists name, removes those they no longer name, and
//!   includes the updates other devices propose. Commits and Welcomes go to each member
//!   device as handshake mail through the outbox (directly, or held by friends' relays for
//!   that device); a device that receives mail for an epoch it has not reached holds it and
//!   asks a member for the commits it missed. A device on the losing side of a fork (or one
//!   that lost its state) asks the committer to add it again.
//! - **Forgetting.** Past epochs are dropped once older than the late-mail window, and the
//!   database then gives back the pages and the write-ahead log that held them.
//!
//! What it deliberately does not do: deliver mail (the outbox in `messaging.rs` does) or
//! decide quotas (the caller's `accept`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, mpsc};
use volli_core::transfer::FileOffer;
use volli_core::wire::{self, CommitBundle, MlsRequest, MlsResponse};
use volli_core::{
    Content, Mail, MailKind, MessageId, MlsMail, PeerId, Permissions, Timestamp, UserId,
};
use volli_mls::{GroupRef, Info, Member, Mls, MlsError, Processed};
use volli_net::Protocol;
use volli_store::{Db, HeldPackage, OutboxEntry, Vault};

mod groups;
pub use groups::{GroupError, GroupView, MemberView, conversation_key, mail_id, parse_group};

use crate::events::{Event, EventBus};
use crate::identity::Identity;
use crate::outbound::Outbound;
use crate::peers::Peers;

/// One-time key packages handed to a device each time it connects.
const HAND_OUT: usize = 2;
/// A last-resort key package is replaced after this long (and once it opened a Welcome);
/// the one it replaces goes a late-mail window later.
const ROTATE_LAST_RESORT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Key packages handed out and never used are forgotten after this long.
const KEY_PACKAGE_AGE: Duration = Duration::from_secs(90 * 24 * 3600);
/// A group this device forgot is remembered this long (an old Welcome into it is refused).
const TOMBSTONE_AGE: Duration = Duration::from_secs(60 * 24 * 3600);

/// What a device answers a request it cannot decode (so does every earlier release, to a
/// request it does not know).
const MALFORMED: &str = "malformed request";
/// How often the same device is handed key packages at most.
const HAND_OUT_EVERY: Duration = Duration::from_secs(3600);
/// How long a message may wait for what it depends on before this device asks to be added
/// again (a Welcome it can never open, a fork).
const REJOIN_AFTER: Duration = Duration::from_secs(20);
/// How often the same conversation asks for missed commits, or to be added again, at most.
const ASK_EVERY: Duration = Duration::from_secs(10);
/// The longest the committer's loop sleeps.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(3600);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A device is added again at its request at most this often per conversation.
const READD_EVERY: Duration = Duration::from_secs(60);
/// One-time key packages handed out and not used yet, at most.
const MAX_ONE_TIME_OUTSTANDING: usize = 256;
/// The longest messages wait for a revoked device to be removed before they are sealed
/// anyway (the device next in line may be away for good).
const MAX_BARRIER: Duration = Duration::from_secs(600);
/// Conversations this device is not in that one contact may have it hold mail for.
const MAX_UNKNOWN_PER_DELIVERER: usize = 64;
/// Conversations this device is not in that it asks to join an hour, at most.
const UNKNOWN_REJOINS_PER_HOUR: usize = 16;
/// How many epochs ahead of this device mail may be and still wait here.
const MAX_AHEAD: u64 = 256;

/// How conversations keep their keys.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// How long keys of past epochs are kept for mail that arrives late (and how long a
    /// device's state taken by a thief opens captured traffic of past epochs).
    pub late_mail: Duration,
    /// A device updates its own leaf after this long in a conversation…
    pub update_every: Duration,
    /// …or after this many messages through it, whichever comes first.
    pub update_after: u64,
    /// How long handshake mail is retried.
    pub ttl: Duration,
}

/// Why a conversation operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    /// The MLS layer refused.
    #[error(transparent)]
    Mls(#[from] MlsError),
    /// Storage failed.
    #[error("storage: {0}")]
    Store(#[from] volli_store::StoreError),
    /// Malformed content.
    #[error("{0}")]
    Invalid(String),
    /// Sealed under keys this device no longer holds, and not stored before: its sender
    /// seals it again ([`volli_core::wire::REFUSED_SEAL_AGAIN`]).
    #[error("{}", volli_core::wire::REFUSED_SEAL_AGAIN)]
    SealAgain,
    /// The conversation still has a device its user revoked, and another device is to
    /// commit its removal: nothing is sealed until it did (the revoked device would read it).
    #[error("waiting for a revoked device to be removed from the conversation")]
    Waiting,
}

/// What a device of a conversation's users may do, as the node believes it now.
#[derive(Clone, Default)]
struct Directory {
    me: Option<UserId>,
    /// This user's devices that are not revoked.
    own: HashMap<PeerId, Permissions>,
    /// This user's devices that were revoked.
    own_revoked: HashSet<PeerId>,
    /// This user's latest card.
    own_card: Option<volli_core::ContactCard>,
    /// Each contact's devices, as its latest card lists them.
    contacts: HashMap<UserId, HashMap<PeerId, Permissions>>,
    /// Each contact's latest card.
    cards: HashMap<UserId, volli_core::ContactCard>,
    /// Devices their users revoked, by signed statement (this user's, contacts' and group
    /// members'): the evidence a commit that removes them carries.
    revoked: HashMap<(UserId, PeerId), volli_core::Statement>,
}

impl Directory {
    fn devices_of(&self, user: &UserId) -> Option<&HashMap<PeerId, Permissions>> {
        if self.me.as_ref() == Some(user) {
            Some(&self.own)
        } else {
            self.contacts.get(user)
        }
    }

    /// The devices of `user` that may read and send messages.
    fn messaging_devices(&self, user: &UserId) -> Vec<PeerId> {
        let mut devices: Vec<PeerId> = self
            .devices_of(user)
            .map(|d| {
                d.iter()
                    .filter(|(_, p)| p.contains(Permissions::MESSAGES))
                    .map(|(peer, _)| *peer)
                    .collect()
            })
            .unwrap_or_default();
        devices.sort();
        devices
    }

    /// `member`'s user's signed revocation of it, if this node holds one.
    fn revocation(&self, member: &Member) -> Option<&volli_core::Statement> {
        self.revoked.get(&(member.user, member.peer))
    }

    /// The latest card of `user` (a contact, or this user), when it no longer lists `member`
    /// although it was issued after the device's certificate: the device was revoked.
    fn card_without(&self, member: &Member) -> Option<&volli_core::ContactCard> {
        let card = if self.me == Some(member.user) {
            self.own_card.as_ref()
        } else {
            self.cards.get(&member.user)
        }?;
        (card.issued_at() > member.issued_at
            && !card.devices().iter().any(|d| d.peer_id() == member.peer))
        .then_some(card)
    }

    /// Whether this node knows `member` to be revoked (by a statement, this user's own list,
    /// or a newer card of its user that left it off).
    fn is_revoked(&self, member: &Member) -> bool {
        self.revocation(member).is_some()
            || (self.me == Some(member.user) && self.own_revoked.contains(&member.peer))
            || self.card_without(member).is_some()
    }

    /// The evidence for removing `members` from a conversation (`direct`: one-to-one, whose
    /// users hold each other's cards anyway): their revocations, and for a one-to-one
    /// conversation the cards that no longer list them. Members without any are left out.
    fn evidence(
        &self,
        members: &[Member],
        direct: bool,
    ) -> (
        Vec<PeerId>,
        Vec<volli_core::Statement>,
        Vec<volli_core::ContactCard>,
    ) {
        let (mut removable, mut statements, mut cards) = (Vec::new(), Vec::new(), Vec::new());
        for m in members {
            if let Some(s) = self.revocation(m) {
                statements.push(s.clone());
                removable.push(m.peer);
            } else if direct && let Some(card) = self.card_without(m) {
                if !cards
                    .iter()
                    .any(|c: &volli_core::ContactCard| c.user_id() == card.user_id())
                {
                    cards.push(card.clone());
                }
                removable.push(m.peer);
            }
        }
        (removable, statements, cards)
    }
}

impl volli_mls::Trust for Directory {
    fn revoked(&self, member: &Member) -> bool {
        self.is_revoked(member)
    }

    fn may_join(&self, info: &Info, member: &Member) -> bool {
        info.includes(&member.user)
            && member.permissions.contains(Permissions::MESSAGES)
            && self.revocation(member).is_none()
            && !(self.me == Some(member.user) && self.own_revoked.contains(&member.peer))
    }

    fn admits(&self, info: &Info, member: &Member) -> bool {
        if !info.includes(&member.user) || !member.permissions.contains(Permissions::MESSAGES) {
            return false;
        }
        if self.revocation(member).is_some() {
            return false;
        }
        if self.me == Some(member.user) {
            // Any certificate of this user's is a device one of its admin devices paired,
            // unless it was revoked (a pairing on another device may not have synced yet).
            return !self.own_revoked.contains(&member.peer);
        }
        match self.contacts.get(&member.user) {
            // Listed on the contact's latest card, or newer than that card (paired since;
            // the new card is on its way): never one the card left off.
            Some(devices) => {
                devices.contains_key(&member.peer)
                    || self
                        .cards
                        .get(&member.user)
                        .is_some_and(|c| member.issued_at > c.issued_at())
            }
            // A member of a group this user does not know: its device certificate (checked
            // by the MLS layer) and the revocations handed over are all there is to go by.
            None => info.is_group(),
        }
    }
}

/// A message sealed into a conversation.
pub struct Sealed {
    /// The mail to deliver.
    pub mail: Vec<u8>,
    /// Resolves once the state the encryption left is durable (before the mail may leave).
    pub durable: futures::future::BoxFuture<'static, Result<(), volli_store::StoreError>>,
}

/// What taking in MLS mail did.
pub enum Opened {
    /// A text message, queued to the vault with the state it left; `saved` resolves once
    /// both are durable, to whether the message was new.
    Text {
        /// Its sender.
        sender: UserId,
        /// Its id.
        id: MessageId,
        /// Resolves once durable.
        saved: futures::future::BoxFuture<'static, Result<bool, volli_store::StoreError>>,
    },
    /// Processed (a commit, a proposal, a Welcome), or kept until what it depends on
    /// arrives: durable either way.
    Done,
    /// A message that waits for what it depends on (a commit, a Welcome): kept, and read
    /// as soon as that arrives, but not to be acknowledged yet.
    Waiting,
    /// Already taken in.
    Duplicate,
}

/// A conversation as the API shows it.
#[derive(Clone, Debug)]
pub struct Status {
    /// Whether it is on MLS (a group exists).
    pub on_mls: bool,
    /// Whether it could move to MLS now (key packages of a device of the contact are held).
    pub ready: bool,
    /// The group's epoch.
    pub epoch: Option<u64>,
    /// The member devices, with their users.
    pub members: Vec<(UserId, PeerId)>,
    /// The device that commits.
    pub committer: Option<PeerId>,
    /// When this device last updated its own keys in it.
    pub updated_at: Option<Timestamp>,
}

/// The conversations service. Cheap to clone.
#[derive(Clone)]
pub struct Conversations {
    inner: Arc<Inner>,
}

/// What the service is built from.
pub struct Parts {
    /// The database.
    pub db: Db,
    /// The vault.
    pub vault: Vault,
    /// This node's keys.
    pub identity: Arc<Identity>,
    /// The peer table.
    pub peers: Peers,
    /// Requests to other nodes.
    pub outbound: Outbound,
    /// Events for clients.
    pub events: EventBus,
    /// How keys are kept.
    pub settings: Settings,
}

/// What a device was told of this user's revocations (see [`Conversations::tell_revocations`]).
#[derive(Clone, Copy, Debug)]
enum Told {
    /// Being told now, after `attempts` failures in a row.
    Telling { attempts: u32 },
    /// Told this many (it answered).
    Count(usize),
    /// Not told: it did not answer, the `attempts`-th time in a row, at `at`.
    Failed { at: Instant, attempts: u32 },
}

/// A device that was not told this user's revocations is told again this long after, then
/// twice as long after each failure: by itself at most [`RETELL_ATTEMPTS`] times in a row,
/// and when it asks something, after at most 2⁷ times this.
const RETELL_AFTER: Duration = Duration::from_secs(2);
const RETELL_ATTEMPTS: u32 = 5;

struct Inner {
    mls: tokio::sync::Mutex<Mls>,
    db: Db,
    vault: Vault,
    identity: Arc<Identity>,
    peers: Peers,
    outbound: Outbound,
    events: EventBus,
    settings: Settings,
    directory: RwLock<Directory>,
    /// Handshake mail to deliver at once (the outbox worker also finds it in the table).
    mailer: mpsc::Sender<OutboxEntry>,
    mail_out: Mutex<Option<mpsc::Receiver<OutboxEntry>>>,
    /// Wakes the committer's loop.
    work: Notify,
    /// When each device was last handed key packages.
    handed: Mutex<HashMap<PeerId, Instant>>,
    /// When each conversation last asked for commits or to be added again.
    asked: Mutex<HashMap<GroupRef, Instant>>,
    /// When this device last handed a group's committer a key package of one of its user's
    /// devices (or revocations).
    handed_over: Mutex<HashMap<(GroupRef, PeerId), Instant>>,
    /// As a committer: when each member device's recent requests came, per group.
    requests: Mutex<HashMap<(GroupRef, PeerId), std::collections::VecDeque<Instant>>>,
    /// As a committer: when each device was last added again at its request, per group.
    readds: Mutex<HashMap<(GroupRef, PeerId), Instant>>,
    /// What each device was told of this user's revocations.
    told: Mutex<HashMap<PeerId, Told>>,
    /// When this device lately asked to join conversations it is not in.
    unknown_rejoins: Mutex<std::collections::VecDeque<Instant>>,
    /// Conversations this device is not in that each contact handed it mail for (emptied
    /// at each housekeeping).
    unknown_held: Mutex<HashMap<UserId, HashSet<GroupRef>>>,
    /// Conversations whose messages wait for a revoked device's removal, since when.
    barriers: Mutex<HashMap<GroupRef, Instant>>,
    /// What each contact's node reads (from `MlsRequest::Features`).
    /// What each contact's node reads, and whether it said so during this run.
    features: Mutex<HashMap<UserId, (u32, bool)>>,
    /// Messages opened lately (their keys are used up), checked under the MLS lock: a copy
    /// arriving meanwhile by another path is a duplicate even before the vault has the
    /// message on disk.
    opened: Mutex<Recent>,
    /// When each user's typing in each conversation was last told to clients: a contact's
    /// node that sends more than one frame per [`TYPING_EVERY`] reaches no client more often.
    typing: Mutex<HashMap<(UserId, Option<GroupRef>), std::time::Instant>>,
    /// Records a file offered to a group (set by the file service): durable before the
    /// state that no longer opens the offer is saved; `false` when it could not be stored.
    offers: std::sync::OnceLock<OfferSink>,
    /// Counts a message taken in from what waited against its sender's daily quota (set by
    /// the messaging service, which counts the rest).
    inbound: std::sync::OnceLock<InboundCheck>,
}

/// Whether a message of this many bytes from this user may still be taken in today.
pub type InboundCheck = Arc<dyn Fn(UserId, usize) -> Result<(), String> + Send + Sync>;

/// What takes in a file offered to a group (the group, the offer).
pub type OfferSink = Arc<
    dyn Fn(GroupRef, FileOffer, crate::files::FileMeta) -> futures::future::BoxFuture<'static, bool>
        + Send
        + Sync,
>;

/// The ids of the last [`Recent::MAX`] messages opened.
#[derive(Default)]
struct Recent {
    ids: HashSet<MessageId>,
    order: std::collections::VecDeque<MessageId>,
}

impl Recent {
    const MAX: usize = 65_536;

    fn insert(&mut self, id: MessageId) {
        if self.ids.insert(id) {
            self.order.push_back(id);
            if self.order.len() > Self::MAX
                && let Some(old) = self.order.pop_front()
            {
                self.ids.remove(&old);
            }
        }
    }

    /// Forgets `id` (its opening was undone: it is to be opened again).
    fn remove(&mut self, id: &MessageId) {
        if self.ids.remove(id) {
            self.order.retain(|o| o != id);
        }
    }
}

fn now_ms() -> i64 {
    Timestamp::now().as_millis()
}

impl Conversations {
    /// Opens this device's MLS state.
    pub async fn start(parts: Parts) -> anyhow::Result<Self> {
        let rows = parts.db.mls_rows().await?;
        let seed = device_seed(&parts.identity)?;
        let mls = Mls::open(
            rows,
            parts.identity.certificate.clone(),
            &seed,
            volli_mls::Config::default(),
        )?;
        let (mailer, mail_out) = mpsc::channel(1024);
        let this = Self {
            inner: Arc::new(Inner {
                mls: tokio::sync::Mutex::new(mls),
                db: parts.db,
                vault: parts.vault,
                identity: parts.identity,
                peers: parts.peers,
                outbound: parts.outbound,
                events: parts.events,
                settings: parts.settings,
                directory: RwLock::new(Directory::default()),
                mailer,
                mail_out: Mutex::new(Some(mail_out)),
                work: Notify::new(),
                handed: Mutex::new(HashMap::new()),
                asked: Mutex::new(HashMap::new()),
                handed_over: Mutex::new(HashMap::new()),
                requests: Mutex::new(HashMap::new()),
                readds: Mutex::new(HashMap::new()),
                told: Mutex::new(HashMap::new()),
                unknown_rejoins: Mutex::new(std::collections::VecDeque::new()),
                unknown_held: Mutex::new(HashMap::new()),
                barriers: Mutex::new(HashMap::new()),
                features: Mutex::new(HashMap::new()),
                opened: Mutex::new(Recent::default()),
                typing: Mutex::new(HashMap::new()),
                offers: std::sync::OnceLock::new(),
                inbound: std::sync::OnceLock::new(),
            }),
        };
        this.refresh_directory().await;
        // What contacts' nodes said they read, as last heard (asked again once per run).
        if let Ok(rows) = this.inner.db.contact_features().await {
            let mut known = lock(&this.inner.features);
            for (user, features) in rows {
                if let Ok(user) = user.parse::<UserId>() {
                    known.insert(user, (u32::try_from(features).unwrap_or(0), false));
                }
            }
        }
        Ok(this)
    }

    /// The handshake mail this service queues, for the outbox worker to try at once (taken
    /// once).
    pub fn take_mail(&self) -> Option<mpsc::Receiver<OutboxEntry>> {
        lock(&self.inner.mail_out).take()
    }

    /// Whether this device takes part in conversations (it may read and send messages).
    fn messaging(&self) -> bool {
        self.inner
            .identity
            .permissions()
            .contains(Permissions::MESSAGES)
    }

    fn me(&self) -> UserId {
        self.inner.identity.user_id()
    }

    fn directory(&self) -> Directory {
        self.inner
            .directory
            .read()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    /// Reads again which devices the contacts' cards and the user's device list name, and
    /// which revocations this node holds.
    async fn refresh_directory(&self) {
        let me = self.me();
        let mut directory = Directory {
            me: Some(me),
            ..Directory::default()
        };
        match self.inner.vault.devices_of(me).await {
            Ok(devices) => {
                for d in devices {
                    if d.revoked_at.is_none() {
                        directory
                            .own
                            .insert(d.peer_id(), d.certificate.permissions());
                    } else {
                        directory.own_revoked.insert(d.peer_id());
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read this user's devices"),
        }
        // This device is always its own.
        directory.own.insert(
            self.inner.identity.peer_id(),
            self.inner.identity.permissions(),
        );
        directory.own_card = self.inner.vault.own_card(me).await.ok().flatten();
        match self.inner.vault.revocations(me).await {
            Ok(statements) => {
                for s in statements {
                    if let volli_core::Claim::Revoked { peer } = s.claim() {
                        directory.revoked.insert((s.user_id(), *peer), s);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read this user's revocations"),
        }
        match self.inner.vault.contacts().await {
            Ok(contacts) => {
                for c in contacts {
                    directory.contacts.insert(
                        c.user_id,
                        c.devices
                            .iter()
                            .map(|d| (d.peer_id(), d.permissions()))
                            .collect(),
                    );
                    directory.cards.insert(c.user_id, c.card);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the contacts"),
        }
        for bytes in self.inner.db.revocations().await.unwrap_or_default() {
            if let Ok(s) = volli_core::Statement::from_bytes(&bytes)
                && let volli_core::Claim::Revoked { peer } = s.claim()
            {
                directory.revoked.entry((s.user_id(), *peer)).or_insert(s);
            }
        }
        if let Ok(mut current) = self.inner.directory.write() {
            *current = directory;
        }
    }

    /// Keeps signed revocations handed over by `from` (a device of that user, or a member of
    /// a group carrying them): only those that verify and, when `only_of` is set, that are
    /// that user's own. Returns whether any was new.
    async fn keep_revocations(&self, statements: &[Vec<u8>], only_of: Option<UserId>) -> bool {
        let mut new = false;
        for bytes in statements.iter().take(volli_mls::MAX_REVOCATIONS) {
            let Ok(s) = volli_core::Statement::from_bytes(bytes) else {
                continue;
            };
            let volli_core::Claim::Revoked { peer } = s.claim() else {
                continue;
            };
            if only_of.is_some_and(|u| u != s.user_id()) {
                continue;
            }
            if self
                .inner
                .db
                .revocation_add(
                    &s.user_id().to_string(),
                    &peer.to_string(),
                    bytes,
                    Timestamp::now(),
                )
                .await
                .unwrap_or(false)
            {
                tracing::info!(user = %s.user_id(), %peer, "learned of a revoked device");
                new = true;
            }
        }
        if new {
            self.refresh_directory().await;
            self.inner.work.notify_one();
        }
        new
    }

    /// Starts the committer's loop (membership, updates, forgetting past epochs) and the
    /// watch on the contacts' and the user's devices.
    pub fn spawn(&self) {
        if !self.messaging() {
            return;
        }
        let this = self.clone();
        let mut changed = self.inner.peers.devices_changed();
        tokio::spawn(async move {
            while changed.changed().await.is_ok() {
                this.refresh_directory().await;
                this.inner.work.notify_one();
                // A device connected before its user's card (or the user's own device list)
                // named it got no key packages then: it gets them now.
                for peer in this.inner.peers.trusted_connected() {
                    if let Some(user) = this.inner.peers.user_of(&peer) {
                        let this = this.clone();
                        tokio::spawn(async move { this.peer_ready(peer, user).await });
                    }
                }
            }
        });
        let this = self.clone();
        tokio::spawn(async move {
            let mut housekeeping = tokio::time::Instant::now();
            loop {
                this.reconcile().await;
                // Past epochs are forgotten within two late-mail windows of ending.
                let every = HOUSEKEEPING_EVERY.min(this.inner.settings.late_mail);
                if tokio::time::Instant::now() >= housekeeping {
                    this.housekeeping().await;
                    housekeeping = tokio::time::Instant::now() + every;
                }
                let wait = this
                    .until_update_due()
                    .await
                    .min(housekeeping.saturating_duration_since(tokio::time::Instant::now()));
                tokio::select! {
                    () = this.inner.work.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        });
    }

    /// How long until some conversation of this device is due for an update.
    /// An update this device proposed and that waits for the committer does not count:
    /// the commit that takes it (or the one that does not) wakes the loop.
    async fn until_update_due(&self) -> Duration {
        let mut mls = self.inner.mls.lock().await;
        let every = i64::try_from(self.inner.settings.update_every.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        let mut next = None::<i64>;
        for (group, _) in mls.groups() {
            let (Some(a), Ok(epoch)) = (mls.activity(&group), mls.epoch(&group)) else {
                continue;
            };
            if a.proposed_in == Some(epoch) {
                continue;
            }
            let due = a
                .updated_ms
                .saturating_add(every)
                .saturating_sub(now)
                .max(1000);
            next = Some(next.map_or(due, |n| n.min(due)));
        }
        next.map_or(HOUSEKEEPING_EVERY, |ms| {
            Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
        })
    }

    /// Wakes the committer's loop when enough messages went through `group` for an update.
    fn wake_if_due(&self, mls: &Mls, group: &GroupRef) {
        if mls
            .activity(group)
            .is_some_and(|a| a.messages >= self.inner.settings.update_after)
        {
            self.inner.work.notify_one();
        }
    }

    /// The group this device sends to in its conversation with `with`: the newest of those
    /// it is in, by creation time, then id (two created at once converge on one; a device
    /// that lost its state starts a new one and everyone follows).
    fn current_group(mls: &Mls, me: &UserId, with: &UserId) -> Option<GroupRef> {
        mls.groups()
            .into_iter()
            .filter(|(_, info)| info.peer_of(me).as_ref() == Some(with))
            .max_by_key(|(g, info)| (info.created_ms, *g))
            .map(|(g, _)| g)
    }

    /// The conversation with `with`, as the API shows it.
    pub async fn status(&self, with: UserId) -> Status {
        self.refresh_directory().await;
        let me = self.me();
        let held = self.held_for(&with).await;
        let mut mls = self.inner.mls.lock().await;
        let Some(group) = Self::current_group(&mls, &me, &with) else {
            return Status {
                on_mls: false,
                ready: held,
                epoch: None,
                members: Vec::new(),
                committer: None,
                updated_at: None,
            };
        };
        Status {
            on_mls: true,
            ready: true,
            epoch: mls.epoch(&group).ok(),
            members: mls
                .members(&group)
                .unwrap_or_default()
                .into_iter()
                .map(|m| (m.user, m.peer))
                .collect(),
            committer: mls.committer(&group).ok().flatten().map(|m| m.peer),
            updated_at: mls
                .activity(&group)
                .map(|a| Timestamp::from_millis(a.updated_ms)),
        }
    }

    /// Whether key packages of at least one of `with`'s devices are held.
    async fn held_for(&self, with: &UserId) -> bool {
        for peer in self.directory().messaging_devices(with) {
            if matches!(self.inner.db.key_package_count(&peer.to_string()).await, Ok((o, l)) if o + l > 0)
            {
                return true;
            }
        }
        false
    }

    /// Seals `content` into the conversation with `to`, creating its group when there is
    /// none and key packages of `to`'s devices are held. `None`: the conversation is not on
    /// MLS (yet); the caller seals to the user key.
    pub async fn seal(
        &self,
        to: UserId,
        content: &Content,
    ) -> Result<Option<Sealed>, ConversationError> {
        let id = content.mail_id();
        if !self.messaging() {
            return Ok(None);
        }
        let plaintext = content
            .to_padded()
            .map_err(|e| ConversationError::Invalid(e.to_string()))?;
        let me = self.me();
        let mut mls = self.inner.mls.lock().await;
        let group = match Self::current_group(&mls, &me, &to) {
            Some(group) => group,
            None => match self.create(&mut mls, to).await? {
                Some(group) => group,
                None => return Ok(None),
            },
        };
        if !self.clear_of_revoked(&mut mls, &group).await {
            return Err(ConversationError::Waiting);
        }
        let sealed = mls.encrypt(&group, &plaintext)?;
        let durable = self.inner.vault.mls_queued(mls.take_changes()).await?;
        self.wake_if_due(&mls, &group);
        drop(mls);
        let mail = Mail::Mls(MlsMail::new(
            me,
            to,
            None,
            MailKind::Application,
            id,
            vec![sealed.bytes],
        ));
        Ok(Some(Sealed {
            mail: mail.to_bytes(),
            durable: Box::pin(durable),
        }))
    }

    /// Whether `group` is free of devices this node can show revoked, so that what is
    /// sealed now is for the devices that should read it: when this device is next in line
    /// it commits their removal first; when another is, it is told, and this waits.
    async fn clear_of_revoked(&self, mls: &mut Mls, group: &GroupRef) -> bool {
        let Some(info) = mls.info(group) else {
            return true;
        };
        // Waiting is bounded: a device next in line that stays away (or will not commit)
        // must not silence the conversation for good. Past the bound, what is sent may
        // reach the revoked device until its removal — said in the log.
        if lock(&self.inner.barriers)
            .get(group)
            .is_some_and(|since| since.elapsed() > MAX_BARRIER)
        {
            tracing::warn!(%group, "a revoked device is still in the conversation; sealing anyway");
            return true;
        }
        let directory = self.directory();
        let revoked = |mls: &mut Mls| {
            let members = mls.members(group).unwrap_or_default();
            let known: Vec<Member> = members
                .into_iter()
                .filter(|m| directory.is_revoked(m))
                .collect();
            !directory.evidence(&known, !info.is_group()).0.is_empty()
        };
        if !revoked(mls) {
            return true;
        }
        self.keep_up(mls, group, &info, false, &directory).await;
        let clear = !revoked(mls);
        let mut barriers = lock(&self.inner.barriers);
        if clear {
            barriers.remove(group);
        } else {
            if barriers.len() > 4096 {
                barriers.retain(|_, since| since.elapsed() <= MAX_BARRIER);
            }
            barriers.entry(*group).or_insert_with(Instant::now);
        }
        clear
    }

    /// Starts the conversation with `to` (this user orders it) with the devices whose key
    /// packages are held; sends the Welcome to each. `None` when none of `to`'s devices has
    /// one.
    async fn create(
        &self,
        mls: &mut Mls,
        to: UserId,
    ) -> Result<Option<GroupRef>, ConversationError> {
        let me = self.me();
        // Read again: a device revoked a moment ago must not get into a new group.
        self.refresh_directory().await;
        let directory = self.directory();
        let theirs = directory.messaging_devices(&to);
        let mut available = false;
        for peer in &theirs {
            if matches!(self.inner.db.key_package_count(&peer.to_string()).await, Ok((o, l)) if o + l > 0)
            {
                available = true;
                break;
            }
        }
        if !available {
            return Ok(None);
        }
        let mine: Vec<PeerId> = directory
            .messaging_devices(&me)
            .into_iter()
            .filter(|p| *p != self.inner.identity.peer_id())
            .collect();
        let mut packages = Vec::new();
        for (user, peer) in theirs
            .iter()
            .map(|p| (to, *p))
            .chain(mine.iter().map(|p| (me, *p)))
        {
            if let Some(package) = self.take_package(mls, user, peer).await {
                packages.push(package);
            }
        }
        if !packages.iter().any(|p| p.member.user == to) {
            return Ok(None);
        }
        let created = mls.create(
            Info::direct(me, to, now_ms()),
            packages,
            &directory,
            now_ms(),
        )?;
        let durable = self.inner.vault.mls_queued(mls.take_changes()).await?;
        tracing::info!(with = %to, group = %created.group, devices = created.added.len(), "started a conversation on MLS");
        self.changed(to, created.epoch);
        let mut entries = Vec::new();
        if let Some(welcome) = created.welcome {
            for member in &created.added {
                entries.push(self.handshake(member, MailKind::Welcome, vec![welcome.clone()])?);
            }
        }
        self.send_after(durable, entries).await?;
        Ok(Some(created.group))
    }

    /// A checked key package of `peer` (of `user`) to add it with, if one is held.
    async fn take_package(
        &self,
        mls: &Mls,
        user: UserId,
        peer: PeerId,
    ) -> Option<volli_mls::Package> {
        loop {
            let held = self
                .inner
                .db
                .key_package_take(&peer.to_string())
                .await
                .ok()??;
            match mls.check_key_package(&held.package) {
                Ok(p) if p.member.peer == peer && p.member.user == user => return Some(p),
                // Expired, or no longer valid: drop it and try the next.
                _ => {
                    let _ = self.inner.db.key_packages_forget(&held.reference).await;
                }
            }
        }
    }

    /// Handshake mail of `kind` for `member`, as an outbox entry.
    fn handshake(
        &self,
        member: &Member,
        kind: MailKind,
        messages: Vec<Vec<u8>>,
    ) -> Result<OutboxEntry, ConversationError> {
        let id = MessageId::random().map_err(|e| ConversationError::Invalid(e.to_string()))?;
        let mail = Mail::Mls(MlsMail::new(
            self.me(),
            member.user,
            Some(member.peer),
            kind,
            id,
            messages,
        ));
        let now = Timestamp::now();
        Ok(OutboxEntry {
            id: *id.as_bytes(),
            recipient: member.user.to_string(),
            envelope: mail.to_bytes(),
            body: String::new(),
            sent_at: now,
            expires_at: now.saturating_add(self.inner.settings.ttl),
            attempts: 0,
            relayed: false,
            device: Some(member.peer.to_string()),
            handshake: true,
            group: None,
            content: None,
        })
    }

    /// Queues `entries` after the state `durable` stands for (so they never leave before
    /// it is on disk), then hands them to the outbox worker.
    async fn send_after(
        &self,
        durable: impl std::future::Future<Output = Result<(), volli_store::StoreError>>,
        entries: Vec<OutboxEntry>,
    ) -> Result<(), ConversationError> {
        let mut queued = Vec::with_capacity(entries.len());
        for e in &entries {
            queued.push(
                self.inner
                    .vault
                    .outbox_queued(volli_store::OutboxChange::Add(e.clone()))
                    .await?,
            );
        }
        durable.await?;
        for q in queued {
            q.await?;
        }
        for e in entries {
            let _ = self.inner.mailer.try_send(e);
        }
        Ok(())
    }

    /// Takes in MLS mail that arrived for this device. `direct` is the contact (or this
    /// user) whose device handed it over, when it came directly; `accept` decides on an
    /// application message's sender and length before its key is used up.
    pub async fn open(
        &self,
        mail: &MlsMail,
        direct: Option<UserId>,
        accept: &mut (dyn FnMut(UserId, usize) -> Result<(), String> + Send),
    ) -> Result<Opened, ConversationError> {
        if !self.messaging() {
            return Err(ConversationError::Invalid(
                "this device does not take part in conversations".into(),
            ));
        }
        if mail.recipient != self.me() {
            return Err(ConversationError::Invalid("mail for another user".into()));
        }
        match mail.kind {
            MailKind::Application => {
                if let Some((group, info)) = self.group_of(mail).await {
                    return self
                        .open_group_application(mail, group, info, direct, accept, false)
                        .await;
                }
                self.open_application(mail, direct, accept, false).await
            }
            MailKind::Handshake | MailKind::Welcome => {
                if mail.device != Some(self.inner.identity.peer_id()) {
                    return Err(ConversationError::Invalid("mail for another device".into()));
                }
                self.open_handshake(mail, false, direct.unwrap_or(mail.sender))
                    .await
            }
        }
    }

    async fn open_application(
        &self,
        mail: &MlsMail,
        direct: Option<UserId>,
        accept: &mut (dyn FnMut(UserId, usize) -> Result<(), String> + Send),
        pending: bool,
    ) -> Result<Opened, ConversationError> {
        let bytes = mail
            .messages
            .first()
            .ok_or_else(|| ConversationError::Invalid("empty mail".into()))?;
        let directory = self.directory();
        let me = self.me();
        let mut mls = self.inner.mls.lock().await;
        if lock(&self.inner.opened).ids.contains(&mail.id) {
            return Ok(Opened::Duplicate);
        }
        let mut opened = None;
        let processed =
            mls.open_application(bytes, &directory, now_ms(), &mut |sender, content| {
                let Ok(content) = Content::from_padded(content) else {
                    return Err(MlsError::Refused("unreadable content".into()));
                };
                // One-to-one file offers come over the file protocol; requests are a group's.
                if matches!(
                    content,
                    Content::FileOffer(_) | Content::File { .. } | Content::GroupRequest { .. }
                ) {
                    return Err(MlsError::Refused(
                        "not a message this device takes here".into(),
                    ));
                }
                if content.mail_id() != mail.id {
                    return Err(MlsError::Refused(
                        "the content's id is not the mail's".into(),
                    ));
                }
                if sender.user == me {
                    return Err(MlsError::Refused(
                        "a message from this user's own device".into(),
                    ));
                }
                if direct.is_some_and(|d| d != sender.user) {
                    return Err(MlsError::Refused(
                        "a device may only deliver its own user's messages".into(),
                    ));
                }
                accept(sender.user, content.text_len()).map_err(MlsError::Refused)?;
                opened = Some((sender.user, content));
                Ok(())
            });
        // A message stored before (delivered again: its receipt was lost) no longer opens,
        // its key being used up: it is a duplicate, acknowledged as such. Asked only then,
        // so that the common case costs no read of the vault.
        let processed = match processed {
            Err(e) if !matches!(e, MlsError::Ahead { .. } | MlsError::UnknownGroup) => {
                drop(mls);
                if matches!(self.inner.vault.message_status(mail.id).await, Ok(Some(_))) {
                    return Ok(Opened::Duplicate);
                }
                if matches!(e, MlsError::Undecryptable)
                    && let Ok(peeked) = volli_mls::peek(bytes)
                    && let Some(group) = peeked.group
                {
                    self.suspect_fork(group).await;
                }
                return Err(unreadable(e));
            }
            other => other,
        };
        match processed {
            Ok(Processed::Application { .. }) => {
                let Some((sender, content)) = opened else {
                    return Err(ConversationError::Invalid("no content".into()));
                };
                let id = content.mail_id();
                lock(&self.inner.opened).insert(id);
                // The item first: once the state that no longer opens it is on disk, it
                // must be too.
                let stored = crate::timeline::queue_received(
                    &self.inner.vault,
                    &self.inner.events,
                    crate::timeline::Where::Direct(sender),
                    me,
                    sender,
                    content,
                    false,
                )
                .await?;
                let state = self.inner.vault.mls_queued(mls.take_changes()).await?;
                if let Some(group) = volli_mls::peek(bytes).ok().and_then(|p| p.group) {
                    self.wake_if_due(&mls, &group);
                }
                drop(mls);
                let saved = async move {
                    let new = match stored {
                        Some(stored) => stored.await?,
                        None => false,
                    };
                    state.await?;
                    Ok(new)
                };
                Ok(Opened::Text {
                    sender,
                    id,
                    saved: Box::pin(saved),
                })
            }
            Ok(_) => Err(ConversationError::Invalid(
                "not an application message".into(),
            )),
            // Not readable yet: the commit or the Welcome it depends on has not arrived. It is
            // kept to be read the moment it does, but not acknowledged: should what it needs
            // never come (this device is added again instead), only its sender still has it.
            Err(MlsError::Ahead { .. } | MlsError::UnknownGroup) if pending => Ok(Opened::Waiting),
            Err(MlsError::Ahead { group, epoch }) => {
                drop(mls);
                self.hold(group, epoch, mail, direct.unwrap_or(mail.sender))
                    .await?;
                Ok(Opened::Waiting)
            }
            Err(MlsError::UnknownGroup) => {
                drop(mls);
                let peeked = volli_mls::peek(bytes)?;
                let group = peeked.group.ok_or(MlsError::Malformed)?;
                self.hold(group, peeked.epoch, mail, direct.unwrap_or(mail.sender))
                    .await?;
                Ok(Opened::Waiting)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sets what counts messages taken in from what waited against their senders' quotas
    /// (once, by the messaging service).
    pub fn check_inbound(&self, check: InboundCheck) {
        let _ = self.inner.inbound.set(check);
    }

    /// Sets what takes in files offered to groups (once, by the file service).
    pub fn take_group_offers(&self, sink: OfferSink) {
        let _ = self.inner.offers.set(sink);
    }

    /// Opens a file offer that came inside a conversation from a device of `from`;
    /// `store` records it (durably) before the state that no longer opens it is saved.
    pub async fn open_offer(
        &self,
        mail: &MlsMail,
        from: UserId,
        store: impl FnOnce(
            FileOffer,
            crate::files::FileMeta,
        ) -> futures::future::BoxFuture<'static, bool>,
    ) -> Result<(), ConversationError> {
        if !self.messaging() || mail.kind != MailKind::Application {
            return Err(ConversationError::Invalid(
                "not an offer this device takes".into(),
            ));
        }
        let bytes = mail
            .messages
            .first()
            .ok_or_else(|| ConversationError::Invalid("empty mail".into()))?;
        let directory = self.directory();
        let mut mls = self.inner.mls.lock().await;
        let mut opened = None;
        let processed =
            mls.open_application(bytes, &directory, now_ms(), &mut |sender, content| {
                let (offer, meta) = match Content::from_padded(content) {
                    Ok(Content::FileOffer(offer)) => {
                        let meta = crate::files::FileMeta::of_name(&offer.name);
                        (offer, meta)
                    }
                    Ok(Content::File {
                        offer,
                        mime,
                        thumbnail,
                    }) => {
                        let meta = crate::files::FileMeta::received(
                            &offer.name,
                            &mime,
                            thumbnail.as_deref(),
                        );
                        (offer, meta)
                    }
                    _ => return Err(MlsError::Refused("not a file offer".into())),
                };
                if sender.user != from || offer.id.as_bytes() != mail.id.as_bytes() {
                    return Err(MlsError::Refused("an offer from another user".into()));
                }
                opened = Some((*sender, offer, meta));
                Ok(())
            });
        // The caller knows the transfer is not stored.
        processed.map_err(unreadable)?;
        let Some((sender, content, meta)) = opened else {
            return Err(ConversationError::Invalid("no offer".into()));
        };
        let offer = content
            .into_offer(sender.user, sender.peer)
            .map_err(|e| ConversationError::Invalid(e.to_string()))?;
        // The offer first: once the state that no longer opens it is on disk, it must be.
        if !store(offer, meta).await {
            self.reload(&mut mls).await;
            return Err(ConversationError::Invalid(
                "the offer was not stored".into(),
            ));
        }
        let state = self.inner.vault.mls_queued(mls.take_changes()).await?;
        drop(mls);
        state.await?;
        Ok(())
    }

    /// Drops what this device's MLS state did in memory since it was last saved (an
    /// operation whose result could not be stored): it goes on from what is on disk.
    async fn reload(&self, mls: &mut Mls) {
        let reopened = match (
            self.inner.db.mls_rows().await,
            device_seed(&self.inner.identity),
        ) {
            (Ok(rows), Ok(seed)) => Mls::open(
                rows,
                self.inner.identity.certificate.clone(),
                &seed,
                volli_mls::Config::default(),
            )
            .ok(),
            _ => None,
        };
        match reopened {
            Some(fresh) => *mls = fresh,
            None => tracing::error!("cannot reload this device's MLS state"),
        }
    }

    /// Tells clients that the conversation with `with` is at `epoch` now.
    fn changed(&self, with: UserId, epoch: u64) {
        self.inner.events.publish(Event::ConversationChanged {
            with: Some(with.to_string()),
            group: None,
            epoch: Some(epoch),
            disappearing_secs: None,
            by: None,
        });
    }

    /// Whether `mail` is kept here until what it depends on arrives.
    pub async fn holds(&self, mail: &Mail) -> bool {
        let Mail::Mls(m) = mail else {
            return false;
        };
        let Some(group) = m
            .messages
            .first()
            .and_then(|b| volli_mls::peek(b).ok())
            .and_then(|p| p.group)
        else {
            return false;
        };
        self.inner
            .db
            .mls_pending_holds(&group.0, &mail.to_bytes())
            .await
            .unwrap_or(false)
    }

    /// Keeps `mail` until `group` reaches `epoch` (or until its Welcome arrives), and asks
    /// for what is missing.
    async fn hold(
        &self,
        group: GroupRef,
        epoch: u64,
        mail: &MlsMail,
        deliverer: UserId,
    ) -> Result<(), ConversationError> {
        // Far ahead of this device is no commit it missed but junk: a device that far
        // behind is added again instead.
        let current = self.inner.mls.lock().await.epoch(&group).ok();
        if current.is_some_and(|c| epoch > c.saturating_add(MAX_AHEAD)) {
            return Err(ConversationError::Invalid(
                "mail for an epoch far ahead of this device".into(),
            ));
        }
        // Mail for a conversation this device is not in (its Welcome may still come): a few
        // such conversations per contact, checked before anything is written.
        if current.is_none() {
            let mut unknown = lock(&self.inner.unknown_held);
            if unknown.len() > 4096 {
                unknown.clear();
            }
            let groups = unknown.entry(deliverer).or_default();
            if !groups.contains(&group) && groups.len() >= MAX_UNKNOWN_PER_DELIVERER {
                return Err(ConversationError::Invalid(
                    "mail for too many conversations this device is not in".into(),
                ));
            }
            groups.insert(group);
        }
        let bytes = Mail::Mls(mail.clone()).to_bytes();
        if !self
            .inner
            .db
            .mls_pending_add(
                &group.0,
                epoch,
                &bytes,
                &deliverer.to_string(),
                Timestamp::now(),
            )
            .await?
        {
            return Err(ConversationError::Invalid(
                "too many messages wait for this conversation".into(),
            ));
        }
        self.spawn_catch_up(group);
        Ok(())
    }

    /// Asks for what `group` misses, in the background. (Boxed: taking in what arrives
    /// may hold more, which asks again.)
    fn spawn_catch_up(&self, group: GroupRef) {
        let this = self.clone();
        let task: futures::future::BoxFuture<'static, ()> =
            Box::pin(async move { this.catch_up(group).await });
        tokio::spawn(task);
    }

    /// Processes what waited for `group` (boxed, like [`Self::spawn_catch_up`]: reading it
    /// may apply commits, which read what waited for them).
    fn drain_boxed(&self, group: GroupRef) -> futures::future::BoxFuture<'static, ()> {
        let this = self.clone();
        Box::pin(async move { this.drain(group).await })
    }

    async fn open_handshake(
        &self,
        mail: &MlsMail,
        pending: bool,
        deliverer: UserId,
    ) -> Result<Opened, ConversationError> {
        let directory = self.directory();
        let mut mls = self.inner.mls.lock().await;
        let mut advanced = Vec::new();
        let mut group_events = Vec::new();
        let mut learned = Vec::new();
        let mut wake = false;
        // A Welcome (with the note of the member who brought this user in beside it), a
        // proposal for the committer or a lone commit: one message. A commit with the
        // proposals it includes: one operation.
        let (messages, note) = match (mail.kind, mail.messages.as_slice()) {
            (MailKind::Welcome, [welcome, note]) => (std::slice::from_ref(welcome), Some(note)),
            (_, all) => (all, None),
        };
        // The roster before a commit, for the system lines its change makes.
        let before = messages
            .last()
            .and_then(|m| volli_mls::peek(m).ok())
            .and_then(|p| p.group)
            .and_then(|g| Some((g, mls.info(&g)?)));
        let mut lines = Vec::new();
        let processed = match messages {
            [one] => mls
                .process_handshake(one, &directory, now_ms())
                .map(|p| vec![p]),
            many => mls.process_bundle(many, &directory, now_ms()),
        };
        match processed {
            Ok(results) => {
                for result in results {
                    match result {
                        Processed::Proposal { group, .. } => {
                            wake |= mls.is_committer(&group).unwrap_or(false);
                        }
                        Processed::Commit {
                            group,
                            epoch,
                            sender,
                            left,
                            info,
                            revocations,
                            ..
                        } => {
                            learned.extend(revocations.iter().map(volli_core::Statement::to_bytes));
                            if let (Some((g, was)), Some(now), false) = (&before, &info, left)
                                && *g == group
                                && now.is_group()
                            {
                                lines.push((
                                    group,
                                    crate::timeline::roster_lines(
                                        group,
                                        epoch,
                                        sender.user,
                                        was,
                                        now,
                                    ),
                                ));
                            }
                            if !left {
                                advanced.push((group, epoch, true));
                            }
                            let is_group = info.as_ref().is_some_and(Info::is_group)
                                || mls.info(&group).is_some_and(|i| i.is_group())
                                || left;
                            if is_group {
                                let out = info.is_some_and(|i| !i.includes(&self.me()));
                                group_events.push(Event::GroupChanged {
                                    group: group.to_string(),
                                    epoch,
                                    left: left || out,
                                });
                            }
                            // An update this device proposed may have been left out: the
                            // loop proposes it again.
                            wake = true;
                        }
                        Processed::Joined {
                            group, epoch, info, ..
                        } => {
                            // On a re-add, the note this device kept when it first joined.
                            let kept = mls.kept_sponsor_note(&group, &self.me());
                            let note = note.or(kept.as_ref());
                            if info.is_group() && !self.welcomed_by_contact(&group, &info, note) {
                                tracing::info!(%group, "left a group nobody this user knows put it in");
                                let _ = mls.forget_group(&group);
                                continue;
                            }
                            if let Some(note) = note {
                                mls.keep_sponsor_note(&group, &self.me(), note.clone());
                            }
                            if let Some(name) = info.name() {
                                group_events.push(Event::GroupCreated {
                                    group: group.to_string(),
                                    name: name.to_owned(),
                                });
                            }
                            tracing::info!(%group, epoch, "joined a conversation");
                            advanced.push((group, epoch, false));
                            wake = true;
                        }
                        _ => {}
                    }
                }
            }
            Err(MlsError::Ahead { group, epoch }) => {
                drop(mls);
                if pending {
                    return Ok(Opened::Waiting);
                }
                self.hold(group, epoch, mail, deliverer).await?;
                return Ok(Opened::Done);
            }
            // A commit that overtook the Welcome into its group: kept for when it comes.
            Err(MlsError::UnknownGroup) if mail.kind == MailKind::Handshake => {
                drop(mls);
                if pending {
                    return Ok(Opened::Waiting);
                }
                let peeked = mail
                    .messages
                    .last()
                    .map(|m| volli_mls::peek(m))
                    .transpose()?
                    .ok_or(MlsError::Malformed)?;
                let group = peeked.group.ok_or(MlsError::Malformed)?;
                self.hold(group, peeked.epoch, mail, deliverer).await?;
                return Ok(Opened::Done);
            }
            // Applied before (a retry), or a Welcome this device cannot open (its key
            // package is gone): nothing to do.
            Err(MlsError::Stale | MlsError::Duplicate | MlsError::NotForUs) => {}
            Err(e) => tracing::warn!(error = %e, "dropped handshake mail"),
        }
        let changed: Vec<(UserId, u64)> = advanced
            .iter()
            .filter_map(|(group, epoch, _)| {
                let with = mls.info(group)?.peer_of(&self.me())?;
                Some((with, *epoch))
            })
            .collect();
        let state = self.inner.vault.mls_queued(mls.take_changes()).await?;
        drop(mls);
        state.await?;
        // What justified a commit's removals is known here from now on (a device this user
        // does not know may commit next, or be asked to).
        if !learned.is_empty() {
            self.keep_revocations(&learned, None).await;
        }
        for (with, epoch) in changed {
            self.changed(with, epoch);
        }
        for (group, lines) in lines {
            self.keep_lines(group, lines).await;
        }
        for event in group_events {
            if let Event::GroupChanged {
                group, left: false, ..
            } = &event
                && let Some(group) = groups::parse_group(group)
            {
                let this = self.clone();
                tokio::spawn(async move { this.mend_sponsor(group).await });
            }
            self.inner.events.publish(event);
        }
        for (group, epoch, commit) in &advanced {
            if *commit {
                let _ = self
                    .inner
                    .db
                    .mls_commit_record(
                        &group.0,
                        *epoch,
                        &wire::encode(&mail.messages),
                        Timestamp::now(),
                    )
                    .await;
            }
        }
        // What waited for these commits or this Welcome is read before this returns: a
        // relay's next message in the same fetch then finds it read.
        for (group, _, _) in advanced {
            self.drain_boxed(group).await;
        }
        if wake {
            self.inner.work.notify_one();
        }
        Ok(Opened::Done)
    }

    /// Processes what waited for `group` and can be processed now.
    async fn drain(&self, group: GroupRef) {
        for _ in 0..64 {
            let epoch = {
                let mut mls = self.inner.mls.lock().await;
                match mls.epoch(&group) {
                    Ok(e) => e,
                    Err(_) => return,
                }
            };
            let Ok(waiting) = self.inner.db.mls_pending_for(&group.0, epoch).await else {
                return;
            };
            if waiting.is_empty() {
                return;
            }
            let mut done = Vec::new();
            let mut progressed = false;
            // What waited counts against its sender's quota as it would have on arrival.
            let check = self.inner.inbound.get().cloned();
            let mut accept = |sender: UserId, len: usize| match &check {
                Some(check) => check(sender, len),
                None => Ok(()),
            };
            for w in waiting {
                let Ok(Mail::Mls(mail)) = Mail::from_bytes(&w.mail) else {
                    done.push(w.seq);
                    continue;
                };
                let outcome = match mail.kind {
                    MailKind::Application => {
                        let opened = match self.group_of(&mail).await {
                            Some((group, info)) => {
                                self.open_group_application(
                                    &mail,
                                    group,
                                    info,
                                    None,
                                    &mut accept,
                                    true,
                                )
                                .await
                            }
                            None => self.open_application(&mail, None, &mut accept, true).await,
                        };
                        match opened {
                            Ok(Opened::Text { saved, .. }) => saved
                                .await
                                .map(|_| Opened::Done)
                                .map_err(ConversationError::from),
                            other => other,
                        }
                    }
                    _ => self.open_handshake(&mail, true, mail.sender).await,
                };
                match outcome {
                    Ok(Opened::Waiting) => continue,
                    Ok(_) => progressed = true,
                    Err(e) => tracing::debug!(error = %e, "a held message could not be taken in"),
                }
                done.push(w.seq);
            }
            let _ = self.inner.db.mls_pending_remove(&done).await;
            if !progressed {
                return;
            }
        }
    }

    /// Asks a member device for the commits `group` missed; processes them.
    async fn catch_up(&self, group: GroupRef) {
        if !self.may_ask(group) {
            return;
        }
        let (epoch, targets) = {
            let mut mls = self.inner.mls.lock().await;
            let Ok(epoch) = mls.epoch(&group) else {
                drop(mls);
                // Not in it (yet): the Welcome may still come; if it does not, ask to be
                // added again.
                let this = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(REJOIN_AFTER).await;
                    this.rejoin_if_still_waiting(group).await;
                });
                return;
            };
            let committer = mls.committer(&group).ok().flatten();
            let mut targets: Vec<PeerId> = committer.iter().map(|m| m.peer).collect();
            for m in mls.members(&group).unwrap_or_default() {
                if !targets.contains(&m.peer) && m.peer != self.inner.identity.peer_id() {
                    targets.push(m.peer);
                }
            }
            (epoch, targets)
        };
        let request = wire::encode(&MlsRequest::Commits {
            group: group.0,
            after: epoch,
        });
        for peer in targets {
            let Ok(MlsResponse::Commits(bundles)) = self.ask(peer, request.clone()).await else {
                continue;
            };
            if bundles.is_empty() {
                continue;
            }
            for bundle in bundles {
                let mail = MlsMail::new(
                    self.me(),
                    self.me(),
                    Some(self.inner.identity.peer_id()),
                    MailKind::Handshake,
                    MessageId::from_bytes([0; 16]),
                    bundle.messages,
                );
                if let Err(e) = self.open_handshake(&mail, true, self.me()).await {
                    tracing::debug!(error = %e, "a missed commit did not apply");
                    break;
                }
            }
            return;
        }
    }

    /// Whether `group` may ask someone something now (at most every [`ASK_EVERY`]).
    fn may_ask(&self, group: GroupRef) -> bool {
        let mut asked = lock(&self.inner.asked);
        let now = Instant::now();
        if asked
            .get(&group)
            .is_some_and(|at| now.duration_since(*at) < ASK_EVERY)
        {
            return false;
        }
        if asked.len() > 4096 {
            asked.clear();
        }
        asked.insert(group, now);
        true
    }

    async fn ask(&self, peer: PeerId, request: Vec<u8>) -> Result<MlsResponse, String> {
        let addrs = self
            .inner
            .peers
            .get(&peer)
            .map(|e| e.addrs)
            .unwrap_or_default();
        let call = self
            .inner
            .outbound
            .request(peer, Protocol::Mls, request, addrs);
        match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
            Ok(Ok(bytes)) => {
                wire::decode(&bytes, Protocol::Mls.max_response()).map_err(|e| e.to_string())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    /// A message from a member did not decrypt at an epoch this device has: the group may
    /// have forked, and this device may be on the side that lost.
    async fn suspect_fork(&self, group: GroupRef) {
        self.rejoin(group).await;
    }

    async fn rejoin_if_still_waiting(&self, group: GroupRef) {
        let waiting = self
            .inner
            .db
            .mls_pending_groups()
            .await
            .unwrap_or_default()
            .into_iter()
            .any(|(g, _, _)| g == group.0);
        if waiting {
            self.rejoin(group).await;
        }
    }

    /// Asks the devices of the conversation's users to add this device to `group` again,
    /// with a fresh key package; the committer acts on it. For a group this device is not
    /// in (it lost its state, or its Welcome never came) only the users whose mail for it
    /// waits here are asked, a few such groups an hour at most; for one it left, nobody.
    async fn rejoin(&self, group: GroupRef) {
        let (package, targets) = {
            let mut mls = self.inner.mls.lock().await;
            let now = now_ms();
            let known = mls.info(&group).is_some();
            let mut targets: Vec<PeerId> = Vec::new();
            if known {
                let asked = mls.ask_rejoin(&group, now);
                if asked.is_some_and(|at| now - at < 60_000) {
                    let _ = self.inner.vault.mls_queued(mls.take_changes()).await;
                    return;
                }
                targets.extend(mls.committer(&group).ok().flatten().map(|m| m.peer));
            } else {
                if mls.forgot(&group) {
                    tracing::debug!(%group, "mail for a group this device left: not asking back in");
                    return;
                }
                let mut recent = lock(&self.inner.unknown_rejoins);
                let hour = Duration::from_secs(3600);
                while recent.front().is_some_and(|at| at.elapsed() >= hour) {
                    recent.pop_front();
                }
                if recent.len() >= UNKNOWN_REJOINS_PER_HOUR {
                    tracing::info!(%group, "mail for unknown conversations: not asking to join more now");
                    return;
                }
                recent.push_back(Instant::now());
            }
            let Some(fresh) = mls
                .new_key_packages(1, false, now)
                .ok()
                .and_then(|mut f| f.pop())
            else {
                return;
            };
            let Ok(state) = self.inner.vault.mls_queued(mls.take_changes()).await else {
                return;
            };
            drop(mls);
            if state.await.is_err() {
                return;
            }
            if known {
                // Without the group's current state, this device may not know who commits:
                // every connected device of the user and of the contacts, and the committer
                // acts.
                for peer in self.inner.peers.trusted_connected() {
                    if !targets.contains(&peer) {
                        targets.push(peer);
                    }
                }
            } else {
                let deliverers = self
                    .inner
                    .db
                    .mls_pending_deliverers(&group.0)
                    .await
                    .unwrap_or_default();
                for user in deliverers.iter().filter_map(|u| u.parse::<UserId>().ok()) {
                    for peer in self.inner.peers.connected_devices_of(&user) {
                        if !targets.contains(&peer) {
                            targets.push(peer);
                        }
                    }
                }
            }
            (fresh, targets)
        };
        tracing::info!(%group, "asking to be added to a conversation again");
        let signed = self
            .inner
            .mls
            .lock()
            .await
            .rejoin_request(&group, &package, now_ms());
        let request = wire::encode(&MlsRequest::RejoinSigned {
            group: group.0,
            package: package.bytes,
            request: signed,
        });
        for peer in targets {
            if matches!(self.ask(peer, request.clone()).await, Ok(MlsResponse::Ok)) {
                return;
            }
        }
    }

    /// A device of a contact or of this user connected: hands it key packages (at most once
    /// an hour) and takes its own.
    pub async fn peer_ready(&self, peer: PeerId, user: UserId) {
        // Only devices that read messages take part (its certificate says what it may do).
        let reads = self
            .inner
            .peers
            .get(&peer)
            .and_then(|e| e.certificate)
            .is_none_or(|c| c.permissions().contains(Permissions::MESSAGES));
        if !self.messaging() || !reads {
            return;
        }
        self.tell_revocations(peer).await;
        if user != self.me() && !lock(&self.inner.features).get(&user).is_some_and(|f| f.1) {
            self.exchange_features(peer, user).await;
        }
        {
            let mut handed = lock(&self.inner.handed);
            if handed
                .get(&peer)
                .is_some_and(|at| at.elapsed() < HAND_OUT_EVERY)
            {
                return;
            }
            handed.insert(peer, Instant::now());
        }
        let Ok(packages) = self.hand_out(HAND_OUT).await else {
            return;
        };
        let request = wire::encode(&MlsRequest::KeyPackages { packages });
        match self.ask(peer, request).await {
            Ok(MlsResponse::KeyPackages { packages }) => {
                tracing::debug!(%peer, count = packages.len(), "exchanged key packages");
                self.keep_packages(peer, user, packages).await;
            }
            other => {
                // An older node, or one that does not know this device yet: ask again when
                // it connects, or when it learns of this device.
                tracing::debug!(%peer, answer = ?other.err(), "no key packages exchanged");
                lock(&self.inner.handed).remove(&peer);
            }
        }
    }

    /// Tells every contact's device connected now this user's revocations it was not told yet.
    pub async fn tell_connected_revocations(&self) {
        for user in self.inner.peers.connected_contacts() {
            for peer in self.inner.peers.connected_devices_of(&user) {
                self.tell_revocations(peer).await;
            }
        }
    }

    /// `user` became a contact (or changed): hands key packages to its devices connected now
    /// (a connection opened before it was a contact got no hello since).
    pub async fn contact_ready(&self, user: UserId) {
        for peer in self.inner.peers.connected_devices_of(&user) {
            self.peer_ready(peer, user).await;
        }
    }

    /// Tells `peer` (a contact's device, or this user's) this user's revocations it was not
    /// told yet: it may be next in line to commit in a conversation whose committer was
    /// revoked, or carry them to a group's committer that does not know this user.
    async fn tell_revocations(&self, peer: PeerId) {
        let Some(mut failed) = self.tell_revocations_once(peer).await else {
            return;
        };
        // It may not know this device yet (a device restored from a backup revokes the one
        // it replaces while its contacts learn its new card) and hung up: told again a
        // moment later, then twice as long after each failure, while it is connected (and
        // when it next asks something, `Self::handle`).
        let this = self.clone();
        tokio::spawn(async move {
            while let (at, attempts @ 1..RETELL_ATTEMPTS) = failed {
                tokio::time::sleep(RETELL_AFTER * 2u32.pow(attempts - 1)).await;
                let still = matches!(
                    lock(&this.inner.told).get(&peer),
                    Some(Told::Failed { at: then, .. }) if *then == at
                );
                if !still || !this.inner.peers.get(&peer).is_some_and(|e| e.connected) {
                    return;
                }
                match this.tell_revocations_once(peer).await {
                    Some(again) => failed = again,
                    None => return,
                }
            }
        });
    }

    /// Tells `peer` this user's revocations once, unless it was told them all; when it did
    /// not answer, when that was and how many times in a row.
    async fn tell_revocations_once(&self, peer: PeerId) -> Option<(Instant, u32)> {
        let statements: Vec<Vec<u8>> = match self.inner.vault.revocations(self.me()).await {
            Ok(s) => s.iter().map(volli_core::Statement::to_bytes).collect(),
            Err(_) => {
                // Not told: the next request from it tries again.
                let mut told = lock(&self.inner.told);
                if let Some(Told::Telling { attempts }) = told.get(&peer).copied() {
                    told.insert(
                        peer,
                        Told::Failed {
                            at: Instant::now(),
                            attempts,
                        },
                    );
                }
                return None;
            }
        };
        let attempts = {
            let mut told = lock(&self.inner.told);
            let attempts = match told.get(&peer) {
                Some(Told::Count(n)) if *n == statements.len() => return None,
                Some(Told::Failed { attempts, .. } | Told::Telling { attempts }) => *attempts,
                _ => 0,
            };
            if told.len() > 4096 {
                told.clear();
            }
            told.insert(peer, Told::Count(statements.len()));
            attempts
        };
        if statements.is_empty() {
            return None;
        }
        let count = statements.len();
        let request = wire::encode(&MlsRequest::Revocations { statements });
        let answer = self.ask(peer, request).await;
        if matches!(answer, Ok(MlsResponse::Ok)) {
            tracing::debug!(%peer, count, "told a device of this user's revocations");
            return None;
        }
        tracing::debug!(%peer, ?answer, "a device was not told this user's revocations");
        let failed = (Instant::now(), attempts + 1);
        lock(&self.inner.told).insert(
            peer,
            Told::Failed {
                at: failed.0,
                attempts: failed.1,
            },
        );
        Some(failed)
    }

    /// Records what `user`'s node reads.
    fn note_features(&self, user: UserId, features: u32) {
        if !self.inner.peers.is_contact(&user) {
            return;
        }
        let changed = {
            let mut known = lock(&self.inner.features);
            known.insert(user, (features, true)).map(|f| f.0) != Some(features)
        };
        if changed {
            let db = self.inner.db.clone();
            tokio::spawn(async move {
                if let Err(e) = db
                    .set_contact_features(&user.to_string(), i64::from(features))
                    .await
                {
                    tracing::debug!(error = %e, "what a contact's node reads was not kept");
                }
            });
        }
    }

    /// Whether `user`'s node reads the message kinds of this release (a reply, a reaction,
    /// an edit…): known when it said so; a member this user does not know is assumed to.
    pub fn reads_kinds(&self, user: &UserId) -> bool {
        self.features_of(user).unwrap_or(false)
    }

    /// Whether `user`'s node reads the message kinds of this release: `None` for a contact
    /// never heard on it (a member this user does not know is assumed to).
    pub fn features_of(&self, user: &UserId) -> Option<bool> {
        match lock(&self.inner.features).get(user) {
            Some((features, _)) => Some(features & volli_core::mail::FEATURE_MESSAGE_KINDS != 0),
            None => (!self.inner.peers.is_contact(user)).then_some(true),
        }
    }

    /// Learns what contact `user`'s node reads when that was never heard: from a connected
    /// device, or (with `dial`) from any of its devices, dialled.
    pub async fn learn_features(&self, user: UserId, dial: bool) {
        if self.features_of(&user).is_some() {
            return;
        }
        let mut devices = self.inner.peers.connected_devices_of(&user);
        if devices.is_empty() && dial {
            devices = self
                .inner
                .peers
                .devices_of(&user)
                .into_iter()
                .map(|e| e.peer_id)
                .collect();
        }
        for peer in devices {
            self.exchange_features(peer, user).await;
            if self.features_of(&user).is_some() {
                return;
            }
        }
    }

    /// Whether `user`'s devices in a conversation (`group`, or the one with `user`) read
    /// the message kinds of this release: what its node said (a contact's; a member this
    /// user does not know is assumed to), and what each of its devices' leaves in the tree
    /// says (a device of an earlier release does not list them). `None`: not known yet.
    pub async fn reads_kinds_in(&self, user: UserId, group: Option<GroupRef>) -> Option<bool> {
        let said = self.features_of(&user);
        if said == Some(false) {
            return said;
        }
        let tree = {
            let me = self.me();
            let mut mls = self.inner.mls.lock().await;
            match group.or_else(|| Self::current_group(&mls, &me, &user)) {
                Some(group) => mls
                    .users_reading_kinds(&group)
                    .ok()
                    .and_then(|users| users.get(&user).copied()),
                None => None,
            }
        };
        match (said, tree) {
            (_, Some(false)) => Some(false),
            (said, _) => said,
        }
    }

    /// Asks `peer` (a device of `user`) what its node reads, and says what this one reads.
    async fn exchange_features(&self, peer: PeerId, user: UserId) {
        let request = wire::encode(&MlsRequest::Features {
            features: volli_core::mail::FEATURE_MESSAGE_KINDS,
        });
        match self.ask(peer, request).await {
            Ok(MlsResponse::Features { features }) => self.note_features(user, features),
            // An earlier release cannot decode the request: it reads texts and offers only.
            // Any other refusal (a device that takes no part in conversations, of either
            // release) says nothing of what the user's node reads.
            Ok(MlsResponse::Refused(why)) if why == MALFORMED => self.note_features(user, 0),
            _ => {}
        }
    }

    /// Tells the connected devices of contact `user` that this user is typing (to them, or
    /// in `group`): one request each, at once, never queued or relayed.
    pub fn send_typing(&self, user: UserId, group: Option<GroupRef>) {
        if !self.reads_kinds(&user) {
            return;
        }
        let request = wire::encode(&MlsRequest::Typing {
            group: group.map(|g| g.0),
        });
        for peer in self.inner.peers.connected_devices_of(&user) {
            let this = self.clone();
            let request = request.clone();
            tokio::spawn(async move {
                let _ = this.ask(peer, request).await;
            });
        }
    }

    /// A contact's device says its user is typing: told to clients, kept nowhere.
    async fn typing_from(&self, user: UserId, group: Option<GroupRef>) {
        if user == self.me() {
            return;
        }
        {
            let now = std::time::Instant::now();
            let every = crate::messaging::TYPING_EVERY / 2;
            let mut seen = lock(&self.inner.typing);
            if seen
                .get(&(user, group))
                .is_some_and(|at| now.duration_since(*at) < every)
            {
                return;
            }
            if seen.len() >= 4096 {
                seen.retain(|_, at| now.duration_since(*at) < every);
            }
            seen.insert((user, group), now);
        }
        if let Some(group) = group
            && !self
                .inner
                .mls
                .lock()
                .await
                .info(&group)
                .is_some_and(|i| i.is_group() && i.includes(&user))
        {
            return;
        }
        self.inner.events.publish(Event::Typing {
            with: group.is_none().then(|| user.to_string()),
            group: group.map(|g| g.to_string()),
            from: user.to_string(),
        });
    }

    /// This device's key packages to hand to another device, with up to `one_time`
    /// one-time packages (durable before they leave).
    async fn hand_out(&self, one_time: usize) -> Result<Vec<Vec<u8>>, ConversationError> {
        let rotate = i64::try_from(ROTATE_LAST_RESORT.as_millis()).unwrap_or(i64::MAX);
        let mut mls = self.inner.mls.lock().await;
        // However many devices ask, this device holds a bounded number of one-time
        // packages' private keys: past that, only its last-resort package is handed out.
        let one_time = if mls.one_time_outstanding() >= MAX_ONE_TIME_OUTSTANDING {
            0
        } else {
            one_time
        };
        let packages = mls.hand_out(one_time, now_ms(), rotate)?;
        let state = self.inner.vault.mls_queued(mls.take_changes()).await?;
        drop(mls);
        state.await?;
        Ok(packages.into_iter().map(|p| p.bytes).collect())
    }

    /// Keeps key packages `peer` (a device of `user`) handed over: only its own, valid ones.
    async fn keep_packages(&self, peer: PeerId, user: UserId, packages: Vec<Vec<u8>>) {
        let mut kept = 0;
        for bytes in packages.into_iter().take(8) {
            let checked = {
                let mls = self.inner.mls.lock().await;
                mls.check_key_package(&bytes)
            };
            match checked {
                Ok(p) if p.member.peer == peer && p.member.user == user => {
                    let held = HeldPackage {
                        reference: p.reference,
                        peer: peer.to_string(),
                        user_id: user.to_string(),
                        last_resort: p.last_resort,
                        package: bytes,
                    };
                    if self
                        .inner
                        .db
                        .key_package_add(&held, Timestamp::now())
                        .await
                        .is_ok()
                    {
                        kept += 1;
                    }
                }
                Ok(_) => {
                    tracing::debug!(%peer, "a device handed over another device's key package")
                }
                Err(e) => tracing::debug!(%peer, error = %e, "a key package was refused"),
            }
        }
        if kept > 0 {
            self.inner.work.notify_one();
        }
    }

    /// Answers `/volli/mls/1` from `peer`, a device of `user` (a contact or this user).
    pub async fn handle(&self, peer: PeerId, user: UserId, payload: &[u8]) -> Vec<u8> {
        // A device that was not told this user's revocations in this run is told now: when
        // it was first told (at its hello) it may not have known this device yet and hung
        // up (a device restored from a backup revokes the one it replaces while its
        // contacts learn its new card), and it asks something of this device once it does.
        if self.messaging() {
            let tell = {
                let mut told = lock(&self.inner.told);
                // After failures, the wait doubles (up to about 4 minutes).
                let due = match told.get(&peer) {
                    None => Some(0),
                    Some(Told::Failed { at, attempts }) => (at.elapsed()
                        >= RETELL_AFTER * 2u32.pow((*attempts).clamp(1, 8) - 1))
                    .then_some(*attempts),
                    Some(Told::Telling { .. } | Told::Count(_)) => None,
                };
                if let Some(attempts) = due {
                    told.insert(peer, Told::Telling { attempts });
                }
                due.is_some()
            };
            if tell {
                let this = self.clone();
                tokio::spawn(async move { this.tell_revocations(peer).await });
            }
        }
        let response = if self.messaging() {
            match wire::decode::<MlsRequest>(payload, Protocol::Mls.max_request()) {
                Ok(request) => self.answer(peer, user, request).await,
                Err(_) => MlsResponse::Refused(MALFORMED.into()),
            }
        } else {
            MlsResponse::Refused("this device does not take part in conversations".into())
        };
        wire::encode(&response)
    }

    async fn answer(&self, peer: PeerId, user: UserId, request: MlsRequest) -> MlsResponse {
        match request {
            MlsRequest::KeyPackages { packages } => {
                self.keep_packages(peer, user, packages).await;
                // One-time packages at most once an hour per device, as this device asks
                // for them: a device that asks more often gets the last-resort package.
                let recent = lock(&self.inner.handed)
                    .insert(peer, Instant::now())
                    .is_some_and(|at| at.elapsed() < HAND_OUT_EVERY);
                match self.hand_out(if recent { 0 } else { HAND_OUT }).await {
                    Ok(packages) => MlsResponse::KeyPackages { packages },
                    Err(e) => MlsResponse::Refused(e.to_string()),
                }
            }
            MlsRequest::Commits { group, after } => {
                let group = GroupRef(group);
                let member = {
                    let mut mls = self.inner.mls.lock().await;
                    mls.members(&group)
                        .map(|m| m.iter().any(|m| m.peer == peer))
                        .unwrap_or(false)
                };
                if !member {
                    return MlsResponse::Refused("not a member of this conversation".into());
                }
                match self.inner.db.mls_commits_after(&group.0, after, 32).await {
                    Ok(rows) => MlsResponse::Commits(
                        rows.into_iter()
                            .filter_map(|(epoch, bytes)| {
                                let messages: Vec<Vec<u8>> =
                                    wire::decode(&bytes, Protocol::Mls.max_response()).ok()?;
                                Some(CommitBundle { epoch, messages })
                            })
                            .collect(),
                    ),
                    Err(e) => MlsResponse::Refused(format!("storage: {e}")),
                }
            }
            MlsRequest::Rejoin { group, package } => {
                self.readd(GroupRef(group), peer, user, &package, None)
                    .await
            }
            MlsRequest::RejoinSigned {
                group,
                package,
                request,
            } => {
                self.readd(GroupRef(group), peer, user, &package, Some(request))
                    .await
            }
            MlsRequest::Features { features } => {
                self.note_features(user, features);
                MlsResponse::Features {
                    features: volli_core::mail::FEATURE_MESSAGE_KINDS,
                }
            }
            MlsRequest::Typing { group } => {
                self.typing_from(user, group.map(GroupRef)).await;
                MlsResponse::Ok
            }
            MlsRequest::Revocations { statements } => {
                // A device hands over its own user's revocations only.
                self.keep_revocations(&statements, Some(user)).await;
                MlsResponse::Ok
            }
        }
    }

    /// As the committer of `group`, adds device `peer` again with `package` (removing the
    /// leaf it had, if any).
    async fn readd(
        &self,
        group: GroupRef,
        peer: PeerId,
        user: UserId,
        package: &[u8],
        request: Option<Vec<u8>>,
    ) -> MlsResponse {
        // Only the committer (or the device next in line) answers, before anything is
        // recorded: requests for groups this device does not order cost nothing.
        {
            let mut mls = self.inner.mls.lock().await;
            if !mls.is_committer(&group).unwrap_or(false)
                && !mls.commits_without(&group, &peer).unwrap_or(false)
            {
                return MlsResponse::Refused(
                    "this device does not commit in this conversation".into(),
                );
            }
        }
        // Members take a re-add only with the device's own signed request (a node of an
        // earlier release sends none: it cannot be added again this way).
        let Some(request) = request else {
            return MlsResponse::Refused("a re-add needs the device's signed request".into());
        };
        {
            // A re-add is a commit and a Welcome to every member: once a minute per device.
            let mut readds = lock(&self.inner.readds);
            let now = Instant::now();
            if readds
                .get(&(group, peer))
                .is_some_and(|at| now.duration_since(*at) < READD_EVERY)
            {
                return MlsResponse::Refused("added again a moment ago".into());
            }
            if readds.len() > 4096 {
                readds.retain(|_, at| now.duration_since(*at) < READD_EVERY);
            }
            readds.insert((group, peer), now);
        }
        let directory = self.directory();
        let mut mls = self.inner.mls.lock().await;
        // The committer adds it; when the requester is the committer itself (it lost its
        // state), the device next in line takes over by removing it.
        if !mls.is_committer(&group).unwrap_or(false)
            && !mls.commits_without(&group, &peer).unwrap_or(false)
        {
            return MlsResponse::Refused("this device does not commit in this conversation".into());
        }
        let package = match mls.check_key_package(package) {
            Ok(p) if p.member.peer == peer && p.member.user == user => p,
            Ok(_) => return MlsResponse::Refused("not the requester's key package".into()),
            Err(e) => return MlsResponse::Refused(e.to_string()),
        };
        let commit = volli_mls::Commit {
            add: vec![package],
            remove: vec![peer],
            rejoins: vec![request],
            ..volli_mls::Commit::default()
        };
        let committed = if mls.info(&group).is_some_and(|i| i.is_group()) {
            self.commit_group(&mut mls, &group, commit, &directory)
                .await
        } else {
            self.commit(&mut mls, &group, commit, &directory).await
        };
        match committed {
            Ok(()) => MlsResponse::Ok,
            Err(e) => MlsResponse::Refused(e.to_string()),
        }
    }

    /// Commits in `group` and sends the commit to every member and the Welcome to the devices
    /// added; records it for members that miss it.
    async fn commit(
        &self,
        mls: &mut Mls,
        group: &GroupRef,
        commit: volli_mls::Commit,
        directory: &Directory,
    ) -> Result<(), ConversationError> {
        let committed = mls.commit(group, commit, directory, now_ms())?;
        let with = mls.info(group).and_then(|i| i.peer_of(&self.me()));
        let durable = self.inner.vault.mls_queued(mls.take_changes()).await?;
        tracing::info!(
            %group,
            epoch = committed.epoch,
            added = committed.added.len(),
            removed = committed.removed.len(),
            "committed"
        );
        let removed: HashSet<PeerId> = committed.removed.iter().map(|m| m.peer).collect();
        let mut entries = Vec::new();
        for member in committed
            .recipients
            .iter()
            .filter(|m| !removed.contains(&m.peer))
        {
            entries.push(self.handshake(
                member,
                MailKind::Handshake,
                committed.messages.clone(),
            )?);
        }
        if let Some(welcome) = &committed.welcome {
            for member in &committed.added {
                entries.push(self.handshake(member, MailKind::Welcome, vec![welcome.clone()])?);
            }
        }
        self.send_after(durable, entries).await?;
        self.inner
            .db
            .mls_commit_record(
                &group.0,
                committed.epoch,
                &wire::encode(&committed.messages),
                Timestamp::now(),
            )
            .await?;
        if let Some(with) = with {
            self.changed(with, committed.epoch);
        }
        Ok(())
    }

    /// The work in every conversation of this device: where it commits (it is the
    /// committer, or next in line once the revoked devices ahead of it are out), add the
    /// devices the users' lists name, remove those revoked, commit proposals and due
    /// updates; elsewhere propose an update when one is due, and hand the committer what it
    /// may not know (this user's new devices, revocations).
    async fn reconcile(&self) {
        self.refresh_directory().await;
        let directory = self.directory();
        let me = self.me();
        let now = now_ms();
        let every = i64::try_from(self.inner.settings.update_every.as_millis()).unwrap_or(i64::MAX);
        let after = self.inner.settings.update_after;
        let mut mls = self.inner.mls.lock().await;
        for (group, info) in mls.groups() {
            // Only the current group of a one-to-one conversation is kept up.
            if let Some(with) = info.peer_of(&me)
                && Self::current_group(&mls, &me, &with) != Some(group)
            {
                continue;
            }
            if !info.includes(&me) {
                continue;
            }
            let Ok(due) = mls.update_due(&group, now, every, after) else {
                continue;
            };
            self.keep_up(&mut mls, &group, &info, due, &directory).await;
        }
    }

    /// One conversation's round (see [`Self::reconcile`]). Returns whether this device
    /// committed.
    async fn keep_up(
        &self,
        mls: &mut Mls,
        group: &GroupRef,
        info: &Info,
        due: bool,
        directory: &Directory,
    ) -> bool {
        let me = self.inner.identity.peer_id();
        let members = mls.members(group).unwrap_or_default();
        let wanted = if info.is_group() {
            self.wanted_devices(mls, group, info, directory).await
        } else {
            info.users()
                .iter()
                .flat_map(|u| directory.messaging_devices(u).into_iter().map(|p| (*u, p)))
                .collect()
        };
        // Devices to go: those no longer wanted, and only with the evidence every member
        // checks (a revocation; for a one-to-one conversation, the card that left it off).
        let unwanted: Vec<Member> = members
            .iter()
            .filter(|m| m.peer != me && !wanted.contains(&(m.user, m.peer)))
            .copied()
            .collect();
        let (remove, revocations, cards) = directory.evidence(&unwanted, !info.is_group());
        let successor = mls.committer_without(group, &remove).ok().flatten();
        if successor.is_none_or(|s| s.peer != me) {
            let committer = mls.committer(group).ok().flatten();
            // The committer is revoked and the device next in line is another: it may not
            // know (a stranger to the revoking user), so it is told.
            if info.is_group()
                && let Some(next) = successor
                && !revocations.is_empty()
            {
                self.hand_over_revocations(mls, group, &next, &revocations)
                    .await;
            }
            if committer.is_some_and(|c| !directory.is_revoked(&c)) {
                if due && let Err(e) = self.propose_update(mls, group).await {
                    tracing::debug!(%group, error = %e, "cannot propose an update");
                }
                if info.is_group() {
                    self.hand_over_devices(mls, group, directory).await;
                }
            }
            return false;
        }
        let mut add = Vec::new();
        for (user, peer) in &wanted {
            if !members.iter().any(|m| m.peer == *peer)
                && let Some(p) = self.take_package(mls, *user, *peer).await
            {
                add.push(p);
            }
        }
        let proposals = mls.pending_proposals(group).unwrap_or(0) > 0;
        let missing = wanted
            .iter()
            .filter(|(_, p)| !members.iter().any(|m| m.peer == *p))
            .count()
            .saturating_sub(add.len());
        if missing > 0 {
            tracing::debug!(%group, missing, "devices wait for their key packages");
        }
        if add.is_empty() && remove.is_empty() && !due && !proposals {
            return false;
        }
        let commit = volli_mls::Commit {
            add,
            remove,
            update: due,
            change: None,
            revocations,
            cards,
            rejoins: Vec::new(),
        };
        let adds: Vec<Vec<u8>> = commit.add.iter().map(|p| p.reference.clone()).collect();
        let result = if info.is_group() {
            self.commit_group(mls, group, commit.clone(), directory)
                .await
        } else {
            self.commit(mls, group, commit.clone(), directory).await
        };
        match result {
            Ok(()) => true,
            Err(e) if !adds.is_empty() => {
                // A device that cannot join (a package refused, a user over its devices)
                // must not hold up the rest — removals, updates, proposals: its packages go,
                // and the round commits without them.
                tracing::warn!(%group, error = %e, "cannot add devices; committing without them");
                for reference in &adds {
                    let _ = self.inner.db.key_packages_forget(reference).await;
                }
                let without = volli_mls::Commit {
                    add: Vec::new(),
                    ..commit
                };
                if without.remove.is_empty() && !without.update && !proposals {
                    return false;
                }
                let result = if info.is_group() {
                    self.commit_group(mls, group, without, directory).await
                } else {
                    self.commit(mls, group, without, directory).await
                };
                result.is_ok()
            }
            Err(e) => {
                tracing::warn!(%group, error = %e, "cannot commit");
                false
            }
        }
    }

    /// Proposes an update of this device's own leaf to the committer of `group`.
    async fn propose_update(
        &self,
        mls: &mut Mls,
        group: &GroupRef,
    ) -> Result<(), ConversationError> {
        let Some(committer) = mls.committer(group)? else {
            return Ok(());
        };
        // Proposed in this epoch: due again only if the epoch moves on without it.
        let proposal = mls.propose_update(group)?;
        let durable = self.inner.vault.mls_queued(mls.take_changes()).await?;
        let entry = self.handshake(&committer, MailKind::Handshake, vec![proposal])?;
        self.send_after(durable, vec![entry]).await
    }

    /// Forgets what can no longer be wanted: past epochs older than the late-mail window (and
    /// the pages and log that held them), key packages nobody used, superseded groups, old
    /// held mail and recorded commits.
    async fn housekeeping(&self) {
        let late = self.inner.settings.late_mail;
        let before = SystemTime::now()
            .checked_sub(late)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let me = self.me();
        let keep: Vec<Vec<u8>> = {
            let mut mls = self.inner.mls.lock().await;
            if let Err(e) = mls.forget_past(before) {
                tracing::warn!(error = %e, "cannot forget past epochs");
            }
            // A group forgotten long ago can no longer be Welcomed into from an old Welcome
            // (the key packages it would need are gone): its record goes too.
            let tombstones = i64::try_from(TOMBSTONE_AGE.as_millis()).unwrap_or(i64::MAX);
            mls.forget_tombstones(now_ms().saturating_sub(tombstones));
            let age = i64::try_from(KEY_PACKAGE_AGE.as_millis()).unwrap_or(i64::MAX);
            let window = i64::try_from(late.as_millis()).unwrap_or(i64::MAX);
            if let Err(e) = mls.prune_key_packages(now_ms(), age, window) {
                tracing::warn!(error = %e, "cannot forget old key packages");
            }
            // A group that lost to another one of the same conversation goes once the last
            // late mail for it can have arrived.
            let late_ms = i64::try_from(late.as_millis()).unwrap_or(i64::MAX);
            for (group, info) in mls.groups() {
                let Some(with) = info.peer_of(&me) else {
                    continue;
                };
                let superseded = Self::current_group(&mls, &me, &with) != Some(group);
                let quiet = mls
                    .activity(&group)
                    .is_none_or(|a| now_ms().saturating_sub(a.updated_ms) > late_ms);
                if superseded && quiet {
                    let _ = mls.forget_group(&group);
                }
            }
            let keep = mls
                .groups()
                .into_iter()
                .map(|(g, _)| g.0.to_vec())
                .collect();
            match self.inner.vault.mls_queued(mls.take_changes()).await {
                Ok(state) => {
                    drop(mls);
                    if let Err(e) = state.await {
                        tracing::warn!(error = %e, "cannot save what was forgotten");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot save what was forgotten"),
            }
            keep
        };
        lock(&self.inner.unknown_held).clear();
        let cutoff = Timestamp::now().saturating_sub(late);
        if let Err(e) = self.inner.db.mls_expire(cutoff, &keep).await {
            tracing::warn!(error = %e, "cannot expire held mail");
        }
        if let Err(e) = self.inner.db.scrub().await {
            tracing::warn!(error = %e, "cannot scrub the database");
        }
    }

    /// Forgets key packages held for `user` (no longer a contact).
    pub async fn forget_contact(&self, user: UserId) {
        let _ = self
            .inner
            .db
            .key_packages_forget_user(&user.to_string())
            .await;
        self.inner.work.notify_one();
    }
}

/// The Ed25519 secret key of this device (its libp2p identity).
/// What a device answers for mail of a conversation that does not open and that it did
/// not store before. Past the sender ratchet's window (it came after too many later
/// messages of its sender), from an epoch forgotten since, under a key used for another
/// message (a sender's state restored from a copy) or sealed on the other side of a fork
/// (once that is resolved, it reads): its sender seals it again.
fn unreadable(e: MlsError) -> ConversationError {
    match e {
        MlsError::Stale | MlsError::Duplicate | MlsError::Undecryptable => {
            ConversationError::SealAgain
        }
        e => e.into(),
    }
}

fn device_seed(identity: &Identity) -> anyhow::Result<zeroize::Zeroizing<[u8; 32]>> {
    let key = identity
        .device
        .clone()
        .try_into_ed25519()
        .map_err(|_| anyhow::anyhow!("the device key is not Ed25519"))?;
    let secret = key.secret();
    let bytes: [u8; 32] = secret
        .as_ref()
        .try_into()
        .map_err(|_| anyhow::anyhow!("the device key is not 32 bytes"))?;
    Ok(zeroize::Zeroizing::new(bytes))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
