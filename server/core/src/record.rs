//! Address records: a user's devices and where they listen, signed by the user key and
//! expiring, published in the DHT under `/volli/user/<user id>`. Anyone can check that a
//! record is the user's own and current; a node refuses to store or return anything else.

use multiaddr::Multiaddr;
use serde::{Deserialize, Serialize};

use crate::cert::DeviceCertificate;
use crate::ids::UserId;
use crate::keys::{Signature, UserSecret};
use crate::time::Timestamp;

/// Largest encoded record.
pub const MAX_RECORD_LEN: usize = 8 * 1024;
/// Devices listed at most.
pub const MAX_DEVICES: usize = 16;
/// Addresses per device at most.
pub const MAX_ADDRS: usize = 8;
const VERSION: u8 = 1;
const DOMAIN: &[u8] = b"volli/address-record/1";

/// The DHT key of a user's address record.
pub fn dht_key(user: &UserId) -> Vec<u8> {
    format!("/volli/user/{user}").into_bytes()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct DeviceEntry {
    certificate: DeviceCertificate,
    addrs: Vec<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Body {
    version: u8,
    user: UserId,
    issued_at: Timestamp,
    expires_at: Timestamp,
    devices: Vec<DeviceEntry>,
}

/// A signed address record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressRecord {
    body: Body,
    signature: Signature,
}

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Not decodable, or over a limit.
    #[error("malformed address record")]
    Malformed,
    /// The signature or a certificate does not verify.
    #[error("the address record does not verify")]
    BadSignature,
    /// Past its expiry.
    #[error("the address record has expired")]
    Expired,
}

impl AddressRecord {
    /// Signs a record of `devices` (certificate and addresses each) valid until `expires_at`.
    pub fn issue(
        user: &UserSecret,
        devices: &[(DeviceCertificate, Vec<Multiaddr>)],
        issued_at: Timestamp,
        expires_at: Timestamp,
    ) -> Self {
        let body = Body {
            version: VERSION,
            user: user.user_id(),
            issued_at,
            expires_at,
            devices: devices
                .iter()
                .take(MAX_DEVICES)
                .map(|(certificate, addrs)| DeviceEntry {
                    certificate: certificate.clone(),
                    addrs: addrs.iter().take(MAX_ADDRS).map(|a| a.to_vec()).collect(),
                })
                .collect(),
        };
        let signature = user.sign(DOMAIN, &body_bytes(&body));
        Self { body, signature }
    }

    /// Parses and verifies a record, refusing an expired one.
    pub fn from_bytes(bytes: &[u8], now: Timestamp) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD_LEN {
            return Err(RecordError::Malformed);
        }
        let record: AddressRecord = match postcard::take_from_bytes(bytes) {
            Ok((r, [])) => r,
            _ => return Err(RecordError::Malformed),
        };
        let b = &record.body;
        if b.version != VERSION
            || b.devices.len() > MAX_DEVICES
            || b.devices.iter().any(|d| d.addrs.len() > MAX_ADDRS)
        {
            return Err(RecordError::Malformed);
        }
        b.user
            .verify(DOMAIN, &body_bytes(b), &record.signature)
            .map_err(|_| RecordError::BadSignature)?;
        for d in &b.devices {
            d.certificate
                .verify_for(&b.user, &d.certificate.peer_id())
                .map_err(|_| RecordError::BadSignature)?;
        }
        if now >= b.expires_at {
            return Err(RecordError::Expired);
        }
        Ok(record)
    }

    /// Whether `value` is a valid, current record belonging under `key`.
    pub fn valid_for_key(key: &[u8], value: &[u8], now: Timestamp) -> bool {
        Self::from_bytes(value, now).is_ok_and(|r| dht_key(&r.body.user) == key)
    }

    /// The encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_else(|_| unreachable!("postcard encodes to a Vec"))
    }

    /// The user.
    pub fn user_id(&self) -> UserId {
        self.body.user
    }
    /// When it was signed; the newest record wins.
    pub fn issued_at(&self) -> Timestamp {
        self.body.issued_at
    }
    /// Each device with its addresses (undecodable addresses skipped).
    pub fn devices(&self) -> Vec<(DeviceCertificate, Vec<Multiaddr>)> {
        self.body
            .devices
            .iter()
            .map(|d| {
                let addrs = d
                    .addrs
                    .iter()
                    .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
                    .collect();
                (d.certificate.clone(), addrs)
            })
            .collect()
    }
}

fn body_bytes(body: &Body) -> Vec<u8> {
    postcard::to_allocvec(body).unwrap_or_else(|_| unreachable!("postcard encodes to a Vec"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::Permissions;
    use proptest::prelude::*;

    fn record(valid_ms: i64) -> (UserSecret, AddressRecord) {
        let user = UserSecret::generate().unwrap();
        let peer = libp2p_identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let cert = DeviceCertificate::issue(&user, peer, "n", Permissions::ALL, Timestamp::now());
        let addr: Multiaddr = "/ip4/192.0.2.9/tcp/8471".parse().unwrap();
        let now = Timestamp::now();
        let r = AddressRecord::issue(
            &user,
            &[(cert, vec![addr])],
            now,
            Timestamp::from_millis(now.as_millis() + valid_ms),
        );
        (user, r)
    }

    #[test]
    fn valid_records_belong_under_their_users_key_only() {
        let (user, r) = record(60_000);
        let now = Timestamp::now();
        assert!(AddressRecord::valid_for_key(
            &dht_key(&user.user_id()),
            &r.to_bytes(),
            now
        ));
        let other = UserSecret::generate().unwrap();
        assert!(!AddressRecord::valid_for_key(
            &dht_key(&other.user_id()),
            &r.to_bytes(),
            now
        ));
        assert_eq!(
            AddressRecord::from_bytes(&r.to_bytes(), now)
                .unwrap()
                .devices()[0]
                .1
                .len(),
            1
        );
    }

    #[test]
    fn expired_records_are_refused() {
        let (_, r) = record(-1);
        assert_eq!(
            AddressRecord::from_bytes(&r.to_bytes(), Timestamp::now()),
            Err(RecordError::Expired)
        );
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = AddressRecord::from_bytes(&bytes, Timestamp::now());
        }
    }
}
