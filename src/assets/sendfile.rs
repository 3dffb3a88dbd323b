//! Zero-copy delivery of an asset to a TCP socket: `sendfile(2)` moves the bytes from the page
//! cache to the socket without passing through user space. As with the streamed body, a
//! whole-body serve withholds its last bytes until a BLAKE3 pass over the blob has matched the
//! record, so a damaged blob never reaches a client as a complete response.
//!
//! The frontend decides whether a response can take this path; [`DirectBody`] lets one
//! response carry both forms (a lazy stream for the generic HTTP stack, the open asset for the
//! zero-copy writer) and hands the asset to whichever asks first.

use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use metrics::Counter;
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::shared_check;
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

/// Sends `[off, end)` of `file` to `sock` with `sendfile(2)`, waiting for writability at most
/// `stall` at a time (a client that takes no bytes for that long fails the send).
async fn send_range(
    sock: &TcpStream,
    file: &File,
    mut off: u64,
    end: u64,
    sent_bytes: &Counter,
    stall: Duration,
) -> io::Result<()> {
    while off < end {
        let want = (end - off).min(SENDFILE_MAX) as usize;
        let sent = tokio::time::timeout(
            stall,
            sock.async_io(Interest::WRITABLE, || {
                let mut pos = off;
                Ok(rustix::fs::sendfile(sock, file, Some(&mut pos), want)?)
            }),
        )
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took no data within the write timeout",
            )
        })??;
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
    /// Writes the body's bytes to `sock` without copying them through user space. A serve that
    /// must be verified sends its last bytes only once a hash pass over the blob has succeeded
    /// during the serve (see [`super::shared_check`]); on a mismatch the blob is reported failed
    /// and an error returned (the caller closes the connection short of `Content-Length`).
    /// A wait of more than `stall` for the client to take bytes fails the send.
    pub async fn send_to_socket(mut self, sock: &TcpStream, stall: Duration) -> io::Result<u64> {
        let (start, end) = (self.pos, self.end);
        let file: &File = &self.file;
        let counter = self.assets.inner.metrics.sent_zero_copy.clone();
        if self.verify.take().is_none() {
            send_range(sock, file, start, end, &counter, stall).await?;
            return Ok(end - start);
        }
        let started = Instant::now();
        let id = self.file_id;
        let (_serve, serves) = self.assets.check_serve(id);
        // Alone on this file: hash alongside the send. Otherwise a pass some other serve
        // starts while this one runs covers it too.
        let mut pass = (serves == 1).then(|| self.assets.pass(&self.record, &self.file, id));
        let held = end - HOLD_BACK.min(end);
        send_range(sock, file, start, held, &counter, stall).await?;
        if pass.is_none() && !self.assets.checked_since(id, started) {
            pass = Some(self.assets.pass(&self.record, &self.file, id));
        }
        if let Some(pass) = pass {
            shared_check::wait(pass).await?;
        }
        send_range(sock, file, held, end, &counter, stall).await?;
        Ok(end - start)
    }
}
