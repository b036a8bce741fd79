//! Host-side types for calls into plugins and for reporting on them. They mirror the WIT
//! types without exposing the generated bindings to the rest of the node.

use std::time::Duration;

use serde::Serialize;

use crate::bindings::types::PluginError;
use crate::limits::Limits;
use crate::manifest::{Capabilities, Kind};
use crate::stats::PluginStats;

/// A peer reported by a discovery plugin. Unverified: the node checks certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRecord {
    /// libp2p peer id, as text.
    pub peer_id: String,
    /// Multiaddrs, as text.
    pub addrs: Vec<String>,
    /// The user id, if the method knows it.
    pub user_id: Option<String>,
    /// A device certificate, if the method carries one.
    pub certificate: Option<Vec<u8>>,
}

/// What a discovery plugin reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// A peer and its addresses.
    Peer(PeerRecord),
    /// A signed address record, to be verified by the node.
    Record(Vec<u8>),
}

/// What this node advertises through discovery plugins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfInfo {
    /// The user id.
    pub user_id: String,
    /// This device's peer id.
    pub peer_id: String,
    /// Where this device listens.
    pub addrs: Vec<String>,
    /// This device's certificate.
    pub certificate: Vec<u8>,
    /// A signed, expiring record of the user's devices and addresses.
    pub signed_record: Vec<u8>,
}

/// Envelopes and bytes held for someone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Number of envelopes.
    pub envelopes: u32,
    /// Their total size.
    pub bytes: u64,
}

/// A request to hold a sealed envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepositRequest {
    /// Depositor's user id.
    pub depositor: String,
    /// Recipient's user id.
    pub recipient: String,
    /// Envelope size in bytes.
    pub size: u64,
    /// Requested time to hold it.
    pub ttl_secs: u32,
    /// Whether the depositor is one of this node's contacts.
    pub depositor_is_contact: bool,
    /// Whether the recipient is one of this node's contacts.
    pub recipient_is_contact: bool,
    /// Held from this depositor already.
    pub depositor_held: Usage,
    /// Held for this recipient already.
    pub recipient_held: Usage,
    /// Held in total.
    pub total_held: Usage,
}

/// A relay policy's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Hold the envelope this long.
    Accept {
        /// Seconds to hold it.
        ttl_secs: u32,
    },
    /// Refuse it.
    Reject {
        /// Told to the depositor.
        reason: String,
    },
}

/// A contact that could hold envelopes for this node's user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayCandidate {
    /// The contact's user id.
    pub user_id: String,
    /// Whether one of its devices is connected.
    pub online: bool,
    /// Round-trip time, if known.
    pub rtt_ms: Option<u32>,
}

/// An error a plugin returned (not a failure of the plugin itself).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GuestError {
    /// It lacked a capability.
    #[error("denied: {0}")]
    Denied(String),
    /// It refused the input.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Nothing found.
    #[error("not found")]
    NotFound,
    /// A quota or rate limit.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// Transient.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<PluginError> for GuestError {
    fn from(e: PluginError) -> Self {
        match e {
            PluginError::Denied(m) => GuestError::Denied(m),
            PluginError::InvalidInput(m) => GuestError::InvalidInput(m),
            PluginError::NotFound => GuestError::NotFound,
            PluginError::LimitExceeded(m) => GuestError::LimitExceeded(m),
            PluginError::Unavailable(m) => GuestError::Unavailable(m),
            PluginError::Internal(m) => GuestError::Internal(m),
        }
    }
}

/// Why a call into a plugin did not produce a result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The operator disabled the plugin.
    #[error("the plugin is disabled")]
    Disabled,
    /// The plugin failed repeatedly and is resting.
    #[error("the plugin failed ({reason}); next attempt in {}s", retry_in.as_secs())]
    Failed {
        /// Until the next attempt.
        retry_in: Duration,
        /// The last failure.
        reason: String,
    },
    /// The plugin returned an error.
    #[error("{0}")]
    Plugin(GuestError),
    /// The plugin trapped, ran out of memory or stack, or exceeded its time budget. Its
    /// instance was discarded.
    #[error("the plugin {0}")]
    Trapped(String),
    /// The plugin could not be started: it refused its configuration or failed while
    /// starting.
    #[error("the plugin could not start: {0}")]
    Init(String),
}

/// A plugin's current condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginState {
    /// Enabled and answering.
    Running,
    /// Turned off by the operator.
    Disabled,
    /// Failed repeatedly; retried after a backoff.
    Failed,
}

impl PluginState {
    /// Its name in the API: `running`, `disabled` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Disabled => "disabled",
            Self::Failed => "failed",
        }
    }
}

/// Something that happened to a plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PluginEvent {
    /// The plugin was marked failed.
    Failed {
        /// Its name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// Everything the API reports about a plugin.
#[derive(Clone, Debug, Serialize)]
pub struct PluginInfo {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// Its version.
    pub version: String,
    /// Its description.
    pub description: String,
    /// Whether the operator enabled it.
    pub enabled: bool,
    /// Running, disabled or failed.
    pub state: PluginState,
    /// Shipped with the node.
    pub builtin: bool,
    /// Capabilities it asked for.
    pub capabilities: Capabilities,
    /// Capabilities it was granted.
    pub granted: Capabilities,
    /// Its limits.
    pub limits: Limits,
    /// Its counters.
    pub stats: PluginStats,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// BLAKE3 of the component, hex.
    pub hash: String,
}
