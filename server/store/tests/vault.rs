//! Vault behaviour against real SQLite files: persistence across reopen, compaction, group
//! commit, device records, and convergence of concurrent edits between two vaults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use proptest::prelude::*;
use serde_json::json;
use volli_core::{Claim, DeviceCertificate, Permissions, Statement, Timestamp, UserSecret};
use volli_store::vault::DeviceRecord;
use volli_store::{Store, VaultDelta, VaultOptions, VaultVersion};

async fn open(dir: &Path, options: VaultOptions) -> Store {
    Store::open(dir, options).await.unwrap()
}

/// Everything `store`'s vault holds, as a delta for a device that has nothing.
async fn everything(store: &Store) -> VaultDelta {
    let (delta, more) = store
        .vault()
        .export_since(VaultVersion::empty(), usize::MAX)
        .await
        .unwrap();
    assert!(!more);
    delta
}

/// A well-formed delta whose update bytes are not Loro's.
fn garbage_delta() -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Wire {
        docs: Vec<(String, Vec<Vec<u8>>)>,
    }
    postcard::to_allocvec(&Wire {
        docs: vec![("settings".into(), vec![b"not a loro update".to_vec()])],
    })
    .unwrap()
}

async fn row_counts(dir: &Path) -> (i64, i64) {
    let db = volli_store::Db::open(&dir.join("volli.db")).await.unwrap();
    let count = |sql: &'static str| {
        let db = db.clone();
        async move { db.count(sql).await.unwrap() }
    };
    let r = (
        count("SELECT COUNT(*) FROM vault_log").await,
        count("SELECT COUNT(*) FROM vault_docs WHERE snapshot IS NOT NULL").await,
    );
    db.close().await;
    r
}

#[tokio::test]
async fn settings_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), VaultOptions::default()).await;
    store
        .vault()
        .set_setting("theme", &json!("dark"))
        .await
        .unwrap();
    store
        .vault()
        .set_setting("limits", &json!({"a": 1}))
        .await
        .unwrap();
    store.vault().delete_setting("limits").await.unwrap();
    store.close().await;

    let store = open(dir.path(), VaultOptions::default()).await;
    assert_eq!(
        store.vault().setting("theme").await.unwrap(),
        Some(json!("dark"))
    );
    assert_eq!(store.vault().setting("limits").await.unwrap(), None);
    // The same peer keeps editing after a restart without clashing with its own history.
    store
        .vault()
        .set_setting("theme", &json!("light"))
        .await
        .unwrap();
    store.close().await;
    let store = open(dir.path(), VaultOptions::default()).await;
    assert_eq!(
        store.vault().setting("theme").await.unwrap(),
        Some(json!("light"))
    );
    store.db().integrity_check().await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn compaction_folds_the_log_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let options = VaultOptions {
        compact_after_updates: 10,
        ..VaultOptions::default()
    };
    let store = open(dir.path(), options.clone()).await;
    for i in 0..45 {
        store
            .vault()
            .set_setting(&format!("k{i}"), &json!(i))
            .await
            .unwrap();
    }
    let stats = store.vault().stats().await.unwrap();
    assert!(stats.compactions >= 4, "{stats:?}");
    assert!(stats.updates < 10, "{stats:?}");
    assert!(stats.snapshot_bytes > 0);
    store.vault().compact().await.unwrap();
    store.close().await;

    let (updates, snapshots) = row_counts(dir.path()).await;
    assert_eq!((updates, snapshots), (0, 1), "one snapshot, empty log");

    let store = open(dir.path(), options).await;
    let all = store.vault().settings().await.unwrap();
    assert_eq!(all.len(), 45);
    assert_eq!(all["k44"], json!(44));
    store.close().await;
}

#[tokio::test]
async fn updates_after_the_snapshot_are_replayed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), VaultOptions::default()).await;
    store
        .vault()
        .set_setting("before", &json!(1))
        .await
        .unwrap();
    store.vault().compact().await.unwrap();
    store.vault().set_setting("after", &json!(2)).await.unwrap();
    store.close().await;
    assert_eq!(row_counts(dir.path()).await, (1, 1));

    let store = open(dir.path(), VaultOptions::default()).await;
    let all = store.vault().settings().await.unwrap();
    assert_eq!(all.get("before"), Some(&json!(1)));
    assert_eq!(all.get("after"), Some(&json!(2)));
    store.close().await;
}

#[tokio::test]
async fn concurrent_writers_share_commits_and_all_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), VaultOptions::default()).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let vault = store.vault().clone();
        tasks.push(tokio::spawn(async move {
            vault.set_setting(&format!("w{i}"), &json!(i)).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    store.close().await;
    let (updates, _) = row_counts(dir.path()).await;
    assert!(
        updates < 200,
        "writes were batched: {updates} commits for 200 writes"
    );

    let store = open(dir.path(), VaultOptions::default()).await;
    assert_eq!(store.vault().settings().await.unwrap().len(), 200);
    store.close().await;
}

#[tokio::test]
async fn devices_are_stored_with_verified_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), VaultOptions::default()).await;
    let user = UserSecret::generate().unwrap();
    let peer = libp2p_identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let cert = DeviceCertificate::issue(
        &user,
        peer,
        "phone",
        Permissions::MESSAGES,
        Timestamp::now(),
    );
    let record = DeviceRecord {
        certificate: cert,
        added_at: Timestamp::from_millis(1_000),
        revoked_at: None,
        addrs: Vec::new(),
    };
    store.vault().put_device(record.clone()).await.unwrap();
    store.close().await;

    let store = open(dir.path(), VaultOptions::default()).await;
    assert_eq!(store.vault().devices().await.unwrap(), vec![record.clone()]);
    // Revoked once, revoked for good: a later put does not bring it back.
    let peer = record.peer_id();
    let revoked = Statement::issue(
        &user,
        Claim::Revoked { peer },
        Timestamp::from_millis(2_000),
    );
    assert!(store.vault().add_statement(revoked.clone()).await.unwrap());
    assert!(!store.vault().add_statement(revoked).await.unwrap());
    store.vault().put_device(record).await.unwrap();
    let devices = store.vault().devices().await.unwrap();
    assert_eq!(devices[0].revoked_at, Some(Timestamp::from_millis(2_000)));
    // The key generation is the highest one the user signed.
    let me = user.user_id();
    assert_eq!(store.vault().key_generation(me).await.unwrap(), 0);
    for generation in [2, 1] {
        let s = Statement::issue(&user, Claim::KeyGeneration { generation }, Timestamp::now());
        store.vault().add_statement(s).await.unwrap();
    }
    assert_eq!(store.vault().key_generation(me).await.unwrap(), 2);
    // Another user's statements say nothing about this one.
    let other = UserSecret::generate().unwrap();
    let s = Statement::issue(
        &other,
        Claim::KeyGeneration { generation: 9 },
        Timestamp::now(),
    );
    store.vault().add_statement(s).await.unwrap();
    assert_eq!(store.vault().key_generation(me).await.unwrap(), 2);
    store.close().await;
}

#[tokio::test]
async fn a_second_device_catches_up_through_export_and_import() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let a = open(a_dir.path(), VaultOptions::default()).await;
    let b = open(b_dir.path(), VaultOptions::default()).await;
    a.vault().set_setting("x", &json!(1)).await.unwrap();
    let (delta, more) = a
        .vault()
        .export_since(b.vault().version().await.unwrap(), usize::MAX)
        .await
        .unwrap();
    assert!(!more);
    assert!(
        b.vault().import(delta.clone()).await.unwrap().new,
        "new data"
    );
    assert!(
        !b.vault().import(delta).await.unwrap().new,
        "a replay changes nothing"
    );
    b.close().await;
    // What was imported is durable.
    let b = open(b_dir.path(), VaultOptions::default()).await;
    assert_eq!(b.vault().setting("x").await.unwrap(), Some(json!(1)));
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn garbage_imports_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), VaultOptions::default()).await;
    store.vault().set_setting("k", &json!("v")).await.unwrap();
    let before = store.vault().to_json().await.unwrap();
    assert!(
        store
            .vault()
            .import(VaultDelta::from_bytes(&garbage_delta()).unwrap())
            .await
            .is_err()
    );
    assert_eq!(store.vault().to_json().await.unwrap(), before);
    store.close().await;
}

#[derive(Clone, Debug)]
enum Edit {
    Set(u8, u8),
    Delete(u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0u8..6, any::<u8>()).prop_map(|(k, v)| Edit::Set(k, v)),
        (0u8..6).prop_map(Edit::Delete),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Two devices edit concurrently, then exchange their updates in either order (with
    /// replays): both end with the same document.
    #[test]
    fn concurrent_edits_converge(
        a_edits in proptest::collection::vec(edit(), 0..12),
        b_edits in proptest::collection::vec(edit(), 0..12),
        a_first in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let a_dir = tempfile::tempdir().unwrap();
            let b_dir = tempfile::tempdir().unwrap();
            let a = open(a_dir.path(), VaultOptions::default()).await;
            let b = open(b_dir.path(), VaultOptions::default()).await;
            for (store, edits) in [(&a, &a_edits), (&b, &b_edits)] {
                for e in edits {
                    match e {
                        Edit::Set(k, v) => store.vault().set_setting(&format!("k{k}"), &json!(v)).await.unwrap(),
                        Edit::Delete(k) => store.vault().delete_setting(&format!("k{k}")).await.unwrap(),
                    }
                }
            }
            let from_a = everything(&a).await;
            let from_b = everything(&b).await;
            if a_first {
                b.vault().import(from_a.clone()).await.unwrap();
                a.vault().import(from_b).await.unwrap();
            } else {
                a.vault().import(from_b).await.unwrap();
                b.vault().import(from_a.clone()).await.unwrap();
            }
            b.vault().import(from_a).await.unwrap();
            assert_eq!(a.vault().to_json().await.unwrap(), b.vault().to_json().await.unwrap());
            a.close().await;
            b.close().await;
        });
    }
}

#[tokio::test]
async fn reads_between_writes_see_them_and_do_not_split_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), VaultOptions::default()).await;
    let vault = store.vault().clone();
    // Writes and reads queued together: each read sees the write queued before it, and the
    // writes still share commits.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let vault = vault.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("k{i}");
            let value = json!(i);
            // Polled in order: the write is queued before the read.
            let (written, read) =
                tokio::join!(vault.set_setting(&key, &value), vault.setting(&key));
            written.unwrap();
            read.unwrap()
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(
            t.await.unwrap(),
            Some(json!(i)),
            "read {i} missed its write"
        );
    }
    store.close().await;
    let (updates, _) = row_counts(dir.path()).await;
    assert!(
        updates < 150,
        "{updates} commits for 200 writes and 200 reads"
    );
    let store = open(dir.path(), VaultOptions::default()).await;
    assert_eq!(store.vault().settings().await.unwrap().len(), 200);
    store.close().await;
}

#[tokio::test]
async fn contact_lookups_always_see_the_latest_write_and_import() {
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), VaultOptions::default()).await;
    let other = open(other_dir.path(), VaultOptions::default()).await;
    let friend = UserSecret::generate().unwrap();
    let id = friend.user_id();
    let card = |name: &str, at: i64| {
        volli_core::ContactCard::issue(&friend, name, &[], &[], Timestamp::from_millis(at))
    };
    let vault = store.vault();
    assert!(vault.contact(id).await.unwrap().is_none());
    vault.put_contact(card("v1", 1_000), None).await.unwrap();
    assert_eq!(vault.contact(id).await.unwrap().unwrap().card.name(), "v1");
    // Served from the cache now; a newer card must replace what it holds.
    vault.put_contact(card("v2", 2_000), None).await.unwrap();
    let got = vault.contact(id).await.unwrap().unwrap();
    assert_eq!(got.card.name(), "v2");
    // A newer card with a second device: the card is the authority on devices.
    let peer = libp2p_identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let cert = DeviceCertificate::issue(
        &friend,
        peer,
        "laptop",
        Permissions::MESSAGES,
        Timestamp::now(),
    );
    let with_device =
        volli_core::ContactCard::issue(&friend, "v3", &[cert], &[], Timestamp::from_millis(3_000));
    vault.put_contact(with_device, None).await.unwrap();
    assert_eq!(vault.contact(id).await.unwrap().unwrap().devices.len(), 1);
    vault.put_contact(card("v4", 4_000), None).await.unwrap();
    assert!(
        vault.contact(id).await.unwrap().unwrap().devices.is_empty(),
        "a device the card drops is gone"
    );

    // Another device of the same user removes the contact; the import must show it.
    other
        .vault()
        .import(everything(&store).await)
        .await
        .unwrap();
    assert!(other.vault().contact(id).await.unwrap().is_some());
    assert!(other.vault().remove_contact(id).await.unwrap());
    let (delta, _) = other
        .vault()
        .export_since(vault.version().await.unwrap(), usize::MAX)
        .await
        .unwrap();
    assert!(vault.import(delta).await.unwrap().new);
    assert!(vault.contact(id).await.unwrap().is_none());
    store.close().await;
    other.close().await;
}
