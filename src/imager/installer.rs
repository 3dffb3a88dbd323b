//! Installer images (imager spec §8.1): the base installer's layers plus one artifacts layer
//! under `usr/install/<arch>/`, as OCI blobs in the blob store (manifest, config, layer) and as a
//! `docker save` tarball the way go-containerregistry writes it.
//!
//! Reproducible: the artifacts tar is sorted, mode 0, uid/gid 0, mtime 0; gzip has no name and
//! mtime 0; the config's `created` is SOURCE_DATE_EPOCH (upstream uses the build time).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use crate::sha256::Sha256;
use flate2::Compression;
use serde::Serialize;

use super::SOURCE_DATE_EPOCH;
use crate::io_context::{IoContext, io_err};
use crate::oci::{
    Descriptor, Digest, ImageConfig, ImageManifest, MEDIA_OCI_CONFIG, MEDIA_OCI_LAYER_GZIP,
    MEDIA_OCI_MANIFEST, OciError, RootFs, verify::io_error_to_oci,
};
use crate::store::{BlobInfo, BlobStore, StoreError, VerifiedBlob};

/// Why an installer image cannot be built or written.
#[derive(Debug, thiserror::Error)]
pub enum InstallerError {
    /// The blob store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The base image is unusable.
    #[error("installer base image {reference}: {message}")]
    Base {
        /// Base image reference.
        reference: String,
        /// What is wrong.
        message: String,
    },
    /// The new image's config or manifest could not be encoded.
    #[error("installer base image {reference}: cannot serialise the new {what}: {source}")]
    Encode {
        /// Base image reference.
        reference: String,
        /// `config` or `manifest`.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A blob the image needs is not in the blob store.
    #[error("blob {0} is not in the blob store")]
    MissingBlob(Digest),
    /// A blob in the store does not match its descriptor.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// A feature of a later issue was requested.
    #[error("not supported yet: {0}")]
    Unsupported(String),
    /// Reading inputs or writing outputs failed.
    #[error(transparent)]
    Io(#[from] IoContext),
}

/// The boot assets an installer carries (imager spec §8.1 step 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallerArtifacts {
    /// Target ≥ 1.10, or Secure Boot: `vmlinuz.efi` (the UKI) and `systemd-boot.efi`.
    Uki {
        /// The assembled UKI file.
        uki: PathBuf,
        /// The release's `systemd-boot.efi`.
        systemd_boot: PathBuf,
        /// Secure Boot for a target before 1.10: the UKI is `vmlinuz.efi.signed`, the name
        /// those installers look for.
        signed_name: bool,
    },
    /// Target < 1.10 without Secure Boot: `vmlinuz` and `initramfs.xz`.
    Legacy {
        /// The kernel.
        kernel: PathBuf,
        /// The initramfs with extensions.
        initramfs: PathBuf,
    },
}

impl InstallerArtifacts {
    /// The layer entries (path inside the image, source file), sorted by path.
    pub fn entries(&self, arch: &str) -> Vec<(String, PathBuf)> {
        let dir = format!("usr/install/{arch}");
        let mut entries = match self {
            InstallerArtifacts::Uki {
                uki,
                systemd_boot,
                signed_name,
            } => vec![
                (format!("{dir}/systemd-boot.efi"), systemd_boot.clone()),
                (
                    format!(
                        "{dir}/vmlinuz.efi{}",
                        if *signed_name { ".signed" } else { "" }
                    ),
                    uki.clone(),
                ),
            ],
            InstallerArtifacts::Legacy { kernel, initramfs } => vec![
                (format!("{dir}/initramfs.xz"), initramfs.clone()),
                (format!("{dir}/vmlinuz"), kernel.clone()),
            ],
        };
        entries.sort();
        entries
    }
}

/// The base installer image (installer-base ≥ 1.10, legacy installer before), already imported:
/// its layer blobs must be in the blob store (looked up by SHA-256).
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// Its reference, e.g. `ghcr.io/siderolabs/installer-base:v1.10.0` (the archive's RepoTags).
    pub reference: String,
    /// Its manifest for the target architecture.
    pub manifest: ImageManifest,
    /// Its config.
    pub config: ImageConfig,
}

/// Overlay installer content for SBC overlays (imager spec §8.1 step 5): one more layer with
/// `overlay/artifacts/…`, the installer as `overlay/installers/default` and
/// `overlay/extra-options`, with their file modes (Talos' installer runs it at install time).
#[derive(Debug, Clone)]
pub struct OverlayInstaller {
    /// The overlay's regular files under `artifacts/` (target architecture), as (path relative
    /// to `artifacts/`, file, mode).
    pub artifacts: Vec<(String, PathBuf, u32)>,
    /// The installer binary and its mode.
    pub installer: (PathBuf, u32),
    /// A file holding the overlay options as YAML (`overlay/extra-options`).
    pub extra_options: PathBuf,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct InstallerInputs<'a> {
    /// The base installer image.
    pub base: &'a BaseImage,
    /// Target architecture (`amd64`, `arm64`).
    pub arch: &'a str,
    /// The boot assets for the artifacts layer.
    pub artifacts: &'a InstallerArtifacts,
    /// The overlay layer's content (SBC overlays).
    pub overlay: Option<&'a OverlayInstaller>,
    /// gzip level of the artifacts layer (go-containerregistry's default is 1, BestSpeed).
    pub gzip_level: u32,
}

/// A built installer image: every blob is in the blob store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallerImage {
    /// The OCI manifest blob.
    pub manifest: Descriptor,
    /// The OCI config blob.
    pub config: Descriptor,
    /// Layers, base first, artifacts last.
    pub layers: Vec<Descriptor>,
    /// Uncompressed digests of the layers (the config's `rootfs.diff_ids`).
    pub diff_ids: Vec<Digest>,
    /// The base image reference (RepoTags of the docker archive).
    pub base_reference: String,
}

/// The image config as go-containerregistry serialises it (field order kept).
#[derive(Serialize)]
struct ConfigFile<'a> {
    architecture: &'a str,
    created: String,
    os: &'a str,
    rootfs: &'a RootFs,
    config: &'a serde_json::Value,
}

/// A 512-byte ustar header for a regular file with fixed metadata (uid/gid 0, mtime 0).
fn file_header(path: &str, size: u64, mode: u32) -> Result<tar::Header, InstallerError> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)
        .map_err(io_err(format!("tar path {path}")))?;
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// Writes one tar entry: header, exactly `size` bytes from `data`, zero padding to 512.
fn write_entry(
    out: &mut impl Write,
    path: &str,
    mode: u32,
    size: u64,
    data: impl Read,
) -> Result<(), InstallerError> {
    let header = file_header(path, size, mode)?;
    out.write_all(header.as_bytes())
        .map_err(io_err(format!("write tar header {path}")))?;
    let copied = io::copy(&mut data.take(size), out).map_err(io_err(format!("copy {path}")))?;
    if copied != size {
        return Err(io_err(format!("copy {path}"))(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("expected {size} bytes, got {copied} (file changed while reading?)"),
        ))
        .into());
    }
    let pad = (512 - size % 512) % 512;
    out.write_all(&[0u8; 512][..pad as usize])
        .map_err(io_err(format!("pad {path}")))?;
    Ok(())
}

/// Ends a tar stream (two zero blocks, as Go's archive/tar writes).
fn finish_tar(out: &mut impl Write) -> Result<(), InstallerError> {
    out.write_all(&[0u8; 1024]).map_err(io_err("end tar"))?;
    Ok(())
}

/// A writer that hashes (SHA-256) what passes through.
struct HashingWriter<W> {
    inner: W,
    sha: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the artifacts layer (gzip'd tar, sorted, mode 0, no owner/mtime) to `out`;
/// returns the SHA-256 of the uncompressed tar (the layer's diff ID).
pub fn write_artifacts_layer(
    entries: &[(String, PathBuf)],
    gzip_level: u32,
    out: impl Write,
) -> Result<Digest, InstallerError> {
    let entries: Vec<(String, PathBuf, u32)> = entries
        .iter()
        .map(|(p, s)| (p.clone(), s.clone(), 0))
        .collect();
    write_layer(&entries, gzip_level, out)
}

/// Writes the overlay layer (imager spec §8.1 step 5) like the artifacts layer, but with the
/// files' modes (the installer must stay executable); returns its diff ID.
pub fn write_overlay_layer(
    overlay: &OverlayInstaller,
    gzip_level: u32,
    out: impl Write,
) -> Result<Digest, InstallerError> {
    let mut entries: Vec<(String, PathBuf, u32)> = overlay
        .artifacts
        .iter()
        .map(|(rel, path, mode)| (format!("overlay/artifacts/{rel}"), path.clone(), *mode))
        .collect();
    entries.push((
        "overlay/installers/default".into(),
        overlay.installer.0.clone(),
        overlay.installer.1,
    ));
    entries.push((
        "overlay/extra-options".into(),
        overlay.extra_options.clone(),
        0o644,
    ));
    write_layer(&entries, gzip_level, out)
}

/// A gzip'd tar of `entries` (path, file, mode), sorted by path; answers the diff ID.
fn write_layer(
    entries: &[(String, PathBuf, u32)],
    gzip_level: u32,
    out: impl Write,
) -> Result<Digest, InstallerError> {
    let mut sorted: Vec<&(String, PathBuf, u32)> = entries.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(out, Compression::new(gzip_level.min(9)));
    let mut tar = HashingWriter {
        inner: gz,
        sha: Sha256::new(),
    };
    for (path, source, mode) in sorted {
        let file = File::open(source).map_err(io_err(format!("open {}", source.display())))?;
        let size = file
            .metadata()
            .map_err(io_err(format!("stat {}", source.display())))?
            .len();
        write_entry(&mut tar, path, *mode & 0o7777, size, file)?;
    }
    finish_tar(&mut tar)?;
    let diff_id = tar.sha.finalize_hex();
    tar.inner
        .finish()
        .and_then(|mut w| w.flush())
        .map_err(io_err("finish gzip"))?;
    Ok(Digest::from_hex(&diff_id)?)
}

fn descriptor(media_type: &str, info: &BlobInfo) -> Result<Descriptor, InstallerError> {
    Ok(Descriptor {
        media_type: media_type.to_string(),
        digest: Digest::from_hex(&info.sha256)?,
        size: info.size,
        annotations: Default::default(),
        platform: None,
    })
}

/// Builds the installer image (imager spec §8.1 steps 1–4) into `store`: the artifacts layer,
/// the config and the OCI manifest become blobs; base layers are reused unchanged.
pub fn build_installer(
    store: &BlobStore,
    inputs: &InstallerInputs<'_>,
) -> Result<InstallerImage, InstallerError> {
    let base = inputs.base;
    let bad = |message: String| InstallerError::Base {
        reference: base.reference.clone(),
        message,
    };
    let mut layers = base.manifest.layers.clone();
    let mut diff_ids = base.config.rootfs.diff_ids.clone();
    if layers.is_empty() || layers.len() != diff_ids.len() {
        return Err(bad(format!(
            "{} layers but {} diff_ids in its config",
            layers.len(),
            diff_ids.len()
        )));
    }
    if layers.len() == 2 {
        // Legacy installer (≤ 1.9): tools + assets; the assets layer is replaced.
        layers.truncate(1);
        diff_ids.truncate(1);
    }
    for layer in &mut layers {
        if store.by_sha256(layer.digest.hex())?.is_none() {
            return Err(InstallerError::MissingBlob(layer.digest.clone()));
        }
        layer.annotations.clear();
        layer.platform = None;
    }

    let mut w = store.writer()?;
    let diff_id = write_artifacts_layer(
        &inputs.artifacts.entries(inputs.arch),
        inputs.gzip_level,
        &mut w,
    )?;
    let layer = descriptor(MEDIA_OCI_LAYER_GZIP, &w.finish()?)?;
    layers.push(layer);
    diff_ids.push(diff_id);
    if let Some(overlay) = inputs.overlay {
        let mut w = store.writer()?;
        let diff_id = write_overlay_layer(overlay, inputs.gzip_level, &mut w)?;
        layers.push(descriptor(MEDIA_OCI_LAYER_GZIP, &w.finish()?)?);
        diff_ids.push(diff_id);
    }

    let rootfs = RootFs {
        kind: "layers".into(),
        diff_ids: diff_ids.clone(),
    };
    let empty = serde_json::Value::Object(Default::default());
    let config_file = ConfigFile {
        architecture: inputs.arch,
        created: crate::clock::rfc3339_utc(SOURCE_DATE_EPOCH),
        os: "linux",
        rootfs: &rootfs,
        config: base.config.config.as_ref().unwrap_or(&empty),
    };
    let encode = |what: &'static str| {
        let reference = base.reference.clone();
        move |source| InstallerError::Encode {
            reference,
            what,
            source,
        }
    };
    let config_bytes = serde_json::to_vec(&config_file).map_err(encode("config"))?;
    let config = descriptor(MEDIA_OCI_CONFIG, &store.put_bytes(&config_bytes)?)?;

    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(MEDIA_OCI_MANIFEST.to_string()),
        config: config.clone(),
        layers: layers.clone(),
        annotations: Default::default(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(encode("manifest"))?;
    let manifest = descriptor(MEDIA_OCI_MANIFEST, &store.put_bytes(&manifest_bytes)?)?;
    Ok(InstallerImage {
        manifest,
        config,
        layers,
        diff_ids,
        base_reference: base.reference.clone(),
    })
}

/// `manifest.json` of a docker archive (go-containerregistry `tarball.Manifest`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveEntry<'a> {
    config: String,
    repo_tags: [&'a str; 1],
    layers: Vec<String>,
}

fn open_verified(store: &BlobStore, d: &Descriptor) -> Result<VerifiedBlob<File>, InstallerError> {
    store
        .open_sha256(d.digest.hex(), d.size)?
        .ok_or_else(|| InstallerError::MissingBlob(d.digest.clone()))
}

/// Copies blob `d` from `store` as tar entry `name` (mode 0644), verifying its digest.
fn copy_blob(
    store: &BlobStore,
    name: &str,
    d: &Descriptor,
    out: &mut impl Write,
) -> Result<(), InstallerError> {
    let mut reader = open_verified(store, d)?;
    let unwrap = |e: InstallerError| match e {
        InstallerError::Io(IoContext { context, source }) => {
            InstallerError::Oci(io_error_to_oci(context, source))
        }
        other => other,
    };
    write_entry(out, name, 0o644, d.size, &mut reader).map_err(unwrap)?;
    if !reader.is_verified() {
        // Reaching the end of the stream runs the final size and digest check.
        let mut probe = [0u8; 1];
        let n = reader.read(&mut probe).map_err(|e| {
            InstallerError::Oci(io_error_to_oci(format!("read blob {}", d.digest), e))
        })?;
        if n != 0 || !reader.is_verified() {
            return Err(InstallerError::Oci(OciError::DigestMismatch {
                what: format!("blob {}", d.digest),
                expected: format!("{} bytes", d.size),
                actual: "more bytes".into(),
            }));
        }
    }
    Ok(())
}

/// Streams `image` as a docker-archive tarball (`docker save` format as go-containerregistry
/// writes it) to `out`: config `sha256:<hex>`, layers `<hex>.tar.gz`, then `manifest.json`.
/// Blob contents are verified against their digests while copying.
pub fn write_docker_archive(
    store: &BlobStore,
    image: &InstallerImage,
    mut out: impl Write,
) -> Result<(), InstallerError> {
    let config_name = image.config.digest.to_string();
    copy_blob(store, &config_name, &image.config, &mut out)?;
    let mut layer_names = Vec::with_capacity(image.layers.len());
    for layer in &image.layers {
        let name = format!("{}.tar.gz", layer.digest.hex());
        if !layer_names.contains(&name) {
            copy_blob(store, &name, layer, &mut out)?;
        }
        layer_names.push(name);
    }
    let manifest = [ArchiveEntry {
        config: config_name,
        repo_tags: [image.base_reference.as_str()],
        layers: layer_names,
    }];
    let bytes = serde_json::to_vec(&manifest)
        .map_err(|e| io_err("serialise manifest.json")(io::Error::other(e)))?;
    write_entry(
        &mut out,
        "manifest.json",
        0o644,
        bytes.len() as u64,
        &bytes[..],
    )?;
    finish_tar(&mut out)?;
    out.flush().map_err(io_err("flush docker archive"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_paths_sorted() {
        let uki = InstallerArtifacts::Uki {
            uki: "u".into(),
            systemd_boot: "b".into(),
            signed_name: false,
        };
        let names: Vec<String> = uki.entries("arm64").into_iter().map(|e| e.0).collect();
        assert_eq!(
            names,
            [
                "usr/install/arm64/systemd-boot.efi",
                "usr/install/arm64/vmlinuz.efi"
            ]
        );
        let signed = InstallerArtifacts::Uki {
            uki: "u".into(),
            systemd_boot: "b".into(),
            signed_name: true,
        };
        let names: Vec<String> = signed.entries("amd64").into_iter().map(|e| e.0).collect();
        assert_eq!(
            names,
            [
                "usr/install/amd64/systemd-boot.efi",
                "usr/install/amd64/vmlinuz.efi.signed"
            ]
        );
        let legacy = InstallerArtifacts::Legacy {
            kernel: "k".into(),
            initramfs: "i".into(),
        };
        let names: Vec<String> = legacy.entries("amd64").into_iter().map(|e| e.0).collect();
        assert_eq!(
            names,
            [
                "usr/install/amd64/initramfs.xz",
                "usr/install/amd64/vmlinuz"
            ]
        );
    }
}
