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
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::pipeline::{Assets, lock};
use super::record::AssetRecord;

/// Bytes per read of a pass (the buffer stays in the CPU cache while it is hashed).
const PASS_READ: usize = 256 * 1024;

/// The outcome of a pass: why the blob failed, if it did.
type PassResult = Result<(), String>;

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

impl BlobCheck {
    /// No pass is running.
    pub(super) fn is_idle(&self) -> bool {
        self.running.is_none()
    }
}

/// Per-blob check state, keyed by BLAKE3 (only while the blob is being served).
pub(super) type BlobChecks = HashMap<String, BlobCheck>;

/// Hashes `file` and compares it with `size` bytes hashing to `blake3`.
fn hash_file(file: &File, size: u64, blake3: &str) -> Result<(), String> {
    let (got, n) = super::integrity::hash_open(file, PASS_READ)
        .map_err(|e| format!("reading blob {blake3}: {e}"))?;
    if n < size {
        Err(format!("blob {blake3} ended at {n} of {size} bytes"))
    } else if got != blake3 || n != size {
        Err(format!("blob {blake3} hashed to {got} while being served"))
    } else {
        Ok(())
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
            let result = hash_file(&file, record.size, &record.blake3);
            let idle = assets.serves_of(&record.blake3) == 0;
            {
                let mut checks = lock(&assets.inner.checks);
                if idle {
                    // Nobody to cover: forget the blob (a later serve starts its own pass).
                    checks.remove(&record.blake3);
                } else {
                    let state = checks.entry(record.blake3.clone()).or_default();
                    state.running = None;
                    if result.is_ok() {
                        state.last_ok = Some(Instant::now());
                    }
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
        .map_err(|_| io::Error::other("blob check ended without a result"))?
        .clone();
    match outcome {
        Some(Err(reason)) => Err(io::Error::new(io::ErrorKind::InvalidData, reason)),
        _ => Ok(()),
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
