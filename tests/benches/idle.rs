//! What an idle node costs: wake-ups per second over all its threads (voluntary and
//! involuntary context switches, as `/proc/<pid>/task/*/status` counts them), CPU share and
//! resident memory, with every built-in discovery method on (mDNS on a real interface in a
//! network namespace when run as root, the DHT, rendezvous, invites) and nothing to do.
//! Another binary (e.g. a previous release) is measured the same way with `VOLLI_BIN=…`.
//!
//! `cargo bench -p volli-tests --bench idle` (`VOLLI_IDLE_SETTLE` / `VOLLI_IDLE_WINDOW`:
//! seconds to let start-up settle, and to measure; 150 and 120 by default)
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::time::Duration;

use volli_tests::netns::{self, Lan};
use volli_tests::{Node, Options};

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

async fn measure(label: &str, node: &Node, window: u64) {
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
    let mut threads: Vec<_> = by_thread.into_iter().filter(|(_, n)| *n > 0).collect();
    threads.sort_by_key(|t| std::cmp::Reverse(t.1));
    println!(
        "{label:<12} {:.2} wake-ups/s over {} threads, CPU {:.3} % of a core, RSS {:.1} MiB",
        total as f64 / window as f64,
        after.len(),
        cpu * 100.0 / window as f64,
        rss_mib(pid),
    );
    for (name, n) in threads {
        println!("    {name:<16} {:.2}/s", n as f64 / window as f64);
    }
}

#[tokio::main]
async fn main() {
    let settle = secs("VOLLI_IDLE_SETTLE", 150);
    let window = secs("VOLLI_IDLE_WINDOW", 120);
    let tmp = tempfile::tempdir().unwrap();
    let mut lan = netns::available().then(Lan::new);
    let mut options = || {
        let mut o = Options {
            config: "[network]\nlan = true\n".into(),
            ..Options::default()
        };
        match lan.as_mut() {
            Some(lan) => {
                let (ns, addr) = lan.host();
                o.netns = Some(ns);
                o.api_listen = Some(format!("{addr}:0"));
                o.p2p_listen = Some(format!("/ip4/{addr}/tcp/0"));
            }
            // Without namespaces, stay off the host's network.
            None => o.config = "[network]\nlan = false\n".into(),
        }
        o
    };
    let node = Node::start_with(&tmp.path().join("node"), options()).await;
    println!(
        "idle node{}: settle {settle} s, then measure {window} s",
        if lan.is_some() {
            " on a namespace LAN"
        } else {
            " on loopback (no mDNS)"
        }
    );
    tokio::time::sleep(Duration::from_secs(settle)).await;
    measure("idle", &node, window).await;
    drop(node);
    drop(lan);
}
