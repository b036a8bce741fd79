//! Two nodes in separate network namespaces on one bridged LAN find each other through the
//! `mdns` plugin: real multicast, real sockets, nothing on the host's own network.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use volli_tests::netns::{self, Lan};
use volli_tests::{Node, Options};

fn lan_node(ns: &str, addr: &str) -> Options {
    Options {
        netns: Some(ns.to_owned()),
        api_listen: Some(format!("{addr}:0")),
        p2p_listen: Some(format!("/ip4/{addr}/tcp/0")),
        config: "[network]\nlan = true\n".into(),
        ..Options::default()
    }
}

fn found_by_mdns(list: &Value, peer: &str) -> bool {
    list["peers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["peer_id"] == peer && p["sources"].as_array().unwrap().contains(&json!("mdns")))
}

#[tokio::test]
async fn two_nodes_on_a_lan_list_each_other_from_mdns() {
    if std::env::var_os("VOLLI_SKIP_NETNS").is_some() {
        eprintln!("skipped: VOLLI_SKIP_NETNS is set");
        return;
    }
    assert!(
        netns::available(),
        "this test builds network namespaces: run as root with iproute2, or set VOLLI_SKIP_NETNS=1"
    );
    let mut lan = Lan::new();
    let (ns_a, addr_a) = lan.host();
    let (ns_b, addr_b) = lan.host();
    let tmp = tempfile::tempdir().unwrap();
    let a = Node::start_with(&tmp.path().join("a"), lan_node(&ns_a, &addr_a)).await;
    let b = Node::start_with(&tmp.path().join("b"), lan_node(&ns_b, &addr_b)).await;
    let (_, peer_a) = a.ids().await;
    let (_, peer_b) = b.ids().await;

    let started = Instant::now();
    let seen = a
        .wait_for("/v1/peers", Duration::from_secs(10), |l| {
            found_by_mdns(l, &peer_b)
        })
        .await;
    b.wait_for("/v1/peers", Duration::from_secs(10), |l| {
        found_by_mdns(l, &peer_a)
    })
    .await;
    eprintln!(
        "found each other {:?} after both were up",
        started.elapsed()
    );
    let entry = seen["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == peer_b)
        .unwrap();
    let (b_user, _) = b.ids().await;
    assert_eq!(
        entry["user_id"], b_user,
        "the certificate in the mDNS record verified"
    );
    assert!(
        entry["addrs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x.as_str().unwrap().contains(&addr_b)),
        "B's LAN address was advertised: {entry}"
    );
}
