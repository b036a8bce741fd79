//! `GET /v1/relay`: what this node holds for its user's friends, and for transfers, against
//! the quotas and expiry that bound both.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::Json;
use crate::files::Files;
use crate::relay::Relay;

/// The relay mailbox and the transfer storage.
#[derive(Serialize, ToSchema)]
pub struct RelayView {
    /// Sealed envelopes held for others.
    pub envelopes: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// How many users they are for.
    pub recipients: u64,
    /// When the first held envelope expires and is deleted (RFC 3339; null when none is held).
    pub next_expiry: Option<String>,
    /// The longest any envelope is held, whatever the policy allows, in seconds.
    #[schema(example = 604_800)]
    pub max_hold_secs: u64,
    /// The relay-policy plugin that decides on deposits, and its quotas.
    pub policy: PolicyView,
    /// What file transfers hold in the file backend, and its limits.
    pub transfers: TransferStorageView,
    /// Files held for contacts' offline contacts (files through friends).
    pub held_files: HeldFilesView,
}

/// Files this node holds for its contacts' offline contacts, who designated it as a relay.
#[derive(Serialize, ToSchema)]
pub struct HeldFilesView {
    /// Files held.
    pub files: u64,
    /// Their ciphertext bytes held so far.
    pub bytes: u64,
    /// How many users they are for.
    pub recipients: u64,
    /// What each contact may leave here (`files.relay_bytes`, else `[files] relay_bytes`;
    /// 0: none).
    pub relay_bytes: u64,
    /// When the first expires and is deleted (RFC 3339; null when none is held).
    pub next_expiry: Option<String>,
}

/// The relay-policy plugin in force (`[relay] policy`).
#[derive(Serialize, ToSchema)]
pub struct PolicyView {
    /// Its name.
    #[schema(example = "friends-only")]
    pub plugin: String,
    /// `running`, `disabled`, `failed`, or `missing` (not installed): unless `running`,
    /// nothing is held for anyone.
    #[schema(example = "running")]
    pub state: String,
    /// The configuration it decides with: for `friends-only`, `max_envelope_bytes`,
    /// `max_per_depositor`, `max_bytes_per_depositor`, `max_bytes_per_recipient`,
    /// `max_total_bytes` and `max_ttl_secs`. Changed with `PUT /v1/plugins/{name}/config`.
    #[schema(value_type = Object)]
    pub limits: serde_json::Map<String, serde_json::Value>,
}

/// File transfer storage (`[files]` settings).
#[derive(Serialize, ToSchema)]
pub struct TransferStorageView {
    /// Files held: uploads not yet fetched and received files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// `[files] max_bytes`: what all transfers may hold.
    pub max_bytes: u64,
    /// `[files] max_bytes_per_contact`.
    pub max_bytes_per_contact: u64,
    /// `[files] keep_secs`: how long a sent file stays available.
    pub keep_secs: u64,
    /// When the first unfinished transfer expires (RFC 3339; null when none).
    pub next_expiry: Option<String>,
}

/// What this node holds as a blind mailbox for its user's contacts and for file transfers,
/// with the quotas and expiry that bound them.
#[utoipa::path(get, path = "/v1/relay", tag = "messages", operation_id = "relay_get", security(("bearer" = [])),
    responses(
        (status = 200, description = "Held envelopes and transfer storage", body = RelayView),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn get(
    State(relay): State<Relay>,
    State(files): State<Files>,
) -> Result<Json<RelayView>, ApiError> {
    let s = relay.stats().await.map_err(ApiError::internal)?;
    let storage = files.storage().await.map_err(ApiError::internal)?;
    let (plugin, state, limits) = relay.policy_in_force();
    let config = files.config();
    let held = files.held_stats().await.map_err(ApiError::internal)?;
    Ok(Json(RelayView {
        envelopes: s.envelopes,
        bytes: s.bytes,
        recipients: s.recipients,
        next_expiry: s.next_expiry.map(|t| t.to_rfc3339()),
        max_hold_secs: volli_core::wire::MAX_TTL.as_secs(),
        policy: PolicyView {
            plugin,
            state: state.map_or("missing", |s| s.as_str()).to_owned(),
            limits,
        },
        transfers: TransferStorageView {
            files: storage.files,
            bytes: storage.bytes,
            max_bytes: config.max_bytes,
            max_bytes_per_contact: config.max_bytes_per_contact,
            keep_secs: config.keep_secs,
            next_expiry: storage.next_expiry.map(|t| t.to_rfc3339()),
        },
        held_files: HeldFilesView {
            files: held.0,
            bytes: held.1,
            recipients: held.2.len() as u64,
            relay_bytes: files.relay_bytes().await,
            next_expiry: held.3.map(|t| t.to_rfc3339()),
        },
    }))
}
