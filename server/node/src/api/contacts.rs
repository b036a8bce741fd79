//! `/v1/contacts`: add a contact from an invite, list, remove.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use volli_store::vault::Contact;

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path};
use crate::contacts::{Accepted, ContactError, Contacts};

/// A contact.
#[derive(Serialize, ToSchema)]
#[schema(as = Contact)]
pub struct ContactView {
    /// Their user id.
    pub user_id: String,
    /// The name this user gave them (their own, by default).
    pub name: String,
    /// Their devices' peer ids.
    pub devices: Vec<String>,
    /// When they were added (RFC 3339).
    pub added_at: String,
    /// The contacts that hold mail for them (user ids), from their latest card.
    pub relays: Vec<String>,
}

impl From<Contact> for ContactView {
    fn from(c: Contact) -> Self {
        Self {
            user_id: c.user_id.to_string(),
            name: c.name,
            devices: c.devices.iter().map(|d| d.peer_id().to_base58()).collect(),
            added_at: c.added_at.to_rfc3339(),
            relays: c.card.relays().iter().map(ToString::to_string).collect(),
        }
    }
}

/// An invite accepted while the inviter was unreachable.
#[derive(Serialize, ToSchema)]
pub struct PendingView {
    /// Always `pending`.
    #[schema(example = "pending")]
    pub state: &'static str,
    /// The inviter's user id.
    pub user_id: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// Every contact, and the invites still being redeemed.
#[derive(Serialize, ToSchema)]
pub struct ContactList {
    /// Contacts, by user id.
    pub contacts: Vec<ContactView>,
    /// Invites accepted whose inviter has not been reached yet.
    pub pending: Vec<PendingView>,
}

/// An invite to accept.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddContact {
    /// The `volli://invite/…` link.
    pub invite: String,
    /// The name to give the contact (their own, by default).
    pub name: Option<String>,
}

impl From<ContactError> for ApiError {
    fn from(e: ContactError) -> Self {
        match e {
            ContactError::InvalidInvite(_) => {
                ApiError::bad_request("invalid_invite", e.to_string())
            }
            ContactError::Expired => {
                ApiError::new(StatusCode::GONE, "invite_expired", e.to_string())
            }
            ContactError::Used => ApiError::new(StatusCode::CONFLICT, "invite_used", e.to_string()),
            ContactError::Refused(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "invite_refused", e.to_string())
            }
            ContactError::NotFound => ApiError::not_found("unknown_contact", e.to_string()),
            ContactError::NotAdmin => {
                ApiError::new(StatusCode::FORBIDDEN, "not_admin", e.to_string())
            }
            ContactError::Store(_) => ApiError::internal(e),
        }
    }
}

fn check_name(name: &Option<String>) -> Result<(), ApiError> {
    match name {
        Some(n) if n.trim().is_empty() || n.len() > 64 => Err(ApiError::bad_request(
            "invalid_name",
            "names are 1 to 64 bytes",
        )),
        _ => Ok(()),
    }
}

/// Accepts an invite.
///
/// Verifies the link, reaches the inviter's device and redeems the invite; both users then
/// have each other as contacts. If the inviter cannot be reached now, answers 202 and keeps
/// trying; `contact.added` (or `contact.failed`) follows on the event stream.
#[utoipa::path(post, path = "/v1/contacts", tag = "contacts", security(("bearer" = [])),
    request_body = AddContact,
    responses(
        (status = 201, description = "The new contact", body = ContactView),
        (status = 202, description = "The inviter is unreachable; redeeming continues", body = PendingView),
        (status = 400, description = "Not a valid invite (`invalid_invite`) or a bad name (`invalid_name`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The inviter refused (`invite_refused`), e.g. it removed this user after issuing the invite", body = ErrorBody),
        (status = 409, description = "The invite was used up (`invite_used`)", body = ErrorBody),
        (status = 410, description = "The invite has expired (`invite_expired`)", body = ErrorBody),
    ))]
pub async fn add(
    State(contacts): State<Contacts>,
    Json(body): Json<AddContact>,
) -> Result<Response, ApiError> {
    check_name(&body.name)?;
    match contacts.accept(&body.invite, body.name).await? {
        Accepted::Contact(contact) => {
            Ok((StatusCode::CREATED, Json(ContactView::from(*contact))).into_response())
        }
        Accepted::Pending { inviter, reason } => Ok((
            StatusCode::ACCEPTED,
            Json(PendingView {
                state: "pending",
                user_id: inviter.to_string(),
                attempts: 1,
                last_error: Some(reason),
            }),
        )
            .into_response()),
    }
}

/// Lists contacts and pending invites.
#[utoipa::path(get, path = "/v1/contacts", tag = "contacts", security(("bearer" = [])),
    responses(
        (status = 200, description = "Contacts", body = ContactList),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn list(State(contacts): State<Contacts>) -> Result<Json<ContactList>, ApiError> {
    let list = contacts.list().await?;
    let pending = contacts.pending().await?;
    Ok(Json(ContactList {
        contacts: list.into_iter().map(ContactView::from).collect(),
        pending: pending
            .into_iter()
            .map(|p| PendingView {
                state: "pending",
                user_id: p.inviter,
                attempts: p.attempts,
                last_error: p.last_error,
            })
            .collect(),
    }))
}

fn user(text: &str) -> Result<volli_core::UserId, ApiError> {
    Contacts::parse_user(text)
        .ok_or_else(|| ApiError::bad_request("invalid_user_id", "not a user id"))
}

/// One contact.
#[utoipa::path(get, path = "/v1/contacts/{user_id}", tag = "contacts", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "The contact's user id")),
    responses(
        (status = 200, description = "The contact", body = ContactView),
        (status = 400, description = "Not a user id", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "Not a contact", body = ErrorBody),
    ))]
pub async fn get(
    State(contacts): State<Contacts>,
    Path(user_id): Path<String>,
) -> Result<Json<ContactView>, ApiError> {
    Ok(Json(contacts.get(user(&user_id)?).await?.into()))
}

/// Removes a contact (or a pending invite from them).
#[utoipa::path(delete, path = "/v1/contacts/{user_id}", tag = "contacts", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "The contact's user id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Not a user id", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "Not a contact", body = ErrorBody),
    ))]
pub async fn remove(
    State(contacts): State<Contacts>,
    Path(user_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    contacts.remove(user(&user_id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
