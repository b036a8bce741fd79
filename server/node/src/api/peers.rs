//! `GET /v1/peers`: the peer table.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::extract::Json;
use crate::peers::{PeerEntry, Peers};

/// A peer.
#[derive(Serialize, ToSchema)]
#[schema(as = Peer)]
pub struct PeerView {
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Its user, once its device certificate verified; otherwise null.
    pub user_id: Option<String>,
    /// Where it may be reached.
    pub addrs: Vec<String>,
    /// The discovery plugins that found it.
    pub sources: Vec<String>,
    /// Whether a connection is open.
    pub connected: bool,
    /// Last round-trip time in milliseconds, if measured.
    pub rtt_ms: Option<u64>,
    /// How it is reached while connected: `direct` (its own connection, hole-punched
    /// through NATs or not) or `relayed` (a circuit through a friend's node); null when not
    /// connected.
    #[schema(example = "direct")]
    pub path: Option<&'static str>,
    /// The latest attempt to replace a relayed connection by a direct one (hole punching);
    /// null when none was made.
    pub last_punch: Option<PunchView>,
}

/// A hole-punching attempt.
#[derive(Serialize, ToSchema)]
#[schema(as = Punch)]
pub struct PunchView {
    /// `trying`, `direct` (a direct connection replaced the relayed one) or `failed` (the
    /// peer stays relayed; tried again later).
    #[schema(example = "direct")]
    pub outcome: &'static str,
    /// The direct connection's transport (`quic` or `tcp`), when it succeeded.
    #[schema(example = "quic")]
    pub transport: Option<&'static str>,
    /// Why it failed: what dialing the peer's addresses gave (e.g. a reset from its router,
    /// or no answer).
    pub reason: Option<String>,
    /// When (RFC 3339, UTC).
    pub at: String,
}

impl From<volli_net::PunchReport> for PunchView {
    fn from(r: volli_net::PunchReport) -> Self {
        Self {
            outcome: r.outcome.as_str(),
            transport: r.transport,
            reason: r.reason,
            at: volli_core::Timestamp::from_millis(
                r.at.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                    .unwrap_or(0),
            )
            .to_rfc3339(),
        }
    }
}

impl From<PeerEntry> for PeerView {
    fn from(e: PeerEntry) -> Self {
        Self {
            peer_id: e.peer_id.to_base58(),
            user_id: e.user_id.map(|u| u.to_string()),
            addrs: e.addrs.iter().map(ToString::to_string).collect(),
            sources: e.sources.into_iter().collect(),
            connected: e.connected,
            rtt_ms: e
                .rtt
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            path: e.path.filter(|_| e.connected).map(|p| p.as_str()),
            last_punch: e.last_punch.map(PunchView::from),
        }
    }
}

/// The peer table.
#[derive(Serialize, ToSchema)]
pub struct PeerList {
    /// Connected first.
    pub peers: Vec<PeerView>,
}

/// Every peer this node knows, how it was found, and whether it is connected.
#[utoipa::path(get, path = "/v1/peers", tag = "peers", security(("bearer" = [])),
    responses(
        (status = 200, description = "The peer table", body = PeerList),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn list(State(peers): State<Peers>) -> Json<PeerList> {
    Json(PeerList {
        peers: peers.list().into_iter().map(PeerView::from).collect(),
    })
}
