//! Volli's networking: a libp2p `Swarm` owned by one [`EventLoop`](event_loop) task, and a
//! cheap [`NetClient`] handle that sends it commands over a bounded channel and awaits replies
//! on oneshot channels (the shape of rust-libp2p's file-sharing example).
//!
//! Transports: TCP + Noise + Yamux, QUIC, and circuit relay v2 as a client. Behaviours:
//! identify, ping, Kademlia (protocol `/volli/kad/1`, records validated by the node),
//! rendezvous (client, and server when configured), relay v2 server (bounded), DCUtR, AutoNAT
//! v2 (client and server), UPnP port mapping (when configured), connection and memory
//! limits, and one request-response behaviour per application protocol (`/volli/hello/1`,
//! `/volli/invite/1`, …) carrying opaque bytes.
//!
//! Where this node stands — reachable from outside or not, its confirmed external
//! addresses, the relays it listens through — is a [`Connectivity`] the node watches
//! ([`NetClient::connectivity`]); which relays to listen through the node decides
//! ([`NetClient::listen_via`]). Each peer's path (direct or through a relay) comes with the
//! connection events; once a direct connection stands beside a relayed one, the relayed one
//! is closed, so traffic moves to the direct path.
//!
//! This crate knows nothing of users, contacts or messages: the node parses the bytes.
#![warn(missing_docs)]

mod behaviour;
mod client;
mod codec;
mod event_loop;
mod events;
mod keep_alive;
mod protocol;
mod punch;

use std::sync::Arc;
use std::time::Duration;

pub use client::{NetClient, Responder};
pub use events::NetEvents;
pub use libp2p::identity::Keypair;
pub use libp2p::multiaddr::Protocol as MultiaddrProtocol;
pub use libp2p::{Multiaddr, PeerId};
pub use protocol::Protocol;

/// Decides whether a Kademlia record (key, value) may be stored or returned.
pub type RecordValidator = Arc<dyn Fn(&[u8], &[u8]) -> bool + Send + Sync>;

/// Decides whether a peer may use something this node serves.
pub type PeerFilter = Arc<dyn Fn(&PeerId) -> bool + Send + Sync>;

/// How to start the network.
#[derive(Clone)]
pub struct NetConfig {
    /// This device's key (its peer id).
    pub keypair: Keypair,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Kademlia bootstrap peers (`…/p2p/<peer id>`).
    pub bootstrap: Vec<Multiaddr>,
    /// Rendezvous points (`…/p2p/<peer id>`).
    pub rendezvous_points: Vec<Multiaddr>,
    /// Take part in the Kademlia DHT (records, providers, peer routing).
    pub dht: bool,
    /// Serve as a rendezvous point.
    pub rendezvous_server: bool,
    /// Serve as a circuit relay: reservations only for the peers `relay_for` admits, at most
    /// 32 of them (2 per peer), and 32 circuits (4 per peer).
    pub relay_server: bool,
    /// Who may reserve a slot on this node's circuit relay (`None`: anyone, within the
    /// limits).
    pub relay_for: Option<PeerFilter>,
    /// Whose connections stay open while idle (the user's contacts and own devices); the
    /// others close after two idle minutes. `None`: nobody's. The same peers' hole punching
    /// goes beyond DCUtR's own tries (spaced re-dials, later attempts; `None`: everyone's).
    pub keep_alive_for: Option<PeerFilter>,
    /// Addresses to announce besides the listen addresses.
    pub external_addrs: Vec<Multiaddr>,
    /// Connections kept at most.
    pub max_connections: u32,
    /// Validates DHT records (inbound stores and lookups); `None` accepts none.
    pub record_validator: Option<RecordValidator>,
    /// How long a request waits for its response.
    pub request_timeout: Duration,
    /// Where libp2p's own metrics (connections, dials, Kademlia, identify, ping, relay) are
    /// recorded; made once per process with [`Libp2pMetrics::new`] on the node's registry.
    pub metrics: Option<&'static Libp2pMetrics>,
    /// Ask the home router (UPnP IGD) to forward the listen ports.
    pub upnp: bool,
    /// Count only globally routable addresses as reachable from outside (AutoNAT); off
    /// where "outside" is a private network (a company LAN, tests).
    pub autonat_global_only: bool,
    /// How long one circuit through this node's relay may last, and how many bytes it may
    /// carry (0: no limit); a circuit cut short is opened again by its ends.
    pub relay_circuit_duration: Duration,
    /// See `relay_circuit_duration`.
    pub relay_circuit_bytes: u64,
}

/// Whether this node can be reached from outside its own network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reachability {
    /// Another node dialed one of its addresses back (AutoNAT), a router forwards its port
    /// (UPnP), or an address was configured as external.
    Public,
    /// Every address tested from outside failed: it is behind a NAT or a firewall.
    Private,
    /// Not known yet (no test done, or nobody to test with).
    #[default]
    Unknown,
}

/// A relay this node listens through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayListener {
    /// The relay.
    pub relay: PeerId,
    /// Its address (`…/p2p/<relay>`).
    pub addr: Multiaddr,
    /// Whether the relay holds a reservation for this node (else it is being asked).
    pub reserved: bool,
}

/// Where this node stands on the network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Connectivity {
    /// Reachable from outside or not.
    pub reachability: Reachability,
    /// Addresses confirmed reachable from outside (not through a relay).
    pub external_addrs: Vec<Multiaddr>,
    /// Relays listened through.
    pub relays: Vec<RelayListener>,
}

/// How an attempt to replace a relayed connection by a direct one (a hole punch) went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PunchOutcome {
    /// Under way.
    Trying,
    /// A direct connection came up; the relayed one is closed.
    Direct,
    /// No direct connection within the attempt; the peer stays relayed.
    Failed,
}

impl PunchOutcome {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            PunchOutcome::Trying => "trying",
            PunchOutcome::Direct => "direct",
            PunchOutcome::Failed => "failed",
        }
    }
}

/// The latest hole-punching attempt with a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PunchReport {
    /// How it went.
    pub outcome: PunchOutcome,
    /// The transport of the direct connection (`quic`, `tcp`), when it succeeded.
    pub transport: Option<&'static str>,
    /// Why it failed: what the dials to the peer's addresses said.
    pub reason: Option<String>,
    /// When this was known.
    pub at: std::time::SystemTime,
}

/// libp2p's metrics, registered under `libp2p_` in a Prometheus registry.
pub use libp2p::metrics::Metrics as Libp2pMetrics;

impl NetConfig {
    /// Defaults around a key and listen addresses.
    pub fn new(keypair: Keypair, listen: Vec<Multiaddr>) -> Self {
        Self {
            keypair,
            listen,
            bootstrap: Vec::new(),
            rendezvous_points: Vec::new(),
            dht: true,
            rendezvous_server: false,
            relay_server: true,
            relay_for: None,
            keep_alive_for: None,
            external_addrs: Vec::new(),
            max_connections: 256,
            record_validator: None,
            request_timeout: Duration::from_secs(20),
            metrics: None,
            upnp: false,
            autonat_global_only: true,
            relay_circuit_duration: Duration::from_secs(3600),
            relay_circuit_bytes: 0,
        }
    }
}

/// What the network tells the node.
#[derive(Debug)]
#[non_exhaustive]
pub enum NetEvent {
    /// The set of addresses this node listens on changed.
    ListenAddrs(Vec<Multiaddr>),
    /// The first connection to `peer` was established.
    Connected {
        /// The peer.
        peer: PeerId,
        /// Its address on this connection.
        addr: Multiaddr,
        /// The relay the connection goes through; `None` when it is direct.
        relay: Option<PeerId>,
    },
    /// The path to a connected peer changed: a direct connection came up beside a relayed
    /// one, or the direct one went and a relayed one remains.
    Path {
        /// The peer.
        peer: PeerId,
        /// Its address on the connection now used.
        addr: Multiaddr,
        /// The relay it is now reached through; `None` when it is reached directly.
        relay: Option<PeerId>,
    },
    /// The last connection to `peer` closed.
    Disconnected {
        /// The peer.
        peer: PeerId,
    },
    /// A peer told us (through identify) where it listens.
    Identified {
        /// The peer.
        peer: PeerId,
        /// Its listen addresses.
        listen_addrs: Vec<Multiaddr>,
    },
    /// A ping measured the round trip to a peer.
    Rtt {
        /// The peer.
        peer: PeerId,
        /// Round-trip time.
        rtt: Duration,
    },
    /// A hole-punching attempt with `peer` started or ended.
    Punch {
        /// The peer.
        peer: PeerId,
        /// What happened.
        report: PunchReport,
    },
    /// A peer sent a request on one of the application protocols.
    Request {
        /// The peer.
        peer: PeerId,
        /// Which protocol.
        protocol: Protocol,
        /// The request bytes (size already bounded by the protocol).
        payload: Vec<u8>,
        /// Where to send the response.
        responder: Responder,
    },
}

/// A network failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// A listen address could not be used.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Building the transport failed.
    #[error("cannot start the network: {0}")]
    Setup(String),
    /// The peer could not be reached.
    #[error("cannot reach {peer}: {reason}")]
    Unreachable {
        /// The peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A request failed or timed out.
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// The peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A DHT or rendezvous operation failed.
    #[error("{0}")]
    Discovery(String),
    /// The event loop has stopped.
    #[error("the network is shut down")]
    Closed,
}

/// Starts the network: listens, dials the bootstrap peers, and spawns the event loop.
/// Returns the client handle and the stream of events for the node.
pub async fn start(config: NetConfig) -> Result<(NetClient, NetEvents), NetError> {
    event_loop::start(config).await
}
