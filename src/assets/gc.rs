//! Garbage collection of built assets: a size quota with least-recently-served eviction.
//!
//! Only blobs named by asset records are ever deleted, and never one that a release needs
//! (the kernel asset *is* the release's kernel blob) or one being streamed. A record is
//! trusted only once its signature verifies with the cluster key and every blob it names is a
//! blob name (64 lowercase hex digits): anything else is set aside (quarantined, reported) and
//! never followed, and the blob store itself refuses any other name. A record whose blob
//! disappears anyway (a race with a build writing the same bytes) is a miss on its next
//! request and is rebuilt.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt as _;

use serde::{Deserialize, Serialize};

use super::error::AssetError;
use super::record::{AssetRecord, RecordStore, RecordVerifier};
use crate::catalog::ReleaseStore;
use crate::store::{BlobStore, is_blob_name};

/// One evicted (or, in a dry run, evictable) asset.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evicted {
    /// Cache key.
    pub key: String,
    /// Schematic ID.
    pub schematic: String,
    /// Version tag.
    pub version: String,
    /// Asset path.
    pub path: String,
    /// Bytes its blobs held that no other asset shares.
    pub bytes: u64,
    /// Last served (or built), Unix seconds.
    pub last_used: u64,
}

/// What a pass did (or would do).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    /// Whether nothing was deleted.
    pub dry_run: bool,
    /// Asset records seen.
    pub records: usize,
    /// Bytes of built assets before the pass.
    pub bytes_before: u64,
    /// Bytes after the pass.
    pub bytes_after: u64,
    /// The quota (0 = none).
    pub max_bytes: u64,
    /// Evicted assets, least recently used first.
    pub evicted: Vec<Evicted>,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// BLAKE3 names of deleted blobs.
    pub deleted_blobs: Vec<String>,
    /// Assets over quota that were skipped because they are being downloaded.
    pub skipped_busy: usize,
    /// Records that failed verification and were set aside (in a dry run: would be).
    #[serde(default)]
    pub quarantined: Vec<Rejected>,
}

/// A record garbage collection refused to trust.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejected {
    /// Cache key it is stored under.
    pub key: String,
    /// Why it was refused.
    pub reason: String,
}

/// The record stored as `raw` under `key`, if it can be trusted: its signature verifies, it
/// is stored under its own key, and every blob it names is a blob name.
fn trusted(key: &str, raw: &[u8], verifier: &RecordVerifier) -> Result<AssetRecord, String> {
    let record = AssetRecord::open(raw, verifier)?;
    if record.key != key {
        return Err(format!("stored under {key}, signed for {}", record.key));
    }
    if let Some(bad) = record.blobs().find(|b| !is_blob_name(b)) {
        return Err(format!("names {bad:?}, which is not a blob name"));
    }
    Ok(record)
}

/// Every blob (BLAKE3) any imported release needs (see [`crate::catalog::Release::needed_blobs`]).
pub fn release_blobs(
    releases: &ReleaseStore,
    blobs: &BlobStore,
) -> Result<HashSet<String>, AssetError> {
    let mut out = HashSet::new();
    for release in releases.list()? {
        out.extend(release.needed_blobs(blobs)?.into_keys());
    }
    Ok(out)
}

/// What a pass works with: the stores, and the key that signs records.
pub struct GcInputs<'a> {
    /// Asset records.
    pub records: &'a RecordStore,
    /// Blobs.
    pub blobs: &'a BlobStore,
    /// Releases (their blobs are never collected).
    pub releases: &'a ReleaseStore,
    /// Verifies record signatures.
    pub verifier: &'a RecordVerifier,
}

/// One pass: if built assets exceed `max_bytes` (0 = no quota), evicts the least recently
/// served until they fit, skipping assets for which `busy(blake3)` is true. Records that fail
/// verification are quarantined (reported only, in a dry run) and never followed.
pub fn collect_garbage(
    inputs: &GcInputs<'_>,
    max_bytes: u64,
    busy: &dyn Fn(&str) -> bool,
    dry_run: bool,
) -> Result<GcReport, AssetError> {
    let GcInputs {
        records,
        blobs,
        releases,
        verifier,
    } = *inputs;
    let protected = release_blobs(releases, blobs)?;
    let mut list: Vec<(AssetRecord, u64)> = Vec::new();
    let mut quarantined = Vec::new();
    for (key, raw) in records.scan_raw()? {
        let record = match trusted(&key, &raw, verifier) {
            Ok(record) => record,
            Err(reason) => {
                if !dry_run {
                    records.quarantine(&key, &raw, &reason)?;
                }
                quarantined.push(Rejected { key, reason });
                continue;
            }
        };
        let last = records.last_served(&key)?.unwrap_or(record.created);
        list.push((record, last));
    }
    let mut refs: HashMap<String, usize> = HashMap::new();
    let mut sizes: HashMap<String, u64> = HashMap::new();
    for (record, _) in &list {
        for b in record.blobs().filter(|b| !protected.contains(*b)) {
            *refs.entry(b.to_string()).or_insert(0) += 1;
            if !sizes.contains_key(b) {
                // Disk space actually used: disk images are stored sparse.
                let size = blobs
                    .path(b)
                    .ok()
                    .and_then(|p| std::fs::metadata(p).ok())
                    .map_or(0, |m| m.blocks() * 512);
                sizes.insert(b.to_string(), size);
            }
        }
    }
    let total: u64 = sizes.values().sum();
    let mut report = GcReport {
        dry_run,
        records: list.len(),
        bytes_before: total,
        bytes_after: total,
        max_bytes,
        quarantined,
        ..GcReport::default()
    };
    if max_bytes == 0 || total <= max_bytes {
        return Ok(report);
    }
    list.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.key.cmp(&b.0.key)));
    for (record, last_used) in list {
        if report.bytes_after <= max_bytes {
            break;
        }
        let owned: Vec<&str> = record.blobs().filter(|b| !protected.contains(*b)).collect();
        if owned.iter().any(|b| busy(b)) {
            report.skipped_busy += 1;
            continue;
        }
        if !dry_run {
            records.remove(&record.key)?;
        }
        let mut freed = 0;
        for b in owned {
            let Some(n) = refs.get_mut(b) else { continue };
            *n -= 1;
            if *n > 0 {
                continue;
            }
            let size = sizes.get(b).copied().unwrap_or(0);
            if !dry_run && let Err(e) = blobs.remove_blob(b) {
                tracing::warn!(blob = b, error = %e, "could not delete an evicted blob");
                continue;
            }
            freed += size;
            report.deleted_blobs.push(b.to_string());
        }
        report.bytes_after -= freed;
        report.freed_bytes += freed;
        report.evicted.push(Evicted {
            key: record.key.clone(),
            schematic: record.schematic.clone(),
            version: record.version.clone(),
            path: record.path.clone(),
            bytes: freed,
            last_used,
        });
    }
    Ok(report)
}
