//! Zero-copy delivery of an asset to a TCP socket: `sendfile(2)` moves the bytes from the page
//! cache to the socket without passing through user space, while a blocking-pool task hashes
//! the same bytes through a read-only memory mapping (no copy either). As with the streamed
//! body, a whole-body serve withholds its last bytes until the BLAKE3 matches the record, so a
//! damaged blob never reaches a client as a complete response.
//!
//! The frontend decides whether a response can take this path; [`DirectBody`] lets one
//! response carry both forms (a lazy stream for the generic HTTP stack, the open asset for the
//! zero-copy writer) and hands the asset to whichever asks first.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd as _, RawFd};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use metrics::Counter;
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::stream::AssetBody;

/// Bytes held back until the whole-body hash is checked (at most the body's length).
const HOLD_BACK: u64 = 64 * 1024;

/// Largest count passed to one `sendfile(2)` call.
const SENDFILE_MAX: u64 = 1 << 30;

/// An opened asset that either the zero-copy writer or the streamed body takes, once.
#[derive(Clone)]
pub struct DirectBody(Arc<Mutex<Option<AssetBody>>>);

impl DirectBody {
    /// Wraps an opened asset.
    pub fn new(body: AssetBody) -> Self {
        DirectBody(Arc::new(Mutex::new(Some(body))))
    }

    /// Takes the asset, if nobody has yet.
    pub fn take(&self) -> Option<AssetBody> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// A stream that takes the asset on its first poll and yields its chunks (nothing if the
    /// zero-copy writer took it first).
    pub fn lazy_stream(&self) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let slot = self.clone();
        futures_util::stream::once(async move { slot.take().map(AssetBody::into_stream) })
            .filter_map(|s| async move { s })
            .flatten()
    }
}

/// A read-only shared mapping of a whole file.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and never remapped; the pointer is only dereferenced as a
// shared byte slice, which is safe to use from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as above; no interior mutability.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `file` read-only (`len` > 0).
    fn new(file: &File, len: u64) -> io::Result<Mapping> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("asset too large to map"))?;
        // SAFETY: a fresh read-only private-address mapping of a regular file we hold open;
        // the result is checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: advice on the mapping just created; failure only loses the read-ahead hint.
        unsafe { libc::madvise(ptr, len, libc::MADV_SEQUENTIAL) };
        Ok(Mapping { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for the lifetime of `self`. Blobs are
        // immutable once stored (written under a temporary name, renamed, never truncated),
        // so the mapped pages do not change under the slice.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mapped in `new`; no slice outlives `self`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Sends `[off, end)` of `file` to `sock` with `sendfile(2)`, waiting for writability.
async fn send_range(
    sock: &TcpStream,
    file: RawFd,
    mut off: u64,
    end: u64,
    sent_bytes: &Counter,
) -> io::Result<()> {
    let out = sock.as_raw_fd();
    while off < end {
        let want = (end - off).min(SENDFILE_MAX) as usize;
        let sent = sock
            .async_io(Interest::WRITABLE, || {
                let mut pos = libc::off_t::try_from(off)
                    .map_err(|_| io::Error::other("asset offset out of range"))?;
                // SAFETY: both descriptors are open for the duration of the call; the kernel
                // reads `file` at `pos` and writes at most `want` bytes to the socket.
                let n = unsafe { libc::sendfile(out, file, &mut pos, want) };
                usize::try_from(n).map_err(|_| io::Error::last_os_error())
            })
            .await?;
        if sent == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "asset file is shorter than its record",
            ));
        }
        off += sent as u64;
        sent_bytes.increment(sent as u64);
    }
    Ok(())
}

impl AssetBody {
    /// Writes the body's bytes to `sock` without copying them through user space. A whole-body
    /// serve that must be verified hashes the file alongside and sends the last bytes only
    /// once the hash matches; on a mismatch the blob is reported failed and an error returned
    /// (the caller closes the connection short of `Content-Length`).
    pub async fn send_to_socket(mut self, sock: &TcpStream) -> io::Result<u64> {
        let (start, end) = (self.pos, self.end);
        let fd = self.file.as_raw_fd();
        let counter = self.assets.inner.metrics.sent_zero_copy.clone();
        let Some(hasher) = self.verify.take() else {
            send_range(sock, fd, start, end, &counter).await?;
            return Ok(end - start);
        };
        if end == 0 {
            return match self.finish(Some(hasher)) {
                Some(e) => Err(e),
                None => Ok(0),
            };
        }
        let file = Arc::clone(&self.file);
        let hashing = tokio::task::spawn_blocking(move || -> io::Result<blake3::Hasher> {
            let map = Mapping::new(&file, end)?;
            let mut hasher = hasher;
            hasher.update(map.bytes());
            Ok(hasher)
        });
        let held = end - HOLD_BACK.min(end);
        // On a send error the hashing task finishes on its own; nobody waits for it.
        send_range(sock, fd, start, held, &counter).await?;
        let hasher = match hashing.await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(io::Error::other(e.to_string())),
        };
        if let Some(e) = self.finish(Some(hasher)) {
            return Err(e);
        }
        send_range(sock, fd, held, end, &counter).await?;
        Ok(end - start)
    }
}
