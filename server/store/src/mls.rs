//! What this device keeps for its conversations on MLS: its MLS state (written by the vault
//! actor in the same transaction as the messages it goes with, [`crate::Vault::mls_queued`]),
//! the key packages other devices handed it, messages waiting for the commit or Welcome they
//! depend on, and recent commits for member devices that missed them. None of it is synced
//! or backed up: it is this device's alone.

use std::sync::Arc;

use volli_core::Timestamp;

use crate::{Db, StoreError};

/// A change to the MLS state: a key and its new value, or `None` to delete it.
pub type MlsChange = (Vec<u8>, Option<Arc<Vec<u8>>>);

/// One-time key packages kept per device (the oldest go first).
pub const MAX_ONE_TIME_PER_DEVICE: i64 = 8;
/// Messages waiting per conversation.
pub const MAX_PENDING_PER_GROUP: i64 = 4096;
/// Bytes of waiting mail one deliverer (a contact, or this user's device) may make this node
/// hold, over every conversation.
pub const MAX_PENDING_BYTES_PER_DELIVERER: i64 = 16 << 20;
/// Messages waiting from one deliverer, over every conversation.
pub const MAX_PENDING_PER_DELIVERER: i64 = 8192;
/// Bytes of waiting mail in all.
pub const MAX_PENDING_BYTES: i64 = 128 << 20;
/// Revocations kept per user (the newest).
pub const MAX_REVOCATIONS_PER_USER: i64 = 256;
/// Messages waiting per conversation from one deliverer.
pub const MAX_PENDING_PER_GROUP_AND_DELIVERER: i64 = 1024;

/// Another device's key package, as held here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldPackage {
    /// Its hash reference (TLS-encoded).
    pub reference: Vec<u8>,
    /// The device.
    pub peer: String,
    /// Its user.
    pub user_id: String,
    /// Whether it may be used more than once.
    pub last_resort: bool,
    /// The key package.
    pub package: Vec<u8>,
}

/// A message waiting for what it depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingMail {
    /// Its place in arrival order.
    pub seq: i64,
    /// Its epoch.
    pub epoch: u64,
    /// The mail as it arrived.
    pub mail: Vec<u8>,
}

/// `(reference, peer, user_id, last_resort, package)`.
type PackageRow = (Vec<u8>, String, String, bool, Vec<u8>);

impl Db {
    /// Every row of this device's MLS state.
    pub async fn mls_rows(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        Ok(sqlx::query_as("SELECT key, value FROM mls_state")
            .fetch_all(self.pool())
            .await?)
    }

    /// Forgets this device's whole MLS state and what came with it (the device starts its
    /// conversations over: restored from a backup, or a new identity).
    pub async fn mls_clear(&self) -> Result<(), StoreError> {
        let mut tx = self.writer().begin().await?;
        for table in ["mls_state", "mls_pending", "mls_commits"] {
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Keeps another device's key package: one-time packages up to
    /// [`MAX_ONE_TIME_PER_DEVICE`] per device (the oldest dropped), and its newest last-resort
    /// package only. Keeping one already held changes nothing.
    pub async fn key_package_add(
        &self,
        package: &HeldPackage,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer().begin().await?;
        if package.last_resort {
            sqlx::query("DELETE FROM mls_key_packages WHERE peer = ? AND last_resort = 1")
                .bind(&package.peer)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT OR IGNORE INTO mls_key_packages \
             (reference, peer, user_id, last_resort, package, received_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&package.reference)
        .bind(&package.peer)
        .bind(&package.user_id)
        .bind(package.last_resort)
        .bind(&package.package)
        .bind(now.as_millis())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM mls_key_packages WHERE peer = ? AND last_resort = 0 AND reference NOT IN \
             (SELECT reference FROM mls_key_packages WHERE peer = ? AND last_resort = 0 \
              ORDER BY received_at DESC LIMIT ?)",
        )
        .bind(&package.peer)
        .bind(&package.peer)
        .bind(MAX_ONE_TIME_PER_DEVICE)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A key package of device `peer` to add it with: a one-time package (taken: deleted
    /// here) while any is left, otherwise its last-resort package (kept).
    pub async fn key_package_take(&self, peer: &str) -> Result<Option<HeldPackage>, StoreError> {
        let mut tx = self.writer().begin().await?;
        let row: Option<PackageRow> = sqlx::query_as(
            "SELECT reference, peer, user_id, last_resort, package FROM mls_key_packages \
             WHERE peer = ? ORDER BY last_resort, received_at LIMIT 1",
        )
        .bind(peer)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((reference, peer, user_id, last_resort, package)) = row else {
            return Ok(None);
        };
        if !last_resort {
            sqlx::query("DELETE FROM mls_key_packages WHERE reference = ?")
                .bind(&reference)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Some(HeldPackage {
            reference,
            peer,
            user_id,
            last_resort,
            package,
        }))
    }

    /// Forgets one held key package (it no longer checks out).
    pub async fn key_packages_forget(&self, reference: &[u8]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM mls_key_packages WHERE reference = ?")
            .bind(reference)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// How many key packages are held for device `peer` (one-time, last-resort).
    pub async fn key_package_count(&self, peer: &str) -> Result<(u64, u64), StoreError> {
        let (one_time, last_resort): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(last_resort = 0), 0), COALESCE(SUM(last_resort = 1), 0) \
             FROM mls_key_packages WHERE peer = ?",
        )
        .bind(peer)
        .fetch_one(self.pool())
        .await?;
        Ok((
            u64::try_from(one_time).unwrap_or(0),
            u64::try_from(last_resort).unwrap_or(0),
        ))
    }

    /// The devices of `user` whose key packages are held.
    pub async fn key_package_peers_of(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT DISTINCT peer FROM mls_key_packages WHERE user_id = ?")
                .bind(user)
                .fetch_all(self.pool())
                .await?;
        Ok(rows.into_iter().map(|(p,)| p).collect())
    }

    /// Forgets the key packages of every device of `user` (no longer a contact).
    pub async fn key_packages_forget_user(&self, user: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM mls_key_packages WHERE user_id = ?")
            .bind(user)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// Keeps a message for `group` that waits for `epoch` (or for the group's Welcome), once,
    /// at most [`MAX_PENDING_PER_GROUP`] per group, and within what `deliverer` (who handed it
    /// over) and everyone together may make this node hold ([`MAX_PENDING_BYTES_PER_DELIVERER`],
    /// [`MAX_PENDING_PER_DELIVERER`], [`MAX_PENDING_BYTES`]). Returns false when there is no
    /// room.
    pub async fn mls_pending_add(
        &self,
        group: &[u8],
        epoch: u64,
        mail: &[u8],
        deliverer: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer().begin().await?;
        let (held,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM mls_pending WHERE group_id = ?")
            .bind(group)
            .fetch_one(&mut *tx)
            .await?;
        if held >= MAX_PENDING_PER_GROUP {
            return Ok(false);
        }
        let (mine,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM mls_pending WHERE group_id = ? AND deliverer = ?")
                .bind(group)
                .bind(deliverer)
                .fetch_one(&mut *tx)
                .await?;
        if mine >= MAX_PENDING_PER_GROUP_AND_DELIVERER {
            return Ok(false);
        }
        let (rows, bytes): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM mls_pending WHERE deliverer = ?",
        )
        .bind(deliverer)
        .fetch_one(&mut *tx)
        .await?;
        let size = i64::try_from(mail.len()).unwrap_or(i64::MAX);
        if rows >= MAX_PENDING_PER_DELIVERER || bytes + size > MAX_PENDING_BYTES_PER_DELIVERER {
            return Ok(false);
        }
        let (all,): (i64,) = sqlx::query_as("SELECT COALESCE(SUM(bytes), 0) FROM mls_pending")
            .fetch_one(&mut *tx)
            .await?;
        if all + size > MAX_PENDING_BYTES {
            return Ok(false);
        }
        // The same mail arrives again while it waits (its sender retries): kept once.
        sqlx::query(
            "INSERT INTO mls_pending (group_id, epoch, mail, received_at, deliverer, bytes) \
             SELECT ?, ?, ?, ?, ?, ? WHERE NOT EXISTS \
             (SELECT 1 FROM mls_pending WHERE group_id = ? AND mail = ?)",
        )
        .bind(group)
        .bind(i64::try_from(epoch).unwrap_or(i64::MAX))
        .bind(mail)
        .bind(now.as_millis())
        .bind(deliverer)
        .bind(size)
        .bind(group)
        .bind(mail)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Keeps `user`'s signed revocation of its device `peer` (checked by the caller); the
    /// newest [`MAX_REVOCATIONS_PER_USER`] per user stay. Returns whether it is new here.
    pub async fn revocation_add(
        &self,
        user: &str,
        peer: &str,
        statement: &[u8],
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer().begin().await?;
        let added = sqlx::query(
            "INSERT INTO mls_revocations (peer, user_id, statement, added_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (user_id, peer) DO NOTHING",
        )
        .bind(peer)
        .bind(user)
        .bind(statement)
        .bind(now.as_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if added {
            sqlx::query(
                "DELETE FROM mls_revocations WHERE user_id = ? AND peer NOT IN \
                 (SELECT peer FROM mls_revocations WHERE user_id = ? \
                  ORDER BY added_at DESC, peer LIMIT ?)",
            )
            .bind(user)
            .bind(user)
            .bind(MAX_REVOCATIONS_PER_USER)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(added)
    }

    /// Every revocation kept, as signed.
    pub async fn revocations(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT statement FROM mls_revocations")
            .fetch_all(self.pool())
            .await?;
        Ok(rows.into_iter().map(|(s,)| s).collect())
    }

    /// Who handed over the mail that waits for `group`.
    pub async fn mls_pending_deliverers(&self, group: &[u8]) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT deliverer FROM mls_pending WHERE group_id = ? LIMIT 16",
        )
        .bind(group)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(d,)| d).collect())
    }

    /// Whether `mail` waits for `group`.
    pub async fn mls_pending_holds(&self, group: &[u8], mail: &[u8]) -> Result<bool, StoreError> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM mls_pending WHERE group_id = ? AND mail = ?")
                .bind(group)
                .bind(mail)
                .fetch_one(self.pool())
                .await?;
        Ok(n > 0)
    }

    /// The messages waiting for `group` at epochs up to `epoch`, by epoch then arrival.
    pub async fn mls_pending_for(
        &self,
        group: &[u8],
        epoch: u64,
    ) -> Result<Vec<PendingMail>, StoreError> {
        let rows: Vec<(i64, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, epoch, mail FROM mls_pending WHERE group_id = ? AND epoch <= ? \
             ORDER BY epoch, seq LIMIT 1024",
        )
        .bind(group)
        .bind(i64::try_from(epoch).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, epoch, mail)| PendingMail {
                seq,
                epoch: u64::try_from(epoch).unwrap_or(0),
                mail,
            })
            .collect())
    }

    /// Groups with messages waiting, with the lowest epoch waited for and when the oldest
    /// arrived.
    pub async fn mls_pending_groups(&self) -> Result<Vec<(Vec<u8>, u64, Timestamp)>, StoreError> {
        let rows: Vec<(Vec<u8>, i64, i64)> = sqlx::query_as(
            "SELECT group_id, MIN(epoch), MIN(received_at) FROM mls_pending GROUP BY group_id",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(g, e, at)| (g, u64::try_from(e).unwrap_or(0), Timestamp::from_millis(at)))
            .collect())
    }

    /// Drops waiting messages: those processed, or that cannot be any more.
    pub async fn mls_pending_remove(&self, seqs: &[i64]) -> Result<(), StoreError> {
        let mut tx = self.writer().begin().await?;
        for seq in seqs {
            sqlx::query("DELETE FROM mls_pending WHERE seq = ?")
                .bind(seq)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records the messages that started `epoch` of `group` (proposals, then the commit).
    pub async fn mls_commit_record(
        &self,
        group: &[u8],
        epoch: u64,
        messages: &[u8],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT OR REPLACE INTO mls_commits (group_id, epoch, messages, stored_at) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(group)
        .bind(i64::try_from(epoch).unwrap_or(i64::MAX))
        .bind(messages)
        .bind(now.as_millis())
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// The recorded commits of `group` that start the epochs after `epoch`, in order: at
    /// most `limit`, and only an unbroken run from `epoch + 1`.
    pub async fn mls_commits_after(
        &self,
        group: &[u8],
        epoch: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT epoch, messages FROM mls_commits WHERE group_id = ? AND epoch > ? \
             ORDER BY epoch LIMIT ?",
        )
        .bind(group)
        .bind(i64::try_from(epoch).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        Ok((epoch + 1..)
            .zip(rows)
            .take_while(|(want, (e, _))| u64::try_from(*e).ok() == Some(*want))
            .map(|(want, (_, messages))| (want, messages))
            .collect())
    }

    /// Forgets waiting messages and recorded commits older than `before`, and everything of
    /// the groups not in `keep`.
    pub async fn mls_expire(&self, before: Timestamp, keep: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut tx = self.writer().begin().await?;
        sqlx::query("DELETE FROM mls_pending WHERE received_at < ?")
            .bind(before.as_millis())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM mls_commits WHERE stored_at < ?")
            .bind(before.as_millis())
            .execute(&mut *tx)
            .await?;
        let groups: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT DISTINCT group_id FROM mls_commits")
            .fetch_all(&mut *tx)
            .await?;
        for (group,) in groups {
            if !keep.contains(&group) {
                sqlx::query("DELETE FROM mls_commits WHERE group_id = ?")
                    .bind(&group)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Gives the pages freed by deleted keys back to the file system and empties the
    /// write-ahead log, so that neither holds a copy of them: what forgetting a past epoch
    /// relies on.
    pub async fn scrub(&self) -> Result<(), StoreError> {
        self.reclaim().await?;
        crate::db::empty_log(&mut *self.writer().acquire().await?).await?;
        Ok(())
    }
}

/// Keys written or deleted by one statement at most.
const KEYS_PER_STATEMENT: usize = 128;

/// Applies MLS state changes within the caller's transaction: the latest change of each
/// key wins, as if applied in order. A batch of messages to one conversation changes the
/// same few keys once per message; each is written once, in a few statements.
pub(crate) async fn apply(
    tx: &mut sqlx::SqliteConnection,
    changes: &[MlsChange],
) -> Result<(), StoreError> {
    let mut seen = std::collections::HashSet::new();
    let mut writes = Vec::new();
    let mut deletes = Vec::new();
    for (key, value) in changes.iter().rev() {
        if !seen.insert(key.as_slice()) {
            continue;
        }
        match value {
            Some(value) => writes.push((key, value)),
            None => deletes.push(key),
        }
    }
    for part in writes.chunks(KEYS_PER_STATEMENT) {
        let mut sql = String::from("INSERT OR REPLACE INTO mls_state (key, value) VALUES ");
        for i in 0..part.len() {
            sql.push_str(if i == 0 { "(?,?)" } else { ",(?,?)" });
        }
        // Only placeholders are formatted into the text; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (key, value) in part {
            query = query.bind(key.as_slice()).bind(value.as_slice());
        }
        query.execute(&mut *tx).await?;
    }
    for part in deletes.chunks(KEYS_PER_STATEMENT) {
        let mut sql = String::from("DELETE FROM mls_state WHERE key IN (");
        for i in 0..part.len() {
            sql.push_str(if i == 0 { "?" } else { ",?" });
        }
        sql.push(')');
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for key in part {
            query = query.bind(key.as_slice());
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}
