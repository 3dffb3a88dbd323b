//! Rebuilding the SHA-256 index from the blob files: each blob the index does not name is
//! hashed (BLAKE3, which must match its file name, and SHA-256) and indexed again. Used by
//! `image-factory doctor --repair` after the metadata store lost entries or was rebuilt.

use std::io::Read as _;
use std::path::PathBuf;

use serde::Serialize;

use super::blobs::{BlobInfo, BlobStore, fanout_files, is_blob_name};
use super::{StoreError, sync_dir};
use crate::io_context::io_err;
use crate::sha256::Sha256;

/// Read size while hashing.
const CHUNK: usize = 1 << 20;

/// What a pass of [`BlobStore::reindex`] found and did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReindexReport {
    /// Blob files in the store.
    pub blobs: usize,
    /// Blob files the index does not name.
    pub unindexed: usize,
    /// Blobs that had no index entry and were indexed again.
    pub reindexed: usize,
    /// Bytes hashed to do so.
    pub hashed_bytes: u64,
    /// Blob files whose content does not hash to their name (moved to `quarantine`).
    pub damaged: Vec<PathBuf>,
}

impl BlobStore {
    /// Whether `info`'s SHA-256 resolves to its blob; if not and the blob file is there,
    /// indexes it again from `info` (a record that names both digests, no hashing). Returns
    /// `false` when the blob file itself is missing.
    pub fn ensure_indexed(&self, info: &BlobInfo) -> Result<bool, StoreError> {
        if self.by_sha256(&info.sha256)?.is_some() {
            return Ok(true);
        }
        if !self.contains(&info.blake3) {
            return Ok(false);
        }
        self.index(info)?;
        Ok(true)
    }

    /// The BLAKE3 names of every blob file in the store (not documents, not temporary files).
    pub fn list_blobs(&self) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = fanout_files(self.root())?
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| is_blob_name(name))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Makes index entries written so far durable. Blocking.
    pub fn flush_index_blocking(&self) -> Result<(), StoreError> {
        self.meta().flush_blocking()
    }

    /// The blob files the SHA-256 index does not name, and the count of all blob files.
    fn unindexed_names(&self) -> Result<(Vec<String>, usize), StoreError> {
        let indexed = self.sha256_names()?;
        let names = self.list_blobs()?;
        let total = names.len();
        let unindexed = names
            .into_iter()
            .filter(|n| !indexed.contains_key(n))
            .collect();
        Ok((unindexed, total))
    }

    /// Counts the blob files the SHA-256 index does not name (no hashing, no change).
    pub fn unindexed(&self) -> Result<ReindexReport, StoreError> {
        let (unindexed, blobs) = self.unindexed_names()?;
        Ok(ReindexReport {
            blobs,
            unindexed: unindexed.len(),
            ..ReindexReport::default()
        })
    }

    /// Hashes and indexes every blob the SHA-256 index does not name; blobs that do not hash
    /// to their name are moved to `quarantine` instead. Blocking; flushes the index.
    pub fn reindex(&self, quarantine: &std::path::Path) -> Result<ReindexReport, StoreError> {
        let (unindexed, blobs) = self.unindexed_names()?;
        let mut report = ReindexReport {
            blobs,
            unindexed: unindexed.len(),
            ..ReindexReport::default()
        };
        for name in &unindexed {
            let path = self.path(name)?;
            let (blake3, sha256, size) = hash_both(&path)?;
            report.hashed_bytes += size;
            if blake3 != *name {
                tracing::error!(blob = %name, hashes_to = %blake3, "a blob file does not hash to its name; moved to quarantine");
                super::create_dir(quarantine)?;
                let to = quarantine.join(name);
                std::fs::rename(&path, &to).map_err(io_err(format!("move {}", path.display())))?;
                sync_dir(quarantine).map_err(io_err(format!("sync {}", quarantine.display())))?;
                report.damaged.push(to);
                continue;
            }
            self.index(&BlobInfo {
                blake3,
                sha256,
                size,
            })?;
            report.reindexed += 1;
        }
        self.meta().flush_blocking()?;
        Ok(report)
    }
}

/// BLAKE3 hex, SHA-256 hex and size of the file at `path`.
fn hash_both(path: &std::path::Path) -> Result<(String, String, u64), StoreError> {
    let ctx = || format!("hash {}", path.display());
    let mut file = std::fs::File::open(path).map_err(io_err(ctx()))?;
    let mut blake3 = blake3::Hasher::new();
    let mut sha256 = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err(ctx()))?;
        if n == 0 {
            break;
        }
        blake3.update(&buf[..n]);
        sha256.update(&buf[..n]);
        size += n as u64;
    }
    Ok((
        blake3.finalize().to_hex().to_string(),
        sha256.finalize_hex(),
        size,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::blobs::SHA_TREE;
    use crate::store::blobs::tests::store;

    #[test]
    fn lost_index_entries_are_rebuilt_by_hashing_and_damage_is_set_aside() {
        let (dir, blobs) = store();
        let a = blobs.put_bytes(b"layer a").unwrap();
        let b = blobs.put_bytes(b"layer b").unwrap();
        let c = blobs.put_bytes(b"manifest c").unwrap();
        blobs.meta().remove(SHA_TREE, a.sha256.as_bytes()).unwrap();
        blobs.meta().remove(SHA_TREE, b.sha256.as_bytes()).unwrap();
        assert_eq!(blobs.unindexed().unwrap().unindexed, 2);
        // b's file is damaged as well
        std::fs::write(blobs.path(&b.blake3).unwrap(), b"layer B").unwrap();
        let q = dir.path().join("quarantine");
        let report = blobs.reindex(&q).unwrap();
        assert_eq!(report.blobs, 3);
        assert_eq!((report.unindexed, report.reindexed), (2, 1));
        assert_eq!(report.damaged, [q.join(&b.blake3)]);
        assert_eq!(blobs.by_sha256(&a.sha256).unwrap(), Some(a.clone()));
        assert_eq!(blobs.by_sha256(&b.sha256).unwrap(), None);
        assert_eq!(blobs.by_sha256(&c.sha256).unwrap(), Some(c));
        assert_eq!(blobs.reindex(&q).unwrap().reindexed, 0);
        // A record naming both digests restores an entry without hashing.
        blobs.meta().remove(SHA_TREE, a.sha256.as_bytes()).unwrap();
        assert!(blobs.ensure_indexed(&a).unwrap());
        assert_eq!(blobs.by_sha256(&a.sha256).unwrap(), Some(a));
        assert!(!blobs.ensure_indexed(&b).unwrap());
    }
}
