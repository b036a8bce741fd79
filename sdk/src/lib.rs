//! Write Volli plugins as WebAssembly components.
//!
//! A plugin is a Rust crate built with `cargo build --target wasm32-wasip2 --release`. It
//! depends on this crate with exactly one feature naming its kind — `discovery`,
//! `relay-policy` or `file-backend` — implements that kind's trait ([`discovery::Discovery`],
//! [`relay_policy::RelayPolicy`], [`file_backend::FileBackend`]) and exports it with the
//! matching macro ([`export_discovery!`], [`export_relay_policy!`], [`export_file_backend!`]).
//! The generated WIT bindings stay hidden; the host capabilities the kind may use are
//! re-exported as plain modules ([`log`](mod@log), `clock`, `random`, `kv`, and for discovery
//! `lan`, `dht`, `rendezvous`, `http`). Each call returns `Err(Error::Denied(_))` unless the
//! operator granted that capability to the plugin.
//!
//! ```ignore
//! use volli_plugin_sdk::discovery::{Discovery, Peer};
//! use volli_plugin_sdk::{Capability, Error, Manifest};
//!
//! struct Hello;
//!
//! impl Discovery for Hello {
//!     fn manifest() -> Manifest {
//!         Manifest::new("hello", env!("CARGO_PKG_VERSION"), "Says hello").with(&[Capability::Log])
//!     }
//!     fn init(_config: &str) -> Result<Self, Error> {
//!         Ok(Hello)
//!     }
//!     fn discover(&mut self) -> Result<Vec<Peer>, Error> {
//!         volli_plugin_sdk::log::info("hello from a plugin");
//!         Ok(Vec::new())
//!     }
//! }
//!
//! volli_plugin_sdk::export_discovery!(Hello);
//! ```
//!
//! See `sdk/PLUGINS.md` for the package format, the capabilities, the limits and a
//! step-by-step guide from the template to a running plugin.
#![warn(missing_docs)]

#[cfg(any(
    all(feature = "discovery", feature = "relay-policy"),
    all(feature = "discovery", feature = "file-backend"),
    all(feature = "relay-policy", feature = "file-backend"),
))]
compile_error!("enable exactly one of the features `discovery`, `relay-policy`, `file-backend`");

#[cfg(feature = "discovery")]
pub mod discovery;
#[cfg(feature = "file-backend")]
pub mod file_backend;
#[cfg(feature = "relay-policy")]
pub mod relay_policy;

#[cfg(feature = "discovery")]
use discovery::bindings as world;
#[cfg(feature = "file-backend")]
use file_backend::bindings as world;
#[cfg(feature = "relay-policy")]
use relay_policy::bindings as world;

#[cfg(any(
    feature = "discovery",
    feature = "relay-policy",
    feature = "file-backend"
))]
mod common {
    pub use super::world::volli::plugin::types::{Capability, Manifest, PluginError as Error};

    impl Manifest {
        /// A manifest with no capabilities and an empty default configuration.
        pub fn new(name: &str, version: &str, description: &str) -> Self {
            Manifest {
                name: name.to_owned(),
                version: version.to_owned(),
                description: description.to_owned(),
                capabilities: Vec::new(),
                default_config: "{}".to_owned(),
            }
        }

        /// Requests these capabilities.
        pub fn with(mut self, capabilities: &[Capability]) -> Self {
            self.capabilities.extend_from_slice(capabilities);
            self
        }

        /// Sets the default configuration (a JSON object).
        pub fn default_config(mut self, json: &str) -> Self {
            self.default_config = json.to_owned();
            self
        }
    }

    /// Log lines, shown in the node's log under the plugin's name. Dropped silently when
    /// the `log` capability was not granted.
    pub mod log {
        use super::super::world::volli::plugin::log::{Level, log};

        /// Logs at debug level.
        pub fn debug(message: &str) {
            let _ = log(Level::Debug, message);
        }
        /// Logs at info level.
        pub fn info(message: &str) {
            let _ = log(Level::Info, message);
        }
        /// Logs at warn level.
        pub fn warn(message: &str) {
            let _ = log(Level::Warn, message);
        }
        /// Logs at error level.
        pub fn error(message: &str) {
            let _ = log(Level::Error, message);
        }
    }

    /// Wall-clock time (`clock` capability).
    pub mod clock {
        pub use super::super::world::volli::plugin::clock::now_ms;
    }

    /// Plugin-private key-value storage with a quota (`kv` capability).
    pub mod kv {
        pub use super::super::world::volli::plugin::kv::{delete, get, keys, set};
    }
}

#[cfg(any(
    feature = "discovery",
    feature = "relay-policy",
    feature = "file-backend"
))]
pub use common::*;

/// Cryptographically secure random bytes (`random` capability; discovery plugins).
#[cfg(feature = "discovery")]
pub mod random {
    pub use super::world::volli::plugin::random::bytes;
}
/// The local network's mDNS multicast group (`lan` capability).
#[cfg(feature = "discovery")]
pub mod lan {
    pub use super::world::volli::plugin::lan::{Datagram, receive, send};
}
/// The node's Kademlia DHT (`dht` capability).
#[cfg(feature = "discovery")]
pub mod dht {
    pub use super::world::volli::plugin::dht::{find_providers, get, provide, put};
}
/// Rendezvous points configured by the operator (`rendezvous` capability).
#[cfg(feature = "discovery")]
pub mod rendezvous {
    pub use super::world::volli::plugin::rendezvous::{Registration, discover, register};
}
/// HTTP GET to allow-listed hosts (`http` capability).
#[cfg(feature = "discovery")]
pub mod http {
    pub use super::world::volli::plugin::http::{Response, get};
}

#[doc(hidden)]
pub mod __private {
    pub use std::cell::RefCell;
    pub use std::thread_local;
}
