//! The node's identity on disk: the user's keys (as much of them as this device holds), this
//! device's libp2p key, the device certificate binding the two, and the admin token that
//! guards the API.
//!
//! Layout inside the data dir (all files mode 0600, the directories 0700):
//! `identity/device.key`, `identity/device.cert`, `admin.token`, and either
//! `identity/user.key` (the user's master secret: an `admin` device) or
//! `identity/member.key` (the user id and the X-Wing key generations a non-admin device was
//! given; see ADR 0009). Missing pieces are created on first start; existing ones are never
//! replaced, except an admin device's certificate, re-issued when it no longer matches.
//! The key files may be sealed with a passphrase ([`crate::keystore`]).
//!
//! Joining another user (pairing) commits through one file, `identity/joined`, written
//! atomically: until it exists the node is still itself; once it does, the next start (or the
//! running node, which restarts) applies it and removes it, and applying it again after a
//! crash gives the same result.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libp2p_identity::Keypair;
use serde::{Deserialize, Serialize};
use volli_core::{
    DeviceCertificate, KemKey, KemKeyring, PeerId, Permissions, Signer, Timestamp, UserId,
    UserSecret,
};

use crate::keystore::{Keystore, Passphrase};
use crate::secret_file;
use zeroize::Zeroizing;

const USER_KEY_MAGIC: &[u8] = b"volli-user-key-v1\n";
const MEMBER_KEY_MAGIC: &[u8] = b"volli-member-key-v1\n";
const JOINED_MAGIC: &[u8] = b"volli-joined-v1\n";

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file exists but does not hold what it should. It is left untouched.
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// The random number generator failed.
    #[error("no randomness available")]
    Rng,
    /// The keys are sealed and no passphrase was given.
    #[error(
        "the keys are sealed with a passphrase: pass --passphrase-file FILE (or set \
         VOLLI_PASSPHRASE_FILE), or start the node in a terminal to be asked for it"
    )]
    Sealed,
    /// The passphrase does not open the sealed keys. Nothing was changed.
    #[error("wrong passphrase for the sealed keys")]
    WrongPassphrase,
    /// A passphrase was given for keys that are not sealed.
    #[error(
        "the keys are not sealed, so a passphrase is not used; seal them with `volli keys seal` \
         while the node is stopped"
    )]
    NotSealed,
    /// `volli keys seal` on sealed keys.
    #[error("the keys are already sealed")]
    AlreadySealed,
    /// A passphrase too short to seal with.
    #[error(
        "the passphrase is too short: use at least {} characters",
        crate::backup::MIN_PASSPHRASE
    )]
    WeakPassphrase,
}

/// What a non-admin device holds of the user's keys.
#[derive(Serialize, Deserialize)]
struct MemberKeys {
    user: UserId,
    seeds: Vec<(u32, [u8; 32])>,
}

/// What a pairing hands over, as committed to `identity/joined`.
#[derive(Serialize, Deserialize)]
pub struct Joined {
    /// The user joined.
    pub user: UserId,
    /// The master secret, for an admin device.
    pub master: Option<[u8; 32]>,
    /// X-Wing key seeds, for a device with `messages`.
    pub seeds: Vec<(u32, [u8; 32])>,
    /// The user's certificate for this device, encoded.
    pub certificate: Vec<u8>,
    /// The contacts, settings and devices documents handed over (an encoded vault delta),
    /// imported once the node starts as the user's device.
    pub vault: Vec<u8>,
}

/// The keys this node acts with.
pub struct Identity {
    user_id: UserId,
    /// The user's secret keys, on an `admin` device only.
    pub user: Option<UserSecret>,
    /// This device's libp2p key.
    pub device: Keypair,
    /// The user's certificate for this device.
    pub certificate: DeviceCertificate,
    keyring: RwLock<Arc<KemKeyring>>,
    keys: Keystore,
}

/// What `load_or_create` found.
pub struct Loaded {
    /// The identity.
    pub identity: Identity,
    /// True when the user identity was created just now.
    pub created_user: bool,
    /// When a pairing was applied just now (this node is now another user's device): the
    /// vault delta that came with it, to import.
    pub joined: Option<Vec<u8>>,
}

impl Identity {
    /// The user id.
    pub fn user_id(&self) -> UserId {
        self.user_id
    }

    /// This device's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.device.public().to_peer_id()
    }

    /// What this device may do.
    pub fn permissions(&self) -> Permissions {
        self.certificate.permissions()
    }

    /// Whether this device holds the user's signing key.
    pub fn is_admin(&self) -> bool {
        self.user.is_some()
    }

    /// Who signs messages and receipts from this device: the user key on an admin device,
    /// the device key under its certificate elsewhere.
    pub fn signer(&self) -> Signer<'_> {
        match &self.user {
            Some(user) => Signer::User(user),
            None => Signer::Device {
                key: &self.device,
                certificate: &self.certificate,
            },
        }
    }

    /// The X-Wing keys this device holds.
    pub fn keyring(&self) -> Arc<KemKeyring> {
        self.keyring
            .read()
            .map(|k| Arc::clone(&k))
            .unwrap_or_default()
    }

    /// The X-Wing key generations an admin device can derive, up to `generation`.
    pub fn derive_keyring(&self, generation: u32) {
        if let Some(user) = &self.user
            && let Ok(mut ring) = self.keyring.write()
        {
            *ring = Arc::new(user.keyring(generation));
        }
    }

    /// Adds key generations a non-admin device was given, and keeps them on disk.
    pub fn add_keys(&self, seeds: &[(u32, [u8; 32])]) -> Result<(), IdentityError> {
        if self.user.is_some() || !self.permissions().contains(Permissions::MESSAGES) {
            return Ok(());
        }
        let mut all: Vec<(u32, [u8; 32])> = self
            .keyring()
            .keys()
            .iter()
            .map(|k| (k.generation(), *k.seed()))
            .collect();
        all.extend_from_slice(seeds);
        all.sort_by_key(|(g, _)| *g);
        all.dedup_by_key(|(g, _)| *g);
        write_member(
            &self.keys,
            &MemberKeys {
                user: self.user_id,
                seeds: all.clone(),
            },
        )?;
        if let Ok(mut ring) = self.keyring.write() {
            *ring = Arc::new(keyring_of(&all));
        }
        Ok(())
    }

    /// Whether the secret keys are sealed with a passphrase.
    pub fn is_sealed(&self) -> bool {
        self.keys.is_sealed()
    }

    /// Loads the identity from `data_dir`, creating whatever is missing and applying a
    /// committed pairing. `passphrase` opens sealed keys (see [`crate::keystore`]); given for
    /// a new data dir, it seals the keys created.
    pub fn load_or_create(
        data_dir: &Path,
        device_name: &str,
        passphrase: Option<&Passphrase>,
    ) -> Result<Loaded, IdentityError> {
        let dir = data_dir.join("identity");
        secret_file::private_dir(data_dir).map_err(io_at(data_dir))?;
        secret_file::private_dir(&dir).map_err(io_at(&dir))?;
        let keys = Keystore::open(&dir, passphrase)?;

        let device_path = dir.join("device.key");
        let device = match keys.read("device.key")?.map(Zeroizing::new) {
            Some(bytes) => {
                Keypair::from_protobuf_encoding(&bytes).map_err(|_| IdentityError::Corrupt {
                    path: device_path.clone(),
                    reason: "not a libp2p key",
                })?
            }
            None => {
                let key = Keypair::generate_ed25519();
                let bytes = key
                    .to_protobuf_encoding()
                    .map_err(|_| IdentityError::Corrupt {
                        path: device_path.clone(),
                        reason: "cannot encode the new key",
                    })?;
                keys.write("device.key", &bytes)?;
                key
            }
        };
        let peer_id = device.public().to_peer_id();
        let joined = apply_joined(&dir, &keys)?;

        let user_path = dir.join("user.key");
        let member_path = dir.join("member.key");
        let cert_path = dir.join("device.cert");
        let existing_cert =
            read_optional(&cert_path)?.and_then(|b| DeviceCertificate::from_bytes(&b).ok());
        if let Some(bytes) = keys.read("user.key")?.map(Zeroizing::new) {
            let user = parse_user_key(&user_path, &bytes)?;
            let certificate = match existing_cert.filter(|c| {
                c.verify_for(&user.user_id(), &peer_id).is_ok()
                    && c.device_name() == device_name
                    && c.permissions() == Permissions::ALL
            }) {
                Some(cert) => cert,
                None => {
                    let cert = DeviceCertificate::issue(
                        &user,
                        peer_id,
                        device_name,
                        Permissions::ALL,
                        Timestamp::now(),
                    );
                    secret_file::write(&cert_path, &cert.to_bytes()).map_err(io_at(&cert_path))?;
                    cert
                }
            };
            let keyring = user.keyring(0);
            return Ok(Loaded {
                identity: Identity {
                    user_id: user.user_id(),
                    user: Some(user),
                    device,
                    certificate,
                    keyring: RwLock::new(Arc::new(keyring)),
                    keys,
                },
                created_user: false,
                joined,
            });
        }
        if let Some(bytes) = keys.read("member.key")?.map(Zeroizing::new) {
            let member: MemberKeys = bytes
                .strip_prefix(MEMBER_KEY_MAGIC)
                .and_then(|rest| postcard::from_bytes(rest).ok())
                .ok_or(IdentityError::Corrupt {
                    path: member_path.clone(),
                    reason: "not a volli member key",
                })?;
            let certificate = existing_cert
                .filter(|c| c.verify_for(&member.user, &peer_id).is_ok())
                .ok_or(IdentityError::Corrupt {
                    path: cert_path.clone(),
                    reason: "no certificate from the user for this device",
                })?;
            return Ok(Loaded {
                identity: Identity {
                    user_id: member.user,
                    user: None,
                    device,
                    certificate,
                    keyring: RwLock::new(Arc::new(keyring_of(&member.seeds))),
                    keys,
                },
                created_user: false,
                joined,
            });
        }
        let user = UserSecret::generate().map_err(|_| IdentityError::Rng)?;
        let mut bytes = Zeroizing::new(USER_KEY_MAGIC.to_vec());
        bytes.extend_from_slice(user.master_bytes());
        keys.write("user.key", &bytes)?;
        let certificate = DeviceCertificate::issue(
            &user,
            peer_id,
            device_name,
            Permissions::ALL,
            Timestamp::now(),
        );
        secret_file::write(&cert_path, &certificate.to_bytes()).map_err(io_at(&cert_path))?;
        let keyring = user.keyring(0);
        Ok(Loaded {
            identity: Identity {
                user_id: user.user_id(),
                user: Some(user),
                device,
                certificate,
                keyring: RwLock::new(Arc::new(keyring)),
                keys,
            },
            created_user: true,
            joined,
        })
    }
}

fn keyring_of(seeds: &[(u32, [u8; 32])]) -> KemKeyring {
    KemKeyring::new(
        seeds
            .iter()
            .map(|(g, s)| KemKey::from_seed(*g, *s))
            .collect(),
    )
}

fn write_member(keys: &Keystore, member: &MemberKeys) -> Result<(), IdentityError> {
    let mut bytes = Zeroizing::new(MEMBER_KEY_MAGIC.to_vec());
    bytes.extend_from_slice(&Zeroizing::new(postcard::to_allocvec(member).map_err(
        |_| IdentityError::Corrupt {
            path: PathBuf::from("member.key"),
            reason: "cannot encode the keys",
        },
    )?));
    keys.write("member.key", &bytes)
}

impl Identity {
    /// Commits a pairing: from now on, this data dir belongs to `joined.user`. Atomic.
    pub fn commit_joined(&self, joined: &Joined) -> Result<(), IdentityError> {
        let mut bytes = Zeroizing::new(JOINED_MAGIC.to_vec());
        bytes.extend_from_slice(&Zeroizing::new(postcard::to_allocvec(joined).map_err(
            |_| IdentityError::Corrupt {
                path: PathBuf::from("joined"),
                reason: "cannot encode the pairing",
            },
        )?));
        self.keys.write("joined", &bytes)
    }

    /// The vault delta of a pairing applied but not yet imported, if any.
    pub fn joined_vault(&self) -> Result<Option<Vec<u8>>, IdentityError> {
        self.keys.read("joined.vault")
    }

    /// The pairing's vault delta is imported: forget it.
    pub fn forget_joined_vault(&self) -> Result<(), IdentityError> {
        remove_optional(&self.keys.path("joined.vault"))
    }

    /// The root of the keys of this user's backup held by friends (what Argon2id made of
    /// the recovery phrase), if it was set up on this device.
    pub fn backup_root(&self) -> Result<Option<Zeroizing<[u8; 32]>>, IdentityError> {
        let Some(bytes) = self.keys.read("backup.key")?.map(Zeroizing::new) else {
            return Ok(None);
        };
        let root: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| IdentityError::Corrupt {
                path: self.keys.path("backup.key"),
                reason: "not a backup key",
            })?;
        Ok(Some(Zeroizing::new(root)))
    }

    /// Keeps (or, with `None`, forgets) the root of the backup's keys.
    pub fn set_backup_root(&self, root: Option<&[u8; 32]>) -> Result<(), IdentityError> {
        match root {
            Some(root) => self.keys.write("backup.key", root),
            None => remove_optional(&self.keys.path("backup.key")),
        }
    }

    /// What a restore from friends left for the restored device to finish once it runs as
    /// the user's device (encoded by the backups service), if anything.
    pub fn restored(&self) -> Result<Option<Zeroizing<Vec<u8>>>, IdentityError> {
        Ok(self.keys.read("restored")?.map(Zeroizing::new))
    }

    /// Keeps (or, with `None`, forgets) what a restore left to finish.
    pub fn set_restored(&self, bytes: Option<&[u8]>) -> Result<(), IdentityError> {
        match bytes {
            Some(bytes) => self.keys.write("restored", bytes),
            None => remove_optional(&self.keys.path("restored")),
        }
    }
}

/// Applies a committed pairing, if there is one: the user's keys and this device's new
/// certificate replace the old ones, then the commit is removed. Safe to repeat.
fn apply_joined(dir: &Path, keys: &Keystore) -> Result<Option<Vec<u8>>, IdentityError> {
    let path = dir.join("joined");
    let Some(bytes) = keys.read("joined")?.map(Zeroizing::new) else {
        return Ok(None);
    };
    let joined: Joined = bytes
        .strip_prefix(JOINED_MAGIC)
        .and_then(|rest| postcard::from_bytes(rest).ok())
        .ok_or(IdentityError::Corrupt {
            path: path.clone(),
            reason: "not a volli pairing",
        })?;
    let user_path = dir.join("user.key");
    let member_path = dir.join("member.key");
    match joined.master {
        Some(master) => {
            let mut bytes = Zeroizing::new(USER_KEY_MAGIC.to_vec());
            bytes.extend_from_slice(&master);
            keys.write("user.key", &bytes)?;
            remove_optional(&member_path)?;
        }
        None => {
            write_member(
                keys,
                &MemberKeys {
                    user: joined.user,
                    seeds: joined.seeds.clone(),
                },
            )?;
            remove_optional(&user_path)?;
        }
    }
    let cert_path = dir.join("device.cert");
    secret_file::write(&cert_path, &joined.certificate).map_err(io_at(&cert_path))?;
    // The vault delta waits beside the identity until it is imported.
    keys.write("joined.vault", &joined.vault)?;
    remove_optional(&path)?;
    Ok(Some(joined.vault))
}

fn remove_optional(path: &Path) -> Result<(), IdentityError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(IdentityError::Io {
            path: path.to_owned(),
            source: e,
        }),
    }
}

/// The API's admin token: read from `<data-dir>/admin.token`, created on first start.
pub fn load_or_create_token(data_dir: &Path) -> Result<String, IdentityError> {
    let path = token_path(data_dir);
    if let Some(bytes) = read_optional(&path)? {
        let token = String::from_utf8(bytes)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| s.len() >= 32)
            .ok_or(IdentityError::Corrupt {
                path: path.clone(),
                reason: "expected a token of at least 32 characters",
            })?;
        return Ok(token);
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|_| IdentityError::Rng)?;
    let token = URL_SAFE_NO_PAD.encode(raw);
    secret_file::write(&path, format!("{token}\n").as_bytes()).map_err(io_at(&path))?;
    Ok(token)
}

/// Where the admin token lives.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

fn parse_user_key(path: &Path, bytes: &[u8]) -> Result<UserSecret, IdentityError> {
    let master: [u8; 32] = bytes
        .strip_prefix(USER_KEY_MAGIC)
        .and_then(|rest| rest.try_into().ok())
        .ok_or(IdentityError::Corrupt {
            path: path.to_owned(),
            reason: "not a volli user key",
        })?;
    Ok(UserSecret::from_master(master))
}

pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, IdentityError> {
    match secret_file::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(IdentityError::Io {
            path: path.to_owned(),
            source: e,
        }),
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn identity_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::load_or_create(dir.path(), "laptop", None).unwrap();
        assert!(first.created_user);
        let again = Identity::load_or_create(dir.path(), "laptop", None).unwrap();
        assert!(!again.created_user);
        assert_eq!(first.identity.user_id(), again.identity.user_id());
        assert_eq!(first.identity.peer_id(), again.identity.peer_id());
        assert_eq!(first.identity.certificate, again.identity.certificate);
        again
            .identity
            .certificate
            .verify_for(&again.identity.user_id(), &again.identity.peer_id())
            .unwrap();
        for f in [
            "identity/user.key",
            "identity/device.key",
            "identity/device.cert",
        ] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }

    #[test]
    fn renaming_the_device_reissues_only_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path(), "laptop", None)
            .unwrap()
            .identity;
        let b = Identity::load_or_create(dir.path(), "desk", None)
            .unwrap()
            .identity;
        assert_eq!(a.user_id(), b.user_id());
        assert_eq!(a.peer_id(), b.peer_id());
        assert_eq!(b.certificate.device_name(), "desk");
    }

    #[test]
    fn a_corrupt_user_key_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_create(dir.path(), "laptop", None).unwrap();
        let key = dir.path().join("identity/user.key");
        secret_file::write(&key, b"garbage").unwrap();
        let e = Identity::load_or_create(dir.path(), "laptop", None)
            .err()
            .unwrap();
        assert!(matches!(e, IdentityError::Corrupt { .. }), "{e}");
        assert_eq!(std::fs::read(&key).unwrap(), b"garbage");
    }

    #[test]
    fn token_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let t1 = load_or_create_token(dir.path()).unwrap();
        let t2 = load_or_create_token(dir.path()).unwrap();
        assert_eq!(t1, t2);
        assert!(t1.len() >= 43);
        let mode = std::fs::metadata(token_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
