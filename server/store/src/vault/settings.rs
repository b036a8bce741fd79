//! Settings: small JSON values under string keys, synced across the user's devices.
//! Each value is stored whole (last writer wins per key).

use std::collections::BTreeMap;

use loro::{LoroValue, ValueOrContainer};

use super::Vault;
use crate::StoreError;

/// Longest accepted setting key.
pub(crate) const MAX_SETTING_KEY_LEN: usize = 128;
/// Largest accepted setting value, as JSON text.
pub(crate) const MAX_SETTING_VALUE_LEN: usize = 64 * 1024;

impl Vault {
    /// Sets `key` to `value`.
    pub async fn set_setting(
        &self,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(value).map_err(|e| StoreError::Document(e.to_string()))?;
        if key.is_empty() || key.len() > MAX_SETTING_KEY_LEN || text.len() > MAX_SETTING_VALUE_LEN {
            return Err(StoreError::Document(
                "setting key or value too large".into(),
            ));
        }
        let key = key.to_owned();
        self.write(move |doc| Ok(doc.settings().insert(&key, text)?))
            .await
    }

    /// The value of `key`, if set.
    pub async fn setting(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let key = key.to_owned();
        self.read(move |doc| doc.settings().get(&key).and_then(json_of))
            .await
    }

    /// Every setting.
    pub async fn settings(&self) -> Result<BTreeMap<String, serde_json::Value>, StoreError> {
        self.read(|doc| {
            let map = doc.settings();
            let mut out = BTreeMap::new();
            map.for_each(|k, v| {
                if let Some(v) = json_of(v) {
                    out.insert(k.to_owned(), v);
                }
            });
            out
        })
        .await
    }

    /// Removes `key`.
    pub async fn delete_setting(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.write(move |doc| Ok(doc.settings().delete(&key)?))
            .await
    }
}

fn json_of(v: ValueOrContainer) -> Option<serde_json::Value> {
    match v {
        ValueOrContainer::Value(LoroValue::String(s)) => serde_json::from_str(&s).ok(),
        _ => None,
    }
}
