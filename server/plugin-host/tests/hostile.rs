//! Hostile plugins, as real components: each is stopped within its limits, the host keeps
//! serving, and repeated failures mark the plugin failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::*;
use volli_plugin_host::{
    CallError, Capability, GuestError, Limits, PluginEvent, PluginHost, PluginSettings,
    PluginState, Services,
};

async fn hostile(
    host: &PluginHost,
    mode: &str,
    limits: Limits,
    grants: &[Capability],
) -> Option<String> {
    let mut settings = PluginSettings {
        grants: grants.iter().copied().collect(),
        limits: Some(limits),
        ..PluginSettings::default()
    };
    settings.config.insert("mode".into(), mode.into());
    host.load(host.inspect(hostile_wasm()).await.unwrap(), settings)
        .await
        .unwrap()
        .start_error
}

fn limits(deadline_ms: u64, memory_mib: usize) -> Limits {
    Limits {
        deadline_ms,
        memory_bytes: memory_mib << 20,
        ..Limits::for_kind(volli_plugin_host::Kind::Discovery)
    }
}

/// Runs on a single-threaded runtime on purpose: the only way the counter advances while the
/// plugin spins is if the host yields to the executor.
#[tokio::test(flavor = "current_thread")]
async fn an_infinite_loop_is_stopped_at_its_budget_while_the_executor_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), Services::default());
    assert_eq!(hostile(&host, "loop", limits(200, 32), &[]).await, None);
    let plugin = host.discovery_named("hostile").unwrap();

    let heartbeats = Arc::new(AtomicU64::new(0));
    let beat = heartbeats.clone();
    let ticker = tokio::spawn(async move {
        loop {
            beat.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let started = Instant::now();
    let result = plugin.discover().await;
    let elapsed = started.elapsed();
    ticker.abort();

    match result {
        Err(CallError::Trapped(reason)) => {
            assert!(reason.contains("time budget of 200 ms"), "{reason}")
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    // Budget + one epoch tick, plus scheduling slack on a loaded 2-core machine.
    assert!(
        elapsed <= Duration::from_millis(200) + TICK + Duration::from_millis(150),
        "{elapsed:?}"
    );
    let beats = heartbeats.load(Ordering::Relaxed);
    // Without yielding, the heartbeat could not run at all until the call ended.
    assert!(
        beats >= 5,
        "the executor was starved while the plugin looped ({beats} beats)"
    );
    let info = host.info("hostile").unwrap();
    assert_eq!(info.stats.timeouts, 1);
}

#[tokio::test]
async fn deep_recursion_traps_on_the_stack_limit() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), Services::default());
    assert_eq!(
        hostile(&host, "recurse", limits(5_000, 32), &[]).await,
        None
    );
    match host.discovery_named("hostile").unwrap().discover().await {
        Err(CallError::Trapped(reason)) => assert!(reason.contains("stack"), "{reason}"),
        other => panic!("expected a stack overflow, got {other:?}"),
    }
}

#[tokio::test]
async fn a_capability_that_was_not_granted_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let kv = Arc::new(MemoryKv::default());
    let host = host(
        dir.path(),
        Services {
            kv: Some(kv.clone()),
            ..Services::default()
        },
    );
    // The manifest asks for kv; the operator grants only log.
    assert_eq!(
        hostile(&host, "forbidden", limits(1_000, 32), &[Capability::Log]).await,
        None
    );
    let plugin = host.discovery_named("hostile").unwrap();
    match plugin.discover().await {
        Err(CallError::Plugin(GuestError::Denied(reason))) => {
            assert!(reason.contains("kv"), "{reason}")
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    let info = host.info("hostile").unwrap();
    assert_eq!(info.stats.denied, 1);
    assert_eq!(
        info.state,
        PluginState::Running,
        "a denial is not a failure of the plugin"
    );
    assert!(kv.0.lock().unwrap().is_empty(), "nothing was written");
}

/// What `peek` saw: WASI's wall clock (seconds) and a hash keyed by WASI's random seed.
async fn peek(host: &PluginHost) -> (u64, u64) {
    let plugin = host.discovery_named("hostile").unwrap();
    let findings = plugin.discover().await.unwrap();
    host.unload("hostile");
    let volli_plugin_host::Finding::Record(record) = &findings[0] else {
        panic!("{findings:?}");
    };
    (
        u64::from_le_bytes(record[..8].try_into().unwrap()),
        u64::from_le_bytes(record[8..16].try_into().unwrap()),
    )
}

#[tokio::test]
async fn without_the_clock_and_random_grants_wasi_gives_neither() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), Services::default());
    let mut seen = Vec::new();
    for _ in 0..2 {
        assert_eq!(
            hostile(&host, "peek", limits(1_000, 32), &[Capability::Log]).await,
            None
        );
        seen.push(peek(&host).await);
    }
    assert_eq!(seen[0].0, 0, "the clock stands still without the grant");
    assert_eq!(seen[0], seen[1], "no randomness without the grant");

    let mut granted = Vec::new();
    for _ in 0..2 {
        let grants = [Capability::Log, Capability::Clock, Capability::Random];
        assert_eq!(
            hostile(&host, "peek", limits(1_000, 32), &grants).await,
            None
        );
        granted.push(peek(&host).await);
    }
    assert!(
        granted[0].0 > 1_700_000_000,
        "the real time with the grant: {granted:?}"
    );
    assert_ne!(
        granted[0].1, granted[1].1,
        "fresh randomness with the grant"
    );
}

#[tokio::test]
async fn a_panicking_plugin_is_marked_failed_and_the_others_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), Services::default());
    let mut events = host.subscribe();
    assert_eq!(hostile(&host, "panic", limits(1_000, 32), &[]).await, None);
    host.load(
        host.inspect(builtin("memory")).await.unwrap(),
        settings(&[]),
    )
    .await
    .unwrap();
    let plugin = host.discovery_named("hostile").unwrap();
    for attempt in 1..=3 {
        match plugin.discover().await {
            Err(CallError::Trapped(reason)) => assert!(reason.contains("panicked"), "{reason}"),
            other => panic!("attempt {attempt}: expected a trap, got {other:?}"),
        }
    }
    let info = host.info("hostile").unwrap();
    assert_eq!(info.state, PluginState::Failed);
    assert_eq!(info.stats.traps, 3);
    assert_eq!(
        info.stats.instantiations, 3,
        "each trap discards the instance; the next call makes a new one"
    );
    assert!(info.last_error.unwrap().contains("panicked"));
    match events.try_recv() {
        Ok(PluginEvent::Failed { name, reason }) => {
            assert_eq!(name, "hostile");
            assert!(reason.contains("panicked"), "{reason}");
        }
        other => panic!("expected a plugin.failed event, got {other:?}"),
    }
    // While failed, calls are refused without running the plugin.
    let calls = host.info("hostile").unwrap().stats.calls;
    match plugin.discover().await {
        Err(CallError::Failed { retry_in, .. }) => assert!(retry_in > Duration::from_secs(20)),
        other => panic!("expected the backoff, got {other:?}"),
    }
    assert_eq!(host.info("hostile").unwrap().stats.calls, calls);
    // Other plugins are unaffected.
    let mem = host.file_backend_named("memory").unwrap();
    mem.put("k", b"v".to_vec()).await.unwrap();
    // Disabling and enabling clears the failure.
    host.set_enabled("hostile", false).await.unwrap();
    assert_eq!(plugin.discover().await, Err(CallError::Disabled));
    let info = host.set_enabled("hostile", true).await.unwrap();
    assert_eq!(info.state, PluginState::Running);
}

#[tokio::test]
async fn a_plugin_that_never_finishes_starting_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), Services::default());
    let started = Instant::now();
    let error = hostile(&host, "loop-in-init", limits(300, 32), &[])
        .await
        .expect("a start error");
    assert!(error.contains("time budget"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn garbage_and_foreign_components_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), Services::default());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("text", b"hello, I am not wasm".to_vec()),
        ("truncated", hostile_wasm()[..1000].to_vec()),
        // A valid, empty core module: not a component.
        ("core module", b"\0asm\x01\0\0\0".to_vec()),
        // A valid, empty component: implements no plugin world.
        ("empty component", b"\0asm\x0d\0\x01\0".to_vec()),
    ];
    for (what, bytes) in cases {
        let error = host
            .inspect(bytes)
            .await
            .err()
            .unwrap_or_else(|| panic!("{what} was accepted"));
        assert!(!error.0.is_empty(), "{what}");
    }
    assert!(host.list().is_empty());
}

#[tokio::test]
async fn compiled_components_are_cached_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let host = volli_plugin_host::PluginHost::new(
        volli_plugin_host::HostConfig {
            cache_dir: Some(cache.clone()),
            fs_root: dir.path().join("fs"),
        },
        Services::default(),
    )
    .unwrap();
    let first = Instant::now();
    host.inspect(builtin("memory")).await.unwrap();
    let cold = first.elapsed();
    let compiled = std::fs::read_dir(&cache)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "cwasm")
        })
        .count();
    assert_eq!(compiled, 1);
    let second = Instant::now();
    host.inspect(builtin("memory")).await.unwrap();
    let warm = second.elapsed();
    assert!(warm * 5 < cold, "cached {warm:?} vs compiled {cold:?}");
}
