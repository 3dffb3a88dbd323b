//! Bundle export (the connected side of an air gap): copy a release's images and their cosign
//! signatures (`.sig` tags, and Sigstore bundle referrers found through the registry's referrers
//! API or the referrers tag schema) from a registry into an offline bundle, named with their
//! upstream references.
//!
//! Blocking: it drives the async source through a runtime handle, so run it on a blocking thread.

use std::collections::BTreeSet;
use std::io::Read;

use tokio::runtime::Handle;
use tokio_util::io::SyncIoBridge;

use crate::oci::flatten::{LayerOpener, read_file};
use crate::oci::{
    BundleWriter, Descriptor, ImageIndex, ImageManifest, ImageSource, OciError, Reference,
    ReferrerManifest, Referrers,
};

use super::files::{parse_image_digests, parse_overlays};
use super::import::{ImportProgress, Selection};
use super::names::Arch;
use super::{CatalogError, Version};
use crate::counting::{Counting, Tally};

/// Largest manifest or index copied.
const MAX_MANIFEST: u64 = 4 << 20;
/// Largest catalog file read while exporting.
const MAX_CATALOG_FILE: u64 = 16 << 20;
/// The registry the bundle names images with (what importers expect).
const UPSTREAM: &str = "ghcr.io";

/// What to put into the bundle.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The Talos version.
    pub version: Version,
    /// Architectures (must not be empty).
    pub arches: Vec<Arch>,
    /// Extensions to include.
    pub extensions: Selection,
    /// Source registry and namespace (`HOST[:PORT][/namespace]`).
    pub registry: String,
}

/// What an export copied.
#[derive(Debug, Clone, Default)]
pub struct ExportSummary {
    /// Images copied (each with its signature).
    pub images: usize,
    /// Blob bytes written into the bundle.
    pub bytes: u64,
}

struct Exporter<'a, S: ImageSource> {
    source: &'a S,
    writer: &'a mut BundleWriter,
    progress: &'a dyn ImportProgress,
    handle: Handle,
    summary: ExportSummary,
    registry: String,
}

fn reference(s: &str) -> Result<Reference, CatalogError> {
    s.parse().map_err(CatalogError::from)
}

/// Copies one release (imager, installer base, catalogs, selected extensions, overlays,
/// `talosctl-all` when the registry has it, and every signature) from `source` into `writer`.
pub fn export_release<S: ImageSource>(
    source: &S,
    writer: &mut BundleWriter,
    opts: &ExportOptions,
    progress: &dyn ImportProgress,
    handle: Handle,
) -> Result<ExportSummary, CatalogError> {
    let mut ex = Exporter {
        source,
        writer,
        progress,
        handle,
        summary: ExportSummary::default(),
        registry: opts.registry.trim_end_matches('/').to_string(),
    };
    let tag = opts.version.tag();
    let base = if opts.version.at_least(1, 10) {
        "installer-base"
    } else {
        "installer"
    };
    let all_arches: Vec<Arch> = opts.arches.clone();
    let imager_arch = vec![Arch::Amd64];
    ex.copy("siderolabs/imager", Some(&tag), None, &imager_arch)?;
    ex.copy(&format!("siderolabs/{base}"), Some(&tag), None, &all_arches)?;
    let ext_catalog = ex.copy("siderolabs/extensions", Some(&tag), None, &imager_arch)?;
    let digests = ex
        .catalog_file(&ext_catalog, "image-digests")?
        .ok_or_else(|| CatalogError::Catalog(format!("extensions:{tag} has no image-digests")))?;
    for line in parse_image_digests(&digests)? {
        if opts.extensions.wants(line.name()) {
            let tag = line.reference.tag.clone();
            ex.copy(
                line.name(),
                tag.as_deref(),
                Some(line.digest().clone()),
                &all_arches,
            )?;
        }
    }
    if opts.version.at_least(1, 7) {
        let ov_catalog = ex.copy("siderolabs/overlays", Some(&tag), None, &imager_arch)?;
        if let Some(text) = ex.catalog_file(&ov_catalog, "overlays.yaml")? {
            for line in parse_overlays(&text)? {
                let upstream = line.reference()?;
                let tag = line.image.rsplit_once(':').map(|(_, t)| t.to_string());
                ex.copy(
                    &upstream.repository,
                    tag.as_deref(),
                    Some(line.digest.clone()),
                    &all_arches,
                )?;
            }
        }
    }
    if super::talosctl::has_talosctl_all(&opts.version) {
        // Optional, as on import: a registry without it still exports the release.
        match ex.copy("siderolabs/talosctl-all", Some(&tag), None, &imager_arch) {
            Ok(_) => {}
            Err(CatalogError::ImageNotFound { image, .. })
            | Err(CatalogError::Oci(OciError::NotFound(image))) => {
                progress.step(&format!(
                    "{image} not found: the bundle has no talosctl binaries"
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(ex.summary)
}

/// An image copied into the bundle: its platform manifests (for reading catalog files).
struct Copied {
    manifests: Vec<ImageManifest>,
    reference: Reference,
}

impl<S: ImageSource> Exporter<'_, S> {
    fn block<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.handle.block_on(f)
    }

    fn copy_blob(&mut self, reference: &Reference, d: &Descriptor) -> Result<(), CatalogError> {
        if self.writer.has_blob(&d.digest) {
            return Ok(());
        }
        self.progress.add_total(d.size);
        let stream = self.block(self.source.blob(reference, d))?;
        let reader = SyncIoBridge::new_with_handle(stream, self.handle.clone());
        let progress = self.progress;
        let counted = Counting::with_tally(reader, progress);
        self.writer.add_blob(d, counted)?;
        self.summary.bytes += d.size;
        Ok(())
    }

    fn copy_manifest(
        &mut self,
        reference: &Reference,
        d: &Descriptor,
    ) -> Result<Vec<u8>, CatalogError> {
        let bytes = self.block(self.source.manifest(reference, &d.digest, MAX_MANIFEST))?;
        self.writer.add_blob(d, bytes.as_slice())?;
        Ok(bytes)
    }

    /// Copies the image `repo` (by tag, or pinned to `digest`), the `linux/<arch>` manifests it
    /// has for `arches`, their config and layers, and its cosign signature image.
    fn copy(
        &mut self,
        repo: &str,
        tag: Option<&str>,
        digest: Option<crate::oci::Digest>,
        arches: &[Arch],
    ) -> Result<Copied, CatalogError> {
        let source_ref = match &digest {
            Some(d) => reference(&format!("{}/{repo}@{d}", self.registry))?,
            None => reference(&format!(
                "{}/{repo}:{}",
                self.registry,
                tag.unwrap_or("latest")
            ))?,
        };
        self.progress.step(&format!("copying {source_ref}"));
        let top = self
            .block(self.source.resolve(&source_ref))?
            .ok_or_else(|| CatalogError::ImageNotFound {
                image: source_ref.to_string(),
                source_name: self.source.describe(),
            })?;
        let top_bytes = self.copy_manifest(&source_ref, &top)?;
        let mut manifests = Vec::new();
        let platform_descs: Vec<Descriptor> = if top.is_index() {
            let index: ImageIndex =
                serde_json::from_slice(&top_bytes).map_err(OciError::decode("image index"))?;
            let wanted: BTreeSet<&str> = arches.iter().map(|a| a.as_str()).collect();
            index
                .manifests
                .iter()
                .filter(|d| {
                    d.platform.as_ref().is_some_and(|p| {
                        p.os == "linux" && wanted.contains(p.architecture.as_str())
                    })
                })
                .cloned()
                .collect()
        } else {
            vec![top.clone()]
        };
        for d in &platform_descs {
            let bytes = if d.digest == top.digest {
                top_bytes.clone()
            } else {
                self.copy_manifest(&source_ref, d)?
            };
            let m: ImageManifest =
                serde_json::from_slice(&bytes).map_err(OciError::decode("image manifest"))?;
            self.copy_blob(&source_ref, &m.config)?;
            for layer in &m.layers {
                self.copy_blob(&source_ref, layer)?;
            }
            manifests.push(m);
        }
        // The signature image, tagged sha256-<hex>.sig in the same repository, and Sigstore
        // bundles attached as referrers (the registry's referrers API, else the referrers tag
        // sha256-<hex>): at least one of them.
        let sig_tag = top.digest.signature_tag();
        let sig_ref = source_ref.with_tag(&sig_tag);
        let sig = self.block(self.source.resolve(&sig_ref))?;
        let referrers = self.block(self.source.referrers(
            &source_ref,
            &top.digest,
            Some(crate::trust::keyless::bundle::MEDIA_BUNDLE),
        ))?;
        let upstream_name = format!("{UPSTREAM}/{repo}");
        let bundles = match &referrers {
            Some(r) => self.copy_referrers(&source_ref, &top.digest, r, &upstream_name)?,
            None => 0,
        };
        if sig.is_none() && bundles == 0 {
            return Err(CatalogError::Unsigned {
                image: source_ref.to_string(),
                signature: sig_ref.to_string(),
                source_name: self.source.describe(),
            });
        }
        if let Some(sig) = &sig {
            let sig_bytes = self.copy_manifest(&sig_ref, sig)?;
            let sig_manifest: ImageManifest = serde_json::from_slice(&sig_bytes)
                .map_err(OciError::decode("signature manifest"))?;
            self.copy_blob(&sig_ref, &sig_manifest.config)?;
            for layer in &sig_manifest.layers {
                self.copy_blob(&sig_ref, layer)?;
            }
            self.writer
                .add_root(sig, Some(format!("{upstream_name}:{sig_tag}")));
        }
        let root_name = match (tag, &digest) {
            (Some(t), _) => format!("{upstream_name}:{t}"),
            (None, Some(d)) => format!("{upstream_name}@{d}"),
            (None, None) => upstream_name.clone(),
        };
        self.writer.add_root(&top, Some(root_name));
        self.summary.images += 1;
        Ok(Copied {
            manifests,
            reference: source_ref,
        })
    }

    /// Copies the referrers of `subject` (those whose `subject` it is) and stores an index of
    /// them at the referrers tag `sha256-<hex>`: an offline bundle has no referrers API, and
    /// the import finds them there. Returns how many were copied.
    fn copy_referrers(
        &mut self,
        source_ref: &Reference,
        subject: &crate::oci::Digest,
        referrers: &Referrers,
        upstream_name: &str,
    ) -> Result<usize, CatalogError> {
        let mut copied = Vec::new();
        for listed in referrers
            .listed
            .iter()
            .take(crate::trust::keyless::bundle::MAX_REFERRERS)
        {
            let d = &listed.descriptor;
            let bytes = self.block(self.source.manifest(source_ref, &d.digest, MAX_MANIFEST))?;
            let m = match ReferrerManifest::parse_for(&bytes, subject) {
                Ok(m) => m,
                Err(why) => {
                    tracing::warn!(
                        "{source_ref}: referrer {} listed at {} not copied: {why}",
                        d.digest,
                        referrers.location
                    );
                    continue;
                }
            };
            self.writer.add_blob(d, bytes.as_slice())?;
            self.copy_blob(source_ref, &m.config)?;
            for layer in &m.layers {
                self.copy_blob(source_ref, layer)?;
            }
            copied.push(listed.clone());
        }
        if copied.is_empty() {
            return Ok(0);
        }
        let (bytes, index) = Referrers::index_of(&copied)?;
        self.writer.add_blob(&index, bytes.as_slice())?;
        let tag = crate::oci::referrers::tag(subject);
        self.writer
            .add_root(&index, Some(format!("{upstream_name}:{tag}")));
        Ok(copied.len())
    }

    fn catalog_file(&self, image: &Copied, path: &str) -> Result<Option<String>, CatalogError> {
        let Some(m) = image.manifests.first() else {
            return Ok(None);
        };
        let source = self.source;
        let handle = self.handle.clone();
        let reference = image.reference.clone();
        let mut open = move |d: &Descriptor| -> Result<Box<dyn Read + Send>, OciError> {
            let stream = handle.block_on(source.blob(&reference, d))?;
            Ok(Box::new(SyncIoBridge::new_with_handle(
                stream,
                handle.clone(),
            )))
        };
        let bytes = read_file(
            &m.layers,
            &mut open as &mut LayerOpener<'_>,
            path,
            MAX_CATALOG_FILE,
        )?;
        bytes
            .map(|b| String::from_utf8(b).map_err(CatalogError::file(path)))
            .transpose()
    }
}

/// Bytes read go to the progress display.
impl Tally for &dyn ImportProgress {
    fn add(&mut self, n: u64) {
        self.advance(n);
    }
}
