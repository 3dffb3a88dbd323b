//! The error types of the asset layer: [`AssetError`] for a request, [`BuildError`] for a build
//! (shared by every request that waited for it, as a [`BuildFailure`]).

use std::sync::Arc;

use crate::gocompat::quote as go_quote;
use crate::imager::error::ImagerError;
use crate::schematic::SchematicError;
use crate::store::StoreError;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The imager refused or failed.
    #[error(transparent)]
    Imager(#[from] ImagerError),
    /// The build ran past its deadline and was stopped.
    #[error("the build timed out after {0} s")]
    TimedOut(u64),
    /// The record could not be encoded.
    #[error("sealing the asset record failed")]
    Seal(#[source] serde_json::Error),
    /// The record could not be stored.
    #[error("storing the asset record failed")]
    Store(#[source] StoreError),
    /// The build task panicked or was cancelled.
    #[error("the build task failed")]
    Task(#[source] tokio::task::JoinError),
    /// The node is shutting down and takes no more builds.
    #[error("the build queue is shut down")]
    QueueClosed,
}

/// A failed build as every waiter sees it (cheap to clone: one build, many requests).
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct BuildFailure(pub Arc<BuildError>);

impl<E: Into<BuildError>> From<E> for BuildFailure {
    fn from(e: E) -> Self {
        BuildFailure(Arc::new(e.into()))
    }
}

impl BuildFailure {
    /// Whether the build was refused because a release input failed verification (now or
    /// earlier: the release is marked damaged).
    pub fn is_damaged_release(&self) -> bool {
        matches!(self.imager(), Some(ImagerError::ReleaseDamaged { .. }))
            || crate::causes::find::<crate::store::BlobDamage>(self).is_some()
    }

    /// The imager's error, if the imager is what failed.
    pub fn imager(&self) -> Option<&ImagerError> {
        match self.0.as_ref() {
            BuildError::Imager(e) => Some(e),
            _ => None,
        }
    }
}

/// Errors of the asset layer.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// No schematic with this ID is stored (upstream's text).
    #[error("schematic ID {} not found", go_quote(.0))]
    SchematicNotFound(String),
    /// The version is not a semantic version (upstream's text; upstream answers 500).
    #[error("invalid version {}", go_quote(.0))]
    InvalidVersion(String),
    /// A stored schematic no longer parses (a damaged metadata store).
    #[error("stored schematic {id} does not parse")]
    StoredSchematic {
        /// The schematic ID.
        id: String,
        /// The parser's error.
        #[source]
        source: SchematicError,
    },
    /// Resolving the request failed (bad path, schematic not valid for the version, version
    /// not imported); carries the imager's error so the HTTP layer can add upstream prefixes.
    #[error(transparent)]
    Imager(#[from] ImagerError),
    /// The cache key could not be computed.
    #[error("computing the cache key failed")]
    CacheKey(#[source] serde_json::Error),
    /// The build failed (shared with every request that waited for it).
    #[error(transparent)]
    Build(#[from] BuildFailure),
    /// Metadata or blob storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading an asset's blob failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The asset's blob was set aside (damaged) or collected after its record was looked up;
    /// asking again rebuilds it or waits for the rebuild already running.
    #[error("asset blob {0} is no longer stored")]
    Gone(String),
    /// A background task (hashing, collection) panicked or was cancelled.
    #[error("{context}: the task failed")]
    Task {
        /// The task's purpose.
        context: &'static str,
        /// Why it ended.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The build queue is full: every build slot is taken and every queue place too.
    #[error(
        "the build queue is full ({admitted} builds running or waiting): retry in {retry_after} s"
    )]
    Busy {
        /// Builds admitted now.
        admitted: usize,
        /// Seconds after which a retry may be admitted.
        retry_after: u64,
    },
    /// The key failed recently and is not built again before its backoff ends.
    #[error("{failure}")]
    Failed {
        /// The remembered failure.
        #[source]
        failure: BuildFailure,
        /// Seconds until a new build may be tried.
        retry_after: u64,
    },
    /// The asset is not cached and this request does not start builds (`HEAD`).
    #[error("the asset is not built yet; a GET builds it")]
    NotBuilt,
    /// The cmdline asset is too large to go into an iPXE script.
    #[error("cmdline asset is {0} bytes")]
    CmdlineTooLarge(u64),
    /// A build ended without publishing a result (a bug; the request may be retried).
    #[error("the build of {0} ended without a result")]
    NoResult(String),
    /// A built installer lists no OCI image manifest among its intermediates (a bug).
    #[error("installer asset {0} has no OCI image manifest among its blobs")]
    NoInstallerManifest(String),
    // A stored record or blob failed verification (it is set aside and the asset rebuilt):
    /// The stored record is not a record envelope.
    #[error("not a record envelope: {0}")]
    RecordEnvelope(#[source] serde_json::Error),
    /// The envelope's `part` (payload or signature) is not base64.
    #[error("{part} is not base64: {source}")]
    RecordBase64 {
        /// `payload` or `signature`.
        part: &'static str,
        /// The decoder's error.
        #[source]
        source: base64::DecodeError,
    },
    /// The envelope's signature is not the cluster key's over its payload.
    #[error("signature does not verify with the cluster key")]
    RecordSignature,
    /// The signed payload is not a record.
    #[error("signed payload is malformed: {0}")]
    RecordPayload(#[source] serde_json::Error),
    /// The record is stored under another cache key than the one it names.
    #[error("record names key {0}")]
    RecordKey(String),
    /// A record found under one cache key is signed for another.
    #[error("stored under {stored}, signed for {signed}")]
    RecordElsewhere {
        /// The key it is stored under.
        stored: String,
        /// The key its signed payload names.
        signed: String,
    },
    /// A record names something that is not a blob name (64 lowercase hex digits).
    #[error("names {0:?}, which is not a blob name")]
    RecordBlobName(String),
    /// The blob's bytes are not the ones its name and record say.
    #[error("blob {blake3} holds {size} bytes hashing to {hash} (expected {expected} bytes)")]
    BlobContent {
        /// The blob's name (BLAKE3 hex).
        blake3: String,
        /// Bytes found.
        size: u64,
        /// Their BLAKE3 hex.
        hash: String,
        /// Bytes the record names.
        expected: u64,
    },
    /// The blob's size is not the one its record says.
    #[error("blob {blake3} is {size} bytes, its record says {expected}")]
    BlobSize {
        /// The blob's name.
        blake3: String,
        /// Its size on disk.
        size: u64,
        /// The record's size.
        expected: u64,
    },
    /// A whole-blob hash while serving read fewer bytes than the record says.
    #[error("blob {blake3} ended at {read} of {size} bytes")]
    BlobShort {
        /// The blob's name.
        blake3: String,
        /// Bytes read.
        read: u64,
        /// The record's size.
        size: u64,
    },
    /// A whole-blob hash while serving found other bytes than the blob's name.
    #[error("blob {blake3} hashed to {hash} while being served")]
    BlobChanged {
        /// The blob's name.
        blake3: String,
        /// The BLAKE3 hex of what was read.
        hash: String,
    },
    /// The blob could not be read for hashing.
    #[error("blob {blake3} cannot be read: {source}")]
    BlobUnreadable {
        /// The blob's name.
        blake3: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl AssetError {
    /// Maps a failed `spawn_blocking` of `context` (for `map_err`).
    pub(crate) fn task(context: &'static str) -> impl FnOnce(tokio::task::JoinError) -> Self {
        move |source| AssetError::Task { context, source }
    }
}
