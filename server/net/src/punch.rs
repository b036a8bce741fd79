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

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol as AddrProtocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

use crate::{PunchOutcome, PunchReport};

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
    fn peer(&mut self, peer: PeerId) -> &mut Peer {
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
            self.peers.retain(|_, p| p.attempt.is_some());
        }
        self.peers.entry(peer).or_default()
    }

    /// A relayed connection to `peer` came up while it has no direct one: DCUtR starts an
    /// attempt on it. `as_listener`: this side listened through the relay.
    pub(crate) fn relayed_up(
        &mut self,
        peer: PeerId,
        as_listener: bool,
        now: Instant,
    ) -> Option<Action> {
        let p = self.peer(peer);
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
        self.peer(peer).circuits.push(id);
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
            if !attempt.addrs.contains(addr) && attempt.addrs.len() < 16 {
                attempt.addrs.push(addr.clone());
            }
            let line = format!("{} {addr}: {}", transport_of(addr), short(error));
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
            let line = format!("hole punching: {}", short(error));
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
        for (peer, p) in &mut self.peers {
            if let Some(attempt) = &mut p.attempt {
                if let Some(at) = attempt.next_redial()
                    && at <= now
                {
                    if let Some((_, done)) = &mut attempt.redials {
                        *done += 1;
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
                    p.failures += 1;
                    let wait = FIRST_RETRY
                        .saturating_mul(4u32.saturating_pow(p.failures - 1))
                        .min(LAST_RETRY);
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
                if relayed_only(peer) {
                    // Should the fresh circuit not come up, the next try waits as long.
                    let wait = FIRST_RETRY
                        .saturating_mul(4u32.saturating_pow(p.failures))
                        .min(LAST_RETRY);
                    p.retry_at = Some(now + wait);
                    out.push(Action::Circuit(*peer));
                }
            }
        }
        out
    }
}

/// An error's text, bounded.
fn short(error: &str) -> String {
    error.chars().take(120).collect()
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
        let mut punches = Punches::default();
        let peer = PeerId::random();
        let t0 = Instant::now();
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
    fn a_path_that_turns_direct_after_failures_is_reported_direct() {
        let mut punches = Punches::default();
        let peer = PeerId::random();
        let t0 = Instant::now();
        punches.relayed_up(peer, false, t0);
        let out = punches.due(t0 + Duration::from_secs(16), |_| true);
        assert_eq!(reports(&out), vec![PunchOutcome::Failed]);
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
}
