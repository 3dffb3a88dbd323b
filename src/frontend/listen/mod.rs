//! The shared listener layer every TCP frontend uses: accepting with a connection cap and a
//! shedding policy ([`admission`]), per-connection deadlines for request heads, idle keep-alive
//! and write progress ([`io`]), and a quick refusal when the cap is held by busy connections.

pub mod admission;
pub mod io;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use admission::{ConnGuard, ConnState, Conns};
pub use io::TrackedIo;

/// The deadlines and cap of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a client may take to send a whole request head.
    pub head_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// How long a response may wait for the client to take any bytes.
    pub write_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long the refusal of a connection over the cap may take to write.
const REFUSAL_WRITE: Duration = Duration::from_secs(2);

/// The answer to a connection refused because every admitted one is busy.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 44\r\n\r\ntoo many connections, all busy: retry later\n";

/// A listening socket connections are accepted from.
pub trait Acceptor: Send + 'static {
    /// A connection's stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Waits for the next connection and names its peer.
    fn accept_one(&self) -> impl Future<Output = std::io::Result<(Self::Stream, String)>> + Send;
}

impl Acceptor for TcpListener {
    type Stream = TcpStream;
    async fn accept_one(&self) -> std::io::Result<(TcpStream, String)> {
        let (s, peer) = self.accept().await?;
        Ok((s, peer.to_string()))
    }
}

impl Acceptor for UnixListener {
    type Stream = UnixStream;
    async fn accept_one(&self) -> std::io::Result<(UnixStream, String)> {
        let (s, _) = self.accept().await?;
        Ok((s, "unix socket".to_string()))
    }
}

/// Accepts connections until `stop` turns true, admitting each through `conns` and running
/// `handle` for it; then waits for open connections to finish (the caller bounds that).
pub async fn serve<A, F, Fut>(
    listener: A,
    conns: Conns,
    mut stop: watch::Receiver<bool>,
    handle: F,
) -> std::io::Result<()>
where
    A: Acceptor,
    F: Fn(A::Stream, Arc<ConnGuard>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept_one() => match accepted {
                Ok((sock, peer)) => match conns.admit() {
                    Some(guard) => {
                        let guard = Arc::new(guard);
                        let work = handle(sock, Arc::clone(&guard));
                        tasks.spawn(async move {
                            tokio::select! {
                                () = work => {}
                                () = guard.shed() => {
                                    tracing::debug!(%peer, "connection shed to admit a newer one");
                                }
                                what = guard.expired() => {
                                    tracing::debug!(%peer, "connection closed: timed out waiting for the {what}");
                                }
                            }
                        });
                    }
                    None => {
                        tracing::warn!(%peer, max = conns.max(), "connection refused: every admitted connection is busy");
                        tasks.spawn(refuse(sock));
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    tracing::warn!(error = %e, "connection task failed");
                }
            }
            () = stopping(&mut stop) => break,
        }
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

/// Answers `503` with `Retry-After` and closes (best effort, bounded).
async fn refuse<S: AsyncWrite + Unpin>(mut sock: S) {
    let _ = tokio::time::timeout(REFUSAL_WRITE, async {
        sock.write_all(REFUSAL).await?;
        sock.shutdown().await
    })
    .await;
}

/// Raises this process's soft limit of open files to its hard limit (as Go's runtime does)
/// and returns the soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let current = getrlimit(Resource::Nofile);
    let soft = current.current.unwrap_or(u64::MAX);
    let Some(hard) = current.maximum else {
        return soft;
    };
    if hard > soft {
        let raised = Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return hard;
        }
    }
    soft
}

/// The default connection cap for a process allowed `fd_limit` open files: half of what is
/// left after a reserve for stores, builds and other listeners (an asset download holds a
/// socket and a file), between 256 and 65 536.
pub fn default_max_connections(fd_limit: u64) -> usize {
    let usable = fd_limit.saturating_sub(512) / 2;
    usize::try_from(usable.clamp(256, 65_536)).unwrap_or(65_536)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_well_formed() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), len);
        assert!(head.contains("Retry-After: 1"));
    }

    #[test]
    fn the_default_cap_follows_the_fd_limit() {
        assert_eq!(default_max_connections(1024), 256);
        assert_eq!(default_max_connections(20_000), 9_744);
        assert_eq!(default_max_connections(1 << 20), 65_536);
    }
}
