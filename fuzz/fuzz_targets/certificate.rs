#![no_main]
//! Device certificates, then verification of whatever parses.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cert) = volli_core::DeviceCertificate::from_bytes(data) {
        let _ = cert.verify();
    }
});
