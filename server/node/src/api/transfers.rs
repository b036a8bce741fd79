//! `/v1/transfers`: send a file (a path on the node, or the bytes streamed as the body),
//! accept, decline, pause, resume, cancel, read what arrived (with `Range`), forget it.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use volli_core::transfer::TransferId;

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path, Query};
use crate::clients::{Caller, Scope, Scopes};
use crate::contacts::Contacts;
use crate::files::{FileError, Files, TransferView, Upload};

impl From<FileError> for ApiError {
    fn from(e: FileError) -> Self {
        let message = e.to_string();
        match e {
            FileError::UnknownContact(_) => ApiError::not_found("unknown_contact", message),
            FileError::InvalidPath(_) => ApiError::bad_request("invalid_path", message),
            FileError::PathNotAllowed(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "path_not_allowed", message)
            }
            FileError::InvalidName(_) => ApiError::bad_request("invalid_name", message),
            FileError::Invalid(_) => ApiError::bad_request("invalid_transfer", message),
            FileError::TooLarge => ApiError::bad_request("file_too_large", message),
            FileError::Unknown => ApiError::not_found("unknown_transfer", message),
            FileError::Conflict(code, _) => ApiError::new(StatusCode::CONFLICT, code, message),
            FileError::Quota(_) => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded", message)
            }
            FileError::Range(_) => {
                ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "invalid_range", message)
            }
            FileError::Backend(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "backend_unavailable",
                message,
            ),
            FileError::UnknownGroup => ApiError::not_found("unknown_group", message),
            FileError::RateLimited(secs) => ApiError::rate_limited(secs),
            FileError::Io(_) | FileError::Store(_) => ApiError::internal(message),
        }
    }
}

/// A transfer.
#[derive(Serialize, ToSchema)]
#[schema(as = Transfer)]
pub struct TransferBody {
    /// Its id (32 hex digits).
    pub id: String,
    /// `outgoing` or `incoming`.
    #[schema(example = "outgoing")]
    pub direction: &'static str,
    /// The other side's user id (this user's own for a transfer between its devices); for
    /// a file this user offered to a group, the group's id.
    pub peer: String,
    /// The file's name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Bytes stored (incoming) or sent (outgoing) so far.
    pub bytes_done: u64,
    /// `offered`, `running`, `paused`, `completed`, `declined`, `cancelled` or `failed`.
    #[schema(example = "running")]
    pub state: &'static str,
    /// Who paused it, when `paused`: `here`, `there` or `both`.
    pub paused_by: Option<&'static str>,
    /// The BLAKE3 hash of the file's content (hex), from the signed offer.
    pub blake3: String,
    /// Why it failed, when `failed`.
    pub error: Option<String>,
    /// When it was offered (RFC 3339).
    pub created_at: String,
    /// Until when the sender keeps the file (RFC 3339).
    pub expires_at: String,
    /// The group the file was offered to, when it was.
    pub group: Option<String>,
    /// For a file this user offered to a group: each member that fetches it from this node
    /// (members who do not know this user fetch it from one who does, and are not listed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<TransferMemberBody>>,
    /// The user ids of friends holding the file for an offline recipient (files through
    /// friends): on the sender, those that have it whole; on the recipient, those it may
    /// fetch it from.
    pub via: Vec<String>,
}

/// How far one member got with a file offered to a group.
#[derive(Serialize, ToSchema)]
pub struct TransferMemberBody {
    /// The member's user id.
    pub user_id: String,
    /// `offered`, `running`, `completed`, `declined` or `cancelled`.
    #[schema(example = "running")]
    pub state: String,
    /// Bytes it fetched so far.
    pub bytes_done: u64,
}

impl From<TransferView> for TransferBody {
    fn from(v: TransferView) -> Self {
        Self {
            id: v.id.to_string(),
            direction: if v.outgoing { "outgoing" } else { "incoming" },
            peer: v.peer,
            name: v.name,
            size: v.size,
            bytes_done: v.bytes_done,
            state: v.state,
            paused_by: v.paused_by,
            blake3: v.blake3,
            error: v.error,
            created_at: v.created_at.to_rfc3339(),
            expires_at: v.expires_at.to_rfc3339(),
            group: v.group,
            members: v.members.map(|m| {
                m.into_iter()
                    .map(|m| TransferMemberBody {
                        user_id: m.user_id,
                        state: m.state,
                        bytes_done: m.bytes_done,
                    })
                    .collect()
            }),
            via: v.via,
        }
    }
}

/// Transfers, newest first.
#[derive(Serialize, ToSchema)]
pub struct TransferList {
    /// Newest first.
    pub transfers: Vec<TransferBody>,
}

/// Sending a file that is on the node.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendFile {
    /// The recipient: a contact's user id, or this user's own (to its other devices).
    pub to: Option<String>,
    /// Or a group this user is in: every member is offered the file.
    pub group: Option<String>,
    /// The file's absolute path on the node.
    pub path: String,
}

/// Where a streamed file goes.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// The recipient (with a streamed body).
    pub to: Option<String>,
    /// Or the group (with a streamed body).
    pub group: Option<String>,
    /// The file's name (with a streamed body).
    pub name: Option<String>,
    /// Its media type (`image/png`…), shown in the conversation (with a streamed body; by
    /// default guessed from the name).
    pub mime: Option<String>,
    /// A small picture of it for the conversation: a `data:image/png|jpeg|webp;base64,…` URL
    /// of at most 16 KiB, made by the client (with a streamed body).
    pub thumbnail: Option<String>,
}

/// A file's bytes (a type for the OpenAPI document only: the handler streams the body).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct FileBytes(#[allow(dead_code)] Vec<u8>);

fn user(text: &str) -> Result<volli_core::UserId, ApiError> {
    Contacts::parse_user(text)
        .ok_or_else(|| ApiError::bad_request("invalid_user_id", "not a user id"))
}

/// Who a file is sent to.
enum Recipient {
    User(volli_core::UserId),
    Group(volli_mls::GroupRef),
}

/// Exactly one of `to` and `group`.
fn recipient(to: Option<&str>, group: Option<&str>) -> Result<Recipient, ApiError> {
    match (to, group) {
        (Some(to), None) => Ok(Recipient::User(user(to)?)),
        (None, Some(group)) => crate::conversations::parse_group(group)
            .map(Recipient::Group)
            .ok_or_else(|| ApiError::not_found("unknown_group", "no such group")),
        _ => Err(ApiError::bad_request(
            "invalid_transfer",
            "name exactly one of `to` (a user) and `group`",
        )),
    }
}

fn transfer_id(text: &str) -> Result<TransferId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::not_found("unknown_transfer", "no such transfer"))
}

/// Largest JSON body of `POST /v1/transfers`.
const MAX_JSON: usize = 16 << 10;

/// Sends a file to a contact (or to this user's other devices), or to a group.
///
/// Either a JSON body naming a file on the node (`{"to", "path"}`, or `{"group", "path"}`),
/// or the file's bytes as the body (`Content-Type: application/octet-stream`, with
/// `?to=&name=` or `?group=&name=`), streamed to the
/// file backend as they arrive — the node never holds the file in memory. The file is
/// encrypted with a new key, cut into chunks named by their hash, and offered to the
/// recipient, who gets `transfer.offered`. Follow it with `transfer.*` events.
#[utoipa::path(post, path = "/v1/transfers", tag = "transfers", security(("bearer" = [])),
    params(UploadQuery),
    request_body(content((SendFile = "application/json"), (FileBytes = "application/octet-stream")),
        description = "A file on the node, or the file itself"),
    responses(
        (status = 201, description = "Offered", body = TransferBody),
        (status = 400, description = "Not a user id (`invalid_user_id`), a missing or unreadable path (`invalid_path`), an unusable name (`invalid_name`), a file over 64 GiB (`file_too_large`), or a bad request (`invalid_transfer`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "A path outside `[files] upload_dirs` from a client token, or in the node's data directory (`path_not_allowed`)", body = ErrorBody),
        (status = 404, description = "Not a contact (`unknown_contact`), or no such group (`unknown_group`)", body = ErrorBody),
        (status = 409, description = "This user has no other device (`no_other_device`), or this device may not send (`not_allowed`)", body = ErrorBody),
        (status = 415, description = "Neither JSON nor `application/octet-stream`", body = ErrorBody),
        (status = 429, description = "Too many messages to the group at once (`rate_limited`)", body = ErrorBody),
        (status = 503, description = "The file backend is not available (`backend_unavailable`)", body = ErrorBody),
        (status = 507, description = "Transfers would exceed the storage quota (`quota_exceeded`)", body = ErrorBody),
    ))]
pub async fn send(
    State(files): State<Files>,
    Query(query): Query<UploadQuery>,
    request: Request,
) -> Result<(StatusCode, Json<TransferBody>), ApiError> {
    let scopes = request
        .extensions()
        .get::<Caller>()
        .map_or(Scopes::default(), |c| c.scopes);
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let view = match content_type.as_str() {
        "application/json" => {
            if query.to.is_some()
                || query.group.is_some()
                || query.name.is_some()
                || query.mime.is_some()
                || query.thumbnail.is_some()
            {
                return Err(ApiError::bad_request(
                    "invalid_transfer",
                    "with a JSON body, give `to` or `group` in the body, not in the query",
                ));
            }
            let bytes = axum::body::to_bytes(request.into_body(), MAX_JSON)
                .await
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "request body too large",
                    )
                })?;
            let body: SendFile = super::extract::object(&bytes)?;
            // Checked before the path is looked at: a client token learns nothing of the
            // node's files outside the directories it may send from.
            let admin = scopes.allows(Scope::Admin);
            files.may_send_path(&body.path, admin)?;
            match recipient(body.to.as_deref(), body.group.as_deref())? {
                Recipient::User(to) => files.send_path(to, &body.path, admin).await?,
                Recipient::Group(group) => {
                    files.send_path_to_group(group, &body.path, admin).await?
                }
            }
        }
        "application/octet-stream" => {
            let Some(name) = query.name else {
                return Err(ApiError::bad_request(
                    "invalid_transfer",
                    "a streamed file needs `?to=USER_ID&name=FILE_NAME` (or `?group=ID&name=…`)",
                ));
            };
            let to = recipient(query.to.as_deref(), query.group.as_deref())?;
            let len = request
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let body = request
                .into_body()
                .into_data_stream()
                .map(|r| r.map_err(|e| e.to_string()));
            let meta = crate::files::FileMeta::given(
                &name,
                query.mime.as_deref(),
                query.thumbnail.as_deref(),
            )?;
            let upload = Upload {
                name,
                len,
                body: Box::pin(body),
                meta: Some(meta),
            };
            match to {
                Recipient::User(to) => files.send_upload(to, upload).await?,
                Recipient::Group(group) => files.send_upload_to_group(group, upload).await?,
            }
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send JSON `{\"to\", \"path\"}` or the file as `application/octet-stream`",
            ));
        }
    };
    Ok((StatusCode::CREATED, Json(view.into())))
}

/// Every transfer, both directions, newest first.
#[utoipa::path(get, path = "/v1/transfers", tag = "transfers", security(("bearer" = [])),
    responses(
        (status = 200, description = "The transfers", body = TransferList),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn list(State(files): State<Files>) -> Result<Json<TransferList>, ApiError> {
    Ok(Json(TransferList {
        transfers: files.list().await?.into_iter().map(Into::into).collect(),
    }))
}

/// Which finished transfers to forget.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ClearQuery {
    /// Comma-separated states among `completed`, `declined`, `cancelled`, `failed`; all
    /// four when absent.
    pub state: Option<String>,
}

/// How many transfers went.
#[derive(Serialize, ToSchema)]
pub struct Cleared {
    /// Transfers forgotten.
    pub deleted: usize,
}

/// Forgets every finished transfer (or those in the states given); received files' content
/// goes with them. Transfers still under way are left alone.
#[utoipa::path(delete, path = "/v1/transfers", tag = "transfers", security(("bearer" = [])),
    params(ClearQuery),
    responses(
        (status = 200, description = "Forgotten", body = Cleared),
        (status = 400, description = "Not a finished state (`invalid_transfer`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn clear(
    State(files): State<Files>,
    Query(query): Query<ClearQuery>,
) -> Result<Json<Cleared>, ApiError> {
    let states: Vec<&str> = match &query.state {
        Some(list) => list.split(',').map(str::trim).collect(),
        None => vec!["completed", "declined", "cancelled", "failed"],
    };
    Ok(Json(Cleared {
        deleted: files.delete_finished(&states).await?,
    }))
}

/// One transfer.
#[utoipa::path(get, path = "/v1/transfers/{id}", tag = "transfers", security(("bearer" = [])),
    params(("id" = String, Path, description = "The transfer id")),
    responses(
        (status = 200, description = "The transfer", body = TransferBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such transfer (`unknown_transfer`)", body = ErrorBody),
    ))]
pub async fn get(
    State(files): State<Files>,
    Path(id): Path<String>,
) -> Result<Json<TransferBody>, ApiError> {
    Ok(Json(files.get(transfer_id(&id)?).await?.into()))
}

/// Forgets a finished transfer; a received file's content is removed with it.
#[utoipa::path(delete, path = "/v1/transfers/{id}", tag = "transfers", security(("bearer" = [])),
    params(("id" = String, Path, description = "The transfer id")),
    responses(
        (status = 204, description = "Forgotten"),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such transfer (`unknown_transfer`)", body = ErrorBody),
        (status = 409, description = "Not finished: cancel it first (`transfer_active`)", body = ErrorBody),
    ))]
pub async fn delete(
    State(files): State<Files>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    files.delete(transfer_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

macro_rules! action {
    ($name:ident, $path:literal, $doc:literal, $conflict:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "transfers", security(("bearer" = [])),
            params(("id" = String, Path, description = "The transfer id")),
            responses(
                (status = 200, description = "The transfer", body = TransferBody),
                (status = 401, description = "Missing or wrong token", body = ErrorBody),
                (status = 404, description = "No such transfer (`unknown_transfer`)", body = ErrorBody),
                (status = 409, description = $conflict, body = ErrorBody),
                (status = 503, description = "The file backend is not available (`backend_unavailable`)", body = ErrorBody),
                (status = 507, description = "Accepting would exceed the storage quota (`quota_exceeded`)", body = ErrorBody),
            ))]
        pub async fn $name(
            State(files): State<Files>,
            Path(id): Path<String>,
        ) -> Result<Json<TransferBody>, ApiError> {
            Ok(Json(files.$name(transfer_id(&id)?).await?.into()))
        }
    };
}

action!(
    accept,
    "/v1/transfers/{id}/accept",
    "Accepts an offered file: the download starts.",
    "Not an incoming transfer (`not_incoming`), or not waiting for a decision (`not_offered`)"
);
action!(
    decline,
    "/v1/transfers/{id}/decline",
    "Declines an offered file.",
    "Not an incoming transfer (`not_incoming`), or not waiting for a decision (`not_offered`)"
);
action!(
    pause,
    "/v1/transfers/{id}/pause",
    "Pauses a running transfer (either side); the other side sees `paused`.",
    "Not running (`not_running`)"
);
action!(
    resume,
    "/v1/transfers/{id}/resume",
    "Resumes a transfer this side paused.",
    "Finished (`transfer_finished`), or not paused by this side (`not_paused`)"
);
action!(
    cancel,
    "/v1/transfers/{id}/cancel",
    "Cancels a transfer (either side); what was stored of it is removed.",
    "Finished already (`transfer_finished`)"
);

/// The received file's bytes.
///
/// Only once the transfer is `completed`. Supports one `Range` (`bytes=a-b`, `bytes=a-`,
/// `bytes=-n`); the file is decrypted as it is read.
#[utoipa::path(get, path = "/v1/transfers/{id}/content", tag = "transfers", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The transfer id"),
        ("Range" = Option<String>, Header, description = "One byte range, e.g. `bytes=0-1023`"),
    ),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream", body = FileBytes),
        (status = 206, description = "The range asked for", content_type = "application/octet-stream", body = FileBytes),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such transfer (`unknown_transfer`)", body = ErrorBody),
        (status = 409, description = "Not a completely received file (`not_completed`)", body = ErrorBody),
        (status = 416, description = "The range is outside the file (`invalid_range`)", body = ErrorBody),
        (status = 503, description = "The file backend is not available (`backend_unavailable`)", body = ErrorBody),
    ))]
pub async fn content(
    State(files): State<Files>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let content = files.content(transfer_id(&id)?, range).await?;
    let mut response = Body::from_stream(content.body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(content.len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", content.blake3)) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&content_disposition(&content.name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some((first, last)) = content.range {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{}", content.size)) {
            h.insert(header::CONTENT_RANGE, v);
        }
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(response)
}

/// `attachment` with the name percent-encoded (RFC 6266 / 8187).
fn content_disposition(name: &str) -> String {
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename*=UTF-8''{encoded}")
}
