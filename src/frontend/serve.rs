//! `serve`: opens the node, binds every listener, runs the frontends and the node's workers
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
use crate::config::Config;
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

/// Addresses actually bound (after resolving port 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundAddrs {
    /// HTTP frontend.
    pub http: SocketAddr,
    /// Metrics listener, if enabled.
    pub metrics: Option<SocketAddr>,
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
    let mut listeners = BTreeMap::new();
    listeners.insert("http".to_string(), http_addr.to_string());
    if let Some(a) = metrics_addr {
        listeners.insert("metrics".to_string(), a.to_string());
    }
    let state = AppState::new(Arc::clone(&node), metrics, node.admin_token()?, listeners)?;
    node.start_maintenance();

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
    let http_task = tokio::spawn(http::serve_listener(
        http_listener,
        http::router(state.clone(), config),
        stop_rx.clone(),
        Conns::new(limits),
        limits,
    ));
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

    // Connections still open SHUTDOWN_GRACE after the signal are cut, so shutdown is bounded.
    let mut aborts = vec![http_task.abort_handle()];
    aborts.extend(metrics_task.as_ref().map(JoinHandle::abort_handle));
    let mut grace_rx = stop_rx.clone();
    tokio::spawn(async move {
        let _ = grace_rx.wait_for(|v| *v).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        for a in aborts {
            a.abort();
        }
    });

    let task_node = Arc::clone(&node);
    let task = tokio::spawn(async move {
        let http_res = finished("http", http_task.await);
        let metrics_res = match metrics_task {
            Some(t) => finished("metrics", t.await),
            None => Ok(()),
        };
        drop(state);
        let closed = task_node.close().await;
        tracing::info!("server stopped, storage flushed");
        http_res?;
        metrics_res?;
        closed?;
        Ok(())
    });

    Ok(Running {
        addrs: BoundAddrs {
            http: http_addr,
            metrics: metrics_addr,
        },
        node,
        task,
    })
}
