//! Messages of the application protocols, encoded with postcard. Each parser bounds its
//! input and refuses trailing bytes.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cert::DeviceCertificate;

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
