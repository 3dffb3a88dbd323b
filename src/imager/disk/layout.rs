//! Partition layouts of disk images (imager spec §5.1 step 4, §5.3): which partitions, in which
//! order and of which size, for each bootloader mode; placed with the GPT allocator so every
//! partition's LBAs, byte offset and size are known before anything is written.
//!
//! | # | grub | sd-boot | dual-boot |
//! | --- | --- | --- | --- |
//! | 1 | EFI 100 MiB | EFI 100 + 1 + BOOT MiB | EFI 100 + 1 + BOOT MiB |
//! | 2 | BIOS 1 MiB | META 1 MiB | BIOS 1 MiB |
//! | 3 | BOOT 1000/2000 MiB | (IMAGECACHE) | BOOT 1000/2000 MiB |
//! | 4 | META 1 MiB | | META 1 MiB |
//! | … | (STATE 100 MiB, EPHEMERAL rest: targets < 1.8) (IMAGECACHE) | | (IMAGECACHE) |
//!
//! BOOT is 2000 MiB for targets >= 1.11, else 1000 MiB. GRUB needs BOOT to be partition 3.
//! The layout does not depend on the architecture; the architecture only decides whether the
//! BIOS partition receives GRUB's i386-pc boot code ([`DiskLayout::embeds_bios_boot_code`]).

use std::fs::File;
use std::io::{Seek, Write};
use std::path::Path;

use uuid::Uuid;

use super::gpt::{ATTR_LEGACY_BIOS_BOOTABLE, Geometry, Gpt};
use super::guid::{
    BIOS_BOOT_PARTITION, EFI_SYSTEM_PARTITION, LINUX_FILESYSTEM_DATA, disk_guid, guid_from_label,
};
use crate::imager::error::ImagerError;
use crate::imager::profile::{Arch, MIB, OutputKind, Profile};
use crate::imager::quirks::Quirk;
use crate::schematic::Bootloader;

/// EFI system partition size in GRUB mode.
pub const EFI_GRUB_SIZE: u64 = 100 * MIB;
/// BIOS boot partition size.
pub const BIOS_SIZE: u64 = MIB;
/// META partition size.
pub const META_SIZE: u64 = MIB;
/// STATE partition size (targets < 1.8 only).
pub const STATE_SIZE: u64 = 100 * MIB;
/// Default logical sector size (`diskSectorSize: 0`).
pub const DEFAULT_SECTOR_SIZE: u64 = 512;

/// What goes into a partition, for the stage that fills it (imager spec §5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// FAT32 (`mkfs.vfat -F 32`): EFI.
    Vfat,
    /// XFS populated from a prototype file: BOOT.
    Xfs,
    /// ext4 populated from a tar stream: IMAGECACHE.
    Ext4,
    /// Raw bytes written by the imager (BIOS: GRUB core.img; META: the ADV), else zeros.
    Zeroes,
    /// Left unformatted for Talos to format at first boot: STATE, EPHEMERAL.
    Unformatted,
}

/// One partition to allocate: label, size (0 = the rest of the disk), type and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    /// The partition label (GPT name): `EFI`, `BIOS`, `BOOT`, `META`, …
    pub label: &'static str,
    /// Size in bytes; 0 takes the largest free range.
    pub size: u64,
    /// Partition type GUID.
    pub type_guid: Uuid,
    /// GPT attribute flags.
    pub attributes: u64,
    /// What the partition holds.
    pub content: Content,
}

impl PartitionSpec {
    fn new(label: &'static str, size: u64, type_guid: Uuid, content: Content) -> PartitionSpec {
        PartitionSpec {
            label,
            size,
            type_guid,
            attributes: 0,
            content,
        }
    }
}

/// The inputs of a layout, taken from the profile's image options (see
/// [`LayoutRequest::from_profile`]) or set directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutRequest {
    /// `imageOptions.diskSize` after the §1.3 bump, without the image cache.
    pub disk_size: u64,
    /// `imageOptions.diskSectorSize` (0 means 512).
    pub sector_size: u64,
    /// The bootloader (never `none`).
    pub bootloader: Bootloader,
    /// Target architecture.
    pub arch: Arch,
    /// BOOT partition size in bytes (quirk `PartitionSizes`: 2000 MiB for >= 1.11, else 1000).
    pub boot_size: u64,
    /// Whether STATE and EPHEMERAL are created (targets < 1.8, quirk `SkipDataPartitions`).
    pub data_partitions: bool,
    /// Size of the IMAGECACHE partition, when the image carries an image cache
    /// ([`image_cache_partition_size`]); it is added to the disk size.
    pub image_cache_size: Option<u64>,
    /// LBAs to leave free before the primary entry array (overlay `partitionOptions.offset`).
    pub skip_lbas: u64,
}

impl LayoutRequest {
    /// The request for a disk-image profile whose output defaults were applied (bootloader
    /// chosen, disk size bumped); no image cache; the overlay's GPT offset once its
    /// installer's `get-options` ran.
    pub fn from_profile(profile: &Profile) -> Result<LayoutRequest, ImagerError> {
        let opts = match (&profile.output.kind, &profile.output.image_options) {
            (OutputKind::Image, Some(o)) => o,
            _ => {
                return Err(ImagerError::Validation("image options are required".into()));
            }
        };
        let q = profile.quirks();
        Ok(LayoutRequest {
            disk_size: opts.disk_size,
            sector_size: opts.disk_sector_size,
            bootloader: opts.bootloader,
            arch: profile.arch,
            boot_size: q.boot_partition_size_mib() * MIB,
            data_partitions: !q.has(Quirk::SkipDataPartitions),
            image_cache_size: None,
            skip_lbas: profile.overlay.as_ref().map_or(0, |o| o.partition_offset),
        })
    }

    /// The logical sector size in effect (512 when unset).
    pub fn effective_sector_size(&self) -> u64 {
        if self.sector_size == 0 {
            DEFAULT_SECTOR_SIZE
        } else {
            self.sector_size
        }
    }

    /// The size of the disk file: `disk_size` plus the image cache partition.
    pub fn total_disk_size(&self) -> u64 {
        self.disk_size + self.image_cache_size.unwrap_or(0)
    }

    /// The partitions in allocation order (§5.1 step 4): boot partitions, META, STATE and
    /// EPHEMERAL (targets < 1.8), IMAGECACHE.
    pub fn partition_specs(&self) -> Result<Vec<PartitionSpec>, ImagerError> {
        let efi = |size| PartitionSpec::new("EFI", size, EFI_SYSTEM_PARTITION, Content::Vfat);
        let bios = PartitionSpec {
            attributes: ATTR_LEGACY_BIOS_BOOTABLE,
            ..PartitionSpec::new("BIOS", BIOS_SIZE, BIOS_BOOT_PARTITION, Content::Zeroes)
        };
        let boot = PartitionSpec::new("BOOT", self.boot_size, LINUX_FILESYSTEM_DATA, Content::Xfs);
        // the UKI ESP replaces EFI + BIOS + BOOT of a GRUB disk
        let efi_uki = EFI_GRUB_SIZE + BIOS_SIZE + self.boot_size;
        let mut specs = match self.bootloader {
            Bootloader::Grub => vec![efi(EFI_GRUB_SIZE), bios, boot],
            Bootloader::SdBoot => vec![efi(efi_uki)],
            Bootloader::DualBoot => vec![efi(efi_uki), bios, boot],
            Bootloader::None => {
                return Err(ImagerError::Validation(
                    "bootloader must be set for image output".into(),
                ));
            }
        };
        let data = LINUX_FILESYSTEM_DATA;
        specs.push(PartitionSpec::new("META", META_SIZE, data, Content::Zeroes));
        if self.data_partitions {
            specs.push(PartitionSpec::new(
                "STATE",
                STATE_SIZE,
                data,
                Content::Unformatted,
            ));
            specs.push(PartitionSpec::new(
                "EPHEMERAL",
                0,
                data,
                Content::Unformatted,
            ));
        }
        if let Some(size) = self.image_cache_size {
            specs.push(PartitionSpec::new("IMAGECACHE", size, data, Content::Ext4));
        }
        Ok(specs)
    }
}

/// `(Σ regular file sizes × 1.2)` with integer arithmetic, rounded up to 1 MiB (§5.1 step 1).
pub fn image_cache_partition_size(regular_file_bytes: u64) -> u64 {
    let padded = (u128::from(regular_file_bytes) * 12 / 10).div_ceil(u128::from(MIB));
    u64::try_from(padded * u128::from(MIB)).unwrap_or(u64::MAX)
}

/// A partition placed on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedPartition {
    /// 1-based partition number.
    pub number: usize,
    /// The label (GPT name).
    pub label: &'static str,
    /// First LBA.
    pub first_lba: u64,
    /// Last LBA (inclusive).
    pub last_lba: u64,
    /// Byte offset on the disk.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Partition type GUID.
    pub type_guid: Uuid,
    /// Unique partition GUID (`GUIDFromLabel(label)`; also the filesystem UUID).
    pub part_guid: Uuid,
    /// GPT attribute flags.
    pub attributes: u64,
    /// What the partition holds.
    pub content: Content,
}

/// A planned disk: geometry and placed partitions, plus the GPT that describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLayout {
    /// Size of the disk file in bytes.
    pub disk_size: u64,
    /// The bootloader the layout is for.
    pub bootloader: Bootloader,
    /// Target architecture.
    pub arch: Arch,
    /// The partitions in entry order.
    pub partitions: Vec<PlacedPartition>,
    gpt: Gpt,
}

impl DiskLayout {
    /// Allocates the partitions of `req` in order on a fresh GPT with the deterministic GUIDs.
    pub fn plan(req: &LayoutRequest) -> Result<DiskLayout, ImagerError> {
        let sector = req.effective_sector_size();
        let disk_size = req.total_disk_size();
        let geometry = Geometry::new(disk_size, sector, req.skip_lbas)?;
        let mut gpt = Gpt::new(geometry, disk_guid());
        let specs = req.partition_specs()?;
        for s in &specs {
            gpt.allocate(
                s.size,
                s.label,
                s.type_guid,
                guid_from_label(s.label),
                s.attributes,
            )?;
        }
        // sequential allocation on a fresh table keeps list order = entry order
        let partitions = gpt
            .partitions()
            .iter()
            .zip(&specs)
            .enumerate()
            .map(|(i, (p, s))| PlacedPartition {
                number: i + 1,
                label: s.label,
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                offset: p.offset(sector),
                size: p.size(sector),
                type_guid: p.type_guid,
                part_guid: p.part_guid,
                attributes: p.attributes,
                content: s.content,
            })
            .collect::<Vec<_>>();
        if partitions
            .iter()
            .zip(&specs)
            .any(|(p, s)| p.label != s.label)
        {
            return Err(ImagerError::Inconsistent(
                "partition allocation did not keep the list order".into(),
            ));
        }
        Ok(DiskLayout {
            disk_size,
            bootloader: req.bootloader,
            arch: req.arch,
            partitions,
            gpt,
        })
    }

    /// The GPT geometry (sector size, table LBAs, usable range).
    pub fn geometry(&self) -> &Geometry {
        self.gpt.geometry()
    }

    /// The logical sector size.
    pub fn sector_size(&self) -> u64 {
        self.gpt.geometry().sector_size
    }

    /// The GPT this layout writes.
    pub fn gpt(&self) -> &Gpt {
        &self.gpt
    }

    /// The partition with a label.
    pub fn partition(&self, label: &str) -> Option<&PlacedPartition> {
        self.partitions.iter().find(|p| p.label == label)
    }

    /// Whether GRUB's i386-pc boot code goes into the BIOS partition and sector 0 (§5.5.3):
    /// amd64 disks with a BIOS partition (grub or dual-boot).
    pub fn embeds_bios_boot_code(&self) -> bool {
        self.arch == Arch::Amd64 && self.partition("BIOS").is_some()
    }

    /// Writes the protective MBR record and both GPT copies; partition data is not touched.
    pub fn write_gpt<W: Write + Seek>(&self, w: &mut W) -> Result<(), ImagerError> {
        self.gpt.write(w)
    }
}

/// Plans the layout of `req` and writes its GPT into `w` (a sparse disk file of
/// [`LayoutRequest::total_disk_size`] bytes, see [`create_sparse_disk`]).
pub fn write_layout<W: Write + Seek>(
    w: &mut W,
    req: &LayoutRequest,
) -> Result<DiskLayout, ImagerError> {
    let layout = DiskLayout::plan(req)?;
    layout.write_gpt(w)?;
    Ok(layout)
}

/// Creates (or truncates) `path` as a sparse file of `size` bytes (§5.1 step 2).
pub fn create_sparse_disk(path: &Path, size: u64) -> Result<File, ImagerError> {
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.set_len(size)?;
    Ok(f)
}

#[cfg(test)]
#[path = "layout_tests.rs"]
mod tests;
