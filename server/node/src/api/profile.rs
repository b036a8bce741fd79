//! `/v1/profile`: the user's display name and picture, as contacts see them; and
//! `/v1/contacts/{user_id}/avatar`, a contact's picture.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use volli_store::avatars::{Avatar, MAX_AVATAR_BYTES};

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path};
use crate::contacts::Contacts;
use crate::profile::{Profile, ProfileError, ProfileView};

/// Largest body the picture route reads: more than a picture may be, so that one too large
/// gets a clear 400.
pub const MAX_UPLOAD: usize = MAX_AVATAR_BYTES + 64 * 1024;

/// The user's profile.
#[derive(Serialize, ToSchema)]
#[schema(as = Profile)]
pub struct ProfileBody {
    /// The display name contacts see (this device's name until one is set).
    pub name: String,
    /// Whether the user has a picture (`GET /v1/profile/avatar`).
    pub avatar: bool,
}

impl From<ProfileView> for ProfileBody {
    fn from(v: ProfileView) -> Self {
        Self {
            name: v.name,
            avatar: v.avatar,
        }
    }
}

/// A new display name.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetName {
    /// 1 to 64 bytes (after trimming), no control characters.
    pub name: String,
}

/// A picture's bytes (a type for the OpenAPI document only).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct ImageBytes(#[allow(dead_code)] Vec<u8>);

impl From<ProfileError> for ApiError {
    fn from(e: ProfileError) -> Self {
        match e {
            ProfileError::InvalidName(_) => ApiError::bad_request("invalid_name", e.to_string()),
            ProfileError::NotAnImage => ApiError::bad_request("invalid_image", e.to_string()),
            ProfileError::TooLarge => ApiError::bad_request("avatar_too_large", e.to_string()),
            ProfileError::Store(_) => ApiError::internal(e),
        }
    }
}

/// The user's display name and whether it has a picture.
#[utoipa::path(get, path = "/v1/profile", tag = "profile", security(("bearer" = [])),
    responses(
        (status = 200, description = "The profile", body = ProfileBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn get(State(profile): State<Profile>) -> Result<Json<ProfileBody>, ApiError> {
    Ok(Json(profile.view().await?.into()))
}

/// Sets the display name.
///
/// It is kept in the vault (every device of the user has it) and reaches contacts in the
/// user's signed contact card, sent again to those connected now and to the others when they
/// connect. `profile.changed` follows.
#[utoipa::path(put, path = "/v1/profile", tag = "profile", security(("bearer" = [])),
    request_body = SetName,
    responses(
        (status = 200, description = "The profile", body = ProfileBody),
        (status = 400, description = "An empty, too long or otherwise bad name (`invalid_name`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn put(
    State(profile): State<Profile>,
    Json(body): Json<SetName>,
) -> Result<Json<ProfileBody>, ApiError> {
    Ok(Json(profile.set_name(&body.name).await?.into()))
}

fn image(avatar: Avatar) -> Response {
    let mut response = avatar.bytes.into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&avatar.mime) {
        h.insert(header::CONTENT_TYPE, v);
    }
    // The type was checked from the bytes; browsers must not guess another.
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let etag: String = avatar.hash.iter().map(|b| format!("{b:02x}")).collect();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        h.insert(header::ETAG, v);
    }
    response
}

fn no_avatar() -> ApiError {
    ApiError::not_found("no_avatar", "no picture")
}

/// The user's picture.
#[utoipa::path(get, path = "/v1/profile/avatar", tag = "profile", security(("bearer" = [])),
    responses(
        (status = 200, description = "The picture", content(
            (ImageBytes = "image/png"), (ImageBytes = "image/jpeg"), (ImageBytes = "image/webp"))),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No picture, or not on this device yet (`no_avatar`)", body = ErrorBody),
    ))]
pub async fn get_avatar(State(profile): State<Profile>) -> Result<Response, ApiError> {
    Ok(image(profile.avatar().await?.ok_or_else(no_avatar)?))
}

/// Sets the user's picture: a PNG, JPEG or WebP image of at most 256 KiB, recognised by its
/// bytes (the `Content-Type` sent is not trusted). The user's other devices and the contacts
/// fetch it from this device; `profile.changed` follows.
#[utoipa::path(put, path = "/v1/profile/avatar", tag = "profile", security(("bearer" = [])),
    request_body(content(
        (ImageBytes = "image/png"), (ImageBytes = "image/jpeg"), (ImageBytes = "image/webp"))),
    responses(
        (status = 204, description = "Saved"),
        (status = 400, description = "Not a PNG, JPEG or WebP image (`invalid_image`), or larger than 256 KiB (`avatar_too_large`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn put_avatar(
    State(profile): State<Profile>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    profile.set_avatar(&body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes the user's picture.
#[utoipa::path(delete, path = "/v1/profile/avatar", tag = "profile", security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed (or there was none)"),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn delete_avatar(State(profile): State<Profile>) -> Result<StatusCode, ApiError> {
    profile.delete_avatar().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A contact's picture, as fetched from their devices (again whenever they say it changed).
#[utoipa::path(get, path = "/v1/contacts/{user_id}/avatar", tag = "contacts", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "The contact's user id")),
    responses(
        (status = 200, description = "The picture", content(
            (ImageBytes = "image/png"), (ImageBytes = "image/jpeg"), (ImageBytes = "image/webp"))),
        (status = 400, description = "Not a user id (`invalid_user_id`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "Not a contact (`unknown_contact`), or no picture of theirs here (`no_avatar`)", body = ErrorBody),
    ))]
pub async fn contact_avatar(
    State(profile): State<Profile>,
    State(contacts): State<Contacts>,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    let user = Contacts::parse_user(&user_id)
        .ok_or_else(|| ApiError::bad_request("invalid_user_id", "not a user id"))?;
    contacts.get(user).await?;
    Ok(image(
        profile.contact_avatar(user).await?.ok_or_else(no_avatar)?,
    ))
}
