//! Catalog: imported Talos releases (versions, boot assets, installer base, extension and
//! overlay catalogs and images), how they are imported, and what the API lists.

mod damage;
pub mod export;
pub mod files;
mod import;
mod names;
mod release;
pub mod version;

pub use damage::Damage;
pub use import::{
    ImportOptions, ImportProgress, ImportSummary, Importer, Selection, bundle_versions,
};
pub use names::{Arch, RelPath};
pub use release::{
    ArchRelease, BlobRef, ExtensionEntry, ImageRecord, OverlayEntry, Release, ReleaseStore,
    Signatures,
};
pub use version::Version;

use crate::oci::OciError;
use crate::store::StoreError;

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
    #[error("refusing {image}: {reason}")]
    Untrusted {
        /// The image reference.
        image: String,
        /// Why it is refused.
        reason: String,
    },
    /// A catalog file is malformed or missing.
    #[error("catalog: {0}")]
    Catalog(String),
    /// Reading images failed.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
