//! What the message kinds cost, through real release nodes on loopback and the public API:
//! messages A → B while B reads each one (read receipts on, then off, then on a node of the
//! previous release when `VOLLI_PREVIOUS_BIN` names one), in one run; how soon an edit, a
//! reaction and a read marker show on the other user's node; how many typing frames a burst
//! of keystrokes sends.
//!
//! `cargo bench -p volli-tests --bench message_kinds`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};
use volli_tests::{Node, Options, befriend, events};

fn trials() -> usize {
    std::env::var("VOLLI_BENCH_TRIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn show(what: &str, mut d: Vec<Duration>) -> (Duration, Duration) {
    d.sort();
    let (p50, p99) = (pct(&d, 0.5), pct(&d, 0.99));
    println!("{what}: p50 {p50:?}  p99 {p99:?}  ({} trials)", d.len());
    (p50, p99)
}

async fn next_of(events: &mut (impl futures::Stream<Item = Value> + Unpin), kind: &str) -> Value {
    loop {
        let e = events.next().await.expect("event stream open");
        if e["type"] == kind {
            return e;
        }
    }
}

/// Two contacts on `bin` (the node under test, or another release's), ready on MLS.
async fn pair(dir: &std::path::Path, bin: Option<std::path::PathBuf>) -> (Node, Node) {
    let options = || Options {
        bin: bin.clone(),
        ..Options::default()
    };
    let alice = Node::start_with(&dir.join("alice"), options()).await;
    let bob = Node::start_with(&dir.join("bob"), options()).await;
    befriend(&alice, &bob).await;
    let (bob_id, _) = bob.ids().await;
    let conversation = format!("/v1/conversations/{bob_id}");
    if alice.get(&conversation).await.0 == 200 {
        alice
            .wait_for(&conversation, Duration::from_secs(20), |c| {
                c["ready"] == true
            })
            .await;
    }
    (alice, bob)
}

/// Messages A → B one at a time, B marking each read as it arrives (when its node has the
/// route): the time from A's POST to B's `message.received`, and the whole run's rate.
async fn reading(alice: &Node, bob: &Node, n: usize) -> (Vec<Duration>, f64) {
    let (a, _) = alice.ids().await;
    let (b, _) = bob.ids().await;
    let mut bob_events = events(bob).await;
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        let (status, _) = alice
            .post(
                "/v1/messages",
                json!({"to": b, "body": format!("ping {i}")}),
            )
            .await;
        assert_eq!(status, 202);
        let got = next_of(&mut bob_events, "message.received").await;
        latencies.push(start.elapsed());
        let (status, _) = bob
            .post("/v1/messages/read", json!({"with": a, "up_to": got["id"]}))
            .await;
        assert!(status == 204 || status == 404 || status == 405, "{status}");
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    (latencies, rate)
}

#[tokio::main]
async fn main() {
    let n = trials();
    let tmp = tempfile::tempdir().unwrap();
    let (alice, bob) = pair(&tmp.path().join("on"), None).await;
    let (a, _) = alice.ids().await;
    let (b, _) = bob.ids().await;

    // Read receipts on (the default), then off on the reader.
    let (on, rate_on) = reading(&alice, &bob, n).await;
    let (_, on_p99) = show("A → B, B reads each, receipts on", on);
    let (status, _) = bob
        .request(
            reqwest::Method::PUT,
            "/v1/settings/receipts.read",
            Some(json!({"value": false})),
        )
        .await;
    assert_eq!(status, 200);
    let (off, rate_off) = reading(&alice, &bob, n).await;
    let (_, off_p99) = show("A → B, B reads each, receipts off", off);
    println!(
        "rate: receipts on {rate_on:.0}/s, off {rate_off:.0}/s: on = {:.2} × off (p99 {:.2} ×)",
        rate_on / rate_off,
        off_p99.as_secs_f64() / on_p99.as_secs_f64()
    );
    let (status, _) = bob
        .request(
            reqwest::Method::PUT,
            "/v1/settings/receipts.read",
            Some(json!({"value": true})),
        )
        .await;
    assert_eq!(status, 200);

    // An edit, a reaction and a read marker: A's request → the event on B (the marker: B's
    // request → the event on A).
    let mut alice_events = events(&alice).await;
    let mut bob_events = events(&bob).await;
    let (status, sent) = alice
        .post("/v1/messages", json!({"to": b, "body": "edit me"}))
        .await;
    assert_eq!(status, 202);
    let mine = sent["id"].as_str().unwrap().to_owned();
    next_of(&mut bob_events, "message.received").await;
    let (mut edits, mut reactions, mut reads) = (Vec::new(), Vec::new(), Vec::new());
    const EMOJI: [&str; 4] = ["👍", "❤️", "😂", "🎉"];
    for i in 0..n {
        let start = Instant::now();
        let (status, _) = alice
            .request(
                reqwest::Method::PATCH,
                &format!("/v1/messages/{mine}"),
                Some(json!({"body": format!("edited {i}")})),
            )
            .await;
        assert_eq!(status, 200);
        next_of(&mut bob_events, "message.edited").await;
        edits.push(start.elapsed());

        let start = Instant::now();
        let (status, _) = alice
            .post(
                &format!("/v1/messages/{mine}/reactions"),
                json!({"emoji": EMOJI[i % EMOJI.len()]}),
            )
            .await;
        assert_eq!(status, 200);
        next_of(&mut bob_events, "message.reaction").await;
        reactions.push(start.elapsed());

        // A new message for each marker (a marker only moves forward).
        let (status, sent) = bob
            .post(
                "/v1/messages",
                json!({"to": a, "body": format!("read me {i}")}),
            )
            .await;
        assert_eq!(status, 202);
        let theirs = sent["id"].as_str().unwrap().to_owned();
        next_of(&mut alice_events, "message.received").await;
        let start = Instant::now();
        let (status, _) = alice
            .post("/v1/messages/read", json!({"with": b, "up_to": theirs}))
            .await;
        assert_eq!(status, 204);
        loop {
            let e = next_of(&mut bob_events, "message.read").await;
            if e["up_to"] == theirs.as_str() {
                break;
            }
        }
        reads.push(start.elapsed());
    }
    show("an edit shows on the other node", edits);
    show("a reaction shows on the other node", reactions);
    show("a read marker shows on the other node", reads);

    // Typing: 50 keystrokes over 5 s.
    let started = Instant::now();
    for _ in 0..50 {
        let (status, _) = alice.post("/v1/typing", json!({"to": b})).await;
        assert_eq!(status, 204);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut frames = 0;
    let _ = tokio::time::timeout(started.elapsed() + Duration::from_secs(1), async {
        while let Some(e) = bob_events.next().await {
            if e["type"] == "typing" {
                frames += 1;
            }
        }
    })
    .await;
    println!("typing: 50 keystrokes in 5 s sent {frames} frames");
    drop((alice, bob));

    // The same A → B run on the previous release, when given.
    if let Some(previous) = std::env::var_os("VOLLI_PREVIOUS_BIN") {
        let (alice, bob) = pair(&tmp.path().join("previous"), Some(previous.into())).await;
        let (old, rate_old) = reading(&alice, &bob, n).await;
        let (_, old_p99) = show("A → B on the previous release (no receipts)", old);
        println!(
            "rate: this release with receipts {rate_on:.0}/s, previous {rate_old:.0}/s: {:.2} × (p99 {:.2} ×)",
            rate_on / rate_old,
            old_p99.as_secs_f64() / on_p99.as_secs_f64()
        );
    }
}
