//! LAN discovery latency through the `mdns` plugin, two hosts in network namespaces on a
//! bridge (needs root). For each trial a fresh node B starts next to a running node A; we
//! time from B's process start and from B answering `/health` until A's event stream
//! reports B found by `mdns`.
//!
//! `cargo bench -p volli-tests --bench lan_discovery`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use volli_tests::netns::{self, Lan};
use volli_tests::{Node, Options};

const TRIALS: usize = 20;

fn options(ns: &str, addr: &str) -> Options {
    Options {
        netns: Some(ns.to_owned()),
        api_listen: Some(format!("{addr}:0")),
        p2p_listen: Some(format!("/ip4/{addr}/tcp/0")),
        config: "[network]\nlan = true\n".into(),
        ..Options::default()
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    assert!(
        netns::available(),
        "needs root and iproute2 to build network namespaces"
    );
    let mut lan = Lan::new();
    let (ns_a, addr_a) = lan.host();
    let (ns_b, addr_b) = lan.host();
    let tmp = tempfile::tempdir().unwrap();
    let a = Node::start_with(&tmp.path().join("a"), options(&ns_a, &addr_a)).await;
    let mut from_spawn = Vec::new();
    let mut from_health = Vec::new();
    for trial in 0..TRIALS {
        let mut request = format!("{}/v1/events", a.url.replace("http://", "ws://"))
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", a.token).parse().unwrap(),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let spawned = Instant::now();
        let mut b = Node::spawn(
            &tmp.path().join(format!("b{trial}")),
            &options(&ns_b, &addr_b),
        );
        let watch = async {
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Text(t) = m {
                    let e: Value = serde_json::from_str(&t).unwrap();
                    if e["type"] == "peer.discovered"
                        && e["sources"]
                            .as_array()
                            .is_some_and(|s| s.iter().any(|x| x == "mdns"))
                    {
                        return Instant::now();
                    }
                }
            }
            panic!("event stream closed");
        };
        let ready = async {
            b.wait_until_ready().await;
            Instant::now()
        };
        let (found, healthy) =
            tokio::join!(tokio::time::timeout(Duration::from_secs(20), watch), ready);
        let found = found.expect("B found within 20 s");
        from_spawn.push(found - spawned);
        from_health.push(found.saturating_duration_since(healthy));
        b.kill();
    }
    from_spawn.sort();
    from_health.sort();
    println!("LAN discovery (mDNS plugin, two network namespaces), {TRIALS} trials");
    println!(
        "  B process start -> A lists B:  p50 {:?}  p95 {:?}",
        pct(&from_spawn, 0.5),
        pct(&from_spawn, 0.95)
    );
    println!(
        "  B /health       -> A lists B:  p50 {:?}  p95 {:?}  (0 = found before B answered)",
        pct(&from_health, 0.5),
        pct(&from_health, 0.95)
    );
}
