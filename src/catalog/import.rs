//! Release import: read a Talos release's images from a source (offline bundle or registry),
//! verify every signature, store every blob once, extract the boot assets, then publish the
//! release record — last, so an interrupted import is invisible and a re-run completes it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt as _;

use crate::io_context::io_err;
use crate::oci::flatten::{FlattenOptions, LayerOpener, TreeFile, flatten, regular_files};
use crate::oci::{Descriptor, Digest, ImageIndex, ImageManifest, ImageSource, OciError, Reference};
use crate::store::{BlobStore, PendingBlob, StoreError};
use crate::trust::{SignedIdentity, TrustPolicy, Verification};

use super::names::{Arch, RelPath};
use super::release::{ArchRelease, BlobRef, ImageRecord, Release, ReleaseStore, Signatures};
use super::{CatalogError, Version};

/// Largest manifest or index accepted from a source.
const MAX_MANIFEST: u64 = 4 << 20;
/// Blobs of one image transferred at once.
const PARALLEL_BLOBS: usize = 4;
/// Largest catalog file (`image-digests`, `descriptions.yaml`, `overlays.yaml`).
pub(super) const MAX_CATALOG_FILE: u64 = 16 << 20;
/// Boot assets every architecture must have.
const REQUIRED_ASSETS: &[&str] = &["vmlinuz", "initramfs.xz"];
/// The architecture whose imager image is read (it carries every architecture's assets).
pub(super) const IMAGER_PLATFORM: Arch = Arch::Amd64;
/// Where the imager image keeps the boot assets, one directory per architecture.
const INSTALL_DIR: &str = "usr/install";
/// Where the imager image keeps the GRUB module trees.
const GRUB_DIR: &str = "usr/lib/grub";

/// Which catalog extensions to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every extension of the catalog.
    All,
    /// Only these (by name, e.g. `siderolabs/iscsi-tools` or `iscsi-tools`).
    Only(Vec<String>),
}

/// Whether `requested` names catalog extension `name` (full `siderolabs/x` or short `x`).
pub(super) fn names(requested: &str, name: &str) -> bool {
    requested == name || name.rsplit('/').next() == Some(requested)
}

impl Selection {
    /// Whether catalog extension `name` is selected.
    pub fn wants(&self, name: &str) -> bool {
        match self {
            Selection::All => true,
            Selection::Only(list) => list.iter().any(|w| names(w, name)),
        }
    }
}

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The Talos version.
    pub version: Version,
    /// Architectures; empty means every architecture the imager image carries.
    pub arches: Vec<Arch>,
    /// Extensions to import.
    pub extensions: Selection,
    /// Registry (and optional namespace) the upstream references live under in the source:
    /// `ghcr.io` for bundles, `HOST[:PORT][/namespace]` for a registry mirror.
    pub registry: String,
}

/// Progress reporting for long imports (the CLI draws bars, the server logs).
pub trait ImportProgress: Send + Sync {
    /// A new step started (human readable).
    fn step(&self, message: &str);
    /// `bytes` more bytes are expected in total.
    fn add_total(&self, bytes: u64);
    /// `bytes` were transferred (or found already stored).
    fn advance(&self, bytes: u64);
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportSummary {
    /// The published release.
    pub release: Release,
    /// Images read and verified.
    pub images: usize,
    /// Blobs newly stored.
    pub blobs_stored: usize,
    /// Blobs already present (deduplicated).
    pub blobs_reused: usize,
    /// Bytes newly written to the blob store.
    pub bytes_stored: u64,
}

/// An image to read: its reference in the source, and the upstream repository path its
/// signature must name (`siderolabs/imager`; the source may hold it under a mirror namespace).
#[derive(Debug, Clone)]
pub(super) struct Wanted {
    pub(super) reference: Reference,
    identity: SignedIdentity,
}

impl Wanted {
    /// `repository` (upstream path, e.g. `siderolabs/imager`) under `registry` (`HOST[/ns]`),
    /// followed by `suffix` (`:tag` or `@digest`).
    pub(super) fn new(
        registry: &str,
        repository: &str,
        suffix: &str,
    ) -> Result<Wanted, CatalogError> {
        Ok(Wanted {
            reference: parse_ref(&format!("{registry}/{repository}{suffix}"))?,
            identity: SignedIdentity::repository(repository),
        })
    }
}

/// An image resolved, verified and with its platform manifest fetched, but not yet stored.
pub(super) struct Planned {
    pub(super) reference: Reference,
    top: Descriptor,
    top_bytes: Vec<u8>,
    manifest_desc: Descriptor,
    manifest_bytes: Vec<u8>,
    pub(super) manifest: ImageManifest,
}

/// Imports one release from `source`.
pub struct Importer<'a, S: ImageSource> {
    source: &'a S,
    pub(super) blobs: &'a BlobStore,
    releases: &'a ReleaseStore,
    policy: &'a TrustPolicy,
    pub(super) progress: &'a dyn ImportProgress,
    scratch: PathBuf,
    stats: Stats,
    keys: BTreeSet<String>,
    /// Blobs written but not yet durable (committed in batches, before anything reads them
    /// through the index and before the release is published).
    pending: Vec<crate::store::PendingBlob>,
    /// The extension and overlay catalog images stored so far.
    pub(super) catalogs: Vec<ImageRecord>,
}

#[derive(Default)]
struct Stats {
    images: usize,
    stored: usize,
    reused: usize,
    bytes: u64,
}

fn parse_ref(s: &str) -> Result<Reference, CatalogError> {
    s.parse::<Reference>().map_err(CatalogError::from)
}

impl<'a, S: ImageSource> Importer<'a, S> {
    /// Prepares an import; `scratch` is a directory on the data volume for temporary extraction.
    pub fn new(
        source: &'a S,
        blobs: &'a BlobStore,
        releases: &'a ReleaseStore,
        policy: &'a TrustPolicy,
        progress: &'a dyn ImportProgress,
        scratch: &Path,
    ) -> Self {
        Importer {
            source,
            blobs,
            releases,
            policy,
            progress,
            scratch: scratch.to_path_buf(),
            stats: Stats::default(),
            keys: BTreeSet::new(),
            pending: Vec::new(),
            catalogs: Vec::new(),
        }
    }

    /// Where progress is reported.
    pub(super) fn progress(&self) -> &dyn ImportProgress {
        self.progress
    }

    /// Runs the import and publishes the release.
    pub async fn run(mut self, opts: &ImportOptions) -> Result<ImportSummary, CatalogError> {
        let tag = opts.version.tag();
        let component = |name: &str| {
            Wanted::new(
                &opts.registry,
                &format!("siderolabs/{name}"),
                &format!(":{tag}"),
            )
        };

        // The imager carries the boot assets of every architecture.
        self.progress.step(&format!("reading imager {tag}"));
        let imager = self.plan(component("imager")?, IMAGER_PLATFORM).await?;
        let imager_record = self.store(&imager).await?;
        self.commit_pending().await?;
        self.progress.step("extracting boot assets");
        // `usr/install/` and `usr/lib/grub/` are all an import reads of the imager.
        let prefixes = vec![format!("{INSTALL_DIR}/"), format!("{GRUB_DIR}/")];
        let extracted = self.extract(&imager, prefixes).await?;
        let root = extracted.path();
        // Listed without following symlinks, like the boot trees (see `boot_trees`).
        let grub_files = regular_files(root, GRUB_DIR)?.unwrap_or_default();
        let install = boot_trees(root, &opts.arches, &imager.reference)?;
        let arches: Vec<Arch> = install.iter().map(|(a, _)| *a).collect();
        let grub = self.store_files(grub_files)?;
        let mut per_arch: BTreeMap<Arch, ArchRelease> = BTreeMap::new();
        for (arch, files) in install {
            let assets = self.store_files(files)?;
            for required in REQUIRED_ASSETS {
                if !assets.contains_key(*required) {
                    return Err(CatalogError::Catalog(format!(
                        "{} has no {INSTALL_DIR}/{arch}/{required}",
                        imager.reference
                    )));
                }
            }
            let grub = grub.clone();
            per_arch.insert(
                arch,
                ArchRelease {
                    imager: Some(imager_record.clone()),
                    installer_base: None,
                    assets,
                    grub,
                },
            );
        }
        // Deleting the extracted tree (hundreds of GRUB modules) takes a noticeable time on
        // ext4: let it run while the remaining images transfer.
        let cleanup = tokio::task::spawn_blocking(move || drop(extracted));

        let base_name = if opts.version.at_least(1, 10) {
            "installer-base"
        } else {
            "installer"
        };
        for arch in &arches {
            self.progress
                .step(&format!("reading {base_name} {tag} ({arch})"));
            let planned = self.plan(component(base_name)?, *arch).await?;
            let record = self.store(&planned).await?;
            if let Some(a) = per_arch.get_mut(arch) {
                a.installer_base = Some(record);
            }
        }

        self.progress
            .step(&format!("reading extensions catalog {tag}"));
        let (extensions, partial_ext) = self
            .extensions(opts, component("extensions")?, &arches)
            .await?;
        let (overlays, partial_ov) = if opts.version.at_least(1, 7) {
            self.progress
                .step(&format!("reading overlays catalog {tag}"));
            self.overlays(opts, component("overlays")?, &arches).await?
        } else {
            (Vec::new(), false)
        };

        let talosctl = self.talosctl(opts, component("talosctl-all")?).await?;

        let signatures = if self.policy.skip {
            Signatures::Skipped
        } else {
            Signatures::Verified {
                keys: self.keys.iter().cloned().collect(),
            }
        };
        let previous = self.releases.get(&tag)?;
        let imported_at = match &previous {
            Some(previous) => previous.imported_at.clone(),
            None => crate::clock::now_rfc3339(),
        };
        let mut release = Release {
            version: tag.clone(),
            imported_at,
            source: self.source.describe(),
            signatures,
            partial: partial_ext || partial_ov,
            arches: per_arch,
            extensions,
            overlays,
            catalogs: std::mem::take(&mut self.catalogs),
            talosctl,
            revision: None,
        };
        // Blobs and their index entries must be durable before the record that names them
        // (the release store's flush covers the index entries written by the commit).
        self.progress.step(&format!("publishing release {tag}"));
        self.commit_pending().await?;
        self.releases.put_imported(&mut release).await?;
        if cleanup.await.is_err() {
            tracing::warn!("removing the import's scratch directory failed");
        }
        Ok(ImportSummary {
            release,
            images: self.stats.images,
            blobs_stored: self.stats.stored,
            blobs_reused: self.stats.reused,
            bytes_stored: self.stats.bytes,
        })
    }

    /// Resolves `wanted`, verifies its signature and fetches the `linux/<arch>` manifest.
    pub(super) async fn plan(
        &mut self,
        wanted: Wanted,
        arch: Arch,
    ) -> Result<Planned, CatalogError> {
        let Wanted {
            reference,
            identity,
        } = wanted;
        let not_found = || CatalogError::ImageNotFound {
            image: reference.to_string(),
            source_name: self.source.describe(),
        };
        let top = match self.source.resolve(&reference).await {
            Ok(Some(d)) => d,
            Ok(None) | Err(OciError::NotFound(_)) => return Err(not_found()),
            Err(e) => return Err(e.into()),
        };
        let verification = self
            .policy
            .verify(self.source, &reference, &identity, &top.digest)
            .await
            .map_err(|source| CatalogError::Untrusted {
                image: reference.to_string(),
                source: Box::new(source),
            })?;
        if let Verification::Verified(by) = &verification {
            self.keys.insert(by.key_fingerprint.clone());
        }
        let top_bytes = self
            .source
            .manifest(&reference, &top.digest, MAX_MANIFEST)
            .await?;
        let (manifest_desc, manifest_bytes) = if top.is_index() {
            let index: ImageIndex =
                serde_json::from_slice(&top_bytes).map_err(OciError::decode("image index"))?;
            let desc = index.select(arch.as_str()).cloned().ok_or_else(|| {
                CatalogError::ImageNotFound {
                    image: format!("{reference} (linux/{arch})"),
                    source_name: self.source.describe(),
                }
            })?;
            let bytes = self
                .source
                .manifest(&reference, &desc.digest, MAX_MANIFEST)
                .await?;
            (desc, bytes)
        } else {
            (top.clone(), top_bytes.clone())
        };
        let manifest: ImageManifest =
            serde_json::from_slice(&manifest_bytes).map_err(OciError::decode("image manifest"))?;
        self.stats.images += 1;
        Ok(Planned {
            reference,
            top,
            top_bytes,
            manifest_desc,
            manifest_bytes,
            manifest,
        })
    }

    /// Stores the manifests, config and layers of a planned image (skipping known blobs).
    pub(super) async fn store(&mut self, p: &Planned) -> Result<ImageRecord, CatalogError> {
        let mut records = self.store_all(std::slice::from_ref(p)).await?;
        records
            .pop()
            .ok_or_else(|| CatalogError::Catalog(format!("{} was not stored", p.reference)))
    }

    /// Stores several planned images, transferring their blobs together (in parallel).
    pub(super) async fn store_all(
        &mut self,
        planned: &[Planned],
    ) -> Result<Vec<ImageRecord>, CatalogError> {
        let mut todo: Vec<(Reference, Descriptor)> = Vec::new();
        let mut records = Vec::with_capacity(planned.len());
        for p in planned {
            self.put_small(&p.top_bytes)?;
            if p.manifest_desc.digest != p.top.digest {
                self.put_small(&p.manifest_bytes)?;
            }
            let mut size = p.manifest_bytes.len() as u64;
            let blobs: Vec<&Descriptor> = std::iter::once(&p.manifest.config)
                .chain(p.manifest.layers.iter())
                .collect();
            self.progress.add_total(blobs.iter().map(|d| d.size).sum());
            for d in blobs {
                size += d.size;
                if self.known(d.digest.hex())? || todo.iter().any(|(_, t)| t.digest == d.digest) {
                    self.stats.reused += 1;
                    self.progress.advance(d.size);
                    continue;
                }
                todo.push((p.reference.clone(), d.clone()));
            }
            records.push(ImageRecord {
                reference: p.reference.to_string(),
                digest: p.top.digest.clone(),
                manifest: p.manifest_desc.digest.clone(),
                size,
            });
        }
        for pending in self.fetch_blobs(todo).await? {
            self.stats.stored += 1;
            self.stats.bytes += pending.info().size;
            self.pending.push(pending);
        }
        Ok(records)
    }

    /// Fetches `todo` into the blob store, [`PARALLEL_BLOBS`] at a time, in order. Each blob
    /// is read, verified and written by its own task, so hashing spreads over the cores while
    /// the source serves the next ones.
    async fn fetch_blobs(
        &self,
        todo: Vec<(Reference, Descriptor)>,
    ) -> Result<Vec<PendingBlob>, CatalogError> {
        let done = Arc::new(AtomicU64::new(0));
        let source = self.source;
        let fetches = todo.into_iter().map(|(reference, d)| {
            let store = self.blobs.clone();
            let done = done.clone();
            async move {
                let reader = source.blob(&reference, &d).await?;
                let sha256 = d.digest.hex().to_string();
                let pending = tokio::spawn(async move {
                    let pending = store
                        .put_verified_stream_deferred(reader, &sha256, |n| {
                            done.fetch_add(n, Ordering::Relaxed);
                        })
                        .await?;
                    // Sync while the other transfers go on, not all at commit time.
                    let synced =
                        tokio::task::spawn_blocking(move || pending.sync_data().map(|()| pending))
                            .await
                            .map_err(CatalogError::task("blob sync task"))??;
                    Ok::<_, CatalogError>(synced)
                })
                .await
                .map_err(CatalogError::task("blob transfer task"))??;
                if pending.info().size != d.size {
                    return Err(CatalogError::Oci(OciError::DigestMismatch {
                        what: format!("blob {} of {reference}", d.digest),
                        expected: format!("{} bytes", d.size),
                        actual: format!("{} bytes", pending.info().size),
                    }));
                }
                Ok::<_, CatalogError>(pending)
            }
        });
        let mut stream = futures_util::stream::iter(fetches).buffered(PARALLEL_BLOBS);
        let mut out = Vec::new();
        let mut reported = 0;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        loop {
            let next = tokio::select! {
                next = stream.next() => Some(next),
                _ = tick.tick() => None,
            };
            let now = done.load(Ordering::Relaxed);
            self.progress.advance(now - reported);
            reported = now;
            match next {
                Some(Some(result)) => out.push(result?),
                Some(None) => return Ok(out),
                None => {}
            }
        }
    }

    /// Whether a blob is stored or already written in this import.
    fn known(&self, sha256: &str) -> Result<bool, CatalogError> {
        Ok(self.pending.iter().any(|p| p.info().sha256 == sha256)
            || self.blobs.by_sha256(sha256)?.is_some())
    }

    /// Makes every pending blob durable and visible in the index.
    pub(super) async fn commit_pending(&mut self) -> Result<(), CatalogError> {
        let pending = std::mem::take(&mut self.pending);
        let blobs = self.blobs.clone();
        tokio::task::spawn_blocking(move || blobs.commit_batch(pending))
            .await
            .map_err(CatalogError::task("blob commit task"))??;
        Ok(())
    }

    fn put_small(&mut self, bytes: &[u8]) -> Result<(), CatalogError> {
        let sha = Digest::of(bytes);
        if !self.known(sha.hex())? {
            let mut w = self.blobs.writer()?;
            std::io::Write::write_all(&mut w, bytes).map_err(io_err("write manifest blob"))?;
            self.pending.push(w.finish_deferred()?);
            self.stats.stored += 1;
            self.stats.bytes += bytes.len() as u64;
        }
        Ok(())
    }

    /// Extracts the files of `image` under `prefixes` (all with none) into a scratch directory
    /// (removed when the returned guard drops).
    pub(super) async fn extract(
        &self,
        image: &Planned,
        prefixes: Vec<String>,
    ) -> Result<tempfile::TempDir, CatalogError> {
        std::fs::create_dir_all(&self.scratch).map_err(|source| StoreError::CreateDir {
            dir: self.scratch.clone(),
            source,
        })?;
        let dir = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(&self.scratch)
            .map_err(io_err(format!(
                "create a scratch directory in {}",
                self.scratch.display()
            )))?;
        let root = dir.path().to_path_buf();
        let layers = image.manifest.layers.clone();
        let blobs = self.blobs.clone();
        let opts = FlattenOptions {
            prefixes,
            ..FlattenOptions::default()
        };
        tokio::task::spawn_blocking(move || {
            let mut open = stored_layer_opener(blobs);
            flatten(&layers, &mut open as &mut LayerOpener<'_>, &root, &opts)
        })
        .await
        .map_err(CatalogError::task("image extraction task"))??;
        Ok(dir)
    }

    /// Moves the listed regular files of an extracted tree into the store, keyed by their
    /// (checked) relative path. The files are committed as one batch (two filesystem syncs
    /// instead of two per file).
    pub(super) fn store_files(
        &mut self,
        files: Vec<TreeFile>,
    ) -> Result<BTreeMap<String, BlobRef>, CatalogError> {
        let mut names = Vec::with_capacity(files.len());
        let mut pending = Vec::with_capacity(files.len());
        for f in files {
            RelPath::parse(&f.rel)?;
            // The extracted file itself becomes the blob (moved, not copied).
            pending.push(self.blobs.adopt_file(&f.path)?);
            names.push((f.rel, f.mode));
        }
        let infos = self.blobs.commit_batch(pending)?;
        Ok(names
            .into_iter()
            .zip(infos)
            .map(|((rel, mode), info)| {
                let blob = BlobRef {
                    blake3: info.blake3,
                    sha256: info.sha256,
                    size: info.size,
                    mode,
                };
                (rel, blob)
            })
            .collect())
    }
}

/// The boot-asset trees (`usr/install/<arch>`) of the extracted imager at `root`: of the
/// `wanted` architectures, or of every architecture that has a kernel when none is named.
/// They are listed without following any symlink (a layer could point them anywhere on this
/// machine): a symlink in them refuses the import.
fn boot_trees(
    root: &Path,
    wanted: &[Arch],
    imager: &Reference,
) -> Result<Vec<(Arch, Vec<TreeFile>)>, CatalogError> {
    let mut wanted = wanted.to_vec();
    wanted.sort();
    wanted.dedup();
    let candidates = if wanted.is_empty() {
        Arch::ALL.to_vec()
    } else {
        wanted.clone()
    };
    let mut install = Vec::new();
    for arch in candidates {
        let files = regular_files(root, &format!("{INSTALL_DIR}/{arch}"))?.unwrap_or_default();
        if wanted.is_empty() && !files.iter().any(|f| f.rel == "vmlinuz") {
            continue;
        }
        install.push((arch, files));
    }
    if install.is_empty() {
        return Err(CatalogError::Catalog(format!(
            "{imager} carries no {INSTALL_DIR}/<arch>/vmlinuz"
        )));
    }
    Ok(install)
}

/// Versions whose imager image a bundle names (`…/siderolabs/imager:<tag>`).
pub fn bundle_versions(layout: &crate::oci::LayoutSource) -> Vec<Version> {
    let mut out: Vec<Version> = layout
        .refs()
        .iter()
        .filter_map(|(name, _)| {
            let (repo, tag) = name.rsplit_once(':')?;
            repo.ends_with("/siderolabs/imager")
                .then(|| Version::parse_strict(tag))?
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A layer opener for [`crate::oci::flatten`] reading stored blobs by SHA-256, each verified
/// as it is read.
pub fn stored_layer_opener(
    blobs: BlobStore,
) -> impl FnMut(&Descriptor) -> Result<Box<dyn Read + Send>, OciError> {
    move |d: &Descriptor| {
        let blob = blobs
            .open_sha256(d.digest.hex(), d.size)
            .map_err(|e| OciError::Open {
                what: format!("blob {}", d.digest),
                source: Box::new(e),
            })?
            .ok_or_else(|| OciError::NotFound(format!("blob {} is not stored", d.digest)))?;
        Ok(Box::new(blob) as Box<dyn Read + Send>)
    }
}
