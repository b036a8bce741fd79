//! File transfers through the real binary: a file sent by path and one streamed as the body,
//! progress events, ranges, pause/resume/cancel/decline from both sides, `kill -9` of the
//! sender and of the receiver mid-way, the `memory` file backend, a sender whose stored
//! chunks are corrupted, and every bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use volli_tests::{Node, Options, befriend, events, free_port, next_event, on_port, volli};

fn random_file(dir: &Path, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let mut data = vec![0u8; len];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ len as u64;
    for b in &mut data {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

fn hash(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

async fn offer(from: &Node, to: &str, path: &Path) -> Value {
    let (status, t) = from
        .post(
            "/v1/transfers",
            json!({"to": to, "path": path.to_str().unwrap()}),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    t
}

/// [`offer`] to a contact who is away, once the file is deposited with `holder`; its id.
async fn offer_held(from: &Node, to: &str, path: &Path, holder: &str) -> String {
    let id = offer(from, to, path).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    from.wait_for(
        &format!("/v1/transfers/{id}"),
        Duration::from_secs(60),
        |t| t["via"] == json!([holder]),
    )
    .await;
    id
}

async fn act(node: &Node, id: &str, action: &str) -> (u16, Value) {
    node.post(&format!("/v1/transfers/{id}/{action}"), json!({}))
        .await
}

async fn transfer(node: &Node, id: &str) -> Value {
    node.get(&format!("/v1/transfers/{id}")).await.1
}

async fn wait_state(node: &Node, id: &str, state: &str, within: Duration) -> Value {
    node.wait_for(&format!("/v1/transfers/{id}"), within, |t| {
        t["state"] == state
    })
    .await
}

async fn content(
    node: &Node,
    id: &str,
    range: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = reqwest::Client::new()
        .get(format!("{}/v1/transfers/{id}/content", node.url))
        .bearer_auth(&node.token);
    if let Some(r) = range {
        request = request.header("range", r);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

/// Two contacts; `a_config` and `b_config` are appended to their configuration.
async fn pair_of(tmp: &Path, a_config: &str, b_config: &str) -> (Node, Node, String, String) {
    let a = Node::start_with(
        &tmp.join("a"),
        Options {
            config: a_config.into(),
            ..Options::default()
        },
    )
    .await;
    let b = Node::start_with(
        &tmp.join("b"),
        Options {
            config: b_config.into(),
            ..Options::default()
        },
    )
    .await;
    befriend(&a, &b).await;
    let (a_user, _) = a.ids().await;
    let (b_user, _) = b.ids().await;
    (a, b, a_user, b_user)
}

#[tokio::test]
async fn a_file_sent_by_path_arrives_whole_with_progress_and_ranges() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, a_user, b_user) = pair_of(tmp.path(), "", "").await;
    let (path, data) = random_file(tmp.path(), "holiday photos.bin", (5 << 20) + 12_345);
    let mut b_events = events(&b).await;
    let mut a_events = events(&a).await;

    let t = offer(&a, &b_user, &path).await;
    let id = t["id"].as_str().unwrap().to_owned();
    assert_eq!(t["direction"], "outgoing");
    assert_eq!(t["state"], "offered");
    assert_eq!(t["name"], "holiday photos.bin");
    assert_eq!(t["size"], data.len());
    assert_eq!(t["peer"], b_user.as_str());
    assert_eq!(t["blake3"], hash(&data));

    let offered = next_event(
        &mut b_events,
        "transfer.offered",
        Duration::from_secs(20),
        |e| e["id"] == id.as_str(),
    )
    .await;
    assert_eq!(offered["from"], a_user.as_str());
    assert_eq!(offered["size"], data.len());
    let incoming = transfer(&b, &id).await;
    assert_eq!(incoming["direction"], "incoming");
    assert_eq!(incoming["state"], "offered");
    assert_eq!(incoming["blake3"], hash(&data));

    // Not before it is there; not on the wrong side.
    let (status, _, _) = content(&b, &id, None).await;
    assert_eq!(status, 409);
    let (status, body) = act(&a, &id, "accept").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_incoming")),
        "{body}"
    );
    let (status, body) = act(&b, &id, "pause").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_running")),
        "{body}"
    );

    let (status, accepted) = act(&b, &id, "accept").await;
    assert_eq!(status, 200, "{accepted}");
    assert_eq!(accepted["state"], "running");
    let (status, body) = act(&b, &id, "accept").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_offered")),
        "{body}"
    );

    // Progress only grows, and ends with the file's hash.
    let mut last = 0u64;
    let completed = loop {
        let e = tokio::time::timeout(
            Duration::from_secs(60),
            futures::StreamExt::next(&mut b_events),
        )
        .await
        .expect("events keep coming")
        .unwrap();
        if e["id"] != id.as_str() {
            continue;
        }
        match e["type"].as_str().unwrap() {
            "transfer.progress" => {
                let done = e["bytes_done"].as_u64().unwrap();
                assert!(done >= last, "progress went back: {done} < {last}");
                assert_eq!(e["size"], data.len());
                last = done;
            }
            "transfer.completed" => break e,
            "transfer.failed" => panic!("failed: {e}\n{}", b.log()),
            _ => {}
        }
    };
    assert_eq!(completed["blake3"], hash(&data));
    let done = wait_state(&b, &id, "completed", Duration::from_secs(5)).await;
    assert_eq!(done["bytes_done"], data.len());
    next_event(
        &mut a_events,
        "transfer.completed",
        Duration::from_secs(20),
        |e| e["id"] == id.as_str(),
    )
    .await;
    let sent = wait_state(&a, &id, "completed", Duration::from_secs(5)).await;
    assert_eq!(sent["bytes_done"], data.len());

    // The whole file, and ranges of it.
    let (status, headers, bytes) = content(&b, &id, None).await;
    assert_eq!(status, 200);
    assert!(bytes == data, "the received file differs");
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(headers["etag"], format!("\"{}\"", hash(&data)).as_str());
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains("holiday%20photos.bin")
    );
    for (range, start, end) in [
        ("bytes=1000-1999", 1000usize, 1999usize),
        ("bytes=65530-65546", 65_530, 65_546),
        ("bytes=1048570-2097160", 1_048_570, 2_097_160),
        ("bytes=-10", data.len() - 10, data.len() - 1),
        ("bytes=5242000-", 5_242_000, data.len() - 1),
    ] {
        let (status, headers, bytes) = content(&b, &id, Some(range)).await;
        assert_eq!(status, 206, "{range}");
        assert_eq!(
            headers["content-range"],
            format!("bytes {start}-{end}/{}", data.len()).as_str()
        );
        assert!(bytes == data[start..=end], "{range} differs");
    }
    let (status, _, _) = content(&b, &id, Some("bytes=99999999-")).await;
    assert_eq!(status, 416);

    // Finished is finished.
    let (status, body) = act(&b, &id, "resume").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("transfer_finished")),
        "{body}"
    );
    let (status, body) = act(&a, &id, "cancel").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("transfer_finished")),
        "{body}"
    );
    let (status, _) = b
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/transfers/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = b.get(&format!("/v1/transfers/{id}")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_transfer"))
    );
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, _b, _, b_user) = pair_of(tmp.path(), "", "").await;
    let stranger = volli_core::UserSecret::from_master([7; 32])
        .user_id()
        .to_string();
    let (file, _) = random_file(tmp.path(), "f.bin", 1000);
    let f = file.to_str().unwrap();
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"to": stranger, "path": f}), 404, "unknown_contact"),
        (
            json!({"to": "not-a-user", "path": f}),
            400,
            "invalid_user_id",
        ),
        (
            json!({"to": b_user, "path": "relative/f.bin"}),
            400,
            "invalid_path",
        ),
        (
            json!({"to": b_user, "path": "/no/such/file"}),
            400,
            "invalid_path",
        ),
        (
            json!({"to": b_user, "path": tmp.path().to_str().unwrap()}),
            400,
            "invalid_path",
        ),
        (json!({"to": b_user}), 400, "invalid_body"),
        (
            json!({"to": b_user, "path": f, "extra": 1}),
            400,
            "invalid_body",
        ),
    ];
    for (body, status, code) in cases {
        let (s, answer) = a.post("/v1/transfers", body.clone()).await;
        assert_eq!(
            (s, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    let http = reqwest::Client::new();
    let post = |query: &str, content_type: &str, body: &'static [u8]| {
        http.post(format!("{}/v1/transfers{query}", a.url))
            .bearer_auth(&a.token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let r = post("", "text/plain", b"hello").await.unwrap();
    assert_eq!(r.status(), 415);
    let r = post("", "application/octet-stream", b"hello")
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = post(
        &format!("?to={b_user}&name=a%2Fb"),
        "application/octet-stream",
        b"hello",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_name"
    );
    let r = post(
        &format!("?to={stranger}&name=x"),
        "application/octet-stream",
        b"hello",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    for id in ["00112233445566778899aabbccddeeff", "nope"] {
        for path in [
            format!("/v1/transfers/{id}"),
            format!("/v1/transfers/{id}/content"),
        ] {
            let (s, body) = a.get(&path).await;
            assert_eq!(
                (s, body["error"]["code"].as_str()),
                (404, Some("unknown_transfer")),
                "{path}"
            );
        }
        for action in ["accept", "decline", "pause", "resume", "cancel"] {
            let (s, body) = act(&a, id, action).await;
            assert_eq!(
                (s, body["error"]["code"].as_str()),
                (404, Some("unknown_transfer")),
                "{action}"
            );
        }
    }
    let (_, list) = a.get("/v1/transfers").await;
    assert_eq!(list["transfers"], json!([]), "nothing was created");
}

#[tokio::test]
async fn uploads_stream_to_the_backend_and_can_be_accepted_automatically() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, a_user, b_user) = pair_of(tmp.path(), "", "").await;
    let (status, body) = b
        .request(
            reqwest::Method::PUT,
            "/v1/settings/transfers.auto_accept_bytes",
            Some(json!({"value": {a_user.clone(): 10 << 20}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, data) = random_file(tmp.path(), "up.bin", (3 << 20) + 77);
    let http = reqwest::Client::new();
    // With a length …
    let r = http
        .post(format!("{}/v1/transfers?to={b_user}&name=notes.txt", a.url))
        .bearer_auth(&a.token)
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["blake3"], hash(&data));
    assert_eq!(t["size"], data.len());
    let id = t["id"].as_str().unwrap().to_owned();
    // … accepted without asking, since it is under the size set for a.
    wait_state(&b, &id, "completed", Duration::from_secs(60)).await;
    let (_, _, bytes) = content(&b, &id, None).await;
    assert!(bytes == data);
    // … and without one (chunked), larger than the auto-accept size: it waits.
    let (_, big) = random_file(tmp.path(), "big.bin", 11 << 20);
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(300_000).map(|c| Ok(c.to_vec())).collect();
    let r = http
        .post(format!("{}/v1/transfers?to={b_user}&name=big.bin", a.url))
        .bearer_auth(&a.token)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["blake3"], hash(&big));
    let id = t["id"].as_str().unwrap().to_owned();
    wait_state(&b, &id, "offered", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        transfer(&b, &id).await["state"],
        "offered",
        "not auto-accepted"
    );
    act(&b, &id, "accept").await;
    wait_state(&b, &id, "completed", Duration::from_secs(60)).await;
    let (_, _, bytes) = content(&b, &id, None).await;
    assert!(bytes == big);
}

#[tokio::test]
async fn pause_resume_cancel_and_decline_work_from_both_sides() {
    let tmp = tempfile::tempdir().unwrap();
    // 4 MB/s: an 8 MiB file takes about two seconds.
    let (a, b, _, b_user) = pair_of(tmp.path(), "[files]\nmax_send_rate = 4000000\n", "").await;
    let (path, _) = random_file(tmp.path(), "f.bin", 8 << 20);

    // Declined by the recipient.
    let id = offer(&a, &b_user, &path).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_state(&b, &id, "offered", Duration::from_secs(20)).await;
    let (status, t) = act(&b, &id, "decline").await;
    assert_eq!((status, t["state"].as_str()), (200, Some("declined")));
    wait_state(&a, &id, "declined", Duration::from_secs(20)).await;

    // Paused by the sender: the recipient sees it and cannot resume it; the sender resumes.
    let id = offer(&a, &b_user, &path).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_state(&b, &id, "offered", Duration::from_secs(20)).await;
    act(&b, &id, "accept").await;
    b.wait_for(
        &format!("/v1/transfers/{id}"),
        Duration::from_secs(20),
        |t| t["bytes_done"].as_u64().unwrap() > 0,
    )
    .await;
    let (status, t) = act(&a, &id, "pause").await;
    assert_eq!(
        (status, t["state"].as_str(), t["paused_by"].as_str()),
        (200, Some("paused"), Some("here"))
    );
    let seen = b
        .wait_for(
            &format!("/v1/transfers/{id}"),
            Duration::from_secs(20),
            |t| t["state"] == "paused",
        )
        .await;
    assert_eq!(seen["paused_by"], "there");
    let (status, body) = act(&b, &id, "resume").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_paused")),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let held = transfer(&b, &id).await["bytes_done"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = transfer(&b, &id).await["bytes_done"].as_u64().unwrap();
    assert!(
        still <= held + (2 << 20),
        "a paused transfer kept going: {held} → {still}"
    );
    assert!(still < 8 << 20);
    let (status, _) = act(&a, &id, "resume").await;
    assert_eq!(status, 200);
    wait_state(&b, &id, "completed", Duration::from_secs(60)).await;

    // Paused and resumed by the recipient, then cancelled by the sender.
    let id = offer(&a, &b_user, &path).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_state(&b, &id, "offered", Duration::from_secs(20)).await;
    act(&b, &id, "accept").await;
    let (status, t) = act(&b, &id, "pause").await;
    assert_eq!((status, t["state"].as_str()), (200, Some("paused")));
    let seen = a
        .wait_for(
            &format!("/v1/transfers/{id}"),
            Duration::from_secs(20),
            |t| t["state"] == "paused",
        )
        .await;
    assert_eq!(seen["paused_by"], "there");
    let (status, t) = act(&b, &id, "resume").await;
    assert_eq!((status, t["state"].as_str()), (200, Some("running")));
    let (status, t) = act(&a, &id, "cancel").await;
    assert_eq!((status, t["state"].as_str()), (200, Some("cancelled")));
    let seen = wait_state(&b, &id, "cancelled", Duration::from_secs(20)).await;
    assert!(seen["error"].as_str().unwrap().contains("other side"));

    // Cancelled by the recipient.
    let id = offer(&a, &b_user, &path).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_state(&b, &id, "offered", Duration::from_secs(20)).await;
    act(&b, &id, "accept").await;
    let (status, _) = act(&b, &id, "cancel").await;
    assert_eq!(status, 200);
    wait_state(&a, &id, "cancelled", Duration::from_secs(20)).await;
    let (status, body) = act(&a, &id, "resume").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("transfer_finished"))
    );
}

/// A file nobody fetches within the sender's `[files] keep_secs` fails on both sides, with
/// its reason, as soon as it expires; a transfer the recipient's quota cannot hold is refused
/// on accept with 507 `quota_exceeded` and stays offered.
#[tokio::test]
async fn unfetched_files_expire_and_quotas_refuse_what_does_not_fit() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, _, b_user) = pair_of(
        tmp.path(),
        "[files]\nkeep_secs = 3\n",
        "[files]\nmax_bytes_per_contact = 100000\n",
    )
    .await;
    let (big, _) = random_file(tmp.path(), "big.bin", 200_000);
    let id = offer(&a, &b_user, &big).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_state(&b, &id, "offered", Duration::from_secs(20)).await;
    let (status, body) = act(&b, &id, "accept").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (507, Some("quota_exceeded")),
        "{body}"
    );
    assert_eq!(transfer(&b, &id).await["state"], "offered");

    // Neither side is asked anything more: the offer expires 3 s after it was made.
    let offered = Instant::now();
    let failed = wait_state(&a, &id, "failed", Duration::from_secs(10)).await;
    assert!(
        failed["error"].as_str().unwrap().contains("keep_secs"),
        "{failed}"
    );
    let failed = wait_state(&b, &id, "failed", Duration::from_secs(10)).await;
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("not fetched in time"),
        "{failed}"
    );
    assert!(
        offered.elapsed() < Duration::from_secs(8),
        "expired late: {:?}",
        offered.elapsed()
    );
    let (status, body) = act(&b, &id, "accept").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_offered")),
        "{body}"
    );

    // What fits goes through.
    let (small, data) = random_file(tmp.path(), "small.bin", 50_000);
    let id = offer(&a, &b_user, &small).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_state(&b, &id, "offered", Duration::from_secs(20)).await;
    let (status, _) = act(&b, &id, "accept").await;
    assert_eq!(status, 200);
    let done = wait_state(&b, &id, "completed", Duration::from_secs(20)).await;
    assert_eq!(done["blake3"], hash(&data));
}

#[tokio::test]
async fn a_transfer_survives_kill_9_of_the_sender_and_of_the_receiver() {
    let tmp = tempfile::tempdir().unwrap();
    let limit = "[files]\nmax_send_rate = 3000000\n";
    let (a_port, b_port) = (free_port(), free_port());
    let a_options = Options {
        config: limit.into(),
        ..on_port(a_port)
    };
    let b_options = on_port(b_port);
    let mut a = Node::start_with(&tmp.path().join("a"), a_options.clone()).await;
    let mut b = Node::start_with(&tmp.path().join("b"), b_options.clone()).await;
    befriend(&a, &b).await;
    let (b_user, _) = b.ids().await;
    let (path, data) = random_file(tmp.path(), "big.bin", 12 << 20);
    let id = offer(&a, &b_user, &path).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_state(&b, &id, "offered", Duration::from_secs(20)).await;
    act(&b, &id, "accept").await;
    let progress = |min: u64| {
        move |t: &Value| t["bytes_done"].as_u64().unwrap_or(0) >= min || t["state"] == "completed"
    };
    b.wait_for(
        &format!("/v1/transfers/{id}"),
        Duration::from_secs(30),
        progress(3 << 20),
    )
    .await;

    // The sender crashes and comes back.
    a.kill();
    a = Node::start_with(&tmp.path().join("a"), a_options).await;
    let before = transfer(&b, &id).await["bytes_done"].as_u64().unwrap();
    assert!(
        before < data.len() as u64,
        "finished before the crash; make the file larger"
    );
    b.wait_for(
        &format!("/v1/transfers/{id}"),
        Duration::from_secs(60),
        progress(before + (2 << 20)),
    )
    .await;

    // The receiver crashes and comes back: what it had recorded is kept.
    let recorded_before_crash = transfer(&b, &id).await["bytes_done"].as_u64().unwrap();
    b.kill();
    b = Node::start_with(&tmp.path().join("b"), b_options).await;
    let after = transfer(&b, &id).await;
    assert!(
        after["bytes_done"].as_u64().unwrap() + (2 << 20) >= recorded_before_crash,
        "the receiver lost more than its last unrecorded batch: {after} vs {recorded_before_crash}"
    );
    assert_ne!(after["state"], "failed", "{after}");
    let done = wait_state(&b, &id, "completed", Duration::from_secs(90)).await;
    assert_eq!(done["blake3"], hash(&data));
    let (_, _, bytes) = content(&b, &id, None).await;
    assert!(bytes == data, "the file differs after the crashes");
    wait_state(&a, &id, "completed", Duration::from_secs(30)).await;
    // Both databases are sound.
    for node in [&mut a, &mut b] {
        node.terminate();
        let db = volli_store::Db::open(&node.data_dir.join("volli.db"))
            .await
            .unwrap();
        db.integrity_check().await.unwrap();
    }
}

#[tokio::test]
async fn the_memory_backend_can_be_chosen_and_is_the_one_used() {
    let tmp = tempfile::tempdir().unwrap();
    let memory =
        "[files]\nbackend = \"memory\"\n\n[plugins.memory]\nconfig = { max_bytes = 67108864 }\n";
    let (a, b, _, b_user) = pair_of(tmp.path(), "", memory).await;
    let calls = |plugins: &Value, name: &str| {
        plugins["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["stats"]["calls"].as_u64().unwrap())
            .unwrap()
    };
    let (_, before) = b.get("/v1/plugins").await;
    let (path, data) = random_file(tmp.path(), "m.bin", (2 << 20) + 5);
    let id = offer(&a, &b_user, &path).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_state(&b, &id, "offered", Duration::from_secs(20)).await;
    act(&b, &id, "accept").await;
    wait_state(&b, &id, "completed", Duration::from_secs(60)).await;
    let (_, _, bytes) = content(&b, &id, None).await;
    assert!(bytes == data);
    let (_, after) = b.get("/v1/plugins").await;
    assert!(
        calls(&after, "memory") >= calls(&before, "memory") + 3,
        "{after}"
    );
    assert_eq!(calls(&after, "fs"), calls(&before, "fs"), "fs was not used");
}

#[tokio::test]
async fn chunks_that_do_not_match_their_names_are_refused_and_the_transfer_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, _, b_user) = pair_of(tmp.path(), "", "").await;
    // An upload, so its chunks sit in the sender's backend; then they are corrupted there.
    let (_, data) = random_file(tmp.path(), "u.bin", 3 << 20);
    let r = reqwest::Client::new()
        .post(format!("{}/v1/transfers?to={b_user}&name=u.bin", a.url))
        .bearer_auth(&a.token)
        .header("content-type", "application/octet-stream")
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut corrupted = 0;
    for entry in walk(&a.data_dir.join("plugins")) {
        let name = entry.file_name().unwrap().to_str().unwrap().to_owned();
        if name.len() == 64 && name.bytes().all(|c| c.is_ascii_hexdigit()) {
            let mut bytes = std::fs::read(&entry).unwrap();
            bytes[10] ^= 0xff;
            std::fs::write(&entry, bytes).unwrap();
            corrupted += 1;
        }
    }
    assert_eq!(
        corrupted, 3,
        "the upload's three chunks are in the fs backend"
    );
    wait_state(&b, &id, "offered", Duration::from_secs(20)).await;
    act(&b, &id, "accept").await;
    let failed = wait_state(&b, &id, "failed", Duration::from_secs(120)).await;
    assert!(
        failed["error"].as_str().unwrap().contains("do not match"),
        "{failed}"
    );
    assert!(b.log().contains("did not match its name"));
    let (status, _, _) = content(&b, &id, None).await;
    assert_eq!(status, 409, "nothing of it can be read");
    let start = Instant::now();
    let (status, _) = b.get("/health").await;
    assert_eq!(status, 200);
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn the_cli_sends_follows_and_saves_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, a_user, b_user) = pair_of(tmp.path(), "", "").await;
    b.request(
        reqwest::Method::PUT,
        "/v1/settings/transfers.auto_accept_bytes",
        Some(json!({"value": 1 << 30})),
    )
    .await;
    let (path, data) = random_file(tmp.path(), "cli file.bin", (2 << 20) + 3);
    let dir = |n: &Node| n.data_dir.to_str().unwrap().to_owned();
    // By name … and with a progress line on stderr until it completes.
    let out = volli(&[
        "--data-dir",
        &dir(&a),
        "send-file",
        &b_user,
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout.lines().next().unwrap().trim().to_owned();
    assert!(
        stdout.contains(&format!("completed, BLAKE3 {}", hash(&data))),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("MB"));
    wait_state(&b, &id, "completed", Duration::from_secs(30)).await;
    let list = volli(&["--data-dir", &dir(&b), "transfers"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains(&id));
    let saved = tmp.path().join("saved");
    std::fs::create_dir_all(&saved).unwrap();
    let out = volli(&[
        "--data-dir",
        &dir(&b),
        "transfers",
        "save",
        &id,
        saved.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(saved.join("cli file.bin")).unwrap() == data);
    // Saved again into the same directory: the name the sender gave is taken, so the file
    // goes beside it; a named target that exists is replaced only when asked to.
    let b_dir = dir(&b);
    let save = |target: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["--data-dir", &b_dir, "transfers", "save", &id];
        args.push(target.to_str().unwrap());
        args.extend_from_slice(extra);
        volli(&args)
    };
    std::fs::write(saved.join("cli file.bin"), b"mine").unwrap();
    assert!(save(&saved, &[]).status.success());
    assert_eq!(std::fs::read(saved.join("cli file.bin")).unwrap(), b"mine");
    assert!(std::fs::read(saved.join("cli file (1).bin")).unwrap() == data);
    let out = save(&saved.join("cli file.bin"), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--overwrite"));
    assert_eq!(std::fs::read(saved.join("cli file.bin")).unwrap(), b"mine");
    assert!(
        save(&saved.join("cli file.bin"), &["--overwrite"])
            .status
            .success()
    );
    assert!(std::fs::read(saved.join("cli file.bin")).unwrap() == data);
    let leftovers = std::fs::read_dir(&saved)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".part")
        })
        .count();
    assert_eq!(leftovers, 0);
    // Streamed instead of named by path.
    let out = volli(&[
        "--data-dir",
        &dir(&a),
        "send-file",
        "--upload",
        &b_user,
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Errors are clear.
    let out = volli(&["--data-dir", &dir(&b), "transfers", "accept", &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_offered"));
    let out = volli(&[
        "--data-dir",
        &dir(&a),
        "send-file",
        "nobody",
        path.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let _ = a_user;
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Files through friends (issue 36, ADR 0022): a file offered to a contact who is offline
/// waits at a mutual friend's node the recipient designated as a relay — not at one over its
/// `[files] relay_bytes` for the sender, which refuses and the next is used — and the
/// recipient fetches it there, verified, while the sender is offline. The holder reads
/// nothing of it and lets it go once fetched.
#[tokio::test]
async fn a_file_to_an_offline_contact_waits_at_a_mutual_friend_and_arrives_with_the_sender_offline()
{
    let tmp = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port(), free_port(), free_port());
    let (alice_dir, bob_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let mut alice = Node::start_with(&alice_dir, on_port(ports.0)).await;
    let mut bob = Node::start_with(&bob_dir, on_port(ports.1)).await;
    // Carol lends little room; Dave the default.
    let carol = Node::start_with(
        &tmp.path().join("carol"),
        Options {
            config: "[files]\nrelay_bytes = 1048576\n".into(),
            ..on_port(ports.2)
        },
    )
    .await;
    let dave = Node::start_with(&tmp.path().join("dave"), on_port(ports.3)).await;
    for friend in [&carol, &dave] {
        befriend(friend, &alice).await;
        befriend(friend, &bob).await;
    }
    befriend(&alice, &bob).await;
    let (alice_id, _) = alice.ids().await;
    let (bob_id, _) = bob.ids().await;
    let (carol_id, _) = carol.ids().await;
    let (dave_id, _) = dave.ids().await;
    volli_tests::wait_until_relay_of(&alice, &bob_id, &carol_id).await;
    volli_tests::wait_until_relay_of(&alice, &bob_id, &dave_id).await;
    let (status, _) = bob
        .request(
            reqwest::Method::PUT,
            "/v1/settings/transfers.auto_accept_bytes",
            Some(json!({"value": 64u64 << 20})),
        )
        .await;
    assert_eq!(status, 200);
    // A bad allowance is refused and changes nothing.
    let (status, body) = dave
        .request(
            reqwest::Method::PUT,
            "/v1/settings/files.relay_bytes",
            Some(json!({"value": "lots"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_setting_value", "{body}");
    assert!(bob.terminate().success());

    let (path, data) = random_file(tmp.path(), "holiday-plans.bin", 5 << 20);
    let started = Instant::now();
    let t = offer(&alice, &bob_id, &path).await;
    let id = t["id"].as_str().unwrap().to_owned();
    assert_eq!(t["via"], json!([]), "{t}");
    let t = alice
        .wait_for(
            &format!("/v1/transfers/{id}"),
            Duration::from_secs(60),
            |t| t["via"] == json!([dave_id.as_str()]),
        )
        .await;
    eprintln!(
        "5 MiB deposited with a friend in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(t["state"], "offered", "{t}");
    let held = dave.get("/v1/relay").await.1;
    assert_eq!(held["held_files"]["files"], 1, "{held}");
    assert_eq!(held["held_files"]["recipients"], 1, "{held}");
    assert!(
        held["held_files"]["bytes"].as_u64().unwrap() >= 5 << 20,
        "{held}"
    );
    assert_eq!(held["held_files"]["relay_bytes"], 256u64 << 20, "{held}");
    // Carol refused it: over what she lends.
    let refused = carol.get("/v1/relay").await.1;
    assert_eq!(refused["held_files"]["files"], 0, "{refused}");
    assert_eq!(
        refused["held_files"]["relay_bytes"],
        1u64 << 20,
        "{refused}"
    );
    // Dave holds ciphertext only: neither the name nor the content is in his database.
    let db = std::fs::read(tmp.path().join("dave").join("volli.db")).unwrap_or_default();
    let wal = std::fs::read(tmp.path().join("dave").join("volli.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(16).any(|w| w == b"holiday-plans.bi"),
            "the name is readable at the holder"
        );
        assert!(
            !bytes.windows(64).any(|w| w == &data[4096..4160]),
            "the content is readable at the holder"
        );
    }
    assert!(alice.terminate().success());

    // Bob comes back while Alice is away: the file comes from Dave, checked.
    let bob = Node::start_with(&bob_dir, on_port(ports.1)).await;
    let got = wait_state(&bob, &id, "completed", Duration::from_secs(60)).await;
    assert_eq!(got["blake3"], hash(&data), "{got}");
    assert_eq!(got["peer"], alice_id.as_str(), "{got}");
    let (status, _, body) = content(&bob, &id, None).await;
    assert_eq!(status, 200);
    assert!(body == data, "the content differs");
    // Dave lets it go once Bob has it.
    dave.wait_for("/v1/relay", Duration::from_secs(20), |h| {
        h["held_files"]["files"] == 0 && h["held_files"]["bytes"] == 0
    })
    .await;

    // Alice, back, hears that it arrived.
    let alice = Node::start_with(&alice_dir, on_port(ports.0)).await;
    wait_state(&alice, &id, "completed", Duration::from_secs(60)).await;
}

/// A friend holding a file speaks for nobody: when it no longer has the file (here: it
/// dropped everything of a contact it removed), the recipient's transfer does not fail — it
/// waits for the sender, and completes from the sender's device once it is back.
#[tokio::test]
async fn a_friend_that_no_longer_holds_a_file_does_not_end_its_transfer() {
    let tmp = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port());
    let alice_dir = tmp.path().join("alice");
    let mut alice = Node::start_with(&alice_dir, on_port(ports.0)).await;
    let mut bob = Node::start_with(&tmp.path().join("bob"), on_port(ports.1)).await;
    let dave = Node::start(&tmp.path().join("dave")).await;
    befriend(&dave, &alice).await;
    befriend(&dave, &bob).await;
    befriend(&alice, &bob).await;
    let (alice_id, _) = alice.ids().await;
    let (bob_id, _) = bob.ids().await;
    let (dave_id, _) = dave.ids().await;
    volli_tests::wait_until_relay_of(&alice, &bob_id, &dave_id).await;
    let bob_dir = bob.data_dir.clone();
    assert!(bob.terminate().success());
    let (path, data) = random_file(tmp.path(), "notes.bin", 3 << 20);
    let id = offer_held(&alice, &bob_id, &path, &dave_id).await;
    assert!(alice.terminate().success());

    // Bob, back, is offered it through Dave (not accepted yet)…
    let bob = Node::start_with(&bob_dir, on_port(ports.1)).await;
    let t = bob
        .wait_for(
            &format!("/v1/transfers/{id}"),
            Duration::from_secs(30),
            |t| t["state"] == "offered",
        )
        .await;
    assert_eq!(t["via"], json!([dave_id.as_str()]), "{t}");
    assert_eq!(t["peer"], alice_id.as_str(), "{t}");
    // …then Dave drops it (he no longer knows Alice) before Bob accepts.
    let (status, body) = dave
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/contacts/{alice_id}"),
            None,
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    dave.wait_for("/v1/relay", Duration::from_secs(10), |h| {
        h["held_files"]["files"] == 0
    })
    .await;
    let (status, _) = act(&bob, &id, "accept").await;
    assert_eq!(status, 200);
    // Dave's "gone" does not end it: still running, Dave no longer listed.
    let t = bob
        .wait_for(
            &format!("/v1/transfers/{id}"),
            Duration::from_secs(30),
            |t| t["via"] == json!([]),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t2 = transfer(&bob, &id).await;
    assert_eq!(t2["state"], "running", "{t} {t2}");

    // Alice is back: it comes from her.
    let _alice = Node::start_with(&alice_dir, on_port(ports.0)).await;
    let got = wait_state(&bob, &id, "completed", Duration::from_secs(90)).await;
    assert_eq!(got["blake3"], hash(&data), "{got}");
}

/// A friend that was away when the file it held was fetched elsewhere (the two met while it
/// was offline) is told by the sender to let it go when it is back — the recipient being
/// away by then — not left holding it until it expires.
#[tokio::test]
async fn a_friend_away_when_its_file_was_fetched_elsewhere_lets_it_go_when_back() {
    let tmp = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port());
    let alice = Node::start(&tmp.path().join("alice")).await;
    let bob_dir = tmp.path().join("bob");
    let mut bob = Node::start_with(&bob_dir, on_port(ports.0)).await;
    let dave_dir = tmp.path().join("dave");
    let mut dave = Node::start_with(&dave_dir, on_port(ports.1)).await;
    befriend(&dave, &alice).await;
    befriend(&dave, &bob).await;
    befriend(&alice, &bob).await;
    let (bob_id, _) = bob.ids().await;
    let (dave_id, _) = dave.ids().await;
    volli_tests::wait_until_relay_of(&alice, &bob_id, &dave_id).await;
    let (status, _) = bob
        .request(
            reqwest::Method::PUT,
            "/v1/settings/transfers.auto_accept_bytes",
            Some(json!({"value": 64u64 << 20})),
        )
        .await;
    assert_eq!(status, 200);
    assert!(bob.terminate().success());
    let (path, data) = random_file(tmp.path(), "minutes.bin", 2 << 20);
    let id = offer_held(&alice, &bob_id, &path, &dave_id).await;
    // Dave goes away; Bob comes back while Alice is here, and gets it from her.
    assert!(dave.terminate().success());
    let mut bob = Node::start_with(&bob_dir, on_port(ports.0)).await;
    let got = wait_state(&bob, &id, "completed", Duration::from_secs(60)).await;
    assert_eq!(got["blake3"], hash(&data), "{got}");
    wait_state(&alice, &id, "completed", Duration::from_secs(60)).await;
    // Bob leaves before Dave is back: Alice, the sender, tells Dave to let it go.
    assert!(bob.terminate().success());
    let dave = Node::start_with(&dave_dir, on_port(ports.1)).await;
    dave.wait_for("/v1/relay", Duration::from_secs(30), |h| {
        h["held_files"]["files"] == 0
    })
    .await;
}
