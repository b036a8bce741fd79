//! Web Push through the real binary, to a push service written here (a local HTTP server):
//! it checks the VAPID JWT against the node's key, decrypts each payload with the
//! subscription's private key, and says what arrived for a message, a file offer and a
//! pairing request; a burst is coalesced; 503 is retried, 410 drops the subscription, and a
//! revoked client's subscriptions go with it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Verifier as _;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use reqwest::Method;
use serde_json::{Value, json};
use volli_tests::{Node, Options, befriend, events, next_event};

/// One push as the service received it, decrypted.
#[derive(Clone, Debug)]
struct Received {
    at: Instant,
    subscription: String,
    headers: HeaderMap,
    payload: Value,
}

/// A subscription's private half, as a browser keeps it.
struct Keys {
    secret: p256::SecretKey,
    auth: [u8; 16],
}

impl Keys {
    fn new() -> Self {
        let mut raw = [0u8; 32];
        let secret = loop {
            getrandom::fill(&mut raw).unwrap();
            if let Ok(k) = p256::SecretKey::from_slice(&raw) {
                break k;
            }
        };
        let mut auth = [0u8; 16];
        getrandom::fill(&mut auth).unwrap();
        Self { secret, auth }
    }

    fn json(&self, endpoint: &str) -> Value {
        let public = self.secret.public_key().to_encoded_point(false);
        json!({
            "endpoint": endpoint,
            "keys": {
                "p256dh": URL_SAFE_NO_PAD.encode(public.as_bytes()),
                "auth": URL_SAFE_NO_PAD.encode(self.auth),
            },
            "expirationTime": null,
        })
    }
}

#[derive(Clone, Default)]
struct Service {
    keys: Arc<Mutex<Vec<(String, Keys)>>>,
    received: Arc<Mutex<Vec<Received>>>,
    /// Answers to give a subscription before 201, in order.
    answers: Arc<Mutex<Vec<(String, u16)>>>,
    vapid: Arc<Mutex<String>>,
    origin: Arc<Mutex<String>>,
}

/// The push service: checks what RFC 8030/8291/8292 ask of a push and records it.
async fn accept(
    State(service): State<Service>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let answer = {
        let mut answers = service.answers.lock().unwrap();
        let i = answers.iter().position(|(n, _)| *n == name);
        i.map(|i| answers.remove(i).1)
    };
    if let Some(status) = answer {
        return StatusCode::from_u16(status).unwrap();
    }
    assert_eq!(headers["content-encoding"], "aes128gcm");
    assert!(headers["ttl"].to_str().unwrap().parse::<u64>().unwrap() > 0);
    // VAPID: `vapid t=<ES256 JWT for this origin>, k=<the node's public key>`.
    let auth = headers["authorization"].to_str().unwrap().to_owned();
    let rest = auth.strip_prefix("vapid t=").expect("a VAPID header");
    let (jwt, k) = rest.split_once(", k=").unwrap();
    assert_eq!(k, *service.vapid.lock().unwrap(), "the node's VAPID key");
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["aud"], *service.origin.lock().unwrap());
    assert_eq!(claims["sub"], "mailto:ops@example.org");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp > now && exp <= now + 24 * 3600, "{claims}");
    let key =
        p256::ecdsa::VerifyingKey::from_sec1_bytes(&URL_SAFE_NO_PAD.decode(k).unwrap()).unwrap();
    let signature =
        p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
    key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("the JWT is signed with the node's key");
    // The payload, decrypted with the subscription's private key.
    let plain = {
        let keys = service.keys.lock().unwrap();
        let (_, k) = keys
            .iter()
            .find(|(n, _)| *n == name)
            .expect("a known subscription");
        let mut auth = web_push_native::Auth::default();
        for (to, from) in auth.iter_mut().zip(k.auth) {
            *to = from;
        }
        web_push_native::decrypt(body.to_vec(), &k.secret, &auth).expect("decrypts")
    };
    service.received.lock().unwrap().push(Received {
        at: Instant::now(),
        subscription: name,
        headers,
        payload: serde_json::from_slice(&plain).unwrap(),
    });
    StatusCode::CREATED
}

async fn push_service() -> (Service, String) {
    let service = Service::default();
    let app = axum::Router::new()
        .route("/push/{name}", axum::routing::post(accept))
        .with_state(service.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    *service.origin.lock().unwrap() = origin.clone();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (service, origin)
}

impl Service {
    fn pushes_to(&self, name: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.subscription == name)
            .cloned()
            .collect()
    }

    async fn wait_for(&self, name: &str, what: impl Fn(&Value) -> bool) -> Received {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(r) = self.pushes_to(name).into_iter().find(|r| what(&r.payload)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no such push to {name}: {:?}",
                self.pushes_to(name)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn subscribe(
    node: &Node,
    token: &str,
    service: &Service,
    origin: &str,
    name: &str,
    text: bool,
) -> String {
    let keys = Keys::new();
    let mut body = keys.json(&format!("{origin}/push/{name}"));
    body["include_text"] = json!(text);
    service.keys.lock().unwrap().push((name.to_owned(), keys));
    let (status, answer) = node
        .request_as(token, Method::POST, "/v1/push/subscriptions", Some(body))
        .await;
    assert_eq!(status, 201, "{answer}");
    answer["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_phone_is_pushed_what_arrived_without_the_text_and_bursts_are_coalesced() {
    let tmp = tempfile::tempdir().unwrap();
    let config = "[push]\nallow_http = true\ncontact = \"mailto:ops@example.org\"";
    let alice = Node::start_with(
        &tmp.path().join("alice"),
        Options {
            config: config.into(),
            ..Options::default()
        },
    )
    .await;
    let bob = Node::start(&tmp.path().join("bob")).await;
    befriend(&alice, &bob).await;
    let (bob_id, _) = bob.ids().await;
    let (alice_id, _) = alice.ids().await;
    let (status, phone) = alice
        .post("/v1/clients", json!({"name": "phone", "scopes": ["read"]}))
        .await;
    assert_eq!(status, 201, "{phone}");
    let token = phone["token"].as_str().unwrap().to_owned();

    let (service, origin) = push_service().await;
    let (status, vapid) = alice
        .request_as(&token, Method::GET, "/v1/push/vapid", None)
        .await;
    assert_eq!(status, 200, "{vapid}");
    *service.vapid.lock().unwrap() = vapid["public_key"].as_str().unwrap().to_owned();
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(vapid["public_key"].as_str().unwrap())
            .unwrap()
            .len(),
        65,
        "an uncompressed P-256 point"
    );

    // Bad subscriptions are refused and change nothing.
    for bad in [
        json!({"endpoint": "ftp://x/y", "keys": {"p256dh": "AAAA", "auth": "AAAA"}}),
        Keys::new().json("not a url"),
        json!({"endpoint": format!("{origin}/push/x"), "keys": {"p256dh": "AAAA", "auth": URL_SAFE_NO_PAD.encode([0u8; 16])}}),
        json!({"endpoint": format!("{origin}/push/x"), "keys": {"p256dh": Keys::new().json("")["keys"]["p256dh"], "auth": "AAAA"}}),
    ] {
        let (status, answer) = alice
            .request_as(
                &token,
                Method::POST,
                "/v1/push/subscriptions",
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_subscription");
    }

    let phone_sub = subscribe(&alice, &token, &service, &origin, "phone", false).await;
    let texts = subscribe(&alice, &alice.token, &service, &origin, "texts", true).await;
    let (_, list) = alice
        .request_as(&token, Method::GET, "/v1/push/subscriptions", None)
        .await;
    assert_eq!(
        list["subscriptions"].as_array().unwrap().len(),
        1,
        "the phone sees its own: {list}"
    );
    assert_eq!(list["subscriptions"][0]["id"], phone_sub.as_str());
    let (_, all) = alice.get("/v1/push/subscriptions").await;
    assert_eq!(
        all["subscriptions"].as_array().unwrap().len(),
        2,
        "the admin sees all: {all}"
    );

    // A message: the phone learns who wrote, not what.
    let mut alice_events = events(&alice).await;
    volli_tests::send(&bob, &alice_id, "the secret is 42").await;
    let received = next_event(
        &mut alice_events,
        "message.received",
        Duration::from_secs(10),
        |_| true,
    )
    .await;
    let at = Instant::now();
    let push = service
        .wait_for("phone", |p| p["counts"]["message.received"] == 1)
        .await;
    let latency = push.at.saturating_duration_since(at);
    eprintln!("push latency from the message.received event to the push service: {latency:?}");
    assert_eq!(push.payload["latest"]["from"], bob_id.as_str());
    assert_eq!(push.payload["latest"]["id"], received["id"]);
    assert!(
        !push.payload.to_string().contains("secret"),
        "{}",
        push.payload
    );
    assert_eq!(push.headers["urgency"], "high");
    assert_eq!(push.headers["topic"], "volli");
    let with_text = service
        .wait_for("texts", |p| p["counts"]["message.received"] == 1)
        .await;
    assert_eq!(with_text.payload["latest"]["body"], "the secret is 42");

    // A file offer, without its name.
    tokio::time::sleep(volli_node_coalesce()).await;
    let file = tmp.path().join("plans.pdf");
    std::fs::write(&file, vec![7u8; 4096]).unwrap();
    let (status, offer) = bob
        .post("/v1/transfers", json!({"to": alice_id, "path": file}))
        .await;
    assert_eq!(status, 201, "{offer}");
    let push = service
        .wait_for("phone", |p| p["latest"]["type"] == "transfer.offered")
        .await;
    assert_eq!(push.payload["latest"]["size"], 4096);
    assert!(
        !push.payload.to_string().contains("plans"),
        "{}",
        push.payload
    );

    // A pairing request.
    let carol = Node::start(&tmp.path().join("carol")).await;
    let (status, pairing) = alice.post("/v1/pairing", json!({})).await;
    assert_eq!(status, 201, "{pairing}");
    let (status, joining) = carol
        .post(
            "/v1/pairing/join",
            json!({"link": pairing["link"], "device_name": "tablet"}),
        )
        .await;
    assert_eq!(status, 202, "{joining}");
    let push = service
        .wait_for("phone", |p| p["latest"]["type"] == "pairing.request")
        .await;
    assert_eq!(push.payload["latest"]["device_name"], "tablet");

    // A burst of 100 messages: a bounded number of pushes, every message counted.
    tokio::time::sleep(volli_node_coalesce()).await;
    let before = service.pushes_to("phone").len();
    let mut arrived = 0;
    for i in 0..100 {
        volli_tests::send(&bob, &alice_id, &format!("burst {i}")).await;
    }
    while arrived < 100 {
        next_event(
            &mut alice_events,
            "message.received",
            Duration::from_secs(20),
            |_| true,
        )
        .await;
        arrived += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let pushes = loop {
        let pushes: Vec<Received> = service.pushes_to("phone").split_off(before);
        let counted: u64 = pushes
            .iter()
            .map(|p| {
                p.payload["counts"]["message.received"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum();
        if counted >= 100 {
            assert_eq!(counted, 100, "each message counted once");
            break pushes;
        }
        assert!(Instant::now() < deadline, "{counted} of 100 counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("a burst of 100 messages: {} pushes", pushes.len());
    assert!(
        pushes.len() <= 10,
        "{} pushes for 100 messages",
        pushes.len()
    );

    // A push service that is briefly down is tried again.
    service
        .answers
        .lock()
        .unwrap()
        .extend([("phone".to_owned(), 503), ("phone".to_owned(), 429)]);
    tokio::time::sleep(volli_node_coalesce()).await;
    let (status, _) = alice
        .request_as(&token, Method::POST, "/v1/push/test", None)
        .await;
    assert_eq!(status, 202);
    service
        .wait_for("phone", |p| p["latest"]["type"] == "test")
        .await;

    // 410: the subscription is gone, and the node forgets it.
    service
        .answers
        .lock()
        .unwrap()
        .push(("texts".to_owned(), 410));
    let (status, _) = alice.post("/v1/push/test", json!({"id": texts})).await;
    assert_eq!(status, 202);
    alice
        .wait_for("/v1/push/subscriptions", Duration::from_secs(10), |l| {
            l["subscriptions"].as_array().unwrap().len() == 1
        })
        .await;

    // Revoking the phone drops its subscription.
    let (_, clients) = alice.get("/v1/clients").await;
    let id = clients["clients"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = alice
        .request(Method::DELETE, &format!("/v1/clients/{id}"), None)
        .await;
    assert_eq!(status, 204);
    alice
        .wait_for("/v1/push/subscriptions", Duration::from_secs(10), |l| {
            l["subscriptions"].as_array().unwrap().is_empty()
        })
        .await;
}

/// Past the node's coalescing window, so the next event is pushed at once.
fn volli_node_coalesce() -> Duration {
    Duration::from_millis(2_100)
}

/// A client with scope `read`: its id and token.
async fn new_client(node: &Node, name: &str) -> (String, String) {
    let (status, c) = node
        .post("/v1/clients", json!({"name": name, "scopes": ["read"]}))
        .await;
    assert_eq!(status, 201, "{c}");
    (
        c["id"].as_str().unwrap().to_owned(),
        c["token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_revoked_clients_subscriptions_are_gone_at_once_after_a_crash_and_after_a_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("alice");
    let options = Options {
        config: "[push]\nallow_http = true".into(),
        ..Options::default()
    };
    let mut alice = Node::start_with(&dir, options.clone()).await;
    let (service, origin) = push_service().await;

    // A client may hold a few subscriptions, not the node's every slot.
    let (_, greedy) = new_client(&alice, "greedy").await;
    for i in 0..10 {
        let keys = Keys::new();
        let (status, _) = alice
            .request_as(
                &greedy,
                Method::POST,
                "/v1/push/subscriptions",
                Some(keys.json(&format!("{origin}/push/greedy{i}"))),
            )
            .await;
        assert_eq!(status, 201);
    }
    let (status, answer) = alice
        .request_as(
            &greedy,
            Method::POST,
            "/v1/push/subscriptions",
            Some(Keys::new().json(&format!("{origin}/push/greedy-more"))),
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "too_many_subscriptions");

    // Revoked: gone from the list at once, without waiting for anything.
    let (id, token) = new_client(&alice, "phone").await;
    subscribe(&alice, &token, &service, &origin, "phone", true).await;
    let (status, _) = alice
        .request(Method::DELETE, &format!("/v1/clients/{id}"), None)
        .await;
    assert_eq!(status, 204);
    let (_, list) = alice.get("/v1/push/subscriptions").await;
    assert!(
        list["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["client_id"] != id.as_str()),
        "{list}"
    );

    // Revoked, and the node is killed at once: after the restart nothing is pushed to it.
    let (id, token) = new_client(&alice, "tablet").await;
    subscribe(&alice, &token, &service, &origin, "tablet", true).await;
    let (status, _) = alice
        .request(Method::DELETE, &format!("/v1/clients/{id}"), None)
        .await;
    assert_eq!(status, 204);
    alice.kill();
    let mut alice = Node::start_with(&dir, options.clone()).await;
    let (_, list) = alice.get("/v1/push/subscriptions").await;
    assert!(
        list["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["client_id"] != id.as_str()),
        "{list}"
    );
    let (status, _) = alice.post("/v1/push/test", json!({})).await;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(service.pushes_to("tablet").is_empty());

    // A backup made while a client and its subscription live brings neither back.
    let (_, token) = new_client(&alice, "watch").await;
    subscribe(&alice, &token, &service, &origin, "watch", true).await;
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, "correct horse battery\n").unwrap();
    let file = tmp.path().join("alice.volli-backup");
    let out = volli_tests::volli(&[
        "backup",
        file.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = tmp.path().join("restored");
    let out = volli_tests::volli(&[
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
    alice.kill();
    let restored = Node::start_with(&restored, options).await;
    let (status, _) = restored
        .request_as(&token, Method::GET, "/v1/push/subscriptions", None)
        .await;
    assert_eq!(status, 401, "a token comes back with a restore");
    let (_, clients) = restored.get("/v1/clients").await;
    assert!(
        clients["clients"].as_array().unwrap().is_empty(),
        "{clients}"
    );
    let (_, list) = restored.get("/v1/push/subscriptions").await;
    assert!(
        list["subscriptions"].as_array().unwrap().is_empty(),
        "{list}"
    );
}

#[tokio::test]
async fn a_push_endpoint_on_the_nodes_own_network_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = Node::start(&tmp.path().join("alice")).await;
    for endpoint in [
        "https://127.0.0.1:8470/v1/node",
        "https://10.0.0.1/push",
        "https://[::1]/push",
        "https://192.168.1.1:443/admin",
        "https://localhost/push",
        "https://printer.local/push",
    ] {
        let (status, answer) = alice
            .post("/v1/push/subscriptions", Keys::new().json(endpoint))
            .await;
        assert_eq!(status, 400, "{endpoint}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_subscription");
    }
}
