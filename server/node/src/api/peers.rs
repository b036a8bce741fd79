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
