#![no_main]
//! Pairing links and codes, as a person pastes or types them.

use libfuzzer_sys::fuzz_target;
use volli_core::pairing::{PairingCode, PairingLink};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = PairingCode::parse(text);
        if let Ok(link) = PairingLink::parse(text) {
            let _ = link.addrs();
            let _ = PairingLink::parse(&link.to_link());
        }
    }
});
