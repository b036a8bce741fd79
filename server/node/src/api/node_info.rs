//! `GET /v1/node`: who this node is and where it listens.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::extract::Json;
use crate::node::NodeInfo;

/// This node.
#[derive(Serialize, ToSchema)]
#[schema(as = Node)]
pub struct NodeView {
    /// The user's id (base58 Ed25519 public key), shared by all the user's devices.
    pub user_id: String,
    /// This device's libp2p peer id.
    pub peer_id: String,
    /// Multiaddrs the node listens on for peers.
    pub listen_addrs: Vec<String>,
    /// The node's software version.
    pub version: String,
    /// This device's name.
    pub device_name: String,
    /// What this device may do (`messages`, `contacts`, `settings`, `admin`), as the
    /// user's certificate for it says: changes outside them get 403 `not_permitted`.
    pub permissions: Vec<String>,
    /// When the node started (RFC 3339).
    pub started_at: String,
    /// Whether other nodes can reach this one from outside its network: `public` (another
    /// node dialed one of its addresses back, or a router forwards its port), `private` (it
    /// is behind a NAT or a firewall: contacts reach it through `relayed_via`), or `unknown`
    /// (not found out yet).
    #[schema(example = "private")]
    pub reachability: &'static str,
    /// Multiaddrs confirmed reachable from outside (not through a relay).
    pub external_addrs: Vec<String>,
    /// Peer ids of the friends' nodes whose circuit relay this node listens through (each
    /// holds a reservation for it).
    pub relayed_via: Vec<String>,
    /// The search index.
    pub search: SearchIndexView,
}

/// How far the search index is built.
#[derive(Serialize, ToSchema)]
pub struct SearchIndexView {
    /// `ready` (every message is searchable) or `building` (the index of messages stored
    /// before it existed is being built in the background; what it holds is searchable).
    #[schema(example = "ready")]
    pub state: &'static str,
    /// Messages the build has looked at.
    pub indexed: u64,
    /// Messages the build has to look at.
    pub total: u64,
}

/// Describes this node.
#[utoipa::path(get, path = "/v1/node", tag = "node", security(("bearer" = [])),
    responses(
        (status = 200, description = "This node", body = NodeView),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn node_info(
    State(node): State<NodeInfo>,
    State(connectivity): State<crate::connectivity::Connectivity>,
    State(searcher): State<crate::search::Searcher>,
) -> Json<NodeView> {
    let now = connectivity.now();
    let search = searcher.progress();
    Json(NodeView {
        search: SearchIndexView {
            state: if search.ready() { "ready" } else { "building" },
            indexed: search.indexed,
            total: search.total,
        },
        reachability: match now.reachability {
            volli_net::Reachability::Public => "public",
            volli_net::Reachability::Private => "private",
            volli_net::Reachability::Unknown => "unknown",
        },
        external_addrs: now.external_addrs.iter().map(ToString::to_string).collect(),
        relayed_via: now
            .relays
            .iter()
            .filter(|r| r.reserved)
            .map(|r| r.relay.to_base58())
            .collect(),
        user_id: node.user_id().to_string(),
        peer_id: node.peer_id().to_base58(),
        listen_addrs: node
            .listen_addrs()
            .iter()
            .map(ToString::to_string)
            .collect(),
        version: crate::VERSION.to_owned(),
        device_name: node.device_name().to_owned(),
        permissions: node
            .permissions()
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        started_at: node.started_at().to_rfc3339(),
    })
}
