//! The one error type of the asset layer.

use crate::imager::error::{ErrorClass, ImagerError};
use crate::store::StoreError;

/// A failed build as every waiter sees it (clonable: one build, many requests).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BuildFailure {
    /// How the HTTP layer answers it.
    pub class: ErrorClass,
    /// The error text.
    pub message: String,
}

/// Errors of the asset layer.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// Resolving the request failed (bad path, schematic not valid for the version, version
    /// not imported); carries the imager's error so the HTTP layer can add upstream prefixes.
    #[error(transparent)]
    Imager(#[from] ImagerError),
    /// The build failed (shared with every request that waited for it).
    #[error(transparent)]
    Build(#[from] BuildFailure),
    /// Metadata or blob storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored record or blob is damaged and was set aside.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// The asset's blob was set aside (damaged) or collected after its record was looked up;
    /// asking again rebuilds it or waits for the rebuild already running.
    #[error("asset blob {0} is no longer stored")]
    Gone(String),
    /// Anything else (a panicked task, an I/O error outside a build).
    #[error("{0}")]
    Internal(String),
}

impl AssetError {
    /// The class the HTTP layer maps to a status code.
    pub fn class(&self) -> ErrorClass {
        match self {
            AssetError::Imager(e) => e.class(),
            AssetError::Build(f) => f.class,
            AssetError::Store(_)
            | AssetError::Integrity(_)
            | AssetError::Gone(_)
            | AssetError::Internal(_) => ErrorClass::Internal,
        }
    }
}
