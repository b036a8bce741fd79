//! File transfer throughput, side by side in one run:
//! - **raw pipeline**: this process reads the file, seals and names each chunk (AES-256-GCM
//!   STREAM + BLAKE3, as transfers do), writes it framed on one loopback TCP connection; the
//!   receiving thread checks the name, opens it, hashes the plaintext part and writes the
//!   ciphertext to a file — the same work a transfer does, with nothing else;
//! - **volli over libp2p TCP** and **over libp2p QUIC**: two release nodes with the bulk
//!   channel off (`[files] bulk = false`), so chunks travel as `/volli/file/1` requests;
//! - **volli**: two release nodes as shipped (bulk channel).
//!
//! Files of 1 GiB and 10 × 10 MiB, sent by path; throughput counts from the recipient's
//! accept to `completed` (preparing the offer — one read of the file — is reported apart).
//! CPU is user + system time of both nodes (or of this process for the raw pipeline) per GB.
//! Then, when run as root with `ip netns`, the same on a 200 Mbit/s link (a token bucket on
//! a veth between two namespaces): raw TCP against volli.
//!
//! `cargo bench -p volli-tests --bench transfer` (`VOLLI_BENCH_GIB=…` for another size)
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use volli_core::transfer::{FileKey, Layout};
use volli_tests::netns::{self, Lan};
use volli_tests::{Node, Options, befriend};

const MB: f64 = 1e6;

/// User + system CPU seconds of a process so far.
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields after the command: state is 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / 100.0
}

fn write_file(path: &Path, len: u64) {
    let mut f = File::create(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut left = len;
    while left > 0 {
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
}

/// The raw pipeline between two threads of this process; returns (seconds, CPU seconds).
fn raw_pipeline(src: &Path, dst: &Path) -> (f64, f64) {
    let size = std::fs::metadata(src).unwrap().len();
    let layout = Layout::for_size(size).unwrap();
    let key = FileKey::random().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let cpu0 = cpu_of(std::process::id());
    let start = Instant::now();
    let receiver = {
        let key = key.clone();
        let dst = dst.to_owned();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut out = File::create(&dst).unwrap();
            let mut header = [0u8; 40];
            let mut buf = Vec::new();
            for index in 0..layout.chunks() {
                s.read_exact(&mut header).unwrap();
                let len = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
                buf.resize(len, 0);
                s.read_exact(&mut buf).unwrap();
                assert_eq!(blake3::hash(&buf).as_bytes()[..], header[8..40]);
                let plain = layout.open_chunk(&key, index, &buf).unwrap();
                std::hint::black_box(layout.chunk_cv(index, &plain));
                out.write_all(&buf).unwrap();
            }
            out.sync_all().unwrap();
        })
    };
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let file = File::open(src).unwrap();
    let mut plain = Vec::new();
    for index in 0..layout.chunks() {
        let (offset, len) = layout.plain_range(index);
        plain.resize(len, 0);
        file.read_exact_at(&mut plain, offset).unwrap();
        let sealed = layout.seal_chunk(&key, index, &plain);
        let name = blake3::hash(&sealed);
        let mut header = [0u8; 40];
        header[..4].copy_from_slice(&(sealed.len() as u32).to_be_bytes());
        header[8..].copy_from_slice(name.as_bytes());
        s.write_all(&header).unwrap();
        s.write_all(&sealed).unwrap();
    }
    receiver.join().unwrap();
    let secs = start.elapsed().as_secs_f64();
    (secs, cpu_of(std::process::id()) - cpu0)
}

struct Run {
    prepare: f64,
    transfer: f64,
    cpu: f64,
    rss: (f64, f64),
}

async fn nodes(tmp: &Path, tag: &str, config: &str, p2p: &str) -> (Node, Node, String) {
    let options = Options {
        config: config.into(),
        p2p_listen: Some(p2p.into()),
        ..Options::default()
    };
    let a = Node::start_with(&tmp.join(format!("{tag}-a")), options.clone()).await;
    let b = Node::start_with(&tmp.join(format!("{tag}-b")), options).await;
    befriend(&a, &b).await;
    let (b_user, _) = b.ids().await;
    (a, b, b_user)
}

/// Sends `files` from `a` to `b` (by path) and waits for all of them.
async fn send(a: &Node, b: &Node, b_user: &str, files: &[&Path]) -> Run {
    let started = Instant::now();
    let mut ids = Vec::new();
    for f in files {
        let (status, t) = a
            .post(
                "/v1/transfers",
                json!({"to": b_user, "path": f.to_str().unwrap()}),
            )
            .await;
        assert_eq!(status, 201, "{t}");
        ids.push(t["id"].as_str().unwrap().to_owned());
    }
    let prepare = started.elapsed().as_secs_f64();
    for id in &ids {
        b.wait_for(
            &format!("/v1/transfers/{id}"),
            Duration::from_secs(30),
            |t| t["state"] == "offered",
        )
        .await;
    }
    let pids = [a.pid().unwrap(), b.pid().unwrap()];
    let cpu0: f64 = pids.iter().map(|p| cpu_of(*p)).sum();
    let start = Instant::now();
    for id in &ids {
        let (status, body) = b
            .post(&format!("/v1/transfers/{id}/accept"), json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    for id in &ids {
        loop {
            let (_, t) = b.get(&format!("/v1/transfers/{id}")).await;
            match t["state"].as_str() {
                Some("completed") => break,
                Some("failed") => panic!("{t}\n{}", b.log()),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
    let transfer = start.elapsed().as_secs_f64();
    let cpu: f64 = pids.iter().map(|p| cpu_of(*p)).sum::<f64>() - cpu0;
    let rss = (a.rss_mib().unwrap_or(0.0), b.rss_mib().unwrap_or(0.0));
    for id in &ids {
        b.request(
            reqwest::Method::DELETE,
            &format!("/v1/transfers/{id}"),
            None,
        )
        .await;
    }
    Run {
        prepare,
        transfer,
        cpu,
        rss,
    }
}

fn report(what: &str, bytes: u64, run: &Run) {
    let gb = bytes as f64 / 1e9;
    println!(
        "{what:<34} {:>7.0} MB/s  (transfer {:.2} s, preparing the offer {:.2} s)  CPU {:.2} s/GB  RSS sender {:.0} MiB, recipient {:.0} MiB",
        bytes as f64 / MB / run.transfer,
        run.transfer,
        run.prepare,
        run.cpu / gb,
        run.rss.0,
        run.rss.1
    );
}

fn main() {
    // Inside a namespace, as one end of the raw copy.
    if raw_role() {
        return;
    }
    tokio::runtime::Runtime::new().unwrap().block_on(run());
}

async fn run() {
    let tmp = tempfile::tempdir().unwrap();
    let gib: f64 = std::env::var("VOLLI_BENCH_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let big_len = (gib * (1u64 << 30) as f64) as u64;
    let big = tmp.path().join("big.bin");
    write_file(&big, big_len);
    let small: Vec<_> = (0..10)
        .map(|i| {
            let p = tmp.path().join(format!("small-{i}.bin"));
            write_file(&p, 10 << 20);
            p
        })
        .collect();
    let small_refs: Vec<&Path> = small.iter().map(|p| p.as_path()).collect();
    let small_bytes = 10u64 * (10 << 20);

    println!("file of {:.2} GiB, and 10 × 10 MiB, loopback", gib);
    for round in 0..2 {
        let dst = tmp.path().join("raw.out");
        let (secs, cpu) = raw_pipeline(&big, &dst);
        let _ = std::fs::remove_file(&dst);
        println!(
            "raw pipeline (round {round})              {:>7.0} MB/s  ({secs:.2} s)  CPU {:.2} s/GB",
            big_len as f64 / MB / secs,
            cpu / (big_len as f64 / 1e9)
        );
    }

    let cases = [
        (
            "volli, libp2p TCP (no bulk channel)",
            "[files]\nbulk = false\n",
            "/ip4/127.0.0.1/tcp/0",
        ),
        (
            "volli, libp2p QUIC (no bulk channel)",
            "[files]\nbulk = false\n",
            "/ip4/127.0.0.1/udp/0/quic-v1",
        ),
        ("volli (bulk channel)", "", "/ip4/127.0.0.1/tcp/0"),
    ];
    for (i, (what, config, p2p)) in cases.iter().enumerate() {
        let (a, b, b_user) = nodes(tmp.path(), &format!("n{i}"), config, p2p).await;
        let run = send(&a, &b, &b_user, &[&big]).await;
        report(&format!("{what}, 1 file"), big_len, &run);
        let run = send(&a, &b, &b_user, &small_refs).await;
        report(&format!("{what}, 10 files"), small_bytes, &run);
        if i == cases.len() - 1 {
            // Once more, to see the spread.
            let run = send(&a, &b, &b_user, &[&big]).await;
            report(&format!("{what}, 1 file, again"), big_len, &run);
            let dst = tmp.path().join("raw.out");
            let (secs, _) = raw_pipeline(&big, &dst);
            let _ = std::fs::remove_file(&dst);
            println!(
                "raw pipeline, right after             {:>7.0} MB/s",
                big_len as f64 / MB / secs
            );
        }
    }

    if netns::available() {
        rate_limited(tmp.path()).await;
    } else {
        println!("(not root or no `ip netns`: the rate-limited link is skipped)");
    }
}

/// What the bench binary does when it runs inside a namespace as one end of a raw copy.
fn raw_role() -> bool {
    match std::env::var("VOLLI_BENCH_ROLE").as_deref() {
        Ok("sink") => {
            let listener = TcpListener::bind(std::env::var("VOLLI_BENCH_ADDR").unwrap()).unwrap();
            println!("listening");
            std::io::stdout().flush().unwrap();
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let start = Instant::now();
            let mut total = 0u64;
            loop {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            println!("{total} {}", start.elapsed().as_secs_f64());
            true
        }
        Ok("source") => {
            let len: u64 = std::env::var("VOLLI_BENCH_LEN").unwrap().parse().unwrap();
            let mut s = TcpStream::connect(std::env::var("VOLLI_BENCH_ADDR").unwrap()).unwrap();
            let buf = vec![7u8; 1 << 20];
            let mut left = len;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                s.write_all(&buf[..n]).unwrap();
                left -= n as u64;
            }
            true
        }
        _ => false,
    }
}

/// Raw TCP against volli on a 200 Mbit/s link between two namespaces.
async fn rate_limited(tmp: &Path) {
    const MBIT: u32 = 200;
    let len: u64 = 128 << 20;
    let mut lan = Lan::new();
    let (ns_a, addr_a) = lan.host();
    let (ns_b, addr_b) = lan.host();
    lan.limit_rate(&ns_a, MBIT);
    lan.limit_rate(&ns_b, MBIT);
    let me = std::env::current_exe().unwrap();
    let sink_addr = format!("{addr_b}:39000");
    let mut sink = std::process::Command::new("ip")
        .args(["netns", "exec", &ns_b])
        .arg(&me)
        .env("VOLLI_BENCH_ROLE", "sink")
        .env("VOLLI_BENCH_ADDR", &sink_addr)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = sink.stdout.take().unwrap();
    let mut line = [0u8; 10];
    out.read_exact(&mut line).unwrap();
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", &ns_a])
        .arg(&me)
        .env("VOLLI_BENCH_ROLE", "source")
        .env("VOLLI_BENCH_ADDR", &sink_addr)
        .env("VOLLI_BENCH_LEN", len.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    sink.wait().unwrap();
    let secs: f64 = rest.split_whitespace().nth(1).unwrap().parse().unwrap();
    let raw = len as f64 / MB / secs;
    println!(
        "\n{MBIT} Mbit/s link between namespaces ({} MB/s): raw TCP {raw:.1} MB/s ({:.0} % of the link)",
        f64::from(MBIT) / 8.0,
        raw * 100.0 / (f64::from(MBIT) / 8.0)
    );
    let file = tmp.join("link.bin");
    write_file(&file, len);
    let node = |ns: &str, addr: &str, name: &str| {
        let options = Options {
            netns: Some(ns.to_owned()),
            api_listen: Some(format!("{addr}:0")),
            p2p_listen: Some(format!("/ip4/{addr}/tcp/0")),
            ..Options::default()
        };
        let dir = tmp.join(name);
        async move { Node::start_with(&dir, options).await }
    };
    let a = node(&ns_a, &addr_a, "link-a").await;
    let b = node(&ns_b, &addr_b, "link-b").await;
    befriend(&a, &b).await;
    let (b_user, _) = b.ids().await;
    for _ in 0..2 {
        let run = send(&a, &b, &b_user, &[&file]).await;
        let rate = len as f64 / MB / run.transfer;
        println!(
            "volli on the same link: {rate:.1} MB/s = {:.0} % of raw TCP",
            rate * 100.0 / raw
        );
    }
    drop(lan);
}
