//! The bulk channel: file data on a plain TCP connection beside the libp2p one.
//!
//! rust-libp2p's multiplexed streams move a fraction of what one TCP connection does on the
//! same link, so chunks travel here while every control message stays on libp2p. A receiver
//! asks the sender, over its (Noise-encrypted, authenticated) libp2p connection, for a
//! ticket — an id and a key, one use, a minute to live — and the addresses of the sender's
//! bulk listener; it connects and answers the listener's random challenge with a keyed hash,
//! so a ticket seen on the wire cannot be replayed. The connection then carries only
//! ciphertext chunks, each checked against its BLAKE3 name from the signed offer before it is
//! stored: nothing on this channel is trusted, it is only fast. Requests are pipelined; the
//! listener reads, seals and hashes the next chunk while the current one is written.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use volli_core::UserId;
use volli_core::transfer::TransferId;
use volli_core::transfer::bulk::{
    self, ANSWER_LEN, CHALLENGE_LEN, HEADER_LEN, Header, MAGIC, REQUEST_LEN, Request, Status,
};

use super::Files;

/// How long a ticket may wait for its connection.
const TICKET_TTL: Duration = Duration::from_secs(60);
/// Tickets outstanding at most.
const MAX_TICKETS: usize = 1024;
/// Bulk connections served at once (each one's ticket checked).
const MAX_CONNECTIONS: usize = 64;
/// Connections still in their handshake at once, in all and from one address: anyone can
/// connect, so these are bounded apart from the connections of ticket holders.
const MAX_HANDSHAKES: usize = 32;
const HANDSHAKES_PER_IP: usize = 4;
/// How long the handshake may take, and how long a connection may sit idle.
const HANDSHAKE: Duration = Duration::from_secs(5);
const IDLE: Duration = Duration::from_secs(120);
/// Chunk requests read ahead of the one being served.
const READ_AHEAD: usize = 16;

/// A ticket handed out over libp2p.
struct Ticket {
    transfer: TransferId,
    user: UserId,
    key: [u8; 32],
    expires: Instant,
}

/// The bulk listener.
pub(crate) struct Listener {
    bound: Vec<SocketAddr>,
    tickets: Mutex<HashMap<[u8; 16], Ticket>>,
    connections: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    handshaking: Mutex<HashMap<IpAddr, usize>>,
}

/// A place among the connections in their handshake, given back when dropped.
struct Handshaking<'a> {
    listener: &'a Listener,
    ip: IpAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Handshaking<'_> {
    fn drop(&mut self) {
        let mut by_ip = self
            .listener
            .handshaking
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

impl Listener {
    /// Binds `addrs` (those that fail are logged and skipped).
    pub(crate) async fn bind(addrs: &[SocketAddr]) -> (Arc<Self>, Vec<TcpListener>) {
        let mut bound = Vec::new();
        let mut listeners = Vec::new();
        for addr in addrs {
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    if let Ok(local) = l.local_addr() {
                        bound.push(local);
                    }
                    listeners.push(l);
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "cannot listen for bulk transfers there")
                }
            }
        }
        if !bound.is_empty() {
            tracing::info!(addrs = ?bound, "bulk transfer listener");
        }
        (
            Arc::new(Self {
                bound,
                tickets: Mutex::new(HashMap::new()),
                connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
                handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
                handshaking: Mutex::new(HashMap::new()),
            }),
            listeners,
        )
    }

    /// Whether anything is listening.
    pub(crate) fn is_listening(&self) -> bool {
        !self.bound.is_empty()
    }

    /// Serves connections on `listeners` for `files`.
    pub(crate) fn spawn(self: &Arc<Self>, listeners: Vec<TcpListener>, files: Files) {
        for listener in listeners {
            let this = Arc::clone(self);
            let files = files.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, from)) = listener.accept().await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let this = Arc::clone(&this);
                    let files = files.clone();
                    tokio::spawn(async move {
                        if let Err(e) = this.serve(stream, from.ip(), files).await {
                            tracing::debug!(%from, error = %e, "bulk connection ended");
                        }
                    });
                }
            });
        }
    }

    /// A ticket for `user` to fetch `transfer`, and where to connect: the bound addresses,
    /// with an unspecified IP replaced by `ips` (this node's current addresses).
    pub(crate) fn issue(
        &self,
        transfer: TransferId,
        user: UserId,
        ips: &[IpAddr],
    ) -> Option<([u8; 16], [u8; 32], Vec<String>)> {
        let mut id = [0u8; 16];
        let mut key = [0u8; 32];
        getrandom::fill(&mut id).ok()?;
        getrandom::fill(&mut key).ok()?;
        let mut tickets = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        tickets.retain(|_, t| t.expires > now);
        if tickets.len() >= MAX_TICKETS {
            return None;
        }
        tickets.insert(
            id,
            Ticket {
                transfer,
                user,
                key,
                expires: now + TICKET_TTL,
            },
        );
        let mut addrs = Vec::new();
        for bound in &self.bound {
            if bound.ip().is_unspecified() {
                for ip in ips.iter().filter(|ip| ip.is_ipv4() == bound.is_ipv4()) {
                    addrs.push(SocketAddr::new(*ip, bound.port()).to_string());
                }
            } else {
                addrs.push(bound.to_string());
            }
        }
        addrs.dedup();
        addrs.truncate(16);
        Some((id, key, addrs))
    }

    /// A place for a connection from `ip` to do its handshake, if there is one.
    fn handshake_slot(&self, ip: IpAddr) -> Option<Handshaking<'_>> {
        let mut by_ip = self.handshaking.lock().unwrap_or_else(|e| e.into_inner());
        let n = by_ip.entry(ip).or_default();
        if *n >= HANDSHAKES_PER_IP {
            return None;
        }
        let permit = Arc::clone(&self.handshakes).try_acquire_owned().ok()?;
        *n += 1;
        Some(Handshaking {
            listener: self,
            ip,
            _permit: permit,
        })
    }

    async fn serve(&self, mut stream: TcpStream, ip: IpAddr, files: Files) -> std::io::Result<()> {
        let Some(handshake) = self.handshake_slot(ip) else {
            return Err(std::io::Error::other(
                "too many connections in their handshake; closed",
            ));
        };
        stream.set_nodelay(true)?;
        let mut challenge = [0u8; CHALLENGE_LEN];
        getrandom::fill(&mut challenge).map_err(std::io::Error::other)?;
        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(&challenge);
        let mut answer = [0u8; ANSWER_LEN];
        tokio::time::timeout(HANDSHAKE, async {
            stream.write_all(&hello).await?;
            stream.read_exact(&mut answer).await
        })
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))??;
        let mut id = [0u8; 16];
        id.copy_from_slice(&answer[..16]);
        let mut proof = [0u8; 32];
        proof.copy_from_slice(&answer[16..]);
        let ticket = self
            .tickets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
            .filter(|t| t.expires > Instant::now());
        let Some(ticket) =
            ticket.filter(|t| bulk::proof_matches(&bulk::proof(&t.key, &challenge), &proof))
        else {
            stream.write_all(&[1]).await?;
            return Err(std::io::Error::other("unknown ticket or wrong proof"));
        };
        drop(handshake);
        // Only a ticket holder takes one of the connections that carry data.
        let Ok(_permit) = Arc::clone(&self.connections).try_acquire_owned() else {
            stream.write_all(&[1]).await?;
            return Err(std::io::Error::other("too many bulk connections"));
        };
        stream.write_all(&[0]).await?;

        let (mut rd, mut wr) = stream.into_split();
        let (requests, mut asked) = mpsc::channel::<u32>(READ_AHEAD);
        // Reads requests ahead, so the next chunk is being made while one is written.
        let reader = tokio::spawn(async move {
            let mut frame = [0u8; REQUEST_LEN];
            loop {
                match tokio::time::timeout(IDLE, rd.read_exact(&mut frame)).await {
                    Ok(Ok(_)) => {}
                    _ => return,
                }
                match Request::decode(&frame) {
                    Ok(Request::Chunk(i)) => {
                        if requests.send(i).await.is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
            }
        });
        let (made, mut ready) = mpsc::channel::<(Header, Vec<u8>)>(2);
        let transfer = ticket.transfer;
        let user = ticket.user;
        // Chunks are made two at a time (read, sealed, checked on blocking threads), in order.
        let maker = tokio::spawn(async move {
            let mut making = futures::stream::poll_fn(|cx| asked.poll_recv(cx))
                .map(|index| {
                    let files = files.clone();
                    async move { (index, files.serve_chunk(transfer, user, index).await) }
                })
                .buffered(2);
            while let Some((index, outcome)) = making.next().await {
                let (status, data) = match outcome {
                    Ok(data) => (Status::Ok, data),
                    Err(status) => (status, Vec::new()),
                };
                let header = Header {
                    index,
                    status,
                    len: u32::try_from(data.len()).unwrap_or(0),
                };
                if made.send((header, data)).await.is_err() {
                    return;
                }
            }
        });
        let mut result = Ok(());
        while let Some((header, data)) = ready.recv().await {
            let write = async {
                wr.write_all(&header.encode()).await?;
                wr.write_all(&data).await
            };
            if let Err(e) = tokio::time::timeout(IDLE, write)
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("write timed out")))
            {
                result = Err(e);
                break;
            }
        }
        reader.abort();
        maker.abort();
        result
    }
}

/// Connects to the first of `addrs` that answers and proves the ticket.
pub(crate) async fn connect(
    addrs: &[String],
    ticket: [u8; 16],
    key: [u8; 32],
    wait: Duration,
) -> std::io::Result<TcpStream> {
    let candidates: Vec<SocketAddr> = addrs.iter().filter_map(|a| a.parse().ok()).collect();
    if candidates.is_empty() {
        return Err(std::io::Error::other("the sender gave no bulk address"));
    }
    let mut tries: futures::stream::FuturesUnordered<_> = candidates
        .into_iter()
        .take(16)
        .map(|addr| async move {
            tokio::time::timeout(wait, TcpStream::connect(addr))
                .await
                .map_err(|_| std::io::Error::other("connect timed out"))?
        })
        .collect();
    let mut last = std::io::Error::other("no bulk address answered");
    while let Some(attempt) = tries.next().await {
        match attempt {
            Ok(stream) => return handshake(stream, ticket, key).await,
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn handshake(
    mut stream: TcpStream,
    ticket: [u8; 16],
    key: [u8; 32],
) -> std::io::Result<TcpStream> {
    stream.set_nodelay(true)?;
    tokio::time::timeout(HANDSHAKE, async {
        let mut hello = [0u8; 8 + CHALLENGE_LEN];
        stream.read_exact(&mut hello).await?;
        if &hello[..8] != MAGIC {
            return Err(std::io::Error::other("not a Volli bulk listener"));
        }
        let mut challenge = [0u8; CHALLENGE_LEN];
        challenge.copy_from_slice(&hello[8..]);
        let mut answer = ticket.to_vec();
        answer.extend_from_slice(&bulk::proof(&key, &challenge));
        stream.write_all(&answer).await?;
        let mut status = [0u8; 1];
        stream.read_exact(&mut status).await?;
        if status[0] != 0 {
            return Err(std::io::Error::other("the sender refused the ticket"));
        }
        Ok(())
    })
    .await
    .map_err(|_| std::io::Error::other("handshake timed out"))??;
    Ok(stream)
}

/// Reads one response header.
pub(crate) async fn read_header(
    rd: &mut (impl tokio::io::AsyncRead + Unpin),
) -> std::io::Result<Header> {
    let mut frame = [0u8; HEADER_LEN];
    rd.read_exact(&mut frame).await?;
    Header::decode(&frame).map_err(|_| std::io::Error::other("malformed chunk header"))
}
