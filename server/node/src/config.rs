//! Configuration, layered: built-in defaults < the TOML file (`--config`) < `VOLLI_*`
//! environment variables < command-line flags.
//!
//! Environment variables name a key by its path, upper-cased, with `_` or `__` between a
//! table and its key: `VOLLI_API_LISTEN`, `VOLLI_LOG_FORMAT` (= `[log] format`),
//! `VOLLI_P2P_LISTEN=/ip4/0.0.0.0/tcp/4001,/ip4/0.0.0.0/udp/4001/quic-v1` (lists are
//! comma-separated). Values are checked once, here; the rest of the node gets typed fields.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use multiaddr::Multiaddr;
use serde::{Deserialize, Serialize};

/// Environment variables that belong to the client or the tooling, not to the node config.
const NOT_CONFIG: &[&str] = &[
    "CONFIG",
    "API",
    "TOKEN",
    "BIN",
    "PREVIOUS_BIN",
    "PASSPHRASE_FILE",
    "WEB_DIR",
];

/// The node's settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the node keeps its identity, database and admin token.
    pub data_dir: PathBuf,
    /// Address of the HTTP/WebSocket API. Keep it on loopback unless a TLS proxy fronts it.
    pub api_listen: SocketAddr,
    /// libp2p listen addresses.
    pub p2p_listen: Vec<Multiaddr>,
    /// Kademlia bootstrap peers (`/…/p2p/<peer id>`). None are contacted unless listed.
    pub bootstrap: Vec<Multiaddr>,
    /// This device's name, shown to the user's other devices.
    pub device_name: String,
    /// Logging.
    pub log: LogConfig,
    /// API limits.
    pub api: ApiConfig,
    /// Peer-to-peer networking beyond the listen addresses.
    pub network: NetworkConfig,
    /// Sending messages.
    pub messages: MessagesConfig,
    /// Holding mail for friends.
    pub relay: RelayConfig,
    /// File transfers.
    pub files: FilesConfig,
    /// Backups held by friends.
    pub backup: BackupConfig,
    /// Plugins.
    pub plugins: PluginsConfig,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
    /// Web Push notifications to clients.
    pub push: PushConfig,
}

/// Web Push notifications (RFC 8030, 8291, 8292) to the clients that subscribed.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Who runs this node, for push services to reach (`mailto:…` or `https://…`), sent as
    /// the VAPID `sub` claim. Empty: not sent (some push services require it).
    pub contact: String,
    /// Accept `http://` push endpoints (a push service on this machine or a test's); by
    /// default only `https://`.
    pub allow_http: bool,
}

/// Prometheus metrics (`GET /metrics`), on a listener of their own.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where to serve `/metrics` (`ip:port`, e.g. `127.0.0.1:9470`). Empty: no metrics.
    /// No token guards it: keep it on loopback or a private network.
    pub listen: String,
}

impl MetricsConfig {
    /// The listen address, when metrics are on.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.trim().parse().ok()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./volli-data"),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 8470)),
            p2p_listen: vec![
                "/ip4/0.0.0.0/tcp/8471"
                    .parse()
                    .unwrap_or_else(|_| unreachable!()),
                "/ip4/0.0.0.0/udp/8471/quic-v1"
                    .parse()
                    .unwrap_or_else(|_| unreachable!()),
                // A global IPv6 address needs no NAT traversal; without IPv6 the node goes
                // on with IPv4.
                "/ip6/::/tcp/8471"
                    .parse()
                    .unwrap_or_else(|_| unreachable!()),
                "/ip6/::/udp/8471/quic-v1"
                    .parse()
                    .unwrap_or_else(|_| unreachable!()),
            ],
            bootstrap: Vec::new(),
            device_name: default_device_name(),
            log: LogConfig::default(),
            api: ApiConfig::default(),
            network: NetworkConfig::default(),
            backup: BackupConfig::default(),
            messages: MessagesConfig::default(),
            relay: RelayConfig::default(),
            files: FilesConfig::default(),
            plugins: PluginsConfig::default(),
            metrics: MetricsConfig::default(),
            push: PushConfig::default(),
        }
    }
}

/// Peer-to-peer networking: rendezvous, relays, limits, the LAN.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Take part in the Kademlia DHT (address records, peer routing). Turning it off hides
    /// this node from DHT lookups; contacts then find it through the other methods.
    pub dht: bool,
    /// Rendezvous points to register at and look users up (`…/p2p/<peer id>`).
    pub rendezvous_points: Vec<Multiaddr>,
    /// Serve as a rendezvous point for others.
    pub rendezvous_server: bool,
    /// Relay connections for contacts' devices (and this user's own) that cannot be reached
    /// directly, unless this node knows it is not reachable from outside (bounded).
    pub relay_server: bool,
    /// Bytes per second one circuit through this node's relay may carry (the nodes at its
    /// ends pace what they send through it to this).
    pub relay_rate: u64,
    /// Relays to listen through when this node is not reachable directly (`…/p2p/<peer id>`),
    /// before the contacts' nodes that offer to.
    pub relays: Vec<Multiaddr>,
    /// Ask the router (UPnP IGD) to forward the listen ports, so that contacts can connect
    /// directly.
    pub upnp: bool,
    /// Public addresses to announce besides the listen addresses (e.g. a forwarded port).
    pub external_addrs: Vec<Multiaddr>,
    /// Connections kept at most.
    pub max_connections: u32,
    /// Use the local network's mDNS group (the `lan` capability of discovery plugins).
    pub lan: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            dht: true,
            rendezvous_points: Vec::new(),
            rendezvous_server: false,
            relay_server: true,
            relay_rate: 4 << 20,
            relays: Vec::new(),
            upnp: true,
            external_addrs: Vec::new(),
            max_connections: 256,
            lan: true,
        }
    }
}

/// Logging settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `info,volli_node=debug`. `RUST_LOG` wins if set.
    pub filter: String,
    /// Output format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            // The MLS library reports as errors what the node expects and handles (a copy of a
            // message that arrived twice, a key used up): the node logs the outcome itself.
            // Kademlia warns at each start that no bootstrap peer is configured, the default.
            filter: "info,loro_internal=warn,openmls=off,libp2p_kad=error".into(),
            format: LogFormat::Auto,
        }
    }
}

/// How logs are written (to standard error).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `pretty` on a terminal, `compact` otherwise.
    Auto,
    /// Multi-line, coloured, for people.
    Pretty,
    /// One line per event.
    Compact,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Limits applied by the API.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Largest accepted request body, in bytes (plugin uploads have their own limit).
    pub max_body_bytes: usize,
    /// Requests an address may make without a valid token before it is slowed down.
    pub public_burst: u32,
    /// Sustained rate of such requests per address, per second.
    pub public_per_second: u32,
    /// Messages the clients may send at once (`POST /v1/messages`) before 429.
    pub message_burst: u32,
    /// Sustained messages per second after the burst.
    pub messages_per_second: u32,
    /// Host names the API answers to besides IP addresses and `localhost` (the name a
    /// reverse proxy or the LAN knows it by). Requests naming any other host are refused
    /// with 421, so a web page cannot reach the API through DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// A PEM certificate chain (leaf first) for serving the API over HTTPS; with `tls_key`.
    /// Read again on SIGHUP. Empty: plain HTTP (keep the API on loopback, or behind a TLS
    /// proxy).
    pub tls_cert: String,
    /// The PEM private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: String,
}

impl ApiConfig {
    /// The certificate and key files, when TLS is on.
    pub fn tls_files(&self) -> Option<(PathBuf, PathBuf)> {
        let (cert, key) = (self.tls_cert.trim(), self.tls_key.trim());
        (!cert.is_empty() && !key.is_empty()).then(|| (PathBuf::from(cert), PathBuf::from(key)))
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            public_burst: 100,
            public_per_second: 20,
            message_burst: 10_000,
            messages_per_second: 5_000,
            allowed_hosts: Vec::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

/// Sending messages.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MessagesConfig {
    /// How long an undelivered message is retried (and held by relays) before it is marked
    /// `failed`, in seconds: 1 to 604800 (7 days, the longest a relay holds anything).
    pub ttl_secs: u64,
    /// Messages taken in from one contact per day at most (directly or through relays);
    /// beyond that they wait at the sender and its relays until the next day, so a contact
    /// cannot fill this node's disk.
    pub inbound_per_day: u64,
    /// Bytes of text taken in from one contact per day at most.
    pub inbound_bytes_per_day: u64,
    /// How long the keys of a conversation's past epochs are kept for mail that arrives late
    /// (through friends' relays), in seconds: 1 to 604800 (7 days, the longest a relay
    /// holds anything). This is also how long a copy of this device's state taken by a
    /// thief opens traffic captured in epochs that ended.
    pub late_mail_secs: u64,
    /// A device refreshes its own keys in a conversation after this many seconds…
    pub update_every_secs: u64,
    /// …or after this many messages through it, whichever comes first (and at once when a
    /// device is revoked).
    pub update_after_messages: u64,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        Self {
            ttl_secs: volli_core::wire::MAX_TTL.as_secs(),
            inbound_per_day: 100_000,
            inbound_bytes_per_day: 256 << 20,
            late_mail_secs: volli_core::wire::MAX_TTL.as_secs(),
            update_every_secs: 24 * 3600,
            update_after_messages: 10_000,
        }
    }
}

/// Holding mail for friends.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// The relay-policy plugin that decides on deposits (must be enabled; if it is not,
    /// nothing is held for anyone).
    pub policy: String,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            policy: "friends-only".into(),
        }
    }
}

/// Backups held by friends: what this node keeps for its contacts, and how it spreads its own.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Bytes of backup this node keeps for each contact that asks (0: it keeps none).
    pub offer_bytes: u64,
    /// Bytes of backups this node keeps for all its contacts together.
    pub max_total_bytes: u64,
    /// Holders this node's own backup is spread over, at most (n, 1 to 16).
    pub holders: u8,
    /// Holders needed to restore it when all `holders` hold a share (k); with fewer holders
    /// fewer are needed, so that one holder may always vanish.
    pub threshold: u8,
    /// Seconds between refreshes of this node's backup while little changes.
    pub refresh_secs: u64,
    /// Changes to the vault after which the backup is refreshed soon, not at the next
    /// `refresh_secs`.
    pub refresh_after_changes: u64,
    /// Seconds a holder may stay unreachable before its share moves to another friend.
    pub move_after_secs: u64,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            offer_bytes: 256 << 20,
            max_total_bytes: 4 << 30,
            holders: 5,
            threshold: 3,
            refresh_secs: 24 * 3600,
            refresh_after_changes: 200,
            move_after_secs: 7 * 24 * 3600,
        }
    }
}

/// File transfers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// The file-backend plugin that stores chunks (must be enabled).
    pub backend: String,
    /// Whether file data may travel on the bulk channel (a plain TCP connection opened with a
    /// ticket from the libp2p connection; much faster). When off, or when the sender's bulk
    /// listener cannot be reached, chunks travel over libp2p.
    pub bulk: bool,
    /// Where the bulk listener listens (`ip:port`). Empty: the IPs of the TCP
    /// `p2p_listen` addresses, on a port the system picks. Set a fixed port to forward it.
    pub bulk_listen: Vec<SocketAddr>,
    /// How long a sent file stays available to its recipient, in seconds (1 to 2592000).
    pub keep_secs: u64,
    /// Bytes all transfers may hold in the backend (received files and uploads).
    pub max_bytes: u64,
    /// Bytes one contact's files may hold.
    pub max_bytes_per_contact: u64,
    /// Sending rate cap in bytes per second for all transfers together (0: none).
    pub max_send_rate: u64,
    /// What each contact may leave here for its offline contacts who designated this node
    /// as a relay (files through friends), in bytes; 0: none. The setting
    /// `files.relay_bytes` overrides it.
    pub relay_bytes: u64,
    /// Directories from which a client token with `files` may send a file by its path on
    /// the node (the admin token may send any file the node can read, but never one of its
    /// data directory). Empty: client tokens upload the file's bytes instead.
    pub upload_dirs: Vec<PathBuf>,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            backend: "fs".into(),
            bulk: true,
            bulk_listen: Vec::new(),
            keep_secs: 7 * 24 * 3600,
            max_bytes: 256 << 30,
            max_bytes_per_contact: 64 << 30,
            max_send_rate: 0,
            relay_bytes: 256 << 20,
            upload_dirs: Vec::new(),
        }
    }
}

/// Plugin settings: `[plugins]` holds `cache_dir`; `[plugins.<name>]` configures one plugin.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct PluginsConfig {
    /// Where compiled components are cached; empty means `<data-dir>/cache`.
    pub cache_dir: PathBuf,
    /// Settings per plugin, by name.
    #[serde(flatten)]
    pub plugin: BTreeMap<String, PluginConfig>,
}

/// The operator's settings for one plugin. Unset values keep the plugin's defaults.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PluginConfig {
    /// Whether it runs (a change made through the API wins over this).
    pub enabled: Option<bool>,
    /// Capabilities granted; built-in plugins default to what they ask for, installed ones to
    /// what was granted at installation.
    pub grant: Option<Vec<String>>,
    /// Configuration passed to the plugin, over its defaults.
    pub config: toml::Table,
    /// Time budget of one call, in milliseconds.
    pub deadline_ms: Option<u64>,
    /// Memory cap, in MiB.
    pub memory_mib: Option<usize>,
    /// Hosts the `http` capability may reach (`example.org`, or `.example.org` with subdomains).
    pub http_allow: Vec<String>,
    /// Cap on the plugin's `kv` storage, in bytes.
    pub kv_quota_bytes: Option<u64>,
}

/// Values given as command-line flags; they override everything else.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--api-listen`
    pub api_listen: Option<SocketAddr>,
    /// `--p2p-listen` (replaces the list when given)
    pub p2p_listen: Vec<Multiaddr>,
    /// `--bootstrap` (replaces the list when given)
    pub bootstrap: Vec<Multiaddr>,
    /// `--device-name`
    pub device_name: Option<String>,
    /// `--log-format`
    pub log_format: Option<LogFormat>,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// An environment variable holds a value of the wrong type.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// Why.
        message: String,
    },
    /// The merged settings do not form a valid configuration.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A loaded configuration and the warnings met on the way (logged once logging is up).
#[derive(Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Things worth telling the operator, such as unknown `VOLLI_*` variables.
    pub warnings: Vec<String>,
}

impl Config {
    /// Loads the layered configuration from `file`, the given environment and `flags`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> Result<Loaded, ConfigError> {
        let defaults = toml::Table::try_from(Config::default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let mut merged = defaults.clone();
        let mut warnings = Vec::new();

        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Syntax {
                        path: path.to_owned(),
                        message: e.to_string(),
                    })?;
            merge(&mut merged, table);
        }

        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("VOLLI_"))
            .collect();
        env.sort();
        for (var, value) in env {
            let name = &var["VOLLI_".len()..];
            if NOT_CONFIG.contains(&name) {
                continue;
            }
            let parts: Vec<String> = name
                .to_ascii_lowercase()
                .split('_')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            let Some(path) = resolve(&defaults, &parts) else {
                warnings.push(format!("ignoring unknown environment variable {var}"));
                continue;
            };
            let value =
                typed_env_value(&defaults, &path, &value).map_err(|message| ConfigError::Env {
                    var: var.clone(),
                    message,
                })?;
            set_path(&mut merged, &path, value);
        }

        merge(&mut merged, flags.to_table());

        let config: Config = merged
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_owned()))?;
        config.validate()?;
        Ok(Loaded { config, warnings })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let name = self.device_name.trim();
        if name.is_empty() || name.len() > volli_core::cert::MAX_DEVICE_NAME_LEN {
            return Err(ConfigError::Invalid(format!(
                "device_name must be 1 to {} bytes",
                volli_core::cert::MAX_DEVICE_NAME_LEN
            )));
        }
        if self.api.tls_cert.trim().is_empty() != self.api.tls_key.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "api.tls_cert and api.tls_key go together: set both (PEM files) or neither".into(),
            ));
        }
        if self.api.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "api.max_body_bytes must be at least 1024".into(),
            ));
        }
        volli_plugin_host::check_name(&self.relay.policy)
            .map_err(|e| ConfigError::Invalid(format!("relay.policy: {e}")))?;
        for (name, plugin) in &self.plugins.plugin {
            volli_plugin_host::check_name(name).map_err(ConfigError::Invalid)?;
            for cap in plugin.grant.iter().flatten() {
                cap.parse::<volli_plugin_host::Capability>()
                    .map_err(|e| ConfigError::Invalid(format!("plugins.{name}.grant: {e}")))?;
            }
        }
        let max_ttl = volli_core::wire::MAX_TTL.as_secs();
        if !(1..=max_ttl).contains(&self.messages.late_mail_secs) {
            return Err(ConfigError::Invalid(format!(
                "messages.late_mail_secs must be 1 to {max_ttl}"
            )));
        }
        if self.messages.update_every_secs == 0 || self.messages.update_after_messages == 0 {
            return Err(ConfigError::Invalid(
                "messages.update_every_secs and messages.update_after_messages must be positive"
                    .into(),
            ));
        }
        if !(1..=max_ttl).contains(&self.messages.ttl_secs) {
            return Err(ConfigError::Invalid(format!(
                "messages.ttl_secs must be 1 to {max_ttl}"
            )));
        }
        if self.messages.inbound_per_day == 0 || self.messages.inbound_bytes_per_day == 0 {
            return Err(ConfigError::Invalid(
                "messages.inbound_per_day and messages.inbound_bytes_per_day must be positive"
                    .into(),
            ));
        }
        volli_plugin_host::check_name(&self.files.backend)
            .map_err(|e| ConfigError::Invalid(format!("files.backend: {e}")))?;
        if !(1..=30 * 24 * 3600).contains(&self.files.keep_secs) {
            return Err(ConfigError::Invalid(
                "files.keep_secs must be 1 to 2592000 (30 days)".into(),
            ));
        }
        if !self.metrics.listen.trim().is_empty() && self.metrics.listen_addr().is_none() {
            return Err(ConfigError::Invalid(format!(
                "metrics.listen must be ip:port (e.g. 127.0.0.1:9470), not {:?}",
                self.metrics.listen
            )));
        }
        if let Some(bad) = self
            .network
            .relays
            .iter()
            .find(|a| !a.iter().any(|p| matches!(p, multiaddr::Protocol::P2p(_))))
        {
            return Err(ConfigError::Invalid(format!(
                "network.relays: {bad} lacks /p2p/<peer id>"
            )));
        }
        if self.network.relay_rate < 1024 {
            return Err(ConfigError::Invalid(
                "network.relay_rate must be at least 1024 bytes per second".into(),
            ));
        }
        let b = &self.backup;
        if !(1..=16).contains(&b.holders) || b.threshold == 0 || b.threshold > b.holders {
            return Err(ConfigError::Invalid(
                "backup.holders must be 1 to 16 and backup.threshold 1 to backup.holders".into(),
            ));
        }
        if b.refresh_secs == 0 || b.refresh_after_changes == 0 || b.move_after_secs == 0 {
            return Err(ConfigError::Invalid(
                "backup.refresh_secs, backup.refresh_after_changes and backup.move_after_secs \
                 must be positive"
                    .into(),
            ));
        }
        if self.api.public_burst == 0 || self.api.public_per_second == 0 {
            return Err(ConfigError::Invalid(
                "api.public_burst and api.public_per_second must be positive".into(),
            ));
        }
        Ok(())
    }

    /// The effective configuration as TOML, for `volli config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

impl Overrides {
    fn to_table(&self) -> toml::Table {
        let mut t = toml::Table::new();
        let mut put = |k: &str, v: toml::Value| {
            t.insert(k.to_owned(), v);
        };
        if let Some(d) = &self.data_dir {
            put("data_dir", toml::Value::String(d.display().to_string()));
        }
        if let Some(a) = &self.api_listen {
            put("api_listen", toml::Value::String(a.to_string()));
        }
        if !self.p2p_listen.is_empty() {
            put("p2p_listen", strings(&self.p2p_listen));
        }
        if !self.bootstrap.is_empty() {
            put("bootstrap", strings(&self.bootstrap));
        }
        if let Some(n) = &self.device_name {
            put("device_name", toml::Value::String(n.clone()));
        }
        if let Some(f) = self.log_format {
            let mut log = toml::Table::new();
            if let Ok(v) = toml::Value::try_from(f) {
                log.insert("format".into(), v);
            }
            put("log", toml::Value::Table(log));
        }
        t
    }
}

fn strings(items: &[Multiaddr]) -> toml::Value {
    toml::Value::Array(
        items
            .iter()
            .map(|a| toml::Value::String(a.to_string()))
            .collect(),
    )
}

/// Deep-merges `over` into `base`: tables merge key by key, anything else is replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Finds the key path named by `parts` (words split on `_`) in `table`, preferring the longest
/// key at each level, so `api_listen` is a key while `log_format` is `log.format`.
fn resolve(table: &toml::Table, parts: &[String]) -> Option<Vec<String>> {
    for i in (1..=parts.len()).rev() {
        let key = parts[..i].join("_");
        match table.get(&key) {
            Some(_) if i == parts.len() => return Some(vec![key]),
            Some(toml::Value::Table(inner)) => {
                if let Some(mut rest) = resolve(inner, &parts[i..]) {
                    rest.insert(0, key);
                    return Some(rest);
                }
            }
            _ => {}
        }
    }
    None
}

fn lookup<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (last, init) = path.split_last()?;
    let mut t = table;
    for k in init {
        t = t.get(k)?.as_table()?;
    }
    t.get(last)
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let Some((last, init)) = path.split_last() else {
        return;
    };
    let mut t = table;
    for k in init {
        let entry = t
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(inner) = entry else {
            return;
        };
        t = inner;
    }
    t.insert(last.clone(), value);
}

/// Converts an environment string to the TOML type the default has at `path`.
fn typed_env_value(
    defaults: &toml::Table,
    path: &[String],
    raw: &str,
) -> Result<toml::Value, String> {
    Ok(match lookup(defaults, path) {
        Some(toml::Value::Array(_)) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        Some(toml::Value::Integer(_)) => toml::Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| format!("expected an integer, got {raw:?}"))?,
        ),
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(
            raw.trim()
                .parse()
                .map_err(|_| format!("expected true or false, got {raw:?}"))?,
        ),
        _ => toml::Value::String(raw.to_owned()),
    })
}

fn default_device_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && s.len() <= volli_core::cert::MAX_DEVICE_NAME_LEN)
        .unwrap_or_else(|| "volli-node".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_local() {
        let c = Config::load(None, env(&[]), &Overrides::default())
            .unwrap()
            .config;
        assert_eq!(c.api_listen.to_string(), "127.0.0.1:8470");
        assert_eq!(c.data_dir, PathBuf::from("./volli-data"));
        assert!(
            c.bootstrap.is_empty(),
            "no public network unless configured"
        );
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("volli.toml");
        std::fs::write(
            &file,
            "api_listen = \"127.0.0.1:1000\"\ndata_dir = \"/from/file\"\ndevice_name = \"file\"\n[log]\nformat = \"json\"\n",
        )
        .unwrap();
        let flags = Overrides {
            data_dir: Some("/from/flag".into()),
            ..Overrides::default()
        };
        let loaded = Config::load(
            Some(&file),
            env(&[
                ("VOLLI_API_LISTEN", "127.0.0.1:2000"),
                ("VOLLI_DATA_DIR", "/from/env"),
                ("VOLLI_LOG_FILTER", "debug"),
                (
                    "VOLLI_P2P_LISTEN",
                    "/ip4/127.0.0.1/tcp/1, /ip4/127.0.0.1/tcp/2",
                ),
                ("VOLLI_API__PUBLIC_BURST", "7"),
                ("VOLLI_NONSENSE", "1"),
                ("VOLLI_TOKEN", "client-only"),
                ("HOME", "/root"),
            ]),
            &flags,
        )
        .unwrap();
        let c = loaded.config;
        assert_eq!(c.data_dir, PathBuf::from("/from/flag"), "flag beats env");
        assert_eq!(c.api_listen.port(), 2000, "env beats file");
        assert_eq!(c.device_name, "file", "file beats default");
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.filter, "debug");
        assert_eq!(c.p2p_listen.len(), 2);
        assert_eq!(c.api.public_burst, 7);
        assert_eq!(
            loaded.warnings,
            vec!["ignoring unknown environment variable VOLLI_NONSENSE"]
        );
    }

    #[test]
    fn bad_values_are_reported_with_their_source() {
        let e = Config::load(
            None,
            env(&[("VOLLI_API_PUBLIC_BURST", "many")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("VOLLI_API_PUBLIC_BURST"), "{e}");

        let e = Config::load(
            None,
            env(&[("VOLLI_API_LISTEN", "nowhere")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::Invalid(_)), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "unknown_key = 1\n").unwrap();
        let e = Config::load(Some(&file), env(&[]), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("unknown_key"), "{e}");

        let e = Config::load(
            Some(&dir.path().join("missing.toml")),
            env(&[]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    }

    #[test]
    fn the_example_config_in_the_repo_is_valid() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../volli.example.toml");
        Config::load(Some(&example), env(&[]), &Overrides::default()).unwrap();
    }
}
