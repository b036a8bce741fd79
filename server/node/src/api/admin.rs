//! The admin page: `GET /admin` serves the page built from `web-admin/` (embedded in the
//! binary, nothing loaded from elsewhere), and its login: `POST /v1/admin/login-codes` (what
//! `volli admin` calls) and `POST`/`DELETE /v1/admin/session`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Auth, LOGIN_CODE_TTL, SESSION_TTL};
use super::error::{ApiError, ErrorBody};
use super::extract::Json;

/// A one-time login code for the admin page.
#[derive(Serialize, ToSchema)]
pub struct LoginCode {
    /// The code; valid once, for 10 minutes.
    pub code: String,
    /// The page's path with the code in its fragment (which browsers never send to a
    /// server): append it to the node's address.
    #[schema(example = "/admin#code=…")]
    pub path: String,
    /// When the code stops working (RFC 3339).
    pub expires_at: String,
}

/// Creates a one-time login code for the admin page (`volli admin` prints it as a URL).
#[utoipa::path(post, path = "/v1/admin/login-codes", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 201, description = "A new code", body = LoginCode),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 429, description = "Too many unused codes (`rate_limited`)", body = ErrorBody),
    ))]
pub async fn login_code(
    State(auth): State<Auth>,
) -> Result<(StatusCode, Json<LoginCode>), ApiError> {
    let code = auth.issue_login_code()?;
    let expires_at = volli_core::Timestamp::now()
        .saturating_add(LOGIN_CODE_TTL)
        .to_rfc3339();
    let path = format!("/admin#code={code}");
    Ok((
        StatusCode::CREATED,
        Json(LoginCode {
            code,
            path,
            expires_at,
        }),
    ))
}

/// A login code to trade for a session.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    /// The code from `POST /v1/admin/login-codes`.
    #[schema(max_length = 128)]
    pub code: String,
}

/// An admin page session.
#[derive(Serialize, ToSchema)]
pub struct Session {
    /// A bearer token that works like the admin token until `expires_at` or logout.
    pub token: String,
    /// When the session ends (RFC 3339).
    pub expires_at: String,
}

/// Trades a one-time login code for a session token. Needs no token: the code is the
/// credential.
#[utoipa::path(post, path = "/v1/admin/session", tag = "admin",
    request_body = NewSession,
    responses(
        (status = 201, description = "The session", body = Session),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "The code is wrong, used or expired (`invalid_login_code`)", body = ErrorBody),
    ))]
pub async fn start_session(
    State(auth): State<Auth>,
    Json(body): Json<NewSession>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    let Some(token) = auth.start_session(body.code.trim())? else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_login_code",
            "this login link is wrong, was already used or has expired; run `volli admin` for a new one",
        ));
    };
    let expires_at = volli_core::Timestamp::now()
        .saturating_add(SESSION_TTL)
        .to_rfc3339();
    Ok((StatusCode::CREATED, Json(Session { token, expires_at })))
}

/// Ends the session whose token the request carries (logging out); the admin token itself
/// is not affected.
#[utoipa::path(delete, path = "/v1/admin/session", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn end_session(State(auth): State<Auth>, headers: HeaderMap) -> StatusCode {
    auth.end_session(&headers);
    StatusCode::NO_CONTENT
}

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// Scripts and styles only from the node itself, no inline script, no framing, no referrer;
/// images may be data or blob URLs (avatars and pictures the app shows from memory).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; \
     manifest-src 'self'; worker-src 'self'; font-src 'none'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /`, `GET /admin` and `GET /admin/`: the app.
pub async fn page() -> Response {
    file_named("index.html")
}

/// `GET /{file}` and `GET /admin/{file}`: its scripts, styles, icons, manifest and service
/// worker.
pub async fn file(Path(name): Path<String>) -> Response {
    file_named(&name)
}

fn file_named(name: &str) -> Response {
    let body: std::borrow::Cow<'static, [u8]> = match from_dir(name) {
        Some(bytes) => bytes.into(),
        None => match embedded::ASSETS.iter().find(|(n, _)| *n == name) {
            Some((_, body)) => (*body).into(),
            None => {
                return ApiError::not_found("not_found", "no such route").into_response();
            }
        },
    };
    let extension = name.rsplit('.').next().unwrap_or_default();
    let content_type = match extension {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "webmanifest" => "application/manifest+json",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        _ => "application/octet-stream",
    };
    asset(body, content_type, "no-cache")
}

/// While the app is being worked on, `VOLLI_WEB_DIR` names a directory (its `dist/`) to
/// serve it from instead of the copy built into the binary: a change is one reload away.
fn from_dir(name: &str) -> Option<Vec<u8>> {
    static DIR: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| std::env::var_os("VOLLI_WEB_DIR").map(Into::into));
    let dir = dir.as_ref()?;
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return None;
    }
    std::fs::read(dir.join(name)).ok()
}

fn asset(
    body: impl Into<std::borrow::Cow<'static, [u8]>>,
    content_type: &'static str,
    cache: &'static str,
) -> Response {
    let mut response = match body.into() {
        std::borrow::Cow::Borrowed(b) => b.into_response(),
        std::borrow::Cow::Owned(b) => b.into_response(),
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        // The app scans QR codes (an invite, a login) with the camera.
        HeaderValue::from_static("camera=(self), microphone=(), geolocation=()"),
    );
    response
}
