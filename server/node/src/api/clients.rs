//! `/v1/clients`: client tokens with scopes, for phones, browsers and scripts, and the QR
//! login that hands one to a phone without putting the token in a link.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Auth;
use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path};
use super::invites::qr_svg;
use crate::clients::{ClientError, ClientInfo, MAX_CLIENTS};

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        let message = e.to_string();
        match e {
            ClientError::InvalidName => ApiError::bad_request("invalid_name", message),
            ClientError::InvalidScopes(_) => ApiError::bad_request("invalid_scope", message),
            ClientError::InvalidTtl => ApiError::bad_request("invalid_ttl", message),
            ClientError::TooMany => {
                ApiError::new(StatusCode::CONFLICT, "too_many_clients", message)
            }
            ClientError::TooManyCodes => ApiError::rate_limited(60),
            ClientError::Random(_) | ClientError::Store(_) => ApiError::internal(e),
        }
    }
}

/// A new client.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    /// What the client is, for the list (`phone`, `laptop browser`): 1 to 64 characters.
    #[schema(max_length = 64, example = "phone")]
    pub name: String,
    /// What it may do: `read` (every `GET` and the event stream), `messages`, `files`,
    /// `contacts`, `admin` (everything, including the others).
    #[schema(example = json!(["read", "messages"]))]
    pub scopes: Vec<String>,
}

/// A client as listed.
#[derive(Serialize, ToSchema)]
pub struct ClientView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When its token was last used (RFC 3339, to the minute after a restart), or null.
    pub last_used_at: Option<String>,
}

impl From<ClientInfo> for ClientView {
    fn from(c: ClientInfo) -> Self {
        Self {
            id: c.id,
            name: c.name,
            scopes: c.scopes.names(),
            created_at: c.created_at.to_rfc3339(),
            last_used_at: c.last_used_at.map(|t| t.to_rfc3339()),
        }
    }
}

/// A client just created, with its token.
#[derive(Serialize, ToSchema)]
pub struct CreatedClient {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// The bearer token: shown this once, never again (only its hash is kept).
    pub token: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

fn created((info, token): (ClientInfo, String)) -> CreatedClient {
    CreatedClient {
        id: info.id,
        name: info.name,
        scopes: info.scopes.names(),
        token,
        created_at: info.created_at.to_rfc3339(),
    }
}

/// The clients of this node.
#[derive(Serialize, ToSchema)]
pub struct ClientList {
    /// Oldest first.
    pub clients: Vec<ClientView>,
}

/// Creates a client token limited to `scopes`; the token is in the answer, once.
///
/// For a phone, prefer `POST /v1/clients/login-codes`: the phone trades a one-time code from
/// a QR code for its token, which then never passes through anything else.
#[utoipa::path(post, path = "/v1/clients", tag = "clients", security(("bearer" = [])),
    request_body = NewClient,
    responses(
        (status = 201, description = "The client and its token", body = CreatedClient),
        (status = 400, description = "A bad name (`invalid_name`), an unknown, repeated or missing scope (`invalid_scope`), or a malformed body", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 409, description = "The node has 100 clients (`too_many_clients`)", body = ErrorBody),
    ))]
pub async fn create(
    State(auth): State<Auth>,
    Json(body): Json<NewClient>,
) -> Result<(StatusCode, Json<CreatedClient>), ApiError> {
    let client = auth.clients().create(&body.name, &body.scopes).await?;
    Ok((StatusCode::CREATED, Json(created(client))))
}

/// Lists this node's clients (never their tokens).
#[utoipa::path(get, path = "/v1/clients", tag = "clients", security(("bearer" = [])),
    responses(
        (status = 200, description = "The clients", body = ClientList),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn list(State(auth): State<Auth>) -> Json<ClientList> {
    Json(ClientList {
        clients: auth
            .clients()
            .list()
            .into_iter()
            .map(ClientView::from)
            .collect(),
    })
}

/// Revokes a client: its token is refused (401) from now on and its event streams close.
#[utoipa::path(delete, path = "/v1/clients/{id}", tag = "clients", security(("bearer" = [])),
    params(("id" = String, Path, description = "The client's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such client (`unknown_client`)", body = ErrorBody),
    ))]
pub async fn revoke(
    State(auth): State<Auth>,
    State(push): State<crate::push::Push>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if auth
        .clients()
        .revoke(&id)
        .await
        .map_err(ApiError::internal)?
    {
        // Its push subscriptions went with its row; nothing more is pushed to them from now.
        push.forget_client(&id);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "unknown_client",
            "no client has this id; `GET /v1/clients` lists them",
        ))
    }
}

/// A login code to offer a new client.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLoginCode {
    /// The name the client will have.
    #[schema(max_length = 64, example = "phone")]
    pub name: String,
    /// The scopes it will have.
    #[schema(example = json!(["read", "messages"]))]
    pub scopes: Vec<String>,
    /// How long the code works, 60 to 3600 seconds. Default 600.
    pub ttl_secs: Option<u64>,
    /// The address the client reaches this node's API at, put in the link [default: the
    /// address this request was sent to].
    #[schema(example = "https://node.example.org", max_length = 512)]
    pub api_url: Option<String>,
}

/// A one-time login code for a new client, as a link and its QR code.
#[derive(Serialize, ToSchema)]
pub struct LoginOffer {
    /// The code; the client sends it to `POST /v1/clients/login`.
    pub code: String,
    /// The API address in the link.
    pub api_url: String,
    /// `volli://login?api=…&code=…`, for a client app that registers the scheme.
    pub link: String,
    /// The node's web app at the API address with the code in its fragment
    /// (`https://…/#login=…`): a phone's camera opens it in the browser, logged in with this
    /// client's scopes (the fragment never reaches the server).
    pub app_url: String,
    /// `app_url` as a QR code (SVG).
    pub qr_svg: String,
    /// When the code stops working (RFC 3339).
    pub expires_at: String,
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The scheme this API is served with (`https` with `[api] tls_cert`), for the login link's
/// default address.
#[derive(Clone, Copy, Debug)]
pub struct Scheme(pub &'static str);

/// The API address of `api_url`, or of the request's `Host`; only `http(s)://host[:port]`
/// with an optional path.
fn api_url(given: Option<&str>, headers: &HeaderMap, scheme: Scheme) -> Result<String, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_api_url",
            "api_url must be an http:// or https:// address of at most 512 characters",
        )
    };
    let url = match given {
        Some(u) => u.trim().trim_end_matches('/').to_owned(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .ok_or_else(bad)?;
            format!("{}://{host}", scheme.0)
        }
    };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(bad)?;
    let host = rest.split('/').next().unwrap_or_default();
    if url.len() > 512
        || host.is_empty()
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
        || url.contains(['?', '#', '@'])
    {
        return Err(bad());
    }
    Ok(url)
}

/// Offers a login to a new client: a one-time code, and a link with it and this node's API
/// address as a QR code. The client trades the code for its token with
/// `POST /v1/clients/login`; the token itself never appears in a link.
#[utoipa::path(post, path = "/v1/clients/login-codes", tag = "clients", security(("bearer" = [])),
    request_body = NewLoginCode,
    responses(
        (status = 201, description = "The code, its link and QR code", body = LoginOffer),
        (status = 400, description = "A bad name (`invalid_name`), scope (`invalid_scope`), lifetime (`invalid_ttl`) or address (`invalid_api_url`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn offer_login(
    State(auth): State<Auth>,
    scheme: Option<axum::Extension<Scheme>>,
    headers: HeaderMap,
    Json(body): Json<NewLoginCode>,
) -> Result<(StatusCode, Json<LoginOffer>), ApiError> {
    let scheme = scheme.map_or(Scheme("http"), |s| s.0);
    let api_url = api_url(body.api_url.as_deref(), &headers, scheme)?;
    let (code, expires_at) = auth.clients().offer_login(
        &body.name,
        &body.scopes,
        body.ttl_secs.map(Duration::from_secs),
    )?;
    let link = format!("volli://login?api={}&code={code}", percent(&api_url));
    let app_url = format!("{api_url}/#login={code}");
    Ok((
        StatusCode::CREATED,
        Json(LoginOffer {
            qr_svg: qr_svg(&app_url)?,
            code,
            api_url,
            link,
            app_url,
            expires_at: expires_at.to_rfc3339(),
        }),
    ))
}

/// A login code to trade for a token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientLogin {
    /// The code from the login link.
    #[schema(max_length = 128)]
    pub code: String,
}

/// Trades a one-time login code for the client's token. Needs no token: the code is the
/// credential.
#[utoipa::path(post, path = "/v1/clients/login", tag = "clients",
    request_body = ClientLogin,
    responses(
        (status = 201, description = "The new client and its token", body = CreatedClient),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "The code is wrong, used or expired (`invalid_login_code`)", body = ErrorBody),
        (status = 409, description = "The node has 100 clients (`too_many_clients`)", body = ErrorBody),
    ))]
pub async fn login(
    State(auth): State<Auth>,
    Json(body): Json<ClientLogin>,
) -> Result<(StatusCode, Json<CreatedClient>), ApiError> {
    match auth.clients().redeem_login(body.code.trim()).await? {
        Some(client) => Ok((StatusCode::CREATED, Json(created(client)))),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_login_code",
            "this login code is wrong, was already used or has expired; ask for a new one",
        )),
    }
}

const _: () = assert!(MAX_CLIENTS == 100, "the 409 descriptions say 100");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_url_is_given_or_taken_from_the_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "192.168.1.5:8470".parse().unwrap());
        let http = Scheme("http");
        assert_eq!(api_url(None, &h, http).unwrap(), "http://192.168.1.5:8470");
        assert_eq!(
            api_url(None, &h, Scheme("https")).unwrap(),
            "https://192.168.1.5:8470"
        );
        assert_eq!(
            api_url(Some("https://node.example.org/"), &h, http).unwrap(),
            "https://node.example.org"
        );
        for bad in [
            "ftp://x",
            "https://",
            "https://a b",
            "https://u@h",
            "https://h/?x",
        ] {
            assert!(api_url(Some(bad), &h, http).is_err(), "{bad}");
        }
        assert_eq!(
            percent("https://h:1/p"),
            "https%3A%2F%2Fh%3A1%2Fp",
            "the link's query stays one parameter"
        );
    }
}
