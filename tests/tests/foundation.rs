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

/// Under a service manager (`Type=notify`): `READY=1` once the API answers, `STOPPING=1` on
/// SIGTERM, and every setting acknowledged before SIGTERM is there after the restart.
#[tokio::test]
async fn a_service_manager_hears_ready_and_stopping_and_sigterm_loses_nothing() {
    use std::os::unix::net::UnixDatagram;
    let tmp = tempfile::tempdir().unwrap();
    let socket_path = tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let dir = tmp.path().join("node");
    let options = Options {
        env: vec![(
            "NOTIFY_SOCKET".into(),
            socket_path.to_str().unwrap().to_owned(),
        )],
        ..Options::default()
    };
    let mut node = Node::start_with(&dir, options).await;
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("READY=1 within 30 s");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(
        ready.contains(&format!("STATUS=API listening on {}", node.url)),
        "{ready}"
    );

    for i in 0..50 {
        let (status, _) = node
            .request(
                Method::PUT,
                &format!("/v1/settings/k{i}"),
                Some(json!({"value": i})),
            )
            .await;
        assert_eq!(status, 200);
    }
    assert!(node.terminate().success(), "{}", node.log());
    let n = socket.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");

    let node = Node::start(&dir).await;
    let (_, settings) = node.get("/v1/settings").await;
    for i in 0..50 {
        assert_eq!(
            settings["settings"][format!("k{i}")],
            json!(i),
            "{settings}"
        );
    }
}

/// The Loro peer ids a data dir's vault has written under, with when each was taken.
async fn vault_peers(dir: &std::path::Path) -> Vec<(i64, i64)> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("volli.db"))
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let rows: Vec<(i64, i64)> = sqlx::query_as("SELECT peer, opened_at FROM vault_peers")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows
}

/// `volli backup` of a running node and `volli restore` into a new data dir: the same user
/// and device with everything acknowledged before the backup, a wrong passphrase refused
/// with nothing written, and no Loro peer id of the original reused.
#[tokio::test]
async fn a_backup_of_a_running_node_restores_into_the_same_node() {
    let tmp = tempfile::tempdir().unwrap();
    let alice_dir = tmp.path().join("alice");
    let mut alice = Node::start(&alice_dir).await;
    let bob = Node::start(&tmp.path().join("bob")).await;
    volli_tests::befriend(&alice, &bob).await;
    let (alice_user, alice_peer) = alice.ids().await;
    let (bob_user, _) = bob.ids().await;
    for i in 0..20 {
        volli_tests::send(&alice, &bob_user, &format!("before {i}")).await;
    }
    let (status, _) = alice
        .request(
            Method::PUT,
            "/v1/settings/ui.theme",
            Some(json!({"value": "dark"})),
        )
        .await;
    assert_eq!(status, 200);

    let pass = tmp.path().join("pass");
    std::fs::write(&pass, "correct horse battery\n").unwrap();
    let short = tmp.path().join("short");
    std::fs::write(&short, "abc\n").unwrap();
    let file = tmp.path().join("alice.volli-backup");
    let data_dir = alice_dir.to_str().unwrap();
    let out = volli(&[
        "backup",
        file.to_str().unwrap(),
        "--passphrase-file",
        short.to_str().unwrap(),
        "--data-dir",
        data_dir,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("too short"));
    assert!(!file.exists());
    let out = volli(&[
        "backup",
        file.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
        "--data-dir",
        data_dir,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let backed_up = volli_core::Timestamp::now().as_millis();
    volli_tests::send(&alice, &bob_user, "after the backup").await;

    let restored = tmp.path().join("restored");
    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, "not the passphrase\n").unwrap();
    let out = volli(&[
        "restore",
        file.to_str().unwrap(),
        "--passphrase-file",
        wrong.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!restored.exists(), "nothing written");
    let out = volli(&[
        "restore",
        file.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
        "--data-dir",
        data_dir,
    ]);
    assert!(!out.status.success(), "never over a node");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));

    let out = volli(&[
        "restore",
        file.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(alice.terminate().success());
    let original_peers = vault_peers(&alice_dir).await;

    let mut copy = Node::start(&restored).await;
    assert_eq!(copy.ids().await, (alice_user.clone(), alice_peer));
    let (_, settings) = copy.get("/v1/settings/ui.theme").await;
    assert_eq!(settings["value"], "dark");
    let bodies: Vec<String> = volli_tests::conversation(&copy, &bob_user)
        .await
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(bodies.len(), 20, "{bodies:?}");
    assert!(bodies.iter().all(|b| b.starts_with("before")), "{bodies:?}");
    // It is the same node to Bob: its messages arrive.
    volli_tests::send(&copy, &bob_user, "from the restored node").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let got = volli_tests::conversation(&bob, &alice_user).await;
        if got.iter().any(|m| m["body"] == "from the restored node") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{got:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(copy.terminate().success());

    let taken_since: Vec<i64> = vault_peers(&restored)
        .await
        .into_iter()
        .filter(|(_, at)| *at >= backed_up)
        .map(|(p, _)| p)
        .collect();
    assert!(
        !taken_since.is_empty(),
        "the restored vault writes under peer ids of its own"
    );
    for p in taken_since {
        assert!(
            !original_peers.iter().any(|(q, _)| *q == p),
            "Loro peer id {p} reused"
        );
    }
}

/// Sealed keys through the binary: a node created with `--passphrase-file` keeps no key in
/// the clear; without the passphrase, or with a wrong one, it refuses to start with a clear
/// error and changes nothing; `volli keys unseal` / `seal` work on the stopped node and are
/// refused while it runs.
#[tokio::test]
async fn sealed_keys_open_only_with_their_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let data_dir = dir.to_str().unwrap();
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, "correct horse battery\n").unwrap();
    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, "not the passphrase\n").unwrap();
    let with = |file: &std::path::Path| Options {
        args: vec!["--passphrase-file".into(), file.to_str().unwrap().into()],
        ..Options::default()
    };
    let key_files = ["identity/user.key", "identity/device.key"];
    let read_keys = || -> Vec<Vec<u8>> {
        key_files
            .iter()
            .map(|f| std::fs::read(dir.join(f)).unwrap())
            .collect()
    };
    // Exits on its own with an error (the test fails rather than hangs if it starts).
    let refused = |options: Options| {
        let dir = dir.clone();
        async move {
            let mut node = Node::spawn(&dir, &options);
            let status = node
                .wait_exit(std::time::Duration::from_secs(30))
                .await
                .expect("the node should refuse to start");
            assert!(!status.success());
            node.log()
        }
    };

    let mut node = Node::start_with(&dir, with(&pass)).await;
    let ids = node.ids().await;
    let out = volli(&[
        "keys",
        "unseal",
        "--passphrase-file",
        pass.to_str().unwrap(),
        "--data-dir",
        data_dir,
    ]);
    assert!(!out.status.success(), "not while the node runs");
    assert!(String::from_utf8_lossy(&out.stderr).contains("another node is already using"));
    assert!(node.terminate().success());
    let sealed = read_keys();
    for bytes in &sealed {
        assert!(bytes.starts_with(b"volli-sealed-v1\n"));
    }
    let out = volli(&["keys", "status", "--data-dir", data_dir]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sealed"));

    let log = refused(Options::default()).await;
    assert!(
        log.contains("the keys are sealed with a passphrase"),
        "{log}"
    );
    let log = refused(with(&wrong)).await;
    assert!(log.contains("wrong passphrase"), "{log}");
    assert_eq!(read_keys(), sealed, "nothing changed");

    let mut node = Node::start_with(&dir, with(&pass)).await;
    assert_eq!(node.ids().await, ids);
    assert!(node.terminate().success());

    // Unseal with the wrong passphrase: refused, nothing changed; with the right one: plain.
    let out = volli(&[
        "keys",
        "unseal",
        "--passphrase-file",
        wrong.to_str().unwrap(),
        "--data-dir",
        data_dir,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
    assert_eq!(read_keys(), sealed);
    let out = volli(&[
        "keys",
        "unseal",
        "--passphrase-file",
        pass.to_str().unwrap(),
        "--data-dir",
        data_dir,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(read_keys().iter().all(|b| !b.starts_with(b"volli-sealed")));
    let log = refused(with(&pass)).await;
    assert!(log.contains("the keys are not sealed"), "{log}");
    let mut node = Node::start(&dir).await;
    assert_eq!(node.ids().await, ids);
    assert!(node.terminate().success());

    // Seal an existing node; a short passphrase is refused.
    let short = tmp.path().join("short");
    std::fs::write(&short, "abc\n").unwrap();
    let out = volli(&[
        "keys",
        "seal",
        "--passphrase-file",
        short.to_str().unwrap(),
        "--data-dir",
        data_dir,
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("too short"));
    let out = volli(&[
        "keys",
        "seal",
        "--passphrase-file",
        wrong.to_str().unwrap(),
        "--data-dir",
        data_dir,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = refused(with(&pass)).await;
    assert!(log.contains("wrong passphrase"), "{log}");
    let node = Node::start_with(&dir, with(&wrong)).await;
    assert_eq!(node.ids().await, ids);
}
