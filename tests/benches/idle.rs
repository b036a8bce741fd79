//! What an idle node costs: wake-ups per second over all its threads (voluntary and
//! involuntary context switches, as `/proc/<pid>/task/*/status` counts them), CPU share and
//! resident memory, with every built-in discovery method on (mDNS on a real interface in a
//! network namespace when run as root, the DHT, rendezvous, invites) and nothing to do: a
//! node alone, one whose contact is online, and one whose contact is offline.
//! Another binary (e.g. a previous release) is measured the same way with `VOLLI_BIN=…`.
//!
//! `cargo bench -p volli-tests --bench idle` (`VOLLI_IDLE_SETTLE` / `VOLLI_IDLE_WINDOW`:
//! seconds to let start-up settle, and to measure; 150 and 120 by default)
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::time::Duration;

use volli_tests::netns::{self, Lan};
use volli_tests::{Node, Options, befriend};

fn secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Context switches per thread (by thread id), with the thread names.
fn switches(pid: u32) -> HashMap<String, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let n: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        out.insert(
            task.file_name().to_string_lossy().into_owned(),
            (name.trim().to_owned(), n),
        );
    }
    out
}

fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let f = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (f(11) + f(12)) / 100.0
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// What one node did over the window.
struct Sample {
    label: &'static str,
    wakeups: f64,
    threads: usize,
    cpu_percent: f64,
    rss: f64,
    by_thread: Vec<(String, f64)>,
}

async fn measure(label: &'static str, node: &Node, window: u64) -> Sample {
    let pid = node.pid().unwrap();
    let before = switches(pid);
    let cpu = cpu_secs(pid);
    tokio::time::sleep(Duration::from_secs(window)).await;
    let after = switches(pid);
    let cpu = cpu_secs(pid) - cpu;
    let mut by_thread: HashMap<String, u64> = HashMap::new();
    let mut total = 0;
    for (tid, (name, n)) in &after {
        let d = n - before.get(tid).map_or(0, |(_, b)| *b);
        total += d;
        *by_thread.entry(name.clone()).or_default() += d;
    }
    let mut threads: Vec<_> = by_thread
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| (name, n as f64 / window as f64))
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    Sample {
        label,
        wakeups: total as f64 / window as f64,
        threads: after.len(),
        cpu_percent: cpu * 100.0 / window as f64,
        rss: rss_mib(pid),
        by_thread: threads,
    }
}

#[tokio::main]
async fn main() {
    let settle = secs("VOLLI_IDLE_SETTLE", 150);
    let window = secs("VOLLI_IDLE_WINDOW", 120);
    let tmp = tempfile::tempdir().unwrap();
    let namespaces = netns::available();
    // Each case on a LAN of its own: the node alone hears nobody.
    let mut lans: Vec<Lan> = Vec::new();
    let mut options = |lan: usize| {
        let mut o = Options {
            config: "[network]\nlan = true\n".into(),
            ..Options::default()
        };
        if namespaces {
            while lans.len() <= lan {
                lans.push(Lan::new());
            }
            let (ns, addr) = lans[lan].host();
            o.netns = Some(ns);
            o.api_listen = Some(format!("{addr}:0"));
            o.p2p_listen = Some(format!("/ip4/{addr}/tcp/0"));
        } else {
            // Without namespaces, stay off the host's network.
            o.config = "[network]\nlan = false\n".into();
        }
        o
    };
    // Three cases side by side: a node alone; one whose contact is online; one whose
    // contact went offline (killed, as a machine that loses power).
    let alone = Node::start_with(&tmp.path().join("alone"), options(0)).await;
    let online = Node::start_with(&tmp.path().join("online"), options(1)).await;
    let friend = Node::start_with(&tmp.path().join("friend"), options(1)).await;
    befriend(&online, &friend).await;
    let offline = Node::start_with(&tmp.path().join("offline"), options(2)).await;
    let mut gone = Node::start_with(&tmp.path().join("gone"), options(2)).await;
    befriend(&offline, &gone).await;
    gone.kill();
    println!(
        "idle nodes{}: settle {settle} s, then measure {window} s",
        if namespaces {
            " each on a namespace LAN"
        } else {
            " on loopback (no mDNS)"
        }
    );
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let samples = futures::future::join3(
        measure("alone", &alone, window),
        measure("contact on", &online, window),
        measure("contact off", &offline, window),
    )
    .await;
    for s in [samples.0, samples.1, samples.2] {
        println!(
            "{:<12} {:.2} wake-ups/s over {} threads, CPU {:.3} % of a core, RSS {:.1} MiB",
            s.label, s.wakeups, s.threads, s.cpu_percent, s.rss
        );
        for (name, n) in s.by_thread {
            println!("    {name:<16} {n:.2}/s");
        }
    }
    drop((alone, online, friend, offline, gone));
    drop(lans);
}
