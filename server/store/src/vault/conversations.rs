//! Conversations: for each contact, a mergeable map of messages keyed by message id, so the
//! same message stored twice (a retry, a second relay, another device) is one message.
//! A message's status only moves forward: `queued` → `relayed` → `delivered`, or `failed`.

use loro::{LoroMap, LoroValue, ValueOrContainer};
use volli_core::{MessageId, Timestamp, UserId};

use super::Vault;
use super::doc::{VaultDoc, root};
use crate::StoreError;

/// Where a message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MessageStatus {
    /// Waiting for the recipient.
    Queued,
    /// Held by at least one friend's node.
    Relayed,
    /// The recipient's node acknowledged it.
    Delivered,
    /// Its time to live ran out undelivered.
    Failed,
    /// An incoming message.
    Received,
}

impl MessageStatus {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Relayed => "relayed",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Received => "received",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "relayed" => Self::Relayed,
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            "received" => Self::Received,
            _ => return None,
        })
    }

    /// Whether moving from `self` to `next` is progress.
    fn advances_to(self, next: Self) -> bool {
        matches!(
            (self, next),
            (Self::Queued, Self::Relayed | Self::Delivered | Self::Failed)
                | (Self::Relayed, Self::Delivered | Self::Failed)
        )
    }
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its id.
    pub id: MessageId,
    /// The sender.
    pub from: UserId,
    /// The recipient.
    pub to: UserId,
    /// The text.
    pub body: String,
    /// When it was sent (sender's clock).
    pub sent_at: Timestamp,
    /// Where it stands.
    pub status: MessageStatus,
}

fn map_of(value: ValueOrContainer) -> Option<LoroMap> {
    match value {
        ValueOrContainer::Container(loro::Container::Map(m)) => Some(m),
        _ => None,
    }
}

fn text(map: &LoroMap, key: &str) -> Option<String> {
    match map.get(key)? {
        ValueOrContainer::Value(LoroValue::String(s)) => Some(s.to_string()),
        _ => None,
    }
}

fn read(id: &str, map: &LoroMap) -> Option<StoredMessage> {
    let sent_at = match map.get("sent_at")? {
        ValueOrContainer::Value(LoroValue::I64(ms)) => Timestamp::from_millis(ms),
        _ => return None,
    };
    Some(StoredMessage {
        id: id.parse().ok()?,
        from: text(map, "from")?.parse().ok()?,
        to: text(map, "to")?.parse().ok()?,
        body: text(map, "body")?,
        sent_at,
        status: MessageStatus::parse(&text(map, "status")?)?,
    })
}

impl Vault {
    /// Stores a message in the conversation with `with`. Storing an id that is already
    /// there changes nothing and returns `false`.
    pub async fn put_message(
        &self,
        with: UserId,
        message: StoredMessage,
    ) -> Result<bool, StoreError> {
        self.put_messages(vec![(with, message)])
            .await
            .map(|new| new[0])
    }

    /// Queues a message for storage and returns as soon as the vault has it: every later
    /// read shows it. The returned future says whether it was new, once it is durable. For
    /// callers that keep the message durable elsewhere meanwhile (the outbox).
    pub async fn queue_message(
        &self,
        with: UserId,
        message: StoredMessage,
    ) -> Result<impl Future<Output = Result<bool, StoreError>> + Send + 'static, StoreError> {
        let saved = self
            .write_queued(move |doc| store_messages(doc, vec![(with, message)]))
            .await?;
        Ok(async move { saved.await.map(|new| new[0]) })
    }

    /// Stores several messages in one write; for each, whether it was new.
    pub async fn put_messages(
        &self,
        messages: Vec<(UserId, StoredMessage)>,
    ) -> Result<Vec<bool>, StoreError> {
        self.write(move |doc| store_messages(doc, messages)).await
    }

    /// Moves a message's status forward; returns whether it changed.
    pub async fn set_message_status(
        &self,
        with: UserId,
        id: MessageId,
        status: MessageStatus,
    ) -> Result<bool, StoreError> {
        self.queue_message_status(with, id, status).await?.await
    }

    /// Like [`Self::set_message_status`], but returns as soon as the vault has the change;
    /// the returned future says whether the status changed, once that is durable.
    pub async fn queue_message_status(
        &self,
        with: UserId,
        id: MessageId,
        status: MessageStatus,
    ) -> Result<impl Future<Output = Result<bool, StoreError>> + Send + 'static, StoreError> {
        self.write_queued(move |doc| {
            let Some(entry) = doc
                .loro()
                .get_map(root::CONVERSATIONS)
                .get(&with.to_string())
                .and_then(map_of)
                .and_then(|c| c.get("messages"))
                .and_then(map_of)
                .and_then(|l| l.get(&id.to_string()))
                .and_then(map_of)
            else {
                return Ok(false);
            };
            let current = text(&entry, "status").and_then(|s| MessageStatus::parse(&s));
            if !current.is_some_and(|c| c.advances_to(status)) {
                return Ok(false);
            }
            entry.insert("status", status.as_str())?;
            Ok(true)
        })
        .await
    }

    /// Whether a message is stored in the conversation with `with`.
    pub async fn has_message(&self, with: UserId, id: MessageId) -> Result<bool, StoreError> {
        self.read(move |doc| {
            doc.loro()
                .get_map(root::CONVERSATIONS)
                .get(&with.to_string())
                .and_then(map_of)
                .and_then(|c| c.get("messages"))
                .and_then(map_of)
                .is_some_and(|l| l.get(&id.to_string()).is_some())
        })
        .await
    }

    /// The conversation with `with`, oldest first: the last `limit` messages before the
    /// message `before` (or the latest ones).
    pub async fn messages(
        &self,
        with: UserId,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.read(move |doc| {
            let mut all = Vec::new();
            if let Some(list) = doc
                .loro()
                .get_map(root::CONVERSATIONS)
                .get(&with.to_string())
                .and_then(map_of)
                .and_then(|c| c.get("messages"))
                .and_then(map_of)
            {
                list.for_each(|id, v| {
                    if let Some(m) = map_of(v).and_then(|m| read(id, &m)) {
                        all.push(m);
                    }
                });
            }
            all.sort_by_key(|m| (m.sent_at, m.id));
            let end = match before {
                Some(b) => all.iter().position(|m| m.id == b).unwrap_or(all.len()),
                None => all.len(),
            };
            all.truncate(end);
            let start = end.saturating_sub(limit);
            all.split_off(start)
        })
        .await
    }
}

/// Stores messages in the conversations; for each, whether it was new (ids make it idempotent).
fn store_messages(
    doc: &VaultDoc,
    messages: Vec<(UserId, StoredMessage)>,
) -> Result<Vec<bool>, StoreError> {
    let conversations = doc.loro().get_map(root::CONVERSATIONS);
    let mut out = Vec::with_capacity(messages.len());
    for (with, m) in messages {
        let list = conversations
            .ensure_mergeable_map(&with.to_string())?
            .ensure_mergeable_map("messages")?;
        let key = m.id.to_string();
        if list.get(&key).is_some() {
            out.push(false);
            continue;
        }
        let entry = list.ensure_mergeable_map(&key)?;
        entry.insert("from", m.from.to_string())?;
        entry.insert("to", m.to.to_string())?;
        entry.insert("body", m.body)?;
        entry.insert("sent_at", m.sent_at.as_millis())?;
        entry.insert("status", m.status.as_str())?;
        out.push(true);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use volli_core::UserSecret;

    use super::*;
    use crate::{Db, VaultOptions};

    async fn vault() -> (tempfile::TempDir, Vault) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("v.db")).await.unwrap();
        let vault = Vault::open(db, VaultOptions::for_peer(1)).await.unwrap();
        (dir, vault)
    }

    fn message(from: UserId, to: UserId, n: i64, status: MessageStatus) -> StoredMessage {
        StoredMessage {
            id: MessageId::random().unwrap(),
            from,
            to,
            body: format!("message {n}"),
            sent_at: Timestamp::from_millis(1_000 + n),
            status,
        }
    }

    #[tokio::test]
    async fn messages_are_stored_once_paged_and_only_move_forward() {
        let (_dir, vault) = vault().await;
        let a = UserSecret::from_master([1; 32]).user_id();
        let b = UserSecret::from_master([2; 32]).user_id();
        let ms: Vec<_> = (0..5)
            .map(|n| message(a, b, n, MessageStatus::Queued))
            .collect();
        for m in &ms {
            assert!(vault.put_message(b, m.clone()).await.unwrap());
        }
        assert!(!vault.put_message(b, ms[0].clone()).await.unwrap());
        let all = vault.messages(b, None, 100).await.unwrap();
        assert_eq!(all, ms);
        let page = vault.messages(b, Some(ms[3].id), 2).await.unwrap();
        assert_eq!(page, ms[1..3].to_vec());
        assert!(
            vault
                .set_message_status(b, ms[0].id, MessageStatus::Delivered)
                .await
                .unwrap()
        );
        assert!(
            !vault
                .set_message_status(b, ms[0].id, MessageStatus::Relayed)
                .await
                .unwrap()
        );
        assert_eq!(
            vault.messages(b, None, 1).await.unwrap()[0].status,
            MessageStatus::Queued
        );
        assert!(vault.has_message(b, ms[4].id).await.unwrap());
        assert!(!vault.has_message(a, ms[4].id).await.unwrap());
    }
}
