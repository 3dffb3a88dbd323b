//! The initramfs with system extensions (imager spec §3): extensions in schematic order are
//! extracted, ordered (with the lexicographic directory quirk), validated, stripped of early
//! microcode and firmware, turned into one zstd squashfs layer each, joined by the synthetic
//! `modules.dep` layer, described in `extensions.yaml`, and appended to the release's initramfs:
//!
//! ```text
//! [ newc cpio of kernel/x86/microcode/*, uncompressed ]   (only when an extension had microcode)
//! [ base initramfs bytes, unchanged ]
//! [ zstd stream of a newc cpio: 0.sqsh, 1.sqsh, …, extensions.yaml, modules.dep.sqsh, usr/lib/firmware/… ]
//! ```
//!
//! Layer order: catalog extensions in schematic order, then the virtual `schematic` extension
//! (the factory appends it last to its list), then `embedded-config` (appended by the imager),
//! then `modules.dep` (created by the imager after every input). See `docs/imager-initramfs.md`.

mod constraint;
mod cpio;
mod extension;
mod modules;
mod process;
pub mod squashfs;
mod virtual_ext;
mod yaml;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

pub use constraint::{ConstraintError, Range, check as check_constraint, parse_range, strip_v};
pub use extension::processing_order;
pub use modules::DEPMOD_CONFIG;
pub use virtual_ext::{
    EMBEDDED_CONFIG_DESCRIPTION, EMBEDDED_CONFIG_LABEL, SCHEMATIC_DESCRIPTION,
    embedded_config_extension_tar, embedded_config_manifest, schematic_extension_tar,
    schematic_manifest,
};
pub use yaml::{Compatibility, Constraint, Manifest, Metadata, extensions_yaml, manifest_yaml};

use crate::catalog::{BlobRef, ExtensionEntry, Version};
use crate::counting::Counting;
use crate::imager::quirks::{Quirk, Quirks};
use crate::io_context::{IoContext, io_err};
use crate::oci::{Digest, OciError};
use crate::store::{BlobStore, StoreError, VerifiedBlob};

/// Default zstd level of the squashfs layers and the appended cpio (upstream: 18).
pub const DEFAULT_ZSTD_LEVEL: u32 = 18;

/// Errors of the initramfs build.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// The target version is older than this builder supports.
    #[error("unsupported Talos version {0} for initramfs with extensions (need >= 1.8)")]
    Unsupported(String),
    /// An extension's `manifest.yaml` does not parse (upstream's text).
    #[error("error loading extension {dir}: error loading extension manifest: {source}")]
    ExtensionManifest {
        /// Extension directory (`0`, `1`, …).
        dir: String,
        /// The YAML error.
        #[source]
        source: serde_yaml::Error,
    },
    /// An extension directory failed to load.
    #[error("error loading extension {dir}: {message}")]
    Extension {
        /// Extension directory (`0`, `1`, …).
        dir: String,
        /// What is wrong (upstream text: `unexpected file "x"`, `extension manifest is missing`, …).
        message: String,
    },
    /// An extension's compatibility constraint refuses the target.
    #[error("error validating extension {name:?} (constraint {constraint:?}): {source}")]
    Incompatible {
        /// Extension name.
        name: String,
        /// The constraint as written.
        constraint: String,
        /// Why it does not match.
        #[source]
        source: ConstraintError,
    },
    /// A blob the build needs is not stored.
    #[error("blob {0} is not in the blob store")]
    MissingBlob(String),
    /// The base initramfs is not what Talos ships.
    #[error("base initramfs: {0}")]
    BaseInitramfs(String),
    /// A squashfs image is unusable or was not built.
    #[error("squashfs: {0}")]
    Squashfs(String),
    /// Reading a squashfs image failed.
    #[error("squashfs: {context}: {source}")]
    SquashfsRead {
        /// What was being read.
        context: String,
        /// The reader's error.
        #[source]
        source: backhand::BackhandError,
    },
    /// `depmod` is not installed.
    #[error("depmod not found: install Debian package kmod")]
    DepmodMissing,
    /// `depmod` failed.
    #[error("depmod failed: {0}")]
    Depmod(String),
    /// depmod failed, timed out or was killed.
    #[error(transparent)]
    Tool(#[from] crate::imager::tool::ToolError),
    /// Invalid input.
    #[error("{0}")]
    Invalid(String),
    /// File I/O failed.
    #[error(transparent)]
    Io(#[from] IoContext),
    /// Blob store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Layer extraction failure.
    #[error(transparent)]
    Oci(#[from] OciError),
}

/// One system extension input, in schematic order.
#[derive(Debug, Clone)]
pub enum ExtensionSource {
    /// An imported catalog extension: its `linux/<arch>` image manifest in the blob store.
    Image {
        /// Name for progress and errors (e.g. `siderolabs/iscsi-tools`).
        name: String,
        /// Digest of the platform image manifest (`ImageRecord::manifest`).
        manifest: Digest,
    },
    /// A virtual extension as an uncompressed tar (`schematic`, `embedded-config`).
    Tar {
        /// Name for progress and errors.
        name: String,
        /// The tar bytes.
        tar: Vec<u8>,
    },
}

impl ExtensionSource {
    /// The source for a catalog extension's image for `arch`, if imported.
    pub fn catalog(entry: &ExtensionEntry, arch: &str) -> Option<ExtensionSource> {
        entry.images.get(arch).map(|img| ExtensionSource::Image {
            name: entry.name.clone(),
            manifest: img.manifest.clone(),
        })
    }

    /// The name given for progress and errors.
    pub fn name(&self) -> &str {
        match self {
            ExtensionSource::Image { name, .. } | ExtensionSource::Tar { name, .. } => name,
        }
    }
}

/// Everything the build needs besides the blob store.
#[derive(Debug, Clone)]
pub struct InitramfsInputs {
    /// Target Talos version.
    pub version: Version,
    /// The release's `initramfs.xz` for the arch (zstd or xz despite the name).
    pub base: BlobRef,
    /// Extensions in schematic order (virtual ones last: `schematic`, then `embedded-config`).
    pub extensions: Vec<ExtensionSource>,
    /// Directory for temporary files (`None` = the system temp dir).
    pub scratch: Option<PathBuf>,
    /// zstd level of the squashfs layers.
    pub squashfs_level: u32,
    /// zstd level of the appended cpio.
    pub cpio_level: u32,
    /// How external tools (`depmod`) run.
    pub tools: crate::imager::tool::ToolRun,
}

impl InitramfsInputs {
    /// Inputs with the upstream compression levels and the system temp dir.
    pub fn new(version: Version, base: BlobRef, extensions: Vec<ExtensionSource>) -> Self {
        InitramfsInputs {
            version,
            base,
            extensions,
            scratch: None,
            squashfs_level: DEFAULT_ZSTD_LEVEL,
            cpio_level: DEFAULT_ZSTD_LEVEL,
            tools: crate::imager::tool::ToolRun::default(),
        }
    }
}

/// A build stage, reported through the progress callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Extracting input `index` of `count` (schematic order).
    Extracting {
        /// Input index (0-based).
        index: usize,
        /// Number of inputs.
        count: usize,
        /// Input name.
        name: String,
    },
    /// Running depmod over the merged module tree (the `modules.dep` layer follows).
    Depmod,
    /// Building the squashfs layers: `done` of `count` are finished (reported with `done` = 0
    /// before the first, then as each finishes).
    Squashing {
        /// Layers finished.
        done: usize,
        /// Layers to build.
        count: usize,
        /// Extension name of the layer that just finished (`None` at the start).
        finished: Option<String>,
    },
    /// Writing the output stream.
    Writing,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Progress::Extracting { index, count, name } => {
                write!(f, "extracting extension {}/{count} ({name})", index + 1)
            }
            Progress::Depmod => f.write_str("running depmod"),
            Progress::Squashing {
                done,
                count,
                finished: None,
            } => write!(f, "squashing layers {done}/{count}"),
            Progress::Squashing {
                done,
                count,
                finished: Some(name),
            } => write!(f, "squashing layers {done}/{count} ({name} done)"),
            Progress::Writing => f.write_str("writing the initramfs"),
        }
    }
}

/// One layer of the result.
#[derive(Debug, Clone)]
pub struct LayerReport {
    /// Layer file name (`0.sqsh`, …, `modules.dep.sqsh`).
    pub image: String,
    /// Manifest metadata as written to `extensions.yaml`.
    pub metadata: Metadata,
    /// squashfs size in bytes.
    pub size: u64,
    /// Entries of the squashfs carrying a `security.selinux` label (from the extension's PAX
    /// records).
    pub labels: usize,
}

/// What the build produced.
#[derive(Debug, Clone, Default)]
pub struct InitramfsReport {
    /// Layers in `extensions.yaml` order.
    pub layers: Vec<LayerReport>,
    /// Microcode files consumed into the early cpio (0 = no early cpio).
    pub microcode_files: usize,
    /// Firmware files moved into the initramfs tree.
    pub firmware_files: u64,
    /// Kernel version of the `modules.dep` layer, when built.
    pub modules_kver: Option<String>,
    /// Size of the early microcode cpio (0 when absent).
    pub microcode_cpio_size: u64,
    /// Total bytes written.
    pub size: u64,
}

/// Checks the external tools the build may need (`depmod`); for `image-factory doctor`.
pub fn check_tools() -> Result<PathBuf, InitramfsError> {
    modules::find_depmod()
}

/// Opens the base initramfs blob, verifying it against its BLAKE3 name while it is read.
fn open_base(blobs: &BlobStore, base: &BlobRef) -> Result<impl Read, InitramfsError> {
    let file = blobs.open_blob(&base.blake3)?;
    Ok(VerifiedBlob::new(file, &base.blake3, base.size))
}

/// Builds the initramfs for `inputs` into `out` (blocking; run it on a blocking thread).
pub fn build_initramfs<W: Write + ?Sized>(
    inputs: &InitramfsInputs,
    blobs: &BlobStore,
    out: &mut W,
    progress: &mut dyn FnMut(Progress),
) -> Result<InitramfsReport, InitramfsError> {
    let quirks = Quirks::for_version(&inputs.version);
    if !quirks.has(Quirk::UseZstdCompression) {
        return Err(InitramfsError::Unsupported(inputs.version.tag()));
    }
    let mut out = Counting::new(out);
    let mut report = InitramfsReport::default();
    if inputs.extensions.is_empty() {
        // Upstream skips the rebuild entirely without extensions.
        progress(Progress::Writing);
        io::copy(&mut open_base(blobs, &inputs.base)?, &mut out)
            .map_err(io_err("copy base initramfs"))?;
        report.size = out.count();
        return Ok(report);
    }
    let scratch_root = inputs.scratch.clone().unwrap_or_else(std::env::temp_dir);
    fs::create_dir_all(&scratch_root)
        .map_err(io_err(format!("create {}", scratch_root.display())))?;
    let tmp = tempfile::Builder::new()
        .prefix("initramfs-")
        .tempdir_in(&scratch_root)
        .map_err(io_err(format!("temp dir in {}", scratch_root.display())))?;
    let ext_root = tmp.path().join("extensions");
    let work = tmp.path().join("work");
    let scratch = tmp.path().join("scratch");
    for d in [&ext_root, &work, &scratch] {
        process::mkdirs(d)?;
    }

    // §3.3: extract into <j>, list sorted as strings, load and validate.
    let mut labels = Vec::new();
    for (j, src) in inputs.extensions.iter().enumerate() {
        progress(Progress::Extracting {
            index: j,
            count: inputs.extensions.len(),
            name: src.name().to_string(),
        });
        labels.push(extension::extract(
            src,
            blobs,
            &ext_root.join(j.to_string()),
        )?);
    }
    let mut loaded = Vec::new();
    for dir in extension::listing(&ext_root)? {
        let mut ext = extension::load(&ext_root, &dir)?;
        extension::validate(&ext, &inputs.version)?;
        if let Some(l) = dir.parse::<usize>().ok().and_then(|j| labels.get(j)) {
            // Keys relative to `rootfs/`; the root directory itself is "".
            ext.labels = l
                .iter()
                .filter_map(|(k, v)| {
                    let rel = if k == "rootfs" {
                        ""
                    } else {
                        k.strip_prefix("rootfs/")?
                    };
                    Some((rel.to_string(), v.clone()))
                })
                .collect();
        }
        tracing::info!(dir = %dir, name = %ext.manifest.metadata.name,
            version = %ext.manifest.metadata.version, author = %ext.manifest.metadata.author,
            "system extension");
        loaded.push(ext);
    }

    // §3.5: modules.dep from the base module tree and every extension's modules.
    let modules_path = quirks.kernel_modules_path();
    let mut with_modules = Vec::new();
    for ext in &loaded {
        if extension::real_dir(&ext.rootfs, modules_path)?.is_some() {
            with_modules.push(ext);
        }
    }
    if !with_modules.is_empty() {
        let depmod = modules::find_depmod()?;
        let base = open_base(blobs, &inputs.base)?;
        progress(Progress::Depmod);
        let (dep, kver) = modules::build_modules_dep(
            base,
            &with_modules,
            modules_path,
            &scratch,
            &depmod,
            &inputs.tools,
        )?;
        report.modules_kver = Some(kver);
        loaded.push(dep);
    }

    // §3.4: microcode and firmware in processing order (they append), then one squashfs per
    // extension (with the extension's SELinux labels as `security.selinux` xattrs); layers are
    // built concurrently and each compresses its data blocks on every CPU.
    let fw = quirks.firmware_path();
    for ext in &loaded {
        report.microcode_files += process::extract_microcode(&ext.rootfs, fw, &work)?;
        report.firmware_files += process::move_firmware(&ext.rootfs, fw, &work)?;
    }
    let jobs: Vec<(PathBuf, PathBuf, BTreeMap<String, String>)> = loaded
        .iter()
        .map(|ext| {
            (
                ext.rootfs.clone(),
                work.join(format!("{}.sqsh", ext.dir)),
                ext.labels.clone(),
            )
        })
        .collect();
    let count = jobs.len();
    progress(Progress::Squashing {
        done: 0,
        count,
        finished: None,
    });
    let mut done = 0;
    let sizes = squashfs::build_all(&jobs, inputs.squashfs_level, &mut |i| {
        done += 1;
        progress(Progress::Squashing {
            done,
            count,
            finished: Some(loaded[i].manifest.metadata.name.clone()),
        })
    })?;
    let mut layers = Vec::new();
    for ((ext, (rootfs, path, _)), sq) in loaded.iter().zip(&jobs).zip(sizes) {
        set_mode(path, 0o644)?;
        fs::remove_dir_all(rootfs).map_err(io_err(format!("remove {}", rootfs.display())))?;
        let image = format!("{}.sqsh", ext.dir);
        if sq.labels > 0 {
            tracing::debug!(image = %image, labels = sq.labels, "SELinux labels recorded");
        }
        layers.push((image.clone(), ext.manifest.metadata.clone()));
        report.layers.push(LayerReport {
            image,
            metadata: ext.manifest.metadata.clone(),
            size: sq.size,
            labels: sq.labels,
        });
    }

    // §3.6: extensions.yaml, then the three segments.
    let yaml_path = work.join("extensions.yaml");
    fs::write(&yaml_path, extensions_yaml(&layers)).map_err(io_err("write extensions.yaml"))?;
    set_mode(&yaml_path, 0o644)?;
    progress(Progress::Writing);
    let entries = cpio::walk(&work)?;
    let (early, rest): (Vec<&cpio::Entry>, Vec<&cpio::Entry>) = entries
        .iter()
        .partition(|e| e.rel == "kernel" || e.rel.starts_with("kernel/"));
    if !early.is_empty() {
        report.microcode_cpio_size = cpio::write_cpio(&early, &mut out)?;
    }
    io::copy(&mut open_base(blobs, &inputs.base)?, &mut out)
        .map_err(io_err("copy base initramfs"))?;
    let level = i32::try_from(inputs.cpio_level).unwrap_or(DEFAULT_ZSTD_LEVEL as i32);
    let mut enc =
        zstd::stream::write::Encoder::new(&mut out, level).map_err(io_err("zstd encoder"))?;
    enc.include_checksum(true).map_err(io_err("zstd encoder"))?;
    // libzstd's multithreaded frames are the same bytes for any worker count >= 1 (they
    // differ from the single-threaded encoder), so using every core keeps builds reproducible
    // across machines.
    let workers = squashfs::threads();
    enc.multithread(u32::try_from(workers).unwrap_or(1).max(1))
        .map_err(io_err("zstd workers"))?;
    cpio::write_cpio(&rest, &mut enc)?;
    enc.finish().map_err(io_err("zstd finish"))?;
    out.flush().map_err(io_err("flush initramfs"))?;
    report.size = out.count();
    Ok(report)
}

fn set_mode(p: &Path, mode: u32) -> Result<(), InitramfsError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {}", p.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    /// The appended cpio relies on this: multithreaded zstd output does not depend on the
    /// number of workers, so builds on machines with different core counts agree.
    #[test]
    fn multithreaded_zstd_is_independent_of_the_worker_count() {
        let mut data = Vec::with_capacity(24 << 20);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        while data.len() < 24 << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Half compressible, half not: both block kinds occur.
            data.extend_from_slice(&x.to_le_bytes());
            data.extend_from_slice(&[(x & 3) as u8; 8]);
        }
        let compress = |workers: u32| {
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 9).unwrap();
            enc.include_checksum(true).unwrap();
            enc.multithread(workers).unwrap();
            enc.write_all(&data).unwrap();
            enc.finish().unwrap()
        };
        let one = compress(1);
        assert_eq!(one, compress(2));
        assert_eq!(one, compress(4));
        assert_eq!(zstd::decode_all(one.as_slice()).unwrap(), data);
    }
}
