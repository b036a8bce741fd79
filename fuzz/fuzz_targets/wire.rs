#![no_main]
//! Protocol messages: hello, invite redemption, message delivery, relay mailboxes, pairing
//! vault sync, file transfers and backups held by friends.

use libfuzzer_sys::fuzz_target;
use volli_core::wire::{
    self, Deliver, Delivered, FileRequest, FileResponse, Hello, HoldRequest, HoldResponse, PairBundle, PairRequest, PairResponse, RedeemRequest,
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
    let _ = wire::decode::<HoldRequest>(data, (4 << 20) + (64 << 10));
    let _ = wire::decode::<HoldResponse>(data, (4 << 20) + (64 << 10));
    // What a restoring device reads from a holder: a manifest that must not open, and a
    // phrase as a person may type it.
    let keys = volli_core::backup::BackupKeys::from_root(&[1; 32]);
    let _ = keys.open_manifest(data);
    let _ = keys.open_blob(&[2; 16], data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = volli_core::backup::RecoveryPhrase::parse(text);
    }
});
