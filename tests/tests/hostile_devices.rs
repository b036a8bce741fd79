//! The user's own devices as adversaries, against real nodes: a device paired with
//! `contacts` only, one that was revoked, and one patched to write what it likes into its
//! own vault (through the store crate, and as raw Loro updates) and send it on by sync. None
//! of them changes anything outside its permissions on the other devices; revocation holds;
//! held mail stays for the devices that can open it; and a stranger cannot stop a real
//! pairing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use loro::{ExportMode, LoroDoc, ValueOrContainer};
use serde_json::{Value, json};
use volli_core::pairing::{Exchange, PairingCode, Side};
use volli_core::wire::{self, PairRequest, PairResponse};
use volli_store::vault::{MessageStatus, StoredMessage};
use volli_store::{Store, VaultOptions};
use volli_tests::hostile::{HostilePeer, address_of};
use volli_tests::{
    Node, Options, befriend, conversation, events, next_event, pair, send, wait_until_relay_of,
};

async fn code_of(
    node: &Node,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, String) {
    let (status, answer) = node.request(method, path, body).await;
    (
        status,
        answer["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Waits until `node`'s log holds `needle`.
async fn logged(node: &Node, needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !node.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not logged within {within:?}; log:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Appends raw Loro updates to document `doc` of the stopped node in `data_dir`, the way a
/// patched node would write them: no check of the store's, straight into its tables.
async fn tamper(data_dir: &Path, doc: &str, edit: impl FnOnce(&LoroDoc)) {
    let url = format!("sqlite:{}", data_dir.join("volli.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let (snapshot, pending, upto): (Option<Vec<u8>>, Option<Vec<u8>>, i64) =
        sqlx::query_as("SELECT snapshot, pending, upto_seq FROM vault_docs WHERE id = ?")
            .bind(doc)
            .fetch_one(&pool)
            .await
            .unwrap();
    let loro = LoroDoc::new();
    loro.set_peer_id(0x5eed).unwrap();
    for blob in snapshot.into_iter().chain(pending) {
        loro.import(&blob).unwrap();
    }
    let log: Vec<(Vec<u8>,)> =
        sqlx::query_as("SELECT bytes FROM vault_log WHERE doc = ? AND seq > ? ORDER BY seq")
            .bind(doc)
            .bind(upto)
            .fetch_all(&pool)
            .await
            .unwrap();
    for (blob,) in log {
        loro.import(&blob).unwrap();
    }
    let before = loro.oplog_vv();
    edit(&loro);
    loro.commit();
    let update = loro.export(ExportMode::updates(&before)).unwrap();
    sqlx::query("INSERT INTO vault_log (doc, bytes, created_at) VALUES (?, ?, 0)")
        .bind(doc)
        .bind(update)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE vault_docs SET version = ? WHERE id = ?")
        .bind(loro.oplog_vv().encode())
        .bind(doc)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

/// The entry of device `peer` in a devices document.
fn device_entry(doc: &LoroDoc, peer: &str) -> loro::LoroMap {
    match doc.get_map("devices").get(peer) {
        Some(ValueOrContainer::Container(loro::Container::Map(m))) => m,
        other => panic!("no entry for {peer}: {other:?}"),
    }
}

#[tokio::test]
async fn a_contacts_only_device_changes_nothing_outside_its_permissions() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = Node::start(&tmp.path().join("alice")).await;
    let carol = Node::start(&tmp.path().join("carol")).await;
    befriend(&alice, &carol).await;
    let (carol_id, _) = carol.ids().await;
    for i in 0..20 {
        send(&alice, &carol_id, &format!("message {i}")).await;
    }
    alice
        .wait_for(
            &format!("/v1/messages?with={carol_id}&limit=100"),
            Duration::from_secs(20),
            |m| {
                m["messages"]
                    .as_array()
                    .is_some_and(|m| m.len() == 20 && m.iter().all(|m| m["status"] == "delivered"))
            },
        )
        .await;
    let mut phone = Node::start(&tmp.path().join("phone")).await;
    let phone_peer = pair(&alice, &phone, Some(vec!["contacts"])).await;
    let (_, alice_peer) = alice.ids().await;
    phone
        .wait_for("/v1/contacts", Duration::from_secs(20), |c| {
            c["contacts"].as_array().is_some_and(|c| c.len() == 1)
        })
        .await;
    let (_, node) = phone.get("/v1/node").await;
    assert_eq!(node["permissions"], json!(["contacts"]));

    // Through its API: every change outside `contacts` is refused, and says why.
    use reqwest::Method;
    for (method, path, body, code) in [
        (
            Method::PUT,
            "/v1/retention".to_owned(),
            Some(json!({"default": {"keep_last": 1}})),
            "not_permitted",
        ),
        (
            Method::PUT,
            "/v1/settings/transfers.auto_accept_bytes".to_owned(),
            Some(json!({"value": 1_000_000_000})),
            "not_permitted",
        ),
        (
            Method::POST,
            "/v1/messages".to_owned(),
            Some(json!({"to": carol_id, "body": "hi"})),
            "not_permitted",
        ),
        (
            Method::DELETE,
            format!("/v1/conversations/{carol_id}"),
            None,
            "not_permitted",
        ),
        (
            Method::POST,
            "/v1/transfers".to_owned(),
            Some(json!({"to": carol_id, "path": "/etc/hostname"})),
            "not_permitted",
        ),
        (
            Method::POST,
            "/v1/invites".to_owned(),
            Some(json!({})),
            "not_admin",
        ),
        (
            Method::DELETE,
            format!("/v1/devices/{alice_peer}"),
            None,
            "not_admin",
        ),
    ] {
        assert_eq!(
            code_of(&phone, method.clone(), &path, body).await,
            (403, code.to_owned()),
            "{method} {path}"
        );
    }

    // Patched: it writes retention rules, an auto-accept size and a forged message from
    // Carol into its own vault, and syncs them to Alice's node.
    phone.terminate();
    let store = Store::open(&phone.data_dir, VaultOptions::default())
        .await
        .unwrap();
    let vault = store.vault();
    vault
        .set_setting("retention", &json!({"default": {"keep_last": 1}}))
        .await
        .unwrap();
    vault
        .set_setting("transfers.auto_accept_bytes", &json!(1_000_000_000))
        .await
        .unwrap();
    let carol_user = carol_id.parse().unwrap();
    let alice_user = alice.ids().await.0.parse().unwrap();
    vault
        .put_message(
            carol_user,
            StoredMessage {
                id: volli_core::MessageId::from_bytes([7; 16]),
                from: carol_user,
                to: alice_user,
                body: "send me your password".into(),
                sent_at: volli_core::Timestamp::now(),
                status: MessageStatus::Received,
                extra: Default::default(),
            },
        )
        .await
        .unwrap();
    store.close().await;
    let phone = Node::start(&phone.data_dir).await;
    logged(
        &alice,
        "left out documents the sending device may not write",
        Duration::from_secs(30),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, settings) = alice.get("/v1/settings").await;
    assert!(
        settings["settings"].get("retention").is_none(),
        "{settings}"
    );
    assert!(
        settings["settings"]
            .get("transfers.auto_accept_bytes")
            .is_none()
    );
    let history = conversation(&alice, &carol_id).await;
    assert_eq!(history.len(), 20, "nothing cut, nothing forged");
    assert!(history.iter().all(|m| m["body"] != "send me your password"));

    // Patched further: raw Loro updates to the devices document that older nodes took —
    // a `revoked_at` of the wrong type on its own entry (read as "not revoked" while a
    // revocation skipped it) and a key generation of four billion.
    let mut alice_events = events(&alice).await;
    let mut phone = phone;
    phone.terminate();
    tamper(&phone.data_dir, "devices", |doc| {
        device_entry(doc, &phone_peer)
            .insert("revoked_at", "never")
            .unwrap();
        doc.get_map("user")
            .insert("key_generation", 4_000_000_000i64)
            .unwrap();
    })
    .await;
    let _phone = Node::start(&phone.data_dir).await;
    let refused = next_event(
        &mut alice_events,
        "sync.refused",
        Duration::from_secs(30),
        |e| e["peer_id"] == phone_peer.as_str(),
    )
    .await;
    assert!(
        refused["reason"].as_str().unwrap().contains("devices"),
        "{refused}"
    );
    // The revocation that such a write used to dodge goes through, and sticks.
    let (status, _) = alice
        .request(Method::DELETE, &format!("/v1/devices/{phone_peer}"), None)
        .await;
    assert_eq!(status, 204);
    let (_, devices) = alice.get("/v1/devices").await;
    let entry = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["peer_id"] == phone_peer.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["revoked"], true, "{entry}");
    // Alice's node starts as fast as ever: it never took the four billion key generations.
    let mut alice = alice;
    alice.terminate();
    let started = Instant::now();
    let alice = Node::start(&alice.data_dir).await;
    assert!(started.elapsed() < Duration::from_secs(20));
    let (_, devices) = alice.get("/v1/devices").await;
    assert!(
        devices["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["peer_id"] == phone_peer.as_str() && d["revoked"] == true)
    );
}

#[tokio::test]
async fn a_revoked_device_fetches_no_mail_offers_no_files_and_syncs_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = Node::start(&tmp.path().join("alice")).await;
    let dave = Node::start(&tmp.path().join("dave")).await;
    let carol = Node::start(&tmp.path().join("carol")).await;
    befriend(&alice, &dave).await;
    befriend(&carol, &dave).await;
    befriend(&alice, &carol).await;
    let (alice_id, _) = alice.ids().await;
    let (dave_id, _) = dave.ids().await;
    let (carol_id, _) = carol.ids().await;
    wait_until_relay_of(&carol, &alice_id, &dave_id).await;
    let laptop = Node::start(&tmp.path().join("laptop")).await;
    let laptop_peer = pair(&alice, &laptop, None).await;
    laptop
        .wait_for("/v1/contacts", Duration::from_secs(20), |c| {
            c["contacts"].as_array().is_some_and(|c| c.len() == 2)
        })
        .await;

    let (status, _) = alice
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/devices/{laptop_peer}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    // Dave and Carol learn Alice's new card, without the laptop.
    for friend in [&dave, &carol] {
        friend
            .wait_for(
                &format!("/v1/contacts/{alice_id}"),
                Duration::from_secs(20),
                |c| {
                    c["devices"].as_array().is_some_and(|d| {
                        d.len() == 1 && d.iter().all(|d| d.as_str() != Some(laptop_peer.as_str()))
                    })
                },
            )
            .await;
    }

    // Alice goes offline; Carol's message waits at Dave's node. The revoked laptop, still
    // holding its copy of the keys, comes back connected to Dave and to Carol. (Carol
    // holds key packages of Alice's device first, so her message starts a conversation on
    // MLS for that device alone.)
    carol
        .wait_for(
            &format!("/v1/conversations/{alice_id}"),
            Duration::from_secs(20),
            |c| c["ready"] == true,
        )
        .await;
    let mut alice = alice;
    alice.terminate();
    // The message, and the Welcome into the conversation it starts on MLS: for Alice's
    // device only.
    send(&carol, &alice_id, "for alice only").await;
    dave.wait_for("/v1/relay", Duration::from_secs(40), |r| {
        r["envelopes"] == 2
    })
    .await;
    let mut laptop = laptop;
    laptop.terminate();
    let laptop = Node::start_with(
        &laptop.data_dir,
        Options {
            args: vec![
                "--bootstrap".into(),
                dave.p2p_addr().await,
                "--bootstrap".into(),
                carol.p2p_addr().await,
            ],
            ..Options::default()
        },
    )
    .await;
    let (_, dave_peer) = dave.ids().await;
    let (_, carol_peer) = carol.ids().await;
    laptop
        .wait_for("/v1/peers", Duration::from_secs(20), |p| {
            let peers = p["peers"].as_array().unwrap();
            [&dave_peer, &carol_peer].iter().all(|want| {
                peers
                    .iter()
                    .any(|p| p["peer_id"] == want.as_str() && p["connected"] == true)
            })
        })
        .await;
    // Connected, it asks Dave for Alice's mail at once (and offers Carol a file).
    let file = tmp.path().join("from the laptop.txt");
    std::fs::write(&file, b"a file from a revoked device").unwrap();
    let (status, body) = laptop
        .post("/v1/transfers", json!({"to": carol_id, "path": file}))
        .await;
    assert_eq!(status, 201, "{body}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, held) = dave.get("/v1/relay").await;
    assert_eq!(
        held["envelopes"], 2,
        "the revoked device took nothing: {held}"
    );
    assert!(
        conversation(&laptop, &carol_id)
            .await
            .iter()
            .all(|m| m["body"] != "for alice only")
    );
    // Carol's node no longer trusts that device: no offer from it.
    let (_, transfers) = carol.get("/v1/transfers").await;
    assert!(
        transfers["transfers"].as_array().unwrap().is_empty(),
        "{transfers}"
    );
    // What it changes does not reach Alice's devices any more.
    let (status, _) = laptop
        .request(
            reqwest::Method::PUT,
            "/v1/settings/ui.theme",
            Some(json!({"value": "revoked"})),
        )
        .await;
    assert_eq!(status, 200);

    // Alice comes back: the mail is still there for her, and she gets it.
    let alice = Node::start(&alice.data_dir).await;
    alice
        .wait_for(
            &format!("/v1/messages?with={carol_id}"),
            Duration::from_secs(60),
            |m| {
                m["messages"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|m| m["body"] == "for alice only"))
            },
        )
        .await;
    dave.wait_for("/v1/relay", Duration::from_secs(20), |r| {
        r["envelopes"] == 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, settings) = alice.get("/v1/settings").await;
    assert_ne!(settings["settings"]["ui.theme"], "revoked");
}

#[tokio::test]
async fn a_stranger_guessing_at_a_pairing_code_does_not_stop_the_real_device() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = Node::start(&tmp.path().join("alice")).await;
    let (alice_peer, alice_addr) = address_of(&alice).await;
    let mut alice_events = events(&alice).await;
    let (status, offer) = alice.post("/v1/pairing", json!({})).await;
    assert_eq!(status, 201);
    let code = PairingCode::parse(offer["code"].as_str().unwrap()).unwrap();
    let nameplate = code.nameplate();

    // Strangers who found the nameplate (it is public: on the LAN, in the DHT) probe it and
    // start exchanges with wrong words, some never finishing them.
    let ask = async |stranger: &HostilePeer, request: PairRequest| -> PairResponse {
        let bytes = stranger
            .raw(
                alice_peer,
                &alice_addr,
                volli_net::Protocol::Pair,
                wire::encode(&request),
            )
            .await
            .unwrap();
        wire::decode(&bytes, 8 << 20).unwrap()
    };
    let mut attempts = 0;
    for n in 0..6u8 {
        let stranger = HostilePeer::stranger().await;
        let me = stranger.peer_id();
        for _ in 0..2 {
            let wrong = PairingCode::parse(&format!("{nameplate}-abandon-ability-able")).unwrap();
            let exchange = Exchange::start(
                Side::Joiner,
                &wrong.password(),
                wrong.session(),
                alice_peer,
                me,
            );
            let answer = ask(
                &stranger,
                PairRequest::Start {
                    session: wrong.session(),
                    spake: exchange.message().to_vec(),
                    device_name: format!("stranger {n}"),
                    reply_key: vec![0; 1216],
                },
            )
            .await;
            if let PairResponse::Started { session, .. } = answer {
                attempts += 1;
                // Half of them say they are done (wrong), half leave the exchange hanging.
                if n % 2 == 0 {
                    let _ = ask(
                        &stranger,
                        PairRequest::Confirm {
                            session,
                            confirmation: [0; 32],
                        },
                    )
                    .await;
                }
            }
        }
        assert!(matches!(
            ask(&stranger, PairRequest::Probe { nameplate }).await,
            PairResponse::Present(true)
        ));
    }
    assert!(attempts >= 6, "{attempts}");
    next_event(
        &mut alice_events,
        "pairing.attempt_failed",
        Duration::from_secs(10),
        |e| e["id"] == offer["id"],
    )
    .await;

    // The real device, which has the code, still gets in.
    let phone = Node::start_with(
        &tmp.path().join("phone"),
        volli_tests::Options {
            args: vec!["--bootstrap".into(), alice.p2p_addr().await],
            ..volli_tests::Options::default()
        },
    )
    .await;
    phone
        .wait_for("/v1/peers", Duration::from_secs(20), |p| {
            p["peers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["connected"] == true)
        })
        .await;
    let (status, joining) = phone
        .post(
            "/v1/pairing/join",
            json!({"code": offer["code"], "device_name": "phone"}),
        )
        .await;
    assert_eq!(status, 202, "{joining}");
    let request = next_event(
        &mut alice_events,
        "pairing.request",
        Duration::from_secs(20),
        |_| true,
    )
    .await;
    assert_eq!(request["check_code"], joining["check_code"]);
}

#[tokio::test]
async fn a_vault_with_a_long_history_of_large_settings_pairs_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = Node::start(&tmp.path().join("alice")).await;
    // Each value close to the limit, rewritten many times: tens of MiB of history, which
    // the pairing bundle carried whole before and could not hold.
    // (Hex of a hash stream: text that does not compress.)
    let noise = |i: u32| {
        let mut out = vec![0u8; 30 << 10];
        blake3::Hasher::new()
            .update(&i.to_le_bytes())
            .finalize_xof()
            .fill(&mut out);
        out.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    for i in 0..400 {
        let (status, body) = alice
            .request(
                reqwest::Method::PUT,
                &format!("/v1/settings/profile.blob{}", i % 8),
                Some(json!({"value": format!("{i}-{}", noise(i))})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let phone = Node::start(&tmp.path().join("phone")).await;
    let started = Instant::now();
    pair(&alice, &phone, None).await;
    phone
        .wait_for("/v1/settings", Duration::from_secs(30), |s| {
            (0..8).all(|k| s["settings"][format!("profile.blob{k}")].is_string())
        })
        .await;
    assert!(started.elapsed() < Duration::from_secs(30));
    let (_, settings) = phone.get("/v1/settings").await;
    assert!(
        settings["settings"]["profile.blob7"]
            .as_str()
            .unwrap()
            .starts_with("399-"),
    );
}
