//! Profiles through the real binary: a display name and a picture set on one device reach
//! the user's contacts and its other device (also when set on a device that does not sign
//! cards), contacts renamed for oneself on every device of the user while their own name
//! follows their card, bad input refused, and the command line printing names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use volli_tests::{Node, befriend, pair, volli};

const WAIT: Duration = Duration::from_secs(60);

/// A PNG's signature and a few bytes: the node tells images by their first bytes.
fn png(fill: u8, len: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.resize(len, fill);
    bytes
}

fn jpeg(fill: u8, len: usize) -> Vec<u8> {
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0];
    bytes.resize(len, fill);
    bytes
}

/// A raw request: status, content type and body bytes.
async fn raw(
    node: &Node,
    method: reqwest::Method,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, String, Vec<u8>) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", node.url))
        .bearer_auth(&node.token);
    if let Some((content_type, bytes)) = body {
        request = request.header("content-type", content_type).body(bytes);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, r.bytes().await.unwrap().to_vec())
}

/// Polls until `path` on `node` answers 200 with `bytes`.
async fn wait_for_bytes(node: &Node, path: &str, bytes: &[u8]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _, got) = raw(node, reqwest::Method::GET, path, None).await;
        if status == 200 && got == bytes {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never gave the picture (last {status}); log:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

fn cli(args: &[&str], node: &Node) -> String {
    let mut all = args.to_vec();
    let data = node.data_dir.to_str().unwrap();
    all.extend(["--data-dir", data]);
    let out = volli(&all);
    assert!(out.status.success(), "volli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn names_and_pictures_reach_contacts_and_the_users_devices() {
    let dir = tempfile::tempdir().unwrap();
    let alice = Node::start(&dir.path().join("alice")).await;
    let alice2 = Node::start(&dir.path().join("alice2")).await;
    let bob = Node::start(&dir.path().join("bob")).await;
    let carol = Node::start(&dir.path().join("carol")).await;
    pair(&alice, &alice2, None).await;
    befriend(&alice, &bob).await;
    befriend(&alice, &carol).await;
    let (a, _) = alice.ids().await;
    let (b, _) = bob.ids().await;
    let (c, _) = carol.ids().await;

    // First start asks nothing: the name is the device's.
    let (status, profile) = alice.get("/v1/profile").await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["avatar"], false);
    let (_, node) = alice.get("/v1/node").await;
    assert_eq!(profile["name"], node["device_name"]);

    // A name set after the contact was added reaches it; the contact's name for her
    // follows, since Bob gave her none.
    let (status, profile) = alice
        .request(
            reqwest::Method::PUT,
            "/v1/profile",
            Some(json!({"name": "  Alice Liddell "})),
        )
        .await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile, json!({"name": "Alice Liddell", "avatar": false}));
    bob.wait_for(&format!("/v1/contacts/{a}"), WAIT, |c| {
        c["display_name"] == "Alice Liddell" && c["name"] == "Alice Liddell"
    })
    .await;
    // Set on her other device (which does not sign cards): the device that does issues the
    // card once the setting arrives.
    let (status, _) = alice2
        .request(
            reqwest::Method::PUT,
            "/v1/profile",
            Some(json!({"name": "Alice L."})),
        )
        .await;
    assert_eq!(status, 200);
    alice
        .wait_for("/v1/profile", WAIT, |p| p["name"] == "Alice L.")
        .await;
    bob.wait_for(&format!("/v1/contacts/{a}"), WAIT, |c| {
        c["display_name"] == "Alice L."
    })
    .await;

    // A picture: kept as sent, fetched by the contact and by her other device.
    let picture = png(7, 3000);
    let (status, _, _) = raw(
        &alice,
        reqwest::Method::PUT,
        "/v1/profile/avatar",
        Some(("image/png", picture.clone())),
    )
    .await;
    assert_eq!(status, 204);
    let (_, profile) = alice.get("/v1/profile").await;
    assert_eq!(profile["avatar"], true);
    let (status, content_type, got) =
        raw(&alice, reqwest::Method::GET, "/v1/profile/avatar", None).await;
    assert_eq!((status, content_type.as_str()), (200, "image/png"));
    assert_eq!(got, picture);
    wait_for_bytes(&bob, &format!("/v1/contacts/{a}/avatar"), &picture).await;
    bob.wait_for(&format!("/v1/contacts/{a}"), WAIT, |c| c["avatar"] == true)
        .await;
    wait_for_bytes(&alice2, "/v1/profile/avatar", &picture).await;
    // A new one (the header says PNG, the bytes are JPEG: the bytes win) replaces it there.
    let picture = jpeg(9, 5000);
    let (status, _, _) = raw(
        &alice,
        reqwest::Method::PUT,
        "/v1/profile/avatar",
        Some(("image/png", picture.clone())),
    )
    .await;
    assert_eq!(status, 204);
    wait_for_bytes(&bob, &format!("/v1/contacts/{a}/avatar"), &picture).await;
    let (_, content_type, _) = raw(
        &bob,
        reqwest::Method::GET,
        &format!("/v1/contacts/{a}/avatar"),
        None,
    )
    .await;
    assert_eq!(content_type, "image/jpeg");

    // Alice renames Bob for herself: her other device shows it too; his own name stays
    // his, and a later change of it shows beside hers.
    let (status, bob_card) = bob
        .request(
            reqwest::Method::PUT,
            "/v1/profile",
            Some(json!({"name": "Robert"})),
        )
        .await;
    assert_eq!(status, 200, "{bob_card}");
    alice
        .wait_for(&format!("/v1/contacts/{b}"), WAIT, |c| {
            c["display_name"] == "Robert" && c["name"] == "Robert"
        })
        .await;
    let (status, renamed) = alice
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/contacts/{b}"),
            Some(json!({"name": "Bobby"})),
        )
        .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(
        (
            &renamed["name"],
            &renamed["display_name"],
            &renamed["renamed"]
        ),
        (&json!("Bobby"), &json!("Robert"), &json!(true))
    );
    alice2
        .wait_for(&format!("/v1/contacts/{b}"), WAIT, |c| {
            c["name"] == "Bobby" && c["display_name"] == "Robert"
        })
        .await;
    let (status, _) = bob
        .request(
            reqwest::Method::PUT,
            "/v1/profile",
            Some(json!({"name": "Rob"})),
        )
        .await;
    assert_eq!(status, 200);
    alice
        .wait_for(&format!("/v1/contacts/{b}"), WAIT, |c| {
            c["display_name"] == "Rob" && c["name"] == "Bobby"
        })
        .await;
    // Bob's devices never see Alice's name for him.
    let (_, me) = bob.get("/v1/profile").await;
    assert_eq!(me["name"], "Rob");

    // Bad input: a stable code, nothing changed.
    for (body, code) in [
        (json!({"name": ""}), "invalid_name"),
        (json!({"name": "   "}), "invalid_name"),
        (json!({"name": "x".repeat(65)}), "invalid_name"),
        (json!({"name": "two\nlines"}), "invalid_name"),
    ] {
        let (status, answer) = alice
            .request(reqwest::Method::PUT, "/v1/profile", Some(body.clone()))
            .await;
        assert_eq!(
            (status, error_code(&answer)),
            (400, code),
            "{body}: {answer}"
        );
        let (status, answer) = alice
            .request(
                reqwest::Method::PATCH,
                &format!("/v1/contacts/{b}"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (status, error_code(&answer)),
            (400, code),
            "{body}: {answer}"
        );
    }
    let (_, profile) = alice.get("/v1/profile").await;
    assert_eq!(profile["name"], "Alice L.");
    for (content_type, bytes, code) in [
        (
            "image/png",
            b"hello, not a picture".to_vec(),
            "invalid_image",
        ),
        ("image/png", Vec::new(), "invalid_image"),
        ("image/png", png(1, 256 * 1024 + 1), "avatar_too_large"),
        (
            "image/webp",
            b"RIFF\0\0\0\0WAVEfmt ".to_vec(),
            "invalid_image",
        ),
    ] {
        let (status, _, answer) = raw(
            &alice,
            reqwest::Method::PUT,
            "/v1/profile/avatar",
            Some((content_type, bytes)),
        )
        .await;
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!((status, error_code(&answer)), (400, code), "{answer}");
    }
    let (_, _, got) = raw(&alice, reqwest::Method::GET, "/v1/profile/avatar", None).await;
    assert_eq!(got, picture);
    let (status, answer) = alice.get(&format!("/v1/contacts/{c}/avatar")).await;
    assert_eq!((status, error_code(&answer)), (404, "no_avatar"));
    let (status, answer) = alice.get(&format!("/v1/contacts/{a}/avatar")).await;
    assert_eq!((status, error_code(&answer)), (404, "unknown_contact"));
    let (status, answer) = alice
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/contacts/{a}"),
            Some(json!({"name": "me"})),
        )
        .await;
    assert_eq!((status, error_code(&answer)), (404, "unknown_contact"));
    // `null`: his own name again.
    let (status, reset) = alice
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/contacts/{b}"),
            Some(json!({"name": null})),
        )
        .await;
    assert_eq!(status, 200, "{reset}");
    assert_eq!(
        (&reset["name"], &reset["renamed"]),
        (&json!("Rob"), &json!(false))
    );
    // Removing the picture: her contact drops it too.
    let (status, _, _) = raw(&alice, reqwest::Method::DELETE, "/v1/profile/avatar", None).await;
    assert_eq!(status, 204);
    bob.wait_for(&format!("/v1/contacts/{a}"), WAIT, |c| c["avatar"] == false)
        .await;

    // The command line: names, not ids.
    let out = cli(&["profile", "set-name", "Carol"], &carol);
    assert!(out.contains("Carol"), "{out}");
    alice
        .wait_for(&format!("/v1/contacts/{c}"), WAIT, |v| v["name"] == "Carol")
        .await;
    let out = cli(&["contacts", "rename", "Rob", "Bobby"], &alice);
    assert!(out.contains("is now Bobby"), "{out}");
    let out = cli(&["contacts"], &alice);
    assert!(out.contains("Bobby (calls themselves Rob)"), "{out}");
    assert!(out.contains("Carol"), "{out}");
    let out = cli(&["profile"], &alice);
    assert!(out.starts_with("Alice L."), "{out}");
    let out = cli(
        &["groups", "create", "book club", "--members", "Bobby,Carol"],
        &alice,
    );
    assert!(out.contains("book club"), "{out}");
    let out = cli(&["groups", "show", "book club"], &alice);
    for name in ["me", "Bobby", "Carol"] {
        assert!(out.contains(name), "{name} in {out}");
    }
}
