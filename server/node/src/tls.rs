//! TLS on the API listener (`[api] tls_cert`, `tls_key`): rustls with the certificate and key
//! read from PEM files at start and again on SIGHUP — a renewed certificate (certbot, acme.sh,
//! Caddy's storage) takes effect without a restart; a file that does not load on a reload is
//! logged and the certificate in use stays.
//!
//! Handshakes run beside the accept loop, at most [`MAX_HANDSHAKES`] at once and each within
//! [`HANDSHAKE_TIMEOUT`], so a client that opens a connection and says nothing holds up no
//! one else.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context as _, bail};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Handshakes in progress at once.
pub const MAX_HANDSHAKES: usize = 256;
/// How long a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate in use, swapped on reload.
#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The API's TLS set-up. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    resolver: Arc<Resolver>,
    acceptor: TlsAcceptor,
}

impl Tls {
    /// Loads the certificate chain and key; errors say which file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certified = certified_key(cert, key, &provider)?;
        let resolver = Arc::new(Resolver {
            current: RwLock::new(Arc::new(certified)),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("no TLS versions")?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // HTTP/1.1 only: the API server speaks no HTTP/2 (browsers would pick it if offered).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads the files again and uses them for new connections; on an error the certificate
    /// in use stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let certified = certified_key(&self.cert, &self.key, &self.provider)?;
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
        Ok(())
    }

    /// The files it reads.
    pub fn files(&self) -> (&Path, &Path) {
        (&self.cert, &self.key)
    }
}

fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let pem = std::fs::read(cert)
        .with_context(|| format!("cannot read the TLS certificate {}", cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    if chain.is_empty() {
        bail!(
            "{} holds no certificate (PEM `BEGIN CERTIFICATE`)",
            cert.display()
        );
    }
    let pem =
        std::fs::read(key).with_context(|| format!("cannot read the TLS key {}", key.display()))?;
    let private = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        anyhow::anyhow!(
            "{} holds no private key in PEM (PKCS#8, PKCS#1 or SEC1): {e}",
            key.display()
        )
    })?;
    CertifiedKey::from_der(chain, private, provider).with_context(|| {
        format!(
            "the key {} does not go with the certificate {}",
            key.display(),
            cert.display()
        )
    })
}

/// A listener that hands out connections once their TLS handshake is done.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Accepts on `listener` and shakes hands with `tls`.
    pub fn new(listener: TcpListener, tls: &Tls) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = tls.acceptor.clone();
        let accepting = tokio::spawn(async move {
            let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
            loop {
                let Ok(permit) = handshakes.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, addr) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::debug!("cannot accept an API connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop ended (its runtime is going): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn bad_files_say_which_and_why_and_a_failed_reload_keeps_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a");
        let (_, other_key) = write_pair(dir.path(), "b");
        let tls = Tls::load(&cert, &key).unwrap();

        let missing = dir.path().join("missing.pem");
        let e = format!("{:#}", Tls::load(&missing, &key).err().unwrap());
        assert!(e.contains("cannot read the TLS certificate"), "{e}");
        let e = format!("{:#}", Tls::load(&key, &key).err().unwrap());
        assert!(e.contains("holds no certificate"), "{e}");
        let e = format!("{:#}", Tls::load(&cert, &cert).err().unwrap());
        assert!(e.contains("holds no private key"), "{e}");
        let e = format!("{:#}", Tls::load(&cert, &other_key).err().unwrap());
        assert!(e.contains("does not go with"), "{e}");

        let before = tls.resolver.current.read().unwrap().cert.clone();
        std::fs::write(&cert, "not a certificate").unwrap();
        assert!(tls.reload().is_err());
        assert_eq!(tls.resolver.current.read().unwrap().cert, before);
        let (new_cert, new_key) = write_pair(dir.path(), "c");
        std::fs::rename(new_cert, &cert).unwrap();
        std::fs::rename(new_key, &key).unwrap();
        tls.reload().unwrap();
        assert_ne!(tls.resolver.current.read().unwrap().cert, before);
    }
}
