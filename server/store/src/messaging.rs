//! The outbox (messages not yet acknowledged by the recipient) and the relay mailbox
//! (envelopes this node holds for its user's friends). Both are plain SQLite tables written
//! with `synchronous=FULL`: a message is in the outbox before the client hears 202, and an
//! envelope is on disk before the depositor hears it is held.

use volli_core::Timestamp;

use crate::{Db, StoreError};

/// A message waiting for its recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The message id.
    pub id: [u8; 16],
    /// The recipient's user id.
    pub recipient: String,
    /// The sealed envelope.
    pub envelope: Vec<u8>,
    /// The text, so the conversation can be rebuilt if the vault write was lost.
    pub body: String,
    /// When it was sent.
    pub sent_at: Timestamp,
    /// When it stops being retried and is marked failed.
    pub expires_at: Timestamp,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Whether at least one relay holds it.
    pub relayed: bool,
    /// The recipient's device it is for, when only that device may take it.
    pub device: Option<String>,
    /// Whether it is handshake mail of a conversation on MLS (a commit, a proposal, a
    /// Welcome): delivered like a message, but not one of the conversation's.
    pub handshake: bool,
    /// The group it is mail of (hex id), for a group conversation.
    pub group: Option<String>,
    /// What it carries when that is not a plain text (a reply, a reaction, an edit, a read
    /// receipt…), encoded: sealed again from this when the recipient asks.
    pub content: Option<Vec<u8>>,
}

/// A change to the outbox. Changes are committed by the vault actor together with the vault
/// writes of the same batch ([`crate::Vault::outbox`]): one transaction, one fsync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboxChange {
    /// Queue a sealed message; queuing the same id twice keeps the first.
    Add(OutboxEntry),
    /// Record a failed attempt and when to try next; `relayed` is sticky once set.
    Retry {
        /// The message.
        id: [u8; 16],
        /// When it is due again.
        next: Timestamp,
        /// Whether a relay now holds it.
        relayed: bool,
    },
    /// Forget a message (delivered, refused or expired).
    Remove([u8; 16]),
    /// Replace a message's sealed mail (its content sealed again, under the same id).
    Reseal {
        /// The message.
        id: [u8; 16],
        /// The new mail.
        envelope: Vec<u8>,
    },
}

/// `(id, recipient, envelope, body, sent_at, expires_at, attempts, relayed, device,
/// handshake, group, content)`.
type OutboxRow = (
    Vec<u8>,
    String,
    Vec<u8>,
    String,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    bool,
    Option<String>,
    Option<Vec<u8>>,
);

fn outbox_entry(row: OutboxRow) -> Option<OutboxEntry> {
    let (
        id,
        recipient,
        envelope,
        body,
        sent_at,
        expires_at,
        attempts,
        relayed,
        device,
        handshake,
        group,
        content,
    ) = row;
    Some(OutboxEntry {
        id: id.try_into().ok()?,
        recipient,
        envelope,
        body,
        sent_at: Timestamp::from_millis(sent_at),
        expires_at: Timestamp::from_millis(expires_at),
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        relayed: relayed != 0,
        device,
        handshake,
        group,
        content,
    })
}

macro_rules! select_outbox {
    ($rest:literal) => {
        concat!(
            "SELECT id, recipient, envelope, body, sent_at, expires_at, attempts, relayed, \
             device, handshake, grp, content FROM outbox ",
            $rest
        )
    };
}

/// An envelope held for someone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldEnvelope {
    /// BLAKE3 of the envelope.
    pub id: [u8; 32],
    /// The encoded envelope.
    pub envelope: Vec<u8>,
}

/// How much is held, for one party or in total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Envelopes.
    pub envelopes: u64,
    /// Bytes.
    pub bytes: u64,
}

/// What the relay mailbox holds in total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Envelopes held.
    pub envelopes: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Distinct recipients.
    pub recipients: u64,
    /// When the first of them expires.
    pub next_expiry: Option<Timestamp>,
}

/// Splits rows fetched with `LIMIT limit + 1` into the page and whether more remain.
fn page<T>(mut rows: Vec<T>, limit: u32) -> (Vec<T>, bool) {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    (rows, more)
}

fn held((envelopes, bytes): (i64, i64)) -> Held {
    Held {
        envelopes: u64::try_from(envelopes).unwrap_or(0),
        bytes: u64::try_from(bytes).unwrap_or(0),
    }
}

impl Db {
    /// Records that group message `message` reached `status` (a rank, only ever raised) with
    /// member `user`.
    pub async fn group_receipt(
        &self,
        message: &[u8; 16],
        user: &str,
        status: i64,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.group_receipts_at(message, &[user], status, at).await
    }

    /// [`Self::group_receipt`] for many members in one transaction (one write to disk).
    pub async fn group_receipts_at(
        &self,
        message: &[u8; 16],
        users: &[&str],
        status: i64,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer().begin().await?;
        for user in users {
            sqlx::query(
                "INSERT INTO group_receipts (message, user_id, status, at) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (message, user_id) DO UPDATE SET status = excluded.status, \
                 at = excluded.at WHERE excluded.status > group_receipts.status",
            )
            .bind(&message[..])
            .bind(user)
            .bind(status)
            .bind(at.as_millis())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// What each contact's node said it reads (`user_id`, feature bits).
    pub async fn contact_features(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT user_id, features FROM contact_features LIMIT 100000")
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Records what `user`'s node reads.
    pub async fn set_contact_features(&self, user: &str, features: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO contact_features (user_id, features, updated_at) VALUES (?, ?, ?) \
             ON CONFLICT (user_id) DO UPDATE SET features = excluded.features, \
             updated_at = excluded.updated_at",
        )
        .bind(user)
        .bind(features)
        .bind(Timestamp::now().as_millis())
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Each member's status (rank) for group message `message`.
    pub async fn group_receipts(
        &self,
        message: &[u8; 16],
    ) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT user_id, status FROM group_receipts WHERE message = ? ORDER BY user_id",
        )
        .bind(&message[..])
        .fetch_all(self.pool())
        .await?)
    }

    /// Outbox rows of group message `message` still waiting (one per member not reached).
    pub async fn group_outbox_left(&self, ids: &[[u8; 16]]) -> Result<usize, StoreError> {
        let mut left = 0;
        for id in ids {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE id = ?")
                .bind(&id[..])
                .fetch_one(self.pool())
                .await?;
            left += usize::try_from(n).unwrap_or(0);
        }
        Ok(left)
    }

    /// One queued message.
    pub async fn outbox_get(&self, id: &[u8; 16]) -> Result<Option<OutboxEntry>, StoreError> {
        let row: Option<OutboxRow> = sqlx::query_as(select_outbox!("WHERE id = ?"))
            .bind(&id[..])
            .fetch_optional(self.pool())
            .await?;
        Ok(row.and_then(outbox_entry))
    }

    /// Messages due for another attempt, oldest first.
    pub async fn outbox_due(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows: Vec<OutboxRow> = sqlx::query_as(select_outbox!(
            "WHERE next_attempt_at <= ? ORDER BY next_attempt_at, sent_at LIMIT ?"
        ))
        .bind(now.as_millis())
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().filter_map(outbox_entry).collect())
    }

    /// Group mail this node carries for other members (and its own group handshake mail,
    /// which is little): rows and bytes.
    pub async fn outbox_carried(&self) -> Result<(i64, i64), StoreError> {
        Ok(sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(envelope)), 0) FROM outbox \
             WHERE handshake = 1 AND grp IS NOT NULL",
        )
        .fetch_one(self.pool())
        .await?)
    }

    /// When the outbox's next message is due, if it holds any.
    pub async fn outbox_next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let (next,): (Option<i64>,) = sqlx::query_as("SELECT MIN(next_attempt_at) FROM outbox")
            .fetch_one(self.pool())
            .await?;
        Ok(next.map(Timestamp::from_millis))
    }

    /// Every queued message (for reconciliation at start).
    pub async fn outbox_all(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows: Vec<OutboxRow> = sqlx::query_as(select_outbox!("ORDER BY sent_at"))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.into_iter().filter_map(outbox_entry).collect())
    }

    /// Makes due now every message for `contact` and every message no relay holds yet: a
    /// device of `contact` appeared, and `contact` may be a relay for other recipients.
    pub async fn outbox_wake(&self, contact: &str, now: Timestamp) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET next_attempt_at = ? \
             WHERE (recipient = ? OR relayed = 0) AND next_attempt_at > ?",
        )
        .bind(now.as_millis())
        .bind(contact)
        .bind(now.as_millis())
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected())
    }

    /// Holds an envelope (for one device of the recipient, when `device` says which);
    /// depositing the same one again changes nothing and succeeds.
    #[allow(clippy::too_many_arguments)] // one row's columns
    pub async fn relay_hold(
        &self,
        id: &[u8; 32],
        recipient: &str,
        device: Option<&str>,
        depositor: &str,
        envelope: &[u8],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT OR IGNORE INTO relay_held \
             (id, recipient, device, depositor, envelope, size, stored_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id[..])
        .bind(recipient)
        .bind(device)
        .bind(depositor)
        .bind(envelope)
        .bind(i64::try_from(envelope.len()).unwrap_or(i64::MAX))
        .bind(now.as_millis())
        .bind(expires_at.as_millis())
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Whether an envelope is held, and until when.
    pub async fn relay_expiry(&self, id: &[u8; 32]) -> Result<Option<Timestamp>, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT expires_at FROM relay_held WHERE id = ?")
            .bind(&id[..])
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|(t,)| Timestamp::from_millis(t)))
    }

    /// What is held from `depositor`, for `recipient`, and in total.
    pub async fn relay_usage(
        &self,
        depositor: &str,
        recipient: &str,
    ) -> Result<(Held, Held, Held), StoreError> {
        macro_rules! sum {
            ($rest:literal) => {
                concat!(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM relay_held",
                    $rest
                )
            };
        }
        let by_depositor: (i64, i64) = sqlx::query_as(sum!(" WHERE depositor = ?"))
            .bind(depositor)
            .fetch_one(self.pool())
            .await?;
        let by_recipient: (i64, i64) = sqlx::query_as(sum!(" WHERE recipient = ?"))
            .bind(recipient)
            .fetch_one(self.pool())
            .await?;
        let total: (i64, i64) = sqlx::query_as(sum!("")).fetch_one(self.pool()).await?;
        Ok((held(by_depositor), held(by_recipient), held(total)))
    }

    /// Envelopes held for `recipient` that its device `device` may take (those for the
    /// user, and those for that device), oldest first, after `after` (when it was stored,
    /// its id): at most `limit` of them and, past the first, no more than `max_bytes` in
    /// all; and where the next page starts, if more remain.
    #[allow(clippy::too_many_arguments)] // a query's parameters
    pub async fn relay_for(
        &self,
        recipient: &str,
        device: &str,
        now: Timestamp,
        limit: u32,
        max_bytes: usize,
        after: Option<(i64, &[u8])>,
    ) -> Result<(Vec<HeldEnvelope>, Option<(i64, Vec<u8>)>), StoreError> {
        let (at, id) = after.unwrap_or((i64::MIN, &[]));
        let rows: Vec<(Vec<u8>, Vec<u8>, i64)> = sqlx::query_as(
            "SELECT id, envelope, stored_at FROM relay_held \
             WHERE recipient = ? AND (device IS NULL OR device = ?) AND expires_at > ? \
             AND (stored_at, id) > (?, ?) ORDER BY stored_at, id LIMIT ?",
        )
        .bind(recipient)
        .bind(device)
        .bind(now.as_millis())
        .bind(at)
        .bind(id)
        .bind(i64::from(limit) + 1)
        .fetch_all(self.pool())
        .await?;
        let (mut rows, mut more) = page(rows, limit);
        let mut total = 0;
        let fit = rows
            .iter()
            .take_while(|(_, envelope, _)| {
                total += envelope.len();
                total <= max_bytes
            })
            .count()
            .max(1);
        if fit < rows.len() {
            rows.truncate(fit);
            more = true;
        }
        let next = rows
            .last()
            .filter(|_| more)
            .map(|(id, _, at)| (*at, id.clone()));
        Ok((
            rows.into_iter()
                .filter_map(|(id, envelope, _)| {
                    Some(HeldEnvelope {
                        id: id.try_into().ok()?,
                        envelope,
                    })
                })
                .collect(),
            next,
        ))
    }

    /// Forgets everything held for or from `user`, and the receipts held for it (it is no
    /// longer a contact). Returns how many envelopes went.
    pub async fn relay_forget(&self, user: &str) -> Result<u64, StoreError> {
        let mut tx = self.writer().begin().await?;
        let done = sqlx::query("DELETE FROM relay_held WHERE recipient = ? OR depositor = ?")
            .bind(user)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM relay_receipts WHERE sender = ?")
            .bind(user)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Deletes envelopes `recipient`'s device `device` acknowledged (those it may take).
    /// Returns how many went.
    pub async fn relay_ack(
        &self,
        recipient: &str,
        device: &str,
        ids: &[[u8; 32]],
    ) -> Result<u64, StoreError> {
        let mut tx = self.writer().begin().await?;
        let mut removed = 0;
        for id in ids {
            removed += sqlx::query(
                "DELETE FROM relay_held WHERE id = ? AND recipient = ? \
                 AND (device IS NULL OR device = ?)",
            )
            .bind(&id[..])
            .bind(recipient)
            .bind(device)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// Deletes expired envelopes and receipts. Returns how many envelopes went.
    pub async fn relay_expire(&self, now: Timestamp) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM relay_held WHERE expires_at <= ?")
            .bind(now.as_millis())
            .execute(self.writer())
            .await?;
        sqlx::query("DELETE FROM relay_receipts WHERE expires_at <= ?")
            .bind(now.as_millis())
            .execute(self.writer())
            .await?;
        Ok(done.rows_affected())
    }

    /// Holds receipts for their senders: `(message id, sender, encoded receipt)`. A receipt
    /// already held is kept as it is.
    pub async fn relay_hold_receipts(
        &self,
        receipts: &[([u8; 16], String, Vec<u8>)],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer().begin().await?;
        for (id, sender, receipt) in receipts {
            sqlx::query(
                "INSERT OR IGNORE INTO relay_receipts \
                 (message_id, sender, receipt, stored_at, expires_at) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&id[..])
            .bind(sender)
            .bind(receipt)
            .bind(now.as_millis())
            .bind(expires_at.as_millis())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// How many receipts are held for `sender`.
    pub async fn relay_receipt_count(&self, sender: &str) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM relay_receipts WHERE sender = ?")
            .bind(sender)
            .fetch_one(self.pool())
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Receipts held for `sender`, oldest first, after `after`, at most `limit`; and where the
    /// next page starts, if more remain.
    pub async fn relay_receipts_for(
        &self,
        sender: &str,
        now: Timestamp,
        limit: u32,
        after: Option<(i64, &[u8])>,
    ) -> Result<(Vec<Vec<u8>>, Option<(i64, Vec<u8>)>), StoreError> {
        let (at, id) = after.unwrap_or((i64::MIN, &[]));
        let rows: Vec<(Vec<u8>, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT receipt, stored_at, message_id FROM relay_receipts \
             WHERE sender = ? AND expires_at > ? AND (stored_at, message_id) > (?, ?) \
             ORDER BY stored_at, message_id LIMIT ?",
        )
        .bind(sender)
        .bind(now.as_millis())
        .bind(at)
        .bind(id)
        .bind(i64::from(limit) + 1)
        .fetch_all(self.pool())
        .await?;
        let (rows, more) = page(rows, limit);
        let next = rows
            .last()
            .filter(|_| more)
            .map(|(_, at, id)| (*at, id.clone()));
        Ok((rows.into_iter().map(|(r, _, _)| r).collect(), next))
    }

    /// Deletes receipts `sender` acknowledged.
    pub async fn relay_ack_receipts(
        &self,
        sender: &str,
        ids: &[[u8; 16]],
    ) -> Result<(), StoreError> {
        let mut tx = self.writer().begin().await?;
        for id in ids {
            sqlx::query("DELETE FROM relay_receipts WHERE message_id = ? AND sender = ?")
                .bind(&id[..])
                .bind(sender)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Totals for `GET /v1/relay`.
    pub async fn relay_stats(&self) -> Result<RelayStats, StoreError> {
        let (envelopes, bytes, recipients, next): (i64, i64, i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COUNT(DISTINCT recipient), MIN(expires_at) \
             FROM relay_held",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(RelayStats {
            envelopes: u64::try_from(envelopes).unwrap_or(0),
            bytes: u64::try_from(bytes).unwrap_or(0),
            recipients: u64::try_from(recipients).unwrap_or(0),
            next_expiry: next.map(Timestamp::from_millis),
        })
    }

    /// When the first held envelope or receipt expires (what the sweeper waits for).
    pub async fn relay_next_expiry(&self) -> Result<Option<Timestamp>, StoreError> {
        let (next,): (Option<i64>,) = sqlx::query_as(
            "SELECT MIN(t) FROM (SELECT MIN(expires_at) AS t FROM relay_held \
             UNION ALL SELECT MIN(expires_at) FROM relay_receipts)",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(next.map(Timestamp::from_millis))
    }

    /// The relays this user designated, in order.
    pub async fn designated_relays(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT user_id FROM relays_designated ORDER BY position")
                .fetch_all(self.pool())
                .await?;
        Ok(rows.into_iter().map(|(u,)| u).collect())
    }

    /// Replaces the designated relays.
    pub async fn set_designated_relays(&self, relays: &[String]) -> Result<(), StoreError> {
        let mut tx = self.writer().begin().await?;
        sqlx::query("DELETE FROM relays_designated")
            .execute(&mut *tx)
            .await?;
        let now = Timestamp::now().as_millis();
        for (i, user) in relays.iter().enumerate() {
            sqlx::query(
                "INSERT INTO relays_designated (user_id, position, accepted_at) VALUES (?, ?, ?)",
            )
            .bind(user)
            .bind(i64::try_from(i).unwrap_or(i64::MAX))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Outbox rows added or removed by one statement at most (nine values per added row).
const OUTBOX_ROWS_PER_STATEMENT: usize = 64;

/// Applies outbox changes within the caller's transaction.
pub(crate) async fn apply_outbox(
    tx: &mut sqlx::SqliteConnection,
    changes: &[OutboxChange],
) -> Result<(), StoreError> {
    // Runs of additions and of removals go in one statement each: the same result as one
    // statement per change in order, with far fewer of them in a busy batch.
    let mut rest = changes;
    while let Some(first) = rest.first() {
        let run = rest
            .iter()
            .take_while(|c| std::mem::discriminant(*c) == std::mem::discriminant(first))
            .count()
            .min(OUTBOX_ROWS_PER_STATEMENT);
        let (part, next) = rest.split_at(run);
        rest = next;
        match first {
            OutboxChange::Add(_) => {
                let mut sql = String::from(
                    "INSERT OR IGNORE INTO outbox (id, recipient, envelope, body, sent_at, \
                     expires_at, next_attempt_at, device, handshake, grp, content) VALUES ",
                );
                for i in 0..part.len() {
                    sql.push_str(if i == 0 {
                        "(?,?,?,?,?,?,?,?,?,?,?)"
                    } else {
                        ",(?,?,?,?,?,?,?,?,?,?,?)"
                    });
                }
                // Only placeholders are formatted into the text; every value is bound.
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for change in part {
                    if let OutboxChange::Add(entry) = change {
                        query = query
                            .bind(&entry.id[..])
                            .bind(&entry.recipient)
                            .bind(&entry.envelope)
                            .bind(&entry.body)
                            .bind(entry.sent_at.as_millis())
                            .bind(entry.expires_at.as_millis())
                            .bind(entry.sent_at.as_millis())
                            .bind(&entry.device)
                            .bind(entry.handshake)
                            .bind(&entry.group)
                            .bind(&entry.content);
                    }
                }
                query.execute(&mut *tx).await?;
            }
            OutboxChange::Remove(_) => {
                let mut sql = String::from("DELETE FROM outbox WHERE id IN (");
                for i in 0..part.len() {
                    sql.push_str(if i == 0 { "?" } else { ",?" });
                }
                sql.push(')');
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for change in part {
                    if let OutboxChange::Remove(id) = change {
                        query = query.bind(&id[..]);
                    }
                }
                query.execute(&mut *tx).await?;
            }
            OutboxChange::Reseal { .. } => {
                for change in part {
                    if let OutboxChange::Reseal { id, envelope } = change {
                        sqlx::query("UPDATE outbox SET envelope = ? WHERE id = ?")
                            .bind(envelope.as_slice())
                            .bind(&id[..])
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            OutboxChange::Retry { .. } => {
                for change in part {
                    if let OutboxChange::Retry { id, next, relayed } = change {
                        sqlx::query(
                            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, \
                             relayed = MAX(relayed, ?) WHERE id = ?",
                        )
                        .bind(next.as_millis())
                        .bind(i64::from(*relayed))
                        .bind(&id[..])
                        .execute(&mut *tx)
                        .await?;
                    }
                }
            }
        }
    }
    Ok(())
}
