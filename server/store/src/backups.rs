//! Backups held by friends, as stored here: the pieces this node holds for its contacts
//! (`backup_held`, with per-contact and total quotas checked in the transaction that adds
//! to them) and this node's own backup state (`backup_state`, one row the node encodes).
//! Nothing here can read a piece: they are sealed by their owner.

use volli_core::Timestamp;

use crate::{Db, StoreError};

/// What putting a piece came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Kept; the owner now uses this many bytes.
    Kept {
        /// Bytes the owner uses here.
        used: u64,
    },
    /// Not kept: it would take the owner past `offer`, or the node past its total.
    OverQuota {
        /// Bytes the owner uses here.
        used: u64,
    },
    /// Not kept: another contact filed a piece under the same locator and id.
    Taken,
}

/// What this node holds for others' backups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldStats {
    /// Pieces held.
    pub pieces: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Contacts they are for.
    pub owners: u64,
}

impl Db {
    /// Bytes held for `owner`'s backups.
    pub async fn held_for(&self, owner: &str) -> Result<u64, StoreError> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COALESCE(SUM(size), 0) FROM backup_held WHERE owner = ?")
                .bind(owner)
                .fetch_one(self.pool())
                .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Keeps a piece for `owner` (replacing its earlier bytes under the same id) unless that
    /// takes the owner past `offer` bytes or everything held past `total`.
    pub async fn hold_piece(
        &self,
        owner: &str,
        locator: &[u8; 32],
        piece: &[u8; 16],
        bytes: &[u8],
        offer: u64,
        total: u64,
    ) -> Result<PutOutcome, StoreError> {
        let mut tx = self.writer().begin().await?;
        let existing: Option<(String, i64)> =
            sqlx::query_as("SELECT owner, size FROM backup_held WHERE locator = ? AND piece = ?")
                .bind(&locator[..])
                .bind(&piece[..])
                .fetch_optional(&mut *tx)
                .await?;
        let replaced = match &existing {
            Some((o, _)) if o != owner => return Ok(PutOutcome::Taken),
            Some((_, size)) => u64::try_from(*size).unwrap_or(0),
            None => 0,
        };
        let (used, all): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(CASE WHEN owner = ? THEN size ELSE 0 END), 0), \
                    COALESCE(SUM(size), 0) FROM backup_held",
        )
        .bind(owner)
        .fetch_one(&mut *tx)
        .await?;
        let used = u64::try_from(used).unwrap_or(0);
        let all = u64::try_from(all).unwrap_or(0);
        let size = bytes.len() as u64;
        if used - replaced.min(used) + size > offer || all - replaced.min(all) + size > total {
            return Ok(PutOutcome::OverQuota { used });
        }
        sqlx::query(
            "INSERT INTO backup_held (locator, piece, owner, size, bytes, stored_at) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (locator, piece) DO UPDATE SET \
             size = excluded.size, bytes = excluded.bytes, stored_at = excluded.stored_at",
        )
        .bind(&locator[..])
        .bind(&piece[..])
        .bind(owner)
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(bytes)
        .bind(Timestamp::now().as_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(PutOutcome::Kept {
            used: used - replaced.min(used) + size,
        })
    }

    /// The pieces held for `owner` under `locator`.
    pub async fn held_pieces(
        &self,
        owner: &str,
        locator: &[u8; 32],
    ) -> Result<Vec<[u8; 16]>, StoreError> {
        let rows: Vec<(Vec<u8>,)> =
            sqlx::query_as("SELECT piece FROM backup_held WHERE owner = ? AND locator = ?")
                .bind(owner)
                .bind(&locator[..])
                .fetch_all(self.pool())
                .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(p,)| p.try_into().ok())
            .collect())
    }

    /// Keeps only `pieces` under `locator` for `owner`: everything else held for it goes
    /// (under any locator). Returns how many pieces went.
    pub async fn keep_pieces(
        &self,
        owner: &str,
        locator: &[u8; 32],
        pieces: &[[u8; 16]],
    ) -> Result<u64, StoreError> {
        let keep: std::collections::HashSet<&[u8]> = pieces.iter().map(|p| &p[..]).collect();
        let mut tx = self.writer().begin().await?;
        let rows: Vec<(Vec<u8>, Vec<u8>)> =
            sqlx::query_as("SELECT locator, piece FROM backup_held WHERE owner = ?")
                .bind(owner)
                .fetch_all(&mut *tx)
                .await?;
        let mut gone = 0;
        for (l, p) in rows {
            if l == locator[..] && keep.contains(&p[..]) {
                continue;
            }
            sqlx::query("DELETE FROM backup_held WHERE locator = ? AND piece = ?")
                .bind(&l)
                .bind(&p)
                .execute(&mut *tx)
                .await?;
            gone += 1;
        }
        tx.commit().await?;
        Ok(gone)
    }

    /// A piece held under `locator`, whoever it is for.
    pub async fn held_piece(
        &self,
        locator: &[u8; 32],
        piece: &[u8; 16],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT bytes FROM backup_held WHERE locator = ? AND piece = ?")
                .bind(&locator[..])
                .bind(&piece[..])
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|(b,)| b))
    }

    /// The locators this node holds something under (to announce them).
    pub async fn held_locators(&self) -> Result<Vec<[u8; 32]>, StoreError> {
        let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT DISTINCT locator FROM backup_held")
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(l,)| l.try_into().ok())
            .collect())
    }

    /// Drops everything held for `owner` (no longer a contact). Returns how many pieces.
    pub async fn forget_held(&self, owner: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM backup_held WHERE owner = ?")
            .bind(owner)
            .execute(self.writer())
            .await?;
        Ok(done.rows_affected())
    }

    /// What is held for others' backups.
    pub async fn held_stats(&self) -> Result<HeldStats, StoreError> {
        let (pieces, bytes, owners): (i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COUNT(DISTINCT owner) FROM backup_held",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(HeldStats {
            pieces: u64::try_from(pieces).unwrap_or(0),
            bytes: u64::try_from(bytes).unwrap_or(0),
            owners: u64::try_from(owners).unwrap_or(0),
        })
    }

    /// This node's own backup state, as the node last wrote it.
    pub async fn backup_state(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let row: Option<(Vec<u8>,)> = sqlx::query_as("SELECT state FROM backup_state WHERE id = 1")
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|(s,)| s))
    }

    /// Replaces this node's own backup state (`None`: no backup).
    pub async fn set_backup_state(&self, state: Option<&[u8]>) -> Result<(), StoreError> {
        match state {
            Some(state) => {
                sqlx::query(
                    "INSERT INTO backup_state (id, state) VALUES (1, ?) \
                     ON CONFLICT (id) DO UPDATE SET state = excluded.state",
                )
                .bind(state)
                .execute(self.writer())
                .await?
            }
            None => {
                sqlx::query("DELETE FROM backup_state")
                    .execute(self.writer())
                    .await?
            }
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn quotas_bound_what_each_contact_puts() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("volli.db")).await.unwrap();
        let (l1, l2) = ([1u8; 32], [2u8; 32]);
        let put = |owner: &'static str, l: [u8; 32], p: u8, len: usize| {
            let db = db.clone();
            async move {
                db.hold_piece(owner, &l, &[p; 16], &vec![7; len], 1000, 1500)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(
            put("alice", l1, 1, 600).await,
            PutOutcome::Kept { used: 600 }
        );
        assert_eq!(
            put("alice", l1, 2, 500).await,
            PutOutcome::OverQuota { used: 600 }
        );
        // Replacing a piece counts its new size only.
        assert_eq!(
            put("alice", l1, 1, 900).await,
            PutOutcome::Kept { used: 900 }
        );
        assert_eq!(put("bob", l1, 1, 10).await, PutOutcome::Taken);
        assert_eq!(put("bob", l2, 1, 600).await, PutOutcome::Kept { used: 600 });
        // The node's total (1500) binds too.
        assert_eq!(
            put("carol", l2, 9, 700).await,
            PutOutcome::OverQuota { used: 0 }
        );
        assert_eq!(db.held_for("alice").await.unwrap(), 900);
        assert_eq!(db.held_pieces("alice", &l1).await.unwrap(), vec![[1; 16]]);
        assert_eq!(
            db.held_piece(&l2, &[1; 16]).await.unwrap(),
            Some(vec![7; 600])
        );
        assert_eq!(db.keep_pieces("alice", &l2, &[]).await.unwrap(), 1);
        assert_eq!(db.held_for("alice").await.unwrap(), 0);
        let stats = db.held_stats().await.unwrap();
        assert_eq!((stats.pieces, stats.bytes, stats.owners), (1, 600, 1));
        assert_eq!(db.forget_held("bob").await.unwrap(), 1);
        assert!(db.held_locators().await.unwrap().is_empty());
    }
}
