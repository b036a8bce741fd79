//! One loaded plugin: its compiled component, its live instance, its health, and the call
//! path that enforces its limits.
//!
//! Each plugin keeps one instance between calls (so it can hold state), created on first use
//! and again after a trap. Calls are serialized per plugin. A call sets the store's
//! deadline; the epoch callback yields to the executor every tick and interrupts the guest
//! once the deadline passes; an outer timeout catches a guest stuck in a host call. Any trap
//! discards the instance. Three failures in a row mark the plugin failed for a backoff that
//! doubles up to ten minutes; a success clears it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::broadcast;
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::bindings::types::PluginError;
use crate::bindings::{discovery, file_backend, relay_policy};
use crate::engine::Runtime;
use crate::limits::Limits;
use crate::manifest::Manifest;
use crate::state::{HostState, PluginContext};
use crate::types::{CallError, GuestError, PluginEvent, PluginInfo, PluginState};

/// Failures in a row before a plugin is marked failed.
const FAILURES_BEFORE_BACKOFF: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Extra time the outer timeout allows beyond the budget, for the epoch to fire first.
const GRACE: Duration = Duration::from_millis(500);

pub(crate) enum Pre {
    Discovery(discovery::DiscoveryPre<HostState>),
    RelayPolicy(relay_policy::RelayPolicyPre<HostState>),
    FileBackend(file_backend::FileBackendPre<HostState>),
}

pub(crate) enum Bound {
    Discovery(discovery::Discovery),
    RelayPolicy(relay_policy::RelayPolicy),
    FileBackend(file_backend::FileBackend),
}

pub(crate) struct Live {
    pub(crate) store: Store<HostState>,
    pub(crate) bound: Bound,
}

struct Health {
    failures: u32,
    failed_until: Option<Instant>,
    backoff: Duration,
    last_error: Option<String>,
}

pub(crate) struct Plugin {
    pub(crate) manifest: Manifest,
    pub(crate) limits: Limits,
    pub(crate) builtin: bool,
    pub(crate) hash: String,
    config: String,
    ctx: Arc<PluginContext>,
    pre: Pre,
    runtime: Arc<Runtime>,
    fs_dir: Option<PathBuf>,
    slot: tokio::sync::Mutex<Option<Live>>,
    health: std::sync::Mutex<Health>,
    enabled: AtomicBool,
    events: broadcast::Sender<PluginEvent>,
}

pub(crate) struct PluginParts {
    pub(crate) manifest: Manifest,
    pub(crate) limits: Limits,
    pub(crate) builtin: bool,
    pub(crate) hash: String,
    pub(crate) config: String,
    pub(crate) ctx: Arc<PluginContext>,
    pub(crate) pre: Pre,
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) fs_dir: Option<PathBuf>,
    pub(crate) enabled: bool,
    pub(crate) events: broadcast::Sender<PluginEvent>,
}

impl Plugin {
    /// The configuration it runs with (its defaults, overridden), as JSON.
    pub(crate) fn config(&self) -> &str {
        &self.config
    }

    pub(crate) fn new(parts: PluginParts) -> Self {
        Self {
            manifest: parts.manifest,
            limits: parts.limits,
            builtin: parts.builtin,
            hash: parts.hash,
            config: parts.config,
            ctx: parts.ctx,
            pre: parts.pre,
            runtime: parts.runtime,
            fs_dir: parts.fs_dir,
            slot: tokio::sync::Mutex::new(None),
            health: std::sync::Mutex::new(Health {
                failures: 0,
                failed_until: None,
                backoff: FIRST_BACKOFF,
                last_error: None,
            }),
            enabled: AtomicBool::new(parts.enabled),
            events: parts.events,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.manifest.name
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub(crate) async fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
        if !enabled {
            // Free the instance; enabling again starts afresh.
            *self.slot.lock().await = None;
        }
        let mut health = self.lock_health();
        health.failures = 0;
        health.failed_until = None;
        health.backoff = FIRST_BACKOFF;
    }

    fn lock_health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_granted(&self, capability: crate::Capability) -> bool {
        self.ctx.grants.contains(&capability)
    }

    pub(crate) fn info(&self) -> PluginInfo {
        let health = self.lock_health();
        let state = if !self.is_enabled() {
            PluginState::Disabled
        } else if health.failed_until.is_some() {
            PluginState::Failed
        } else {
            PluginState::Running
        };
        PluginInfo {
            name: self.manifest.name.clone(),
            kind: self.manifest.kind,
            version: self.manifest.version.clone(),
            description: self.manifest.description.clone(),
            enabled: self.is_enabled(),
            state,
            builtin: self.builtin,
            capabilities: self.manifest.capabilities.clone(),
            granted: self.ctx.grants.clone(),
            limits: self.limits.clone(),
            stats: self.ctx.stats.snapshot(),
            last_error: health.last_error.clone(),
            hash: self.hash.clone(),
        }
    }

    /// Discards the instance and starts a new one (instantiate + `init`).
    pub(crate) async fn restart(&self) -> Result<(), CallError> {
        *self.slot.lock().await = None;
        self.start().await
    }

    /// Starts the instance now if there is none, so configuration errors show at load.
    pub(crate) async fn start(&self) -> Result<(), CallError> {
        self.call(|_| Box::pin(async { Ok(Ok(())) })).await
    }

    /// Runs `f` on the live instance under the plugin's limits.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T, CallError>
    where
        F: for<'a> FnOnce(&'a mut Live) -> BoxFuture<'a, wasmtime::Result<Result<T, PluginError>>>,
    {
        self.admit()?;
        let mut slot = self.slot.lock().await;
        if slot.is_none() {
            match self.instantiate().await {
                Ok(live) => *slot = Some(live),
                Err(e) => {
                    self.failure(&e);
                    return Err(e);
                }
            }
        }
        let Some(live) = slot.as_mut() else {
            unreachable!("the slot was just filled");
        };
        let budget = self.limits.deadline();
        live.store.data_mut().deadline = Instant::now() + budget;
        live.store.set_epoch_deadline(1);
        let active = self.runtime.ticker.activate();
        let started = Instant::now();
        let outcome = tokio::time::timeout(budget + GRACE, f(live)).await;
        drop(active);
        self.ctx.stats.call(started.elapsed());
        let result = match outcome {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(guest))) => {
                self.ctx.stats.error();
                Err(CallError::Plugin(GuestError::from(guest)))
            }
            Ok(Err(trap)) => {
                *slot = None;
                Err(self.trapped(&trap))
            }
            Err(_) => {
                *slot = None;
                self.ctx.stats.timeout();
                Err(CallError::Trapped(self.over_budget()))
            }
        };
        drop(slot);
        match &result {
            Err(e @ (CallError::Trapped(_) | CallError::Init(_))) => self.failure(e),
            _ => self.success(),
        }
        result
    }

    /// Refuses calls to a disabled plugin, or to a failed one still in its backoff.
    fn admit(&self) -> Result<(), CallError> {
        if !self.is_enabled() {
            return Err(CallError::Disabled);
        }
        let health = self.lock_health();
        if let Some(until) = health.failed_until {
            let now = Instant::now();
            if now < until {
                return Err(CallError::Failed {
                    retry_in: until - now,
                    reason: health.last_error.clone().unwrap_or_default(),
                });
            }
        }
        Ok(())
    }

    fn success(&self) {
        let mut health = self.lock_health();
        health.failures = 0;
        health.failed_until = None;
        health.backoff = FIRST_BACKOFF;
    }

    fn failure(&self, error: &CallError) {
        let reason = error.to_string();
        let mut health = self.lock_health();
        health.failures += 1;
        health.last_error = Some(reason.clone());
        tracing::warn!(plugin = self.name(), failures = health.failures, "{reason}");
        if health.failures >= FAILURES_BEFORE_BACKOFF {
            let newly_failed = health.failed_until.is_none();
            health.failed_until = Some(Instant::now() + health.backoff);
            health.backoff = (health.backoff * 2).min(MAX_BACKOFF);
            if newly_failed {
                tracing::error!(plugin = self.name(), "plugin marked failed: {reason}");
                let _ = self.events.send(PluginEvent::Failed {
                    name: self.name().to_owned(),
                    reason,
                });
            }
        }
    }

    fn over_budget(&self) -> String {
        format!("exceeded its time budget of {} ms", self.limits.deadline_ms)
    }

    fn trapped(&self, error: &wasmtime::Error) -> CallError {
        let reason = match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => {
                self.ctx.stats.timeout();
                return CallError::Trapped(self.over_budget());
            }
            Some(Trap::StackOverflow) => "overflowed its stack".to_owned(),
            Some(Trap::UnreachableCodeReached) => {
                "panicked (wasm `unreachable` executed)".to_owned()
            }
            Some(other) => format!("trapped: {other}"),
            None if format!("{error:#}").contains("growing memory")
                || format!("{error:#}").contains("memory growth") =>
            {
                format!(
                    "exceeded its memory limit of {} MiB",
                    self.limits.memory_bytes >> 20
                )
            }
            None => format!("failed: {error}"),
        };
        self.ctx.stats.trap();
        CallError::Trapped(reason)
    }

    /// A fresh instance, initialised with the plugin's configuration.
    async fn instantiate(&self) -> Result<Live, CallError> {
        let state = HostState::new(self.ctx.clone(), &self.limits, self.fs_dir.as_deref())
            .map_err(CallError::Init)?;
        let mut store = new_store(&self.runtime, state);
        let budget = self.limits.deadline();
        store.data_mut().deadline = Instant::now() + budget;
        store.set_epoch_deadline(1);
        let _active = self.runtime.ticker.activate();
        let config = self.config.clone();
        let started = async {
            let bound = match &self.pre {
                Pre::Discovery(p) => Bound::Discovery(p.instantiate_async(&mut store).await?),
                Pre::RelayPolicy(p) => Bound::RelayPolicy(p.instantiate_async(&mut store).await?),
                Pre::FileBackend(p) => Bound::FileBackend(p.instantiate_async(&mut store).await?),
            };
            self.ctx.stats.instantiated();
            let init = match &bound {
                Bound::Discovery(b) => {
                    b.volli_plugin_plugin()
                        .call_init(&mut store, &config)
                        .await?
                }
                Bound::RelayPolicy(b) => {
                    b.volli_plugin_plugin()
                        .call_init(&mut store, &config)
                        .await?
                }
                Bound::FileBackend(b) => {
                    b.volli_plugin_plugin()
                        .call_init(&mut store, &config)
                        .await?
                }
            };
            Ok::<_, wasmtime::Error>((bound, init))
        };
        match tokio::time::timeout(budget + GRACE, started).await {
            Ok(Ok((bound, Ok(())))) => Ok(Live { store, bound }),
            Ok(Ok((_, Err(e)))) => Err(CallError::Init(GuestError::from(e).to_string())),
            Ok(Err(trap)) => match self.trapped(&trap) {
                CallError::Trapped(reason) => Err(CallError::Init(reason)),
                other => Err(other),
            },
            Err(_) => {
                self.ctx.stats.timeout();
                Err(CallError::Init(self.over_budget()))
            }
        }
    }
}

/// A store with the plugin's resource limiter and the deadline-enforcing epoch callback.
pub(crate) fn new_store(runtime: &Runtime, state: HostState) -> Store<HostState> {
    let mut store = Store::new(&runtime.engine, state);
    store.limiter(|s| &mut s.limits);
    store.epoch_deadline_callback(|ctx| {
        if Instant::now() >= ctx.data().deadline {
            Ok(UpdateDeadline::Interrupt)
        } else {
            // Let other tasks run while a long call is in progress.
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store
}
