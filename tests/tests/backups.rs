//! Backups held by friends, through the real binary: a user's backup spread over five
//! friends' nodes, its machine destroyed, and a fresh node restored from the recovery phrase
//! alone with two holders stopped — the same user, contacts, settings and history, a device
//! contacts accept; holders that cannot read what they hold, refuse past their quota, or
//! hand back a tampered or stale share; a wrong phrase that changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use volli_tests::{Node, Options, befriend, conversation, send, volli};

/// Sets up the backup: the phrase.
async fn setup(node: &Node) -> String {
    let (status, body) = node.post("/v1/backup/setup", json!({})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["words"].as_array().unwrap().len(), 12);
    body["phrase"].as_str().unwrap().to_owned()
}

/// Refreshes the backup now (again while a refresh the node started itself runs).
async fn refresh(node: &Node) -> Value {
    for _ in 0..100 {
        let (status, body) = node.post("/v1/backup/refresh", json!({})).await;
        if status == 409 && body["error"]["code"] == "backup_busy" {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(status, 200, "{body}");
        return body;
    }
    panic!("the backup stayed busy");
}

/// Waits until `node` lists `with`'s messages with all of `texts`.
async fn wait_for_texts(node: &Node, with: &str, texts: &[&str]) {
    node.wait_for(
        &format!("/v1/messages?with={with}&limit=500"),
        Duration::from_secs(60),
        |b| {
            let bodies: Vec<&str> = b["messages"]
                .as_array()
                .map(|m| m.iter().filter_map(|m| m["body"].as_str()).collect())
                .unwrap_or_default();
            texts.iter().all(|t| bodies.contains(t))
        },
    )
    .await;
}

/// Every byte of a node's database (and its write-ahead log).
fn database_bytes(dir: &Path) -> Vec<u8> {
    let mut out = std::fs::read(dir.join("volli.db")).unwrap();
    if let Ok(wal) = std::fs::read(dir.join("volli.db-wal")) {
        out.extend(wal);
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Restores `node` from `phrase` with the CLI (asking `from` first) and waits until it runs
/// as `user`.
async fn restore_with_cli(node: &Node, phrase: &str, from: &str, user: &str) {
    let dir = node.data_dir.display().to_string();
    let (phrase, from) = (phrase.to_owned(), from.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        volli(&[
            "--data-dir",
            &dir,
            "restore",
            "--phrase",
            &phrase,
            "--bootstrap",
            &from,
        ])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "restore failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.log()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("restored backup"), "{text}");
    node.wait_for("/v1/node", Duration::from_secs(30), |n| {
        n["user_id"] == user
    })
    .await;
}

#[tokio::test]
async fn a_user_comes_back_from_the_phrase_alone_with_two_holders_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = Node::start(&tmp.path().join("alice")).await;
    let mut friends = Vec::new();
    for i in 0..5 {
        let friend = Node::start(&tmp.path().join(format!("friend{i}"))).await;
        befriend(&alice, &friend).await;
        friends.push(friend);
    }
    let (alice_id, alice_peer) = alice.ids().await;
    let mut ids = Vec::new();
    for f in &friends {
        ids.push(f.ids().await.0);
    }
    // A history, settings, and a contact renamed.
    send(&alice, &ids[0], "the-plans-for-saturday").await;
    send(&friends[1], &alice_id, "bring the cake").await;
    send(&alice, &ids[1], "will do").await;
    let (status, body) = alice
        .request(
            reqwest::Method::PUT,
            "/v1/settings/ui.theme",
            Some(json!({"value": "dark"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = alice
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/contacts/{}", ids[2]),
            Some(json!({"name": "Cousin Carol"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_for_texts(&alice, &ids[1], &["bring the cake", "will do"]).await;
    wait_for_texts(&friends[0], &alice_id, &["the-plans-for-saturday"]).await;

    let (_, before) = alice.get("/v1/backup").await;
    assert_eq!(before["state"], "off");
    let phrase = setup(&alice).await;
    let done = refresh(&alice).await;
    assert_eq!(done["holders"], 5, "{done}");
    assert_eq!(done["can_lose"], 2, "{done}");
    let (_, status) = alice.get("/v1/backup").await;
    assert_eq!(status["state"], "ok", "{status}");
    assert_eq!(
        (status["k"].as_u64(), status["n"].as_u64()),
        (Some(3), Some(5))
    );
    assert!(status["updated_at"].is_string(), "{status}");
    assert!(status["bytes"].as_u64() > Some(0), "{status}");
    assert!(
        status["holders"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["current"] == true
                && h["online"] == true
                && h["updated_at"].is_string()
                && h["bytes"].as_u64() > Some(0)),
        "{status}"
    );
    // Shown once: a second setup is refused and changes nothing.
    let (code, body) = alice.post("/v1/backup/setup", json!({})).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"]["code"], "backup_exists");
    // Each holder holds something for a contact, and how much: nothing it can read.
    for (i, f) in friends.iter().enumerate() {
        let (_, held) = f.get("/v1/backup").await;
        assert_eq!(held["held"]["contacts"], 1, "{held}");
        assert!(held["held"]["bytes"].as_u64() > Some(0));
        if i != 0 {
            let bytes = database_bytes(&f.data_dir);
            assert!(!contains(&bytes, "the-plans-for-saturday"), "holder {i}");
            assert!(!contains(&bytes, "Cousin Carol"), "holder {i}");
        }
    }

    // The machine is lost, and two holders are away.
    let mut alice = alice;
    alice.kill();
    std::fs::remove_dir_all(&alice.data_dir).unwrap();
    let mut friends = friends;
    friends[3].terminate();
    friends[4].terminate();

    let fresh = Node::start(&tmp.path().join("fresh")).await;
    let (fresh_user, fresh_peer) = fresh.ids().await;
    let from = friends[0].p2p_addr().await;
    // Not a phrase, and a phrase of no backup: refused, nothing changes.
    let (status, body) = fresh
        .post(
            "/v1/backup/restore",
            json!({"phrase": "these are not the words you are looking for at all ok", "bootstrap": [from]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_phrase");
    let other = volli_core::backup::RecoveryPhrase::generate().unwrap();
    let (status, body) = fresh
        .post(
            "/v1/backup/restore",
            json!({"phrase": other.words().as_str(), "bootstrap": [from]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_phrase");
    assert_eq!(fresh.ids().await, (fresh_user.clone(), fresh_peer.clone()));
    let (_, contacts) = fresh.get("/v1/contacts").await;
    assert_eq!(contacts["contacts"].as_array().unwrap().len(), 0);

    // The phrase alone (and a friend's address to start from).
    restore_with_cli(&fresh, &phrase, &from, &alice_id).await;
    let (user, peer) = fresh.ids().await;
    assert_eq!(user, alice_id, "the same user");
    assert_eq!(peer, fresh_peer, "its own device key");
    let (_, contacts) = fresh.get("/v1/contacts").await;
    let contacts = contacts["contacts"].as_array().unwrap();
    assert_eq!(contacts.len(), 5);
    assert!(contacts.iter().any(|c| c["name"] == "Cousin Carol"));
    let (_, theme) = fresh.get("/v1/settings/ui.theme").await;
    assert_eq!(theme["value"], "dark", "{theme}");
    let history: Vec<String> = conversation(&fresh, &ids[1])
        .await
        .iter()
        .filter_map(|m| m["body"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(history, ["bring the cake", "will do"]);
    // The device the backup was made on is revoked; this one is the user's device.
    let devices = fresh
        .wait_for("/v1/devices", Duration::from_secs(20), |d| {
            d["devices"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["peer_id"] == alice_peer.as_str() && d["revoked"] == true)
        })
        .await;
    assert!(
        devices["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["peer_id"] == peer.as_str() && d["this_device"] == true)
    );

    // Contacts accept it as the user's device: messages both ways.
    friends[0]
        .wait_for(
            &format!("/v1/contacts/{alice_id}"),
            Duration::from_secs(60),
            |c| {
                c["devices"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|d| d == peer.as_str()))
            },
        )
        .await;
    send(&fresh, &ids[0], "back from the dead").await;
    wait_for_texts(&friends[0], &alice_id, &["back from the dead"]).await;
    send(&friends[1], &alice_id, "welcome back").await;
    wait_for_texts(&fresh, &ids[1], &["welcome back"]).await;

    // The restored device goes on with the backup, to the same holders.
    let status = fresh
        .wait_for("/v1/backup", Duration::from_secs(10), |b| {
            b["seq"].as_u64() >= Some(1)
        })
        .await;
    assert_ne!(status["state"], "off", "{status}");
}

/// A holder past its quota refuses, and its slot moves to the next friend that offers room.
#[tokio::test]
async fn a_holder_over_quota_refuses_and_another_friend_takes_its_share() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = Node::start(&tmp.path().join("alice")).await;
    let mut friends = Vec::new();
    for i in 0..5 {
        // One offers little room: in its config file, or (friend 2) as the setting.
        let options = if i == 4 {
            Options {
                config: "[backup]\noffer_bytes = 900000000\n".into(),
                ..Options::default()
            }
        } else {
            Options::default()
        };
        let friend = Node::start_with(&tmp.path().join(format!("friend{i}")), options).await;
        befriend(&alice, &friend).await;
        friends.push(friend);
    }
    let small = friends[2].ids().await.0;
    // What a node offers may also be set as a setting, checked.
    let (code, body) = friends[3]
        .request(
            reqwest::Method::PUT,
            "/v1/settings/backup.offer_bytes",
            Some(json!({"value": "lots"})),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_setting_value");
    let (code, body) = friends[2]
        .request(
            reqwest::Method::PUT,
            "/v1/settings/backup.offer_bytes",
            Some(json!({"value": 1000})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (alice_id, _) = alice.ids().await;
    for i in 0..20 {
        send(&alice, &friends[0].ids().await.0, &format!("message {i}")).await;
    }
    setup(&alice).await;
    let done = refresh(&alice).await;
    assert_eq!(done["holders"], 4, "{done}");
    let (_, status) = alice.get("/v1/backup").await;
    let refused = status["holders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["user_id"] == small.as_str())
        .unwrap()
        .clone();
    assert!(
        refused["refused"].as_str().unwrap().contains("over quota"),
        "{status}"
    );
    assert_eq!(refused["current"], false);
    assert_eq!(status["can_lose"], 1, "{status}");
    let (_, held) = friends[2].get("/v1/backup").await;
    assert_eq!(held["held"]["bytes"], 0, "{held}");
    assert_eq!(held["held"]["offer_bytes"], 1000, "{held}");
    let (_, held) = friends[4].get("/v1/backup").await;
    assert_eq!(held["held"]["offer_bytes"], 900_000_000u64, "{held}");

    // A sixth friend with room: the share moves there.
    let sixth = Node::start(&tmp.path().join("friend5")).await;
    befriend(&alice, &sixth).await;
    let sixth_id = sixth.ids().await.0;
    alice
        .wait_for("/v1/peers", Duration::from_secs(20), |p| {
            p["peers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["user_id"] == sixth_id.as_str() && p["connected"] == true)
        })
        .await;
    let done = refresh(&alice).await;
    assert_eq!(done["holders"], 5, "{done}");
    let (_, status) = alice.get("/v1/backup").await;
    let holders: Vec<&str> = status["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["user_id"].as_str().unwrap())
        .collect();
    assert!(!holders.contains(&small.as_str()), "{status}");
    assert!(holders.contains(&sixth_id.as_str()), "{status}");
    assert_eq!(status["can_lose"], 2, "{status}");
    let (_, held) = sixth.get("/v1/backup").await;
    assert!(held["held"]["bytes"].as_u64() > Some(0), "{held}");
    drop(alice_id);
}

/// A holder that hands back a tampered share, and one that hands back an older backup, are
/// found out: the restore uses the newest backup, from the holders whose shares match it.
#[tokio::test]
async fn tampered_and_stale_shares_are_set_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = Node::start(&tmp.path().join("alice")).await;
    let mut friends = Vec::new();
    for i in 0..5 {
        let port = volli_tests::free_port();
        let friend = Node::start_with(
            &tmp.path().join(format!("friend{i}")),
            volli_tests::on_port(port),
        )
        .await;
        befriend(&alice, &friend).await;
        friends.push((friend, port));
    }
    let (alice_id, _) = alice.ids().await;
    let bob = friends[0].0.ids().await.0;
    send(&alice, &bob, "first").await;
    let phrase = setup(&alice).await;
    assert_eq!(refresh(&alice).await["holders"], 5);

    // Holder 1 keeps a copy of what it holds now, to hand back later.
    let stale_dir = tmp.path().join("stale-copy");
    {
        let (node, _) = &mut friends[1];
        node.terminate();
        std::fs::create_dir_all(&stale_dir).unwrap();
        std::fs::copy(node.data_dir.join("volli.db"), stale_dir.join("volli.db")).unwrap();
    }
    let restarted =
        Node::start_with(&friends[1].0.data_dir, volli_tests::on_port(friends[1].1)).await;
    friends[1].0 = restarted;
    alice
        .wait_for(
            &format!("/v1/contacts/{}", friends[1].0.ids().await.0),
            Duration::from_secs(30),
            |_| true,
        )
        .await;
    send(&alice, &bob, "second, after the first backup").await;
    wait_for_texts(
        &friends[0].0,
        &alice_id,
        &["second, after the first backup"],
    )
    .await;
    // Until holder 1 is back in touch, the refresh may find it away.
    let mut done = refresh(&alice).await;
    for _ in 0..20 {
        if done["holders"] == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        done = refresh(&alice).await;
    }
    assert_eq!(done["holders"], 5, "{done}");
    assert!(
        done["parts_sealed"].as_u64() < done["parts"].as_u64(),
        "incremental: {done}"
    );

    // Alice's node is gone first (it would otherwise store fresh shares at a holder that
    // comes back). Then holder 1 goes back to its older copy; another alters every share
    // it holds.
    // The tampered holder is the one with the lowest share number among those that hold
    // the newest backup: a restore asks holders in that order, so it meets the tampering.
    let (_, view) = alice.get("/v1/backup").await;
    let stale_user = friends[1].0.ids().await.0;
    let mut tampered = None;
    let mut lowest = u64::MAX;
    for (i, (friend, _)) in friends.iter().enumerate() {
        let user = friend.ids().await.0;
        if user == stale_user {
            continue;
        }
        let slot = view["holders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["user_id"] == user.as_str())
            .and_then(|h| h["slot"].as_u64())
            .unwrap_or_else(|| panic!("{user} holds no share: {view}"));
        if slot < lowest {
            (lowest, tampered) = (slot, Some(i));
        }
    }
    let tampered = tampered.unwrap();
    let mut alice = alice;
    alice.kill();
    {
        let (node, port) = &mut friends[1];
        node.terminate();
        std::fs::copy(stale_dir.join("volli.db"), node.data_dir.join("volli.db")).unwrap();
        let _ = std::fs::remove_file(node.data_dir.join("volli.db-wal"));
        let _ = std::fs::remove_file(node.data_dir.join("volli.db-shm"));
        *node = Node::start_with(&node.data_dir.clone(), volli_tests::on_port(*port)).await;
    }
    {
        let (node, port) = &mut friends[tampered];
        node.terminate();
        let db = sqlx::SqlitePool::connect(&format!(
            "sqlite:{}",
            node.data_dir.join("volli.db").display()
        ))
        .await
        .unwrap();
        let changed = sqlx::query(
            "UPDATE backup_held SET bytes = zeroblob(size) WHERE piece != zeroblob(16)",
        )
        .execute(&db)
        .await
        .unwrap();
        assert!(changed.rows_affected() > 0);
        db.close().await;
        *node = Node::start_with(&node.data_dir.clone(), volli_tests::on_port(*port)).await;
    }

    let fresh = Node::start(&tmp.path().join("fresh")).await;
    let from: Vec<String> = {
        let mut v = Vec::new();
        for (f, _) in &friends {
            v.push(f.p2p_addr().await);
        }
        v
    };
    let mut events = volli_tests::events(&fresh).await;
    let (status, body) = fresh
        .post(
            "/v1/backup/restore",
            json!({"phrase": phrase, "bootstrap": from}),
        )
        .await;
    assert_eq!(status, 202, "{body}\n{}", fresh.log());
    assert_eq!(body["state"], "restoring", "{body}");
    volli_tests::next_event(
        &mut events,
        "backup.restored",
        Duration::from_secs(10),
        |e| e["user_id"] == alice_id.as_str(),
    )
    .await;
    // The newest backup (the node may have refreshed once more by itself), not the older
    // one holder 1 hands back.
    assert!(body["seq"].as_u64() >= Some(2), "{body}");
    assert!(body["shares_rejected"].as_u64() > Some(0), "{body}");
    fresh
        .wait_for("/v1/node", Duration::from_secs(30), |n| {
            n["user_id"] == alice_id.as_str()
        })
        .await;
    let history: Vec<String> = conversation(&fresh, &bob)
        .await
        .iter()
        .filter_map(|m| m["body"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(history, ["first", "second, after the first backup"]);
}

/// The node refreshes its backup by itself soon after a burst of changes, sending only what
/// changed.
#[tokio::test]
async fn a_burst_of_changes_refreshes_the_backup_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = Node::start_with(
        &tmp.path().join("alice"),
        Options {
            config: "[backup]\nrefresh_after_changes = 5\n".into(),
            ..Options::default()
        },
    )
    .await;
    let mut friends = Vec::new();
    for i in 0..3 {
        let friend = Node::start(&tmp.path().join(format!("friend{i}"))).await;
        befriend(&alice, &friend).await;
        friends.push(friend);
    }
    let bob = friends[0].ids().await.0;
    let mut events = volli_tests::events(&alice).await;
    setup(&alice).await;
    // Set up, it backs up at once without being asked.
    let first = volli_tests::next_event(
        &mut events,
        "backup.refreshed",
        Duration::from_secs(30),
        |_| true,
    )
    .await;
    assert_eq!(first["holders"], 3, "{first}");
    assert_eq!(first["can_lose"], 1, "{first}");
    let (_, status) = alice.get("/v1/backup").await;
    let full = status["last_sent_bytes"].as_u64().unwrap();
    assert_eq!(
        (status["k"].as_u64(), status["n"].as_u64()),
        (Some(2), Some(3))
    );

    for i in 0..8 {
        send(&alice, &bob, &format!("burst {i}")).await;
    }
    let again = volli_tests::next_event(
        &mut events,
        "backup.refreshed",
        Duration::from_secs(60),
        |e| e["seq"].as_u64() > first["seq"].as_u64(),
    )
    .await;
    assert_eq!(again["holders"], 3, "{again}");
    assert!(
        again["bytes_sent"].as_u64().unwrap() < full,
        "only what changed: {again} after {full} bytes"
    );
}

/// In a deployment no friend's address is at hand: the fresh node knows only a public
/// bootstrap node (here a hub that holds nothing), and finds the holders in the DHT under a
/// key derived from the phrase.
#[tokio::test]
async fn the_phrase_alone_finds_the_holders_through_the_dht() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Node::start_with(
        &tmp.path().join("hub"),
        Options {
            config: "[network]\nlan = false\n".into(),
            ..Options::default()
        },
    )
    .await;
    let hub_addr = hub.p2p_addr().await;
    let options = Options {
        args: vec!["--bootstrap".into(), hub_addr.clone()],
        config: "[network]\nlan = false\n[plugins.rendezvous]\nenabled = false\n".into(),
        ..Options::default()
    };
    let alice = Node::start_with(&tmp.path().join("alice"), options.clone()).await;
    let mut friends = Vec::new();
    for i in 0..3 {
        let friend =
            Node::start_with(&tmp.path().join(format!("friend{i}")), options.clone()).await;
        befriend(&alice, &friend).await;
        friends.push(friend);
    }
    let (alice_id, _) = alice.ids().await;
    let bob = friends[0].ids().await.0;
    send(&alice, &bob, "found through the dht").await;
    let phrase = setup(&alice).await;
    assert_eq!(refresh(&alice).await["holders"], 3);
    let mut alice = alice;
    alice.kill();
    std::fs::remove_dir_all(&alice.data_dir).unwrap();

    let fresh = Node::start_with(&tmp.path().join("fresh"), options).await;
    let started = std::time::Instant::now();
    let mut answer = (0, Value::Null);
    // The holders' provider records may still be on their way to the DHT.
    for _ in 0..20 {
        answer = fresh
            .post("/v1/backup/restore", json!({"phrase": phrase}))
            .await;
        if answer.0 == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(answer.0, 202, "{}\n{}", answer.1, fresh.log());
    fresh
        .wait_for("/v1/node", Duration::from_secs(30), |n| {
            n["user_id"] == alice_id.as_str()
        })
        .await;
    eprintln!("restored through the DHT in {:?}", started.elapsed());
    for line in fresh
        .log()
        .lines()
        .filter(|l| l.contains("may hold the backup"))
    {
        eprintln!("{line}");
    }
    let history: Vec<String> = conversation(&fresh, &bob)
        .await
        .iter()
        .filter_map(|m| m["body"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(history, ["found through the dht"]);
    drop(hub);
}

/// Sends `body` to group `id` from `node`.
async fn group_send(node: &Node, id: &str, body: &str) {
    let (status, sent) = node
        .post("/v1/messages", json!({"group": id, "body": body}))
        .await;
    assert_eq!(status, 202, "{sent}");
}

/// Waits until `node` lists `body` among group `id`'s messages.
async fn group_shows(node: &Node, id: &str, body: &str) {
    node.wait_for(
        &format!("/v1/messages?group={id}&limit=100"),
        Duration::from_secs(60),
        |l| l.to_string().contains(body),
    )
    .await;
}

/// The group a restored user was in takes its new device back: the group's messages from
/// before (from the backup) and after (through the group) are on it, and it writes there.
#[tokio::test]
async fn a_restored_device_is_taken_back_into_its_groups() {
    const WAIT: Duration = Duration::from_secs(60);
    let tmp = tempfile::tempdir().unwrap();
    let alice = Node::start(&tmp.path().join("alice")).await;
    let bob = Node::start(&tmp.path().join("bob")).await;
    let carol = Node::start(&tmp.path().join("carol")).await;
    let dave = Node::start(&tmp.path().join("dave")).await;
    for f in [&bob, &carol, &dave] {
        befriend(&alice, f).await;
    }
    befriend(&bob, &carol).await;
    let (alice_id, _) = alice.ids().await;
    let (carol_id, _) = carol.ids().await;
    for with in [&alice_id, &carol_id] {
        bob.wait_for(&format!("/v1/conversations/{with}"), WAIT, |c| {
            c["ready"] == true
        })
        .await;
    }
    let (status, group) = bob
        .post(
            "/v1/groups",
            json!({"name": "climbing", "members": [alice_id, carol_id]}),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let id = group["id"].as_str().unwrap().to_owned();
    alice
        .wait_for(&format!("/v1/groups/{id}"), WAIT, |g| {
            g["name"] == "climbing"
        })
        .await;
    group_send(&bob, &id, "rope-is-packed").await;
    group_shows(&alice, &id, "rope-is-packed").await;

    let phrase = setup(&alice).await;
    let done = refresh(&alice).await;
    assert!(done["holders"].as_u64() >= Some(2), "{done}");
    let mut alice = alice;
    alice.kill();
    std::fs::remove_dir_all(&alice.data_dir).unwrap();

    let fresh = Node::start(&tmp.path().join("fresh")).await;
    let from = dave.p2p_addr().await;
    restore_with_cli(&fresh, &phrase, &from, &alice_id).await;
    let (_, peer) = fresh.ids().await;
    let (_, history) = fresh
        .get(&format!("/v1/messages?group={id}&limit=100"))
        .await;
    assert!(history.to_string().contains("rope-is-packed"), "{history}");
    // The group's committer takes the user's new device in, and drops the old one.
    bob.wait_for(&format!("/v1/groups/{id}"), WAIT, |g| {
        g["members"].as_array().into_iter().flatten().any(|m| {
            m["user_id"] == alice_id.as_str()
                && m["devices"]
                    .as_array()
                    .is_some_and(|d| d.len() == 1 && d[0] == peer.as_str())
        })
    })
    .await;
    fresh
        .wait_for(&format!("/v1/groups/{id}"), WAIT, |g| {
            g["name"] == "climbing"
        })
        .await;
    group_send(&carol, &id, "see-you-at-eight").await;
    group_shows(&fresh, &id, "see-you-at-eight").await;
    group_send(&fresh, &id, "back-on-the-wall").await;
    group_shows(&bob, &id, "back-on-the-wall").await;
}
