//! The node's implementations of plugin capabilities that need no network stack: `kv` in
//! SQLite and `http` GET through a client that follows no redirects (the allow-list was
//! checked for the URL the plugin asked for, not for wherever a redirect would lead), speaks
//! HTTPS with the system's certificate authorities, and connects only to global addresses:
//! a name on the allow-list that resolves to a loopback, private or link-local address (a
//! cloud metadata service, the node's own API) is refused. An address written in the URL is
//! reached only when the operator put that very address on the allow-list.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use volli_plugin_host::{BoxFuture, HttpBackend, HttpResponse, KvBackend, ServiceError};
use volli_store::Db;

pub(super) struct SqliteKv {
    db: Db,
}

impl SqliteKv {
    pub(super) fn new(db: Db) -> Self {
        Self { db }
    }
}

fn internal(e: volli_store::StoreError) -> ServiceError {
    tracing::error!(error = %e, "plugin kv storage failed");
    ServiceError::Internal("storage failed".into())
}

impl KvBackend for SqliteKv {
    fn get<'a>(
        &'a self,
        plugin: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, ServiceError>> {
        Box::pin(async move { self.db.plugin_kv_get(plugin, key).await.map_err(internal) })
    }

    fn set<'a>(
        &'a self,
        plugin: &'a str,
        key: &'a str,
        value: Vec<u8>,
        quota: u64,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            match self.db.plugin_kv_set(plugin, key, &value, quota).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(ServiceError::LimitExceeded(format!(
                    "kv quota of {quota} bytes"
                ))),
                Err(e) => Err(internal(e)),
            }
        })
    }

    fn delete<'a>(
        &'a self,
        plugin: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            self.db
                .plugin_kv_delete(plugin, key)
                .await
                .map_err(internal)
        })
    }

    fn keys<'a>(
        &'a self,
        plugin: &'a str,
        prefix: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, ServiceError>> {
        Box::pin(async move {
            self.db
                .plugin_kv_keys(plugin, prefix, limit)
                .await
                .map_err(internal)
        })
    }
}

pub(super) struct HttpGet {
    client: reqwest::Client,
}

/// An error and its causes, innermost last: reqwest's own text hides the cause (a refused
/// address, a certificate), which is what a plugin author needs.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Resolves names to global addresses only.
pub(crate) struct GlobalOnly;

impl reqwest::dns::Resolve for GlobalOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let global: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| is_global(a.ip()))
                .collect();
            if global.is_empty() {
                return Err(format!(
                    "{host} resolves to no global address (only {found:?}); refused"
                )
                .into());
            }
            Ok(Box::new(global.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether `ip` is a public unicast address (not loopback, private, link-local, shared,
/// documentation, benchmarking, multicast, reserved or unspecified).
pub(crate) fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_global(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            let first = seg[0];
            // An IPv4 address inside an IPv6 one (IPv4-compatible, NAT64 64:ff9b::/96,
            // 6to4 2002::/16) is judged as that IPv4 address.
            let octets = v6.octets();
            let embedded = |at: usize| {
                IpAddr::V4(std::net::Ipv4Addr::new(
                    octets[at],
                    octets[at + 1],
                    octets[at + 2],
                    octets[at + 3],
                ))
            };
            if seg[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
                return is_global(embedded(12));
            }
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_global(embedded(12));
            }
            if first == 0x2002 {
                return is_global(embedded(2));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                || (first == 0x2001 && seg[1] == 0x0db8))
        }
    }
}

impl HttpGet {
    pub(super) fn new() -> Self {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GlobalOnly))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("volli-node/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self { client }
    }
}

impl HttpBackend for HttpGet {
    fn get<'a>(
        &'a self,
        url: &'a str,
        max_body: usize,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<HttpResponse, ServiceError>> {
        Box::pin(async move {
            let fetch = async {
                let mut response = self.client.get(url).send().await.map_err(|e| {
                    ServiceError::Unavailable(format!("request failed: {}", causes(&e)))
                })?;
                let status = response.status().as_u16();
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await.map_err(|e| {
                    ServiceError::Unavailable(format!("reading the body failed: {e}"))
                })? {
                    if body.len() + chunk.len() > max_body {
                        return Err(ServiceError::LimitExceeded(format!(
                            "response body over {max_body} bytes"
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(HttpResponse { status, body })
            };
            tokio::time::timeout(timeout, fetch)
                .await
                .map_err(|_| ServiceError::Unavailable("the request timed out".into()))?
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use volli_plugin_host::HttpBackend as _;

    use super::{HttpGet, is_global};

    #[tokio::test]
    async fn names_that_resolve_to_local_addresses_are_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let http = HttpGet::new();
        let answer = http
            .get(
                &format!("http://localhost:{port}/"),
                1024,
                std::time::Duration::from_secs(5),
            )
            .await;
        let error = format!("{:?}", answer.unwrap_err());
        assert!(error.contains("no global address"), "{error}");
    }

    #[tokio::test]
    async fn https_is_spoken() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let first = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).unwrap();
            byte[0]
        });
        let http = HttpGet::new();
        let answer = http
            .get(
                &format!("https://127.0.0.1:{port}/"),
                1024,
                std::time::Duration::from_secs(2),
            )
            .await;
        assert!(answer.is_err(), "nothing answers the handshake");
        assert_eq!(first.join().unwrap(), 0x16, "a TLS handshake record");
    }

    #[test]
    fn only_public_unicast_addresses_are_global() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.251",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::fb",
            "2001:db8::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_global(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_global(ip.parse().unwrap()), "{ip}");
        }
    }
}
