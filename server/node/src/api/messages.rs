//! `/v1/messages`: send a message to a contact, read a conversation.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use volli_core::MessageId;
use volli_store::vault::StoredMessage;

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path, Query};
use crate::contacts::Contacts;
use crate::messaging::{Messaging, MessagingError};
use crate::retention::{Retention, RetentionError, Rules};

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
    /// The text.
    pub body: String,
    /// When the sender sent it (RFC 3339).
    pub sent_at: String,
    /// `queued`, `relayed`, `delivered`, `failed` (sent) or `received` (incoming). A group
    /// message sent is as far as its least advanced member.
    pub status: String,
    /// The group's id, for a message of a group (`to` is then the group's id too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Each member's status, for a group message this device sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipts: Option<Vec<MemberReceipt>>,
}

/// How far a group message got with one member.
#[derive(Serialize, ToSchema)]
pub struct MemberReceipt {
    /// The member's user id.
    pub user_id: String,
    /// `queued`, `relayed` (held by a relay, or handed to a member who carries it),
    /// `delivered` or `failed`.
    pub status: String,
}

impl From<StoredMessage> for MessageView {
    fn from(m: StoredMessage) -> Self {
        Self {
            id: m.id.to_string(),
            from: m.from.to_string(),
            to: m.to.to_string(),
            body: m.body,
            sent_at: m.sent_at.to_rfc3339(),
            status: m.status.as_str().to_owned(),
            group: None,
            receipts: None,
        }
    }
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
        (status = 400, description = "Not a user id (`invalid_user_id`) or group id (`invalid_group_id`), neither or both of `to` and `group` (`invalid_message`), or an empty or too long text (`invalid_message`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "Not a contact (`unknown_contact`), or no such group (`unknown_group`)", body = ErrorBody),
        (status = 429, description = "Too many messages (for this node, or for this group); see `Retry-After`", body = ErrorBody),
    ))]
pub async fn send(
    State(messaging): State<Messaging>,
    Json(body): Json<SendMessage>,
) -> Result<(StatusCode, Json<Sent>), ApiError> {
    let message = match (&body.to, &body.group) {
        (Some(to), None) => messaging.send(user(to)?, body.body).await?,
        (None, Some(group)) => messaging.send_group(group_id(group)?, body.body).await?,
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
    match (&query.with, &query.group) {
        (Some(with), None) => {
            let messages = messaging.conversation(user(with)?, before, limit).await?;
            Ok(Json(MessageList {
                messages: messages.into_iter().map(MessageView::from).collect(),
            }))
        }
        (None, Some(group)) => {
            let group = group_id(group)?;
            let messages = messaging.group_conversation(group, before, limit).await?;
            let mut views = Vec::with_capacity(messages.len());
            for m in messages {
                views.push(render(&messaging, m, Some(group)).await?);
            }
            Ok(Json(MessageList { messages: views }))
        }
        _ => Err(ApiError::bad_request(
            "invalid_query",
            "read a conversation `with` a contact or of a `group`: one of the two",
        )),
    }
}

/// A message as every route shows it: in a group (`group`), addressed to the group, with
/// each member's receipt for a message this device sent.
pub(crate) async fn render(
    messaging: &Messaging,
    m: StoredMessage,
    group: Option<volli_mls::GroupRef>,
) -> Result<MessageView, ApiError> {
    let Some(group) = group else {
        return Ok(MessageView::from(m));
    };
    let receipts = if m.status == volli_store::vault::MessageStatus::Received {
        None
    } else {
        let r = messaging.group_receipts(m.id).await?;
        (!r.is_empty()).then(|| {
            r.into_iter()
                .map(|(user_id, status)| MemberReceipt {
                    user_id,
                    status: status.as_str().to_owned(),
                })
                .collect()
        })
    };
    let mut view = MessageView::from(m);
    view.to = group.to_string();
    view.group = Some(group.to_string());
    view.receipts = receipts;
    Ok(view)
}

pub(crate) fn group_id(text: &str) -> Result<volli_mls::GroupRef, ApiError> {
    crate::conversations::parse_group(text)
        .ok_or_else(|| ApiError::bad_request("invalid_group_id", "not a group id (32 hex digits)"))
}

/// Deletes a message on every device of the user: it is no longer listed, its text leaves
/// the database, and a message still waiting to be sent is not sent. A copy that arrives
/// again (a retry, a relay) stays deleted. Contacts keep their own copies.
#[utoipa::path(delete, path = "/v1/messages/{id}", tag = "messages", security(("bearer" = [])),
    params(("id" = String, Path, description = "The message id")),
    responses(
        (status = 204, description = "Deleted; `messages.deleted` follows"),
        (status = 400, description = "Not a message id (`invalid_message_id`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such message, or deleted already (`unknown_message`)", body = ErrorBody),
    ))]
pub async fn delete(
    State(messaging): State<Messaging>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = id
        .parse::<MessageId>()
        .map_err(|_| ApiError::bad_request("invalid_message_id", "not a message id"))?;
    messaging.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
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
