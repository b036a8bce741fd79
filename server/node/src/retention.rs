//! Retention: how long messages are kept. A default rule and rules per conversation, each
//! "keep for N days" and/or "keep the last N"; a message either rule lets go is deleted.
//!
//! The rules live in the vault's settings (key `retention`), so every device of the user has
//! the same ones, and each applies them itself: deletions are the vault's ordinary deletions
//! (a flag that syncs, the text gone from the index at once and from the stored history at
//! the next compaction), so two devices deleting the same message agree. Rules are applied
//! at start, when they change (here or, through sync, on another device), and every hour;
//! then free database pages are given back to the file system. See ADR 0012.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use utoipa::ToSchema;
use volli_core::{Timestamp, UserId};
use volli_store::{Db, Vault};

use crate::events::{Event, EventBus, Subscription};
use crate::messaging::{DELETE_BATCH, Messaging, MessagingError};

/// The settings key the rules are kept under.
pub const SETTING: &str = "retention";
/// How often the rules are applied when nothing changes.
const PASS_EVERY: Duration = Duration::from_secs(3600);
/// Longest "keep for N days".
pub const MAX_DAYS: u32 = 36_500;
/// Largest "keep the last N".
pub const MAX_KEEP_LAST: u64 = 100_000_000;
/// Most conversations with a rule of their own.
pub const MAX_OVERRIDES: usize = 10_000;

/// One rule. Empty (`{}`) keeps everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Delete messages sent more than this many days ago (1 to 36500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    /// Keep only this many of the newest messages of each conversation (1 to 100000000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u64>,
}

impl Rule {
    fn keeps_everything(&self) -> bool {
        self.days.is_none() && self.keep_last.is_none()
    }
}

/// The retention rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// For every conversation without a rule of its own.
    #[serde(default)]
    pub default: Rule,
    /// Rules of single conversations, by the contact's user id; each replaces the default
    /// for that conversation (`{}` keeps everything).
    #[serde(default)]
    pub conversations: BTreeMap<String, Rule>,
}

impl Rules {
    /// Checks the rules; the error says what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.conversations.len() > MAX_OVERRIDES {
            return Err(format!(
                "at most {MAX_OVERRIDES} conversations may have rules of their own"
            ));
        }
        let rule = |name: &str, r: &Rule| -> Result<(), String> {
            if r.days.is_some_and(|d| d == 0 || d > MAX_DAYS) {
                return Err(format!("{name}: `days` is 1 to {MAX_DAYS}"));
            }
            if r.keep_last.is_some_and(|n| n == 0 || n > MAX_KEEP_LAST) {
                return Err(format!("{name}: `keep_last` is 1 to {MAX_KEEP_LAST}"));
            }
            Ok(())
        };
        rule("default", &self.default)?;
        for (user, r) in &self.conversations {
            if crate::contacts::Contacts::parse_user(user).is_none() {
                return Err(format!("{user:?} is not a user id"));
            }
            rule(user, r)?;
        }
        Ok(())
    }

    /// The rule for the conversation with `with`.
    pub fn for_conversation(&self, with: UserId) -> Rule {
        self.conversations
            .get(&with.to_string())
            .copied()
            .unwrap_or(self.default)
    }
}

/// The retention service. Cheap to clone.
#[derive(Clone)]
pub struct Retention {
    inner: Arc<Inner>,
}

struct Inner {
    vault: Vault,
    db: Db,
    messaging: Messaging,
    wake: Notify,
}

/// Why rules could not be set.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The rules are not valid.
    #[error("{0}")]
    Invalid(String),
    /// Storage failed.
    #[error("storage: {0}")]
    Store(#[from] volli_store::StoreError),
}

impl Retention {
    /// The service over the node's vault and messaging.
    pub fn new(vault: Vault, db: Db, messaging: Messaging) -> Self {
        Self {
            inner: Arc::new(Inner {
                vault,
                db,
                messaging,
                wake: Notify::new(),
            }),
        }
    }

    /// The rules in force (stored rules that do not parse count as none, with a warning).
    pub async fn rules(&self) -> Result<Rules, volli_store::StoreError> {
        let Some(value) = self.inner.vault.setting(SETTING).await? else {
            return Ok(Rules::default());
        };
        match serde_json::from_value::<Rules>(value) {
            Ok(rules) if rules.check().is_ok() => Ok(rules),
            _ => {
                tracing::warn!("the stored retention rules are not valid; keeping every message");
                Ok(Rules::default())
            }
        }
    }

    /// Replaces the rules (on every device of the user) and applies them.
    pub async fn set_rules(&self, rules: Rules) -> Result<Rules, RetentionError> {
        rules.check().map_err(RetentionError::Invalid)?;
        let value =
            serde_json::to_value(&rules).map_err(|e| RetentionError::Invalid(e.to_string()))?;
        self.inner.vault.set_setting(SETTING, &value).await?;
        self.inner.wake.notify_one();
        Ok(rules)
    }

    /// Applies `rules` now: deletes what they let go, then gives free pages back.
    /// Returns how many messages were deleted.
    async fn apply_rules(&self, rules: &Rules) -> Result<usize, MessagingError> {
        let now = Timestamp::now().as_millis();
        let mut deleted = 0;
        for with in self.inner.vault.conversations().await? {
            let rule = rules.for_conversation(with);
            if rule.keeps_everything() {
                continue;
            }
            let before = rule
                .days
                .map(|d| Timestamp::from_millis(now.saturating_sub(i64::from(d) * 86_400_000)));
            loop {
                let ids = self
                    .inner
                    .vault
                    .expired_messages(with, before, rule.keep_last, DELETE_BATCH)
                    .await?;
                if ids.is_empty() {
                    break;
                }
                deleted += self.inner.messaging.delete_in(with, ids).await?;
            }
        }
        if deleted > 0 {
            let freed = self.inner.db.reclaim().await.unwrap_or(0);
            tracing::info!(deleted, freed_bytes = freed, "retention: messages deleted");
        }
        Ok(deleted)
    }

    /// Applies the rules at start, whenever they change (here, or on another device: after
    /// a sync that changed them), and every hour.
    pub fn spawn(&self, events: &EventBus) {
        let this = self.clone();
        let mut events = events.subscribe();
        tokio::spawn(async move {
            let mut applied: Option<Rules> = None;
            let mut due = true;
            loop {
                let rules = this.rules().await.unwrap_or_default();
                if due || applied.as_ref() != Some(&rules) {
                    match this.apply_rules(&rules).await {
                        Ok(_) => applied = Some(rules),
                        Err(e) => {
                            tracing::warn!(error = %e, "retention could not be applied; retrying later");
                        }
                    }
                }
                due = tokio::select! {
                    () = this.inner.wake.notified() => true,
                    () = tokio::time::sleep(PASS_EVERY) => true,
                    () = synced(&mut events) => false,
                };
            }
        });
    }
}

/// Waits for the next sync with another device that changed something.
async fn synced(events: &mut Subscription) {
    loop {
        match events.next().await {
            Some(e) if matches!(*e, Event::SyncCompleted { .. }) => return,
            Some(_) => {}
            None => std::future::pending().await,
        }
    }
}
