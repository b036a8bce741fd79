//! Web Push: a phone learns of a new message, file offer or pairing request without keeping
//! a WebSocket open. A client registers the subscription its browser or UnifiedPush
//! distributor handed it (`POST /v1/push/subscriptions`); on those events the node POSTs to
//! the subscription's endpoint a payload encrypted to it (RFC 8291 `aes128gcm`, by
//! `web-push-native`) and signed for the push service with this node's VAPID key (RFC 8292,
//! an ES256 JWT signed with `p256`).
//!
//! - No message text or file name leaves the node unless the subscription asked for it
//!   (`include_text`): the push service and the phone's OS see only that something arrived.
//! - Bursts are coalesced: the first event is pushed at once, what follows within
//!   [`COALESCE`] goes out as one push with counts. The `Topic` header lets the push service
//!   keep only the newest of those it still holds for an offline phone.
//! - 429 and 5xx are retried with back-off (honouring `Retry-After`); 404 and 410 mean the
//!   subscription is gone, and it is dropped; a revoked client's subscriptions go with it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use p256::ecdsa::signature::Signer as _;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;
use volli_core::Timestamp;
use volli_store::{Db, PushSubscriptionRow, StoreError};

use crate::config::PushConfig;
use crate::events::{Event, EventBus};

/// Events within this long after a push go out together in the next one.
pub const COALESCE: Duration = Duration::from_secs(2);
/// Tries of one push on 429 and 5xx before it is given up.
const MAX_TRIES: u32 = 6;
/// The longest wait between two tries, whatever `Retry-After` says.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Subscriptions a node keeps.
pub const MAX_SUBSCRIPTIONS: usize = 100;
/// Subscriptions one client keeps (the admin's are counted against the node's only).
pub const MAX_PER_CLIENT: usize = 10;
/// The sizes a push's payload is padded to (the push service learns no more from its
/// length than which of these it is).
const PAYLOAD_SIZES: [usize; 4] = [512, 1024, 2048, 3000];
/// Longest message text a push carries (with `include_text`), so every push fits a size.
const MAX_PUSHED_TEXT: usize = 1500;
/// The longest endpoint URL taken.
pub const MAX_ENDPOINT: usize = 2048;
/// How long a push service should keep a push for an offline device.
const PUSH_TTL_SECS: u64 = 24 * 3600;

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The endpoint is not an acceptable URL.
    #[error("{0}")]
    InvalidEndpoint(String),
    /// The keys are not a P-256 public key and a 16-byte secret.
    #[error("{0}")]
    InvalidKeys(String),
    /// The node has [`MAX_SUBSCRIPTIONS`], or the client [`MAX_PER_CLIENT`].
    #[error("{0}")]
    TooMany(String),
    /// The client was revoked while it subscribed.
    #[error("this client was revoked")]
    Revoked,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A subscription as the API shows it.
#[derive(Clone, Debug)]
pub struct SubscriptionInfo {
    /// Its id.
    pub id: String,
    /// The client that registered it.
    pub client_id: Option<String>,
    /// The push service's host (the full endpoint is a capability URL and is not shown).
    pub push_service: String,
    /// Whether pushes carry message text.
    pub include_text: bool,
    /// When it was registered.
    pub created_at: Timestamp,
    /// When a push to it was last accepted.
    pub last_push_at: Option<Timestamp>,
    /// The last failure, in words.
    pub last_error: Option<String>,
}

/// Push notifications. Cheap to clone.
#[derive(Clone)]
pub struct Push {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    key: p256::ecdsa::SigningKey,
    public_key: String,
    contact: String,
    allow_http: bool,
    http: reqwest::Client,
    subs: Mutex<HashMap<String, Sub>>,
    /// Clients revoked since the start (checked with `subs` locked, so a subscription made
    /// by a request that was authenticated just before its client's revocation is dropped).
    revoked: Mutex<std::collections::HashSet<String>>,
    wake: Notify,
}

struct Sub {
    row: PushSubscriptionRow,
    /// Events waiting to be pushed, by type, and the latest of them.
    counts: BTreeMap<&'static str, u64>,
    latest: Option<Value>,
    /// No push before this (coalescing, or back-off after a 429/5xx).
    not_before: Instant,
    tries: u32,
    sending: bool,
    last_push_at: Option<Timestamp>,
    last_error: Option<String>,
}

impl Sub {
    fn new(row: PushSubscriptionRow) -> Self {
        Self {
            row,
            counts: BTreeMap::new(),
            latest: None,
            not_before: Instant::now(),
            tries: 0,
            sending: false,
            last_push_at: None,
            last_error: None,
        }
    }

    fn info(&self) -> SubscriptionInfo {
        SubscriptionInfo {
            id: self.row.id.clone(),
            client_id: self.row.client_id.clone(),
            push_service: host_of(&self.row.endpoint),
            include_text: self.row.include_text,
            created_at: self.row.created_at,
            last_push_at: self.last_push_at,
            last_error: self.last_error.clone(),
        }
    }
}

fn host_of(endpoint: &str) -> String {
    endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Whether `endpoint`'s host is this machine or a private network (an address literal that
/// is not global, `localhost`, a `.local` name), or is not readable at all.
fn local_endpoint(endpoint: &str) -> bool {
    let Ok(url) = endpoint.parse::<reqwest::Url>() else {
        return true;
    };
    let host = url.host_str().unwrap_or_default();
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        Ok(ip) => !crate::plugins::backends::is_global(ip),
        Err(_) => {
            let name = host.trim_end_matches('.').to_ascii_lowercase();
            name.is_empty()
                || name == "localhost"
                || name.ends_with(".localhost")
                || name.ends_with(".local")
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section leaves the map consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decodes base64url with or without padding (browsers hand out the unpadded form, some
/// distributors the padded one).
fn b64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .or_else(|_| URL_SAFE.decode(text))
        .ok()
}

/// What a push says about `event`, if it is one a phone is told of; the text only with
/// `include_text`.
fn describe(event: &Event, include_text: bool) -> Option<(&'static str, Value)> {
    Some(match event {
        Event::MessageReceived {
            id,
            from,
            body,
            sent_at,
            ..
        } => {
            let mut v =
                json!({"type": "message.received", "id": id, "from": from, "sent_at": sent_at});
            if include_text {
                v["body"] = json!(body);
            }
            ("message.received", v)
        }
        Event::TransferOffered {
            id,
            from,
            name,
            size,
            ..
        } => {
            let mut v = json!({"type": "transfer.offered", "id": id, "from": from, "size": size});
            if include_text {
                v["name"] = json!(name);
            }
            ("transfer.offered", v)
        }
        Event::PairingRequest {
            id, device_name, ..
        } => (
            "pairing.request",
            json!({"type": "pairing.request", "id": id, "device_name": device_name}),
        ),
        _ => return None,
    })
}

impl Push {
    /// Loads the VAPID key (made on first use) and the subscriptions, and starts delivering
    /// pushes for the events on `events`.
    pub async fn start(db: Db, events: &EventBus, config: &PushConfig) -> anyhow::Result<Self> {
        let secret = db
            .vapid_key(|| {
                loop {
                    let mut raw = [0u8; 32];
                    if getrandom::fill(&mut raw).is_ok()
                        && p256::SecretKey::from_slice(&raw).is_ok()
                    {
                        return raw.to_vec();
                    }
                }
            })
            .await?;
        let key = p256::ecdsa::SigningKey::from_slice(&secret)
            .map_err(|e| anyhow::anyhow!("the stored VAPID key is not a P-256 key: {e}"))?;
        let public_key = URL_SAFE_NO_PAD.encode(
            key.verifying_key()
                .as_affine()
                .to_encoded_point(false)
                .as_bytes(),
        );
        // Subscriptions an earlier release took to this machine or its network go.
        let mut subs = HashMap::new();
        for row in db.push_subscriptions().await? {
            if !config.allow_http && local_endpoint(&row.endpoint) {
                tracing::warn!(subscription = %row.id, "dropping a push subscription to this machine or its network");
                db.delete_push_subscription(&row.id).await?;
                continue;
            }
            subs.insert(row.id.clone(), Sub::new(row));
        }
        let push = Self {
            inner: Arc::new(Inner {
                db,
                key,
                public_key,
                contact: config.contact.trim().to_owned(),
                allow_http: config.allow_http,
                http: {
                    // No proxy from the environment: it would reach what the resolver
                    // below refuses.
                    let builder = reqwest::Client::builder()
                        .timeout(Duration::from_secs(30))
                        .no_proxy()
                        .redirect(reqwest::redirect::Policy::none());
                    // A push service is on the internet: a name that resolves to this machine
                    // or its network is refused (unless a local one is allowed, as tests do).
                    if config.allow_http {
                        builder.build()?
                    } else {
                        builder
                            .dns_resolver(Arc::new(crate::plugins::backends::GlobalOnly))
                            .build()?
                    }
                },
                subs: Mutex::new(subs),
                revoked: Mutex::new(std::collections::HashSet::new()),
                wake: Notify::new(),
            }),
        };
        push.spawn(events);
        Ok(push)
    }

    /// The VAPID public key (an uncompressed P-256 point, base64url), for
    /// `applicationServerKey`.
    pub fn public_key(&self) -> &str {
        &self.inner.public_key
    }

    /// Registers a subscription for `client` (none: the admin); the same endpoint again
    /// replaces the earlier one. Returns its id.
    pub async fn subscribe(
        &self,
        client: Option<&str>,
        endpoint: &str,
        p256dh: &str,
        auth: &str,
        include_text: bool,
    ) -> Result<String, PushError> {
        let endpoint = endpoint.trim();
        let url: reqwest::Url = endpoint
            .parse()
            .map_err(|e| PushError::InvalidEndpoint(format!("endpoint is not a URL: {e}")))?;
        let scheme_ok =
            url.scheme() == "https" || (self.inner.allow_http && url.scheme() == "http");
        // An address on this machine or its network is no push service: refused (it would
        // let a client probe the node's neighbourhood), unless local ones are allowed.
        if local_endpoint(endpoint) && !self.inner.allow_http {
            return Err(PushError::InvalidEndpoint(
                "the endpoint's host is this machine or a private network, not a push service"
                    .into(),
            ));
        }
        if !scheme_ok || url.host_str().is_none() || endpoint.len() > MAX_ENDPOINT {
            return Err(PushError::InvalidEndpoint(format!(
                "endpoint must be an https:// URL of at most {MAX_ENDPOINT} characters{}",
                if self.inner.allow_http {
                    " (or http://)"
                } else {
                    ""
                }
            )));
        }
        let p256dh = b64(p256dh)
            .filter(|k| p256::PublicKey::from_sec1_bytes(k).is_ok())
            .ok_or_else(|| {
                PushError::InvalidKeys(
                    "keys.p256dh must be a P-256 public key, base64url (from the subscription)"
                        .into(),
                )
            })?;
        let auth = b64(auth).filter(|a| a.len() == 16).ok_or_else(|| {
            PushError::InvalidKeys("keys.auth must be 16 bytes, base64url".into())
        })?;
        {
            let subs = lock(&self.inner.subs);
            let known = subs.values().any(|s| s.row.endpoint == endpoint);
            if subs.len() >= MAX_SUBSCRIPTIONS && !known {
                return Err(PushError::TooMany(format!(
                    "this node has {MAX_SUBSCRIPTIONS} push subscriptions already; remove one first"
                )));
            }
            if let Some(client) = client
                && !known
                && subs
                    .values()
                    .filter(|s| s.row.client_id.as_deref() == Some(client))
                    .count()
                    >= MAX_PER_CLIENT
            {
                return Err(PushError::TooMany(format!(
                    "this client has {MAX_PER_CLIENT} push subscriptions already; remove one first"
                )));
            }
        }
        let mut raw = [0u8; 9];
        getrandom::fill(&mut raw).map_err(|e| PushError::InvalidKeys(e.to_string()))?;
        let mut row = PushSubscriptionRow {
            id: URL_SAFE_NO_PAD.encode(raw),
            client_id: client.map(str::to_owned),
            endpoint: endpoint.to_owned(),
            p256dh,
            auth,
            include_text,
            created_at: Timestamp::now(),
        };
        // The database refuses a subscription for a client that is gone.
        row.id = match self.inner.db.put_push_subscription(&row).await {
            Ok(id) => id,
            Err(e) if e.to_string().contains("the client was revoked") => {
                return Err(PushError::Revoked);
            }
            Err(e) => return Err(e.into()),
        };
        let id = row.id.clone();
        {
            let mut subs = lock(&self.inner.subs);
            let revoked = client.is_some_and(|c| lock(&self.inner.revoked).contains(c));
            if !revoked {
                subs.retain(|_, s| s.row.endpoint != row.endpoint);
                subs.insert(id.clone(), Sub::new(row));
                return Ok(id);
            }
        }
        // Revoked while this request was on its way: its row goes too.
        self.inner.db.delete_push_subscription(&id).await?;
        Err(PushError::Revoked)
    }

    /// The subscriptions, oldest first; only `client`'s unless `all`.
    pub fn list(&self, client: Option<&str>, all: bool) -> Vec<SubscriptionInfo> {
        let mut list: Vec<SubscriptionInfo> = lock(&self.inner.subs)
            .values()
            .filter(|s| all || s.row.client_id.as_deref() == client)
            .map(Sub::info)
            .collect();
        list.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        list
    }

    /// Removes a subscription (only `client`'s own unless `all`); false if there is none.
    pub async fn unsubscribe(
        &self,
        id: &str,
        client: Option<&str>,
        all: bool,
    ) -> Result<bool, StoreError> {
        let mine = lock(&self.inner.subs)
            .get(id)
            .is_some_and(|s| all || s.row.client_id.as_deref() == client);
        if !mine {
            return Ok(false);
        }
        self.drop_subscription(id).await?;
        Ok(true)
    }

    async fn drop_subscription(&self, id: &str) -> Result<(), StoreError> {
        self.inner.db.delete_push_subscription(id).await?;
        lock(&self.inner.subs).remove(id);
        Ok(())
    }

    /// Pushes a test notification to a subscription (only `client`'s own unless `all`), or
    /// to all of them; returns how many were queued.
    pub fn test(&self, id: Option<&str>, client: Option<&str>, all: bool) -> usize {
        let mut queued = 0;
        let now = Timestamp::now().to_rfc3339();
        for sub in lock(&self.inner.subs).values_mut() {
            let mine = all || sub.row.client_id.as_deref() == client;
            if mine && id.is_none_or(|id| id == sub.row.id) {
                *sub.counts.entry("test").or_default() += 1;
                sub.latest = Some(json!({"type": "test", "at": now}));
                queued += 1;
            }
        }
        self.inner.wake.notify_one();
        queued
    }

    fn spawn(&self, events: &EventBus) {
        let mut subscription = events.subscribe();
        let push = self.clone();
        tokio::spawn(async move {
            while let Some(event) = subscription.next().await {
                if let Event::ClientRevoked { id } = &*event {
                    push.forget_client(id);
                    continue;
                }
                // Events were missed (a revocation among them, maybe): what the database
                // holds is the truth.
                if let Event::Resync { .. } = &*event {
                    push.reload().await;
                    continue;
                }
                let mut any = false;
                for sub in lock(&push.inner.subs).values_mut() {
                    if let Some((kind, v)) = describe(&event, sub.row.include_text) {
                        *sub.counts.entry(kind).or_default() += 1;
                        sub.latest = Some(v);
                        any = true;
                    }
                }
                if any {
                    push.inner.wake.notify_one();
                }
            }
        });
        let push = self.clone();
        tokio::spawn(async move { push.deliver().await });
    }

    /// Forgets revoked client `id`'s subscriptions (the database dropped their rows with the
    /// client, in the same transaction), and any it makes in a request already under way.
    pub fn forget_client(&self, id: &str) {
        let mut subs = lock(&self.inner.subs);
        lock(&self.inner.revoked).insert(id.to_owned());
        subs.retain(|_, s| s.row.client_id.as_deref() != Some(id));
    }

    /// Keeps only the subscriptions the database holds (their pending counts stay).
    async fn reload(&self) {
        let Ok(rows) = self.inner.db.push_subscriptions().await else {
            return;
        };
        let mut subs = lock(&self.inner.subs);
        subs.retain(|id, _| rows.iter().any(|r| &r.id == id));
        for row in rows {
            subs.entry(row.id.clone()).or_insert_with(|| Sub::new(row));
        }
    }

    /// Sends what is due, then sleeps until the next thing is due or an event arrives.
    async fn deliver(self) {
        loop {
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            let mut due = Vec::new();
            for sub in lock(&self.inner.subs).values_mut() {
                if sub.counts.is_empty() || sub.sending {
                    continue;
                }
                if sub.not_before <= now {
                    sub.sending = true;
                    let counts = std::mem::take(&mut sub.counts);
                    let latest = sub.latest.take();
                    due.push((sub.row.clone(), counts, latest));
                } else {
                    next = Some(next.map_or(sub.not_before, |n| n.min(sub.not_before)));
                }
            }
            for (row, counts, latest) in due {
                let push = self.clone();
                tokio::spawn(async move { push.send(row, counts, latest).await });
            }
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.inner.wake.notified() => {}
                    }
                }
                None => self.inner.wake.notified().await,
            }
        }
    }

    /// One push, and what its answer means for the subscription.
    async fn send(
        &self,
        row: PushSubscriptionRow,
        counts: BTreeMap<&'static str, u64>,
        latest: Option<Value>,
    ) {
        // The same urgency for every push and a padded length: the push service learns
        // that something arrived, not what.
        let mut latest = latest;
        // A text that would not fit one push is cut (the app fetches the whole message).
        if let Some(body) = latest
            .as_mut()
            .and_then(|l| l.get_mut("body"))
            .and_then(|b| b.as_str().map(str::to_owned))
            && body.len() > MAX_PUSHED_TEXT
        {
            let mut end = MAX_PUSHED_TEXT;
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            if let Some(l) = latest.as_mut() {
                l["body"] = json!(format!("{}…", &body[..end]));
                l["truncated"] = json!(true);
            }
        }
        let mut payload = json!({"counts": counts, "latest": latest}).to_string();
        let size = PAYLOAD_SIZES
            .iter()
            .copied()
            .find(|s| *s >= payload.len())
            .unwrap_or(payload.len());
        payload.extend(std::iter::repeat_n(' ', size - payload.len()));
        let outcome = self.post(&row, payload.into_bytes(), "high").await;
        let now = Instant::now();
        let mut gone = false;
        {
            let mut subs = lock(&self.inner.subs);
            let Some(sub) = subs.get_mut(&row.id) else {
                return;
            };
            sub.sending = false;
            match outcome {
                Outcome::Accepted => {
                    sub.tries = 0;
                    sub.last_push_at = Some(Timestamp::now());
                    sub.last_error = None;
                    sub.not_before = now + COALESCE;
                }
                Outcome::Retry(why, after) => {
                    sub.tries += 1;
                    if sub.tries >= MAX_TRIES {
                        tracing::warn!(subscription = %row.id, "push given up after {MAX_TRIES} tries: {why}");
                        sub.tries = 0;
                        sub.not_before = now + COALESCE;
                    } else {
                        // Put back what was not delivered, under what came since.
                        for (k, n) in counts {
                            *sub.counts.entry(k).or_default() += n;
                        }
                        if sub.latest.is_none() {
                            sub.latest = latest;
                        }
                        let backoff = Duration::from_secs(1 << sub.tries.min(8));
                        sub.not_before = now + after.unwrap_or(backoff).min(MAX_BACKOFF);
                    }
                    sub.last_error = Some(why);
                }
                Outcome::Gone(why) => {
                    tracing::info!(subscription = %row.id, "the push service says the subscription is gone ({why}); dropping it");
                    gone = true;
                }
                Outcome::Refused(why) => {
                    tracing::warn!(subscription = %row.id, "the push service refused a push: {why}");
                    sub.last_error = Some(why);
                    sub.not_before = now + COALESCE;
                }
            }
        }
        if gone && let Err(e) = self.drop_subscription(&row.id).await {
            tracing::warn!(subscription = %row.id, "cannot drop the subscription: {e}");
        }
        self.inner.wake.notify_one();
    }

    async fn post(&self, row: &PushSubscriptionRow, payload: Vec<u8>, urgency: &str) -> Outcome {
        let request = match self.request(row, payload) {
            Ok(r) => r,
            Err(why) => return Outcome::Refused(why),
        };
        let (parts, body) = request.into_parts();
        let mut builder = self
            .inner
            .http
            .post(parts.uri.to_string())
            .headers(parts.headers)
            .header("Urgency", urgency)
            .header("Topic", "volli")
            .body(body);
        builder = builder.header(
            reqwest::header::AUTHORIZATION,
            match self.vapid(&row.endpoint) {
                Ok(v) => v,
                Err(why) => return Outcome::Refused(why),
            },
        );
        let response = match builder.send().await {
            Ok(r) => r,
            // Without the cause: a client should not learn from it what is on the network.
            Err(_) => return Outcome::Retry("the push service could not be reached".into(), None),
        };
        let status = response.status().as_u16();
        let after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        match status {
            200..=299 => Outcome::Accepted,
            404 | 410 => Outcome::Gone(format!("{status}")),
            429 | 500..=599 => Outcome::Retry(format!("the push service answered {status}"), after),
            _ => Outcome::Refused(format!("the push service answered {status}")),
        }
    }

    /// The encrypted request (RFC 8291) without its VAPID header.
    fn request(
        &self,
        row: &PushSubscriptionRow,
        payload: Vec<u8>,
    ) -> Result<axum::http::Request<Vec<u8>>, String> {
        let endpoint = row
            .endpoint
            .parse()
            .map_err(|e| format!("bad endpoint: {e}"))?;
        let key = p256::PublicKey::from_sec1_bytes(&row.p256dh).map_err(|e| e.to_string())?;
        if row.auth.len() != 16 {
            return Err("the stored auth secret is not 16 bytes".into());
        }
        let mut auth = web_push_native::Auth::default();
        for (to, from) in auth.iter_mut().zip(&row.auth) {
            *to = *from;
        }
        web_push_native::WebPushBuilder::new(endpoint, key, auth)
            .with_valid_duration(Duration::from_secs(PUSH_TTL_SECS))
            .build(payload)
            .map_err(|e| format!("cannot encrypt the push: {e}"))
    }

    /// `Authorization: vapid t=<JWT>, k=<public key>` for the push service of `endpoint`
    /// (RFC 8292): an ES256 JWT whose audience is the service's origin, valid 12 hours.
    fn vapid(&self, endpoint: &str) -> Result<String, String> {
        let url: reqwest::Url = endpoint.parse().map_err(|e| format!("bad endpoint: {e}"))?;
        let audience = url.origin().ascii_serialization();
        let expires = Timestamp::now()
            .saturating_add(Duration::from_secs(12 * 3600))
            .as_millis()
            / 1000;
        let mut claims = json!({"aud": audience, "exp": expires});
        if !self.inner.contact.is_empty() {
            claims["sub"] = json!(self.inner.contact);
        }
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{claims}");
        let signature: p256::ecdsa::Signature = self.inner.key.sign(signed.as_bytes());
        let jwt = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        Ok(format!("vapid t={jwt}, k={}", self.inner.public_key))
    }
}

enum Outcome {
    Accepted,
    Retry(String, Option<Duration>),
    Gone(String),
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_say_what_arrived_and_carry_text_only_when_asked() {
        let message = Event::MessageReceived {
            id: "m1".into(),
            from: "alice".into(),
            body: "secret plans".into(),
            sent_at: "2026-12-03T00:00:00Z".into(),
            reply_to: None,
        };
        let (kind, plain) = describe(&message, false).unwrap();
        assert_eq!(kind, "message.received");
        assert!(!plain.to_string().contains("secret"), "{plain}");
        let (_, text) = describe(&message, true).unwrap();
        assert_eq!(text["body"], "secret plans");
        let offer = Event::TransferOffered {
            id: "t1".into(),
            from: "alice".into(),
            name: "plans.pdf".into(),
            size: 10,
            group: None,
        };
        assert!(
            !describe(&offer, false)
                .unwrap()
                .1
                .to_string()
                .contains("plans.pdf")
        );
        assert!(describe(&Event::Resync { missed: 1 }, true).is_none());
    }

    #[test]
    fn keys_are_read_padded_or_not() {
        assert_eq!(b64("AAEC").unwrap(), [0, 1, 2]);
        assert_eq!(b64("AAE=").unwrap(), [0, 1]);
        assert_eq!(b64("AAE").unwrap(), [0, 1]);
        assert!(b64("**").is_none());
        assert_eq!(
            host_of("https://fcm.googleapis.com/fcm/send/x"),
            "fcm.googleapis.com"
        );
    }
}
