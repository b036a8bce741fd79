//! Conversations on MLS through the real binary: key packages exchanged when contacts
//! connect, the first message moving a conversation to MLS, every device of both users
//! reading it, pairing and revocation as commits, late mail through a relay across epochs,
//! and the cryptographic properties tested by trying to decrypt captured mail with a
//! device's stored state (taken as a thief would take it) through the MLS library itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use volli_core::{DeviceCertificate, Mail, MailKind, MlsMail};
use volli_mls::{Info, Member, Mls, MlsError, Processed};
use volli_tests::{
    Node, Options, befriend, conversation, events, free_port, next_event, on_port, send,
    wait_until_relay_of,
};

/// Believes every device: the thief's copy is judged by the keys it holds, nothing else.
struct Anyone;

impl volli_mls::Trust for Anyone {
    fn admits(&self, _: &Info, _: &Member) -> bool {
        true
    }
}

/// Copies a node's database (with its write-ahead log) as a thief copying the data
/// directory would, and runs `query` on the copy.
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

/// A device's whole stored state (its MLS state, its key), taken from its data directory
/// and opened with the MLS library.
async fn stolen(data_dir: &Path) -> Mls {
    let rows = copied_rows(data_dir, "SELECT key, value FROM mls_state").await;
    let certificate = DeviceCertificate::from_bytes(
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

/// What a relay holds, as an eavesdropper on the wire (or the relay itself) captures it.
async fn captured(relay_dir: &Path) -> Vec<MlsMail> {
    copied_rows(
        relay_dir,
        "SELECT id, envelope FROM relay_held ORDER BY stored_at",
    )
    .await
    .into_iter()
    .filter_map(|(_, bytes)| match Mail::from_bytes(&bytes) {
        Ok(Mail::Mls(m)) => Some(m),
        _ => None,
    })
    .collect()
}

/// The application messages a relay holds (a message's commits and proposals travel beside
/// them).
async fn applications(relay_dir: &Path) -> Vec<MlsMail> {
    captured(relay_dir)
        .await
        .into_iter()
        .filter(|m| m.kind == MailKind::Application)
        .collect()
}

/// Waits until `n` of `sender`'s messages to `with` are held by a relay.
async fn wait_relayed(sender: &Node, with: &str, n: usize) {
    sender
        .wait_for(
            &format!("/v1/messages?with={with}&limit=500"),
            // A first attempt at the recipient who just left can take a dial timeout on a
            // loaded machine before the relays are tried.
            Duration::from_secs(60),
            |b| {
                b["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|m| m["status"] == "relayed")
                    .count()
                    == n
            },
        )
        .await;
}

/// The text a captured application message opens to with `state`, if it opens.
fn open(state: &mut Mls, mail: &MlsMail) -> Result<String, MlsError> {
    match state.process(&mail.messages[0], &Anyone)? {
        Processed::Application { content, .. } => {
            match volli_core::Content::from_padded(&content) {
                Ok(volli_core::Content::Text { body, .. }) => Ok(body),
                _ => Err(MlsError::Malformed),
            }
        }
        other => panic!("not an application message: {other:?}"),
    }
}

/// Three nodes on fixed loopback ports (so they find each other again after restarts):
/// Alice and Bob, and Relay, a friend of both whom Bob designates to hold his mail.
struct Three {
    _tmp: tempfile::TempDir,
    alice: Node,
    bob: Node,
    relay: Node,
    ports: (u16, u16, u16),
    alice_id: String,
    bob_id: String,
}

async fn three(config: &str) -> Three {
    let tmp = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port(), free_port());
    let options = |port| Options {
        config: config.to_owned(),
        ..on_port(port)
    };
    let alice = Node::start_with(&tmp.path().join("alice"), options(ports.0)).await;
    let bob = Node::start_with(&tmp.path().join("bob"), options(ports.1)).await;
    let relay = Node::start_with(&tmp.path().join("relay"), options(ports.2)).await;
    befriend(&relay, &alice).await;
    befriend(&relay, &bob).await;
    befriend(&alice, &bob).await;
    let (alice_id, _) = alice.ids().await;
    let (bob_id, _) = bob.ids().await;
    let (relay_id, _) = relay.ids().await;
    wait_until_relay_of(&alice, &bob_id, &relay_id).await;
    wait_ready(&alice, &bob_id).await;
    wait_ready(&bob, &alice_id).await;
    Three {
        _tmp: tmp,
        alice,
        bob,
        relay,
        ports,
        alice_id,
        bob_id,
    }
}

/// Starts `node` again on its port (stopping it first if it runs).
async fn restart(node: &mut Node, port: u16, config: &str) {
    let dir = node.data_dir.clone();
    if node.running() {
        assert!(node.terminate().success());
    }
    *node = Node::start_with(
        &dir,
        Options {
            config: config.to_owned(),
            ..on_port(port)
        },
    )
    .await;
}

async fn wait_received(node: &Node, with: &str, bodies: &[&str]) {
    node.wait_for(
        &format!("/v1/messages?with={with}&limit=500"),
        Duration::from_secs(30),
        |b| {
            let got: Vec<&str> = b["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|m| m["body"].as_str())
                .collect();
            bodies.iter().all(|want| got.contains(want))
        },
    )
    .await;
}

async fn epoch(node: &Node, with: &str) -> u64 {
    conversation_of(node, with).await["epoch"]
        .as_u64()
        .unwrap_or(0)
}

/// Waits until `node` can move its conversation with `with` to MLS (it holds key packages
/// of one of `with`'s devices), or already did.
async fn wait_ready(node: &Node, with: &str) {
    node.wait_for(
        &format!("/v1/conversations/{with}"),
        Duration::from_secs(20),
        |c| c["ready"] == true,
    )
    .await;
}

async fn conversation_of(node: &Node, with: &str) -> Value {
    let (status, body) = node.get(&format!("/v1/conversations/{with}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn the_first_message_moves_a_conversation_to_mls_and_both_sides_talk() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = Node::start(&tmp.path().join("alice")).await;
    let bob = Node::start(&tmp.path().join("bob")).await;
    befriend(&alice, &bob).await;
    let (alice_id, alice_peer) = alice.ids().await;
    let (bob_id, bob_peer) = bob.ids().await;
    wait_ready(&alice, &bob_id).await;
    assert_eq!(conversation_of(&alice, &bob_id).await["encryption"], "hpke");

    let mut bob_events = events(&bob).await;
    let id = send(&alice, &bob_id, "hello over MLS").await;
    let received = next_event(
        &mut bob_events,
        "message.received",
        Duration::from_secs(10),
        |e| e["id"] == id.as_str(),
    )
    .await;
    assert_eq!(received["from"], alice_id);
    assert_eq!(received["body"], "hello over MLS");

    let on_alice = conversation_of(&alice, &bob_id).await;
    assert_eq!(on_alice["encryption"], "mls", "{on_alice}");
    assert_eq!(
        on_alice["committer"], alice_peer,
        "the creator orders commits"
    );
    let members: Vec<&str> = on_alice["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["peer_id"].as_str().unwrap())
        .collect();
    assert!(members.contains(&alice_peer.as_str()) && members.contains(&bob_peer.as_str()));
    let on_bob = conversation_of(&bob, &alice_id).await;
    assert_eq!(on_bob["encryption"], "mls", "{on_bob}");
    assert_eq!(on_bob["epoch"], on_alice["epoch"]);

    // Bob answers in the same group; the receipt comes back.
    let mut alice_events = events(&alice).await;
    let reply = send(&bob, &alice_id, "and back").await;
    next_event(
        &mut alice_events,
        "message.received",
        Duration::from_secs(10),
        |e| e["id"] == reply.as_str() && e["body"] == "and back",
    )
    .await;
    bob.wait_for(
        &format!("/v1/messages?with={alice_id}"),
        Duration::from_secs(10),
        |b| {
            b["messages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["id"] == reply.as_str() && m["status"] == "delivered")
        },
    )
    .await;
    let theirs = conversation(&alice, &bob_id).await;
    assert_eq!(theirs.len(), 2);

    // A file: its offer (with the file's key) travels inside the conversation.
    let file = tmp.path().join("notes.txt");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let id = offer_file(&alice, &bob, &bob_id, &file).await;
    let (status, _) = bob
        .post(&format!("/v1/transfers/{id}/accept"), serde_json::json!({}))
        .await;
    assert_eq!(status, 200);
    bob.wait_for(
        &format!("/v1/transfers/{id}"),
        Duration::from_secs(30),
        |t| t["state"] == "completed",
    )
    .await;
    let got = reqwest::Client::new()
        .get(format!("{}/v1/transfers/{id}/content", bob.url))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(got == data, "the file arrives byte for byte");
    let offers = copied_rows(
        &alice.data_dir,
        "SELECT id, sealed_offer FROM transfers WHERE direction = 'outgoing'",
    )
    .await;
    assert_eq!(offers.len(), 1);
    assert!(
        matches!(Mail::from_bytes(&offers[0].1), Ok(Mail::Mls(m)) if m.kind == MailKind::Application),
        "the offer is mail of the conversation"
    );
}

#[tokio::test]
async fn forward_secrecy_a_state_taken_later_opens_no_mail_captured_before() {
    // Past epochs are kept for two seconds of late mail; a device updates its keys after
    // every four messages through the conversation.
    let config = "[messages]\nlate_mail_secs = 2\nupdate_after_messages = 4\n";
    let mut t = three(config).await;
    send(&t.alice, &t.bob_id, "hello").await;
    wait_received(&t.bob, &t.alice_id, &["hello"]).await;
    let start = epoch(&t.bob, &t.alice_id).await;

    // Bob is away: three messages wait at the relay, captured there.
    assert!(t.bob.terminate().success());
    for i in 0..3 {
        send(&t.alice, &t.bob_id, &format!("captured {i}")).await;
    }
    wait_relayed(&t.alice, &t.bob_id, 3).await;
    let mail = applications(&t.relay.data_dir).await;
    assert_eq!(mail.len(), 3);
    // Bob's device state as it is now opens them: the capture is real, and so is the test.
    let mut before = stolen(&t.bob.data_dir).await;
    assert!(
        open(&mut before, &mail[1])
            .unwrap()
            .starts_with("captured ")
    );

    // Bob returns and reads them; the conversation moves on (updates after four messages)
    // and the epoch they were sent in is forgotten after its two seconds.
    let port = t.ports.1;
    restart(&mut t.bob, port, config).await;
    wait_received(
        &t.bob,
        &t.alice_id,
        &["captured 0", "captured 1", "captured 2"],
    )
    .await;
    t.bob
        .wait_for(
            &format!("/v1/conversations/{}", t.alice_id),
            Duration::from_secs(20),
            |c| c["epoch"].as_u64().unwrap_or(0) > start,
        )
        .await;
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Taken now, with everything the device stores, the state opens none of them: not
    // only were their message keys used up, the epoch they were sent in is gone.
    let mut later = stolen(&t.bob.data_dir).await;
    for m in &mail {
        let opened = open(&mut later, m);
        assert!(
            matches!(opened, Err(MlsError::Stale)),
            "a state taken later still holds the epoch of captured mail: {opened:?}"
        );
    }
}

#[tokio::test]
async fn post_compromise_a_state_taken_before_an_update_reads_nothing_after_it() {
    // No circuits through each other (nodes that do not know whether they are reachable
    // relay for their contacts): Alice's mail to Bob, away, goes to the mailbox at once.
    let config = "[messages]\nupdate_after_messages = 3\n[network]\nrelay_server = false\n";
    let mut t = three(config).await;
    send(&t.alice, &t.bob_id, "hello").await;
    wait_received(&t.bob, &t.alice_id, &["hello"]).await;

    // A thief copies Bob's device.
    let port = t.ports.1;
    let refreshed = conversation_of(&t.bob, &t.alice_id).await["keys_updated_at"].clone();
    assert!(t.bob.terminate().success());
    let mut thief = stolen(&t.bob.data_dir).await;
    restart(&mut t.bob, port, config).await;

    // Three messages through the conversation: Bob proposes an update of his keys and Alice,
    // who orders its commits, commits it; Bob sees his keys refreshed.
    send(&t.bob, &t.alice_id, "one").await;
    send(&t.alice, &t.bob_id, "two").await;
    wait_received(&t.bob, &t.alice_id, &["two"]).await;
    t.bob
        .wait_for(
            &format!("/v1/conversations/{}", t.alice_id),
            Duration::from_secs(20),
            |c| c["keys_updated_at"] != refreshed,
        )
        .await;

    // Bob is away; Alice's next message waits at the relay.
    assert!(t.bob.terminate().success());
    send(&t.alice, &t.bob_id, "after the update").await;
    wait_relayed(&t.alice, &t.bob_id, 1).await;
    let after = applications(&t.relay.data_dir).await.remove(0);

    // The thief sees every commit too (here: from the committer's own records).
    let commits = copied_rows(
        &t.alice.data_dir,
        "SELECT group_id, messages FROM mls_commits ORDER BY epoch",
    )
    .await;
    assert!(!commits.is_empty());
    for (_, bundle) in commits {
        let messages: Vec<Vec<u8>> = volli_core::wire::decode(&bundle, usize::MAX).unwrap();
        for m in messages {
            let _ = thief.process(&m, &Anyone);
        }
    }
    let opened = open(&mut thief, &after);
    assert!(
        opened.is_err(),
        "the stolen state read a message sent after the update: {opened:?}"
    );
    // Bob's own state opens it: the capture is real.
    let mut bob_now = stolen(&t.bob.data_dir).await;
    assert_eq!(open(&mut bob_now, &after).unwrap(), "after the update");
}

#[tokio::test]
async fn a_message_held_at_a_relay_across_two_epochs_still_opens() {
    // Bob starts the conversation, so he orders its commits; his keys update after every
    // message he sends.
    let config = "[messages]\nupdate_after_messages = 1\n";
    let mut t = three(config).await;
    send(&t.bob, &t.alice_id, "start").await;
    wait_received(&t.alice, &t.bob_id, &["start"]).await;
    let bob_port = t.ports.1;
    let relay_port = t.ports.2;
    let start = epoch(&t.bob, &t.alice_id).await;

    // Bob is away: Alice's message waits at the relay; then Alice leaves too, so only the
    // relay can hand it over.
    assert!(t.bob.terminate().success());
    send(&t.alice, &t.bob_id, "late mail").await;
    wait_relayed(&t.alice, &t.bob_id, 1).await;
    assert!(t.alice.terminate().success());
    assert!(t.relay.terminate().success());

    // Bob returns while the relay is away, and his next two messages each end an epoch.
    restart(&mut t.bob, bob_port, config).await;
    send(&t.bob, &t.alice_id, "first while you are away").await;
    t.bob
        .wait_for(
            &format!("/v1/conversations/{}", t.alice_id),
            Duration::from_secs(20),
            |c| c["epoch"].as_u64().unwrap_or(0) > start,
        )
        .await;
    send(&t.bob, &t.alice_id, "second while you are away").await;
    t.bob
        .wait_for(
            &format!("/v1/conversations/{}", t.alice_id),
            Duration::from_secs(20),
            |c| c["epoch"].as_u64().unwrap_or(0) >= start + 2,
        )
        .await;

    // The relay comes back: the message from two epochs ago opens.
    restart(&mut t.relay, relay_port, config).await;
    wait_received(&t.bob, &t.alice_id, &["late mail"]).await;
}

/// Copies a data dir of the fixture to `dest`, with the permissions the node insists on for
/// its keys (git does not keep them).
fn copy_fixture(name: &str, dest: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let from = volli_tests::repo_root()
        .join("tests/fixtures/mls-migration")
        .join(name);
    std::fs::create_dir_all(dest.join("identity")).unwrap();
    for f in [
        "identity/user.key",
        "identity/device.key",
        "identity/device.cert",
        "admin.token",
        "volli.db",
    ] {
        std::fs::copy(from.join(f), dest.join(f)).unwrap();
        std::fs::set_permissions(dest.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    for d in [dest.to_path_buf(), dest.join("identity")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
}

/// Two nodes of the previous release, whose every message was sealed to the user key: after
/// the upgrade the history is there, a message that waited in the outbox (an old envelope)
/// is delivered and read, and the next message moves the conversation to MLS.
#[tokio::test]
async fn a_conversation_of_the_previous_release_moves_to_mls_with_nothing_lost() {
    let expected: Value = serde_json::from_slice(
        &std::fs::read(volli_tests::repo_root().join("tests/fixtures/mls-migration/expected.json"))
            .unwrap(),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("alice", &tmp.path().join("alice"));
    copy_fixture("bob", &tmp.path().join("bob"));
    let alice = Node::start(&tmp.path().join("alice")).await;
    let bob = Node::start_with(
        &tmp.path().join("bob"),
        Options {
            args: vec!["--bootstrap".into(), alice.p2p_addr().await],
            ..Options::default()
        },
    )
    .await;
    let (alice_id, bob_id) = (
        expected["alice"]["user_id"].as_str().unwrap(),
        expected["bob"]["user_id"].as_str().unwrap(),
    );
    assert_eq!(alice.ids().await.0, alice_id);
    assert_eq!(bob.ids().await.0, bob_id);

    // The queued old envelope reaches Bob and opens; the history is whole on both sides.
    let queued = &expected["queued"];
    wait_received(&bob, alice_id, &[queued["body"].as_str().unwrap()]).await;
    for (node, with) in [(&alice, bob_id), (&bob, alice_id)] {
        let got = conversation(node, with).await;
        for m in expected["delivered"].as_array().unwrap() {
            assert!(
                got.iter()
                    .any(|g| g["id"] == m["id"] && g["body"] == m["body"]),
                "{m} missing from {got:?}"
            );
        }
        assert_eq!(got.len(), 4, "{got:?}");
    }
    alice
        .wait_for(
            &format!("/v1/messages?with={bob_id}"),
            Duration::from_secs(20),
            |b| {
                b["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["id"] == queued["id"] && m["status"] == "delivered")
            },
        )
        .await;

    // Both nodes hand each other key packages; the next message moves the conversation.
    wait_ready(&alice, bob_id).await;
    assert_eq!(conversation_of(&alice, bob_id).await["encryption"], "hpke");
    send(&alice, bob_id, "the first on MLS").await;
    wait_received(&bob, alice_id, &["the first on MLS"]).await;
    send(&bob, alice_id, "and the answer").await;
    wait_received(&alice, bob_id, &["and the answer"]).await;
    for (node, with) in [(&alice, bob_id), (&bob, alice_id)] {
        assert_eq!(conversation_of(node, with).await["encryption"], "mls");
        assert_eq!(conversation(node, with).await.len(), 6);
    }
}

/// The peer ids of the members of `node`'s conversation with `with`, sorted.
async fn members(node: &Node, with: &str) -> Vec<String> {
    let mut m: Vec<String> = conversation_of(node, with).await["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["peer_id"].as_str().unwrap().to_owned())
        .collect();
    m.sort();
    m
}

/// Waits until every node in `nodes` is in the conversation with the same epoch and
/// exactly the devices `want`.
async fn converged(nodes: &[(&Node, &str)], want: &[&str]) -> u64 {
    let mut want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut epochs = Vec::new();
        let mut agree = true;
        for (node, with) in nodes {
            let c = conversation_of(node, with).await;
            epochs.push(c["epoch"].as_u64());
            agree &= c["encryption"] == "mls" && members(node, with).await == want;
        }
        if agree && epochs.windows(2).all(|w| w[0] == w[1]) && epochs[0].is_some() {
            return epochs[0].unwrap_or(0);
        }
        if std::time::Instant::now() >= deadline {
            for (node, _) in nodes {
                let log = node.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!(
                    "--- {}:\n{}",
                    node.data_dir.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            panic!("the devices did not converge on {want:?}: epochs {epochs:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Alice and Bob with two devices each; at the same moment Bob pairs a third and Alice
/// revokes her second. Every remaining device converges on one group and reads what comes
/// after; the revoked device reads none of it, not even with its whole stored state.
#[tokio::test]
async fn pairing_on_one_side_while_the_other_revokes_converges_and_shuts_the_revoked_out() {
    let tmp = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let start = |name: &str, port| {
        let dir = tmp.path().join(name);
        async move { Node::start_with(&dir, on_port(port)).await }
    };
    let a1 = start("a1", ports[0]).await;
    let a2 = start("a2", ports[1]).await;
    let b1 = start("b1", ports[2]).await;
    let b2 = start("b2", ports[3]).await;
    let b3 = start("b3", ports[4]).await;
    let carol = start("carol", ports[5]).await;
    befriend(&a1, &b1).await;
    befriend(&carol, &a1).await;
    befriend(&carol, &b1).await;
    let a2_peer = volli_tests::pair(&a1, &a2, None).await;
    let b2_peer = volli_tests::pair(&b1, &b2, None).await;
    let (alice, a1_peer) = a1.ids().await;
    let (bob, b1_peer) = b1.ids().await;
    let (carol_id, _) = carol.ids().await;

    // Alice starts the conversation; her committer adds every device as key packages come.
    wait_ready(&a1, &bob).await;
    send(&a1, &bob, "hello, all of you").await;
    let all = [&a1_peer, &a2_peer, &b1_peer, &b2_peer].map(String::as_str);
    converged(
        &[(&a1, &bob), (&a2, &bob), (&b1, &alice), (&b2, &alice)],
        &all,
    )
    .await;
    for node in [&b1, &b2] {
        wait_received(node, &alice, &["hello, all of you"]).await;
    }

    // At the same moment: Bob pairs a third device, Alice revokes her second.
    let (b3_peer, revoked) = tokio::join!(volli_tests::pair(&b1, &b3, None), async {
        a1.request(
            reqwest::Method::DELETE,
            &format!("/v1/devices/{a2_peer}"),
            None,
        )
        .await
        .0
    });
    assert_eq!(revoked, 204);
    let remaining = [&a1_peer, &b1_peer, &b2_peer, &b3_peer].map(String::as_str);
    converged(
        &[(&a1, &bob), (&b1, &alice), (&b2, &alice), (&b3, &alice)],
        &remaining,
    )
    .await;

    // Every remaining device reads what comes after, whoever sends it.
    send(&b3, &alice, "from the new device").await;
    wait_received(&a1, &bob, &["from the new device"]).await;
    send(&a1, &bob, "to every device of yours").await;
    for node in [&b1, &b2, &b3] {
        wait_received(
            node,
            &alice,
            &["to every device of yours", "from the new device"],
        )
        .await;
    }

    // Alice's remaining device is away: Bob's next message waits at Carol's node. The
    // revoked device's whole state opens none of it.
    wait_until_relay_of(&b1, &alice, &carol_id).await;
    let mut a1 = a1;
    assert!(a1.terminate().success());
    send(&b3, &alice, "not for the revoked device").await;
    wait_relayed(&b3, &alice, 1).await;
    let held = applications(&carol.data_dir).await;
    let mut revoked_state = stolen(&a2.data_dir).await;
    for m in &held {
        let opened = open(&mut revoked_state, m);
        assert!(opened.is_err(), "the revoked device opened: {opened:?}");
    }
    assert!(
        conversation(&a2, &bob)
            .await
            .iter()
            .all(|m| m["body"] != "to every device of yours" && m["body"] != "from the new device")
    );
    // Alice's device, back, reads it.
    let a1 = Node::start_with(&tmp.path().join("a1"), on_port(ports[0])).await;
    wait_received(&a1, &bob, &["not for the revoked device"]).await;
}

/// `from` offers `file` to `to` (whose node is `to_node`); the transfer's id once `to_node`
/// shows the offer.
async fn offer_file(from: &Node, to_node: &Node, to: &str, file: &Path) -> String {
    let (status, offered) = from
        .post("/v1/transfers", serde_json::json!({"to": to, "path": file}))
        .await;
    assert_eq!(status, 201, "{offered}");
    let id = offered["id"].as_str().unwrap().to_owned();
    to_node
        .wait_for(
            &format!("/v1/transfers/{id}"),
            Duration::from_secs(20),
            |t| t["state"] == "offered",
        )
        .await;
    id
}

/// Copies a stopped node's data directory, permissions and all.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::metadata(from).unwrap().permissions()).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Alice and Bob in a conversation on MLS where Alice has been brought back from a copy of
/// her data (a snapshot of the machine, a copy of the directory) taken before her message
/// "two": the next thing she seals goes out under the key "two" used.
async fn restored_from_a_copy() -> (tempfile::TempDir, Node, Node, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut alice = Node::start_with(&tmp.path().join("alice"), on_port(port)).await;
    let bob = Node::start(&tmp.path().join("bob")).await;
    befriend(&alice, &bob).await;
    let (alice_id, _) = alice.ids().await;
    let (bob_id, _) = bob.ids().await;
    wait_ready(&alice, &bob_id).await;
    send(&alice, &bob_id, "one").await;
    wait_received(&bob, &alice_id, &["one"]).await;

    let dir = alice.data_dir.clone();
    assert!(alice.terminate().success());
    let copy = tmp.path().join("alice-copy");
    copy_dir(&dir, &copy);
    restart(&mut alice, port, "").await;
    send(&alice, &bob_id, "two").await;
    wait_received(&bob, &alice_id, &["two"]).await;

    assert!(alice.terminate().success());
    std::fs::remove_dir_all(&dir).unwrap();
    copy_dir(&copy, &dir);
    restart(&mut alice, port, "").await;
    (tmp, alice, bob, alice_id, bob_id)
}

/// The recipient cannot read a message sealed under a key used before, and says so; the
/// sender seals it again, and it arrives, once.
#[tokio::test]
async fn a_message_under_keys_used_before_is_sealed_again_and_arrives() {
    let (_tmp, alice, bob, alice_id, bob_id) = restored_from_a_copy().await;
    send(&alice, &bob_id, "three").await;
    wait_received(&bob, &alice_id, &["one", "two", "three"]).await;
    let (_, page) = bob
        .get(&format!("/v1/messages?with={alice_id}&limit=500"))
        .await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 3, "{page}");
}

/// The same for a file offer inside the conversation: sealed again, it is offered.
#[tokio::test]
async fn a_file_offer_under_keys_used_before_is_sealed_again_and_offered() {
    let (tmp, alice, bob, _, bob_id) = restored_from_a_copy().await;
    let file = tmp.path().join("notes.txt");
    std::fs::write(&file, b"a file offered after a restore").unwrap();
    offer_file(&alice, &bob, &bob_id, &file).await;
}
