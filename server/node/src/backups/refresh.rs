//! Making and refreshing this node's backup: choosing holders, sealing the documents that
//! changed, handing each holder its shard of them, then the manifest.
//!
//! A document is sealed anew when its version changed, or when a holder that answers lacks
//! one of its pieces (it was away, or new, or its slot moved): its pieces cannot be made
//! again byte for byte, since the stored form of an unchanged document changes when it is
//! compacted. Everything is sealed anew when the code's shape changes. Holders that do not
//! answer keep what they had; a holder that refuses (over its quota) or stays away past
//! `move_after_secs` is replaced by another contact that offers room, at this refresh or the
//! next.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::time::Duration;

use volli_core::backup::{BlobRef, KnownAddrs, MANIFEST_PIECE, Manifest, ManifestHolder};
use volli_core::erasure::Code;
use volli_core::wire::{HoldRequest, HoldResponse};
use volli_core::{Timestamp, UserId};
use volli_store::{DocId, VaultVersion};

use super::{BackupError, Backups, HolderState, MAX_SHARD, Refreshed, State, needed};
use crate::events::Event;

/// Documents exported from the vault at once, in bytes (at least one document).
const EXPORT_BATCH: usize = 16 << 20;
/// How long a contact has to say how much room it offers.
const OFFER_TIMEOUT: Duration = Duration::from_secs(10);
/// Addresses kept per device in the manifest.
const ADDRS_PER_DEVICE: usize = 4;

/// One holder during a refresh.
struct Slot {
    user: UserId,
    slot: usize,
    /// The pieces it holds now (`None`: it did not answer).
    has: Option<HashSet<[u8; 16]>>,
    /// Why it stopped taking pieces in this refresh.
    failed: Option<String>,
    /// Bytes it said it holds for us, after its last piece.
    bytes: u64,
}

impl Backups {
    /// Refreshes this node's backup (see the module's description).
    pub(super) async fn refresh(&self) -> Result<Refreshed, BackupError> {
        let Ok(_busy) = self.inner.busy.try_lock() else {
            return Err(BackupError::Busy);
        };
        let keys = self.keys()?.ok_or(BackupError::NotSetUp)?;
        let master = *self
            .inner
            .identity
            .user
            .as_ref()
            .ok_or(BackupError::NotAdmin)?
            .master_bytes();
        let locator = keys.locator();
        let config = self.inner.config.clone();
        let mut state = match self.state().await? {
            Some(s) if s.locator == locator => s,
            _ => State {
                locator,
                ..State::default()
            },
        };
        let now = Timestamp::now();
        let contacts = self.inner.vault.contacts().await?;
        state
            .holders
            .retain(|h| contacts.iter().any(|c| c.user_id == h.user));

        // Who answers, and what room it offers: the holders, and the contacts connected now.
        let mut asked: Vec<UserId> = state.holders.iter().map(|h| h.user).collect();
        for c in &contacts {
            if !asked.contains(&c.user_id) && self.inner.peers.user_connected(&c.user_id) {
                asked.push(c.user_id);
            }
        }
        let answers = futures::future::join_all(asked.iter().map(|user| async move {
            let answer =
                tokio::time::timeout(OFFER_TIMEOUT, self.ask(*user, &HoldRequest::Offer)).await;
            (*user, answer)
        }))
        .await;
        let mut offers: HashMap<UserId, (u64, u64)> = HashMap::new();
        for (user, answer) in answers {
            if let Ok(Ok(HoldResponse::Offered { offer, used })) = answer {
                offers.insert(user, (offer, used));
            }
        }
        for h in &mut state.holders {
            if offers.contains_key(&h.user) {
                h.seen_at = now;
            }
        }

        // What a holder will keep, roughly: a k-th of the sealed backup.
        let estimate = |k: usize| {
            state
                .blobs
                .iter()
                .map(|b| u64::from(b.sealed_len))
                .sum::<u64>()
                / k.max(1) as u64
        };
        let mut spare: Vec<(UserId, u64)> = offers
            .iter()
            .filter(|(u, _)| !state.holders.iter().any(|h| h.user == **u))
            .map(|(u, (offer, used))| (*u, offer.saturating_sub(*used)))
            .filter(|(_, free)| *free > 0 && *free >= estimate(usize::from(config.threshold)))
            .collect();
        // Most room first; ties by user id, so the choice is stable.
        spare.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut spare: std::collections::VecDeque<UserId> =
            spare.into_iter().map(|(u, _)| u).collect();

        // Away too long, refusing, or offering nothing now: replaced when someone can take
        // over (one that offers nothing goes either way).
        let move_after = Duration::from_secs(config.move_after_secs);
        let mut kept = Vec::new();
        for h in std::mem::take(&mut state.holders) {
            let offers_none = offers.get(&h.user).is_some_and(|(offer, _)| *offer == 0);
            let away = h.seen_at.until(now) > move_after;
            let replace = offers_none || ((away || h.refused.is_some()) && !spare.is_empty());
            if replace {
                tracing::info!(holder = %h.user, away, refused = ?h.refused, "moving a backup share to another friend");
                continue;
            }
            kept.push(h);
        }
        state.holders = kept;
        while state.holders.len() < usize::from(config.holders) {
            let Some(user) = spare.pop_front() else { break };
            state.holders.push(HolderState {
                slot: u8::MAX,
                user,
                added_at: now,
                seen_at: now,
                updated_at: None,
                seq: 0,
                bytes: 0,
                refused: None,
            });
        }
        let n = state.holders.len();
        if n == 0 {
            return Err(BackupError::NoHolders(
                "no contact offers backup space, or none is reachable now".into(),
            ));
        }
        let k = needed(
            n,
            usize::from(config.threshold),
            usize::from(config.holders),
        );
        let code = Code::new(k, n).map_err(|e| BackupError::Failed(e.to_string()))?;
        let reshape = (k, n) != (usize::from(state.k), usize::from(state.n));
        if reshape {
            for (i, h) in state.holders.iter_mut().enumerate() {
                h.slot = u8::try_from(i).unwrap_or(u8::MAX);
                h.seq = 0;
            }
        } else {
            let used: HashSet<u8> = state.holders.iter().map(|h| h.slot).collect();
            let mut free = (0..u8::try_from(n).unwrap_or(u8::MAX)).filter(|s| !used.contains(s));
            for h in state
                .holders
                .iter_mut()
                .filter(|h| usize::from(h.slot) >= n)
            {
                h.slot = free.next().unwrap_or(u8::MAX);
                h.seq = 0;
            }
        }
        state.k = u8::try_from(k).unwrap_or(u8::MAX);
        state.n = u8::try_from(n).unwrap_or(u8::MAX);

        // What each holder that answers holds now.
        let offers = &offers;
        let haves = futures::future::join_all(state.holders.iter().map(|h| async move {
            let has = if offers.contains_key(&h.user) {
                match self.ask(h.user, &HoldRequest::Have { locator }).await {
                    Ok(HoldResponse::Pieces(p)) => Some(p.into_iter().collect()),
                    _ => None,
                }
            } else {
                None
            };
            Slot {
                user: h.user,
                slot: usize::from(h.slot),
                has,
                failed: None,
                bytes: h.bytes,
            }
        }))
        .await;
        let mut slots: Vec<Slot> = haves;
        let reachable = slots.iter().filter(|s| s.has.is_some()).count();
        if reachable < k {
            self.save(&state).await?;
            return Err(BackupError::NoHolders(format!(
                "only {reachable} of the {n} holders can be reached, and {k} are needed"
            )));
        }

        // Which documents are sealed anew.
        let version = self.inner.vault.version().await?;
        let fingerprints: BTreeMap<String, [u8; 32]> = version
            .fingerprints()
            .into_iter()
            .map(|(id, fp)| (id.to_string(), fp))
            .collect();
        let mut by_doc: HashMap<&str, Vec<&BlobRef>> = HashMap::new();
        for b in &state.blobs {
            by_doc.entry(b.doc.as_str()).or_default().push(b);
        }
        let mut blobs: Vec<BlobRef> = Vec::new();
        let mut todo: HashSet<String> = HashSet::new();
        for (doc, fp) in &fingerprints {
            let parts = by_doc.get(doc.as_str()).cloned().unwrap_or_default();
            let whole = !reshape
                && !parts.is_empty()
                && parts
                    .iter()
                    .all(|b| b.version == *fp && usize::from(b.parts) == parts.len())
                && parts.iter().all(|b| {
                    slots
                        .iter()
                        .all(|s| s.has.as_ref().is_none_or(|h| h.contains(&b.id)))
                });
            if whole {
                blobs.extend(parts.into_iter().cloned());
            } else {
                todo.insert(doc.clone());
            }
        }
        drop(by_doc);

        // Seal them, a batch of documents at a time, and hand out the shards.
        let mut sealed_count = 0;
        let mut sent: u64 = 0;
        let mut done: HashSet<String> = HashSet::new();
        while done.len() < todo.len() {
            let remaining: HashSet<DocId> = todo
                .iter()
                .filter(|d| !done.contains(*d))
                .filter_map(|d| d.parse().ok())
                .collect();
            if remaining.is_empty() {
                break;
            }
            let (delta, _) = self
                .inner
                .vault
                .export_where(VaultVersion::empty(), EXPORT_BATCH, move |d| {
                    remaining.contains(d)
                })
                .await?;
            if delta.is_empty() {
                break;
            }
            for (doc, doc_blobs) in delta.into_docs() {
                done.insert(doc.clone());
                let fp = fingerprints.get(&doc).copied().unwrap_or_default();
                let keys = keys.clone();
                let made = tokio::task::spawn_blocking(move || {
                    seal_doc(&keys, code, &doc, fp, &doc_blobs)
                })
                .await
                .map_err(|e| BackupError::Failed(e.to_string()))??;
                for (blob, shards) in made {
                    sent += self.hand_out(&mut slots, locator, blob.id, &shards).await;
                    sealed_count += 1;
                    blobs.push(blob);
                }
            }
        }

        // The manifest, then what each holder keeps.
        let seq = state.seq + 1;
        let manifest = Manifest {
            seq,
            made_at: now,
            master,
            device: self.inner.identity.peer_id(),
            k: state.k,
            n: state.n,
            holders: state
                .holders
                .iter()
                .map(|h| ManifestHolder {
                    slot: h.slot,
                    user: h.user,
                })
                .collect(),
            blobs: blobs.clone(),
            addresses: self.address_book(&contacts),
        };
        let sealed = keys
            .seal_manifest(&manifest)
            .map_err(|e| BackupError::Failed(e.to_string()))?;
        drop(manifest);
        let ids: Vec<[u8; 16]> = blobs
            .iter()
            .map(|b| b.id)
            .chain(std::iter::once(MANIFEST_PIECE))
            .collect();
        let finish = slots
            .iter()
            .filter(|s| s.has.is_some() && s.failed.is_none())
            .map(|s| {
                let sealed = sealed.clone();
                let ids = ids.clone();
                async move {
                    let put = HoldRequest::Put {
                        locator,
                        piece: MANIFEST_PIECE,
                        bytes: sealed,
                    };
                    let outcome = match self.ask(s.user, &put).await {
                        Ok(HoldResponse::Ok) => {
                            match self
                                .ask(
                                    s.user,
                                    &HoldRequest::Keep {
                                        locator,
                                        pieces: ids,
                                    },
                                )
                                .await
                            {
                                Ok(HoldResponse::Ok) => Ok(()),
                                other => Err(format!("{other:?}")),
                            }
                        }
                        other => Err(refusal(other)),
                    };
                    (s.user, outcome)
                }
            });
        let finished = futures::future::join_all(finish).await;
        let manifest_len = sealed.len() as u64;
        for (user, outcome) in finished {
            let Some(slot) = slots.iter_mut().find(|s| s.user == user) else {
                continue;
            };
            match outcome {
                Ok(()) => sent += manifest_len,
                Err(e) => slot.failed = Some(e),
            }
        }

        // Record where everything stands.
        for h in &mut state.holders {
            let Some(s) = slots.iter().find(|s| s.user == h.user) else {
                continue;
            };
            h.bytes = s.bytes;
            match (&s.has, &s.failed) {
                (Some(_), None) => {
                    h.seq = seq;
                    h.updated_at = Some(now);
                    h.refused = None;
                }
                (Some(_), Some(why)) => h.refused = Some(why.clone()),
                (None, _) => {}
            }
        }
        let refused = state.holders.iter().any(|h| h.refused.is_some());
        state.seq = seq;
        state.made_at = Some(now);
        state.blobs = blobs;
        state.tried_at = Some(now);
        state.last_sent = sent;
        state.last_error = None;
        let current = state.current();
        self.save(&state).await?;
        let can_lose = (current >= k).then(|| u32::try_from(current - k).unwrap_or(u32::MAX));
        self.inner.events.publish(Event::BackupRefreshed {
            seq,
            holders: u32::try_from(current).unwrap_or(u32::MAX),
            can_lose,
            bytes_sent: sent,
        });
        if refused {
            // A holder refused: the next refresh gives its slot to another friend.
            let this = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                this.inner.wake.notify_one();
            });
        }
        Ok(Refreshed {
            seq,
            blobs_sealed: sealed_count,
            blobs: state.blobs.len(),
            bytes_sent: sent,
            holders: current,
            can_lose,
        })
    }

    /// Hands each holder that still takes pieces its shard of blob `id`; returns the bytes
    /// sent.
    async fn hand_out(
        &self,
        slots: &mut [Slot],
        locator: [u8; 32],
        id: [u8; 16],
        shards: &[Vec<u8>],
    ) -> u64 {
        let puts = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.has.is_some() && s.failed.is_none())
            .filter_map(|(i, s)| Some((i, s.user, shards.get(s.slot)?.clone())))
            .map(|(i, user, bytes)| async move {
                let len = bytes.len() as u64;
                let put = HoldRequest::Put {
                    locator,
                    piece: id,
                    bytes,
                };
                (i, len, self.ask(user, &put).await)
            });
        let mut sent = 0;
        for (i, len, answer) in futures::future::join_all(puts).await {
            match answer {
                Ok(HoldResponse::Ok) => {
                    sent += len;
                    slots[i].bytes = slots[i].bytes.saturating_add(len);
                }
                other => {
                    let why = refusal(other);
                    tracing::info!(holder = %slots[i].user, reason = %why, "a holder did not take a backup piece");
                    slots[i].failed = Some(why);
                }
            }
        }
        sent
    }

    /// Where the user's contacts' devices were last seen (for the restored device).
    fn address_book(&self, contacts: &[volli_store::vault::Contact]) -> Vec<KnownAddrs> {
        let mut out = Vec::new();
        for c in contacts {
            for d in &c.devices {
                let Some(entry) = self.inner.peers.get(&d.peer_id()) else {
                    continue;
                };
                let addrs: Vec<String> = entry
                    .addrs
                    .iter()
                    .take(ADDRS_PER_DEVICE)
                    .map(ToString::to_string)
                    .collect();
                if !addrs.is_empty() {
                    out.push(KnownAddrs {
                        user: c.user_id,
                        peer: d.peer_id(),
                        addrs,
                    });
                }
            }
        }
        out
    }
}

/// A holder's answer as a reason, when it is not `Ok`.
fn refusal(answer: Result<HoldResponse, String>) -> String {
    match answer {
        Ok(HoldResponse::OverQuota { offer, used }) => {
            format!("over quota: it offers {offer} bytes and {used} are used")
        }
        Ok(HoldResponse::Refused(why)) => format!("refused: {why}"),
        Ok(HoldResponse::RateLimited(secs)) => format!("busy for {secs} s"),
        Ok(other) => format!("unexpected answer {other:?}"),
        Err(e) => format!("unreachable: {e}"),
    }
}

/// A sealed blob's reference and its shards, by slot.
type Sealed = (BlobRef, Vec<Vec<u8>>);

/// Seals one document (its stored blobs) as one or more blobs, each with its shards.
fn seal_doc(
    keys: &volli_core::backup::BackupKeys,
    code: Code,
    doc: &str,
    version: [u8; 32],
    stored: &[Vec<u8>],
) -> Result<Vec<Sealed>, BackupError> {
    let plain = postcard::to_allocvec(stored).map_err(|e| BackupError::Failed(e.to_string()))?;
    let packed = compress(&plain)?;
    // Each part sealed and cut must give shards of at most MAX_SHARD (padding adds ≤ 1/16).
    let max_part = (code.k() * MAX_SHARD) / 17 * 16 - 64;
    let parts: Vec<&[u8]> = if packed.is_empty() {
        vec![&packed[..]]
    } else {
        packed.chunks(max_part).collect()
    };
    let count = u16::try_from(parts.len())
        .map_err(|_| BackupError::Failed(format!("{doc} is too large to back up")))?;
    let mut out = Vec::with_capacity(parts.len());
    for (i, part) in parts.into_iter().enumerate() {
        let id = volli_core::backup::blob_id().map_err(|e| BackupError::Failed(e.to_string()))?;
        let sealed = keys.seal_blob(&id, part);
        let shards = code.encode(&sealed);
        out.push((
            BlobRef {
                id,
                doc: doc.to_owned(),
                part: u16::try_from(i).unwrap_or(u16::MAX),
                parts: count,
                version,
                sealed_len: u32::try_from(sealed.len()).unwrap_or(u32::MAX),
                shards: shards.iter().map(|s| *blake3::hash(s).as_bytes()).collect(),
            },
            shards,
        ));
    }
    Ok(out)
}

/// Deflate.
pub(super) fn compress(bytes: &[u8]) -> Result<Vec<u8>, BackupError> {
    let mut out = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
    out.write_all(bytes)
        .and_then(|()| out.finish())
        .map_err(|e| BackupError::Failed(format!("cannot compress: {e}")))
}
