//! The foundation, through the real binary: first start, identity persistence, auth, crash
//! safety of acknowledged writes, one node per data dir, and the CLI client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::Method;
use serde_json::json;
use volli_tests::{Node, Options, volli, volli_bin};

#[tokio::test]
async fn first_start_creates_an_identity_that_a_restart_keeps() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let mut node = Node::start(&dir).await;

    let log = node.log();
    assert!(log.contains("API listening on http://127.0.0.1:"), "{log}");
    assert!(
        log.contains("admin.token"),
        "the log says where the token is: {log}"
    );
    assert!(log.contains("created a new identity"), "{log}");

    assert_eq!(
        node.get_anonymous("/health").await,
        (200, json!({"status": "ok"}))
    );
    let (status, body) = node.get_anonymous("/v1/node").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, first) = node.get("/v1/node").await;
    assert_eq!(status, 200, "{first}");
    let token = node.token.clone();

    assert!(
        node.terminate().success(),
        "clean exit on SIGTERM; log:\n{}",
        node.log()
    );
    assert!(
        !dir.join("api.url").exists(),
        "a stopped node removes api.url"
    );

    let node = Node::start(&dir).await;
    let (_, second) = node.get("/v1/node").await;
    assert_eq!(second["user_id"], first["user_id"]);
    assert_eq!(second["peer_id"], first["peer_id"]);
    assert_eq!(node.token, token);
    assert_eq!(
        node.log().matches("created a new identity").count(),
        1,
        "both runs log to one file"
    );
}

#[tokio::test]
async fn saved_settings_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let mut node = Node::start(&dir).await;
    for i in 0..20 {
        let (status, _) = node
            .request(
                Method::PUT,
                &format!("/v1/settings/k{i}"),
                Some(json!({"value": i})),
            )
            .await;
        assert_eq!(status, 200);
    }
    node.kill();

    let store = volli_store::Db::open(&dir.join("volli.db")).await.unwrap();
    store.integrity_check().await.unwrap();
    store.close().await;

    let node = Node::start(&dir).await;
    let (status, body) = node.get("/v1/settings").await;
    assert_eq!(status, 200);
    assert_eq!(body["settings"].as_object().unwrap().len(), 20, "{body}");
    assert_eq!(body["settings"]["k19"], 19);
}

#[tokio::test]
async fn one_data_dir_serves_one_node() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let _node = Node::start(&dir).await;
    let output = std::process::Command::new(volli_bin())
        .args(["serve", "--api-listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("another node is already using the data dir"),
        "{stderr}"
    );
}

#[tokio::test]
async fn cli_status_and_node_talk_to_the_running_node() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let node = Node::start(&dir).await;
    let (_, info) = node.get("/v1/node").await;
    let dir_arg = dir.to_str().unwrap();

    let out = volli(&["status", "--data-dir", dir_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(info["user_id"].as_str().unwrap()), "{text}");

    let out = volli(&["node", "--data-dir", dir_arg]);
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["peer_id"], info["peer_id"]);

    let out = volli(&["node", "--data-dir", dir_arg, "--token", "wrong-token"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("unauthorized"),
        "{stderr}"
    );
}

#[tokio::test]
async fn cli_reports_a_stopped_node_and_bad_config_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("never-started");
    let out = volli(&[
        "status",
        "--data-dir",
        dir.to_str().unwrap(),
        "--token",
        "x",
        "--api",
        "http://127.0.0.1:9",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach the node"), "{stderr}");

    let out = volli(&["serve", "--config", "/nonexistent/volli.toml"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/volli.toml"), "{stderr}");

    let out = std::process::Command::new(volli_bin())
        .args(["config", "--data-dir", "/srv/volli"])
        .env("VOLLI_API_LISTEN", "127.0.0.1:9999")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("api_listen = \"127.0.0.1:9999\""), "{text}");
    assert!(text.contains("data_dir = \"/srv/volli\""), "{text}");
}

#[tokio::test]
async fn environment_variables_configure_the_node() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let node = Node::start_with(
        &dir,
        Options {
            env: vec![("VOLLI_DEVICE_NAME".into(), "from-env".into())],
            ..Options::default()
        },
    )
    .await;
    let (_, info) = node.get("/v1/node").await;
    assert_eq!(info["device_name"], "from-env");
}
