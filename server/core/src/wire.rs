//! Messages of the application protocols, encoded with postcard. Each parser bounds its
//! input and refuses trailing bytes.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cert::DeviceCertificate;

/// The longest a message is kept trying, and held by a friend's relay: 7 days.
pub const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Why bytes from a peer were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed protocol message")]
pub struct WireError;

/// Encodes a message.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    postcard::to_allocvec(message).unwrap_or_else(|_| unreachable!("postcard encodes to a Vec"))
}

/// Decodes a message of at most `max` bytes, with nothing after it.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, WireError> {
    if bytes.len() > max {
        return Err(WireError);
    }
    match postcard::take_from_bytes(bytes) {
        Ok((message, [])) => Ok(message),
        _ => Err(WireError),
    }
}

/// `/volli/hello/1`, both ways: the sender's device certificate, so the receiver can bind
/// the (Noise-authenticated) peer id to a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version.
    pub version: u8,
    /// The sender's certificate, encoded.
    pub certificate: DeviceCertificate,
}

/// `/volli/invite/1` request: redeem an invite.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedeemRequest {
    /// Protocol version.
    pub version: u8,
    /// The invite's one-time secret.
    pub secret: [u8; 16],
    /// The invitee's contact card, encoded.
    pub card: Vec<u8>,
}

/// `/volli/invite/1` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedeemResponse {
    /// Redeemed: the inviter's contact card, encoded.
    Accepted {
        /// The card.
        card: Vec<u8>,
    },
    /// The invite has expired.
    Expired,
    /// The invite has been used up.
    Used,
    /// No such invite, or the request was refused.
    Refused {
        /// Why.
        reason: String,
    },
}

/// `/volli/msg/1` request: an envelope for the receiving node's user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliver {
    /// Protocol version.
    pub version: u8,
    /// The encoded [`crate::Envelope`].
    pub envelope: Vec<u8>,
}

/// `/volli/msg/1` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delivered {
    /// Stored (now or before): the recipient's signed receipt.
    Receipt(crate::Receipt),
    /// Not accepted, with a reason (the sender keeps trying until the message expires: a
    /// contact whose invite just completed may not know the sender yet).
    Refused(String),
    /// Too many messages; retry after this many seconds.
    RateLimited(u32),
}

/// `/volli/relay/1` requests: a friend's node as a blind mailbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayRequest {
    /// Hold an envelope for its recipient. `ticket` is the recipient's signed contact card,
    /// which lists the relay's user among the recipient's relays: the recipient's consent.
    Deposit {
        /// The encoded envelope.
        envelope: Vec<u8>,
        /// The recipient's encoded contact card.
        ticket: Vec<u8>,
        /// How long to hold it, in seconds.
        ttl_secs: u32,
    },
    /// Hand over envelopes held for the requesting user (at most `limit`).
    Fetch {
        /// Envelopes wanted at most.
        limit: u16,
    },
    /// The requesting user has these envelopes (by digest): delete them.
    Ack {
        /// Envelope digests.
        ids: Vec<[u8; 32]>,
    },
    /// Would this node hold envelopes for the requesting user?
    Volunteer,
    /// The requesting user's newer contact card (devices, relays).
    Card(Vec<u8>),
    /// Receipts the requesting user signed for messages it fetched here, to hold for their
    /// senders: a receipt reaches a sender who is never online with its recipient.
    DepositReceipts {
        /// Signed receipts.
        receipts: Vec<crate::Receipt>,
    },
    /// Hand over receipts held for the requesting user as a sender (at most `limit`).
    FetchReceipts {
        /// Receipts wanted at most.
        limit: u16,
    },
    /// The requesting user has these receipts (by message id): delete them.
    AckReceipts {
        /// Message ids.
        ids: Vec<crate::MessageId>,
    },
}

/// `/volli/relay/1` responses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayResponse {
    /// Held until this time.
    Held {
        /// Expiry.
        expires_at: crate::Timestamp,
    },
    /// Envelopes held for the requester, and whether more remain.
    Envelopes {
        /// Encoded envelopes.
        envelopes: Vec<Vec<u8>>,
        /// More are held.
        more: bool,
    },
    /// Done.
    Ok,
    /// Refused, with a reason.
    Refused(String),
    /// Too many requests; retry after this many seconds.
    RateLimited(u32),
    /// Receipts held for the requester, and whether more remain.
    Receipts {
        /// Signed receipts.
        receipts: Vec<crate::Receipt>,
        /// More are held.
        more: bool,
    },
}
