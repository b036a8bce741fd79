//! The composed network behaviour.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::kad::store::MemoryStore;
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, autonat, connection_limits, dcutr, identify, kad, memory_connection_limits,
    ping, relay, rendezvous, request_response, upnp,
};

use crate::NetConfig;
use crate::codec::BytesCodec;
use crate::protocol::Protocol;

/// The Kademlia protocol of Volli's DHT, separate from IPFS's.
pub(crate) const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/volli/kad/1");
const IDENTIFY_PROTOCOL: &str = "/volli/id/1";

type Rpc = request_response::Behaviour<BytesCodec>;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) memory: memory_connection_limits::Behaviour,
    pub(crate) keep_alive: crate::keep_alive::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: Toggle<kad::Behaviour<MemoryStore>>,
    pub(crate) rendezvous: rendezvous::client::Behaviour,
    pub(crate) rendezvous_server: Toggle<rendezvous::server::Behaviour>,
    pub(crate) relay_server: Toggle<relay::Behaviour>,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) dcutr: dcutr::Behaviour,
    pub(crate) autonat: autonat::Behaviour,
    pub(crate) upnp: Toggle<upnp::tokio::Behaviour>,
    pub(crate) hello: Rpc,
    pub(crate) invite: Rpc,
    pub(crate) message: Rpc,
    pub(crate) relay_mailbox: Rpc,
    pub(crate) sync: Rpc,
    pub(crate) pair: Rpc,
    pub(crate) file: Rpc,
    pub(crate) mls: Rpc,
    pub(crate) hold: Rpc,
}

fn rpc(protocol: Protocol, timeout: Duration) -> Rpc {
    request_response::Behaviour::with_codec(
        BytesCodec::new(protocol),
        [(protocol.id(), request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(timeout)
            .with_max_concurrent_streams(MAX_STREAMS),
    )
}

/// Request streams open at once on one connection, per protocol: each may buffer up to its
/// protocol's largest request.
const MAX_STREAMS: usize = 128;

/// The circuit relay's limits, and only the admitted peers may reserve a slot. Circuits go
/// only to peers holding a reservation (the admitted ones), from anyone, at most four per
/// peer; they last and carry what the node configured, so a file is not cut every 128 KiB
/// (libp2p's default).
fn relay_config(config: &NetConfig) -> relay::Config {
    let mut relay = relay::Config {
        max_reservations: 32,
        max_reservations_per_peer: 2,
        max_circuits: 32,
        max_circuits_per_peer: 4,
        max_circuit_duration: config.relay_circuit_duration,
        max_circuit_bytes: config.relay_circuit_bytes,
        ..relay::Config::default()
    };
    if let Some(admit) = config.relay_for.clone() {
        relay.reservation_rate_limiters.push(Box::new(
            move |peer: libp2p::PeerId, _: &libp2p::Multiaddr, _: std::time::Instant| admit(&peer),
        ));
    }
    relay
}

impl Behaviour {
    pub(crate) fn new(
        key: &Keypair,
        relay_client: relay::client::Behaviour,
        config: &NetConfig,
    ) -> Self {
        let peer_id = key.public().to_peer_id();
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(config.max_connections))
            .with_max_established_per_peer(Some(4))
            .with_max_pending_incoming(Some(64))
            .with_max_pending_outgoing(Some(64));

        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        kad_config
            .set_query_timeout(Duration::from_secs(10))
            .set_record_filtering(kad::StoreInserts::FilterBoth)
            .set_record_ttl(Some(Duration::from_secs(24 * 3600)))
            .set_publication_interval(Some(Duration::from_secs(12 * 3600)))
            // Without bootstrap peers there is nothing to refresh from until peers connect.
            .set_periodic_bootstrap_interval(
                (!config.bootstrap.is_empty()).then_some(Duration::from_secs(5 * 60)),
            );
        let mut kad = kad::Behaviour::with_config(peer_id, MemoryStore::new(peer_id), kad_config);
        kad.set_mode(Some(kad::Mode::Server));

        let timeout = config.request_timeout;
        Self {
            limits: connection_limits::Behaviour::new(limits),
            memory: memory_connection_limits::Behaviour::with_max_percentage(0.9),
            keep_alive: crate::keep_alive::Behaviour::new(config.keep_alive_for.clone()),
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                    .with_agent_version(format!("volli/{}", env!("CARGO_PKG_VERSION"))),
            ),
            // A minute apart: it measures the round trip and keeps NAT mappings of the kept
            // connections to contacts fresh (routers keep a TCP mapping for many minutes; QUIC
            // has its own keep-alive), at two wake-ups a minute per connection.
            ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(60))),
            kad: config.dht.then_some(kad).into(),
            rendezvous: rendezvous::client::Behaviour::new(key.clone()),
            rendezvous_server: config
                .rendezvous_server
                .then(|| rendezvous::server::Behaviour::new(rendezvous::server::Config::default()))
                .into(),
            relay_server: config
                .relay_server
                .then(|| relay::Behaviour::new(peer_id, relay_config(config)))
                .into(),
            relay_client,
            dcutr: dcutr::Behaviour::new(peer_id),
            // Asks connected peers to dial back the addresses others saw this node at; a
            // success confirms one as external ("public"), failures mean "private". AutoNAT
            // v1, not v2: a v2 client tests only through peers it dialed itself, and a
            // friend's public node that only ever receives connections (from nodes behind
            // NATs) would never learn that it is public.
            autonat: autonat::Behaviour::new(
                peer_id,
                autonat::Config {
                    boot_delay: Duration::from_secs(2),
                    retry_interval: Duration::from_secs(30),
                    refresh_interval: Duration::from_secs(10 * 60),
                    throttle_server_period: Duration::from_secs(15),
                    only_global_ips: config.autonat_global_only,
                    ..autonat::Config::default()
                },
            ),
            upnp: config.upnp.then(upnp::tokio::Behaviour::default).into(),
            hello: rpc(Protocol::Hello, timeout),
            invite: rpc(Protocol::Invite, timeout),
            message: rpc(Protocol::Message, timeout),
            relay_mailbox: rpc(Protocol::Relay, timeout),
            sync: rpc(Protocol::Sync, timeout),
            // A pairing waits for a person to approve it: its requests may take a minute.
            pair: rpc(Protocol::Pair, timeout.max(Duration::from_secs(90))),
            file: rpc(Protocol::File, timeout),
            mls: rpc(Protocol::Mls, timeout),
            hold: rpc(Protocol::Hold, timeout),
        }
    }

    pub(crate) fn rpc(&mut self, protocol: Protocol) -> &mut Rpc {
        match protocol {
            Protocol::Hello => &mut self.hello,
            Protocol::Invite => &mut self.invite,
            Protocol::Message => &mut self.message,
            Protocol::Relay => &mut self.relay_mailbox,
            Protocol::Sync => &mut self.sync,
            Protocol::Pair => &mut self.pair,
            Protocol::File => &mut self.file,
            Protocol::Mls => &mut self.mls,
            Protocol::Hold => &mut self.hold,
        }
    }
}
