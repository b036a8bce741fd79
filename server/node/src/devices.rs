//! The user's devices: pairing a new one (`pairing`), keeping the vault converged across
//! them (`sync`), listing them, and revoking one.
//!
//! What each device holds follows its permissions ([ADR 0009](../../../docs/adr/0009-devices-pairing-and-sync.md)):
//! `admin` the user's master secret (it signs cards, invites and other devices'
//! certificates); `messages` the X-Wing key generations and the conversations; `contacts` and
//! `settings` those documents. Revoking a device marks it in the `devices` document (every
//! device then refuses to sync with it), moves the user to a new X-Wing key generation and
//! issues a new contact card without it, which goes to every contact: they stop delivering to
//! the revoked device and seal new messages to the new key. A revoked `admin` device keeps
//! the master secret it copied — nothing can take that back; say so to the user.

mod pairing;
mod sync;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use volli_core::statement::MAX_GENERATION;
use volli_core::{Claim, DeviceAddrs, PeerId, Permissions, Statement, Timestamp, UserId};
use volli_net::{NetClient, Protocol};
use volli_store::{Db, Vault};

use crate::contacts::Contacts;
use crate::discovery::Discovery;
use crate::events::{Event, EventBus};
use crate::identity::Identity;
use crate::outbound::Outbound;
use crate::peers::Peers;
use crate::relay::Relay;

pub use pairing::{JoinWith, Joining, PairingOffer, PairingRequestView, PairingState};

/// Why a device operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// Only a device holding the user's signing key can do this.
    #[error("only an admin device of this user can do that (it signs for the user)")]
    NotAdmin,
    /// No such device.
    #[error("no such device")]
    NotFound,
    /// This device cannot revoke itself.
    #[error("a device cannot revoke itself; revoke it from another admin device")]
    CannotRevokeSelf,
    /// It was revoked already.
    #[error("the device is revoked already")]
    AlreadyRevoked,
    /// A bad pairing request (garbled link or code, wrong code, bad options).
    #[error("{0}")]
    InvalidPairing(String),
    /// The pairing expired.
    #[error("the pairing has expired")]
    PairingExpired,
    /// The pairing was used (or burnt by a wrong code).
    #[error("the pairing was used already")]
    PairingUsed,
    /// No pairing session by that id.
    #[error("no such pairing")]
    PairingNotFound,
    /// The pairing is not waiting for a decision.
    #[error("the pairing is not waiting for a decision")]
    PairingNotPending,
    /// This node holds contacts or messages: joining another user would lose them.
    #[error("this node already has contacts or messages; joining another user would lose them")]
    NodeNotEmpty,
    /// The existing device could not be reached.
    #[error("the device could not be reached: {0}")]
    Unreachable(String),
    /// Storage failed.
    #[error("storage: {0}")]
    Store(#[from] volli_store::StoreError),
    /// A contact card could not be issued.
    #[error("{0}")]
    Contacts(#[from] crate::contacts::ContactError),
}

/// One of the user's devices, as the API shows it.
#[derive(Clone, Debug)]
pub struct DeviceView {
    /// Its peer id.
    pub peer_id: PeerId,
    /// Its name.
    pub name: String,
    /// What it may do.
    pub permissions: Permissions,
    /// When it joined.
    pub added_at: Timestamp,
    /// When this node last saw it connected (now, if it is).
    pub last_seen: Option<Timestamp>,
    /// Whether it is this node.
    pub this_device: bool,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

/// The devices service. Cheap to clone.
#[derive(Clone)]
pub struct Devices {
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
    contacts: Contacts,
    relay: Relay,
    discovery: Discovery,
    restart: Arc<Notify>,
    pairing: pairing::Sessions,
    sync: sync::State,
    seen: Mutex<HashMap<PeerId, Timestamp>>,
}

/// What the devices service is built from.
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
    /// Contacts (for the user's card).
    pub contacts: Contacts,
    /// Relays (which also send the card to contacts).
    pub relay: Relay,
    /// Discovery (to find a device by its pairing code).
    pub discovery: Discovery,
    /// Notified when the node must restart as another user's device.
    pub restart: Arc<Notify>,
}

impl Devices {
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
                contacts: parts.contacts,
                relay: parts.relay,
                discovery: parts.discovery,
                restart: parts.restart,
                pairing: pairing::Sessions::default(),
                sync: sync::State::default(),
                seen: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Starts the background work: live sync, key catch-up, expiry of pairing sessions, and
    /// keeping the user's other devices connected.
    pub fn spawn(&self) {
        self.spawn_sync();
        self.spawn_pairing();
        let this = self.clone();
        tokio::spawn(async move { this.keep_devices_connected().await });
    }

    /// Records where this device listens (in the `devices` document, so the user's other
    /// devices can reach it) and dials the other devices that are not connected, each with
    /// a backoff. Runs for the life of the node.
    async fn keep_devices_connected(&self) {
        let mut backoff: HashMap<PeerId, (tokio::time::Instant, u32)> = HashMap::new();
        let me = self.inner.identity.peer_id();
        let mut recorded: Vec<String> = Vec::new();
        loop {
            let addrs: Vec<String> = self
                .inner
                .discovery
                .advertised_addrs()
                .await
                .iter()
                .map(ToString::to_string)
                .collect();
            if !addrs.is_empty() && addrs != recorded {
                let record =
                    DeviceAddrs::issue(&self.inner.identity.device, &addrs, Timestamp::now());
                match self.inner.vault.set_device_addrs(record).await {
                    Ok(_) => recorded = addrs,
                    Err(e) => tracing::debug!(error = %e, "cannot record this device's addresses"),
                }
            }
            let devices = self
                .inner
                .vault
                .devices_of(self.user_id())
                .await
                .unwrap_or_default();
            let now = tokio::time::Instant::now();
            let mut others = 0;
            for device in devices {
                let peer = device.peer_id();
                if peer == me || device.revoked_at.is_some() {
                    continue;
                }
                others += 1;
                let entry = self.inner.peers.get(&peer);
                if entry.as_ref().is_some_and(|e| e.connected) {
                    backoff.remove(&peer);
                    continue;
                }
                if backoff.get(&peer).is_some_and(|(at, _)| *at > now) {
                    continue;
                }
                let mut targets: Vec<multiaddr::Multiaddr> =
                    device.addrs.iter().filter_map(|a| a.parse().ok()).collect();
                for a in entry.map(|e| e.addrs).unwrap_or_default() {
                    if !targets.contains(&a) {
                        targets.push(a);
                    }
                }
                let strikes = backoff.get(&peer).map_or(0, |(_, n)| n + 1);
                let wait = crate::limits::backoff(
                    std::time::Duration::from_secs(2),
                    std::time::Duration::from_secs(300),
                    strikes,
                );
                backoff.insert(peer, (now + wait, strikes));
                let net = self.inner.net.clone();
                tokio::spawn(async move {
                    if let Err(e) = net.dial(peer, targets).await {
                        tracing::debug!(%peer, error = %e, "cannot reach another device of this user");
                    }
                });
            }
            // A user with one device has nobody to dial: look again now and then (a new
            // device connects to this one while pairing), without waking an idle node.
            let pause = if others == 0 { 60 } else { 5 };
            tokio::time::sleep(std::time::Duration::from_secs(pause)).await;
        }
    }

    /// Brings the peer table and this device's keys in line with the vault (after a start,
    /// a sync, a revocation).
    pub async fn refresh(&self) {
        let me = self.inner.identity.user_id();
        if let Ok(devices) = self.inner.vault.devices_of(me).await {
            self.inner.peers.set_revoked(
                devices
                    .iter()
                    .filter(|d| d.revoked_at.is_some())
                    .map(|d| d.peer_id()),
            );
        }
        if let Ok(generation) = self.inner.vault.key_generation(me).await {
            self.inner.identity.derive_keyring(generation);
        }
    }

    /// Every device of the user, this one first.
    pub async fn list(&self) -> Result<Vec<DeviceView>, DeviceError> {
        let identity = &self.inner.identity;
        let me = identity.peer_id();
        let seen = self
            .inner
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let now = Timestamp::now();
        let mut out: Vec<DeviceView> = self
            .inner
            .vault
            .devices_of(identity.user_id())
            .await?
            .into_iter()
            .map(|d| {
                let peer = d.peer_id();
                let connected = self.inner.peers.get(&peer).is_some_and(|e| e.connected);
                DeviceView {
                    peer_id: peer,
                    name: d.certificate.device_name().to_owned(),
                    permissions: d.certificate.permissions(),
                    added_at: d.added_at,
                    last_seen: if peer == me || connected {
                        Some(now)
                    } else {
                        seen.get(&peer).copied()
                    },
                    this_device: peer == me,
                    revoked_at: d.revoked_at,
                }
            })
            .collect();
        out.sort_by_key(|d| (!d.this_device, d.added_at));
        Ok(out)
    }

    /// Revokes device `peer` (from an admin device): it is refused sync from now on, the
    /// user moves to a new X-Wing key generation, and contacts get a new card without it.
    pub async fn revoke(&self, peer: PeerId) -> Result<(), DeviceError> {
        let identity = &self.inner.identity;
        if !identity.is_admin() {
            return Err(DeviceError::NotAdmin);
        }
        if peer == identity.peer_id() {
            return Err(DeviceError::CannotRevokeSelf);
        }
        let device = self
            .inner
            .vault
            .devices_of(identity.user_id())
            .await?
            .into_iter()
            .find(|d| d.peer_id() == peer)
            .ok_or(DeviceError::NotFound)?;
        if device.revoked_at.is_some() {
            return Err(DeviceError::AlreadyRevoked);
        }
        let user = identity.user.as_ref().ok_or(DeviceError::NotAdmin)?;
        let now = Timestamp::now();
        self.inner
            .vault
            .add_statement(Statement::issue(user, Claim::Revoked { peer }, now))
            .await?;
        self.inner.vault.forget_device(&peer.to_base58()).await?;
        // A device that could read messages had the current key: move on to the next.
        if device
            .certificate
            .permissions()
            .contains(Permissions::MESSAGES)
        {
            let next = self.inner.vault.key_generation(identity.user_id()).await? + 1;
            if next > MAX_GENERATION {
                tracing::warn!(
                    "the user's X-Wing key cannot move past generation {MAX_GENERATION}"
                );
            } else {
                self.inner
                    .vault
                    .add_statement(Statement::issue(
                        user,
                        Claim::KeyGeneration { generation: next },
                        now,
                    ))
                    .await?;
            }
        }
        self.refresh().await;
        self.inner.net.disconnect(peer).await;
        self.publish_card().await;
        self.inner.events.publish(Event::DeviceRevoked {
            peer_id: peer.to_base58(),
        });
        tracing::info!(%peer, "device revoked");
        Ok(())
    }

    /// Issues the user's card anew (devices or key changed) and sends it to the contacts
    /// that are connected; the others get it when they next connect.
    pub(crate) async fn publish_card(&self) {
        if let Err(e) = self.inner.contacts.my_card().await {
            tracing::warn!(error = %e, "cannot issue a new contact card");
            return;
        }
        if let Ok(contacts) = self.inner.vault.contacts().await {
            for c in contacts {
                if self.inner.peers.user_connected(&c.user_id) {
                    let relay = self.inner.relay.clone();
                    let user = c.user_id;
                    tokio::spawn(async move { relay.contact_ready(user).await });
                }
            }
        }
    }

    /// Another device of this user connected and said hello: catch up both ways.
    pub async fn device_ready(&self, peer: PeerId) {
        if let Ok(mut seen) = self.inner.seen.lock() {
            seen.insert(peer, Timestamp::now());
        }
        self.pull_from(peer).await;
        self.notify(peer).await;
    }

    /// Answers `/volli/pair/1` and `/volli/sync/1`.
    pub async fn handle(&self, peer: PeerId, protocol: Protocol, payload: &[u8]) -> Vec<u8> {
        match protocol {
            Protocol::Pair => self.handle_pair(peer, payload).await,
            _ => self.handle_sync(peer, payload).await,
        }
    }

    /// The user this node belongs to.
    fn user_id(&self) -> UserId {
        self.inner.identity.user_id()
    }
}
