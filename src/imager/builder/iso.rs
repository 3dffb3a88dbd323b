//! The Builder's ISOs (`<platform>-<arch>.iso`, imager spec §6): the initramfs and, for the
//! UEFI side of hybrid and UEFI-only ISOs, the ISO UKI (profiles `main` + `reset`) are built
//! first; the ISO is written by `xorriso` into a scratch file on the data volume and streamed
//! into the blob store.

use std::fs::File;

use crate::catalog::ArchRelease;
use crate::imager::cmdline::kernel_cmdline;
use crate::imager::disk::sparse::stream_into_blob;
use crate::imager::error::ImagerError;
use crate::imager::iso::{IsoInputs, IsoKind, write_iso};
use crate::imager::profile::Profile;
use crate::imager::uki::UkiPurpose;
use crate::store::BlobInfo;

use super::{BuildRequest, Builder, asset, internal};

impl Builder {
    /// The ISO of `profile` (kind iso).
    pub(super) fn iso(
        &self,
        req: &BuildRequest<'_>,
        profile: &Profile,
        assets: &ArchRelease,
        intermediates: &mut Vec<BlobInfo>,
    ) -> Result<BlobInfo, ImagerError> {
        if profile.secureboot {
            return Err(ImagerError::Validation(
                "SecureBoot ISOs are not built by this appliance yet".into(),
            ));
        }
        let kind = IsoKind::of(profile)?;
        let initramfs = self.initramfs(req, profile, assets)?;
        intermediates.push(initramfs.clone());
        let (uki, systemd_boot) = if kind.has_uki() {
            let uki = self.uki_with(profile, assets, UkiPurpose::Iso, &initramfs)?;
            intermediates.push(uki.clone());
            (
                Some(self.blobs.path(&uki.blake3)),
                Some(self.blobs.path(&asset(assets, "systemd-boot.efi")?.blake3)),
            )
        } else {
            (None, None)
        };
        std::fs::create_dir_all(&self.opts.scratch)?;
        let scratch = tempfile::tempdir_in(&self.opts.scratch)?;
        let grub_modules = if kind.has_bios() || !kind.has_uki() {
            Some(self.grub_modules(assets, &scratch.path().join("grub"))?)
        } else {
            None
        };
        let inputs = IsoInputs {
            cmdline: kernel_cmdline(profile, &[])?,
            kernel: self.blobs.path(&asset(assets, "vmlinuz")?.blake3),
            initramfs: self.blobs.path(&initramfs.blake3),
            uki,
            systemd_boot,
            grub_modules,
        };
        let out = scratch.path().join("image.iso");
        write_iso(profile, &inputs, scratch.path(), &out)?;
        let mut w = self.writer()?;
        stream_into_blob(&mut File::open(&out)?, &mut w).map_err(|e| internal("store ISO", e))?;
        w.finish().map_err(|e| internal("store ISO", e))
    }
}
