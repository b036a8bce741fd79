//! `rendezvous`: registers this node at the operator's rendezvous points under a namespace
//! derived from its user id, and looks users up there. Registrations are signed by the
//! registering peer (libp2p signed peer records), so the node learns authentic addresses;
//! which user a peer belongs to is checked by the node through its device certificate.

use volli_plugin_sdk::discovery::{Discovery, Finding, Peer, SelfInfo};
use volli_plugin_sdk::{Capability, Error, Manifest, rendezvous};

/// Registrations live two hours; the node re-advertises well before that.
const TTL_SECS: u32 = 2 * 3600;

struct Rendezvous;

fn namespace(user_id: &str) -> String {
    format!("volli/u/{user_id}")
}

impl Discovery for Rendezvous {
    fn manifest() -> Manifest {
        Manifest::new(
            "rendezvous",
            env!("CARGO_PKG_VERSION"),
            "Registration at configured rendezvous points",
        )
        .with(&[Capability::Rendezvous])
    }

    fn init(_config: &str) -> Result<Self, Error> {
        Ok(Rendezvous)
    }

    fn advertise(&mut self, me: SelfInfo) -> Result<(), Error> {
        rendezvous::register(&namespace(&me.user_id), TTL_SECS)
    }

    fn discover(&mut self) -> Result<Vec<Finding>, Error> {
        Ok(Vec::new())
    }

    fn lookup(&mut self, user_id: &str) -> Result<Vec<Finding>, Error> {
        Ok(rendezvous::discover(&namespace(user_id))?
            .into_iter()
            .map(|r| {
                Finding::Peer(Peer {
                    peer_id: r.peer_id,
                    addrs: r.addrs,
                    user_id: Some(user_id.to_owned()),
                    certificate: None,
                })
            })
            .collect())
    }
}

volli_plugin_sdk::export_discovery!(Rendezvous);
