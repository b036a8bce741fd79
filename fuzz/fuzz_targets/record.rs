#![no_main]
//! Address records from the DHT.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = volli_core::Timestamp::now();
    let _ = volli_core::AddressRecord::from_bytes(data, now);
    let _ = volli_core::AddressRecord::valid_for_key(b"/volli/user/x", data, now);
});
