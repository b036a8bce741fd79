//! What each route needs of the caller's token (its scopes: `read`, `messages`, `files`,
//! `contacts`, `admin`) and of this device's permissions (its certificate's `messages`,
//! `contacts`, `settings`, `admin`), both checked in one layer before any handler runs.
//!
//! Scopes limit a client token ([`crate::clients`]): a phone app holding `read,messages` can
//! read and send messages, not pair a device or install a plugin. Every `GET` needs `read`
//! (but listing clients and pairing requests needs `admin`); a change needs the scope of
//! what it changes, except the caller's own push subscriptions, which need `read`. The admin token and admin page sessions have every scope.
//!
//! A device paired with fewer permissions holds fewer keys and documents, but its API still
//! writes to the user's synced vault: without this check a `contacts`-only device could set
//! the retention rules that delete every device's history. Reading is never refused (a
//! device holds only what it may see); changing what the user's devices share needs the
//! permission for it. Routes about this node alone (its plugins, peers, events, the admin
//! page login) need none: whoever holds this node's token runs it.
//!
//! [`needed`] and [`scope_needed`] are the tables; the OpenAPI document states each
//! operation's needs from them (`x-volli-permission`, `x-volli-scope`, and the scope in its
//! `security` requirement), and a test checks that every route is in both.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use volli_core::Permissions;

use super::error::ApiError;
use crate::clients::{Caller, Scope};

/// What a route needs of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Nothing: reading, or this node's own business.
    Nothing,
    /// This permission of the device's certificate.
    Permission(Permissions),
}

/// What `method` on the route `path` (as registered, e.g. `/v1/settings/{key}`) needs;
/// `None` for a route this table does not know.
pub fn needed(method: &Method, path: &str) -> Option<Needs> {
    use Needs::{Nothing, Permission};
    let read = matches!(*method, Method::GET | Method::HEAD);
    let need = |p| if read { Nothing } else { Permission(p) };
    Some(match path {
        "/health" | "/v1/node" | "/v1/events" | "/v1/events/ticket" | "/v1/peers" | "/v1/relay"
        | "/v1/devices" | "/v1/pairing/join" => Nothing,
        "/v1/admin/login-codes" | "/v1/admin/session" => Nothing,
        "/v1/clients" | "/v1/clients/{id}" | "/v1/clients/login-codes" | "/v1/clients/login" => {
            Nothing
        }
        p if p.starts_with("/v1/push") => Nothing,
        p if p.starts_with("/v1/plugins") => Nothing,
        "/v1/settings" | "/v1/settings/{key}" | "/v1/retention" => need(Permissions::SETTINGS),
        "/v1/contacts" | "/v1/contacts/{user_id}" | "/v1/contacts/{user_id}/avatar" => {
            need(Permissions::CONTACTS)
        }
        // The name and picture are settings of the user's, synced to every device.
        "/v1/profile" | "/v1/profile/avatar" => need(Permissions::SETTINGS),
        "/v1/invites" => need(Permissions::ADMIN),
        p if p.starts_with("/v1/messages")
            || p.starts_with("/v1/conversations")
            || p == "/v1/typing"
            || p == "/v1/search" =>
        {
            need(Permissions::MESSAGES)
        }
        p if p.starts_with("/v1/groups") => need(Permissions::MESSAGES),
        p if p.starts_with("/v1/transfers") => need(Permissions::MESSAGES),
        "/v1/pairing" | "/v1/pairing/{id}/approve" | "/v1/pairing/{id}/reject" => {
            need(Permissions::ADMIN)
        }
        "/v1/devices/{peer_id}" => need(Permissions::ADMIN),
        // Only a device holding the identity can back it up; restoring makes a fresh node
        // the user's device, as joining by pairing does.
        "/v1/backup" | "/v1/backup/setup" | "/v1/backup/refresh" => need(Permissions::ADMIN),
        "/v1/backup/restore" => Nothing,
        _ => return None,
    })
}

/// What a route needs of the caller's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeNeed {
    /// No scope: the route takes no token or a one-time code (`/health`, the login trades),
    /// or only ends the caller's own session.
    Any,
    /// This scope (which `admin` includes).
    Scope(Scope),
}

/// What `method` on the route `path` (as registered) needs of the token's scopes; `None` for
/// a route this table does not know.
pub fn scope_needed(method: &Method, path: &str) -> Option<ScopeNeed> {
    use ScopeNeed::{Any, Scope as S};
    let read = matches!(*method, Method::GET | Method::HEAD);
    let write = |s| if read { S(Scope::Read) } else { S(s) };
    Some(match path {
        "/health" | "/v1/admin/session" | "/v1/clients/login" => Any,
        "/v1/admin/login-codes"
        | "/v1/clients"
        | "/v1/clients/{id}"
        | "/v1/clients/login-codes"
        | "/v1/pairing"
        | "/v1/pairing/join"
        | "/v1/pairing/{id}/approve"
        | "/v1/pairing/{id}/reject"
        | "/v1/backup/restore" => S(Scope::Admin),
        "/v1/backup" | "/v1/backup/setup" | "/v1/backup/refresh" => write(Scope::Admin),
        "/v1/node" | "/v1/peers" | "/v1/relay" | "/v1/devices" | "/v1/events"
        | "/v1/events/ticket" => S(Scope::Read),
        // A client's own notifications: whoever may read may be told.
        p if p.starts_with("/v1/push") => S(Scope::Read),
        "/v1/devices/{peer_id}" | "/v1/settings" | "/v1/settings/{key}" | "/v1/retention" => {
            write(Scope::Admin)
        }
        p if p.starts_with("/v1/plugins") => write(Scope::Admin),
        "/v1/contacts"
        | "/v1/contacts/{user_id}"
        | "/v1/contacts/{user_id}/avatar"
        | "/v1/invites" => write(Scope::Contacts),
        // What contacts see of the user: as much a contacts matter as the contacts are.
        "/v1/profile" | "/v1/profile/avatar" => write(Scope::Contacts),
        p if p.starts_with("/v1/messages")
            || p.starts_with("/v1/conversations")
            || p == "/v1/typing"
            || p == "/v1/search" =>
        {
            write(Scope::Messages)
        }
        p if p.starts_with("/v1/groups") => write(Scope::Messages),
        p if p.starts_with("/v1/transfers") => write(Scope::Files),
        _ => return None,
    })
}

/// The error for a token that lacks `scope`.
pub fn insufficient_scope(scope: Scope) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "insufficient_scope",
        format!(
            "this token's scopes do not include `{}`; use a client created with it",
            scope.name()
        ),
    )
}

/// The error for a device that lacks `permission`.
pub fn refusal(permission: Permissions) -> ApiError {
    if permission == Permissions::ADMIN {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "not_admin",
            "only an admin device of this user can do that (it signs for the user)",
        );
    }
    let name = permission.names().first().copied().unwrap_or("?");
    ApiError::new(
        StatusCode::FORBIDDEN,
        "not_permitted",
        format!(
            "this device was paired without the `{name}` permission; make the change on a \
             device that has it"
        ),
    )
}

/// Middleware (a route layer, so the matched route is known): refuses a request the caller's
/// scopes (first) or the device's permissions do not cover.
pub async fn require_permission(
    State(granted): State<Permissions>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    if let Some(route) = &route
        && let Some(caller) = request.extensions().get::<Caller>()
        && let Some(ScopeNeed::Scope(scope)) = scope_needed(request.method(), route)
        && !caller.scopes.allows(scope)
    {
        return insufficient_scope(scope).into_response();
    }
    if let Some(route) = route
        && let Some(Needs::Permission(p)) = needed(request.method(), &route)
        && !granted.contains(p)
    {
        return refusal(p).into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation of the API is in the table, so a new route cannot skip the check by
    /// being forgotten; and every change to what the user's devices share needs a
    /// permission.
    #[test]
    fn every_route_states_what_it_needs() {
        let doc = crate::api::openapi();
        let mut writes_to_the_vault = 0;
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                (Method::GET, &item.get),
                (Method::PUT, &item.put),
                (Method::POST, &item.post),
                (Method::DELETE, &item.delete),
                (Method::PATCH, &item.patch),
            ] {
                let Some(op) = op else { continue };
                let need = needed(&method, path);
                assert!(need.is_some(), "{method} {path} is not in the table");
                let scope = scope_needed(&method, path);
                assert!(scope.is_some(), "{method} {path} is not in the scope table");
                let stated_scope = op
                    .extensions
                    .as_ref()
                    .and_then(|e| e.get("x-volli-scope"))
                    .and_then(|v| v.as_str())
                    .unwrap_or_default();
                assert!(!stated_scope.is_empty(), "{method} {path} states no scope");
                // A ticket only opens the read-only event stream; push subscriptions are the
                // caller's own.
                if method != Method::GET
                    && !matches!(scope, Some(ScopeNeed::Any))
                    && *path != "/v1/events/ticket"
                    && !path.starts_with("/v1/push")
                {
                    assert_ne!(stated_scope, "read", "{method} {path} is a change");
                }
                let stated = op
                    .extensions
                    .as_ref()
                    .and_then(|e| e.get("x-volli-permission"))
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned();
                assert!(!stated.is_empty(), "{method} {path} states no permission");
                let shared = [
                    "/v1/settings",
                    "/v1/retention",
                    "/v1/contacts",
                    "/v1/messages",
                ]
                .iter()
                .any(|p| path.starts_with(p));
                if shared && method != Method::GET {
                    writes_to_the_vault += 1;
                    assert_ne!(stated, "none", "{method} {path} changes shared data");
                }
            }
        }
        assert!(writes_to_the_vault >= 7, "{writes_to_the_vault}");
    }
}
