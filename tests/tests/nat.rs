//! Nodes behind home NATs (network namespaces, nftables masquerade routers) and one public
//! node that every home has as a contact, with nothing else configured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use volli_tests::nat::{Host, Internet, Nat};
use volli_tests::{Node, Options, befriend};

fn skip() -> bool {
    if volli_tests::netns::available() && volli_tests::netns::nft_available() {
        return false;
    }
    assert!(
        std::env::var_os("VOLLI_SKIP_NETNS").is_some(),
        "the NAT tests need root, ip and nft; set VOLLI_SKIP_NETNS=1 to skip them knowingly"
    );
    true
}

async fn node_on(dir: &std::path::Path, host: &Host, extra: Vec<String>) -> Node {
    let api = if host.router.is_some() {
        format!("{}:8470", host.api)
    } else {
        format!("{}:0", host.api)
    };
    let mut args = vec![
        "--p2p-listen".to_owned(),
        format!("/ip4/{}/udp/4001/quic-v1", host.addr),
    ];
    args.extend(extra);
    Node::start_with(
        dir,
        Options {
            netns: Some(host.ns.clone()),
            api_listen: Some(api),
            p2p_listen: Some(format!("/ip4/{}/tcp/4001", host.addr)),
            args,
            ..Options::default()
        },
    )
    .await
}

#[tokio::test]
async fn explore() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut net = Internet::new();
    let public = net.public_host();
    let home_a = net.home(Nat::PortPreserving);
    let home_b = net.home(Nat::PortPreserving);
    let p = node_on(&tmp.path().join("p"), &public, vec![]).await;
    let p_addr = p.p2p_addr().await;
    let friend = vec!["--bootstrap".to_owned(), p_addr.clone()];
    let a = node_on(&tmp.path().join("a"), &home_a, friend.clone()).await;
    let b = node_on(&tmp.path().join("b"), &home_b, friend.clone()).await;
    befriend(&p, &a).await;
    befriend(&p, &b).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, invite) = a.post("/v1/invites", json!({})).await;
    assert_eq!(status, 201);
    let (status, answer) = b.post("/v1/contacts", json!({"invite": invite["link"]})).await;
    eprintln!("accept: {status} {answer}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    for (name, n) in [("p", &p), ("a", &a), ("b", &b)] {
        eprintln!("== {name} node {}", n.get("/v1/node").await.1);
        eprintln!("== {name} peers {}", n.get("/v1/peers").await.1);
        eprintln!("== {name} contacts {}", n.get("/v1/contacts").await.1);
    }
    std::fs::write("/tmp/explore/a.log", a.log()).unwrap();
    std::fs::write("/tmp/explore/b.log", b.log()).unwrap();
    std::fs::write("/tmp/explore/p.log", p.log()).unwrap();
}
