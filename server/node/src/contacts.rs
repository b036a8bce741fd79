//! Invites and contacts.
//!
//! Issuing: `create_invite` stores the hash of a fresh secret with its expiry and use count
//! and returns a signed `volli://invite/…` link. Accepting: `accept` verifies the link, dials
//! the inviter with its peer id pinned (the Noise handshake fails on any other key), and
//! redeems the secret over `/volli/invite/1`, sending this user's signed contact card and
//! receiving the inviter's. The inviter counts the use atomically in SQLite and both sides
//! store each other in the vault. If the inviter cannot be reached, the invite is kept and
//! retried with backoff until it succeeds, fails for good or expires.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use multiaddr::Multiaddr;
use volli_core::wire::{self, RedeemRequest, RedeemResponse};
use volli_core::{ContactCard, Invite, PeerId, Timestamp, UserId, invite};
use volli_net::{NetClient, Protocol};
use volli_store::vault::Contact;
use volli_store::{Db, Redemption, Vault};

use crate::discovery::Discovery;
use crate::events::{Event, EventBus};
use crate::identity::Identity;
use crate::peers::Peers;

/// Longest invite lifetime.
pub const MAX_INVITE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Shortest invite lifetime.
pub const MIN_INVITE_TTL: Duration = Duration::from_secs(60);
/// Default invite lifetime.
pub const DEFAULT_INVITE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most uses of one invite.
pub const MAX_INVITE_USES: u16 = 100;
const REDEEM_TIMEOUT: Duration = Duration::from_secs(15);
const RETRY_EVERY: Duration = Duration::from_secs(5);
/// How often the retry loop looks for pending invites when it knows of none.
const IDLE_CHECK: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Why an invite or contact operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContactError {
    /// Not a valid invite (garbage, tampered, or this user's own).
    #[error("{0}")]
    InvalidInvite(String),
    /// The invite has expired.
    #[error("the invite has expired")]
    Expired,
    /// The invite was already used up.
    #[error("the invite has already been used")]
    Used,
    /// The inviter refused the redemption.
    #[error("the inviter refused: {0}")]
    Refused(String),
    /// No such contact.
    #[error("no such contact")]
    NotFound,
    /// Only a device that holds the user's signing key (an `admin` device) can do this.
    #[error("only an admin device of this user can do that (it signs for the user)")]
    NotAdmin,
    /// Storage failed.
    #[error("storage: {0}")]
    Store(#[from] volli_store::StoreError),
}

/// What accepting an invite led to.
#[derive(Debug)]
pub enum Accepted {
    /// The contact, redeemed now.
    Contact(Box<Contact>),
    /// The inviter was unreachable; redemption continues in the background.
    Pending {
        /// The inviter.
        inviter: UserId,
        /// Why it could not be reached, in words.
        reason: String,
    },
}

/// A new invite.
#[derive(Debug, Clone)]
pub struct CreatedInvite {
    /// The `volli://invite/…` link.
    pub link: String,
    /// When it stops working.
    pub expires_at: Timestamp,
}

enum RedeemFailure {
    /// Worth retrying later.
    Unreachable(String),
    /// Final.
    Failed(ContactError),
}

/// The contacts service. Cheap to clone.
#[derive(Clone)]
pub struct Contacts {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    vault: Vault,
    net: NetClient,
    identity: Arc<Identity>,
    discovery: Discovery,
    peers: Peers,
    events: EventBus,
    /// Wakes the retry loop when an invite starts waiting for its inviter.
    pending_added: tokio::sync::Notify,
}

impl Contacts {
    /// The service.
    pub fn new(
        db: Db,
        vault: Vault,
        net: NetClient,
        identity: Arc<Identity>,
        discovery: Discovery,
        peers: Peers,
        events: EventBus,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                vault,
                net,
                identity,
                discovery,
                peers,
                events,
                pending_added: tokio::sync::Notify::new(),
            }),
        }
    }

    /// This user's contact card as of now: its devices (the user's, not revoked), the
    /// current X-Wing key, the relays it designated. An admin device issues a new card when
    /// any of that changed and keeps it in the vault, where the user's other devices find it;
    /// the others use the latest one kept there.
    pub(crate) async fn my_card(&self) -> Result<ContactCard, ContactError> {
        let identity = &self.inner.identity;
        let kept = self.inner.vault.own_card(identity.user_id()).await?;
        let Some(user) = &identity.user else {
            return kept.ok_or(ContactError::NotAdmin);
        };
        let relays: Vec<UserId> = self
            .inner
            .db
            .designated_relays()
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|u| u.parse().ok())
            .collect();
        let name = match self.inner.vault.setting("profile.name").await {
            Ok(Some(serde_json::Value::String(name))) if !name.trim().is_empty() => name,
            _ => identity.certificate.device_name().to_owned(),
        };
        let mut devices: Vec<volli_core::DeviceCertificate> = self
            .inner
            .vault
            .devices_of(identity.user_id())
            .await?
            .into_iter()
            .filter(|d| d.revoked_at.is_none())
            .map(|d| d.certificate)
            .collect();
        if !devices.iter().any(|d| d.peer_id() == identity.peer_id()) {
            devices.insert(0, identity.certificate.clone());
        }
        let keyring = identity.keyring();
        let kem = keyring
            .current()
            .map(|k| k.public().clone())
            .unwrap_or_else(|| user.public_keys().kem.clone());
        let same = kept.as_ref().is_some_and(|card| {
            card.keys().kem == kem
                && card.name() == name
                && card.relays() == relays.as_slice()
                && card.devices() == devices.as_slice()
        });
        if same && let Some(card) = kept {
            return Ok(card);
        }
        let card = ContactCard::issue_with(user, &kem, &name, &devices, &relays, Timestamp::now());
        self.inner.vault.set_own_card(card.clone()).await?;
        Ok(card)
    }

    /// Issues an invite valid for `ttl` and `max_uses` redemptions.
    pub async fn create_invite(
        &self,
        ttl: Duration,
        max_uses: u16,
    ) -> Result<CreatedInvite, ContactError> {
        let mut secret = [0u8; 16];
        getrandom::fill(&mut secret)
            .map_err(|_| ContactError::InvalidInvite("no randomness available".into()))?;
        let expires_at = Timestamp::now().saturating_add(ttl);
        let addrs = self.inner.discovery.advertised_addrs().await;
        self.inner
            .db
            .create_invite(&invite::secret_id(&secret), expires_at, max_uses)
            .await?;
        let Some(user) = &self.inner.identity.user else {
            return Err(ContactError::NotAdmin);
        };
        let invite = Invite::create(
            user,
            self.inner.identity.certificate.clone(),
            &addrs,
            expires_at,
            max_uses,
            secret,
        );
        Ok(CreatedInvite {
            link: invite.to_link(),
            expires_at,
        })
    }

    /// Accepts an invite: redeems it now, or keeps it for later if the inviter is unreachable.
    pub async fn accept(&self, link: &str, name: Option<String>) -> Result<Accepted, ContactError> {
        let invite = Invite::parse(link).map_err(|e| ContactError::InvalidInvite(e.to_string()))?;
        if invite.inviter() == self.inner.identity.user_id() {
            return Err(ContactError::InvalidInvite(
                "this is your own invite".into(),
            ));
        }
        if invite.is_expired(Timestamp::now()) {
            return Err(ContactError::Expired);
        }
        match self.redeem(&invite, name.clone()).await {
            Ok(contact) => Ok(Accepted::Contact(Box::new(contact))),
            Err(RedeemFailure::Failed(e)) => Err(e),
            Err(RedeemFailure::Unreachable(reason)) => {
                tracing::info!(inviter = %invite.inviter(), %reason, "inviter unreachable; will retry");
                let inviter = invite.inviter().to_string();
                self.inner
                    .db
                    .add_pending_contact(&inviter, link.trim(), name.as_deref())
                    .await?;
                // The first attempt counts: its reason shows at once.
                self.inner
                    .db
                    .retry_pending_contact(
                        &inviter,
                        &reason,
                        Timestamp::now().saturating_add(FIRST_BACKOFF),
                    )
                    .await?;
                self.inner.pending_added.notify_one();
                Ok(Accepted::Pending {
                    inviter: invite.inviter(),
                    reason,
                })
            }
        }
    }

    async fn redeem(
        &self,
        invite: &Invite,
        name: Option<String>,
    ) -> Result<Contact, RedeemFailure> {
        self.redeem_at(invite, name, invite.addrs()).await
    }

    async fn redeem_at(
        &self,
        invite: &Invite,
        name: Option<String>,
        addrs: Vec<Multiaddr>,
    ) -> Result<Contact, RedeemFailure> {
        let request = RedeemRequest {
            version: 1,
            secret: invite.secret(),
            card: self
                .my_card()
                .await
                .map_err(RedeemFailure::Failed)?
                .to_bytes(),
        };
        let inviter_peer = invite.device().peer_id();
        let why = |error: &str| crate::connectivity::why_unreachable(&addrs, error);
        let payload = wire::encode(&request);
        let started = tokio::time::Instant::now();
        let mut bytes = None;
        let mut last = String::from("timed out");
        // A dial to the inviter already under way (discovery's, to addresses it knew before)
        // takes the request with it when it fails; one more try then goes to the invite's
        // addresses.
        for _ in 0..2 {
            let left = REDEEM_TIMEOUT.saturating_sub(started.elapsed());
            let call = self.inner.net.request(
                inviter_peer,
                Protocol::Invite,
                payload.clone(),
                addrs.clone(),
            );
            match tokio::time::timeout(left, call).await {
                Ok(Ok(answer)) => {
                    bytes = Some(answer);
                    break;
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => break,
            }
        }
        let Some(bytes) = bytes else {
            return Err(RedeemFailure::Unreachable(why(&last)));
        };
        let response: RedeemResponse = wire::decode(&bytes, Protocol::Invite.max_response())
            .map_err(|_| {
                RedeemFailure::Failed(ContactError::Refused("unreadable answer".into()))
            })?;
        let card = match response {
            RedeemResponse::Accepted { card } => card,
            RedeemResponse::Expired => return Err(RedeemFailure::Failed(ContactError::Expired)),
            RedeemResponse::Used => return Err(RedeemFailure::Failed(ContactError::Used)),
            RedeemResponse::Refused { reason } => {
                return Err(RedeemFailure::Failed(ContactError::Refused(reason)));
            }
        };
        let card = ContactCard::from_bytes(&card).map_err(|e| {
            RedeemFailure::Failed(ContactError::Refused(format!("invalid contact card: {e}")))
        })?;
        if card.user_id() != invite.inviter() {
            return Err(RedeemFailure::Failed(ContactError::Refused(
                "the answer came from another user than the inviter".into(),
            )));
        }
        let (contact, _) = self
            .inner
            .vault
            .put_contact(card, name)
            .await
            .map_err(|e| RedeemFailure::Failed(e.into()))?;
        self.added(&contact, Some((inviter_peer, invite.addrs())))
            .await;
        Ok(contact)
    }

    /// Tells the peer table who the contacts are now (after any change to them).
    pub async fn refresh(&self) {
        match self.inner.vault.contacts().await {
            Ok(contacts) => self
                .inner
                .peers
                .set_contacts(contacts.iter().map(devices_of)),
            Err(e) => tracing::warn!(error = %e, "cannot read the contacts"),
        }
    }

    /// After a contact is stored: tell clients, remember its addresses, note its devices.
    async fn added(&self, contact: &Contact, reached_at: Option<(PeerId, Vec<Multiaddr>)>) {
        self.refresh().await;
        self.inner.events.publish(Event::ContactAdded {
            user_id: contact.user_id.to_string(),
            name: contact.name.clone(),
        });
        let mut devices: Vec<(
            PeerId,
            Vec<Multiaddr>,
            Option<volli_core::DeviceCertificate>,
        )> = Vec::new();
        for cert in &contact.devices {
            self.inner.peers.verified(cert.clone());
            let mut addrs = self
                .inner
                .peers
                .get(&cert.peer_id())
                .map(|e| e.addrs)
                .unwrap_or_default();
            if let Some((peer, extra)) = &reached_at
                && *peer == cert.peer_id()
            {
                for a in extra {
                    if !addrs.contains(a) {
                        addrs.push(a.clone());
                    }
                }
            }
            devices.push((cert.peer_id(), addrs, Some(cert.clone())));
        }
        self.inner.discovery.learn(contact.user_id, &devices).await;
    }

    /// Answers a redemption (inviter side). `peer` is the requesting device, proven by Noise.
    pub async fn handle_redeem(&self, peer: PeerId, payload: &[u8]) -> Vec<u8> {
        let refuse = |reason: &str| {
            wire::encode(&RedeemResponse::Refused {
                reason: reason.to_owned(),
            })
        };
        let Ok(request) = wire::decode::<RedeemRequest>(payload, Protocol::Invite.max_request())
        else {
            return refuse("malformed request");
        };
        let Ok(card) = ContactCard::from_bytes(&request.card) else {
            return refuse("invalid contact card");
        };
        if !card.devices().iter().any(|d| d.peer_id() == peer) {
            return refuse("the contact card does not list the requesting device");
        }
        if card.user_id() == self.inner.identity.user_id() {
            return refuse("this is your own invite");
        }
        let id = invite::secret_id(&request.secret);
        let outcome = self
            .inner
            .db
            .redeem_invite(&id, &card.user_id().to_string(), Timestamp::now())
            .await;
        let response = match outcome {
            Ok(Redemption::Accepted) => match self.inner.vault.put_contact(card, None).await {
                Ok((contact, is_new)) => {
                    if is_new {
                        tracing::info!(contact = %contact.user_id, "invite redeemed");
                    }
                    self.added(&contact, None).await;
                    match self.my_card().await {
                        Ok(card) => RedeemResponse::Accepted {
                            card: card.to_bytes(),
                        },
                        Err(e) => RedeemResponse::Refused {
                            reason: format!("the inviter's node cannot answer: {e}"),
                        },
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot store a new contact");
                    RedeemResponse::Refused {
                        reason: "the inviter's node failed".into(),
                    }
                }
            },
            Ok(Redemption::Expired) => RedeemResponse::Expired,
            Ok(Redemption::Used) => RedeemResponse::Used,
            Ok(Redemption::Unknown) => RedeemResponse::Refused {
                reason: "unknown invite".into(),
            },
            Ok(Redemption::Removed) => RedeemResponse::Refused {
                reason: "you were removed as a contact; ask for a new invite".into(),
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot count an invite redemption");
                RedeemResponse::Refused {
                    reason: "the inviter's node failed".into(),
                }
            }
        };
        wire::encode(&response)
    }

    /// Every contact.
    pub async fn list(&self) -> Result<Vec<Contact>, ContactError> {
        Ok(self.inner.vault.contacts().await?)
    }

    /// Invites accepted but not yet redeemed. One whose inviter is already a contact (its
    /// redemption just completed and the row is about to go) is not pending any more.
    pub async fn pending(&self) -> Result<Vec<volli_store::PendingContact>, ContactError> {
        let mut still = Vec::new();
        for p in self.inner.db.pending_contacts().await? {
            let known = match p.inviter.parse::<UserId>() {
                Ok(user) => self.inner.vault.contact(user).await?.is_some(),
                Err(_) => false,
            };
            if !known {
                still.push(p);
            }
        }
        Ok(still)
    }

    /// One contact.
    pub async fn get(&self, user: UserId) -> Result<Contact, ContactError> {
        self.inner
            .vault
            .contact(user)
            .await?
            .ok_or(ContactError::NotFound)
    }

    /// Gives a contact a name of this user's own (`None`: their own name again).
    pub async fn rename(
        &self,
        user: UserId,
        name: Option<String>,
    ) -> Result<Contact, ContactError> {
        let contact = self
            .inner
            .vault
            .rename_contact(user, name)
            .await?
            .ok_or(ContactError::NotFound)?;
        Ok(contact)
    }

    /// Removes a contact (and any pending invite from them). Invites issued until now no
    /// longer let it back in; it can no longer message this user or use this node as a
    /// relay (`contact.removed` tells the services).
    pub async fn remove(&self, user: UserId) -> Result<(), ContactError> {
        let key = user.to_string();
        let pending = self
            .inner
            .db
            .pending_contacts()
            .await?
            .iter()
            .any(|p| p.inviter == key);
        let known = self.inner.vault.contact(user).await?.is_some();
        if !known && !pending {
            return Err(ContactError::NotFound);
        }
        // The removal is recorded before the contact goes: a crash in between leaves a
        // contact that cannot come back through an old invite, never the other way round.
        self.inner.db.record_removal(&key, Timestamp::now()).await?;
        self.inner.vault.remove_contact(user).await?;
        self.inner.db.remove_pending_contact(&key).await?;
        self.refresh().await;
        self.inner
            .events
            .publish(Event::ContactRemoved { user_id: key });
        Ok(())
    }

    /// Retries pending invites in the background until each succeeds, fails or expires.
    pub fn spawn_retries(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let waiting = this
                    .inner
                    .db
                    .pending_contacts()
                    .await
                    .map_or(true, |p| !p.is_empty());
                if waiting {
                    tokio::time::sleep(RETRY_EVERY).await;
                } else {
                    // Nothing waits: sleep until an invite does (an idle node stays asleep).
                    let _ =
                        tokio::time::timeout(IDLE_CHECK, this.inner.pending_added.notified()).await;
                    continue;
                }
                if let Err(e) = this.retry_due().await {
                    tracing::warn!(error = %e, "retrying pending invites failed");
                }
            }
        });
    }

    async fn retry_due(&self) -> Result<(), ContactError> {
        for pending in self.inner.db.due_pending_contacts(Timestamp::now()).await? {
            let failed = |reason: String| Event::ContactFailed {
                user_id: pending.inviter.clone(),
                reason,
            };
            let invite = match Invite::parse(&pending.link) {
                Ok(invite) if !invite.is_expired(Timestamp::now()) => invite,
                Ok(_) => {
                    self.inner
                        .db
                        .remove_pending_contact(&pending.inviter)
                        .await?;
                    self.inner.events.publish(failed(
                        "the invite expired before the inviter could be reached".into(),
                    ));
                    continue;
                }
                Err(e) => {
                    self.inner
                        .db
                        .remove_pending_contact(&pending.inviter)
                        .await?;
                    self.inner.events.publish(failed(e.to_string()));
                    continue;
                }
            };
            // The inviter may have moved since the invite was made: ask discovery too.
            let mut addrs = invite.addrs();
            for addr in self
                .inner
                .discovery
                .locate(invite.inviter(), invite.device().peer_id())
                .await
            {
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
            match self.redeem_at(&invite, pending.name.clone(), addrs).await {
                Ok(_) => {
                    self.inner
                        .db
                        .remove_pending_contact(&pending.inviter)
                        .await?
                }
                Err(RedeemFailure::Failed(e)) => {
                    self.inner
                        .db
                        .remove_pending_contact(&pending.inviter)
                        .await?;
                    self.inner.events.publish(failed(e.to_string()));
                }
                Err(RedeemFailure::Unreachable(reason)) => {
                    let backoff =
                        crate::limits::backoff(FIRST_BACKOFF, MAX_BACKOFF, pending.attempts);
                    self.inner
                        .db
                        .retry_pending_contact(
                            &pending.inviter,
                            &reason,
                            Timestamp::now().saturating_add(backoff),
                        )
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Parses a user id from the API.
    pub fn parse_user(text: &str) -> Option<UserId> {
        UserId::from_str(text).ok()
    }
}

/// A contact and the devices its latest card lists, as the peer table keeps them.
fn devices_of(contact: &Contact) -> (UserId, Vec<PeerId>) {
    (
        contact.user_id,
        contact.devices.iter().map(|d| d.peer_id()).collect(),
    )
}
