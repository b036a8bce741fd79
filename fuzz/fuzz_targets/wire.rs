#![no_main]
//! Protocol messages: hello, invite redemption, message delivery, relay mailboxes, pairing
//! vault sync and file transfers.

use libfuzzer_sys::fuzz_target;
use volli_core::wire::{
    self, Deliver, Delivered, FileRequest, FileResponse, Hello, PairBundle, PairRequest, PairResponse, RedeemRequest,
    RedeemResponse, RelayRequest, RelayResponse, SyncRequest, SyncResponse,
};

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode::<Hello>(data, 8 << 10);
    let _ = wire::decode::<RedeemRequest>(data, 16 << 10);
    let _ = wire::decode::<RedeemResponse>(data, 16 << 10);
    let _ = wire::decode::<Deliver>(data, 512 << 10);
    let _ = wire::decode::<Delivered>(data, 4 << 10);
    let _ = wire::decode::<RelayRequest>(data, 512 << 10);
    let _ = wire::decode::<RelayResponse>(data, 4 << 20);
    let _ = wire::decode::<PairRequest>(data, 8 << 10);
    let _ = wire::decode::<PairResponse>(data, 8 << 20);
    let _ = wire::decode::<PairBundle>(data, 8 << 20);
    let _ = wire::decode::<SyncRequest>(data, 1 << 20);
    let _ = wire::decode::<SyncResponse>(data, 16 << 20);
    let _ = wire::decode::<FileRequest>(data, 8 << 10);
    let _ = wire::decode::<FileResponse>(data, 5 << 20);
});
