//! `GET /health`: liveness, without authentication.

use serde::Serialize;
use utoipa::ToSchema;

use super::extract::Json;

/// The node is up.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness probe.
#[utoipa::path(get, path = "/health", tag = "node",
    responses((status = 200, description = "The node is up", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}
