//! What each route needs of this device's permissions (its certificate's `messages`,
//! `contacts`, `settings`, `admin`), checked in one layer before any handler runs.
//!
//! A device paired with fewer permissions holds fewer keys and documents, but its API still
//! writes to the user's synced vault: without this check a `contacts`-only device could set
//! the retention rules that delete every device's history. Reading is never refused (a
//! device holds only what it may see); changing what the user's devices share needs the
//! permission for it. Routes about this node alone (its plugins, peers, events, the admin
//! page login) need none: whoever holds this node's token runs it.
//!
//! [`needed`] is the one table; the OpenAPI document states each operation's need
//! (`x-volli-permission`) from it, and a test checks that every route is in it.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use volli_core::Permissions;

use super::error::ApiError;

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
        p if p.starts_with("/v1/plugins") => Nothing,
        "/v1/settings" | "/v1/settings/{key}" | "/v1/retention" => need(Permissions::SETTINGS),
        "/v1/contacts" | "/v1/contacts/{user_id}" => need(Permissions::CONTACTS),
        "/v1/invites" => need(Permissions::ADMIN),
        "/v1/messages" | "/v1/messages/{id}" | "/v1/conversations/{user_id}" => {
            need(Permissions::MESSAGES)
        }
        p if p.starts_with("/v1/transfers") => need(Permissions::MESSAGES),
        "/v1/pairing" | "/v1/pairing/{id}/approve" | "/v1/pairing/{id}/reject" => {
            need(Permissions::ADMIN)
        }
        "/v1/devices/{peer_id}" => need(Permissions::ADMIN),
        _ => return None,
    })
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

/// Middleware (a route layer, so the matched route is known): refuses a request the
/// device's permissions do not cover.
pub async fn require_permission(
    State(granted): State<Permissions>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
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
