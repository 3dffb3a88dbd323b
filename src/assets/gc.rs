//! Garbage collection: built assets kept under a size quota and a free-space watermark by
//! least-recently-served eviction, and blobs that nothing references deleted.
//!
//! Eviction goes least recently served first, except that the copies this node holds for the
//! cluster (it ranks among the `replication.factor` members chosen for their key, see
//! `replication::rendezvous`) go after every other copy: one is evicted only when the limits
//! cannot be met otherwise, and the report, the log and a metric say so.
//!
//! Eviction deletes only blobs named by asset records, and never one that a release needs
//! (the kernel asset *is* the release's kernel blob), one being streamed, or the record of a
//! key being rebuilt. A record is trusted only once its signature verifies with the cluster
//! key and every blob it names is a blob name (64 lowercase hex digits): anything else is set
//! aside (quarantined, reported) and never followed, and the blob store itself refuses any
//! other name. A record whose blob disappears anyway (a race with a build writing the same
//! bytes) is a miss on its next request and is rebuilt.
//!
//! A blob file that no trusted record, no release and no document names (documents live
//! under `blobs/docs/`, outside the blob files listed here) is an orphan: an intermediate of a
//! failed build, a record's blob superseded by a rebuild, the rest of a failed import. It is
//! deleted once its file has not been written for the grace period (the store refreshes the
//! modification time when the same bytes are written again), so a build that committed a
//! blob and has not yet written its record never loses it; and not at all while an import
//! runs, since an import reuses stored blobs long before its release record names them.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::error::AssetError;
use super::record::{AssetRecord, RecordStore, RecordVerifier};
use crate::catalog::ReleaseStore;
use crate::config::CacheConfig;
use crate::store::{BlobStore, is_blob_name};

#[cfg(test)]
mod tests;

/// Size and free space of a filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Size.
    pub total: u64,
    /// Free space available to the appliance.
    pub available: u64,
}

/// The filesystem holding `path`, measured now.
pub fn disk_space(path: &Path) -> std::io::Result<DiskSpace> {
    let s = rustix::fs::statvfs(path)?;
    Ok(DiskSpace {
        total: s.f_blocks.saturating_mul(s.f_frsize),
        available: s.f_bavail.saturating_mul(s.f_frsize),
    })
}

/// What garbage collection keeps: `cache.*` resolved against the data volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcLimits {
    /// Quota for built assets in bytes (0 = none).
    pub max_bytes: u64,
    /// Free bytes kept on the data volume (0 = no watermark).
    pub min_free_bytes: u64,
    /// How long a blob nothing references must have been left unwritten to be deleted.
    pub orphan_grace: Duration,
    /// A directory on the data volume (the data directory), where free space is measured.
    pub volume: PathBuf,
}

impl GcLimits {
    /// The limits `cache` sets for the data directory `data_dir`: `maxBytes` and
    /// `minFreeBytes` when not 0, else `maxPercent` and `minFreePercent` of the size of the
    /// filesystem holding it, measured now (one that cannot be measured counts as 0 bytes,
    /// with an error logged).
    pub fn resolve(cache: &CacheConfig, data_dir: &Path) -> Self {
        let total = match disk_space(data_dir) {
            Ok(space) => space.total,
            Err(e) => {
                tracing::error!(
                    dir = %data_dir.display(),
                    error = %e,
                    "cannot measure the data directory's filesystem: cache.maxPercent and \
                     cache.minFreePercent do not apply"
                );
                0
            }
        };
        let share = |bytes: u64, percent: u64| {
            if bytes > 0 {
                bytes
            } else {
                u64::try_from(u128::from(total) * u128::from(percent) / 100).unwrap_or(u64::MAX)
            }
        };
        Self {
            max_bytes: share(cache.max_bytes, cache.max_percent),
            min_free_bytes: share(cache.min_free_bytes, cache.min_free_percent),
            orphan_grace: Duration::from_secs(cache.orphan_grace_seconds),
            volume: data_dir.to_path_buf(),
        }
    }
}

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
    /// Whether this node held it as one of the copies the cluster keeps (`replication.factor`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub designated: bool,
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
    /// Assets due for eviction that were kept because they are being downloaded or rebuilt.
    pub skipped_busy: usize,
    /// Records that failed verification and were set aside (in a dry run: would be).
    #[serde(default)]
    pub quarantined: Vec<Rejected>,
    /// Free space kept on the data volume (0 = no watermark).
    #[serde(default)]
    pub min_free_bytes: u64,
    /// Free bytes on the data volume before the pass (`None`: it could not be measured).
    #[serde(default)]
    pub free_bytes_before: Option<u64>,
    /// Free bytes after the pass (in a dry run: as it would be).
    #[serde(default)]
    pub free_bytes_after: Option<u64>,
    /// Bytes still missing to the watermark after the pass: nothing more could be evicted.
    #[serde(default)]
    pub short_bytes: u64,
    /// BLAKE3 names of deleted orphan blobs (referenced by nothing, older than the grace).
    #[serde(default)]
    pub orphans: Vec<String>,
    /// Bytes the orphans held.
    #[serde(default)]
    pub orphan_bytes: u64,
    /// Whether orphans were left for a later pass because an import was running.
    #[serde(default)]
    pub orphans_deferred: bool,
    /// Evicted copies this node held for the cluster (`replication.factor`): the limits could
    /// not be met with the others.
    #[serde(default)]
    pub designated_evicted: usize,
}

impl GcReport {
    /// One line saying what the pass did (or would do): orphans, evictions, cache and free
    /// space against their limits.
    pub fn summary(&self) -> String {
        let (orphans, evicted) = if self.dry_run {
            ("would remove", "would evict")
        } else {
            ("removed", "evicted")
        };
        let mut out = format!(
            "{orphans} {} orphan blob(s) ({}), {evicted} {} asset(s) ({}); {} cached in {} asset(s)",
            self.orphans.len(),
            mib(self.orphan_bytes),
            self.evicted.len(),
            mib(self.freed_bytes),
            mib(self.bytes_after),
            self.records - self.evicted.len(),
        );
        match self.max_bytes {
            0 => out.push_str(" (no quota)"),
            max => out.push_str(&format!(" (quota {})", mib(max))),
        }
        if let Some(free) = self.free_bytes_after {
            out.push_str(&format!("; {} free", mib(free)));
            if self.min_free_bytes > 0 {
                out.push_str(&format!(" (keeping {})", mib(self.min_free_bytes)));
            }
        }
        if self.designated_evicted > 0 {
            out.push_str(&format!(
                "; {} of them copies the cluster counts on (replication.factor)",
                self.designated_evicted
            ));
        }
        if self.skipped_busy > 0 {
            out.push_str(&format!("; {} in use and kept", self.skipped_busy));
        }
        if self.short_bytes > 0 {
            out.push_str(&format!(
                "; still {} short of the free-space watermark: nothing more can be evicted",
                mib(self.short_bytes)
            ));
        }
        if self.orphans_deferred {
            out.push_str("; orphans left for a later pass (an import is running)");
        }
        out
    }
}

/// `n` bytes in MiB, one decimal.
fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
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
pub(super) fn trusted(
    key: &str,
    raw: &[u8],
    verifier: &RecordVerifier,
) -> Result<AssetRecord, AssetError> {
    let record = AssetRecord::open(raw, verifier)?;
    if record.key != key {
        return Err(AssetError::RecordElsewhere {
            stored: key.to_string(),
            signed: record.key,
        });
    }
    if let Some(bad) = record.blobs().find(|b| !is_blob_name(b)) {
        return Err(AssetError::RecordBlobName(bad.to_string()));
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

/// What a pass works with: the stores, the key that signs records, and the data volume.
pub struct GcInputs<'a> {
    /// Asset records.
    pub records: &'a RecordStore,
    /// Blobs.
    pub blobs: &'a BlobStore,
    /// Releases (their blobs are never collected).
    pub releases: &'a ReleaseStore,
    /// Verifies record signatures.
    pub verifier: &'a RecordVerifier,
    /// Measures the free bytes of the data volume.
    pub free_space: &'a dyn Fn() -> std::io::Result<u64>,
    /// Whether this node holds one of the copies of a key (cache key) the cluster keeps
    /// (`replication.factor`): such assets are evicted after every other.
    pub designated: &'a dyn Fn(&str) -> bool,
}

/// What a pass leaves alone because it is in use right now.
pub struct InUse<'a> {
    /// Whether a blob (BLAKE3) is being streamed.
    pub serving: &'a dyn Fn(&str) -> bool,
    /// Whether an asset (cache key) is being built.
    pub building: &'a dyn Fn(&str) -> bool,
    /// Whether an import is running: orphans wait for a later pass.
    pub importing: bool,
}

/// One pass: deletes orphans older than the grace period (see the module documentation),
/// then, while built assets exceed `max_bytes` or the volume's free space is below
/// `min_free_bytes`, evicts the least recently served assets not in use, the copies this node
/// holds for the cluster last. Records that fail
/// verification are quarantined (reported only, in a dry run) and never followed. `now` is
/// what orphan ages are measured against.
pub fn collect_garbage(
    inputs: &GcInputs<'_>,
    limits: &GcLimits,
    in_use: &InUse<'_>,
    dry_run: bool,
    now: SystemTime,
) -> Result<GcReport, AssetError> {
    let GcInputs {
        records,
        blobs,
        releases,
        verifier,
        free_space,
        designated,
    } = *inputs;
    let protected = release_blobs(releases, blobs)?;
    let mut list: Vec<(AssetRecord, u64, bool)> = Vec::new();
    let mut quarantined = Vec::new();
    for (key, raw) in records.scan_raw()? {
        let record = match trusted(&key, &raw, verifier) {
            Ok(record) => record,
            Err(e) => {
                if !dry_run {
                    records.quarantine(&key, &raw, &e)?;
                }
                let reason = format!("{:#}", crate::causes::Causes(&e));
                quarantined.push(Rejected { key, reason });
                continue;
            }
        };
        let last = records
            .last_served(&key)?
            .unwrap_or(record.created.saturating_mul(1000));
        let mine = designated(&record.key);
        list.push((record, last, mine));
    }
    let mut refs: HashMap<String, usize> = HashMap::new();
    let mut sizes: HashMap<String, u64> = HashMap::new();
    for (record, ..) in &list {
        for b in record.blobs().filter(|b| !protected.contains(*b)) {
            *refs.entry(b.to_string()).or_insert(0) += 1;
            if !sizes.contains_key(b) {
                sizes.insert(b.to_string(), disk_usage(blobs, b));
            }
        }
    }
    let total: u64 = sizes.values().sum();
    let free_before = match free_space() {
        Ok(free) => Some(free),
        Err(e) => {
            tracing::warn!(error = %e, "cannot measure the free space of the data volume");
            None
        }
    };
    let mut report = GcReport {
        dry_run,
        records: list.len(),
        bytes_before: total,
        bytes_after: total,
        max_bytes: limits.max_bytes,
        quarantined,
        min_free_bytes: limits.min_free_bytes,
        free_bytes_before: free_before,
        orphans_deferred: in_use.importing,
        ..GcReport::default()
    };
    let mut index = IndexNames::new(blobs);
    if !in_use.importing {
        let cutoff = now.checked_sub(limits.orphan_grace);
        let orphans = blobs
            .list_blobs()?
            .into_iter()
            .filter(|b| !protected.contains(b) && !refs.contains_key(b) && !(in_use.serving)(b));
        for b in orphans {
            let Some(size) = orphan_size(blobs, &b, cutoff) else {
                continue;
            };
            if !dry_run && !remove(blobs, &b, &mut index, "an orphan") {
                continue;
            }
            report.orphan_bytes += size;
            report.orphans.push(b);
        }
    }
    let quota_need = match limits.max_bytes {
        0 => 0,
        max => total.saturating_sub(max),
    };
    let space_need = match free_before {
        Some(free) if limits.min_free_bytes > 0 => limits
            .min_free_bytes
            .saturating_sub(free.saturating_add(report.orphan_bytes)),
        _ => 0,
    };
    let need = quota_need.max(space_need);
    list.sort_by(|a, b| {
        (a.2, a.1)
            .cmp(&(b.2, b.1))
            .then_with(|| a.0.key.cmp(&b.0.key))
    });
    for (record, last_used, designated) in list {
        if report.freed_bytes >= need {
            break;
        }
        let owned: Vec<&str> = record.blobs().filter(|b| !protected.contains(*b)).collect();
        if (in_use.building)(&record.key) || owned.iter().any(|b| (in_use.serving)(b)) {
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
            if !dry_run {
                // The main blob's index entry is in the record; intermediates are looked up.
                if b == record.blake3 {
                    index.known(&record.blake3, &record.sha256);
                }
                if !remove(blobs, b, &mut index, "an evicted") {
                    continue;
                }
            }
            freed += sizes.get(b).copied().unwrap_or(0);
            report.deleted_blobs.push(b.to_string());
        }
        report.bytes_after -= freed;
        report.freed_bytes += freed;
        if designated {
            report.designated_evicted += 1;
        }
        report.evicted.push(Evicted {
            key: record.key.clone(),
            schematic: record.schematic.clone(),
            version: record.version.clone(),
            path: record.path.clone(),
            bytes: freed,
            last_used: last_used / 1000,
            designated,
        });
    }
    report.short_bytes = space_need.saturating_sub(report.freed_bytes);
    report.free_bytes_after = if dry_run {
        free_before.map(|f| {
            f.saturating_add(report.orphan_bytes)
                .saturating_add(report.freed_bytes)
        })
    } else {
        free_space().ok()
    };
    Ok(report)
}

/// Disk space the blob `b` uses (disk images are stored sparse); 0 if it is not there.
fn disk_usage(blobs: &BlobStore, b: &str) -> u64 {
    blobs
        .path(b)
        .ok()
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.blocks() * 512)
}

/// The disk space of the blob `b` if it was last written before `cutoff` (`None` for a
/// younger one, one that is gone, or when the grace period reaches before the epoch).
fn orphan_size(blobs: &BlobStore, b: &str, cutoff: Option<SystemTime>) -> Option<u64> {
    let meta = std::fs::metadata(blobs.path(b).ok()?).ok()?;
    (meta.modified().ok()? <= cutoff?).then(|| meta.blocks() * 512)
}

/// Deletes `b` and its index entry; `false` (logged) if the file could not be deleted.
fn remove(blobs: &BlobStore, b: &str, index: &mut IndexNames<'_>, what: &str) -> bool {
    let sha256 = index.sha256(b);
    match blobs.remove_blob(b, sha256.as_deref()) {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(blob = b, error = %e, "could not delete {what} blob");
            false
        }
    }
}

/// The SHA-256 index read once per pass, when a blob whose digest no record names is deleted.
struct IndexNames<'a> {
    blobs: &'a BlobStore,
    names: Option<HashMap<String, String>>,
    known: HashMap<String, String>,
}

impl<'a> IndexNames<'a> {
    fn new(blobs: &'a BlobStore) -> Self {
        Self {
            blobs,
            names: None,
            known: HashMap::new(),
        }
    }

    /// Notes the SHA-256 of `blake3` (from a record), sparing a scan of the index.
    fn known(&mut self, blake3: &str, sha256: &str) {
        self.known.insert(blake3.to_string(), sha256.to_string());
    }

    /// The SHA-256 the index names `blake3` under, if any.
    fn sha256(&mut self, blake3: &str) -> Option<String> {
        if let Some(sha) = self.known.get(blake3) {
            return Some(sha.clone());
        }
        if self.names.is_none() {
            let names = self.blobs.sha256_names().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the SHA-256 index; entries of deleted blobs stay");
                HashMap::new()
            });
            self.names = Some(names);
        }
        self.names.as_ref()?.get(blake3).cloned()
    }
}
