//! Delivery through churning relays, with real nodes: senders and recipients who are never
//! online together, and friends' relays that are killed (`kill -9`) and restarted the whole
//! time. Measures the delivery rate and the duplicates a recipient is shown.
//!
//! Ten nodes by default: 3 senders, 3 recipients, 4 relays every one of them befriended.
//! Each recipient designates 3 of the relays. Then:
//! 1. the recipients go offline; each sender sends `VOLLI_CHURN_MESSAGES` (default 6) to
//!    each recipient while relays are killed and restarted, until every message is `relayed`;
//! 2. the senders go offline; every relay is killed; the recipients come back and listen
//!    on their WebSocket; relays come back one by one, still churning, until every
//!    recipient has every message;
//! 3. the senders come back; the receipts the recipients left at the relays, or retries
//!    that reach the recipients directly (who already have the messages), turn every status
//!    to `delivered`, while recipients still show each message once.
//!
//! The figures (printed) go in `docs/BENCHMARKS.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::Value;
use volli_tests::{Node, befriend, conversation, events, free_port, on_port, send};

const SENDERS: usize = 3;
const RECIPIENTS: usize = 3;
const RELAYS: usize = 4;

/// A node that can be stopped and started again on the same data dir and port.
struct Slot {
    name: String,
    dir: PathBuf,
    port: u16,
    node: Option<Node>,
    user_id: String,
}

impl Slot {
    async fn start(root: &std::path::Path, name: String) -> Self {
        let dir = root.join(&name);
        let port = free_port();
        let node = Node::start_with(&dir, on_port(port)).await;
        let (user_id, _) = node.ids().await;
        Self {
            name,
            dir,
            port,
            node: Some(node),
            user_id,
        }
    }

    fn node(&self) -> &Node {
        self.node
            .as_ref()
            .unwrap_or_else(|| panic!("{} is down", self.name))
    }

    fn up(&self) -> bool {
        self.node.is_some()
    }

    async fn restart(&mut self) {
        assert!(self.node.is_none(), "{} is already up", self.name);
        self.node = Some(Node::start_with(&self.dir, on_port(self.port)).await);
    }

    fn kill(&mut self) {
        self.node.take().expect("up").kill();
    }

    fn stop(&mut self) {
        assert!(self.node.take().expect("up").terminate().success());
    }
}

/// A small deterministic generator (xorshift), seeded per run and printed, so a failing
/// schedule can be replayed with `VOLLI_CHURN_SEED`.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// One churn step: kill a random running relay (never the last one running while
/// `keep_one`) and bring back one that was down.
async fn churn(relays: &mut [Slot], rng: &mut Rng, keep_one: bool, log: &mut Vec<String>) {
    let down: Vec<usize> = (0..relays.len()).filter(|i| !relays[*i].up()).collect();
    let up: Vec<usize> = (0..relays.len()).filter(|i| relays[*i].up()).collect();
    if !up.is_empty() && (!keep_one || up.len() > 1) {
        let victim = up[rng.below(up.len())];
        relays[victim].kill();
        log.push(format!("kill {}", relays[victim].name));
    }
    if !down.is_empty() {
        let back = down[rng.below(down.len())];
        relays[back].restart().await;
        log.push(format!("start {}", relays[back].name));
    }
}

fn messages_env() -> usize {
    std::env::var("VOLLI_CHURN_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_offline_recipients_through_churning_relays_once_each() {
    let per_pair = messages_env();
    let seed = std::env::var("VOLLI_CHURN_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("churn seed {seed} (VOLLI_CHURN_SEED replays it)");
    let mut rng = Rng(seed);
    let mut log = Vec::new();
    let started = Instant::now();

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut relays = Vec::new();
    for i in 0..RELAYS {
        relays.push(Slot::start(root, format!("relay{i}")).await);
    }
    let mut recipients = Vec::new();
    for i in 0..RECIPIENTS {
        recipients.push(Slot::start(root, format!("recipient{i}")).await);
    }
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        senders.push(Slot::start(root, format!("sender{i}")).await);
    }

    // Recipients befriend the relays first and designate three of them; senders meet the
    // relays and then the recipients, and learn each recipient's relays from its card.
    println!("{:.1?}: 10 nodes up", started.elapsed());
    let relay_ids: HashSet<String> = relays.iter().map(|r| r.user_id.clone()).collect();
    for r in &relays {
        for u in &recipients {
            befriend(r.node(), u.node()).await;
        }
    }
    println!("{:.1?}: recipients befriended relays", started.elapsed());
    for u in &recipients {
        relays[0]
            .node()
            .wait_for(
                &format!("/v1/contacts/{}", u.user_id),
                Duration::from_secs(30),
                |c| c["relays"].as_array().is_some_and(|r| r.len() == 3),
            )
            .await;
    }
    println!("{:.1?}: recipients designated", started.elapsed());
    for r in &relays {
        for s in &senders {
            befriend(r.node(), s.node()).await;
        }
    }
    println!("{:.1?}: senders befriended relays", started.elapsed());
    for s in &senders {
        for u in &recipients {
            befriend(s.node(), u.node()).await;
        }
    }
    println!("{:.1?}: senders befriended recipients", started.elapsed());
    for s in &senders {
        for u in &recipients {
            s.node()
                .wait_for(
                    &format!("/v1/contacts/{}", u.user_id),
                    Duration::from_secs(30),
                    |c| {
                        c["relays"].as_array().is_some_and(|r| {
                            r.len() == 3
                                && r.iter().all(|id| relay_ids.contains(id.as_str().unwrap()))
                        })
                    },
                )
                .await;
        }
    }
    let setup = started.elapsed();

    // 1. Recipients offline; senders send while relays churn.
    for u in &mut recipients {
        u.stop();
    }
    let mut sent: HashMap<(usize, usize), Vec<String>> = HashMap::new();
    for round in 0..per_pair {
        for (si, s) in senders.iter().enumerate() {
            for (ui, u) in recipients.iter().enumerate() {
                let id = send(s.node(), &u.user_id, &format!("{round} from {si} to {ui}")).await;
                sent.entry((si, ui)).or_default().push(id);
            }
        }
        churn(&mut relays, &mut rng, false, &mut log).await;
    }
    let total: usize = sent.values().map(Vec::len).sum();
    // Every message must reach a relay; relays keep churning while the senders retry.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut unrelayed = 0;
        for (si, s) in senders.iter().enumerate() {
            for (ui, u) in recipients.iter().enumerate() {
                let ids = &sent[&(si, ui)];
                let shown = conversation(s.node(), &u.user_id).await;
                unrelayed += ids
                    .iter()
                    .filter(|id| {
                        !shown
                            .iter()
                            .any(|m| &m["id"] == *id && m["status"] == "relayed")
                    })
                    .count();
            }
        }
        if unrelayed == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{unrelayed} of {total} messages never reached a relay; churn: {log:?}"
        );
        churn(&mut relays, &mut rng, false, &mut log).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let relayed_after = started.elapsed();

    // 2. Senders offline, every relay down; recipients come back and listen.
    for s in &mut senders {
        s.stop();
    }
    for r in &mut relays {
        if r.up() {
            r.kill();
        }
    }
    log.push("all relays down".into());
    let mut streams = Vec::new();
    for u in &mut recipients {
        u.restart().await;
        streams.push(events(u.node()).await);
    }
    // Count every `message.received` a client would show, per recipient and message id.
    let (count_tx, mut count_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
    for (ui, mut stream) in streams.into_iter().enumerate() {
        let tx = count_tx.clone();
        tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                match event["type"].as_str() {
                    Some("message.received") => {
                        let _ = tx.send((ui, event["id"].as_str().unwrap().to_owned()));
                    }
                    // A dropped event would make the count meaningless: say so loudly.
                    Some("resync") => {
                        let _ = tx.send((ui, "resync".into()));
                    }
                    _ => {}
                }
            }
        });
    }
    let mut shown: HashMap<(usize, String), usize> = HashMap::new();
    let count = |shown: &mut HashMap<(usize, String), usize>, ui: usize, id: String| {
        assert_ne!(id, "resync", "recipient{ui}'s events were dropped");
        *shown.entry((ui, id)).or_default() += 1;
    };
    let complete = |shown: &HashMap<(usize, String), usize>| {
        sent.iter().all(|((_, ui), ids)| {
            ids.iter()
                .all(|id| shown.contains_key(&(*ui, id.to_string())))
        })
    };
    // Relays return one by one, and keep churning (one always up) until all is fetched.
    let deadline = Instant::now() + Duration::from_secs(180);
    let fetch_started = Instant::now();
    let mut round = 0;
    while !complete(&shown) {
        assert!(
            Instant::now() < deadline,
            "recipients got {} of {total} messages; churn: {log:?}",
            shown.len()
        );
        if round < RELAYS {
            relays[round].restart().await;
            log.push(format!("start {}", relays[round].name));
        } else if round < RELAYS + 6 {
            churn(&mut relays, &mut rng, true, &mut log).await;
        } else {
            for r in relays.iter_mut().filter(|r| !r.up()) {
                r.restart().await;
            }
        }
        round += 1;
        let until = Instant::now() + Duration::from_secs(2);
        while let Ok(Some((ui, id))) = tokio::time::timeout_at(until.into(), count_rx.recv()).await
        {
            count(&mut shown, ui, id);
        }
    }
    let fetched_after = fetch_started.elapsed();
    for r in relays.iter_mut().filter(|r| !r.up()) {
        r.restart().await;
    }

    // Relays let go of what was fetched.
    for r in &relays {
        r.node()
            .wait_for("/v1/relay", Duration::from_secs(60), |h| {
                h["envelopes"] == 0
            })
            .await;
    }

    // 3. Senders return: relayed receipts or direct retries turn every status to delivered;
    // each message is still shown once.
    for s in &mut senders {
        s.restart().await;
    }
    for (si, s) in senders.iter().enumerate() {
        for (ui, u) in recipients.iter().enumerate() {
            let ids = sent[&(si, ui)].clone();
            s.node()
                .wait_for(
                    &format!("/v1/messages?with={}&limit=500", u.user_id),
                    Duration::from_secs(60),
                    move |b| {
                        let got = b["messages"].as_array().unwrap();
                        ids.iter().all(|id| {
                            got.iter()
                                .any(|m| &m["id"] == id && m["status"] == "delivered")
                        })
                    },
                )
                .await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    while let Ok((ui, id)) = count_rx.try_recv() {
        count(&mut shown, ui, id);
    }

    let mut duplicates_listed = 0;
    for (ui, u) in recipients.iter().enumerate() {
        for (si, s) in senders.iter().enumerate() {
            let listed: Vec<Value> = conversation(u.node(), &s.user_id).await;
            let ids: HashSet<&str> = listed.iter().map(|m| m["id"].as_str().unwrap()).collect();
            duplicates_listed += listed.len() - ids.len();
            let want: HashSet<&str> = sent[&(si, ui)].iter().map(String::as_str).collect();
            assert_eq!(ids, want, "recipient{ui} from sender{si}");
        }
    }
    let delivered = shown.len();
    let duplicate_events: usize = shown.values().map(|n| n - 1).sum();
    let kills = log.iter().filter(|l| l.starts_with("kill")).count();
    println!(
        "churn: {} nodes, {total} messages, {kills} relay kills (-9): delivered {delivered}/{total} \
         ({:.0} %), duplicates shown {duplicate_events} (events) / {duplicates_listed} (listed); \
         setup {setup:.1?}, all relayed after {relayed_after:.1?}, all fetched {fetched_after:.1?} \
         after the recipients returned",
        SENDERS + RECIPIENTS + RELAYS,
        delivered as f64 * 100.0 / total as f64,
    );
    assert_eq!(delivered, total);
    assert_eq!(duplicate_events, 0, "{shown:?}");
    assert_eq!(duplicates_listed, 0);
}
