//! The cryptography of one message, alone: creating and processing an application message
//! in a conversation of two devices, through this crate (its state store, the device's
//! Ed25519 signer, the checks of who sent it) beside raw openmls as its book uses it (its
//! memory storage, a basic credential), in one run.
//!
//! `cargo bench -p volli-mls --bench messages`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use volli_core::{DeviceCertificate, Permissions, Timestamp, UserSecret};
use volli_mls::{Config, Info, Member, Mls, Processed, Trust};

const MESSAGES: usize = 5_000;
const BODY: [u8; 100] = [7; 100];

struct Anyone;

impl Trust for Anyone {
    fn admits(&self, _: &Info, _: &Member) -> bool {
        true
    }
}

fn device(user: &UserSecret) -> Mls {
    let key = libp2p_identity::Keypair::generate_ed25519();
    let certificate = DeviceCertificate::issue(
        user,
        key.public().to_peer_id(),
        "bench",
        Permissions::ALL,
        Timestamp::now(),
    );
    let seed: [u8; 32] = key
        .try_into_ed25519()
        .unwrap()
        .secret()
        .as_ref()
        .try_into()
        .unwrap();
    Mls::open(Vec::new(), certificate, &seed, Config::default()).unwrap()
}

/// (create, process) per message, and bytes on the wire, through this crate.
fn ours() -> (Duration, Duration, usize) {
    let (alice, bob) = (
        UserSecret::generate().unwrap(),
        UserSecret::generate().unwrap(),
    );
    let (mut a, mut b) = (device(&alice), device(&bob));
    let own = b.new_key_packages(1, false, 0).unwrap().remove(0);
    let package = a.check_key_package(&own.bytes).unwrap();
    let info = Info::direct(alice.user_id(), bob.user_id(), 0);
    let created = a.create(info, vec![package], &Anyone, 0).unwrap();
    b.process(&created.welcome.unwrap(), &Anyone).unwrap();
    let group = created.group;
    let start = Instant::now();
    let sealed: Vec<Vec<u8>> = (0..MESSAGES)
        .map(|_| {
            let m = a.encrypt(&group, &BODY).unwrap().bytes;
            // What the node persists after each operation.
            let _ = a.take_changes();
            m
        })
        .collect();
    let create = start.elapsed() / MESSAGES as u32;
    let start = Instant::now();
    for m in &sealed {
        assert!(matches!(
            b.process(m, &Anyone).unwrap(),
            Processed::Application { .. }
        ));
        let _ = b.take_changes();
    }
    let process = start.elapsed() / MESSAGES as u32;
    (create, process, sealed[0].len())
}

/// The same with raw openmls.
fn raw() -> (Duration, Duration, usize) {
    let suite = volli_mls::CIPHERSUITE;
    let caps = Capabilities::new(
        None,
        Some(&[suite]),
        None,
        None,
        Some(&[CredentialType::Basic]),
    );
    let (pa, pb) = (OpenMlsRustCrypto::default(), OpenMlsRustCrypto::default());
    let credential = |name: &str, provider: &OpenMlsRustCrypto| {
        let keys = SignatureKeyPair::new(suite.signature_algorithm()).unwrap();
        keys.store(provider.storage()).unwrap();
        let with_key = CredentialWithKey {
            credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
            signature_key: keys.to_public_vec().into(),
        };
        (with_key, keys)
    };
    let (ca, ka) = credential("alice", &pa);
    let (cb, kb) = credential("bob", &pb);
    let config = MlsGroupCreateConfig::builder()
        .ciphersuite(suite)
        .capabilities(caps.clone())
        .use_ratchet_tree_extension(true)
        .build();
    let mut ga = MlsGroup::new(&pa, &ka, &config, ca).unwrap();
    let kp = KeyPackage::builder()
        .leaf_node_capabilities(caps)
        .build(suite, &pb, &kb, cb)
        .unwrap();
    let (_, welcome, _) = ga
        .add_members(&pa, &ka, &[kp.key_package().clone()])
        .unwrap();
    ga.merge_pending_commit(&pa).unwrap();
    let welcome =
        match MlsMessageIn::tls_deserialize_exact(welcome.tls_serialize_detached().unwrap())
            .unwrap()
            .extract()
        {
            MlsMessageBodyIn::Welcome(w) => w,
            _ => panic!("not a Welcome"),
        };
    let join = MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .build();
    let mut gb = StagedWelcome::new_from_welcome(&pb, &join, welcome, None)
        .unwrap()
        .into_group(&pb)
        .unwrap();
    let start = Instant::now();
    let sealed: Vec<Vec<u8>> = (0..MESSAGES)
        .map(|_| {
            ga.create_message(&pa, &ka, &BODY)
                .unwrap()
                .tls_serialize_detached()
                .unwrap()
        })
        .collect();
    let create = start.elapsed() / MESSAGES as u32;
    let start = Instant::now();
    for m in &sealed {
        let m = MlsMessageIn::tls_deserialize_exact(m)
            .unwrap()
            .try_into_protocol_message()
            .unwrap();
        gb.process_message(&pb, m).unwrap();
    }
    let process = start.elapsed() / MESSAGES as u32;
    (create, process, sealed[0].len())
}

fn main() {
    for round in 1..=3 {
        let (oc, op, ob) = ours();
        let (rc, rp, rb) = raw();
        println!(
            "round {round}, {MESSAGES} messages of 100 B: volli-mls create {oc:?} process {op:?} \
             ({ob} B on the wire) | raw openmls create {rc:?} process {rp:?} ({rb} B) | \
             ratio {:.2}",
            (oc + op).as_secs_f64() / (rc + rp).as_secs_f64()
        );
    }
}
