//! One read transfer on its own socket (the server's transfer ID): option acknowledgement,
//! windowed sending (RFC 7440; window 1 is RFC 1350 lockstep), block-number rollover,
//! retransmission with exponential backoff, and duplicate-ACK handling.
//!
//! A transfer runs on a thread of its own with a blocking socket, as tftpd-hpa runs a process
//! per transfer: in lockstep every block waits for its ACK, and a blocked `recv` woken by the
//! kernel is the cheapest wait there is (docs/benchmarks-history.md, "TFTP transfers on
//! threads"). The server's stop flag is read between waits of at most [`STOP_POLL`].
//!
//! Duplicate ACKs never trigger a resend at window 1 (the Sorcerer's Apprentice bug, RFC 1123
//! 4.2.3.1): only a timeout does. With a larger window an ACK of the window's start means
//! the client lost the first block; the window is resent at once, but only once per ACK
//! value, so duplicated ACKs cannot double the traffic.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::packet::{self, ErrorCode, Negotiated, Packet};
use super::root::Source;

/// Default first retransmission timeout when the client names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait between retransmissions (unless the client asked for a longer timeout).
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Retransmissions without progress before the transfer is abandoned.
const MAX_RETRIES: u32 = 5;
/// Bytes read from the file at once (at least one window).
const READ_AHEAD: usize = 256 * 1024;
/// Longest single wait on the socket, so a stopping server is noticed soon.
pub const STOP_POLL: Duration = Duration::from_millis(200);

/// Why a transfer ended early.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The client stopped acknowledging.
    #[error("the client stopped answering after {0} retransmissions")]
    TimedOut(u32),
    /// The client sent an ERROR (e.g. it refused the negotiated options).
    #[error("the client aborted: error {code}: {message:?}")]
    ClientAborted {
        /// Its error code.
        code: u16,
        /// Its message.
        message: String,
    },
    /// The server is stopping.
    #[error("the server is shutting down")]
    Shutdown,
    /// The file could not be read, or shrank while being sent.
    #[error("reading the file failed")]
    Read(#[source] std::io::Error),
    /// The transfer socket failed.
    #[error("the transfer socket failed")]
    Socket(#[source] std::io::Error),
}

/// What a finished transfer did (for the log).
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    /// Bytes of the file delivered.
    pub bytes: u64,
    /// DATA packets sent again after a timeout or a window restart.
    pub retransmits: u64,
}

/// A transfer in progress.
pub struct Transfer {
    sock: UdpSocket,
    reader: ReadAhead,
    neg: Negotiated,
    stop: watch::Receiver<bool>,
    summary: Summary,
    /// The socket's receive timeout as last set (set again only when it changes).
    read_timeout: Option<Duration>,
}

impl Transfer {
    /// A transfer of `len` bytes of `source` over `sock` (blocking, connected to the client).
    pub fn new(
        sock: UdpSocket,
        source: Source,
        len: u64,
        neg: Negotiated,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let window_bytes = usize::from(neg.blksize) * usize::from(neg.windowsize);
        Self {
            sock,
            reader: ReadAhead {
                source,
                len,
                blksize: u64::from(neg.blksize),
                start: 0,
                buf: Vec::new(),
                chunk: READ_AHEAD.max(window_bytes * 2),
            },
            neg,
            stop,
            summary: Summary::default(),
            read_timeout: None,
        }
    }

    /// Runs the transfer to the end; on failure the client is sent an ERROR where it may
    /// still be listening.
    /// Blocks: run it on a thread of its own.
    pub fn run(mut self) -> Result<Summary, TransferError> {
        let res = self.send_all();
        let notice = match &res {
            Err(TransferError::TimedOut(_)) => Some("timed out waiting for an acknowledgement"),
            Err(TransferError::Shutdown) => Some("server shutting down"),
            Err(TransferError::Read(_)) => Some("the file could not be read"),
            _ => None,
        };
        if let Some(msg) = notice {
            let _ = self.sock.send(&packet::error(ErrorCode::NotDefined, msg));
        }
        res.map(|()| self.summary)
    }

    fn base_timeout(&self) -> Duration {
        self.neg
            .timeout
            .map_or(DEFAULT_TIMEOUT, |s| Duration::from_secs(u64::from(s)))
    }

    fn send_all(&mut self) -> Result<(), TransferError> {
        let base = self.base_timeout();
        let cap = MAX_BACKOFF.max(base);
        if !self.neg.oack.is_empty() {
            let oack = packet::oack(&self.neg.oack);
            let mut rto = base;
            let mut retries = 0;
            loop {
                self.sock.send(&oack).map_err(TransferError::Socket)?;
                match self.wait_ack(Instant::now() + rto, |n| n == 0)? {
                    Some(_) => break,
                    None => {
                        retries += 1;
                        if retries > MAX_RETRIES {
                            return Err(TransferError::TimedOut(MAX_RETRIES));
                        }
                        rto = (rto * 2).min(cap);
                    }
                }
            }
        }
        let blksize = u64::from(self.neg.blksize);
        let total = self.reader.len / blksize + 1;
        let window = u64::from(self.neg.windowsize);
        let mut acked: u64 = 0;
        let mut highest_sent: u64 = 0;
        let mut rto = base;
        let mut retries = 0;
        let mut fast_resent_at: Option<u64> = None;
        let mut pkt = vec![0u8; 4 + usize::from(self.neg.blksize)];
        while acked < total {
            let end = (acked + window).min(total);
            for b in acked + 1..=end {
                let data = self.reader.block(b)?;
                let n = data.len();
                pkt[4..4 + n].copy_from_slice(data);
                packet::data_header(&mut pkt, b as u16);
                self.sock
                    .send(&pkt[..4 + n])
                    .map_err(TransferError::Socket)?;
                if b <= highest_sent {
                    self.summary.retransmits += 1;
                }
            }
            highest_sent = highest_sent.max(end);
            let deadline = Instant::now() + rto;
            // Wait for an ACK inside the window; duplicates are ignored (see module docs).
            let outstanding = end - acked;
            let low = acked as u16;
            let got = self.wait_ack(deadline, |n| {
                let d = u64::from(n.wrapping_sub(low));
                d >= 1 && d <= outstanding
                    || (d == 0 && window > 1 && fast_resent_at != Some(acked))
            })?;
            match got {
                Some(n) => {
                    let d = u64::from(n.wrapping_sub(low));
                    if d == 0 {
                        fast_resent_at = Some(acked);
                    } else {
                        acked += d;
                        retries = 0;
                        rto = base;
                    }
                }
                None => {
                    retries += 1;
                    if retries > MAX_RETRIES {
                        return Err(TransferError::TimedOut(MAX_RETRIES));
                    }
                    rto = (rto * 2).min(cap);
                }
            }
        }
        self.summary.bytes = self.reader.len;
        Ok(())
    }

    /// Waits until `deadline` for an ACK that `wanted` accepts; `None` on timeout. Other
    /// ACKs and stray packets are ignored; a client ERROR ends the transfer, and so does the
    /// server's stop flag.
    fn wait_ack(
        &mut self,
        deadline: Instant,
        wanted: impl Fn(u16) -> bool,
    ) -> Result<Option<u16>, TransferError> {
        let mut buf = [0u8; 516];
        loop {
            if *self.stop.borrow() {
                return Err(TransferError::Shutdown);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // Never zero: a zero timeout would mean "block forever".
            let wait = (deadline - now).clamp(Duration::from_millis(1), STOP_POLL);
            if self.read_timeout != Some(wait) {
                self.sock
                    .set_read_timeout(Some(wait))
                    .map_err(TransferError::Socket)?;
                self.read_timeout = Some(wait);
            }
            let n = match self.sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                // ICMP port unreachable from a client that went away shows up here.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(TransferError::ClientAborted {
                        code: 0,
                        message: "port unreachable".into(),
                    });
                }
                Err(e) => return Err(TransferError::Socket(e)),
            };
            match packet::parse(&buf[..n]) {
                Ok(Packet::Ack(b)) if wanted(b) => return Ok(Some(b)),
                Ok(Packet::Error(code, message)) => {
                    return Err(TransferError::ClientAborted { code, message });
                }
                _ => {}
            }
        }
    }
}

/// Reads the source ahead in large chunks, so a block costs no system call of its own.
struct ReadAhead {
    source: Source,
    len: u64,
    blksize: u64,
    /// File offset of `buf[0]`.
    start: u64,
    buf: Vec<u8>,
    chunk: usize,
}

impl ReadAhead {
    /// The bytes of block `n` (1-based; the last block may be short or empty).
    fn block(&mut self, n: u64) -> Result<&[u8], TransferError> {
        let off = (n - 1) * self.blksize;
        let end = (off + self.blksize).min(self.len);
        let off = off.min(end);
        if off < self.start || end > self.start + self.buf.len() as u64 {
            self.fill(off)?;
        }
        let s = usize::try_from(off - self.start).unwrap_or(usize::MAX);
        let e = usize::try_from(end - self.start).unwrap_or(usize::MAX);
        self.buf
            .get(s..e)
            .ok_or_else(|| TransferError::Read(std::io::ErrorKind::UnexpectedEof.into()))
    }

    fn fill(&mut self, off: u64) -> Result<(), TransferError> {
        let want = usize::try_from((self.len - off).min(self.chunk as u64)).unwrap_or(self.chunk);
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(want, 0);
        let got = self
            .source
            .read_at(off, &mut buf)
            .map_err(TransferError::Read)?;
        if got < want {
            return Err(TransferError::Read(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file shrank while being sent",
            )));
        }
        self.start = off;
        self.buf = buf;
        Ok(())
    }
}
