//! Message envelopes: a message sealed with HPKE (X-Wing KEM, HKDF-SHA256, ChaCha20-Poly1305)
//! to the recipient's X-Wing key and signed, inside the seal, for the sender: by the sender's
//! user key, or by one of the sender's devices with the user's certificate for it
//! ([`crate::signer`]).
//!
//! What travels (and what a relay sees) is only the version, the recipient's user id, the
//! X-Wing encapsulation and a ciphertext padded to a size bucket: the sender, the message id,
//! the time and the length of the text are all inside. The signature covers the recipient
//! too, so a recipient cannot re-seal a message it got to someone else as if it came from
//! the original sender. Envelopes are identified on relays by the BLAKE3 hash of their bytes
//! and messages everywhere by their random [`MessageId`], which makes every path idempotent.

use std::fmt;
use std::str::FromStr;

use crate::xwing::XWing;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::{Deserializable as _, OpModeR, OpModeS, Serializable as _};
use serde::{Deserialize, Serialize};

use crate::cert::Permissions;
use crate::ids::{PeerId, UserId};
use crate::keys::{KemKeyring, KemPublicKey, Signature};
use crate::signer::{Proof, Signer};
use crate::time::Timestamp;

/// Longest message text, in bytes.
pub const MAX_BODY_LEN: usize = 64 * 1024;
/// Plaintext sizes envelopes are padded to (including the AEAD tag).
pub const BUCKETS: [usize; 5] = [512, 2 << 10, 8 << 10, 32 << 10, 128 << 10];
/// Largest encoded envelope accepted.
pub const MAX_ENVELOPE_LEN: usize = 130 << 10;

const VERSION: u8 = 1;
/// The sealed plaintext's layout: 1 signed by the user key only, 2 with a [`Proof`].
const INNER_V1: u8 = 1;
const INNER_V2: u8 = 2;
const INFO: &[u8] = b"volli/envelope/1";
const MESSAGE_DOMAIN: &[u8] = b"volli/message/1";
const RECEIPT_DOMAIN: &[u8] = b"volli/receipt/1";
const RECEIPTS_DOMAIN: &[u8] = b"volli/receipts/1";
/// Messages one batch receipt covers at most.
pub const MAX_BATCH: usize = 256;
const TAG_LEN: usize = 16;
const ENCAPPED_LEN: usize = 1120;

/// Why an envelope or a receipt was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not decodable, over a limit, or of an unknown version.
    #[error("malformed envelope")]
    Malformed,
    /// Sealed to another user.
    #[error("the envelope is for another user")]
    WrongRecipient,
    /// Decryption failed: tampered, or not sealed to this key.
    #[error("the envelope does not decrypt")]
    Undecryptable,
    /// The sender's signature does not verify.
    #[error("the sender's signature does not verify")]
    BadSignature,
    /// The text is longer than [`MAX_BODY_LEN`].
    #[error("message text longer than {MAX_BODY_LEN} bytes")]
    TooLong,
    /// The system random source or the KEM failed.
    #[error("sealing failed")]
    Seal,
}

/// A message id: 16 random bytes, shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId([u8; 16]);

impl MessageId {
    /// A fresh random id.
    pub fn random() -> Result<Self, EnvelopeError> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|_| EnvelopeError::Seal)?;
        Ok(Self(id))
    }

    /// Wraps raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl FromStr for MessageId {
    type Err = EnvelopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.as_bytes();
        if s.len() != 32 {
            return Err(EnvelopeError::Malformed);
        }
        let mut out = [0u8; 16];
        for (i, pair) in s.chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(|_| EnvelopeError::Malformed)?;
            if !hex
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            {
                return Err(EnvelopeError::Malformed);
            }
            out[i] = u8::from_str_radix(hex, 16).map_err(|_| EnvelopeError::Malformed)?;
        }
        Ok(Self(out))
    }
}

/// A message as the sender wrote it and the recipient reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Its id, chosen by the sender.
    pub id: MessageId,
    /// Who wrote it (verified on open).
    pub sender: UserId,
    /// When the sender sent it, by the sender's clock.
    pub sent_at: Timestamp,
    /// The text.
    pub body: String,
    /// The sender's device that signed it, when a device (not the user key) did.
    pub device: Option<PeerId>,
}

/// The signed part, inside the seal.
#[derive(Serialize)]
struct Signed<'a> {
    version: u8,
    sender: &'a UserId,
    recipient: &'a UserId,
    id: &'a MessageId,
    sent_at: Timestamp,
    body: &'a str,
}

/// The sealed plaintext (before padding), as the first version wrote it.
#[derive(Serialize, Deserialize)]
struct InnerV1 {
    version: u8,
    sender: UserId,
    id: MessageId,
    sent_at: Timestamp,
    body: String,
    signature: Signature,
}

/// The sealed plaintext (before padding).
#[derive(Serialize, Deserialize)]
struct Inner {
    version: u8,
    sender: UserId,
    id: MessageId,
    sent_at: Timestamp,
    body: String,
    proof: Proof,
}

/// The header bound into the AEAD as associated data.
#[derive(Serialize)]
struct Header<'a> {
    version: u8,
    recipient: &'a UserId,
}

/// A sealed message, as it travels and as relays hold it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    version: u8,
    recipient: UserId,
    #[serde(with = "serde_bytes_vec")]
    encapped: Vec<u8>,
    #[serde(with = "serde_bytes_vec")]
    ciphertext: Vec<u8>,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("recipient", &self.recipient)
            .field("len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap_or_else(|_| unreachable!("postcard encodes to a Vec"))
}

/// The padded size for a plaintext of `len` bytes (tag included), if one fits.
fn bucket_for(len: usize) -> Option<usize> {
    BUCKETS.iter().copied().find(|b| len + TAG_LEN <= *b)
}

impl Envelope {
    /// Seals `body`, signed for `sender`, to the user `recipient` whose current X-Wing key is
    /// `kem` (from their latest contact card).
    pub fn seal(
        sender: &Signer<'_>,
        recipient: UserId,
        kem: &KemPublicKey,
        id: MessageId,
        sent_at: Timestamp,
        body: &str,
    ) -> Result<Self, EnvelopeError> {
        if body.len() > MAX_BODY_LEN {
            return Err(EnvelopeError::TooLong);
        }
        let from = sender.user_id();
        let signed = Signed {
            version: VERSION,
            sender: &from,
            recipient: &recipient,
            id: &id,
            sent_at,
            body,
        };
        let proof = sender.prove(MESSAGE_DOMAIN, &encode(&signed));
        let mut plaintext = encode(&Inner {
            version: INNER_V2,
            sender: from,
            id,
            sent_at,
            body: body.to_owned(),
            proof,
        });
        let padded = bucket_for(plaintext.len()).ok_or(EnvelopeError::TooLong)?;
        plaintext.resize(padded - TAG_LEN, 0);
        let aad = encode(&Header {
            version: VERSION,
            recipient: &recipient,
        });
        let (encapped, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, XWing>(
            &OpModeS::Base,
            kem.as_hpke(),
            INFO,
            &plaintext,
            &aad,
        )
        .map_err(|_| EnvelopeError::Seal)?;
        Ok(Self {
            version: VERSION,
            recipient,
            encapped: encapped.to_bytes().to_vec(),
            ciphertext,
        })
    }

    /// Opens an envelope sealed to the user `me` with one of the keys in `keys` (newest
    /// first), checking the sender's signature.
    pub fn open(&self, me: UserId, keys: &KemKeyring) -> Result<Message, EnvelopeError> {
        if self.recipient != me {
            return Err(EnvelopeError::WrongRecipient);
        }
        let encapped = <XWing as hpke::Kem>::EncappedKey::from_bytes(&self.encapped)
            .map_err(|_| EnvelopeError::Malformed)?;
        let aad = encode(&Header {
            version: self.version,
            recipient: &self.recipient,
        });
        let plaintext = keys
            .keys()
            .iter()
            .find_map(|key| {
                hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, XWing>(
                    &OpModeR::Base,
                    key.secret(),
                    &encapped,
                    INFO,
                    &self.ciphertext,
                    &aad,
                )
                .ok()
            })
            .ok_or(EnvelopeError::Undecryptable)?;
        let (sender, id, sent_at, body, proof, padding) = match plaintext.first() {
            Some(&INNER_V1) => {
                let (inner, padding): (InnerV1, &[u8]) =
                    postcard::take_from_bytes(&plaintext).map_err(|_| EnvelopeError::Malformed)?;
                let proof = Proof::User(inner.signature);
                (
                    inner.sender,
                    inner.id,
                    inner.sent_at,
                    inner.body,
                    proof,
                    padding,
                )
            }
            Some(&INNER_V2) => {
                let (inner, padding): (Inner, &[u8]) =
                    postcard::take_from_bytes(&plaintext).map_err(|_| EnvelopeError::Malformed)?;
                (
                    inner.sender,
                    inner.id,
                    inner.sent_at,
                    inner.body,
                    inner.proof,
                    padding,
                )
            }
            _ => return Err(EnvelopeError::Malformed),
        };
        if body.len() > MAX_BODY_LEN || padding.iter().any(|b| *b != 0) {
            return Err(EnvelopeError::Malformed);
        }
        let signed = Signed {
            version: VERSION,
            sender: &sender,
            recipient: &self.recipient,
            id: &id,
            sent_at,
            body: &body,
        };
        let device = proof
            .verify(
                &sender,
                Permissions::MESSAGES,
                MESSAGE_DOMAIN,
                &encode(&signed),
            )
            .map_err(|_| EnvelopeError::BadSignature)?;
        Ok(Message {
            id,
            sender,
            sent_at,
            body,
            device,
        })
    }

    /// Parses an envelope (not opening it): bounded, versioned, nothing trailing.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() > MAX_ENVELOPE_LEN {
            return Err(EnvelopeError::Malformed);
        }
        let envelope: Envelope = match postcard::take_from_bytes(bytes) {
            Ok((e, [])) => e,
            _ => return Err(EnvelopeError::Malformed),
        };
        if envelope.version != VERSION
            || envelope.encapped.len() != ENCAPPED_LEN
            || !BUCKETS.contains(&envelope.ciphertext.len())
        {
            return Err(EnvelopeError::Malformed);
        }
        Ok(envelope)
    }

    /// The encoded envelope.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Who it is sealed to.
    pub fn recipient(&self) -> UserId {
        self.recipient
    }

    /// The id relays know it by: BLAKE3 of its encoding.
    pub fn digest(&self) -> [u8; 32] {
        *blake3::hash(&self.to_bytes()).as_bytes()
    }
}

/// The recipient's signed acknowledgement that a message reached its node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The message.
    pub id: MessageId,
    /// Its sender, to whom the receipt is addressed.
    pub sender: UserId,
    /// The recipient, who signs (with the user key, or through one of its devices).
    pub recipient: UserId,
    /// When the recipient's node stored it.
    pub received_at: Timestamp,
    proof: Proof,
}

#[derive(Serialize)]
struct ReceiptBody<'a> {
    id: &'a MessageId,
    sender: &'a UserId,
    recipient: &'a UserId,
    received_at: Timestamp,
}

impl Receipt {
    /// The recipient (`signer`) acknowledges message `id` from `sender`.
    pub fn issue(
        signer: &Signer<'_>,
        id: MessageId,
        sender: UserId,
        received_at: Timestamp,
    ) -> Self {
        let me = signer.user_id();
        let body = ReceiptBody {
            id: &id,
            sender: &sender,
            recipient: &me,
            received_at,
        };
        Self {
            id,
            sender,
            recipient: me,
            received_at,
            proof: signer.prove(RECEIPT_DOMAIN, &encode(&body)),
        }
    }

    /// Checks that `recipient` acknowledged message `id` sent by `sender`.
    pub fn verify(
        &self,
        id: MessageId,
        sender: UserId,
        recipient: UserId,
    ) -> Result<(), EnvelopeError> {
        if self.id != id || self.sender != sender || self.recipient != recipient {
            return Err(EnvelopeError::BadSignature);
        }
        let body = ReceiptBody {
            id: &self.id,
            sender: &self.sender,
            recipient: &self.recipient,
            received_at: self.received_at,
        };
        self.proof
            .verify(
                &recipient,
                Permissions::MESSAGES,
                RECEIPT_DOMAIN,
                &encode(&body),
            )
            .map(|_| ())
            .map_err(|_| EnvelopeError::BadSignature)
    }
}

/// The recipient's one signed acknowledgement of several messages from one sender that
/// arrived in one go: one signature instead of one per message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptBatch {
    /// The messages.
    pub ids: Vec<MessageId>,
    /// Their sender, to whom the receipt is addressed.
    pub sender: UserId,
    /// The recipient, who signs.
    pub recipient: UserId,
    /// When the recipient's node stored them.
    pub received_at: Timestamp,
    proof: Proof,
}

#[derive(Serialize)]
struct ReceiptBatchBody<'a> {
    ids: &'a [MessageId],
    sender: &'a UserId,
    recipient: &'a UserId,
    received_at: Timestamp,
}

impl ReceiptBatch {
    /// The recipient (`signer`) acknowledges messages `ids` from `sender`.
    pub fn issue(
        signer: &Signer<'_>,
        ids: Vec<MessageId>,
        sender: UserId,
        received_at: Timestamp,
    ) -> Self {
        let me = signer.user_id();
        let proof = signer.prove(
            RECEIPTS_DOMAIN,
            &encode(&ReceiptBatchBody {
                ids: &ids,
                sender: &sender,
                recipient: &me,
                received_at,
            }),
        );
        Self {
            ids,
            sender,
            recipient: me,
            received_at,
            proof,
        }
    }

    /// Checks that `recipient` acknowledged these messages from `sender`.
    pub fn verify(&self, sender: UserId, recipient: UserId) -> Result<(), EnvelopeError> {
        if self.sender != sender || self.recipient != recipient || self.ids.len() > MAX_BATCH {
            return Err(EnvelopeError::BadSignature);
        }
        let body = ReceiptBatchBody {
            ids: &self.ids,
            sender: &self.sender,
            recipient: &self.recipient,
            received_at: self.received_at,
        };
        self.proof
            .verify(
                &recipient,
                Permissions::MESSAGES,
                RECEIPTS_DOMAIN,
                &encode(&body),
            )
            .map(|_| ())
            .map_err(|_| EnvelopeError::BadSignature)
    }
}

/// Byte vectors as serde bytes (compact in postcard).
mod serde_bytes_vec {
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        crate::encoding::serialize(bytes, s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        crate::encoding::deserialize_vec(d, super::MAX_ENVELOPE_LEN)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use proptest::prelude::*;

    use super::*;
    use crate::keys::UserSecret;

    fn open(e: &Envelope, me: &UserSecret) -> Result<Message, EnvelopeError> {
        e.open(me.user_id(), &me.keyring(0))
    }

    fn users() -> (UserSecret, UserSecret, UserSecret) {
        (
            UserSecret::from_master([1; 32]),
            UserSecret::from_master([2; 32]),
            UserSecret::from_master([3; 32]),
        )
    }

    fn seal(from: &UserSecret, to: &UserSecret, body: &str) -> (MessageId, Envelope) {
        let id = MessageId::random().unwrap();
        let e = Envelope::seal(
            &Signer::User(from),
            to.user_id(),
            &to.public_keys().kem,
            id,
            Timestamp::now(),
            body,
        )
        .unwrap();
        (id, e)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn round_trip(body in ".{0,3000}") {
            let (a, b, _) = users();
            let (id, e) = seal(&a, &b, &body);
            let e = Envelope::from_bytes(&e.to_bytes()).unwrap();
            let m = open(&e, &b).unwrap();
            prop_assert_eq!(m.id, id);
            prop_assert_eq!(m.sender, a.user_id());
            prop_assert_eq!(m.body, body);
        }

        #[test]
        fn any_flipped_bit_is_refused(body in ".{0,200}", at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let (a, b, _) = users();
            let (_, e) = seal(&a, &b, &body);
            let mut bytes = e.to_bytes();
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let opened = Envelope::from_bytes(&bytes).and_then(|e| open(&e, &b));
            prop_assert!(opened.is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let (_, b, _) = users();
            if let Ok(e) = Envelope::from_bytes(&bytes) {
                let _ = open(&e, &b);
            }
        }
    }

    #[test]
    fn the_wrong_recipient_cannot_open_it() {
        let (a, b, c) = users();
        let (_, e) = seal(&a, &b, "for b only");
        assert_eq!(open(&e, &c).unwrap_err(), EnvelopeError::WrongRecipient);
        // Relabelled for c, it still does not decrypt: the KEM and the AAD bind b.
        let mut relabelled = e.clone();
        relabelled.recipient = c.user_id();
        assert_eq!(
            open(&relabelled, &c).unwrap_err(),
            EnvelopeError::Undecryptable
        );
    }

    #[test]
    fn a_forwarded_message_does_not_verify_for_the_new_recipient() {
        // b re-seals what a sent it to c, keeping a's signature: c must refuse it.
        let (a, b, c) = users();
        let id = MessageId::random().unwrap();
        let sent_at = Timestamp::now();
        let signed = Signed {
            version: VERSION,
            sender: &a.user_id(),
            recipient: &b.user_id(),
            id: &id,
            sent_at,
            body: "hi b",
        };
        let proof = Signer::User(&a).prove(MESSAGE_DOMAIN, &encode(&signed));
        let mut plaintext = encode(&Inner {
            version: INNER_V2,
            sender: a.user_id(),
            id,
            sent_at,
            body: "hi b".into(),
            proof,
        });
        plaintext.resize(512 - TAG_LEN, 0);
        let aad = encode(&Header {
            version: VERSION,
            recipient: &c.user_id(),
        });
        let (encapped, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, XWing>(
            &OpModeS::Base,
            c.public_keys().kem.as_hpke(),
            INFO,
            &plaintext,
            &aad,
        )
        .unwrap();
        let forged = Envelope {
            version: VERSION,
            recipient: c.user_id(),
            encapped: encapped.to_bytes().to_vec(),
            ciphertext,
        };
        assert_eq!(open(&forged, &c).unwrap_err(), EnvelopeError::BadSignature);
    }

    #[test]
    fn sizes_are_padded_to_buckets() {
        let (a, b, _) = users();
        let short = seal(&a, &b, "hi").1;
        let longer = seal(&a, &b, &"x".repeat(300)).1;
        assert_eq!(short.ciphertext.len(), longer.ciphertext.len());
        assert_eq!(short.to_bytes().len(), longer.to_bytes().len());
        let big = seal(&a, &b, &"x".repeat(MAX_BODY_LEN)).1;
        assert_eq!(big.ciphertext.len(), 128 << 10);
        assert!(big.to_bytes().len() <= MAX_ENVELOPE_LEN);
        let too_long = "x".repeat(MAX_BODY_LEN + 1);
        assert_eq!(
            Envelope::seal(
                &Signer::User(&a),
                b.user_id(),
                &b.public_keys().kem,
                MessageId::random().unwrap(),
                Timestamp::now(),
                &too_long
            )
            .unwrap_err(),
            EnvelopeError::TooLong
        );
    }

    #[test]
    fn receipts_verify_only_for_what_they_acknowledge() {
        let (a, b, c) = users();
        let id = MessageId::random().unwrap();
        let r = Receipt::issue(&Signer::User(&b), id, a.user_id(), Timestamp::now());
        r.verify(id, a.user_id(), b.user_id()).unwrap();
        assert!(r.verify(id, a.user_id(), c.user_id()).is_err());
        assert!(
            r.verify(MessageId::random().unwrap(), a.user_id(), b.user_id())
                .is_err()
        );
        let mut forged = r.clone();
        forged.received_at = Timestamp::from_millis(0);
        assert!(forged.verify(id, a.user_id(), b.user_id()).is_err());
    }

    #[test]
    fn message_ids_round_trip_as_hex() {
        let id = MessageId::random().unwrap();
        assert_eq!(id.to_string().parse::<MessageId>().unwrap(), id);
        assert!("xyz".parse::<MessageId>().is_err());
        assert!(
            "ABCDEF0123456789ABCDEF0123456789"
                .parse::<MessageId>()
                .is_err()
        );
    }

    #[test]
    fn a_device_without_the_user_key_sends_and_acknowledges() {
        use crate::cert::DeviceCertificate;
        let (a, b, _) = users();
        let key = libp2p_identity::Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let cert =
            DeviceCertificate::issue(&a, peer, "phone", Permissions::MESSAGES, Timestamp::now());
        let phone = Signer::Device {
            key: &key,
            certificate: &cert,
        };
        let id = MessageId::random().unwrap();
        let e = Envelope::seal(
            &phone,
            b.user_id(),
            &b.public_keys().kem,
            id,
            Timestamp::now(),
            "from my phone",
        )
        .unwrap();
        let m = open(&e, &b).unwrap();
        assert_eq!((m.sender, m.device), (a.user_id(), Some(peer)));
        let r = Receipt::issue(&phone, id, b.user_id(), Timestamp::now());
        r.verify(id, b.user_id(), a.user_id()).unwrap();

        // A certificate without `messages` does not let a device speak for the user.
        let settings_only =
            DeviceCertificate::issue(&a, peer, "tablet", Permissions::SETTINGS, Timestamp::now());
        let tablet = Signer::Device {
            key: &key,
            certificate: &settings_only,
        };
        let e = Envelope::seal(
            &tablet,
            b.user_id(),
            &b.public_keys().kem,
            id,
            Timestamp::now(),
            "x",
        )
        .unwrap();
        assert_eq!(open(&e, &b).unwrap_err(), EnvelopeError::BadSignature);
    }

    #[test]
    fn an_envelope_sealed_to_an_older_generation_still_opens_with_the_keyring() {
        let (a, b, _) = users();
        let id = MessageId::random().unwrap();
        let old = b.kem_key(0);
        let new = b.kem_key(1);
        let e = Envelope::seal(
            &Signer::User(&a),
            b.user_id(),
            old.public(),
            id,
            Timestamp::now(),
            "late",
        )
        .unwrap();
        assert_eq!(e.open(b.user_id(), &b.keyring(1)).unwrap().body, "late");
        let only_new = KemKeyring::new(vec![new]);
        assert_eq!(
            e.open(b.user_id(), &only_new).unwrap_err(),
            EnvelopeError::Undecryptable
        );
    }
}
