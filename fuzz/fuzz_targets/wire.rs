#![no_main]
//! Protocol messages: hello, invite redemption, message delivery and relay mailboxes.

use libfuzzer_sys::fuzz_target;
use volli_core::wire::{
    self, Deliver, Delivered, Hello, RedeemRequest, RedeemResponse, RelayRequest, RelayResponse,
};

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode::<Hello>(data, 8 << 10);
    let _ = wire::decode::<RedeemRequest>(data, 16 << 10);
    let _ = wire::decode::<RedeemResponse>(data, 16 << 10);
    let _ = wire::decode::<Deliver>(data, 512 << 10);
    let _ = wire::decode::<Delivered>(data, 4 << 10);
    let _ = wire::decode::<RelayRequest>(data, 512 << 10);
    let _ = wire::decode::<RelayResponse>(data, 4 << 20);
});
