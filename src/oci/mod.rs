//! OCI plumbing: image types, sources (layouts, archives, registries), safe layer flattening.

pub mod bundle;
pub mod flatten;
pub mod layout;
pub mod referrers;
pub mod registry;
mod source;
mod tarwalk;
mod types;
pub mod verify;

pub use bundle::BundleWriter;
pub use flatten::{
    FlattenOptions, FlattenReport, LayerOpener, TreeFile, flatten, read_file, regular_files,
    source_opener,
};
pub use layout::{LayoutKind, LayoutSource};
pub use referrers::{ReferrerManifest, Referrers};
pub use registry::{RegistryOptions, RegistrySource};
pub use source::{BlobReader, ImageSource};
pub use types::*;
pub use verify::{SyncVerifyingReader, VerifyingReader};

/// Errors of the OCI layer.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// A digest string is not `sha256:<64 hex>`.
    #[error("invalid digest {0:?}")]
    InvalidDigest(String),
    /// An image reference cannot be parsed.
    #[error("invalid image reference {0:?}")]
    InvalidReference(String),
    /// Content is not where it should be.
    #[error("not found: {0}")]
    NotFound(String),
    /// Content does not match its digest or size.
    #[error("{what}: content does not match its digest (expected {expected}, got {actual})")]
    DigestMismatch {
        /// What was read.
        what: String,
        /// Expected digest or size.
        expected: String,
        /// Actual digest or size.
        actual: String,
    },
    /// A manifest, index or config is malformed.
    #[error("malformed {what}: {message}")]
    Malformed {
        /// What was parsed.
        what: String,
        /// What is wrong with it.
        message: String,
    },
    /// A manifest, index or config does not decode (or encode).
    #[error("malformed {what}: {source}")]
    Decode {
        /// What was parsed.
        what: String,
        /// The decoder's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A caller's opener could not open a blob or layer.
    #[error("cannot open {what}: {source}")]
    Open {
        /// The blob or layer.
        what: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An archive or layer would write outside its root, or is otherwise unsafe.
    #[error("unsafe archive content: {0}")]
    Unsafe(String),
    /// An extracted tree has a symlink where only real directories and files may be.
    #[error("unsafe archive content: {path} is a symlink (to {target:?}); refusing to follow it")]
    Symlink {
        /// Its path in the image.
        path: String,
        /// Where it points.
        target: String,
    },
    /// A size budget or decompression-ratio limit was exceeded.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// A registry refused a request or answered something unusable.
    #[error("registry {registry}: {message}")]
    Registry {
        /// Registry host.
        registry: String,
        /// What went wrong.
        message: String,
    },
    /// A registry request failed below HTTP (an address, the connection, an answer that does
    /// not decode).
    #[error("registry {registry}: {}{source}", .context.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
    Request {
        /// Registry host.
        registry: String,
        /// What was being done, if the cause does not say.
        context: Option<String>,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Reading or writing local files failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Underlying error.
        source: std::io::Error,
    },
}

impl OciError {
    /// Maps a failure to decode `what` (for `map_err`).
    pub fn decode<E>(what: impl Into<String>) -> impl FnOnce(E) -> OciError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let what = what.into();
        move |source| OciError::Decode {
            what,
            source: Box::new(source),
        }
    }

    /// Wraps an I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> OciError {
        OciError::Io {
            context: context.into(),
            source,
        }
    }
}
