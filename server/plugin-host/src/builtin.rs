//! The plugins shipped with the node, compiled from `plugins/` by the build script.

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// Every built-in plugin: its name and component bytes.
pub fn all() -> &'static [(&'static str, &'static [u8])] {
    BUILTIN
}

/// Directory holding components built only for tests (hostile behaviours), as
/// `<name>.wasm`. Not part of the node.
#[doc(hidden)]
pub fn testing_dir() -> &'static std::path::Path {
    std::path::Path::new(TESTING_DIR)
}
