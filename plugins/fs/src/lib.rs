//! `fs`: stores file chunks as files in the plugin's private directory (`/data`, granted
//! through the `fs` capability), two levels deep by content id. `put` writes a chunk in
//! place; `sync` waits until a batch of them is on disk, which is when the node records them.

use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;

use volli_plugin_sdk::file_backend::FileBackend;
use volli_plugin_sdk::{Capability, Error, Manifest};
use wasip2::filesystem::preopens::get_directories;
use wasip2::filesystem::types::{Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags};

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

/// A chunk's path relative to `/data` (its id checked by [`path`] first).
fn relative(id: &str) -> String {
    format!("{}/{}", &id[..2], id)
}

/// The `/data` directory granted to this plugin.
fn root() -> Result<Descriptor, Error> {
    get_directories()
        .into_iter()
        .find(|(_, name)| name == ROOT)
        .map(|(dir, _)| dir)
        .ok_or_else(|| Error::Denied("no access to /data: was the fs capability granted?".into()))
}

fn wasi_error(e: ErrorCode) -> Error {
    match e {
        ErrorCode::NoEntry => Error::NotFound,
        ErrorCode::Access | ErrorCode::NotPermitted | ErrorCode::ReadOnly => {
            Error::Denied(format!("the file system refused: {e}"))
        }
        _ => Error::Unavailable(format!("the file system: {e}")),
    }
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
        // Written in place: the node records a chunk only after `sync`, and rewrites any
        // chunk it has not recorded, so a torn file is never trusted. One `write` of the
        // whole chunk is a single host call (std would make one per 64 KiB).
        let file = root()?
            .open_at(
                PathFlags::empty(),
                &relative(id),
                OpenFlags::CREATE | OpenFlags::TRUNCATE,
                DescriptorFlags::WRITE,
            )
            .map_err(wasi_error)?;
        let mut done = 0;
        while done < data.len() {
            let n = file.write(&data[done..], done as u64).map_err(wasi_error)?;
            if n == 0 {
                return Err(Error::Unavailable("the disk accepted no more bytes".into()));
            }
            done += usize::try_from(n).unwrap_or(usize::MAX);
        }
        Ok(())
    }

    fn sync(&mut self, ids: &[String]) -> Result<(), Error> {
        // The writes of a batch reach the disk together; waiting for each in turn after
        // all of them were made costs far less than one wait per write.
        let root = root()?;
        for id in ids {
            path(id)?;
            root.open_at(
                PathFlags::empty(),
                &relative(id),
                OpenFlags::empty(),
                DescriptorFlags::READ,
            )
            .and_then(|file| file.sync())
            .map_err(wasi_error)?;
        }
        Ok(())
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
