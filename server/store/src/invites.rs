//! Invites issued by this node, their redemptions, and invites accepted but not yet
//! redeemed (the inviter was unreachable).

use volli_core::Timestamp;

use crate::{Db, StoreError};

/// The outcome of trying to redeem an invite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redemption {
    /// Counted (or already counted for this user).
    Accepted,
    /// Past its expiry.
    Expired,
    /// Every use is taken.
    Used,
    /// This node never issued it.
    Unknown,
    /// The redeemer was removed as a contact after this invite was issued.
    Removed,
}

/// An invite accepted while its inviter was unreachable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingContact {
    /// The inviter's user id.
    pub inviter: String,
    /// The invite link.
    pub link: String,
    /// The name the user chose for the contact.
    pub name: Option<String>,
    /// Attempts so far.
    pub attempts: u32,
    /// The last failure.
    pub last_error: Option<String>,
}

impl Db {
    /// Records a new invite.
    pub async fn create_invite(
        &self,
        id: &[u8; 32],
        expires_at: Timestamp,
        max_uses: u16,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO invites (id, created_at, expires_at, max_uses) VALUES (?, ?, ?, ?)",
        )
        .bind(&id[..])
        .bind(Timestamp::now().as_millis())
        .bind(expires_at.as_millis())
        .bind(i64::from(max_uses))
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Counts one use of an invite by `user`, atomically: of any number of concurrent
    /// redemptions of a single-use invite, exactly one is accepted. A user who already
    /// redeemed it is accepted again without using another use — unless the user was removed
    /// as a contact after the invite was issued. An unknown invite is answered from a read,
    /// without taking the write lock, so guesses cost the writer nothing.
    pub async fn redeem_invite(
        &self,
        id: &[u8; 32],
        user: &str,
        now: Timestamp,
    ) -> Result<Redemption, StoreError> {
        let known: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM invites WHERE id = ?")
            .bind(&id[..])
            .fetch_optional(self.pool())
            .await?;
        if known.is_none() {
            return Ok(Redemption::Unknown);
        }
        let mut tx = self.writer().begin_with("BEGIN IMMEDIATE").await?;
        let row: Option<(i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT created_at, expires_at, max_uses, uses FROM invites WHERE id = ?",
        )
        .bind(&id[..])
        .fetch_optional(&mut *tx)
        .await?;
        let Some((created_at, expires_at, max_uses, uses)) = row else {
            return Ok(Redemption::Unknown);
        };
        let removed: Option<(i64,)> =
            sqlx::query_as("SELECT removed_at FROM removed_contacts WHERE user_id = ?")
                .bind(user)
                .fetch_optional(&mut *tx)
                .await?;
        if removed.is_some_and(|(at,)| created_at <= at) {
            return Ok(Redemption::Removed);
        }
        let (already,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM invite_redemptions WHERE invite_id = ? AND user_id = ?",
        )
        .bind(&id[..])
        .bind(user)
        .fetch_one(&mut *tx)
        .await?;
        if already > 0 {
            return Ok(Redemption::Accepted);
        }
        if now.as_millis() >= expires_at {
            return Ok(Redemption::Expired);
        }
        if uses >= max_uses {
            return Ok(Redemption::Used);
        }
        sqlx::query("UPDATE invites SET uses = uses + 1 WHERE id = ?")
            .bind(&id[..])
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO invite_redemptions (invite_id, user_id, redeemed_at) VALUES (?, ?, ?)",
        )
        .bind(&id[..])
        .bind(user)
        .bind(now.as_millis())
        .execute(&mut *tx)
        .await?;
        // Invited again after a removal: welcome back.
        sqlx::query("DELETE FROM removed_contacts WHERE user_id = ?")
            .bind(user)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Redemption::Accepted)
    }

    /// Records that `user` was removed as a contact now: invites issued until now no longer
    /// let it back in.
    pub async fn record_removal(&self, user: &str, now: Timestamp) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO removed_contacts (user_id, removed_at) VALUES (?, ?) \
             ON CONFLICT (user_id) DO UPDATE SET removed_at = excluded.removed_at",
        )
        .bind(user)
        .bind(now.as_millis())
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Remembers an invite to redeem later (replacing an older one from the same inviter).
    pub async fn add_pending_contact(
        &self,
        inviter: &str,
        link: &str,
        name: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = Timestamp::now().as_millis();
        sqlx::query(
            "INSERT OR REPLACE INTO pending_contacts (inviter, link, name, created_at, next_attempt_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(inviter)
        .bind(link)
        .bind(name)
        .bind(now)
        .bind(now)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Pending invites due for another attempt.
    pub async fn due_pending_contacts(
        &self,
        now: Timestamp,
    ) -> Result<Vec<PendingContact>, StoreError> {
        let rows: Vec<PendingRow> = sqlx::query_as(
            "SELECT inviter, link, name, attempts, last_error FROM pending_contacts \
             WHERE next_attempt_at <= ? ORDER BY next_attempt_at LIMIT 64",
        )
        .bind(now.as_millis())
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(inviter, link, name, attempts, last_error)| PendingContact {
                    inviter,
                    link,
                    name,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    last_error,
                },
            )
            .collect())
    }

    /// Every pending invite.
    pub async fn pending_contacts(&self) -> Result<Vec<PendingContact>, StoreError> {
        self.due_pending_contacts(Timestamp::from_millis(i64::MAX))
            .await
    }

    /// Records a failed attempt and when to try again.
    pub async fn retry_pending_contact(
        &self,
        inviter: &str,
        error: &str,
        next: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE pending_contacts SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? \
             WHERE inviter = ?",
        )
        .bind(error)
        .bind(next.as_millis())
        .bind(inviter)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Forgets a pending invite (redeemed, or failed for good).
    pub async fn remove_pending_contact(&self, inviter: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM pending_contacts WHERE inviter = ?")
            .bind(inviter)
            .execute(self.writer())
            .await?;
        Ok(())
    }
}

/// `(inviter, link, name, attempts, last_error)` as read from `pending_contacts`.
type PendingRow = (String, String, Option<String>, i64, Option<String>);
