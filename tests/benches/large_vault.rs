//! A large vault through the real binary: 100,000 messages over 100 contacts, one of them
//! holding 50,000. The vault is written with the store's own API into the data dir of a
//! node created by the binary (its identity is real), then the release binary is measured
//! through the public API: cold start to `/health`, a page of 100 messages (newest, and
//! 40,000 deep) against the same indexed SQLite query run in the same process, resident
//! memory after reading pages from 10 conversations, and exporting the updates of 1,000 new
//! messages for another device against a raw Loro export of the same changes.
//!
//! `cargo bench -p volli-tests --bench large_vault` (`VOLLI_BENCH_MESSAGES` to scale down).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use volli_core::{ContactCard, MessageId, Timestamp, UserId, UserSecret};
use volli_store::vault::{MessageStatus, StoredMessage};
use volli_store::{Store, VaultOptions};
use volli_tests::Node;

const CONTACTS: usize = 100;
const PAGE: usize = 100;
const TRIALS: usize = 300;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(mut d: Vec<Duration>) -> (Duration, Duration) {
    d.sort();
    (pct(&d, 0.5), pct(&d, 0.99))
}

fn contact(i: usize) -> UserSecret {
    let mut master = [7u8; 32];
    master[..8].copy_from_slice(&(i as u64).to_le_bytes());
    UserSecret::from_master(master)
}

fn body(n: usize) -> String {
    format!("message {n}: a line of ordinary chat text, about as long as most messages are")
}

/// Writes `total` messages over [`CONTACTS`] contacts (half of them with the first) into
/// the vault in `data_dir`, as the user `me`.
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
    let started = Instant::now();
    let base = Timestamp::now().as_millis() - total as i64 * 10;
    let mut batch = Vec::new();
    for n in 0..total {
        let with = if n % 2 == 0 {
            ids[0]
        } else {
            ids[1 + (n / 2) % (CONTACTS - 1)]
        };
        let incoming = n % 3 == 0;
        batch.push((
            with,
            StoredMessage {
                id: MessageId::random().unwrap(),
                from: if incoming { with } else { me },
                to: if incoming { me } else { with },
                body: body(n),
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
    let elapsed = started.elapsed();
    store.close().await;
    println!(
        "filled {total} messages over {CONTACTS} contacts through the store in {elapsed:?} ({:.0} msgs/s in batches of 1,000)",
        total as f64 / elapsed.as_secs_f64()
    );
    ids
}

async fn timed_get(node: &Node, path: &str, trials: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(trials);
    for _ in 0..trials {
        let start = Instant::now();
        let (status, body) = node.get(path).await;
        out.push(start.elapsed());
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["messages"].as_array().unwrap().len(), PAGE);
    }
    out
}

/// The same page straight from SQLite, in this process: the baseline.
async fn sqlite_page(pool: &sqlx::SqlitePool, with: &str, cursor: Option<&[u8]>) -> Duration {
    let start = Instant::now();
    let rows: Vec<(Vec<u8>, String, String, String, i64, i64)> = match cursor {
        None => sqlx::query_as(
            "SELECT id, sender, recipient, body, sent_at, status FROM messages \
             WHERE conversation = ? ORDER BY sent_at DESC, id DESC LIMIT ?",
        )
        .bind(with)
        .bind(PAGE as i64)
        .fetch_all(pool)
        .await
        .unwrap(),
        Some(id) => {
            let (at,): (i64,) = sqlx::query_as("SELECT sent_at FROM messages WHERE id = ?")
                .bind(id)
                .fetch_one(pool)
                .await
                .unwrap();
            sqlx::query_as(
                "SELECT id, sender, recipient, body, sent_at, status FROM messages \
                 WHERE conversation = ? AND (sent_at, id) < (?, ?) \
                 ORDER BY sent_at DESC, id DESC LIMIT ?",
            )
            .bind(with)
            .bind(at)
            .bind(id)
            .bind(PAGE as i64)
            .fetch_all(pool)
            .await
            .unwrap()
        }
    };
    let elapsed = start.elapsed();
    assert_eq!(rows.len(), PAGE);
    elapsed
}

/// The same message as a chunk entry in a raw Loro map.
fn raw_insert(map: &loro::LoroMap, m: &StoredMessage) {
    let e = map.ensure_mergeable_map(&m.id.to_string()).unwrap();
    e.insert("from", m.from.to_string()).unwrap();
    e.insert("to", m.to.to_string()).unwrap();
    e.insert("body", m.body.as_str()).unwrap();
    e.insert("sent_at", m.sent_at.as_millis()).unwrap();
    e.insert("status", m.status.as_str()).unwrap();
}

/// Exporting 1,000 new messages for another device that already has the 300 before them,
/// against raw Loro doing the same: the same entries written in the same commits (batches
/// of 100), then `export(updates(the other device's version))`.
async fn export_figures(dir: &Path) {
    let me = UserSecret::from_master([1; 32]).user_id();
    let bob = UserSecret::from_master([2; 32]).user_id();
    let messages: Vec<StoredMessage> = (0..1_300)
        .map(|n| StoredMessage {
            id: MessageId::random().unwrap(),
            from: me,
            to: bob,
            body: body(n),
            sent_at: Timestamp::from_millis(1_800_000_000_000 + n as i64),
            status: MessageStatus::Queued,
            extra: Default::default(),
        })
        .collect();
    let (known, new) = messages.split_at(300);
    let mut ours = Vec::new();
    let mut raw = Vec::new();
    for round in 0..15 {
        let store = Store::open(
            &dir.join(format!("export-{round}")),
            VaultOptions::default(),
        )
        .await
        .unwrap();
        let batch = |ms: &[StoredMessage]| ms.iter().map(|m| (bob, m.clone())).collect();
        store.vault().put_messages(batch(known)).await.unwrap();
        let before = store.vault().version().await.unwrap();
        for part in new.chunks(100) {
            store.vault().put_messages(batch(part)).await.unwrap();
        }
        let start = Instant::now();
        let (delta, more) = store
            .vault()
            .export_since(before, usize::MAX)
            .await
            .unwrap();
        ours.push(start.elapsed());
        assert!(!more && delta.size() > 0);
        store.close().await;

        let doc = loro::LoroDoc::new();
        doc.set_peer_id(round + 1).unwrap();
        let map = doc.get_map("messages");
        for m in known {
            raw_insert(&map, m);
        }
        doc.commit();
        let before = doc.oplog_vv();
        for part in new.chunks(100) {
            for m in part {
                raw_insert(&map, m);
            }
            doc.commit();
        }
        let start = Instant::now();
        let bytes = doc.export(loro::ExportMode::updates(&before)).unwrap();
        raw.push(start.elapsed());
        assert!(!bytes.is_empty());
    }
    let (ours50, ours99) = summary(ours);
    let (raw50, raw99) = summary(raw);
    println!(
        "export of 1,000 new messages for a device that has the 300 before them: vault p50 \
         {ours50:?} p99 {ours99:?}; raw Loro export p50 {raw50:?} p99 {raw99:?}; ratio at p50 {:.2}",
        ours50.as_secs_f64() / raw50.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("VOLLI_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    let mut node = Node::start(&data).await;
    let (me, _) = node.ids().await;
    node.terminate();
    let ids = fill(&data, me.parse().unwrap(), total).await;
    let db_bytes = std::fs::metadata(data.join("volli.db"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!("database: {:.1} MiB", db_bytes as f64 / (1 << 20) as f64);

    let mut starts = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let mut n = Node::spawn(&data, &volli_tests::Options::default());
        n.wait_until_ready().await;
        starts.push(started.elapsed());
        n.terminate();
    }
    let (s50, s99) = summary(starts.clone());
    println!("cold start to /health (process spawn included), 5 starts: p50 {s50:?} max {s99:?}");

    let node = Node::start(&data).await;
    let rss_start = node.rss_mib().unwrap();
    let big = ids[0].to_string();
    let newest = timed_get(
        &node,
        &format!("/v1/messages?with={big}&limit={PAGE}"),
        TRIALS,
    )
    .await;

    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(data.join("volli.db"))
                .read_only(true),
        )
        .await
        .unwrap();
    let depth = (total / 2).min(40_000) as i64 - 1;
    let (cursor,): (Vec<u8>,) = sqlx::query_as(
        "SELECT id FROM messages WHERE conversation = ? ORDER BY sent_at DESC, id DESC LIMIT 1 OFFSET ?",
    )
    .bind(&big)
    .bind(depth)
    .fetch_one(&pool)
    .await
    .unwrap();
    let cursor_hex: String = cursor.iter().map(|b| format!("{b:02x}")).collect();
    let deep = timed_get(
        &node,
        &format!("/v1/messages?with={big}&limit={PAGE}&before={cursor_hex}"),
        TRIALS,
    )
    .await;
    let mut base_newest = Vec::new();
    let mut base_deep = Vec::new();
    for _ in 0..TRIALS {
        base_newest.push(sqlite_page(&pool, &big, None).await);
        base_deep.push(sqlite_page(&pool, &big, Some(&cursor)).await);
    }
    for (name, api, base) in [
        ("newest page", newest, base_newest),
        (&format!("page {} deep", depth + 1), deep, base_deep),
    ] {
        let (a50, a99) = summary(api);
        let (b50, b99) = summary(base);
        println!(
            "{name} of {PAGE} through the API: p50 {a50:?} p99 {a99:?}; same query on SQLite in-process: p50 {b50:?} p99 {b99:?}"
        );
    }
    for id in ids.iter().skip(1).take(9) {
        let (status, _) = node
            .get(&format!("/v1/messages?with={id}&limit={PAGE}"))
            .await;
        assert_eq!(status, 200);
    }
    let rss_read = node.rss_mib().unwrap();
    // Writing loads the newest chunk of each conversation written to (at most 16 stay).
    for id in ids.iter().take(30) {
        let (status, body) = node
            .post(
                "/v1/messages",
                serde_json::json!({"to": id.to_string(), "body": "hello"}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    println!(
        "RSS: {rss_start:.0} MiB after start, {rss_read:.0} MiB after reading pages of 10 conversations, \
         {:.0} MiB after writing to 30",
        node.rss_mib().unwrap()
    );
    drop(node);
    export_figures(tmp.path()).await;
}
