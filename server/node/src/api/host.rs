//! The `Host` header, checked before anything else: a web page on another site that has
//! its name point at this machine (DNS rebinding) reaches the API from the user's own
//! browser, on loopback. Its requests carry that site's name as `Host`, so they are refused
//! here — before they can use up the per-address rate limit that the admin page's login
//! shares. Accepted: an IP address (v4 or v6), `localhost`, and the names in
//! `[api] allowed_hosts` (for a reverse proxy or a name on the LAN). A request without
//! `Host` (HTTP/1.0 tools) passes: no browser sends one.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// The host names the API answers to besides IP addresses and `localhost`.
#[derive(Clone, Default)]
pub struct AllowedHosts(Arc<Vec<String>>);

impl AllowedHosts {
    /// Allows `names` (compared without case, without a port).
    pub fn new(names: &[String]) -> Self {
        Self(Arc::new(
            names
                .iter()
                .map(|n| n.trim().to_ascii_lowercase())
                .collect(),
        ))
    }

    /// Whether a `Host` header value is one of ours.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim();
        // `[v6]:port`, `[v6]`, `name:port`, `name`.
        let name = if let Some(rest) = host.strip_prefix('[') {
            match rest.split_once(']') {
                Some((inside, tail)) if tail.is_empty() || port(tail.strip_prefix(':')) => inside,
                _ => return false,
            }
        } else {
            match host.rsplit_once(':') {
                Some((name, p)) if port(Some(p)) => name,
                Some(_) => return false,
                None => host,
            }
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name.parse::<IpAddr>().is_ok() || name == "localhost" || self.0.contains(&name)
    }
}

fn port(text: Option<&str>) -> bool {
    text.is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Middleware: refuses a request whose `Host` is not one of this node's.
pub async fn check_host(
    State(allowed): State<AllowedHosts>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    if let Some(host) = host
        && !allowed.allows(host)
    {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "host_not_allowed",
            "this node does not answer to that host name; add it to [api] allowed_hosts if \
             it should",
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addresses_localhost_and_configured_names_only() {
        let allowed = AllowedHosts::new(&["Volli.Example.org".into()]);
        for ok in [
            "127.0.0.1:8470",
            "127.0.0.1",
            "[::1]:8470",
            "[::1]",
            "localhost:8470",
            "LOCALHOST",
            "192.168.1.20:8470",
            "volli.example.org",
            "volli.example.org.:443",
        ] {
            assert!(allowed.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example.com:8470",
            "127.0.0.1.evil.example.com",
            "localhost.evil.com",
            "[::1]x",
            "127.0.0.1:port",
            "",
            "volli.example.org.evil.com",
        ] {
            assert!(!allowed.allows(bad), "{bad}");
        }
    }
}
