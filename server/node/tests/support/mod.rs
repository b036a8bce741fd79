//! A test node in-process: the real router over a real SQLite store and the real plugin
//! host with the built-in components (compiled once into a cache shared by all tests).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt as _;
use volli_core::UserSecret;
use volli_node::api::{self, ApiState, auth::Auth};
use volli_node::config::{ApiConfig, PluginConfig, PluginsConfig};
use volli_node::events::EventBus;
use volli_node::node::NodeInfo;
use volli_node::plugins::Plugins;
use volli_store::{Store, VaultOptions};

pub const TOKEN: &str = "test-token-0123456789abcdef0123456789";

pub struct App {
    pub router: Router,
    pub store: Store,
    pub events: EventBus,
    _dir: tempfile::TempDir,
}

/// Plugin settings for tests: the shared compile cache, and a short budget for `hostile`.
pub fn plugins_config() -> PluginsConfig {
    let mut config = PluginsConfig {
        cache_dir: std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache"),
        ..PluginsConfig::default()
    };
    config.plugin.insert(
        "hostile".into(),
        PluginConfig {
            deadline_ms: Some(300),
            ..PluginConfig::default()
        },
    );
    config
}

pub async fn app_with(config: ApiConfig) -> App {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), VaultOptions::for_peer(1))
        .await
        .unwrap();
    let events = EventBus::new();
    let plugins = Plugins::start(
        dir.path(),
        &plugins_config(),
        store.db().clone(),
        events.clone(),
        volli_plugin_host::Services::default(),
    )
    .await
    .unwrap();
    let user = UserSecret::generate().unwrap();
    let peer = libp2p_identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let state = ApiState {
        auth: Auth::new(TOKEN),
        node: NodeInfo::new(user.user_id(), peer, "test-device".into()),
        events: events.clone(),
        vault: store.vault().clone(),
        plugins,
    };
    App {
        router: api::router(state, &config),
        store,
        events,
        _dir: dir,
    }
}

pub async fn app() -> App {
    app_with(ApiConfig::default()).await
}

impl App {
    /// Sends `request`; returns status, headers and the body as JSON (a string if not JSON,
    /// null if empty).
    pub async fn call(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, headers, body)
    }
}
