//! Extractors whose rejections are `ApiError`s, so malformed input always gets the JSON error
//! shape with a stable code instead of axum's plain-text rejection.

use axum::extract::FromRequest;
use axum::extract::FromRequestParts;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;

/// A JSON body in or out. In, it must be a JSON object (`Content-Type: application/json`):
/// serde would otherwise also read a struct from an array of its fields, which no client
/// means and the OpenAPI document does not allow.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let json = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime_type::Essence>().ok())
            .is_some_and(|m| m.is_json());
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected `Content-Type: application/json`",
            ));
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(body_rejection)?;
        object(&bytes).map(Self)
    }
}

/// The media type of a `Content-Type` header, without parameters.
mod mime_type {
    pub(super) struct Essence(String);

    impl std::str::FromStr for Essence {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let essence = s
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            Ok(Self(essence))
        }
    }

    impl Essence {
        /// `application/json`, or any `application/…+json`.
        pub(super) fn is_json(&self) -> bool {
            self.0 == "application/json"
                || (self.0.starts_with("application/") && self.0.ends_with("+json"))
        }
    }
}

fn body_rejection(e: axum::extract::rejection::BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body too large",
        )
    } else {
        ApiError::new(e.status(), "bad_request", e.body_text())
    }
}

/// Parses `bytes` as a JSON object into `T`.
pub(crate) fn object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        return Err(match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(_) => ApiError::bad_request("invalid_body", "the body must be a JSON object"),
            Err(e) => ApiError::bad_request("invalid_json", e.to_string()),
        });
    }
    serde_json::from_slice(bytes).map_err(|e| {
        if e.is_data() || e.is_eof() && first.is_none() {
            ApiError::bad_request("invalid_body", e.to_string())
        } else {
            ApiError::bad_request("invalid_json", e.to_string())
        }
    })
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// Query parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// A JSON body that may be omitted: an empty body means `T::default()`; a body of only
/// whitespace is not JSON and is refused (400).
pub struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: serde::de::DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(body_rejection)?;
        if bytes.is_empty() {
            return Ok(Self(T::default()));
        }
        object(&bytes).map(Self)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => ApiError::bad_request("invalid_body", e.body_text()),
            JsonRejection::JsonSyntaxError(e) => {
                ApiError::bad_request("invalid_json", e.body_text())
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected `Content-Type: application/json`",
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "request body too large",
                )
            }
            other => ApiError::bad_request("bad_request", other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request("invalid_path", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::FromRequest;

    #[derive(serde::Deserialize, Default, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Options {
        id: Option<String>,
    }

    async fn optional(body: &'static str) -> Result<Options, ApiError> {
        let request = axum::extract::Request::builder()
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        OptionalJson::<Options>::from_request(request, &())
            .await
            .map(|j| j.0)
    }

    #[tokio::test]
    async fn an_optional_body_may_be_empty_but_not_blank_or_unknown() {
        assert_eq!(optional("").await.unwrap(), Options::default());
        assert_eq!(
            optional(r#"{"id":"x"}"#).await.unwrap().id.as_deref(),
            Some("x")
        );
        for bad in [" ", "\n", "null", "[]", r#"{"other":1}"#, "{"] {
            let e = optional(bad).await.unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }
}
