//! The one place where host bindings are generated from `sdk/wit`.
//!
//! The `host` world imports every capability; its generated interface modules are shared by
//! the three plugin worlds through `with`, so each capability has exactly one Rust trait to
//! implement. Imports are async and trappable (`wasmtime::Result<Result<T, PluginError>>`:
//! the outer error traps, the inner one is what the guest sees).

#![allow(missing_docs, unreachable_pub, clippy::all)]

mod host_world {
    wasmtime::component::bindgen!({
        path: "../../sdk/wit",
        world: "host",
        imports: { default: async | trappable },
    });
}

pub use host_world::volli::plugin::{clock, dht, http, kv, lan, log, random, rendezvous, types};

pub mod discovery {
    wasmtime::component::bindgen!({
        path: "../../sdk/wit",
        world: "discovery",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "volli:plugin/types": super::types,
            "volli:plugin/log": super::log,
            "volli:plugin/clock": super::clock,
            "volli:plugin/random": super::random,
            "volli:plugin/kv": super::kv,
            "volli:plugin/lan": super::lan,
            "volli:plugin/dht": super::dht,
            "volli:plugin/rendezvous": super::rendezvous,
            "volli:plugin/http": super::http,
        },
    });
}

pub mod relay_policy {
    wasmtime::component::bindgen!({
        path: "../../sdk/wit",
        world: "relay-policy",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "volli:plugin/types": super::types,
            "volli:plugin/log": super::log,
            "volli:plugin/clock": super::clock,
            "volli:plugin/kv": super::kv,
        },
    });
}

pub mod file_backend {
    wasmtime::component::bindgen!({
        path: "../../sdk/wit",
        world: "file-backend",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "volli:plugin/types": super::types,
            "volli:plugin/log": super::log,
            "volli:plugin/clock": super::clock,
            "volli:plugin/kv": super::kv,
        },
    });
}
