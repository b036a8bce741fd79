//! `/v1/push`: Web Push subscriptions of clients, the node's VAPID key, and a test push.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, OptionalJson, Path};
use crate::clients::{Caller, Scope};
use crate::push::{Push, PushError, SubscriptionInfo};

impl From<PushError> for ApiError {
    fn from(e: PushError) -> Self {
        let message = e.to_string();
        match e {
            PushError::InvalidEndpoint(_) | PushError::InvalidKeys(_) => {
                ApiError::bad_request("invalid_subscription", message)
            }
            PushError::TooMany(_) => {
                ApiError::new(StatusCode::CONFLICT, "too_many_subscriptions", message)
            }
            PushError::Revoked => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message),
            PushError::Store(_) => ApiError::internal(e),
        }
    }
}

/// Whose subscriptions a caller sees and changes: a client its own, an admin all.
fn owner(caller: &Caller) -> (Option<&str>, bool) {
    match &caller.client {
        Some(c) if !caller.scopes.allows(Scope::Admin) => (Some(c.id.as_str()), false),
        Some(c) => (Some(c.id.as_str()), true),
        None => (None, true),
    }
}

/// The node's VAPID public key.
#[derive(Serialize, ToSchema)]
pub struct VapidKey {
    /// An uncompressed P-256 point, base64url: the `applicationServerKey` for
    /// `pushManager.subscribe`.
    pub public_key: String,
}

/// The key push subscriptions are made for (`applicationServerKey`).
#[utoipa::path(get, path = "/v1/push/vapid", tag = "push", security(("bearer" = [])),
    responses(
        (status = 200, description = "The key", body = VapidKey),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn vapid(State(push): State<Push>) -> Json<VapidKey> {
    Json(VapidKey {
        public_key: push.public_key().to_owned(),
    })
}

/// A subscription's keys, as `PushSubscription.toJSON()` gives them.
#[derive(Deserialize, ToSchema)]
pub struct SubscriptionKeys {
    /// The subscription's P-256 public key, base64url.
    #[schema(max_length = 128)]
    pub p256dh: String,
    /// Its 16-byte authentication secret, base64url.
    #[schema(max_length = 64)]
    pub auth: String,
}

/// A Web Push subscription (what browsers and UnifiedPush distributors hand out).
#[derive(Deserialize, ToSchema)]
pub struct NewSubscription {
    /// The push service's URL for this subscription (`https://`).
    #[schema(max_length = 2048, example = "https://push.example.org/send/abc")]
    pub endpoint: String,
    /// Its keys.
    pub keys: SubscriptionKeys,
    /// Put the message text and file names into pushes (encrypted to the subscription, but
    /// the phone's OS sees them). Default false: pushes say only what arrived, from whom.
    #[serde(default)]
    pub include_text: bool,
    /// When the browser says it expires; not used. Accepted because `toJSON()` has it.
    #[serde(default, rename = "expirationTime")]
    #[schema(value_type = Option<f64>)]
    pub expiration_time: Option<serde_json::Value>,
}

/// A registered subscription.
#[derive(Serialize, ToSchema)]
pub struct SubscriptionCreated {
    /// Its id.
    pub id: String,
}

/// Registers a Web Push subscription for the caller.
///
/// The node then pushes, for new messages, file offers and pairing requests, a JSON payload
/// `{"counts": {"message.received": 2, …}, "latest": {"type", "id", "from", …}}`, encrypted
/// with RFC 8291 (`aes128gcm`) and signed with the node's VAPID key (RFC 8292), with
/// `Topic: volli` and `Urgency: high` for messages. Events within two seconds of a push go
/// out together in the next one. The same endpoint again replaces the earlier subscription.
#[utoipa::path(post, path = "/v1/push/subscriptions", tag = "push", security(("bearer" = [])),
    request_body = NewSubscription,
    responses(
        (status = 201, description = "Registered", body = SubscriptionCreated),
        (status = 400, description = "Not an https endpoint or not a P-256 key and 16-byte secret (`invalid_subscription`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 409, description = "The node has 100 subscriptions (`too_many_subscriptions`)", body = ErrorBody),
    ))]
pub async fn subscribe(
    State(push): State<Push>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<NewSubscription>,
) -> Result<(StatusCode, Json<SubscriptionCreated>), ApiError> {
    let client = caller.client.as_ref().map(|c| c.id.as_str());
    let id = push
        .subscribe(
            client,
            &body.endpoint,
            &body.keys.p256dh,
            &body.keys.auth,
            body.include_text,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(SubscriptionCreated { id })))
}

/// A subscription as listed.
#[derive(Serialize, ToSchema)]
pub struct SubscriptionView {
    /// Its id.
    pub id: String,
    /// The client that registered it (null: the admin).
    pub client_id: Option<String>,
    /// The push service's host (the endpoint itself is a secret URL).
    pub push_service: String,
    /// Whether pushes carry message text.
    pub include_text: bool,
    /// When it was registered (RFC 3339).
    pub created_at: String,
    /// When a push to it was last accepted (RFC 3339), since the node started.
    pub last_push_at: Option<String>,
    /// The last failure, in words.
    pub last_error: Option<String>,
}

impl From<SubscriptionInfo> for SubscriptionView {
    fn from(s: SubscriptionInfo) -> Self {
        Self {
            id: s.id,
            client_id: s.client_id,
            push_service: s.push_service,
            include_text: s.include_text,
            created_at: s.created_at.to_rfc3339(),
            last_push_at: s.last_push_at.map(|t| t.to_rfc3339()),
            last_error: s.last_error,
        }
    }
}

/// Subscriptions.
#[derive(Serialize, ToSchema)]
pub struct SubscriptionList {
    /// Oldest first.
    pub subscriptions: Vec<SubscriptionView>,
}

/// Lists the caller's subscriptions (an admin's: all of them).
#[utoipa::path(get, path = "/v1/push/subscriptions", tag = "push", security(("bearer" = [])),
    responses(
        (status = 200, description = "The subscriptions", body = SubscriptionList),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn list(
    State(push): State<Push>,
    Extension(caller): Extension<Caller>,
) -> Json<SubscriptionList> {
    let (client, all) = owner(&caller);
    Json(SubscriptionList {
        subscriptions: push
            .list(client, all)
            .into_iter()
            .map(SubscriptionView::from)
            .collect(),
    })
}

fn unknown() -> ApiError {
    ApiError::not_found(
        "unknown_subscription",
        "no subscription of yours has this id; `GET /v1/push/subscriptions` lists them",
    )
}

/// Removes a subscription (a client's own; an admin's: any).
#[utoipa::path(delete, path = "/v1/push/subscriptions/{id}", tag = "push", security(("bearer" = [])),
    params(("id" = String, Path, description = "The subscription's id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such subscription of the caller (`unknown_subscription`)", body = ErrorBody),
    ))]
pub async fn unsubscribe(
    State(push): State<Push>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (client, all) = owner(&caller);
    if push
        .unsubscribe(&id, client, all)
        .await
        .map_err(ApiError::internal)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(unknown())
    }
}

/// Which subscription to test.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct TestPush {
    /// One subscription; default all of the caller's.
    pub id: Option<String>,
}

/// How many test pushes were queued.
#[derive(Serialize, ToSchema)]
pub struct TestQueued {
    /// Subscriptions a test push goes to.
    pub queued: usize,
}

/// Sends a test push (`{"counts": {"test": 1}, "latest": {"type": "test", "at"}}`) to the
/// caller's subscriptions, or to one.
#[utoipa::path(post, path = "/v1/push/test", tag = "push", security(("bearer" = [])),
    request_body = Option<TestPush>,
    responses(
        (status = 202, description = "Queued", body = TestQueued),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such subscription of the caller (`unknown_subscription`)", body = ErrorBody),
    ))]
pub async fn test(
    State(push): State<Push>,
    Extension(caller): Extension<Caller>,
    OptionalJson(body): OptionalJson<TestPush>,
) -> Result<(StatusCode, Json<TestQueued>), ApiError> {
    let (client, all) = owner(&caller);
    let queued = push.test(body.id.as_deref(), client, all);
    if body.id.is_some() && queued == 0 {
        return Err(unknown());
    }
    Ok((StatusCode::ACCEPTED, Json(TestQueued { queued })))
}
