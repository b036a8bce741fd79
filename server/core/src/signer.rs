//! Who signs for a user: the user key itself, on a device that holds it (an `admin` device),
//! or one of the user's devices with its own key, vouched for by the user's certificate for
//! it. Messages and receipts carry a [`Proof`] of either kind, so a device that was never
//! given the user's signing key can still send and acknowledge messages — and stops being
//! believed as soon as the user's contact card no longer lists it.

use libp2p_identity::{Keypair, PublicKey};
use serde::{Deserialize, Serialize};

use crate::cert::{DeviceCertificate, Permissions};
use crate::ids::{PeerId, UserId};
use crate::keys::{Signature, UserSecret, domain};

/// Signs on behalf of a user.
pub enum Signer<'a> {
    /// The user key.
    User(&'a UserSecret),
    /// A device's own key and the user's certificate for it.
    Device {
        /// The device key (its libp2p identity).
        key: &'a Keypair,
        /// The user's certificate for that key.
        certificate: &'a DeviceCertificate,
    },
}

impl Signer<'_> {
    /// The user signed for.
    pub fn user_id(&self) -> UserId {
        match self {
            Self::User(user) => user.user_id(),
            Self::Device { certificate, .. } => certificate.user_id(),
        }
    }

    /// A proof over `message` under `domain`.
    pub(crate) fn prove(&self, domain: &[u8], message: &[u8]) -> Proof {
        match self {
            Self::User(user) => Proof::User(user.sign(domain, message)),
            Self::Device { key, certificate } => {
                let bytes = key
                    .sign(&domain::message(domain, message))
                    .ok()
                    .and_then(|s| <[u8; 64]>::try_from(s).ok())
                    .unwrap_or([0; 64]);
                Proof::Device {
                    certificate: Box::new((*certificate).clone()),
                    signature: Signature::from_bytes(bytes),
                }
            }
        }
    }
}

/// A signature by a user, directly or through one of its devices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Proof {
    /// By the user key.
    User(Signature),
    /// By a device key, with the user's certificate for the device.
    Device {
        certificate: Box<DeviceCertificate>,
        signature: Signature,
    },
}

/// Why a proof was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadProof;

impl Proof {
    /// Checks that `user` (or a device of `user` allowed `needs`) signed `message` under
    /// `domain`; returns the device, if a device signed.
    pub(crate) fn verify(
        &self,
        user: &UserId,
        needs: Permissions,
        domain: &[u8],
        message: &[u8],
    ) -> Result<Option<PeerId>, BadProof> {
        match self {
            Self::User(signature) => user
                .verify(domain, message, signature)
                .map(|()| None)
                .map_err(|_| BadProof),
            Self::Device {
                certificate,
                signature,
            } => {
                let peer = certificate.peer_id();
                certificate.verify_for(user, &peer).map_err(|_| BadProof)?;
                if !certificate.permissions().contains(needs) {
                    return Err(BadProof);
                }
                let key = public_key_of(&peer).ok_or(BadProof)?;
                if key.verify(&domain::message(domain, message), signature.as_bytes()) {
                    Ok(Some(peer))
                } else {
                    Err(BadProof)
                }
            }
        }
    }
}

/// The Ed25519 public key of a device, as the 32 bytes inside its peer id.
pub fn ed25519_public_key(peer: &PeerId) -> Option<[u8; 32]> {
    public_key_of(peer)?
        .try_into_ed25519()
        .ok()
        .map(|key| key.to_bytes())
}

/// The public key inside a peer id (Ed25519 keys are small enough to be inlined).
pub(crate) fn public_key_of(peer: &PeerId) -> Option<PublicKey> {
    // A multihash: code 0x00 (identity), a one-byte length, then the protobuf-encoded key.
    let bytes = peer.to_bytes();
    match bytes.as_slice() {
        [0x00, len, key @ ..] if usize::from(*len) == key.len() => {
            PublicKey::try_decode_protobuf(key).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    #[test]
    fn device_proofs_hold_only_for_the_certified_device_and_permission() {
        let user = UserSecret::from_master([4; 32]);
        let other = UserSecret::from_master([5; 32]);
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let cert = DeviceCertificate::issue(
            &user,
            peer,
            "phone",
            Permissions::MESSAGES,
            Timestamp::now(),
        );
        let signer = Signer::Device {
            key: &key,
            certificate: &cert,
        };
        let proof = signer.prove(b"volli/test/1", b"hello");
        let me = user.user_id();
        assert_eq!(
            proof.verify(&me, Permissions::MESSAGES, b"volli/test/1", b"hello"),
            Ok(Some(peer))
        );
        assert!(
            proof
                .verify(&me, Permissions::MESSAGES, b"volli/test/1", b"hellO")
                .is_err()
        );
        assert!(
            proof
                .verify(&me, Permissions::MESSAGES, b"volli/other/1", b"hello")
                .is_err()
        );
        assert!(
            proof
                .verify(
                    &other.user_id(),
                    Permissions::MESSAGES,
                    b"volli/test/1",
                    b"hello"
                )
                .is_err()
        );
        assert!(
            proof
                .verify(&me, Permissions::ADMIN, b"volli/test/1", b"hello")
                .is_err()
        );
        // Another device's key under this certificate does not pass.
        let thief = Keypair::generate_ed25519();
        let forged = Signer::Device {
            key: &thief,
            certificate: &cert,
        }
        .prove(b"volli/test/1", b"hello");
        assert!(
            forged
                .verify(&me, Permissions::MESSAGES, b"volli/test/1", b"hello")
                .is_err()
        );
        let direct = Signer::User(&user).prove(b"volli/test/1", b"hello");
        assert_eq!(
            direct.verify(&me, Permissions::ADMIN, b"volli/test/1", b"hello"),
            Ok(None)
        );
    }
}
