//! The Builder's SBC overlay steps (imager spec §0.3 step 2, §1.5.2 step 4, §5.8, §8.1 step
//! 5): the overlay image for this host's architecture is extracted and its installer asked
//! for its options (sandboxed); installers also get the overlay image of their target
//! architecture as one more layer.

use std::path::Path;

use crate::catalog::Arch;
use crate::imager::disk::OverlayInstall;
use crate::imager::error::ImagerError;
use crate::imager::installer::OverlayInstaller;
use crate::imager::overlay::{self, Overlay};
use crate::imager::profile::{OutputKind, Profile, ProfileOverlay};

use super::{BuildRequest, Builder};

/// The architecture this appliance runs on: the overlay installer of that architecture is
/// the one executed (upstream's installers are static binaries for the host).
pub fn host_arch() -> Option<Arch> {
    match std::env::consts::ARCH {
        "x86_64" => Some(Arch::Amd64),
        "aarch64" => Some(Arch::Arm64),
        _ => None,
    }
}

/// Extracts `po`'s image for `arch` into `dest`.
fn extract_for(
    builder: &Builder,
    po: &ProfileOverlay,
    arch: Arch,
    why: &str,
    dest: &Path,
) -> Result<Overlay, ImagerError> {
    let image = po
        .entry
        .images
        .get(&arch)
        .ok_or_else(|| ImagerError::OverlayImage {
            name: po.entry.name.clone(),
            message: format!(
                "its {arch} image ({}) was not imported with the release ({why})",
                po.entry.reference,
                arch = arch.as_str()
            ),
        })?;
    overlay::extract(&builder.blobs, image, &po.entry.name, dest)
}

impl Builder {
    /// For a profile with an overlay: extracts the overlay image for this host under `dir`,
    /// takes its profile's extra kernel arguments (disk images), runs `get-options` and puts
    /// its kernel arguments and GPT offset into the profile. Answers the overlay for the disk
    /// image's `install` step; `None` without an overlay.
    pub(super) fn prepare_overlay(
        &self,
        req: &BuildRequest<'_>,
        profile: &mut Profile,
        dir: &Path,
    ) -> Result<Option<OverlayInstall>, ImagerError> {
        let Some(po) = profile.overlay.as_ref() else {
            return Ok(None);
        };
        let host = host_arch().ok_or_else(|| ImagerError::OverlayImage {
            name: po.entry.name.clone(),
            message: format!(
                "its installer cannot run on this host's architecture ({})",
                std::env::consts::ARCH
            ),
        })?;
        let overlay = extract_for(self, po, host, "its installer runs here", &dir.join("host"))?;
        if let Some(p) = overlay.profile()? {
            let wanted = p.output.image_options.bootloader;
            if !wanted.is_empty() && wanted != "grub" {
                tracing::warn!(
                    overlay = %overlay.name,
                    bootloader = %wanted,
                    "the overlay's profile asks for a bootloader other than grub; overlay disk \
                     images are built with grub unless the schematic chooses"
                );
            }
            if profile.output.kind == OutputKind::Image
                && !p.customization.extra_kernel_args.is_empty()
            {
                let mut args = p.customization.extra_kernel_args;
                args.append(&mut profile.customization.extra_kernel_args);
                profile.customization.extra_kernel_args = args;
            }
        }
        let options = po.options.clone();
        let answered =
            overlay.get_options(&self.tool_run(req), &options, &dir.join("get-options"))?;
        tracing::debug!(overlay = %overlay.name, ?answered, "overlay get-options");
        if let Some(po) = profile.overlay.as_mut() {
            po.kernel_args = answered.kernel_args;
            po.partition_offset = answered.partition_options.offset;
        }
        Ok(Some(OverlayInstall { overlay, options }))
    }

    /// The overlay layer of an installer image: the overlay image for the installer's
    /// architecture, extracted under `dir`; `None` without an overlay.
    pub(super) fn overlay_installer(
        &self,
        profile: &Profile,
        dir: &Path,
    ) -> Result<Option<OverlayInstaller>, ImagerError> {
        let Some(po) = profile.overlay.as_ref() else {
            return Ok(None);
        };
        let target = extract_for(
            self,
            po,
            profile.arch,
            "installers carry it",
            &dir.join("target"),
        )?;
        let artifacts = crate::oci::regular_files(&target.root, "artifacts")
            .map_err(ImagerError::internal("overlay artifacts"))?
            .unwrap_or_default()
            .into_iter()
            .map(|f| (f.rel, f.path, f.mode))
            .collect();
        let installer = crate::oci::regular_files(&target.root, "installers")
            .map_err(ImagerError::internal("overlay installers"))?
            .unwrap_or_default()
            .into_iter()
            .find(|f| f.rel == target.name)
            .ok_or_else(|| ImagerError::OverlayImage {
                name: target.name.clone(),
                message: format!("the image has no installers/{}", target.name),
            })?;
        let extra_options = dir.join("extra-options");
        std::fs::write(
            &extra_options,
            overlay::options_yaml(&po.options).map_err(|e| ImagerError::OverlayImage {
                name: target.name.clone(),
                message: e,
            })?,
        )?;
        Ok(Some(OverlayInstaller {
            artifacts,
            installer: (installer.path, installer.mode),
            extra_options,
        }))
    }
}
