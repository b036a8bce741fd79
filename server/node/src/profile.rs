//! The user's profile — a display name and a small picture — and contacts' pictures.
//!
//! The name is the vault setting `profile.name` (the device's name until the user sets one),
//! so it syncs to the user's devices; it reaches contacts inside the signed contact card,
//! which an admin device issues again when the name changes (here or on another device,
//! seen when the settings sync) and sends to the contacts connected (the others get it when
//! they connect). The card's format does not change.
//!
//! The picture travels beside the card. Its bytes are in this node's `avatars` table and the
//! setting `profile.avatar` names it by BLAKE3 hash, so the vault's documents stay small:
//! the user's other devices fetch the bytes from a device that has them, and contacts from
//! the user's devices, over `/volli/relay/1` (`Avatar`, asked again when told
//! `AvatarChanged`; nodes of earlier releases refuse both). Pictures are checked by their
//! bytes (PNG, JPEG or WebP), 256 KiB at most, kept for contacts only and dropped with them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use volli_core::wire::{self, RelayRequest, RelayResponse};
use volli_core::{PeerId, UserId};
use volli_net::Protocol;
use volli_store::avatars::{Avatar, MAX_AVATAR_BYTES};
use volli_store::{Db, StoreError, Vault};

use crate::events::{Event, EventBus};
use crate::identity::Identity;
use crate::outbound::Outbound;
use crate::peers::Peers;

/// The setting that holds the user's display name.
pub const NAME_SETTING: &str = "profile.name";
/// The setting that names the user's picture: `{"hash", "mime", "size"}`.
pub const AVATAR_SETTING: &str = "profile.avatar";
/// Longest name, in bytes (what a contact card carries).
pub const MAX_NAME_LEN: usize = volli_core::card::MAX_NAME_LEN;
/// A contact's picture is asked for at most this often unless the contact says it changed.
const ASK_EVERY: Duration = Duration::from_secs(600);
/// How long one device may take to hand a picture over.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// A picture a contact says changed is fetched at least this long after the previous fetch.
const TOLD_AGAIN_AFTER: Duration = Duration::from_secs(5);
/// Users whose last fetch is remembered at most (contacts are bounded by the vault anyway).
const MAX_REMEMBERED: usize = 4096;

/// Why a profile change was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// Not a name: empty, too long, or with control characters.
    #[error("{0}")]
    InvalidName(String),
    /// The bytes are not a PNG, JPEG or WebP image.
    #[error("the picture is not a PNG, JPEG or WebP image")]
    NotAnImage,
    /// Over 256 KiB.
    #[error("the picture is larger than {} KiB", MAX_AVATAR_BYTES >> 10)]
    TooLarge,
    /// Storage failed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// Checks a person's name (the user's own, or one given to a contact): trimmed, 1 to 64
/// bytes, no control characters. Returns it trimmed.
pub fn check_name(name: &str) -> Result<String, ProfileError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ProfileError::InvalidName("the name is empty".into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ProfileError::InvalidName(format!(
            "a name is at most {MAX_NAME_LEN} bytes"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ProfileError::InvalidName(
            "a name has no control characters (line breaks, tabs)".into(),
        ));
    }
    Ok(name.to_owned())
}

/// The media type of an image by its first bytes: PNG, JPEG or WebP; `None` for anything
/// else, whatever a header claimed.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// The user's profile as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileView {
    /// The display name contacts see.
    pub name: String,
    /// Whether the user has a picture.
    pub avatar: bool,
}

/// The profile service. Cheap to clone.
#[derive(Clone)]
pub struct Profile {
    inner: Arc<Inner>,
}

/// What the profile service is wired from.
pub struct Parts {
    /// The database (pictures).
    pub db: Db,
    /// The vault (settings).
    pub vault: Vault,
    /// This node's identity.
    pub identity: Arc<Identity>,
    /// The event bus.
    pub events: EventBus,
    /// The peer table.
    pub peers: Peers,
    /// Requests to other nodes.
    pub outbound: Outbound,
    /// The user's devices (to issue and send the card anew).
    pub devices: crate::devices::Devices,
}

struct Inner {
    parts: Parts,
    /// When each user's picture was last asked for.
    asked: Mutex<HashMap<UserId, Instant>>,
    /// The name and picture last announced, to tell a change from a sync that changed
    /// something else.
    announced: tokio::sync::Mutex<Option<(String, Option<[u8; 32]>)>>,
}

/// Parses 64 hex digits.
fn hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// 64 hex digits.
fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Profile {
    /// The service.
    pub fn new(parts: Parts) -> Self {
        Self {
            inner: Arc::new(Inner {
                parts,
                asked: Mutex::new(HashMap::new()),
                announced: tokio::sync::Mutex::new(None),
            }),
        }
    }

    fn me(&self) -> UserId {
        self.inner.parts.identity.user_id()
    }

    /// The display name: the setting, else this device's name (what the card says).
    pub async fn name(&self) -> Result<String, ProfileError> {
        Ok(match self.inner.parts.vault.setting(NAME_SETTING).await? {
            Some(serde_json::Value::String(name)) if !name.trim().is_empty() => name,
            _ => self
                .inner
                .parts
                .identity
                .certificate
                .device_name()
                .to_owned(),
        })
    }

    /// The hash of the user's picture, as the synced setting names it.
    async fn avatar_named(&self) -> Result<Option<[u8; 32]>, ProfileError> {
        Ok(self
            .inner
            .parts
            .vault
            .setting(AVATAR_SETTING)
            .await?
            .and_then(|v| v.get("hash")?.as_str().and_then(hex32)))
    }

    /// The profile.
    pub async fn view(&self) -> Result<ProfileView, ProfileError> {
        Ok(ProfileView {
            name: self.name().await?,
            avatar: self.avatar_named().await?.is_some(),
        })
    }

    /// Sets the display name: saved in the vault (every device of the user), and sent to
    /// the contacts in a new card.
    pub async fn set_name(&self, name: &str) -> Result<ProfileView, ProfileError> {
        let name = check_name(name)?;
        self.inner
            .parts
            .vault
            .set_setting(NAME_SETTING, &serde_json::Value::String(name))
            .await?;
        self.changed().await;
        self.view().await
    }

    /// Sets the picture: an image of at most 256 KiB, checked by its bytes.
    pub async fn set_avatar(&self, bytes: &[u8]) -> Result<(), ProfileError> {
        if bytes.len() > MAX_AVATAR_BYTES {
            return Err(ProfileError::TooLarge);
        }
        let mime = sniff(bytes).ok_or(ProfileError::NotAnImage)?;
        let hash = self
            .inner
            .parts
            .db
            .put_avatar(&self.me().to_string(), mime, bytes)
            .await?;
        self.inner
            .parts
            .vault
            .set_setting(
                AVATAR_SETTING,
                &serde_json::json!({"hash": hex(&hash), "mime": mime, "size": bytes.len()}),
            )
            .await?;
        self.changed().await;
        Ok(())
    }

    /// Removes the picture.
    pub async fn delete_avatar(&self) -> Result<(), ProfileError> {
        self.inner
            .parts
            .vault
            .delete_setting(AVATAR_SETTING)
            .await?;
        self.inner
            .parts
            .db
            .delete_avatar(&self.me().to_string())
            .await?;
        self.changed().await;
        Ok(())
    }

    /// The user's picture, if this device holds the one the profile names.
    pub async fn avatar(&self) -> Result<Option<Avatar>, ProfileError> {
        let Some(named) = self.avatar_named().await? else {
            return Ok(None);
        };
        Ok(self
            .inner
            .parts
            .db
            .avatar(&self.me().to_string())
            .await?
            .filter(|a| a.hash == named))
    }

    /// A contact's picture, if one was fetched.
    pub async fn contact_avatar(&self, user: UserId) -> Result<Option<Avatar>, ProfileError> {
        Ok(self.inner.parts.db.avatar(&user.to_string()).await?)
    }

    /// Whether a contact's picture is held.
    pub async fn has_contact_avatar(&self, user: UserId) -> bool {
        matches!(
            self.inner.parts.db.avatar_hash(&user.to_string()).await,
            Ok(Some(_))
        )
    }

    /// Answers a contact's or an own device's `Avatar { have }`.
    pub(crate) async fn answer(&self, have: Option<[u8; 32]>) -> RelayResponse {
        let none = RelayResponse::Avatar {
            hash: None,
            mime: String::new(),
            bytes: Vec::new(),
        };
        let Ok(named) = self.avatar_named().await else {
            return RelayResponse::Refused("storage".into());
        };
        let Some(named) = named else {
            return none;
        };
        match self.avatar().await {
            Ok(Some(a)) => RelayResponse::Avatar {
                hash: Some(a.hash),
                mime: a.mime,
                bytes: if have == Some(a.hash) {
                    Vec::new()
                } else {
                    a.bytes
                },
            },
            // Named but not here yet (this device has not fetched it): the hash alone.
            Ok(None) => RelayResponse::Avatar {
                hash: Some(named),
                mime: String::new(),
                bytes: Vec::new(),
            },
            Err(_) => RelayResponse::Refused("storage".into()),
        }
    }

    /// Something about the profile may have changed (here, or in settings synced from
    /// another device): issue and send the card anew (admin devices), tell connected
    /// contacts and own devices of a new picture, fetch the picture if this device lacks
    /// it, and tell clients.
    pub async fn changed(&self) {
        let (Ok(name), Ok(hash)) = (self.name().await, self.avatar_named().await) else {
            return;
        };
        let mut announced = self.inner.announced.lock().await;
        let now = (name.clone(), hash);
        if announced.as_ref() == Some(&now) {
            return;
        }
        let first = announced.is_none();
        let picture_changed = announced.as_ref().is_some_and(|(_, h)| *h != hash);
        *announced = Some(now);
        drop(announced);
        // Only admin devices sign cards; `publish_card` re-issues only when the name (or
        // anything else the card carries) differs from the card kept in the vault.
        self.inner.parts.devices.publish_card().await;
        if let Some(hash) = hash
            && !matches!(self.inner.parts.db.avatar_hash(&self.me().to_string()).await, Ok(Some(h)) if h == hash)
        {
            let this = self.clone();
            tokio::spawn(async move { this.fetch_own(hash).await });
        }
        if picture_changed {
            self.tell_changed(hash).await;
        }
        if !first {
            self.inner.parts.events.publish(Event::ProfileChanged {
                name,
                avatar: hash.is_some(),
            });
        }
    }

    /// Tells the connected contacts' and own devices that the picture changed.
    async fn tell_changed(&self, hash: Option<[u8; 32]>) {
        let peers = &self.inner.parts.peers;
        let mut targets = peers.own_devices_connected();
        for user in peers.connected_contacts() {
            targets.extend(peers.connected_devices_of(&user));
        }
        let payload = wire::encode(&RelayRequest::AvatarChanged { hash });
        tracing::debug!(devices = targets.len(), "telling that the picture changed");
        for peer in targets {
            let outbound = self.inner.parts.outbound.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                // A node of an earlier release refuses it; it shows no picture.
                let call = outbound.request(peer, Protocol::Relay, payload, Vec::new());
                let _ = tokio::time::timeout(FETCH_TIMEOUT, call).await;
            });
        }
    }

    /// Asks `peer` (a device of `user`) for `user`'s picture; returns whether it answered
    /// with what it holds (a picture, or none).
    async fn ask(&self, user: UserId, peer: PeerId, have: Option<[u8; 32]>) -> Option<Answer> {
        let payload = wire::encode(&RelayRequest::Avatar { have });
        let call = self
            .inner
            .parts
            .outbound
            .request(peer, Protocol::Relay, payload, Vec::new());
        let bytes = match tokio::time::timeout(FETCH_TIMEOUT, call).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => {
                tracing::debug!(%user, %peer, error = %e, "cannot ask for a picture");
                return None;
            }
            Err(_) => {
                tracing::debug!(%user, %peer, "asking for a picture timed out");
                return None;
            }
        };
        match wire::decode::<RelayResponse>(&bytes, Protocol::Relay.max_response()) {
            Ok(RelayResponse::Avatar { hash: None, .. }) => Some(Answer::None),
            Ok(RelayResponse::Avatar {
                hash: Some(hash),
                bytes,
                ..
            }) => {
                if Some(hash) == have {
                    return Some(Answer::Same);
                }
                if bytes.is_empty() {
                    // That device lacks the bytes too.
                    return None;
                }
                // The picture is checked like one uploaded here: its bytes, its size, and
                // that they are what the hash names.
                let mime = sniff(&bytes)?;
                if bytes.len() > MAX_AVATAR_BYTES || *blake3::hash(&bytes).as_bytes() != hash {
                    tracing::debug!(%user, %peer, "a picture that is not what it says; dropped");
                    return None;
                }
                Some(Answer::Picture(mime, bytes))
            }
            // An earlier release: no pictures there.
            other => {
                tracing::debug!(%user, %peer, answer = ?other.map(|_| ()), "no picture from this device");
                None
            }
        }
    }

    /// Fetches the user's own picture (named `hash` by the settings) from its devices.
    async fn fetch_own(&self, hash: [u8; 32]) {
        let me = self.me();
        for peer in self.inner.parts.peers.own_devices_connected() {
            if let Some(Answer::Picture(mime, bytes)) = self.ask(me, peer, None).await {
                if *blake3::hash(&bytes).as_bytes() != hash {
                    continue;
                }
                if let Err(e) = self
                    .inner
                    .parts
                    .db
                    .put_avatar(&me.to_string(), mime, &bytes)
                    .await
                {
                    tracing::warn!(error = %e, "cannot keep the user's picture");
                }
                if let Ok(view) = self.view().await {
                    self.inner.parts.events.publish(Event::ProfileChanged {
                        name: view.name,
                        avatar: view.avatar,
                    });
                }
                return;
            }
        }
    }

    /// Whether `user`'s picture may be asked for now (`told`: the contact said it changed).
    fn may_ask(&self, user: UserId, told: bool) -> bool {
        let mut asked = self.inner.asked.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if !told && asked.get(&user).is_some_and(|at| now - *at < ASK_EVERY) {
            return false;
        }
        if asked.len() >= MAX_REMEMBERED {
            asked.retain(|_, at| now - *at < ASK_EVERY);
        }
        if asked.len() < MAX_REMEMBERED {
            asked.insert(user, now);
        }
        true
    }

    /// A contact's device is connected and said hello: fetch its picture if it may have
    /// changed.
    pub(crate) fn contact_ready(&self, user: UserId) {
        if !self.may_ask(user, false) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            for peer in this.inner.parts.peers.connected_devices_of(&user) {
                if this.fetch_contact(user, peer).await {
                    return;
                }
            }
        });
    }

    /// A contact's or own device said the picture changed.
    pub(crate) fn told_changed(&self, user: UserId, peer: PeerId, hash: Option<[u8; 32]>) {
        tracing::debug!(%user, %peer, "told that a picture changed");
        let this = self.clone();
        tokio::spawn(async move {
            if user == this.me() {
                if let Some(hash) = hash {
                    let held = this.inner.parts.db.avatar_hash(&user.to_string()).await;
                    if !matches!(held, Ok(Some(h)) if h == hash) {
                        this.fetch_own(hash).await;
                    }
                }
                return;
            }
            // A picture fetched moments ago is fetched again a little later, not at once
            // (a contact saying "changed" in a loop gets a fetch every few seconds at most;
            // the relay bounds how often it may say so).
            let wait = this.since_asked(user).map_or(Duration::ZERO, |since| {
                TOLD_AGAIN_AFTER.saturating_sub(since)
            });
            tokio::time::sleep(wait).await;
            let held = this
                .inner
                .parts
                .db
                .avatar_hash(&user.to_string())
                .await
                .ok()
                .flatten();
            if held == hash {
                return;
            }
            this.may_ask(user, true);
            this.fetch_contact(user, peer).await;
        });
    }

    /// How long ago `user`'s picture was last asked for.
    fn since_asked(&self, user: UserId) -> Option<Duration> {
        let asked = self.inner.asked.lock().unwrap_or_else(|e| e.into_inner());
        asked.get(&user).map(Instant::elapsed)
    }

    /// Fetches contact `user`'s picture from its device `peer`; whether the device answered.
    async fn fetch_contact(&self, user: UserId, peer: PeerId) -> bool {
        let db = &self.inner.parts.db;
        let key = user.to_string();
        let have = db.avatar_hash(&key).await.ok().flatten();
        let Some(answer) = self.ask(user, peer, have).await else {
            return false;
        };
        // Only a contact's picture is kept (it may have been removed meanwhile).
        if !self.inner.parts.peers.is_contact(&user) {
            return true;
        }
        let changed = match answer {
            Answer::Same => false,
            Answer::None => db.delete_avatar(&key).await.unwrap_or(false),
            Answer::Picture(mime, bytes) => match db.put_avatar(&key, mime, &bytes).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot keep a contact's picture");
                    false
                }
            },
        };
        if changed {
            self.tell_contact_changed(user).await;
        }
        true
    }

    /// Tells clients what a contact looks like now (`contact.changed`).
    pub(crate) async fn tell_contact_changed(&self, user: UserId) {
        if let Ok(Some(contact)) = self.inner.parts.vault.contact(user).await {
            self.inner.parts.events.publish(Event::ContactChanged {
                user_id: user.to_string(),
                name: contact.name,
                display_name: contact.display_name,
                avatar: self.has_contact_avatar(user).await,
            });
        }
    }

    /// Watches for profile changes synced from the user's other devices, and drops a
    /// removed contact's picture.
    pub fn spawn(&self, events: &EventBus) {
        let mut stream = events.subscribe();
        let this = self.clone();
        tokio::spawn(async move {
            this.changed().await;
            while let Some(event) = stream.next().await {
                match &*event {
                    Event::SyncCompleted { .. } => this.changed().await,
                    Event::SettingsChanged { key } if key.starts_with("profile.") => {
                        this.changed().await;
                    }
                    Event::ContactRemoved { user_id } => {
                        let _ = this.inner.parts.db.delete_avatar(user_id).await;
                    }
                    _ => {}
                }
            }
        });
    }
}

/// What a device answered to `Avatar`.
enum Answer {
    /// The picture the asker holds.
    Same,
    /// No picture.
    None,
    /// A new picture, checked: its media type and bytes.
    Picture(&'static str, Vec<u8>),
}
