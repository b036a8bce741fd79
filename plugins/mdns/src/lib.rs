//! `mdns`: finds peers on the local network with DNS-SD over multicast DNS (RFC 6762/6763),
//! through the `lan` capability.
//!
//! Each node answers as `<peer id>._volli._udp.local`: a PTR from the service name and a TXT
//! record carrying its user id, addresses and device certificate. `advertise` announces at
//! once and queries, so two nodes find each other within one multicast round trip; queries
//! then back off from 1 s to 5 min, and a peer heard with a TTL is asked for again once at
//! 80 % of it (RFC 6762 §5.2), so a peer announcing a short TTL stays listed. The node calls
//! `discover` when packets arrive, so answers go out promptly and an idle network costs
//! nothing.

mod dns;

use std::collections::BTreeMap;

use volli_plugin_sdk::discovery::{Discovery, Finding, Peer, SelfInfo};
use volli_plugin_sdk::{Capability, Error, Manifest, clock, lan, log};

const SERVICE: &str = "_volli._udp.local";
/// The TTL of our records: above the longest query interval, so that peers keep us listed
/// between their queries without asking early.
const TTL_SECS: u32 = 600;
const FIRST_QUERY_INTERVAL_MS: u64 = 1_000;
const MAX_QUERY_INTERVAL_MS: u64 = 5 * 60_000;
const MAX_ADDRS: usize = 8;
const MAX_PEERS: usize = 256;
/// Longest a peer stays listed without being heard again, whatever TTL it announced.
const MAX_TTL_SECS: u64 = 10 * 60;

struct Mdns {
    me: Option<SelfInfo>,
    /// Peers heard, with when they expire and when to ask for them again (`u64::MAX` once
    /// asked).
    seen: BTreeMap<String, (Peer, u64, u64)>,
    next_query_ms: u64,
    query_interval_ms: u64,
}

impl Mdns {
    fn instance(peer_id: &str) -> String {
        format!("{peer_id}.{SERVICE}")
    }

    fn announcement(&self) -> Option<Vec<u8>> {
        let me = self.me.as_ref()?;
        let instance = Self::instance(&me.peer_id);
        let mut txt = vec![
            "v=1".to_owned(),
            format!("p={}", me.peer_id),
            format!("u={}", me.user_id),
        ];
        txt.extend(me.addrs.iter().take(MAX_ADDRS).map(|a| format!("a={a}")));
        let cert = dns::base64url_encode(&me.certificate);
        txt.extend(
            cert.as_bytes()
                .chunks(200)
                .map(|c| format!("c={}", String::from_utf8_lossy(c))),
        );
        Some(dns::response(&[
            dns::Record::ptr(SERVICE, &instance, TTL_SECS),
            dns::Record::txt(&instance, &txt, TTL_SECS),
        ]))
    }

    fn send_query(&mut self, now: u64) -> Result<(), Error> {
        lan::send(&dns::query(SERVICE))?;
        self.next_query_ms = now + self.query_interval_ms;
        self.query_interval_ms = (self.query_interval_ms * 2).min(MAX_QUERY_INTERVAL_MS);
        Ok(())
    }

    /// Drops the peers whose TTL ran out; whether one is due to be asked for again (each is
    /// asked once per announcement heard).
    fn refresh_due(&mut self, now: u64) -> bool {
        self.seen.retain(|_, (_, expires, _)| *expires > now);
        let mut due = false;
        for (_, _, at) in self.seen.values_mut() {
            if now >= *at {
                due = true;
                *at = u64::MAX;
            }
        }
        due
    }

    fn handle(&mut self, packet: &[u8], now: u64) -> Result<(), Error> {
        let Ok(message) = dns::parse(packet) else {
            return Ok(());
        };
        if !message.is_response {
            if message
                .questions
                .iter()
                .any(|q| q.eq_ignore_ascii_case(SERVICE))
                && let Some(answer) = self.announcement()
            {
                lan::send(&answer)?;
            }
            return Ok(());
        }
        let me = self.me.as_ref().map(|m| m.peer_id.clone());
        for txt in message.txt_records(SERVICE) {
            let Some(peer) = peer_from_txt(&txt.strings) else {
                continue;
            };
            if Some(&peer.peer_id) == me.as_ref() {
                continue;
            }
            if txt.ttl == 0 {
                self.seen.remove(&peer.peer_id);
            } else {
                if self.seen.len() >= MAX_PEERS && !self.seen.contains_key(&peer.peer_id) {
                    // Full: the entry that would expire first makes room, so a crowd of
                    // announcements cannot keep newcomers out.
                    let soonest = self
                        .seen
                        .iter()
                        .min_by_key(|(_, (_, expires, _))| *expires)
                        .map(|(id, _)| id.clone());
                    if let Some(id) = soonest {
                        self.seen.remove(&id);
                    }
                }
                // The sender picks the TTL; a peer stays listed at most this long without
                // being heard again, whatever it claims.
                let ttl = u64::from(txt.ttl).min(MAX_TTL_SECS);
                let expires = now + ttl * 1000;
                let refresh = now + ttl * 800;
                self.seen
                    .insert(peer.peer_id.clone(), (peer, expires, refresh));
            }
        }
        Ok(())
    }
}

fn peer_from_txt(strings: &[String]) -> Option<Peer> {
    let mut peer_id = None;
    let mut user_id = None;
    let mut addrs = Vec::new();
    let mut cert = String::new();
    for s in strings {
        match s.split_once('=') {
            Some(("p", v)) => peer_id = Some(v.to_owned()),
            Some(("u", v)) => user_id = Some(v.to_owned()),
            Some(("a", v)) if addrs.len() < MAX_ADDRS => addrs.push(v.to_owned()),
            Some(("c", v)) => cert.push_str(v),
            _ => {}
        }
    }
    Some(Peer {
        peer_id: peer_id?,
        addrs,
        user_id,
        certificate: dns::base64url_decode(&cert).filter(|c| !c.is_empty()),
    })
}

impl Discovery for Mdns {
    fn manifest() -> Manifest {
        Manifest::new(
            "mdns",
            env!("CARGO_PKG_VERSION"),
            "Peers on the local network (DNS-SD over mDNS)",
        )
        .with(&[Capability::Lan, Capability::Clock, Capability::Log])
    }

    fn init(_config: &str) -> Result<Self, Error> {
        Ok(Mdns {
            me: None,
            seen: BTreeMap::new(),
            next_query_ms: 0,
            query_interval_ms: FIRST_QUERY_INTERVAL_MS,
        })
    }

    fn advertise(&mut self, me: SelfInfo) -> Result<(), Error> {
        let changed = self
            .me
            .as_ref()
            .is_none_or(|old| old.addrs != me.addrs || old.certificate != me.certificate);
        self.me = Some(me);
        if changed {
            if let Some(announcement) = self.announcement() {
                lan::send(&announcement)?;
            }
            self.query_interval_ms = FIRST_QUERY_INTERVAL_MS;
            self.send_query(clock::now_ms()?)?;
            log::debug("announced on the local network");
        }
        Ok(())
    }

    fn discover(&mut self) -> Result<Vec<Finding>, Error> {
        let now = clock::now_ms()?;
        loop {
            let packets = lan::receive(64)?;
            let more = packets.len() == 64;
            for packet in packets {
                self.handle(&packet.payload, now)?;
            }
            if !more {
                break;
            }
        }
        if self.refresh_due(now) {
            lan::send(&dns::query(SERVICE))?;
        } else if now >= self.next_query_ms {
            self.send_query(now)?;
        }
        Ok(self
            .seen
            .values()
            .map(|(peer, _, _)| Finding::Peer(peer.clone()))
            .collect())
    }

    fn lookup(&mut self, user_id: &str) -> Result<Vec<Finding>, Error> {
        Ok(self
            .discover()?
            .into_iter()
            .filter(|f| matches!(f, Finding::Peer(p) if p.user_id.as_deref() == Some(user_id)))
            .collect())
    }
}

volli_plugin_sdk::export_discovery!(Mdns);

#[cfg(test)]
mod tests {
    use super::*;

    fn announcement(peer: &str, ttl: u32) -> Vec<u8> {
        let instance = Mdns::instance(peer);
        let txt = vec![
            "v=1".to_owned(),
            format!("p={peer}"),
            "u=someone".to_owned(),
        ];
        dns::response(&[
            dns::Record::ptr(SERVICE, &instance, ttl),
            dns::Record::txt(&instance, &txt, ttl),
        ])
    }

    fn empty() -> Mdns {
        Mdns {
            me: None,
            seen: BTreeMap::new(),
            next_query_ms: 0,
            query_interval_ms: FIRST_QUERY_INTERVAL_MS,
        }
    }

    #[test]
    fn an_announced_ttl_is_capped() {
        let mut mdns = empty();
        mdns.handle(&announcement("12D3KooWForever", u32::MAX), 1_000)
            .unwrap();
        let (_, expires, _) = mdns.seen["12D3KooWForever"];
        assert_eq!(expires, 1_000 + MAX_TTL_SECS * 1000);
    }

    #[test]
    fn a_peer_is_asked_for_again_once_at_four_fifths_of_its_ttl() {
        let mut mdns = empty();
        mdns.handle(&announcement("12D3KooWShort", 120), 1_000)
            .unwrap();
        assert!(!mdns.refresh_due(96_999));
        assert!(mdns.refresh_due(97_000));
        assert!(!mdns.refresh_due(100_000));
        assert!(mdns.seen.contains_key("12D3KooWShort"));
        assert!(!mdns.refresh_due(121_000));
        assert!(mdns.seen.is_empty());
    }

    #[test]
    fn a_full_list_makes_room_for_newcomers() {
        let mut mdns = empty();
        for i in 0..MAX_PEERS {
            mdns.handle(&announcement(&format!("12D3KooWFlood{i}"), u32::MAX), 1_000)
                .unwrap();
        }
        mdns.handle(&announcement("12D3KooWNeighbour", 120), 2_000)
            .unwrap();
        assert_eq!(mdns.seen.len(), MAX_PEERS);
        assert!(mdns.seen.contains_key("12D3KooWNeighbour"));
    }
}
