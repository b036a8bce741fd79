//! `NetClient`: the handle the rest of the node uses. Every method sends one command to the
//! event loop over a bounded channel and awaits its reply.

use std::time::Duration;

use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch};

use crate::protocol::Protocol;
use crate::{Connectivity, NetError};

type Reply<T> = oneshot::Sender<Result<T, NetError>>;

pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    Dial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: Reply<()>,
    },
    Disconnect(PeerId),
    Request {
        peer: PeerId,
        protocol: Protocol,
        payload: Vec<u8>,
        addrs: Vec<Multiaddr>,
        reply: Reply<Vec<u8>>,
    },
    Respond {
        protocol: Protocol,
        channel: ResponseChannel<Vec<u8>>,
        payload: Vec<u8>,
    },
    DhtPut {
        key: Vec<u8>,
        value: Vec<u8>,
        reply: Reply<()>,
    },
    DhtGet {
        key: Vec<u8>,
        reply: Reply<Vec<Vec<u8>>>,
    },
    DhtProvide {
        key: Vec<u8>,
        reply: Reply<()>,
    },
    DhtProviders {
        key: Vec<u8>,
        reply: Reply<Vec<PeerId>>,
    },
    DhtBootstrap(Reply<()>),
    RendezvousRegister {
        namespace: String,
        ttl: Duration,
        reply: Reply<()>,
    },
    RendezvousDiscover {
        namespace: String,
        reply: Reply<Vec<(PeerId, Vec<Multiaddr>)>>,
    },
    ListenVia {
        relay: Multiaddr,
        reply: Reply<()>,
    },
    StopListeningVia(PeerId),
    DialedAddr {
        peer: PeerId,
        reply: oneshot::Sender<Option<Multiaddr>>,
    },
    Shutdown(oneshot::Sender<()>),
}

/// A handle to the network. Cheap to clone.
#[derive(Clone)]
pub struct NetClient {
    tx: mpsc::Sender<Command>,
    local_peer: PeerId,
    connectivity: watch::Receiver<Connectivity>,
}

impl NetClient {
    pub(crate) fn new(
        tx: mpsc::Sender<Command>,
        local_peer: PeerId,
        connectivity: watch::Receiver<Connectivity>,
    ) -> Self {
        Self {
            tx,
            local_peer,
            connectivity,
        }
    }

    /// Where this node stands (reachability, external addresses, relays), kept current:
    /// `borrow()` for now, `changed()` to wait for the next change.
    pub fn connectivity(&self) -> watch::Receiver<Connectivity> {
        self.connectivity.clone()
    }

    /// Listens through the circuit relay at `relay` (`…/p2p/<relay peer id>`): asks it for a
    /// reservation (renewed while it lasts) and, once it holds one, this node is reachable at
    /// `<relay>/p2p-circuit/p2p/<this node>`. Returns once the request is under way; the
    /// outcome shows in [`Self::connectivity`].
    pub async fn listen_via(&self, relay: Multiaddr) -> Result<(), NetError> {
        self.call(|reply| Command::ListenVia { relay, reply }).await
    }

    /// Stops listening through relay `relay`.
    pub async fn stop_listening_via(&self, relay: PeerId) {
        let _ = self.tx.send(Command::StopListeningVia(relay)).await;
    }

    /// The address this node dialed `peer` at, if it holds a direct connection it opened
    /// itself (not a hole punch, not one the peer opened, and never to a peer reached
    /// directly only after a relayed connection: behind a NAT whose mapping the punch
    /// opened): proof that `peer` is reachable there from this node's network.
    pub async fn dialed_addr(&self, peer: PeerId) -> Option<Multiaddr> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::DialedAddr { peer, reply: tx })
            .await
            .ok()?;
        rx.await.ok().flatten()
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| NetError::Closed)?;
        rx.await.map_err(|_| NetError::Closed)?
    }

    /// Where this node listens now.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::ListenAddrs(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Peers with at least one open connection.
    pub async fn connected_peers(&self) -> Vec<PeerId> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::ConnectedPeers(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Connects to `peer` (at `addrs`, or at addresses the network already knows). Returns
    /// once connected; the Noise handshake proves the peer id.
    pub async fn dial(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), NetError> {
        self.call(|reply| Command::Dial { peer, addrs, reply })
            .await
    }

    /// Closes every connection to `peer`.
    pub async fn disconnect(&self, peer: PeerId) {
        let _ = self.tx.send(Command::Disconnect(peer)).await;
    }

    /// Sends a request and waits for the response, dialing if needed.
    pub async fn request(
        &self,
        peer: PeerId,
        protocol: Protocol,
        payload: Vec<u8>,
        addrs: Vec<Multiaddr>,
    ) -> Result<Vec<u8>, NetError> {
        if payload.len() > protocol.max_request() {
            return Err(NetError::Request {
                peer: peer.to_string(),
                reason: format!("request larger than {} bytes", protocol.max_request()),
            });
        }
        self.call(|reply| Command::Request {
            peer,
            protocol,
            payload,
            addrs,
            reply,
        })
        .await
    }

    /// Stores a record in the DHT (validated like inbound ones).
    pub async fn dht_put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), NetError> {
        self.call(|reply| Command::DhtPut { key, value, reply })
            .await
    }

    /// Valid records found under `key`, locally and on the closest peers.
    pub async fn dht_get(&self, key: Vec<u8>) -> Result<Vec<Vec<u8>>, NetError> {
        self.call(|reply| Command::DhtGet { key, reply }).await
    }

    /// Announces this node as a provider of `key`.
    pub async fn dht_provide(&self, key: Vec<u8>) -> Result<(), NetError> {
        self.call(|reply| Command::DhtProvide { key, reply }).await
    }

    /// Providers of `key`.
    pub async fn dht_providers(&self, key: Vec<u8>) -> Result<Vec<PeerId>, NetError> {
        self.call(|reply| Command::DhtProviders { key, reply })
            .await
    }

    /// Refreshes the routing table from the bootstrap peers.
    pub async fn dht_bootstrap(&self) -> Result<(), NetError> {
        self.call(Command::DhtBootstrap).await
    }

    /// Registers under `namespace` at every configured rendezvous point; succeeds if one
    /// accepted.
    pub async fn rendezvous_register(
        &self,
        namespace: String,
        ttl: Duration,
    ) -> Result<(), NetError> {
        self.call(|reply| Command::RendezvousRegister {
            namespace,
            ttl,
            reply,
        })
        .await
    }

    /// Peers registered under `namespace` at the rendezvous points, with their (signed)
    /// addresses.
    pub async fn rendezvous_discover(
        &self,
        namespace: String,
    ) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, NetError> {
        self.call(|reply| Command::RendezvousDiscover { namespace, reply })
            .await
    }

    /// Stops the event loop, closing every connection.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Where to send the response to an inbound request. Dropping it without responding makes
/// the requester's call fail (the stream closes with no answer, which the codec refuses).
#[derive(Debug)]
pub struct Responder {
    protocol: Protocol,
    channel: ResponseChannel<Vec<u8>>,
    tx: mpsc::Sender<Command>,
}

impl Responder {
    pub(crate) fn new(
        protocol: Protocol,
        channel: ResponseChannel<Vec<u8>>,
        tx: mpsc::Sender<Command>,
    ) -> Self {
        Self {
            protocol,
            channel,
            tx,
        }
    }

    /// Sends the response.
    pub async fn respond(self, payload: Vec<u8>) {
        let _ = self
            .tx
            .send(Command::Respond {
                protocol: self.protocol,
                channel: self.channel,
                payload,
            })
            .await;
    }
}
