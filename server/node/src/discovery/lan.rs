//! The `lan` capability: one UDP socket on the mDNS multicast group (224.0.0.251:5353),
//! shared by every plugin granted `lan`. Incoming packets are queued per plugin (bounded,
//! oldest dropped) and wake the discovery manager, so answers go out as soon as a query
//! arrives; sends are rate-limited per plugin. The group loops our own packets back to us;
//! those are dropped, or each of our answers would wake the manager again and make it wait
//! out its rate limit just when another node's packet arrives.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use volli_plugin_host::{BoxFuture, Datagram, LanBackend, ServiceError};

const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
const PORT: u16 = 5353;
/// Packets queued per plugin.
const QUEUE: usize = 64;
/// Packets a plugin may send per second (burst of the same size).
const SENDS_PER_SECOND: f64 = 20.0;
/// How long a sent packet is remembered to recognise its echo.
const ECHO_WINDOW: Duration = Duration::from_secs(2);

/// What this node sent lately (hashes of the payloads), to recognise their echoes.
#[derive(Default)]
struct Echoes(Mutex<VecDeque<(Instant, u64)>>);

impl Echoes {
    fn hash(payload: &[u8]) -> u64 {
        let mut h = DefaultHasher::new();
        payload.hash(&mut h);
        h.finish()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, u64)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sent(&self, payload: &[u8]) {
        let now = Instant::now();
        let mut sent = self.lock();
        while sent.front().is_some_and(|(at, _)| now - *at > ECHO_WINDOW) || sent.len() >= 64 {
            sent.pop_front();
        }
        sent.push_back((now, Self::hash(payload)));
    }

    /// Whether a packet from `from` is one of ours coming back. Another node on this host
    /// sends from the same address and port, but never the same bytes as ours (answers name
    /// their sender); an identical query from it within the window goes unanswered, and is
    /// asked again.
    fn is_echo(&self, from: SocketAddr, interfaces: &[Ipv4Addr], payload: &[u8]) -> bool {
        let ours =
            from.port() == PORT && matches!(from.ip(), IpAddr::V4(ip) if interfaces.contains(&ip));
        if !ours {
            return false;
        }
        let hash = Self::hash(payload);
        let now = Instant::now();
        self.lock()
            .iter()
            .any(|(at, h)| *h == hash && now - *at <= ECHO_WINDOW)
    }
}

pub(crate) struct Lan {
    socket: Arc<UdpSocket>,
    interfaces: Vec<Ipv4Addr>,
    echoes: Arc<Echoes>,
    queues: Arc<Mutex<HashMap<String, VecDeque<Datagram>>>>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    send_lock: tokio::sync::Mutex<()>,
}

impl Lan {
    /// Joins the mDNS group on every IPv4 interface with a multicast-capable address and
    /// starts receiving. `wake` is notified on every packet.
    pub(crate) fn start(wake: Arc<Notify>) -> std::io::Result<Arc<Self>> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT)).into())?;
        socket.set_multicast_loop_v4(true)?;
        socket.set_multicast_ttl_v4(255)?;
        socket.set_nonblocking(true)?;
        let interfaces: Vec<Ipv4Addr> = if_addrs::get_if_addrs()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| match i.ip() {
                std::net::IpAddr::V4(ip) if !ip.is_loopback() => Some(ip),
                _ => None,
            })
            .filter(|ip| socket.join_multicast_v4(&GROUP, ip).is_ok())
            .collect();
        if interfaces.is_empty() {
            return Err(std::io::Error::other(
                "no interface could join the mDNS group",
            ));
        }
        let socket = Arc::new(UdpSocket::from_std(socket.into())?);
        let queues: Arc<Mutex<HashMap<String, VecDeque<Datagram>>>> = Arc::default();
        let echoes = Arc::new(Echoes::default());
        tokio::spawn(receive(
            socket.clone(),
            queues.clone(),
            wake,
            echoes.clone(),
            interfaces.clone(),
        ));
        tracing::debug!(?interfaces, "listening on the mDNS group");
        Ok(Arc::new(Self {
            socket,
            interfaces,
            echoes,
            queues,
            buckets: Mutex::new(HashMap::new()),
            send_lock: tokio::sync::Mutex::new(()),
        }))
    }

    fn take_token(&self, plugin: &str) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, at) = buckets
            .entry(plugin.to_owned())
            .or_insert((SENDS_PER_SECOND, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * SENDS_PER_SECOND)
            .min(SENDS_PER_SECOND);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn subscribe(&self, plugin: &str) {
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(plugin.to_owned())
            .or_default();
    }
}

async fn receive(
    socket: Arc<UdpSocket>,
    queues: Arc<Mutex<HashMap<String, VecDeque<Datagram>>>>,
    wake: Arc<Notify>,
    echoes: Arc<Echoes>,
    interfaces: Vec<Ipv4Addr>,
) {
    let mut buf = vec![0u8; 9000];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((len, from)) => {
                if echoes.is_echo(from, &interfaces, &buf[..len]) {
                    continue;
                }
                {
                    let mut queues = queues.lock().unwrap_or_else(|e| e.into_inner());
                    for queue in queues.values_mut() {
                        if queue.len() == QUEUE {
                            queue.pop_front();
                        }
                        queue.push_back(Datagram {
                            source: from.to_string(),
                            payload: buf[..len].to_vec(),
                        });
                    }
                }
                wake.notify_one();
            }
            Err(e) => {
                tracing::warn!(error = %e, "mDNS socket receive failed");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
}

impl LanBackend for Lan {
    fn send<'a>(
        &'a self,
        plugin: &'a str,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            self.subscribe(plugin);
            if !self.take_token(plugin) {
                return Err(ServiceError::LimitExceeded(format!(
                    "at most {SENDS_PER_SECOND} packets per second"
                )));
            }
            let _guard = self.send_lock.lock().await;
            self.echoes.sent(&payload);
            let target = SocketAddr::from(SocketAddrV4::new(GROUP, PORT));
            let mut sent = false;
            for iface in &self.interfaces {
                if SockRef::from(&*self.socket)
                    .set_multicast_if_v4(iface)
                    .is_ok()
                    && self.socket.send_to(&payload, target).await.is_ok()
                {
                    sent = true;
                }
            }
            if sent {
                Ok(())
            } else {
                Err(ServiceError::Unavailable(
                    "no interface could send to the mDNS group".into(),
                ))
            }
        })
    }

    fn receive<'a>(
        &'a self,
        plugin: &'a str,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<Datagram>, ServiceError>> {
        Box::pin(async move {
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            let queue = queues.entry(plugin.to_owned()).or_default();
            let n = queue.len().min(max);
            Ok(queue.drain(..n).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_packets_coming_back_are_echoes() {
        let echoes = Echoes::default();
        let me = Ipv4Addr::new(10, 0, 0, 2);
        let ours = SocketAddr::from((me, PORT));
        echoes.sent(b"our answer");
        assert!(echoes.is_echo(ours, &[me], b"our answer"));
        // The same bytes from another host, or from another port, are not ours.
        let other = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 3), PORT));
        assert!(!echoes.is_echo(other, &[me], b"our answer"));
        assert!(!echoes.is_echo(SocketAddr::from((me, 40000)), &[me], b"our answer"));
        // Another node on this host sends from our address, but not our bytes.
        assert!(!echoes.is_echo(ours, &[me], b"its answer"));
    }
}
