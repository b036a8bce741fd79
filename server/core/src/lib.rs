//! Volli's pure types: identifiers, keys, device certificates and timestamps.
//!
//! Everything here is deterministic data and cryptography: no files, no sockets, no async
//! runtime. The crates that do I/O (`volli-store`, `volli-net`, `volli-plugin-host`,
//! `volli-node`) share these types so that a `UserId` or a `DeviceCertificate` means the same
//! thing everywhere and is parsed in one place.
#![warn(missing_docs)]

pub mod backup;
pub mod card;
pub mod cert;
mod encoding;
pub mod envelope;
pub mod erasure;
pub mod ids;
pub mod invite;
pub mod keys;
pub mod mail;
pub mod pairing;
pub mod record;
pub mod signer;
pub mod statement;
pub mod time;
pub mod transfer;
pub mod wire;
pub mod xwing;

pub use card::{CardError, ContactCard};
pub use cert::{CertError, DeviceCertificate, Permissions};
pub use envelope::{Envelope, EnvelopeError, Message, MessageId, Receipt, ReceiptBatch};
pub use ids::{IdError, PeerId, UserId};
pub use invite::{Invite, InviteError};
pub use keys::{KemKey, KemKeyring, KemPublicKey, KeyError, Signature, UserPublicKeys, UserSecret};
pub use mail::{Content, Mail, MailKind, MlsMail, OfferContent};
pub use record::{AddressRecord, RecordError};
pub use signer::Signer;
pub use statement::{Claim, DeviceAddrs, Statement, StatementError};
pub use time::Timestamp;
