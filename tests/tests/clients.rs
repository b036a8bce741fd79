//! Client tokens with scopes, through the real binary: every route against every scope (from
//! the node's own OpenAPI document), the QR login of a phone through the CLI, revocation that
//! shuts the token and its event stream at once, and tokens that survive a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt as _;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use volli_tests::{Node, events_as, next_event, volli};

const SCOPES: [&str; 5] = ["read", "messages", "files", "contacts", "admin"];

async fn client(node: &Node, name: &str, scopes: &[&str]) -> (String, String) {
    let (status, body) = node
        .post("/v1/clients", json!({"name": name, "scopes": scopes}))
        .await;
    assert_eq!(status, 201, "{body}");
    (
        body["id"].as_str().unwrap().to_owned(),
        body["token"].as_str().unwrap().to_owned(),
    )
}

/// Every operation of the OpenAPI document, called with a token of each single scope: one
/// without the scope the operation states is refused with 403 `insufficient_scope` before
/// anything happens; one with it (or `admin`) gets past the check.
#[tokio::test]
async fn every_route_refuses_a_token_without_its_scope() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n")).await;
    let doc: Value = reqwest::get(format!("{}/openapi.json", node.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut tokens = Vec::new();
    for scope in SCOPES {
        tokens.push((scope, client(&node, scope, &[scope]).await.1));
    }
    let http = reqwest::Client::new();
    let (mut refused, mut passed) = (0, 0);
    // Writes with `admin` last: it passes everywhere and may change what it reaches.
    for (scope, token) in &tokens {
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let needs = op["x-volli-scope"]
                    .as_str()
                    .expect("every operation states a scope");
                assert!(
                    needs == "none" || SCOPES.contains(&needs),
                    "{method} {path}: {needs}"
                );
                if needs == "none" {
                    continue;
                }
                let security = &op["security"][0]["bearer"];
                assert_eq!(security, &json!([needs]), "{method} {path} security");
                let url = format!(
                    "{}{}",
                    node.url,
                    path.replace(['{', '}'], "")
                        .replace("user_id", "not-a-user")
                        .replace("peer_id", "not-a-peer")
                );
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let mut request = http.request(method.clone(), &url).bearer_auth(token);
                if method != Method::GET {
                    request = request.json(&json!({}));
                }
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                let allowed = *scope == needs || *scope == "admin";
                if allowed {
                    assert!(
                        status != 401 && body["error"]["code"] != "insufficient_scope",
                        "{scope} token, {method} {path}: {status} {body}"
                    );
                    passed += 1;
                } else {
                    assert_eq!(status, 403, "{scope} token, {method} {path}: {body}");
                    assert_eq!(body["error"]["code"], "insufficient_scope", "{body}");
                    assert!(
                        body["error"]["message"].as_str().unwrap().contains(needs),
                        "{body}"
                    );
                    refused += 1;
                }
                // A ticket opens only the read-only stream; push subscriptions are the
                // caller's own.
                if *scope == "read"
                    && method != Method::GET
                    && path != "/v1/events/ticket"
                    && !path.starts_with("/v1/push")
                {
                    assert!(!allowed, "a read token may change {method} {path}");
                }
            }
        }
    }
    assert!(
        refused > 150 && passed > 60,
        "{refused} refused, {passed} passed"
    );
    // Nothing a refused write reached was done: no contacts, invites or clients beyond ours.
    let (_, list) = node.get("/v1/clients").await;
    assert_eq!(list["clients"].as_array().unwrap().len(), SCOPES.len());
    let (_, contacts) = node.get("/v1/contacts").await;
    assert_eq!(contacts["contacts"], json!([]));
    // Every client was used just now.
    for c in list["clients"].as_array().unwrap() {
        assert!(c["last_used_at"].is_string(), "{c}");
    }
}

/// The tour of a phone: `volli clients add` shows a link; the phone trades its code for a
/// token (once); the token reads and sends but cannot administer; revoking it refuses the
/// token and closes its event stream at once; a restart keeps the clients that remain.
#[tokio::test]
async fn a_phone_logs_in_with_a_qr_code_and_is_shut_out_when_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n");
    let mut node = Node::start(&data).await;
    let data_arg = data.to_str().unwrap();
    let out = volli(&[
        "clients",
        "add",
        "--name",
        "phone",
        "--scopes",
        "read,messages",
        "--api-url",
        "https://node.example.org",
        "--data-dir",
        data_arg,
    ]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains('█') || stdout.contains('▀'),
        "a QR code: {stdout}"
    );
    let link = stdout
        .lines()
        .find(|l| l.starts_with("volli://login?"))
        .expect("the link")
        .to_owned();
    assert!(
        link.starts_with("volli://login?api=https%3A%2F%2Fnode.example.org&code="),
        "{link}"
    );
    let code = link.rsplit("code=").next().unwrap();

    // The phone, with nothing but the link.
    let http = reqwest::Client::new();
    let login = |code: String| {
        let http = http.clone();
        let url = format!("{}/v1/clients/login", node.url);
        async move {
            let r = http
                .post(url)
                .json(&json!({"code": code}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, phone) = login(code.to_owned()).await;
    assert_eq!(status, 201, "{phone}");
    assert_eq!(phone["scopes"], json!(["read", "messages"]));
    let token = phone["token"].as_str().unwrap().to_owned();
    let id = phone["id"].as_str().unwrap().to_owned();
    let (status, again) = login(code.to_owned()).await;
    assert_eq!(status, 401, "the code works once: {again}");
    assert_eq!(again["error"]["code"], "invalid_login_code");

    let (status, body) = node
        .request_as(&token, Method::GET, "/v1/messages?with=x", None)
        .await;
    assert_ne!(status, 401, "{body}");
    assert_ne!(status, 403, "{body}");
    let (status, _) = node.request_as(&token, Method::GET, "/v1/node", None).await;
    assert_eq!(status, 200);
    for (method, path) in [
        (Method::POST, "/v1/invites"),
        (Method::POST, "/v1/pairing"),
        (Method::GET, "/v1/clients"),
        (Method::POST, "/v1/admin/login-codes"),
    ] {
        let (status, body) = node
            .request_as(&token, method.clone(), path, Some(json!({})))
            .await;
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "insufficient_scope");
    }

    // Its event stream, by header and by ticket; both close when it is revoked.
    let mut events = events_as(&node, &token).await;
    next_event(&mut events, "ready", Duration::from_secs(5), |_| true).await;
    let (status, ticket) = node
        .request_as(&token, Method::POST, "/v1/events/ticket", None)
        .await;
    assert_eq!(status, 201, "{ticket}");
    let url = format!(
        "{}/v1/events?ticket={}",
        node.url.replace("http://", "ws://"),
        ticket["ticket"].as_str().unwrap()
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url.into_client_request().unwrap())
        .await
        .unwrap();
    let first = ws.next().await.unwrap().unwrap();
    assert!(first.to_text().unwrap().contains("ready"), "{first:?}");

    let listed = volli(&["clients", "--data-dir", data_arg]);
    assert!(listed.status.success());
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(listed.contains(&id) && listed.contains("phone"), "{listed}");
    assert!(listed.contains("[read,messages]"), "{listed}");

    let (_, laptop) = client(&node, "laptop", &["read"]).await;
    let revoked = volli(&["clients", "revoke", &id, "--data-dir", data_arg]);
    assert!(revoked.status.success(), "{revoked:?}");
    let (status, body) = node.request_as(&token, Method::GET, "/v1/node", None).await;
    assert_eq!(status, 401, "refused at once: {body}");
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                other => panic!("the stream ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("the revoked client's stream closes");
    let frame = closed.expect("a close frame with a reason");
    assert_eq!(u16::from(frame.code), 1008);
    assert!(frame.reason.contains("revoked"), "{frame:?}");
    tokio::time::timeout(Duration::from_secs(5), async {
        while events.next().await.is_some() {}
    })
    .await
    .expect("the stream opened by header closes too");
    let (status, body) = node
        .request(Method::DELETE, &format!("/v1/clients/{id}"), None)
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown_client");

    node.terminate();
    let node = Node::start(&data).await;
    let (status, _) = node
        .request_as(&laptop, Method::GET, "/v1/node", None)
        .await;
    assert_eq!(status, 200, "a client survives a restart");
    let (status, _) = node.request_as(&token, Method::GET, "/v1/node", None).await;
    assert_eq!(status, 401, "a revoked one stays revoked");
    let (_, list) = node.get("/v1/clients").await;
    let names: Vec<&str> = list["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["laptop"]);
}

/// Bad requests are refused with their codes and create nothing; the node holds at most 100
/// clients.
#[tokio::test]
async fn bad_client_requests_say_what_is_wrong_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n")).await;
    for (body, code) in [
        (json!({"name": "p", "scopes": ["write"]}), "invalid_scope"),
        (json!({"name": "p", "scopes": []}), "invalid_scope"),
        (
            json!({"name": "p", "scopes": ["read", "read"]}),
            "invalid_scope",
        ),
        (json!({"name": "  ", "scopes": ["read"]}), "invalid_name"),
        (
            json!({"name": "x".repeat(65), "scopes": ["read"]}),
            "invalid_name",
        ),
        (
            json!({"name": "p", "scopes": ["read"], "extra": 1}),
            "invalid_body",
        ),
    ] {
        let (status, answer) = node.post("/v1/clients", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
    }
    for (body, code) in [
        (
            json!({"name": "p", "scopes": ["read"], "ttl_secs": 5}),
            "invalid_ttl",
        ),
        (
            json!({"name": "p", "scopes": ["read"], "api_url": "ftp://x"}),
            "invalid_api_url",
        ),
    ] {
        let (status, answer) = node.post("/v1/clients/login-codes", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
    }
    let (status, answer) = node
        .post("/v1/clients/login", json!({"code": "made-up"}))
        .await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_login_code");
    let (_, list) = node.get("/v1/clients").await;
    assert_eq!(list["clients"], json!([]));
    // Client ids are base64url and may begin with "-": the CLI takes them as ids.
    let unknown = volli(&[
        "clients",
        "revoke",
        "-Yunknown",
        "--data-dir",
        node.data_dir.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success(), "{unknown:?}");
    assert!(!said.contains("unexpected argument"), "{said}");

    for i in 0..100 {
        client(&node, &format!("c{i}"), &["read"]).await;
    }
    let (status, answer) = node
        .post(
            "/v1/clients",
            json!({"name": "one too many", "scopes": ["read"]}),
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "too_many_clients");
    let (_, list) = node.get("/v1/clients").await;
    assert_eq!(list["clients"].as_array().unwrap().len(), 100);
}

/// A `files` token sends files by path only from the configured upload directories, and
/// learns nothing of the node's files outside them; no token sends the node's data
/// directory (its admin token, its keys, its database).
#[tokio::test]
async fn a_files_token_sends_by_path_only_from_the_upload_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let config = format!("[files]\nupload_dirs = [{:?}]", shared.to_str().unwrap());
    let alice_dir = tmp.path().join("alice");
    let alice = Node::start_with(
        &alice_dir,
        volli_tests::Options {
            config,
            ..volli_tests::Options::default()
        },
    )
    .await;
    let bob = Node::start(&tmp.path().join("bob")).await;
    volli_tests::befriend(&alice, &bob).await;
    let (bob_id, _) = bob.ids().await;
    let (_, token) = client(&alice, "phone", &["read", "files"]).await;

    std::fs::write(shared.join("notes.txt"), b"shared notes").unwrap();
    let secret = tmp.path().join("secret.txt");
    std::fs::write(&secret, b"not shared").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(alice_dir.join("admin.token"), shared.join("link")).unwrap();
    let send = |token: String, path: std::path::PathBuf| {
        let alice = &alice;
        let bob_id = bob_id.clone();
        async move {
            alice
                .request_as(
                    &token,
                    Method::POST,
                    "/v1/transfers",
                    Some(json!({"to": bob_id, "path": path})),
                )
                .await
        }
    };
    let refused = |answer: &Value| answer["error"]["code"] == "path_not_allowed";

    // The node's own files: refused, whether they exist or not, with the same words.
    let mut messages = std::collections::HashSet::new();
    for path in [
        alice_dir.join("admin.token"),
        alice_dir.join("identity/device.key"),
        alice_dir.join("volli.db"),
        secret.clone(),
        tmp.path().join("does-not-exist"),
        shared.join("link"),
        shared.join("../alice/admin.token"),
    ] {
        let (status, answer) = send(token.clone(), path.clone()).await;
        assert_eq!(status, 403, "{path:?}: {answer}");
        assert!(refused(&answer), "{answer}");
        messages.insert(answer["error"]["message"].as_str().unwrap().to_owned());
    }
    assert_eq!(messages.len(), 1, "refusals tell paths apart: {messages:?}");
    // From the upload directory: sent.
    let (status, answer) = send(token.clone(), shared.join("notes.txt")).await;
    assert_eq!(status, 201, "{answer}");
    // The admin token sends any file the node can read — but never its data directory.
    let admin = alice.token.clone();
    let (status, answer) = send(admin.clone(), secret.clone()).await;
    assert_eq!(status, 201, "{answer}");
    for path in [alice_dir.join("admin.token"), shared.join("link")] {
        let (status, answer) = send(admin.clone(), path.clone()).await;
        assert_eq!(status, 403, "{path:?}: {answer}");
        assert!(refused(&answer), "{answer}");
    }
}
