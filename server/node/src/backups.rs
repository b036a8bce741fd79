//! Backups held by friends ([ADR 0021](../../../docs/adr/0021-backups-held-by-friends.md)).
//!
//! **Holding** (`/volli/hold/1`): a contact's current device may ask how much room this node
//! offers (`[backup] offer_bytes`), put pieces of its backup (sealed shards, and its sealed
//! manifest) under the backup's locator, list them and keep only some; each piece counts
//! against the contact's quota and the node's total in the transaction that stores it, and
//! everything held for a contact goes with the contact. Anyone who proves it holds a
//! backup's phrase (a signature of the access key over this node's peer id and the time: a
//! device restoring, a stranger here) may read its manifest and pieces, rate-limited; nobody
//! else gets anything. This node announces the
//! locators it holds something under (DHT provider records, rendezvous registrations), so
//! the phrase alone finds it.
//!
//! **Making** (`refresh`): an admin device with a recovery phrase (`setup`) spreads its
//! identity and vault over up to `[backup] holders` contacts that offer room, any
//! `threshold` of which restore it; it re-seals only the documents that changed, daily and
//! soon after a burst of changes, and moves a share away from a holder unreachable for
//! `move_after_secs`. **Restoring** (`restore`) is in `backups/restore.rs`.
//!
//! Not here: what a share holds (the vault's documents as stored, [`volli_store::Vault`]),
//! the cryptography and the code ([`volli_core::backup`], [`volli_core::erasure`]).

mod refresh;
mod restore;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use volli_core::backup::{BackupKeys, BlobRef, MANIFEST_PIECE, RecoveryPhrase};
use volli_core::wire::{self, HoldRequest, HoldResponse};
use volli_core::{PeerId, Timestamp, UserId};
use volli_net::{NetClient, Protocol};
use volli_store::{Db, HeldStats, PutOutcome, Vault};
use zeroize::Zeroizing;

use crate::config::BackupConfig;
use crate::devices::Devices;
use crate::discovery::Discovery;
use crate::events::{Event, EventBus};
use crate::identity::Identity;
use crate::limits::RateLimiter;
use crate::outbound::Outbound;
use crate::peers::Peers;

pub use restore::Restored;

/// Largest piece a holder takes: a shard (at most [`MAX_SHARD`]) or a manifest.
const MAX_PIECE: usize = volli_core::backup::MAX_MANIFEST;
/// Largest shard made: a blob is cut into parts so that none is larger.
const MAX_SHARD: usize = 2 << 20;
/// Pieces one contact may keep here at most (and name in one `Keep`).
const MAX_PIECES: usize = 65_536;
/// Requests by the restoring (`Find`, `Get`) from one peer at once, and per second after.
const RESTORE_BURST: u32 = 64;
const RESTORE_PER_SECOND: u32 = 32;
/// Pieces one contact may put at once, and per second after.
const PUT_BURST: u32 = 512;
const PUTS_PER_SECOND: u32 = 128;
/// How often a request a holder found too fast is sent again, and the longest wait asked
/// for that is waited out.
const RATE_LIMITED_RETRIES: usize = 30;
const MAX_RATE_LIMITED_WAIT: u32 = 10;
/// How long one request to a holder may take (a piece of a few MiB).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often this node announces the backups it holds (DHT providers, rendezvous).
const ANNOUNCE_EVERY: Duration = Duration::from_secs(3600);
/// A refresh waits this long after start, so contacts have connected.
const FIRST_REFRESH_AFTER: Duration = Duration::from_secs(20);
/// A refresh that failed is tried again after this long.
const RETRY_AFTER: Duration = Duration::from_secs(600);
/// How long a burst of changes settles before the refresh it calls for.
const SETTLE: Duration = Duration::from_secs(10);
/// Argon2id cost of the phrase's key: 64 MiB, 3 passes (about half a second here).
const KDF_COST: [u32; 3] = [64 * 1024, 3, 1];

/// Why a `Find` or `Get` was refused: its proof of the phrase is not for this node, too far
/// from its clock, or forged.
const PROOF_REFUSED: &str = "the proof of the recovery phrase does not hold here (check the clock)";

/// The setting (synced across the user's devices) that overrides `[backup] offer_bytes`.
pub const OFFER_SETTING: &str = "backup.offer_bytes";

/// Why a backup operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// No recovery phrase was set up on this device.
    #[error("no backup is set up on this device: run `volli backup setup` first")]
    NotSetUp,
    /// A phrase exists already.
    #[error("a recovery phrase is set up already; replace it explicitly to make a new one")]
    AlreadySetUp,
    /// Only a device holding the user's master secret can back it up.
    #[error("only an admin device of this user can make its backup (it holds the identity)")]
    NotAdmin,
    /// No contact offers room, or none is reachable.
    #[error("{0}")]
    NoHolders(String),
    /// The phrase is not a recovery phrase.
    #[error("{0}")]
    InvalidPhrase(String),
    /// Nothing was found for the phrase.
    #[error("{0}")]
    NotFound(String),
    /// A backup was found but could not be put together.
    #[error("{0}")]
    Incomplete(String),
    /// This node holds contacts or messages of its own.
    #[error("this node already has contacts or messages; restore on a fresh node")]
    NodeNotEmpty,
    /// Another refresh or restore is running.
    #[error("a backup or restore is already running")]
    Busy,
    /// Storage failed.
    #[error("storage: {0}")]
    Store(#[from] volli_store::StoreError),
    /// The identity's files could not be written.
    #[error("identity: {0}")]
    Identity(#[from] crate::identity::IdentityError),
    /// Something else failed.
    #[error("{0}")]
    Failed(String),
}

/// Where this node's own backup stands, kept in the database after each refresh.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State {
    /// The locator of the keys this state belongs to (a new phrase starts afresh).
    locator: [u8; 32],
    /// The newest manifest's sequence number.
    seq: u64,
    /// When it was made.
    made_at: Option<Timestamp>,
    /// Its code.
    k: u8,
    n: u8,
    /// Who holds which slot.
    holders: Vec<HolderState>,
    /// The blobs of the newest manifest.
    blobs: Vec<BlobRef>,
    /// Why the last refresh failed, if it did.
    last_error: Option<String>,
    /// When a refresh was last tried.
    tried_at: Option<Timestamp>,
    /// Bytes the last refresh sent to holders.
    last_sent: u64,
}

/// One holder, as the owner keeps track of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct HolderState {
    slot: u8,
    user: UserId,
    added_at: Timestamp,
    /// When it last answered.
    seen_at: Timestamp,
    /// When it last took a backup whole.
    updated_at: Option<Timestamp>,
    /// The newest manifest it holds with every piece it names.
    seq: u64,
    /// What it holds for this user, as it said.
    bytes: u64,
    /// Why it refused, the last time it did.
    refused: Option<String>,
}

impl State {
    fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok()
    }

    fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Holders that hold the newest manifest and all it names.
    fn current(&self) -> usize {
        self.holders
            .iter()
            .filter(|h| self.seq > 0 && h.seq == self.seq)
            .count()
    }
}

/// One holder, as `GET /v1/backup` shows it.
#[derive(Clone, Debug)]
pub struct HolderStatus {
    /// The contact.
    pub user_id: UserId,
    /// This user's name for it.
    pub name: String,
    /// Its slot (which shard of each blob it keeps).
    pub slot: u8,
    /// Whether one of its devices is connected now.
    pub online: bool,
    /// When it last answered.
    pub seen_at: Timestamp,
    /// When it last took a backup whole.
    pub updated_at: Option<Timestamp>,
    /// Whether it holds the newest backup whole.
    pub current: bool,
    /// What it holds for this user.
    pub bytes: u64,
    /// Why it refused, the last time it did.
    pub refused: Option<String>,
}

/// Where this node's backup stands, and what it holds for others.
#[derive(Clone, Debug)]
pub struct Status {
    /// Whether a recovery phrase is set up on this device.
    pub set_up: bool,
    /// The newest backup's sequence number (0: none made yet).
    pub seq: u64,
    /// When it was made.
    pub made_at: Option<Timestamp>,
    /// Holders needed to restore it.
    pub k: u8,
    /// Holders it is spread over.
    pub n: u8,
    /// The holders.
    pub holders: Vec<HolderStatus>,
    /// How many holders may vanish before the newest backup is lost (`None`: fewer than `k`
    /// hold it whole, so it cannot be restored as it is).
    pub can_lose: Option<u32>,
    /// Its sealed size (before it is cut into shares).
    pub sealed_bytes: u64,
    /// What all holders keep of it together.
    pub stored_bytes: u64,
    /// Bytes the last refresh sent.
    pub last_sent: u64,
    /// Why the last refresh failed, if it did.
    pub last_error: Option<String>,
    /// When a refresh was last tried.
    pub tried_at: Option<Timestamp>,
    /// What this node holds of its contacts' backups.
    pub held: HeldStats,
    /// `[backup] offer_bytes`.
    pub offer_bytes: u64,
    /// `[backup] max_total_bytes`.
    pub max_total_bytes: u64,
}

/// What one refresh did.
#[derive(Clone, Debug)]
pub struct Refreshed {
    /// The new manifest's sequence number.
    pub seq: u64,
    /// Blobs sealed anew (the rest were unchanged).
    pub blobs_sealed: usize,
    /// Blobs in the backup.
    pub blobs: usize,
    /// Bytes sent to holders.
    pub bytes_sent: u64,
    /// Holders that hold it whole.
    pub holders: usize,
    /// How many of them may vanish.
    pub can_lose: Option<u32>,
}

/// The backups service. Cheap to clone.
#[derive(Clone)]
pub struct Backups {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    vault: Vault,
    net: NetClient,
    outbound: Outbound,
    identity: Arc<Identity>,
    peers: Peers,
    events: EventBus,
    discovery: Discovery,
    devices: Devices,
    config: BackupConfig,
    restart: Arc<Notify>,
    /// A refresh is asked for now.
    wake: Notify,
    /// One refresh or restore at a time.
    busy: tokio::sync::Mutex<()>,
    /// `Find` and `Get` per asking peer.
    restorers: RateLimiter<PeerId>,
    /// `Put` per contact.
    puts: RateLimiter<UserId>,
    /// Locators announced this run.
    announced: Mutex<HashSet<[u8; 32]>>,
}

/// What the backups service is built from.
pub struct Parts {
    /// The database.
    pub db: Db,
    /// The vault.
    pub vault: Vault,
    /// The network.
    pub net: NetClient,
    /// Requests after a hello.
    pub outbound: Outbound,
    /// This node's identity.
    pub identity: Arc<Identity>,
    /// The peer table.
    pub peers: Peers,
    /// Events for clients.
    pub events: EventBus,
    /// Discovery (to find holders).
    pub discovery: Discovery,
    /// The user's devices (a restored device revokes the one it replaces).
    pub devices: Devices,
    /// `[backup]`.
    pub config: BackupConfig,
    /// Notified when the node must restart as the restored user's device.
    pub restart: Arc<Notify>,
}

impl Backups {
    /// The service.
    pub fn new(parts: Parts) -> Self {
        Self {
            inner: Arc::new(Inner {
                db: parts.db,
                vault: parts.vault,
                net: parts.net,
                outbound: parts.outbound,
                identity: parts.identity,
                peers: parts.peers,
                events: parts.events,
                discovery: parts.discovery,
                devices: parts.devices,
                config: parts.config,
                restart: parts.restart,
                wake: Notify::new(),
                busy: tokio::sync::Mutex::new(()),
                restorers: RateLimiter::new(RESTORE_BURST, RESTORE_PER_SECOND),
                puts: RateLimiter::new(PUT_BURST, PUTS_PER_SECOND),
                announced: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// Starts the background work: finishing a restore, announcing what this node holds,
    /// and refreshing this node's own backup.
    pub fn spawn(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            this.finish_restore().await;
            this.refresh_loop().await;
        });
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match this.inner.db.held_locators().await {
                    Ok(locators) => {
                        for locator in locators {
                            this.announce(locator, true);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot list the backups held here"),
                }
                tokio::time::sleep(ANNOUNCE_EVERY).await;
            }
        });
    }

    /// The keys of this device's backup, if one is set up.
    fn keys(&self) -> Result<Option<BackupKeys>, BackupError> {
        Ok(self
            .inner
            .identity
            .backup_root()?
            .map(|root| BackupKeys::from_root(&root)))
    }

    async fn state(&self) -> Result<Option<State>, BackupError> {
        Ok(self
            .inner
            .db
            .backup_state()
            .await?
            .and_then(|b| State::decode(&b)))
    }

    async fn save(&self, state: &State) -> Result<(), BackupError> {
        self.inner
            .db
            .set_backup_state(Some(&state.encode()))
            .await?;
        Ok(())
    }

    /// Makes a new recovery phrase for this user's backup and starts backing up under it.
    /// The phrase is returned once and kept nowhere: only the key derived from it is.
    /// With `replace`, a phrase set up before stops working once the holders have the new
    /// backup.
    pub async fn setup(&self, replace: bool) -> Result<Zeroizing<String>, BackupError> {
        if !self.inner.identity.is_admin() {
            return Err(BackupError::NotAdmin);
        }
        if !replace && self.inner.identity.backup_root()?.is_some() {
            return Err(BackupError::AlreadySetUp);
        }
        let phrase = RecoveryPhrase::generate().map_err(|e| BackupError::Failed(e.to_string()))?;
        let root = derive_root(&phrase).await?;
        self.inner.identity.set_backup_root(Some(&root))?;
        self.inner.db.set_backup_state(None).await?;
        tracing::info!("a recovery phrase was set up; backing up to friends");
        self.inner.wake.notify_one();
        Ok(phrase.words())
    }

    /// Refreshes the backup now; returns what it did.
    pub async fn refresh_now(&self) -> Result<Refreshed, BackupError> {
        let outcome = self.refresh().await;
        if let Err(e) = &outcome {
            self.note_failure(e).await;
        }
        outcome
    }

    async fn note_failure(&self, e: &BackupError) {
        tracing::warn!(error = %e, "the backup could not be refreshed");
        if let Ok(Some(mut state)) = self.state().await {
            state.last_error = Some(e.to_string());
            state.tried_at = Some(Timestamp::now());
            let _ = self.save(&state).await;
        }
        self.inner.events.publish(Event::BackupFailed {
            reason: e.to_string(),
        });
    }

    /// Refreshes when due: `refresh_secs` after the last one, soon after a burst of
    /// changes, at once when asked; a failure is tried again after a while.
    async fn refresh_loop(&self) {
        let config = &self.inner.config;
        let mut changes = self.inner.vault.changes();
        let mut changes_at_last = *changes.borrow();
        let mut next = tokio::time::Instant::now() + FIRST_REFRESH_AFTER;
        loop {
            let due = tokio::select! {
                () = self.inner.wake.notified() => true,
                () = tokio::time::sleep_until(next) => true,
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let now = *changes.borrow();
                    if now.saturating_sub(changes_at_last) >= config.refresh_after_changes {
                        tokio::time::sleep(SETTLE).await;
                        true
                    } else {
                        false
                    }
                }
            };
            if !due {
                continue;
            }
            if !self.inner.identity.is_admin() || matches!(self.keys(), Ok(None) | Err(_)) {
                next = tokio::time::Instant::now() + Duration::from_secs(config.refresh_secs);
                continue;
            }
            changes_at_last = *changes.borrow_and_update();
            next = match self.refresh().await {
                Ok(done) => {
                    tracing::info!(
                        seq = done.seq,
                        sealed = done.blobs_sealed,
                        bytes = done.bytes_sent,
                        holders = done.holders,
                        "backup refreshed"
                    );
                    tokio::time::Instant::now() + Duration::from_secs(config.refresh_secs)
                }
                Err(e) => {
                    self.note_failure(&e).await;
                    tokio::time::Instant::now()
                        + RETRY_AFTER.min(Duration::from_secs(config.refresh_secs))
                }
            };
        }
    }

    /// Where this node's backup stands.
    pub async fn status(&self) -> Result<Status, BackupError> {
        let set_up = self.keys()?.is_some();
        let state = self.state().await?.unwrap_or_default();
        let contacts = self.inner.vault.contacts().await?;
        let holders = state
            .holders
            .iter()
            .map(|h| HolderStatus {
                user_id: h.user,
                name: contacts
                    .iter()
                    .find(|c| c.user_id == h.user)
                    .map(|c| c.name.clone())
                    .unwrap_or_default(),
                slot: h.slot,
                online: self.inner.peers.user_connected(&h.user),
                seen_at: h.seen_at,
                updated_at: h.updated_at,
                current: state.seq > 0 && h.seq == state.seq,
                bytes: h.bytes,
                refused: h.refused.clone(),
            })
            .collect();
        let current = state.current();
        let k = usize::from(state.k);
        let shard_bytes: u64 = state
            .blobs
            .iter()
            .map(|b| {
                volli_core::erasure::Code::new(k.max(1), usize::from(state.n).max(k.max(1)))
                    .map_or(0, |c| c.shard_len(b.sealed_len as usize) as u64)
            })
            .sum();
        Ok(Status {
            set_up,
            seq: state.seq,
            made_at: state.made_at,
            k: state.k,
            n: state.n,
            holders,
            can_lose: (state.seq > 0 && current >= k && k > 0)
                .then(|| u32::try_from(current - k).unwrap_or(u32::MAX)),
            sealed_bytes: state.blobs.iter().map(|b| u64::from(b.sealed_len)).sum(),
            stored_bytes: shard_bytes * current as u64,
            last_sent: state.last_sent,
            last_error: state.last_error.clone(),
            tried_at: state.tried_at,
            held: self.inner.db.held_stats().await?,
            offer_bytes: self.offer_bytes().await,
            max_total_bytes: self.inner.config.max_total_bytes,
        })
    }

    /// What this node holds for each contact at most: setting `backup.offer_bytes` if the
    /// user set it, else `[backup] offer_bytes`.
    async fn offer_bytes(&self) -> u64 {
        match self.inner.vault.setting(OFFER_SETTING).await {
            Ok(Some(value)) => value.as_u64().unwrap_or(self.inner.config.offer_bytes),
            _ => self.inner.config.offer_bytes,
        }
    }

    /// `user` is no longer a contact: nothing is held for it any more.
    pub async fn forget(&self, user: UserId) {
        match self.inner.db.forget_held(&user.to_string()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pieces = n, "dropped the backup held for a removed contact"),
            Err(e) => tracing::warn!(error = %e, "cannot drop a removed contact's backup"),
        }
    }

    /// Announces that this node holds pieces under `locator` (in the DHT and at the
    /// rendezvous points), once per run unless `again`.
    fn announce(&self, locator: [u8; 32], again: bool) {
        let first = self
            .inner
            .announced
            .lock()
            .map(|mut a| a.insert(locator))
            .unwrap_or(false);
        if !first && !again {
            return;
        }
        let net = self.inner.net.clone();
        tokio::spawn(async move {
            if let Err(e) = net.dht_provide(volli_core::backup::dht_key(&locator)).await {
                tracing::debug!(error = %e, "cannot announce a held backup in the DHT");
            }
            let namespace = volli_core::backup::rendezvous_namespace(&locator);
            if let Err(e) = net.rendezvous_register(namespace, ANNOUNCE_EVERY * 2).await {
                tracing::debug!(error = %e, "cannot announce a held backup at a rendezvous point");
            }
        });
    }

    /// Answers a `/volli/hold/1` request from `peer`.
    pub async fn handle(&self, peer: PeerId, payload: &[u8]) -> Vec<u8> {
        wire::encode(&self.answer(peer, payload).await)
    }

    async fn answer(&self, peer: PeerId, payload: &[u8]) -> HoldResponse {
        let Ok(request) = wire::decode::<HoldRequest>(payload, Protocol::Hold.max_request()) else {
            return HoldResponse::Refused("malformed request".into());
        };
        self.answer_request(peer, request).await
    }

    /// Answers a decoded `/volli/hold/1` request about backups from `peer`.
    pub async fn answer_request(&self, peer: PeerId, request: HoldRequest) -> HoldResponse {
        let found = |bytes: Result<Option<Vec<u8>>, volli_store::StoreError>| match bytes {
            Ok(Some(bytes)) => HoldResponse::Piece(bytes),
            Ok(None) => HoldResponse::NotHere,
            Err(e) => HoldResponse::Refused(format!("storage: {e}")),
        };
        let me = self.inner.identity.peer_id();
        match request {
            // Whoever holds the phrase: a new device, which nobody here knows yet.
            HoldRequest::Find { proof } => {
                if let Err(wait) = self.inner.restorers.check(peer) {
                    return HoldResponse::RateLimited(u32::try_from(wait).unwrap_or(u32::MAX));
                }
                let Ok(locator) = proof.verify(&me, Timestamp::now()) else {
                    return HoldResponse::Refused(PROOF_REFUSED.into());
                };
                found(self.inner.db.held_piece(&locator, &MANIFEST_PIECE).await)
            }
            HoldRequest::Get { proof, piece } => {
                if let Err(wait) = self.inner.restorers.check(peer) {
                    return HoldResponse::RateLimited(u32::try_from(wait).unwrap_or(u32::MAX));
                }
                let Ok(locator) = proof.verify(&me, Timestamp::now()) else {
                    return HoldResponse::Refused(PROOF_REFUSED.into());
                };
                found(self.inner.db.held_piece(&locator, &piece).await)
            }
            request => {
                let Some(owner) = self.inner.peers.contact_of(&peer) else {
                    return HoldResponse::Refused(
                        "this node holds backups for its contacts' current devices only".into(),
                    );
                };
                self.answer_owner(owner, request).await
            }
        }
    }

    /// Requests of a contact about its own backup.
    async fn answer_owner(&self, owner: UserId, request: HoldRequest) -> HoldResponse {
        let config = &self.inner.config;
        let offer_bytes = self.offer_bytes().await;
        let name = owner.to_string();
        match request {
            HoldRequest::Offer => match self.inner.db.held_for(&name).await {
                Ok(used) => HoldResponse::Offered {
                    offer: offer_bytes,
                    used,
                },
                Err(e) => HoldResponse::Refused(format!("storage: {e}")),
            },
            HoldRequest::Put {
                locator,
                piece,
                bytes,
            } => {
                if offer_bytes == 0 {
                    return HoldResponse::Refused("this node offers no backup space".into());
                }
                if bytes.len() > MAX_PIECE {
                    return HoldResponse::Refused("a piece is too large".into());
                }
                if let Err(wait) = self.inner.puts.check(owner) {
                    return HoldResponse::RateLimited(u32::try_from(wait).unwrap_or(u32::MAX));
                }
                match self
                    .inner
                    .db
                    .held_pieces(&name, &locator)
                    .await
                    .map(|p| p.len())
                {
                    Ok(n) if n >= MAX_PIECES => {
                        return HoldResponse::Refused("too many pieces".into());
                    }
                    Ok(_) => {}
                    Err(e) => return HoldResponse::Refused(format!("storage: {e}")),
                }
                match self
                    .inner
                    .db
                    .hold_piece(
                        &name,
                        &locator,
                        &piece,
                        &bytes,
                        offer_bytes,
                        config.max_total_bytes,
                    )
                    .await
                {
                    Ok(PutOutcome::Kept { .. }) => {
                        self.announce(locator, false);
                        HoldResponse::Ok
                    }
                    Ok(PutOutcome::OverQuota { used }) => HoldResponse::OverQuota {
                        offer: offer_bytes,
                        used,
                    },
                    Ok(PutOutcome::Taken) => {
                        HoldResponse::Refused("another contact filed that piece".into())
                    }
                    Err(e) => HoldResponse::Refused(format!("storage: {e}")),
                }
            }
            HoldRequest::Have { locator } => match self.inner.db.held_pieces(&name, &locator).await
            {
                Ok(pieces) => HoldResponse::Pieces(pieces),
                Err(e) => HoldResponse::Refused(format!("storage: {e}")),
            },
            HoldRequest::Keep { locator, pieces } => {
                if pieces.len() > MAX_PIECES {
                    return HoldResponse::Refused("too many pieces".into());
                }
                match self.inner.db.keep_pieces(&name, &locator, &pieces).await {
                    Ok(_) => HoldResponse::Ok,
                    Err(e) => HoldResponse::Refused(format!("storage: {e}")),
                }
            }
            HoldRequest::Find { .. } | HoldRequest::Get { .. } => {
                HoldResponse::Refused("answered above".into())
            }
            HoldRequest::File { .. }
            | HoldRequest::FileChunk { .. }
            | HoldRequest::FilesHeld
            | HoldRequest::FileDone(_) => HoldResponse::Refused("not a backup request".into()),
        }
    }

    /// Sends a request to any device of contact `user`, connected ones first.
    async fn ask(&self, user: UserId, request: &HoldRequest) -> Result<HoldResponse, String> {
        let contact = self
            .inner
            .vault
            .contact(user)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("not a contact")?;
        let payload = wire::encode(request);
        self.inner
            .outbound
            .ask_any(&contact.devices, false, |peer, addrs| {
                self.ask_peer(peer, payload.clone(), addrs)
            })
            .await
    }

    /// Sends an encoded request to `peer`.
    async fn ask_peer(
        &self,
        peer: PeerId,
        payload: Vec<u8>,
        addrs: Vec<multiaddr::Multiaddr>,
    ) -> Result<HoldResponse, String> {
        // A holder that says "too fast" is asked again once it is ready (a refresh or a
        // restore of a large backup sends hundreds of pieces).
        for _ in 0..RATE_LIMITED_RETRIES {
            let answer = self
                .inner
                .outbound
                .call(
                    peer,
                    Protocol::Hold,
                    payload.clone(),
                    addrs.clone(),
                    REQUEST_TIMEOUT,
                )
                .await?;
            match answer {
                HoldResponse::RateLimited(secs) if secs <= MAX_RATE_LIMITED_WAIT => {
                    tokio::time::sleep(Duration::from_secs(u64::from(secs.max(1)))).await;
                }
                answer => return Ok(answer),
            }
        }
        Err("the holder stayed busy".into())
    }
}

/// The root of a phrase's keys: Argon2id, off the async workers.
async fn derive_root(phrase: &RecoveryPhrase) -> Result<Zeroizing<[u8; 32]>, BackupError> {
    let entropy = Zeroizing::new(*phrase.entropy());
    tokio::task::spawn_blocking(move || {
        let params = argon2::Params::new(KDF_COST[0], KDF_COST[1], KDF_COST[2], Some(32))
            .map_err(|e| BackupError::Failed(e.to_string()))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut root = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(
                entropy.as_ref(),
                volli_core::backup::KDF_SALT,
                root.as_mut(),
            )
            .map_err(|e| BackupError::Failed(e.to_string()))?;
        Ok(root)
    })
    .await
    .map_err(|e| BackupError::Failed(e.to_string()))?
}

/// How many holders are needed of `n`, for a configuration of `threshold` of `holders`: the
/// configured share may vanish, in proportion; with two or more holders, at least one.
fn needed(n: usize, threshold: usize, holders: usize) -> usize {
    if n >= holders {
        return threshold.min(n).max(1);
    }
    let spare = holders - threshold;
    let may_vanish = (spare * n / holders).max(usize::from(n >= 2 && spare > 0));
    n - may_vanish
}

#[cfg(test)]
mod tests {
    use super::needed;

    #[test]
    fn fewer_friends_need_fewer_holders() {
        assert_eq!(needed(5, 3, 5), 3);
        assert_eq!(needed(6, 3, 5), 3);
        assert_eq!(needed(4, 3, 5), 3);
        assert_eq!(needed(3, 3, 5), 2);
        assert_eq!(needed(2, 3, 5), 1);
        assert_eq!(needed(1, 3, 5), 1);
        assert_eq!(needed(3, 3, 3), 3);
        assert_eq!(needed(2, 5, 5), 2);
    }
}
