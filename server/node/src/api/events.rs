//! `GET /v1/events` (WebSocket) and `POST /v1/events/ticket`.
//!
//! Each connection gets its own subscription to the bounded event bus. Frames to the client
//! are JSON text; a client that cannot keep up receives `resync`; a client whose socket does
//! not accept a frame within [`SEND_TIMEOUT`] is disconnected. Client frames are ignored
//! (beyond ping/close) and capped at [`MAX_CLIENT_FRAME`].

use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::{Auth, TICKET_TTL};
use super::error::{ApiError, ErrorBody};
use super::extract::Json;
use crate::clients::Caller;
use crate::events::{Event, EventBus, Subscription};

/// Largest frame a client may send.
pub const MAX_CLIENT_FRAME: usize = 16 * 1024;
/// How long a frame may take to be accepted by the client's socket.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const PING_EVERY: Duration = Duration::from_secs(30);

/// A single-use credential for opening the events WebSocket from a browser.
#[derive(Serialize, ToSchema)]
pub struct Ticket {
    /// Pass as `/v1/events?ticket=…`.
    pub ticket: String,
    /// When the ticket stops working (RFC 3339).
    pub expires_at: String,
}

/// Issues a ticket for `/v1/events`, valid once, for 30 seconds; the stream it opens belongs
/// to the caller (a client's closes when the client is revoked).
#[utoipa::path(post, path = "/v1/events/ticket", tag = "events", security(("bearer" = [])),
    responses(
        (status = 201, description = "A new ticket", body = Ticket),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 429, description = "Too many outstanding tickets", body = ErrorBody),
    ))]
pub async fn ticket(
    State(auth): State<Auth>,
    Extension(caller): Extension<Caller>,
) -> Result<(StatusCode, Json<Ticket>), ApiError> {
    let ticket = auth.issue_ticket(caller)?;
    let expires_at = volli_core::Timestamp::now()
        .saturating_add(TICKET_TTL)
        .to_rfc3339();
    Ok((StatusCode::CREATED, Json(Ticket { ticket, expires_at })))
}

/// The live event stream.
///
/// A WebSocket of JSON text frames, each an `Event` (`{"type": "...", ...}`). The first frame
/// is `ready`. Authenticate with the bearer token or with `?ticket=` from
/// `POST /v1/events/ticket`.
#[utoipa::path(get, path = "/v1/events", tag = "events", security(("bearer" = [])),
    params(("ticket" = Option<String>, Query, description = "A ticket from POST /v1/events/ticket, for browsers")),
    responses(
        (status = 101, description = "Switching to WebSocket; frames are `Event` objects", body = Event),
        (status = 400, description = "Not a WebSocket upgrade request", body = ErrorBody),
        (status = 401, description = "Missing or wrong token or ticket", body = ErrorBody),
    ))]
pub async fn events(
    ws: WebSocketUpgrade,
    State(bus): State<EventBus>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let subscription = bus.subscribe();
    ws.max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| stream(socket, subscription, caller))
}

async fn stream(mut socket: WebSocket, mut events: Subscription, mut caller: Caller) {
    let ready = Event::Ready {
        version: crate::VERSION.to_owned(),
    };
    if send(&mut socket, &ready).await.is_err() {
        return;
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { break };
                if send(&mut socket, &event).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            revoked_now = caller.ended() => {
                let close = Message::Close(Some(if revoked_now {
                    CloseFrame { code: close_code::POLICY, reason: "this client was revoked, or its session ended".into() }
                } else {
                    CloseFrame { code: close_code::AWAY, reason: "the node is shutting down".into() }
                }));
                let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(close)).await;
                break;
            }
            _ = ping.tick() => {
                let ping = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Ping(Vec::new().into())));
                if !matches!(ping.await, Ok(Ok(()))) {
                    break;
                }
            }
        }
    }
}

async fn send(socket: &mut WebSocket, event: &Event) -> Result<(), ()> {
    let text = serde_json::to_string(event).map_err(|_| ())?;
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}
