//! Authentication: the admin bearer token on every `/v1/*` route, short-lived single-use
//! tickets for browsers, which cannot set headers on a WebSocket, and the admin page's
//! sessions: `volli admin` asks for a one-time login code (10 minutes, one use), the page
//! trades it for a session token that works like the admin token for 12 hours, or until the
//! page logs out or the node restarts. Sessions live in memory only.
//!
//! Tokens are compared through their BLAKE3 hashes, whose equality check runs in constant time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::time::Instant;

use super::error::ApiError;

/// How long an events ticket stays valid.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Tickets outstanding at once; more is refused with 429 until some expire or are used.
const MAX_TICKETS: usize = 256;
/// How long a login code from `volli admin` stays valid.
pub const LOGIN_CODE_TTL: Duration = Duration::from_secs(600);
/// How long an admin page session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Login codes or sessions at once; the oldest session gives way to a new one.
const MAX_LOGINS: usize = 64;

/// The API's credentials. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    token: blake3::Hash,
    tickets: Mutex<HashMap<blake3::Hash, Instant>>,
    login_codes: Mutex<HashMap<blake3::Hash, Instant>>,
    sessions: Mutex<HashMap<blake3::Hash, Instant>>,
}

/// A random URL-safe secret and the hash it is kept under.
fn secret() -> Result<(String, blake3::Hash), ApiError> {
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw).map_err(ApiError::internal)?;
    let text = URL_SAFE_NO_PAD.encode(raw);
    let hash = blake3::hash(text.as_bytes());
    Ok((text, hash))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave a map inconsistent; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

impl Auth {
    /// Accepts `token` as the admin token.
    pub fn new(token: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                token: blake3::hash(token.as_bytes()),
                tickets: Mutex::new(HashMap::new()),
                login_codes: Mutex::new(HashMap::new()),
                sessions: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Whether the request carries the admin token or a live admin page session.
    pub fn is_authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = bearer(headers) else {
            return false;
        };
        let hash = blake3::hash(token.as_bytes());
        hash == self.inner.token
            || lock(&self.inner.sessions)
                .get(&hash)
                .is_some_and(|expires| *expires > Instant::now())
    }

    /// A new single-use ticket for opening `/v1/events`.
    pub fn issue_ticket(&self) -> Result<String, ApiError> {
        let (ticket, hash) = secret()?;
        let now = Instant::now();
        let mut tickets = lock(&self.inner.tickets);
        tickets.retain(|_, expires| *expires > now);
        if tickets.len() >= MAX_TICKETS {
            return Err(ApiError::rate_limited(TICKET_TTL.as_secs()));
        }
        tickets.insert(hash, now + TICKET_TTL);
        Ok(ticket)
    }

    /// Consumes `ticket`; true if it was valid.
    pub fn redeem_ticket(&self, ticket: &str) -> bool {
        let now = Instant::now();
        lock(&self.inner.tickets)
            .remove(&blake3::hash(ticket.as_bytes()))
            .is_some_and(|expires| expires > now)
    }

    /// A new one-time login code for the admin page.
    pub fn issue_login_code(&self) -> Result<String, ApiError> {
        let (code, hash) = secret()?;
        let now = Instant::now();
        let mut codes = lock(&self.inner.login_codes);
        codes.retain(|_, expires| *expires > now);
        if codes.len() >= MAX_LOGINS {
            return Err(ApiError::rate_limited(60));
        }
        codes.insert(hash, now + LOGIN_CODE_TTL);
        Ok(code)
    }

    /// Trades a login code (once) for a session token; `None` if the code is not valid.
    pub fn start_session(&self, code: &str) -> Result<Option<String>, ApiError> {
        let now = Instant::now();
        let valid = lock(&self.inner.login_codes)
            .remove(&blake3::hash(code.as_bytes()))
            .is_some_and(|expires| expires > now);
        if !valid {
            return Ok(None);
        }
        let (token, hash) = secret()?;
        let mut sessions = lock(&self.inner.sessions);
        sessions.retain(|_, expires| *expires > now);
        if sessions.len() >= MAX_LOGINS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, e)| **e).map(|(h, _)| *h)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(hash, now + SESSION_TTL);
        Ok(Some(token))
    }

    /// Ends the session whose token the request carries; false if it carries none.
    pub fn end_session(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|t| {
            lock(&self.inner.sessions)
                .remove(&blake3::hash(t.as_bytes()))
                .is_some()
        })
    }
}

/// Where the admin page trades a login code for a session; the code is its credential.
pub const SESSION_PATH: &str = "/v1/admin/session";

/// Middleware: `/v1/*` needs the bearer token; `/v1/events` also accepts `?ticket=`, and
/// `POST /v1/admin/session` takes a login code instead.
pub async fn require_auth(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if !path.starts_with("/v1/") && path != "/v1" {
        return next.run(request).await;
    }
    if auth.is_authorized(request.headers())
        || (path == SESSION_PATH && request.method() == axum::http::Method::POST)
    {
        return next.run(request).await;
    }
    if path == "/v1/events" {
        let ticket = request
            .uri()
            .query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|pair| pair.strip_prefix("ticket="));
        if ticket.is_some_and(|t| auth.redeem_ticket(t)) {
            return next.run(request).await;
        }
    }
    ApiError::unauthorized().into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_token_must_match_exactly() {
        let auth = Auth::new("s3cret-token");
        let mut h = HeaderMap::new();
        assert!(!auth.is_authorized(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret-token"),
        );
        assert!(auth.is_authorized(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret-tokeN"),
        );
        assert!(!auth.is_authorized(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("s3cret-token"),
        );
        assert!(!auth.is_authorized(&h));
    }

    #[tokio::test(start_paused = true)]
    async fn tickets_are_single_use_and_expire() {
        let auth = Auth::new("t");
        let t = auth.issue_ticket().unwrap();
        assert!(auth.redeem_ticket(&t));
        assert!(!auth.redeem_ticket(&t), "second use");
        let t = auth.issue_ticket().unwrap();
        tokio::time::advance(TICKET_TTL + Duration::from_millis(1)).await;
        assert!(!auth.redeem_ticket(&t), "expired");
        assert!(!auth.redeem_ticket("made-up"));
    }

    #[tokio::test(start_paused = true)]
    async fn login_codes_work_once_and_sessions_expire_or_end() {
        let auth = Auth::new("t");
        let code = auth.issue_login_code().unwrap();
        let token = auth.start_session(&code).unwrap().expect("a valid code");
        assert!(auth.start_session(&code).unwrap().is_none(), "second use");
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        assert!(auth.is_authorized(&h));
        assert!(auth.end_session(&h));
        assert!(!auth.is_authorized(&h), "logged out");

        let token = auth
            .start_session(&auth.issue_login_code().unwrap())
            .unwrap()
            .unwrap();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        tokio::time::advance(SESSION_TTL + Duration::from_millis(1)).await;
        assert!(!auth.is_authorized(&h), "expired");

        let code = auth.issue_login_code().unwrap();
        tokio::time::advance(LOGIN_CODE_TTL + Duration::from_millis(1)).await;
        assert!(auth.start_session(&code).unwrap().is_none(), "expired code");
    }
}
