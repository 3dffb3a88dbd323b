//! Integrity of cached blobs: full re-hashing, and setting damaged blobs aside.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::store::BlobStore;

/// Read size when re-hashing a blob.
const HASH_CHUNK: usize = 1 << 20;

/// Hashes the blob file at `path`; returns `(blake3 hex, size)`.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; HASH_CHUNK];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hasher.finalize().to_hex().to_string(), size))
}

/// Checks that the blob named `blake3` holds `size` bytes hashing to its name.
pub fn check_blob(blobs: &BlobStore, blake3: &str, size: u64) -> Result<(), String> {
    let path = blobs.path(blake3);
    match hash_file(&path) {
        Ok((h, n)) if h == blake3 && n == size => Ok(()),
        Ok((h, n)) => Err(format!(
            "blob {blake3} holds {n} bytes hashing to {h} (expected {size} bytes)"
        )),
        Err(e) => Err(format!("blob {blake3} cannot be read: {e}")),
    }
}

/// Moves a damaged blob file into `quarantine/` (kept for inspection, never served).
pub fn quarantine_blob(blobs: &BlobStore, quarantine: &Path, blake3: &str) -> Option<PathBuf> {
    let from = blobs.path(blake3);
    if std::fs::create_dir_all(quarantine).is_err() {
        return None;
    }
    let to = quarantine.join(format!("{blake3}.{}", crate::clock::now_secs()));
    match std::fs::rename(&from, &to) {
        Ok(()) => Some(to),
        Err(e) => {
            tracing::warn!(blob = blake3, error = %e, "could not move a damaged blob aside; removing it");
            let _ = std::fs::remove_file(&from);
            None
        }
    }
}
