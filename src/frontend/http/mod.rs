//! HTTP frontend (axum): the API router, the metrics listener, and the `serve` entry point
//! that opens storage, binds every listener and runs until shutdown.

pub mod admin;
pub mod catalog;
mod conn;
mod direct;
pub mod error;
pub mod gojson;
pub mod handlers;
pub mod image;
pub mod metrics;
pub mod middleware;
pub mod ranges;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, header};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::assets::{Assets, DEFAULT_INITRAMFS_ZSTD_LEVEL, DataStores};
use crate::catalog::ReleaseStore;
use crate::config::{Config, ConfigError};
use crate::imager::builder::StageReporter;
use crate::store::{self, SchematicStore, StoreError};
use crate::trust::{SigningKey, TrustError};
use handlers::{AppState, StateParts};

/// Errors that stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Storage could not be opened or flushed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The signing key could not be loaded or generated.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        /// Configuration key of the listener.
        key: &'static str,
        /// Address that failed.
        addr: SocketAddr,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// A server loop failed.
    #[error("{name} server failed: {source}")]
    Run {
        /// Listener name.
        name: &'static str,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// A server task panicked or was cancelled.
    #[error("server task failed: {0}")]
    Join(String),
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
    task: JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// Waits until the server has shut down and storage is flushed.
    pub async fn wait(self) -> Result<(), ServeError> {
        self.task
            .await
            .map_err(|e| ServeError::Join(e.to_string()))?
    }
}

/// Builds the CORS layer from `http.allowedOrigins`.
fn cors(config: &Config) -> CorsLayer {
    let origins = &config.http.allowed_origins;
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS])
        .allow_headers([header::CACHE_CONTROL])
        .expose_headers([
            header::CONTENT_DISPOSITION,
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
        ])
}

/// The API router (without listeners), given shared state and config.
pub fn router(state: AppState, config: &Config) -> Router {
    Router::new()
        .route("/schematics", post(handlers::create_schematic))
        .route("/schematics/{id}", get(handlers::get_schematic))
        .route("/healthz", get(handlers::health))
        .route("/readyz", get(handlers::health))
        .route("/status", get(handlers::status))
        .route("/versions", get(catalog::versions))
        .route("/admin/import", post(admin::import))
        .route("/admin/gc", post(admin::gc))
        .route(
            "/image/{schematic}/{version}/{path}",
            get(image::image).head(image::image),
        )
        .route("/pxe/{schematic}/{version}/{path}", get(image::pxe))
        .route("/oci/cosign/signing-key.pub", get(image::signing_key))
        .route("/secureboot/signing-cert.pem", get(image::secureboot_cert))
        .route(
            "/version/{version}/extensions/official",
            get(catalog::extensions),
        )
        .route(
            "/version/{version}/overlays/official",
            get(catalog::overlays),
        )
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::disable())
        .layer(cors(config))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::decorate,
        ))
        .with_state(state)
}

/// The metrics router (`GET /metrics`).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(state)
}

/// Starts the background garbage-collection and scrub loops (`cache.*IntervalSeconds`); the
/// caller aborts them at shutdown (they hold the stores open).
fn spawn_maintenance(assets: &Assets, config: &Config) -> Vec<JoinHandle<()>> {
    let every = |secs: u64| (secs > 0).then(|| std::time::Duration::from_secs(secs));
    let mut tasks = Vec::new();
    if let Some(period) = every(config.cache.gc_interval_seconds) {
        let assets = assets.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                match assets.gc(false).await {
                    Ok(r) if !r.evicted.is_empty() => tracing::info!(
                        evicted = r.evicted.len(),
                        freed_bytes = r.freed_bytes,
                        bytes = r.bytes_after,
                        "garbage collection evicted assets"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "garbage collection failed"),
                }
            }
        }));
    }
    if let Some(period) = every(config.cache.scrub_interval_seconds) {
        let assets = assets.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tick.tick().await;
                match assets.scrub().await {
                    Ok((checked, failed)) => {
                        tracing::info!(checked, failed, "scrub of cached assets finished")
                    }
                    Err(e) => tracing::error!(error = %e, "scrub failed"),
                }
            }
        }));
    }
    tasks
}

/// How long open connections may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

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
        Err(e) => Err(ServeError::Join(e.to_string())),
    }
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { key, addr, source })
}

/// Validates `config`, opens storage and the signing key, binds every listener and serves
/// until `shutdown` resolves; then drains connections and flushes storage.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, ServeError> {
    config.validate()?;
    let data_dir = config.data_dir().to_path_buf();
    let meta = {
        let dir = data_dir.clone();
        tokio::task::spawn_blocking(move || store::open_data_dir(&dir))
            .await
            .map_err(|e| ServeError::Join(e.to_string()))??
    };
    tracing::info!(dir = %meta.dir().display(), "metadata store opened");
    let meta: Arc<dyn store::MetaStore> = Arc::new(meta);
    let schematics = SchematicStore::new(meta.clone())?;
    let releases = ReleaseStore::new(meta.clone());
    for r in releases.list()? {
        if matches!(r.signatures, crate::catalog::Signatures::Skipped) {
            tracing::warn!(
                version = %r.version,
                "release {} was imported with --insecure-skip-signature-verification: its images are NOT verified",
                r.version
            );
        }
    }
    let catalog_view = handlers::CatalogView {
        releases,
        min_version: config.min_talos_version()?,
        broken: config.broken_talos_versions()?,
    };

    let key_path = config.signing_key_path();
    let (signing_key, created) = SigningKey::load_or_generate(&key_path)?;
    if created {
        tracing::info!(path = %key_path.display(), "generated cluster signing key");
    } else {
        tracing::info!(path = %key_path.display(), "loaded cluster signing key");
    }
    let signing_key_pem = signing_key.public_key_pem()?;
    let signing_key = Arc::new(signing_key);

    let http_listener = bind("http.httpListenAddr", config.http_listen()?.0).await?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| ServeError::Run {
            name: "http",
            source,
        })?;
    let metrics_listener = match config.metrics_listen()? {
        Some(a) => Some(bind("metrics.addr", a.0).await?),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr().map_err(|source| ServeError::Run {
            name: "metrics",
            source,
        })?),
        None => None,
    };

    let mut listeners = BTreeMap::new();
    listeners.insert("http".to_string(), http_addr.to_string());
    if let Some(a) = metrics_addr {
        listeners.insert("metrics".to_string(), a.to_string());
    }
    let abs_data_dir = std::fs::canonicalize(&data_dir).unwrap_or(data_dir.clone());
    let (admin_token, token_created) =
        crate::trust::load_or_generate_token(&config.admin_token_path())?;
    if token_created {
        tracing::info!(path = %config.admin_token_path().display(), "generated admin token");
    }
    let blobs = store::BlobStore::open(&data_dir.join("blobs"), meta.clone())?;
    let admin = Arc::new(admin::AdminState {
        token: admin_token,
        blobs,
        trusted_key_files: config
            .trust
            .public_keys
            .iter()
            .map(std::path::PathBuf::from)
            .collect(),
        scratch: data_dir.join("tmp"),
        lock: tokio::sync::Mutex::new(()),
    });
    let metrics = metrics::Metrics::new();
    let assets = {
        let stores = DataStores {
            meta: meta.clone(),
            blobs: admin.blobs.clone(),
            key: signing_key,
        };
        let asset_metrics = metrics.assets.clone();
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            // Build stages go to the debug log (the default reporter).
            Assets::from_config(
                &config,
                stores,
                asset_metrics,
                DEFAULT_INITRAMFS_ZSTD_LEVEL,
                StageReporter::default(),
            )
        })
        .await
        .map_err(|e| ServeError::Join(e.to_string()))?
    };
    let pxe_base_url = if config.http.external_pxe_url.is_empty() {
        config.http.external_url.clone()
    } else {
        config.http.external_pxe_url.clone()
    };
    let state = AppState::new(StateParts {
        schematics: schematics.clone(),
        catalog: catalog_view,
        admin,
        assets: assets.clone(),
        metrics,
        max_body_bytes: config.http.max_body_bytes,
        data_dir: abs_data_dir.display().to_string(),
        listeners,
        pxe_base_url,
        signing_key_pem,
    });
    let maintenance = spawn_maintenance(&assets, &config);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };

    tracing::info!(addr = %http_addr, "http listener bound");
    let http_task = tokio::spawn(conn::serve_listener(
        http_listener,
        router(state.clone(), &config),
        stop_rx.clone(),
    ));
    let metrics_task = metrics_listener.map(|l| {
        if let Some(a) = metrics_addr {
            tracing::info!(addr = %a, "metrics listener bound");
        }
        tokio::spawn(
            axum::serve(l, metrics_router(state.clone()))
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

    let task = tokio::spawn(async move {
        let http_res = finished("http", http_task.await);
        let metrics_res = match metrics_task {
            Some(t) => finished("metrics", t.await),
            None => Ok(()),
        };
        for t in maintenance {
            t.abort();
            let _ = t.await;
        }
        let flushed = schematics.flush().await;
        tracing::info!("server stopped, storage flushed");
        http_res?;
        metrics_res?;
        flushed?;
        Ok(())
    });

    Ok(Running {
        addrs: BoundAddrs {
            http: http_addr,
            metrics: metrics_addr,
        },
        task,
    })
}
