//! Backups held by friends at scale, through the real binary: a user with N messages
//! (default 100,000, over 100 contacts) backs up to five friends; the size all holders keep
//! against n/k × the sealed (compressed, padded) backup; an incremental refresh after 100 new
//! messages against the full backup; then the machine is lost, two holders stop, and a fresh
//! node is restored from the phrase — timed from the request to the first message listed.
//!
//! `cargo bench -p volli-tests --bench backup_restore` (`VOLLI_BENCH_MESSAGES` to scale
//! down; `VOLLI_BIN` to measure a given binary).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use volli_core::{ContactCard, MessageId, Timestamp, UserId, UserSecret};
use volli_store::vault::{MessageStatus, StoredMessage};
use volli_store::{Store, VaultOptions};
use volli_tests::{Node, befriend, send};

const CONTACTS: usize = 100;

fn contact(i: usize) -> UserSecret {
    let mut master = [9u8; 32];
    master[..8].copy_from_slice(&(i as u64).to_le_bytes());
    UserSecret::from_master(master)
}

/// Writes `total` messages over [`CONTACTS`] contacts into the vault in `data_dir`.
async fn fill(data_dir: &Path, me: UserId, total: usize) -> Vec<UserId> {
    let store = Store::open(data_dir, VaultOptions::default())
        .await
        .unwrap();
    let vault = store.vault();
    let mut ids = Vec::new();
    for i in 0..CONTACTS {
        let secret = contact(i);
        let card = ContactCard::issue(&secret, &format!("contact {i}"), &[], &[], Timestamp::now());
        vault.put_contact(card, None).await.unwrap();
        ids.push(secret.user_id());
    }
    let base = Timestamp::now().as_millis() - total as i64 * 10;
    let mut batch = Vec::new();
    for n in 0..total {
        let with = ids[n % CONTACTS];
        let incoming = n % 3 == 0;
        batch.push((
            with,
            StoredMessage {
                id: MessageId::random().unwrap(),
                from: if incoming { with } else { me },
                to: if incoming { me } else { with },
                body: format!(
                    "message {n}: a line of ordinary chat text, about as long as most messages are"
                ),
                sent_at: Timestamp::from_millis(base + n as i64 * 10),
                status: if incoming {
                    MessageStatus::Received
                } else {
                    MessageStatus::Delivered
                },
                extra: Default::default(),
            },
        ));
        if batch.len() == 1_000 {
            vault
                .put_messages(std::mem::take(&mut batch))
                .await
                .unwrap();
        }
    }
    vault.put_messages(batch).await.unwrap();
    store.close().await;
    ids
}

/// Refreshes now, waiting out a refresh the node started itself.
async fn refresh(node: &Node) -> Value {
    loop {
        let (status, body) = node.post("/v1/backup/refresh", json!({})).await;
        if status == 409 && body["error"]["code"] == "backup_busy" {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(status, 200, "{body}");
        return body;
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("VOLLI_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir().unwrap();
    let alice_dir = tmp.path().join("alice");
    let mut alice = Node::start(&alice_dir).await;
    let (me, _) = alice.ids().await;
    alice.terminate();
    let ids = fill(&alice_dir, me.parse().unwrap(), total).await;
    let db = std::fs::metadata(alice_dir.join("volli.db"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "{total} messages over {CONTACTS} contacts; database {:.1} MiB",
        mib(db)
    );

    let alice = Node::start(&alice_dir).await;
    let mut friends = Vec::new();
    for i in 0..5 {
        let friend = Node::start(&tmp.path().join(format!("friend{i}"))).await;
        befriend(&alice, &friend).await;
        friends.push(friend);
    }
    let bob = friends[0].ids().await.0;

    let started = Instant::now();
    let (status, body) = alice.post("/v1/backup/setup", json!({})).await;
    assert_eq!(status, 201, "{body}");
    let phrase = body["phrase"].as_str().unwrap().to_owned();
    let status = alice
        .wait_for("/v1/backup", Duration::from_secs(600), |b| {
            b["seq"].as_u64() >= Some(1)
        })
        .await;
    let full = status["last_sent_bytes"].as_u64().unwrap();
    let sealed = status["bytes"].as_u64().unwrap();
    let stored = status["stored_bytes"].as_u64().unwrap();
    let (k, n) = (status["k"].as_u64().unwrap(), status["n"].as_u64().unwrap());
    println!(
        "first backup ({k} of {n}) in {:?}: sealed {:.2} MiB; all holders keep {:.2} MiB = {:.3} × (n/k × sealed); sent {:.2} MiB",
        started.elapsed(),
        mib(sealed),
        mib(stored),
        stored as f64 / (sealed as f64 * n as f64 / k as f64),
        mib(full)
    );

    for i in 0..100 {
        send(&alice, &bob, &format!("new message {i}")).await;
    }
    let started = Instant::now();
    let again = refresh(&alice).await;
    let sent = again["bytes_sent"].as_u64().unwrap();
    println!(
        "refresh after 100 new messages in {:?}: {} of {} parts sealed anew, {:.3} MiB sent = {:.2} % of the full backup",
        started.elapsed(),
        again["parts_sealed"],
        again["parts"],
        mib(sent),
        sent as f64 * 100.0 / full as f64
    );

    let mut alice = alice;
    alice.kill();
    std::fs::remove_dir_all(&alice.data_dir).unwrap();
    friends[3].terminate();
    friends[4].terminate();
    let fresh = Node::start(&tmp.path().join("fresh")).await;
    let from = friends[0].p2p_addr().await;
    let started = Instant::now();
    let (status, body) = fresh
        .post(
            "/v1/backup/restore",
            json!({"phrase": phrase, "bootstrap": [from]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let answered = started.elapsed();
    let first = ids[0].to_string();
    fresh
        .wait_for(
            &format!("/v1/messages?with={first}&limit=1"),
            Duration::from_secs(600),
            |b| b["messages"].as_array().is_some_and(|m| !m.is_empty()),
        )
        .await;
    println!(
        "restore from 3 of 5 holders (2 stopped): answered in {answered:?}, first message listed after {:?} ({} documents, {} holders used)",
        started.elapsed(),
        body["documents"],
        body["holders_used"]
    );
}
