//! Per-address token buckets for requests without a valid token (public routes, failed
//! logins). Authenticated requests are not counted here, so a flood from one address slows
//! that address down while the owner's clients carry on.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::auth::Auth;
use super::error::ApiError;

/// Addresses tracked at once; beyond this, idle (full) buckets are forgotten first.
const MAX_TRACKED: usize = 10_000;

/// A token bucket limiter per key (an address, a user). Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter<K = IpAddr> {
    burst: f64,
    per_second: f64,
    buckets: Arc<Mutex<HashMap<K, Bucket>>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl<K: std::hash::Hash + Eq + Copy> RateLimiter<K> {
    /// Allows `burst` requests at once and `per_second` sustained, per key.
    pub fn new(burst: u32, per_second: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_second.max(1)),
            buckets: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes one token for `ip`, or says how many seconds until one is available.
    pub fn check(&self, ip: K) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&ip) {
            let (burst, rate) = (self.burst, self.per_second);
            buckets.retain(|_, b| b.refilled(now, rate, burst) < burst);
            if buckets.len() >= MAX_TRACKED {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        bucket.tokens = bucket.refilled(now, self.per_second, self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.per_second;
            Err(wait.ceil() as u64)
        }
    }
}

impl Bucket {
    fn refilled(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        let elapsed = now.duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed * rate).min(burst)
    }
}

/// State for [`limit_unauthenticated`].
#[derive(Clone)]
pub struct Guard {
    /// Recognises the owner's requests, which are not limited here.
    pub auth: Auth,
    /// The buckets.
    pub limiter: RateLimiter,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill_per_address() {
        let limiter = RateLimiter::new(3, 1);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            limiter.check(a).unwrap();
        }
        assert_eq!(limiter.check(a), Err(1));
        limiter.check(b).unwrap();
        tokio::time::advance(Duration::from_millis(1100)).await;
        limiter.check(a).unwrap();
        assert!(limiter.check(a).is_err());
    }
}
