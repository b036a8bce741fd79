//! The data of one plugin's wasmtime `Store`: who the plugin is, what it was granted, its
//! limits and its (locked-down) WASI context.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{
    Deterministic, FsPerms, HostMonotonicClock, HostWallClock, ResourceTable, WasiCtx, WasiCtxView,
    WasiView,
};

use crate::bindings::types::PluginError;
use crate::limits::Limits;
use crate::manifest::{Capabilities, Capability};
use crate::services::{ServiceError, Services};
use crate::stats::Stats;

/// Log lines a plugin may write per second, with this burst.
const LOG_PER_SECOND: f64 = 50.0;
const LOG_BURST: f64 = 200.0;
/// `kv` writes a plugin may make per second, with this burst: each is a durable commit.
const KV_WRITES_PER_SECOND: f64 = 20.0;
const KV_WRITE_BURST: f64 = 100.0;

/// A token bucket: `(tokens, last refill)`.
struct Bucket(Mutex<(f64, Instant)>);

impl Bucket {
    fn full(burst: f64) -> Self {
        Self(Mutex::new((burst, Instant::now())))
    }

    /// Takes a token, refilled at `rate` per second up to `burst`; false if none is left.
    fn take(&self, rate: f64, burst: f64) -> bool {
        let mut bucket = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(bucket.1).as_secs_f64() * rate;
        bucket.0 = (bucket.0 + refill).min(burst);
        bucket.1 = now;
        if bucket.0 >= 1.0 {
            bucket.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What every store of one plugin shares.
pub(crate) struct PluginContext {
    pub(crate) name: String,
    pub(crate) grants: Capabilities,
    pub(crate) services: Services,
    pub(crate) stats: Arc<Stats>,
    pub(crate) http_allow: Vec<String>,
    pub(crate) kv_quota: u64,
    log_bucket: Bucket,
    kv_writes: Bucket,
}

impl PluginContext {
    pub(crate) fn new(
        name: String,
        grants: Capabilities,
        services: Services,
        stats: Arc<Stats>,
        http_allow: Vec<String>,
        kv_quota: u64,
    ) -> Self {
        Self {
            name,
            grants,
            services,
            stats,
            http_allow,
            kv_quota,
            log_bucket: Bucket::full(LOG_BURST),
            kv_writes: Bucket::full(KV_WRITE_BURST),
        }
    }

    /// Takes a `kv` write token; false when the plugin writes faster than allowed.
    pub(crate) fn take_kv_write_token(&self) -> bool {
        self.kv_writes.take(KV_WRITES_PER_SECOND, KV_WRITE_BURST)
    }

    /// Takes a log token; false when the plugin logs faster than allowed.
    pub(crate) fn take_log_token(&self) -> bool {
        self.log_bucket.take(LOG_PER_SECOND, LOG_BURST)
    }
}

/// A clock that reads zero forever, for plugins without the `clock` grant.
struct Stopped;

impl HostWallClock for Stopped {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for Stopped {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The `T` of `Store<T>` for plugins.
pub(crate) struct HostState {
    pub(crate) ctx: Arc<PluginContext>,
    pub(crate) limits: StoreLimits,
    wasi: WasiCtx,
    table: ResourceTable,
    /// When the current call's budget runs out.
    pub(crate) deadline: Instant,
}

impl HostState {
    /// A fresh state. `fs_dir` is preopened as `/data` only when `fs` is granted.
    pub(crate) fn new(
        ctx: Arc<PluginContext>,
        limits: &Limits,
        fs_dir: Option<&Path>,
    ) -> Result<Self, String> {
        let mut wasi = WasiCtx::builder();
        // No environment, arguments, stdin, sockets or name lookups; stdout and stderr are
        // discarded. The only directory is the plugin's own, and only with `fs`.
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        // WASI's own clocks and randomness answer only with the `clock` and `random` grants,
        // as the host functions do: without them the clocks stand still at zero and the
        // "random" bytes are zeros, so a plugin cannot time or fingerprint anything.
        if !ctx.grants.contains(&Capability::Clock) {
            wasi.wall_clock(Stopped).monotonic_clock(Stopped);
        }
        if !ctx.grants.contains(&Capability::Random) {
            wasi.secure_random(Deterministic::new(vec![0]))
                .insecure_random(Deterministic::new(vec![0]))
                .insecure_random_seed(0);
        }
        if let Some(dir) = fs_dir
            && ctx.grants.contains(&Capability::Fs)
        {
            wasi.preopened_dir(dir, "/data", FsPerms::ReadWrite)
                .map_err(|e| format!("cannot open the plugin's data directory: {e}"))?;
        }
        let limits = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .tables(limits.tables)
            .table_elements(limits.table_elements)
            .instances(limits.instances)
            .memories(limits.instances)
            .trap_on_grow_failure(true)
            .build();
        Ok(Self {
            ctx,
            limits,
            wasi: wasi.build(),
            table: ResourceTable::new(),
            deadline: Instant::now(),
        })
    }

    /// `Ok` if the plugin holds `capability`; otherwise counts and returns a denial.
    pub(crate) fn check(&self, capability: Capability) -> Result<(), PluginError> {
        if self.ctx.grants.contains(&capability) {
            Ok(())
        } else {
            self.ctx.stats.denied();
            Err(PluginError::Denied(format!(
                "the `{capability}` capability was not granted to plugin {:?}",
                self.ctx.name
            )))
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl From<ServiceError> for PluginError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Unavailable(m) => PluginError::Unavailable(m),
            ServiceError::LimitExceeded(m) => PluginError::LimitExceeded(m),
            ServiceError::InvalidInput(m) => PluginError::InvalidInput(m),
            ServiceError::NotFound => PluginError::NotFound,
            ServiceError::Internal(m) => PluginError::Internal(m),
        }
    }
}

/// `unavailable` for a capability whose backend the node has not started.
pub(crate) fn no_backend(capability: Capability) -> PluginError {
    PluginError::Unavailable(format!(
        "the node does not provide `{capability}` right now"
    ))
}
