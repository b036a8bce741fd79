//! `GET /v1/search`: messages of every conversation (or one) that hold the words asked for,
//! newest first, each with a snippet and its conversation.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use volli_core::MessageId;
use volli_store::search::{MAX_RESULTS, Query, QueryError, SearchError};

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Query as QueryParams};
use super::messages::{MessageView, group_id, user, views_marked};
use crate::messaging::Messaging;
use crate::search::{Place, Results, Searcher};
use crate::timeline::Where;

/// Results per page when `limit` is not given.
const DEFAULT_LIMIT: u32 = 20;

/// What to search for.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// The words, 1 to 256 bytes: each matches the start of a word of a message (case and
    /// diacritics do not matter), and a message must hold all of them.
    pub q: String,
    /// Only the conversation with this contact (a user id).
    pub with: Option<String>,
    /// Only this group's messages (a group id).
    pub group: Option<String>,
    /// Only messages older than this one (the last of the previous page).
    pub before: Option<String>,
    /// At most this many results (default 20, at most 100).
    pub limit: Option<u32>,
}

/// One message found.
#[derive(Serialize, ToSchema)]
pub struct SearchResult {
    /// The message, as `GET /v1/messages` shows it.
    pub message: MessageView,
    /// A piece of its text around the first word that matched, `…` where it was cut.
    pub snippet: String,
    /// Where the words that matched are in `snippet`: `[start, end)` pairs in UTF-16 code
    /// units (JavaScript string offsets).
    pub highlights: Vec<[usize; 2]>,
    /// The contact's user id, for a one-to-one conversation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with: Option<String>,
    /// The group's id, for a group's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Messages found.
#[derive(Serialize, ToSchema)]
pub struct SearchResults {
    /// Newest first.
    pub results: Vec<SearchResult>,
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        ApiError::bad_request("invalid_query", e.to_string())
    }
}

/// Searches the messages of every conversation, newest first.
///
/// Each word of `q` matches the start of a word of a message, whatever its case and accents
/// (`cafe` finds "Café", `caf` too); a message must hold every word. Deleted messages are
/// never found. While the index of an older vault is still being built (`GET /v1/node`
/// `search`), only what it holds so far is found. Page back with `before`: the id of the
/// last result of the previous page.
#[utoipa::path(get, path = "/v1/search", tag = "messages", security(("bearer" = [])),
    params(SearchQuery),
    responses(
        (status = 200, description = "The messages found", body = SearchResults),
        (status = 400, description = "An empty, punctuation-only or too long query, or too many words (`invalid_query`); a `limit` outside 1 to 100 (`invalid_limit`); not a user id (`invalid_user_id`), group id (`invalid_group_id`) or message id (`invalid_message_id`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "`before` is not a stored message (`unknown_message`)", body = ErrorBody),
    ))]
pub async fn search(
    State(searcher): State<Searcher>,
    State(messaging): State<Messaging>,
    QueryParams(params): QueryParams<SearchQuery>,
) -> Result<Json<SearchResults>, ApiError> {
    let query = Query::parse(&params.q)?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_RESULTS {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("`limit` is 1 to {MAX_RESULTS}"),
        ));
    }
    let place = match (&params.with, &params.group) {
        (None, None) => None,
        (Some(with), None) => Some(Place::With(user(with)?)),
        (None, Some(group)) => Some(Place::Group(group_id(group)?)),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "search `with` a contact or in a `group`, not both",
            ));
        }
    };
    let before = match &params.before {
        Some(b) => Some(b.parse::<MessageId>().map_err(|_| {
            ApiError::bad_request("invalid_message_id", "`before` is not a message id")
        })?),
        None => None,
    };
    let Results { found, mut marks } =
        searcher
            .search(query, place, before, limit)
            .await
            .map_err(|e| match e {
                SearchError::UnknownCursor => {
                    ApiError::not_found("unknown_message", "`before` is not a stored message")
                }
                e => ApiError::internal(e),
            })?;
    // The results' messages as their conversations show them: the read marks of all their
    // conversations came with them.
    let mut places: Vec<(Where, Vec<usize>)> = Vec::new();
    for (i, f) in found.iter().enumerate() {
        let at = match f.place {
            Place::With(u) => Where::Direct(u),
            Place::Group(g) => Where::Group(g),
        };
        match places.iter_mut().find(|(p, _)| *p == at) {
            Some((_, these)) => these.push(i),
            None => places.push((at, vec![i])),
        }
    }
    let mut shown: Vec<Option<MessageView>> = found.iter().map(|_| None).collect();
    for (at, these) in places {
        // Every result of a place is in the same conversation.
        let marks = these
            .first()
            .and_then(|i| marks.remove(&found[*i].hit.conversation))
            .unwrap_or_default();
        let messages = these
            .iter()
            .map(|i| found[*i].hit.message.clone())
            .collect();
        let views = views_marked(&messaging, at, messages, &marks).await?;
        for (i, view) in these.into_iter().zip(views) {
            shown[i] = Some(view);
        }
    }
    let mut results = Vec::with_capacity(found.len());
    for (f, message) in found.into_iter().zip(shown) {
        let Some(message) = message else { continue };
        results.push(SearchResult {
            message,
            snippet: f.snippet.text,
            highlights: f.snippet.highlights.iter().map(|(s, e)| [*s, *e]).collect(),
            with: match f.place {
                Place::With(u) => Some(u.to_string()),
                Place::Group(_) => None,
            },
            group: match f.place {
                Place::Group(g) => Some(g.to_string()),
                Place::With(_) => None,
            },
        });
    }
    Ok(Json(SearchResults { results }))
}
