//! Volli's plugin host: runs discovery, relay-policy and file-backend plugins as sandboxed
//! WebAssembly components. (Filled in by the plugin host work.)
#![warn(missing_docs)]
