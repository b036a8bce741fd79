//! What a plugin is: its kind, its manifest, the capabilities it asks for and is granted.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::bindings::types as wit;

/// The three kinds of plugin, one WIT world each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Finds peers and users (`world discovery`).
    Discovery,
    /// Decides what the node holds for others (`world relay-policy`).
    RelayPolicy,
    /// Stores file chunks (`world file-backend`).
    FileBackend,
}

impl Kind {
    /// The kind's name as used in the API and the WIT world.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Discovery => "discovery",
            Kind::RelayPolicy => "relay-policy",
            Kind::FileBackend => "file-backend",
        }
    }

    /// The capabilities a plugin of this kind may be granted: its world's imports (and `fs`
    /// for file backends, which use WASI's filesystem on a private directory).
    pub fn allowed(self) -> &'static [Capability] {
        use Capability::*;
        match self {
            Kind::Discovery => &[Log, Clock, Random, Kv, Lan, Dht, Rendezvous, Http],
            Kind::RelayPolicy => &[Log, Clock, Kv],
            Kind::FileBackend => &[Log, Clock, Kv, Fs],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// Write to the node's log.
    Log,
    /// Read the wall clock.
    Clock,
    /// Get secure random bytes.
    Random,
    /// Plugin-private key-value storage with a quota.
    Kv,
    /// Send and receive on the mDNS multicast group.
    Lan,
    /// Put and get records, provide and find providers, through the node's Kademlia.
    Dht,
    /// Register and discover at the configured rendezvous points.
    Rendezvous,
    /// HTTP GET to allow-listed hosts.
    Http,
    /// A private directory, `/data`, through WASI's filesystem.
    Fs,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 9] = [
        Capability::Log,
        Capability::Clock,
        Capability::Random,
        Capability::Kv,
        Capability::Lan,
        Capability::Dht,
        Capability::Rendezvous,
        Capability::Http,
        Capability::Fs,
    ];

    /// The capability's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::Clock => "clock",
            Capability::Random => "random",
            Capability::Kv => "kv",
            Capability::Lan => "lan",
            Capability::Dht => "dht",
            Capability::Rendezvous => "rendezvous",
            Capability::Http => "http",
            Capability::Fs => "fs",
        }
    }

    pub(crate) fn from_wit(c: wit::Capability) -> Self {
        match c {
            wit::Capability::Log => Capability::Log,
            wit::Capability::Clock => Capability::Clock,
            wit::Capability::Random => Capability::Random,
            wit::Capability::Kv => Capability::Kv,
            wit::Capability::Lan => Capability::Lan,
            wit::Capability::Dht => Capability::Dht,
            wit::Capability::Rendezvous => Capability::Rendezvous,
            wit::Capability::Http => Capability::Http,
            wit::Capability::Fs => Capability::Fs,
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Capability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Capability::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown capability {s:?}"))
    }
}

/// A set of capabilities.
pub type Capabilities = BTreeSet<Capability>;

/// A plugin's self-description, checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Manifest {
    /// Unique name: `[a-z0-9-]{1,32}`, starting with a letter.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// One line for the operator.
    pub description: String,
    /// The kind, from the world the component implements.
    pub kind: Kind,
    /// What the plugin asks for.
    pub capabilities: Capabilities,
    /// The default configuration (a JSON object).
    pub default_config: serde_json::Map<String, serde_json::Value>,
}

impl Manifest {
    pub(crate) fn from_wit(m: wit::Manifest, kind: Kind) -> Result<Self, String> {
        check_name(&m.name)?;
        if m.version.is_empty() || m.version.len() > 64 {
            return Err("version must be 1 to 64 characters".into());
        }
        if m.description.len() > 256 {
            return Err("description must be at most 256 characters".into());
        }
        let capabilities: Capabilities = m
            .capabilities
            .into_iter()
            .map(Capability::from_wit)
            .collect();
        if let Some(c) = capabilities.iter().find(|c| !kind.allowed().contains(c)) {
            return Err(format!(
                "a {kind} plugin cannot ask for the `{c}` capability"
            ));
        }
        let default_config = match serde_json::from_str(&m.default_config) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => return Err("default-config must be a JSON object".into()),
        };
        Ok(Manifest {
            name: m.name,
            version: m.version,
            description: m.description,
            kind,
            capabilities,
            default_config,
        })
    }
}

/// Checks a plugin name: `[a-z][a-z0-9-]{0,31}`.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "plugin name {name:?} must be 1 to 32 characters of a-z, 0-9 and '-', starting with a letter"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wit_manifest(caps: Vec<wit::Capability>, config: &str) -> wit::Manifest {
        wit::Manifest {
            name: "good-name".into(),
            version: "1.0.0".into(),
            description: "d".into(),
            capabilities: caps,
            default_config: config.into(),
        }
    }

    #[test]
    fn capabilities_outside_the_world_are_refused() {
        let m = wit_manifest(vec![wit::Capability::Lan], "{}");
        assert!(Manifest::from_wit(m.clone(), Kind::Discovery).is_ok());
        let e = Manifest::from_wit(m, Kind::RelayPolicy).unwrap_err();
        assert!(e.contains("lan"), "{e}");
    }

    #[test]
    fn names_and_configs_are_checked() {
        for bad in [
            "",
            "Upper",
            "1starts-with-digit",
            "has space",
            &"x".repeat(33),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("mdns").unwrap();
        check_name("friends-only").unwrap();
        assert!(Manifest::from_wit(wit_manifest(vec![], "[]"), Kind::Discovery).is_err());
        assert!(Manifest::from_wit(wit_manifest(vec![], "nope"), Kind::Discovery).is_err());
    }
}
