//! The user's devices (the `devices` document): one mergeable map per peer id with its
//! certificate, when it was added and, once it is, when it was revoked (a grow-only flag:
//! a revocation seen on any device stands on all of them). Beside them, facts about the user
//! as a whole that every device needs and only an admin device can make: the generation of
//! the X-Wing key contacts seal to, and the user's latest signed contact card.

use loro::{LoroValue, ValueOrContainer};
use volli_core::{ContactCard, DeviceCertificate, PeerId, Timestamp, UserId};

use super::Vault;
use super::doc::VaultDoc;
use crate::StoreError;

/// One of the user's devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device's certificate, signed by the user key.
    pub certificate: DeviceCertificate,
    /// When it joined.
    pub added_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// Where it last said it listens (multiaddrs), so the user's other devices can reach it.
    pub addrs: Vec<String>,
}

impl DeviceRecord {
    /// The device's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.certificate.peer_id()
    }
}

impl Vault {
    /// Adds a device or replaces its certificate (a newer one: a new name, other
    /// permissions). The certificate must verify. A revoked device stays revoked.
    pub async fn put_device(&self, record: DeviceRecord) -> Result<(), StoreError> {
        record
            .certificate
            .verify()
            .map_err(|e| StoreError::Document(e.to_string()))?;
        self.write(move |doc| {
            let entry = doc
                .devices()
                .ensure_mergeable_map(&record.peer_id().to_base58())?;
            entry.insert("name", record.certificate.device_name())?;
            entry.insert("certificate", record.certificate.to_bytes())?;
            if entry.get("added_at").is_none() {
                entry.insert("added_at", record.added_at.as_millis())?;
            }
            if let Some(at) = record.revoked_at {
                entry.insert("revoked_at", at.as_millis())?;
            }
            Ok(())
        })
        .await
    }

    /// Records where device `peer` listens (at most 16 addresses). Returns false if there
    /// is no such device or nothing changed.
    pub async fn set_device_addrs(
        &self,
        peer: PeerId,
        addrs: Vec<String>,
    ) -> Result<bool, StoreError> {
        let addrs: Vec<String> = addrs.into_iter().take(16).collect();
        let text =
            serde_json::to_string(&addrs).map_err(|e| StoreError::Document(e.to_string()))?;
        self.write(move |doc| {
            let Some(entry) = doc.devices().get(&peer.to_base58()).and_then(map_of) else {
                return Ok(false);
            };
            let same = matches!(
                entry.get("addrs"),
                Some(ValueOrContainer::Value(LoroValue::String(s))) if *s == *text
            );
            if same {
                return Ok(false);
            }
            entry.insert("addrs", text)?;
            Ok(true)
        })
        .await
    }

    /// Marks device `peer` revoked at `at`. Returns false if there is no such device or it
    /// already was.
    pub async fn revoke_device(&self, peer: PeerId, at: Timestamp) -> Result<bool, StoreError> {
        self.write(move |doc| {
            let Some(entry) = doc.devices().get(&peer.to_base58()).and_then(map_of) else {
                return Ok(false);
            };
            if entry.get("revoked_at").is_some() {
                return Ok(false);
            }
            entry.insert("revoked_at", at.as_millis())?;
            Ok(true)
        })
        .await
    }

    /// Every device of `user` with a valid certificate, revoked ones included, in peer id
    /// order.
    pub async fn devices_of(&self, user: UserId) -> Result<Vec<DeviceRecord>, StoreError> {
        self.read(move |doc| {
            let mut out = Vec::new();
            doc.devices().for_each(|_, v| {
                if let Some(record) = record_of(doc, v)
                    && record.certificate.user_id() == user
                {
                    out.push(record);
                }
            });
            out.sort_by_key(|r| r.peer_id().to_bytes());
            out
        })
        .await
    }

    /// Every device with a valid certificate, of any user, revoked ones included.
    pub async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.read(|doc| {
            let mut out = Vec::new();
            doc.devices().for_each(|_, v| {
                if let Some(record) = record_of(doc, v) {
                    out.push(record);
                }
            });
            out.sort_by_key(|r| r.peer_id().to_bytes());
            out
        })
        .await
    }

    /// The generation of the user's X-Wing key that contacts seal to (0 until a device is
    /// revoked).
    pub async fn key_generation(&self) -> Result<u32, StoreError> {
        self.read(|doc| match doc.user().get("key_generation") {
            Some(ValueOrContainer::Value(LoroValue::I64(g))) => u32::try_from(g).unwrap_or(0),
            _ => 0,
        })
        .await
    }

    /// Moves the user to X-Wing key generation `generation` (never back).
    pub async fn set_key_generation(&self, generation: u32) -> Result<(), StoreError> {
        self.write(move |doc| {
            let current = match doc.user().get("key_generation") {
                Some(ValueOrContainer::Value(LoroValue::I64(g))) => g,
                _ => 0,
            };
            if i64::from(generation) > current {
                doc.user().insert("key_generation", i64::from(generation))?;
            }
            Ok(())
        })
        .await
    }

    /// The user's latest contact card, as an admin device last issued it.
    pub async fn own_card(&self) -> Result<Option<ContactCard>, StoreError> {
        self.read(|doc| match doc.user().get("card") {
            Some(ValueOrContainer::Value(LoroValue::Binary(b))) => doc.card(&b),
            _ => None,
        })
        .await
    }

    /// Keeps `card` as the user's latest, unless a newer one is kept already.
    pub async fn set_own_card(&self, card: ContactCard) -> Result<(), StoreError> {
        self.write(move |doc| {
            let newer = match doc.user().get("card") {
                Some(ValueOrContainer::Value(LoroValue::Binary(b))) => doc
                    .card(&b)
                    .is_none_or(|kept| card.issued_at() > kept.issued_at()),
                _ => true,
            };
            if newer {
                doc.user().insert("card", card.to_bytes())?;
            }
            Ok(())
        })
        .await
    }
}

fn map_of(v: ValueOrContainer) -> Option<loro::LoroMap> {
    match v {
        ValueOrContainer::Container(loro::Container::Map(map)) => Some(map),
        _ => None,
    }
}

fn record_of(doc: &VaultDoc, v: ValueOrContainer) -> Option<DeviceRecord> {
    let map = map_of(v)?;
    let cert = match map.get("certificate")? {
        ValueOrContainer::Value(LoroValue::Binary(b)) => doc.certificate(&b)?,
        _ => return None,
    };
    let added_at = match map.get("added_at")? {
        ValueOrContainer::Value(LoroValue::I64(ms)) => Timestamp::from_millis(ms),
        _ => return None,
    };
    let revoked_at = match map.get("revoked_at") {
        Some(ValueOrContainer::Value(LoroValue::I64(ms))) => Some(Timestamp::from_millis(ms)),
        _ => None,
    };
    let addrs = match map.get("addrs") {
        Some(ValueOrContainer::Value(LoroValue::String(s))) => {
            serde_json::from_str::<Vec<String>>(&s).unwrap_or_default()
        }
        _ => Vec::new(),
    };
    Some(DeviceRecord {
        certificate: cert,
        added_at,
        revoked_at,
        addrs,
    })
}
