//! `/v1/contacts`: add a contact from an invite, list, rename, remove.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use volli_store::vault::Contact;

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path};
use crate::contacts::{Accepted, ContactError, Contacts};
use crate::profile::Profile;

/// A contact.
#[derive(Serialize, ToSchema)]
#[schema(as = Contact)]
pub struct ContactView {
    /// Their user id.
    pub user_id: String,
    /// This user's name for them: the one given with `PATCH`, else `display_name`.
    pub name: String,
    /// Their own name, as their latest contact card says.
    pub display_name: String,
    /// Whether this user gave them a name of its own (`name` then differs from
    /// `display_name` and no longer follows it).
    pub renamed: bool,
    /// Whether their picture is here (`GET /v1/contacts/{user_id}/avatar`).
    pub avatar: bool,
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
            display_name: c.display_name,
            renamed: c.renamed,
            avatar: false,
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
    /// The name given to the inviter when the invite was accepted, if any.
    pub name: Option<String>,
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

fn check_name(name: Option<String>) -> Result<Option<String>, ApiError> {
    name.map(|n| crate::profile::check_name(&n))
        .transpose()
        .map_err(ApiError::from)
}

/// A contact as the API shows it, with whether its picture is here.
async fn view(profile: &Profile, contact: Contact) -> ContactView {
    let user = contact.user_id;
    let mut view = ContactView::from(contact);
    view.avatar = profile.has_contact_avatar(user).await;
    view
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
    State(profile): State<Profile>,
    Json(body): Json<AddContact>,
) -> Result<Response, ApiError> {
    let name = check_name(body.name)?;
    match contacts.accept(&body.invite, name.clone()).await? {
        Accepted::Contact(contact) => {
            Ok((StatusCode::CREATED, Json(view(&profile, *contact).await)).into_response())
        }
        Accepted::Pending { inviter, reason } => Ok((
            StatusCode::ACCEPTED,
            Json(PendingView {
                state: "pending",
                user_id: inviter.to_string(),
                name,
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
pub async fn list(
    State(contacts): State<Contacts>,
    State(profile): State<Profile>,
) -> Result<Json<ContactList>, ApiError> {
    let list = contacts.list().await?;
    let pending = contacts.pending().await?;
    let mut views = Vec::with_capacity(list.len());
    for c in list {
        views.push(view(&profile, c).await);
    }
    Ok(Json(ContactList {
        contacts: views,
        pending: pending
            .into_iter()
            .map(|p| PendingView {
                state: "pending",
                user_id: p.inviter,
                name: p.name,
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
    State(profile): State<Profile>,
    Path(user_id): Path<String>,
) -> Result<Json<ContactView>, ApiError> {
    Ok(Json(
        view(&profile, contacts.get(user(&user_id)?).await?).await,
    ))
}

/// This user's own name for a contact.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    /// 1 to 64 bytes (after trimming), no control characters; `null`: their own name again.
    pub name: Option<String>,
}

/// Gives a contact a name of this user's own (or, with `null`, their own name again). The
/// name syncs to the user's other devices; the contact's own name (`display_name`) stays as
/// their card says. `contact.changed` follows.
#[utoipa::path(patch, path = "/v1/contacts/{user_id}", tag = "contacts", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "The contact's user id")),
    request_body = Rename,
    responses(
        (status = 200, description = "The contact", body = ContactView),
        (status = 400, description = "Not a user id (`invalid_user_id`), or a bad name (`invalid_name`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "Not a contact (`unknown_contact`)", body = ErrorBody),
    ))]
pub async fn rename(
    State(contacts): State<Contacts>,
    State(profile): State<Profile>,
    Path(user_id): Path<String>,
    Json(body): Json<Rename>,
) -> Result<Json<ContactView>, ApiError> {
    let user = user(&user_id)?;
    let name = check_name(body.name)?;
    let contact = contacts.rename(user, name).await?;
    profile.tell_contact_changed(user).await;
    Ok(Json(view(&profile, contact).await))
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
