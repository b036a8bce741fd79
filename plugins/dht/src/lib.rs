//! `dht`: publishes this user's signed address record in the node's Kademlia DHT and looks
//! users up there. The record (devices, addresses, expiry, signed by the user key) is made
//! and verified by the node; this plugin only decides where it lives and when to refresh it.

use volli_plugin_sdk::discovery::{Discovery, Finding, SelfInfo};
use volli_plugin_sdk::{Capability, Error, Manifest, clock, dht, log};

/// Republish at most this often (the node calls `advertise` when addresses change, too).
const REPUBLISH_MS: u64 = 30 * 60 * 1000;

struct Dht {
    published: Option<(Vec<u8>, u64)>,
}

fn key(user_id: &str) -> Vec<u8> {
    format!("/volli/user/{user_id}").into_bytes()
}

impl Discovery for Dht {
    fn manifest() -> Manifest {
        Manifest::new(
            "dht",
            env!("CARGO_PKG_VERSION"),
            "Signed address records in the Kademlia DHT",
        )
        .with(&[Capability::Dht, Capability::Clock, Capability::Log])
    }

    fn init(_config: &str) -> Result<Self, Error> {
        Ok(Dht { published: None })
    }

    fn advertise(&mut self, me: SelfInfo) -> Result<(), Error> {
        // Only devices that hold the user key sign address records.
        if me.signed_record.is_empty() {
            return Ok(());
        }
        let now = clock::now_ms()?;
        let fresh = self.published.as_ref().is_some_and(|(record, at)| {
            *record == me.signed_record && now.saturating_sub(*at) < REPUBLISH_MS
        });
        if fresh {
            return Ok(());
        }
        dht::put(&key(&me.user_id), &me.signed_record)?;
        log::debug("published this user's address record");
        self.published = Some((me.signed_record, now));
        Ok(())
    }

    fn discover(&mut self) -> Result<Vec<Finding>, Error> {
        // A DHT cannot be enumerated; it only answers lookups.
        Ok(Vec::new())
    }

    fn lookup(&mut self, user_id: &str) -> Result<Vec<Finding>, Error> {
        Ok(dht::get(&key(user_id))?
            .into_iter()
            .map(Finding::SignedRecord)
            .collect())
    }
}

volli_plugin_sdk::export_discovery!(Dht);
