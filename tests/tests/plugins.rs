//! Plugins through the real binary: the built-ins, installing (garbage, hostile, the SDK
//! template built as a user would build it), enabling and disabling across restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};
use volli_tests::{Node, repo_root, volli};

async fn upload(node: &Node, query: &str, bytes: Vec<u8>) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/plugins{query}", node.url))
        .bearer_auth(&node.token)
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn plugin<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no plugin {name} in {list}"))
}

#[tokio::test]
async fn a_fresh_node_runs_its_builtin_plugins_and_remembers_disabling_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let mut node = Node::start(&dir).await;
    let (status, list) = node.get("/v1/plugins").await;
    assert_eq!(status, 200);
    for (name, kind) in [
        ("mdns", "discovery"),
        ("dht", "discovery"),
        ("rendezvous", "discovery"),
        ("invite", "discovery"),
        ("friends-only", "relay-policy"),
        ("fs", "file-backend"),
        ("memory", "file-backend"),
    ] {
        let p = plugin(&list, name);
        assert_eq!(p["kind"], kind);
        assert_eq!(p["state"], "running", "{p}");
        assert!(p["limits"]["deadline_ms"].as_u64().unwrap() > 0);
        assert!(p["stats"].is_object());
    }
    let (status, p) = node
        .request(Method::POST, "/v1/plugins/mdns/disable", None)
        .await;
    assert_eq!((status, p["state"].as_str()), (200, Some("disabled")));
    assert!(node.terminate().success());

    let node = Node::start(&dir).await;
    let (_, list) = node.get("/v1/plugins").await;
    assert_eq!(
        plugin(&list, "mdns")["state"],
        "disabled",
        "disabling survives a restart"
    );
    let (_, p) = node
        .request(Method::POST, "/v1/plugins/mdns/enable", None)
        .await;
    assert_eq!(p["state"], "running");
}

#[tokio::test]
async fn garbage_uploads_get_400_and_the_node_stays_healthy() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    for garbage in [
        Vec::new(),
        b"MZ\x90\0 not a component".to_vec(),
        vec![0xff; 4096],
    ] {
        let (status, body) = upload(&node, "", garbage).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_plugin");
    }
    assert_eq!(node.get_anonymous("/health").await.0, 200);
    let (_, list) = node.get("/v1/plugins").await;
    assert_eq!(list["plugins"].as_array().unwrap().len(), 7);
}

#[tokio::test]
async fn a_plugin_that_hangs_while_starting_is_refused_while_the_api_keeps_answering() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let hostile =
        std::fs::read(volli_plugin_host::builtin::testing_dir().join("hostile.wasm")).unwrap();
    let (status, body) = upload(&node, "?grant=log", hostile).await;
    assert_eq!(status, 201, "{body}");

    // Reconfigure it to spin forever in init: the node stops it at its 10 s budget, and meanwhile
    // keeps serving other requests promptly.
    let node_url = node.url.clone();
    let token = node.token.clone();
    let configure = tokio::spawn(async move {
        reqwest::Client::new()
            .put(format!("{node_url}/v1/plugins/hostile/config"))
            .bearer_auth(token)
            .json(&json!({"config": {"mode": "loop-in-init"}}))
            .send()
            .await
            .unwrap()
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for _ in 0..5 {
        let started = std::time::Instant::now();
        assert_eq!(node.get_anonymous("/health").await.0, 200);
        assert!(
            started.elapsed() < std::time::Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }
    let response = configure.await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_plugin_config");
    let (_, p) = node.get("/v1/plugins/hostile").await;
    assert_eq!(
        p["state"], "running",
        "the old configuration stays in force: {p}"
    );
}

/// The how-to, end to end: build the SDK template with cargo for wasm32-wasip2, install it
/// with the CLI, configure it.
#[tokio::test]
async fn the_sdk_template_builds_and_installs_through_the_api() {
    let root = repo_root();
    // The built-in plugins' target directory: what they share with the template is reused.
    let target_dir = volli_tests::target_dir().join("wasm-plugins");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(root.join("sdk/template/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .status()
        .unwrap();
    assert!(status.success(), "the template does not build");
    let wasm = target_dir.join("wasm32-wasip2/release/static_peers.wasm");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let node = Node::start(&dir).await;
    let data_dir = dir.to_str().unwrap();
    let out = volli(&[
        "plugins",
        "install",
        wasm.to_str().unwrap(),
        "--grant",
        "log",
        "--data-dir",
        data_dir,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("static-peers") && printed.contains("running"),
        "{printed}"
    );

    let peers = r#"{"peers": [{"peer_id": "12D3KooWGjMCwjWoVn1GrN5AoU3ZzMZzyDA8p8hKrVGGBoFgqPAN", "addrs": ["/ip4/192.0.2.1/tcp/8471"]}]}"#;
    let out = volli(&[
        "plugins",
        "config",
        "static-peers",
        peers,
        "--data-dir",
        data_dir,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = volli(&[
        "plugins",
        "config",
        "static-peers",
        r#"{"peers": "nope"}"#,
        "--data-dir",
        data_dir,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_plugin_config"));

    let (_, p) = node.get("/v1/plugins/static-peers").await;
    assert_eq!(p["kind"], "discovery");
    assert_eq!(p["state"], "running");
    assert_eq!(p["granted"], json!(["log"]));
    let out = volli(&["plugins", "list", "--data-dir", data_dir]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("static-peers"));
}
