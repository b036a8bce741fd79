//! Client tokens: a name, the scopes it may use and the hash of its token.

use volli_core::Timestamp;

use crate::{Db, StoreError};

/// A stored client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRow {
    /// Its id.
    pub id: String,
    /// The name the user gave it.
    pub name: String,
    /// Its scopes, comma-separated.
    pub scopes: String,
    /// The BLAKE3 hash of its token.
    pub token_hash: [u8; 32],
    /// When it was created.
    pub created_at: Timestamp,
    /// When its token was last used (to the minute).
    pub last_used_at: Option<Timestamp>,
}

type Row = (String, String, String, Vec<u8>, i64, Option<i64>);

fn row((id, name, scopes, hash, created_at, last_used_at): Row) -> Option<ClientRow> {
    Some(ClientRow {
        id,
        name,
        scopes,
        token_hash: hash.try_into().ok()?,
        created_at: Timestamp::from_millis(created_at),
        last_used_at: last_used_at.map(Timestamp::from_millis),
    })
}

impl Db {
    /// Saves a new client (durably, before its token is shown).
    pub async fn create_client(&self, client: &ClientRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO clients (id, name, scopes, token_hash, created_at, last_used_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&client.id)
        .bind(&client.name)
        .bind(&client.scopes)
        .bind(&client.token_hash[..])
        .bind(client.created_at.as_millis())
        .bind(client.last_used_at.map(Timestamp::as_millis))
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Every client, oldest first.
    pub async fn clients(&self) -> Result<Vec<ClientRow>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, name, scopes, token_hash, created_at, last_used_at FROM clients \
             ORDER BY created_at, id",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().filter_map(row).collect())
    }

    /// Deletes a client; false if there was none with that id.
    pub async fn delete_client(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM clients WHERE id = ?")
            .bind(id)
            .execute(self.writer())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records when a client's token was last used.
    pub async fn touch_client(&self, id: &str, at: Timestamp) -> Result<(), StoreError> {
        sqlx::query("UPDATE clients SET last_used_at = ? WHERE id = ?")
            .bind(at.as_millis())
            .bind(id)
            .execute(self.writer())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clients_are_saved_listed_touched_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("volli.db")).await.unwrap();
        let client = ClientRow {
            id: "c1".into(),
            name: "phone".into(),
            scopes: "read,messages".into(),
            token_hash: [7; 32],
            created_at: Timestamp::from_millis(1_000),
            last_used_at: None,
        };
        db.create_client(&client).await.unwrap();
        assert!(db.create_client(&client).await.is_err(), "same id twice");
        db.touch_client("c1", Timestamp::from_millis(5_000))
            .await
            .unwrap();
        let listed = db.clients().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].last_used_at, Some(Timestamp::from_millis(5_000)));
        assert_eq!(listed[0].token_hash, [7; 32]);
        assert!(db.delete_client("c1").await.unwrap());
        assert!(!db.delete_client("c1").await.unwrap());
        assert!(db.clients().await.unwrap().is_empty());
    }
}
