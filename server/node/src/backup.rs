//! `volli backup` and `volli restore`: a node's data dir as one file encrypted with a
//! passphrase, made while the node runs.
//!
//! What is in it: the identity (`identity/`), `admin.token`, a consistent copy of
//! `volli.db` (`VACUUM INTO`: every commit up to one point, none after) and installed
//! plugins. Not in it: received files' chunks (`plugins/data/`), compiled-plugin caches.
//!
//! The file: `VOLLI-BACKUP-1\n`, Argon2id parameters and salt, the archive's size and chunk
//! size, then the archive sealed like a transferred file (AES-256-GCM STREAM in 64 KiB
//! segments, the last one marked, so a truncated or altered file fails to open) under the
//! key Argon2id derives from the passphrase. The archive is a list of entries `(path,
//! bytes)`. A wrong passphrase fails on the first chunk, before anything is written.
//!
//! A restored node keeps its user id and peer id (it *is* the node that was backed up: do
//! not run both). It never reuses a Loro peer id or a message id of the original: the vault
//! writes under a fresh Loro peer id each time it opens, and message ids are random.

use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, bail};
use volli_core::transfer::{FileKey, Layout};
use zeroize::Zeroizing;

const MAGIC: &[u8] = b"VOLLI-BACKUP-1\n";
const ARCHIVE_MAGIC: &[u8] = b"volli-archive-1\n";
/// Argon2id cost: 64 MiB, 3 passes (about half a second here).
const M_COST_KIB: u32 = 64 * 1024;
const T_COST: u32 = 3;
const P_COST: u32 = 1;
/// Costs a backup file may ask for; more is refused rather than exhausting memory.
const MAX_M_COST_KIB: u32 = 1024 * 1024;
const MAX_T_COST: u32 = 16;
/// Passphrases shorter than this are refused for new backups and for sealing keys.
pub const MIN_PASSPHRASE: usize = 8;

/// Reads a passphrase file: its first line, without the line ending.
pub fn read_passphrase(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        fs::read_to_string(path)
            .with_context(|| format!("cannot read the passphrase file {}", path.display()))?,
    );
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        bail!("the passphrase file {} is empty", path.display());
    }
    Ok(Zeroizing::new(line.to_owned()))
}

/// A 32-byte key from a passphrase with Argon2id (memory `m` KiB, `t` passes, `p` lanes);
/// shared by backups and sealed keys.
pub(crate) fn argon2id(
    passphrase: &str,
    salt: &[u8],
    [m, t, p]: [u32; 3],
) -> Result<Zeroizing<[u8; 32]>, String> {
    let params = argon2::Params::new(m, t, p, Some(32))
        .map_err(|e| format!("bad key derivation parameters: {e}"))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
        .map_err(|e| format!("cannot derive the key: {e}"))?;
    Ok(key)
}

fn derive(passphrase: &str, salt: &[u8], m: u32, t: u32, p: u32) -> anyhow::Result<FileKey> {
    let key = argon2id(passphrase, salt, [m, t, p]).map_err(anyhow::Error::msg)?;
    Ok(FileKey::from_bytes(*key))
}

/// The files of `data_dir` that go into a backup, as (path in the archive, path on disk).
fn entries(data_dir: &Path, db_copy: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let identity = data_dir.join("identity");
    if !identity.is_dir() {
        bail!(
            "{} holds no node (no identity/ directory); pass the node's --data-dir",
            data_dir.display()
        );
    }
    files_of(&identity, "identity", &mut out)?;
    let token = data_dir.join("admin.token");
    if token.is_file() {
        out.push(("admin.token".into(), token));
    }
    let plugins = data_dir.join("plugins");
    if plugins.is_dir() {
        files_of(&plugins, "plugins", &mut out)?;
    }
    out.push(("volli.db".into(), db_copy.to_owned()));
    Ok(out)
}

/// The files directly in `dir` that a backup holds (see [`restorable`]), as `prefix/name`.
fn files_of(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = format!("{prefix}/{}", entry.file_name().to_string_lossy());
        let path = entry.path();
        if path.is_file() && restorable(&name) {
            out.push((name, path));
        }
    }
    Ok(())
}

/// Writes an encrypted backup of the node in `data_dir` (running or not) to `out`.
/// Returns the archive's size.
pub async fn backup(data_dir: &Path, out: &Path, passphrase: &str) -> anyhow::Result<u64> {
    if passphrase.chars().count() < MIN_PASSPHRASE {
        bail!("the passphrase is too short: use at least {MIN_PASSPHRASE} characters");
    }
    if out.exists() {
        bail!("{} already exists; choose a new file", out.display());
    }
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).context("no randomness available")?;
    let db_copy = data_dir.join(format!(".backup-{}.db", volli_core::transfer::hex(&random)));
    volli_store::Db::snapshot(&data_dir.join("volli.db"), &db_copy)
        .await
        .context("cannot copy the database")?;
    let result = write_backup(data_dir, &db_copy, out, passphrase);
    let _ = fs::remove_file(&db_copy);
    result
}

fn write_backup(
    data_dir: &Path,
    db_copy: &Path,
    out: &Path,
    passphrase: &str,
) -> anyhow::Result<u64> {
    write_archive(&entries(data_dir, db_copy)?, out, passphrase)
}

/// Seals `entries` (path in the archive, file on disk) into the backup file `out`.
fn write_archive(
    entries: &[(String, PathBuf)],
    out: &Path,
    passphrase: &str,
) -> anyhow::Result<u64> {
    let mut size = (ARCHIVE_MAGIC.len() + 2) as u64;
    for (name, path) in entries {
        size += 2 + name.len() as u64 + 8 + fs::metadata(path)?.len();
    }
    let layout = Layout::for_size(size).context("the node's data is too large to back up")?;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).context("no randomness available")?;
    let key = derive(passphrase, &salt, M_COST_KIB, T_COST, P_COST)?;

    let tmp = out.with_extension("partial");
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut sealer = Sealer {
        out: std::io::BufWriter::new(file),
        layout,
        key,
        buf: Vec::with_capacity(layout.chunk_size() as usize),
        index: 0,
    };
    let written = (|| -> anyhow::Result<()> {
        let mut header = MAGIC.to_vec();
        for v in [M_COST_KIB, T_COST, P_COST] {
            header.extend_from_slice(&v.to_le_bytes());
        }
        header.extend_from_slice(&salt);
        header.extend_from_slice(&size.to_le_bytes());
        header.extend_from_slice(&layout.chunk_size().to_le_bytes());
        sealer.out.write_all(&header)?;
        sealer.push(ARCHIVE_MAGIC)?;
        for (name, path) in entries {
            let len = fs::metadata(path)?.len();
            sealer.push(&u16::try_from(name.len())?.to_le_bytes())?;
            sealer.push(name.as_bytes())?;
            sealer.push(&len.to_le_bytes())?;
            let mut file = File::open(path)?.take(len);
            let mut chunk = vec![0u8; 1 << 16];
            let mut copied = 0u64;
            loop {
                let n = file.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                copied += n as u64;
                sealer.push(&chunk[..n])?;
            }
            if copied != len {
                bail!("{} changed while it was read", path.display());
            }
        }
        sealer.push(&0u16.to_le_bytes())?;
        sealer.finish()?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(size)
}

struct Sealer {
    out: std::io::BufWriter<File>,
    layout: Layout,
    key: FileKey,
    buf: Vec<u8>,
    index: u32,
}

impl Sealer {
    fn push(&mut self, mut bytes: &[u8]) -> anyhow::Result<()> {
        while !bytes.is_empty() {
            let (_, want) = self.layout.plain_range(self.index);
            let take = (want - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() == want {
                self.seal()?;
            }
        }
        Ok(())
    }

    fn seal(&mut self) -> anyhow::Result<()> {
        let sealed = self.layout.seal_chunk(&self.key, self.index, &self.buf);
        self.out.write_all(&sealed)?;
        self.buf.clear();
        self.index += 1;
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<()> {
        if self.index < self.layout.chunks() {
            // Only an empty archive ends with a chunk not yet sealed; sizes were counted.
            self.seal()?;
        }
        if self.index != self.layout.chunks() || !self.buf.is_empty() {
            bail!("the node's files changed size while they were backed up; try again");
        }
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(())
    }
}

/// Restores the backup `file` into `data_dir`, which must not exist or be empty. Returns
/// how many files were restored.
pub fn restore(file: &Path, data_dir: &Path, passphrase: &str) -> anyhow::Result<usize> {
    if data_dir.exists() && fs::read_dir(data_dir)?.next().is_some() {
        bail!(
            "{} is not empty; restore into a new directory",
            data_dir.display()
        );
    }
    let mut input = BufReader::new(
        File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
    );
    let not_a_backup = || anyhow::anyhow!("{} is not a Volli backup", file.display());
    let mut magic = vec![0u8; MAGIC.len()];
    input.read_exact(&mut magic).map_err(|_| not_a_backup())?;
    if magic != MAGIC {
        return Err(not_a_backup());
    }
    let mut fixed = [0u8; 12 + 16 + 8 + 4];
    input.read_exact(&mut fixed).map_err(|_| not_a_backup())?;
    let u32_at = |i: usize| u32::from_le_bytes(fixed[i..i + 4].try_into().unwrap_or_default());
    let (m, t, p) = (u32_at(0), u32_at(4), u32_at(8));
    if m > MAX_M_COST_KIB || t > MAX_T_COST || p > 16 {
        bail!(
            "{} asks for an unreasonable key derivation cost",
            file.display()
        );
    }
    let salt = &fixed[12..28];
    let size = u64::from_le_bytes(fixed[28..36].try_into().unwrap_or_default());
    let layout = Layout::new(size, u32_at(36)).map_err(|_| not_a_backup())?;
    let key = derive(passphrase, salt, m, t, p)?;

    // The first chunk proves the passphrase before anything is written.
    let mut opener = Opener {
        input,
        layout,
        key,
        index: 0,
        plain: Vec::new(),
        at: 0,
    };
    opener.next_chunk().map_err(|_| {
        anyhow::anyhow!(
            "wrong passphrase, or {} is damaged; nothing was restored",
            file.display()
        )
    })?;

    let parent = data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent)?;
    let staging = parent.join(format!(
        ".{}.restoring",
        data_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "volli-data".into())
    ));
    let _ = fs::remove_dir_all(&staging);
    fs::DirBuilder::new().mode(0o700).create(&staging)?;
    let restored = unpack(&mut opener, &staging);
    let count = match restored {
        Ok(n) => n,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e.context(format!(
                "{} is damaged; nothing was restored",
                file.display()
            )));
        }
    };
    if data_dir.exists() {
        fs::remove_dir(data_dir)?;
    }
    fs::rename(&staging, data_dir)?;
    File::open(parent)?.sync_all()?;
    Ok(count)
}

struct Opener {
    input: BufReader<File>,
    layout: Layout,
    key: FileKey,
    index: u32,
    plain: Vec<u8>,
    at: usize,
}

impl Opener {
    fn next_chunk(&mut self) -> anyhow::Result<()> {
        if self.index >= self.layout.chunks() {
            bail!("the archive ends early");
        }
        let mut sealed = vec![0u8; self.layout.cipher_len(self.index)];
        self.input.read_exact(&mut sealed)?;
        self.plain = self.layout.open_chunk(&self.key, self.index, &sealed)?;
        self.at = 0;
        self.index += 1;
        Ok(())
    }

    fn read(&mut self, mut out: &mut [u8]) -> anyhow::Result<()> {
        while !out.is_empty() {
            if self.at == self.plain.len() {
                self.next_chunk()?;
            }
            let n = (self.plain.len() - self.at).min(out.len());
            out[..n].copy_from_slice(&self.plain[self.at..self.at + n]);
            self.at += n;
            out = &mut out[n..];
        }
        Ok(())
    }

    fn copy_to(&mut self, mut len: u64, out: &mut impl Write) -> anyhow::Result<()> {
        while len > 0 {
            if self.at == self.plain.len() {
                self.next_chunk()?;
            }
            let n = usize::try_from(len)
                .unwrap_or(usize::MAX)
                .min(self.plain.len() - self.at);
            out.write_all(&self.plain[self.at..self.at + n])?;
            self.at += n;
            len -= n as u64;
        }
        Ok(())
    }

    fn finished(&mut self) -> bool {
        self.at == self.plain.len() && self.index == self.layout.chunks()
    }
}

fn unpack(opener: &mut Opener, dir: &Path) -> anyhow::Result<usize> {
    let mut magic = vec![0u8; ARCHIVE_MAGIC.len()];
    opener.read(&mut magic)?;
    if magic != ARCHIVE_MAGIC {
        bail!("unknown archive format");
    }
    let mut count = 0;
    loop {
        let mut len = [0u8; 2];
        opener.read(&mut len)?;
        let len = usize::from(u16::from_le_bytes(len));
        if len == 0 {
            break;
        }
        let mut name = vec![0u8; len];
        opener.read(&mut name)?;
        let name = String::from_utf8(name).context("a file name is not UTF-8")?;
        let relative = Path::new(&name);
        if !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            bail!("the archive names a file outside the data dir: {name}");
        }
        if !restorable(&name) {
            bail!("the archive holds {name:.80}, which no backup holds");
        }
        let mut size = [0u8; 8];
        opener.read(&mut size)?;
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create {name}"))?;
        opener.copy_to(u64::from_le_bytes(size), &mut file)?;
        file.sync_all()?;
        count += 1;
    }
    if !opener.finished() {
        bail!("the archive has bytes after its end");
    }
    for sub in ["", "identity"] {
        if let Ok(d) = File::open(dir.join(sub)) {
            d.sync_all()?;
        }
    }
    Ok(count)
}

/// Whether a backup holds an entry named `name`: the database, the admin token, the
/// identity's files and installed plugins' components — exactly what [`entries`] writes.
/// Anything else (a compiled plugin for the cache above all, which the node would run as
/// native code) is refused.
fn restorable(name: &str) -> bool {
    match name.split_once('/') {
        None => matches!(name, "volli.db" | "admin.token"),
        Some(("identity", file)) => {
            file == "device.cert" || crate::keystore::SECRET_FILES.contains(&file)
        }
        Some(("plugins", file)) => file
            .strip_suffix(".wasm")
            .is_some_and(|plugin| volli_plugin_host::check_name(plugin).is_ok()),
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealer_and_opener_agree_across_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(data.join("identity")).unwrap();
        fs::write(data.join("identity/device.key"), b"key").unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(data.join("db"), &big).unwrap();
        let out = dir.path().join("b.volli-backup");
        write_backup(&data, &data.join("db"), &out, "correct horse").unwrap();

        let wrong = restore(&out, &dir.path().join("r1"), "wrong horse!").unwrap_err();
        assert!(wrong.to_string().contains("wrong passphrase"), "{wrong}");
        assert!(!dir.path().join("r1").exists());

        assert_eq!(
            restore(&out, &dir.path().join("r2"), "correct horse").unwrap(),
            2
        );
        assert_eq!(fs::read(dir.path().join("r2/volli.db")).unwrap(), big);
        assert_eq!(
            fs::read(dir.path().join("r2/identity/device.key")).unwrap(),
            b"key"
        );

        // A flipped byte anywhere after the header: refused, nothing left behind.
        let mut bytes = fs::read(&out).unwrap();
        let at = bytes.len() - 100;
        bytes[at] ^= 1;
        let damaged = dir.path().join("damaged");
        fs::write(&damaged, &bytes).unwrap();
        assert!(restore(&damaged, &dir.path().join("r3"), "correct horse").is_err());
        assert!(!dir.path().join("r3").exists());
        assert!(!dir.path().join(".r3.restoring").exists());
    }

    /// A backup made by hand (or by an attacker) with an entry no backup holds — a compiled
    /// plugin for the cache, which the node would map and run as native code — is refused
    /// whole, before anything is in place.
    #[test]
    fn restore_takes_only_what_a_backup_holds() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"bytes").unwrap();
        for bad in [
            "cache/0123-4567.cwasm",
            "cache/cache.key",
            "identity/authorized_keys",
            "plugins/data/x",
            "plugins/Evil.wasm",
            "lock",
        ] {
            let out = dir.path().join(format!("{}.backup", bad.replace('/', "_")));
            let entries = vec![
                ("volli.db".to_owned(), file.clone()),
                (bad.to_owned(), file.clone()),
            ];
            write_archive(&entries, &out, "correct horse").unwrap();
            let target = dir.path().join(format!("r-{}", bad.replace('/', "_")));
            let e = restore(&out, &target, "correct horse").unwrap_err();
            assert!(format!("{e:#}").contains("no backup holds"), "{bad}: {e:#}");
            assert!(!target.exists(), "{bad}");
        }
        let out = dir.path().join("good.backup");
        let entries: Vec<(String, PathBuf)> = [
            "volli.db",
            "admin.token",
            "identity/device.key",
            "identity/device.cert",
            "identity/member.key",
            "plugins/my-plugin.wasm",
        ]
        .iter()
        .map(|n| ((*n).to_owned(), file.clone()))
        .collect();
        write_archive(&entries, &out, "correct horse").unwrap();
        assert_eq!(
            restore(&out, &dir.path().join("good"), "correct horse").unwrap(),
            6
        );
    }
}
