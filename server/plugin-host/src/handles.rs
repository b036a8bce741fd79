//! Typed handles to plugins of each kind, used by the node's services.

use std::sync::Arc;

use crate::bindings::discovery::exports::volli::plugin::discover as wd;
use crate::bindings::relay_policy::exports::volli::plugin::relay as wr;
use crate::manifest::Capability;
use crate::plugin::{Bound, Plugin};
use crate::types::{
    CallError, Decision, DepositRequest, Finding, PeerRecord, PluginInfo, RelayCandidate, SelfInfo,
    Usage,
};

macro_rules! bound {
    ($live:expr, $variant:ident) => {
        match &$live.bound {
            Bound::$variant(b) => b,
            _ => unreachable!("a plugin's kind never changes"),
        }
    };
}

fn from_wit(f: wd::Finding) -> Finding {
    match f {
        wd::Finding::Peer(p) => Finding::Peer(PeerRecord {
            peer_id: p.peer_id,
            addrs: p.addrs,
            user_id: p.user_id,
            certificate: p.certificate,
        }),
        wd::Finding::SignedRecord(r) => Finding::Record(r),
    }
}

fn to_wit(f: &Finding) -> wd::Finding {
    match f {
        Finding::Peer(p) => wd::Finding::Peer(wd::Peer {
            peer_id: p.peer_id.clone(),
            addrs: p.addrs.clone(),
            user_id: p.user_id.clone(),
            certificate: p.certificate.clone(),
        }),
        Finding::Record(r) => wd::Finding::SignedRecord(r.clone()),
    }
}

/// A discovery plugin.
#[derive(Clone)]
pub struct DiscoveryPlugin(pub(crate) Arc<Plugin>);

impl DiscoveryPlugin {
    /// The plugin's name (reported as a peer's source).
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// Its current report.
    pub fn info(&self) -> PluginInfo {
        self.0.info()
    }

    /// Whether it was granted `capability` (without building its report).
    pub fn is_granted(&self, capability: Capability) -> bool {
        self.0.is_granted(capability)
    }

    /// Discards the plugin's instance and starts a fresh one.
    pub async fn restart(&self) -> Result<(), CallError> {
        self.0.restart().await
    }

    /// Makes this node findable through the plugin.
    pub async fn advertise(&self, me: &SelfInfo) -> Result<(), CallError> {
        let me = wd::SelfInfo {
            user_id: me.user_id.clone(),
            peer_id: me.peer_id.clone(),
            addrs: me.addrs.clone(),
            certificate: me.certificate.clone(),
            signed_record: me.signed_record.clone(),
        };
        self.0
            .call(move |live| {
                Box::pin(async move {
                    let b = bound!(live, Discovery);
                    b.volli_plugin_discover()
                        .call_advertise(&mut live.store, &me)
                        .await
                })
            })
            .await
    }

    /// What the plugin currently finds.
    pub async fn discover(&self) -> Result<Vec<Finding>, CallError> {
        self.0
            .call(|live| {
                Box::pin(async move {
                    let b = bound!(live, Discovery);
                    b.volli_plugin_discover()
                        .call_discover(&mut live.store)
                        .await
                })
            })
            .await
            .map(|found| found.into_iter().map(from_wit).collect())
    }

    /// A user's devices, as far as the plugin can tell.
    pub async fn lookup(&self, user_id: &str) -> Result<Vec<Finding>, CallError> {
        let user_id = user_id.to_owned();
        self.0
            .call(move |live| {
                Box::pin(async move {
                    let b = bound!(live, Discovery);
                    b.volli_plugin_discover()
                        .call_lookup_user(&mut live.store, &user_id)
                        .await
                })
            })
            .await
            .map(|found| found.into_iter().map(from_wit).collect())
    }

    /// Tells the plugin what the node learnt about a user elsewhere.
    pub async fn learn(&self, user_id: &str, findings: &[Finding]) -> Result<(), CallError> {
        let user_id = user_id.to_owned();
        let findings: Vec<wd::Finding> = findings.iter().map(to_wit).collect();
        self.0
            .call(move |live| {
                Box::pin(async move {
                    let b = bound!(live, Discovery);
                    b.volli_plugin_discover()
                        .call_learn(&mut live.store, &user_id, &findings)
                        .await
                })
            })
            .await
    }
}

fn usage(u: Usage) -> wr::Usage {
    wr::Usage {
        envelopes: u.envelopes,
        bytes: u.bytes,
    }
}

/// A relay-policy plugin.
#[derive(Clone)]
pub struct RelayPolicyPlugin(pub(crate) Arc<Plugin>);

impl RelayPolicyPlugin {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// Decides on a deposit.
    pub async fn decide(&self, request: &DepositRequest) -> Result<Decision, CallError> {
        let request = wr::DepositRequest {
            depositor: request.depositor.clone(),
            recipient: request.recipient.clone(),
            size: request.size,
            ttl_secs: request.ttl_secs,
            depositor_is_contact: request.depositor_is_contact,
            recipient_is_contact: request.recipient_is_contact,
            depositor_held: usage(request.depositor_held),
            recipient_held: usage(request.recipient_held),
            total_held: usage(request.total_held),
        };
        self.0
            .call(move |live| {
                Box::pin(async move {
                    let b = bound!(live, RelayPolicy);
                    b.volli_plugin_relay()
                        .call_decide(&mut live.store, &request)
                        .await
                        .map(Ok)
                })
            })
            .await
            .map(|d| match d {
                wr::Decision::Accept(ttl_secs) => Decision::Accept { ttl_secs },
                wr::Decision::Reject(reason) => Decision::Reject { reason },
            })
    }

    /// Picks relays among `candidates`, best first, at most `wanted`.
    pub async fn choose_relays(
        &self,
        candidates: &[RelayCandidate],
        wanted: u32,
    ) -> Result<Vec<String>, CallError> {
        let candidates: Vec<wr::Candidate> = candidates
            .iter()
            .map(|c| wr::Candidate {
                user_id: c.user_id.clone(),
                online: c.online,
                rtt_ms: c.rtt_ms,
            })
            .collect();
        self.0
            .call(move |live| {
                Box::pin(async move {
                    let b = bound!(live, RelayPolicy);
                    b.volli_plugin_relay()
                        .call_choose_relays(&mut live.store, &candidates, wanted)
                        .await
                        .map(Ok)
                })
            })
            .await
            .map(|mut chosen| {
                chosen.truncate(wanted as usize);
                chosen
            })
    }
}

/// A file-backend plugin.
#[derive(Clone)]
pub struct FileBackendPlugin(pub(crate) Arc<Plugin>);

impl FileBackendPlugin {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// Stores a chunk under its id.
    pub async fn put(&self, id: &str, data: Vec<u8>) -> Result<(), CallError> {
        let id = id.to_owned();
        self.0
            .call(move |live| {
                Box::pin(async move {
                    let b = bound!(live, FileBackend);
                    b.volli_plugin_blobs()
                        .call_put(&mut live.store, &id, &data)
                        .await
                })
            })
            .await
    }

    /// Makes stored chunks durable.
    pub async fn sync(&self, ids: Vec<String>) -> Result<(), CallError> {
        self.0
            .call(move |live| {
                Box::pin(async move {
                    let b = bound!(live, FileBackend);
                    b.volli_plugin_blobs()
                        .call_sync(&mut live.store, &ids)
                        .await
                })
            })
            .await
    }

    /// Reads part of a chunk.
    pub async fn get(&self, id: &str, offset: u64, len: u32) -> Result<Vec<u8>, CallError> {
        let id = id.to_owned();
        self.0
            .call(move |live| {
                Box::pin(async move {
                    let b = bound!(live, FileBackend);
                    b.volli_plugin_blobs()
                        .call_get(&mut live.store, &id, offset, len)
                        .await
                })
            })
            .await
    }

    /// Removes a chunk.
    pub async fn delete(&self, id: &str) -> Result<(), CallError> {
        let id = id.to_owned();
        self.0
            .call(move |live| {
                Box::pin(async move {
                    let b = bound!(live, FileBackend);
                    b.volli_plugin_blobs()
                        .call_delete(&mut live.store, &id)
                        .await
                })
            })
            .await
    }

    /// The size of a chunk, if stored.
    pub async fn stat(&self, id: &str) -> Result<Option<u64>, CallError> {
        let id = id.to_owned();
        self.0
            .call(move |live| {
                Box::pin(async move {
                    let b = bound!(live, FileBackend);
                    b.volli_plugin_blobs().call_stat(&mut live.store, &id).await
                })
            })
            .await
    }
}
