//! Who brought a user into a group, in its own words: a note signed by the device of the
//! member who added the user, naming the group and the user. The roster in the group
//! context names a sponsor too, but whoever makes a group writes its roster; only the
//! sponsor's device can sign the note. A node keeps a group it is Welcomed into (as the
//! first of its user's devices) only with a note from a contact that matches the roster.
//!
//! What it deliberately does not do: decide whom a node trusts (the node does, from its
//! contacts), or travel inside MLS (the note goes beside the Welcome).

use serde::{Deserialize, Serialize};
use volli_core::{DeviceCertificate, UserId};

use crate::{GroupRef, MlsError};

const DOMAIN: &[u8] = b"volli/sponsor-note/1";
const VERSION: u8 = 1;
/// Longest note accepted.
pub const MAX_SPONSOR_NOTE_LEN: usize = 2048;

#[derive(Serialize, Deserialize)]
struct Note {
    version: u8,
    group: [u8; 16],
    user: UserId,
    certificate: Vec<u8>,
    signature: Vec<u8>,
}

fn payload(group: &GroupRef, user: &UserId) -> Vec<u8> {
    [DOMAIN, group.0.as_slice(), user.as_bytes().as_slice()].concat()
}

/// Signs a note saying that the device of `certificate` (whose key `sign` uses) brought
/// `user` into `group`.
pub(crate) fn sign(
    certificate: &DeviceCertificate,
    sign: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
    group: &GroupRef,
    user: UserId,
) -> Option<Vec<u8>> {
    let note = Note {
        version: VERSION,
        group: group.0,
        user,
        certificate: certificate.to_bytes(),
        signature: sign(&payload(group, &user))?,
    };
    postcard::to_allocvec(&note).ok()
}

/// Checks a sponsor note for `user` in `group`: the device that signed it (the caller
/// checks that it believes that device).
pub fn check_sponsor_note(
    bytes: &[u8],
    group: &GroupRef,
    user: &UserId,
) -> Result<crate::Member, MlsError> {
    let refused = |why: &str| MlsError::Refused(format!("the sponsor's note {why}"));
    if bytes.len() > MAX_SPONSOR_NOTE_LEN {
        return Err(refused("is too long"));
    }
    let note: Note = match postcard::take_from_bytes::<Note>(bytes) {
        Ok((note, [])) if note.version == VERSION => note,
        _ => return Err(refused("is not readable")),
    };
    if note.group != group.0 || note.user != *user {
        return Err(refused("is for another group or user"));
    }
    let certificate = DeviceCertificate::from_bytes(&note.certificate)
        .map_err(|_| refused("has a bad certificate"))?;
    let (sponsor, peer) = (certificate.user_id(), certificate.peer_id());
    certificate
        .verify_for(&sponsor, &peer)
        .map_err(|_| refused("has a certificate that does not verify"))?;
    let key = volli_core::signer::ed25519_public_key(&peer)
        .ok_or_else(|| refused("has no Ed25519 key"))?;
    let key =
        ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| refused("has a bad key"))?;
    let signature = ed25519_dalek::Signature::from_slice(&note.signature)
        .map_err(|_| refused("has a malformed signature"))?;
    key.verify_strict(&payload(group, user), &signature)
        .map_err(|_| refused("does not verify"))?;
    Ok(crate::Member {
        user: sponsor,
        peer,
        permissions: certificate.permissions(),
        issued_at: certificate.issued_at(),
    })
}

/// The group a sponsor note names (unchecked: for a carrier, which group a Welcome is for).
pub fn sponsor_note_group(bytes: &[u8]) -> Option<GroupRef> {
    if bytes.len() > MAX_SPONSOR_NOTE_LEN {
        return None;
    }
    match postcard::take_from_bytes::<Note>(bytes) {
        Ok((note, [])) if note.version == VERSION => Some(GroupRef(note.group)),
        _ => None,
    }
}
