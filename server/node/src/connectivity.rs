//! Reachability across NATs: where this node stands, which friends' nodes it listens
//! through, and what it tells a node that asks it to relay. One component with one set of
//! timers, so an idle node with its relays in place sleeps.
//!
//! - **Where it stands** comes from the network ([`volli_net::Connectivity`]): AutoNAT and
//!   UPnP confirm external addresses (public), failed AutoNAT tests mean private.
//! - **Relays.** A node that is not known to be public asks each contact's device (and each
//!   of its own devices) that connects whether it relays circuits (`CircuitOffer`): a node
//!   that is reachable from outside and serves as a relay says yes, with its external
//!   addresses and the rate a circuit through it may carry. The node then listens through
//!   [`WANTED`] of them, the configured `[network] relays` first; the network renews the
//!   reservations. A relay that refuses or goes away is tried again after a backoff, and at
//!   once when it connects again, when the node's addresses change, or when its reachability
//!   does. A node that becomes public lets its reservations go.
//! - **Serving.** This node answers `CircuitOffer` when its relay is on and it is not known
//!   to be private: with its external addresses when it is public, with none when it does
//!   not know (then a node that dialed it directly uses the address it reached it at, and
//!   ranks it after confirmed relays). Reservations on it are for its contacts' and its own
//!   devices only (`node.rs`).
//! - **In doubt, as if private.** A node that is not confirmed public (`unknown`) reserves
//!   relays as a private one does: AutoNAT decides only on globally routable addresses, and
//!   a node on a private-range network would otherwise have no path at all.
//!
//! What this module does not do: dial anyone (discovery and the services do), or hole-punch
//! (libp2p's DCUtR does, on every relayed connection, with `volli-net`'s spaced re-dials and
//! later attempts; the network closes the relayed connection once a direct one is up).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use multiaddr::{Multiaddr, Protocol as Ma};
use tokio::sync::Notify;
use tokio::time::Instant;
use volli_core::PeerId;
use volli_core::wire::{self, RelayRequest, RelayResponse};
use volli_net::{NetClient, Protocol, Reachability};

use crate::limits::backoff;
use crate::outbound::Outbound;
use crate::peers::Peers;

/// Relays a node behind a NAT listens through at once.
pub const WANTED: usize = 2;
/// The rate assumed for a circuit through a relay that did not say (bytes per second).
pub const DEFAULT_RELAY_RATE: u64 = 4 << 20;
/// How long an offer to relay is asked for.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// When a connected friend's node that did not offer to relay is asked again, while this node
/// lacks relays (it may have found out since that it is reachable): after 3 s, doubling up
/// to 5 minutes.
const ASK_AGAIN: Duration = Duration::from_secs(3);
const ASK_AT_MOST_EVERY: Duration = Duration::from_secs(300);
/// Backoff for a relay that refused a reservation or dropped it.
const FIRST_RETRY: Duration = Duration::from_secs(5);
const LAST_RETRY: Duration = Duration::from_secs(600);

/// The connectivity service. Cheap to clone.
#[derive(Clone)]
pub struct Connectivity {
    inner: Arc<Inner>,
}

struct Inner {
    net: NetClient,
    outbound: Outbound,
    peers: Peers,
    /// `[network] relays`: listened through first, whatever they say.
    configured: Vec<Multiaddr>,
    /// Whether this node's relay serves (`[network] relay_server`).
    serves: bool,
    /// What a circuit through this node may carry (`[network] relay_rate`).
    rate: u64,
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Default)]
struct State {
    /// Peers that offered to relay for this node: where, and at what rate.
    offers: HashMap<PeerId, Offer>,
    /// Relays the network was asked to listen through.
    listening: HashSet<PeerId>,
    /// Relays that failed, with when to try again and how often they failed.
    strikes: HashMap<PeerId, (Instant, u32)>,
    /// When each peer may be asked to relay again, and how often it said no.
    asked: HashMap<PeerId, (Instant, u32)>,
}

#[derive(Clone, Debug)]
struct Offer {
    addrs: Vec<Multiaddr>,
    bytes_per_sec: u64,
    /// The relay said it is reachable from outside (its addresses were confirmed); else it
    /// does not know, and is used at the address this node reached it at.
    confirmed: bool,
}

/// What the connectivity service is built from.
pub struct Parts {
    /// The network.
    pub net: NetClient,
    /// Requests after a hello.
    pub outbound: Outbound,
    /// The peer table (who is connected).
    pub peers: Peers,
    /// `[network] relays`.
    pub configured: Vec<Multiaddr>,
    /// `[network] relay_server`.
    pub serves: bool,
    /// `[network] relay_rate`.
    pub rate: u64,
}

impl Connectivity {
    /// The service.
    pub fn new(parts: Parts) -> Self {
        Self {
            inner: Arc::new(Inner {
                net: parts.net,
                outbound: parts.outbound,
                peers: parts.peers,
                configured: parts.configured,
                serves: parts.serves,
                rate: parts.rate,
                state: Mutex::new(State::default()),
                wake: Notify::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the relays in place for the life of the node.
    pub fn spawn(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut changes = this.inner.net.connectivity();
            // A new contact (or a new device of one) may be a friend to ask: its node was
            // connected before it became a contact, when it was not asked.
            let mut contacts = this.inner.peers.devices_changed();
            loop {
                let wait = this.step().await;
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    changed = contacts.changed() => if changed.is_err() { return },
                    () = this.inner.wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        });
    }

    /// Something changed that may call for another relay (this node's addresses).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Brings the relays listened through in line with where the node stands; returns how
    /// long until a relay in backoff may be tried again.
    async fn step(&self) -> Duration {
        let now = self.inner.net.connectivity().borrow().clone();
        let (stop, start, ask, wait) = {
            let mut state = self.lock();
            let clock = Instant::now();
            // Relays that dropped the reservation (or refused it) wait before another try.
            let gone: Vec<PeerId> = state
                .listening
                .iter()
                .filter(|p| !now.relays.iter().any(|r| r.relay == **p))
                .copied()
                .collect();
            for peer in gone {
                state.listening.remove(&peer);
                let strikes = state.strikes.get(&peer).map_or(0, |(_, n)| n + 1);
                let wait = backoff(FIRST_RETRY, LAST_RETRY, strikes);
                state.strikes.insert(peer, (clock + wait, strikes));
                tracing::info!(relay = %peer, retry_in = ?wait, "a relay is not holding a reservation for this node");
            }
            let mut stop = Vec::new();
            let mut start = Vec::new();
            let mut ask = Vec::new();
            let mut ask_at = None;
            if now.reachability == Reachability::Public {
                stop = state.listening.drain().collect();
            } else {
                let missing = WANTED.saturating_sub(state.listening.len());
                let configured = self
                    .inner
                    .configured
                    .iter()
                    .filter_map(|a| Some((peer_in(a)?, a.clone())));
                // Relays confirmed reachable from outside first, then those this node
                // reached directly that do not know where they stand.
                let mut offers: Vec<(&PeerId, &Offer)> = state.offers.iter().collect();
                offers.sort_by_key(|(p, o)| (!o.confirmed, **p));
                let offered = offers
                    .into_iter()
                    .filter_map(|(p, o)| Some((*p, with_peer(o.addrs.first()?, *p)?)));
                let chosen: Vec<(PeerId, Multiaddr)> = configured
                    .chain(offered)
                    .filter(|(p, _)| {
                        *p != self.inner.net.local_peer_id()
                            && !state.listening.contains(p)
                            && state.strikes.get(p).is_none_or(|(at, _)| *at <= clock)
                    })
                    .fold(Vec::new(), |mut out, (p, a)| {
                        if !out.iter().any(|(q, _)| *q == p) {
                            out.push((p, a));
                        }
                        out
                    })
                    .into_iter()
                    .take(missing)
                    .collect();
                for (peer, _) in &chosen {
                    state.listening.insert(*peer);
                }
                // Still short: ask again the connected friends that did not offer (a node
                // finds out it is public only a while after it starts).
                if state.listening.len() + chosen.len() < WANTED {
                    for peer in self.inner.peers.trusted_connected() {
                        if state.offers.contains_key(&peer) {
                            continue;
                        }
                        let due = state.asked.get(&peer).map_or(clock, |(at, _)| *at);
                        if due <= clock {
                            ask.push(peer);
                        } else {
                            ask_at = Some(ask_at.map_or(due, |a: Instant| a.min(due)));
                        }
                    }
                }
                start = chosen;
            }
            let wait = state
                .strikes
                .values()
                .map(|(at, _)| *at)
                .chain(ask_at)
                .map(|at| at.saturating_duration_since(clock))
                .filter(|d| !d.is_zero())
                .min()
                .unwrap_or(Duration::from_secs(3600));
            (stop, start, ask, wait)
        };
        for peer in ask {
            let this = self.clone();
            tokio::spawn(async move { this.ask(peer).await });
        }
        for peer in stop {
            tracing::info!(relay = %peer, "reachable from outside: letting a relay reservation go");
            self.inner.net.stop_listening_via(peer).await;
        }
        for (peer, addr) in start {
            tracing::info!(relay = %peer, %addr, "asking a relay to hold a reservation for this node");
            if let Err(e) = self.inner.net.listen_via(addr).await {
                tracing::debug!(relay = %peer, error = %e, "cannot listen through the relay");
                self.lock().listening.remove(&peer);
            }
        }
        wait
    }

    /// A contact's device, or one of the user's own, connected and said hello: ask whether
    /// it relays for this node (once per connection), and try it again at once if it failed.
    pub async fn peer_ready(&self, peer: PeerId) {
        {
            let mut state = self.lock();
            state.strikes.remove(&peer);
            state.asked.remove(&peer);
        }
        self.ask(peer).await;
    }

    /// Asks `peer` whether it relays for this node; an answer of no is asked again later.
    async fn ask(&self, peer: PeerId) {
        {
            let mut state = self.lock();
            let refusals = state.asked.get(&peer).map_or(0, |(_, n)| *n);
            let again = Instant::now() + backoff(ASK_AGAIN, ASK_AT_MOST_EVERY, refusals);
            state.asked.insert(peer, (again, refusals + 1));
        }
        let request = wire::encode(&RelayRequest::CircuitOffer);
        let call = self
            .inner
            .outbound
            .request(peer, Protocol::Relay, request, Vec::new());
        let answer = match tokio::time::timeout(ASK_TIMEOUT, call).await {
            Ok(Ok(bytes)) => wire::decode::<RelayResponse>(&bytes, Protocol::Relay.max_response()),
            _ => return,
        };
        let offer = match answer {
            Ok(RelayResponse::CircuitOffer {
                addrs,
                bytes_per_sec,
            }) => {
                let mut addrs: Vec<Multiaddr> = addrs
                    .iter()
                    .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
                    .filter(|a| !a.iter().any(|p| matches!(p, Ma::P2pCircuit)))
                    .take(8)
                    .collect();
                let confirmed = !addrs.is_empty();
                // A relay that does not know whether it is reachable from outside (say, a
                // friend's server on a company network or behind a carrier's NAT, where
                // AutoNAT never decides) names no address: it is used where this node
                // reached it itself, which proves it is reachable from here.
                if !confirmed && let Some(dialed) = self.inner.net.dialed_addr(peer).await {
                    addrs.push(dialed);
                }
                Some(Offer {
                    addrs,
                    bytes_per_sec: bytes_per_sec.max(1),
                    confirmed,
                })
                .filter(|o| !o.addrs.is_empty())
            }
            _ => None,
        };
        let mut state = self.lock();
        match offer {
            Some(offer) => {
                tracing::debug!(%peer, rate = offer.bytes_per_sec, "a friend's node relays for this node");
                state.offers.insert(peer, offer);
                state.asked.remove(&peer);
            }
            None => {
                state.offers.remove(&peer);
            }
        }
        drop(state);
        self.wake();
    }

    /// The answer to `CircuitOffer` from one of the peers this node may relay for.
    pub fn offer(&self) -> RelayResponse {
        if !self.inner.serves {
            return RelayResponse::Refused("this node does not relay connections".into());
        }
        let now = self.inner.net.connectivity().borrow().clone();
        match now.reachability {
            Reachability::Private => {
                RelayResponse::Refused("this node is not reachable from outside".into())
            }
            Reachability::Public if !now.external_addrs.is_empty() => RelayResponse::CircuitOffer {
                addrs: now.external_addrs.iter().map(|a| a.to_vec()).collect(),
                bytes_per_sec: self.inner.rate,
            },
            // Not known: offered without addresses; a node that reached this one directly
            // uses it where it did (nodes of earlier versions take no such offer).
            _ => RelayResponse::CircuitOffer {
                addrs: Vec::new(),
                bytes_per_sec: self.inner.rate,
            },
        }
    }

    /// The rate a circuit through `relay` may carry, as the relay said (or the default).
    pub fn relay_rate(&self, relay: PeerId) -> u64 {
        self.lock()
            .offers
            .get(&relay)
            .map_or(DEFAULT_RELAY_RATE, |o| o.bytes_per_sec)
    }

    /// Where this node stands now.
    pub fn now(&self) -> volli_net::Connectivity {
        self.inner.net.connectivity().borrow().clone()
    }
}

fn peer_in(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Ma::P2p(peer) => Some(peer),
        _ => None,
    })
}

/// `addr` of the relay `peer` offered, ending in its id; `None` when it names another peer
/// (an offer is for the node that made it, not for a third party it would send us to).
fn with_peer(addr: &Multiaddr, peer: PeerId) -> Option<Multiaddr> {
    match peer_in(addr) {
        Some(named) if named != peer => None,
        Some(_) => Some(addr.clone()),
        None => Some(addr.clone().with(Ma::P2p(peer))),
    }
}

/// Why a node at `addrs` could not be reached, in words a user can act on; `error` is what
/// the network said.
pub fn why_unreachable(addrs: &[Multiaddr], error: &str) -> String {
    let relayed = addrs
        .iter()
        .any(|a| a.iter().any(|p| matches!(p, Ma::P2pCircuit)));
    // Addresses others can use: public ones, and this machine's own (a node on the same
    // host). Only addresses of a network of its own leave a node out of reach.
    let public = addrs.iter().any(|a| {
        a.iter().any(|p| match p {
            Ma::Ip4(ip) => !(ip.is_private() || ip.is_link_local()),
            Ma::Ip6(ip) => !(ip.is_unicast_link_local() || ip.is_unique_local()),
            Ma::Dns(_) | Ma::Dns4(_) | Ma::Dns6(_) => true,
            _ => false,
        })
    });
    let detail = error.chars().take(160).collect::<String>();
    if addrs.is_empty() {
        return format!("no address of the node is known yet; still looking ({detail})");
    }
    if relayed {
        return format!(
            "the node could not be reached directly or through the friends' nodes that relay \
             for it; it may be offline ({detail})"
        );
    }
    if !public {
        return format!(
            "the node shared only addresses inside its own network and no relay: it needs a \
             friend with a public node to relay for it (a contact both can reach), or a port \
             forwarded on its router; tried {} address(es) ({detail})",
            addrs.len()
        );
    }
    format!("the node did not answer at any of its addresses; it may be offline ({detail})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_offer_is_used_only_for_the_node_that_made_it() {
        let relay = PeerId::random();
        let bare: Multiaddr = "/ip4/11.0.0.2/tcp/4001".parse().unwrap();
        assert_eq!(
            with_peer(&bare, relay),
            Some(bare.clone().with(Ma::P2p(relay)))
        );
        let own = bare.clone().with(Ma::P2p(relay));
        assert_eq!(with_peer(&own, relay), Some(own.clone()));
        // An offer that would send this node to reserve at a third party.
        let other = bare.with(Ma::P2p(PeerId::random()));
        assert_eq!(with_peer(&other, relay), None);
    }

    #[test]
    fn a_missing_path_is_explained() {
        let private: Vec<Multiaddr> = vec!["/ip4/192.168.1.2/tcp/4001".parse().unwrap()];
        assert!(why_unreachable(&private, "timeout").contains("a friend with a public node"));
        let relayed: Vec<Multiaddr> = vec![
            "/ip4/11.0.0.2/tcp/4001/p2p/12D3KooWNkSGw3AUPHDmF15W15A4CHEDogcgptPvBvjshmeutFsh/p2p-circuit"
                .parse()
                .unwrap(),
        ];
        assert!(why_unreachable(&relayed, "timeout").contains("relay for it"));
        let public: Vec<Multiaddr> = vec!["/ip4/11.0.0.2/tcp/4001".parse().unwrap()];
        assert!(why_unreachable(&public, "refused").contains("offline"));
        let here: Vec<Multiaddr> = vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()];
        assert!(why_unreachable(&here, "refused").contains("offline"));
        assert!(why_unreachable(&[], "x").contains("no address"));
    }
}
