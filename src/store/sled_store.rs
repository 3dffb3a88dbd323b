//! `MetaStore` on sled 0.34, with group commit of `flush_async`.
//!
//! On Linux sled 0.34 makes its log stable with `sync_file_range`, which neither commits the
//! file's metadata nor flushes the device's volatile write cache (sled issue #1452): enough to
//! survive a killed process, not a power cut. Each group flush therefore ends with an
//! `fdatasync` of sled's log file (`<dir>/db`), shared by every writer in the group.

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
    StoreError::Backend(e.to_string())
}

impl SledStore {
    /// Opens (or creates) the database in `dir`; a held lock gives `StoreError::Locked`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let db = sled::Config::new().path(dir).open().map_err(|e| match &e {
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                StoreError::Locked {
                    dir: dir.to_path_buf(),
                }
            }
            _ => StoreError::Open {
                dir: dir.to_path_buf(),
                message: e.to_string(),
            },
        })?;
        let log = std::fs::File::open(dir.join("db")).map_err(|e| StoreError::Open {
            dir: dir.to_path_buf(),
            message: format!("cannot open sled log file db: {e}"),
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                log: Arc::new(log),
                db,
                dir: dir.to_path_buf(),
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
            .map_err(|e| StoreError::Backend(format!("fdatasync task failed: {e}")))?
            .map_err(|e| StoreError::Backend(format!("fdatasync of the sled log: {e}")))?;
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
