//! Storage: the `MetaStore` trait for small records (its sled implementation is the one file
//! that knows sled) and typed facades.

mod blobs;
mod schematics;
mod sled_store;
mod verified;
mod writer;

pub use blobs::{BlobInfo, BlobStore, BlobWriter, PendingBlob};
pub use schematics::{PutOutcome, SchematicStore};
pub use sled_store::SledStore;
pub use verified::VerifiedBlob;

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
    /// A read, write or flush failed.
    #[error("metadata store error: {0}")]
    Backend(String),
    /// A blob file operation failed.
    #[error("metadata store error: {0}")]
    Io(#[from] IoContext),
    /// A stored record is not what was expected.
    #[error("corrupt record {key:?} in tree {tree}: {message}")]
    Corrupt {
        /// Tree name.
        tree: String,
        /// Record key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

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
    /// Removes a record; returns whether it existed.
    fn remove(&self, tree: &str, key: &[u8]) -> Result<bool, StoreError>;
    /// Makes every write that returned before this call durable.
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// Creates `<dataDir>`, `<dataDir>/meta` and `<dataDir>/blobs`, and opens the metadata store.
pub fn open_data_dir(data_dir: &Path) -> Result<SledStore, StoreError> {
    for dir in [data_dir.to_path_buf(), data_dir.join("blobs")] {
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::CreateDir { dir, source })?;
    }
    SledStore::open(&data_dir.join("meta"))
}
