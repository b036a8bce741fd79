//! Messaging through the real binary: direct delivery with a receipt and live events, the
//! documented errors, the outbox across a crash and a restart, and a mutual friend's node
//! carrying a message between two users who are never online together; a time to live that
//! runs out; a relay that tells its connected recipient at once that mail waits there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use volli_tests::netns::{self, Lan};
use volli_tests::{
    Node, Options, befriend, conversation, events, free_port, next_event, on_port, send,
    wait_until_relay_of,
};

async fn status_of(node: &Node, with: &str, id: &str) -> String {
    conversation(node, with)
        .await
        .iter()
        .find(|m| m["id"] == id)
        .map(|m| m["status"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn wait_status(node: &Node, with: &str, id: &str, want: &str, within: Duration) {
    let path = format!("/v1/messages?with={with}");
    node.wait_for(&path, within, |b| {
        b["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == id && m["status"] == want)
    })
    .await;
}

#[tokio::test]
async fn a_direct_message_is_delivered_with_a_receipt_and_live_events() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = Node::start(&tmp.path().join("alice")).await;
    let bob = Node::start(&tmp.path().join("bob")).await;
    befriend(&alice, &bob).await;
    let (alice_id, _) = alice.ids().await;
    let (bob_id, _) = bob.ids().await;
    let mut alice_events = events(&alice).await;
    let mut bob_events = events(&bob).await;

    let id = send(&alice, &bob_id, "hello bob").await;
    let received = next_event(
        &mut bob_events,
        "message.received",
        Duration::from_secs(10),
        |_| true,
    )
    .await;
    assert_eq!(received["id"], id);
    assert_eq!(received["from"], alice_id);
    assert_eq!(received["body"], "hello bob");
    let status = next_event(
        &mut alice_events,
        "message.status",
        Duration::from_secs(10),
        |e| e["status"] == "delivered",
    )
    .await;
    assert_eq!(status["id"], id);
    assert_eq!(status["to"], bob_id);

    let theirs = conversation(&bob, &alice_id).await;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["status"], "received");
    assert_eq!(theirs[0]["from"], alice_id);
    assert_eq!(theirs[0]["to"], bob_id);
    assert_eq!(status_of(&alice, &bob_id, &id).await, "delivered");

    // A reply, and the conversation pages oldest first.
    let reply = send(&bob, &alice_id, "hi alice").await;
    wait_status(
        &bob,
        &alice_id,
        &reply,
        "delivered",
        Duration::from_secs(10),
    )
    .await;
    let mine = conversation(&alice, &bob_id).await;
    assert_eq!(
        mine.iter().map(|m| m["body"].clone()).collect::<Vec<_>>(),
        vec![json!("hello bob"), json!("hi alice")]
    );
    let (_, page) = alice
        .get(&format!(
            "/v1/messages?with={bob_id}&before={reply}&limit=1"
        ))
        .await;
    assert_eq!(page["messages"][0]["id"], id);
}

#[tokio::test]
async fn bad_messages_get_their_errors_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = Node::start(&tmp.path().join("alice")).await;
    let bob = Node::start(&tmp.path().join("bob")).await;
    befriend(&alice, &bob).await;
    let (bob_id, _) = bob.ids().await;
    let stranger = volli_core::UserSecret::from_master([9; 32])
        .user_id()
        .to_string();

    let cases = [
        (
            json!({"to": stranger, "body": "hi"}),
            404,
            "unknown_contact",
        ),
        (
            json!({"to": "nobody", "body": "hi"}),
            400,
            "invalid_user_id",
        ),
        (json!({"to": bob_id, "body": "  "}), 400, "invalid_message"),
        (
            json!({"to": bob_id, "body": "x".repeat(64 * 1024 + 1)}),
            400,
            "invalid_message",
        ),
        (json!({"to": bob_id}), 400, "invalid_body"),
        (json!({"to": bob_id, "body": 7}), 400, "invalid_body"),
    ];
    for (body, status, code) in cases {
        let (got, answer) = alice.post("/v1/messages", body.clone()).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
    for (query, code) in [
        ("", "invalid_query"),
        ("?with=nobody", "invalid_user_id"),
        (
            &format!("?with={bob_id}&before=zz") as &str,
            "invalid_message_id",
        ),
        (&format!("?with={bob_id}&limit=0"), "invalid_query"),
    ] {
        let (got, answer) = alice.get(&format!("/v1/messages{query}")).await;
        assert_eq!(got, 400, "{query}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{query}: {answer}");
    }
    assert!(conversation(&alice, &bob_id).await.is_empty());
    let (_, relay) = alice.get("/v1/relay").await;
    assert_eq!(
        (&relay["envelopes"], &relay["bytes"], &relay["recipients"]),
        (&json!(0), &json!(0), &json!(0)),
        "{relay}"
    );
    assert!(relay["next_expiry"].is_null(), "{relay}");
}

#[tokio::test]
async fn a_message_to_an_offline_contact_waits_and_survives_a_sender_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let (alice_port, bob_port) = (free_port(), free_port());
    let alice_dir = tmp.path().join("alice");
    let bob_dir = tmp.path().join("bob");
    let mut alice = Node::start_with(&alice_dir, on_port(alice_port)).await;
    let mut bob = Node::start_with(&bob_dir, on_port(bob_port)).await;
    befriend(&alice, &bob).await;
    let (alice_id, _) = alice.ids().await;
    let (bob_id, _) = bob.ids().await;
    assert!(bob.terminate().success());

    let id = send(&alice, &bob_id, "are you there?").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_of(&alice, &bob_id, &id).await, "queued");
    // A crash right after the 202 loses nothing.
    alice.kill();
    let alice = Node::start_with(&alice_dir, on_port(alice_port)).await;
    assert_eq!(status_of(&alice, &bob_id, &id).await, "queued");

    let bob = Node::start_with(&bob_dir, on_port(bob_port)).await;
    wait_status(&alice, &bob_id, &id, "delivered", Duration::from_secs(30)).await;
    let got = conversation(&bob, &alice_id).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["body"], "are you there?");
}

#[tokio::test]
async fn a_mutual_friend_carries_a_message_between_users_never_online_together() {
    let tmp = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port(), free_port());
    let (alice_dir, bob_dir, relay_dir) = (
        tmp.path().join("alice"),
        tmp.path().join("bob"),
        tmp.path().join("relay"),
    );
    let mut alice = Node::start_with(&alice_dir, on_port(ports.0)).await;
    let mut bob = Node::start_with(&bob_dir, on_port(ports.1)).await;
    let relay = Node::start_with(&relay_dir, on_port(ports.2)).await;
    befriend(&relay, &alice).await;
    befriend(&relay, &bob).await;
    befriend(&alice, &bob).await;
    let (alice_id, _) = alice.ids().await;
    let (bob_id, _) = bob.ids().await;
    let (relay_id, _) = relay.ids().await;

    // Bob designates his relays among his contacts and tells them with a newer card.
    wait_until_relay_of(&alice, &bob_id, &relay_id).await;

    assert!(bob.terminate().success());
    let id = send(&alice, &bob_id, "via our friend").await;
    wait_status(&alice, &bob_id, &id, "relayed", Duration::from_secs(20)).await;
    // The message, and the Welcome for Bob's device into the conversation it started on
    // MLS.
    let held = relay
        .wait_for("/v1/relay", Duration::from_secs(20), |h| {
            h["envelopes"] == 2
        })
        .await;
    assert_eq!(held["recipients"], 1, "{held}");
    // The quotas and expiry that bound what is held are shown with it.
    assert_eq!(held["policy"]["plugin"], "friends-only", "{held}");
    assert_eq!(held["policy"]["state"], "running", "{held}");
    assert_eq!(held["policy"]["limits"]["max_ttl_secs"], 604_800, "{held}");
    assert_eq!(held["max_hold_secs"], 604_800, "{held}");
    let expiry = held["next_expiry"]
        .as_str()
        .expect("an expiry while holding");
    let hours = (volli_core::Timestamp::parse_rfc3339(expiry)
        .unwrap()
        .as_millis()
        - volli_core::Timestamp::now().as_millis())
        / 3_600_000;
    assert!(
        (1..=7 * 24).contains(&hours),
        "expires in {hours} h: {held}"
    );
    assert_eq!(held["transfers"]["files"], 0, "{held}");
    assert!(
        held["transfers"]["max_bytes"].as_u64().unwrap() > 0,
        "{held}"
    );
    assert!(alice.terminate().success());

    let mut bob = Node::start_with(&bob_dir, on_port(ports.1)).await;
    let got = bob
        .wait_for(
            &format!("/v1/messages?with={alice_id}"),
            Duration::from_secs(30),
            |b| !b["messages"].as_array().unwrap().is_empty(),
        )
        .await;
    assert_eq!(got["messages"][0]["body"], "via our friend");
    relay
        .wait_for("/v1/relay", Duration::from_secs(10), |h| {
            h["envelopes"] == 0 && h["next_expiry"].is_null()
        })
        .await;

    // Bob leaves again before Alice returns: his signed receipt, left at the relay, tells
    // her the message was delivered.
    assert!(bob.terminate().success());
    let alice = Node::start_with(&alice_dir, on_port(ports.0)).await;
    wait_status(&alice, &bob_id, &id, "delivered", Duration::from_secs(30)).await;

    // Bob still shows the message once.
    let bob = Node::start_with(&bob_dir, on_port(ports.1)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(conversation(&bob, &alice_id).await.len(), 1);
}

#[tokio::test]
async fn a_message_whose_time_to_live_runs_out_is_marked_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = Node::start_with(
        &tmp.path().join("alice"),
        Options {
            config: "[messages]\nttl_secs = 2\n".into(),
            ..Options::default()
        },
    )
    .await;
    let mut bob = Node::start(&tmp.path().join("bob")).await;
    befriend(&alice, &bob).await;
    let (bob_id, _) = bob.ids().await;
    assert!(bob.terminate().success());
    let mut alice_events = events(&alice).await;

    let id = send(&alice, &bob_id, "too late").await;
    let event = next_event(
        &mut alice_events,
        "message.status",
        Duration::from_secs(30),
        |e| e["id"] == id.as_str() && e["status"] == "failed",
    )
    .await;
    assert_eq!(event["to"], bob_id.as_str());
    assert_eq!(status_of(&alice, &bob_id, &id).await, "failed");

    // A bad value is refused at start with a clear message.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[messages]\nttl_secs = 0\n").unwrap();
    let carol = tmp.path().join("carol");
    let out = volli_tests::volli(&[
        "serve",
        "--data-dir",
        carol.to_str().unwrap(),
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("messages.ttl_secs must be 1 to 604800"),
        "{stderr}"
    );
}

/// A relay holds an envelope for as long as its sender's time to live allows, shows when it
/// expires, and deletes it then: the sweeper wakes for that expiry, not on a fixed tick.
#[tokio::test]
async fn a_relay_deletes_what_it_holds_when_it_expires() {
    let tmp = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port(), free_port());
    let alice = Node::start_with(
        &tmp.path().join("alice"),
        Options {
            config: "[messages]\nttl_secs = 10\n".into(),
            ..on_port(ports.0)
        },
    )
    .await;
    let mut bob = Node::start_with(&tmp.path().join("bob"), on_port(ports.1)).await;
    let relay = Node::start_with(&tmp.path().join("relay"), on_port(ports.2)).await;
    befriend(&relay, &alice).await;
    befriend(&relay, &bob).await;
    befriend(&alice, &bob).await;
    let (bob_id, _) = bob.ids().await;
    let (relay_id, _) = relay.ids().await;
    wait_until_relay_of(&alice, &bob_id, &relay_id).await;
    assert!(bob.terminate().success());

    let id = send(&alice, &bob_id, "only for ten seconds").await;
    wait_status(&alice, &bob_id, &id, "relayed", Duration::from_secs(8)).await;
    // The message, and the Welcome into the conversation it started on MLS.
    let held = relay
        .wait_for("/v1/relay", Duration::from_secs(8), |h| h["envelopes"] == 2)
        .await;
    let expires = volli_core::Timestamp::parse_rfc3339(held["next_expiry"].as_str().unwrap())
        .unwrap()
        .as_millis()
        - volli_core::Timestamp::now().as_millis();
    assert!(
        (0..=10_000).contains(&expires),
        "expires in {expires} ms: {held}"
    );

    // Gone a moment after it expires (the old sweep ran once a minute).
    relay
        .wait_for(
            "/v1/relay",
            Duration::from_millis(u64::try_from(expires).unwrap() + 5_000),
            |h| h["envelopes"] == 0 && h["next_expiry"].is_null(),
        )
        .await;
    wait_status(&alice, &bob_id, &id, "failed", Duration::from_secs(10)).await;
}

/// A relay that takes a message for a recipient connected to it tells the recipient at once
/// (`Waiting`), which fetches it then instead of at its next periodic visit (every ten
/// minutes). Alice cannot reach Bob (nftables drops every packet between their namespaces);
/// both reach their common friend's node.
#[tokio::test]
async fn a_relay_tells_a_connected_recipient_that_mail_waits() {
    if std::env::var_os("VOLLI_SKIP_NETNS").is_some() {
        eprintln!("skipped: VOLLI_SKIP_NETNS is set");
        return;
    }
    assert!(
        netns::available() && netns::nft_available(),
        "run as root with iproute2 and nftables (scripts/setup.sh), or set VOLLI_SKIP_NETNS=1"
    );
    let mut lan = Lan::new();
    let tmp = tempfile::tempdir().unwrap();
    let mut hosts = Vec::new();
    let mut nodes = Vec::new();
    for name in ["alice", "bob", "relay"] {
        let (ns, addr) = lan.host();
        let options = Options {
            netns: Some(ns.clone()),
            api_listen: Some(format!("{addr}:0")),
            p2p_listen: Some(format!("/ip4/{addr}/tcp/0")),
            // Nodes that do not know whether they are reachable relay circuits for their
            // contacts: none here, so that the mailbox is the only way between Alice and Bob.
            config: "[network]\nrelay_server = false\n".into(),
            ..Options::default()
        };
        nodes.push(Node::start_with(&tmp.path().join(name), options).await);
        hosts.push((ns, addr));
    }
    let (alice, bob, relay) = (&nodes[0], &nodes[1], &nodes[2]);
    befriend(relay, alice).await;
    befriend(relay, bob).await;
    befriend(alice, bob).await;
    let (alice_id, _) = alice.ids().await;
    let (bob_id, _) = bob.ids().await;
    let (relay_id, _) = relay.ids().await;
    wait_until_relay_of(alice, &bob_id, &relay_id).await;

    // Nobody listens through a circuit: the only way between them is the mailbox.
    let (_, node) = bob.get("/v1/node").await;
    assert!(
        node["relayed_via"].as_array().is_none_or(Vec::is_empty),
        "{node}"
    );

    netns::partition(&hosts[0].0, &hosts[0].1, &hosts[1].0, &hosts[1].1);
    let id = send(alice, &bob_id, "through our friend, while you are online").await;
    // Deposited once the direct attempt fails (the receipt may follow at once).
    let path = format!("/v1/messages?with={bob_id}");
    alice
        .wait_for(&path, Duration::from_secs(60), |b| {
            b["messages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["id"] == id && (m["status"] == "relayed" || m["status"] == "delivered"))
        })
        .await;
    let got = bob
        .wait_for(
            &format!("/v1/messages?with={alice_id}"),
            Duration::from_secs(5),
            |b| !b["messages"].as_array().unwrap().is_empty(),
        )
        .await;
    assert_eq!(
        got["messages"][0]["body"],
        "through our friend, while you are online"
    );
    // What Bob fetched is gone from the relay, and his receipt, left there, reaches Alice
    // the same way.
    relay
        .wait_for("/v1/relay", Duration::from_secs(10), |h| {
            h["envelopes"] == 0
        })
        .await;
    wait_status(alice, &bob_id, &id, "delivered", Duration::from_secs(10)).await;
    netns::heal(&hosts[0].0, &hosts[1].0);
}
