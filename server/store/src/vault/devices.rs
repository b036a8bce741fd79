//! The user's devices (the `devices` document), and what every device must agree on about
//! them: which devices are the user's, which were revoked, which X-Wing key generation
//! contacts seal to, the user's latest contact card, and where each device listens.
//!
//! Every device of the user holds this document and may write to it, including a
//! `contacts`-only one and a revoked one that kept its copy. So nothing in it is believed
//! for who wrote it; only what is signed counts:
//! - a device is the user's by its certificate (signed by the user key);
//! - a revocation and a key generation are [`Statement`]s signed by the user key, kept in
//!   grow-only sets under the hash of their bytes (a key nobody can write before the
//!   statement exists, so no earlier write can win over it);
//! - the user's cards are signed by the user key, in a set of their own, the newest wins;
//! - where a device listens is signed by that device's key ([`DeviceAddrs`]).
//!
//! [`check`] is applied to every import from another device: an update that would take a
//! valid statement, card, certificate or address record away, roll one back, change the
//! values older releases wrote unsigned, or push the document past its bounds is refused
//! whole. Revocation is therefore final on every device that has seen it.
//!
//! Values older releases wrote unsigned (`revoked_at` on a device, `key_generation` and
//! `card` in `user`) are still read — a `revoked_at` of any type means revoked, a key
//! generation only within [`MAX_GENERATION`] — but never written again and frozen against
//! imports; an admin device signs statements for them once ([`Vault::adopt_legacy`]).

use std::collections::{BTreeMap, BTreeSet};

use loro::{LoroDoc, LoroMap, LoroValue, ValueOrContainer};
use volli_core::statement::MAX_GENERATION;
use volli_core::{
    Claim, ContactCard, DeviceAddrs, DeviceCertificate, PeerId, Statement, Timestamp, UserId,
};

use super::Vault;
use super::doc::{VaultDoc, root};
use crate::StoreError;

/// Entries of the `devices` map at most.
pub(crate) const MAX_DEVICES: usize = 64;
/// Statements kept at most (revocations and key generations).
pub(crate) const MAX_STATEMENTS: usize = MAX_GENERATION as usize + MAX_DEVICES;
/// Entries of the card set at most; older cards are pruned as newer ones come.
const MAX_CARDS: usize = 64;
/// The user's cards kept when a new one is stored.
const KEEP_CARDS: usize = 4;
/// Largest state of the whole document, as JSON (a bound on what an import can add).
const MAX_STATE_BYTES: usize = 1 << 20;

/// One of the user's devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device's certificate, signed by the user key.
    pub certificate: DeviceCertificate,
    /// When it joined.
    pub added_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// Where it last said it listens (multiaddrs), so the user's other devices can reach it.
    pub addrs: Vec<String>,
}

impl DeviceRecord {
    /// The device's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.certificate.peer_id()
    }
}

/// The devices document as a reader sees it: only what verifies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct View {
    /// Certificates that verify, with when the device was added, by peer id.
    devices: BTreeMap<PeerId, (DeviceCertificate, Timestamp)>,
    /// Statements that verify, by the hash of their bytes.
    statements: BTreeMap<String, Statement>,
    /// Cards that verify, by the hash of their bytes.
    cards: BTreeMap<String, ContactCard>,
    /// Address records that verify and belong to their entry, by peer id.
    addrs: BTreeMap<PeerId, DeviceAddrs>,
    /// What older releases wrote unsigned: read, never written, frozen against imports.
    legacy: Legacy,
    /// Raw entry counts of the devices, statements and cards maps, for the bounds.
    sizes: [usize; 3],
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Legacy {
    /// Devices with a `revoked_at` of any type, and its value if it is a time.
    revoked: BTreeMap<PeerId, Option<Timestamp>>,
    /// The `user` map as it stands (`key_generation`, `card`).
    user: String,
    /// The key generation it names, when it is a number within bounds.
    generation: Option<u32>,
    /// The card it holds, when it verifies.
    card: Option<ContactCard>,
}

impl View {
    /// The view of the devices document as it stands, read again only when the document
    /// changed: devices are looked up for every sync request and delivery, and reading the
    /// whole document each time was a good part of the vault thread's work.
    pub(super) fn current(doc: &VaultDoc) -> std::sync::Arc<Self> {
        let version = doc.devices_version();
        if let Some(view) = doc.cached_view(&version) {
            return view;
        }
        let view = std::sync::Arc::new(Self::of(doc));
        doc.cache_view(version, std::sync::Arc::clone(&view));
        view
    }

    /// Reads the document.
    pub(super) fn of(doc: &VaultDoc) -> Self {
        let mut view = View::default();
        let devices = doc.devices();
        devices.for_each(|key, v| {
            let Some(map) = map_of(v) else { return };
            let Some(cert) = bytes_at(&map, "certificate").and_then(|b| doc.certificate(&b)) else {
                return;
            };
            let peer = cert.peer_id();
            if key != peer.to_base58() {
                return;
            }
            if let Some(revoked) = map.get("revoked_at") {
                let at = match revoked {
                    ValueOrContainer::Value(LoroValue::I64(ms)) => Some(Timestamp::from_millis(ms)),
                    _ => None,
                };
                view.legacy.revoked.insert(peer, at);
            }
            if let Some(record) = bytes_at(&map, "addrs").and_then(|b| doc.device_addrs(&b))
                && record.peer_id() == peer
            {
                view.addrs.insert(peer, record);
            }
            let added_at = match map.get("added_at") {
                Some(ValueOrContainer::Value(LoroValue::I64(ms))) => Timestamp::from_millis(ms),
                _ => cert.issued_at(),
            };
            view.devices.insert(peer, (cert, added_at));
        });
        let statements = doc.statements();
        statements.for_each(|key, v| {
            if let ValueOrContainer::Value(LoroValue::Binary(b)) = v
                && key == fact_key(&b)
                && let Some(s) = doc.statement(&b)
            {
                view.statements.insert(key.to_owned(), s);
            }
        });
        let cards = doc.cards();
        cards.for_each(|key, v| {
            if let ValueOrContainer::Value(LoroValue::Binary(b)) = v
                && key == fact_key(&b)
                && let Some(card) = doc.card(&b)
            {
                view.cards.insert(key.to_owned(), card);
            }
        });
        let user = doc.user();
        view.legacy.user = format!("{:?}", user.get_deep_value());
        view.legacy.generation = match user.get("key_generation") {
            Some(ValueOrContainer::Value(LoroValue::I64(g))) => {
                u32::try_from(g).ok().filter(|g| *g <= MAX_GENERATION)
            }
            _ => None,
        };
        view.legacy.card = bytes_at(&user, "card").and_then(|b| doc.card(&b));
        view.sizes = [devices.len(), statements.len(), cards.len()];
        view
    }

    fn is_empty(&self) -> bool {
        self.sizes == [0, 0, 0]
            && self.legacy.revoked.is_empty()
            && self.legacy.generation.is_none()
            && self.legacy.card.is_none()
    }

    /// When device `peer` of `user` was revoked, if it was.
    fn revoked_at(&self, user: UserId, peer: PeerId) -> Option<Timestamp> {
        let signed = self
            .statements
            .values()
            .filter(|s| s.user_id() == user && s.claim() == &Claim::Revoked { peer })
            .map(Statement::issued_at)
            .min();
        let legacy = self
            .legacy
            .revoked
            .get(&peer)
            .map(|at| at.unwrap_or(Timestamp::from_millis(0)));
        match (signed, legacy) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The X-Wing key generation contacts of `user` seal to.
    fn generation(&self, user: UserId) -> u32 {
        self.statements
            .values()
            .filter(|s| s.user_id() == user)
            .filter_map(|s| match s.claim() {
                Claim::KeyGeneration { generation } => Some(*generation),
                Claim::Revoked { .. } => None,
            })
            .chain(self.legacy.generation)
            .max()
            .unwrap_or(0)
    }

    /// The newest card of `user`.
    fn card(&self, user: UserId) -> Option<&ContactCard> {
        self.cards
            .values()
            .chain(self.legacy.card.as_ref())
            .filter(|c| c.user_id() == user)
            .max_by_key(|c| c.issued_at())
    }

    fn records(&self, keep: impl Fn(&DeviceCertificate) -> bool) -> Vec<DeviceRecord> {
        self.devices
            .values()
            .filter(|(cert, _)| keep(cert))
            .map(|(cert, added_at)| DeviceRecord {
                certificate: cert.clone(),
                added_at: *added_at,
                revoked_at: self.revoked_at(cert.user_id(), cert.peer_id()),
                addrs: self
                    .addrs
                    .get(&cert.peer_id())
                    .map(|r| r.addrs().to_vec())
                    .unwrap_or_default(),
            })
            .collect()
    }
}

/// Whether an import may turn the document from `before` into `after` (whose document is
/// `doc`): nothing signed goes away or back, the unsigned legacy values stay as they are,
/// and the bounds hold.
pub(super) fn check(before: &View, after: &View, doc: &LoroDoc) -> Result<(), String> {
    if let Some(s) = before
        .statements
        .keys()
        .find(|k| !after.statements.contains_key(*k))
    {
        return Err(format!("it would take back a signed statement ({s})"));
    }
    for card in before.cards.values() {
        let replaced = after
            .cards
            .values()
            .any(|c| c.user_id() == card.user_id() && c.issued_at() >= card.issued_at());
        if !replaced {
            return Err("it would take back the user's contact card".into());
        }
    }
    for (peer, (cert, _)) in &before.devices {
        let kept = after.devices.get(peer).is_some_and(|(c, _)| {
            c.user_id() == cert.user_id() && c.issued_at() >= cert.issued_at()
        });
        if !kept {
            return Err(format!("it would remove or roll back device {peer}"));
        }
    }
    for (peer, record) in &before.addrs {
        if after
            .addrs
            .get(peer)
            .is_none_or(|r| r.issued_at() < record.issued_at())
        {
            return Err(format!("it would roll back where device {peer} listens"));
        }
    }
    if !before.is_empty() && before.legacy != after.legacy {
        return Err("it would change values only an older release wrote".into());
    }
    only_roots(doc, &ROOTS)?;
    let [devices, statements, cards] = after.sizes;
    let state = state_size(doc);
    if devices > MAX_DEVICES
        || statements > MAX_STATEMENTS
        || cards > MAX_CARDS
        || state > MAX_STATE_BYTES
    {
        return Err(format!(
            "it would grow the devices document past its bounds ({devices} devices, \
             {statements} statements, {cards} cards, {state} bytes)"
        ));
    }
    Ok(())
}

/// The key a signed value is kept under: the hash of its bytes.
fn fact_key(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex()[..32].to_owned()
}

impl Vault {
    /// Adds a device or replaces its certificate (a newer one: a new name, other
    /// permissions). The certificate must verify. A revoked device stays revoked.
    pub async fn put_device(&self, record: DeviceRecord) -> Result<(), StoreError> {
        record
            .certificate
            .verify()
            .map_err(|e| StoreError::Document(e.to_string()))?;
        self.write(move |doc| {
            let entry = doc
                .devices()
                .ensure_mergeable_map(&record.peer_id().to_base58())?;
            let newer = bytes_at(&entry, "certificate")
                .and_then(|b| doc.certificate(&b))
                .is_none_or(|c| c.issued_at() <= record.certificate.issued_at());
            if newer {
                entry.insert("name", record.certificate.device_name())?;
                entry.insert("certificate", record.certificate.to_bytes())?;
            }
            if entry.get("added_at").is_none() {
                entry.insert("added_at", record.added_at.as_millis())?;
            }
            Ok(())
        })
        .await
    }

    /// Records where a device listens, as the device signed it. Returns false if there is
    /// no such device or the record is not newer than the one kept.
    pub async fn set_device_addrs(&self, record: DeviceAddrs) -> Result<bool, StoreError> {
        let peer = record.peer_id();
        self.write(move |doc| {
            let Some(entry) = doc.devices().get(&peer.to_base58()).and_then(map_of) else {
                return Ok(false);
            };
            let kept = bytes_at(&entry, "addrs").and_then(|b| doc.device_addrs(&b));
            if kept
                .is_some_and(|k| k.issued_at() >= record.issued_at() || k.addrs() == record.addrs())
            {
                return Ok(false);
            }
            entry.insert("addrs", record.to_bytes())?;
            Ok(true)
        })
        .await
    }

    /// Keeps a statement signed by the user key (a revocation, a key generation). Returns
    /// false if it was kept already. It must verify.
    pub async fn add_statement(&self, statement: Statement) -> Result<bool, StoreError> {
        let bytes = statement.to_bytes();
        Statement::from_bytes(&bytes).map_err(|e| StoreError::Document(e.to_string()))?;
        self.write(move |doc| {
            let key = fact_key(&bytes);
            let statements = doc.statements();
            if statements.get(&key).is_some() {
                return Ok(false);
            }
            if statements.len() >= MAX_STATEMENTS {
                return Err(StoreError::Document(
                    "the devices document holds as many statements as it may".into(),
                ));
            }
            statements.insert(&key, bytes)?;
            Ok(true)
        })
        .await
    }

    /// Every device of `user` with a valid certificate, revoked ones included, in peer id
    /// order.
    pub async fn devices_of(&self, user: UserId) -> Result<Vec<DeviceRecord>, StoreError> {
        self.read(move |doc| View::current(doc).records(|c| c.user_id() == user))
            .await
    }

    /// Every device with a valid certificate, of any user, revoked ones included.
    pub async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.read(|doc| View::current(doc).records(|_| true)).await
    }

    /// The generation of `user`'s X-Wing key that contacts seal to (0 until a device that
    /// held message keys is revoked).
    pub async fn key_generation(&self, user: UserId) -> Result<u32, StoreError> {
        self.read(move |doc| View::current(doc).generation(user))
            .await
    }

    /// `user`'s signed revocations of its devices (the evidence a commit that removes one
    /// of them from a conversation carries).
    pub async fn revocations(&self, user: UserId) -> Result<Vec<Statement>, StoreError> {
        self.read(move |doc| {
            View::current(doc)
                .statements
                .values()
                .filter(|s| s.user_id() == user && matches!(s.claim(), Claim::Revoked { .. }))
                .cloned()
                .collect()
        })
        .await
    }

    /// `user`'s latest contact card, as an admin device last issued it.
    pub async fn own_card(&self, user: UserId) -> Result<Option<ContactCard>, StoreError> {
        self.read(move |doc| View::current(doc).card(user).cloned())
            .await
    }

    /// Keeps `card` as the user's latest, unless a newer one is kept already; cards older
    /// than the newest few are dropped.
    pub async fn set_own_card(&self, card: ContactCard) -> Result<(), StoreError> {
        self.write(move |doc| {
            let view = View::of(doc);
            let user = card.user_id();
            if view
                .card(user)
                .is_some_and(|kept| kept.issued_at() >= card.issued_at())
            {
                return Ok(());
            }
            let bytes = card.to_bytes();
            let cards = doc.cards();
            cards.insert(&fact_key(&bytes), bytes)?;
            let mut older: Vec<(&String, &ContactCard)> = view
                .cards
                .iter()
                .filter(|(_, c)| c.user_id() == user)
                .collect();
            older.sort_by_key(|(_, c)| std::cmp::Reverse(c.issued_at()));
            for (key, _) in older.into_iter().skip(KEEP_CARDS - 1) {
                cards.delete(key)?;
            }
            Ok(())
        })
        .await
    }

    /// Signs (on an admin device) what an older release of the node wrote unsigned — the
    /// revocations and the key generation — so the user's devices keep agreeing once
    /// imports no longer take unsigned values. Returns how many statements were added.
    pub async fn adopt_legacy(&self, user: &volli_core::UserSecret) -> Result<usize, StoreError> {
        let id = user.user_id();
        let (revoked, generation, card) = self
            .read(move |doc| {
                let view = View::of(doc);
                let signed: BTreeSet<PeerId> = view
                    .statements
                    .values()
                    .filter_map(|s| match s.claim() {
                        Claim::Revoked { peer } if s.user_id() == id => Some(*peer),
                        _ => None,
                    })
                    .collect();
                let revoked: Vec<(PeerId, Timestamp)> = view
                    .legacy
                    .revoked
                    .iter()
                    .filter(|(p, _)| !signed.contains(p))
                    .filter(|(p, _)| view.devices.get(p).is_some_and(|(c, _)| c.user_id() == id))
                    .map(|(p, at)| (*p, at.unwrap_or_else(Timestamp::now)))
                    .collect();
                let signed_generation = view
                    .statements
                    .values()
                    .filter(|s| s.user_id() == id)
                    .filter_map(|s| match s.claim() {
                        Claim::KeyGeneration { generation } => Some(*generation),
                        Claim::Revoked { .. } => None,
                    })
                    .max()
                    .unwrap_or(0);
                let generation = view.legacy.generation.filter(|g| *g > signed_generation);
                let card = view
                    .legacy
                    .card
                    .filter(|c| c.user_id() == id && view.cards.is_empty());
                (revoked, generation, card)
            })
            .await?;
        let mut added = 0;
        for (peer, at) in revoked {
            added += usize::from(
                self.add_statement(Statement::issue(user, Claim::Revoked { peer }, at))
                    .await?,
            );
        }
        if let Some(generation) = generation {
            added += usize::from(
                self.add_statement(Statement::issue(
                    user,
                    Claim::KeyGeneration { generation },
                    Timestamp::now(),
                ))
                .await?,
            );
        }
        if let Some(card) = card {
            self.set_own_card(card).await?;
        }
        Ok(added)
    }
}

fn map_of(v: ValueOrContainer) -> Option<LoroMap> {
    match v {
        ValueOrContainer::Container(loro::Container::Map(map)) => Some(map),
        _ => None,
    }
}

fn bytes_at(map: &LoroMap, key: &str) -> Option<Vec<u8>> {
    match map.get(key)? {
        ValueOrContainer::Value(LoroValue::Binary(b)) => Some(b.to_vec()),
        _ => None,
    }
}

/// The size of a document's state, as JSON: what a reader has to hold.
pub(super) fn state_size(doc: &LoroDoc) -> usize {
    serde_json::to_vec(&doc.get_deep_value()).map_or(usize::MAX, |v| v.len())
}

/// The root containers a document may hold; anything else makes an import fail.
pub(super) fn only_roots(doc: &LoroDoc, allowed: &[&str]) -> Result<(), String> {
    // The shallow value names the roots without reading them: cheap for a large chunk. Only
    // when there is a stranger among them is the whole state read, to see whether it holds
    // anything (a root that was merely asked for is empty).
    let strangers = match doc.get_value() {
        LoroValue::Map(roots) => roots.keys().any(|name| !allowed.contains(&name.as_str())),
        _ => false,
    };
    if !strangers {
        return Ok(());
    }
    match doc.get_deep_value() {
        LoroValue::Map(roots) => match roots
            .iter()
            .find(|(name, value)| !allowed.contains(&name.as_str()) && !is_empty(value))
        {
            Some((name, _)) => Err(format!(
                "it adds a container this document does not have ({name:.40})"
            )),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

fn is_empty(value: &LoroValue) -> bool {
    match value {
        LoroValue::Map(m) => m.is_empty(),
        LoroValue::List(l) => l.is_empty(),
        LoroValue::String(s) => s.is_empty(),
        LoroValue::Null => true,
        _ => false,
    }
}

/// The roots of the devices document.
pub(super) const ROOTS: [&str; 4] = [root::DEVICES, root::USER, root::STATEMENTS, root::CARDS];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use loro::{ExportMode, LoroDoc};
    use volli_core::{Permissions, UserSecret};

    use super::*;
    use crate::vault::{DocId, VaultDelta, VaultVersion};
    use crate::{Store, VaultOptions};

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        user: UserSecret,
        admin: PeerId,
        phone: PeerId,
    }

    fn peer() -> PeerId {
        libp2p_identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    /// An admin device's vault with two devices, the phone's addresses, one revoked
    /// laptop, key generation 1 and a card.
    async fn fixture() -> (Fixture, PeerId) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), VaultOptions::default())
            .await
            .unwrap();
        let user = UserSecret::generate().unwrap();
        let (admin, laptop) = (peer(), peer());
        let phone_key = libp2p_identity::Keypair::generate_ed25519();
        let phone = phone_key.public().to_peer_id();
        let vault = store.vault();
        for (p, perms) in [
            (admin, Permissions::ALL),
            (phone, Permissions::CONTACTS),
            (laptop, Permissions::MESSAGES),
        ] {
            let certificate = DeviceCertificate::issue(&user, p, "d", perms, Timestamp::now());
            vault
                .put_device(DeviceRecord {
                    certificate,
                    added_at: Timestamp::now(),
                    revoked_at: None,
                    addrs: Vec::new(),
                })
                .await
                .unwrap();
        }
        let addrs = DeviceAddrs::issue(
            &phone_key,
            &["/ip4/10.0.0.2/tcp/1".into()],
            Timestamp::now(),
        );
        assert!(vault.set_device_addrs(addrs).await.unwrap());
        let now = Timestamp::now();
        for claim in [
            Claim::Revoked { peer: laptop },
            Claim::KeyGeneration { generation: 1 },
        ] {
            vault
                .add_statement(Statement::issue(&user, claim, now))
                .await
                .unwrap();
        }
        let card = ContactCard::issue(&user, "me", &[], &[], now);
        vault.set_own_card(card).await.unwrap();
        (
            Fixture {
                _dir: dir,
                store,
                user,
                admin,
                phone,
            },
            laptop,
        )
    }

    /// What a device holding a copy of `f`'s devices document sends after `edit`: the
    /// updates `f` lacks, as a delta.
    async fn crafted(f: &Fixture, edit: impl FnOnce(&LoroDoc)) -> VaultDelta {
        let (all, _) = f
            .store
            .vault()
            .export_since(VaultVersion::empty(), usize::MAX)
            .await
            .unwrap();
        let doc = LoroDoc::new();
        doc.set_peer_id(42).unwrap();
        for (name, blobs) in &all.docs {
            if name == "devices" {
                doc.import_batch(blobs).unwrap();
            }
        }
        let before = doc.oplog_vv();
        edit(&doc);
        doc.commit();
        let mut delta = VaultDelta::default();
        delta.push(
            DocId::Devices,
            vec![doc.export(ExportMode::updates(&before)).unwrap()],
        );
        delta
    }

    fn entry(doc: &LoroDoc, peer: PeerId) -> LoroMap {
        map_of(doc.get_map(root::DEVICES).get(&peer.to_base58()).unwrap()).unwrap()
    }

    async fn refused(f: &Fixture, delta: VaultDelta) -> String {
        // Empty root containers come and go with reading; they hold nothing.
        let state = async || {
            let mut json = f.store.vault().to_json().await.unwrap();
            for doc in json.as_object_mut().unwrap().values_mut() {
                if let Some(roots) = doc.as_object_mut() {
                    roots.retain(|_, v| v.as_object().is_none_or(|m| !m.is_empty()));
                }
            }
            json
        };
        let before = state().await;
        match f.store.vault().import(delta).await {
            Err(StoreError::Refused(reason)) => {
                let after = state().await;
                if after != before {
                    let (a, b) = (after.to_string(), before.to_string());
                    let at = a
                        .bytes()
                        .zip(b.bytes())
                        .position(|(x, y)| x != y)
                        .unwrap_or(0);
                    panic!(
                        "a refused import changed the vault ({reason}): …{}… against …{}…",
                        &a[at.saturating_sub(80)..(at + 80).min(a.len())],
                        &b[at.saturating_sub(80)..(at + 80).min(b.len())]
                    );
                }
                reason
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn revocation_is_final_against_any_crafted_update() {
        let (f, laptop) = fixture().await;
        let me = f.user.user_id();
        // Taking the revocation back, whatever the clock of the write.
        let reason = refused(
            &f,
            crafted(&f, |doc| {
                let statements = doc.get_map(root::STATEMENTS);
                let keys: Vec<String> = statements.keys().map(|k| k.to_string()).collect();
                for key in keys {
                    statements.delete(&key).unwrap();
                }
            })
            .await,
        )
        .await;
        assert!(reason.contains("signed statement"), "{reason}");
        // Replacing it with garbage of another type.
        refused(
            &f,
            crafted(&f, |doc| {
                let statements = doc.get_map(root::STATEMENTS);
                let key = statements.keys().next().unwrap().to_string();
                statements.insert(&key, "not revoked").unwrap();
            })
            .await,
        )
        .await;
        // A legacy `revoked_at` of the wrong type on the admin device: once read as "not
        // revoked" on one device and as revoked on another; now refused.
        refused(
            &f,
            crafted(&f, |doc| {
                entry(doc, f.admin).insert("revoked_at", "soon").unwrap();
            })
            .await,
        )
        .await;
        // Removing the revoked device's entry altogether.
        refused(
            &f,
            crafted(&f, |doc| {
                doc.get_map(root::DEVICES)
                    .delete(&laptop.to_base58())
                    .unwrap();
            })
            .await,
        )
        .await;
        let devices = f.store.vault().devices_of(me).await.unwrap();
        let laptop = devices.iter().find(|d| d.peer_id() == laptop).unwrap();
        assert!(laptop.revoked_at.is_some());
    }

    #[tokio::test]
    async fn a_revocation_written_after_a_preemptive_delete_still_holds() {
        let (f, _) = fixture().await;
        // A device deletes, ahead of time, every key a revocation of the phone could be
        // kept under that it can think of, with a clock far ahead of everyone's.
        let ahead = crafted(&f, |doc| {
            let statements = doc.get_map(root::STATEMENTS);
            for i in 0..2_000 {
                statements.insert("pad", i).unwrap();
            }
            statements.delete("pad").unwrap();
            statements.delete(&f.phone.to_base58()).unwrap();
        })
        .await;
        f.store.vault().import(ahead).await.unwrap();
        let revoke = Statement::issue(&f.user, Claim::Revoked { peer: f.phone }, Timestamp::now());
        f.store.vault().add_statement(revoke).await.unwrap();
        let devices = f.store.vault().devices_of(f.user.user_id()).await.unwrap();
        assert!(
            devices
                .iter()
                .find(|d| d.peer_id() == f.phone)
                .unwrap()
                .revoked_at
                .is_some()
        );
    }

    #[tokio::test]
    async fn key_generations_come_only_from_the_user_and_within_bounds() {
        let (f, _) = fixture().await;
        let me = f.user.user_id();
        // The unsigned value older releases read: a huge generation would have every admin
        // device derive that many keys at start.
        refused(
            &f,
            crafted(&f, |doc| {
                doc.get_map(root::USER)
                    .insert("key_generation", 4_000_000_000i64)
                    .unwrap();
            })
            .await,
        )
        .await;
        // A statement signed by another user is kept (it is a valid statement) but counts
        // for nothing here.
        let mallory = UserSecret::generate().unwrap();
        let forged = Statement::issue(
            &mallory,
            Claim::KeyGeneration { generation: 900 },
            Timestamp::now(),
        );
        let delta = crafted(&f, |doc| {
            let bytes = forged.to_bytes();
            doc.get_map(root::STATEMENTS)
                .insert(&fact_key(&bytes), bytes)
                .unwrap();
        })
        .await;
        f.store.vault().import(delta).await.unwrap();
        assert_eq!(f.store.vault().key_generation(me).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn cards_addresses_certificates_and_bounds_hold() {
        let (f, _) = fixture().await;
        let me = f.user.user_id();
        // Another user's newer card is no card of this user's.
        let mallory = UserSecret::generate().unwrap();
        let theirs = ContactCard::issue(&mallory, "me", &[], &[], Timestamp::now());
        let delta = crafted(&f, |doc| {
            let bytes = theirs.to_bytes();
            doc.get_map(root::CARDS)
                .insert(&fact_key(&bytes), bytes)
                .unwrap();
        })
        .await;
        f.store.vault().import(delta).await.unwrap();
        assert_eq!(
            f.store.vault().own_card(me).await.unwrap().unwrap().name(),
            "me"
        );
        assert_eq!(
            f.store
                .vault()
                .own_card(me)
                .await
                .unwrap()
                .unwrap()
                .user_id(),
            me
        );
        // Dropping the user's card.
        refused(
            &f,
            crafted(&f, |doc| {
                let cards = doc.get_map(root::CARDS);
                for key in cards.keys().map(|k| k.to_string()).collect::<Vec<_>>() {
                    cards.delete(&key).unwrap();
                }
            })
            .await,
        )
        .await;
        // Redirecting the phone: garbage, or another device's record.
        for garbage in [b"nowhere".to_vec(), {
            let other = libp2p_identity::Keypair::generate_ed25519();
            DeviceAddrs::issue(&other, &["/ip4/6.6.6.6/tcp/1".into()], Timestamp::now()).to_bytes()
        }] {
            refused(
                &f,
                crafted(&f, |doc| {
                    entry(doc, f.phone).insert("addrs", garbage).unwrap();
                })
                .await,
            )
            .await;
        }
        // Swapping the admin device's certificate for one of fewer permissions signed by
        // someone else.
        let bad =
            DeviceCertificate::issue(&mallory, f.admin, "d", Permissions::NONE, Timestamp::now());
        refused(
            &f,
            crafted(&f, |doc| {
                entry(doc, f.admin)
                    .insert("certificate", bad.to_bytes())
                    .unwrap();
            })
            .await,
        )
        .await;
        // Junk: a container the document does not have, and too many devices.
        let reason = refused(
            &f,
            crafted(&f, |doc| {
                doc.get_text("junk").insert(0, &"x".repeat(1000)).unwrap();
            })
            .await,
        )
        .await;
        assert!(reason.contains("container"), "{reason}");
        let reason = refused(
            &f,
            crafted(&f, |doc| {
                let devices = doc.get_map(root::DEVICES);
                for i in 0..MAX_DEVICES {
                    devices.insert(&format!("junk{i}"), 1).unwrap();
                }
            })
            .await,
        )
        .await;
        assert!(reason.contains("bounds"), "{reason}");
        // And an honest update from another device still goes in.
        let delta = crafted(&f, |doc| {
            let key = libp2p_identity::Keypair::generate_ed25519();
            let p = key.public().to_peer_id();
            let cert =
                DeviceCertificate::issue(&f.user, p, "new", Permissions::ALL, Timestamp::now());
            let e = doc
                .get_map(root::DEVICES)
                .insert_container(&p.to_base58(), loro::LoroMap::new())
                .unwrap();
            e.insert("certificate", cert.to_bytes()).unwrap();
            e.insert("added_at", Timestamp::now().as_millis()).unwrap();
        })
        .await;
        assert!(f.store.vault().import(delta).await.unwrap().new);
        assert_eq!(f.store.vault().devices_of(me).await.unwrap().len(), 4);
    }

    #[tokio::test]
    async fn legacy_revocations_and_generations_are_signed_once_on_an_admin_device() {
        let (f, laptop) = fixture().await;
        let me = f.user.user_id();
        // A vault as an older release left it: unsigned values only.
        let legacy_phone = f.phone;
        f.store
            .vault()
            .write(move |doc| {
                map_of(doc.devices().get(&legacy_phone.to_base58()).unwrap())
                    .unwrap()
                    .insert("revoked_at", 5i64)?;
                doc.user().insert("key_generation", 7i64)?;
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(f.store.vault().key_generation(me).await.unwrap(), 7);
        assert_eq!(f.store.vault().adopt_legacy(&f.user).await.unwrap(), 2);
        assert_eq!(f.store.vault().adopt_legacy(&f.user).await.unwrap(), 0);
        let view = f.store.vault().read(View::of).await.unwrap();
        assert_eq!(view.generation(me), 7);
        for p in [legacy_phone, laptop] {
            assert!(
                view.statements
                    .values()
                    .any(|s| s.claim() == &Claim::Revoked { peer: p })
            );
        }
    }
}
