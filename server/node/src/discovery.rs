//! The discovery manager: asks every enabled discovery plugin what it finds, merges the
//! findings into the peer table (keeping every source), verifies certificates and signed
//! records, advertises this node, and keeps the user's contacts connected — finding a
//! contact again, through any method, when its address changes.
//!
//! Rounds run when something happens (a packet on the LAN, a new address, a contact lost)
//! and otherwise on an interval that doubles from 1 s to 60 s while nothing changes, so an
//! idle node stays quiet.

pub(crate) mod backends;
pub(crate) mod lan;

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use multiaddr::Multiaddr;
use tokio::sync::Notify;
use volli_core::{AddressRecord, DeviceCertificate, PeerId, Timestamp, UserId};
use volli_net::NetClient;
use volli_plugin_host::{Capability, DiscoveryPlugin, Finding, PeerRecord, PluginHost, SelfInfo};
use volli_store::Vault;

use crate::identity::Identity;
use crate::node::NodeInfo;
use crate::peers::Peers;

const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// An idle node's rounds drift to two minutes apart: what they would find comes by other
/// ways sooner (an mDNS packet wakes the LAN plugins at once, a contact that comes online
/// dials its contacts, a lost contact wakes a round), and each round asks every plugin.
const MAX_INTERVAL: Duration = Duration::from_secs(120);
/// Rounds run at once when woken, up to a burst of this many; beyond it, at this rate per
/// second. A packet is answered in milliseconds, a flood of them costs bounded work, and
/// even then a round is never more than 1/rate away.
const ROUND_BURST: f64 = 10.0;
const ROUNDS_PER_SECOND: f64 = 50.0;
const READVERTISE: Duration = Duration::from_secs(20 * 60);
/// An address record is valid this long; republished well before.
const RECORD_TTL: Duration = Duration::from_secs(24 * 3600);
const FIRST_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(300);
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ADDRS: usize = 16;
/// How long the first round waits for the swarm's listen addresses.
const FIRST_ADDRS: Duration = Duration::from_millis(500);

/// A peer worth dialing, from a finding.
struct Target {
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    /// The user it belongs to: verified, or claimed by the method.
    user: Option<UserId>,
    /// Whether this told the peer table something it did not know (a peer, an address, a
    /// certificate, a source): rounds come quickly while they do and back off once they
    /// only repeat what is known.
    learnt: bool,
}

struct State {
    interval: Duration,
    advertised: Option<(Vec<Multiaddr>, Instant)>,
    retries: HashMap<UserId, (Instant, Duration)>,
}

/// The discovery manager. Cheap to clone.
#[derive(Clone)]
pub struct Discovery {
    inner: Arc<Inner>,
}

struct Inner {
    host: PluginHost,
    net: NetClient,
    peers: Peers,
    vault: Vault,
    identity: Arc<Identity>,
    node: NodeInfo,
    /// Notified by the LAN socket on every packet: the plugins with the `lan` capability
    /// read their packets (answering a query at once), the others are not asked.
    lan: Arc<Notify>,
    /// Notified for a full round soon (see [`Discovery::wake`]).
    rounds: Notify,
    state: Mutex<State>,
}

impl Discovery {
    /// A manager over the plugins of `host`. `lan` is shared with the LAN socket.
    pub fn new(
        host: PluginHost,
        net: NetClient,
        peers: Peers,
        vault: Vault,
        identity: Arc<Identity>,
        node: NodeInfo,
        lan: Arc<Notify>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                host,
                net,
                peers,
                vault,
                identity,
                node,
                lan,
                rounds: Notify::new(),
                state: Mutex::new(State {
                    interval: MIN_INTERVAL,
                    advertised: None,
                    retries: HashMap::new(),
                }),
            }),
        }
    }

    /// Starts the discovery loop.
    pub fn spawn(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            // The first round advertises this node; give the swarm a moment to report its
            // listen addresses so that happens at start rather than in a later round.
            let started = Instant::now();
            while this.advertised_addrs().await.is_empty() && started.elapsed() < FIRST_ADDRS {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // A wake stored before the first round (the listen addresses arriving) is stale.
            let _ = this.inner.rounds.notified().now_or_never();
            this.round().await;
            let (mut tokens, mut at) = (ROUND_BURST, Instant::now());
            loop {
                let interval = this.lock().interval;
                let full = tokio::select! {
                    () = this.inner.rounds.notified() => true,
                    () = this.inner.lan.notified() => false,
                    () = tokio::time::sleep(interval) => true,
                };
                tokens = (tokens + at.elapsed().as_secs_f64() * ROUNDS_PER_SECOND).min(ROUND_BURST);
                if tokens < 1.0 {
                    let wait = (1.0 - tokens) / ROUNDS_PER_SECOND;
                    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                    tokens = 1.0;
                }
                tokens -= 1.0;
                at = Instant::now();
                // A packet on the LAN (a query to answer, another node's answer) concerns the
                // plugins that read them; a full round follows only if they found news.
                if full || this.lan_round().await {
                    this.round().await;
                }
            }
        });
    }

    /// Runs a round soon: addresses changed, a contact was lost.
    pub fn wake(&self) {
        self.lock().interval = MIN_INTERVAL;
        self.inner.rounds.notify_one();
    }

    /// Forgets a contact's retry backoff, so it is looked for at once.
    pub fn contact_lost(&self, user: UserId) {
        self.lock().retries.remove(&user);
        self.wake();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the plugins granted `lan` what they found (they read their packets and answer
    /// queries); whether that was news.
    async fn lan_round(&self) -> bool {
        let mut changed = false;
        for plugin in self.inner.host.discovery() {
            if !plugin.is_granted(Capability::Lan) {
                continue;
            }
            match plugin.discover().await {
                Ok(findings) => {
                    changed |= self
                        .absorb(plugin.name(), findings)
                        .iter()
                        .any(|t| t.learnt);
                }
                Err(e) => tracing::debug!(plugin = plugin.name(), error = %e, "discover failed"),
            }
        }
        changed
    }

    async fn round(&self) {
        self.advertise_if_due().await;
        let plugins = self.inner.host.discovery();
        // Each plugin's findings are taken in as soon as it answers: a quick one (mdns,
        // answering from packets already received) must not wait for a slow one (a DHT
        // query) before its peers are listed.
        let mut results: futures::stream::FuturesUnordered<_> = plugins
            .iter()
            .map(|p| async move { (p.name().to_owned(), p.discover().await) })
            .collect();
        let mut changed = false;
        while let Some((source, result)) = futures::StreamExt::next(&mut results).await {
            match result {
                Ok(findings) => {
                    changed |= self.absorb(&source, findings).iter().any(|t| t.learnt);
                }
                Err(e) => tracing::debug!(plugin = source, error = %e, "discover failed"),
            }
        }
        self.reach_contacts(&plugins).await;
        let mut state = self.lock();
        state.interval = if changed {
            MIN_INTERVAL
        } else {
            (state.interval * 2).min(MAX_INTERVAL)
        };
    }

    /// Addresses worth telling others, best first: those confirmed reachable from outside,
    /// then the relays this node listens through (`…/p2p-circuit`), then the listen addresses
    /// that are not wildcards (for peers on the same network).
    pub async fn advertised_addrs(&self) -> Vec<Multiaddr> {
        let external = self
            .inner
            .net
            .connectivity()
            .borrow()
            .external_addrs
            .clone();
        let listening = self.inner.net.listen_addrs().await;
        let circuit = |a: &Multiaddr| {
            a.iter()
                .any(|p| matches!(p, multiaddr::Protocol::P2pCircuit))
        };
        let mut addrs: Vec<Multiaddr> = Vec::new();
        let ordered = external
            .into_iter()
            .chain(listening.iter().filter(|a| circuit(a)).cloned())
            .chain(listening.iter().filter(|a| !circuit(a)).cloned());
        for a in ordered {
            let wildcard = a.iter().any(|p| {
                matches!(p, multiaddr::Protocol::Ip4(ip) if ip.is_unspecified())
                    || matches!(p, multiaddr::Protocol::Ip6(ip) if ip.is_unspecified())
            });
            if !wildcard && !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        addrs.truncate(MAX_ADDRS);
        addrs
    }

    async fn advertise_if_due(&self) {
        let addrs = self.advertised_addrs().await;
        let due = match &self.lock().advertised {
            Some((last, at)) => *last != addrs || at.elapsed() > READVERTISE,
            None => true,
        };
        if !due || addrs.is_empty() {
            return;
        }
        self.inner.node.set_listen_addrs(addrs.clone());
        let me = self.self_info(&addrs);
        let plugins = self.inner.host.discovery();
        let results = futures::future::join_all(plugins.iter().map(|p| {
            let me = &me;
            async move { (p.name().to_owned(), p.advertise(me).await) }
        }))
        .await;
        for (plugin, result) in results {
            if let Err(e) = result {
                tracing::debug!(plugin, error = %e, "advertise failed");
            }
        }
        self.lock().advertised = Some((addrs, Instant::now()));
    }

    fn self_info(&self, addrs: &[Multiaddr]) -> SelfInfo {
        let identity = &self.inner.identity;
        let now = Timestamp::now();
        // Address records are signed by the user key: only admin devices publish one (the
        // others are found through their contacts' cards, the LAN and rendezvous).
        let record = identity.user.as_ref().map(|user| {
            AddressRecord::issue(
                user,
                &[(identity.certificate.clone(), addrs.to_vec())],
                now,
                now.saturating_add(RECORD_TTL),
            )
        });
        SelfInfo {
            user_id: identity.user_id().to_string(),
            peer_id: identity.peer_id().to_base58(),
            addrs: addrs.iter().map(ToString::to_string).collect(),
            certificate: identity.certificate.to_bytes(),
            signed_record: record.map(|r| r.to_bytes()).unwrap_or_default(),
        }
    }

    /// Merges findings into the peer table; returns the dialable targets.
    fn absorb(&self, source: &str, findings: Vec<Finding>) -> Vec<Target> {
        let mut targets = Vec::new();
        let now = Timestamp::now();
        for finding in findings {
            match finding {
                Finding::Peer(p) => {
                    if let Some(target) = self.absorb_peer(source, p) {
                        targets.push(target);
                    }
                }
                Finding::Record(bytes) => match AddressRecord::from_bytes(&bytes, now) {
                    Ok(record) => {
                        for (certificate, addrs) in record.devices() {
                            let peer = certificate.peer_id();
                            if peer == self.inner.identity.peer_id() {
                                continue;
                            }
                            let user = certificate.user_id();
                            let learnt =
                                self.inner
                                    .peers
                                    .found(peer, &addrs, Some(certificate), source);
                            targets.push(Target {
                                peer,
                                addrs,
                                user: Some(user),
                                learnt,
                            });
                        }
                    }
                    Err(e) => {
                        tracing::debug!(plugin = source, error = %e, "ignored an address record")
                    }
                },
            }
        }
        targets
    }

    fn absorb_peer(&self, source: &str, p: PeerRecord) -> Option<Target> {
        let peer = PeerId::from_str(&p.peer_id).ok()?;
        if peer == self.inner.identity.peer_id() {
            return None;
        }
        let addrs: Vec<Multiaddr> = p
            .addrs
            .iter()
            .filter_map(|a| Multiaddr::from_str(a).ok())
            .take(MAX_ADDRS)
            .collect();
        let certificate = p
            .certificate
            .and_then(|c| DeviceCertificate::from_bytes(&c).ok())
            .filter(|c| c.verify_for(&c.user_id(), &peer).is_ok());
        let user = certificate
            .as_ref()
            .map(DeviceCertificate::user_id)
            .or_else(|| p.user_id.and_then(|u| UserId::from_str(&u).ok()));
        let learnt = self.inner.peers.found(peer, &addrs, certificate, source);
        Some(Target {
            peer,
            addrs,
            user,
            learnt,
        })
    }

    /// Looks for every contact that is not connected (with backoff) and dials what it finds.
    async fn reach_contacts(&self, plugins: &[DiscoveryPlugin]) {
        let Ok(contacts) = self.inner.vault.contacts().await else {
            return;
        };
        let now = Instant::now();
        for contact in contacts {
            let user = contact.user_id;
            if self.inner.peers.user_connected(&user) {
                self.lock().retries.remove(&user);
                continue;
            }
            let due = self
                .lock()
                .retries
                .get(&user)
                .is_none_or(|(at, _)| *at <= now);
            if !due {
                continue;
            }
            let mut targets: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
            for device in &contact.devices {
                let known = self
                    .inner
                    .peers
                    .get(&device.peer_id())
                    .map(|e| e.addrs)
                    .unwrap_or_default();
                targets.insert(device.peer_id(), known);
            }
            let lookups = futures::future::join_all(plugins.iter().map(|p| {
                let user = user.to_string();
                async move { (p.name().to_owned(), p.lookup(&user).await) }
            }))
            .await;
            for (source, result) in lookups {
                if let Ok(findings) = result {
                    for t in self.absorb(&source, findings) {
                        if t.user == Some(user) {
                            targets.entry(t.peer).or_default().extend(t.addrs);
                        }
                    }
                }
            }
            let connected = self.dial_any(targets).await;
            let mut state = self.lock();
            if connected {
                state.retries.remove(&user);
            } else {
                let backoff = state
                    .retries
                    .get(&user)
                    .map_or(FIRST_RETRY, |(_, b)| (*b * 2).min(MAX_RETRY));
                state.retries.insert(user, (now + backoff, backoff));
            }
        }
    }

    /// Dials every target at once; true if one connected.
    async fn dial_any(&self, targets: HashMap<PeerId, Vec<Multiaddr>>) -> bool {
        let dials = targets.into_iter().map(|(peer, mut addrs)| {
            addrs.dedup();
            let net = self.inner.net.clone();
            async move {
                matches!(
                    tokio::time::timeout(DIAL_TIMEOUT, net.dial(peer, addrs)).await,
                    Ok(Ok(()))
                )
            }
        });
        futures::future::join_all(dials)
            .await
            .into_iter()
            .any(|ok| ok)
    }

    /// Asks every plugin where `user`'s device `peer` is; returns the addresses known for it
    /// afterwards.
    pub async fn locate(&self, user: UserId, peer: PeerId) -> Vec<Multiaddr> {
        let plugins = self.inner.host.discovery();
        let lookups = futures::future::join_all(plugins.iter().map(|p| {
            let user = user.to_string();
            async move { (p.name().to_owned(), p.lookup(&user).await) }
        }))
        .await;
        for (source, result) in lookups {
            if let Ok(findings) = result {
                self.absorb(&source, findings);
            }
        }
        self.inner
            .peers
            .get(&peer)
            .map(|e| e.addrs)
            .unwrap_or_default()
    }

    /// Tells every discovery plugin what was learnt about `user` elsewhere (an invite, a card).
    pub async fn learn(
        &self,
        user: UserId,
        devices: &[(PeerId, Vec<Multiaddr>, Option<DeviceCertificate>)],
    ) {
        let findings: Vec<Finding> = devices
            .iter()
            .map(|(peer, addrs, cert)| {
                Finding::Peer(PeerRecord {
                    peer_id: peer.to_base58(),
                    addrs: addrs.iter().map(ToString::to_string).collect(),
                    user_id: Some(user.to_string()),
                    certificate: cert.as_ref().map(DeviceCertificate::to_bytes),
                })
            })
            .collect();
        for plugin in self.inner.host.discovery() {
            if let Err(e) = plugin.learn(&user.to_string(), &findings).await {
                tracing::debug!(plugin = plugin.name(), error = %e, "learn failed");
            }
        }
        // Let the plugins report what they now know.
        self.wake();
    }
}
