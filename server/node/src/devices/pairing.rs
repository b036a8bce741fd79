//! Pairing over `/volli/pair/1` (see `volli_core::pairing` for the cryptography).
//!
//! **Existing device** (an admin device): `create` opens a session — a link, a short code,
//! an expiry, the permissions the new device will get — kept in memory only (a restart
//! forgets it: nothing half-done survives). A new node starts the exchange (one start per
//! session: a second one, like a wrong code, burns it), confirms, and then waits; the user
//! sees `pairing.request` with the check code and approves or rejects. On approval the new
//! device is added to the `devices` document, a new contact card goes out to the contacts,
//! and the bundle (certificate, the keys its permissions allow, the contacts/settings/devices
//! documents) is sealed to the new node.
//!
//! **New node**: `join` refuses when the node already has contacts or messages, finds the
//! device (a link says where; a code is looked for on the LAN and in the DHT under its
//! nameplate), runs the exchange and returns the check code; a background task waits for the
//! decision, commits the bundle atomically (`Identity::commit_joined`) and restarts the node
//! as the user's new device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use multiaddr::Multiaddr;
use tokio::sync::Notify;
use volli_core::pairing::{
    Exchange, PairingCode, PairingLink, ReplyKey, SessionRef, SharedKey, Side, nameplate_key,
};
use volli_core::wire::{self, PairBundle, PairRequest, PairResponse};
use volli_core::{DeviceCertificate, PeerId, Permissions, Timestamp, UserSecret};
use volli_net::Protocol;
use volli_store::vault::DeviceRecord;
use volli_store::{DocId, VaultVersion};

use super::{DeviceError, Devices};
use crate::events::Event;
use crate::identity::Joined;
use crate::limits::RateLimiter;

/// Shortest lifetime of a pairing session.
const MIN_TTL: Duration = Duration::from_secs(60);
/// Longest lifetime.
const MAX_TTL: Duration = Duration::from_secs(3600);
/// Sessions open at once at most.
const MAX_SESSIONS: usize = 16;
/// How long one `Wait` is held before answering `Pending`.
const WAIT: Duration = Duration::from_secs(20);
/// How long the new node waits for an answer to a request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// What of the vault a pairing bundle carries at most; the rest comes by sync.
const BUNDLE_DOCS_BYTES: usize = 4 << 20;
/// Starts by code a session takes in all: each is one guess at its 33 bits, so a guesser's
/// chance stays below 2⁻²⁸. Past it the code stops working; the link still does.
const MAX_CODE_GUESSES: u32 = 32;
/// Exchanges a session runs at once: a stranger's unfinished start cannot hold it.
const MAX_EXCHANGES: usize = 8;
/// How long a started exchange waits for its confirmation.
const EXCHANGE_TTL: Duration = Duration::from_secs(30);
/// Starts one peer may make on one session.
const STARTS_PER_PEER: u8 = 3;

/// A pairing offered by this (existing) device.
#[derive(Clone, Debug)]
pub struct PairingOffer {
    /// The session id (hex).
    pub id: String,
    /// The `volli://pair/…` link.
    pub link: String,
    /// The short code.
    pub code: String,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// What the new device will be allowed.
    pub permissions: Permissions,
}

/// Where a pairing request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairingState {
    /// Waiting for the user's decision.
    Pending,
    /// Approved.
    Approved,
    /// Rejected.
    Rejected,
    /// Expired before a decision.
    Expired,
}

impl PairingState {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }
}

/// A request to join, as the existing device shows it.
#[derive(Clone, Debug)]
pub struct PairingRequestView {
    /// The session id (hex).
    pub id: String,
    /// The name the new device gave.
    pub device_name: String,
    /// Its peer id.
    pub peer_id: PeerId,
    /// The code both devices show.
    pub check_code: String,
    /// Where it stands.
    pub state: PairingState,
}

/// How a new node names the pairing it joins.
#[derive(Clone, Debug)]
pub enum JoinWith {
    /// A `volli://pair/…` link.
    Link(String),
    /// A short code.
    Code(String),
}

/// A join under way, waiting for approval.
#[derive(Clone, Debug)]
pub struct Joining {
    /// The session id (hex).
    pub id: String,
    /// The code to compare with the one the existing device shows.
    pub check_code: String,
}

/// A start that waits for its joiner's confirmation. A session keeps several (one per
/// peer), so a stranger's start — a wrong guess, or one never confirmed — does not stop the
/// real device's.
struct Exchanging {
    key: Arc<SharedKey>,
    reply_key: Vec<u8>,
    device_name: String,
    until: tokio::time::Instant,
}

enum Step {
    Open,
    Pending {
        joiner: PeerId,
        key: Arc<SharedKey>,
        reply_key: Vec<u8>,
        device_name: String,
        check_code: String,
    },
    Approved {
        joiner: PeerId,
        device_name: String,
        check_code: String,
        sealed: (Vec<u8>, Vec<u8>),
    },
    Rejected {
        joiner: PeerId,
        device_name: String,
        check_code: String,
    },
}

struct Session {
    secret: [u8; 32],
    code: PairingCode,
    expires_at: Timestamp,
    permissions: Permissions,
    step: Step,
    /// Starts waiting for their confirmation, while the session is open.
    exchanges: HashMap<PeerId, Exchanging>,
    /// Starts by code so far (each one a guess).
    guesses: u32,
    /// Starts per peer so far.
    starts: HashMap<PeerId, u8>,
    decided: Arc<Notify>,
}

/// This device's pairing sessions.
pub(super) struct Sessions {
    sessions: Mutex<HashMap<[u8; 16], Session>>,
    /// Starts per peer, across sessions.
    starts: RateLimiter<PeerId>,
    /// Probes per peer: a nameplate is public, but answering is not free.
    probes: RateLimiter<PeerId>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            starts: RateLimiter::new(5, 1),
            probes: RateLimiter::new(20, 2),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_id(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

impl Devices {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 16], Session>> {
        self.inner
            .pairing
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets sessions an hour after they expired.
    pub(super) fn spawn_pairing(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let cutoff = Timestamp::from_millis(Timestamp::now().as_millis() - 3_600_000);
                this.sessions().retain(|_, s| s.expires_at > cutoff);
            }
        });
    }

    /// Opens a pairing session (on an admin device).
    pub async fn create_pairing(
        &self,
        ttl: Duration,
        permissions: Permissions,
    ) -> Result<PairingOffer, DeviceError> {
        let identity = &self.inner.identity;
        if !identity.is_admin() {
            return Err(DeviceError::NotAdmin);
        }
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(DeviceError::InvalidPairing(format!(
                "ttl_secs must be {} to {}",
                MIN_TTL.as_secs(),
                MAX_TTL.as_secs()
            )));
        }
        let mut id = [0u8; 16];
        let mut secret = [0u8; 32];
        getrandom::fill(&mut id)
            .map_err(|_| DeviceError::InvalidPairing("no randomness".into()))?;
        getrandom::fill(&mut secret)
            .map_err(|_| DeviceError::InvalidPairing("no randomness".into()))?;
        let expires_at = Timestamp::now().saturating_add(ttl);
        let addrs = self.inner.discovery.advertised_addrs().await;
        let code = {
            let mut sessions = self.sessions();
            let now = Timestamp::now();
            sessions.retain(|_, s| s.expires_at > now || !matches!(s.step, Step::Open));
            let open = sessions
                .values()
                .filter(|s| s.expires_at > now && matches!(s.step, Step::Open))
                .count();
            if open >= MAX_SESSIONS {
                return Err(DeviceError::InvalidPairing(format!(
                    "at most {MAX_SESSIONS} pairings may be open at once"
                )));
            }
            // A nameplate no open session of this device uses.
            let code = loop {
                let code = PairingCode::random()
                    .map_err(|_| DeviceError::InvalidPairing("no randomness".into()))?;
                if !sessions
                    .values()
                    .any(|s| s.code.nameplate() == code.nameplate())
                {
                    break code;
                }
            };
            sessions.insert(
                id,
                Session {
                    secret,
                    code: code.clone(),
                    expires_at,
                    permissions,
                    step: Step::Open,
                    exchanges: HashMap::new(),
                    guesses: 0,
                    starts: HashMap::new(),
                    decided: Arc::new(Notify::new()),
                },
            );
            code
        };
        // Findable by the code's nameplate in the DHT (best effort: the LAN also works).
        let net = self.inner.net.clone();
        let key = nameplate_key(code.nameplate());
        tokio::spawn(async move {
            if let Err(e) = net.dht_provide(key).await {
                tracing::debug!(error = %e, "cannot announce the pairing code in the DHT");
            }
        });
        let link = PairingLink::new(
            identity.user_id(),
            identity.peer_id(),
            &addrs,
            id,
            secret,
            expires_at,
        );
        Ok(PairingOffer {
            id: hex(&id),
            link: link.to_link(),
            code: code.to_string(),
            expires_at,
            permissions,
        })
    }

    /// Requests to join, newest first.
    pub fn pairing_requests(&self) -> Vec<PairingRequestView> {
        let now = Timestamp::now();
        let mut out: Vec<(Timestamp, PairingRequestView)> = self
            .sessions()
            .iter()
            .filter_map(|(id, s)| {
                let (joiner, name, check, state) = match &s.step {
                    Step::Pending {
                        joiner,
                        device_name,
                        check_code,
                        ..
                    } => (
                        *joiner,
                        device_name,
                        check_code,
                        if s.expires_at <= now {
                            PairingState::Expired
                        } else {
                            PairingState::Pending
                        },
                    ),
                    Step::Approved {
                        joiner,
                        device_name,
                        check_code,
                        ..
                    } => (*joiner, device_name, check_code, PairingState::Approved),
                    Step::Rejected {
                        joiner,
                        device_name,
                        check_code,
                    } => (*joiner, device_name, check_code, PairingState::Rejected),
                    _ => return None,
                };
                Some((
                    s.expires_at,
                    PairingRequestView {
                        id: hex(id),
                        device_name: name.clone(),
                        peer_id: joiner,
                        check_code: check.clone(),
                        state,
                    },
                ))
            })
            .collect();
        out.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        out.into_iter().map(|(_, v)| v).collect()
    }

    /// Approves (`true`) or rejects a request to join.
    pub async fn decide(&self, id: &str, approve: bool) -> Result<PairingRequestView, DeviceError> {
        let id = parse_id(id).ok_or(DeviceError::PairingNotFound)?;
        let (joiner, key, reply_key, device_name, check_code, permissions, decided) = {
            let mut sessions = self.sessions();
            let session = sessions.get_mut(&id).ok_or(DeviceError::PairingNotFound)?;
            if session.expires_at <= Timestamp::now() {
                return Err(DeviceError::PairingExpired);
            }
            let Step::Pending {
                joiner,
                key,
                reply_key,
                device_name,
                check_code,
            } = &session.step
            else {
                return Err(DeviceError::PairingNotPending);
            };
            let taken = (
                *joiner,
                Arc::clone(key),
                reply_key.clone(),
                device_name.clone(),
                check_code.clone(),
                session.permissions,
                Arc::clone(&session.decided),
            );
            if !approve {
                session.step = Step::Rejected {
                    joiner: taken.0,
                    device_name: taken.3.clone(),
                    check_code: taken.4.clone(),
                };
                session.decided.notify_waiters();
                return Ok(PairingRequestView {
                    id: hex(&id),
                    device_name: taken.3,
                    peer_id: taken.0,
                    check_code: taken.4,
                    state: PairingState::Rejected,
                });
            }
            taken
        };
        let sealed = self
            .bundle_for(joiner, &device_name, permissions, &key, &reply_key)
            .await?;
        if let Some(session) = self.sessions().get_mut(&id) {
            session.step = Step::Approved {
                joiner,
                device_name: device_name.clone(),
                check_code: check_code.clone(),
                sealed,
            };
        }
        decided.notify_waiters();
        self.publish_card().await;
        self.inner.events.publish(Event::DeviceAdded {
            peer_id: joiner.to_base58(),
            name: device_name.clone(),
        });
        tracing::info!(peer = %joiner, name = device_name, "device added");
        Ok(PairingRequestView {
            id: hex(&id),
            device_name,
            peer_id: joiner,
            check_code,
            state: PairingState::Approved,
        })
    }

    /// Makes the new device a device of the user and seals what it gets.
    async fn bundle_for(
        &self,
        joiner: PeerId,
        device_name: &str,
        permissions: Permissions,
        key: &SharedKey,
        reply_key: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), DeviceError> {
        let identity = &self.inner.identity;
        let user = identity.user.as_ref().ok_or(DeviceError::NotAdmin)?;
        let certificate =
            DeviceCertificate::issue(user, joiner, device_name, permissions, Timestamp::now());
        self.inner
            .vault
            .put_device(DeviceRecord {
                certificate: certificate.clone(),
                added_at: Timestamp::now(),
                revoked_at: None,
                addrs: Vec::new(),
            })
            .await?;
        let generation = self.inner.vault.key_generation(identity.user_id()).await?;
        // The devices document always; contacts and settings when they fit in one answer
        // (a user with thousands of contacts may have more): otherwise the new device pulls
        // them by sync, in parts, like the conversations.
        let (mut vault, _) = self
            .inner
            .vault
            .export_where(VaultVersion::empty(), usize::MAX, |doc| {
                *doc == DocId::Devices
            })
            .await?;
        let (rest, _) = self
            .inner
            .vault
            .export_where(VaultVersion::empty(), usize::MAX, move |doc| {
                allowed(permissions, doc) && !doc.is_chunk() && *doc != DocId::Devices
            })
            .await?;
        if vault.size() + rest.size() <= BUNDLE_DOCS_BYTES {
            vault.extend(rest);
        }
        let bundle = PairBundle {
            user: identity.user_id(),
            master: permissions
                .contains(Permissions::ADMIN)
                .then(|| *user.master_bytes()),
            kem_seeds: if permissions.contains(Permissions::MESSAGES) {
                user.keyring(generation)
                    .keys()
                    .iter()
                    .map(|k| (k.generation(), *k.seed()))
                    .collect()
            } else {
                Vec::new()
            },
            certificate,
            vault: vault.to_bytes(),
        };
        key.seal_bundle(reply_key, &wire::encode(&bundle))
            .map_err(|e| DeviceError::InvalidPairing(e.to_string()))
    }

    /// Answers `/volli/pair/1` (on the existing device).
    pub(super) async fn handle_pair(&self, peer: PeerId, payload: &[u8]) -> Vec<u8> {
        let response = match wire::decode::<PairRequest>(payload, Protocol::Pair.max_request()) {
            Ok(request) => self.answer_pair(peer, request).await,
            Err(_) => PairResponse::Refused("malformed pairing request".into()),
        };
        wire::encode(&response)
    }

    async fn answer_pair(&self, peer: PeerId, request: PairRequest) -> PairResponse {
        let now = Timestamp::now();
        match request {
            PairRequest::Probe { nameplate } => {
                if let Err(wait) = self.inner.pairing.probes.check(peer) {
                    return PairResponse::RetryLater(u32::try_from(wait).unwrap_or(u32::MAX));
                }
                PairResponse::Present(self.sessions().values().any(|s| {
                    s.code.nameplate() == nameplate
                        && s.expires_at > now
                        && matches!(s.step, Step::Open)
                        && s.guesses < MAX_CODE_GUESSES
                }))
            }
            PairRequest::Start {
                session,
                spake,
                device_name,
                reply_key,
            } => {
                if let Err(wait) = self.inner.pairing.starts.check(peer) {
                    return PairResponse::RetryLater(u32::try_from(wait).unwrap_or(u32::MAX));
                }
                let name = device_name.trim().to_owned();
                if name.is_empty() || name.len() > volli_core::cert::MAX_DEVICE_NAME_LEN {
                    return PairResponse::Refused("a device name is 1 to 64 bytes".into());
                }
                self.start(peer, session, &spake, name, reply_key, now)
            }
            PairRequest::Confirm {
                session,
                confirmation,
            } => self.confirm(peer, session, &confirmation, now),
            PairRequest::Wait { session } => self.wait(peer, session).await,
        }
    }

    fn start(
        &self,
        peer: PeerId,
        session: SessionRef,
        spake: &[u8],
        device_name: String,
        reply_key: Vec<u8>,
        now: Timestamp,
    ) -> PairResponse {
        let me = self.inner.identity.peer_id();
        let mut sessions = self.sessions();
        let found = sessions.iter_mut().find(|(id, s)| match session {
            SessionRef::Link(link) => **id == link,
            SessionRef::Nameplate(n) => s.code.nameplate() == n && matches!(s.step, Step::Open),
        });
        let Some((id, s)) = found else {
            return PairResponse::Refused("no such pairing".into());
        };
        let id = *id;
        if s.expires_at <= now {
            return PairResponse::Expired;
        }
        if !matches!(s.step, Step::Open) {
            return PairResponse::Used;
        }
        let by_code = matches!(session, SessionRef::Nameplate(_));
        if by_code && s.guesses >= MAX_CODE_GUESSES {
            return PairResponse::Refused(
                "this code was tried too often; use the pairing link, or make a new code".into(),
            );
        }
        let started = s.starts.entry(peer).or_default();
        if *started >= STARTS_PER_PEER {
            return PairResponse::Refused("too many attempts from this device".into());
        }
        let clock = tokio::time::Instant::now();
        s.exchanges.retain(|_, e| e.until > clock);
        if s.exchanges.len() >= MAX_EXCHANGES && !s.exchanges.contains_key(&peer) {
            return PairResponse::RetryLater(1);
        }
        *started += 1;
        if by_code {
            s.guesses += 1;
        }
        let password = match session {
            SessionRef::Link(_) => s.secret.to_vec(),
            SessionRef::Nameplate(_) => s.code.password(),
        };
        let exchange = Exchange::start(Side::Device, &password, session, me, peer);
        let message = exchange.message().to_vec();
        let extra = [reply_key.as_slice(), device_name.as_bytes()].concat();
        let Ok(key) = exchange.finish(spake, &extra) else {
            return PairResponse::Refused("not a SPAKE2 message".into());
        };
        let confirmation = key.confirmation(Side::Device);
        let until = clock + EXCHANGE_TTL;
        s.exchanges.insert(
            peer,
            Exchanging {
                key: Arc::new(key),
                reply_key,
                device_name,
                until,
            },
        );
        // A joiner whose code was wrong finds out from our confirmation and never sends its
        // own: the attempt ends when the exchange runs out, and the user hears of it.
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(until).await;
            this.exchange_ran_out(id, peer, until);
        });
        PairResponse::Started {
            session: id,
            spake: message,
            confirmation,
        }
    }

    /// Ends the exchange `peer` started on session `id` (the one that runs out at `until`)
    /// if it is still waiting for its confirmation, and tells the user.
    fn exchange_ran_out(&self, id: [u8; 16], peer: PeerId, until: tokio::time::Instant) {
        let left = {
            let mut sessions = self.sessions();
            let Some(s) = sessions.get_mut(&id) else {
                return;
            };
            if s.exchanges.get(&peer).is_none_or(|e| e.until != until) {
                return;
            }
            s.exchanges.remove(&peer);
            MAX_CODE_GUESSES.saturating_sub(s.guesses)
        };
        self.attempt_failed(id, peer, left);
    }

    fn attempt_failed(&self, id: [u8; 16], peer: PeerId, left: u32) {
        tracing::warn!(%peer, "a pairing attempt with a wrong code");
        self.inner.events.publish(Event::PairingAttemptFailed {
            id: hex(&id),
            peer_id: peer.to_base58(),
            reason: format!(
                "a device tried a wrong code; the pairing stays open ({left} tries of the code \
                 left)"
            ),
        });
    }

    fn confirm(
        &self,
        peer: PeerId,
        id: [u8; 16],
        confirmation: &[u8; 32],
        now: Timestamp,
    ) -> PairResponse {
        let mut sessions = self.sessions();
        let Some(s) = sessions.get_mut(&id) else {
            return PairResponse::Refused("no such pairing".into());
        };
        if s.expires_at <= now {
            return PairResponse::Expired;
        }
        if !matches!(s.step, Step::Open) {
            return PairResponse::Used;
        }
        let Some(exchange) = s.exchanges.remove(&peer) else {
            return PairResponse::Refused("no exchange started by this device".into());
        };
        if exchange.until <= tokio::time::Instant::now() {
            return PairResponse::Expired;
        }
        if exchange.key.check(Side::Joiner, confirmation).is_err() {
            // Wrong words (or another user's session behind the same nameplate): this
            // attempt ends, the session stays open for the device that has the code.
            let left = MAX_CODE_GUESSES.saturating_sub(s.guesses);
            drop(sessions);
            self.attempt_failed(id, peer, left);
            return PairResponse::Refused("the pairing code is wrong".into());
        }
        let check_code = exchange.key.check_code();
        let event = Event::PairingRequest {
            id: hex(&id),
            device_name: exchange.device_name.clone(),
            peer_id: peer.to_base58(),
            check_code: check_code.clone(),
        };
        s.exchanges.clear();
        s.step = Step::Pending {
            joiner: peer,
            key: exchange.key,
            reply_key: exchange.reply_key,
            device_name: exchange.device_name,
            check_code,
        };
        drop(sessions);
        self.inner.events.publish(event);
        PairResponse::Confirmed
    }

    async fn wait(&self, peer: PeerId, id: [u8; 16]) -> PairResponse {
        let decided = {
            let sessions = self.sessions();
            let Some(s) = sessions.get(&id) else {
                return PairResponse::Refused("no such pairing".into());
            };
            match &s.step {
                Step::Pending { joiner, .. } if *joiner == peer => Arc::clone(&s.decided),
                Step::Approved { joiner, sealed, .. } if *joiner == peer => {
                    return PairResponse::Approved {
                        encapped: sealed.0.clone(),
                        bundle: sealed.1.clone(),
                    };
                }
                Step::Rejected { joiner, .. } if *joiner == peer => return PairResponse::Rejected,
                _ => return PairResponse::Used,
            }
        };
        let _ = tokio::time::timeout(WAIT, decided.notified()).await;
        let sessions = self.sessions();
        match sessions.get(&id).map(|s| (&s.step, s.expires_at)) {
            Some((Step::Approved { sealed, .. }, _)) => PairResponse::Approved {
                encapped: sealed.0.clone(),
                bundle: sealed.1.clone(),
            },
            Some((Step::Rejected { .. }, _)) => PairResponse::Rejected,
            Some((Step::Pending { .. }, expires)) if expires <= Timestamp::now() => {
                PairResponse::Expired
            }
            Some((Step::Pending { .. }, _)) => PairResponse::Pending,
            _ => PairResponse::Used,
        }
    }

    /// Joins the user of the device the link or code names (on the new node). Returns once
    /// the exchange is confirmed; the rest happens in the background.
    pub async fn join(&self, with: JoinWith, device_name: &str) -> Result<Joining, DeviceError> {
        if self.node_holds_data().await? {
            return Err(DeviceError::NodeNotEmpty);
        }
        let (session, password, device, addrs) = match &with {
            JoinWith::Link(text) => {
                let link = PairingLink::parse(text)
                    .map_err(|_| DeviceError::InvalidPairing("not a valid pairing link".into()))?;
                if link.expires_at() <= Timestamp::now() {
                    return Err(DeviceError::PairingExpired);
                }
                (link.session(), link.password(), link.peer(), link.addrs())
            }
            JoinWith::Code(text) => {
                let code = PairingCode::parse(text).map_err(|_| {
                    DeviceError::InvalidPairing(
                        "not a valid pairing code (like 427-crossbow-nebula-orbit)".into(),
                    )
                })?;
                let (peer, addrs) = self.find_by_code(code.nameplate()).await?;
                (code.session(), code.password(), peer, addrs)
            }
        };
        let me = self.inner.identity.peer_id();
        if device == me {
            return Err(DeviceError::InvalidPairing(
                "this is this node's own pairing".into(),
            ));
        }
        let reply = ReplyKey::generate().map_err(|e| DeviceError::InvalidPairing(e.to_string()))?;
        let exchange = Exchange::start(Side::Joiner, &password, session, device, me);
        let start = PairRequest::Start {
            session,
            spake: exchange.message().to_vec(),
            device_name: device_name.to_owned(),
            reply_key: reply.public().to_vec(),
        };
        // The device may be busy with other attempts (a stranger's, say): wait and again.
        let mut started = self
            .pair_request(device, addrs.clone(), start.clone())
            .await?;
        for _ in 0..10 {
            let PairResponse::RetryLater(wait) = started else {
                break;
            };
            tokio::time::sleep(Duration::from_secs(u64::from(wait.clamp(1, 10)))).await;
            started = self
                .pair_request(device, addrs.clone(), start.clone())
                .await?;
        }
        let (id, spake, confirmation) = match started {
            PairResponse::Started {
                session,
                spake,
                confirmation,
            } => (session, spake, confirmation),
            other => return Err(refusal(other)),
        };
        let extra = [reply.public(), device_name.as_bytes()].concat();
        let key = exchange
            .finish(&spake, &extra)
            .map_err(|_| DeviceError::InvalidPairing("the pairing code is wrong".into()))?;
        if key.check(Side::Device, &confirmation).is_err() {
            // Say so at once, so the attempt ends there (and the user hears of it) rather
            // than when it runs out.
            let _ = self
                .pair_request(
                    device,
                    addrs.clone(),
                    PairRequest::Confirm {
                        session: id,
                        confirmation: key.confirmation(Side::Joiner),
                    },
                )
                .await;
            return Err(DeviceError::InvalidPairing(
                "the pairing code is wrong (or another device answered)".into(),
            ));
        }
        match self
            .pair_request(
                device,
                addrs.clone(),
                PairRequest::Confirm {
                    session: id,
                    confirmation: key.confirmation(Side::Joiner),
                },
            )
            .await?
        {
            PairResponse::Confirmed => {}
            other => return Err(refusal(other)),
        }
        let joining = Joining {
            id: hex(&id),
            check_code: key.check_code(),
        };
        let expected_user = match &with {
            JoinWith::Link(text) => PairingLink::parse(text).ok().map(|l| l.user()),
            JoinWith::Code(_) => None,
        };
        let this = self.clone();
        let waiting = joining.clone();
        tokio::spawn(async move {
            let outcome = this
                .await_decision(device, addrs, id, key, reply, expected_user)
                .await;
            if let Err(reason) = outcome {
                tracing::warn!(%reason, "pairing did not complete");
                this.inner.events.publish(Event::PairingFailed {
                    id: waiting.id,
                    reason,
                });
            }
        });
        Ok(joining)
    }

    /// Waits for the existing device's decision; on approval commits the bundle and
    /// restarts the node as the user's device.
    async fn await_decision(
        &self,
        device: PeerId,
        addrs: Vec<Multiaddr>,
        id: [u8; 16],
        key: SharedKey,
        reply: ReplyKey,
        expected_user: Option<volli_core::UserId>,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + MAX_TTL;
        let (encapped, sealed) = loop {
            if tokio::time::Instant::now() > deadline {
                return Err("no decision in time".into());
            }
            match self
                .pair_request(device, addrs.clone(), PairRequest::Wait { session: id })
                .await
            {
                Ok(PairResponse::Approved { encapped, bundle }) => break (encapped, bundle),
                Ok(PairResponse::Pending) => {}
                Ok(PairResponse::Rejected) => return Err("the pairing was rejected".into()),
                Ok(PairResponse::Expired) => return Err("the pairing expired".into()),
                Ok(other) => return Err(format!("the device answered {other:?}")),
                // The device may be restarting or the network passing: keep trying.
                Err(e) => {
                    tracing::debug!(error = %e, "waiting for the pairing decision");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        };
        let bytes = key
            .open_bundle(&reply, &encapped, &sealed)
            .map_err(|e| e.to_string())?;
        let bundle: PairBundle =
            wire::decode(&bytes, Protocol::Pair.max_response()).map_err(|e| e.to_string())?;
        let me = self.inner.identity.peer_id();
        if expected_user.is_some_and(|u| u != bundle.user)
            || bundle.certificate.verify_for(&bundle.user, &me).is_err()
            || bundle
                .master
                .is_some_and(|m| UserSecret::from_master(m).user_id() != bundle.user)
        {
            return Err("the bundle does not hold together".into());
        }
        let user = bundle.user;
        let joined = Joined {
            user: bundle.user,
            master: bundle.master,
            seeds: bundle.kem_seeds,
            certificate: bundle.certificate.to_bytes(),
            vault: bundle.vault,
        };
        self.inner
            .identity
            .commit_joined(&joined)
            .map_err(|e| e.to_string())?;
        tracing::info!(%user, "joined as a new device; restarting");
        self.inner.events.publish(Event::PairingCompleted {
            id: hex(&id),
            user_id: user.to_string(),
        });
        // Let the event reach the clients before the node goes down to restart.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.inner.restart.notify_one();
        Ok(())
    }

    async fn pair_request(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: PairRequest,
    ) -> Result<PairResponse, DeviceError> {
        let call = self
            .inner
            .outbound
            .request(peer, Protocol::Pair, wire::encode(&request), addrs);
        let bytes = tokio::time::timeout(REQUEST_TIMEOUT, call)
            .await
            .map_err(|_| DeviceError::Unreachable("timed out".into()))?
            .map_err(|e| DeviceError::Unreachable(e.to_string()))?;
        wire::decode(&bytes, Protocol::Pair.max_response())
            .map_err(|_| DeviceError::Unreachable("unreadable answer".into()))
    }

    /// Finds the device waiting with `nameplate`: peers met on the LAN, and providers of
    /// the nameplate's key in the DHT, are asked in parallel.
    async fn find_by_code(&self, nameplate: u16) -> Result<(PeerId, Vec<Multiaddr>), DeviceError> {
        let mut candidates: Vec<(PeerId, Vec<Multiaddr>)> = self
            .inner
            .peers
            .list()
            .into_iter()
            .filter(|p| p.sources.contains("mdns") || p.connected)
            .map(|p| (p.peer_id, p.addrs))
            .collect();
        if let Ok(Ok(providers)) = tokio::time::timeout(
            Duration::from_secs(5),
            self.inner.net.dht_providers(nameplate_key(nameplate)),
        )
        .await
        {
            for peer in providers {
                if !candidates.iter().any(|(p, _)| *p == peer) {
                    candidates.push((peer, Vec::new()));
                }
            }
        }
        let me = self.inner.identity.peer_id();
        let mut probes: futures::stream::FuturesUnordered<_> = candidates
            .into_iter()
            .filter(|(p, _)| *p != me)
            .take(32)
            .map(|(peer, addrs)| async move {
                let answer = tokio::time::timeout(
                    Duration::from_secs(5),
                    self.pair_request(peer, addrs.clone(), PairRequest::Probe { nameplate }),
                )
                .await;
                (
                    peer,
                    addrs,
                    matches!(answer, Ok(Ok(PairResponse::Present(true)))),
                )
            })
            .collect();
        while let Some((peer, addrs, present)) = probes.next().await {
            if present {
                return Ok((peer, addrs));
            }
        }
        Err(DeviceError::Unreachable(
            "no device on this network is waiting with that code".into(),
        ))
    }

    /// Whether this node holds contacts or messages of its own.
    async fn node_holds_data(&self) -> Result<bool, DeviceError> {
        Ok(!self.inner.vault.contacts().await?.is_empty()
            || self.inner.db.holds_user_data().await?)
    }
}

fn refusal(response: PairResponse) -> DeviceError {
    match response {
        PairResponse::Expired => DeviceError::PairingExpired,
        PairResponse::Used => DeviceError::PairingUsed,
        PairResponse::Refused(reason) => DeviceError::InvalidPairing(reason),
        other => DeviceError::InvalidPairing(format!("unexpected answer {other:?}")),
    }
}

/// Whether a device with `permissions` may hold document `doc`.
pub(super) fn allowed(permissions: Permissions, doc: &DocId) -> bool {
    match doc {
        DocId::Devices => true,
        DocId::Contacts => permissions.contains(Permissions::CONTACTS),
        DocId::Settings => permissions.contains(Permissions::SETTINGS),
        DocId::Chunk { .. } => permissions.contains(Permissions::MESSAGES),
    }
}
