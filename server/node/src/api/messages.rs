//! `/v1/messages`: send a message to a contact, read a conversation.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use volli_core::{MessageId, Timestamp, UserId};
use volli_store::vault::StoredMessage;

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path, Query};
use crate::contacts::Contacts;
use crate::messaging::{Messaging, MessagingError};
use crate::retention::{Retention, RetentionError, Rules};
use crate::timeline::Where;

/// Messages returned per page at most.
pub const MAX_PAGE: usize = 500;

/// A message to send.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// The recipient's user id (a contact); or `group` instead.
    pub to: Option<String>,
    /// The group's id, to send to every member of a group (instead of `to`).
    pub group: Option<String>,
    /// The text, 1 byte to 64 KiB.
    pub body: String,
    /// The message it answers: one of the same conversation.
    pub reply_to: Option<String>,
}

/// A message was accepted and stored.
#[derive(Serialize, ToSchema)]
pub struct Sent {
    /// The message id (32 hex digits).
    pub id: String,
    /// Always `queued` at first; `message.status` events follow.
    #[schema(example = "queued")]
    pub status: String,
}

/// A message in a conversation.
#[derive(Serialize, ToSchema)]
#[schema(as = Message)]
pub struct MessageView {
    /// The message id.
    pub id: String,
    /// The sender's user id.
    pub from: String,
    /// The recipient's user id.
    pub to: String,
    /// `text`, `file` (a file offered in the conversation: see `file`) or `system` (a line
    /// about the conversation itself: a timer set, a member added or gone; see `system`).
    #[schema(example = "text")]
    pub kind: String,
    /// The text (the latest, once edited; empty once deleted for everyone).
    pub body: String,
    /// When the sender sent it (RFC 3339).
    pub sent_at: String,
    /// `queued`, `relayed`, `delivered`, `read`, `failed` (sent) or `received` (incoming).
    /// A group message sent is as far as its least advanced member (`read` once every member
    /// read it).
    pub status: String,
    /// The message it answers.
    pub reply_to: Option<String>,
    /// Reactions: each emoji with the users who chose it.
    pub reactions: Vec<ReactionView>,
    /// When its author last edited it (RFC 3339).
    pub edited_at: Option<String>,
    /// Deleted for everyone by its author: a tombstone, without text.
    pub deleted: bool,
    /// When it disappears from every device (RFC 3339): the conversation's timer.
    pub expires_at: Option<String>,
    /// For kind `file`: the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileView>,
    /// For kind `system`: what happened, one of `{"timer": 86400, "by": user_id}` (0: off),
    /// `{"added": user_id, "by": user_id}`, `{"removed": user_id}` (left or removed),
    /// `{"role": "admin", "user": user_id}`, `{"name": "new name", "by": user_id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub system: Option<serde_json::Value>,
    /// The group's id, for a message of a group (`to` is then the group's id too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// In a group: the members (besides its sender and this user) who read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_by: Option<Vec<String>>,
    /// Each member's status, for a group message this device sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipts: Option<Vec<MemberReceipt>>,
}

/// One emoji, and who reacted with it.
#[derive(Serialize, ToSchema)]
pub struct ReactionView {
    /// The emoji.
    pub emoji: String,
    /// The users who chose it.
    pub from: Vec<String>,
}

/// A file offered in a conversation.
#[derive(Serialize, ToSchema)]
pub struct FileView {
    /// The transfer's id (`/v1/transfers/{id}`).
    pub transfer: String,
    /// The file's name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type, as the sender said.
    #[schema(example = "image/jpeg")]
    pub mime: String,
    /// A small picture of it (a `data:` URL), for images.
    pub thumbnail: Option<String>,
    /// The transfer's state on this device (as `GET /v1/transfers/{id}` says), when it
    /// still has it.
    pub state: Option<String>,
}

/// How far a group message got with one member.
#[derive(Serialize, ToSchema)]
pub struct MemberReceipt {
    /// The member's user id.
    pub user_id: String,
    /// `queued`, `relayed` (held by a relay, or handed to a member who carries it),
    /// `delivered`, `read` or `failed`.
    pub status: String,
}

impl From<StoredMessage> for MessageView {
    fn from(m: StoredMessage) -> Self {
        let mut reactions: std::collections::BTreeMap<String, Vec<String>> =
            std::collections::BTreeMap::new();
        for (user, emoji) in &m.extra.reactions {
            if !emoji.is_empty() {
                reactions
                    .entry(emoji.clone())
                    .or_default()
                    .push(user.to_string());
            }
        }
        Self {
            id: m.id.to_string(),
            from: m.from.to_string(),
            to: m.to.to_string(),
            kind: m.extra.kind.as_str().to_owned(),
            body: if m.extra.unsent {
                String::new()
            } else {
                m.body
            },
            sent_at: m.sent_at.to_rfc3339(),
            status: m.status.as_str().to_owned(),
            reply_to: m.extra.reply_to.map(|r| r.to_string()),
            reactions: reactions
                .into_iter()
                .map(|(emoji, from)| ReactionView { emoji, from })
                .collect(),
            edited_at: m.extra.edited_at.map(|t| t.to_rfc3339()),
            deleted: m.extra.unsent,
            expires_at: m.extra.expires_at.map(|t| t.to_rfc3339()),
            file: m.extra.file.filter(|_| !m.extra.unsent).map(|f| FileView {
                transfer: f.transfer,
                name: f.name,
                size: f.size,
                mime: f.mime,
                thumbnail: f.thumbnail,
                state: None,
            }),
            system: m
                .extra
                .system
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok()),
            group: None,
            read_by: None,
            receipts: None,
        }
    }
}

/// The views of `messages` of the conversation `at`: with how far the others read, each
/// member's receipts (a group message this device sent) and the files' states.
pub async fn views(
    messaging: &Messaging,
    at: Where,
    messages: Vec<StoredMessage>,
) -> Result<Vec<MessageView>, ApiError> {
    let marks = messaging.read_marks(at).await?;
    views_marked(messaging, at, messages, &marks).await
}

/// [`views`], with the conversation's read marks read already.
pub async fn views_marked(
    messaging: &Messaging,
    at: Where,
    messages: Vec<StoredMessage>,
    marks: &[(UserId, Timestamp)],
) -> Result<Vec<MessageView>, ApiError> {
    let me = messaging.me();
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        let readers: Vec<String> = marks
            .iter()
            .filter(|(reader, read_at)| *reader != me && *reader != m.from && *read_at >= m.sent_at)
            .map(|(reader, _)| reader.to_string())
            .collect();
        let mine = m.from == me;
        let mut file_state = None;
        if let Some(file) = &m.extra.file {
            file_state = messaging.transfer_state(&file.transfer).await;
        }
        let sent = mine && m.status != volli_store::vault::MessageStatus::Failed;
        let mut view = MessageView::from(m);
        if let Some(file) = &mut view.file {
            file.state = file_state;
        }
        match at {
            Where::Direct(with) => {
                if sent && readers.iter().any(|r| *r == with.to_string()) {
                    view.status = "read".into();
                }
            }
            Where::Group(group) => {
                view.to = group.to_string();
                view.group = Some(group.to_string());
                if mine && view.kind != "system" {
                    let id = view.id.parse::<MessageId>().ok();
                    let receipts = match id {
                        Some(id) => messaging.group_receipts(id).await?,
                        None => Vec::new(),
                    };
                    if !receipts.is_empty() {
                        if sent && receipts.iter().all(|(u, _)| readers.contains(u)) {
                            view.status = "read".into();
                        }
                        view.receipts = Some(
                            receipts
                                .into_iter()
                                .map(|(user_id, status)| MemberReceipt {
                                    status: if readers.contains(&user_id) {
                                        "read".to_owned()
                                    } else {
                                        status.as_str().to_owned()
                                    },
                                    user_id,
                                })
                                .collect(),
                        );
                    }
                }
                view.read_by = Some(readers);
            }
        }
        out.push(view);
    }
    Ok(out)
}

/// A page of a conversation.
#[derive(Serialize, ToSchema)]
pub struct MessageList {
    /// Oldest first.
    pub messages: Vec<MessageView>,
}

/// Which conversation, and which page of it.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConversationQuery {
    /// The contact's user id; or `group` instead.
    pub with: Option<String>,
    /// A group's id, to read the group's messages (instead of `with`).
    pub group: Option<String>,
    /// Only messages before this message id (for paging back).
    pub before: Option<String>,
    /// At most this many (default 100, at most 500): the latest ones before `before`.
    pub limit: Option<usize>,
}

impl From<MessagingError> for ApiError {
    fn from(e: MessagingError) -> Self {
        match e {
            MessagingError::UnknownContact(_) => {
                ApiError::not_found("unknown_contact", e.to_string())
            }
            MessagingError::Invalid(_) => ApiError::bad_request("invalid_message", e.to_string()),
            MessagingError::UnknownMessage | MessagingError::NoSuchMessage => {
                ApiError::not_found("unknown_message", e.to_string())
            }
            MessagingError::RateLimited(secs) => ApiError::rate_limited(secs),
            MessagingError::NotAuthor => {
                ApiError::new(StatusCode::FORBIDDEN, "not_author", e.to_string())
            }
            MessagingError::InvalidReply => ApiError::bad_request("invalid_reply", e.to_string()),
            MessagingError::InvalidReaction => {
                ApiError::bad_request("invalid_reaction", e.to_string())
            }
            MessagingError::NotEditable(_) => {
                ApiError::bad_request("message_deleted", e.to_string())
            }
            MessagingError::InvalidTimer => ApiError::bad_request("invalid_timer", e.to_string()),
            MessagingError::Store(_) => ApiError::internal(e),
            MessagingError::Group(e) => e.into(),
        }
    }
}

pub(crate) fn user(text: &str) -> Result<volli_core::UserId, ApiError> {
    Contacts::parse_user(text)
        .ok_or_else(|| ApiError::bad_request("invalid_user_id", "not a user id"))
}

/// Sends a message to a contact.
///
/// The message is sealed to the recipient, stored, and delivered directly when one of the
/// recipient's devices is reachable, otherwise kept in the outbox and deposited at the
/// recipient's relays. Follow it with `message.status` events (`relayed`, `delivered`,
/// `failed`).
#[utoipa::path(post, path = "/v1/messages", tag = "messages", security(("bearer" = [])),
    request_body = SendMessage,
    responses(
        (status = 202, description = "Stored and on its way", body = Sent),
        (status = 400, description = "Not a user id (`invalid_user_id`) or group id (`invalid_group_id`), neither or both of `to` and `group` (`invalid_message`), an empty or too long text (`invalid_message`), or `reply_to` not a message of this conversation (`invalid_reply`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "Not a contact (`unknown_contact`), or no such group (`unknown_group`)", body = ErrorBody),
        (status = 429, description = "Too many messages (for this node, or for this group); see `Retry-After`", body = ErrorBody),
    ))]
pub async fn send(
    State(messaging): State<Messaging>,
    Json(body): Json<SendMessage>,
) -> Result<(StatusCode, Json<Sent>), ApiError> {
    let reply_to = match &body.reply_to {
        Some(r) => Some(message_id(r)?),
        None => None,
    };
    let message = match (&body.to, &body.group) {
        (Some(to), None) => messaging.send(user(to)?, body.body, reply_to).await?,
        (None, Some(group)) => {
            messaging
                .send_group(group_id(group)?, body.body, reply_to)
                .await?
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_message",
                "a message goes `to` a contact or to a `group`: one of the two",
            ));
        }
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(Sent {
            id: message.id.to_string(),
            status: message.status.as_str().to_owned(),
        }),
    ))
}

/// Reads a conversation, oldest first.
///
/// Messages are ordered by the time they were sent, then by id, so paging back with
/// `before` (the id of the oldest message of the previous page) never skips or repeats a
/// message, whatever arrives meanwhile. A page costs the same at any depth.
#[utoipa::path(get, path = "/v1/messages", tag = "messages", security(("bearer" = [])),
    params(ConversationQuery),
    responses(
        (status = 200, description = "The messages", body = MessageList),
        (status = 400, description = "Bad query (`invalid_user_id`, `invalid_message_id`, `invalid_query`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "`before` is not a message of this conversation (`unknown_message`)", body = ErrorBody),
    ))]
pub async fn list(
    State(messaging): State<Messaging>,
    Query(query): Query<ConversationQuery>,
) -> Result<Json<MessageList>, ApiError> {
    let before = match query.before {
        Some(b) => Some(b.parse::<MessageId>().map_err(|_| {
            ApiError::bad_request("invalid_message_id", "`before` is not a message id")
        })?),
        None => None,
    };
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`limit` is 1 to {MAX_PAGE}"),
        ));
    }
    let at = place(query.with.as_deref(), query.group.as_deref(), "read")?;
    let messages = match at {
        Where::Direct(with) => messaging.conversation(with, before, limit).await?,
        Where::Group(group) => messaging.group_conversation(group, before, limit).await?,
    };
    Ok(Json(MessageList {
        messages: views(&messaging, at, messages).await?,
    }))
}

/// The conversation `with` a contact or of a `group` (one of the two), for `what`.
fn place(with: Option<&str>, group: Option<&str>, what: &str) -> Result<Where, ApiError> {
    match (with, group) {
        (Some(with), None) => Ok(Where::Direct(user(with)?)),
        (None, Some(group)) => Ok(Where::Group(group_id(group)?)),
        _ => Err(ApiError::bad_request(
            "invalid_query",
            format!("{what} a conversation `with` a contact or of a `group`: one of the two"),
        )),
    }
}

fn message_id(text: &str) -> Result<MessageId, ApiError> {
    text.parse::<MessageId>()
        .map_err(|_| ApiError::bad_request("invalid_message_id", "not a message id"))
}

pub(crate) fn group_id(text: &str) -> Result<volli_mls::GroupRef, ApiError> {
    crate::conversations::parse_group(text)
        .ok_or_else(|| ApiError::bad_request("invalid_group_id", "not a group id (32 hex digits)"))
}

/// Whom a deletion is for.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// `everyone`: deleted for everyone (this user's own messages only): a tombstone on
    /// every member's devices, the text gone from every store and index. Without it: on this
    /// user's devices only.
    #[serde(rename = "for")]
    pub for_: Option<String>,
}

/// Deletes a message: on every device of this user (it is no longer listed, its text leaves
/// the database, and a message still waiting to be sent is not sent; a copy that arrives
/// again stays deleted; contacts keep their own copies), or with `for=everyone` for every
/// member of the conversation (its author only).
#[utoipa::path(delete, path = "/v1/messages/{id}", tag = "messages", security(("bearer" = [])),
    params(("id" = String, Path, description = "The message id"), DeleteQuery),
    responses(
        (status = 204, description = "Deleted; `messages.deleted` (this user's devices) or `message.deleted` (for everyone) follows"),
        (status = 400, description = "Not a message id (`invalid_message_id`), `for` not `everyone` (`invalid_query`), or deleted for everyone already (`message_deleted`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "For everyone, but another's message (`not_author`)", body = ErrorBody),
        (status = 404, description = "No such message, or deleted already (`unknown_message`)", body = ErrorBody),
    ))]
pub async fn delete(
    State(messaging): State<Messaging>,
    Path(id): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    let id = message_id(&id)?;
    match query.for_.as_deref() {
        None => {
            messaging.delete(id).await?;
        }
        Some("everyone") => messaging.unsend(id).await?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "`for` is `everyone`, or absent (this user's devices only)",
            ));
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The new text of a message.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditMessage {
    /// 1 byte to 64 KiB.
    pub body: String,
}

/// The one message, as the conversation lists it.
async fn one(messaging: &Messaging, id: MessageId) -> Result<Json<MessageView>, ApiError> {
    let (at, message) = messaging.find(id).await?;
    let mut views = views(messaging, at, vec![message]).await?;
    views
        .pop()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("unknown_message", "no message has this id"))
}

/// One message, as its conversation lists it (`group` says which group it is in; in a
/// one-to-one conversation, the other party is `to` or `from`).
#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages", security(("bearer" = [])),
    params(("id" = String, Path, description = "The message id")),
    responses(
        (status = 200, description = "The message", body = MessageView),
        (status = 400, description = "Not a message id (`invalid_message_id`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such message, or deleted (`unknown_message`)", body = ErrorBody),
    ))]
pub async fn get(
    State(messaging): State<Messaging>,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    one(&messaging, message_id(&id)?).await
}

/// Edits a message of this user's: the new text on every device of every member, with
/// `edited_at`.
#[utoipa::path(patch, path = "/v1/messages/{id}", tag = "messages", security(("bearer" = [])),
    params(("id" = String, Path, description = "The message id")),
    request_body = EditMessage,
    responses(
        (status = 200, description = "Edited; `message.edited` follows on every device", body = MessageView),
        (status = 400, description = "Not a message id (`invalid_message_id`), an empty or too long text (`invalid_message`), or a message deleted for everyone or not a text (`message_deleted`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Another's message (`not_author`)", body = ErrorBody),
        (status = 404, description = "No such message (`unknown_message`)", body = ErrorBody),
        (status = 429, description = "Too many messages; see `Retry-After`", body = ErrorBody),
    ))]
pub async fn edit(
    State(messaging): State<Messaging>,
    Path(id): Path<String>,
    Json(body): Json<EditMessage>,
) -> Result<Json<MessageView>, ApiError> {
    let id = message_id(&id)?;
    messaging.edit(id, body.body).await?;
    one(&messaging, id).await
}

/// A reaction.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct React {
    /// One emoji (with its skin tone or joined sequence), at most 32 bytes.
    #[schema(example = "👍")]
    pub emoji: String,
}

/// Reacts to a message: this user's one reaction to it (a new one replaces the last), on
/// every device of every member.
#[utoipa::path(post, path = "/v1/messages/{id}/reactions", tag = "messages", security(("bearer" = [])),
    params(("id" = String, Path, description = "The message id")),
    request_body = React,
    responses(
        (status = 200, description = "Set; `message.reaction` follows", body = MessageView),
        (status = 400, description = "Not a message id (`invalid_message_id`), not one emoji (`invalid_reaction`), or a message deleted for everyone (`message_deleted`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such message (`unknown_message`)", body = ErrorBody),
        (status = 429, description = "Too many messages; see `Retry-After`", body = ErrorBody),
    ))]
pub async fn react(
    State(messaging): State<Messaging>,
    Path(id): Path<String>,
    Json(body): Json<React>,
) -> Result<Json<MessageView>, ApiError> {
    let id = message_id(&id)?;
    messaging.react(id, Some(body.emoji), None).await?;
    one(&messaging, id).await
}

/// Takes back this user's reaction `emoji` to a message (another emoji, or none, changes
/// nothing).
#[utoipa::path(delete, path = "/v1/messages/{id}/reactions/{emoji}", tag = "messages", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The message id"),
        ("emoji" = String, Path, description = "The emoji (percent-encoded)"),
    ),
    responses(
        (status = 200, description = "Taken back; `message.reaction` follows", body = MessageView),
        (status = 400, description = "Not a message id (`invalid_message_id`), or not one emoji (`invalid_reaction`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such message (`unknown_message`)", body = ErrorBody),
    ))]
pub async fn unreact(
    State(messaging): State<Messaging>,
    Path((id, emoji)): Path<(String, String)>,
) -> Result<Json<MessageView>, ApiError> {
    let id = message_id(&id)?;
    if !crate::messaging::is_one_emoji(&emoji) {
        return Err(MessagingError::InvalidReaction.into());
    }
    messaging.react(id, None, Some(&emoji)).await?;
    one(&messaging, id).await
}

/// How far a conversation was read.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkRead {
    /// The contact's user id; or `group` instead.
    pub with: Option<String>,
    /// The group's id (instead of `with`).
    pub group: Option<String>,
    /// The newest message read.
    pub up_to: String,
}

/// Marks a conversation read up to a message, on every device of this user (its unread
/// count drops everywhere); unless setting `receipts.read` is `false`, the sender hears it
/// (`read` status in one-to-one, `read_by` in groups).
#[utoipa::path(post, path = "/v1/messages/read", tag = "messages", security(("bearer" = [])),
    request_body = MarkRead,
    responses(
        (status = 204, description = "Marked; `message.read` follows (unless it was read that far already)"),
        (status = 400, description = "Bad ids (`invalid_user_id`, `invalid_group_id`, `invalid_message_id`), or neither or both of `with` and `group` (`invalid_query`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "`up_to` is not a message of this conversation (`unknown_message`)", body = ErrorBody),
    ))]
pub async fn mark_read(
    State(messaging): State<Messaging>,
    Json(body): Json<MarkRead>,
) -> Result<StatusCode, ApiError> {
    let at = place(body.with.as_deref(), body.group.as_deref(), "mark")?;
    let up_to = message_id(&body.up_to)?;
    messaging.mark_read(at, up_to).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who is being typed to.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TypingTo {
    /// The contact's user id; or `group` instead.
    pub to: Option<String>,
    /// The group's id (instead of `to`).
    pub group: Option<String>,
}

/// Says this user is typing: the other side's clients get `typing`, for a few seconds.
/// Never stored or relayed; at most one frame per conversation every 3 seconds leaves (call
/// it on every keystroke).
#[utoipa::path(post, path = "/v1/typing", tag = "messages", security(("bearer" = [])),
    request_body = TypingTo,
    responses(
        (status = 204, description = "Told (or throttled)"),
        (status = 400, description = "Bad ids (`invalid_user_id`, `invalid_group_id`), or neither or both of `to` and `group` (`invalid_query`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "Not a contact (`unknown_contact`), or no such group (`unknown_group`)", body = ErrorBody),
    ))]
pub async fn typing(
    State(messaging): State<Messaging>,
    Json(body): Json<TypingTo>,
) -> Result<StatusCode, ApiError> {
    let at = place(body.to.as_deref(), body.group.as_deref(), "type in")?;
    messaging.typing(at).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One conversation of the chat list.
#[derive(Serialize, ToSchema)]
pub struct ChatView {
    /// `direct` (with a contact) or `group`.
    #[schema(example = "direct")]
    pub kind: String,
    /// The contact's user id, for `direct`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with: Option<String>,
    /// The group's id, for `group`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// What to call it: the contact's name, or the group's.
    pub title: String,
    /// Its newest message.
    pub last_message: Option<MessageView>,
    /// Messages received after this user's read mark (on any of its devices).
    pub unread: u64,
    /// Its newest activity (RFC 3339): the last message's time, or none.
    pub updated_at: Option<String>,
    /// Messages disappear this long after they are sent (0: never).
    pub disappearing_secs: u64,
}

/// The chat list.
#[derive(Serialize, ToSchema)]
pub struct ChatList {
    /// Newest activity first (conversations without messages last).
    pub conversations: Vec<ChatView>,
}

/// Every conversation, one-to-one and group together, newest activity first: each with its
/// title, last message, unread count and timer. The same on every device of the user.
#[utoipa::path(get, path = "/v1/conversations", tag = "messages", security(("bearer" = [])),
    responses(
        (status = 200, description = "The conversations", body = ChatList),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn chats(
    State(messaging): State<Messaging>,
    State(contacts): State<Contacts>,
    State(conversations): State<crate::conversations::Conversations>,
) -> Result<Json<ChatList>, ApiError> {
    let names: std::collections::HashMap<String, String> = contacts
        .list()
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|c| (c.user_id.to_string(), c.name))
        .collect();
    let groups: std::collections::HashMap<String, String> = conversations
        .groups()
        .await
        .into_iter()
        .map(|g| (g.id.to_string(), g.name))
        .collect();
    let mut out = Vec::new();
    for chat in messaging.chats().await? {
        out.push(chat_view(&messaging, chat, &names, &groups).await?);
    }
    Ok(Json(ChatList { conversations: out }))
}

async fn chat_view(
    messaging: &Messaging,
    chat: crate::messaging::ChatSummary,
    names: &std::collections::HashMap<String, String>,
    groups: &std::collections::HashMap<String, String>,
) -> Result<ChatView, ApiError> {
    let updated_at = chat.last.as_ref().map(|m| m.sent_at.to_rfc3339());
    let last_message = match chat.last {
        Some(m) => views(messaging, chat.at, vec![m]).await?.pop(),
        None => None,
    };
    Ok(match chat.at {
        Where::Direct(with) => {
            let with = with.to_string();
            ChatView {
                kind: "direct".into(),
                title: names
                    .get(&with)
                    .cloned()
                    .unwrap_or_else(|| with.chars().take(12).collect()),
                with: Some(with),
                group: None,
                last_message,
                unread: chat.unread,
                updated_at,
                disappearing_secs: chat.timer,
            }
        }
        Where::Group(group) => {
            let group = group.to_string();
            ChatView {
                kind: "group".into(),
                title: groups
                    .get(&group)
                    .cloned()
                    .unwrap_or_else(|| "(left)".into()),
                with: None,
                group: Some(group),
                last_message,
                unread: chat.unread,
                updated_at,
                disappearing_secs: chat.timer,
            }
        }
    })
}

/// A disappearing timer.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTimer {
    /// Seconds: 0 (off), or 30 to 2,419,200 (28 days).
    pub secs: u64,
}

/// A conversation's timer.
#[derive(Serialize, ToSchema)]
pub struct TimerView {
    /// The contact's user id.
    pub with: String,
    /// Messages sent from now on disappear this long after they are sent (0: never).
    pub disappearing_secs: u64,
}

/// Sets the disappearing timer of the conversation with a contact (either side may): a line
/// in the conversation on every device of both, and messages sent from then on disappear
/// from every device that long after they were sent.
#[utoipa::path(put, path = "/v1/conversations/{user_id}/disappearing", tag = "messages", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "The contact's user id")),
    request_body = SetTimer,
    responses(
        (status = 200, description = "Set; `conversation.changed` follows", body = TimerView),
        (status = 400, description = "Not a user id (`invalid_user_id`), or out of range (`invalid_timer`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "Not a contact (`unknown_contact`)", body = ErrorBody),
    ))]
pub async fn set_timer(
    State(messaging): State<Messaging>,
    Path(user_id): Path<String>,
    Json(body): Json<SetTimer>,
) -> Result<Json<TimerView>, ApiError> {
    let with = user(&user_id)?;
    messaging.set_timer(Where::Direct(with), body.secs).await?;
    Ok(Json(TimerView {
        with: with.to_string(),
        disappearing_secs: messaging.timer(Where::Direct(with)).await?,
    }))
}

/// A device in a conversation.
#[derive(Serialize, ToSchema)]
pub struct MemberView {
    /// Its user.
    pub user_id: String,
    /// The device.
    pub peer_id: String,
}

/// How a conversation is encrypted.
#[derive(Serialize, ToSchema)]
pub struct ConversationView {
    /// The other party's user id.
    pub with: String,
    /// `mls`: an MLS group of both users' devices (forward secrecy, post-compromise
    /// security); `hpke`: each message sealed to the recipient's user key, until the two
    /// nodes have exchanged key packages and the next message moves it to MLS.
    #[schema(example = "mls")]
    pub encryption: String,
    /// Whether the next message can move a conversation still on `hpke` to MLS.
    pub ready: bool,
    /// The group's epoch: it moves on with every commit (a device added, removed or
    /// updated).
    pub epoch: Option<u64>,
    /// The devices that read the conversation.
    pub members: Vec<MemberView>,
    /// The device that orders the conversation's commits.
    pub committer: Option<String>,
    /// When this device last refreshed its own keys in it (RFC 3339).
    pub keys_updated_at: Option<String>,
}

/// How the conversation with a contact is encrypted, and which devices read it.
#[utoipa::path(get, path = "/v1/conversations/{user_id}", tag = "messages", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "The contact's user id")),
    responses(
        (status = 200, description = "The conversation", body = ConversationView),
        (status = 400, description = "Not a user id (`invalid_user_id`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "Not a contact (`unknown_contact`)", body = ErrorBody),
    ))]
pub async fn conversation(
    State(contacts): State<Contacts>,
    State(conversations): State<crate::conversations::Conversations>,
    Path(user_id): Path<String>,
) -> Result<Json<ConversationView>, ApiError> {
    let with = user(&user_id)?;
    contacts
        .get(with)
        .await
        .map_err(|_| ApiError::not_found("unknown_contact", format!("{with} is not a contact")))?;
    let status = conversations.status(with).await;
    Ok(Json(ConversationView {
        with: with.to_string(),
        encryption: if status.on_mls { "mls" } else { "hpke" }.to_owned(),
        ready: status.ready,
        epoch: status.epoch,
        members: status
            .members
            .into_iter()
            .map(|(user, peer)| MemberView {
                user_id: user.to_string(),
                peer_id: peer.to_string(),
            })
            .collect(),
        committer: status.committer.map(|p| p.to_string()),
        keys_updated_at: status.updated_at.map(|t| t.to_rfc3339()),
    }))
}

/// How many messages were deleted.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    /// Messages deleted (0 when there were none).
    pub deleted: usize,
}

/// Deletes every message of the conversation with a user, on every device of the user.
/// The contact stays a contact; deleting a conversation without messages deletes nothing.
#[utoipa::path(delete, path = "/v1/conversations/{user_id}", tag = "messages", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "The other party's user id")),
    responses(
        (status = 200, description = "Deleted; `messages.deleted` events follow", body = Deleted),
        (status = 400, description = "Not a user id (`invalid_user_id`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn delete_conversation(
    State(messaging): State<Messaging>,
    Path(user_id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let with = user(&user_id)?;
    let deleted = messaging.delete_conversation(with).await?;
    Ok(Json(Deleted { deleted }))
}

impl From<RetentionError> for ApiError {
    fn from(e: RetentionError) -> Self {
        match e {
            RetentionError::Invalid(_) => ApiError::bad_request("invalid_retention", e.to_string()),
            RetentionError::Store(_) => ApiError::internal(e),
        }
    }
}

/// The retention rules: how long messages are kept, by default and per conversation.
#[utoipa::path(get, path = "/v1/retention", tag = "messages", security(("bearer" = [])),
    responses(
        (status = 200, description = "The rules (`{}` rules keep everything)", body = Rules),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn retention(State(retention): State<Retention>) -> Result<Json<Rules>, ApiError> {
    Ok(Json(retention.rules().await.map_err(ApiError::internal)?))
}

/// Replaces the retention rules. They are kept in the vault, so every device of the user
/// applies the same rules; they are applied at once (and then every hour): messages sent
/// more than `days` ago, or beyond the newest `keep_last` of their conversation, are deleted.
#[utoipa::path(put, path = "/v1/retention", tag = "messages", security(("bearer" = [])),
    request_body = Rules,
    responses(
        (status = 200, description = "Saved; being applied", body = Rules),
        (status = 400, description = "Out of range, or not a user id (`invalid_retention`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn set_retention(
    State(retention): State<Retention>,
    Json(body): Json<serde_json::Value>,
) -> Result<Json<Rules>, ApiError> {
    // Rules are objects only (serde would also take a struct written as an array).
    let objects = body.as_object().is_some_and(|o| {
        o.get("default").is_none_or(serde_json::Value::is_object)
            && o.get("conversations").is_none_or(|c| {
                c.as_object()
                    .is_some_and(|c| c.values().all(serde_json::Value::is_object))
            })
    });
    let rules: Rules = serde_json::from_value(body)
        .ok()
        .filter(|_| objects)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_retention",
                "expected {\"default\": {\"days\"?, \"keep_last\"?}, \"conversations\": {user_id: rule}}",
            )
        })?;
    Ok(Json(retention.set_rules(rules).await?))
}
