//! The receiving side of a transfer: fetch the chunk list, then the missing chunks, check
//! each against its name, store it, record it as durable in batches; at the end, check the
//! whole file's hash.
//!
//! One task per running download. It waits while the transfer is paused, retries with
//! backoff while the sender cannot be reached, and ends when the transfer does. After a
//! restart the chunks recorded as stored are checked to still be in the backend (by size,
//! never by reading them), so a backend that forgets (`memory`) costs a refetch, not a
//! corrupt file.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Notify, Semaphore, mpsc};
use volli_core::transfer::bulk::{Request, Status};
use volli_core::transfer::{ChunkList, FileKey, Layout, TransferId};
use volli_core::wire::{self, FileRefusal, FileRequest, FileResponse};
use volli_core::{PeerId, UserId};
use volli_store::TransferRow;

use super::{ChunkIds, Files, backoff, bulk, finished};

/// Chunk requests in flight on one download.
const DEPTH: usize = 8;
/// Chunks recorded together, at most; and how long a stored chunk may wait to be recorded.
const BATCH: usize = 32;
const BATCH_EVERY: Duration = Duration::from_millis(500);
/// How long a chunk may take to arrive once asked for.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(60);
/// Chunks checked at once (on blocking threads) while an earlier one is stored.
const CHECKING: usize = 2;
/// Chunks that do not match their name before the transfer is given up.
const MAX_CORRUPT: u32 = 16;
/// Chunk requests lost with their connection, while the peer stayed connected, asked again
/// within one round at most.
const MAX_LOST_REQUESTS: u32 = 8;
/// Rounds in a row from a friend holding a file that end to be tried again (it does not
/// answer, or says it is busy) before another source is asked.
const HOLDER_RETRIES: u32 = 4;

/// A running download, as the rest of the service sees it.
pub(crate) struct Handle {
    /// The sender's user.
    pub(crate) peer: UserId,
    /// Woken on resume, on a state change and when the sender's device connects.
    pub(crate) wake: Notify,
    /// Bumped to stop the current round (pause, cancel).
    epoch: AtomicU64,
    /// The chunks recorded before this process started were checked against the backend.
    checked: AtomicBool,
    /// Bytes stored so far (recorded or about to be).
    pub(crate) bytes_done: AtomicU64,
    corrupt: std::sync::atomic::AtomicU32,
    /// Rounds in a row from a friend holding the file that ended to be tried again.
    holder_retries: std::sync::atomic::AtomicU32,
}

impl Handle {
    pub(crate) fn interrupt(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// How a round ended.
enum Round {
    /// Every chunk is stored.
    Complete,
    /// Paused or cancelled here.
    Interrupted,
}

/// Why a round failed.
enum Why {
    /// The sender no longer has the file.
    Gone,
    /// The sender cancelled.
    Cancelled,
    /// The sender paused.
    Paused,
    /// Worth another try later.
    Retry(String),
    /// A chunk did not match its name: fetch it again at once.
    Corrupt,
    /// Give up.
    Fatal(String),
}

impl Files {
    /// Starts (or wakes) the download of an incoming transfer from `peer`.
    pub(crate) fn start_download(&self, id: TransferId, peer: UserId) {
        let mut downloads = self.lock_downloads();
        if let Some(h) = downloads.get(&id) {
            h.wake.notify_one();
            return;
        }
        let handle = Arc::new(Handle {
            peer,
            wake: Notify::new(),
            epoch: AtomicU64::new(0),
            checked: AtomicBool::new(false),
            bytes_done: AtomicU64::new(0),
            corrupt: std::sync::atomic::AtomicU32::new(0),
            holder_retries: std::sync::atomic::AtomicU32::new(0),
        });
        downloads.insert(id, Arc::clone(&handle));
        drop(downloads);
        let this = self.clone();
        tokio::spawn(async move {
            this.run_download(id, &handle).await;
            this.lock_downloads().remove(&id);
        });
    }

    async fn run_download(&self, id: TransferId, h: &Handle) {
        let mut failures = 0u32;
        loop {
            let epoch = h.epoch.load(Ordering::SeqCst);
            let t = match self.inner.db.transfer(id.as_bytes()).await {
                Ok(Some(t)) => t,
                _ => return,
            };
            if finished(&t.state) {
                return;
            }
            if t.state != "running" || t.paused_here || t.paused_there {
                let _ = tokio::time::timeout(Duration::from_secs(60), h.wake.notified()).await;
                continue;
            }
            let round = match self.round(&t, h, epoch).await {
                // The member that carries a group's mail here may not have taken in the
                // offer yet (its own copy travels apart): asked again until the offer
                // expires, then `expire` fails it.
                Err(Why::Gone) if from_carrier(&t) => Err(Why::Retry(
                    "the member that carries the group's mail here does not have the file (yet)"
                        .into(),
                )),
                other => other,
            };
            match round {
                Ok(Round::Complete) => {
                    self.complete(id).await;
                    return;
                }
                Ok(Round::Interrupted) => failures = 0,
                Err(Why::Gone) => {
                    self.fail(id, "the sender no longer has the file").await;
                    return;
                }
                Err(Why::Cancelled) => {
                    self.cancelled_there(id).await;
                    return;
                }
                Err(Why::Fatal(reason)) => {
                    self.fail(id, &reason).await;
                    return;
                }
                Err(Why::Paused) => {
                    let _guard = self.inner.changes.lock().await;
                    if let Ok(Some(mut t)) = self.inner.db.transfer(id.as_bytes()).await
                        && !t.paused_there
                        && !finished(&t.state)
                    {
                        t.paused_there = true;
                        let _ = self.inner.db.save_transfer(&t).await;
                        self.changed(&t);
                    }
                }
                Err(Why::Corrupt) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(Why::Retry(reason)) => {
                    failures += 1;
                    let wait = backoff(Duration::from_secs(1), Duration::from_secs(60), failures);
                    tracing::debug!(transfer = %id, %reason, ?wait, "download interrupted; retrying");
                    let _ = tokio::time::timeout(wait, h.wake.notified()).await;
                }
            }
        }
    }

    /// Where to fetch from: the sender's device that made the offer when it is connected,
    /// else the friends holding the file for this user (files through friends) that are
    /// connected, then the sender's device, then the other holders.
    async fn senders(&self, t: &TransferRow) -> Vec<(PeerId, Vec<multiaddr::Multiaddr>)> {
        let device = t.device.as_deref().and_then(|d| d.parse::<PeerId>().ok());
        let entry = device.and_then(|d| self.inner.peers.get(&d));
        let connected = entry.as_ref().is_some_and(|e| e.connected);
        let device = device.map(|d| (d, entry.map(|e| e.addrs).unwrap_or_default()));
        let holders = self.holder_sources(t).await;
        let mut out = Vec::new();
        if connected {
            out.extend(device.clone());
        }
        out.extend(
            holders
                .iter()
                .filter(|(_, _, c, _)| *c)
                .map(|(p, a, _, _)| (*p, a.clone())),
        );
        if !connected {
            out.extend(device);
        }
        out.extend(
            holders
                .into_iter()
                .filter(|(_, _, c, _)| !*c)
                .map(|(p, a, _, _)| (p, a)),
        );
        out
    }

    async fn round(&self, t: &TransferRow, h: &Handle, epoch: u64) -> Result<Round, Why> {
        let id = TransferId::from_bytes(t.id);
        let layout = Layout::new(t.size, t.chunk_size).map_err(|e| Why::Fatal(e.to_string()))?;
        let (from_carrier, sources) = self.sources(t, None).await;
        let Some((peer, addrs)) = sources.into_iter().next() else {
            return Err(if from_carrier {
                Why::Retry("no member that has the file is reachable".into())
            } else {
                Why::Fatal("the sender's device is unknown".into())
            });
        };
        // A friend holding the file for this user speaks for nobody: whatever it refuses or
        // sends wrong ends its part, not the transfer (only the sender's device can); so
        // does failing round after round.
        let holder = if from_carrier || t.device.as_deref() == Some(peer.to_string().as_str()) {
            None
        } else {
            self.holder_sources(t)
                .await
                .into_iter()
                .find(|s| s.0 == peer)
                .map(|s| s.3)
        };
        let outcome = self.round_from(t, h, epoch, layout, peer, addrs).await;
        let Some(holder) = holder else {
            return outcome;
        };
        let retries = match &outcome {
            Ok(_) => 0,
            Err(Why::Retry(_)) => h.holder_retries.fetch_add(1, Ordering::SeqCst) + 1,
            Err(_) => HOLDER_RETRIES,
        };
        if retries < HOLDER_RETRIES {
            if retries == 0 {
                h.holder_retries.store(0, Ordering::SeqCst);
            }
            return outcome;
        }
        tracing::info!(transfer = %id, %holder, "a friend holding the file could not give it; asking elsewhere");
        self.drop_holder(id, holder).await;
        h.corrupt.store(0, Ordering::SeqCst);
        h.holder_retries.store(0, Ordering::SeqCst);
        Err(Why::Retry(
            "a friend holding the file could not give it".into(),
        ))
    }

    /// A round fetching from `peer`.
    async fn round_from(
        &self,
        t: &TransferRow,
        h: &Handle,
        epoch: u64,
        layout: Layout,
        peer: PeerId,
        addrs: Vec<multiaddr::Multiaddr>,
    ) -> Result<Round, Why> {
        let id = TransferId::from_bytes(t.id);
        let list = self.list_for(t, &layout, peer, addrs.clone()).await?;
        let backend = self.backend().map_err(|e| Why::Retry(e.to_string()))?;
        let mut done = vec![false; layout.chunks() as usize];
        let recorded = self
            .inner
            .db
            .transfer_chunks(&t.id)
            .await
            .map_err(|e| Why::Retry(e.to_string()))?;
        if !h.checked.load(Ordering::SeqCst) {
            let mut lost = Vec::new();
            for (index, _) in &recorded {
                let Some(name) = list.get(*index) else {
                    continue;
                };
                match backend.stat(&ChunkIds::of(t).id(name)).await {
                    Ok(Some(len)) if len == layout.cipher_len(*index) as u64 => {}
                    Ok(_) => lost.push(*index),
                    Err(e) => return Err(Why::Retry(e.to_string())),
                }
            }
            if !lost.is_empty() {
                tracing::info!(transfer = %id, chunks = lost.len(), "chunks recorded as stored are gone from the backend; fetching them again");
                self.inner
                    .db
                    .forget_transfer_chunks(&t.id, &lost)
                    .await
                    .map_err(|e| Why::Retry(e.to_string()))?;
            }
            h.checked.store(true, Ordering::SeqCst);
            for (index, _) in recorded.iter().filter(|(i, _)| !lost.contains(i)) {
                if let Some(d) = done.get_mut(*index as usize) {
                    *d = true;
                }
            }
        } else {
            for (index, _) in &recorded {
                if let Some(d) = done.get_mut(*index as usize) {
                    *d = true;
                }
            }
        }
        let done_bytes: u64 = (0..layout.chunks())
            .filter(|i| done[*i as usize])
            .map(|i| layout.plain_range(i).1 as u64)
            .sum();
        h.bytes_done.store(done_bytes, Ordering::SeqCst);
        let missing: Vec<u32> = (0..layout.chunks())
            .filter(|i| !done[*i as usize])
            .collect();
        if missing.is_empty() {
            return Ok(Round::Complete);
        }

        let store = Storer {
            files: self.clone(),
            id,
            layout,
            key: FileKey::from_bytes(t.file_key),
            list: Arc::new(list),
            chunk_ids: ChunkIds::of(t),
            backend,
            window: Arc::new(Semaphore::new(DEPTH)),
        };
        let (chunks, arrived) = mpsc::channel::<(u32, Vec<u8>)>(DEPTH);
        let storing = tokio::spawn(store.clone().run(arrived, done_bytes));
        let interrupted = async {
            loop {
                if h.epoch.load(Ordering::SeqCst) != epoch {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        // Held files come from their holder chunk by chunk (no bulk channel there).
        let from_device = t.device.as_deref() == Some(peer.to_string().as_str());
        let fetch = async {
            if self.inner.config.bulk && from_device {
                match self.open_channel(id, peer, addrs.clone()).await {
                    Ok(stream) => {
                        tracing::debug!(transfer = %id, "fetching on the bulk channel");
                        return fetch_bulk(stream, &missing, &layout, &store, chunks).await;
                    }
                    Err(Why::Corrupt) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(Why::Retry(reason)) => {
                        tracing::debug!(transfer = %id, %reason, "no bulk channel; fetching over libp2p");
                    }
                    Err(other) => return Err(other),
                }
            }
            self.fetch_p2p(id, peer, addrs, &missing, &store, chunks)
                .await
        };
        let outcome = tokio::select! {
            r = fetch => r.map(|()| Round::Complete),
            () = interrupted => Ok(Round::Interrupted),
        };
        // The storer finishes what arrived and records it.
        let stored = storing
            .await
            .unwrap_or(Err(Why::Retry("the storer stopped".into())));
        match (outcome, stored) {
            (Ok(Round::Interrupted), _) => Ok(Round::Interrupted),
            (_, Err(why)) => Err(why),
            (Err(why), _) => Err(why),
            (Ok(Round::Complete), Ok(())) => {
                // Everything asked for is stored; the next round finds nothing missing.
                Ok(Round::Interrupted)
            }
        }
    }

    /// Where to fetch incoming transfer `t` from, and whether that is the member who
    /// carries the group's mail here: a group's file whose sender is not a contact comes
    /// from that member (never from `not`, who asks this node for it).
    pub(super) async fn sources(
        &self,
        t: &TransferRow,
        not: Option<UserId>,
    ) -> (bool, Vec<(PeerId, Vec<multiaddr::Multiaddr>)>) {
        if from_carrier(t) {
            (true, self.group_sources(t, not).await)
        } else {
            (false, self.senders(t).await)
        }
    }

    /// The chunk list of incoming transfer `t`, for passing the file on: from the row, or
    /// asked of `peer`, checked against the offer and kept.
    pub(super) async fn list_from(
        &self,
        t: &TransferRow,
        peer: PeerId,
        addrs: Vec<multiaddr::Multiaddr>,
    ) -> Result<ChunkList, Status> {
        let layout = Layout::new(t.size, t.chunk_size).map_err(|_| Status::Gone)?;
        self.list_for(t, &layout, peer, addrs)
            .await
            .map_err(|why| match why {
                Why::Gone | Why::Fatal(_) => Status::Gone,
                Why::Cancelled => Status::Cancelled,
                Why::Paused => Status::Paused,
                Why::Retry(_) | Why::Corrupt => Status::Busy,
            })
    }

    /// The chunk list: from the row, or asked of the sender and checked against the offer.
    async fn list_for(
        &self,
        t: &TransferRow,
        layout: &Layout,
        peer: PeerId,
        addrs: Vec<multiaddr::Multiaddr>,
    ) -> Result<ChunkList, Why> {
        if let Some(bytes) = &t.list {
            return ChunkList::from_bytes(layout, bytes).map_err(|e| Why::Fatal(e.to_string()));
        }
        let id = TransferId::from_bytes(t.id);
        let payload = wire::encode(&FileRequest::List(id));
        let list = match self.ask(peer, payload, addrs).await {
            Some(FileResponse::List(bytes)) => {
                let list = ChunkList::from_bytes(layout, &bytes).map_err(|_| {
                    Why::Fatal("the sender's chunk list does not fit the offer".into())
                })?;
                if list.hash() != t.list_hash {
                    return Err(Why::Fatal(
                        "the sender's chunk list does not match the offer".into(),
                    ));
                }
                list
            }
            Some(other) => return Err(why_refused(other)),
            None => return Err(Why::Retry("the sender is not reachable".into())),
        };
        let _guard = self.inner.changes.lock().await;
        if let Ok(Some(mut row)) = self.inner.db.transfer(&t.id).await {
            row.list = Some(list.to_bytes());
            self.inner
                .db
                .save_transfer(&row)
                .await
                .map_err(|e| Why::Retry(e.to_string()))?;
        }
        Ok(list)
    }

    async fn open_channel(
        &self,
        id: TransferId,
        peer: PeerId,
        addrs: Vec<multiaddr::Multiaddr>,
    ) -> Result<tokio::net::TcpStream, Why> {
        match self
            .ask(peer, wire::encode(&FileRequest::Channel(id)), addrs)
            .await
        {
            Some(FileResponse::Channel { ticket, key, addrs }) => {
                // Only where this node already reaches the sender directly: its bulk
                // listener behind a NAT (an address on the far side of a hole punch or a
                // port mapping, or a relayed path) would swallow the connection attempt
                // until it timed out.
                let on_path = self.bulk_addrs_on_path(peer, addrs);
                if on_path.is_empty() {
                    return Err(Why::Retry("the bulk channel is not on the path".into()));
                }
                // A firewall may drop the connection attempt without a word (a hole-punched
                // IPv6 path): wait a few round trips, not seconds.
                let rtt = self
                    .inner
                    .peers
                    .get(&peer)
                    .and_then(|e| e.rtt)
                    .unwrap_or(Duration::from_millis(100));
                let wait = (rtt * 4 + Duration::from_millis(200))
                    .clamp(Duration::from_millis(250), Duration::from_secs(3));
                bulk::connect(&on_path, ticket, key, wait)
                    .await
                    .map_err(|e| Why::Retry(format!("bulk channel: {e}")))
            }
            Some(FileResponse::Refused(FileRefusal::Invalid(reason))) => Err(Why::Retry(reason)),
            Some(other) => Err(why_refused(other)),
            None => Err(Why::Retry("the sender is not reachable".into())),
        }
    }

    /// The sender's bulk addresses (`ip:port`) at the IP address this node's direct
    /// connection to it goes to.
    fn bulk_addrs_on_path(&self, peer: PeerId, addrs: Vec<String>) -> Vec<String> {
        let Some(entry) = self.inner.peers.get(&peer) else {
            return Vec::new();
        };
        let Some(crate::peers::Path::Direct) = entry.path else {
            return Vec::new();
        };
        let Some(ip) = entry.remote.as_ref().and_then(ip_of) else {
            return Vec::new();
        };
        addrs
            .into_iter()
            .filter(|a| {
                a.parse::<std::net::SocketAddr>()
                    .is_ok_and(|a| a.ip() == ip)
            })
            .collect()
    }

    /// Fetches `missing` as `/volli/file/1` requests, [`DEPTH`] at a time.
    async fn fetch_p2p(
        &self,
        id: TransferId,
        peer: PeerId,
        addrs: Vec<multiaddr::Multiaddr>,
        missing: &[u32],
        store: &Storer,
        chunks: mpsc::Sender<(u32, Vec<u8>)>,
    ) -> Result<(), Why> {
        let mut pending = missing.iter().copied();
        // Chunks whose request was lost with its connection while the peer stayed connected
        // (a relayed connection closed beside another, a fresh circuit given up): asked
        // again at once, not in a new round that would drop every other one in flight.
        let mut again = std::collections::VecDeque::new();
        let mut lost = 0u32;
        let mut calls = futures::stream::FuturesUnordered::new();
        // Through a friend's relay the sender paces chunks to the relay's rate: ask for no
        // more at once than arrive in a few seconds, so none waits past its timeout.
        let depth = match self.inner.peers.get(&peer).and_then(|e| e.path) {
            Some(crate::peers::Path::Relayed { via }) => {
                let rate = self.inner.connectivity.relay_rate(via);
                let chunk = u64::from(store.layout.chunk_size()).max(1);
                usize::try_from(rate.saturating_mul(4) / chunk)
                    .unwrap_or(DEPTH)
                    .clamp(1, DEPTH)
            }
            _ => DEPTH,
        };
        let ask = |index: u32| {
            let payload = wire::encode(&FileRequest::Chunk { id, index });
            let addrs = addrs.clone();
            async move { (index, self.ask(peer, payload, addrs).await) }
        };
        loop {
            while calls.len() < depth {
                let Some(index) = again.pop_front().or_else(|| pending.next()) else {
                    break;
                };
                let permit = Arc::clone(&store.window)
                    .acquire_owned()
                    .await
                    .map_err(|_| Why::Retry("closed".into()))?;
                permit.forget();
                calls.push(ask(index));
            }
            let Some((index, answer)) = calls.next().await else {
                return Ok(());
            };
            match answer {
                Some(FileResponse::Chunk(bytes)) => {
                    if matches!(
                        self.inner.peers.get(&peer).and_then(|e| e.path),
                        Some(crate::peers::Path::Relayed { .. })
                    ) {
                        crate::metrics::metrics().relayed(bytes.len());
                    }
                    if bytes.len() != store.layout.cipher_len(index) {
                        store.window.add_permits(1);
                        return Err(store.corrupt(index, "a chunk of the wrong size"));
                    }
                    if chunks.send((index, bytes)).await.is_err() {
                        return Err(Why::Retry("the storer stopped".into()));
                    }
                }
                Some(other) => {
                    store.window.add_permits(1);
                    return Err(why_refused(other));
                }
                None => {
                    store.window.add_permits(1);
                    let connected = self.inner.peers.get(&peer).is_some_and(|e| e.connected);
                    if connected && lost < MAX_LOST_REQUESTS {
                        lost += 1;
                        again.push_back(index);
                        continue;
                    }
                    return Err(Why::Retry("the sender is not reachable".into()));
                }
            }
        }
    }

    /// The sender cancelled (learnt from a refusal before its message arrived).
    async fn cancelled_there(&self, id: TransferId) {
        let guard = self.inner.changes.lock().await;
        let Ok(Some(mut t)) = self.inner.db.transfer(id.as_bytes()).await else {
            return;
        };
        if finished(&t.state) {
            return;
        }
        t.state = "cancelled".into();
        t.error = Some("cancelled by the other side".into());
        t.updated_at = volli_core::Timestamp::now();
        if self.inner.db.save_transfer(&t).await.is_ok() {
            drop(guard);
            self.changed(&t);
            self.clean_up(&t);
        }
    }

    /// Every chunk is stored: checks the whole file's hash and completes the transfer.
    async fn complete(&self, id: TransferId) {
        let Ok(Some(t)) = self.inner.db.transfer(id.as_bytes()).await else {
            return;
        };
        let Ok(layout) = Layout::new(t.size, t.chunk_size) else {
            return;
        };
        let cvs: Vec<[u8; 32]> = match self.inner.db.transfer_chunks(&t.id).await {
            Ok(rows) => rows.into_iter().map(|(_, cv)| cv).collect(),
            Err(_) => return,
        };
        match layout.root_hash(&cvs) {
            Ok(root) if root == t.blake3 => {}
            _ => {
                self.fail(
                    id,
                    "the received file's BLAKE3 hash does not match the offer",
                )
                .await;
                return;
            }
        }
        let _guard = self.inner.changes.lock().await;
        let Ok(Some(mut t)) = self.inner.db.transfer(id.as_bytes()).await else {
            return;
        };
        if finished(&t.state) {
            return;
        }
        t.state = "completed".into();
        t.bytes_done = t.size;
        t.updated_at = volli_core::Timestamp::now();
        self.tell(&mut t, "done");
        if self.inner.db.save_transfer(&t).await.is_ok() {
            self.notify_soon(id);
            self.progress(id, t.size, t.size);
            self.changed(&t);
            tracing::info!(transfer = %id, size = t.size, "file received");
        }
    }
}

/// Whether incoming transfer `t` comes from the member that carries its group's mail here:
/// a group's file whose sender is not a contact (no sender's device to fetch from).
fn from_carrier(t: &TransferRow) -> bool {
    t.group.is_some() && t.device.is_none()
}

fn why_refused(response: FileResponse) -> Why {
    match response {
        FileResponse::Refused(FileRefusal::Paused) => Why::Paused,
        FileResponse::Refused(FileRefusal::Gone | FileRefusal::Unknown) => Why::Gone,
        FileResponse::Refused(FileRefusal::Cancelled) => Why::Cancelled,
        FileResponse::Refused(FileRefusal::Busy) => Why::Retry("the sender is busy".into()),
        FileResponse::Refused(FileRefusal::Invalid(r)) => Why::Retry(r),
        _ => Why::Retry("unexpected answer".into()),
    }
}

/// Fetches `missing` on a bulk connection: requests pipelined up to the storer's window,
/// answers read in order.
async fn fetch_bulk(
    stream: tokio::net::TcpStream,
    missing: &[u32],
    layout: &Layout,
    store: &Storer,
    chunks: mpsc::Sender<(u32, Vec<u8>)>,
) -> Result<(), Why> {
    let (mut rd, mut wr) = stream.into_split();
    let asked: Arc<Mutex<VecDeque<u32>>> = Arc::new(Mutex::new(VecDeque::new()));
    let _writer = AbortOnDrop({
        let asked = Arc::clone(&asked);
        let window = Arc::clone(&store.window);
        let missing = missing.to_vec();
        tokio::spawn(async move {
            for index in missing {
                let Ok(permit) = Arc::clone(&window).acquire_owned().await else {
                    return;
                };
                permit.forget();
                asked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(index);
                if wr.write_all(&Request::Chunk(index).encode()).await.is_err() {
                    return;
                }
            }
            let _ = wr.write_all(&Request::Close.encode()).await;
            // Keep the write half open until the reader is done.
            std::future::pending::<()>().await;
        })
    });

    async {
        for _ in 0..missing.len() {
            let header = tokio::time::timeout(CHUNK_TIMEOUT, bulk::read_header(&mut rd))
                .await
                .map_err(|_| Why::Retry("the sender stopped sending".into()))?
                .map_err(|e| Why::Retry(e.to_string()))?;
            let expected = asked.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
            if expected != Some(header.index) {
                return Err(store.corrupt(header.index, "a chunk nobody asked for"));
            }
            match header.status {
                Status::Ok => {}
                Status::Paused => return Err(Why::Paused),
                Status::Gone => return Err(Why::Gone),
                Status::Cancelled => return Err(Why::Cancelled),
                Status::Busy => return Err(Why::Retry("the sender is busy".into())),
            }
            if header.len as usize != layout.cipher_len(header.index) {
                return Err(store.corrupt(header.index, "a chunk of the wrong size"));
            }
            let mut data = vec![0u8; header.len as usize];
            tokio::time::timeout(CHUNK_TIMEOUT, rd.read_exact(&mut data))
                .await
                .map_err(|_| Why::Retry("the sender stopped sending".into()))?
                .map_err(|e| Why::Retry(e.to_string()))?;
            if chunks.send((header.index, data)).await.is_err() {
                return Err(Why::Retry("the storer stopped".into()));
            }
        }
        Ok(())
    }
    .await
}

/// A task that ends with the scope that started it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Checks, decrypts, hashes and stores arriving chunks, and records them in batches.
#[derive(Clone)]
struct Storer {
    files: Files,
    id: TransferId,
    layout: Layout,
    key: FileKey,
    list: Arc<ChunkList>,
    chunk_ids: ChunkIds,
    backend: volli_plugin_host::FileBackendPlugin,
    /// Chunks asked for and not yet stored.
    window: Arc<Semaphore>,
}

impl Storer {
    async fn run(
        self,
        mut arrived: mpsc::Receiver<(u32, Vec<u8>)>,
        mut bytes_done: u64,
    ) -> Result<(), Why> {
        let mut batch: Vec<(u32, [u8; 32])> = Vec::new();
        let mut since = Instant::now();
        let mut result = Ok(());
        let size = self.layout.size();
        // Checking (hash, decrypt, hash) runs on blocking threads, [`CHECKING`] chunks at a
        // time and in order, while the chunk before them is being stored.
        let checker = self.clone();
        let mut checked = futures::stream::poll_fn(|cx| arrived.poll_recv(cx))
            .map(|(index, data)| {
                let checker = checker.clone();
                async move { (index, checker.check(index, data).await) }
            })
            .buffered(CHECKING);
        while let Some((index, checked)) = checked.next().await {
            let outcome = match checked {
                Ok((name, data, cv)) => self.put(&name, data).await.map(|()| cv),
                Err(why) => Err(why),
            };
            self.window.add_permits(1);
            match outcome {
                Ok(cv) => {
                    batch.push((index, cv));
                    bytes_done += self.layout.plain_range(index).1 as u64;
                    if let Some(h) = self.files.lock_downloads().get(&self.id) {
                        h.bytes_done.store(bytes_done, Ordering::SeqCst);
                    }
                    if bytes_done < size {
                        self.files.progress(self.id, bytes_done, size);
                    }
                }
                Err(why) => {
                    result = Err(why);
                    break;
                }
            }
            if batch.len() >= BATCH || since.elapsed() >= BATCH_EVERY {
                self.record(&batch, bytes_done).await?;
                batch.clear();
                since = Instant::now();
            }
        }
        if !batch.is_empty() {
            self.record(&batch, bytes_done).await?;
        }
        result
    }

    /// Makes a batch of stored chunks durable, then records them: what is recorded is on
    /// disk, so a resume after a crash never trusts a chunk that was lost.
    async fn record(&self, batch: &[(u32, [u8; 32])], bytes_done: u64) -> Result<(), Why> {
        let names = batch
            .iter()
            .filter_map(|(index, _)| self.list.get(*index).map(|name| self.chunk_ids.id(name)))
            .collect();
        self.backend
            .sync(names)
            .await
            .map_err(|e| Why::Retry(format!("the file backend: {e}")))?;
        self.files
            .inner
            .db
            .add_transfer_chunks(self.id.as_bytes(), batch, bytes_done)
            .await
            .map_err(|e| Why::Retry(e.to_string()))
    }

    /// One chunk: its name checked, opened (which checks every segment) and its part of the
    /// file hash computed. Returns its name, the chunk and that part of the hash.
    async fn check(&self, index: u32, data: Vec<u8>) -> Result<([u8; 32], Vec<u8>, [u8; 32]), Why> {
        let Some(name) = self.list.get(index).copied() else {
            return Err(self.corrupt(index, "a chunk nobody asked for"));
        };
        if data.len() != self.layout.cipher_len(index) {
            return Err(self.corrupt(index, "a chunk of the wrong size"));
        }
        let layout = self.layout;
        let key = self.key.clone();
        let (data, checked) = tokio::task::spawn_blocking(move || {
            if *blake3::hash(&data).as_bytes() != name {
                return (data, None);
            }
            let checked = layout
                .open_chunk(&key, index, &data)
                .ok()
                .map(|plain| layout.chunk_cv(index, &plain));
            (data, checked)
        })
        .await
        .map_err(|_| Why::Retry("hashing failed".into()))?;
        match checked {
            Some(cv) => Ok((name, data, cv)),
            None => Err(self.corrupt(index, "a chunk that did not match its name")),
        }
    }

    /// Counts a chunk that had to be refused; too many of them end the transfer.
    fn corrupt(&self, index: u32, what: &str) -> Why {
        let n = {
            let downloads = self.files.lock_downloads();
            downloads
                .get(&self.id)
                .map_or(0, |h| h.corrupt.fetch_add(1, Ordering::SeqCst) + 1)
        };
        tracing::warn!(transfer = %self.id, index, "{what}; refused");
        if n >= MAX_CORRUPT {
            Why::Fatal("the sender keeps sending chunks that do not match its offer".into())
        } else {
            Why::Corrupt
        }
    }

    /// Stores a checked chunk; durable once [`Storer::record`] has synced it.
    async fn put(&self, name: &[u8; 32], data: Vec<u8>) -> Result<(), Why> {
        self.backend
            .put(&self.chunk_ids.id(name), data)
            .await
            .map_err(|e| Why::Retry(format!("the file backend: {e}")))
    }
}

/// The IP address a multiaddr starts with.
fn ip_of(addr: &multiaddr::Multiaddr) -> Option<std::net::IpAddr> {
    match addr.iter().next()? {
        multiaddr::Protocol::Ip4(ip) => Some(ip.into()),
        multiaddr::Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    }
}
