//! Imports from another device that the vault refuses, whatever that device is allowed:
//! contacts rolled back, settings past their bounds, messages that belong elsewhere, and
//! documents the sender may not write.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use loro::{ExportMode, LoroDoc, LoroMap};
use volli_core::{ContactCard, MessageId, Timestamp, UserId, UserSecret};

use super::conversations::{MessageStatus, StoredMessage};
use super::doc::root;
use super::{DocId, VaultDelta, VaultVersion};
use crate::{Store, StoreError, VaultOptions};

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), VaultOptions::default())
        .await
        .unwrap();
    (dir, store)
}

/// What a device holding `store`'s document `id` sends after `edit`.
async fn crafted(store: &Store, id: DocId, edit: impl FnOnce(&LoroDoc)) -> VaultDelta {
    let (all, _) = store
        .vault()
        .export_since(VaultVersion::empty(), usize::MAX)
        .await
        .unwrap();
    let doc = LoroDoc::new();
    doc.set_peer_id(7).unwrap();
    for (name, blobs) in &all.docs {
        if *name == id.to_string() {
            doc.import_batch(blobs).unwrap();
        }
    }
    let before = doc.oplog_vv();
    edit(&doc);
    doc.commit();
    let mut delta = VaultDelta::default();
    delta.push(id, vec![doc.export(ExportMode::updates(&before)).unwrap()]);
    delta
}

fn refused(result: Result<super::Imported, StoreError>) -> String {
    match result {
        Err(StoreError::Refused(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_contacts_card_cannot_be_rolled_back_even_by_a_device_that_may_edit_contacts() {
    let (_dir, store) = store().await;
    let bob = UserSecret::generate().unwrap();
    let old = ContactCard::issue(&bob, "bob", &[], &[], Timestamp::from_millis(1_000));
    let new = ContactCard::issue(&bob, "bob", &[], &[], Timestamp::from_millis(2_000));
    store.vault().put_contact(old.clone(), None).await.unwrap();
    store.vault().update_contact_card(new).await.unwrap();
    let user = bob.user_id().to_string();
    let reason = refused(
        store
            .vault()
            .import(
                crafted(&store, DocId::Contacts, |doc| {
                    let map = doc.get_map(root::CONTACTS).get(&user).unwrap();
                    let loro::ValueOrContainer::Container(loro::Container::Map(m)) = map else {
                        panic!("a map")
                    };
                    m.insert("card", old.to_bytes()).unwrap();
                })
                .await,
            )
            .await,
    );
    assert!(reason.contains("roll back"), "{reason}");
    let kept = store.vault().contact(bob.user_id()).await.unwrap().unwrap();
    assert_eq!(kept.card.issued_at(), Timestamp::from_millis(2_000));
    // Renaming and removing stay possible.
    let delta = crafted(&store, DocId::Contacts, |doc| {
        let map = doc.get_map(root::CONTACTS).get(&user).unwrap();
        let loro::ValueOrContainer::Container(loro::Container::Map(m)) = map else {
            panic!("a map")
        };
        m.insert("name", "Robert").unwrap();
    })
    .await;
    store.vault().import(delta).await.unwrap();
    let kept = store.vault().contact(bob.user_id()).await.unwrap().unwrap();
    assert_eq!(kept.name, "Robert");
}

#[tokio::test]
async fn settings_stay_within_their_bounds() {
    let (_dir, store) = store().await;
    store
        .vault()
        .set_setting("ui.theme", &serde_json::json!("dark"))
        .await
        .unwrap();
    let many = crafted(&store, DocId::Settings, |doc| {
        let settings = doc.get_map(root::SETTINGS);
        for i in 0..=super::settings::MAX_SETTINGS {
            settings.insert(&format!("k{i}"), "1").unwrap();
        }
    })
    .await;
    refused(store.vault().import(many).await);
    let typed = crafted(&store, DocId::Settings, |doc| {
        doc.get_map(root::SETTINGS).insert("retention", 5).unwrap();
    })
    .await;
    refused(store.vault().import(typed).await);
    let nested = crafted(&store, DocId::Settings, |doc| {
        doc.get_map(root::SETTINGS)
            .insert_container("x", LoroMap::new())
            .unwrap();
    })
    .await;
    refused(store.vault().import(nested).await);
    // Writing locally has the same bounds.
    let big = serde_json::json!("x".repeat(60 << 10));
    for i in 0..17 {
        store
            .vault()
            .set_setting(&format!("big{i}"), &big)
            .await
            .unwrap();
    }
    assert!(store.vault().set_setting("big17", &big).await.is_err());
    // Replacing a value counts it once.
    store.vault().set_setting("big0", &big).await.unwrap();
    assert_eq!(store.vault().settings().await.unwrap().len(), 18);
}

#[tokio::test]
async fn messages_of_another_conversation_and_oversized_text_are_refused() {
    let (_dir, store) = store().await;
    let (me, bob, carol) = (
        UserSecret::generate().unwrap().user_id(),
        UserSecret::generate().unwrap().user_id(),
        UserSecret::generate().unwrap().user_id(),
    );
    let message = |n: u8, from: UserId, to: UserId, body: String| StoredMessage {
        id: MessageId::from_bytes([n; 16]),
        from,
        to,
        body,
        sent_at: Timestamp::from_millis(i64::from(n)),
        status: MessageStatus::Received,
        extra: Default::default(),
    };
    store
        .vault()
        .put_message(bob, message(1, bob, me, "hi".into()))
        .await
        .unwrap();
    let chunk = DocId::Chunk {
        conversation: bob,
        chunk: 0,
    };
    for forged in [
        message(2, carol, me, "from someone else".into()),
        message(
            3,
            bob,
            me,
            "x".repeat(volli_core::envelope::MAX_BODY_LEN + 1),
        ),
    ] {
        let delta = crafted(&store, chunk, |doc| {
            let messages = doc.get_map(root::MESSAGES);
            super::conversations::write_entry(&messages, &forged).unwrap();
        })
        .await;
        refused(store.vault().import(delta).await);
    }
    let page = store
        .vault()
        .messages(bob, None, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.len(), 1);
}

#[tokio::test]
async fn documents_the_sender_may_not_write_are_left_out() {
    let (_dir, a) = store().await;
    let (_dir2, b) = store().await;
    a.vault()
        .set_setting(
            "retention",
            &serde_json::json!({"default": {"keep_last": 1}}),
        )
        .await
        .unwrap();
    let (delta, _) = a
        .vault()
        .export_since(VaultVersion::empty(), usize::MAX)
        .await
        .unwrap();
    let imported = b
        .vault()
        .import_from(delta, |doc| *doc != DocId::Settings)
        .await
        .unwrap();
    assert_eq!(imported.skipped, 1);
    assert!(b.vault().setting("retention").await.unwrap().is_none());
}

#[tokio::test]
async fn a_document_compacted_without_history_still_goes_whole_to_a_new_device() {
    let (_dir, a) = store().await;
    let big = "x".repeat(60 << 10);
    for i in 0..100 {
        a.vault()
            .set_setting(
                &format!("k{}", i % 4),
                &serde_json::json!(format!("{i}{big}")),
            )
            .await
            .unwrap();
    }
    let (delta, _) = a
        .vault()
        .export_where(VaultVersion::empty(), usize::MAX, |d| *d == DocId::Settings)
        .await
        .unwrap();
    assert!(delta.size() < 1 << 20, "{}", delta.size());
    let (_dir2, b) = store().await;
    b.vault().import(delta).await.unwrap();
    let settings = b.vault().settings().await.unwrap();
    assert_eq!(settings.len(), 4);
    assert!(settings["k3"].as_str().unwrap().starts_with("99"));
}

/// A conversation chunk compacted without its history (a message was deleted, and every
/// device that syncs had the chunk) reaches a device paired afterwards whole.
#[tokio::test]
async fn a_chunk_erased_of_deleted_text_reaches_a_device_paired_later() {
    let (_dir, a) = store().await;
    let (me, bob) = (
        UserSecret::generate().unwrap().user_id(),
        UserSecret::generate().unwrap().user_id(),
    );
    for n in 0..10u8 {
        a.vault()
            .put_message(
                bob,
                StoredMessage {
                    id: MessageId::from_bytes([n; 16]),
                    from: me,
                    to: bob,
                    body: format!("message {n}"),
                    sent_at: Timestamp::from_millis(i64::from(n)),
                    status: MessageStatus::Queued,
                    extra: Default::default(),
                },
            )
            .await
            .unwrap();
    }
    a.vault()
        .delete_messages(bob, vec![MessageId::from_bytes([3; 16])])
        .await
        .unwrap();
    a.vault().compact().await.unwrap();
    // One more after the compaction: stored as an update after the snapshot.
    a.vault()
        .put_message(
            bob,
            StoredMessage {
                id: MessageId::from_bytes([10; 16]),
                from: me,
                to: bob,
                body: "after".into(),
                sent_at: Timestamp::from_millis(10),
                status: MessageStatus::Queued,
                extra: Default::default(),
            },
        )
        .await
        .unwrap();
    let (delta, _) = a
        .vault()
        .export_since(VaultVersion::empty(), usize::MAX)
        .await
        .unwrap();
    let (_dir2, b) = store().await;
    b.vault().import(delta).await.unwrap();
    let page = b.vault().messages(bob, None, 100).await.unwrap().unwrap();
    assert_eq!(page.len(), 10);
}
