//! `VaultDoc`: the three documents that are always in memory (contacts, settings, devices),
//! and the names of the root containers of every vault document.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use loro::{LoroDoc, LoroMap};
use volli_core::{ContactCard, DeviceAddrs, DeviceCertificate, Statement, UserId};

use super::Contact;

/// The names of the vault documents' root containers: every piece of synced state lives
/// under one. They are part of the on-disk and sync format; never rename them.
pub mod root {
    /// `contacts` document: contacts, keyed by user id.
    pub const CONTACTS: &str = "contacts";
    /// `settings` document: settings, key → JSON text.
    pub const SETTINGS: &str = "settings";
    /// `devices` document: the user's devices, keyed by peer id.
    pub const DEVICES: &str = "devices";
    /// `devices` document: what releases before signed statements wrote about the user as a
    /// whole (the X-Wing key generation, the latest contact card); read, never written.
    pub const USER: &str = "user";
    /// `devices` document: statements signed by the user key (revocations, key
    /// generations), keyed by the hash of their bytes.
    pub const STATEMENTS: &str = "statements";
    /// `devices` document: the user's own contact cards, keyed by the hash of their bytes.
    pub const CARDS: &str = "cards";
    /// Conversation chunks: messages, keyed by message id.
    pub const MESSAGES: &str = "messages";
    /// The single-document layout's conversations (keyed by the other party's user id, each
    /// with a `messages` map), read only by the migration.
    pub const CONVERSATIONS: &str = "conversations";
}

/// The contacts, settings and devices documents, as seen by code running inside the actor.
pub struct VaultDoc {
    contacts_doc: LoroDoc,
    settings_doc: LoroDoc,
    devices_doc: LoroDoc,
    verified: Mutex<Verified>,
    contacts: ContactCache,
    /// The devices document's view, with the version it was read at.
    devices_view: Mutex<Option<(loro::VersionVector, Arc<super::devices::View>)>>,
}

/// Contacts as last read, shared with the [`super::Vault`] handles so that the lookups done
/// for every message (is the sender a contact, where are the recipient's devices) do not wait
/// in the actor's queue behind commits. Filled and emptied only on the actor thread, in the
/// order of the jobs, so it never holds a contact older than the last write the actor ran:
/// every write to a contact forgets it, an import or a reload forgets them all.
pub(crate) type ContactCache = Arc<Mutex<HashMap<UserId, Contact>>>;

/// Looks `user` up in `cache`.
pub(crate) fn cached_contact(cache: &ContactCache, user: &UserId) -> Option<Contact> {
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(user)
        .cloned()
}

/// Cards and certificates already decoded and signature-checked, by their exact bytes.
/// Contacts are read on every message (is the sender a contact, where are the recipient's
/// devices), and checking their signatures again each time was most of the vault thread's
/// work under load. Bytes are immutable, so an entry never goes stale.
#[derive(Default)]
struct Verified {
    cards: HashMap<Vec<u8>, ContactCard>,
    certificates: HashMap<Vec<u8>, DeviceCertificate>,
    statements: HashMap<Vec<u8>, Statement>,
    addrs: HashMap<Vec<u8>, DeviceAddrs>,
}

/// Entries kept per kind; beyond that the memo starts over (contacts are few).
const MAX_VERIFIED: usize = 4096;

impl VaultDoc {
    /// The documents `contacts`, `settings` and `devices`, in that order.
    pub(crate) fn new(docs: [LoroDoc; 3], contacts: ContactCache) -> Self {
        let [contacts_doc, settings_doc, devices_doc] = docs;
        Self {
            contacts_doc,
            settings_doc,
            devices_doc,
            verified: Mutex::new(Verified::default()),
            contacts,
            devices_view: Mutex::new(None),
        }
    }

    /// The devices document's version, with everything written to it so far committed.
    pub(crate) fn devices_version(&self) -> loro::VersionVector {
        self.devices_doc.commit();
        self.devices_doc.oplog_vv()
    }

    /// The devices view last read, if it was read at `version`.
    pub(super) fn cached_view(
        &self,
        version: &loro::VersionVector,
    ) -> Option<Arc<super::devices::View>> {
        let cached = self.devices_view.lock().unwrap_or_else(|e| e.into_inner());
        cached
            .as_ref()
            .filter(|(at, _)| at == version)
            .map(|(_, view)| Arc::clone(view))
    }

    /// Keeps `view`, read at `version`.
    pub(super) fn cache_view(&self, version: loro::VersionVector, view: Arc<super::devices::View>) {
        *self.devices_view.lock().unwrap_or_else(|e| e.into_inner()) = Some((version, view));
    }

    /// One of the three documents.
    pub(crate) fn doc(&self, id: super::DocId) -> Option<&LoroDoc> {
        match id {
            super::DocId::Contacts => Some(&self.contacts_doc),
            super::DocId::Settings => Some(&self.settings_doc),
            super::DocId::Devices => Some(&self.devices_doc),
            super::DocId::Chunk { .. } => None,
        }
    }

    fn contact_cache(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Contact>> {
        self.contacts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers a contact just read (only ever called on the actor thread).
    pub(crate) fn remember_contact(&self, contact: &Contact) {
        self.contact_cache()
            .insert(contact.user_id, contact.clone());
    }

    /// Forgets a contact about to change.
    pub(crate) fn forget_contact(&self, user: &UserId) {
        self.contact_cache().remove(user);
    }

    /// The contact cache, to hand to a reloaded document.
    pub(crate) fn contacts(&self) -> ContactCache {
        Arc::clone(&self.contacts)
    }

    /// Forgets every contact (an import or a reload may have changed any of them).
    pub(crate) fn forget_contacts(&self) {
        self.contact_cache().clear();
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, Verified> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decodes a contact card and checks its signatures, once per distinct card.
    pub(crate) fn card(&self, bytes: &[u8]) -> Option<ContactCard> {
        self.memoised(bytes, |v| &mut v.cards, |b| ContactCard::from_bytes(b).ok())
    }

    /// Decodes a device certificate and checks its signature, once per distinct
    /// certificate. The caller still checks whose device it is.
    pub(crate) fn certificate(&self, bytes: &[u8]) -> Option<DeviceCertificate> {
        self.memoised(
            bytes,
            |v| &mut v.certificates,
            |b| {
                let cert = DeviceCertificate::from_bytes(b).ok()?;
                cert.verify().ok()?;
                Some(cert)
            },
        )
    }

    /// Decodes a statement and checks the user's signature, once per distinct statement.
    pub(crate) fn statement(&self, bytes: &[u8]) -> Option<Statement> {
        self.memoised(
            bytes,
            |v| &mut v.statements,
            |b| Statement::from_bytes(b).ok(),
        )
    }

    /// Decodes a device's address record and checks the device's signature, once per
    /// distinct record.
    pub(crate) fn device_addrs(&self, bytes: &[u8]) -> Option<DeviceAddrs> {
        self.memoised(bytes, |v| &mut v.addrs, |b| DeviceAddrs::from_bytes(b).ok())
    }

    /// What `check` makes of `bytes`, from the memo `kind` picks when it was seen before;
    /// only successes are remembered.
    fn memoised<T: Clone>(
        &self,
        bytes: &[u8],
        kind: fn(&mut Verified) -> &mut HashMap<Vec<u8>, T>,
        check: impl FnOnce(&[u8]) -> Option<T>,
    ) -> Option<T> {
        if let Some(known) = kind(&mut self.memo()).get(bytes) {
            return Some(known.clone());
        }
        let value = check(bytes)?;
        let mut memo = self.memo();
        let seen = kind(&mut memo);
        if seen.len() >= MAX_VERIFIED {
            seen.clear();
        }
        seen.insert(bytes.to_vec(), value.clone());
        Some(value)
    }

    /// Contacts, keyed by user id.
    pub(crate) fn contact_map(&self) -> LoroMap {
        self.contacts_doc.get_map(root::CONTACTS)
    }

    /// Settings: key → JSON text.
    pub(crate) fn settings(&self) -> LoroMap {
        self.settings_doc.get_map(root::SETTINGS)
    }

    /// The user's devices, keyed by peer id.
    pub(crate) fn devices(&self) -> LoroMap {
        self.devices_doc.get_map(root::DEVICES)
    }

    /// What older releases wrote unsigned about the user as a whole.
    pub(crate) fn user(&self) -> LoroMap {
        self.devices_doc.get_map(root::USER)
    }

    /// Statements signed by the user key, by the hash of their bytes.
    pub(crate) fn statements(&self) -> LoroMap {
        self.devices_doc.get_map(root::STATEMENTS)
    }

    /// The user's own contact cards, by the hash of their bytes.
    pub(crate) fn cards(&self) -> LoroMap {
        self.devices_doc.get_map(root::CARDS)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use volli_core::{Permissions, Timestamp, UserSecret};

    use super::*;

    #[test]
    fn the_verification_memo_never_passes_bytes_it_did_not_check() {
        let doc = VaultDoc::new(
            [LoroDoc::new(), LoroDoc::new(), LoroDoc::new()],
            ContactCache::default(),
        );
        let user = UserSecret::generate().unwrap();
        let peer = libp2p_identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let cert = DeviceCertificate::issue(
            &user,
            peer,
            "phone",
            Permissions::MESSAGES,
            Timestamp::now(),
        );
        let bytes = cert.to_bytes();
        assert_eq!(doc.certificate(&bytes), Some(cert.clone()));
        assert_eq!(doc.certificate(&bytes), Some(cert), "served from the memo");
        for i in 0..bytes.len() {
            let mut tampered = bytes.clone();
            tampered[i] ^= 1;
            assert!(doc.certificate(&tampered).is_none(), "byte {i}");
        }
        assert!(doc.card(&bytes).is_none(), "a certificate is not a card");
    }
}
