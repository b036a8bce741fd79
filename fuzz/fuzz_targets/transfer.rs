#![no_main]
//! What a file transfer takes from a peer: sealed offers, chunk lists, bulk-channel frames,
//! and chunk ciphertexts (opened, with a fixed key, as a receiver would).

use libfuzzer_sys::fuzz_target;
use volli_core::UserSecret;
use volli_core::transfer::{ChunkList, FileKey, Layout, SealedOffer, bulk};

fuzz_target!(|data: &[u8]| {
    if let Ok(offer) = SealedOffer::from_bytes(data) {
        let me = UserSecret::from_master([1; 32]);
        let _ = offer.open(me.user_id(), &me.keyring(0));
        let _ = SealedOffer::from_bytes(&offer.to_bytes());
    }
    for size in [0u64, 1, 70_000, 3 << 20] {
        let layout = Layout::for_size(size).unwrap_or_else(|_| unreachable!());
        let _ = ChunkList::from_bytes(&layout, data);
        let key = FileKey::from_bytes([2; 32]);
        for index in 0..layout.chunks() {
            let _ = layout.open_chunk(&key, index, data);
        }
        let _ = layout.open_segment(&key, 0, data);
    }
    if let Some(frame) = data.first_chunk::<{ bulk::HEADER_LEN }>() {
        let _ = bulk::Header::decode(frame);
    }
    if let Some(frame) = data.first_chunk::<{ bulk::REQUEST_LEN }>() {
        let _ = bulk::Request::decode(frame);
    }
});
