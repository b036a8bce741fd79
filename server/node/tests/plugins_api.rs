//! `/v1/plugins` through the router, with the real built-in components and a real store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use support::{App, TOKEN, app};

trait PluginCalls {
    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value);
    async fn install(&self, query: &str) -> (StatusCode, Value);
}

impl PluginCalls for App {
    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        let (status, _, body) = self.call(request.body(Body::from(body)).unwrap()).await;
        (status, body)
    }

    async fn install(&self, query: &str) -> (StatusCode, Value) {
        self.send(
            "POST",
            &format!("/v1/plugins{query}"),
            Some("application/wasm"),
            hostile(),
        )
        .await
    }
}

fn hostile() -> Vec<u8> {
    std::fs::read(volli_plugin_host::builtin::testing_dir().join("hostile.wasm")).unwrap()
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn the_builtin_plugins_of_all_three_kinds_are_listed_running() {
    let app = app().await;
    let (status, body) = app.send("GET", "/v1/plugins", None, Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    let plugins = body["plugins"].as_array().unwrap();
    let names: Vec<&str> = plugins
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "dht",
            "friends-only",
            "fs",
            "invite",
            "mdns",
            "memory",
            "rendezvous"
        ]
    );
    for p in plugins {
        assert_eq!(p["state"], "running", "{p}");
        assert_eq!(p["builtin"], true);
        assert_eq!(
            p["granted"], p["capabilities"],
            "built-ins get what they ask for"
        );
        assert!(p["limits"]["deadline_ms"].as_u64().unwrap() > 0);
        assert!(p["limits"]["memory_bytes"].as_u64().unwrap() > 0);
        assert!(p["stats"]["calls"].as_u64().is_some());
    }
    let kind = |n: &str| plugins.iter().find(|p| p["name"] == n).unwrap()["kind"].clone();
    assert_eq!(kind("mdns"), "discovery");
    assert_eq!(kind("friends-only"), "relay-policy");
    assert_eq!(kind("fs"), "file-backend");
}

#[tokio::test]
async fn disable_and_enable_change_the_state() {
    let app = app().await;
    let (status, body) = app
        .send("POST", "/v1/plugins/mdns/disable", None, Vec::new())
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("disabled"))
    );
    let (_, body) = app
        .send("POST", "/v1/plugins/mdns/enable", None, Vec::new())
        .await;
    assert_eq!(body["state"], "running");
    let (status, body) = app
        .send("POST", "/v1/plugins/nope/enable", None, Vec::new())
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "unknown_plugin")
    );
}

#[tokio::test]
async fn garbage_uploads_are_refused_and_change_nothing() {
    let app = app().await;
    let (status, body) = app
        .send(
            "POST",
            "/v1/plugins",
            Some("application/wasm"),
            b"definitely not wasm".to_vec(),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_plugin"),
        "{body}"
    );
    let (status, body) = app
        .send(
            "POST",
            "/v1/plugins",
            Some("application/wasm"),
            b"\0asm\x01\0\0\0".to_vec(),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_plugin"),
        "{body}"
    );
    let (status, body) = app
        .send("POST", "/v1/plugins", Some("application/json"), hostile())
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    let (status, body) = app
        .send(
            "POST",
            "/v1/plugins",
            Some("application/wasm"),
            vec![0; volli_plugin_host::MAX_COMPONENT_BYTES + 1],
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let (_, body) = app.send("GET", "/v1/plugins", None, Vec::new()).await;
    assert_eq!(body["plugins"].as_array().unwrap().len(), 7);
}

#[tokio::test]
async fn install_grants_only_what_the_operator_names() {
    let app = app().await;
    let (status, body) = app.install("?grant=lan").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_grant"),
        "{body}"
    );
    let (status, body) = app.install("?grant=telepathy").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_grant"),
        "{body}"
    );

    let (status, body) = app.install("?grant=log").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["name"], "hostile");
    assert_eq!(body["builtin"], false);
    assert_eq!(body["state"], "running");
    assert_eq!(
        body["capabilities"],
        json!(["log", "clock", "random", "kv"])
    );
    assert_eq!(body["granted"], json!(["log"]));
    assert_eq!(
        body["limits"]["deadline_ms"], 300,
        "the config file's limit applies"
    );

    let (status, body) = app.install("?grant=log").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "plugin_exists")
    );
}

#[tokio::test]
async fn a_configuration_the_plugin_refuses_keeps_the_old_one() {
    let app = app().await;
    assert_eq!(app.install("").await.0, StatusCode::CREATED);
    let refuse = serde_json::to_vec(&json!({"config": {"mode": "loop-in-init"}})).unwrap();
    let started = std::time::Instant::now();
    let (status, body) = app
        .send(
            "PUT",
            "/v1/plugins/hostile/config",
            Some("application/json"),
            refuse,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_plugin_config"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("time budget"),
        "{body}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let (_, body) = app
        .send("GET", "/v1/plugins/hostile", None, Vec::new())
        .await;
    assert_eq!(body["state"], "running", "{body}");

    let malformed = b"{\"config\": [1]}".to_vec();
    let (status, body) = app
        .send(
            "PUT",
            "/v1/plugins/hostile/config",
            Some("application/json"),
            malformed,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_body")
    );
}

#[tokio::test]
async fn installed_plugins_can_be_removed_but_builtins_cannot() {
    let app = app().await;
    assert_eq!(app.install("").await.0, StatusCode::CREATED);
    let (status, body) = app
        .send("DELETE", "/v1/plugins/memory", None, Vec::new())
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "builtin_plugin")
    );
    let (status, _) = app
        .send("DELETE", "/v1/plugins/hostile", None, Vec::new())
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app
        .send("GET", "/v1/plugins/hostile", None, Vec::new())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Installable again after removal.
    assert_eq!(app.install("").await.0, StatusCode::CREATED);
}
