//! File-backend plugins: content-addressed storage for file chunks.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "file-backend",
        pub_export_macro: true,
        export_macro_name: "__volli_export_file_backend_world",
        default_bindings_module: "volli_plugin_sdk::file_backend::bindings",
    });
}

use crate::{Error, Manifest};

/// A chunk store. One value lives for the life of the plugin instance.
pub trait FileBackend: Sized + 'static {
    /// Who the plugin is and which capabilities it needs.
    fn manifest() -> Manifest;
    /// Builds the backend from its configuration (a JSON object).
    fn init(config: &str) -> Result<Self, Error>;
    /// Stores `data` under `id` (lowercase hex BLAKE3 of the data); it need not survive a
    /// crash until [`FileBackend::sync`] names it.
    fn put(&mut self, id: &str, data: Vec<u8>) -> Result<(), Error>;
    /// Makes the chunks `ids` durable: after it returns they survive a crash.
    fn sync(&mut self, ids: &[String]) -> Result<(), Error>;
    /// Reads up to `len` bytes at `offset`.
    fn get(&mut self, id: &str, offset: u64, len: u32) -> Result<Vec<u8>, Error>;
    /// Removes a chunk; a missing chunk is not an error.
    fn delete(&mut self, id: &str) -> Result<(), Error>;
    /// The size of a chunk, if stored.
    fn stat(&mut self, id: &str) -> Result<Option<u64>, Error>;
}

/// Exports a [`FileBackend`] implementation as the plugin's component interface.
#[macro_export]
macro_rules! export_file_backend {
    ($plugin:ty) => {
        const _: () = {
            use $crate::file_backend::FileBackend as _;
            use $crate::file_backend::bindings::exports::volli::plugin as __exports;

            $crate::__private::thread_local! {
                static __STATE: $crate::__private::RefCell<Option<$plugin>> =
                    const { $crate::__private::RefCell::new(None) };
            }

            fn __with<R>(
                f: impl FnOnce(&mut $plugin) -> Result<R, $crate::Error>,
            ) -> Result<R, $crate::Error> {
                __STATE.with(|state| match state.borrow_mut().as_mut() {
                    Some(plugin) => f(plugin),
                    None => Err($crate::Error::Internal("init was not called".into())),
                })
            }

            struct __Guest;

            impl __exports::plugin::Guest for __Guest {
                fn describe() -> $crate::Manifest {
                    <$plugin>::manifest()
                }
                fn init(config: String) -> Result<(), $crate::Error> {
                    let plugin = <$plugin>::init(&config)?;
                    __STATE.with(|state| *state.borrow_mut() = Some(plugin));
                    Ok(())
                }
            }

            impl __exports::blobs::Guest for __Guest {
                fn put(id: String, data: Vec<u8>) -> Result<(), $crate::Error> {
                    __with(|p| p.put(&id, data))
                }
                fn sync(ids: Vec<String>) -> Result<(), $crate::Error> {
                    __with(|p| p.sync(&ids))
                }
                fn get(id: String, offset: u64, len: u32) -> Result<Vec<u8>, $crate::Error> {
                    __with(|p| p.get(&id, offset, len))
                }
                fn delete(id: String) -> Result<(), $crate::Error> {
                    __with(|p| p.delete(&id))
                }
                fn stat(id: String) -> Result<Option<u64>, $crate::Error> {
                    __with(|p| p.stat(&id))
                }
            }

            $crate::file_backend::bindings::__volli_export_file_backend_world!(__Guest with_types_in $crate::file_backend::bindings);
        };
    };
}
