#![no_main]
//! Contact cards received while redeeming invites.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = volli_core::ContactCard::from_bytes(data);
});
