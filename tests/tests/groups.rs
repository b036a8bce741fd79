//! Group conversations through the real binary: groups of contacts on MLS across every
//! member's devices, members who are strangers to each other (their mail carried by a
//! member who knows them), admins' changes, removal, a member offline catching up, and the
//! API's refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use volli_tests::{Node, Options, befriend, events, free_port, next_event, on_port, pair, volli};

const WAIT: Duration = Duration::from_secs(60);

/// Waits until `node` holds key packages of `with`'s devices (their conversation could move
/// to MLS): a group with `with` then takes its devices at once.
async fn ready(node: &Node, with: &str) {
    node.wait_for(&format!("/v1/conversations/{with}"), WAIT, |c| {
        c["ready"] == true
    })
    .await;
}

/// Waits until group `id` on `node` shows `user` with `devices` devices (0: not a member).
async fn member_devices(node: &Node, id: &str, user: &str, devices: usize) -> Value {
    node.wait_for(&format!("/v1/groups/{id}"), WAIT, |g| {
        let found = g["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["user_id"] == user);
        match found {
            Some(m) => m["devices"].as_array().map_or(0, Vec::len) == devices,
            None => devices == 0,
        }
    })
    .await
}

/// Sends `body` to group `id` from `node`; the message id.
async fn send_group(node: &Node, id: &str, body: &str) -> String {
    let (status, answer) = node
        .post("/v1/messages", json!({"group": id, "body": body}))
        .await;
    assert_eq!(status, 202, "{answer}");
    answer["id"].as_str().unwrap().to_owned()
}

/// The bodies of group `id`'s messages on `node`.
async fn bodies(node: &Node, id: &str) -> Vec<String> {
    let (status, list) = node
        .get(&format!("/v1/messages?group={id}&limit=500"))
        .await;
    assert_eq!(status, 200, "{list}");
    list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect()
}

async fn wait_body(node: &Node, id: &str, body: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if bodies(node, id).await.iter().any(|b| b == body) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{body:?} never reached {}: {:?}\n{}",
            node.url,
            bodies(node, id).await,
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn strangers_in_a_group_read_each_other_through_the_member_who_knows_both() {
    let dir = tempfile::tempdir().unwrap();
    let alice = Node::start(&dir.path().join("alice")).await;
    let bob = Node::start(&dir.path().join("bob")).await;
    let carol = Node::start(&dir.path().join("carol")).await;
    // Alice knows Bob and Carol; they do not know each other.
    befriend(&alice, &bob).await;
    befriend(&alice, &carol).await;
    let (a, _) = alice.ids().await;
    let (b, _) = bob.ids().await;
    let (c, _) = carol.ids().await;
    ready(&alice, &b).await;
    ready(&alice, &c).await;

    let mut carol_events = events(&carol).await;
    let (status, group) = alice
        .post(
            "/v1/groups",
            json!({"name": "book club", "members": [b, c]}),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let id = group["id"].as_str().unwrap().to_owned();
    assert_eq!(group["name"], "book club");
    assert_eq!(group["members"][0]["user_id"], a.as_str());
    assert_eq!(group["members"][0]["role"], "admin");
    assert_eq!(group["members"][1]["role"], "member");
    // Carol's node joins through the Welcome (carried by nobody: Alice knows her).
    let created = next_event(&mut carol_events, "group.created", WAIT, |_| true).await;
    assert_eq!(created["group"], id.as_str());
    assert_eq!(created["name"], "book club");
    for node in [&bob, &carol] {
        member_devices(node, &id, &c, 1).await;
        member_devices(node, &id, &b, 1).await;
    }

    // Bob writes; Carol, whom he does not know, reads it (Alice's node carries it).
    let hello = send_group(&bob, &id, "hello everyone").await;
    let got = next_event(&mut carol_events, "group.message", WAIT, |e| {
        e["body"] == "hello everyone"
    })
    .await;
    assert_eq!(got["from"], b.as_str());
    assert_eq!(got["group"], id.as_str());
    wait_body(&alice, &id, "hello everyone").await;
    // Carol's own receipt comes back to Bob through Alice: both members `delivered`.
    bob.wait_for(&format!("/v1/messages?group={id}&limit=10"), WAIT, |l| {
        l["messages"].as_array().unwrap().iter().any(|m| {
            m["id"] == hello.as_str()
                && m["status"] == "delivered"
                && m["receipts"]
                    .as_array()
                    .is_some_and(|r| r.len() == 2 && r.iter().all(|x| x["status"] == "delivered"))
        })
    })
    .await;
    // And back.
    send_group(&carol, &id, "hi bob").await;
    wait_body(&bob, &id, "hi bob").await;
    let (_, list) = bob.get(&format!("/v1/messages?group={id}&limit=10")).await;
    let last = list["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["from"], c.as_str());
    assert_eq!(last["group"], id.as_str());

    // Per-member receipts on the sender's side.
    let sent = send_group(&alice, &id, "receipts, please").await;
    alice
        .wait_for(&format!("/v1/messages?group={id}&limit=10"), WAIT, |l| {
            l["messages"].as_array().unwrap().iter().any(|m| {
                m["id"] == sent.as_str()
                    && m["status"] == "delivered"
                    && m["receipts"].as_array().is_some_and(|r| {
                        r.len() == 2 && r.iter().all(|x| x["status"] == "delivered")
                    })
            })
        })
        .await;

    // A member who is no admin changes nothing: 403, and nothing moves.
    let (status, refused) = bob
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/groups/{id}/members/{c}"),
            None,
        )
        .await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "not_group_admin");
    let (status, refused) = bob
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/groups/{id}"),
            Some(json!({"name": "mine"})),
        )
        .await;
    assert_eq!(status, 403, "{refused}");

    // The admin removes Carol: she reads nothing said after it.
    let mut bob_events = events(&bob).await;
    let (status, after) = alice
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/groups/{id}/members/{c}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{after}");
    assert!(
        after["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["user_id"] != c.as_str())
    );
    next_event(&mut bob_events, "group.changed", WAIT, |e| {
        e["group"] == id.as_str()
    })
    .await;
    next_event(&mut carol_events, "group.changed", WAIT, |e| {
        e["group"] == id.as_str() && e["left"] == true
    })
    .await;
    send_group(&bob, &id, "carol is gone").await;
    wait_body(&alice, &id, "carol is gone").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !bodies(&carol, &id)
            .await
            .contains(&"carol is gone".to_owned())
    );
    let (status, _) = carol.get(&format!("/v1/groups/{id}")).await;
    assert_eq!(status, 404);
}

/// Nodes named `names` under `dir`, started at once.
async fn start_nodes<const N: usize>(dir: &std::path::Path, names: [&str; N]) -> [Node; N] {
    let paths = names.map(|n| dir.join(n));
    let nodes = futures::future::join_all(paths.iter().map(|p| Node::start(p))).await;
    match nodes.try_into() {
        Ok(nodes) => nodes,
        Err(_) => unreachable!("one node per name"),
    }
}

/// `creator` makes group `name` with `members` and promotes `admin` (one of them); its id.
async fn group_with_admin(creator: &Node, name: &str, members: &[&str], admin: &str) -> String {
    let (status, group) = creator
        .post("/v1/groups", json!({"name": name, "members": members}))
        .await;
    assert_eq!(status, 201, "{group}");
    let id = group["id"].as_str().unwrap().to_owned();
    let (status, promoted) = creator
        .request(
            reqwest::Method::PUT,
            &format!("/v1/groups/{id}/members/{admin}"),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(status, 200, "{promoted}");
    id
}

/// `admin` adds `user` to group `id`, once its node knows it is an admin (the commit that
/// made it one may still be on its way).
async fn add_member(admin: &Node, id: &str, user: &str) {
    let (me, _) = admin.ids().await;
    admin
        .wait_for(&format!("/v1/groups/{id}"), WAIT, |g| {
            g["members"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["user_id"] == me.as_str() && m["role"] == "admin")
        })
        .await;
    let (status, added) = admin
        .post(
            &format!("/v1/groups/{id}/members"),
            json!({"user_id": user}),
        )
        .await;
    assert_eq!(status, 200, "{added}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_device_of_a_member_the_committer_does_not_know_joins_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let [alice, bob, carol, carol2] =
        start_nodes(dir.path(), ["alice", "bob", "carol", "carol2"]).await;
    // Alice knows Bob; Bob knows Carol; Alice does not know Carol.
    befriend(&alice, &bob).await;
    befriend(&bob, &carol).await;
    let (b, _) = bob.ids().await;
    let (c, _) = carol.ids().await;
    ready(&alice, &b).await;
    ready(&bob, &c).await;
    let id = group_with_admin(&alice, "pairs", &[&b], &b).await;
    bob.wait_for(&format!("/v1/groups/{id}"), WAIT, |g| {
        g["members"][1]["role"] == "admin"
    })
    .await;
    add_member(&bob, &id, &c).await;
    member_devices(&alice, &id, &c, 1).await;

    // Carol pairs a second device. Alice, who orders the group, has no card of Carol's:
    // Carol's node hands the new device's key package over, and it joins.
    pair(&carol, &carol2, None).await;
    member_devices(&alice, &id, &c, 2).await;
    member_devices(&carol2, &id, &c, 2).await;
    send_group(&alice, &id, "hello, both of you").await;
    wait_body(&carol2, &id, "hello, both of you").await;
    send_group(&carol2, &id, "from my new device").await;
    wait_body(&alice, &id, "from my new device").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_whose_sponsor_is_removed_is_carried_by_a_member_it_knows() {
    let dir = tempfile::tempdir().unwrap();
    let [alice, bob, carol, dave] =
        start_nodes(dir.path(), ["alice", "bob", "carol", "dave"]).await;
    // Alice knows Bob and Carol; Dave knows Bob and Carol, not Alice.
    befriend(&alice, &bob).await;
    befriend(&alice, &carol).await;
    befriend(&bob, &dave).await;
    befriend(&carol, &dave).await;
    let (b, _) = bob.ids().await;
    let (c, _) = carol.ids().await;
    let (d, _) = dave.ids().await;
    ready(&alice, &b).await;
    ready(&alice, &c).await;
    ready(&bob, &d).await;
    let id = group_with_admin(&alice, "relay race", &[&b, &c], &b).await;
    member_devices(&bob, &id, &c, 1).await;
    // Bob brings Dave in: Bob carries Dave's group mail.
    add_member(&bob, &id, &d).await;
    member_devices(&dave, &id, &d, 1).await;
    send_group(&alice, &id, "welcome dave").await;
    wait_body(&dave, &id, "welcome dave").await;

    // Alice removes Bob. The roster passes Dave to Alice, whom he does not know; his node
    // asks to be carried by Carol, whom he does.
    let (status, _) = alice
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/groups/{id}/members/{b}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    alice
        .wait_for(&format!("/v1/groups/{id}"), WAIT, |g| {
            g["members"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["user_id"] == d.as_str() && m["sponsor"] == c.as_str())
        })
        .await;
    // Alice's mail reaches Dave through Carol, and Dave's reaches Alice.
    send_group(&alice, &id, "still with us, dave?").await;
    wait_body(&dave, &id, "still with us, dave?").await;
    send_group(&dave, &id, "yes, through carol").await;
    wait_body(&alice, &id, "yes, through carol").await;
    assert!(
        !bodies(&bob, &id)
            .await
            .contains(&"still with us, dave?".to_owned())
    );

    // Each change of the roster is a line of the conversation, once, on the committer's
    // node and on a member's alike: Bob made an admin, Dave added by Bob, Bob gone.
    let expected = [
        json!({"role": "admin", "user": b}),
        json!({"added": d, "by": b}),
        json!({"removed": b}),
    ];
    for node in [&alice, &carol] {
        let lines = node
            .wait_for(&format!("/v1/messages?group={id}&limit=500"), WAIT, |l| {
                let lines = system_lines(l);
                expected.iter().all(|e| lines.contains(e))
            })
            .await;
        let lines = system_lines(&lines);
        for e in &expected {
            assert_eq!(
                lines.iter().filter(|l| *l == e).count(),
                1,
                "{e} once on {}: {lines:?}",
                node.url
            );
        }
    }
    // Lines are not unread messages: Carol, who read nothing, has the others' texts unread.
    wait_body(&carol, &id, "yes, through carol").await;
    let (_, page) = carol
        .get(&format!("/v1/messages?group={id}&limit=500"))
        .await;
    let texts = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] != "system" && m["from"] != c.as_str())
        .count();
    let (_, chats) = carol.get("/v1/conversations").await;
    let chat = chats["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["group"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(chat["unread"], texts, "the others' texts only: {chat}");
}

/// The system lines of a page of messages.
fn system_lines(page: &Value) -> Vec<Value> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "system")
        .map(|m| m["system"].clone())
        .collect()
}

/// A received file's bytes.
async fn file_content(node: &Node, id: &str) -> Vec<u8> {
    let response = reqwest::Client::new()
        .get(format!("{}/v1/transfers/{id}/content", node.url))
        .bearer_auth(&node.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap().to_vec()
}

/// Uploads `data` as `name` from `node` to group `id`: the outgoing transfer.
async fn upload_to_group(node: &Node, id: &str, name: &str, data: &[u8]) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/transfers?group={id}&name={name}", node.url))
        .bearer_auth(&node.token)
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// Waits until transfer `id` on `node` is `state`.
async fn transfer_state(node: &Node, id: &str, state: &str) -> Value {
    node.wait_for(&format!("/v1/transfers/{id}"), WAIT, |t| {
        assert!(
            t["state"] != "failed" || state == "failed",
            "the transfer failed: {t}"
        );
        t["state"] == state
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_offered_to_a_group_reaches_every_member_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let alice = Node::start(&dir.path().join("alice")).await;
    let bob = Node::start(&dir.path().join("bob")).await;
    let carol = Node::start(&dir.path().join("carol")).await;
    // Alice knows Bob and Carol; Bob and Carol do not know each other.
    befriend(&alice, &bob).await;
    befriend(&alice, &carol).await;
    let (b, _) = bob.ids().await;
    let (c, _) = carol.ids().await;
    ready(&alice, &b).await;
    ready(&alice, &c).await;
    let (status, group) = alice
        .post("/v1/groups", json!({"name": "photos", "members": [b, c]}))
        .await;
    assert_eq!(status, 201, "{group}");
    let id = group["id"].as_str().unwrap().to_owned();
    for node in [&bob, &carol] {
        member_devices(node, &id, &c, 1).await;
        member_devices(node, &id, &b, 1).await;
    }
    // Carol takes files from the group's members without asking.
    let (status, body) = carol
        .request(
            reqwest::Method::PUT,
            "/v1/settings/transfers.auto_accept_bytes",
            Some(json!({"value": 50 << 20})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Bob offers a file to the group, once.
    let mut alice_events = events(&alice).await;
    let mut carol_events = events(&carol).await;
    let data: Vec<u8> = (0..(3u32 << 20) + 4321)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let sent = upload_to_group(&bob, &id, "holiday.bin", &data).await;
    let t = sent["id"].as_str().unwrap().to_owned();
    assert_eq!(sent["group"], id.as_str());
    assert_eq!(sent["peer"], id.as_str());
    assert_eq!(sent["direction"], "outgoing");

    // Each member's node is offered it as a file from Bob in the group.
    for events in [&mut alice_events, &mut carol_events] {
        let offered = next_event(events, "transfer.offered", WAIT, |e| e["id"] == t.as_str()).await;
        assert_eq!(offered["from"], b.as_str());
        assert_eq!(offered["group"], id.as_str());
        assert_eq!(offered["name"], "holiday.bin");
    }
    // Carol accepted at once, but cannot reach Bob: she fetches through Alice, whose user
    // has not decided yet. Alice's node passes the chunks on from Bob without keeping them.
    let got = transfer_state(&carol, &t, "completed").await;
    assert_eq!(got["peer"], b.as_str());
    assert_eq!(got["group"], id.as_str());
    assert!(file_content(&carol, &t).await == data);
    let (_, undecided) = alice.get(&format!("/v1/transfers/{t}")).await;
    assert_eq!(undecided["state"], "offered", "{undecided}");
    assert_eq!(undecided["bytes_done"], 0, "{undecided}");
    let (status, _) = alice
        .request(
            reqwest::Method::GET,
            &format!("/v1/transfers/{t}/content"),
            None,
        )
        .await;
    assert_eq!(status, 409, "Alice holds nothing of it");
    // Alice accepts: she fetches it from Bob.
    let (status, accepted) = alice
        .post(&format!("/v1/transfers/{t}/accept"), json!({}))
        .await;
    assert_eq!(status, 200, "{accepted}");
    transfer_state(&alice, &t, "completed").await;
    assert!(file_content(&alice, &t).await == data);
    // Bob's side is done once every member who fetches from him has it.
    let done = transfer_state(&bob, &t, "completed").await;
    assert_eq!(done["bytes_done"], data.len());

    // A file Alice declines still reaches Carol through her, byte for byte (Carol takes
    // it after Alice has declined).
    let (status, body) = carol
        .request(
            reqwest::Method::PUT,
            "/v1/settings/transfers.auto_accept_bytes",
            Some(json!({"value": 0})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let small: Vec<u8> = data[..(1 << 20) + 99].iter().rev().copied().collect();
    let menu = upload_to_group(&bob, &id, "menu.bin", &small).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    transfer_state(&alice, &menu, "offered").await;
    let (status, declined) = alice
        .post(&format!("/v1/transfers/{menu}/decline"), json!({}))
        .await;
    assert_eq!(status, 200, "{declined}");
    transfer_state(&carol, &menu, "offered").await;
    let (status, accepted) = carol
        .post(&format!("/v1/transfers/{menu}/accept"), json!({}))
        .await;
    assert_eq!(status, 200, "{accepted}");
    transfer_state(&carol, &menu, "completed").await;
    assert!(file_content(&carol, &menu).await == small);
    let (_, still) = alice.get(&format!("/v1/transfers/{menu}")).await;
    assert_eq!(still["state"], "declined", "{still}");
    assert_eq!(still["bytes_done"], 0, "{still}");

    // A carrier without the offer (not taken in yet; here, declined and deleted) is asked
    // again later: Carol's fetch waits instead of failing.
    let late = upload_to_group(&bob, &id, "late.bin", b"late").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    transfer_state(&alice, &late, "offered").await;
    transfer_state(&carol, &late, "offered").await;
    let (status, _) = alice
        .post(&format!("/v1/transfers/{late}/decline"), json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = alice
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/transfers/{late}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = carol
        .post(&format!("/v1/transfers/{late}/accept"), json!({}))
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, waiting) = carol.get(&format!("/v1/transfers/{late}")).await;
    assert_eq!(waiting["state"], "running", "{waiting}");

    // The command line offers a file on the node by its path, to the group by its name.
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, b"chapter three, annotated").unwrap();
    let data_dir = alice.data_dir.to_str().unwrap();
    let out = volli(&[
        "groups",
        "send-file",
        "photos",
        notes.to_str().unwrap(),
        "--no-wait",
        "--data-dir",
        data_dir,
    ]);
    assert!(out.status.success(), "{out:?}");
    let second = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let offered = bob
        .wait_for(&format!("/v1/transfers/{second}"), WAIT, |t| {
            t["state"] == "offered"
        })
        .await;
    assert_eq!(offered["group"], id.as_str());
    let (status, _) = bob
        .post(&format!("/v1/transfers/{second}/accept"), json!({}))
        .await;
    assert_eq!(status, 200);
    transfer_state(&bob, &second, "completed").await;
    assert_eq!(
        file_content(&bob, &second).await,
        b"chapter three, annotated"
    );
    transfer_state(&carol, &second, "offered").await;
    let (status, _) = carol
        .post(&format!("/v1/transfers/{second}/accept"), json!({}))
        .await;
    assert_eq!(status, 200);
    transfer_state(&carol, &second, "completed").await;

    // Files to a group are refused clearly: both a user and a group, an unknown group.
    let (status, refused) = bob
        .post(
            "/v1/transfers",
            json!({"to": c, "group": id, "path": "/etc/hostname"}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_transfer");
    let unknown = "00".repeat(16);
    let (status, refused) = bob
        .post(
            "/v1/transfers",
            json!({"group": unknown, "path": "/etc/hostname"}),
        )
        .await;
    assert_eq!(status, 404, "{refused}");
    assert_eq!(refused["error"]["code"], "unknown_group");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_file_crosses_two_members_who_have_not_taken_it() {
    let dir = tempfile::tempdir().unwrap();
    let [alice, bob, carol, dave] =
        start_nodes(dir.path(), ["alice", "bob", "carol", "dave"]).await;
    // A line of contacts: Carol – Alice – Bob – Dave.
    befriend(&alice, &carol).await;
    befriend(&alice, &bob).await;
    befriend(&bob, &dave).await;
    let (b, _) = bob.ids().await;
    let (c, _) = carol.ids().await;
    let (d, _) = dave.ids().await;
    ready(&alice, &b).await;
    ready(&alice, &c).await;
    ready(&bob, &d).await;
    let id = group_with_admin(&alice, "far apart", &[&b, &c], &b).await;
    member_devices(&bob, &id, &c, 1).await;
    add_member(&bob, &id, &d).await;
    member_devices(&dave, &id, &c, 1).await;
    member_devices(&carol, &id, &d, 1).await;
    // Messages cross the line both ways.
    send_group(&carol, &id, "hello from the far end").await;
    wait_body(&dave, &id, "hello from the far end").await;
    send_group(&dave, &id, "and back").await;
    wait_body(&carol, &id, "and back").await;

    // Carol offers a file; Dave takes it. Neither Alice nor Bob has taken it: each passes
    // it on from the one before, and it arrives byte for byte.
    let data: Vec<u8> = (0..(2u32 << 20) + 777)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
        .collect();
    let t = upload_to_group(&carol, &id, "far.bin", &data).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for node in [&alice, &bob, &dave] {
        transfer_state(node, &t, "offered").await;
    }
    let (status, accepted) = dave
        .post(&format!("/v1/transfers/{t}/accept"), json!({}))
        .await;
    assert_eq!(status, 200, "{accepted}");
    let got = transfer_state(&dave, &t, "completed").await;
    assert_eq!(got["peer"], c.as_str());
    assert!(file_content(&dave, &t).await == data);
    for node in [&alice, &bob] {
        let (_, undecided) = node.get(&format!("/v1/transfers/{t}")).await;
        assert_eq!(undecided["state"], "offered", "{undecided}");
        assert_eq!(undecided["bytes_done"], 0, "{undecided}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_group_requests_get_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let alice = Node::start(&dir.path().join("alice")).await;
    let bob = Node::start(&dir.path().join("bob")).await;
    befriend(&alice, &bob).await;
    let (b, _) = bob.ids().await;
    let stranger = volli_core::UserSecret::generate()
        .unwrap()
        .user_id()
        .to_string();
    for (body, status, code) in [
        (json!({"name": "", "members": []}), 400, "invalid_group"),
        (
            json!({"name": "x".repeat(65), "members": []}),
            400,
            "invalid_group",
        ),
        (
            json!({"name": "g", "members": ["nope"]}),
            400,
            "invalid_user_id",
        ),
        (
            json!({"name": "g", "members": [stranger]}),
            404,
            "unknown_contact",
        ),
        (json!({"name": "g", "members": [b], "extra": 1}), 400, ""),
    ] {
        let (got, answer) = alice.post("/v1/groups", body).await;
        assert_eq!(got, status, "{answer}");
        if !code.is_empty() {
            assert_eq!(answer["error"]["code"], code, "{answer}");
        }
    }
    let (_, list) = alice.get("/v1/groups").await;
    assert_eq!(list["groups"].as_array().unwrap().len(), 0);
    let (status, answer) = alice.get("/v1/groups/zz").await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!("invalid_group_id"))
    );
    let unknown = "00".repeat(16);
    let (status, answer) = alice.get(&format!("/v1/groups/{unknown}")).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (404, &json!("unknown_group"))
    );
    let (status, answer) = alice
        .post("/v1/messages", json!({"group": unknown, "body": "hi"}))
        .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (404, &json!("unknown_group"))
    );
    let (status, answer) = alice
        .post(
            "/v1/messages",
            json!({"group": unknown, "to": b, "body": "hi"}),
        )
        .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!("invalid_message"))
    );

    let (status, group) = alice
        .post("/v1/groups", json!({"name": "g", "members": [b]}))
        .await;
    assert_eq!(status, 201, "{group}");
    let id = group["id"].as_str().unwrap();
    let (status, answer) = alice
        .post(
            &format!("/v1/groups/{id}/members"),
            json!({"user_id": stranger}),
        )
        .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (404, &json!("unknown_contact"))
    );
    let (status, answer) = alice
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/groups/{id}/members/{stranger}"),
            None,
        )
        .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (404, &json!("unknown_member"))
    );
    let (status, answer) = alice
        .request(
            reqwest::Method::PUT,
            &format!("/v1/groups/{id}/members/{b}"),
            Some(json!({"role": "owner"})),
        )
        .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!("invalid_role"))
    );
    // Promoting works, and shows.
    let (status, answer) = alice
        .request(
            reqwest::Method::PUT,
            &format!("/v1/groups/{id}/members/{b}"),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["members"][1]["role"], "admin");

    // The CLI: by name, and its errors.
    let data = alice.data_dir.to_str().unwrap();
    let out = volli(&["groups", "--data-dir", data]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(id), "{out:?}");
    let out = volli(&[
        "groups",
        "send",
        "g",
        "from the command line",
        "--data-dir",
        data,
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("queued"),
        "{out:?}"
    );
    let out = volli(&["groups", "rename", "g", "renamed", "--data-dir", data]);
    assert!(out.status.success(), "{out:?}");
    let out = volli(&["groups", "show", "g", "--data-dir", data]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no group named"),
        "{out:?}"
    );
    let out = volli(&["groups", "messages", "renamed", "--data-dir", data]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("from the command line"),
        "{out:?}"
    );
}

/// A user's two devices, on fixed ports (so that a restart keeps the addresses contacts
/// know).
struct User {
    d: [Node; 2],
    ports: [u16; 2],
    id: String,
}

impl User {
    async fn start(root: &std::path::Path, name: &str) -> Self {
        let ports = [free_port(), free_port()];
        let d1 = Node::start_with(&root.join(format!("{name}1")), on_port(ports[0])).await;
        let d2 = Node::start_with(&root.join(format!("{name}2")), on_port(ports[1])).await;
        pair(&d1, &d2, None).await;
        let (id, _) = d1.ids().await;
        Self {
            d: [d1, d2],
            ports,
            id,
        }
    }

    async fn stop(&mut self) {
        for node in &mut self.d {
            assert!(node.terminate().success());
        }
    }

    async fn restart(&mut self) {
        for (node, port) in self.d.iter_mut().zip(self.ports) {
            let dir = node.data_dir.clone();
            *node = Node::start_with(&dir, Options { ..on_port(port) }).await;
        }
    }
}

/// Waits until every node in `nodes` shows group `id` with exactly `users` as members (each
/// with both its devices) at one and the same epoch.
async fn converged(nodes: &[&Node], id: &str, users: &[&User]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut epochs = Vec::new();
        let mut ok = true;
        for node in nodes {
            let (status, g) = node.get(&format!("/v1/groups/{id}")).await;
            let members = g["members"].as_array().cloned().unwrap_or_default();
            ok &= status == 200
                && members.len() == users.len()
                && users.iter().all(|u| {
                    members.iter().any(|m| {
                        m["user_id"] == u.id.as_str()
                            && m["devices"].as_array().map_or(0, Vec::len) == 2
                    })
                });
            epochs.push(g["epoch"].clone());
        }
        if ok && epochs.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let logs: Vec<String> = nodes
                .iter()
                .map(|n| {
                    let log = n.log();
                    let lines: Vec<&str> = log
                        .lines()
                        .filter(|l| l.contains("group") || l.contains("WARN"))
                        .collect();
                    format!("{}:\n{}", n.data_dir.display(), lines.join("\n"))
                })
                .collect();
            panic!(
                "group {id} did not converge: epochs {epochs:?}\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn five_users_with_two_devices_each_change_the_group_while_one_is_offline() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (mut a, b, mut c, mut d, e) = tokio::join!(
        User::start(root, "a"),
        User::start(root, "b"),
        User::start(root, "c"),
        User::start(root, "d"),
        User::start(root, "e"),
    );
    // Alice knows everyone; Bob knows Carol and Erin; the others know only Alice.
    for other in [&b, &c, &d, &e] {
        befriend(&a.d[0], &other.d[0]).await;
    }
    befriend(&b.d[0], &c.d[0]).await;
    befriend(&b.d[0], &e.d[0]).await;
    for other in [&b, &c, &d, &e] {
        ready(&a.d[0], &other.id).await;
    }
    ready(&b.d[0], &c.id).await;
    ready(&b.d[0], &e.id).await;

    let (status, group) = a.d[0]
        .post(
            "/v1/groups",
            json!({"name": "five", "members": [b.id, c.id, d.id]}),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let id = group["id"].as_str().unwrap().to_owned();
    let (status, promoted) = a.d[0]
        .request(
            reqwest::Method::PUT,
            &format!("/v1/groups/{id}/members/{}", b.id),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(status, 200, "{promoted}");
    let all: Vec<&Node> = [&a, &b, &c, &d].iter().flat_map(|u| u.d.iter()).collect();
    converged(&all, &id, &[&a, &b, &c, &d]).await;
    send_group(&c.d[1], &id, "before").await;
    for node in &all {
        wait_body(node, &id, "before").await;
    }

    // Dave is offline. At the same moment, Alice adds Erin and Bob (an admin, not the
    // committer) removes Carol: both changes land, in one order, on every device.
    d.stop().await;
    let (add_path, remove_path) = (
        format!("/v1/groups/{id}/members"),
        format!("/v1/groups/{id}/members/{}", c.id),
    );
    let (added, removed) = tokio::join!(
        a.d[1].post(&add_path, json!({"user_id": e.id})),
        b.d[1].request(reqwest::Method::DELETE, &remove_path, None),
    );
    assert_eq!(added.0, 200, "{}", added.1);
    assert_eq!(removed.0, 200, "{}", removed.1);
    let online: Vec<&Node> = [&a, &b, &e].iter().flat_map(|u| u.d.iter()).collect();
    converged(&online, &id, &[&a, &b, &d, &e]).await;
    for n in 0..5 {
        send_group(&e.d[n % 2], &id, &format!("while dave was away {n}")).await;
    }
    for node in &online {
        wait_body(node, &id, "while dave was away 4").await;
    }
    // Carol's devices take their removal (it reaches them like any commit) and forget the
    // group; she reads nothing said after it.
    for node in &c.d {
        let deadline = tokio::time::Instant::now() + WAIT;
        while node.get(&format!("/v1/groups/{id}")).await.0 != 404 {
            assert!(tokio::time::Instant::now() < deadline, "{}", node.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let seen = bodies(node, &id).await;
        assert!(
            seen.iter().all(|b| !b.starts_with("while dave")),
            "{seen:?}"
        );
    }

    // Dave comes back and catches up: the commits, then what was said, in order.
    d.restart().await;
    let everyone: Vec<&Node> = [&a, &b, &d, &e].iter().flat_map(|u| u.d.iter()).collect();
    converged(&everyone, &id, &[&a, &b, &d, &e]).await;
    let want: Vec<String> = (0..5).map(|n| format!("while dave was away {n}")).collect();
    for node in &d.d {
        // Erin wrote from both her devices: each device's messages come in order, the two
        // devices' in any order; the conversation shows them in the order they were sent.
        for body in &want {
            wait_body(node, &id, body).await;
        }
        let seen: Vec<String> = bodies(node, &id)
            .await
            .into_iter()
            .filter(|b| b.starts_with("while dave"))
            .collect();
        assert_eq!(seen, want);
    }
    send_group(&d.d[0], &id, "back").await;
    for node in [&e.d[0], &e.d[1], &b.d[0]] {
        wait_body(node, &id, "back").await;
    }

    // A file to the group reaches every other member byte for byte (on one of its devices:
    // files are not synced between a user's devices), fetched from Erin or from a member
    // who knows both.
    for user in [&a, &b, &d] {
        let (status, body) = user.d[0]
            .request(
                reqwest::Method::PUT,
                "/v1/settings/transfers.auto_accept_bytes",
                Some(json!({"value": 10 << 20})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let data: Vec<u8> = (0..(1u32 << 20) + 99).map(|i| (i % 251) as u8).collect();
    let t = upload_to_group(&e.d[1], &id, "minutes.bin", &data).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for user in [&a, &b, &d] {
        let deadline = tokio::time::Instant::now() + WAIT;
        'user: loop {
            for node in &user.d {
                let (status, got) = node.get(&format!("/v1/transfers/{t}")).await;
                if status == 200 && got["state"] == "completed" {
                    assert!(file_content(node, &t).await == data);
                    break 'user;
                }
                assert_ne!(got["state"], "failed", "{got}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never got the file",
                user.id
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let _ = &mut c;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_file_completes_when_every_member_has_it_or_declined_with_each_members_progress() {
    let dir = tempfile::tempdir().unwrap();
    let alice = Node::start(&dir.path().join("alice")).await;
    let bob = Node::start(&dir.path().join("bob")).await;
    let carol = Node::start(&dir.path().join("carol")).await;
    // Alice knows both: each fetches from her.
    befriend(&alice, &bob).await;
    befriend(&alice, &carol).await;
    let (b, _) = bob.ids().await;
    let (c, _) = carol.ids().await;
    ready(&alice, &b).await;
    ready(&alice, &c).await;
    let (status, group) = alice
        .post(
            "/v1/groups",
            json!({"name": "book club", "members": [b, c]}),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let id = group["id"].as_str().unwrap().to_owned();
    for node in [&bob, &carol] {
        member_devices(node, &id, &c, 1).await;
        member_devices(node, &id, &b, 1).await;
    }
    let data: Vec<u8> = (0..(2u32 << 20) + 17).map(|i| (i % 251) as u8).collect();
    let sent = upload_to_group(&alice, &id, "chapter3.pdf", &data).await;
    let t = sent["id"].as_str().unwrap().to_owned();
    assert_eq!(sent["members"].as_array().map(Vec::len), Some(2), "{sent}");
    // In the thread: a file item with its type, on every member's node.
    for node in [&bob, &carol, &alice] {
        let item = node
            .wait_for(&format!("/v1/messages/{t}"), WAIT, |m| m["kind"] == "file")
            .await;
        assert_eq!(item["file"]["name"], "chapter3.pdf", "{item}");
        assert_eq!(item["file"]["mime"], "application/pdf", "{item}");
        assert_eq!(item["file"]["size"], data.len(), "{item}");
    }
    transfer_state(&bob, &t, "offered").await;
    transfer_state(&carol, &t, "offered").await;
    let (status, _) = bob
        .post(&format!("/v1/transfers/{t}/accept"), json!({}))
        .await;
    assert_eq!(status, 200);
    transfer_state(&bob, &t, "completed").await;
    // Bob has it, Carol has not answered: Alice's side waits, showing each member.
    let waiting = alice
        .wait_for(&format!("/v1/transfers/{t}"), WAIT, |t| {
            t["members"].as_array().is_some_and(|m| {
                m.iter()
                    .any(|m| m["user_id"] == b.as_str() && m["state"] == "completed")
            })
        })
        .await;
    assert_ne!(waiting["state"], "completed", "{waiting}");
    assert!(waiting["bytes_done"].as_u64().unwrap() > 0, "{waiting}");
    let members = waiting["members"].as_array().unwrap();
    let bobs = members.iter().find(|m| m["user_id"] == b.as_str()).unwrap();
    assert_eq!(bobs["bytes_done"], data.len(), "{waiting}");
    let carols = members.iter().find(|m| m["user_id"] == c.as_str()).unwrap();
    assert_eq!(carols["state"], "offered", "{waiting}");
    // Carol declines: nobody is left to wait for.
    let (status, _) = carol
        .post(&format!("/v1/transfers/{t}/decline"), json!({}))
        .await;
    assert_eq!(status, 200);
    let done = transfer_state(&alice, &t, "completed").await;
    assert_eq!(done["bytes_done"], data.len(), "{done}");
    let carols = done["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == c.as_str())
        .cloned()
        .unwrap();
    assert_eq!(carols["state"], "declined", "{done}");
}
