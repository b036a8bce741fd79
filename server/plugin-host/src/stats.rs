//! Per-plugin counters, updated lock-free on every call.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;

#[derive(Default, Debug)]
pub(crate) struct Stats {
    calls: AtomicU64,
    errors: AtomicU64,
    traps: AtomicU64,
    timeouts: AtomicU64,
    denied: AtomicU64,
    instantiations: AtomicU64,
    busy_nanos: AtomicU64,
    dropped_logs: AtomicU64,
}

/// A snapshot of a plugin's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PluginStats {
    /// Calls made into the plugin.
    pub calls: u64,
    /// Calls where the plugin returned an error.
    pub errors: u64,
    /// Calls that trapped (panic, memory cap, stack overflow…).
    pub traps: u64,
    /// Calls stopped for exceeding the time budget.
    pub timeouts: u64,
    /// Capability uses refused because the capability was not granted.
    pub denied: u64,
    /// Instances created (the first, plus one after each trap).
    pub instantiations: u64,
    /// Time spent in calls, in microseconds.
    pub busy_us: u64,
    /// Log lines dropped by the plugin's log rate limit.
    pub dropped_logs: u64,
}

impl Stats {
    pub(crate) fn call(&self, elapsed: Duration) {
        self.calls.fetch_add(1, Relaxed);
        self.busy_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Relaxed,
        );
    }
    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }
    pub(crate) fn trap(&self) {
        self.traps.fetch_add(1, Relaxed);
    }
    pub(crate) fn timeout(&self) {
        self.timeouts.fetch_add(1, Relaxed);
    }
    pub(crate) fn denied(&self) {
        self.denied.fetch_add(1, Relaxed);
    }
    pub(crate) fn instantiated(&self) {
        self.instantiations.fetch_add(1, Relaxed);
    }
    pub(crate) fn dropped_log(&self) {
        self.dropped_logs.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> PluginStats {
        PluginStats {
            calls: self.calls.load(Relaxed),
            errors: self.errors.load(Relaxed),
            traps: self.traps.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            denied: self.denied.load(Relaxed),
            instantiations: self.instantiations.load(Relaxed),
            busy_us: self.busy_nanos.load(Relaxed) / 1_000,
            dropped_logs: self.dropped_logs.load(Relaxed),
        }
    }
}
