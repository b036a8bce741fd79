//! Invites: `volli://invite/<base64url(signed payload)>`.
//!
//! The payload names the inviter (user id and one device certificate), where to reach that
//! device, when the invite expires, how many times it may be used, and a one-time secret. It
//! is signed by the inviter's user key, so a tampered link is refused before anyone is dialed.
//! It deliberately omits the 1,216-byte X-Wing key: the invitee receives it in the inviter's
//! signed contact card while redeeming, which keeps the QR code small.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use multiaddr::Multiaddr;
use serde::{Deserialize, Serialize};

use crate::cert::DeviceCertificate;
use crate::ids::UserId;
use crate::keys::{Signature, UserSecret};
use crate::time::Timestamp;

/// The link scheme and path prefix.
pub const LINK_PREFIX: &str = "volli://invite/";
/// Longest link accepted; anything longer is refused before decoding.
pub const MAX_LINK_LEN: usize = 4096;
/// Addresses carried at most.
pub const MAX_ADDRS: usize = 8;
const VERSION: u8 = 1;
const DOMAIN: &[u8] = b"volli/invite/1";

/// Why an invite was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InviteError {
    /// Not an invite link, or not decodable.
    #[error("not a Volli invite link")]
    Malformed,
    /// A version this build does not understand.
    #[error("unsupported invite version {0}")]
    UnsupportedVersion(u8),
    /// The signature or the device certificate does not verify.
    #[error("the invite's signature does not verify")]
    BadSignature,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Body {
    version: u8,
    inviter: UserId,
    device: DeviceCertificate,
    addrs: Vec<Vec<u8>>,
    expires_at: Timestamp,
    max_uses: u16,
    secret: [u8; 16],
}

/// A signed invite.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    body: Body,
    signature: Signature,
}

impl Invite {
    /// Creates an invite from `device` (which must belong to `user`), reachable at `addrs`.
    pub fn create(
        user: &UserSecret,
        device: DeviceCertificate,
        addrs: &[Multiaddr],
        expires_at: Timestamp,
        max_uses: u16,
        secret: [u8; 16],
    ) -> Self {
        let body = Body {
            version: VERSION,
            inviter: user.user_id(),
            device,
            addrs: addrs.iter().take(MAX_ADDRS).map(|a| a.to_vec()).collect(),
            expires_at,
            max_uses: max_uses.max(1),
            secret,
        };
        let signature = user.sign(DOMAIN, &body_bytes(&body));
        Self { body, signature }
    }

    /// The `volli://invite/…` link.
    pub fn to_link(&self) -> String {
        let bytes = postcard::to_allocvec(self)
            .unwrap_or_else(|_| unreachable!("postcard encodes to a Vec"));
        format!("{LINK_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Parses a link and verifies its signature and certificate. Expiry is not checked here:
    /// see [`Self::is_expired`].
    pub fn parse(link: &str) -> Result<Self, InviteError> {
        let link = link.trim();
        if link.len() > MAX_LINK_LEN {
            return Err(InviteError::Malformed);
        }
        let encoded = link
            .strip_prefix(LINK_PREFIX)
            .ok_or(InviteError::Malformed)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| InviteError::Malformed)?;
        let invite: Invite = match postcard::take_from_bytes(&bytes) {
            Ok((invite, [])) => invite,
            _ => return Err(InviteError::Malformed),
        };
        invite.verify()?;
        Ok(invite)
    }

    fn verify(&self) -> Result<(), InviteError> {
        if self.body.version != VERSION {
            return Err(InviteError::UnsupportedVersion(self.body.version));
        }
        if self.body.addrs.len() > MAX_ADDRS {
            return Err(InviteError::Malformed);
        }
        self.body
            .inviter
            .verify(DOMAIN, &body_bytes(&self.body), &self.signature)
            .map_err(|_| InviteError::BadSignature)?;
        self.body
            .device
            .verify_for(&self.body.inviter, &self.body.device.peer_id())
            .map_err(|_| InviteError::BadSignature)
    }

    /// Whether the invite has expired at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.body.expires_at
    }

    /// The inviter.
    pub fn inviter(&self) -> UserId {
        self.body.inviter
    }
    /// The inviting device's certificate.
    pub fn device(&self) -> &DeviceCertificate {
        &self.body.device
    }
    /// Where the inviting device listens (undecodable addresses are skipped).
    pub fn addrs(&self) -> Vec<Multiaddr> {
        self.body
            .addrs
            .iter()
            .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
            .collect()
    }
    /// When it expires.
    pub fn expires_at(&self) -> Timestamp {
        self.body.expires_at
    }
    /// How many redemptions it allows.
    pub fn max_uses(&self) -> u16 {
        self.body.max_uses
    }
    /// The one-time secret the invitee presents.
    pub fn secret(&self) -> [u8; 16] {
        self.body.secret
    }
}

/// What the inviter stores instead of the secret: its hash.
pub fn secret_id(secret: &[u8; 16]) -> [u8; 32] {
    *blake3::keyed_hash(&blake3::derive_key("volli invite id v1", b""), secret).as_bytes()
}

fn body_bytes(body: &Body) -> Vec<u8> {
    postcard::to_allocvec(body).unwrap_or_else(|_| unreachable!("postcard encodes to a Vec"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::Permissions;
    use proptest::prelude::*;

    fn invite(expires_in_ms: i64) -> (UserSecret, Invite) {
        let user = UserSecret::generate().unwrap();
        let peer = libp2p_identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let cert =
            DeviceCertificate::issue(&user, peer, "laptop", Permissions::ALL, Timestamp::now());
        let addrs: Vec<Multiaddr> = vec![
            "/ip4/192.0.2.1/tcp/8471".parse().unwrap(),
            "/ip4/192.0.2.1/udp/8471/quic-v1".parse().unwrap(),
        ];
        let expires = Timestamp::from_millis(Timestamp::now().as_millis() + expires_in_ms);
        let invite = Invite::create(&user, cert, &addrs, expires, 1, [7; 16]);
        (user, invite)
    }

    #[test]
    fn link_round_trip_and_size() {
        let (user, invite) = invite(60_000);
        let link = invite.to_link();
        assert!(link.starts_with(LINK_PREFIX));
        assert!(
            link.len() < 600,
            "small enough for a QR code: {} chars",
            link.len()
        );
        let parsed = Invite::parse(&link).unwrap();
        assert_eq!(parsed, invite);
        assert_eq!(parsed.inviter(), user.user_id());
        assert_eq!(parsed.addrs().len(), 2);
        assert!(!parsed.is_expired(Timestamp::now()));
    }

    #[test]
    fn expiry_is_reported() {
        let (_, invite) = invite(-1);
        let parsed = Invite::parse(&invite.to_link()).unwrap();
        assert!(parsed.is_expired(Timestamp::now()));
    }

    #[test]
    fn tampering_is_detected() {
        let (_, invite) = invite(60_000);
        let mut t = invite.clone();
        t.body.max_uses = 1000;
        assert_eq!(Invite::parse(&t.to_link()), Err(InviteError::BadSignature));
        let mut t = invite.clone();
        t.body.expires_at = Timestamp::from_millis(i64::MAX);
        assert_eq!(Invite::parse(&t.to_link()), Err(InviteError::BadSignature));
        let mallory = UserSecret::generate().unwrap();
        let mut t = invite;
        t.body.inviter = mallory.user_id();
        t.signature = mallory.sign(DOMAIN, &body_bytes(&t.body));
        assert_eq!(
            Invite::parse(&t.to_link()),
            Err(InviteError::BadSignature),
            "certificate is not Mallory's"
        );
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [
            "",
            "volli://invite/",
            "volli://invite/!!!",
            "https://example.org",
            "volli://invite/AAAA",
        ] {
            assert_eq!(Invite::parse(bad), Err(InviteError::Malformed), "{bad:?}");
        }
        let long = format!("{LINK_PREFIX}{}", "A".repeat(MAX_LINK_LEN));
        assert_eq!(Invite::parse(&long), Err(InviteError::Malformed));
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in ".{0,600}") {
            let _ = Invite::parse(&s);
            let _ = Invite::parse(&format!("{LINK_PREFIX}{s}"));
        }

        #[test]
        fn parser_never_panics_on_random_payloads(bytes in proptest::collection::vec(any::<u8>(), 0..800)) {
            let _ = Invite::parse(&format!("{LINK_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)));
        }

        #[test]
        fn any_flipped_bit_is_refused(pos in 0usize..10_000, bit in 0u8..8) {
            let (_, invite) = invite(60_000);
            let mut bytes = postcard::to_allocvec(&invite).unwrap();
            let pos = pos % bytes.len();
            bytes[pos] ^= 1 << bit;
            let link = format!("{LINK_PREFIX}{}", URL_SAFE_NO_PAD.encode(&bytes));
            prop_assert!(Invite::parse(&link).is_err());
        }
    }
}
