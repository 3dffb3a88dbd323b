//! The imager profile (imager spec §1.1): what to build, for which arch/platform/version, with
//! which customisation; its output defaults and validation (§1.3), output file names (§1.4) and
//! a canonical serialisation the asset cache key hashes.
//!
//! Only what this appliance needs is modelled: inputs are not paths but resolved catalog entries
//! (`system_extensions`, `overlay`), and the virtual `schematic` extension is named by ID.

mod enhance;

use serde::{Deserialize, Serialize};

use crate::catalog::{ImageRecord, OverlayEntry, Version};
use crate::oci::Digest;
use crate::schematic::Bootloader;

use super::error::ImagerError;
use super::quirks::{self, Quirk, Quirks};

pub use enhance::{EXTENSION_ALIASES, enhance_from_schematic, parse_enroll_keys};

/// `MinRAWDiskSize`: 1246 MiB.
pub const MIN_RAW_DISK_SIZE: u64 = 1246 * MIB;
/// `DefaultRAWDiskSize`: 8192 MiB.
pub const DEFAULT_RAW_DISK_SIZE: u64 = 8192 * MIB;
/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;

pub use crate::catalog::Arch;

impl Arch {
    /// Parses the architecture of an asset path, mapping the iPXE names `x86_64` and `i386`
    /// to `amd64`.
    pub fn parse(s: &str) -> Result<Arch, ImagerError> {
        match s {
            "x86_64" | "i386" => Ok(Arch::Amd64),
            _ => s
                .parse()
                .map_err(|_| ImagerError::InvalidArch(s.to_string())),
        }
    }
}

/// Output kind (`output.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Bootable ISO.
    Iso,
    /// Partitioned disk image.
    Image,
    /// Installer container image (docker-archive tarball).
    Installer,
    /// The raw kernel.
    Kernel,
    /// The initramfs with extensions.
    Initramfs,
    /// Unified kernel image.
    Uki,
    /// The kernel command line as text.
    Cmdline,
}

impl OutputKind {
    /// The YAML name.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Iso => "iso",
            OutputKind::Image => "image",
            OutputKind::Installer => "installer",
            OutputKind::Kernel => "kernel",
            OutputKind::Initramfs => "initramfs",
            OutputKind::Uki => "uki",
            OutputKind::Cmdline => "cmdline",
        }
    }
}

/// Post-processing of the output file (`output.outFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OutFormat {
    /// As is.
    #[serde(rename = "raw")]
    Raw,
    /// tar (member `disk.raw`) then gzip.
    #[serde(rename = ".tar.gz")]
    TarGz,
    /// xz.
    #[serde(rename = ".xz")]
    Xz,
    /// gzip.
    #[serde(rename = ".gz")]
    Gz,
    /// zstd.
    #[serde(rename = ".zst")]
    Zst,
}

impl OutFormat {
    /// The suffix appended to the output file name (empty for raw).
    pub fn suffix(self) -> &'static str {
        match self {
            OutFormat::Raw => "",
            OutFormat::TarGz => ".tar.gz",
            OutFormat::Xz => ".xz",
            OutFormat::Gz => ".gz",
            OutFormat::Zst => ".zst",
        }
    }
}

/// Disk image format (`imageOptions.diskFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// Raw disk.
    Raw,
    /// QEMU qcow2.
    Qcow2,
    /// VHD (qemu-img `vpc`).
    Vhd,
    /// VMware OVA.
    Ova,
}

impl DiskFormat {
    /// The file extension without dot (`raw`, `qcow2`, `vhd`, `ova`).
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vhd => "vhd",
            DiskFormat::Ova => "ova",
        }
    }
}

/// systemd-boot SecureBoot key enrolment mode (zero value `if-safe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnrollKeys {
    /// Enrol when it is safe (default).
    #[default]
    IfSafe,
    /// Offer enrolment in the menu.
    Manual,
    /// Always enrol.
    Force,
    /// Never enrol.
    Off,
}

impl EnrollKeys {
    /// The value of systemd-boot's `secure-boot-enroll` (`if-safe`, `manual`, `force`, `off`).
    pub fn as_str(self) -> &'static str {
        match self {
            EnrollKeys::IfSafe => "if-safe",
            EnrollKeys::Manual => "manual",
            EnrollKeys::Force => "force",
            EnrollKeys::Off => "off",
        }
    }
}

/// Disk image options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageOptions {
    /// Disk size in bytes (after the §1.3 bump once defaults are applied).
    pub disk_size: u64,
    /// Disk format.
    pub disk_format: DiskFormat,
    /// `qemu-img -o` options.
    pub disk_format_options: String,
    /// Logical sector size (0 = 512).
    pub disk_sector_size: u64,
    /// Bootloader (`none` until defaults are applied).
    #[serde(with = "bootloader_serde")]
    pub bootloader: Bootloader,
    /// SecureBoot key enrolment for disk images.
    pub sd_boot_enroll_keys: EnrollKeys,
}

/// ISO options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct IsoOptions {
    /// Bootloader (honoured for targets >= 1.12).
    #[serde(with = "bootloader_serde")]
    pub bootloader: Bootloader,
    /// SecureBoot key enrolment.
    pub sd_boot_enroll_keys: EnrollKeys,
}

/// Output section of the profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    /// What to build.
    pub kind: OutputKind,
    /// Post-processing.
    pub out_format: OutFormat,
    /// Disk image options (kind `image`).
    pub image_options: Option<ImageOptions>,
    /// ISO options (kind `iso`, targets >= 1.12).
    pub iso_options: Option<IsoOptions>,
}

/// One META key and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaEntry {
    /// META key.
    pub key: u8,
    /// Value.
    pub value: String,
}

/// Customisation section of the profile.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Customization {
    /// Extra kernel arguments, applied last.
    pub extra_kernel_args: Vec<String>,
    /// META values (environment for non-disk outputs, META partition for disk images).
    pub meta_contents: Vec<MetaEntry>,
    /// Embedded machine configuration (targets >= 1.12).
    pub embedded_machine_configuration: String,
}

/// A system extension resolved against the release's catalog, with its image for the arch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedExtension {
    /// The name as the schematic lists it (before alias resolution).
    pub requested: String,
    /// The catalog name (`siderolabs/<name>`).
    pub name: String,
    /// Tagged reference from the catalog.
    pub reference: String,
    /// Catalog digest.
    pub digest: Digest,
    /// The imported image for the profile's architecture.
    pub image: ImageRecord,
}

/// The overlay selected by the schematic, with its options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileOverlay {
    /// The catalog entry (images for every imported arch).
    pub entry: OverlayEntry,
    /// The schematic's `overlay.options`, as JSON.
    pub options: serde_json::Value,
    /// The installer's `get-options` kernel arguments (filled when the build runs it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_args: Vec<String>,
    /// The installer's `partitionOptions.offset` in LBAs (filled when the build runs it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub partition_offset: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// An imager profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// Architecture.
    pub arch: Arch,
    /// Talos platform name (not validated by the parser; unknown names fail at build time).
    pub platform: String,
    /// SecureBoot variant.
    pub secureboot: bool,
    /// Target Talos version (serialised as its tag, `v1.11.0`).
    #[serde(with = "version_serde")]
    pub version: Version,
    /// Customisation.
    pub customization: Customization,
    /// Output.
    pub output: Output,
    /// System extensions in schematic order (duplicates kept).
    pub system_extensions: Vec<ResolvedExtension>,
    /// ID of the schematic whose virtual `schematic` extension is appended last (none for
    /// kernel and cmdline outputs).
    pub schematic_extension: Option<String>,
    /// Overlay (SBC), if any.
    pub overlay: Option<ProfileOverlay>,
    /// Include well-known UEFI certificates in the enrolment databases (SecureBoot).
    pub include_well_known_certs: bool,
}

impl Profile {
    /// A bare profile for a kind (no customisation, no extensions).
    pub fn new(
        arch: Arch,
        platform: &str,
        secureboot: bool,
        version: Version,
        kind: OutputKind,
    ) -> Profile {
        Profile {
            arch,
            platform: platform.to_string(),
            secureboot,
            version,
            customization: Customization::default(),
            output: Output {
                kind,
                out_format: OutFormat::Raw,
                image_options: None,
                iso_options: None,
            },
            system_extensions: Vec::new(),
            schematic_extension: None,
            overlay: None,
            include_well_known_certs: false,
        }
    }

    /// The target-version quirks.
    pub fn quirks(&self) -> Quirks {
        Quirks::for_version(&self.version)
    }

    /// `<platform>-<arch>[-secureboot]`.
    pub fn base_name(&self) -> String {
        let mut s = format!("{}-{}", self.platform, self.arch.as_str());
        if self.secureboot {
            s.push_str("-secureboot");
        }
        s
    }

    /// The imager's output file name (imager spec §1.4) with the post-processing suffix.
    pub fn output_file_name(&self) -> String {
        let base = self.base_name();
        let arch = self.arch.as_str();
        let name = match self.output.kind {
            OutputKind::Iso => format!("{base}.iso"),
            OutputKind::Image => {
                let fmt = self
                    .output
                    .image_options
                    .as_ref()
                    .map_or("raw", |o| o.disk_format.as_str());
                format!("{base}.{fmt}")
            }
            OutputKind::Installer => {
                let sb = if self.secureboot { "-secureboot" } else { "" };
                format!("installer-{arch}{sb}.tar")
            }
            OutputKind::Kernel => format!("kernel-{arch}"),
            OutputKind::Initramfs => format!("initramfs-{base}.xz"),
            OutputKind::Uki => format!("{base}-uki.efi"),
            OutputKind::Cmdline => format!("cmdline-{base}"),
        };
        format!("{name}{}", self.output.out_format.suffix())
    }

    /// Applies the output defaults of imager spec §1.3 (bootloader choice, disk-size bump).
    /// Call once; the bump is not idempotent.
    pub fn apply_output_defaults(&mut self) {
        let q = self.quirks();
        let chosen = choose_bootloader;
        match self.output.kind {
            OutputKind::Image => {
                let (secureboot, arch) = (self.secureboot, self.arch);
                let opts = self
                    .output
                    .image_options
                    .get_or_insert_with(|| ImageOptions {
                        disk_size: 0,
                        disk_format: DiskFormat::Raw,
                        disk_format_options: String::new(),
                        disk_sector_size: 0,
                        bootloader: Bootloader::None,
                        sd_boot_enroll_keys: EnrollKeys::IfSafe,
                    });
                opts.bootloader = chosen(opts.bootloader, secureboot, arch, &q);
                let boot = q.boot_partition_size_mib() * MIB;
                opts.disk_size = (opts.disk_size + boot).saturating_sub(1000 * MIB);
                if opts.bootloader == Bootloader::DualBoot {
                    opts.disk_size += MIB + boot;
                }
            }
            OutputKind::Iso if q.has(Quirk::IsoSupportsSettingBootloader) => {
                let (secureboot, arch) = (self.secureboot, self.arch);
                let opts = self
                    .output
                    .iso_options
                    .get_or_insert_with(IsoOptions::default);
                opts.bootloader = chosen(opts.bootloader, secureboot, arch, &q);
            }
            _ => {}
        }
    }

    /// Validates the profile (imager spec §1.3, in upstream order) and refuses unsupported
    /// targets ([`quirks::ensure_supported`]) and unknown platforms.
    pub fn validate(&self) -> Result<(), ImagerError> {
        quirks::ensure_supported(&self.version)?;
        let q = self.quirks();
        if self.platform.is_empty() {
            return Err(ImagerError::Validation("platform is required".into()));
        }
        if self.secureboot && !q.has(Quirk::SupportsUki) {
            return Err(ImagerError::Validation(format!(
                "secureboot is not supported for Talos version {}",
                self.version.tag()
            )));
        }
        let c = &self.customization;
        match self.output.kind {
            OutputKind::Iso => {
                if q.has(Quirk::IsoSupportsSettingBootloader)
                    && self
                        .output
                        .iso_options
                        .as_ref()
                        .is_none_or(|o| o.bootloader == Bootloader::None)
                {
                    return Err(ImagerError::Validation(
                        "bootloader must be set for iso output".into(),
                    ));
                }
            }
            OutputKind::Image => {
                let Some(opts) = &self.output.image_options else {
                    return Err(ImagerError::Validation("image options are required".into()));
                };
                if opts.disk_size == 0 {
                    return Err(ImagerError::Validation("disk size is required".into()));
                }
                if opts.bootloader == Bootloader::None {
                    return Err(ImagerError::Validation(
                        "bootloader must be set for image output".into(),
                    ));
                }
            }
            OutputKind::Installer => {
                if !c.meta_contents.is_empty() {
                    return Err(ImagerError::Validation(
                        "customization of meta partition is not supported for installer output"
                            .into(),
                    ));
                }
            }
            OutputKind::Kernel | OutputKind::Initramfs => {
                let kind = self.output.kind.as_str();
                if self.secureboot {
                    return Err(ImagerError::Validation(format!(
                        "secureboot is not supported for {kind} output"
                    )));
                }
                if !c.extra_kernel_args.is_empty() {
                    return Err(ImagerError::Validation(format!(
                        "customization of kernel args is not supported for {kind} output"
                    )));
                }
                if !c.meta_contents.is_empty() {
                    return Err(ImagerError::Validation(format!(
                        "customization of meta partition is not supported for {kind} output"
                    )));
                }
            }
            OutputKind::Uki | OutputKind::Cmdline => {}
        }
        let bootloader = match self.output.kind {
            OutputKind::Image => self.output.image_options.as_ref().map(|o| o.bootloader),
            OutputKind::Iso => self.output.iso_options.as_ref().map(|o| o.bootloader),
            _ => None,
        };
        if self.arch == Arch::Arm64 && bootloader == Some(Bootloader::DualBoot) {
            return Err(ImagerError::BootloaderNotSupported {
                bootloader: "dual-boot",
                arch: "arm64",
            });
        }
        super::cmdline::platform_args(&self.platform, self.arch, &q)?;
        Ok(())
    }

    /// The canonical serialisation: compact JSON with object keys sorted at every level. Stable
    /// across runs and machines; the asset cache key hashes it.
    pub fn canonical_json(&self) -> Result<String, ImagerError> {
        let value =
            serde_json::to_value(self).map_err(ImagerError::internal("serialising profile"))?;
        let mut out = String::new();
        write_sorted(&value, &mut out);
        Ok(out)
    }
}

/// Bootloader choice of imager spec §1.3.
fn choose_bootloader(current: Bootloader, secureboot: bool, arch: Arch, q: &Quirks) -> Bootloader {
    if current != Bootloader::None && !secureboot {
        current
    } else if secureboot {
        Bootloader::SdBoot
    } else if !q.has(Quirk::UseSdBootForUefi) {
        Bootloader::Grub
    } else if arch == Arch::Arm64 {
        Bootloader::SdBoot
    } else {
        Bootloader::DualBoot
    }
}

/// Writes `v` as compact JSON with sorted object keys (serde_json's escaping).
fn write_sorted(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value as J;
    match v {
        J::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&J::String((*k).clone()).to_string());
                out.push(':');
                if let Some(item) = map.get(*k) {
                    write_sorted(item, out);
                }
            }
            out.push('}');
        }
        J::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

mod version_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::catalog::Version;

    pub fn serialize<S: Serializer>(v: &Version, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.tag())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        let s = String::deserialize(d)?;
        Version::parse_strict(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid version {s:?}")))
    }
}

mod bootloader_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::schematic::Bootloader;

    pub fn serialize<S: Serializer>(b: &Bootloader, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(b.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bootloader, D::Error> {
        let s = String::deserialize(d)?;
        Bootloader::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid bootloader {s:?}")))
    }
}

#[cfg(test)]
mod tests;
