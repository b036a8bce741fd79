//! `static-peers`: a discovery method whose peers come from its configuration.
//!
//! It is the SDK template: the smallest useful discovery plugin. The operator lists peers in
//! the plugin's configuration; `discover` reports them and `lookup` finds a user's devices
//! among them. Copy it to start your own method (a directory service over `http`, a shared
//! file, a custom DHT scheme…).

use serde::Deserialize;
use volli_plugin_sdk::discovery::{Discovery, Finding, Peer};
use volli_plugin_sdk::{Capability, Error, Manifest, log};

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    peers: Vec<PeerConfig>,
}

#[derive(Deserialize)]
struct PeerConfig {
    peer_id: String,
    addrs: Vec<String>,
    #[serde(default)]
    user_id: Option<String>,
}

struct StaticPeers {
    peers: Vec<Peer>,
}

impl Discovery for StaticPeers {
    fn manifest() -> Manifest {
        Manifest::new(
            "static-peers",
            env!("CARGO_PKG_VERSION"),
            "Peers listed in the plugin's configuration",
        )
        .with(&[Capability::Log])
        .default_config(r#"{"peers": []}"#)
    }

    fn init(config: &str) -> Result<Self, Error> {
        let config: Config = serde_json::from_str(config)
            .map_err(|e| Error::InvalidInput(format!("configuration: {e}")))?;
        let peers: Vec<Peer> = config
            .peers
            .into_iter()
            .map(|p| Peer {
                peer_id: p.peer_id,
                addrs: p.addrs,
                user_id: p.user_id,
                certificate: None,
            })
            .collect();
        log::info(&format!("{} static peers configured", peers.len()));
        Ok(StaticPeers { peers })
    }

    fn discover(&mut self) -> Result<Vec<Finding>, Error> {
        Ok(self.peers.iter().cloned().map(Finding::Peer).collect())
    }

    fn lookup(&mut self, user_id: &str) -> Result<Vec<Finding>, Error> {
        Ok(self
            .peers
            .iter()
            .filter(|p| p.user_id.as_deref() == Some(user_id))
            .cloned()
            .map(Finding::Peer)
            .collect())
    }
}

volli_plugin_sdk::export_discovery!(StaticPeers);
