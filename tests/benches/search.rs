//! Search over a large vault through the real binary: 100,000 messages in 100 conversations
//! (words drawn from a vocabulary of 5,000 with a Zipf distribution, some with accents),
//! written with the store's own API into the data dir of a node created by the binary. Then,
//! in one run:
//!
//! - the index build of that vault as an older release left it (no index): from the node's
//!   start until `GET /v1/node` says `ready`;
//! - the index's size in the file beside the size of the text it indexes;
//! - `GET /v1/search` for words of every frequency, prefixes, two words and one
//!   conversation, against a full scan of the same rows in the same run (`LIKE '%word%'`,
//!   newest first, in this process on the same SQLite file).
//!
//! `cargo bench -p volli-tests --bench search` (`VOLLI_BENCH_MESSAGES` to scale down,
//! `VOLLI_BENCH_TRIALS` for the trials per query, `VOLLI_BENCH_KEEP=1` to keep the node's
//! data dir and log for a closer look).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use volli_core::{ContactCard, MessageId, Timestamp, UserId, UserSecret};
use volli_store::vault::{MessageStatus, StoredMessage};
use volli_store::{Store, VaultOptions};
use volli_tests::Node;

const CONTACTS: usize = 100;
const VOCABULARY: usize = 5_000;
const LIMIT: usize = 20;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(mut d: Vec<Duration>) -> (Duration, Duration) {
    d.sort();
    (pct(&d, 0.5), pct(&d, 0.99))
}

/// A small deterministic generator (xorshift), so every run searches the same text.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Pseudo-words of 2 to 10 letters; one in twenty carries an accent.
fn vocabulary(rng: &mut Rng) -> Vec<String> {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    const ACCENTED: [&str; 6] = ["é", "ü", "ø", "ñ", "ç", "å"];
    (0..VOCABULARY)
        .map(|i| {
            let len = [2, 3, 3, 4, 4, 5, 5, 6, 7, 8, 9, 10][rng.below(12)];
            let mut w: String = (0..len).map(|_| LETTERS[rng.below(26)] as char).collect();
            if i % 20 == 7 {
                w.push_str(ACCENTED[rng.below(ACCENTED.len())]);
            }
            w
        })
        .collect()
}

/// Draws word ranks with probability ∝ 1 / (rank + 1).
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Self {
        let mut total = 0.0;
        let cumulative = (0..n)
            .map(|i| {
                total += 1.0 / (i as f64 + 1.0);
                total
            })
            .collect();
        Self { cumulative }
    }

    fn draw(&self, rng: &mut Rng) -> usize {
        let total = *self.cumulative.last().unwrap();
        let x = (rng.next() as f64 / u64::MAX as f64) * total;
        self.cumulative.partition_point(|c| *c < x)
    }
}

fn contact(i: usize) -> UserSecret {
    let mut master = [9u8; 32];
    master[..8].copy_from_slice(&(i as u64).to_le_bytes());
    UserSecret::from_master(master)
}

/// Writes `total` messages over [`CONTACTS`] conversations into the vault in `data_dir`, a
/// conversation at a time, a minute apart on average; returns the contacts and the words.
async fn fill(data_dir: &Path, me: UserId, total: usize) -> (Vec<UserId>, Vec<String>) {
    let store = Store::open(data_dir, VaultOptions::default())
        .await
        .unwrap();
    let vault = store.vault();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let words = vocabulary(&mut rng);
    let zipf = Zipf::new(words.len());
    let mut ids = Vec::new();
    for i in 0..CONTACTS {
        let secret = contact(i);
        let card = ContactCard::issue(&secret, &format!("contact {i}"), &[], &[], Timestamp::now());
        vault.put_contact(card, None).await.unwrap();
        ids.push(secret.user_id());
    }
    let started = Instant::now();
    let base = Timestamp::now().as_millis() - total as i64 * 60_000;
    let per = total.div_ceil(CONTACTS);
    let mut n = 0;
    for with in &ids {
        let mut batch = Vec::new();
        for _ in 0..per.min(total - n) {
            let len = 3 + rng.below(18);
            let body: Vec<&str> = (0..len)
                .map(|_| words[zipf.draw(&mut rng)].as_str())
                .collect();
            let incoming = rng.below(2) == 0;
            batch.push((
                *with,
                StoredMessage {
                    id: MessageId::random().unwrap(),
                    from: if incoming { *with } else { me },
                    to: if incoming { me } else { *with },
                    body: body.join(" "),
                    sent_at: Timestamp::from_millis(base + (rng.below(total * 60) as i64) * 1000),
                    status: if incoming {
                        MessageStatus::Received
                    } else {
                        MessageStatus::Delivered
                    },
                    extra: volli_store::vault::Extra::default(),
                },
            ));
            n += 1;
            if batch.len() == 1_000 {
                vault
                    .put_messages(std::mem::take(&mut batch))
                    .await
                    .unwrap();
            }
        }
        vault.put_messages(batch).await.unwrap();
    }
    println!(
        "filled {n} messages over {CONTACTS} conversations in {:?}",
        started.elapsed()
    );
    store.close().await;
    (ids, words)
}

/// A connection to the node's database file, read-only, for the baseline.
async fn reader(data: &Path) -> sqlx::SqlitePool {
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(data.join("volli.db"))
                .read_only(true)
                // Read as the node's own readers read (`Db::open`), so the ratio is the
                // index's and not the page cache's.
                .pragma("mmap_size", volli_store::MMAP_SIZE),
        )
        .await
        .unwrap()
}

/// The baseline: every row's text scanned for `word`, the newest [`LIMIT`] kept.
async fn scan(
    pool: &sqlx::SqlitePool,
    word: &str,
    conversation: Option<&str>,
) -> (Duration, usize) {
    let start = Instant::now();
    let rows: Vec<(Vec<u8>, String, i64)> = match conversation {
        None => sqlx::query_as(
            "SELECT id, body, sent_at FROM messages WHERE status < 5 AND body LIKE ? \
             ORDER BY sent_at DESC, id DESC LIMIT ?",
        )
        .bind(format!("%{word}%"))
        .bind(LIMIT as i64)
        .fetch_all(pool)
        .await
        .unwrap(),
        Some(c) => sqlx::query_as(
            "SELECT id, body, sent_at FROM messages WHERE conversation = ? AND status < 5 \
             AND body LIKE ? ORDER BY sent_at DESC, id DESC LIMIT ?",
        )
        .bind(c)
        .bind(format!("%{word}%"))
        .bind(LIMIT as i64)
        .fetch_all(pool)
        .await
        .unwrap(),
    };
    (start.elapsed(), rows.len())
}

/// `GET path` `trials` times: how long each took, and the last answer (each must be 200).
async fn timed(node: &Node, path: &str, trials: usize) -> (Vec<Duration>, serde_json::Value) {
    let mut took = Vec::with_capacity(trials);
    let mut last = serde_json::Value::Null;
    for _ in 0..trials {
        let start = Instant::now();
        let (status, body) = node.get(path).await;
        took.push(start.elapsed());
        assert_eq!(status, 200, "{body}");
        last = body;
    }
    (took, last)
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("VOLLI_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let trials: usize = std::env::var("VOLLI_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    if std::env::var_os("VOLLI_BENCH_KEEP").is_some() {
        println!("data dir kept: {}", tmp.keep().display());
    }
    let mut node = Node::start(&data).await;
    let (me, _) = node.ids().await;
    node.terminate();
    let (contacts, words) = fill(&data, me.parse().unwrap(), total).await;

    // The vault as an earlier release left it: messages, no search index.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", data.join("volli.db").display()))
        .await
        .unwrap();
    sqlx::query("INSERT INTO search (search) VALUES ('delete-all')")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM search_days")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM search_queue")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE search_state SET done = 0, ceiling = (SELECT MAX(rowid) FROM messages)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("VACUUM").execute(&pool).await.unwrap();
    pool.close().await;
    let started = Instant::now();
    let node = Node::start(&data).await;
    let up = started.elapsed();
    node.wait_for("/v1/node", Duration::from_secs(600), |n| {
        n["search"]["state"] == "ready"
    })
    .await;
    println!(
        "index build of the existing vault: {:?} from the node's start until ready (start to /health: {up:?})",
        started.elapsed()
    );

    let pool = reader(&data).await;
    let (index, text): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT SUM(pgsize) FROM dbstat WHERE name = 'search' OR name LIKE 'search\\_%' ESCAPE '\\'), \
                (SELECT SUM(LENGTH(CAST(body AS BLOB))) FROM messages WHERE status < 5)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    println!(
        "index size: {:.2} MiB for {:.2} MiB of text: {:.0} %",
        index as f64 / f64::from(1 << 20),
        text as f64 / f64::from(1 << 20),
        100.0 * index as f64 / text as f64
    );

    let conversation = contacts[3].to_string();
    let cases: Vec<(String, String, Option<String>)> = vec![
        ("most frequent word".into(), words[0].clone(), None),
        ("word of rank 20".into(), words[20].clone(), None),
        ("word of rank 500".into(), words[500].clone(), None),
        ("word of rank 4,000".into(), words[4000].clone(), None),
        (
            "accented word, typed without".into(),
            words[7].clone(),
            None,
        ),
        (
            "prefix of 2".into(),
            words[30].chars().take(2).collect(),
            None,
        ),
        (
            "prefix of 3".into(),
            words[40].chars().take(3).collect(),
            None,
        ),
        (
            "two words".into(),
            format!("{} {}", words[1], words[60]),
            None,
        ),
        (
            "one conversation".into(),
            words[10].clone(),
            Some(conversation.clone()),
        ),
    ];
    // What a request costs that does next to nothing: the part of every search's time that
    // is HTTP, JSON and the token, not the index.
    let (floor, _) = timed(&node, "/health", trials).await;
    let (f50, f99) = summary(floor);
    println!("GET /health (the floor of a request): p50 {f50:.2?} p99 {f99:.2?}");
    // And of a search: a word no message has (its statements, no results).
    let (none, body) = timed(&node, "/v1/search?q=zqxjzqxj&limit=20", trials).await;
    assert_eq!(body["results"].as_array().map(Vec::len), Some(0));
    let (n50, n99) = summary(none);
    println!("a word no message has (not in the figures below): p50 {n50:.2?} p99 {n99:.2?}");
    let mut all_api = Vec::new();
    let mut all_scan = Vec::new();
    println!("query (trials {trials}) | found | API p50 / p99 | scan p50 / p99 | ratio p50 / p99");
    for (name, text, with) in &cases {
        // Accents are what a person leaves out: search without them.
        let typed: String = text
            .chars()
            .map(|c| match c {
                'é' => 'e',
                'ü' => 'u',
                'ø' => 'o',
                'ñ' => 'n',
                'ç' => 'c',
                'å' => 'a',
                c => c,
            })
            .collect();
        let path = match with {
            Some(w) => format!("/v1/search?q={}&limit={LIMIT}&with={w}", encode(&typed)),
            None => format!("/v1/search?q={}&limit={LIMIT}", encode(&typed)),
        };
        let (api, body) = timed(&node, &path, trials).await;
        let found = body["results"].as_array().unwrap().len();
        // The scan looks for the first word (LIKE folds ASCII case only: the text as stored).
        let first = text.split(' ').next().unwrap();
        let mut base = Vec::with_capacity(trials);
        for _ in 0..trials {
            base.push(scan(&pool, first, with.as_deref()).await.0);
        }
        all_api.extend(api.iter().copied());
        all_scan.extend(base.iter().copied());
        let (a50, a99) = summary(api);
        let (b50, b99) = summary(base);
        println!(
            "{name} `{typed}` | {found} | {a50:.2?} / {a99:.2?} | {b50:.2?} / {b99:.2?} | {:.0} × / {:.0} ×",
            b50.as_secs_f64() / a50.as_secs_f64(),
            b99.as_secs_f64() / a99.as_secs_f64()
        );
    }
    let (a50, a99) = summary(all_api);
    let (b50, b99) = summary(all_scan);
    println!(
        "all queries: API p50 {a50:.2?} p99 {a99:.2?}; full scan p50 {b50:.2?} p99 {b99:.2?}; ratio {:.0} × at p50, {:.0} × at p99",
        b50.as_secs_f64() / a50.as_secs_f64(),
        b99.as_secs_f64() / a99.as_secs_f64()
    );
}
