//! Preparing a file to send: one pass that encrypts it with a new key, names each chunk by
//! the BLAKE3 hash of its ciphertext and hashes the plaintext. A file on the node is read
//! by several threads at once and left where it is; an upload is stored chunk by chunk in the
//! file backend as it streams in, without being held in memory.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::pin::Pin;

use axum::body::Bytes;
use futures::{Stream, StreamExt as _};
use volli_core::transfer::{
    ChunkList, FileKey, Layout, MAX_CHUNK, MAX_FILE_SIZE, TransferId, check_name, seal_chunk_of,
    subtree_cv,
};
use volli_plugin_host::FileBackendPlugin;

use super::{ChunkIds, FileError};

/// A file ready to be offered.
pub(crate) struct Prepared {
    pub(crate) id: TransferId,
    pub(crate) layout: Layout,
    pub(crate) key: FileKey,
    pub(crate) list: ChunkList,
    pub(crate) blake3: [u8; 32],
}

/// A file streamed to the API.
pub struct Upload {
    /// Its name.
    pub name: String,
    /// Its length, when the client said (`Content-Length`).
    pub len: Option<u64>,
    /// The bytes.
    pub body: Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>,
    /// Its media type and picture, as the client said.
    pub meta: Option<super::FileMeta>,
}

/// Where an open file really is, from the file itself (Linux: `/proc/self/fd`).
fn opened_path(file: &File) -> Option<std::path::PathBuf> {
    use std::os::fd::AsRawFd as _;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
}

fn new_ids() -> Result<(TransferId, FileKey), FileError> {
    let id = TransferId::random().map_err(|e| FileError::Io(e.to_string()))?;
    let key = FileKey::random().map_err(|e| FileError::Io(e.to_string()))?;
    Ok((id, key))
}

/// Prepares the file at `path`: its name and what the offer needs. `allowed` judges where
/// the opened file really is (its path with every link followed, read from the open file
/// itself), so a link swapped in after the caller's check gains nothing.
pub(crate) async fn from_path(
    path: &str,
    allowed: &(dyn Fn(&Path) -> bool + Send + Sync),
) -> Result<(String, Prepared), FileError> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(FileError::InvalidPath(format!(
            "the path must be absolute (a path on the node): {path}"
        )));
    }
    let meta = std::fs::metadata(p)
        .map_err(|e| FileError::InvalidPath(format!("cannot read {path}: {e}")))?;
    if !meta.is_file() {
        return Err(FileError::InvalidPath(format!(
            "{path} is not a regular file"
        )));
    }
    let name = p
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| FileError::InvalidName(format!("{path} has no usable file name")))?
        .to_owned();
    check_name(&name).map_err(|e| FileError::InvalidName(e.to_string()))?;
    if meta.len() > MAX_FILE_SIZE {
        return Err(FileError::TooLarge);
    }
    let file =
        File::open(p).map_err(|e| FileError::InvalidPath(format!("cannot read {path}: {e}")))?;
    let real = opened_path(&file).unwrap_or_default();
    if !allowed(&real) {
        return Err(FileError::PathNotAllowed(
            "the file is not one this caller may send by its path".into(),
        ));
    }
    let layout = Layout::for_size(meta.len()).map_err(|_| FileError::TooLarge)?;
    let (id, key) = new_ids()?;
    let key2 = key.clone();
    let (list, blake3) = tokio::task::spawn_blocking(move || hash_file(&file, &layout, &key2))
        .await
        .map_err(|e| FileError::Io(e.to_string()))??;
    if std::fs::metadata(p).map(|m| m.len()).ok() != Some(layout.size()) {
        return Err(FileError::Io(format!(
            "{path} changed while it was being read"
        )));
    }
    Ok((
        name,
        Prepared {
            id,
            layout,
            key,
            list,
            blake3,
        },
    ))
}

/// Reads and seals every chunk of `file`, on several threads.
fn hash_file(
    file: &File,
    layout: &Layout,
    key: &FileKey,
) -> Result<(ChunkList, [u8; 32]), FileError> {
    let chunks = layout.chunks() as usize;
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4)
        .min(chunks);
    let next = std::sync::atomic::AtomicUsize::new(0);
    type Named = Option<([u8; 32], [u8; 32])>;
    let results: std::sync::Mutex<Vec<Named>> = std::sync::Mutex::new(vec![None; chunks]);
    let failed: std::sync::Mutex<Option<std::io::Error>> = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut plain = Vec::with_capacity(layout.chunk_size() as usize);
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= chunks {
                        return;
                    }
                    let index = u32::try_from(i).unwrap_or(u32::MAX);
                    let (offset, len) = layout.plain_range(index);
                    plain.resize(len, 0);
                    if let Err(e) = file.read_exact_at(&mut plain, offset) {
                        *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                        return;
                    }
                    let sealed = layout.seal_chunk(key, index, &plain);
                    let name = *blake3::hash(&sealed).as_bytes();
                    let cv = layout.chunk_cv(index, &plain);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some((name, cv));
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(FileError::Io(format!("reading the file failed: {e}")));
    }
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut names = Vec::with_capacity(chunks);
    let mut cvs = Vec::with_capacity(chunks);
    for r in results {
        let (name, cv) = r.ok_or_else(|| FileError::Io("a chunk was not read".into()))?;
        names.push(name);
        cvs.push(cv);
    }
    let root = layout
        .root_hash(&cvs)
        .map_err(|e| FileError::Io(e.to_string()))?;
    Ok((ChunkList::new(names), root))
}

/// Chunk `index` of a file sent by path, read and sealed again.
pub(crate) fn read_chunk(
    layout: &Layout,
    key: &FileKey,
    file: Option<&File>,
    index: u32,
) -> std::io::Result<Vec<u8>> {
    let file = file.ok_or_else(|| std::io::Error::other("no source file"))?;
    let (offset, len) = layout.plain_range(index);
    let mut plain = vec![0u8; len];
    file.read_exact_at(&mut plain, offset)?;
    Ok(layout.seal_chunk(key, index, &plain))
}

/// Stores an upload's chunks in `backend` as they arrive.
pub(crate) async fn from_upload(
    mut upload: Upload,
    backend: &FileBackendPlugin,
) -> Result<Prepared, FileError> {
    let chunk_size = match upload.len {
        Some(len) => Layout::for_size(len)
            .map_err(|_| FileError::TooLarge)?
            .chunk_size(),
        None => MAX_CHUNK,
    };
    let (id, key) = new_ids()?;
    let mut names: Vec<[u8; 32]> = Vec::new();
    let mut cvs: Vec<[u8; 32]> = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(chunk_size as usize + (64 << 10));
    let mut total: u64 = 0;
    let mut root_of_single = None;
    let outcome: Result<(), FileError> = async {
        loop {
            let next = upload.body.next().await;
            let more = match next {
                Some(Ok(bytes)) => {
                    total += bytes.len() as u64;
                    if total > MAX_FILE_SIZE {
                        return Err(FileError::TooLarge);
                    }
                    buf.extend_from_slice(&bytes);
                    true
                }
                Some(Err(e)) => return Err(FileError::Io(format!("the upload failed: {e}"))),
                None => false,
            };
            // A chunk is sealed once it is known whether the file goes on after it.
            while buf.len() > chunk_size as usize
                || (!more && (!buf.is_empty() || names.is_empty()))
            {
                let take = buf.len().min(chunk_size as usize);
                let last = !more && take == buf.len();
                let plain: Vec<u8> = buf.drain(..take).collect();
                let index = u32::try_from(names.len()).map_err(|_| FileError::TooLarge)?;
                let (name, cv, sealed) = {
                    let key = key.clone();
                    tokio::task::spawn_blocking(move || {
                        let sealed = seal_chunk_of(&key, chunk_size, index, &plain, last);
                        let name = *blake3::hash(&sealed).as_bytes();
                        let cv = if index == 0 && last {
                            *blake3::hash(&plain).as_bytes()
                        } else {
                            subtree_cv(u64::from(index) * u64::from(chunk_size), &plain)
                        };
                        (name, cv, sealed)
                    })
                    .await
                    .map_err(|e| FileError::Io(e.to_string()))?
                };
                if index == 0 && last {
                    root_of_single = Some(cv);
                }
                backend
                    .put(&ChunkIds::new(id).id(&name), sealed)
                    .await
                    .map_err(|e| FileError::Backend(e.to_string()))?;
                names.push(name);
                cvs.push(cv);
                if names.len().is_multiple_of(SYNC_EVERY) {
                    sync(
                        backend,
                        ChunkIds::new(id),
                        &names[names.len() - SYNC_EVERY..],
                    )
                    .await?;
                }
                if last {
                    break;
                }
            }
            if !more {
                return Ok(());
            }
        }
    }
    .await;
    let outcome = match outcome {
        Ok(()) => {
            sync(
                backend,
                ChunkIds::new(id),
                &names[names.len() / SYNC_EVERY * SYNC_EVERY..],
            )
            .await
        }
        Err(e) => Err(e),
    };
    let list = ChunkList::new(names);
    if let Err(e) = outcome {
        forget(backend, ChunkIds::new(id), &list).await;
        return Err(e);
    }
    if let Some(len) = upload.len
        && len != total
    {
        forget(backend, ChunkIds::new(id), &list).await;
        return Err(FileError::Invalid(format!(
            "the upload was {total} bytes, not the {len} announced"
        )));
    }
    let layout = match Layout::new(total, chunk_size) {
        Ok(l) if l.chunks() as usize == list.len() => l,
        _ => {
            forget(backend, ChunkIds::new(id), &list).await;
            return Err(FileError::TooLarge);
        }
    };
    let blake3 = match root_of_single {
        Some(root) => root,
        None => layout
            .root_hash(&cvs)
            .map_err(|e| FileError::Io(e.to_string()))?,
    };
    Ok(Prepared {
        id,
        layout,
        key,
        list,
        blake3,
    })
}

/// How many stored chunks of an upload are made durable at once.
const SYNC_EVERY: usize = 32;

/// Makes chunks stored in `backend` durable.
async fn sync(
    backend: &FileBackendPlugin,
    ids: ChunkIds,
    names: &[[u8; 32]],
) -> Result<(), FileError> {
    if names.is_empty() {
        return Ok(());
    }
    backend
        .sync(names.iter().map(|name| ids.id(name)).collect())
        .await
        .map_err(|e| FileError::Backend(e.to_string()))
}

/// Removes a transfer's chunks from `backend` (missing ones are fine).
pub(crate) async fn forget(backend: &FileBackendPlugin, ids: ChunkIds, list: &ChunkList) {
    for i in 0..list.len() {
        if let Some(name) = list.get(u32::try_from(i).unwrap_or(u32::MAX))
            && let Err(e) = backend.delete(&ids.id(name)).await
        {
            tracing::debug!(error = %e, "could not remove a chunk");
        }
    }
}
