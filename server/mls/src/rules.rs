//! The rules every member applies to a commit, in one place: the committer checks its own
//! commit with them before it sends it, and every other member checks what it receives with
//! the same function, so a commit one member takes is a commit every member takes.
//!
//! A commit judged here may only do what its evidence shows:
//!
//! - **Removals.** A device leaves a conversation when its user leaves the roster, when the
//!   same device is added again in the same commit (it lost its state and asked), or when
//!   its user revoked it — and then the commit carries that user's signed revocation
//!   ([`CommitNote::revocations`]), or the user's signed card issued after the device's
//!   certificate and no longer listing it ([`CommitNote::cards`]: in one-to-one
//!   conversations, whose two users hold each other's cards anyway), which any member can
//!   check whether it knows the user or not. No member removes another user's device on
//!   its own word.
//! - **The committer.** The committer is the orderer's device with the lowest leaf (else the
//!   lowest leaf). Another device commits only when it becomes the committer by that very
//!   commit, removing the devices ahead of it — and each of those removals needs a
//!   revocation (or is the device's own re-add). A member cannot seize the role, and a
//!   stolen committer that was revoked is replaced by the next device in line.
//! - **Roster changes** carry the change and who asked for it ([`CommitNote::change`]); the
//!   roster after must be exactly [`Info::changed`] of the roster before, by a committer
//!   whose user is an admin.
//! - **Devices** joining must be admitted by the member's own view ([`Trust`]), must not be
//!   revoked by a statement the commit carries, and a user has at most
//!   [`volli_core::card::MAX_DEVICES`] devices in a conversation (as in its card).
//! - **Updates** keep the device they update: the new leaf's certificate names the proposer
//!   and is signed by the device's own key.
//!
//! What it deliberately does not do: decide what to commit (the node does), or look at
//! anything but the group's state, the commit and the caller's [`Trust`].

use serde::{Deserialize, Serialize};
use volli_core::{ContactCard, PeerId, Statement, UserId, statement::Claim};

use crate::identity::Verified;
use crate::{GroupChange, Info, MAX_GROUP_DEVICES, Member, MlsError, Trust, committer_of};

/// Signed revocations a commit may carry at most.
pub const MAX_REVOCATIONS: usize = 64;
/// Signed cards a commit may carry at most.
pub const MAX_CARDS: usize = 4;
/// Longest note a commit carries (64 revocations of ≤ 512 bytes, 4 cards of ≤ 12 KiB, and
/// a change).
const MAX_NOTE_LEN: usize = 96 << 10;
const NOTE_VERSION: u8 = 1;

/// What a commit carries besides its MLS proposals, in its authenticated data (signed by
/// the committer with the rest of the commit): the evidence for what it does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitNote {
    version: u8,
    /// Signed revocations (encoded [`Statement`]s) of the devices it removes for that reason.
    pub revocations: Vec<Vec<u8>>,
    /// Signed cards (encoded [`ContactCard`]s) of users whose devices it removes because
    /// their latest card no longer lists them.
    pub cards: Vec<Vec<u8>>,
    /// Devices' own signed requests to be added again ([`Rejoin`]), for those it removes
    /// and adds back in the same commit.
    pub rejoins: Vec<Vec<u8>>,
    /// The change to a group's roster or name it makes, and the user who asked for it.
    pub change: Option<(UserId, GroupChange)>,
}

impl CommitNote {
    /// A note with `revocations`, `cards`, `rejoins` and `change`.
    pub fn new(
        revocations: &[Statement],
        cards: &[ContactCard],
        rejoins: &[Vec<u8>],
        change: Option<(UserId, GroupChange)>,
    ) -> Self {
        Self {
            version: NOTE_VERSION,
            revocations: revocations.iter().map(Statement::to_bytes).collect(),
            cards: cards.iter().map(ContactCard::to_bytes).collect(),
            rejoins: rejoins.to_vec(),
            change,
        }
    }

    /// The encoding (empty for a note that says nothing, as commits of earlier releases).
    pub(crate) fn encode(&self) -> Vec<u8> {
        if self.revocations.is_empty()
            && self.cards.is_empty()
            && self.rejoins.is_empty()
            && self.change.is_none()
        {
            return Vec::new();
        }
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Reads a commit's authenticated data: nothing is an empty note.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, MlsError> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        if bytes.len() > MAX_NOTE_LEN {
            return Err(MlsError::Refused("a commit's note is too long".into()));
        }
        match postcard::take_from_bytes::<Self>(bytes) {
            Ok((note, [])) if note.version == NOTE_VERSION => Ok(note),
            _ => Err(MlsError::Refused("a commit's note is not readable".into())),
        }
    }

    /// Its revocations, read (those that do not verify left out: [`Self::revoked`] refuses
    /// a commit that has any).
    pub(crate) fn statements(&self) -> Vec<Statement> {
        self.revocations
            .iter()
            .filter_map(|b| Statement::from_bytes(b).ok())
            .collect()
    }

    /// Its cards, each checked: a card that does not verify refuses the whole commit.
    pub(crate) fn cards(&self) -> Result<Vec<ContactCard>, MlsError> {
        if self.cards.len() > MAX_CARDS {
            return Err(MlsError::Refused("a commit carries too many cards".into()));
        }
        self.cards
            .iter()
            .map(|b| {
                ContactCard::from_bytes(b)
                    .map_err(|_| MlsError::Refused("a card in a commit does not verify".into()))
            })
            .collect()
    }

    /// The devices its revocations show revoked, each with its user. A statement that does
    /// not verify, or says something else, refuses the whole commit.
    pub(crate) fn revoked(&self) -> Result<Vec<(UserId, PeerId)>, MlsError> {
        if self.revocations.len() > MAX_REVOCATIONS {
            return Err(MlsError::Refused(
                "a commit carries too many revocations".into(),
            ));
        }
        self.revocations
            .iter()
            .map(|bytes| match Statement::from_bytes(bytes) {
                Ok(s) => match s.claim() {
                    Claim::Revoked { peer } => Ok((s.user_id(), *peer)),
                    Claim::KeyGeneration { .. } => Err(MlsError::Refused(
                        "a commit's evidence is not a revocation".into(),
                    )),
                },
                Err(_) => Err(MlsError::Refused(
                    "a revocation in a commit does not verify".into(),
                )),
            })
            .collect()
    }
}

/// How old a device's request to be added again may be when a commit carries it.
const REJOIN_VALID_MS: i64 = 7 * 24 * 3600 * 1000;
const REJOIN_DOMAIN: &[u8] = b"volli/rejoin/1";

/// A device's own request to be added again to a group, with the key package it wants to
/// be added with, signed by its device key: the only thing that lets a commit remove a
/// device and add it back (so nobody re-adds another's device with a package of its
/// choice, locking the device out).
#[derive(Serialize, Deserialize)]
struct Rejoin {
    version: u8,
    group: [u8; 16],
    /// The hash reference of the fresh key package.
    package: Vec<u8>,
    at_ms: i64,
    signature: Vec<u8>,
}

fn rejoin_payload(group: &crate::GroupRef, package: &[u8], at_ms: i64) -> Vec<u8> {
    [
        REJOIN_DOMAIN,
        group.0.as_slice(),
        &at_ms.to_be_bytes(),
        package,
    ]
    .concat()
}

/// Signs a request of this device (its key `sign` uses) to be added again to `group` with
/// the key package whose hash reference is `package`.
pub(crate) fn sign_rejoin(
    sign: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
    group: &crate::GroupRef,
    package: &[u8],
    at_ms: i64,
) -> Option<Vec<u8>> {
    let rejoin = Rejoin {
        version: 1,
        group: group.0,
        package: package.to_vec(),
        at_ms,
        signature: sign(&rejoin_payload(group, package, at_ms))?,
    };
    postcard::to_allocvec(&rejoin).ok()
}

/// Whether `bytes` is `device`'s own request, within the last week of `now_ms`, to be added
/// again to `group` with the key package `package`.
fn rejoin_by(
    bytes: &[u8],
    device: &PeerId,
    group: &crate::GroupRef,
    package: &[u8],
    now_ms: i64,
) -> bool {
    let Ok((r, [])) = postcard::take_from_bytes::<Rejoin>(bytes) else {
        return false;
    };
    if r.version != 1 || r.group != group.0 || r.package != package {
        return false;
    }
    if now_ms != 0 && (now_ms - r.at_ms).abs() > REJOIN_VALID_MS {
        return false;
    }
    let Some(key) = volli_core::signer::ed25519_public_key(device) else {
        return false;
    };
    let (Ok(key), Ok(signature)) = (
        ed25519_dalek::VerifyingKey::from_bytes(&key),
        ed25519_dalek::Signature::from_slice(&r.signature),
    ) else {
        return false;
    };
    key.verify_strict(&rejoin_payload(group, package, r.at_ms), &signature)
        .is_ok()
}

/// A commit as the rules see it.
pub(crate) struct Proposed<'a> {
    /// The group.
    pub(crate) group: crate::GroupRef,
    /// Who commits: its leaf and device.
    pub(crate) sender: (u32, Member),
    /// The leaves it removes.
    pub(crate) removed: &'a [(u32, Member)],
    /// The devices it adds, with their key packages' hash references.
    pub(crate) added: &'a [(Member, Vec<u8>)],
    /// What the conversation is after it, when it changes that.
    pub(crate) next: Option<&'a Info>,
    /// Its evidence.
    pub(crate) note: &'a CommitNote,
}

/// Whether the commit `p` may follow the group state (`info`, its `members` by leaf), for a
/// member whose view of devices is `trust`, at `now_ms` (0: no clock check).
pub(crate) fn check_commit(
    info: &Info,
    members: &[(u32, Member)],
    p: &Proposed<'_>,
    trust: &dyn Trust,
    now_ms: i64,
) -> Result<(), MlsError> {
    let (sender_leaf, sender) = p.sender;
    if !trust.admits(info, &sender) {
        return Err(MlsError::Refused(format!(
            "device {} is no longer believed and may not commit",
            sender.peer
        )));
    }
    let revoked = p.note.revoked()?;
    let cards = p.note.cards()?;
    // Revoked by a statement of its user, or left off a card its user issued after it.
    let is_revoked = |m: &Member| {
        revoked
            .iter()
            .any(|(u, peer)| *u == m.user && *peer == m.peer)
            || cards.iter().any(|c| {
                c.user_id() == m.user
                    && c.issued_at() > m.issued_at
                    && !c.devices().iter().any(|d| d.peer_id() == m.peer)
            })
    };
    let takeover = committer_of(info, members, &[]).is_none_or(|(leaf, _)| leaf != sender_leaf);

    // What the conversation is after: exactly the change the note names, by an admin
    // committer; a takeover changes nothing but devices.
    let after = match (&p.note.change, p.next) {
        (None, None) => info.clone(),
        (Some((by, change)), Some(next)) if !takeover => {
            let expected = info.changed(by, change)?;
            if expected != *next {
                return Err(MlsError::Refused(
                    "a group's new roster is not the change its commit names".into(),
                ));
            }
            info.may_become(next, &sender.user)?;
            next.clone()
        }
        _ => {
            return Err(MlsError::Refused(
                "a commit changes a group only with the change it names".into(),
            ));
        }
    };

    if p.note.rejoins.len() > MAX_REVOCATIONS {
        return Err(MlsError::Refused(
            "a commit carries too many rejoins".into(),
        ));
    }
    for (_, m) in p.removed {
        // Added back in the same commit, with the key package it asked to be added with.
        let readded = p.added.iter().any(|(a, package)| {
            a.peer == m.peer
                && p.note
                    .rejoins
                    .iter()
                    .any(|r| rejoin_by(r, &m.peer, &p.group, package, now_ms))
        });
        let left = !takeover && !after.includes(&m.user);
        if !(readded || left || is_revoked(m) || (!takeover && trust.revoked(m))) {
            return Err(MlsError::Refused(format!(
                "device {} is removed without its user's revocation",
                m.peer
            )));
        }
    }
    if takeover {
        let gone: Vec<u32> = p.removed.iter().map(|(leaf, _)| *leaf).collect();
        if committer_of(info, members, &gone).is_none_or(|(leaf, _)| leaf != sender_leaf) {
            return Err(MlsError::NotCommitter);
        }
    }

    for (m, _) in p.added {
        if !after.includes(&m.user) || !trust.may_join(&after, m) || is_revoked(m) {
            return Err(MlsError::Refused(format!(
                "device {} may not be in this conversation",
                m.peer
            )));
        }
    }
    let staying = members
        .iter()
        .filter(|(leaf, _)| !p.removed.iter().any(|(r, _)| r == leaf))
        .map(|(_, m)| m);
    let devices: Vec<&Member> = staying.chain(p.added.iter().map(|(m, _)| m)).collect();
    if devices.len() > MAX_GROUP_DEVICES {
        return Err(MlsError::Refused(format!(
            "a conversation has at most {MAX_GROUP_DEVICES} devices"
        )));
    }
    for (m, _) in p.added {
        let of_user = devices.iter().filter(|d| d.user == m.user).count();
        if of_user > volli_core::card::MAX_DEVICES {
            return Err(MlsError::Refused(format!(
                "a user has at most {} devices in a conversation",
                volli_core::card::MAX_DEVICES
            )));
        }
    }
    Ok(())
}

/// Checks a leaf an update proposes for the device `proposer`: it must name the same device
/// and be signed by that device's own key (openmls would let an update bring a new
/// signature key, which members then cannot tie to the device's certificate).
pub(crate) fn check_update(
    verified: &Verified,
    proposer: &Member,
    leaf: &openmls::prelude::LeafNode,
) -> Result<(), MlsError> {
    let member = verified.member(leaf.credential(), leaf.signature_key().as_slice())?;
    if member.peer != proposer.peer || member.user != proposer.user {
        return Err(MlsError::Refused(
            "an update must keep the device it updates".into(),
        ));
    }
    Ok(())
}

/// Checks the devices of a conversation someone is Welcomed into: every one admitted by
/// `trust`, and at most [`volli_core::card::MAX_DEVICES`] per user.
pub(crate) fn check_members(
    info: &Info,
    members: &[Member],
    trust: &dyn Trust,
) -> Result<(), MlsError> {
    for member in members {
        if !info.includes(&member.user) || !trust.may_join(info, member) {
            return Err(MlsError::Refused(format!(
                "device {} may not be in this conversation",
                member.peer
            )));
        }
        if members.iter().filter(|m| m.user == member.user).count() > volli_core::card::MAX_DEVICES
        {
            return Err(MlsError::Refused(format!(
                "a user has at most {} devices in a conversation",
                volli_core::card::MAX_DEVICES
            )));
        }
    }
    if members.len() > MAX_GROUP_DEVICES {
        return Err(MlsError::Refused(format!(
            "a conversation has at most {MAX_GROUP_DEVICES} devices"
        )));
    }
    Ok(())
}
