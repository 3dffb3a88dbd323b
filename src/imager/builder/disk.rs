//! The Builder's disk images (`<platform>-<arch>.raw`, imager spec §5): the initramfs and, for
//! sd-boot and dual-boot, the disk-image UKI are built first (scratch files, not stored), then
//! the raw image is written sparsely into a scratch file on the data volume and streamed into
//! the blob store.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use crate::catalog::{ArchRelease, RelPath};
use crate::imager::boot::BootInputs;
use crate::imager::disk::sparse::stream_into_blob;
use crate::imager::disk::{OverlayInstall, write_disk_image};
use crate::imager::error::ImagerError;
use crate::imager::formats::{ConvertRequest, convert};
use crate::imager::profile::{DiskFormat, OutFormat, Profile};
use crate::imager::uki::UkiPurpose;
use crate::schematic::Bootloader;
use crate::store::BlobInfo;

use super::{BuildRequest, Builder, Stage, asset, profile_cmdline};

impl Builder {
    /// The raw disk image of `profile` (kind image).
    pub(super) fn disk_image(
        &self,
        req: &BuildRequest<'_>,
        profile: &Profile,
        assets: &ArchRelease,
        overlay: Option<&OverlayInstall>,
    ) -> Result<BlobInfo, ImagerError> {
        let opts = profile
            .output
            .image_options
            .as_ref()
            .ok_or_else(|| ImagerError::Validation("image options are required".into()))?;
        let bootloader = opts.bootloader;
        std::fs::create_dir_all(&self.opts.scratch)?;
        let scratch = tempfile::tempdir_in(&self.opts.scratch)?;
        let purpose = matches!(bootloader, Bootloader::SdBoot | Bootloader::DualBoot)
            .then_some(UkiPurpose::DiskImage);
        let (initramfs, uki) =
            self.scratch_payloads(req, profile, assets, purpose, scratch.path())?;
        let grub_modules = match bootloader {
            Bootloader::Grub | Bootloader::DualBoot => {
                Some(self.grub_modules(assets, &scratch.path().join("grub"), None)?)
            }
            _ => None,
        };
        let inputs = BootInputs {
            cmdline: profile_cmdline(profile)?,
            kernel: self.input(asset(assets, "vmlinuz")?)?,
            initramfs,
            uki,
            systemd_boot: match bootloader {
                Bootloader::SdBoot | Bootloader::DualBoot => {
                    Some(self.systemd_boot(profile, assets, scratch.path())?)
                }
                _ => None,
            },
            grub_modules,
            tools: self.tool_run(req),
            secure_boot: self.secure_boot_files(profile)?,
        };
        let raw = scratch.path().join("disk.raw");
        self.stages.report(Stage::DiskImage);
        write_disk_image(profile, &inputs, overlay, scratch.path(), &raw)?;
        let mut w = self.writer()?;
        if is_plain_raw(profile) {
            // gigabytes of (mostly zero) bytes to hash: SHA-256 on its own core
            w.hash_sha256_on_thread();
            stream_into_blob(&mut File::open(&raw)?, &mut w)
                .map_err(ImagerError::internal("store disk image"))?;
        } else {
            // Disk format (spec §5.9) and compression, streamed into the blob store.
            let req = ConvertRequest::from_profile(profile)?;
            self.stages.report(Stage::Converting);
            let mut out = BufWriter::with_capacity(1 << 20, &mut w);
            convert(&raw, &req, &self.opts.compression, &mut out)?;
            out.flush()?;
        }
        let blob = w
            .finish()
            .map_err(ImagerError::internal("store disk image"))?;
        // `scratch` (disk.raw, initramfs, UKI, GRUB tree) is removed as it drops: here, or on
        // any error above
        Ok(blob)
    }

    /// Materializes the release's GRUB module trees (`i386-pc/…`, `x86_64-efi/…`; only the
    /// platforms in `only` if given) under `dir` (hard links to the blobs where possible) for
    /// `grub-mkimage -d`.
    pub(super) fn grub_modules(
        &self,
        assets: &ArchRelease,
        dir: &Path,
        only: Option<&[&str]>,
    ) -> Result<PathBuf, ImagerError> {
        if assets.grub.is_empty() {
            return Err(ImagerError::Validation(
                "the release carries no GRUB modules (/usr/lib/grub in the imager image)".into(),
            ));
        }
        for (rel, blob) in &assets.grub {
            let platform = rel.split('/').next().unwrap_or_default();
            if only.is_some_and(|o| !o.contains(&platform)) {
                continue;
            }
            // A record naming `../x` must not write outside `dir`.
            let dest = RelPath::parse(rel)
                .map_err(ImagerError::internal("GRUB module tree"))?
                .under(dir);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let src = self.input(blob)?;
            if std::fs::hard_link(&src, &dest).is_err() {
                std::fs::copy(&src, &dest)?;
            }
        }
        Ok(dir.to_path_buf())
    }
}

/// Whether the profile asks for the raw image as is (stored sparse, no conversion).
fn is_plain_raw(profile: &Profile) -> bool {
    let disk_format = profile
        .output
        .image_options
        .as_ref()
        .map_or(DiskFormat::Raw, |o| o.disk_format);
    disk_format == DiskFormat::Raw && profile.output.out_format == OutFormat::Raw
}
