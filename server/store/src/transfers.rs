//! File transfers: one row per transfer (either direction) and, per transfer, the chunks
//! that are stored and durable. The bytes themselves live in the file backend.

use volli_core::Timestamp;

use crate::{Db, StoreError};

/// A transfer as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferRow {
    /// The transfer id.
    pub id: [u8; 16],
    /// `true` when this node sends.
    pub outgoing: bool,
    /// The other side's user id.
    pub peer: String,
    /// The other side's device this node deals with (the sender's, for incoming).
    pub device: Option<String>,
    /// The file's name.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// The chunk list's hash.
    pub list_hash: [u8; 32],
    /// The plaintext's BLAKE3 hash.
    pub blake3: [u8; 32],
    /// The file's key.
    pub file_key: [u8; 32],
    /// The sender's file on disk, when sent by path.
    pub source: Option<String>,
    /// The encoded chunk list, once known.
    pub list: Option<Vec<u8>>,
    /// The sealed offer (outgoing).
    pub sealed_offer: Option<Vec<u8>>,
    /// `offered`, `running`, `completed`, `declined`, `cancelled`, `failed`.
    pub state: String,
    /// Paused by this side.
    pub paused_here: bool,
    /// Paused by the other side.
    pub paused_there: bool,
    /// The offer reached the recipient (outgoing).
    pub delivered: bool,
    /// A change the other side has not heard of yet.
    pub notify: Option<String>,
    /// Bytes of the file stored (incoming) or sent (outgoing).
    pub bytes_done: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was offered.
    pub created_at: Timestamp,
    /// Until when the sender keeps the file.
    pub expires_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// Its chunks are stored under ids of this transfer's own (every row made by this
    /// release), rather than under their names (rows of earlier releases).
    pub chunk_ids_per_transfer: bool,
    /// The group it was offered to (the sender's row and each member's), if any.
    pub group: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Vec<u8>,
    direction: String,
    peer: String,
    device: Option<String>,
    name: String,
    size: i64,
    chunk_size: i64,
    list_hash: Vec<u8>,
    blake3: Vec<u8>,
    file_key: Vec<u8>,
    source: Option<String>,
    list: Option<Vec<u8>>,
    sealed_offer: Option<Vec<u8>>,
    state: String,
    paused_here: bool,
    paused_there: bool,
    delivered: bool,
    notify: Option<String>,
    bytes_done: i64,
    error: Option<String>,
    created_at: i64,
    expires_at: i64,
    updated_at: i64,
    chunk_ids_per_transfer: bool,
    grp: Option<String>,
}

const COLUMNS: &str = "id, direction, peer, device, name, size, chunk_size, list_hash, blake3, \
     file_key, source, list, sealed_offer, state, paused_here, paused_there, delivered, \
     notify, bytes_done, error, created_at, expires_at, updated_at, chunk_ids_per_transfer, grp";

fn array<const N: usize>(bytes: &[u8]) -> Result<[u8; N], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Document("a transfer row holds a value of the wrong size".into()))
}

fn from_row(r: Row) -> Result<TransferRow, StoreError> {
    Ok(TransferRow {
        id: array(&r.id)?,
        outgoing: r.direction == "outgoing",
        peer: r.peer,
        device: r.device,
        name: r.name,
        size: u64::try_from(r.size).unwrap_or(0),
        chunk_size: u32::try_from(r.chunk_size).unwrap_or(0),
        list_hash: array(&r.list_hash)?,
        blake3: array(&r.blake3)?,
        file_key: array(&r.file_key)?,
        source: r.source,
        list: r.list,
        sealed_offer: r.sealed_offer,
        state: r.state,
        paused_here: r.paused_here,
        paused_there: r.paused_there,
        delivered: r.delivered,
        notify: r.notify,
        bytes_done: u64::try_from(r.bytes_done).unwrap_or(0),
        error: r.error,
        created_at: Timestamp::from_millis(r.created_at),
        expires_at: Timestamp::from_millis(r.expires_at),
        updated_at: Timestamp::from_millis(r.updated_at),
        chunk_ids_per_transfer: r.chunk_ids_per_transfer,
        group: r.grp,
    })
}

/// The statement that inserts `t` (ignored when its id is known).
fn insert(t: &TransferRow) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT OR IGNORE INTO transfers ({COLUMNS}) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )))
    .bind(&t.id[..])
    .bind(if t.outgoing { "outgoing" } else { "incoming" })
    .bind(&t.peer)
    .bind(&t.device)
    .bind(&t.name)
    .bind(signed(t.size))
    .bind(i64::from(t.chunk_size))
    .bind(&t.list_hash[..])
    .bind(&t.blake3[..])
    .bind(&t.file_key[..])
    .bind(&t.source)
    .bind(&t.list)
    .bind(&t.sealed_offer)
    .bind(&t.state)
    .bind(t.paused_here)
    .bind(t.paused_there)
    .bind(t.delivered)
    .bind(&t.notify)
    .bind(signed(t.bytes_done))
    .bind(&t.error)
    .bind(t.created_at.as_millis())
    .bind(t.expires_at.as_millis())
    .bind(t.updated_at.as_millis())
    .bind(t.chunk_ids_per_transfer)
    .bind(&t.group)
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Db {
    /// Inserts a transfer; returns `false` (changing nothing) when its id is known already.
    pub async fn insert_transfer(&self, t: &TransferRow) -> Result<bool, StoreError> {
        let done = insert(t).execute(self.writer()).await?;
        Ok(done.rows_affected() == 1)
    }

    /// Saves a transfer's changing fields (state, pause flags, notification, progress,
    /// error, list).
    pub async fn save_transfer(&self, t: &TransferRow) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE transfers SET device = ?, state = ?, paused_here = ?, paused_there = ?, \
             delivered = ?, notify = ?, bytes_done = ?, error = ?, list = ?, updated_at = ? \
             WHERE id = ?",
        )
        .bind(&t.device)
        .bind(&t.state)
        .bind(t.paused_here)
        .bind(t.paused_there)
        .bind(t.delivered)
        .bind(&t.notify)
        .bind(signed(t.bytes_done))
        .bind(&t.error)
        .bind(&t.list)
        .bind(t.updated_at.as_millis())
        .bind(&t.id[..])
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// One transfer.
    pub async fn transfer(&self, id: &[u8; 16]) -> Result<Option<TransferRow>, StoreError> {
        let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM transfers WHERE id = ?"
        )))
        .bind(&id[..])
        .fetch_optional(self.pool())
        .await?;
        row.map(from_row).transpose()
    }

    /// Every transfer, newest first.
    pub async fn transfers(&self) -> Result<Vec<TransferRow>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM transfers ORDER BY created_at DESC, id"
        )))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(from_row).collect()
    }

    /// Records chunks as stored and durable, with their hash parts, and the new progress,
    /// in one transaction.
    pub async fn add_transfer_chunks(
        &self,
        id: &[u8; 16],
        chunks: &[(u32, [u8; 32])],
        bytes_done: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer().begin().await?;
        for (index, cv) in chunks {
            sqlx::query(
                "INSERT OR REPLACE INTO transfer_chunks (transfer, idx, cv) VALUES (?, ?, ?)",
            )
            .bind(&id[..])
            .bind(i64::from(*index))
            .bind(&cv[..])
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE transfers SET bytes_done = ?, updated_at = ? WHERE id = ?")
            .bind(signed(bytes_done))
            .bind(Timestamp::now().as_millis())
            .bind(&id[..])
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The chunks recorded for a transfer, in order.
    pub async fn transfer_chunks(&self, id: &[u8; 16]) -> Result<Vec<(u32, [u8; 32])>, StoreError> {
        let rows: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT idx, cv FROM transfer_chunks WHERE transfer = ? ORDER BY idx")
                .bind(&id[..])
                .fetch_all(self.pool())
                .await?;
        rows.into_iter()
            .map(|(i, cv)| Ok((u32::try_from(i).unwrap_or(u32::MAX), array(&cv)?)))
            .collect()
    }

    /// Forgets some recorded chunks (found missing from the backend).
    pub async fn forget_transfer_chunks(
        &self,
        id: &[u8; 16],
        indexes: &[u32],
    ) -> Result<(), StoreError> {
        let mut tx = self.writer().begin().await?;
        for index in indexes {
            sqlx::query("DELETE FROM transfer_chunks WHERE transfer = ? AND idx = ?")
                .bind(&id[..])
                .bind(i64::from(*index))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes a transfer and its chunk records.
    pub async fn delete_transfer(&self, id: &[u8; 16]) -> Result<(), StoreError> {
        let mut tx = self.writer().begin().await?;
        sqlx::query("DELETE FROM transfer_chunks WHERE transfer = ?")
            .bind(&id[..])
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM transfer_members WHERE transfer = ?")
            .bind(&id[..])
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM transfer_holders WHERE transfer = ?")
            .bind(&id[..])
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM transfers WHERE id = ?")
            .bind(&id[..])
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Inserts a group transfer offered by this node together with the members who fetch it
    /// from here; returns `false` (changing nothing) when its id is known already.
    pub async fn insert_group_transfer(
        &self,
        t: &TransferRow,
        members: &[String],
    ) -> Result<bool, StoreError> {
        // One transaction: a crash leaves either both or neither.
        let mut tx = self.writer().begin().await?;
        if insert(t).execute(&mut *tx).await?.rows_affected() == 0 {
            return Ok(false);
        }
        for user in members {
            sqlx::query(
                "INSERT OR IGNORE INTO transfer_members (transfer, user_id, done) VALUES (?, ?, 0)",
            )
            .bind(&t.id[..])
            .bind(user)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Records `user`'s word on group transfer `id` (`running`, `declined`, `cancelled`
    /// or `completed`: a member that has the file keeps it); returns every member when
    /// `user` is one of those it was offered to from here, else `None`.
    pub async fn transfer_member_state(
        &self,
        id: &[u8; 16],
        user: &str,
        state: &str,
    ) -> Result<Option<Vec<TransferMember>>, StoreError> {
        let changed = sqlx::query(
            "UPDATE transfer_members SET state = ?, done = (? = 'completed') \
             WHERE transfer = ? AND user_id = ? AND state != 'completed'",
        )
        .bind(state)
        .bind(state)
        .bind(&id[..])
        .bind(user)
        .execute(self.writer())
        .await?;
        let members = self.transfer_members(id).await?;
        if changed.rows_affected() == 0 && !members.iter().any(|m| m.user_id == user) {
            return Ok(None);
        }
        Ok(Some(members))
    }

    /// Records how much of group transfer `id` member `user` fetched from here.
    pub async fn transfer_member_progress(
        &self,
        id: &[u8; 16],
        user: &str,
        bytes: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE transfer_members SET bytes_done = MAX(bytes_done, ?), \
             state = CASE WHEN state = 'offered' THEN 'running' ELSE state END \
             WHERE transfer = ? AND user_id = ?",
        )
        .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
        .bind(&id[..])
        .bind(user)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Records how far a group transfer offered from here got (its members on average):
    /// `running` from `offered`, never past a state that ended it.
    pub async fn transfer_progress(&self, id: &[u8; 16], bytes: u64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE transfers SET bytes_done = MAX(bytes_done, ?), \
             state = CASE WHEN state = 'offered' THEN 'running' ELSE state END \
             WHERE id = ? AND state IN ('offered', 'running')",
        )
        .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
        .bind(&id[..])
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// The members group transfer `id` was offered to from here, each with its state.
    pub async fn transfer_members(&self, id: &[u8; 16]) -> Result<Vec<TransferMember>, StoreError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT user_id, state, bytes_done FROM transfer_members WHERE transfer = ? \
             ORDER BY user_id",
        )
        .bind(&id[..])
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(user_id, state, bytes)| TransferMember {
                user_id,
                state,
                bytes_done: u64::try_from(bytes).unwrap_or(0),
            })
            .collect())
    }
}

/// A member a group transfer was offered to from this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferMember {
    /// Its user id.
    pub user_id: String,
    /// `offered`, `running`, `completed`, `declined` or `cancelled`.
    pub state: String,
    /// How much it fetched from here.
    pub bytes_done: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn row(id: u8) -> TransferRow {
        TransferRow {
            id: [id; 16],
            outgoing: false,
            peer: "peer".into(),
            device: None,
            name: "a.bin".into(),
            size: 3 << 20,
            chunk_size: 1 << 20,
            list_hash: [1; 32],
            blake3: [2; 32],
            file_key: [3; 32],
            source: None,
            list: None,
            sealed_offer: None,
            state: "offered".into(),
            paused_here: false,
            paused_there: false,
            delivered: false,
            notify: None,
            bytes_done: 0,
            error: None,
            created_at: Timestamp::from_millis(1),
            expires_at: Timestamp::from_millis(2),
            updated_at: Timestamp::from_millis(1),
            chunk_ids_per_transfer: true,
            group: None,
        }
    }

    #[tokio::test]
    async fn transfers_and_their_chunks_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).await.unwrap();
        let mut t = row(1);
        assert!(db.insert_transfer(&t).await.unwrap());
        assert!(!db.insert_transfer(&t).await.unwrap());
        t.state = "running".into();
        t.paused_there = true;
        t.list = Some(vec![9; 96]);
        db.save_transfer(&t).await.unwrap();
        db.add_transfer_chunks(&t.id, &[(2, [7; 32]), (0, [5; 32])], 2 << 20)
            .await
            .unwrap();
        let back = db.transfer(&t.id).await.unwrap().unwrap();
        assert_eq!(back.state, "running");
        assert!(back.paused_there);
        assert_eq!(back.bytes_done, 2 << 20);
        assert_eq!(back.list, Some(vec![9; 96]));
        assert_eq!(
            db.transfer_chunks(&t.id).await.unwrap(),
            vec![(0, [5; 32]), (2, [7; 32])]
        );
        db.forget_transfer_chunks(&t.id, &[2]).await.unwrap();
        assert_eq!(db.transfer_chunks(&t.id).await.unwrap().len(), 1);
        db.insert_transfer(&row(2)).await.unwrap();
        assert_eq!(db.transfers().await.unwrap().len(), 2);
        db.delete_transfer(&t.id).await.unwrap();
        assert!(db.transfer(&t.id).await.unwrap().is_none());
        assert!(db.transfer_chunks(&t.id).await.unwrap().is_empty());
    }
}
