//! `http`: GET to the hosts the operator allowed for this plugin, bounded in size and time.

use std::time::Duration;

use super::HostResult;
use crate::bindings::http::{Host, Response};
use crate::bindings::types::PluginError;
use crate::manifest::Capability;
use crate::state::{HostState, no_backend};

const MAX_BODY: usize = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `url` is `http(s)://` to a host on `allow` (exact, or `.suffix` for subdomains).
pub(crate) fn url_allowed(url: &str, allow: &[String]) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("only http and https URLs are allowed")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("URLs with credentials are not allowed".into());
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    }
    .to_ascii_lowercase();
    let allowed = allow.iter().any(|a| {
        let a = a.to_ascii_lowercase();
        match a.strip_prefix('.') {
            Some(suffix) => host.ends_with(&format!(".{suffix}")) || host == suffix,
            None => host == a,
        }
    });
    if host.is_empty() || !allowed {
        return Err(format!("host {host:?} is not on this plugin's allow-list"));
    }
    Ok(())
}

impl Host for HostState {
    async fn get(&mut self, url: String) -> HostResult<Response> {
        if let Err(e) = self.check(Capability::Http) {
            return Ok(Err(e));
        }
        if let Err(reason) = url_allowed(&url, &self.ctx.http_allow) {
            self.ctx.stats.denied();
            return Ok(Err(PluginError::Denied(reason)));
        }
        let Some(http) = self.ctx.services.http.clone() else {
            return Ok(Err(no_backend(Capability::Http)));
        };
        Ok(http
            .get(&url, MAX_BODY, TIMEOUT)
            .await
            .map(|r| Response {
                status: r.status,
                body: r.body,
            })
            .map_err(Into::into))
    }
}

#[cfg(test)]
mod tests {
    use super::url_allowed;

    #[test]
    fn only_allow_listed_hosts_pass() {
        let allow = vec![
            "directory.example.org".to_owned(),
            ".peers.example".to_owned(),
        ];
        assert!(url_allowed("https://directory.example.org/x?y", &allow).is_ok());
        assert!(url_allowed("http://directory.example.org:8080/", &allow).is_ok());
        assert!(url_allowed("https://a.peers.example/", &allow).is_ok());
        assert!(url_allowed("https://peers.example/", &allow).is_ok());
        assert!(url_allowed("https://evil.example.org/", &allow).is_err());
        assert!(url_allowed("https://directory.example.org.evil.com/", &allow).is_err());
        assert!(url_allowed("https://user@directory.example.org/", &allow).is_err());
        assert!(url_allowed("file:///etc/passwd", &allow).is_err());
        assert!(url_allowed("https://xpeers.example/", &allow).is_err());
        assert!(url_allowed("https://[::1]/", &allow).is_err());
    }
}
