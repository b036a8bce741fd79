//! The MLS state of one device as a key-value map in memory, with a log of what changed.
//!
//! openmls reads and writes its state through the [`StorageProvider`] trait and opens no
//! transactions of its own. This store keeps every value in memory (a device's state is a
//! few tens of kilobytes per conversation) and records each write and deletion, so that the
//! node can persist exactly what an operation changed in the same SQLite transaction as the
//! messages it goes with: a message is never sent under a ratchet position that a crash
//! could hand out again, and a key openmls deleted is deleted on disk by the same commit.
//!
//! What it deliberately does not do: talk to a database. [`Storage::take_changes`] hands
//! the changes to whoever persists them; [`Storage::load`] takes the stored rows back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use openmls_traits::storage::{CURRENT_VERSION, Entity, StorageProvider, traits};
use serde::Serialize;

/// One change to persist: a key and its new value, or `None` when it was deleted.
pub type Change = (Vec<u8>, Option<Arc<Vec<u8>>>);

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A key did not serialize.
    #[error("MLS state key does not serialize: {0}")]
    Key(#[from] serde_json::Error),
    /// A value did not (de)serialize.
    #[error("MLS state value does not (de)serialize: {0}")]
    Value(#[from] postcard::Error),
}

/// Values are postcard: compact, and quick to write — openmls writes its message secrets
/// after every message, and JSON spells every byte of them as a number. The join
/// configuration is the exception: one of its fields reads older encodings through serde's
/// `untagged`, which postcard cannot carry. Keys stay JSON, as openmls' own stores build
/// them.
fn encode<T: Serialize + ?Sized>(label: &[u8], value: &T) -> Result<Vec<u8>, StorageError> {
    if label == label::JOIN_CONFIG {
        Ok(serde_json::to_vec(value)?)
    } else {
        Ok(postcard::to_allocvec(value)?)
    }
}

fn decode<T: serde::de::DeserializeOwned>(label: &[u8], bytes: &[u8]) -> Result<T, StorageError> {
    if label == label::JOIN_CONFIG {
        Ok(serde_json::from_slice(bytes)?)
    } else {
        Ok(postcard::from_bytes(bytes)?)
    }
}

#[derive(Default)]
struct Inner {
    values: HashMap<Vec<u8>, Arc<Vec<u8>>>,
    /// Changed since the last [`Storage::take_changes`], latest value per key.
    changes: HashMap<Vec<u8>, Option<Arc<Vec<u8>>>>,
    /// While an operation runs: each changed key's value and change from before it.
    undo: Option<HashMap<Vec<u8>, Undo>>,
}

/// A key as it was before the running operation changed it.
struct Undo {
    value: Option<Arc<Vec<u8>>>,
    change: Option<Option<Arc<Vec<u8>>>>,
}

/// The device's MLS state in memory.
#[derive(Default)]
pub struct Storage {
    inner: Mutex<Inner>,
}

impl Storage {
    /// A store holding `rows` as they were persisted.
    pub fn load(rows: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Self {
        let values = rows.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        Self {
            inner: Mutex::new(Inner {
                values,
                changes: HashMap::new(),
                undo: None,
            }),
        }
    }

    /// What changed since the last call, to persist (in any order: one change per key).
    pub fn take_changes(&self) -> Vec<Change> {
        self.lock().changes.drain().collect()
    }

    /// Whether anything changed since the last [`Self::take_changes`].
    pub fn has_changes(&self) -> bool {
        !self.lock().changes.is_empty()
    }

    /// Every stored row, for a copy of the whole state (tests, and a device state taken as
    /// a thief would take it).
    pub fn rows(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.lock()
            .values
            .iter()
            .map(|(k, v)| (k.clone(), v.as_ref().clone()))
            .collect()
    }

    /// Bytes held, keys and values.
    pub fn size(&self) -> usize {
        self.lock()
            .values
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum()
    }

    /// Starts an operation that [`Self::roll_back`] can undo.
    pub(crate) fn begin(&self) {
        self.lock().undo = Some(HashMap::new());
    }

    /// Keeps what the running operation changed.
    pub(crate) fn keep(&self) {
        self.lock().undo = None;
    }

    /// Undoes what the running operation changed.
    pub(crate) fn roll_back(&self) {
        let mut inner = self.lock();
        let Some(undo) = inner.undo.take() else {
            return;
        };
        for (key, before) in undo {
            match before.value {
                Some(value) => inner.values.insert(key.clone(), value),
                None => inner.values.remove(&key),
            };
            match before.change {
                Some(change) => inner.changes.insert(key, change),
                None => inner.changes.remove(&key),
            };
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn put(&self, key: Vec<u8>, value: Vec<u8>) {
        let value = Arc::new(value);
        let mut inner = self.lock();
        inner.remember(&key);
        inner.changes.insert(key.clone(), Some(Arc::clone(&value)));
        inner.values.insert(key, value);
    }

    fn get(&self, key: &[u8]) -> Option<Arc<Vec<u8>>> {
        self.lock().values.get(key).cloned()
    }

    fn remove(&self, key: Vec<u8>) {
        let mut inner = self.lock();
        if inner.values.contains_key(&key) || inner.changes.contains_key(&key) {
            inner.remember(&key);
            inner.values.remove(&key);
            inner.changes.insert(key, None);
        }
    }

    fn write<K: Serialize, V: Serialize>(
        &self,
        label: &[u8],
        key: &K,
        value: &V,
    ) -> Result<(), StorageError> {
        self.put(storage_key(label, key)?, encode(label, value)?);
        Ok(())
    }

    fn read<K: Serialize, V: Entity<CURRENT_VERSION>>(
        &self,
        label: &[u8],
        key: &K,
    ) -> Result<Option<V>, StorageError> {
        match self.get(&storage_key(label, key)?) {
            Some(bytes) => Ok(Some(decode(label, &bytes)?)),
            None => Ok(None),
        }
    }

    fn delete<K: Serialize>(&self, label: &[u8], key: &K) -> Result<(), StorageError> {
        self.remove(storage_key(label, key)?);
        Ok(())
    }

    /// The list stored under `key`, each item encoded on its own.
    fn list(&self, label: &[u8], key: &[u8]) -> Result<Vec<Vec<u8>>, StorageError> {
        match self.get(&raw_key(label, key)) {
            Some(bytes) => decode(label, &bytes),
            None => Ok(Vec::new()),
        }
    }

    fn read_list<K: Serialize, V: Entity<CURRENT_VERSION>>(
        &self,
        label: &[u8],
        key: &K,
    ) -> Result<Vec<V>, StorageError> {
        self.list(label, &serde_json::to_vec(key)?)?
            .iter()
            .map(|item| decode(label, item))
            .collect()
    }

    fn append<K: Serialize, V: Serialize>(
        &self,
        label: &[u8],
        key: &K,
        value: &V,
    ) -> Result<(), StorageError> {
        let key = serde_json::to_vec(key)?;
        let mut list = self.list(label, &key)?;
        list.push(encode(label, value)?);
        self.put(raw_key(label, &key), encode(label, &list)?);
        Ok(())
    }

    fn remove_item<K: Serialize, V: Serialize>(
        &self,
        label: &[u8],
        key: &K,
        value: &V,
    ) -> Result<(), StorageError> {
        let key = serde_json::to_vec(key)?;
        let item = encode(label, value)?;
        let mut list = self.list(label, &key)?;
        if let Some(at) = list.iter().position(|i| *i == item) {
            list.remove(at);
        }
        self.put(raw_key(label, &key), encode(label, &list)?);
        Ok(())
    }
}

impl Inner {
    /// Records `key` as it is, the first time the running operation changes it.
    fn remember(&mut self, key: &[u8]) {
        let Some(undo) = &self.undo else {
            return;
        };
        if undo.contains_key(key) {
            return;
        }
        let before = Undo {
            value: self.values.get(key).cloned(),
            change: self.changes.get(key).cloned(),
        };
        if let Some(undo) = &mut self.undo {
            undo.insert(key.to_vec(), before);
        }
    }
}

/// The row key of `key` under `label`, as openmls' own stores build it.
fn storage_key<K: Serialize>(label: &[u8], key: &K) -> Result<Vec<u8>, StorageError> {
    Ok(raw_key(label, &serde_json::to_vec(key)?))
}

fn raw_key(label: &[u8], key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(label.len() + key.len() + 2);
    out.extend_from_slice(label);
    out.extend_from_slice(key);
    out.extend_from_slice(&CURRENT_VERSION.to_be_bytes());
    out
}

/// The row key of an epoch's encryption key pairs.
fn epoch_key<G: Serialize, E: Serialize>(
    group: &G,
    epoch: &E,
    leaf: u32,
) -> Result<Vec<u8>, StorageError> {
    let mut key = serde_json::to_vec(group)?;
    key.extend_from_slice(&serde_json::to_vec(epoch)?);
    key.extend_from_slice(&serde_json::to_vec(&leaf)?);
    Ok(raw_key(label::EPOCH_KEY_PAIRS, &key))
}

mod label {
    pub(super) const KEY_PACKAGE: &[u8] = b"KeyPackage";
    pub(super) const PSK: &[u8] = b"Psk";
    pub(super) const ENCRYPTION_KEY_PAIR: &[u8] = b"EncryptionKeyPair";
    pub(super) const SIGNATURE_KEY_PAIR: &[u8] = b"SignatureKeyPair";
    pub(super) const EPOCH_KEY_PAIRS: &[u8] = b"EpochKeyPairs";
    pub(super) const TREE: &[u8] = b"Tree";
    pub(super) const GROUP_CONTEXT: &[u8] = b"GroupContext";
    pub(super) const INTERIM_TRANSCRIPT_HASH: &[u8] = b"InterimTranscriptHash";
    pub(super) const CONFIRMATION_TAG: &[u8] = b"ConfirmationTag";
    pub(super) const JOIN_CONFIG: &[u8] = b"MlsGroupJoinConfig";
    pub(super) const OWN_LEAF_NODES: &[u8] = b"OwnLeafNodes";
    pub(super) const GROUP_STATE: &[u8] = b"GroupState";
    pub(super) const QUEUED_PROPOSAL: &[u8] = b"QueuedProposal";
    pub(super) const PROPOSAL_QUEUE_REFS: &[u8] = b"ProposalQueueRefs";
    pub(super) const OWN_LEAF_NODE_INDEX: &[u8] = b"OwnLeafNodeIndex";
    pub(super) const EPOCH_SECRETS: &[u8] = b"EpochSecrets";
    pub(super) const RESUMPTION_PSK_STORE: &[u8] = b"ResumptionPsk";
    pub(super) const MESSAGE_SECRETS: &[u8] = b"MessageSecrets";
}

/// Our own entries beside openmls' (conversation bookkeeping), under labels openmls does
/// not use.
impl Storage {
    /// Stores `value` under our own `key`.
    pub(crate) fn put_own(&self, key: &[u8], value: Vec<u8>) {
        self.put(raw_key(b"volli/", key), value);
    }

    /// Our own entry under `key`.
    pub(crate) fn get_own(&self, key: &[u8]) -> Option<Arc<Vec<u8>>> {
        self.get(&raw_key(b"volli/", key))
    }

    /// Deletes our own entry under `key`.
    pub(crate) fn delete_own(&self, key: &[u8]) {
        self.remove(raw_key(b"volli/", key));
    }

    /// Our own entries whose key starts with `prefix`.
    pub(crate) fn own_with_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Arc<Vec<u8>>)> {
        let full = [b"volli/".as_slice(), prefix].concat();
        let version = CURRENT_VERSION.to_be_bytes();
        self.lock()
            .values
            .iter()
            .filter(|(k, _)| k.starts_with(&full) && k.ends_with(&version))
            .map(|(k, v)| (k[6..k.len() - 2].to_vec(), Arc::clone(v)))
            .collect()
    }
}

impl StorageProvider<CURRENT_VERSION> for Storage {
    type Error = StorageError;

    fn write_mls_join_config<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MlsGroupJoinConfig: traits::MlsGroupJoinConfig<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        config: &MlsGroupJoinConfig,
    ) -> Result<(), Self::Error> {
        self.write(label::JOIN_CONFIG, group_id, config)
    }

    fn append_own_leaf_node<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNode: traits::LeafNode<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        leaf_node: &LeafNode,
    ) -> Result<(), Self::Error> {
        self.append(label::OWN_LEAF_NODES, group_id, leaf_node)
    }

    fn queue_proposal<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
        QueuedProposal: traits::QueuedProposal<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        proposal_ref: &ProposalRef,
        proposal: &QueuedProposal,
    ) -> Result<(), Self::Error> {
        self.write(label::QUEUED_PROPOSAL, &(group_id, proposal_ref), proposal)?;
        self.append(label::PROPOSAL_QUEUE_REFS, group_id, proposal_ref)
    }

    fn write_tree<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        TreeSync: traits::TreeSync<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        tree: &TreeSync,
    ) -> Result<(), Self::Error> {
        self.write(label::TREE, group_id, tree)
    }

    fn write_interim_transcript_hash<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        InterimTranscriptHash: traits::InterimTranscriptHash<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        interim_transcript_hash: &InterimTranscriptHash,
    ) -> Result<(), Self::Error> {
        self.write(
            label::INTERIM_TRANSCRIPT_HASH,
            group_id,
            interim_transcript_hash,
        )
    }

    fn write_context<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupContext: traits::GroupContext<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        group_context: &GroupContext,
    ) -> Result<(), Self::Error> {
        self.write(label::GROUP_CONTEXT, group_id, group_context)
    }

    fn write_confirmation_tag<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ConfirmationTag: traits::ConfirmationTag<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        confirmation_tag: &ConfirmationTag,
    ) -> Result<(), Self::Error> {
        self.write(label::CONFIRMATION_TAG, group_id, confirmation_tag)
    }

    fn write_group_state<
        GroupState: traits::GroupState<CURRENT_VERSION>,
        GroupId: traits::GroupId<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        group_state: &GroupState,
    ) -> Result<(), Self::Error> {
        self.write(label::GROUP_STATE, group_id, group_state)
    }

    fn write_message_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MessageSecrets: traits::MessageSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        message_secrets: &MessageSecrets,
    ) -> Result<(), Self::Error> {
        self.write(label::MESSAGE_SECRETS, group_id, message_secrets)
    }

    fn write_resumption_psk_store<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ResumptionPskStore: traits::ResumptionPskStore<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        resumption_psk_store: &ResumptionPskStore,
    ) -> Result<(), Self::Error> {
        self.write(label::RESUMPTION_PSK_STORE, group_id, resumption_psk_store)
    }

    fn write_own_leaf_index<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNodeIndex: traits::LeafNodeIndex<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        own_leaf_index: &LeafNodeIndex,
    ) -> Result<(), Self::Error> {
        self.write(label::OWN_LEAF_NODE_INDEX, group_id, own_leaf_index)
    }

    fn write_group_epoch_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupEpochSecrets: traits::GroupEpochSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        group_epoch_secrets: &GroupEpochSecrets,
    ) -> Result<(), Self::Error> {
        self.write(label::EPOCH_SECRETS, group_id, group_epoch_secrets)
    }

    fn write_signature_key_pair<
        SignaturePublicKey: traits::SignaturePublicKey<CURRENT_VERSION>,
        SignatureKeyPair: traits::SignatureKeyPair<CURRENT_VERSION>,
    >(
        &self,
        public_key: &SignaturePublicKey,
        signature_key_pair: &SignatureKeyPair,
    ) -> Result<(), Self::Error> {
        self.write(label::SIGNATURE_KEY_PAIR, public_key, signature_key_pair)
    }

    fn write_encryption_key_pair<
        EncryptionKey: traits::EncryptionKey<CURRENT_VERSION>,
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
    >(
        &self,
        public_key: &EncryptionKey,
        key_pair: &HpkeKeyPair,
    ) -> Result<(), Self::Error> {
        self.write(label::ENCRYPTION_KEY_PAIR, public_key, key_pair)
    }

    fn write_encryption_epoch_key_pairs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        EpochKey: traits::EpochKey<CURRENT_VERSION>,
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        epoch: &EpochKey,
        leaf_index: u32,
        key_pairs: &[HpkeKeyPair],
    ) -> Result<(), Self::Error> {
        self.put(
            epoch_key(group_id, epoch, leaf_index)?,
            encode(label::EPOCH_KEY_PAIRS, key_pairs)?,
        );
        Ok(())
    }

    fn write_key_package<
        HashReference: traits::HashReference<CURRENT_VERSION>,
        KeyPackage: traits::KeyPackage<CURRENT_VERSION>,
    >(
        &self,
        hash_ref: &HashReference,
        key_package: &KeyPackage,
    ) -> Result<(), Self::Error> {
        self.write(label::KEY_PACKAGE, hash_ref, key_package)
    }

    fn write_psk<
        PskId: traits::PskId<CURRENT_VERSION>,
        PskBundle: traits::PskBundle<CURRENT_VERSION>,
    >(
        &self,
        psk_id: &PskId,
        psk: &PskBundle,
    ) -> Result<(), Self::Error> {
        self.write(label::PSK, psk_id, psk)
    }

    fn mls_group_join_config<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MlsGroupJoinConfig: traits::MlsGroupJoinConfig<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<MlsGroupJoinConfig>, Self::Error> {
        self.read(label::JOIN_CONFIG, group_id)
    }

    fn own_leaf_nodes<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNode: traits::LeafNode<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Vec<LeafNode>, Self::Error> {
        self.read_list(label::OWN_LEAF_NODES, group_id)
    }

    fn queued_proposal_refs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Vec<ProposalRef>, Self::Error> {
        self.read_list(label::PROPOSAL_QUEUE_REFS, group_id)
    }

    fn queued_proposals<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
        QueuedProposal: traits::QueuedProposal<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Vec<(ProposalRef, QueuedProposal)>, Self::Error> {
        let refs: Vec<ProposalRef> = self.read_list(label::PROPOSAL_QUEUE_REFS, group_id)?;
        let mut out = Vec::with_capacity(refs.len());
        for proposal_ref in refs {
            if let Some(proposal) = self.read(label::QUEUED_PROPOSAL, &(group_id, &proposal_ref))? {
                out.push((proposal_ref, proposal));
            }
        }
        Ok(out)
    }

    fn tree<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        TreeSync: traits::TreeSync<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<TreeSync>, Self::Error> {
        self.read(label::TREE, group_id)
    }

    fn group_context<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupContext: traits::GroupContext<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<GroupContext>, Self::Error> {
        self.read(label::GROUP_CONTEXT, group_id)
    }

    fn interim_transcript_hash<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        InterimTranscriptHash: traits::InterimTranscriptHash<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<InterimTranscriptHash>, Self::Error> {
        self.read(label::INTERIM_TRANSCRIPT_HASH, group_id)
    }

    fn confirmation_tag<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ConfirmationTag: traits::ConfirmationTag<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<ConfirmationTag>, Self::Error> {
        self.read(label::CONFIRMATION_TAG, group_id)
    }

    fn group_state<
        GroupState: traits::GroupState<CURRENT_VERSION>,
        GroupId: traits::GroupId<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<GroupState>, Self::Error> {
        self.read(label::GROUP_STATE, group_id)
    }

    fn message_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MessageSecrets: traits::MessageSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<MessageSecrets>, Self::Error> {
        self.read(label::MESSAGE_SECRETS, group_id)
    }

    fn resumption_psk_store<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ResumptionPskStore: traits::ResumptionPskStore<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<ResumptionPskStore>, Self::Error> {
        self.read(label::RESUMPTION_PSK_STORE, group_id)
    }

    fn own_leaf_index<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNodeIndex: traits::LeafNodeIndex<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<LeafNodeIndex>, Self::Error> {
        self.read(label::OWN_LEAF_NODE_INDEX, group_id)
    }

    fn group_epoch_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupEpochSecrets: traits::GroupEpochSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<GroupEpochSecrets>, Self::Error> {
        self.read(label::EPOCH_SECRETS, group_id)
    }

    fn signature_key_pair<
        SignaturePublicKey: traits::SignaturePublicKey<CURRENT_VERSION>,
        SignatureKeyPair: traits::SignatureKeyPair<CURRENT_VERSION>,
    >(
        &self,
        public_key: &SignaturePublicKey,
    ) -> Result<Option<SignatureKeyPair>, Self::Error> {
        self.read(label::SIGNATURE_KEY_PAIR, public_key)
    }

    fn encryption_key_pair<
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
        EncryptionKey: traits::EncryptionKey<CURRENT_VERSION>,
    >(
        &self,
        public_key: &EncryptionKey,
    ) -> Result<Option<HpkeKeyPair>, Self::Error> {
        self.read(label::ENCRYPTION_KEY_PAIR, public_key)
    }

    fn encryption_epoch_key_pairs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        EpochKey: traits::EpochKey<CURRENT_VERSION>,
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        epoch: &EpochKey,
        leaf_index: u32,
    ) -> Result<Vec<HpkeKeyPair>, Self::Error> {
        match self.get(&epoch_key(group_id, epoch, leaf_index)?) {
            Some(bytes) => decode(label::EPOCH_KEY_PAIRS, &bytes),
            None => Ok(Vec::new()),
        }
    }

    fn key_package<
        KeyPackageRef: traits::HashReference<CURRENT_VERSION>,
        KeyPackage: traits::KeyPackage<CURRENT_VERSION>,
    >(
        &self,
        hash_ref: &KeyPackageRef,
    ) -> Result<Option<KeyPackage>, Self::Error> {
        self.read(label::KEY_PACKAGE, hash_ref)
    }

    fn psk<PskBundle: traits::PskBundle<CURRENT_VERSION>, PskId: traits::PskId<CURRENT_VERSION>>(
        &self,
        psk_id: &PskId,
    ) -> Result<Option<PskBundle>, Self::Error> {
        self.read(label::PSK, psk_id)
    }

    fn remove_proposal<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        proposal_ref: &ProposalRef,
    ) -> Result<(), Self::Error> {
        self.remove_item(label::PROPOSAL_QUEUE_REFS, group_id, proposal_ref)?;
        self.delete(label::QUEUED_PROPOSAL, &(group_id, proposal_ref))
    }

    fn delete_own_leaf_nodes<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(label::OWN_LEAF_NODES, group_id)
    }

    fn delete_group_config<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(label::JOIN_CONFIG, group_id)
    }

    fn delete_tree<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(label::TREE, group_id)
    }

    fn delete_confirmation_tag<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(label::CONFIRMATION_TAG, group_id)
    }

    fn delete_group_state<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(label::GROUP_STATE, group_id)
    }

    fn delete_context<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(label::GROUP_CONTEXT, group_id)
    }

    fn delete_interim_transcript_hash<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(label::INTERIM_TRANSCRIPT_HASH, group_id)
    }

    fn delete_message_secrets<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(label::MESSAGE_SECRETS, group_id)
    }

    fn delete_all_resumption_psk_secrets<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(label::RESUMPTION_PSK_STORE, group_id)
    }

    fn delete_own_leaf_index<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(label::OWN_LEAF_NODE_INDEX, group_id)
    }

    fn delete_group_epoch_secrets<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(label::EPOCH_SECRETS, group_id)
    }

    fn clear_proposal_queue<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        let refs: Vec<ProposalRef> = self.read_list(label::PROPOSAL_QUEUE_REFS, group_id)?;
        for proposal_ref in refs {
            self.delete(label::QUEUED_PROPOSAL, &(group_id, &proposal_ref))?;
        }
        self.delete(label::PROPOSAL_QUEUE_REFS, group_id)
    }

    fn delete_signature_key_pair<
        SignaturePublicKey: traits::SignaturePublicKey<CURRENT_VERSION>,
    >(
        &self,
        public_key: &SignaturePublicKey,
    ) -> Result<(), Self::Error> {
        self.delete(label::SIGNATURE_KEY_PAIR, public_key)
    }

    fn delete_encryption_key_pair<EncryptionKey: traits::EncryptionKey<CURRENT_VERSION>>(
        &self,
        public_key: &EncryptionKey,
    ) -> Result<(), Self::Error> {
        self.delete(label::ENCRYPTION_KEY_PAIR, public_key)
    }

    fn delete_encryption_epoch_key_pairs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        EpochKey: traits::EpochKey<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        epoch: &EpochKey,
        leaf_index: u32,
    ) -> Result<(), Self::Error> {
        self.remove(epoch_key(group_id, epoch, leaf_index)?);
        Ok(())
    }

    fn delete_key_package<KeyPackageRef: traits::HashReference<CURRENT_VERSION>>(
        &self,
        hash_ref: &KeyPackageRef,
    ) -> Result<(), Self::Error> {
        self.delete(label::KEY_PACKAGE, hash_ref)
    }

    fn delete_psk<PskKey: traits::PskId<CURRENT_VERSION>>(
        &self,
        psk_id: &PskKey,
    ) -> Result<(), Self::Error> {
        self.delete(label::PSK, psk_id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn changes_carry_the_latest_value_and_deletions() {
        let s = Storage::default();
        s.put_own(b"a", vec![1]);
        s.put_own(b"a", vec![2]);
        s.put_own(b"b", vec![3]);
        s.delete_own(b"b");
        let mut changes = s.take_changes();
        changes.sort();
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].1.as_deref(), Some(&vec![2]));
        assert_eq!(changes[1].1, None);
        assert!(!s.has_changes());
        // A reload from the persisted rows sees what was kept.
        let rows = s.rows();
        let back = Storage::load(rows);
        assert_eq!(back.get_own(b"a").as_deref(), Some(&vec![2]));
        assert!(back.get_own(b"b").is_none());
    }

    #[test]
    fn a_rolled_back_operation_leaves_values_and_changes_as_they_were() {
        let s = Storage::default();
        s.put_own(b"a", vec![1]);
        s.put_own(b"gone", vec![9]);
        let _ = s.take_changes();
        s.put_own(b"b", vec![5]);
        s.begin();
        s.put_own(b"a", vec![2]);
        s.put_own(b"a", vec![3]);
        s.put_own(b"b", vec![6]);
        s.put_own(b"new", vec![4]);
        s.delete_own(b"gone");
        s.roll_back();
        assert_eq!(s.get_own(b"a").as_deref(), Some(&vec![1]));
        assert_eq!(s.get_own(b"b").as_deref(), Some(&vec![5]));
        assert_eq!(s.get_own(b"gone").as_deref(), Some(&vec![9]));
        assert!(s.get_own(b"new").is_none());
        let changes = s.take_changes();
        assert_eq!(
            changes.len(),
            1,
            "only the change from before the operation"
        );
        assert_eq!(changes[0].1.as_deref(), Some(&vec![5]));
    }

    #[test]
    fn deleting_what_was_never_stored_changes_nothing() {
        let s = Storage::default();
        s.delete_own(b"nothing");
        assert!(s.take_changes().is_empty());
    }
}
