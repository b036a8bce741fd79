//! The HTTP and WebSocket API: routes, the OpenAPI document, and the layers every request
//! passes (trace → JSON errors → panic guard → rate limit → auth → body limit → handler).
//!
//! Handlers take only the state they need (`State<Auth>`, `State<NodeInfo>`, …) through
//! `FromRef`; they talk to service handles, never to sqlx, wasmtime or libp2p types.

pub mod admin;
pub mod auth;
pub mod backup;
pub mod clients;
pub mod contacts;
pub mod devices;
pub mod error;
pub mod events;
pub mod extract;
pub mod groups;
pub mod health;
pub mod host;
pub mod invites;
pub mod messages;
pub mod node_info;
pub mod peers;
pub mod permissions;
pub mod plugins;
pub mod profile;
pub mod push;
pub mod rate_limit;
pub mod relay;
pub mod search;
pub mod settings;
pub mod transfers;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::middleware;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::ApiConfig;
use crate::events::EventBus;
use crate::limits::RateLimiter;
use crate::node::NodeInfo;
use auth::Auth;
use rate_limit::Guard;
use volli_store::Vault;

/// Everything a handler may ask for. Each handler extracts only its part.
#[derive(Clone, FromRef)]
pub struct ApiState {
    /// Credentials.
    pub auth: Auth,
    /// Facts about this node.
    pub node: NodeInfo,
    /// The event bus.
    pub events: EventBus,
    /// The vault.
    pub vault: Vault,
    /// The plugins.
    pub plugins: crate::plugins::Plugins,
    /// The peer table.
    pub peers: crate::peers::Peers,
    /// Contacts and invites.
    pub contacts: crate::contacts::Contacts,
    /// Messages.
    pub messaging: crate::messaging::Messaging,
    /// Conversations on MLS.
    pub conversations: crate::conversations::Conversations,
    /// Retention rules.
    pub retention: crate::retention::Retention,
    /// Friends' relays.
    pub relay: crate::relay::Relay,
    /// The user's devices.
    pub devices: crate::devices::Devices,
    /// File transfers.
    pub files: crate::files::Files,
    /// Backups held by friends.
    pub backups: crate::backups::Backups,
    /// Reachability and relays.
    pub connectivity: crate::connectivity::Connectivity,
    /// Web Push to clients.
    pub push: crate::push::Push,
    /// Search over every conversation.
    pub search: crate::search::Searcher,
    /// The user's name and picture, and contacts' pictures.
    pub profile: crate::profile::Profile,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Volli node API",
        description = "The client API of a Volli node: a personal server for a peer-to-peer, \
                       end-to-end encrypted messenger. Every `/v1/*` route needs \
                       `Authorization: Bearer <token>`: the admin token in \
                       `<data-dir>/admin.token`, or a client token limited to scopes; each \
                       operation states the scope it needs (`x-volli-scope`). \
                       Errors are `{\"error\": {\"code\", \"message\"}}` with a stable `code`.",
        license(name = "AGPL-3.0-or-later"),
    ),
    modifiers(&BearerAuth),
    components(schemas(error::ErrorBody, crate::events::Event)),
    tags(
        (name = "node", description = "This node"),
        (name = "events", description = "Live events over WebSocket"),
        (name = "settings", description = "Settings synced across the user's devices"),
        (name = "contacts", description = "Invites and contacts"),
        (name = "profile", description = "The user's display name and picture, as contacts see them"),
        (name = "peers", description = "Peers found and connected"),
        (name = "messages", description = "End-to-end encrypted messages and the relay mailbox"),
        (name = "groups", description = "Group conversations on MLS: members, roles, changes"),
        (name = "plugins", description = "Sandboxed WebAssembly plugins"),
        (name = "devices", description = "The user's devices: pairing, revocation, vault sync"),
        (name = "transfers", description = "End-to-end encrypted, resumable file transfers"),
        (name = "backup", description = "Backups held by friends: the recovery phrase, holders, restoring a new node"),
        (name = "admin", description = "Logging in to the admin page (`GET /admin`)"),
        (name = "clients", description = "Client tokens with scopes, for phones, browsers and scripts"),
        (name = "push", description = "Web Push notifications to clients (RFC 8030, 8291, 8292)"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token from <data-dir>/admin.token, an admin page session, \
                         or a client token (`POST /v1/clients`) limited to its scopes",
                    ))
                    .build(),
            ),
        );
    }
}

fn api_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::health))
        .routes(routes!(node_info::node_info))
        .routes(routes!(events::ticket))
        .routes(routes!(events::events))
        .routes(routes!(settings::list))
        .routes(routes!(settings::get, settings::put, settings::delete))
        .routes(routes!(invites::create))
        .routes(routes!(contacts::add, contacts::list))
        .routes(routes!(contacts::get, contacts::remove, contacts::rename))
        .routes(routes!(profile::contact_avatar))
        .routes(routes!(profile::get, profile::put))
        .routes({
            // A picture is 256 KiB at most; a little more is read so that a larger one is
            // told so (400 `avatar_too_large`) rather than cut off.
            let (schemas, paths, router) = routes!(
                profile::get_avatar,
                profile::put_avatar,
                profile::delete_avatar
            );
            (
                schemas,
                paths,
                router.layer(DefaultBodyLimit::max(profile::MAX_UPLOAD)),
            )
        })
        .routes(routes!(peers::list))
        .routes(routes!(messages::send, messages::list))
        .routes(routes!(messages::get, messages::delete, messages::edit))
        .routes(routes!(messages::react))
        .routes(routes!(messages::unreact))
        .routes(routes!(messages::mark_read))
        .routes(routes!(messages::typing))
        .routes(routes!(messages::chats))
        .routes(routes!(messages::set_timer))
        .routes(routes!(
            messages::conversation,
            messages::delete_conversation
        ))
        .routes(routes!(messages::retention, messages::set_retention))
        .routes(routes!(search::search))
        .routes(routes!(groups::create, groups::list))
        .routes(routes!(groups::get, groups::rename))
        .routes(routes!(groups::add_member))
        .routes(routes!(groups::remove_member, groups::set_role))
        .routes(routes!(relay::get))
        .routes(routes!(backup::get))
        .routes(routes!(backup::setup))
        .routes(routes!(backup::refresh))
        .routes(routes!(backup::restore))
        .routes(routes!(plugins::list))
        .routes({
            let (schemas, paths, router) = routes!(plugins::install);
            (
                schemas,
                paths,
                router.layer(DefaultBodyLimit::max(plugins::MAX_UPLOAD)),
            )
        })
        .routes(routes!(plugins::get, plugins::remove))
        .routes(routes!(plugins::enable))
        .routes(routes!(plugins::disable))
        .routes(routes!(plugins::configure))
        .routes(routes!(devices::create, devices::requests))
        .routes(routes!(devices::join))
        .routes(routes!(devices::approve))
        .routes(routes!(devices::reject))
        .routes(routes!(devices::list))
        .routes(routes!(devices::revoke))
        .routes({
            // A streamed file is as large as it is; the node never holds it in memory.
            let (schemas, paths, router) =
                routes!(transfers::send, transfers::list, transfers::clear);
            (schemas, paths, router.layer(DefaultBodyLimit::disable()))
        })
        .routes(routes!(transfers::get, transfers::delete))
        .routes(routes!(transfers::accept))
        .routes(routes!(transfers::decline))
        .routes(routes!(transfers::pause))
        .routes(routes!(transfers::resume))
        .routes(routes!(transfers::cancel))
        .routes(routes!(transfers::content))
        .routes(routes!(admin::login_code))
        .routes(routes!(admin::start_session, admin::end_session))
        .routes(routes!(clients::create, clients::list))
        .routes(routes!(clients::revoke))
        .routes(routes!(clients::offer_login))
        .routes(routes!(clients::login))
        .routes(routes!(push::vapid))
        .routes(routes!(push::subscribe, push::list))
        .routes(routes!(push::unsubscribe))
        .routes(routes!(push::test))
}

/// The OpenAPI document, as served at `/openapi.json` and committed in `openapi/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api_routes().into_openapi();
    doc.info.version = crate::VERSION.to_owned();
    document_layer_responses(&mut doc);
    document_permissions(&mut doc);
    name_operations(&mut doc);
    doc
}

/// States on every operation what it needs of the caller's token (`x-volli-scope`: `read`,
/// `messages`, `files`, `contacts`, `admin`, or `none`, also as the scope of its `bearer`
/// security requirement) and of the device's permissions (`x-volli-permission`: `messages`,
/// `contacts`, `settings`, `admin`, or `none`), and the 403 it may answer, from the tables
/// the API checks with ([`permissions::scope_needed`], [`permissions::needed`]).
fn document_permissions(doc: &mut utoipa::openapi::OpenApi) {
    use permissions::{Needs, ScopeNeed};
    use utoipa::openapi::extensions::ExtensionsBuilder;
    use utoipa::openapi::security::SecurityRequirement;
    use utoipa::openapi::{RefOr, ResponseBuilder, content::ContentBuilder};
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, op) in [
            (axum::http::Method::GET, &mut item.get),
            (axum::http::Method::PUT, &mut item.put),
            (axum::http::Method::POST, &mut item.post),
            (axum::http::Method::DELETE, &mut item.delete),
            (axum::http::Method::PATCH, &mut item.patch),
        ] {
            let Some(op) = op.as_mut() else { continue };
            let need = permissions::needed(&method, path);
            let name = match need {
                Some(Needs::Permission(p)) => p.names().first().copied().unwrap_or("?"),
                _ => "none",
            };
            let scope = match permissions::scope_needed(&method, path) {
                Some(ScopeNeed::Scope(s)) => Some(s.name()),
                _ => None,
            };
            let extensions = ExtensionsBuilder::new()
                .add("x-volli-permission", name)
                .add("x-volli-scope", scope.unwrap_or("none"))
                .build();
            op.extensions
                .get_or_insert_with(Default::default)
                .merge(extensions);
            if let Some(scope) = scope
                && op.security.as_ref().is_some_and(|s| !s.is_empty())
            {
                op.security = Some(vec![SecurityRequirement::new("bearer", [scope])]);
            }
            let mut refusals = Vec::new();
            if let Some(scope) = scope {
                refusals.push(format!(
                    "the token's scopes do not include `{scope}` (`insufficient_scope`)"
                ));
            }
            if let Some(Needs::Permission(p)) = need {
                let code = if p == volli_core::Permissions::ADMIN {
                    "not_admin"
                } else {
                    "not_permitted"
                };
                refusals.push(format!(
                    "this device was paired without the `{name}` permission (`{code}`)"
                ));
            }
            if refusals.is_empty() {
                continue;
            }
            let mut description = refusals.join("; or ");
            if let Some(first) = description.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            let entry = op.responses.responses.entry("403".into());
            if let std::collections::btree_map::Entry::Occupied(mut given) = entry {
                // The handler's own 403 stays first; the layer's refusals follow it.
                if let RefOr::T(r) = given.get_mut() {
                    let missing: Vec<&String> = refusals
                        .iter()
                        .filter(|text| {
                            let code = text.rsplit('(').next().unwrap_or_default();
                            !r.description.contains(code)
                        })
                        .collect();
                    for text in missing {
                        r.description = format!("{}; or {text}", r.description);
                    }
                }
                continue;
            }
            op.responses
                .responses
                .entry("403".into())
                .or_insert_with(|| {
                    RefOr::T(
                        ResponseBuilder::new()
                            .description(description)
                            .content(
                                "application/json",
                                ContentBuilder::new()
                                    .schema(Some(utoipa::openapi::Ref::from_schema_name(
                                        "ErrorBody",
                                    )))
                                    .build(),
                            )
                            .build(),
                    )
                });
        }
    }
}

/// Makes every `operationId` unique (`contacts_list`, `plugins_list`, …): handlers in
/// different modules share names, and client generators key their types on these ids.
fn name_operations(doc: &mut utoipa::openapi::OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let tag = op.tags.as_ref().and_then(|t| t.first()).cloned();
            if let (Some(tag), Some(id)) = (tag, op.operation_id.as_mut())
                && !id.starts_with(&format!("{tag}_"))
            {
                *id = format!("{tag}_{id}");
            }
        }
    }
}

/// Adds what the layers in front of every handler may answer, so that no route can return a
/// status its description does not list: 429 (requests without a valid token, past the
/// public rate limit) and 421 (a `Host` the node does not answer to) everywhere; 413 and
/// 415 wherever a body is taken.
fn document_layer_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{RefOr, ResponseBuilder, content::ContentBuilder};
    let error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build(),
        )
    };
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let responses = &mut op.responses.responses;
            if op.request_body.is_some() {
                responses.entry("413".into()).or_insert_with(|| {
                    error("The body is larger than this route takes (`payload_too_large`)")
                });
                responses.entry("415".into()).or_insert_with(|| {
                    error("The body is not of the content type this route takes (`unsupported_media_type`)")
                });
            }
            responses.entry("429".into()).or_insert_with(|| {
                error("Too many requests without a valid token; see `Retry-After` (`rate_limited`)")
            });
            responses.entry("421".into()).or_insert_with(|| {
                error("The `Host` header names a host this node does not answer to (`host_not_allowed`)")
            });
        }
    }
}

/// The OpenAPI document as pretty JSON with a trailing newline.
pub fn openapi_json() -> String {
    let mut doc = serde_json::to_value(openapi()).unwrap_or_default();
    // Extensions are kept in a hash map, whose order changes from run to run: put them in
    // name order so the committed document is the same every time.
    if let Some(paths) = doc["paths"].as_object_mut() {
        for op in paths
            .values_mut()
            .filter_map(serde_json::Value::as_object_mut)
            .flat_map(|item| item.values_mut())
            .filter_map(serde_json::Value::as_object_mut)
        {
            let mut names: Vec<String> =
                op.keys().filter(|k| k.starts_with("x-")).cloned().collect();
            names.sort();
            for name in names {
                if let Some(value) = op.remove(&name) {
                    op.insert(name, value);
                }
            }
        }
    }
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

/// The complete application: routes, docs and layers.
pub fn router(state: ApiState, config: &ApiConfig) -> Router {
    let guard = Guard {
        auth: state.auth.clone(),
        limiter: RateLimiter::new(config.public_burst, config.public_per_second),
    };
    let (routes, _) = api_routes().split_for_parts();
    let granted = state.node.permissions();
    routes
        .route_layer(middleware::from_fn_with_state(
            granted,
            permissions::require_permission,
        ))
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi()))
        .route("/", axum::routing::get(admin::page))
        .route("/{file}", axum::routing::get(admin::file))
        .route("/admin", axum::routing::get(admin::page))
        .route("/admin/", axum::routing::get(admin::page))
        .route("/admin/{file}", axum::routing::get(admin::file))
        .fallback(error::not_found)
        .layer(axum::Extension(clients::Scheme(
            if config.tls_files().is_some() {
                "https"
            } else {
                "http"
            },
        )))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.auth.clone(),
            auth::require_auth,
        ))
        .layer(middleware::from_fn_with_state(
            guard,
            rate_limit::limit_unauthenticated,
        ))
        .layer(CatchPanicLayer::new())
        .layer(middleware::from_fn_with_state(
            host::AllowedHosts::new(&config.allowed_hosts),
            host::check_host,
        ))
        .layer(middleware::from_fn(error::json_errors))
        .layer(middleware::from_fn(crate::metrics::track_requests))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
