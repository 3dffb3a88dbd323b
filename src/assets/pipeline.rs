//! The asset service: resolve a request to its cache key, serve a verified record on a hit,
//! otherwise run exactly one build per key (detached from the requests, bounded by build
//! slots and a timeout) and let every request for that key wait for it.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};

use super::error::{AssetError, BuildFailure};
use super::integrity::check_blob;
use super::key::{CacheKey, cache_key};
use super::metrics::{AssetLabels, AssetMetrics};
use super::record::{AssetRecord, RecordStore, RecordVerifier};
use super::shared_check::{BlobChecks, FileId};
use super::stream::AssetBody;
use crate::catalog::{Release, ReleaseStore, Version};
use crate::config::Config;
use crate::imager::builder::{BuildRequest, Builder, BuilderOptions, StageReporter};
use crate::imager::error::{ErrorClass, ImagerError};
use crate::imager::profile::Profile;
use crate::schematic::Schematic;
use crate::store::{BlobStore, MetaStore};
use crate::trust::SigningKey;

mod build;

/// How often a served asset's last-served time is written back (per key).
const TOUCH_EVERY_SECS: u64 = 60;

/// Settings of the asset service.
#[derive(Debug, Clone)]
pub struct AssetsOptions {
    /// Builds running at once (`build.maxConcurrency`, resolved).
    pub max_concurrency: usize,
    /// A build taking longer fails (upstream: 20 minutes).
    pub build_timeout: Duration,
    /// How long a deterministic client error (4xx) of a build is remembered.
    pub negative_ttl: Duration,
    /// Where damaged blobs are moved (`<dataDir>/quarantine`).
    pub quarantine_dir: PathBuf,
    /// Builder scratch directory, emptied at start (crash leftovers).
    pub scratch: PathBuf,
    /// Quota for built assets in bytes (0 = unlimited).
    pub max_bytes: u64,
    /// How long a successful pass over a blob file covers downloads starting after it
    /// (`cache.verifyWindowSeconds`; zero: every download needs a pass made while it is sent).
    pub verify_window: Duration,
}

/// A build running longer fails (upstream: 20 minutes).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// How long a deterministic 4xx build failure is answered from memory.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(60);
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
}

/// One asset request, as the frontends see it.
#[derive(Debug, Clone)]
pub struct AssetRequest {
    /// Schematic ID.
    pub schematic_id: String,
    /// Its canonical YAML.
    pub canonical: String,
    /// Target version.
    pub version: Version,
    /// Asset path.
    pub path: String,
    /// Build even if a cached record exists (the new record replaces it).
    pub rebuild: bool,
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
    verified_now: bool,
}

type BuildResult = Result<Arc<AssetRecord>, BuildFailure>;
/// Where a request gets its build result from, and how it joined.
type Joined = (watch::Receiver<Option<BuildResult>>, Outcome);

/// A request resolved to its profile, release and key.
struct Resolved {
    req: AssetRequest,
    schematic: Schematic,
    profile: Profile,
    release: Release,
    key: CacheKey,
}

pub(super) struct Inner {
    pub(super) builder: Builder,
    pub(super) records: RecordStore,
    pub(super) releases: ReleaseStore,
    pub(super) blobs: BlobStore,
    pub(super) key: Arc<SigningKey>,
    pub(super) verifying: RecordVerifier,
    pub(super) metrics: AssetMetrics,
    pub(super) opts: AssetsOptions,
    pub(super) slots: Arc<Semaphore>,
    pub(super) inflight: Mutex<HashMap<String, watch::Receiver<Option<BuildResult>>>>,
    pub(super) negative: Mutex<HashMap<String, (Instant, BuildFailure)>>,
    pub(super) verified: Mutex<HashSet<String>>,
    pub(super) serving: Mutex<HashMap<String, usize>>,
    /// Hash passes over blobs shared by concurrent zero-copy serves.
    pub(super) checks: Mutex<BlobChecks>,
    pub(super) touched: Mutex<HashMap<String, u64>>,
}

/// The asset service (cheap to clone).
#[derive(Clone)]
pub struct Assets {
    pub(super) inner: Arc<Inner>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn internal(what: &str, e: impl std::fmt::Display) -> BuildFailure {
    BuildFailure {
        class: ErrorClass::Internal,
        message: format!("{what}: {e}"),
    }
}

impl From<ImagerError> for BuildFailure {
    fn from(e: ImagerError) -> Self {
        BuildFailure {
            class: e.class(),
            message: e.to_string(),
        }
    }
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
    /// directory's stores; `zstd_level` is the initramfs cpio level, `stages` receives build
    /// stages. Blocking (sweeps scratch).
    pub fn from_config(
        config: &Config,
        stores: DataStores,
        metrics: AssetMetrics,
        zstd_level: u32,
        stages: StageReporter,
    ) -> Self {
        let data_dir = config.data_dir();
        let scratch = data_dir.join("tmp");
        let releases = ReleaseStore::new(Arc::clone(&stores.meta));
        let builder = Builder::new(
            stores.blobs.clone(),
            releases.clone(),
            BuilderOptions {
                external_url: config.http.external_url.clone(),
                scratch: scratch.clone(),
                initramfs_zstd_level: zstd_level,
                compression: config.build.compression,
            },
        )
        .with_stages(stages);
        let opts = AssetsOptions {
            max_concurrency: config.build.effective_concurrency(),
            build_timeout: BUILD_TIMEOUT,
            negative_ttl: NEGATIVE_TTL,
            quarantine_dir: data_dir.join("quarantine"),
            scratch,
            max_bytes: config.cache.max_bytes,
            verify_window: Duration::from_secs(config.cache.verify_window_seconds),
        };
        Self::new(
            builder,
            releases,
            RecordStore::new(stores.meta),
            stores.blobs,
            stores.key,
            metrics,
            opts,
        )
    }

    /// The service over the data directory's stores; empties the builder scratch directory.
    pub fn new(
        builder: Builder,
        releases: ReleaseStore,
        records: RecordStore,
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
                records,
                releases,
                blobs,
                verifying,
                key,
                metrics,
                slots: Arc::new(Semaphore::new(opts.max_concurrency.max(1))),
                opts,
                inflight: Mutex::default(),
                negative: Mutex::default(),
                verified: Mutex::default(),
                serving: Mutex::default(),
                checks: Mutex::new(BlobChecks::new(window)),
                touched: Mutex::default(),
            }),
        }
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
                .map_err(|_| AssetError::Internal("the build task ended without a result".into()))?
                .clone();
            return match result {
                Some(Ok(record)) => Ok(Served {
                    record,
                    outcome,
                    verified_now: true,
                }),
                Some(Err(f)) => Err(f.into()),
                None => Err(AssetError::Internal("build result missing".into())),
            };
        }
        Err(AssetError::Internal(format!(
            "asset {key} kept appearing and failing verification"
        )))
    }

    /// Resolves the request (blocking work on the blocking pool).
    async fn resolve(&self, req: AssetRequest) -> Result<Resolved, AssetError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let schematic = Schematic::parse(req.canonical.as_bytes()).map_err(|e| {
                AssetError::Internal(format!(
                    "stored schematic {} does not parse: {e}",
                    req.schematic_id
                ))
            })?;
            let breq = BuildRequest {
                schematic: &schematic,
                schematic_id: &req.schematic_id,
                canonical: &req.canonical,
                version: &req.version,
                path: &req.path,
            };
            let (profile, release) = this.inner.builder.profile(&breq)?;
            let key = cache_key(
                &req.schematic_id,
                &profile,
                &release,
                this.inner.builder.options(),
            )
            .map_err(|e| AssetError::Internal(format!("cache key: {e}")))?;
            Ok(Resolved {
                req,
                schematic,
                profile,
                release,
                key,
            })
        })
        .await
        .map_err(|e| AssetError::Internal(format!("resolve task: {e}")))?
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
                self.record_failed(key, &raw, &format!("record names key {}", r.key));
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
        if lock(&self.inner.verified).contains(&record.blake3) {
            return Ok(Some((Arc::new(record), false)));
        }
        let blobs = self.inner.blobs.clone();
        let (blake3, size) = (record.blake3.clone(), record.size);
        let checked = tokio::task::spawn_blocking(move || check_blob(&blobs, &blake3, size))
            .await
            .map_err(|e| AssetError::Internal(format!("hash task: {e}")))?;
        match checked {
            Ok(()) => {
                lock(&self.inner.verified).insert(record.blake3.clone());
                Ok(Some((Arc::new(record), true)))
            }
            Err(reason) => {
                self.blob_failed(&record, &reason);
                Ok(None)
            }
        }
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
        let meta = file
            .metadata()
            .map_err(|e| AssetError::Internal(format!("stat asset blob: {e}")))?;
        let (len, file_id) = (meta.len(), FileId::of(&meta));
        if len != record.size {
            let reason = format!(
                "blob {} is {len} bytes, its record says {}",
                record.blake3, record.size
            );
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
            _guard: self.guard(record),
        })
    }

    fn guard(&self, record: &AssetRecord) -> ServeGuard {
        *lock(&self.inner.serving)
            .entry(record.blake3.clone())
            .or_insert(0) += 1;
        let now = crate::clock::now_secs();
        let stale = {
            let mut touched = lock(&self.inner.touched);
            let last = touched.get(&record.key).copied().unwrap_or(0);
            if now.saturating_sub(last) >= TOUCH_EVERY_SECS {
                touched.insert(record.key.clone(), now);
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
