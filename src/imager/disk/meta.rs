//! The META partition of a disk image (imager spec §4.5): the profile's `metaContents` (plus
//! `0x11 = dual-boot` where it applies), encoded by the ADV writer of [`crate::imager::meta`]
//! and written at the META partition's offset.

use std::io::{Seek, Write};

use super::gpt::write_at;
use super::layout::DiskLayout;
use crate::imager::error::ImagerError;
use crate::imager::meta::{META_PARTITION_SIZE, disk_image_meta_values, meta_partition};
use crate::imager::profile::Profile;

/// The META region of a layout for `values`: its byte offset and the whole partition's bytes,
/// or `None` when there are no values (upstream leaves the partition all zeros).
pub fn meta_region(
    layout: &DiskLayout,
    values: &[(u8, String)],
) -> Result<Option<(u64, Vec<u8>)>, ImagerError> {
    let part = layout
        .partition("META")
        .ok_or_else(|| ImagerError::Inconsistent("the disk layout has no META partition".into()))?;
    if part.size != META_PARTITION_SIZE as u64 {
        return Err(ImagerError::Inconsistent(format!(
            "META partition is {} bytes, expected {META_PARTITION_SIZE}",
            part.size
        )));
    }
    if values.is_empty() {
        return Ok(None);
    }
    Ok(Some((part.offset, meta_partition(values)?)))
}

/// Writes the META partition for `values` into a disk laid out by `layout`; writes nothing
/// (the fresh sparse file already reads as zeros) when there are none. Returns whether it wrote.
pub fn write_meta<W: Write + Seek>(
    w: &mut W,
    layout: &DiskLayout,
    values: &[(u8, String)],
) -> Result<bool, ImagerError> {
    match meta_region(layout, values)? {
        Some((offset, bytes)) => {
            write_at(w, offset, &bytes)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Writes the META partition of a disk-image profile: its `metaContents` from the schematic,
/// plus the dual-boot marker ([`disk_image_meta_values`]).
pub fn write_profile_meta<W: Write + Seek>(
    w: &mut W,
    layout: &DiskLayout,
    profile: &Profile,
) -> Result<bool, ImagerError> {
    write_meta(w, layout, &disk_image_meta_values(profile))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::imager::disk::layout::{LayoutRequest, write_layout};
    use crate::imager::meta::{ADV_LENGTH, Adv};
    use crate::imager::profile::{Arch, MIB};
    use crate::schematic::Bootloader;

    fn small_layout() -> (Cursor<Vec<u8>>, DiskLayout) {
        // sd-boot with a 1 MiB BOOT: EFI 100 + 1 + 1 MiB at 1 MiB, then META at 103 MiB
        let req = LayoutRequest {
            disk_size: 110 * MIB,
            sector_size: 0,
            bootloader: Bootloader::SdBoot,
            arch: Arch::Arm64,
            boot_size: MIB,
            data_partitions: false,
            image_cache_size: None,
            skip_lbas: 0,
        };
        let mut disk = Cursor::new(vec![0u8; req.total_disk_size() as usize]);
        let layout = write_layout(&mut disk, &req).unwrap();
        (disk, layout)
    }

    #[test]
    fn written_at_the_partition_offset() {
        let (mut disk, layout) = small_layout();
        let meta = layout.partition("META").unwrap().clone();
        assert_eq!(meta.offset, 103 * MIB);
        let values = vec![(0x0a, "net: {}".to_string()), (0x0c, "user".to_string())];
        assert!(write_meta(&mut disk, &layout, &values).unwrap());
        let bytes = disk.get_ref();
        let region = &bytes[meta.offset as usize..(meta.offset + meta.size) as usize];
        let adv = Adv::read(region);
        assert_eq!(adv.get(0x0a), Some(&b"net: {}"[..]));
        assert_eq!(adv.get(0x0c), Some(&b"user"[..]));
        assert_eq!(region, &meta_partition(&values).unwrap()[..]);
        assert_eq!(region[..ADV_LENGTH], region[ADV_LENGTH..2 * ADV_LENGTH]);
        // nothing outside the partition changed besides the GPT written before
        assert!(
            bytes[(meta.offset + meta.size) as usize..(meta.offset + meta.size + MIB) as usize]
                .iter()
                .all(|b| *b == 0)
        );
    }

    #[test]
    fn no_values_no_write() {
        let (mut disk, layout) = small_layout();
        let before = disk.get_ref().clone();
        assert!(!write_meta(&mut disk, &layout, &[]).unwrap());
        assert_eq!(disk.get_ref(), &before);
        assert_eq!(meta_region(&layout, &[]).unwrap(), None);
    }
}
