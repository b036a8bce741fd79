//! What calling a plugin costs, side by side with a native trait call, in one run.
//!
//! `cargo bench -p volli-plugin-host --bench plugin_call`
//!
//! - native: a `dyn` trait call doing the same work as the plugin (build a 1 KiB record);
//! - nop call: `discover` returning nothing, through the whole host path (instance lock,
//!   deadline, epoch ticker, conversion);
//! - 1 KiB call: `lookup` returning a 1 KiB record (the target's "discovery call");
//! - fresh instance: instantiate the component and run its `init`;
//! - epoch overhead: a CPU-bound call compiled with and without deadline checks.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use volli_plugin_host::{HostConfig, Limits, PluginHost, PluginSettings, Services};

trait Discovery {
    fn lookup(&mut self, user: &str) -> Vec<Vec<u8>>;
}

struct Native;

impl Discovery for Native {
    fn lookup(&mut self, user: &str) -> Vec<Vec<u8>> {
        let mut record = vec![0u8; 1024];
        let n = user.len().min(record.len());
        record[..n].copy_from_slice(&user.as_bytes()[..n]);
        vec![record]
    }
}

const ROUNDS: usize = 7;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

async fn per_call<F, Fut>(iterations: usize, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for _ in 0..iterations {
            f().await;
        }
        samples.push(started.elapsed().as_secs_f64() / iterations as f64);
    }
    median(samples)
}

async fn host_with(mode: &str, iterations: u64, epochs: bool, dir: &std::path::Path) -> PluginHost {
    let config = HostConfig {
        cache_dir: Some(dir.join("cache")),
        fs_root: dir.join("fs"),
    };
    let host = if epochs {
        PluginHost::new(config, Services::default())
    } else {
        PluginHost::without_deadlines_for_benchmarks(config, Services::default())
    }
    .unwrap();
    let wasm =
        std::fs::read(volli_plugin_host::builtin::testing_dir().join("hostile.wasm")).unwrap();
    let mut settings = PluginSettings {
        limits: Some(Limits {
            deadline_ms: 60_000,
            ..Limits::for_kind(volli_plugin_host::Kind::Discovery)
        }),
        ..PluginSettings::default()
    };
    settings.config.insert("mode".into(), mode.into());
    settings
        .config
        .insert("iterations".into(), iterations.into());
    let loaded = host
        .load(host.inspect(wasm).await.unwrap(), settings)
        .await
        .unwrap();
    assert_eq!(loaded.start_error, None);
    host
}

fn us(seconds: f64) -> String {
    format!("{:>10.3} µs", seconds * 1e6)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with("ok", 0, true, dir.path()).await;
    let plugin = host.discovery_named("hostile").unwrap();

    let mut native: Box<dyn Discovery> = Box::new(Native);
    let native_call = per_call(200_000, || {
        black_box(native.lookup(black_box("user")));
        async {}
    })
    .await;
    let nop = per_call(20_000, || async {
        black_box(plugin.discover().await.unwrap());
    })
    .await;
    let kib = per_call(20_000, || async {
        black_box(plugin.lookup(black_box("user")).await.unwrap());
    })
    .await;
    let fresh = per_call(1_000, || async {
        plugin.restart().await.unwrap();
    })
    .await;

    const WORK: u64 = 20_000;
    let with_epochs = host_with("work", WORK, true, &dir.path().join("a")).await;
    let without_epochs = host_with("work", WORK, false, &dir.path().join("b")).await;
    let a = with_epochs.discovery_named("hostile").unwrap();
    let b = without_epochs.discovery_named("hostile").unwrap();
    // Interleaved, alternating which goes first, so drift on a shared machine hits both.
    let mut epoch_samples = Vec::new();
    for round in 0..ROUNDS * 3 {
        let time = |p: &volli_plugin_host::DiscoveryPlugin| {
            let p = p.clone();
            async move {
                let t = Instant::now();
                black_box(p.discover().await.unwrap());
                t.elapsed().as_secs_f64()
            }
        };
        let (base, checked) = if round % 2 == 0 {
            let base = time(&b).await;
            (base, time(&a).await)
        } else {
            let checked = time(&a).await;
            (time(&b).await, checked)
        };
        epoch_samples.push(checked / base);
    }
    let epoch_ratio = median(epoch_samples);

    println!("plugin call cost (median of {ROUNDS} rounds)");
    println!("  native dyn call, 1 KiB record  {}", us(native_call));
    println!(
        "  plugin nop call                {}   ({:.0}× native)",
        us(nop),
        nop / native_call
    );
    println!(
        "  plugin call, 1 KiB record      {}   ({:.0}× native)",
        us(kib),
        kib / native_call
    );
    println!(
        "  fresh instance                 {}   (drop the old one, instantiate, init)",
        us(fresh)
    );
    println!(
        "  epoch interruption overhead    {:>+9.1} %   (CPU-bound call, with / without deadline checks)",
        (epoch_ratio - 1.0) * 100.0
    );
}
