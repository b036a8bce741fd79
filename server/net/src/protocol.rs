//! The application protocols, each a versioned request-response protocol carrying bytes.

use libp2p::StreamProtocol;

/// An application protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// Device certificates, exchanged when peers connect: binds a peer id to a user id.
    Hello,
    /// Redeeming an invite.
    Invite,
    /// Delivering an end-to-end encrypted message.
    Message,
    /// Depositing at and fetching from a friend's relay mailbox.
    Relay,
    /// Syncing the vault between a user's own devices.
    Sync,
    /// Pairing a new device with an existing one.
    Pair,
    /// File transfers: offers, state changes, chunk lists, bulk tickets, and chunks when
    /// the bulk channel cannot be used.
    File,
    /// Conversations on MLS: key packages, missed commits, requests to be added again.
    Mls,
    /// What a friend's node holds for a contact beyond mail: backup shares (and their
    /// retrieval by a device restoring from the recovery phrase).
    Hold,
}

impl Protocol {
    /// Every protocol.
    pub const ALL: [Protocol; 9] = [
        Protocol::Hello,
        Protocol::Invite,
        Protocol::Message,
        Protocol::Relay,
        Protocol::Sync,
        Protocol::Pair,
        Protocol::File,
        Protocol::Mls,
        Protocol::Hold,
    ];

    /// The wire protocol id.
    pub fn id(self) -> StreamProtocol {
        StreamProtocol::new(match self {
            Protocol::Hello => "/volli/hello/1",
            Protocol::Invite => "/volli/invite/1",
            Protocol::Message => "/volli/msg/1",
            Protocol::Relay => "/volli/relay/1",
            Protocol::Sync => "/volli/sync/1",
            Protocol::Pair => "/volli/pair/1",
            Protocol::File => "/volli/file/1",
            Protocol::Mls => "/volli/mls/1",
            Protocol::Hold => "/volli/hold/1",
        })
    }

    /// Largest request accepted.
    pub fn max_request(self) -> usize {
        match self {
            Protocol::Hello => 8 << 10,
            Protocol::Invite => 16 << 10,
            Protocol::Message | Protocol::Relay => 256 << 10,
            // Version vectors and a reply key; never data.
            Protocol::Sync => 1 << 20,
            Protocol::Pair => 8 << 10,
            // An offer, or a state change; never data.
            Protocol::File => 8 << 10,
            // A few key packages (≈ 2.7 KB each with X-Wing).
            Protocol::Mls => 64 << 10,
            // A piece of a backup (a shard of at most 2 MiB, a manifest of at most 4 MiB).
            Protocol::Hold => (4 << 20) + (64 << 10),
        }
    }

    /// Largest response accepted.
    pub fn max_response(self) -> usize {
        match self {
            Protocol::Hello => 8 << 10,
            Protocol::Invite => 16 << 10,
            // A receipt for up to 256 messages (16 bytes of id each) and the reasons for those
            // refused: a catching-up recipient may refuse most of a batch.
            Protocol::Message => 64 << 10,
            Protocol::Relay => 4 << 20,
            Protocol::Sync => 16 << 20,
            // The sealed bundle: keys, a certificate, the contacts/settings/devices documents.
            Protocol::Pair => 8 << 20,
            // A chunk (or a chunk list) with its framing.
            // (`volli_core::transfer::MAX_CIPHER_CHUNK`: 4 MiB of plaintext with its tags.)
            Protocol::File => (4 << 20) + (1 << 10) + (64 << 10),
            // Commits a device missed (each up to a few hundred KB in a large group).
            Protocol::Mls => 4 << 20,
            // A piece of a backup, as it was put.
            Protocol::Hold => (4 << 20) + (64 << 10),
        }
    }
}
