//! Whole-blob hash passes shared by concurrent zero-copy serves of the same asset.
//!
//! A serve may send its last bytes once some pass over the same blob file (device and inode,
//! not just the name) has completed successfully at or after the moment the serve started:
//! the file is immutable, so such a pass saw the bytes this serve is sending. A serve that is
//! alone on its file starts a pass as it starts (the
//! pass then runs alongside `sendfile`); serves that overlap others rely on a pass completing
//! during their lifetime and only start one at their end if none did. Sixteen clients
//! downloading the same image thus cost about one pass per download duration instead of
//! sixteen, while every response is still covered by a check made while it was being sent.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::error::AssetError;
use super::pipeline::{Assets, lock};
use super::record::AssetRecord;

/// Bytes per read of a pass (the buffer stays in the CPU cache while it is hashed).
const PASS_READ: usize = 256 * 1024;

/// The outcome of a pass: why the blob failed, if it did (shared by every serve that waits).
type PassResult = Result<(), Arc<AssetError>>;

/// A pass in progress: resolves to `Some(result)`.
pub(super) type Pass = watch::Receiver<Option<PassResult>>;

/// The file a serve reads, by device and inode. Check state is kept per file, not per BLAKE3:
/// a damaged blob that was set aside and rebuilt has the same name as its successor, and a
/// pass over the fresh file says nothing about the bytes a slow serve of the old one sends.
/// An open descriptor keeps its inode allocated, so the identity cannot be reused under a
/// serve that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The identity of a file from its metadata.
    pub(super) fn of(meta: &std::fs::Metadata) -> Self {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Check state of one blob file.
#[derive(Default)]
struct FileCheck {
    /// Zero-copy serves of the file in progress.
    serves: usize,
    /// Completion time of the last successful pass (cleared by a failed one).
    last_ok: Option<Instant>,
    /// The pass running now, if any.
    running: Option<Pass>,
}

impl FileCheck {
    /// Whether the last successful pass is younger than `window` at `now`.
    fn in_window(&self, window: Duration, now: Instant) -> bool {
        !window.is_zero()
            && self
                .last_ok
                .is_some_and(|t| now.saturating_duration_since(t) < window)
    }

    /// Whether this state is still needed at `now`.
    fn needed(&self, window: Duration, now: Instant) -> bool {
        self.serves > 0 || self.running.is_some() || self.in_window(window, now)
    }
}

/// Per-file check state, kept while a file is being served or hashed, and for the verify
/// window after its last successful pass.
pub(super) struct BlobChecks {
    files: HashMap<FileId, FileCheck>,
    /// How long a successful pass also covers serves that start after it.
    window: Duration,
}

impl BlobChecks {
    /// No state yet; passes cover later serves for `window` (zero: only serves in progress).
    pub(super) fn new(window: Duration) -> Self {
        BlobChecks {
            files: HashMap::new(),
            window,
        }
    }

    /// Forgets `id` if nothing needs its state any more.
    fn tidy(&mut self, id: FileId, now: Instant) {
        if let Some(c) = self.files.get(&id)
            && !c.needed(self.window, now)
        {
            self.files.remove(&id);
        }
    }

    /// Whether a pass over `id` succeeded within the window before `now`: a serve starting
    /// now needs no pass of its own.
    pub(super) fn covered(&self, id: FileId, now: Instant) -> bool {
        self.files
            .get(&id)
            .is_some_and(|c| c.in_window(self.window, now))
    }

    /// A serve of `id` starts; returns how many are in progress (this one included).
    fn serve_started(&mut self, id: FileId) -> usize {
        if !self.window.is_zero() {
            // States kept for the window only: drop the expired ones here.
            let (window, now) = (self.window, Instant::now());
            self.files.retain(|_, c| c.needed(window, now));
        }
        let state = self.files.entry(id).or_default();
        state.serves += 1;
        state.serves
    }

    /// A serve of `id` ended; the state goes once nothing uses it.
    fn serve_ended(&mut self, id: FileId) {
        if let Some(state) = self.files.get_mut(&id) {
            state.serves = state.serves.saturating_sub(1);
        }
        self.tidy(id, Instant::now());
    }

    /// Whether a pass over `id` completed successfully at or after `since`.
    fn checked_since(&self, id: FileId, since: Instant) -> bool {
        self.files
            .get(&id)
            .and_then(|c| c.last_ok)
            .is_some_and(|t| t >= since)
    }

    /// The pass over `id` running now, or `None` after registering `new` as that pass.
    fn join_or_start(&mut self, id: FileId, new: &Pass) -> Option<Pass> {
        let state = self.files.entry(id).or_default();
        if let Some(running) = &state.running {
            return Some(running.clone());
        }
        state.running = Some(new.clone());
        None
    }

    /// A whole-file hash of `id` finished at `at` (a shared pass, or a streamed body checked
    /// as it was read); forgets the file when nothing needs its state.
    pub(super) fn hashed(&mut self, id: FileId, ok: bool, at: Instant, was_pass: bool) {
        let state = self.files.entry(id).or_default();
        if was_pass {
            state.running = None;
        }
        state.last_ok = ok.then_some(at);
        self.tidy(id, at);
    }
}

/// Registers a zero-copy serve of one blob file while alive.
pub(super) struct CheckGuard {
    assets: Assets,
    id: FileId,
}

impl Drop for CheckGuard {
    fn drop(&mut self) {
        lock(&self.assets.inner.checks).serve_ended(self.id);
    }
}

/// Hashes `file` and compares it with `size` bytes hashing to `blake3`.
fn hash_file(file: &File, size: u64, blake3: &str) -> Result<(), AssetError> {
    let (hash, n) = super::integrity::hash_open(file, PASS_READ).map_err(|source| {
        AssetError::BlobUnreadable {
            blake3: blake3.to_string(),
            source,
        }
    })?;
    if n < size {
        Err(AssetError::BlobShort {
            blake3: blake3.to_string(),
            read: n,
            size,
        })
    } else if hash != blake3 || n != size {
        Err(AssetError::BlobChanged {
            blake3: blake3.to_string(),
            hash,
        })
    } else {
        Ok(())
    }
}

impl Assets {
    /// Registers a zero-copy serve of `id`; returns the guard and the number of serves of the
    /// file in progress (this one included).
    pub(super) fn check_serve(&self, id: FileId) -> (CheckGuard, usize) {
        let serves = lock(&self.inner.checks).serve_started(id);
        let guard = CheckGuard {
            assets: self.clone(),
            id,
        };
        (guard, serves)
    }

    /// Whether a pass over `id` completed successfully at or after `since`.
    pub(super) fn checked_since(&self, id: FileId, since: Instant) -> bool {
        lock(&self.inner.checks).checked_since(id, since)
    }

    /// The pass over `file` (the record's blob, identified by `id`) running now, or a new one
    /// started on the blocking pool.
    pub(super) fn pass(&self, record: &Arc<AssetRecord>, file: &Arc<File>, id: FileId) -> Pass {
        let (tx, rx) = watch::channel(None);
        if let Some(running) = lock(&self.inner.checks).join_or_start(id, &rx) {
            return running;
        }
        let (assets, record, file) = (self.clone(), Arc::clone(record), Arc::clone(file));
        tokio::task::spawn_blocking(move || {
            let result = hash_file(&file, record.size, &record.blake3).map_err(Arc::new);
            lock(&assets.inner.checks).hashed(id, result.is_ok(), Instant::now(), true);
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
        assert!(matches!(e, AssetError::BlobShort { .. }), "{e}");
        assert!(e.to_string().contains("ended at"), "{e}");
        let mut flipped = data.clone();
        flipped[PASS_READ + 3] ^= 0x40;
        std::fs::write(&path, &flipped).unwrap();
        let e = hash_file(&file, data.len() as u64, &name).unwrap_err();
        assert!(matches!(e, AssetError::BlobChanged { .. }), "{e}");
        assert!(e.to_string().contains("hashed to"), "{e}");
    }

    fn id(ino: u64) -> FileId {
        FileId { dev: 1, ino }
    }

    #[test]
    fn a_pass_covers_only_the_file_it_read() {
        // A damaged blob (inode 1) is being served when it is set aside and rebuilt under the
        // same name (inode 2); a pass over the rebuilt file must not cover the old serve.
        let mut checks = BlobChecks::new(Duration::ZERO);
        let started = Instant::now();
        assert_eq!(checks.serve_started(id(1)), 1);
        assert_eq!(
            checks.serve_started(id(2)),
            1,
            "serves are counted per file"
        );
        let (_tx, rx) = watch::channel(None);
        assert!(checks.join_or_start(id(2), &rx).is_none());
        assert!(
            checks.join_or_start(id(2), &rx).is_some(),
            "a second serve joins"
        );
        assert!(
            checks.join_or_start(id(1), &rx).is_none(),
            "another file's pass is not joined"
        );
        checks.hashed(id(2), true, Instant::now(), true);
        assert!(checks.checked_since(id(2), started));
        assert!(!checks.checked_since(id(1), started));
        checks.hashed(id(1), false, Instant::now(), true);
        assert!(
            !checks.checked_since(id(1), started),
            "a failed pass covers nothing"
        );
    }

    #[test]
    fn state_lives_while_a_file_is_served_or_hashed() {
        let mut checks = BlobChecks::new(Duration::ZERO);
        checks.serve_started(id(7));
        checks.serve_started(id(7));
        let (_tx, rx) = watch::channel(None);
        assert!(checks.join_or_start(id(7), &rx).is_none());
        checks.serve_ended(id(7));
        checks.serve_ended(id(7));
        assert!(
            checks.files.contains_key(&id(7)),
            "kept while its pass runs"
        );
        checks.hashed(id(7), true, Instant::now(), true);
        assert!(
            checks.files.is_empty(),
            "forgotten when nobody is left to cover"
        );
        // A pass that outlives its serves leaves nothing behind either way.
        let since = Instant::now();
        checks.serve_started(id(8));
        checks.serve_ended(id(8));
        assert!(checks.files.is_empty());
        assert!(!checks.checked_since(id(8), since));
    }

    #[test]
    fn a_window_covers_later_serves_until_it_expires_or_a_pass_fails() {
        let window = Duration::from_secs(30);
        let mut checks = BlobChecks::new(window);
        let t0 = Instant::now();
        assert!(!checks.covered(id(1), t0), "never hashed");
        checks.serve_started(id(1));
        checks.hashed(id(1), true, t0, false);
        checks.serve_ended(id(1));
        assert!(checks.files.contains_key(&id(1)), "kept for the window");
        assert!(checks.covered(id(1), t0 + Duration::from_secs(29)));
        assert!(!checks.covered(id(1), t0 + window), "expired");
        assert!(!checks.covered(id(2), t0), "only the file that was hashed");
        checks.hashed(id(1), false, t0 + Duration::from_secs(1), true);
        assert!(
            !checks.covered(id(1), t0 + Duration::from_secs(2)),
            "a failed pass ends the cover"
        );
        assert!(checks.files.is_empty(), "nothing left to keep");
    }

    #[test]
    fn without_a_window_nothing_covers_a_later_serve() {
        let mut checks = BlobChecks::new(Duration::ZERO);
        let t0 = Instant::now();
        checks.serve_started(id(3));
        checks.hashed(id(3), true, t0, false);
        assert!(!checks.covered(id(3), t0));
        checks.serve_ended(id(3));
        assert!(checks.files.is_empty());
    }
}
