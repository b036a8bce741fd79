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
///
/// The URL is parsed once, by the same parser the request is made with (`url`, which
/// reqwest uses), so the host checked is the host contacted: a backslash, an `@`, percent
/// escapes or IDNA tricks cannot make the two differ. A host given as an IP address must be
/// on the list as that address; names that resolve to non-global addresses are refused when
/// the request is made (see the node's `http` backend).
pub(crate) fn url_allowed(url: &str, allow: &[String]) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("only http and https URLs are allowed".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("URLs with credentials are not allowed".into());
    }
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err("the URL has no host".into()),
    };
    let is_ip = !matches!(parsed.host(), Some(url::Host::Domain(_)));
    let allowed = allow.iter().any(|a| {
        let a = a
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        match a.strip_prefix('.') {
            Some(suffix) if !is_ip => host.ends_with(&format!(".{suffix}")) || host == suffix,
            Some(_) => false,
            None => host == a,
        }
    });
    if !allowed {
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
            "192.0.2.7".to_owned(),
        ];
        assert!(url_allowed("https://directory.example.org/x?y", &allow).is_ok());
        assert!(url_allowed("http://directory.example.org:8080/", &allow).is_ok());
        assert!(url_allowed("https://DIRECTORY.example.org./", &allow).is_err());
        assert!(url_allowed("https://a.peers.example/", &allow).is_ok());
        assert!(url_allowed("https://peers.example/", &allow).is_ok());
        assert!(url_allowed("http://192.0.2.7/", &allow).is_ok());
        assert!(url_allowed("https://evil.example.org/", &allow).is_err());
        assert!(url_allowed("https://directory.example.org.evil.com/", &allow).is_err());
        assert!(url_allowed("https://user@directory.example.org/", &allow).is_err());
        assert!(url_allowed("file:///etc/passwd", &allow).is_err());
        assert!(url_allowed("https://xpeers.example/", &allow).is_err());
        assert!(url_allowed("https://[::1]/", &allow).is_err());
        assert!(url_allowed("http://127.0.0.1/", &allow).is_err());
    }

    /// What a hand-written host split got wrong: the request would go to another host than
    /// the one checked.
    #[test]
    fn the_host_checked_is_the_host_contacted() {
        let allow = vec![".allowed.example".to_owned(), ".localhost".to_owned()];
        for url in [
            "http://169.254.169.254\\.allowed.example/",
            "http://169.254.169.254\\x.allowed.example/",
            "http://127.0.0.1\\.localhost/",
            "http://evil.example#@x.allowed.example/",
            "http://evil.example?@x.allowed.example/",
            "http://x.allowed.example@evil.example/",
            "http://evil.example%2f.allowed.example/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            if url_allowed(url, &allow).is_ok() {
                let parsed = url::Url::parse(url).unwrap();
                let host = parsed.host_str().unwrap().to_owned();
                assert!(
                    host.ends_with(".allowed.example") || host.ends_with(".localhost"),
                    "{url} passed but goes to {host}"
                );
            }
        }
        assert!(url_allowed("http://169.254.169.254\\.allowed.example/", &allow).is_err());
    }
}
