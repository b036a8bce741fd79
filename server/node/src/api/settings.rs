//! `/v1/settings`: small JSON values synced across the user's devices through the vault.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use volli_store::Vault;

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path};
use crate::events::{Event, EventBus};

/// Longest setting key.
const MAX_KEY_LEN: usize = 128;
/// Largest setting value, as JSON text.
const MAX_VALUE_LEN: usize = 64 * 1024;

/// Every setting.
#[derive(Serialize, ToSchema)]
pub struct Settings {
    /// Key → value.
    #[schema(value_type = BTreeMap<String, serde_json::Value>)]
    pub settings: BTreeMap<String, serde_json::Value>,
}

/// A new value for a setting.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingValue {
    /// Any JSON value up to 64 KiB.
    #[schema(value_type = Value)]
    pub value: serde_json::Value,
}

/// One setting.
#[derive(Serialize, ToSchema)]
pub struct Setting {
    /// The key.
    pub key: String,
    /// The value.
    #[schema(value_type = Value)]
    pub value: serde_json::Value,
}

fn check_key(key: &str) -> Result<(), ApiError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if key == crate::retention::SETTING {
        return Err(ApiError::bad_request(
            "reserved_setting_key",
            "the retention rules are set with PUT /v1/retention, which checks them",
        ));
    }
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_setting_key",
            "setting keys are 1 to 128 characters of a-z, 0-9, '.', '_' and '-'",
        ))
    }
}

/// Lists every setting.
#[utoipa::path(get, path = "/v1/settings", tag = "settings", security(("bearer" = [])),
    responses(
        (status = 200, description = "All settings", body = Settings),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn list(State(vault): State<Vault>) -> Result<Json<Settings>, ApiError> {
    let settings = vault.settings().await.map_err(ApiError::internal)?;
    Ok(Json(Settings { settings }))
}

/// Reads one setting.
#[utoipa::path(get, path = "/v1/settings/{key}", tag = "settings", security(("bearer" = [])),
    params(("key" = String, Path, description = "Setting key")),
    responses(
        (status = 200, description = "The setting", body = Setting),
        (status = 400, description = "Malformed key", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "Not set", body = ErrorBody),
    ))]
pub async fn get(
    State(vault): State<Vault>,
    Path(key): Path<String>,
) -> Result<Json<Setting>, ApiError> {
    check_key(&key)?;
    match vault.setting(&key).await.map_err(ApiError::internal)? {
        Some(value) => Ok(Json(Setting { key, value })),
        None => Err(ApiError::not_found(
            "unknown_setting",
            format!("no setting named {key:?}"),
        )),
    }
}

/// Sets a setting; it is saved before the response and synced to the user's devices.
#[utoipa::path(put, path = "/v1/settings/{key}", tag = "settings", security(("bearer" = [])),
    params(("key" = String, Path, description = "Setting key")),
    request_body = SettingValue,
    responses(
        (status = 200, description = "Saved", body = Setting),
        (status = 400, description = "Malformed key or body, or a value a known setting cannot take (`invalid_setting_value`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 413, description = "Value or body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    ))]
pub async fn put(
    State(vault): State<Vault>,
    State(events): State<EventBus>,
    Path(key): Path<String>,
    Json(body): Json<SettingValue>,
) -> Result<Json<Setting>, ApiError> {
    check_key(&key)?;
    if key == crate::files::RELAY_BYTES_SETTING && body.value.as_u64().is_none() {
        return Err(ApiError::bad_request(
            "invalid_setting_value",
            "files.relay_bytes is a whole number of bytes (0: hold no files for contacts)",
        ));
    }
    if key == crate::backups::OFFER_SETTING && body.value.as_u64().is_none() {
        return Err(ApiError::bad_request(
            "invalid_setting_value",
            "backup.offer_bytes is a whole number of bytes (0: hold no backups for contacts)",
        ));
    }
    let len = serde_json::to_string(&body.value).map_or(usize::MAX, |s| s.len());
    if len > MAX_VALUE_LEN {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "setting_too_large",
            "setting values are limited to 64 KiB of JSON",
        ));
    }
    vault
        .set_setting(&key, &body.value)
        .await
        .map_err(ApiError::internal)?;
    events.publish(Event::SettingsChanged { key: key.clone() });
    Ok(Json(Setting {
        key,
        value: body.value,
    }))
}

/// Removes a setting. Removing one that is not set succeeds too.
#[utoipa::path(delete, path = "/v1/settings/{key}", tag = "settings", security(("bearer" = [])),
    params(("key" = String, Path, description = "Setting key")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Malformed key", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn delete(
    State(vault): State<Vault>,
    State(events): State<EventBus>,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_key(&key)?;
    vault
        .delete_setting(&key)
        .await
        .map_err(ApiError::internal)?;
    events.publish(Event::SettingsChanged { key });
    Ok(StatusCode::NO_CONTENT)
}
