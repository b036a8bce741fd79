//! Start-up, wiring and shutdown of a node.
//!
//! `run` takes a validated [`Config`], claims the data dir (one node per data dir), loads or
//! creates the identity and the admin token, opens the store, starts the API, and on shutdown
//! drains requests and closes the store so every acknowledged write is on disk.

use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use multiaddr::Multiaddr;
use tokio::net::TcpListener;
use volli_core::{PeerId, Timestamp, UserId};
use volli_store::vault::DeviceRecord;
use volli_store::{Store, VaultOptions};

use crate::api::{self, ApiState, auth::Auth};
use crate::config::Config;
use crate::events::EventBus;
use crate::identity::{self, Identity};
use crate::plugins::Plugins;
use volli_plugin_host::Services;

/// Facts about this node that the API reports. Cheap to clone.
#[derive(Clone)]
pub struct NodeInfo {
    inner: Arc<NodeInfoInner>,
}

struct NodeInfoInner {
    user_id: UserId,
    peer_id: PeerId,
    device_name: String,
    started_at: Timestamp,
    listen_addrs: RwLock<Vec<Multiaddr>>,
}

impl NodeInfo {
    /// Describes a node with the given identity.
    pub fn new(user_id: UserId, peer_id: PeerId, device_name: String) -> Self {
        Self {
            inner: Arc::new(NodeInfoInner {
                user_id,
                peer_id,
                device_name,
                started_at: Timestamp::now(),
                listen_addrs: RwLock::new(Vec::new()),
            }),
        }
    }

    /// The user id.
    pub fn user_id(&self) -> UserId {
        self.inner.user_id
    }
    /// This device's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }
    /// This device's name.
    pub fn device_name(&self) -> &str {
        &self.inner.device_name
    }
    /// When the node started.
    pub fn started_at(&self) -> Timestamp {
        self.inner.started_at
    }
    /// The current peer-to-peer listen addresses.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.inner
            .listen_addrs
            .read()
            .map(|a| a.clone())
            .unwrap_or_default()
    }
}

/// Where a running node writes its API address for local clients.
pub fn api_url_path(data_dir: &Path) -> PathBuf {
    data_dir.join("api.url")
}

/// Runs a node until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    crate::secret_file::private_dir(&data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    let _lock = lock_data_dir(&data_dir)?;
    let loaded = Identity::load_or_create(&data_dir, &config.device_name)
        .context("cannot load the node identity")?;
    let identity = loaded.identity;
    if loaded.created_user {
        tracing::info!(user_id = %identity.user_id(), data_dir = %data_dir.display(), "created a new identity");
    }
    let token = identity::load_or_create_token(&data_dir).context("cannot load the admin token")?;

    let store = Store::open(&data_dir, VaultOptions::for_peer(identity.vault_peer()))
        .await
        .with_context(|| format!("cannot open the database in {}", data_dir.display()))?;
    register_own_device(&store, &identity).await?;
    let events = EventBus::new();
    let plugins = Plugins::start(
        &data_dir,
        &config.plugins,
        store.db().clone(),
        events.clone(),
        Services::default(),
    )
    .await
    .context("cannot start the plugin host")?;

    let node = NodeInfo::new(
        identity.user_id(),
        identity.peer_id(),
        identity.certificate.device_name().to_owned(),
    );
    let state = ApiState {
        auth: Auth::new(&token),
        node,
        events,
        vault: store.vault().clone(),
        plugins,
    };
    let app = api::router(state, &config.api);

    let listener = TcpListener::bind(config.api_listen).await.with_context(|| {
        format!(
            "cannot listen on {} (is another node running? choose another address with --api-listen)",
            config.api_listen
        )
    })?;
    let local = listener.local_addr()?;
    let url = local_url(local);
    let url_path = api_url_path(&data_dir);
    std::fs::write(&url_path, format!("{url}\n")).context("cannot write api.url")?;
    tracing::info!(
        user_id = %identity.user_id(),
        peer_id = %identity.peer_id(),
        "API listening on {url} — admin token in {}",
        identity::token_path(&data_dir).display()
    );

    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;

    tracing::info!("shutting down");
    let _ = std::fs::remove_file(&url_path);
    store.close().await;
    served.context("the API server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Adds this device to the vault's device list, or refreshes its certificate.
async fn register_own_device(store: &Store, identity: &Identity) -> anyhow::Result<()> {
    let vault = store.vault();
    let known = vault
        .devices()
        .await?
        .into_iter()
        .find(|d| d.peer_id() == identity.peer_id());
    if known.as_ref().map(|d| &d.certificate) != Some(&identity.certificate) {
        vault
            .put_device(DeviceRecord {
                certificate: identity.certificate.clone(),
                added_at: known.map_or_else(Timestamp::now, |d| d.added_at),
            })
            .await
            .context("cannot record this device in the vault")?;
    }
    Ok(())
}

/// Holds an exclusive lock on `<data-dir>/lock` for the life of the node, so two nodes never
/// share one data dir.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    let path = data_dir.join("lock");
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another node is already using the data dir {}",
            data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// The URL local clients should use for a listener bound to `addr`.
fn local_url(addr: SocketAddr) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        ip if ip.is_ipv6() => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}", addr.port())
}
