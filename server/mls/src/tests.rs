//! The conversation rules and the cryptographic properties, with real openmls groups and no
//! network: forward secrecy and post-compromise security are tested by trying to decrypt
//! captured messages with a device's state taken before and after, through this crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use volli_core::{DeviceCertificate, PeerId, Permissions, Timestamp, UserSecret};

use super::*;

/// Admits every device except those revoked.
#[derive(Default)]
struct Devices {
    revoked: RefCell<HashSet<PeerId>>,
}

impl Trust for Devices {
    fn admits(&self, _: &Info, member: &Member) -> bool {
        !self.revoked.borrow().contains(&member.peer)
    }
}

struct Device {
    mls: Mls,
    certificate: DeviceCertificate,
    seed: [u8; 32],
}

impl Device {
    fn new(user: &UserSecret, name: &str) -> Self {
        let key = libp2p_identity::Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let certificate =
            DeviceCertificate::issue(user, peer, name, Permissions::ALL, Timestamp::now());
        let secret = key.try_into_ed25519().unwrap().secret();
        let seed: [u8; 32] = secret.as_ref().try_into().unwrap();
        let mls = Mls::open(Vec::new(), certificate.clone(), &seed, Config::default()).unwrap();
        Self {
            mls,
            certificate,
            seed,
        }
    }

    fn peer(&self) -> PeerId {
        self.mls.me().peer
    }

    fn package(&mut self, of: &Device) -> Package {
        let own = self.mls.new_key_packages(1, false, 0).unwrap().remove(0);
        of.mls.check_key_package(&own.bytes).unwrap()
    }

    /// Another handle on the same device, from a copy of its state.
    fn copy(&self) -> Device {
        Device {
            mls: self.stolen(),
            certificate: self.certificate.clone(),
            seed: self.seed,
        }
    }

    /// The device's whole state as a thief would copy it, opened with this crate.
    fn stolen(&self) -> Mls {
        Mls::open(
            self.mls.rows(),
            self.certificate.clone(),
            &self.seed,
            Config::default(),
        )
        .unwrap()
    }
}

/// A commit that only updates (or not) the committer's own leaf.
fn update(update: bool) -> Commit {
    Commit {
        update,
        ..Commit::default()
    }
}

/// `user`'s signed revocation of its device `peer`.
fn revoke(user: &UserSecret, peer: PeerId) -> Statement {
    Statement::issue(user, volli_core::Claim::Revoked { peer }, Timestamp::now())
}

/// Key packages of `devices`, checked by `by`.
fn packages(by: &Device, devices: &mut [&mut Device]) -> Vec<Package> {
    devices
        .iter_mut()
        .map(|d| {
            let own = d.mls.new_key_packages(1, false, 0).unwrap().remove(0);
            by.mls.check_key_package(&own.bytes).unwrap()
        })
        .collect()
}

struct Conversation {
    alice: UserSecret,
    bob: UserSecret,
    a1: Device,
    a2: Device,
    b1: Device,
    b2: Device,
    group: GroupRef,
    trust: Devices,
}

/// Alice (two devices) starts a conversation with Bob (two devices); everyone joins.
fn conversation() -> Conversation {
    let (alice, bob) = (
        UserSecret::generate().unwrap(),
        UserSecret::generate().unwrap(),
    );
    let mut a1 = Device::new(&alice, "a1");
    let mut a2 = Device::new(&alice, "a2");
    let mut b1 = Device::new(&bob, "b1");
    let mut b2 = Device::new(&bob, "b2");
    let trust = Devices::default();
    let others = packages(&a1, &mut [&mut a2, &mut b1, &mut b2]);
    let info = Info::direct(alice.user_id(), bob.user_id(), 0);
    let created = a1.mls.create(info.clone(), others, &trust, 0).unwrap();
    let welcome = created.welcome.unwrap();
    for d in [&mut a2, &mut b1, &mut b2] {
        match d.mls.process(&welcome, &trust).unwrap() {
            Processed::Joined {
                group,
                info: joined,
                members,
                ..
            } => {
                assert_eq!(group, created.group);
                assert_eq!(joined, info);
                assert_eq!(members.len(), 4);
            }
            other => panic!("expected a join, got {other:?}"),
        }
    }
    Conversation {
        alice,
        bob,
        a1,
        a2,
        b1,
        b2,
        group: created.group,
        trust,
    }
}

fn text(processed: Processed) -> String {
    match processed {
        Processed::Application { content, .. } => String::from_utf8(content).unwrap(),
        other => panic!("expected an application message, got {other:?}"),
    }
}

fn send(from: &mut Device, group: &GroupRef, body: &str) -> Vec<u8> {
    from.mls.encrypt(group, body.as_bytes()).unwrap().bytes
}

/// Delivers a commit bundle to every device in `to`.
fn deliver(messages: &[Vec<u8>], to: &mut [&mut Device], trust: &Devices) {
    for d in to.iter_mut() {
        d.mls.process_bundle(messages, trust, 0).unwrap();
    }
}

#[test]
fn every_device_of_both_users_reads_what_any_other_sends() {
    let mut c = conversation();
    let m = send(&mut c.b2, &c.group, "hello from bob's second device");
    for d in [&mut c.a1, &mut c.a2, &mut c.b1] {
        assert_eq!(
            text(d.mls.process(&m, &c.trust).unwrap()),
            "hello from bob's second device"
        );
    }
    let m = send(&mut c.a1, &c.group, "and back");
    assert_eq!(text(c.b1.mls.process(&m, &c.trust).unwrap()), "and back");
    assert!(matches!(
        c.b1.mls.process(&m, &c.trust),
        Err(MlsError::Duplicate)
    ));
    // Every device agrees on the group state and on who commits.
    let auth = c.a1.mls.authenticator(&c.group).unwrap();
    for d in [&mut c.a2, &mut c.b1, &mut c.b2] {
        assert_eq!(d.mls.authenticator(&c.group).unwrap(), auth);
        assert_eq!(
            d.mls.committer(&c.group).unwrap().unwrap().peer,
            c.a1.peer()
        );
    }
}

#[test]
fn the_state_survives_being_persisted_and_reopened() {
    let mut c = conversation();
    let m = send(&mut c.a1, &c.group, "one");
    text(c.b1.mls.process(&m, &c.trust).unwrap());
    // What was persisted, reopened: the same device goes on where it was.
    let mut reopened = c.b1.stolen();
    let m = send(&mut c.a1, &c.group, "two");
    assert_eq!(text(reopened.process(&m, &c.trust).unwrap()), "two");
    assert_eq!(reopened.groups().len(), 1);
}

#[test]
fn forward_secrecy_a_state_taken_later_opens_no_captured_message() {
    let mut c = conversation();
    // A copy of Bob's first device taken before the messages: it can open them, which is
    // what shows the check below can fail.
    let before = c.b1.stolen();
    let captured: Vec<Vec<u8>> = (0..3)
        .map(|i| send(&mut c.a1, &c.group, &format!("captured {i}")))
        .collect();
    for m in &captured {
        text(c.b1.mls.process(m, &c.trust).unwrap());
    }
    let mut control = before;
    assert_eq!(
        text(control.process(&captured[1], &c.trust).unwrap()),
        "captured 1"
    );

    // Within the epoch: the device that read them deleted their keys.
    let mut taken = c.b1.stolen();
    for m in &captured {
        assert!(taken.process(m, &c.trust).is_err());
    }

    // The conversation moves on: an update commits, the late-mail window passes and the
    // past epoch is forgotten. Now no device's state opens them — not even that of Bob's
    // second device, which never received them.
    let committed =
        c.a1.mls
            .commit(&c.group, update(true), &c.trust, 0)
            .unwrap();
    deliver(
        &committed.messages,
        &mut [&mut c.a2, &mut c.b1, &mut c.b2],
        &c.trust,
    );
    // Until the past epoch is forgotten, the device that never received them still could:
    // forgetting is what takes that away.
    assert_eq!(
        text(c.b2.stolen().process(&captured[0], &c.trust).unwrap()),
        "captured 0"
    );
    let later = SystemTime::now() + Duration::from_secs(8 * 24 * 3600);
    let window = Duration::from_secs(7 * 24 * 3600);
    for d in [&mut c.a1, &mut c.a2, &mut c.b1, &mut c.b2] {
        d.mls.forget_past(later - window).unwrap();
        let mut taken = d.stolen();
        for m in &captured {
            let opened = taken.process(m, &c.trust);
            assert!(
                matches!(opened, Err(MlsError::Stale)),
                "a state taken later opened a captured message: {opened:?}"
            );
        }
    }
}

#[test]
fn post_compromise_a_state_taken_before_an_update_reads_nothing_after_it() {
    let mut c = conversation();
    // A thief copies Bob's second device.
    let mut thief = c.b2.stolen();
    let m = send(&mut c.a1, &c.group, "before the update");
    assert_eq!(
        text(thief.process(&m, &c.trust).unwrap()),
        "before the update"
    );

    // The device updates its own leaf: a proposal to the committer, which commits it and
    // forwards it beside the commit.
    let proposal = c.b2.mls.propose_update(&c.group).unwrap();
    // Waiting for the committer does not stop the device from sending.
    let meanwhile = send(&mut c.b2, &c.group, "while my update waits");
    assert_eq!(
        text(c.a2.mls.process(&meanwhile, &c.trust).unwrap()),
        "while my update waits"
    );
    assert!(matches!(
        c.a1.mls.process(&proposal, &c.trust).unwrap(),
        Processed::Proposal { .. }
    ));
    assert_eq!(c.a1.mls.pending_proposals(&c.group).unwrap(), 1);
    let committed =
        c.a1.mls
            .commit(&c.group, update(false), &c.trust, 0)
            .unwrap();
    assert_eq!(committed.messages.len(), 2, "the proposal, then the commit");
    assert_eq!(c.a1.mls.pending_proposals(&c.group).unwrap(), 0);
    let before = c.b2.mls.activity(&c.group).unwrap();
    deliver(
        &committed.messages,
        &mut [&mut c.a2, &mut c.b1, &mut c.b2],
        &c.trust,
    );

    let after_commit = c.b2.mls.activity(&c.group).unwrap();
    assert_eq!(after_commit.proposed_in, None, "the commit took the update");
    assert!(after_commit.updated_ms >= before.updated_ms);

    // The thief sees the same commit and messages on the wire, and reads none of it.
    let after = send(&mut c.a2, &c.group, "after the update");
    assert_eq!(
        text(c.b2.mls.process(&after, &c.trust).unwrap()),
        "after the update"
    );
    for m in &committed.messages {
        let _ = thief.process(m, &c.trust);
    }
    assert!(
        thief.process(&after, &c.trust).is_err(),
        "the stolen state read a message sent after the update"
    );
}

#[test]
fn late_mail_six_days_old_across_two_epochs_opens_and_eight_days_old_does_not() {
    let mut c = conversation();
    let late = send(&mut c.a1, &c.group, "held at a relay");
    for _ in 0..2 {
        let committed =
            c.a1.mls
                .commit(&c.group, update(true), &c.trust, 0)
                .unwrap();
        deliver(&committed.messages, &mut [&mut c.b1, &mut c.b2], &c.trust);
    }
    let window = Duration::from_secs(7 * 24 * 3600);
    let now = SystemTime::now();
    let six_days = now + Duration::from_secs(6 * 24 * 3600);
    c.b1.mls.forget_past(six_days - window).unwrap();
    assert_eq!(
        text(c.b1.mls.process(&late, &c.trust).unwrap()),
        "held at a relay"
    );
    let eight_days = now + Duration::from_secs(8 * 24 * 3600);
    c.b2.mls.forget_past(eight_days - window).unwrap();
    assert!(matches!(
        c.b2.mls.process(&late, &c.trust),
        Err(MlsError::Stale)
    ));
}

#[test]
fn a_message_for_a_later_epoch_is_held_until_its_commit_arrives() {
    let mut c = conversation();
    let committed =
        c.a1.mls
            .commit(&c.group, update(true), &c.trust, 0)
            .unwrap();
    let m = send(&mut c.a1, &c.group, "in the new epoch");
    assert!(matches!(
        c.b1.mls.process(&m, &c.trust),
        Err(MlsError::Ahead { epoch: 2, .. })
    ));
    deliver(&committed.messages, &mut [&mut c.b1], &c.trust);
    assert_eq!(
        text(c.b1.mls.process(&m, &c.trust).unwrap()),
        "in the new epoch"
    );
}

#[test]
fn only_the_committer_commits() {
    let mut c = conversation();
    assert!(matches!(
        c.b1.mls.commit(&c.group, update(true), &c.trust, 0),
        Err(MlsError::NotCommitter)
    ));
    // A commit made anyway (bypassing the rule on the sender) is refused by the others.
    let group = c.group;
    let provider = &c.b1.mls.provider;
    let mls = loaded(&mut c.b1.mls.groups, provider, &group).unwrap();
    let (commit, _, _) = mls
        .self_update(provider, &c.b1.mls.signer, LeafNodeParameters::default())
        .unwrap()
        .into_messages();
    let bytes = commit.tls_serialize_detached().unwrap();
    assert!(matches!(
        c.a2.mls.process(&bytes, &c.trust),
        Err(MlsError::NotCommitter)
    ));
    // Refused means unchanged: the real committer's next commit still applies.
    let committed =
        c.a1.mls
            .commit(&c.group, update(true), &c.trust, 0)
            .unwrap();
    deliver(&committed.messages, &mut [&mut c.a2], &c.trust);
    assert_eq!(
        c.a2.mls.authenticator(&c.group).unwrap(),
        c.a1.mls.authenticator(&c.group).unwrap()
    );
}

#[test]
fn pairing_adds_a_device_and_revocation_removes_it_in_one_commit() {
    let mut c = conversation();
    // A third device of Bob's, paired: the committer adds it, and removes the revoked
    // second device, in the same commit.
    let mut b3 = Device::new(&c.bob, "b3");
    let package = b3.package(&c.a1);
    c.trust.revoked.borrow_mut().insert(c.b2.peer());
    let committed =
        c.a1.mls
            .commit(
                &c.group,
                Commit {
                    add: vec![package],
                    remove: vec![c.b2.peer()],
                    revocations: vec![revoke(&c.bob, c.b2.peer())],
                    ..Commit::default()
                },
                &c.trust,
                0,
            )
            .unwrap();
    assert_eq!(committed.added.len(), 1);
    assert_eq!(committed.removed.len(), 1);
    deliver(&committed.messages, &mut [&mut c.a2, &mut c.b1], &c.trust);
    match b3
        .mls
        .process(committed.welcome.as_ref().unwrap(), &c.trust)
        .unwrap()
    {
        Processed::Joined { members, .. } => assert_eq!(members.len(), 4),
        other => panic!("expected a join, got {other:?}"),
    }
    // The removed device processes its removal and forgets the group.
    match c
        .b2
        .mls
        .process(committed.messages.last().unwrap(), &c.trust)
    {
        Ok(Processed::Commit { left: true, .. }) | Err(_) => {}
        other => panic!("the removed device went on: {other:?}"),
    }
    let m = send(
        &mut c.a2,
        &c.group,
        "to the new device, not the revoked one",
    );
    assert_eq!(
        text(b3.mls.process(&m, &c.trust).unwrap()),
        "to the new device, not the revoked one"
    );
    assert!(c.b2.mls.process(&m, &c.trust).is_err());
    assert!(c.b2.stolen().process(&m, &c.trust).is_err());
}

/// A commit by `device` made with openmls directly, past every rule of this crate (what a
/// patched node would send): removes `leaves`, with `note` as its authenticated data.
fn raw_removal(
    device: &mut Device,
    group: &GroupRef,
    peers: &[PeerId],
    note: &CommitNote,
) -> Vec<u8> {
    let members = device.mls.members_indexed(group).unwrap();
    let leaves: Vec<LeafNodeIndex> = members
        .iter()
        .filter(|(_, m)| peers.contains(&m.peer))
        .map(|(leaf, _)| LeafNodeIndex::new(*leaf))
        .collect();
    let provider = &device.mls.provider;
    let mls = loaded(&mut device.mls.groups, provider, group).unwrap();
    mls.set_aad(note.encode());
    let (commit, _, _) = mls
        .remove_members(provider, &device.mls.signer, &leaves)
        .unwrap();
    mls.merge_pending_commit(provider).unwrap();
    let _ = device.mls.take_changes();
    commit.tls_serialize_detached().unwrap()
}

#[test]
fn a_revoked_committer_is_replaced_by_the_next_device_of_its_user() {
    let mut c = conversation();
    let group = c.group;
    let revocation = revoke(&c.alice, c.a1.peer());
    // Without the revocation, a device that removes the committer ahead of it is refused
    // by everyone, even one that believes the committer revoked: nobody takes the role on
    // its own word.
    let seized = raw_removal(
        &mut c.a2.copy(),
        &group,
        &[c.a1.peer()],
        &CommitNote::default(),
    );
    c.trust.revoked.borrow_mut().insert(c.a1.peer());
    assert!(matches!(
        c.b1.mls.process(&seized, &c.trust),
        Err(MlsError::Refused(_))
    ));
    // A revocation of another device (Bob's, signed by Bob) justifies nothing here.
    assert!(
        c.a2.mls
            .commit(
                &group,
                Commit {
                    remove: vec![c.a1.peer()],
                    revocations: vec![revoke(&c.bob, c.a1.peer())],
                    ..Commit::default()
                },
                &c.trust,
                0,
            )
            .is_err()
    );
    // With Alice's signed revocation, her second device takes over, and others accept it.
    let committed =
        c.a2.mls
            .commit(
                &group,
                Commit {
                    remove: vec![c.a1.peer()],
                    revocations: vec![revocation],
                    ..Commit::default()
                },
                &c.trust,
                0,
            )
            .unwrap();
    match c
        .b1
        .mls
        .process_bundle(&committed.messages, &c.trust, 0)
        .unwrap()
        .pop()
        .unwrap()
    {
        Processed::Commit {
            removed,
            revocations,
            ..
        } => {
            assert_eq!(removed[0].peer, c.a1.peer());
            assert_eq!(revocations.len(), 1, "the evidence comes with the commit");
        }
        other => panic!("expected the takeover to apply, got {other:?}"),
    }
    assert_eq!(
        c.b1.mls.committer(&group).unwrap().unwrap().peer,
        c.a2.peer()
    );
    assert!(c.a2.mls.is_committer(&group).unwrap());
    // The revoked device's commits are refused from then on by who knows of it.
    let provider = &c.a1.mls.provider;
    let mls = loaded(&mut c.a1.mls.groups, provider, &group).unwrap();
    let (late, _, _) = mls
        .self_update(provider, &c.a1.mls.signer, LeafNodeParameters::default())
        .unwrap()
        .into_messages();
    assert!(
        c.b2.mls
            .process(&late.tls_serialize_detached().unwrap(), &c.trust)
            .is_err()
    );
}

#[test]
fn a_member_cannot_make_itself_committer_of_a_group() {
    let trust = Devices::default();
    let [mut a, mut b, mut c] = ["a", "b", "c"].map(User::new);
    let packages = vec![b.d[0].package(&a.d[0]), c.d[0].package(&a.d[0])];
    let info = Info::group(a.id(), "three", &[b.id(), c.id()], 0);
    let created = a.d[0].mls.create(info, packages, &trust, 0).unwrap();
    let group = created.group;
    for dev in [&mut b.d[0], &mut c.d[0]] {
        dev.mls
            .process(created.welcome.as_ref().unwrap(), &trust)
            .unwrap();
    }
    // Bob, a member at leaf 1, removes the admin's device ahead of him…
    let seizing = raw_removal(
        &mut b.d[0].copy(),
        &group,
        &[a.d[0].peer()],
        &CommitNote::default(),
    );
    assert!(c.d[0].mls.process(&seizing, &trust).is_err());
    // …nor with a revocation of Alice's device that he signed himself.
    let forged = CommitNote::new(&[revoke(&b.secret, a.d[0].peer())], &[], &[], None);
    let seizing = raw_removal(&mut b.d[0].copy(), &group, &[a.d[0].peer()], &forged);
    assert!(c.d[0].mls.process(&seizing, &trust).is_err());
    // Carol's group is as it was: Alice still commits, and her next commit applies.
    assert_eq!(
        c.d[0].mls.committer(&group).unwrap().unwrap().peer,
        a.d[0].peer()
    );
    let committed = a.d[0].mls.commit(&group, update(true), &trust, 0).unwrap();
    c.d[0]
        .mls
        .process_bundle(&committed.messages, &trust, 0)
        .unwrap();
    assert_eq!(
        c.d[0].mls.authenticator(&group).unwrap(),
        a.d[0].mls.authenticator(&group).unwrap()
    );
}

#[test]
fn an_update_with_another_signature_key_is_refused_everywhere_and_the_group_goes_on() {
    use openmls::prelude::{CredentialWithKey, NewSignerBundle};
    let mut c = conversation();
    let group = c.group;
    // Bob's first device proposes an update of its leaf that keeps its certificate but
    // brings a new signature key.
    let other = DeviceSigner::from_seed(&[9; 32]);
    let proposal = {
        let provider = &c.b1.mls.provider;
        let mls = loaded(&mut c.b1.mls.groups, provider, &group).unwrap();
        let bundle = NewSignerBundle {
            signer: &other,
            credential_with_key: CredentialWithKey {
                credential: identity::credential_with_key(&c.b1.certificate, &c.b1.mls.signer)
                    .credential,
                signature_key: other.public().to_vec().into(),
            },
        };
        let (message, _) = mls
            .propose_self_update_with_new_signer(
                provider,
                &c.b1.mls.signer,
                bundle,
                LeafNodeParameters::default(),
            )
            .unwrap();
        message.tls_serialize_detached().unwrap()
    };
    // The committer holds it, and leaves it out of its commit: everyone can apply that.
    c.a1.mls.process(&proposal, &c.trust).unwrap();
    let committed = c.a1.mls.commit(&group, update(false), &c.trust, 0).unwrap();
    assert_eq!(committed.messages.len(), 1, "the commit alone, no proposal");
    deliver(&committed.messages, &mut [&mut c.a2, &mut c.b2], &c.trust);
    let auth = c.a1.mls.authenticator(&group).unwrap();
    assert_eq!(c.a2.mls.authenticator(&group).unwrap(), auth);
    assert_eq!(c.b2.mls.authenticator(&group).unwrap(), auth);
    // Forwarded by hand beside a commit, every member refuses it.
    let mut bundle = vec![proposal];
    bundle.extend(committed.messages.clone());
    assert!(c.a2.stolen().process_bundle(&bundle, &c.trust, 0).is_err());
}

#[test]
fn a_committer_adds_at_most_a_cards_worth_of_devices_per_user() {
    let trust = Devices::default();
    let [mut a, b] = ["a", "b"].map(User::new);
    let info = Info::group(a.id(), "g", &[b.id()], 0);
    let created = a.d[0].mls.create(info, Vec::new(), &trust, 0).unwrap();
    // Bob mints certificates for devices of his own and hands their packages over.
    let many: Vec<Package> = (0..=volli_core::card::MAX_DEVICES)
        .map(|i| {
            let mut d = Device::new(&b.secret, &format!("fake{i}"));
            d.package(&a.d[0])
        })
        .collect();
    let error = a.d[0]
        .mls
        .commit(
            &created.group,
            Commit {
                add: many,
                ..Commit::default()
            },
            &trust,
            0,
        )
        .unwrap_err();
    assert!(error.to_string().contains("at most"), "{error}");
}

#[test]
fn a_welcome_is_not_taken_again_after_the_device_left_the_group() {
    let trust = Devices::default();
    let [mut a, mut b] = ["a", "b"].map(User::new);
    let package = {
        let own = b.d[0].mls.new_key_packages(1, true, 0).unwrap().remove(0);
        a.d[0].mls.check_key_package(&own.bytes).unwrap()
    };
    let info = Info::group(a.id(), "g", &[b.id()], 0);
    let created = a.d[0].mls.create(info, vec![package], &trust, 0).unwrap();
    let welcome = created.welcome.unwrap();
    b.d[0].mls.process(&welcome, &trust).unwrap();
    // Bob is removed (or leaves): his device forgets the group.
    let removed = a.d[0]
        .mls
        .commit(
            &created.group,
            Commit {
                remove: vec![b.d[0].peer()],
                change: Some((a.id(), GroupChange::Remove(b.id()))),
                ..Commit::default()
            },
            &trust,
            0,
        )
        .unwrap();
    let _ = b.d[0].mls.process_bundle(&removed.messages, &trust, 0);
    assert!(b.d[0].mls.groups().is_empty());
    // The old Welcome (its last-resort package still there) would put it back into an epoch
    // the others left: refused.
    assert!(matches!(
        b.d[0].mls.process(&welcome, &trust),
        Err(MlsError::Duplicate)
    ));
    assert!(b.d[0].mls.groups().is_empty());
}

#[test]
fn a_used_last_resort_package_goes_after_the_late_mail_window() {
    let trust = Devices::default();
    let [mut a, mut b] = ["a", "b"].map(User::new);
    let day = 24 * 3600 * 1000;
    let handed = b.d[0].mls.hand_out(0, 0, 7 * day).unwrap();
    let last_resort = handed[0].clone();
    let package = a.d[0].mls.check_key_package(&last_resort.bytes).unwrap();
    let info = Info::group(a.id(), "g", &[b.id()], 0);
    let created = a.d[0].mls.create(info, vec![package], &trust, 0).unwrap();
    b.d[0]
        .mls
        .process_with(
            created.welcome.as_ref().unwrap(),
            &trust,
            day,
            &mut |_, _| Ok(()),
        )
        .unwrap();
    // Once used it is handed out no more: a new one takes its place.
    let next = b.d[0].mls.hand_out(0, day + 1, 7 * day).unwrap();
    assert_ne!(next[0].reference, last_resort.reference);
    // Within the window it stays (late Welcomes made with it still open)…
    b.d[0]
        .mls
        .prune_key_packages(3 * day, 90 * day, 7 * day)
        .unwrap();
    assert!(
        b.d[0]
            .mls
            .own_key_packages()
            .iter()
            .any(|p| p.reference == last_resort.reference)
    );
    // …then it goes, with its private keys.
    b.d[0]
        .mls
        .prune_key_packages(9 * day, 90 * day, 7 * day)
        .unwrap();
    assert!(
        !b.d[0]
            .mls
            .own_key_packages()
            .iter()
            .any(|p| p.reference == last_resort.reference)
    );
}

#[test]
fn handshake_content_is_refused_where_an_application_message_is_expected() {
    let mut c = conversation();
    let committed =
        c.a1.mls
            .commit(&c.group, update(true), &c.trust, 0)
            .unwrap();
    let commit = committed.messages.last().unwrap();
    assert!(matches!(
        c.b1.mls
            .open_application(commit, &c.trust, 0, &mut |_, _| Ok(())),
        Err(MlsError::Refused(_))
    ));
    // Untouched: the commit still applies as handshake mail.
    c.b1.mls.process_handshake(commit, &c.trust, 0).unwrap();
    let m = send(&mut c.a1, &c.group, "after");
    assert!(matches!(
        c.b1.mls.process_handshake(&m, &c.trust, 0),
        Err(MlsError::Refused(_))
    ));
    assert_eq!(text(c.b1.mls.process(&m, &c.trust).unwrap()), "after");
}

#[test]
fn two_commits_at_once_fork_and_the_losing_side_rejoins() {
    let mut c = conversation();
    // Alice's committer commits an update while her second device, which holds the
    // revocation of the first, commits its removal: both for the same epoch.
    let update =
        c.a1.mls
            .commit(&c.group, update(true), &c.trust, 0)
            .unwrap();
    let group = c.group;
    let members = c.a2.mls.members_indexed(&group).unwrap();
    let a1_leaf = members
        .iter()
        .find(|(_, m)| m.peer == c.a1.peer())
        .unwrap()
        .0;
    assert!(members.iter().any(|(leaf, _)| *leaf == a1_leaf));
    let takeover = raw_removal(
        &mut c.a2,
        &group,
        &[c.a1.peer()],
        &CommitNote::new(&[revoke(&c.alice, c.a1.peer())], &[], &[], None),
    );
    // Bob's devices see them in different orders: each applies the first and cannot read
    // the second.
    deliver(&update.messages, &mut [&mut c.b1], &c.trust);
    assert!(c.b1.mls.process(&takeover, &c.trust).is_err());
    c.b2.mls.process(&takeover, &c.trust).unwrap();
    assert!(c.b2.mls.process(&update.messages[0], &c.trust).is_err());
    assert_ne!(
        c.b1.mls.authenticator(&group).unwrap(),
        c.b2.mls.authenticator(&group).unwrap(),
        "forked"
    );

    // The revocation reaches Bob: the first device is no longer believed, so the side
    // whose epoch it made is the losing one. Its device cannot read the winning side...
    c.trust.revoked.borrow_mut().insert(c.a1.peer());
    let m = send(&mut c.a2, &group, "after the takeover");
    assert_eq!(
        text(c.b2.mls.process(&m, &c.trust).unwrap()),
        "after the takeover"
    );
    assert!(matches!(
        c.b1.mls.process(&m, &c.trust),
        Err(MlsError::Undecryptable)
    ));
    // ... so it asks the winning side's committer to add it again, with a fresh package.
    assert_eq!(c.b1.mls.ask_rejoin(&group, 1), None);
    let own = c.b1.mls.new_key_packages(1, false, 0).unwrap().remove(0);
    let rejoin = c.b1.mls.rejoin_request(&group, &own, 0);
    let package = c.a2.mls.check_key_package(&own.bytes).unwrap();
    // Without the device's own request, nobody re-adds it (with a package of their choice).
    let without = Commit {
        add: vec![package.clone()],
        remove: vec![c.b1.peer()],
        ..Commit::default()
    };
    assert!(c.a2.mls.commit(&group, without, &c.trust, 0).is_err());
    let readd =
        c.a2.mls
            .commit(
                &group,
                Commit {
                    add: vec![package],
                    remove: vec![c.b1.peer()],
                    rejoins: vec![rejoin],
                    ..Commit::default()
                },
                &c.trust,
                0,
            )
            .unwrap();
    deliver(&readd.messages, &mut [&mut c.b2], &c.trust);
    c.b1.mls
        .process(readd.welcome.as_ref().unwrap(), &c.trust)
        .unwrap();
    let auth = c.a2.mls.authenticator(&group).unwrap();
    assert_eq!(c.b1.mls.authenticator(&group).unwrap(), auth);
    assert_eq!(c.b2.mls.authenticator(&group).unwrap(), auth);
    let m = send(&mut c.b1, &group, "back on the same side");
    assert_eq!(
        text(c.a2.mls.process(&m, &c.trust).unwrap()),
        "back on the same side"
    );
}

#[test]
fn a_welcome_with_a_device_the_node_does_not_believe_is_refused_whole() {
    let (alice, bob) = (
        UserSecret::generate().unwrap(),
        UserSecret::generate().unwrap(),
    );
    let mut a1 = Device::new(&alice, "a1");
    let mut b1 = Device::new(&bob, "b1");
    let mut stranger = Device::new(&UserSecret::generate().unwrap(), "mallory");
    let trust = Devices::default();
    let info = Info::direct(alice.user_id(), bob.user_id(), 0);
    // The creator cannot put a third user's device into a one-to-one conversation.
    let with_stranger = packages(&a1, &mut [&mut b1, &mut stranger]);
    assert!(matches!(
        a1.mls.create(info.clone(), with_stranger, &trust, 0),
        Err(MlsError::Refused(_))
    ));
    // And a device the receiver has revoked makes the receiver refuse the Welcome.
    let mut a2 = Device::new(&alice, "a2");
    let both = packages(&a1, &mut [&mut b1, &mut a2]);
    let created = a1.mls.create(info, both, &trust, 0).unwrap();
    trust.revoked.borrow_mut().insert(a2.peer());
    assert!(matches!(
        b1.mls.process(created.welcome.as_ref().unwrap(), &trust),
        Err(MlsError::Refused(_))
    ));
    assert!(b1.mls.groups().is_empty());
}

#[test]
fn a_key_package_must_be_signed_by_the_device_its_certificate_names() {
    let alice = UserSecret::generate().unwrap();
    let a1 = Device::new(&alice, "a1");
    let mut b1 = Device::new(&UserSecret::generate().unwrap(), "b1");
    let own = b1.mls.new_key_packages(1, true, 0).unwrap().remove(0);
    let checked = a1.mls.check_key_package(&own.bytes).unwrap();
    assert!(checked.last_resort);
    assert_eq!(checked.member.peer, b1.peer());
    // The same certificate under another device key: refused.
    let key = libp2p_identity::Keypair::generate_ed25519();
    let seed: [u8; 32] = key
        .try_into_ed25519()
        .unwrap()
        .secret()
        .as_ref()
        .try_into()
        .unwrap();
    assert!(Mls::open(Vec::new(), b1.certificate.clone(), &seed, Config::default()).is_err());
    let mut forged = b1.stolen();
    forged.signer = DeviceSigner::from_seed(&seed);
    let bytes = forged
        .new_key_packages(1, false, 0)
        .unwrap()
        .remove(0)
        .bytes;
    assert!(matches!(
        a1.mls.check_key_package(&bytes),
        Err(MlsError::Refused(_))
    ));
    assert!(matches!(
        a1.mls.check_key_package(b"not a key package"),
        Err(MlsError::Malformed)
    ));
    // Used and forgotten packages leave the device's list.
    assert_eq!(b1.mls.own_key_packages().len(), 1);
    b1.mls.forget_key_package(&own.reference).unwrap();
    assert!(b1.mls.own_key_packages().is_empty());
}

#[test]
fn a_welcome_replayed_does_not_take_a_device_back() {
    let mut c = conversation();
    let mut b3 = Device::new(&c.bob, "b3");
    let package = {
        let own = b3.mls.new_key_packages(1, true, 0).unwrap().remove(0);
        c.a1.mls.check_key_package(&own.bytes).unwrap()
    };
    let committed =
        c.a1.mls
            .commit(
                &c.group,
                Commit {
                    add: vec![package],
                    ..Commit::default()
                },
                &c.trust,
                0,
            )
            .unwrap();
    let welcome = committed.welcome.unwrap();
    b3.mls.process(&welcome, &c.trust).unwrap();
    let update =
        c.a1.mls
            .commit(&c.group, update(true), &c.trust, 0)
            .unwrap();
    deliver(&update.messages, &mut [&mut b3], &c.trust);
    // The Welcome used a last-resort package, so its keys are still there: a replay would
    // open, and must not move the device back an epoch.
    assert!(matches!(
        b3.mls.process(&welcome, &c.trust),
        Err(MlsError::Duplicate)
    ));
    assert_eq!(
        b3.mls.authenticator(&c.group).unwrap(),
        c.a1.mls.authenticator(&c.group).unwrap()
    );
}

#[test]
fn key_packages_are_handed_out_once_and_the_last_resort_one_rotates() {
    let alice = UserSecret::generate().unwrap();
    let mut a1 = Device::new(&alice, "a1");
    let day = 24 * 3600 * 1000;
    let first = a1.mls.hand_out(2, 0, 30 * day).unwrap();
    assert_eq!(first.len(), 3);
    assert_eq!(first.iter().filter(|p| p.last_resort).count(), 1);
    let second = a1.mls.hand_out(2, day, 30 * day).unwrap();
    let last_resort =
        |v: &[OwnPackage]| v.iter().find(|p| p.last_resort).unwrap().reference.clone();
    assert_eq!(
        last_resort(&first),
        last_resort(&second),
        "the same last-resort package"
    );
    for p in second.iter().filter(|p| !p.last_resort) {
        assert!(
            !first.iter().any(|f| f.reference == p.reference),
            "a one-time package handed out twice"
        );
    }
    // A month on, a new last-resort package; the old one goes once it is old enough.
    let later = a1.mls.hand_out(0, 31 * day, 30 * day).unwrap();
    assert_ne!(last_resort(&later), last_resort(&first));
    a1.mls
        .prune_key_packages(200 * day, 90 * day, 7 * day)
        .unwrap();
    let left = a1.mls.own_key_packages();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].reference, last_resort(&later));
}

/// A user with two devices.
struct User {
    secret: UserSecret,
    d: [Device; 2],
}

impl User {
    fn new(name: &str) -> Self {
        let secret = UserSecret::generate().unwrap();
        let d = [
            Device::new(&secret, &format!("{name}1")),
            Device::new(&secret, &format!("{name}2")),
        ];
        Self { secret, d }
    }

    fn id(&self) -> UserId {
        self.secret.user_id()
    }
}

/// Every device of `users` processes `messages` (a commit's bundle) and is at `epoch`.
fn apply(messages: &[Vec<u8>], users: &mut [&mut User], trust: &Devices) -> Vec<Processed> {
    let mut out = Vec::new();
    for u in users.iter_mut() {
        for d in &mut u.d {
            out.extend(d.mls.process_bundle(messages, trust, 0).unwrap());
        }
    }
    out
}

#[test]
fn a_group_of_five_users_changes_by_its_admins_and_a_removed_member_reads_nothing_new() {
    let trust = Devices::default();
    let [mut a, mut b, mut c, mut d, mut e] = ["a", "b", "c", "d", "e"].map(User::new);
    // Alice creates "friends" with Bob, Carol and Dave: her second device and their two each.
    let [a1, a2] = &mut a.d;
    let mut others: Vec<&mut Device> = vec![a2];
    for u in [&mut b, &mut c, &mut d] {
        others.extend(u.d.iter_mut());
    }
    let packages: Vec<Package> = others
        .into_iter()
        .map(|dev| {
            let own = dev.mls.new_key_packages(1, false, 0).unwrap().remove(0);
            a1.mls.check_key_package(&own.bytes).unwrap()
        })
        .collect();
    let info = Info::group(a.id(), "friends", &[b.id(), c.id(), d.id()], 0);
    assert_eq!(info.role_of(&a.id()), Some(Role::Admin));
    assert_eq!(info.role_of(&b.id()), Some(Role::Member));
    let created = a.d[0]
        .mls
        .create(info.clone(), packages, &trust, 0)
        .unwrap();
    let group = created.group;
    let welcome = created.welcome.unwrap();
    for dev in std::iter::once(&mut a.d[1])
        .chain(b.d.iter_mut())
        .chain(c.d.iter_mut())
        .chain(d.d.iter_mut())
    {
        match dev.mls.process(&welcome, &trust).unwrap() {
            Processed::Joined {
                info: joined,
                members,
                ..
            } => {
                assert_eq!(joined, info);
                assert_eq!(joined.name(), Some("friends"));
                assert_eq!(members.len(), 8);
            }
            other => panic!("expected a join, got {other:?}"),
        }
    }
    // A message from any device reaches every other.
    let m = send(&mut c.d[1], &group, "hello group");
    for dev in a.d.iter_mut().chain(b.d.iter_mut()).chain(d.d.iter_mut()) {
        assert_eq!(text(dev.mls.process(&m, &trust).unwrap()), "hello group");
    }

    // A member that is not an admin changes nothing.
    assert!(info.changed(&b.id(), &GroupChange::Add(e.id())).is_err());
    assert!(
        info.changed(&b.id(), &GroupChange::Rename("mine".into()))
            .is_err()
    );
    // Not even as a commit of its own: only the committer commits.
    assert!(matches!(
        b.d[0].mls.commit(
            &group,
            Commit {
                change: Some((a.id(), GroupChange::Remove(c.id()))),
                ..Commit::default()
            },
            &trust,
            0
        ),
        Err(MlsError::NotCommitter | MlsError::Refused(_))
    ));

    // Dave goes offline. Alice adds Erin (both devices)…
    let next = info.changed(&a.id(), &GroupChange::Add(e.id())).unwrap();
    let [e1, e2] = &mut e.d;
    let packages = vec![e1.package(&a.d[0]), e2.package(&a.d[0])];
    let added = a.d[0]
        .mls
        .commit(
            &group,
            Commit {
                add: packages,
                change: Some((a.id(), GroupChange::Add(e.id()))),
                ..Commit::default()
            },
            &trust,
            0,
        )
        .unwrap();
    assert_eq!(added.added.len(), 2);
    let processed = apply(&added.messages[..], &mut [&mut b, &mut c], &trust);
    assert!(
        processed
            .iter()
            .any(|p| matches!(p, Processed::Commit { info: Some(i), .. } if i.includes(&e.id())))
    );
    a.d[1]
        .mls
        .process_bundle(&added.messages, &trust, 0)
        .unwrap();
    for dev in &mut e.d {
        assert!(matches!(
            dev.mls
                .process(added.welcome.as_ref().unwrap(), &trust)
                .unwrap(),
            Processed::Joined { .. }
        ));
    }
    assert_eq!(b.d[0].mls.info(&group).unwrap(), next);
    // …and removes Bob: all his devices in the same commit.
    let next2 = next.changed(&a.id(), &GroupChange::Remove(b.id())).unwrap();
    let removed = a.d[0]
        .mls
        .commit(
            &group,
            Commit {
                remove: vec![b.d[0].peer(), b.d[1].peer()],
                change: Some((a.id(), GroupChange::Remove(b.id()))),
                ..Commit::default()
            },
            &trust,
            0,
        )
        .unwrap();
    assert_eq!(removed.removed.len(), 2);
    for dev in &mut b.d {
        if let Ok(p) = dev.mls.process_bundle(&removed.messages, &trust, 0) {
            assert!(matches!(
                p.last(),
                Some(Processed::Commit { left: true, .. })
            ));
        }
    }
    apply(&removed.messages, &mut [&mut c, &mut e], &trust);
    a.d[1]
        .mls
        .process_bundle(&removed.messages, &trust, 0)
        .unwrap();

    // Bob reads nothing said after his removal, not even with his whole state.
    let after = send(&mut e.d[0], &group, "bob is gone");
    for dev in &mut b.d {
        assert!(dev.mls.process(&after, &trust).is_err());
        assert!(dev.stolen().process(&after, &trust).is_err());
    }
    // Dave comes back: the message waits for the commits, which he applies in order.
    assert!(matches!(
        d.d[0].mls.process(&after, &trust),
        Err(MlsError::Ahead { .. })
    ));
    for dev in &mut d.d {
        dev.mls.process_bundle(&added.messages, &trust, 0).unwrap();
        dev.mls
            .process_bundle(&removed.messages, &trust, 0)
            .unwrap();
        assert_eq!(
            text(dev.mls.process(&after, &trust).unwrap()),
            "bob is gone"
        );
        assert_eq!(dev.mls.info(&group).unwrap(), next2);
    }
    // Everyone still in agrees on the state.
    let auth = a.d[0].mls.authenticator(&group).unwrap();
    for dev in
        a.d.iter_mut()
            .chain(c.d.iter_mut())
            .chain(d.d.iter_mut())
            .chain(e.d.iter_mut())
    {
        assert_eq!(dev.mls.authenticator(&group).unwrap(), auth);
    }
}

#[test]
fn a_commit_that_changes_a_group_must_come_from_an_admin_and_keep_the_rules() {
    let trust = Devices::default();
    let [mut a, mut b] = ["a", "b"].map(User::new);
    let packages = vec![b.d[0].package(&a.d[0])];
    let info = Info::group(a.id(), "two", &[b.id()], 0);
    let created = a.d[0]
        .mls
        .create(info.clone(), packages, &trust, 0)
        .unwrap();
    b.d[0]
        .mls
        .process(created.welcome.as_ref().unwrap(), &trust)
        .unwrap();
    // A roster in which the orderer is no admin is refused where it is made.
    assert!(
        a.d[0]
            .mls
            .commit(
                &created.group,
                Commit {
                    change: Some((a.id(), GroupChange::Role(a.id(), Role::Member))),
                    ..Commit::default()
                },
                &trust,
                0
            )
            .is_err()
    );
    // A one-to-one conversation never becomes a group.
    assert!(
        Info::direct(a.id(), b.id(), 0)
            .may_become(&info, &a.id())
            .is_err()
    );
    // Limits: the name, and the number of members.
    assert!(
        info.changed(&a.id(), &GroupChange::Rename("x".repeat(65)))
            .is_err()
    );
    let mut many = info.clone();
    for _ in 0..MAX_GROUP_USERS - 2 {
        let u = UserSecret::generate().unwrap().user_id();
        many = many.changed(&a.id(), &GroupChange::Add(u)).unwrap();
    }
    let full = UserSecret::generate().unwrap().user_id();
    let error = many.changed(&a.id(), &GroupChange::Add(full)).unwrap_err();
    assert!(error.to_string().contains("at most"), "{error}");
    // Renaming, promoting: applied by the other member, one change per commit.
    for change in [
        GroupChange::Rename("renamed".into()),
        GroupChange::Role(b.id(), Role::Admin),
    ] {
        let committed = a.d[0]
            .mls
            .commit(
                &created.group,
                Commit {
                    change: Some((a.id(), change)),
                    ..Commit::default()
                },
                &trust,
                0,
            )
            .unwrap();
        b.d[0]
            .mls
            .process_bundle(&committed.messages, &trust, 0)
            .unwrap();
    }
    let now = b.d[0].mls.info(&created.group).unwrap();
    assert_eq!(now.name(), Some("renamed"));
    assert_eq!(now.role_of(&b.id()), Some(Role::Admin));
}

#[test]
fn when_the_ordering_admin_leaves_the_next_admin_commits() {
    let trust = Devices::default();
    let [mut a, mut b, mut c] = ["a", "b", "c"].map(User::new);
    let packages = vec![b.d[0].package(&a.d[0]), c.d[0].package(&a.d[0])];
    let info = Info::group(a.id(), "three", &[b.id(), c.id()], 0)
        .changed(&a.id(), &GroupChange::Role(c.id(), Role::Admin))
        .unwrap();
    let created = a.d[0]
        .mls
        .create(info.clone(), packages, &trust, 0)
        .unwrap();
    for dev in [&mut b.d[0], &mut c.d[0]] {
        dev.mls
            .process(created.welcome.as_ref().unwrap(), &trust)
            .unwrap();
    }
    // Alice leaves: the roster without her names Carol the orderer.
    let next = info.changed(&a.id(), &GroupChange::Remove(a.id())).unwrap();
    assert_eq!(next.orderer, c.id());
    let left = a.d[0]
        .mls
        .commit(
            &created.group,
            Commit {
                change: Some((a.id(), GroupChange::Remove(a.id()))),
                ..Commit::default()
            },
            &trust,
            0,
        )
        .unwrap();
    for dev in [&mut b.d[0], &mut c.d[0]] {
        dev.mls.process_bundle(&left.messages, &trust, 0).unwrap();
    }
    // Carol's device commits now, and removes Alice's last device; Bob accepts it.
    assert!(c.d[0].mls.is_committer(&created.group).unwrap());
    assert!(!b.d[0].mls.is_committer(&created.group).unwrap());
    let gone = c.d[0]
        .mls
        .commit(
            &created.group,
            Commit {
                remove: vec![a.d[0].peer()],
                ..Commit::default()
            },
            &trust,
            0,
        )
        .unwrap();
    b.d[0]
        .mls
        .process_bundle(&gone.messages, &trust, 0)
        .unwrap();
    let m = send(&mut b.d[0], &created.group, "without alice");
    assert_eq!(
        text(c.d[0].mls.process(&m, &trust).unwrap()),
        "without alice"
    );
    assert!(a.d[0].mls.process(&m, &trust).is_err());
}

#[test]
fn a_member_asks_to_be_carried_by_another_member_but_never_by_one_it_carries() {
    let [a, b, c, d, stranger] = ["a", "b", "c", "d", "s"].map(|_| User::new("x").id());
    let info = Info::group(a, "g", &[b, c], 0)
        .changed(&a, &GroupChange::Role(b, Role::Admin))
        .unwrap()
        .changed(&b, &GroupChange::Add(d))
        .unwrap();
    let sponsor =
        |info: &Info, u: UserId| info.roster().iter().find(|m| m.user == u).unwrap().sponsor;
    assert_eq!(sponsor(&info, d), Some(b));
    // Dave, no admin, asks for himself: Carol carries him from now on.
    let next = info.changed(&d, &GroupChange::Sponsor(c)).unwrap();
    assert_eq!(sponsor(&next, d), Some(c));
    assert_eq!(next.role_of(&d), Some(Role::Member));
    // Asked again (by his other device), nothing changes.
    assert_eq!(next.changed(&d, &GroupChange::Sponsor(c)).unwrap(), next);
    // Not by himself, not by a non-member, and Bob not by Dave, whom he carries.
    assert!(info.changed(&d, &GroupChange::Sponsor(d)).is_err());
    assert!(info.changed(&d, &GroupChange::Sponsor(stranger)).is_err());
    assert!(info.changed(&b, &GroupChange::Sponsor(d)).is_err());
    // Nor the group's root, whom everyone is carried by in the end.
    assert!(info.changed(&a, &GroupChange::Sponsor(c)).is_err());
}

#[test]
fn the_other_user_replaces_a_revoked_committer_with_its_users_newer_card() {
    let (alice, bob) = (
        UserSecret::generate().unwrap(),
        UserSecret::generate().unwrap(),
    );
    let mut a1 = Device::new(&alice, "a1");
    let mut b1 = Device::new(&bob, "b1");
    let mut b2 = Device::new(&bob, "b2");
    let trust = Devices::default();
    let others = packages(&a1, &mut [&mut b1, &mut b2]);
    let created = a1
        .mls
        .create(
            Info::direct(alice.user_id(), bob.user_id(), 0),
            others,
            &trust,
            0,
        )
        .unwrap();
    for d in [&mut b1, &mut b2] {
        d.mls
            .process(created.welcome.as_ref().unwrap(), &trust)
            .unwrap();
    }
    let group = created.group;
    // Alice's only device in the conversation is stolen; she revokes it from a new device,
    // whose card no longer lists it. An older card (before the device) proves nothing.
    let a2 = Device::new(&alice, "a2");
    let older = volli_core::ContactCard::issue(
        &alice,
        "alice",
        &[],
        &[],
        Timestamp::from_millis(a1.certificate.issued_at().as_millis() - 1),
    );
    let card = volli_core::ContactCard::issue(
        &alice,
        "alice",
        std::slice::from_ref(&a2.certificate),
        &[],
        Timestamp::from_millis(a1.certificate.issued_at().as_millis() + 1),
    );
    trust.revoked.borrow_mut().insert(a1.peer());
    let by_old_card = Commit {
        remove: vec![a1.peer()],
        cards: vec![older],
        ..Commit::default()
    };
    assert!(b1.mls.commit(&group, by_old_card, &trust, 0).is_err());
    // Bob's first device, next in line, takes over with the newer card; his second agrees.
    let committed = b1
        .mls
        .commit(
            &group,
            Commit {
                remove: vec![a1.peer()],
                cards: vec![card],
                ..Commit::default()
            },
            &trust,
            0,
        )
        .unwrap();
    b2.mls
        .process_bundle(&committed.messages, &trust, 0)
        .unwrap();
    assert!(b2.mls.is_committer(&group).is_ok_and(|c| !c));
    let m = send(&mut b2, &group, "the stolen phone reads none of this");
    assert!(a1.mls.process(&m, &trust).is_err());
    assert!(a1.stolen().process(&m, &trust).is_err());
    assert_eq!(
        text(b1.mls.process(&m, &trust).unwrap()),
        "the stolen phone reads none of this"
    );
}

#[test]
fn a_member_cannot_re_add_the_orderers_device_to_take_its_place() {
    let trust = Devices::default();
    let [mut a, mut b, mut c] = ["a", "b", "c"].map(User::new);
    let packages = vec![b.d[0].package(&a.d[0]), c.d[0].package(&a.d[0])];
    let info = Info::group(a.id(), "three", &[b.id(), c.id()], 0);
    let created = a.d[0].mls.create(info, packages, &trust, 0).unwrap();
    let group = created.group;
    for dev in [&mut b.d[0], &mut c.d[0]] {
        dev.mls
            .process(created.welcome.as_ref().unwrap(), &trust)
            .unwrap();
    }
    // Bob holds a key package of Alice's device (contacts hand them to each other): he
    // removes the device and adds it back with it, which would lock it out.
    let alices = a.d[0].mls.new_key_packages(1, true, 0).unwrap().remove(0);
    let package = b.d[0].mls.check_key_package(&alices.bytes).unwrap();
    let members = b.d[0].mls.members_indexed(&group).unwrap();
    let leaf = members
        .iter()
        .find(|(_, m)| m.peer == a.d[0].peer())
        .unwrap()
        .0;
    let bytes = {
        let bob = &mut b.d[0].mls;
        let provider = &bob.provider;
        let mls = loaded(&mut bob.groups, provider, &group).unwrap();
        let (commit, _, _) = mls
            .commit_builder()
            .propose_removals([LeafNodeIndex::new(leaf)])
            .propose_adds([package.package.clone()])
            .load_psks(provider.storage())
            .unwrap()
            .build(provider.rand(), provider.crypto(), &bob.signer, |_| true)
            .unwrap()
            .stage_commit(provider)
            .unwrap()
            .into_messages();
        commit.tls_serialize_detached().unwrap()
    };
    assert!(c.d[0].mls.process(&bytes, &trust).is_err());
    assert_eq!(
        c.d[0].mls.committer(&group).unwrap().unwrap().peer,
        a.d[0].peer()
    );
}
