//! Web Push: the VAPID key and the subscriptions.

use volli_core::Timestamp;

use crate::{Db, StoreError};

/// A stored push subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushSubscriptionRow {
    /// Its id.
    pub id: String,
    /// The client that registered it, if a client did.
    pub client_id: Option<String>,
    /// The push service's endpoint URL.
    pub endpoint: String,
    /// The subscription's P-256 public key (uncompressed point).
    pub p256dh: Vec<u8>,
    /// Its 16-byte authentication secret.
    pub auth: Vec<u8>,
    /// Whether pushes may carry message text.
    pub include_text: bool,
    /// When it was registered.
    pub created_at: Timestamp,
}

type Row = (String, Option<String>, String, Vec<u8>, Vec<u8>, bool, i64);

impl Db {
    /// The VAPID private key, created with `make` (and saved) the first time.
    pub async fn vapid_key(&self, make: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let known: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT private_key FROM push_vapid WHERE id = 1")
                .fetch_optional(self.pool())
                .await?;
        if let Some((key,)) = known {
            return Ok(key);
        }
        let key = make();
        sqlx::query(
            "INSERT INTO push_vapid (id, private_key) VALUES (1, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&key)
        .execute(self.writer())
        .await?;
        let (key,): (Vec<u8>,) = sqlx::query_as("SELECT private_key FROM push_vapid WHERE id = 1")
            .fetch_one(self.writer())
            .await?;
        Ok(key)
    }

    /// Saves a subscription; one with the same endpoint is replaced (a browser that
    /// subscribes again). Returns the id it is saved under.
    pub async fn put_push_subscription(
        &self,
        sub: &PushSubscriptionRow,
    ) -> Result<String, StoreError> {
        let (id,): (String,) = sqlx::query_as(
            "INSERT INTO push_subscriptions \
             (id, client_id, endpoint, p256dh, auth, include_text, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (endpoint) DO UPDATE SET client_id = excluded.client_id, \
             p256dh = excluded.p256dh, auth = excluded.auth, include_text = excluded.include_text \
             RETURNING id",
        )
        .bind(&sub.id)
        .bind(&sub.client_id)
        .bind(&sub.endpoint)
        .bind(&sub.p256dh)
        .bind(&sub.auth)
        .bind(sub.include_text)
        .bind(sub.created_at.as_millis())
        .fetch_one(self.writer())
        .await?;
        Ok(id)
    }

    /// Every subscription, oldest first.
    pub async fn push_subscriptions(&self) -> Result<Vec<PushSubscriptionRow>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, client_id, endpoint, p256dh, auth, include_text, created_at \
             FROM push_subscriptions ORDER BY created_at, id",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, client_id, endpoint, p256dh, auth, include_text, created_at)| {
                    PushSubscriptionRow {
                        id,
                        client_id,
                        endpoint,
                        p256dh,
                        auth,
                        include_text,
                        created_at: Timestamp::from_millis(created_at),
                    }
                },
            )
            .collect())
    }

    /// Deletes a subscription; false if there was none.
    pub async fn delete_push_subscription(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM push_subscriptions WHERE id = ?")
            .bind(id)
            .execute(self.writer())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes the subscriptions a client registered.
    pub async fn delete_push_subscriptions_of(&self, client: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM push_subscriptions WHERE client_id = ?")
            .bind(client)
            .execute(self.writer())
            .await?;
        Ok(done.rows_affected())
    }
}
