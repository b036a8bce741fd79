//! `fs`: stores file chunks as files in the plugin's private directory (`/data`, granted
//! through the `fs` capability), two levels deep by content id. Writes go to a temporary
//! file that is synced and renamed, so a crash never leaves a partial chunk under its id.

use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::PathBuf;

use volli_plugin_sdk::file_backend::FileBackend;
use volli_plugin_sdk::{Capability, Error, Manifest};

const ROOT: &str = "/data";

struct Fs;

/// The path of a chunk; ids must be 64 lowercase hex characters (a BLAKE3 hash), which
/// also rules out any path trickery.
fn path(id: &str) -> Result<PathBuf, Error> {
    let valid = id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !valid {
        return Err(Error::InvalidInput(
            "chunk ids are 64 lowercase hex characters".into(),
        ));
    }
    Ok(PathBuf::from(ROOT).join(&id[..2]).join(id))
}

fn io(e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound,
        std::io::ErrorKind::PermissionDenied => {
            Error::Denied("no access to /data: was the fs capability granted?".into())
        }
        _ => Error::Unavailable(e.to_string()),
    }
}

impl FileBackend for Fs {
    fn manifest() -> Manifest {
        Manifest::new(
            "fs",
            env!("CARGO_PKG_VERSION"),
            "File chunks stored as files on disk",
        )
        .with(&[Capability::Fs])
    }

    fn init(_config: &str) -> Result<Self, Error> {
        fs::create_dir_all(ROOT).map_err(io)?;
        Ok(Fs)
    }

    fn put(&mut self, id: &str, data: Vec<u8>) -> Result<(), Error> {
        let path = path(id)?;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("part");
        let mut file = fs::File::create(&tmp).map_err(io)?;
        file.write_all(&data).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)
    }

    fn get(&mut self, id: &str, offset: u64, len: u32) -> Result<Vec<u8>, Error> {
        let mut file = fs::File::open(path(id)?).map_err(io)?;
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut out = Vec::with_capacity(len as usize);
        file.take(u64::from(len))
            .read_to_end(&mut out)
            .map_err(io)?;
        Ok(out)
    }

    fn delete(&mut self, id: &str) -> Result<(), Error> {
        match fs::remove_file(path(id)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    fn stat(&mut self, id: &str) -> Result<Option<u64>, Error> {
        match fs::metadata(path(id)?) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }
}

volli_plugin_sdk::export_file_backend!(Fs);
