//! The SQLite pool: WAL, `synchronous=FULL`, foreign keys, a busy timeout, migrations.

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::StoreError;

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
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&writer).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(options)
            .await?;
        Ok(Self { pool, writer })
    }

    /// The readers.
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The one connection every write goes through.
    pub(crate) fn writer(&self) -> &SqlitePool {
        &self.writer
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

    /// Runs a `SELECT COUNT(*) …` query; for diagnostics and tests.
    pub async fn count(&self, sql: &'static str) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&self.pool).await?;
        Ok(n)
    }

    /// Closes every connection, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
}
