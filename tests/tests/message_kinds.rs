//! Messages as people expect them, through the real binary: replies, reactions, edits,
//! deletion for everyone, read receipts, typing and disappearing timers, one to one (the
//! sender with two devices) and in a group with members who are strangers to each other;
//! through a friend's node while the recipient is offline; the chat list; and what is
//! refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use volli_tests::{
    Node, befriend, events, free_port, next_event, on_port, pair, send, wait_until_relay_of,
};

const WAIT: Duration = Duration::from_secs(60);

/// Waits until message `id` on `node` satisfies `check`; returns it.
async fn wait_message(node: &Node, id: &str, check: impl Fn(&Value) -> bool) -> Value {
    node.wait_for(&format!("/v1/messages/{id}"), WAIT, |m| {
        m["id"] == id && check(m)
    })
    .await
}

async fn request(
    node: &Node,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    node.request(method, path, body).await
}

/// The chat list entry of `node` for `with` (a user) or a group.
async fn chat(node: &Node, key: &str, value: &str) -> Value {
    let (status, list) = node.get("/v1/conversations").await;
    assert_eq!(status, 200, "{list}");
    list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c[key] == value)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until the raw database files of the node in `dir` no longer hold `text`.
async fn gone_from_disk(dir: &std::path::Path, text: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stored_anywhere(dir, text) {
        if tokio::time::Instant::now() >= deadline && std::env::var_os("KEEP_DEBUG").is_some() {
            let _ = std::process::Command::new("cp")
                .args(["-r", dir.to_str().unwrap(), "/tmp/kept-node"])
                .status();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{text:?} is still in the database files of {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether the raw database files of the node in `dir` hold `text` anywhere.
fn stored_anywhere(dir: &std::path::Path, text: &str) -> bool {
    ["volli.db", "volli.db-wal"].iter().any(|f| {
        std::fs::read(dir.join(f))
            .is_ok_and(|bytes| bytes.windows(text.len()).any(|w| w == text.as_bytes()))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn one_to_one_replies_reactions_edits_deletions_reads_typing_and_timers() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = Node::start(&tmp.path().join("alice")).await;
    let alice2 = Node::start(&tmp.path().join("alice2")).await;
    let bob_dir = tmp.path().join("bob");
    let bob = Node::start(&bob_dir).await;
    pair(&alice, &alice2, None).await;
    befriend(&alice, &bob).await;
    let (a, _) = alice.ids().await;
    let (b, _) = bob.ids().await;
    alice2
        .wait_for(&format!("/v1/contacts/{b}"), WAIT, |c| {
            c["user_id"] == b.as_str()
        })
        .await;

    let hello = send(&bob, &a, "hello").await;
    for node in [&alice, &alice2] {
        wait_message(node, &hello, |m| m["status"] == "received").await;
    }

    // A reply names the message it answers, on both sides.
    let (status, refused) = alice
        .post(
            "/v1/messages",
            json!({"to": b, "body": "x", "reply_to": "00000000000000000000000000000000"}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_reply");
    let (status, sent) = alice
        .post(
            "/v1/messages",
            json!({"to": b, "body": "hi back", "reply_to": hello}),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let reply = sent["id"].as_str().unwrap().to_owned();
    let got = wait_message(&bob, &reply, |m| m["body"] == "hi back").await;
    assert_eq!(got["reply_to"], hello.as_str(), "{got}");
    assert_eq!(got["kind"], "text");
    assert_eq!(got["deleted"], false);

    // A reaction: one emoji, shown on every device of the other user.
    let (status, refused) = bob
        .post(
            &format!("/v1/messages/{reply}/reactions"),
            json!({"emoji": "ok"}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_reaction");
    let (status, reacted) = bob
        .post(
            &format!("/v1/messages/{reply}/reactions"),
            json!({"emoji": "👍"}),
        )
        .await;
    assert_eq!(status, 200, "{reacted}");
    assert_eq!(reacted["reactions"], json!([{"emoji": "👍", "from": [b]}]));
    for node in [&alice, &alice2] {
        wait_message(node, &reply, |m| {
            m["reactions"] == json!([{"emoji": "👍", "from": [b]}])
        })
        .await;
    }
    let (status, _) = request(
        &bob,
        reqwest::Method::DELETE,
        &format!("/v1/messages/{reply}/reactions/%F0%9F%91%8D"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    wait_message(&alice, &reply, |m| m["reactions"] == json!([])).await;

    // An edit by the author, from its other device: the latest text everywhere.
    let mut bob_events = events(&bob).await;
    let (status, edited) = request(
        &alice2,
        reqwest::Method::PATCH,
        &format!("/v1/messages/{reply}"),
        Some(json!({"body": "hi back, edited"})),
    )
    .await;
    assert_eq!(status, 200, "{edited}");
    assert!(edited["edited_at"].is_string(), "{edited}");
    let event = next_event(&mut bob_events, "message.edited", WAIT, |e| {
        e["id"] == reply.as_str()
    })
    .await;
    assert_eq!(event["body"], "hi back, edited");
    assert_eq!(event["with"], a.as_str());
    wait_message(&bob, &reply, |m| {
        m["body"] == "hi back, edited" && m["edited_at"].is_string()
    })
    .await;
    wait_message(&alice, &reply, |m| m["body"] == "hi back, edited").await;
    // Nobody else edits or deletes it for everyone.
    let (status, refused) = request(
        &bob,
        reqwest::Method::PATCH,
        &format!("/v1/messages/{reply}"),
        Some(json!({"body": "forged"})),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "not_author");
    let (status, refused) = request(
        &bob,
        reqwest::Method::DELETE,
        &format!("/v1/messages/{reply}?for=everyone"),
        None,
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "not_author");

    // Deleted for everyone: a tombstone on every device, its text in no store.
    let secret = "the-secret-plan-4f1c";
    let doomed = send(&alice, &b, secret).await;
    wait_message(&bob, &doomed, |m| m["body"] == secret).await;
    let (status, _) = request(
        &alice,
        reqwest::Method::DELETE,
        &format!("/v1/messages/{doomed}?for=everyone"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    for node in [&bob, &alice, &alice2] {
        let m = wait_message(node, &doomed, |m| m["deleted"] == true).await;
        assert_eq!(m["body"], "", "{m}");
    }
    let (status, refused) = request(
        &alice,
        reqwest::Method::PATCH,
        &format!("/v1/messages/{doomed}"),
        Some(json!({"body": "again"})),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "message_deleted");
    gone_from_disk(&bob_dir, secret).await;

    // Read receipts: Bob reads Alice's reply, Alice sees `read`.
    let (status, _) = bob
        .post("/v1/messages/read", json!({"with": a, "up_to": reply}))
        .await;
    assert_eq!(status, 204);
    wait_message(&alice, &reply, |m| m["status"] == "read").await;

    // Unread counts: equal on both of Alice's devices, and gone on both once read on one.
    let one = send(&bob, &a, "one").await;
    let two = send(&bob, &a, "two").await;
    for node in [&alice, &alice2] {
        wait_message(node, &two, |_| true).await;
        node.wait_for("/v1/conversations", WAIT, |l| {
            l["conversations"].as_array().unwrap().iter().any(|c| {
                c["with"] == b.as_str()
                    && c["unread"] == 3
                    && c["last_message"]["id"] == two.as_str()
            })
        })
        .await;
    }
    let listed = chat(&alice, "with", &b).await;
    assert_eq!(listed["kind"], "direct", "{listed}");
    assert!(listed["title"].is_string(), "{listed}");
    assert_eq!(listed["disappearing_secs"], 0, "{listed}");
    let (status, _) = alice2
        .post("/v1/messages/read", json!({"with": b, "up_to": two}))
        .await;
    assert_eq!(status, 204);
    for node in [&alice, &alice2] {
        node.wait_for("/v1/conversations", WAIT, |l| {
            l["conversations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["with"] == b.as_str() && c["unread"] == 0)
        })
        .await;
    }
    wait_message(&bob, &two, |m| m["status"] == "read").await;
    wait_message(&bob, &one, |m| m["status"] == "read").await;

    // With read receipts off, reading tells nobody.
    let (status, _) = request(
        &alice,
        reqwest::Method::PUT,
        "/v1/settings/receipts.read",
        Some(json!({"value": false})),
    )
    .await;
    assert!(status == 200 || status == 204, "{status}");
    let three = send(&bob, &a, "three").await;
    wait_message(&bob, &three, |m| m["status"] == "delivered").await;
    let (status, _) = alice
        .post("/v1/messages/read", json!({"with": b, "up_to": three}))
        .await;
    assert_eq!(status, 204);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, m) = bob.get(&format!("/v1/messages/{three}")).await;
    assert_eq!(m["status"], "delivered", "{m}");

    // Typing: a burst of keystrokes sends a few frames, never stored.
    let mut bob_events = events(&bob).await;
    let started = tokio::time::Instant::now();
    for _ in 0..50 {
        let (status, _) = alice.post("/v1/typing", json!({"to": b})).await;
        assert_eq!(status, 204);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let burst = started.elapsed();
    let mut frames = 0;
    let _ = tokio::time::timeout(burst + Duration::from_secs(2), async {
        use futures::StreamExt as _;
        while let Some(e) = bob_events.next().await {
            if e["type"] == "typing" {
                assert_eq!(e["with"], a.as_str(), "{e}");
                frames += 1;
            }
        }
    })
    .await;
    assert!(
        (1..=5).contains(&frames),
        "{frames} typing frames for 50 keystrokes"
    );

    // A disappearing timer, set by either side: a line in the conversation, and messages
    // that leave every device when their time runs out.
    let (status, refused) = request(
        &alice,
        reqwest::Method::PUT,
        &format!("/v1/conversations/{b}/disappearing"),
        Some(json!({"secs": 5})),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_timer");
    let (status, set) = request(
        &bob,
        reqwest::Method::PUT,
        &format!("/v1/conversations/{a}/disappearing"),
        Some(json!({"secs": 30})),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["disappearing_secs"], 30);
    alice
        .wait_for("/v1/conversations", WAIT, |l| {
            l["conversations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["with"] == b.as_str() && c["disappearing_secs"] == 30)
        })
        .await;
    let (_, list) = alice.get(&format!("/v1/messages?with={b}&limit=5")).await;
    let line = list["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(line["kind"], "system", "{line}");
    assert_eq!(line["system"]["timer"], 30, "{line}");
    let vanishing = send(&alice, &b, "this will vanish").await;
    let got = wait_message(&bob, &vanishing, |m| m["body"] == "this will vanish").await;
    let expires =
        volli_core::Timestamp::parse_rfc3339(got["expires_at"].as_str().unwrap()).unwrap();
    let sent_at = volli_core::Timestamp::parse_rfc3339(got["sent_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires.as_millis() - sent_at.as_millis(), 30_000, "{got}");
    for node in [&bob, &alice, &alice2] {
        node.wait_for(
            &format!("/v1/messages/{vanishing}"),
            Duration::from_secs(60),
            |m| m["error"]["code"] == "unknown_message",
        )
        .await;
    }
    gone_from_disk(&bob_dir, "this will vanish").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_group_strangers_reply_react_edit_read_and_admins_set_the_timer() {
    let dir = tempfile::tempdir().unwrap();
    let alice = Node::start(&dir.path().join("alice")).await;
    let bob = Node::start(&dir.path().join("bob")).await;
    let carol = Node::start(&dir.path().join("carol")).await;
    // Alice knows Bob and Carol; they do not know each other.
    befriend(&alice, &bob).await;
    befriend(&alice, &carol).await;
    let (_, _) = alice.ids().await;
    let (b, _) = bob.ids().await;
    let (c, _) = carol.ids().await;
    for with in [&b, &c] {
        alice
            .wait_for(&format!("/v1/conversations/{with}"), WAIT, |v| {
                v["ready"] == true
            })
            .await;
    }
    let (status, group) = alice
        .post(
            "/v1/groups",
            json!({"name": "book club", "members": [b, c]}),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let id = group["id"].as_str().unwrap().to_owned();
    for node in [&bob, &carol] {
        node.wait_for(&format!("/v1/groups/{id}"), WAIT, |g| {
            g["members"].as_array().is_some_and(|m| {
                m.len() == 3
                    && m.iter()
                        .all(|m| m["devices"].as_array().is_some_and(|d| d.len() == 1))
            })
        })
        .await;
    }

    let (status, sent) = carol
        .post(
            "/v1/messages",
            json!({"group": id, "body": "chapter three?"}),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let question = sent["id"].as_str().unwrap().to_owned();
    wait_message(&bob, &question, |m| m["group"] == id.as_str()).await;

    // Bob answers Carol, whom he does not know.
    let (status, sent) = bob
        .post(
            "/v1/messages",
            json!({"group": id, "body": "yes, tonight", "reply_to": question}),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let answer = sent["id"].as_str().unwrap().to_owned();
    let got = wait_message(&carol, &answer, |m| m["body"] == "yes, tonight").await;
    assert_eq!(got["reply_to"], question.as_str(), "{got}");

    // Carol reacts; Bob and Alice see it.
    let (status, _) = carol
        .post(
            &format!("/v1/messages/{answer}/reactions"),
            json!({"emoji": "❤️"}),
        )
        .await;
    assert_eq!(status, 200);
    for node in [&bob, &alice] {
        wait_message(node, &answer, |m| {
            m["reactions"] == json!([{"emoji": "❤️", "from": [c]}])
        })
        .await;
    }

    // Bob edits; Carol may not.
    let (status, _) = request(
        &bob,
        reqwest::Method::PATCH,
        &format!("/v1/messages/{answer}"),
        Some(json!({"body": "yes, tomorrow"})),
    )
    .await;
    assert_eq!(status, 200);
    wait_message(&carol, &answer, |m| {
        m["body"] == "yes, tomorrow" && m["edited_at"].is_string()
    })
    .await;
    let (status, refused) = request(
        &carol,
        reqwest::Method::PATCH,
        &format!("/v1/messages/{answer}"),
        Some(json!({"body": "no"})),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "not_author");

    // Bob reads Carol's question: she sees him in `read_by`.
    let (status, _) = bob
        .post("/v1/messages/read", json!({"group": id, "up_to": question}))
        .await;
    assert_eq!(status, 204);
    wait_message(&carol, &question, |m| {
        m["read_by"]
            .as_array()
            .is_some_and(|r| r.iter().any(|u| u == b.as_str()))
    })
    .await;

    // Typing reaches the members who know the typist (never carried).
    let mut alice_events = events(&alice).await;
    let (status, _) = bob.post("/v1/typing", json!({"group": id})).await;
    assert_eq!(status, 204);
    let typing = next_event(&mut alice_events, "typing", WAIT, |_| true).await;
    assert_eq!(typing["group"], id.as_str(), "{typing}");
    assert_eq!(typing["from"], b.as_str(), "{typing}");

    // The timer is an admin's to set.
    let (status, refused) = request(
        &carol,
        reqwest::Method::PATCH,
        &format!("/v1/groups/{id}"),
        Some(json!({"disappearing_secs": 3600})),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "not_group_admin");
    let (status, changed) = request(
        &alice,
        reqwest::Method::PATCH,
        &format!("/v1/groups/{id}"),
        Some(json!({"disappearing_secs": 3600})),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["disappearing_secs"], 3600);
    for node in [&bob, &carol] {
        node.wait_for(&format!("/v1/groups/{id}"), WAIT, |g| {
            g["disappearing_secs"] == 3600
        })
        .await;
    }
    let later = send_group_message(&carol, &id, "this one disappears").await;
    let got = wait_message(&bob, &later, |m| m["body"] == "this one disappears").await;
    assert!(got["expires_at"].is_string(), "{got}");

    // Deleted for everyone by its author, on a stranger's node too.
    let (status, _) = request(
        &bob,
        reqwest::Method::DELETE,
        &format!("/v1/messages/{answer}?for=everyone"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    for node in [&carol, &alice] {
        wait_message(node, &answer, |m| m["deleted"] == true && m["body"] == "").await;
    }

    // The chat list holds the group with its newest message.
    let listed = chat(&bob, "group", &id).await;
    assert_eq!(listed["kind"], "group", "{listed}");
    assert_eq!(listed["title"], "book club", "{listed}");
    assert_eq!(listed["disappearing_secs"], 3600, "{listed}");
    assert!(listed["last_message"]["id"].is_string(), "{listed}");
}

async fn send_group_message(node: &Node, group: &str, body: &str) -> String {
    let (status, sent) = node
        .post("/v1/messages", json!({"group": group, "body": body}))
        .await;
    assert_eq!(status, 202, "{sent}");
    sent["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_reach_an_offline_contact_through_a_friends_node() {
    let tmp = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port(), free_port());
    let (alice_dir, bob_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let mut alice = Node::start_with(&alice_dir, on_port(ports.0)).await;
    let mut bob = Node::start_with(&bob_dir, on_port(ports.1)).await;
    let relay = Node::start_with(&tmp.path().join("relay"), on_port(ports.2)).await;
    befriend(&relay, &alice).await;
    befriend(&relay, &bob).await;
    befriend(&alice, &bob).await;
    let (a, _) = alice.ids().await;
    let (b, _) = bob.ids().await;
    let (r, _) = relay.ids().await;
    wait_until_relay_of(&alice, &b, &r).await;
    let theirs = send(&bob, &a, "see you at noon").await;
    let mine = send(&alice, &b, "noon it is").await;
    wait_message(&alice, &theirs, |_| true).await;
    wait_message(&bob, &mine, |m| m["status"] == "received").await;

    assert!(bob.terminate().success());
    let (status, _) = alice
        .post(
            &format!("/v1/messages/{theirs}/reactions"),
            json!({"emoji": "👌"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = request(
        &alice,
        reqwest::Method::PATCH,
        &format!("/v1/messages/{mine}"),
        Some(json!({"body": "one o'clock it is"})),
    )
    .await;
    assert_eq!(status, 200);
    // Both wait at the friend's node; Alice leaves before Bob returns.
    relay
        .wait_for("/v1/relay", WAIT, |h| h["envelopes"].as_u64() >= Some(2))
        .await;
    assert!(alice.terminate().success());

    let bob = Node::start_with(&bob_dir, on_port(ports.1)).await;
    wait_message(&bob, &theirs, |m| {
        m["reactions"] == json!([{"emoji": "👌", "from": [a]}])
    })
    .await;
    wait_message(&bob, &mine, |m| m["body"] == "one o'clock it is").await;
    drop(alice_dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_command_line_replies_reacts_edits_and_shows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = Node::start(&tmp.path().join("alice")).await;
    let bob = Node::start(&tmp.path().join("bob")).await;
    befriend(&alice, &bob).await;
    let (a, _) = alice.ids().await;
    let (b, _) = bob.ids().await;
    let hello = send(&bob, &a, "dinner at eight?").await;
    wait_message(&alice, &hello, |_| true).await;
    let data = alice.data_dir.to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--data-dir", &data]);
        let out = volli_tests::volli(&all);
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let replied = run(&["reply", &hello, "eight works"]);
    let reply = replied.split_whitespace().last().unwrap().to_owned();
    let reacted = run(&["react", &hello, "🍝"]);
    assert!(reacted.contains("🍝 1"), "{reacted}");
    run(&["edit", &reply, "eight thirty works"]);
    let shown = run(&["messages", &b]);
    assert!(shown.contains(&hello), "{shown}");
    assert!(
        shown.contains("(re: \"dinner at eight?\") eight thirty works"),
        "{shown}"
    );
    assert!(shown.contains("(edited)"), "{shown}");
    assert!(shown.contains("[🍝1]"), "{shown}");
    // What Bob sees.
    wait_message(&bob, &reply, |m| {
        m["body"] == "eight thirty works" && m["reply_to"] == hello.as_str()
    })
    .await;
    // Refusals are clear.
    let out = volli_tests::volli(&["edit", &hello, "not mine", "--data-dir", &data]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not_author"),
        "{out:?}"
    );
    let out = volli_tests::volli(&["react", "nonsense", "👍", "--data-dir", &data]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a message id"),
        "{out:?}"
    );
}
