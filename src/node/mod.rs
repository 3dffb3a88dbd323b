//! One appliance node: the data directory opened once — metadata and blob stores, the cluster
//! signing key, schematics, imported releases and the asset pipeline — plus the background
//! workers it owns. `serve`, `build`, `import` and `gc` all start from [`Node::open`]; the
//! frontends (`crate::frontend`) are handed the node and never open storage themselves.

mod gc;
mod import;
pub mod on_demand;
mod storage;
pub mod worker;

/// Where `serve --demo` keeps its synthetic release in the data directory.
pub const DEMO_DIR: &str = "demo";
/// The file in [`DEMO_DIR`] written once the demo release is imported.
pub const DEMO_IMPORTED: &str = "imported";

pub use import::{ImportCount, ImportFrom, ImportJob, ImportJobError, Running};
pub use storage::{DoctorReport, StorageHealth, StorageState, StorageSummary, doctor};
pub use worker::{Periodic, WorkError, Worker, WorkerState, WorkerStatus, Workers};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use metrics::Recorder;

use crate::assets::{
    AssetError, AssetMetrics, Assets, DEFAULT_INITRAMFS_ZSTD_LEVEL, DataStores, GcPass, GcReport,
};
use crate::catalog::{ReleaseStore, Signatures};
use crate::config::{Config, ConfigError};
use crate::imager::builder::StageReporter;
use crate::replication::{Cluster, Replication, ReplicationError};
use crate::store::{self, BlobStore, MetaStore, SchematicStore, StoreError};
use crate::trust::secureboot::{SecureBootKeys, SecureBootPaths};
use crate::trust::{SigningKey, TrustError};

/// Errors of opening or closing a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A store could not be opened or flushed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key could not be loaded or generated.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The Secure Boot keys are missing or invalid.
    #[error(transparent)]
    SecureBoot(#[from] crate::trust::secureboot::SecureBootError),
    /// The cluster state could not be read, or the swarm could not start.
    #[error(transparent)]
    Replication(Box<ReplicationError>),
}

impl From<ReplicationError> for NodeError {
    fn from(e: ReplicationError) -> Self {
        NodeError::Replication(Box::new(e))
    }
}

impl NodeError {
    /// Whether the data directory is held by another process.
    pub fn is_locked(&self) -> bool {
        matches!(self, NodeError::Store(StoreError::Locked { .. }))
    }
}

/// How a node's asset pipeline is set up (what differs between the server and the CLI).
pub struct NodeOptions {
    /// Where the asset pipeline's metrics go.
    pub recorder: Arc<dyn Recorder + Send + Sync>,
    /// zstd level of the initramfs' appended cpio.
    pub initramfs_zstd_level: u32,
    /// Receives build stages (the server: the debug log; the CLI: its spinner).
    pub stages: StageReporter,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            recorder: Arc::new(metrics::NoopRecorder),
            initramfs_zstd_level: DEFAULT_INITRAMFS_ZSTD_LEVEL,
            stages: StageReporter::default(),
        }
    }
}

/// An open data directory and everything built on it.
pub struct Node {
    config: Config,
    meta: Arc<dyn MetaStore>,
    blobs: BlobStore,
    schematics: SchematicStore,
    releases: ReleaseStore,
    signing_key: Arc<SigningKey>,
    secure_boot: Option<Arc<SecureBootKeys>>,
    assets: Assets,
    workers: Workers,
    storage: StorageHealth,
    imports: import::ImportCount,
    cluster: Arc<Cluster>,
    factory_url: String,
    replication: std::sync::OnceLock<Replication>,
    recorder: Arc<dyn Recorder + Send + Sync>,
    on_demand: Option<Arc<on_demand::OnDemand>>,
    /// Whether the data directory held the demo release when it was opened.
    demo: bool,
}

impl Node {
    /// Validates `config` and opens its data directory (blocking: storage, keys, scratch
    /// sweep). Fails with [`StoreError::Locked`] when another process holds it, and with
    /// [`StoreError::Damaged`] when the metadata store does not open. Checks the metadata
    /// index against the schematic and release documents and restores what it lost (see
    /// [`Node::storage`]).
    pub fn open(config: Config, opts: NodeOptions) -> Result<Self, NodeError> {
        config.validate()?;
        let dir = config.data_dir().to_path_buf();
        let sled = store::open_data_dir(&dir)?;
        tracing::info!(dir = %dir.display(), "data directory opened");
        let meta: Arc<dyn MetaStore> = Arc::new(sled);
        let blobs = BlobStore::open(&dir.join("blobs"), Arc::clone(&meta))?;
        let schematics = SchematicStore::new(&blobs)?;
        let releases = ReleaseStore::open(&blobs)?;
        let storage = storage::check(&schematics, &releases, &blobs, true, false)?;
        for r in releases.list()? {
            if matches!(r.signatures, Signatures::Skipped) {
                tracing::warn!(
                    version = %r.version,
                    "release {} was imported with --insecure-skip-signature-verification: its images are NOT verified",
                    r.version
                );
            }
        }
        let key_path = config.signing_key_path();
        let (key, created) = SigningKey::load_or_generate(&key_path)?;
        let verb = if created { "generated" } else { "loaded" };
        tracing::info!(path = %key_path.display(), "{verb} cluster signing key");
        let signing_key = Arc::new(key);
        let secure_boot = load_secure_boot(&config)?;
        let cluster = Arc::new(Cluster::open(&dir, Arc::clone(&signing_key))?);
        if let Some(m) = cluster.membership() {
            tracing::info!(cluster = %m.record.cluster, "member of a cluster");
            if m.expires.is_some_and(|at| at <= crate::clock::now_secs()) {
                tracing::warn!(
                    "this node's cluster credential has expired: members refuse it; ask a member for a new invitation"
                );
            }
        }
        let recorder = Arc::clone(&opts.recorder);
        let on_demand = on_demand::OnDemand::from_config(&config, opts.recorder.as_ref());
        let demo = dir.join(DEMO_DIR).join(DEMO_IMPORTED).exists();
        let factory_url =
            crate::replication::factory_identity(&config, cluster.membership().as_deref());
        if factory_url != config.http.external_url {
            tracing::info!(
                factory_url = %factory_url,
                external_url = %config.http.external_url,
                "models are built as the cluster's factory URL; this node's own URL stays in PXE scripts and /status"
            );
        }
        let assets = Assets::from_config(
            &config,
            factory_url.clone(),
            DataStores {
                meta: Arc::clone(&meta),
                blobs: blobs.clone(),
                key: Arc::clone(&signing_key),
                schematics: schematics.clone(),
                secure_boot: secure_boot.clone(),
            },
            AssetMetrics::new(opts.recorder),
            opts.initramfs_zstd_level,
            opts.stages,
        );
        Ok(Self {
            config,
            meta,
            blobs,
            schematics,
            releases,
            signing_key,
            secure_boot,
            assets,
            workers: Workers::new(),
            storage,
            imports: import::ImportCount::default(),
            cluster,
            factory_url,
            replication: std::sync::OnceLock::new(),
            recorder,
            on_demand,
            demo,
        })
    }

    /// The Secure Boot keys, when `secureBoot.enabled`.
    pub fn secure_boot(&self) -> Option<&Arc<SecureBootKeys>> {
        self.secure_boot.as_ref()
    }

    /// What the storage check at open found and restored.
    pub fn storage(&self) -> &StorageHealth {
        &self.storage
    }

    /// Whether the data directory holds the demo release of `serve --demo` (the synthetic
    /// test-kit release, not Talos).
    pub fn is_demo(&self) -> bool {
        self.demo
    }

    /// The registry releases are imported from on demand, if configured.
    pub fn on_demand(&self) -> Option<&Arc<on_demand::OnDemand>> {
        self.on_demand.as_ref()
    }

    /// Imports `version` from the on-demand registry if it lists it and it is not imported
    /// yet (see [`on_demand`]); nothing without one.
    pub async fn ensure_release(
        &self,
        version: &crate::catalog::Version,
    ) -> Result<(), on_demand::OnDemandError> {
        match &self.on_demand {
            Some(od) => od.ensure(self, version).await,
            None => Ok(()),
        }
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.config.data_dir()
    }

    /// Scratch space on the data volume (uploads, extraction, builds).
    pub fn scratch_dir(&self) -> PathBuf {
        self.data_dir().join("tmp")
    }

    /// The metadata store.
    pub fn meta(&self) -> &Arc<dyn MetaStore> {
        &self.meta
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Stored schematics.
    pub fn schematics(&self) -> &SchematicStore {
        &self.schematics
    }

    /// Imported releases.
    pub fn releases(&self) -> &ReleaseStore {
        &self.releases
    }

    /// The cluster signing key.
    pub fn signing_key(&self) -> &Arc<SigningKey> {
        &self.signing_key
    }

    /// The asset pipeline.
    pub fn assets(&self) -> &Assets {
        &self.assets
    }

    /// The data directory's cluster state.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The factory identity this node builds as (see [`crate::replication::factory_identity`]).
    pub fn factory_url(&self) -> &str {
        &self.factory_url
    }

    /// The running swarm (`None` when `replication.enabled` is off).
    pub fn replication(&self) -> Option<&Replication> {
        self.replication.get()
    }

    /// Starts the peer swarm when `replication.enabled` is set: binds its listen addresses
    /// (an error says which failed) and runs it as the `replication` worker. Needs a tokio
    /// runtime.
    pub async fn start_replication(&self) -> Result<(), NodeError> {
        let cfg = &self.config.replication;
        if !cfg.enabled || self.replication.get().is_some() {
            return Ok(());
        }
        if self.cluster.membership().is_none() {
            tracing::warn!(
                "replication.enabled is set but this node is in no cluster: peers will refuse it. \
                 Run `image-factory cluster invite` to found one, or `image-factory cluster join` \
                 with an invitation"
            );
        }
        let (handle, worker) = crate::replication::start(
            cfg,
            Arc::clone(&self.cluster),
            self.schematics.clone(),
            crate::replication::ReleaseParts {
                releases: self.releases.clone(),
                blobs: self.blobs.clone(),
                imports: self.imports.clone(),
            },
            &self.recorder,
        )
        .await?;
        tracing::info!(peer_id = %handle.peer_id(), "replication started");
        // Find before build: a miss asks the cluster first.
        self.assets
            .set_peers(Arc::new(crate::replication::ClusterPeers::new(
                handle.clone(),
                self.blobs.clone(),
                crate::assets::RecordStore::new(Arc::clone(&self.meta)),
                crate::assets::RecordVerifier::new(&self.signing_key.verifying_key()),
            )));
        let _ = self.replication.set(handle);
        self.workers.spawn(worker);
        Ok(())
    }

    /// The background workers.
    pub fn workers(&self) -> &Workers {
        &self.workers
    }

    /// The admin bearer token (generated on first use).
    pub fn admin_token(&self) -> Result<String, NodeError> {
        let path = self.config.admin_token_path();
        let (token, created) = crate::trust::load_or_generate_token(&path)?;
        if created {
            tracing::info!(path = %path.display(), "generated admin token");
        }
        Ok(token)
    }

    /// Starts the garbage-collection and scrub workers (`cache.gcIntervalSeconds`,
    /// `cache.scrubIntervalSeconds`; 0 disables one). Garbage collection also runs as soon as
    /// a build or import runs out of disk space. Needs a tokio runtime.
    pub fn start_maintenance(&self) {
        if let Some(od) = &self.on_demand {
            self.workers
                .spawn(on_demand::TagWorker::new(Arc::clone(od)));
        }
        let every = |secs: u64| (secs > 0).then(|| Duration::from_secs(secs));
        if let Some(period) = every(self.config.cache.gc_interval_seconds) {
            let limits = self.assets.gc_limits();
            tracing::info!(
                max_bytes = limits.max_bytes,
                min_free_bytes = limits.min_free_bytes,
                orphan_grace_seconds = limits.orphan_grace.as_secs(),
                "garbage collection: asset quota, free-space watermark, orphan grace period"
            );
            self.workers.spawn(gc::GcWorker::new(
                self.assets.clone(),
                self.imports.clone(),
                period,
            ));
        }
        if let Some(period) = every(self.config.cache.scrub_interval_seconds) {
            let assets = self.assets.clone();
            self.workers
                .spawn(Periodic::new("scrub", period, period, move || {
                    let assets = assets.clone();
                    async move {
                        let r = assets.scrub().await?;
                        tracing::info!(
                            assets = r.assets,
                            damaged_assets = r.damaged_assets,
                            release_blobs = r.release_blobs,
                            damaged_release_blobs = r.damaged_release_blobs,
                            "scrub of cached assets and release blobs finished"
                        );
                        Ok(format!(
                            "checked {} asset(s), {} damaged; {} release blob(s), {} damaged",
                            r.assets, r.damaged_assets, r.release_blobs, r.damaged_release_blobs
                        ))
                    }
                }));
        }
    }

    /// One garbage-collection pass now (`image-factory gc`, `POST /admin/gc`), with
    /// `max_bytes` instead of the configured quota when given (0 = none); orphan blobs are
    /// left alone while an import runs.
    pub async fn collect_garbage(
        &self,
        dry_run: bool,
        max_bytes: Option<u64>,
    ) -> Result<GcReport, AssetError> {
        let pass = GcPass {
            dry_run,
            max_bytes,
            importing: self.imports.running(),
        };
        self.assets.gc(pass).await
    }

    /// Stops the workers in order and makes every acknowledged write durable.
    pub async fn close(&self) -> Result<(), NodeError> {
        self.workers.stop().await;
        // Document copies written in the background, then the index.
        self.schematics.flush().await?;
        self.meta.flush().await?;
        Ok(())
    }
}

/// The Secure Boot key files of `config`, `None` when `secureBoot.enabled` is false; a path
/// left empty is upstream's file name in `<dataDir>/keys/secureboot/` (where `cluster join`
/// installs the cluster's keys).
pub fn secure_boot_paths(config: &Config) -> Option<SecureBootPaths> {
    if !config.secure_boot.enabled {
        return None;
    }
    let f = &config.secure_boot.file;
    let defaults = SecureBootPaths::in_dir(&config.secure_boot_dir());
    let or = |set: &str, default: PathBuf| {
        if set.is_empty() {
            default
        } else {
            PathBuf::from(set)
        }
    };
    Some(SecureBootPaths {
        signing_key: or(&f.signing_key_path, defaults.signing_key),
        signing_cert: or(&f.signing_cert_path, defaults.signing_cert),
        pcr_key: or(&f.pcr_key_path, defaults.pcr_key),
    })
}

/// Loads and validates the Secure Boot keys when `secureBoot.enabled` (a bad key stops the
/// start with the file named); warns when the certificate expires within 30 days.
fn load_secure_boot(config: &Config) -> Result<Option<Arc<SecureBootKeys>>, NodeError> {
    let Some(paths) = secure_boot_paths(config) else {
        return Ok(None);
    };
    let now = crate::clock::now_secs();
    let keys = SecureBootKeys::load(&paths, now)?;
    let expires = crate::clock::rfc3339_utc(keys.not_after().max(0) as u64);
    tracing::info!(
        certificate_sha256 = keys.fingerprint(),
        expires = %expires,
        "loaded Secure Boot keys"
    );
    if keys.not_after() - (now as i64) < 30 * 86_400 {
        tracing::warn!(expires = %expires, "the Secure Boot signing certificate expires within 30 days");
    }
    Ok(Some(Arc::new(keys)))
}
