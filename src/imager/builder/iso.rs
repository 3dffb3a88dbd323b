//! The Builder's ISOs (`<platform>-<arch>.iso`, imager spec §6): the initramfs and, for the
//! UEFI side of hybrid and UEFI-only ISOs, the ISO UKI (profiles `main` + `reset`) are built
//! into the scratch directory (inputs, not stored) while a second thread stages the release's
//! GRUB trees and runs `grub-mkimage`; then `xorriso` writes the ISO into the blob store's
//! temporary directory, where it is hashed and committed in place once xorriso has finished
//! (no scratch copy streamed into a second file).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::catalog::ArchRelease;
use crate::imager::boot::BootInputs;
use crate::imager::cmdline::kernel_cmdline;
use crate::imager::disk::image::grub_efi_platform;
use crate::imager::error::ImagerError;
use crate::imager::iso::{IsoGrub, IsoKind, prepare_grub, write_iso};
use crate::imager::profile::Profile;
use crate::imager::uki::UkiPurpose;
use crate::store::BlobInfo;

use super::{BuildRequest, Builder, Stage, asset};

impl Builder {
    /// The ISO of `profile` (kind iso).
    pub(super) fn iso(
        &self,
        req: &BuildRequest<'_>,
        profile: &Profile,
        assets: &ArchRelease,
    ) -> Result<BlobInfo, ImagerError> {
        let started = Instant::now();
        let kind = IsoKind::of(profile)?;
        std::fs::create_dir_all(&self.opts.scratch)?;
        let scratch = tempfile::tempdir_in(&self.opts.scratch)?;
        let grub_dir = scratch.path().join("grub");
        let uses_grub = kind.has_bios() || !kind.has_uki();
        // GRUB's trees and images need nothing from the initramfs or the UKI: built meanwhile.
        let (grub, built) = std::thread::scope(|s| {
            let grub = uses_grub.then(|| {
                s.spawn(|| -> Result<(PathBuf, IsoGrub), ImagerError> {
                    let t = Instant::now();
                    // UKI kinds boot UEFI through systemd-boot: GRUB's BIOS tree only.
                    let efi = grub_efi_platform(profile.arch);
                    let arches: &[&str] = if kind.has_uki() {
                        &["i386-pc"]
                    } else {
                        &["i386-pc", efi]
                    };
                    let modules = self.grub_modules(assets, &grub_dir, Some(arches))?;
                    let images =
                        prepare_grub(profile, &modules, scratch.path(), &self.tool_run(req))?;
                    tracing::debug!(ms = t.elapsed().as_millis() as u64, "ISO: GRUB images");
                    Ok((modules, images))
                })
            });
            let built = self.iso_payloads(req, profile, assets, kind, scratch.path());
            let grub = grub.map(|h| {
                h.join()
                    .map_err(|_| ImagerError::Inconsistent("ISO: the GRUB thread panicked".into()))
            });
            (grub, built)
        });
        let (initramfs, uki, systemd_boot) = built?;
        let (grub_modules, grub) = match grub {
            Some(g) => {
                let (modules, images) = g??;
                (Some(modules), Some(images))
            }
            None => (None, None),
        };
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "ISO: initramfs, UKI and GRUB ready"
        );
        let inputs = BootInputs {
            cmdline: kernel_cmdline(profile, &[])?,
            kernel: self.input(asset(assets, "vmlinuz")?)?,
            initramfs,
            uki,
            systemd_boot,
            grub_modules,
            tools: self.tool_run(req),
            secure_boot: self.secure_boot_files(profile)?,
        };
        // xorriso writes straight into the store's temporary directory; the finished file is
        // then hashed and renamed into the store: no copy, no second write.
        let tmp = self.blobs.temp_path();
        let t = Instant::now();
        self.stages.report(Stage::Iso);
        let stored = write_iso(profile, &inputs, grub, scratch.path(), &tmp).and_then(|_| {
            self.blobs
                .adopt_file(&tmp)
                .and_then(|pending| self.blobs.commit_one(pending))
                .map_err(ImagerError::internal("store ISO"))
        });
        if stored.is_err() {
            // whatever xorriso left (a failed run, or a file that could not be stored)
            let _ = std::fs::remove_file(&tmp);
        }
        let blob = stored?;
        tracing::debug!(
            write_and_store_ms = t.elapsed().as_millis() as u64,
            ms = started.elapsed().as_millis() as u64,
            "ISO: stored"
        );
        // `scratch` (GRUB tree, boot images, initramfs, UKI) is removed as it drops: here, or
        // on any error above
        Ok(blob)
    }

    /// The initramfs and, for UKI layouts, the ISO UKI (scratch files under `dir`, see
    /// [`Builder::scratch_payloads`]) and the release's systemd-boot path.
    fn iso_payloads(
        &self,
        req: &BuildRequest<'_>,
        profile: &Profile,
        assets: &ArchRelease,
        kind: IsoKind,
        dir: &Path,
    ) -> Result<(PathBuf, Option<PathBuf>, Option<PathBuf>), ImagerError> {
        let purpose = kind.has_uki().then_some(UkiPurpose::Iso);
        let (initramfs, uki) = self.scratch_payloads(req, profile, assets, purpose, dir)?;
        let systemd_boot = match uki {
            Some(_) => Some(self.systemd_boot(profile, assets, dir)?),
            None => None,
        };
        Ok((initramfs, uki, systemd_boot))
    }
}
