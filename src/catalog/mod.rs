//! Catalog: imported Talos releases (versions, boot assets, installer base, extension and
//! overlay catalogs and images), how they are imported, and what the API lists.

mod catalogs;
mod damage;
pub mod export;
pub mod files;
mod import;
mod names;
mod release;
pub mod talosctl;
pub mod version;

pub use damage::Damage;
pub use import::{
    ImportOptions, ImportProgress, ImportSummary, Importer, Selection, bundle_versions,
    stored_layer_opener,
};
pub use names::{Arch, RelPath};
pub use release::{
    ArchRelease, BlobRef, ExtensionEntry, ImageRecord, OverlayEntry, Release, ReleaseStore,
    Revision, Signatures, TalosctlRelease,
};
pub use version::Version;

use crate::io_context::IoContext;
use crate::oci::OciError;
use crate::store::StoreError;
use crate::trust::TrustError;

/// Errors of the catalog layer.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A version string is not semver.
    #[error("invalid version {0:?}")]
    InvalidVersion(String),
    /// An architecture is not one a Talos release has (`amd64`, `arm64`).
    #[error("invalid architecture {0:?}: a Talos release has amd64 and arm64")]
    InvalidArch(String),
    /// A path named by an image or a record would leave the directory it is joined to.
    #[error("refusing path {path:?}: {reason}")]
    UnsafePath {
        /// The path as named.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The version is not offered by this appliance.
    #[error("version {0} is not available")]
    VersionNotAvailable(String),
    /// An image the release needs is missing from the source.
    #[error("{image} not found in {source_name}")]
    ImageNotFound {
        /// The image reference.
        image: String,
        /// The source searched.
        source_name: String,
    },
    /// A signature check failed.
    #[error("refusing {image}: {source}")]
    Untrusted {
        /// The image reference.
        image: String,
        /// Why it is refused (the verification's verdict).
        #[source]
        source: Box<TrustError>,
    },
    /// A release image to copy has no cosign signature in the source.
    #[error("refusing {image}: no cosign signature {signature} in {source_name}")]
    Unsigned {
        /// The image reference.
        image: String,
        /// The signature reference looked for.
        signature: String,
        /// The source searched.
        source_name: String,
    },
    /// A catalog file is malformed or missing.
    #[error("catalog: {0}")]
    Catalog(String),
    /// A catalog file (or a line or entry of one) does not parse.
    #[error("catalog: {what}: {source}")]
    CatalogFile {
        /// The file, line or entry.
        what: String,
        /// The parser's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A background step of an import failed (panicked or was cancelled).
    #[error("{context}: {source}")]
    Task {
        /// The step.
        context: &'static str,
        /// Why it ended.
        #[source]
        source: tokio::task::JoinError,
    },
    /// A file operation of an import failed.
    #[error(transparent)]
    Io(#[from] IoContext),
    /// Reading images failed.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CatalogError {
    /// Maps a failure to parse catalog file `what` (for `map_err`).
    pub(crate) fn file<E>(what: impl Into<String>) -> impl FnOnce(E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let what = what.into();
        move |source| CatalogError::CatalogFile {
            what,
            source: Box::new(source),
        }
    }

    /// Maps a failed background step `context` (for `map_err`).
    pub(crate) fn task(context: &'static str) -> impl FnOnce(tokio::task::JoinError) -> Self {
        move |source| CatalogError::Task { context, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_image_keeps_the_verdict_as_its_cause() {
        let e = CatalogError::Untrusted {
            image: "ghcr.io/siderolabs/imager:v1.11.0".into(),
            source: Box::new(TrustError::NoTrustedKeys {
                image: "ghcr.io/siderolabs/imager:v1.11.0".into(),
            }),
        };
        assert_eq!(
            e.to_string(),
            "refusing ghcr.io/siderolabs/imager:v1.11.0: image ghcr.io/siderolabs/imager:v1.11.0: cannot verify signature: no trusted public keys configured"
        );
        // The verdict is boxed (it is large); the chain holds it as `Box<TrustError>`.
        let cause = std::error::Error::source(&e)
            .and_then(|c| c.downcast_ref::<Box<TrustError>>())
            .map(|b| &**b);
        assert!(
            matches!(cause, Some(TrustError::NoTrustedKeys { .. })),
            "{cause:?}"
        );
    }
}
