//! `MetaStore` on sled 0.34, with group commit of `flush_async`. This is the only file that
//! knows sled exists; each piece of sled-specific handling says which sled behaviour it
//! answers:
//!
//! * **Durability.** On Linux sled 0.34 makes its log stable with `sync_file_range`, which
//!   neither commits the file's metadata nor flushes the device's volatile write cache (sled
//!   issue #1452): enough to survive a killed process, not a power cut. Each group flush
//!   therefore ends with an `fdatasync` of sled's log file (`<dir>/db`), shared by every writer
//!   in the group.
//! * **Large values.** sled writes a tree node whose encoding exceeds a quarter of its 512 KiB
//!   segment (128 KiB) to a separate file under `<dir>/blobs/`, without any fsync, and its
//!   flush syncs only the log. The appliance keeps large values out of sled (schematics and
//!   release records are documents in the blob store, see `documents.rs`), but a node of many
//!   asset records can still cross the line; each group flush therefore also fsyncs every file
//!   that appeared in `<dir>/blobs/` since the last one, and the directory.
//! * **New files.** sled creates its files (`conf`, `db`, `blobs/`) without syncing the
//!   directory: after opening, those files and the directory are fsynced.
//! * **Damage.** An open that fails on a damaged database (sled reports corruption, an
//!   unparsable `conf`, or a file that ends early) is [`StoreError::Damaged`], whose text
//!   names the recovery (`image-factory doctor --repair`).
//! * **Locking.** sled reports a directory locked by another process only as an I/O error whose
//!   text says so. The store takes its own exclusive lock on `<dir>/LOCK` first, so "locked"
//!   is decided by a lock we hold, not by sled's message.
//! * **Reopening.** sled releases its own lock from a background thread a moment after the last
//!   handle in a process drops. With our lock held no other process can have the directory, so
//!   an I/O error from sled's open is that release still running: it is retried for a while.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::{BoxFuture, MetaStore, StoreError, create_dir, sync_dir};

/// sled-backed metadata store.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    dir: PathBuf,
    /// Our lock on `<dir>/LOCK`, released when the store (and sled's handle, above) drops.
    _lock: std::fs::File,
    trees: RwLock<HashMap<String, sled::Tree>>,
    /// Ticket counter: incremented by each `flush` caller after its writes.
    requested: AtomicU64,
    /// Highest ticket known to be durable.
    durable: AtomicU64,
    /// Serialises the actual fsyncs; waiters re-check `durable` after acquiring it.
    flush_lock: tokio::sync::Mutex<()>,
    /// Number of real fsyncs performed (for tests and diagnostics).
    syncs: AtomicU64,
    /// sled's log file, `fdatasync`ed after every `flush_async` (see the module docs).
    log: Arc<std::fs::File>,
    /// Files of sled's `blobs/` directory already fsynced (see the module docs).
    synced_blobs: Arc<Mutex<HashSet<OsString>>>,
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Meta(Box::new(e))
}

/// How long an open waits for sled to release a lock this process held a moment ago.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Takes the exclusive lock on `<dir>/LOCK` (not blocking).
pub(super) fn lock_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StoreError::Open {
            dir: dir.to_path_buf(),
            source: Box::new(source),
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(StoreError::Open {
            dir: dir.to_path_buf(),
            source: Box::new(source),
        }),
    }
}

/// Whether an error of sled's open means the database is damaged (not merely unreachable).
fn is_damage(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
        ),
        sled::Error::Corruption { .. }
        | sled::Error::Unsupported(_)
        | sled::Error::ReportableBug(_) => true,
        sled::Error::CollectionNotFound(_) => false,
    }
}

/// fsyncs every regular file directly in `dir`, then `dir` itself; files in `skip` are left
/// out. Returns the names synced. A file removed meanwhile (sled drops superseded blobs) is
/// skipped.
fn sync_files_in(dir: &Path, skip: &HashSet<OsString>) -> std::io::Result<Vec<OsString>> {
    let mut synced = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(synced),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if skip.contains(&name) || !entry.file_type()?.is_file() {
            continue;
        }
        match std::fs::File::open(entry.path()) {
            Ok(f) => f.sync_all()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        synced.push(name);
    }
    if !synced.is_empty() {
        sync_dir(dir)?;
    }
    Ok(synced)
}

impl SledStore {
    /// Opens (or creates) the database in `dir`; a held lock gives `StoreError::Locked`, a
    /// damaged database `StoreError::Damaged`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        create_dir(dir)?;
        let lock = lock_dir(dir)?;
        let started = std::time::Instant::now();
        let db = loop {
            match sled::Config::new().path(dir).open() {
                Ok(db) => break db,
                // sled's own lock, still held by the release of a handle this process dropped.
                Err(e @ sled::Error::Io(_))
                    if !is_damage(&e) && started.elapsed() < RELEASE_WAIT =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) if is_damage(&e) => {
                    return Err(StoreError::Damaged {
                        dir: dir.to_path_buf(),
                        source: Box::new(e),
                    });
                }
                Err(e) => {
                    return Err(StoreError::Open {
                        dir: dir.to_path_buf(),
                        source: Box::new(e),
                    });
                }
            }
        };
        let open_err = |source: std::io::Error| StoreError::Open {
            dir: dir.to_path_buf(),
            source: Box::new(source),
        };
        let log = std::fs::File::open(dir.join("db")).map_err(open_err)?;
        // sled created or rewrote its files without syncing their names.
        sync_files_in(dir, &HashSet::new()).map_err(open_err)?;
        sync_dir(dir).map_err(open_err)?;
        let synced_blobs: HashSet<OsString> = sync_files_in(&dir.join("blobs"), &HashSet::new())
            .map_err(open_err)?
            .into_iter()
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                synced_blobs: Arc::new(Mutex::new(synced_blobs)),
                log: Arc::new(log),
                db,
                dir: dir.to_path_buf(),
                _lock: lock,
                trees: RwLock::new(HashMap::new()),
                requested: AtomicU64::new(0),
                durable: AtomicU64::new(0),
                flush_lock: tokio::sync::Mutex::new(()),
                syncs: AtomicU64::new(0),
            }),
        })
    }

    /// The database directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// How many real fsyncs `flush` has performed so far.
    pub fn sync_count(&self) -> u64 {
        self.inner.syncs.load(Ordering::Acquire)
    }

    fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        if let Ok(trees) = self.inner.trees.read()
            && let Some(t) = trees.get(name)
        {
            return Ok(t.clone());
        }
        let tree = self.inner.db.open_tree(name).map_err(backend)?;
        if let Ok(mut trees) = self.inner.trees.write() {
            trees.insert(name.to_string(), tree.clone());
        }
        Ok(tree)
    }

    /// After sled's flush: `fdatasync` of the log, and fsync of the large-value files sled
    /// wrote since the last flush (see the module docs).
    fn sync_files(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let meta = |e: std::io::Error| StoreError::Meta(Box::new(e));
        inner.log.sync_data().map_err(meta)?;
        let blobs_dir = inner.dir.join("blobs");
        let mut synced = inner
            .synced_blobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let new = sync_files_in(&blobs_dir, &synced).map_err(meta)?;
        if !new.is_empty() {
            // Keep the set to what still exists (sled removes superseded blobs).
            let present: HashSet<OsString> = std::fs::read_dir(&blobs_dir)
                .map_err(meta)?
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            synced.retain(|n| present.contains(n));
            synced.extend(new);
        }
        Ok(())
    }

    async fn group_flush(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        // Our writes happened before this ticket was taken.
        let ticket = inner.requested.fetch_add(1, Ordering::AcqRel) + 1;
        if inner.durable.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        let _guard = inner.flush_lock.lock().await;
        if inner.durable.load(Ordering::Acquire) >= ticket {
            // Someone else's fsync, started after our ticket, covered our writes.
            return Ok(());
        }
        // Every ticket <= target was taken after its writes, so this fsync covers them all.
        let target = inner.requested.load(Ordering::Acquire);
        inner.db.flush_async().await.map_err(backend)?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.sync_files())
            .await
            .map_err(StoreError::task("metadata flush"))??;
        inner.syncs.fetch_add(1, Ordering::AcqRel);
        inner.durable.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }
}

impl MetaStore for SledStore {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree(tree)?
            .get(key)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tree(tree)?.insert(key, value).map_err(backend)?;
        Ok(())
    }

    fn put_if_absent(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        let res = self
            .tree(tree)?
            .compare_and_swap(key, None as Option<&[u8]>, Some(value))
            .map_err(backend)?;
        Ok(res.is_ok())
    }

    fn contains(&self, tree: &str, key: &[u8]) -> Result<bool, StoreError> {
        self.tree(tree)?.contains_key(key).map_err(backend)
    }

    fn count(&self, tree: &str) -> Result<u64, StoreError> {
        let n = self.tree(tree)?.len();
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }

    fn scan(&self, tree: &str) -> Result<Vec<super::Record>, StoreError> {
        self.tree(tree)?
            .iter()
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend))
            .collect()
    }

    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Vec<super::Record>, StoreError> {
        self.tree(tree)?
            .scan_prefix(prefix)
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend))
            .collect()
    }

    fn remove(&self, tree: &str, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.tree(tree)?.remove(key).map_err(backend)?.is_some())
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.group_flush())
    }

    fn flush_blocking(&self) -> Result<(), StoreError> {
        self.inner.db.flush().map_err(backend)?;
        self.sync_files()?;
        self.inner.syncs.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn put_get_count_and_group_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.get("t", b"k").unwrap(), None);
        assert!(store.put_if_absent("t", b"k", b"v").unwrap());
        assert!(!store.put_if_absent("t", b"k", b"w").unwrap());
        assert_eq!(store.get("t", b"k").unwrap().as_deref(), Some(&b"v"[..]));
        assert!(store.contains("t", b"k").unwrap());
        assert_eq!(store.count("t").unwrap(), 1);

        let before = store.sync_count();
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.put("t", &i.to_be_bytes(), b"x").unwrap();
                s.flush().await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let syncs = store.sync_count() - before;
        assert!(
            (1..100).contains(&syncs),
            "200 writers caused {syncs} fsyncs"
        );
        assert_eq!(store.count("t").unwrap(), 201);
    }

    #[test]
    fn reopening_after_the_last_handle_drops_succeeds_at_once() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5u8 {
            let store = SledStore::open(dir.path()).unwrap();
            store.put("t", &[i], b"v").unwrap();
            drop(store);
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.count("t").unwrap(), 5);
    }

    #[test]
    fn second_open_reports_lock_with_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path()).unwrap();
        let err = SledStore::open(dir.path())
            .err()
            .expect("second open must fail");
        let text = err.to_string();
        assert!(matches!(err, StoreError::Locked { .. }), "{text}");
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
    }
}
