//! The SQLite pool: WAL, `synchronous=FULL`, foreign keys, a busy timeout, migrations.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};

use crate::StoreError;

/// How much of the database file each reader maps (`PRAGMA mmap_size`; a file is mapped
/// as large as it is, up to this): less on a 32-bit system, whose address space eight readers
/// (the pool's and the direct ones) share with everything else. The file must not be cut short by another program while the
/// node runs (a mapping of it would end the process): a backup copies it through SQLite
/// (`VACUUM INTO`), and a restore writes a new data directory.
#[cfg(target_pointer_width = "64")]
pub const MMAP_SIZE: &str = "1073741824";
/// How much of the database file each reader maps (see the 64-bit one).
#[cfg(not(target_pointer_width = "64"))]
pub const MMAP_SIZE: &str = "67108864";

/// A handle to the node's database. Cheap to clone.
///
/// Two pools on the same file: readers, and a single writer connection. SQLite admits one
/// writer at a time; two connections that both want to write find out through
/// `SQLITE_BUSY` and the busy handler, which sleeps for milliseconds at a time. With every
/// write on one connection, writers queue in order instead (the vault actor's and the
/// outbox's group commits follow each other back to back), while reads go on beside them.
#[derive(Clone, Debug)]
pub struct Db {
    pool: SqlitePool,
    writer: SqlitePool,
    direct: Direct,
}

/// Readers called directly on a blocking thread, for a read of several statements in a row
/// (a search): through the pool, each statement is a round trip to its connection's own
/// thread, which cost more than a search's statements themselves (ADR 0023). At most
/// [`DIRECT_READERS`] reads run at once (the others wait, as for the pool's readers), each
/// on a connection opened the first time it was needed and kept.
#[derive(Clone)]
pub(crate) struct Direct {
    path: PathBuf,
    idle: Arc<Mutex<Vec<rusqlite::Connection>>>,
    /// One per read running; closed by [`Db::close`].
    permits: Arc<tokio::sync::Semaphore>,
}

/// Direct reads at once, and connections (as many as the pool's readers).
const DIRECT_READERS: usize = 4;

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct").field("path", &self.path).finish()
    }
}

impl Direct {
    fn idle(&self) -> MutexGuard<'_, Vec<rusqlite::Connection>> {
        // A read that panicked left the list as it was: still a list of connections.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A reader as the pool's are (mapped pages, sorts in memory, the same busy timeout),
    /// and one that cannot write, nor checkpoint the log when it closes last.
    fn open(&self) -> Result<rusqlite::Connection, rusqlite::Error> {
        use rusqlite::OpenFlags;
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "query_only", true)?;
        conn.pragma_update(None, "mmap_size", MMAP_SIZE)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    /// Runs `read` on a reader, on a blocking thread, once fewer than [`DIRECT_READERS`]
    /// reads run; [`StoreError::Closed`] once the database is closed.
    pub(crate) async fn run<T, E>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let _running = permit;
            let taken = this.idle().pop();
            let conn = match taken {
                Some(conn) => conn,
                None => this.open().map_err(StoreError::from)?,
            };
            let out = read(&conn);
            // A read left open (a rollback that failed) would pin its snapshot for the
            // next read on this connection: such a connection is closed instead.
            if conn.is_autocommit() {
                this.idle().push(conn);
            }
            out
        })
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
    }

    /// Waits for the reads running, then closes the connections; later reads fail.
    async fn close(&self) {
        let all = u32::try_from(DIRECT_READERS).unwrap_or(u32::MAX);
        if let Ok(running) = self.permits.acquire_many(all).await {
            running.forget();
        }
        self.permits.close();
        self.idle().clear();
    }
}

/// Checkpoints the write-ahead log and empties it (`wal_checkpoint(TRUNCATE)`) on `writer`,
/// so it holds no copy of erased pages. A reader's open snapshot makes SQLite give up after
/// the busy timeout, without an error: said in the log then (the pages leave with a later
/// checkpoint), and false.
pub(crate) async fn empty_log(writer: &mut sqlx::SqliteConnection) -> Result<bool, StoreError> {
    let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&mut *writer)
        .await?;
    if busy != 0 {
        tracing::warn!(
            "the write-ahead log could not be emptied (a reader held it); erased pages stay in \
             it until a later checkpoint"
        );
    }
    Ok(busy == 0)
}

impl Db {
    /// Opens or creates the database file and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is durable once it returns, so "saved" means saved.
            .synchronous(SqliteSynchronous::Full)
            // Deleted rows are zeroed in the pages written anyway (no extra I/O); with
            // `reclaim` giving free pages back, deleted messages' text leaves the file.
            .pragma("secure_delete", "FAST")
            // Sorts and temporary b-trees in memory: with the default, SQLite made (and
            // unlinked) a temporary file for them, several per delivered message.
            .pragma("temp_store", "MEMORY")
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        // Only the writer sets `auto_vacuum`: setting it writes the database header in a
        // write transaction of its own, so a reader connection opening (the pool opens them
        // on demand) would commit under the writer and fail the writer's open transaction
        // with "database is locked". Pages freed by deletions can be given back to the file
        // system ([`Db::reclaim`]); this takes effect on a new database, an older one
        // switches at its first full `VACUUM`.
        // Every write goes through the writer, which zeroes what it deletes whatever that
        // costs (`ON`, not `FAST`): freed overflow pages held forgotten message keys (each
        // message rewrites its conversation's key store), and `FAST` leaves freed pages as
        // they were.
        // No ping before each statement (sqlx's default): a connection here is a thread
        // in this process with the file open, not a link that can go down, and the ping
        // was a round trip to that thread as long as the statement's own.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .connect_with(
                options
                    .clone()
                    .auto_vacuum(SqliteAutoVacuum::Incremental)
                    .pragma("secure_delete", "ON"),
            )
            .await?;
        sqlx::migrate!("./migrations").run(&writer).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .test_before_acquire(false)
            .connect_with(
                options
                    // Pages read in place from the file's mapping instead of copied in by a
                    // system call each (they were 14 % of a search's time); the writer
                    // writes as before. An upper bound: a file is mapped as large as it is.
                    .pragma("mmap_size", MMAP_SIZE)
                    // Every statement of the node's reads stays prepared on each connection
                    // (sqlx's default keeps the last 100 used).
                    .statement_cache_capacity(400),
            )
            .await?;
        let direct = Direct {
            path: path.to_owned(),
            idle: Arc::default(),
            permits: Arc::new(tokio::sync::Semaphore::new(DIRECT_READERS)),
        };
        Ok(Self {
            pool,
            writer,
            direct,
        })
    }

    /// Writes a consistent copy of the database at `path` to `dest` (`VACUUM INTO`), while
    /// a node may be writing to it: the copy is one read transaction's view, so it holds
    /// every commit up to a point and none after. `dest` must not exist.
    ///
    /// The copy leaves out this device's MLS state (zeroed, not just unlinked): a copy of it
    /// would open traffic its conversations have since forgotten, and a device restored
    /// from it would encrypt under ratchet positions it had already used. A restored device
    /// asks to be added to its conversations again instead. It leaves out the client tokens
    /// and push subscriptions too: after a restore, clients log in again.
    pub async fn snapshot(path: &Path, dest: &Path) -> Result<(), StoreError> {
        if !path.is_file() {
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no database at {}", path.display()),
            )));
        }
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        let dest = dest.to_str().ok_or_else(|| {
            StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the snapshot's path is not UTF-8",
            ))
        })?;
        let done = sqlx::query("VACUUM INTO ?").bind(dest).execute(&pool).await;
        pool.close().await;
        done?;
        let copy = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::from_str("sqlite:")?
                    .filename(dest)
                    .create_if_missing(false)
                    .pragma("secure_delete", "ON"),
            )
            .await?;
        let mut stripped = Ok(());
        // Nor client tokens and their push subscriptions: a restore must not bring back a
        // token revoked since the backup (it would work again, and push to the thief).
        for table in [
            "mls_state",
            "mls_pending",
            "mls_commits",
            "mls_revocations",
            "push_subscriptions",
            "clients",
        ] {
            if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                .execute(&copy)
                .await
            {
                stripped = Err(e);
                break;
            }
        }
        copy.close().await;
        stripped?;
        Ok(())
    }

    /// The readers.
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The readers called directly.
    pub(crate) fn direct(&self) -> &Direct {
        &self.direct
    }

    /// The one connection every write goes through.
    pub(crate) fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// Makes this database `user`'s. A database that held another user's data (the node
    /// just joined `user` as a new device) is emptied of it first — vault, outbox, invites,
    /// relay mailbox — in one transaction; plugins and their storage stay. Returns whether
    /// anything was emptied. Run before the vault is opened.
    pub async fn claim_for(&self, user: &str) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        let owner: Option<(String,)> =
            sqlx::query_as("SELECT user_id FROM node_owner WHERE id = 1")
                .fetch_optional(&mut *tx)
                .await?;
        let reset = matches!(&owner, Some((o,)) if o != user);
        if reset {
            for table in [
                "vault_docs",
                "vault_log",
                "messages",
                "vault_acks",
                "invite_redemptions",
                "invites",
                "pending_contacts",
                "outbox",
                "relay_held",
                "relays_designated",
                "relay_receipts",
                "removed_contacts",
                "transfer_chunks",
                "transfers",
                // A client of the old user must not read the new one's data.
                "clients",
                "push_subscriptions",
                // Conversations belong to the old identity's certificate.
                "mls_state",
                "mls_key_packages",
                "mls_pending",
                "mls_commits",
                // Pictures of the old user and its contacts.
                "avatars",
                // What was held for the old user's contacts, and its own backup's state.
                "backup_held",
                "backup_state",
            ] {
                // The names are the constants above.
                sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query(
            "INSERT INTO node_owner (id, user_id) VALUES (1, ?) \
             ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id",
        )
        .bind(user)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(reset)
    }

    /// Whether the user's data holds contacts or messages (a node that does cannot join
    /// another user: its own identity would be lost).
    pub async fn holds_user_data(&self) -> Result<bool, StoreError> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM messages) + (SELECT COUNT(*) FROM outbox) \
                  + (SELECT COUNT(*) FROM vault_docs WHERE conversation IS NOT NULL) \
                  + (SELECT COUNT(*) FROM transfers)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// Runs SQLite's `integrity_check`; `Ok(())` when the file is sound.
    pub async fn integrity_check(&self) -> Result<(), StoreError> {
        let (result,): (String,) = sqlx::query_as("PRAGMA integrity_check")
            .fetch_one(&self.pool)
            .await?;
        if result == "ok" {
            Ok(())
        } else {
            Err(StoreError::Document(format!(
                "integrity check failed: {result}"
            )))
        }
    }

    /// Messages in the index by status, for the metrics. Reads the index, not the vault's
    /// documents, so it does not wait behind the vault's writes.
    pub async fn message_counts(
        &self,
    ) -> Result<Vec<(crate::vault::MessageStatus, u64)>, StoreError> {
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM messages GROUP BY status")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(status, n)| {
                Some((
                    crate::vault::MessageStatus::from_rank(status)?,
                    u64::try_from(n).unwrap_or(0),
                ))
            })
            .collect())
    }

    /// Gives free pages back to the file system after deletions; returns the bytes the
    /// file shrank by. With incremental auto-vacuum (every database created by this version)
    /// that is `PRAGMA incremental_vacuum`, cheap and done in steps. An older database is
    /// rewritten once with `VACUUM` (which also switches it to incremental auto-vacuum) when
    /// at least a quarter of it is free.
    pub async fn reclaim(&self) -> Result<u64, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let size = |pages: i64, page: i64| u64::try_from(pages * page).unwrap_or(0);
        let (page,): (i64,) = sqlx::query_as("PRAGMA page_size")
            .fetch_one(&mut *conn)
            .await?;
        let (before,): (i64,) = sqlx::query_as("PRAGMA page_count")
            .fetch_one(&mut *conn)
            .await?;
        let (free,): (i64,) = sqlx::query_as("PRAGMA freelist_count")
            .fetch_one(&mut *conn)
            .await?;
        if free == 0 {
            return Ok(0);
        }
        let (mode,): (i64,) = sqlx::query_as("PRAGMA auto_vacuum")
            .fetch_one(&mut *conn)
            .await?;
        if mode == 2 {
            sqlx::query("PRAGMA incremental_vacuum")
                .execute(&mut *conn)
                .await?;
        } else {
            // A database of an earlier release (no incremental auto-vacuum): one full
            // VACUUM switches it, whatever share is free, and from then on freed pages go
            // back as above; until then they would keep what they held.
            sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
                .execute(&mut *conn)
                .await?;
            sqlx::query("VACUUM").execute(&mut *conn).await?;
        }
        // Truncate the write-ahead log too, so the file system gets the space back now.
        empty_log(&mut conn).await?;
        let (after,): (i64,) = sqlx::query_as("PRAGMA page_count")
            .fetch_one(&mut *conn)
            .await?;
        Ok(size(before, page).saturating_sub(size(after, page)))
    }

    /// Takes the free pages out of the file now (`PRAGMA incremental_vacuum`), so what the
    /// deleted rows held on them is gone from it: `secure_delete = FAST` zeroes deleted
    /// content on the pages that stay in use but not on pages that became free. A no-op on
    /// an older database without incremental auto-vacuum (see [`Self::reclaim`]).
    pub async fn drop_free_pages(&self) -> Result<(), StoreError> {
        // The search index deletes by tombstone (`contentless_delete`): the words of deleted
        // rows stay in its segments until they are merged. Merging them all drops them; the
        // word list (`0025_search_words.sql`) then loses the words the index no longer has
        // (it holds every word the index has, so none is added back).
        let mut tx = self.writer.begin().await?;
        sqlx::query("INSERT INTO search(search) VALUES ('optimize')")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM search_words WHERE term NOT IN (SELECT term FROM search_terms)")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        sqlx::query("PRAGMA incremental_vacuum")
            .execute(&self.writer)
            .await?;
        // The write-ahead log still holds the pages as they were (the erased text with
        // them) until it is checkpointed and emptied.
        empty_log(&mut *self.writer.acquire().await?).await?;
        Ok(())
    }

    /// Runs a `SELECT COUNT(*) …` query; for diagnostics and tests.
    pub async fn count(&self, sql: &'static str) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&self.pool).await?;
        Ok(n)
    }

    /// Closes every connection, checkpointing the WAL.
    pub async fn close(&self) {
        self.direct.close().await;
        self.pool.close().await;
        self.writer.close().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Every connection, the pool's and the direct readers', keeps one plan per statement
    /// whatever values are bound (`.cargo/config.toml` builds SQLite so): otherwise a
    /// statement with `LIMIT ?` is prepared anew each time it is bound.
    #[test]
    fn sqlite_plans_a_statement_once() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        assert!(
            conn.db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG)
                .unwrap(),
            "SQLite built without SQLITE_ENABLE_QPSG (LIBSQLITE3_FLAGS)"
        );
    }

    /// The direct readers read what was committed, cannot write, run at most
    /// DIRECT_READERS reads at once on as many connections, and stop with the database.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn direct_readers_read_only_a_few_at_a_time_until_closed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("volli.db")).await.unwrap();
        sqlx::query("INSERT INTO search_days (day, rows) VALUES (7, 3)")
            .execute(db.writer())
            .await
            .unwrap();
        let read = |c: &rusqlite::Connection| -> Result<i64, StoreError> {
            Ok(
                c.query_row("SELECT rows FROM search_days WHERE day = 7", [], |r| {
                    r.get(0)
                })?,
            )
        };
        assert_eq!(db.direct().run(read).await.unwrap(), 3);
        let wrote = db
            .direct()
            .run(|c| -> Result<usize, StoreError> { Ok(c.execute("DELETE FROM search_days", [])?) })
            .await;
        assert!(matches!(wrote, Err(StoreError::Sqlite(_))), "{wrote:?}");
        // Many reads at once: never more than DIRECT_READERS running, nor connections.
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut reads = Vec::new();
        for _ in 0..16 {
            let (db, running, most) = (db.clone(), Arc::clone(&running), Arc::clone(&most));
            reads.push(tokio::spawn(async move {
                db.direct()
                    .run(move |c| {
                        use std::sync::atomic::Ordering::SeqCst;
                        let now = running.fetch_add(1, SeqCst) + 1;
                        most.fetch_max(now, SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        running.fetch_sub(1, SeqCst);
                        read(c)
                    })
                    .await
            }));
        }
        for r in reads {
            assert_eq!(r.await.unwrap().unwrap(), 3);
        }
        let most = most.load(std::sync::atomic::Ordering::SeqCst);
        assert!((2..=DIRECT_READERS).contains(&most), "{most}");
        assert!(db.direct().idle().len() <= DIRECT_READERS);
        db.close().await;
        assert!(db.direct().idle().is_empty());
        assert!(matches!(
            db.direct().run(read).await,
            Err(StoreError::Closed)
        ));
    }

    /// Reader connections the pool opens while the writer is in a transaction that read
    /// before it writes must not fail that transaction with "database is locked".
    #[tokio::test]
    async fn readers_opening_do_not_fail_the_writers_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("volli.db")).await.unwrap();
        let mut tx = db.writer().begin().await.unwrap();
        let _: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM vault_log")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        // The pool keeps one reader open; taking four makes it open three more.
        let mut readers = Vec::new();
        for _ in 0..4 {
            readers.push(db.pool().acquire().await.unwrap());
        }
        sqlx::query("DELETE FROM vault_log")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        drop(readers);
        db.close().await;
    }
}
