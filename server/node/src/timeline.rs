//! One timeline per conversation: messages, files, replies, reactions, edits, tombstones,
//! read marks and system lines are items of one conversation, stored in the vault (which
//! syncs them to the user's devices and indexes them for paging, the chat list and search).
//! This module says what an item received from another user does to the timeline, with the
//! checks only the timeline can make (an edit or a deletion for everyone by the author alone,
//! a timer in a group by an admin alone), and what clients are told.
//!
//! What it deliberately does not do: open or seal anything (the conversations layer does),
//! deliver (messaging does), or hold files (the file service does).

use futures::future::BoxFuture;
use serde_json::json;
use volli_core::{Content, MessageId, Timestamp, UserId};
use volli_mls::GroupRef;
use volli_store::StoreError;
use volli_store::Vault;
use volli_store::vault::{Change, Extra, MessageKind, MessageStatus, StoredMessage};

use crate::events::{Event, EventBus};

/// Where a conversation's items are: with a contact, or in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Where {
    /// The one-to-one conversation with this user.
    Direct(UserId),
    /// A group conversation.
    Group(GroupRef),
}

impl Where {
    /// The vault key its items are stored under.
    pub fn key(&self) -> UserId {
        match self {
            Self::Direct(with) => *with,
            Self::Group(group) => crate::conversations::conversation_key(group),
        }
    }

    /// The contact, for a one-to-one conversation (as events name it).
    pub fn with(&self) -> Option<String> {
        match self {
            Self::Direct(with) => Some(with.to_string()),
            Self::Group(_) => None,
        }
    }

    /// The group, for a group conversation (as events name it).
    pub fn group(&self) -> Option<String> {
        match self {
            Self::Group(group) => Some(group.to_string()),
            Self::Direct(_) => None,
        }
    }
}

/// The disappearing timers a conversation may have, in seconds (0: off): from 30 seconds to
/// four weeks, as the API takes them.
pub fn valid_timer(secs: u64) -> bool {
    secs == 0 || (30..=28 * 24 * 3600).contains(&secs)
}

/// A system line's details for a timer set by `by` to `secs`.
pub fn timer_line(secs: u64, by: UserId) -> String {
    json!({"timer": secs, "by": by.to_string()}).to_string()
}

/// The stored item for a system line `system` (JSON) in `at`, from `from`, at `sent_at`.
pub fn system_item(
    id: MessageId,
    at: Where,
    from: UserId,
    sent_at: Timestamp,
    system: String,
    status: MessageStatus,
) -> StoredMessage {
    StoredMessage {
        id,
        from,
        to: at.key(),
        body: String::new(),
        sent_at,
        status,
        extra: Extra {
            kind: MessageKind::System,
            system: Some(system),
            ..Extra::default()
        },
    }
}

/// The system lines a change of a group's roster or name makes, from `before` to `after` at
/// `epoch`: who joined (and who brought them in), who is no longer a member, a new name, a new
/// role. Their ids derive from the group, the epoch and the line, so each of this user's
/// devices that sees the commit stores the same items, once.
pub fn roster_lines(
    group: GroupRef,
    epoch: u64,
    committer: UserId,
    before: &volli_mls::Info,
    after: &volli_mls::Info,
) -> Vec<StoredMessage> {
    let mut lines = Vec::new();
    let was = before.roster();
    for m in after.roster() {
        match was.iter().find(|w| w.user == m.user) {
            None => lines.push(json!({
                "added": m.user.to_string(),
                "by": m.sponsor.unwrap_or(committer).to_string(),
            })),
            Some(w) if w.role != m.role => lines.push(json!({
                "role": m.role.as_str(),
                "user": m.user.to_string(),
            })),
            Some(_) => {}
        }
    }
    for w in was {
        if !after.roster().iter().any(|m| m.user == w.user) {
            lines.push(json!({"removed": w.user.to_string()}));
        }
    }
    if let (Some(old), Some(new)) = (before.name(), after.name())
        && old != new
    {
        lines.push(json!({"name": new, "by": committer.to_string()}));
    }
    let at = Where::Group(group);
    let now = Timestamp::now();
    lines
        .into_iter()
        .map(|line| {
            let text = line.to_string();
            let hash = blake3::Hasher::new_derive_key("volli roster line v1")
                .update(&group.0)
                .update(&epoch.to_le_bytes())
                .update(text.as_bytes())
                .finalize();
            let mut id = [0u8; 16];
            id.copy_from_slice(&hash.as_bytes()[..16]);
            system_item(
                MessageId::from_bytes(id),
                at,
                committer,
                now,
                text,
                MessageStatus::Received,
            )
        })
        .collect()
}

/// How far ahead of this node's clock a received item's time may be.
const MAX_AHEAD: std::time::Duration = std::time::Duration::from_secs(300);

/// What taking in an item queued: resolves (once durable) to whether it was new, having
/// told clients.
pub type Saved = BoxFuture<'static, Result<bool, StoreError>>;

/// Queues what `content`, received from `sender` in `at`, does to the timeline (the caller
/// saves the conversation's state after: the item is durable first). `me` is this user;
/// `admin` says whether `sender` is an admin of the group (a timer needs one). `None`:
/// nothing to store (refused by the timeline's rules, or not a timeline item).
pub async fn queue_received(
    vault: &Vault,
    events: &EventBus,
    at: Where,
    me: UserId,
    sender: UserId,
    content: Content,
    admin: bool,
) -> Result<Option<Saved>, StoreError> {
    let key = at.key();
    let to = match at {
        Where::Direct(_) => me,
        Where::Group(_) => key,
    };
    let events = events.clone();
    // A sender's clock is its word: a time ahead of this node's by more than a few minutes
    // is taken as now, so no item dated years ahead stays on top, pins a timer or the read
    // mark.
    let now = Timestamp::now();
    let latest = now.saturating_add(MAX_AHEAD);
    let clamp = |t: Timestamp| if t > latest { now } else { t };
    Ok(Some(match content {
        Content::Text { id, sent_at, body } => {
            let sent_at = clamp(sent_at);
            let stored = vault
                .queue_message(
                    key,
                    StoredMessage {
                        id,
                        from: sender,
                        to,
                        body: body.clone(),
                        sent_at,
                        status: MessageStatus::Received,
                        extra: Extra::default(),
                    },
                )
                .await?;
            Box::pin(async move {
                let new = stored.await?;
                if new {
                    received(&events, at, id, sender, body, sent_at, None);
                }
                Ok(new)
            })
        }
        Content::Message {
            id,
            sent_at,
            body,
            reply_to,
            expires_at,
        } => {
            let sent_at = clamp(sent_at);
            let stored = vault
                .queue_message(
                    key,
                    StoredMessage {
                        id,
                        from: sender,
                        to,
                        body: body.clone(),
                        sent_at,
                        status: MessageStatus::Received,
                        extra: Extra {
                            reply_to,
                            expires_at,
                            ..Extra::default()
                        },
                    },
                )
                .await?;
            Box::pin(async move {
                let new = stored.await?;
                if new {
                    received(&events, at, id, sender, body, sent_at, reply_to);
                }
                Ok(new)
            })
        }
        Content::Reaction { target, emoji, .. } => {
            if !emoji.is_empty() && !crate::messaging::is_one_emoji(&emoji) {
                tracing::info!(from = %sender, "a reaction that is not one emoji was ignored");
                return Ok(None);
            }
            let emoji = (!emoji.is_empty()).then_some(emoji);
            let change = Change::React {
                user: sender,
                emoji: emoji.clone(),
            };
            let changed = vault.queue_change(key, target, change).await?;
            Box::pin(async move {
                let changed = changed.await?;
                if changed {
                    events.publish(Event::MessageReaction {
                        id: target.to_string(),
                        with: at.with(),
                        group: at.group(),
                        from: sender.to_string(),
                        emoji,
                    });
                }
                Ok(changed)
            })
        }
        Content::Edit {
            target,
            body,
            edited_at,
            ..
        } => {
            let edited_at = edited_at.min(latest);
            // The author alone edits its messages.
            if !authored_by(vault, key, target, sender).await? {
                tracing::info!(from = %sender, "an edit of another's message was ignored");
                return Ok(None);
            }
            let change = Change::Edit {
                body: body.clone(),
                at: edited_at,
            };
            let changed = vault.queue_change(key, target, change).await?;
            Box::pin(async move {
                let changed = changed.await?;
                if changed {
                    events.publish(Event::MessageEdited {
                        id: target.to_string(),
                        with: at.with(),
                        group: at.group(),
                        body,
                        edited_at: edited_at.to_rfc3339(),
                    });
                }
                Ok(changed)
            })
        }
        Content::Unsend { target, .. } => {
            if !authored_by(vault, key, target, sender).await? {
                tracing::info!(from = %sender, "a deletion of another's message was ignored");
                return Ok(None);
            }
            let changed = vault.queue_change(key, target, Change::Unsend).await?;
            Box::pin(async move {
                let changed = changed.await?;
                if changed {
                    events.publish(Event::MessageDeleted {
                        id: target.to_string(),
                        with: at.with(),
                        group: at.group(),
                    });
                }
                Ok(changed)
            })
        }
        Content::Read { up_to, .. } => {
            let changed = vault
                .queue_change(key, up_to, Change::ReadUpTo { reader: sender })
                .await?;
            Box::pin(async move {
                let changed = changed.await?;
                if changed {
                    events.publish(Event::MessageRead {
                        up_to: up_to.to_string(),
                        with: at.with(),
                        group: at.group(),
                        by: sender.to_string(),
                    });
                }
                Ok(changed)
            })
        }
        Content::Timer { id, sent_at, secs } => {
            // A timer counts from when it is received.
            let sent_at = sent_at.min(now);
            if !valid_timer(secs) || (matches!(at, Where::Group(_)) && !admin) {
                tracing::info!(from = %sender, secs, "a timer this user may not set was ignored");
                return Ok(None);
            }
            let stored = vault
                .queue_message(
                    key,
                    system_item(
                        id,
                        at,
                        sender,
                        sent_at,
                        timer_line(secs, sender),
                        MessageStatus::Received,
                    ),
                )
                .await?;
            Box::pin(async move {
                let new = stored.await?;
                if new {
                    events.publish(Event::ConversationChanged {
                        with: at.with(),
                        group: at.group(),
                        epoch: None,
                        disappearing_secs: Some(secs),
                        by: Some(sender.to_string()),
                    });
                }
                Ok(new)
            })
        }
        // Offers go to the file service, requests to the committer.
        _ => return Ok(None),
    }))
}

/// Whether message `target` of the conversation `key` was written by `user`.
async fn authored_by(
    vault: &Vault,
    key: UserId,
    target: MessageId,
    user: UserId,
) -> Result<bool, StoreError> {
    // A line about the conversation (a member added, a timer) is nobody's to change, even
    // if its `from` is the member whose commit made it.
    Ok(vault
        .message(target)
        .await?
        .is_some_and(|(conversation, m)| {
            conversation == key && m.from == user && m.extra.kind != MessageKind::System
        }))
}

fn received(
    events: &EventBus,
    at: Where,
    id: MessageId,
    from: UserId,
    body: String,
    sent_at: Timestamp,
    reply_to: Option<MessageId>,
) {
    crate::metrics::metrics().received();
    match at {
        Where::Direct(_) => events.publish(Event::MessageReceived {
            id: id.to_string(),
            from: from.to_string(),
            body,
            sent_at: sent_at.to_rfc3339(),
            reply_to: reply_to.map(|r| r.to_string()),
        }),
        Where::Group(group) => events.publish(Event::GroupMessage {
            group: group.to_string(),
            id: id.to_string(),
            from: from.to_string(),
            body,
            sent_at: sent_at.to_rfc3339(),
            reply_to: reply_to.map(|r| r.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use volli_core::UserSecret;
    use volli_store::{Db, VaultOptions};

    use super::*;

    async fn vault() -> (tempfile::TempDir, Vault) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("v.db")).await.unwrap();
        let vault = Vault::open(db, VaultOptions::default()).await.unwrap();
        (dir, vault)
    }

    async fn take(
        vault: &Vault,
        at: Where,
        me: UserId,
        sender: UserId,
        content: Content,
        admin: bool,
    ) -> bool {
        match queue_received(vault, &EventBus::new(), at, me, sender, content, admin)
            .await
            .unwrap()
        {
            Some(saved) => saved.await.unwrap(),
            None => false,
        }
    }

    #[tokio::test]
    async fn what_a_sender_may_not_do_to_the_timeline_is_ignored() {
        let (_dir, vault) = vault().await;
        let me = UserSecret::from_master([1; 32]).user_id();
        let mallory = UserSecret::from_master([2; 32]).user_id();
        let group = GroupRef([7; 16]);
        let at = Where::Group(group);

        // A text dated years ahead is taken as sent now.
        let id = MessageId::random().unwrap();
        let far = Timestamp::now().saturating_add(std::time::Duration::from_secs(1 << 30));
        let content = Content::Message {
            id,
            sent_at: far,
            body: "from the future".into(),
            reply_to: None,
            expires_at: None,
        };
        assert!(take(&vault, at, me, mallory, content, false).await);
        let (_, stored) = vault.message(id).await.unwrap().unwrap();
        assert!(stored.sent_at <= Timestamp::now());

        // A line about the group made by Mallory's commit is not Mallory's to delete or edit.
        let carol = UserSecret::from_master([3; 32]).user_id();
        let before = volli_mls::Info::group(mallory, "club", &[me], 1);
        let after = volli_mls::Info::group(mallory, "club", &[me, carol], 1);
        let lines = roster_lines(group, 2, mallory, &before, &after);
        assert_eq!(lines.len(), 1);
        let line = lines[0].id;
        vault
            .queue_message(at.key(), lines[0].clone())
            .await
            .unwrap()
            .await
            .unwrap();
        let unsend = Content::Unsend {
            id: MessageId::random().unwrap(),
            target: line,
        };
        assert!(!take(&vault, at, me, mallory, unsend, true).await);
        let edit = Content::Edit {
            id: MessageId::random().unwrap(),
            target: line,
            body: "nothing happened".into(),
            edited_at: Timestamp::now(),
        };
        assert!(!take(&vault, at, me, mallory, edit, true).await);
        let (_, kept) = vault.message(line).await.unwrap().unwrap();
        assert!(!kept.extra.unsent && kept.extra.edited_at.is_none());

        // A reaction is one emoji.
        let react = |emoji: &str| Content::Reaction {
            id: MessageId::random().unwrap(),
            target: id,
            emoji: emoji.into(),
        };
        assert!(!take(&vault, at, me, mallory, react("\u{202e}evil"), false).await);
        assert!(take(&vault, at, me, mallory, react("👍"), false).await);
    }
}
