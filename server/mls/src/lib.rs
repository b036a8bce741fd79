//! Conversations on MLS (RFC 9420): one MLS group per conversation, whose members are the
//! `messages` devices of its users, with the post-quantum hybrid suite
//! `MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519` (X-Wing, 0x004F, provisional).
//!
//! This crate holds one device's side of it: its groups and key packages in memory
//! ([`storage::Storage`], handed to the caller as changes to persist), its device key as the
//! signer, members proven by device certificates ([`identity`]), and the rules everyone
//! applies the same way so that commits never need a server to order them:
//!
//! - **One committer per conversation.** The group context names the conversation's
//!   *orderer* (the user whose device created it). The committer is the orderer's member
//!   device with the lowest leaf index, or, when the orderer has none left, the member with
//!   the lowest leaf index. Only the committer commits; every other device sends proposals
//!   (updates of its own leaf) to it, and the committer forwards the proposals it commits
//!   beside the commit ([`Committed::messages`]). A commit from anyone else is refused —
//!   except from the device that becomes the committer by that very commit, which removes
//!   the devices ahead of it (a revoked committer is replaced without waiting for it).
//! - **Members are checked where they enter.** A new leaf must carry a device certificate
//!   that verifies, be signed by that device's key, and be admitted by the caller's
//!   [`Trust`] (listed in its user's latest card, not revoked, with `messages`).
//! - **Sessions forget.** Message keys are deleted as they are used (openmls' secret tree);
//!   past epochs are kept only for late mail and dropped by [`Mls::forget_past`].
//!
//! What it deliberately does not do: I/O of any kind, delivery, or deciding when to commit
//! (the node does, from what it learns about devices and time).
#![warn(missing_docs)]

#[cfg(feature = "crafted")]
pub mod crafted;
mod identity;
mod rules;
mod sponsor;
pub mod storage;

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use openmls::prelude::Sender;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    Capabilities, Ciphersuite, CredentialType, Extension, ExtensionType, Extensions, GroupId,
    KeyPackage, KeyPackageIn, KeyPackageRef, LeafNodeIndex, LeafNodeParameters, MlsGroup,
    MlsGroupCreateConfig, MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn,
    PURE_CIPHERTEXT_WIRE_FORMAT_POLICY, PastEpochDeletion, ProcessedMessageContent, Proposal,
    ProtocolMessage, ProtocolVersion, RequiredCapabilitiesExtension, SenderRatchetConfiguration,
    StagedWelcome, UnknownExtension,
};
use openmls_rust_crypto::RustCrypto;
use openmls_traits::OpenMlsProvider;
use serde::{Deserialize, Serialize};
use volli_core::{DeviceCertificate, PeerId, Permissions, Statement, UserId};

use identity::Verified;
pub use identity::{DeviceSigner, Member};
pub use rules::{CommitNote, MAX_CARDS, MAX_REVOCATIONS};
pub use sponsor::{MAX_SPONSOR_NOTE_LEN, check_sponsor_note, sponsor_note_group};
use storage::{Change, Storage};

/// The ciphersuite every conversation uses.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519;
/// The group context extension that says what a conversation is ([`Info`]), in the
/// private-use range.
const INFO_EXTENSION: u16 = 0xff56;
/// Listed in the capabilities of a leaf whose device reads the message kinds of this release
/// (replies, reactions, edits...): devices of earlier releases do not list it, so members
/// who do not know each other's nodes can tell from the tree what each one reads.
const KINDS_CAPABILITY: u16 = 0xff57;
/// Largest MLS message accepted (a commit adding many devices, with its path).
pub const MAX_MESSAGE_LEN: usize = 1 << 20;
/// Largest proposal the committer holds (an update of one leaf is ≈ 7 KB with X-Wing).
const MAX_HELD_PROPOSAL: usize = 32 << 10;
/// Proposals the committer holds per conversation and epoch at most.
const MAX_HELD_PROPOSALS: usize = 64;

/// Why an MLS operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MlsError {
    /// Not a well-formed MLS message or key package.
    #[error("malformed MLS message")]
    Malformed,
    /// A message for a group this device is not in.
    #[error("not a member of this conversation")]
    UnknownGroup,
    /// A Welcome that none of this device's key packages opens.
    #[error("the welcome is for another device")]
    NotForUs,
    /// A message for an epoch this device has not reached: hold it until the commits before
    /// it arrive.
    #[error("the message is for epoch {epoch}, ahead of this device")]
    Ahead {
        /// The group.
        group: GroupRef,
        /// The message's epoch.
        epoch: u64,
    },
    /// A handshake message for an epoch this device has left, or an application message
    /// from an epoch whose keys are gone.
    #[error("the message is from a past epoch")]
    Stale,
    /// Already processed (its key was used and deleted).
    #[error("the message was already processed")]
    Duplicate,
    /// It does not decrypt at an epoch this device has: the group may have forked.
    #[error("the message does not decrypt")]
    Undecryptable,
    /// Refused by the conversation's rules.
    #[error("refused: {0}")]
    Refused(String),
    /// Only the committer commits.
    #[error("this device does not commit in this conversation")]
    NotCommitter,
    /// The MLS library failed.
    #[error("MLS: {0}")]
    Library(String),
}

fn library(e: impl fmt::Debug) -> MlsError {
    MlsError::Library(format!("{e:?}"))
}

/// A conversation's group id: 16 random bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupRef(pub [u8; 16]);

impl GroupRef {
    fn of(id: &GroupId) -> Option<Self> {
        <[u8; 16]>::try_from(id.as_slice()).ok().map(Self)
    }

    fn id(&self) -> GroupId {
        GroupId::from_slice(&self.0)
    }
}

impl fmt::Display for GroupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for GroupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupRef({self})")
    }
}

/// What a conversation is: agreed by every member, in the group context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    version: u8,
    /// The user whose devices commit (the one whose device created the group).
    pub orderer: UserId,
    /// When the group was created (ms since the epoch, by its creator's clock): of two
    /// groups of one conversation, every device sends to the newer (a device that lost its
    /// state starts a new one, and everyone follows).
    pub created_ms: i64,
    /// Between whom.
    pub kind: Kind,
}

/// The kinds of conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Kind {
    /// One-to-one between the orderer and this user.
    Direct {
        /// The other user.
        with: UserId,
    },
    /// A named group: its roster is agreed like everything else in the group context, and
    /// changes only by the committer's commits.
    Group {
        /// Its name.
        name: String,
        /// Its users, in the order they joined.
        members: Vec<Membership>,
    },
}

/// What a user may do in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Adds, removes and promotes members, renames the group.
    Admin,
    /// Reads and sends.
    Member,
}

impl Role {
    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }
}

/// A user in a group's roster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The user.
    pub user: UserId,
    /// What it may do.
    pub role: Role,
    /// The member who brought it in (a contact of it, which carries group mail to it for
    /// members it does not know); `None` for the group's creator.
    pub sponsor: Option<UserId>,
}

/// Users in a group at most.
pub const MAX_GROUP_USERS: usize = 128;
/// Member devices in a group at most (every user's devices together).
pub const MAX_GROUP_DEVICES: usize = 512;
/// Longest group name, in bytes.
pub const MAX_GROUP_NAME: usize = 64;

impl Info {
    /// A one-to-one conversation that `orderer` starts with `with` at `created_ms`.
    pub fn direct(orderer: UserId, with: UserId, created_ms: i64) -> Self {
        Self {
            version: 1,
            orderer,
            created_ms,
            kind: Kind::Direct { with },
        }
    }

    /// A group named `name` that `orderer` creates with `others` (as members it sponsors)
    /// at `created_ms`; the orderer is its first admin.
    pub fn group(orderer: UserId, name: &str, others: &[UserId], created_ms: i64) -> Self {
        let mut members = vec![Membership {
            user: orderer,
            role: Role::Admin,
            sponsor: None,
        }];
        for user in others {
            if !members.iter().any(|m| m.user == *user) {
                members.push(Membership {
                    user: *user,
                    role: Role::Member,
                    sponsor: Some(orderer),
                });
            }
        }
        Self {
            version: 1,
            orderer,
            created_ms,
            kind: Kind::Group {
                name: name.to_owned(),
                members,
            },
        }
    }

    /// Whether `user` is one of the conversation's users.
    pub fn includes(&self, user: &UserId) -> bool {
        match &self.kind {
            Kind::Direct { with } => *user == self.orderer || user == with,
            Kind::Group { members, .. } => members.iter().any(|m| m.user == *user),
        }
    }

    /// For `me`, the user the conversation is with (one-to-one).
    pub fn peer_of(&self, me: &UserId) -> Option<UserId> {
        match &self.kind {
            Kind::Direct { with } if *me == self.orderer => Some(*with),
            Kind::Direct { with } if me == with => Some(self.orderer),
            Kind::Direct { .. } | Kind::Group { .. } => None,
        }
    }

    /// Whether it is a group.
    pub fn is_group(&self) -> bool {
        matches!(self.kind, Kind::Group { .. })
    }

    /// A group's name.
    pub fn name(&self) -> Option<&str> {
        match &self.kind {
            Kind::Group { name, .. } => Some(name),
            Kind::Direct { .. } => None,
        }
    }

    /// A group's roster (empty for a one-to-one conversation).
    pub fn roster(&self) -> &[Membership] {
        match &self.kind {
            Kind::Group { members, .. } => members,
            Kind::Direct { .. } => &[],
        }
    }

    /// The users of the conversation.
    pub fn users(&self) -> Vec<UserId> {
        match &self.kind {
            Kind::Direct { with } => vec![self.orderer, *with],
            Kind::Group { members, .. } => members.iter().map(|m| m.user).collect(),
        }
    }

    /// `user`'s role in a group.
    pub fn role_of(&self, user: &UserId) -> Option<Role> {
        self.roster()
            .iter()
            .find(|m| m.user == *user)
            .map(|m| m.role)
    }

    /// The group as it is after `change` by `by` (an admin): checked against the rules every
    /// member applies to a commit.
    pub fn changed(&self, by: &UserId, change: &GroupChange) -> Result<Self, MlsError> {
        let Kind::Group { name, members } = &self.kind else {
            return Err(MlsError::Refused("not a group".into()));
        };
        let leaving = *change == GroupChange::Remove(*by);
        let own = leaving || matches!(change, GroupChange::Sponsor(_) | GroupChange::Devices);
        if !own && self.role_of(by) != Some(Role::Admin) {
            return Err(MlsError::Refused("only an admin changes a group".into()));
        }
        let (mut name, mut members, mut orderer) = (name.clone(), members.clone(), self.orderer);
        match change {
            GroupChange::Rename(new) => name.clone_from(new),
            GroupChange::Add(user) => {
                if members.iter().any(|m| m.user == *user) {
                    return Err(MlsError::Refused("already a member".into()));
                }
                members.push(Membership {
                    user: *user,
                    role: Role::Member,
                    sponsor: Some(*by),
                });
            }
            GroupChange::Remove(user) => {
                if !members.iter().any(|m| m.user == *user) {
                    return Err(MlsError::Refused("not a member".into()));
                }
                members.retain(|m| m.user != *user);
                if *user == orderer {
                    // The next admin orders; without one, the longest-standing member
                    // becomes admin and orders.
                    if !members.iter().any(|m| m.role == Role::Admin)
                        && let Some(first) = members.first_mut()
                    {
                        first.role = Role::Admin;
                    }
                    if let Some(next) = members.iter().find(|m| m.role == Role::Admin) {
                        orderer = next.user;
                    }
                }
                // Whom the removed user brought in, another member sponsors now: the remover,
                // or (when it left) whoever orders the group. Mail to them is carried by a
                // member who is their contact in any case.
                let heir = if leaving { orderer } else { *by };
                for m in &mut members {
                    if m.sponsor == Some(*user) {
                        m.sponsor = Some(heir).filter(|h| *h != m.user);
                    }
                }
            }
            GroupChange::Devices => {}
            GroupChange::Sponsor(sponsor) => {
                if sponsor == by || !members.iter().any(|m| m.user == *sponsor) {
                    return Err(MlsError::Refused(
                        "a member is carried by another member".into(),
                    ));
                }
                // Not by one it carries, near or far: the sponsor lines stay a tree.
                let mut up = Some(*sponsor);
                let mut steps = 0;
                while let Some(u) = up {
                    if u == *by || steps > members.len() {
                        return Err(MlsError::Refused(
                            "a member cannot be carried by one it carries".into(),
                        ));
                    }
                    up = members.iter().find(|m| m.user == u).and_then(|m| m.sponsor);
                    steps += 1;
                }
                let Some(m) = members.iter_mut().find(|m| m.user == *by) else {
                    return Err(MlsError::Refused("not a member".into()));
                };
                m.sponsor = Some(*sponsor);
            }
            GroupChange::Role(user, role) => {
                let Some(m) = members.iter_mut().find(|m| m.user == *user) else {
                    return Err(MlsError::Refused("not a member".into()));
                };
                if *user == orderer && *role != Role::Admin {
                    return Err(MlsError::Refused(
                        "the member who orders the group's changes stays an admin".into(),
                    ));
                }
                m.role = *role;
            }
        }
        let next = Self {
            version: self.version,
            orderer,
            created_ms: self.created_ms,
            kind: Kind::Group { name, members },
        };
        next.check()?;
        Ok(next)
    }

    /// Checks a group's roster against the limits.
    fn check(&self) -> Result<(), MlsError> {
        let Kind::Group { name, members } = &self.kind else {
            return Ok(());
        };
        if name.trim().is_empty() || name.len() > MAX_GROUP_NAME {
            return Err(MlsError::Refused(format!(
                "a group's name is 1 to {MAX_GROUP_NAME} bytes"
            )));
        }
        if members.len() > MAX_GROUP_USERS {
            return Err(MlsError::Refused(format!(
                "a group has at most {MAX_GROUP_USERS} members"
            )));
        }
        let mut seen = std::collections::HashSet::new();
        if !members.iter().all(|m| seen.insert(m.user)) {
            return Err(MlsError::Refused("a member listed twice".into()));
        }
        if self.role_of(&self.orderer) != Some(Role::Admin) {
            return Err(MlsError::Refused(
                "the member who orders a group is one of its admins".into(),
            ));
        }
        Ok(())
    }

    /// Whether `next` may follow this conversation in a commit by `committer`: a group
    /// stays the same group and its committer's user is an admin of it.
    fn may_become(&self, next: &Self, committer: &UserId) -> Result<(), MlsError> {
        if !self.is_group()
            || !next.is_group()
            || next.created_ms != self.created_ms
            || next.version != self.version
        {
            return Err(MlsError::Refused(
                "only a group's roster and name change".into(),
            ));
        }
        if self.role_of(committer) != Some(Role::Admin) {
            return Err(MlsError::Refused("only an admin changes a group".into()));
        }
        next.check()
    }

    fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        match postcard::take_from_bytes::<Self>(bytes) {
            Ok((info, [])) if info.version == 1 => Some(info),
            _ => None,
        }
    }
}

/// A change to a group's roster or name, asked by an admin (a member may ask to leave, and
/// to be carried by another member).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupChange {
    /// A new name.
    Rename(String),
    /// A user joins (the asking admin sponsors it).
    Add(UserId),
    /// A user leaves, or is removed.
    Remove(UserId),
    /// A user's role changes.
    Role(UserId, Role),
    /// The asking member is carried from now on by this member, one of its contacts (its
    /// sponsor left, and whom it passed to is not its contact).
    Sponsor(UserId),
    /// The asking member's own devices that are not in the group yet join (their key
    /// packages go with the request): the roster stays as it is.
    Devices,
}

/// How this device keeps its groups.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Past epochs kept at most per conversation (late mail within them still opens);
    /// [`Mls::forget_past`] drops them earlier by age.
    pub max_past_epochs: usize,
    /// How far behind the newest message of a sender a late message may be and still open.
    pub out_of_order: u32,
    /// How far ahead of what this device has seen of a sender a message may be.
    pub max_forward: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_past_epochs: 32,
            out_of_order: 256,
            max_forward: 100_000,
        }
    }
}

/// Decides on an opened application message (its sender, its content) before its key is
/// used up.
pub type Accept<'a> = &'a mut dyn FnMut(&Member, &[u8]) -> Result<(), MlsError>;

/// What the node believes about devices: who may be a member of a conversation now.
pub trait Trust {
    /// Whether `member` may belong to the conversation `info`: a device of one of its users
    /// that the user's latest card (or this user's own device list) names, not revoked, with
    /// `messages`.
    fn admits(&self, info: &Info, member: &Member) -> bool;

    /// Whether this node itself knows `member` to be revoked: a commit that removes it
    /// without carrying the evidence (one by a node of an earlier release) is taken then.
    fn revoked(&self, _member: &Member) -> bool {
        false
    }

    /// Whether `member` may join the conversation `info` in a commit or a Welcome. Judged
    /// only by what cannot differ between members in ways that matter — a device its user
    /// revoked by a signed statement — so that a device a member's own view merely does not
    /// list yet (or a device a member minted for itself, bounded per user) never makes some
    /// members refuse a commit that others take.
    fn may_join(&self, info: &Info, member: &Member) -> bool {
        self.admits(info, member)
    }
}

/// Another device's key package, checked.
#[derive(Clone, Debug)]
pub struct Package {
    /// Whose it is.
    pub member: Member,
    /// Whether it may be used more than once.
    pub last_resort: bool,
    /// Its hash reference (TLS-encoded).
    pub reference: Vec<u8>,
    /// Its encoding.
    pub bytes: Vec<u8>,
    package: KeyPackage,
}

/// A group this device created.
#[derive(Debug)]
pub struct Created {
    /// The conversation's group.
    pub group: GroupRef,
    /// The Welcome for the devices added (absent when there were none).
    pub welcome: Option<Vec<u8>>,
    /// The devices the Welcome is for.
    pub added: Vec<Member>,
    /// The group's epoch after the adds.
    pub epoch: u64,
}

/// What a commit is to do (see [`Mls::commit`]).
#[derive(Clone, Debug, Default)]
pub struct Commit {
    /// Devices to add.
    pub add: Vec<Package>,
    /// Devices to remove: of users leaving, re-added in the same commit, or revoked (with
    /// their revocations in [`Self::revocations`]).
    pub remove: Vec<PeerId>,
    /// Whether to update this device's own leaf.
    pub update: bool,
    /// A change to a group, and the user who asked for it.
    pub change: Option<(UserId, GroupChange)>,
    /// Signed revocations of devices it removes (those the removals need go in the commit).
    pub revocations: Vec<Statement>,
    /// Signed cards of users whose devices it removes because the card no longer lists them
    /// (one-to-one conversations: the other user holds the card anyway).
    pub cards: Vec<volli_core::ContactCard>,
    /// Devices' own signed requests to be added again ([`Mls::rejoin_request`]), for the
    /// devices it removes and adds back.
    pub rejoins: Vec<Vec<u8>>,
}

/// A commit this device made.
#[derive(Debug)]
pub struct Committed {
    /// What every member device but this one must process, in this order: the proposals
    /// the commit includes by reference, then the commit.
    pub messages: Vec<Vec<u8>>,
    /// The Welcome for the devices added.
    pub welcome: Option<Vec<u8>>,
    /// Added devices.
    pub added: Vec<Member>,
    /// Removed devices.
    pub removed: Vec<Member>,
    /// The epoch the commit starts.
    pub epoch: u64,
    /// The members who process the commit (every member before it but this device).
    pub recipients: Vec<Member>,
}

/// An encrypted application message.
#[derive(Debug)]
pub struct Sealed {
    /// The MLS message.
    pub bytes: Vec<u8>,
    /// The epoch it was sent in.
    pub epoch: u64,
}

/// What processing a message did.
#[derive(Debug)]
#[non_exhaustive]
pub enum Processed {
    /// An application message opened.
    Application {
        /// The conversation.
        group: GroupRef,
        /// Its epoch.
        epoch: u64,
        /// Who sent it.
        sender: Member,
        /// What it says.
        content: Vec<u8>,
    },
    /// A proposal held for the committer's next commit (or, inside a commit's bundle,
    /// checked and taken for the commit that follows it).
    Proposal {
        /// The conversation.
        group: GroupRef,
        /// Who proposed, when it was opened (a held proposal is opened only when it is
        /// committed: its key can be used once).
        sender: Option<Member>,
    },
    /// A commit applied.
    Commit {
        /// The conversation.
        group: GroupRef,
        /// The new epoch.
        epoch: u64,
        /// Who committed.
        sender: Member,
        /// Devices added.
        added: Vec<Member>,
        /// Devices removed.
        removed: Vec<Member>,
        /// Whether this device was removed (the group is gone from this device).
        left: bool,
        /// What the conversation is now, when the commit changed it (a group's roster or
        /// name).
        info: Option<Info>,
        /// The signed revocations it carried (checked), which justified its removals.
        revocations: Vec<Statement>,
    },
    /// One of this device's own messages, echoed back: nothing to do.
    Own,
    /// Joined a conversation from a Welcome.
    Joined {
        /// The conversation.
        group: GroupRef,
        /// What it is.
        info: Info,
        /// Its epoch.
        epoch: u64,
        /// Every member.
        members: Vec<Member>,
        /// The device whose commit added this one.
        committer: Option<Member>,
    },
}

/// The crypto and storage openmls runs on.
struct Provider {
    crypto: RustCrypto,
    storage: Storage,
}

impl OpenMlsProvider for Provider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = Storage;

    fn storage(&self) -> &Storage {
        &self.storage
    }

    fn crypto(&self) -> &RustCrypto {
        &self.crypto
    }

    fn rand(&self) -> &RustCrypto {
        &self.crypto
    }
}

/// Our own entries in the store.
mod own {
    /// The index of groups: `g` + group id → the conversation's [`super::Info`].
    pub(super) const GROUP: &[u8] = b"g";
    /// Proposals received for the next commit, to forward beside it: `p` + group id + hash
    /// of the message → the message.
    pub(super) const PROPOSAL: &[u8] = b"p";
    /// This device's own key packages: `k` + hash reference → [`super::OwnPackage`].
    pub(super) const KEY_PACKAGE: &[u8] = b"k";
    /// When this device last updated its leaf in a group, and messages since: `u` + group
    /// id → `(ms, count)`.
    pub(super) const UPDATED: &[u8] = b"u";
    /// Groups this device asked to be added to again: `r` + group id → when (ms).
    pub(super) const REJOIN: &[u8] = b"r";
    /// This device's own update proposal, out of the proposal store until the commit that
    /// includes it: `o` + group id → (epoch, queued proposal).
    pub(super) const OWN_PROPOSAL: &[u8] = b"o";
    /// Groups this device forgot (it left, was removed, or they were superseded): `t` +
    /// group id → (the last epoch it saw, when it forgot them in ms). A Welcome into one of
    /// them for that epoch or an earlier one is a replay.
    pub(super) const GONE: &[u8] = b"t";
    /// This device's key packages that opened a Welcome: `w` + hash reference → when (ms).
    pub(super) const USED: &[u8] = b"w";
    /// Sponsor notes for the users of a group this device commits in, to go beside their
    /// devices' Welcomes: `n` + group id + user id → the note.
    pub(super) const SPONSOR_NOTE: &[u8] = b"n";
}

/// How fresh a device's own leaf in a group is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// When its keys were last refreshed (it joined, committed with a path, or a commit
    /// included its update), in ms since the epoch.
    pub updated_ms: i64,
    /// Messages through the group since, in either direction.
    pub messages: u64,
    /// The epoch in which it proposed an update that no commit has taken yet.
    pub proposed_in: Option<u64>,
}

/// What an MLS message is, as its framing says in the clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// A Welcome into a group.
    Welcome,
    /// An application message (text, a file offer, a request).
    Application,
    /// A proposal.
    Proposal,
    /// A commit.
    Commit,
}

/// A message's group, epoch and kind, read without processing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peeked {
    /// The group (none for a Welcome, whose group is encrypted).
    pub group: Option<GroupRef>,
    /// The epoch (0 for a Welcome).
    pub epoch: u64,
    /// What it is.
    pub kind: MessageKind,
}

/// Reads a message's group, epoch and kind without processing it.
pub fn peek(bytes: &[u8]) -> Result<Peeked, MlsError> {
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(MlsError::Malformed);
    }
    let message = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| MlsError::Malformed)?;
    let protocol: ProtocolMessage = match message.extract() {
        MlsMessageBodyIn::Welcome(_) => {
            return Ok(Peeked {
                group: None,
                epoch: 0,
                kind: MessageKind::Welcome,
            });
        }
        MlsMessageBodyIn::PrivateMessage(m) => m.into(),
        MlsMessageBodyIn::PublicMessage(m) => m.into(),
        _ => return Err(MlsError::Malformed),
    };
    let kind = match protocol.content_type() {
        openmls::prelude::ContentType::Application => MessageKind::Application,
        openmls::prelude::ContentType::Proposal => MessageKind::Proposal,
        openmls::prelude::ContentType::Commit => MessageKind::Commit,
    };
    Ok(Peeked {
        group: Some(GroupRef::of(protocol.group_id()).ok_or(MlsError::Malformed)?),
        epoch: protocol.epoch().as_u64(),
        kind,
    })
}

/// One of this device's key packages, as kept for its bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnPackage {
    /// Its hash reference (TLS-encoded).
    pub reference: Vec<u8>,
    /// Whether it may be used more than once.
    pub last_resort: bool,
    /// When it was made (ms since the epoch).
    pub created_ms: i64,
    /// Its encoding, to hand out.
    pub bytes: Vec<u8>,
    /// Whether it was handed to another device (a one-time package goes to one only).
    pub given: bool,
}

/// One device's MLS state.
pub struct Mls {
    provider: Provider,
    signer: DeviceSigner,
    certificate: DeviceCertificate,
    me: Member,
    config: Config,
    groups: HashMap<GroupRef, MlsGroup>,
    verified: Verified,
    /// Operations running inside one another: only the outermost one keeps or rolls back.
    depth: u32,
}

impl fmt::Debug for Mls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mls")
            .field("me", &self.me)
            .field("loaded", &self.groups.len())
            .finish_non_exhaustive()
    }
}

impl Mls {
    /// The state of the device `certificate` names, whose Ed25519 secret key is `seed`, from
    /// the rows persisted before (none for a device that never had any).
    pub fn open(
        rows: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
        certificate: DeviceCertificate,
        seed: &[u8; 32],
        config: Config,
    ) -> Result<Self, MlsError> {
        let signer = DeviceSigner::from_seed(seed);
        let device_key = volli_core::signer::ed25519_public_key(&certificate.peer_id());
        if device_key != Some(signer.public()) {
            return Err(MlsError::Refused(
                "the device key is not the one the certificate names".into(),
            ));
        }
        let me = Member {
            user: certificate.user_id(),
            peer: certificate.peer_id(),
            permissions: certificate.permissions(),
            issued_at: certificate.issued_at(),
        };
        Ok(Self {
            provider: Provider {
                crypto: RustCrypto::default(),
                storage: Storage::load(rows),
            },
            signer,
            certificate,
            me,
            config,
            groups: HashMap::new(),
            verified: Verified::default(),
            depth: 0,
        })
    }

    /// This device.
    pub fn me(&self) -> &Member {
        &self.me
    }

    /// What changed since the last call: persist it before anything the operations produced
    /// leaves the device, in the transaction that records what they were for.
    pub fn take_changes(&self) -> Vec<Change> {
        self.provider.storage.take_changes()
    }

    /// Every row of the state, as a copy (for tests that take a device's state).
    pub fn rows(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.provider.storage.rows()
    }

    /// Bytes the state holds.
    pub fn size(&self) -> usize {
        self.provider.storage.size()
    }

    /// Runs `op` as one operation: either everything it changed stays, or (on an error) the
    /// store and the groups it touched are as they were.
    fn atomically<T>(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<T, MlsError>,
    ) -> Result<T, MlsError> {
        if self.depth > 0 {
            self.depth += 1;
            let result = op(self);
            self.depth -= 1;
            return result;
        }
        self.provider.storage.begin();
        self.depth = 1;
        let result = op(self);
        self.depth = 0;
        match result {
            Ok(value) => {
                self.provider.storage.keep();
                Ok(value)
            }
            Err(e) => {
                self.provider.storage.roll_back();
                // Groups in memory may be ahead of the store: reload them when next used.
                self.groups.clear();
                Err(e)
            }
        }
    }

    fn group(&mut self, group: &GroupRef) -> Result<&mut MlsGroup, MlsError> {
        loaded(&mut self.groups, &self.provider, group)
    }

    /// Every conversation this device is a member of, with what it is.
    pub fn groups(&self) -> Vec<(GroupRef, Info)> {
        self.provider
            .storage
            .own_with_prefix(own::GROUP)
            .into_iter()
            .filter_map(|(key, value)| {
                let id = <[u8; 16]>::try_from(key.get(own::GROUP.len()..)?).ok()?;
                Some((GroupRef(id), Info::decode(&value)?))
            })
            .collect()
    }

    /// What conversation `group` is.
    pub fn info(&self, group: &GroupRef) -> Option<Info> {
        let value = self
            .provider
            .storage
            .get_own(&[own::GROUP, group.0.as_slice()].concat())?;
        Info::decode(&value)
    }

    /// The group's current epoch.
    pub fn epoch(&mut self, group: &GroupRef) -> Result<u64, MlsError> {
        Ok(self.group(group)?.epoch().as_u64())
    }

    /// The group's epoch authenticator: equal on two devices exactly when they are in the
    /// same group state.
    pub fn authenticator(&mut self, group: &GroupRef) -> Result<Vec<u8>, MlsError> {
        Ok(self.group(group)?.epoch_authenticator().as_slice().to_vec())
    }

    /// The member devices, in leaf order.
    pub fn members(&mut self, group: &GroupRef) -> Result<Vec<Member>, MlsError> {
        let group = self.group(group)?;
        let members: Vec<_> = group.members().collect();
        members
            .iter()
            .map(|m| self.verified.known(&m.credential))
            .collect()
    }

    /// For each user of `group`: whether every one of its devices in the tree reads the
    /// message kinds of this release (its leaf lists them).
    pub fn users_reading_kinds(
        &mut self,
        group: &GroupRef,
    ) -> Result<HashMap<UserId, bool>, MlsError> {
        let leaves: Vec<(u32, bool)> = {
            let group = self.group(group)?;
            let tree = group.public_group();
            group
                .members()
                .map(|m| {
                    let reads = tree.leaf(m.index).is_some_and(|leaf| {
                        leaf.capabilities()
                            .extensions()
                            .contains(&ExtensionType::Unknown(KINDS_CAPABILITY))
                    });
                    (m.index.u32(), reads)
                })
                .collect()
        };
        let members = self.members_indexed(group)?;
        let mut out: HashMap<UserId, bool> = HashMap::new();
        for (leaf, member) in members {
            let reads = leaves.iter().any(|(l, r)| *l == leaf && *r);
            let all = out.entry(member.user).or_insert(true);
            *all &= reads;
        }
        Ok(out)
    }

    /// The device that commits in `group` now.
    pub fn committer(&mut self, group: &GroupRef) -> Result<Option<Member>, MlsError> {
        let info = self.info(group).ok_or(MlsError::UnknownGroup)?;
        let members = self.members_indexed(group)?;
        Ok(committer_of(&info, &members, &[]).map(|(_, m)| m))
    }

    /// Whether this device would commit in `group` once `peer` is removed: it may then
    /// remove `peer` itself (a committer that lost its state asks to be added again).
    pub fn commits_without(&mut self, group: &GroupRef, peer: &PeerId) -> Result<bool, MlsError> {
        let info = self.info(group).ok_or(MlsError::UnknownGroup)?;
        let members = self.members_indexed(group)?;
        let gone: Vec<u32> = members
            .iter()
            .filter(|(_, m)| m.peer == *peer)
            .map(|(leaf, _)| *leaf)
            .collect();
        Ok(committer_of(&info, &members, &gone).is_some_and(|(_, m)| m.peer == self.me.peer))
    }

    /// The device that commits in `group` once the devices `gone` are removed (the next in
    /// line when the committer was revoked).
    pub fn committer_without(
        &mut self,
        group: &GroupRef,
        gone: &[PeerId],
    ) -> Result<Option<Member>, MlsError> {
        let info = self.info(group).ok_or(MlsError::UnknownGroup)?;
        let members = self.members_indexed(group)?;
        let leaves: Vec<u32> = members
            .iter()
            .filter(|(_, m)| gone.contains(&m.peer))
            .map(|(leaf, _)| *leaf)
            .collect();
        Ok(committer_of(&info, &members, &leaves).map(|(_, m)| m))
    }

    /// Whether this device commits in `group`.
    pub fn is_committer(&mut self, group: &GroupRef) -> Result<bool, MlsError> {
        Ok(self
            .committer(group)?
            .is_some_and(|m| m.peer == self.me.peer))
    }

    fn members_indexed(&mut self, group: &GroupRef) -> Result<Vec<(u32, Member)>, MlsError> {
        let group = self.group(group)?;
        let members: Vec<_> = group.members().collect();
        members
            .iter()
            .map(|m| Ok((m.index.u32(), self.verified.known(&m.credential)?)))
            .collect()
    }

    /// What this device's leaf says of it when it updates: its capabilities of this release.
    fn leaf_parameters() -> LeafNodeParameters {
        LeafNodeParameters::builder()
            .with_capabilities(Self::capabilities())
            .build()
    }

    fn capabilities() -> Capabilities {
        Capabilities::new(
            None,
            Some(&[CIPHERSUITE]),
            Some(&[
                ExtensionType::Unknown(INFO_EXTENSION),
                ExtensionType::LastResort,
                ExtensionType::Unknown(KINDS_CAPABILITY),
            ]),
            None,
            Some(&[CredentialType::Basic]),
        )
    }

    fn join_config(&self) -> MlsGroupJoinConfig {
        MlsGroupJoinConfig::builder()
            .use_ratchet_tree_extension(true)
            .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .max_past_epochs(self.config.max_past_epochs)
            .sender_ratchet_configuration(SenderRatchetConfiguration::new(
                self.config.out_of_order,
                self.config.max_forward,
            ))
            .build()
    }

    /// Makes `count` new key packages of this device (one-time, or last-resort ones that
    /// may be used more than once); their private keys stay in the state until used or
    /// forgotten.
    pub fn new_key_packages(
        &mut self,
        count: usize,
        last_resort: bool,
        now_ms: i64,
    ) -> Result<Vec<OwnPackage>, MlsError> {
        self.atomically(|this| {
            let credential = identity::credential_with_key(&this.certificate, &this.signer);
            let mut out = Vec::with_capacity(count);
            for _ in 0..count {
                let mut builder =
                    KeyPackage::builder().leaf_node_capabilities(Self::capabilities());
                if last_resort {
                    builder = builder.mark_as_last_resort();
                }
                let bundle = builder
                    .build(
                        CIPHERSUITE,
                        &this.provider,
                        &this.signer,
                        credential.clone(),
                    )
                    .map_err(library)?;
                let package = bundle.key_package();
                let reference = package
                    .hash_ref(this.provider.crypto())
                    .map_err(library)?
                    .tls_serialize_detached()
                    .map_err(library)?;
                let bytes = package.tls_serialize_detached().map_err(library)?;
                let own = OwnPackage {
                    reference: reference.clone(),
                    last_resort,
                    created_ms: now_ms,
                    bytes,
                    given: false,
                };
                this.provider.storage.put_own(
                    &[own::KEY_PACKAGE, &reference].concat(),
                    postcard::to_allocvec(&own).map_err(library)?,
                );
                out.push(own);
            }
            Ok(out)
        })
    }

    /// Key packages to hand to another device: this device's last-resort package (a new one
    /// when it has none younger than `rotate_ms`, or when the newest opened a Welcome
    /// already) and up to `one_time` one-time packages never handed out before (made as
    /// needed), marked as given.
    pub fn hand_out(
        &mut self,
        one_time: usize,
        now_ms: i64,
        rotate_ms: i64,
    ) -> Result<Vec<OwnPackage>, MlsError> {
        let owned = self.own_key_packages();
        let mut out = Vec::new();
        match owned
            .iter()
            .filter(|p| p.last_resort)
            .max_by_key(|p| p.created_ms)
        {
            Some(p)
                if now_ms - p.created_ms < rotate_ms && self.used_at(&p.reference).is_none() =>
            {
                out.push(p.clone());
            }
            _ => out.extend(self.new_key_packages(1, true, now_ms)?),
        }
        let mut fresh: Vec<OwnPackage> = owned
            .into_iter()
            .filter(|p| !p.last_resort && !p.given)
            .take(one_time)
            .collect();
        if fresh.len() < one_time {
            fresh.extend(self.new_key_packages(one_time - fresh.len(), false, now_ms)?);
        }
        for p in &mut fresh {
            p.given = true;
            self.provider.storage.put_own(
                &[own::KEY_PACKAGE, &p.reference].concat(),
                postcard::to_allocvec(&*p).map_err(library)?,
            );
        }
        out.extend(fresh);
        Ok(out)
    }

    /// One-time key packages handed out and not used yet.
    pub fn one_time_outstanding(&self) -> usize {
        self.own_key_packages()
            .iter()
            .filter(|p| !p.last_resort && p.given)
            .count()
    }

    /// Forgets this device's key packages that can no longer be wanted: one-time packages
    /// older than `max_age_ms`, and a last-resort package `window_ms` after it first opened a
    /// Welcome or a newer one replaced it — so a thief of the state opens no Welcome (and no
    /// epoch it started) captured longer ago than that.
    pub fn prune_key_packages(
        &mut self,
        now_ms: i64,
        max_age_ms: i64,
        window_ms: i64,
    ) -> Result<(), MlsError> {
        let owned = self.own_key_packages();
        for p in &owned {
            let gone = if p.last_resort {
                let replaced = owned
                    .iter()
                    .filter(|o| o.last_resort && o.created_ms > p.created_ms)
                    .map(|o| o.created_ms)
                    .min();
                let used = self.used_at(&p.reference);
                let since = match (replaced, used) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                since.is_some_and(|at| now_ms.saturating_sub(at) > window_ms)
            } else {
                now_ms.saturating_sub(p.created_ms) > max_age_ms
            };
            if gone {
                self.forget_key_package(&p.reference)?;
            }
        }
        // What is recorded of packages no longer held goes with them.
        let held: std::collections::HashSet<Vec<u8>> = self
            .own_key_packages()
            .into_iter()
            .map(|p| p.reference)
            .collect();
        for (key, _) in self.provider.storage.own_with_prefix(own::USED) {
            if key
                .get(own::USED.len()..)
                .is_some_and(|reference| !held.contains(reference))
            {
                self.provider.storage.delete_own(&key);
            }
        }
        Ok(())
    }

    /// How fresh this device's own leaf in `group` is.
    pub fn activity(&self, group: &GroupRef) -> Option<Activity> {
        let value = self
            .provider
            .storage
            .get_own(&[own::UPDATED, group.0.as_slice()].concat())?;
        postcard::from_bytes(&value).ok()
    }

    fn put_activity(&self, group: &GroupRef, activity: &Activity) {
        put_activity(&self.provider.storage, group, activity);
    }

    /// Records that this device's leaf in `group` is fresh as of `now_ms` (it joined, it
    /// committed with a path, or a commit included its update).
    pub fn confirm_update(&self, group: &GroupRef, now_ms: i64) {
        confirm_update(&self.provider.storage, group, now_ms);
    }

    /// Counts a message through `group`.
    fn note_message(&self, group: &GroupRef) {
        if let Some(mut a) = self.activity(group) {
            a.messages += 1;
            self.put_activity(group, &a);
        }
    }

    /// Whether this device's leaf in `group` is due for an update: older than `every_ms`,
    /// or `after` messages went through — unless an update it proposed in the current epoch
    /// still waits for the committer (one proposed in an earlier epoch that no commit took
    /// is due again).
    pub fn update_due(
        &mut self,
        group: &GroupRef,
        now_ms: i64,
        every_ms: i64,
        after: u64,
    ) -> Result<bool, MlsError> {
        let epoch = self.epoch(group)?;
        // A leaf of an earlier release (without this release's capabilities) is due at once.
        let behind = !self.group(group)?.own_leaf_node().is_some_and(|leaf| {
            leaf.capabilities()
                .extensions()
                .contains(&ExtensionType::Unknown(KINDS_CAPABILITY))
        });
        Ok(self.activity(group).is_none_or(|a| {
            let stale =
                behind || now_ms.saturating_sub(a.updated_ms) >= every_ms || a.messages >= after;
            stale && a.proposed_in != Some(epoch)
        }))
    }

    /// This device's key packages that are still unused (a used one-time package is gone).
    pub fn own_key_packages(&self) -> Vec<OwnPackage> {
        use openmls_traits::storage::StorageProvider as _;
        self.provider
            .storage
            .own_with_prefix(own::KEY_PACKAGE)
            .into_iter()
            .filter_map(|(_, value)| postcard::from_bytes::<OwnPackage>(&value).ok())
            .filter(|p| {
                let Ok(reference) = KeyPackageRef::tls_deserialize_exact(&p.reference) else {
                    return false;
                };
                matches!(
                    self.provider
                        .storage
                        .key_package::<_, openmls::prelude::KeyPackageBundle>(&reference),
                    Ok(Some(_))
                )
            })
            .collect()
    }

    /// Forgets one of this device's key packages (expired, or replaced), with its private
    /// keys.
    pub fn forget_key_package(&mut self, reference: &[u8]) -> Result<(), MlsError> {
        use openmls_traits::storage::StorageProvider as _;
        self.atomically(|this| {
            let hash_ref =
                KeyPackageRef::tls_deserialize_exact(reference).map_err(|_| MlsError::Malformed)?;
            if let Ok(Some(bundle)) = this
                .provider
                .storage
                .key_package::<_, openmls::prelude::KeyPackageBundle>(&hash_ref)
            {
                let key = bundle.key_package().leaf_node().encryption_key().clone();
                this.provider
                    .storage
                    .delete_encryption_key_pair(&key)
                    .map_err(library)?;
            }
            this.provider
                .storage
                .delete_key_package(&hash_ref)
                .map_err(library)?;
            this.provider
                .storage
                .delete_own(&[own::KEY_PACKAGE, reference].concat());
            Ok(())
        })
    }

    /// Checks another device's key package: well formed, of our suite, signed by the device
    /// its certificate names.
    pub fn check_key_package(&self, bytes: &[u8]) -> Result<Package, MlsError> {
        if bytes.len() > 64 << 10 {
            return Err(MlsError::Malformed);
        }
        let package = KeyPackageIn::tls_deserialize_exact(bytes)
            .map_err(|_| MlsError::Malformed)?
            .validate(self.provider.crypto(), ProtocolVersion::Mls10)
            .map_err(|e| MlsError::Refused(format!("the key package does not verify: {e:?}")))?;
        if package.ciphersuite() != CIPHERSUITE {
            return Err(MlsError::Refused("a key package of another suite".into()));
        }
        let leaf = package.leaf_node();
        let member = self
            .verified
            .member(leaf.credential(), leaf.signature_key().as_slice())?;
        if !member.permissions.contains(Permissions::MESSAGES) {
            return Err(MlsError::Refused("the device may not send messages".into()));
        }
        let reference = package
            .hash_ref(self.provider.crypto())
            .map_err(library)?
            .tls_serialize_detached()
            .map_err(library)?;
        Ok(Package {
            member,
            last_resort: package.last_resort(),
            reference,
            bytes: bytes.to_vec(),
            package,
        })
    }

    /// Starts the conversation `info` (this device's user must be its orderer), with the
    /// devices whose key packages are given.
    pub fn create(
        &mut self,
        info: Info,
        packages: Vec<Package>,
        trust: &dyn Trust,
        now_ms: i64,
    ) -> Result<Created, MlsError> {
        if info.orderer != self.me.user {
            return Err(MlsError::Refused(
                "a conversation is started by its orderer".into(),
            ));
        }
        info.check()?;
        if packages.len() >= MAX_GROUP_DEVICES {
            return Err(MlsError::Refused(format!(
                "a conversation has at most {MAX_GROUP_DEVICES} devices"
            )));
        }
        for p in &packages {
            if !info.includes(&p.member.user) || !trust.admits(&info, &p.member) {
                return Err(MlsError::Refused(format!(
                    "device {} may not be in this conversation",
                    p.member.peer
                )));
            }
        }
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(library)?;
        let group = GroupRef(id);
        self.atomically(|this| {
            let extensions = context_extensions(&info)?;
            let config = MlsGroupCreateConfig::builder()
                .ciphersuite(CIPHERSUITE)
                .capabilities(Self::capabilities())
                .with_group_context_extensions(extensions)
                .use_ratchet_tree_extension(true)
                .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
                .max_past_epochs(this.config.max_past_epochs)
                .sender_ratchet_configuration(SenderRatchetConfiguration::new(
                    this.config.out_of_order,
                    this.config.max_forward,
                ))
                .build();
            let credential = identity::credential_with_key(&this.certificate, &this.signer);
            let mut mls = MlsGroup::new_with_group_id(
                &this.provider,
                &this.signer,
                &config,
                group.id(),
                credential,
            )
            .map_err(library)?;
            let added: Vec<Member> = packages.iter().map(|p| p.member).collect();
            let welcome = if packages.is_empty() {
                None
            } else {
                let kps: Vec<KeyPackage> = packages.into_iter().map(|p| p.package).collect();
                let (_commit, welcome, _info) = mls
                    .add_members(&this.provider, &this.signer, &kps)
                    .map_err(library)?;
                mls.merge_pending_commit(&this.provider).map_err(library)?;
                Some(welcome.tls_serialize_detached().map_err(library)?)
            };
            let epoch = mls.epoch().as_u64();
            this.provider
                .storage
                .put_own(&[own::GROUP, group.0.as_slice()].concat(), info.encode());
            this.groups.insert(group, mls);
            this.confirm_update(&group, now_ms);
            Ok(Created {
                group,
                welcome,
                added,
                epoch,
            })
        })
    }

    /// Encrypts `content` for every other member of `group`.
    pub fn encrypt(&mut self, group: &GroupRef, content: &[u8]) -> Result<Sealed, MlsError> {
        self.atomically(|this| {
            let (provider, signer) = (&this.provider, &this.signer);
            let mls = loaded(&mut this.groups, provider, group)?;
            let epoch = mls.epoch().as_u64();
            let message = mls
                .create_message(provider, signer, content)
                .map_err(library)?;
            this.note_message(group);
            Ok(Sealed {
                bytes: message.tls_serialize_detached().map_err(library)?,
                epoch,
            })
        })
    }

    /// Sends an update of this device's own leaf to the committer (a proposal; the committer
    /// commits it). Returns the message for the committer.
    pub fn propose_update(&mut self, group: &GroupRef) -> Result<Vec<u8>, MlsError> {
        self.atomically(|this| {
            let (provider, signer) = (&this.provider, &this.signer);
            let mls = loaded(&mut this.groups, provider, group)?;
            let epoch = mls.epoch().as_u64();
            let (message, reference) = mls
                .propose_self_update(provider, signer, Self::leaf_parameters())
                .map_err(library)?;
            // Out of the proposal store (openmls would send nothing while it is there),
            // kept for the commit that includes it.
            let queued = mls
                .pending_proposals()
                .find(|q| *q.proposal_reference_ref() == reference)
                .cloned()
                .ok_or_else(|| MlsError::Library("the proposal was not queued".into()))?;
            mls.remove_pending_proposal(provider.storage(), &reference)
                .map_err(library)?;
            provider.storage.put_own(
                &[own::OWN_PROPOSAL, group.0.as_slice()].concat(),
                postcard::to_allocvec(&(epoch, serde_json::to_vec(&queued).map_err(library)?))
                    .map_err(library)?,
            );
            let mut activity = this.activity(group).unwrap_or(Activity {
                updated_ms: 0,
                messages: 0,
                proposed_in: None,
            });
            activity.proposed_in = Some(epoch);
            this.put_activity(group, &activity);
            message.tls_serialize_detached().map_err(library)
        })
    }

    /// Commits, as the committer of `group` (or as the device that becomes it by removing
    /// revoked devices ahead of it): what `commit` says, checked first by the rules every
    /// member applies ([`rules`]), with its evidence in the commit's authenticated data. The
    /// proposals received since the last commit go into it, and this device's own leaf is
    /// updated when `update` is set (or when anything else changes, as MLS requires for
    /// removals).
    pub fn commit(
        &mut self,
        group: &GroupRef,
        commit: Commit,
        trust: &dyn Trust,
        now_ms: i64,
    ) -> Result<Committed, MlsError> {
        let Commit {
            add,
            remove,
            update,
            change,
            revocations,
            cards,
            rejoins,
        } = commit;
        let current = self.info(group).ok_or(MlsError::UnknownGroup)?;
        let next = match &change {
            Some((by, change)) => Some(current.changed(by, change)?),
            None => None,
        };
        let members = self.members_indexed(group)?;
        let me = self.me;
        let sender = members
            .iter()
            .find(|(_, m)| m.peer == me.peer)
            .copied()
            .ok_or(MlsError::UnknownGroup)?;
        let removed_leaves: Vec<(u32, Member)> = members
            .iter()
            .filter(|(_, m)| remove.contains(&m.peer) && m.peer != me.peer)
            .copied()
            .collect();
        let added: Vec<(Member, Vec<u8>)> = add
            .iter()
            .map(|p| (p.member, p.reference.clone()))
            .collect();
        // Only what the revocations need: a note names no more than it must.
        let revocations: Vec<Statement> = revocations
            .into_iter()
            .filter(|s| {
                removed_leaves.iter().any(|(_, m)| {
                    s.user_id() == m.user
                        && *s.claim() == volli_core::Claim::Revoked { peer: m.peer }
                })
            })
            .take(MAX_REVOCATIONS)
            .collect();
        let cards: Vec<volli_core::ContactCard> = cards
            .into_iter()
            .filter(|c| removed_leaves.iter().any(|(_, m)| m.user == c.user_id()))
            .take(MAX_CARDS)
            .collect();
        let note = CommitNote::new(&revocations, &cards, &rejoins, change);
        rules::check_commit(
            &current,
            &members,
            &rules::Proposed {
                group: *group,
                sender,
                removed: &removed_leaves,
                added: &added,
                next: next.as_ref(),
                note: &note,
            },
            trust,
            now_ms,
        )?;
        let added: Vec<Member> = added.into_iter().map(|(m, _)| m).collect();
        let extensions = match &next {
            Some(next) => Some(context_extensions(next)?),
            None => None,
        };
        let held = self.held_proposals(group);
        self.atomically(|this| {
            let (provider, signer) = (&this.provider, &this.signer);
            let mls = loaded(&mut this.groups, provider, group)?;
            let epoch_now = mls.epoch().as_u64();
            // The proposals held since the last commit are opened now, once, and go into
            // this commit when they pass the rule every member applies to them; those of an
            // earlier epoch are dropped.
            let mut forwarded = Vec::new();
            for (key, epoch, bytes) in held {
                provider.storage.delete_own(&key);
                if epoch != epoch_now {
                    continue;
                }
                let Ok(message) = MlsMessageIn::tls_deserialize_exact(&bytes) else {
                    continue;
                };
                let Ok(protocol) = message.try_into_protocol_message() else {
                    continue;
                };
                let Ok(processed) = mls.process_message(provider, protocol) else {
                    continue;
                };
                let Ok(proposer) = this.verified.known(processed.credential()) else {
                    continue;
                };
                if !trust.admits(&current, &proposer) {
                    continue;
                }
                if let ProcessedMessageContent::ProposalMessage(queued) = processed.into_content()
                    && let Proposal::Update(update) = queued.proposal()
                    && rules::check_update(&this.verified, &proposer, update.leaf_node()).is_ok()
                {
                    mls.store_pending_proposal(provider.storage(), *queued)
                        .map_err(library)?;
                    forwarded.push(bytes);
                }
            }
            mls.set_aad(note.encode());
            let mut builder = mls
                .commit_builder()
                .consume_proposal_store(true)
                .force_self_update(update)
                .leaf_node_parameters(Self::leaf_parameters())
                .propose_adds(add.into_iter().map(|p| p.package))
                .propose_removals(removed_leaves.iter().map(|(i, _)| LeafNodeIndex::new(*i)));
            if let Some(extensions) = extensions {
                builder = builder
                    .propose_group_context_extensions(extensions)
                    .map_err(library)?;
            }
            let bundle = builder
                .load_psks(provider.storage())
                .map_err(library)?
                // The proposal store holds only the updates just checked.
                .build(provider.rand(), provider.crypto(), signer, |_| true)
                .map_err(library)?
                .stage_commit(provider)
                .map_err(library)?;
            let (commit, welcome, _) = bundle.into_messages();
            let with_path = mls
                .pending_commit()
                .is_some_and(|c| c.update_path_leaf_node().is_some());
            mls.merge_pending_commit(provider).map_err(library)?;
            let epoch = mls.epoch().as_u64();
            if with_path {
                confirm_update(&provider.storage, group, now_ms);
            }
            if let Some(next) = &next {
                provider
                    .storage
                    .put_own(&[own::GROUP, group.0.as_slice()].concat(), next.encode());
            }
            let mut messages = forwarded;
            messages.push(commit.tls_serialize_detached().map_err(library)?);
            let welcome = match welcome {
                Some(w) => Some(w.tls_serialize_detached().map_err(library)?),
                None => None,
            };
            let me = this.me.peer;
            Ok(Committed {
                messages,
                welcome,
                added,
                removed: removed_leaves.iter().map(|(_, m)| *m).collect(),
                epoch,
                recipients: members
                    .iter()
                    .map(|(_, m)| *m)
                    .filter(|m| m.peer != me)
                    .collect(),
            })
        })
    }

    /// Processes one MLS message (an application message, a proposal, a commit or a
    /// Welcome) received for this device.
    pub fn process(&mut self, bytes: &[u8], trust: &dyn Trust) -> Result<Processed, MlsError> {
        self.process_with(bytes, trust, 0, &mut |_, _| Ok(()))
    }

    /// Like [`Self::process`], at `now_ms`, with `accept` deciding on an application message
    /// once it is open (who sent it, what it says): when it refuses, nothing changes — the
    /// message's key is not used up and the same message can be processed again later.
    pub fn process_with(
        &mut self,
        bytes: &[u8],
        trust: &dyn Trust,
        now_ms: i64,
        accept: Accept<'_>,
    ) -> Result<Processed, MlsError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(MlsError::Malformed);
        }
        let message =
            MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| MlsError::Malformed)?;
        match message.extract() {
            MlsMessageBodyIn::Welcome(welcome) => self.join(welcome, trust, now_ms),
            MlsMessageBodyIn::PrivateMessage(m) => {
                self.process_or_hold(m.into(), bytes, trust, now_ms, accept)
            }
            MlsMessageBodyIn::PublicMessage(m) => {
                self.process_or_hold(m.into(), bytes, trust, now_ms, accept)
            }
            _ => Err(MlsError::Malformed),
        }
    }

    /// Like [`Self::process_with`], for a message that must be an application message (mail
    /// of kind application, a file offer): anything else — a Welcome, a proposal, a commit —
    /// is refused before it is processed, so handshake content cannot slip in by a path
    /// that skips the checks handshake mail gets.
    pub fn open_application(
        &mut self,
        bytes: &[u8],
        trust: &dyn Trust,
        now_ms: i64,
        accept: Accept<'_>,
    ) -> Result<Processed, MlsError> {
        if peek(bytes)?.kind != MessageKind::Application {
            return Err(MlsError::Refused("not an application message".into()));
        }
        self.process_with(bytes, trust, now_ms, accept)
    }

    /// Like [`Self::process`], for handshake mail: a Welcome, a proposal or a commit; an
    /// application message is refused before its key is used.
    pub fn process_handshake(
        &mut self,
        bytes: &[u8],
        trust: &dyn Trust,
        now_ms: i64,
    ) -> Result<Processed, MlsError> {
        if peek(bytes)?.kind == MessageKind::Application {
            return Err(MlsError::Refused(
                "an application message in handshake mail".into(),
            ));
        }
        self.process_with(bytes, trust, now_ms, &mut |_, _| Ok(()))
    }

    fn process_or_hold(
        &mut self,
        message: ProtocolMessage,
        bytes: &[u8],
        trust: &dyn Trust,
        now_ms: i64,
        accept: Accept<'_>,
    ) -> Result<Processed, MlsError> {
        if message.content_type() == openmls::prelude::ContentType::Proposal {
            self.hold_proposal(&message, bytes)
        } else {
            self.process_protocol(message, trust, now_ms, accept)
        }
    }

    /// Keeps a proposal sent to this device, the committer, for its next commit. It is
    /// opened then, inside the commit: openmls sends nothing while a proposal is pending,
    /// so none stays pending between operations.
    fn hold_proposal(
        &mut self,
        message: &ProtocolMessage,
        bytes: &[u8],
    ) -> Result<Processed, MlsError> {
        let group = GroupRef::of(message.group_id()).ok_or(MlsError::UnknownGroup)?;
        let epoch = message.epoch().as_u64();
        let current = self.epoch(&group)?;
        if epoch > current {
            return Err(MlsError::Ahead { group, epoch });
        }
        if epoch < current {
            return Err(MlsError::Stale);
        }
        if !self.is_committer(&group)? {
            return Err(MlsError::NotCommitter);
        }
        // Held unopened (its key can be used once, in the commit), so bounded by what
        // honest members send: an update of one leaf each, a few kilobytes.
        if bytes.len() > MAX_HELD_PROPOSAL {
            return Err(MlsError::Refused("a proposal is too long".into()));
        }
        let held = self.held_proposals(&group);
        if held.len() >= MAX_HELD_PROPOSALS {
            return Err(MlsError::Refused("too many proposals wait".into()));
        }
        let seq = held.len() as u64;
        self.provider.storage.put_own(
            &[own::PROPOSAL, group.0.as_slice(), &hash(bytes)].concat(),
            postcard::to_allocvec(&(seq, epoch, bytes.to_vec())).map_err(library)?,
        );
        Ok(Processed::Proposal {
            group,
            sender: None,
        })
    }

    /// The proposals held for `group`'s next commit: (key, epoch, message), in arrival order.
    fn held_proposals(&self, group: &GroupRef) -> Vec<(Vec<u8>, u64, Vec<u8>)> {
        let mut held: Vec<(u64, Vec<u8>, u64, Vec<u8>)> = self
            .provider
            .storage
            .own_with_prefix(&[own::PROPOSAL, group.0.as_slice()].concat())
            .into_iter()
            .filter_map(|(key, value)| {
                let (seq, epoch, message): (u64, u64, Vec<u8>) =
                    postcard::from_bytes(&value).ok()?;
                Some((seq, key, epoch, message))
            })
            .collect();
        held.sort_by_key(|(seq, ..)| *seq);
        held.into_iter().map(|(_, k, e, m)| (k, e, m)).collect()
    }

    /// Proposals waiting for the committer's next commit, of the current epoch.
    pub fn pending_proposals(&mut self, group: &GroupRef) -> Result<usize, MlsError> {
        let epoch = self.epoch(group)?;
        Ok(self
            .held_proposals(group)
            .iter()
            .filter(|(_, e, _)| *e == epoch)
            .count())
    }

    /// Processes a commit's bundle (the proposals it includes, then the commit) as one
    /// operation: all of it, or (on an error) nothing.
    pub fn process_bundle(
        &mut self,
        messages: &[Vec<u8>],
        trust: &dyn Trust,
        now_ms: i64,
    ) -> Result<Vec<Processed>, MlsError> {
        let group = match messages.first().map(|m| peek(m)) {
            Some(Ok(Peeked {
                group: Some(group), ..
            })) => group,
            Some(Err(e)) => return Err(e),
            _ => return Err(MlsError::Malformed),
        };
        // Proposals, then the commit that includes them: nothing else rides in a bundle.
        for (i, bytes) in messages.iter().enumerate() {
            let expected = if i + 1 == messages.len() {
                MessageKind::Commit
            } else {
                MessageKind::Proposal
            };
            if peek(bytes)?.kind != expected {
                return Err(MlsError::Refused(
                    "a commit's bundle holds its proposals, then the commit".into(),
                ));
            }
        }
        self.atomically(|this| {
            // This device's own update, taken out of the proposal store when it was made
            // (so it could go on sending), goes back in for the commit that includes it.
            let key = [own::OWN_PROPOSAL, group.0.as_slice()].concat();
            if let Some(saved) = this.provider.storage.get_own(&key) {
                let (epoch, queued): (u64, Vec<u8>) =
                    postcard::from_bytes(&saved).map_err(library)?;
                let provider = &this.provider;
                let mls = loaded(&mut this.groups, provider, &group)?;
                if mls.epoch().as_u64() == epoch
                    && let Ok(queued) = serde_json::from_slice(&queued)
                {
                    mls.store_pending_proposal(provider.storage(), queued)
                        .map_err(library)?;
                }
            }
            let mut out = Vec::with_capacity(messages.len());
            for bytes in messages {
                let message =
                    MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| MlsError::Malformed)?;
                let protocol: ProtocolMessage = match message.extract() {
                    MlsMessageBodyIn::PrivateMessage(m) => m.into(),
                    MlsMessageBodyIn::PublicMessage(m) => m.into(),
                    _ => return Err(MlsError::Malformed),
                };
                if GroupRef::of(protocol.group_id()) != Some(group) {
                    return Err(MlsError::Malformed);
                }
                out.push(this.process_protocol(protocol, trust, now_ms, &mut |_, _| Ok(()))?);
            }
            let provider = &this.provider;
            if let Ok(mls) = loaded(&mut this.groups, provider, &group) {
                mls.clear_pending_proposals(provider.storage())
                    .map_err(library)?;
            }
            this.provider.storage.delete_own(&key);
            Ok(out)
        })
    }

    fn join(
        &mut self,
        welcome: openmls::prelude::Welcome,
        trust: &dyn Trust,
        now_ms: i64,
    ) -> Result<Processed, MlsError> {
        let config = self.join_config();
        // The key packages of this device the Welcome may be for: a last-resort one it
        // opens is used from now on, and goes once the late-mail window is over.
        let for_packages: Vec<Vec<u8>> = welcome
            .secrets()
            .iter()
            .filter_map(|s| s.new_member().tls_serialize_detached().ok())
            .collect();
        self.atomically(|this| {
            let staged = StagedWelcome::build_from_welcome(&this.provider, &config, welcome)
                .map_err(|e| match e {
                    openmls::prelude::WelcomeError::NoMatchingKeyPackage => MlsError::NotForUs,
                    other => MlsError::Refused(format!("the welcome does not verify: {other:?}")),
                })?
                .replace_old_group()
                .build()
                .map_err(|e| MlsError::Refused(format!("the welcome does not verify: {e:?}")))?;
            let group =
                GroupRef::of(staged.group_context().group_id()).ok_or(MlsError::Malformed)?;
            let epoch = staged.group_context().epoch().as_u64();
            // A Welcome into a group this device is in, or was in, is a replay (it would
            // take the device back to an epoch others may still read) unless it starts a
            // later epoch than any this device saw: the re-add it asked for.
            if this.tombstone(&group).is_some_and(|gone| epoch <= gone) {
                return Err(MlsError::Duplicate);
            }
            if let Ok(current) = loaded(&mut this.groups, &this.provider, &group)
                && current.epoch().as_u64() >= epoch
            {
                return Err(MlsError::Duplicate);
            }
            let asked = this
                .provider
                .storage
                .get_own(&[own::REJOIN, group.0.as_slice()].concat());
            if asked.is_none() && this.groups.contains_key(&group) {
                return Err(MlsError::Duplicate);
            }
            this.groups.remove(&group);
            this.provider
                .storage
                .delete_own(&[own::REJOIN, group.0.as_slice()].concat());
            let info = info_of(staged.group_context().extensions())
                .ok_or_else(|| MlsError::Refused("not a conversation of ours".into()))?;
            if !info.includes(&this.me.user) {
                return Err(MlsError::Refused("a conversation without this user".into()));
            }
            let mut members = Vec::new();
            for m in staged.members() {
                members.push(
                    this.verified
                        .member(&m.credential, m.signature_key.as_slice())?,
                );
            }
            rules::check_members(&info, &members, trust)?;
            let welcomer = members.get(staged.welcome_sender_index().usize()).copied();
            let mls = staged.into_group(&this.provider).map_err(library)?;
            let epoch = mls.epoch().as_u64();
            this.provider
                .storage
                .put_own(&[own::GROUP, group.0.as_slice()].concat(), info.encode());
            this.provider
                .storage
                .delete_own(&[own::GONE, group.0.as_slice()].concat());
            this.groups.insert(group, mls);
            this.confirm_update(&group, now_ms);
            for reference in &for_packages {
                this.note_used(reference, now_ms);
            }
            Ok(Processed::Joined {
                group,
                info,
                epoch,
                members,
                committer: welcomer,
            })
        })
    }

    /// This device's signed request to be added again to `group` with its key package
    /// `package` (the evidence a commit that re-adds it carries).
    pub fn rejoin_request(&self, group: &GroupRef, package: &OwnPackage, now_ms: i64) -> Vec<u8> {
        use openmls_traits::signatures::Signer as _;
        rules::sign_rejoin(
            |payload| self.signer.sign(payload).ok(),
            group,
            &package.reference,
            now_ms,
        )
        .unwrap_or_default()
    }

    /// A note, signed by this device, that its user brought `user` into `group`.
    pub fn sponsor_note(&self, group: &GroupRef, user: UserId) -> Option<Vec<u8>> {
        use openmls_traits::signatures::Signer as _;
        sponsor::sign(
            &self.certificate,
            |payload| self.signer.sign(payload).ok(),
            group,
            user,
        )
    }

    /// Keeps the sponsor note for `user` in `group` (checked by the caller), to go beside
    /// the Welcomes of its devices.
    pub fn keep_sponsor_note(&self, group: &GroupRef, user: &UserId, note: Vec<u8>) {
        self.provider.storage.put_own(
            &[
                own::SPONSOR_NOTE,
                group.0.as_slice(),
                user.as_bytes().as_slice(),
            ]
            .concat(),
            note,
        );
    }

    /// The sponsor note kept for `user` in `group`.
    pub fn kept_sponsor_note(&self, group: &GroupRef, user: &UserId) -> Option<Vec<u8>> {
        self.provider
            .storage
            .get_own(
                &[
                    own::SPONSOR_NOTE,
                    group.0.as_slice(),
                    user.as_bytes().as_slice(),
                ]
                .concat(),
            )
            .map(|v| v.to_vec())
    }

    /// Whether this device was in `group` and is out for good (it left, was removed, or the
    /// group was superseded) — not when it is being added again.
    pub fn forgot(&self, group: &GroupRef) -> bool {
        self.gone(group).is_some_and(|(_, readded)| !readded)
    }

    /// The last epoch of `group` this device saw before it forgot the group, if it did.
    fn tombstone(&self, group: &GroupRef) -> Option<u64> {
        self.gone(group).map(|(epoch, _)| epoch)
    }

    fn gone(&self, group: &GroupRef) -> Option<(u64, bool)> {
        let value = self
            .provider
            .storage
            .get_own(&[own::GONE, group.0.as_slice()].concat())?;
        postcard::from_bytes::<(u64, i64, bool)>(&value)
            .ok()
            .map(|(epoch, _, readded)| (epoch, readded))
    }

    /// Records that this device's key package `reference` opened a Welcome at `now_ms`
    /// (one-time packages are gone already; a last-resort one is forgotten a late-mail
    /// window later, and a new one is handed out from now on).
    fn note_used(&self, reference: &[u8], now_ms: i64) {
        let key = [own::USED, reference].concat();
        if self.provider.storage.get_own(&key).is_none()
            && let Ok(value) = postcard::to_allocvec(&now_ms)
        {
            self.provider.storage.put_own(&key, value);
        }
    }

    /// When this device's key package `reference` first opened a Welcome.
    fn used_at(&self, reference: &[u8]) -> Option<i64> {
        let value = self
            .provider
            .storage
            .get_own(&[own::USED, reference].concat())?;
        postcard::from_bytes(&value).ok()
    }

    fn process_protocol(
        &mut self,
        message: ProtocolMessage,
        trust: &dyn Trust,
        now_ms: i64,
        accept: Accept<'_>,
    ) -> Result<Processed, MlsError> {
        let group = GroupRef::of(message.group_id()).ok_or(MlsError::UnknownGroup)?;
        let info = self.info(&group).ok_or(MlsError::UnknownGroup)?;
        let epoch = message.epoch().as_u64();
        let current = self.epoch(&group)?;
        if epoch > current {
            return Err(MlsError::Ahead { group, epoch });
        }
        let members_before = self.members_indexed(&group)?;
        self.atomically(|this| {
            let provider = &this.provider;
            let mls = loaded(&mut this.groups, provider, &group)?;
            let processed = mls
                .process_message(provider, message)
                .map_err(|e| classify(&e, epoch, current))?;
            let sender_leaf = match processed.sender() {
                Sender::Member(leaf) => leaf.u32(),
                _ => return Err(MlsError::Refused("not sent by a member".into())),
            };
            let sender = this.verified.known(processed.credential())?;
            let aad = processed.aad().to_vec();
            match processed.into_content() {
                ProcessedMessageContent::ApplicationMessage(app) => {
                    if !trust.admits(&info, &sender) {
                        return Err(MlsError::Refused(format!(
                            "device {} is no longer believed",
                            sender.peer
                        )));
                    }
                    let content = app.into_bytes();
                    accept(&sender, &content)?;
                    this.note_message(&group);
                    Ok(Processed::Application {
                        group,
                        epoch,
                        sender,
                        content,
                    })
                }
                ProcessedMessageContent::ProposalMessage(queued) => {
                    if !trust.admits(&info, &sender) {
                        return Err(MlsError::Refused(format!(
                            "device {} is no longer believed",
                            sender.peer
                        )));
                    }
                    match queued.proposal() {
                        Proposal::Update(update) => {
                            rules::check_update(&this.verified, &sender, update.leaf_node())?;
                        }
                        _ => {
                            return Err(MlsError::Refused(
                                "only updates of one's own leaf are proposed".into(),
                            ));
                        }
                    }
                    mls.store_pending_proposal(provider.storage(), *queued)
                        .map_err(library)?;
                    Ok(Processed::Proposal {
                        group,
                        sender: Some(sender),
                    })
                }
                ProcessedMessageContent::StagedCommitMessage(staged) => {
                    if staged.queued_proposals().any(|p| {
                        !matches!(
                            p.proposal(),
                            Proposal::Add(_)
                                | Proposal::Remove(_)
                                | Proposal::Update(_)
                                | Proposal::GroupContextExtensions(_)
                        )
                    }) {
                        return Err(MlsError::Refused(
                            "a commit may only add, remove and update devices".into(),
                        ));
                    }
                    let removed_leaves: Vec<u32> = staged
                        .remove_proposals()
                        .map(|r| r.remove_proposal().removed().u32())
                        .collect();
                    let removed_members: Vec<(u32, Member)> = members_before
                        .iter()
                        .filter(|(leaf, _)| removed_leaves.contains(leaf))
                        .copied()
                        .collect();
                    // A group's new roster or name, if the commit changes it.
                    let mut next = None;
                    for p in staged.queued_proposals() {
                        if let Proposal::GroupContextExtensions(gce) = p.proposal() {
                            if next.is_some() {
                                return Err(MlsError::Refused(
                                    "a commit changes a group once".into(),
                                ));
                            }
                            next = Some(info_of(gce.extensions()).ok_or_else(|| {
                                MlsError::Refused("a conversation must say what it is".into())
                            })?);
                        }
                    }
                    let mut added = Vec::new();
                    for add in staged.add_proposals() {
                        let package = add.add_proposal().key_package();
                        let leaf = package.leaf_node();
                        let reference = package
                            .hash_ref(provider.crypto())
                            .map_err(library)?
                            .tls_serialize_detached()
                            .map_err(library)?;
                        added.push((
                            this.verified
                                .member(leaf.credential(), leaf.signature_key().as_slice())?,
                            reference,
                        ));
                    }
                    for update in staged.update_proposals() {
                        let Sender::Member(leaf) = update.sender() else {
                            return Err(MlsError::Refused("an update from outside".into()));
                        };
                        let proposer = members_before
                            .iter()
                            .find(|(l, _)| *l == leaf.u32())
                            .map(|(_, m)| *m)
                            .ok_or_else(|| MlsError::Refused("an update of no member".into()))?;
                        rules::check_update(
                            &this.verified,
                            &proposer,
                            update.update_proposal().leaf_node(),
                        )?;
                    }
                    if let Some(leaf) = staged.update_path_leaf_node() {
                        let member = this
                            .verified
                            .member(leaf.credential(), leaf.signature_key().as_slice())?;
                        if member.peer != sender.peer {
                            return Err(MlsError::Refused(
                                "a commit's path must keep its committer".into(),
                            ));
                        }
                    }
                    let note = CommitNote::decode(&aad)?;
                    rules::check_commit(
                        &info,
                        &members_before,
                        &rules::Proposed {
                            group,
                            sender: (sender_leaf, sender),
                            removed: &removed_members,
                            added: &added,
                            next: next.as_ref(),
                            note: &note,
                        },
                        trust,
                        now_ms,
                    )?;
                    // Only the revocations that justified a removal are worth keeping.
                    let revocations: Vec<Statement> = note
                        .statements()
                        .into_iter()
                        .filter(|s| {
                            removed_members.iter().any(|(_, m)| {
                                s.user_id() == m.user
                                    && *s.claim() == volli_core::Claim::Revoked { peer: m.peer }
                            })
                        })
                        .collect();
                    let added: Vec<Member> = added.into_iter().map(|(m, _)| m).collect();
                    let removed: Vec<Member> = members_before
                        .iter()
                        .filter(|(leaf, _)| removed_leaves.contains(leaf))
                        .map(|(_, m)| *m)
                        .collect();
                    let left = staged.self_removed();
                    let own = mls.own_leaf_index();
                    let mine_updated = staged
                        .update_proposals()
                        .any(|u| matches!(u.sender(), Sender::Member(leaf) if *leaf == own));
                    mls.merge_staged_commit(provider, *staged)
                        .map_err(library)?;
                    let new_epoch = mls.epoch().as_u64();
                    if mine_updated {
                        confirm_update(&provider.storage, &group, now_ms);
                    }
                    if let Some(next) = &next {
                        provider
                            .storage
                            .put_own(&[own::GROUP, group.0.as_slice()].concat(), next.encode());
                    }
                    // Proposals of the epoch just left are settled either way.
                    for (key, _) in provider
                        .storage
                        .own_with_prefix(&[own::PROPOSAL, group.0.as_slice()].concat())
                    {
                        provider.storage.delete_own(&key);
                    }
                    provider
                        .storage
                        .delete_own(&[own::OWN_PROPOSAL, group.0.as_slice()].concat());
                    if left {
                        // Removed and added again in the same commit (a re-add it asked for):
                        // the Welcome that follows starts a later epoch than the one this
                        // device forgets, and should it not open, the device may ask again.
                        // Otherwise it is out for good.
                        let readded = added.iter().any(|a| a.peer == this.me.peer);
                        let seen = if readded { epoch } else { new_epoch };
                        this.forget_group_at(&group, seen, readded)?;
                    }
                    Ok(Processed::Commit {
                        group,
                        epoch: new_epoch,
                        sender,
                        added,
                        removed,
                        left,
                        info: next,
                        revocations,
                    })
                }
                _ => Ok(Processed::Own),
            }
        })
    }

    /// Records that this device asked to be added to `group` again (it is on the losing side
    /// of a fork, or lost its state): a Welcome into it is then taken even though the group
    /// is known. Returns when it last asked, if it did.
    pub fn ask_rejoin(&mut self, group: &GroupRef, now_ms: i64) -> Option<i64> {
        let key = [own::REJOIN, group.0.as_slice()].concat();
        let before = self
            .provider
            .storage
            .get_own(&key)
            .and_then(|v| postcard::from_bytes::<i64>(&v).ok());
        if let Ok(value) = postcard::to_allocvec(&now_ms) {
            self.provider.storage.put_own(&key, value);
        }
        before
    }

    /// Deletes everything this device holds of `group`.
    pub fn forget_group(&mut self, group: &GroupRef) -> Result<(), MlsError> {
        let epoch = match loaded(&mut self.groups, &self.provider, group) {
            Ok(mls) => Some(mls.epoch().as_u64()),
            Err(MlsError::UnknownGroup) => None,
            Err(e) => return Err(e),
        };
        match epoch {
            Some(epoch) => self.forget_group_at(group, epoch, false),
            None => self.forget_group_at(group, 0, false),
        }
    }

    /// Deletes everything this device holds of `group`, remembering `epoch` as the last it
    /// saw (a Welcome for it or an earlier one is a replay); `readded`: it is being added
    /// again (it may ask again should the Welcome not come, and keeps its sponsor's note).
    fn forget_group_at(
        &mut self,
        group: &GroupRef,
        epoch: u64,
        readded: bool,
    ) -> Result<(), MlsError> {
        match loaded(&mut self.groups, &self.provider, group) {
            Ok(_) => {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                if let Ok(value) = postcard::to_allocvec(&(epoch, now, readded)) {
                    self.provider
                        .storage
                        .put_own(&[own::GONE, group.0.as_slice()].concat(), value);
                }
                if let Some(mut mls) = self.groups.remove(group) {
                    mls.delete(&self.provider.storage).map_err(library)?;
                }
            }
            Err(MlsError::UnknownGroup) => {}
            Err(e) => return Err(e),
        }
        let mine = [
            own::SPONSOR_NOTE,
            group.0.as_slice(),
            self.me.user.as_bytes().as_slice(),
        ]
        .concat();
        for prefix in [own::PROPOSAL, own::SPONSOR_NOTE] {
            for (key, _) in self
                .provider
                .storage
                .own_with_prefix(&[prefix, group.0.as_slice()].concat())
            {
                if !(readded && key == mine) {
                    self.provider.storage.delete_own(&key);
                }
            }
        }
        for prefix in [own::GROUP, own::UPDATED, own::REJOIN, own::OWN_PROPOSAL] {
            self.provider
                .storage
                .delete_own(&[prefix, group.0.as_slice()].concat());
        }
        Ok(())
    }

    /// Drops the keys of every past epoch that ended before `before`: late mail from them no
    /// longer opens, and neither does anything captured from them.
    pub fn forget_past(&mut self, before: SystemTime) -> Result<(), MlsError> {
        let groups: Vec<GroupRef> = self.groups().into_iter().map(|(g, _)| g).collect();
        self.atomically(|this| {
            for group in groups {
                let provider = &this.provider;
                let mls = match loaded(&mut this.groups, provider, &group) {
                    Ok(mls) => mls,
                    Err(MlsError::UnknownGroup) => continue,
                    Err(e) => return Err(e),
                };
                mls.delete_past_epoch_secrets(
                    provider,
                    PastEpochDeletion::before_timestamp(before),
                )
                .map_err(library)?;
            }
            Ok(())
        })
    }

    /// Forgets the groups this device forgot before `before_ms` altogether (no Welcome made
    /// for them can still open: the key packages it would need are gone by then).
    pub fn forget_tombstones(&mut self, before_ms: i64) {
        for (key, value) in self.provider.storage.own_with_prefix(own::GONE) {
            if postcard::from_bytes::<(u64, i64, bool)>(&value)
                .is_ok_and(|(_, at, _)| at < before_ms)
            {
                self.provider.storage.delete_own(&key);
            }
        }
    }

    /// Drops past epochs older than `window` as of now.
    pub fn forget_older_than(&mut self, window: Duration) -> Result<(), MlsError> {
        self.forget_past(SystemTime::now() - window)
    }
}

/// `group` from `groups`, loaded from the store first if it is not in memory.
fn loaded<'a>(
    groups: &'a mut HashMap<GroupRef, MlsGroup>,
    provider: &Provider,
    group: &GroupRef,
) -> Result<&'a mut MlsGroup, MlsError> {
    match groups.entry(*group) {
        std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
        std::collections::hash_map::Entry::Vacant(e) => {
            let mls = MlsGroup::load(&provider.storage, &group.id())
                .map_err(library)?
                .ok_or(MlsError::UnknownGroup)?;
            Ok(e.insert(mls))
        }
    }
}

fn put_activity(storage: &Storage, group: &GroupRef, activity: &Activity) {
    if let Ok(value) = postcard::to_allocvec(activity) {
        storage.put_own(&[own::UPDATED, group.0.as_slice()].concat(), value);
    }
}

fn confirm_update(storage: &Storage, group: &GroupRef, now_ms: i64) {
    put_activity(
        storage,
        group,
        &Activity {
            updated_ms: now_ms,
            messages: 0,
            proposed_in: None,
        },
    );
}

#[cfg(test)]
mod tests;

/// The conversation an MLS group context describes, if it is one of ours.
/// The group context extensions that say what conversation `info` is.
fn context_extensions(info: &Info) -> Result<Extensions<openmls::prelude::GroupContext>, MlsError> {
    Extensions::from_vec(vec![
        Extension::Unknown(INFO_EXTENSION, UnknownExtension(info.encode())),
        Extension::RequiredCapabilities(RequiredCapabilitiesExtension::new(
            &[ExtensionType::Unknown(INFO_EXTENSION)],
            &[],
            &[CredentialType::Basic],
        )),
    ])
    .map_err(library)
}

fn info_of(extensions: &Extensions<openmls::prelude::GroupContext>) -> Option<Info> {
    extensions.iter().find_map(|e| match e {
        Extension::Unknown(INFO_EXTENSION, UnknownExtension(bytes)) => Info::decode(bytes),
        _ => None,
    })
}

/// The committer among `members` (leaf index and device), leaving out the leaves in `gone`.
fn committer_of(info: &Info, members: &[(u32, Member)], gone: &[u32]) -> Option<(u32, Member)> {
    let present = members.iter().filter(|(leaf, _)| !gone.contains(leaf));
    let first = present.clone().min_by_key(|(leaf, _)| *leaf).copied();
    present
        .filter(|(_, m)| m.user == info.orderer)
        .min_by_key(|(leaf, _)| *leaf)
        .copied()
        .or(first)
}

fn hash(bytes: &[u8]) -> [u8; 32] {
    use openmls_traits::crypto::OpenMlsCrypto as _;
    let crypto = RustCrypto::default();
    crypto
        .hash(openmls_traits::types::HashType::Sha2_256, bytes)
        .ok()
        .and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok())
        .unwrap_or([0; 32])
}

/// What a processing error means for the caller.
fn classify(e: &impl fmt::Debug, epoch: u64, current: u64) -> MlsError {
    let text = format!("{e:?}");
    if text.contains("SecretReuseError") {
        MlsError::Duplicate
    } else if text.contains("WrongEpoch")
        || text.contains("TooDistantInThePast")
        || text.contains("NoPastEpochData")
        || (epoch < current && text.contains("UnableToDecrypt"))
    {
        MlsError::Stale
    } else if text.contains("UnableToDecrypt") || text.contains("AeadError") {
        MlsError::Undecryptable
    } else {
        MlsError::Refused(format!("the message does not verify: {text}"))
    }
}
