//! Whole-blob hash passes shared by concurrent zero-copy serves of the same asset.
//!
//! A serve may send its last bytes once some pass over the blob has completed successfully at
//! or after the moment the serve started: the blob is immutable, so such a pass saw the bytes
//! this serve is sending. A serve that is alone on its blob starts a pass as it starts (the
//! pass then runs alongside `sendfile`); serves that overlap others rely on a pass completing
//! during their lifetime and only start one at their end if none did. Sixteen clients
//! downloading the same image thus cost about one pass per download duration instead of
//! sixteen, while every response is still covered by a check made while it was being sent.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::pipeline::{Assets, lock};
use super::record::AssetRecord;

/// Bytes per read of a pass (the buffer stays in the CPU cache while it is hashed).
const PASS_READ: usize = 256 * 1024;

/// The outcome of a pass: when it completed, or why the blob failed.
type PassResult = Result<Instant, String>;

/// A pass in progress: resolves to `Some(result)`.
pub(super) type Pass = watch::Receiver<Option<PassResult>>;

/// Check state of one blob.
#[derive(Default)]
pub(super) struct BlobCheck {
    /// Completion time of the last successful pass.
    last_ok: Option<Instant>,
    /// The pass running now, if any.
    running: Option<Pass>,
}

/// Per-blob check state, keyed by BLAKE3.
pub(super) type BlobChecks = HashMap<String, BlobCheck>;

/// Hashes `file` (`size` bytes) with positioned reads and compares it with `blake3`.
fn hash_file(file: &File, size: u64, blake3: &str) -> Result<(), String> {
    let mut buf = vec![0u8; PASS_READ];
    let mut hasher = blake3::Hasher::new();
    let mut pos = 0u64;
    while pos < size {
        let want = (size - pos).min(PASS_READ as u64) as usize;
        let n = match file.read_at(&mut buf[..want], pos) {
            Ok(0) => return Err(format!("blob {blake3} ended at {pos} of {size} bytes")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading blob {blake3}: {e}")),
        };
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    let got = hasher.finalize().to_hex();
    if got.as_str() == blake3 {
        Ok(())
    } else {
        Err(format!("blob {blake3} hashed to {got} while being served"))
    }
}

impl Assets {
    /// Number of serves of `blake3` in progress (the caller's included).
    pub(super) fn serves_of(&self, blake3: &str) -> usize {
        lock(&self.inner.serving).get(blake3).copied().unwrap_or(0)
    }

    /// Whether a pass over `blake3` completed successfully at or after `since`.
    pub(super) fn checked_since(&self, blake3: &str, since: Instant) -> bool {
        lock(&self.inner.checks)
            .get(blake3)
            .and_then(|c| c.last_ok)
            .is_some_and(|t| t >= since)
    }

    /// The pass over the record's blob running now, or a new one started on the blocking pool.
    pub(super) fn pass(&self, record: &Arc<AssetRecord>, file: &Arc<File>) -> Pass {
        let mut checks = lock(&self.inner.checks);
        let state = checks.entry(record.blake3.clone()).or_default();
        if let Some(running) = &state.running {
            return running.clone();
        }
        let (tx, rx) = watch::channel(None);
        state.running = Some(rx.clone());
        drop(checks);
        let (assets, record, file) = (self.clone(), Arc::clone(record), Arc::clone(file));
        tokio::task::spawn_blocking(move || {
            let result = hash_file(&file, record.size, &record.blake3).map(|()| Instant::now());
            {
                let mut checks = lock(&assets.inner.checks);
                let state = checks.entry(record.blake3.clone()).or_default();
                state.running = None;
                if let Ok(at) = &result {
                    state.last_ok = Some(*at);
                }
            }
            if let Err(reason) = &result {
                assets.open_blob_failed(&record, reason, &file);
            }
            let _ = tx.send(Some(result));
        });
        rx
    }
}

/// Waits for `pass` to finish; an error when the blob failed or the pass was lost.
pub(super) async fn wait(mut pass: Pass) -> io::Result<()> {
    let outcome = pass
        .wait_for(Option::is_some)
        .await
        .map(|r| r.clone())
        .map_err(|_| io::Error::other("blob check ended without a result"))?;
    match outcome {
        Some(Ok(_)) => Ok(()),
        Some(Err(reason)) => Err(io::Error::new(io::ErrorKind::InvalidData, reason)),
        None => Err(io::Error::other("blob check ended without a result")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_accepts_only_the_named_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..(PASS_READ * 2 + 17)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let name = blake3::hash(&data).to_hex().to_string();
        let file = File::open(&path).unwrap();
        hash_file(&file, data.len() as u64, &name).unwrap();
        let e = hash_file(&file, data.len() as u64 + 1, &name).unwrap_err();
        assert!(e.contains("ended at"), "{e}");
        let mut flipped = data.clone();
        flipped[PASS_READ + 3] ^= 0x40;
        std::fs::write(&path, &flipped).unwrap();
        let e = hash_file(&file, data.len() as u64, &name).unwrap_err();
        assert!(e.contains("hashed to"), "{e}");
    }
}
