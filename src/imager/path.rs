//! Asset paths → profiles (api spec §3.1; upstream `ParseFromPath`), the PXE path, the
//! platform disk defaults (§3.3) and the response content types (§3.6).
//!
//! Rules are tried in upstream order and the first match wins; the platform name is not
//! validated here (an unknown platform fails at build time, a 500 upstream).

use crate::catalog::Version;

use super::error::ImagerError;
use super::profile::{
    Arch, DEFAULT_RAW_DISK_SIZE, DiskFormat, EnrollKeys, ImageOptions, MIB, MIN_RAW_DISK_SIZE,
    OutFormat, OutputKind, Profile,
};
use crate::schematic::Bootloader;

/// Disk defaults of a Talos built-in profile (api spec §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformDefaults {
    /// Disk size in bytes before the imager's boot-partition bump.
    pub disk_size: u64,
    /// `qemu-img -o` options (empty when none).
    pub disk_format_options: &'static str,
}

/// Built-in profile disk defaults by platform name (Talos v1.14.0-rc.1; imager spec §1.2).
const PLATFORM_DEFAULTS: &[(&str, u64, &str)] = &[
    ("metal", MIN_RAW_DISK_SIZE, ""),
    ("akamai", MIN_RAW_DISK_SIZE, ""),
    ("alibabacloud", MIN_RAW_DISK_SIZE, "cluster_size=8k"),
    ("aws", DEFAULT_RAW_DISK_SIZE, ""),
    ("azure", DEFAULT_RAW_DISK_SIZE, "subformat=fixed,force_size"),
    ("cloudstack", DEFAULT_RAW_DISK_SIZE, ""),
    ("digital-ocean", DEFAULT_RAW_DISK_SIZE, ""),
    ("exoscale", 10240 * MIB, "cluster_size=8k"),
    ("gcp", DEFAULT_RAW_DISK_SIZE, ""),
    ("hcloud", MIN_RAW_DISK_SIZE, ""),
    ("nocloud", MIN_RAW_DISK_SIZE, ""),
    ("opennebula", MIN_RAW_DISK_SIZE, ""),
    ("openstack", MIN_RAW_DISK_SIZE, ""),
    ("oracle", DEFAULT_RAW_DISK_SIZE, "cluster_size=8k"),
    ("scaleway", MIN_RAW_DISK_SIZE, ""),
    ("upcloud", DEFAULT_RAW_DISK_SIZE, ""),
    ("vmware", DEFAULT_RAW_DISK_SIZE, ""),
    ("vultr", DEFAULT_RAW_DISK_SIZE, ""),
];

/// The built-in disk defaults for a platform, if Talos has a built-in profile of that name.
pub fn platform_defaults(platform: &str) -> Option<PlatformDefaults> {
    PLATFORM_DEFAULTS
        .iter()
        .find(|(p, _, _)| *p == platform)
        .map(|&(_, disk_size, opts)| PlatformDefaults {
            disk_size,
            disk_format_options: opts,
        })
}

/// Compression suffixes, checked in this order (first match only).
const OUT_FORMATS: &[(&str, OutFormat)] = &[
    (".tar.gz", OutFormat::TarGz),
    (".gz", OutFormat::Gz),
    (".xz", OutFormat::Xz),
    (".zst", OutFormat::Zst),
];

/// Disk format suffixes, checked in this order.
const DISK_FORMATS: &[(&str, DiskFormat)] = &[
    (".raw", DiskFormat::Raw),
    (".qcow2", DiskFormat::Qcow2),
    (".vhd", DiskFormat::Vhd),
    (".ova", DiskFormat::Ova),
];

/// `<platform>-<arch>[-secureboot]` → (platform, arch, secureboot).
fn platform_arch(s: &str) -> Result<(String, Arch, bool), ImagerError> {
    let (s, secureboot) = match s.strip_suffix("-secureboot") {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let Some((platform, rest)) = s.split_once('-') else {
        return Err(ImagerError::InvalidPlatformArch(s.to_string()));
    };
    let (platform, rest) = match rest.strip_prefix("ocean-") {
        Some(r) if platform == "digital" => ("digital-ocean", r),
        _ => (platform, rest),
    };
    Ok((platform.to_string(), Arch::parse(rest)?, secureboot))
}

/// Parses an `/image/...` asset path (enterprise suffixes already removed) into a profile for
/// `version`, per api spec §3.1.
pub fn parse_path(path: &str, version: &Version) -> Result<Profile, ImagerError> {
    let v = || version.clone();
    let simple = |arch: Arch, platform: &str, secureboot: bool, kind: OutputKind| {
        Profile::new(arch, platform, secureboot, v(), kind)
    };

    // 1. kernel-<arch>
    if let Some(rest) = path.strip_prefix("kernel-") {
        return Ok(simple(
            Arch::parse(rest)?,
            "metal",
            false,
            OutputKind::Kernel,
        ));
    }
    // 2. cmdline-<platform>-<arch>[-secureboot]
    if let Some(rest) = path.strip_prefix("cmdline-") {
        let (platform, arch, sb) = platform_arch(rest)?;
        return Ok(simple(arch, &platform, sb, OutputKind::Cmdline));
    }
    // 3. initramfs-<arch>.xz
    if let Some(rest) = path
        .strip_prefix("initramfs-")
        .and_then(|r| r.strip_suffix(".xz"))
    {
        return Ok(simple(
            Arch::parse(rest)?,
            "metal",
            false,
            OutputKind::Initramfs,
        ));
    }
    // 4. <platform>-<arch>[-secureboot].iso
    if let Some(rest) = path.strip_suffix(".iso") {
        let (platform, arch, sb) = platform_arch(rest)?;
        return Ok(simple(arch, &platform, sb, OutputKind::Iso));
    }
    // 5. <platform>-<arch>[-secureboot]-uki.efi
    if let Some(rest) = path.strip_suffix("-uki.efi") {
        let (platform, arch, sb) = platform_arch(rest)?;
        return Ok(simple(arch, &platform, sb, OutputKind::Uki));
    }
    // 6. installer-<arch>[-secureboot].tar
    if let Some(rest) = path
        .strip_prefix("installer-")
        .and_then(|r| r.strip_suffix(".tar"))
    {
        let (rest, sb) = match rest.strip_suffix("-secureboot") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        return Ok(simple(
            Arch::parse(rest)?,
            "metal",
            sb,
            OutputKind::Installer,
        ));
    }
    // 7. <platform>-installer-<arch>[-secureboot].tar
    if let Some((platform, rest)) = path
        .strip_suffix(".tar")
        .and_then(|r| r.split_once("-installer-"))
    {
        let (rest, sb) = match rest.strip_suffix("-secureboot") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        return Ok(simple(
            Arch::parse(rest)?,
            platform,
            sb,
            OutputKind::Installer,
        ));
    }
    // 8. disk image
    let (rest, out_format) = OUT_FORMATS
        .iter()
        .find_map(|(suffix, f)| path.strip_suffix(suffix).map(|r| (r, *f)))
        .unwrap_or((path, OutFormat::Raw));
    let Some((rest, disk_format)) = DISK_FORMATS
        .iter()
        .find_map(|(suffix, f)| rest.strip_suffix(suffix).map(|r| (r, *f)))
    else {
        return Err(ImagerError::InvalidPath(rest.to_string()));
    };
    let (platform, arch, sb) = platform_arch(rest)?;
    let mut options = ImageOptions {
        disk_size: DEFAULT_RAW_DISK_SIZE,
        disk_format,
        disk_format_options: if disk_format == DiskFormat::Qcow2 {
            "cluster_size=8k".into()
        } else {
            String::new()
        },
        disk_sector_size: 0,
        bootloader: Bootloader::None,
        sd_boot_enroll_keys: EnrollKeys::IfSafe,
    };
    if let Some(d) = platform_defaults(&platform) {
        if d.disk_size != 0 {
            options.disk_size = d.disk_size;
        }
        if !d.disk_format_options.is_empty() {
            options.disk_format_options = d.disk_format_options.to_string();
        }
    }
    let mut profile = simple(arch, &platform, sb, OutputKind::Image);
    profile.output.out_format = out_format;
    profile.output.image_options = Some(options);
    Ok(profile)
}

/// Parses a `/pxe/...` path `<platform>-<arch>[-secureboot]` into the profile of the
/// `cmdline-<path>` asset the script is built from (api spec §4).
pub fn parse_pxe_path(path: &str, version: &Version) -> Result<Profile, ImagerError> {
    parse_path(&format!("cmdline-{path}"), version)
}

/// The asset paths an iPXE script boots for a (cmdline) profile: the kernel and initramfs, or
/// for SecureBoot the UKI alone.
pub fn pxe_boot_assets(profile: &Profile) -> Vec<String> {
    let arch = profile.arch.as_str();
    if profile.secureboot {
        vec![format!("{}-{arch}-secureboot-uki.efi", profile.platform)]
    } else {
        vec![format!("kernel-{arch}"), format!("initramfs-{arch}.xz")]
    }
}

/// The `Content-Type` of an asset response, by the last extension of the request path
/// (api spec §3.6; Go's MIME table has none of the other extensions).
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("efi") => "application/efi",
        Some("iso") => "application/x-iso9660-image",
        Some("xz") => "application/x-xz",
        Some("gz") => "application/gzip",
        Some("qcow2") => "application/x-qemu-disk",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests;
