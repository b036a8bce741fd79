#![no_main]
//! Protocol messages: hello, invite redemption requests and responses.

use libfuzzer_sys::fuzz_target;
use volli_core::wire::{self, Hello, RedeemRequest, RedeemResponse};

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode::<Hello>(data, 8 << 10);
    let _ = wire::decode::<RedeemRequest>(data, 16 << 10);
    let _ = wire::decode::<RedeemResponse>(data, 16 << 10);
});
