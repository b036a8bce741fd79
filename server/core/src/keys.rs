//! The user's keys: one 32-byte master secret from which the Ed25519 signing key and the
//! X-Wing (X25519 + ML-KEM-768) HPKE keys are derived.
//!
//! Deriving everything from one secret keeps the identity a single value to store, seal with
//! a passphrase, or hand to a newly paired admin device. The X-Wing key comes in
//! *generations* ([`KemKey`]): generation 0 is the key a user starts with, and revoking a
//! device that held one moves the user to the next, so the revoked device cannot open what
//! is sealed afterwards. Devices without the master secret hold only the generations they
//! were given ([`KemKeyring`]). This module signs and exposes public keys; it does not
//! encrypt messages (that is the envelope's job) and does not touch files.

use std::fmt;

use crate::xwing::XWing;
use ed25519_dalek::{Signer as _, SigningKey};
use hpke::{Deserializable as _, Kem as _, Serializable as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroize as _;

use crate::ids::UserId;

/// Signing domains. Every signature Volli makes is bound to one of these labels, so a
/// signature made for one purpose can never be replayed as another.
pub mod domain {
    /// A device certificate: the user key vouches for a libp2p peer id.
    pub const DEVICE_CERT: &[u8] = b"volli/device-cert/1";

    /// The exact bytes that are signed: a length-prefixed domain label, then the message.
    pub(crate) fn message(domain: &[u8], message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + domain.len() + message.len());
        // Labels are short constants; the cast cannot truncate for any label defined here.
        out.push(u8::try_from(domain.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(domain);
        out.extend_from_slice(message);
        out
    }
}

/// Key handling failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The operating system's random source failed.
    #[error("the system random number generator failed")]
    Rng,
    /// A signature did not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// Bytes that should hold a key do not.
    #[error("malformed key material")]
    Malformed,
}

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 64]);

impl Signature {
    /// Wraps raw signature bytes.
    pub fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }
    /// The raw signature bytes.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::encoding::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::encoding::deserialize_array::<D, 64>(d).map(Self)
    }
}

/// A user's X-Wing public key, to which HPKE envelopes are sealed.
#[derive(Clone, PartialEq, Eq)]
pub struct KemPublicKey(<XWing as hpke::Kem>::PublicKey);

impl KemPublicKey {
    /// Encoded length in bytes.
    pub const LEN: usize = 1216;

    /// Parses an encoded X-Wing public key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        <XWing as hpke::Kem>::PublicKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| KeyError::Malformed)
    }

    /// The encoded key.
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_bytes().to_vec()
    }

    /// A short fingerprint (BLAKE3 of the encoding), for commitments and display.
    pub fn fingerprint(&self) -> [u8; 32] {
        *blake3::hash(&self.0.to_bytes()).as_bytes()
    }

    /// The underlying HPKE key.
    pub fn as_hpke(&self) -> &<XWing as hpke::Kem>::PublicKey {
        &self.0
    }
}

impl fmt::Debug for KemPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fp = self.fingerprint();
        write!(
            f,
            "KemPublicKey({:02x}{:02x}{:02x}{:02x}…)",
            fp[0], fp[1], fp[2], fp[3]
        )
    }
}

impl Serialize for KemPublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::encoding::serialize(&self.0.to_bytes(), s)
    }
}

impl<'de> Deserialize<'de> for KemPublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = crate::encoding::deserialize_vec(d, Self::LEN)?;
        Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

/// What others know of a user: the signing key (the `UserId` itself) and the KEM key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPublicKeys {
    /// The user id, which is the Ed25519 verifying key.
    pub user_id: UserId,
    /// The X-Wing key envelopes are sealed to.
    pub kem: KemPublicKey,
}

/// The user's secret identity. Held by every device of the user; never leaves them except
/// through pairing.
pub struct UserSecret {
    master: [u8; 32],
    signing: SigningKey,
    kem: <XWing as hpke::Kem>::PrivateKey,
    public: UserPublicKeys,
}

impl UserSecret {
    /// Length of the serialized secret.
    pub const LEN: usize = 32;

    /// A fresh identity from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut master = [0u8; 32];
        getrandom::fill(&mut master).map_err(|_| KeyError::Rng)?;
        let secret = Self::from_master(master);
        master.zeroize();
        Ok(secret)
    }

    /// Rebuilds the identity from its master secret.
    pub fn from_master(master: [u8; 32]) -> Self {
        let mut signing_seed = blake3::derive_key("volli user signing key v1", &master);
        let mut kem_ikm = blake3::derive_key("volli user kem key v1", &master);
        let signing = SigningKey::from_bytes(&signing_seed);
        let (kem, kem_public) = XWing::derive_keypair(&kem_ikm);
        signing_seed.zeroize();
        kem_ikm.zeroize();
        let user_id = UserId::from_verified_key(signing.verifying_key().to_bytes());
        Self {
            master,
            signing,
            kem,
            public: UserPublicKeys {
                user_id,
                kem: KemPublicKey(kem_public),
            },
        }
    }

    /// The master secret, for persisting. Handle with care.
    pub fn master_bytes(&self) -> &[u8; 32] {
        &self.master
    }

    /// This user's id.
    pub fn user_id(&self) -> UserId {
        self.public.user_id
    }

    /// This user's public keys.
    pub fn public_keys(&self) -> &UserPublicKeys {
        &self.public
    }

    /// The X-Wing private key, for opening envelopes.
    pub fn kem_secret(&self) -> &<XWing as hpke::Kem>::PrivateKey {
        &self.kem
    }

    /// Signs `message` under a signing `domain` (one of [`domain`]'s constants).
    pub fn sign(&self, domain: &[u8], message: &[u8]) -> Signature {
        Signature(
            self.signing
                .sign(&domain::message(domain, message))
                .to_bytes(),
        )
    }
}

impl UserSecret {
    /// Generation `generation` of this user's X-Wing key.
    pub fn kem_key(&self, generation: u32) -> KemKey {
        let mut seed = if generation == 0 {
            blake3::derive_key("volli user kem key v1", &self.master)
        } else {
            let mut input = self.master.to_vec();
            input.extend_from_slice(&generation.to_le_bytes());
            let seed = blake3::derive_key("volli user kem key generation v1", &input);
            input.zeroize();
            seed
        };
        let key = KemKey::from_seed(generation, seed);
        seed.zeroize();
        key
    }

    /// Every generation of the X-Wing key up to `current`.
    pub fn keyring(&self, current: u32) -> KemKeyring {
        KemKeyring::new((0..=current).map(|g| self.kem_key(g)).collect())
    }
}

/// One generation of the user's X-Wing key, with the seed it is derived from (what a device
/// without the master secret is given).
pub struct KemKey {
    generation: u32,
    seed: [u8; 32],
    secret: <XWing as hpke::Kem>::PrivateKey,
    public: KemPublicKey,
}

impl KemKey {
    /// The key of `generation` derived from `seed`.
    pub fn from_seed(generation: u32, seed: [u8; 32]) -> Self {
        let (secret, public) = XWing::derive_keypair(&seed);
        Self {
            generation,
            seed,
            secret,
            public: KemPublicKey(public),
        }
    }

    /// Its generation.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The seed, for handing to another device of the user. Handle with care.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The public key contacts seal to.
    pub fn public(&self) -> &KemPublicKey {
        &self.public
    }

    /// The private key, for opening envelopes.
    pub fn secret(&self) -> &<XWing as hpke::Kem>::PrivateKey {
        &self.secret
    }
}

impl Drop for KemKey {
    fn drop(&mut self) {
        self.seed.zeroize();
    }
}

impl fmt::Debug for KemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KemKey")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// The X-Wing keys a device holds: the current generation and earlier ones (an envelope
/// sealed just before a rotation may still arrive), newest first.
#[derive(Debug, Default)]
pub struct KemKeyring {
    keys: Vec<KemKey>,
}

impl KemKeyring {
    /// A keyring of `keys` (any order; one per generation).
    pub fn new(mut keys: Vec<KemKey>) -> Self {
        keys.sort_by_key(|k| std::cmp::Reverse(k.generation));
        keys.dedup_by_key(|k| k.generation);
        Self { keys }
    }

    /// The newest generation, if any.
    pub fn current(&self) -> Option<&KemKey> {
        self.keys.first()
    }

    /// Every key, newest first.
    pub fn keys(&self) -> &[KemKey] {
        &self.keys
    }

    /// Whether it holds no key (a device without the `messages` permission).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl Drop for UserSecret {
    fn drop(&mut self) {
        self.master.zeroize();
    }
}

impl fmt::Debug for UserSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserSecret")
            .field("user_id", &self.public.user_id)
            .finish_non_exhaustive()
    }
}

impl UserId {
    /// Wraps bytes that came out of a `VerifyingKey`, which are valid by construction.
    fn from_verified_key(bytes: [u8; 32]) -> Self {
        Self::from_bytes(bytes)
            .unwrap_or_else(|_| unreachable!("a VerifyingKey encodes a valid point"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_master_same_identity() {
        let a = UserSecret::generate().unwrap();
        let b = UserSecret::from_master(*a.master_bytes());
        assert_eq!(a.user_id(), b.user_id());
        assert_eq!(a.public_keys(), b.public_keys());
    }

    #[test]
    fn signatures_are_bound_to_their_domain() {
        let user = UserSecret::generate().unwrap();
        let sig = user.sign(domain::DEVICE_CERT, b"hello");
        user.user_id()
            .verify(domain::DEVICE_CERT, b"hello", &sig)
            .unwrap();
        assert_eq!(
            user.user_id().verify(b"volli/other/1", b"hello", &sig),
            Err(KeyError::BadSignature)
        );
        assert_eq!(
            user.user_id().verify(domain::DEVICE_CERT, b"hellO", &sig),
            Err(KeyError::BadSignature)
        );
    }

    #[test]
    fn generations_are_distinct_and_reproducible_from_their_seed() {
        let user = UserSecret::from_master([9; 32]);
        let zero = user.kem_key(0);
        assert_eq!(
            zero.public(),
            &user.public_keys().kem,
            "generation 0 is the original key"
        );
        let one = user.kem_key(1);
        assert_ne!(zero.public(), one.public());
        let again = KemKey::from_seed(1, *one.seed());
        assert_eq!(again.public(), one.public());
        let ring = user.keyring(2);
        assert_eq!(ring.current().map(KemKey::generation), Some(2));
        assert_eq!(ring.keys().len(), 3);
    }

    #[test]
    fn kem_key_round_trips() {
        let user = UserSecret::generate().unwrap();
        let bytes = user.public_keys().kem.to_vec();
        assert_eq!(bytes.len(), KemPublicKey::LEN);
        assert_eq!(
            KemPublicKey::from_bytes(&bytes).unwrap(),
            user.public_keys().kem
        );
        assert!(KemPublicKey::from_bytes(&bytes[1..]).is_err());
    }
}
