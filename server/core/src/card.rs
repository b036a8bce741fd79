//! Contact cards: what a user tells a contact about themselves — public keys, a display
//! name, their devices (certificates) and the contacts that hold mail for them (relays) —
//! signed by their user key. Exchanged when an invite is redeemed and re-sent when it changes.

use serde::{Deserialize, Serialize};

use crate::cert::DeviceCertificate;
use crate::ids::UserId;
use crate::keys::{KemPublicKey, Signature, UserPublicKeys, UserSecret};
use crate::time::Timestamp;

/// Largest encoded card accepted.
pub const MAX_CARD_LEN: usize = 12 * 1024;
/// Devices listed at most.
pub const MAX_DEVICES: usize = 16;
/// Relays listed at most.
pub const MAX_RELAYS: usize = 8;
/// Longest display name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
const VERSION: u8 = 1;
const DOMAIN: &[u8] = b"volli/contact-card/1";

/// Why a card was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CardError {
    /// Not decodable, or over a limit.
    #[error("malformed contact card")]
    Malformed,
    /// The signature or a device certificate does not verify.
    #[error("the contact card does not verify")]
    BadSignature,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Body {
    version: u8,
    keys: UserPublicKeys,
    name: String,
    devices: Vec<DeviceCertificate>,
    relays: Vec<UserId>,
    issued_at: Timestamp,
}

/// A signed contact card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactCard {
    body: Body,
    signature: Signature,
}

impl ContactCard {
    /// Issues a card for `user`. Devices and relays beyond the limits are dropped.
    pub fn issue(
        user: &UserSecret,
        name: &str,
        devices: &[DeviceCertificate],
        relays: &[UserId],
        issued_at: Timestamp,
    ) -> Self {
        Self::issue_with(
            user,
            &user.public_keys().kem,
            name,
            devices,
            relays,
            issued_at,
        )
    }

    /// Like [`Self::issue`], naming `kem` (a later generation of the user's X-Wing key) as
    /// the key to seal messages to.
    pub fn issue_with(
        user: &UserSecret,
        kem: &KemPublicKey,
        name: &str,
        devices: &[DeviceCertificate],
        relays: &[UserId],
        issued_at: Timestamp,
    ) -> Self {
        let mut end = name.len().min(MAX_NAME_LEN);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        let body = Body {
            version: VERSION,
            keys: UserPublicKeys {
                user_id: user.user_id(),
                kem: kem.clone(),
            },
            name: name[..end].to_owned(),
            devices: devices.iter().take(MAX_DEVICES).cloned().collect(),
            relays: relays.iter().take(MAX_RELAYS).copied().collect(),
            issued_at,
        };
        let signature = user.sign(DOMAIN, &body_bytes(&body));
        Self { body, signature }
    }

    /// Parses and verifies a card.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CardError> {
        if bytes.len() > MAX_CARD_LEN {
            return Err(CardError::Malformed);
        }
        let card: ContactCard = match postcard::take_from_bytes(bytes) {
            Ok((card, [])) => card,
            _ => return Err(CardError::Malformed),
        };
        card.verify()?;
        Ok(card)
    }

    fn verify(&self) -> Result<(), CardError> {
        let b = &self.body;
        if b.version != VERSION
            || b.name.len() > MAX_NAME_LEN
            || b.devices.len() > MAX_DEVICES
            || b.relays.len() > MAX_RELAYS
        {
            return Err(CardError::Malformed);
        }
        let user = b.keys.user_id;
        user.verify(DOMAIN, &body_bytes(b), &self.signature)
            .map_err(|_| CardError::BadSignature)?;
        for device in &b.devices {
            device
                .verify_for(&user, &device.peer_id())
                .map_err(|_| CardError::BadSignature)?;
        }
        Ok(())
    }

    /// The encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_else(|_| unreachable!("postcard encodes to a Vec"))
    }

    /// The user.
    pub fn user_id(&self) -> UserId {
        self.body.keys.user_id
    }
    /// The user's public keys.
    pub fn keys(&self) -> &UserPublicKeys {
        &self.body.keys
    }
    /// The name the user goes by.
    pub fn name(&self) -> &str {
        &self.body.name
    }
    /// The user's devices.
    pub fn devices(&self) -> &[DeviceCertificate] {
        &self.body.devices
    }
    /// Contacts that hold mail for the user.
    pub fn relays(&self) -> &[UserId] {
        &self.body.relays
    }
    /// When it was issued; a newer card replaces an older one.
    pub fn issued_at(&self) -> Timestamp {
        self.body.issued_at
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

    fn card() -> (UserSecret, ContactCard) {
        let user = UserSecret::generate().unwrap();
        let peer = libp2p_identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let cert =
            DeviceCertificate::issue(&user, peer, "phone", Permissions::ALL, Timestamp::now());
        let card = ContactCard::issue(&user, "Alice", &[cert], &[], Timestamp::now());
        (user, card)
    }

    #[test]
    fn round_trip() {
        let (user, card) = card();
        let parsed = ContactCard::from_bytes(&card.to_bytes()).unwrap();
        assert_eq!(parsed, card);
        assert_eq!(parsed.user_id(), user.user_id());
        assert_eq!(parsed.keys().kem, user.public_keys().kem);
        assert_eq!(parsed.name(), "Alice");
    }

    #[test]
    fn foreign_devices_are_refused() {
        let (_, card) = card();
        let mallory = UserSecret::generate().unwrap();
        let stolen = ContactCard::issue(&mallory, "Mallory", card.devices(), &[], Timestamp::now());
        assert_eq!(
            ContactCard::from_bytes(&stolen.to_bytes()),
            Err(CardError::BadSignature)
        );
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4000)) {
            let _ = ContactCard::from_bytes(&bytes);
        }
    }
}
