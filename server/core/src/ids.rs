//! Identifiers: a user (`UserId`) and a device (`PeerId`, libp2p's).
//!
//! A `UserId` *is* the user's Ed25519 public key, written in base58btc. Anyone holding a
//! `UserId` can therefore verify what the user signed (device certificates, invites, relay
//! lists) without a key lookup, and an id cannot be claimed without the matching secret key.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::keys::Signature;

pub use libp2p_identity::PeerId;

/// Why a string or byte string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Not base58btc, or not 32 bytes once decoded.
    #[error("not a user id: expected 32 bytes in base58btc")]
    Malformed,
    /// 32 bytes that are not an Ed25519 public key.
    #[error("not a user id: not a valid Ed25519 public key")]
    NotAKey,
    /// Not a libp2p peer id.
    #[error("not a peer id")]
    BadPeerId,
}

/// A user's identity: their Ed25519 public key, shared by all the user's devices.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId([u8; 32]);

impl UserId {
    /// Parses raw key bytes, checking that they are a valid Ed25519 point.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, IdError> {
        // The check is a point decompression (a square root in the field, ≈ 10 µs), and the
        // same few ids (this user, its contacts) arrive on every message: keys that passed
        // are remembered, a bounded number of them.
        static VALID: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<[u8; 32]>>> =
            std::sync::LazyLock::new(Default::default);
        const REMEMBERED: usize = 4096;
        if VALID
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&bytes)
        {
            return Ok(Self(bytes));
        }
        VerifyingKey::from_bytes(&bytes).map_err(|_| IdError::NotAKey)?;
        let mut valid = VALID
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if valid.len() >= REMEMBERED {
            valid.clear();
        }
        valid.insert(bytes);
        Ok(Self(bytes))
    }

    /// The raw public key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Verifies `signature` over `message` under `domain` (see [`crate::keys::domain`]).
    pub fn verify(
        &self,
        domain: &[u8],
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), crate::KeyError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| crate::KeyError::BadSignature)?;
        let sig = ed25519_dalek::Signature::from_bytes(signature.as_bytes());
        key.verify_strict(&crate::keys::domain::message(domain, message), &sig)
            .map_err(|_| crate::KeyError::BadSignature)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Base58 is quadratic in the length (≈ 1 µs for a key), and the same few ids are
        // written several times for every message stored: each thread remembers them.
        thread_local! {
            static TEXT: std::cell::RefCell<std::collections::HashMap<[u8; 32], String>> =
                std::cell::RefCell::default();
        }
        const REMEMBERED: usize = 1024;
        TEXT.with(|text| {
            let mut text = text.borrow_mut();
            if text.len() >= REMEMBERED && !text.contains_key(&self.0) {
                text.clear();
            }
            f.write_str(
                text.entry(self.0)
                    .or_insert_with(|| bs58::encode(&self.0).into_string()),
            )
        })
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({self})")
    }
}

impl FromStr for UserId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        // 32 bytes are at most 44 base58 characters; refuse anything longer before decoding.
        if s.is_empty() || s.len() > 44 {
            return Err(IdError::Malformed);
        }
        let mut bytes = [0u8; 32];
        let n = bs58::decode(s)
            .onto(&mut bytes)
            .map_err(|_| IdError::Malformed)?;
        if n != 32 {
            return Err(IdError::Malformed);
        }
        Self::from_bytes(bytes)
    }
}

impl Serialize for UserId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            crate::encoding::serialize(&self.0, serializer)
        }
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            let bytes = crate::encoding::deserialize_array::<D, 32>(deserializer)?;
            Self::from_bytes(bytes).map_err(serde::de::Error::custom)
        }
    }
}

/// Parses a peer id from text, mapping libp2p's error to ours.
pub fn parse_peer_id(s: &str) -> Result<PeerId, IdError> {
    s.parse().map_err(|_| IdError::BadPeerId)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UserSecret;

    #[test]
    fn user_id_text_round_trip() {
        let secret = UserSecret::generate().unwrap();
        let id = secret.user_id();
        let text = id.to_string();
        assert_eq!(text.parse::<UserId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<UserId>(&json).unwrap(), id);
    }

    #[test]
    fn garbage_user_ids_are_refused() {
        for bad in [
            "",
            "0",
            "hello world",
            "11111111111111111111111111111111111111111111111",
        ] {
            assert!(bad.parse::<UserId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn binary_round_trip() {
        let id = UserSecret::generate().unwrap().user_id();
        let bytes = postcard::to_allocvec(&id).unwrap();
        assert_eq!(postcard::from_bytes::<UserId>(&bytes).unwrap(), id);
    }
}
