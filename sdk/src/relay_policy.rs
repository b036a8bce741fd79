//! Relay-policy plugins: decide what this node holds for others, and which contacts hold
//! envelopes for this node's user.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "relay-policy",
        pub_export_macro: true,
        export_macro_name: "__volli_export_relay_policy_world",
        default_bindings_module: "volli_plugin_sdk::relay_policy::bindings",
    });
}

pub use bindings::exports::volli::plugin::relay::{Candidate, Decision, DepositRequest, Usage};

use crate::{Error, Manifest};

/// A relay policy. One value lives for the life of the plugin instance.
pub trait RelayPolicy: Sized + 'static {
    /// Who the plugin is and which capabilities it needs.
    fn manifest() -> Manifest;
    /// Builds the policy from its configuration (a JSON object).
    fn init(config: &str) -> Result<Self, Error>;
    /// Accepts (with a TTL in seconds) or rejects (with a reason) a deposit.
    fn decide(&mut self, request: DepositRequest) -> Decision;
    /// Picks at most `wanted` relays, best first.
    fn choose_relays(&mut self, candidates: Vec<Candidate>, wanted: u32) -> Vec<String>;
}

/// Exports a [`RelayPolicy`] implementation as the plugin's component interface.
#[macro_export]
macro_rules! export_relay_policy {
    ($plugin:ty) => {
        const _: () = {
            use $crate::relay_policy::RelayPolicy as _;
            use $crate::relay_policy::bindings::exports::volli::plugin as __exports;

            $crate::__private::thread_local! {
                static __STATE: $crate::__private::RefCell<Option<$plugin>> =
                    const { $crate::__private::RefCell::new(None) };
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

            impl __exports::relay::Guest for __Guest {
                fn decide(request: __exports::relay::DepositRequest) -> __exports::relay::Decision {
                    __STATE.with(|state| match state.borrow_mut().as_mut() {
                        Some(p) => p.decide(request),
                        None => __exports::relay::Decision::Reject("policy not initialised".into()),
                    })
                }
                fn choose_relays(candidates: Vec<__exports::relay::Candidate>, wanted: u32) -> Vec<String> {
                    __STATE.with(|state| match state.borrow_mut().as_mut() {
                        Some(p) => p.choose_relays(candidates, wanted),
                        None => Vec::new(),
                    })
                }
            }

            $crate::relay_policy::bindings::__volli_export_relay_policy_world!(__Guest with_types_in $crate::relay_policy::bindings);
        };
    };
}
