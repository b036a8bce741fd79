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
/// Settings at most.
pub(crate) const MAX_SETTINGS: usize = 256;
/// All settings' values together at most, as JSON text: a bound on the settings document,
/// which every device with `settings` holds in memory and a pairing hands over.
pub(crate) const MAX_SETTINGS_BYTES: usize = 1 << 20;

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
        self.write(move |doc| {
            let settings = doc.settings();
            let (count, bytes) = usage(&settings, Some(&key));
            if count >= MAX_SETTINGS || bytes + text.len() > MAX_SETTINGS_BYTES {
                return Err(StoreError::Document(format!(
                    "at most {MAX_SETTINGS} settings of {} KiB in all",
                    MAX_SETTINGS_BYTES >> 10
                )));
            }
            Ok(settings.insert(&key, text)?)
        })
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

/// How many settings there are and how many bytes their values take, leaving out `except`.
fn usage(settings: &loro::LoroMap, except: Option<&str>) -> (usize, usize) {
    let (mut count, mut bytes) = (0, 0);
    settings.for_each(|k, v| {
        if Some(k) == except {
            return;
        }
        count += 1;
        bytes += match v {
            ValueOrContainer::Value(LoroValue::String(s)) => s.len(),
            _ => MAX_SETTING_VALUE_LEN,
        };
    });
    (count, bytes)
}

/// Whether an import may leave the settings document as it is: every value is JSON text
/// within bounds, and there are not more of them than a device would write.
pub(super) fn check(doc: &super::VaultDoc) -> Result<(), String> {
    let settings = doc.settings();
    let mut bad = None;
    settings.for_each(|k, v| {
        let fits = matches!(&v, ValueOrContainer::Value(LoroValue::String(s)) if s.len() <= MAX_SETTING_VALUE_LEN)
            && k.len() <= MAX_SETTING_KEY_LEN;
        if !fits && bad.is_none() {
            bad = Some(k.to_owned());
        }
    });
    if let Some(key) = bad {
        return Err(format!("setting {key:.40} is not a value a device writes"));
    }
    let (count, bytes) = usage(&settings, None);
    if count > MAX_SETTINGS || bytes > MAX_SETTINGS_BYTES {
        return Err(format!(
            "it would hold {count} settings of {bytes} bytes (at most {MAX_SETTINGS}, {MAX_SETTINGS_BYTES})"
        ));
    }
    Ok(())
}

fn json_of(v: ValueOrContainer) -> Option<serde_json::Value> {
    match v {
        ValueOrContainer::Value(LoroValue::String(s)) => serde_json::from_str(&s).ok(),
        _ => None,
    }
}
