//! The secret files of `identity/`, optionally sealed with a passphrase.
//!
//! Unsealed, a secret file holds its bytes as they are (mode 0600, written atomically by
//! [`secret_file`]). Sealed, it holds `volli-sealed-v1\n`, the Argon2id cost (memory in KiB,
//! passes, lanes: three little-endian `u32`), a 16-byte salt, a 12-byte nonce and the bytes
//! under AES-256-GCM with the key Argon2id derives from the passphrase. The associated data is
//! the header plus the file's name, so sealed files cannot be swapped for one another. All
//! files of one data dir share the salt: the key is derived once per start (about half a
//! second), and files the running node writes later (keys handed over by a pairing) are
//! sealed under the same key.
//!
//! What is sealed: the device's libp2p key, the user's master key or a device's key
//! generations, and a committed pairing. What is not: the device certificate (public), the
//! admin token (a client credential the CLI reads; it grants API access to the running node,
//! not the keys), the database.
//!
//! A seal interrupted half-way (some files sealed, some not) is completed the next time the
//! passphrase is given. A wrong passphrase changes nothing.

use std::path::{Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::identity::IdentityError;
use crate::secret_file;

const MAGIC: &[u8] = b"volli-sealed-v1\n";
const HEADER_LEN: usize = MAGIC.len() + 12 + 16;
const NONCE_LEN: usize = 12;
/// Argon2id cost for new seals: 64 MiB, 3 passes.
const M_COST_KIB: u32 = 64 * 1024;
const T_COST: u32 = 3;
const P_COST: u32 = 1;
/// Costs a sealed file may ask for; more is refused as corrupt rather than exhausting memory.
const MAX_M_COST_KIB: u32 = 1024 * 1024;
const MAX_T_COST: u32 = 16;
const MAX_P_COST: u32 = 16;
pub use crate::backup::MIN_PASSPHRASE;

/// The secret files of `identity/`, by name.
pub const SECRET_FILES: &[&str] = &[
    "device.key",
    "user.key",
    "member.key",
    "joined",
    "joined.vault",
    "backup.key",
    "restored",
];

/// A passphrase held in memory, wiped when dropped, never printed.
#[derive(Clone)]
pub struct Passphrase(std::sync::Arc<Zeroizing<String>>);

impl Passphrase {
    /// Wraps a passphrase.
    pub fn new(text: String) -> Self {
        Self(std::sync::Arc::new(Zeroizing::new(text)))
    }

    /// Reads the first line of a passphrase file (without its line ending).
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        crate::backup::read_passphrase(path).map(|p| Self::new(p.as_str().to_owned()))
    }

    /// The passphrase.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(…)")
    }
}

/// The key that seals the files, with the parameters it was derived with.
struct Seal {
    header: [u8; HEADER_LEN],
    key: LessSafeKey,
}

impl Seal {
    fn derive(passphrase: &str, costs: [u32; 3], salt: [u8; 16]) -> Result<Self, String> {
        let key = crate::backup::argon2id(passphrase, &salt, costs)?;
        let unbound = UnboundKey::new(&AES_256_GCM, key.as_ref()).map_err(|e| e.to_string())?;
        let mut header = [0u8; HEADER_LEN];
        header[..MAGIC.len()].copy_from_slice(MAGIC);
        for (i, v) in costs.iter().enumerate() {
            let at = MAGIC.len() + 4 * i;
            header[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        header[MAGIC.len() + 12..].copy_from_slice(&salt);
        Ok(Self {
            header,
            key: LessSafeKey::new(unbound),
        })
    }

    fn seal(&self, name: &str, plain: &[u8]) -> Result<Vec<u8>, IdentityError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| IdentityError::Rng)?;
        let mut body = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(&self.header, name)),
                &mut body,
            )
            .map_err(|_| IdentityError::Rng)?;
        let mut out = self.header.to_vec();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a sealed file's bytes; `None` when the key does not fit (a wrong passphrase)
    /// or the bytes were altered.
    fn open(&self, name: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        let header = sealed.get(..HEADER_LEN)?;
        if header != self.header {
            return None;
        }
        let nonce: [u8; NONCE_LEN] = sealed
            .get(HEADER_LEN..HEADER_LEN + NONCE_LEN)?
            .try_into()
            .ok()?;
        let mut body = sealed.get(HEADER_LEN + NONCE_LEN..)?.to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(&self.header, name)),
                &mut body,
            )
            .ok()?;
        Some(plain.to_vec())
    }
}

fn aad(header: &[u8], name: &str) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// Reads the cost and salt of a sealed file's header.
fn parse_header(path: &Path, bytes: &[u8]) -> Result<([u32; 3], [u8; 16]), IdentityError> {
    let corrupt = || IdentityError::Corrupt {
        path: path.to_owned(),
        reason: "a sealed file with a damaged header",
    };
    let header = bytes.get(..HEADER_LEN).ok_or_else(corrupt)?;
    let mut costs = [0u32; 3];
    for (i, c) in costs.iter_mut().enumerate() {
        let at = MAGIC.len() + 4 * i;
        *c = u32::from_le_bytes(header[at..at + 4].try_into().map_err(|_| corrupt())?);
    }
    let [m, t, p] = costs;
    if m > MAX_M_COST_KIB || t > MAX_T_COST || p > MAX_P_COST || m == 0 || t == 0 || p == 0 {
        return Err(corrupt());
    }
    let salt = header[MAGIC.len() + 12..]
        .try_into()
        .map_err(|_| corrupt())?;
    Ok((costs, salt))
}

fn is_sealed_bytes(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// The identity directory's secret files, read and written sealed or not.
pub struct Keystore {
    dir: PathBuf,
    seal: Option<Seal>,
}

impl Keystore {
    /// Opens `dir` (the data dir's `identity/`).
    ///
    /// Sealed files need `passphrase`; a wrong one is [`IdentityError::WrongPassphrase`]
    /// and changes nothing. A passphrase for a new data dir (no secret files yet) seals
    /// everything written from now on. A passphrase for keys that are not sealed is refused:
    /// sealing is `volli keys seal`, on purpose.
    pub fn open(dir: &Path, passphrase: Option<&Passphrase>) -> Result<Self, IdentityError> {
        let mut sealed = Vec::new();
        let mut plain = Vec::new();
        for name in SECRET_FILES {
            if let Some(bytes) = crate::identity::read_optional(&dir.join(name))? {
                if is_sealed_bytes(&bytes) {
                    sealed.push((*name, bytes));
                } else {
                    plain.push((*name, bytes));
                }
            }
        }
        let Some((first, first_bytes)) = sealed.first() else {
            return match passphrase {
                None => Ok(Self {
                    dir: dir.to_owned(),
                    seal: None,
                }),
                Some(_) if !plain.is_empty() => Err(IdentityError::NotSealed),
                Some(p) => Ok(Self {
                    dir: dir.to_owned(),
                    seal: Some(new_seal(p)?),
                }),
            };
        };
        let passphrase = passphrase.ok_or(IdentityError::Sealed)?;
        let (costs, salt) = parse_header(&dir.join(first), first_bytes)?;
        let seal =
            Seal::derive(passphrase.as_str(), costs, salt).map_err(|_| IdentityError::Corrupt {
                path: dir.join(first),
                reason: "a sealed file with unusable key derivation parameters",
            })?;
        if seal.open(first, first_bytes).is_none() {
            return Err(IdentityError::WrongPassphrase);
        }
        for (name, bytes) in &sealed[1..] {
            if seal.open(name, bytes).is_none() {
                return Err(IdentityError::Corrupt {
                    path: dir.join(name),
                    reason: "sealed under another passphrase, or altered",
                });
            }
        }
        let store = Self {
            dir: dir.to_owned(),
            seal: Some(seal),
        };
        // Finish a seal that was interrupted.
        for (name, bytes) in &plain {
            store.write(name, bytes)?;
        }
        Ok(store)
    }

    /// Where a secret file lives.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether the files are (or will be written) sealed.
    pub fn is_sealed(&self) -> bool {
        self.seal.is_some()
    }

    /// Reads a secret file, opening it if sealed; `None` when it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, IdentityError> {
        let path = self.dir.join(name);
        let Some(bytes) = crate::identity::read_optional(&path)? else {
            return Ok(None);
        };
        if !is_sealed_bytes(&bytes) {
            return Ok(Some(bytes));
        }
        let seal = self.seal.as_ref().ok_or(IdentityError::Sealed)?;
        seal.open(name, &bytes)
            .map(Some)
            .ok_or(IdentityError::Corrupt {
                path,
                reason: "sealed under another passphrase, or altered",
            })
    }

    /// Writes a secret file (sealed if the store is), atomically and with mode 0600.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), IdentityError> {
        let path = self.dir.join(name);
        let out = match &self.seal {
            Some(seal) => Zeroizing::new(seal.seal(name, bytes)?),
            None => Zeroizing::new(bytes.to_vec()),
        };
        secret_file::write(&path, &out).map_err(|source| IdentityError::Io { path, source })
    }
}

fn new_seal(passphrase: &Passphrase) -> Result<Seal, IdentityError> {
    if passphrase.as_str().chars().count() < MIN_PASSPHRASE {
        return Err(IdentityError::WeakPassphrase);
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|_| IdentityError::Rng)?;
    Seal::derive(passphrase.as_str(), [M_COST_KIB, T_COST, P_COST], salt)
        .map_err(|_| IdentityError::Rng)
}

/// Whether any secret file in `data_dir` is sealed.
pub fn is_sealed(data_dir: &Path) -> bool {
    let dir = data_dir.join("identity");
    SECRET_FILES
        .iter()
        .any(|name| matches!(crate::identity::read_optional(&dir.join(name)), Ok(Some(bytes)) if is_sealed_bytes(&bytes)))
}

/// Whether `data_dir` holds an identity at all.
pub fn has_identity(data_dir: &Path) -> bool {
    let dir = data_dir.join("identity");
    SECRET_FILES.iter().any(|name| dir.join(name).exists())
}

/// Seals the secret files of a stopped node's `data_dir` under `passphrase`.
pub fn seal(data_dir: &Path, passphrase: &Passphrase) -> Result<usize, IdentityError> {
    if is_sealed(data_dir) {
        return Err(IdentityError::AlreadySealed);
    }
    let dir = data_dir.join("identity");
    let plain = Keystore::open(&dir, None)?;
    rewrite(&plain, Some(new_seal(passphrase)?))
}

/// Writes the secret files of a stopped node's `data_dir` back unsealed.
pub fn unseal(data_dir: &Path, passphrase: &Passphrase) -> Result<usize, IdentityError> {
    if !is_sealed(data_dir) {
        return Err(IdentityError::NotSealed);
    }
    let sealed = Keystore::open(&data_dir.join("identity"), Some(passphrase))?;
    rewrite(&sealed, None)
}

/// Writes every secret file of `from` again, sealed under `seal` or plain; how many.
fn rewrite(from: &Keystore, seal: Option<Seal>) -> Result<usize, IdentityError> {
    let to = Keystore {
        dir: from.dir.clone(),
        seal,
    };
    let mut count = 0;
    for name in SECRET_FILES {
        if let Some(bytes) = from.read(name)? {
            to.write(name, &Zeroizing::new(bytes))?;
            count += 1;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(s: &str) -> Passphrase {
        Passphrase::new(s.to_owned())
    }

    fn fixture() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("identity");
        secret_file::private_dir(&dir).unwrap();
        secret_file::write(&dir.join("device.key"), b"device secret").unwrap();
        secret_file::write(&dir.join("user.key"), b"user secret").unwrap();
        (tmp, dir)
    }

    #[test]
    fn sealed_files_hold_no_plaintext_and_open_with_the_passphrase_only() {
        let (tmp, dir) = fixture();
        assert_eq!(seal(tmp.path(), &pass("correct horse")).unwrap(), 2);
        let raw = std::fs::read(dir.join("user.key")).unwrap();
        assert!(raw.starts_with(MAGIC));
        assert!(!raw.windows(11).any(|w| w == b"user secret"));
        assert!(matches!(
            Keystore::open(&dir, None),
            Err(IdentityError::Sealed)
        ));
        assert!(matches!(
            Keystore::open(&dir, Some(&pass("wrong horse"))),
            Err(IdentityError::WrongPassphrase)
        ));
        assert_eq!(
            std::fs::read(dir.join("user.key")).unwrap(),
            raw,
            "untouched"
        );
        let store = Keystore::open(&dir, Some(&pass("correct horse"))).unwrap();
        assert_eq!(store.read("user.key").unwrap().unwrap(), b"user secret");
        assert_eq!(store.read("device.key").unwrap().unwrap(), b"device secret");
        // Written later: sealed too.
        store.write("member.key", b"member").unwrap();
        assert!(
            std::fs::read(dir.join("member.key"))
                .unwrap()
                .starts_with(MAGIC)
        );
        assert_eq!(store.read("member.key").unwrap().unwrap(), b"member");
        assert!(matches!(
            seal(tmp.path(), &pass("correct horse")),
            Err(IdentityError::AlreadySealed)
        ));
        assert_eq!(unseal(tmp.path(), &pass("correct horse")).unwrap(), 3);
        assert_eq!(std::fs::read(dir.join("user.key")).unwrap(), b"user secret");
        assert!(!is_sealed(tmp.path()));
    }

    #[test]
    fn swapped_or_altered_files_are_refused() {
        let (tmp, dir) = fixture();
        seal(tmp.path(), &pass("correct horse")).unwrap();
        let device = std::fs::read(dir.join("device.key")).unwrap();
        secret_file::write(&dir.join("user.key"), &device).unwrap();
        assert!(matches!(
            Keystore::open(&dir, Some(&pass("correct horse"))),
            Err(IdentityError::Corrupt { .. })
        ));
        let mut altered = device.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        secret_file::write(&dir.join("device.key"), &altered).unwrap();
        assert!(Keystore::open(&dir, Some(&pass("correct horse"))).is_err());
    }

    #[test]
    fn an_interrupted_seal_is_completed_and_short_passphrases_refused() {
        let (tmp, dir) = fixture();
        assert!(matches!(
            seal(tmp.path(), &pass("short")),
            Err(IdentityError::WeakPassphrase)
        ));
        assert!(!is_sealed(tmp.path()));
        seal(tmp.path(), &pass("correct horse")).unwrap();
        // As if the seal had stopped after device.key.
        secret_file::write(&dir.join("user.key"), b"user secret").unwrap();
        let store = Keystore::open(&dir, Some(&pass("correct horse"))).unwrap();
        assert!(
            std::fs::read(dir.join("user.key"))
                .unwrap()
                .starts_with(MAGIC)
        );
        assert_eq!(store.read("user.key").unwrap().unwrap(), b"user secret");
        // A passphrase for keys that are not sealed is refused.
        unseal(tmp.path(), &pass("correct horse")).unwrap();
        assert!(matches!(
            Keystore::open(&dir, Some(&pass("correct horse"))),
            Err(IdentityError::NotSealed)
        ));
    }
}
