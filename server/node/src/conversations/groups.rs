//! Group conversations on the same MLS layer (ADR 0018): the roster (users, roles, who
//! brought whom in) and the name live in the group context and change only by the
//! committer's commits; other admins send their changes to the committer as requests inside
//! the group, which it applies in the order they arrive. Mail to a member this user does not
//! know is carried by a member who is that member's contact (its sponsor, or whom it
//! sponsors), so nobody reaches a stranger's node or relays.

use volli_mls::{GroupChange, Role};

use super::*;

/// A member hands the committer its user's new devices' key packages at most this often
/// per device and group (the committer may still be busy adding them).
const HAND_OVER_EVERY: Duration = Duration::from_secs(600);
/// Requests the committer takes from one member device per minute at most (each may cost a
/// commit and its fan-out to every member).
const REQUESTS_PER_MINUTE: usize = 10;
/// What starts a group request of this release: the change, and the evidence beside it.
const REQUEST_MAGIC: &[u8] = b"VR2";

/// A member's request to the committer, as this release writes it (an earlier one wrote the
/// change alone): the change, signed revocations it hands over, and for an added user the
/// note of the member who brought it in.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct RequestBody {
    change: Option<GroupChange>,
    revocations: Vec<Vec<u8>>,
    sponsor_note: Option<Vec<u8>>,
}

impl RequestBody {
    fn encode(&self) -> Result<Vec<u8>, GroupError> {
        let mut out = REQUEST_MAGIC.to_vec();
        out.extend(postcard::to_allocvec(self).map_err(|e| GroupError::Invalid(e.to_string()))?);
        Ok(out)
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        match bytes.strip_prefix(REQUEST_MAGIC) {
            Some(rest) => match postcard::take_from_bytes::<Self>(rest) {
                Ok((body, [])) => Some(body),
                _ => None,
            },
            None => Some(Self {
                change: Some(postcard::from_bytes(bytes).ok()?),
                ..Self::default()
            }),
        }
    }
}

/// The vault key a group's messages are stored under: an Ed25519 public key derived from
/// the group id, used as the conversation's key and for nothing else.
pub fn conversation_key(group: &GroupRef) -> UserId {
    let mut seed = blake3::derive_key("volli/group-conversation/1", &group.0);
    let secret = libp2p_identity::ed25519::SecretKey::try_from_bytes(&mut seed)
        .unwrap_or_else(|_| unreachable!("32 bytes are an Ed25519 secret key"));
    let public = libp2p_identity::ed25519::Keypair::from(secret)
        .public()
        .to_bytes();
    UserId::from_bytes(public)
        .unwrap_or_else(|_| unreachable!("an Ed25519 public key is a user id"))
}

/// The mail id of group message `message` for member `recipient` (each member's copy is its
/// own outbox row): reversible, given the recipient.
pub fn mail_id(message: MessageId, recipient: &UserId) -> MessageId {
    let mask = blake3::hash(recipient.as_bytes());
    let mut id = *message.as_bytes();
    for (b, m) in id.iter_mut().zip(mask.as_bytes()) {
        *b ^= m;
    }
    MessageId::from_bytes(id)
}

/// Parses a group id (32 hex digits).
pub fn parse_group(id: &str) -> Option<GroupRef> {
    if id.len() != 32 || !id.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(id.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(GroupRef(out))
}

/// A group as the API shows it.
#[derive(Clone, Debug)]
pub struct GroupView {
    /// Its id.
    pub id: GroupRef,
    /// Its name.
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// Its users, with their roles and member devices.
    pub members: Vec<MemberView>,
    /// The group's epoch.
    pub epoch: u64,
    /// The device that commits.
    pub committer: Option<PeerId>,
}

/// A member as the API shows it.
#[derive(Clone, Debug)]
pub struct MemberView {
    /// The user.
    pub user: UserId,
    /// Its role.
    pub role: Role,
    /// Its devices in the group (none yet: they join when their key packages arrive).
    pub devices: Vec<PeerId>,
    /// The member who brought it in.
    pub sponsor: Option<UserId>,
}

/// Why a group operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// No such group on this device.
    #[error("no such group")]
    UnknownGroup,
    /// Only an admin may do that.
    #[error("only an admin of the group may do that")]
    NotAdmin,
    /// The user is not a member.
    #[error("{0} is not a member of the group")]
    UnknownMember(UserId),
    /// A user to add is not a contact.
    #[error("{0} is not a contact")]
    UnknownContact(UserId),
    /// The group is full.
    #[error("{0}")]
    Full(String),
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// The conversation layer failed.
    #[error(transparent)]
    Conversation(#[from] ConversationError),
}

impl From<volli_store::StoreError> for GroupError {
    fn from(e: volli_store::StoreError) -> Self {
        Self::Conversation(e.into())
    }
}

impl From<MlsError> for GroupError {
    fn from(e: MlsError) -> Self {
        match e {
            MlsError::UnknownGroup => Self::UnknownGroup,
            MlsError::Refused(reason) if reason.contains("at most") => Self::Full(reason),
            MlsError::Refused(reason) if reason.contains("only an admin") => Self::NotAdmin,
            MlsError::Refused(reason) => Self::Invalid(reason),
            e => Self::Conversation(e.into()),
        }
    }
}

/// The next member on the way to `to` in `info`'s group, for `me`: `to` itself when it is a
/// contact, else a member who is a contact of `me` and nearer to `to` along the sponsor tree
/// (every member is a contact of its sponsor), else `me`'s own sponsor.
pub(super) fn next_hop(
    info: &Info,
    me: &UserId,
    to: &UserId,
    is_contact: &dyn Fn(&UserId) -> bool,
) -> Option<UserId> {
    if is_contact(to) {
        return Some(*to);
    }
    let roster = info.roster();
    let sponsor = |u: &UserId| roster.iter().find(|m| m.user == *u).and_then(|m| m.sponsor);
    // `to`'s line up to the group's root, nearest first.
    let mut line = vec![*to];
    while let Some(up) = line.last().and_then(sponsor) {
        if line.contains(&up) || line.len() > roster.len() {
            break;
        }
        line.push(up);
    }
    // Those `to` brought in are its contacts too.
    let below = roster
        .iter()
        .filter(|m| m.sponsor == Some(*to))
        .map(|m| m.user);
    if let Some(hop) = below
        .chain(line.iter().skip(1).copied())
        .find(|u| is_contact(u))
    {
        return Some(hop);
    }
    if let Some(at) = line.iter().position(|u| u == me)
        && at > 0
    {
        return Some(line[at - 1]);
    }
    sponsor(me).filter(|s| is_contact(s))
}

impl Conversations {
    fn view(mls: &mut Mls, group: GroupRef, info: &Info) -> GroupView {
        let devices = mls.members(&group).unwrap_or_default();
        GroupView {
            id: group,
            name: info.name().unwrap_or_default().to_owned(),
            created_at: Timestamp::from_millis(info.created_ms),
            members: info
                .roster()
                .iter()
                .map(|m| MemberView {
                    user: m.user,
                    role: m.role,
                    devices: devices
                        .iter()
                        .filter(|d| d.user == m.user)
                        .map(|d| d.peer)
                        .collect(),
                    sponsor: m.sponsor,
                })
                .collect(),
            epoch: mls.epoch(&group).unwrap_or(0),
            committer: mls.committer(&group).ok().flatten().map(|m| m.peer),
        }
    }

    /// Every group this device is in, oldest first.
    pub async fn groups(&self) -> Vec<GroupView> {
        let mut mls = self.inner.mls.lock().await;
        let mut out: Vec<GroupView> = mls
            .groups()
            .into_iter()
            .filter(|(_, info)| info.is_group())
            .map(|(g, info)| Self::view(&mut mls, g, &info))
            .collect();
        out.sort_by_key(|g| (g.created_at, g.id));
        out
    }

    /// The ids of the groups this device is in (what [`Self::groups`] lists, without their
    /// members).
    pub async fn group_ids(&self) -> Vec<GroupRef> {
        let mls = self.inner.mls.lock().await;
        mls.groups()
            .into_iter()
            .filter(|(_, info)| info.is_group())
            .map(|(g, _)| g)
            .collect()
    }

    /// Group `id`, if this device is in it.
    pub async fn group(&self, id: GroupRef) -> Option<GroupView> {
        let mut mls = self.inner.mls.lock().await;
        let info = mls.info(&id).filter(Info::is_group)?;
        Some(Self::view(&mut mls, id, &info))
    }

    /// Creates group `name` with `members` (contacts of this user): their devices whose key
    /// packages are held join at once, the others as soon as theirs arrive.
    pub async fn create_group(
        &self,
        name: &str,
        members: &[UserId],
    ) -> Result<GroupView, GroupError> {
        if !self.messaging() {
            return Err(GroupError::Invalid(
                "this device does not take part in conversations".into(),
            ));
        }
        let me = self.me();
        self.refresh_directory().await;
        let directory = self.directory();
        for user in members {
            if *user != me && !directory.contacts.contains_key(user) {
                return Err(GroupError::UnknownContact(*user));
            }
        }
        let others: Vec<UserId> = members.iter().copied().filter(|u| *u != me).collect();
        // What each member's node reads decides what its Welcome carries.
        for user in &others {
            self.learn_features(*user, false).await;
        }
        let info = Info::group(me, name.trim(), &others, now_ms());
        let mut mls = self.inner.mls.lock().await;
        let mut packages = Vec::new();
        for user in std::iter::once(me).chain(others.iter().copied()) {
            for peer in directory.messaging_devices(&user) {
                if peer == self.inner.identity.peer_id() {
                    continue;
                }
                if let Some(p) = self.take_package(&mls, user, peer).await {
                    packages.push(p);
                }
            }
        }
        let created = mls.create(info.clone(), packages, &directory, now_ms())?;
        // This user brought every other member in (and its own other devices): its note
        // goes beside their Welcomes.
        for user in others.iter().chain(std::iter::once(&me)) {
            if let Some(note) = mls.sponsor_note(&created.group, *user) {
                mls.keep_sponsor_note(&created.group, user, note);
            }
        }
        let durable = self.inner.vault.mls_queued(mls.take_changes()).await?;
        let group_hex = created.group.to_string();
        tracing::info!(group = %created.group, devices = created.added.len(), "created a group");
        let mut entries = Vec::new();
        if let Some(welcome) = &created.welcome {
            for member in &created.added {
                let mut messages = vec![welcome.clone()];
                if self.reads_notes(&member.user) {
                    messages.extend(mls.kept_sponsor_note(&created.group, &member.user));
                }
                let mut entry = self.handshake(member, MailKind::Welcome, messages)?;
                entry.group = Some(group_hex.clone());
                entries.push(entry);
            }
        }
        let view = Self::view(&mut mls, created.group, &info);
        drop(mls);
        self.send_after(durable, entries).await?;
        self.inner.events.publish(Event::GroupCreated {
            group: group_hex,
            name: view.name.clone(),
        });
        // Devices without key packages yet join at the committer's next round.
        self.inner.work.notify_one();
        Ok(view)
    }

    /// Applies `change` to group `id` as this user: committed at once when this device
    /// commits, otherwise sent to the committer, which applies it (the answer shows the
    /// group as it is until then).
    pub async fn change_group(
        &self,
        id: GroupRef,
        change: GroupChange,
    ) -> Result<GroupView, GroupError> {
        let me = self.me();
        if let GroupChange::Add(user) = &change {
            self.learn_features(*user, false).await;
        }
        self.refresh_directory().await;
        let directory = self.directory();
        let mut mls = self.inner.mls.lock().await;
        let info = mls
            .info(&id)
            .filter(Info::is_group)
            .ok_or(GroupError::UnknownGroup)?;
        if let GroupChange::Remove(user) | GroupChange::Role(user, _) = &change
            && !info.includes(user)
        {
            return Err(GroupError::UnknownMember(*user));
        }
        let next = info.changed(&me, &change)?;
        if let GroupChange::Add(user) = &change
            && !directory.contacts.contains_key(user)
        {
            return Err(GroupError::UnknownContact(*user));
        }
        // The added user's devices: key packages this user holds for them.
        let mut packages = Vec::new();
        if let GroupChange::Add(user) = &change {
            for peer in directory.messaging_devices(user) {
                if let Some(p) = self.take_package(&mls, *user, peer).await {
                    packages.push(p);
                }
            }
        }
        let _ = next;
        // The note that this user brings the added user in, for its Welcome.
        let note = match &change {
            GroupChange::Add(user) => mls.sponsor_note(&id, *user),
            _ => None,
        };
        if mls.is_committer(&id)? {
            if let (GroupChange::Add(user), Some(note)) = (&change, &note) {
                mls.keep_sponsor_note(&id, user, note.clone());
            }
            self.commit_change(&mut mls, &id, me, &change, packages, &directory)
                .await?;
            let now = mls.info(&id).unwrap_or(info);
            return Ok(Self::view(&mut mls, id, &now));
        }
        let Some(committer) = mls.committer(&id)? else {
            return Err(GroupError::Invalid("the group has no committer".into()));
        };
        let view = Self::view(&mut mls, id, &info);
        let packages = packages.into_iter().map(|p| p.bytes).collect();
        let body = RequestBody {
            change: Some(change),
            sponsor_note: note,
            ..RequestBody::default()
        };
        self.request_change(&mut mls, &id, &committer, &body, packages)
            .await?;
        Ok(view)
    }

    /// Asks `committer` to commit `change` in group `id` (with key packages for the devices
    /// it adds): a request sealed in the group, for the committer's device only.
    async fn request_change(
        &self,
        mls: &mut Mls,
        id: &GroupRef,
        committer: &Member,
        body: &RequestBody,
        packages: Vec<Vec<u8>>,
    ) -> Result<(), GroupError> {
        let request_id = MessageId::random().map_err(|e| GroupError::Invalid(e.to_string()))?;
        let content = Content::GroupRequest {
            id: request_id,
            change: body.encode()?,
            packages,
        };
        let plaintext = content
            .to_padded()
            .map_err(|e| GroupError::Invalid(e.to_string()))?;
        let sealed = mls.encrypt(id, &plaintext)?;
        let durable = self.inner.vault.mls_queued(mls.take_changes()).await?;
        let mail = Mail::Mls(MlsMail::new(
            self.me(),
            committer.user,
            Some(committer.peer),
            MailKind::Application,
            request_id,
            vec![sealed.bytes],
        ));
        let now = Timestamp::now();
        let entry = OutboxEntry {
            id: *request_id.as_bytes(),
            recipient: committer.user.to_string(),
            envelope: mail.to_bytes(),
            body: String::new(),
            sent_at: now,
            expires_at: now.saturating_add(self.inner.settings.ttl),
            attempts: 0,
            relayed: false,
            device: Some(committer.peer.to_string()),
            handshake: true,
            group: Some(id.to_string()),
            content: None,
        };
        tracing::info!(group = %id, committer = %committer.peer, change = ?body.change, revocations = body.revocations.len(), "asked the committer to change a group");
        self.send_after(durable, vec![entry]).await?;
        Ok(())
    }

    /// As a member that is not the committer, in a group whose committer's user is not a
    /// contact (so it has no card naming this user's devices): hands it key packages of
    /// this user's devices that are not in the group yet (paired since), at most every
    /// [`HAND_OVER_EVERY`] per device.
    pub(super) async fn hand_over_devices(
        &self,
        mls: &mut Mls,
        group: &GroupRef,
        directory: &Directory,
    ) {
        let me = self.me();
        let Ok(Some(committer)) = mls.committer(group) else {
            return;
        };
        if committer.user == me || directory.contacts.contains_key(&committer.user) {
            return;
        }
        let members = mls.members(group).unwrap_or_default();
        let now = Instant::now();
        let recent = |peer: &PeerId| {
            lock(&self.inner.handed_over)
                .get(&(*group, *peer))
                .is_some_and(|at| now.duration_since(*at) < HAND_OVER_EVERY)
        };
        let mut packages = Vec::new();
        let mut peers = Vec::new();
        for peer in directory.messaging_devices(&me) {
            if members.iter().any(|m| m.peer == peer) || recent(&peer) {
                continue;
            }
            if let Some(p) = self.take_package(mls, me, peer).await {
                packages.push(p.bytes);
                peers.push(peer);
            }
        }
        if packages.is_empty() {
            return;
        }
        // The note that brought this user in goes along, for the new devices' Welcomes.
        let body = RequestBody {
            change: Some(GroupChange::Devices),
            sponsor_note: mls.kept_sponsor_note(group, &me),
            ..RequestBody::default()
        };
        match self
            .request_change(mls, group, &committer, &body, packages)
            .await
        {
            Ok(()) => {
                let mut handed = lock(&self.inner.handed_over);
                for peer in peers {
                    handed.insert((*group, peer), now);
                }
            }
            Err(e) => tracing::debug!(%group, error = %e, "cannot hand this user's devices over"),
        }
    }

    /// As a member that is not next in line to commit: hands `next` (the device that is)
    /// the signed revocations of devices in the group that it may not know of (it is a
    /// stranger to their user), at most every [`HAND_OVER_EVERY`] for the same ones.
    pub(super) async fn hand_over_revocations(
        &self,
        mls: &mut Mls,
        group: &GroupRef,
        next: &Member,
        revocations: &[volli_core::Statement],
    ) {
        let fingerprint = {
            let mut h = blake3::Hasher::new();
            for r in revocations {
                h.update(&r.to_bytes());
            }
            h.update(&next.peer.to_bytes());
            let mut id = [0u8; 16];
            id.copy_from_slice(&h.finalize().as_bytes()[..16]);
            GroupRef(id)
        };
        {
            let now = Instant::now();
            let mut told = lock(&self.inner.handed_over);
            if told
                .get(&(*group, next.peer))
                .zip(told.get(&(fingerprint, next.peer)))
                .is_some_and(|(_, at)| now.duration_since(*at) < HAND_OVER_EVERY)
            {
                return;
            }
            told.insert((*group, next.peer), now);
            told.insert((fingerprint, next.peer), now);
        }
        let body = RequestBody {
            change: Some(GroupChange::Devices),
            revocations: revocations
                .iter()
                .map(volli_core::Statement::to_bytes)
                .collect(),
            sponsor_note: None,
        };
        if let Err(e) = self
            .request_change(mls, group, next, &body, Vec::new())
            .await
        {
            tracing::debug!(%group, error = %e, "cannot hand revocations over");
        }
    }

    /// As the committer: commits `change` by `by` (checked by the MLS layer as every member
    /// checks it), adding the devices of `packages` and removing those of a removed user.
    async fn commit_change(
        &self,
        mls: &mut Mls,
        group: &GroupRef,
        by: UserId,
        change: &GroupChange,
        packages: Vec<volli_mls::Package>,
        directory: &Directory,
    ) -> Result<(), ConversationError> {
        let remove: Vec<PeerId> = match change {
            GroupChange::Remove(user) => mls
                .members(group)?
                .into_iter()
                .filter(|m| m.user == *user && m.peer != self.inner.identity.peer_id())
                .map(|m| m.peer)
                .collect(),
            _ => Vec::new(),
        };
        let commit = volli_mls::Commit {
            add: packages,
            remove,
            change: Some((by, change.clone())),
            ..volli_mls::Commit::default()
        };
        self.commit_group(mls, group, commit, directory).await
    }

    /// A group's roster user that is neither this user nor a contact keeps the devices it
    /// has in the group, and gains those whose key packages a member handed over.
    pub(super) async fn wanted_devices(
        &self,
        mls: &mut Mls,
        group: &GroupRef,
        info: &Info,
        directory: &Directory,
    ) -> Vec<(UserId, PeerId)> {
        let members = mls.members(group).unwrap_or_default();
        let mut wanted = Vec::new();
        for user in info.users() {
            if directory.devices_of(&user).is_some() {
                wanted.extend(
                    directory
                        .messaging_devices(&user)
                        .into_iter()
                        .map(|p| (user, p)),
                );
            } else {
                wanted.extend(
                    members
                        .iter()
                        .filter(|m| m.user == user && !directory.is_revoked(m))
                        .map(|m| (user, m.peer)),
                );
                // At most a card's worth of devices per user, those in the group first.
                let mut room = volli_core::card::MAX_DEVICES
                    .saturating_sub(wanted.iter().filter(|(u, _)| *u == user).count());
                for peer in self
                    .inner
                    .db
                    .key_package_peers_of(&user.to_string())
                    .await
                    .unwrap_or_default()
                {
                    if room == 0 {
                        break;
                    }
                    if let Ok(peer) = peer.parse::<PeerId>()
                        && !wanted.contains(&(user, peer))
                        && !directory.revoked.contains_key(&(user, peer))
                    {
                        wanted.push((user, peer));
                        room -= 1;
                    }
                }
            }
        }
        wanted
    }

    /// After a change: if the member who carries this user's group mail (its sponsor) is
    /// not a contact — the one who brought it in left, and the roster passed it to someone
    /// else — asks to be carried by a member who is (ADR 0018). Mail to this user waits
    /// otherwise, as nobody on its way knows it.
    pub(super) async fn mend_sponsor(&self, group: GroupRef) {
        let me = self.me();
        let directory = self.directory();
        let is_contact = |u: &UserId| directory.contacts.contains_key(u);
        let choice = {
            let mls = self.inner.mls.lock().await;
            let Some(info) = mls.info(&group).filter(Info::is_group) else {
                return;
            };
            let roster = info.roster();
            let sponsor_of =
                |u: &UserId| roster.iter().find(|m| m.user == *u).and_then(|m| m.sponsor);
            match sponsor_of(&me) {
                Some(sponsor) if !is_contact(&sponsor) => {}
                _ => return,
            }
            // A contact not carried by this user, near or far (the lines stay a tree),
            // admins first, then the longest-standing.
            let carried_by_me = |u: &UserId| {
                let mut up = Some(*u);
                for _ in 0..=roster.len() {
                    match up {
                        Some(x) if x == me => return true,
                        Some(x) => up = sponsor_of(&x),
                        None => return false,
                    }
                }
                true
            };
            let mut candidates: Vec<&volli_mls::Membership> = roster
                .iter()
                .filter(|m| m.user != me && is_contact(&m.user) && !carried_by_me(&m.user))
                .collect();
            candidates.sort_by_key(|m| m.role != Role::Admin);
            candidates.first().map(|m| m.user)
        };
        let Some(sponsor) = choice else {
            tracing::info!(%group, "no member this user knows can carry its group mail");
            return;
        };
        tracing::info!(%group, %sponsor, "asking to be carried by a member this user knows");
        if let Err(e) = self
            .change_group(group, GroupChange::Sponsor(sponsor))
            .await
        {
            tracing::warn!(%group, error = %e, "cannot ask for a new sponsor");
        }
    }

    /// A member's request arrived at this device, the committer: applied if its sender may
    /// ask it. Returns whether anything was committed.
    async fn take_request(
        &self,
        mls: &mut Mls,
        group: &GroupRef,
        sender: &Member,
        change: &[u8],
        packages: Vec<Vec<u8>>,
    ) -> bool {
        let Some(body) = RequestBody::decode(change) else {
            tracing::debug!(%group, "an unreadable group request");
            return false;
        };
        if !self.request_allowed(group, sender) {
            tracing::info!(%group, from = %sender.peer, "too many group requests from one device");
            return false;
        }
        // Revocations handed over are kept whoever sent them (each is signed by the user it
        // is about, and about a device of this group): the round that follows removes them.
        let members = mls.members(group).unwrap_or_default();
        let relevant: Vec<Vec<u8>> = body
            .revocations
            .iter()
            .filter(|b| {
                volli_core::Statement::from_bytes(b).is_ok_and(|s| match s.claim() {
                    volli_core::Claim::Revoked { peer } => members
                        .iter()
                        .any(|m| m.peer == *peer && m.user == s.user_id()),
                    volli_core::Claim::KeyGeneration { .. } => false,
                })
            })
            .cloned()
            .collect();
        let learned = !relevant.is_empty() && self.keep_revocations(&relevant, None).await;
        let Some(change) = body.change else {
            return learned;
        };
        let Some(info) = mls.info(group) else {
            return learned;
        };
        let directory = self.directory();
        let successor = {
            let gone: Vec<PeerId> = members
                .iter()
                .filter(|m| directory.revocation(m).is_some())
                .map(|m| m.peer)
                .collect();
            mls.committer_without(group, &gone).ok().flatten()
        };
        if successor.is_none_or(|s| s.peer != self.inner.identity.peer_id()) {
            tracing::info!(%group, "a group request for a committer this device is not");
            return learned;
        }
        if change == GroupChange::Devices {
            // The requester's note for its own user (from whoever brought it in, or its
            // own), for its new devices' Welcomes.
            if let Some(note) = body.sponsor_note
                && mls.kept_sponsor_note(group, &sender.user).is_none()
                && volli_mls::check_sponsor_note(&note, group, &sender.user).is_ok_and(|s| {
                    s.user == sender.user
                        || info
                            .roster()
                            .iter()
                            .any(|m| m.user == sender.user && m.sponsor == Some(s.user))
                })
            {
                mls.keep_sponsor_note(group, &sender.user, note);
            }
            let added = self.take_devices(mls, group, sender, packages).await;
            return added || learned;
        }
        if !mls.is_committer(group).unwrap_or(false) {
            // Next in line only: the takeover comes first, at the next round.
            return learned;
        }
        let next = match info.changed(&sender.user, &change) {
            // Asked before (by another device of the same user): nothing to commit.
            Ok(next) if next == info => return learned,
            Ok(next) => next,
            Err(e) => {
                tracing::info!(%group, from = %sender.user, error = %e, "refused a group request");
                return learned;
            }
        };
        drop(next);
        let checked = match &change {
            GroupChange::Add(user) => {
                // The asking admin's note that it brings the user in goes beside the
                // Welcomes (a request of an earlier release has none).
                if let Some(note) = body.sponsor_note
                    && volli_mls::check_sponsor_note(&note, group, user)
                        .is_ok_and(|sponsor| sponsor.user == sender.user)
                {
                    mls.keep_sponsor_note(group, user, note);
                }
                self.keep_request_packages(mls, group, *user, &packages)
                    .await
            }
            _ => Vec::new(),
        };
        match self
            .commit_change(mls, group, sender.user, &change, checked, &directory)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(%group, error = %e, "cannot commit a group request");
                false
            }
        }
    }

    /// Whether the committer takes one more request from `sender`'s device in `group` now
    /// (at most [`REQUESTS_PER_MINUTE`] a minute).
    fn request_allowed(&self, group: &GroupRef, sender: &Member) -> bool {
        let now = Instant::now();
        let mut seen = lock(&self.inner.requests);
        if seen.len() > 4096 {
            seen.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(60))
            });
        }
        let times = seen.entry((*group, sender.peer)).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            times.pop_front();
        }
        if times.len() >= REQUESTS_PER_MINUTE {
            return false;
        }
        times.push_back(now);
        true
    }

    /// Key packages from a request that check out as devices of `user` not in `group` yet,
    /// one per device, in peer order; each is kept too, so later rounds keep the device and
    /// it can be added again from it.
    async fn keep_request_packages(
        &self,
        mls: &mut Mls,
        group: &GroupRef,
        user: UserId,
        packages: &[Vec<u8>],
    ) -> Vec<volli_mls::Package> {
        let members = mls.members(group).unwrap_or_default();
        let mut checked: Vec<volli_mls::Package> = Vec::new();
        for bytes in packages.iter().take(volli_core::card::MAX_DEVICES) {
            match mls.check_key_package(bytes) {
                Ok(p)
                    if p.member.user == user
                        && !members.iter().any(|m| m.peer == p.member.peer)
                        && !checked.iter().any(|c| c.member.peer == p.member.peer) =>
                {
                    let _ = self
                        .inner
                        .db
                        .key_package_add(
                            &HeldPackage {
                                reference: p.reference.clone(),
                                peer: p.member.peer.to_string(),
                                user_id: user.to_string(),
                                last_resort: p.last_resort,
                                package: bytes.clone(),
                            },
                            Timestamp::now(),
                        )
                        .await;
                    checked.push(p);
                }
                _ => tracing::debug!(%group, "a key package in a group request was refused"),
            }
        }
        checked.sort_by_key(|p| p.member.peer);
        checked
    }

    /// As the committer: a member handed over key packages of its own devices that are not
    /// in the group; those that check out are kept (so later rounds keep the devices) and
    /// added in one commit. Returns whether anything was committed.
    async fn take_devices(
        &self,
        mls: &mut Mls,
        group: &GroupRef,
        sender: &Member,
        packages: Vec<Vec<u8>>,
    ) -> bool {
        let checked = self
            .keep_request_packages(mls, group, sender.user, &packages)
            .await;
        if checked.is_empty() {
            return false;
        }
        let directory = self.directory();
        let commit = volli_mls::Commit {
            add: checked,
            ..volli_mls::Commit::default()
        };
        match self.commit_group(mls, group, commit, &directory).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(%group, error = %e, "cannot add a member's devices");
                false
            }
        }
    }

    /// Commits `commit` in `group` and sends the commit to every member (the removed
    /// devices too: they then forget the group) and the Welcome to the devices added.
    pub(super) async fn commit_group(
        &self,
        mls: &mut Mls,
        group: &GroupRef,
        commit: volli_mls::Commit,
        directory: &Directory,
    ) -> Result<(), ConversationError> {
        let changed_info = commit.change.is_some();
        let before = mls.info(group);
        let committed = mls.commit(group, commit, directory, now_ms())?;
        let durable = self.inner.vault.mls_queued(mls.take_changes()).await?;
        if let (Some(before), Some(after)) = (before, mls.info(group)) {
            let lines =
                crate::timeline::roster_lines(*group, committed.epoch, self.me(), &before, &after);
            self.keep_lines(*group, lines).await;
        }
        tracing::info!(
            %group,
            epoch = committed.epoch,
            added = committed.added.len(),
            removed = committed.removed.len(),
            changed_info,
            "committed in a group"
        );
        let group_hex = group.to_string();
        let removed: HashSet<PeerId> = committed.removed.iter().map(|m| m.peer).collect();
        let mut entries = Vec::new();
        for member in committed
            .recipients
            .iter()
            .filter(|m| !removed.contains(&m.peer))
        {
            let mut entry =
                self.handshake(member, MailKind::Handshake, committed.messages.clone())?;
            entry.group = Some(group_hex.clone());
            entries.push(entry);
        }
        // A removed device hears of its removal too (it then forgets the group).
        for member in &committed.removed {
            let mut entry =
                self.handshake(member, MailKind::Handshake, committed.messages.clone())?;
            entry.group = Some(group_hex.clone());
            entries.push(entry);
        }
        if let Some(welcome) = &committed.welcome {
            for member in &committed.added {
                let mut messages = vec![welcome.clone()];
                if self.reads_notes(&member.user) {
                    messages.extend(mls.kept_sponsor_note(group, &member.user));
                }
                let mut entry = self.handshake(member, MailKind::Welcome, messages)?;
                entry.group = Some(group_hex.clone());
                entries.push(entry);
            }
        }
        self.send_after(durable, entries).await?;
        self.inner
            .db
            .mls_commit_record(
                &group.0,
                committed.epoch,
                &wire::encode(&committed.messages),
                Timestamp::now(),
            )
            .await?;
        self.inner.events.publish(Event::GroupChanged {
            group: group_hex,
            epoch: committed.epoch,
            left: mls.info(group).is_some_and(|i| !i.includes(&self.me())),
        });
        Ok(())
    }

    /// Seals `content` into group `id`; the members to send it to (every user but this
    /// one) and the MLS message, with the state it left (durable before the mail leaves).
    pub async fn seal_group(
        &self,
        id: GroupRef,
        content: &Content,
    ) -> Result<(Vec<UserId>, Sealed), GroupError> {
        if !self.messaging() {
            return Err(GroupError::Invalid(
                "this device does not take part in conversations".into(),
            ));
        }
        let plaintext = content
            .to_padded()
            .map_err(|e| GroupError::Invalid(e.to_string()))?;
        let me = self.me();
        let mut mls = self.inner.mls.lock().await;
        let info = mls
            .info(&id)
            .filter(Info::is_group)
            .ok_or(GroupError::UnknownGroup)?;
        if !self.clear_of_revoked(&mut mls, &id).await {
            return Err(ConversationError::Waiting.into());
        }
        let sealed = mls.encrypt(&id, &plaintext)?;
        let durable = self.inner.vault.mls_queued(mls.take_changes()).await?;
        self.wake_if_due(&mls, &id);
        drop(mls);
        Ok((
            info.users().into_iter().filter(|u| *u != me).collect(),
            Sealed {
                mail: sealed.bytes,
                durable: Box::pin(durable),
            },
        ))
    }

    /// The group `mail` is of, with what it is, when this device is in it.
    pub async fn group_of(&self, mail: &MlsMail) -> Option<(GroupRef, Info)> {
        let group = mail
            .messages
            .first()
            .and_then(|b| volli_mls::peek(b).ok())
            .and_then(|p| p.group);
        let mls = self.inner.mls.lock().await;
        match group {
            Some(group) => {
                let info = mls.info(&group).filter(Info::is_group)?;
                Some((group, info))
            }
            // A Welcome names no group outside its encryption; the sponsor's note beside it
            // does, and only for that group of this node's, with both its sender and its
            // recipient, is it carried (a Welcome without a note is carried nowhere).
            None if mail.kind == MailKind::Welcome => {
                let named = mail
                    .messages
                    .get(1)
                    .and_then(|note| volli_mls::sponsor_note_group(note))?;
                let info = mls.info(&named).filter(Info::is_group)?;
                (info.includes(&mail.sender) && info.includes(&mail.recipient))
                    .then_some((named, info))
            }
            None => None,
        }
    }

    /// The users of group `group` (its id in hex), when this device is in it.
    pub async fn group_users(&self, group: &str) -> Option<Vec<UserId>> {
        let group = parse_group(group)?;
        let mls = self.inner.mls.lock().await;
        mls.info(&group).filter(Info::is_group).map(|i| i.users())
    }

    /// Whether `user`'s node takes a sponsor's note beside a Welcome (nodes of earlier
    /// releases read a Welcome alone, and refuse the mail otherwise).
    /// Stores the system lines of a roster change in the group's timeline (a line this user's
    /// other device stored already is not stored twice), before clients hear of the change.
    pub(super) async fn keep_lines(
        &self,
        group: GroupRef,
        lines: Vec<volli_store::vault::StoredMessage>,
    ) {
        let key = conversation_key(&group);
        for line in lines {
            let saved = match self.inner.vault.queue_message(key, line).await {
                Ok(saved) => saved.await,
                Err(e) => Err(e),
            };
            if let Err(e) = saved {
                tracing::warn!(error = %e, "a group's system line was not stored");
            }
        }
    }

    fn reads_notes(&self, user: &UserId) -> bool {
        *user == self.me() || self.features_of(user) != Some(false)
    }

    /// The group whose conversation is stored under `key`, if this device is in it.
    pub async fn group_of_key(&self, key: &UserId) -> Option<GroupRef> {
        self.group_ids()
            .await
            .into_iter()
            .find(|g| conversation_key(g) == *key)
    }

    /// Whether `user` is an admin of group `group`.
    pub async fn is_group_admin(&self, group: GroupRef, user: UserId) -> bool {
        let mls = self.inner.mls.lock().await;
        mls.info(&group)
            .filter(Info::is_group)
            .is_some_and(|i| i.role_of(&user) == Some(Role::Admin))
    }

    /// The contact to hand mail of group `group` for `to` (not a contact) to, if any.
    pub async fn carrier(&self, group: &str, to: &UserId) -> Option<UserId> {
        let group = parse_group(group)?;
        let info = {
            let mls = self.inner.mls.lock().await;
            mls.info(&group).filter(Info::is_group)?
        };
        let me = self.me();
        let peers = self.inner.peers.clone();
        let hop = next_hop(&info, &me, to, &|u: &UserId| {
            *u != me && peers.is_contact(u)
        })?;
        (hop != *to && hop != me).then_some(hop)
    }

    /// Like [`Self::carrier`], and when nobody on the sponsor lines is a contact (the member
    /// who carried mail to `to` just left, and the roster passed `to` to someone who does
    /// not know it), the members who are contacts in turn, `attempt` choosing: one of them
    /// may know `to`, and a member that cannot take the mail on refuses it.
    pub async fn carrier_or_guess(&self, group: &str, to: &UserId, attempt: u32) -> Option<UserId> {
        if let Some(hop) = self.carrier(group, to).await {
            return Some(hop);
        }
        let info = {
            let mls = self.inner.mls.lock().await;
            mls.info(&parse_group(group)?).filter(Info::is_group)?
        };
        let me = self.me();
        let known: Vec<UserId> = info
            .users()
            .into_iter()
            .filter(|u| *u != me && u != to && self.inner.peers.is_contact(u))
            .collect();
        let n = u32::try_from(known.len()).ok().filter(|n| *n > 0)?;
        known.get(usize::try_from(attempt % n).ok()?).copied()
    }

    /// Whether mail from `deliverer` (a contact) for `mail.recipient` (another user) is
    /// group mail this node carries on: both, and the sender, are members of a group this
    /// device is in.
    pub async fn may_carry(&self, mail: &MlsMail, deliverer: UserId) -> bool {
        if mail.recipient == self.me() {
            return false;
        }
        let Some((_, info)) = self.group_of(mail).await else {
            return false;
        };
        if !(info.includes(&mail.recipient)
            && info.includes(&mail.sender)
            && info.includes(&deliverer))
        {
            return false;
        }
        // Only what this node can take on: to the recipient itself, or to a member on the
        // way other than the one that handed it over.
        let me = self.me();
        let peers = self.inner.peers.clone();
        next_hop(&info, &me, &mail.recipient, &|u: &UserId| {
            *u != me && peers.is_contact(u)
        })
        .is_some_and(|hop| hop != deliverer && hop != me)
    }

    /// Takes in a group's application message: a text stored in the group's conversation, or
    /// a request for the committer.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn open_group_application(
        &self,
        mail: &MlsMail,
        group: GroupRef,
        info: Info,
        direct: Option<UserId>,
        accept: &mut (dyn FnMut(UserId, usize) -> Result<(), String> + Send),
        pending: bool,
    ) -> Result<Opened, ConversationError> {
        let bytes = mail
            .messages
            .first()
            .ok_or_else(|| ConversationError::Invalid("empty mail".into()))?;
        let directory = self.directory();
        let me = self.me();
        // Delivered by the sender, or carried by a member who is a contact.
        if direct.is_some_and(|d| d != mail.sender && !info.includes(&d)) {
            return Err(ConversationError::Invalid(
                "group mail carried by a user outside the group".into(),
            ));
        }
        let mut mls = self.inner.mls.lock().await;
        if lock(&self.inner.opened).ids.contains(&mail.id) {
            return Ok(Opened::Duplicate);
        }
        let mut opened = None;
        let processed =
            mls.open_application(bytes, &directory, now_ms(), &mut |sender, content| {
                let content = Content::from_padded(content)
                    .map_err(|_| MlsError::Refused("unreadable content".into()))?;
                match &content {
                    Content::GroupRequest { id, .. } => {
                        if *id != mail.id {
                            return Err(MlsError::Refused(
                                "the request's id is not the mail's".into(),
                            ));
                        }
                    }
                    Content::Text { .. }
                    | Content::Message { .. }
                    | Content::Reaction { .. }
                    | Content::Edit { .. }
                    | Content::Unsend { .. }
                    | Content::Read { .. }
                    | Content::Timer { .. }
                    | Content::FileOffer(_)
                    | Content::File { .. } => {
                        // Each member's copy is its own outbox row, under a masked id.
                        if mail_id(content.mail_id(), &me) != mail.id {
                            return Err(MlsError::Refused(
                                "the content's id is not the mail's".into(),
                            ));
                        }
                        if sender.user == me {
                            return Err(MlsError::Refused(
                                "a message from this user's own device".into(),
                            ));
                        }
                        accept(sender.user, content.text_len()).map_err(MlsError::Refused)?;
                    }
                    _ => {
                        return Err(MlsError::Refused(
                            "not a message this device takes here".into(),
                        ));
                    }
                }
                if sender.user != mail.sender {
                    return Err(MlsError::Refused(
                        "sent by another user than the mail says".into(),
                    ));
                }
                opened = Some((*sender, content));
                Ok(())
            });
        let processed = match processed {
            Err(e) if !matches!(e, MlsError::Ahead { .. } | MlsError::UnknownGroup) => {
                drop(mls);
                let message_id = mail_id(mail.id, &me);
                if matches!(
                    self.inner.vault.message_status(message_id).await,
                    Ok(Some(_))
                ) {
                    return Ok(Opened::Duplicate);
                }
                return Err(unreadable(e));
            }
            other => other,
        };
        match processed {
            Ok(Processed::Application { .. }) => {}
            Ok(_) => {
                return Err(ConversationError::Invalid(
                    "not an application message".into(),
                ));
            }
            Err(MlsError::Ahead { .. } | MlsError::UnknownGroup) if pending => {
                return Ok(Opened::Waiting);
            }
            Err(MlsError::Ahead { group, epoch }) => {
                drop(mls);
                self.hold(group, epoch, mail, direct.unwrap_or(mail.sender))
                    .await?;
                return Ok(Opened::Waiting);
            }
            Err(e) => return Err(e.into()),
        }
        let Some((sender, content)) = opened else {
            return Err(ConversationError::Invalid("no content".into()));
        };
        lock(&self.inner.opened).insert(mail.id);
        let content_meta = match &content {
            Content::File {
                offer,
                mime,
                thumbnail,
            } => Some(crate::files::FileMeta::received(
                &offer.name,
                mime,
                thumbnail.as_deref(),
            )),
            _ => None,
        };
        match content {
            Content::FileOffer(_) | Content::File { .. } | Content::GroupRequest { .. } => {}
            content => {
                let at = crate::timeline::Where::Group(group);
                let admin = info.role_of(&sender.user) == Some(volli_mls::Role::Admin);
                let stored = crate::timeline::queue_received(
                    &self.inner.vault,
                    &self.inner.events,
                    at,
                    me,
                    sender.user,
                    content,
                    admin,
                )
                .await?;
                let state = self.inner.vault.mls_queued(mls.take_changes()).await?;
                self.wake_if_due(&mls, &group);
                drop(mls);
                let from = sender.user;
                let saved = async move {
                    let new = match stored {
                        Some(stored) => stored.await?,
                        None => false,
                    };
                    state.await?;
                    Ok(new)
                };
                return Ok(Opened::Text {
                    sender: from,
                    id: mail.id,
                    saved: Box::pin(saved),
                });
            }
        }
        match content {
            Content::FileOffer(offer) | Content::File { offer, .. } => {
                let offer = offer
                    .into_offer(sender.user, sender.peer)
                    .map_err(|e| ConversationError::Invalid(e.to_string()))?;
                let meta = match content_meta {
                    Some(meta) => meta,
                    None => crate::files::FileMeta::of_name(&offer.name),
                };
                // The offer first: once the state that no longer opens it is on disk, it
                // must be (a file service that is not there yet leaves the mail to retry).
                let stored = match self.inner.offers.get() {
                    Some(sink) => sink(group, offer, meta).await,
                    None => false,
                };
                if !stored {
                    lock(&self.inner.opened).remove(&mail.id);
                    self.reload(&mut mls).await;
                    return Err(ConversationError::Invalid(
                        "the offer was not stored".into(),
                    ));
                }
                let state = self.inner.vault.mls_queued(mls.take_changes()).await?;
                self.wake_if_due(&mls, &group);
                drop(mls);
                state.await?;
                Ok(Opened::Done)
            }
            Content::GroupRequest {
                change, packages, ..
            } => {
                // The state that used the request's key first, then the commit.
                let state = self.inner.vault.mls_queued(mls.take_changes()).await?;
                state.await?;
                let committed = self
                    .take_request(&mut mls, &group, &sender, &change, packages)
                    .await;
                drop(mls);
                if committed {
                    self.inner.work.notify_one();
                }
                Ok(Opened::Done)
            }
            _ => Err(ConversationError::Invalid("no content".into())),
        }
    }

    /// A Welcome into a group took this device in: kept only with a note, signed by a device
    /// of the member who brought this user in (its sponsor in the roster), naming this group
    /// and this user — a contact whose device is not revoked — or by a device of this user
    /// itself (it created the group, or added this device). The roster's word alone is not
    /// enough: whoever makes a group writes it, and a stranger could make one with this
    /// user's devices in it.
    pub(super) fn welcomed_by_contact(
        &self,
        group: &GroupRef,
        info: &Info,
        note: Option<&Vec<u8>>,
    ) -> bool {
        let me = self.me();
        let directory = self.directory();
        let Some(note) = note else {
            return false;
        };
        let Ok(signer) = volli_mls::check_sponsor_note(note, group, &me) else {
            return false;
        };
        if directory.is_revoked(&signer) {
            return false;
        }
        if signer.user == me {
            return true;
        }
        match info.roster().iter().find(|m| m.user == me) {
            Some(m) => {
                m.sponsor == Some(signer.user)
                    && info.includes(&signer.user)
                    && directory.contacts.contains_key(&signer.user)
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use volli_core::UserSecret;

    use super::*;

    #[test]
    fn mail_ids_are_per_member_and_reversible() {
        let m = MessageId::random().unwrap();
        let (a, b) = (
            UserSecret::generate().unwrap().user_id(),
            UserSecret::generate().unwrap().user_id(),
        );
        assert_ne!(mail_id(m, &a), mail_id(m, &b));
        assert_eq!(mail_id(mail_id(m, &a), &a), m);
        let g = GroupRef([7; 16]);
        assert_eq!(conversation_key(&g), conversation_key(&g));
        assert_ne!(conversation_key(&g), conversation_key(&GroupRef([8; 16])));
        assert_eq!(parse_group(&g.to_string()), Some(g));
        assert_eq!(parse_group("zz"), None);
    }

    #[test]
    fn mail_to_a_stranger_goes_through_a_member_who_knows_it() {
        let [root, x, y, z] = [0; 4].map(|_| UserSecret::generate().unwrap().user_id());
        // root brought in x and y; x brought in z.
        let info = Info::group(root, "g", &[x, y], 0)
            .changed(&root, &GroupChange::Role(x, Role::Admin))
            .unwrap()
            .changed(&x, &GroupChange::Add(z))
            .unwrap();
        // y knows only root: z is reached through x's sponsor line (root knows x).
        let y_knows = |u: &UserId| *u == root;
        assert_eq!(next_hop(&info, &y, &z, &y_knows), Some(root));
        // root knows x and y: to z through x.
        let root_knows = |u: &UserId| *u == x || *u == y;
        assert_eq!(next_hop(&info, &root, &z, &root_knows), Some(x));
        // x knows z: directly.
        let x_knows = |u: &UserId| *u == z || *u == root;
        assert_eq!(next_hop(&info, &x, &z, &x_knows), Some(z));
        // z to y: up to x, who knows root.
        let z_knows = |u: &UserId| *u == x;
        assert_eq!(next_hop(&info, &z, &y, &z_knows), Some(x));
    }
}
