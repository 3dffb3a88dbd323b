//! Releases on demand, upstream's own mode for connected sites: with `artifacts.core.registry`
//! set, the registry's Talos versions (the tags of `siderolabs/imager`) are offered beside the
//! imported releases, and the first request for one that is not imported imports it — verified
//! with `trust.publicKeys`, one import per version at a time — before it is served. The tag
//! list is read in the background (never at start or in a request) and read again every
//! 15 minutes; a registry that does not answer is retried with backoff and only logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use metrics::{Counter, Key, Label, Level, Metadata, Recorder};
use serde::Serialize;

use super::Node;
use super::import::{ImportFrom, ImportJob, ImportJobError};
use super::worker::{StopSignal, WorkError, Worker, WorkerState};
use crate::catalog::{ImportProgress, Selection, Version};
use crate::config::Config;
use crate::oci::{OciError, RegistryOptions, RegistrySource};
use crate::trust::{KeylessPolicy, TrustPolicy, TrustedKeys};

/// How often the tag list is read again after a successful read (upstream's
/// `artifacts.talosVersionRecheckInterval` default).
const RECHECK: Duration = Duration::from_secs(15 * 60);
/// First retry delay after a failed read; doubles up to [`RECHECK`].
const FIRST_RETRY: Duration = Duration::from_secs(30);
/// How long a failed import is answered from memory before it is tried again.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// Most tags kept from one listing (a registry answering more is cut there).
const MAX_TAGS: usize = 10_000;
/// Releases imported on demand, by `result` (`ok`, `failed`).
const IMPORTS: &str = "image_factory_on_demand_imports_total";

const META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Why a release could not be imported on demand.
#[derive(Debug, thiserror::Error)]
pub enum OnDemandError {
    /// The import failed (now, or within the last minute).
    #[error("importing Talos {version} from {registry} failed: {reason}")]
    Import {
        /// Version tag.
        version: String,
        /// `registry[/namespace]`.
        registry: String,
        /// The import error with its causes.
        reason: String,
    },
}

/// The state `/status` shows.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OnDemandStatus {
    /// `registry[/namespace]`.
    pub registry: String,
    /// Versions the registry offers (before the version rules), ascending.
    pub listed: Vec<String>,
    /// When the list was last read (RFC 3339), if ever.
    pub listed_at: Option<String>,
    /// The last read's error, while it lasts.
    pub error: Option<String>,
    /// Versions being imported now.
    pub importing: Vec<String>,
}

#[derive(Default)]
struct Listed {
    versions: Vec<Version>,
    listed_at: Option<String>,
    error: Option<String>,
}

/// The registry releases come from on demand, what it lists, and the imports in flight.
pub struct OnDemand {
    host_ns: String,
    options: RegistryOptions,
    policy: TrustPolicy,
    listed: Mutex<Listed>,
    /// One lock per version being imported (single flight).
    imports: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    failures: Mutex<HashMap<String, (Instant, String)>>,
    imported: Counter,
    failed: Counter,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl OnDemand {
    /// The on-demand source `config` asks for: `None` without `artifacts.core.registry`, and
    /// (with a warning) without a trusted key to verify what it would import.
    pub fn from_config(
        config: &Config,
        recorder: &(dyn Recorder + Send + Sync),
    ) -> Option<Arc<OnDemand>> {
        let host_ns = config.artifacts.core.host_ns()?;
        let mut keys = TrustedKeys::new();
        for path in &config.trust.public_keys {
            if let Err(e) = keys.add_file(std::path::Path::new(path)) {
                tracing::warn!(key = %path, error = %e, "releases on demand: trusted key not usable");
            }
        }
        let keyless = match KeylessPolicy::from_config(&config.trust) {
            Ok(k) => k.map(Arc::new),
            Err(e) => {
                tracing::warn!(error = %e, "releases on demand: trust.sigstoreTrustedRoot not usable");
                None
            }
        };
        if keys.is_empty() && keyless.is_none() {
            tracing::warn!(
                registry = %host_ns,
                "artifacts.core.registry is set but neither trust.publicKeys nor trust.sigstoreTrustedRoot is usable: releases on demand are off (nothing would verify them); import releases with `image-factory import`"
            );
            return None;
        }
        tracing::info!(registry = %host_ns, "releases on demand from this registry");
        let counter = |result: &'static str| {
            let c = recorder.register_counter(
                &Key::from_parts(IMPORTS, vec![Label::new("result", result)]),
                &META,
            );
            c.absolute(0);
            c
        };
        Some(Arc::new(OnDemand {
            host_ns,
            options: RegistryOptions {
                insecure: config.artifacts.core.insecure,
                ..RegistryOptions::default()
            },
            policy: TrustPolicy::keys_or_keyless(keys, keyless),
            listed: Mutex::default(),
            imports: Mutex::default(),
            failures: Mutex::default(),
            imported: counter("ok"),
            failed: counter("failed"),
        }))
    }

    /// The versions the registry listed at its last read.
    pub fn listed(&self) -> Vec<Version> {
        lock(&self.listed).versions.clone()
    }

    /// What `/status` shows.
    pub fn status(&self) -> OnDemandStatus {
        let listed = lock(&self.listed);
        OnDemandStatus {
            registry: self.host_ns.clone(),
            listed: listed.versions.iter().map(Version::tag).collect(),
            listed_at: listed.listed_at.clone(),
            error: listed.error.clone(),
            importing: lock(&self.imports).keys().cloned().collect(),
        }
    }

    fn repository(&self) -> (String, String) {
        match self.host_ns.split_once('/') {
            Some((host, ns)) => (host.to_string(), format!("{ns}/siderolabs/imager")),
            None => (self.host_ns.clone(), "siderolabs/imager".to_string()),
        }
    }

    /// Reads the registry's Talos versions (the imager's tags; other tags are ignored).
    pub async fn refresh(&self) -> Result<usize, OciError> {
        let (host, repository) = self.repository();
        let result = async {
            let source = RegistrySource::new(&host, self.options.clone())?;
            source.list_tags(&repository).await
        }
        .await;
        let mut listed = lock(&self.listed);
        match result {
            Ok(tags) => {
                let mut versions: Vec<Version> = tags
                    .iter()
                    .take(MAX_TAGS)
                    .filter_map(|t| Version::parse_tolerant(t))
                    .collect();
                versions.sort();
                versions.dedup();
                let n = versions.len();
                listed.versions = versions;
                listed.listed_at = Some(crate::clock::now_rfc3339());
                listed.error = None;
                Ok(n)
            }
            Err(e) => {
                listed.error = Some(format!("{:#}", crate::causes::Causes(&e)));
                Err(e)
            }
        }
    }

    /// Makes `version` imported if the registry lists it and it is not yet: imports it (one
    /// import per version at a time; concurrent callers wait for it). `Ok` when there was
    /// nothing to do or the import succeeded.
    pub async fn ensure(&self, node: &Node, version: &Version) -> Result<(), OnDemandError> {
        let tag = version.tag();
        let imported = || matches!(node.releases().get(&tag), Ok(Some(_)));
        if imported() || !lock(&self.listed).versions.contains(version) {
            return Ok(());
        }
        let failed = |reason: String| OnDemandError::Import {
            version: tag.clone(),
            registry: self.host_ns.clone(),
            reason,
        };
        if let Some((at, reason)) = lock(&self.failures).get(&tag)
            && at.elapsed() < FAILURE_MEMORY
        {
            return Err(failed(reason.clone()));
        }
        let flight = Arc::clone(lock(&self.imports).entry(tag.clone()).or_default());
        let _turn = flight.lock().await;
        let result = if imported() {
            Ok(())
        } else {
            let r = self.import(node, version).await;
            if r.is_ok() {
                self.imported.increment(1);
            }
            r
        };
        lock(&self.imports).remove(&tag);
        match result {
            Ok(()) => {
                lock(&self.failures).remove(&tag);
                Ok(())
            }
            Err(e) => {
                self.failed.increment(1);
                let reason = format!("{:#}", crate::causes::Causes(&e));
                tracing::error!(version = %tag, error = %reason, "release on demand: import failed");
                lock(&self.failures).insert(tag.clone(), (Instant::now(), reason.clone()));
                Err(failed(reason))
            }
        }
    }

    async fn import(&self, node: &Node, version: &Version) -> Result<(), ImportJobError> {
        tracing::info!(version = %version.tag(), registry = %self.host_ns, "release on demand: importing");
        let job = ImportJob {
            from: ImportFrom::Registry {
                host_ns: self.host_ns.clone(),
                options: self.options.clone(),
            },
            versions: vec![version.clone()],
            arches: Vec::new(),
            extensions: Selection::All,
            policy: self.policy.clone(),
        };
        job.run(node, &LogProgress, |s| {
            tracing::info!(
                version = %s.release.version,
                images = s.images,
                blobs_stored = s.blobs_stored,
                bytes_stored = s.bytes_stored,
                "release on demand: imported"
            );
        })
        .await
    }
}

/// Import progress as log lines (steps only; byte counts would flood the log).
struct LogProgress;

impl ImportProgress for LogProgress {
    fn step(&self, message: &str) {
        tracing::info!("release on demand: {message}");
    }
    fn add_total(&self, _bytes: u64) {}
    fn advance(&self, _bytes: u64) {}
}

/// Reads the tag list at start, then every [`RECHECK`]; after a failure, sooner, with backoff.
pub struct TagWorker {
    on_demand: Arc<OnDemand>,
    next: Duration,
    /// The delay after the last failure; zero after a success.
    retry: Duration,
    last: Option<String>,
}

impl TagWorker {
    /// The worker for `on_demand`, first read at once.
    pub fn new(on_demand: Arc<OnDemand>) -> Self {
        Self {
            on_demand,
            next: Duration::ZERO,
            retry: Duration::ZERO,
            last: None,
        }
    }
}

impl Worker for TagWorker {
    fn name(&self) -> &str {
        "release-tags"
    }

    fn work<'a>(
        &'a mut self,
        _stop: &'a mut StopSignal,
    ) -> BoxFuture<'a, Result<WorkerState, WorkError>> {
        Box::pin(async move {
            match self.on_demand.refresh().await {
                Ok(n) => {
                    self.next = RECHECK;
                    self.retry = Duration::ZERO;
                    self.last = Some(format!(
                        "{n} version(s) listed by {}",
                        self.on_demand.host_ns
                    ));
                    Ok(WorkerState::Idle)
                }
                Err(e) => {
                    self.retry = if self.retry.is_zero() {
                        FIRST_RETRY
                    } else {
                        (self.retry * 2).min(RECHECK)
                    };
                    self.next = self.retry;
                    tracing::warn!(
                        registry = %self.on_demand.host_ns,
                        retry_in_seconds = self.next.as_secs(),
                        error = %crate::causes::Causes(&e),
                        "releases on demand: cannot read the registry's Talos versions"
                    );
                    self.last = Some(format!("retrying in {} s", self.next.as_secs()));
                    Err(e.into())
                }
            }
        })
    }

    fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(self.next))
    }

    fn progress(&self) -> Option<String> {
        self.last.clone()
    }
}
