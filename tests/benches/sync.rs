//! Vault sync between two devices of one user, through the real release binaries on
//! loopback (API → vault → network → vault → SQLite):
//! - a new device pairing with a device whose vault holds 10,000 messages: from the join
//!   request until the new device shows the whole conversation;
//! - 100 and 1,000 new messages written on one device until the other shows them all,
//!   against raw Loro exporting and importing the same changes in this process plus one
//!   round trip between the nodes (an API ping stands for it).
//!
//! `cargo bench -p volli-tests --bench sync`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use volli_core::{ContactCard, MessageId, Timestamp, UserSecret};
use volli_store::vault::{MessageStatus, StoredMessage};
use volli_store::{Store, VaultOptions};
use volli_tests::{Node, events, next_event};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// How many messages `node` shows with `with` (paging through all of them).
async fn count(node: &Node, with: &str) -> usize {
    let mut n = 0;
    let mut before = String::new();
    loop {
        let (_, body) = node
            .get(&format!("/v1/messages?with={with}&limit=500{before}"))
            .await;
        let page = body["messages"].as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            return n;
        }
        n += page.len();
        before = format!("&before={}", page[0]["id"].as_str().unwrap());
    }
}

async fn newest(node: &Node, with: &str) -> Option<String> {
    let (_, body) = node.get(&format!("/v1/messages?with={with}&limit=1")).await;
    body["messages"][0]["id"].as_str().map(str::to_owned)
}

fn message(me: volli_core::UserId, with: volli_core::UserId, n: usize) -> StoredMessage {
    StoredMessage {
        id: MessageId::random().unwrap(),
        from: me,
        to: with,
        body: format!("message {n}: a line of ordinary chat text, about as long as most are"),
        sent_at: Timestamp::from_millis(1_800_000_000_000 + n as i64),
        status: MessageStatus::Delivered,
        extra: Default::default(),
    }
}

/// Raw Loro: `n` message entries written in one document in commits of 100, exported as
/// updates and imported into a copy that had none of them.
fn raw_loro(n: usize) -> Duration {
    let source = loro::LoroDoc::new();
    source.set_peer_id(1).unwrap();
    let copy = loro::LoroDoc::new();
    copy.set_peer_id(2).unwrap();
    let before = source.oplog_vv();
    let map = source.get_map("messages");
    let me = UserSecret::from_master([1; 32]).user_id();
    let with = UserSecret::from_master([2; 32]).user_id();
    for batch in (0..n).collect::<Vec<_>>().chunks(100) {
        for i in batch {
            let m = message(me, with, *i);
            let e = map.ensure_mergeable_map(&m.id.to_string()).unwrap();
            e.insert("from", m.from.to_string()).unwrap();
            e.insert("to", m.to.to_string()).unwrap();
            e.insert("body", m.body.as_str()).unwrap();
            e.insert("sent_at", m.sent_at.as_millis()).unwrap();
            e.insert("status", m.status.as_str()).unwrap();
        }
        source.commit();
    }
    let start = Instant::now();
    let bytes = source.export(loro::ExportMode::updates(&before)).unwrap();
    copy.import(&bytes).unwrap();
    start.elapsed()
}

#[tokio::main]
async fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let first_dir = tmp.path().join("first");
    // A user with one contact and 10,000 messages, written with the store into the data dir
    // of a node the binary created.
    let mut first = Node::start(&first_dir).await;
    let (me, _) = first.ids().await;
    first.terminate();
    let me: volli_core::UserId = me.parse().unwrap();
    let friend = UserSecret::from_master([9; 32]);
    let with = friend.user_id();
    {
        let store = Store::open(&first_dir, VaultOptions::default())
            .await
            .unwrap();
        let card = ContactCard::issue(&friend, "friend", &[], &[], Timestamp::now());
        store.vault().put_contact(card, None).await.unwrap();
        let ms: Vec<_> = (0..10_000).map(|n| (with, message(me, with, n))).collect();
        for part in ms.chunks(1_000) {
            store.vault().put_messages(part.to_vec()).await.unwrap();
        }
        store.close().await;
    }
    let first = Node::start(&first_dir).await;
    let second_dir = tmp.path().join("second");
    let mut second = Node::start(&second_dir).await;
    let with_text = with.to_string();

    let (_, offer) = first.post("/v1/pairing", json!({})).await;
    let mut first_events = events(&first).await;
    let started = Instant::now();
    let (status, joining) = second
        .post("/v1/pairing/join", json!({"link": offer["link"]}))
        .await;
    assert_eq!(status, 202, "{joining}");
    next_event(
        &mut first_events,
        "pairing.request",
        Duration::from_secs(10),
        |_| true,
    )
    .await;
    let asked = started.elapsed();
    first
        .post(
            &format!("/v1/pairing/{}/approve", offer["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    let newest_first = newest(&first, &with_text).await;
    loop {
        if newest(&second, &with_text).await == newest_first
            && count(&second, &with_text).await == 10_000
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no convergence"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let converged = started.elapsed();
    println!(
        "new device, vault of 10,000 messages: join → converged {converged:?} (of which join → approval asked {asked:?}; \
         the approval itself is a person's click, here immediate)"
    );

    // New messages on the first device until the second shows them: the messages go to the
    // friend, whose node does not exist, so they only touch the first device's vault.
    let mut pings = Vec::new();
    for _ in 0..50 {
        let start = Instant::now();
        second.get("/health").await;
        pings.push(start.elapsed());
    }
    pings.sort();
    let rtt = pct(&pings, 0.5);
    for n in [100usize, 1_000] {
        let mut took = Vec::new();
        let mut raw = Vec::new();
        for _ in 0..if n == 100 { 20 } else { 8 } {
            let before = count(&second, &with_text).await;
            let mut sends = Vec::new();
            for c in 0..16 {
                let (url, token, to) = (first.url.clone(), first.token.clone(), with_text.clone());
                sends.push(tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    for i in (c..n).step_by(16) {
                        let r = http
                            .post(format!("{url}/v1/messages"))
                            .bearer_auth(&token)
                            .json(&json!({"to": to, "body": format!("new {i}")}))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), 202);
                    }
                }));
            }
            for s in sends {
                s.await.unwrap();
            }
            // All are durable on the first device: from here to the second device.
            let start = Instant::now();
            let target = newest(&first, &with_text).await;
            loop {
                if newest(&second, &with_text).await == target {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(60));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            took.push(start.elapsed());
            assert_eq!(count(&second, &with_text).await, before + n);
            raw.push(raw_loro(n));
        }
        took.sort();
        raw.sort();
        let (p50, p99) = (pct(&took, 0.5), pct(&took, 0.99));
        let baseline = pct(&raw, 0.5) + rtt;
        println!(
            "{n} new messages, first device durable → second device shows them: p50 {p50:?} p99 {p99:?}; \
             raw Loro export+import {:?} + one round trip {rtt:?} = {baseline:?} → {:.2}× at p50",
            pct(&raw, 0.5),
            p50.as_secs_f64() / baseline.as_secs_f64()
        );
    }

    // Catching up: 1,000 messages written while the second device was off.
    let mut catch_up = Vec::new();
    for _ in 0..5 {
        second.terminate();
        for i in 0..1_000 {
            let (status, _) = first
                .post(
                    "/v1/messages",
                    json!({"to": with_text, "body": format!("offline {i}")}),
                )
                .await;
            assert_eq!(status, 202);
        }
        let target = newest(&first, &with_text).await;
        let start = Instant::now();
        second = Node::start(&second_dir).await;
        let up = start.elapsed();
        loop {
            if newest(&second, &with_text).await == target {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(60));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        catch_up.push((start.elapsed(), up));
    }
    catch_up.sort();
    let (total, up) = catch_up[catch_up.len() / 2];
    println!(
        "1,000 messages written while the second device was off: process start → converged p50 {total:?} \
         (of which start → API up {up:?}; the rest is connecting, the hello and one pull)"
    );
    let _: Value = Value::Null;
}
