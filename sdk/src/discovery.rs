//! Discovery plugins: find peers and users.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "discovery",
        pub_export_macro: true,
        export_macro_name: "__volli_export_discovery_world",
        default_bindings_module: "volli_plugin_sdk::discovery::bindings",
    });
}

pub use bindings::exports::volli::plugin::discover::{Finding, Peer, SelfInfo};

use crate::{Error, Manifest};

/// A discovery method. One value lives for the life of the plugin instance; the node calls
/// one method at a time.
pub trait Discovery: Sized + 'static {
    /// Who the plugin is and which capabilities it needs.
    fn manifest() -> Manifest;
    /// Builds the plugin from its configuration (a JSON object).
    fn init(config: &str) -> Result<Self, Error>;
    /// Makes this node findable. The default does nothing.
    fn advertise(&mut self, me: SelfInfo) -> Result<(), Error> {
        let _ = me;
        Ok(())
    }
    /// What the method found since the last call, or still sees.
    fn discover(&mut self) -> Result<Vec<Finding>, Error>;
    /// Current devices and addresses of a user. The default finds nothing.
    fn lookup(&mut self, user_id: &str) -> Result<Vec<Finding>, Error> {
        let _ = user_id;
        Ok(Vec::new())
    }
    /// Addresses the node learnt elsewhere for `user_id`. The default forgets them.
    fn learn(&mut self, user_id: &str, findings: Vec<Finding>) -> Result<(), Error> {
        let _ = (user_id, findings);
        Ok(())
    }
}

/// Exports a [`Discovery`] implementation as the plugin's component interface.
#[macro_export]
macro_rules! export_discovery {
    ($plugin:ty) => {
        const _: () = {
            use $crate::discovery::bindings::exports::volli::plugin as __exports;
            use $crate::discovery::Discovery as _;

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

            impl __exports::discover::Guest for __Guest {
                fn advertise(me: __exports::discover::SelfInfo) -> Result<(), $crate::Error> {
                    __with(|p| p.advertise(me))
                }
                fn discover() -> Result<Vec<__exports::discover::Finding>, $crate::Error> {
                    __with(|p| p.discover())
                }
                fn lookup_user(user_id: String) -> Result<Vec<__exports::discover::Finding>, $crate::Error> {
                    __with(|p| p.lookup(&user_id))
                }
                fn learn(
                    user_id: String,
                    findings: Vec<__exports::discover::Finding>,
                ) -> Result<(), $crate::Error> {
                    __with(|p| p.learn(&user_id, findings))
                }
            }

            $crate::discovery::bindings::__volli_export_discovery_world!(__Guest with_types_in $crate::discovery::bindings);
        };
    };
}
