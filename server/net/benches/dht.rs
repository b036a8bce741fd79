//! DHT in a local network of 30 nodes: how long a node takes to join (bootstrap through one
//! known peer), and how long a lookup of a user's signed address record takes.
//!
//! `cargo bench -p volli-net --bench dht`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use volli_core::{AddressRecord, DeviceCertificate, Permissions, Timestamp, UserSecret, record};
use volli_net::{Keypair, Multiaddr, NetClient, NetConfig};

const NODES: usize = 30;
const LOOKUPS: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn node(bootstrap: Vec<Multiaddr>) -> (NetClient, UserSecret, Keypair) {
    let key = Keypair::generate_ed25519();
    let mut config = NetConfig::new(key.clone(), vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()]);
    config.bootstrap = bootstrap;
    config.relay_server = false;
    config.record_validator = Some(Arc::new(|k: &[u8], v: &[u8]| {
        AddressRecord::valid_for_key(k, v, Timestamp::now())
    }));
    let (client, mut events) = volli_net::start(config).await.unwrap();
    tokio::spawn(async move { while events.next().await.is_some() {} });
    (client, UserSecret::generate().unwrap(), key)
}

async fn first_addr(client: &NetClient) -> Multiaddr {
    loop {
        if let Some(a) = client.listen_addrs().await.into_iter().next() {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main]
async fn main() {
    let (seed, seed_user, _) = node(Vec::new()).await;
    let seed_addr = first_addr(&seed)
        .await
        .with(volli_net::MultiaddrProtocol::P2p(seed.local_peer_id()));
    let mut nodes = vec![(seed, seed_user)];
    let mut joins = Vec::new();
    for _ in 1..NODES {
        let started = Instant::now();
        let (client, user, _) = node(vec![seed_addr.clone()]).await;
        first_addr(&client).await;
        client.dht_bootstrap().await.unwrap();
        joins.push(started.elapsed());
        nodes.push((client, user));
    }

    // Each node publishes its user's record.
    for (client, user) in &nodes {
        let peer = client.local_peer_id();
        let cert =
            DeviceCertificate::issue(user, peer, "bench", Permissions::ALL, Timestamp::now());
        let addrs = client.listen_addrs().await;
        let now = Timestamp::now();
        let r = AddressRecord::issue(
            user,
            &[(cert, addrs)],
            now,
            now.saturating_add(Duration::from_secs(3600)),
        );
        client
            .dht_put(record::dht_key(&user.user_id()), r.to_bytes())
            .await
            .unwrap();
    }

    let mut lookups = Vec::new();
    let mut found = 0;
    for i in 0..LOOKUPS {
        let (asker, _) = &nodes[(i * 7) % NODES];
        let (_, target) = &nodes[(i * 13 + 5) % NODES];
        let started = Instant::now();
        let records = asker
            .dht_get(record::dht_key(&target.user_id()))
            .await
            .unwrap();
        lookups.push(started.elapsed());
        if records.iter().any(|r| {
            AddressRecord::from_bytes(r, Timestamp::now())
                .is_ok_and(|r| r.user_id() == target.user_id())
        }) {
            found += 1;
        }
    }
    joins.sort();
    lookups.sort();
    println!("DHT, {NODES} nodes on loopback");
    println!(
        "  join (bootstrap through one peer): p50 {:?}  p95 {:?}  max {:?}",
        percentile(&joins, 0.5),
        percentile(&joins, 0.95),
        joins[joins.len() - 1]
    );
    println!(
        "  lookup of a user's record:         p50 {:?}  p95 {:?}  max {:?}",
        percentile(&lookups, 0.5),
        percentile(&lookups, 0.95),
        lookups[lookups.len() - 1]
    );
    println!("  lookups that found the record:     {found}/{LOOKUPS}");
}
