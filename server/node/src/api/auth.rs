//! Authentication: the admin bearer token on every `/v1/*` route, and short-lived single-use
//! tickets for browsers, which cannot set headers on a WebSocket.
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

/// The API's credentials. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    token: blake3::Hash,
    tickets: Mutex<HashMap<blake3::Hash, Instant>>,
}

impl Auth {
    /// Accepts `token` as the admin token.
    pub fn new(token: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                token: blake3::hash(token.as_bytes()),
                tickets: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Whether the request carries the admin token.
    pub fn is_authorized(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| blake3::hash(t.trim().as_bytes()) == self.inner.token)
    }

    /// A new single-use ticket for opening `/v1/events`.
    pub fn issue_ticket(&self) -> Result<String, ApiError> {
        let mut raw = [0u8; 24];
        getrandom::fill(&mut raw).map_err(ApiError::internal)?;
        let ticket = URL_SAFE_NO_PAD.encode(raw);
        let now = Instant::now();
        let mut tickets = self.lock();
        tickets.retain(|_, expires| *expires > now);
        if tickets.len() >= MAX_TICKETS {
            return Err(ApiError::rate_limited(TICKET_TTL.as_secs()));
        }
        tickets.insert(blake3::hash(ticket.as_bytes()), now + TICKET_TTL);
        Ok(ticket)
    }

    /// Consumes `ticket`; true if it was valid.
    pub fn redeem_ticket(&self, ticket: &str) -> bool {
        let now = Instant::now();
        self.lock()
            .remove(&blake3::hash(ticket.as_bytes()))
            .is_some_and(|expires| expires > now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<blake3::Hash, Instant>> {
        // A panic while holding this lock cannot leave the map inconsistent; keep going.
        self.inner.tickets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Middleware: `/v1/*` needs the bearer token; `/v1/events` also accepts `?ticket=`.
pub async fn require_auth(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if !path.starts_with("/v1/") && path != "/v1" {
        return next.run(request).await;
    }
    if auth.is_authorized(request.headers()) {
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
}
