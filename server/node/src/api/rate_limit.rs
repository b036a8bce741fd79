//! Per-address token buckets for requests without a valid token (public routes, failed
//! logins). Authenticated requests are not counted here, so a flood from one address slows
//! that address down while the owner's clients carry on.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth::Auth;
use super::error::ApiError;
use crate::limits::RateLimiter;

/// State for [`limit_unauthenticated`].
#[derive(Clone)]
pub struct Guard {
    /// Recognises the owner's requests, which are not limited here.
    pub auth: Auth,
    /// The buckets.
    pub limiter: RateLimiter<IpAddr>,
}

/// Middleware: charges requests without a valid bearer token to their address's bucket.
pub async fn limit_unauthenticated(
    State(guard): State<Guard>,
    request: Request,
    next: Next,
) -> Response {
    if !guard.auth.is_authorized(request.headers()) {
        let ip = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        if let Err(retry_after) = guard.limiter.check(ip) {
            return ApiError::rate_limited(retry_after).into_response();
        }
    }
    next.run(request).await
}
