//! The peer table: every peer this node has heard of, with where it was heard (discovery
//! plugin names), its addresses, whether it is connected, and — only once its device
//! certificate verified against its Noise-authenticated peer id — which user it belongs to.
//!
//! Bounded: past [`MAX_PEERS`] entries, the longest-unseen disconnected peers are forgotten.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use multiaddr::Multiaddr;
use volli_core::{DeviceCertificate, PeerId, UserId};

use crate::events::{Event, EventBus};

/// Peers kept at most.
pub const MAX_PEERS: usize = 4096;
/// Addresses kept per peer at most (newest first).
const MAX_ADDRS: usize = 16;

/// What the node knows of one peer.
#[derive(Clone, Debug)]
pub struct PeerEntry {
    /// The peer.
    pub peer_id: PeerId,
    /// Its user, once its certificate verified.
    pub user_id: Option<UserId>,
    /// Its certificate, once verified.
    pub certificate: Option<DeviceCertificate>,
    /// Where it may be reached, newest first.
    pub addrs: Vec<Multiaddr>,
    /// Discovery plugins that reported it.
    pub sources: BTreeSet<String>,
    /// Whether a connection is open.
    pub connected: bool,
    /// The transport of the connection that opened it: `tcp`, `quic`, `relay`, `memory` or
    /// `other`; `None` while disconnected.
    pub transport: Option<&'static str>,
    /// Last measured round trip.
    pub rtt: Option<Duration>,
    /// Whether it answered our hello on the current connection (so it knows who we are).
    pub greeted: bool,
    /// How it is reached while connected: directly, or through a relay (which one).
    pub path: Option<Path>,
    /// Its address on the connection in use, while connected.
    pub remote: Option<Multiaddr>,
    /// The latest attempt to replace a relayed connection to it by a direct one.
    pub last_punch: Option<volli_net::PunchReport>,
    last_seen: Instant,
}

/// How a connected peer is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// A connection of its own (possibly hole-punched through NATs).
    Direct,
    /// A circuit through the relay `via`.
    Relayed {
        /// The relay.
        via: PeerId,
    },
}

impl Path {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Relayed { .. } => "relayed",
        }
    }
}

/// The transport an address uses, as the metrics name it.
pub fn transport_of(addr: &Multiaddr) -> &'static str {
    use multiaddr::Protocol;
    let mut transport = "other";
    for p in addr {
        match p {
            Protocol::P2pCircuit => return "relay",
            Protocol::QuicV1 | Protocol::Quic => transport = "quic",
            Protocol::Tcp(_) if transport == "other" => transport = "tcp",
            Protocol::Memory(_) => transport = "memory",
            _ => {}
        }
    }
    transport
}

/// The peer table. Cheap to clone.
#[derive(Clone)]
pub struct Peers {
    table: Arc<Mutex<HashMap<PeerId, PeerEntry>>>,
    /// The user's contacts and the devices each one's latest card lists, kept here so the
    /// network dispatcher can tell a contact's device from a stranger (or from a device the
    /// contact revoked) without waiting.
    contacts: Arc<Mutex<HashMap<UserId, HashSet<PeerId>>>>,
    /// The user's own devices that were revoked: no longer trusted as the user's.
    revoked: Arc<Mutex<HashSet<PeerId>>>,
    /// This node's user: its other devices are trusted like contacts, and sync with it.
    own: UserId,
    events: EventBus,
    local: PeerId,
    /// Ticks whenever the contacts' devices or the user's revoked devices are set again:
    /// what conversations check their members against.
    devices_changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Peers {
    /// An empty table for device `local` (never listed) of user `own`.
    pub fn new(local: PeerId, own: UserId, events: EventBus) -> Self {
        Self {
            table: Arc::new(Mutex::new(HashMap::new())),
            contacts: Arc::new(Mutex::new(HashMap::new())),
            revoked: Arc::new(Mutex::new(HashSet::new())),
            own,
            events,
            local,
            devices_changed: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// Replaces the set of the user's revoked devices.
    pub fn set_revoked(&self, revoked: impl IntoIterator<Item = PeerId>) {
        *self.revoked.lock().unwrap_or_else(|e| e.into_inner()) = revoked.into_iter().collect();
        self.devices_changed.send_modify(|n| *n += 1);
    }

    /// Ticks whenever the contacts' devices or this user's devices may have changed.
    pub fn devices_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.devices_changed.subscribe()
    }

    /// Whether `peer` proved it is another device of this user, and was not revoked.
    pub fn is_own_device(&self, peer: &PeerId) -> bool {
        *peer != self.local
            && self.user_of(peer) == Some(self.own)
            && !self
                .revoked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(peer)
    }

    /// The contacts' current devices and this user's other devices that are connected now.
    pub fn trusted_connected(&self) -> Vec<PeerId> {
        let candidates: Vec<PeerId> = self
            .lock()
            .values()
            .filter(|e| e.connected && e.user_id.is_some())
            .map(|e| e.peer_id)
            .collect();
        candidates
            .into_iter()
            .filter(|p| self.contact_of(p).is_some() || self.is_own_device(p))
            .collect()
    }

    /// The user's other devices that are connected now.
    pub fn own_devices_connected(&self) -> Vec<PeerId> {
        let candidates: Vec<PeerId> = self
            .lock()
            .values()
            .filter(|e| e.connected && e.user_id == Some(self.own))
            .map(|e| e.peer_id)
            .collect();
        candidates
            .into_iter()
            .filter(|p| self.is_own_device(p))
            .collect()
    }

    fn contact_set(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, HashSet<PeerId>>> {
        self.contacts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the contacts, each with the devices its latest card lists.
    pub fn set_contacts(&self, contacts: impl IntoIterator<Item = (UserId, Vec<PeerId>)>) {
        *self.contact_set() = contacts
            .into_iter()
            .map(|(user, devices)| (user, devices.into_iter().collect()))
            .collect();
        self.devices_changed.send_modify(|n| *n += 1);
    }

    /// Whether `user` is a contact.
    pub fn is_contact(&self, user: &UserId) -> bool {
        self.contact_set().contains_key(user)
    }

    /// The contact `peer` is a device of, if it proved it is one (its certificate) and the
    /// contact's latest card still lists it (a device the contact revoked is not).
    pub fn contact_of(&self, peer: &PeerId) -> Option<UserId> {
        let user = self.lock().get(peer).and_then(|e| e.user_id)?;
        self.contact_set()
            .get(&user)
            .is_some_and(|devices| devices.contains(peer))
            .then_some(user)
    }

    /// Whether contact `user`'s latest card lists device `peer` (one it revoked it does not).
    pub fn is_current_device_of(&self, user: &UserId, peer: &PeerId) -> bool {
        self.contact_set()
            .get(user)
            .is_some_and(|devices| devices.contains(peer))
    }

    /// The user `peer` proved it belongs to, if it did.
    pub fn user_of(&self, peer: &PeerId) -> Option<UserId> {
        self.lock().get(peer).and_then(|e| e.user_id)
    }

    /// Records that `peer` answered our hello on its current connection.
    pub fn set_greeted(&self, peer: PeerId) {
        if let Some(entry) = self.lock().get_mut(&peer) {
            entry.greeted = entry.connected;
        }
    }

    /// Whether `peer` answered our hello on its current connection.
    pub fn greeted(&self, peer: &PeerId) -> bool {
        self.lock()
            .get(peer)
            .is_some_and(|e| e.connected && e.greeted)
    }

    /// Connected peers that are neither devices of a contact nor the user's own.
    pub fn connected_strangers(&self) -> Vec<PeerId> {
        let contacts = self.contact_set().clone();
        self.lock()
            .values()
            .filter(|e| {
                e.connected
                    && !e
                        .user_id
                        .is_some_and(|u| contacts.contains_key(&u) || u == self.own)
            })
            .map(|e| e.peer_id)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, PeerEntry>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entry<'a>(
        &self,
        table: &'a mut HashMap<PeerId, PeerEntry>,
        peer: PeerId,
    ) -> (&'a mut PeerEntry, bool) {
        if !table.contains_key(&peer) && table.len() >= MAX_PEERS {
            let oldest = table
                .values()
                .filter(|e| !e.connected)
                .min_by_key(|e| e.last_seen)
                .map(|e| e.peer_id);
            if let Some(oldest) = oldest {
                table.remove(&oldest);
            }
        }
        let mut new = false;
        let entry = table.entry(peer).or_insert_with(|| {
            new = true;
            PeerEntry {
                peer_id: peer,
                user_id: None,
                certificate: None,
                addrs: Vec::new(),
                sources: BTreeSet::new(),
                connected: false,
                rtt: None,
                greeted: false,
                transport: None,
                path: None,
                remote: None,
                last_punch: None,
                last_seen: Instant::now(),
            }
        });
        entry.last_seen = Instant::now();
        (entry, new)
    }

    /// Records that `source` found `peer` at `addrs`, with a certificate if it carried one
    /// (already verified by the caller). Emits `peer.discovered` for a new peer or source.
    pub fn found(
        &self,
        peer: PeerId,
        addrs: &[Multiaddr],
        certificate: Option<DeviceCertificate>,
        source: &str,
    ) -> bool {
        if peer == self.local {
            return false;
        }
        crate::metrics::metrics().found(source);
        let event = {
            let mut table = self.lock();
            let (entry, new) = self.entry(&mut table, peer);
            let mut learnt = new;
            for addr in addrs.iter().rev() {
                learnt |= !entry.addrs.contains(addr);
                entry.addrs.retain(|a| a != addr);
                entry.addrs.insert(0, addr.clone());
            }
            entry.addrs.truncate(MAX_ADDRS);
            if let Some(cert) = certificate {
                learnt |= entry.certificate.as_ref() != Some(&cert);
                entry.user_id = Some(cert.user_id());
                entry.certificate = Some(cert);
            }
            let new_source = entry.sources.insert(source.to_owned());
            let event = (new || new_source).then(|| Event::PeerDiscovered {
                peer_id: peer.to_base58(),
                user_id: entry.user_id.map(|u| u.to_string()),
                sources: entry.sources.iter().cloned().collect(),
            });
            (event, learnt || new_source)
        };
        let (event, learnt) = event;
        if let Some(event) = event {
            self.events.publish(event);
        }
        learnt
    }

    /// Adds addresses a peer told us about (identify); no source, no event.
    pub fn add_addrs(&self, peer: PeerId, addrs: &[Multiaddr]) {
        if peer == self.local {
            return;
        }
        let mut table = self.lock();
        let (entry, _) = self.entry(&mut table, peer);
        for addr in addrs {
            if !entry.addrs.contains(addr) {
                entry.addrs.push(addr.clone());
            }
        }
        entry.addrs.truncate(MAX_ADDRS);
    }

    /// Binds a connected peer to a user after its certificate verified.
    pub fn verified(&self, certificate: DeviceCertificate) {
        let peer = certificate.peer_id();
        let mut table = self.lock();
        let (entry, _) = self.entry(&mut table, peer);
        entry.user_id = Some(certificate.user_id());
        entry.certificate = Some(certificate);
    }

    /// Marks a peer connected (at `addr`, directly or through `relay`) or disconnected,
    /// with a `peer.connected` / `peer.disconnected` event.
    pub fn set_connected(
        &self,
        peer: PeerId,
        connected: bool,
        addr: Option<&Multiaddr>,
        relay: Option<PeerId>,
    ) {
        if peer == self.local {
            return;
        }
        let user = {
            let mut table = self.lock();
            let (entry, _) = self.entry(&mut table, peer);
            entry.connected = connected;
            entry.transport = connected.then(|| addr.map_or("other", transport_of));
            entry.path = connected.then_some(match relay {
                None => Path::Direct,
                Some(via) => Path::Relayed { via },
            });
            if connected && relay.is_some() {
                entry.transport = Some("relay");
            }
            entry.greeted = false;
            entry.remote = addr.filter(|_| connected).cloned();
            if let Some(addr) = addr
                && !entry.addrs.contains(addr)
                && !addr
                    .iter()
                    .any(|p| matches!(p, multiaddr::Protocol::P2pCircuit))
            {
                entry.addrs.insert(0, addr.clone());
                entry.addrs.truncate(MAX_ADDRS);
            }
            entry.user_id
        };
        self.events.publish(if connected {
            Event::PeerConnected {
                peer_id: peer.to_base58(),
                user_id: user.map(|u| u.to_string()),
            }
        } else {
            Event::PeerDisconnected {
                peer_id: peer.to_base58(),
            }
        });
    }

    /// The path to connected `peer` changed (a hole punch made it direct, or the direct
    /// connection went and one through `relay` remains), with a `peer.path` event.
    pub fn set_path(&self, peer: PeerId, addr: &Multiaddr, relay: Option<PeerId>) {
        let path = match relay {
            None => Path::Direct,
            Some(via) => Path::Relayed { via },
        };
        let changed = {
            let mut table = self.lock();
            let Some(entry) = table.get_mut(&peer).filter(|e| e.connected) else {
                return;
            };
            let changed = entry.path.map(|p| p.as_str()) != Some(path.as_str());
            entry.path = Some(path);
            entry.remote = Some(addr.clone());
            entry.transport = Some(match relay {
                Some(_) => "relay",
                None => transport_of(addr),
            });
            changed
        };
        if changed {
            self.events.publish(Event::PeerPath {
                peer_id: peer.to_base58(),
                path: path.as_str().into(),
            });
        }
    }

    /// Records how the latest hole-punching attempt with `peer` went.
    pub fn set_punch(&self, peer: PeerId, report: volli_net::PunchReport) {
        if let Some(entry) = self.lock().get_mut(&peer) {
            entry.last_punch = Some(report);
        }
    }

    /// Records a round-trip time.
    pub fn rtt(&self, peer: PeerId, rtt: Duration) {
        if let Some(entry) = self.lock().get_mut(&peer) {
            entry.rtt = Some(rtt);
        }
    }

    /// One peer.
    pub fn get(&self, peer: &PeerId) -> Option<PeerEntry> {
        self.lock().get(peer).cloned()
    }

    /// Every peer, connected first, then by peer id.
    pub fn list(&self) -> Vec<PeerEntry> {
        let mut peers: Vec<PeerEntry> = self.lock().values().cloned().collect();
        peers.sort_by(|a, b| {
            b.connected
                .cmp(&a.connected)
                .then(a.peer_id.cmp(&b.peer_id))
        });
        peers
    }

    /// The known devices of `user` (verified, or claimed by `hints`).
    pub fn devices_of(&self, user: &UserId) -> Vec<PeerEntry> {
        self.lock()
            .values()
            .filter(|e| e.user_id.as_ref() == Some(user))
            .cloned()
            .collect()
    }

    /// Where to reach `devices`: each with whether it is connected and its known
    /// addresses, connected ones first.
    pub fn dial_targets(
        &self,
        devices: &[DeviceCertificate],
    ) -> Vec<(PeerId, bool, Vec<Multiaddr>)> {
        let table = self.lock();
        let mut targets: Vec<_> = devices
            .iter()
            .map(|d| {
                let entry = table.get(&d.peer_id());
                (
                    d.peer_id(),
                    entry.is_some_and(|e| e.connected),
                    entry.map(|e| e.addrs.clone()).unwrap_or_default(),
                )
            })
            .collect();
        targets.sort_by_key(|(_, connected, _)| !connected);
        targets
    }

    /// The contacts with at least one device connected now.
    pub fn connected_contacts(&self) -> Vec<UserId> {
        let connected: HashSet<UserId> = self
            .lock()
            .values()
            .filter(|e| e.connected)
            .filter_map(|e| e.user_id)
            .collect();
        connected
            .into_iter()
            .filter(|u| self.is_contact(u))
            .collect()
    }

    /// Whether any device of `user` is connected.
    pub fn user_connected(&self, user: &UserId) -> bool {
        self.lock()
            .values()
            .any(|e| e.connected && e.user_id.as_ref() == Some(user))
    }

    /// The devices of `user` connected now (that proved they are its).
    pub fn connected_devices_of(&self, user: &UserId) -> Vec<PeerId> {
        self.lock()
            .values()
            .filter(|e| e.connected && e.user_id.as_ref() == Some(user))
            .map(|e| e.peer_id)
            .collect()
    }
}
