//! The node's identity on disk: the user's master secret, this device's libp2p key, the
//! device certificate binding the two, and the admin token that guards the API.
//!
//! Layout inside the data dir (all files mode 0600, the directories 0700):
//! `identity/user.key`, `identity/device.key`, `identity/device.cert`, `admin.token`.
//! Missing pieces are created on first start; existing ones are never replaced, except the
//! certificate, which is re-issued when it no longer matches the keys or the device name.

use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libp2p_identity::Keypair;
use volli_core::{DeviceCertificate, PeerId, Permissions, Timestamp, UserId, UserSecret};

use crate::secret_file;

const USER_KEY_MAGIC: &[u8] = b"volli-user-key-v1\n";

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
}

/// The keys this node acts with.
pub struct Identity {
    /// The user's secret keys (shared by all of the user's devices).
    pub user: UserSecret,
    /// This device's libp2p key.
    pub device: Keypair,
    /// The user's certificate for this device.
    pub certificate: DeviceCertificate,
}

/// What `load_or_create` found.
pub struct Loaded {
    /// The identity.
    pub identity: Identity,
    /// True when the user identity was created just now.
    pub created_user: bool,
}

impl Identity {
    /// The user id.
    pub fn user_id(&self) -> UserId {
        self.user.user_id()
    }

    /// This device's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.device.public().to_peer_id()
    }

    /// Loads the identity from `data_dir`, creating whatever is missing.
    pub fn load_or_create(data_dir: &Path, device_name: &str) -> Result<Loaded, IdentityError> {
        let dir = data_dir.join("identity");
        secret_file::private_dir(data_dir).map_err(io_at(data_dir))?;
        secret_file::private_dir(&dir).map_err(io_at(&dir))?;

        let user_path = dir.join("user.key");
        let (user, created_user) = match read_optional(&user_path)? {
            Some(bytes) => (parse_user_key(&user_path, &bytes)?, false),
            None => {
                let user = UserSecret::generate().map_err(|_| IdentityError::Rng)?;
                let mut bytes = USER_KEY_MAGIC.to_vec();
                bytes.extend_from_slice(user.master_bytes());
                secret_file::write(&user_path, &bytes).map_err(io_at(&user_path))?;
                (user, true)
            }
        };

        let device_path = dir.join("device.key");
        let device = match read_optional(&device_path)? {
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
                secret_file::write(&device_path, &bytes).map_err(io_at(&device_path))?;
                key
            }
        };
        let peer_id = device.public().to_peer_id();

        let cert_path = dir.join("device.cert");
        let existing = read_optional(&cert_path)?
            .and_then(|b| DeviceCertificate::from_bytes(&b).ok())
            .filter(|c| {
                c.verify_for(&user.user_id(), &peer_id).is_ok() && c.device_name() == device_name
            });
        let certificate = match existing {
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

        Ok(Loaded {
            identity: Identity {
                user,
                device,
                certificate,
            },
            created_user,
        })
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

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, IdentityError> {
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
        let first = Identity::load_or_create(dir.path(), "laptop").unwrap();
        assert!(first.created_user);
        let again = Identity::load_or_create(dir.path(), "laptop").unwrap();
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
        let a = Identity::load_or_create(dir.path(), "laptop")
            .unwrap()
            .identity;
        let b = Identity::load_or_create(dir.path(), "desk")
            .unwrap()
            .identity;
        assert_eq!(a.user_id(), b.user_id());
        assert_eq!(a.peer_id(), b.peer_id());
        assert_eq!(b.certificate.device_name(), "desk");
    }

    #[test]
    fn a_corrupt_user_key_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_create(dir.path(), "laptop").unwrap();
        let key = dir.path().join("identity/user.key");
        secret_file::write(&key, b"garbage").unwrap();
        let e = Identity::load_or_create(dir.path(), "laptop")
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
