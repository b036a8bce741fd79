//! Nodes behind home NATs, through the real binary: two homes behind nftables `masquerade`
//! routers (port-preserving, `random`, or with a UPnP daemon) and one public node that both
//! have as a contact, with nothing else configured than that node as bootstrap peer. For
//! each: the invite between the homes completes, messages go both ways, each side's `path`
//! says what it is, and a file arrives — hole-punched at the speed of the link, or through
//! the friend's relay at the rate its owner set. And a relay that restarts gets its
//! reservations back without the homes restarting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use volli_tests::nat::{Carrier, Host, Internet, Nat, Router, Stray};
use volli_tests::{Node, Options, befriend, events, next_event};

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

/// A node on `host`, listening for peers on its one address (TCP and QUIC), its API where
/// the test can reach it.
async fn node_on(dir: &Path, host: &Host, config: &str, extra: Vec<String>) -> Node {
    let api = if host.router.is_some() {
        format!("{}:8470", host.api)
    } else {
        format!("{}:0", host.api)
    };
    let mut args = vec![
        "--p2p-listen".to_owned(),
        format!("/ip4/{}/udp/4001/quic-v1", host.addr),
    ];
    if let Some(addr6) = &host.addr6 {
        for listen in [
            format!("/ip6/{addr6}/tcp/4001"),
            format!("/ip6/{addr6}/udp/4001/quic-v1"),
        ] {
            args.extend(["--p2p-listen".to_owned(), listen]);
        }
    }
    args.extend(extra);
    Node::start_with(
        dir,
        Options {
            netns: Some(host.ns.clone()),
            api_listen: Some(api),
            p2p_listen: Some(format!("/ip4/{}/tcp/4001", host.addr)),
            config: config.to_owned(),
            args,
            env: std::env::var("NAT_LOG")
                .map(|l| vec![("RUST_LOG".to_owned(), l)])
                .unwrap_or_default(),
            ..Options::default()
        },
    )
    .await
}

struct World {
    // Dropped last: the namespaces go after the nodes.
    _net: Internet,
    _tmp: tempfile::TempDir,
    hosts: [Host; 3],
    public: Node,
    a: Node,
    b: Node,
}

/// A public node and two homes behind `nat_a` and `nat_b`, each home befriended with the
/// public node (which relays at `relay_rate` bytes per second).
async fn world(nat_a: Nat, nat_b: Nat, relay_rate: u64) -> World {
    world_on(Internet::new(), nat_a, nat_b, relay_rate).await
}

/// [`world`] on `net`.
async fn world_on(mut net: Internet, nat_a: Nat, nat_b: Nat, relay_rate: u64) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let public_host = net.public_host();
    let home_a = net.home(nat_a);
    let home_b = net.home(nat_b);
    let public = node_on(
        &tmp.path().join("public"),
        &public_host,
        &format!("[network]\nlan = false\nrelay_rate = {relay_rate}\n"),
        vec![],
    )
    .await;
    let friend = vec!["--bootstrap".to_owned(), public.p2p_addr().await];
    let a = node_on(&tmp.path().join("a"), &home_a, "", friend.clone()).await;
    let b = node_on(&tmp.path().join("b"), &home_b, "", friend).await;
    befriend(&public, &a).await;
    befriend(&public, &b).await;
    World {
        _net: net,
        _tmp: tmp,
        hosts: [public_host, home_a, home_b],
        public,
        a,
        b,
    }
}

async fn node_of(node: &Node) -> Value {
    node.get("/v1/node").await.1
}

/// Waits until `node` says it is `reachability` (and, when private, listens through a relay).
async fn stands(node: &Node, reachability: &str, within: Duration) -> Value {
    node.wait_for("/v1/node", within, |n| {
        n["reachability"] == reachability
            && (reachability != "private"
                || n["relayed_via"].as_array().is_some_and(|r| !r.is_empty()))
    })
    .await
}

/// The entry of `peer` in `node`'s peer table.
async fn peer_entry(node: &Node, peer: &str) -> Value {
    let (_, peers) = node.get("/v1/peers").await;
    peers["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == peer)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Home A invites home B; waits until both list each other. Returns how long it took.
async fn contacts_across(w: &World) -> Duration {
    let started = Instant::now();
    let (status, invite) = w.a.post("/v1/invites", json!({})).await;
    assert_eq!(status, 201, "{invite}");
    let (status, answer) =
        w.b.post("/v1/contacts", json!({"invite": invite["link"]}))
            .await;
    assert!(status == 201 || status == 202, "{status} {answer}");
    let (a_user, _) = w.a.ids().await;
    let (b_user, _) = w.b.ids().await;
    for (node, other) in [(&w.b, &a_user), (&w.a, &b_user)] {
        node.wait_for("/v1/contacts", Duration::from_secs(60), |c| {
            c["contacts"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["user_id"] == other.as_str()))
        })
        .await;
    }
    started.elapsed()
}

/// Sends a message from `from` to `to` and waits for its receipt.
async fn deliver(from: &Node, to: &Node, body: &str) -> Duration {
    let (to_user, _) = to.ids().await;
    let started = Instant::now();
    let id = volli_tests::send(from, &to_user, body).await;
    from.wait_for(
        &format!("/v1/messages?with={to_user}&limit=500"),
        Duration::from_secs(30),
        |m| {
            m["messages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["id"] == id.as_str() && m["status"] == "delivered")
        },
    )
    .await;
    started.elapsed()
}

/// Sends `size` bytes from `from` to `to` (accepted at once); returns the rate in bytes per
/// second from the offer to `completed` on the receiving side. That includes the set-up
/// (hashing the file, the offer, the chunk list), so it is a lower bound of the rate while
/// the data flows, and a steady one (a rate taken from progress events between two points
/// varies by ±8 % with when the test reads them).
async fn send_file(from: &Node, to: &Node, size: usize) -> f64 {
    let (to_user, _) = to.ids().await;
    let (status, _) = to
        .request(
            reqwest::Method::PUT,
            "/v1/settings/transfers.auto_accept_bytes",
            Some(json!({"value": 1u64 << 40})),
        )
        .await;
    assert_eq!(status, 200);
    let file = from.data_dir.with_extension("payload");
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let started = Instant::now();
    let (status, offer) = from
        .post("/v1/transfers", json!({"to": to_user, "path": file}))
        .await;
    assert_eq!(status, 201, "{offer}");
    let id = offer["id"].as_str().unwrap().to_owned();
    to.wait_for(
        &format!("/v1/transfers/{id}"),
        Duration::from_secs(180),
        |t| t["state"] == "completed",
    )
    .await;
    let rate = size as f64 / started.elapsed().as_secs_f64();
    let (_, t) = to.get(&format!("/v1/transfers/{id}")).await;
    assert_eq!(t["blake3"], blake3::hash(&data).to_hex().as_str());
    rate
}

/// Message latencies, one at a time, from `from`'s POST to `to`'s `message.received`.
async fn latencies(from: &Node, to: &Node, n: usize) -> Vec<Duration> {
    let (to_user, _) = to.ids().await;
    let mut received = events(to).await;
    let mut out = Vec::new();
    for i in 0..n {
        let started = Instant::now();
        let id = volli_tests::send(from, &to_user, &format!("ping {i}")).await;
        next_event(
            &mut received,
            "message.received",
            Duration::from_secs(10),
            |e| e["id"] == id.as_str(),
        )
        .await;
        out.push(started.elapsed());
    }
    out.sort();
    out
}

#[tokio::test]
async fn behind_port_preserving_nats_the_homes_hole_punch_and_move_files_at_link_speed() {
    if skip() {
        return;
    }
    let w = world(Nat::PortPreserving, Nat::PortPreserving, 4 << 20).await;
    stands(&w.public, "public", Duration::from_secs(20)).await;
    for home in [&w.a, &w.b] {
        stands(home, "private", Duration::from_secs(30)).await;
    }
    let (_, public_peer) = w.public.ids().await;
    let a_node = node_of(&w.a).await;
    assert_eq!(a_node["relayed_via"], json!([public_peer]));
    let took = contacts_across(&w).await;
    eprintln!("contacts across two NATs in {took:?}");
    // Both sides reach the other directly (a hole punch) soon after.
    let (_, a_peer) = w.a.ids().await;
    let (_, b_peer) = w.b.ids().await;
    let started = Instant::now();
    for (node, other) in [(&w.a, &b_peer), (&w.b, &a_peer)] {
        node.wait_for("/v1/peers", Duration::from_secs(10), |p| {
            p["peers"].as_array().unwrap().iter().any(|p| {
                p["peer_id"] == other.as_str() && p["connected"] == true && p["path"] == "direct"
            })
        })
        .await;
    }
    eprintln!("direct {:?} after becoming contacts", started.elapsed());
    deliver(&w.a, &w.b, "from a").await;
    deliver(&w.b, &w.a, "from b").await;
    // The file goes at the speed of A's upload link.
    let link_mbit = 100;
    w._net.limit_upload(&w.hosts[1], link_mbit);
    // Large enough that the offer, the accept and the bulk channel's set-up (all counted)
    // weigh little beside the transfer itself.
    let size = 96 << 20;
    let rate = send_file(&w.a, &w.b, size).await / 1e6;
    let link = f64::from(link_mbit) / 8.0;
    eprintln!("file over the hole-punched path: {rate:.1} MB/s of a {link:.1} MB/s link");
    // The target (TARGETS.md): at least 90 % of what plain TCP moves over the same `tbf`
    // link, and plain TCP moves 96 % of its rate: 86 % of the link, offer to completion.
    // Full runs here measure 86–87 %: the assertion leaves 5 % for a busy machine, and the
    // figure is printed above.
    assert!(
        rate >= 0.85 * 0.96 * link,
        "{rate:.1} MB/s on a {link:.1} MB/s link"
    );
    assert_eq!(peer_entry(&w.b, &a_peer).await["path"], "direct");
}

#[tokio::test]
async fn behind_random_port_nats_the_homes_talk_through_their_friends_relay() {
    if skip() {
        return;
    }
    let relay_rate: u64 = 2 << 20;
    let w = world(Nat::Random, Nat::Random, relay_rate).await;
    stands(&w.public, "public", Duration::from_secs(20)).await;
    for home in [&w.a, &w.b] {
        stands(home, "private", Duration::from_secs(30)).await;
    }
    let took = contacts_across(&w).await;
    eprintln!("contacts across two random-port NATs in {took:?}");
    let (_, a_peer) = w.a.ids().await;
    let (_, b_peer) = w.b.ids().await;
    for (node, other) in [(&w.a, &b_peer), (&w.b, &a_peer)] {
        node.wait_for("/v1/peers", Duration::from_secs(20), |p| {
            p["peers"].as_array().unwrap().iter().any(|p| {
                p["peer_id"] == other.as_str() && p["connected"] == true && p["path"] == "relayed"
            })
        })
        .await;
    }
    deliver(&w.a, &w.b, "from a").await;
    deliver(&w.b, &w.a, "from b").await;
    let times = latencies(&w.a, &w.b, 50).await;
    let p99 = times[times.len() * 99 / 100 - 1];
    eprintln!(
        "relayed message latency p50 {:?} p99 {p99:?}",
        times[times.len() / 2]
    );
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");
    // A file through the relay, at the rate its owner set (and not 0 bytes).
    let size = 8 << 20;
    let rate = send_file(&w.a, &w.b, size).await;
    eprintln!(
        "file through the relay: {:.2} MB/s at a relay rate of {:.2} MB/s",
        rate / 1e6,
        relay_rate as f64 / 1e6
    );
    assert!(
        rate > 0.8 * relay_rate as f64 && rate < 1.2 * relay_rate as f64,
        "{rate:.0} B/s at a relay rate of {relay_rate} B/s"
    );
    // No hole-punch storm: a handful of attempts, not one per packet.
    let attempts = w.a.log().matches("hole punching failed").count();
    assert!(attempts <= 6, "{attempts} failed hole punches on A");
    assert_eq!(peer_entry(&w.a, &b_peer).await["path"], "relayed");
}

#[tokio::test]
async fn with_ipv6_homes_behind_random_port_nats_reach_each_other_directly_over_it() {
    if skip() {
        return;
    }
    // IPv4 through NATs that defeat hole punching; IPv6 global, behind the routers'
    // stateful firewalls.
    let w = world_on(Internet::with_ipv6(), Nat::Random, Nat::Random, 4 << 20).await;
    for home in [&w.a, &w.b] {
        stands(home, "private", Duration::from_secs(30)).await;
    }
    let took = contacts_across(&w).await;
    eprintln!("contacts across random-port NATs with IPv6 in {took:?}");
    let (_, a_peer) = w.a.ids().await;
    let (_, b_peer) = w.b.ids().await;
    for (node, other) in [(&w.a, &b_peer), (&w.b, &a_peer)] {
        node.wait_for("/v1/peers", Duration::from_secs(20), |p| {
            p["peers"].as_array().unwrap().iter().any(|p| {
                p["peer_id"] == other.as_str() && p["connected"] == true && p["path"] == "direct"
            })
        })
        .await;
    }
    // Each knows the other's IPv6 address.
    let entry = peer_entry(&w.a, &b_peer).await;
    let addr6 = w.hosts[2].addr6.clone().unwrap();
    assert!(
        entry["addrs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().contains(&addr6)),
        "{entry}"
    );
    deliver(&w.a, &w.b, "from a over ipv6").await;
    deliver(&w.b, &w.a, "from b over ipv6").await;
    let rate = send_file(&w.a, &w.b, 16 << 20).await;
    eprintln!("file over IPv6: {:.1} MB/s", rate / 1e6);
    assert_eq!(peer_entry(&w.a, &b_peer).await["path"], "direct");
}

#[tokio::test]
async fn by_default_a_node_listens_on_ipv6_too_and_is_reached_there() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut net = Internet::with_ipv6();
    let (first, second) = (net.public_host(), net.public_host());
    // The defaults: every IPv4 and every IPv6 address, TCP and QUIC, port 8471.
    let a = Node::start_with(
        &tmp.path().join("a"),
        Options {
            netns: Some(first.ns.clone()),
            api_listen: Some(format!("{}:0", first.api)),
            p2p_listen: Some(String::new()),
            config: "[network]\nlan = false\n".into(),
            ..Options::default()
        },
    )
    .await;
    let addr6 = first.addr6.clone().unwrap();
    let listening = node_of(&a).await["listen_addrs"].clone();
    for want in [
        format!("/ip6/{addr6}/tcp/8471"),
        format!("/ip6/{addr6}/udp/8471/quic-v1"),
        format!("/ip4/{}/tcp/8471", first.addr),
    ] {
        assert!(
            listening
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l.as_str().unwrap().starts_with(&want)),
            "{want} in {listening}"
        );
    }
    // A node with IPv6 only becomes its contact.
    let b = Node::start_with(
        &tmp.path().join("b"),
        Options {
            netns: Some(second.ns.clone()),
            api_listen: Some(format!("{}:0", second.api)),
            p2p_listen: Some(format!("/ip6/{}/tcp/4001", second.addr6.clone().unwrap())),
            config: "[network]\nlan = false\n".into(),
            ..Options::default()
        },
    )
    .await;
    befriend(&a, &b).await;
    deliver(&b, &a, "over ipv6").await;
    drop((a, b));
    drop(net);
}

#[tokio::test]
async fn a_relay_that_restarts_gets_its_reservations_back_without_the_homes_restarting() {
    if skip() {
        return;
    }
    let w = world(Nat::Random, Nat::PortPreserving, 4 << 20).await;
    let World {
        _net,
        _tmp,
        hosts,
        public,
        a,
        b,
    } = w;
    let (_, public_peer) = public.ids().await;
    for home in [&a, &b] {
        stands(home, "private", Duration::from_secs(30)).await;
    }
    let mut public = public;
    public.terminate();
    for home in [&a, &b] {
        home.wait_for("/v1/node", Duration::from_secs(30), |n| {
            n["relayed_via"].as_array().is_some_and(|r| r.is_empty())
        })
        .await;
    }
    let public = node_on(
        &public.data_dir,
        &hosts[0],
        "[network]\nlan = false\n",
        vec![],
    )
    .await;
    let back = Instant::now();
    for home in [&a, &b] {
        home.wait_for("/v1/node", Duration::from_secs(120), |n| {
            n["relayed_via"]
                .as_array()
                .is_some_and(|r| r.iter().any(|p| p == public_peer.as_str()))
        })
        .await;
    }
    eprintln!("reservations back {:?} after the relay", back.elapsed());
    let _ = public;
}

#[tokio::test]
async fn behind_a_upnp_router_a_home_is_reached_directly_through_the_mapping() {
    if skip() {
        return;
    }
    if !Path::new("/usr/sbin/miniupnpd").exists() {
        assert!(
            std::env::var_os("VOLLI_SKIP_NETNS").is_some(),
            "the UPnP test needs miniupnpd (./scripts/setup.sh installs miniupnpd-nftables)"
        );
        return;
    }
    let w = world(Nat::Upnp, Nat::Random, 4 << 20).await;
    // A's router forwards its port: A is public, at its router's address.
    let a_node = stands(&w.a, "public", Duration::from_secs(60)).await;
    let (_, router_addr) = w.hosts[1].router.clone().unwrap();
    assert!(
        a_node["external_addrs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|addr| addr.as_str().unwrap().contains(&router_addr)),
        "{a_node}"
    );
    stands(&w.b, "private", Duration::from_secs(30)).await;
    contacts_across(&w).await;
    // B, behind a random-port NAT, reaches A directly through A's forwarded port.
    let (_, a_peer) = w.a.ids().await;
    w.b.wait_for("/v1/peers", Duration::from_secs(30), |p| {
        p["peers"].as_array().unwrap().iter().any(|p| {
            p["peer_id"] == a_peer.as_str() && p["connected"] == true && p["path"] == "direct"
        })
    })
    .await;
    deliver(&w.b, &w.a, "through the mapping").await;
}

// The matrix of router behaviours (issue 35): homes behind routers that drop stray packets,
// reject them with a rule, or answer them as a kernel with no input filter does, mapping
// ports preservingly or at random, some behind a carrier NAT or a few ms from the rest of
// the internet as well, all
// befriended with one public node. Cells share that node and run side by side; files go one
// direct cell at a time (each on its own `tbf` link) and the relayed ones together (each at
// the relay's rate).

const DP: Router = Router {
    nat: Nat::PortPreserving,
    stray: Stray::Drop,
};
const RP: Router = Router {
    nat: Nat::PortPreserving,
    stray: Stray::Reject,
};
const OP: Router = Router {
    nat: Nat::PortPreserving,
    stray: Stray::Open,
};
const DR: Router = Router {
    nat: Nat::Random,
    stray: Stray::Drop,
};
const RR: Router = Router {
    nat: Nat::Random,
    stray: Stray::Reject,
};

/// Where a home sits: behind its router, and maybe behind a carrier NAT too.
#[derive(Clone, Copy)]
struct Place {
    router: Router,
    /// Index into the test's carriers.
    carrier: Option<usize>,
    /// Milliseconds of delay each way between the router and the WAN (0: none).
    delay_ms: u32,
}

const fn at(router: Router) -> Place {
    Place {
        router,
        carrier: None,
        delay_ms: 0,
    }
}

/// Behind `router`, 5 ms from the rest of the internet each way: two such homes are 10 ms
/// apart, as homes in one city are. Routers with no input filter need it: each keeps an
/// entry for the first stray packet it answers, and the own side's packet then loses its
/// port, so the two sides' packets must cross between the routers — DCUtR times them to,
/// but between namespaces microseconds apart a crossing is luck (2 of 5 and 2 of 3 cells
/// direct without delay, 6 of 6 with it, in runs of 2026-12-07).
const fn far(router: Router) -> Place {
    Place {
        router,
        carrier: None,
        delay_ms: 5,
    }
}

fn place_name(place: &Place, carriers: &[(Carrier, Nat)]) -> String {
    if place.delay_ms > 0 {
        return format!("{} ({} ms away)", place.router.name(), place.delay_ms);
    }
    match place.carrier {
        None => place.router.name(),
        Some(c) => format!(
            "{} behind a carrier NAT ({})",
            place.router.name(),
            if carriers[c].1 == Nat::Random {
                "random"
            } else {
                "pp"
            }
        ),
    }
}

/// The path a cell is to end on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Direct within 10 s.
    Direct,
    /// Relayed (and it stays so).
    Relayed,
}

struct Cell {
    name: String,
    expect: Expect,
    hosts: [Host; 2],
    a: Node,
    b: Node,
}

struct Matrix {
    // Dropped last: the namespaces go after the nodes.
    net: Internet,
    _tmp: tempfile::TempDir,
    public: Node,
    cells: Vec<Cell>,
    relay_rate: u64,
}

/// Sets up `pairs` (the homes of each cell, and whether it is to end direct) on `net`
/// around one public node that relays at `relay_rate`: nodes started and befriended with
/// the public node.
async fn matrix_setup(
    mut net: Internet,
    carriers: &[Nat],
    pairs: &[(Place, Place, Expect)],
    relay_rate: u64,
) -> Matrix {
    let tmp = tempfile::tempdir().unwrap();
    let public_host = net.public_host();
    let carriers: Vec<(Carrier, Nat)> = carriers.iter().map(|n| (net.carrier(*n), *n)).collect();
    let mut homes = Vec::new();
    for (a, b, expect) in pairs {
        let mut host = |p: &Place| {
            let host = match p.carrier {
                None => net.home_behind(p.router),
                Some(c) => net.home_behind_carrier(&carriers[c].0, p.router),
            };
            if p.delay_ms > 0 {
                net.delay(&host, p.delay_ms);
            }
            host
        };
        let (ha, hb) = (host(a), host(b));
        let name = format!(
            "{} × {}",
            place_name(a, &carriers),
            place_name(b, &carriers)
        );
        homes.push((name, *expect, [ha, hb]));
    }
    let public = node_on(
        &tmp.path().join("public"),
        &public_host,
        &format!("[network]\nlan = false\nrelay_rate = {relay_rate}\n"),
        vec![],
    )
    .await;
    let friend = vec!["--bootstrap".to_owned(), public.p2p_addr().await];
    let started = futures::future::join_all(homes.iter().enumerate().map(|(i, (_, _, hosts))| {
        let (tmp, friend) = (tmp.path().to_owned(), friend.clone());
        async move {
            let a = node_on(&tmp.join(format!("a{i}")), &hosts[0], "", friend.clone()).await;
            let b = node_on(&tmp.join(format!("b{i}")), &hosts[1], "", friend).await;
            (a, b)
        }
    }))
    .await;
    let mut cells = Vec::new();
    for ((name, expect, hosts), (a, b)) in homes.into_iter().zip(started) {
        cells.push(Cell {
            name,
            expect,
            hosts,
            a,
            b,
        });
    }
    // Each home adds the public node (its first try may find it not yet reachable: then
    // it keeps trying, and both list each other once it got through).
    for cell in &cells {
        for home in [&cell.a, &cell.b] {
            Pair {
                a: &public,
                b: home,
            }
            .contacts()
            .await;
        }
    }
    Matrix {
        net,
        _tmp: tmp,
        public,
        cells,
        relay_rate,
    }
}

/// [`matrix_setup`], and the two homes of each cell made contacts.
async fn matrix(
    net: Internet,
    carriers: &[Nat],
    pairs: &[(Place, Place, Expect)],
    relay_rate: u64,
) -> Matrix {
    let m = matrix_setup(net, carriers, pairs, relay_rate).await;
    contacts_in(&m).await;
    m
}

/// Makes the two homes of each cell contacts, once each listens through the public node.
async fn contacts_in(m: &Matrix) {
    let cells = &m.cells;
    // Each home listens through the public node before it invites or is invited (its
    // invite then carries the relayed address).
    futures::future::join_all(cells.iter().flat_map(|c| [&c.a, &c.b]).map(|home| {
        home.wait_for("/v1/node", Duration::from_secs(60), |n| {
            n["relayed_via"].as_array().is_some_and(|r| !r.is_empty())
        })
    }))
    .await;
    futures::future::join_all(cells.iter().map(|c| async move {
        let w = Pair { a: &c.a, b: &c.b };
        w.contacts().await
    }))
    .await;
}

/// Two homes of a cell.
struct Pair<'a> {
    a: &'a Node,
    b: &'a Node,
}

impl Pair<'_> {
    /// A invites B; waits until both list each other.
    async fn contacts(&self) -> Duration {
        let started = Instant::now();
        let (status, invite) = self.a.post("/v1/invites", json!({})).await;
        assert_eq!(status, 201, "{invite}");
        let (status, answer) = self
            .b
            .post("/v1/contacts", json!({"invite": invite["link"]}))
            .await;
        assert!(status == 201 || status == 202, "{status} {answer}");
        let (a_user, _) = self.a.ids().await;
        let (b_user, _) = self.b.ids().await;
        for (node, other) in [(self.b, &a_user), (self.a, &b_user)] {
            node.wait_for("/v1/contacts", Duration::from_secs(60), |c| {
                c["contacts"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["user_id"] == other.as_str()))
            })
            .await;
        }
        started.elapsed()
    }
}

/// Whether `check` holds for `GET path` on `node` within `timeout`.
async fn within(
    node: &Node,
    path: &str,
    timeout: Duration,
    check: impl Fn(&Value) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check(&node.get(path).await.1) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a cell ended with.
#[derive(Debug)]
struct Outcome {
    name: String,
    path: String,
    direct_after: Option<Duration>,
    last_punch: Value,
    rate: f64,
    link: Option<f64>,
}

/// Waits until each home of `cell` sees the other on the path the cell expects: direct
/// within 10 s (or, on a cell that is to end direct, after the next attempt), or relayed once
/// an attempt to punch has failed. Then messages both ways.
async fn settle(cell: &Cell) -> (String, Option<Duration>, Value) {
    let (_, a_peer) = cell.a.ids().await;
    let (_, b_peer) = cell.b.ids().await;
    let started = Instant::now();
    let mut direct_after = None;
    // Direct within 10 s, or relayed once an attempt to punch failed (then it stays so).
    let direct = {
        let mut both = true;
        for (node, other) in [(&cell.a, &b_peer), (&cell.b, &a_peer)] {
            both &= within(node, "/v1/peers", Duration::from_secs(10), |p| {
                p["peers"].as_array().unwrap().iter().any(|p| {
                    p["peer_id"] == other.as_str()
                        && p["connected"] == true
                        && p["path"] == "direct"
                })
            })
            .await;
        }
        both
    };
    if direct {
        direct_after = Some(started.elapsed());
    } else if matches!(cell.expect, Expect::Direct) {
        // A first attempt can lose the race between the homes' packets (between routers
        // microseconds apart, or a re-dial too few): the next one, 30 s after it failed, is
        // given its chance, and the time it took is what the matrix records.
        let late = within(&cell.a, "/v1/peers", Duration::from_secs(60), |p| {
            p["peers"].as_array().unwrap().iter().any(|p| {
                p["peer_id"] == b_peer.as_str() && p["connected"] == true && p["path"] == "direct"
            })
        })
        .await;
        if late {
            direct_after = Some(started.elapsed());
            eprintln!("direct only after {:?}", started.elapsed());
        }
    } else {
        cell.a
            .wait_for("/v1/peers", Duration::from_secs(40), |p| {
                p["peers"].as_array().unwrap().iter().any(|p| {
                    p["peer_id"] == b_peer.as_str()
                        && (p["last_punch"]["outcome"] == "failed" || p["path"] == "direct")
                })
            })
            .await;
    }
    deliver(&cell.a, &cell.b, "from a").await;
    deliver(&cell.b, &cell.a, "from b").await;
    let entry = peer_entry(&cell.a, &b_peer).await;
    (
        entry["path"].as_str().unwrap_or("none").to_owned(),
        direct_after,
        entry["last_punch"].clone(),
    )
}

/// Runs the matrix: paths and messages on every cell side by side, then files.
async fn run_matrix(
    m: &Matrix,
    link_mbit: u32,
    direct_size: usize,
    relayed_size: usize,
) -> Vec<Outcome> {
    let settled = futures::future::join_all(m.cells.iter().map(settle)).await;
    // Direct cells one at a time, each on its own link.
    let mut rates = vec![0.0; m.cells.len()];
    let mut links = vec![None; m.cells.len()];
    for (i, cell) in m
        .cells
        .iter()
        .enumerate()
        .filter(|(i, _)| settled[*i].1.is_some())
    {
        m.net.limit_upload(&cell.hosts[0], link_mbit);
        rates[i] = send_file(&cell.a, &cell.b, direct_size).await;
        links[i] = Some(f64::from(link_mbit) * 1e6 / 8.0);
    }
    // Relayed cells together: each is paced to the relay's rate on its own.
    let relayed: Vec<(usize, f64)> = futures::future::join_all(
        m.cells
            .iter()
            .enumerate()
            .filter(|(i, _)| settled[*i].1.is_none())
            .map(|(i, c)| async move { (i, send_file(&c.a, &c.b, relayed_size).await) }),
    )
    .await;
    for (i, rate) in relayed {
        rates[i] = rate;
    }
    let outcomes: Vec<Outcome> = m
        .cells
        .iter()
        .zip(settled)
        .enumerate()
        .map(|(i, (cell, (path, direct_after, last_punch)))| Outcome {
            name: cell.name.clone(),
            path,
            direct_after,
            last_punch,
            rate: rates[i],
            link: links[i],
        })
        .collect();
    let direct = outcomes.iter().filter(|o| o.path == "direct").count();
    eprintln!("| routers (home A × home B) | path | direct after | file | last punch |");
    eprintln!("|---|---|---|---|---|");
    for o in &outcomes {
        eprintln!(
            "| {} | {} | {} | {:.2} MB/s{} | {} |",
            o.name,
            o.path,
            o.direct_after
                .map_or("—".to_owned(), |d| format!("{:.1} s", d.as_secs_f64())),
            o.rate / 1e6,
            o.link.map_or(
                format!(" (relay {:.2} MB/s)", m.relay_rate as f64 / 1e6),
                |l| { format!(" of a {:.2} MB/s link", l / 1e6) }
            ),
            o.last_punch
        );
    }
    eprintln!("direct: {direct} of {} cells", outcomes.len());
    for (o, cell) in outcomes.iter().zip(&m.cells) {
        match cell.expect {
            Expect::Direct => assert!(
                o.direct_after.is_some(),
                "{}: not direct within 10 s, nor after a second attempt",
                o.name
            ),
            Expect::Relayed => assert_eq!(o.path, "relayed", "{}", o.name),
        }
        match o.link {
            // As in the single-cell test: 90 % of what plain TCP moves on a tbf link (96 %
            // of its rate), offer to completion.
            Some(link) => assert!(
                o.rate >= 0.9 * 0.96 * link,
                "{}: {:.2} MB/s",
                o.name,
                o.rate / 1e6
            ),
            // At the relay's rate (up to eight cells at once on two cores: the offer and
            // set-up weigh more than alone).
            None => assert!(
                o.rate > 0.75 * m.relay_rate as f64 && o.rate < 1.2 * m.relay_rate as f64,
                "{}: {:.0} B/s at a relay rate of {} B/s",
                o.name,
                o.rate,
                m.relay_rate
            ),
        }
    }
    // No storms: per relayed home, towards its partner, a few attempts (one at first, then
    // 30 s and 2 min after a failure) of four spaced re-dials each.
    for cell in m.cells.iter().filter(|c| c.expect != Expect::Direct) {
        let (_, b_peer) = cell.b.ids().await;
        let log = cell.a.log();
        let towards = |what: &str| {
            log.lines()
                .filter(|l| l.contains(what) && l.contains(b_peer.as_str()))
                .count()
        };
        let (dials, failed) = (
            towards("hole punching: dialing again"),
            towards("hole punching failed"),
        );
        assert!(
            failed <= 3 && dials <= 4 * (failed + 1),
            "{}: {dials} re-dials in {failed} failed attempts",
            cell.name
        );
    }
    let _ = &m.public;
    outcomes
}

#[tokio::test]
async fn matrix_homes_that_keep_ports_punch_through_dropping_rejecting_and_carrier_nats() {
    if skip() {
        return;
    }
    let m = matrix(
        Internet::new(),
        &[Nat::PortPreserving],
        &[
            (at(DP), at(DP), Expect::Direct),
            (at(RP), at(RP), Expect::Direct),
            (far(OP), far(OP), Expect::Direct),
            (at(DP), at(OP), Expect::Direct),
            (
                Place {
                    router: DP,
                    carrier: Some(0),
                    delay_ms: 0,
                },
                at(RP),
                Expect::Direct,
            ),
        ],
        2 << 20,
    )
    .await;
    run_matrix(&m, 40, 32 << 20, 8 << 20).await;
}

#[tokio::test]
async fn matrix_homes_behind_a_random_port_nat_talk_through_the_relay() {
    if skip() {
        return;
    }
    let m = matrix(
        Internet::new(),
        &[Nat::Random],
        &[
            (at(DP), at(DR), Expect::Relayed),
            (at(DP), at(RR), Expect::Relayed),
            (at(RP), at(DR), Expect::Relayed),
            (at(RP), at(RR), Expect::Relayed),
            (at(DR), at(DR), Expect::Relayed),
            (at(DR), at(RR), Expect::Relayed),
            (at(RR), at(RR), Expect::Relayed),
            (
                Place {
                    router: DP,
                    carrier: Some(0),
                    delay_ms: 0,
                },
                at(DP),
                Expect::Relayed,
            ),
        ],
        1 << 20,
    )
    .await;
    run_matrix(&m, 40, 32 << 20, 8 << 20).await;
}

#[tokio::test]
async fn a_friend_in_a_private_range_relays_for_both_homes_though_nobody_knows_it_is_public() {
    if skip() {
        return;
    }
    // The "internet" is 10.x: AutoNAT counts none of it as public, so every node stays
    // `unknown`, and still the homes listen through the friend's node.
    let m = matrix(
        Internet::private_range(),
        &[],
        &[
            (at(RR), at(DR), Expect::Relayed),
            (at(RP), at(DP), Expect::Direct),
        ],
        1 << 20,
    )
    .await;
    let (_, public_peer) = m.public.ids().await;
    for home in m.cells.iter().flat_map(|c| [&c.a, &c.b]) {
        let n = node_of(home).await;
        assert_eq!(n["reachability"], "unknown", "{n}");
        assert_eq!(n["relayed_via"], json!([public_peer]), "{n}");
    }
    assert_eq!(node_of(&m.public).await["reachability"], "unknown");
    run_matrix(&m, 40, 32 << 20, 8 << 20).await;
}

#[tokio::test]
async fn a_file_that_started_on_the_relay_moves_to_the_direct_path_when_a_later_punch_succeeds() {
    if skip() {
        return;
    }
    let relay_rate: u64 = 1 << 20;
    let m = matrix_setup(
        Internet::new(),
        &[],
        &[(at(DP), at(RP), Expect::Relayed)],
        relay_rate,
    )
    .await;
    let cell = &m.cells[0];
    // Until the first attempt has failed, each router drops everything from the other's:
    // only the relay connects them.
    let (_, router_a) = cell.hosts[0].router.clone().unwrap();
    let (_, router_b) = cell.hosts[1].router.clone().unwrap();
    m.net.cut(&cell.hosts[1], &router_a);
    m.net.cut(&cell.hosts[0], &router_b);
    contacts_in(&m).await;
    let (_, a_peer) = cell.a.ids().await;
    let (b_user, b_peer) = cell.b.ids().await;
    for (node, other) in [(&cell.a, &b_peer), (&cell.b, &a_peer)] {
        node.wait_for("/v1/peers", Duration::from_secs(40), |p| {
            p["peers"].as_array().unwrap().iter().any(|p| {
                p["peer_id"] == other.as_str()
                    && p["path"] == "relayed"
                    && p["last_punch"]["outcome"] == "failed"
            })
        })
        .await;
    }
    let failed_at = Instant::now();
    eprintln!(
        "first punch failed: {}",
        peer_entry(&cell.a, &b_peer).await["last_punch"]
    );
    // A file on the relay; the cut heals once it is under way.
    let (status, _) = cell
        .b
        .request(
            reqwest::Method::PUT,
            "/v1/settings/transfers.auto_accept_bytes",
            Some(json!({"value": 1u64 << 40})),
        )
        .await;
    assert_eq!(status, 200);
    let size: usize = 48 << 20;
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let file = cell.a.data_dir.with_extension("payload");
    std::fs::write(&file, &data).unwrap();
    let started = Instant::now();
    let (status, offer) = cell
        .a
        .post("/v1/transfers", json!({"to": b_user, "path": file}))
        .await;
    assert_eq!(status, 201, "{offer}");
    let id = offer["id"].as_str().unwrap().to_owned();
    cell.b
        .wait_for(
            &format!("/v1/transfers/{id}"),
            Duration::from_secs(30),
            |t| t["bytes_done"].as_u64().is_some_and(|b| b > 0),
        )
        .await;
    m.net.heal(&cell.hosts[1]);
    m.net.heal(&cell.hosts[0]);
    // The next attempt (30 s after the failed one) finds the path open.
    let mut moved = None;
    let mut done_then = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, t) = cell.b.get(&format!("/v1/transfers/{id}")).await;
        if moved.is_none() && peer_entry(&cell.b, &a_peer).await["path"] == "direct" {
            moved = Some(failed_at.elapsed());
            done_then = t["bytes_done"].as_u64().unwrap();
        }
        if t["state"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "{t}");
        assert_ne!(t["state"], "failed", "{t}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = started.elapsed();
    let moved = moved.expect("the path became direct before the file completed");
    let (_, t) = cell.b.get(&format!("/v1/transfers/{id}")).await;
    assert_eq!(t["blake3"], blake3::hash(&data).to_hex().as_str());
    eprintln!(
        "direct {moved:?} after the first punch failed, {:.1} of {} MiB over the relay; \
         the file took {took:?} (on the relay alone: {:.0} s)",
        done_then as f64 / f64::from(1 << 20),
        size >> 20,
        size as f64 / relay_rate as f64
    );
    // It moved mid-way, and finished well before the relay alone would have.
    assert!(done_then < size as u64, "{done_then}");
    assert!(
        took.as_secs_f64() < 0.8 * size as f64 / relay_rate as f64,
        "{took:?}"
    );
    let punch = peer_entry(&cell.b, &a_peer).await["last_punch"].clone();
    assert_eq!(punch["outcome"], "direct", "{punch}");
}
