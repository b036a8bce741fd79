//! What the node remembers about plugins: the operator's settings for each (table `plugins`)
//! and each plugin's private key-value data (table `plugin_kv`, behind the `kv` capability).

use serde::{Deserialize, Serialize};
use volli_core::Timestamp;

use crate::{Db, StoreError};

/// The operator's settings for one plugin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecord {
    /// The plugin's name.
    pub name: String,
    /// Shipped with the node (its component is not stored).
    pub builtin: bool,
    /// Whether it runs.
    pub enabled: bool,
    /// Granted capability names.
    pub grants: Vec<String>,
    /// Configuration set through the API (a JSON object).
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Hosts the `http` capability may reach.
    pub http_allow: Vec<String>,
    /// BLAKE3 of the installed component.
    pub hash: Option<String>,
    /// When it was installed or first configured.
    pub installed_at: Timestamp,
}

type Row = (
    String,
    bool,
    bool,
    String,
    String,
    String,
    Option<String>,
    i64,
);

fn from_row(row: Row) -> Result<PluginRecord, StoreError> {
    let bad = |e: serde_json::Error| StoreError::Document(format!("plugins table: {e}"));
    Ok(PluginRecord {
        name: row.0,
        builtin: row.1,
        enabled: row.2,
        grants: serde_json::from_str(&row.3).map_err(bad)?,
        config: serde_json::from_str(&row.4).map_err(bad)?,
        http_allow: serde_json::from_str(&row.5).map_err(bad)?,
        hash: row.6,
        installed_at: Timestamp::from_millis(row.7),
    })
}

impl Db {
    /// Every plugin record, by name.
    pub async fn plugins(&self) -> Result<Vec<PluginRecord>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT name, builtin, enabled, grants, config, http_allow, hash, installed_at \
             FROM plugins ORDER BY name",
        )
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(from_row).collect()
    }

    /// Inserts or replaces a plugin record.
    pub async fn put_plugin(&self, record: &PluginRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO plugins (name, builtin, enabled, grants, config, http_allow, hash, installed_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET builtin = excluded.builtin, enabled = excluded.enabled, \
             grants = excluded.grants, config = excluded.config, http_allow = excluded.http_allow, \
             hash = excluded.hash",
        )
        .bind(&record.name)
        .bind(record.builtin)
        .bind(record.enabled)
        .bind(to_json(&record.grants))
        .bind(to_json(&record.config))
        .bind(to_json(&record.http_allow))
        .bind(&record.hash)
        .bind(record.installed_at.as_millis())
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Forgets a plugin and its key-value data.
    pub async fn delete_plugin(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.writer().begin().await?;
        sqlx::query("DELETE FROM plugins WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM plugin_kv WHERE plugin = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A plugin's value under `key`.
    pub async fn plugin_kv_get(
        &self,
        plugin: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT value FROM plugin_kv WHERE plugin = ? AND key = ?")
                .bind(plugin)
                .bind(key)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|r| r.0))
    }

    /// Stores a plugin's value unless its keys and values would then exceed `quota` bytes;
    /// returns `false` (and changes nothing) in that case.
    pub async fn plugin_kv_set(
        &self,
        plugin: &str,
        key: &str,
        value: &[u8],
        quota: u64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer().begin().await?;
        let (used,): (i64,) = sqlx::query_as(
            "SELECT COALESCE(SUM(length(key) + length(value)), 0) FROM plugin_kv \
             WHERE plugin = ? AND key != ?",
        )
        .bind(plugin)
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
        let after = u64::try_from(used).unwrap_or(0) + (key.len() + value.len()) as u64;
        if after > quota {
            return Ok(false);
        }
        sqlx::query("INSERT OR REPLACE INTO plugin_kv (plugin, key, value) VALUES (?, ?, ?)")
            .bind(plugin)
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Removes a plugin's key.
    pub async fn plugin_kv_delete(&self, plugin: &str, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM plugin_kv WHERE plugin = ? AND key = ?")
            .bind(plugin)
            .bind(key)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// A plugin's keys starting with `prefix`, sorted, at most `limit`.
    pub async fn plugin_kv_keys(
        &self,
        plugin: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        // Range scan on the primary key: keys >= prefix and < prefix + U+10FFFF.
        let upper = format!("{prefix}\u{10FFFF}");
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT key FROM plugin_kv WHERE plugin = ? AND key >= ? AND key < ? ORDER BY key LIMIT ?",
        )
        .bind(plugin)
        .bind(prefix)
        .bind(upper)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }
}

/// JSON text of a record field; these types always serialize.
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
