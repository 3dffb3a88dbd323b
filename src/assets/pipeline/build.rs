//! Building on a miss: one detached build per cache key (single flight), admitted into a
//! bounded queue for a build slot, stopped at its deadline, remembered with backoff when it
//! fails, and sealed into a signed record when it succeeds.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tracing::Instrument as _;

use super::{Assets, BuildResult, BuildState, Joined, Outcome, Resolved, labels, lock};
use crate::assets::error::{AssetError, BuildError, BuildFailure};
use crate::assets::metrics::AssetLabels;
use crate::assets::record::AssetRecord;
use crate::causes::{self, Causes};
use crate::imager::builder::BuildRequest;
use crate::imager::cancel::Cancel;
use crate::store::BlobDamage;

impl Assets {
    /// Joins the running (or queued) build for the key, or admits a new one; `None` if a
    /// record appeared. A new build beyond the queue is refused ([`AssetError::Busy`]); a key
    /// that failed recently answers its failure until its backoff ends; with
    /// `build_on_miss` off nothing new is started ([`AssetError::NotBuilt`]).
    pub(super) fn join_or_start(
        &self,
        resolved: &Arc<Resolved>,
    ) -> Result<Option<Joined>, AssetError> {
        let key = &resolved.key.key;
        let mut inflight = lock(&self.inner.inflight);
        if let Some(rx) = inflight.get(key) {
            return Ok(Some((rx.clone(), Outcome::Waited)));
        }
        if !resolved.req.rebuild && self.inner.records.contains(key)? {
            return Ok(None);
        }
        if let Some((failure, left)) = lock(&self.inner.failures).check(key, Instant::now()) {
            return Err(AssetError::Failed {
                failure,
                retry_after: left.as_secs().max(1),
            });
        }
        if !resolved.req.build_on_miss {
            return Err(AssetError::NotBuilt);
        }
        let opts = &self.inner.opts;
        let admitted = inflight.len();
        if admitted >= opts.max_concurrency + opts.max_queue {
            let retry_after =
                lock(&self.inner.build_times).retry_after(admitted, opts.max_concurrency);
            self.inner.metrics.refused.increment(1);
            return Err(AssetError::Busy {
                admitted,
                retry_after,
            });
        }
        let (tx, rx) = watch::channel(None);
        inflight.insert(key.clone(), rx.clone());
        drop(inflight);
        let this = self.clone();
        let resolved = Arc::clone(resolved);
        let admitted_at = Instant::now();
        // Detached: the build finishes and is cached even if every requester goes away. It
        // runs in the span of the request that started it (its request ID in every line).
        let build = async move {
            let key = &resolved.key.key;
            let result = match this.fetch_from_peers(&resolved).await {
                Some(record) => Ok(record),
                None => {
                    // Time spent asking the cluster does not count against the build's deadline.
                    let admitted_at = if this.inner.peers.get().is_some() {
                        Instant::now()
                    } else {
                        admitted_at
                    };
                    let result = this.run_build(&resolved, admitted_at).await;
                    if let Some(peers) = this.inner.peers.get() {
                        peers.built(key, result.is_ok());
                    }
                    result
                }
            };
            match &result {
                Ok(_) => lock(&this.inner.failures).clear(key),
                // A damaged release is refused by its mark, not remembered: the refusal is
                // cheap and must end as soon as the release is imported again.
                Err(f) if f.is_damaged_release() => {}
                Err(f) => {
                    let internal = f.imager().is_none_or(|e| e.is_internal());
                    lock(&this.inner.failures).record(key, f.clone(), internal, Instant::now());
                    if crate::causes::is_no_space(f) {
                        this.report_out_of_space();
                    }
                }
            }
            lock(&this.inner.inflight).remove(key);
            let _ = tx.send(Some(result));
        };
        tokio::spawn(build.instrument(tracing::Span::current()));
        Ok(Some((rx, Outcome::Built)))
    }

    /// The model from a member, when the cluster has it (or is building it): its record and
    /// blob are stored here by then, and checked again as any cached asset is.
    async fn fetch_from_peers(&self, resolved: &Arc<Resolved>) -> Option<Arc<AssetRecord>> {
        if resolved.req.rebuild {
            return None;
        }
        let peers = self.inner.peers.get()?;
        let key = &resolved.key.key;
        if !peers.find(key).await {
            return None;
        }
        match self.lookup(key).await {
            Ok(Some((record, _))) => {
                self.inner.metrics.fetched.increment(1);
                tracing::info!(
                    key = %record.key,
                    schematic = %resolved.req.schematic_id,
                    version = %record.version,
                    path = %resolved.req.path,
                    size = record.size,
                    "asset fetched from a member"
                );
                Some(record)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(key = %key, error = %Causes(&e), "a fetched asset could not be read; building");
                None
            }
        }
    }

    /// Waits for a build slot and builds on the blocking pool, both before the build's
    /// deadline (`build_timeout` after admission); records metrics.
    async fn run_build(&self, resolved: &Arc<Resolved>, admitted_at: Instant) -> BuildResult {
        let entry = lock(&self.inner.journal).admit(
            &resolved.req.schematic_id,
            &resolved.version.tag(),
            &resolved.req.path,
        );
        let result = self.run_admitted(resolved, admitted_at, entry).await;
        let state = match &result {
            Ok(record) => BuildState::Built { size: record.size },
            Err(f) => BuildState::Failed {
                error: format!("{:#}", Causes(f)),
            },
        };
        lock(&self.inner.journal).update(entry, state);
        result
    }

    /// [`Assets::run_build`] after admission (journal entry `entry`).
    async fn run_admitted(
        &self,
        resolved: &Arc<Resolved>,
        admitted_at: Instant,
        entry: u64,
    ) -> BuildResult {
        let m = &self.inner.metrics;
        let deadline = admitted_at + self.inner.opts.build_timeout;
        let timeout = self.inner.opts.build_timeout.as_secs();
        m.queue_depth.increment(1.0);
        let permit = tokio::time::timeout_at(
            deadline.into(),
            Arc::clone(&self.inner.slots).acquire_owned(),
        )
        .await;
        m.queue_depth.decrement(1.0);
        let permit = match permit {
            Err(_) => return Err(BuildError::TimedOut(timeout).into()),
            Ok(Err(_)) => return Err(BuildFailure::from(BuildError::QueueClosed)),
            Ok(Ok(p)) => p,
        };
        m.concurrency_latency
            .record(admitted_at.elapsed().as_secs_f64());
        lock(&self.inner.journal).update(entry, BuildState::Running);
        let started = Instant::now();
        let this = self.clone();
        let r = Arc::clone(resolved);
        let cancel = Cancel::until(deadline);
        let job_cancel = cancel.clone();
        let span = tracing::Span::current();
        // The slot is held by the blocking job itself: a timed-out build is cancelled (its
        // tools killed, its scratch removed) and frees the slot when the job returns.
        let mut job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _entered = span.enter();
            this.build_blocking(&r, &job_cancel)
        });
        let result = match tokio::time::timeout_at(deadline.into(), &mut job).await {
            Ok(Err(e)) => Err(BuildError::Task(e).into()),
            Ok(Ok(r)) => r,
            Err(_) => {
                cancel.cancel();
                tracing::warn!(
                    schematic = %resolved.req.schematic_id,
                    path = %resolved.req.path,
                    "build ran past its deadline: cancelled"
                );
                // Wait for the cancelled job, so its slot and scratch are released first.
                let _ = job.await;
                Err(BuildError::TimedOut(timeout).into())
            }
        };
        let req = &resolved.req;
        match &result {
            Ok(record) => {
                if let Err(e) = self.inner.records.flush().await {
                    tracing::error!(error = %format!("{:#}", Causes(&e)), "asset record is stored but not yet durable");
                }
                lock(&self.inner.build_times).add(started.elapsed());
                m.built(&labels(record), record.size);
                m.build_latency.record(started.elapsed().as_secs_f64());
                for ext in &resolved.profile.system_extensions {
                    m.extension_hit(&ext.name);
                }
                tracing::info!(
                    key = %record.key,
                    schematic = %req.schematic_id,
                    version = %record.version,
                    path = %req.path,
                    size = record.size,
                    seconds = started.elapsed().as_secs_f64(),
                    "asset built"
                );
            }
            Err(f) => {
                if let Some(damage) = causes::find::<BlobDamage>(f) {
                    // Every blob a build reads is a release input (its own outputs are
                    // written, not read back).
                    self.release_blob_failed(&resolved.version.tag(), damage)
                        .await;
                }
                m.build_failed(&AssetLabels {
                    version: &resolved.version.tag(),
                    kind: resolved.profile.output.kind.as_str(),
                    arch: resolved.profile.arch.as_str(),
                });
                tracing::warn!(
                    schematic = %req.schematic_id,
                    version = %resolved.version.tag(),
                    path = %req.path,
                    error = %format!("{:#}", Causes(f)),
                    "asset build failed"
                );
            }
        }
        result
    }

    /// Builds, seals and stores the record (blocking).
    fn build_blocking(&self, r: &Resolved, cancel: &Cancel) -> BuildResult {
        cancel.check().map_err(BuildError::Imager)?;
        let breq = BuildRequest {
            schematic: &r.schematic,
            schematic_id: &r.req.schematic_id,
            canonical: &r.canonical,
            version: &r.version,
            path: &r.req.path,
            cancel: cancel.clone(),
        };
        let built = self
            .inner
            .builder
            .build_resolved(&breq, r.profile.clone(), &r.release)?;
        let mut intermediates: Vec<String> = Vec::new();
        for b in &built.intermediates {
            if b.blake3 != built.blob.blake3 && !intermediates.contains(&b.blake3) {
                intermediates.push(b.blake3.clone());
            }
        }
        let record = AssetRecord {
            key: r.key.key.clone(),
            schematic: r.req.schematic_id.clone(),
            version: r.version.tag(),
            path: r.req.path.clone(),
            kind: built.kind.as_str().to_string(),
            arch: built.profile.arch.as_str().to_string(),
            size: built.blob.size,
            sha256: built.blob.sha256.clone(),
            blake3: built.blob.blake3.clone(),
            content_type: built.content_type.to_string(),
            created: crate::clock::now_secs(),
            inputs: r.key.inputs.clone(),
            intermediates,
        };
        let sealed = record.seal(&self.inner.key).map_err(BuildError::Seal)?;
        self.inner
            .records
            .put_raw(&record.key, &sealed)
            .map_err(BuildError::Store)?;
        lock(&self.inner.verified).insert(&record.blake3, ());
        Ok(Arc::new(record))
    }
}
