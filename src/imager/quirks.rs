//! Target-version quirks: one data-driven table (imager spec §10.1) keyed by the Talos version
//! whose assets are packaged, plus the "unparsable version" defaults of §0.2.
//!
//! Like upstream's `quirks.New`, the version is parsed tolerantly (leading `v`, missing
//! minor/patch padded) and only `major.minor.patch` is kept, so `1.10.0-alpha.1` behaves as
//! `1.10.0`. Every version-dependent decision of the imager reads a row of [`QUIRKS`]; valued
//! quirks (partition sizes, module paths, XFS configs) are derived from boolean rows so the table
//! stays the only place that knows version numbers.
//!
//! Imager-version behaviour (negated kernel args since 1.6, early microcode cpio since 1.6) is
//! not a target quirk: this crate always behaves as the latest imager.

use crate::catalog::Version;

use super::error::ImagerError;

/// A named target-version quirk (upstream names in [`QuirkRow::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quirk {
    /// GRUB reset menu entries (ISO + disk).
    SupportsResetGrubOption,
    /// UKIs and SecureBoot; UKI built for iso/installer/image.
    SupportsUki,
    /// Multi-document machine config (not imager-relevant).
    SupportsMultidoc,
    /// Gzip the META environment payload when it exceeds 256 bytes.
    SupportsCompressedEncodedMeta,
    /// Overlays (SBC support) instead of boards.
    SupportsOverlay,
    /// zstd (level 18) squashfs and appended cpio instead of xz.
    UseZstdCompression,
    /// ISO volume id / volume set labels.
    SupportsIsoLabel,
    /// Metal amd64 gets `console=ttyS0` before `console=tty0`.
    SupportsMetalPlatformConsoleTtyS0,
    /// ISO command lines get `talos.halt_if_installed=1`.
    SupportsHaltIfInstalled,
    /// Disk images have no STATE/EPHEMERAL partitions.
    SkipDataPartitions,
    /// `selinux=1` default argument.
    SupportsSelinux,
    /// sd-boot for UEFI: dual-boot/sd-boot defaults, hybrid ISO, installer with UKI + sd-boot.
    UseSdBootForUefi,
    /// Kernel modules and firmware live under `/usr/lib` (else `/lib`).
    UsrLibModulesAndFirmware,
    /// UKI `.profile` sections; reset entries in sd-boot.
    SupportsUkiProfiles,
    /// Base installer is `installer-base`; the factory applies extra args to installer/UKI.
    SupportsUnifiedInstaller,
    /// `ima_template/ima_appraise/ima_hash` default arguments.
    SupportsIma,
    /// BOOT partition (and UKI-EFI, disk-size bump) of 2000 MiB instead of 1000 MiB.
    LargeBootPartition,
    /// The `embedded-config` virtual extension (factory-enforced).
    SupportsEmbeddedConfig,
    /// `module.sig_enforce=1` default argument.
    SupportsDisablingModuleSignatureVerification,
    /// `isoOptions.bootloader` is honoured.
    IsoSupportsSettingBootloader,
    /// `proc_mem.force_override=never` default argument.
    ProcMemOverrideNever,
    /// `init_on_alloc=1` is dropped from the defaults.
    DropInitOnAllocInArgs,
    /// `nvme_core.io_timeout` only on aws (moved to the platform args).
    NvmeCoreIoTimeoutAwsOnly,
    /// SecureBoot adds `lockdown=confidentiality`.
    ForcesLockdownConfidentiality,
    /// mkfs.xfs config `lts_6.6` or newer.
    XfsMkfsLts66,
    /// mkfs.xfs config `lts_6.12` or newer.
    XfsMkfsLts612,
    /// mkfs.xfs config `lts_6.18`.
    XfsMkfsLts618,
    /// 64 GiB minimum XFS allocation group (Talos runtime only).
    XfsMinAllocationGroupSize,
    /// UEFI ISOs carry `loader/random-seed` (32 zero bytes, read-only in `efiboot.img`): the
    /// target's systemd-boot (>= 261) would otherwise try to create it on the read-only medium
    /// (talos#14029; imager 1.14).
    IsoRandomSeed,
}

/// When a quirk applies, on `major.minor.patch` of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The target is at least this version.
    Min(u64, u64, u64),
    /// The target is below this version.
    MaxExclusive(u64, u64, u64),
}

impl Rule {
    /// Whether the rule holds for a parsed `major.minor.patch`.
    pub fn holds(self, v: (u64, u64, u64)) -> bool {
        match self {
            Rule::Min(a, b, c) => v >= (a, b, c),
            Rule::MaxExclusive(a, b, c) => v < (a, b, c),
        }
    }
}

/// One row of the quirk table.
#[derive(Debug, Clone, Copy)]
pub struct QuirkRow {
    /// The quirk.
    pub quirk: Quirk,
    /// Upstream's name (`pkg/machinery/imager/quirks`) or the spec's description of it.
    pub name: &'static str,
    /// When it applies.
    pub rule: Rule,
    /// Its value when the target version does not parse (upstream mostly assumes "latest").
    pub unparsable: bool,
}

const fn row(quirk: Quirk, name: &'static str, rule: Rule, unparsable: bool) -> QuirkRow {
    QuirkRow {
        quirk,
        name,
        rule,
        unparsable,
    }
}

use Quirk as Q;
use Rule::{MaxExclusive as Below, Min};

/// The quirk table (imager spec §10.1); the last column is the unparsable-version default (§0.2).
pub const QUIRKS: &[QuirkRow] = &[
    row(
        Q::SupportsResetGrubOption,
        "SupportsResetGRUBOption",
        Min(1, 4, 0),
        true,
    ),
    row(Q::SupportsUki, "SupportsUKI", Min(1, 5, 0), true),
    row(Q::SupportsMultidoc, "SupportsMultidoc", Min(1, 5, 0), true),
    row(
        Q::SupportsCompressedEncodedMeta,
        "SupportsCompressedEncodedMETA",
        Min(1, 6, 3),
        true,
    ),
    row(Q::SupportsOverlay, "SupportsOverlay", Min(1, 7, 0), true),
    row(
        Q::UseZstdCompression,
        "UseZSTDCompression",
        Min(1, 8, 0),
        true,
    ),
    row(Q::SupportsIsoLabel, "SupportsISOLabel", Min(1, 8, 0), true),
    row(
        Q::SupportsMetalPlatformConsoleTtyS0,
        "SupportsMetalPlatformConsoleTTYS0",
        Below(1, 8, 0),
        false,
    ),
    row(
        Q::SupportsHaltIfInstalled,
        "SupportsHaltIfInstalled",
        Min(1, 8, 0),
        true,
    ),
    row(
        Q::SkipDataPartitions,
        "SkipDataPartitions",
        Min(1, 8, 0),
        true,
    ),
    row(Q::SupportsSelinux, "SupportsSELinux", Min(1, 10, 0), true),
    row(
        Q::UseSdBootForUefi,
        "UseSDBootForUEFI",
        Min(1, 10, 0),
        false,
    ),
    row(
        Q::UsrLibModulesAndFirmware,
        "KernelModulesPath/FirmwarePath",
        Min(1, 10, 0),
        true,
    ),
    row(
        Q::SupportsUkiProfiles,
        "SupportsUKIProfiles",
        Min(1, 10, 0),
        true,
    ),
    row(
        Q::SupportsUnifiedInstaller,
        "SupportsUnifiedInstaller",
        Min(1, 10, 0),
        true,
    ),
    row(Q::SupportsIma, "SupportsIMA", Below(1, 11, 0), false),
    row(Q::LargeBootPartition, "PartitionSizes", Min(1, 11, 0), true),
    row(
        Q::SupportsEmbeddedConfig,
        "SupportsEmbeddedConfig",
        Min(1, 12, 0),
        true,
    ),
    row(
        Q::SupportsDisablingModuleSignatureVerification,
        "SupportsDisablingModuleSignatureVerification",
        Min(1, 12, 0),
        true,
    ),
    row(
        Q::IsoSupportsSettingBootloader,
        "ISOSupportsSettingBootloader",
        Min(1, 12, 0),
        true,
    ),
    row(
        Q::ProcMemOverrideNever,
        "ProcMemOverrideNever",
        Min(1, 13, 0),
        true,
    ),
    row(
        Q::DropInitOnAllocInArgs,
        "DropInitOnAllocInArgs",
        Min(1, 14, 0),
        true,
    ),
    row(
        Q::NvmeCoreIoTimeoutAwsOnly,
        "NvmeCoreIoTimeoutAWSOnly",
        Min(1, 14, 0),
        true,
    ),
    row(
        Q::ForcesLockdownConfidentiality,
        "ForcesLockdownConfidentiality",
        Below(1, 14, 0),
        false,
    ),
    row(Q::XfsMkfsLts66, "XFSMkfsConfig lts_6.6", Min(1, 8, 0), true),
    row(
        Q::XfsMkfsLts612,
        "XFSMkfsConfig lts_6.12",
        Min(1, 10, 0),
        true,
    ),
    row(
        Q::XfsMkfsLts618,
        "XFSMkfsConfig lts_6.18",
        Min(1, 13, 0),
        true,
    ),
    row(
        Q::XfsMinAllocationGroupSize,
        "XFSMinAllocationGroupSize",
        Min(1, 14, 0),
        true,
    ),
    row(
        Q::IsoRandomSeed,
        "loader/random-seed on UEFI ISOs (talos#14029)",
        Min(1, 14, 0),
        true,
    ),
];

/// The oldest target (major, minor) this appliance builds.
pub const MIN_SUPPORTED: (u64, u64) = (1, 8);

/// Refuses targets older than [`MIN_SUPPORTED`]; the one place that decides it.
///
/// Older targets need what this imager does not build yet: STATE/EPHEMERAL partitions in disk
/// images (`SkipDataPartitions` < 1.8), xz-compressed squashfs layers and appended cpio
/// (`UseZstdCompression` < 1.8), the legacy two-layer installer and board-style SBC images. The
/// quirk rows for them are kept (and the command-line tests cover 1.7) so that enabling older
/// targets later is a matter of building those pieces and lowering this bound.
pub fn ensure_supported(version: &Version) -> Result<(), ImagerError> {
    if (version.major, version.minor) < MIN_SUPPORTED {
        return Err(ImagerError::UnsupportedVersion(version.tag()));
    }
    Ok(())
}

/// The quirks of one target version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quirks {
    version: Option<(u64, u64, u64)>,
}

impl Quirks {
    /// Quirks for a version string, parsed tolerantly; unparsable versions get the §0.2 defaults.
    pub fn new(version: &str) -> Quirks {
        Quirks {
            version: Version::parse_tolerant(version).map(|v| (v.major, v.minor, v.patch)),
        }
    }

    /// Quirks for a parsed version (pre-release ignored).
    pub fn for_version(version: &Version) -> Quirks {
        Quirks {
            version: Some((version.major, version.minor, version.patch)),
        }
    }

    /// Whether a quirk applies to this target.
    pub fn has(&self, quirk: Quirk) -> bool {
        let Some(row) = QUIRKS.iter().find(|r| r.quirk == quirk) else {
            return false;
        };
        match self.version {
            Some(v) => row.rule.holds(v),
            None => row.unparsable,
        }
    }

    /// BOOT partition size in MiB (`PartitionSizes`): 2000 for >= 1.11, else 1000.
    pub fn boot_partition_size_mib(&self) -> u64 {
        if self.has(Quirk::LargeBootPartition) {
            2000
        } else {
            1000
        }
    }

    /// The `mkfs.xfs -c options=` config file name for the target's kernel line.
    pub fn xfs_mkfs_config(&self) -> &'static str {
        if self.has(Quirk::XfsMkfsLts618) {
            "lts_6.18"
        } else if self.has(Quirk::XfsMkfsLts612) {
            "lts_6.12"
        } else if self.has(Quirk::XfsMkfsLts66) {
            "lts_6.6"
        } else {
            "lts_6.1"
        }
    }

    /// Where extensions carry kernel modules (`KernelModulesPath`), without leading `/`.
    pub fn kernel_modules_path(&self) -> &'static str {
        if self.has(Quirk::UsrLibModulesAndFirmware) {
            "usr/lib/modules"
        } else {
            "lib/modules"
        }
    }

    /// Where extensions carry firmware (`FirmwarePath`), without leading `/`.
    pub fn firmware_path(&self) -> &'static str {
        if self.has(Quirk::UsrLibModulesAndFirmware) {
            "usr/lib/firmware"
        } else {
            "lib/firmware"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(v: &str) -> Quirks {
        Quirks::new(v)
    }

    #[test]
    fn table_is_complete_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in QUIRKS {
            assert!(seen.insert(r.quirk), "duplicate row {:?}", r.quirk);
        }
        assert_eq!(seen.len(), 29);
    }

    #[test]
    fn rules_by_version() {
        assert!(q("v1.8.0").has(Quirk::UseZstdCompression));
        assert!(!q("v1.7.6").has(Quirk::UseZstdCompression));
        assert!(q("v1.7.6").has(Quirk::SupportsMetalPlatformConsoleTtyS0));
        assert!(!q("v1.8.0").has(Quirk::SupportsMetalPlatformConsoleTtyS0));
        assert!(q("v1.10.9").has(Quirk::SupportsIma));
        assert!(!q("v1.11.0").has(Quirk::SupportsIma));
        assert!(q("v1.13.5").has(Quirk::ForcesLockdownConfidentiality));
        assert!(!q("v1.14.0").has(Quirk::ForcesLockdownConfidentiality));
        assert!(q("v1.6.3").has(Quirk::SupportsCompressedEncodedMeta));
        assert!(!q("v1.6.2").has(Quirk::SupportsCompressedEncodedMeta));
        // pre-release suffixes are ignored, like upstream
        assert!(q("v1.10.0-alpha.0").has(Quirk::UseSdBootForUefi));
        assert!(q("1.12").has(Quirk::SupportsEmbeddedConfig));
        assert!(!q("v1.11.5").has(Quirk::SupportsEmbeddedConfig));
        assert!(q("v1.14.0-beta.1").has(Quirk::IsoRandomSeed));
        assert!(!q("v1.13.4").has(Quirk::IsoRandomSeed));
        assert!(q("latest").has(Quirk::IsoRandomSeed));
    }

    #[test]
    fn unparsable_defaults() {
        let u = q("latest");
        assert!(u.has(Quirk::DropInitOnAllocInArgs));
        assert!(u.has(Quirk::SupportsOverlay));
        assert!(u.has(Quirk::SupportsSelinux));
        assert!(!u.has(Quirk::UseSdBootForUefi));
        assert!(!u.has(Quirk::SupportsMetalPlatformConsoleTtyS0));
        assert!(!u.has(Quirk::SupportsIma));
        assert!(!u.has(Quirk::ForcesLockdownConfidentiality));
        assert_eq!(u.boot_partition_size_mib(), 2000);
        assert_eq!(u.xfs_mkfs_config(), "lts_6.18");
    }

    #[test]
    fn valued_quirks() {
        assert_eq!(q("v1.10.3").boot_partition_size_mib(), 1000);
        assert_eq!(q("v1.11.0").boot_partition_size_mib(), 2000);
        assert_eq!(q("v1.7.0").xfs_mkfs_config(), "lts_6.1");
        assert_eq!(q("v1.9.0").xfs_mkfs_config(), "lts_6.6");
        assert_eq!(q("v1.12.0").xfs_mkfs_config(), "lts_6.12");
        assert_eq!(q("v1.13.0").xfs_mkfs_config(), "lts_6.18");
        assert_eq!(q("v1.9.0").kernel_modules_path(), "lib/modules");
        assert_eq!(q("v1.10.0").firmware_path(), "usr/lib/firmware");
    }

    #[test]
    fn supported_versions() {
        let v = |s: &str| Version::parse_strict(s).unwrap();
        assert!(ensure_supported(&v("v1.8.0-alpha.1")).is_ok());
        assert!(ensure_supported(&v("v1.14.0")).is_ok());
        let err = ensure_supported(&v("v1.7.6")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported Talos version v1.7.6: this appliance builds Talos 1.8 and later"
        );
    }
}
