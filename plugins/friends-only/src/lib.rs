//! `friends-only`: the default relay policy. This node holds envelopes only when both the
//! depositor and the recipient are its user's contacts, within per-depositor,
//! per-recipient and total quotas, for at most the configured TTL (never over 7 days).
//! Relays are chosen online first, then by round-trip time.

use serde::Deserialize;
use volli_plugin_sdk::relay_policy::{Candidate, Decision, DepositRequest, RelayPolicy};
use volli_plugin_sdk::{Error, Manifest};

const SEVEN_DAYS: u32 = 7 * 24 * 3600;

#[derive(Deserialize)]
struct Config {
    max_envelope_bytes: u64,
    max_per_depositor: u32,
    max_bytes_per_depositor: u64,
    max_bytes_per_recipient: u64,
    max_total_bytes: u64,
    max_ttl_secs: u32,
}

struct FriendsOnly {
    config: Config,
}

impl RelayPolicy for FriendsOnly {
    fn manifest() -> Manifest {
        Manifest::new(
            "friends-only",
            env!("CARGO_PKG_VERSION"),
            "Hold envelopes between contacts only, within quotas",
        )
        .default_config(
            r#"{"max_envelope_bytes": 262144, "max_per_depositor": 1000,
                "max_bytes_per_depositor": 52428800, "max_bytes_per_recipient": 104857600,
                "max_total_bytes": 1073741824, "max_ttl_secs": 604800}"#,
        )
    }

    fn init(config: &str) -> Result<Self, Error> {
        let config: Config =
            serde_json::from_str(config).map_err(|e| Error::InvalidInput(e.to_string()))?;
        Ok(FriendsOnly { config })
    }

    fn decide(&mut self, r: DepositRequest) -> Decision {
        let c = &self.config;
        let reject = |why: &str| Decision::Reject(why.to_owned());
        if !r.depositor_is_contact {
            return reject("this node only holds envelopes from its user's contacts");
        }
        if !r.recipient_is_contact {
            return reject("this node only holds envelopes for its user's contacts");
        }
        if r.size > c.max_envelope_bytes {
            return reject("envelope too large");
        }
        if r.depositor_held.envelopes >= c.max_per_depositor
            || r.depositor_held.bytes + r.size > c.max_bytes_per_depositor
        {
            return reject("quota for this depositor reached");
        }
        if r.recipient_held.bytes + r.size > c.max_bytes_per_recipient {
            return reject("quota for this recipient reached");
        }
        if r.total_held.bytes + r.size > c.max_total_bytes {
            return reject("this node holds all it can");
        }
        Decision::Accept(r.ttl_secs.min(c.max_ttl_secs).min(SEVEN_DAYS))
    }

    fn choose_relays(&mut self, mut candidates: Vec<Candidate>, wanted: u32) -> Vec<String> {
        candidates.sort_by_key(|c| (!c.online, c.rtt_ms.unwrap_or(u32::MAX)));
        candidates
            .into_iter()
            .take(wanted as usize)
            .map(|c| c.user_id)
            .collect()
    }
}

volli_plugin_sdk::export_relay_policy!(FriendsOnly);
