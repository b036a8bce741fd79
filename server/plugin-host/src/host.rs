//! `PluginHost`: the registry of loaded plugins, installation checks, and typed access for
//! the node's services.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use wasmtime::component::Component;

use crate::bindings::{discovery, file_backend, relay_policy};
use crate::engine::Runtime;
use crate::handles::{DiscoveryPlugin, FileBackendPlugin, RelayPolicyPlugin};
use crate::limits::Limits;
use crate::manifest::{Capabilities, Kind, Manifest};
use crate::plugin::{Bound, Plugin, PluginParts, Pre, new_store};
use crate::services::Services;
use crate::state::{HostState, PluginContext};
use crate::stats::Stats;
use crate::types::{PluginEvent, PluginInfo};

/// Largest component accepted.
pub const MAX_COMPONENT_BYTES: usize = 32 << 20;
/// Default `kv` quota per plugin.
pub const DEFAULT_KV_QUOTA: u64 = 1 << 20;
/// Time a component gets to describe itself at installation.
const DESCRIBE_BUDGET: Duration = Duration::from_secs(2);

/// Where the host keeps files.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Compiled components are cached here, keyed by content hash; `None` disables caching.
    pub cache_dir: Option<PathBuf>,
    /// Plugins granted `fs` get `<fs_root>/<name>` as their `/data`.
    pub fs_root: PathBuf,
}

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the plugin runtime: {0}")]
pub struct HostError(String);

/// Why a component was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPlugin(pub String);

/// Why a plugin could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Another plugin has that name.
    #[error("a plugin named {0:?} is already loaded")]
    Exists(String),
    /// The settings do not fit the plugin.
    #[error("{0}")]
    Invalid(String),
}

/// A compiled, checked component, ready to load.
pub struct Inspected {
    /// What it says it is.
    pub manifest: Manifest,
    /// BLAKE3 of the component, hex.
    pub hash: String,
    pre: Pre,
}

/// How the operator set a plugin up.
#[derive(Clone, Debug)]
pub struct PluginSettings {
    /// Whether it runs.
    pub enabled: bool,
    /// What it may use (intersected with what it asks for).
    pub grants: Capabilities,
    /// Configuration over the manifest's defaults (top-level keys replace).
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Limits, or the kind's defaults.
    pub limits: Option<Limits>,
    /// Hosts the `http` capability may reach.
    pub http_allow: Vec<String>,
    /// `kv` quota in bytes.
    pub kv_quota: u64,
    /// Shipped with the node.
    pub builtin: bool,
}

impl Default for PluginSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            grants: Capabilities::new(),
            config: serde_json::Map::new(),
            limits: None,
            http_allow: Vec::new(),
            kv_quota: DEFAULT_KV_QUOTA,
            builtin: false,
        }
    }
}

/// The result of loading: the plugin is registered either way; `start_error` says why it
/// could not start with its configuration.
#[derive(Debug)]
pub struct Loaded {
    /// The plugin as it stands.
    pub info: PluginInfo,
    /// Set when the first instance could not be started.
    pub start_error: Option<String>,
}

/// Runs plugins. Cheap to clone.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Arc<Runtime>,
    config: HostConfig,
    services: Services,
    plugins: RwLock<BTreeMap<String, Arc<Plugin>>>,
    events: broadcast::Sender<PluginEvent>,
}

impl PluginHost {
    /// Starts the runtime. `services` back the capabilities.
    pub fn new(config: HostConfig, services: Services) -> Result<Self, HostError> {
        Self::build(config, services, true)
    }

    /// A host whose plugins have no time budget, to measure what the budget costs. Never
    /// use it to run untrusted plugins.
    #[doc(hidden)]
    pub fn without_deadlines_for_benchmarks(
        config: HostConfig,
        services: Services,
    ) -> Result<Self, HostError> {
        Self::build(config, services, false)
    }

    fn build(config: HostConfig, services: Services, epochs: bool) -> Result<Self, HostError> {
        let runtime =
            Runtime::new(config.cache_dir.clone(), epochs).map_err(|e| HostError(e.to_string()))?;
        let (events, _) = broadcast::channel(64);
        Ok(Self {
            inner: Arc::new(Inner {
                runtime: Arc::new(runtime),
                config,
                services,
                plugins: RwLock::new(BTreeMap::new()),
                events,
            }),
        })
    }

    /// Compiles `wasm` and checks it: a component implementing one of the plugin worlds,
    /// whose manifest is valid for that kind. Runs nothing with any capability.
    pub async fn inspect(&self, wasm: Vec<u8>) -> Result<Inspected, InvalidPlugin> {
        if wasm.len() > MAX_COMPONENT_BYTES {
            return Err(InvalidPlugin(format!(
                "the component is larger than {} MiB",
                MAX_COMPONENT_BYTES >> 20
            )));
        }
        if !wasm.starts_with(b"\0asm") {
            return Err(InvalidPlugin("not a WebAssembly binary".into()));
        }
        let hash = blake3::hash(&wasm).to_hex().to_string();
        let runtime = self.inner.runtime.clone();
        let component = tokio::task::spawn_blocking(move || runtime.compile(&wasm))
            .await
            .map_err(|e| InvalidPlugin(format!("compilation stopped: {e}")))?
            .map_err(|e| InvalidPlugin(format!("not a valid WebAssembly component: {e:#}")))?;
        let (kind, pre) = self.classify(&component)?;
        let manifest = self.describe(kind, &pre).await?;
        Ok(Inspected {
            manifest,
            hash,
            pre,
        })
    }

    fn classify(&self, component: &Component) -> Result<(Kind, Pre), InvalidPlugin> {
        let rt = &self.inner.runtime;
        let mut reasons = Vec::new();
        match rt
            .discovery
            .instantiate_pre(component)
            .and_then(discovery::DiscoveryPre::new)
        {
            Ok(pre) => return Ok((Kind::Discovery, Pre::Discovery(pre))),
            Err(e) => reasons.push(format!("discovery: {e}")),
        }
        match rt
            .relay_policy
            .instantiate_pre(component)
            .and_then(relay_policy::RelayPolicyPre::new)
        {
            Ok(pre) => return Ok((Kind::RelayPolicy, Pre::RelayPolicy(pre))),
            Err(e) => reasons.push(format!("relay-policy: {e}")),
        }
        match rt
            .file_backend
            .instantiate_pre(component)
            .and_then(file_backend::FileBackendPre::new)
        {
            Ok(pre) => return Ok((Kind::FileBackend, Pre::FileBackend(pre))),
            Err(e) => reasons.push(format!("file-backend: {e}")),
        }
        Err(InvalidPlugin(format!(
            "the component implements no volli:plugin@0.1.0 world ({})",
            reasons.join("; ")
        )))
    }

    /// Calls `describe` in a store with no capabilities and a short budget.
    async fn describe(&self, kind: Kind, pre: &Pre) -> Result<Manifest, InvalidPlugin> {
        let runtime = &self.inner.runtime;
        let ctx = Arc::new(PluginContext::new(
            "(installing)".into(),
            Capabilities::new(),
            Services::default(),
            Arc::new(Stats::default()),
            Vec::new(),
            0,
        ));
        let limits = Limits::for_kind(kind);
        let state = HostState::new(ctx, &limits, None).map_err(InvalidPlugin)?;
        let mut store = new_store(runtime, state);
        store.data_mut().deadline = Instant::now() + DESCRIBE_BUDGET;
        store.set_epoch_deadline(1);
        let _active = runtime.ticker.activate();
        let described = async {
            let manifest = match pre {
                Pre::Discovery(p) => {
                    let b = Bound::Discovery(p.instantiate_async(&mut store).await?);
                    let Bound::Discovery(b) = &b else {
                        unreachable!()
                    };
                    b.volli_plugin_plugin().call_describe(&mut store).await?
                }
                Pre::RelayPolicy(p) => {
                    let b = p.instantiate_async(&mut store).await?;
                    b.volli_plugin_plugin().call_describe(&mut store).await?
                }
                Pre::FileBackend(p) => {
                    let b = p.instantiate_async(&mut store).await?;
                    b.volli_plugin_plugin().call_describe(&mut store).await?
                }
            };
            Ok::<_, wasmtime::Error>(manifest)
        };
        let manifest =
            tokio::time::timeout(DESCRIBE_BUDGET + Duration::from_millis(500), described)
                .await
                .map_err(|_| InvalidPlugin("the plugin did not describe itself in time".into()))?
                .map_err(|e| {
                    InvalidPlugin(format!("the plugin failed while describing itself: {e}"))
                })?;
        Manifest::from_wit(manifest, kind)
            .map_err(|e| InvalidPlugin(format!("invalid manifest: {e}")))
    }

    /// Registers an inspected plugin with `settings` and, if enabled, starts it.
    pub async fn load(
        &self,
        inspected: Inspected,
        settings: PluginSettings,
    ) -> Result<Loaded, LoadError> {
        let Inspected {
            manifest,
            hash,
            pre,
        } = inspected;
        let name = manifest.name.clone();
        if self.lock().contains_key(&name) {
            return Err(LoadError::Exists(name));
        }
        let grants: Capabilities = settings
            .grants
            .iter()
            .copied()
            .filter(|c| manifest.capabilities.contains(c) && manifest.kind.allowed().contains(c))
            .collect();
        let mut config = manifest.default_config.clone();
        for (k, v) in settings.config {
            config.insert(k, v);
        }
        let config = serde_json::Value::Object(config).to_string();
        let limits = settings
            .limits
            .unwrap_or_else(|| Limits::for_kind(manifest.kind))
            .clamped();
        let fs_dir = if grants.contains(&crate::Capability::Fs) {
            let dir = self.inner.config.fs_root.join(&name);
            std::fs::create_dir_all(&dir)
                .map_err(|e| LoadError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
            Some(dir)
        } else {
            None
        };
        let ctx = Arc::new(PluginContext::new(
            name.clone(),
            grants,
            self.inner.services.clone(),
            Arc::new(Stats::default()),
            settings.http_allow,
            settings.kv_quota,
        ));
        let plugin = Arc::new(Plugin::new(PluginParts {
            manifest,
            limits,
            builtin: settings.builtin,
            hash,
            config,
            ctx,
            pre,
            runtime: self.inner.runtime.clone(),
            fs_dir,
            enabled: settings.enabled,
            events: self.inner.events.clone(),
        }));
        {
            let mut plugins = self.lock_mut();
            if plugins.contains_key(&name) {
                return Err(LoadError::Exists(name));
            }
            plugins.insert(name, plugin.clone());
        }
        let start_error = if plugin.is_enabled() {
            plugin.start().await.err().map(|e| e.to_string())
        } else {
            None
        };
        Ok(Loaded {
            info: plugin.info(),
            start_error,
        })
    }

    /// Deletes compiled components that were not used for `unused_for`; returns how many.
    pub fn prune_cache(&self, unused_for: Duration) -> usize {
        self.inner.runtime.prune_cache(unused_for)
    }

    /// Removes a plugin. Returns false if there was none.
    pub fn unload(&self, name: &str) -> bool {
        self.lock_mut().remove(name).is_some()
    }

    /// One plugin's report.
    pub fn info(&self, name: &str) -> Option<PluginInfo> {
        self.lock().get(name).map(|p| p.info())
    }

    /// The configuration a plugin runs with (its defaults, overridden by the operator's).
    pub fn config(&self, name: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
        let plugin = self.lock().get(name).cloned()?;
        serde_json::from_str(plugin.config()).ok()
    }

    /// Every plugin's report, by name.
    pub fn list(&self) -> Vec<PluginInfo> {
        self.lock().values().map(|p| p.info()).collect()
    }

    /// Enables or disables a plugin.
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Option<PluginInfo> {
        let plugin = self.lock().get(name).cloned()?;
        plugin.set_enabled(enabled).await;
        if enabled && let Err(e) = plugin.start().await {
            tracing::warn!(plugin = name, error = %e, "plugin enabled but could not start");
        }
        Some(plugin.info())
    }

    /// Plugin events (failures), for the node's event bus.
    pub fn subscribe(&self) -> broadcast::Receiver<PluginEvent> {
        self.inner.events.subscribe()
    }

    /// Enabled discovery plugins.
    pub fn discovery(&self) -> Vec<DiscoveryPlugin> {
        self.of_kind(Kind::Discovery)
            .into_iter()
            .map(DiscoveryPlugin)
            .collect()
    }

    /// Enabled relay-policy plugins.
    pub fn relay_policies(&self) -> Vec<RelayPolicyPlugin> {
        self.of_kind(Kind::RelayPolicy)
            .into_iter()
            .map(RelayPolicyPlugin)
            .collect()
    }

    /// Enabled file-backend plugins.
    pub fn file_backends(&self) -> Vec<FileBackendPlugin> {
        self.of_kind(Kind::FileBackend)
            .into_iter()
            .map(FileBackendPlugin)
            .collect()
    }

    /// A discovery plugin by name, enabled or not.
    pub fn discovery_named(&self, name: &str) -> Option<DiscoveryPlugin> {
        self.named(name, Kind::Discovery).map(DiscoveryPlugin)
    }

    /// A relay-policy plugin by name, enabled or not.
    pub fn relay_policy_named(&self, name: &str) -> Option<RelayPolicyPlugin> {
        self.named(name, Kind::RelayPolicy).map(RelayPolicyPlugin)
    }

    /// A file-backend plugin by name, enabled or not.
    pub fn file_backend_named(&self, name: &str) -> Option<FileBackendPlugin> {
        self.named(name, Kind::FileBackend).map(FileBackendPlugin)
    }

    fn named(&self, name: &str, kind: Kind) -> Option<Arc<Plugin>> {
        self.lock()
            .get(name)
            .filter(|p| p.manifest.kind == kind)
            .cloned()
    }

    fn of_kind(&self, kind: Kind) -> Vec<Arc<Plugin>> {
        self.lock()
            .values()
            .filter(|p| p.manifest.kind == kind && p.is_enabled())
            .cloned()
            .collect()
    }

    fn lock(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Plugin>>> {
        self.inner.plugins.read().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Plugin>>> {
        self.inner
            .plugins
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }
}
