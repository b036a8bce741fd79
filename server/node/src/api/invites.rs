//! `POST /v1/invites`: a signed invite link and its QR code.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use qrcode::QrCode;
use qrcode::render::svg;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, OptionalJson};
use crate::contacts::{
    Contacts, DEFAULT_INVITE_TTL, MAX_INVITE_TTL, MAX_INVITE_USES, MIN_INVITE_TTL,
};

/// Options for a new invite.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct NewInvite {
    /// Lifetime in seconds, 60 to 2,592,000 (30 days). Default one day.
    pub ttl_secs: Option<u64>,
    /// How many people may redeem it, 1 to 100. Default 1.
    pub max_uses: Option<u16>,
}

/// A new invite.
#[derive(Serialize, ToSchema)]
pub struct InviteView {
    /// `volli://invite/…`, to share.
    pub link: String,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
    /// The link as a QR code, an SVG document.
    pub qr_svg: String,
}

/// Renders `text` as an SVG QR code.
pub fn qr_svg(text: &str) -> Result<String, ApiError> {
    let code = QrCode::new(text.as_bytes()).map_err(ApiError::internal)?;
    Ok(code
        .render::<svg::Color<'_>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build())
}

/// Creates an invite.
///
/// Whoever redeems the link (`POST /v1/contacts` on their node) becomes a contact of this
/// user, and this user theirs. The link is signed and names this device; it stops working
/// after `ttl_secs` or `max_uses` redemptions.
#[utoipa::path(post, path = "/v1/invites", tag = "contacts", security(("bearer" = [])),
    request_body = Option<NewInvite>,
    responses(
        (status = 201, description = "The invite", body = InviteView),
        (status = 400, description = "Out-of-range options or malformed body", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "This device does not hold the user's signing key (`not_admin`)", body = ErrorBody),
    ))]
pub async fn create(
    State(contacts): State<Contacts>,
    OptionalJson(options): OptionalJson<NewInvite>,
) -> Result<(StatusCode, Json<InviteView>), ApiError> {
    let ttl = options
        .ttl_secs
        .map_or(DEFAULT_INVITE_TTL, Duration::from_secs);
    if ttl < MIN_INVITE_TTL || ttl > MAX_INVITE_TTL {
        return Err(ApiError::bad_request(
            "invalid_ttl",
            format!(
                "ttl_secs must be {} to {}",
                MIN_INVITE_TTL.as_secs(),
                MAX_INVITE_TTL.as_secs()
            ),
        ));
    }
    let max_uses = options.max_uses.unwrap_or(1);
    if !(1..=MAX_INVITE_USES).contains(&max_uses) {
        return Err(ApiError::bad_request(
            "invalid_max_uses",
            format!("max_uses must be 1 to {MAX_INVITE_USES}"),
        ));
    }
    let invite = contacts.create_invite(ttl, max_uses).await?;
    Ok((
        StatusCode::CREATED,
        Json(InviteView {
            qr_svg: qr_svg(&invite.link)?,
            link: invite.link,
            expires_at: invite.expires_at.to_rfc3339(),
        }),
    ))
}
