#![no_main]
//! The mdns plugin's DNS parser (the same source file the plugin compiles), on packets from
//! anyone on the LAN.

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, clippy::all)]
#[path = "../../plugins/mdns/src/dns.rs"]
mod dns;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = dns::parse(data) {
        let _ = message.txt_records("_volli._udp.local");
    }
    let _ = dns::base64url_decode(&String::from_utf8_lossy(data));
});
