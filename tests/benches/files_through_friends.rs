//! Files through friends (issue 36, ADR 0022), through the real binary on loopback: a file of
//! 64 MiB (`VOLLI_BENCH_MIB`) from Alice to Bob,
//! - **direct**: Bob online, the file sent as shipped (from the offer to `completed` on Bob);
//! - **deposit**: Bob offline, the file deposited with Dave, a friend Bob designated as a
//!   relay (from the offer to Dave holding it whole, `via` on Alice's side);
//! - **pickup**: Alice offline, Bob back: from Bob's start to `completed`, checked.
//!
//! The deposit's rate against the direct one is the figure (target: at least half).
//!
//! `cargo bench -p volli-tests --bench files_through_friends` (`VOLLI_BIN` to measure a given
//! binary; `VOLLI_BENCH_ROUNDS`, default 3).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use volli_tests::{Node, befriend, free_port, on_port, wait_until_relay_of};

fn write_file(path: &Path, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in &mut data {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(path, &data).unwrap();
    data
}

async fn offer(from: &Node, to: &str, path: &Path) -> String {
    let (status, t) = from
        .post(
            "/v1/transfers",
            json!({"to": to, "path": path.to_str().unwrap()}),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    t["id"].as_str().unwrap().to_owned()
}

async fn completed(node: &Node, id: &str) {
    node.wait_for(
        &format!("/v1/transfers/{id}"),
        Duration::from_secs(600),
        |t| t["state"] == "completed",
    )
    .await;
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    tokio::runtime::Runtime::new().unwrap().block_on(run());
}

async fn run() {
    let mib: usize = std::env::var("VOLLI_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let rounds: usize = std::env::var("VOLLI_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let tmp = tempfile::tempdir().unwrap();
    let size = mib << 20;
    let ports = (free_port(), free_port());
    let alice_dir: PathBuf = tmp.path().join("alice");
    let bob_dir: PathBuf = tmp.path().join("bob");
    let mut alice = Node::start_with(&alice_dir, on_port(ports.0)).await;
    let mut bob = Node::start_with(&bob_dir, on_port(ports.1)).await;
    let dave = Node::start(&tmp.path().join("dave")).await;
    befriend(&dave, &alice).await;
    befriend(&dave, &bob).await;
    befriend(&alice, &bob).await;
    let (bob_id, _) = bob.ids().await;
    let (dave_id, _) = dave.ids().await;
    wait_until_relay_of(&alice, &bob_id, &dave_id).await;
    let (status, _) = bob
        .request(
            reqwest::Method::PUT,
            "/v1/settings/transfers.auto_accept_bytes",
            Some(json!({"value": 1u64 << 40})),
        )
        .await;
    assert_eq!(status, 200);
    println!("{mib} MiB, loopback, {rounds} rounds (median)");
    let (mut direct, mut deposit, mut pickup) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let path = tmp.path().join(format!("file-{round}.bin"));
        let data = write_file(&path, size);
        // Direct, both online.
        let started = Instant::now();
        let id = offer(&alice, &bob_id, &path).await;
        completed(&bob, &id).await;
        direct.push(size as f64 / started.elapsed().as_secs_f64());
        // Deposited with Dave while Bob is away.
        assert!(bob.terminate().success());
        let path = tmp.path().join(format!("held-{round}.bin"));
        let data2 = write_file(&path, size);
        let started = Instant::now();
        let id = offer(&alice, &bob_id, &path).await;
        alice
            .wait_for(
                &format!("/v1/transfers/{id}"),
                Duration::from_secs(600),
                |t| t["via"] == json!([dave_id.as_str()]),
            )
            .await;
        deposit.push(size as f64 / started.elapsed().as_secs_f64());
        // Picked up by Bob while Alice is away.
        assert!(alice.terminate().success());
        let started = Instant::now();
        bob = Node::start_with(&bob_dir, on_port(ports.1)).await;
        completed(&bob, &id).await;
        pickup.push(started.elapsed().as_secs_f64());
        let (_, t) = bob.get(&format!("/v1/transfers/{id}")).await;
        assert_eq!(t["blake3"], blake3::hash(&data2).to_hex().as_str());
        drop(data);
        alice = Node::start_with(&alice_dir, on_port(ports.0)).await;
        completed(&alice, &id).await;
        println!(
            "round {round}: direct {:.1} MB/s, deposit {:.1} MB/s, pickup {:.2} s",
            direct[round] / 1e6,
            deposit[round] / 1e6,
            pickup[round]
        );
    }
    let (d, p) = (median(direct), median(deposit));
    println!(
        "direct {:.1} MB/s; deposit with a friend {:.1} MB/s = {:.2} × direct (target ≥ 0.5); \
         pickup from Bob's start {:.2} s",
        d / 1e6,
        p / 1e6,
        p / d,
        median(pickup)
    );
}
