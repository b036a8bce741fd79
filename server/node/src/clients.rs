//! Client tokens: credentials for phones, browsers and scripts, each limited to scopes.
//!
//! The admin token in `<data-dir>/admin.token` can do everything, including pairing a device
//! that receives the user's master secret; a phone app should not hold it. A client token is
//! created by the admin (`POST /v1/clients`, shown once), or traded by the client itself for a
//! one-time login code the admin showed it as a QR code, so the long-lived token never
//! appears in a link. Only the token's BLAKE3 hash is stored (in the node's database, not the
//! synced vault: a client belongs to this node). Revoking removes it from memory before the
//! call returns, so the next request with it gets 401, and its open event streams close.
//!
//! When a token was last used is kept in memory and written at most once a minute per
//! client; a crash forgets at most that minute.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::sync::watch;
use tokio::time::Instant;
use volli_core::Timestamp;
use volli_store::{ClientRow, Db, StoreError};

use crate::events::{Event, EventBus};

/// What a credential may do. `admin` includes every other scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Read everything (`GET`), and follow the event stream.
    Read,
    /// Send and delete messages.
    Messages,
    /// Send, accept and manage file transfers.
    Files,
    /// Invite, add and remove contacts.
    Contacts,
    /// Everything else: settings, plugins, devices and pairing, clients.
    Admin,
}

impl Scope {
    /// Every scope, in the order they are listed.
    pub const ALL: [Scope; 5] = [
        Scope::Read,
        Scope::Messages,
        Scope::Files,
        Scope::Contacts,
        Scope::Admin,
    ];

    /// Its name in the API.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Messages => "messages",
            Scope::Files => "files",
            Scope::Contacts => "contacts",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// The scope named `name`.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// Every scope: the admin token and admin page sessions.
    pub const ALL: Scopes = Scopes(0b1_1111);

    /// Whether a credential with these scopes may act where `scope` is needed.
    pub fn allows(self, scope: Scope) -> bool {
        self.0 & (scope.bit() | Scope::Admin.bit()) != 0
    }

    /// The scopes named in `names`; an unknown or repeated name, or none at all, is an error
    /// that says which.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Scopes, String> {
        let mut set = Scopes::default();
        for name in names {
            let name = name.as_ref().trim();
            let scope = Scope::parse(name).ok_or_else(|| {
                format!(
                    "unknown scope `{name}`; scopes are {}",
                    Scope::ALL.map(Scope::name).join(", ")
                )
            })?;
            if set.0 & scope.bit() != 0 {
                return Err(format!("scope `{name}` is listed twice"));
            }
            set.0 |= scope.bit();
        }
        if set.0 == 0 {
            return Err("a client needs at least one scope".into());
        }
        Ok(set)
    }

    /// The names of the scopes in the set.
    pub fn names(self) -> Vec<String> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.0 & s.bit() != 0)
            .map(|s| s.name().to_owned())
            .collect()
    }
}

/// The most clients a node keeps.
pub const MAX_CLIENTS: usize = 100;
/// The longest client name, in characters.
pub const MAX_NAME: usize = 64;
/// How long a login code works unless asked otherwise.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// The longest a login code may be asked to work.
pub const MAX_LOGIN_TTL: Duration = Duration::from_secs(3600);
/// Login codes outstanding at once.
const MAX_LOGIN_CODES: usize = 32;
/// How often, at most, a client's last use is written.
const TOUCH_EVERY_MS: i64 = 60_000;
/// Every client token starts with this, so a leaked one is recognised for what it is.
pub const TOKEN_PREFIX: &str = "volli_c_";

/// A client as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its scopes.
    pub scopes: Scopes,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its token was last used.
    pub last_used_at: Option<Timestamp>,
}

/// Who a request comes from, as far as a route's scope goes.
#[derive(Clone, Debug)]
pub struct Caller {
    /// What it may do.
    pub scopes: Scopes,
    /// The client, for a client token (none for the admin token and admin page sessions).
    pub client: Option<ClientSession>,
    /// For an admin page session: a signal that turns true when it ends (the page logs
    /// out, or a newer session pushes it out), and when it expires.
    pub session: Option<(watch::Receiver<bool>, std::time::Instant)>,
}

impl Caller {
    /// The admin token, or an admin page session.
    pub fn admin() -> Self {
        Self {
            scopes: Scopes::ALL,
            client: None,
            session: None,
        }
    }

    /// Whether what the caller authenticated with still holds (a client not revoked, a
    /// session not ended or expired).
    pub fn live(&self) -> bool {
        self.client.as_ref().is_none_or(|c| !*c.revoked.borrow())
            && self.session.as_ref().is_none_or(|(ended, expires)| {
                !*ended.borrow() && *expires > std::time::Instant::now()
            })
    }

    /// Resolves when what the caller authenticated with ends: its client is revoked, or
    /// its session ends or expires (true); or when the node lets go of it while shutting
    /// down (false). Never for the admin token.
    pub async fn ended(&mut self) -> bool {
        let client = async {
            match &mut self.client {
                // Revoking marks the client before forgetting it; a sender dropped unmarked
                // is the node going away, which clients must not take for a revocation.
                Some(c) => c.revoked.wait_for(|revoked| *revoked).await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let session = async {
            match &mut self.session {
                Some((ended, expires)) => {
                    let expires = tokio::time::Instant::from_std(*expires);
                    tokio::select! {
                        r = ended.wait_for(|ended| *ended) => r.is_ok(),
                        () = tokio::time::sleep_until(expires) => true,
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = client => r,
            r = session => r,
        }
    }
}

/// The client behind a request: its id, and a signal that turns true when it is revoked.
#[derive(Clone, Debug)]
pub struct ClientSession {
    /// The client's id.
    pub id: String,
    /// True once the client is revoked.
    pub revoked: watch::Receiver<bool>,
}

/// Why a client could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The name is empty, too long or has control characters.
    #[error("a client name is 1 to {MAX_NAME} characters, without control characters")]
    InvalidName,
    /// The scopes are not a valid list.
    #[error("{0}")]
    InvalidScopes(String),
    /// The node already has [`MAX_CLIENTS`].
    #[error("this node has {MAX_CLIENTS} clients already; revoke one first")]
    TooMany,
    /// Too many login codes are waiting to be used.
    #[error("too many login codes are waiting to be used; try again in a few minutes")]
    TooManyCodes,
    /// The login code's lifetime is out of range.
    #[error("a login code works for 60 to 3600 seconds")]
    InvalidTtl,
    /// The system's random source failed.
    #[error("no randomness: {0}")]
    Random(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The client tokens of this node. Cheap to clone.
#[derive(Clone)]
pub struct Clients {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    events: EventBus,
    by_token: Mutex<HashMap<blake3::Hash, Arc<Live>>>,
    login_codes: Mutex<HashMap<blake3::Hash, PendingLogin>>,
}

/// A client in memory.
struct Live {
    id: String,
    name: String,
    scopes: Scopes,
    created_at: Timestamp,
    /// Milliseconds since the epoch; 0: never.
    last_used: AtomicI64,
    /// What the database has.
    written: AtomicI64,
    revoked: watch::Sender<bool>,
}

impl Live {
    fn info(&self) -> ClientInfo {
        let used = self.last_used.load(Ordering::Relaxed);
        ClientInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            scopes: self.scopes,
            created_at: self.created_at,
            last_used_at: (used > 0).then(|| Timestamp::from_millis(used)),
        }
    }
}

struct PendingLogin {
    name: String,
    scopes: Scopes,
    expires: Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section leaves its map consistent; a panic elsewhere does not matter.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn random(bytes: usize) -> Result<String, ClientError> {
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw).map_err(|e| ClientError::Random(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(raw))
}

fn check_name(name: &str) -> Result<String, ClientError> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ClientError::InvalidName);
    }
    Ok(name.to_owned())
}

impl Clients {
    /// Loads the clients saved in `db`.
    pub async fn load(db: Db, events: EventBus) -> Result<Self, StoreError> {
        let mut by_token = HashMap::new();
        for row in db.clients().await? {
            let Some(scopes) = Scopes::parse(&row.scopes.split(',').collect::<Vec<_>>()).ok()
            else {
                tracing::warn!(client = %row.id, scopes = %row.scopes, "a stored client has unknown scopes; it is not loaded");
                continue;
            };
            let used = row.last_used_at.map_or(0, Timestamp::as_millis);
            by_token.insert(
                blake3::Hash::from_bytes(row.token_hash),
                Arc::new(Live {
                    id: row.id,
                    name: row.name,
                    scopes,
                    created_at: row.created_at,
                    last_used: AtomicI64::new(used),
                    written: AtomicI64::new(used),
                    revoked: watch::Sender::new(false),
                }),
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                events,
                by_token: Mutex::new(by_token),
                login_codes: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Creates a client; returns it with its token, which is not kept and cannot be shown
    /// again.
    pub async fn create(
        &self,
        name: &str,
        scopes: &[String],
    ) -> Result<(ClientInfo, String), ClientError> {
        let name = check_name(name)?;
        let scopes = Scopes::parse(scopes).map_err(ClientError::InvalidScopes)?;
        self.add(name, scopes).await
    }

    async fn add(&self, name: String, scopes: Scopes) -> Result<(ClientInfo, String), ClientError> {
        if lock(&self.inner.by_token).len() >= MAX_CLIENTS {
            return Err(ClientError::TooMany);
        }
        let token = format!("{TOKEN_PREFIX}{}", random(32)?);
        let hash = blake3::hash(token.as_bytes());
        let live = Arc::new(Live {
            id: random(9)?,
            name,
            scopes,
            created_at: Timestamp::now(),
            last_used: AtomicI64::new(0),
            written: AtomicI64::new(0),
            revoked: watch::Sender::new(false),
        });
        // Saved before the token is shown: a client told its token keeps it across a crash.
        self.inner
            .db
            .create_client(&ClientRow {
                id: live.id.clone(),
                name: live.name.clone(),
                scopes: scopes.names().join(","),
                token_hash: *hash.as_bytes(),
                created_at: live.created_at,
                last_used_at: None,
            })
            .await?;
        let info = live.info();
        lock(&self.inner.by_token).insert(hash, live);
        tracing::info!(client = %info.id, name = %info.name, scopes = %scopes.names().join(","), "client created");
        self.inner.events.publish(Event::ClientAdded {
            id: info.id.clone(),
            name: info.name.clone(),
            scopes: scopes.names(),
        });
        Ok((info, token))
    }

    /// Every client, oldest first.
    pub fn list(&self) -> Vec<ClientInfo> {
        let mut all: Vec<ClientInfo> = lock(&self.inner.by_token)
            .values()
            .map(|l| l.info())
            .collect();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        all
    }

    /// Revokes a client: its token stops working at once and its event streams close.
    /// False if there is no client with that id.
    pub async fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        // Deleted on disk first: if that fails, nothing changed.
        let deleted = self.inner.db.delete_client(id).await?;
        let removed = {
            let mut map = lock(&self.inner.by_token);
            let hash = map.iter().find(|(_, l)| l.id == id).map(|(h, _)| *h);
            hash.and_then(|h| map.remove(&h))
        };
        let Some(live) = removed else {
            return Ok(deleted);
        };
        live.revoked.send_replace(true);
        tracing::info!(client = %live.id, name = %live.name, "client revoked");
        self.inner.events.publish(Event::ClientRevoked {
            id: live.id.clone(),
        });
        Ok(true)
    }

    /// The caller a client token stands for, if it is one; notes the use.
    pub fn authenticate(&self, token: &str) -> Option<Caller> {
        if !token.starts_with(TOKEN_PREFIX) {
            return None;
        }
        let live = lock(&self.inner.by_token)
            .get(&blake3::hash(token.as_bytes()))
            .cloned()?;
        let now = Timestamp::now().as_millis();
        live.last_used.store(now, Ordering::Relaxed);
        let written = live.written.load(Ordering::Relaxed);
        if now - written >= TOUCH_EVERY_MS
            && live
                .written
                .compare_exchange(written, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let db = self.inner.db.clone();
            let id = live.id.clone();
            tokio::spawn(async move {
                if let Err(e) = db.touch_client(&id, Timestamp::from_millis(now)).await {
                    tracing::debug!(client = %id, "cannot record the client's last use: {e}");
                }
            });
        }
        Some(Caller {
            session: None,
            scopes: live.scopes,
            client: Some(ClientSession {
                id: live.id.clone(),
                revoked: live.revoked.subscribe(),
            }),
        })
    }

    /// A one-time code that a client trades for a token with `name` and `scopes`
    /// ([`Clients::redeem_login`]); it works once, until the time returned.
    pub fn offer_login(
        &self,
        name: &str,
        scopes: &[String],
        ttl: Option<Duration>,
    ) -> Result<(String, Timestamp), ClientError> {
        let name = check_name(name)?;
        let scopes = Scopes::parse(scopes).map_err(ClientError::InvalidScopes)?;
        let ttl = ttl.unwrap_or(LOGIN_TTL);
        if ttl < Duration::from_secs(60) || ttl > MAX_LOGIN_TTL {
            return Err(ClientError::InvalidTtl);
        }
        let code = random(24)?;
        let now = Instant::now();
        let mut codes = lock(&self.inner.login_codes);
        codes.retain(|_, p| p.expires > now);
        if codes.len() >= MAX_LOGIN_CODES {
            return Err(ClientError::TooManyCodes);
        }
        codes.insert(
            blake3::hash(code.as_bytes()),
            PendingLogin {
                name,
                scopes,
                expires: now + ttl,
            },
        );
        Ok((code, Timestamp::now().saturating_add(ttl)))
    }

    /// Trades a login code (once) for a new client and its token; `None` if the code is
    /// wrong, used or expired.
    pub async fn redeem_login(
        &self,
        code: &str,
    ) -> Result<Option<(ClientInfo, String)>, ClientError> {
        let pending = lock(&self.inner.login_codes).remove(&blake3::hash(code.as_bytes()));
        let Some(pending) = pending.filter(|p| p.expires > Instant::now()) else {
            return Ok(None);
        };
        self.add(pending.name, pending.scopes).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_includes_every_scope_and_others_only_themselves() {
        let read = Scopes::parse(&["read"]).unwrap();
        assert!(read.allows(Scope::Read));
        assert!(!read.allows(Scope::Messages));
        assert!(!read.allows(Scope::Admin));
        let admin = Scopes::parse(&["admin"]).unwrap();
        for s in Scope::ALL {
            assert!(admin.allows(s), "{s:?}");
            assert!(Scopes::ALL.allows(s));
        }
        let phone = Scopes::parse(&["read", "messages"]).unwrap();
        assert_eq!(phone.names(), ["read", "messages"]);
        assert!(phone.allows(Scope::Messages) && !phone.allows(Scope::Files));
    }

    #[test]
    fn bad_scope_lists_say_what_is_wrong() {
        assert!(
            Scopes::parse::<&str>(&[])
                .unwrap_err()
                .contains("at least one")
        );
        assert!(
            Scopes::parse(&["read", "write"])
                .unwrap_err()
                .contains("`write`")
        );
        assert!(
            Scopes::parse(&["read", "read"])
                .unwrap_err()
                .contains("twice")
        );
    }

    async fn clients() -> (tempfile::TempDir, Clients) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("volli.db")).await.unwrap();
        (dir, Clients::load(db, EventBus::new()).await.unwrap())
    }

    #[tokio::test]
    async fn a_token_works_until_revoked_and_survives_a_reload() {
        let (dir, clients) = clients().await;
        let (info, token) = clients
            .create("phone", &["read".into(), "messages".into()])
            .await
            .unwrap();
        assert!(token.starts_with(TOKEN_PREFIX));
        let caller = clients.authenticate(&token).expect("a valid token");
        assert_eq!(caller.scopes, Scopes::parse(&["read", "messages"]).unwrap());
        assert!(clients.authenticate("volli_c_made-up").is_none());
        assert!(clients.list()[0].last_used_at.is_some());

        let db = Db::open(&dir.path().join("volli.db")).await.unwrap();
        let reloaded = Clients::load(db, EventBus::new()).await.unwrap();
        assert!(
            reloaded.authenticate(&token).is_some(),
            "kept across a restart"
        );

        let revoked = caller.client.unwrap().revoked;
        assert!(clients.revoke(&info.id).await.unwrap());
        assert!(*revoked.borrow(), "open streams are told");
        assert!(clients.authenticate(&token).is_none());
        assert!(!clients.revoke(&info.id).await.unwrap());
    }

    #[tokio::test]
    async fn a_login_code_works_once_and_expires() {
        let (_dir, clients) = clients().await;
        let (code, _) = clients
            .offer_login("phone", &["read".into()], None)
            .unwrap();
        let (info, token) = clients.redeem_login(&code).await.unwrap().unwrap();
        assert_eq!(info.name, "phone");
        assert!(clients.authenticate(&token).is_some());
        assert!(clients.redeem_login(&code).await.unwrap().is_none(), "used");

        let (code, _) = clients
            .offer_login("tablet", &["read".into()], Some(Duration::from_secs(60)))
            .unwrap();
        // Paused only around the expiry: the database pool's timeouts must not jump ahead (an
        // expired code is refused before the database is asked).
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(
            clients.redeem_login(&code).await.unwrap().is_none(),
            "expired"
        );
        tokio::time::resume();
        assert!(matches!(
            clients.offer_login("x", &["read".into()], Some(Duration::from_secs(5))),
            Err(ClientError::InvalidTtl)
        ));
        assert!(matches!(
            clients.offer_login(" ", &["read".into()], None),
            Err(ClientError::InvalidName)
        ));
    }
}
