//! ProxyDHCP responder (netboot stage zero): tells PXE firmware, iPXE and UEFI HTTP Boot
//! clients what to boot, beside the site's DHCP server, without ever leasing an address.
//!
//! Two UDP sockets bound to one interface: the DHCP port (67) answers DISCOVERs whose option
//! 60 starts with `PXEClient` or `HTTPClient` with a ProxyDHCP OFFER; the PXE port (4011)
//! answers REQUESTs (UEFI firmware and iPXE ask there) with an ACK. Everything else is counted
//! and dropped. Each socket runs as one task with no per-client state; answers are bounded by
//! a token bucket (`netboot.proxyDhcp.maxRepliesPerSecond`). What gets which file:
//! [`decide`].

pub mod decide;
mod metrics;
pub mod packet;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dhcproto::v4::MessageType;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::watch;

pub use decide::BootFiles;
use decide::{Answer, BootFile, ClientKind, Vendor};
pub use metrics::DhcpMetrics;

use super::tftp::Root;

/// Why the responder cannot start; each message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// The interface list could not be read.
    #[error("cannot list the network interfaces to find the address of {interface:?}")]
    Interfaces {
        /// The configured interface.
        interface: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The interface has no IPv4 address (or does not exist).
    #[error(
        "network interface {interface:?} (netboot.proxyDhcp.interface) has no IPv4 address or \
         does not exist; interfaces with IPv4 addresses here: {available}. Name the boot \
         network's interface, or set netboot.proxyDhcp.serverAddr"
    )]
    NoAddress {
        /// The configured interface.
        interface: String,
        /// `name (address)` of every interface with an IPv4 address.
        available: String,
    },
    /// A socket could not be set up or bound.
    #[error(
        "cannot start ProxyDHCP on UDP {addr} ({key}) bound to interface {interface:?}: it \
         needs root or CAP_NET_BIND_SERVICE for ports below 1024 (AmbientCapabilities= in the \
         systemd unit; CAP_NET_RAW too on kernels before 5.7), an existing interface, and no \
         other ProxyDHCP server on that port and interface; or set \
         netboot.proxyDhcp.enabled to false"
    )]
    Bind {
        /// Configuration key of the address.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The interface.
        interface: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

/// The two bound sockets and the address the responder advertises.
pub struct Bound {
    /// DHCP port (DISCOVER → OFFER).
    pub dhcp: UdpSocket,
    /// PXE boot-server port (REQUEST → ACK).
    pub pxe: UdpSocket,
    /// Advertised server identifier and next-server.
    pub server_ip: Ipv4Addr,
    /// The interface both sockets are bound to.
    pub interface: String,
}

impl Bound {
    /// What `/status` shows.
    pub fn status(&self) -> Status {
        Status {
            running: true,
            interface: Some(self.interface.clone()),
            server_addr: Some(self.server_ip),
            dhcp_addr: self.dhcp.local_addr().ok(),
            pxe_addr: self.pxe.local_addr().ok(),
        }
    }
}

/// ProxyDHCP as `/status` shows it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Whether the responder runs.
    pub running: bool,
    /// The interface it is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The address it advertises.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_addr: Option<Ipv4Addr>,
    /// The DHCP port's bound address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dhcp_addr: Option<SocketAddr>,
    /// The PXE port's bound address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pxe_addr: Option<SocketAddr>,
}

/// Binds both sockets to `interface` (SO_BINDTODEVICE, SO_BROADCAST, SO_REUSEADDR) and finds
/// the advertised address: `server_ip` if given, else the interface's first IPv4 address.
pub fn bind(
    interface: &str,
    dhcp: SocketAddr,
    pxe: SocketAddr,
    server_ip: Option<Ipv4Addr>,
) -> Result<Bound, DhcpError> {
    let server_ip = match server_ip {
        Some(ip) => ip,
        None => interface_ipv4(interface)?,
    };
    let open = |key, addr| {
        socket(interface, addr).map_err(|source| DhcpError::Bind {
            key,
            addr,
            interface: interface.to_string(),
            source,
        })
    };
    Ok(Bound {
        dhcp: open("netboot.proxyDhcp.listenAddr", dhcp)?,
        pxe: open("netboot.proxyDhcp.pxeListenAddr", pxe)?,
        server_ip,
        interface: interface.to_string(),
    })
}

fn socket(interface: &str, addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    s.bind_device(Some(interface.as_bytes()))?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// The first IPv4 address of `interface`; says when it has several.
fn interface_ipv4(interface: &str) -> Result<Ipv4Addr, DhcpError> {
    let all = if_addrs::get_if_addrs().map_err(|source| DhcpError::Interfaces {
        interface: interface.to_string(),
        source,
    })?;
    let v4 = |i: &if_addrs::Interface| match i.ip() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    };
    let mine: Vec<Ipv4Addr> = all
        .iter()
        .filter(|i| i.name == interface)
        .filter_map(v4)
        .collect();
    match mine.as_slice() {
        [] => {
            let available: Vec<String> = all
                .iter()
                .filter_map(|i| v4(i).map(|ip| format!("{} ({ip})", i.name)))
                .collect();
            Err(DhcpError::NoAddress {
                interface: interface.to_string(),
                available: if available.is_empty() {
                    "none".into()
                } else {
                    available.join(", ")
                },
            })
        }
        [one] => Ok(*one),
        [first, ..] => {
            tracing::warn!(
                interface,
                addresses = ?mine,
                chosen = %first,
                "the ProxyDHCP interface has several IPv4 addresses; advertising the first. Set \
                 netboot.proxyDhcp.serverAddr to choose"
            );
            Ok(*first)
        }
    }
}

/// What the responder answers with.
#[derive(Clone)]
pub struct Settings {
    /// Boot files and the HTTP base URL.
    pub files: BootFiles,
    /// `tftp.root`, where files an answer requires must exist.
    pub root: PathBuf,
    /// Answers per second on each port.
    pub max_replies_per_second: u32,
    /// Machine assignments, for HTTP Boot clients whose assignment boots its UKI directly.
    pub machines: Option<Arc<crate::netboot::Machines>>,
}

/// Which port a socket serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    /// DHCP: DISCOVER → OFFER.
    Dhcp,
    /// PXE boot server: REQUEST or INFORM → ACK.
    Pxe,
}

/// What both socket tasks share.
struct Ctx {
    settings: Settings,
    root: Root,
    server_ip: Ipv4Addr,
    metrics: DhcpMetrics,
}

/// Serves both sockets until `stop` turns true.
pub async fn serve(
    bound: Bound,
    settings: Settings,
    metrics: DhcpMetrics,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let ctx = Arc::new(Ctx {
        root: Root::new(settings.root.clone(), &settings.files.http_base),
        settings,
        server_ip: bound.server_ip,
        metrics,
    });
    let dhcp = tokio::spawn(run(bound.dhcp, Port::Dhcp, Arc::clone(&ctx), stop.clone()));
    let pxe = tokio::spawn(run(bound.pxe, Port::Pxe, ctx, stop));
    let (a, b) = tokio::join!(dhcp, pxe);
    for r in [a, b] {
        r.map_err(std::io::Error::other)??;
    }
    Ok(())
}

/// How often a missing arm64 boot file is warned about at most.
const MISSING_FILE_WARN_EVERY: Duration = Duration::from_secs(60);

async fn run(
    sock: UdpSocket,
    port: Port,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // One byte more than accepted, so that a longer datagram shows as oversize.
    let mut buf = vec![0u8; packet::MAX_REQUEST + 1];
    let mut bucket = TokenBucket::new(ctx.settings.max_replies_per_second);
    let mut last_missing_warning: Option<Instant> = None;
    loop {
        let (n, src) = tokio::select! {
            () = async { let _ = stop.wait_for(|v| *v).await; } => return Ok(()),
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // ICMP errors for earlier answers, and signals: nothing to do.
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::Interrupted
                ) => continue,
                Err(e) => {
                    tracing::error!(?port, error = %e, "proxydhcp socket failed; this port stops answering");
                    return Err(e);
                }
            },
        };
        let Some((reply, dest, kind)) = handle(
            &buf[..n],
            src,
            port,
            &ctx,
            &mut bucket,
            &mut last_missing_warning,
        )
        .await
        else {
            continue;
        };
        match sock.send_to(&reply, dest).await {
            Ok(_) => ctx.metrics.answered(kind, port.reply_label()),
            Err(e) => tracing::warn!(%dest, error = %e, "proxydhcp answer not sent"),
        }
    }
}

impl Port {
    fn reply_label(self) -> &'static str {
        match self {
            Port::Dhcp => "offer",
            Port::Pxe => "ack",
        }
    }
}

/// Decides what to send for one datagram: the answer, where it goes and to whom.
async fn handle(
    datagram: &[u8],
    src: SocketAddr,
    port: Port,
    ctx: &Ctx,
    bucket: &mut TokenBucket,
    last_missing_warning: &mut Option<Instant>,
) -> Option<(Vec<u8>, SocketAddr, ClientKind)> {
    let m = &ctx.metrics;
    let req = match packet::parse(datagram) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%src, reason = %e, "malformed dhcp datagram dropped");
            m.malformed(e);
            return None;
        }
    };
    let reply = match (port, req.message_type) {
        (Port::Dhcp, MessageType::Discover) => MessageType::Offer,
        (Port::Pxe, MessageType::Request | MessageType::Inform) => MessageType::Ack,
        (_, other) => {
            // REQUESTs on 67 are for the site's DHCP server.
            tracing::trace!(%src, message = ?other, ?port, "dhcp message not for proxydhcp");
            m.ignored("message-type");
            return None;
        }
    };
    let answer: Answer = match decide::decide(&req.client, &ctx.settings.files) {
        Ok(a) => with_assigned_uki(a, &req, &ctx.settings),
        Err(why) => {
            tracing::debug!(%src, mac = %req.mac(), reason = ?why, "dhcp request not answered");
            m.ignored(why.label());
            return None;
        }
    };
    // Only requests worth answering spend a token, so a flood of ordinary DHCP traffic does
    // not starve PXE clients.
    if !bucket.take(Instant::now()) {
        tracing::debug!(%src, mac = %req.mac(), "proxydhcp rate limit reached; request dropped");
        m.ignored("rate-limited");
        return None;
    }
    if let Some(file) = &answer.requires {
        let root = ctx.root.clone();
        let name = file.clone();
        let present = tokio::task::spawn_blocking(move || root.open_file(&name).is_ok())
            .await
            .unwrap_or(false);
        if !present {
            let now = Instant::now();
            if last_missing_warning.is_none_or(|t| now.duration_since(t) >= MISSING_FILE_WARN_EVERY)
            {
                *last_missing_warning = Some(now);
                tracing::warn!(
                    mac = %req.mac(),
                    file = %file,
                    root = %ctx.settings.root.display(),
                    "an arm64 UEFI machine asks to netboot, but its boot file is not in \
                     tftp.root: not answered. Put an arm64 iPXE build there (or set \
                     netboot.proxyDhcp.arm64BootFile)"
                );
            }
            m.ignored("missing-file");
            return None;
        }
    }
    let bytes = match packet::reply(&req, &answer, ctx.server_ip, reply) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(mac = %req.mac(), error = %e, "proxydhcp answer could not be encoded");
            return None;
        }
    };
    let dest = packet::destination(&req, src);
    tracing::info!(
        mac = %req.mac(),
        client = answer.kind.label(),
        boot = ?answer.boot,
        reply = port.reply_label(),
        %dest,
        "proxydhcp answer"
    );
    Some((bytes, dest, answer.kind))
}

/// A token bucket: `rate` answers per second, bursts of up to `rate`.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// An HTTP Boot answer sends the machine to its assignment's UKI instead of iPXE when the
/// assignment matching what DHCP shows of it (MAC and architecture) asks for that.
fn with_assigned_uki(mut answer: Answer, req: &packet::Request, settings: &Settings) -> Answer {
    if answer.vendor != Vendor::Http {
        return answer;
    }
    let arch = match req.client.arch {
        Some(decide::arch::X64_UEFI_HTTP) => crate::catalog::Arch::Amd64,
        Some(decide::arch::ARM64_UEFI_HTTP) => crate::catalog::Arch::Arm64,
        _ => return answer,
    };
    let Some(machines) = &settings.machines else {
        return answer;
    };
    let Ok(mac) = crate::netboot::ident::Mac::try_from(req.chaddr.as_slice()) else {
        return answer;
    };
    let id = crate::netboot::Identity {
        mac: Some(mac),
        arch: Some(arch),
        ..Default::default()
    };
    let set = machines.current();
    if let Some(a) = set.resolve(&id)
        && a.boot.http_boot == crate::netboot::HttpBoot::Uki
    {
        answer.boot = BootFile::Url(format!("{}{}", settings.files.http_base, a.uki_path(arch)));
        answer.requires = None;
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_bounds_bursts_and_refills() {
        let start = Instant::now();
        let mut b = TokenBucket::new(3);
        b.last = start;
        assert!((0..3).all(|_| b.take(start)));
        assert!(!b.take(start));
        assert!(!b.take(start + Duration::from_millis(100)));
        assert!(b.take(start + Duration::from_millis(400)));
        assert!(!b.take(start + Duration::from_millis(400)));
        // Idle time refills up to the burst, not beyond.
        let later = start + Duration::from_secs(60);
        assert!((0..3).all(|_| b.take(later)));
        assert!(!b.take(later));
    }
}
