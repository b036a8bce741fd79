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

use super::{FileError, Files, TransferView, Upload, finished, prepare};

impl Files {
    /// Lets the conversations layer hand over files offered to groups.
    pub(crate) fn take_group_offers(&self) {
        let this = self.clone();
        self.inner
            .conversations
            .take_group_offers(Arc::new(move |group, offer, meta| {
                let this = this.clone();
                Box::pin(async move { this.record_group_offer(group, offer, meta).await })
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
        let meta = super::FileMeta::of_name(&name);
        self.offer_to_group(group, name, prepared, Some(path.to_owned()), meta)
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
        let meta = upload
            .meta
            .clone()
            .unwrap_or_else(|| super::FileMeta::of_name(&upload.name));
        let (name, prepared) = self.take_upload(&group.to_string(), upload).await?;
        self.offer_to_group(group, name, prepared, None, meta).await
    }

    /// Records the group transfer (with the members who will fetch from here), then sends
    /// the offer into the group.
    async fn offer_to_group(
        &self,
        group: GroupRef,
        name: String,
        prepared: prepare::Prepared,
        source: Option<String>,
        meta: super::FileMeta,
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
        if let Err(e) = self
            .inner
            .messaging
            .send_group_offer(group, offer, &meta)
            .await
        {
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
        // The file, as an item of the group's conversation.
        self.put_file_item(
            crate::timeline::Where::Group(group),
            me,
            &row,
            &meta,
            volli_store::vault::MessageStatus::Queued,
        )
        .await;
        self.inner.wake.notify_one();
        self.get(prepared.id).await
    }

    /// Takes in a file offered to `group` by one of its members: an incoming transfer, to
    /// be fetched from the sender (a contact) or from the member who carries the group's
    /// mail here. `false` only when it could not be stored (the offer is then read again).
    pub(crate) async fn record_group_offer(
        &self,
        group: GroupRef,
        offer: FileOffer,
        meta: super::FileMeta,
    ) -> bool {
        let sender = offer.sender;
        let device = self
            .inner
            .peers
            .is_contact(&sender)
            .then_some(offer.device)
            .flatten();
        match self
            .record_offer(device, sender, offer, Some(group.to_string()), meta)
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

    /// A member's word on group transfer `t` that this node offered (an accept, a decline,
    /// a cancel, or `done`: it has the file whole). The transfer completes once every
    /// member who fetches from here has it or declined (declined, when all declined).
    pub(super) async fn group_control(
        &self,
        t: TransferRow,
        user: UserId,
        action: FileAction,
    ) -> FileResponse {
        let state = match action {
            FileAction::Done(hash) if hash == t.blake3 => "completed",
            FileAction::Accept => "running",
            FileAction::Decline => "declined",
            FileAction::Cancel => "cancelled",
            // A pause, or a wrong hash (that member's own failure), changes nothing here.
            _ => return FileResponse::Ok,
        };
        let members = match self
            .inner
            .db
            .transfer_member_state(&t.id, &user.to_string(), state)
            .await
        {
            Ok(Some(members)) => members,
            Ok(None) => return FileResponse::Ok,
            Err(_) => return FileResponse::Refused(FileRefusal::Busy),
        };
        self.changed(&t);
        if self.settle_group(&t, &members, false).await.is_err() {
            return FileResponse::Refused(FileRefusal::Busy);
        }
        FileResponse::Ok
    }

    /// Ends group transfer `t` (offered from here) when its members are done with it:
    /// `completed` once every member has it or declined it (with `expired`: once its time
    /// ran out, when any has it), `declined` when all declined.
    async fn settle_group(
        &self,
        t: &TransferRow,
        members: &[volli_store::TransferMember],
        expired: bool,
    ) -> Result<bool, FileError> {
        let has = |m: &volli_store::TransferMember| m.state == "completed";
        let out =
            |m: &volli_store::TransferMember| matches!(m.state.as_str(), "declined" | "cancelled");
        // Members who do not know this user fetch through one who does, until the file's
        // time runs out: a decline of the members who fetch from here does not end it then.
        let strangers = match &t.group {
            Some(group) => {
                let me = self.inner.identity.user_id().to_string();
                self.inner
                    .conversations
                    .group_users(group)
                    .await
                    .unwrap_or_default()
                    .iter()
                    .map(ToString::to_string)
                    .any(|u| u != me && !members.iter().any(|m| m.user_id == u))
            }
            None => false,
        };
        let answered = members.iter().all(|m| has(m) || out(m));
        let state = if !members.is_empty() && members.iter().all(has) {
            "completed"
        } else if !strangers && !members.is_empty() && answered {
            if members.iter().any(has) {
                "completed"
            } else {
                "declined"
            }
        } else if expired && members.iter().any(has) {
            "completed"
        } else {
            return Ok(false);
        };
        let _guard = self.inner.changes.lock().await;
        let id = TransferId::from_bytes(t.id);
        let mut t = self.row(id).await?;
        if finished(&t.state) {
            return Ok(true);
        }
        t.state = state.into();
        if state == "completed" {
            t.bytes_done = t.size;
        }
        t.updated_at = Timestamp::now();
        self.inner.db.save_transfer(&t).await?;
        self.interrupt(id);
        self.clean_up(&t);
        if state == "completed" {
            self.progress(id, t.size, t.size);
        }
        self.changed(&t);
        Ok(true)
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
        self.settle_group(t, &members, true).await.unwrap_or(false)
    }

    /// The members of group transfer `id` this node offered that fetch from here, with
    /// whether each has it whole.
    pub async fn group_fetched(
        &self,
        id: TransferId,
    ) -> Result<Vec<volli_store::TransferMember>, FileError> {
        Ok(self.inner.db.transfer_members(id.as_bytes()).await?)
    }
}
