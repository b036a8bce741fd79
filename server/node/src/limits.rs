//! The crate's one token bucket ([`RateLimiter`]) and one backoff rule ([`backoff`]), for
//! every service that limits or retries something.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Addresses tracked at once; beyond this, idle (full) buckets are forgotten first.
const MAX_TRACKED: usize = 10_000;

/// A token bucket limiter per key (an address, a user). Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter<K> {
    burst: f64,
    per_second: f64,
    buckets: Arc<Mutex<HashMap<K, Bucket>>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl<K: Hash + Eq + Copy> RateLimiter<K> {
    /// Allows `burst` requests at once and `per_second` sustained, per key.
    pub fn new(burst: u32, per_second: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_second.max(1)),
            buckets: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Allows `burst` requests at once and `per_minute` a minute sustained, per key.
    pub fn per_minute(burst: u32, per_minute: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_minute.max(1)) / 60.0,
            buckets: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes one token for `key`, or says how many seconds until one is available.
    pub fn check(&self, key: K) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&key) {
            let (burst, rate) = (self.burst, self.per_second);
            buckets.retain(|_, b| b.refilled(now, rate, burst) < burst);
            if buckets.len() >= MAX_TRACKED {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
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

/// The wait before attempt `attempts + 1`: `first`, doubling per attempt, at most `max`,
/// with up to a quarter taken off at random so that many waits started together (a node
/// coming back with a full outbox) do not all end together.
pub fn backoff(first: Duration, max: Duration, attempts: u32) -> Duration {
    let full = first.saturating_mul(1 << attempts.min(16)).min(max);
    let mut byte = [0u8; 1];
    let jitter = if getrandom::fill(&mut byte).is_ok() {
        f64::from(byte[0]) / 255.0 * 0.25
    } else {
        0.0
    };
    full.mul_f64(1.0 - jitter)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill_per_key() {
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

    #[test]
    fn backoff_doubles_up_to_its_cap_with_some_jitter() {
        let (first, max) = (Duration::from_secs(2), Duration::from_secs(300));
        for attempts in 0..40 {
            let full = first.saturating_mul(1 << attempts.min(16)).min(max);
            let wait = backoff(first, max, attempts);
            assert!(
                wait <= full && wait >= full.mul_f64(0.75),
                "{attempts}: {wait:?}"
            );
        }
    }
}
