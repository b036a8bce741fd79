//! Reading a received file back: its chunks are read from the file backend and decrypted
//! segment by segment as the client reads, for the whole file or a byte range; nothing is
//! written in clear and memory stays at about one chunk.

use std::pin::Pin;

use axum::body::Bytes;
use futures::Stream;
use volli_core::transfer::{ChunkList, FileKey, Layout, SEGMENT, TAG, TransferId, hex};
use volli_plugin_host::FileBackendPlugin;

use super::{ChunkIds, FileError, Files};

/// A received file's bytes, or a range of them.
pub struct Content {
    /// The file's name.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// The range served (first and last byte, inclusive), when a range was asked for.
    pub range: Option<(u64, u64)>,
    /// Bytes in the body.
    pub len: u64,
    /// The plaintext's BLAKE3 hash (hex), as an entity tag.
    pub blake3: String,
    /// The bytes.
    pub body: Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>,
}

/// The range a `Range` header asks for in a file of `size` bytes: `Ok(None)` for the whole
/// file (no header, or one this server does not do, such as several ranges), `Err` when it
/// cannot be satisfied.
pub(crate) fn parse_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 || size == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return Ok(None);
        };
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            match b.parse::<u64>() {
                Ok(e) if e >= start => e.min(size.saturating_sub(1)),
                _ => return Ok(None),
            }
        };
        if start >= size {
            return Err(());
        }
        (start, end)
    };
    Ok(Some(range))
}

impl Files {
    /// The content of a completed incoming transfer; `range` is the `Range` header.
    pub async fn content(&self, id: TransferId, range: Option<&str>) -> Result<Content, FileError> {
        let t = self.row(id).await?;
        if t.outgoing || t.state != "completed" {
            return Err(FileError::conflict(
                "not_completed",
                "only a completely received file can be read",
            ));
        }
        let layout = Layout::new(t.size, t.chunk_size).map_err(|e| FileError::Io(e.to_string()))?;
        let list = t
            .list
            .as_deref()
            .and_then(|b| ChunkList::from_bytes(&layout, b).ok())
            .ok_or_else(|| FileError::Io("the transfer has no chunk list".into()))?;
        let range = parse_range(range, t.size).map_err(|()| FileError::Range(t.size))?;
        let (first, last) = range.unwrap_or((0, t.size.saturating_sub(1)));
        let len = if t.size == 0 { 0 } else { last - first + 1 };
        let reader = Reader {
            chunk_ids: ChunkIds::of(&t),
            backend: self.backend()?,
            layout,
            key: FileKey::from_bytes(t.file_key),
            list,
            next: first,
            end: first + len,
        };
        let body = futures::stream::unfold(reader, |mut r| async move {
            if r.next >= r.end {
                return None;
            }
            let piece = r.read_some().await;
            Some((piece, r))
        });
        Ok(Content {
            name: t.name,
            size: t.size,
            range,
            len,
            blake3: hex(&t.blake3),
            body: Box::pin(body),
        })
    }
}

struct Reader {
    chunk_ids: ChunkIds,
    backend: FileBackendPlugin,
    layout: Layout,
    key: FileKey,
    list: ChunkList,
    /// The next plaintext byte to give.
    next: u64,
    /// One past the last.
    end: u64,
}

impl Reader {
    /// The plaintext from `next` to the end of its chunk (or of the range).
    async fn read_some(&mut self) -> Result<Bytes, std::io::Error> {
        let chunk_size = u64::from(self.layout.chunk_size());
        let index = u32::try_from(self.next / chunk_size).map_err(std::io::Error::other)?;
        let (chunk_start, chunk_len) = self.layout.plain_range(index);
        let upto = self.end.min(chunk_start + chunk_len as u64);
        let seg = SEGMENT as u64;
        let first_seg = (self.next - chunk_start) / seg;
        let last_seg = (upto - 1 - chunk_start) / seg;
        let offset = first_seg * (seg + TAG as u64);
        let cipher_end =
            ((last_seg + 1) * (seg + TAG as u64)).min(self.layout.cipher_len(index) as u64);
        let name = self
            .list
            .get(index)
            .ok_or_else(|| std::io::Error::other("no such chunk"))?;
        let sealed = self
            .backend
            .get(
                &self.chunk_ids.id(name),
                offset,
                u32::try_from(cipher_end - offset).map_err(std::io::Error::other)?,
            )
            .await
            .map_err(|e| std::io::Error::other(format!("the file backend: {e}")))?;
        if sealed.len() as u64 != cipher_end - offset {
            return Err(std::io::Error::other(
                "a stored chunk is shorter than it should be",
            ));
        }
        let mut out = Vec::with_capacity(sealed.len());
        let base = self.layout.first_segment(index);
        for (n, piece) in sealed.chunks(SEGMENT + TAG).enumerate() {
            let plain = self
                .layout
                .open_segment(&self.key, base + first_seg + n as u64, piece)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            out.extend_from_slice(&plain);
        }
        let skip = usize::try_from(self.next - chunk_start - first_seg * seg)
            .map_err(std::io::Error::other)?;
        let take = usize::try_from(upto - self.next).map_err(std::io::Error::other)?;
        let bytes = Bytes::from(out).slice(skip..skip + take);
        self.next = upto;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Ok(Some((0, 9))));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=50-1000"), 100), Ok(Some((50, 99))));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=9-3"), 100), Ok(None));
    }
}
