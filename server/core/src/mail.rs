//! Mail: what travels between nodes for a recipient, directly or through friends' relays.
//!
//! Two kinds share the path. Version 1 is an [`Envelope`], sealed with HPKE to the
//! recipient's user key (what every message was before conversations moved to MLS, and still
//! readable). Version 2 is [`MlsMail`]: messages of a conversation's MLS group, already
//! encrypted for its members, addressed to the recipient user (an application message, which
//! any of its devices may take) or to one of its devices (a commit, a proposal or a Welcome,
//! which that device must process itself). A relay sees the recipient, the device, the kind,
//! an id and the size; an MLS message shows its group and epoch besides, and nothing else.

use serde::{Deserialize, Serialize};

use crate::envelope::{BUCKETS, Envelope, EnvelopeError, MAX_BODY_LEN, MessageId};
use crate::ids::{PeerId, UserId};
use crate::time::Timestamp;
use crate::transfer::{FileKey, FileOffer, Layout, TransferError, TransferId, check_name};

/// Largest encoded MLS mail accepted (a commit bundle that adds several devices).
pub const MAX_MLS_MAIL_LEN: usize = 256 << 10;
/// Most MLS messages in one mail.
pub const MAX_MLS_MESSAGES: usize = 64;
/// Longest note beside a Welcome (the sponsor's, signed by its device, with its
/// certificate).
pub const MAX_WELCOME_NOTE_LEN: usize = 2048;

const MLS_VERSION: u8 = 2;

/// Mail of either kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mail {
    /// Sealed to the recipient's user key.
    Sealed(Envelope),
    /// Messages of a conversation on MLS.
    Mls(MlsMail),
}

/// What an MLS mail carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailKind {
    /// One application message: any device of the recipient takes it.
    Application,
    /// Proposals and a commit, in the order to process them: for one device.
    Handshake,
    /// A Welcome into a conversation: for one device.
    Welcome,
}

/// Messages of a conversation's MLS group for a recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlsMail {
    version: u8,
    /// The sender, as it says (a relay knows it anyway: it is who deposits). Believed only
    /// as far as MLS confirms it; receipts go to it.
    pub sender: UserId,
    /// The recipient.
    pub recipient: UserId,
    /// The recipient's device it is for, when one device must process it.
    #[serde(with = "optional_peer")]
    pub device: Option<PeerId>,
    /// What it carries.
    pub kind: MailKind,
    /// Its id: the message's id for an application message (receipts and duplicates go by
    /// it), a random one otherwise.
    pub id: MessageId,
    /// The MLS messages, TLS-encoded.
    #[serde(with = "crate::encoding::bytes_list")]
    pub messages: Vec<Vec<u8>>,
}

impl MlsMail {
    /// Mail of `kind` from `sender` for `recipient` (or one of its devices).
    pub fn new(
        sender: UserId,
        recipient: UserId,
        device: Option<PeerId>,
        kind: MailKind,
        id: MessageId,
        messages: Vec<Vec<u8>>,
    ) -> Self {
        Self {
            version: MLS_VERSION,
            sender,
            recipient,
            device,
            kind,
            id,
            messages,
        }
    }
}

impl Mail {
    /// Parses mail of either kind (not opening it): bounded, versioned, nothing trailing.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        match bytes.first() {
            Some(&MLS_VERSION) => {
                if bytes.len() > MAX_MLS_MAIL_LEN {
                    return Err(EnvelopeError::Malformed);
                }
                let mail: MlsMail = match postcard::take_from_bytes(bytes) {
                    Ok((m, [])) => m,
                    _ => return Err(EnvelopeError::Malformed),
                };
                let well_formed = mail.version == MLS_VERSION
                    && !mail.messages.is_empty()
                    && mail.messages.len() <= MAX_MLS_MESSAGES
                    && match mail.kind {
                        // For one device only when it is a request to a group's committer.
                        MailKind::Application => mail.messages.len() == 1,
                        // The Welcome, and into a group the note of the member who
                        // brought the recipient in.
                        MailKind::Welcome => {
                            mail.device.is_some()
                                && (mail.messages.len() == 1
                                    || (mail.messages.len() == 2
                                        && mail.messages[1].len() <= MAX_WELCOME_NOTE_LEN))
                        }
                        MailKind::Handshake => mail.device.is_some(),
                    };
                if well_formed {
                    Ok(Self::Mls(mail))
                } else {
                    Err(EnvelopeError::Malformed)
                }
            }
            _ => Envelope::from_bytes(bytes).map(Self::Sealed),
        }
    }

    /// The encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Sealed(e) => e.to_bytes(),
            Self::Mls(m) => postcard::to_allocvec(m)
                .unwrap_or_else(|_| unreachable!("postcard encodes to a Vec")),
        }
    }

    /// Who it is for.
    pub fn recipient(&self) -> UserId {
        match self {
            Self::Sealed(e) => e.recipient(),
            Self::Mls(m) => m.recipient,
        }
    }

    /// The recipient's device it is for, when only that device may take it.
    pub fn device(&self) -> Option<PeerId> {
        match self {
            Self::Sealed(_) => None,
            Self::Mls(m) => m.device,
        }
    }

    /// The id relays know it by: BLAKE3 of its encoding.
    pub fn digest(&self) -> [u8; 32] {
        *blake3::hash(&self.to_bytes()).as_bytes()
    }
}

/// What an application message of a conversation says, inside MLS. Its sender is the
/// member device MLS authenticated; the conversation is its group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Content {
    /// A text message.
    Text {
        /// Its id, chosen by the sender.
        id: MessageId,
        /// When the sender sent it, by the sender's clock.
        sent_at: Timestamp,
        /// The text.
        body: String,
    },
    /// An offer of a file (its chunks travel apart, encrypted with its key).
    FileOffer(OfferContent),
    /// A member's request to a group's committer: a change to the roster or the name (the
    /// committer checks that its sender may ask it), with the key packages of the devices
    /// of a user it adds.
    GroupRequest {
        /// The request's id (its mail's).
        id: MessageId,
        /// The change, as the MLS layer encodes it.
        change: Vec<u8>,
        /// Key packages of the added user's devices, held by the asking member.
        packages: Vec<Vec<u8>>,
    },
    /// A text of this release, with what nodes of earlier ones cannot read (they get
    /// [`Self::Text`] instead, or nothing).
    Message {
        /// Its id, chosen by the sender.
        id: MessageId,
        /// When the sender sent it.
        sent_at: Timestamp,
        /// The text.
        body: String,
        /// The message of the conversation it answers.
        reply_to: Option<MessageId>,
        /// When it disappears from every device (the conversation's timer).
        expires_at: Option<Timestamp>,
    },
    /// The sender's reaction to a message of the conversation (one per user; empty: taken
    /// back).
    Reaction {
        /// This change's id.
        id: MessageId,
        /// The message.
        target: MessageId,
        /// The emoji, or empty.
        emoji: String,
    },
    /// The new text of a message of the sender's.
    Edit {
        /// This change's id.
        id: MessageId,
        /// The message.
        target: MessageId,
        /// The text.
        body: String,
        /// When it was edited.
        edited_at: Timestamp,
    },
    /// A message of the sender's, deleted for everyone.
    Unsend {
        /// This change's id.
        id: MessageId,
        /// The message.
        target: MessageId,
    },
    /// The sender read the conversation up to a message.
    Read {
        /// This receipt's id.
        id: MessageId,
        /// The newest message read.
        up_to: MessageId,
    },
    /// The conversation's messages disappear after this long from now on (0: never).
    Timer {
        /// This change's id (and its line in the conversation).
        id: MessageId,
        /// When it was set.
        sent_at: Timestamp,
        /// Seconds.
        secs: u64,
    },
    /// A file offered in the conversation, with what nodes of earlier ones cannot read
    /// (they get [`Self::FileOffer`]).
    File {
        /// The offer.
        offer: OfferContent,
        /// The file's media type, as the sender said.
        mime: String,
        /// A small picture of it (a `data:` URL), for images.
        thumbnail: Option<String>,
    },
}

/// What a node that speaks [`Content`]'s later kinds tells others it reads (`MlsRequest::Features`).
pub const FEATURE_MESSAGE_KINDS: u32 = 1;

/// Longest reaction, in bytes.
pub const MAX_EMOJI_LEN: usize = 32;
/// Longest thumbnail carried in an offer, in bytes (a `data:` URL).
pub const MAX_THUMBNAIL_LEN: usize = 16 << 10;
/// Longest media type.
pub const MAX_MIME_LEN: usize = 128;

/// A file offer inside a conversation: what [`FileOffer`] holds but its sender, whom MLS
/// authenticates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferContent {
    /// The transfer.
    pub id: TransferId,
    /// The file's name.
    pub name: String,
    /// How the file is cut.
    pub layout: Layout,
    /// The hash of the chunk list.
    pub list: [u8; 32],
    /// The BLAKE3 hash of the plaintext.
    pub blake3: [u8; 32],
    /// The file's key.
    pub key: FileKey,
    /// When it was offered.
    pub created_at: Timestamp,
    /// Until when the sender keeps the file.
    pub expires_at: Timestamp,
}

impl OfferContent {
    /// What an offer carries.
    pub fn of(offer: &FileOffer) -> Self {
        Self {
            id: offer.id,
            name: offer.name.clone(),
            layout: offer.layout,
            list: offer.list,
            blake3: offer.blake3,
            key: offer.key.clone(),
            created_at: offer.created_at,
            expires_at: offer.expires_at,
        }
    }

    /// The offer it is, from `sender`'s device `device`, checked as a sealed offer is.
    pub fn into_offer(self, sender: UserId, device: PeerId) -> Result<FileOffer, TransferError> {
        check_name(&self.name)?;
        let layout = Layout::new(self.layout.size(), self.layout.chunk_size())?;
        Ok(FileOffer {
            id: self.id,
            sender,
            name: self.name,
            layout,
            list: self.list,
            blake3: self.blake3,
            key: self.key,
            created_at: self.created_at,
            expires_at: self.expires_at,
            device: Some(device),
        })
    }
}

impl Content {
    /// The encoding, zero-padded to the envelope's size buckets so that the length of the
    /// text does not show.
    pub fn to_padded(&self) -> Result<Vec<u8>, EnvelopeError> {
        let mut bytes = postcard::to_allocvec(self).map_err(|_| EnvelopeError::Malformed)?;
        let padded = BUCKETS
            .iter()
            .copied()
            .find(|b| bytes.len() <= *b)
            .ok_or(EnvelopeError::TooLong)?;
        bytes.resize(padded, 0);
        Ok(bytes)
    }

    /// Reads a padded encoding: the content, then nothing but zeros.
    pub fn from_padded(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() > *BUCKETS.last().unwrap_or(&0) {
            return Err(EnvelopeError::Malformed);
        }
        let (content, padding): (Self, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|_| EnvelopeError::Malformed)?;
        if padding.iter().any(|b| *b != 0) {
            return Err(EnvelopeError::Malformed);
        }
        match &content {
            Self::Text { body, .. } | Self::Message { body, .. } | Self::Edit { body, .. }
                if body.len() > MAX_BODY_LEN =>
            {
                Err(EnvelopeError::TooLong)
            }
            Self::Reaction { emoji, .. } if emoji.len() > MAX_EMOJI_LEN => {
                Err(EnvelopeError::Malformed)
            }
            Self::File {
                mime, thumbnail, ..
            } if mime.len() > MAX_MIME_LEN
                || thumbnail
                    .as_ref()
                    .is_some_and(|t| t.len() > MAX_THUMBNAIL_LEN) =>
            {
                Err(EnvelopeError::Malformed)
            }
            _ => Ok(content),
        }
    }

    /// The id of the mail that carries it: the message's, or the transfer's.
    pub fn mail_id(&self) -> MessageId {
        match self {
            Self::Text { id, .. }
            | Self::GroupRequest { id, .. }
            | Self::Message { id, .. }
            | Self::Reaction { id, .. }
            | Self::Edit { id, .. }
            | Self::Unsend { id, .. }
            | Self::Read { id, .. }
            | Self::Timer { id, .. } => *id,
            Self::FileOffer(offer) | Self::File { offer, .. } => {
                MessageId::from_bytes(*offer.id.as_bytes())
            }
        }
    }

    /// The text it carries, if any (for quotas and checks).
    pub fn text_len(&self) -> usize {
        match self {
            Self::Text { body, .. } | Self::Message { body, .. } | Self::Edit { body, .. } => {
                body.len()
            }
            _ => 0,
        }
    }
}

/// An optional peer id as its bytes.
mod optional_peer {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::ids::PeerId;

    #[derive(Serialize, Deserialize)]
    struct Peer(#[serde(with = "crate::cert::peer_id_bytes")] PeerId);

    pub(super) fn serialize<S: Serializer>(p: &Option<PeerId>, s: S) -> Result<S::Ok, S::Error> {
        p.map(Peer).serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PeerId>, D::Error> {
        Ok(Option::<Peer>::deserialize(d)?.map(|Peer(p)| p))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;
    use crate::keys::UserSecret;

    fn user() -> UserId {
        UserSecret::generate().unwrap().user_id()
    }

    #[test]
    fn mls_mail_round_trips_and_keeps_its_addressing_rules() {
        let device = libp2p_identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let (from, to) = (user(), user());
        let id = MessageId::random().unwrap();
        let app = Mail::Mls(MlsMail::new(
            from,
            to,
            None,
            MailKind::Application,
            id,
            vec![vec![1, 2, 3]],
        ));
        let back = Mail::from_bytes(&app.to_bytes()).unwrap();
        assert_eq!(back, app);
        assert_eq!(back.recipient(), to);
        assert_eq!(back.device(), None);
        let commit = Mail::Mls(MlsMail::new(
            from,
            to,
            Some(device),
            MailKind::Handshake,
            id,
            vec![vec![4], vec![5]],
        ));
        assert_eq!(
            Mail::from_bytes(&commit.to_bytes()).unwrap().device(),
            Some(device)
        );
        // An application message for one device (a request to a group's committer) is
        // one message.
        let request = MlsMail::new(
            from,
            to,
            Some(device),
            MailKind::Application,
            id,
            vec![vec![1]],
        );
        assert_eq!(
            Mail::from_bytes(&Mail::Mls(request).to_bytes())
                .unwrap()
                .device(),
            Some(device)
        );
        // Two application messages in one mail, a welcome to nobody, an empty one: refused.
        for bad in [
            MlsMail::new(
                from,
                to,
                Some(device),
                MailKind::Application,
                id,
                vec![vec![1], vec![2]],
            ),
            MlsMail::new(from, to, None, MailKind::Welcome, id, vec![vec![1]]),
            MlsMail::new(from, to, Some(device), MailKind::Handshake, id, Vec::new()),
        ] {
            assert!(Mail::from_bytes(&Mail::Mls(bad).to_bytes()).is_err());
        }
    }

    #[test]
    fn content_pads_to_a_bucket_and_reads_back() {
        let text = Content::Text {
            id: MessageId::random().unwrap(),
            sent_at: Timestamp::now(),
            body: "hello".into(),
        };
        let padded = text.to_padded().unwrap();
        assert_eq!(padded.len(), BUCKETS[0]);
        assert_eq!(Content::from_padded(&padded).unwrap(), text);
        let mut tampered = padded.clone();
        *tampered.last_mut().unwrap() = 1;
        assert!(Content::from_padded(&tampered).is_err());
        let long = Content::Text {
            id: MessageId::random().unwrap(),
            sent_at: Timestamp::now(),
            body: "x".repeat(MAX_BODY_LEN),
        };
        assert_eq!(long.to_padded().unwrap().len(), 128 << 10);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Mail::from_bytes(&bytes);
            let mut v2 = bytes.clone();
            if let Some(first) = v2.first_mut() {
                *first = MLS_VERSION;
            }
            let _ = Mail::from_bytes(&v2);
            let _ = Content::from_padded(&bytes);
        }
    }
}
