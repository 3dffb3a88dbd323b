//! `MetaStore` on sled 0.34, with group commit of `flush_async`. This is the only file that
//! knows sled exists; each piece of sled-specific handling says which sled behaviour it
//! answers:
//!
//! * **Durability.** On Linux sled 0.34 makes its log stable with `sync_file_range`, which
//!   neither commits the file's metadata nor flushes the device's volatile write cache (sled
//!   issue #1452): enough to survive a killed process, not a power cut. Each group flush
//!   therefore ends with an `fdatasync` of sled's log file (`<dir>/db`), shared by every writer
//!   in the group.
//! * **Locking.** sled reports a directory locked by another process only as an I/O error whose
//!   text says so. The store takes its own exclusive lock on `<dir>/LOCK` first, so "locked"
//!   is decided by a lock we hold, not by sled's message.
//! * **Reopening.** sled releases its own lock from a background thread a moment after the last
//!   handle in a process drops. With our lock held no other process can have the directory, so
//!   an I/O error from sled's open is that release still running: it is retried for a while.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::{BoxFuture, MetaStore, StoreError};

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
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Meta(Box::new(e))
}

/// How long an open waits for sled to release a lock this process held a moment ago.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Takes the exclusive lock on `<dir>/LOCK` (not blocking).
fn lock_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
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

impl SledStore {
    /// Opens (or creates) the database in `dir`; a held lock gives `StoreError::Locked`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let lock = lock_dir(dir)?;
        let started = std::time::Instant::now();
        let db = loop {
            match sled::Config::new().path(dir).open() {
                Ok(db) => break db,
                // sled's own lock, still held by the release of a handle this process dropped.
                Err(sled::Error::Io(_)) if started.elapsed() < RELEASE_WAIT => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(StoreError::Open {
                        dir: dir.to_path_buf(),
                        source: Box::new(e),
                    });
                }
            }
        };
        let log = std::fs::File::open(dir.join("db")).map_err(|source| StoreError::Open {
            dir: dir.to_path_buf(),
            source: Box::new(source),
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
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
        let log = Arc::clone(&inner.log);
        tokio::task::spawn_blocking(move || log.sync_data())
            .await
            .map_err(|e| StoreError::Meta(Box::new(e)))?
            .map_err(|e| StoreError::Meta(Box::new(e)))?;
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

    fn remove(&self, tree: &str, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.tree(tree)?.remove(key).map_err(backend)?.is_some())
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.group_flush())
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
