//! Vault sync over `/volli/sync/1`, between the devices of one user.
//!
//! Pull-based: a device asks another for what it lacks (`Pull`, with its vault's version
//! vector per document and an X-Wing key made for the round), and gets a sealed, budgeted
//! vault delta back, part after part. Every local change is announced to the connected
//! devices (`Notify`, with the new version; at most every [`NOTIFY_EVERY`]), which pull when
//! they lack something, so edits travel live; a device that connects pulls and announces at
//! once, so partitions heal on reconnect. A `Notify` also records what the other device has
//! acknowledged (`vault_acks`).
//!
//! Only the user's own devices are served, never a revoked one, and each only the documents
//! its permissions allow. Deltas are sealed with HPKE X-Wing to the requester's key for the
//! round, so a recording stays confidential against a future quantum attacker; Noise and the
//! device certificate authenticate the device. A device with `messages` that sees the user
//! move to a newer X-Wing key generation asks an admin device for it (`Keys`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use volli_core::pairing::{ReplyKey, seal_to};
use volli_core::wire::{self, SyncRequest, SyncResponse};
use volli_core::{MessageId, PeerId, Permissions, UserId};
use volli_net::Protocol;
use volli_store::{DocId, VaultDelta, VaultVersion};

use super::Devices;
use super::pairing::allowed;
use crate::events::Event;

/// Bytes asked for per round of a pull.
const PULL_BUDGET: u32 = 4 << 20;
/// Local changes are announced at most this often.
const NOTIFY_EVERY: Duration = Duration::from_millis(5);
const DELTA_INFO: &[u8] = b"volli/sync/1 delta";
const KEYS_INFO: &[u8] = b"volli/sync/1 keys";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// What another device acknowledged is written at most this often per device. An
/// acknowledgement only lets deleted text be erased from history; one lost in a crash is
/// made again by the device's next announcement. Writing each (one for every message
/// either device took in) was a disk write per message.
const ACK_EVERY: Duration = Duration::from_secs(2);

/// Pulls under way, so one device is pulled from once at a time.
#[derive(Default)]
pub(super) struct State {
    pulling: Mutex<HashSet<PeerId>>,
    /// A pull was asked for while one ran: run another after it.
    again: Mutex<HashSet<PeerId>>,
    acks: Mutex<Acks>,
}

/// Acknowledgements of other devices: when each was last written, and the latest of those
/// waiting to be.
#[derive(Default)]
struct Acks {
    written: std::collections::HashMap<PeerId, std::time::Instant>,
    waiting: std::collections::HashMap<PeerId, VaultVersion>,
}

impl Devices {
    /// Announces local changes to the connected devices as they become durable.
    pub(super) fn spawn_sync(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut changes = this.inner.vault.changes();
            while changes.changed().await.is_ok() {
                for peer in this.inner.peers.own_devices_connected() {
                    let this = this.clone();
                    tokio::spawn(async move { this.notify(peer).await });
                }
                tokio::time::sleep(NOTIFY_EVERY).await;
            }
        });
    }

    /// Tells `peer` what this vault holds now.
    pub(super) async fn notify(&self, peer: PeerId) {
        let Ok(version) = self.inner.vault.version().await else {
            return;
        };
        let request = SyncRequest::Notify {
            version: version.to_bytes(),
        };
        if let Err(e) = self.sync_request(peer, request).await {
            tracing::debug!(%peer, error = %e, "cannot announce vault changes");
        }
    }

    async fn sync_request(
        &self,
        peer: PeerId,
        request: SyncRequest,
    ) -> Result<SyncResponse, String> {
        let addrs = self
            .inner
            .peers
            .get(&peer)
            .map(|e| e.addrs)
            .unwrap_or_default();
        let call = self
            .inner
            .outbound
            .request(peer, Protocol::Sync, wire::encode(&request), addrs);
        let bytes = tokio::time::timeout(REQUEST_TIMEOUT, call)
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        wire::decode(&bytes, Protocol::Sync.max_response()).map_err(|e| e.to_string())
    }

    /// Pulls what this vault lacks from device `peer`, part after part.
    pub(super) async fn pull_from(&self, peer: PeerId) {
        {
            let mut pulling = self
                .inner
                .sync
                .pulling
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !pulling.insert(peer) {
                self.inner
                    .sync
                    .again
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(peer);
                return;
            }
        }
        loop {
            let (docs, meta) = self.pull_rounds(peer).await;
            // Devices, contacts and keys are read again only when their documents changed
            // (most pulls bring messages only: one for every message either device took in).
            if meta {
                self.refresh().await;
                self.inner.contacts.refresh().await;
                self.catch_up_keys(peer).await;
            }
            if docs > 0 {
                self.inner.events.publish(Event::SyncCompleted {
                    peer_id: peer.to_base58(),
                    docs,
                });
            }
            let again = self
                .inner
                .sync
                .again
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&peer);
            if !again {
                break;
            }
        }
        self.inner
            .sync
            .pulling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&peer);
    }

    /// Pulls until nothing more comes; returns how many documents changed, and whether any
    /// of them was the contacts, settings or devices document.
    async fn pull_rounds(&self, peer: PeerId) -> (usize, bool) {
        let mut changed = 0;
        let mut meta = false;
        for _ in 0..1_000 {
            let Ok(version) = self.inner.vault.version().await else {
                return (changed, meta);
            };
            let Ok(reply) = ReplyKey::generate() else {
                return (changed, meta);
            };
            let request = SyncRequest::Pull {
                version: version.to_bytes(),
                reply_key: reply.public().to_vec(),
                budget: PULL_BUDGET,
            };
            let (encapped, sealed, more) = match self.sync_request(peer, request).await {
                Ok(SyncResponse::Delta {
                    encapped,
                    sealed,
                    more,
                }) => (encapped, sealed, more),
                Ok(SyncResponse::Refused(reason)) => {
                    tracing::warn!(%peer, %reason, "a device of this user refused to sync");
                    return (changed, meta);
                }
                Ok(other) => {
                    tracing::debug!(%peer, ?other, "unexpected sync answer");
                    return (changed, meta);
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "sync pull failed");
                    return (changed, meta);
                }
            };
            let delta = match reply
                .open(DELTA_INFO, &encapped, &sealed)
                .map_err(|e| e.to_string())
                .and_then(|b| VaultDelta::from_bytes(&b).map_err(|e| e.to_string()))
            {
                Ok(delta) => delta,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "an unreadable sync delta");
                    return (changed, meta);
                }
            };
            let docs = delta.len();
            let only_messages = delta.only_messages();
            if docs > 0 {
                // Only what the sending device may write; the vault checks the rest.
                let Some(permissions) = self.permissions_of(peer).await else {
                    return (changed, meta);
                };
                let allow = move |doc: &DocId| allowed(permissions, doc);
                match self.inner.vault.import_from(delta, allow).await {
                    Ok(imported) => {
                        if imported.new {
                            changed += docs;
                            meta |= !only_messages;
                        }
                        self.publish_deleted(imported.deleted);
                    }
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "a sync delta does not import");
                        if let volli_store::StoreError::Refused(reason) = &e {
                            self.inner.events.publish(Event::SyncRefused {
                                peer_id: peer.to_base58(),
                                reason: reason.clone(),
                            });
                        }
                        return (changed, meta);
                    }
                }
            }
            if !more {
                break;
            }
        }
        (changed, meta)
    }

    /// Tells clients which messages another device deleted: one `messages.deleted` per
    /// conversation, as for deletions made here.
    fn publish_deleted(&self, deleted: Vec<(UserId, MessageId)>) {
        let mut by_conversation: BTreeMap<UserId, Vec<String>> = BTreeMap::new();
        for (with, id) in deleted {
            by_conversation
                .entry(with)
                .or_default()
                .push(id.to_string());
        }
        for (with, ids) in by_conversation {
            self.inner.events.publish(Event::MessagesDeleted {
                with: with.to_string(),
                ids,
            });
        }
    }

    /// On a device without the master secret: if the user moved to a newer X-Wing key
    /// generation than this device holds, ask `peer` (or any connected admin device) for it.
    async fn catch_up_keys(&self, peer: PeerId) {
        let identity = &self.inner.identity;
        if identity.is_admin() || !identity.permissions().contains(Permissions::MESSAGES) {
            return;
        }
        let Ok(generation) = self.inner.vault.key_generation(self.user_id()).await else {
            return;
        };
        let have = identity.keyring().current().map(|k| k.generation());
        if have.is_some_and(|g| g >= generation) {
            return;
        }
        let since = have.map_or(0, |g| g + 1);
        let Ok(reply) = ReplyKey::generate() else {
            return;
        };
        let request = SyncRequest::Keys {
            since,
            reply_key: reply.public().to_vec(),
        };
        let mut askers = vec![peer];
        askers.extend(self.inner.peers.own_devices_connected());
        for admin in askers {
            if let Ok(SyncResponse::Keys { encapped, sealed }) =
                self.sync_request(admin, request.clone()).await
                && let Ok(bytes) = reply.open(KEYS_INFO, &encapped, &sealed)
                && let Ok(seeds) = postcard::from_bytes::<Vec<(u32, [u8; 32])>>(&bytes)
            {
                if let Err(e) = identity.add_keys(&seeds) {
                    tracing::warn!(error = %e, "cannot keep the new message keys");
                }
                return;
            }
        }
    }

    fn acks(&self) -> std::sync::MutexGuard<'_, Acks> {
        self.inner
            .sync
            .acks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `peer` holds `version`: at once if nothing was written for it within
    /// [`ACK_EVERY`], else once that time is up (the latest version by then).
    async fn acknowledge(&self, peer: PeerId, version: VaultVersion) {
        // Decided under the lock, written after it.
        let now = {
            let mut acks = self.acks();
            let since = acks.written.get(&peer).map(std::time::Instant::elapsed);
            if let Some(waiting) = acks.waiting.get_mut(&peer) {
                *waiting = version;
                return;
            }
            match since {
                Some(since) if since < ACK_EVERY => {
                    acks.waiting.insert(peer, version);
                    Err(ACK_EVERY - since)
                }
                _ => {
                    acks.written.insert(peer, std::time::Instant::now());
                    Ok(version)
                }
            }
        };
        let wait = match now {
            Ok(version) => {
                let _ = self
                    .inner
                    .vault
                    .acknowledge(&peer.to_base58(), &version)
                    .await;
                return;
            }
            Err(wait) => wait,
        };
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let version = {
                let mut acks = this.acks();
                acks.written.insert(peer, std::time::Instant::now());
                acks.waiting.remove(&peer)
            };
            // Not for a device revoked meanwhile (its acknowledgements are forgotten then,
            // and one written after would hold back erasure for good).
            if let Some(version) = version
                && this.permissions_of(peer).await.is_some()
            {
                let _ = this
                    .inner
                    .vault
                    .acknowledge(&peer.to_base58(), &version)
                    .await;
            }
        });
    }

    /// Answers `/volli/sync/1`.
    pub(super) async fn handle_sync(&self, peer: PeerId, payload: &[u8]) -> Vec<u8> {
        let response = match wire::decode::<SyncRequest>(payload, Protocol::Sync.max_request()) {
            Ok(request) => self.answer_sync(peer, request).await,
            Err(_) => SyncResponse::Refused("malformed sync request".into()),
        };
        wire::encode(&response)
    }

    async fn answer_sync(&self, peer: PeerId, request: SyncRequest) -> SyncResponse {
        // The requester must be a device of this user, listed and not revoked.
        let Some(permissions) = self.permissions_of(peer).await else {
            return SyncResponse::Refused("not a device of this user (or revoked)".into());
        };
        match request {
            SyncRequest::Notify { version } => {
                let Ok(theirs) = VaultVersion::from_bytes(&version) else {
                    return SyncResponse::Refused("not a vault version".into());
                };
                self.acknowledge(peer, theirs.clone()).await;
                let lacking = match self.inner.vault.version().await {
                    Ok(ours) => !ours.includes(&theirs),
                    Err(_) => false,
                };
                if lacking {
                    let this = self.clone();
                    tokio::spawn(async move { this.pull_from(peer).await });
                }
                SyncResponse::Ok
            }
            SyncRequest::Pull {
                version,
                reply_key,
                budget,
            } => {
                let Ok(theirs) = VaultVersion::from_bytes(&version) else {
                    return SyncResponse::Refused("not a vault version".into());
                };
                let budget = usize::try_from(budget.min(PULL_BUDGET)).unwrap_or(0);
                let exported = self
                    .inner
                    .vault
                    .export_where(theirs, budget, move |doc| allowed(permissions, doc))
                    .await;
                let (delta, more) = match exported {
                    Ok(d) => d,
                    Err(e) => return SyncResponse::Refused(format!("storage: {e}")),
                };
                match seal_to(&reply_key, DELTA_INFO, &delta.to_bytes()) {
                    Ok((encapped, sealed)) => SyncResponse::Delta {
                        encapped,
                        sealed,
                        more,
                    },
                    Err(_) => SyncResponse::Refused("not an X-Wing reply key".into()),
                }
            }
            SyncRequest::Keys { since, reply_key } => {
                let identity = &self.inner.identity;
                let Some(user) = &identity.user else {
                    return SyncResponse::Refused("ask an admin device".into());
                };
                if !permissions.contains(Permissions::MESSAGES) {
                    return SyncResponse::Refused("this device does not hold message keys".into());
                }
                let Ok(generation) = self.inner.vault.key_generation(self.user_id()).await else {
                    return SyncResponse::Refused("storage failed".into());
                };
                let seeds: Vec<(u32, [u8; 32])> = (since..=generation)
                    .take(64)
                    .map(|g| {
                        let key = user.kem_key(g);
                        (g, *key.seed())
                    })
                    .collect();
                let Ok(bytes) = postcard::to_allocvec(&seeds) else {
                    return SyncResponse::Refused("cannot encode the keys".into());
                };
                match seal_to(&reply_key, KEYS_INFO, &bytes) {
                    Ok((encapped, sealed)) => SyncResponse::Keys { encapped, sealed },
                    Err(_) => SyncResponse::Refused("not an X-Wing reply key".into()),
                }
            }
        }
    }

    /// The permissions of `peer` if it is a listed, unrevoked device of this user.
    async fn permissions_of(&self, peer: PeerId) -> Option<Permissions> {
        if !self.inner.peers.is_own_device(&peer) {
            return None;
        }
        self.inner
            .vault
            .devices_of(self.user_id())
            .await
            .ok()?
            .into_iter()
            .find(|d| d.peer_id() == peer && d.revoked_at.is_none())
            .map(|d| d.certificate.permissions())
    }
}
