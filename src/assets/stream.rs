//! Streaming an asset's bytes: positioned reads on the blocking pool in large chunks, the
//! BLAKE3 checked on the fly for whole-body reads. The last chunk is only released once the
//! hash matches; on a mismatch the stream ends with an error instead, so the connection is
//! cut short of `Content-Length` and no client receives a complete response with damaged
//! bytes.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;

use super::pipeline::{Assets, ServeGuard};
use super::record::AssetRecord;

/// Bytes per read (and per body frame).
const CHUNK: u64 = 512 * 1024;

/// An open asset ready to stream: the file, the byte range, and the integrity check.
pub struct AssetBody {
    pub(super) file: Arc<File>,
    pub(super) pos: u64,
    pub(super) end: u64,
    pub(super) verify: Option<blake3::Hasher>,
    pub(super) record: Arc<AssetRecord>,
    pub(super) assets: Assets,
    pub(super) _guard: ServeGuard,
}

impl AssetBody {
    /// Number of bytes the stream yields.
    pub fn len(&self) -> u64 {
        self.end - self.pos
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.end == self.pos
    }

    /// The body as a stream of chunks.
    pub fn into_stream(self) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut body = state?;
            if body.pos >= body.end {
                return None;
            }
            let len = (body.end - body.pos).min(CHUNK) as usize;
            let file = Arc::clone(&body.file);
            let pos = body.pos;
            let hasher = body.verify.take();
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = BytesMut::zeroed(len);
                let mut done = 0;
                while done < len {
                    let n = file.read_at(&mut buf[done..], pos + done as u64)?;
                    if n == 0 {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "asset file is shorter than its record",
                        ));
                    }
                    done += n;
                }
                let mut hasher = hasher;
                if let Some(h) = hasher.as_mut() {
                    h.update(&buf);
                }
                Ok((buf.freeze(), hasher))
            })
            .await;
            match read {
                Ok(Ok((chunk, hasher))) => {
                    body.pos += chunk.len() as u64;
                    body.verify = hasher;
                    if body.pos >= body.end {
                        if let Some(e) = body.finish() {
                            return Some((Err(e), None));
                        }
                        return Some((Ok(chunk), None));
                    }
                    Some((Ok(chunk), Some(body)))
                }
                Ok(Err(e)) => Some((Err(e), None)),
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
            }
        })
    }

    /// With the last chunk read: `Some(error)` when the whole-body hash does not match.
    fn finish(&mut self) -> Option<std::io::Error> {
        let hasher = self.verify.take()?;
        let got = hasher.finalize().to_hex().to_string();
        if got == self.record.blake3 {
            return None;
        }
        let reason = format!(
            "blob {} hashed to {got} while being served",
            self.record.blake3
        );
        self.assets.blob_failed(&self.record, &reason);
        Some(std::io::Error::new(std::io::ErrorKind::InvalidData, reason))
    }
}
