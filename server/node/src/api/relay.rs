//! `GET /v1/relay`: what this node holds for its user's friends.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::Json;
use crate::relay::Relay;

/// The relay mailbox.
#[derive(Serialize, ToSchema)]
pub struct RelayView {
    /// Sealed envelopes held for others.
    pub envelopes: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// How many users they are for.
    pub recipients: u64,
}

/// What this node holds as a blind mailbox for its user's contacts.
#[utoipa::path(get, path = "/v1/relay", tag = "messages", security(("bearer" = [])),
    responses(
        (status = 200, description = "Held envelopes", body = RelayView),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn get(State(relay): State<Relay>) -> Result<Json<RelayView>, ApiError> {
    let s = relay.stats().await.map_err(ApiError::internal)?;
    Ok(Json(RelayView {
        envelopes: s.envelopes,
        bytes: s.bytes,
        recipients: s.recipients,
    }))
}
