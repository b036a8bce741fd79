//! Restoring from the recovery phrase alone, on a fresh node.
//!
//! The phrase gives the keys; the locator they name is looked for at every peer this node
//! knows (its `--bootstrap` peers, the LAN), at the holders the DHT and the rendezvous points
//! name for it, and the holders answer with their copy of the sealed manifest. The newest
//! that opens names every holder, where its devices were, and each blob with the hashes of
//! its shards: `k` shards of each blob are fetched (from `n` − `k` holders gone or more), each
//! checked against its hash — a tampered or stale shard is set aside and another holder
//! asked — then put together, opened and uncompressed. When a manifest cannot be completed,
//! the next older one is tried. Nothing is written before the whole backup is in hand.
//!
//! Then the node commits it as a pairing does (`Identity::commit_joined`): the master secret
//! from the backup, a certificate for this node's own device key signed with it, the vault;
//! and restarts as the user's device. Started again, it finishes (`finish_restore`): it takes
//! over the backup (same holders, same blobs), tells the peer table where contacts' devices
//! were, and revokes the device that made the backup (presumed lost), which sends every
//! contact a card listing this device instead.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read as _;
use std::time::Duration;

use futures::StreamExt as _;
use multiaddr::Multiaddr;
use serde::{Deserialize, Serialize};
use volli_core::backup::{BackupKeys, BlobRef, KnownAddrs, Manifest, RecoveryPhrase};
use volli_core::erasure::Code;
use volli_core::wire::{self, HoldRequest, HoldResponse};
use volli_core::{DeviceCertificate, PeerId, Permissions, Timestamp, UserId, UserSecret};
use volli_store::{DocId, VaultDelta};

use super::{BackupError, Backups, HolderState, State, derive_root};
use crate::events::Event;
use crate::identity::Joined;

/// How long a holder has to answer whether it holds the backup.
const FIND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the DHT and the rendezvous points have to name holders.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Peers asked at once whether they hold the backup.
const PROBES: usize = 32;
/// Blobs fetched at once.
const BLOBS_AT_ONCE: usize = 4;
/// The most a document may take once uncompressed.
const MAX_DOC: u64 = 1 << 30;

/// What a restore found and put back.
#[derive(Clone, Debug)]
pub struct Restored {
    /// The user this node now belongs to.
    pub user: UserId,
    /// The manifest restored.
    pub seq: u64,
    /// When the backup was made.
    pub made_at: Timestamp,
    /// Documents restored.
    pub documents: usize,
    /// Holders that handed over shards.
    pub holders_used: usize,
    /// Shares refused because they did not match the manifest (tampered or stale).
    pub shares_rejected: usize,
}

/// What the restored device finishes once it runs as the user's device.
#[derive(Serialize, Deserialize)]
struct Note {
    user: UserId,
    /// The device that made the backup, to revoke.
    old_device: Vec<u8>,
    /// The backup as it stands, to go on with.
    state: State,
    /// Where contacts' devices were.
    addresses: Vec<KnownAddrs>,
}

/// One holder's slot during a restore.
struct SlotSource {
    user: UserId,
    /// Its devices, with addresses to try.
    peers: Vec<(PeerId, Vec<Multiaddr>)>,
    /// The device that answered, once one did.
    answering: Option<PeerId>,
    /// No device answered.
    dead: bool,
    /// Shares it gave that did not match.
    bad: usize,
    /// Shares it gave that matched.
    good: usize,
}

impl Backups {
    /// Restores the backup the phrase opens onto this (fresh) node, which then restarts as
    /// the user's device. `bootstrap`: peers to ask first (`…/p2p/<peer id>`).
    pub async fn restore(
        &self,
        phrase: &str,
        bootstrap: &[Multiaddr],
    ) -> Result<Restored, BackupError> {
        let Ok(_busy) = self.inner.busy.try_lock() else {
            return Err(BackupError::Busy);
        };
        if !self.inner.vault.contacts().await?.is_empty() || self.inner.db.holds_user_data().await?
        {
            return Err(BackupError::NodeNotEmpty);
        }
        let phrase = RecoveryPhrase::parse(phrase)
            .map_err(|e| BackupError::InvalidPhrase(format!("not a recovery phrase: {e}")))?;
        let root = derive_root(&phrase).await?;
        let keys = BackupKeys::from_root(&root);

        let (manifests, reached) = self.find(&keys, bootstrap).await;
        if manifests.is_empty() {
            // Nodes answered, and none holds anything under this phrase's locator: most
            // likely a wrong phrase (its checksum lets one typo in sixteen through).
            if reached > 0 {
                return Err(BackupError::InvalidPhrase(format!(
                    "no backup opens with this recovery phrase at the {reached} nodes that \
                     answered: check its words (or reach a friend's node that holds it)"
                )));
            }
            return Err(BackupError::NotFound(
                "no node that could hold a backup for this phrase could be reached: give a \
                 friend's node with --bootstrap"
                    .into(),
            ));
        }
        let mut last = String::new();
        let mut restored = None;
        for (manifest, answered) in &manifests {
            match self.fetch(&keys, manifest, answered).await {
                Ok(done) => {
                    restored = Some((manifest, done));
                    break;
                }
                Err(e) => {
                    tracing::warn!(seq = manifest.seq, error = %e, "this backup cannot be put together; trying an older one");
                    last = e;
                }
            }
        }
        let Some((manifest, (delta, documents, holders_used, shares_rejected))) = restored else {
            return Err(BackupError::Incomplete(format!(
                "the backup was found but cannot be put together: {last}"
            )));
        };

        let user = UserSecret::from_master(manifest.master);
        let me = self.inner.identity.peer_id();
        let now = Timestamp::now();
        let certificate = DeviceCertificate::issue(
            &user,
            me,
            self.inner.identity.certificate.device_name(),
            Permissions::ALL,
            now,
        );
        let note = Note {
            user: user.user_id(),
            old_device: manifest.device.to_bytes(),
            state: State {
                locator: keys.locator(),
                seq: manifest.seq,
                made_at: Some(manifest.made_at),
                k: manifest.k,
                n: manifest.n,
                holders: manifest
                    .holders
                    .iter()
                    .map(|h| HolderState {
                        slot: h.slot,
                        user: h.user,
                        added_at: now,
                        seen_at: now,
                        updated_at: Some(manifest.made_at),
                        seq: manifest.seq,
                        bytes: 0,
                        refused: None,
                    })
                    .collect(),
                blobs: manifest.blobs.clone(),
                ..State::default()
            },
            addresses: manifest.addresses.clone(),
        };
        let joined = Joined {
            user: user.user_id(),
            master: Some(manifest.master),
            seeds: Vec::new(),
            certificate: certificate.to_bytes(),
            vault: delta.to_bytes(),
        };
        let identity = &self.inner.identity;
        identity.set_backup_root(Some(&root))?;
        identity.set_restored(Some(
            &postcard::to_allocvec(&note).map_err(|e| BackupError::Failed(e.to_string()))?,
        ))?;
        if let Err(e) = identity.commit_joined(&joined) {
            let _ = identity.set_restored(None);
            let _ = identity.set_backup_root(None);
            return Err(e.into());
        }
        tracing::info!(user = %user.user_id(), seq = manifest.seq, documents, "restored from friends; restarting as the user's device");
        self.inner.events.publish(Event::BackupRestored {
            user_id: user.user_id().to_string(),
            seq: manifest.seq,
        });
        let restart = self.inner.restart.clone();
        tokio::spawn(async move {
            // Let the answer and the event reach the client first.
            tokio::time::sleep(Duration::from_millis(500)).await;
            restart.notify_one();
        });
        Ok(Restored {
            user: user.user_id(),
            seq: manifest.seq,
            made_at: manifest.made_at,
            documents,
            holders_used,
            shares_rejected,
        })
    }

    /// Asks every peer that may hold the backup for its manifest; the ones that open, newest
    /// first, each with the peers that answered with it; and how many peers answered at all.
    async fn find(
        &self,
        keys: &BackupKeys,
        bootstrap: &[Multiaddr],
    ) -> (Vec<(Manifest, Vec<PeerId>)>, usize) {
        let net = &self.inner.net;
        let mut candidates: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
        for addr in bootstrap {
            if let Some(peer) = peer_of(addr) {
                candidates.entry(peer).or_default().push(addr.clone());
            }
        }
        for entry in self.inner.peers.list() {
            if entry.connected || !entry.sources.is_empty() {
                candidates
                    .entry(entry.peer_id)
                    .or_default()
                    .extend(entry.addrs);
            }
        }
        let locator = keys.locator();
        let (providers, registered) = futures::future::join(
            tokio::time::timeout(
                LOOKUP_TIMEOUT,
                net.dht_providers(volli_core::backup::dht_key(&locator)),
            ),
            tokio::time::timeout(
                LOOKUP_TIMEOUT,
                net.rendezvous_discover(volli_core::backup::rendezvous_namespace(&locator)),
            ),
        )
        .await;
        let known = candidates.len();
        let (mut from_dht, mut from_rendezvous) = (0, 0);
        if let Ok(Ok(providers)) = providers {
            from_dht = providers.len();
            for peer in providers {
                candidates.entry(peer).or_default();
            }
        }
        if let Ok(Ok(registered)) = registered {
            from_rendezvous = registered.len();
            for (peer, addrs) in registered {
                candidates.entry(peer).or_default().extend(addrs);
            }
        }
        tracing::info!(
            known,
            from_dht,
            from_rendezvous,
            "asking the peers that may hold the backup"
        );
        let me = self.inner.identity.peer_id();
        candidates.remove(&me);
        let answers: Vec<(PeerId, bool, Option<Vec<u8>>)> = futures::stream::iter(candidates)
            .map(|(peer, addrs)| {
                // A proof for this peer only: it opens nothing elsewhere.
                let payload = wire::encode(&HoldRequest::Find {
                    proof: keys.prove(&peer, Timestamp::now()),
                });
                async move {
                    let answer =
                        tokio::time::timeout(FIND_TIMEOUT, self.ask_peer(peer, payload, addrs))
                            .await;
                    match answer {
                        Ok(Ok(HoldResponse::Piece(bytes))) => (peer, true, Some(bytes)),
                        Ok(Ok(HoldResponse::NotHere)) => (peer, true, None),
                        other => {
                            tracing::debug!(%peer, answer = ?other.map(|a| a.map(|_| ())), "no manifest here");
                            (peer, false, None)
                        }
                    }
                }
            })
            .buffer_unordered(PROBES)
            .collect()
            .await;
        let reached = answers.iter().filter(|(_, answered, _)| *answered).count();
        let mut by_seq: BTreeMap<u64, (Manifest, Vec<PeerId>)> = BTreeMap::new();
        for (peer, _, bytes) in answers {
            let Some(bytes) = bytes else { continue };
            match keys.open_manifest(&bytes) {
                Ok(manifest) => {
                    by_seq
                        .entry(manifest.seq)
                        .or_insert_with(|| (manifest, Vec::new()))
                        .1
                        .push(peer);
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "a holder's copy of the manifest does not open")
                }
            }
        }
        (by_seq.into_values().rev().collect(), reached)
    }

    /// Fetches and opens every blob `manifest` names: the vault delta, documents, holders
    /// used, shares refused.
    async fn fetch(
        &self,
        keys: &BackupKeys,
        manifest: &Manifest,
        answered: &[PeerId],
    ) -> Result<(VaultDelta, usize, usize, usize), String> {
        let (k, n) = (usize::from(manifest.k), usize::from(manifest.n));
        let code = Code::new(k, n).map_err(|e| e.to_string())?;
        let mut sources: Vec<Option<SlotSource>> = (0..n).map(|_| None).collect();
        for h in &manifest.holders {
            let mut peers: Vec<(PeerId, Vec<Multiaddr>)> = answered
                .iter()
                .filter(|p| self.inner.peers.user_of(p) == Some(h.user))
                .map(|p| (*p, Vec::new()))
                .collect();
            for a in manifest.addresses.iter().filter(|a| a.user == h.user) {
                let addrs: Vec<Multiaddr> = a.addrs.iter().filter_map(|s| s.parse().ok()).collect();
                match peers.iter_mut().find(|(p, _)| *p == a.peer) {
                    Some((_, known)) => known.extend(addrs),
                    None => peers.push((a.peer, addrs)),
                }
            }
            if let Some(slot) = sources.get_mut(usize::from(h.slot)) {
                *slot = Some(SlotSource {
                    user: h.user,
                    peers,
                    answering: None,
                    dead: false,
                    bad: 0,
                    good: 0,
                });
            }
        }
        let sources = tokio::sync::Mutex::new(sources);
        let sources = &sources;
        let code = &code;
        let parts: Vec<Result<(BlobRef, Vec<u8>), String>> =
            futures::stream::iter(manifest.blobs.clone())
                .map(move |blob| async move {
                    let sealed = self.fetch_blob(code, keys, &blob, sources).await?;
                    let plain = keys
                        .open_blob(&blob.id, &sealed)
                        .map_err(|e| format!("a blob of {}: {e}", blob.doc))?;
                    Ok((blob, plain))
                })
                .buffer_unordered(BLOBS_AT_ONCE)
                .collect()
                .await;
        let mut docs: BTreeMap<String, Vec<(u16, Vec<u8>)>> = BTreeMap::new();
        for part in parts {
            let (blob, plain) = part?;
            docs.entry(blob.doc).or_default().push((blob.part, plain));
        }
        let mut delta = VaultDelta::default();
        let count = docs.len();
        for (doc, mut parts) in docs {
            parts.sort_by_key(|(i, _)| *i);
            let packed: Vec<u8> = parts.into_iter().flat_map(|(_, p)| p).collect();
            let id: DocId = doc
                .parse()
                .map_err(|_| format!("{doc} is not a vault document"))?;
            let plain = tokio::task::spawn_blocking(move || decompress(&packed))
                .await
                .map_err(|e| e.to_string())??;
            let blobs: Vec<Vec<u8>> =
                postcard::from_bytes(&plain).map_err(|_| format!("{doc} is malformed"))?;
            delta = delta.with(id, blobs);
        }
        let sources = sources.lock().await;
        let used = sources.iter().flatten().filter(|s| s.good > 0).count();
        let rejected = sources.iter().flatten().map(|s| s.bad).sum();
        Ok((delta, count, used, rejected))
    }

    /// `k` good shards of `blob`, put together into its sealed bytes. Holders whose shards
    /// were good are asked first; one that gives a shard that does not match its hash is
    /// asked last from then on.
    async fn fetch_blob(
        &self,
        code: &Code,
        keys: &BackupKeys,
        blob: &BlobRef,
        sources: &tokio::sync::Mutex<Vec<Option<SlotSource>>>,
    ) -> Result<Vec<u8>, String> {
        let k = code.k();
        let mut got: Vec<(usize, Vec<u8>)> = Vec::with_capacity(k);
        let mut tried: HashSet<usize> = HashSet::new();
        loop {
            let order: Vec<usize> = {
                let sources = sources.lock().await;
                let mut order: Vec<(usize, (bool, usize))> = sources
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
                    .filter(|(i, s)| !s.dead && !tried.contains(i))
                    .map(|(i, s)| (i, (s.bad > 0, usize::from(s.answering.is_none()))))
                    .collect();
                order.sort_by_key(|(i, rank)| (*rank, *i));
                order.into_iter().map(|(i, _)| i).collect()
            };
            let wanted = k - got.len();
            if order.is_empty() {
                return Err(format!(
                    "only {} of the {k} shares needed of a part of {} could be had",
                    got.len(),
                    blob.doc
                ));
            }
            let batch: Vec<usize> = order.into_iter().take(wanted).collect();
            tried.extend(&batch);
            let answers = futures::future::join_all(
                batch
                    .iter()
                    .map(|slot| self.get_shard(*slot, keys, blob.id, sources)),
            )
            .await;
            for (slot, answer) in batch.into_iter().zip(answers) {
                let Some(bytes) = answer else { continue };
                let good = blob
                    .shards
                    .get(slot)
                    .is_some_and(|h| *h == *blake3::hash(&bytes).as_bytes());
                let mut sources = sources.lock().await;
                let Some(source) = sources.get_mut(slot).and_then(Option::as_mut) else {
                    continue;
                };
                if good {
                    source.good += 1;
                    got.push((slot, bytes));
                } else {
                    source.bad += 1;
                    tracing::warn!(holder = %source.user, doc = %blob.doc, "a holder returned a share that does not match the backup (tampered or stale); asking another");
                }
            }
            if got.len() >= k {
                let shards: Vec<(usize, &[u8])> =
                    got.iter().map(|(i, b)| (*i, b.as_slice())).collect();
                return code
                    .decode(&shards, blob.sealed_len as usize)
                    .map_err(|e| e.to_string());
            }
        }
    }

    /// Shard `slot` of blob `id` from its holder (`None`: it does not have it or cannot be
    /// reached; a holder none of whose devices answers is not asked again).
    async fn get_shard(
        &self,
        slot: usize,
        keys: &BackupKeys,
        id: [u8; 16],
        sources: &tokio::sync::Mutex<Vec<Option<SlotSource>>>,
    ) -> Option<Vec<u8>> {
        let (user, answering, peers) = {
            let sources = sources.lock().await;
            let s = sources.get(slot)?.as_ref()?;
            (s.user, s.answering, s.peers.clone())
        };
        let mut targets: Vec<(PeerId, Vec<Multiaddr>)> = match answering {
            Some(peer) => peers.into_iter().filter(|(p, _)| *p == peer).collect(),
            None => peers,
        };
        if answering.is_none() {
            // Addresses may have changed since the backup: ask discovery too.
            for (peer, addrs) in &mut targets {
                if addrs.is_empty() && !self.inner.peers.get(peer).is_some_and(|e| e.connected) {
                    addrs.extend(self.inner.discovery.locate(user, *peer).await);
                }
            }
        }
        for (peer, addrs) in targets {
            let payload = wire::encode(&HoldRequest::Get {
                proof: keys.prove(&peer, Timestamp::now()),
                piece: id,
            });
            match self.ask_peer(peer, payload, addrs).await {
                Ok(HoldResponse::Piece(bytes)) => {
                    if let Some(Some(s)) = sources.lock().await.get_mut(slot) {
                        s.answering = Some(peer);
                    }
                    return Some(bytes);
                }
                Ok(HoldResponse::NotHere) => {
                    if let Some(Some(s)) = sources.lock().await.get_mut(slot) {
                        s.answering = Some(peer);
                    }
                    tracing::info!(holder = %user, "a holder lacks a piece of this backup (it was away)");
                    return None;
                }
                Ok(other) => tracing::debug!(%peer, ?other, "a holder did not hand over a piece"),
                Err(e) => tracing::debug!(%peer, error = %e, "a holder cannot be reached"),
            }
        }
        if answering.is_none()
            && let Some(Some(s)) = sources.lock().await.get_mut(slot)
        {
            s.dead = true;
        }
        None
    }

    /// Finishes a restore once the node runs as the user's device (see the module's
    /// description). Does nothing on any other start.
    pub(super) async fn finish_restore(&self) {
        let identity = &self.inner.identity;
        let note = match identity.restored() {
            Ok(Some(bytes)) => postcard::from_bytes::<Note>(&bytes).ok(),
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read what the restore left to finish");
                return;
            }
        };
        let Some(note) = note.filter(|n| n.user == identity.user_id()) else {
            // Left by a restore that never committed.
            let _ = identity.set_restored(None);
            return;
        };
        if let Err(e) = self.save(&note.state).await {
            tracing::warn!(error = %e, "cannot take over the restored backup");
            return;
        }
        let contacts = self.inner.vault.contacts().await.unwrap_or_default();
        for a in &note.addresses {
            let addrs: Vec<Multiaddr> = a.addrs.iter().filter_map(|s| s.parse().ok()).collect();
            let certificate = contacts
                .iter()
                .find(|c| c.user_id == a.user)
                .and_then(|c| c.devices.iter().find(|d| d.peer_id() == a.peer).cloned());
            self.inner
                .peers
                .found(a.peer, &addrs, certificate, "backup");
        }
        self.inner.discovery.wake();
        if let Ok(old) = PeerId::from_bytes(&note.old_device)
            && old != identity.peer_id()
        {
            match self.inner.devices.revoke(old).await {
                Ok(()) => {
                    tracing::info!(device = %old, "revoked the device the backup was made on")
                }
                Err(e) => {
                    tracing::info!(device = %old, error = %e, "did not revoke the device the backup was made on")
                }
            }
        }
        if let Err(e) = identity.set_restored(None) {
            tracing::warn!(error = %e, "cannot forget what the restore left to finish");
        }
    }
}

/// The peer id a multiaddr ends with.
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        multiaddr::Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

/// Inflate, bounded.
fn decompress(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(bytes)
        .take(MAX_DOC)
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot uncompress: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn compression_round_trips() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 97) as u8).collect();
        let packed = super::super::refresh::compress(&data).unwrap();
        assert!(packed.len() < data.len() / 10);
        assert_eq!(super::decompress(&packed).unwrap(), data);
    }
}
