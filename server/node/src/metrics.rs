//! Prometheus metrics, served at `GET /metrics` on a listener of their own (`[metrics]
//! listen`, off by default): the API's listener carries the admin page and a token, a
//! metrics scraper needs neither.
//!
//! Two kinds of figures:
//! - **Counted as they happen** (API requests, discovery findings, messages sent and
//!   received, vault commit latency): process-wide, in [`metrics()`]. A node that restarts in
//!   place as another user's device (pairing) is the same process, and its counters go on, as
//!   Prometheus expects of a counter.
//! - **Read at scrape time** from the running node (connections by transport, messages by
//!   status, relay holdings, plugin calls, vault and database size, transfers): the scrape
//!   handler reads them, so they are never stale and cost nothing between scrapes.
//!
//! The text format is OpenMetrics (`application/openmetrics-text`), which Prometheus reads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::ApiState;

/// Labels of an API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    method: String,
    /// The route's pattern (`/v1/contacts/{user_id}`), never the path itself: ids would
    /// make a series per contact.
    route: String,
    status: u16,
}

/// Labels naming a plugin.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    plugin: String,
}

/// Labels of a route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    route: String,
}

/// Labels of a hole-punching outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PunchLabels {
    outcome: &'static str,
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    api_requests: Family<RequestLabels, Counter>,
    api_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    discovery_findings: Family<PluginLabels, Counter>,
    messages_sent: Counter,
    messages_received: Counter,
    vault_commit: Histogram,
    punches: Family<PunchLabels, Counter>,
    relayed_bytes: Counter,
    libp2p: volli_net::Libp2pMetrics,
    snapshot: std::sync::Arc<Mutex<Snapshot>>,
}

fn latency_histogram() -> Histogram {
    // 0.1 ms … about 3.3 s.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("volli");
        let api_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "API requests answered, by method, route and status",
            api_requests.clone(),
        );
        let api_duration: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "api_request_duration_seconds",
            "Time to answer API requests, by route",
            api_duration.clone(),
        );
        let discovery_findings = Family::<PluginLabels, Counter>::default();
        registry.register(
            "discovery_findings",
            "Peers reported by discovery, by the plugin (or method) that found them",
            discovery_findings.clone(),
        );
        let messages_sent = Counter::default();
        registry.register(
            "messages_sent",
            "Messages this node's user sent from this device",
            messages_sent.clone(),
        );
        let messages_received = Counter::default();
        registry.register(
            "messages_received",
            "Messages received from contacts",
            messages_received.clone(),
        );
        let vault_commit = latency_histogram();
        registry.register(
            "vault_commit_duration_seconds",
            "Time to commit a batch of vault changes (one SQLite transaction)",
            vault_commit.clone(),
        );
        let punches = Family::<PunchLabels, Counter>::default();
        registry.register(
            "hole_punches",
            "Attempts to replace a relayed connection by a direct one, by outcome: started, \
             direct, failed",
            punches.clone(),
        );
        let relayed_bytes = Counter::default();
        registry.register(
            "relayed_file_bytes",
            "File bytes this node sent or received through a friend's relay",
            relayed_bytes.clone(),
        );
        // libp2p's own: connections and dials by outcome, Kademlia queries, identify, ping
        // round trips, relay circuits (`volli_libp2p_…`).
        let libp2p = volli_net::Libp2pMetrics::new(&mut registry);
        let snapshot = std::sync::Arc::new(Mutex::new(Snapshot::default()));
        registry.register_collector(Box::new(SnapshotCollector(snapshot.clone())));
        Self {
            registry,
            api_requests,
            api_duration,
            discovery_findings,
            messages_sent,
            messages_received,
            vault_commit,
            punches,
            relayed_bytes,
            libp2p,
            snapshot,
        }
    }

    /// Where the network records libp2p's metrics.
    pub fn libp2p(&self) -> &volli_net::Libp2pMetrics {
        &self.libp2p
    }

    /// A peer found by a discovery plugin (or another method: `invite`, `identify`…).
    pub fn found(&self, source: &str) {
        self.discovery_findings
            .get_or_create(&PluginLabels {
                plugin: source.to_owned(),
            })
            .inc();
    }

    /// A message sent by the user.
    pub fn sent(&self) {
        self.messages_sent.inc();
    }

    /// A message received.
    pub fn received(&self) {
        self.messages_received.inc();
    }

    /// A hole-punching attempt started or ended.
    pub fn punch(&self, outcome: volli_net::PunchOutcome) {
        let outcome = match outcome {
            volli_net::PunchOutcome::Trying => "started",
            other => other.as_str(),
        };
        self.punches.get_or_create(&PunchLabels { outcome }).inc();
    }

    /// `bytes` of a file went through a friend's relay.
    pub fn relayed(&self, bytes: usize) {
        self.relayed_bytes.inc_by(bytes as u64);
    }

    /// A vault commit took `elapsed`.
    pub fn vault_committed(&self, elapsed: Duration) {
        self.vault_commit.observe(elapsed.as_secs_f64());
    }

    /// The observer the vault reports its commits to.
    pub fn commit_observer() -> volli_store::vault::CommitObserver {
        volli_store::vault::CommitObserver(std::sync::Arc::new(|elapsed| {
            metrics().vault_committed(elapsed);
        }))
    }

    /// Everything, in the OpenMetrics text format, after reading the node's current figures.
    pub async fn render(&self, sources: &Sources) -> String {
        let snapshot = Snapshot::read(sources).await;
        if let Ok(mut s) = self.snapshot.lock() {
            *s = snapshot;
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Counts every API request by method, route pattern and final status (a layer around the
/// whole API, so refusals by the auth and rate-limit layers count too).
pub async fn track_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let m = metrics();
    m.api_duration
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    m.api_requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// Figures read from the node at scrape time.
#[derive(Debug, Default)]
struct Snapshot {
    connections: BTreeMap<&'static str, u64>,
    peers: u64,
    messages: Vec<(&'static str, u64)>,
    relay_envelopes: u64,
    relay_bytes: u64,
    relay_recipients: u64,
    /// Seconds until the first held envelope expires, when any is held.
    relay_next_expiry: Option<u64>,
    plugins: Vec<(String, volli_plugin_host::PluginStats)>,
    vault: volli_store::VaultStats,
    db_bytes: u64,
    transfers: BTreeMap<&'static str, u64>,
    transfer_bytes: u64,
    storage: crate::files::Storage,
    storage_limit: u64,
}

impl Snapshot {
    async fn read(sources: &Sources) -> Self {
        let state = &sources.state;
        let mut s = Self::default();
        for transport in ["tcp", "quic", "relay", "memory", "other"] {
            s.connections.insert(transport, 0);
        }
        for peer in state.peers.list() {
            s.peers += 1;
            if let Some(t) = peer.transport {
                *s.connections.entry(t).or_default() += 1;
            }
        }
        if let Ok(counts) = sources.db.message_counts().await {
            s.messages = counts.into_iter().map(|(st, n)| (st.as_str(), n)).collect();
        }
        if let Ok(relay) = state.relay.stats().await {
            s.relay_envelopes = relay.envelopes;
            s.relay_bytes = relay.bytes;
            s.relay_recipients = relay.recipients;
            s.relay_next_expiry = relay
                .next_expiry
                .map(|at| volli_core::Timestamp::now().until(at).as_secs());
        }
        s.plugins = state
            .plugins
            .list()
            .into_iter()
            .map(|p| (p.name, p.stats))
            .collect();
        if let Ok(vault) = state.vault.stats().await {
            s.vault = vault;
        }
        s.db_bytes = ["volli.db", "volli.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(sources.data_dir.join(f)).ok())
            .map(|m| m.len())
            .sum();
        if let Ok(transfers) = state.files.list().await {
            for t in transfers {
                *s.transfers.entry(t.state).or_default() += 1;
                s.transfer_bytes += t.bytes_done;
            }
        }
        if let Ok(storage) = state.files.storage().await {
            s.storage = storage;
        }
        s.storage_limit = state.files.config().max_bytes;
        s
    }
}

#[derive(Debug)]
struct SnapshotCollector(std::sync::Arc<Mutex<Snapshot>>);

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

fn gauges<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (key, value) in values {
        let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
        g.encode(family.encode_family(&[(label, key)])?)?;
    }
    Ok(())
}

fn plugin_counters<N: prometheus_client::encoding::EncodeCounterValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    plugins: &[(String, volli_plugin_host::PluginStats)],
    value: impl Fn(&volli_plugin_host::PluginStats) -> N,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (plugin, stats) in plugins {
        ConstCounter::new(value(stats)).encode(family.encode_family(&[("plugin", plugin)])?)?;
    }
    Ok(())
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(s) = self.0.lock() else {
            return Ok(());
        };
        gauges(
            &mut e,
            "connections",
            "Peers connected, by the transport of their connection",
            "transport",
            s.connections.iter().map(|(k, v)| (*k, *v)),
        )?;
        gauge(&mut e, "peers_known", "Peers in the peer table", s.peers)?;
        gauges(
            &mut e,
            "messages",
            "Messages stored, by status",
            "status",
            s.messages.iter().map(|(k, v)| (*k, *v)),
        )?;
        gauge(
            &mut e,
            "relay_held_envelopes",
            "Envelopes held for friends (blind mailbox)",
            s.relay_envelopes,
        )?;
        gauge(
            &mut e,
            "relay_held_bytes",
            "Bytes held for friends",
            s.relay_bytes,
        )?;
        gauge(
            &mut e,
            "relay_held_recipients",
            "Friends with envelopes held here",
            s.relay_recipients,
        )?;
        if let Some(secs) = s.relay_next_expiry {
            gauge(
                &mut e,
                "relay_next_expiry_seconds",
                "Seconds until the first envelope held for friends expires",
                secs,
            )?;
        }
        plugin_counters(
            &mut e,
            "plugin_calls",
            "Calls into each plugin",
            &s.plugins,
            |p| p.calls,
        )?;
        plugin_counters(
            &mut e,
            "plugin_failures",
            "Plugin calls that returned an error, trapped or ran out of time",
            &s.plugins,
            |p| p.errors + p.traps + p.timeouts,
        )?;
        plugin_counters(
            &mut e,
            "plugin_busy_seconds",
            "Time spent in each plugin's calls",
            &s.plugins,
            |p| p.busy_us as f64 / 1e6,
        )?;
        gauge(
            &mut e,
            "vault_documents",
            "Vault documents stored",
            s.vault.docs,
        )?;
        gauge(
            &mut e,
            "vault_bytes",
            "Vault size: document snapshots plus the updates after them",
            s.vault.snapshot_bytes + s.vault.update_bytes,
        )?;
        gauge(
            &mut e,
            "vault_log_updates",
            "Vault updates not yet folded into a snapshot",
            s.vault.updates,
        )?;
        gauge(
            &mut e,
            "database_bytes",
            "Size of the database on disk (with its write-ahead log)",
            s.db_bytes,
        )?;
        gauges(
            &mut e,
            "transfers",
            "File transfers, by state",
            "state",
            s.transfers.iter().map(|(k, v)| (*k, *v)),
        )?;
        gauge(
            &mut e,
            "transfer_bytes",
            "Bytes of files transferred or held by the transfers listed",
            s.transfer_bytes,
        )?;
        gauge(
            &mut e,
            "transfer_storage_bytes",
            "Bytes transfers hold in the file backend (uploads not yet fetched, received files)",
            s.storage.bytes,
        )?;
        gauge(
            &mut e,
            "transfer_storage_limit_bytes",
            "[files] max_bytes: what transfers may hold in the file backend",
            s.storage_limit,
        )?;
        Ok(())
    }
}

/// What the scrape reads the node's current figures from.
#[derive(Clone)]
pub struct Sources {
    /// The node's services.
    pub state: ApiState,
    /// Its database.
    pub db: volli_store::Db,
    /// Its data dir (for the database's size on disk).
    pub data_dir: std::path::PathBuf,
}

/// Serves `GET /metrics` on `listen` until the node's runtime stops.
pub async fn serve(listen: SocketAddr, sources: Sources) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for metrics on {listen}"))?;
    tracing::info!("metrics on http://{listen}/metrics");
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(sources);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(())
}

async fn scrape(State(sources): State<Sources>) -> impl IntoResponse {
    let body = metrics().render(&sources).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}
