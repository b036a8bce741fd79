//! Volli's plugin host: runs discovery, relay-policy and file-backend plugins as sandboxed
//! WebAssembly components on wasmtime.
//!
//! - **Contract**: the WIT package `volli:plugin@0.1.0` in `sdk/wit`, one world per kind;
//!   bindings are generated once, in [`bindings`](crate::bindings).
//! - **Capabilities** (one module each under `caps/`): deny by default; every host import
//!   checks the plugin's grant, bounds its input, then calls a backend the node lends
//!   through [`Services`]. WASI is linked with nothing in it: no environment, arguments,
//!   sockets or files, except the plugin's own `/data` directory when `fs` is granted.
//! - **Limits** ([`Limits`]): per-call wall-clock budget through epoch interruption (plus an
//!   outer timeout), linear memory, tables and instances through the store limiter, an
//!   engine-wide wasm stack. A trap discards the instance; repeated failures put the plugin
//!   in a backoff and emit [`PluginEvent::Failed`].
//! - **Registry** ([`PluginHost`]): inspect (compile, cache by content hash, detect the kind,
//!   read the manifest without capabilities), load, enable, disable, list.
//!
//! It knows nothing of HTTP, SQLite or libp2p; the node wires those in.
#![warn(missing_docs)]

mod bindings;
pub mod builtin;
mod caps;
mod engine;
mod handles;
mod host;
mod limits;
mod manifest;
mod plugin;
mod services;
mod state;
mod stats;
mod types;

pub use engine::EPOCH_TICK;
pub use handles::{DiscoveryPlugin, FileBackendPlugin, RelayPolicyPlugin};
pub use host::{
    DEFAULT_KV_QUOTA, HostConfig, HostError, Inspected, InvalidPlugin, LoadError, Loaded,
    MAX_COMPONENT_BYTES, PluginHost, PluginSettings,
};
pub use limits::{Limits, MAX_MEMORY_BYTES};
pub use manifest::{Capabilities, Capability, Kind, Manifest, check_name};
pub use services::{
    BoxFuture, Datagram, DhtBackend, HttpBackend, HttpResponse, KvBackend, LanBackend,
    Registration, RendezvousBackend, ServiceError, Services,
};
pub use stats::PluginStats;
pub use types::{
    CallError, Decision, DepositRequest, Finding, GuestError, PeerRecord, PluginEvent, PluginInfo,
    PluginState, RelayCandidate, SelfInfo, Usage,
};
