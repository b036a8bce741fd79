//! What a person does to a conversation besides sending a text: edit or delete a message
//! for everyone, react, mark it read, type, set its disappearing timer; and the chat list.
//! Each change is applied to this user's timeline (the vault, which syncs it to the user's
//! devices) and sealed into the conversation as a [`Content`] kind that nodes of earlier
//! releases never get (`MlsRequest::Features`). Typing is the exception: a direct request
//! to the other side's connected devices, never stored or relayed.

use std::time::Duration;

use volli_core::{Content, MessageId, Timestamp, UserId};
use volli_store::vault::{Change, MessageKind, StoredMessage};

use super::{Messaging, MessagingError};
use crate::events::Event;
use crate::timeline::{Where, system_item, timer_line, valid_timer};

/// Typing frames one conversation sends at most: one per this long.
pub const TYPING_EVERY: Duration = Duration::from_secs(3);

/// Expired messages deleted per vault write.
const EXPIRE_BATCH: u32 = 256;

/// One conversation of the chat list.
#[derive(Clone, Debug)]
pub struct ChatSummary {
    /// Where it is.
    pub at: Where,
    /// Its newest message, if any.
    pub last: Option<StoredMessage>,
    /// Messages received after this user's read mark.
    pub unread: u64,
    /// Its timer, in seconds (0: off).
    pub timer: u64,
}

impl Messaging {
    /// Where the conversation stored under `key` is.
    pub(crate) async fn place_of(&self, key: UserId) -> Where {
        match self.inner.conversations.group_of_key(&key).await {
            Some(group) => Where::Group(group),
            None => Where::Direct(key),
        }
    }

    /// Message `id`, not deleted for this user, and where it is.
    pub async fn find(&self, id: MessageId) -> Result<(Where, StoredMessage), MessagingError> {
        let (key, message) = self
            .inner
            .vault
            .message(id)
            .await?
            .ok_or(MessagingError::NoSuchMessage)?;
        Ok((self.place_of(key).await, message))
    }

    /// Checks that `reply_to` (if any) is a message of the conversation `at`.
    pub(super) async fn check_reply(
        &self,
        at: Where,
        reply_to: Option<MessageId>,
    ) -> Result<(), MessagingError> {
        let Some(reply_to) = reply_to else {
            return Ok(());
        };
        match self.inner.vault.message(reply_to).await? {
            Some((key, _)) if key == at.key() => Ok(()),
            _ => Err(MessagingError::InvalidReply),
        }
    }

    /// When a message sent at `sent_at` in `at` disappears (the conversation's timer).
    pub(super) async fn expiry(
        &self,
        at: Where,
        sent_at: Timestamp,
    ) -> Result<Option<Timestamp>, MessagingError> {
        let secs = self.inner.vault.timer(at.key()).await?;
        Ok((secs > 0).then(|| sent_at.saturating_add(Duration::from_secs(secs))))
    }

    /// Seals `content` (a change) into the conversation `at` and queues it for the other
    /// side, durably; tried at once. Sent to nobody when nobody there reads it.
    async fn dispatch(&self, at: Where, content: Content) -> Result<(), MessagingError> {
        match at {
            Where::Direct(to) => match self.queue_direct(to, &content, None).await {
                Ok(Some((entry, durable))) => {
                    durable.await?;
                    self.try_now(entry);
                    Ok(())
                }
                // No longer a contact: the change stays this user's own.
                Ok(None) | Err(MessagingError::UnknownContact(_)) => Ok(()),
                Err(e) => Err(e),
            },
            Where::Group(group) => self
                .queue_group(group, &content, None, None)
                .await
                .map(|_| ()),
        }
    }

    /// A message of this user's, to change for everyone: not deleted for everyone already.
    async fn own_message(&self, id: MessageId) -> Result<(Where, StoredMessage), MessagingError> {
        let (at, message) = self.find(id).await?;
        if message.from != self.inner.identity.user_id() {
            return Err(MessagingError::NotAuthor);
        }
        if message.extra.unsent {
            return Err(MessagingError::NotEditable(
                "the message was deleted for everyone".into(),
            ));
        }
        Ok((at, message))
    }

    /// The message as it is now.
    async fn reread(&self, id: MessageId) -> Result<StoredMessage, MessagingError> {
        Ok(self
            .inner
            .vault
            .message(id)
            .await?
            .ok_or(MessagingError::NoSuchMessage)?
            .1)
    }

    /// Replaces the text of message `id` (this user's) on every device of every member.
    pub async fn edit(&self, id: MessageId, body: String) -> Result<StoredMessage, MessagingError> {
        Self::check_body(&body)?;
        let (at, message) = self.own_message(id).await?;
        if message.extra.kind != MessageKind::Text {
            return Err(MessagingError::NotEditable(
                "only a text can be edited".into(),
            ));
        }
        self.inner
            .sends
            .check(())
            .map_err(MessagingError::RateLimited)?;
        // Later than any edit before, whatever the clock did.
        let edited_at =
            Timestamp::now().max(message.extra.edited_at.map_or(message.sent_at, |t| {
                t.saturating_add(Duration::from_millis(1))
            }));
        let change = self
            .inner
            .vault
            .queue_change(
                at.key(),
                id,
                Change::Edit {
                    body: body.clone(),
                    at: edited_at,
                },
            )
            .await?;
        let content = Content::Edit {
            id: random_id()?,
            target: id,
            body: body.clone(),
            edited_at,
        };
        self.dispatch(at, content).await?;
        if change.await? {
            self.inner.events.publish(Event::MessageEdited {
                id: id.to_string(),
                with: at.with(),
                group: at.group(),
                body,
                edited_at: edited_at.to_rfc3339(),
            });
        }
        self.reread(id).await
    }

    /// Deletes message `id` (this user's) for everyone: a tombstone on every device of every
    /// member, its text gone from every store and index.
    pub async fn unsend(&self, id: MessageId) -> Result<(), MessagingError> {
        let (at, _) = self.own_message(id).await?;
        self.inner
            .sends
            .check(())
            .map_err(MessagingError::RateLimited)?;
        let change = self
            .inner
            .vault
            .queue_change(at.key(), id, Change::Unsend)
            .await?;
        let content = Content::Unsend {
            id: random_id()?,
            target: id,
        };
        self.dispatch(at, content).await?;
        if change.await? {
            self.inner.events.publish(Event::MessageDeleted {
                id: id.to_string(),
                with: at.with(),
                group: at.group(),
            });
        }
        Ok(())
    }

    /// Sets this user's reaction to message `id` to `emoji` (`None`: takes it back; taking
    /// back another emoji than the one set changes nothing).
    pub async fn react(
        &self,
        id: MessageId,
        emoji: Option<String>,
        only_if: Option<&str>,
    ) -> Result<StoredMessage, MessagingError> {
        if let Some(emoji) = &emoji
            && !is_one_emoji(emoji)
        {
            return Err(MessagingError::InvalidReaction);
        }
        let (at, message) = self.find(id).await?;
        if message.extra.unsent || message.extra.kind == MessageKind::System {
            return Err(MessagingError::NotEditable(
                "a deleted message or a line about the conversation takes no reaction".into(),
            ));
        }
        let me = self.inner.identity.user_id();
        let now = message.extra.reactions.get(&me).cloned();
        if let Some(only_if) = only_if
            && now.as_deref() != Some(only_if)
        {
            return Ok(message);
        }
        if now == emoji {
            return Ok(message);
        }
        self.inner
            .sends
            .check(())
            .map_err(MessagingError::RateLimited)?;
        let change = self
            .inner
            .vault
            .queue_change(
                at.key(),
                id,
                Change::React {
                    user: me,
                    emoji: emoji.clone(),
                },
            )
            .await?;
        let content = Content::Reaction {
            id: random_id()?,
            target: id,
            emoji: emoji.clone().unwrap_or_default(),
        };
        self.dispatch(at, content).await?;
        if change.await? {
            self.inner.events.publish(Event::MessageReaction {
                id: id.to_string(),
                with: at.with(),
                group: at.group(),
                from: me.to_string(),
                emoji,
            });
        }
        self.reread(id).await
    }

    /// Marks the conversation `at` read up to message `up_to` on every device of this user
    /// (its unread count drops everywhere) and, unless setting `receipts.read` is `false`,
    /// tells the others with a read receipt.
    pub async fn mark_read(&self, at: Where, up_to: MessageId) -> Result<(), MessagingError> {
        let (key, message) = self
            .inner
            .vault
            .message(up_to)
            .await?
            .ok_or(MessagingError::NoSuchMessage)?;
        if key != at.key() {
            return Err(MessagingError::NoSuchMessage);
        }
        let me = self.inner.identity.user_id();
        let changed = self
            .inner
            .vault
            .change_message(key, up_to, Change::ReadUpTo { reader: me })
            .await?;
        if !changed {
            return Ok(());
        }
        self.inner.events.publish(Event::MessageRead {
            up_to: up_to.to_string(),
            with: at.with(),
            group: at.group(),
            by: me.to_string(),
        });
        self.inner.events.publish(Event::ConversationChanged {
            with: at.with(),
            group: at.group(),
            epoch: None,
            disappearing_secs: None,
            by: None,
        });
        let receipts = !matches!(
            self.inner.vault.setting("receipts.read").await?,
            Some(serde_json::Value::Bool(false))
        );
        // A receipt says what the others sent was read: not for this user's own messages.
        if receipts && message.from != me {
            let content = Content::Read {
                id: random_id()?,
                up_to,
            };
            self.dispatch(at, content).await?;
        }
        Ok(())
    }

    /// Tells the other side this user is typing in `at`: at most one frame per
    /// [`TYPING_EVERY`] per conversation (more are dropped), straight to their connected
    /// devices.
    pub async fn typing(&self, at: Where) -> Result<(), MessagingError> {
        let users: Vec<UserId> = match at {
            Where::Direct(to) => {
                self.inner
                    .vault
                    .contact(to)
                    .await?
                    .ok_or(MessagingError::UnknownContact(to))?;
                vec![to]
            }
            Where::Group(group) => self
                .inner
                .conversations
                .group_users(&group.to_string())
                .await
                .ok_or(crate::conversations::GroupError::UnknownGroup)?,
        };
        if self.inner.typing.check(at.key()).is_err() {
            return Ok(());
        }
        let group = match at {
            Where::Group(group) => Some(group),
            Where::Direct(_) => None,
        };
        let me = self.inner.identity.user_id();
        for user in users.into_iter().filter(|u| *u != me) {
            if self.inner.peers.is_contact(&user) {
                self.inner.conversations.send_typing(user, group);
            }
        }
        Ok(())
    }

    /// Sets the disappearing timer of the conversation `at` to `secs` (0: off): a line in
    /// the conversation for everyone; in a group, an admin's to set.
    pub async fn set_timer(&self, at: Where, secs: u64) -> Result<(), MessagingError> {
        if !valid_timer(secs) {
            return Err(MessagingError::InvalidTimer);
        }
        let me = self.inner.identity.user_id();
        match at {
            Where::Direct(to) => {
                self.inner
                    .vault
                    .contact(to)
                    .await?
                    .ok_or(MessagingError::UnknownContact(to))?;
            }
            Where::Group(group) => {
                if self.inner.conversations.group(group).await.is_none() {
                    return Err(crate::conversations::GroupError::UnknownGroup.into());
                }
                if !self.inner.conversations.is_group_admin(group, me).await {
                    return Err(crate::conversations::GroupError::NotAdmin.into());
                }
            }
        }
        if self.inner.vault.timer(at.key()).await? == secs {
            return Ok(());
        }
        self.inner
            .sends
            .check(())
            .map_err(MessagingError::RateLimited)?;
        let id = random_id()?;
        let sent_at = Timestamp::now();
        let line = system_item(
            id,
            at,
            me,
            sent_at,
            timer_line(secs, me),
            volli_store::vault::MessageStatus::Delivered,
        );
        let saved = self.inner.vault.queue_message(at.key(), line).await?;
        self.dispatch(at, Content::Timer { id, sent_at, secs })
            .await?;
        saved.await?;
        self.inner.events.publish(Event::ConversationChanged {
            with: at.with(),
            group: at.group(),
            epoch: None,
            disappearing_secs: Some(secs),
            by: Some(me.to_string()),
        });
        Ok(())
    }

    /// This user.
    pub fn me(&self) -> UserId {
        self.inner.identity.user_id()
    }

    /// How far each reader of conversation `at` read: the send time of the newest message
    /// each marked.
    pub async fn read_marks(&self, at: Where) -> Result<Vec<(UserId, Timestamp)>, MessagingError> {
        Ok(self.inner.vault.read_marks(at.key()).await?)
    }

    /// The state of transfer `id` (32 hex digits) on this device, if it has it.
    pub async fn transfer_state(&self, id: &str) -> Option<String> {
        let id = id.parse::<volli_core::transfer::TransferId>().ok()?;
        self.inner
            .db
            .transfer(id.as_bytes())
            .await
            .ok()
            .flatten()
            .map(|t| t.state)
    }

    /// The timer of conversation `at`, in seconds (0: off).
    pub async fn timer(&self, at: Where) -> Result<u64, MessagingError> {
        Ok(self.inner.vault.timer(at.key()).await?)
    }

    /// Every conversation with messages, a contact or a group, newest activity first.
    pub async fn chats(&self) -> Result<Vec<ChatSummary>, MessagingError> {
        let me = self.inner.identity.user_id();
        let summaries = self.inner.vault.summaries(me).await?;
        let mut by_key: std::collections::HashMap<UserId, _> =
            summaries.into_iter().map(|s| (s.conversation, s)).collect();
        let mut out = Vec::new();
        for group in self.inner.conversations.groups().await {
            let key = crate::conversations::conversation_key(&group.id);
            let s = by_key.remove(&key);
            out.push(ChatSummary {
                at: Where::Group(group.id),
                last: s.as_ref().and_then(|s| s.last.clone()),
                unread: s.as_ref().map_or(0, |s| s.unread),
                timer: s.as_ref().map_or(0, |s| s.timer),
            });
        }
        for contact in self.inner.vault.contacts().await? {
            let s = by_key.remove(&contact.user_id);
            out.push(ChatSummary {
                at: Where::Direct(contact.user_id),
                last: s.as_ref().and_then(|s| s.last.clone()),
                unread: s.as_ref().map_or(0, |s| s.unread),
                timer: s.as_ref().map_or(0, |s| s.timer),
            });
        }
        // Conversations with someone no longer a contact (or a group left) are listed while
        // they hold messages.
        for (key, s) in by_key {
            if key == me {
                continue;
            }
            out.push(ChatSummary {
                at: self.place_of(key).await,
                last: s.last,
                unread: s.unread,
                timer: s.timer,
            });
        }
        out.sort_by(|a, b| {
            let at = |c: &ChatSummary| c.last.as_ref().map(|m| m.sent_at);
            at(b).cmp(&at(a))
        });
        Ok(out)
    }

    /// Deletes the messages whose disappearing time ran out, on this device (every device
    /// of every member does the same: each message carries its time); returns when the next
    /// one runs out.
    pub(super) async fn expire_due(&self) -> Option<Timestamp> {
        loop {
            let (due, next) = match self
                .inner
                .vault
                .expiring(Timestamp::now(), EXPIRE_BATCH)
                .await
            {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look for expired messages");
                    return None;
                }
            };
            if due.is_empty() {
                return next;
            }
            let mut by_conversation: std::collections::BTreeMap<UserId, Vec<MessageId>> =
                std::collections::BTreeMap::new();
            for (key, id) in due {
                by_conversation.entry(key).or_default().push(id);
            }
            for (key, ids) in by_conversation {
                if let Err(e) = self.delete_in(key, ids).await {
                    tracing::warn!(error = %e, "cannot delete expired messages");
                    return next;
                }
            }
        }
    }

    /// Runs [`Self::expire_due`] whenever a message's time runs out (checked at least
    /// every minute, and whenever the vault changes).
    pub(super) fn spawn_expiry(&self) {
        let this = self.clone();
        let mut changes = self.inner.vault.changes();
        tokio::spawn(async move {
            loop {
                let next = this.expire_due().await;
                let wait = next.map_or(Duration::from_secs(60), |t| {
                    Timestamp::now()
                        .until(t)
                        .min(Duration::from_secs(60))
                        .max(Duration::from_millis(50))
                });
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    changed = changes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        // Many writes at once are looked at together.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
    }
}

fn random_id() -> Result<MessageId, MessagingError> {
    MessageId::random().map_err(|e| MessagingError::Invalid(e.to_string()))
}

/// Whether `text` is one emoji: a pictograph (with its skin tone, variation selectors and
/// tags), a sequence of them joined by zero-width joiners, a keycap or a flag.
pub fn is_one_emoji(text: &str) -> bool {
    if text.is_empty() || text.len() > volli_core::mail::MAX_EMOJI_LEN {
        return false;
    }
    let chars: Vec<char> = text.chars().collect();
    // A keycap: a digit, # or *, an optional variation selector, the keycap mark.
    if let [first, rest @ ..] = chars.as_slice()
        && (first.is_ascii_digit() || *first == '#' || *first == '*')
    {
        return matches!(rest, ['\u{20E3}'] | ['\u{FE0F}', '\u{20E3}']);
    }
    // A flag: two regional indicators.
    if chars
        .iter()
        .all(|c| ('\u{1F1E6}'..='\u{1F1FF}').contains(c))
    {
        return chars.len() == 2;
    }
    let mut bases = 0;
    let mut joiners = 0;
    let mut previous_was_joiner = true;
    for c in &chars {
        match *c {
            '\u{200D}' => {
                if previous_was_joiner {
                    return false;
                }
                joiners += 1;
                previous_was_joiner = true;
                continue;
            }
            // Variation selectors, skin tones, tags.
            '\u{FE0E}' | '\u{FE0F}' | '\u{1F3FB}'..='\u{1F3FF}' | '\u{E0020}'..='\u{E007F}' => {
                if bases == 0 {
                    return false;
                }
            }
            c if is_pictograph(c) => {
                if !previous_was_joiner {
                    return false;
                }
                bases += 1;
            }
            _ => return false,
        }
        previous_was_joiner = false;
    }
    bases == joiners + 1 && !previous_was_joiner
}

fn is_pictograph(c: char) -> bool {
    matches!(c,
        '\u{00A9}' | '\u{00AE}' | '\u{203C}' | '\u{2049}' | '\u{2122}' | '\u{2139}'
        | '\u{2194}'..='\u{21AA}' | '\u{231A}'..='\u{23FF}' | '\u{24C2}'
        | '\u{25AA}'..='\u{25FE}' | '\u{2600}'..='\u{27BF}' | '\u{2934}' | '\u{2935}'
        | '\u{2B05}'..='\u{2B55}' | '\u{3030}' | '\u{303D}' | '\u{3297}' | '\u{3299}'
        | '\u{1F000}'..='\u{1F1E5}' | '\u{1F200}'..='\u{1F3FA}' | '\u{1F400}'..='\u{1FAFF}')
}

#[cfg(test)]
mod tests {
    use super::is_one_emoji;

    #[test]
    fn one_emoji_is_told_from_text_and_from_several() {
        for ok in ["👍", "❤️", "👍🏽", "👩‍💻", "👨‍👩‍👧‍👦", "🇫🇷", "1️⃣", "#⃣", "🏳️‍🌈", "☕"]
        {
            assert!(is_one_emoji(ok), "{ok} is one emoji");
        }
        for bad in [
            "",
            "a",
            "ok",
            "👍👍",
            "👍 ",
            " 👍",
            "🇫",
            "🇫🇷🇩🇪",
            "\u{200D}👍",
            "👍\u{200D}",
            "🏽",
            "1",
            "👍a",
            "<script>",
        ] {
            assert!(!is_one_emoji(bad), "{bad:?} is not one emoji");
        }
    }
}
