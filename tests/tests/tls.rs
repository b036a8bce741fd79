//! The API over HTTPS (`[api] tls_cert`, `tls_key`) with certificates made by the test: REST
//! and the WebSocket (`wss`), the CLI on the node's machine, a certificate renewed on SIGHUP
//! without a restart, a broken renewal that keeps the old one, and files that do not load.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use volli_tests::{Node, Options, volli};

/// A new CA, and a certificate it signed for `localhost` and 127.0.0.1 written to `cert` and
/// `key`; returns the CA's PEM.
fn issue(cert: &Path, key: &Path) -> String {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "volli test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca.self_signed(&ca_key).unwrap();
    let leaf =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    std::fs::write(cert, leaf.pem()).unwrap();
    std::fs::write(key, leaf_key.serialize_pem()).unwrap();
    ca.pem()
}

/// A TLS connection to `port` on loopback that trusts only `ca`.
async fn connect(
    port: u16,
    ca: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    // As a browser offers them.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

fn tls_config(cert: &Path, key: &Path) -> String {
    format!(
        "[api]\ntls_cert = {:?}\ntls_key = {:?}",
        cert.to_str().unwrap(),
        key.to_str().unwrap()
    )
}

#[tokio::test]
async fn the_api_and_its_websocket_serve_https_and_a_renewed_certificate_on_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = (tmp.path().join("node.crt"), tmp.path().join("node.key"));
    let first_ca = issue(&cert, &key);
    let data = tmp.path().join("n");
    let node = Node::start_with(
        &data,
        Options {
            config: tls_config(&cert, &key),
            api_listen: Some("0.0.0.0:0".into()),
            tls_root: Some(first_ca.clone()),
            ..Options::default()
        },
    )
    .await;
    assert!(node.url.starts_with("https://127.0.0.1:"), "{}", node.url);
    assert!(
        !node.log().contains("without TLS"),
        "no warning with TLS on: {}",
        node.log()
    );
    let port: u16 = node.url.rsplit(':').next().unwrap().parse().unwrap();
    let (status, body) = node.get("/v1/node").await;
    assert_eq!(status, 200, "{body}");

    // Plain HTTP on the same port gets no API.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/health")).await;
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "{plain:?}"
    );

    // The event stream over wss. A client that offers HTTP/2 too is given HTTP/1.1, which
    // the API speaks.
    let tls = connect(port, &first_ca).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut request = format!("wss://localhost:{port}/v1/events")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", node.token).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(request, tls).await.unwrap();
    let ready = ws.next().await.unwrap().unwrap();
    assert!(ready.to_text().unwrap().contains("\"ready\""), "{ready:?}");

    // The CLI on the node's machine reaches it at its loopback address.
    let out = volli(&["node", "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("user_id"));

    // A renewed certificate (from another CA here, to tell them apart) on SIGHUP.
    let second_ca = issue(&cert, &key);
    assert!(
        connect(port, &second_ca).await.is_err(),
        "not before the signal"
    );
    let pid = node.pid().unwrap().to_string();
    let hup = |pid: &str| {
        let killed = std::process::Command::new("kill")
            .args(["-HUP", pid])
            .status()
            .unwrap();
        assert!(killed.success());
    };
    hup(&pid);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while connect(port, &second_ca).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate is not served: {}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(node.log().contains("reloaded the API's TLS certificate"));
    // Open connections stay open: an event still reaches the stream opened before.
    let (status, _) = node
        .request(
            reqwest::Method::PUT,
            "/v1/settings/ui.theme",
            Some(serde_json::json!({"value": "dark"})),
        )
        .await;
    assert_eq!(status, 200);
    let changed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the stream opened before the reload still delivers")
        .unwrap()
        .unwrap();
    assert!(
        changed.to_text().unwrap().contains("settings.changed"),
        "{changed:?}"
    );

    // A broken renewal keeps the certificate in use.
    std::fs::write(&cert, "not a certificate").unwrap();
    hup(&pid);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !node
        .log()
        .contains("cannot reload the API's TLS certificate")
    {
        assert!(tokio::time::Instant::now() < deadline, "{}", node.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    connect(port, &second_ca)
        .await
        .expect("the certificate in use stays");
    let (status, _) = node.get("/health").await;
    assert_eq!(status, 200, "still serving");
}

#[tokio::test]
async fn tls_files_that_do_not_load_stop_the_node_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = (tmp.path().join("node.crt"), tmp.path().join("node.key"));
    issue(&cert, &key);
    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&garbage, "hello\n").unwrap();
    let cut = tmp.path().join("cut.pem");
    std::fs::write(&cut, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
    for (i, (config, expected)) in [
        (
            format!("[api]\ntls_cert = {:?}", cert.to_str().unwrap()),
            "api.tls_cert and api.tls_key go together",
        ),
        (tls_config(&garbage, &key), "holds no certificate"),
        (tls_config(&cut, &key), "is not a PEM certificate chain"),
        (tls_config(&cert, &garbage), "holds no private key"),
        (
            tls_config(&tmp.path().join("missing.crt"), &key),
            "cannot read the TLS certificate",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut node = Node::spawn(
            &tmp.path().join(format!("n{i}")),
            &Options {
                config,
                ..Options::default()
            },
        );
        let status = node
            .wait_exit(Duration::from_secs(30))
            .await
            .expect("the node stops");
        assert!(!status.success());
        assert!(node.log().contains(expected), "{expected}: {}", node.log());
    }
}
