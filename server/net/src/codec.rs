//! A request-response codec for opaque bytes: the request is everything the requester writes
//! before closing its side, bounded by the protocol's limit; likewise the response.

use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use libp2p::StreamProtocol;
use libp2p::request_response::Codec;

use crate::protocol::Protocol;

#[derive(Clone)]
pub(crate) struct BytesCodec {
    protocol: Protocol,
}

impl BytesCodec {
    pub(crate) fn new(protocol: Protocol) -> Self {
        Self { protocol }
    }
}

async fn read_bounded<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> std::io::Result<Vec<u8>> {
    // Read block by block and copied as slices: a file chunk is a megabyte, and
    // `read_to_end` zero-fills its spare capacity byte by byte in an unoptimised build.
    let mut buf = Vec::new();
    let mut block = vec![0u8; 64 * 1024];
    loop {
        let n = io.read(&mut block).await?;
        if n == 0 {
            return Ok(buf);
        }
        if buf.len() + n > max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("message larger than {max} bytes"),
            ));
        }
        buf.extend_from_slice(&block[..n]);
    }
}

impl Codec for BytesCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_bounded(io, self.protocol.max_request()).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        // Every response of every protocol is at least one byte; an empty one is a peer
        // that closed the stream without answering (it refused, or dropped the request).
        let bytes = read_bounded(io, self.protocol.max_response()).await?;
        if bytes.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the peer did not answer",
            ));
        }
        Ok(bytes)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&res).await?;
        io.close().await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures::io::Cursor;

    use super::read_bounded;

    #[tokio::test]
    async fn reads_up_to_the_bound_and_refuses_a_byte_more() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let read = read_bounded(&mut Cursor::new(data.clone()), data.len())
            .await
            .unwrap();
        assert_eq!(read, data);
        let err = read_bounded(&mut Cursor::new(data.clone()), data.len() - 1)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(
            read_bounded(&mut Cursor::new(Vec::new()), 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
