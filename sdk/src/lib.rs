//! The Volli plugin SDK: traits and export macros for writing plugins as WebAssembly
//! components. (Filled in by the plugin host work.)
#![warn(missing_docs)]
