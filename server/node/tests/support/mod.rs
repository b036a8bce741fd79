//! A test node in-process: the real router over a real SQLite store and the real plugin
//! host with the built-in components (compiled once into a cache shared by all tests).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt as _;
use volli_node::config::{ApiConfig, Config, PluginConfig, PluginsConfig};
use volli_node::events::EventBus;
use volli_node::node::Node;

/// The admin token every test node is given (written into its data dir before it starts).
pub const TOKEN: &str = "test-token-0123456789abcdef0123456789abcdef";

pub struct App {
    pub router: Router,
    pub node: Node,
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

/// A node configuration that stays on loopback: no LAN, ephemeral ports.
pub fn test_config(dir: &std::path::Path, api: ApiConfig) -> Config {
    let mut config = Config {
        data_dir: dir.to_owned(),
        api,
        p2p_listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        plugins: plugins_config(),
        device_name: "test-device".into(),
        ..Config::default()
    };
    config.network.lan = false;
    config
}

pub async fn app_with(api: ApiConfig) -> App {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, TOKEN).unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let node = Node::start(test_config(dir.path(), api), None)
        .await
        .unwrap();
    App {
        router: node.router(),
        events: node.state.events.clone(),
        node,
        _dir: dir,
    }
}

pub async fn app() -> App {
    app_with(ApiConfig::default()).await
}

impl App {
    pub fn vault(&self) -> &volli_store::Vault {
        &self.node.state.vault
    }
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
