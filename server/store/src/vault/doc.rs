//! `VaultDoc`: the Loro document and the names of its root containers.

use loro::{LoroDoc, LoroMap};

/// The names of the vault's root containers: every piece of synced state lives under one.
/// They are part of the on-disk and sync format; never rename them.
pub mod root {
    /// Contacts, keyed by user id.
    pub const CONTACTS: &str = "contacts";
    /// Conversations, keyed by the other party's user id.
    pub const CONVERSATIONS: &str = "conversations";
    /// Settings: key → JSON text.
    pub const SETTINGS: &str = "settings";
    /// The user's devices, keyed by peer id.
    pub const DEVICES: &str = "devices";
}

/// The vault document as seen by code running inside the actor.
pub struct VaultDoc {
    doc: LoroDoc,
}

impl VaultDoc {
    pub(crate) fn new(doc: LoroDoc) -> Self {
        Self { doc }
    }

    /// The underlying Loro document.
    pub(crate) fn loro(&self) -> &LoroDoc {
        &self.doc
    }

    /// Settings: key → JSON text.
    pub(crate) fn settings(&self) -> LoroMap {
        self.doc.get_map(root::SETTINGS)
    }

    /// The user's devices, keyed by peer id.
    pub(crate) fn devices(&self) -> LoroMap {
        self.doc.get_map(root::DEVICES)
    }
}
