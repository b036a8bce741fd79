//! Operating a node, through the real binary: Prometheus metrics on their own listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use volli_tests::{Node, Options, befriend, free_port, on_port};

/// The value of the sample `series` (name with its labels, as printed) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

async fn scrape(port: u16) -> String {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    response.text().await.unwrap()
}

/// A node serving its metrics on a port of its own; the node and that port.
async fn with_metrics(dir: &std::path::Path) -> (Node, u16) {
    let port = free_port();
    let node = Node::start_with(
        dir,
        Options {
            env: vec![("VOLLI_METRICS_LISTEN".into(), format!("127.0.0.1:{port}"))],
            ..Options::default()
        },
    )
    .await;
    (node, port)
}

/// `[metrics] listen` (here `VOLLI_METRICS_LISTEN`) serves `/metrics` on a listener of its
/// own, with the figures of what the node did; without it there is no such listener and the
/// API has no `/metrics`; a malformed address stops the node with a clear error.
#[tokio::test]
async fn metrics_count_what_the_node_does() {
    let tmp = tempfile::tempdir().unwrap();
    let (alice, port) = with_metrics(&tmp.path().join("alice")).await;
    let bob = Node::start(&tmp.path().join("bob")).await;
    volli_tests::befriend(&alice, &bob).await;
    let (bob_user, _) = bob.ids().await;
    for i in 0..3 {
        volli_tests::send(&alice, &bob_user, &format!("hello {i}")).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while volli_tests::conversation(&alice, &bob_user)
        .await
        .iter()
        .any(|m| m["status"] != "delivered")
    {
        assert!(Instant::now() < deadline, "not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = alice.get_anonymous("/v1/contacts").await;
    assert_eq!(status, 401);

    let text = scrape(port).await;
    let at_least = |series: &str, min: f64| {
        let v = sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
        assert!(v >= min, "{series} = {v}, expected ≥ {min}");
    };
    at_least(
        r#"volli_api_requests_total{method="POST",route="/v1/messages",status="202"}"#,
        3.0,
    );
    at_least(
        r#"volli_api_requests_total{method="GET",route="/v1/contacts",status="401"}"#,
        1.0,
    );
    at_least(
        r#"volli_api_request_duration_seconds_count{route="/v1/messages"}"#,
        3.0,
    );
    at_least(r#"volli_connections{transport="tcp"}"#, 1.0);
    at_least(r#"volli_messages{status="delivered"}"#, 3.0);
    at_least("volli_messages_sent_total", 3.0);
    at_least("volli_vault_commit_duration_seconds_count", 3.0);
    at_least("volli_database_bytes", 4096.0);
    at_least("volli_vault_bytes", 1.0);
    at_least("volli_relay_held_envelopes", 0.0);
    at_least("volli_transfer_storage_bytes", 0.0);
    at_least("volli_transfer_storage_limit_bytes", 1.0);
    // libp2p's own metrics share the registry.
    assert!(
        text.lines().any(
            |l| l.starts_with("volli_libp2p_swarm_connections_established_total")
                || l.starts_with("volli_libp2p_swarm_connections_incoming_total")
        ),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("volli_libp2p_ping_rtt_seconds")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("volli_plugin_calls_total{plugin=")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("volli_discovery_findings_total{plugin=")),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));

    // Bob's node has no metrics listener, and no API route serves them.
    let (status, body) = bob.get("/metrics").await;
    assert_eq!(status, 404, "{body}");

    let mut bad = Node::spawn(
        &tmp.path().join("bad"),
        &Options {
            env: vec![("VOLLI_METRICS_LISTEN".into(), "everywhere".into())],
            ..Options::default()
        },
    );
    let status = bad
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("a malformed metrics address stops the node");
    assert!(!status.success());
    assert!(
        bad.log().contains("metrics.listen must be ip:port"),
        "{}",
        bad.log()
    );
}

/// A second node given a peer port that a running node listens on stops with the reason
/// instead of sharing the port (the TCP transport binds with `SO_REUSEPORT`, so the kernel
/// would hand each incoming connection to one of the two at random), and the first node
/// keeps answering on it.
#[tokio::test]
async fn a_node_on_a_peer_port_already_in_use_says_so_and_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let first = Node::start_with(&tmp.path().join("first"), on_port(port)).await;
    let mut second = Node::spawn(&tmp.path().join("second"), &on_port(port));
    let status = second
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("a taken peer port stops the node");
    assert!(!status.success());
    assert!(
        second
            .log()
            .contains(&format!("TCP port {port} is already in use")),
        "{}",
        second.log()
    );
    let other = Node::start(&tmp.path().join("other")).await;
    befriend(&first, &other).await;
}

/// Connections established so far, over every role and transport.
fn established(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("volli_libp2p_swarm_connections_established_total"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum()
}

/// A quiet connection to a contact stays open past the swarm's two-minute idle timeout: it
/// used to close, and the node looked the contact up and dialed it again at once, a new
/// handshake every couple of minutes that kept an idle node awake.
#[tokio::test]
async fn an_idle_connection_to_a_contact_stays_open() {
    let tmp = tempfile::tempdir().unwrap();
    let (alice, port) = with_metrics(&tmp.path().join("alice")).await;
    let bob = Node::start(&tmp.path().join("bob")).await;
    befriend(&alice, &bob).await;
    let (_, bob_peer) = bob.ids().await;
    // Settled: the invite's connection, and any second one from both ends dialing at once.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = established(&scrape(port).await);
    tokio::time::sleep(Duration::from_secs(150)).await;
    let text = scrape(port).await;
    assert_eq!(established(&text), before, "{text}");
    let (_, peers) = alice.get("/v1/peers").await;
    assert!(
        peers["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["peer_id"] == bob_peer.as_str() && p["connected"] == true),
        "{peers}"
    );
}

/// An idle node stays idle: with a contact connected and nothing new to find, discovery
/// rounds back off towards a minute apart instead of asking every plugin each second (the
/// invite method repeats the contact it stored, which is not news). The invite plugin's call
/// count over a quiet 20 s tells: at most a few rounds, not one a second.
#[tokio::test]
async fn an_idle_node_with_a_contact_backs_off_its_discovery_rounds() {
    let tmp = tempfile::tempdir().unwrap();
    let port = volli_tests::free_port();
    let alice = Node::start_with(
        &tmp.path().join("alice"),
        Options {
            env: vec![("VOLLI_METRICS_LISTEN".into(), format!("127.0.0.1:{port}"))],
            ..Options::default()
        },
    )
    .await;
    let bob = Node::start(&tmp.path().join("bob")).await;
    volli_tests::befriend(&alice, &bob).await;
    let invite_calls = || async {
        sample(
            &scrape(port).await,
            r#"volli_plugin_calls_total{plugin="invite"}"#,
        )
        .unwrap_or(0.0)
    };
    // Let the rounds that follow befriending (news) pass.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let before = invite_calls().await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let calls = invite_calls().await - before;
    assert!(
        calls <= 6.0,
        "{calls} calls into the invite plugin in 20 quiet seconds"
    );
}
