//! Hostile peers against real nodes: a stranger, a removed contact and a flooding contact,
//! speaking Volli's libp2p protocols directly (see `volli_tests::hostile`). Each test pins a
//! defect found by an adversarial review, so it stays fixed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::json;
use volli_core::wire::{self, Deliver, Delivered, RelayRequest, RelayResponse};
use volli_core::{MessageId, Receipt, Timestamp};
use volli_net::Protocol;
use volli_tests::hostile::{HostilePeer, address_of};
use volli_tests::{
    Node, Options, befriend, conversation, events, free_port, next_event, on_port, send,
    wait_until_relay_of,
};

async fn relay_request(
    peer: &HostilePeer,
    node: &Node,
    request: &RelayRequest,
) -> Result<RelayResponse, String> {
    let (id, addr) = address_of(node).await;
    let bytes = peer
        .raw(id, &addr, Protocol::Relay, wire::encode(request))
        .await?;
    wire::decode(&bytes, Protocol::Relay.max_response()).map_err(|e| e.to_string())
}

/// Finding 1: a removed contact cannot come back with the invite it redeemed before, and can
/// no longer message the user; a new invite brings it back.
#[tokio::test]
async fn a_removed_contact_stays_removed_until_invited_again() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let alice = Node::start_with(&tmp.path().join("alice"), on_port(port)).await;
    let bob = Node::start(&tmp.path().join("bob")).await;
    let (alice_id, _) = alice.ids().await;
    let (bob_id, _) = bob.ids().await;
    let (_, invite) = alice.post("/v1/invites", json!({"max_uses": 5})).await;
    let link = invite["link"].as_str().unwrap().to_owned();
    let (status, _) = bob.post("/v1/contacts", json!({"invite": link})).await;
    assert_eq!(status, 201);

    let mut alice_events = events(&alice).await;
    let (status, _) = alice
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/contacts/{bob_id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    next_event(
        &mut alice_events,
        "contact.removed",
        Duration::from_secs(5),
        |e| e["user_id"] == bob_id.as_str(),
    )
    .await;

    // The same (multi-use, unexpired) invite again, through the API and over the wire.
    let (status, body) = bob.post("/v1/contacts", json!({"invite": link})).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "invite_refused");
    let (_, contacts) = alice.get("/v1/contacts").await;
    assert_eq!(
        contacts["contacts"].as_array().unwrap().len(),
        0,
        "{contacts}"
    );

    // Bob still has Alice; what he sends is refused and never shown to her.
    let id = send(&bob, &alice_id, "let me back in").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(conversation(&alice, &bob_id).await.is_empty());
    let mine = conversation(&bob, &alice_id).await;
    assert_eq!(mine[0]["id"], id.as_str());
    assert_ne!(mine[0]["status"], "delivered");

    // Restarting Alice changes nothing.
    let mut alice = alice;
    alice.terminate();
    let alice = Node::start_with(&tmp.path().join("alice"), on_port(port)).await;
    let (status, _) = bob.post("/v1/contacts", json!({"invite": link})).await;
    assert_eq!(status, 403);

    // A new invite is Alice's choice: it works.
    let (_, fresh) = alice.post("/v1/invites", json!({})).await;
    let (status, body) = bob
        .post("/v1/contacts", json!({"invite": fresh["link"]}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (_, contacts) = alice.get("/v1/contacts").await;
    assert_eq!(contacts["contacts"].as_array().unwrap().len(), 1);

    // Finding 7: the message Alice refused while Bob was not her contact was not given up;
    // now that he is again, it arrives.
    bob.wait_for(
        &format!("/v1/messages?with={alice_id}"),
        Duration::from_secs(30),
        |b| b["messages"][0]["status"] == "delivered",
    )
    .await;
    assert_eq!(conversation(&alice, &bob_id).await.len(), 1);
}

/// Finding 2: offline delivery with long messages — pages of envelopes are bounded by bytes,
/// so dozens of the largest messages all arrive, with messages of every padding bucket.
#[tokio::test]
async fn long_messages_of_every_size_reach_an_offline_recipient_through_a_relay() {
    let tmp = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port(), free_port());
    let mut alice = Node::start_with(&tmp.path().join("alice"), on_port(ports.0)).await;
    let mut bob = Node::start_with(&tmp.path().join("bob"), on_port(ports.1)).await;
    let relay = Node::start_with(&tmp.path().join("relay"), on_port(ports.2)).await;
    befriend(&relay, &alice).await;
    befriend(&relay, &bob).await;
    befriend(&alice, &bob).await;
    let (alice_id, _) = alice.ids().await;
    let (bob_id, _) = bob.ids().await;
    let (relay_id, _) = relay.ids().await;
    wait_until_relay_of(&alice, &bob_id, &relay_id).await;
    assert!(bob.terminate().success());

    // One message in each padding bucket (512 B … 128 KiB), then 36 of the largest: about
    // 4.7 MiB in all, more than one response may carry.
    let max = volli_core::envelope::MAX_BODY_LEN;
    let mut sizes = vec![10, 1_500, 7_000, 30_000, max];
    sizes.extend(std::iter::repeat_n(max, 36));
    let mut ids = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let body = format!("{i:04}{}", "x".repeat(size - 4));
        ids.push(send(&alice, &bob_id, &body).await);
    }
    // Each message, and the Welcome into the conversation the first one started on MLS.
    relay
        .wait_for("/v1/relay", Duration::from_secs(60), |h| {
            h["envelopes"] == sizes.len() + 1
        })
        .await;
    assert!(alice.terminate().success());

    let bob = Node::start_with(&tmp.path().join("bob"), on_port(ports.1)).await;
    let got = bob
        .wait_for(
            &format!("/v1/messages?with={alice_id}&limit=500"),
            Duration::from_secs(60),
            |b| b["messages"].as_array().unwrap().len() == sizes.len(),
        )
        .await;
    for m in got["messages"].as_array().unwrap() {
        let i: usize = m["body"].as_str().unwrap()[..4].parse().unwrap();
        assert_eq!(m["body"].as_str().unwrap().len(), sizes[i]);
    }
    relay
        .wait_for("/v1/relay", Duration::from_secs(20), |h| {
            h["envelopes"] == 0
        })
        .await;
}

/// A contact's message latency, one message at a time, over `n` messages: (p50, p99).
async fn latencies(from: &Node, to: &Node, n: usize) -> (Duration, Duration) {
    let (to_id, _) = to.ids().await;
    let mut stream = events(to).await;
    let mut times = Vec::new();
    for i in 0..n {
        let start = Instant::now();
        send(from, &to_id, &format!("ping {i}")).await;
        loop {
            let e = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .unwrap()
                .unwrap();
            if e["type"] == "message.received" {
                break;
            }
        }
        times.push(start.elapsed());
    }
    times.sort();
    (times[n / 2], times[(n * 99) / 100])
}

/// Finding 3: a stranger that never says hello and floods relay requests (and connects and
/// disconnects over and over) does not delay a contact's messages.
#[tokio::test]
async fn a_flooding_stranger_does_not_delay_a_contacts_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = Node::start(&tmp.path().join("alice")).await;
    let bob = Node::start(&tmp.path().join("bob")).await;
    befriend(&alice, &bob).await;
    latencies(&alice, &bob, 20).await; // warm up
    let (base50, base99) = latencies(&alice, &bob, 200).await;

    // One stranger at a time, about 50 well-formed relay requests a second without a hello,
    // reconnecting as a new peer every 40 requests.
    let (bob_peer, bob_addr) = address_of(&bob).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attacker = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut refused = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let stranger = HostilePeer::stranger().await;
                for _ in 0..40 {
                    let request = wire::encode(&RelayRequest::Fetch { limit: 64 });
                    let call = stranger.raw(bob_peer, &bob_addr, Protocol::Relay, request);
                    if let Ok(bytes) = call.await
                        && let Ok(RelayResponse::Refused(_)) =
                            wire::decode(&bytes, Protocol::Relay.max_response())
                    {
                        refused += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                stranger.net.disconnect(bob_peer).await;
                stranger.net.shutdown().await;
            }
            refused
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (hit50, hit99) = latencies(&alice, &bob, 200).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let refused = attacker.await.unwrap();
    println!(
        "contact's latency without the flood p50 {base50:?} p99 {base99:?}; during it p50 {hit50:?} p99 {hit99:?}; {refused} stranger requests refused"
    );
    assert!(refused > 50, "the flood ran ({refused} refusals)");
    // Within 2× of the undisturbed tail (with a millisecond of slack for a noisy machine).
    assert!(
        hit99 <= base99 * 2 + Duration::from_millis(1),
        "p99 {hit99:?} during the flood vs {base99:?} without"
    );
    // Bob's connection events still flow: Alice is still connected and he still lists her.
    let (alice_id, _) = alice.ids().await;
    let (_, peers) = bob.get("/v1/peers").await;
    assert!(
        peers["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["user_id"] == alice_id.as_str() && p["connected"] == true)
    );
}

/// Finding 4: a stranger — even one with a valid certificate of its own user — gets nothing
/// but hellos and invites: no relay service, no receipts stored, no messages taken.
#[tokio::test]
async fn strangers_get_only_hellos_and_invites() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = Node::start(&tmp.path().join("alice")).await;
    let bob = Node::start(&tmp.path().join("bob")).await;
    befriend(&alice, &bob).await;
    let (alice_peer, alice_addr) = address_of(&alice).await;
    let stranger = HostilePeer::stranger().await;
    stranger.hello(alice_peer, &alice_addr).await.unwrap();

    let receipt = Receipt::issue(
        &volli_core::Signer::User(&stranger.user),
        MessageId::random().unwrap(),
        stranger.user_id(),
        Timestamp::now(),
    );
    for request in [
        RelayRequest::DepositReceipts {
            receipts: vec![receipt; 100],
        },
        RelayRequest::Fetch { limit: 64 },
        RelayRequest::FetchReceipts { limit: 64 },
        RelayRequest::Volunteer,
        RelayRequest::Card(stranger.card().to_bytes()),
    ] {
        match relay_request(&stranger, &alice, &request).await {
            Ok(RelayResponse::Refused(reason)) => assert!(reason.contains("contacts"), "{reason}"),
            other => panic!("{request:?} got {other:?}"),
        }
    }
    // A message from a stranger: refused before anything is opened.
    let deliver = wire::encode(&Deliver {
        version: 1,
        envelope: vec![1; 2_000],
    });
    let answer = stranger
        .raw(alice_peer, &alice_addr, Protocol::Message, deliver)
        .await
        .unwrap();
    assert!(matches!(
        wire::decode::<Delivered>(&answer, 4096),
        Ok(Delivered::Refused(_))
    ));
    // Sync is for the user's own devices.
    let sync = stranger
        .raw(alice_peer, &alice_addr, Protocol::Sync, vec![0; 64])
        .await;
    assert!(sync.is_err(), "{sync:?}");

    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite:{}?mode=ro",
        tmp.path().join("alice/volli.db").display()
    ))
    .await
    .unwrap();
    let (receipts,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM relay_receipts")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(receipts, 0);
    db.close().await;
}

/// Finding 5: a contact can send at most its daily quota; the rest waits at the sender; and
/// the devices Alice knows for a contact are the ones its card lists, whatever peer ids
/// present certificates for it.
#[tokio::test]
async fn a_flooding_contact_is_held_to_its_quota_and_its_card() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = Node::start_with(
        &tmp.path().join("alice"),
        Options {
            config: "[messages]\ninbound_per_day = 30\n".into(),
            ..Options::default()
        },
    )
    .await;
    let bob = Node::start(&tmp.path().join("bob")).await;
    befriend(&alice, &bob).await;
    let (alice_id, _) = alice.ids().await;
    let (bob_id, _) = bob.ids().await;
    for i in 0..45 {
        send(&bob, &alice_id, &format!("flood {i}")).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(conversation(&alice, &bob_id).await.len(), 30);
    let delivered = conversation(&bob, &alice_id)
        .await
        .iter()
        .filter(|m| m["status"] == "delivered")
        .count();
    assert_eq!(delivered, 30, "the rest waits at the sender");

    // A contact made by a hand-driven peer, then twenty more devices of that user say hello.
    let contact = HostilePeer::stranger().await;
    let (_, invite) = alice.post("/v1/invites", json!({})).await;
    let answer = contact.redeem(invite["link"].as_str().unwrap()).await;
    assert!(
        matches!(answer, volli_core::wire::RedeemResponse::Accepted { .. }),
        "{answer:?}"
    );
    let (alice_peer, alice_addr) = address_of(&alice).await;
    for _ in 0..20 {
        let device = HostilePeer::start(contact.user.clone()).await;
        device.hello(alice_peer, &alice_addr).await.unwrap();
    }
    let (_, them) = alice
        .get(&format!("/v1/contacts/{}", contact.user_id()))
        .await;
    assert_eq!(them["devices"].as_array().unwrap().len(), 1, "{them}");
}

/// Finding 8: the relay policy is the one configured, not the first enabled plugin by name;
/// when it is not running, the node holds nothing for anyone.
#[tokio::test]
async fn the_configured_relay_policy_decides() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Node::start_with(
        &tmp.path().join("relay"),
        Options {
            config: "[relay]\npolicy = \"no-such-policy\"\n".into(),
            ..Options::default()
        },
    )
    .await;
    let bob = Node::start(&tmp.path().join("bob")).await;
    befriend(&relay, &bob).await;
    let (bob_id, _) = bob.ids().await;
    // Bob asks his only contact to hold mail for him; it cannot agree.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, card) = relay.get(&format!("/v1/contacts/{bob_id}")).await;
    assert_eq!(card["relays"], json!([]), "{card}");
}

/// Finding 8: an API listening beyond loopback is warned about at start.
#[tokio::test]
async fn an_api_beyond_loopback_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start_with(
        &tmp.path().join("open"),
        Options {
            api_listen: Some("0.0.0.0:0".into()),
            ..Options::default()
        },
    )
    .await;
    assert!(
        node.log().contains("the API listens beyond this machine"),
        "{}",
        node.log()
    );
}

/// Finding 7: a message is deposited again on every attempt, so a relay that lost it (a
/// restore from an old backup, a disk that filled) gets it back.
#[tokio::test]
async fn a_relay_that_lost_a_message_gets_it_again() {
    let tmp = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port(), free_port());
    let alice = Node::start_with(&tmp.path().join("alice"), on_port(ports.0)).await;
    let mut bob = Node::start_with(&tmp.path().join("bob"), on_port(ports.1)).await;
    let mut relay = Node::start_with(&tmp.path().join("relay"), on_port(ports.2)).await;
    befriend(&relay, &alice).await;
    befriend(&relay, &bob).await;
    befriend(&alice, &bob).await;
    let (bob_id, _) = bob.ids().await;
    let (relay_id, _) = relay.ids().await;
    wait_until_relay_of(&alice, &bob_id, &relay_id).await;
    assert!(bob.terminate().success());
    // The message, and the Welcome into the conversation it starts on MLS.
    send(&alice, &bob_id, "keep this safe").await;
    relay
        .wait_for("/v1/relay", Duration::from_secs(20), |h| {
            h["envelopes"] == 2
        })
        .await;

    // The relay loses what it held.
    assert!(relay.terminate().success());
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite:{}",
        tmp.path().join("relay/volli.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("DELETE FROM relay_held")
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let relay = Node::start_with(&tmp.path().join("relay"), on_port(ports.2)).await;
    relay
        .wait_for("/v1/relay", Duration::from_secs(60), |h| {
            h["envelopes"] == 2
        })
        .await;
}

/// A burst of 1,000 unauthenticated requests from one address: past the public burst they
/// get 429 with `Retry-After`, while the owner's client and a client on another address are
/// served as usual.
#[tokio::test]
async fn an_unauthenticated_burst_is_limited_and_nobody_else_notices() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let flooder = reqwest::Client::builder()
        .local_address("127.0.0.1".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let url = node.url.clone();
    let burst = tokio::spawn(async move {
        let calls = (0..1_000).map(|i| {
            let (flooder, url) = (flooder.clone(), url.clone());
            async move {
                // Without a token: public routes and refused logins alike are counted.
                let path = if i % 2 == 0 { "/health" } else { "/v1/node" };
                let r = flooder.get(format!("{url}{path}")).send().await.unwrap();
                (
                    r.status().as_u16(),
                    r.headers().get("retry-after").is_some(),
                )
            }
        });
        futures::stream::iter(calls)
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await
    });
    // Meanwhile the owner's client, and a neighbour on another loopback address.
    let neighbour = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let start = Instant::now();
        let (status, _) = node.get("/v1/node").await;
        assert_eq!(status, 200);
        let health = neighbour
            .get(format!("{}/health", node.url))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        slowest = slowest.max(start.elapsed());
    }
    let answers = burst.await.unwrap();
    let limited = answers.iter().filter(|(s, _)| *s == 429).count();
    assert!(limited >= 800, "{limited} of 1,000 were limited");
    assert!(
        answers
            .iter()
            .filter(|(s, _)| *s == 429)
            .all(|(_, retry)| *retry),
        "429 carries Retry-After"
    );
    assert!(answers.iter().all(|(s, _)| [200, 401, 429].contains(s)));
    assert!(
        slowest < Duration::from_secs(1),
        "the others waited {slowest:?}"
    );
}

/// A web page on another site that points its name at 127.0.0.1 (DNS rebinding) reaches the
/// API from the user's browser; its requests name that site as `Host`. They are refused
/// before they count against the per-address limit, so the admin login stays open.
#[tokio::test]
async fn a_rebinding_web_page_is_refused_and_cannot_lock_out_the_admin_login() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node")).await;
    let page = reqwest::Client::new();
    let calls = (0..500).map(|_| {
        let (page, url) = (page.clone(), node.url.clone());
        async move {
            let r = page
                .get(format!("{url}/health"))
                .header("host", "evil.example.com:8470")
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            (
                status,
                body["error"]["code"].as_str().unwrap_or("").to_owned(),
            )
        }
    });
    let answers: Vec<_> = futures::stream::iter(calls)
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(
        answers
            .iter()
            .all(|(s, code)| *s == 421 && code == "host_not_allowed"),
        "{:?}",
        &answers[..3]
    );
    // The login page, from the same address, is not rate limited: a wrong code is a 401.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/admin/session", node.url))
        .json(&json!({"code": "not-a-code"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Names the node answers to.
    let port = node.url.rsplit(':').next().unwrap().to_owned();
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let r = reqwest::Client::new()
            .get(format!("{}/health", node.url))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{host}");
    }
}

/// Strangers who open connections to the bulk port and say nothing (from one address, as
/// many as they like, over and over) do not keep a contact's download off it.
#[tokio::test]
async fn idle_strangers_on_the_bulk_port_do_not_push_a_download_off_it() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let alice = Node::start_with(
        &tmp.path().join("alice"),
        Options {
            config: format!("[files]\nbulk_listen = [\"127.0.0.1:{port}\"]\n"),
            ..Options::default()
        },
    )
    .await;
    let bob = Node::start_with(
        &tmp.path().join("bob"),
        Options {
            env: vec![(
                "RUST_LOG".into(),
                "info,volli_node::files=debug,loro_internal=warn".into(),
            )],
            ..Options::default()
        },
    )
    .await;
    befriend(&alice, &bob).await;
    let (bob_id, _) = bob.ids().await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut holders = Vec::new();
    for _ in 0..100 {
        let stop = Arc::clone(&stop);
        holders.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                let Ok(mut stream) = socket
                    .connect(format!("127.0.0.1:{port}").parse().unwrap())
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                // Hold it, reading whatever comes, until the node closes it.
                let mut buf = [0u8; 64];
                while let Ok(n) = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let file = tmp.path().join("file.bin");
    std::fs::write(&file, vec![7u8; 8 << 20]).unwrap();
    let (status, offer) = alice
        .post("/v1/transfers", json!({"to": bob_id, "path": file}))
        .await;
    assert_eq!(status, 201, "{offer}");
    let id = offer["id"].as_str().unwrap().to_owned();
    bob.wait_for(
        &format!("/v1/transfers/{id}"),
        Duration::from_secs(20),
        |t| t["state"] == "offered",
    )
    .await;
    let (status, _) = bob
        .post(&format!("/v1/transfers/{id}/accept"), json!({}))
        .await;
    assert_eq!(status, 200);
    bob.wait_for(
        &format!("/v1/transfers/{id}"),
        Duration::from_secs(60),
        |t| t["state"] == "completed",
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in holders {
        h.abort();
    }
    assert!(
        bob.log().contains("fetching on the bulk channel"),
        "the download did not get onto the bulk channel:\n{}",
        bob.log()
    );
}
