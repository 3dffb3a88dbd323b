//! One release import into a node, as the CLI (direct mode) and the admin API both run it:
//! where the images come from, which versions, and the trust policy, over the node's stores.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Node;
use crate::catalog::{
    Arch, CatalogError, ImportOptions, ImportProgress, ImportSummary, Importer, Selection, Version,
    bundle_versions,
};
use crate::oci::{ImageSource, LayoutSource, OciError, RegistryOptions, RegistrySource};
use crate::trust::TrustPolicy;

/// Where a release's images come from.
#[derive(Debug, Clone)]
pub enum ImportFrom {
    /// An offline bundle (OCI image layout tar) on the node's disk.
    Bundle(PathBuf),
    /// A registry and optional namespace, `HOST[:PORT][/NAMESPACE]`.
    Registry {
        /// `HOST[:PORT][/NAMESPACE]`.
        host_ns: String,
        /// Transport options (TLS, credentials).
        options: RegistryOptions,
    },
}

/// Errors of an import job.
#[derive(Debug, thiserror::Error)]
pub enum ImportJobError {
    /// A bundle without any Talos release in it.
    #[error("{0} holds no siderolabs/imager image")]
    EmptyBundle(PathBuf),
    /// A registry import needs to know which versions to pull.
    #[error("importing from a registry needs at least one version")]
    NoVersion,
    /// The bundle or registry could not be opened.
    #[error("cannot open the image source")]
    Source(#[source] OciError),
    /// Importing one version failed (earlier versions of the job stay imported).
    #[error("import of {version} failed")]
    Version {
        /// The version tag.
        version: String,
        /// Why.
        #[source]
        source: CatalogError,
    },
}

/// How many imports run in a node (garbage collection leaves orphan blobs alone meanwhile:
/// an import reuses stored blobs before its release record names them).
#[derive(Debug, Clone, Default)]
pub struct ImportCount(Arc<AtomicUsize>);

impl ImportCount {
    /// Whether an import is running.
    pub(super) fn running(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }

    /// Counts an import (or a release fetched from a member) as running until the guard drops.
    pub fn start(&self) -> Running {
        self.0.fetch_add(1, Ordering::AcqRel);
        Running(Arc::clone(&self.0))
    }
}

/// One running import, counted while alive.
pub struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An import: source, versions, architectures, extensions and trust policy.
#[derive(Debug, Clone)]
pub struct ImportJob {
    /// Where the images come from.
    pub from: ImportFrom,
    /// Versions to import; empty = every version in a bundle.
    pub versions: Vec<Version>,
    /// Architectures; empty = every architecture the release carries.
    pub arches: Vec<Arch>,
    /// Extensions to import.
    pub extensions: Selection,
    /// How signatures are checked.
    pub policy: TrustPolicy,
}

impl ImportJob {
    /// A one-line description of the source (for progress output).
    pub fn describe(&self) -> String {
        match &self.from {
            ImportFrom::Bundle(p) => p.display().to_string(),
            ImportFrom::Registry { host_ns, .. } => host_ns.clone(),
        }
    }

    /// Imports every version in order into `node`, calling `done` after each one.
    pub async fn run(
        &self,
        node: &Node,
        progress: &dyn ImportProgress,
        mut done: impl FnMut(&ImportSummary),
    ) -> Result<(), ImportJobError> {
        match &self.from {
            ImportFrom::Bundle(path) => {
                let layout = LayoutSource::open_async(path.clone())
                    .await
                    .map_err(ImportJobError::Source)?;
                let versions = if self.versions.is_empty() {
                    bundle_versions(&layout)
                } else {
                    self.versions.clone()
                };
                if versions.is_empty() {
                    return Err(ImportJobError::EmptyBundle(path.clone()));
                }
                self.each(node, &layout, "ghcr.io", &versions, progress, &mut done)
                    .await
            }
            ImportFrom::Registry { host_ns, options } => {
                if self.versions.is_empty() {
                    return Err(ImportJobError::NoVersion);
                }
                let host = host_ns.split('/').next().unwrap_or(host_ns);
                let source =
                    RegistrySource::new(host, options.clone()).map_err(ImportJobError::Source)?;
                let registry = host_ns.trim_end_matches('/');
                self.each(node, &source, registry, &self.versions, progress, &mut done)
                    .await
            }
        }
    }

    async fn each<S: ImageSource>(
        &self,
        node: &Node,
        source: &S,
        registry: &str,
        versions: &[Version],
        progress: &dyn ImportProgress,
        done: &mut impl FnMut(&ImportSummary),
    ) -> Result<(), ImportJobError> {
        let scratch = node.scratch_dir();
        let _running = node.imports.start();
        for v in versions {
            progress.step(&format!(
                "importing Talos {} from {}",
                v.tag(),
                source.describe()
            ));
            let opts = ImportOptions {
                version: v.clone(),
                arches: self.arches.clone(),
                extensions: self.extensions.clone(),
                registry: registry.to_string(),
            };
            let summary = Importer::new(
                source,
                node.blobs(),
                node.releases(),
                &self.policy,
                progress,
                &scratch,
            )
            .run(&opts)
            .await
            .map_err(|source| {
                if crate::causes::is_no_space(&source) {
                    node.assets().report_out_of_space();
                }
                ImportJobError::Version {
                    version: v.tag(),
                    source,
                }
            })?;
            if let Some(r) = node.replication() {
                r.release_imported(&v.tag(), summary.release.revision.as_ref());
            }
            done(&summary);
        }
        Ok(())
    }
}
