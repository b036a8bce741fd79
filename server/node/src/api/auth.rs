//! Authentication: a bearer token on every `/v1/*` route — the admin token, an admin page
//! session or a client token ([`crate::clients`]) — short-lived single-use tickets for
//! browsers, which cannot set headers on a WebSocket, and the admin page's sessions: `volli
//! admin` asks for a one-time login code (10 minutes, one use), the page trades it for a
//! session token that works like the admin token for 12 hours, or until the page logs out or
//! the node restarts. Sessions live in memory only.
//!
//! The middleware puts the [`Caller`] into the request's extensions; the scope layer
//! ([`super::permissions`]) reads it. A ticket carries the caller that asked for it.
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
use crate::clients::{Caller, Clients};

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
    clients: Clients,
    tickets: Mutex<HashMap<blake3::Hash, (Instant, Caller)>>,
    login_codes: Mutex<HashMap<blake3::Hash, Instant>>,
    /// Admin page sessions: when each expires, and its end signal.
    sessions: Mutex<HashMap<blake3::Hash, (Instant, tokio::sync::watch::Sender<bool>)>>,
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
    /// Accepts `token` as the admin token, and the tokens of `clients`.
    pub fn new(token: &str, clients: Clients) -> Self {
        Self {
            inner: Arc::new(Inner {
                token: blake3::hash(token.as_bytes()),
                clients,
                tickets: Mutex::new(HashMap::new()),
                login_codes: Mutex::new(HashMap::new()),
                sessions: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The client tokens.
    pub fn clients(&self) -> &Clients {
        &self.inner.clients
    }

    /// Who the request's bearer token stands for: the admin token or a live admin page
    /// session (every scope), or a client; `None` without a valid token.
    pub fn caller(&self, headers: &HeaderMap) -> Option<Caller> {
        let token = bearer(headers)?;
        if let Some(client) = self.inner.clients.authenticate(token) {
            return Some(client);
        }
        let hash = blake3::hash(token.as_bytes());
        if hash == self.inner.token {
            return Some(Caller::admin());
        }
        lock(&self.inner.sessions)
            .get(&hash)
            .filter(|(expires, _)| *expires > Instant::now())
            .map(|(expires, ended)| Caller {
                session: Some((ended.subscribe(), expires.into_std())),
                ..Caller::admin()
            })
    }

    /// Whether the request carries a valid token.
    pub fn is_authorized(&self, headers: &HeaderMap) -> bool {
        self.caller(headers).is_some()
    }

    /// A new single-use ticket for opening `/v1/events` as `caller`.
    pub fn issue_ticket(&self, caller: Caller) -> Result<String, ApiError> {
        let (ticket, hash) = secret()?;
        let now = Instant::now();
        let mut tickets = lock(&self.inner.tickets);
        tickets.retain(|_, (expires, _)| *expires > now);
        if tickets.len() >= MAX_TICKETS {
            return Err(ApiError::rate_limited(TICKET_TTL.as_secs()));
        }
        tickets.insert(hash, (now + TICKET_TTL, caller));
        Ok(ticket)
    }

    /// Consumes `ticket`: the caller it was issued to, if it was valid (and that caller was
    /// not revoked since).
    pub fn redeem_ticket(&self, ticket: &str) -> Option<Caller> {
        let now = Instant::now();
        lock(&self.inner.tickets)
            .remove(&blake3::hash(ticket.as_bytes()))
            .filter(|(expires, caller)| *expires > now && caller.live())
            .map(|(_, caller)| caller)
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
        sessions.retain(|_, (expires, _)| *expires > now);
        if sessions.len() >= MAX_LOGINS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, (e, _))| *e)
                .map(|(h, _)| *h)
            && let Some((_, ended)) = sessions.remove(&oldest)
        {
            ended.send_replace(true);
        }
        sessions.insert(
            hash,
            (now + SESSION_TTL, tokio::sync::watch::channel(false).0),
        );
        Ok(Some(token))
    }

    /// Ends the session whose token the request carries (its event streams close); false
    /// if it carries none.
    pub fn end_session(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|t| {
            match lock(&self.inner.sessions).remove(&blake3::hash(t.as_bytes())) {
                Some((_, ended)) => {
                    ended.send_replace(true);
                    true
                }
                None => false,
            }
        })
    }
}

/// Where the admin page trades a login code for a session; the code is its credential.
pub const SESSION_PATH: &str = "/v1/admin/session";
/// Where a client trades a login code for its token; the code is its credential.
pub const CLIENT_LOGIN_PATH: &str = "/v1/clients/login";
/// The routes whose `POST` takes a one-time code instead of a token.
pub const CODE_PATHS: [&str; 2] = [SESSION_PATH, CLIENT_LOGIN_PATH];

/// Middleware: `/v1/*` needs a bearer token; `/v1/events` also accepts `?ticket=`, and
/// `POST /v1/admin/session` and `POST /v1/clients/login` take a login code instead.
pub async fn require_auth(State(auth): State<Auth>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if !path.starts_with("/v1/") && path != "/v1" {
        return next.run(request).await;
    }
    if let Some(caller) = auth.caller(request.headers()) {
        request.extensions_mut().insert(caller);
        return next.run(request).await;
    }
    if request.method() == axum::http::Method::POST && CODE_PATHS.contains(&path) {
        return next.run(request).await;
    }
    if path == "/v1/events" {
        let ticket = request
            .uri()
            .query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|pair| pair.strip_prefix("ticket="));
        if let Some(caller) = ticket.and_then(|t| auth.redeem_ticket(t)) {
            request.extensions_mut().insert(caller);
            return next.run(request).await;
        }
    }
    ApiError::unauthorized().into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// An `Auth` with admin token `token` and no clients (their database in `dir`).
    async fn auth(token: &str) -> (tempfile::TempDir, Auth) {
        let dir = tempfile::tempdir().unwrap();
        let db = volli_store::Db::open(&dir.path().join("volli.db"))
            .await
            .unwrap();
        let clients = Clients::load(db, crate::events::EventBus::new())
            .await
            .unwrap();
        (dir, Auth::new(token, clients))
    }

    #[tokio::test]
    async fn bearer_token_must_match_exactly() {
        let (_dir, auth) = auth("s3cret-token").await;
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

    #[tokio::test]
    async fn tickets_are_single_use_and_expire() {
        let (_dir, auth) = auth("t").await;
        // Paused after the database is open: its pool's timeouts must not jump ahead.
        tokio::time::pause();
        let t = auth.issue_ticket(Caller::admin()).unwrap();
        assert!(auth.redeem_ticket(&t).is_some());
        assert!(auth.redeem_ticket(&t).is_none(), "second use");
        let t = auth.issue_ticket(Caller::admin()).unwrap();
        tokio::time::advance(TICKET_TTL + Duration::from_millis(1)).await;
        assert!(auth.redeem_ticket(&t).is_none(), "expired");
        assert!(auth.redeem_ticket("made-up").is_none());
    }

    #[tokio::test]
    async fn a_revoked_clients_ticket_opens_nothing() {
        let (_dir, auth) = auth("t").await;
        let (info, token) = auth
            .clients()
            .create("phone", &["read".into()])
            .await
            .unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        let caller = auth.caller(&h).expect("the client's token");
        let t = auth.issue_ticket(caller).unwrap();
        assert!(auth.clients().revoke(&info.id).await.unwrap());
        assert!(auth.redeem_ticket(&t).is_none(), "revoked");
        assert!(auth.caller(&h).is_none());
    }

    #[tokio::test]
    async fn login_codes_work_once_and_sessions_expire_or_end() {
        let (_dir, auth) = auth("t").await;
        tokio::time::pause();
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
