//! Federation through the real binary: invites and contacts between nodes, the documented
//! errors, redemption completing after the inviter comes back, contacts found again after
//! they move (through the DHT, through rendezvous), and a custom discovery plugin.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use volli_core::{DeviceCertificate, Invite, Timestamp, UserSecret};
use volli_tests::{Node, Options, events, free_port, repo_root, target_dir, volli};

async fn invite(node: &Node) -> String {
    let (status, body) = node.post("/v1/invites", json!({})).await;
    assert_eq!(status, 201, "{body}");
    assert!(body["qr_svg"].as_str().unwrap().starts_with("<?xml"));
    body["link"].as_str().unwrap().to_owned()
}

fn contact_ids(list: &Value) -> Vec<String> {
    list["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["user_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn next_of_type(
    events: &mut (impl futures::Stream<Item = Value> + Unpin),
    kind: &str,
) -> Value {
    volli_tests::next_event(events, kind, Duration::from_secs(10), |_| true).await
}

#[tokio::test]
async fn two_nodes_become_mutual_contacts_from_an_invite() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = Node::start(&tmp.path().join("alice")).await;
    let bob = Node::start(&tmp.path().join("bob")).await;
    let (alice_id, alice_peer) = alice.ids().await;
    let (bob_id, bob_peer) = bob.ids().await;
    let mut alice_events = events(&alice).await;

    let link = invite(&alice).await;
    let started = Instant::now();
    let (status, contact) = bob
        .post("/v1/contacts", json!({"invite": link, "name": "Alice"}))
        .await;
    let took = started.elapsed();
    assert_eq!(status, 201, "{contact}");
    assert!(took < Duration::from_secs(5), "redeeming took {took:?}");
    assert_eq!(contact["user_id"], alice_id);
    assert_eq!(contact["name"], "Alice");
    assert_eq!(contact["devices"], json!([alice_peer]));

    let added = next_of_type(&mut alice_events, "contact.added").await;
    assert_eq!(added["user_id"], bob_id);
    let (_, list) = alice.get("/v1/contacts").await;
    assert_eq!(contact_ids(&list), vec![bob_id.clone()]);
    assert_eq!(list["contacts"][0]["devices"], json!([bob_peer]));

    // Each sees the other as a connected peer whose user is verified.
    bob.wait_for("/v1/peers", Duration::from_secs(5), |b| {
        b["peers"].as_array().unwrap().iter().any(|p| {
            p["peer_id"] == alice_peer
                && p["connected"] == true
                && p["user_id"] == alice_id
                && p["sources"].as_array().unwrap().contains(&json!("invite"))
        })
    })
    .await;
}

fn user_secret(data_dir: &std::path::Path) -> UserSecret {
    let bytes = std::fs::read(data_dir.join("identity/user.key")).unwrap();
    let master: [u8; 32] = bytes[bytes.len() - 32..].try_into().unwrap();
    UserSecret::from_master(master)
}

#[tokio::test]
async fn tampered_garbage_expired_and_used_invites_get_their_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let alice_dir = tmp.path().join("alice");
    let alice = Node::start(&alice_dir).await;
    let bob = Node::start(&tmp.path().join("bob")).await;
    let carol = Node::start(&tmp.path().join("carol")).await;

    let link = invite(&alice).await;
    // Tampered: change one character of the signed payload.
    let mut tampered = link.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in [
        tampered.as_str(),
        "volli://invite/garbage",
        "not a link at all",
        "",
    ] {
        let (status, body) = bob.post("/v1/contacts", json!({"invite": bad})).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_invite")),
            "{bad:?}: {body}"
        );
    }
    let (status, body) = alice.post("/v1/contacts", json!({"invite": link})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_invite")),
        "own invite: {body}"
    );

    // Expired: a correctly signed invite of Alice's whose time has passed.
    let cert = DeviceCertificate::from_bytes(
        &std::fs::read(alice_dir.join("identity/device.cert")).unwrap(),
    )
    .unwrap();
    let expired = Invite::create(
        &user_secret(&alice_dir),
        cert,
        &[],
        Timestamp::from_millis(Timestamp::now().as_millis() - 1000),
        1,
        [1; 16],
    );
    let (status, body) = bob
        .post("/v1/contacts", json!({"invite": expired.to_link()}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (410, Some("invite_expired")),
        "{body}"
    );

    // Used: Bob redeems the single-use invite, then Carol tries.
    assert_eq!(
        bob.post("/v1/contacts", json!({"invite": link})).await.0,
        201
    );
    let (status, body) = carol.post("/v1/contacts", json!({"invite": link})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("invite_used")),
        "{body}"
    );
    // Nothing changed for Carol; Bob may repeat his own redemption.
    let (_, list) = carol.get("/v1/contacts").await;
    assert!(list["contacts"].as_array().unwrap().is_empty());
    assert_eq!(
        bob.post("/v1/contacts", json!({"invite": link})).await.0,
        201
    );

    // Bad bodies.
    let (status, body) = bob.post("/v1/invites", json!({"ttl_secs": 5})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_ttl"))
    );
    let (status, body) = bob.post("/v1/contacts", json!({"invite": 42})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_body"))
    );
}

#[tokio::test]
async fn an_invite_accepted_while_the_inviter_is_down_completes_when_it_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let alice_dir = tmp.path().join("alice");
    let port = free_port();
    let options = Options {
        p2p_listen: Some(format!("/ip4/127.0.0.1/tcp/{port}")),
        ..Options::default()
    };
    let mut alice = Node::start_with(&alice_dir, options.clone()).await;
    let (alice_id, _) = alice.ids().await;
    let link = invite(&alice).await;
    assert!(alice.terminate().success());

    let bob = Node::start(&tmp.path().join("bob")).await;
    let (status, body) = bob.post("/v1/contacts", json!({"invite": link})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body,
        json!({
            "state": "pending",
            "user_id": alice_id,
            "name": null,
            "attempts": 1,
            "last_error": body["last_error"],
        })
    );
    assert!(
        body["last_error"].as_str().unwrap().contains("offline"),
        "{body}"
    );
    let (_, list) = bob.get("/v1/contacts").await;
    assert_eq!(list["pending"][0]["user_id"], alice_id);

    let alice = Node::start_with(&alice_dir, options).await;
    let list = bob
        .wait_for("/v1/contacts", Duration::from_secs(30), |b| {
            !b["contacts"].as_array().unwrap().is_empty()
        })
        .await;
    assert_eq!(contact_ids(&list), vec![alice_id]);
    assert!(list["pending"].as_array().unwrap().is_empty());
    let (_, list) = alice.get("/v1/contacts").await;
    assert_eq!(list["contacts"].as_array().unwrap().len(), 1);
}

/// Alice and Bob are contacts; both move to new addresses (a restart on new ports) while a
/// third node, the bootstrap and rendezvous point, stays. Their old addresses are useless;
/// the only way back to each other is `method`.
async fn contacts_find_each_other_again_through(method: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Node::start_with(
        &tmp.path().join("hub"),
        Options {
            config: "[network]\nlan = false\nrendezvous_server = true\n".into(),
            ..Options::default()
        },
    )
    .await;
    let hub_addr = hub.p2p_addr().await;
    // Only the method under test connects Alice and Bob to the hub.
    let options = if method == "dht" {
        Options {
            args: vec!["--bootstrap".into(), hub_addr.clone()],
            config: "[network]\nlan = false\n[plugins.rendezvous]\nenabled = false\n".into(),
            ..Options::default()
        }
    } else {
        Options {
            config: format!(
                "[network]\nlan = false\ndht = false\nrendezvous_points = [\"{hub_addr}\"]\n[plugins.dht]\nenabled = false\n"
            ),
            ..Options::default()
        }
    };
    let (alice_dir, bob_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let mut alice = Node::start_with(&alice_dir, options.clone()).await;
    let mut bob = Node::start_with(&bob_dir, options.clone()).await;
    let link = invite(&alice).await;
    assert_eq!(
        bob.post("/v1/contacts", json!({"invite": link})).await.0,
        201
    );
    let (_, alice_peer) = alice.ids().await;
    let (_, bob_peer) = bob.ids().await;
    let old_bob_addr = bob.p2p_addr().await;

    assert!(alice.terminate().success());
    assert!(bob.terminate().success());
    let alice = Node::start_with(&alice_dir, options.clone()).await;
    let bob = Node::start_with(&bob_dir, options).await;
    let new_bob_addr = bob.p2p_addr().await;
    assert_ne!(old_bob_addr, new_bob_addr, "Bob moved");

    let started = Instant::now();
    let connected = |peer: String| {
        move |b: &Value| {
            b["peers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["peer_id"] == peer && p["connected"] == true)
        }
    };
    alice
        .wait_for(
            "/v1/peers",
            Duration::from_secs(45),
            connected(bob_peer.clone()),
        )
        .await;
    bob.wait_for(
        "/v1/peers",
        Duration::from_secs(10),
        connected(alice_peer.clone()),
    )
    .await;
    eprintln!("reconnected through {method} in {:?}", started.elapsed());
    // The old addresses are dead, LAN discovery is off and the other method is disabled:
    // the new address can only have come through the method under test.
    let (_, contacts) = alice.get("/v1/contacts").await;
    assert_eq!(
        contacts["contacts"].as_array().unwrap().len(),
        1,
        "no new invite was needed"
    );
}

#[tokio::test]
async fn contacts_that_move_are_found_again_through_the_dht() {
    contacts_find_each_other_again_through("dht").await;
}

#[tokio::test]
async fn contacts_that_move_are_found_again_through_rendezvous() {
    contacts_find_each_other_again_through("rendezvous").await;
}

/// The SDK template, built as a user would, configured with Bob's address, makes Alice's
/// node list Bob as a peer found by `static-peers`.
#[tokio::test]
async fn a_custom_discovery_plugin_from_the_sdk_template_contributes_peers() {
    let wasm_target = target_dir().join("wasm-plugins");
    let status = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(repo_root().join("sdk/template/Cargo.toml"))
        .arg("--target-dir")
        .arg(&wasm_target)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .status()
        .unwrap();
    assert!(status.success());
    let wasm = wasm_target.join("wasm32-wasip2/release/static_peers.wasm");

    let tmp = tempfile::tempdir().unwrap();
    let alice_dir = tmp.path().join("alice");
    let alice = Node::start(&alice_dir).await;
    let bob = Node::start(&tmp.path().join("bob")).await;
    let (_, bob_peer) = bob.ids().await;
    let (_, node) = bob.get("/v1/node").await;
    let bob_addr = node["listen_addrs"][0].as_str().unwrap().to_owned();

    let dir = alice_dir.to_str().unwrap();
    let out = volli(&[
        "plugins",
        "install",
        wasm.to_str().unwrap(),
        "--grant",
        "log",
        "--data-dir",
        dir,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = json!({"peers": [{"peer_id": bob_peer, "addrs": [bob_addr]}]}).to_string();
    let out = volli(&[
        "plugins",
        "config",
        "static-peers",
        &config,
        "--data-dir",
        dir,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let peers = alice
        .wait_for("/v1/peers", Duration::from_secs(70), |b| {
            b["peers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["peer_id"] == bob_peer)
        })
        .await;
    let entry = peers["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == bob_peer)
        .unwrap();
    assert_eq!(entry["sources"], json!(["static-peers"]));
    assert_eq!(entry["addrs"], json!([bob_addr]));
}
