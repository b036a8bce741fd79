//! Group conversations through real release nodes on loopback, through the public API:
//!
//! 1. **Fan-out**: a group of `VOLLI_BENCH_USERS` users (default 20) with two devices each;
//!    the creator's first device sends, one message at a time; the time until every other
//!    device shows it (its own user's second device included), p50 and p99, over
//!    `VOLLI_BENCH_TRIALS` messages (default 30). A device shows a message when its client
//!    has the `group.message` event (`VOLLI_BENCH_WATCH=poll`: when `GET /v1/messages` lists
//!    it, asked every 10 ms).
//! 2. **Adding a member** to a group of `VOLLI_BENCH_BIG` users (default 50, one device each):
//!    the commit's size (what the committer recorded) and the time until every member is at
//!    its epoch.
//! 3. **Catching up**: a member offline while `VOLLI_BENCH_MISSED` messages (default 500) were
//!    sent: the time from its start until it has them all, in order.
//! 4. **A group file to a stranger of its sender**: Bob offers `VOLLI_BENCH_FILE_MIB` MiB
//!    (default 256) by path to a group where Carol knows only Alice. Carol fetches it
//!    through Alice while Alice has not taken it (Alice passes the chunks on), then Alice
//!    fetches it from Bob; a second file Alice takes first, and Carol fetches it from
//!    Alice's store. Each from the fetcher's accept until `completed`.
//!
//! `cargo bench -p volli-tests --bench groups`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{Value, json};
use volli_tests::{Node, befriend, free_port, on_port, pair};

const WAIT: Duration = Duration::from_secs(300);

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Starts `n` nodes named `prefix{i}` under `root`, on fixed ports.
async fn start(root: &Path, prefix: &str, n: usize) -> Vec<Node> {
    join_all((0..n).map(|i| {
        let dir = root.join(format!("{prefix}{i}"));
        async move { Node::start_with(&dir, on_port(free_port())).await }
    }))
    .await
}

async fn ready(node: &Node, with: &str) {
    node.wait_for(&format!("/v1/conversations/{with}"), WAIT, |c| {
        c["ready"] == true
    })
    .await;
}

/// Waits until every node shows group `id` at one epoch with `devices` member devices.
async fn settled(nodes: &[&Node], id: &str, devices: usize) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let path = format!("/v1/groups/{id}");
        let views = join_all(nodes.iter().map(|n| n.get(&path))).await;
        let counts: Vec<(u64, usize)> = views
            .iter()
            .map(|(status, g)| {
                let devices = g["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| m["devices"].as_array().map_or(0, Vec::len))
                    .sum();
                (
                    if *status == 200 {
                        g["epoch"].as_u64().unwrap_or(0)
                    } else {
                        0
                    },
                    devices,
                )
            })
            .collect();
        let epoch = counts[0].0;
        if epoch > 0 && counts.iter().all(|c| *c == (epoch, devices)) {
            return epoch;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not settle: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn last_id(node: &Node, id: &str) -> Option<String> {
    let (_, list) = node.get(&format!("/v1/messages?group={id}&limit=1")).await;
    list["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["id"].as_str())
        .map(String::from)
}

async fn create(creator: &Node, name: &str, members: &[String]) -> String {
    let (status, group) = creator
        .post("/v1/groups", json!({"name": name, "members": members}))
        .await;
    assert_eq!(status, 201, "{group}");
    group["id"].as_str().unwrap().to_owned()
}

async fn fan_out(root: &Path) {
    let users = env("VOLLI_BENCH_USERS", 20);
    // VOLLI_BENCH_DEVICES=1: one device per user (what the second devices cost).
    let paired = env("VOLLI_BENCH_DEVICES", 2) > 1;
    let first = start(root, "u", users).await;
    let second = if paired {
        start(root, "s", users).await
    } else {
        Vec::new()
    };
    join_all(first.iter().zip(&second).map(|(a, b)| pair(a, b, None))).await;
    let mut ids = Vec::new();
    for node in &first {
        ids.push(node.ids().await.0);
    }
    // The creator knows everyone; the others know only the creator (an invited group).
    for other in &first[1..] {
        befriend(&first[0], other).await;
    }
    for id in &ids[1..] {
        ready(&first[0], id).await;
    }
    let group = create(&first[0], "fan-out", &ids[1..]).await;
    let all: Vec<&Node> = first.iter().chain(&second).collect();
    let setup = Instant::now();
    let devices = all.len();
    settled(&all, &group, devices).await;
    println!(
        "{users} users, {devices} devices: every device in the group {:?} after it was created",
        setup.elapsed()
    );
    // Every other device, in user order: first devices, then second devices.
    let others: Vec<&Node> = all.iter().copied().skip(1).collect();
    // How a device "shows" a message: its `group.message` event on the WebSocket, as a
    // client sees it (the default), or VOLLI_BENCH_WATCH=poll: `GET /v1/messages` every
    // 10 ms (the way this was measured first; 39 nodes polled load the two cores).
    let poll = std::env::var("VOLLI_BENCH_WATCH").is_ok_and(|w| w == "poll");
    // The sender's own second device (others[users - 1]) has its messages by the vault's
    // sync, which raises no `group.message`: it is polled either way.
    let mut streams = Vec::new();
    for (k, n) in others.iter().enumerate() {
        streams.push(if poll || (paired && k == users - 1) {
            None
        } else {
            Some(volli_tests::events(n).await)
        });
    }
    let mut every_device = Vec::new();
    let mut every_member = Vec::new();
    let trials = env("VOLLI_BENCH_TRIALS", 30);
    eprintln!("trials begin");
    for i in 0..trials {
        let start = Instant::now();
        let (status, sent) = first[0]
            .post(
                "/v1/messages",
                json!({"group": group, "body": format!("ping {i}")}),
            )
            .await;
        assert_eq!(status, 202, "{sent}");
        let id = sent["id"].as_str().unwrap().to_owned();
        let shown: Vec<Duration> =
            join_all(others.iter().zip(streams.iter_mut()).map(|(n, events)| {
                let id = id.clone();
                let group = group.clone();
                async move {
                    if let Some(events) = events {
                        volli_tests::next_event(events, "group.message", WAIT, |e| e["id"] == id)
                            .await;
                        return start.elapsed();
                    }
                    let deadline = Instant::now() + WAIT;
                    while last_id(n, &group).await.as_deref() != Some(id.as_str()) {
                        assert!(
                            Instant::now() < deadline,
                            "message {id} never reached {}",
                            n.url
                        );
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    start.elapsed()
                }
            }))
            .await;
        every_device.push(*shown.iter().max().unwrap());
        // A member has it once one of its devices does: the others' first devices are
        // shown[..users-1], then the sender's own second device, then the others' second
        // devices (each member's devices are offered it at once).
        let firsts = &shown[..users - 1];
        let seconds = shown.get(users..).unwrap_or_default();
        every_member.push(if paired {
            firsts
                .iter()
                .zip(seconds)
                .map(|(a, b)| *a.min(b))
                .max()
                .unwrap()
        } else {
            *firsts.iter().max().unwrap()
        });
    }
    eprintln!("trials end");
    every_device.sort();
    every_member.sort();
    println!(
        "a message to a {users}-member group ({} devices), {trials} one at a time: until one device of every member shows it p50 {:?}  p99 {:?}; until every other device does (the sender's second device by the vault's sync) p50 {:?}  p99 {:?}",
        devices,
        pct(&every_member, 0.5),
        pct(&every_member, 0.99),
        pct(&every_device, 0.5),
        pct(&every_device, 0.99)
    );
    for node in first.into_iter().chain(second) {
        drop(node);
    }
}

async fn add_member(root: &Path) {
    let users = env("VOLLI_BENCH_BIG", 50);
    let mut nodes = start(root, "b", users + 1).await;
    let newcomer = nodes.pop().unwrap();
    let mut ids = Vec::new();
    for node in &nodes {
        ids.push(node.ids().await.0);
    }
    let (new_id, _) = newcomer.ids().await;
    for other in nodes[1..].iter().chain(std::iter::once(&newcomer)) {
        befriend(&nodes[0], other).await;
    }
    for id in ids[1..].iter().chain(std::iter::once(&new_id)) {
        ready(&nodes[0], id).await;
    }
    let group = create(&nodes[0], "big", &ids[1..]).await;
    let members: Vec<&Node> = nodes.iter().collect();
    let before = settled(&members, &group, users).await;
    let start = Instant::now();
    let (status, answer) = nodes[0]
        .post(
            &format!("/v1/groups/{group}/members"),
            json!({"user_id": new_id}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let with_new: Vec<&Node> = nodes.iter().chain(std::iter::once(&newcomer)).collect();
    let after = settled(&with_new, &group, users + 1).await;
    let took = start.elapsed();
    let bytes = commit_size(&nodes[0].data_dir, &group, after).await;
    println!(
        "adding a member to a {users}-member group: epoch {before} → {after}, commit {bytes} bytes, every member at the new epoch after {took:?}"
    );
}

/// Offers the file at `path` from `sender` to `group`; its transfer id, once `members` have
/// the offer.
async fn offer_file(sender: &Node, members: &[&Node], group: &str, path: &Path) -> String {
    let (status, sent) = sender
        .post(
            "/v1/transfers",
            json!({"group": group, "path": path.to_str().unwrap()}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    let t = sent["id"].as_str().unwrap().to_owned();
    for member in members {
        member
            .wait_for(&format!("/v1/transfers/{t}"), WAIT, |t| {
                t["state"] == "offered"
            })
            .await;
    }
    t
}

/// Accepts transfer `t` on `node`; MB/s from then until it is `completed`.
async fn fetch(node: &Node, t: &str, size: u64) -> f64 {
    let start = Instant::now();
    let (status, body) = node
        .post(&format!("/v1/transfers/{t}/accept"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    node.wait_for(&format!("/v1/transfers/{t}"), WAIT, |t| {
        assert_ne!(t["state"], "failed", "{t}");
        t["state"] == "completed"
    })
    .await;
    size as f64 / 1e6 / start.elapsed().as_secs_f64()
}

async fn group_file(root: &Path) {
    let mib = env("VOLLI_BENCH_FILE_MIB", 256) as u64;
    let size = mib << 20;
    let [alice, bob, carol]: [Node; 3] = start(root, "f", 3).await.try_into().ok().unwrap();
    befriend(&alice, &bob).await;
    befriend(&alice, &carol).await;
    let (b, _) = bob.ids().await;
    let (c, _) = carol.ids().await;
    ready(&alice, &b).await;
    ready(&alice, &c).await;
    let group = create(&alice, "files", &[b, c]).await;
    settled(&[&alice, &bob, &carol], &group, 3).await;
    let file = root.join("file.bin");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&file, &data).unwrap();
    drop(data);

    let first = offer_file(&bob, &[&alice, &carol], &group, &file).await;
    let passed_on = fetch(&carol, &first, size).await;
    let direct = fetch(&alice, &first, size).await;
    let second = offer_file(&bob, &[&alice, &carol], &group, &file).await;
    fetch(&alice, &second, size).await;
    let held = fetch(&carol, &second, size).await;
    println!(
        "a {mib} MiB group file: to a stranger of its sender through a member who passes it on {passed_on:.0} MB/s; \
         that member from the sender {direct:.0} MB/s; the stranger from that member's store {held:.0} MB/s"
    );
}

/// The size of the commit (with the proposals beside it) that started `epoch` of `group`,
/// as the committer recorded it.
async fn commit_size(data_dir: &Path, group: &str, epoch: u64) -> usize {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(data_dir.join("volli.db"))
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let group = (0..16)
        .map(|i| u8::from_str_radix(&group[2 * i..2 * i + 2], 16).unwrap())
        .collect::<Vec<u8>>();
    let row: Option<(Vec<u8>,)> =
        sqlx::query_as("SELECT messages FROM mls_commits WHERE group_id = ? AND epoch = ?")
            .bind(group)
            .bind(i64::try_from(epoch).unwrap())
            .fetch_optional(&pool)
            .await
            .unwrap();
    pool.close().await;
    row.map_or(0, |(m,)| m.len())
}

async fn catch_up(root: &Path) {
    let missed = env("VOLLI_BENCH_MISSED", 500);
    let port = free_port();
    let a = Node::start_with(&root.join("ca"), on_port(free_port())).await;
    let b = Node::start_with(&root.join("cb"), on_port(free_port())).await;
    let mut c = Node::start_with(&root.join("cc"), on_port(port)).await;
    befriend(&a, &b).await;
    befriend(&a, &c).await;
    let (b_id, _) = b.ids().await;
    let (c_id, _) = c.ids().await;
    ready(&a, &b_id).await;
    ready(&a, &c_id).await;
    let group = create(&a, "catch-up", &[b_id, c_id]).await;
    settled(&[&a, &b, &c], &group, 3).await;
    let dir = c.data_dir.clone();
    assert!(c.terminate().success());
    for i in 0..missed {
        loop {
            let (status, answer) = a
                .post(
                    "/v1/messages",
                    json!({"group": group, "body": format!("m {i:05}")}),
                )
                .await;
            match status {
                202 => break,
                // The group's send limit: as a client would, wait and send again.
                429 => tokio::time::sleep(Duration::from_millis(100)).await,
                _ => panic!("{status} {answer}"),
            }
        }
    }
    // Everyone online has them before the member comes back.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, list) = b
            .get(&format!("/v1/messages?group={group}&limit=500"))
            .await;
        if list["messages"].as_array().map_or(0, Vec::len) >= missed.min(500) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the online member did not get them"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start = Instant::now();
    c = Node::start_with(&dir, on_port(port)).await;
    let deadline = Instant::now() + WAIT;
    let all: Vec<Value> = loop {
        let mut all = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let path = match &before {
                Some(b) => format!("/v1/messages?group={group}&limit=500&before={b}"),
                None => format!("/v1/messages?group={group}&limit=500"),
            };
            let (_, list) = c.get(&path).await;
            let page = list["messages"].as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                break;
            }
            before = page[0]["id"].as_str().map(String::from);
            let mut page = page;
            page.append(&mut all);
            all = page;
        }
        if all.len() >= missed {
            break all;
        }
        if std::env::var_os("VOLLI_BENCH_TRACE").is_some() {
            eprintln!("{:?}: {}", start.elapsed(), all.len());
        }
        assert!(
            Instant::now() < deadline,
            "{} of {missed} after {:?}",
            all.len(),
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = start.elapsed();
    let bodies: Vec<&str> = all.iter().map(|m| m["body"].as_str().unwrap()).collect();
    let mut sorted = bodies.clone();
    sorted.sort_unstable();
    println!(
        "a member offline for {missed} messages: all of them {took:?} after its start ({} in order)",
        if bodies == sorted { "all" } else { "not all" }
    );
}

#[tokio::main]
async fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_owned();
    // VOLLI_BENCH_KEEP: the nodes' directories and logs stay, to look into.
    let _tmp = if std::env::var_os("VOLLI_BENCH_KEEP").is_some() {
        eprintln!("keeping {}", tmp.keep().display());
        None
    } else {
        Some(tmp)
    };
    let which = std::env::var("VOLLI_BENCH_GROUPS").unwrap_or_else(|_| "all".into());
    if which == "all" || which.contains("fan") {
        fan_out(&root.join("fan")).await;
    }
    if which == "all" || which.contains("add") {
        add_member(&root.join("add")).await;
    }
    if which == "all" || which.contains("catch") {
        catch_up(&root.join("catch")).await;
    }
    if which == "all" || which.contains("file") {
        group_file(&root.join("file")).await;
    }
}
