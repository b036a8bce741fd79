//! Profile pictures (`avatars`): the user's own and its contacts', by user id, with the
//! BLAKE3 hash of their bytes. This module stores and reads them; it does not check that
//! the bytes are an image (the node does, before it stores or serves one).

use volli_core::Timestamp;

use crate::{Db, StoreError};

/// Largest picture kept.
pub const MAX_AVATAR_BYTES: usize = 256 * 1024;

/// A stored picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Avatar {
    /// The BLAKE3 hash of the bytes.
    pub hash: [u8; 32],
    /// Its media type.
    pub mime: String,
    /// The picture.
    pub bytes: Vec<u8>,
}

impl Db {
    /// Stores `user`'s picture, replacing the one it had. Refuses one over
    /// [`MAX_AVATAR_BYTES`].
    pub async fn put_avatar(
        &self,
        user: &str,
        mime: &str,
        bytes: &[u8],
    ) -> Result<[u8; 32], StoreError> {
        if bytes.len() > MAX_AVATAR_BYTES {
            return Err(StoreError::Document(format!(
                "a picture is at most {} KiB",
                MAX_AVATAR_BYTES >> 10
            )));
        }
        let hash = *blake3::hash(bytes).as_bytes();
        sqlx::query(
            "INSERT INTO avatars (user_id, hash, mime, bytes, updated_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (user_id) DO UPDATE SET hash = excluded.hash, mime = excluded.mime, \
             bytes = excluded.bytes, updated_at = excluded.updated_at",
        )
        .bind(user)
        .bind(&hash[..])
        .bind(mime)
        .bind(bytes)
        .bind(Timestamp::now().as_millis())
        .execute(self.writer())
        .await?;
        Ok(hash)
    }

    /// `user`'s picture, if this node holds one.
    pub async fn avatar(&self, user: &str) -> Result<Option<Avatar>, StoreError> {
        let row: Option<(Vec<u8>, String, Vec<u8>)> =
            sqlx::query_as("SELECT hash, mime, bytes FROM avatars WHERE user_id = ?")
                .bind(user)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.and_then(|(hash, mime, bytes)| {
            Some(Avatar {
                hash: hash.try_into().ok()?,
                mime,
                bytes,
            })
        }))
    }

    /// The hash of `user`'s picture, if this node holds one.
    pub async fn avatar_hash(&self, user: &str) -> Result<Option<[u8; 32]>, StoreError> {
        let row: Option<(Vec<u8>,)> = sqlx::query_as("SELECT hash FROM avatars WHERE user_id = ?")
            .bind(user)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.and_then(|(h,)| h.try_into().ok()))
    }

    /// Forgets `user`'s picture; whether there was one.
    pub async fn delete_avatar(&self, user: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM avatars WHERE user_id = ?")
            .bind(user)
            .execute(self.writer())
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
