//! Storage that does not grow forever: N messages (default 100,000) sent A → B through two
//! real release nodes, then let go by a retention rule ("keep the last 1") on A. Prints A's
//! database size on disk (with its write-ahead log) before, after the rule, and after a
//! restart, and how long the deletion took.
//!
//! `cargo bench -p volli-tests --bench retention` (`VOLLI_RETENTION_MESSAGES` to change N)
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use volli_tests::{Node, befriend};

const CLIENTS: usize = 32;

fn on_disk(dir: &Path) -> u64 {
    ["volli.db", "volli.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

async fn count(node: &Node) -> u64 {
    // Paging through 100k messages is slow: count the index rows instead (read-only).
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite:{}?mode=ro",
        node.data_dir.join("volli.db").display()
    ))
    .await
    .unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM messages WHERE status < 5")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n as u64
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("VOLLI_RETENTION_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir().unwrap();
    let alice_dir = tmp.path().join("alice");
    let mut alice = Arc::new(Node::start(&alice_dir).await);
    let bob = Node::start(&tmp.path().join("bob")).await;
    befriend(&alice, &bob).await;
    let (bob_id, _) = bob.ids().await;
    let empty = on_disk(&alice_dir);

    let start = Instant::now();
    let per_client = total / CLIENTS;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let alice = alice.clone();
        let to = bob_id.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_client {
                let body = format!("message {c}/{i}: a line of text of a typical length here");
                loop {
                    let (status, answer) = alice
                        .post("/v1/messages", json!({"to": to, "body": body}))
                        .await;
                    match status {
                        202 => break,
                        429 => tokio::time::sleep(Duration::from_millis(50)).await,
                        _ => panic!("{status}: {answer}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sent = per_client * CLIENTS;
    let took = start.elapsed();
    // Wait for the outbox to empty (everything delivered), so the figure is the vault's.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let pool = sqlx::SqlitePool::connect(&format!(
            "sqlite:{}?mode=ro",
            alice_dir.join("volli.db").display()
        ))
        .await
        .unwrap();
        let (queued,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        if queued == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let full = on_disk(&alice_dir);
    println!(
        "{sent} messages sent in {took:?} ({:.0} msgs/s); A's database: empty {}, with them {}",
        sent as f64 / took.as_secs_f64(),
        mb(empty),
        mb(full)
    );

    let start = Instant::now();
    let (status, body) = alice
        .request(
            reqwest::Method::PUT,
            "/v1/retention",
            Some(json!({"default": {"keep_last": 1}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(1800);
    while count(&alice).await > 1 {
        assert!(Instant::now() < deadline, "retention did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deleted_in = start.elapsed();
    // The reclaim follows the last batch.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = on_disk(&alice_dir);
    Arc::get_mut(&mut alice).unwrap().terminate();
    let stopped = on_disk(&alice_dir);
    let again = Node::start(&alice_dir).await;
    let (_, page) = again
        .get(&format!("/v1/messages?with={bob_id}&limit=10"))
        .await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    println!(
        "retention \"keep the last 1\": {} messages deleted in {deleted_in:?} ({:.0} msgs/s); \
         A's database after: {} running, {} stopped (was {})",
        sent - 1,
        (sent - 1) as f64 / deleted_in.as_secs_f64(),
        mb(after),
        mb(stopped),
        mb(full)
    );
}
