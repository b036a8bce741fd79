//! `invite`: remembers what the node learnt about users from invites and contact cards, and
//! answers lookups from that memory. The address book lives in the plugin's `kv`, so it
//! survives restarts; the newest findings for a user replace the older ones.

use serde::{Deserialize, Serialize};
use volli_plugin_sdk::discovery::{Discovery, Finding, Peer};
use volli_plugin_sdk::{Capability, Error, Manifest, kv};

/// Findings kept per user.
const MAX_PER_USER: usize = 16;

#[derive(Serialize, Deserialize)]
enum Stored {
    Peer {
        peer_id: String,
        addrs: Vec<String>,
        certificate: Option<Vec<u8>>,
    },
    Record(Vec<u8>),
}

struct Invite;

fn key(user_id: &str) -> String {
    format!("u/{user_id}")
}

fn load(user_id: &str) -> Result<Vec<Finding>, Error> {
    let Some(bytes) = kv::get(&key(user_id))? else {
        return Ok(Vec::new());
    };
    let stored: Vec<Stored> = serde_json::from_slice(&bytes).unwrap_or_default();
    Ok(stored
        .into_iter()
        .map(|s| match s {
            Stored::Peer {
                peer_id,
                addrs,
                certificate,
            } => Finding::Peer(Peer {
                peer_id,
                addrs,
                user_id: Some(user_id.to_owned()),
                certificate,
            }),
            Stored::Record(r) => Finding::SignedRecord(r),
        })
        .collect())
}

impl Discovery for Invite {
    fn manifest() -> Manifest {
        Manifest::new(
            "invite",
            env!("CARGO_PKG_VERSION"),
            "Addresses learnt from invites and contact cards",
        )
        .with(&[Capability::Kv])
    }

    fn init(_config: &str) -> Result<Self, Error> {
        Ok(Invite)
    }

    fn discover(&mut self) -> Result<Vec<Finding>, Error> {
        let mut all = Vec::new();
        for k in kv::keys("u/")? {
            if let Some(user_id) = k.strip_prefix("u/") {
                all.extend(load(user_id)?);
            }
        }
        Ok(all)
    }

    fn lookup(&mut self, user_id: &str) -> Result<Vec<Finding>, Error> {
        load(user_id)
    }

    fn learn(&mut self, user_id: &str, findings: Vec<Finding>) -> Result<(), Error> {
        let stored: Vec<Stored> = findings
            .into_iter()
            .take(MAX_PER_USER)
            .map(|f| match f {
                Finding::Peer(p) => Stored::Peer {
                    peer_id: p.peer_id,
                    addrs: p.addrs,
                    certificate: p.certificate,
                },
                Finding::SignedRecord(r) => Stored::Record(r),
            })
            .collect();
        if stored.is_empty() {
            return kv::delete(&key(user_id));
        }
        let bytes = serde_json::to_vec(&stored).map_err(|e| Error::Internal(e.to_string()))?;
        kv::set(&key(user_id), &bytes)
    }
}

volli_plugin_sdk::export_discovery!(Invite);
