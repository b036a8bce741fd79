//! The user's devices: one mergeable map per peer id with its name, certificate and the time
//! it was added. The certificate is kept so any device can prove the others' membership.

use loro::{LoroValue, ValueOrContainer};
use volli_core::{DeviceCertificate, PeerId, Timestamp};

use super::Vault;
use crate::StoreError;

/// One of the user's devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device's certificate, signed by the user key.
    pub certificate: DeviceCertificate,
    /// When it joined.
    pub added_at: Timestamp,
}

impl DeviceRecord {
    /// The device's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.certificate.peer_id()
    }
}

impl Vault {
    /// Adds or replaces a device. The certificate must verify.
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
            entry.insert("added_at", record.added_at.as_millis())?;
            Ok(())
        })
        .await
    }

    /// Every device with a valid certificate, in peer id order.
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
}

fn record_of(doc: &super::VaultDoc, v: ValueOrContainer) -> Option<DeviceRecord> {
    let ValueOrContainer::Container(loro::Container::Map(map)) = v else {
        return None;
    };
    let cert = match map.get("certificate")? {
        ValueOrContainer::Value(LoroValue::Binary(b)) => doc.certificate(&b)?,
        _ => return None,
    };
    let added_at = match map.get("added_at")? {
        ValueOrContainer::Value(LoroValue::I64(ms)) => Timestamp::from_millis(ms),
        _ => return None,
    };
    Some(DeviceRecord {
        certificate: cert,
        added_at,
    })
}
