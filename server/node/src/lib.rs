//! The Volli node: wires storage, identity, events and the HTTP/WebSocket API together, and
//! provides the `volli` command line (server and client).
//!
//! Module map: [`config`] (layered settings) → [`identity`] (keys in the data dir, [`keystore`] seals them) →
//! [`node`] (start-up, wiring, shutdown) → [`api`] (axum routes over service handles) and
//! [`events`] (the bounded event bus behind `/v1/events`). [`cli`] is the entry point.
#![warn(missing_docs)]

pub mod api;
pub mod backup;
pub mod backups;
pub mod cli;
pub mod clients;
pub mod config;
pub mod connectivity;
pub mod contacts;
pub mod conversations;
pub mod devices;
pub mod discovery;
pub mod events;
pub mod files;
pub mod identity;
pub mod keystore;
pub mod limits;
mod logging;
pub mod messaging;
pub mod metrics;
pub mod network;
pub mod node;
pub mod outbound;
pub mod peers;
pub mod plugins;
pub mod profile;
pub mod push;
pub mod relay;
pub mod retention;
pub mod search;
mod secret_file;
pub mod systemd;
pub mod timeline;
pub mod tls;

/// The node's version, as reported by `/v1/node` and the OpenAPI document.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
