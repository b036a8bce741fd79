//! Volli's persistence: one SQLite database (through sqlx, with the migrations in this crate)
//! and the vault, Loro CRDT documents owned by a single actor with an SQLite index of every
//! message.
//!
//! Everything a client was told is saved has been written with `synchronous=FULL` before the
//! call returns. This crate knows nothing of HTTP, libp2p or plugins.
#![warn(missing_docs)]

pub mod avatars;
pub mod backups;
pub mod clients;
mod db;
pub mod held_files;
pub mod invites;
pub mod messaging;
pub mod mls;
pub mod plugins;
pub mod push;
pub mod search;
pub mod transfers;
pub mod vault;

use std::path::Path;

pub use backups::{HeldStats, PutOutcome};
pub use clients::ClientRow;
pub use db::{Db, MMAP_SIZE};
pub use held_files::{FileHold, HeldFileRow};
pub use invites::{PendingContact, Redemption};
pub use messaging::{Held, HeldEnvelope, OutboxChange, OutboxEntry, RelayStats};
pub use mls::{HeldPackage, MlsChange, PendingMail};
pub use plugins::PluginRecord;
pub use push::PushSubscriptionRow;
pub use transfers::{TransferMember, TransferRow};
pub use vault::{DocId, Imported, Vault, VaultDelta, VaultOptions, VaultStats, VaultVersion};

/// A failure of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite refused or failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// SQLite, called directly, refused or failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A migration could not be applied.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The Loro document refused an operation or an import.
    #[error("vault document error: {0}")]
    Document(String),
    /// Another device sent changes this vault does not take (they would undo what only the
    /// user key can sign, or break a bound); nothing of that import was kept.
    #[error("refused from another device: {0}")]
    Refused(String),
    /// The vault actor, which also commits the outbox, has stopped (the node is shutting
    /// down, or it failed).
    #[error("the store is closed")]
    Closed,
    /// The database file or its directory could not be used.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<loro::LoroError> for StoreError {
    fn from(e: loro::LoroError) -> Self {
        Self::Document(e.to_string())
    }
}

impl From<loro::LoroEncodeError> for StoreError {
    fn from(e: loro::LoroEncodeError) -> Self {
        Self::Document(e.to_string())
    }
}

/// The node's storage: the database and the vault that lives in it.
#[derive(Clone)]
pub struct Store {
    db: Db,
    vault: Vault,
}

impl Store {
    /// Opens (creating if needed) `volli.db` in `dir`, migrates it and starts the vault actor.
    pub async fn open(dir: &Path, vault: VaultOptions) -> Result<Self, StoreError> {
        let db = Db::open(&dir.join("volli.db")).await?;
        let vault = Vault::open(db.clone(), vault).await?;
        Ok(Self { db, vault })
    }

    /// Like [`Self::open`], for the node of `user`: data of another user (before the node
    /// joined this one as a new device) is dropped first ([`Db::claim_for`]).
    pub async fn open_for(dir: &Path, vault: VaultOptions, user: &str) -> Result<Self, StoreError> {
        let db = Db::open(&dir.join("volli.db")).await?;
        if db.claim_for(user).await? {
            tracing::info!(%user, "this node's data now belongs to the user it joined");
        }
        let vault = Vault::open(db.clone(), vault).await?;
        Ok(Self { db, vault })
    }

    /// The vault handle.
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The database handle.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Flushes and stops the vault, then closes the database.
    pub async fn close(self) {
        self.vault.close().await;
        self.db.close().await;
    }
}
