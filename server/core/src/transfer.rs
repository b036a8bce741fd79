//! File transfers: how a file is cut, encrypted, named and described ([ADR 0010]).
//!
//! - **Encryption**: a random 32-byte key per file; the plaintext is cut into 64 KiB
//!   *segments*, each sealed with AES-256-GCM under a nonce made of the segment's number in
//!   the file and a flag set only on the file's last segment (age's STREAM construction).
//!   Reordering, dropping, truncating or extending segments all fail to open.
//! - **Chunks**: segments are grouped into chunks of 1 MiB of plaintext (2 or 4 MiB for
//!   files over 4 or 8 GiB, so a file has at most [`MAX_CHUNKS`]); a chunk is named by the
//!   BLAKE3 hash of its ciphertext, and the [`ChunkList`] of those names is itself named by
//!   its hash. Chunks are what is fetched, checked before storing, and stored.
//! - **Whole-file hash**: the BLAKE3 hash of the plaintext. Chunks are power-of-two subtrees
//!   of the BLAKE3 tree, so a receiver computes each chunk's chaining value as it arrives, in
//!   any order, and combines them at the end ([`root_hash`]) without reading the file again.
//! - **Offer**: what the recipient needs (name, size, layout, the list's hash, the
//!   plaintext hash, the key), signed for the sender and sealed to the recipient's X-Wing
//!   key with HPKE, like a message ([`SealedOffer`]).
//! - **Bulk frames**: the plain-TCP data channel's framing ([`bulk`]).
//!
//! [ADR 0010]: ../../../docs/adr/0010-file-transfer.md

use std::fmt;
use std::str::FromStr;

use crate::xwing::XWing;
use blake3::hazmat::{ChainingValue, HasherExt as _, Mode, left_subtree_len};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::{Deserializable as _, OpModeR, OpModeS, Serializable as _};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize as _;

use crate::cert::Permissions;
use crate::ids::{PeerId, UserId};
use crate::keys::{KemKeyring, KemPublicKey};
use crate::signer::{Proof, Signer};
use crate::time::Timestamp;

/// Plaintext bytes per AEAD segment.
pub const SEGMENT: usize = 64 << 10;
/// Bytes the AEAD adds to a segment.
pub const TAG: usize = 16;
/// Most chunks a file has.
pub const MAX_CHUNKS: u32 = 16_384;
/// Smallest chunk (plaintext bytes).
pub const MIN_CHUNK: u32 = 1 << 20;
/// Largest chunk (plaintext bytes).
pub const MAX_CHUNK: u32 = 4 << 20;
/// Largest file: [`MAX_CHUNKS`] chunks of [`MAX_CHUNK`] bytes (64 GiB).
pub const MAX_FILE_SIZE: u64 = MAX_CHUNKS as u64 * MAX_CHUNK as u64;
/// Largest stored (ciphertext) chunk.
pub const MAX_CIPHER_CHUNK: usize = MAX_CHUNK as usize + (MAX_CHUNK as usize / SEGMENT) * TAG;
/// Longest file name, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Largest encoded sealed offer.
pub const MAX_OFFER_LEN: usize = 4 << 10;

const OFFER_VERSION: u8 = 1;
const OFFER_INFO: &[u8] = b"volli/file-offer/1";
const OFFER_DOMAIN: &[u8] = b"volli/file-offer/1";
const OFFER_PADDED: usize = 1024;
const HPKE_TAG: usize = 16;
const ENCAPPED_LEN: usize = 1120;

/// Why a transfer's data was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// Not well-formed.
    #[error("malformed transfer data")]
    Malformed,
    /// Larger than a transfer can be.
    #[error("files can be at most {} GiB", MAX_FILE_SIZE >> 30)]
    TooLarge,
    /// A segment did not open: wrong key, tampered, reordered or truncated.
    #[error("a file segment does not decrypt (tampered, reordered or truncated)")]
    Undecryptable,
    /// The offer is not for this user or does not open.
    #[error("the offer does not open")]
    BadOffer,
    /// The offer's signature does not hold.
    #[error("the offer's signature does not hold")]
    BadSignature,
    /// Sealing failed.
    #[error("sealing failed")]
    Seal,
    /// No randomness.
    #[error("the system random generator failed")]
    Random,
    /// The file name is not acceptable.
    #[error("a file name must be 1–255 bytes, without path separators or control characters")]
    BadName,
}

/// A transfer's id, chosen by the sender.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TransferId([u8; 16]);

impl TransferId {
    /// A random id.
    pub fn random() -> Result<Self, TransferError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|_| TransferError::Random)?;
        Ok(Self(bytes))
    }

    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransferId({self})")
    }
}

impl FromStr for TransferId {
    type Err = TransferError;
    fn from_str(s: &str) -> Result<Self, TransferError> {
        let bytes = hex32(s)?;
        Ok(Self(bytes))
    }
}

fn hex32<const N: usize>(s: &str) -> Result<[u8; N], TransferError> {
    let s = s.as_bytes();
    if s.len() != N * 2 {
        return Err(TransferError::Malformed);
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks(2).enumerate() {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(TransferError::Malformed),
        };
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Ok(out)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Parses 64 lowercase hex characters.
pub fn parse_hash(s: &str) -> Result<[u8; 32], TransferError> {
    hex32(s)
}

/// A file's key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileKey([u8; 32]);

impl Drop for FileKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileKey(…)")
    }
}

impl FileKey {
    /// A random key.
    pub fn random() -> Result<Self, TransferError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|_| TransferError::Random)?;
        Ok(Self(bytes))
    }

    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes (to store them).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &self.0)
                .unwrap_or_else(|_| unreachable!("a 32-byte key is a valid AES-256 key")),
        )
    }
}

/// How a file of `size` bytes is cut into chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    size: u64,
    chunk_size: u32,
}

impl Layout {
    /// The layout for a file of `size` bytes: 1 MiB chunks, larger when that would make more
    /// than 4,096 of them.
    pub fn for_size(size: u64) -> Result<Self, TransferError> {
        if size > MAX_FILE_SIZE {
            return Err(TransferError::TooLarge);
        }
        let mut chunk_size = MIN_CHUNK;
        while chunk_size < MAX_CHUNK && size.div_ceil(u64::from(chunk_size)) > 4096 {
            chunk_size *= 2;
        }
        Ok(Self { size, chunk_size })
    }

    /// A layout received from a peer, checked.
    pub fn new(size: u64, chunk_size: u32) -> Result<Self, TransferError> {
        if !chunk_size.is_power_of_two() || !(MIN_CHUNK..=MAX_CHUNK).contains(&chunk_size) {
            return Err(TransferError::Malformed);
        }
        let layout = Self { size, chunk_size };
        if size > MAX_FILE_SIZE || u64::from(layout.chunks()) > u64::from(MAX_CHUNKS) {
            return Err(TransferError::TooLarge);
        }
        Ok(layout)
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Plaintext bytes per chunk (the last one may have fewer).
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// How many chunks (at least one, even for an empty file).
    pub fn chunks(&self) -> u32 {
        u32::try_from(self.size.div_ceil(u64::from(self.chunk_size)).max(1)).unwrap_or(u32::MAX)
    }

    /// Where chunk `index`'s plaintext starts, and its length.
    pub fn plain_range(&self, index: u32) -> (u64, usize) {
        let start = u64::from(index) * u64::from(self.chunk_size);
        let end = (start + u64::from(self.chunk_size)).min(self.size);
        (
            start,
            usize::try_from(end.saturating_sub(start)).unwrap_or(0),
        )
    }

    /// The length of chunk `index`'s ciphertext.
    pub fn cipher_len(&self, index: u32) -> usize {
        let (_, len) = self.plain_range(index);
        len + segments_in(len) * TAG
    }

    fn last_segment(&self) -> u64 {
        (self.size.div_ceil(SEGMENT as u64)).max(1) - 1
    }

    /// Seals chunk `index`'s plaintext (exactly `plain_range(index).1` bytes).
    pub fn seal_chunk(&self, key: &FileKey, index: u32, plaintext: &[u8]) -> Vec<u8> {
        seal_chunk_of(
            key,
            self.chunk_size,
            index,
            plaintext,
            index + 1 == self.chunks(),
        )
    }

    /// Opens chunk `index`'s ciphertext.
    pub fn open_chunk(
        &self,
        key: &FileKey,
        index: u32,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, TransferError> {
        if index >= self.chunks() || ciphertext.len() != self.cipher_len(index) {
            return Err(TransferError::Undecryptable);
        }
        let mut out = Vec::with_capacity(ciphertext.len());
        let first = self.first_segment(index);
        for (n, sealed) in ciphertext.chunks(SEGMENT + TAG).enumerate() {
            out.extend_from_slice(&self.open_segment(key, first + n as u64, sealed)?);
        }
        Ok(out)
    }

    /// Opens one segment (its ciphertext with the tag), by its number in the file.
    pub fn open_segment(
        &self,
        key: &FileKey,
        segment: u64,
        sealed: &[u8],
    ) -> Result<Vec<u8>, TransferError> {
        if sealed.len() < TAG || sealed.len() > SEGMENT + TAG || segment > self.last_segment() {
            return Err(TransferError::Undecryptable);
        }
        let mut buf = sealed.to_vec();
        let plain = key
            .aead()
            .open_in_place(
                nonce(segment, segment == self.last_segment()),
                Aad::empty(),
                &mut buf,
            )
            .map_err(|_| TransferError::Undecryptable)?
            .len();
        buf.truncate(plain);
        Ok(buf)
    }

    /// The number, in the file, of chunk `index`'s first segment.
    pub fn first_segment(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.chunk_size / SEGMENT as u32)
    }

    /// This chunk's part of the whole-file BLAKE3 tree (see [`root_hash`]).
    pub fn chunk_cv(&self, index: u32, plaintext: &[u8]) -> ChainingValue {
        if self.chunks() == 1 {
            return *blake3::hash(plaintext).as_bytes();
        }
        subtree_cv(self.plain_range(index).0, plaintext)
    }

    /// The whole file's BLAKE3 hash from every chunk's [`Layout::chunk_cv`], in order.
    pub fn root_hash(&self, cvs: &[ChainingValue]) -> Result<[u8; 32], TransferError> {
        if cvs.len() != self.chunks() as usize {
            return Err(TransferError::Malformed);
        }
        if cvs.len() == 1 {
            return Ok(cvs[0]);
        }
        let (left, right) = self.split(cvs, self.size);
        Ok(*blake3::hazmat::merge_subtrees_root(&left, &right, Mode::Hash).as_bytes())
    }

    fn split(&self, cvs: &[ChainingValue], len: u64) -> (ChainingValue, ChainingValue) {
        let left_len = left_subtree_len(len);
        let n = usize::try_from(left_len / u64::from(self.chunk_size)).unwrap_or(usize::MAX);
        (
            self.subtree(&cvs[..n], left_len),
            self.subtree(&cvs[n..], len - left_len),
        )
    }

    fn subtree(&self, cvs: &[ChainingValue], len: u64) -> ChainingValue {
        if cvs.len() == 1 {
            return cvs[0];
        }
        let (left, right) = self.split(cvs, len);
        blake3::hazmat::merge_subtrees_non_root(&left, &right, Mode::Hash)
    }
}

/// The chaining value of the plaintext at `offset` (a multiple of its power-of-two chunk
/// size) when the file has more than one chunk; see [`Layout::chunk_cv`].
pub fn subtree_cv(offset: u64, plaintext: &[u8]) -> ChainingValue {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(offset);
    hasher.update(plaintext);
    hasher.finalize_non_root()
}

/// The root hash of a file given as whole: for tests and for checking [`Layout::root_hash`].
pub fn plaintext_hash(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// Seals chunk `index` of a file cut in chunks of `chunk_size` while its size is not known
/// yet (an upload): `last` says whether this chunk ends the file. Gives the same bytes as
/// [`Layout::seal_chunk`] once the size is known.
pub fn seal_chunk_of(
    key: &FileKey,
    chunk_size: u32,
    index: u32,
    plaintext: &[u8],
    last: bool,
) -> Vec<u8> {
    let aead = key.aead();
    let first = u64::from(index) * u64::from(chunk_size / SEGMENT as u32);
    let mut out = Vec::with_capacity(plaintext.len() + segments_in(plaintext.len()) * TAG);
    let mut pieces: Vec<&[u8]> = plaintext.chunks(SEGMENT).collect();
    if pieces.is_empty() {
        pieces.push(&[]);
    }
    let n_pieces = pieces.len();
    for (n, piece) in pieces.into_iter().enumerate() {
        let start = out.len();
        out.extend_from_slice(piece);
        let tag = aead
            .seal_in_place_separate_tag(
                nonce(first + n as u64, last && n + 1 == n_pieces),
                Aad::empty(),
                &mut out[start..],
            )
            .unwrap_or_else(|_| unreachable!("segments are far below AES-GCM's limit"));
        out.extend_from_slice(tag.as_ref());
    }
    out
}

fn segments_in(len: usize) -> usize {
    len.div_ceil(SEGMENT).max(1)
}

fn nonce(segment: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&segment.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

/// The BLAKE3 names of a file's ciphertext chunks, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkList(Vec<[u8; 32]>);

impl ChunkList {
    /// From the names.
    pub fn new(names: Vec<[u8; 32]>) -> Self {
        Self(names)
    }

    /// Parses the list of a file laid out as `layout`.
    pub fn from_bytes(layout: &Layout, bytes: &[u8]) -> Result<Self, TransferError> {
        if bytes.len() != layout.chunks() as usize * 32 {
            return Err(TransferError::Malformed);
        }
        Ok(Self(
            bytes
                .chunks_exact(32)
                .map(|c| <[u8; 32]>::try_from(c).unwrap_or([0; 32]))
                .collect(),
        ))
    }

    /// The encoded list.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.concat()
    }

    /// The list's own name (what an offer carries).
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&self.to_bytes()).as_bytes()
    }

    /// Chunk `index`'s name.
    pub fn get(&self, index: u32) -> Option<&[u8; 32]> {
        self.0.get(index as usize)
    }

    /// How many chunks.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it lists nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Checks a file name: 1–255 bytes, no path separators, no control characters, not `.`/`..`.
pub fn check_name(name: &str) -> Result<(), TransferError> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err(TransferError::BadName);
    }
    Ok(())
}

/// What the recipient of a file learns from its offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileOffer {
    /// The transfer.
    pub id: TransferId,
    /// Who sends it (verified on open).
    pub sender: UserId,
    /// The file's name.
    pub name: String,
    /// How the file is cut.
    pub layout: Layout,
    /// The hash of the [`ChunkList`].
    pub list: [u8; 32],
    /// The BLAKE3 hash of the plaintext.
    pub blake3: [u8; 32],
    /// The file's key.
    pub key: FileKey,
    /// When it was offered.
    pub created_at: Timestamp,
    /// Until when the sender keeps the file.
    pub expires_at: Timestamp,
    /// The sender's device that signed, if a device did.
    pub device: Option<PeerId>,
}

#[derive(Serialize)]
struct SignedOffer<'a> {
    version: u8,
    sender: &'a UserId,
    recipient: &'a UserId,
    id: &'a TransferId,
    name: &'a str,
    layout: &'a Layout,
    list: &'a [u8; 32],
    blake3: &'a [u8; 32],
    key: &'a FileKey,
    created_at: Timestamp,
    expires_at: Timestamp,
}

#[derive(Serialize, Deserialize)]
struct InnerOffer {
    version: u8,
    sender: UserId,
    id: TransferId,
    name: String,
    layout: Layout,
    list: [u8; 32],
    blake3: [u8; 32],
    key: FileKey,
    created_at: Timestamp,
    expires_at: Timestamp,
    proof: Proof,
}

#[derive(Serialize)]
struct OfferHeader<'a> {
    version: u8,
    recipient: &'a UserId,
    id: &'a TransferId,
}

/// An offer as it travels: only the recipient and the transfer id are visible.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedOffer {
    version: u8,
    recipient: UserId,
    id: TransferId,
    encapped: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl fmt::Debug for SealedOffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedOffer")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap_or_else(|_| unreachable!("postcard encodes to a Vec"))
}

impl SealedOffer {
    /// Seals `offer` (its `sender` and `device` are taken from `signer`) to `recipient`.
    pub fn seal(
        signer: &Signer<'_>,
        recipient: UserId,
        kem: &KemPublicKey,
        offer: &FileOffer,
    ) -> Result<Self, TransferError> {
        check_name(&offer.name)?;
        let sender = signer.user_id();
        let signed = SignedOffer {
            version: OFFER_VERSION,
            sender: &sender,
            recipient: &recipient,
            id: &offer.id,
            name: &offer.name,
            layout: &offer.layout,
            list: &offer.list,
            blake3: &offer.blake3,
            key: &offer.key,
            created_at: offer.created_at,
            expires_at: offer.expires_at,
        };
        let proof = signer.prove(OFFER_DOMAIN, &encode(&signed));
        let mut plaintext = encode(&InnerOffer {
            version: OFFER_VERSION,
            sender,
            id: offer.id,
            name: offer.name.clone(),
            layout: offer.layout,
            list: offer.list,
            blake3: offer.blake3,
            key: offer.key.clone(),
            created_at: offer.created_at,
            expires_at: offer.expires_at,
            proof,
        });
        // Padded, so the name's length does not show.
        if plaintext.len() + HPKE_TAG > OFFER_PADDED * 2 {
            return Err(TransferError::BadName);
        }
        let padded = if plaintext.len() + HPKE_TAG <= OFFER_PADDED {
            OFFER_PADDED
        } else {
            OFFER_PADDED * 2
        };
        plaintext.resize(padded - HPKE_TAG, 0);
        let aad = encode(&OfferHeader {
            version: OFFER_VERSION,
            recipient: &recipient,
            id: &offer.id,
        });
        let (encapped, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, XWing>(
            &OpModeS::Base,
            kem.as_hpke(),
            OFFER_INFO,
            &plaintext,
            &aad,
        )
        .map_err(|_| TransferError::Seal)?;
        plaintext.zeroize();
        Ok(Self {
            version: OFFER_VERSION,
            recipient,
            id: offer.id,
            encapped: encapped.to_bytes().to_vec(),
            ciphertext,
        })
    }

    /// The transfer it offers.
    pub fn id(&self) -> TransferId {
        self.id
    }

    /// Who it is for.
    pub fn recipient(&self) -> UserId {
        self.recipient
    }

    /// Opens it as the user `me`, checking the sender's signature.
    pub fn open(&self, me: UserId, keys: &KemKeyring) -> Result<FileOffer, TransferError> {
        if self.recipient != me {
            return Err(TransferError::BadOffer);
        }
        let encapped = <XWing as hpke::Kem>::EncappedKey::from_bytes(&self.encapped)
            .map_err(|_| TransferError::Malformed)?;
        let aad = encode(&OfferHeader {
            version: self.version,
            recipient: &self.recipient,
            id: &self.id,
        });
        let mut plaintext = keys
            .keys()
            .iter()
            .find_map(|key| {
                hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, XWing>(
                    &OpModeR::Base,
                    key.secret(),
                    &encapped,
                    OFFER_INFO,
                    &self.ciphertext,
                    &aad,
                )
                .ok()
            })
            .ok_or(TransferError::BadOffer)?;
        let parsed = postcard::take_from_bytes::<InnerOffer>(&plaintext)
            .map_err(|_| TransferError::Malformed)
            .and_then(|(inner, padding)| {
                if padding.iter().any(|b| *b != 0) || inner.version != OFFER_VERSION {
                    Err(TransferError::Malformed)
                } else {
                    Ok(inner)
                }
            });
        plaintext.zeroize();
        let inner = parsed?;
        if inner.id != self.id {
            return Err(TransferError::Malformed);
        }
        check_name(&inner.name)?;
        let layout = Layout::new(inner.layout.size, inner.layout.chunk_size)?;
        let signed = SignedOffer {
            version: OFFER_VERSION,
            sender: &inner.sender,
            recipient: &self.recipient,
            id: &inner.id,
            name: &inner.name,
            layout: &layout,
            list: &inner.list,
            blake3: &inner.blake3,
            key: &inner.key,
            created_at: inner.created_at,
            expires_at: inner.expires_at,
        };
        let device = inner
            .proof
            .verify(
                &inner.sender,
                Permissions::MESSAGES,
                OFFER_DOMAIN,
                &encode(&signed),
            )
            .map_err(|_| TransferError::BadSignature)?;
        Ok(FileOffer {
            id: inner.id,
            sender: inner.sender,
            name: inner.name,
            layout,
            list: inner.list,
            blake3: inner.blake3,
            key: inner.key,
            created_at: inner.created_at,
            expires_at: inner.expires_at,
            device,
        })
    }

    /// Parses a sealed offer (not opening it): bounded, versioned, nothing trailing.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TransferError> {
        if bytes.len() > MAX_OFFER_LEN {
            return Err(TransferError::Malformed);
        }
        let offer: SealedOffer = match postcard::take_from_bytes(bytes) {
            Ok((o, [])) => o,
            _ => return Err(TransferError::Malformed),
        };
        if offer.version != OFFER_VERSION
            || offer.encapped.len() != ENCAPPED_LEN
            || (offer.ciphertext.len() != OFFER_PADDED
                && offer.ciphertext.len() != OFFER_PADDED * 2)
        {
            return Err(TransferError::Malformed);
        }
        Ok(offer)
    }

    /// The encoded offer.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }
}

/// The data channel: a plain TCP connection that carries only ciphertext chunks, whose names
/// the receiver already holds from the signed offer. It is opened with a ticket handed out
/// over the (Noise-encrypted, authenticated) libp2p connection and proved by
/// challenge-response, so an eavesdropper can neither read a file nor reuse a ticket.
pub mod bulk {
    use super::{MAX_CIPHER_CHUNK, TransferError};

    /// What the server sends first.
    pub const MAGIC: &[u8; 8] = b"VOLLIB1\n";
    /// The server's challenge length.
    pub const CHALLENGE_LEN: usize = 32;
    /// The client's answer: ticket id (16) + proof (32).
    pub const ANSWER_LEN: usize = 48;
    /// A request frame's length.
    pub const REQUEST_LEN: usize = 5;
    /// A response header's length.
    pub const HEADER_LEN: usize = 9;
    const CONTEXT: &str = "volli/bulk/1 ticket proof";

    /// The client's proof that it holds the ticket's key.
    pub fn proof(key: &[u8; 32], challenge: &[u8; CHALLENGE_LEN]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(key);
        h.update(CONTEXT.as_bytes());
        h.update(challenge);
        *h.finalize().as_bytes()
    }

    /// Compares proofs in constant time.
    pub fn proof_matches(a: &[u8; 32], b: &[u8; 32]) -> bool {
        blake3::Hash::from(*a) == blake3::Hash::from(*b)
    }

    /// A request from the receiver.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Request {
        /// Send chunk `index`.
        Chunk(u32),
        /// Done; close.
        Close,
    }

    impl Request {
        /// The frame.
        pub fn encode(self) -> [u8; REQUEST_LEN] {
            let mut out = [0u8; REQUEST_LEN];
            match self {
                Request::Chunk(i) => {
                    out[0] = 1;
                    out[1..].copy_from_slice(&i.to_be_bytes());
                }
                Request::Close => {}
            }
            out
        }

        /// Parses a frame.
        pub fn decode(frame: &[u8; REQUEST_LEN]) -> Result<Self, TransferError> {
            let n = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]);
            match (frame[0], n) {
                (0, 0) => Ok(Request::Close),
                (1, n) => Ok(Request::Chunk(n)),
                _ => Err(TransferError::Malformed),
            }
        }
    }

    /// The status of a response.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Status {
        /// The chunk follows.
        Ok,
        /// The sender paused the transfer.
        Paused,
        /// The sender no longer has the file (expired, failed, forgotten).
        Gone,
        /// Anything else; try again later.
        Busy,
        /// The sender cancelled the transfer.
        Cancelled,
    }

    /// A response header: the chunk index, the status, the length of what follows.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Header {
        /// Which chunk.
        pub index: u32,
        /// Its status.
        pub status: Status,
        /// Bytes that follow (0 unless `Ok`).
        pub len: u32,
    }

    impl Header {
        /// The frame.
        pub fn encode(self) -> [u8; HEADER_LEN] {
            let mut out = [0u8; HEADER_LEN];
            out[..4].copy_from_slice(&self.index.to_be_bytes());
            out[4] = match self.status {
                Status::Ok => 0,
                Status::Paused => 1,
                Status::Gone => 2,
                Status::Busy => 3,
                Status::Cancelled => 4,
            };
            out[5..].copy_from_slice(&self.len.to_be_bytes());
            out
        }

        /// Parses a frame; a length above the largest chunk, or data with a refusal, is
        /// refused before anything is read.
        pub fn decode(frame: &[u8; HEADER_LEN]) -> Result<Self, TransferError> {
            let index = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
            let len = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]);
            let status = match frame[4] {
                0 => Status::Ok,
                1 => Status::Paused,
                2 => Status::Gone,
                3 => Status::Busy,
                4 => Status::Cancelled,
                _ => return Err(TransferError::Malformed),
            };
            if len as usize > MAX_CIPHER_CHUNK || (status != Status::Ok && len != 0) {
                return Err(TransferError::Malformed);
            }
            Ok(Self { index, status, len })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use proptest::prelude::*;

    use super::*;
    use crate::keys::UserSecret;

    fn file(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn roundtrip(size: usize) {
        let data = file(size);
        let layout = Layout::for_size(size as u64).unwrap();
        let key = FileKey::random().unwrap();
        let mut cvs = Vec::new();
        let mut back = Vec::new();
        for i in 0..layout.chunks() {
            let (start, len) = layout.plain_range(i);
            let plain = &data[start as usize..start as usize + len];
            let sealed = layout.seal_chunk(&key, i, plain);
            assert_eq!(sealed.len(), layout.cipher_len(i));
            let opened = layout.open_chunk(&key, i, &sealed).unwrap();
            assert_eq!(opened, plain);
            cvs.push(layout.chunk_cv(i, &opened));
            back.extend_from_slice(&opened);
        }
        assert_eq!(back, data);
        assert_eq!(layout.root_hash(&cvs).unwrap(), plaintext_hash(&data));
    }

    #[test]
    fn files_of_every_shape_round_trip_and_hash_to_blake3() {
        for size in [
            0,
            1,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            (1 << 20) - 1,
            1 << 20,
            (1 << 20) + 1,
            3 << 20,
            (5 << 20) + 12345,
            (8 << 20) + SEGMENT,
        ] {
            roundtrip(size);
        }
    }

    #[test]
    fn large_files_get_larger_chunks_and_a_bounded_list() {
        assert_eq!(Layout::for_size(4 << 30).unwrap().chunk_size(), 1 << 20);
        assert_eq!(
            Layout::for_size((4 << 30) + 1).unwrap().chunk_size(),
            2 << 20
        );
        assert_eq!(Layout::for_size(16 << 30).unwrap().chunk_size(), 4 << 20);
        assert_eq!(Layout::for_size(16 << 30).unwrap().chunks(), 4096);
        assert!(Layout::for_size(MAX_FILE_SIZE).is_ok());
        assert_eq!(
            Layout::for_size(MAX_FILE_SIZE + 1),
            Err(TransferError::TooLarge)
        );
        assert!(Layout::new(10, 3).is_err());
        assert!(Layout::new(10, 1 << 19).is_err());
        assert!(Layout::new(MAX_FILE_SIZE, 1 << 20).is_err());
    }

    #[test]
    fn truncating_reordering_or_tampering_fails_to_open() {
        let data = file(3 << 20);
        let layout = Layout::for_size(data.len() as u64).unwrap();
        let key = FileKey::random().unwrap();
        let c0 = layout.seal_chunk(&key, 0, &data[..1 << 20]);
        let c1 = layout.seal_chunk(&key, 1, &data[1 << 20..2 << 20]);
        // Swapped chunks.
        assert!(layout.open_chunk(&key, 0, &c1).is_err());
        // A truncated file: the middle chunk presented as the last one.
        let short = Layout::for_size(2 << 20).unwrap();
        assert!(short.open_chunk(&key, 1, &c1).is_err());
        // A flipped bit.
        let mut bad = c0.clone();
        bad[100] ^= 1;
        assert!(layout.open_chunk(&key, 0, &bad).is_err());
        // Another key.
        assert!(
            layout
                .open_chunk(&FileKey::random().unwrap(), 0, &c0)
                .is_err()
        );
    }

    #[test]
    fn chunk_lists_parse_only_at_their_exact_length() {
        let layout = Layout::for_size(3 << 20).unwrap();
        let list = ChunkList::new(vec![[1; 32], [2; 32], [3; 32]]);
        let bytes = list.to_bytes();
        assert_eq!(ChunkList::from_bytes(&layout, &bytes).unwrap(), list);
        assert!(ChunkList::from_bytes(&layout, &bytes[..64]).is_err());
        assert!(ChunkList::from_bytes(&layout, &[bytes.clone(), vec![0]].concat()).is_err());
    }

    fn offer(sender: &UserSecret) -> FileOffer {
        FileOffer {
            id: TransferId::random().unwrap(),
            sender: sender.user_id(),
            name: "holiday photos.zip".into(),
            layout: Layout::for_size(5 << 20).unwrap(),
            list: [7; 32],
            blake3: [8; 32],
            key: FileKey::random().unwrap(),
            created_at: Timestamp::from_millis(1_800_000_000_000),
            expires_at: Timestamp::from_millis(1_800_000_600_000),
            device: None,
        }
    }

    #[test]
    fn offers_open_only_for_their_recipient_and_carry_everything() {
        let alice = UserSecret::from_master([1; 32]);
        let bob = UserSecret::from_master([2; 32]);
        let carol = UserSecret::from_master([3; 32]);
        let o = offer(&alice);
        let sealed = SealedOffer::seal(
            &Signer::User(&alice),
            bob.user_id(),
            bob.kem_key(0).public(),
            &o,
        )
        .unwrap();
        let bytes = sealed.to_bytes();
        assert!(bytes.len() <= MAX_OFFER_LEN);
        let parsed = SealedOffer::from_bytes(&bytes).unwrap();
        assert_eq!(parsed.id(), o.id);
        let opened = parsed.open(bob.user_id(), &bob.keyring(0)).unwrap();
        assert_eq!(opened, o);
        assert!(parsed.open(carol.user_id(), &carol.keyring(0)).is_err());
        assert!(parsed.open(bob.user_id(), &carol.keyring(0)).is_err());
        // The visible id is bound to the sealed one.
        let mut moved = parsed.clone();
        moved.id = TransferId::random().unwrap();
        assert!(moved.open(bob.user_id(), &bob.keyring(0)).is_err());
    }

    #[test]
    fn names_with_paths_or_control_characters_are_refused() {
        for bad in ["", ".", "..", "a/b", "a\\b", "a\nb", &"x".repeat(256)] {
            assert_eq!(check_name(bad), Err(TransferError::BadName), "{bad:?}");
        }
        check_name("résumé (final).pdf").unwrap();
    }

    #[test]
    fn bulk_headers_refuse_oversized_or_inconsistent_frames() {
        use bulk::{Header, Request, Status};
        let h = Header {
            index: 7,
            status: Status::Ok,
            len: 1000,
        };
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
        let mut big = h.encode();
        big[5..].copy_from_slice(&(MAX_CIPHER_CHUNK as u32 + 1).to_be_bytes());
        assert!(Header::decode(&big).is_err());
        let mut refusal = h.encode();
        refusal[4] = 1;
        assert!(Header::decode(&refusal).is_err());
        assert_eq!(
            Request::decode(&Request::Chunk(9).encode()).unwrap(),
            Request::Chunk(9)
        );
        assert_eq!(
            Request::decode(&Request::Close.encode()).unwrap(),
            Request::Close
        );
        assert!(Request::decode(&[2, 0, 0, 0, 0]).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_parsers(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = SealedOffer::from_bytes(&bytes);
            let layout = Layout::for_size(2 << 20).unwrap();
            let _ = ChunkList::from_bytes(&layout, &bytes);
            let _ = layout.open_chunk(&FileKey::from_bytes([0; 32]), 0, &bytes);
            if bytes.len() >= bulk::HEADER_LEN {
                let _ = bulk::Header::decode(bytes[..bulk::HEADER_LEN].try_into().unwrap());
            }
        }
    }
}
