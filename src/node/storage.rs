//! Storage health of a data directory. The metadata store is an index: schematics and
//! release records are documents in the blob store, and blobs are files named by their
//! BLAKE3. At every open the index is checked against the documents and what it lost is
//! restored and reported loudly (error log, `/status`), so a damaged or rolled-back metadata
//! store is never served as if nothing happened. `doctor` checks deeper (every document is
//! read) and `doctor --repair` also rebuilds a metadata store that no longer opens and the
//! SHA-256 index from the blob files.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::catalog::ReleaseStore;
use crate::config::Config;
use crate::store::{
    self, BlobInfo, BlobStore, DocCheck, MetaStore, ReindexReport, SchematicStore, StoreError,
};

use super::NodeError;

/// What a check of the data directory's storage found.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageHealth {
    /// The schematic index against the schematic documents.
    pub schematics: DocCheck,
    /// The release index against the release documents.
    pub releases: DocCheck,
    /// Release blobs whose SHA-256 index entries were restored from the release records.
    pub release_blobs_reindexed: usize,
    /// Blobs releases name (`<version>: sha256:<hex>`) that cannot be found: a missing file,
    /// or an image blob whose index entry was lost (`doctor --repair` rehashes those).
    pub release_blobs_missing: Vec<String>,
}

/// Overall state of the storage as `/status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StorageState {
    /// Index and documents agree.
    Ok,
    /// The index had lost entries that were restored from the documents.
    Restored,
    /// Something is lost or damaged that could not be restored.
    Damaged,
}

/// The storage part of `/status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageSummary {
    /// Overall state.
    pub state: StorageState,
    /// Schematics restored into the index at start.
    pub restored_schematics: usize,
    /// Release records restored into the index at start.
    pub restored_releases: usize,
    /// Schematics the index names whose document is gone.
    pub missing_schematics: usize,
    /// Release records the index names whose document is gone.
    pub missing_releases: usize,
    /// Document files that fail verification.
    pub damaged_documents: usize,
    /// Blobs named by releases that cannot be found.
    pub missing_release_blobs: usize,
}

impl StorageHealth {
    /// The overall state.
    pub fn state(&self) -> StorageState {
        let (s, r) = (&self.schematics, &self.releases);
        if !s.missing.is_empty()
            || !r.missing.is_empty()
            || !s.damaged.is_empty()
            || !r.damaged.is_empty()
            || !self.release_blobs_missing.is_empty()
        {
            StorageState::Damaged
        } else if !s.restored.is_empty()
            || !r.restored.is_empty()
            || self.release_blobs_reindexed > 0
        {
            StorageState::Restored
        } else {
            StorageState::Ok
        }
    }

    /// The counts `/status` shows.
    pub fn summary(&self) -> StorageSummary {
        StorageSummary {
            state: self.state(),
            restored_schematics: self.schematics.restored.len(),
            restored_releases: self.releases.restored.len(),
            missing_schematics: self.schematics.missing.len(),
            missing_releases: self.releases.missing.len(),
            damaged_documents: self.schematics.damaged.len() + self.releases.damaged.len(),
            missing_release_blobs: self.release_blobs_missing.len(),
        }
    }

    /// Logs what was found: errors for anything lost, restored or damaged.
    fn log(&self) {
        let (s, r) = (&self.schematics, &self.releases);
        if s.rewritten > 0 {
            tracing::info!(
                copies = s.rewritten,
                "wrote the document copies of schematics a stop had cut off (they were durable in \
                 the metadata store)"
            );
        }
        if !s.restored.is_empty() || !r.restored.is_empty() {
            tracing::error!(
                schematics = s.restored.len(),
                releases = r.restored.len(),
                restored_schematics = ?sample(&s.restored),
                restored_releases = ?sample(&r.restored),
                "the metadata store had lost {} schematic(s) and {} release record(s) kept as \
                 documents in the blob store; restored them (a damaged or rolled-back metadata \
                 store, an inconsistent backup, or writes cut off by a crash before they were \
                 acknowledged)",
                s.restored.len(),
                r.restored.len()
            );
        }
        if !s.missing.is_empty() || !r.missing.is_empty() {
            tracing::error!(
                missing_schematics = ?sample(&s.missing),
                missing_releases = ?sample(&r.missing),
                "{} schematic(s) and {} release record(s) named by the metadata store have no \
                 document in the blob store: they are lost",
                s.missing.len(),
                r.missing.len()
            );
        }
        if !s.damaged.is_empty() || !r.damaged.is_empty() {
            tracing::error!(
                damaged = ?s.damaged.iter().chain(&r.damaged).collect::<Vec<_>>(),
                "document files fail verification and were not used"
            );
        }
        if self.release_blobs_reindexed > 0 {
            tracing::error!(
                reindexed = self.release_blobs_reindexed,
                "the metadata store had lost index entries of release blobs; restored them from \
                 the release records"
            );
        }
        if !self.release_blobs_missing.is_empty() {
            tracing::error!(
                missing = ?sample(&self.release_blobs_missing),
                "blobs named by releases cannot be found; run `image-factory doctor --repair` \
                 (with the appliance stopped) to rehash the blob store, or import the releases again"
            );
        }
    }
}

/// The first few of `items`, for a log line (the counts are logged as well).
fn sample<T>(items: &[T]) -> &[T] {
    &items[..items.len().min(10)]
}

/// Checks the blobs releases name: boot assets and GRUB modules (their records name both
/// digests, so a lost index entry is restored on the spot when `repair`) and each image's
/// top-level and platform manifest. Returns `(reindexed, missing)`.
fn check_release_blobs(
    releases: &ReleaseStore,
    blobs: &BlobStore,
    repair: bool,
) -> Result<(usize, Vec<String>), StoreError> {
    let (mut reindexed, mut missing) = (0, Vec::new());
    for release in releases.list()? {
        let files = release
            .arches
            .values()
            .flat_map(|a| a.assets.values().chain(a.grub.values()));
        for b in files {
            let info = BlobInfo {
                blake3: b.blake3.clone(),
                sha256: b.sha256.clone(),
                size: b.size,
            };
            if blobs.by_sha256(&info.sha256)?.is_some() {
                continue;
            }
            if repair && blobs.ensure_indexed(&info)? {
                reindexed += 1;
            } else {
                missing.push(format!("{}: sha256:{}", release.version, b.sha256));
            }
        }
        for image in release.image_records() {
            for digest in [&image.digest, &image.manifest] {
                if blobs.by_sha256(digest.hex())?.is_none() {
                    missing.push(format!("{}: {digest}", release.version));
                }
            }
        }
    }
    missing.sort();
    missing.dedup();
    if reindexed > 0 {
        blobs.flush_index_blocking()?;
    }
    Ok((reindexed, missing))
}

/// Checks the stores of an opening node; with `repair`, restores what the index lost.
/// `deep` reads every document, not only the ones the index does not name. Blocking.
pub(super) fn check(
    schematics: &SchematicStore,
    releases: &ReleaseStore,
    blobs: &BlobStore,
    repair: bool,
    deep: bool,
) -> Result<StorageHealth, StoreError> {
    let schematics = schematics.check(repair, deep)?;
    let releases_check = releases.check(repair, deep)?;
    let (reindexed, missing) = check_release_blobs(releases, blobs, repair)?;
    let health = StorageHealth {
        schematics,
        releases: releases_check,
        release_blobs_reindexed: reindexed,
        release_blobs_missing: missing,
    };
    health.log();
    Ok(health)
}

/// What `doctor` found (and, with `--repair`, did).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DoctorReport {
    /// Where a metadata store that did not open (or `--rebuild`) was moved.
    pub moved_aside: Option<PathBuf>,
    /// The check of the index against the documents and release blobs.
    pub health: StorageHealth,
    /// The SHA-256 index against the blob files (blobs hashed only when repairing).
    pub reindex: ReindexReport,
    /// Releases marked damaged (a blob failed verification in a build or a scrub).
    pub damaged_releases: std::collections::BTreeMap<String, crate::catalog::Damage>,
}

/// Checks the storage of `config`'s data directory deeply (no server may hold it). With
/// `repair`: a metadata store that does not open is moved aside (`meta.damaged-<time>`) and
/// a fresh one rebuilt (`rebuild` does so even if it opens), the index is restored from the
/// documents and blobs missing from the SHA-256 index are hashed and indexed again. Asset
/// records of built assets are not rebuilt: assets are built again on their next request.
pub fn doctor(config: &Config, repair: bool, rebuild: bool) -> Result<DoctorReport, NodeError> {
    let dir = config.data_dir();
    let meta_dir = dir.join("meta");
    let mut moved_aside = None;
    let sled = if repair && rebuild && meta_dir.exists() {
        moved_aside = Some(store::set_aside_meta(dir)?);
        store::open_data_dir(dir)?
    } else {
        match store::open_data_dir(dir) {
            Err(StoreError::Damaged { .. }) if repair => {
                moved_aside = Some(store::set_aside_meta(dir)?);
                store::open_data_dir(dir)?
            }
            other => other?,
        }
    };
    let meta: std::sync::Arc<dyn MetaStore> = std::sync::Arc::new(sled);
    let blobs = BlobStore::open(&dir.join("blobs"), meta)?;
    let schematics = SchematicStore::new(&blobs)?;
    let releases = ReleaseStore::open(&blobs)?;
    // Blobs first: a rebuilt index needs its SHA-256 entries before releases are checked.
    let reindex = if repair {
        blobs.reindex(&quarantine_dir(dir))?
    } else {
        blobs.unindexed()?
    };
    let health = check(&schematics, &releases, &blobs, repair, true)?;
    Ok(DoctorReport {
        moved_aside,
        health,
        reindex,
        damaged_releases: releases.damaged()?,
    })
}

/// Where damaged files are set aside.
fn quarantine_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("quarantine")
}
