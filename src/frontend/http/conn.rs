//! The API listener's connections. Each connection starts in a small HTTP/1.1 reader of our
//! own that answers bodiless `GET`/`HEAD` requests for `/image/...` through the router and
//! writes asset bodies with `sendfile(2)` (see [`super::direct`]). The first request it does not
//! take — another path, a request body, HTTP/1.0, HTTP/2, an upgrade, a malformed head — hands
//! the connection, with every byte already read, to hyper for the rest of its life, so all
//! other behaviour is hyper's.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, HttpBody};
use bytes::{Buf as _, Bytes, BytesMut};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::direct::{self, Head};
use crate::frontend::listen::{self, ConnGuard, ConnState, Conns, Limits, TrackedIo};

/// Initial capacity of a connection's read buffer.
const READ_BUF: usize = 8 * 1024;

/// Accepts connections until `stop` turns true (admitted through `conns`, each with the
/// deadlines of `limits`), then waits for open connections to finish (idle ones close at once,
/// busy ones after their current response). With `tls`, every connection is TLS and is
/// served by hyper; without, asset downloads take the zero-copy path.
pub async fn serve_listener(
    listener: TcpListener,
    router: Router,
    stop: watch::Receiver<bool>,
    conns: Conns,
    limits: Limits,
    tls: Option<TlsAcceptor>,
) -> io::Result<()> {
    let conn_stop = stop.clone();
    listen::serve(listener, conns, stop, move |sock, guard| {
        let (router, stop, tls) = (router.clone(), conn_stop.clone(), tls.clone());
        async move {
            match tls {
                None => connection(sock, guard, limits, router, stop).await,
                Some(tls) => tls_connection(sock, guard, limits, tls, router, stop).await,
            }
        }
    })
    .await
}

/// As [`serve_listener`], on a Unix socket (every connection served by hyper).
pub async fn serve_unix_listener(
    listener: UnixListener,
    router: Router,
    stop: watch::Receiver<bool>,
    conns: Conns,
    limits: Limits,
) -> io::Result<()> {
    let conn_stop = stop.clone();
    listen::serve(listener, conns, stop, move |sock, guard| {
        let io = TrackedIo::new(sock, Arc::clone(&guard), limits);
        hand_off(io, guard, Bytes::new(), router.clone(), conn_stop.clone())
    })
    .await
}

/// Serves one TLS connection: the handshake (within the head deadline the watchdog enforces),
/// then hyper with the protocol ALPN chose.
async fn tls_connection(
    sock: TcpStream,
    guard: Arc<ConnGuard>,
    limits: Limits,
    tls: TlsAcceptor,
    router: Router,
    stop: watch::Receiver<bool>,
) {
    prepare(&sock);
    let io = TrackedIo::new(sock, Arc::clone(&guard), limits);
    let mut stream = match tls.accept(io).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
    };
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        stream.get_mut().0.set_http2();
    }
    hand_off(stream, guard, Bytes::new(), router, stop).await;
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

/// Socket options of an accepted connection: `TCP_NODELAY`, because responses go out in more
/// than one write (head, then body or sendfile), and with Nagle's algorithm a write after a
/// small one waits for the client's delayed ACK — 40 ms per keep-alive request on Linux
/// (measured: 23 small-asset GETs/s on one connection instead of 380).
fn prepare(sock: &TcpStream) {
    if let Err(e) = sock.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
}

/// Serves one connection: our reader while requests qualify, then hyper.
async fn connection(
    sock: TcpStream,
    guard: Arc<ConnGuard>,
    limits: Limits,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    prepare(&sock);
    let mut io = TrackedIo::new(sock, Arc::clone(&guard), limits);
    let mut buf = BytesMut::with_capacity(READ_BUF);
    loop {
        let head = match read_head(&mut io, &mut buf, &mut stop).await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "connection closed while reading a request");
                return;
            }
        };
        match head {
            Head::Direct(req) => {
                guard.set(ConnState::Busy);
                match direct::respond(&mut io, &router, req).await {
                    Ok(true) if !*stop.borrow() => guard.set(ConnState::Idle),
                    Ok(_) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "connection closed while answering");
                        return;
                    }
                }
            }
            Head::Other => {
                if buf.starts_with(H2_PREFACE) {
                    io.set_http2();
                }
                hand_off(io, guard, buf.freeze(), router, stop).await;
                return;
            }
        }
    }
}

/// Reads until `buf` holds a whole request head and classifies it (consuming it from `buf`
/// when it is ours). `None` when the peer closed, or when shutdown began before a whole head
/// arrived (a client still sending one can retry elsewhere). The stream's deadlines bound the
/// wait.
async fn read_head(
    io: &mut TrackedIo<TcpStream>,
    buf: &mut BytesMut,
    stop: &mut watch::Receiver<bool>,
) -> io::Result<Option<Head>> {
    loop {
        if !buf.is_empty()
            && let Some(head) = direct::classify(buf)
        {
            return Ok(Some(head));
        }
        tokio::select! {
            n = io.read_buf(buf) => {
                if n? == 0 {
                    return Ok(None);
                }
            }
            _ = stopping(stop) => return Ok(None),
        }
    }
}

/// Hands the connection to hyper (HTTP/1.1 or HTTP/2, upgrades allowed) with `prefix`, the
/// bytes already read, replayed first. Requests mark the connection busy until their response
/// body is done.
async fn hand_off<S>(
    io: S,
    guard: Arc<ConnGuard>,
    prefix: Bytes,
    router: Router,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let active = Arc::new(Active {
        guard,
        requests: AtomicUsize::new(0),
    });
    let io = TokioIo::new(Prefixed { prefix, inner: io });
    let service = TowerToHyperService::new(tower::service_fn(
        move |req: axum::http::Request<Incoming>| {
            let router = router.clone();
            let busy = Busy::begin(&active);
            async move {
                let response = router.oneshot(req.map(Body::new)).await?;
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| Body::new(Tracked { body, _busy: busy })),
                )
            }
        },
    ));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().enable_connect_protocol();
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut signalled = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stopping(&mut stop), if !signalled => {
                signalled = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The first bytes of an HTTP/2 connection (prior knowledge).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// The requests open on a hyper connection: busy while any is, idle when the last one's
/// response body is done.
struct Active {
    guard: Arc<ConnGuard>,
    requests: AtomicUsize,
}

/// One open request of an [`Active`] connection (ends when dropped).
struct Busy(Arc<Active>);

impl Busy {
    fn begin(active: &Arc<Active>) -> Self {
        active.requests.fetch_add(1, Ordering::AcqRel);
        active.guard.set(ConnState::Busy);
        Busy(Arc::clone(active))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.requests.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.guard.set(ConnState::Idle);
        }
    }
}

/// A response body that keeps its request open until it is done.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A stream whose first reads return bytes read from it earlier.
struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(out.remaining());
            out.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_without_nagle_delays() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move { TcpStream::connect(addr).await.unwrap() });
        let (sock, _) = listener.accept().await.unwrap();
        assert!(!sock.nodelay().unwrap(), "the platform default changed");
        prepare(&sock);
        assert!(sock.nodelay().unwrap());
        drop(client.await.unwrap());
    }
}
