//! Who a member of a conversation is: an MLS credential bound to a device certificate.
//!
//! Each member of an MLS group is one device. Its credential is a basic credential whose
//! identity is the user's certificate for the device (user id, peer id, permissions, signed
//! by the user key), and its signature key is the device's own Ed25519 key — the key inside
//! its peer id. So a leaf is believed only when the certificate verifies for its user and
//! names exactly the device whose key signs for the leaf; what the user's latest card says
//! about the device (still listed, not revoked) is the node's to judge (see
//! [`crate::Trust`]).

use std::collections::HashMap;
use std::sync::Mutex;

use openmls::prelude::{BasicCredential, Credential, CredentialType, CredentialWithKey};
use openmls_traits::signatures::{Signer, SignerError};
use openmls_traits::types::SignatureScheme;
use volli_core::{DeviceCertificate, PeerId, Permissions, Timestamp, UserId};
use zeroize::Zeroizing;

use crate::MlsError;

/// A member device, as its credential proves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// The user the device belongs to.
    pub user: UserId,
    /// The device.
    pub peer: PeerId,
    /// What the user allowed the device to do.
    pub permissions: Permissions,
    /// When the user issued the device's certificate (a device newer than a contact's card
    /// is one the card cannot list yet).
    pub issued_at: Timestamp,
}

/// Signs for this device's leaves with the device key.
pub struct DeviceSigner {
    key: ed25519_dalek::SigningKey,
}

impl DeviceSigner {
    /// The signer for the device whose Ed25519 secret key is `seed`.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let seed = Zeroizing::new(*seed);
        Self {
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// The public key, as MLS leaves carry it.
    pub fn public(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }
}

impl Signer for DeviceSigner {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignerError> {
        use ed25519_dalek::Signer as _;
        Ok(self.key.sign(payload).to_bytes().to_vec())
    }

    fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

/// The credential and signature key of the device `certificate` names.
pub(crate) fn credential_with_key(
    certificate: &DeviceCertificate,
    signer: &DeviceSigner,
) -> CredentialWithKey {
    CredentialWithKey {
        credential: BasicCredential::new(certificate.to_bytes()).into(),
        signature_key: signer.public().to_vec().into(),
    }
}

/// Members already verified, by their credential's bytes (a certificate check is an Ed25519
/// verification: not something to repeat for every message), and the signature keys each
/// was verified with.
#[derive(Default)]
pub(crate) struct Verified {
    members: Mutex<HashMap<Vec<u8>, (Member, SignatureKeys)>>,
}

/// The signature keys a credential was verified with.
type SignatureKeys = Vec<Vec<u8>>;

impl Verified {
    /// The member a leaf's credential and signature key prove, checked once.
    pub(crate) fn member(
        &self,
        credential: &Credential,
        signature_key: &[u8],
    ) -> Result<Member, MlsError> {
        let identity = credential.serialized_content();
        let mut cache = self.lock();
        if let Some((member, keys)) = cache.get(identity)
            && keys.iter().any(|k| k == signature_key)
        {
            return Ok(*member);
        }
        let member = verify(credential, Some(signature_key))?;
        remember(&mut cache, identity, member).push(signature_key.to_vec());
        Ok(member)
    }

    /// The member a credential names, for a leaf openmls already checked against it (every
    /// leaf was verified with [`Self::member`] when it entered the group).
    pub(crate) fn known(&self, credential: &Credential) -> Result<Member, MlsError> {
        let identity = credential.serialized_content();
        if let Some((member, _)) = self.lock().get(identity) {
            return Ok(*member);
        }
        // A group loaded from storage has leaves no `member` call saw in this run: checked
        // once here, and remembered without a signature key (`member` still checks its own).
        let member = verify(credential, None)?;
        remember(&mut self.lock(), identity, member);
        Ok(member)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, (Member, SignatureKeys)>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Keeps `member` as what `identity` proves (every member is forgotten past 4,096 of them);
/// the signature keys it was verified with.
fn remember<'a>(
    cache: &'a mut HashMap<Vec<u8>, (Member, SignatureKeys)>,
    identity: &[u8],
    member: Member,
) -> &'a mut SignatureKeys {
    if cache.len() >= 4096 {
        cache.clear();
    }
    &mut cache
        .entry(identity.to_vec())
        .or_insert_with(|| (member, Vec::new()))
        .1
}

/// Checks the certificate inside `credential`, and that `signature_key` is the key of the
/// device it names.
fn verify(credential: &Credential, signature_key: Option<&[u8]>) -> Result<Member, MlsError> {
    if credential.credential_type() != CredentialType::Basic {
        return Err(MlsError::Refused("not a device credential".into()));
    }
    let certificate = DeviceCertificate::from_bytes(credential.serialized_content())
        .map_err(|_| MlsError::Refused("the credential is not a device certificate".into()))?;
    let (user, peer) = (certificate.user_id(), certificate.peer_id());
    certificate
        .verify_for(&user, &peer)
        .map_err(|_| MlsError::Refused("the device certificate does not verify".into()))?;
    if let Some(key) = signature_key {
        let device_key = volli_core::signer::ed25519_public_key(&peer)
            .ok_or_else(|| MlsError::Refused("the device key is not Ed25519".into()))?;
        if key != device_key.as_slice() {
            return Err(MlsError::Refused(
                "the leaf is signed by another key than the device's".into(),
            ));
        }
    }
    Ok(Member {
        user,
        peer,
        permissions: certificate.permissions(),
        issued_at: certificate.issued_at(),
    })
}
