//! A whole raw disk image (imager spec §5.1): sparse file → GPT → EFI (FAT32) → BOOT (XFS) →
//! GRUB BIOS boot code → META. Everything is written into one sparse file; nothing holds the
//! disk in memory.

use std::fs::File;
use std::path::Path;

use super::fat::{EspFile, write_esp};
use super::grub::{BIOS_MODULES, embed_bios_boot, grub_cfg, mkimage};
use super::layout::{LayoutRequest, create_sparse_disk, write_layout};
use super::meta::write_profile_meta;
use super::sparse::copy_into;
use super::xfs::{XfsFeatures, XfsFile, grub_version, mkfs_xfs, protofile};
use super::{DiskLayout, guid::guid_from_label};
use crate::imager::boot::{BootInputs, required};
use crate::imager::error::ImagerError;
use crate::imager::overlay::Overlay;
use crate::imager::profile::{Arch, Profile};
use crate::schematic::Bootloader;

/// What a missing input's error calls the image being built.
const MEDIUM: &str = "disk image";

/// An overlay whose installer's `install` step writes into a GRUB disk image.
#[derive(Debug, Clone)]
pub struct OverlayInstall {
    /// The extracted overlay (host architecture: its installer runs here).
    pub overlay: Overlay,
    /// The schematic's `overlay.options` (`extraOptions`).
    pub options: serde_json::Value,
}

/// `loader/loader.conf` of disk images (§5.4, 41 bytes).
pub const LOADER_CONF: &str = "# systemd-boot configuration\n\ntimeout 10\n";

/// The removable-media loader name for `arch`.
pub fn efi_boot_name(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "BOOTX64.efi",
        Arch::Arm64 => "BOOTAA64.efi",
    }
}

/// The GRUB EFI platform for `arch`.
pub fn grub_efi_platform(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "x86_64-efi",
        Arch::Arm64 => "arm64-efi",
    }
}

/// Writes the raw disk image of `profile` (kind image, output defaults applied) to `out`,
/// using `scratch` (an empty directory on the same volume) for the BOOT filesystem and GRUB
/// images. With `overlay`, a GRUB image runs the overlay's `install` (sandboxed) before the
/// GPT is written, as upstream does while it prepares the boot partitions (imager spec §5.8):
/// what it writes into the disk must lie outside the GPT structures, and the files it drops
/// into `<mountPrefix>/boot/EFI/` go to the root of the EFI partition. Returns the layout.
pub fn write_disk_image(
    profile: &Profile,
    inputs: &BootInputs,
    overlay: Option<&OverlayInstall>,
    scratch: &Path,
    out: &Path,
) -> Result<DiskLayout, ImagerError> {
    let req = LayoutRequest::from_profile(profile)?;
    let mut disk = create_sparse_disk(out, req.total_disk_size())?;
    let overlay_files = match overlay {
        Some(o) if req.bootloader == Bootloader::Grub => {
            disk.sync_all()?;
            o.overlay.install(
                &inputs.tools,
                &o.options,
                out,
                &scratch.join("overlay-install"),
            )?
        }
        _ => Vec::new(),
    };
    let layout = write_layout(&mut disk, &req)?;
    let sector = layout.sector_size();
    let version = profile.version.tag();
    let arch = profile.arch;

    // EFI
    let efi = layout
        .partition("EFI")
        .ok_or_else(|| ImagerError::Inconsistent("the layout has no EFI partition".into()))?;
    let loader = format!("EFI/boot/{}", efi_boot_name(arch));
    let esp = match req.bootloader {
        Bootloader::SdBoot | Bootloader::DualBoot => {
            let mut files = vec![
                EspFile::file(
                    &loader,
                    required(MEDIUM, "systemd-boot", &inputs.systemd_boot)?.clone(),
                ),
                EspFile::file(
                    &format!("EFI/Linux/Talos-{version}.efi"),
                    required(MEDIUM, "the UKI", &inputs.uki)?.clone(),
                ),
            ];
            // Secure Boot with enrolment (imager >= 1.14, §5.4): the mode in loader.conf and
            // the PK/KEK/db lists systemd-boot enrols in setup mode.
            match inputs.secure_boot.as_ref().filter(|sb| sb.enroll != "off") {
                Some(sb) => {
                    files.push(EspFile::bytes(
                        "loader/loader.conf",
                        format!("{LOADER_CONF}\nsecure-boot-enroll {}\n", sb.enroll),
                    ));
                    for (name, bytes) in &sb.auth {
                        files.push(EspFile::bytes(
                            &format!("loader/keys/auto/{name}"),
                            bytes.clone(),
                        ));
                    }
                }
                None => files.push(EspFile::bytes("loader/loader.conf", LOADER_CONF)),
            }
            files
        }
        Bootloader::Grub => {
            let modules = required(MEDIUM, "the GRUB modules", &inputs.grub_modules)?;
            let image = scratch.join("grub-efi.img");
            mkimage(
                &modules.join(grub_efi_platform(arch)),
                grub_efi_platform(arch),
                &image,
                &[],
                true,
                &inputs.tools,
            )?;
            let mut files = vec![EspFile::file(&loader, image)];
            files.extend(
                overlay_files
                    .into_iter()
                    .map(|(path, source)| EspFile::file(&path, source)),
            );
            files
        }
        Bootloader::None => {
            return Err(ImagerError::Validation(
                "bootloader must be set for image output".into(),
            ));
        }
    };
    write_esp(&mut disk, efi, sector, &esp)?;

    // BOOT (GRUB modes)
    if let Some(boot) = layout.partition("BOOT") {
        let cfg = scratch.join("grub.cfg");
        let reset = profile
            .quirks()
            .has(crate::imager::quirks::Quirk::SupportsResetGrubOption);
        std::fs::write(&cfg, grub_cfg(&version, &inputs.cmdline, reset))?;
        let files = [
            XfsFile {
                path: "A/vmlinuz".into(),
                source: inputs.kernel.clone(),
                mode: 0o644,
            },
            XfsFile {
                path: "A/initramfs.xz".into(),
                source: inputs.initramfs.clone(),
                mode: 0o644,
            },
            XfsFile {
                path: "grub/grub.cfg".into(),
                source: cfg,
                mode: 0o600,
            },
        ];
        let proto = scratch.join("BOOT.proto");
        std::fs::write(&proto, protofile(&files, &[("grub", 0o700)])?)?;
        let image = scratch.join("BOOT.img");
        let modules = required(MEDIUM, "the GRUB modules", &inputs.grub_modules)?;
        let modinfo = ["i386-pc", grub_efi_platform(arch)]
            .iter()
            .find_map(|p| std::fs::read_to_string(modules.join(p).join("modinfo.sh")).ok());
        let grub = modinfo.as_deref().and_then(grub_version);
        let features = XfsFeatures::for_config(profile.quirks().xfs_mkfs_config(), grub);
        tracing::debug!(?grub, ?features, "BOOT: XFS features");
        mkfs_xfs(
            &image,
            boot.size,
            sector,
            features,
            "BOOT",
            guid_from_label("BOOT"),
            &proto,
            &inputs.tools,
        )?;
        copy_into(&mut File::open(&image)?, &mut disk, boot.offset)?;
        std::fs::remove_file(&image)?;
    }

    // GRUB BIOS boot code (amd64)
    if layout.embeds_bios_boot_code() {
        let modules = required(MEDIUM, "the GRUB modules", &inputs.grub_modules)?.join("i386-pc");
        let core = scratch.join("core.img");
        mkimage(
            &modules,
            "i386-pc",
            &core,
            BIOS_MODULES,
            false,
            &inputs.tools,
        )?;
        let boot_img = std::fs::read(modules.join("boot.img"))?;
        embed_bios_boot(&mut disk, &layout, &boot_img, &std::fs::read(&core)?)?;
    }

    write_profile_meta(&mut disk, &layout, profile)?;
    disk.sync_all()?;
    Ok(layout)
}
