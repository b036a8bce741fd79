//! What the network tells the node, on two paths.
//!
//! Connection changes and listen-address changes are *state*: they are kept in a table with
//! one entry per peer (the latest change wins) and can never be dropped, however far behind
//! the node is — a peer that connects and disconnects a thousand times while the node is
//! busy costs one entry. Everything else (requests, identify, ping) goes through a bounded
//! channel; when it is full the event is dropped, which for a request means it is refused.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{Notify, mpsc};

use crate::NetEvent;

/// A peer's latest change, not yet taken by the node.
#[derive(Clone, Debug)]
enum Change {
    Connected {
        addr: Multiaddr,
        relay: Option<PeerId>,
    },
    Path {
        addr: Multiaddr,
        relay: Option<PeerId>,
    },
    Disconnected,
}

#[derive(Default)]
struct Table {
    /// Peers whose connection changed, oldest change first.
    order: VecDeque<PeerId>,
    /// Their latest change.
    latest: HashMap<PeerId, Change>,
    /// The listen addresses, if they changed since the node last looked.
    listen: Option<Vec<Multiaddr>>,
}

/// The event loop's side of the connection table.
#[derive(Clone, Default)]
pub(crate) struct Links {
    table: Arc<Mutex<Table>>,
    notify: Arc<Notify>,
}

impl Links {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `peer` has its first connection, at `addr`, directly or through `relay`.
    pub(crate) fn connected(&self, peer: PeerId, addr: Multiaddr, relay: Option<PeerId>) {
        self.set(peer, Change::Connected { addr, relay });
    }

    /// Connected `peer` is now reached at `addr`, directly (`None`) or through `relay`.
    pub(crate) fn path(&self, peer: PeerId, addr: Multiaddr, relay: Option<PeerId>) {
        self.set(peer, Change::Path { addr, relay });
    }

    /// `peer`'s last connection closed.
    pub(crate) fn disconnected(&self, peer: PeerId) {
        self.set(peer, Change::Disconnected);
    }

    fn set(&self, peer: PeerId, change: Change) {
        let mut table = self.lock();
        let merged = match (table.latest.get(&peer), change) {
            // A connection the node has not heard of yet simply has the newer path.
            (Some(Change::Connected { .. }), Change::Path { addr, relay }) => {
                Change::Connected { addr, relay }
            }
            (_, change) => change,
        };
        if table.latest.insert(peer, merged).is_none() {
            table.order.push_back(peer);
        }
        drop(table);
        self.notify.notify_one();
    }

    /// The listen addresses are now `addrs`.
    pub(crate) fn listening(&self, addrs: Vec<Multiaddr>) {
        self.lock().listen = Some(addrs);
        self.notify.notify_one();
    }

    fn take(&self) -> Option<NetEvent> {
        let mut table = self.lock();
        if let Some(addrs) = table.listen.take() {
            return Some(NetEvent::ListenAddrs(addrs));
        }
        let peer = table.order.pop_front()?;
        Some(match table.latest.remove(&peer)? {
            Change::Connected { addr, relay } => NetEvent::Connected { peer, addr, relay },
            Change::Path { addr, relay } => NetEvent::Path { peer, addr, relay },
            Change::Disconnected => NetEvent::Disconnected { peer },
        })
    }
}

/// The node's side: every event the network has for it.
pub struct NetEvents {
    links: Links,
    rx: mpsc::Receiver<NetEvent>,
}

impl NetEvents {
    pub(crate) fn new(links: Links, rx: mpsc::Receiver<NetEvent>) -> Self {
        Self { links, rx }
    }

    /// The next event: pending connection changes first, then the others. `None` once the
    /// network has stopped.
    pub async fn next(&mut self) -> Option<NetEvent> {
        loop {
            if let Some(event) = self.links.take() {
                return Some(event);
            }
            tokio::select! {
                biased;
                () = self.links.notify.notified() => {}
                event = self.rx.recv() => return event,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn connection_changes_are_never_lost_and_cost_one_entry_per_peer() {
        let links = Links::default();
        let (tx, rx) = mpsc::channel(1);
        let mut events = NetEvents::new(links.clone(), rx);
        let a = PeerId::random();
        let b = PeerId::random();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        // The request channel is full; connection changes still get through.
        tx.try_send(NetEvent::Rtt {
            peer: a,
            rtt: std::time::Duration::from_millis(1),
        })
        .unwrap();
        for _ in 0..1_000 {
            links.connected(a, addr.clone(), Some(b));
            links.path(a, addr.clone(), None);
            links.disconnected(a);
        }
        links.connected(b, addr.clone(), Some(a));
        links.path(b, addr.clone(), None);
        links.listening(vec![addr.clone()]);
        assert!(matches!(
            events.next().await,
            Some(NetEvent::ListenAddrs(_))
        ));
        assert!(matches!(events.next().await, Some(NetEvent::Disconnected { peer }) if peer == a));
        assert!(matches!(
            events.next().await,
            Some(NetEvent::Connected { peer, relay: None, .. }) if peer == b
        ));
        assert!(matches!(events.next().await, Some(NetEvent::Rtt { .. })));
        assert!(links.lock().latest.is_empty());
    }
}
