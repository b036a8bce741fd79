//! Files offered to a group ([ADR 0018] §6): one offer, sealed once in the group and sent
//! to every member as a group message is (in order, through relays and carriers); each
//! member's node fetches the chunks from the sender when the sender is its contact, else
//! from the member that carries the group's mail to it.
//!
//! The sender serves its group transfer to any current member (who can only reach it when
//! it is a contact); it is `completed` when every member it was offered to that fetches
//! from it has reported the file whole. A member serves a group file it received to other
//! members only, over connections between contacts: from its store once it has it whole,
//! and until then (its user has not taken it, or declined it) by passing each chunk on from
//! where it would fetch it itself, checked and not kept.
//!
//! [ADR 0018]: ../../../../docs/adr/0018-groups.md

use std::sync::Arc;

use multiaddr::Multiaddr;
use volli_core::transfer::bulk::Status;
use volli_core::transfer::{ChunkList, FileOffer, Layout, TransferId};
use volli_core::wire::{self, FileAction, FileRefusal, FileRequest, FileResponse};
use volli_core::{PeerId, Timestamp, UserId};
use volli_mls::GroupRef;
use volli_store::TransferRow;

use super::{FileError, Files, TransferView, Upload, finished, prepare, view};

impl Files {
    /// Lets the conversations layer hand over files offered to groups.
    pub(crate) fn take_group_offers(&self) {
        let this = self.clone();
        self.inner
            .conversations
            .take_group_offers(Arc::new(move |group, offer| {
                let this = this.clone();
                Box::pin(async move { this.record_group_offer(group, offer).await })
            }));
    }

    /// Checks that this user may offer a file to `group` now.
    async fn check_group(&self, group: GroupRef) -> Result<(), FileError> {
        if self.inner.conversations.group(group).await.is_none() {
            return Err(FileError::UnknownGroup);
        }
        Ok(())
    }

    /// Offers the file at `path` (on this node) to every member of `group`.
    pub async fn send_path_to_group(
        &self,
        group: GroupRef,
        path: &str,
        admin: bool,
    ) -> Result<TransferView, FileError> {
        self.check_group(group).await?;
        self.check_room().await?;
        let this = self.clone();
        let allowed = move |real: &std::path::Path| this.path_allowed(real, admin);
        let (name, prepared) = prepare::from_path(path, &allowed).await?;
        self.check_quota(&group.to_string(), prepared.layout.size())
            .await?;
        self.offer_to_group(group, name, prepared, Some(path.to_owned()))
            .await
    }

    /// Offers an uploaded file to every member of `group`.
    pub async fn send_upload_to_group(
        &self,
        group: GroupRef,
        upload: Upload,
    ) -> Result<TransferView, FileError> {
        self.check_group(group).await?;
        self.check_room().await?;
        let (name, prepared) = self.take_upload(&group.to_string(), upload).await?;
        self.offer_to_group(group, name, prepared, None).await
    }

    /// Records the group transfer (with the members who will fetch from here), then sends
    /// the offer into the group.
    async fn offer_to_group(
        &self,
        group: GroupRef,
        name: String,
        prepared: prepare::Prepared,
        source: Option<String>,
    ) -> Result<TransferView, FileError> {
        let now = Timestamp::now();
        let expires_at =
            now.saturating_add(std::time::Duration::from_secs(self.inner.config.keep_secs));
        let me = self.inner.identity.user_id();
        let members: Vec<String> = self
            .inner
            .conversations
            .group(group)
            .await
            .ok_or(FileError::UnknownGroup)?
            .members
            .iter()
            .map(|m| m.user)
            .filter(|u| *u != me && self.inner.peers.is_contact(u))
            .map(|u| u.to_string())
            .collect();
        let row = TransferRow {
            id: *prepared.id.as_bytes(),
            outgoing: true,
            peer: group.to_string(),
            device: None,
            name,
            size: prepared.layout.size(),
            chunk_size: prepared.layout.chunk_size(),
            list_hash: prepared.list.hash(),
            blake3: prepared.blake3,
            file_key: *prepared.key.as_bytes(),
            source,
            list: Some(prepared.list.to_bytes()),
            sealed_offer: None,
            state: "offered".into(),
            paused_here: false,
            paused_there: false,
            // The offer goes through the group's outbox, not as a transfer's own offer.
            delivered: true,
            notify: None,
            bytes_done: 0,
            error: None,
            created_at: now,
            expires_at,
            updated_at: now,
            chunk_ids_per_transfer: true,
            group: Some(group.to_string()),
        };
        self.inner.db.insert_group_transfer(&row, &members).await?;
        let offer = super::offer_content(&row)
            .ok_or_else(|| FileError::Invalid("the file's layout is not valid".into()))?;
        if let Err(e) = self.inner.messaging.send_group_offer(group, offer).await {
            // Not offered: nothing is left of it.
            let _ = self.inner.db.delete_transfer(&row.id).await;
            self.clean_up(&row);
            return Err(match e {
                crate::messaging::MessagingError::RateLimited(secs) => FileError::RateLimited(secs),
                crate::messaging::MessagingError::Group(
                    crate::conversations::GroupError::UnknownGroup,
                ) => FileError::UnknownGroup,
                other => FileError::Invalid(other.to_string()),
            });
        }
        self.inner.wake.notify_one();
        Ok(view(&self.row(prepared.id).await?))
    }

    /// Takes in a file offered to `group` by one of its members: an incoming transfer, to
    /// be fetched from the sender (a contact) or from the member who carries the group's
    /// mail here. `false` only when it could not be stored (the offer is then read again).
    pub(crate) async fn record_group_offer(&self, group: GroupRef, offer: FileOffer) -> bool {
        let sender = offer.sender;
        let device = self
            .inner
            .peers
            .is_contact(&sender)
            .then_some(offer.device)
            .flatten();
        match self
            .record_offer(device, sender, offer, Some(group.to_string()))
            .await
        {
            FileResponse::Ok | FileResponse::Refused(FileRefusal::Gone) => true,
            // Over a quota or a limit: the offer is not kept, but the group's mail goes on.
            FileResponse::Refused(FileRefusal::Busy) => {
                tracing::info!(%group, %sender, "a file offered to a group was not kept: too many transfers");
                true
            }
            other => {
                tracing::debug!(%group, ?other, "a file offered to a group was not stored");
                false
            }
        }
    }

    /// Whether `user` may fetch group transfer `t` from this node: a member of its group
    /// now, other than this user (and, for a file received here, other than its sender).
    pub(super) async fn may_fetch_group(&self, t: &TransferRow, user: UserId) -> bool {
        let Some(group) = &t.group else { return false };
        if user == self.inner.identity.user_id() || (!t.outgoing && t.peer == user.to_string()) {
            return false;
        }
        self.inner
            .conversations
            .group_users(group)
            .await
            .is_some_and(|users| users.contains(&user))
    }

    /// The devices to fetch incoming group transfer `t` from when its sender is not a
    /// contact: those of the member that carries the group's mail here (unless that is
    /// `not`).
    pub(super) async fn group_sources(
        &self,
        t: &TransferRow,
        not: Option<UserId>,
    ) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let (Some(group), Ok(sender)) = (&t.group, t.peer.parse::<UserId>()) else {
            return Vec::new();
        };
        let Some(carrier) = self.inner.conversations.carrier(group, &sender).await else {
            return Vec::new();
        };
        if Some(carrier) == not {
            return Vec::new();
        }
        let Ok((_, devices)) = self.recipient(carrier).await else {
            return Vec::new();
        };
        let mut targets: Vec<(PeerId, bool, Vec<Multiaddr>)> = self
            .inner
            .peers
            .dial_targets(&devices)
            .into_iter()
            .filter(|(_, connected, addrs)| *connected || !addrs.is_empty())
            .collect();
        // Connected devices first.
        targets.sort_by_key(|(_, connected, _)| !connected);
        targets.into_iter().map(|(p, _, a)| (p, a)).collect()
    }

    /// Where a group file this member passes on to `user` comes from: the first of its
    /// own sources (the sender, or the member that carries the group's mail here).
    async fn upstream(
        &self,
        t: &TransferRow,
        user: UserId,
    ) -> Result<(PeerId, Vec<Multiaddr>), Status> {
        let (_, sources) = self.sources(t, Some(user)).await;
        sources.into_iter().next().ok_or(Status::Busy)
    }

    /// The chunk list of a group file this member passes on to `user`.
    pub(super) async fn pass_on_list(
        &self,
        t: &TransferRow,
        user: UserId,
    ) -> Result<ChunkList, Status> {
        let (peer, addrs) = self.upstream(t, user).await?;
        self.list_from(t, peer, addrs).await
    }

    /// One chunk of a group file this member passes on to `user` without holding it:
    /// fetched from upstream, checked against its name, handed over, not kept.
    pub(super) async fn pass_on_chunk(
        &self,
        t: &TransferRow,
        user: UserId,
        index: u32,
    ) -> Result<Vec<u8>, Status> {
        let (peer, addrs) = self.upstream(t, user).await?;
        let list = self.list_from(t, peer, addrs.clone()).await?;
        let name = *list.get(index).ok_or(Status::Gone)?;
        // Each chunk costs a fetch upstream: a member gets each chunk of a file passed on a
        // few times at most (a retry after a failure), not again and again.
        {
            let mut passed = self
                .inner
                .passed_on
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if passed.len() > 4096 {
                passed.clear();
            }
            let count = passed.entry((t.id, user)).or_insert(0);
            if *count >= list.len().saturating_mul(2).saturating_add(16) {
                tracing::warn!(transfer = %TransferId::from_bytes(t.id), %user, "a member asked for more of a group file than it has chunks; passed on no more");
                return Err(Status::Gone);
            }
            *count += 1;
        }
        let layout = Layout::new(t.size, t.chunk_size).map_err(|_| Status::Gone)?;
        let id = TransferId::from_bytes(t.id);
        let request = wire::encode(&FileRequest::Chunk { id, index });
        match self.ask(peer, request, addrs).await {
            Some(FileResponse::Chunk(data)) if data.len() == layout.cipher_len(index) => {
                let (named, data) = tokio::task::spawn_blocking(move || {
                    (*blake3::hash(&data).as_bytes() == name, data)
                })
                .await
                .map_err(|_| Status::Busy)?;
                if !named {
                    tracing::warn!(transfer = %id, %peer, index, "a group file's chunk passed on to this node does not match its name");
                    return Err(Status::Busy);
                }
                Ok(data)
            }
            Some(FileResponse::Refused(FileRefusal::Gone | FileRefusal::Unknown)) => {
                Err(Status::Gone)
            }
            Some(FileResponse::Refused(FileRefusal::Cancelled)) => Err(Status::Cancelled),
            Some(FileResponse::Refused(FileRefusal::Paused)) => Err(Status::Paused),
            // Not reachable, busy, or a chunk that is not what its name says: the member
            // that asks tries again.
            _ => Err(Status::Busy),
        }
    }

    /// A member's word on group transfer `t` that this node offered: `done` counts it as
    /// having the file; the transfer completes once all who fetch from here have it.
    pub(super) async fn group_control(
        &self,
        mut t: TransferRow,
        user: UserId,
        action: FileAction,
    ) -> FileResponse {
        let id = TransferId::from_bytes(t.id);
        match action {
            FileAction::Done(hash) if hash == t.blake3 => {
                let members = match self
                    .inner
                    .db
                    .transfer_member_done(&t.id, &user.to_string())
                    .await
                {
                    Ok(Some(members)) => members,
                    Ok(None) => return FileResponse::Ok,
                    Err(_) => return FileResponse::Refused(FileRefusal::Busy),
                };
                if finished(&t.state) || !members.iter().all(|(_, done)| *done) {
                    return FileResponse::Ok;
                }
                t.state = "completed".into();
                t.bytes_done = t.size;
                t.updated_at = Timestamp::now();
                if self.inner.db.save_transfer(&t).await.is_err() {
                    return FileResponse::Refused(FileRefusal::Busy);
                }
                self.interrupt(id);
                self.clean_up(&t);
                self.progress(id, t.size, t.size);
                self.changed(&t);
                FileResponse::Ok
            }
            // One member's accept, decline, pause or cancel does not change what the others
            // fetch; a wrong hash is that member's own failure.
            _ => FileResponse::Ok,
        }
    }

    /// A group transfer this node offered, past the time it keeps the file: `completed`
    /// when some member reported having it (the others had as long as anyone), else not.
    pub(super) async fn expire_group(&self, t: &TransferRow) -> bool {
        if !t.outgoing || t.group.is_none() {
            return false;
        }
        let Ok(members) = self.inner.db.transfer_members(&t.id).await else {
            return false;
        };
        if !members.iter().any(|(_, done)| *done) {
            return false;
        }
        let _guard = self.inner.changes.lock().await;
        let Ok(mut t) = self.row(TransferId::from_bytes(t.id)).await else {
            return false;
        };
        if finished(&t.state) {
            return true;
        }
        t.state = "completed".into();
        t.bytes_done = t.size;
        t.updated_at = Timestamp::now();
        if self.inner.db.save_transfer(&t).await.is_err() {
            return false;
        }
        self.interrupt(TransferId::from_bytes(t.id));
        self.clean_up(&t);
        self.changed(&t);
        true
    }

    /// The members of group transfer `id` this node offered that fetch from here, with
    /// whether each has it whole.
    pub async fn group_fetched(&self, id: TransferId) -> Result<Vec<(String, bool)>, FileError> {
        Ok(self.inner.db.transfer_members(id.as_bytes()).await?)
    }
}
