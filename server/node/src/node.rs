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
use volli_core::{PeerId, Permissions, Timestamp, UserId};
use volli_store::vault::DeviceRecord;
use volli_store::{Store, VaultOptions};

use crate::api::{self, ApiState, auth::Auth};
use crate::config::Config;
use crate::contacts::Contacts;
use crate::devices::Devices;
use crate::discovery::{Discovery, backends, lan::Lan};
use crate::events::{Event, EventBus};
use crate::files::Files;
use crate::identity::{self, Identity};
use crate::keystore::Passphrase;
use crate::limits::RateLimiter;
use crate::messaging::{InboundQuota, Messaging};
use crate::network::Dispatch;
use crate::outbound::Outbound;
use crate::peers::Peers;
use crate::plugins::Plugins;
use crate::relay::Relay;
use tokio::sync::Notify;
use volli_core::AddressRecord;
use volli_net::{NetClient, NetConfig};
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
    permissions: Permissions,
    started_at: Timestamp,
    listen_addrs: RwLock<Vec<Multiaddr>>,
}

impl NodeInfo {
    /// Describes a node with the given identity: a device of `user_id` allowed
    /// `permissions`.
    pub fn new(
        user_id: UserId,
        peer_id: PeerId,
        device_name: String,
        permissions: Permissions,
    ) -> Self {
        Self {
            inner: Arc::new(NodeInfoInner {
                user_id,
                peer_id,
                device_name,
                permissions,
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
    /// What this device may do, as its certificate says.
    pub fn permissions(&self) -> Permissions {
        self.inner.permissions
    }
    /// When the node started.
    pub fn started_at(&self) -> Timestamp {
        self.inner.started_at
    }
    /// Replaces the advertised peer-to-peer addresses.
    pub fn set_listen_addrs(&self, addrs: Vec<Multiaddr>) {
        if let Ok(mut current) = self.inner.listen_addrs.write() {
            *current = addrs;
        }
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

/// A started node: identity, storage, network, plugins and services, ready to serve.
pub struct Node {
    /// What the API serves.
    pub state: ApiState,
    config: Config,
    store: Store,
    net: NetClient,
    restart: Arc<Notify>,
    _lock: File,
}

impl Node {
    /// Claims the data dir and starts everything but the HTTP listener. `passphrase` opens
    /// sealed keys.
    pub async fn start(config: Config, passphrase: Option<&Passphrase>) -> anyhow::Result<Self> {
        let data_dir = config.data_dir.clone();
        crate::secret_file::private_dir(&data_dir)
            .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
        let lock = lock_data_dir(&data_dir)?;
        let loaded = Identity::load_or_create(&data_dir, &config.device_name, passphrase)
            .context("cannot load the node identity")?;
        let identity = loaded.identity;
        if loaded.created_user {
            tracing::info!(user_id = %identity.user_id(), data_dir = %data_dir.display(), "created a new identity");
            tracing::info!(
                "to keep it safe, let friends' nodes hold an encrypted backup: `volli backup setup` \
                 shows a recovery phrase that restores this user on a new machine"
            );
        }
        if loaded.joined.is_some() {
            tracing::info!(user_id = %identity.user_id(), "this node is now a device of the user it joined");
        }
        let token =
            identity::load_or_create_token(&data_dir).context("cannot load the admin token")?;
        let store = Store::open_for(
            &data_dir,
            VaultOptions {
                on_commit: Some(crate::metrics::Metrics::commit_observer()),
                ..VaultOptions::default()
            },
            &identity.user_id().to_string(),
        )
        .await
        .with_context(|| format!("cannot open the database in {}", data_dir.display()))?;
        // The documents a pairing handed over, imported once (the file goes after).
        if let Some(bytes) = identity.joined_vault()? {
            let delta = volli_store::VaultDelta::from_bytes(&bytes)
                .context("the vault handed over by the pairing is unreadable")?;
            store.vault().import(delta).await?;
            identity.forget_joined_vault()?;
        }
        register_own_device(&store, &identity).await?;
        if let Some(user) = &identity.user {
            let signed = store.vault().adopt_legacy(user).await?;
            if signed > 0 {
                tracing::info!(
                    statements = signed,
                    "signed the revocations and key generation an older release kept unsigned"
                );
            }
        }
        let identity = Arc::new(identity);
        let events = EventBus::new();
        let peers = Peers::new(identity.peer_id(), identity.user_id(), events.clone());

        let mut net_config = NetConfig::new(identity.device.clone(), config.p2p_listen.clone());
        net_config.bootstrap = config.bootstrap.clone();
        net_config.dht = config.network.dht;
        net_config.rendezvous_points = config.network.rendezvous_points.clone();
        net_config.rendezvous_server = config.network.rendezvous_server;
        net_config.relay_server = config.network.relay_server;
        // Contacts' devices and this user's own: only they may reserve a slot on this node's
        // circuit relay (circuits go to them from anyone), and their connections stay open
        // while idle (the node would dial them again at once).
        let trusted = peers.clone();
        let trusted: volli_net::PeerFilter = Arc::new(move |peer: &PeerId| {
            trusted.contact_of(peer).is_some() || trusted.is_own_device(peer)
        });
        net_config.relay_for = Some(trusted.clone());
        net_config.keep_alive_for = Some(trusted);
        net_config.upnp = config.network.upnp;
        // A circuit carries what its rate allows for an hour, then its ends open another.
        net_config.relay_circuit_duration = std::time::Duration::from_secs(3600);
        net_config.relay_circuit_bytes = config.network.relay_rate.saturating_mul(3600);
        net_config.external_addrs = config.network.external_addrs.clone();
        net_config.max_connections = config.network.max_connections;
        net_config.metrics = Some(crate::metrics::metrics().libp2p());
        net_config.record_validator = Some(Arc::new(|key: &[u8], value: &[u8]| {
            AddressRecord::valid_for_key(key, value, Timestamp::now())
        }));
        let (net, net_events) = volli_net::start(net_config).await.context(
            "cannot start peer-to-peer networking (choose other addresses with --p2p-listen)",
        )?;

        let wake = Arc::new(Notify::new());
        let lan: Option<Arc<dyn volli_plugin_host::LanBackend>> = if config.network.lan {
            match Lan::start(wake.clone()) {
                Ok(lan) => Some(lan),
                Err(e) => {
                    tracing::warn!(error = %e, "the local network (mDNS) is not available; LAN discovery is off");
                    None
                }
            }
        } else {
            None
        };
        let services = Services {
            lan,
            dht: Some(Arc::new(backends::Dht {
                net: net.clone(),
                user: identity.user_id(),
            })),
            rendezvous: Some(Arc::new(backends::Rendezvous { net: net.clone() })),
            ..Services::default()
        };
        let plugins = Plugins::start(
            &data_dir,
            &config.plugins,
            store.db().clone(),
            events.clone(),
            services,
        )
        .await
        .context("cannot start the plugin host")?;

        let node = NodeInfo::new(
            identity.user_id(),
            identity.peer_id(),
            identity.certificate.device_name().to_owned(),
            identity.permissions(),
        );
        let discovery = Discovery::new(
            plugins.host().clone(),
            net.clone(),
            peers.clone(),
            store.vault().clone(),
            identity.clone(),
            node.clone(),
            wake,
        );
        let contacts = Contacts::new(
            store.db().clone(),
            store.vault().clone(),
            net.clone(),
            identity.clone(),
            discovery.clone(),
            peers.clone(),
            events.clone(),
        );
        contacts.refresh().await;
        let outbound = Outbound::new(net.clone(), peers.clone(), &identity);
        let connectivity = crate::connectivity::Connectivity::new(crate::connectivity::Parts {
            net: net.clone(),
            outbound: outbound.clone(),
            peers: peers.clone(),
            configured: config.network.relays.clone(),
            serves: config.network.relay_server,
            rate: config.network.relay_rate,
        });
        let relay = Relay::new(
            store.db().clone(),
            store.vault().clone(),
            outbound.clone(),
            identity.clone(),
            peers.clone(),
            plugins.host().clone(),
            contacts.clone(),
            connectivity.clone(),
            config.relay.policy.clone(),
        );
        let conversations =
            crate::conversations::Conversations::start(crate::conversations::Parts {
                db: store.db().clone(),
                vault: store.vault().clone(),
                identity: identity.clone(),
                peers: peers.clone(),
                outbound: outbound.clone(),
                events: events.clone(),
                settings: crate::conversations::Settings {
                    late_mail: std::time::Duration::from_secs(config.messages.late_mail_secs),
                    update_every: std::time::Duration::from_secs(config.messages.update_every_secs),
                    update_after: config.messages.update_after_messages,
                    ttl: std::time::Duration::from_secs(config.messages.ttl_secs),
                },
            })
            .await
            .context("cannot open this device's conversations")?;
        let messaging = Messaging::new(
            store.db().clone(),
            store.vault().clone(),
            outbound.clone(),
            identity.clone(),
            peers.clone(),
            events.clone(),
            relay.clone(),
            conversations.clone(),
            RateLimiter::new(config.api.message_burst, config.api.messages_per_second),
            std::time::Duration::from_secs(config.messages.ttl_secs),
            InboundQuota {
                messages_per_day: config.messages.inbound_per_day,
                bytes_per_day: config.messages.inbound_bytes_per_day,
            },
        );
        let restart = Arc::new(Notify::new());
        let devices = Devices::new(crate::devices::Parts {
            db: store.db().clone(),
            vault: store.vault().clone(),
            net: net.clone(),
            outbound: outbound.clone(),
            identity: identity.clone(),
            peers: peers.clone(),
            events: events.clone(),
            contacts: contacts.clone(),
            relay: relay.clone(),
            discovery: discovery.clone(),
            restart: restart.clone(),
        });
        devices.refresh().await;
        let backups = crate::backups::Backups::new(crate::backups::Parts {
            db: store.db().clone(),
            vault: store.vault().clone(),
            net: net.clone(),
            outbound: outbound.clone(),
            identity: identity.clone(),
            peers: peers.clone(),
            events: events.clone(),
            discovery: discovery.clone(),
            devices: devices.clone(),
            config: config.backup.clone(),
            restart: restart.clone(),
        });
        let profile = crate::profile::Profile::new(crate::profile::Parts {
            db: store.db().clone(),
            vault: store.vault().clone(),
            identity: identity.clone(),
            events: events.clone(),
            peers: peers.clone(),
            outbound: outbound.clone(),
            devices: devices.clone(),
        });
        relay.set_profile(profile.clone());
        profile.spawn(&events);
        let files = Files::new(crate::files::Parts {
            db: store.db().clone(),
            vault: store.vault().clone(),
            net: net.clone(),
            outbound: outbound.clone(),
            identity: identity.clone(),
            peers: peers.clone(),
            events: events.clone(),
            host: plugins.host().clone(),
            config: config.files.clone(),
            data_dir: config.data_dir.clone(),
            p2p_listen: config.p2p_listen.clone(),
            connectivity: connectivity.clone(),
            conversations: conversations.clone(),
            messaging: messaging.clone(),
        })
        .await;
        Dispatch {
            net: net.clone(),
            outbound,
            peers: peers.clone(),
            discovery: discovery.clone(),
            contacts: contacts.clone(),
            vault: store.vault().clone(),
            messaging: messaging.clone(),
            conversations: conversations.clone(),
            relay: relay.clone(),
            devices: devices.clone(),
            files: files.clone(),
            backups: backups.clone(),
            connectivity: connectivity.clone(),
            max_strangers: usize::try_from(config.network.max_connections / 2).unwrap_or(128),
        }
        .spawn(net_events);
        connectivity.spawn();
        devices.spawn();
        files.spawn();
        discovery.spawn();
        contacts.spawn_retries();
        relay.spawn();
        messaging.spawn();
        conversations.spawn();
        backups.spawn();
        // A contact added over a connection that is already open gets no new hello: start
        // what a connected contact gets (our card, relay designation, outbox, mailbox) here.
        let mut added = events.subscribe();
        let (r, m, c, b, f) = (
            relay.clone(),
            messaging.clone(),
            conversations.clone(),
            backups.clone(),
            files.clone(),
        );
        tokio::spawn(async move {
            while let Some(event) = added.next().await {
                match &*event {
                    Event::ContactAdded { user_id, .. } => {
                        if let Ok(user) = user_id.parse::<UserId>() {
                            let (r, m, c) = (r.clone(), m.clone(), c.clone());
                            tokio::spawn(async move {
                                c.contact_ready(user).await;
                                r.contact_ready(user).await;
                                m.contact_ready(user).await;
                            });
                        }
                    }
                    Event::ContactRemoved { user_id } => {
                        if let Ok(user) = user_id.parse::<UserId>() {
                            let (r, c, b, f) = (r.clone(), c.clone(), b.clone(), f.clone());
                            tokio::spawn(async move {
                                r.forget(user).await;
                                c.forget_contact(user).await;
                                b.forget(user).await;
                                f.forget_held(user).await;
                            });
                        }
                    }
                    // A group's committer removes a device on its user's signed revocation:
                    // the contacts connected now hear of it at once (the others at their next
                    // hello) — also when the revoking device is in none of the groups yet, as
                    // a device restored from a backup is.
                    Event::DeviceRevoked { .. } => {
                        let c = c.clone();
                        tokio::spawn(async move { c.tell_connected_revocations().await });
                    }
                    _ => {}
                }
            }
        });

        let retention = crate::retention::Retention::new(
            store.vault().clone(),
            store.db().clone(),
            messaging.clone(),
        );
        retention.spawn(&events);
        let clients = crate::clients::Clients::load(store.db().clone(), events.clone())
            .await
            .context("cannot load the client tokens")?;
        let push = crate::push::Push::start(store.db().clone(), &events, &config.push)
            .await
            .context("cannot start push notifications")?;
        let search =
            crate::search::Searcher::new(store.db().clone(), events.clone(), conversations.clone())
                .await;
        search.spawn();
        search.spawn_flusher(store.vault().changes());
        let state = ApiState {
            profile,
            search,
            push,
            auth: Auth::new(&token, clients),
            node,
            events,
            vault: store.vault().clone(),
            plugins,
            peers,
            contacts,
            messaging,
            conversations,
            retention,
            relay,
            devices,
            files,
            backups,
            connectivity,
        };

        if let Some(listen) = config.metrics.listen_addr() {
            crate::metrics::serve(
                listen,
                crate::metrics::Sources {
                    state: state.clone(),
                    db: store.db().clone(),
                    data_dir: data_dir.clone(),
                },
            )
            .await?;
        }

        Ok(Self {
            state,
            config,
            store,
            net,
            restart,
            _lock: lock,
        })
    }

    /// The HTTP application.
    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone(), &self.config.api)
    }

    /// Stops the network and closes the store; every acknowledged write is on disk.
    pub async fn shutdown(self) {
        self.net.shutdown().await;
        self.store.close().await;
    }
}

/// Runs a node until `shutdown` completes. When the node joins another user as a new device
/// (pairing) it restarts in place as that device, on the same API address.
pub async fn run(
    config: Config,
    passphrase: Option<Passphrase>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let listener = std::net::TcpListener::bind(config.api_listen).with_context(|| {
        format!(
            "cannot listen on {} (is another node running? choose another address with --api-listen)",
            config.api_listen
        )
    })?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let tls = match config.api.tls_files() {
        Some((cert, key)) => Some(crate::tls::Tls::load(&cert, &key)?),
        None => None,
    };
    if !local.ip().is_loopback() && tls.is_none() {
        tracing::warn!(
            address = %local,
            "the API listens beyond this machine without TLS: anyone who can reach it can try \
             the admin token, and every token and message travels in clear text — set [api] \
             tls_cert and tls_key, put a TLS proxy in front of it, or keep it on 127.0.0.1"
        );
    }
    let url = local_url(local, tls.is_some());
    let url_path = api_url_path(&data_dir);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    // Each run of the node has a runtime of its own: a restart (after joining another user)
    // drops it, which ends every task the previous run spawned.
    loop {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("volli-node")
            .build()
            .context("cannot start the node's runtime")?;
        let listener = listener.try_clone()?;
        let run = serve_once(
            config.clone(),
            passphrase.clone(),
            Listening {
                listener,
                tls: tls.clone(),
                url: url.clone(),
            },
            stop.clone(),
        );
        let outcome = runtime.spawn(run).await;
        runtime.shutdown_background();
        match outcome.context("the node stopped unexpectedly")?? {
            Stopped::Restart => tracing::info!("restarting as the user's new device"),
            Stopped::Shutdown => break,
        }
    }
    let _ = std::fs::remove_file(&url_path);
    tracing::info!("stopped");
    Ok(())
}

enum Stopped {
    Shutdown,
    Restart,
}

/// The API's listening socket, its TLS set-up and the URL local clients use.
struct Listening {
    listener: std::net::TcpListener,
    tls: Option<crate::tls::Tls>,
    url: String,
}

/// Reloads the API's TLS certificate on every SIGHUP, for the life of this run.
fn reload_on_hangup(tls: Option<crate::tls::Tls>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match &tls {
                Some(tls) => match tls.reload() {
                    Ok(()) => {
                        let (cert, _) = tls.files();
                        tracing::info!(cert = %cert.display(), "SIGHUP: reloaded the API's TLS certificate");
                    }
                    Err(e) => tracing::error!(
                        "SIGHUP: cannot reload the API's TLS certificate, the one in use stays: {e:#}"
                    ),
                },
                None => tracing::info!("SIGHUP: nothing to reload (the API has no TLS)"),
            }
        }
    });
    Ok(())
}

/// One run of the node: start, serve until asked to stop or to restart, shut down.
async fn serve_once(
    config: Config,
    passphrase: Option<Passphrase>,
    listening: Listening,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Stopped> {
    let Listening { listener, tls, url } = listening;
    let data_dir = config.data_dir.clone();
    let node = Node::start(config, passphrase.as_ref()).await?;
    // Atomically: a client that sees the file must never read it half written.
    crate::secret_file::write(&api_url_path(&data_dir), format!("{url}\n").as_bytes())
        .context("cannot write api.url")?;
    tracing::info!(
        user_id = %node.state.node.user_id(),
        peer_id = %node.state.node.peer_id(),
        "API listening on {url} — admin token in {}",
        identity::token_path(&data_dir).display()
    );
    crate::systemd::notify(&format!("READY=1\nSTATUS=API listening on {url}"));
    let restart = node.restart.clone();
    let (why_tx, why) = tokio::sync::oneshot::channel();
    let stopping = async move {
        let why = tokio::select! {
            _ = stop.wait_for(|s| *s) => Stopped::Shutdown,
            () = restart.notified() => Stopped::Restart,
        };
        crate::systemd::notify(match why {
            Stopped::Shutdown => "STOPPING=1",
            // READY=1 follows once the node runs again as the new device.
            Stopped::Restart => "RELOADING=1",
        });
        let _ = why_tx.send(why);
    };
    reload_on_hangup(tls.clone())?;
    let app = node
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    let listener = TcpListener::from_std(listener)?;
    let served = match &tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopping)
                .await
        }
        Some(tls) => {
            use axum::serve::ListenerExt as _;
            // `tap_io` gives the listener the peer address as connect info, as for plain TCP.
            let listener = crate::tls::TlsListener::new(listener, tls)?.tap_io(|_| {});
            axum::serve(listener, app)
                .with_graceful_shutdown(stopping)
                .await
        }
    };
    tracing::info!("shutting down");
    node.shutdown().await;
    served.context("the API server failed")?;
    Ok(why.await.unwrap_or(Stopped::Shutdown))
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
                revoked_at: None,
                addrs: Vec::new(),
            })
            .await
            .context("cannot record this device in the vault")?;
    }
    Ok(())
}

/// Holds an exclusive lock on `<data-dir>/lock` for the life of the node, so two nodes never
/// share one data dir.
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    let path = data_dir.join("lock");
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!(
                "another node is already using the data dir {}",
                data_dir.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// The URL local clients should use for a listener bound to `addr`.
fn local_url(addr: SocketAddr, tls: bool) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        ip if ip.is_ipv6() => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{host}:{}", addr.port())
}
