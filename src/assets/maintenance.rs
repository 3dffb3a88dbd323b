//! Keeping the cache honest: quarantining records and blobs that fail verification, the
//! background scrub that re-hashes every cached asset, and garbage-collection passes.

use std::fs::File;
use std::os::unix::fs::MetadataExt as _;

use super::error::AssetError;
use super::gc::{GcReport, collect_garbage};
use super::integrity::{check_blob, quarantine_blob};
use super::pipeline::{Assets, lock};
use super::record::AssetRecord;
use crate::causes::Causes;

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
        let current = std::fs::metadata(self.inner.blobs.path(&record.blake3));
        let same = match (file.metadata(), current) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
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

    /// Re-hashes every cached asset's blob; damaged records and blobs are quarantined.
    /// Returns `(checked, failed)`.
    pub async fn scrub(&self) -> Result<(usize, usize), AssetError> {
        let (mut checked, mut failed) = (0, 0);
        for (key, raw) in self.inner.records.scan_raw()? {
            checked += 1;
            if !self.scrub_one(&key, &raw).await? {
                failed += 1;
            }
        }
        Ok((checked, failed))
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

    /// One garbage-collection pass (see [`collect_garbage`]); never touches blobs being served.
    pub async fn gc(&self, dry_run: bool) -> Result<GcReport, AssetError> {
        let this = self.clone();
        let report = tokio::task::spawn_blocking(move || {
            collect_garbage(
                &this.inner.records,
                &this.inner.blobs,
                &this.inner.releases,
                this.inner.opts.max_bytes,
                &|b| this.is_serving(b),
                dry_run,
            )
        })
        .await
        .map_err(AssetError::task("garbage collection"))??;
        if !dry_run {
            let m = &self.inner.metrics;
            m.gc_evictions.increment(report.evicted.len() as u64);
            m.gc_freed_bytes.increment(report.freed_bytes);
            m.cache_bytes.set(report.bytes_after as f64);
            let mut verified = lock(&self.inner.verified);
            for b in &report.deleted_blobs {
                verified.remove(b);
            }
        }
        Ok(report)
    }
}
