//! GRUB on ISOs (imager spec §6.2, §6.4): `boot/grub/grub.cfg`, the BIOS El Torito core image
//! (`grub-mkimage -O i386-pc-eltorito`, prefix `/boot/grub`) with GRUB's hybrid MBR code
//! (`boot_hybrid.img`), and for GRUB-only ISOs the EFI image of the target's architecture
//! (`x86_64-efi` or `arm64-efi`) that finds the ISO by its fixed UUID. What `grub-mkrescue` builds, without its temp tree or wall-clock UUID.

use std::path::{Path, PathBuf};

use crate::imager::disk::grub::{MODULES, MkImage, mkimage_with, quote};
use crate::imager::error::ImagerError;
use crate::imager::tool::ToolRun;

/// Where the BIOS core image lives in the ISO.
pub const ELTORITO_PATH: &str = "boot/grub/i386-pc/eltorito.img";
/// GRUB's prefix on the ISO.
pub const ISO_PREFIX: &str = "/boot/grub";

/// The BIOS boot pieces: the El Torito core image and the hybrid MBR code.
#[derive(Debug, Clone)]
pub struct BiosBoot {
    /// `eltorito.img` (in the scratch directory).
    pub eltorito: PathBuf,
    /// The release's `i386-pc/boot_hybrid.img` (`--grub2-mbr`).
    pub boot_hybrid: PathBuf,
}

/// `boot/grub/grub.cfg` of an ISO (§6.2): tab-indented entries `Talos ISO` and, when the
/// target supports it, `Reset Talos installation`.
pub fn iso_grub_cfg(cmdline: &str, reset_entry: bool) -> String {
    let q = quote(cmdline);
    let entry = |name: &str, extra: &str| {
        format!(
            "menuentry \"{name}\" {{\n\tset gfxmode=auto\n\tset gfxpayload=text\n\t\
             linux /boot/vmlinuz {q}{extra}\n\tinitrd /boot/initramfs.xz\n}}\n"
        )
    };
    let mut s = String::from(
        "set default=0\nset timeout=3\n\ninsmod all_video\n\n\
         terminal_input console\nterminal_output console\n\n",
    );
    s.push_str(&entry("Talos ISO", ""));
    if reset_entry {
        s.push('\n');
        s.push_str(&entry(
            "Reset Talos installation",
            " talos.experimental.wipe=system",
        ));
    }
    s
}

/// Modules of the ISO core images: the disk set plus the CD filesystem and partition maps.
fn iso_modules(extra: &[&'static str]) -> Vec<&'static str> {
    let mut m: Vec<&'static str> = MODULES.to_vec();
    m.extend(["iso9660", "part_msdos"]);
    m.extend(extra);
    m
}

/// Builds `eltorito.img` from the release's `i386-pc` tree into `scratch`.
pub fn bios_boot(i386_pc: &Path, scratch: &Path, run: &ToolRun) -> Result<BiosBoot, ImagerError> {
    let eltorito = scratch.join("eltorito.img");
    let modules = iso_modules(&["biosdisk"]);
    mkimage_with(&MkImage {
        modules_dir: i386_pc,
        format: "i386-pc-eltorito",
        prefix: ISO_PREFIX,
        modules: &modules,
        config: None,
        xz: false,
        out: &eltorito,
        run,
    })?;
    let boot_hybrid = i386_pc.join("boot_hybrid.img");
    if !boot_hybrid.is_file() {
        return Err(ImagerError::Validation(
            "the release's GRUB tree has no i386-pc/boot_hybrid.img".into(),
        ));
    }
    Ok(BiosBoot {
        eltorito,
        boot_hybrid,
    })
}

/// Builds GRUB's EFI image of `platform` (`x86_64-efi`, `arm64-efi`) for a GRUB-only ISO
/// into `scratch` from the release's module tree `modules_dir`: every module built in, and an
/// early config that finds the ISO by its fixed UUID ([`super::grub_iso_uuid`]) and loads
/// `/boot/grub/grub.cfg` from it.
pub fn efi_image(
    modules_dir: &Path,
    platform: &'static str,
    scratch: &Path,
    run: &ToolRun,
) -> Result<PathBuf, ImagerError> {
    let config = scratch.join("load.cfg");
    std::fs::write(
        &config,
        format!(
            "search --fs-uuid --set=root {}\nset prefix=($root){ISO_PREFIX}\n",
            super::grub_iso_uuid()
        ),
    )?;
    let out = scratch.join("grub-efi.img");
    let modules = iso_modules(&[]);
    mkimage_with(&MkImage {
        modules_dir,
        format: platform,
        prefix: ISO_PREFIX,
        modules: &modules,
        config: Some(&config),
        xz: true,
        out: &out,
        run,
    })?;
    Ok(out)
}
