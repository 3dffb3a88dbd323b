//! Storage: the `MetaStore` trait for small records (its sled implementation is the one file
//! that knows sled) and typed facades.

mod blobs;
mod documents;
mod durable;
mod reindex;
mod schematics;
mod sled_store;
mod verified;
mod writer;

pub use blobs::{BlobInfo, BlobStore, BlobWriter, PendingBlob, is_blob_name};
pub use documents::{DocCheck, DocKind, DocRef, DocStore};
pub use durable::{create_dir_all_durable, sync_dir};
pub use reindex::ReindexReport;
pub use schematics::{PutOutcome, SchematicStore};
pub use sled_store::SledStore;
pub use verified::{BlobDamage, VerifiedBlob};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use crate::io_context::IoContext;

/// A boxed, sendable future (keeps `MetaStore` object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the metadata directory.
    #[error(
        "metadata store {dir} is locked by another process (is another image-factory running with the same data directory?)"
    )]
    Locked {
        /// The directory that could not be locked.
        dir: PathBuf,
    },
    /// The database could not be opened.
    #[error("cannot open metadata store {dir}")]
    Open {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The database is damaged beyond what opening it can recover.
    #[error(
        "metadata store {dir} is damaged and cannot be opened; schematics and release records \
         are also kept as documents in the blob store: with the appliance stopped, \
         `image-factory doctor --repair` moves the damaged store aside and rebuilds it from them"
    )]
    Damaged {
        /// The directory.
        dir: PathBuf,
        /// What the database reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A directory could not be created.
    #[error("cannot create directory {dir}: {source}")]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// A read, write or flush of the metadata store failed.
    #[error("metadata store error")]
    Meta(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A blob file operation failed.
    #[error("metadata store error: {0}")]
    Io(#[from] IoContext),
    /// A stored record is not what was expected.
    #[error("corrupt record {key:?} in tree {tree}: {source}")]
    Corrupt {
        /// Tree name.
        tree: String,
        /// Record key.
        key: String,
        /// What is wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored blob failed verification.
    #[error("a stored blob failed verification")]
    BlobDamaged(#[source] BlobDamage),
    /// A name that is not a blob name (64 lowercase hex digits) was asked for.
    #[error("invalid blob name {name:?} (a blob name is 64 lowercase hex digits)")]
    InvalidBlobName {
        /// The name as given.
        name: String,
    },
    /// A document key that cannot name a document of its kind.
    #[error("invalid {kind} document key {key:?}")]
    InvalidDocumentKey {
        /// Document kind.
        kind: &'static str,
        /// The key as given.
        key: String,
    },
    /// A blob looked up by SHA-256 has another size than its descriptor says.
    #[error("blob sha256:{sha256} is {stored} bytes stored, {expected} expected")]
    SizeMismatch {
        /// SHA-256 hex.
        sha256: String,
        /// Stored size.
        stored: u64,
        /// Size the caller expected.
        expected: u64,
    },
    /// A blob is larger than the caller reads into memory.
    #[error("blob sha256:{sha256} is {size} bytes, more than the {limit} allowed here")]
    TooLarge {
        /// SHA-256 hex.
        sha256: String,
        /// Stored size.
        size: u64,
        /// The caller's limit.
        limit: u64,
    },
    /// Streamed content did not hash to the digest it was announced with.
    #[error("blob content does not match sha256:{expected} (got sha256:{actual})")]
    DigestMismatch {
        /// Announced SHA-256 hex.
        expected: String,
        /// Actual SHA-256 hex.
        actual: String,
    },
    /// A record could not be encoded.
    #[error("cannot encode {what}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A blocking task of the store did not complete.
    #[error("{what} task failed")]
    Task {
        /// What the task did.
        what: &'static str,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
    /// A helper thread (hashing) failed.
    #[error("the {what} thread failed")]
    Thread {
        /// What the thread did.
        what: &'static str,
    },
    /// A blob writer was used after it finished or failed.
    #[error("blob writer already finished")]
    WriterFinished,
}

impl StoreError {
    /// `map_err` helper for a blocking task's `JoinError`.
    pub fn task(what: &'static str) -> impl FnOnce(tokio::task::JoinError) -> StoreError {
        move |source| StoreError::Task { what, source }
    }
}

/// Largest value a record of the metadata store is meant to hold. The store is durable for
/// small records only (see `sled_store.rs`: its log holds tree nodes of up to 17 records and
/// at most 128 KiB); anything larger (schematics, release records) is a document in the blob
/// store with a reference here.
pub const SMALL_VALUE: usize = 7 << 10;

/// A key-value record: key bytes and value bytes.
pub type Record = (Vec<u8>, Vec<u8>);

/// A key-value store of small records, organised in named trees.
///
/// `put` makes a record visible immediately; it is durable only after `flush` completes.
/// Implementations group concurrent flushes so that N concurrent writers share ~1-2 syncs.
pub trait MetaStore: Send + Sync + 'static {
    /// Reads a record.
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes a record (visible at once, durable after `flush`).
    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Writes a record only if the key is absent; returns whether it was inserted.
    fn put_if_absent(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<bool, StoreError>;
    /// Whether a key exists.
    fn contains(&self, tree: &str, key: &[u8]) -> Result<bool, StoreError>;
    /// Number of records in a tree.
    fn count(&self, tree: &str) -> Result<u64, StoreError>;
    /// Every record of a tree, in key order (trees are small: catalog and asset records).
    fn scan(&self, tree: &str) -> Result<Vec<Record>, StoreError>;
    /// The records of a tree whose keys start with `prefix`, in key order (reads only those).
    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Vec<Record>, StoreError>;
    /// Removes a record; returns whether it existed.
    fn remove(&self, tree: &str, key: &[u8]) -> Result<bool, StoreError>;
    /// Makes every write that returned before this call durable.
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// [`MetaStore::flush`] for blocking callers (start-up, repair, migration).
    fn flush_blocking(&self) -> Result<(), StoreError>;
}

/// Creates `dir` (and missing ancestors) durably (see [`create_dir_all_durable`]).
pub(crate) fn create_dir(dir: &Path) -> Result<(), StoreError> {
    create_dir_all_durable(dir).map_err(|source| StoreError::CreateDir {
        dir: dir.to_path_buf(),
        source,
    })
}

/// Moves a damaged metadata store (`<dataDir>/meta`) aside to `<dataDir>/meta.damaged-<unix
/// seconds>` (kept for inspection), durably; returns where. The next [`open_data_dir`]
/// creates a fresh one.
pub fn set_aside_meta(data_dir: &Path) -> Result<PathBuf, StoreError> {
    let from = data_dir.join("meta");
    let secs = crate::clock::now_secs();
    let mut to = data_dir.join(format!("meta.damaged-{secs}"));
    for n in 1..100u32 {
        if !to.exists() {
            break;
        }
        to = data_dir.join(format!("meta.damaged-{secs}.{n}"));
    }
    std::fs::rename(&from, &to).map_err(crate::io_context::io_err(format!(
        "move {} to {}",
        from.display(),
        to.display()
    )))?;
    sync_dir(data_dir).map_err(crate::io_context::io_err(format!(
        "sync {}",
        data_dir.display()
    )))?;
    tracing::warn!(from = %from.display(), to = %to.display(), "moved the metadata store aside");
    Ok(to)
}

/// Creates `<dataDir>`, `<dataDir>/meta` and `<dataDir>/blobs` (durably), and opens the
/// metadata store.
pub fn open_data_dir(data_dir: &Path) -> Result<SledStore, StoreError> {
    open_data_dir_inner(data_dir)
}

/// Takes the lock a running node holds on `data_dir` (that of its metadata store), for a
/// command that changes files beside the stores while no node runs on them; released when
/// the file is dropped. Fails with [`StoreError::Locked`] while a node runs.
pub fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, StoreError> {
    let meta = data_dir.join("meta");
    create_dir(&meta)?;
    sled_store::lock_dir(&meta)
}

fn open_data_dir_inner(data_dir: &Path) -> Result<SledStore, StoreError> {
    for dir in [data_dir.to_path_buf(), data_dir.join("blobs")] {
        create_dir(&dir)?;
    }
    SledStore::open(&data_dir.join("meta"))
}
