//! Messages of the application protocols, encoded with postcard. Each parser bounds its
//! input and refuses trailing bytes.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cert::DeviceCertificate;

/// The longest a message is kept trying, and held by a friend's relay: 7 days.
pub const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Why bytes from a peer were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed protocol message")]
pub struct WireError;

/// Encodes a message.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    postcard::to_allocvec(message).unwrap_or_else(|_| unreachable!("postcard encodes to a Vec"))
}

/// Decodes a message of at most `max` bytes, with nothing after it.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, WireError> {
    if bytes.len() > max {
        return Err(WireError);
    }
    match postcard::take_from_bytes(bytes) {
        Ok((message, [])) => Ok(message),
        _ => Err(WireError),
    }
}

/// `/volli/hello/1`, both ways: the sender's device certificate, so the receiver can bind
/// the (Noise-authenticated) peer id to a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version.
    pub version: u8,
    /// The sender's certificate, encoded.
    pub certificate: DeviceCertificate,
}

/// `/volli/invite/1` request: redeem an invite.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedeemRequest {
    /// Protocol version.
    pub version: u8,
    /// The invite's one-time secret.
    pub secret: [u8; 16],
    /// The invitee's contact card, encoded.
    #[serde(with = "crate::encoding::bytes")]
    pub card: Vec<u8>,
}

/// `/volli/invite/1` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedeemResponse {
    /// Redeemed: the inviter's contact card, encoded.
    Accepted {
        /// The card.
        #[serde(with = "crate::encoding::bytes")]
        card: Vec<u8>,
    },
    /// The invite has expired.
    Expired,
    /// The invite has been used up.
    Used,
    /// No such invite, or the request was refused.
    Refused {
        /// Why.
        reason: String,
    },
}

/// `/volli/msg/1` request: an envelope for the receiving node's user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliver {
    /// Protocol version.
    pub version: u8,
    /// The encoded [`crate::Envelope`].
    #[serde(with = "crate::encoding::bytes")]
    pub envelope: Vec<u8>,
}

/// `/volli/msg/1` request of version 2: several pieces of mail in one go (only mail of
/// conversations on MLS, which nodes that take it both speak). Told apart from [`Deliver`]
/// by its first byte.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverMany {
    /// Protocol version: 2.
    pub version: u8,
    /// The encoded mail, at most [`crate::envelope::MAX_BATCH`].
    #[serde(with = "crate::encoding::bytes_list")]
    pub mail: Vec<Vec<u8>>,
}

/// A [`Delivered::Refused`] reason: a message of a conversation on MLS that arrived before
/// the commit or the Welcome it depends on. The recipient keeps it and reads it once that
/// arrives; the sender tries again soon, without holding the recipient unreachable.
pub const REFUSED_WAITING: &str = "it waits for the commit or the Welcome it depends on";

/// A [`Delivered::Refused`] reason: a message of a conversation on MLS under keys the
/// recipient no longer holds (it arrived after too many later messages, or from an epoch
/// past), and not stored before. The sender seals its content again, in the conversation
/// as it is now, under the same id.
pub const REFUSED_SEAL_AGAIN: &str = "sealed under keys no longer held; seal it again";

/// `/volli/msg/1` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delivered {
    /// Stored (now or before): the recipient's signed receipt.
    Receipt(Box<crate::Receipt>),
    /// Not accepted, with a reason (the sender keeps trying until the message expires: a
    /// contact whose invite just completed may not know the sender yet).
    Refused(String),
    /// Too many messages; retry after this many seconds.
    RateLimited(u32),
    /// The answer to [`DeliverMany`]: one receipt for everything stored, and what was not
    /// (by position in the request).
    Many {
        /// The receipt for what was stored (absent when nothing was).
        receipt: Option<Box<crate::ReceiptBatch>>,
        /// Positions not stored, with why.
        refused: Vec<(u16, String)>,
    },
}

/// `/volli/relay/1` requests: a friend's node as a blind mailbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayRequest {
    /// Hold an envelope for its recipient. `ticket` is the recipient's signed contact card,
    /// which lists the relay's user among the recipient's relays: the recipient's consent.
    Deposit {
        /// The encoded envelope.
        #[serde(with = "crate::encoding::bytes")]
        envelope: Vec<u8>,
        /// The recipient's encoded contact card.
        #[serde(with = "crate::encoding::bytes")]
        ticket: Vec<u8>,
        /// How long to hold it, in seconds.
        ttl_secs: u32,
    },
    /// Hand over envelopes held for the requesting user (at most `limit`).
    Fetch {
        /// Envelopes wanted at most.
        limit: u16,
    },
    /// The requesting user has these envelopes (by digest): delete them.
    Ack {
        /// Envelope digests.
        ids: Vec<[u8; 32]>,
    },
    /// Would this node hold envelopes for the requesting user?
    Volunteer,
    /// The requesting user's newer contact card (devices, relays).
    Card(#[serde(with = "crate::encoding::bytes")] Vec<u8>),
    /// Receipts the requesting user signed for messages it fetched here, to hold for their
    /// senders: a receipt reaches a sender who is never online with its recipient.
    DepositReceipts {
        /// Signed receipts.
        receipts: Vec<crate::Receipt>,
    },
    /// Hand over receipts held for the requesting user as a sender (at most `limit`).
    FetchReceipts {
        /// Receipts wanted at most.
        limit: u16,
    },
    /// The requesting user has these receipts (by message id): delete them.
    AckReceipts {
        /// Message ids.
        ids: Vec<crate::MessageId>,
    },
    /// Like `Fetch`, from where an earlier page ended: a device acknowledges only what it
    /// stored, so what it could not open (yet) stays held, and the next page goes past it.
    FetchAfter {
        /// Envelopes wanted at most.
        limit: u16,
        /// Where the previous page ended (`None`: from the start).
        after: Option<PageCursor>,
    },
    /// Like `FetchReceipts`, from where an earlier page ended.
    FetchReceiptsAfter {
        /// Receipts wanted at most.
        limit: u16,
        /// Where the previous page ended (`None`: from the start).
        after: Option<PageCursor>,
    },
    /// Would this node relay connections for the requesting device (it is reachable from
    /// outside, and its circuit relay is on)? Asked by a node behind a NAT.
    CircuitOffer,
    /// Mail waits at the asking node for this user (envelopes for it, or receipts for its
    /// messages): fetch it. A relay says so to its connected recipients as soon as it holds
    /// something for them, so they need not ask every minute. Answered with `Ok`.
    Waiting,
    /// The asking user's profile picture, unless it is the one with this BLAKE3 hash (the
    /// asker holds it already). Answered with `Avatar`. Asked by contacts and by the user's
    /// own devices; a node of an earlier release refuses it as malformed.
    Avatar {
        /// The hash of the picture the asker holds, if any.
        have: Option<[u8; 32]>,
    },
    /// The sending user's profile picture changed (to the one with this hash; `None`: it has
    /// none now): ask for it with `Avatar`. Answered with `Ok`.
    AvatarChanged {
        /// The new picture's BLAKE3 hash.
        hash: Option<[u8; 32]>,
    },
}

/// Where a page of what a relay holds ended: when it was stored and its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageCursor {
    /// When the last item of the page was stored (ms since the epoch).
    pub at: i64,
    /// Its id (an envelope's digest, a receipt's message id).
    #[serde(with = "crate::encoding::bytes")]
    pub id: Vec<u8>,
}

/// `/volli/relay/1` responses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayResponse {
    /// Held until this time.
    Held {
        /// Expiry.
        expires_at: crate::Timestamp,
    },
    /// Envelopes held for the requester, and whether more remain.
    Envelopes {
        /// Encoded envelopes.
        #[serde(with = "crate::encoding::bytes_list")]
        envelopes: Vec<Vec<u8>>,
        /// More are held.
        more: bool,
    },
    /// Done.
    Ok,
    /// Refused, with a reason.
    Refused(String),
    /// Too many requests; retry after this many seconds.
    RateLimited(u32),
    /// Receipts held for the requester, and whether more remain.
    Receipts {
        /// Signed receipts.
        receipts: Vec<crate::Receipt>,
        /// More are held.
        more: bool,
    },
    /// A page of envelopes (`FetchAfter`), and where the next one starts if more remain.
    EnvelopePage {
        /// Encoded envelopes.
        #[serde(with = "crate::encoding::bytes_list")]
        envelopes: Vec<Vec<u8>>,
        /// Where to go on from.
        next: Option<PageCursor>,
    },
    /// A page of receipts (`FetchReceiptsAfter`), and where the next one starts.
    ReceiptPage {
        /// Signed receipts.
        receipts: Vec<crate::Receipt>,
        /// Where to go on from.
        next: Option<PageCursor>,
    },
    /// Yes to `CircuitOffer`: where to reserve a slot, and the rate each circuit may carry.
    CircuitOffer {
        /// This node's addresses reachable from outside (encoded multiaddrs).
        #[serde(with = "crate::encoding::bytes_list")]
        addrs: Vec<Vec<u8>>,
        /// Bytes per second one circuit through this node may carry.
        bytes_per_sec: u64,
    },
    /// The answering user's profile picture (`Avatar`): its hash and media type, and its
    /// bytes unless the asker holds it already. `hash` is `None` when there is none.
    Avatar {
        /// The BLAKE3 hash of the bytes.
        hash: Option<[u8; 32]>,
        /// `image/png`, `image/jpeg` or `image/webp`.
        mime: String,
        /// The picture (empty when the asker has it, or when it is not on this device).
        #[serde(with = "crate::encoding::bytes")]
        bytes: Vec<u8>,
    },
}

/// `/volli/hold/1` requests: what a friend's node holds for a contact beyond mail — the
/// shares of the contact's backup (see [`crate::backup`]). `Offer`, `Put`, `Have` and `Keep`
/// come from the contact's own devices; `Find` and `Get` from anyone who proves it holds the
/// backup's phrase (a new device restoring from it, a stranger to the holder).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldRequest {
    /// How much backup space does this node offer the asking user, and how much is used?
    Offer,
    /// Keep this piece of the asking user's backup filed under `locator` (a shard of a blob,
    /// or the sealed manifest under [`crate::backup::MANIFEST_PIECE`], which replaces the
    /// one kept before).
    Put {
        /// The backup's locator.
        locator: [u8; 32],
        /// The piece: a blob id, or the manifest's.
        piece: [u8; 16],
        /// Its bytes.
        #[serde(with = "crate::encoding::bytes")]
        bytes: Vec<u8>,
    },
    /// Which pieces are kept under `locator` for the asking user?
    Have {
        /// The backup's locator.
        locator: [u8; 32],
    },
    /// Keep only these pieces for the asking user (under `locator`; anything it kept under
    /// another locator goes too).
    Keep {
        /// The backup's locator.
        locator: [u8; 32],
        /// The pieces to keep.
        pieces: Vec<[u8; 16]>,
    },
    /// The manifest kept under the locator `proof` opens, if any.
    Find {
        /// Proof of the phrase, for this holder.
        proof: crate::backup::AccessProof,
    },
    /// A piece kept under the locator `proof` opens.
    Get {
        /// Proof of the phrase, for this holder.
        proof: crate::backup::AccessProof,
        /// The piece.
        piece: [u8; 16],
    },
    /// Hold file `id`, offered by the asking user to `recipient`, who is offline, until the
    /// recipient fetches it (or `expires_at`). `ticket` is the recipient's signed contact card
    /// listing this node's user among its relays: its consent. The holder cannot open `offer`
    /// (sealed to the recipient); it checks each chunk against `list` (BLAKE3 names of the
    /// ciphertext chunks). Answered with `FileHave`: the chunks held already.
    File {
        /// The recipient.
        recipient: crate::UserId,
        /// The transfer.
        id: crate::transfer::TransferId,
        /// The sealed offer, as it would go to the recipient.
        #[serde(with = "crate::encoding::bytes")]
        offer: Vec<u8>,
        /// The recipient's encoded contact card.
        #[serde(with = "crate::encoding::bytes")]
        ticket: Vec<u8>,
        /// Plaintext size.
        size: u64,
        /// Plaintext bytes per chunk.
        chunk_size: u32,
        /// The encoded chunk list.
        #[serde(with = "crate::encoding::bytes")]
        list: Vec<u8>,
        /// Held no longer than this.
        expires_at: crate::Timestamp,
    },
    /// One ciphertext chunk of a file deposited with `File`.
    FileChunk {
        /// The transfer.
        id: crate::transfer::TransferId,
        /// Which chunk.
        index: u32,
        /// Its bytes.
        #[serde(with = "crate::encoding::bytes")]
        bytes: Vec<u8>,
    },
    /// Which files are held here for the asking user, whole? Answered with `HeldFiles`.
    FilesHeld,
    /// The asking user (the file's recipient, or its depositor) is done with file `id`: drop it.
    FileDone(crate::transfer::TransferId),
}

/// A file a friend's node holds for the asking user ([`HoldRequest::FilesHeld`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldFile {
    /// Who deposited it (the offer's sender, as the holder knows it).
    pub from: crate::UserId,
    /// The sealed offer.
    #[serde(with = "crate::encoding::bytes")]
    pub offer: Vec<u8>,
}

/// `/volli/hold/1` responses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldResponse {
    /// The space offered to the asking user, and what it uses of it (0 offered: none).
    Offered {
        /// Bytes offered.
        offer: u64,
        /// Bytes used.
        used: u64,
    },
    /// Done.
    Ok,
    /// Refused, with a reason.
    Refused(String),
    /// Refused: the piece would take the asking user past what is offered.
    OverQuota {
        /// Bytes offered.
        offer: u64,
        /// Bytes used.
        used: u64,
    },
    /// Too many requests; retry after this many seconds.
    RateLimited(u32),
    /// The pieces kept under a locator.
    Pieces(Vec<[u8; 16]>),
    /// A piece's (or the manifest's) bytes.
    Piece(#[serde(with = "crate::encoding::bytes")] Vec<u8>),
    /// Nothing is kept here under that locator (or that piece).
    NotHere,
    /// The chunks of a deposited file held already (`File`); the rest is to come.
    FileHave(Vec<u32>),
    /// Files held for the asking user (`FilesHeld`).
    HeldFiles(Vec<HeldFile>),
}

/// `/volli/pair/1` requests: a new node pairing with an existing device of a user (see
/// [`crate::pairing`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PairRequest {
    /// Is a pairing session waiting behind this nameplate? (Reveals nothing else.)
    Probe {
        /// The code's public part.
        nameplate: u16,
    },
    /// Starts the exchange.
    Start {
        /// The session, by link or by nameplate.
        session: crate::pairing::SessionRef,
        /// The joiner's SPAKE2 message.
        #[serde(with = "crate::encoding::bytes")]
        spake: Vec<u8>,
        /// The name the new device wants to be known by.
        device_name: String,
        /// An X-Wing public key made for this exchange: what is handed over is sealed to it.
        #[serde(with = "crate::encoding::bytes")]
        reply_key: Vec<u8>,
    },
    /// The joiner's key confirmation.
    Confirm {
        /// The session id.
        session: [u8; 16],
        /// Its confirmation.
        confirmation: [u8; 32],
    },
    /// Waits (a while) for the user's decision on the existing device.
    Wait {
        /// The session id.
        session: [u8; 16],
    },
}

/// `/volli/pair/1` responses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PairResponse {
    /// Whether a session waits behind the nameplate asked for.
    Present(bool),
    /// The existing device's side of the exchange.
    Started {
        /// The session id.
        session: [u8; 16],
        /// Its SPAKE2 message.
        #[serde(with = "crate::encoding::bytes")]
        spake: Vec<u8>,
        /// Its key confirmation.
        confirmation: [u8; 32],
    },
    /// The joiner's confirmation holds: the user is asked.
    Confirmed,
    /// No decision yet.
    Pending,
    /// Approved: the bundle, sealed with HPKE to the joiner's reply key.
    Approved {
        /// The HPKE encapsulation.
        #[serde(with = "crate::encoding::bytes")]
        encapped: Vec<u8>,
        /// The sealed [`PairBundle`].
        #[serde(with = "crate::encoding::bytes")]
        bundle: Vec<u8>,
    },
    /// The user said no.
    Rejected,
    /// The session expired.
    Expired,
    /// The session was used (or burnt by a wrong guess).
    Used,
    /// Refused, with a reason.
    Refused(String),
    /// Busy with other attempts (or this peer asked too often): try again in this many
    /// seconds. The session is still open.
    RetryLater(u32),
}

/// What a new device receives when its pairing is approved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairBundle {
    /// The user it joins.
    pub user: crate::UserId,
    /// The user's master secret, for an `admin` device.
    pub master: Option<[u8; 32]>,
    /// The X-Wing key seeds `(generation, seed)`, for a device with `messages`.
    pub kem_seeds: Vec<(u32, [u8; 32])>,
    /// The user's certificate for the new device.
    pub certificate: DeviceCertificate,
    /// The user's contacts, settings and devices documents the device may hold (an encoded
    /// vault delta).
    #[serde(with = "crate::encoding::bytes")]
    pub vault: Vec<u8>,
}

/// `/volli/sync/1` requests, between devices of one user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRequest {
    /// What the requester's vault holds (an encoded version); answer with what it lacks,
    /// sealed to `reply_key`, about `budget` bytes at most.
    Pull {
        /// The requester's vault version.
        #[serde(with = "crate::encoding::bytes")]
        version: Vec<u8>,
        /// An X-Wing public key made for this round.
        #[serde(with = "crate::encoding::bytes")]
        reply_key: Vec<u8>,
        /// Bytes wanted at most (roughly).
        budget: u32,
    },
    /// The requester's vault changed and now holds `version`: pull what you lack.
    Notify {
        /// The requester's vault version.
        #[serde(with = "crate::encoding::bytes")]
        version: Vec<u8>,
    },
    /// The X-Wing key seeds from generation `since` on, sealed to `reply_key` (asked of an
    /// admin device by a device with `messages` after a rotation).
    Keys {
        /// The first generation wanted.
        since: u32,
        /// An X-Wing public key made for this request.
        #[serde(with = "crate::encoding::bytes")]
        reply_key: Vec<u8>,
    },
}

/// `/volli/sync/1` responses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResponse {
    /// Part of what the requester lacks: a sealed, encoded vault delta.
    Delta {
        /// The HPKE encapsulation.
        #[serde(with = "crate::encoding::bytes")]
        encapped: Vec<u8>,
        /// The sealed delta.
        #[serde(with = "crate::encoding::bytes")]
        sealed: Vec<u8>,
        /// Whether more remains.
        more: bool,
    },
    /// The requested key seeds, sealed: an encoded `Vec<(u32, [u8; 32])>`.
    Keys {
        /// The HPKE encapsulation.
        #[serde(with = "crate::encoding::bytes")]
        encapped: Vec<u8>,
        /// The sealed seeds.
        #[serde(with = "crate::encoding::bytes")]
        sealed: Vec<u8>,
    },
    /// Taken note of.
    Ok,
    /// Refused, with a reason (not one of the user's devices, revoked, not allowed).
    Refused(String),
}

/// `/volli/file/1` requests: the control side of file transfers (the data travels on the
/// bulk channel, or as [`FileRequest::Chunk`] when that cannot be reached).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileRequest {
    /// An offer: an encoded [`crate::transfer::SealedOffer`].
    Offer(#[serde(with = "crate::encoding::bytes")] Vec<u8>),
    /// The chunk list of a transfer offered to the requester.
    List(crate::transfer::TransferId),
    /// A ticket for the bulk channel.
    Channel(crate::transfer::TransferId),
    /// One ciphertext chunk, over this connection.
    Chunk {
        /// The transfer.
        id: crate::transfer::TransferId,
        /// Which chunk.
        index: u32,
    },
    /// Files wait at the requester's node for this user (files through friends): ask it
    /// which with `HoldRequest::FilesHeld`. Answered with `Ok`.
    Held,
    /// A change of state decided on the requester's side.
    Control {
        /// The transfer.
        id: crate::transfer::TransferId,
        /// What happened.
        action: FileAction,
    },
}

/// What one side of a transfer tells the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileAction {
    /// The recipient accepted the offer.
    Accept,
    /// The recipient declined it.
    Decline,
    /// Paused on the requester's side.
    Pause,
    /// Resumed on the requester's side.
    Resume,
    /// Cancelled on the requester's side.
    Cancel,
    /// The recipient has the whole file, with this plaintext hash.
    Done([u8; 32]),
}

/// `/volli/file/1` responses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileResponse {
    /// Taken note of.
    Ok,
    /// The encoded chunk list.
    List(#[serde(with = "crate::encoding::bytes")] Vec<u8>),
    /// A bulk-channel ticket: connect to one of `addrs` (`ip:port` strings), prove `key`.
    Channel {
        /// The ticket's id.
        ticket: [u8; 16],
        /// The ticket's key.
        key: [u8; 32],
        /// Where the sender's bulk listener is.
        addrs: Vec<String>,
    },
    /// A ciphertext chunk.
    Chunk(#[serde(with = "crate::encoding::bytes")] Vec<u8>),
    /// Refused.
    Refused(FileRefusal),
}

/// Why a file request was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileRefusal {
    /// No such transfer for the requester.
    Unknown,
    /// The sender paused it.
    Paused,
    /// The transfer is over (cancelled, declined, expired): the file is no longer kept.
    Gone,
    /// Too many at once; try later.
    Busy,
    /// Anything else.
    Invalid(String),
    /// The sender cancelled the transfer.
    Cancelled,
}

/// A request of `/volli/mls/1`, between a contact's devices and the user's own: key
/// packages, commits a device missed, and a device's request to be added to a conversation
/// again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MlsRequest {
    /// The requester's own key packages; the answer carries the responder's.
    KeyPackages {
        /// TLS-encoded key packages.
        #[serde(with = "crate::encoding::bytes_list")]
        packages: Vec<Vec<u8>>,
    },
    /// The commits that started the epochs of `group` after `after`.
    Commits {
        /// The conversation's group id.
        group: [u8; 16],
        /// The epoch the requester is at.
        after: u64,
    },
    /// Add the requester to `group` again, with this key package (it lost its state, or it
    /// is on the losing side of a fork).
    Rejoin {
        /// The conversation's group id.
        group: [u8; 16],
        /// A fresh key package of the requester.
        #[serde(with = "crate::encoding::bytes")]
        package: Vec<u8>,
    },
    /// Like [`Self::Rejoin`], with the device's own signed request to be added again with
    /// that key package (the evidence the commit that re-adds it carries: without it,
    /// members refuse a commit that removes a device and adds it back).
    RejoinSigned {
        /// The conversation's group id.
        group: [u8; 16],
        /// A fresh key package of the requester.
        #[serde(with = "crate::encoding::bytes")]
        package: Vec<u8>,
        /// The signed request.
        #[serde(with = "crate::encoding::bytes")]
        request: Vec<u8>,
    },
    /// What the requester's node reads ([`crate::mail::FEATURE_MESSAGE_KINDS`]…); the
    /// answer says what the responder's reads.
    Features {
        /// Bits.
        features: u32,
    },
    /// The requester's user is typing in the one-to-one conversation with the responder's
    /// user, or in a group: shown for a few seconds, never stored or relayed.
    Typing {
        /// The group, for a group conversation.
        group: Option<[u8; 16]>,
    },
    /// The requester's user's signed revocations of its devices (encoded
    /// [`crate::Statement`]s): a commit that removes one of them from a conversation carries
    /// it, so that members who do not know the user can check the removal.
    Revocations {
        /// Encoded statements.
        #[serde(with = "crate::encoding::bytes_list")]
        statements: Vec<Vec<u8>>,
    },
}

/// The commit (with the proposals it includes) that started an epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitBundle {
    /// The epoch it started.
    pub epoch: u64,
    /// The MLS messages, to process in order.
    #[serde(with = "crate::encoding::bytes_list")]
    pub messages: Vec<Vec<u8>>,
}

/// An answer of `/volli/mls/1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MlsResponse {
    /// The responder's key packages.
    KeyPackages {
        /// TLS-encoded key packages.
        #[serde(with = "crate::encoding::bytes_list")]
        packages: Vec<Vec<u8>>,
    },
    /// Commits, in epoch order.
    Commits(Vec<CommitBundle>),
    /// Done.
    Ok,
    /// Not done, and why.
    Refused(String),
    // Later variants go last: a variant's index is its encoding, which nodes of earlier
    // releases read (`tests/tests/previous_release.rs`).
    /// What the responder's node reads.
    Features {
        /// Bits.
        features: u32,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Variants keep the index (their encoding) they had in earlier releases: later ones
    /// only ever go last.
    #[test]
    fn variants_keep_the_encoding_earlier_releases_read() {
        let first = |r: &MlsResponse| postcard::to_allocvec(r).unwrap()[0];
        assert_eq!(first(&MlsResponse::Commits(Vec::new())), 1);
        assert_eq!(first(&MlsResponse::Ok), 2);
        assert_eq!(first(&MlsResponse::Refused(String::new())), 3);
        assert_eq!(first(&MlsResponse::Features { features: 1 }), 4);
    }

    /// The messages as they were encoded before their byte fields were serde bytes.
    #[derive(Serialize, Deserialize)]
    enum PlainFileResponse {
        Ok,
        List(Vec<u8>),
        Channel {
            ticket: [u8; 16],
            key: [u8; 32],
            addrs: Vec<String>,
        },
        Chunk(Vec<u8>),
    }

    #[derive(Serialize, Deserialize)]
    enum PlainRelayResponse {
        Held { expires_at: crate::Timestamp },
        Envelopes { envelopes: Vec<Vec<u8>>, more: bool },
    }

    #[test]
    fn byte_fields_keep_the_encoding_of_a_sequence_of_u8() {
        let chunk: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let new = encode(&FileResponse::Chunk(chunk.clone()));
        assert_eq!(new, encode(&PlainFileResponse::Chunk(chunk.clone())));
        let back: FileResponse = decode(&new, usize::MAX).unwrap();
        assert_eq!(back, FileResponse::Chunk(chunk.clone()));
        let old: PlainFileResponse = decode(&new, usize::MAX).unwrap();
        assert!(matches!(old, PlainFileResponse::Chunk(c) if c == chunk));

        let envelopes = vec![vec![1, 2, 3], vec![], chunk];
        let plain = encode(&PlainRelayResponse::Envelopes {
            envelopes: envelopes.clone(),
            more: true,
        });
        let RelayResponse::Envelopes {
            envelopes: back,
            more: true,
        } = decode::<RelayResponse>(&plain, usize::MAX).unwrap()
        else {
            panic!("the same variant")
        };
        assert_eq!(back, envelopes);
    }
}
