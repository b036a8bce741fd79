//! Backups held by friends: the recovery phrase, what is derived from it, sealed blobs and
//! the manifest that lists them. No I/O, and not the slow key derivation (Argon2id, in the
//! node): this module starts from its 32-byte output, the *root*.
//!
//! **Phrase.** Twelve words of the 2,048-word list the pairing codes use: 128 random bits and
//! a 4-bit checksum (the first bits of the BLAKE3 hash of the entropy, so a wallet's BIP-39
//! phrase is not taken for ours, nor ours for a wallet's). Words may be given by their first
//! four letters.
//!
//! **Keys** (BLAKE3 `derive_key` from the root, distinct contexts): an Ed25519 **access key**
//! whose signatures prove to a holder that the asker holds the phrase ([`AccessProof`]: over
//! the holder's peer id and the time, so a proof sent to one node opens nothing at another,
//! nor later); the **locator**, the BLAKE3 hash of the access key's public half, is what
//! holders file shares under and what they announce (in the DHT, at rendezvous points) in a
//! derived form — so a holder can be found from the phrase alone, and neither a holder nor a
//! node a restoring device asks can fetch what other holders keep; `seal` encrypts.
//!
//! **Blobs.** Each part of the backup is padded (at most 1/16 more, so sizes say little),
//! sealed with AES-256-GCM under a key derived from `seal` and the blob's random id, and cut
//! into `n` shards by [`crate::erasure`]. The **manifest** — the user's master secret, which
//! holders hold which slot, every blob with the BLAKE3 hash of each of its shards, a sequence
//! number — is sealed under `seal` too, and every holder keeps a copy. A holder sees only
//! opaque, padded bytes filed under a random-looking locator by one of its contacts.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize as _, Zeroizing};

use crate::ids::{PeerId, UserId};
use crate::time::Timestamp;

/// Words in a recovery phrase.
pub const PHRASE_WORDS: usize = 12;
/// The piece id under which a holder keeps a user's manifest (blob ids are never all zero).
pub const MANIFEST_PIECE: [u8; 16] = [0; 16];
/// The salt of the Argon2id derivation from the phrase: fixed, since nothing but the phrase
/// may be needed to restore (its 128 random bits make a per-user salt unnecessary).
pub const KDF_SALT: &[u8] = b"volli/backup/1 phrase";
/// Largest sealed manifest.
pub const MAX_MANIFEST: usize = 4 << 20;
const MANIFEST_VERSION: u8 = 1;
const SMALLEST: usize = 512;

/// Why a phrase, a blob or a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// Not twelve words.
    #[error("a recovery phrase has {PHRASE_WORDS} words, not {0}")]
    WordCount(usize),
    /// A word that is not on the list (nor the start of exactly one word on it).
    #[error("word {0} of the recovery phrase is not one of its words")]
    UnknownWord(usize),
    /// The words do not hold together: one is wrong, or two are swapped.
    #[error("the recovery phrase does not check out: a word is wrong or out of place")]
    Checksum,
    /// The random number generator failed.
    #[error("no randomness available")]
    Rng,
    /// Bytes that do not open with this key (another phrase's, or altered).
    #[error("does not open with this recovery phrase, or was altered")]
    Open,
    /// An opened manifest that does not hold together.
    #[error("the backup's manifest is malformed")]
    Malformed,
    /// A proof of the phrase that does not hold: another node's, too old, or forged.
    #[error("the proof of the recovery phrase does not hold")]
    Proof,
}

/// A recovery phrase: 128 random bits as twelve words.
pub struct RecoveryPhrase {
    entropy: Zeroizing<[u8; 16]>,
}

fn checksum(entropy: &[u8; 16]) -> u8 {
    blake3::hash(entropy).as_bytes()[0] >> 4
}

impl RecoveryPhrase {
    /// A new phrase from the operating system's random source.
    pub fn generate() -> Result<Self, BackupError> {
        let mut entropy = Zeroizing::new([0u8; 16]);
        getrandom::fill(entropy.as_mut()).map_err(|_| BackupError::Rng)?;
        Ok(Self { entropy })
    }

    /// Reads a phrase as a person types it: words separated by spaces, commas or hyphens, in
    /// any case, each whole or by its first four letters (or more).
    pub fn parse(text: &str) -> Result<Self, BackupError> {
        let words: Vec<String> = text
            .split(|c: char| c.is_whitespace() || c == ',' || c == '-')
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        if words.len() != PHRASE_WORDS {
            return Err(BackupError::WordCount(words.len()));
        }
        let list = crate::pairing::words();
        let mut bits = Zeroizing::new([0u16; PHRASE_WORDS]);
        for (i, word) in words.iter().enumerate() {
            let index = match list.binary_search(&word.as_str()) {
                Ok(index) => index,
                Err(_) if word.chars().count() >= 4 => {
                    let mut matches = list
                        .iter()
                        .enumerate()
                        .filter(|(_, w)| w.starts_with(word.as_str()));
                    match (matches.next(), matches.next()) {
                        (Some((index, _)), None) => index,
                        _ => return Err(BackupError::UnknownWord(i + 1)),
                    }
                }
                Err(_) => return Err(BackupError::UnknownWord(i + 1)),
            };
            bits[i] = u16::try_from(index).map_err(|_| BackupError::UnknownWord(i + 1))?;
        }
        // 12 × 11 = 132 bits: the entropy's 128, then 4 of checksum.
        let mut entropy = Zeroizing::new([0u8; 16]);
        let mut acc: u32 = 0;
        let mut held = 0;
        let mut out = 0;
        for w in bits.iter() {
            acc = (acc << 11) | u32::from(*w);
            held += 11;
            while held >= 8 && out < 16 {
                held -= 8;
                entropy[out] = (acc >> held) as u8;
                out += 1;
            }
            acc &= (1 << held) - 1;
        }
        let sum = acc as u8;
        acc.zeroize();
        if held != 4 || sum != checksum(&entropy) {
            return Err(BackupError::Checksum);
        }
        Ok(Self { entropy })
    }

    /// The twelve words, separated by spaces.
    pub fn words(&self) -> Zeroizing<String> {
        let list = crate::pairing::words();
        let mut out = Zeroizing::new(String::new());
        let mut acc: u32 = 0;
        let mut held = 0;
        let bytes = self
            .entropy
            .iter()
            .copied()
            .chain(std::iter::once(checksum(&self.entropy) << 4));
        let mut count = 0;
        for byte in bytes {
            acc = (acc << 8) | u32::from(byte);
            held += 8;
            while held >= 11 && count < PHRASE_WORDS {
                held -= 11;
                if count > 0 {
                    out.push(' ');
                }
                out.push_str(list[((acc >> held) & 0x7ff) as usize]);
                count += 1;
            }
            acc &= (1 << held) - 1;
        }
        out
    }

    /// The 16 bytes the root key is derived from (Argon2id with [`KDF_SALT`]).
    pub fn entropy(&self) -> &[u8; 16] {
        &self.entropy
    }
}

/// How far a proof's time may be from the holder's clock.
pub const PROOF_SKEW_MS: i64 = 10 * 60 * 1000;
const PROOF_DOMAIN: &[u8] = b"volli/backup/1 access proof";

/// Proof that the asker holds a backup's phrase, for one holder, at one time: the access
/// key's public half (whose hash is the locator) and its signature over the holder's peer id
/// and the time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessProof {
    /// The access key's public half.
    pub key: [u8; 32],
    /// When it was made (milliseconds since the Unix epoch).
    pub at: i64,
    /// The signature.
    pub signature: crate::Signature,
}

fn proof_message(holder: &PeerId, at: i64) -> Vec<u8> {
    let mut m = PROOF_DOMAIN.to_vec();
    m.extend_from_slice(&at.to_le_bytes());
    m.extend_from_slice(&holder.to_bytes());
    m
}

impl AccessProof {
    /// The locator it opens at `holder` (this node) at `now`, if it holds.
    pub fn verify(&self, holder: &PeerId, now: Timestamp) -> Result<[u8; 32], BackupError> {
        if (now.as_millis() - self.at).abs() > PROOF_SKEW_MS {
            return Err(BackupError::Proof);
        }
        let key =
            ed25519_dalek::VerifyingKey::from_bytes(&self.key).map_err(|_| BackupError::Proof)?;
        let signature = ed25519_dalek::Signature::from_bytes(self.signature.as_bytes());
        key.verify_strict(&proof_message(holder, self.at), &signature)
            .map_err(|_| BackupError::Proof)?;
        Ok(*blake3::hash(&self.key).as_bytes())
    }
}

/// What is derived from the root. Dropping it wipes the secrets.
#[derive(Clone)]
pub struct BackupKeys {
    access: ed25519_dalek::SigningKey,
    seal: Zeroizing<[u8; 32]>,
    locator: [u8; 32],
}

impl BackupKeys {
    /// The keys of the root Argon2id derived from the phrase.
    pub fn from_root(root: &[u8; 32]) -> Self {
        let seed = Zeroizing::new(blake3::derive_key("volli/backup/1 access", root));
        let access = ed25519_dalek::SigningKey::from_bytes(&seed);
        let seal = Zeroizing::new(blake3::derive_key("volli/backup/1 seal", root));
        let locator = *blake3::hash(access.verifying_key().as_bytes()).as_bytes();
        Self {
            access,
            seal,
            locator,
        }
    }

    /// A proof for `holder`, now, that the asker holds the phrase.
    pub fn prove(&self, holder: &PeerId, now: Timestamp) -> AccessProof {
        use ed25519_dalek::Signer as _;
        let at = now.as_millis();
        AccessProof {
            key: self.access.verifying_key().to_bytes(),
            at,
            signature: crate::Signature::from_bytes(
                self.access.sign(&proof_message(holder, at)).to_bytes(),
            ),
        }
    }

    /// What holders file this backup under.
    pub fn locator(&self) -> [u8; 32] {
        self.locator
    }

    fn blob_key(&self, id: &[u8; 16]) -> LessSafeKey {
        let mut material = Zeroizing::new([0u8; 48]);
        material[..32].copy_from_slice(self.seal.as_ref());
        material[32..].copy_from_slice(id);
        let key = Zeroizing::new(blake3::derive_key("volli/backup/1 blob", material.as_ref()));
        aead_key(&key)
    }

    fn manifest_key(&self) -> LessSafeKey {
        let key = Zeroizing::new(blake3::derive_key(
            "volli/backup/1 manifest",
            self.seal.as_ref(),
        ));
        aead_key(&key)
    }

    /// Seals `plain` as blob `id` (never all zero, never reused: each id seals one content).
    pub fn seal_blob(&self, id: &[u8; 16], plain: &[u8]) -> Vec<u8> {
        let mut buf = padded(plain);
        let tag = self
            .blob_key(id)
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(id),
                &mut buf,
            )
            .unwrap_or_else(|_| unreachable!("AES-GCM seals any length a backup has"));
        buf.extend_from_slice(tag.as_ref());
        buf
    }

    /// Opens blob `id`.
    pub fn open_blob(&self, id: &[u8; 16], sealed: &[u8]) -> Result<Vec<u8>, BackupError> {
        let mut buf = sealed.to_vec();
        let plain = self
            .blob_key(id)
            .open_in_place(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(id),
                &mut buf,
            )
            .map_err(|_| BackupError::Open)?;
        unpadded(plain)
    }

    /// Seals a manifest for holders to keep.
    pub fn seal_manifest(&self, manifest: &Manifest) -> Result<Vec<u8>, BackupError> {
        let plain = Zeroizing::new(crate::wire::encode(manifest));
        let mut buf = padded(&plain);
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|_| BackupError::Rng)?;
        let tag = self
            .manifest_key()
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&self.locator),
                &mut buf,
            )
            .map_err(|_| BackupError::Malformed)?;
        let mut out = Vec::with_capacity(1 + 12 + buf.len() + 16);
        out.push(MANIFEST_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        out.extend_from_slice(tag.as_ref());
        buf.zeroize();
        Ok(out)
    }

    /// Opens a manifest a holder kept.
    pub fn open_manifest(&self, sealed: &[u8]) -> Result<Manifest, BackupError> {
        if sealed.len() > MAX_MANIFEST
            || sealed.len() < 1 + 12 + 16
            || sealed[0] != MANIFEST_VERSION
        {
            return Err(BackupError::Open);
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&sealed[1..13]);
        let mut buf = Zeroizing::new(sealed[13..].to_vec());
        let plain = self
            .manifest_key()
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&self.locator),
                &mut buf,
            )
            .map_err(|_| BackupError::Open)?;
        let plain = Zeroizing::new(unpadded(plain)?);
        let manifest: Manifest =
            crate::wire::decode(&plain, MAX_MANIFEST).map_err(|_| BackupError::Malformed)?;
        manifest.check()?;
        Ok(manifest)
    }
}

fn aead_key(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key)
            .unwrap_or_else(|_| unreachable!("a 32-byte key is a valid AES-256 key")),
    )
}

/// The size `len` bytes take once padded: at least 512, and at most 1/16 more above that (16
/// sizes per doubling).
pub fn padded_len(len: usize) -> usize {
    if len <= SMALLEST {
        return SMALLEST;
    }
    let bits = usize::BITS - (len - 1).leading_zeros();
    let step = 1usize << bits.saturating_sub(5);
    len.div_ceil(step) * step
}

/// `[length: u32 LE][bytes][zeros]`, [`padded_len`] long.
fn padded(plain: &[u8]) -> Vec<u8> {
    let len = padded_len(plain.len() + 4);
    let mut buf = Vec::with_capacity(len + 16);
    buf.extend_from_slice(&u32::try_from(plain.len()).unwrap_or(u32::MAX).to_le_bytes());
    buf.extend_from_slice(plain);
    buf.resize(len, 0);
    buf
}

fn unpadded(plain: &[u8]) -> Result<Vec<u8>, BackupError> {
    let len = plain
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(BackupError::Malformed)? as usize;
    plain
        .get(4..4 + len)
        .map(<[u8]>::to_vec)
        .ok_or(BackupError::Malformed)
}

/// The sealed size of a blob of `len` bytes.
pub fn sealed_len(len: usize) -> usize {
    padded_len(len + 4) + 16
}

/// What a new device needs to find and open a backup: sealed under the phrase's keys, a copy
/// at every holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Grows with every refresh: the newest manifest a restore finds wins.
    pub seq: u64,
    /// When it was made.
    pub made_at: Timestamp,
    /// The user's master secret: the restored device is an admin device of the user.
    pub master: [u8; 32],
    /// The device that made it (a restored device revokes it: it is presumed lost).
    #[serde(with = "crate::cert::peer_id_bytes")]
    pub device: PeerId,
    /// Shards needed of each blob.
    pub k: u8,
    /// Shards made of each blob: one per holder slot.
    pub n: u8,
    /// Who holds which slot.
    pub holders: Vec<ManifestHolder>,
    /// The blobs, each with the hashes of its shards.
    pub blobs: Vec<BlobRef>,
    /// Where the user's contacts' devices (holders among them) were last seen, so the
    /// restored device finds them at once.
    pub addresses: Vec<KnownAddrs>,
}

impl Drop for Manifest {
    fn drop(&mut self) {
        self.master.zeroize();
    }
}

/// One holder of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestHolder {
    /// Its slot: it keeps shard `slot` of every blob.
    pub slot: u8,
    /// The contact.
    pub user: UserId,
}

/// One sealed blob of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// Its id (random, never all zero): what holders file its shards under.
    pub id: [u8; 16],
    /// What it is part of (a vault document's name).
    pub doc: String,
    /// Which part of it, of how many.
    pub part: u16,
    /// Parts in all.
    pub parts: u16,
    /// A fingerprint of the document's version it was made from.
    pub version: [u8; 32],
    /// Its sealed size.
    pub sealed_len: u32,
    /// The BLAKE3 hash of each shard, by slot.
    pub shards: Vec<[u8; 32]>,
}

/// Known addresses of one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownAddrs {
    /// Its user.
    pub user: UserId,
    /// The device.
    #[serde(with = "crate::cert::peer_id_bytes")]
    pub peer: PeerId,
    /// Multiaddrs, as text.
    pub addrs: Vec<String>,
}

impl Manifest {
    /// Whether it holds together: a code shape, slots within it, a hash for every shard.
    pub fn check(&self) -> Result<(), BackupError> {
        let (k, n) = (usize::from(self.k), usize::from(self.n));
        if crate::erasure::Code::new(k, n).is_err()
            || self.holders.iter().any(|h| usize::from(h.slot) >= n)
            || self
                .blobs
                .iter()
                .any(|b| b.shards.len() != n || b.id == MANIFEST_PIECE || b.part >= b.parts)
        {
            return Err(BackupError::Malformed);
        }
        Ok(())
    }

    /// The user it is the backup of.
    pub fn user(&self) -> UserId {
        crate::UserSecret::from_master(self.master).user_id()
    }
}

/// A fresh blob id: random, never all zero.
pub fn blob_id() -> Result<[u8; 16], BackupError> {
    loop {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|_| BackupError::Rng)?;
        if id != MANIFEST_PIECE {
            return Ok(id);
        }
    }
}

/// The DHT key under which holders of the backup with `locator` announce themselves.
pub fn dht_key(locator: &[u8; 32]) -> Vec<u8> {
    let mut key = b"/volli/backup/".to_vec();
    key.extend_from_slice(&blake3::derive_key("volli/backup/1 dht", locator)[..20]);
    key
}

/// The rendezvous namespace under which holders of the backup with `locator` register.
pub fn rendezvous_namespace(locator: &[u8; 32]) -> String {
    let key = blake3::derive_key("volli/backup/1 rendezvous", locator);
    format!("volli-backup/{}", crate::transfer::hex(&key[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_round_trip_and_typos_are_caught() {
        for _ in 0..50 {
            let phrase = RecoveryPhrase::generate().unwrap();
            let words = phrase.words();
            assert_eq!(words.split(' ').count(), PHRASE_WORDS);
            let back = RecoveryPhrase::parse(&words).unwrap();
            assert_eq!(back.entropy(), phrase.entropy());
            // Upper case, hyphens and four-letter prefixes are the same phrase.
            let short: Vec<String> = words
                .split(' ')
                .map(|w| w.chars().take(4).collect::<String>().to_uppercase())
                .collect();
            assert_eq!(
                RecoveryPhrase::parse(&short.join("-")).unwrap().entropy(),
                phrase.entropy()
            );
        }
        let phrase = RecoveryPhrase::generate().unwrap();
        let words: Vec<String> = phrase.words().split(' ').map(str::to_owned).collect();
        assert_eq!(
            RecoveryPhrase::parse(&words[..11].join(" ")).err(),
            Some(BackupError::WordCount(11))
        );
        let mut bad = words.clone();
        bad[3] = "notaword".into();
        assert_eq!(
            RecoveryPhrase::parse(&bad.join(" ")).err(),
            Some(BackupError::UnknownWord(4))
        );
        // Swapping two different words is caught by the checksum most of the time; over
        // many phrases, nearly always.
        let mut caught = 0;
        for _ in 0..64 {
            let phrase = RecoveryPhrase::generate().unwrap();
            let mut words: Vec<String> = phrase.words().split(' ').map(str::to_owned).collect();
            if words[0] == words[1] {
                continue;
            }
            words.swap(0, 1);
            if RecoveryPhrase::parse(&words.join(" ")).is_err() {
                caught += 1;
            }
        }
        assert!(caught > 40, "{caught} of 64");
    }

    #[test]
    fn a_proof_opens_one_locator_at_one_holder_for_a_while() {
        let keys = BackupKeys::from_root(&[7; 32]);
        let holder = libp2p_identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let elsewhere = libp2p_identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let now = Timestamp::now();
        let proof = keys.prove(&holder, now);
        assert_eq!(proof.verify(&holder, now), Ok(keys.locator()));
        // At another node, too late, or altered: nothing.
        assert_eq!(proof.verify(&elsewhere, now), Err(BackupError::Proof));
        let later = Timestamp::from_millis(now.as_millis() + PROOF_SKEW_MS + 1);
        assert_eq!(proof.verify(&holder, later), Err(BackupError::Proof));
        let mut moved = proof.clone();
        moved.at += 1;
        assert_eq!(moved.verify(&holder, now), Err(BackupError::Proof));
        let mut other_key = proof.clone();
        other_key.key = BackupKeys::from_root(&[8; 32]).prove(&holder, now).key;
        assert_eq!(other_key.verify(&holder, now), Err(BackupError::Proof));
    }

    #[test]
    fn padding_stays_within_a_sixteenth() {
        for len in [
            0, 1, 500, 508, 513, 1000, 4097, 65_537, 1_000_003, 9_999_999,
        ] {
            let p = padded_len(len);
            assert!(p >= len.max(SMALLEST));
            assert!(len <= SMALLEST || (p - len) * 16 <= len, "{len} → {p}");
        }
    }

    #[test]
    fn blobs_and_manifests_open_only_with_their_keys() {
        let keys = BackupKeys::from_root(&[7; 32]);
        let other = BackupKeys::from_root(&[8; 32]);
        assert_ne!(keys.locator(), other.locator());
        let id = blob_id().unwrap();
        let sealed = keys.seal_blob(&id, b"hello");
        assert_eq!(sealed.len(), sealed_len(5));
        assert_eq!(keys.open_blob(&id, &sealed).unwrap(), b"hello");
        assert_eq!(other.open_blob(&id, &sealed), Err(BackupError::Open));
        assert_eq!(
            keys.open_blob(&blob_id().unwrap(), &sealed),
            Err(BackupError::Open)
        );
        let mut altered = sealed.clone();
        altered[3] ^= 1;
        assert_eq!(keys.open_blob(&id, &altered), Err(BackupError::Open));

        let user = crate::UserSecret::generate().unwrap();
        let manifest = Manifest {
            seq: 3,
            made_at: Timestamp::now(),
            master: *user.master_bytes(),
            device: libp2p_identity::Keypair::generate_ed25519()
                .public()
                .to_peer_id(),
            k: 3,
            n: 5,
            holders: vec![ManifestHolder {
                slot: 4,
                user: user.user_id(),
            }],
            blobs: vec![BlobRef {
                id,
                doc: "contacts".into(),
                part: 0,
                parts: 1,
                version: [1; 32],
                sealed_len: 600,
                shards: vec![[2; 32]; 5],
            }],
            addresses: Vec::new(),
        };
        let sealed = keys.seal_manifest(&manifest).unwrap();
        let opened = keys.open_manifest(&sealed).unwrap();
        assert_eq!(opened, manifest);
        assert_eq!(opened.user(), user.user_id());
        assert_eq!(other.open_manifest(&sealed), Err(BackupError::Open));
        // Sealed twice, it reads differently (a fresh nonce each time).
        assert_ne!(keys.seal_manifest(&manifest).unwrap(), sealed);
    }
}
