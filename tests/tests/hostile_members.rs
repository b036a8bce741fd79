//! Stolen phones and hostile members, against real nodes: a revoked committer device (one to
//! one and in a group, online and offline) is replaced and reads nothing sent after; a
//! member's crafted MLS messages — a commit that seizes the committer's role, an update with
//! another signature key, floods of key-package requests, of mail for groups that do not
//! exist, of re-adds and of group requests, a Welcome replayed after leaving — are refused or
//! bounded, and the conversations go on. Crafted messages are written through `volli-mls`
//! (its `crafted` module) from a device's stolen state, and sent from that device's keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use volli_core::wire::{self, Deliver, DeliverMany, Delivered, MlsRequest, MlsResponse};
use volli_core::{Content, Mail, MailKind, MessageId, MlsMail, UserId, UserSecret};
use volli_mls::{CommitNote, GroupChange, GroupRef, Info, Member, Mls};

/// A group id from its 32 hex digits.
fn group_of(id: &str) -> GroupRef {
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap();
    }
    GroupRef(out)
}
use volli_net::Protocol;
use volli_tests::hostile::{HostilePeer, address_of};
use volli_tests::{Node, befriend, free_port, on_port, send};

/// Believes every device: a thief's copy is judged by the keys it holds, nothing else.
struct Anyone;

impl volli_mls::Trust for Anyone {
    fn admits(&self, _: &Info, _: &Member) -> bool {
        true
    }
}

/// Copies a node's database (with its write-ahead log) as a thief would, and runs `query`.
async fn copied_rows(data_dir: &Path, query: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let copy = tempfile::tempdir().unwrap();
    for file in ["volli.db", "volli.db-wal"] {
        if data_dir.join(file).exists() {
            std::fs::copy(data_dir.join(file), copy.path().join(file)).unwrap();
        }
    }
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(copy.path().join("volli.db"))
        .create_if_missing(false);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(query.to_owned()))
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows
}

/// A count from a copy of a node's database.
async fn count(data_dir: &Path, query: &str) -> i64 {
    let rows: Vec<(Vec<u8>, Vec<u8>)> =
        copied_rows(data_dir, &format!("SELECT CAST(({query}) AS BLOB), X''")).await;
    String::from_utf8(rows[0].0.clone())
        .unwrap()
        .parse()
        .unwrap()
}

/// A device's whole stored state (its MLS state and key), opened with the MLS library.
async fn stolen(data_dir: &Path) -> Mls {
    let rows = copied_rows(data_dir, "SELECT key, value FROM mls_state").await;
    let certificate = volli_core::DeviceCertificate::from_bytes(
        &std::fs::read(data_dir.join("identity/device.cert")).unwrap(),
    )
    .unwrap();
    let key = libp2p_identity::Keypair::from_protobuf_encoding(
        &std::fs::read(data_dir.join("identity/device.key")).unwrap(),
    )
    .unwrap();
    let seed: [u8; 32] = key
        .try_into_ed25519()
        .unwrap()
        .secret()
        .as_ref()
        .try_into()
        .unwrap();
    Mls::open(rows, certificate, &seed, volli_mls::Config::default()).unwrap()
}

/// The mail waiting in a node's outbox (what a thief of the wire or of a relay would see).
async fn outbox(data_dir: &Path) -> Vec<MlsMail> {
    copied_rows(data_dir, "SELECT id, envelope FROM outbox")
        .await
        .into_iter()
        .filter_map(|(_, bytes)| match Mail::from_bytes(&bytes) {
            Ok(Mail::Mls(m)) => Some(m),
            _ => None,
        })
        .collect()
}

/// Whether `state` opens any of `mail`'s application messages.
fn opens_any(state: &mut Mls, mail: &[MlsMail]) -> Option<String> {
    for m in mail.iter().filter(|m| m.kind == MailKind::Application) {
        for bytes in &m.messages {
            if let Ok(volli_mls::Processed::Application { content, .. }) =
                state.process(bytes, &Anyone)
            {
                return Some(format!("{:?}", Content::from_padded(&content)));
            }
        }
    }
    None
}

async fn conversation_of(node: &Node, with: &str) -> Value {
    let (status, body) = node.get(&format!("/v1/conversations/{with}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until every node of `nodes` shows the conversation (with the user beside it) with
/// exactly the devices `want`, committed by `committer`, at one epoch.
async fn converged(nodes: &[(&Node, &str)], want: &[&str], committer: &str) {
    let mut want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut seen = Vec::new();
        for (node, with) in nodes {
            let c = conversation_of(node, with).await;
            let mut members: Vec<String> = c["members"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter_map(|m| m["peer_id"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            members.sort();
            seen.push((members, c["committer"].clone(), c["epoch"].clone()));
        }
        if seen
            .iter()
            .all(|(m, c, e)| *m == want && c == committer && *e == seen[0].2)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "did not converge on {want:?} committed by {committer}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `node` shows group `id` with exactly the devices `want` and `committer`.
async fn group_converged(nodes: &[&Node], id: &str, want: &[&str], committer: &str) -> u64 {
    let mut want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut seen = Vec::new();
        for node in nodes {
            let (_, g) = node.get(&format!("/v1/groups/{id}")).await;
            let mut devices: Vec<String> = g["members"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .flat_map(|m| m["devices"].as_array().cloned().unwrap_or_default())
                        .filter_map(|d| d.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            devices.sort();
            seen.push((devices, g["committer"].clone(), g["epoch"].clone()));
        }
        if seen
            .iter()
            .all(|(d, c, e)| *d == want && c == committer && *e == seen[0].2)
        {
            return seen[0].2.as_u64().unwrap_or(0);
        }
        assert!(
            Instant::now() < deadline,
            "group did not converge on {want:?} committed by {committer}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_received(node: &Node, path: &str, body: &str) {
    node.wait_for(path, Duration::from_secs(60), |b| {
        b["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["body"] == body)
    })
    .await;
}

async fn start(dir: &Path) -> (Node, u16) {
    let port = free_port();
    (Node::start_with(dir, on_port(port)).await, port)
}

fn admin() -> Option<Vec<&'static str>> {
    Some(vec!["messages", "contacts", "settings", "admin"])
}

#[tokio::test]
async fn a_revoked_committer_phone_is_replaced_and_reads_nothing_sent_after_one_to_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (a1, _) = start(&tmp.path().join("a1")).await;
    let (a2, a2_port) = start(&tmp.path().join("a2")).await;
    let (carol, _) = start(&tmp.path().join("carol")).await;
    befriend(&a1, &carol).await;
    let a2_peer = volli_tests::pair(&a1, &a2, admin()).await;
    let (alice, a1_peer) = a1.ids().await;
    let (carol_id, carol_peer) = carol.ids().await;
    carol
        .wait_for(
            &format!("/v1/conversations/{alice}"),
            Duration::from_secs(20),
            |c| c["ready"] == true,
        )
        .await;
    a1.wait_for(
        &format!("/v1/conversations/{carol_id}"),
        Duration::from_secs(20),
        |c| c["ready"] == true,
    )
    .await;
    // Alice's first device starts the conversation: it commits in it.
    send(&a1, &carol_id, "hello carol").await;
    converged(
        &[(&a1, &carol_id), (&a2, &carol_id), (&carol, &alice)],
        &[&a1_peer, &a2_peer, &carol_peer],
        &a1_peer,
    )
    .await;

    // The phone is stolen (it stays online); Alice revokes it from her second device, which
    // takes over: the phone is out of the conversation on every side.
    let (status, body) = a2
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/devices/{a1_peer}"),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    converged(
        &[(&a2, &carol_id), (&carol, &alice)],
        &[&a2_peer, &carol_peer],
        &a2_peer,
    )
    .await;

    // Alice's remaining device is away: Carol's message waits in her outbox. The stolen
    // phone's whole state opens none of it.
    let mut a2 = a2;
    assert!(a2.terminate().success());
    send(&carol, &alice, "not for the stolen phone").await;
    let waiting = outbox(&carol.data_dir).await;
    assert!(
        waiting.iter().any(|m| m.kind == MailKind::Application),
        "the message waits in the outbox"
    );
    let mut thief = stolen(&a1.data_dir).await;
    assert_eq!(opens_any(&mut thief, &waiting), None);
    // Nor does the phone get it some other way.
    let (_, on_phone) = a1
        .get(&format!("/v1/messages?with={carol_id}&limit=100"))
        .await;
    assert!(
        on_phone["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["body"] != "not for the stolen phone")
    );
    // Alice's device, back, reads it; the conversation goes on both ways.
    let a2 = Node::start_with(&tmp.path().join("a2"), on_port(a2_port)).await;
    wait_received(
        &a2,
        &format!("/v1/messages?with={carol_id}&limit=100"),
        "not for the stolen phone",
    )
    .await;
    send(&a2, &carol_id, "and back").await;
    wait_received(
        &carol,
        &format!("/v1/messages?with={alice}&limit=100"),
        "and back",
    )
    .await;
}

#[tokio::test]
async fn a_revoked_group_committer_that_is_offline_is_replaced_and_the_group_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (a1, _) = start(&tmp.path().join("a1")).await;
    let (a2, _) = start(&tmp.path().join("a2")).await;
    let (bob, _) = start(&tmp.path().join("bob")).await;
    let (carol, carol_port) = start(&tmp.path().join("carol")).await;
    befriend(&a1, &bob).await;
    befriend(&a1, &carol).await;
    let a2_peer = volli_tests::pair(&a1, &a2, admin()).await;
    let (_, a1_peer) = a1.ids().await;
    let (bob_id, bob_peer) = bob.ids().await;
    let (carol_id, carol_peer) = carol.ids().await;
    for (node, of) in [(&a1, &bob_id), (&a1, &carol_id)] {
        node.wait_for(
            &format!("/v1/conversations/{of}"),
            Duration::from_secs(20),
            |c| c["ready"] == true,
        )
        .await;
    }
    let (status, group) = a1
        .post(
            "/v1/groups",
            json!({"name": "book club", "members": [bob_id, carol_id]}),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let id = group["id"].as_str().unwrap().to_owned();
    group_converged(
        &[&a1, &a2, &bob, &carol],
        &id,
        &[&a1_peer, &a2_peer, &bob_peer, &carol_peer],
        &a1_peer,
    )
    .await;

    // The creator's phone, which commits, is stolen and switched off; Alice revokes it.
    let mut a1 = a1;
    assert!(a1.terminate().success());
    let (status, _) = a2
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/devices/{a1_peer}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    group_converged(
        &[&a2, &bob, &carol],
        &id,
        &[&a2_peer, &bob_peer, &carol_peer],
        &a2_peer,
    )
    .await;

    // Carol is away: Bob's message for her waits in his outbox, and the phone's state opens
    // none of it; Carol, back, reads it.
    let mut carol = carol;
    assert!(carol.terminate().success());
    let (status, sent) = bob
        .post(
            "/v1/messages",
            json!({"group": id, "body": "after the phone was revoked"}),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let waiting = outbox(&bob.data_dir).await;
    assert!(waiting.iter().any(|m| m.kind == MailKind::Application));
    let mut thief = stolen(&a1.data_dir).await;
    assert_eq!(opens_any(&mut thief, &waiting), None);
    let carol = Node::start_with(&tmp.path().join("carol"), on_port(carol_port)).await;
    for node in [&a2, &carol] {
        wait_received(
            node,
            &format!("/v1/messages?group={id}&limit=100"),
            "after the phone was revoked",
        )
        .await;
    }
}

/// Hands `mail` to a node as the device `from` would (its own user's mail, or mail it
/// carries), and returns the answer.
async fn deliver(from: &HostilePeer, to: &Node, mail: &MlsMail) -> Delivered {
    let (peer, addr) = address_of(to).await;
    from.hello(peer, &addr).await.unwrap();
    let request = wire::encode(&Deliver {
        version: 1,
        envelope: Mail::Mls(mail.clone()).to_bytes(),
    });
    let answer = from
        .raw(peer, &addr, Protocol::Message, request)
        .await
        .unwrap();
    wire::decode(&answer, Protocol::Message.max_response()).unwrap()
}

fn handshake(from: UserId, to: UserId, device: &str, messages: Vec<Vec<u8>>) -> MlsMail {
    MlsMail::new(
        from,
        to,
        Some(device.parse().unwrap()),
        MailKind::Handshake,
        MessageId::random().unwrap(),
        messages,
    )
}

async fn epoch_of(node: &Node, id: &str) -> u64 {
    node.get(&format!("/v1/groups/{id}")).await.1["epoch"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_member_cannot_seize_wedge_or_flood_a_group() {
    let tmp = tempfile::tempdir().unwrap();
    let (alice, _) = start(&tmp.path().join("alice")).await;
    let (bob, bob_port) = start(&tmp.path().join("bob")).await;
    let (carol, _) = start(&tmp.path().join("carol")).await;
    befriend(&alice, &bob).await;
    befriend(&alice, &carol).await;
    befriend(&bob, &carol).await;
    let (alice_id, alice_peer) = alice.ids().await;
    let (bob_id, bob_peer) = bob.ids().await;
    let (carol_id, carol_peer) = carol.ids().await;
    for of in [&bob_id, &carol_id] {
        alice
            .wait_for(
                &format!("/v1/conversations/{of}"),
                Duration::from_secs(20),
                |c| c["ready"] == true,
            )
            .await;
    }
    let (status, group) = alice
        .post(
            "/v1/groups",
            json!({"name": "g", "members": [bob_id, carol_id]}),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let id = group["id"].as_str().unwrap().to_owned();
    let group_ref = group_of(&id);
    group_converged(
        &[&alice, &bob, &carol],
        &id,
        &[&alice_peer, &bob_peer, &carol_peer],
        &alice_peer,
    )
    .await;

    // Bob's node is taken over: its state and keys, with a patched sender.
    let mut bob = bob;
    assert!(bob.terminate().success());
    let patched = HostilePeer::impersonate(&bob.data_dir).await;
    let bob_user: UserId = bob_id.parse().unwrap();

    // 1. A commit that removes the admin's device ahead of Bob's, to make his the committer.
    let mut state = stolen(&bob.data_dir).await;
    let seizing = volli_mls::crafted::removal(
        &mut state,
        &group_ref,
        &[alice_peer.parse().unwrap()],
        &CommitNote::default(),
    )
    .unwrap();
    let answer = deliver(
        &patched,
        &carol,
        &handshake(
            bob_user,
            carol_id.parse().unwrap(),
            &carol_peer,
            vec![seizing],
        ),
    )
    .await;
    assert!(
        matches!(answer, Delivered::Receipt(_) | Delivered::Refused(_)),
        "{answer:?}"
    );

    // 2. An update of his leaf with another signature key, to the committer.
    let mut state = stolen(&bob.data_dir).await;
    let update =
        volli_mls::crafted::update_with_another_key(&mut state, &group_ref, &[7; 32]).unwrap();
    deliver(
        &patched,
        &alice,
        &handshake(
            bob_user,
            alice_id.parse().unwrap(),
            &alice_peer,
            vec![update],
        ),
    )
    .await;

    // 3. Group requests, again and again: a sponsor change each, which would each be a
    // commit and its fan-out to every member.
    let before = epoch_of(&alice, &id).await;
    let mut state = stolen(&bob.data_dir).await;
    for i in 0..30 {
        let sponsor = if i % 2 == 0 { &carol_id } else { &alice_id };
        let request_id = MessageId::random().unwrap();
        let content = Content::GroupRequest {
            id: request_id,
            change: postcard::to_allocvec(&GroupChange::Sponsor(sponsor.parse().unwrap())).unwrap(),
            packages: Vec::new(),
        };
        let sealed = state
            .encrypt(&group_ref, &content.to_padded().unwrap())
            .unwrap();
        let mail = MlsMail::new(
            bob_user,
            alice_id.parse().unwrap(),
            Some(alice_peer.parse().unwrap()),
            MailKind::Application,
            request_id,
            vec![sealed.bytes],
        );
        deliver(&patched, &alice, &mail).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = epoch_of(&alice, &id).await;
    assert!(
        after <= before + 10 + 1,
        "epoch went from {before} to {after}: requests were not bounded"
    );

    // The group goes on: Alice still commits, every member reads, and Bob's node, back with
    // its real state, follows (it asks to be added again if it must).
    drop(patched);
    let bob = Node::start_with(&tmp.path().join("bob"), on_port(bob_port)).await;
    let (status, _) = alice
        .post(
            "/v1/messages",
            json!({"group": id, "body": "still alice's group"}),
        )
        .await;
    assert_eq!(status, 202);
    for node in [&bob, &carol] {
        wait_received(
            node,
            &format!("/v1/messages?group={id}&limit=100"),
            "still alice's group",
        )
        .await;
    }
    let (_, g) = carol.get(&format!("/v1/groups/{id}")).await;
    assert_eq!(g["committer"], alice_peer.as_str());
    let (status, _) = carol
        .post("/v1/messages", json!({"group": id, "body": "from carol"}))
        .await;
    assert_eq!(status, 202);
    for node in [&alice, &bob] {
        wait_received(
            node,
            &format!("/v1/messages?group={id}&limit=100"),
            "from carol",
        )
        .await;
    }

    // 4. Re-adds asked again and again by Bob's stolen device, each with a fresh key package:
    // at most one is committed (the thief holds Bob's device key: that one is its right
    // until Bob revokes the device).
    let mut bob = bob;
    assert!(bob.terminate().success());
    let patched = HostilePeer::impersonate(&bob.data_dir).await;
    let (alice_peer_id, alice_addr) = address_of(&alice).await;
    patched.hello(alice_peer_id, &alice_addr).await.unwrap();
    let before = epoch_of(&alice, &id).await;
    let mut state = stolen(&bob.data_dir).await;
    let mut readded = 0;
    for _ in 0..20 {
        let package = state.new_key_packages(1, false, 0).unwrap().remove(0);
        let request = wire::encode(&MlsRequest::Rejoin {
            group: group_ref.0,
            package: package.bytes,
        });
        let answer = patched
            .raw(alice_peer_id, &alice_addr, Protocol::Mls, request)
            .await
            .unwrap();
        if matches!(
            wire::decode::<MlsResponse>(&answer, Protocol::Mls.max_response()),
            Ok(MlsResponse::Ok)
        ) {
            readded += 1;
        }
    }
    assert!(readded <= 1, "{readded} re-adds in a row were committed");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = epoch_of(&alice, &id).await;
    assert!(after <= before + 1, "epoch went from {before} to {after}");
}

/// An MLS private message for `group` at `epoch` whose encrypted parts are noise: parses,
/// opens nowhere.
fn junk_for(group: [u8; 16], epoch: u64) -> Vec<u8> {
    let mut noise = [0u8; 48];
    getrandom::fill(&mut noise).unwrap();
    let mut m = vec![0x00, 0x01, 0x00, 0x02, 16];
    m.extend_from_slice(&group);
    m.extend_from_slice(&epoch.to_be_bytes());
    m.push(3); // commit
    m.push(0); // no authenticated data
    m.push(16);
    m.extend_from_slice(&noise[..16]);
    m.push(32);
    m.extend_from_slice(&noise[16..]);
    m
}

#[tokio::test]
async fn floods_from_a_contact_are_bounded_and_cost_nobody_else() {
    let tmp = tempfile::tempdir().unwrap();
    let (alice, _) = start(&tmp.path().join("alice")).await;
    let (bob, _) = start(&tmp.path().join("bob")).await;
    befriend(&alice, &bob).await;
    let (alice_id, alice_peer) = alice.ids().await;
    let (bob_id, _) = bob.ids().await;
    // A contact of Alice's that floods.
    let hostile = HostilePeer::start(Arc::new(UserSecret::generate().unwrap())).await;
    let (_, invite) = alice.post("/v1/invites", json!({})).await;
    hostile.redeem(invite["link"].as_str().unwrap()).await;
    let (peer, addr) = address_of(&alice).await;
    hostile.hello(peer, &addr).await.unwrap();

    // Key packages: one hand-out of one-time packages, then the last-resort one only.
    let mut one_time = std::collections::HashSet::new();
    for _ in 0..50 {
        let answer = hostile
            .raw(
                peer,
                &addr,
                Protocol::Mls,
                wire::encode(&MlsRequest::KeyPackages {
                    packages: Vec::new(),
                }),
            )
            .await
            .unwrap();
        if let Ok(MlsResponse::KeyPackages { packages }) =
            wire::decode::<MlsResponse>(&answer, Protocol::Mls.max_response())
        {
            // The last-resort package comes first.
            one_time.extend(packages.into_iter().skip(1));
        }
    }
    assert!(
        one_time.len() <= 2,
        "{} one-time key packages minted for one device",
        one_time.len()
    );

    // Mail for groups that do not exist: bounded per contact, whatever it sends.
    let me: UserId = alice_id.parse().unwrap();
    let hostile_user = hostile.user_id();
    for _ in 0..40 {
        let mail: Vec<Vec<u8>> = (0..256)
            .map(|_| {
                let mut group = [0u8; 16];
                getrandom::fill(&mut group).unwrap();
                Mail::Mls(MlsMail::new(
                    hostile_user,
                    me,
                    Some(alice_peer.parse().unwrap()),
                    MailKind::Handshake,
                    MessageId::random().unwrap(),
                    vec![junk_for(group, 1)],
                ))
                .to_bytes()
            })
            .collect();
        // What it is answered does not matter to it.
        let _ = hostile
            .raw(
                peer,
                &addr,
                Protocol::Message,
                wire::encode(&DeliverMany { version: 2, mail }),
            )
            .await;
    }
    let held = count(
        &alice.data_dir,
        &format!("SELECT COUNT(*) FROM mls_pending WHERE deliverer = '{hostile_user}'"),
    )
    .await;
    assert!(
        held <= 64,
        "{held} messages for unknown groups held for one contact"
    );
    assert!(
        held > 0,
        "nothing was held: the test did not reach the store"
    );

    // Meanwhile a real contact's messages arrive as ever.
    send(&bob, &alice_id, "business as usual").await;
    wait_received(
        &alice,
        &format!("/v1/messages?with={bob_id}&limit=10"),
        "business as usual",
    )
    .await;

    // The groups that do not exist make Alice ask to join a few of them at most.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let asked = alice
        .log()
        .matches("asking to be added to a conversation again")
        .count();
    assert!(asked <= 16, "asked to join {asked} unknown conversations");
}

#[tokio::test]
async fn a_welcome_replayed_after_leaving_a_group_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (alice, _) = start(&tmp.path().join("alice")).await;
    let (bob, bob_port) = start(&tmp.path().join("bob")).await;
    let (carol, _) = start(&tmp.path().join("carol")).await;
    befriend(&alice, &bob).await;
    befriend(&carol, &bob).await;
    let (_, alice_peer) = alice.ids().await;
    let (bob_id, bob_peer) = bob.ids().await;
    alice
        .wait_for(
            &format!("/v1/conversations/{bob_id}"),
            Duration::from_secs(20),
            |c| c["ready"] == true,
        )
        .await;
    // Bob is away when Alice makes the group: its Welcome waits in her outbox, where it is
    // captured.
    let mut bob = bob;
    assert!(bob.terminate().success());
    let (status, group) = alice
        .post("/v1/groups", json!({"name": "g", "members": [bob_id]}))
        .await;
    assert_eq!(status, 201, "{group}");
    let id = group["id"].as_str().unwrap().to_owned();
    let welcome = outbox(&alice.data_dir)
        .await
        .into_iter()
        .find(|m| m.kind == MailKind::Welcome)
        .expect("the Welcome waits for Bob");
    let bob = Node::start_with(&tmp.path().join("bob"), on_port(bob_port)).await;
    group_converged(&[&alice, &bob], &id, &[&alice_peer, &bob_peer], &alice_peer).await;
    // Bob leaves.
    let (status, _) = bob
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/groups/{id}/members/{bob_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    bob.wait_for(&format!("/v1/groups/{id}"), Duration::from_secs(30), |g| {
        g["error"]["code"] == "unknown_group"
    })
    .await;
    // Carol, a contact of Bob's who saw the Welcome (or anyone who did), hands it to him
    // again: he stays out.
    let mut carol = carol;
    assert!(carol.terminate().success());
    let carrier = HostilePeer::impersonate(&carol.data_dir).await;
    let _ = deliver(&carrier, &bob, &welcome).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, _) = bob.get(&format!("/v1/groups/{id}")).await;
    assert_eq!(
        status, 404,
        "a replayed Welcome put Bob back into the group"
    );
    let (_, groups) = bob.get("/v1/groups").await;
    assert_eq!(groups["groups"].as_array().unwrap().len(), 0);
}
