//! The host side of each capability, one module per WIT interface. Every function checks
//! the plugin's grant first, then bounds its inputs, then calls the node's backend.

mod dht;
mod http;
mod kv;
mod lan;
mod log;
mod rendezvous;
mod simple;

use crate::bindings::types::PluginError;

/// The result every capability function returns: outer error traps, inner is guest-visible.
type HostResult<T> = wasmtime::Result<Result<T, PluginError>>;

impl crate::bindings::types::Host for crate::state::HostState {}

fn too_large(what: &str, max: usize) -> PluginError {
    PluginError::InvalidInput(format!("{what} is larger than {max} bytes"))
}
