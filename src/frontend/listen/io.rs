//! A connection's byte stream as the listener sees it: a write that makes no progress for the
//! write timeout fails with `TimedOut`, whoever is writing (our own HTTP/1.1 writer, hyper,
//! TLS), and bytes arriving on an idle HTTP/1 connection start a new request head (whose
//! deadline the connection's watchdog, [`ConnGuard::expired`], enforces).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::Limits;
use super::admission::{ConnGuard, ConnState};

/// A stream whose reads and writes obey the connection's deadlines.
pub struct TrackedIo<S> {
    inner: S,
    guard: Arc<ConnGuard>,
    limits: Limits,
    /// Reading bytes while idle starts a new request head (HTTP/1.x); off for HTTP/2, whose
    /// connection-level frames (pings, settings) arrive while no request is open.
    idle_read_starts_head: bool,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<S> TrackedIo<S> {
    /// Wraps `inner`, the stream of the connection `guard` admitted.
    pub fn new(inner: S, guard: Arc<ConnGuard>, limits: Limits) -> Self {
        Self {
            inner,
            guard,
            limits,
            idle_read_starts_head: true,
            write_timer: None,
        }
    }

    /// Marks the connection as HTTP/2 (see `idle_read_starts_head`).
    pub fn set_http2(&mut self) {
        self.idle_read_starts_head = false;
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The connection's admission guard.
    pub fn guard(&self) -> &Arc<ConnGuard> {
        &self.guard
    }

    /// The deadlines this stream enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if r.is_ready()
            && self.idle_read_starts_head
            && buf.filled().len() > before
            && self.guard.state().0 == ConnState::Idle
        {
            self.guard.set(ConnState::Head);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> TrackedIo<S> {
    /// Applies the write-progress deadline to the outcome of a write attempt.
    fn progress<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.write_timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limits.write_timeout;
                let timer = self
                    .write_timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client took no data within the write timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        self.progress(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
