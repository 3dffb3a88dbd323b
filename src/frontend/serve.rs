//! `serve`: opens the node, binds every listener (HTTP, metrics, admin, TFTP, ProxyDHCP, the
//! peer swarm's), runs the frontends and the node's workers
//! until shutdown, then stops them in order — listeners first (open connections get a grace
//! period), then the workers, then storage is flushed.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::http::{self, AppState, metrics::Metrics};
use super::listen::{self, Conns, Limits};
use super::{dhcp, tftp};
use crate::config::{AdminListen, Config, DEFAULT_TFTP_LISTEN_ADDR};
use crate::imager::builder::StageReporter;
use crate::node::{Node, NodeError, NodeOptions};

/// Errors that stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener address in the configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The node could not be opened or closed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The HTTP state could not be built.
    #[error(transparent)]
    State(#[from] http::state::StateError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({key})")]
    Bind {
        /// Configuration key of the listener.
        key: &'static str,
        /// Address that failed.
        addr: SocketAddr,
        /// Underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A server loop failed.
    #[error("the {name} listener failed")]
    Run {
        /// Listener name.
        name: &'static str,
        /// Underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The ProxyDHCP responder could not start (the message names the fix).
    #[error(transparent)]
    ProxyDhcp(#[from] dhcp::DhcpError),
    /// A listener's TLS configuration could not be loaded.
    #[error(transparent)]
    Tls(#[from] listen::tls::TlsError),
    /// The admin socket could not be created.
    #[error("cannot listen on the admin socket {path} (admin.listenAddr)")]
    AdminSocket {
        /// The socket path.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A server task panicked.
    #[error("the {name} task failed")]
    Join {
        /// What the task was.
        name: &'static str,
        /// Why it ended.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl ServeError {
    /// Whether the data directory is held by another process.
    pub fn is_locked(&self) -> bool {
        matches!(self, ServeError::Node(e) if e.is_locked())
    }
}

/// Where the admin API was bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAddr {
    /// A Unix socket.
    Unix(std::path::PathBuf),
    /// A TCP address (after resolving port 0).
    Tcp(SocketAddr),
}

impl std::fmt::Display for AdminAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            AdminAddr::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// Addresses actually bound (after resolving port 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundAddrs {
    /// HTTP frontend.
    pub http: SocketAddr,
    /// Metrics listener, if enabled.
    pub metrics: Option<SocketAddr>,
    /// Admin API.
    pub admin: AdminAddr,
    /// TFTP listener (UDP), if enabled and bound.
    pub tftp: Option<SocketAddr>,
    /// ProxyDHCP's DHCP port (UDP), if enabled.
    pub proxy_dhcp: Option<SocketAddr>,
    /// ProxyDHCP's PXE boot-server port (UDP), if enabled.
    pub proxy_dhcp_pxe: Option<SocketAddr>,
}

/// A started server: its bound addresses and the task that ends after graceful shutdown.
pub struct Running {
    /// Bound addresses.
    pub addrs: BoundAddrs,
    /// The node the server runs on.
    pub node: Arc<Node>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// Waits until the server has shut down and storage is flushed.
    pub async fn wait(self) -> Result<(), ServeError> {
        self.task.await.map_err(|source| ServeError::Join {
            name: "server",
            source,
        })?
    }
}

/// Tells systemd (when it started us with `NOTIFY_SOCKET`) that the appliance is ready or
/// stopping; without systemd, nothing.
fn notify_systemd(state: sd_notify::NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// How long open connections may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Maps a server task's outcome; being cut off after the grace period is not an error.
fn finished(
    name: &'static str,
    res: Result<std::io::Result<()>, tokio::task::JoinError>,
) -> Result<(), ServeError> {
    match res {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(ServeError::Run { name, source }),
        Err(e) if e.is_cancelled() => {
            tracing::warn!(
                listener = name,
                "connections still open after the grace period were closed"
            );
            Ok(())
        }
        Err(source) => Err(ServeError::Join { name, source }),
    }
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { key, addr, source })
}

fn local_addr(name: &'static str, l: &TcpListener) -> Result<SocketAddr, ServeError> {
    l.local_addr()
        .map_err(|source| ServeError::Run { name, source })
}

/// The HTTP listener's deadlines and cap (`http.*`; a cap of 0 follows the open-file limit,
/// which is raised to its hard limit first).
fn http_limits(config: &Config) -> Limits {
    let secs = Duration::from_secs;
    let max_connections = match config.http.max_connections {
        0 => listen::default_max_connections(listen::raise_fd_limit()),
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    Limits {
        head_timeout: secs(config.http.read_header_timeout_seconds),
        idle_timeout: secs(config.http.idle_timeout_seconds),
        write_timeout: secs(config.http.write_timeout_seconds),
        max_connections,
    }
}

/// The admin listener's deadlines and cap: the HTTP deadlines, and few connections (it serves
/// operators, not machines).
fn admin_limits(http: Limits) -> Limits {
    Limits {
        max_connections: 64,
        ..http
    }
}

/// A bound admin listener.
enum AdminListener {
    Unix(tokio::net::UnixListener, std::path::PathBuf),
    Tcp(TcpListener, Option<tokio_rustls::TlsAcceptor>),
}

/// Binds the admin API where `admin.listenAddr` says: a Unix socket (a stale socket file
/// left by a crash is replaced; the socket is made owner-only) or TCP.
async fn bind_admin(config: &Config) -> Result<(AdminListener, AdminAddr), ServeError> {
    match config.admin_listen()? {
        AdminListen::Unix(path) => {
            let fail = |source| ServeError::AdminSocket {
                path: path.clone(),
                source,
            };
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                use std::os::unix::fs::FileTypeExt as _;
                if !meta.file_type().is_socket() {
                    return Err(fail(std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "a file that is not a socket is in the way",
                    )));
                }
                std::fs::remove_file(&path).map_err(fail)?;
            }
            let listener = tokio::net::UnixListener::bind(&path).map_err(fail)?;
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(fail)?;
            Ok((
                AdminListener::Unix(listener, path.clone()),
                AdminAddr::Unix(path),
            ))
        }
        AdminListen::Tcp(addr) => {
            let listener = bind("admin.listenAddr", addr.0).await?;
            let bound = local_addr("admin", &listener)?;
            let tls = tls_for(
                ("admin.certFile", "admin.keyFile"),
                &config.admin.cert_file,
                &config.admin.key_file,
            )?;
            if tls.is_none() && !bound.ip().is_loopback() {
                // The bearer token, and the cluster key in every invitation, would cross the
                // network in clear.
                tracing::warn!(addr = %bound, "the admin listener is reachable from the network without TLS: set admin.certFile and admin.keyFile (its token and any invitation travel in clear)");
            }
            Ok((AdminListener::Tcp(listener, tls), AdminAddr::Tcp(bound)))
        }
    }
}

/// The TLS acceptor of a listener whose certificate and key are configured.
fn tls_for(
    keys: (&'static str, &'static str),
    cert: &str,
    key: &str,
) -> Result<Option<tokio_rustls::TlsAcceptor>, ServeError> {
    if cert.is_empty() {
        return Ok(None);
    }
    Ok(Some(listen::tls::acceptor(
        keys,
        std::path::Path::new(cert),
        std::path::Path::new(key),
    )?))
}

/// Binds the TFTP socket where `tftp.listenAddr` says (`None` when empty). When the default
/// `:69` cannot be bound (no root or `CAP_NET_BIND_SERVICE`, or another TFTP server has it),
/// serve starts without TFTP and says once how to fix it; an address set by the operator must
/// bind.
fn bind_tftp(config: &Config) -> Result<Option<tokio::net::UdpSocket>, ServeError> {
    let Some(addr) = config.tftp_listen()? else {
        return Ok(None);
    };
    match tftp::bind(addr.0) {
        Ok(s) => Ok(Some(s)),
        Err(e) if config.tftp.listen_addr == DEFAULT_TFTP_LISTEN_ADDR => {
            tracing::warn!(
                addr = %addr,
                error = %e,
                "TFTP not started: cannot bind the default UDP port 69. To netboot from this \
                 appliance, run it with CAP_NET_BIND_SERVICE (e.g. AmbientCapabilities= in the \
                 systemd unit) or as root, or set tftp.listenAddr (IF_TFTP_LISTENADDR) to a free \
                 port; set it to \"\" to turn TFTP off and silence this warning"
            );
            Ok(None)
        }
        Err(source) => Err(ServeError::Bind {
            key: "tftp.listenAddr",
            addr: addr.0,
            source,
        }),
    }
}

/// The TFTP server's settings from `tftp.*`; chain scripts continue at `pxe_base`.
fn tftp_settings(config: &Config, pxe_base: &str) -> tftp::Settings {
    let t = &config.tftp;
    tftp::Settings {
        root: std::path::PathBuf::from(&t.root),
        http_base: pxe_base.to_string(),
        max_transfers: usize::try_from(t.max_transfers).unwrap_or(usize::MAX),
        max_blksize: u16::try_from(t.max_block_size).unwrap_or(u16::MAX),
        max_windowsize: u16::try_from(t.max_window_size).unwrap_or(64),
    }
}

/// Binds the ProxyDHCP sockets when `netboot.proxyDhcp.enabled`; failing to is an error that
/// names the fix (the operator asked for it).
fn bind_proxy_dhcp(config: &Config) -> Result<Option<dhcp::Bound>, ServeError> {
    let p = &config.netboot.proxy_dhcp;
    if !p.enabled {
        return Ok(None);
    }
    Ok(Some(dhcp::bind(
        &p.interface,
        p.listen()?.0,
        p.pxe_listen()?.0,
        p.server_ip()?,
    )?))
}

/// The ProxyDHCP responder's settings; HTTP URLs start at `pxe_base`.
fn proxy_dhcp_settings(
    config: &Config,
    pxe_base: &str,
    machines: Arc<crate::netboot::Machines>,
) -> dhcp::Settings {
    let p = &config.netboot.proxy_dhcp;
    dhcp::Settings {
        files: dhcp::BootFiles {
            bios: p.bios_boot_file.clone(),
            uefi: p.uefi_boot_file.clone(),
            arm64: p.arm64_boot_file.clone(),
            http_base: pxe_base.trim_end_matches('/').to_string(),
        },
        root: std::path::PathBuf::from(&config.tftp.root),
        max_replies_per_second: u32::try_from(p.max_replies_per_second).unwrap_or(u32::MAX),
        machines: Some(machines),
    }
}

/// Warns about setups where ProxyDHCP answers but the machines cannot follow them.
fn warn_proxy_dhcp_setup(
    config: &Config,
    bound: &dhcp::Bound,
    tftp: Option<SocketAddr>,
    pxe_base: &str,
) {
    let p = &config.netboot.proxy_dhcp;
    if tftp.is_none_or(|a| a.port() != 69) {
        tracing::warn!(
            tftp = ?tftp,
            server_addr = %bound.server_ip,
            "ProxyDHCP sends PXE firmware to TFTP port 69 of its server address, but this \
             appliance's TFTP server is not listening on port 69 (tftp.listenAddr): BIOS and \
             UEFI PXE clients will not load iPXE"
        );
    }
    let loopback_base = url::Url::parse(pxe_base)
        .ok()
        .is_some_and(|u| match u.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => true,
        });
    if loopback_base && !bound.server_ip.is_loopback() {
        tracing::warn!(
            url = pxe_base,
            server_addr = %bound.server_ip,
            "ProxyDHCP hands iPXE and HTTP Boot clients URLs under a loopback address, which \
             machines cannot reach: set http.externalPXEURL (or http.externalURL) to this \
             appliance's address on the boot network, e.g. http://<server_addr>:8080"
        );
    }
    if p.listen().is_ok_and(|a| !a.0.ip().is_unspecified()) {
        tracing::warn!(
            listen_addr = %p.listen_addr,
            "netboot.proxyDhcp.listenAddr names an address: broadcast DISCOVERs are only \
             received on a wildcard address such as \":67\""
        );
    }
}

/// Reloads `netboot.machinesFile` on every SIGHUP until the server stops; a file that does not
/// check is logged and the previous assignments stay.
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    machines: Arc<crate::netboot::Machines>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let hangup = tokio::select! {
            got = hangups.recv() => got.is_some(),
            _ = stop.wait_for(|v| *v) => false,
        };
        if !hangup {
            return;
        }
        match machines.reload_file().await {
            Ok(n) => tracing::info!(assignments = n, "SIGHUP: machines file reloaded"),
            Err(crate::netboot::NetbootError::NoFile) => {
                tracing::info!("SIGHUP: no netboot.machinesFile configured, nothing to reload");
            }
            Err(e) => tracing::error!(
                error = %format!("{:#}", crate::causes::Causes(&e)),
                "SIGHUP: machines file refused; the previous assignments stay in force"
            ),
        }
    }
}

/// Opens the node for `config`, binds every listener and serves until `shutdown` resolves;
/// then drains connections, stops the workers and flushes storage.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, ServeError> {
    let metrics = Metrics::new();
    let opts = NodeOptions {
        recorder: metrics.recorder(),
        // Build stages go to the debug log.
        stages: StageReporter::default(),
        ..NodeOptions::default()
    };
    let node = tokio::task::spawn_blocking(move || Node::open(config, opts))
        .await
        .map_err(|source| ServeError::Join {
            name: "node open",
            source,
        })??;
    let node = Arc::new(node);
    let config = node.config();

    let http_listener = bind("http.httpListenAddr", config.http_listen()?.0).await?;
    let http_addr = local_addr("http", &http_listener)?;
    let metrics_listener = match config.metrics_listen()? {
        Some(a) => Some(bind("metrics.addr", a.0).await?),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(local_addr("metrics", l)?),
        None => None,
    };
    let http_tls = tls_for(
        ("http.certFile", "http.keyFile"),
        &config.http.cert_file,
        &config.http.key_file,
    )?;
    let (admin_listener, admin_addr) = bind_admin(config).await?;
    let tftp_socket = bind_tftp(config)?;
    let tftp_addr = match &tftp_socket {
        Some(s) => Some(s.local_addr().map_err(|source| ServeError::Run {
            name: "tftp",
            source,
        })?),
        None => None,
    };
    let proxy_dhcp = bind_proxy_dhcp(config)?;
    let proxy_dhcp_status = proxy_dhcp.as_ref().map(dhcp::Bound::status);
    let mut listeners = BTreeMap::new();
    listeners.insert("http".to_string(), http_addr.to_string());
    if let Some(a) = metrics_addr {
        listeners.insert("metrics".to_string(), a.to_string());
    }
    listeners.insert("admin".to_string(), admin_addr.to_string());
    if let Some(a) = tftp_addr {
        listeners.insert("tftp".to_string(), a.to_string());
    }
    if let Some(st) = &proxy_dhcp_status {
        for (name, addr) in [("proxyDhcp", st.dhcp_addr), ("proxyDhcpPxe", st.pxe_addr)] {
            if let Some(a) = addr {
                listeners.insert(name.to_string(), a.to_string());
            }
        }
    }
    let dhcp_metrics = proxy_dhcp
        .as_ref()
        .map(|_| dhcp::DhcpMetrics::new(metrics.recorder()));
    let tftp_metrics = tftp::TftpMetrics::new(metrics.recorder());
    // The peer swarm binds its addresses before anything starts, so a failure leaves nothing
    // running.
    node.start_replication().await?;
    let state = AppState::new(Arc::clone(&node), metrics, node.admin_token()?, listeners)?;
    if let Some(st) = &proxy_dhcp_status {
        state.set_proxy_dhcp(st.clone());
    }
    node.start_maintenance();
    crate::frontend::http::ui::set_demo(node.is_demo());
    // Registered before any listener reports itself, so a SIGHUP never finds the default
    // action (terminate) in place.
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(
        |source| ServeError::Run {
            name: "SIGHUP handler",
            source,
        },
    )?;

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };

    tracing::info!(addr = %http_addr, "http listener bound");
    let limits = http_limits(config);
    tracing::info!(
        max_connections = limits.max_connections,
        head_timeout_s = limits.head_timeout.as_secs(),
        idle_timeout_s = limits.idle_timeout.as_secs(),
        write_timeout_s = limits.write_timeout.as_secs(),
        "http connection limits"
    );
    if http_tls.is_some() {
        tracing::info!("http listener serves TLS");
    }
    let http_task = tokio::spawn(http::serve_listener(
        http_listener,
        http::router(state.clone(), config),
        stop_rx.clone(),
        Conns::new(limits),
        limits,
        http_tls,
    ));
    tracing::info!(addr = %admin_addr, "admin listener bound");
    let admin_router = http::admin_router(state.clone());
    let admin_limits = admin_limits(limits);
    let admin_socket = match &admin_listener {
        AdminListener::Unix(_, path) => Some(path.clone()),
        AdminListener::Tcp(..) => None,
    };
    let admin_task = tokio::spawn(match admin_listener {
        AdminListener::Unix(l, _) => futures_util::future::Either::Left(http::serve_unix_listener(
            l,
            admin_router,
            stop_rx.clone(),
            Conns::new(admin_limits),
            admin_limits,
        )),
        AdminListener::Tcp(l, tls) => futures_util::future::Either::Right(http::serve_listener(
            l,
            admin_router,
            stop_rx.clone(),
            Conns::new(admin_limits),
            admin_limits,
            tls,
        )),
    });
    let metrics_task = metrics_listener.map(|l| {
        if let Some(a) = metrics_addr {
            tracing::info!(addr = %a, "metrics listener bound");
        }
        tokio::spawn(
            axum::serve(l, http::metrics_router(state.clone()))
                .with_graceful_shutdown(stopped(stop_rx.clone()))
                .into_future(),
        )
    });

    let tftp_task = tftp_socket.map(|sock| {
        let settings = tftp_settings(config, state.pxe_base_url());
        if let Some(a) = tftp_addr {
            tracing::info!(
                addr = %a,
                root = %settings.root.display(),
                max_transfers = settings.max_transfers,
                "tftp listener bound"
            );
        }
        tokio::spawn(tftp::serve(sock, settings, tftp_metrics, stop_rx.clone()))
    });

    let dhcp_task = match (proxy_dhcp, dhcp_metrics) {
        (Some(bound), Some(m)) => {
            let settings =
                proxy_dhcp_settings(config, state.pxe_base_url(), Arc::clone(state.machines()));
            warn_proxy_dhcp_setup(config, &bound, tftp_addr, state.pxe_base_url());
            tracing::info!(
                interface = %bound.interface,
                server_addr = %bound.server_ip,
                dhcp = ?proxy_dhcp_status.as_ref().and_then(|s| s.dhcp_addr),
                pxe = ?proxy_dhcp_status.as_ref().and_then(|s| s.pxe_addr),
                "proxydhcp listeners bound"
            );
            Some(tokio::spawn(dhcp::serve(
                bound,
                settings,
                m,
                stop_rx.clone(),
            )))
        }
        _ => None,
    };
    tokio::spawn(reload_on_hangup(
        hangups,
        Arc::clone(state.machines()),
        stop_rx.clone(),
    ));

    // Connections still open SHUTDOWN_GRACE after the signal are cut, so shutdown is bounded.
    let mut aborts = vec![http_task.abort_handle(), admin_task.abort_handle()];
    aborts.extend(metrics_task.as_ref().map(JoinHandle::abort_handle));
    aborts.extend(tftp_task.as_ref().map(JoinHandle::abort_handle));
    aborts.extend(dhcp_task.as_ref().map(JoinHandle::abort_handle));
    let mut grace_rx = stop_rx.clone();
    tokio::spawn(async move {
        let _ = grace_rx.wait_for(|v| *v).await;
        notify_systemd(sd_notify::NotifyState::Stopping);
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        for a in aborts {
            a.abort();
        }
    });

    // Every listener is bound and serving: a systemd unit of Type=notify starts now.
    notify_systemd(sd_notify::NotifyState::Ready);
    let task_node = Arc::clone(&node);
    let task = tokio::spawn(async move {
        let http_res = finished("http", http_task.await);
        let admin_res = finished("admin", admin_task.await);
        if let Some(path) = admin_socket {
            let _ = std::fs::remove_file(path);
        }
        let metrics_res = match metrics_task {
            Some(t) => finished("metrics", t.await),
            None => Ok(()),
        };
        let tftp_res = match tftp_task {
            Some(t) => finished("tftp", t.await),
            None => Ok(()),
        };
        let dhcp_res = match dhcp_task {
            Some(t) => finished("proxydhcp", t.await),
            None => Ok(()),
        };
        drop(state);
        let closed = task_node.close().await;
        tracing::info!("server stopped, storage flushed");
        http_res?;
        admin_res?;
        metrics_res?;
        tftp_res?;
        dhcp_res?;
        closed?;
        Ok(())
    });

    Ok(Running {
        addrs: BoundAddrs {
            http: http_addr,
            metrics: metrics_addr,
            admin: admin_addr,
            tftp: tftp_addr,
            proxy_dhcp: proxy_dhcp_status.as_ref().and_then(|s| s.dhcp_addr),
            proxy_dhcp_pxe: proxy_dhcp_status.as_ref().and_then(|s| s.pxe_addr),
        },
        node,
        task,
    })
}
