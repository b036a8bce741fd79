//! Files through friends ([ADR 0022]): the files this node holds for a contact's offline
//! contact (ciphertext it cannot open, chunk by chunk), and which friends hold a transfer of
//! this node's for its recipient.
//!
//! [ADR 0022]: ../../../docs/adr/0022-files-through-friends.md

use volli_core::Timestamp;

use crate::{Db, StoreError};

/// A file held here for a contact's contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldFileRow {
    /// The transfer id.
    pub id: [u8; 16],
    /// Who left it.
    pub depositor: String,
    /// Who it is for.
    pub recipient: String,
    /// The sealed offer.
    pub offer: Vec<u8>,
    /// Plaintext size.
    pub size: u64,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// The encoded chunk list.
    pub list: Vec<u8>,
    /// How many chunks it has.
    pub chunks: u32,
    /// Ciphertext bytes whole (what counts against the depositor's allowance).
    pub bytes: u64,
    /// When it was left.
    pub stored_at: Timestamp,
    /// When it goes.
    pub expires_at: Timestamp,
}

/// What [`Db::hold_file`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileHold {
    /// Held (now or before); the chunks held already.
    Held(Vec<u32>),
    /// Refused: the depositor left as many files as it may.
    TooMany,
    /// Refused: it would take the depositor past `allowed` (it uses `used`).
    OverQuota {
        /// Bytes allowed per depositor.
        allowed: u64,
        /// Bytes the depositor uses.
        used: u64,
    },
    /// Another depositor, or another recipient, holds a file under that id.
    Taken,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Vec<u8>,
    depositor: String,
    recipient: String,
    offer: Vec<u8>,
    size: i64,
    chunk_size: i64,
    list: Vec<u8>,
    chunks: i64,
    bytes: i64,
    stored_at: i64,
    expires_at: i64,
}

const COLUMNS: &str =
    "id, depositor, recipient, offer, size, chunk_size, list, chunks, bytes, stored_at, expires_at";

fn from_row(r: Row) -> Result<HeldFileRow, StoreError> {
    Ok(HeldFileRow {
        id: r
            .id
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Document("a held file's id is not 16 bytes".into()))?,
        depositor: r.depositor,
        recipient: r.recipient,
        offer: r.offer,
        size: u64::try_from(r.size).unwrap_or(0),
        chunk_size: u32::try_from(r.chunk_size).unwrap_or(0),
        list: r.list,
        chunks: u32::try_from(r.chunks).unwrap_or(0),
        bytes: u64::try_from(r.bytes).unwrap_or(0),
        stored_at: Timestamp::from_millis(r.stored_at),
        expires_at: Timestamp::from_millis(r.expires_at),
    })
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Db {
    /// Holds `file` unless it would take its depositor past `allowed` bytes or `max_files`
    /// files, or this node past `total` bytes of held files; a file held already (same id,
    /// depositor and recipient) is kept as it is. One transaction: two deposits at once
    /// cannot both pass.
    pub async fn hold_file(
        &self,
        file: &HeldFileRow,
        allowed: u64,
        max_files: u64,
        total: u64,
    ) -> Result<FileHold, StoreError> {
        let mut tx = self.writer().begin().await?;
        let known: Option<(String, String)> =
            sqlx::query_as("SELECT depositor, recipient FROM held_files WHERE id = ?")
                .bind(&file.id[..])
                .fetch_optional(&mut *tx)
                .await?;
        match known {
            Some((d, r)) if d == file.depositor && r == file.recipient => {
                let have: Vec<(i64,)> =
                    sqlx::query_as("SELECT idx FROM held_file_chunks WHERE id = ? ORDER BY idx")
                        .bind(&file.id[..])
                        .fetch_all(&mut *tx)
                        .await?;
                return Ok(FileHold::Held(
                    have.into_iter()
                        .filter_map(|(i,)| u32::try_from(i).ok())
                        .collect(),
                ));
            }
            Some(_) => return Ok(FileHold::Taken),
            None => {}
        }
        let (used, files, all): (i64, i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(CASE WHEN depositor = ? THEN bytes + LENGTH(offer) + LENGTH(list) \
             ELSE 0 END), 0), COALESCE(SUM(depositor = ?), 0), \
             COALESCE(SUM(bytes + LENGTH(offer) + LENGTH(list)), 0) FROM held_files",
        )
        .bind(&file.depositor)
        .bind(&file.depositor)
        .fetch_one(&mut *tx)
        .await?;
        let used = u64::try_from(used).unwrap_or(0);
        let all = u64::try_from(all).unwrap_or(0);
        if u64::try_from(files).unwrap_or(0) >= max_files {
            return Ok(FileHold::TooMany);
        }
        let cost = file.bytes + (file.offer.len() + file.list.len()) as u64;
        if used.saturating_add(cost) > allowed || all.saturating_add(cost) > total {
            return Ok(FileHold::OverQuota { allowed, used });
        }
        // Chunks of an earlier file under this id (gone since) are not this one's.
        sqlx::query("DELETE FROM held_file_chunks WHERE id = ?")
            .bind(&file.id[..])
            .execute(&mut *tx)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO held_files ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )))
        .bind(&file.id[..])
        .bind(&file.depositor)
        .bind(&file.recipient)
        .bind(&file.offer)
        .bind(signed(file.size))
        .bind(i64::from(file.chunk_size))
        .bind(&file.list)
        .bind(i64::from(file.chunks))
        .bind(signed(file.bytes))
        .bind(file.stored_at.as_millis())
        .bind(file.expires_at.as_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(FileHold::Held(Vec::new()))
    }

    /// The held file `id`.
    pub async fn held_file(&self, id: &[u8; 16]) -> Result<Option<HeldFileRow>, StoreError> {
        let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM held_files WHERE id = ?"
        )))
        .bind(&id[..])
        .fetch_optional(self.pool())
        .await?;
        row.map(from_row).transpose()
    }

    /// Keeps a chunk of held file `id` left by `depositor` (durably; a chunk held already is
    /// kept as it is); `false` when no such file is held (any more) — in one statement, so a
    /// file dropped meanwhile leaves no chunk behind.
    pub async fn hold_file_chunk(
        &self,
        id: &[u8; 16],
        depositor: &str,
        index: u32,
        bytes: &[u8],
    ) -> Result<bool, StoreError> {
        sqlx::query(
            "INSERT OR IGNORE INTO held_file_chunks (id, idx, bytes) SELECT ?, ?, ? \
             WHERE EXISTS (SELECT 1 FROM held_files WHERE id = ? AND depositor = ?)",
        )
        .bind(&id[..])
        .bind(i64::from(index))
        .bind(bytes)
        .bind(&id[..])
        .bind(depositor)
        .execute(self.writer())
        .await?;
        Ok(matches!(self.held_file(id).await?, Some(f) if f.depositor == depositor))
    }

    /// A chunk of held file `id`, if held.
    pub async fn held_file_chunk(
        &self,
        id: &[u8; 16],
        index: u32,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT bytes FROM held_file_chunks WHERE id = ? AND idx = ?")
                .bind(&id[..])
                .bind(i64::from(index))
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|(b,)| b))
    }

    /// How many files `depositor` left here.
    pub async fn held_files_for_depositor(&self, depositor: &str) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM held_files WHERE depositor = ?")
            .bind(depositor)
            .fetch_one(self.pool())
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// How many chunks of held file `id` are held.
    pub async fn held_file_chunks(&self, id: &[u8; 16]) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM held_file_chunks WHERE id = ?")
            .bind(&id[..])
            .fetch_one(self.pool())
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The files held for `recipient` whose every chunk is here, oldest first, at most
    /// `limit`.
    pub async fn held_files_for(
        &self,
        recipient: &str,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<HeldFileRow>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM held_files f WHERE recipient = ? AND expires_at > ? \
             AND chunks = (SELECT COUNT(*) FROM held_file_chunks c WHERE c.id = f.id) \
             ORDER BY stored_at LIMIT ?"
        )))
        .bind(recipient)
        .bind(now.as_millis())
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(from_row).collect()
    }

    /// Drops held file `id` if `user` left it or it is for `user`; whether it did.
    pub async fn drop_held_file(&self, id: &[u8; 16], user: &str) -> Result<bool, StoreError> {
        let mut tx = self.writer().begin().await?;
        let done =
            sqlx::query("DELETE FROM held_files WHERE id = ? AND (depositor = ? OR recipient = ?)")
                .bind(&id[..])
                .bind(user)
                .bind(user)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() > 0 {
            sqlx::query("DELETE FROM held_file_chunks WHERE id = ?")
                .bind(&id[..])
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Drops every file held for or from `user` (a contact removed); how many.
    pub async fn drop_held_files_of(&self, user: &str) -> Result<u64, StoreError> {
        self.drop_held_where("depositor = ? OR recipient = ?", &[user, user])
            .await
    }

    /// Drops held files past their expiry; how many.
    pub async fn expire_held_files(&self, now: Timestamp) -> Result<u64, StoreError> {
        let mut tx = self.writer().begin().await?;
        sqlx::query(
            "DELETE FROM held_file_chunks WHERE id IN \
             (SELECT id FROM held_files WHERE expires_at <= ?)",
        )
        .bind(now.as_millis())
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM held_files WHERE expires_at <= ?")
            .bind(now.as_millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn drop_held_where(&self, filter: &str, args: &[&str]) -> Result<u64, StoreError> {
        let mut tx = self.writer().begin().await?;
        let mut chunks = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM held_file_chunks WHERE id IN (SELECT id FROM held_files WHERE {filter})"
        )));
        for a in args {
            chunks = chunks.bind(*a);
        }
        chunks.execute(&mut *tx).await?;
        let mut files = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM held_files WHERE {filter}"
        )));
        for a in args {
            files = files.bind(*a);
        }
        let done = files.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Held files: how many, their ciphertext bytes as held now, their distinct recipients,
    /// and when the first expires.
    pub async fn held_files_stats(
        &self,
    ) -> Result<(u64, u64, Vec<String>, Option<Timestamp>), StoreError> {
        let (files, next): (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), MIN(expires_at) FROM held_files")
                .fetch_one(self.pool())
                .await?;
        let (bytes,): (i64,) =
            sqlx::query_as("SELECT COALESCE(SUM(LENGTH(bytes)), 0) FROM held_file_chunks")
                .fetch_one(self.pool())
                .await?;
        let recipients: Vec<(String,)> =
            sqlx::query_as("SELECT DISTINCT recipient FROM held_files")
                .fetch_all(self.pool())
                .await?;
        Ok((
            u64::try_from(files).unwrap_or(0),
            u64::try_from(bytes).unwrap_or(0),
            recipients.into_iter().map(|(r,)| r).collect(),
            next.map(Timestamp::from_millis),
        ))
    }

    /// Records that `user` holds (`held`) or is being given (`!held`) transfer `id`.
    pub async fn set_transfer_holder(
        &self,
        id: &[u8; 16],
        user: &str,
        held: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO transfer_holders (transfer, user_id, held) VALUES (?, ?, ?) \
             ON CONFLICT (transfer, user_id) DO UPDATE SET held = excluded.held",
        )
        .bind(&id[..])
        .bind(user)
        .bind(held)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Forgets that `user` holds transfer `id`.
    pub async fn remove_transfer_holder(
        &self,
        id: &[u8; 16],
        user: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM transfer_holders WHERE transfer = ? AND user_id = ?")
            .bind(&id[..])
            .bind(user)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// Transfers of this node's that are over and that `user` was holding when last heard
    /// of (it has not been told yet that it may let them go), at most 256.
    pub async fn finished_transfers_held_by(
        &self,
        user: &str,
    ) -> Result<Vec<[u8; 16]>, StoreError> {
        let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
            "SELECT h.transfer FROM transfer_holders h JOIN transfers t ON t.id = h.transfer \
             WHERE h.user_id = ? AND t.state IN ('completed', 'declined', 'cancelled', 'failed') \
             LIMIT 256",
        )
        .bind(user)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id,)| id.as_slice().try_into().ok())
            .collect())
    }

    /// The friends that hold transfer `id` (with whether they hold it whole).
    pub async fn transfer_holders(&self, id: &[u8; 16]) -> Result<Vec<(String, bool)>, StoreError> {
        let rows: Vec<(String, bool)> = sqlx::query_as(
            "SELECT user_id, held FROM transfer_holders WHERE transfer = ? ORDER BY rowid",
        )
        .bind(&id[..])
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A file of one chunk of `bytes` (the offer and the list add 72 to what it costs).
    fn file(id: u8, depositor: &str, recipient: &str, bytes: u64, expires: i64) -> HeldFileRow {
        HeldFileRow {
            id: [id; 16],
            depositor: depositor.into(),
            recipient: recipient.into(),
            offer: vec![id; 40],
            size: bytes,
            chunk_size: 1 << 20,
            list: vec![0; 32],
            chunks: 1,
            bytes,
            stored_at: Timestamp::from_millis(1),
            expires_at: Timestamp::from_millis(expires),
        }
    }

    #[tokio::test]
    async fn allowances_bound_each_depositor_and_a_file_goes_with_its_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("volli.db")).await.unwrap();
        let hold = |f: HeldFileRow| {
            let db = db.clone();
            async move { db.hold_file(&f, 1000, 2, 1500).await.unwrap() }
        };
        let a = file(1, "alice", "bob", 600, 10_000);
        assert_eq!(hold(a.clone()).await, FileHold::Held(vec![]));
        // Over the depositor's allowance, then over the node's total.
        assert_eq!(
            hold(file(2, "alice", "bob", 500, 10_000)).await,
            FileHold::OverQuota {
                allowed: 1000,
                used: 672
            }
        );
        assert_eq!(
            hold(file(3, "carol", "bob", 900, 10_000)).await,
            FileHold::OverQuota {
                allowed: 1000,
                used: 0
            }
        );
        // As many files as allowed, then no more.
        assert_eq!(
            hold(file(5, "alice", "bob", 10, 10_000)).await,
            FileHold::Held(vec![])
        );
        assert_eq!(
            hold(file(6, "alice", "bob", 10, 10_000)).await,
            FileHold::TooMany
        );
        // Another depositor cannot take over an id, nor add to another's file.
        assert_eq!(
            hold(file(1, "carol", "bob", 10, 10_000)).await,
            FileHold::Taken
        );
        assert!(!db.hold_file_chunk(&a.id, "carol", 0, b"x").await.unwrap());
        // Listed once whole.
        let now = Timestamp::from_millis(5);
        assert!(db.held_files_for("bob", now, 10).await.unwrap().is_empty());
        assert!(
            db.hold_file_chunk(&a.id, "alice", 0, b"chunk")
                .await
                .unwrap()
        );
        assert_eq!(
            db.held_files_for("bob", now, 10).await.unwrap(),
            vec![a.clone()]
        );
        // Asked again, the same deposit says what is held.
        assert_eq!(hold(a.clone()).await, FileHold::Held(vec![0]));
        assert!(!db.drop_held_file(&a.id, "carol").await.unwrap());
        assert!(db.drop_held_file(&a.id, "bob").await.unwrap());
        assert_eq!(db.held_file_chunk(&a.id, 0).await.unwrap(), None);
        // A chunk for a file dropped meanwhile is not kept.
        assert!(
            !db.hold_file_chunk(&a.id, "alice", 0, b"chunk")
                .await
                .unwrap()
        );
        assert_eq!(db.held_file_chunk(&a.id, 0).await.unwrap(), None);
        // Expiry takes the file and its chunks.
        db.drop_held_file(&[5; 16], "alice").await.unwrap();
        let b = file(4, "alice", "bob", 100, 50);
        assert_eq!(hold(b.clone()).await, FileHold::Held(vec![]));
        assert!(db.hold_file_chunk(&b.id, "alice", 0, b"x").await.unwrap());
        assert_eq!(
            db.expire_held_files(Timestamp::from_millis(60))
                .await
                .unwrap(),
            1
        );
        assert_eq!(db.held_file_chunk(&b.id, 0).await.unwrap(), None);
        assert_eq!(db.held_files_stats().await.unwrap().0, 0);
    }
}
