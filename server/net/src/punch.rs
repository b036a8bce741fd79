//! Hole punching beyond DCUtR's three tries: one *attempt* per relayed connection, spaced
//! re-dials within it, an outcome for each, and a later attempt with back-off while the peer
//! stays relayed (ADR 0020).
//!
//! DCUtR (libp2p) runs on every relayed connection: both ends swap the addresses others
//! observed them at and dial each other at once; the end that listened through the relay
//! repeats that at once, three times in all. Behind routers that answer stray packets (TCP
//! RST, ICMP port unreachable) a SYN that reaches the other router before the other side's
//! SYN opened a mapping there is reset, and the three tries end within milliseconds. Here,
//! per peer:
//! - **spaced re-dials**: the addresses a failed punching dial went to are dialed again
//!   0.5, 1.5, 3.5 and 7 s after the first failure (QUIC first), in the role DCUtR gave this
//!   side, so a mapping the other side opened meanwhile is met;
//! - **an outcome per attempt**, [`PunchReport`]: direct (over which transport) or failed
//!   (with what the dials said), for `GET /v1/peers` and the metrics;
//! - **a later attempt** while still relayed: the side that dialed the relayed connection
//!   opens a fresh circuit (which runs DCUtR again) after 30 s, then 2, 8 and 30 minutes, and
//!   closes it again when it did not help. No storms: at most one attempt at a time per peer,
//!   four re-dials in it.
//!
//! It does not choose addresses (DCUtR's observed ones) or paths (the event loop closes a
//! relayed connection once a direct one is up).
//!
//! Anyone may open a circuit to this node through its relays, and DCUtR dials what the other
//! side says it was observed at. So the re-dials and later attempts are for trusted peers
//! only (contacts and own devices, judged when they are due: an invite's peer becomes a
//! contact during its first attempt); a stranger gets DCUtR's own tries. Re-dialed addresses
//! are IP addresses with TCP or QUIC, never loopback, unspecified, multicast or link-local,
//! and what a failed dial said is kept short and without control characters.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol as AddrProtocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

use crate::{PeerFilter, PunchOutcome, PunchReport};

/// When the re-dials go, after the first failed punching dial.
const REDIALS: [Duration; 4] = [
    Duration::from_millis(500),
    Duration::from_millis(1500),
    Duration::from_millis(3500),
    Duration::from_millis(7000),
];
/// How long the last re-dial may take before the attempt counts as failed.
const GRACE: Duration = Duration::from_secs(5);
/// How long an attempt whose dials never failed (nor succeeded) may last: DCUtR's handshake
/// times out after 10 s.
const NO_ANSWER: Duration = Duration::from_secs(15);
/// The first later attempt, and the last interval between them.
const FIRST_RETRY: Duration = Duration::from_secs(30);
const LAST_RETRY: Duration = Duration::from_secs(30 * 60);
/// Peers whose failures are remembered (for the back-off) at most.
const MAX_PEERS: usize = 1024;
/// Distinct errors kept for one attempt's reason.
const MAX_ERRORS: usize = 4;

/// Something the event loop is to do.
#[derive(Debug)]
pub(crate) enum Action {
    /// Dial `peer` at `addrs` again (as the listener when `as_listener`).
    Redial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        as_listener: bool,
    },
    /// Open a fresh relayed connection to `peer` (a later attempt), if this side dialed the
    /// relayed one.
    Circuit(PeerId),
    /// Close this relayed connection of `peer` (a fresh circuit that did not help), if
    /// another relayed one remains.
    Close(PeerId, ConnectionId),
    /// Tell the node.
    Report(PeerId, PunchReport),
}

#[derive(Default)]
pub(crate) struct Punches {
    peers: HashMap<PeerId, Peer>,
    /// Whose attempts go beyond DCUtR's own tries; `None`: everyone's.
    trusted: Option<PeerFilter>,
}

fn is_trusted(trusted: &Option<PeerFilter>, peer: &PeerId) -> bool {
    trusted.as_ref().is_none_or(|t| t(peer))
}

/// The wait before the next later attempt after `failures` failed ones in a row.
fn backoff(failures: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(4u32.saturating_pow(failures.saturating_sub(1)))
        .min(LAST_RETRY)
}

/// Whether a punching dial's address is one to dial again: an IP address (not loopback,
/// unspecified, multicast or link-local) with TCP or QUIC, and not through a relay.
fn punchable(addr: &Multiaddr) -> bool {
    let mut iter = addr.iter();
    let ip_ok = match iter.next() {
        Some(AddrProtocol::Ip4(ip)) => {
            !(ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                || ip.is_link_local()
                || ip.is_broadcast())
        }
        Some(AddrProtocol::Ip6(ip)) => {
            !(ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                || ip.is_unicast_link_local())
        }
        _ => false,
    };
    let transport_ok = match (iter.next(), iter.next()) {
        (Some(AddrProtocol::Tcp(_)), next) => {
            matches!(next, None | Some(AddrProtocol::P2p(_)))
        }
        (Some(AddrProtocol::Udp(_)), Some(AddrProtocol::QuicV1)) => {
            matches!(iter.next(), None | Some(AddrProtocol::P2p(_)))
        }
        _ => false,
    };
    ip_ok && transport_ok && iter.next().is_none()
}

#[derive(Default)]
struct Peer {
    attempt: Option<Attempt>,
    /// Attempts in a row that ended without a direct connection.
    failures: u32,
    /// When a later attempt is due (while relayed).
    retry_at: Option<Instant>,
    /// Fresh circuits this side opened for a later attempt.
    circuits: Vec<ConnectionId>,
    /// An attempt reported as trying ended with its relayed connection, neither way: the
    /// next direct connection ends it as a success.
    unended: bool,
}

struct Attempt {
    started: Instant,
    as_listener: bool,
    /// Where the punching dials went (the peer's observed addresses).
    addrs: Vec<Multiaddr>,
    /// The first failed dial, and how many re-dials went since.
    redials: Option<(Instant, usize)>,
    errors: Vec<String>,
}

impl Attempt {
    fn deadline(&self) -> Instant {
        match self.redials {
            Some((first, _)) => first + REDIALS[REDIALS.len() - 1] + GRACE,
            None => self.started + NO_ANSWER,
        }
    }

    fn next_redial(&self) -> Option<Instant> {
        let (first, done) = self.redials?;
        REDIALS.get(done).map(|d| first + *d)
    }

    fn reason(&self) -> String {
        if self.errors.is_empty() {
            return "no answer from the other side's addresses".into();
        }
        self.errors.join("; ")
    }
}

fn transport_of(addr: &Multiaddr) -> &'static str {
    let mut transport = "other";
    for p in addr {
        match p {
            AddrProtocol::QuicV1 | AddrProtocol::Quic => transport = "quic",
            AddrProtocol::Tcp(_) if transport == "other" => transport = "tcp",
            _ => {}
        }
    }
    transport
}

fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, AddrProtocol::P2pCircuit))
}

fn report(
    outcome: PunchOutcome,
    transport: Option<&'static str>,
    reason: Option<String>,
) -> PunchReport {
    PunchReport {
        outcome,
        transport,
        reason,
        at: std::time::SystemTime::now(),
    }
}

impl Punches {
    /// `trusted`: whose attempts go beyond DCUtR's own tries (`None`: everyone's).
    pub(crate) fn new(trusted: Option<PeerFilter>) -> Self {
        Self {
            peers: HashMap::new(),
            trusted,
        }
    }

    /// `peer`'s entry, made if there is room: when full, entries with nothing under way go
    /// (strangers' first, a trusted peer's back-off only when nothing else is left to drop).
    fn peer(&mut self, peer: PeerId) -> Option<&mut Peer> {
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
            let trusted = &self.trusted;
            self.peers.retain(|id, p| {
                p.attempt.is_some()
                    || (is_trusted(trusted, id)
                        && (p.retry_at.is_some() || p.failures > 0 || p.unended))
            });
            if self.peers.len() >= MAX_PEERS {
                self.peers.retain(|_, p| p.attempt.is_some());
            }
            if self.peers.len() >= MAX_PEERS {
                return None;
            }
        }
        Some(self.peers.entry(peer).or_default())
    }

    /// A relayed connection to `peer` came up while it has no direct one: DCUtR starts an
    /// attempt on it. `as_listener`: this side listened through the relay.
    pub(crate) fn relayed_up(
        &mut self,
        peer: PeerId,
        as_listener: bool,
        now: Instant,
    ) -> Option<Action> {
        let p = self.peer(peer)?;
        if p.attempt.is_some() {
            return None;
        }
        p.attempt = Some(Attempt {
            started: now,
            as_listener,
            addrs: Vec::new(),
            redials: None,
            errors: Vec::new(),
        });
        Some(Action::Report(
            peer,
            report(PunchOutcome::Trying, None, None),
        ))
    }

    /// A fresh circuit this side opened for a later attempt.
    pub(crate) fn circuit_opened(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.circuits.push(id);
        }
    }

    /// A dial of this side failed: when it was a fresh circuit for a later attempt, that
    /// attempt failed (the next waits longer).
    pub(crate) fn dial_ended(&mut self, peer: PeerId, id: ConnectionId, now: Instant) {
        if let Some(p) = self.peers.get_mut(&peer)
            && let Some(at) = p.circuits.iter().position(|c| *c == id)
        {
            p.circuits.swap_remove(at);
            p.failures = p.failures.saturating_add(1);
            if p.attempt.is_none() {
                p.retry_at = Some(now + backoff(p.failures));
            }
        }
    }

    /// A dial to `peer` failed at `failed` (address and error) while an attempt may be under
    /// way: the punching dials' addresses are dialed again, spaced.
    pub(crate) fn dial_failed(
        &mut self,
        peer: PeerId,
        failed: &[(Multiaddr, String)],
        now: Instant,
    ) {
        let Some(attempt) = self.peers.get_mut(&peer).and_then(|p| p.attempt.as_mut()) else {
            return;
        };
        let mut any = false;
        for (addr, error) in failed.iter().filter(|(a, _)| !is_circuit(a)) {
            any = true;
            if punchable(addr) && !attempt.addrs.contains(addr) && attempt.addrs.len() < 16 {
                attempt.addrs.push(addr.clone());
            }
            let line = format!(
                "{} {}: {}",
                transport_of(addr),
                short(&addr.to_string(), 120),
                short(error, 120)
            );
            if !attempt.errors.contains(&line) && attempt.errors.len() < MAX_ERRORS {
                attempt.errors.push(line);
            }
        }
        if any && attempt.redials.is_none() {
            attempt.redials = Some((now, 0));
        }
    }

    /// DCUtR gave up or its handshake failed.
    pub(crate) fn dcutr_failed(&mut self, peer: PeerId, error: &str) {
        if let Some(attempt) = self.peers.get_mut(&peer).and_then(|p| p.attempt.as_mut()) {
            let line = format!("hole punching: {}", short(error, 120));
            if !attempt.errors.contains(&line) && attempt.errors.len() < MAX_ERRORS {
                attempt.errors.push(line);
            }
        }
    }

    /// A direct connection to `peer` came up: the attempt under way succeeded, or (after
    /// attempts that failed) the path is direct after all — either side's later punch, or a
    /// dial once the routers let it through.
    pub(crate) fn direct_up(&mut self, peer: PeerId, remote: &Multiaddr) -> Option<Action> {
        let p = self.peers.get_mut(&peer)?;
        if p.attempt.take().is_none() && p.failures == 0 && !p.unended {
            return None;
        }
        p.unended = false;
        p.failures = 0;
        p.retry_at = None;
        p.circuits.clear();
        Some(Action::Report(
            peer,
            report(PunchOutcome::Direct, Some(transport_of(remote)), None),
        ))
    }

    /// `peer` has no relayed connection left (direct, or gone): nothing more to try. Its
    /// failures are kept for the back-off.
    pub(crate) fn relayed_gone(&mut self, peer: PeerId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            if p.attempt.take().is_some() {
                p.unended = true;
            }
            p.retry_at = None;
            p.circuits.clear();
        }
    }

    /// A connection closed.
    pub(crate) fn closed(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.circuits.retain(|c| *c != id);
        }
    }

    /// When something is due next.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        self.peers
            .values()
            .flat_map(|p| {
                let attempt = p
                    .attempt
                    .as_ref()
                    .map(|a| a.next_redial().unwrap_or_else(|| a.deadline()));
                [attempt, p.retry_at.filter(|_| p.attempt.is_none())]
            })
            .flatten()
            .min()
    }

    /// What is due at `now`. `relayed_only(peer)`: whether the peer is still reached only
    /// through a relay.
    pub(crate) fn due(
        &mut self,
        now: Instant,
        relayed_only: impl Fn(&PeerId) -> bool,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let trusted = &self.trusted;
        for (peer, p) in &mut self.peers {
            if let Some(attempt) = &mut p.attempt {
                if let Some(at) = attempt.next_redial()
                    && at <= now
                {
                    if let Some((_, done)) = &mut attempt.redials {
                        *done += 1;
                    }
                    if attempt.addrs.is_empty() || !is_trusted(trusted, peer) {
                        // A stranger's attempt keeps its time line, without dials.
                        continue;
                    }
                    let mut addrs = attempt.addrs.clone();
                    // QUIC first: a UDP hole punch is not stopped by an ICMP error.
                    addrs.sort_by_key(|a| transport_of(a) != "quic");
                    out.push(Action::Redial {
                        peer: *peer,
                        addrs,
                        as_listener: attempt.as_listener,
                    });
                } else if attempt.next_redial().is_none()
                    && attempt.deadline() <= now
                    && !relayed_only(peer)
                {
                    // A direct connection came up meanwhile (the other side's dial).
                    p.attempt = None;
                    p.unended = false;
                    p.failures = 0;
                    p.retry_at = None;
                    for id in p.circuits.drain(..) {
                        out.push(Action::Close(*peer, id));
                    }
                    out.push(Action::Report(
                        *peer,
                        report(PunchOutcome::Direct, None, None),
                    ));
                } else if attempt.next_redial().is_none() && attempt.deadline() <= now {
                    let reason = attempt.reason();
                    p.attempt = None;
                    p.failures = p.failures.saturating_add(1);
                    let wait = backoff(p.failures);
                    p.retry_at = Some(now + wait);
                    tracing::info!(%peer, %reason, retry_in = ?wait, "hole punching failed; staying on the relay");
                    for id in p.circuits.drain(..) {
                        out.push(Action::Close(*peer, id));
                    }
                    out.push(Action::Report(
                        *peer,
                        report(PunchOutcome::Failed, None, Some(reason)),
                    ));
                }
            } else if let Some(at) = p.retry_at
                && at <= now
            {
                p.retry_at = None;
                if relayed_only(peer) && is_trusted(trusted, peer) {
                    // Should the fresh circuit not come up, the next try waits as long.
                    p.retry_at = Some(now + backoff(p.failures.saturating_add(1)));
                    out.push(Action::Circuit(*peer));
                }
            }
        }
        out
    }
}

/// An error's text (which may carry what a peer sent), bounded and on one line.
fn short(error: &str, chars: usize) -> String {
    error
        .chars()
        .take(chars)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn reports(actions: &[Action]) -> Vec<PunchOutcome> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Report(_, r) => Some(r.outcome),
                _ => None,
            })
            .collect()
    }

    /// An attempt with `peer` that got no answer and ended failed at `t0` + 16 s.
    fn failed_unanswered(punches: &mut Punches, peer: PeerId, t0: Instant) {
        punches.relayed_up(peer, false, t0);
        assert!(
            punches
                .due(t0 + Duration::from_secs(14), |_| true)
                .is_empty()
        );
        let out = punches.due(t0 + Duration::from_secs(16), |_| true);
        assert_eq!(reports(&out), vec![PunchOutcome::Failed]);
    }

    #[test]
    fn a_failed_punch_is_redialed_spaced_then_tried_again_later_with_backoff() {
        let mut punches = Punches::default();
        let peer = PeerId::random();
        let t0 = Instant::now();
        assert!(punches.relayed_up(peer, true, t0).is_some());
        // A second relayed connection is not a second attempt.
        assert!(punches.relayed_up(peer, true, t0).is_none());
        let tcp: Multiaddr = "/ip4/11.0.0.3/tcp/4001".parse().unwrap();
        let quic: Multiaddr = "/ip4/11.0.0.3/udp/4001/quic-v1".parse().unwrap();
        punches.dial_failed(
            peer,
            &[
                (tcp.clone(), "Connection refused (os error 111)".into()),
                (quic.clone(), "timed out".into()),
            ],
            t0,
        );
        // Four re-dials, QUIC first, at 0.5, 1.5, 3.5 and 7 s; nothing in between.
        let mut redials = Vec::new();
        let mut now = t0;
        while now < t0 + Duration::from_secs(20) {
            for action in punches.due(now, |_| true) {
                if let Action::Redial {
                    addrs, as_listener, ..
                } = action
                {
                    assert!(as_listener);
                    assert_eq!(addrs, vec![quic.clone(), tcp.clone()]);
                    redials.push(now - t0);
                } else if let Action::Report(_, r) = action {
                    assert_eq!(r.outcome, PunchOutcome::Failed);
                    assert!(r.reason.unwrap().contains("refused"));
                    assert!(now - t0 >= Duration::from_secs(12));
                }
            }
            now += Duration::from_millis(100);
        }
        assert_eq!(redials.len(), 4, "{redials:?}");
        assert!(redials[0] >= Duration::from_millis(500) && redials[3] >= Duration::from_secs(7));
        // A later attempt: a fresh circuit 30 s after the failure, not before.
        let failed_at = t0 + Duration::from_secs(12);
        assert!(
            punches
                .due(failed_at + Duration::from_secs(29), |_| true)
                .is_empty()
        );
        let later = punches.due(failed_at + Duration::from_secs(31), |_| true);
        assert!(matches!(later.as_slice(), [Action::Circuit(p)] if *p == peer));
        // Nothing more until that attempt ends.
        assert!(
            punches
                .due(failed_at + Duration::from_secs(40), |_| true)
                .is_empty()
        );
    }

    #[test]
    fn a_direct_connection_ends_the_attempt_as_a_success() {
        let mut punches = Punches::default();
        let peer = PeerId::random();
        let t0 = Instant::now();
        let started = punches
            .relayed_up(peer, false, t0)
            .into_iter()
            .collect::<Vec<_>>();
        assert_eq!(reports(&started), vec![PunchOutcome::Trying]);
        let quic: Multiaddr = "/ip4/11.0.0.3/udp/4001/quic-v1".parse().unwrap();
        let done = punches
            .direct_up(peer, &quic)
            .into_iter()
            .collect::<Vec<_>>();
        assert!(
            matches!(done.as_slice(), [Action::Report(_, r)] if r.outcome == PunchOutcome::Direct && r.transport == Some("quic"))
        );
        assert!(punches.next_wake().is_none());
        // A direct connection with no attempt under way reports nothing.
        assert!(punches.direct_up(peer, &quic).is_none());

        // An attempt whose relayed connection closed before a direct one came up (the peer
        // reconnected directly) ends direct, not trying for good.
        let other = PeerId::random();
        punches.relayed_up(other, false, t0);
        punches.relayed_gone(other);
        let done = punches
            .direct_up(other, &quic)
            .into_iter()
            .collect::<Vec<_>>();
        assert_eq!(reports(&done), vec![PunchOutcome::Direct]);
        assert!(punches.direct_up(other, &quic).is_none());
    }

    #[test]
    fn an_attempt_without_any_answer_ends_failed() {
        failed_unanswered(&mut Punches::default(), PeerId::random(), Instant::now());
    }

    #[test]
    fn a_path_that_turns_direct_after_failures_is_reported_direct() {
        let mut punches = Punches::default();
        let peer = PeerId::random();
        let t0 = Instant::now();
        failed_unanswered(&mut punches, peer, t0);
        // The other side's dial gets through later, with no attempt of this side under way.
        let tcp: Multiaddr = "/ip4/11.0.0.3/tcp/4001".parse().unwrap();
        let done = punches
            .direct_up(peer, &tcp)
            .into_iter()
            .collect::<Vec<_>>();
        assert_eq!(reports(&done), vec![PunchOutcome::Direct]);
        assert!(punches.next_wake().is_none());

        // An attempt whose time runs out while a direct connection is up ended direct.
        let other = PeerId::random();
        punches.relayed_up(other, false, t0);
        let out = punches.due(t0 + Duration::from_secs(16), |_| false);
        assert_eq!(reports(&out), vec![PunchOutcome::Direct]);
        assert!(punches.next_wake().is_none());
    }

    fn failed_dials(punches: &mut Punches, peer: PeerId, t0: Instant) {
        let failed: Vec<(Multiaddr, String)> = [
            "/ip4/11.0.0.3/tcp/4001",
            "/ip4/11.0.0.3/udp/4001/quic-v1",
            "/ip4/127.0.0.1/tcp/8470",
            "/ip4/169.254.1.1/tcp/22",
            "/ip6/::1/udp/4001/quic-v1",
            "/ip4/0.0.0.0/tcp/80",
            "/ip4/224.0.0.251/udp/5353/quic-v1",
            "/dns4/example.com/tcp/443",
            "/ip4/11.0.0.3/udp/53",
            "/ip4/11.0.0.3/tcp/4001/ws",
        ]
        .iter()
        .map(|a| (a.parse().unwrap(), "Connection refused".to_owned()))
        .collect();
        punches.dial_failed(peer, &failed, t0);
    }

    #[test]
    fn only_ip_addresses_with_tcp_or_quic_beyond_this_machine_and_link_are_dialed_again() {
        let mut punches = Punches::default();
        let peer = PeerId::random();
        let t0 = Instant::now();
        punches.relayed_up(peer, false, t0);
        failed_dials(&mut punches, peer, t0);
        let out = punches.due(t0 + Duration::from_millis(600), |_| true);
        let [Action::Redial { addrs, .. }] = out.as_slice() else {
            panic!("{out:?}");
        };
        let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        assert_eq!(
            addrs,
            ["/ip4/11.0.0.3/udp/4001/quic-v1", "/ip4/11.0.0.3/tcp/4001"]
        );
    }

    #[test]
    fn a_strangers_attempt_gets_no_redials_nor_later_attempts_but_an_outcome() {
        let stranger: PeerFilter = std::sync::Arc::new(|_| false);
        let mut punches = Punches::new(Some(stranger));
        let peer = PeerId::random();
        let t0 = Instant::now();
        assert!(punches.relayed_up(peer, false, t0).is_some());
        failed_dials(&mut punches, peer, t0);
        let mut outcomes = Vec::new();
        let mut now = t0;
        while now < t0 + Duration::from_secs(3 * 3600) {
            for action in punches.due(now, |_| true) {
                match action {
                    Action::Report(_, r) => outcomes.push(r.outcome),
                    other => panic!("{other:?}"),
                }
            }
            now += Duration::from_secs(1);
        }
        assert_eq!(outcomes, vec![PunchOutcome::Failed]);
    }

    #[test]
    fn trust_is_judged_when_a_dial_is_due() {
        // An invite's peer is a stranger when its relayed connection comes up and a contact
        // a moment later: the re-dials after that, and the later attempts, are its.
        let contact = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let filter: PeerFilter = {
            let contact = contact.clone();
            std::sync::Arc::new(move |_| contact.load(std::sync::atomic::Ordering::Relaxed))
        };
        let mut punches = Punches::new(Some(filter));
        let peer = PeerId::random();
        let t0 = Instant::now();
        punches.relayed_up(peer, false, t0);
        failed_dials(&mut punches, peer, t0);
        assert!(
            punches
                .due(t0 + Duration::from_millis(600), |_| true)
                .is_empty()
        );
        contact.store(true, std::sync::atomic::Ordering::Relaxed);
        let out = punches.due(t0 + Duration::from_millis(1600), |_| true);
        assert!(matches!(out.as_slice(), [Action::Redial { .. }]), "{out:?}");
    }

    #[test]
    fn a_fresh_circuit_that_fails_to_open_makes_the_next_attempt_wait_longer() {
        let mut punches = Punches::default();
        let peer = PeerId::random();
        let t0 = Instant::now();
        failed_unanswered(&mut punches, peer, t0);
        let at = t0 + Duration::from_secs(47);
        let later = punches.due(at, |_| true);
        assert!(matches!(later.as_slice(), [Action::Circuit(_)]));
        let id = ConnectionId::new_unchecked(7);
        punches.circuit_opened(peer, id);
        punches.dial_ended(peer, id, at);
        // Two failures: 2 minutes, not 30 s.
        assert!(
            punches
                .due(at + Duration::from_secs(119), |_| true)
                .is_empty()
        );
        let next = punches.due(at + Duration::from_secs(121), |_| true);
        assert!(matches!(next.as_slice(), [Action::Circuit(_)]), "{next:?}");
        // A dial that was not a fresh circuit changes nothing.
        punches.dial_ended(peer, ConnectionId::new_unchecked(8), at);
    }

    #[test]
    fn what_a_failed_dial_said_is_kept_short_and_on_one_line() {
        let mut punches = Punches::default();
        let peer = PeerId::random();
        let t0 = Instant::now();
        punches.relayed_up(peer, false, t0);
        let addr = Multiaddr::empty()
            .with(AddrProtocol::Dns4("a\nb".repeat(1000).into()))
            .with(AddrProtocol::Tcp(1));
        punches.dial_failed(
            peer,
            &[(addr, format!("refused\n{}", "x".repeat(10_000)))],
            t0,
        );
        let reason = (1..=130)
            .flat_map(|tenth| punches.due(t0 + Duration::from_millis(100 * tenth), |_| true))
            .find_map(|a| match a {
                Action::Report(_, r) => r.reason,
                _ => None,
            })
            .unwrap();
        assert!(reason.len() < 300, "{}", reason.len());
        assert!(!reason.chars().any(char::is_control), "{reason}");
    }
}
