//! Keeps connections to the peers a filter names (the user's contacts and own devices) open
//! while they are idle; other connections close after the swarm's idle timeout.
//!
//! Without it, a quiet connection to a contact closed after the idle timeout and the node
//! looked the contact up and dialed it again at once (it wants its contacts connected, for
//! presence and prompt delivery): a full handshake, identify, hello and card exchange every
//! couple of minutes, which kept an idle node with one contact online at several wake-ups a
//! second. An open idle connection costs one ping each way a minute.
//!
//! The filter is asked whenever the connection checks whether it may close, so a peer that
//! becomes a contact on an open connection (an invite redeemed over it) is kept from then on,
//! and a removed contact's connection closes after the idle timeout.
//!
//! A connection through a relay is kept only while the peer has no direct one: once a hole
//! punch succeeds, the relayed connection goes quiet and closes, so that nothing (a request
//! that picks a connection, a file's chunks) keeps going through the relay.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::core::{ConnectedPoint, Endpoint, transport::PortUse};
use libp2p::swarm::behaviour::{ConnectionClosed, ConnectionEstablished};
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandlerEvent, ConnectionId, FromSwarm, NetworkBehaviour,
    SubstreamProtocol, THandler, THandlerInEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

use crate::PeerFilter;
use crate::event_loop::is_circuit;

/// The behaviour: one [`Handler`] per connection, asking `keep` about its peer.
pub(crate) struct Behaviour {
    keep: Option<PeerFilter>,
    /// Direct connections open, per peer; shared with the peer's relayed connections.
    direct: HashMap<PeerId, Arc<AtomicUsize>>,
}

impl Behaviour {
    /// Keeps the connections of the peers `keep` names; `None` keeps none.
    pub(crate) fn new(keep: Option<PeerFilter>) -> Self {
        Self {
            keep,
            direct: HashMap::new(),
        }
    }

    fn handler(&mut self, peer: PeerId, addr: &Multiaddr) -> Handler {
        Handler {
            peer,
            keep: self.keep.clone(),
            direct: is_circuit(addr).then(|| self.direct.entry(peer).or_default().clone()),
        }
    }

    fn count(&mut self, peer: PeerId, endpoint: &ConnectedPoint, up: bool) {
        if is_circuit(endpoint.get_remote_address()) {
            return;
        }
        let count = self.direct.entry(peer).or_default();
        if up {
            count.fetch_add(1, Ordering::Relaxed);
        } else {
            let _ = count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            // Forgotten once nothing refers to it.
            if count.load(Ordering::Relaxed) == 0 && Arc::strong_count(count) == 1 {
                self.direct.remove(&peer);
            }
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer, remote))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer, addr))
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: Infallible) {
        match event {}
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id, endpoint, ..
            }) => self.count(peer_id, endpoint, true),
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id, endpoint, ..
            }) => self.count(peer_id, endpoint, false),
            _ => {}
        }
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// A handler with no protocol of its own: it only answers whether to keep the connection.
pub(crate) struct Handler {
    peer: PeerId,
    keep: Option<PeerFilter>,
    /// For a relayed connection: the peer's direct connections open.
    direct: Option<Arc<AtomicUsize>>,
}

impl libp2p::swarm::ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<DeniedUpgrade, ()> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        let superseded = self
            .direct
            .as_ref()
            .is_some_and(|direct| direct.load(Ordering::Relaxed) > 0);
        !superseded && self.keep.as_ref().is_some_and(|keep| keep(&self.peer))
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, (), Infallible>> {
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn on_connection_event(&mut self, _: ConnectionEvent<DeniedUpgrade, DeniedUpgrade>) {
        // DeniedUpgrade negotiates nothing: no stream of this handler ever opens.
    }
}
