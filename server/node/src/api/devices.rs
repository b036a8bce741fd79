//! `/v1/pairing` and `/v1/devices`: add a device to this user (on the existing device:
//! offer, then approve or reject; on the new node: join), list the user's devices, revoke one.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use volli_core::Permissions;

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, OptionalJson, Path};
use super::invites::qr_svg;
use crate::devices::{DeviceError, DeviceView, Devices, JoinWith, PairingRequestView};

impl From<DeviceError> for ApiError {
    fn from(e: DeviceError) -> Self {
        let message = e.to_string();
        match e {
            DeviceError::NotAdmin => ApiError::new(StatusCode::FORBIDDEN, "not_admin", message),
            DeviceError::NotFound => ApiError::not_found("unknown_device", message),
            DeviceError::CannotRevokeSelf => {
                ApiError::new(StatusCode::CONFLICT, "cannot_revoke_self", message)
            }
            DeviceError::AlreadyRevoked => {
                ApiError::new(StatusCode::CONFLICT, "already_revoked", message)
            }
            DeviceError::InvalidPairing(_) => ApiError::bad_request("invalid_pairing", message),
            DeviceError::PairingExpired => {
                ApiError::new(StatusCode::GONE, "pairing_expired", message)
            }
            DeviceError::PairingUsed => {
                ApiError::new(StatusCode::CONFLICT, "pairing_used", message)
            }
            DeviceError::PairingNotFound => ApiError::not_found("unknown_pairing", message),
            DeviceError::PairingNotPending => {
                ApiError::new(StatusCode::CONFLICT, "pairing_not_pending", message)
            }
            DeviceError::NodeNotEmpty => {
                ApiError::new(StatusCode::CONFLICT, "node_not_empty", message)
            }
            // Nobody answers with that code (or at the link's addresses): as for a wrong
            // code, the person retries; it is not the node failing.
            DeviceError::Unreachable(_) => ApiError::not_found("device_not_found", message),
            DeviceError::Contacts(crate::contacts::ContactError::NotAdmin) => {
                ApiError::new(StatusCode::FORBIDDEN, "not_admin", message)
            }
            DeviceError::Store(_) | DeviceError::Contacts(_) => ApiError::internal(e),
        }
    }
}

/// Options of a new pairing.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct NewPairing {
    /// How long the link and the code work, in seconds (60 to 3600; default 900).
    #[schema(minimum = 60, maximum = 3600)]
    pub ttl_secs: Option<u64>,
    /// What the new device may do: any of `messages`, `contacts`, `settings`, `admin`
    /// (default the first three). `admin` hands over the user's signing key, which cannot be
    /// taken back by revoking the device.
    pub permissions: Option<Vec<String>>,
}

/// A pairing offered by this device.
#[derive(Serialize, ToSchema)]
pub struct PairingView {
    /// The session id.
    pub id: String,
    /// The `volli://pair/…` link (for the QR code).
    pub link: String,
    /// The short code to type on the new device.
    pub code: String,
    /// The link as a QR code (SVG).
    pub qr_svg: String,
    /// When the link and the code stop working (RFC 3339).
    pub expires_at: String,
    /// What the new device will be allowed.
    pub permissions: Vec<String>,
}

/// Joining a user as a new device.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinPairing {
    /// A `volli://pair/…` link (give this or `code`).
    pub link: Option<String>,
    /// A short code such as `427-crossbow-nebula-orbit` (give this or `link`).
    pub code: Option<String>,
    /// The name this device is to have (default: its current name).
    pub device_name: Option<String>,
}

/// A join waiting for the existing device's approval.
#[derive(Serialize, ToSchema)]
pub struct JoiningView {
    /// The session id.
    pub id: String,
    /// Always `waiting_approval`.
    #[schema(example = "waiting_approval")]
    pub state: &'static str,
    /// The code the existing device shows too: approve only if they match.
    pub check_code: String,
}

/// A request to join this user.
#[derive(Serialize, ToSchema)]
#[schema(as = PairingRequest)]
pub struct PairingRequestBody {
    /// The session id.
    pub id: String,
    /// The name the new device gave.
    pub device_name: String,
    /// Its peer id.
    pub peer_id: String,
    /// The code both devices show.
    pub check_code: String,
    /// `pending`, `approved`, `rejected` or `expired`.
    pub state: String,
}

impl From<PairingRequestView> for PairingRequestBody {
    fn from(v: PairingRequestView) -> Self {
        Self {
            id: v.id,
            device_name: v.device_name,
            peer_id: v.peer_id.to_base58(),
            check_code: v.check_code,
            state: v.state.as_str().to_owned(),
        }
    }
}

/// Requests to join this user.
#[derive(Serialize, ToSchema)]
pub struct PairingRequests {
    /// Newest first.
    pub requests: Vec<PairingRequestBody>,
}

/// One of the user's devices.
#[derive(Serialize, ToSchema)]
#[schema(as = Device)]
pub struct DeviceBody {
    /// Its peer id.
    pub peer_id: String,
    /// Its name.
    pub name: String,
    /// What it may do: `messages`, `contacts`, `settings`, `admin`.
    pub permissions: Vec<String>,
    /// When it joined (RFC 3339).
    pub added_at: String,
    /// When this node last saw it connected (RFC 3339), if it has.
    pub last_seen: Option<String>,
    /// Whether it is the device answering.
    pub this_device: bool,
    /// Whether it was revoked.
    pub revoked: bool,
}

impl From<DeviceView> for DeviceBody {
    fn from(d: DeviceView) -> Self {
        Self {
            peer_id: d.peer_id.to_base58(),
            name: d.name,
            permissions: d
                .permissions
                .names()
                .iter()
                .map(|n| (*n).to_owned())
                .collect(),
            added_at: d.added_at.to_rfc3339(),
            last_seen: d.last_seen.map(|t| t.to_rfc3339()),
            this_device: d.this_device,
            revoked: d.revoked_at.is_some(),
        }
    }
}

/// The user's devices.
#[derive(Serialize, ToSchema)]
pub struct DeviceList {
    /// This device first, then by when they joined.
    pub devices: Vec<DeviceBody>,
}

fn permissions(names: Option<Vec<String>>) -> Result<Permissions, ApiError> {
    let Some(names) = names else {
        return Ok(Permissions::MESSAGES
            .union(Permissions::CONTACTS)
            .union(Permissions::SETTINGS));
    };
    let mut out = Permissions::NONE;
    for name in names {
        let p = Permissions::from_name(&name).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_pairing",
                format!("unknown permission {name:?}: use messages, contacts, settings, admin"),
            )
        })?;
        out = out.union(p);
    }
    Ok(out)
}

/// Offers a pairing: a link (with its QR code) and a short code for a new device.
///
/// Valid for `ttl_secs` and one use. The new device joins with `POST /v1/pairing/join`; this
/// device then gets `pairing.request` and approves or rejects it. Only a device that holds
/// the user's signing key (`admin`) can offer pairings.
#[utoipa::path(post, path = "/v1/pairing", tag = "devices", security(("bearer" = [])),
    request_body = Option<NewPairing>,
    responses(
        (status = 201, description = "The pairing", body = PairingView),
        (status = 400, description = "Out-of-range options (`invalid_pairing`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "This device does not hold the user's signing key (`not_admin`)", body = ErrorBody),
    ))]
pub async fn create(
    State(devices): State<Devices>,
    OptionalJson(options): OptionalJson<NewPairing>,
) -> Result<(StatusCode, Json<PairingView>), ApiError> {
    let ttl = Duration::from_secs(options.ttl_secs.unwrap_or(900));
    let permissions = permissions(options.permissions)?;
    let offer = devices.create_pairing(ttl, permissions).await?;
    Ok((
        StatusCode::CREATED,
        Json(PairingView {
            qr_svg: qr_svg(&offer.link)?,
            id: offer.id,
            link: offer.link,
            code: offer.code,
            expires_at: offer.expires_at.to_rfc3339(),
            permissions: offer
                .permissions
                .names()
                .iter()
                .map(|n| (*n).to_owned())
                .collect(),
        }),
    ))
}

/// Joins a user as a new device, with a pairing link or code (on the new node).
///
/// Answers once the existing device is found and the code proven, with a check code to
/// compare with the one the existing device shows; when it is approved there, this node gets
/// `pairing.completed` and restarts as the user's device (`GET /v1/node` then shows the user
/// id it joined). A node that already has contacts or messages cannot join.
#[utoipa::path(post, path = "/v1/pairing/join", tag = "devices", security(("bearer" = [])),
    request_body = JoinPairing,
    responses(
        (status = 202, description = "Waiting for approval on the existing device", body = JoiningView),
        (status = 400, description = "A garbled link or code, or a wrong code (`invalid_pairing`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 409, description = "The pairing was used (`pairing_used`), or this node has contacts or messages (`node_not_empty`)", body = ErrorBody),
        (status = 410, description = "The pairing expired (`pairing_expired`)", body = ErrorBody),
        (status = 404, description = "No device waiting with that code could be found, or the link's device could not be reached (`device_not_found`)", body = ErrorBody),
    ))]
pub async fn join(
    State(devices): State<Devices>,
    State(node): State<crate::node::NodeInfo>,
    Json(body): Json<JoinPairing>,
) -> Result<(StatusCode, Json<JoiningView>), ApiError> {
    let with = match (body.link, body.code) {
        (Some(link), None) => JoinWith::Link(link),
        (None, Some(code)) => JoinWith::Code(code),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_pairing",
                "give either `link` or `code`",
            ));
        }
    };
    let name = body
        .device_name
        .unwrap_or_else(|| node.device_name().to_owned());
    if name.trim().is_empty() || name.len() > volli_core::cert::MAX_DEVICE_NAME_LEN {
        return Err(ApiError::bad_request(
            "invalid_pairing",
            "a device name is 1 to 64 bytes",
        ));
    }
    let joining = devices.join(with, name.trim()).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(JoiningView {
            id: joining.id,
            state: "waiting_approval",
            check_code: joining.check_code,
        }),
    ))
}

/// Requests to join this user, newest first (on the existing device).
#[utoipa::path(get, path = "/v1/pairing", tag = "devices", security(("bearer" = [])),
    responses(
        (status = 200, description = "The requests", body = PairingRequests),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn requests(State(devices): State<Devices>) -> Json<PairingRequests> {
    Json(PairingRequests {
        requests: devices
            .pairing_requests()
            .into_iter()
            .map(PairingRequestBody::from)
            .collect(),
    })
}

/// Approves a request to join: the new device gets its keys, certificate and vault.
#[utoipa::path(post, path = "/v1/pairing/{id}/approve", tag = "devices", security(("bearer" = [])),
    params(("id" = String, Path, description = "The pairing session id")),
    responses(
        (status = 200, description = "Approved", body = PairingRequestBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "This device does not hold the user's signing key (`not_admin`)", body = ErrorBody),
        (status = 404, description = "No such pairing (`unknown_pairing`)", body = ErrorBody),
        (status = 409, description = "Not waiting for a decision (`pairing_not_pending`)", body = ErrorBody),
        (status = 410, description = "Expired (`pairing_expired`)", body = ErrorBody),
    ))]
pub async fn approve(
    State(devices): State<Devices>,
    Path(id): Path<String>,
) -> Result<Json<PairingRequestBody>, ApiError> {
    Ok(Json(devices.decide(&id, true).await?.into()))
}

/// Rejects a request to join.
#[utoipa::path(post, path = "/v1/pairing/{id}/reject", tag = "devices", security(("bearer" = [])),
    params(("id" = String, Path, description = "The pairing session id")),
    responses(
        (status = 200, description = "Rejected", body = PairingRequestBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such pairing (`unknown_pairing`)", body = ErrorBody),
        (status = 409, description = "Not waiting for a decision (`pairing_not_pending`)", body = ErrorBody),
        (status = 410, description = "Expired (`pairing_expired`)", body = ErrorBody),
    ))]
pub async fn reject(
    State(devices): State<Devices>,
    Path(id): Path<String>,
) -> Result<Json<PairingRequestBody>, ApiError> {
    Ok(Json(devices.decide(&id, false).await?.into()))
}

/// The user's devices.
#[utoipa::path(get, path = "/v1/devices", tag = "devices", security(("bearer" = [])),
    responses(
        (status = 200, description = "The devices", body = DeviceList),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn list(State(devices): State<Devices>) -> Result<Json<DeviceList>, ApiError> {
    Ok(Json(DeviceList {
        devices: devices
            .list()
            .await?
            .into_iter()
            .map(DeviceBody::from)
            .collect(),
    }))
}

/// Revokes a device: it gets nothing new, its vault sync stops, and contacts learn it is no
/// longer the user's (a new contact card, and a new message key).
///
/// A revoked device keeps what it had: its copy of the vault and, if it was an `admin`
/// device, the user's signing key, which no revocation can take back.
#[utoipa::path(delete, path = "/v1/devices/{peer_id}", tag = "devices", security(("bearer" = [])),
    params(("peer_id" = String, Path, description = "The device's peer id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "Not a peer id (`invalid_peer_id`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "This device does not hold the user's signing key (`not_admin`)", body = ErrorBody),
        (status = 404, description = "No such device (`unknown_device`)", body = ErrorBody),
        (status = 409, description = "This device itself (`cannot_revoke_self`), or revoked already (`already_revoked`)", body = ErrorBody),
    ))]
pub async fn revoke(
    State(devices): State<Devices>,
    Path(peer_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let peer = peer_id
        .parse()
        .map_err(|_| ApiError::bad_request("invalid_peer_id", "not a peer id"))?;
    devices.revoke(peer).await?;
    Ok(StatusCode::NO_CONTENT)
}
