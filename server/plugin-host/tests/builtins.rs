//! Every built-in plugin, as the real component, loaded and exercised through the host.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use support::*;
use volli_plugin_host::{
    CallError, Capability, Decision, DepositRequest, Finding, GuestError, Kind, PeerRecord,
    PluginState, RelayCandidate, SelfInfo, Services, Usage,
};

async fn load(host: &volli_plugin_host::PluginHost, name: &str, caps: &[Capability]) {
    let inspected = host.inspect(builtin(name)).await.unwrap();
    let loaded = host.load(inspected, settings(caps)).await.unwrap();
    assert_eq!(loaded.start_error, None, "{name}");
    assert_eq!(loaded.info.state, PluginState::Running, "{name}");
}

#[tokio::test]
async fn every_builtin_loads_with_its_kind_and_requested_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), Services::default());
    for (name, wasm) in volli_plugin_host::builtin::all() {
        let inspected = host.inspect(wasm.to_vec()).await.unwrap();
        assert_eq!(inspected.manifest.name, *name);
        let requested = inspected.manifest.capabilities.clone();
        let loaded = host
            .load(
                inspected,
                settings(&requested.iter().copied().collect::<Vec<_>>()),
            )
            .await
            .unwrap();
        assert_eq!(loaded.start_error, None, "{name}");
        assert_eq!(loaded.info.granted, requested);
    }
    let list = host.list();
    let kinds: Vec<(String, Kind)> = list.iter().map(|p| (p.name.clone(), p.kind)).collect();
    for (name, kind) in [
        ("mdns", Kind::Discovery),
        ("dht", Kind::Discovery),
        ("rendezvous", Kind::Discovery),
        ("invite", Kind::Discovery),
        ("friends-only", Kind::RelayPolicy),
        ("fs", Kind::FileBackend),
        ("memory", Kind::FileBackend),
    ] {
        assert!(
            kinds.contains(&(name.to_owned(), kind)),
            "{name} in {kinds:?}"
        );
    }
    for info in list {
        assert_eq!(info.state, PluginState::Running, "{}", info.name);
        assert!(info.limits.deadline_ms > 0 && info.limits.memory_bytes > 0);
        assert!(info.stats.instantiations >= 1, "{}", info.name);
    }
}

#[tokio::test]
async fn memory_backend_stores_reads_ranges_and_enforces_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), Services::default());
    let mut s = settings(&[]);
    s.config.insert("max_bytes".into(), 1000.into());
    host.load(host.inspect(builtin("memory")).await.unwrap(), s)
        .await
        .unwrap();
    let mem = host.file_backend_named("memory").unwrap();
    mem.put("aa", b"hello world".to_vec()).await.unwrap();
    assert_eq!(mem.get("aa", 6, 100).await.unwrap(), b"world");
    assert_eq!(mem.stat("aa").await.unwrap(), Some(11));
    assert!(matches!(
        mem.put("bb", vec![0; 2000]).await,
        Err(CallError::Plugin(GuestError::LimitExceeded(_)))
    ));
    mem.delete("aa").await.unwrap();
    assert_eq!(mem.stat("aa").await.unwrap(), None);
    assert_eq!(
        mem.get("aa", 0, 1).await,
        Err(CallError::Plugin(GuestError::NotFound))
    );
}

#[tokio::test]
async fn fs_backend_writes_files_only_inside_its_own_directory() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), Services::default());
    load(&host, "fs", &[Capability::Fs]).await;
    let fs = host.file_backend_named("fs").unwrap();
    let data = b"chunk bytes".to_vec();
    let id = blake3::hash(&data).to_hex().to_string();
    fs.put(&id, data.clone()).await.unwrap();
    let on_disk = dir.path().join("fs/fs").join(&id[..2]).join(&id);
    assert_eq!(std::fs::read(&on_disk).unwrap(), data);
    assert_eq!(fs.get(&id, 0, 1 << 20).await.unwrap(), data);
    assert_eq!(fs.stat(&id).await.unwrap(), Some(data.len() as u64));
    assert!(matches!(
        fs.put("../../../etc/passwd", b"x".to_vec()).await,
        Err(CallError::Plugin(GuestError::InvalidInput(_)))
    ));
    fs.delete(&id).await.unwrap();
    assert!(!on_disk.exists());
}

#[tokio::test]
async fn fs_backend_without_the_grant_cannot_start() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), Services::default());
    let loaded = host
        .load(host.inspect(builtin("fs")).await.unwrap(), settings(&[]))
        .await
        .unwrap();
    let error = loaded.start_error.expect("no /data without the fs grant");
    assert!(error.contains("could not start"), "{error}");
}

fn request(depositor_is_contact: bool, size: u64, held: u64) -> DepositRequest {
    DepositRequest {
        depositor: "alice".into(),
        recipient: "bob".into(),
        size,
        ttl_secs: 30 * 24 * 3600,
        depositor_is_contact,
        recipient_is_contact: true,
        depositor_held: Usage {
            envelopes: 1,
            bytes: held,
        },
        recipient_held: Usage::default(),
        total_held: Usage {
            envelopes: 1,
            bytes: held,
        },
    }
}

#[tokio::test]
async fn friends_only_accepts_contacts_within_quotas_and_caps_the_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), Services::default());
    load(&host, "friends-only", &[]).await;
    let policy = host.relay_policy_named("friends-only").unwrap();
    assert_eq!(
        policy.decide(&request(true, 1000, 0)).await.unwrap(),
        Decision::Accept {
            ttl_secs: 7 * 24 * 3600
        }
    );
    assert!(matches!(
        policy.decide(&request(false, 1000, 0)).await.unwrap(),
        Decision::Reject { .. }
    ));
    assert!(matches!(
        policy.decide(&request(true, 1 << 20, 0)).await.unwrap(),
        Decision::Reject { .. }
    ));
    assert!(matches!(
        policy
            .decide(&request(true, 1000, 52_428_800))
            .await
            .unwrap(),
        Decision::Reject { .. }
    ));
    let candidates = [
        RelayCandidate {
            user_id: "slow".into(),
            online: true,
            rtt_ms: Some(90),
        },
        RelayCandidate {
            user_id: "offline".into(),
            online: false,
            rtt_ms: Some(1),
        },
        RelayCandidate {
            user_id: "fast".into(),
            online: true,
            rtt_ms: Some(5),
        },
    ];
    assert_eq!(
        policy.choose_relays(&candidates, 2).await.unwrap(),
        vec!["fast", "slow"]
    );
}

fn peer(peer_id: &str, user: &str) -> Finding {
    Finding::Peer(PeerRecord {
        peer_id: peer_id.into(),
        addrs: vec!["/ip4/192.0.2.1/tcp/8471".into()],
        user_id: Some(user.into()),
        certificate: Some(vec![1, 2, 3]),
    })
}

#[tokio::test]
async fn invite_remembers_what_it_learns_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let kv = Arc::new(MemoryKv::default());
    let host = host(
        dir.path(),
        Services {
            kv: Some(kv),
            ..Services::default()
        },
    );
    load(&host, "invite", &[Capability::Kv]).await;
    let invite = host.discovery_named("invite").unwrap();
    invite
        .learn("bob", &[peer("12D3KooWbob", "bob")])
        .await
        .unwrap();
    invite
        .learn("carol", &[Finding::Record(vec![9; 40])])
        .await
        .unwrap();
    // A fresh instance reads the same address book back from kv.
    host.set_enabled("invite", false).await.unwrap();
    host.set_enabled("invite", true).await.unwrap();
    assert_eq!(
        invite.lookup("bob").await.unwrap(),
        vec![peer("12D3KooWbob", "bob")]
    );
    assert_eq!(
        invite.lookup("carol").await.unwrap(),
        vec![Finding::Record(vec![9; 40])]
    );
    assert_eq!(invite.discover().await.unwrap().len(), 2);
    assert_eq!(invite.lookup("nobody").await.unwrap(), vec![]);
}

fn me(peer_id: &str, user: &str) -> SelfInfo {
    SelfInfo {
        user_id: user.into(),
        peer_id: peer_id.into(),
        addrs: vec![format!("/ip4/192.0.2.7/tcp/8471/p2p/{peer_id}")],
        certificate: vec![7; 150],
        signed_record: format!("record of {user}").into_bytes(),
    }
}

#[tokio::test]
async fn dht_publishes_the_signed_record_and_finds_it_by_user() {
    let dir = tempfile::tempdir().unwrap();
    let dht = Arc::new(MemoryDht::default());
    let host = host(
        dir.path(),
        Services {
            dht: Some(dht),
            ..Services::default()
        },
    );
    load(
        &host,
        "dht",
        &[Capability::Dht, Capability::Clock, Capability::Log],
    )
    .await;
    let plugin = host.discovery_named("dht").unwrap();
    plugin
        .advertise(&me("12D3KooWalice", "alice"))
        .await
        .unwrap();
    assert_eq!(
        plugin.lookup("alice").await.unwrap(),
        vec![Finding::Record(b"record of alice".to_vec())]
    );
    assert_eq!(plugin.lookup("bob").await.unwrap(), vec![]);
}

#[tokio::test]
async fn mdns_plugins_find_each_other_over_a_shared_lan() {
    let bus = Arc::new(LanBus::default());
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for i in 0..2 {
        let services = Services {
            lan: Some(bus.join(i)),
            ..Services::default()
        };
        let host = host(&dir.path().join(i.to_string()), services);
        load(
            &host,
            "mdns",
            &[Capability::Lan, Capability::Clock, Capability::Log],
        )
        .await;
        nodes.push(host);
    }
    let a = nodes[0].discovery_named("mdns").unwrap();
    let b = nodes[1].discovery_named("mdns").unwrap();
    a.advertise(&me("12D3KooWaaaa", "alice")).await.unwrap();
    b.advertise(&me("12D3KooWbbbb", "bob")).await.unwrap();
    // B heard A's announcement; A heard B's announcement and (after answering B's query) more.
    let found_by_b = b.discover().await.unwrap();
    let found_by_a = a.discover().await.unwrap();
    let only_peer = |found: Vec<Finding>| match found.as_slice() {
        [Finding::Peer(p)] => p.clone(),
        other => panic!("expected one peer, got {other:?}"),
    };
    let seen_by_b = only_peer(found_by_b);
    assert_eq!(seen_by_b.peer_id, "12D3KooWaaaa");
    assert_eq!(seen_by_b.user_id.as_deref(), Some("alice"));
    assert_eq!(seen_by_b.certificate, Some(vec![7; 150]));
    assert_eq!(
        seen_by_b.addrs,
        vec!["/ip4/192.0.2.7/tcp/8471/p2p/12D3KooWaaaa"]
    );
    assert_eq!(only_peer(found_by_a).peer_id, "12D3KooWbbbb");
    assert_eq!(a.lookup("bob").await.unwrap().len(), 1);
}
