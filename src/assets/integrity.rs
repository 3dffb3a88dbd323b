//! Integrity of cached blobs: full re-hashing, and setting damaged blobs aside.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use super::error::AssetError;
use crate::store::BlobStore;

/// Read size when re-hashing a blob.
const HASH_CHUNK: usize = 1 << 20;

/// Hashes the blob file at `path`; returns `(blake3 hex, size)`.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    hash_open(&std::fs::File::open(path)?, HASH_CHUNK)
}

/// Hashes an open file from its start to its end in `chunk`-byte positioned reads (its file
/// position is left alone, so a handle shared with other readers can be hashed); returns
/// `(blake3 hex, size)`.
pub fn hash_open(file: &File, chunk: usize) -> std::io::Result<(String, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; chunk];
    let mut size = 0u64;
    loop {
        let n = match file.read_at(&mut buf, size) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hasher.finalize().to_hex().to_string(), size))
}

/// Checks that the blob named `blake3` holds `size` bytes hashing to its name.
pub fn check_blob(blobs: &BlobStore, blake3: &str, size: u64) -> Result<(), AssetError> {
    let path = blobs.path(blake3)?;
    match hash_file(&path) {
        Ok((h, n)) if h == blake3 && n == size => Ok(()),
        Ok((hash, n)) => Err(AssetError::BlobContent {
            blake3: blake3.to_string(),
            size: n,
            hash,
            expected: size,
        }),
        Err(source) => Err(AssetError::BlobUnreadable {
            blake3: blake3.to_string(),
            source,
        }),
    }
}

/// Moves a damaged blob file into `quarantine/` (kept for inspection, never served).
pub fn quarantine_blob(blobs: &BlobStore, quarantine: &Path, blake3: &str) -> Option<PathBuf> {
    // Only blob names reach the file system: anything else names no blob to move.
    let from = blobs.path(blake3).ok()?;
    if crate::store::create_dir_all_durable(quarantine).is_err() {
        return None;
    }
    // The same blob can be damaged again within a second (a restart, a rebuild that gives the
    // same bytes): a hard link never replaces an earlier quarantined copy, a rename would.
    let secs = crate::clock::now_secs();
    let mut linked = Err(std::io::Error::other("no free quarantine name"));
    let mut to = PathBuf::new();
    for n in 0..100u32 {
        to = match n {
            0 => quarantine.join(format!("{blake3}.{secs}")),
            n => quarantine.join(format!("{blake3}.{secs}.{n}")),
        };
        linked = std::fs::hard_link(&from, &to);
        if !matches!(&linked, Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists) {
            break;
        }
    }
    match linked.and_then(|()| std::fs::remove_file(&from)) {
        Ok(()) => Some(to),
        Err(e) => {
            tracing::warn!(blob = blake3, error = %e, "could not move a damaged blob aside; removing it");
            let _ = std::fs::remove_file(&from);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::{MetaStore, SledStore};

    #[test]
    fn a_blob_quarantined_twice_in_one_second_keeps_both_copies() {
        let dir = tempfile::tempdir().unwrap();
        let meta: Arc<dyn MetaStore> = Arc::new(SledStore::open(&dir.path().join("db")).unwrap());
        let blobs = BlobStore::open(&dir.path().join("blobs"), meta).unwrap();
        let q = dir.path().join("quarantine");
        let info = blobs.put_bytes(b"first damage").unwrap();
        let a = quarantine_blob(&blobs, &q, &info.blake3).expect("moved aside");
        assert!(!blobs.path(&info.blake3).unwrap().exists());
        // Same blob written again and damaged again straight away.
        blobs.put_bytes(b"first damage").unwrap();
        let b = quarantine_blob(&blobs, &q, &info.blake3).expect("moved aside");
        assert_ne!(a, b);
        assert_eq!(std::fs::read_dir(&q).unwrap().count(), 2);
        assert!(!blobs.path(&info.blake3).unwrap().exists());
    }
}
