//! Dispatches network events: connections update the peer table and trigger the hello
//! exchange that binds a peer id to a user; inbound requests go to the service that owns
//! their protocol.
//!
//! The dispatch loop never waits: a request is handed to its own task at once, or refused
//! at once when its peer already has as many requests in flight as it may (a contact's
//! device [`PER_CONTACT`], anyone else [`PER_STRANGER`]) or the node has [`MAX_INFLIGHT`].
//! Peers that have not proved who they are get hellos and invites only; messages only come
//! from contacts' devices. Strangers may hold at most half the connection slots, so a crowd
//! of them cannot keep contacts out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use volli_core::PeerId;
use volli_net::{NetClient, NetEvent, NetEvents, Protocol, Responder};
use volli_store::Vault;

use crate::contacts::Contacts;
use crate::conversations::Conversations;
use crate::devices::Devices;
use crate::discovery::Discovery;
use crate::files::Files;
use crate::messaging::Messaging;
use crate::outbound::Outbound;
use crate::peers::Peers;
use crate::relay::Relay;

/// Inbound requests handled at once, in all.
pub const MAX_INFLIGHT: usize = 512;
/// Inbound requests in flight from one device of a contact.
pub const PER_CONTACT: usize = 128;
/// Inbound requests in flight from any other peer.
pub const PER_STRANGER: usize = 4;
/// How long a new connection has to say who it is before it counts against the strangers'
/// share of the connection slots.
const GRACE: Duration = Duration::from_secs(10);

/// What the dispatcher hands events to.
#[derive(Clone)]
pub struct Dispatch {
    /// The network.
    pub net: NetClient,
    /// Requests to other nodes, after a hello.
    pub outbound: Outbound,
    /// The peer table.
    pub peers: Peers,
    /// Discovery.
    pub discovery: Discovery,
    /// Contacts and invites.
    pub contacts: Contacts,
    /// The vault.
    pub vault: Vault,
    /// Messages.
    pub messaging: Messaging,
    /// Conversations on MLS.
    pub conversations: Conversations,
    /// Friends' relays.
    pub relay: Relay,
    /// The user's devices (pairing, sync).
    pub devices: Devices,
    /// File transfers.
    pub files: Files,
    /// Backups held for contacts.
    pub backups: crate::backups::Backups,
    /// Reachability and relays.
    pub connectivity: crate::connectivity::Connectivity,
    /// Connections that strangers may hold at most.
    pub max_strangers: usize,
}

/// Requests in flight, per peer and in all.
#[derive(Default)]
struct Gate {
    per_peer: Mutex<HashMap<PeerId, usize>>,
    total: AtomicUsize,
}

/// A place in the gate, given back when dropped.
struct Ticket {
    gate: Arc<Gate>,
    peer: PeerId,
}

impl Gate {
    fn enter(self: &Arc<Self>, peer: PeerId, limit: usize) -> Option<Ticket> {
        let mut per_peer = self.per_peer.lock().unwrap_or_else(|e| e.into_inner());
        let mine = per_peer.entry(peer).or_default();
        if *mine >= limit || self.total.load(Ordering::Relaxed) >= MAX_INFLIGHT {
            if *mine == 0 {
                per_peer.remove(&peer);
            }
            return None;
        }
        *mine += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(Ticket {
            gate: Arc::clone(self),
            peer,
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut per_peer = self.gate.per_peer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                per_peer.remove(&self.peer);
            }
        }
        self.gate.total.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Dispatch {
    /// Handles events until the network stops.
    pub fn spawn(self, mut events: NetEvents) {
        let gate = Arc::new(Gate::default());
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                match event {
                    NetEvent::ListenAddrs(_) => {
                        self.discovery.wake();
                        self.connectivity.wake();
                    }
                    NetEvent::Path { peer, addr, relay } => {
                        self.peers.set_path(peer, &addr, relay);
                        if relay.is_none() {
                            // Downloads from it that went through the relay move over now.
                            self.files.direct_path(peer);
                        }
                    }
                    NetEvent::Punch { peer, report } => {
                        crate::metrics::metrics().punch(report.outcome);
                        self.peers.set_punch(peer, report);
                    }
                    NetEvent::Connected { peer, addr, relay } => {
                        self.peers.set_connected(peer, true, Some(&addr), relay);
                        let this = self.clone();
                        tokio::spawn(async move {
                            this.say_hello(peer).await;
                            tokio::time::sleep(GRACE).await;
                            this.keep_slots_for_contacts().await;
                        });
                    }
                    NetEvent::Disconnected { peer } => {
                        self.peers.set_connected(peer, false, None, None);
                        if let Some(user) = self.peers.get(&peer).and_then(|e| e.user_id) {
                            self.discovery.contact_lost(user);
                        }
                    }
                    NetEvent::Identified { peer, listen_addrs } => {
                        self.peers.add_addrs(peer, &listen_addrs)
                    }
                    NetEvent::Rtt { peer, rtt } => self.peers.rtt(peer, rtt),
                    NetEvent::Request {
                        peer,
                        protocol,
                        payload,
                        responder,
                    } => {
                        let trusted = self.peers.contact_of(&peer).is_some()
                            || self.peers.is_own_device(&peer);
                        let limit = if trusted { PER_CONTACT } else { PER_STRANGER };
                        let Some(ticket) = gate.enter(peer, limit) else {
                            // Dropping the responder fails the request on the other side,
                            // which backs off and tries again.
                            tracing::debug!(%peer, ?protocol, "too many requests in flight; refused");
                            continue;
                        };
                        let this = self.clone();
                        tokio::spawn(async move {
                            this.answer(peer, protocol, payload, responder).await;
                            drop(ticket);
                        });
                    }
                    _ => {}
                }
            }
        });
    }

    /// Greets a newly connected peer; a contact's device gets what waits for it.
    async fn say_hello(&self, peer: PeerId) {
        match self.outbound.greet(peer, Vec::new()).await {
            // Once per connection: a contact's device is here, so flush what waits for it
            // and fetch what its node holds.
            Ok(Some(user)) if self.peers.contact_of(&peer) == Some(user) => {
                let connectivity = self.connectivity.clone();
                tokio::spawn(async move { connectivity.peer_ready(peer).await });
                let conversations = self.conversations.clone();
                tokio::spawn(async move { conversations.peer_ready(peer, user).await });
                self.relay.contact_ready(user).await;
                self.messaging.contact_ready(user).await;
                self.files.peer_ready(user).await;
            }
            // Another device of this user: sync with it.
            Ok(Some(user)) if self.peers.is_own_device(&peer) => {
                let connectivity = self.connectivity.clone();
                tokio::spawn(async move { connectivity.peer_ready(peer).await });
                let conversations = self.conversations.clone();
                tokio::spawn(async move { conversations.peer_ready(peer, user).await });
                self.devices.device_ready(peer).await;
                self.files.peer_ready(user).await;
                // Handshake mail waits in the outbox for the user's own devices.
                self.messaging.contact_ready(user).await;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(%peer, error = %e, "hello failed"),
        }
    }

    /// Closes connections of strangers beyond their share of the slots.
    async fn keep_slots_for_contacts(&self) {
        let strangers = self.peers.connected_strangers();
        if strangers.len() <= self.max_strangers {
            return;
        }
        let excess = strangers.len() - self.max_strangers;
        tracing::info!(
            strangers = strangers.len(),
            "too many connections from peers that are not contacts; closing {excess}"
        );
        for peer in strangers.into_iter().take(excess) {
            self.net.disconnect(peer).await;
        }
    }

    async fn answer(
        &self,
        peer: PeerId,
        protocol: Protocol,
        payload: Vec<u8>,
        responder: Responder,
    ) {
        match protocol {
            Protocol::Hello => {
                let _ = self.outbound.heard(peer, &payload);
                responder.respond(self.outbound.hello()).await;
            }
            Protocol::Invite => {
                let response = self.contacts.handle_redeem(peer, &payload).await;
                responder.respond(response).await;
            }
            Protocol::Message => {
                let from = self.peers.contact_of(&peer).or_else(|| {
                    self.peers
                        .is_own_device(&peer)
                        .then(|| self.peers.user_of(&peer))
                        .flatten()
                });
                let response = match from {
                    Some(user) => self.messaging.handle(user, &payload).await,
                    None => self.messaging.refuse_stranger(),
                };
                responder.respond(response).await
            }
            // Key packages, missed commits, requests to be added again: between contacts'
            // devices and the user's own.
            Protocol::Mls => {
                let trusted =
                    self.peers.contact_of(&peer).is_some() || self.peers.is_own_device(&peer);
                match self.peers.user_of(&peer).filter(|_| trusted) {
                    Some(user) => {
                        let response = self.conversations.handle(peer, user, &payload).await;
                        responder.respond(response).await;
                    }
                    None => drop(responder),
                }
            }
            Protocol::Relay => {
                let response = self.relay.handle(peer, &payload).await;
                responder.respond(response).await;
            }
            // Anyone may ask to pair (a code or a link is needed to get anywhere); only the
            // user's own devices sync (checked again inside).
            Protocol::Pair => {
                let response = self.devices.handle(peer, protocol, &payload).await;
                responder.respond(response).await;
            }
            Protocol::Sync if self.peers.is_own_device(&peer) => {
                let response = self.devices.handle(peer, protocol, &payload).await;
                responder.respond(response).await;
            }
            // Files, between contacts and between the user's own devices.
            Protocol::File => {
                let trusted =
                    self.peers.contact_of(&peer).is_some() || self.peers.is_own_device(&peer);
                match self.peers.user_of(&peer).filter(|_| trusted) {
                    Some(user) => {
                        let response = self.files.handle(peer, user, &payload).await;
                        responder.respond(response).await;
                    }
                    None => drop(responder),
                }
            }
            // Backups: contacts' devices put and keep theirs; anyone with a backup's access
            // secret may read it (checked inside, rate-limited per peer).
            // Files through friends: a contact's files for its offline contacts, and the
            // files held here for a contact.
            Protocol::Hold => {
                use volli_core::wire::{self, HoldRequest, HoldResponse};
                let response = match wire::decode::<HoldRequest>(&payload, protocol.max_request()) {
                    Ok(
                        request @ (HoldRequest::File { .. }
                        | HoldRequest::FileChunk { .. }
                        | HoldRequest::FilesHeld
                        | HoldRequest::FileDone(_)),
                    ) => match self.peers.contact_of(&peer) {
                        Some(user) => self.files.answer_hold(user, request).await,
                        None => HoldResponse::Refused(
                            "this node holds files for its contacts' current devices only".into(),
                        ),
                    },
                    Ok(request) => self.backups.answer_request(peer, request).await,
                    Err(_) => HoldResponse::Refused("malformed request".into()),
                };
                responder.respond(wire::encode(&response)).await;
            }
            // Not served: dropping the responder fails the requester's call.
            _ => drop(responder),
        }
    }
}
