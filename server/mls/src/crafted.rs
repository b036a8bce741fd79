//! MLS messages no honest device sends, written with openmls past this crate's rules, for the
//! hostile-member tests: what a patched node, a stolen device or a member gone bad could
//! send. Built only with the `crafted` feature (the tests crate enables it).

use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::{CredentialWithKey, LeafNodeIndex, LeafNodeParameters, NewSignerBundle};
use volli_core::PeerId;

use crate::{CommitNote, DeviceSigner, GroupRef, Mls, MlsError, identity, library, loaded};

/// A commit by this device that removes `peers` from `group`, with `note` as its evidence,
/// whatever the rules say; merged into this device's state.
pub fn removal(
    mls: &mut Mls,
    group: &GroupRef,
    peers: &[PeerId],
    note: &CommitNote,
) -> Result<Vec<u8>, MlsError> {
    let members = mls.members_indexed(group)?;
    let leaves: Vec<LeafNodeIndex> = members
        .iter()
        .filter(|(_, m)| peers.contains(&m.peer))
        .map(|(leaf, _)| LeafNodeIndex::new(*leaf))
        .collect();
    let provider = &mls.provider;
    let group_state = loaded(&mut mls.groups, provider, group)?;
    group_state.set_aad(note.encode());
    let (commit, _, _) = group_state
        .remove_members(provider, &mls.signer, &leaves)
        .map_err(library)?;
    group_state
        .merge_pending_commit(provider)
        .map_err(library)?;
    let _ = mls.take_changes();
    commit.tls_serialize_detached().map_err(library)
}

/// A proposal to update this device's leaf in `group` that keeps its certificate but brings
/// another signature key (derived from `seed`).
pub fn update_with_another_key(
    mls: &mut Mls,
    group: &GroupRef,
    seed: &[u8; 32],
) -> Result<Vec<u8>, MlsError> {
    let other = DeviceSigner::from_seed(seed);
    let credential = identity::credential_with_key(&mls.certificate, &mls.signer).credential;
    let provider = &mls.provider;
    let group_state = loaded(&mut mls.groups, provider, group)?;
    let bundle = NewSignerBundle {
        signer: &other,
        credential_with_key: CredentialWithKey {
            credential,
            signature_key: other.public().to_vec().into(),
        },
    };
    let (message, _) = group_state
        .propose_self_update_with_new_signer(
            provider,
            &mls.signer,
            bundle,
            LeafNodeParameters::default(),
        )
        .map_err(library)?;
    let _ = mls.take_changes();
    message.tls_serialize_detached().map_err(library)
}
