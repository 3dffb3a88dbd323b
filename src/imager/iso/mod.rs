//! ISO images (`<platform>-<arch>.iso`, imager spec §6): which generator a profile gets
//! ([`IsoKind`], §6.1), the volume labels (§6.1, §10.1), and [`write_iso`], which stages the
//! boot files and runs `xorriso` ([`xorriso`]) once to write the image.
//!
//! Every layout is the same shape: an ISO 9660 (level 3) filesystem, an EFI boot image
//! (`efiboot.img`, FAT32 written natively by [`crate::imager::disk::fat`]) appended as
//! partition 2 and referenced by the El Torito EFI entry, a partition table so the same file
//! boots from a USB stick, and, with GRUB, a BIOS El Torito entry (`eltorito.img` from
//! `grub-mkimage -O i386-pc-eltorito`) plus GRUB's hybrid MBR code. See `docs/imager-iso.md`.

pub mod grub;
pub mod xorriso;

use std::path::{Path, PathBuf};

use crate::imager::SOURCE_DATE_EPOCH;
use crate::imager::boot::{BootInputs, required};
use crate::imager::disk::fat::{EspFile, epoch_date_time, write_fat_image};
use crate::imager::disk::image::{efi_boot_name, grub_efi_platform};
use crate::imager::error::ImagerError;
use crate::imager::profile::Profile;
use crate::imager::quirks::Quirk;
use crate::imager::tool::ToolRun;
use crate::schematic::Bootloader;

pub use xorriso::{IsoPlan, run_xorriso};

/// What a missing input's error calls the image being built.
const MEDIUM: &str = "ISO";
/// MiB.
const MIB: u64 = 1 << 20;
/// Where UEFI ISOs carry systemd-boot's random seed ([`Quirk::IsoRandomSeed`]).
pub const RANDOM_SEED_PATH: &str = "loader/random-seed";
/// The seed: 32 zero bytes, as upstream writes it.
pub const RANDOM_SEED: [u8; 32] = [0; 32];
/// Clusters a FAT32 volume needs (below this count it is FAT16 by definition).
const FAT32_MIN_CLUSTERS: u64 = 65_525;
/// Smallest `efiboot.img`: FAT32 with 512-byte clusters needs about 33 MiB.
const EFIBOOT_MIN: u64 = 34 * MIB;

/// The ISO generator of a profile (imager spec §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsoKind {
    /// GRUB for BIOS and UEFI (§6.2): targets < 1.10, or `bootloader: grub` (>= 1.12).
    Grub,
    /// systemd-boot + UKI, UEFI only (§6.3): SecureBoot, or `bootloader: sd-boot` (>= 1.12).
    UefiOnly,
    /// GRUB for BIOS, systemd-boot + UKI for UEFI (§6.4): the default of targets >= 1.10.
    Hybrid,
}

impl IsoKind {
    /// The generator for `profile` (kind iso, output defaults applied).
    pub fn of(profile: &Profile) -> Result<IsoKind, ImagerError> {
        let q = profile.quirks();
        if profile.secureboot {
            return Ok(IsoKind::UefiOnly);
        }
        if q.has(Quirk::IsoSupportsSettingBootloader) {
            let bootloader = profile
                .output
                .iso_options
                .as_ref()
                .map_or(Bootloader::None, |o| o.bootloader);
            return match bootloader {
                Bootloader::DualBoot => Ok(IsoKind::Hybrid),
                Bootloader::SdBoot => Ok(IsoKind::UefiOnly),
                Bootloader::Grub => Ok(IsoKind::Grub),
                Bootloader::None => Err(ImagerError::Validation(
                    "bootloader must be set for iso output".into(),
                )),
            };
        }
        Ok(if q.has(Quirk::UseSdBootForUefi) {
            IsoKind::Hybrid
        } else {
            IsoKind::Grub
        })
    }

    /// Whether the ISO boots on BIOS (GRUB El Torito entry and hybrid MBR code).
    pub fn has_bios(self) -> bool {
        self != IsoKind::UefiOnly
    }

    /// Whether UEFI boots systemd-boot + UKI (else GRUB's EFI image).
    pub fn has_uki(self) -> bool {
        self != IsoKind::Grub
    }
}

/// The ISO's volume set ID (`Talos-<version>`) and volume ID (`TALOS_V1_10_0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoLabels {
    /// Volume ID (`-volid`).
    pub volume_id: String,
    /// Volume set ID (`-volset-id`).
    pub volume_set: String,
}

/// The labels of a target >= 1.8 (`SupportsISOLabel`), else `None` (spec §6.1): volset
/// `Talos-<version>`; volid = that upper-cased, `-`/`_`/`.` → `_`, other characters outside
/// `[A-Z0-9]` dropped, at most 32 characters. Imager >= 1.10 uses this label for SecureBoot
/// ISOs too.
pub fn iso_labels(profile: &Profile) -> Option<IsoLabels> {
    if !profile.quirks().has(Quirk::SupportsIsoLabel) {
        return None;
    }
    let volume_set = format!("Talos-{}", profile.version.tag());
    let volume_id: String = volume_set
        .to_uppercase()
        .chars()
        .filter_map(|c| match c {
            '-' | '_' | '.' => Some('_'),
            'A'..='Z' | '0'..='9' => Some(c),
            _ => None,
        })
        .take(32)
        .collect();
    Some(IsoLabels {
        volume_id,
        volume_set,
    })
}

/// `loader/loader.conf` of UEFI ISOs (§6.3; non-SecureBoot ISOs use `off`).
pub fn iso_loader_conf(enroll: &str) -> String {
    format!("# systemd-boot configuration\n\ntimeout 10\n\nsecure-boot-enroll {enroll}\n")
}

/// Size of `efiboot.img` for files of `sizes` bytes: 10 MiB + each file rounded up to MiB
/// (§6.3), at least [`EFIBOOT_MIN`] so that the volume is FAT32.
pub fn efiboot_size(sizes: &[u64]) -> u64 {
    let files: u64 = sizes.iter().map(|s| s.div_ceil(MIB) * MIB).sum();
    (10 * MIB + files).max(EFIBOOT_MIN)
}

/// Cluster size of `efiboot.img` (imager `main`, §6.3): the largest of 1, 2, 4, 8 sectors
/// that still leaves `65525 + 2048` clusters.
pub fn efiboot_cluster(size: u64) -> u32 {
    let sectors = size / 512;
    [8u64, 4, 2, 1]
        .into_iter()
        .find(|spc| sectors / spc >= FAT32_MIN_CLUSTERS + 2048)
        .map_or(512, |spc| (spc * 512) as u32)
}

/// The ISO 9660 modification time as GRUB shows it (the "UUID" of `search --fs-uuid`):
/// `YYYY-MM-DD-hh-mm-ss-00` of [`SOURCE_DATE_EPOCH`] in UTC.
pub fn grub_iso_uuid() -> String {
    let t = epoch_date_time(SOURCE_DATE_EPOCH);
    format!(
        "{:04}-{:02}-{:02}-{:02}-{:02}-{:02}-00",
        t.date.year, t.date.month, t.date.day, t.time.hour, t.time.min, t.time.sec
    )
}

fn required_grub<T>(what: &str, v: Option<T>) -> Result<T, ImagerError> {
    v.ok_or_else(|| ImagerError::Inconsistent(format!("ISO: {what} was not prepared")))
}

/// The GRUB images of an ISO: they depend only on the release's GRUB trees, so they can be
/// built while the initramfs and the UKI are.
#[derive(Debug, Clone, Default)]
pub struct IsoGrub {
    /// BIOS El Torito image and hybrid MBR code (layouts with BIOS).
    pub bios: Option<grub::BiosBoot>,
    /// GRUB's EFI image for the target's architecture (GRUB-only layouts).
    pub efi: Option<PathBuf>,
}

/// Builds the GRUB images `profile`'s ISO needs (none for UEFI-only layouts) into `scratch`
/// from the release's GRUB module trees under `grub_modules`.
pub fn prepare_grub(
    profile: &Profile,
    grub_modules: &Path,
    scratch: &Path,
    run: &ToolRun,
) -> Result<IsoGrub, ImagerError> {
    let kind = IsoKind::of(profile)?;
    let mut out = IsoGrub::default();
    if kind.has_bios() {
        out.bios = Some(grub::bios_boot(
            &grub_modules.join("i386-pc"),
            scratch,
            run,
        )?);
        if !kind.has_uki() {
            let platform = grub_efi_platform(profile.arch);
            out.efi = Some(grub::efi_image(
                &grub_modules.join(platform),
                platform,
                scratch,
                run,
            )?);
        }
    }
    Ok(out)
}

/// Writes the ISO of `profile` (kind iso, output defaults applied) to `out`, using `scratch`
/// (an empty directory) for the boot images and `grub` from [`prepare_grub`] (built here when
/// `None`). Files are grafted from where they are (the blob store); only the boot images are
/// written to `scratch`.
pub fn write_iso(
    profile: &Profile,
    inputs: &BootInputs,
    grub: Option<IsoGrub>,
    scratch: &Path,
    out: &Path,
) -> Result<IsoKind, ImagerError> {
    let kind = IsoKind::of(profile)?;
    // arm64 builds like upstream: hybrid and GRUB ISOs keep GRUB's BIOS El Torito entry (which
    // an arm64 machine ignores), GRUB-only ones boot UEFI through GRUB's arm64-efi image.
    let grub = match grub {
        Some(g) => g,
        None if kind.has_bios() => prepare_grub(
            profile,
            required(MEDIUM, "the GRUB modules", &inputs.grub_modules)?,
            scratch,
            &inputs.tools,
        )?,
        None => IsoGrub::default(),
    };
    let version = profile.version.tag();
    let mut plan = IsoPlan {
        labels: iso_labels(profile),
        rock_ridge: kind.has_bios(),
        bios: None,
        efi_image: scratch.join("efiboot.img"),
        grafts: Vec::new(),
        out: out.to_path_buf(),
    };
    let mut esp = Vec::new();
    if kind.has_bios() {
        let modules = required(MEDIUM, "the GRUB modules", &inputs.grub_modules)?;
        let reset = profile.quirks().has(Quirk::SupportsResetGrubOption);
        let cfg = scratch.join("grub.cfg");
        std::fs::write(&cfg, grub::iso_grub_cfg(&inputs.cmdline, reset))?;
        let bios = required_grub("the BIOS El Torito image", grub.bios)?;
        plan.grafts.extend([
            ("boot/vmlinuz".to_string(), inputs.kernel.clone()),
            ("boot/initramfs.xz".to_string(), inputs.initramfs.clone()),
            ("boot/grub/grub.cfg".to_string(), cfg),
            ("boot/grub/i386-pc".to_string(), modules.join("i386-pc")),
            (grub::ELTORITO_PATH.to_string(), bios.eltorito.clone()),
        ]);
        plan.bios = Some(bios);
        if !kind.has_uki() {
            let image = required_grub("GRUB's EFI image", grub.efi)?;
            let loader = format!("EFI/BOOT/{}", efi_boot_name(profile.arch).to_uppercase());
            esp.push(EspFile::file(&loader, image.clone()));
            plan.grafts.push((loader, image));
        }
    }
    if kind.has_uki() {
        let loader = format!("EFI/BOOT/{}", efi_boot_name(profile.arch).to_uppercase());
        let uki_path = format!("EFI/Linux/Talos-{version}.efi");
        let conf = scratch.join("loader.conf");
        let enroll = inputs.secure_boot.as_ref().map_or("off", |sb| sb.enroll);
        std::fs::write(&conf, iso_loader_conf(enroll))?;
        let mut files = vec![
            (
                loader,
                required(MEDIUM, "systemd-boot", &inputs.systemd_boot)?.clone(),
            ),
            (uki_path, required(MEDIUM, "the UKI", &inputs.uki)?.clone()),
            ("loader/loader.conf".to_string(), conf),
        ];
        // Secure Boot: the certificate and the enrolment lists systemd-boot enrols in setup
        // mode (§6.3, §7.6), written as scratch files so they can be grafted too.
        if let Some(sb) = &inputs.secure_boot {
            let keys = scratch.join("keys");
            std::fs::create_dir_all(&keys)?;
            let cert = keys.join("uki-signing-cert.der");
            std::fs::write(&cert, &sb.cert_der)?;
            files.push(("EFI/keys/uki-signing-cert.der".to_string(), cert));
            for (name, bytes) in &sb.auth {
                let path = keys.join(name);
                std::fs::write(&path, bytes)?;
                files.push((format!("loader/keys/auto/{name}"), path));
            }
        }
        for (path, src) in files {
            esp.push(EspFile::file(&path, src.clone()));
            plan.grafts.push((path, src));
        }
        // systemd-boot >= 261 creates loader/random-seed when it is missing, which fails on
        // the read-only medium (talos#14029): a read-only seed of zeroes is there already.
        if profile.quirks().has(Quirk::IsoRandomSeed) {
            let seed = scratch.join("random-seed");
            std::fs::write(&seed, RANDOM_SEED)?;
            esp.push(EspFile::file(RANDOM_SEED_PATH, seed.clone()).read_only());
            plan.grafts.push((RANDOM_SEED_PATH.to_string(), seed));
        }
    }
    let sizes = esp
        .iter()
        .map(|f| match &f.source {
            crate::imager::disk::fat::Source::File(p) => std::fs::metadata(p).map(|m| m.len()),
            crate::imager::disk::fat::Source::Bytes(b) => Ok(b.len() as u64),
        })
        .collect::<Result<Vec<u64>, _>>()?;
    let size = efiboot_size(&sizes);
    let t = std::time::Instant::now();
    write_fat_image(&plan.efi_image, size, Some(efiboot_cluster(size)), &esp)?;
    tracing::debug!(
        ms = t.elapsed().as_millis() as u64,
        size,
        "ISO: efiboot.img"
    );
    let t = std::time::Instant::now();
    run_xorriso(&plan, &inputs.tools)?;
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "ISO: xorriso");
    // efiboot.img stays: the caller removes `scratch` after the ISO is stored.
    Ok(kind)
}

#[cfg(test)]
mod tests;
