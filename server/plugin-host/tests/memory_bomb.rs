//! A memory bomb, alone in its test binary so that the process's memory figures are its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::*;
use volli_plugin_host::{CallError, Limits, PluginSettings, Services};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test]
async fn a_memory_bomb_traps_at_the_cap_and_host_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), Services::default());
    let mut settings = PluginSettings {
        limits: Some(Limits {
            deadline_ms: 5_000,
            memory_bytes: 16 << 20,
            ..Limits::for_kind(volli_plugin_host::Kind::Discovery)
        }),
        ..PluginSettings::default()
    };
    settings.config.insert("mode".into(), "bomb".into());
    let loaded = host
        .load(host.inspect(hostile_wasm()).await.unwrap(), settings)
        .await
        .unwrap();
    assert_eq!(loaded.start_error, None);
    let plugin = host.discovery_named("hostile").unwrap();
    let before = rss_bytes();
    for _ in 0..5 {
        // Re-enabling clears the failure backoff, so every round really runs the bomb.
        host.set_enabled("hostile", true).await.unwrap();
        match plugin.discover().await {
            Err(CallError::Trapped(reason)) => {
                assert!(reason.contains("memory limit of 16 MiB"), "{reason}")
            }
            other => panic!("expected a memory trap, got {other:?}"),
        }
    }
    let grown = rss_bytes().saturating_sub(before);
    // Five bombs of 16 MiB each: the memory of every discarded instance was returned.
    assert!(grown < 40 << 20, "host RSS grew by {} MiB", grown >> 20);
}
