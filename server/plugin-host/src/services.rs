//! What the node lends plugins: the backends behind the `kv`, `lan`, `dht`, `rendezvous`
//! and `http` capabilities.
//!
//! The plugin host decides *whether* a plugin may use a capability and checks sizes; the
//! node implements *how* (SQLite for `kv`, libp2p for `dht`, a UDP socket for `lan`…). A
//! missing backend makes the capability answer `unavailable`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a backend could not serve a request. Shown to the plugin as a `plugin-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Transient: try later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A quota or rate limit.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// The request itself is unacceptable.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Not found.
    #[error("not found")]
    NotFound,
    /// A failure of the node.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Plugin-scoped key-value storage.
pub trait KvBackend: Send + Sync {
    /// The value of `key` for `plugin`.
    fn get<'a>(
        &'a self,
        plugin: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, ServiceError>>;
    /// Stores `value`, refusing with `LimitExceeded` if the plugin's total would pass `quota`.
    fn set<'a>(
        &'a self,
        plugin: &'a str,
        key: &'a str,
        value: Vec<u8>,
        quota: u64,
    ) -> BoxFuture<'a, Result<(), ServiceError>>;
    /// Removes `key`.
    fn delete<'a>(
        &'a self,
        plugin: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ServiceError>>;
    /// Keys with `prefix`, sorted, at most `limit`.
    fn keys<'a>(
        &'a self,
        plugin: &'a str,
        prefix: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, ServiceError>>;
}

/// A packet from the mDNS group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Sender as `ip:port`.
    pub source: String,
    /// The packet.
    pub payload: Vec<u8>,
}

/// The mDNS multicast group.
pub trait LanBackend: Send + Sync {
    /// Sends one packet to the group.
    fn send<'a>(
        &'a self,
        plugin: &'a str,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), ServiceError>>;
    /// Packets queued for `plugin` since its last call, at most `max`.
    fn receive<'a>(
        &'a self,
        plugin: &'a str,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<Datagram>, ServiceError>>;
}

/// The node's Kademlia DHT.
pub trait DhtBackend: Send + Sync {
    /// Stores a record.
    fn put<'a>(&'a self, key: Vec<u8>, value: Vec<u8>) -> BoxFuture<'a, Result<(), ServiceError>>;
    /// Finds records.
    fn get<'a>(&'a self, key: Vec<u8>) -> BoxFuture<'a, Result<Vec<Vec<u8>>, ServiceError>>;
    /// Announces this node as a provider.
    fn provide<'a>(&'a self, key: Vec<u8>) -> BoxFuture<'a, Result<(), ServiceError>>;
    /// Finds providers' peer ids.
    fn find_providers<'a>(
        &'a self,
        key: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<String>, ServiceError>>;
}

/// A peer registered at a rendezvous point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Its peer id.
    pub peer_id: String,
    /// Its addresses.
    pub addrs: Vec<String>,
}

/// The configured rendezvous points.
pub trait RendezvousBackend: Send + Sync {
    /// Registers this node under `namespace`.
    fn register<'a>(
        &'a self,
        namespace: String,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), ServiceError>>;
    /// Peers registered under `namespace`.
    fn discover<'a>(
        &'a self,
        namespace: String,
    ) -> BoxFuture<'a, Result<Vec<Registration>, ServiceError>>;
}

/// An HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Body, at most the requested size.
    pub body: Vec<u8>,
}

/// Outgoing HTTP GET. The host has already checked the URL against the plugin's allow-list.
pub trait HttpBackend: Send + Sync {
    /// Fetches `url`, reading at most `max_body` bytes, within `timeout`.
    fn get<'a>(
        &'a self,
        url: &'a str,
        max_body: usize,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<HttpResponse, ServiceError>>;
}

/// The backends available to plugins.
#[derive(Clone, Default)]
pub struct Services {
    /// Behind `kv`.
    pub kv: Option<Arc<dyn KvBackend>>,
    /// Behind `lan`.
    pub lan: Option<Arc<dyn LanBackend>>,
    /// Behind `dht`.
    pub dht: Option<Arc<dyn DhtBackend>>,
    /// Behind `rendezvous`.
    pub rendezvous: Option<Arc<dyn RendezvousBackend>>,
    /// Behind `http`.
    pub http: Option<Arc<dyn HttpBackend>>,
}
