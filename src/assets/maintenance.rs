//! Keeping the cache honest: quarantining records and blobs that fail verification, the
//! background scrub that re-hashes every cached asset, and garbage-collection passes (woken
//! early when a build or import runs out of space).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::Notify;

use serde::Serialize;

use super::error::AssetError;
use super::gc::{GcInputs, GcLimits, GcReport, InUse, collect_garbage, disk_space, trusted};
use super::integrity::{check_blob, quarantine_blob};
use super::pipeline::{Assets, lock};
use super::record::AssetRecord;
use crate::catalog::Damage;
use crate::causes::Causes;
use crate::store::{BlobDamage, StoreError};

/// What a scrub pass checked and found damaged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScrubReport {
    /// Asset records (and their blobs) checked.
    pub assets: usize,
    /// Of those, set aside as damaged.
    pub damaged_assets: usize,
    /// Distinct blobs of imported releases checked.
    pub release_blobs: usize,
    /// Of those, found damaged (their releases are marked damaged).
    pub damaged_release_blobs: usize,
}

impl Assets {
    /// Sets a record aside that failed verification.
    pub(super) fn record_failed(&self, key: &str, raw: &[u8], reason: &AssetError) {
        self.inner.metrics.verification_failure("record");
        tracing::error!(
            key,
            reason = %format_args!("{:#}", Causes(reason)),
            "asset record failed verification; quarantined, will rebuild"
        );
        if let Err(e) = self.inner.records.quarantine(key, raw, reason) {
            tracing::error!(key, error = %e, "could not quarantine an asset record");
        }
    }

    /// Sets a damaged blob and its record aside (called before or while serving).
    pub(super) fn blob_failed(&self, record: &AssetRecord, reason: &AssetError) {
        self.inner.metrics.verification_failure("blob");
        lock(&self.inner.verified).remove(&record.blake3);
        let moved = quarantine_blob(
            &self.inner.blobs,
            &self.inner.opts.quarantine_dir,
            &record.blake3,
        );
        tracing::error!(
            key = %record.key,
            blob = %record.blake3,
            reason = %format_args!("{:#}", Causes(reason)),
            moved_to = ?moved,
            "asset blob failed verification; quarantined, will rebuild"
        );
        if let Ok(Some(raw)) = self.inner.records.get_raw(&record.key)
            && let Err(e) = self.inner.records.quarantine(&record.key, &raw, reason)
        {
            tracing::error!(key = %record.key, error = %e, "could not quarantine an asset record");
        }
    }

    /// As [`Self::blob_failed`], for a failure found through `file`, an open handle: if the
    /// store's blob file is no longer that file (it was set aside and rebuilt meanwhile, which
    /// a slow serve of the old file can outlive), the fresh blob is left alone.
    pub(super) fn open_blob_failed(&self, record: &AssetRecord, reason: &AssetError, file: &File) {
        let current = self
            .inner
            .blobs
            .path(&record.blake3)
            .ok()
            .and_then(|p| std::fs::metadata(p).ok());
        let same = match (file.metadata(), current) {
            (Ok(a), Some(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if same {
            self.blob_failed(record, reason);
        } else {
            tracing::warn!(
                key = %record.key,
                blob = %record.blake3,
                reason = %format_args!("{:#}", Causes(reason)),
                "a serve of an asset blob already set aside failed verification"
            );
        }
    }

    /// Re-hashes every cached asset's blob and every blob of every imported release; damaged
    /// records and blobs are quarantined, releases with a damaged blob marked damaged.
    pub async fn scrub(&self) -> Result<ScrubReport, AssetError> {
        let mut report = ScrubReport::default();
        for (key, raw) in self.inner.records.scan_raw()? {
            report.assets += 1;
            if !self.scrub_one(&key, &raw).await? {
                report.damaged_assets += 1;
            }
        }
        // A blob shared by several releases is hashed once per pass.
        let mut checked: HashMap<String, Option<String>> = HashMap::new();
        for release in self.inner.releases.list()? {
            let blobs = self.inner.blobs.clone();
            let r = std::sync::Arc::clone(&release);
            let needed = tokio::task::spawn_blocking(move || r.needed_blobs(&blobs))
                .await
                .map_err(AssetError::task("listing release blobs"))??;
            for (blake3, size) in needed {
                if let Some(outcome) = checked.get(&blake3) {
                    if let Some(reason) = outcome {
                        self.mark_release(&release.version, &blake3, reason).await;
                    }
                    continue;
                }
                let blobs = self.inner.blobs.clone();
                let name = blake3.clone();
                let result = tokio::task::spawn_blocking(move || blobs.check(&name, size))
                    .await
                    .map_err(AssetError::task("hashing a release blob"))?;
                report.release_blobs += 1;
                let outcome = match result {
                    Ok(()) => None,
                    Err(StoreError::BlobDamaged(damage)) => {
                        report.damaged_release_blobs += 1;
                        self.release_blob_failed(&release.version, &damage).await;
                        Some(format!("{:#}", Causes(&damage)))
                    }
                    Err(e) => return Err(e.into()),
                };
                checked.insert(blake3, outcome);
            }
        }
        Ok(report)
    }

    /// Marks release `version` damaged because of `damage` and sets the blob aside, so the
    /// release is refused until it is imported again (which writes the blob anew). Called by
    /// builds and the scrub.
    pub(super) async fn release_blob_failed(&self, version: &str, damage: &BlobDamage) {
        self.inner.metrics.verification_failure("release");
        lock(&self.inner.verified).remove(&damage.blake3);
        let moved = quarantine_blob(
            &self.inner.blobs,
            &self.inner.opts.quarantine_dir,
            &damage.blake3,
        );
        let reason = format!("{:#}", Causes(damage));
        tracing::error!(
            version,
            blob = %damage.blake3,
            reason,
            moved_to = ?moved,
            "a blob of an imported release failed verification; the release is marked damaged \
             and refuses builds until it is imported again"
        );
        self.mark_release(version, &damage.blake3, &reason).await;
    }

    async fn mark_release(&self, version: &str, blake3: &str, reason: &str) {
        let damage = Damage {
            blob: blake3.to_string(),
            reason: reason.to_string(),
            at: crate::clock::now_secs(),
        };
        if let Err(e) = self.inner.releases.mark_damaged(version, &damage).await {
            tracing::error!(version, error = %format!("{:#}", Causes(&e)), "could not mark a release damaged");
        }
    }

    /// Verifies one record and its blob; `false` if either was quarantined.
    async fn scrub_one(&self, key: &str, raw: &[u8]) -> Result<bool, AssetError> {
        let record = match AssetRecord::open(raw, &self.inner.verifying) {
            Ok(r) => r,
            Err(reason) => {
                self.record_failed(key, raw, &reason);
                return Ok(false);
            }
        };
        let blobs = self.inner.blobs.clone();
        let (blake3, size) = (record.blake3.clone(), record.size);
        let checked = tokio::task::spawn_blocking(move || check_blob(&blobs, &blake3, size))
            .await
            .map_err(AssetError::task("hashing an asset blob"))?;
        match checked {
            Ok(()) => {
                lock(&self.inner.verified).insert(&record.blake3, ());
                Ok(true)
            }
            Err(reason) => {
                self.blob_failed(&record, &reason);
                Ok(false)
            }
        }
    }

    /// The builds of this process (queued, running, built, failed), newest first, with their
    /// durations: the last 64 of them.
    pub fn build_journal(&self) -> Vec<super::BuildEntry> {
        lock(&self.inner.journal).list()
    }

    /// The newest `limit` cached assets whose records verify (newest first; records that do
    /// not verify are skipped: garbage collection and serving set them aside), and how many
    /// builds run or wait now. For the operator page.
    pub async fn recent_builds(
        &self,
        limit: usize,
    ) -> Result<(Vec<AssetRecord>, usize), AssetError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let inner = &this.inner;
            let mut records: Vec<AssetRecord> = inner
                .records
                .scan_raw()?
                .into_iter()
                .filter_map(|(key, raw)| trusted(&key, &raw, &inner.verifying).ok())
                .collect();
            records.sort_by(|a, b| b.created.cmp(&a.created).then(a.key.cmp(&b.key)));
            records.truncate(limit);
            Ok((records, lock(&inner.inflight).len()))
        })
        .await
        .map_err(AssetError::task("listing recent builds"))?
    }

    /// One garbage-collection pass (see [`collect_garbage`]) under the configured limits or
    /// `pass.max_bytes`; never touches blobs being served or assets being built. A pass that
    /// freed space forgets the builds that failed for lack of it, so their next request builds
    /// again at once.
    pub async fn gc(&self, pass: GcPass) -> Result<GcReport, AssetError> {
        let this = self.clone();
        let report = tokio::task::spawn_blocking(move || {
            let inner = &this.inner;
            let mut limits = inner.opts.gc.clone();
            if let Some(max) = pass.max_bytes {
                limits.max_bytes = max;
            }
            let volume = limits.volume.clone();
            let free_space = move || disk_space(&volume).map(|s| s.available);
            let designated = inner.peers.get().map(|p| p.designation());
            let inputs = GcInputs {
                records: &inner.records,
                blobs: &inner.blobs,
                releases: &inner.releases,
                verifier: &inner.verifying,
                free_space: &free_space,
                designated: &|key| designated.as_ref().is_some_and(|d| d(key)),
            };
            let in_use = InUse {
                serving: &|b| this.is_serving(b),
                building: &|key| lock(&inner.inflight).contains_key(key),
                importing: pass.importing,
            };
            collect_garbage(&inputs, &limits, &in_use, pass.dry_run, SystemTime::now())
        })
        .await
        .map_err(AssetError::task("garbage collection"))??;
        let dry_run = pass.dry_run;
        for r in &report.quarantined {
            if !dry_run {
                self.inner.metrics.verification_failure("record");
            }
            tracing::error!(
                key = %r.key,
                reason = %r.reason,
                dry_run,
                "garbage collection found an asset record that fails verification; quarantined, not followed"
            );
        }
        if !dry_run {
            let m = &self.inner.metrics;
            m.gc_evictions.increment(report.evicted.len() as u64);
            m.gc_designated_evictions
                .increment(report.designated_evicted as u64);
            if report.designated_evicted > 0 {
                tracing::warn!(
                    evicted = report.designated_evicted,
                    "garbage collection evicted copies of models this node holds for the cluster \
                     (replication.factor): the cache limits could not be met otherwise"
                );
            }
            m.gc_freed_bytes
                .increment(report.freed_bytes + report.orphan_bytes);
            m.cache_bytes.set(report.bytes_after as f64);
            let mut verified = lock(&self.inner.verified);
            for b in report.deleted_blobs.iter().chain(&report.orphans) {
                verified.remove(b);
            }
            drop(verified);
            if report.freed_bytes + report.orphan_bytes > 0 {
                let forgotten = lock(&self.inner.failures).forget_no_space();
                if forgotten > 0 {
                    tracing::info!(
                        builds = forgotten,
                        "space was freed: builds that failed for lack of it will run again"
                    );
                }
            }
        }
        Ok(report)
    }

    /// Reports that a build or import ran out of disk space: wakes garbage collection (the
    /// node's worker waits on [`Assets::out_of_space_signal`]). Never collects inline.
    pub fn report_out_of_space(&self) {
        tracing::warn!(
            "the data volume is full: woke garbage collection to evict least recently served assets"
        );
        self.inner.out_of_space.notify_one();
    }

    /// What [`Assets::report_out_of_space`] raises (one wake is kept until waited for).
    pub fn out_of_space_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.out_of_space)
    }

    /// What garbage collection keeps (resolved at start).
    pub fn gc_limits(&self) -> &GcLimits {
        &self.inner.opts.gc
    }
}

/// How one garbage-collection pass runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct GcPass {
    /// Report what would go; delete nothing.
    pub dry_run: bool,
    /// A quota for this pass instead of the configured one (0 = none).
    pub max_bytes: Option<u64>,
    /// An import is running: orphans are left for a later pass.
    pub importing: bool,
}
