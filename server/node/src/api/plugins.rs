//! `/v1/plugins`: list, install, enable, disable, configure and remove plugins.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use volli_plugin_host::PluginInfo;

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path, Query};
use crate::plugins::{PluginError, Plugins};

/// Largest plugin upload.
pub const MAX_UPLOAD: usize = volli_plugin_host::MAX_COMPONENT_BYTES;

/// A plugin as the API shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = Plugin)]
pub struct PluginView {
    /// Unique name.
    pub name: String,
    /// `discovery`, `relay-policy` or `file-backend`.
    #[schema(example = "discovery")]
    pub kind: String,
    /// The plugin's version.
    pub version: String,
    /// What it does.
    pub description: String,
    /// Whether the operator enabled it.
    pub enabled: bool,
    /// `running`, `disabled` or `failed`.
    #[schema(example = "running")]
    pub state: String,
    /// Shipped with the node.
    pub builtin: bool,
    /// Capabilities it asks for.
    pub capabilities: Vec<String>,
    /// Capabilities it was granted.
    pub granted: Vec<String>,
    /// Limits on every call.
    pub limits: LimitsView,
    /// Counters.
    pub stats: StatsView,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// Limits applied to every call into a plugin.
#[derive(Serialize, ToSchema)]
#[schema(as = PluginLimits)]
pub struct LimitsView {
    /// Time budget of one call.
    pub deadline_ms: u64,
    /// Linear memory cap.
    pub memory_bytes: u64,
    /// wasm stack size.
    pub stack_bytes: u64,
    /// Cap on tables.
    pub tables: u64,
    /// Cap on core instances.
    pub instances: u64,
}

/// A plugin's counters since the node started.
#[derive(Serialize, ToSchema)]
#[schema(as = PluginStats)]
pub struct StatsView {
    /// Calls into the plugin.
    pub calls: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Calls that trapped.
    pub traps: u64,
    /// Calls stopped at their time budget.
    pub timeouts: u64,
    /// Capability uses refused for lack of a grant.
    pub denied: u64,
    /// Instances created.
    pub instantiations: u64,
    /// Time spent in calls, in microseconds.
    pub busy_us: u64,
}

impl From<PluginInfo> for PluginView {
    fn from(p: PluginInfo) -> Self {
        let names = |caps: &volli_plugin_host::Capabilities| {
            caps.iter().map(|c| c.as_str().to_owned()).collect()
        };
        PluginView {
            capabilities: names(&p.capabilities),
            granted: names(&p.granted),
            kind: p.kind.as_str().to_owned(),
            state: p.state.as_str().to_owned(),
            limits: LimitsView {
                deadline_ms: p.limits.deadline_ms,
                memory_bytes: p.limits.memory_bytes as u64,
                stack_bytes: p.limits.stack_bytes as u64,
                tables: p.limits.tables as u64,
                instances: p.limits.instances as u64,
            },
            stats: StatsView {
                calls: p.stats.calls,
                errors: p.stats.errors,
                traps: p.stats.traps,
                timeouts: p.stats.timeouts,
                denied: p.stats.denied,
                instantiations: p.stats.instantiations,
                busy_us: p.stats.busy_us,
            },
            name: p.name,
            version: p.version,
            description: p.description,
            enabled: p.enabled,
            builtin: p.builtin,
            last_error: p.last_error,
        }
    }
}

/// Every plugin.
#[derive(Serialize, ToSchema)]
pub struct PluginList {
    /// By name.
    pub plugins: Vec<PluginView>,
}

impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> Self {
        match e {
            PluginError::NotFound(_) => ApiError::not_found("unknown_plugin", e.to_string()),
            PluginError::Invalid(_) => ApiError::bad_request("invalid_plugin", e.to_string()),
            PluginError::InvalidGrant(_) => ApiError::bad_request("invalid_grant", e.to_string()),
            PluginError::InvalidConfig(_) => {
                ApiError::bad_request("invalid_plugin_config", e.to_string())
            }
            PluginError::Exists(_) => {
                ApiError::new(StatusCode::CONFLICT, "plugin_exists", e.to_string())
            }
            PluginError::Builtin(_) => {
                ApiError::new(StatusCode::CONFLICT, "builtin_plugin", e.to_string())
            }
            PluginError::Store(_) | PluginError::Io(_) => ApiError::internal(e),
        }
    }
}

/// Lists every plugin with its state, limits and counters.
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins", security(("bearer" = [])),
    responses(
        (status = 200, description = "All plugins", body = PluginList),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn list(State(plugins): State<Plugins>) -> Json<PluginList> {
    Json(PluginList {
        plugins: plugins.list().into_iter().map(PluginView::from).collect(),
    })
}

/// Installation options.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InstallOptions {
    /// Capabilities to grant, comma-separated (e.g. `kv,http`). Nothing is granted by default.
    pub grant: Option<String>,
    /// Hosts the `http` capability may reach, comma-separated.
    pub http_allow: Option<String>,
}

fn list_param(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A WebAssembly component, as bytes (a type for the OpenAPI document only: the handler
/// reads the body as it streams in).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct WasmComponent(#[allow(dead_code)] Vec<u8>);

/// Installs a plugin.
///
/// The body is the plugin's WebAssembly component (`Content-Type: application/wasm`). The
/// node compiles it, checks that it implements one of the plugin worlds, reads its manifest,
/// starts it with its default configuration, and only then keeps it. Capabilities are granted
/// with `?grant=`.
#[utoipa::path(post, path = "/v1/plugins", tag = "plugins", security(("bearer" = [])),
    params(InstallOptions),
    request_body(content((WasmComponent = "application/wasm"), (WasmComponent = "application/octet-stream")), description = "A WebAssembly component built against volli:plugin@0.1.0"),
    responses(
        (status = 201, description = "Installed and running", body = PluginView),
        (status = 400, description = "Not a valid plugin (`invalid_plugin`) or bad grants (`invalid_grant`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 409, description = "A plugin with that name exists", body = ErrorBody),
        (status = 413, description = "Larger than 32 MiB", body = ErrorBody),
        (status = 415, description = "Not `application/wasm` or `application/octet-stream`", body = ErrorBody),
    ))]
pub async fn install(
    State(plugins): State<Plugins>,
    Query(options): Query<InstallOptions>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<PluginView>), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !(content_type.starts_with("application/wasm")
        || content_type.starts_with("application/octet-stream"))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the component with `Content-Type: application/wasm`",
        ));
    }
    let grant = list_param(options.grant.as_deref());
    let http_allow = list_param(options.http_allow.as_deref());
    let info = plugins.install(body.to_vec(), &grant, http_allow).await?;
    Ok((StatusCode::CREATED, Json(info.into())))
}

/// One plugin.
#[utoipa::path(get, path = "/v1/plugins/{name}", tag = "plugins", security(("bearer" = [])),
    params(("name" = String, Path, description = "Plugin name")),
    responses(
        (status = 200, description = "The plugin", body = PluginView),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such plugin", body = ErrorBody),
    ))]
pub async fn get(
    State(plugins): State<Plugins>,
    Path(name): Path<String>,
) -> Result<Json<PluginView>, ApiError> {
    Ok(Json(plugins.get(&name)?.into()))
}

/// Removes an installed plugin with its data. Built-in plugins can only be disabled.
#[utoipa::path(delete, path = "/v1/plugins/{name}", tag = "plugins", security(("bearer" = [])),
    params(("name" = String, Path, description = "Plugin name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such plugin", body = ErrorBody),
        (status = 409, description = "Built in", body = ErrorBody),
    ))]
pub async fn remove(
    State(plugins): State<Plugins>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    plugins.remove(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Enables a plugin (clearing a failure backoff).
#[utoipa::path(post, path = "/v1/plugins/{name}/enable", tag = "plugins", security(("bearer" = [])),
    params(("name" = String, Path, description = "Plugin name")),
    responses(
        (status = 200, description = "The plugin", body = PluginView),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such plugin", body = ErrorBody),
    ))]
pub async fn enable(
    State(plugins): State<Plugins>,
    Path(name): Path<String>,
) -> Result<Json<PluginView>, ApiError> {
    Ok(Json(plugins.set_enabled(&name, true).await?.into()))
}

/// Disables a plugin.
#[utoipa::path(post, path = "/v1/plugins/{name}/disable", tag = "plugins", security(("bearer" = [])),
    params(("name" = String, Path, description = "Plugin name")),
    responses(
        (status = 200, description = "The plugin", body = PluginView),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such plugin", body = ErrorBody),
    ))]
pub async fn disable(
    State(plugins): State<Plugins>,
    Path(name): Path<String>,
) -> Result<Json<PluginView>, ApiError> {
    Ok(Json(plugins.set_enabled(&name, false).await?.into()))
}

/// A plugin's configuration.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginConfigBody {
    /// Values over the plugin's defaults (and the config file's).
    #[schema(value_type = std::collections::BTreeMap<String, serde_json::Value>)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// Replaces a plugin's configuration and restarts it; if the plugin refuses it, the old
/// configuration stays in force.
#[utoipa::path(put, path = "/v1/plugins/{name}/config", tag = "plugins", security(("bearer" = [])),
    params(("name" = String, Path, description = "Plugin name")),
    request_body = PluginConfigBody,
    responses(
        (status = 200, description = "Restarted with the new configuration", body = PluginView),
        (status = 400, description = "Refused by the plugin (`invalid_plugin_config`) or malformed", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such plugin", body = ErrorBody),
    ))]
pub async fn configure(
    State(plugins): State<Plugins>,
    Path(name): Path<String>,
    Json(body): Json<PluginConfigBody>,
) -> Result<Json<PluginView>, ApiError> {
    Ok(Json(plugins.configure(&name, body.config).await?.into()))
}
