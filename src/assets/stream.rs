//! Streaming an asset's bytes: positioned reads on the blocking pool in large chunks, one
//! chunk read ahead (so disk reads and hashing overlap the socket writes), the BLAKE3 checked
//! on the fly for whole-body reads. The last chunk is only released once the hash matches; on
//! a mismatch the stream ends with an error instead, so the connection is cut short of
//! `Content-Length` and no client receives a complete response with damaged bytes.

use std::fs::File;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::task::JoinHandle;

use super::error::AssetError;
use super::pipeline::{Assets, ServeGuard, lock};
use super::record::AssetRecord;
use super::shared_check::FileId;

/// Bytes per read (and per body frame). With one chunk read ahead, a download holds at most
/// about three chunks (one in the socket write, one read ahead, one being allocated).
const CHUNK: u64 = 256 * 1024;

/// A chunk read (and hashed) on the blocking pool, with the hasher handed back.
type Pending = JoinHandle<std::io::Result<(Bytes, Option<blake3::Hasher>)>>;

/// An open asset ready to stream: the file, the byte range, and the integrity check.
pub struct AssetBody {
    pub(super) file: Arc<File>,
    pub(super) pos: u64,
    pub(super) end: u64,
    pub(super) verify: Option<blake3::Hasher>,
    pub(super) file_id: FileId,
    pub(super) record: Arc<AssetRecord>,
    pub(super) assets: Assets,
    pub(super) _guard: ServeGuard,
}

/// Appends up to `want` bytes read at `pos` to `buf` without zeroing its spare capacity
/// first (zeroing cost about a tenth of the serving CPU); returns the count (0 at EOF).
fn pread_into(file: &File, buf: &mut BytesMut, pos: u64, want: usize) -> std::io::Result<usize> {
    buf.reserve(want);
    let spare = buf.spare_capacity_mut();
    let want = want.min(spare.len());
    let (filled, _) = rustix::io::pread(file, &mut spare[..want], pos)?;
    let n = filled.len();
    // SAFETY: `pread` initialised the first `n` bytes of the spare capacity (it returned them
    // as `filled`); `BytesMut` has no safe way to take initialised spare bytes into its length.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Reads `len` bytes at `pos` into `buf` and feeds them to `hasher` (blocking).
fn read_chunk(
    file: &File,
    pos: u64,
    len: usize,
    mut buf: BytesMut,
    mut hasher: Option<blake3::Hasher>,
) -> std::io::Result<(Bytes, Option<blake3::Hasher>)> {
    while buf.len() < len {
        let done = buf.len();
        let n = loop {
            match pread_into(file, &mut buf, pos + done as u64, len - done) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "asset file is shorter than its record",
            ));
        }
    }
    if let Some(h) = hasher.as_mut() {
        h.update(&buf);
    }
    Ok((buf.freeze(), hasher))
}

/// Streaming state: the body and the read in flight.
struct Reader {
    body: AssetBody,
    /// Offset of the next chunk to start reading.
    next: u64,
    pending: Option<Pending>,
}

impl Reader {
    /// Starts reading the chunk at `self.next` (the hasher travels with it).
    fn start(&mut self, hasher: Option<blake3::Hasher>) {
        if self.next >= self.body.end {
            return;
        }
        let len = (self.body.end - self.next).min(CHUNK) as usize;
        let file = Arc::clone(&self.body.file);
        let pos = self.next;
        self.next += len as u64;
        // Allocated here, on a runtime worker, rather than on whichever blocking-pool thread
        // runs the read: buffers then come from a few malloc arenas instead of one per
        // blocking thread, which keeps the resident size flat under many downloads.
        let buf = BytesMut::with_capacity(len);
        self.pending = Some(tokio::task::spawn_blocking(move || {
            read_chunk(&file, pos, len, buf, hasher)
        }));
    }
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

    /// Copies the whole body into the empty file `dest` in the kernel, holes kept (blocking):
    /// `None` when it must be streamed instead — a range, or a body whose hash is checked while
    /// it is read (first serve of a cached blob).
    pub fn copy_to_file(&self, dest: &File) -> Option<std::io::Result<u64>> {
        if self.verify.is_some() || self.pos != 0 || self.end != self.record.size {
            return None;
        }
        Some(crate::imager::disk::sparse::copy_file_sparse(
            &self.file, dest,
        ))
    }

    /// The body as a stream of chunks.
    pub fn into_stream(mut self) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        let hasher = self.verify.take();
        let mut reader = Reader {
            next: self.pos,
            body: self,
            pending: None,
        };
        reader.start(hasher);
        futures_util::stream::unfold(Some(reader), |state| async move {
            let mut r = state?;
            let pending = r.pending.take()?;
            let (chunk, hasher) = match pending.await {
                Ok(Ok(x)) => x,
                Ok(Err(e)) => return Some((Err(e), None)),
                Err(e) => return Some((Err(std::io::Error::other(e)), None)),
            };
            r.body.pos += chunk.len() as u64;
            r.body
                .assets
                .inner
                .metrics
                .sent_streamed
                .increment(chunk.len() as u64);
            if r.body.pos >= r.body.end {
                if let Some(e) = r.body.finish(hasher) {
                    return Some((Err(e), None));
                }
                return Some((Ok(chunk), None));
            }
            // Read the next chunk while this one is written to the socket.
            r.start(hasher);
            Some((Ok(chunk), Some(r)))
        })
    }

    /// With the last chunk read: `Some(error)` when the whole-body hash does not match.
    fn finish(&mut self, hasher: Option<blake3::Hasher>) -> Option<std::io::Error> {
        let hash = hasher?.finalize().to_hex().to_string();
        let ok = hash == self.record.blake3;
        lock(&self.assets.inner.checks).hashed(self.file_id, ok, Instant::now(), false);
        if ok {
            return None;
        }
        let reason = AssetError::BlobChanged {
            blake3: self.record.blake3.clone(),
            hash,
        };
        self.assets
            .open_blob_failed(&self.record, &reason, &self.file);
        Some(std::io::Error::new(std::io::ErrorKind::InvalidData, reason))
    }
}
