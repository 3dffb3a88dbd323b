//! SBC overlays (imager spec §0.3 step 2, §1.5.2 step 4, §5.8, §8.1 step 5): the overlay image
//! (imported and verified with the release) is extracted for a build — `artifacts/`,
//! `profiles/<name>.yaml`, `installers/<name>` — with the same hostile-input-safe layer
//! extraction as extensions; its installer speaks the upstream protocol (YAML over stdio):
//!
//! * `get-options` — stdin: the schematic's `overlay.options`; stdout: `{name, kernelArgs,
//!   partitionOptions: {offset}}` (kernel args `SetAll`-ed into the command line, the offset
//!   in LBAs left free before the GPT's primary entries);
//! * `install` — stdin: `{installDisk, mountPrefix, artifactsPath, extraOptions}`; it writes
//!   into the disk image (u-boot at fixed offsets) and drops files into
//!   `<mountPrefix>/boot/EFI/`, which go to the root of the EFI partition.
//!
//! The installer is untrusted code: it only ever runs in the [`sandbox`].

pub mod sandbox;
#[cfg(test)]
mod tests;

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::catalog::ImageRecord;
use crate::imager::error::ImagerError;
use crate::imager::tool::ToolRun;
use crate::oci::{Digest, FlattenOptions, ImageManifest, LayerOpener};
use crate::store::BlobStore;
use sandbox::{SANDBOX_IMAGE, SANDBOX_OVERLAY, SANDBOX_TMP, SandboxRun, run_sandboxed};

/// Largest image manifest read.
const MANIFEST_LIMIT: u64 = 4 << 20;
/// Budget of uncompressed bytes of one overlay image (upstream's largest, Raspberry Pi
/// firmware and u-boot for every board, is well under 100 MiB).
pub const MAX_OVERLAY_BYTES: u64 = 1 << 30;
/// Largest `profiles/<name>.yaml` read.
const MAX_PROFILE: u64 = 64 << 10;
/// Most kernel arguments `get-options` may answer, and the longest one.
const MAX_KERNEL_ARGS: usize = 64;
const MAX_KERNEL_ARG_LEN: usize = 1024;
/// Largest GPT offset (`partitionOptions.offset`, LBAs) accepted: 64 MiB of 512-byte sectors.
pub const MAX_PARTITION_OFFSET: u64 = 131_072;
/// Most files and bytes an installer may drop into `<mountPrefix>/boot/EFI`.
const MAX_BOOT_FILES: usize = 4096;
const MAX_BOOT_BYTES: u64 = 256 << 20;
/// Where the mount prefix is, in the sandbox and below the run's scratch directory.
const MOUNT_PREFIX: &str = "mount";

/// An overlay image extracted for a build.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// The overlay's name (the schematic's `overlay.name`; its installer's file name).
    pub name: String,
    /// The extracted tree (`artifacts/`, `installers/`, `profiles/`).
    pub root: PathBuf,
}

/// What `get-options` answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverlayOptions {
    /// The overlay's name as the installer reports it.
    #[serde(default)]
    pub name: String,
    /// Kernel arguments for the command line.
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// Partition options.
    #[serde(default)]
    pub partition_options: PartitionOptions,
}

/// `partitionOptions` of `get-options`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PartitionOptions {
    /// LBAs left free before the GPT's primary entry array.
    #[serde(default)]
    pub offset: u64,
}

/// The part of an overlay profile (`profiles/<name>.yaml`) a schematic build takes: upstream
/// merges the profile except input, arch, platform, overlay, version, secureboot, kind,
/// outFormat and disk format/size (imager spec §1.8).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct OverlayProfile {
    /// `customization`.
    #[serde(default)]
    pub customization: OverlayCustomization,
    /// `output`.
    #[serde(default)]
    pub output: OverlayOutput,
}

/// `customization` of an overlay profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverlayCustomization {
    /// Extra kernel arguments (before the schematic's).
    #[serde(default)]
    pub extra_kernel_args: Vec<String>,
}

/// `output` of an overlay profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverlayOutput {
    /// `imageOptions`.
    #[serde(default)]
    pub image_options: OverlayImageOptions,
}

/// `output.imageOptions` of an overlay profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct OverlayImageOptions {
    /// `bootloader` (`grub` for every upstream board).
    #[serde(default)]
    pub bootloader: String,
}

/// `install`'s stdin.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct InstallOptions<'a> {
    install_disk: &'a str,
    mount_prefix: String,
    artifacts_path: String,
    extra_options: &'a serde_json::Value,
}

fn bad(name: &str, message: impl Into<String>) -> ImagerError {
    ImagerError::OverlayImage {
        name: name.to_string(),
        message: message.into(),
    }
}

/// Extracts the overlay image `image` (its manifest and layers read from `blobs`, each
/// verified) into `dest`; checks that it has `installers/<name>` as a regular file.
pub fn extract(
    blobs: &BlobStore,
    image: &ImageRecord,
    name: &str,
    dest: &Path,
) -> Result<Overlay, ImagerError> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(bad(name, "the overlay name is not a file name"));
    }
    let bytes = blobs
        .read_sha256(image.manifest.hex(), MANIFEST_LIMIT)?
        .ok_or_else(|| bad(name, format!("manifest {} is not stored", image.manifest)))?;
    if Digest::of(&bytes) != image.manifest {
        return Err(bad(
            name,
            format!(
                "stored manifest {} does not match its digest",
                image.manifest
            ),
        ));
    }
    let m: ImageManifest = serde_json::from_slice(&bytes)
        .map_err(|e| bad(name, format!("image manifest {}: {e}", image.manifest)))?;
    let mut open = crate::catalog::stored_layer_opener(blobs.clone());
    let opts = FlattenOptions {
        max_total_bytes: MAX_OVERLAY_BYTES,
        ..FlattenOptions::default()
    };
    crate::oci::flatten(&m.layers, &mut open as &mut LayerOpener<'_>, dest, &opts)
        .map_err(ImagerError::internal("extract the overlay image"))?;
    let installers = crate::oci::regular_files(dest, "installers")
        .map_err(ImagerError::internal("overlay installers"))?
        .unwrap_or_default();
    if !installers
        .iter()
        .any(|f| f.rel == name && f.mode & 0o111 != 0)
    {
        return Err(bad(
            name,
            format!("the image has no executable installers/{name}"),
        ));
    }
    Ok(Overlay {
        name: name.to_string(),
        root: dest.to_path_buf(),
    })
}

impl Overlay {
    /// The installer's path in the sandbox.
    fn installer(&self) -> String {
        format!("{SANDBOX_OVERLAY}/installers/{}", self.name)
    }

    /// `profiles/<name>.yaml`, if the image has it (a regular file, bounded).
    pub fn profile(&self) -> Result<Option<OverlayProfile>, ImagerError> {
        let files = crate::oci::regular_files(&self.root, "profiles")
            .map_err(ImagerError::internal("overlay profiles"))?
            .unwrap_or_default();
        let want = format!("{}.yaml", self.name);
        let Some(file) = files.iter().find(|f| f.rel == want) else {
            return Ok(None);
        };
        let mut text = String::new();
        std::fs::File::open(&file.path)?
            .take(MAX_PROFILE + 1)
            .read_to_string(&mut text)?;
        if text.len() as u64 > MAX_PROFILE {
            return Err(bad(
                &self.name,
                format!("profiles/{want} is larger than {MAX_PROFILE} bytes"),
            ));
        }
        serde_yaml::from_str(&text)
            .map(Some)
            .map_err(|e| bad(&self.name, format!("profiles/{want}: {e}")))
    }

    /// Runs `get-options` with the schematic's `options` (sandboxed, in `work`).
    pub fn get_options(
        &self,
        tools: &ToolRun,
        options: &serde_json::Value,
        work: &Path,
    ) -> Result<OverlayOptions, ImagerError> {
        let stdin = options_yaml(options).map_err(|e| bad(&self.name, e))?;
        let run = SandboxRun {
            name: &self.name,
            overlay: &self.root,
            work,
            image: None,
            argv: vec![self.installer(), "get-options".into()],
            stdin: stdin.into_bytes(),
            file_size_limit: 1 << 20,
        };
        let out = run_sandboxed(tools, &run)?;
        let text = String::from_utf8(out)
            .map_err(|_| bad(&self.name, "get-options answered something not UTF-8"))?;
        let opts: OverlayOptions = serde_yaml::from_str(&text)
            .map_err(|e| bad(&self.name, format!("get-options answered: {e}")))?;
        if opts.kernel_args.len() > MAX_KERNEL_ARGS
            || opts
                .kernel_args
                .iter()
                .any(|a| a.len() > MAX_KERNEL_ARG_LEN || a.chars().any(char::is_whitespace))
        {
            return Err(bad(
                &self.name,
                format!(
                    "get-options answered more than {MAX_KERNEL_ARGS} kernel arguments, one \
                     longer than {MAX_KERNEL_ARG_LEN} bytes or one with white space"
                ),
            ));
        }
        if opts.partition_options.offset > MAX_PARTITION_OFFSET {
            return Err(bad(
                &self.name,
                format!(
                    "get-options answered a partition offset of {} LBAs (at most {MAX_PARTITION_OFFSET})",
                    opts.partition_options.offset
                ),
            ));
        }
        Ok(opts)
    }

    /// Runs `install` on the disk image `disk` (sandboxed, in `work`); answers the files it
    /// dropped into `<mountPrefix>/boot/EFI/` as (path in the EFI partition, host file).
    pub fn install(
        &self,
        tools: &ToolRun,
        options: &serde_json::Value,
        disk: &Path,
        work: &Path,
    ) -> Result<Vec<(String, PathBuf)>, ImagerError> {
        let size = std::fs::metadata(disk)?.len();
        std::fs::create_dir_all(work.join(MOUNT_PREFIX))?;
        let stdin = serde_yaml::to_string(&InstallOptions {
            install_disk: SANDBOX_IMAGE,
            mount_prefix: format!("{SANDBOX_TMP}/{MOUNT_PREFIX}"),
            artifacts_path: format!("{SANDBOX_OVERLAY}/artifacts"),
            extra_options: options,
        })
        .map_err(|e| bad(&self.name, format!("install options: {e}")))?;
        let run = SandboxRun {
            name: &self.name,
            overlay: &self.root,
            work,
            image: Some(disk),
            argv: vec![self.installer(), "install".into()],
            stdin: stdin.into_bytes(),
            file_size_limit: size,
        };
        run_sandboxed(tools, &run)?;
        let after = std::fs::metadata(disk)?.len();
        if after != size {
            return Err(bad(
                &self.name,
                format!("install changed the disk image's size ({size} → {after} bytes)"),
            ));
        }
        let files = crate::oci::regular_files(work, &format!("{MOUNT_PREFIX}/boot/EFI"))
            .map_err(ImagerError::internal("overlay boot files"))?
            .unwrap_or_default();
        let mut total = 0u64;
        let mut out = Vec::new();
        for f in files {
            total += std::fs::metadata(&f.path)?.len();
            if out.len() >= MAX_BOOT_FILES || total > MAX_BOOT_BYTES {
                return Err(bad(
                    &self.name,
                    format!(
                        "install dropped more than {MAX_BOOT_FILES} boot files or \
                         {MAX_BOOT_BYTES} bytes"
                    ),
                ));
            }
            out.push((f.rel, f.path));
        }
        Ok(out)
    }
}

/// The schematic's `overlay.options` as the YAML document the installer reads (`{}` when
/// there are none).
pub fn options_yaml(options: &serde_json::Value) -> Result<String, String> {
    match options {
        serde_json::Value::Null => Ok("{}\n".into()),
        serde_json::Value::Object(m) if m.is_empty() => Ok("{}\n".into()),
        other => serde_yaml::to_string(other).map_err(|e| format!("overlay options: {e}")),
    }
}
