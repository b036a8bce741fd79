//! `/v1/backup`: this user's backup held by friends — set it up (the recovery phrase, shown
//! once), see where it stands, refresh it now — and restoring a fresh node from the phrase.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, OptionalJson};
use crate::backups::{BackupError, Backups, Refreshed, Status};

impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> Self {
        let message = e.to_string();
        match e {
            BackupError::NotSetUp => {
                ApiError::new(StatusCode::CONFLICT, "backup_not_set_up", message)
            }
            BackupError::AlreadySetUp => {
                ApiError::new(StatusCode::CONFLICT, "backup_exists", message)
            }
            BackupError::NotAdmin => ApiError::new(StatusCode::FORBIDDEN, "not_admin", message),
            BackupError::NoHolders(_) => ApiError::new(StatusCode::CONFLICT, "no_holders", message),
            BackupError::InvalidPhrase(_) => ApiError::bad_request("invalid_phrase", message),
            BackupError::NotFound(_) => ApiError::not_found("backup_not_found", message),
            BackupError::Incomplete(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "backup_incomplete",
                message,
            ),
            BackupError::NodeNotEmpty => {
                ApiError::new(StatusCode::CONFLICT, "node_not_empty", message)
            }
            BackupError::Busy => ApiError::new(StatusCode::CONFLICT, "backup_busy", message),
            _ => ApiError::internal(e),
        }
    }
}

/// Options of `POST /v1/backup/setup`.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct SetupRequest {
    /// Make a new phrase even though one is set up: the old one stops working once the
    /// holders have the new backup.
    #[serde(default)]
    pub rotate: bool,
}

/// A new recovery phrase. Shown this once: the node keeps only a key derived from it.
#[derive(Serialize, ToSchema)]
pub struct PhraseView {
    /// The twelve words, separated by spaces.
    #[schema(
        example = "abandon ability able about above absent absorb abstract absurd abuse access accident"
    )]
    pub phrase: String,
    /// The same words, one by one.
    pub words: Vec<String>,
}

/// One holder of this user's backup.
#[derive(Serialize, ToSchema)]
pub struct HolderView {
    /// The contact holding a share.
    pub user_id: String,
    /// This user's name for it.
    pub name: String,
    /// Which share of each part it keeps (0 to n − 1).
    pub slot: u8,
    /// Whether one of its devices is connected now.
    pub online: bool,
    /// When it last took a backup whole (RFC 3339; null: never yet).
    pub updated_at: Option<String>,
    /// When it last answered (RFC 3339).
    pub seen_at: String,
    /// Whether it holds the newest backup whole.
    pub current: bool,
    /// Bytes it holds for this user.
    pub bytes: u64,
    /// Why it last refused a share (over its quota, say), if it did; its share moves to
    /// another friend at the next refresh.
    pub refused: Option<String>,
}

/// What this node holds of its contacts' backups.
#[derive(Serialize, ToSchema)]
pub struct HeldView {
    /// Pieces held.
    pub pieces: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Contacts they are for.
    pub contacts: u64,
    /// `[backup] offer_bytes`: what each contact may keep here (0: none).
    pub offer_bytes: u64,
    /// `[backup] max_total_bytes`.
    pub max_total_bytes: u64,
}

/// Where this user's backup stands.
#[derive(Serialize, ToSchema)]
pub struct BackupView {
    /// `off` (no recovery phrase on this device), `pending` (set up, not made yet), `ok`
    /// (held whole by more holders than needed), `at_risk` (exactly as many as needed: one
    /// more lost and it is gone), `incomplete` (fewer than needed hold the newest whole).
    #[schema(example = "ok")]
    pub state: String,
    /// The newest backup's sequence number (0: none yet).
    pub seq: u64,
    /// When the newest backup was made (RFC 3339), if one was.
    pub updated_at: Option<String>,
    /// Holders needed to restore it (any `k` of them).
    pub k: u8,
    /// Holders it is spread over (one share each).
    pub n: u8,
    /// Its size: the sealed, padded backup before it is cut into shares.
    pub bytes: u64,
    /// How many holders may vanish before it is lost (null: it cannot be restored as it
    /// stands).
    pub can_lose: Option<u32>,
    /// The holders, by slot.
    pub holders: Vec<HolderView>,
    /// What the holders keep of it together.
    pub stored_bytes: u64,
    /// Bytes the last refresh sent.
    pub last_sent_bytes: u64,
    /// When a refresh was last tried (RFC 3339).
    pub tried_at: Option<String>,
    /// Why the last refresh failed, if it did.
    pub last_error: Option<String>,
    /// What this node holds of its contacts' backups.
    pub held: HeldView,
}

impl From<Status> for BackupView {
    fn from(s: Status) -> Self {
        let current = s.holders.iter().filter(|h| h.current).count();
        let state = if !s.set_up {
            "off"
        } else if s.seq == 0 {
            "pending"
        } else {
            match s.can_lose {
                None => "incomplete",
                Some(0) if current > 0 && s.n > 1 => "at_risk",
                _ => "ok",
            }
        };
        Self {
            state: state.into(),
            seq: s.seq,
            updated_at: s.made_at.map(|t| t.to_rfc3339()),
            k: s.k,
            n: s.n,
            bytes: s.sealed_bytes,
            can_lose: s.can_lose,
            holders: s
                .holders
                .into_iter()
                .map(|h| HolderView {
                    user_id: h.user_id.to_string(),
                    name: h.name,
                    slot: h.slot,
                    online: h.online,
                    updated_at: h.updated_at.map(|t| t.to_rfc3339()),
                    seen_at: h.seen_at.to_rfc3339(),
                    current: h.current,
                    bytes: h.bytes,
                    refused: h.refused,
                })
                .collect(),
            stored_bytes: s.stored_bytes,
            last_sent_bytes: s.last_sent,
            tried_at: s.tried_at.map(|t| t.to_rfc3339()),
            last_error: s.last_error,
            held: HeldView {
                pieces: s.held.pieces,
                bytes: s.held.bytes,
                contacts: s.held.owners,
                offer_bytes: s.offer_bytes,
                max_total_bytes: s.max_total_bytes,
            },
        }
    }
}

/// What a refresh did.
#[derive(Serialize, ToSchema)]
pub struct RefreshView {
    /// The new backup's sequence number.
    pub seq: u64,
    /// Parts sealed anew (the others had not changed).
    pub parts_sealed: usize,
    /// Parts in the backup.
    pub parts: usize,
    /// Bytes sent to holders.
    pub bytes_sent: u64,
    /// Holders that hold it whole.
    pub holders: usize,
    /// How many of them may vanish before it is lost.
    pub can_lose: Option<u32>,
}

impl From<Refreshed> for RefreshView {
    fn from(r: Refreshed) -> Self {
        Self {
            seq: r.seq,
            parts_sealed: r.blobs_sealed,
            parts: r.blobs,
            bytes_sent: r.bytes_sent,
            holders: r.holders,
            can_lose: r.can_lose,
        }
    }
}

/// `POST /v1/backup/restore`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// The recovery phrase: twelve words (or their first four letters), in any case.
    pub phrase: String,
    /// Peers to ask first, as `/ip4/…/tcp/…/p2p/<peer id>` (a friend's node, say); the
    /// node's `--bootstrap` peers, the LAN, the DHT and the rendezvous points are asked too.
    #[serde(default)]
    pub bootstrap: Vec<String>,
}

/// What a restore put back. The node restarts as the user's device right after and says
/// `backup.restored` on the WebSocket.
#[derive(Serialize, ToSchema)]
pub struct RestoredView {
    /// `restoring`: the backup is in hand and checked; the node restarts as the user's
    /// device (`GET /v1/node` shows the user id once it is back).
    #[schema(example = "restoring")]
    pub state: String,
    /// The user this node now belongs to.
    pub user_id: String,
    /// The backup's sequence number.
    pub seq: u64,
    /// When the backup was made (RFC 3339).
    pub made_at: String,
    /// Vault documents restored.
    pub documents: usize,
    /// Holders that handed over shares.
    pub holders_used: usize,
    /// Shares set aside because they did not match the backup (tampered or stale).
    pub shares_rejected: usize,
}

/// Where this user's backup held by friends stands: its holders, how fresh it is, how many
/// holders may vanish before it is lost; and what this node holds of its contacts' backups.
#[utoipa::path(get, path = "/v1/backup", tag = "backup", operation_id = "backup_get", security(("bearer" = [])),
    responses(
        (status = 200, description = "The backup", body = BackupView),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn get(State(backups): State<Backups>) -> Result<Json<BackupView>, ApiError> {
    Ok(Json(backups.status().await?.into()))
}

/// Sets up this user's backup held by friends: makes a recovery phrase, shown in the answer
/// and never again, and starts backing up to contacts' nodes that offer room.
#[utoipa::path(post, path = "/v1/backup/setup", tag = "backup", operation_id = "backup_setup", security(("bearer" = [])),
    request_body(content = Option<SetupRequest>, description = "Options (none needed)"),
    responses(
        (status = 201, description = "The recovery phrase: write it down, it is not shown again", body = PhraseView),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Not an admin device (`not_admin`)", body = ErrorBody),
        (status = 409, description = "A phrase is set up already (`backup_exists`)", body = ErrorBody),
        (status = 400, description = "Malformed options", body = ErrorBody),
    ))]
pub async fn setup(
    State(backups): State<Backups>,
    OptionalJson(request): OptionalJson<SetupRequest>,
) -> Result<(StatusCode, Json<PhraseView>), ApiError> {
    let phrase = backups.setup(request.rotate).await?;
    Ok((
        StatusCode::CREATED,
        Json(PhraseView {
            words: phrase.split(' ').map(str::to_owned).collect(),
            phrase: phrase.to_string(),
        }),
    ))
}

/// Refreshes the backup now (only what changed), and answers once the holders have it.
#[utoipa::path(post, path = "/v1/backup/refresh", tag = "backup", operation_id = "backup_refresh", security(("bearer" = [])),
    responses(
        (status = 200, description = "Refreshed", body = RefreshView),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Not an admin device (`not_admin`)", body = ErrorBody),
        (status = 409, description = "No phrase is set up (`backup_not_set_up`), a refresh runs (`backup_busy`), or too few contacts offer backup space or can be reached now (`no_holders`: tried again later by itself)", body = ErrorBody),
    ))]
pub async fn refresh(State(backups): State<Backups>) -> Result<Json<RefreshView>, ApiError> {
    Ok(Json(backups.refresh_now().await?.into()))
}

/// Restores this fresh node from a recovery phrase: finds the holders, fetches and checks
/// the shares, and makes this node the user's device again (same user, contacts, settings
/// and history; the device the backup was made on is revoked). The node restarts right
/// after answering. A wrong phrase changes nothing.
#[utoipa::path(post, path = "/v1/backup/restore", tag = "backup", operation_id = "backup_restore", security(("bearer" = [])),
    request_body = RestoreRequest,
    responses(
        (status = 202, description = "Restored; the node restarts as the user's device", body = RestoredView),
        (status = 400, description = "Not a recovery phrase, or no node reached holds a backup for it (`invalid_phrase`); a bad address (`invalid_address`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No node that could hold the backup could be reached (`backup_not_found`)", body = ErrorBody),
        (status = 409, description = "This node has contacts or messages (`node_not_empty`), or a restore runs (`backup_busy`)", body = ErrorBody),
        (status = 503, description = "Found, but too few holders can be reached (`backup_incomplete`)", body = ErrorBody),
    ))]
pub async fn restore(
    State(backups): State<Backups>,
    Json(request): Json<RestoreRequest>,
) -> Result<(StatusCode, Json<RestoredView>), ApiError> {
    let mut bootstrap = Vec::new();
    for text in request.bootstrap.iter().take(16) {
        let addr: multiaddr::Multiaddr = text.parse().map_err(|_| {
            ApiError::bad_request("invalid_address", format!("{text:.80} is not a multiaddr"))
        })?;
        bootstrap.push(addr);
    }
    let done = backups.restore(&request.phrase, &bootstrap).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RestoredView {
            state: "restoring".into(),
            user_id: done.user.to_string(),
            seq: done.seq,
            made_at: done.made_at.to_rfc3339(),
            documents: done.documents,
            holders_used: done.holders_used,
            shares_rejected: done.shares_rejected,
        }),
    ))
}
