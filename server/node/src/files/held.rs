//! Files through friends ([ADR 0022]): a file offered to a contact who is offline waits at
//! up to two friends' nodes the recipient designated as its relays (that are the sender's
//! contacts too), and the recipient fetches it from whichever is online when it comes back —
//! the sender may be offline by then.
//!
//! - **Depositing** (the sender): when an offer finds none of the recipient's devices, the
//!   sealed offer, the chunk list and every ciphertext chunk go to a holder over
//!   `/volli/hold/1` (`File`, then `FileChunk`s, resumable: the holder says which it has).
//!   A holder that refuses (over its `files.relay_bytes` for this sender, no space) is
//!   replaced by the next relay. The transfer's `via` lists the holders that have it whole.
//! - **Holding** (a friend): bounded per depositor, checked chunk by chunk against the list
//!   (it has no key: it cannot read the name or the content, nor alter a chunk unnoticed),
//!   kept in SQLite, swept at expiry, dropped when either contact is removed or when the
//!   recipient (or the sender) says it is done. It serves the list and the chunks over
//!   `/volli/file/1` to the recipient only.
//! - **Fetching** (the recipient): when a contact's device connects (or says files wait
//!   there), the recipient asks what is held for it, opens each offer as if its sender had
//!   made it (its signature, this user's keys), and fetches from the sender's device when it
//!   is online, from a holder otherwise; then tells the holders to drop it, and the sender
//!   that it completed (when it is next online).
//!
//! [ADR 0022]: ../../../../docs/adr/0022-files-through-friends.md

use std::time::Duration;

use volli_core::transfer::{ChunkList, Layout, SealedOffer, TransferId};
use volli_core::wire::{
    self, FileRefusal, FileRequest, FileResponse, HeldFile, HoldRequest, HoldResponse,
};
use volli_core::{ContactCard, PeerId, Timestamp, UserId};
use volli_net::Protocol;
use volli_store::{FileHold, HeldFileRow};

use super::{FileError, Files, REQUEST_TIMEOUT, prepare};

/// The setting that overrides `[files] relay_bytes`.
pub const RELAY_BYTES_SETTING: &str = "files.relay_bytes";
/// Friends a file is deposited with at most.
const HOLDERS: usize = 2;
/// Chunks on their way to a holder at once.
const PUSH_DEPTH: usize = 4;
/// Longest a friend holds a file (as for mail).
const MAX_HOLD: Duration = wire::MAX_TTL;
/// Files one contact may leave here at once.
const MAX_FILES_PER_DEPOSITOR: u64 = 256;
/// Held files listed per request at most, and their offers' bytes at most (what a response
/// may carry, less room for its framing).
const LIST_LIMIT: u32 = 64;
const LIST_BYTES: usize = 3 << 20;
/// Held files of one depositor listed per request at most.
const LIST_SHARE: u32 = 16;
/// Once a friend holds a file, how long before the others are asked again (those that
/// refused, or could not be reached).
const ASK_AGAIN: Duration = Duration::from_secs(600);
/// Largest sealed offer taken (an offer with a thumbnail inside its conversation's mail).
const MAX_OFFER: usize = 64 << 10;
/// Largest ticket (the recipient's contact card) taken.
const MAX_TICKET: usize = 32 << 10;
/// How long one hold request may take (a chunk of up to 4 MiB).
const HOLD_TIMEOUT: Duration = Duration::from_secs(60);
/// What all files held for contacts may take on this node at most (they live in its
/// database), whatever each contact is allowed.
const MAX_HELD_TOTAL: u64 = 4 << 30;
/// The least time between two askings of one friend for the files it holds for this user.
const ASK_SPACING: Duration = Duration::from_secs(2);
/// What a deposit refused for its recipient or its ticket says (one answer: it does not
/// tell who this node's contacts are).
const NOT_DESIGNATED: &str = "the recipient has not designated this node as a relay";

impl Files {
    /// What each contact may leave here for its contacts (`files.relay_bytes`, else
    /// `[files] relay_bytes`; 0: nothing).
    pub async fn relay_bytes(&self) -> u64 {
        match self.inner.vault.setting(RELAY_BYTES_SETTING).await {
            Ok(Some(value)) => value.as_u64().unwrap_or(self.inner.config.relay_bytes),
            _ => self.inner.config.relay_bytes,
        }
    }

    /// Held files: how many, their bytes, their recipients, the first expiry.
    pub async fn held_stats(
        &self,
    ) -> Result<(u64, u64, Vec<String>, Option<Timestamp>), volli_store::StoreError> {
        self.inner.db.held_files_stats().await
    }

    // ---- Holding -------------------------------------------------------------------------

    /// Answers a contact's `/volli/hold/1` request about files: ones it leaves here for
    /// another contact, or ones left here for it.
    pub async fn answer_hold(&self, user: UserId, request: HoldRequest) -> HoldResponse {
        match request {
            request @ HoldRequest::File { .. } => self.take_deposit(user, request).await,
            HoldRequest::FileChunk { id, index, bytes } => {
                self.take_chunk(user, id, index, bytes).await
            }
            HoldRequest::FilesHeld => self.files_held(user).await,
            HoldRequest::FileDone(id) => {
                match self
                    .inner
                    .db
                    .drop_held_file(id.as_bytes(), &user.to_string())
                    .await
                {
                    Ok(dropped) => {
                        if dropped {
                            tracing::info!(transfer = %id, "a file held for a contact was fetched or withdrawn; dropped");
                        }
                        HoldResponse::Ok
                    }
                    Err(e) => HoldResponse::Refused(format!("storage: {e}")),
                }
            }
            _ => HoldResponse::Refused("not a file request".into()),
        }
    }

    async fn take_deposit(&self, depositor: UserId, request: HoldRequest) -> HoldResponse {
        let refused = |m: &str| HoldResponse::Refused(m.to_owned());
        let HoldRequest::File {
            recipient,
            id,
            offer,
            ticket,
            size,
            chunk_size,
            list,
            expires_at,
        } = request
        else {
            return refused("not a deposit");
        };
        let allowed = self.relay_bytes().await;
        if allowed == 0 {
            return refused("this node holds no files for its contacts ([files] relay_bytes = 0)");
        }
        let me = self.inner.identity.user_id();
        if offer.len() > MAX_OFFER || ticket.len() > MAX_TICKET {
            return refused("the offer or the ticket is too large");
        }
        // The recipient's consent: the newer of its card handed over and the one this node
        // holds lists this node's user among its relays.
        let Ok(ticket) = ContactCard::from_bytes(&ticket) else {
            return refused(NOT_DESIGNATED);
        };
        let held = match self.inner.vault.contact(recipient).await {
            Ok(Some(c)) => c.card,
            _ => return refused(NOT_DESIGNATED),
        };
        let newest = if ticket.user_id() == recipient && ticket.issued_at() > held.issued_at() {
            ticket
        } else {
            held
        };
        if recipient == depositor || recipient == me || !newest.relays().contains(&me) {
            return refused(NOT_DESIGNATED);
        }
        // The offer is for that recipient, under that id, from the depositor (as far as its
        // clear header tells).
        let addressed = match SealedOffer::from_bytes(&offer) {
            Ok(sealed) => sealed.recipient() == recipient && sealed.id() == id,
            Err(_) => match volli_core::Mail::from_bytes(&offer) {
                Ok(volli_core::Mail::Mls(mail)) => {
                    mail.recipient == recipient
                        && mail.sender == depositor
                        && mail.id.as_bytes() == id.as_bytes()
                }
                _ => false,
            },
        };
        if !addressed {
            return refused("the offer is not one for that recipient under that id");
        }
        let Ok(layout) = Layout::new(size, chunk_size) else {
            return refused("not a file's layout");
        };
        if ChunkList::from_bytes(&layout, &list).is_err() {
            return refused("the chunk list does not fit the layout");
        }
        let now = Timestamp::now();
        let expires_at = expires_at.min(now.saturating_add(MAX_HOLD));
        if expires_at <= now {
            return refused("the offer has expired");
        }
        let bytes: u64 = (0..layout.chunks())
            .map(|i| layout.cipher_len(i) as u64)
            .sum();
        let row = HeldFileRow {
            id: *id.as_bytes(),
            depositor: depositor.to_string(),
            recipient: recipient.to_string(),
            offer,
            size,
            chunk_size,
            list,
            chunks: layout.chunks(),
            bytes,
            stored_at: now,
            expires_at,
        };
        match self
            .inner
            .db
            .hold_file(
                &row,
                allowed,
                MAX_FILES_PER_DEPOSITOR,
                MAX_HELD_TOTAL.min(self.inner.config.max_bytes),
            )
            .await
        {
            Ok(FileHold::Held(have)) => {
                self.inner.wake.notify_one();
                HoldResponse::FileHave(have)
            }
            Ok(FileHold::OverQuota { allowed, used }) => HoldResponse::OverQuota {
                offer: allowed,
                used,
            },
            Ok(FileHold::TooMany) => refused("too many files held for this contact"),
            Ok(FileHold::Taken) => refused("another file is held under that id"),
            Err(e) => HoldResponse::Refused(format!("storage: {e}")),
        }
    }

    async fn take_chunk(
        &self,
        depositor: UserId,
        id: TransferId,
        index: u32,
        bytes: Vec<u8>,
    ) -> HoldResponse {
        let refused = |m: &str| HoldResponse::Refused(m.to_owned());
        let held = match self.inner.db.held_file(id.as_bytes()).await {
            Ok(Some(h)) if h.depositor == depositor.to_string() => h,
            Ok(_) => return refused("no such file is held for this contact"),
            Err(e) => return HoldResponse::Refused(format!("storage: {e}")),
        };
        let Some((layout, list)) = layout_of(&held) else {
            return refused("not a file's layout");
        };
        let Some(name) = list.get(index) else {
            return refused("no such chunk");
        };
        if bytes.len() != layout.cipher_len(index) || blake3::hash(&bytes).as_bytes() != name {
            return refused("the chunk does not match its name");
        }
        match self
            .inner
            .db
            .hold_file_chunk(id.as_bytes(), &held.depositor, index, &bytes)
            .await
        {
            Ok(true) => {}
            Ok(false) => return refused("no such file is held for this contact"),
            Err(e) => return HoldResponse::Refused(format!("storage: {e}")),
        }
        // Whole now: its recipient, if connected, hears that a file waits here.
        if matches!(self.inner.db.held_file_chunks(id.as_bytes()).await, Ok(n) if n == u64::from(layout.chunks()))
            && let Ok(recipient) = held.recipient.parse::<UserId>()
        {
            let this = self.clone();
            tokio::spawn(async move { this.tell_held(recipient).await });
        }
        HoldResponse::Ok
    }

    /// Tells `recipient`'s connected devices that a file waits here.
    async fn tell_held(&self, recipient: UserId) {
        let payload = wire::encode(&FileRequest::Held);
        // Its current devices only (not one it revoked).
        for peer in self
            .inner
            .peers
            .connected_devices_of(&recipient)
            .into_iter()
            .filter(|p| self.inner.peers.contact_of(p) == Some(recipient))
        {
            let _ = self.ask(peer, payload.clone(), Vec::new()).await;
        }
    }

    async fn files_held(&self, recipient: UserId) -> HoldResponse {
        let held = match self
            .inner
            .db
            .held_files_for(&recipient.to_string(), Timestamp::now(), LIST_LIMIT * 4)
            .await
        {
            Ok(h) => h,
            Err(e) => return HoldResponse::Refused(format!("storage: {e}")),
        };
        let mut files = Vec::new();
        let mut bytes = 0;
        // No depositor fills the list: a share each.
        let mut per: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
        for h in held {
            if files.len() >= LIST_LIMIT as usize {
                break;
            }
            let share = per.entry(h.depositor.clone()).or_default();
            *share += 1;
            if *share > LIST_SHARE {
                continue;
            }
            let Ok(from) = h.depositor.parse() else {
                continue;
            };
            bytes += h.offer.len();
            if bytes > LIST_BYTES {
                break;
            }
            files.push(HeldFile {
                from,
                offer: h.offer,
            });
        }
        HoldResponse::HeldFiles(files)
    }

    /// The file held here for `user` under `id` (none when this node has a transfer of its
    /// own under that id: its own come first).
    /// `Err` when storage failed (the asker is told to try again, not that it is gone).
    pub(super) async fn held_for(
        &self,
        id: TransferId,
        user: UserId,
    ) -> Result<Option<HeldFileRow>, volli_store::StoreError> {
        if self.inner.db.transfer(id.as_bytes()).await?.is_some() {
            return Ok(None);
        }
        Ok(self
            .inner
            .db
            .held_file(id.as_bytes())
            .await?
            .filter(|h| h.recipient == user.to_string()))
    }

    /// Answers the recipient's `/volli/file/1` request for a file held here.
    pub(super) async fn serve_held(
        &self,
        peer: PeerId,
        held: &HeldFileRow,
        request: &FileRequest,
    ) -> FileResponse {
        match request {
            FileRequest::List(_) => FileResponse::List(held.list.clone()),
            FileRequest::Chunk { index, .. } => {
                match self.inner.db.held_file_chunk(&held.id, *index).await {
                    Ok(Some(bytes)) => {
                        self.throttle(bytes.len()).await;
                        self.pace_relayed(peer, bytes.len()).await;
                        FileResponse::Chunk(bytes)
                    }
                    Ok(None) => FileResponse::Refused(FileRefusal::Gone),
                    Err(_) => FileResponse::Refused(FileRefusal::Busy),
                }
            }
            // Held files travel over libp2p only (a holder opens no bulk channel for them);
            // the holder is told when the recipient is done.
            _ => FileResponse::Refused(FileRefusal::Invalid(
                "a held file is fetched chunk by chunk".into(),
            )),
        }
    }

    /// Drops held files past their expiry.
    pub(super) async fn expire_held(&self) {
        match self.inner.db.expire_held_files(Timestamp::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(files = n, "expired files held for contacts"),
            Err(e) => tracing::warn!(error = %e, "cannot sweep the files held for contacts"),
        }
    }

    /// `user` is no longer a contact: nothing is held for or from it any more.
    pub async fn forget_held(&self, user: UserId) {
        match self.inner.db.drop_held_files_of(&user.to_string()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                files = n,
                "dropped the files held for or from a removed contact"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot drop a removed contact's held files"),
        }
    }

    // ---- Depositing ----------------------------------------------------------------------

    /// Deposits outgoing transfer `id` (an offer none of the recipient's devices took) with
    /// up to [`HOLDERS`] of the recipient's relays, once at a time.
    pub(super) fn deposit_soon(&self, id: TransferId) {
        {
            let mut depositing = lock(&self.inner.depositing);
            match depositing.get(&id) {
                // Under way, or held by a friend a short while ago.
                Some(None) => return,
                Some(Some(at)) if at.elapsed() < ASK_AGAIN => return,
                _ => {}
            }
            if depositing.len() > 4096 {
                depositing.retain(|_, at| at.is_none());
            }
            depositing.insert(id, None);
        }
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = this.deposit(id).await;
            if let Err(e) = &outcome {
                tracing::debug!(transfer = %id, error = %e, "file not deposited with a friend (yet)");
            }
            let mut depositing = lock(&this.inner.depositing);
            match outcome {
                Ok(true) => depositing.insert(id, Some(std::time::Instant::now())),
                _ => depositing.remove(&id),
            };
        });
    }

    /// Deposits transfer `id`; whether a friend holds it whole.
    async fn deposit(&self, id: TransferId) -> Result<bool, String> {
        let t = self.row(id).await.map_err(|e| e.to_string())?;
        if !t.outgoing || t.group.is_some() || t.state != "offered" || t.delivered {
            return Ok(false);
        }
        let to: UserId = t.peer.parse().map_err(|_| "not a user")?;
        let me = self.inner.identity.user_id();
        if to == me {
            return Ok(false);
        }
        let contact = self
            .inner
            .vault
            .contact(to)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("not a contact")?;
        let holders = self
            .inner
            .db
            .transfer_holders(&t.id)
            .await
            .map_err(|e| e.to_string())?;
        let mut held = holders.iter().filter(|(_, h)| *h).count();
        let relays: Vec<UserId> = contact
            .card
            .relays()
            .iter()
            .copied()
            .filter(|r| *r != me && *r != to && self.inner.peers.is_contact(r))
            .filter(|r| !holders.iter().any(|(u, h)| *h && *u == r.to_string()))
            .collect();
        if relays.is_empty() && held == 0 {
            return Err("the recipient designated no relay that is a contact".into());
        }
        let layout = Layout::new(t.size, t.chunk_size).map_err(|e| e.to_string())?;
        let list = t.list.clone().ok_or("the transfer has no chunk list")?;
        let offer = t.sealed_offer.clone().ok_or("the transfer has no offer")?;
        for relay in relays {
            if held >= HOLDERS {
                break;
            }
            let request = HoldRequest::File {
                recipient: to,
                id,
                offer: offer.clone(),
                ticket: contact.card.to_bytes(),
                size: t.size,
                chunk_size: t.chunk_size,
                list: list.clone(),
                expires_at: t.expires_at,
            };
            let have = match self.ask_hold(relay, &request).await {
                Ok(HoldResponse::FileHave(have)) => have,
                Ok(other) => {
                    tracing::info!(transfer = %id, %relay, answer = ?other, "a friend does not hold the file; trying the next");
                    continue;
                }
                Err(e) => {
                    tracing::debug!(transfer = %id, %relay, error = %e, "a friend cannot be asked to hold the file");
                    continue;
                }
            };
            let _ = self
                .inner
                .db
                .set_transfer_holder(&t.id, &relay.to_string(), false)
                .await;
            match self.push_chunks(&t, &layout, relay, &have).await {
                Ok(()) => {
                    let _ = self
                        .inner
                        .db
                        .set_transfer_holder(&t.id, &relay.to_string(), true)
                        .await;
                    held += 1;
                    tracing::info!(transfer = %id, %relay, "the file waits at a friend's node for its offline recipient");
                    if let Ok(t) = self.row(id).await {
                        self.changed(&t);
                    }
                }
                Err(e) => {
                    tracing::info!(transfer = %id, %relay, error = %e, "depositing the file with a friend stopped");
                }
            }
        }
        Ok(held > 0)
    }

    /// Sends the chunks of `t` that `relay` does not have yet.
    async fn push_chunks(
        &self,
        t: &volli_store::TransferRow,
        layout: &Layout,
        relay: UserId,
        have: &[u32],
    ) -> Result<(), String> {
        let id = TransferId::from_bytes(t.id);
        let list = ChunkList::from_bytes(layout, t.list.as_deref().unwrap_or_default())
            .map_err(|e| e.to_string())?;
        // What the holder says it has, within the file (it may say anything).
        let mut held = vec![false; layout.chunks() as usize];
        for i in have {
            if let Some(h) = held.get_mut(*i as usize) {
                *h = true;
            }
        }
        let mut done = held.iter().filter(|h| **h).count() as u64;
        let chunks = u64::from(layout.chunks());
        let mut todo = (0..layout.chunks()).filter(|i| !held[*i as usize]);
        // A few chunks on their way at once: one at a time would wait a round trip each.
        let mut sending = futures::stream::FuturesUnordered::new();
        loop {
            while sending.len() < PUSH_DEPTH {
                let Some(index) = todo.next() else { break };
                // Taken or cancelled meanwhile: the rest is not needed.
                match self.row(id).await {
                    Ok(now) if now.state == "offered" && !now.delivered => {}
                    _ => return Err("the offer was taken or ended meanwhile".into()),
                }
                let bytes = self.cipher_chunk(t, layout, &list, index).await?;
                self.throttle(bytes.len()).await;
                let request = HoldRequest::FileChunk { id, index, bytes };
                sending.push(async move { self.ask_hold(relay, &request).await });
            }
            let Some(answer) = futures::StreamExt::next(&mut sending).await else {
                return Ok(());
            };
            match answer {
                Ok(HoldResponse::Ok) => {}
                Ok(other) => return Err(format!("refused: {other:?}")),
                Err(e) => return Err(e),
            }
            done += 1;
            self.inner
                .events
                .publish(crate::events::Event::TransferProgress {
                    id: id.to_string(),
                    bytes_done: t.size.saturating_mul(done) / chunks.max(1),
                    size: t.size,
                });
        }
    }

    /// Ciphertext chunk `index` of outgoing transfer `t`, checked against its name.
    async fn cipher_chunk(
        &self,
        t: &volli_store::TransferRow,
        layout: &Layout,
        list: &ChunkList,
        index: u32,
    ) -> Result<Vec<u8>, String> {
        let name = *list.get(index).ok_or("no such chunk")?;
        let data = match &t.source {
            Some(path) => {
                let file = std::fs::File::open(path)
                    .map_err(|e| format!("the file is no longer readable at {path}: {e}"))?;
                let (layout, key) = (
                    *layout,
                    volli_core::transfer::FileKey::from_bytes(t.file_key),
                );
                tokio::task::spawn_blocking(move || {
                    prepare::read_chunk(&layout, &key, Some(&file), index)
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?
            }
            None => {
                let backend = self.backend().map_err(|e| e.to_string())?;
                backend
                    .get(
                        &super::ChunkIds::of(t).id(&name),
                        0,
                        u32::try_from(layout.cipher_len(index)).unwrap_or(u32::MAX),
                    )
                    .await
                    .map_err(|e| e.to_string())?
            }
        };
        if blake3::hash(&data).as_bytes() != &name {
            return Err("the file changed after it was offered".into());
        }
        Ok(data)
    }

    /// One `/volli/hold/1` request to any device of contact `user`, connected ones first.
    async fn ask_hold(&self, user: UserId, request: &HoldRequest) -> Result<HoldResponse, String> {
        let contact = self
            .inner
            .vault
            .contact(user)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("not a contact")?;
        let payload = wire::encode(request);
        // A chunk shares the link with the others on their way: room for all of them at a
        // slow uplink's pace (64 KiB/s).
        let timeout = match request {
            HoldRequest::FileChunk { bytes, .. } => {
                HOLD_TIMEOUT + Duration::from_secs((PUSH_DEPTH * bytes.len()) as u64 >> 16)
            }
            _ => HOLD_TIMEOUT,
        };
        let outbound = &self.inner.outbound;
        outbound
            .ask_any(&contact.devices, true, |peer, addrs| {
                outbound.call(peer, Protocol::Hold, payload.clone(), addrs, timeout)
            })
            .await
    }

    /// Tells the friends holding transfer `id` that it is done with (fetched, or withdrawn).
    pub(super) fn release_holders(&self, id: TransferId) {
        let this = self.clone();
        tokio::spawn(async move {
            let Ok(holders) = this.inner.db.transfer_holders(id.as_bytes()).await else {
                return;
            };
            for (user, _) in holders {
                let Ok(holder) = user.parse::<UserId>() else {
                    continue;
                };
                match this.ask_hold(holder, &HoldRequest::FileDone(id)).await {
                    Ok(HoldResponse::Ok) => {
                        let _ = this
                            .inner
                            .db
                            .remove_transfer_holder(id.as_bytes(), &user)
                            .await;
                    }
                    other => {
                        tracing::debug!(transfer = %id, %holder, answer = ?other, "a holder was not told the file is done (told again when it is next connected)");
                    }
                }
            }
        });
    }

    /// Contact `holder` is connected: the transfers it held that are over since, and that it
    /// was not told of (it was away then), it may let go now — what it lends this user is
    /// freed before the files expire there.
    pub(super) async fn release_to(&self, holder: UserId) {
        let Ok(ids) = self
            .inner
            .db
            .finished_transfers_held_by(&holder.to_string())
            .await
        else {
            return;
        };
        for id in ids {
            let id = TransferId::from_bytes(id);
            if let Ok(HoldResponse::Ok) = self.ask_hold(holder, &HoldRequest::FileDone(id)).await {
                let _ = self
                    .inner
                    .db
                    .remove_transfer_holder(id.as_bytes(), &holder.to_string())
                    .await;
            }
        }
    }

    // ---- Fetching ------------------------------------------------------------------------

    /// Asks contact `holder` which files it holds for this user, and takes their offers:
    /// one asking per holder at a time, [`ASK_SPACING`] apart (what is asked meanwhile makes
    /// one more round).
    pub(super) async fn fetch_held(&self, holder: UserId) {
        {
            let mut asking = lock(&self.inner.asking_holders);
            if let Some(again) = asking.get_mut(&holder) {
                *again = true;
                return;
            }
            asking.insert(holder, false);
        }
        loop {
            let started = std::time::Instant::now();
            self.fetch_held_once(holder).await;
            tokio::time::sleep(ASK_SPACING.saturating_sub(started.elapsed())).await;
            let mut asking = lock(&self.inner.asking_holders);
            match asking.get_mut(&holder) {
                Some(again) if *again => *again = false,
                _ => {
                    asking.remove(&holder);
                    return;
                }
            }
        }
    }

    async fn fetch_held_once(&self, holder: UserId) {
        let files = match tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.ask_hold(holder, &HoldRequest::FilesHeld),
        )
        .await
        {
            Ok(Ok(HoldResponse::HeldFiles(files))) => files,
            _ => return,
        };
        for f in files {
            match self.take_held_offer(holder, &f).await {
                Ok(()) => {}
                Err(Taken::Later(e)) => {
                    tracing::debug!(%holder, error = %e, "a held file's offer was not taken (yet)");
                }
                // Not one this user takes, ever: the holder need not keep it.
                Err(Taken::Never(e, id)) => {
                    tracing::info!(%holder, error = %e, "a held file's offer was refused");
                    if let Some(id) = id {
                        let _ = self.ask_hold(holder, &HoldRequest::FileDone(id)).await;
                    }
                }
            }
        }
    }

    async fn take_held_offer(&self, holder: UserId, f: &HeldFile) -> Result<(), Taken> {
        let me = self.inner.identity.user_id();
        let never = |e: &str, id: Option<TransferId>| Taken::Never(e.to_owned(), id);
        // The transfer's id (to record the holder before the offer: an offer accepted at
        // once starts fetching from it), and what the offer says of itself.
        let (id, opened) = if let Ok(sealed) = SealedOffer::from_bytes(&f.offer) {
            match sealed.open(me, &self.inner.identity.keyring()) {
                Ok(offer) => (offer.id, Some(offer)),
                Err(e) => return Err(never(&e.to_string(), Some(sealed.id()))),
            }
        } else {
            match volli_core::Mail::from_bytes(&f.offer) {
                Ok(volli_core::Mail::Mls(mail))
                    if mail.recipient == me && mail.sender == f.from =>
                {
                    (TransferId::from_bytes(*mail.id.as_bytes()), None)
                }
                _ => return Err(never("not an offer from its depositor to this user", None)),
            }
        };
        if !self.inner.peers.is_contact(&f.from) || f.from == me {
            return Err(never("from someone who is not a contact", Some(id)));
        }
        if let Some(o) = &opened
            && o.sender != f.from
        {
            return Err(never(
                "an offer from someone else than its depositor",
                Some(id),
            ));
        }
        if lock(&self.inner.dropped_holders).contains(&(id, holder)) {
            return Ok(());
        }
        let known = match self.inner.db.transfer(id.as_bytes()).await {
            Ok(known) => known,
            Err(e) => return Err(Taken::Later(e.to_string())),
        };
        if let Some(t) = known {
            // Known already (an offer its sender delivered, or another holder's): the same
            // transfer, from the same sender, or nothing.
            let same = !t.outgoing
                && t.group.is_none()
                && t.peer == f.from.to_string()
                && opened
                    .as_ref()
                    .is_none_or(|o| o.list == t.list_hash && o.blake3 == t.blake3);
            if !same {
                return Err(never("another transfer has that id", Some(id)));
            }
            if super::finished(&t.state) {
                return Err(never("the transfer is over", Some(id)));
            }
            self.inner
                .db
                .set_transfer_holder(id.as_bytes(), &holder.to_string(), true)
                .await
                .map_err(|e| Taken::Later(e.to_string()))?;
            if let Some(h) = self.lock_downloads().get(&id) {
                h.wake.notify_one();
            }
            return Ok(());
        }
        self.inner
            .db
            .set_transfer_holder(id.as_bytes(), &holder.to_string(), true)
            .await
            .map_err(|e| Taken::Later(e.to_string()))?;
        match self.take_offer(None, f.from, &f.offer).await {
            FileResponse::Ok => {
                tracing::info!(transfer = %id, %holder, "a file waits at a friend's node for this user");
                Ok(())
            }
            other => {
                // Taken meanwhile from another holder's listing of the same offer: the same
                // transfer, held here too.
                if let Ok(Some(t)) = self.inner.db.transfer(id.as_bytes()).await
                    && !t.outgoing
                    && t.peer == f.from.to_string()
                {
                    return Ok(());
                }
                let _ = self
                    .inner
                    .db
                    .remove_transfer_holder(id.as_bytes(), &holder.to_string())
                    .await;
                match other {
                    // Past its time: nobody will take it.
                    FileResponse::Refused(FileRefusal::Gone) => {
                        Err(never("the offer has expired", Some(id)))
                    }
                    // Not now (a conversation's commit on its way, a device of its sender's
                    // not known here yet, no room): asked again at the next listing.
                    other => Err(Taken::Later(format!("{other:?}"))),
                }
            }
        }
    }

    /// The holders' connected devices to fetch incoming transfer `t` from, then the others.
    pub(super) async fn holder_sources(
        &self,
        t: &volli_store::TransferRow,
    ) -> Vec<(PeerId, Vec<multiaddr::Multiaddr>, bool, UserId)> {
        let Ok(holders) = self.inner.db.transfer_holders(&t.id).await else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (user, held) in holders {
            let Ok(user) = user.parse::<UserId>() else {
                continue;
            };
            if !held {
                continue;
            }
            let Ok(Some(contact)) = self.inner.vault.contact(user).await else {
                continue;
            };
            for (peer, connected, addrs) in self.inner.peers.dial_targets(&contact.devices) {
                if connected || !addrs.is_empty() {
                    out.push((peer, addrs, connected, user));
                }
            }
        }
        out.sort_by_key(|(_, _, connected, _)| !connected);
        out
    }

    /// Stops asking `holder` for transfer `id` (it could not give it): in this run it is
    /// not taken again from its listing.
    pub(super) async fn drop_holder(&self, id: TransferId, holder: UserId) {
        {
            let mut dropped = lock(&self.inner.dropped_holders);
            if dropped.len() > 4096 {
                dropped.clear();
            }
            dropped.insert((id, holder));
        }
        let _ = self
            .inner
            .db
            .remove_transfer_holder(id.as_bytes(), &holder.to_string())
            .await;
    }

    /// The user ids of the friends that hold transfer `id` whole (a transfer's `via`).
    pub(super) async fn via(&self, id: TransferId) -> Result<Vec<String>, FileError> {
        Ok(self
            .inner
            .db
            .transfer_holders(id.as_bytes())
            .await?
            .into_iter()
            .filter(|(_, held)| *held)
            .map(|(u, _)| u)
            .collect())
    }
}

/// Why a held offer was not taken.
enum Taken {
    /// Worth asking again later.
    Later(String),
    /// Never (the holder may drop the file, by its id when known).
    Never(String, Option<TransferId>),
}

fn layout_of(h: &HeldFileRow) -> Option<(Layout, ChunkList)> {
    let layout = Layout::new(h.size, h.chunk_size).ok()?;
    let list = ChunkList::from_bytes(&layout, &h.list).ok()?;
    Some((layout, list))
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
