//! A user's second device through the real binary: pairing with a link and with a short
//! code (on a LAN of network namespaces), the vault converging both ways and live,
//! messages on every device, revocation, every bad input, and convergence after a real
//! partition (nftables) and after `kill -9`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use volli_tests::netns::{self, Lan};
use volli_tests::{Node, Options, befriend, conversation, events, next_event, pair, send, volli};

async fn settings(node: &Node) -> Value {
    node.get("/v1/settings").await.1["settings"].clone()
}

async fn put_setting(node: &Node, key: &str, value: Value) {
    let (status, body) = node
        .request(
            reqwest::Method::PUT,
            &format!("/v1/settings/{key}"),
            Some(json!({"value": value})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Ids and statuses of a conversation, in order.
async fn summary(node: &Node, with: &str) -> Vec<(String, String)> {
    conversation(node, with)
        .await
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_second_device_joins_with_a_link_and_everything_converges_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Node::start(&tmp.path().join("first")).await;
    let carol = Node::start(&tmp.path().join("carol")).await;
    befriend(&first, &carol).await;
    let (alice, first_peer) = first.ids().await;
    let (carol_id, _) = carol.ids().await;
    send(&first, &carol_id, "before the second device").await;
    send(&carol, &alice, "hello alice").await;
    put_setting(&first, "ui.theme", json!("dark")).await;
    first
        .wait_for(
            &format!("/v1/messages?with={carol_id}"),
            Duration::from_secs(20),
            |b| {
                b["messages"].as_array().unwrap().len() == 2
                    && b["messages"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|m| m["status"] != "queued")
            },
        )
        .await;

    let second = Node::start(&tmp.path().join("second")).await;
    let second_peer = pair(&first, &second, None).await;
    assert_ne!(second_peer, first_peer, "a device keeps its own peer id");

    // The whole vault arrives: devices, settings, contacts, the conversation.
    second
        .wait_for("/v1/devices", Duration::from_secs(20), |d| {
            d["devices"].as_array().unwrap().len() == 2
        })
        .await;
    let (_, devices) = second.get("/v1/devices").await;
    let me = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["this_device"] == true)
        .unwrap();
    assert_eq!(me["peer_id"], second_peer.as_str());
    assert_eq!(
        me["permissions"],
        json!(["messages", "contacts", "settings"])
    );
    assert_eq!(settings(&second).await, settings(&first).await);
    second
        .wait_for("/v1/contacts", Duration::from_secs(20), |c| {
            c["contacts"][0]["user_id"] == carol_id.as_str()
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while summary(&second, &carol_id).await != summary(&first, &carol_id).await {
        assert!(Instant::now() < deadline, "the conversation did not arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Live, both ways.
    put_setting(&second, "ui.lang", json!("fr")).await;
    first
        .wait_for("/v1/settings", Duration::from_secs(10), |s| {
            s["settings"]["ui.lang"] == "fr"
        })
        .await;
    put_setting(&first, "ui.font", json!(14)).await;
    second
        .wait_for("/v1/settings", Duration::from_secs(10), |s| {
            s["settings"]["ui.font"] == 14
        })
        .await;

    // Carol learns the second device from Alice's new card.
    carol
        .wait_for(
            &format!("/v1/contacts/{alice}"),
            Duration::from_secs(20),
            |c| c["devices"].as_array().unwrap().len() == 2,
        )
        .await;

    // A message sent from the second device (which does not hold the signing key) reaches
    // Carol, and shows, delivered, on both of Alice's devices.
    let id = send(&second, &carol_id, "from my second device").await;
    carol
        .wait_for(
            &format!("/v1/messages?with={alice}"),
            Duration::from_secs(20),
            |b| {
                b["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["id"] == id.as_str())
            },
        )
        .await;
    for device in [&first, &second] {
        device
            .wait_for(
                &format!("/v1/messages?with={carol_id}"),
                Duration::from_secs(20),
                |b| {
                    b["messages"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|m| m["id"] == id.as_str() && m["status"] == "delivered")
                },
            )
            .await;
    }
    // A message from Carol shows on both devices.
    let id = send(&carol, &alice, "to all your devices").await;
    for device in [&first, &second] {
        device
            .wait_for(
                &format!("/v1/messages?with={carol_id}"),
                Duration::from_secs(20),
                |b| {
                    b["messages"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|m| m["id"] == id.as_str())
                },
            )
            .await;
    }

    // The second device holds no signing key: it cannot offer pairings or invites.
    let (status, body) = second.post("/v1/pairing", json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("not_admin"))
    );
    let (status, body) = second.post("/v1/invites", json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("not_admin"))
    );
}

#[tokio::test]
async fn bad_pairings_get_their_errors_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Node::start(&tmp.path().join("first")).await;
    let busy = Node::start(&tmp.path().join("busy")).await;
    befriend(&first, &busy).await;
    let fresh = Node::start(&tmp.path().join("fresh")).await;
    let (fresh_user, _) = fresh.ids().await;

    for body in [
        json!({"link": "volli://pair/garbage"}),
        json!({"link": "https://example.org/"}),
        json!({"code": "not a code"}),
        json!({"code": "1000-abandon-ability-able"}),
        json!({}),
        json!({"link": "volli://pair/x", "code": "1-abandon-ability-able"}),
    ] {
        let (status, answer) = fresh.post("/v1/pairing/join", body.clone()).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some("invalid_pairing")),
            "{body}"
        );
    }
    for body in [
        json!({"ttl_secs": 10}),
        json!({"ttl_secs": 7200}),
        json!({"permissions": ["everything"]}),
    ] {
        let (status, answer) = first.post("/v1/pairing", body.clone()).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some("invalid_pairing")),
            "{body}"
        );
    }

    // A node that has a contact would lose its own identity: refused.
    let (_, offer) = first.post("/v1/pairing", json!({})).await;
    let (status, answer) = busy
        .post("/v1/pairing/join", json!({"link": offer["link"]}))
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("node_not_empty"))
    );

    // An expired link (the same link, its expiry moved into the past).
    let link = volli_core::pairing::PairingLink::parse(offer["link"].as_str().unwrap()).unwrap();
    let volli_core::pairing::SessionRef::Link(session) = link.session() else {
        unreachable!()
    };
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&link.password());
    let expired = volli_core::pairing::PairingLink::new(
        link.user(),
        link.peer(),
        &link.addrs(),
        session,
        secret,
        volli_core::Timestamp::from_millis(1_000),
    );
    let (status, answer) = fresh
        .post("/v1/pairing/join", json!({"link": expired.to_link()}))
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (410, Some("pairing_expired"))
    );

    // Used: the first join takes the session, a second one is refused.
    let (status, _) = fresh
        .post("/v1/pairing/join", json!({"link": offer["link"]}))
        .await;
    assert_eq!(status, 202);
    let other = Node::start(&tmp.path().join("other")).await;
    let (status, answer) = other
        .post("/v1/pairing/join", json!({"link": offer["link"]}))
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("pairing_used"))
    );

    // Rejected: the joiner hears it and stays itself.
    let mut fresh_events = events(&fresh).await;
    let (status, decided) = first
        .post(
            &format!("/v1/pairing/{}/reject", offer["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!((status, decided["state"].as_str()), (200, Some("rejected")));
    next_event(
        &mut fresh_events,
        "pairing.failed",
        Duration::from_secs(30),
        |_| true,
    )
    .await;
    assert_eq!(fresh.ids().await.0, fresh_user);
    let (status, answer) = first
        .post(
            &format!("/v1/pairing/{}/approve", offer["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("pairing_not_pending"))
    );
    let (status, answer) = first
        .post(
            "/v1/pairing/00000000000000000000000000000000/approve",
            json!({}),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("unknown_pairing"))
    );

    // A wrong code ends that attempt only, and the existing device hears of it; the right
    // code then still works. The new node finds the device through the DHT connection it
    // has to it.
    let mut first_events = events(&first).await;
    let (_, offer) = first.post("/v1/pairing", json!({})).await;
    let code = offer["code"].as_str().unwrap().to_owned();
    let nameplate = code.split('-').next().unwrap();
    let joiner = Node::start_with(
        &tmp.path().join("joiner"),
        Options {
            args: vec!["--bootstrap".into(), first.p2p_addr().await],
            ..Options::default()
        },
    )
    .await;
    joiner
        .wait_for("/v1/peers", Duration::from_secs(20), |p| {
            p["peers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["connected"] == true)
        })
        .await;
    let wrong = format!("{nameplate}-abandon-ability-able");
    let (status, answer) = joiner
        .post("/v1/pairing/join", json!({"code": wrong}))
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("invalid_pairing")),
        "{answer}"
    );
    next_event(
        &mut first_events,
        "pairing.attempt_failed",
        Duration::from_secs(10),
        |e| e["id"] == offer["id"],
    )
    .await;
    let (status, answer) = joiner.post("/v1/pairing/join", json!({"code": code})).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["state"], "waiting_approval");
    let (_, me) = joiner.get("/v1/node").await;
    assert_ne!(
        me["user_id"],
        first.ids().await.0.as_str(),
        "still itself until approved"
    );
}

#[tokio::test]
async fn a_revoked_device_gets_nothing_new_and_contacts_stop_trusting_it() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Node::start(&tmp.path().join("first")).await;
    let carol = Node::start(&tmp.path().join("carol")).await;
    befriend(&first, &carol).await;
    let (alice, first_peer) = first.ids().await;
    let (carol_id, _) = carol.ids().await;
    let second = Node::start(&tmp.path().join("second")).await;
    let second_peer = pair(&first, &second, None).await;
    carol
        .wait_for(
            &format!("/v1/contacts/{alice}"),
            Duration::from_secs(20),
            |c| c["devices"].as_array().unwrap().len() == 2,
        )
        .await;

    // Sync works before the revocation.
    put_setting(&first, "before.revocation", json!(true)).await;
    second
        .wait_for("/v1/settings", Duration::from_secs(10), |s| {
            s["settings"]["before.revocation"] == true
        })
        .await;
    let (status, body) = first
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/devices/{first_peer}"),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("cannot_revoke_self"))
    );
    let (status, body) = second
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/devices/{first_peer}"),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("not_admin"))
    );
    let mut first_events = events(&first).await;
    let (status, _) = first
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/devices/{second_peer}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    next_event(
        &mut first_events,
        "device.revoked",
        Duration::from_secs(5),
        |e| e["peer_id"] == second_peer.as_str(),
    )
    .await;
    let (status, body) = first
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/devices/{second_peer}"),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_revoked"))
    );
    let (_, devices) = first.get("/v1/devices").await;
    assert!(
        devices["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["peer_id"] == second_peer.as_str() && d["revoked"] == true)
    );

    // Carol gets a card without it (and with the new message key).
    carol
        .wait_for(
            &format!("/v1/contacts/{alice}"),
            Duration::from_secs(20),
            |c| c["devices"].as_array().unwrap().len() == 1,
        )
        .await;
    // New edits no longer reach the revoked device.
    put_setting(&first, "after.revocation", json!(true)).await;
    let id = send(&carol, &alice, "not for the revoked device").await;
    first
        .wait_for(
            &format!("/v1/messages?with={carol_id}"),
            Duration::from_secs(20),
            |b| {
                b["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["id"] == id.as_str())
            },
        )
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(settings(&second).await.get("after.revocation").is_none());
    assert!(
        !conversation(&second, &carol_id)
            .await
            .iter()
            .any(|m| m["id"] == id.as_str())
    );
}

#[tokio::test]
async fn the_cli_pairs_a_device_with_a_link() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Node::start(&tmp.path().join("first")).await;
    let second = Node::start(&tmp.path().join("second")).await;
    let dir = |n: &Node| n.data_dir.to_str().unwrap().to_owned();
    let out = volli(&["--data-dir", &dir(&first), "pair", "--no-wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let link = text
        .lines()
        .find(|l| l.starts_with("volli://pair/"))
        .unwrap()
        .to_owned();
    assert!(text.lines().any(|l| l.starts_with("code: ")), "{text}");
    let out = volli(&[
        "--data-dir",
        &dir(&second),
        "pair",
        "join",
        &link,
        "--name",
        "tablet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("check code")
    );
    let (_, requests) = first.get("/v1/pairing").await;
    let id = requests["requests"][0]["id"].as_str().unwrap().to_owned();
    let out = volli(&["--data-dir", &dir(&first), "pair", "approve", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (user, _) = first.ids().await;
    second
        .wait_for("/v1/node", Duration::from_secs(30), |n| {
            n["user_id"] == user.as_str()
        })
        .await;
    let out = volli(&["--data-dir", &dir(&first), "devices"]);
    let listed = String::from_utf8(out.stdout).unwrap();
    assert!(listed.contains("tablet"), "{listed}");
}

#[tokio::test]
async fn a_device_killed_in_the_middle_of_its_first_sync_converges_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Node::start(&tmp.path().join("first")).await;
    let carol = Node::start(&tmp.path().join("carol")).await;
    befriend(&first, &carol).await;
    let (carol_id, _) = carol.ids().await;
    for i in 0..300 {
        send(
            &first,
            &carol_id,
            &format!("history {i} {}", "x".repeat(200)),
        )
        .await;
    }
    let mut second = Node::start(&tmp.path().join("second")).await;
    pair(&first, &second, None).await;
    second.kill();
    let second = Node::start(&tmp.path().join("second")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let theirs = summary(&second, &carol_id).await;
        if theirs.len() == 300
            && theirs
                .iter()
                .map(|(id, _)| id)
                .eq(summary(&first, &carol_id).await.iter().map(|(id, _)| id))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 300 after the restart",
            theirs.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn lan_node(ns: &str, addr: &str) -> Options {
    Options {
        netns: Some(ns.to_owned()),
        api_listen: Some(format!("{addr}:0")),
        p2p_listen: Some(format!("/ip4/{addr}/tcp/0")),
        config: "[network]\nlan = true\n".into(),
        ..Options::default()
    }
}

/// Two devices in separate network namespaces on one LAN pair with the short code (found
/// over mDNS), are partitioned for real (nftables drops every packet between them), edit
/// concurrently, and converge within 10 s of the partition healing.
#[tokio::test]
async fn devices_on_a_lan_pair_with_a_code_and_converge_after_a_partition() {
    if std::env::var_os("VOLLI_SKIP_NETNS").is_some() {
        eprintln!("skipped: VOLLI_SKIP_NETNS is set");
        return;
    }
    assert!(
        netns::available(),
        "run as root with iproute2, or set VOLLI_SKIP_NETNS=1"
    );
    assert!(
        netns::nft_available(),
        "nftables is missing: scripts/setup.sh installs it"
    );
    let mut lan = Lan::new();
    let (ns_a, addr_a) = lan.host();
    let (ns_b, addr_b) = lan.host();
    let tmp = tempfile::tempdir().unwrap();
    let first = Node::start_with(&tmp.path().join("a"), lan_node(&ns_a, &addr_a)).await;
    let second = Node::start_with(&tmp.path().join("b"), lan_node(&ns_b, &addr_b)).await;
    let (_, first_peer) = first.ids().await;
    second
        .wait_for("/v1/peers", Duration::from_secs(15), |l| {
            l["peers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["peer_id"] == first_peer.as_str())
        })
        .await;

    let (_, offer) = first.post("/v1/pairing", json!({})).await;
    let mut first_events = events(&first).await;
    let (status, joining) = second
        .post("/v1/pairing/join", json!({"code": offer["code"]}))
        .await;
    assert_eq!(status, 202, "{joining}");
    let request = next_event(
        &mut first_events,
        "pairing.request",
        Duration::from_secs(10),
        |_| true,
    )
    .await;
    assert_eq!(request["check_code"], joining["check_code"]);
    let (status, _) = first
        .post(
            &format!("/v1/pairing/{}/approve", offer["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (user, _) = first.ids().await;
    second
        .wait_for("/v1/node", Duration::from_secs(30), |n| {
            n["user_id"] == user.as_str()
        })
        .await;
    put_setting(&first, "before", json!(1)).await;
    second
        .wait_for("/v1/settings", Duration::from_secs(15), |s| {
            s["settings"]["before"] == 1
        })
        .await;

    netns::partition(&ns_a, &addr_a, &ns_b, &addr_b);
    for i in 0..5 {
        put_setting(&first, &format!("a{i}"), json!(i)).await;
        put_setting(&second, &format!("b{i}"), json!(i)).await;
    }
    put_setting(&first, "both", json!("from a")).await;
    put_setting(&second, "both", json!("from b")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        settings(&first).await.get("b0").is_none(),
        "the partition holds"
    );

    netns::heal(&ns_a, &ns_b);
    let healed = Instant::now();
    let deadline = healed + Duration::from_secs(10);
    loop {
        let (a, b) = (settings(&first).await, settings(&second).await);
        if a == b && a.get("b4").is_some() && a.get("a4").is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not converged 10 s after healing:\n{a}\n{b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "converged {:?} after the partition healed",
        healed.elapsed()
    );
}

#[tokio::test]
async fn a_file_goes_from_one_device_of_the_user_to_another() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Node::start(&tmp.path().join("first")).await;
    let second = Node::start(&tmp.path().join("second")).await;
    pair(&first, &second, None).await;
    let (me, _) = first.ids().await;
    let data: Vec<u8> = (0..(3 << 20) + 99).map(|i: u32| (i % 251) as u8).collect();
    let path = tmp.path().join("photo.raw");
    std::fs::write(&path, &data).unwrap();
    // To this user's own id: its other devices get it.
    let (status, t) = first
        .post(
            "/v1/transfers",
            json!({"to": me, "path": path.to_str().unwrap()}),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    let id = t["id"].as_str().unwrap().to_owned();
    second
        .wait_for(
            &format!("/v1/transfers/{id}"),
            Duration::from_secs(30),
            |t| t["state"] == "offered",
        )
        .await;
    let (status, _) = second
        .post(&format!("/v1/transfers/{id}/accept"), json!({}))
        .await;
    assert_eq!(status, 200);
    let done = second
        .wait_for(
            &format!("/v1/transfers/{id}"),
            Duration::from_secs(60),
            |t| t["state"] == "completed",
        )
        .await;
    assert_eq!(done["peer"], me.as_str());
    let bytes = reqwest::Client::new()
        .get(format!("{}/v1/transfers/{id}/content", second.url))
        .bearer_auth(&second.token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(bytes.as_ref() == data.as_slice());
}

/// Deleting a message, a whole conversation, and retention rules, through the API of either
/// device: the user's other device follows, the contact stays, bad input is refused.
#[tokio::test]
async fn deletions_and_retention_reach_every_device_of_the_user() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Node::start(&tmp.path().join("first")).await;
    let carol = Node::start(&tmp.path().join("carol")).await;
    befriend(&first, &carol).await;
    let second = Node::start(&tmp.path().join("second")).await;
    pair(&first, &second, None).await;
    let (alice, _) = first.ids().await;
    let (carol_id, _) = carol.ids().await;
    for text in ["keep 1", "delete me", "keep 2"] {
        send(&carol, &alice, text).await;
    }
    send(&first, &carol_id, "mine").await;
    let path = format!("/v1/messages?with={carol_id}");
    let count = |n: usize| move |b: &Value| b["messages"].as_array().unwrap().len() == n;
    for node in [&first, &second] {
        node.wait_for(&path, Duration::from_secs(30), count(4))
            .await;
    }
    let victim = conversation(&second, &carol_id)
        .await
        .into_iter()
        .find(|m| m["body"] == "delete me")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // One message, deleted on the second device; the first hears of it when it follows.
    let mut second_events = events(&second).await;
    let mut first_events = events(&first).await;
    let (status, _) = second
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/messages/{victim}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    for (events, within) in [(&mut second_events, 5), (&mut first_events, 30)] {
        let e = next_event(
            events,
            "messages.deleted",
            Duration::from_secs(within),
            |_| true,
        )
        .await;
        assert_eq!(e["with"], carol_id.as_str());
        assert_eq!(e["ids"], json!([victim]));
    }
    first
        .wait_for(&path, Duration::from_secs(30), count(3))
        .await;
    assert!(
        conversation(&first, &carol_id)
            .await
            .iter()
            .all(|m| m["id"] != victim.as_str())
    );
    let delete = |path: String| {
        let node = &first;
        async move { node.request(reqwest::Method::DELETE, &path, None).await }
    };
    let (status, body) = delete(format!("/v1/messages/{victim}")).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("unknown_message"))
    );
    let (status, body) = delete("/v1/messages/not-an-id".into()).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_message_id"))
    );
    let (status, body) = delete("/v1/conversations/not-a-user".into()).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_user_id"))
    );

    // Retention: bad rules are refused and change nothing; "keep the last 1" applies at once
    // on both devices.
    for bad in [
        json!({"default": {"days": 0}}),
        json!({"default": {"keep_last": 0}}),
        json!({"conversations": {"not-a-user": {"days": 3}}}),
        json!({"default": {"weeks": 3}}),
    ] {
        let (status, body) = first
            .request(reqwest::Method::PUT, "/v1/retention", Some(bad.clone()))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) = first
        .request(
            reqwest::Method::PUT,
            "/v1/settings/retention",
            Some(json!({"value": {"default": {"keep_last": 1}}})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("reserved_setting_key"))
    );
    assert_eq!(
        first.get("/v1/retention").await.1,
        json!({"default": {}, "conversations": {}})
    );
    assert_eq!(conversation(&first, &carol_id).await.len(), 3);
    let rules = json!({"default": {"keep_last": 2}, "conversations": {}});
    let (status, body) = first
        .request(reqwest::Method::PUT, "/v1/retention", Some(rules.clone()))
        .await;
    assert_eq!((status, body), (200, rules.clone()));
    for node in [&first, &second] {
        node.wait_for(&path, Duration::from_secs(30), count(2))
            .await;
        node.wait_for("/v1/retention", Duration::from_secs(30), |r| *r == rules)
            .await;
    }
    let left: Vec<Value> = conversation(&second, &carol_id)
        .await
        .iter()
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(left, [json!("keep 2"), json!("mine")], "the newest two");

    // The whole conversation; the contact stays.
    let (status, body) = delete(format!("/v1/conversations/{carol_id}")).await;
    assert_eq!((status, body), (200, json!({"deleted": 2})));
    for node in [&first, &second] {
        node.wait_for(&path, Duration::from_secs(30), count(0))
            .await;
    }
    let (_, contacts) = first.get("/v1/contacts").await;
    assert!(contacts.to_string().contains(&carol_id), "{contacts}");
}
