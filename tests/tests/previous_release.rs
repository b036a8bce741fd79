//! A contact whose node runs the previous release (`tests/fixtures/previous-release`, built
//! by `scripts/previous-release.sh`, which `scripts/test.sh` runs first and names in
//! `VOLLI_PREVIOUS_BIN`): plain messages go both ways, in one-to-one conversations and in a
//! group; what it cannot read (a reply's link, a reaction, an edit, a timer) it never gets,
//! and nothing this node sends it is refused or left waiting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use volli_tests::{Node, Options, befriend, send};

const WAIT: Duration = Duration::from_secs(60);

/// The previous release's binary, or `None` (the test says why and passes: a developer's
/// run without it; CI always has it).
fn previous() -> Option<PathBuf> {
    match std::env::var_os("VOLLI_PREVIOUS_BIN") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!(
                "VOLLI_PREVIOUS_BIN is not set: run `./scripts/previous-release.sh` and set it \
                 to the path it prints (scripts/test.sh does both)"
            );
            None
        }
    }
}

async fn old_node(dir: &std::path::Path, bin: PathBuf) -> Node {
    Node::start_with(
        dir,
        Options {
            bin: Some(bin),
            // Its compiled plugins are its own.
            env: vec![(
                "VOLLI_PLUGINS_CACHE_DIR".into(),
                dir.with_extension("plugins").to_string_lossy().into_owned(),
            )],
            ..Options::default()
        },
    )
    .await
}

/// The bodies of `node`'s messages with `path` (a query).
async fn bodies(node: &Node, query: &str) -> Vec<String> {
    let (status, list) = node.get(&format!("/v1/messages?{query}&limit=500")).await;
    assert_eq!(status, 200, "{list}");
    list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn wait_bodies(node: &Node, query: &str, want: &[&str]) {
    node.wait_for(&format!("/v1/messages?{query}&limit=500"), WAIT, |l| {
        let got: Vec<&str> = l["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["body"].as_str())
            .collect();
        want.iter().all(|w| got.contains(w))
    })
    .await;
}

fn status_of(list: &Value, id: &str) -> String {
    list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .map(|m| m["status"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_contact_on_the_previous_release_exchanges_plain_messages_and_gets_nothing_it_cannot_read()
 {
    let Some(bin) = previous() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let alice = Node::start(&tmp.path().join("alice")).await;
    let bob = old_node(&tmp.path().join("bob"), bin).await;
    let carol = Node::start(&tmp.path().join("carol")).await;
    befriend(&alice, &bob).await;
    befriend(&alice, &carol).await;
    let (a, _) = alice.ids().await;
    let (b, _) = bob.ids().await;
    let (c, _) = carol.ids().await;

    // Plain messages both ways.
    let hello = send(&bob, &a, "hello from the old release").await;
    wait_bodies(
        &alice,
        &format!("with={b}"),
        &["hello from the old release"],
    )
    .await;
    let answer = send(&alice, &b, "hello from the new one").await;
    wait_bodies(&bob, &format!("with={a}"), &["hello from the new one"]).await;

    // A reply reaches it as the plain text it is; a reaction, an edit and a timer do not
    // reach it at all, and nothing waits in Alice's outbox for it.
    let (status, sent) = alice
        .post(
            "/v1/messages",
            json!({"to": b, "body": "a reply it reads as text", "reply_to": hello}),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let reply = sent["id"].as_str().unwrap().to_owned();
    let (status, _) = alice
        .post(
            &format!("/v1/messages/{hello}/reactions"),
            json!({"emoji": "👍"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = alice
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/messages/{answer}"),
            Some(json!({"body": "edited where it cannot see"})),
        )
        .await;
    assert_eq!(status, 200);
    if tokio::time::timeout(
        Duration::from_secs(30),
        wait_bodies(&bob, &format!("with={a}"), &["a reply it reads as text"]),
    )
    .await
    .is_err()
    {
        panic!(
            "the reply did not reach the old node; Alice's log:\n{}",
            alice.log()
        );
    }
    alice
        .wait_for(&format!("/v1/messages?with={b}&limit=50"), WAIT, |l| {
            status_of(l, &reply) == "delivered"
        })
        .await;
    // Bob's node keeps the first text of the edited message, and never saw garbage.
    let got = bodies(&bob, &format!("with={a}")).await;
    assert!(
        got.contains(&"hello from the new one".to_owned()),
        "{got:?}"
    );
    assert!(!got.iter().any(|g| g.contains("edited")), "{got:?}");
    assert_eq!(got.len(), 3, "{got:?}");
    let log = bob.log();
    for bad in [
        "malformed",
        "cannot decode",
        "not understood",
        "unknown variant",
    ] {
        assert!(!log.contains(bad), "the old node logged {bad:?}:\n{log}");
    }
    // Nothing Alice sent was refused (and so retried for days) by the old node.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = alice.log();
    assert!(!log.contains("refused a message"), "{log}");

    // A group of the three: the old node reads texts (a reply too), the new ones read the
    // reply's link.
    let (status, group) = alice
        .post("/v1/groups", json!({"name": "mixed", "members": [b, c]}))
        .await;
    assert_eq!(status, 201, "{group}");
    let id = group["id"].as_str().unwrap().to_owned();
    for node in [&bob, &carol] {
        let path = format!("/v1/groups/{id}");
        let joined = node.wait_for(&path, WAIT + WAIT, |g| {
            g["members"].as_array().is_some_and(|m| {
                m.len() == 3
                    && m.iter()
                        .all(|m| m["devices"].as_array().is_some_and(|d| d.len() == 1))
            })
        });
        if tokio::time::timeout(WAIT, joined).await.is_err() {
            panic!("{} did not join; Alice's log:\n{}", node.url, alice.log());
        }
    }
    let (status, sent) = bob
        .post(
            "/v1/messages",
            json!({"group": id, "body": "old member here"}),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let first = sent["id"].as_str().unwrap().to_owned();
    wait_bodies(&carol, &format!("group={id}"), &["old member here"]).await;
    let (status, sent) = carol
        .post(
            "/v1/messages",
            json!({"group": id, "body": "new member answers", "reply_to": first}),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let second = sent["id"].as_str().unwrap().to_owned();
    wait_bodies(&bob, &format!("group={id}"), &["new member answers"]).await;
    let at_alice = alice
        .wait_for(&format!("/v1/messages/{second}"), WAIT, |m| {
            m["body"] == "new member answers"
        })
        .await;
    assert_eq!(at_alice["reply_to"], first.as_str(), "{at_alice}");
}
