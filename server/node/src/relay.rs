//! Friends' nodes as blind mailboxes.
//!
//! **Serving** (`/volli/relay/1`, to contacts' devices only, answered at once — a peer that
//! has not said hello is refused, not waited for): a contact deposits a sealed envelope for
//! another contact, proving the recipient's consent with the recipient's signed contact card
//! that lists this user as one of its relays. The relay-policy plugin named in `[relay]
//! policy` decides (quotas, TTL ≤ 7 days); the envelope is stored in SQLite before the
//! depositor hears it is held; the recipient fetches, a page of at most what one response
//! may carry, and acknowledges, and only then is it deleted. Expired envelopes are swept;
//! removing a contact drops what was held for and from it.
//!
//! **Using**: this user designates up to [`WANTED_RELAYS`] contacts that agree to hold mail
//! for it (chosen by the relay-policy plugin, asked with `Volunteer`), and tells its contacts
//! through a newer contact card.

use std::collections::{HashMap, HashSet};
use std::str::FromStr as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use volli_core::wire::{self, PageCursor, RelayRequest, RelayResponse};
use volli_core::{ContactCard, Mail, PeerId, Timestamp, UserId};
use volli_net::Protocol;
use volli_plugin_host::{Decision, DepositRequest, PluginHost, RelayCandidate, Usage};
use volli_store::{Db, Held, Vault};

use crate::contacts::Contacts;
use crate::identity::Identity;
use crate::limits::RateLimiter;
use crate::outbound::Outbound;
use crate::peers::Peers;

/// Relays a user designates at most.
pub const WANTED_RELAYS: usize = 3;
/// Longest time a relay holds an envelope.
const MAX_TTL: Duration = wire::MAX_TTL;
/// Envelopes handed over per fetch at most.
const FETCH_BATCH: u16 = 64;
/// Bytes of envelopes handed over per fetch at most: what a response may carry, less room
/// for its framing.
const FETCH_BYTES: usize = (4 << 20) - (64 << 10);
/// Receipts held per sender at most.
const MAX_RECEIPTS_PER_SENDER: u64 = 10_000;
/// Largest encoded receipt accepted back from storage.
const MAX_RECEIPT_LEN: usize = 512;
/// How long a request to a relay may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Deposits a depositor may make at once, and per second after that.
const DEPOSIT_BURST: u32 = 200;
const DEPOSITS_PER_SECOND: u32 = 50;
/// Newer contact cards taken from one contact at once, and a minute after that.
const CARD_BURST: u32 = 10;
const CARDS_PER_MINUTE: u32 = 2;
/// Picture requests answered for one user at once, and per minute after that.
const AVATAR_BURST: u32 = 10;
const AVATARS_PER_MINUTE: u32 = 4;
/// The longest the sweeper sleeps when nothing is due (it wakes for the first expiry, and
/// is told of every new holding).
const SWEEP_AT_LEAST_EVERY: Duration = Duration::from_secs(3600);
/// How often relays are reconsidered.
const DESIGNATE_EVERY: Duration = Duration::from_secs(600);

/// The relay service. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    vault: Vault,
    outbound: Outbound,
    identity: Arc<Identity>,
    peers: Peers,
    host: PluginHost,
    contacts: Contacts,
    connectivity: crate::connectivity::Connectivity,
    /// The relay-policy plugin that decides on deposits.
    policy: String,
    deposits: RateLimiter<UserId>,
    /// Newer cards taken per contact: each one is kept in the contacts document (and its
    /// history until every device has it), so a contact cannot grow it at will.
    cards: RateLimiter<UserId>,
    /// Picture requests per contact (and the user's own devices).
    avatars: RateLimiter<UserId>,
    redesignate: Notify,
    /// Something new is held: the sweeper reconsiders when to wake.
    held: Notify,
    /// The card issue time each contact last got from us (this run).
    cards_sent: Mutex<HashMap<UserId, Timestamp>>,
    /// Contacts told that mail waits here, with whether more came while telling them.
    telling: Mutex<HashMap<UserId, bool>>,
    /// Contacts whose node said mail waits there for this user, and its wake-up.
    told: Mutex<HashSet<UserId>>,
    told_wake: Notify,
    /// Profile pictures: set once at start (the profile service is made after the relay).
    profile: std::sync::OnceLock<crate::profile::Profile>,
}

impl Relay {
    /// The service; `policy` names the relay-policy plugin that decides on deposits.
    #[allow(clippy::too_many_arguments)] // the handles it is wired from, once, in `Node::start`
    pub fn new(
        db: Db,
        vault: Vault,
        outbound: Outbound,
        identity: Arc<Identity>,
        peers: Peers,
        host: PluginHost,
        contacts: Contacts,
        connectivity: crate::connectivity::Connectivity,
        policy: String,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                vault,
                outbound,
                identity,
                peers,
                host,
                contacts,
                connectivity,
                policy,
                deposits: RateLimiter::new(DEPOSIT_BURST, DEPOSITS_PER_SECOND),
                cards: RateLimiter::per_minute(CARD_BURST, CARDS_PER_MINUTE),
                avatars: RateLimiter::per_minute(AVATAR_BURST, AVATARS_PER_MINUTE),
                redesignate: Notify::new(),
                held: Notify::new(),
                cards_sent: Mutex::new(HashMap::new()),
                telling: Mutex::new(HashMap::new()),
                told: Mutex::new(HashSet::new()),
                told_wake: Notify::new(),
                profile: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Answers and follows profile pictures through `profile` from now on.
    pub fn set_profile(&self, profile: crate::profile::Profile) {
        let _ = self.inner.profile.set(profile);
    }

    /// Starts the sweeper and the designation loop.
    pub fn spawn(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                // Sleep until the first holding expires, or something new is held.
                let wait = match this.inner.db.relay_next_expiry().await {
                    Ok(Some(at)) => Timestamp::now().until(at).min(SWEEP_AT_LEAST_EVERY),
                    Ok(None) => SWEEP_AT_LEAST_EVERY,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the relay mailbox");
                        Duration::from_secs(60)
                    }
                };
                if !wait.is_zero()
                    && tokio::time::timeout(wait, this.inner.held.notified())
                        .await
                        .is_ok()
                {
                    continue;
                }
                match this.inner.db.relay_expire(Timestamp::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(envelopes = n, "expired relayed envelopes"),
                    Err(e) => tracing::warn!(error = %e, "cannot sweep the relay mailbox"),
                }
            }
        });
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = this.inner.redesignate.notified() => {
                        // Let a burst of connections settle first.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    () = tokio::time::sleep(DESIGNATE_EVERY) => {}
                }
                if let Err(e) = this.designate().await {
                    tracing::debug!(error = %e, "relay designation failed");
                }
            }
        });
    }

    /// A contact's device is connected and identified: tell it our current card and
    /// reconsider our relays.
    pub async fn contact_ready(&self, user: UserId) {
        self.inner.redesignate.notify_one();
        if let Some(profile) = self.inner.profile.get() {
            profile.contact_ready(user);
        }
        let Some(card) = self.current_card().await else {
            return;
        };
        let already = self
            .lock_sent()
            .get(&user)
            .is_some_and(|t| *t >= card.issued_at());
        if already {
            return;
        }
        // To every connected device of the contact: one that was just revoked would take it
        // and tell no other (its sync is refused), and the contact's commits follow its
        // latest card of this user.
        let payload = wire::encode(&RelayRequest::Card(card.to_bytes()));
        let mut taken = false;
        for peer in self.inner.peers.connected_devices_of(&user) {
            let call =
                self.inner
                    .outbound
                    .request(peer, Protocol::Relay, payload.clone(), Vec::new());
            match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
                Ok(Ok(bytes)) => match wire::decode(&bytes, Protocol::Relay.max_response()) {
                    Ok(RelayResponse::Ok) => taken = true,
                    Ok(other) => {
                        tracing::debug!(%user, %peer, ?other, "contact did not take our card");
                    }
                    Err(e) => tracing::debug!(%user, %peer, error = %e, "unreadable answer"),
                },
                Ok(Err(e)) => tracing::debug!(%user, %peer, error = %e, "cannot send our card"),
                Err(_) => tracing::debug!(%user, %peer, "sending our card timed out"),
            }
        }
        if taken {
            self.lock_sent().insert(user, card.issued_at());
        }
    }

    /// Tells `user`'s connected devices that mail waits here, once at a time: what arrives
    /// while they are being told makes one more round.
    fn tell_waiting(&self, user: UserId) {
        {
            let mut telling = self.lock_telling();
            if let Some(again) = telling.get_mut(&user) {
                *again = true;
                return;
            }
            telling.insert(user, false);
        }
        let this = self.clone();
        tokio::spawn(async move {
            let payload = wire::encode(&RelayRequest::Waiting);
            loop {
                let devices: Vec<PeerId> = this
                    .inner
                    .peers
                    .devices_of(&user)
                    .into_iter()
                    .filter(|e| e.connected)
                    .map(|e| e.peer_id)
                    .collect();
                for peer in devices {
                    let call = this.inner.outbound.request(
                        peer,
                        Protocol::Relay,
                        payload.clone(),
                        Vec::new(),
                    );
                    // A device of an older version refuses what it does not know; it fetches
                    // every minute anyway.
                    let _ = tokio::time::timeout(REQUEST_TIMEOUT, call).await;
                }
                let mut telling = this.lock_telling();
                match telling.get_mut(&user) {
                    Some(again) if *again => *again = false,
                    _ => {
                        telling.remove(&user);
                        return;
                    }
                }
            }
        });
    }

    /// The contacts whose node said mail waits there for this user, once some did.
    pub async fn told_waiting(&self) -> Vec<UserId> {
        loop {
            let told: Vec<UserId> = self.lock_told().drain().collect();
            if !told.is_empty() {
                return told;
            }
            self.inner.told_wake.notified().await;
        }
    }

    fn lock_telling(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, bool>> {
        self.inner.telling.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_told(&self) -> std::sync::MutexGuard<'_, HashSet<UserId>> {
        self.inner.told.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_sent(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Timestamp>> {
        self.inner
            .cards_sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// This user's current card (see `Contacts::my_card`), if this device has one.
    async fn current_card(&self) -> Option<ContactCard> {
        match self.inner.contacts.my_card().await {
            Ok(card) => Some(card),
            Err(e) => {
                tracing::debug!(error = %e, "no contact card to send yet");
                None
            }
        }
    }

    /// The relay-policy plugin named in the configuration, if it is enabled.
    /// The relay-policy plugin in force: its name, its state (`None`: not installed) and the
    /// configuration it decides with (its quotas and longest hold).
    pub fn policy_in_force(
        &self,
    ) -> (
        String,
        Option<volli_plugin_host::PluginState>,
        serde_json::Map<String, serde_json::Value>,
    ) {
        let name = self.inner.policy.clone();
        let state = self.inner.host.info(&name).map(|i| i.state);
        let config = self.inner.host.config(&name).unwrap_or_default();
        (name, state, config)
    }

    fn policy(&self) -> Option<volli_plugin_host::RelayPolicyPlugin> {
        self.inner
            .host
            .relay_policies()
            .into_iter()
            .find(|p| p.name() == self.inner.policy)
    }

    /// `user` is no longer a contact: nothing is held for or from it any more, and relays
    /// are chosen again (it may have been one).
    pub async fn forget(&self, user: UserId) {
        match self.inner.db.relay_forget(&user.to_string()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(envelopes = n, "dropped what was held for a removed contact"),
            Err(e) => tracing::warn!(error = %e, "cannot drop what was held for a removed contact"),
        }
        self.lock_sent().remove(&user);
        self.inner.redesignate.notify_one();
    }

    /// Chooses this user's relays among its contacts and tells the contacts if they changed.
    pub async fn designate(&self) -> Result<Vec<UserId>, String> {
        let Some(policy) = self.policy() else {
            return Ok(Vec::new());
        };
        let contacts = self
            .inner
            .vault
            .contacts()
            .await
            .map_err(|e| e.to_string())?;
        let current: Vec<String> = self
            .inner
            .db
            .designated_relays()
            .await
            .map_err(|e| e.to_string())?;
        let candidates: Vec<RelayCandidate> = contacts
            .iter()
            .map(|c| {
                let devices = self.inner.peers.devices_of(&c.user_id);
                RelayCandidate {
                    user_id: c.user_id.to_string(),
                    online: devices.iter().any(|d| d.connected),
                    rtt_ms: devices
                        .iter()
                        .filter_map(|d| d.rtt)
                        .min()
                        .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
                }
            })
            .collect();
        let online: HashSet<&str> = candidates
            .iter()
            .filter(|c| c.online)
            .map(|c| c.user_id.as_str())
            .collect();
        let ranked = policy
            .choose_relays(
                &candidates,
                u32::try_from(candidates.len()).unwrap_or(u32::MAX),
            )
            .await
            .map_err(|e| e.to_string())?;
        // Relays already designated come first, so a newly met contact with a better rank
        // does not replace one that still serves (every change is a new card for everyone).
        let ranked = current
            .iter()
            .filter(|u| ranked.contains(u))
            .cloned()
            .chain(ranked.iter().filter(|u| !current.contains(u)).cloned());
        let mut chosen = Vec::new();
        for user in ranked {
            if chosen.len() == WANTED_RELAYS {
                break;
            }
            let Ok(id) = UserId::from_str(&user) else {
                continue;
            };
            if !contacts.iter().any(|c| c.user_id == id) || chosen.contains(&user) {
                continue;
            }
            if online.contains(user.as_str()) {
                if let Ok(RelayResponse::Ok) = self.request(id, RelayRequest::Volunteer).await {
                    chosen.push(user);
                }
            } else if current.contains(&user) {
                // Agreed before and offline now: keep it rather than churn the card.
                chosen.push(user);
            }
        }
        if chosen != current {
            self.inner
                .db
                .set_designated_relays(&chosen)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(relays = ?chosen, "relays designated");
            for c in &contacts {
                if self.inner.peers.user_connected(&c.user_id) {
                    let this = self.clone();
                    let user = c.user_id;
                    tokio::spawn(async move { this.contact_ready(user).await });
                }
            }
        }
        Ok(chosen.iter().filter_map(|u| u.parse().ok()).collect())
    }

    /// Sends a relay request to any device of contact `user`, connected ones first.
    pub async fn request(
        &self,
        user: UserId,
        request: RelayRequest,
    ) -> Result<RelayResponse, String> {
        let contact = self
            .inner
            .vault
            .contact(user)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("not a contact")?;
        let payload = wire::encode(&request);
        let outbound = &self.inner.outbound;
        outbound
            .ask_any(&contact.devices, false, |peer, addrs| {
                outbound.call(
                    peer,
                    Protocol::Relay,
                    payload.clone(),
                    addrs,
                    REQUEST_TIMEOUT,
                )
            })
            .await
    }

    /// Deposits `envelope` for `recipient` at up to [`WANTED_RELAYS`] of the relays its
    /// card lists. Returns how many hold it. This node never counts as a relay for its own
    /// messages: it already holds them in its outbox, and a copy here reaches the recipient
    /// only when the two are online together, when direct delivery works anyway.
    pub async fn deposit(
        &self,
        recipient_card: &ContactCard,
        envelope: &[u8],
        ttl: Duration,
    ) -> usize {
        let me = self.inner.identity.user_id();
        let ttl_secs = u32::try_from(ttl.min(MAX_TTL).as_secs()).unwrap_or(u32::MAX);
        let ticket = recipient_card.to_bytes();
        let mut held = 0;
        // All at once: an unreachable relay costs its timeout once, not once per relay.
        let relays = recipient_card.relays().iter().filter(|r| **r != me);
        let deposits = relays.take(WANTED_RELAYS).map(|relay| {
            let request = RelayRequest::Deposit {
                envelope: envelope.to_vec(),
                ticket: ticket.clone(),
                ttl_secs,
            };
            async move { (relay, self.request(*relay, request).await) }
        });
        for (relay, answer) in futures::future::join_all(deposits).await {
            match answer {
                Ok(RelayResponse::Held { .. }) => held += 1,
                Ok(other) => tracing::debug!(%relay, ?other, "relay refused a deposit"),
                Err(e) => tracing::debug!(%relay, error = %e, "relay unreachable"),
            }
        }
        held
    }

    /// What the mailbox holds.
    pub async fn stats(&self) -> Result<volli_store::RelayStats, volli_store::StoreError> {
        self.inner.db.relay_stats().await
    }

    /// Answers a `/volli/relay/1` request from `peer`.
    pub async fn handle(&self, peer: PeerId, payload: &[u8]) -> Vec<u8> {
        wire::encode(&self.answer(peer, payload).await)
    }

    async fn answer(&self, peer: PeerId, payload: &[u8]) -> RelayResponse {
        let Ok(request) = wire::decode::<RelayRequest>(payload, Protocol::Relay.max_request())
        else {
            return RelayResponse::Refused("malformed relay request".into());
        };
        // No waiting for a hello: our own side always says hello before asking. Only a
        // device its user's latest card lists is served: a revoked device with a valid
        // certificate fetches no mail. The user's own devices may ask only whether this node
        // relays connections for them.
        if matches!(request, RelayRequest::CircuitOffer)
            && (self.inner.peers.contact_of(&peer).is_some()
                || self.inner.peers.is_own_device(&peer))
        {
            return self.inner.connectivity.offer();
        }
        // Profile pictures: for contacts' current devices and the user's own devices.
        if let RelayRequest::Avatar { .. } | RelayRequest::AvatarChanged { .. } = &request {
            let Some(user) = self.inner.peers.contact_of(&peer).or_else(|| {
                self.inner
                    .peers
                    .is_own_device(&peer)
                    .then(|| self.inner.identity.user_id())
            }) else {
                return RelayResponse::Refused(
                    "this node serves its contacts' current devices only (say hello first)".into(),
                );
            };
            let Some(profile) = self.inner.profile.get() else {
                return RelayResponse::Refused("not ready".into());
            };
            // Each answer may carry 256 KiB: as many as cards per contact.
            if let Err(wait) = self.inner.avatars.check(user) {
                return RelayResponse::RateLimited(u32::try_from(wait).unwrap_or(u32::MAX));
            }
            return match request {
                RelayRequest::Avatar { have } => profile.answer(have).await,
                RelayRequest::AvatarChanged { hash } => {
                    profile.told_changed(user, peer, hash);
                    RelayResponse::Ok
                }
                _ => RelayResponse::Refused("unexpected".into()),
            };
        }
        // A contact's newer card may come from a device the card it replaces does not list
        // yet (a device just paired introduces itself): the card is signed by the user, so
        // who hands it over does not matter, as long as it proved it is that user's device.
        if let RelayRequest::Card(bytes) = &request
            && let Some(user) = self.inner.peers.user_of(&peer)
            && self.inner.peers.is_contact(&user)
            && self.inner.peers.contact_of(&peer).is_none()
        {
            return self.take_card(user, bytes).await;
        }
        let Some(user) = self.inner.peers.contact_of(&peer) else {
            return RelayResponse::Refused(
                "this node serves its contacts' current devices only (say hello first)".into(),
            );
        };
        match request {
            RelayRequest::Deposit {
                envelope,
                ticket,
                ttl_secs,
            } => {
                self.accept_deposit(user, &envelope, &ticket, ttl_secs)
                    .await
            }
            RelayRequest::Fetch { limit } => match self.envelopes(user, peer, limit, None).await {
                Ok((envelopes, next)) => RelayResponse::Envelopes {
                    envelopes,
                    more: next.is_some(),
                },
                Err(refused) => refused,
            },
            RelayRequest::FetchAfter { limit, after } => {
                match self.envelopes(user, peer, limit, after).await {
                    Ok((envelopes, next)) => RelayResponse::EnvelopePage { envelopes, next },
                    Err(refused) => refused,
                }
            }
            RelayRequest::Ack { ids } => {
                let ids: Vec<[u8; 32]> = ids.into_iter().take(1024).collect();
                match self
                    .inner
                    .db
                    .relay_ack(&user.to_string(), &peer.to_string(), &ids)
                    .await
                {
                    Ok(_) => RelayResponse::Ok,
                    Err(e) => RelayResponse::Refused(format!("storage: {e}")),
                }
            }
            RelayRequest::Volunteer => {
                let request = DepositRequest {
                    depositor: user.to_string(),
                    recipient: user.to_string(),
                    size: 0,
                    ttl_secs: u32::try_from(MAX_TTL.as_secs()).unwrap_or(u32::MAX),
                    depositor_is_contact: true,
                    recipient_is_contact: true,
                    depositor_held: Usage::default(),
                    recipient_held: Usage::default(),
                    total_held: Usage::default(),
                };
                match self.decide(&request).await {
                    Decision::Accept { .. } => RelayResponse::Ok,
                    Decision::Reject { reason } => RelayResponse::Refused(reason),
                }
            }
            RelayRequest::Card(bytes) => self.take_card(user, &bytes).await,
            RelayRequest::CircuitOffer => self.inner.connectivity.offer(),
            RelayRequest::Waiting => {
                self.lock_told().insert(user);
                self.inner.told_wake.notify_one();
                RelayResponse::Ok
            }
            RelayRequest::Avatar { .. } | RelayRequest::AvatarChanged { .. } => {
                RelayResponse::Refused("answered above".into())
            }
            RelayRequest::DepositReceipts { receipts } => {
                self.accept_receipts(user, receipts).await
            }
            RelayRequest::FetchReceipts { limit } => match self.receipts(user, limit, None).await {
                Ok((receipts, next)) => RelayResponse::Receipts {
                    receipts,
                    more: next.is_some(),
                },
                Err(refused) => refused,
            },
            RelayRequest::FetchReceiptsAfter { limit, after } => {
                match self.receipts(user, limit, after).await {
                    Ok((receipts, next)) => RelayResponse::ReceiptPage { receipts, next },
                    Err(refused) => refused,
                }
            }
            RelayRequest::AckReceipts { ids } => {
                let ids: Vec<[u8; 16]> = ids.iter().take(1024).map(|id| *id.as_bytes()).collect();
                match self
                    .inner
                    .db
                    .relay_ack_receipts(&user.to_string(), &ids)
                    .await
                {
                    Ok(()) => RelayResponse::Ok,
                    Err(e) => RelayResponse::Refused(format!("storage: {e}")),
                }
            }
        }
    }

    /// Takes `user`'s newer card (signed by `user`), handed over by one of its devices.
    async fn take_card(&self, user: UserId, bytes: &[u8]) -> RelayResponse {
        let Ok(card) = ContactCard::from_bytes(bytes) else {
            return RelayResponse::Refused("invalid contact card".into());
        };
        if card.user_id() != user {
            return RelayResponse::Refused("a card may only be sent by its user".into());
        }
        let known = match self.inner.vault.contact(user).await {
            Ok(Some(c)) => c.card.issued_at(),
            Ok(None) => return RelayResponse::Refused("not a contact".into()),
            Err(e) => return RelayResponse::Refused(format!("storage: {e}")),
        };
        if card.issued_at() <= known {
            return RelayResponse::Ok;
        }
        if let Err(wait) = self.inner.cards.check(user) {
            return RelayResponse::RateLimited(u32::try_from(wait).unwrap_or(u32::MAX));
        }
        let renamed = match self.inner.vault.contact(user).await {
            Ok(Some(c)) => c.display_name != card.name(),
            _ => false,
        };
        match self.inner.vault.update_contact_card(card).await {
            Ok(newer) => {
                if newer {
                    // Its devices may have changed: trust the ones it lists now.
                    self.inner.contacts.refresh().await;
                    if renamed && let Some(profile) = self.inner.profile.get() {
                        profile.tell_contact_changed(user).await;
                    }
                }
                RelayResponse::Ok
            }
            Err(e) => RelayResponse::Refused(format!("storage: {e}")),
        }
    }

    /// A page of the envelopes held for `user` that its device `peer` may take, after
    /// `after`; and where the next starts.
    async fn envelopes(
        &self,
        user: UserId,
        peer: PeerId,
        limit: u16,
        after: Option<PageCursor>,
    ) -> Result<(Vec<Vec<u8>>, Option<PageCursor>), RelayResponse> {
        let limit = u32::from(limit.clamp(1, FETCH_BATCH));
        let after = after.as_ref().map(|c| (c.at, c.id.as_slice()));
        match self
            .inner
            .db
            .relay_for(
                &user.to_string(),
                &peer.to_string(),
                Timestamp::now(),
                limit,
                FETCH_BYTES,
                after,
            )
            .await
        {
            Ok((held, next)) => Ok((
                held.into_iter().map(|h| h.envelope).collect(),
                next.map(|(at, id)| PageCursor { at, id }),
            )),
            Err(e) => Err(RelayResponse::Refused(format!("storage: {e}"))),
        }
    }

    /// A page of the receipts held for `user`'s messages, after `after`.
    async fn receipts(
        &self,
        user: UserId,
        limit: u16,
        after: Option<PageCursor>,
    ) -> Result<(Vec<volli_core::Receipt>, Option<PageCursor>), RelayResponse> {
        let limit = u32::from(limit.clamp(1, FETCH_BATCH));
        let after = after.as_ref().map(|c| (c.at, c.id.as_slice()));
        match self
            .inner
            .db
            .relay_receipts_for(&user.to_string(), Timestamp::now(), limit, after)
            .await
        {
            Ok((held, next)) => Ok((
                held.iter()
                    .filter_map(|b| wire::decode(b, MAX_RECEIPT_LEN).ok())
                    .collect(),
                next.map(|(at, id)| PageCursor { at, id }),
            )),
            Err(e) => Err(RelayResponse::Refused(format!("storage: {e}"))),
        }
    }

    /// Holds receipts that `recipient` signed, for their senders (contacts of this node),
    /// until the senders fetch them. Only the recipient's own, valid receipts are kept, at
    /// most [`MAX_RECEIPTS_PER_SENDER`] per sender.
    async fn accept_receipts(
        &self,
        recipient: UserId,
        receipts: Vec<volli_core::Receipt>,
    ) -> RelayResponse {
        if let Err(wait) = self.inner.deposits.check(recipient) {
            return RelayResponse::RateLimited(u32::try_from(wait).unwrap_or(u32::MAX));
        }
        let receipts = receipts
            .into_iter()
            .take(1024)
            .filter(|r| r.recipient == recipient)
            .collect();
        match self.keep_receipts(receipts).await {
            Ok(()) => RelayResponse::Ok,
            Err(e) => RelayResponse::Refused(format!("storage: {e}")),
        }
    }

    /// Holds receipts of group messages this node carried to members its contacts do not
    /// know, for their senders (who fetch them as from a relay, and are told at once).
    pub async fn hold_receipts(&self, receipts: Vec<volli_core::Receipt>) {
        if let Err(e) = self.keep_receipts(receipts).await {
            tracing::warn!(error = %e, "cannot hold a carried message's receipt");
        }
    }

    /// Keeps the receipts that verify and are for contacts' messages (up to each sender's
    /// limit) and tells their senders.
    async fn keep_receipts(
        &self,
        receipts: Vec<volli_core::Receipt>,
    ) -> Result<(), volli_store::StoreError> {
        let mut keep = Vec::new();
        // Receipts held per sender, counted once per request and kept up to date as this
        // request adds to them.
        let mut held: HashMap<UserId, u64> = HashMap::new();
        for r in receipts {
            if r.verify(r.id, r.sender, r.recipient).is_err() || !self.is_contact(r.sender) {
                continue;
            }
            let sender = r.sender.to_string();
            let count = match held.get_mut(&r.sender) {
                Some(n) => n,
                None => match self.inner.db.relay_receipt_count(&sender).await {
                    Ok(n) => held.entry(r.sender).or_insert(n),
                    Err(_) => continue,
                },
            };
            if *count >= MAX_RECEIPTS_PER_SENDER {
                continue;
            }
            *count += 1;
            keep.push((*r.id.as_bytes(), sender, wire::encode(&r)));
        }
        let now = Timestamp::now();
        let senders: HashSet<UserId> = keep
            .iter()
            .filter_map(|(_, sender, _)| sender.parse().ok())
            .collect();
        self.inner
            .db
            .relay_hold_receipts(&keep, now, now.saturating_add(MAX_TTL))
            .await?;
        self.inner.held.notify_one();
        for sender in senders {
            self.tell_waiting(sender);
        }
        Ok(())
    }

    async fn accept_deposit(
        &self,
        depositor: UserId,
        envelope: &[u8],
        ticket: &[u8],
        ttl_secs: u32,
    ) -> RelayResponse {
        let Ok(parsed) = Mail::from_bytes(envelope) else {
            return RelayResponse::Refused("malformed envelope".into());
        };
        let recipient = parsed.recipient();
        let device = parsed.device().map(|d| d.to_string());
        let me = self.inner.identity.user_id();
        match ContactCard::from_bytes(ticket) {
            Ok(card) if card.user_id() == recipient && card.relays().contains(&me) => {}
            _ => {
                return RelayResponse::Refused(
                    "the recipient has not designated this node as a relay".into(),
                );
            }
        }
        if !self.inner.peers.is_contact(&recipient) {
            return RelayResponse::Refused("the recipient is not a contact of this node".into());
        }
        if let Err(wait) = self.inner.deposits.check(depositor) {
            return RelayResponse::RateLimited(u32::try_from(wait).unwrap_or(u32::MAX));
        }
        let id = parsed.digest();
        if let Ok(Some(expires_at)) = self.inner.db.relay_expiry(&id).await {
            return RelayResponse::Held { expires_at };
        }
        let (by_depositor, by_recipient, total) = match self
            .inner
            .db
            .relay_usage(&depositor.to_string(), &recipient.to_string())
            .await
        {
            Ok(u) => u,
            Err(e) => return RelayResponse::Refused(format!("storage: {e}")),
        };
        let request = DepositRequest {
            depositor: depositor.to_string(),
            recipient: recipient.to_string(),
            size: envelope.len() as u64,
            ttl_secs: ttl_secs.min(u32::try_from(MAX_TTL.as_secs()).unwrap_or(u32::MAX)),
            depositor_is_contact: true,
            recipient_is_contact: true,
            depositor_held: usage(by_depositor),
            recipient_held: usage(by_recipient),
            total_held: usage(total),
        };
        let ttl = match self.decide(&request).await {
            Decision::Accept { ttl_secs } => Duration::from_secs(u64::from(ttl_secs)).min(MAX_TTL),
            Decision::Reject { reason } => return RelayResponse::Refused(reason),
        };
        let now = Timestamp::now();
        let expires_at = now.saturating_add(ttl);
        match self
            .inner
            .db
            .relay_hold(
                &id,
                &recipient.to_string(),
                device.as_deref(),
                &depositor.to_string(),
                envelope,
                now,
                expires_at,
            )
            .await
        {
            Ok(()) => {
                self.inner.held.notify_one();
                self.tell_waiting(recipient);
                RelayResponse::Held { expires_at }
            }
            Err(e) => RelayResponse::Refused(format!("storage: {e}")),
        }
    }

    async fn decide(&self, request: &DepositRequest) -> Decision {
        let Some(policy) = self.policy() else {
            return Decision::Reject {
                reason: format!("the relay policy {} is not running", self.inner.policy),
            };
        };
        match policy.decide(request).await {
            Ok(d) => d,
            Err(e) => Decision::Reject {
                reason: format!("relay policy {} failed: {e}", policy.name()),
            },
        }
    }

    fn is_contact(&self, user: UserId) -> bool {
        self.inner.peers.is_contact(&user)
    }
}

fn usage(h: Held) -> Usage {
    Usage {
        envelopes: u32::try_from(h.envelopes).unwrap_or(u32::MAX),
        bytes: h.bytes,
    }
}
