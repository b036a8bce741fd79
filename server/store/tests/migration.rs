//! The upgrade from the single-document vault: a database written by the previous release
//! (`tests/fixtures/vault-v1`, made by that release's binary: two contacts, 732 messages in
//! every status, settings, an outbox of messages for a contact who was offline) opens in the
//! new layout with nothing lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use volli_core::{Timestamp, UserId};
use volli_store::vault::StoredMessage;
use volli_store::{Store, VaultOptions};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vault-v1")
}

fn expected() -> Value {
    serde_json::from_slice(&std::fs::read(fixture().join("expected.json")).unwrap()).unwrap()
}

async fn everything_with(store: &Store, with: UserId) -> Vec<StoredMessage> {
    let mut out: Vec<StoredMessage> = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .vault()
            .messages(with, before, 100)
            .await
            .unwrap()
            .unwrap();
        if page.is_empty() {
            return out;
        }
        before = Some(page[0].id);
        let mut page = page;
        page.extend(out);
        out = page;
    }
}

#[tokio::test]
async fn a_vault_written_by_the_previous_release_is_upgraded_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture().join("volli.db"), dir.path().join("volli.db")).unwrap();
    let expected = expected();

    let store = Store::open(dir.path(), VaultOptions::default())
        .await
        .unwrap();
    let db = store.db().clone();
    let old_tables = db
        .count(
            "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('vault_updates', 'vault_snapshots')",
        )
        .await
        .unwrap();
    assert_eq!(old_tables, 0, "the old tables are gone");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM outbox").await.unwrap(),
        7,
        "outbox kept"
    );

    let contacts = store.vault().contacts().await.unwrap();
    let want: BTreeMap<String, String> = expected["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["user_id"].as_str().unwrap().to_owned(),
                c["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let got: BTreeMap<String, String> = contacts
        .iter()
        .map(|c| (c.user_id.to_string(), c.name.clone()))
        .collect();
    assert_eq!(got, want);
    for c in &contacts {
        assert!(!c.devices.is_empty(), "devices kept for {}", c.user_id);
    }

    let settings = store.vault().settings().await.unwrap();
    let want_settings: BTreeMap<String, Value> = expected["settings"]["settings"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(settings, want_settings);
    assert_eq!(store.vault().devices().await.unwrap().len(), 1);

    let mut total = 0;
    for (with, messages) in expected["conversations"].as_object().unwrap() {
        let with: UserId = with.parse().unwrap();
        let got = everything_with(&store, with).await;
        let messages = messages.as_array().unwrap();
        assert_eq!(got.len(), messages.len(), "conversation with {with}");
        let mut want: Vec<(i64, String, String, String, String)> = messages
            .iter()
            .map(|m| {
                (
                    Timestamp::parse_rfc3339(m["sent_at"].as_str().unwrap())
                        .unwrap()
                        .as_millis(),
                    m["id"].as_str().unwrap().to_owned(),
                    m["from"].as_str().unwrap().to_owned(),
                    m["body"].as_str().unwrap().to_owned(),
                    m["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        want.sort();
        let got: Vec<_> = got
            .iter()
            .map(|m| {
                (
                    m.sent_at.as_millis(),
                    m.id.to_string(),
                    m.from.to_string(),
                    m.body.clone(),
                    m.status.as_str().to_owned(),
                )
            })
            .collect();
        assert_eq!(got, want);
        total += got.len();
    }
    assert_eq!(total, 732);
    store.db().integrity_check().await.unwrap();
    store.close().await;

    // Upgraded once: a restart opens the new layout as it is.
    let store = Store::open(dir.path(), VaultOptions::default())
        .await
        .unwrap();
    assert_eq!(store.vault().stats().await.unwrap().messages, 732);
    store.close().await;
}
