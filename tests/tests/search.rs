//! Search through the real binary: messages of a one-to-one conversation and of a group found
//! with snippets and their conversation, folded case and accents, filters, paging, a deleted
//! message gone from the results, bad input refused, and the index of an existing vault built
//! in the background after an upgrade.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use volli_tests::{Node, befriend, send};

const WAIT: Duration = Duration::from_secs(60);

/// The results of `GET /v1/search?{query}` on `node`.
async fn search(node: &Node, query: &str) -> Vec<Value> {
    let (status, body) = node.get(&format!("/v1/search?{query}")).await;
    assert_eq!(status, 200, "{body}");
    body["results"].as_array().unwrap().clone()
}

fn bodies(results: &[Value]) -> Vec<&str> {
    results
        .iter()
        .map(|r| r["message"]["body"].as_str().unwrap())
        .collect()
}

/// Percent-encodes a query value.
fn q(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn finds_messages_of_every_conversation_and_builds_the_index_of_an_older_vault() {
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Node::start(&dir.path().join("alice")).await;
    let bob = Node::start(&dir.path().join("bob")).await;
    let carol = Node::start(&dir.path().join("carol")).await;
    befriend(&alice, &bob).await;
    befriend(&alice, &carol).await;
    let (b, _) = bob.ids().await;
    let (c, _) = carol.ids().await;
    let (status, group) = alice
        .post(
            "/v1/groups",
            json!({"name": "book club", "members": [b, c]}),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let group = group["id"].as_str().unwrap().to_owned();

    let (a, _) = alice.ids().await;
    let met = send(&alice, &b, "Shall we meet at the Café Müller tomorrow?").await;
    let gone = send(&alice, &b, "the cafeteria is a worse idea").await;
    send(&bob, &a, "CAFE sounds good; noon?").await;
    let (status, sent) = alice
        .post(
            "/v1/messages",
            json!({"group": group, "body": "Next book: the café at the end of the universe"}),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    send(&carol, &a, "nothing to look for here").await;
    // Bob's message has arrived: four messages hold a word starting with "caf".
    alice
        .wait_for("/v1/search?q=caf", WAIT, |v| {
            v["results"].as_array().is_some_and(|r| r.len() == 4)
        })
        .await;

    // Newest first, every conversation, accents and case folded, each with a snippet that
    // marks the words found, and the conversation it is in.
    let found = search(&alice, &format!("q={}", q("Café"))).await;
    assert_eq!(
        bodies(&found),
        [
            "Next book: the café at the end of the universe",
            "CAFE sounds good; noon?",
            "the cafeteria is a worse idea",
            "Shall we meet at the Café Müller tomorrow?",
        ]
    );
    assert_eq!(found[0]["group"], group.as_str());
    assert!(found[0].get("with").is_none());
    assert_eq!(found[0]["message"]["group"], group.as_str());
    assert_eq!(found[1]["with"], b.as_str());
    assert_eq!(found[1]["message"]["from"], b.as_str());
    assert_eq!(found[3]["with"], b.as_str());
    let snippet = found[3]["snippet"].as_str().unwrap();
    assert_eq!(snippet, "Shall we meet at the Café Müller tomorrow?");
    let [start, end] = [0, 1].map(|i| found[3]["highlights"][0][i].as_u64().unwrap() as usize);
    let units: Vec<u16> = snippet.encode_utf16().collect();
    assert_eq!(String::from_utf16(&units[start..end]).unwrap(), "Café");
    // Every word must be there, each as the start of a word.
    assert_eq!(
        bodies(&search(&alice, "q=cafe+mul").await),
        ["Shall we meet at the Café Müller tomorrow?"]
    );
    assert!(search(&alice, "q=afe").await.is_empty());
    // One conversation; pages.
    assert_eq!(search(&alice, &format!("q=caf&with={b}")).await.len(), 3);
    assert_eq!(
        bodies(&search(&alice, &format!("q=caf&group={group}")).await),
        ["Next book: the café at the end of the universe"]
    );
    let first = search(&alice, "q=caf&limit=2").await;
    let last = first[1]["message"]["id"].as_str().unwrap();
    let next = search(&alice, &format!("q=caf&limit=2&before={last}")).await;
    assert_eq!(
        bodies(&next),
        [
            "the cafeteria is a worse idea",
            "Shall we meet at the Café Müller tomorrow?",
        ]
    );
    // A result shows its message as its conversation does: read by Bob (the tick), read by
    // Carol in the group (`read_by`), once they read them.
    let (status, _) = bob
        .post("/v1/messages/read", json!({"with": a, "up_to": met}))
        .await;
    assert_eq!(status, 204);
    let (status, _) = carol
        .post(
            "/v1/messages/read",
            json!({"group": group, "up_to": sent["id"]}),
        )
        .await;
    assert_eq!(status, 204);
    alice
        .wait_for(&format!("/v1/search?q={}", q("Müller")), WAIT, |v| {
            v["results"][0]["message"]["status"] == "read"
        })
        .await;
    alice
        .wait_for("/v1/search?q=universe", WAIT, |v| {
            v["results"][0]["message"]["read_by"]
                .as_array()
                .is_some_and(|r| r.iter().any(|u| u == c.as_str()))
        })
        .await;
    // A deleted message is found no more.
    let (status, _) = alice
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/messages/{gone}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert!(search(&alice, "q=cafeteria").await.is_empty());
    assert_eq!(search(&alice, "q=caf").await.len(), 3);

    // Bad input: a stable code, nothing found or changed.
    let long = "x".repeat(257);
    for (query, code) in [
        ("q=", "invalid_query"),
        ("q=%20%20", "invalid_query"),
        ("q=%21%3F%21", "invalid_query"),
        (&format!("q={long}") as &str, "invalid_query"),
        ("q=cafe&limit=0", "invalid_limit"),
        ("q=cafe&limit=101", "invalid_limit"),
        (&format!("q=cafe&with={b}&group={group}"), "invalid_query"),
        ("q=cafe&with=nobody", "invalid_user_id"),
        ("q=cafe&group=xyz", "invalid_group_id"),
        ("q=cafe&before=xyz", "invalid_message_id"),
        ("limit=3", "invalid_query"),
    ] {
        let (status, body) = alice.get(&format!("/v1/search?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
    }
    let (status, body) = alice
        .get(&format!("/v1/search?q=cafe&before={}", "0".repeat(32)))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_message"))
    );
    let (_, node) = alice.get("/v1/node").await;
    assert_eq!(node["search"]["state"], "ready", "{node}");

    // An older vault: the same messages, no search index. The node builds it in the
    // background at start and says so in `/v1/node`.
    alice.terminate();
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        alice.data_dir.join("volli.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("INSERT INTO search (search) VALUES ('delete-all')")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM search_days")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE search_state SET done = 0, ceiling = (SELECT MAX(rowid) FROM messages)")
        .execute(&pool)
        .await
        .unwrap();
    let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    let alice = Node::start(&alice.data_dir).await;
    let node = alice
        .wait_for("/v1/node", WAIT, |n| n["search"]["state"] == "ready")
        .await;
    assert_eq!(node["search"]["total"], rows, "{node}");
    assert_eq!(search(&alice, "q=caf").await.len(), 3);
    assert!(search(&alice, "q=cafeteria").await.is_empty());
    assert_eq!(
        bodies(&search(&alice, "q=nothing").await),
        ["nothing to look for here"]
    );
}
