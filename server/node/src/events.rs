//! The event bus: what the node tells its clients over `/v1/events`.
//!
//! A bounded broadcast channel. Publishing never waits; a subscriber that falls more than
//! [`CAPACITY`] events behind loses the oldest ones and is told so with a `resync` event, after
//! which it should re-read the state it shows. Nothing is buffered without bound.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::ToSchema;

/// Events kept for slow subscribers before they must resync.
pub const CAPACITY: usize = 1024;

/// One event, sent to clients as a JSON text frame `{"type": "...", ...}`.
#[derive(Clone, Debug, Serialize, ToSchema, PartialEq)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum Event {
    /// First frame on every connection: the subscription is live from here on.
    #[serde(rename = "ready")]
    Ready {
        /// The node's version.
        version: String,
    },
    /// The client missed events (it was too slow); re-read state before relying on it.
    #[serde(rename = "resync")]
    Resync {
        /// How many events were dropped for this client.
        missed: u64,
    },
    /// A peer was found by a discovery method (or by a new one).
    #[serde(rename = "peer.discovered")]
    PeerDiscovered {
        /// The peer.
        peer_id: String,
        /// Its user, if its certificate verified.
        user_id: Option<String>,
        /// Discovery methods that found it.
        sources: Vec<String>,
    },
    /// A connection to a peer opened.
    #[serde(rename = "peer.connected")]
    PeerConnected {
        /// The peer.
        peer_id: String,
        /// Its user, if known.
        user_id: Option<String>,
    },
    /// The last connection to a peer closed.
    #[serde(rename = "peer.disconnected")]
    PeerDisconnected {
        /// The peer.
        peer_id: String,
    },
    /// A contact was added (by accepting an invite, or by someone redeeming ours).
    #[serde(rename = "contact.added")]
    ContactAdded {
        /// The contact's user id.
        user_id: String,
        /// Their name.
        name: String,
    },
    /// A contact was removed: nothing is taken from it or held for it any more, and the
    /// invites it redeemed before do not bring it back.
    #[serde(rename = "contact.removed")]
    ContactRemoved {
        /// The former contact's user id.
        user_id: String,
    },
    /// A new device asks to join this user (on the existing device): approve or reject it
    /// after comparing `check_code` with the one the new device shows.
    #[serde(rename = "pairing.request")]
    PairingRequest {
        /// The pairing session.
        id: String,
        /// The name the new device gave.
        device_name: String,
        /// Its peer id.
        peer_id: String,
        /// The code both devices show.
        check_code: String,
    },
    /// This node joined a user as a new device (on the new node). The node restarts as that
    /// user's device right after; reconnect.
    #[serde(rename = "pairing.completed")]
    PairingCompleted {
        /// The pairing session.
        id: String,
        /// The user joined.
        user_id: String,
    },
    /// A pairing this node started (joining) ended without joining.
    #[serde(rename = "pairing.failed")]
    PairingFailed {
        /// The pairing session.
        id: String,
        /// Why.
        reason: String,
    },
    /// A device was added to this user.
    #[serde(rename = "device.added")]
    DeviceAdded {
        /// Its peer id.
        peer_id: String,
        /// Its name.
        name: String,
    },
    /// A device of this user was revoked.
    #[serde(rename = "device.revoked")]
    DeviceRevoked {
        /// Its peer id.
        peer_id: String,
    },
    /// This user's backup was refreshed at its holders (`GET /v1/backup` shows where).
    #[serde(rename = "backup.refreshed")]
    BackupRefreshed {
        /// The new backup's sequence number.
        seq: u64,
        /// Holders that hold it whole.
        holders: u32,
        /// How many of them may vanish before it is lost (null: too few hold it to restore).
        can_lose: Option<u32>,
        /// Bytes sent to holders.
        bytes_sent: u64,
    },
    /// This user's backup could not be refreshed (it is tried again later).
    #[serde(rename = "backup.failed")]
    BackupFailed {
        /// Why.
        reason: String,
    },
    /// This node was restored from a recovery phrase (on the fresh node). It restarts as
    /// the user's device right after; reconnect.
    #[serde(rename = "backup.restored")]
    BackupRestored {
        /// The user restored.
        user_id: String,
        /// The backup's sequence number.
        seq: u64,
    },
    /// A client token was created (directly or by trading a login code).
    #[serde(rename = "client.added")]
    ClientAdded {
        /// The client's id.
        id: String,
        /// Its name.
        name: String,
        /// Its scopes.
        scopes: Vec<String>,
    },
    /// A client token was revoked; it no longer works.
    #[serde(rename = "client.revoked")]
    ClientRevoked {
        /// The client's id.
        id: String,
    },
    /// The vault took in changes from another device of this user.
    #[serde(rename = "sync.completed")]
    SyncCompleted {
        /// The device it synced with.
        peer_id: String,
        /// Documents that changed.
        docs: usize,
    },
    /// The path to a connected peer changed: a hole punch made it `direct`, or it is
    /// `relayed` again.
    #[serde(rename = "peer.path")]
    PeerPath {
        /// The peer.
        peer_id: String,
        /// `direct` or `relayed`.
        path: String,
    },
    /// Someone tried to join a pairing this device offers and failed (a wrong code): that
    /// attempt ended, the pairing stays open for the device that has the code.
    #[serde(rename = "pairing.attempt_failed")]
    PairingAttemptFailed {
        /// The pairing session.
        id: String,
        /// The peer that tried.
        peer_id: String,
        /// What happened, in words.
        reason: String,
    },
    /// Another device of this user sent changes this device refused: they would undo what
    /// only the user key signs (a revocation, a key generation, a certificate), roll back a
    /// contact's card, or break a document's bounds. Nothing of them was kept.
    #[serde(rename = "sync.refused")]
    SyncRefused {
        /// The device that sent them.
        peer_id: String,
        /// What was wrong, in words.
        reason: String,
    },
    /// An invite accepted while its inviter was unreachable could not be redeemed.
    #[serde(rename = "contact.failed")]
    ContactFailed {
        /// The inviter's user id.
        user_id: String,
        /// Why.
        reason: String,
    },
    /// A message arrived from a contact (directly or through a relay), once.
    #[serde(rename = "message.received")]
    MessageReceived {
        /// The message id.
        id: String,
        /// The sender's user id.
        from: String,
        /// The text.
        body: String,
        /// When the sender sent it (RFC 3339).
        sent_at: String,
        /// The message it answers.
        #[serde(skip_serializing_if = "Option::is_none")]
        reply_to: Option<String>,
    },
    /// Messages were deleted: by the user (one message, or a whole conversation in
    /// batches) or by the retention rules, on this device or on another device of the user
    /// (published when the deletion arrives through the vault).
    #[serde(rename = "messages.deleted")]
    MessagesDeleted {
        /// The other party of the conversation.
        with: String,
        /// The deleted messages' ids.
        ids: Vec<String>,
    },
    /// A conversation changed in a way its messages do not say: on MLS, a new epoch (a
    /// device added, removed or updated, or this device joined: what
    /// `GET /v1/conversations/{user_id}` shows); its disappearing timer; or read on another
    /// device of this user (its unread count in `GET /v1/conversations`).
    #[serde(rename = "conversation.changed")]
    ConversationChanged {
        /// The contact, for a one-to-one conversation.
        #[serde(skip_serializing_if = "Option::is_none")]
        with: Option<String>,
        /// The group, for a group conversation.
        #[serde(skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        /// The new epoch, when that is what changed.
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<u64>,
        /// The new timer, when that is what changed: messages disappear this long after
        /// they are sent (0: never).
        #[serde(skip_serializing_if = "Option::is_none")]
        disappearing_secs: Option<u64>,
        /// Who changed the timer.
        #[serde(skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// A message was edited by its author: the new text.
    #[serde(rename = "message.edited")]
    MessageEdited {
        /// The message.
        id: String,
        /// The contact, for a one-to-one conversation.
        #[serde(skip_serializing_if = "Option::is_none")]
        with: Option<String>,
        /// The group, for a group conversation.
        #[serde(skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        /// The new text.
        body: String,
        /// When it was edited (RFC 3339).
        edited_at: String,
    },
    /// A message was deleted for everyone by its author: a tombstone now, without text.
    #[serde(rename = "message.deleted")]
    MessageDeleted {
        /// The message.
        id: String,
        /// The contact, for a one-to-one conversation.
        #[serde(skip_serializing_if = "Option::is_none")]
        with: Option<String>,
        /// The group, for a group conversation.
        #[serde(skip_serializing_if = "Option::is_none")]
        group: Option<String>,
    },
    /// A reaction to a message was set or taken back.
    #[serde(rename = "message.reaction")]
    MessageReaction {
        /// The message.
        id: String,
        /// The contact, for a one-to-one conversation.
        #[serde(skip_serializing_if = "Option::is_none")]
        with: Option<String>,
        /// The group, for a group conversation.
        #[serde(skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        /// Who reacted.
        from: String,
        /// The emoji (absent: taken back).
        #[serde(skip_serializing_if = "Option::is_none")]
        emoji: Option<String>,
    },
    /// Someone read a conversation up to a message: this user (on any of its devices: the
    /// unread count drops) or another member (a read receipt).
    #[serde(rename = "message.read")]
    MessageRead {
        /// The newest message read.
        up_to: String,
        /// The contact, for a one-to-one conversation.
        #[serde(skip_serializing_if = "Option::is_none")]
        with: Option<String>,
        /// The group, for a group conversation.
        #[serde(skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        /// Who read.
        by: String,
    },
    /// A contact is typing (shown for a few seconds; never stored).
    #[serde(rename = "typing")]
    Typing {
        /// The contact, for a one-to-one conversation.
        #[serde(skip_serializing_if = "Option::is_none")]
        with: Option<String>,
        /// The group, for a group conversation.
        #[serde(skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        /// Who types.
        from: String,
    },
    /// This device took part in a new group: created it, or was added to it.
    #[serde(rename = "group.created")]
    GroupCreated {
        /// The group's id.
        group: String,
        /// Its name.
        name: String,
    },
    /// A group changed: its name, its members or their roles, or its devices (a new epoch).
    #[serde(rename = "group.changed")]
    GroupChanged {
        /// The group's id.
        group: String,
        /// The new epoch.
        epoch: u64,
        /// Whether this user is no longer in it.
        left: bool,
    },
    /// A message arrived in a group.
    #[serde(rename = "group.message")]
    GroupMessage {
        /// The group's id.
        group: String,
        /// The message id.
        id: String,
        /// The sender's user id.
        from: String,
        /// The text.
        body: String,
        /// When it was sent (sender's clock).
        sent_at: String,
        /// The message it answers.
        #[serde(skip_serializing_if = "Option::is_none")]
        reply_to: Option<String>,
    },
    /// A sent message moved on: `relayed`, `delivered` or `failed`.
    #[serde(rename = "message.status")]
    MessageStatus {
        /// The message id.
        id: String,
        /// The recipient's user id.
        to: String,
        /// The new status.
        status: String,
    },
    /// A plugin was marked failed after repeated errors; it is retried after a backoff.
    #[serde(rename = "plugin.failed")]
    PluginFailed {
        /// The plugin's name.
        name: String,
        /// What went wrong, for the operator.
        reason: String,
    },
    /// A contact (or another device of this user) offers a file.
    #[serde(rename = "transfer.offered")]
    TransferOffered {
        /// The transfer.
        id: String,
        /// The sender's user id.
        from: String,
        /// The file's name.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// The group it was offered to, when it was.
        #[serde(skip_serializing_if = "Option::is_none")]
        group: Option<String>,
    },
    /// A transfer moved on: bytes stored (incoming) or sent (outgoing). At most four a
    /// second per transfer; totals only grow.
    #[serde(rename = "transfer.progress")]
    TransferProgress {
        /// The transfer.
        id: String,
        /// Bytes done.
        bytes_done: u64,
        /// The file's size.
        size: u64,
    },
    /// A transfer changed state: `running`, `paused`, `declined`, `cancelled`.
    #[serde(rename = "transfer.updated")]
    TransferUpdated {
        /// The transfer.
        id: String,
        /// Its new state.
        state: String,
    },
    /// A transfer completed: the file arrived whole, with this BLAKE3 hash.
    #[serde(rename = "transfer.completed")]
    TransferCompleted {
        /// The transfer.
        id: String,
        /// The plaintext's BLAKE3 hash (hex).
        blake3: String,
    },
    /// A transfer failed.
    #[serde(rename = "transfer.failed")]
    TransferFailed {
        /// The transfer.
        id: String,
        /// Why.
        reason: String,
    },
    /// A setting was set or removed.
    #[serde(rename = "settings.changed")]
    SettingsChanged {
        /// The setting's key.
        key: String,
    },
    /// The search index of messages stored before it existed is being built (at most
    /// twice a second); what is indexed is searchable already.
    #[serde(rename = "search.progress")]
    SearchProgress {
        /// Messages looked at.
        indexed: u64,
        /// Messages to look at.
        total: u64,
    },
    /// The user's display name or picture changed (on this device or another of the
    /// user's).
    #[serde(rename = "profile.changed")]
    ProfileChanged {
        /// The display name.
        name: String,
        /// Whether the user has a picture.
        avatar: bool,
    },
    /// A contact's name, own name or picture changed: this user renamed them, or their new
    /// card or picture arrived.
    #[serde(rename = "contact.changed")]
    ContactChanged {
        /// The contact's user id.
        user_id: String,
        /// This user's name for them.
        name: String,
        /// Their own name.
        display_name: String,
        /// Whether their picture is held (`GET /v1/contacts/{user_id}/avatar`).
        avatar: bool,
    },
    /// The search index holds every message.
    #[serde(rename = "search.ready")]
    SearchReady {
        /// Messages the build looked at.
        indexed: u64,
    },
}

/// Publisher side of the bus. Cheap to clone.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A new bus with the default capacity.
    pub fn new() -> Self {
        Self::with_capacity(CAPACITY)
    }

    /// A new bus keeping `capacity` events for slow subscribers.
    pub fn with_capacity(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        Self { tx }
    }

    /// Sends `event` to every current subscriber. Never blocks.
    pub fn publish(&self, event: Event) {
        let _ = self.tx.send(Arc::new(event));
    }

    /// A new subscription, starting with the next published event.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
        }
    }
}

/// One subscriber's view of the bus.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Event>>,
}

impl Subscription {
    /// The next event, a `resync` if events were lost, or `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<Arc<Event>> {
        match self.rx.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                Some(Arc::new(Event::Resync { missed }))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slow_subscribers_get_a_resync_instead_of_unbounded_buffering() {
        let bus = EventBus::with_capacity(4);
        let mut sub = bus.subscribe();
        for i in 0..10 {
            bus.publish(Event::Ready {
                version: format!("{i}"),
            });
        }
        assert_eq!(*sub.next().await.unwrap(), Event::Resync { missed: 6 });
        assert_eq!(
            *sub.next().await.unwrap(),
            Event::Ready {
                version: "6".into()
            }
        );
    }

    #[test]
    fn events_serialize_with_a_type_tag() {
        let json = serde_json::to_value(Event::Resync { missed: 3 }).unwrap();
        assert_eq!(json, serde_json::json!({"type": "resync", "missed": 3}));
    }
}
