//! The vault through the real binary: a data dir written by the previous release upgrades
//! on first start; `kill -9` in the middle of that upgrade, or in the middle of a burst of
//! sends, loses nothing that was there or acknowledged; paging stays exact at depth.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use volli_core::{MessageId, Timestamp};
use volli_tests::{Node, Options, befriend, repo_root};

fn fixture() -> PathBuf {
    repo_root().join("tests/fixtures/vault-v1")
}

/// Copies the previous release's data dir (identity, token, database) to `dest`, with the
/// permissions the node insists on for its keys (git does not keep them).
fn copy_fixture(dest: &Path) {
    std::fs::create_dir_all(dest.join("identity")).unwrap();
    for f in [
        "identity/user.key",
        "identity/device.key",
        "identity/device.cert",
        "admin.token",
        "volli.db",
    ] {
        std::fs::copy(fixture().join(f), dest.join(f)).unwrap();
        std::fs::set_permissions(dest.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    for d in [dest.to_path_buf(), dest.join("identity")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
}

/// Every message of the conversation with `with`, oldest first, paged back 100 at a time.
async fn all_messages(node: &Node, with: &str) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut before = String::new();
    loop {
        let (status, body) = node
            .get(&format!("/v1/messages?with={with}&limit=100{before}"))
            .await;
        assert_eq!(status, 200, "{body}");
        let page = body["messages"].as_array().unwrap().clone();
        if page.is_empty() {
            return out;
        }
        before = format!("&before={}", page[0]["id"].as_str().unwrap());
        let mut page = page;
        page.extend(out);
        out = page;
    }
}

fn key(m: &Value) -> (i64, String, String, String, String) {
    let at = m["sent_at"].as_str().unwrap();
    (
        Timestamp::parse_rfc3339(at).unwrap().as_millis(),
        m["id"].as_str().unwrap().to_owned(),
        m["from"].as_str().unwrap().to_owned(),
        m["body"].as_str().unwrap().to_owned(),
        m["status"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_data_dir_from_the_previous_release_upgrades_on_first_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("alice");
    copy_fixture(&dir);
    let expected: Value =
        serde_json::from_slice(&std::fs::read(fixture().join("expected.json")).unwrap()).unwrap();

    let mut node = Node::start(&dir).await;
    for round in 0..2 {
        let (_, me) = node.get("/v1/node").await;
        assert_eq!(me["user_id"], expected["node"]["user_id"]);
        assert_eq!(me["peer_id"], expected["node"]["peer_id"]);
        let (_, contacts) = node.get("/v1/contacts").await;
        let names: BTreeMap<String, String> = contacts["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["user_id"].as_str().unwrap().into(),
                    c["name"].as_str().unwrap().into(),
                )
            })
            .collect();
        let want: BTreeMap<String, String> = expected["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["user_id"].as_str().unwrap().into(),
                    c["name"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(names, want);
        let (_, settings) = node.get("/v1/settings").await;
        assert_eq!(settings, expected["settings"]);
        for (with, messages) in expected["conversations"].as_object().unwrap() {
            let got = all_messages(&node, with).await;
            for m in &got {
                // Fixed-width times: text order is time order.
                assert_eq!(m["sent_at"].as_str().unwrap().len(), 24, "{m}");
            }
            let mut want: Vec<_> = messages.as_array().unwrap().iter().map(key).collect();
            want.sort();
            // Mail the previous release queued expires `MAX_TTL` after it was sent (the
            // fixture's is of 2026-11-29): past that, the outbox marks it failed when it
            // next looks at it, which may be before or after this reads it.
            let ttl = i64::try_from(volli_core::wire::MAX_TTL.as_millis()).unwrap();
            let now = Timestamp::now().as_millis();
            let queued: BTreeMap<String, bool> = want
                .iter()
                .map(|k| (k.1.clone(), k.4 == "queued" && k.0 + ttl <= now))
                .collect();
            let got: Vec<_> = got
                .iter()
                .map(key)
                .map(|mut k| {
                    if k.4 == "failed" && queued.get(&k.1) == Some(&true) {
                        k.4 = "queued".into();
                    }
                    k
                })
                .collect();
            assert_eq!(got, want, "conversation with {with}, round {round}");
        }
        node.terminate();
        node = Node::start(&dir).await;
    }
}

/// Adds `count` messages with `with` to a vault in the previous release's layout, written
/// the way that release wrote them (one update appended to `vault_updates`).
async fn grow_old_vault(db: &Path, with: &str, me: &str, count: usize) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", db.display()))
        .await
        .unwrap();
    let doc = loro::LoroDoc::new();
    let snapshot: Option<(Vec<u8>, Option<Vec<u8>>, i64)> = sqlx::query_as(
        "SELECT snapshot, pending, upto_seq FROM vault_snapshots ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(&pool)
    .await
    .unwrap();
    let mut after = 0;
    if let Some((snapshot, pending, upto)) = snapshot {
        doc.import(&snapshot).unwrap();
        if let Some(p) = pending {
            doc.import(&p).unwrap();
        }
        after = upto;
    }
    let updates: Vec<(Vec<u8>,)> =
        sqlx::query_as("SELECT bytes FROM vault_updates WHERE seq > ? ORDER BY seq")
            .bind(after)
            .fetch_all(&pool)
            .await
            .unwrap();
    for (u,) in updates {
        doc.import(&u).unwrap();
    }
    doc.set_peer_id(424_242).unwrap();
    let before = doc.oplog_vv();
    let list = doc
        .get_map("conversations")
        .ensure_mergeable_map(with)
        .unwrap()
        .ensure_mergeable_map("messages")
        .unwrap();
    for n in 0..count {
        let id = MessageId::random().unwrap();
        let e = list.ensure_mergeable_map(&id.to_string()).unwrap();
        e.insert("from", me).unwrap();
        e.insert("to", with).unwrap();
        e.insert("body", format!("old message {n}")).unwrap();
        e.insert("sent_at", 1_700_000_000_000i64 + n as i64)
            .unwrap();
        e.insert("status", "delivered").unwrap();
        if n % 1_000 == 999 {
            doc.commit();
        }
    }
    doc.commit();
    let bytes = doc.export(loro::ExportMode::updates(&before)).unwrap();
    sqlx::query("INSERT INTO vault_updates (bytes, created_at) VALUES (?, 0)")
        .bind(bytes)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

async fn integrity_ok(db: &Path) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", db.display()))
        .await
        .unwrap();
    let (result,): (String,) = sqlx::query_as("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(result, "ok");
    pool.close().await;
}

#[tokio::test]
async fn kill_9_during_the_upgrade_of_a_large_vault_loses_nothing() {
    const EXTRA: usize = 6_000;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("alice");
    copy_fixture(&dir);
    let expected: Value =
        serde_json::from_slice(&std::fs::read(fixture().join("expected.json")).unwrap()).unwrap();
    let me = expected["node"]["user_id"].as_str().unwrap().to_owned();
    let (bob, bob_messages) = expected["conversations"]
        .as_object()
        .unwrap()
        .iter()
        .max_by_key(|(_, v)| v.as_array().unwrap().len())
        .map(|(k, v)| (k.clone(), v.as_array().unwrap().len()))
        .unwrap();
    grow_old_vault(&dir.join("volli.db"), &bob, &me, EXTRA).await;

    // Kill the node at different moments of the upgrade, then let one finish.
    let mut killed_mid_upgrade = 0;
    for delay_ms in [0u64, 20, 60, 150, 300] {
        let mut node = Node::spawn(&dir, &Options::default());
        let start = Instant::now();
        let began = loop {
            if node.log().matches("migrating the vault").count() > killed_mid_upgrade {
                break true;
            }
            if node.log().contains("API listening") || start.elapsed() > Duration::from_secs(60) {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let finished = node.log().contains("vault migrated");
        node.kill();
        if !began || finished {
            break;
        }
        killed_mid_upgrade += 1;
    }
    assert!(killed_mid_upgrade >= 1, "no kill landed inside the upgrade");

    let node = Node::start(&dir).await;
    assert!(node.log().contains("vault migrated"), "{}", node.log());
    let got = all_messages(&node, &bob).await;
    assert_eq!(got.len(), bob_messages + EXTRA);
    let ids: HashSet<&str> = got.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), got.len());
    for (with, messages) in expected["conversations"].as_object().unwrap() {
        let got: HashSet<String> = all_messages(&node, with)
            .await
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        for m in messages.as_array().unwrap() {
            assert!(got.contains(m["id"].as_str().unwrap()));
        }
    }
    drop(node);
    integrity_ok(&dir.join("volli.db")).await;
}

#[tokio::test]
async fn kill_9_during_a_burst_of_sends_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let mut alice = Node::start(&tmp.path().join("alice")).await;
    let bob = Node::start(&tmp.path().join("bob")).await;
    befriend(&alice, &bob).await;
    let (bob_id, _) = bob.ids().await;
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (url, token, to, acks) = (
            alice.url.clone(),
            alice.token.clone(),
            bob_id.clone(),
            acknowledged.clone(),
        );
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for n in 0.. {
                let sent = http
                    .post(format!("{url}/v1/messages"))
                    .bearer_auth(&token)
                    .json(&json!({"to": to, "body": format!("burst {c}/{n}")}))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 202 => {
                        let body: Value = r.json().await.unwrap();
                        acks.lock()
                            .unwrap()
                            .push(body["id"].as_str().unwrap().to_owned());
                    }
                    Ok(r) if r.status() == 429 => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    _ => return,
                }
            }
        }));
    }
    // Kill mid-burst: after at least 1.5 s and more than 50 acknowledged sends (a slow
    // machine needs longer for them), at most 30 s.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acknowledged.lock().unwrap().len() <= 50 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    alice.kill();
    for c in clients {
        c.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 50,
        "only {} sends acknowledged",
        acknowledged.len()
    );

    let alice = Node::start(&tmp.path().join("alice")).await;
    let stored: HashSet<String> = all_messages(&alice, &bob_id)
        .await
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &acknowledged {
        assert!(stored.contains(id), "acknowledged message {id} lost");
    }
    drop(alice);
    integrity_ok(&tmp.path().join("alice/volli.db")).await;
}
