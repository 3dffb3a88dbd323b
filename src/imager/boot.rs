//! The built boot files a bootable image is assembled from: disk images
//! ([`super::disk::write_disk_image`]) and ISOs ([`super::iso::write_iso`]) take the same set,
//! which the builder prepares (`Builder::scratch_payloads`, the release's blobs).

use std::path::PathBuf;

use super::error::ImagerError;

/// The built parts a disk image or an ISO is assembled from; which of the optional ones a
/// layout needs depends on its bootloader.
#[derive(Debug, Clone)]
pub struct BootInputs {
    /// The kernel command line (GRUB entries; the UKI carries its own).
    pub cmdline: String,
    /// Kernel (`A/vmlinuz` on a disk's BOOT partition, `boot/vmlinuz` in an ISO).
    pub kernel: PathBuf,
    /// Initramfs with extensions (`A/initramfs.xz` on BOOT, `boot/initramfs.xz` in an ISO).
    pub initramfs: PathBuf,
    /// The UKI (`EFI/Linux/Talos-<version>.efi`): systemd-boot layouts.
    pub uki: Option<PathBuf>,
    /// systemd-boot (`EFI/boot/BOOT<arch>.efi`): systemd-boot layouts.
    pub systemd_boot: Option<PathBuf>,
    /// The release's GRUB module trees (`<dir>/i386-pc`, `<dir>/x86_64-efi`, …): GRUB layouts.
    pub grub_modules: Option<PathBuf>,
    /// How the external tools run (`mkfs.xfs`, `grub-mkimage`, `xorriso`).
    pub tools: crate::imager::tool::ToolRun,
    /// Secure Boot enrolment material (Secure Boot ISOs); `systemd_boot` and `uki` are then
    /// the signed files.
    pub secure_boot: Option<SecureBootFiles>,
}

/// What a Secure Boot medium carries besides the signed systemd-boot and UKI (imager spec §6.3).
#[derive(Debug, Clone)]
pub struct SecureBootFiles {
    /// The signing certificate, DER (`EFI/keys/uki-signing-cert.der`).
    pub cert_der: Vec<u8>,
    /// `PK.auth`, `KEK.auth`, `db.auth` (`loader/keys/auto/`), by file name.
    pub auth: Vec<(String, Vec<u8>)>,
    /// systemd-boot's `secure-boot-enroll` mode.
    pub enroll: &'static str,
}

/// The optional input `p` that a `medium` ("disk image", "ISO") needs, or the internal error
/// "`<medium>`: `<what>` is missing".
pub(super) fn required<'a>(
    medium: &str,
    what: &str,
    p: &'a Option<PathBuf>,
) -> Result<&'a PathBuf, ImagerError> {
    p.as_ref()
        .ok_or_else(|| ImagerError::Inconsistent(format!("{medium}: {what} is missing")))
}
