//! `/v1/groups`: group conversations — create, read, rename, add, remove (or leave), roles.
//! Messages to a group go through `POST /v1/messages` with `group`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use volli_mls::{GroupChange, GroupRef, Role};

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path};
use crate::contacts::Contacts;
use crate::conversations::{Conversations, GroupError, GroupView, parse_group};
use crate::messaging::Messaging;

/// A member of a group.
#[derive(Serialize, ToSchema)]
pub struct GroupMemberView {
    /// The member's user id.
    pub user_id: String,
    /// `admin` (adds, removes, promotes, renames) or `member`.
    #[schema(example = "member")]
    pub role: String,
    /// Its devices in the group (peer ids); empty until their key packages reach the group.
    pub devices: Vec<String>,
    /// The member who brought it in (a contact of it), absent for the creator.
    pub sponsor: Option<String>,
    /// Its name as this user knows it: this user's own display name, a contact's name;
    /// absent for a member this user does not know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Who is who, for members' names: this user's display name and its contacts' names.
pub struct MemberNames(std::collections::HashMap<volli_core::UserId, String>);

impl axum::extract::FromRequestParts<super::ApiState> for MemberNames {
    type Rejection = ApiError;

    async fn from_request_parts(
        _parts: &mut axum::http::request::Parts,
        state: &super::ApiState,
    ) -> Result<Self, ApiError> {
        let mut names: std::collections::HashMap<_, _> = state
            .contacts
            .list()
            .await?
            .into_iter()
            .map(|c| (c.user_id, c.name))
            .collect();
        names.insert(state.node.user_id(), state.profile.name().await?);
        Ok(Self(names))
    }
}

impl MemberNames {
    /// `group` as the API shows it, with its members' names.
    fn json(&self, group: GroupView) -> GroupJson {
        let mut json = GroupJson::from(group);
        for m in &mut json.members {
            m.name = m.user_id.parse().ok().and_then(|u| self.0.get(&u).cloned());
        }
        json
    }
}

/// A group.
#[derive(Serialize, ToSchema)]
#[schema(as = Group)]
pub struct GroupJson {
    /// The group id (32 hex digits).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its members, in the order they joined.
    pub members: Vec<GroupMemberView>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// The group's epoch: it moves on with every change.
    pub epoch: u64,
    /// The device that orders the group's changes.
    pub committer: Option<String>,
    /// Messages disappear this long after they are sent (0: never); admins set it.
    pub disappearing_secs: u64,
}

impl From<GroupView> for GroupJson {
    fn from(g: GroupView) -> Self {
        Self {
            id: g.id.to_string(),
            name: g.name,
            members: g
                .members
                .into_iter()
                .map(|m| GroupMemberView {
                    user_id: m.user.to_string(),
                    role: m.role.as_str().to_owned(),
                    devices: m.devices.iter().map(|p| p.to_base58()).collect(),
                    sponsor: m.sponsor.map(|s| s.to_string()),
                    name: None,
                })
                .collect(),
            created_at: g.created_at.to_rfc3339(),
            epoch: g.epoch,
            committer: g.committer.map(|p| p.to_base58()),
            disappearing_secs: 0,
        }
    }
}

/// The groups this node's user is in.
#[derive(Serialize, ToSchema)]
pub struct GroupList {
    /// Oldest first.
    pub groups: Vec<GroupJson>,
}

/// A group to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// Its name, 1 to 64 bytes.
    pub name: String,
    /// Its first members: user ids of contacts (this user is its first admin).
    #[serde(default)]
    pub members: Vec<String>,
}

/// What to change in a group: its name, its timer, or both.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameGroup {
    /// A new name, 1 to 64 bytes.
    pub name: Option<String>,
    /// A new disappearing timer, in seconds: 0 (off), or 30 to 2,419,200 (28 days).
    pub disappearing_secs: Option<u64>,
}

/// `group` as the API shows it, with its timer.
async fn shown(
    messaging: &Messaging,
    names: &MemberNames,
    group: GroupView,
) -> Result<GroupJson, ApiError> {
    let id = group.id;
    let mut json = names.json(group);
    json.disappearing_secs = messaging.timer(crate::timeline::Where::Group(id)).await?;
    Ok(json)
}

/// A member to add.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// A contact's user id.
    pub user_id: String,
}

/// A member's new role.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    /// `admin` or `member`.
    pub role: String,
}

impl From<GroupError> for ApiError {
    fn from(e: GroupError) -> Self {
        match e {
            GroupError::UnknownGroup => ApiError::not_found("unknown_group", e.to_string()),
            GroupError::NotAdmin => {
                ApiError::new(StatusCode::FORBIDDEN, "not_group_admin", e.to_string())
            }
            GroupError::UnknownMember(_) => ApiError::not_found("unknown_member", e.to_string()),
            GroupError::UnknownContact(_) => ApiError::not_found("unknown_contact", e.to_string()),
            GroupError::Full(_) => ApiError::new(StatusCode::CONFLICT, "group_full", e.to_string()),
            GroupError::Invalid(_) => ApiError::bad_request("invalid_group", e.to_string()),
            GroupError::Conversation(_) => ApiError::internal(e),
        }
    }
}

fn group_id(text: &str) -> Result<GroupRef, ApiError> {
    parse_group(text)
        .ok_or_else(|| ApiError::bad_request("invalid_group_id", "not a group id (32 hex digits)"))
}

fn user(text: &str) -> Result<volli_core::UserId, ApiError> {
    Contacts::parse_user(text)
        .ok_or_else(|| ApiError::bad_request("invalid_user_id", "not a user id"))
}

fn name(text: &str) -> Result<String, ApiError> {
    let name = text.trim();
    if name.is_empty() || name.len() > volli_mls::MAX_GROUP_NAME {
        return Err(ApiError::bad_request(
            "invalid_group",
            format!("a group's name is 1 to {} bytes", volli_mls::MAX_GROUP_NAME),
        ));
    }
    Ok(name.to_owned())
}

/// Creates a group of contacts, end-to-end encrypted on MLS across every member's devices.
///
/// This user is its first admin. Members' devices whose key packages this node holds join at
/// once; the others as soon as theirs arrive. `group.created` follows on every member.
#[utoipa::path(post, path = "/v1/groups", tag = "groups", security(("bearer" = [])),
    request_body = CreateGroup,
    responses(
        (status = 201, description = "Created", body = GroupJson),
        (status = 400, description = "Bad name (`invalid_group`) or user id (`invalid_user_id`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "A member that is not a contact (`unknown_contact`)", body = ErrorBody),
        (status = 409, description = "More members than a group takes (`group_full`)", body = ErrorBody),
    ))]
pub async fn create(
    names: MemberNames,
    State(conversations): State<Conversations>,
    Json(body): Json<CreateGroup>,
) -> Result<(StatusCode, Json<GroupJson>), ApiError> {
    let name = name(&body.name)?;
    let mut members = Vec::with_capacity(body.members.len());
    for m in &body.members {
        members.push(user(m)?);
    }
    if members.len() >= volli_mls::MAX_GROUP_USERS {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "group_full",
            format!("a group has at most {} members", volli_mls::MAX_GROUP_USERS),
        ));
    }
    let group = conversations.create_group(&name, &members).await?;
    Ok((StatusCode::CREATED, Json(names.json(group))))
}

/// The groups this user is in.
#[utoipa::path(get, path = "/v1/groups", tag = "groups", security(("bearer" = [])),
    responses(
        (status = 200, description = "The groups", body = GroupList),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn list(
    State(conversations): State<Conversations>,
    State(messaging): State<Messaging>,
    names: MemberNames,
) -> Result<Json<GroupList>, ApiError> {
    let mut groups = Vec::new();
    for group in conversations.groups().await {
        groups.push(shown(&messaging, &names, group).await?);
    }
    Ok(Json(GroupList { groups }))
}

/// One group, with each member's role and devices.
#[utoipa::path(get, path = "/v1/groups/{id}", tag = "groups", security(("bearer" = [])),
    params(("id" = String, Path, description = "The group id")),
    responses(
        (status = 200, description = "The group", body = GroupJson),
        (status = 400, description = "Not a group id (`invalid_group_id`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such group (`unknown_group`)", body = ErrorBody),
    ))]
pub async fn get(
    names: MemberNames,
    State(conversations): State<Conversations>,
    State(messaging): State<Messaging>,
    Path(id): Path<String>,
) -> Result<Json<GroupJson>, ApiError> {
    let id = group_id(&id)?;
    let group = conversations
        .group(id)
        .await
        .ok_or_else(|| ApiError::not_found("unknown_group", "no such group"))?;
    Ok(Json(shown(&messaging, &names, group).await?))
}

/// Renames a group, or sets its disappearing timer (admins only).
///
/// A new name is applied by the group's committer: at once when this device is it,
/// otherwise when the committer takes the request (`group.changed` follows); the answer
/// shows the group as it is until then. A timer is a line in the conversation for every
/// member (`conversation.changed` follows); messages sent from then on disappear from every
/// device that long after they were sent.
#[utoipa::path(patch, path = "/v1/groups/{id}", tag = "groups", security(("bearer" = [])),
    params(("id" = String, Path, description = "The group id")),
    request_body = RenameGroup,
    responses(
        (status = 200, description = "Renamed, or asked", body = GroupJson),
        (status = 400, description = "Bad id or name (`invalid_group`), a timer out of range (`invalid_timer`), or nothing to change (`invalid_group`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Not an admin of the group (`not_group_admin`)", body = ErrorBody),
        (status = 404, description = "No such group (`unknown_group`)", body = ErrorBody),
    ))]
pub async fn rename(
    names: MemberNames,
    State(conversations): State<Conversations>,
    State(messaging): State<Messaging>,
    Path(id): Path<String>,
    Json(body): Json<RenameGroup>,
) -> Result<Json<GroupJson>, ApiError> {
    let id = group_id(&id)?;
    let name = match &body.name {
        Some(n) => Some(name(n)?),
        None => None,
    };
    if name.is_none() && body.disappearing_secs.is_none() {
        return Err(ApiError::bad_request(
            "invalid_group",
            "give a `name`, a `disappearing_secs`, or both",
        ));
    }
    if let Some(secs) = body.disappearing_secs {
        if !crate::timeline::valid_timer(secs) {
            return Err(crate::messaging::MessagingError::InvalidTimer.into());
        }
        messaging
            .set_timer(crate::timeline::Where::Group(id), secs)
            .await?;
    }
    let group = match name {
        Some(name) => {
            conversations
                .change_group(id, GroupChange::Rename(name))
                .await?
        }
        None => conversations
            .group(id)
            .await
            .ok_or_else(|| ApiError::not_found("unknown_group", "no such group"))?,
    };
    Ok(Json(shown(&messaging, &names, group).await?))
}

/// Adds a contact to a group (admins only).
///
/// The new member's devices are added with the key packages this node holds for them; the
/// other members need not know it (mail to it is carried by a member who does).
#[utoipa::path(post, path = "/v1/groups/{id}/members", tag = "groups", security(("bearer" = [])),
    params(("id" = String, Path, description = "The group id")),
    request_body = AddMember,
    responses(
        (status = 200, description = "Added, or asked", body = GroupJson),
        (status = 400, description = "Bad id, or already a member (`invalid_group`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Not an admin of the group (`not_group_admin`)", body = ErrorBody),
        (status = 404, description = "No such group (`unknown_group`), or not a contact (`unknown_contact`)", body = ErrorBody),
        (status = 409, description = "The group is full (`group_full`)", body = ErrorBody),
    ))]
pub async fn add_member(
    names: MemberNames,
    State(conversations): State<Conversations>,
    Path(id): Path<String>,
    Json(body): Json<AddMember>,
) -> Result<Json<GroupJson>, ApiError> {
    let id = group_id(&id)?;
    let member = user(&body.user_id)?;
    let group = conversations
        .change_group(id, GroupChange::Add(member))
        .await?;
    Ok(Json(names.json(group)))
}

/// Removes a member (admins only), or leaves the group (a member removing itself).
///
/// All the member's devices are removed in one commit: they read nothing sent after it.
#[utoipa::path(delete, path = "/v1/groups/{id}/members/{user_id}", tag = "groups", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The group id"),
        ("user_id" = String, Path, description = "The member's user id"),
    ),
    responses(
        (status = 200, description = "Removed, or asked", body = GroupJson),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Not an admin of the group (`not_group_admin`)", body = ErrorBody),
        (status = 404, description = "No such group (`unknown_group`) or member (`unknown_member`)", body = ErrorBody),
    ))]
pub async fn remove_member(
    names: MemberNames,
    State(conversations): State<Conversations>,
    Path((id, member)): Path<(String, String)>,
) -> Result<Json<GroupJson>, ApiError> {
    let id = group_id(&id)?;
    let member = user(&member)?;
    let group = conversations
        .change_group(id, GroupChange::Remove(member))
        .await?;
    Ok(Json(names.json(group)))
}

/// Sets a member's role: promotes it to `admin` or makes it a `member` again (admins only).
#[utoipa::path(put, path = "/v1/groups/{id}/members/{user_id}", tag = "groups", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The group id"),
        ("user_id" = String, Path, description = "The member's user id"),
    ),
    request_body = SetRole,
    responses(
        (status = 200, description = "Changed, or asked", body = GroupJson),
        (status = 400, description = "Bad id or role (`invalid_role`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Not an admin of the group (`not_group_admin`)", body = ErrorBody),
        (status = 404, description = "No such group (`unknown_group`) or member (`unknown_member`)", body = ErrorBody),
    ))]
pub async fn set_role(
    names: MemberNames,
    State(conversations): State<Conversations>,
    Path((id, member)): Path<(String, String)>,
    Json(body): Json<SetRole>,
) -> Result<Json<GroupJson>, ApiError> {
    let id = group_id(&id)?;
    let member = user(&member)?;
    let role = match body.role.as_str() {
        "admin" => Role::Admin,
        "member" => Role::Member,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_role",
                "a role is `admin` or `member`",
            ));
        }
    };
    let group = conversations
        .change_group(id, GroupChange::Role(member, role))
        .await?;
    Ok(Json(names.json(group)))
}
