//! Signed statements about the user's own devices, which any device must be able to check
//! without trusting whoever handed them over.
//!
//! The `devices` document of the vault is synced between all of a user's devices, and a
//! CRDT update can be written by any of them — a `contacts`-only device or a revoked one
//! included. So what must only come from an admin device is not a plain value in it but a
//! [`Statement`] signed by the user key: *device P is revoked*, *contacts now seal to X-Wing
//! key generation G*. Where a device listens is signed by that device's own key
//! ([`DeviceAddrs`]), so no other device can redirect it. The vault keeps statements as a
//! grow-only set and refuses an import that would take a valid one away (see
//! `volli_store::vault::devices`).
//!
//! This module only signs and checks; it does not decide what a statement means for sync.

use libp2p_identity::Keypair;
use serde::{Deserialize, Serialize};

use crate::cert::peer_id_bytes;
use crate::ids::{PeerId, UserId};
use crate::keys::{Signature, UserSecret, domain};
use crate::signer::public_key_of;
use crate::time::Timestamp;

/// The highest X-Wing key generation a statement may name. A generation is used up by each
/// revocation of a device that held message keys; every admin device derives all of them at
/// start, so the bound is also a bound on that work (≈ 0.1 ms and 3 KiB per generation).
pub const MAX_GENERATION: u32 = 1024;
/// Largest encoded statement accepted.
pub const MAX_STATEMENT_LEN: usize = 512;
/// Addresses a device record may list.
pub const MAX_ADDRS: usize = 16;
/// Longest address in a device record, in bytes.
pub const MAX_ADDR_LEN: usize = 256;
/// Largest encoded device record accepted.
pub const MAX_DEVICE_ADDRS_LEN: usize = 8 * 1024;

const VERSION: u8 = 1;
const STATEMENT_DOMAIN: &[u8] = b"volli/user-statement/1";
const ADDRS_DOMAIN: &[u8] = b"volli/device-addrs/1";

/// Why a statement or a device record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StatementError {
    /// Not decodable, or over a limit.
    #[error("malformed statement")]
    Malformed,
    /// The signature does not verify.
    #[error("the statement's signature does not verify")]
    BadSignature,
}

/// What a statement says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Claim {
    /// The device is no longer one of the user's: final.
    Revoked {
        /// The device.
        #[serde(with = "peer_id_bytes")]
        peer: PeerId,
    },
    /// Contacts seal to this generation of the user's X-Wing key from now on.
    KeyGeneration {
        /// The generation (at most [`MAX_GENERATION`]).
        generation: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Body {
    version: u8,
    user: UserId,
    claim: Claim,
    issued_at: Timestamp,
}

/// A claim about the user's devices, signed by the user key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    body: Body,
    signature: Signature,
}

impl Statement {
    /// Signs `claim` for `user`.
    pub fn issue(user: &UserSecret, claim: Claim, issued_at: Timestamp) -> Self {
        let body = Body {
            version: VERSION,
            user: user.user_id(),
            claim,
            issued_at,
        };
        let signature = user.sign(STATEMENT_DOMAIN, &encode(&body));
        Self { body, signature }
    }

    /// Parses a statement and checks its signature and bounds.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StatementError> {
        if bytes.len() > MAX_STATEMENT_LEN {
            return Err(StatementError::Malformed);
        }
        let statement: Self = match postcard::take_from_bytes(bytes) {
            Ok((s, [])) => s,
            _ => return Err(StatementError::Malformed),
        };
        let b = &statement.body;
        if b.version != VERSION
            || matches!(b.claim, Claim::KeyGeneration { generation } if generation > MAX_GENERATION)
        {
            return Err(StatementError::Malformed);
        }
        b.user
            .verify(STATEMENT_DOMAIN, &encode(b), &statement.signature)
            .map_err(|_| StatementError::BadSignature)?;
        Ok(statement)
    }

    /// The encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// The user who signed it.
    pub fn user_id(&self) -> UserId {
        self.body.user
    }

    /// What it says.
    pub fn claim(&self) -> &Claim {
        &self.body.claim
    }

    /// When it was signed.
    pub fn issued_at(&self) -> Timestamp {
        self.body.issued_at
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct AddrsBody {
    version: u8,
    #[serde(with = "peer_id_bytes")]
    peer: PeerId,
    addrs: Vec<String>,
    issued_at: Timestamp,
}

/// Where a device says it listens, signed by the device's own key: the user's other devices
/// dial it there, and no other device can change it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceAddrs {
    body: AddrsBody,
    signature: Signature,
}

impl DeviceAddrs {
    /// Signs `addrs` (at most [`MAX_ADDRS`], longer ones dropped) with the device key.
    pub fn issue(key: &Keypair, addrs: &[String], issued_at: Timestamp) -> Self {
        let body = AddrsBody {
            version: VERSION,
            peer: key.public().to_peer_id(),
            addrs: addrs
                .iter()
                .filter(|a| a.len() <= MAX_ADDR_LEN)
                .take(MAX_ADDRS)
                .cloned()
                .collect(),
            issued_at,
        };
        let signed = key
            .sign(&domain::message(ADDRS_DOMAIN, &encode(&body)))
            .ok()
            .and_then(|s| <[u8; 64]>::try_from(s).ok())
            .unwrap_or([0; 64]);
        Self {
            body,
            signature: Signature::from_bytes(signed),
        }
    }

    /// Parses a record and checks it is signed by the device it names.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StatementError> {
        if bytes.len() > MAX_DEVICE_ADDRS_LEN {
            return Err(StatementError::Malformed);
        }
        let record: Self = match postcard::take_from_bytes(bytes) {
            Ok((r, [])) => r,
            _ => return Err(StatementError::Malformed),
        };
        let b = &record.body;
        if b.version != VERSION
            || b.addrs.len() > MAX_ADDRS
            || b.addrs.iter().any(|a| a.len() > MAX_ADDR_LEN)
        {
            return Err(StatementError::Malformed);
        }
        let key = public_key_of(&b.peer).ok_or(StatementError::BadSignature)?;
        if !key.verify(
            &domain::message(ADDRS_DOMAIN, &encode(b)),
            record.signature.as_bytes(),
        ) {
            return Err(StatementError::BadSignature);
        }
        Ok(record)
    }

    /// The encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// The device.
    pub fn peer_id(&self) -> PeerId {
        self.body.peer
    }

    /// Its addresses (multiaddrs as text).
    pub fn addrs(&self) -> &[String] {
        &self.body.addrs
    }

    /// When the device signed it; a newer record replaces an older one.
    pub fn issued_at(&self) -> Timestamp {
        self.body.issued_at
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap_or_else(|_| unreachable!("postcard encodes to a Vec"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer() -> PeerId {
        Keypair::generate_ed25519().public().to_peer_id()
    }

    #[test]
    fn statements_round_trip_and_name_their_signer() {
        let user = UserSecret::from_master([7; 32]);
        let p = peer();
        for claim in [
            Claim::Revoked { peer: p },
            Claim::KeyGeneration { generation: 3 },
        ] {
            let s = Statement::issue(&user, claim.clone(), Timestamp::from_millis(5));
            let parsed = Statement::from_bytes(&s.to_bytes()).unwrap();
            assert_eq!(parsed, s);
            assert_eq!(parsed.user_id(), user.user_id());
            assert_eq!(parsed.claim(), &claim);
        }
    }

    #[test]
    fn forged_altered_and_out_of_range_statements_are_refused() {
        let user = UserSecret::from_master([7; 32]);
        let mallory = UserSecret::from_master([8; 32]);
        let s = Statement::issue(&user, Claim::Revoked { peer: peer() }, Timestamp::now());
        // Mallory's signature over a body that names the user.
        let mut forged = s.clone();
        forged.signature = mallory.sign(STATEMENT_DOMAIN, &encode(&forged.body));
        assert_eq!(
            Statement::from_bytes(&forged.to_bytes()),
            Err(StatementError::BadSignature)
        );
        // Another claim under the user's signature.
        let mut altered = s.clone();
        altered.body.claim = Claim::Revoked { peer: peer() };
        assert_eq!(
            Statement::from_bytes(&altered.to_bytes()),
            Err(StatementError::BadSignature)
        );
        // A validly signed generation past the bound.
        let huge = Statement::issue(
            &user,
            Claim::KeyGeneration {
                generation: MAX_GENERATION + 1,
            },
            Timestamp::now(),
        );
        assert_eq!(
            Statement::from_bytes(&huge.to_bytes()),
            Err(StatementError::Malformed)
        );
        let mut trailing = s.to_bytes();
        trailing.push(0);
        assert_eq!(
            Statement::from_bytes(&trailing),
            Err(StatementError::Malformed)
        );
    }

    #[test]
    fn device_records_hold_only_under_the_devices_own_key() {
        let key = Keypair::generate_ed25519();
        let other = Keypair::generate_ed25519();
        let addrs = vec!["/ip4/10.0.0.1/tcp/4001".to_owned()];
        let record = DeviceAddrs::issue(&key, &addrs, Timestamp::from_millis(9));
        let parsed = DeviceAddrs::from_bytes(&record.to_bytes()).unwrap();
        assert_eq!(parsed.peer_id(), key.public().to_peer_id());
        assert_eq!(parsed.addrs(), addrs.as_slice());
        // Another device's key over a record naming this device.
        let mut forged = DeviceAddrs::issue(&other, &addrs, Timestamp::from_millis(9));
        forged.body.peer = key.public().to_peer_id();
        assert_eq!(
            DeviceAddrs::from_bytes(&forged.to_bytes()),
            Err(StatementError::BadSignature)
        );
        // Too many or too long addresses are dropped when signing.
        let many: Vec<String> = (0..40)
            .map(|i| format!("/ip4/10.0.0.{i}/tcp/1"))
            .chain(["x".repeat(MAX_ADDR_LEN + 1)])
            .collect();
        let capped = DeviceAddrs::issue(&key, &many, Timestamp::now());
        assert_eq!(capped.addrs().len(), MAX_ADDRS);
        DeviceAddrs::from_bytes(&capped.to_bytes()).unwrap();
    }

    proptest! {
        #[test]
        fn parsers_never_panic_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = Statement::from_bytes(&bytes);
            let _ = DeviceAddrs::from_bytes(&bytes);
        }
    }
}
