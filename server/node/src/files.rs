//! File transfers between contacts, and between the user's own devices ([ADR 0010]).
//!
//! **Sending** (`send_path`, `send_upload`): the file is read once to encrypt it with a new
//! key, name its chunks and hash it (`prepare`); a file sent by path stays where it is and
//! is read again as chunks are asked for, an upload's chunks are stored in the file backend.
//! The offer is sealed to the recipient and sent to each of its devices, again until one
//! takes it. **Receiving**: an offer becomes an `offered` transfer (accepted automatically
//! up to the size the user set); accepting it starts a download (`download`): the chunk list,
//! then the chunks — on the bulk channel (`bulk`) when the sender's listener can be reached,
//! over libp2p otherwise — each checked against its name before it is stored, and recorded
//! as durable in batches. At the end the whole file's BLAKE3 hash is put together from every
//! chunk's part and compared with the offer; the file is then read back through
//! `GET /v1/transfers/{id}/content` (`content`).
//!
//! Either side may pause, resume or cancel; the other side hears of it over `/volli/file/1`
//! (again until it does). Everything a transfer needs to go on is in SQLite, so it resumes
//! after a restart of either side. A sender keeps a file `[files] keep_secs`; a transfer
//! not finished by then fails, with that reason, on both sides.
//!
//! [ADR 0010]: ../../../docs/adr/0010-file-transfer.md

mod bulk;
mod content;
mod download;
mod group;
mod held;
mod prepare;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use multiaddr::{Multiaddr, Protocol as Ma};
use tokio::sync::Notify;
use volli_core::transfer::{ChunkList, FileKey, FileOffer, Layout, SealedOffer, TransferId, hex};
use volli_core::wire::{self, FileAction, FileRefusal, FileRequest, FileResponse};
use volli_core::{DeviceCertificate, KemPublicKey, PeerId, Timestamp, UserId};
use volli_net::{NetClient, Protocol};
use volli_plugin_host::{FileBackendPlugin, PluginHost};
use volli_store::{Db, StoreError, TransferRow, Vault};

use crate::config::FilesConfig;
use crate::events::{Event, EventBus};
use crate::identity::Identity;
use crate::limits::backoff;
use crate::outbound::Outbound;
use crate::peers::Peers;

pub use content::Content;
pub use held::RELAY_BYTES_SETTING;
pub use prepare::Upload;

/// Offers waiting for a decision from one contact, at most.
const MAX_PENDING_OFFERS: usize = 64;
/// Transfers a node keeps in each direction, at most (rows; finished ones count until they
/// are deleted or pruned), so what others offer never keeps the user from sending.
const MAX_TRANSFERS: usize = 5_000;
/// Incoming transfers kept from one contact (or from the user's own devices), at most.
const MAX_PER_CONTACT: usize = 500;
/// The longest a received offer is taken to last, whatever its sender says.
const MAX_OFFER_LIFE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Transfers that ended without completing are forgotten this long after they ended.
const KEEP_UNFINISHED: Duration = Duration::from_secs(7 * 24 * 3600);
/// Progress events per transfer, at most one per this.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// How often undelivered offers and state changes are tried again, at the latest.
const RETRY_EVERY: Duration = Duration::from_secs(30);
/// The longest the maintenance loop sleeps when nothing waits and nothing expires sooner.
const IDLE_WAIT: Duration = Duration::from_secs(3600);
/// A request to the other side.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The setting that holds the auto-accept sizes.
pub const AUTO_ACCEPT_SETTING: &str = "transfers.auto_accept_bytes";

/// The ids a transfer's chunks are stored under in the file backend: each derived from the
/// transfer's id and the chunk's name, so no two transfers share a stored chunk and
/// cancelling or deleting one never takes another's (a sender could otherwise have a file it
/// delivered before deleted, by offering the same chunks again and cancelling). Still 64 hex
/// characters, as the file-backend contract has them. Transfers recorded by earlier releases
/// keep their chunks under the chunk's name.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChunkIds(Option<[u8; 16]>);

impl ChunkIds {
    /// The ids of a new transfer's chunks.
    pub(crate) fn new(id: TransferId) -> Self {
        Self(Some(*id.as_bytes()))
    }

    /// The ids of `t`'s chunks.
    pub(crate) fn of(t: &TransferRow) -> Self {
        Self(t.chunk_ids_per_transfer.then_some(t.id))
    }

    /// Where chunk `name` is stored.
    pub(crate) fn id(&self, name: &[u8; 32]) -> String {
        match &self.0 {
            Some(transfer) => {
                let mut input = [0u8; 48];
                input[..16].copy_from_slice(transfer);
                input[16..].copy_from_slice(name);
                hex(&blake3::derive_key("volli file chunk id v1", &input))
            }
            None => hex(name),
        }
    }
}

/// Why a transfer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The recipient is not a contact.
    #[error("{0} is not a contact")]
    UnknownContact(UserId),
    /// The caller may not send files by that path.
    #[error("{0}")]
    PathNotAllowed(String),
    /// The path cannot be sent.
    #[error("{0}")]
    InvalidPath(String),
    /// The file name cannot be used.
    #[error("{0}")]
    InvalidName(String),
    /// A bad request.
    #[error("{0}")]
    Invalid(String),
    /// The file is larger than a transfer can be.
    #[error("files can be at most {} GiB", volli_core::transfer::MAX_FILE_SIZE >> 30)]
    TooLarge,
    /// No such transfer.
    #[error("no such transfer")]
    Unknown,
    /// Not possible in the transfer's current state.
    #[error("{1}")]
    Conflict(&'static str, String),
    /// A quota is reached.
    #[error("{0}")]
    Quota(String),
    /// The byte range asked for is outside the file (of this size).
    #[error("the range is outside the file ({0} bytes)")]
    Range(u64),
    /// The file backend cannot be used.
    #[error("the file backend is not available: {0}")]
    Backend(String),
    /// Reading or writing a file failed.
    #[error("{0}")]
    Io(String),
    /// No such group (or this device is not in it).
    #[error("no such group")]
    UnknownGroup,
    /// Too many offers to a group at once: retry in this many seconds.
    #[error("too many messages to this group; retry in {0} s")]
    RateLimited(u64),
    /// Storage failed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

impl FileError {
    fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict(code, message.into())
    }
}

/// A transfer as the API shows it.
#[derive(Clone, Debug)]
pub struct TransferView {
    /// Its id.
    pub id: TransferId,
    /// `outgoing` or `incoming`.
    pub outgoing: bool,
    /// The other side's user id.
    pub peer: String,
    /// The file's name.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Bytes stored (incoming) or sent (outgoing).
    pub bytes_done: u64,
    /// `offered`, `running`, `paused`, `completed`, `declined`, `cancelled`, `failed`.
    pub state: &'static str,
    /// Who paused it: `here`, `there`, `both`.
    pub paused_by: Option<&'static str>,
    /// The plaintext's BLAKE3 hash (hex).
    pub blake3: String,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was offered.
    pub created_at: Timestamp,
    /// Until when the sender keeps the file.
    pub expires_at: Timestamp,
    /// The group it was offered to, if any (`peer` is then the group on the sender's side).
    pub group: Option<String>,
    /// For a file this user offered to a group: each member that fetches it from here.
    pub members: Option<Vec<volli_store::TransferMember>>,
    /// The user ids of friends holding it for an offline recipient (files through friends).
    pub via: Vec<String>,
}

/// Terminal states.
fn finished(state: &str) -> bool {
    matches!(state, "completed" | "declined" | "cancelled" | "failed")
}

fn view(t: &TransferRow) -> TransferView {
    let paused = t.state == "running" && (t.paused_here || t.paused_there);
    TransferView {
        id: TransferId::from_bytes(t.id),
        outgoing: t.outgoing,
        peer: t.peer.clone(),
        name: t.name.clone(),
        size: t.size,
        bytes_done: t.bytes_done.min(t.size),
        state: match t.state.as_str() {
            "offered" => "offered",
            "running" if paused => "paused",
            "running" => "running",
            "completed" => "completed",
            "declined" => "declined",
            "cancelled" => "cancelled",
            _ => "failed",
        },
        paused_by: match (t.paused_here, t.paused_there) {
            _ if !paused => None,
            (true, true) => Some("both"),
            (true, false) => Some("here"),
            _ => Some("there"),
        },
        blake3: hex(&t.blake3),
        error: t.error.clone(),
        created_at: t.created_at,
        expires_at: t.expires_at,
        group: t.group.clone(),
        members: None,
        via: Vec::new(),
    }
}

/// What the service is built from.
pub struct Parts {
    /// The database.
    pub db: Db,
    /// The vault.
    pub vault: Vault,
    /// The network.
    pub net: NetClient,
    /// Requests to other nodes.
    pub outbound: Outbound,
    /// This node's identity.
    pub identity: Arc<Identity>,
    /// The peer table.
    pub peers: Peers,
    /// Events for clients.
    pub events: EventBus,
    /// Plugins (the file backend).
    pub host: PluginHost,
    /// `[files]`.
    pub config: FilesConfig,
    /// The node's data directory (no file of it is ever sent by path).
    pub data_dir: std::path::PathBuf,
    /// The libp2p listen addresses (for the bulk listener's default).
    pub p2p_listen: Vec<Multiaddr>,
    /// Reachability and relays (the rate a circuit through a relay may carry).
    pub connectivity: crate::connectivity::Connectivity,
    /// Conversations on MLS: offers go inside them.
    pub conversations: crate::conversations::Conversations,
    /// Messages: files offered to a group go as its messages do.
    pub messaging: crate::messaging::Messaging,
}

/// What a file is, beside its name and size, as the conversation's timeline shows it: its
/// media type and, for a picture, a small image of it made by the sender's client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileMeta {
    /// The media type (`image/png`…).
    pub mime: String,
    /// A `data:image/…;base64,…` URL of at most [`volli_core::mail::MAX_THUMBNAIL_LEN`].
    pub thumbnail: Option<String>,
}

impl FileMeta {
    /// What a file named `name` most likely is (by its extension), without a picture.
    pub fn of_name(name: &str) -> Self {
        let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
        let mime = match extension.as_deref() {
            Some("png") => "image/png",
            Some("jpg" | "jpeg") => "image/jpeg",
            Some("gif") => "image/gif",
            Some("webp") => "image/webp",
            Some("svg") => "image/svg+xml",
            Some("pdf") => "application/pdf",
            Some("txt" | "md") => "text/plain",
            Some("mp4") => "video/mp4",
            Some("webm") => "video/webm",
            Some("mp3") => "audio/mpeg",
            Some("ogg" | "opus") => "audio/ogg",
            Some("zip") => "application/zip",
            _ => "application/octet-stream",
        };
        Self {
            mime: mime.into(),
            thumbnail: None,
        }
    }

    /// What a peer's offer says a file named `name` is, checked as a client's word is: a
    /// media type or a picture that does not pass is dropped (the type then comes from the
    /// name), so no other node puts a script or a misleading type before this user's clients.
    pub fn received(name: &str, mime: &str, thumbnail: Option<&str>) -> Self {
        let mut meta = Self::given(name, Some(mime), None).unwrap_or_else(|_| Self::of_name(name));
        meta.thumbnail = thumbnail
            .and_then(|t| Self::given(name, None, Some(t)).ok())
            .and_then(|m| m.thumbnail);
        meta
    }

    /// The media type and picture a client gave for a file named `name`, checked: a media
    /// type of the form `type/subtype`, a picture that is a `data:` URL of a PNG, JPEG or
    /// WebP image within the size allowed.
    pub fn given(
        name: &str,
        mime: Option<&str>,
        thumbnail: Option<&str>,
    ) -> Result<Self, FileError> {
        let mut meta = Self::of_name(name);
        if let Some(mime) = mime.map(str::trim).filter(|m| !m.is_empty()) {
            let valid = mime.len() <= volli_core::mail::MAX_MIME_LEN
                && mime.split_once('/').is_some_and(|(a, b)| {
                    !a.is_empty()
                        && !b.is_empty()
                        && mime
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "/.+-_".contains(c))
                });
            if !valid {
                return Err(FileError::Invalid(format!(
                    "`mime` is not a media type: {mime}"
                )));
            }
            meta.mime = mime.to_ascii_lowercase();
        }
        if let Some(t) = thumbnail.filter(|t| !t.is_empty()) {
            let ok = t.len() <= volli_core::mail::MAX_THUMBNAIL_LEN
                && [
                    "data:image/png;base64,",
                    "data:image/jpeg;base64,",
                    "data:image/webp;base64,",
                ]
                .iter()
                .any(|p| {
                    t.strip_prefix(p).is_some_and(|b64| {
                        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
                            .is_ok()
                    })
                });
            if !ok {
                return Err(FileError::Invalid(format!(
                    "`thumbnail` is a data: URL of a PNG, JPEG or WebP image of at most {} bytes",
                    volli_core::mail::MAX_THUMBNAIL_LEN
                )));
            }
            meta.thumbnail = Some(t.to_owned());
        }
        Ok(meta)
    }
}

/// `path` with `.` and `..` resolved by their names alone (no file system access).
fn normalized(path: &std::path::Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The file transfer service. Cheap to clone.
#[derive(Clone)]
pub struct Files {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    vault: Vault,
    net: NetClient,
    outbound: Outbound,
    identity: Arc<Identity>,
    peers: Peers,
    events: EventBus,
    host: PluginHost,
    config: FilesConfig,
    data_dir: std::path::PathBuf,
    /// Chunks of group files passed on, per file and member asking.
    passed_on: std::sync::Mutex<HashMap<([u8; 16], UserId), usize>>,
    bulk: Option<Arc<bulk::Listener>>,
    /// State changes, one at a time (they are rare; chunks do not take this).
    changes: tokio::sync::Mutex<()>,
    downloads: Mutex<HashMap<TransferId, Arc<download::Handle>>>,
    serving: Mutex<HashMap<TransferId, Arc<Serving>>>,
    progress: Mutex<HashMap<TransferId, Instant>>,
    rate: Option<Mutex<Bucket>>,
    /// Outgoing transfers being deposited with friends (`None`), or held by one since.
    depositing: Mutex<HashMap<TransferId, Option<Instant>>>,
    /// Contacts being asked which files they hold for this user.
    /// (with whether it is to be asked again once done).
    asking_holders: Mutex<HashMap<UserId, bool>>,
    /// Friends no longer asked for a transfer they hold (they could not give it).
    dropped_holders: Mutex<std::collections::HashSet<(TransferId, UserId)>>,
    /// What chunks sent over a friend's relay may use, per peer on the other end.
    relayed: Mutex<HashMap<PeerId, Bucket>>,
    connectivity: crate::connectivity::Connectivity,
    conversations: crate::conversations::Conversations,
    messaging: crate::messaging::Messaging,
    wake: Notify,
}

/// What the sender keeps at hand for a transfer being fetched.
struct Serving {
    layout: Layout,
    key: FileKey,
    list: ChunkList,
    chunk_ids: ChunkIds,
    /// Who fetches it: one user, or (`None`) the members of its group.
    peer: Option<UserId>,
    /// Members of its group found to be in it.
    admitted: Mutex<std::collections::HashSet<UserId>>,
    source: Option<std::fs::File>,
    sent: Mutex<Vec<bool>>,
    sent_bytes: std::sync::atomic::AtomicU64,
    saved_at: Mutex<Instant>,
    /// For a file this node offered to a group: the chunks each member fetched, and how
    /// many bytes that makes.
    members: Option<Mutex<MembersFetched>>,
}

/// Per member of a group: the chunks it fetched, and their bytes.
type MembersFetched = HashMap<UserId, (Vec<bool>, u64)>;

/// How this node serves a transfer to a member or peer that asks for it.
enum Served {
    /// From what it holds: the sender's file, or a group file received whole.
    Held(Arc<Serving>),
    /// A group file this member received but does not hold whole (not accepted yet,
    /// declined, still arriving): passed on chunk by chunk from where this node would fetch
    /// it, without keeping it ([ADR 0018] §6).
    ///
    /// [ADR 0018]: ../../../docs/adr/0018-groups.md
    PassedOn(Box<TransferRow>),
}

/// A token bucket of bytes: for `[files] max_send_rate`, and per peer over a relay.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes `bytes`; how long to wait before sending them (a quarter second's worth may
    /// go at once).
    fn take(&mut self, bytes: usize) -> Duration {
        let now = Instant::now();
        let burst = self.rate / 4.0;
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(burst);
        self.at = now;
        self.tokens -= bytes as f64;
        if self.tokens < 0.0 {
            Duration::from_secs_f64(-self.tokens / self.rate)
        } else {
            Duration::ZERO
        }
    }
}

impl Files {
    /// Builds the service and binds the bulk listener.
    pub async fn new(parts: Parts) -> Self {
        let bulk = if parts.config.bulk {
            let addrs = if parts.config.bulk_listen.is_empty() {
                bulk_addrs_for(&parts.p2p_listen)
            } else {
                parts.config.bulk_listen.clone()
            };
            let (listener, sockets) = bulk::Listener::bind(&addrs).await;
            Some((listener, sockets))
        } else {
            None
        };
        let rate = (parts.config.max_send_rate > 0).then(|| {
            Mutex::new(Bucket {
                rate: parts.config.max_send_rate as f64,
                tokens: 0.0,
                at: Instant::now(),
            })
        });
        let files = Self {
            inner: Arc::new(Inner {
                db: parts.db,
                vault: parts.vault,
                net: parts.net,
                outbound: parts.outbound,
                identity: parts.identity,
                peers: parts.peers,
                events: parts.events,
                host: parts.host,
                config: parts.config,
                data_dir: parts.data_dir,
                passed_on: std::sync::Mutex::new(HashMap::new()),
                bulk: bulk.as_ref().map(|(l, _)| Arc::clone(l)),
                changes: tokio::sync::Mutex::new(()),
                downloads: Mutex::new(HashMap::new()),
                serving: Mutex::new(HashMap::new()),
                progress: Mutex::new(HashMap::new()),
                rate,
                relayed: Mutex::new(HashMap::new()),
                depositing: Mutex::new(HashMap::new()),
                asking_holders: Mutex::new(HashMap::new()),
                dropped_holders: Mutex::new(std::collections::HashSet::new()),
                connectivity: parts.connectivity,
                conversations: parts.conversations,
                messaging: parts.messaging,
                wake: Notify::new(),
            }),
        };
        if let Some((listener, sockets)) = bulk {
            listener.spawn(sockets, files.clone());
        }
        files.take_group_offers();
        files
    }

    /// Starts the background work: downloads that were running, delivery of offers and
    /// state changes, expiry.
    pub fn spawn(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Ok(all) = this.inner.db.transfers().await {
                for t in all {
                    if let (false, "running", Ok(peer)) =
                        (t.outgoing, t.state.as_str(), t.peer.parse::<UserId>())
                    {
                        this.start_download(TransferId::from_bytes(t.id), peer);
                    }
                }
            }
            loop {
                this.expire_held().await;
                let next_expiry = this.expire().await;
                // With nothing waiting for the other side, sleep until the next expiry: a
                // new transfer or a change wakes the loop, and so does a contact connecting.
                let wait = if this.deliver_pending(None).await {
                    RETRY_EVERY
                } else {
                    IDLE_WAIT
                };
                let wait = next_expiry.map_or(wait, |d| d.min(wait));
                let _ = tokio::time::timeout(wait, this.inner.wake.notified()).await;
            }
        });
    }

    /// A device of `user` connected: what waits for it goes now.
    pub async fn peer_ready(&self, user: UserId) {
        self.deliver_pending(Some(user)).await;
        if user != self.inner.identity.user_id() {
            let this = self.clone();
            tokio::spawn(async move {
                this.fetch_held(user).await;
                this.release_to(user).await;
            });
        }
        let waiting: Vec<Arc<download::Handle>> = self
            .lock_downloads()
            .values()
            .filter(|h| h.peer == user)
            .cloned()
            .collect();
        for handle in waiting {
            handle.wake.notify_one();
        }
    }

    /// `peer` is now reached directly (a hole punch succeeded): downloads from its user
    /// start a new round at once, on the direct path (the bulk channel where it can be
    /// reached), keeping every chunk already stored. Chunks asked for over the relay fail
    /// as its connection closes and are asked for again.
    pub fn direct_path(&self, peer: PeerId) {
        let Some(user) = self.inner.peers.user_of(&peer) else {
            return;
        };
        for handle in self.lock_downloads().values().filter(|h| h.peer == user) {
            handle.interrupt();
        }
    }

    fn lock_downloads(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<TransferId, Arc<download::Handle>>> {
        self.inner
            .downloads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The file backend chosen in `[files] backend`.
    fn backend(&self) -> Result<FileBackendPlugin, FileError> {
        let name = &self.inner.config.backend;
        self.inner
            .host
            .file_backend_named(name)
            .ok_or_else(|| FileError::Backend(format!("no file-backend plugin named {name}")))
    }

    /// Every transfer, newest first.
    pub async fn list(&self) -> Result<Vec<TransferView>, FileError> {
        let mut out = Vec::new();
        for t in self.inner.db.transfers().await? {
            out.push(self.with_members(self.live(view(&t))).await?);
        }
        Ok(out)
    }

    /// One transfer.
    pub async fn get(&self, id: TransferId) -> Result<TransferView, FileError> {
        self.with_members(self.live(view(&self.row(id).await?)))
            .await
    }

    /// A view with the members of a file this user offered to a group.
    async fn with_members(&self, mut v: TransferView) -> Result<TransferView, FileError> {
        if v.outgoing && v.group.is_some() {
            v.members = Some(self.inner.db.transfer_members(v.id.as_bytes()).await?);
        }
        if v.group.is_none() {
            v.via = self.via(v.id).await?;
        }
        Ok(v)
    }

    /// A view with the progress of a download under way (recorded in batches).
    fn live(&self, mut v: TransferView) -> TransferView {
        if !v.outgoing
            && matches!(v.state, "running" | "paused")
            && let Some(h) = self.lock_downloads().get(&v.id)
        {
            let live = h.bytes_done.load(std::sync::atomic::Ordering::SeqCst);
            v.bytes_done = v.bytes_done.max(live).min(v.size);
        }
        v
    }

    async fn row(&self, id: TransferId) -> Result<TransferRow, FileError> {
        self.inner
            .db
            .transfer(id.as_bytes())
            .await?
            .ok_or(FileError::Unknown)
    }

    /// The recipient's X-Wing key and devices: a contact, or this user (its other devices).
    async fn recipient(
        &self,
        to: UserId,
    ) -> Result<(KemPublicKey, Vec<DeviceCertificate>), FileError> {
        let me = self.inner.identity.user_id();
        if to == me {
            let devices = self.own_devices().await?;
            if devices.is_empty() {
                return Err(FileError::conflict(
                    "no_other_device",
                    "this user has no other device to send to",
                ));
            }
            let key = self
                .inner
                .identity
                .keyring()
                .current()
                .map(|k| k.public().clone())
                .ok_or_else(|| {
                    FileError::conflict(
                        "not_allowed",
                        "this device holds no message key; it cannot send files",
                    )
                })?;
            return Ok((key, devices));
        }
        let contact = self
            .inner
            .vault
            .contact(to)
            .await?
            .ok_or(FileError::UnknownContact(to))?;
        Ok((contact.card.keys().kem.clone(), contact.devices))
    }

    async fn own_devices(&self) -> Result<Vec<DeviceCertificate>, FileError> {
        let me = self.inner.identity.peer_id();
        Ok(self
            .inner
            .vault
            .devices()
            .await?
            .into_iter()
            .filter(|d| d.revoked_at.is_none() && d.peer_id() != me)
            .map(|d| d.certificate)
            .collect())
    }

    /// Bytes the backend holds or will hold for transfers, in all and for `peer`.
    async fn usage(&self, peer: &str) -> Result<(u64, u64), FileError> {
        let mut all = 0u64;
        let mut theirs = 0u64;
        for t in self.inner.db.transfers().await? {
            if holds(&t) {
                all = all.saturating_add(t.size);
                if t.peer == peer {
                    theirs = theirs.saturating_add(t.size);
                }
            }
        }
        Ok((all, theirs))
    }

    /// What transfers hold in the file backend now, for `GET /v1/relay`.
    pub async fn storage(&self) -> Result<Storage, FileError> {
        let mut storage = Storage::default();
        for t in self.inner.db.transfers().await? {
            if holds(&t) {
                storage.files += 1;
                storage.bytes = storage.bytes.saturating_add(t.size);
            }
            if !finished(&t.state) {
                storage.next_expiry = Some(
                    storage
                        .next_expiry
                        .map_or(t.expires_at, |n: Timestamp| n.min(t.expires_at)),
                );
            }
        }
        Ok(storage)
    }

    /// The `[files]` settings in force.
    pub fn config(&self) -> &FilesConfig {
        &self.inner.config
    }

    async fn check_quota(&self, peer: &str, size: u64) -> Result<(), FileError> {
        let (all, theirs) = self.usage(peer).await?;
        let config = &self.inner.config;
        if all.saturating_add(size) > config.max_bytes {
            return Err(FileError::Quota(format!(
                "transfers would hold more than [files] max_bytes = {} bytes",
                config.max_bytes
            )));
        }
        if theirs.saturating_add(size) > config.max_bytes_per_contact {
            return Err(FileError::Quota(format!(
                "this contact's transfers would hold more than [files] max_bytes_per_contact = {} bytes",
                config.max_bytes_per_contact
            )));
        }
        Ok(())
    }

    /// Records a prepared outgoing transfer and starts offering it.
    async fn offer(
        &self,
        to: UserId,
        name: String,
        prepared: prepare::Prepared,
        source: Option<String>,
        meta: FileMeta,
    ) -> Result<TransferView, FileError> {
        let (kem, _) = self.recipient(to).await?;
        let now = Timestamp::now();
        let expires_at = now.saturating_add(Duration::from_secs(self.inner.config.keep_secs));
        let offer = FileOffer {
            id: prepared.id,
            sender: self.inner.identity.user_id(),
            name: name.clone(),
            layout: prepared.layout,
            list: prepared.list.hash(),
            blake3: prepared.blake3,
            key: prepared.key.clone(),
            created_at: now,
            expires_at,
            device: None,
        };
        // Inside the conversation when it is on MLS (the file's key then has the
        // conversation's forward secrecy); sealed to the user key otherwise.
        let content = if self.inner.conversations.reads_kinds(&to) {
            volli_core::Content::File {
                offer: volli_core::OfferContent::of(&offer),
                mime: meta.mime.clone(),
                thumbnail: meta.thumbnail.clone(),
            }
        } else {
            volli_core::Content::FileOffer(volli_core::OfferContent::of(&offer))
        };
        let sealed = match self.inner.conversations.seal(to, &content).await {
            Ok(Some(sealed)) => {
                sealed.durable.await.map_err(FileError::Store)?;
                sealed.mail
            }
            _ => SealedOffer::seal(&self.inner.identity.signer(), to, &kem, &offer)
                .map_err(|e| FileError::InvalidName(e.to_string()))?
                .to_bytes(),
        };
        let row = TransferRow {
            id: *prepared.id.as_bytes(),
            outgoing: true,
            peer: to.to_string(),
            device: None,
            name,
            size: prepared.layout.size(),
            chunk_size: prepared.layout.chunk_size(),
            list_hash: offer.list,
            blake3: prepared.blake3,
            file_key: *prepared.key.as_bytes(),
            source,
            list: Some(prepared.list.to_bytes()),
            sealed_offer: Some(sealed),
            state: "offered".into(),
            paused_here: false,
            paused_there: false,
            delivered: false,
            notify: None,
            bytes_done: 0,
            error: None,
            created_at: now,
            expires_at,
            updated_at: now,
            chunk_ids_per_transfer: true,
            group: None,
        };
        self.inner.db.insert_transfer(&row).await?;
        if to != self.inner.identity.user_id() {
            self.put_file_item(
                crate::timeline::Where::Direct(to),
                self.inner.identity.user_id(),
                &row,
                &meta,
                volli_store::vault::MessageStatus::Queued,
            )
            .await;
        }
        // The maintenance loop sleeps until the next expiry it knew of; this one may be sooner.
        self.inner.wake.notify_one();
        let this = self.clone();
        tokio::spawn(async move { this.deliver_offer(&row).await });
        Ok(view(&self.row(prepared.id).await?))
    }

    /// Shows transfer `t` in the conversation `at` as a file item from `from`.
    pub(crate) async fn put_file_item(
        &self,
        at: crate::timeline::Where,
        from: UserId,
        t: &TransferRow,
        meta: &FileMeta,
        status: volli_store::vault::MessageStatus,
    ) {
        let me = self.inner.identity.user_id();
        let item = volli_store::vault::StoredMessage {
            id: volli_core::MessageId::from_bytes(t.id),
            from,
            to: match at {
                crate::timeline::Where::Direct(with) if from == me => with,
                crate::timeline::Where::Direct(_) => me,
                crate::timeline::Where::Group(_) => at.key(),
            },
            body: t.name.clone(),
            sent_at: t.created_at,
            status,
            extra: volli_store::vault::Extra {
                kind: volli_store::vault::MessageKind::File,
                file: Some(volli_store::vault::FileItem {
                    transfer: TransferId::from_bytes(t.id).to_string(),
                    name: t.name.clone(),
                    size: t.size,
                    mime: meta.mime.clone(),
                    thumbnail: meta.thumbnail.clone(),
                }),
                ..volli_store::vault::Extra::default()
            },
        };
        if let Err(e) = self.inner.vault.put_message(at.key(), item).await {
            tracing::warn!(error = %e, "a file could not be shown in its conversation");
        }
    }

    async fn check_room(&self) -> Result<(), FileError> {
        let outgoing = self
            .inner
            .db
            .transfers()
            .await?
            .iter()
            .filter(|t| t.outgoing)
            .count();
        if outgoing >= MAX_TRANSFERS {
            return Err(FileError::Quota(format!(
                "this node holds {MAX_TRANSFERS} outgoing transfers; delete finished ones first"
            )));
        }
        Ok(())
    }

    /// Offers the file at `path` (on this node) to `to`.
    pub async fn send_path(
        &self,
        to: UserId,
        path: &str,
        admin: bool,
    ) -> Result<TransferView, FileError> {
        self.recipient(to).await?;
        self.check_room().await?;
        let this = self.clone();
        let allowed = move |real: &std::path::Path| this.path_allowed(real, admin);
        let (name, prepared) = prepare::from_path(path, &allowed).await?;
        let meta = FileMeta::of_name(&name);
        self.offer(to, name, prepared, Some(path.to_owned()), meta)
            .await
    }

    /// Whether a caller may send the file at `path` by its path on the node: an `admin`
    /// caller any file but those of the data directory, another only files inside
    /// `[files] upload_dirs`. Checked before anything about the path is read, so a refusal
    /// says nothing of what exists there.
    pub fn may_send_path(&self, path: &str, admin: bool) -> Result<(), FileError> {
        let refused = || {
            FileError::PathNotAllowed(if admin {
                "files of the node's data directory are never sent".into()
            } else {
                "a client token sends files by path only from the node's upload directories \
                 ([files] upload_dirs); send the file's bytes instead"
                    .into()
            })
        };
        let inside = |path: &std::path::Path, dir: &std::path::Path| path.starts_with(dir);
        let requested = std::path::Path::new(path);
        let normal = normalized(requested);
        let dirs = &self.inner.config.upload_dirs;
        if !admin && !dirs.iter().any(|d| inside(&normal, &normalized(d))) {
            return Err(refused());
        }
        // Where it really is (links followed): never in the data directory, and for a
        // client token still inside an upload directory.
        let Ok(real) = requested.canonicalize() else {
            // Unreadable: the admin hears why when the file is read; a client token, only
            // that it may not.
            return if admin { Ok(()) } else { Err(refused()) };
        };
        if !self.path_allowed(&real, admin) {
            return Err(refused());
        }
        Ok(())
    }

    /// Whether a file whose real path (links followed) is `real` may be sent by its path:
    /// never from the data directory, and for a caller without `admin` only from inside an
    /// upload directory.
    pub(crate) fn path_allowed(&self, real: &std::path::Path, admin: bool) -> bool {
        let data = self
            .inner
            .data_dir
            .canonicalize()
            .unwrap_or_else(|_| self.inner.data_dir.clone());
        if real.as_os_str().is_empty() || real.starts_with(&data) {
            return false;
        }
        admin
            || self
                .inner
                .config
                .upload_dirs
                .iter()
                .filter_map(|d| d.canonicalize().ok())
                .any(|d| real.starts_with(&d))
    }

    /// Offers an uploaded file to `to`; its chunks go to the file backend as they arrive.
    pub async fn send_upload(&self, to: UserId, upload: Upload) -> Result<TransferView, FileError> {
        self.recipient(to).await?;
        self.check_room().await?;
        let meta = upload
            .meta
            .clone()
            .unwrap_or_else(|| FileMeta::of_name(&upload.name));
        let (name, prepared) = self.take_upload(&to.to_string(), upload).await?;
        self.offer(to, name, prepared, None, meta).await
    }

    /// Checks an upload's name and size, then streams it to the file backend, within the
    /// quotas of `quota` (the recipient, or the group); its name and what was prepared.
    async fn take_upload(
        &self,
        quota: &str,
        upload: Upload,
    ) -> Result<(String, prepare::Prepared), FileError> {
        volli_core::transfer::check_name(&upload.name)
            .map_err(|e| FileError::InvalidName(e.to_string()))?;
        if let Some(len) = upload.len {
            if len > volli_core::transfer::MAX_FILE_SIZE {
                return Err(FileError::TooLarge);
            }
            self.check_quota(quota, len).await?;
        }
        let backend = self.backend()?;
        let name = upload.name.clone();
        let prepared = prepare::from_upload(upload, &backend).await?;
        if let Err(e) = self.check_quota(quota, prepared.layout.size()).await {
            prepare::forget(&backend, ChunkIds::new(prepared.id), &prepared.list).await;
            return Err(e);
        }
        Ok((name, prepared))
    }

    /// Sends the offer of an outgoing transfer to the recipient's devices until one takes it.
    async fn deliver_offer(&self, row: &TransferRow) {
        let (Some(bytes), Ok(to)) = (&row.sealed_offer, row.peer.parse::<UserId>()) else {
            return;
        };
        let Ok((_, devices)) = self.recipient(to).await else {
            return;
        };
        let mut payload = wire::encode(&FileRequest::Offer(bytes.clone()));
        let mut taken = false;
        let mut resealed = false;
        for (peer, connected, addrs) in self.inner.peers.dial_targets(&devices) {
            if !connected && addrs.is_empty() {
                continue;
            }
            match self.ask(peer, payload.clone(), addrs.clone()).await {
                Some(FileResponse::Ok) => taken = true,
                // Sealed inside the conversation under keys the device no longer holds:
                // sealed again, once, and offered to it at once.
                Some(FileResponse::Refused(FileRefusal::Invalid(r)))
                    if r == wire::REFUSED_SEAL_AGAIN && !resealed =>
                {
                    resealed = true;
                    if let Some(sealed) = self.reseal_offer(row.id).await {
                        payload = wire::encode(&FileRequest::Offer(sealed));
                        taken |= matches!(
                            self.ask(peer, payload.clone(), addrs).await,
                            Some(FileResponse::Ok)
                        );
                    }
                }
                Some(FileResponse::Refused(r)) => {
                    tracing::debug!(%peer, ?r, "offer refused");
                }
                _ => {}
            }
        }
        if !taken
            && row.group.is_none()
            && !devices.iter().any(|d| {
                self.inner
                    .peers
                    .get(&d.peer_id())
                    .is_some_and(|e| e.connected)
            })
        {
            // Nobody there: the file waits at friends' nodes (files through friends).
            self.deposit_soon(TransferId::from_bytes(row.id));
        }
        if taken {
            let _guard = self.inner.changes.lock().await;
            if let Ok(mut t) = self.row(TransferId::from_bytes(row.id)).await
                && !t.delivered
            {
                t.delivered = true;
                t.updated_at = Timestamp::now();
                let _ = self.inner.db.save_transfer(&t).await;
            }
        }
    }

    /// Seals an outgoing offer again in its conversation as it is now and keeps it as the
    /// transfer's offer; the new mail once it and the conversation's state are durable.
    async fn reseal_offer(&self, id: [u8; 16]) -> Option<Vec<u8>> {
        let _guard = self.inner.changes.lock().await;
        let mut row = self.row(TransferId::from_bytes(id)).await.ok()?;
        let to = row.peer.parse::<UserId>().ok()?;
        let content = volli_core::Content::FileOffer(offer_content(&row)?);
        let sealed = match self.inner.conversations.seal(to, &content).await {
            Ok(Some(sealed)) => sealed,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(%to, error = %e, "cannot seal an offer again");
                return None;
            }
        };
        sealed.durable.await.ok()?;
        row.sealed_offer = Some(sealed.mail.clone());
        row.updated_at = Timestamp::now();
        self.inner.db.save_transfer(&row).await.ok()?;
        Some(sealed.mail)
    }

    /// One request on `/volli/file/1`.
    async fn ask(
        &self,
        peer: PeerId,
        payload: Vec<u8>,
        addrs: Vec<Multiaddr>,
    ) -> Option<FileResponse> {
        let call = self
            .inner
            .outbound
            .request(peer, Protocol::File, payload, addrs);
        match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
            Ok(Ok(bytes)) => wire::decode(&bytes, Protocol::File.max_response()).ok(),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "file request failed");
                None
            }
            Err(_) => None,
        }
    }

    /// Delivers offers and state changes the other side has not heard of (to `user`, or to
    /// everyone); returns whether there were any.
    async fn deliver_pending(&self, user: Option<UserId>) -> bool {
        let Ok(all) = self.inner.db.transfers().await else {
            return true;
        };
        let mut pending = false;
        for t in all {
            if user.is_some_and(|u| u.to_string() != t.peer) {
                continue;
            }
            if t.outgoing && t.state == "offered" && !t.delivered {
                pending = true;
                self.deliver_offer(&t).await;
            }
            if t.notify.is_some() {
                pending = true;
                self.deliver_notify(TransferId::from_bytes(t.id)).await;
            }
        }
        pending
    }

    /// Records `action` for the other side (sent by [`Files::notify_soon`] once saved).
    fn tell(&self, t: &mut TransferRow, action: &str) {
        // A group's sender has no one other side, nor does a member fetching from a carrier.
        if t.group.is_some() && (t.outgoing || t.device.is_none()) {
            return;
        }
        let mut actions: Vec<String> = t
            .notify
            .as_deref()
            .map(|n| n.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        // A pause and a resume cancel out; only the newest of them matters.
        if matches!(action, "pause" | "resume") {
            actions.retain(|a| a != "pause" && a != "resume");
        }
        if !actions.iter().any(|a| a == action) {
            actions.push(action.to_owned());
        }
        t.notify = Some(actions.join(","));
    }

    /// Tells the other side what changed, in the background.
    fn notify_soon(&self, id: TransferId) {
        let this = self.clone();
        tokio::spawn(async move {
            this.deliver_notify(id).await;
            // Not heard: the maintenance loop retries it.
            if this.row(id).await.is_ok_and(|t| t.notify.is_some()) {
                this.inner.wake.notify_one();
            }
        });
    }

    async fn deliver_notify(&self, id: TransferId) {
        let Ok(t) = self.row(id).await else { return };
        let Some(actions) = t.notify.clone() else {
            return;
        };
        let Ok(user) = t.peer.parse::<UserId>() else {
            return;
        };
        let targets: Vec<(PeerId, Vec<Multiaddr>)> =
            match t.device.as_deref().and_then(|d| d.parse::<PeerId>().ok()) {
                Some(device) if !t.outgoing => {
                    let addrs = self
                        .inner
                        .peers
                        .get(&device)
                        .map(|e| e.addrs)
                        .unwrap_or_default();
                    vec![(device, addrs)]
                }
                _ => match self.recipient(user).await {
                    Ok((_, devices)) => self
                        .inner
                        .peers
                        .dial_targets(&devices)
                        .into_iter()
                        .filter(|(_, c, a)| *c || !a.is_empty())
                        .map(|(p, _, a)| (p, a))
                        .collect(),
                    Err(_) => Vec::new(),
                },
            };
        let mut done = Vec::new();
        for action in actions.split(',') {
            let Some(action) = parse_action(action, &t) else {
                done.push(action.to_owned());
                continue;
            };
            let payload = wire::encode(&FileRequest::Control { id, action });
            let mut heard = false;
            for (peer, addrs) in &targets {
                if let Some(
                    FileResponse::Ok
                    | FileResponse::Refused(
                        FileRefusal::Unknown | FileRefusal::Gone | FileRefusal::Cancelled,
                    ),
                ) = self.ask(*peer, payload.clone(), addrs.clone()).await
                {
                    heard = true;
                }
            }
            if !heard {
                break;
            }
            done.push(action_name(action).to_owned());
        }
        if done.is_empty() {
            return;
        }
        let _guard = self.inner.changes.lock().await;
        if let Ok(mut t) = self.row(id).await {
            let left: Vec<&str> = t
                .notify
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .filter(|a| !a.is_empty() && !done.iter().any(|d| d == a))
                .collect();
            t.notify = (!left.is_empty()).then(|| left.join(","));
            let _ = self.inner.db.save_transfer(&t).await;
        }
    }

    /// Accepts an incoming offer: the download starts.
    pub async fn accept(&self, id: TransferId) -> Result<TransferView, FileError> {
        let _guard = self.inner.changes.lock().await;
        let mut t = self.row(id).await?;
        if t.outgoing {
            return Err(FileError::conflict(
                "not_incoming",
                "only the recipient accepts a transfer",
            ));
        }
        if t.state != "offered" {
            return Err(FileError::conflict(
                "not_offered",
                format!("the transfer is {}, not offered", view(&t).state),
            ));
        }
        self.check_quota(&t.peer, t.size).await?;
        self.backend()?;
        t.state = "running".into();
        t.updated_at = Timestamp::now();
        self.tell(&mut t, "accept");
        self.inner.db.save_transfer(&t).await?;
        self.notify_soon(id);
        self.changed(&t);
        if let Ok(peer) = t.peer.parse() {
            self.start_download(id, peer);
        }
        Ok(view(&t))
    }

    /// Declines an incoming offer.
    pub async fn decline(&self, id: TransferId) -> Result<TransferView, FileError> {
        let _guard = self.inner.changes.lock().await;
        let mut t = self.row(id).await?;
        if t.outgoing {
            return Err(FileError::conflict(
                "not_incoming",
                "only the recipient declines a transfer",
            ));
        }
        if t.state != "offered" {
            return Err(FileError::conflict(
                "not_offered",
                format!("the transfer is {}, not offered", view(&t).state),
            ));
        }
        t.state = "declined".into();
        t.updated_at = Timestamp::now();
        self.tell(&mut t, "decline");
        self.inner.db.save_transfer(&t).await?;
        self.notify_soon(id);
        self.changed(&t);
        Ok(view(&t))
    }

    /// Pauses a running transfer on this side.
    pub async fn pause(&self, id: TransferId) -> Result<TransferView, FileError> {
        let _guard = self.inner.changes.lock().await;
        let mut t = self.row(id).await?;
        if t.state != "running" {
            return Err(FileError::conflict(
                "not_running",
                format!("the transfer is {}, not running", view(&t).state),
            ));
        }
        if t.paused_here {
            return Ok(view(&t));
        }
        t.paused_here = true;
        t.updated_at = Timestamp::now();
        self.tell(&mut t, "pause");
        self.inner.db.save_transfer(&t).await?;
        self.notify_soon(id);
        self.interrupt(id);
        self.changed(&t);
        Ok(view(&t))
    }

    /// Resumes a transfer this side paused.
    pub async fn resume(&self, id: TransferId) -> Result<TransferView, FileError> {
        let _guard = self.inner.changes.lock().await;
        let mut t = self.row(id).await?;
        if finished(&t.state) {
            return Err(FileError::conflict(
                "transfer_finished",
                format!("the transfer is {}", view(&t).state),
            ));
        }
        if !t.paused_here {
            return Err(FileError::conflict(
                "not_paused",
                if t.paused_there {
                    "the other side paused this transfer; only it can resume it"
                } else {
                    "the transfer is not paused"
                },
            ));
        }
        t.paused_here = false;
        t.updated_at = Timestamp::now();
        self.tell(&mut t, "resume");
        self.inner.db.save_transfer(&t).await?;
        self.notify_soon(id);
        self.changed(&t);
        if let (false, Ok(peer)) = (t.outgoing, t.peer.parse()) {
            self.start_download(id, peer);
        }
        Ok(view(&t))
    }

    /// Cancels a transfer that is not finished; its chunks are removed.
    pub async fn cancel(&self, id: TransferId) -> Result<TransferView, FileError> {
        let _guard = self.inner.changes.lock().await;
        let mut t = self.row(id).await?;
        if finished(&t.state) {
            return Err(FileError::conflict(
                "transfer_finished",
                format!("the transfer is {}", view(&t).state),
            ));
        }
        t.state = "cancelled".into();
        t.updated_at = Timestamp::now();
        self.tell(&mut t, "cancel");
        self.inner.db.save_transfer(&t).await?;
        self.notify_soon(id);
        self.interrupt(id);
        self.changed(&t);
        self.clean_up(&t);
        Ok(view(&t))
    }

    /// Forgets every finished transfer in one of `states` (`completed`, `declined`,
    /// `cancelled`, `failed`); a received file's content goes with it. Returns how many.
    pub async fn delete_finished(&self, states: &[&str]) -> Result<usize, FileError> {
        if let Some(bad) = states.iter().find(|s| !finished(s)) {
            return Err(FileError::Invalid(format!(
                "{bad:.20} is not a state a finished transfer has (completed, declined, \
                 cancelled, failed)"
            )));
        }
        let _guard = self.inner.changes.lock().await;
        let mut deleted = 0;
        for t in self.inner.db.transfers().await? {
            if !states.contains(&t.state.as_str()) {
                continue;
            }
            if !t.outgoing && t.state == "completed" {
                self.remove_chunks(&t).await;
            }
            self.inner.db.delete_transfer(&t.id).await?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Forgets a finished transfer (a received file's content with it).
    pub async fn delete(&self, id: TransferId) -> Result<(), FileError> {
        let _guard = self.inner.changes.lock().await;
        let t = self.row(id).await?;
        if !finished(&t.state) {
            return Err(FileError::conflict(
                "transfer_active",
                "cancel the transfer before deleting it",
            ));
        }
        if !t.outgoing && t.state == "completed" {
            self.remove_chunks(&t).await;
        }
        self.inner.db.delete_transfer(&t.id).await?;
        Ok(())
    }

    /// Stops a running download, if any.
    fn interrupt(&self, id: TransferId) {
        if let Some(h) = self.lock_downloads().get(&id) {
            h.interrupt();
        }
        self.lock_serving().remove(&id);
    }

    fn lock_serving(&self) -> std::sync::MutexGuard<'_, HashMap<TransferId, Arc<Serving>>> {
        self.inner.serving.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes what a transfer that ended without completing left in the backend (and an
    /// upload's chunks once they are no longer needed).
    fn clean_up(&self, t: &TransferRow) {
        let holds = if t.outgoing {
            t.source.is_none()
        } else {
            t.state != "completed"
        };
        if holds {
            let this = self.clone();
            let t = t.clone();
            tokio::spawn(async move { this.remove_chunks(&t).await });
        }
    }

    async fn remove_chunks(&self, t: &TransferRow) {
        let Ok(backend) = self.backend() else { return };
        let Ok(layout) = Layout::new(t.size, t.chunk_size) else {
            return;
        };
        let Some(list) = t
            .list
            .as_deref()
            .and_then(|b| ChunkList::from_bytes(&layout, b).ok())
        else {
            return;
        };
        prepare::forget(&backend, ChunkIds::of(t), &list).await;
    }

    /// Publishes a state change.
    fn changed(&self, t: &TransferRow) {
        // Friends holding it for its recipient let it go once it is over, either way.
        if finished(&t.state) && t.group.is_none() {
            self.release_holders(TransferId::from_bytes(t.id));
        }
        let v = view(t);
        let id = v.id.to_string();
        match v.state {
            "completed" => self.inner.events.publish(Event::TransferCompleted {
                id,
                blake3: v.blake3,
            }),
            "failed" => self.inner.events.publish(Event::TransferFailed {
                id,
                reason: v.error.unwrap_or_default(),
            }),
            state => self.inner.events.publish(Event::TransferUpdated {
                id,
                state: state.to_owned(),
            }),
        }
    }

    /// A progress event, at most every [`PROGRESS_EVERY`] per transfer (and always at the end).
    fn progress(&self, id: TransferId, bytes_done: u64, size: u64) {
        let now = Instant::now();
        {
            let mut last = self
                .inner
                .progress
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if bytes_done < size {
                if let Some(at) = last.get(&id)
                    && now.duration_since(*at) < PROGRESS_EVERY
                {
                    return;
                }
                last.insert(id, now);
            } else {
                last.remove(&id);
            }
        }
        self.inner.events.publish(Event::TransferProgress {
            id: id.to_string(),
            bytes_done,
            size,
        });
    }

    /// Marks a transfer failed, with `reason`.
    async fn fail(&self, id: TransferId, reason: &str) {
        let _guard = self.inner.changes.lock().await;
        if let Ok(mut t) = self.row(id).await {
            if finished(&t.state) {
                return;
            }
            t.state = "failed".into();
            t.error = Some(reason.to_owned());
            t.updated_at = Timestamp::now();
            let _ = self.inner.db.save_transfer(&t).await;
            tracing::info!(transfer = %id, reason, "transfer failed");
            self.interrupt(id);
            self.changed(&t);
            self.clean_up(&t);
        }
    }

    /// Transfers past the time their sender keeps the file fail, and those that ended
    /// without completing a while ago are forgotten. Returns how long until the next one of
    /// either is due.
    async fn expire(&self) -> Option<Duration> {
        let now = Timestamp::now();
        let Ok(all) = self.inner.db.transfers().await else {
            return None;
        };
        let mut next: Option<Duration> = None;
        for t in all {
            if finished(&t.state) {
                if t.state == "completed" {
                    continue;
                }
                let forget_at = t.updated_at.saturating_add(KEEP_UNFINISHED);
                if forget_at <= now {
                    if let Err(e) = self.inner.db.delete_transfer(&t.id).await {
                        tracing::warn!(error = %e, "cannot forget an old transfer");
                    }
                } else {
                    let left = now.until(forget_at) + Duration::from_millis(5);
                    next = Some(next.map_or(left, |n| n.min(left)));
                }
                continue;
            }
            if t.expires_at >= now {
                let left = now.until(t.expires_at) + Duration::from_millis(5);
                next = Some(next.map_or(left, |n| n.min(left)));
                continue;
            }
            if self.expire_group(&t).await {
                continue;
            }
            let reason = if t.outgoing {
                "the file was kept for [files] keep_secs and nobody finished fetching it"
            } else {
                "the sender no longer keeps the file (it was not fetched in time)"
            };
            self.fail(TransferId::from_bytes(t.id), reason).await;
        }
        next
    }

    /// Answers `/volli/file/1` from `peer`, a device of `user` (a contact or this user).
    pub async fn handle(&self, peer: PeerId, user: UserId, payload: &[u8]) -> Vec<u8> {
        let request = wire::decode::<FileRequest>(payload, Protocol::File.max_request());
        // A file held here for its recipient (files through friends).
        if let Ok(
            r @ (FileRequest::List(id) | FileRequest::Chunk { id, .. } | FileRequest::Channel(id)),
        ) = &request
        {
            match self.held_for(*id, user).await {
                Ok(Some(held)) => return wire::encode(&self.serve_held(peer, &held, r).await),
                Ok(None) => {}
                Err(_) => return wire::encode(&FileResponse::Refused(FileRefusal::Busy)),
            }
        }
        let response = match request {
            Ok(FileRequest::Offer(bytes)) => self.take_offer(Some(peer), user, &bytes).await,
            Ok(FileRequest::Held) => {
                let this = self.clone();
                tokio::spawn(async move { this.fetch_held(user).await });
                FileResponse::Ok
            }
            Ok(FileRequest::List(id)) => match self.serving(id, user).await {
                Ok(Served::Held(s)) => FileResponse::List(s.list.to_bytes()),
                Ok(Served::PassedOn(t)) => match self.pass_on_list(&t, user).await {
                    Ok(list) => FileResponse::List(list.to_bytes()),
                    Err(status) => refusal(status),
                },
                Err(status) => refusal(status),
            },
            Ok(FileRequest::Channel(id)) => self.channel(id, user).await,
            Ok(FileRequest::Chunk { id, index }) => match self.serve_chunk(id, user, index).await {
                Ok(bytes) => {
                    self.pace_relayed(peer, bytes.len()).await;
                    FileResponse::Chunk(bytes)
                }
                Err(status) => refusal(status),
            },
            Ok(FileRequest::Control { id, action }) => self.control(user, id, action).await,
            Err(_) => FileResponse::Refused(FileRefusal::Invalid("malformed request".into())),
        };
        wire::encode(&response)
    }

    /// Takes an offer from `user`, delivered by its device `peer` (or left at a friend's
    /// node, when `None`: then fetched from the device that signed it, or the friend).
    async fn take_offer(&self, peer: Option<PeerId>, user: UserId, bytes: &[u8]) -> FileResponse {
        let invalid = |m: &str| FileResponse::Refused(FileRefusal::Invalid(m.to_owned()));
        let me = self.inner.identity.user_id();
        if let Ok(sealed) = SealedOffer::from_bytes(bytes) {
            let offer = match sealed.open(me, &self.inner.identity.keyring()) {
                Ok(o) => o,
                Err(e) => return invalid(&e.to_string()),
            };
            if offer.sender != user {
                return invalid("the offer is not from the peer's user");
            }
            let meta = FileMeta::of_name(&offer.name);
            // Left at a friend's node: signed by a device its sender still has (or its user
            // key) — a device it revoked offers nothing in its name.
            if peer.is_none()
                && offer
                    .device
                    .is_some_and(|d| !self.inner.peers.is_current_device_of(&user, &d))
            {
                return invalid("signed by a device its sender no longer has");
            }
            let device = peer.or(offer.device);
            return self.record_offer(device, user, offer, None, meta).await;
        }
        // An offer inside a conversation on MLS: known transfers are not opened again
        // (their key is used up), and it is opened only when there is room for it.
        let Ok(volli_core::Mail::Mls(mail)) = volli_core::Mail::from_bytes(bytes) else {
            return invalid("malformed offer");
        };
        if mail.recipient != me || mail.sender != user {
            return invalid("the offer is not for this user, or not from the peer's");
        }
        let id = TransferId::from_bytes(*mail.id.as_bytes());
        match self.inner.db.transfer(id.as_bytes()).await {
            // Taken already — when it is the same sender's.
            Ok(Some(t)) if !t.outgoing && t.peer == user.to_string() => return FileResponse::Ok,
            Ok(Some(_)) => return invalid("another transfer has that id"),
            Ok(None) => {}
            Err(_) => return FileResponse::Refused(FileRefusal::Busy),
        }
        let answer = Arc::new(Mutex::new(None));
        let (this, slot) = (self.clone(), Arc::clone(&answer));
        let opened = self
            .inner
            .conversations
            .open_offer(&mail, user, move |offer, meta| {
                Box::pin(async move {
                    if peer.is_none()
                        && offer
                            .device
                            .is_none_or(|d| !this.inner.peers.is_current_device_of(&user, &d))
                    {
                        *slot.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(FileResponse::Refused(FileRefusal::Invalid(
                                "sent by a device its sender no longer has".into(),
                            )));
                        return false;
                    }
                    let device = peer.or(offer.device);
                    let response = this.record_offer(device, user, offer, None, meta).await;
                    let ok = response == FileResponse::Ok;
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(response);
                    ok
                })
            })
            .await;
        let recorded = answer.lock().unwrap_or_else(|e| e.into_inner()).take();
        match (opened, recorded) {
            (_, Some(response)) => response,
            (Err(e), None) => invalid(&e.to_string()),
            (Ok(()), None) => FileResponse::Ok,
        }
    }

    /// Records an opened offer from `user`, to be fetched from its device `peer` (or, in
    /// `group`, from the member who carries its mail when `peer` is `None`), within the quotas.
    async fn record_offer(
        &self,
        peer: Option<PeerId>,
        user: UserId,
        offer: FileOffer,
        group: Option<String>,
        meta: FileMeta,
    ) -> FileResponse {
        let now = Timestamp::now();
        if offer.expires_at <= now {
            return FileResponse::Refused(FileRefusal::Gone);
        }
        let _guard = self.inner.changes.lock().await;
        match self.inner.db.transfer(offer.id.as_bytes()).await {
            // Known: taken already — when it is the same sender's.
            Ok(Some(t)) if !t.outgoing && t.peer == user.to_string() => return FileResponse::Ok,
            Ok(Some(_)) => {
                return FileResponse::Refused(FileRefusal::Invalid(
                    "another transfer has that id".into(),
                ));
            }
            Ok(None) => {}
            Err(_) => return FileResponse::Refused(FileRefusal::Busy),
        }
        let Ok(all) = self.inner.db.transfers().await else {
            return FileResponse::Refused(FileRefusal::Busy);
        };
        let incoming = all.iter().filter(|t| !t.outgoing);
        let from_user = incoming.clone().filter(|t| t.peer == user.to_string());
        let pending = from_user.clone().filter(|t| t.state == "offered").count();
        if pending >= MAX_PENDING_OFFERS
            || from_user.count() >= MAX_PER_CONTACT
            || incoming.count() >= MAX_TRANSFERS
        {
            return FileResponse::Refused(FileRefusal::Busy);
        }
        let row = TransferRow {
            id: *offer.id.as_bytes(),
            outgoing: false,
            peer: user.to_string(),
            device: peer.map(|p| p.to_string()),
            name: offer.name.clone(),
            size: offer.layout.size(),
            chunk_size: offer.layout.chunk_size(),
            list_hash: offer.list,
            blake3: offer.blake3,
            file_key: *offer.key.as_bytes(),
            source: None,
            list: None,
            sealed_offer: None,
            state: "offered".into(),
            paused_here: false,
            paused_there: false,
            delivered: true,
            notify: None,
            bytes_done: 0,
            error: None,
            created_at: offer.created_at.min(now),
            expires_at: offer.expires_at.min(now.saturating_add(MAX_OFFER_LIFE)),
            updated_at: now,
            chunk_ids_per_transfer: true,
            group: group.clone(),
        };
        if self.inner.db.insert_transfer(&row).await.is_err() {
            return FileResponse::Refused(FileRefusal::Busy);
        }
        // In its conversation's timeline (a file between this user's own devices has none).
        let at = match &group {
            Some(g) => crate::conversations::parse_group(g).map(crate::timeline::Where::Group),
            None if user != self.inner.identity.user_id() => {
                Some(crate::timeline::Where::Direct(user))
            }
            None => None,
        };
        if let Some(at) = at {
            self.put_file_item(
                at,
                user,
                &row,
                &meta,
                volli_store::vault::MessageStatus::Received,
            )
            .await;
        }
        self.inner.wake.notify_one();
        self.inner.events.publish(Event::TransferOffered {
            id: offer.id.to_string(),
            from: user.to_string(),
            name: offer.name.clone(),
            size: offer.layout.size(),
            group,
        });
        drop(_guard);
        if self.auto_accepts(user, offer.layout.size()).await {
            let this = self.clone();
            let id = offer.id;
            tokio::spawn(async move {
                if let Err(e) = this.accept(id).await {
                    tracing::info!(transfer = %id, error = %e, "not accepted automatically");
                }
            });
        }
        FileResponse::Ok
    }

    /// Whether the user set files from `user` up to `size` bytes to be accepted at once:
    /// the setting is a number (for everyone) or an object of user ids (and `"*"`) to sizes.
    async fn auto_accepts(&self, user: UserId, size: u64) -> bool {
        let Ok(Some(value)) = self.inner.vault.setting(AUTO_ACCEPT_SETTING).await else {
            return false;
        };
        let limit = match &value {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::Object(m) => m
                .get(&user.to_string())
                .or_else(|| m.get("*"))
                .and_then(serde_json::Value::as_u64),
            _ => None,
        };
        limit.is_some_and(|l| size <= l)
    }

    async fn channel(&self, id: TransferId, user: UserId) -> FileResponse {
        match self.serving(id, user).await {
            Ok(Served::Held(_)) => {}
            // Passed on over `/volli/file/1` only: the fetcher falls back to it.
            Ok(Served::PassedOn(_)) => {
                return FileResponse::Refused(FileRefusal::Invalid(
                    "this member passes the file on without holding it".into(),
                ));
            }
            Err(status) => return refusal(status),
        }
        let Some(listener) = self.inner.bulk.as_ref().filter(|l| l.is_listening()) else {
            return FileResponse::Refused(FileRefusal::Invalid("no bulk channel here".into()));
        };
        let ips = own_ips(&self.inner.net.listen_addrs().await);
        match listener.issue(id, user, &ips) {
            Some((ticket, key, addrs)) => FileResponse::Channel { ticket, key, addrs },
            None => FileResponse::Refused(FileRefusal::Busy),
        }
    }

    /// What the sender needs at hand to serve `id` to `user`, loaded once; or, for a
    /// group file this member does not hold whole, that it passes it on.
    async fn serving(
        &self,
        id: TransferId,
        user: UserId,
    ) -> Result<Served, volli_core::transfer::bulk::Status> {
        use volli_core::transfer::bulk::Status;
        let cached = self.lock_serving().get(&id).cloned();
        if let Some(s) = cached {
            return match s.peer {
                Some(peer) if peer == user => Ok(Served::Held(s)),
                Some(_) => Err(Status::Gone),
                None => self.admit(id, s, user).await.map(Served::Held),
            };
        }
        let _guard = self.inner.changes.lock().await;
        let mut t = match self.inner.db.transfer(id.as_bytes()).await {
            Ok(Some(t)) if t.outgoing && t.peer == user.to_string() => t,
            Ok(Some(t)) if t.group.is_some() && self.may_fetch_group(&t, user).await => t,
            Ok(_) => return Err(Status::Gone),
            Err(_) => return Err(Status::Busy),
        };
        let expired = t.expires_at < Timestamp::now();
        // A member serves a group file it received from what it holds once it has it
        // whole, and passes it on until then, whatever its user decided: where it comes
        // from answers for the sender (who may have cancelled it).
        let passed_on = !t.outgoing;
        if passed_on && t.state != "completed" {
            return if expired {
                Err(Status::Gone)
            } else {
                Ok(Served::PassedOn(Box::new(t)))
            };
        }
        if t.state == "cancelled" {
            return Err(Status::Cancelled);
        }
        if (finished(&t.state) && !passed_on) || expired {
            return Err(Status::Gone);
        }
        if t.paused_here {
            return Err(Status::Paused);
        }
        // Asking for the list or a chunk implies the offer was accepted, even if the
        // acceptance itself has not arrived (yet).
        if t.state == "offered" {
            t.state = "running".into();
            t.delivered = true;
            t.updated_at = Timestamp::now();
            let _ = self.inner.db.save_transfer(&t).await;
            self.changed(&t);
        }
        let layout = Layout::new(t.size, t.chunk_size).map_err(|_| Status::Gone)?;
        let list = t
            .list
            .as_deref()
            .and_then(|b| ChunkList::from_bytes(&layout, b).ok())
            .ok_or(Status::Gone)?;
        let source = match &t.source {
            Some(path) => match std::fs::File::open(path) {
                Ok(f) => Some(f),
                Err(e) => {
                    drop(_guard);
                    self.fail(
                        id,
                        &format!("the file is no longer readable at {path}: {e}"),
                    )
                    .await;
                    return Err(Status::Gone);
                }
            },
            None => None,
        };
        let chunks = layout.chunks() as usize;
        let serving = Arc::new(Serving {
            layout,
            key: FileKey::from_bytes(t.file_key),
            list,
            chunk_ids: ChunkIds::of(&t),
            peer: t.group.is_none().then_some(user),
            admitted: Mutex::new(std::iter::once(user).collect()),
            source,
            sent: Mutex::new(vec![false; chunks]),
            sent_bytes: std::sync::atomic::AtomicU64::new(0),
            saved_at: Mutex::new(Instant::now()),
            members: (t.group.is_some() && t.outgoing).then(|| Mutex::new(HashMap::new())),
        });
        self.lock_serving().insert(id, Arc::clone(&serving));
        Ok(Served::Held(serving))
    }

    /// One ciphertext chunk of an outgoing transfer, for `user`.
    pub(crate) async fn serve_chunk(
        &self,
        id: TransferId,
        user: UserId,
        index: u32,
    ) -> Result<Vec<u8>, volli_core::transfer::bulk::Status> {
        use volli_core::transfer::bulk::Status;
        let s = match self.serving(id, user).await? {
            Served::Held(s) => s,
            Served::PassedOn(t) => match self.pass_on_chunk(&t, user, index).await {
                Ok(data) => {
                    self.throttle(data.len()).await;
                    return Ok(data);
                }
                // Gone where it came from: this node may have received it whole since.
                Err(Status::Gone) => match self.serving(id, user).await? {
                    Served::Held(s) => s,
                    Served::PassedOn(_) => return Err(Status::Gone),
                },
                Err(status) => return Err(status),
            },
        };
        let name = *s.list.get(index).ok_or(Status::Gone)?;
        let len = s.layout.cipher_len(index);
        let data = if s.source.is_some() {
            let s2 = Arc::clone(&s);
            let made = tokio::task::spawn_blocking(move || {
                prepare::read_chunk(&s2.layout, &s2.key, s2.source.as_ref(), index)
                    .map(|data| (*blake3::hash(&data).as_bytes() == name, data))
            })
            .await
            .map_err(|_| Status::Busy)?;
            match made {
                Ok((true, data)) => data,
                Ok((false, _)) => {
                    self.fail(id, "the file changed after it was offered").await;
                    return Err(Status::Gone);
                }
                Err(e) => {
                    self.fail(id, &format!("the file can no longer be read: {e}"))
                        .await;
                    return Err(Status::Gone);
                }
            }
        } else {
            let backend = self.backend().map_err(|_| Status::Busy)?;
            let data = backend
                .get(
                    &s.chunk_ids.id(&name),
                    0,
                    u32::try_from(len).unwrap_or(u32::MAX),
                )
                .await
                .map_err(|_| Status::Busy)?;
            if data.len() != len {
                return Err(Status::Busy);
            }
            data
        };
        self.throttle(data.len()).await;
        self.sent(id, &s, index);
        self.member_fetched(id, &s, user, index);
        Ok(data)
    }

    /// Waits for the send rate cap, if one is set.
    async fn throttle(&self, bytes: usize) {
        let Some(rate) = &self.inner.rate else { return };
        let wait = rate.lock().unwrap_or_else(|e| e.into_inner()).take(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Holds a chunk for `peer` back to the rate of the friend's relay it travels through,
    /// when it does: a relay's owner lends it at the rate they set (`[network] relay_rate`),
    /// and a file must not crowd out everything else its circuits carry.
    async fn pace_relayed(&self, peer: PeerId, bytes: usize) {
        let via = match self.inner.peers.get(&peer).and_then(|e| e.path) {
            Some(crate::peers::Path::Relayed { via }) => via,
            _ => return,
        };
        crate::metrics::metrics().relayed(bytes);
        let rate = self.inner.connectivity.relay_rate(via) as f64;
        let wait = {
            let mut relayed = self.inner.relayed.lock().unwrap_or_else(|e| e.into_inner());
            if relayed.len() > 1024 {
                relayed.clear();
            }
            let bucket = relayed.entry(peer).or_insert_with(|| Bucket {
                rate,
                tokens: 0.0,
                at: Instant::now(),
            });
            bucket.rate = rate;
            bucket.take(bytes)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// A member of a group transfer's group asks for it: admitted once it is found in
    /// the group (and while the transfer is served).
    async fn admit(
        &self,
        id: TransferId,
        s: Arc<Serving>,
        user: UserId,
    ) -> Result<Arc<Serving>, volli_core::transfer::bulk::Status> {
        use volli_core::transfer::bulk::Status;
        if s.admitted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&user)
        {
            return Ok(s);
        }
        match self.inner.db.transfer(id.as_bytes()).await {
            Ok(Some(t)) if self.may_fetch_group(&t, user).await => {
                s.admitted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(user);
                Ok(s)
            }
            Ok(_) => Err(Status::Gone),
            Err(_) => Err(Status::Busy),
        }
    }

    /// Counts a chunk of a file this node offered to a group as fetched by `member`: its
    /// progress (`members` in the transfer), and the transfer's, as far as the members that
    /// fetch it got on average.
    fn member_fetched(&self, id: TransferId, s: &Serving, member: UserId, index: u32) {
        let Some(members) = &s.members else { return };
        let chunks = s.layout.chunks() as usize;
        let (mine, average) = {
            let mut members = members.lock().unwrap_or_else(|e| e.into_inner());
            let (got, bytes) = members
                .entry(member)
                .or_insert_with(|| (vec![false; chunks], 0));
            match got.get_mut(index as usize) {
                Some(b) if !*b => {
                    *b = true;
                    *bytes += s.layout.plain_range(index).1 as u64;
                }
                _ => return,
            }
            let mine = *bytes;
            let total: u64 = members.values().map(|(_, b)| *b).sum();
            (mine, total / members.len().max(1) as u64)
        };
        let size = s.layout.size();
        self.progress(id, average.min(size), size);
        // Kept now and then (every chunk at the end), for `GET /v1/transfers`.
        let save = mine == size || {
            let mut at = s.saved_at.lock().unwrap_or_else(|e| e.into_inner());
            if at.elapsed() >= Duration::from_millis(500) {
                *at = Instant::now();
                true
            } else {
                false
            }
        };
        if save {
            let db = self.inner.db.clone();
            tokio::spawn(async move {
                let _ = db
                    .transfer_member_progress(id.as_bytes(), &member.to_string(), mine)
                    .await;
                let _ = db.transfer_progress(id.as_bytes(), average.min(size)).await;
            });
        }
    }

    /// Counts a chunk as sent, for the sender's progress (a group's members each fetch
    /// every chunk: theirs is in what they report).
    fn sent(&self, id: TransferId, s: &Serving, index: u32) {
        use std::sync::atomic::Ordering;
        if s.peer.is_none() {
            return;
        }
        let first = {
            let mut sent = s.sent.lock().unwrap_or_else(|e| e.into_inner());
            match sent.get_mut(index as usize) {
                Some(b) if !*b => {
                    *b = true;
                    true
                }
                _ => false,
            }
        };
        if !first {
            return;
        }
        let (_, len) = s.layout.plain_range(index);
        let done = s.sent_bytes.fetch_add(len as u64, Ordering::Relaxed) + len as u64;
        self.progress(id, done.min(s.layout.size()), s.layout.size());
        let save = {
            let mut at = s.saved_at.lock().unwrap_or_else(|e| e.into_inner());
            if at.elapsed() >= Duration::from_secs(1) {
                *at = Instant::now();
                true
            } else {
                false
            }
        };
        if save {
            let db = self.inner.db.clone();
            tokio::spawn(async move {
                if let Ok(Some(mut t)) = db.transfer(id.as_bytes()).await
                    && t.state == "running"
                    && done > t.bytes_done
                {
                    t.bytes_done = done;
                    let _ = db.save_transfer(&t).await;
                }
            });
        }
    }

    /// A state change from the other side.
    async fn control(&self, user: UserId, id: TransferId, action: FileAction) -> FileResponse {
        let guard = self.inner.changes.lock().await;
        let mut t = match self.inner.db.transfer(id.as_bytes()).await {
            Ok(Some(t)) if t.outgoing && t.group.is_some() => {
                // It takes the lock itself when it ends the transfer.
                drop(guard);
                return self.group_control(t, user, action).await;
            }
            Ok(Some(t)) if t.peer == user.to_string() => t,
            Ok(_) => return FileResponse::Refused(FileRefusal::Unknown),
            Err(_) => return FileResponse::Refused(FileRefusal::Busy),
        };
        let before = (t.state.clone(), t.paused_there);
        match (t.outgoing, action) {
            (true, FileAction::Accept) if t.state == "offered" => {
                t.state = "running".into();
                t.delivered = true;
            }
            (true, FileAction::Decline) if t.state == "offered" => t.state = "declined".into(),
            (true, FileAction::Done(hash)) if !finished(&t.state) => {
                if hash == t.blake3 {
                    t.state = "completed".into();
                    t.bytes_done = t.size;
                } else {
                    t.state = "failed".into();
                    t.error = Some("the recipient reports another hash for the file".into());
                }
            }
            (_, FileAction::Pause) if !finished(&t.state) => t.paused_there = true,
            (_, FileAction::Resume) if !finished(&t.state) => t.paused_there = false,
            (_, FileAction::Cancel) if !finished(&t.state) => {
                t.state = "cancelled".into();
                t.error = Some("cancelled by the other side".into());
            }
            _ => {}
        }
        if (t.state.clone(), t.paused_there) == before {
            return FileResponse::Ok;
        }
        t.updated_at = Timestamp::now();
        if self.inner.db.save_transfer(&t).await.is_err() {
            return FileResponse::Refused(FileRefusal::Busy);
        }
        drop(guard);
        if t.paused_there || finished(&t.state) {
            self.interrupt(id);
        }
        if finished(&t.state) {
            self.clean_up(&t);
        }
        if !t.outgoing && t.state == "running" && !t.paused_there && !t.paused_here {
            self.start_download(id, user);
        }
        self.changed(&t);
        FileResponse::Ok
    }
}

/// The offer of outgoing transfer `t`, as it goes inside a conversation or a group.
pub(crate) fn offer_content(t: &TransferRow) -> Option<volli_core::OfferContent> {
    Some(volli_core::OfferContent {
        id: TransferId::from_bytes(t.id),
        name: t.name.clone(),
        layout: Layout::new(t.size, t.chunk_size).ok()?,
        list: t.list_hash,
        blake3: t.blake3,
        key: FileKey::from_bytes(t.file_key),
        created_at: t.created_at,
        expires_at: t.expires_at,
    })
}

fn refusal(status: volli_core::transfer::bulk::Status) -> FileResponse {
    use volli_core::transfer::bulk::Status;
    FileResponse::Refused(match status {
        Status::Paused => FileRefusal::Paused,
        Status::Gone => FileRefusal::Unknown,
        Status::Cancelled => FileRefusal::Cancelled,
        Status::Busy | Status::Ok => FileRefusal::Busy,
    })
}

fn parse_action(name: &str, t: &TransferRow) -> Option<FileAction> {
    Some(match name {
        "accept" => FileAction::Accept,
        "decline" => FileAction::Decline,
        "pause" => FileAction::Pause,
        "resume" => FileAction::Resume,
        "cancel" => FileAction::Cancel,
        "done" => FileAction::Done(t.blake3),
        _ => return None,
    })
}

fn action_name(action: FileAction) -> &'static str {
    match action {
        FileAction::Accept => "accept",
        FileAction::Decline => "decline",
        FileAction::Pause => "pause",
        FileAction::Resume => "resume",
        FileAction::Cancel => "cancel",
        FileAction::Done(_) => "done",
    }
}

/// The bulk listener's default addresses: the IPs of the TCP libp2p listen addresses, each
/// on a port the system picks.
fn bulk_addrs_for(p2p: &[Multiaddr]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for addr in p2p {
        let mut ip = None;
        let mut tcp = false;
        for part in addr.iter() {
            match part {
                Ma::Ip4(a) => ip = Some(IpAddr::V4(a)),
                Ma::Ip6(a) => ip = Some(IpAddr::V6(a)),
                Ma::Tcp(_) => tcp = true,
                _ => {}
            }
        }
        if let (Some(ip), true) = (ip, tcp) {
            let s = SocketAddr::new(ip, 0);
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

/// This node's IPs, from its listen addresses.
fn own_ips(addrs: &[Multiaddr]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    // A listen address through a relay starts with the relay's IP: not one of ours.
    for addr in addrs
        .iter()
        .filter(|a| !a.iter().any(|p| p == Ma::P2pCircuit))
    {
        let ip = match addr.iter().next() {
            Some(Ma::Ip4(a)) => IpAddr::V4(a),
            Some(Ma::Ip6(a)) => IpAddr::V6(a),
            _ => continue,
        };
        if !ip.is_unspecified() && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// What transfers hold in the file backend.
#[derive(Debug, Default)]
pub struct Storage {
    /// Files held (sent files not yet fetched that were uploaded, received ones).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// When the first unfinished transfer expires.
    pub next_expiry: Option<Timestamp>,
}

/// Whether the backend holds (or is filling) `t`'s bytes: an upload not yet fetched, or a
/// received file.
fn holds(t: &TransferRow) -> bool {
    if t.outgoing {
        t.source.is_none() && matches!(t.state.as_str(), "offered" | "running")
    } else {
        matches!(t.state.as_str(), "running" | "completed")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_bulk_listener_follows_the_tcp_listen_addresses() {
        let p2p: Vec<Multiaddr> = vec![
            "/ip4/0.0.0.0/tcp/8471".parse().unwrap(),
            "/ip4/0.0.0.0/udp/8471/quic-v1".parse().unwrap(),
            "/ip6/::1/tcp/9000".parse().unwrap(),
        ];
        assert_eq!(
            bulk_addrs_for(&p2p),
            vec![
                "0.0.0.0:0".parse::<SocketAddr>().unwrap(),
                "[::1]:0".parse().unwrap()
            ]
        );
    }
}
