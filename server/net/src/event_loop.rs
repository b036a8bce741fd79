//! The event loop: the only owner of the `Swarm`. It serves commands from `NetClient`s,
//! turns swarm events into `NetEvent`s for the node, and completes pending operations.
//!
//! Everything is bounded: the command channel, the event channel (requests and other events
//! are dropped, with a warning, if the node falls that far behind — a dropped request is a
//! refused one), the table of connection changes (one entry per peer, never dropped; see
//! `events.rs`), and every table of pending operations (expired by a once-a-second sweep while any is pending).
//!
//! It also keeps the [`Connectivity`] snapshot: AutoNAT v2 and UPnP confirm external
//! addresses (public), failed AutoNAT tests with nothing confirmed mean private; relay
//! listeners the node asked for are tracked from request to reservation to close. Per peer it
//! keeps the open connections and whether each is relayed, so the node hears of each peer's
//! path, and a relayed connection is closed once a direct one to the same peer is up.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use libp2p::core::transport::ListenerId;
use libp2p::kad::store::RecordStore as _;
use libp2p::kad::{
    self, GetProvidersOk, GetRecordOk, QueryId, QueryResult, Quorum, Record, RecordKey,
};
use libp2p::multiaddr::Protocol as AddrProtocol;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, autonat, dcutr, identify, noise, ping, relay, rendezvous, tcp, upnp,
    yamux,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL};
use crate::client::{Command, NetClient, Responder};
use crate::events::{Links, NetEvents};
use crate::protocol::Protocol;
use crate::punch::{Action, Punches};
use crate::{
    Connectivity, NetConfig, NetError, NetEvent, Reachability, RecordValidator, RelayListener,
};

const COMMANDS: usize = 256;
const EVENTS: usize = 1024;
/// How long dials and rendezvous operations may stay pending.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_PENDING: usize = 4096;
const RENDEZVOUS_LIMIT: u64 = 64;

type Reply<T> = oneshot::Sender<Result<T, NetError>>;

struct Pending<T> {
    reply: Reply<T>,
    deadline: Instant,
}

struct RendezvousOp<T> {
    reply: Reply<T>,
    waiting: HashSet<PeerId>,
    found: T,
    ok: bool,
    deadline: Instant,
}

pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    command_tx: mpsc::Sender<Command>,
    events: mpsc::Sender<NetEvent>,
    links: Links,
    validator: Option<RecordValidator>,
    rendezvous_points: Vec<PeerId>,
    listen_addrs: BTreeSet<Multiaddr>,
    dials: HashMap<PeerId, Vec<Pending<()>>>,
    requests: HashMap<(Protocol, OutboundRequestId), PendingRequest>,
    gets: HashMap<QueryId, PendingGet>,
    puts: HashMap<QueryId, Reply<()>>,
    provides: HashMap<QueryId, Reply<()>>,
    providers: HashMap<QueryId, (HashSet<PeerId>, Reply<Vec<PeerId>>)>,
    bootstraps: HashMap<QueryId, Reply<()>>,
    registers: HashMap<String, RendezvousOp<()>>,
    discovers: HashMap<String, RendezvousOp<Registrations>>,
    metrics: Option<&'static crate::Libp2pMetrics>,
    /// Open connections per peer: the peer's address on each, and the relay it goes through
    /// (`None`: direct).
    connections: HashMap<PeerId, Vec<Conn>>,
    /// Peers connected through a relay in this run (at most [`MAX_PUNCHED`]): behind a NAT, whatever a later direct
    /// connection suggests (a hole punch, or a plain dial the punch's mappings let through,
    /// maybe after the relayed connection closed) — reachable from here, not from outside,
    /// so never a relay (`DialedAddr`).
    punched: std::collections::HashSet<PeerId>,
    /// Relays listened through, by their listener.
    relay_listeners: HashMap<ListenerId, RelayListener>,
    /// External addresses configured (taken as public).
    configured: BTreeSet<Multiaddr>,
    /// Addresses the router forwards to this node (UPnP).
    mapped: BTreeSet<Multiaddr>,
    /// What AutoNAT found out: an address dialed back from outside, or none.
    nat: autonat::NatStatus,
    connectivity: watch::Sender<Connectivity>,
    /// Hole-punching attempts beyond DCUtR's own tries.
    punches: Punches,
    /// Peers this node opened a QUIC connection to beside a TCP one (so that its QUIC
    /// mapping is observed), and when.
    quic_probed: HashMap<PeerId, Instant>,
}

/// Peers remembered as QUIC-probed at most, and how long before one is probed again.
const MAX_QUIC_PROBED: usize = 256;
/// Peers remembered as reached through a relay.
const MAX_PUNCHED: usize = 4096;
const QUIC_PROBE_AGAIN: Duration = Duration::from_secs(10 * 60);

/// The peer an outbound request went to and who waits for its answer.
type PendingRequest = (PeerId, Reply<Vec<u8>>);
/// Records found so far by a DHT get and who waits for them.
type PendingGet = (Vec<Vec<u8>>, Reply<Vec<Vec<u8>>>);
/// Peers and their addresses registered under a rendezvous namespace.
type Registrations = Vec<(PeerId, Vec<Multiaddr>)>;

/// Whether `addr` goes through a circuit relay.
pub(crate) fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, AddrProtocol::P2pCircuit))
}

/// Whether no other program listens on the fixed TCP port of `addr`. The TCP transport
/// binds its listeners with `SO_REUSEPORT` (hole punching dials from the listen port), so a
/// second node given the same port would share it without an error and the kernel would
/// hand each incoming connection to one of the two at random; a plain bind first finds the
/// port taken. Port 0 and non-TCP addresses pass.
fn port_is_free(addr: &Multiaddr) -> Result<(), String> {
    let mut parts = addr.iter();
    let ip: std::net::IpAddr = match parts.next() {
        Some(AddrProtocol::Ip4(ip)) => ip.into(),
        Some(AddrProtocol::Ip6(ip)) => ip.into(),
        _ => return Ok(()),
    };
    let port = match parts.next() {
        Some(AddrProtocol::Tcp(port)) if port != 0 => port,
        _ => return Ok(()),
    };
    let domain = if ip.is_ipv6() {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let probe = || -> std::io::Result<()> {
        let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
        if ip.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_reuse_address(true)?;
        socket.bind(&std::net::SocketAddr::new(ip, port).into())?;
        socket.listen(1)
    };
    match probe() {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(format!(
            "TCP port {port} is already in use by another program (another node?); choose \
             another port with --p2p-listen or p2p_listen in the configuration"
        )),
        // Anything else (an address the host does not have, say) the transport reports.
        Err(_) => Ok(()),
    }
}

/// Whether `addr` is IPv6's unspecified address (every IPv6 interface).
fn is_any_ipv6(addr: &Multiaddr) -> bool {
    matches!(addr.iter().next(), Some(AddrProtocol::Ip6(ip)) if ip.is_unspecified())
}

/// One open connection.
struct Conn {
    id: ConnectionId,
    /// The peer's address on it.
    remote: Multiaddr,
    /// The relay it goes through; `None` when direct.
    relay: Option<PeerId>,
    /// This node dialed it in the dialer's role (for a relayed one: this node opened the
    /// circuit; the peer listens through the relay).
    dialed: bool,
    /// Dialed directly while no relayed connection to the peer existed: not a hole punch.
    plain: bool,
    /// For a relayed connection the peer opened: the way back to it through the same relay
    /// (this node's circuit listen address, then the peer), for a later attempt.
    back: Option<Multiaddr>,
}

fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, AddrProtocol::QuicV1))
}

fn is_tcp(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, AddrProtocol::Tcp(_))) && !is_circuit(addr)
}

fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    match addr.iter().next()? {
        AddrProtocol::Ip4(ip) => Some(ip.into()),
        AddrProtocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    }
}

/// The relay a connection goes through: the peer named before `/p2p-circuit` in its
/// address (ours, when it came in through our reservation); `None` when it is direct.
fn relay_of(endpoint: &libp2p::core::ConnectedPoint) -> Option<PeerId> {
    let addr = match endpoint {
        libp2p::core::ConnectedPoint::Dialer { address, .. } => address,
        libp2p::core::ConnectedPoint::Listener { local_addr, .. } => local_addr,
    };
    let mut last = None;
    for p in addr {
        match p {
            AddrProtocol::P2p(peer) => last = Some(peer),
            AddrProtocol::P2pCircuit => return last,
            _ => {}
        }
    }
    None
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        AddrProtocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

fn dht_off() -> NetError {
    NetError::Discovery("this node does not take part in the DHT".into())
}

fn setup(e: impl std::fmt::Display) -> NetError {
    NetError::Setup(e.to_string())
}

pub(crate) async fn start(config: NetConfig) -> Result<(NetClient, NetEvents), NetError> {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(setup)?
        // QUIC's keep-alive every 25 s, not 5 s (libp2p's default): an idle connection to a
        // contact is kept open (see `keep_alive`), and a packet each way every 5 s was most of
        // what such a node did. 25 s is within what home routers keep a UDP mapping for (the
        // interval WireGuard uses); the idle timeout, the lower of both ends' values, is 60 s
        // here, and a peer with libp2p's 10 s sends its own keep-alives every 5 s, which keep
        // both ends' timers fresh.
        .with_quic_config(|mut quic| {
            quic.keep_alive_interval = Duration::from_secs(25);
            quic.max_idle_timeout = 60_000;
            quic
        })
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(setup)?
        .with_behaviour(|key, relay_client| Behaviour::new(key, relay_client, &config))
        .map_err(setup)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();

    let mut listening = 0;
    for addr in &config.listen {
        if let Err(reason) = port_is_free(addr) {
            return Err(NetError::Listen {
                addr: addr.to_string(),
                reason,
            });
        }
        match swarm.listen_on(addr.clone()) {
            Ok(_) => listening += 1,
            // Every IPv6 address (the default beside IPv4's) where the host has no IPv6: the
            // node goes on with the others.
            Err(e) if is_any_ipv6(addr) => {
                tracing::warn!(%addr, error = %e, "not listening on IPv6");
            }
            Err(e) => {
                return Err(NetError::Listen {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                });
            }
        }
    }
    if listening == 0
        && let Some(addr) = config.listen.first()
    {
        return Err(NetError::Listen {
            addr: addr.to_string(),
            reason: "no listen address could be bound".into(),
        });
    }
    for addr in &config.external_addrs {
        swarm.add_external_address(addr.clone());
    }
    for addr in &config.bootstrap {
        let Some(peer) = peer_of(addr) else {
            return Err(NetError::Setup(format!(
                "bootstrap address {addr} lacks /p2p/<peer id>"
            )));
        };
        if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
            kad.add_address(&peer, addr.clone());
        }
        swarm.add_peer_address(peer, addr.clone());
    }
    let mut rendezvous_points = Vec::new();
    for addr in &config.rendezvous_points {
        let Some(peer) = peer_of(addr) else {
            return Err(NetError::Setup(format!(
                "rendezvous point {addr} lacks /p2p/<peer id>"
            )));
        };
        swarm.add_peer_address(peer, addr.clone());
        rendezvous_points.push(peer);
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, error = %e, "cannot dial the rendezvous point yet");
        }
    }
    if !config.bootstrap.is_empty()
        && let Some(kad) = swarm.behaviour_mut().kad.as_mut()
        && let Err(e) = kad.bootstrap()
    {
        tracing::warn!(error = %e, "DHT bootstrap could not start");
    }

    let local_peer = *swarm.local_peer_id();
    let external: BTreeSet<Multiaddr> = config.external_addrs.iter().cloned().collect();
    let (connectivity, connectivity_rx) = watch::channel(Connectivity {
        reachability: if external.is_empty() {
            Reachability::Unknown
        } else {
            Reachability::Public
        },
        external_addrs: external.iter().cloned().collect(),
        relays: Vec::new(),
    });
    let (command_tx, commands) = mpsc::channel(COMMANDS);
    let (events, events_rx) = mpsc::channel(EVENTS);
    let links = Links::default();
    let event_loop = EventLoop {
        swarm,
        commands,
        command_tx: command_tx.clone(),
        events,
        links: links.clone(),
        validator: config.record_validator.clone(),
        rendezvous_points,
        listen_addrs: BTreeSet::new(),
        dials: HashMap::new(),
        requests: HashMap::new(),
        gets: HashMap::new(),
        puts: HashMap::new(),
        provides: HashMap::new(),
        providers: HashMap::new(),
        bootstraps: HashMap::new(),
        registers: HashMap::new(),
        discovers: HashMap::new(),
        metrics: config.metrics,
        connections: HashMap::new(),
        punched: std::collections::HashSet::new(),
        relay_listeners: HashMap::new(),
        configured: external,
        mapped: BTreeSet::new(),
        nat: autonat::NatStatus::Unknown,
        connectivity,
        punches: Punches::new(config.keep_alive_for.clone()),
        quic_probed: HashMap::new(),
    };
    tokio::spawn(event_loop.run());
    Ok((
        NetClient::new(command_tx, local_peer, connectivity_rx),
        NetEvents::new(links, events_rx),
    ))
}

impl EventLoop {
    async fn run(mut self) {
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let punch_at = self.punches.next_wake();
            let punch_due = async {
                match punch_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                () = punch_due => self.punch_due(),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown(done)) => {
                        let _ = done.send(());
                        return;
                    }
                    Some(command) => self.on_command(command),
                    None => return,
                },
                // Only while something has a deadline: an idle node does not wake for it.
                _ = sweep.tick(), if self.has_deadlines() => self.expire(),
            }
        }
    }

    fn emit(&self, event: NetEvent) {
        if let Err(mpsc::error::TrySendError::Full(event)) = self.events.try_send(event) {
            tracing::warn!(
                ?event,
                "the node is not keeping up with network events; one was dropped"
            );
        }
    }

    /// The Kademlia behaviour; only called after checking that the DHT is on.
    fn kad(&mut self) -> &mut kad::Behaviour<kad::store::MemoryStore> {
        self.swarm
            .behaviour_mut()
            .kad
            .as_mut()
            .unwrap_or_else(|| unreachable!("DHT commands are answered early when the DHT is off"))
    }

    fn valid(&self, key: &[u8], value: &[u8]) -> bool {
        self.validator.as_ref().is_some_and(|v| v(key, value))
    }

    fn busy(&self) -> bool {
        self.requests.len() + self.gets.len() + self.puts.len() + self.providers.len() > MAX_PENDING
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Shutdown(_) => {}
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.listen_addrs.iter().cloned().collect());
            }
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Dial { peer, addrs, reply } => {
                let opts = DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .extend_addresses_through_behaviour()
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                match self.swarm.dial(opts) {
                    Ok(()) => self.dials.entry(peer).or_default().push(Pending {
                        reply,
                        deadline: Instant::now() + OPERATION_TIMEOUT,
                    }),
                    Err(DialError::DialPeerConditionFalse(_)) if self.swarm.is_connected(&peer) => {
                        let _ = reply.send(Ok(()));
                    }
                    Err(DialError::DialPeerConditionFalse(_)) => {
                        // A dial is already under way; wait for its outcome.
                        self.dials.entry(peer).or_default().push(Pending {
                            reply,
                            deadline: Instant::now() + OPERATION_TIMEOUT,
                        });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetError::Unreachable {
                            peer: peer.to_string(),
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::Disconnect(peer) => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Request {
                peer,
                protocol,
                payload,
                addrs,
                reply,
            } => {
                if self.busy() {
                    let _ = reply.send(Err(NetError::Request {
                        peer: peer.to_string(),
                        reason: "too many requests in flight".into(),
                    }));
                    return;
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .rpc(protocol)
                    .send_request_with_addresses(&peer, payload, addrs);
                self.requests.insert((protocol, id), (peer, reply));
            }
            Command::Respond {
                protocol,
                channel,
                payload,
            } => {
                if self
                    .swarm
                    .behaviour_mut()
                    .rpc(protocol)
                    .send_response(channel, payload)
                    .is_err()
                {
                    tracing::debug!(?protocol, "the requester went away before the response");
                }
            }
            Command::DhtPut { reply, .. }
            | Command::DhtProvide { reply, .. }
            | Command::DhtBootstrap(reply)
                if self.swarm.behaviour().kad.as_ref().is_none() =>
            {
                let _ = reply.send(Err(dht_off()));
            }
            Command::DhtGet { reply, .. } if self.swarm.behaviour().kad.as_ref().is_none() => {
                let _ = reply.send(Err(dht_off()));
            }
            Command::DhtProviders { reply, .. }
                if self.swarm.behaviour().kad.as_ref().is_none() =>
            {
                let _ = reply.send(Err(dht_off()));
            }
            Command::DhtPut { key, value, reply } => {
                if !self.valid(&key, &value) {
                    let _ = reply.send(Err(NetError::Discovery(
                        "the record is not valid for its key".into(),
                    )));
                    return;
                }
                // `put_record` stores the record locally first, then replicates it.
                let record = Record::new(RecordKey::new(&key), value);
                match self.kad().put_record(record, Quorum::One) {
                    Ok(id) => {
                        self.puts.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetError::Discovery(e.to_string())));
                    }
                }
            }
            Command::DhtGet { key, reply } => {
                let id = self.kad().get_record(RecordKey::new(&key));
                self.gets.insert(id, (Vec::new(), reply));
            }
            Command::DhtProvide { key, reply } => {
                match self.kad().start_providing(RecordKey::new(&key)) {
                    Ok(id) => {
                        self.provides.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetError::Discovery(e.to_string())));
                    }
                }
            }
            Command::DhtProviders { key, reply } => {
                let id = self.kad().get_providers(RecordKey::new(&key));
                self.providers.insert(id, (HashSet::new(), reply));
            }
            Command::DhtBootstrap(reply) => match self.kad().bootstrap() {
                Ok(id) => {
                    self.bootstraps.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(NetError::Discovery(e.to_string())));
                }
            },
            Command::RendezvousRegister {
                namespace,
                ttl,
                reply,
            } => self.register(namespace, ttl, reply),
            Command::RendezvousDiscover { namespace, reply } => self.discover(namespace, reply),
            Command::ListenVia { relay, reply } => {
                let _ = reply.send(self.listen_via(relay));
            }
            Command::DialedAddr { peer, reply } => {
                let addr = self
                    .connections
                    .get(&peer)
                    .filter(|_| !self.punched.contains(&peer))
                    .and_then(|c| c.iter().find(|c| c.plain))
                    .map(|c| c.remote.clone());
                let _ = reply.send(addr);
            }
            Command::StopListeningVia(relay) => {
                let ids: Vec<ListenerId> = self
                    .relay_listeners
                    .iter()
                    .filter(|(_, l)| l.relay == relay)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    self.swarm.remove_listener(id);
                    self.relay_listeners.remove(&id);
                }
                self.publish_connectivity();
            }
        }
    }

    fn listen_via(&mut self, relay: Multiaddr) -> Result<(), NetError> {
        let Some(peer) = peer_of(&relay) else {
            return Err(NetError::Setup(format!(
                "relay {relay} lacks /p2p/<peer id>"
            )));
        };
        if self.relay_listeners.values().any(|l| l.relay == peer) {
            return Ok(());
        }
        let circuit = relay.clone().with(AddrProtocol::P2pCircuit);
        let id = self
            .swarm
            .listen_on(circuit)
            .map_err(|e| NetError::Listen {
                addr: relay.to_string(),
                reason: e.to_string(),
            })?;
        self.relay_listeners.insert(
            id,
            RelayListener {
                relay: peer,
                addr: relay,
                reserved: false,
            },
        );
        self.publish_connectivity();
        Ok(())
    }

    /// Tells the node where this node stands now, if that changed: public when an address
    /// was dialed back from outside (AutoNAT), a router forwards a port (UPnP) or an external
    /// address was configured; private when AutoNAT found none reachable.
    fn publish_connectivity(&mut self) {
        let mut external = self.configured.clone();
        external.extend(self.mapped.iter().cloned());
        if let autonat::NatStatus::Public(addr) = &self.nat {
            external.insert(addr.clone());
        }
        let reachability = if !external.is_empty() {
            Reachability::Public
        } else if matches!(self.nat, autonat::NatStatus::Private) {
            Reachability::Private
        } else {
            Reachability::Unknown
        };
        let mut relays: Vec<RelayListener> = self.relay_listeners.values().cloned().collect();
        relays.sort_by_key(|r| r.relay);
        let now = Connectivity {
            reachability,
            external_addrs: external.into_iter().collect(),
            relays,
        };
        self.connectivity.send_if_modified(|c| {
            if *c == now {
                return false;
            }
            if c.reachability != now.reachability {
                tracing::info!(from = ?c.reachability, to = ?now.reachability, "reachability changed");
            }
            *c = now;
            true
        });
    }

    /// Whether `peer` has a direct connection now.
    fn direct(&self, peer: &PeerId) -> bool {
        self.connections
            .get(peer)
            .is_some_and(|c| c.iter().any(|c| c.relay.is_none()))
    }

    /// Whether `peer` is connected through relays only.
    fn relayed_only(&self, peer: &PeerId) -> bool {
        self.connections
            .get(peer)
            .is_some_and(|c| !c.is_empty() && c.iter().all(|c| c.relay.is_some()))
    }

    /// Hole-punching re-dials and later attempts that are due.
    fn punch_due(&mut self) {
        let connections = &self.connections;
        let actions = self.punches.due(Instant::now(), |peer| {
            connections
                .get(peer)
                .is_some_and(|c| !c.is_empty() && c.iter().all(|c| c.relay.is_some()))
        });
        self.act(actions);
    }

    fn act(&mut self, actions: impl IntoIterator<Item = Action>) {
        for action in actions {
            match action {
                Action::Redial {
                    peer,
                    addrs,
                    as_listener,
                } => {
                    if !self.relayed_only(&peer) {
                        continue;
                    }
                    tracing::info!(%peer, addrs = addrs.len(), "hole punching: dialing again");
                    let opts = DialOpts::peer_id(peer)
                        .addresses(addrs)
                        .condition(PeerCondition::Always);
                    let opts = if as_listener {
                        opts.override_role().build()
                    } else {
                        opts.build()
                    };
                    if let Err(e) = self.swarm.dial(opts) {
                        tracing::debug!(%peer, error = %e, "hole punching: cannot dial again");
                    }
                }
                Action::Circuit(peer) => {
                    // Through the circuit this side opened; else back through the relay the
                    // peer's circuit came through — which reaches it when it reserved there
                    // too (a mutual friend's relay); otherwise the dial fails, and the next
                    // attempt waits as long.
                    let circuit = self.connections.get(&peer).and_then(|c| {
                        c.iter()
                            .find(|c| c.relay.is_some() && c.dialed)
                            .map(|c| c.remote.clone())
                            .or_else(|| {
                                c.iter()
                                    .filter(|c| c.relay.is_some())
                                    .find_map(|c| c.back.clone())
                            })
                    });
                    let Some(circuit) = circuit else {
                        tracing::info!(%peer, "hole punching: no circuit to try again through");
                        continue;
                    };
                    tracing::info!(%peer, %circuit, "hole punching: a fresh circuit for another attempt");
                    let opts = DialOpts::peer_id(peer)
                        .addresses(vec![circuit])
                        .condition(PeerCondition::Always)
                        .build();
                    let id = opts.connection_id();
                    if self.swarm.dial(opts).is_ok() {
                        self.punches.circuit_opened(peer, id);
                    }
                }
                Action::Close(peer, id) => {
                    let others = self
                        .connections
                        .get(&peer)
                        .is_some_and(|c| c.iter().any(|c| c.id != id && c.relay.is_some()));
                    if others {
                        self.swarm.close_connection(id);
                    }
                }
                Action::Report(peer, report) => self.emit(NetEvent::Punch { peer, report }),
            }
        }
    }

    /// `peer` told where it listens: if this node reached it over TCP only, it also opens a
    /// QUIC connection to it, so that the QUIC port mapping of this node's NAT is observed
    /// (identify) and hole punching can offer QUIC. Only while not known to be public.
    fn probe_quic(&mut self, peer: PeerId, listen_addrs: &[Multiaddr]) {
        if self.connectivity.borrow().reachability == Reachability::Public {
            return;
        }
        let Some(conns) = self.connections.get(&peer) else {
            return;
        };
        if conns
            .iter()
            .any(|c| c.relay.is_none() && is_quic(&c.remote))
        {
            return;
        }
        let Some(ip) = conns
            .iter()
            .find(|c| c.plain && is_tcp(&c.remote))
            .and_then(|c| ip_of(&c.remote))
        else {
            return;
        };
        let Some(quic) = listen_addrs
            .iter()
            .find(|a| is_quic(a) && !is_circuit(a) && ip_of(a) == Some(ip))
            .cloned()
        else {
            return;
        };
        let now = Instant::now();
        if self
            .quic_probed
            .get(&peer)
            .is_some_and(|at| now.duration_since(*at) < QUIC_PROBE_AGAIN)
        {
            return;
        }
        if self.quic_probed.len() >= MAX_QUIC_PROBED {
            self.quic_probed
                .retain(|_, at| now.duration_since(*at) < QUIC_PROBE_AGAIN);
            if self.quic_probed.len() >= MAX_QUIC_PROBED {
                return;
            }
        }
        self.quic_probed.insert(peer, now);
        tracing::debug!(%peer, %quic, "also connecting over QUIC, to learn this node's QUIC mapping");
        let opts = DialOpts::peer_id(peer)
            .addresses(vec![quic])
            .condition(PeerCondition::Always)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%peer, error = %e, "cannot connect over QUIC");
        }
    }

    fn register(&mut self, namespace: String, ttl: Duration, reply: Reply<()>) {
        let ns = match rendezvous::Namespace::new(namespace.clone()) {
            Ok(ns) => ns,
            Err(e) => {
                let _ = reply.send(Err(NetError::Discovery(e.to_string())));
                return;
            }
        };
        if self.rendezvous_points.is_empty() {
            let _ = reply.send(Err(NetError::Discovery(
                "no rendezvous points are configured".into(),
            )));
            return;
        }
        let mut waiting = HashSet::new();
        let mut last_error = None;
        for point in self.rendezvous_points.clone() {
            match self.swarm.behaviour_mut().rendezvous.register(
                ns.clone(),
                point,
                Some(ttl.as_secs()),
            ) {
                Ok(()) => {
                    waiting.insert(point);
                }
                Err(e) => last_error = Some(e.to_string()),
            }
        }
        if waiting.is_empty() {
            let _ = reply.send(Err(NetError::Discovery(
                last_error.unwrap_or_else(|| "registration failed".into()),
            )));
            return;
        }
        if let Some(old) = self.registers.insert(
            namespace,
            RendezvousOp {
                reply,
                waiting,
                found: (),
                ok: false,
                deadline: Instant::now() + OPERATION_TIMEOUT,
            },
        ) {
            let _ = old.reply.send(Err(NetError::Discovery(
                "superseded by a newer registration".into(),
            )));
        }
    }

    fn discover(&mut self, namespace: String, reply: Reply<Vec<(PeerId, Vec<Multiaddr>)>>) {
        let ns = match rendezvous::Namespace::new(namespace.clone()) {
            Ok(ns) => ns,
            Err(e) => {
                let _ = reply.send(Err(NetError::Discovery(e.to_string())));
                return;
            }
        };
        if self.rendezvous_points.is_empty() {
            let _ = reply.send(Err(NetError::Discovery(
                "no rendezvous points are configured".into(),
            )));
            return;
        }
        for point in self.rendezvous_points.clone() {
            self.swarm.behaviour_mut().rendezvous.discover(
                Some(ns.clone()),
                None,
                Some(RENDEZVOUS_LIMIT),
                point,
            );
        }
        let op = RendezvousOp {
            reply,
            waiting: self.rendezvous_points.iter().copied().collect(),
            found: Vec::new(),
            ok: false,
            deadline: Instant::now() + OPERATION_TIMEOUT,
        };
        if let Some(old) = self.discovers.insert(namespace, op) {
            let _ = old.reply.send(Err(NetError::Discovery(
                "superseded by a newer lookup".into(),
            )));
        }
    }

    fn has_deadlines(&self) -> bool {
        !(self.dials.is_empty() && self.registers.is_empty() && self.discovers.is_empty())
    }

    fn expire(&mut self) {
        let now = Instant::now();
        for (peer, pending) in &mut self.dials {
            let (expired, kept): (Vec<_>, Vec<_>) =
                pending.drain(..).partition(|p| p.deadline <= now);
            *pending = kept;
            for p in expired {
                let _ = p.reply.send(Err(NetError::Unreachable {
                    peer: peer.to_string(),
                    reason: "timed out".into(),
                }));
            }
        }
        self.dials.retain(|_, pending| !pending.is_empty());
        let expired: Vec<String> = self
            .registers
            .iter()
            .filter(|(_, op)| op.deadline <= now)
            .map(|(ns, _)| ns.clone())
            .collect();
        for ns in expired {
            if let Some(op) = self.registers.remove(&ns) {
                let _ = op.reply.send(if op.ok {
                    Ok(())
                } else {
                    Err(NetError::Discovery("no rendezvous point answered".into()))
                });
            }
        }
        let expired: Vec<String> = self
            .discovers
            .iter()
            .filter(|(_, op)| op.deadline <= now)
            .map(|(ns, _)| ns.clone())
            .collect();
        for ns in expired {
            if let Some(op) = self.discovers.remove(&ns) {
                let _ = op.reply.send(if op.ok {
                    Ok(op.found)
                } else {
                    Err(NetError::Discovery("no rendezvous point answered".into()))
                });
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        if let Some(metrics) = self.metrics {
            record(metrics, &event);
        }
        if let SwarmEvent::OutgoingConnectionError {
            peer_id: Some(peer),
            connection_id,
            ..
        } = &event
        {
            self.punches
                .dial_ended(*peer, *connection_id, Instant::now());
        }
        match event {
            SwarmEvent::NewListenAddr {
                address,
                listener_id,
            } => {
                tracing::debug!(%address, "listening");
                if let Some(relay) = self.relay_listeners.get_mut(&listener_id) {
                    relay.reserved = true;
                    self.publish_connectivity();
                } else if !is_circuit(&address) {
                    // Where peers that share a network with this node can reach it: what
                    // identify and rendezvous tell others (the relay client adds the
                    // relayed ones). Whether anyone outside can is AutoNAT's to say.
                    self.swarm.add_external_address(address.clone());
                }
                self.listen_addrs.insert(address);
                self.links
                    .listening(self.listen_addrs.iter().cloned().collect());
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.swarm.remove_external_address(&address);
                self.listen_addrs.remove(&address);
                self.links
                    .listening(self.listen_addrs.iter().cloned().collect());
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                for address in addresses {
                    self.listen_addrs.remove(&address);
                }
                self.links
                    .listening(self.listen_addrs.iter().cloned().collect());
                if let Some(relay) = self.relay_listeners.remove(&listener_id) {
                    tracing::info!(relay = %relay.relay, ?reason, "no longer listening through a relay");
                    self.publish_connectivity();
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                for pending in self.dials.remove(&peer_id).unwrap_or_default() {
                    let _ = pending.reply.send(Ok(()));
                }
                let relay = relay_of(&endpoint);
                let had_direct = self.direct(&peer_id);
                let had_relayed = self.relayed_only(&peer_id);
                let remote = endpoint.get_remote_address().clone();
                let dialed = matches!(
                    endpoint,
                    libp2p::core::ConnectedPoint::Dialer {
                        role_override: libp2p::core::Endpoint::Dialer,
                        ..
                    }
                );
                // A relayed connection beside a plain one this side dialed says that this
                // side is behind a NAT (the peer dialed its relayed address), not the peer.
                let plain_now = self
                    .connections
                    .get(&peer_id)
                    .is_some_and(|c| c.iter().any(|c| c.plain));
                if (relay.is_some() && !plain_now) || had_relayed {
                    if self.punched.len() >= MAX_PUNCHED {
                        // Anyone may open circuits to this node through its relays: the
                        // peers connected now are kept, so a flood of fresh ids cannot
                        // wipe out what is known of a contact's device.
                        let connections = &self.connections;
                        self.punched.retain(|p| connections.contains_key(p));
                    }
                    if self.punched.len() < MAX_PUNCHED {
                        self.punched.insert(peer_id);
                    }
                }
                let back = match (&endpoint, relay) {
                    (libp2p::core::ConnectedPoint::Listener { local_addr, .. }, Some(_)) => {
                        Some(local_addr.clone().with(AddrProtocol::P2p(peer_id)))
                    }
                    _ => None,
                };
                self.connections.entry(peer_id).or_default().push(Conn {
                    id: connection_id,
                    remote: remote.clone(),
                    relay,
                    dialed,
                    plain: dialed && relay.is_none() && !had_relayed,
                    back,
                });
                if relay.is_some() && !had_direct {
                    // DCUtR starts on it: an attempt begins.
                    let action = self.punches.relayed_up(peer_id, !dialed, Instant::now());
                    self.act(action);
                }
                if num_established.get() == 1 {
                    if relay.is_none() {
                        // Direct from the start (after attempts that failed, perhaps).
                        let action = self.punches.direct_up(peer_id, &remote);
                        self.act(action);
                    }
                    self.links.connected(peer_id, remote, relay);
                } else if relay.is_none() && !had_direct {
                    // A direct path beside a relayed one (a hole punch, or the peer dialed
                    // us directly): move everything to it.
                    let relayed: Vec<ConnectionId> = self
                        .connections
                        .get(&peer_id)
                        .into_iter()
                        .flatten()
                        .filter(|c| c.relay.is_some())
                        .map(|c| c.id)
                        .collect();
                    let action = self.punches.direct_up(peer_id, &remote);
                    self.act(action);
                    self.punches.relayed_gone(peer_id);
                    for id in relayed {
                        self.swarm.close_connection(id);
                    }
                    self.links.path(peer_id, remote, None);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.punches.closed(peer_id, connection_id);
                let mut closed_remote = None;
                if let Some(c) = self.connections.get_mut(&peer_id) {
                    if let Some(at) = c.iter().position(|c| c.id == connection_id) {
                        closed_remote = Some(c.remove(at).remote);
                    }
                    if c.is_empty() {
                        self.connections.remove(&peer_id);
                    }
                }
                if !self.relayed_only(&peer_id) {
                    self.punches.relayed_gone(peer_id);
                }
                if num_established == 0 {
                    self.links.disconnected(peer_id);
                } else if let Some(closed) = closed_remote {
                    // The path now used: a direct connection if one remains, else a relayed
                    // one. Told when it is another than the one that closed.
                    let next = self.connections.get(&peer_id).and_then(|c| {
                        c.iter()
                            .find(|c| c.relay.is_none())
                            .or_else(|| c.first())
                            .map(|c| (c.remote.clone(), c.relay))
                    });
                    if let Some((remote, relay)) = next
                        && remote != closed
                    {
                        self.links.path(peer_id, remote, relay);
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error: DialError::Transport(failed),
                ..
            } if self.relayed_only(&peer) => {
                // Most likely a hole-punching dial (the peer is reached through a relay).
                let failed: Vec<(Multiaddr, String)> = failed
                    .iter()
                    .map(|(addr, e)| (addr.clone(), transport_error(e)))
                    .collect();
                self.punches.dial_failed(peer, &failed, Instant::now());
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } if !self.swarm.is_connected(&peer) => {
                for pending in self.dials.remove(&peer).unwrap_or_default() {
                    let _ = pending.reply.send(Err(NetError::Unreachable {
                        peer: peer.to_string(),
                        reason: error.to_string(),
                    }));
                }
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.protocols.contains(&KAD_PROTOCOL)
                    && let Some(kad) = self.swarm.behaviour_mut().kad.as_mut()
                {
                    for addr in &info.listen_addrs {
                        kad.add_address(&peer_id, addr.clone());
                    }
                }
                self.probe_quic(peer_id, &info.listen_addrs);
                self.emit(NetEvent::Identified {
                    peer: peer_id,
                    listen_addrs: info.listen_addrs,
                });
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => self.emit(NetEvent::Rtt { peer, rtt }),
            BehaviourEvent::Kad(event) => self.on_kad_event(event),
            BehaviourEvent::Rendezvous(event) => self.on_rendezvous_event(event),
            BehaviourEvent::Hello(e) => self.on_rpc_event(Protocol::Hello, e),
            BehaviourEvent::Invite(e) => self.on_rpc_event(Protocol::Invite, e),
            BehaviourEvent::Message(e) => self.on_rpc_event(Protocol::Message, e),
            BehaviourEvent::RelayMailbox(e) => self.on_rpc_event(Protocol::Relay, e),
            BehaviourEvent::Sync(e) => self.on_rpc_event(Protocol::Sync, e),
            BehaviourEvent::Pair(e) => self.on_rpc_event(Protocol::Pair, e),
            BehaviourEvent::File(e) => self.on_rpc_event(Protocol::File, e),
            BehaviourEvent::Mls(e) => self.on_rpc_event(Protocol::Mls, e),
            BehaviourEvent::Hold(e) => self.on_rpc_event(Protocol::Hold, e),
            BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. }) => {
                if let autonat::NatStatus::Public(addr) = &new {
                    tracing::info!(%addr, "reachable from outside at this address");
                }
                self.nat = new;
                self.publish_connectivity();
            }
            BehaviourEvent::RelayClient(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            }) if !renewal => {
                tracing::info!(relay = %relay_peer_id, "a relay holds a reservation for this node");
            }
            BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => match result {
                Ok(_) => {
                    tracing::info!(peer = %remote_peer_id, "hole punched: a direct connection")
                }
                Err(e) => {
                    tracing::debug!(peer = %remote_peer_id, error = %e, "DCUtR gave up");
                    self.punches.dcutr_failed(remote_peer_id, &e.to_string());
                }
            },
            BehaviourEvent::Upnp(event) => match event {
                upnp::Event::NewExternalAddr { external_addr, .. } => {
                    tracing::info!(%external_addr, "the router forwards a port (UPnP)");
                    self.mapped.insert(external_addr);
                    self.publish_connectivity();
                }
                upnp::Event::ExpiredExternalAddr { external_addr, .. } => {
                    tracing::info!(%external_addr, "the router's port forwarding ended (UPnP)");
                    self.mapped.remove(&external_addr);
                    self.publish_connectivity();
                }
                upnp::Event::GatewayNotFound => tracing::debug!("no UPnP router found"),
                upnp::Event::NonRoutableGateway => {
                    tracing::debug!("the UPnP router is itself behind a NAT")
                }
            },
            _ => {}
        }
    }

    fn on_rpc_event(
        &mut self,
        protocol: Protocol,
        event: request_response::Event<Vec<u8>, Vec<u8>>,
    ) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    self.emit(NetEvent::Request {
                        peer,
                        protocol,
                        payload: request,
                        responder: Responder::new(protocol, channel, self.command_tx.clone()),
                    });
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some((_, reply)) = self.requests.remove(&(protocol, request_id)) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some((_, reply)) = self.requests.remove(&(protocol, request_id)) {
                    let _ = reply.send(Err(NetError::Request {
                        peer: peer.to_string(),
                        reason: error.to_string(),
                    }));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, ?protocol, %error, "inbound request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_kad_event(&mut self, event: kad::Event) {
        match event {
            kad::Event::InboundRequest { request } => match request {
                kad::InboundRequest::PutRecord {
                    record: Some(record),
                    source,
                    ..
                } => {
                    if self.valid(record.key.as_ref(), &record.value) {
                        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut()
                            && let Err(e) = kad.store_mut().put(record)
                        {
                            tracing::debug!(error = %e, "cannot store a DHT record");
                        }
                    } else {
                        tracing::debug!(%source, "refused an invalid DHT record");
                    }
                }
                kad::InboundRequest::AddProvider {
                    record: Some(record),
                } => {
                    if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut()
                        && let Err(e) = kad.store_mut().add_provider(record)
                    {
                        tracing::debug!(error = %e, "cannot store a provider record");
                    }
                }
                _ => {}
            },
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => match result {
                QueryResult::GetRecord(result) => {
                    if let Ok(GetRecordOk::FoundRecord(found)) = result {
                        let record = found.record;
                        if self.valid(record.key.as_ref(), &record.value)
                            && let Some((records, _)) = self.gets.get_mut(&id)
                            && !records.contains(&record.value)
                        {
                            records.push(record.value);
                        }
                    }
                    if step.last
                        && let Some((records, reply)) = self.gets.remove(&id)
                    {
                        let _ = reply.send(Ok(records));
                    }
                }
                QueryResult::PutRecord(result) => {
                    if let Some(reply) = self.puts.remove(&id) {
                        // Stored locally already; with no peer to replicate to yet, the
                        // record is still found by lookups through this node.
                        if let Err(e) = &result {
                            tracing::debug!(error = %e, "DHT record not replicated to a quorum");
                        }
                        let _ = reply.send(Ok(()));
                    }
                }
                QueryResult::StartProviding(result) => {
                    if let Some(reply) = self.provides.remove(&id) {
                        let _ = reply.send(
                            result
                                .map(|_| ())
                                .map_err(|e| NetError::Discovery(e.to_string())),
                        );
                    }
                }
                QueryResult::GetProviders(result) => {
                    if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = result
                        && let Some((found, _)) = self.providers.get_mut(&id)
                    {
                        found.extend(providers);
                    }
                    if step.last
                        && let Some((found, reply)) = self.providers.remove(&id)
                    {
                        let _ = reply.send(Ok(found.into_iter().collect()));
                    }
                }
                QueryResult::Bootstrap(result) => {
                    if step.last
                        && let Some(reply) = self.bootstraps.remove(&id)
                    {
                        let _ = reply.send(
                            result
                                .map(|_| ())
                                .map_err(|e| NetError::Discovery(e.to_string())),
                        );
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn on_rendezvous_event(&mut self, event: rendezvous::client::Event) {
        use rendezvous::client::Event;
        match event {
            Event::Registered {
                rendezvous_node,
                namespace,
                ..
            } => self.register_answered(namespace.to_string(), rendezvous_node, true),
            Event::RegisterFailed {
                rendezvous_node,
                namespace,
                error,
            } => {
                tracing::debug!(%rendezvous_node, ?error, "rendezvous registration refused");
                self.register_answered(namespace.to_string(), rendezvous_node, false);
            }
            Event::Discovered {
                rendezvous_node,
                registrations,
                ..
            } => {
                for registration in registrations {
                    let ns = registration.namespace.to_string();
                    let peer = registration.record.peer_id();
                    let addrs = registration.record.addresses().to_vec();
                    for addr in &addrs {
                        self.swarm.add_peer_address(peer, addr.clone());
                    }
                    if let Some(op) = self.discovers.get_mut(&ns) {
                        op.found.push((peer, addrs));
                    }
                }
                let namespaces: Vec<String> = self
                    .discovers
                    .iter()
                    .filter(|(_, op)| op.waiting.contains(&rendezvous_node))
                    .map(|(ns, _)| ns.clone())
                    .collect();
                for ns in namespaces {
                    self.discover_answered(ns, rendezvous_node, true);
                }
            }
            Event::DiscoverFailed {
                rendezvous_node,
                namespace,
                error,
            } => {
                tracing::debug!(%rendezvous_node, ?error, "rendezvous lookup refused");
                if let Some(ns) = namespace {
                    self.discover_answered(ns.to_string(), rendezvous_node, false);
                }
            }
            Event::Expired { .. } => {}
        }
    }

    fn register_answered(&mut self, namespace: String, point: PeerId, ok: bool) {
        let Some(op) = self.registers.get_mut(&namespace) else {
            return;
        };
        op.waiting.remove(&point);
        op.ok |= ok;
        if (op.ok || op.waiting.is_empty())
            && let Some(op) = self.registers.remove(&namespace)
        {
            let _ = op.reply.send(if op.ok {
                Ok(())
            } else {
                Err(NetError::Discovery(
                    "every rendezvous point refused the registration".into(),
                ))
            });
        }
    }

    fn discover_answered(&mut self, namespace: String, point: PeerId, ok: bool) {
        let Some(op) = self.discovers.get_mut(&namespace) else {
            return;
        };
        op.waiting.remove(&point);
        op.ok |= ok;
        if op.waiting.is_empty()
            && let Some(op) = self.discovers.remove(&namespace)
        {
            let _ = op.reply.send(if op.ok {
                Ok(op.found)
            } else {
                Err(NetError::Discovery(
                    "every rendezvous point refused the lookup".into(),
                ))
            });
        }
    }
}

/// A transport error in words: the innermost cause (a reset, no answer…).
fn transport_error(e: &libp2p::TransportError<std::io::Error>) -> String {
    match e {
        libp2p::TransportError::MultiaddrNotSupported(_) => "not a supported address".into(),
        libp2p::TransportError::Other(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                text = inner.to_string();
                source = inner.source();
            }
            text
        }
    }
}

/// Records `event` in libp2p's metrics: the swarm's, and those of the protocols it knows.
fn record(metrics: &crate::Libp2pMetrics, event: &SwarmEvent<BehaviourEvent>) {
    use libp2p::metrics::Recorder as _;
    metrics.record(event);
    if let SwarmEvent::Behaviour(event) = event {
        match event {
            BehaviourEvent::Identify(e) => metrics.record(e),
            BehaviourEvent::Ping(e) => metrics.record(e),
            BehaviourEvent::Kad(e) => metrics.record(e),
            BehaviourEvent::RelayServer(e) => metrics.record(e),
            BehaviourEvent::Dcutr(e) => metrics.record(e),
            _ => {}
        }
    }
}
