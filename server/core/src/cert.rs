//! Device certificates: the user key's statement that a libp2p peer id is one of the user's
//! devices, with a name and permissions.
//!
//! A peer proves possession of its peer id through libp2p's Noise handshake; the certificate
//! then binds that peer id to a user. Nodes accept a peer as a user's device only after
//! [`DeviceCertificate::verify_for`] succeeds. Revocation is not handled here.

use serde::{Deserialize, Serialize};

use crate::ids::{PeerId, UserId};
use crate::keys::{Signature, UserSecret, domain};
use crate::time::Timestamp;

/// Upper bound on an encoded certificate; anything longer is refused before parsing.
pub const MAX_CERT_LEN: usize = 1024;
/// Upper bound on a device name, in bytes.
pub const MAX_DEVICE_NAME_LEN: usize = 64;
const VERSION: u8 = 1;

/// Why a certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// Not a certificate encoding at all, or too long.
    #[error("malformed device certificate")]
    Malformed,
    /// A version this build does not understand.
    #[error("unsupported device certificate version {0}")]
    UnsupportedVersion(u8),
    /// The signature does not verify under the claimed user key.
    #[error("device certificate signature does not verify")]
    BadSignature,
    /// Valid, but for another user than expected.
    #[error("device certificate belongs to another user")]
    WrongUser,
    /// Valid, but for another peer id than the one presenting it.
    #[error("device certificate names another peer id")]
    WrongPeer,
}

/// What a device may do on the user's behalf.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions(u32);

impl Permissions {
    /// Send and read messages (and hold the user's X-Wing key).
    pub const MESSAGES: Self = Self(1);
    /// See and change the contacts.
    pub const CONTACTS: Self = Self(1 << 1);
    /// Hold the user's signing key: pair and revoke devices, issue invites and contact
    /// cards. A copied signing key cannot be revoked.
    pub const ADMIN: Self = Self(1 << 2);
    /// See and change the settings.
    pub const SETTINGS: Self = Self(1 << 3);
    /// Everything: what the first device of a user gets.
    pub const ALL: Self = Self(0b1111);
    /// No permission at all.
    pub const NONE: Self = Self(0);

    const NAMES: [(Self, &'static str); 4] = [
        (Self::MESSAGES, "messages"),
        (Self::CONTACTS, "contacts"),
        (Self::SETTINGS, "settings"),
        (Self::ADMIN, "admin"),
    ];

    /// Whether every permission in `other` is granted.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The names of the granted permissions, for display.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(p, _)| self.contains(*p))
            .map(|(_, n)| *n)
            .collect()
    }

    /// Parses a permission name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(p, _)| *p)
    }

    /// The union of two permission sets.
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Body {
    version: u8,
    user_id: UserId,
    #[serde(with = "peer_id_bytes")]
    peer_id: PeerId,
    device_name: String,
    permissions: Permissions,
    issued_at: Timestamp,
}

/// A signed statement: `peer_id` is a device of `user_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCertificate {
    body: Body,
    signature: Signature,
}

impl DeviceCertificate {
    /// Issues a certificate for `peer_id`, signed by the user key.
    pub fn issue(
        user: &UserSecret,
        peer_id: PeerId,
        device_name: &str,
        permissions: Permissions,
        issued_at: Timestamp,
    ) -> Self {
        let body = Body {
            version: VERSION,
            user_id: user.user_id(),
            peer_id,
            device_name: truncate(device_name, MAX_DEVICE_NAME_LEN),
            permissions,
            issued_at,
        };
        let signature = user.sign(domain::DEVICE_CERT, &body_bytes(&body));
        Self { body, signature }
    }

    /// Checks the version and the signature under the user key the certificate names.
    pub fn verify(&self) -> Result<(), CertError> {
        if self.body.version != VERSION {
            return Err(CertError::UnsupportedVersion(self.body.version));
        }
        if self.body.device_name.len() > MAX_DEVICE_NAME_LEN {
            return Err(CertError::Malformed);
        }
        self.body
            .user_id
            .verify(
                domain::DEVICE_CERT,
                &body_bytes(&self.body),
                &self.signature,
            )
            .map_err(|_| CertError::BadSignature)
    }

    /// Verifies the certificate and that it binds exactly `peer` to `user`.
    pub fn verify_for(&self, user: &UserId, peer: &PeerId) -> Result<(), CertError> {
        self.verify()?;
        if &self.body.user_id != user {
            return Err(CertError::WrongUser);
        }
        if &self.body.peer_id != peer {
            return Err(CertError::WrongPeer);
        }
        Ok(())
    }

    /// The user this device belongs to.
    pub fn user_id(&self) -> UserId {
        self.body.user_id
    }
    /// The device's libp2p peer id.
    pub fn peer_id(&self) -> PeerId {
        self.body.peer_id
    }
    /// The device's name as the user chose it.
    pub fn device_name(&self) -> &str {
        &self.body.device_name
    }
    /// What the device may do.
    pub fn permissions(&self) -> Permissions {
        self.body.permissions
    }
    /// When the user key signed it.
    pub fn issued_at(&self) -> Timestamp {
        self.body.issued_at
    }

    /// Compact binary encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_else(|_| unreachable!("postcard encodes to a Vec"))
    }

    /// Parses the binary encoding. Does not verify: call [`Self::verify_for`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CertError> {
        if bytes.len() > MAX_CERT_LEN {
            return Err(CertError::Malformed);
        }
        match postcard::take_from_bytes::<Self>(bytes) {
            Ok((cert, [])) => Ok(cert),
            _ => Err(CertError::Malformed),
        }
    }
}

fn body_bytes(body: &Body) -> Vec<u8> {
    postcard::to_allocvec(body).unwrap_or_else(|_| unreachable!("postcard encodes to a Vec"))
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

pub(crate) mod peer_id_bytes {
    use super::PeerId;
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(p: &PeerId, s: S) -> Result<S::Ok, S::Error> {
        crate::encoding::serialize(&p.to_bytes(), s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PeerId, D::Error> {
        let bytes = crate::encoding::deserialize_vec(d, 64)?;
        PeerId::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::Keypair;
    use proptest::prelude::*;

    fn fixture() -> (UserSecret, PeerId, DeviceCertificate) {
        let user = UserSecret::generate().unwrap();
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let cert =
            DeviceCertificate::issue(&user, peer, "laptop", Permissions::ALL, Timestamp::now());
        (user, peer, cert)
    }

    #[test]
    fn valid_certificate_verifies_after_round_trip() {
        let (user, peer, cert) = fixture();
        let parsed = DeviceCertificate::from_bytes(&cert.to_bytes()).unwrap();
        assert_eq!(parsed, cert);
        parsed.verify_for(&user.user_id(), &peer).unwrap();
        assert_eq!(parsed.device_name(), "laptop");
        assert!(parsed.permissions().contains(Permissions::ADMIN));
    }

    #[test]
    fn tampered_certificate_is_refused() {
        let (user, peer, cert) = fixture();
        let mut tampered = cert.clone();
        tampered.body.permissions = Permissions::MESSAGES;
        assert_eq!(tampered.verify(), Err(CertError::BadSignature));

        let other_peer = Keypair::generate_ed25519().public().to_peer_id();
        let mut moved = cert.clone();
        moved.body.peer_id = other_peer;
        assert_eq!(
            moved.verify_for(&user.user_id(), &other_peer),
            Err(CertError::BadSignature)
        );
        assert_eq!(
            cert.verify_for(&user.user_id(), &other_peer),
            Err(CertError::WrongPeer)
        );
        let _ = peer;
    }

    #[test]
    fn certificate_signed_by_wrong_key_is_refused() {
        let (_, peer, cert) = fixture();
        let mallory = UserSecret::generate().unwrap();
        // Mallory claims someone else's device by re-signing the body with her key while
        // keeping the victim's user id: the signature cannot verify.
        let mut forged = cert.clone();
        forged.signature = mallory.sign(domain::DEVICE_CERT, &body_bytes(&forged.body));
        assert_eq!(forged.verify(), Err(CertError::BadSignature));
        // Her own, honest certificate for the peer is valid but for the wrong user.
        let hers =
            DeviceCertificate::issue(&mallory, peer, "x", Permissions::ALL, Timestamp::now());
        assert_eq!(
            hers.verify_for(&cert.user_id(), &peer),
            Err(CertError::WrongUser)
        );
    }

    #[test]
    fn long_device_names_are_truncated_on_a_char_boundary() {
        let user = UserSecret::generate().unwrap();
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let cert = DeviceCertificate::issue(
            &user,
            peer,
            &"é".repeat(100),
            Permissions::ALL,
            Timestamp::now(),
        );
        assert_eq!(cert.device_name().len(), MAX_DEVICE_NAME_LEN);
        cert.verify().unwrap();
    }

    proptest! {
        #[test]
        fn parser_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = DeviceCertificate::from_bytes(&bytes);
        }

        #[test]
        fn any_single_bit_flip_is_detected(pos in 0usize..4096, bit in 0u8..8) {
            let (user, peer, cert) = fixture();
            let mut bytes = cert.to_bytes();
            let pos = pos % bytes.len();
            bytes[pos] ^= 1 << bit;
            if let Ok(parsed) = DeviceCertificate::from_bytes(&bytes) {
                prop_assert!(parsed.verify_for(&user.user_id(), &peer).is_err());
            }
        }
    }
}
