//! Building on a miss: one detached build per cache key (single flight), queued for a build
//! slot, bounded by the build timeout, negative-cached when it fails deterministically, and
//! sealed into a signed record when it succeeds.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::{Assets, BuildResult, Joined, Outcome, Resolved, labels, lock};
use crate::assets::error::{AssetError, BuildError, BuildFailure};
use crate::assets::metrics::AssetLabels;
use crate::assets::record::AssetRecord;
use crate::imager::builder::BuildRequest;

impl Assets {
    /// Joins the running build for the key, or starts one; `None` if a record appeared.
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
        {
            let mut negative = lock(&self.inner.negative);
            match negative.get(key) {
                Some((at, f)) if at.elapsed() < self.inner.opts.negative_ttl => {
                    return Err(f.clone().into());
                }
                Some(_) => {
                    negative.remove(key);
                }
                None => {}
            }
        }
        let (tx, rx) = watch::channel(None);
        inflight.insert(key.clone(), rx.clone());
        drop(inflight);
        let this = self.clone();
        let resolved = Arc::clone(resolved);
        // Detached: the build finishes and is cached even if every requester goes away.
        tokio::spawn(async move {
            let result = this.run_build(&resolved).await;
            let key = &resolved.key.key;
            if let Err(f) = &result
                && f.imager().is_some_and(|e| !e.is_internal())
            {
                lock(&this.inner.negative).insert(key.clone(), (Instant::now(), f.clone()));
            }
            lock(&this.inner.inflight).remove(key);
            let _ = tx.send(Some(result));
        });
        Ok(Some((rx, Outcome::Built)))
    }

    /// Waits for a build slot, builds on the blocking pool under the timeout, records metrics.
    async fn run_build(&self, resolved: &Arc<Resolved>) -> BuildResult {
        let m = &self.inner.metrics;
        let queued = Instant::now();
        m.queue_depth.increment(1.0);
        let permit = Arc::clone(&self.inner.slots).acquire_owned().await;
        m.queue_depth.decrement(1.0);
        let Ok(permit) = permit else {
            return Err(BuildFailure::from(BuildError::QueueClosed));
        };
        m.concurrency_latency.record(queued.elapsed().as_secs_f64());
        let started = Instant::now();
        let this = self.clone();
        let r = Arc::clone(resolved);
        // The slot is held by the blocking job itself, so a timed-out build that is still
        // running keeps counting against the limit.
        let job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            this.build_blocking(&r)
        });
        let timeout = self.inner.opts.build_timeout;
        let result = match tokio::time::timeout(timeout, job).await {
            Err(_) => Err(BuildError::TimedOut(timeout.as_secs()).into()),
            Ok(Err(e)) => Err(BuildError::Task(e).into()),
            Ok(Ok(r)) => r,
        };
        let req = &resolved.req;
        match &result {
            Ok(record) => {
                if let Err(e) = self.inner.records.flush().await {
                    tracing::error!(error = %e, "asset record is stored but not yet durable");
                }
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
                m.build_failed(&AssetLabels {
                    version: &resolved.version.tag(),
                    kind: resolved.profile.output.kind.as_str(),
                    arch: resolved.profile.arch.as_str(),
                });
                tracing::warn!(
                    schematic = %req.schematic_id,
                    version = %resolved.version.tag(),
                    path = %req.path,
                    error = %format!("{:#}", crate::causes::Causes(f)),
                    "asset build failed"
                );
            }
        }
        result
    }

    /// Builds, seals and stores the record (blocking).
    fn build_blocking(&self, r: &Resolved) -> BuildResult {
        let breq = BuildRequest {
            schematic: &r.schematic,
            schematic_id: &r.req.schematic_id,
            canonical: &r.canonical,
            version: &r.version,
            path: &r.req.path,
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
        lock(&self.inner.verified).insert(record.blake3.clone());
        Ok(Arc::new(record))
    }
}
