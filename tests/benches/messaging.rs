//! Messages A → B through two real release nodes on loopback, through the public API:
//! latency (POST → `message.received` on B's WebSocket, one at a time) and sustained
//! throughput (N messages posted by 32 concurrent clients until B has received them all).
//!
//! `cargo bench -p volli-tests --bench messaging`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::json;
use volli_tests::{Node, befriend, events};

const LATENCY_TRIALS: usize = 300;
const THROUGHPUT_MESSAGES: usize = 4000;
const CLIENTS: usize = 32;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = Arc::new(Node::start(&tmp.path().join("alice")).await);
    let bob = Node::start(&tmp.path().join("bob")).await;
    befriend(&alice, &bob).await;
    let (bob_id, _) = bob.ids().await;
    let mut bob_events = events(&bob).await;
    // A node with conversations on MLS: wait until the two have handed each other key
    // packages, so that every measured message goes on MLS (an older node has no such
    // route, and seals every message to the user key).
    let conversation = format!("/v1/conversations/{bob_id}");
    if alice.get(&conversation).await.0 == 200 {
        alice
            .wait_for(&conversation, Duration::from_secs(20), |c| {
                c["ready"] == true
            })
            .await;
    }

    let mut latencies = Vec::new();
    for i in 0..LATENCY_TRIALS {
        let start = Instant::now();
        let (status, _) = alice
            .post(
                "/v1/messages",
                json!({"to": bob_id, "body": format!("ping {i}")}),
            )
            .await;
        assert_eq!(status, 202);
        loop {
            let e = bob_events.next().await.unwrap();
            if e["type"] == "message.received" {
                break;
            }
        }
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let (status, c) = alice.get(&conversation).await;
    println!(
        "encryption: {}",
        if status == 200 {
            c["encryption"].as_str().unwrap_or("?")
        } else {
            "envelope (previous release)"
        }
    );
    println!(
        "latency A→B (POST → B's message.received), {LATENCY_TRIALS} one at a time: p50 {:?}  p99 {:?}",
        pct(&latencies, 0.5),
        pct(&latencies, 0.99)
    );

    let start = Instant::now();
    // More messages to profile with: VOLLI_BENCH_MESSAGES.
    let messages = std::env::var("VOLLI_BENCH_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(THROUGHPUT_MESSAGES);
    let per_client = messages / CLIENTS;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let alice = alice.clone();
        let to = bob_id.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_client {
                let (status, body) = alice
                    .post(
                        "/v1/messages",
                        json!({"to": to, "body": format!("m {c}/{i}")}),
                    )
                    .await;
                assert_eq!(status, 202, "{body}");
            }
        }));
    }
    let accepted = {
        let tasks = std::mem::take(&mut tasks);
        tokio::spawn(async move {
            for t in tasks {
                t.await.unwrap();
            }
            start.elapsed()
        })
    };
    let mut received = 0;
    let total = per_client * CLIENTS;
    let receive = async {
        while received < total {
            let e = bob_events.next().await.unwrap();
            if e["type"] == "message.received" {
                received += 1;
            } else if e["type"] == "resync" {
                break;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(300), receive)
        .await
        .is_err()
    {
        let warnings = |log: String| {
            let lines: Vec<String> = log
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("refused"))
                .map(String::from)
                .collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        panic!(
            "{received} of {total} messages received in 300 s\nalice:\n{}\nbob:\n{}",
            warnings(alice.log()),
            warnings(bob.log())
        );
    }
    let took = start.elapsed();
    let accepted = accepted.await.unwrap();
    // The WebSocket may drop events under load (resync); count what B stored instead.
    let (alice_id, _) = alice.ids().await;
    let mut stored = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while stored < total + LATENCY_TRIALS && Instant::now() < deadline {
        let (_, page) = bob
            .get(&format!("/v1/messages?with={alice_id}&limit=500"))
            .await;
        stored = page["messages"].as_array().map_or(0, Vec::len).max(stored);
        if stored >= 500 {
            // A page holds at most 500: count through the vault's total instead.
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took_all = start.elapsed().max(took);
    println!(
        "throughput A→B, {total} messages from {CLIENTS} concurrent API clients: {:.0} msgs/s ({took_all:?}); \
         all accepted (202) after {accepted:?}: {:.0} msgs/s",
        total as f64 / took_all.as_secs_f64(),
        total as f64 / accepted.as_secs_f64()
    );
}
