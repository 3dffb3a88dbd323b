//! TFTP frontend (netboot stage one): a read-only server for the iPXE binaries in a directory
//! and generated iPXE chain scripts that hand the machine over to HTTP.
//!
//! Requests arrive on the listen socket; each admitted read runs as its own task on its own
//! socket (a new transfer ID, RFC 1350). Writes, paths leaving the root, malformed packets and
//! requests beyond `tftp.maxTransfers` are answered with a TFTP ERROR. Why this is our own
//! implementation rather than the `tftpd` or `async-tftp` crate: `docs/design.md`, "TFTP".

mod metrics;
mod packet;
mod root;
mod transfer;

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use metrics::RequestResult;
pub use metrics::TftpMetrics;
use packet::{ErrorCode, Packet};
pub use root::{ResolveError, Root};
use transfer::Transfer;

/// What the TFTP server serves and how much it grants.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Directory of served files (the iPXE binaries).
    pub root: PathBuf,
    /// Base URL chain scripts continue at (the HTTP frontend's external PXE URL).
    pub http_base: String,
    /// Transfers running at once; more requests are refused with an ERROR.
    pub max_transfers: usize,
    /// Largest `blksize` granted.
    pub max_blksize: u16,
    /// Largest `windowsize` granted.
    pub max_windowsize: u16,
}

/// Binds the TFTP listen socket.
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let sock = StdUdpSocket::bind(addr)?;
    sock.set_nonblocking(true)?;
    UdpSocket::from_std(sock)
}

/// Serves requests on `sock` until `stop` turns true; then running transfers are told the
/// server is shutting down and awaited.
pub async fn serve(
    sock: UdpSocket,
    settings: Settings,
    metrics: TftpMetrics,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let local = sock.local_addr()?;
    if !settings.root.is_dir() {
        tracing::warn!(
            root = %settings.root.display(),
            "tftp.root is not a directory: only generated chain scripts can be served \
             (install Debian's ipxe package or set tftp.root)"
        );
    }
    let ctx = Arc::new(Context {
        root: Root::new(settings.root.clone(), &settings.http_base),
        limits: packet::Limits {
            max_blksize: settings.max_blksize,
            max_windowsize: settings.max_windowsize,
        },
        bind_ip: local.ip(),
        metrics,
    });
    let slots = Arc::new(Semaphore::new(settings.max_transfers));
    let mut tasks = JoinSet::new();
    let transfer_stop = stop.clone();
    // Large enough to see that a request is longer than RFC 2347 allows.
    let mut buf = vec![0u8; 2048];
    loop {
        tokio::select! {
            () = async { let _ = stop.wait_for(|v| *v).await; } => break,
            Some(res) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = res {
                    tracing::error!(error = %e, "a tftp transfer task failed");
                }
            }
            r = sock.recv_from(&mut buf) => {
                let (n, peer) = match r {
                    Ok(x) => x,
                    // An ICMP error for an earlier reply; nothing to do.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                    Err(e) => return Err(e),
                };
                let Some(reply) = admit(&buf[..n], peer, &ctx, &slots, &transfer_stop, &mut tasks, settings.max_transfers) else {
                    continue;
                };
                if let Err(e) = sock.send_to(&reply, peer).await {
                    tracing::debug!(%peer, error = %e, "tftp error reply not sent");
                }
            }
        }
    }
    drop(sock);
    while let Some(res) = tasks.join_next().await {
        if let Err(e) = res {
            tracing::error!(error = %e, "a tftp transfer task failed");
        }
    }
    Ok(())
}

/// What every transfer shares.
struct Context {
    root: Root,
    limits: packet::Limits,
    bind_ip: std::net::IpAddr,
    metrics: TftpMetrics,
}

/// Handles one datagram on the listen socket: starts a transfer, or returns the ERROR to send
/// (`None`: nothing to send, e.g. for a client's own ERROR).
fn admit(
    datagram: &[u8],
    peer: SocketAddr,
    ctx: &Arc<Context>,
    slots: &Arc<Semaphore>,
    stop: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
    max_transfers: usize,
) -> Option<Vec<u8>> {
    let req = match packet::parse(datagram) {
        Ok(Packet::Read(req)) => req,
        Ok(Packet::Write) => {
            ctx.metrics.request(RequestResult::Write);
            tracing::info!(%peer, "tftp write request refused");
            return Some(packet::error(
                ErrorCode::AccessViolation,
                "write requests are refused: this TFTP server is read-only",
            ));
        }
        Ok(Packet::Error(..)) => return None,
        Ok(Packet::Ack(_) | Packet::Data) => {
            ctx.metrics.request(RequestResult::Malformed);
            return Some(packet::error(
                ErrorCode::IllegalOperation,
                "expected a read request",
            ));
        }
        Err(e) => {
            ctx.metrics.request(RequestResult::Malformed);
            tracing::debug!(%peer, error = %e, "malformed tftp request");
            let code = match e {
                packet::PacketError::DuplicateOption(_) => ErrorCode::BadOption,
                _ => ErrorCode::IllegalOperation,
            };
            return Some(packet::error(code, &e.to_string()));
        }
    };
    let Ok(permit) = Arc::clone(slots).try_acquire_owned() else {
        ctx.metrics.request(RequestResult::Busy);
        tracing::warn!(%peer, max_transfers, "tftp request refused: every transfer slot is busy");
        return Some(packet::error(
            ErrorCode::NotDefined,
            &format!(
                "server busy: {max_transfers} transfers running (tftp.maxTransfers); retry later"
            ),
        ));
    };
    let filename = req.filename.to_string();
    let options: Vec<(String, String)> = req
        .options
        .iter()
        .map(|(k, v)| (k.clone(), (*v).to_string()))
        .collect();
    let ctx = Arc::clone(ctx);
    let stop = stop.clone();
    tasks.spawn(async move {
        let _permit = permit;
        run_transfer(&ctx, peer, filename, options, stop).await;
    });
    None
}

/// Opens the transfer socket, resolves the file, negotiates and sends; logs the outcome.
async fn run_transfer(
    ctx: &Context,
    peer: SocketAddr,
    filename: String,
    options: Vec<(String, String)>,
    stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let sock = match UdpSocket::bind(SocketAddr::new(ctx.bind_ip, 0)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%peer, error = %e, "cannot open a tftp transfer socket");
            return;
        }
    };
    if let Err(e) = sock.connect(peer).await {
        tracing::warn!(%peer, error = %e, "cannot reach the tftp client");
        return;
    }
    let root = ctx.root.clone();
    let name = filename.clone();
    let resolved = match tokio::task::spawn_blocking(move || root.resolve(&name)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(%peer, error = %e, "tftp file lookup failed");
            return;
        }
    };
    let (source, len) = match resolved {
        Ok(x) => x,
        Err(e) => {
            ctx.metrics.request(RequestResult::Refused);
            tracing::info!(%peer, file = ?filename, error = %crate::causes::Causes(&e), "tftp request refused");
            let _ = sock.send(&packet::error(e.code(), &e.to_string())).await;
            return;
        }
    };
    let opts: Vec<(String, &str)> = options
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str()))
        .collect();
    let neg = match packet::negotiate(&opts, len, ctx.limits) {
        Ok(n) => n,
        Err(msg) => {
            ctx.metrics.request(RequestResult::Refused);
            tracing::info!(%peer, file = ?filename, reason = %msg, "tftp options refused");
            let _ = sock.send(&packet::error(ErrorCode::BadOption, &msg)).await;
            return;
        }
    };
    let (blksize, windowsize) = (neg.blksize, neg.windowsize);
    ctx.metrics.request(RequestResult::Started);
    let _running = ctx.metrics.running();
    let outcome = run_on_thread(sock, source, len, neg, stop).await;
    match &outcome {
        Ok(s) => ctx.metrics.done(s.bytes, s.retransmits),
        Err(_) => ctx.metrics.failed(),
    }
    match outcome {
        Ok(s) => tracing::info!(
            %peer,
            file = ?filename,
            bytes = s.bytes,
            blksize,
            windowsize,
            retransmits = s.retransmits,
            ms = started.elapsed().as_millis() as u64,
            "tftp transfer done"
        ),
        Err(e) => tracing::warn!(
            %peer,
            file = ?filename,
            blksize,
            windowsize,
            error = %crate::causes::Causes(&e),
            "tftp transfer failed"
        ),
    }
}

/// Runs the transfer on a thread of its own with `sock` made blocking (see `transfer`), and
/// waits for it without holding a runtime worker.
async fn run_on_thread(
    sock: UdpSocket,
    source: root::Source,
    len: u64,
    neg: packet::Negotiated,
    stop: watch::Receiver<bool>,
) -> Result<transfer::Summary, transfer::TransferError> {
    let sock = sock
        .into_std()
        .and_then(|s| s.set_nonblocking(false).map(|()| s))
        .map_err(transfer::TransferError::Socket)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tftp-transfer".into())
        .spawn(move || {
            let _ = tx.send(Transfer::new(sock, source, len, neg, stop).run());
        })
        .map_err(transfer::TransferError::Socket)?;
    rx.await.unwrap_or_else(|_| {
        Err(transfer::TransferError::Socket(std::io::Error::other(
            "the transfer thread ended without a result",
        )))
    })
}
