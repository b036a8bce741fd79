#![no_main]
//! Envelopes from the network (direct delivery, relays): parsing, then opening with a fixed
//! key, which must refuse anything that was not sealed to it.

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static ME: OnceLock<(volli_core::UserId, volli_core::KemKeyring)> = OnceLock::new();
    let (me, keys) = ME.get_or_init(|| {
        let user = volli_core::UserSecret::from_master([7; 32]);
        (user.user_id(), user.keyring(1))
    });
    if let Ok(envelope) = volli_core::Envelope::from_bytes(data) {
        let _ = envelope.open(*me, keys);
        let _ = envelope.digest();
    }
});
