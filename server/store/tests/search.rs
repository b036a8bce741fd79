//! The search index against real SQLite files: kept in step with every write, delete,
//! compaction, retention and import from another device, through a backup copy, and built in
//! the background for a vault that had messages before it; case, diacritics and prefixes
//! folded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use volli_core::{MessageId, Timestamp, UserId, UserSecret};
use volli_store::search::{Query, Search, SearchError};
use volli_store::vault::{Change, MessageStatus, StoredMessage};
use volli_store::{Db, Store, VaultOptions};

fn user(n: u8) -> UserId {
    UserSecret::from_master([n; 32]).user_id()
}

fn id(n: u64) -> MessageId {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&n.to_be_bytes());
    bytes[8..].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    MessageId::from_bytes(bytes)
}

fn message(n: u64, from: UserId, to: UserId, body: &str) -> StoredMessage {
    StoredMessage {
        id: id(n),
        from,
        to,
        body: body.to_owned(),
        sent_at: Timestamp::from_millis(1_800_000_000_000 + n as i64 * 1000),
        status: MessageStatus::Queued,
        extra: volli_store::vault::Extra::default(),
    }
}

async fn find(db: &Db, text: &str, conversation: Option<UserId>) -> Vec<MessageId> {
    found(db, text, conversation, None, 100).await
}

async fn found(
    db: &Db,
    text: &str,
    conversation: Option<UserId>,
    before: Option<MessageId>,
    limit: u32,
) -> Vec<MessageId> {
    db.search(&Search {
        query: Query::parse(text).unwrap(),
        conversation,
        before,
        limit,
    })
    .await
    .unwrap()
    .hits
    .into_iter()
    .map(|h| h.message.id)
    .collect()
}

/// The store's database file, opened beside (or after) the store.
async fn raw(dir: &Path) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.join("volli.db").display()))
        .await
        .unwrap()
}

async fn open(dir: &Path) -> Store {
    Store::open(dir, VaultOptions::default()).await.unwrap()
}

#[tokio::test]
async fn finds_words_folded_newest_first_and_forgets_deleted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (me, bob, carol) = (user(1), user(2), user(3));
    let vault = store.vault();
    vault
        .put_messages(vec![
            (bob, message(1, me, bob, "Meet at the Café at noon")),
            (bob, message(2, bob, me, "CAFÉ au lait, s'il vous plaît")),
            (carol, message(3, me, carol, "the cafeteria is closed")),
            (carol, message(4, carol, me, "Ünïcödé façade naïve résumé")),
            (bob, message(5, me, bob, "nothing to see here")),
        ])
        .await
        .unwrap();
    let db = store.db();
    // Case and diacritics folded both ways, each word a prefix, newest first.
    assert_eq!(find(db, "cafe", None).await, [id(3), id(2), id(1)]);
    assert_eq!(find(db, "CAFÉ", None).await, [id(3), id(2), id(1)]);
    assert_eq!(find(db, "caf", None).await, [id(3), id(2), id(1)]);
    assert_eq!(find(db, "cafe noon", None).await, [id(1)]);
    assert_eq!(find(db, "unicode facade naive resume", None).await, [id(4)]);
    assert_eq!(find(db, "RÉSU", None).await, [id(4)]);
    // Words are words: FTS5 syntax in the text is not syntax.
    assert!(find(db, "cafe OR nothing", None).await.is_empty());
    assert_eq!(find(db, "\"noon\" *", None).await, [id(1)]);
    assert_eq!(find(db, "s'il", None).await, [id(2)]);
    // One conversation; paging with a cursor.
    assert_eq!(find(db, "cafe", Some(bob)).await, [id(2), id(1)]);
    assert_eq!(found(db, "cafe", None, None, 2).await, [id(3), id(2)]);
    assert_eq!(found(db, "cafe", None, Some(id(2)), 2).await, [id(1)]);
    let unknown = db
        .search(&Search {
            query: Query::parse("cafe").unwrap(),
            conversation: None,
            before: Some(id(99)),
            limit: 10,
        })
        .await;
    assert!(matches!(unknown, Err(SearchError::UnknownCursor)));

    // A delete (and a retention rule, which deletes the same way) takes the text out.
    assert_eq!(vault.delete_messages(bob, vec![id(2)]).await.unwrap(), 1);
    assert_eq!(find(db, "cafe", None).await, [id(3), id(1)]);
    assert!(find(db, "lait", None).await.is_empty());
    let expired = vault
        .expired_messages(
            carol,
            Some(Timestamp::from_millis(1_800_000_003_500)),
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(expired, [id(3)]);
    vault.delete_messages(carol, expired).await.unwrap();
    assert_eq!(find(db, "cafe", None).await, [id(1)]);
    // A status change leaves the text where it is; a copy of a deleted message that arrives
    // again stays out.
    vault
        .set_message_status(bob, id(1), MessageStatus::Delivered)
        .await
        .unwrap();
    vault
        .put_message(bob, message(2, bob, me, "CAFÉ au lait, s'il vous plaît"))
        .await
        .unwrap();
    assert_eq!(find(db, "cafe", None).await, [id(1)]);
    // Compaction (deleted text leaves the stored history) changes nothing here.
    vault.compact().await.unwrap();
    assert_eq!(find(db, "cafe", None).await, [id(1)]);
    assert_eq!(find(db, "facade", None).await, [id(4)]);
    let progress = db.search_progress().await.unwrap();
    assert!(progress.ready(), "{progress:?}");
    store.close().await;
}

/// A word typed is looked for as the terms of the index it starts, spelled out when they are
/// few: the same rows are found as by the prefix itself, for a prefix of many terms, of
/// terms beyond the Basic Multilingual Plane, of terms whose rows are gone, and of a word FTS5
/// cut at 32 KiB inside a character (a contact may send one: it must not fail the search).
#[tokio::test]
async fn a_prefix_finds_every_term_it_starts_however_many() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (me, bob) = (user(1), user(2));
    let vault = store.vault();
    let mut rows: Vec<(UserId, StoredMessage)> = (0..40u64)
        .map(|n| (bob, message(n + 1, me, bob, &format!("many{n:02} things"))))
        .collect();
    rows.push((bob, message(41, bob, me, "ca\u{20000}x alone")));
    rows.push((bob, message(42, bob, me, "gone cafe")));
    // A word FTS5 cuts at 32 KiB inside a character, and a long one.
    let cut = format!("password{}ж", "0".repeat(32_760));
    rows.push((bob, message(43, bob, me, &cut)));
    rows.push((
        bob,
        message(44, bob, me, &format!("pass{} more", "x".repeat(100))),
    ));
    vault.put_messages(rows).await.unwrap();
    let db = store.db();
    assert_eq!(find(db, "many", None).await.len(), 40);
    assert_eq!(find(db, "many3", None).await.len(), 10);
    assert_eq!(find(db, "many39 thi", None).await, [id(40)]);
    assert_eq!(find(db, "ca", None).await, [id(42), id(41)]);
    assert_eq!(find(db, "ca\u{20000}", None).await, [id(41)]);
    vault.delete_messages(bob, vec![id(42)]).await.unwrap();
    assert_eq!(find(db, "ca", None).await, [id(41)]);
    assert!(find(db, "gone", None).await.is_empty());
    assert!(find(db, "nowhere", None).await.is_empty());
    assert_eq!(find(db, "passw", None).await, [id(43)]);
    assert_eq!(find(db, "pass", None).await, [id(44), id(43)]);
    assert_eq!(find(db, "passxx more", None).await, [id(44)]);
    // A term with the last character of all (which the tokenizer keeps) after the word.
    vault
        .put_message(bob, message(45, bob, me, "ca\u{10FFFF}z last"))
        .await
        .unwrap();
    assert_eq!(find(db, "ca", None).await, [id(45), id(41)]);
    // A term only a message still waiting to be indexed has: the word is spelled out after
    // the flush.
    vault
        .put_message(bob, message(46, bob, me, "zebra crossing"))
        .await
        .unwrap();
    assert_eq!(find(db, "zebra", None).await, [id(46)]);
    vault
        .put_message(bob, message(47, bob, me, "zebrafinch"))
        .await
        .unwrap();
    assert_eq!(find(db, "zebra", None).await, [id(47), id(46)]);
    store.close().await;
}

#[tokio::test]
async fn stays_in_step_with_another_devices_changes_and_a_backup_copy() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir.path().join("a")).await;
    let b = open(&dir.path().join("b")).await;
    let (me, bob) = (user(1), user(2));
    a.vault()
        .put_messages(
            (0..50)
                .map(|n| (bob, message(n, me, bob, &format!("räksmörgås number {n}"))))
                .collect(),
        )
        .await
        .unwrap();
    // As devices sync: export what the other lacks, import, acknowledge.
    let sync = async |from: &Store, to: &Store| {
        let (delta, _) = from
            .vault()
            .export_since(to.vault().version().await.unwrap(), usize::MAX)
            .await
            .unwrap();
        to.vault().import(delta).await.unwrap();
        let version = to.vault().version().await.unwrap();
        from.vault().acknowledge("other", &version).await.unwrap();
    };
    sync(&a, &b).await;
    sync(&b, &a).await;
    assert_eq!(find(b.db(), "raksmorgas", None).await.len(), 50);
    assert_eq!(find(b.db(), "number 7", None).await, [id(7)]);
    // A deletes; B takes the deletion in.
    a.vault()
        .delete_messages(bob, (0..10).map(id).collect())
        .await
        .unwrap();
    sync(&a, &b).await;
    assert_eq!(find(b.db(), "raksmorgas", None).await.len(), 40);
    assert!(find(b.db(), "number 7", None).await.is_empty());

    // A backup copy (VACUUM INTO) keeps the index and the row ids it refers to: a delete in
    // the restored copy still takes the text out.
    let copy = dir.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    Db::snapshot(&dir.path().join("b/volli.db"), &copy.join("volli.db"))
        .await
        .unwrap();
    let restored = open(&copy).await;
    assert_eq!(find(restored.db(), "raksmorgas", None).await.len(), 40);
    restored
        .vault()
        .delete_messages(bob, vec![id(20)])
        .await
        .unwrap();
    assert!(find(restored.db(), "number 20", None).await.is_empty());
    assert_eq!(find(restored.db(), "raksmorgas", None).await.len(), 39);
    for s in [a, b, restored] {
        s.close().await;
    }
}

/// New rows wait in a queue and are indexed together, in their state then: a message
/// deleted before it was indexed never reaches the index; a search indexes what waits first.
#[tokio::test]
async fn new_messages_are_indexed_together_in_their_state_at_that_time() {
    let dir = tempfile::tempdir().unwrap();
    let (me, bob) = (user(1), user(2));
    let store = open(dir.path()).await;
    let db = store.db();
    store
        .vault()
        .put_messages(
            [(1, "alpha one"), (2, "alpha twofold"), (3, "alpha three")]
                .into_iter()
                .map(|(n, text)| (bob, message(n, me, bob, text)))
                .collect(),
        )
        .await
        .unwrap();
    store
        .vault()
        .delete_messages(bob, vec![id(2)])
        .await
        .unwrap();
    assert_eq!(db.search_flush().await.unwrap(), 3);
    assert_eq!(db.search_flush().await.unwrap(), 0);
    assert_eq!(find(db, "alpha", None).await, [id(3), id(1)]);
    // Stored after the last flush: the search takes it in before it reads.
    store
        .vault()
        .put_message(bob, message(4, me, bob, "alpha four"))
        .await
        .unwrap();
    assert_eq!(find(db, "alpha", None).await, [id(4), id(3), id(1)]);
    assert_eq!(db.search_flush().await.unwrap(), 0);
    store.close().await;
    // The deleted text's word is nowhere in the index.
    let pool = raw(dir.path()).await;
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM search WHERE search MATCH 'twofold'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let (days,): (i64,) = sqlx::query_as("SELECT SUM(rows) FROM search_days")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(days, 3);
    pool.close().await;
}

/// A row leaving `messages` while it waits in the queue leaves the queue only: the index and
/// its day counts stay as the indexed rows have them.
#[tokio::test]
async fn a_queued_row_deleted_leaves_the_day_counts_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (me, bob) = (user(1), user(2));
    let store = open(dir.path()).await;
    let put = |n: u64| {
        store
            .vault()
            .put_message(bob, message(n, me, bob, &format!("gamma {n}")))
    };
    put(1).await.unwrap();
    put(2).await.unwrap();
    assert_eq!(store.db().search_flush().await.unwrap(), 2);
    put(3).await.unwrap();
    store.close().await;
    let pool = raw(dir.path()).await;
    sqlx::query("DELETE FROM messages WHERE id = ?")
        .bind(id(3).as_bytes().to_vec())
        .execute(&pool)
        .await
        .unwrap();
    let (days, queued): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT SUM(rows) FROM search_days), (SELECT COUNT(*) FROM search_queue)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((days, queued), (2, 0));
    sqlx::query("DELETE FROM messages WHERE id = ?")
        .bind(id(1).as_bytes().to_vec())
        .execute(&pool)
        .await
        .unwrap();
    let (days, indexed): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT SUM(rows) FROM search_days), \
         (SELECT COUNT(*) FROM search WHERE search MATCH 'gamma')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((days, indexed), (1, 1));
    pool.close().await;
}

#[tokio::test]
async fn builds_the_index_of_an_older_vault_in_batches_while_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (me, bob) = (user(1), user(2));
    let store = open(dir.path()).await;
    store
        .vault()
        .put_messages(
            (0..100)
                .map(|n| (bob, message(n, me, bob, &format!("olden message {n}"))))
                .collect(),
        )
        .await
        .unwrap();
    store.close().await;
    // A vault of an earlier release: messages, no index. (The migration sets the same state
    // when it meets existing messages.)
    let pool = raw(dir.path()).await;
    sqlx::query("INSERT INTO search (search) VALUES ('delete-all')")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM search_days")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM search_queue")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE search_state SET done = 0, ceiling = (SELECT MAX(rowid) FROM messages)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let store = open(dir.path()).await;
    let db = store.db();
    let progress = db.search_progress().await.unwrap();
    assert_eq!((progress.indexed, progress.total), (0, 100));
    assert!(find(db, "olden", None).await.is_empty());
    // Half built: what is indexed is found.
    assert_eq!(db.search_build(50).await.unwrap(), 50);
    let built = find(db, "olden", None).await;
    assert_eq!(built.len(), 50);
    // Changes meanwhile, to a row built and one not yet built, and a new row.
    let waiting = (0..100).map(id).find(|m| !built.contains(m)).unwrap();
    store
        .vault()
        .delete_messages(bob, vec![built[0], waiting])
        .await
        .unwrap();
    store
        .vault()
        .put_message(bob, message(200, me, bob, "olden but new"))
        .await
        .unwrap();
    let now = find(db, "olden", None).await;
    assert_eq!(now.len(), 50);
    assert!(now.contains(&id(200)) && !now.contains(&built[0]));
    while db.search_build(7).await.unwrap() > 0 {}
    let progress = db.search_progress().await.unwrap();
    assert!(progress.ready(), "{progress:?}");
    let all = find(db, "olden", None).await;
    assert_eq!(all.len(), 99);
    assert!(!all.contains(&built[0]) && !all.contains(&waiting));
    assert_eq!(find(db, "olden new", None).await, [id(200)]);
    let (index, text) = db.search_size().await.unwrap();
    assert!(index > 0 && text > 0);
    store.close().await;
}

/// A word in more messages than are read at once is read a day at a time: pages in exactly
/// the order of a full sort, for every conversation and for one, however the messages
/// arrived.
#[tokio::test]
async fn many_matches_come_a_day_at_a_time_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (me, bob, carol) = (user(1), user(2), user(3));
    // 2,400 messages over 40 days, stored in an order unrelated to their times; some share
    // a time.
    let mut all: Vec<(UserId, StoredMessage)> = (0..2_400u64)
        .map(|n| {
            let with = if n % 3 == 0 { carol } else { bob };
            let mut m = message(n, me, with, &format!("common word, number {n}"));
            let scrambled = (n * 7_919) % 2_400;
            m.sent_at =
                Timestamp::from_millis(1_700_000_000_000 + (scrambled as i64 / 2) * 1_440_000);
            (with, m)
        })
        .collect();
    all.reverse();
    for part in all.chunks(500) {
        store.vault().put_messages(part.to_vec()).await.unwrap();
    }
    let db = store.db();
    for conversation in [None, Some(bob), Some(carol)] {
        let mut expected: Vec<&StoredMessage> = all
            .iter()
            .filter(|(with, _)| conversation.is_none_or(|c| c == *with))
            .map(|(_, m)| m)
            .collect();
        expected.sort_by_key(|m| std::cmp::Reverse((m.sent_at, *m.id.as_bytes())));
        let expected: Vec<MessageId> = expected.iter().map(|m| m.id).collect();
        let mut got = Vec::new();
        let mut before = None;
        loop {
            let page = found(db, "common", conversation, before, 97).await;
            if page.is_empty() {
                break;
            }
            before = page.last().copied();
            got.extend(page);
        }
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "pages out of order for {conversation:?}");
    }
    store.close().await;
}

/// `harvest` messages with the word "harvest", 20 a day (message `n` is the `n`th), and then,
/// from the 100th day on, `weather` days of other text, one message a day.
async fn harvest_then_weather(store: &Store, harvest: u64, weather: u64) {
    let (me, bob) = (user(1), user(2));
    let day = 86_400_000i64;
    let start = 1_500_000_000_000i64;
    let mut all: Vec<(UserId, StoredMessage)> = (0..harvest)
        .map(|n| {
            let mut m = message(n, me, bob, &format!("rare harvest {n}"));
            m.sent_at = Timestamp::from_millis(start + (n as i64 / 20) * day + n as i64);
            (bob, m)
        })
        .collect();
    all.extend((0..weather).map(|n| {
        let mut m = message(10_000 + n, me, bob, "weather report");
        m.sent_at = Timestamp::from_millis(start + (100 + n as i64) * day);
        (bob, m)
    }));
    for part in all.chunks(500) {
        store.vault().put_messages(part.to_vec()).await.unwrap();
    }
}

/// A frequent word whose matches are all older than the newest few hundred days (which hold
/// other text only) is still found whole: the days are fetched a few hundred at a time.
#[tokio::test]
async fn matches_older_than_the_days_fetched_at_once_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    // 1,200 matches on 60 days, then 400 days of other text, one message a day.
    harvest_then_weather(&store, 1_200, 400).await;
    let db = store.db();
    let page = found(db, "harvest", None, None, 30).await;
    let newest: Vec<MessageId> = (1_170..1_200u64).rev().map(id).collect();
    assert_eq!(page, newest);
    store.close().await;
}

/// Matches older than thousands of days of other text (a contact sets its messages' times):
/// after a few reads of a few days each, the rest of the page is read from every older match
/// at once, in the same order.
#[tokio::test]
async fn matches_behind_thousands_of_days_are_read_at_once_after_a_few_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    // 300 matches on 15 days, then 3,000 days of other text, one message a day.
    harvest_then_weather(&store, 300, 3_000).await;
    let db = store.db();
    let mut got = Vec::new();
    let mut before = None;
    loop {
        let page = found(db, "harvest", None, before, 40).await;
        if page.is_empty() {
            break;
        }
        before = page.last().copied();
        got.extend(page);
    }
    let newest: Vec<MessageId> = (0..300u64).rev().map(id).collect();
    assert_eq!(got, newest);
    store.close().await;
}

/// The words a prefix is spelled out as come from the text as the tokenizer splits it, an
/// edit's included, and those of deleted text leave the word list once the index is merged.
#[tokio::test]
async fn edited_words_are_found_by_prefix_and_deleted_ones_leave_the_word_list() {
    let dir = tempfile::tempdir().unwrap();
    let (me, bob) = (user(1), user(2));
    let store = open(dir.path()).await;
    let vault = store.vault();
    let db = store.db();
    vault
        .put_message(bob, message(1, me, bob, "the cafeteria is closed"))
        .await
        .unwrap();
    vault
        .put_message(bob, message(2, me, bob, "nothing here"))
        .await
        .unwrap();
    assert_eq!(db.search_flush().await.unwrap(), 2);
    // Edited once indexed: the trigger indexes the new text, and its words.
    assert!(
        vault
            .change_message(
                bob,
                id(2),
                Change::Edit {
                    body: "Café zébrine, closed".into(),
                    at: Timestamp::from_millis(1_800_000_100_000),
                },
            )
            .await
            .unwrap()
    );
    assert_eq!(find(db, "caf", None).await, [id(2), id(1)]);
    assert_eq!(find(db, "zeb", None).await, [id(2)]);
    let path = dir.path().to_path_buf();
    let words = |term: &'static str| {
        let path = path.clone();
        async move {
            let pool = raw(&path).await;
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM search_words WHERE term = ?")
                .bind(term)
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            n
        }
    };
    assert_eq!(words("zebrine").await, 1);
    vault.delete_messages(bob, vec![id(2)]).await.unwrap();
    assert!(find(db, "zeb", None).await.is_empty());
    db.drop_free_pages().await.unwrap();
    assert_eq!(words("zebrine").await, 0);
    assert_eq!(words("cafeteria").await, 1);
    assert_eq!(find(db, "caf", None).await, [id(1)]);
    store.close().await;
}
