//! The asset service: resolve a request to its cache key, serve a verified record on a hit,
//! otherwise run exactly one build per key (detached from the requests, bounded by build
//! slots and a timeout) and let every request for that key wait for it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore, watch};

use super::error::{AssetError, BuildError, BuildFailure};
use super::gc::GcLimits;
use super::integrity::check_blob;
use super::key::{CacheKey, cache_key};
use super::metrics::{AssetLabels, AssetMetrics};
use super::record::{AssetRecord, RecordStore, RecordVerifier};
use super::shared_check::{BlobChecks, FileId};
use super::stream::AssetBody;
use crate::catalog::{Release, ReleaseStore, Version};
use crate::config::Config;
use crate::imager::builder::{BuildRequest, Builder, BuilderOptions, StageReporter};
use crate::imager::profile::Profile;
use crate::imager::tool::Tools;
use crate::schematic::Schematic;
use crate::store::{BlobStore, MetaStore, SchematicStore};
use crate::trust::SigningKey;

mod admission;
mod build;
mod journal;

pub use journal::{BuildEntry, BuildState};

use admission::{Bounded, BuildTimes, Failures, MAX_REMEMBERED};

/// How often a served asset's last-served time is written back (per key).
const TOUCH_EVERY_MILLIS: u64 = 60_000;

/// Settings of the asset service.
#[derive(Debug, Clone)]
pub struct AssetsOptions {
    /// Builds running at once (`build.maxConcurrency`, resolved).
    pub max_concurrency: usize,
    /// Builds waiting for a slot beyond those running (`build.maxQueue`, resolved); a new
    /// build beyond them is refused.
    pub max_queue: usize,
    /// A build not finished this long after it was admitted (queue wait included) is stopped.
    pub build_timeout: Duration,
    /// Where damaged blobs are moved (`<dataDir>/quarantine`).
    pub quarantine_dir: PathBuf,
    /// Builder scratch directory, emptied at start (crash leftovers).
    pub scratch: PathBuf,
    /// What garbage collection keeps (quota, free-space watermark, orphan grace).
    pub gc: GcLimits,
    /// How long a successful pass over a blob file covers downloads starting after it
    /// (`cache.verifyWindowSeconds`; zero: every download needs a pass made while it is sent).
    pub verify_window: Duration,
}

/// A build running longer fails (upstream: 20 minutes).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// zstd level of the initramfs' appended cpio (upstream's).
pub const DEFAULT_INITRAMFS_ZSTD_LEVEL: u32 = 18;

/// The stores of a data directory the asset service works on.
pub struct DataStores {
    /// Metadata store.
    pub meta: Arc<dyn MetaStore>,
    /// Blob store.
    pub blobs: BlobStore,
    /// The cluster signing key.
    pub key: Arc<SigningKey>,
    /// Stored schematics (requests name them by ID).
    pub schematics: SchematicStore,
    /// Secure Boot keys, when enabled (sign `-secureboot` assets).
    pub secure_boot: Option<Arc<crate::trust::secureboot::SecureBootKeys>>,
}

/// One asset request, as the frontends see it: what the client named, not yet checked.
#[derive(Debug, Clone)]
pub struct AssetRequest {
    /// Schematic ID (looked up in the schematic store).
    pub schematic_id: String,
    /// Target version as the client wrote it (`v1.11.0` or `1.11.0`).
    pub version: String,
    /// Asset path.
    pub path: String,
    /// Build even if a cached record exists (the new record replaces it).
    pub rebuild: bool,
    /// Start a build on a miss (`false`: only a cached asset or a build already admitted
    /// answers, as for `HEAD`).
    pub build_on_miss: bool,
}

impl AssetRequest {
    /// A request for `path` of schematic `schematic_id` at `version`.
    pub fn new(schematic_id: &str, version: &str, path: &str) -> Self {
        Self {
            schematic_id: schematic_id.to_string(),
            version: version.to_string(),
            path: path.to_string(),
            rebuild: false,
            build_on_miss: true,
        }
    }
}

/// How a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// From the cache.
    Hit,
    /// This request started the build.
    Built,
    /// This request waited for a build someone else started.
    Waited,
}

impl Outcome {
    /// The name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Built => "build",
            Outcome::Waited => "wait",
        }
    }
}

/// A verified asset ready to be opened.
#[derive(Debug, Clone)]
pub struct Served {
    /// The record.
    pub record: Arc<AssetRecord>,
    /// Hit, build or wait.
    pub outcome: Outcome,
    /// Whether the bytes were hashed by this request already (built, or first serve).
    pub(super) verified_now: bool,
    /// Whether serving it refreshes the last-served time of `record.key` (false for a blob of
    /// an imported release, which has no asset record).
    pub(super) touches: bool,
}

type BuildResult = Result<Arc<AssetRecord>, BuildFailure>;
/// Where a request gets its build result from, and how it joined.
type Joined = (watch::Receiver<Option<BuildResult>>, Outcome);

/// A request resolved to its schematic, version, profile, release and key.
struct Resolved {
    req: AssetRequest,
    version: Version,
    canonical: String,
    schematic: Schematic,
    profile: Profile,
    release: Arc<Release>,
    key: CacheKey,
}

pub(super) struct Inner {
    pub(super) builder: Builder,
    pub(super) schematics: SchematicStore,
    pub(super) records: RecordStore,
    pub(super) releases: ReleaseStore,
    pub(super) blobs: BlobStore,
    pub(super) key: Arc<SigningKey>,
    pub(super) verifying: RecordVerifier,
    pub(super) metrics: AssetMetrics,
    pub(super) opts: AssetsOptions,
    pub(super) slots: Arc<Semaphore>,
    /// Requests being resolved on the blocking pool at once (the rest wait here, costing
    /// nothing, so a flood cannot crowd out every core).
    pub(super) resolving: Arc<Semaphore>,
    pub(super) inflight: Mutex<HashMap<String, watch::Receiver<Option<BuildResult>>>>,
    pub(super) failures: Mutex<Failures>,
    /// Blobs hashed since start (the first serve after a start hashes).
    pub(super) verified: Mutex<Bounded<()>>,
    /// First-serve hashes running now, joined by concurrent requests for the same blob.
    pub(super) first_serves: Mutex<HashMap<String, watch::Receiver<Option<bool>>>>,
    pub(super) serving: Mutex<HashMap<String, usize>>,
    /// Hash passes over blobs shared by concurrent zero-copy serves.
    pub(super) checks: Mutex<BlobChecks>,
    /// When each asset's last-served time was last written.
    pub(super) touched: Mutex<Bounded<u64>>,
    pub(super) build_times: Mutex<BuildTimes>,
    /// The builds of this process, for the operator page.
    pub(super) journal: Mutex<journal::Journal>,
    /// Raised when a build or import runs out of disk space: wakes garbage collection.
    pub(super) out_of_space: Arc<Notify>,
    /// The cluster, asked before building (set once replication starts).
    pub(super) peers: std::sync::OnceLock<Arc<dyn super::Peers>>,
}

/// The asset service (cheap to clone).
#[derive(Clone)]
pub struct Assets {
    pub(super) inner: Arc<Inner>,
}

/// Requests resolved at once: twice the cores (resolving is short, CPU-bound work).
fn resolve_concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn labels(r: &AssetRecord) -> AssetLabels<'_> {
    AssetLabels {
        version: &r.version,
        kind: &r.kind,
        arch: &r.arch,
    }
}

/// Marks an asset as being served while alive; records when it was last served.
pub struct ServeGuard {
    assets: Assets,
    blake3: String,
}

impl Drop for ServeGuard {
    fn drop(&mut self) {
        let mut serving = lock(&self.assets.inner.serving);
        match serving.get_mut(&self.blake3) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                serving.remove(&self.blake3);
            }
            None => {}
        }
    }
}

impl Assets {
    /// The service as `config` describes it (builder settings, quota, concurrency) over a data
    /// directory's stores; `factory_url` is the factory identity that goes into model bytes and
    /// cache keys ([`crate::replication::factory_identity`]), `zstd_level` the initramfs cpio
    /// level, `stages` receives build stages. Blocking (sweeps scratch).
    pub fn from_config(
        config: &Config,
        factory_url: String,
        stores: DataStores,
        metrics: AssetMetrics,
        zstd_level: u32,
        stages: StageReporter,
    ) -> Self {
        let data_dir = config.data_dir();
        let scratch = data_dir.join("tmp");
        let releases = ReleaseStore::new(&stores.blobs);
        let builder = Builder::new(
            stores.blobs.clone(),
            releases.clone(),
            BuilderOptions {
                factory_url,
                scratch: scratch.clone(),
                initramfs_zstd_level: zstd_level,
                compression: config.build.compression,
                secure_boot: stores.secure_boot.clone(),
                tools: Tools {
                    dirs: config.build.tool_dirs.iter().map(PathBuf::from).collect(),
                    timeout: Duration::from_secs(config.build.tool_timeout_seconds),
                },
            },
        )
        .with_stages(stages);
        let opts = AssetsOptions {
            max_concurrency: config.build.effective_concurrency(),
            max_queue: config.build.effective_queue(),
            build_timeout: BUILD_TIMEOUT,
            quarantine_dir: data_dir.join("quarantine"),
            scratch,
            gc: GcLimits::resolve(&config.cache, data_dir),
            verify_window: Duration::from_secs(config.cache.verify_window_seconds),
        };
        Self::new(
            builder,
            releases,
            RecordStore::new(stores.meta),
            stores.schematics,
            stores.blobs,
            stores.key,
            metrics,
            opts,
        )
    }

    /// The service over the data directory's stores; empties the builder scratch directory.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        builder: Builder,
        releases: ReleaseStore,
        records: RecordStore,
        schematics: SchematicStore,
        blobs: BlobStore,
        key: Arc<SigningKey>,
        metrics: AssetMetrics,
        opts: AssetsOptions,
    ) -> Self {
        if let Ok(entries) = std::fs::read_dir(&opts.scratch) {
            let mut swept = 0usize;
            for entry in entries.flatten() {
                let path = entry.path();
                let res = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                swept += usize::from(res.is_ok());
            }
            if swept > 0 {
                tracing::info!(swept, dir = %opts.scratch.display(), "removed build scratch files left by an interrupted build");
            }
        }
        let verifying = RecordVerifier::new(&key.verifying_key());
        let window = opts.verify_window;
        Self {
            inner: Arc::new(Inner {
                builder,
                schematics,
                records,
                releases,
                blobs,
                verifying,
                key,
                metrics,
                slots: Arc::new(Semaphore::new(opts.max_concurrency.max(1))),
                resolving: Arc::new(Semaphore::new(resolve_concurrency())),
                opts,
                inflight: Mutex::default(),
                failures: Mutex::default(),
                verified: Mutex::new(Bounded::new(MAX_REMEMBERED)),
                first_serves: Mutex::default(),
                serving: Mutex::default(),
                checks: Mutex::new(BlobChecks::new(window)),
                touched: Mutex::new(Bounded::new(MAX_REMEMBERED)),
                build_times: Mutex::default(),
                journal: Mutex::default(),
                out_of_space: Arc::default(),
                peers: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Asks `peers` (the cluster) before building from now on; set once.
    pub fn set_peers(&self, peers: Arc<dyn super::Peers>) {
        let _ = self.inner.peers.set(peers);
    }

    /// The metrics handles.
    pub fn metrics(&self) -> &AssetMetrics {
        &self.inner.metrics
    }

    /// The verified record for the request: from the cache, or built (once per key).
    pub async fn get(&self, req: AssetRequest) -> Result<Served, AssetError> {
        let resolved = Arc::new(self.resolve(req).await?);
        let key = resolved.key.key.clone();
        // A record that appears between the lookup and taking the in-flight lock sends us
        // round again; two rounds always suffice, the third is a safety net.
        for _ in 0..3 {
            let cached = if resolved.req.rebuild {
                None
            } else {
                self.lookup(&key).await?
            };
            if let Some((record, verified_now)) = cached {
                self.inner.metrics.lookup(true);
                return Ok(Served {
                    record,
                    outcome: Outcome::Hit,
                    verified_now,
                    touches: true,
                });
            }
            let Some((mut rx, outcome)) = self.join_or_start(&resolved)? else {
                continue;
            };
            self.inner.metrics.lookup(false);
            if outcome == Outcome::Waited {
                self.inner.metrics.waits.increment(1);
            }
            let result = rx
                .wait_for(Option::is_some)
                .await
                .map_err(|_| AssetError::NoResult(key.clone()))?
                .clone();
            return match result {
                Some(Ok(record)) => Ok(Served {
                    record,
                    outcome,
                    verified_now: true,
                    touches: true,
                }),
                Some(Err(f)) => Err(f.into()),
                None => Err(AssetError::NoResult(key.clone())),
            };
        }
        Err(AssetError::Gone(key))
    }

    /// Resolves the request in upstream's order — schematic, version, then path and profile —
    /// with the blocking work on the blocking pool.
    async fn resolve(&self, req: AssetRequest) -> Result<Resolved, AssetError> {
        let this = self.clone();
        let permit = Arc::clone(&self.inner.resolving)
            .acquire_owned()
            .await
            .map_err(|_| AssetError::Build(BuildError::QueueClosed.into()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            if !crate::schematic::is_valid_id(&req.schematic_id) {
                return Err(AssetError::SchematicNotFound(req.schematic_id.clone()));
            }
            let canonical = this
                .inner
                .schematics
                .get(&req.schematic_id)?
                .ok_or_else(|| AssetError::SchematicNotFound(req.schematic_id.clone()))?;
            let version = Version::parse_strict(&req.version)
                .ok_or_else(|| AssetError::InvalidVersion(req.version.clone()))?;
            let schematic = Schematic::parse(canonical.as_bytes()).map_err(|source| {
                AssetError::StoredSchematic {
                    id: req.schematic_id.clone(),
                    source,
                }
            })?;
            let breq = BuildRequest {
                schematic: &schematic,
                schematic_id: &req.schematic_id,
                canonical: &canonical,
                version: &version,
                path: &req.path,
                cancel: Default::default(),
            };
            let (profile, release) = this.inner.builder.profile(&breq)?;
            let key = cache_key(
                &req.schematic_id,
                &profile,
                &release,
                this.inner.builder.options(),
            )
            .map_err(AssetError::CacheKey)?;
            Ok(Resolved {
                req,
                version,
                canonical,
                schematic,
                profile,
                release,
                key,
            })
        })
        .await
        .map_err(AssetError::task("resolving the request"))?
    }

    /// A verified record for `key`, or `None` (absent, or set aside as damaged). The second
    /// value says whether this call hashed the blob (first serve since start).
    async fn lookup(&self, key: &str) -> Result<Option<(Arc<AssetRecord>, bool)>, AssetError> {
        let Some(raw) = self.inner.records.get_raw(key)? else {
            return Ok(None);
        };
        let record = match AssetRecord::open(&raw, &self.inner.verifying) {
            Ok(r) if r.key == key => r,
            Ok(r) => {
                self.record_failed(key, &raw, &AssetError::RecordKey(r.key));
                return Ok(None);
            }
            Err(reason) => {
                self.record_failed(key, &raw, &reason);
                return Ok(None);
            }
        };
        if !self.inner.blobs.contains(&record.blake3) {
            tracing::warn!(key, blob = %record.blake3, "asset blob is gone; rebuilding");
            self.inner.records.remove(key)?;
            return Ok(None);
        }
        if lock(&self.inner.verified).get(&record.blake3).is_some() {
            return Ok(Some((Arc::new(record), false)));
        }
        if self.verify_first_serve(&record).await? {
            Ok(Some((Arc::new(record), true)))
        } else {
            Ok(None)
        }
    }

    /// Hashes a blob before its first serve since start; concurrent requests for the same blob
    /// share one pass. Answers whether the blob is intact (a damaged one is set aside).
    async fn verify_first_serve(&self, record: &AssetRecord) -> Result<bool, AssetError> {
        let (tx, mut rx) = {
            let mut running = lock(&self.inner.first_serves);
            match running.get(&record.blake3) {
                Some(rx) => (None, rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(None);
                    running.insert(record.blake3.clone(), rx.clone());
                    (Some(tx), rx)
                }
            }
        };
        let Some(tx) = tx else {
            // Another request is hashing this blob: its verdict is ours.
            let verdict = rx
                .wait_for(Option::is_some)
                .await
                .map(|v| *v)
                .ok()
                .flatten();
            return Ok(verdict == Some(true));
        };
        let blobs = self.inner.blobs.clone();
        let (blake3, size) = (record.blake3.clone(), record.size);
        let checked = tokio::task::spawn_blocking(move || check_blob(&blobs, &blake3, size)).await;
        let intact = match &checked {
            Ok(Ok(())) => {
                lock(&self.inner.verified).insert(&record.blake3, ());
                true
            }
            Ok(Err(reason)) => {
                self.blob_failed(record, reason);
                false
            }
            Err(_) => false,
        };
        lock(&self.inner.first_serves).remove(&record.blake3);
        let _ = tx.send(Some(intact));
        if let Err(e) = checked {
            return Err(AssetError::task("hashing an asset blob")(e));
        }
        Ok(intact)
    }

    /// Opens the asset for streaming `range` (`None` = whole body).
    pub fn open(
        &self,
        served: &Served,
        range: Option<(u64, u64)>,
    ) -> Result<AssetBody, AssetError> {
        let record = &served.record;
        let file = match self.inner.blobs.open_blob(&record.blake3) {
            Ok(f) => f,
            Err(_) if !self.inner.blobs.contains(&record.blake3) => {
                return Err(AssetError::Gone(record.blake3.clone()));
            }
            Err(e) => return Err(e.into()),
        };
        let meta = file.metadata().map_err(|source| AssetError::Io {
            context: format!("reading the size of asset blob {}", record.blake3),
            source,
        })?;
        let (len, file_id) = (meta.len(), FileId::of(&meta));
        if len != record.size {
            let reason = AssetError::BlobSize {
                blake3: record.blake3.clone(),
                size: len,
                expected: record.size,
            };
            self.open_blob_failed(record, &reason, &file);
            return Err(AssetError::Gone(record.blake3.clone()));
        }
        let (start, end) = range.unwrap_or((0, record.size));
        let whole = start == 0 && end == record.size;
        if served.outcome == Outcome::Hit {
            self.inner
                .metrics
                .delivered_cached(&labels(record), end - start);
        }
        Ok(AssetBody {
            file: Arc::new(file),
            pos: start,
            end,
            verify: (whole && !served.verified_now && !self.recently_checked(file_id))
                .then(blake3::Hasher::new),
            file_id,
            record: Arc::clone(record),
            assets: self.clone(),
            _guard: self.guard(record, served.touches),
        })
    }

    fn guard(&self, record: &AssetRecord, touches: bool) -> ServeGuard {
        *lock(&self.inner.serving)
            .entry(record.blake3.clone())
            .or_insert(0) += 1;
        let now = crate::clock::now_millis();
        let stale = touches && {
            let mut touched = lock(&self.inner.touched);
            let last = touched.get(&record.key).unwrap_or(0);
            if now.saturating_sub(last) >= TOUCH_EVERY_MILLIS {
                touched.insert(&record.key, now);
                true
            } else {
                false
            }
        };
        if stale && let Err(e) = self.inner.records.touch(&record.key, now) {
            tracing::warn!(error = %e, "could not record when an asset was served");
        }
        ServeGuard {
            assets: self.clone(),
            blake3: record.blake3.clone(),
        }
    }

    /// Whether a pass over the blob file `id` succeeded within the verify window: a whole-body
    /// serve starting now is covered by it (`cache.verifyWindowSeconds`).
    fn recently_checked(&self, id: FileId) -> bool {
        lock(&self.inner.checks).covered(id, Instant::now())
    }

    /// Whether a blob is being streamed right now.
    pub fn is_serving(&self, blake3: &str) -> bool {
        lock(&self.inner.serving).contains_key(blake3)
    }
}
