//! The data of one plugin's wasmtime `Store`: who the plugin is, what it was granted, its
//! limits and its (locked-down) WASI context.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, ResourceTable, WasiCtx, WasiCtxView, WasiView};

use crate::bindings::types::PluginError;
use crate::limits::Limits;
use crate::manifest::{Capabilities, Capability};
use crate::services::{ServiceError, Services};
use crate::stats::Stats;

/// Log lines a plugin may write per second, with this burst.
const LOG_PER_SECOND: f64 = 50.0;
const LOG_BURST: f64 = 200.0;

/// What every store of one plugin shares.
pub(crate) struct PluginContext {
    pub(crate) name: String,
    pub(crate) grants: Capabilities,
    pub(crate) services: Services,
    pub(crate) stats: Arc<Stats>,
    pub(crate) http_allow: Vec<String>,
    pub(crate) kv_quota: u64,
    log_bucket: Mutex<(f64, Instant)>,
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
            log_bucket: Mutex::new((LOG_BURST, Instant::now())),
        }
    }

    /// Takes a log token; false when the plugin logs faster than allowed.
    pub(crate) fn take_log_token(&self) -> bool {
        let mut bucket = self.log_bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(bucket.1).as_secs_f64() * LOG_PER_SECOND;
        bucket.0 = (bucket.0 + refill).min(LOG_BURST);
        bucket.1 = now;
        if bucket.0 >= 1.0 {
            bucket.0 -= 1.0;
            true
        } else {
            false
        }
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
