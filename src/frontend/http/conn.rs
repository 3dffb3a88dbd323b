//! The API listener's connections. Each connection starts in a small HTTP/1.1 reader of our
//! own that answers bodiless `GET`/`HEAD` requests for `/image/...` through the router and
//! writes asset bodies with `sendfile(2)` (see [`super::direct`]). The first request it does not
//! take — another path, a request body, HTTP/1.0, HTTP/2, an upgrade, a malformed head — hands
//! the connection, with every byte already read, to hyper for the rest of its life, so all
//! other behaviour is hyper's.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::{Buf as _, Bytes, BytesMut};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use super::direct::{self, Head};

/// Initial capacity of a connection's read buffer.
const READ_BUF: usize = 8 * 1024;

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections until `stop` turns true, then waits for open connections to finish
/// (idle ones close at once, busy ones after their current response).
pub async fn serve_listener(
    listener: TcpListener,
    router: Router,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut conns = JoinSet::new();
    // Handed to each connection; `stop` itself is borrowed by the select below.
    let conn_stop = stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((sock, _peer)) => {
                    conns.spawn(connection(sock, router.clone(), conn_stop.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(done) = conns.join_next(), if !conns.is_empty() => {
                if let Err(e) = done {
                    tracing::warn!(error = %e, "connection task failed");
                }
            }
            _ = stopping(&mut stop) => break,
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
    Ok(())
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
async fn connection(mut sock: TcpStream, router: Router, mut stop: watch::Receiver<bool>) {
    prepare(&sock);
    let mut buf = BytesMut::with_capacity(READ_BUF);
    loop {
        let head = match read_head(&mut sock, &mut buf, &mut stop).await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "connection closed while reading a request");
                return;
            }
        };
        match head {
            Head::Direct(req) => match direct::respond(&mut sock, &router, req).await {
                Ok(true) if !*stop.borrow() => continue,
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "connection closed while answering");
                    return;
                }
            },
            Head::Other => {
                hand_off(sock, buf.freeze(), router, stop).await;
                return;
            }
        }
    }
}

/// Reads until `buf` holds a whole request head and classifies it (consuming it from `buf`
/// when it is ours). `None` when the peer closed, or when shutdown began with no request
/// started.
async fn read_head(
    sock: &mut TcpStream,
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
            n = sock.read_buf(buf) => {
                if n? == 0 {
                    return Ok(None);
                }
            }
            _ = stopping(stop), if buf.is_empty() => return Ok(None),
        }
    }
}

/// Hands the connection to hyper (HTTP/1.1 or HTTP/2, upgrades allowed) with `prefix`, the
/// bytes already read, replayed first.
async fn hand_off(sock: TcpStream, prefix: Bytes, router: Router, mut stop: watch::Receiver<bool>) {
    let io = TokioIo::new(Prefixed {
        prefix,
        inner: sock,
    });
    let service = TowerToHyperService::new(
        router.map_request(|r: axum::http::Request<Incoming>| r.map(Body::new)),
    );
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

/// A socket whose first reads return bytes read from it earlier.
struct Prefixed {
    prefix: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
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

impl AsyncWrite for Prefixed {
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
