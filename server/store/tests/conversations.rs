//! Conversations in the vault against real SQLite files: paging at any depth while messages
//! arrive, chunking that keeps memory bounded, sync of messages between two devices, and
//! convergence of concurrent message writes and status changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::Path;

use proptest::prelude::*;
use volli_core::{MessageId, Timestamp, UserId, UserSecret};
use volli_store::vault::{MAX_LOADED, MessageStatus, StoredMessage};
use volli_store::{Store, VaultOptions, VaultVersion};

async fn open(dir: &Path, options: VaultOptions) -> Store {
    Store::open(dir, options).await.unwrap()
}

fn user(n: u8) -> UserId {
    UserSecret::from_master([n; 32]).user_id()
}

fn id(n: u64) -> MessageId {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&n.to_be_bytes());
    bytes[8..].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    MessageId::from_bytes(bytes)
}

fn message(n: u64, from: UserId, to: UserId, sent_at: i64) -> StoredMessage {
    StoredMessage {
        id: id(n),
        from,
        to,
        body: format!("message {n}"),
        sent_at: Timestamp::from_millis(sent_at),
        status: MessageStatus::Queued,
        extra: Default::default(),
    }
}

/// Pages back through the whole conversation, `size` at a time, calling `between` after
/// each page.
async fn walk_back(
    store: &Store,
    with: UserId,
    size: usize,
    mut between: impl AsyncFnMut(usize),
) -> Vec<StoredMessage> {
    let mut out: Vec<StoredMessage> = Vec::new();
    let mut before = None;
    let mut pages = 0;
    loop {
        let page = store
            .vault()
            .messages(with, before, size)
            .await
            .unwrap()
            .expect("the cursor is a message of the conversation");
        if page.is_empty() {
            return out;
        }
        assert!(page.len() <= size);
        before = Some(page[0].id);
        let mut page = page;
        page.extend(out);
        out = page;
        pages += 1;
        between(pages).await;
    }
}

#[tokio::test]
async fn paging_at_any_depth_never_skips_or_repeats_while_messages_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        dir.path(),
        VaultOptions {
            chunk_messages: 500,
            ..VaultOptions::default()
        },
    )
    .await;
    let (me, bob) = (user(1), user(2));
    // 4,000 messages, seven per millisecond (equal times are common: a burst from one
    // client), stored out of order in batches.
    let mut all: Vec<StoredMessage> = (0..4_000u64)
        .map(|n| message(n, me, bob, 1_000 + (n / 7) as i64))
        .collect();
    let mut shuffled = all.clone();
    shuffled.reverse();
    shuffled.rotate_left(1_234);
    for batch in shuffled.chunks(300) {
        let fresh = store
            .vault()
            .put_messages(batch.iter().map(|m| (bob, m.clone())).collect())
            .await
            .unwrap();
        assert!(fresh.iter().all(|f| *f));
    }
    all.sort_by_key(|m| (m.sent_at, m.id));

    // A page deep in history is exactly the reference slice.
    let deep = &all[1_000..1_100];
    let page = store
        .vault()
        .messages(bob, Some(all[1_100].id), 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page, deep);

    // New messages keep arriving while the client pages back, some with times inside the
    // part already read (a relayed message sent long ago).
    let vault = store.vault().clone();
    let mut next = 10_000u64;
    let walked = walk_back(&store, bob, 97, async |page| {
        let late = message(next, bob, me, 1_000 + (page as i64 * 37) % 500);
        let new = message(next + 1, bob, me, 1_000_000 + page as i64);
        next += 2;
        vault
            .put_messages(vec![(bob, late), (bob, new)])
            .await
            .unwrap();
    })
    .await;
    let ids: Vec<MessageId> = walked.iter().map(|m| m.id).collect();
    let unique: HashSet<MessageId> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no message twice");
    assert!(
        walked
            .windows(2)
            .all(|w| (w[0].sent_at, w[0].id) < (w[1].sent_at, w[1].id)),
        "oldest first, ties by id"
    );
    for m in &all {
        assert!(unique.contains(&m.id), "message {} skipped", m.body);
    }

    store.db().integrity_check().await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn conversations_are_chunked_and_only_a_few_chunks_stay_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let options = VaultOptions {
        chunk_messages: 100,
        ..VaultOptions::default()
    };
    let store = open(dir.path(), options.clone()).await;
    let me = user(1);
    let bob = user(2);
    for batch in 0..5u64 {
        let ms = (0..100).map(|n| {
            let n = batch * 100 + n;
            (bob, message(n, me, bob, n as i64))
        });
        store.vault().put_messages(ms.collect()).await.unwrap();
    }
    // One message to each of 40 other contacts.
    for c in 0..40u8 {
        let other = user(10 + c);
        store
            .vault()
            .put_message(other, message(1_000 + u64::from(c), me, other, 5))
            .await
            .unwrap();
    }
    let stats = store.vault().stats().await.unwrap();
    assert_eq!(stats.messages, 540);
    assert!(stats.docs >= 5 + 40, "{stats:?}");
    assert!(stats.loaded <= 3 + MAX_LOADED as u64, "{stats:?}");
    store.close().await;

    // Everything is back after a restart, and writing goes on in the newest chunk.
    let store = open(dir.path(), options).await;
    assert_eq!(
        store.vault().stats().await.unwrap().loaded,
        3,
        "only contacts, settings and devices at start"
    );
    store
        .vault()
        .put_message(bob, message(2_000, me, bob, 10_000))
        .await
        .unwrap();
    // A message stored long ago, in a full chunk no longer in memory, arrives again (a
    // relay's second copy): not new, and still shown once.
    for again in [0, 250, 499] {
        let old = message(again, me, bob, again as i64);
        assert!(!store.vault().put_message(bob, old.clone()).await.unwrap());
        let twice = store
            .vault()
            .put_messages(vec![(bob, old.clone()), (bob, old)])
            .await
            .unwrap();
        assert_eq!(twice, vec![false, false]);
    }
    let all = walk_back(&store, bob, 500, async |_| {}).await;
    assert_eq!(all.len(), 501);
    assert_eq!(all.last().unwrap().id, id(2_000));
    store.close().await;
}

#[tokio::test]
async fn a_second_device_gets_every_message_and_statuses_merge_forward() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let options = VaultOptions {
        chunk_messages: 50,
        ..VaultOptions::default()
    };
    let a = open(a_dir.path(), options.clone()).await;
    let b = open(b_dir.path(), options).await;
    let (me, bob) = (user(1), user(2));
    let ms: Vec<_> = (0..220u64)
        .map(|n| (bob, message(n, me, bob, n as i64)))
        .collect();
    a.vault().put_messages(ms).await.unwrap();

    // B has nothing; a small budget makes the export come in several parts.
    let mut version = b.vault().version().await.unwrap();
    let mut parts = 0;
    loop {
        let (delta, more) = a
            .vault()
            .export_since(version.clone(), 4_096)
            .await
            .unwrap();
        assert!(b.vault().import(delta).await.unwrap().new);
        parts += 1;
        version = b.vault().version().await.unwrap();
        if !more {
            break;
        }
    }
    assert!(parts > 1, "the budget split the export");
    let on_a = walk_back(&a, bob, 100, async |_| {}).await;
    let on_b = walk_back(&b, bob, 100, async |_| {}).await;
    assert_eq!(on_a, on_b);
    assert!(
        b.vault()
            .version()
            .await
            .unwrap()
            .includes(&a.vault().version().await.unwrap())
    );

    // Concurrent status changes: A hears the receipt, B only that a relay holds it.
    let first = id(0);
    a.vault()
        .set_message_status(bob, first, MessageStatus::Delivered)
        .await
        .unwrap();
    b.vault()
        .set_message_status(bob, first, MessageStatus::Relayed)
        .await
        .unwrap();
    let (to_b, _) = a
        .vault()
        .export_since(b.vault().version().await.unwrap(), usize::MAX)
        .await
        .unwrap();
    let (to_a, _) = b
        .vault()
        .export_since(a.vault().version().await.unwrap(), usize::MAX)
        .await
        .unwrap();
    b.vault().import(to_b).await.unwrap();
    a.vault().import(to_a).await.unwrap();
    for store in [&a, &b] {
        let page = store
            .vault()
            .messages(bob, Some(id(1)), 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(page[0].status, MessageStatus::Delivered);
    }
    // Imported data is durable, and a replay is a no-op.
    let (again, _) = a
        .vault()
        .export_since(VaultVersion::empty(), usize::MAX)
        .await
        .unwrap();
    assert!(!b.vault().import(again).await.unwrap().new);
    b.close().await;
    let b = open(b_dir.path(), VaultOptions::default()).await;
    assert_eq!(walk_back(&b, bob, 100, async |_| {}).await.len(), 220);
    a.close().await;
    b.close().await;
}

#[derive(Clone, Debug)]
enum Op {
    /// Store message `n` (both devices may store the same message: both received it).
    Put(u8),
    /// Move message `n` on to a status.
    Status(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..24).prop_map(Op::Put),
        (0u8..24, 0u8..3).prop_map(|(n, s)| Op::Status(n, s)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Two devices store messages (sometimes the same ones, into chunks both start at the
    /// same time) and change statuses concurrently, then exchange what they have in either
    /// order: both end with the same conversation.
    #[test]
    fn concurrent_message_writes_converge(
        a_ops in proptest::collection::vec(op(), 0..30),
        b_ops in proptest::collection::vec(op(), 0..30),
        a_first in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let options = VaultOptions { chunk_messages: 3, ..VaultOptions::default() };
            let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let a = open(a_dir.path(), options.clone()).await;
            let b = open(b_dir.path(), options).await;
            let (me, bob) = (user(1), user(2));
            let statuses = [MessageStatus::Relayed, MessageStatus::Failed, MessageStatus::Delivered];
            for (store, ops) in [(&a, &a_ops), (&b, &b_ops)] {
                for op in ops {
                    match *op {
                        Op::Put(n) => {
                            store.vault().put_message(bob, message(u64::from(n), me, bob, i64::from(n % 5))).await.unwrap();
                        }
                        Op::Status(n, s) => {
                            store.vault().set_message_status(bob, id(u64::from(n)), statuses[usize::from(s)]).await.unwrap();
                        }
                    }
                }
            }
            let (to_b, _) = a.vault().export_since(VaultVersion::empty(), usize::MAX).await.unwrap();
            let (to_a, _) = b.vault().export_since(VaultVersion::empty(), usize::MAX).await.unwrap();
            if a_first {
                b.vault().import(to_b).await.unwrap();
                a.vault().import(to_a).await.unwrap();
            } else {
                a.vault().import(to_a).await.unwrap();
                b.vault().import(to_b).await.unwrap();
            }
            let on_a = walk_back(&a, bob, 7, async |_| {}).await;
            let on_b = walk_back(&b, bob, 7, async |_| {}).await;
            assert_eq!(on_a, on_b);
            assert_eq!(a.vault().to_json().await.unwrap(), b.vault().to_json().await.unwrap());
            a.close().await;
            b.close().await;
        });
    }
}

/// Whether `needle` is stored in `dir`: anywhere in the files' bytes, or in the history of
/// any vault document (document snapshots are compressed, so their bytes alone do not tell).
async fn on_disk(dir: &Path, needle: &str) -> bool {
    let in_files = std::fs::read_dir(dir).unwrap().any(|e| {
        let bytes = std::fs::read(e.unwrap().path()).unwrap_or_default();
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    });
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", dir.join("volli.db").display()))
        .await
        .unwrap();
    let docs: Vec<(String, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT id, snapshot FROM vault_docs")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut in_history = false;
    for (name, snapshot) in docs {
        let doc = loro::LoroDoc::new();
        if let Some(snapshot) = snapshot {
            doc.import(&snapshot).unwrap();
        }
        let log: Vec<(Vec<u8>,)> =
            sqlx::query_as("SELECT bytes FROM vault_log WHERE doc = ? ORDER BY seq")
                .bind(&name)
                .fetch_all(&pool)
                .await
                .unwrap();
        for (bytes,) in log {
            doc.import(&bytes).unwrap();
        }
        let start = doc.shallow_since_vv().to_vv();
        let history = doc.export_json_updates(&start, &doc.oplog_vv()).unwrap();
        let state = doc.get_deep_value();
        let text = format!("{} {state:?}", serde_json::to_string(&history).unwrap());
        in_history |= text.contains(needle);
    }
    pool.close().await;
    in_files || in_history
}

#[tokio::test]
async fn deleted_messages_leave_every_device_stay_deleted_and_leave_the_disk() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let options = VaultOptions {
        chunk_messages: 50,
        ..VaultOptions::default()
    };
    let a = open(a_dir.path(), options.clone()).await;
    let b = open(b_dir.path(), options.clone()).await;
    let (me, bob) = (user(1), user(2));
    let mut ms: Vec<_> = (0..120u64)
        .map(|n| (bob, message(n, me, bob, n as i64)))
        .collect();
    // Long enough to take overflow pages of its own, which become free pages when deleted.
    ms[7].1.body = "a secret the user deleted. ".repeat(400);
    a.vault().put_messages(ms.clone()).await.unwrap();
    let sync = async |from: &Store, to: &Store| {
        let (delta, _) = from
            .vault()
            .export_since(to.vault().version().await.unwrap(), usize::MAX)
            .await
            .unwrap();
        let imported = to.vault().import(delta).await.unwrap();
        let version = to.vault().version().await.unwrap();
        from.vault().acknowledge("other", &version).await.unwrap();
        imported
    };
    sync(&a, &b).await;
    sync(&b, &a).await;
    assert_eq!(walk_back(&b, bob, 500, async |_| {}).await.len(), 120);

    // Delete two on A; the second call for the same message deletes nothing more.
    let gone = vec![id(7), id(100)];
    assert_eq!(
        a.vault().delete_messages(bob, gone.clone()).await.unwrap(),
        2
    );
    assert_eq!(
        a.vault().delete_messages(bob, gone.clone()).await.unwrap(),
        0
    );
    assert_eq!(a.vault().conversation_of(id(7)).await.unwrap(), None);
    assert_eq!(a.vault().conversation_of(id(8)).await.unwrap(), Some(bob));
    // A receipt after the deletion changes nothing; the same message arriving again
    // (a retry, a relay) is known and stays deleted.
    assert!(
        !a.vault()
            .set_message_status(bob, id(7), MessageStatus::Delivered)
            .await
            .unwrap()
    );
    assert!(!a.vault().put_message(bob, ms[7].1.clone()).await.unwrap());
    let left: Vec<_> = walk_back(&a, bob, 500, async |_| {}).await;
    assert_eq!(left.len(), 118);
    assert!(left.iter().all(|m| !gone.contains(&m.id)));

    // B follows through sync (each side acknowledges what the other holds), and hears
    // which of its messages went.
    let mut deleted = sync(&a, &b).await.deleted;
    deleted.sort();
    assert_eq!(deleted, vec![(bob, id(7)), (bob, id(100))]);
    assert!(sync(&b, &a).await.deleted.is_empty());
    let on_b = walk_back(&b, bob, 500, async |_| {}).await;
    assert_eq!(on_b, left);

    // The text is gone from both devices' files once the history is erased (which the
    // acknowledgements above let happen; closing waits for it).
    a.close().await;
    b.close().await;
    for dir in [a_dir.path(), b_dir.path()] {
        assert!(
            !on_disk(dir, "a secret the user deleted").await,
            "{}",
            dir.display()
        );
        assert!(
            on_disk(dir, "message 8").await,
            "the others are still there"
        );
    }
    // Reopened: still deleted, and a chunk stored without its history still syncs whole
    // to a device that never had it.
    let a = open(a_dir.path(), options.clone()).await;
    assert_eq!(walk_back(&a, bob, 500, async |_| {}).await, left);
    let c_dir = tempfile::tempdir().unwrap();
    let c = open(c_dir.path(), options).await;
    sync(&a, &c).await;
    assert_eq!(walk_back(&c, bob, 500, async |_| {}).await, left);
    a.close().await;
    c.close().await;
}

/// The chat list: each conversation with messages once, with its newest message and what
/// this user has not read (received after their read mark), as each shows alone; one whose
/// messages were all deleted on this device is not listed.
#[tokio::test]
async fn the_chat_list_has_each_conversation_with_its_newest_message_and_unread() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), VaultOptions::default()).await;
    let (me, bob, carol, dave) = (user(1), user(2), user(3), user(4));
    let received = |n: u64, from: UserId, at: i64| {
        let mut m = message(n, from, me, at);
        m.status = MessageStatus::Received;
        m
    };
    let vault = store.vault();
    // Bob: three received, the second read (the mark), then one of mine.
    vault
        .put_message(bob, received(1, bob, 1_000))
        .await
        .unwrap();
    let mut read = received(2, bob, 2_000);
    read.extra.read_by.insert(me);
    vault.put_message(bob, read).await.unwrap();
    vault
        .put_message(bob, received(3, bob, 3_000))
        .await
        .unwrap();
    vault
        .put_message(bob, message(4, me, bob, 4_000))
        .await
        .unwrap();
    // Carol: two received, none read.
    for (n, at) in [(10, 500), (11, 600)] {
        vault
            .put_message(carol, received(n, carol, at))
            .await
            .unwrap();
    }
    // Dave: one message, deleted on this device.
    vault
        .put_message(dave, received(20, dave, 700))
        .await
        .unwrap();
    vault.delete_messages(dave, vec![id(20)]).await.unwrap();

    let list = vault.summaries(me).await.unwrap();
    let mut got: Vec<(UserId, Option<MessageId>, u64)> = list
        .iter()
        .map(|s| (s.conversation, s.last.as_ref().map(|m| m.id), s.unread))
        .collect();
    got.sort();
    let mut want = vec![(bob, Some(id(4)), 1), (carol, Some(id(11)), 2)];
    want.sort();
    assert_eq!(got, want);
    for s in &list {
        let alone = vault.summary(s.conversation, me).await.unwrap();
        assert_eq!(
            (alone.last.map(|m| m.id), alone.unread, alone.timer),
            (s.last.as_ref().map(|m| m.id), s.unread, s.timer)
        );
    }
}

/// A chat list longer than one read lists every conversation once.
#[tokio::test]
async fn a_long_chat_list_lists_every_conversation_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), VaultOptions::default()).await;
    let me = user(1);
    let others: Vec<UserId> = (10..80u8).map(user).collect();
    let all: Vec<(UserId, StoredMessage)> = others
        .iter()
        .enumerate()
        .map(|(i, with)| (*with, message(i as u64, me, *with, 1_000 + i as i64)))
        .collect();
    store.vault().put_messages(all).await.unwrap();
    let mut listed: Vec<UserId> = store
        .vault()
        .summaries(me)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.conversation)
        .collect();
    listed.sort();
    let mut want = others.clone();
    want.sort();
    assert_eq!(listed, want);
}
