//! The plugin service: loads the built-in and installed plugins into the plugin host with
//! the operator's settings, persists changes, and forwards plugin failures to the event bus.
//!
//! Settings are layered: the plugin's manifest < the `[plugins.<name>]` table of the config
//! file < what the operator changed through the API (stored in SQLite). Installed components
//! live in `<data-dir>/plugins/<name>.wasm`.

pub(crate) mod backends;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Mutex;
use volli_core::Timestamp;
use volli_plugin_host::{
    Capabilities, Capability, DEFAULT_KV_QUOTA, HostConfig, Inspected, Limits, PluginEvent,
    PluginHost, PluginInfo, PluginSettings, Services,
};
use volli_store::{Db, PluginRecord};

use crate::config::{PluginConfig, PluginsConfig};
use crate::events::{Event, EventBus};

/// Compiled components unused this long are deleted from the cache at start-up.
const CACHE_KEEP: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Why a plugin operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// No plugin by that name.
    #[error("no plugin named {0:?}")]
    NotFound(String),
    /// The component or its manifest is not acceptable, or it would not start.
    #[error("{0}")]
    Invalid(String),
    /// A plugin by that name exists.
    #[error("a plugin named {0:?} is already installed")]
    Exists(String),
    /// Built-in plugins cannot be removed.
    #[error("{0:?} is built in; disable it instead")]
    Builtin(String),
    /// The capabilities asked for are not acceptable.
    #[error("{0}")]
    InvalidGrant(String),
    /// The new configuration was refused by the plugin; the old one is kept.
    #[error("the plugin refused this configuration: {0}")]
    InvalidConfig(String),
    /// Storage failed.
    #[error("storage: {0}")]
    Store(#[from] volli_store::StoreError),
    /// The file system failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The node's plugins. Cheap to clone.
#[derive(Clone)]
pub struct Plugins {
    inner: Arc<Inner>,
}

struct Inner {
    host: PluginHost,
    db: Db,
    dir: PathBuf,
    config: PluginsConfig,
    /// Serializes changes (install, configure, remove) so they cannot interleave.
    changes: Mutex<()>,
}

impl Plugins {
    /// Starts the plugin host and loads every plugin. A plugin that fails to load is logged and
    /// reported as failed; it does not stop the node.
    pub async fn start(
        data_dir: &Path,
        config: &PluginsConfig,
        db: Db,
        events: EventBus,
        extra: Services,
    ) -> Result<Self, PluginError> {
        let cache_dir = if config.cache_dir.as_os_str().is_empty() {
            data_dir.join("cache")
        } else {
            config.cache_dir.clone()
        };
        let dir = data_dir.join("plugins");
        std::fs::create_dir_all(&dir)?;
        let services = Services {
            kv: Some(Arc::new(backends::SqliteKv::new(db.clone()))),
            http: Some(Arc::new(backends::HttpGet::new())),
            ..extra
        };
        let host = PluginHost::new(
            HostConfig {
                cache_dir: Some(cache_dir),
                fs_root: dir.join("data"),
            },
            services,
        )
        .map_err(|e| PluginError::Invalid(e.to_string()))?;
        forward_events(&host, events);
        let plugins = Self {
            inner: Arc::new(Inner {
                host,
                db,
                dir,
                config: config.clone(),
                changes: Mutex::new(()),
            }),
        };
        plugins.load_all().await?;
        let pruned = plugins.inner.host.prune_cache(CACHE_KEEP);
        if pruned > 0 {
            tracing::info!(pruned, "removed compiled plugins unused for 30 days");
        }
        Ok(plugins)
    }

    /// The plugin host, for the services that call plugins.
    pub fn host(&self) -> &PluginHost {
        &self.inner.host
    }

    async fn load_all(&self) -> Result<(), PluginError> {
        let records: BTreeMap<String, PluginRecord> = self
            .inner
            .db
            .plugins()
            .await?
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect();
        // Compile (or fetch from the cache) every component in parallel.
        let mut sources: Vec<(String, Vec<u8>, bool)> = volli_plugin_host::builtin::all()
            .iter()
            .map(|(name, wasm)| ((*name).to_owned(), wasm.to_vec(), true))
            .collect();
        for record in records.values().filter(|r| !r.builtin) {
            match std::fs::read(self.component_path(&record.name)) {
                Ok(wasm) => sources.push((record.name.clone(), wasm, false)),
                Err(e) => {
                    tracing::error!(plugin = record.name, error = %e, "installed plugin's component is missing")
                }
            }
        }
        let inspected =
            futures::future::join_all(sources.into_iter().map(|(name, wasm, builtin)| {
                let host = self.inner.host.clone();
                async move { (name, builtin, host.inspect(wasm).await) }
            }))
            .await;
        for (name, builtin, result) in inspected {
            match result {
                Ok(inspected) if inspected.manifest.name == name => {
                    let settings = self.settings(&inspected, builtin, records.get(&name));
                    self.load(inspected, settings).await;
                }
                Ok(inspected) => tracing::error!(
                    plugin = name,
                    manifest = inspected.manifest.name,
                    "component names itself differently; not loaded"
                ),
                Err(e) => tracing::error!(plugin = name, error = %e, "plugin not loaded"),
            }
        }
        Ok(())
    }

    async fn load(&self, inspected: Inspected, settings: PluginSettings) -> Option<String> {
        let name = inspected.manifest.name.clone();
        match self.inner.host.load(inspected, settings).await {
            Ok(loaded) => {
                if let Some(e) = &loaded.start_error {
                    tracing::warn!(plugin = name, error = %e, "plugin loaded but could not start");
                }
                loaded.start_error
            }
            Err(e) => {
                tracing::error!(plugin = name, error = %e, "plugin not loaded");
                Some(e.to_string())
            }
        }
    }

    /// The effective settings: manifest < config file < API changes.
    fn settings(
        &self,
        inspected: &Inspected,
        builtin: bool,
        record: Option<&PluginRecord>,
    ) -> PluginSettings {
        let manifest = &inspected.manifest;
        let file: PluginConfig = self
            .inner
            .config
            .plugin
            .get(&manifest.name)
            .cloned()
            .unwrap_or_default();
        let grants: Capabilities = match (&file.grant, record) {
            (Some(grant), _) => parse_caps(grant),
            (None, Some(r)) if !r.builtin => parse_caps(&r.grants),
            (None, _) if builtin => manifest.capabilities.clone(),
            (None, _) => Capabilities::new(),
        };
        let mut config = serde_json::to_value(&file.config)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        if let Some(r) = record {
            config.extend(r.config.clone());
        }
        let mut limits = Limits::for_kind(manifest.kind);
        if let Some(ms) = file.deadline_ms {
            limits.deadline_ms = ms;
        }
        if let Some(mib) = file.memory_mib {
            limits.memory_bytes = mib << 20;
        }
        let mut http_allow = file.http_allow.clone();
        if let Some(r) = record {
            http_allow.extend(r.http_allow.iter().cloned());
        }
        PluginSettings {
            enabled: record.map(|r| r.enabled).or(file.enabled).unwrap_or(true),
            grants,
            config,
            limits: Some(limits),
            http_allow,
            kv_quota: file.kv_quota_bytes.unwrap_or(DEFAULT_KV_QUOTA),
            builtin,
        }
    }

    fn component_path(&self, name: &str) -> PathBuf {
        self.inner.dir.join(format!("{name}.wasm"))
    }

    /// Every plugin, by name.
    pub fn list(&self) -> Vec<PluginInfo> {
        self.inner.host.list()
    }

    /// One plugin.
    pub fn get(&self, name: &str) -> Result<PluginInfo, PluginError> {
        self.inner
            .host
            .info(name)
            .ok_or_else(|| PluginError::NotFound(name.to_owned()))
    }

    /// Installs a component with the given grants. Refused unless it is a valid plugin that
    /// starts with its default configuration.
    pub async fn install(
        &self,
        wasm: Vec<u8>,
        grant: &[String],
        http_allow: Vec<String>,
    ) -> Result<PluginInfo, PluginError> {
        let _guard = self.inner.changes.lock().await;
        let grants: Vec<Capability> = grant
            .iter()
            .map(|g| g.parse::<Capability>().map_err(PluginError::InvalidGrant))
            .collect::<Result<_, _>>()?;
        let inspected = self
            .inner
            .host
            .inspect(wasm.clone())
            .await
            .map_err(|e| PluginError::Invalid(e.0))?;
        let name = inspected.manifest.name.clone();
        if self.inner.host.info(&name).is_some() {
            return Err(PluginError::Exists(name));
        }
        if let Some(c) = grants
            .iter()
            .find(|c| !inspected.manifest.capabilities.contains(c))
        {
            return Err(PluginError::InvalidGrant(format!(
                "{name} does not ask for the `{c}` capability"
            )));
        }
        let record = PluginRecord {
            name: name.clone(),
            builtin: false,
            enabled: true,
            grants: grants.iter().map(|c| c.as_str().to_owned()).collect(),
            config: serde_json::Map::new(),
            http_allow,
            hash: Some(inspected.hash.clone()),
            installed_at: Timestamp::now(),
        };
        let settings = self.settings(&inspected, false, Some(&record));
        if let Some(error) = self.load(inspected, settings).await {
            self.inner.host.unload(&name);
            return Err(PluginError::Invalid(error));
        }
        let path = self.component_path(&name);
        let saved = async {
            // Atomic and durable (temporary file, fsync, rename, fsync of the directory): a
            // crash never leaves half a component where the next start would load it.
            let (file, bytes) = (path.clone(), wasm.clone());
            tokio::task::spawn_blocking(move || crate::secret_file::write(&file, &bytes))
                .await
                .map_err(std::io::Error::other)??;
            self.inner.db.put_plugin(&record).await?;
            Ok::<_, PluginError>(())
        };
        if let Err(e) = saved.await {
            self.inner.host.unload(&name);
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
        tracing::info!(plugin = name, grants = ?record.grants, "plugin installed");
        self.get(&name)
    }

    /// Turns a plugin on or off, and remembers it.
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<PluginInfo, PluginError> {
        let _guard = self.inner.changes.lock().await;
        let info = self
            .inner
            .host
            .set_enabled(name, enabled)
            .await
            .ok_or_else(|| PluginError::NotFound(name.to_owned()))?;
        let mut record = self.record(&info).await?;
        record.enabled = enabled;
        self.inner.db.put_plugin(&record).await?;
        self.get(name)
    }

    /// Replaces a plugin's API-set configuration and restarts it. If the plugin refuses the
    /// new configuration, the old one stays in force.
    pub async fn configure(
        &self,
        name: &str,
        config: serde_json::Map<String, serde_json::Value>,
    ) -> Result<PluginInfo, PluginError> {
        let _guard = self.inner.changes.lock().await;
        let info = self.get(name)?;
        let old = self.record(&info).await?;
        let mut new = old.clone();
        new.config = config;
        match self.reload(&info, &new).await {
            Ok(()) => {
                self.inner.db.put_plugin(&new).await?;
                self.get(name)
            }
            Err(reason) => {
                let _ = self.reload(&info, &old).await;
                Err(PluginError::InvalidConfig(reason))
            }
        }
    }

    /// Unloads and loads a plugin with `record`'s settings; `Err` carries a start error.
    async fn reload(&self, info: &PluginInfo, record: &PluginRecord) -> Result<(), String> {
        let wasm = if info.builtin {
            volli_plugin_host::builtin::all()
                .iter()
                .find(|(n, _)| *n == info.name)
                .map(|(_, w)| w.to_vec())
                .ok_or_else(|| "built-in component missing".to_owned())?
        } else {
            std::fs::read(self.component_path(&info.name)).map_err(|e| e.to_string())?
        };
        let inspected = self.inner.host.inspect(wasm).await.map_err(|e| e.0)?;
        let settings = self.settings(&inspected, info.builtin, Some(record));
        self.inner.host.unload(&info.name);
        match self.load(inspected, settings).await {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Removes an installed plugin, its component and its data.
    pub async fn remove(&self, name: &str) -> Result<(), PluginError> {
        let _guard = self.inner.changes.lock().await;
        let info = self.get(name)?;
        if info.builtin {
            return Err(PluginError::Builtin(name.to_owned()));
        }
        self.inner.host.unload(name);
        self.inner.db.delete_plugin(name).await?;
        let _ = tokio::fs::remove_file(self.component_path(name)).await;
        let _ = tokio::fs::remove_dir_all(self.inner.dir.join("data").join(name)).await;
        tracing::info!(plugin = name, "plugin removed");
        Ok(())
    }

    /// The stored record, or one describing the plugin as it runs now.
    async fn record(&self, info: &PluginInfo) -> Result<PluginRecord, PluginError> {
        let existing = self
            .inner
            .db
            .plugins()
            .await?
            .into_iter()
            .find(|r| r.name == info.name);
        Ok(existing.unwrap_or_else(|| PluginRecord {
            name: info.name.clone(),
            builtin: info.builtin,
            enabled: info.enabled,
            grants: info.granted.iter().map(|c| c.as_str().to_owned()).collect(),
            config: serde_json::Map::new(),
            http_allow: Vec::new(),
            hash: None,
            installed_at: Timestamp::now(),
        }))
    }
}

fn parse_caps(names: &[String]) -> Capabilities {
    names.iter().filter_map(|n| n.parse().ok()).collect()
}

/// Sends `plugin.failed` events to clients.
fn forward_events(host: &PluginHost, events: EventBus) {
    let mut rx = host.subscribe();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(PluginEvent::Failed { name, reason }) => {
                    events.publish(Event::PluginFailed { name, reason })
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}
