#![no_main]
//! What another device sends to be imported into the vault: Loro updates for any of its
//! documents, from a device that may be hostile. An import is taken or refused; it never
//! panics out of the vault, and the vault keeps answering afterwards.

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use volli_core::UserSecret;
use volli_store::{DocId, Store, VaultDelta, VaultOptions};

struct Fixture {
    runtime: tokio::runtime::Runtime,
    store: Store,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // In memory when the machine has it: every import commits with an fsync.
        let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
        let store = runtime
            .block_on(Store::open(dir.path(), VaultOptions::default()))
            .unwrap();
        Fixture {
            runtime,
            store,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, blob)) = data.split_first() else {
        return;
    };
    let id = match which % 4 {
        0 => DocId::Contacts,
        1 => DocId::Settings,
        2 => DocId::Devices,
        _ => DocId::Chunk {
            conversation: UserSecret::from_master([9; 32]).user_id(),
            chunk: 0,
        },
    };
    let f = fixture();
    let delta = VaultDelta::default().with(id, vec![blob.to_vec()]);
    let _ = f.runtime.block_on(f.store.vault().import(delta));
    // Whatever happened, the vault still reads.
    f.runtime
        .block_on(f.store.vault().version())
        .expect("the vault answers after an import");
});
