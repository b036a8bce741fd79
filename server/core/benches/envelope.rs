//! Sealing and opening a message envelope (X-Wing + HKDF-SHA256 + ChaCha20-Poly1305, signed
//! inside) next to raw single-shot HPKE with X25519 only (same KDF and AEAD, no signature),
//! the classical baseline.
//!
//! `cargo bench -p volli-core --bench envelope`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Kem as _, OpModeR, OpModeS};
use volli_core::{Envelope, MessageId, Signer, Timestamp, UserSecret};

const N: u32 = 400;
const ROUNDS: usize = 7;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(mut f: impl FnMut()) -> Duration {
    median(
        (0..ROUNDS)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..N {
                    f();
                }
                start.elapsed() / N
            })
            .collect(),
    )
}

fn main() {
    let alice = UserSecret::from_master([1; 32]);
    let bob = UserSecret::from_master([2; 32]);
    let body =
        "a short message of about a hundred bytes, like most chat messages are, give or take";
    let signer = Signer::User(&alice);
    let (to, kem) = (bob.user_id(), bob.public_keys().kem.clone());
    let keyring = bob.keyring(0);
    let sealed = Envelope::seal(
        &signer,
        to,
        &kem,
        MessageId::random().unwrap(),
        Timestamp::now(),
        body,
    )
    .unwrap();
    let seal = time(|| {
        black_box(
            Envelope::seal(
                &signer,
                to,
                &kem,
                MessageId::random().unwrap(),
                Timestamp::now(),
                black_box(body),
            )
            .unwrap(),
        );
    });
    let open = time(|| {
        black_box(sealed.open(to, &keyring).unwrap());
    });

    let (sk, pk) = X25519HkdfSha256::derive_keypair(&[3; 32]);
    let (enc, ct) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
        &OpModeS::Base,
        &pk,
        b"info",
        body.as_bytes(),
        b"",
    )
    .unwrap();
    let raw_seal = time(|| {
        black_box(
            hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
                &OpModeS::Base,
                &pk,
                b"info",
                black_box(body.as_bytes()),
                b"",
            )
            .unwrap(),
        );
    });
    let raw_open = time(|| {
        black_box(
            hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
                &OpModeR::Base,
                &sk,
                &enc,
                b"info",
                &ct,
                b"",
            )
            .unwrap(),
        );
    });
    // X-Wing decapsulation alone: the `hpke` crate's (the key expanded from its seed on every
    // call), and ours (expanded once), on the same encapsulation.
    let (up_sk, up_pk) = hpke::kem::XWing::derive_keypair(&[4; 32]);
    let (our_sk, _) = volli_core::xwing::XWing::derive_keypair(&[4; 32]);
    let (_, encapped) = hpke::kem::XWing::encap(&up_pk, None).unwrap();
    let decap_upstream = time(|| {
        black_box(hpke::kem::XWing::decap(&up_sk, None, black_box(&encapped)).unwrap());
    });
    let decap_expanded = time(|| {
        black_box(volli_core::xwing::XWing::decap(&our_sk, None, black_box(&encapped)).unwrap());
    });

    println!("envelope, ~100-byte message, median of {ROUNDS} rounds of {N}");
    println!(
        "  seal  (X-Wing, signed, padded to 512 B): {seal:?}   raw X25519 HPKE: {raw_seal:?}   ({:.1}x)",
        seal.as_secs_f64() / raw_seal.as_secs_f64()
    );
    println!(
        "  open  (X-Wing, signature checked):       {open:?}   raw X25519 HPKE: {raw_open:?}   ({:.1}x)",
        open.as_secs_f64() / raw_open.as_secs_f64()
    );
    println!(
        "  X-Wing decapsulation: key expanded once {decap_expanded:?}   `hpke` crate, expanded per call: {decap_upstream:?}   ({:.1}x)",
        decap_upstream.as_secs_f64() / decap_expanded.as_secs_f64()
    );
    println!(
        "  sizes: envelope {} B, raw X25519 HPKE {} B",
        sealed.to_bytes().len(),
        32 + ct.len()
    );
}
