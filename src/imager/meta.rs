//! The META partition (imager spec §4): the Talos ADV (two 256 KiB copies, big-endian TLV,
//! SHA-256 checksum, magics) at offset 0 and the zeroed legacy syslinux ADV in the last
//! 1024 bytes. Entries are written sorted by key so the same values give the same bytes.

use std::collections::BTreeMap;

use crate::sha256::digest as sha256;

use super::error::ImagerError;
use super::profile::{Arch, MetaEntry, OutputKind, Profile};
use super::quirks::Quirk;
use crate::schematic::Bootloader;

/// Size of the META partition.
pub const META_PARTITION_SIZE: usize = 1024 * 1024;
/// Length of one Talos ADV copy.
pub const ADV_LENGTH: usize = 256 * 1024;
/// Magic at offset 0 of each copy.
pub const ADV_MAGIC1: u32 = 0x5A4B_3C2D;
/// Magic in the last 4 bytes of each copy.
pub const ADV_MAGIC2: u32 = 0xA5B4_C3D2;
/// Offset of the SHA-256 checksum in a copy (`Length − 36`).
pub const ADV_CHECKSUM_OFFSET: usize = ADV_LENGTH - 36;
/// Usable bytes for TLV entries (`Length − 40`).
pub const ADV_DATA_CAPACITY: usize = ADV_LENGTH - 40;
/// Size of the legacy syslinux ADV area at the end of the partition (kept zero).
pub const LEGACY_ADV_SIZE: usize = 1024;
/// META key recording the bootloader of a disk image (`DiskImageBootloader`).
pub const KEY_DISK_IMAGE_BOOTLOADER: u8 = 0x11;

/// The Talos ADV contents: tag → value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Adv {
    entries: BTreeMap<u8, Vec<u8>>,
}

impl Adv {
    /// An empty ADV.
    pub fn new() -> Adv {
        Adv::default()
    }

    /// Sets a tag (later sets overwrite); refuses tag 0 (the terminator) and overflow.
    pub fn set(&mut self, tag: u8, value: &[u8]) -> Result<(), ImagerError> {
        if tag == 0 {
            return Err(ImagerError::Validation(
                "META key 0 is reserved (end of entries)".into(),
            ));
        }
        let previous = self.entries.insert(tag, value.to_vec());
        let needed = self.used();
        if needed > ADV_DATA_CAPACITY {
            match previous {
                Some(p) => self.entries.insert(tag, p),
                None => self.entries.remove(&tag),
            };
            return Err(ImagerError::MetaTooLarge {
                needed,
                capacity: ADV_DATA_CAPACITY,
            });
        }
        Ok(())
    }

    /// The value of a tag.
    pub fn get(&self, tag: u8) -> Option<&[u8]> {
        self.entries.get(&tag).map(Vec::as_slice)
    }

    /// All entries in tag order.
    pub fn entries(&self) -> impl Iterator<Item = (u8, &[u8])> {
        self.entries.iter().map(|(k, v)| (*k, v.as_slice()))
    }

    /// Bytes the entries take (value + 8 header bytes each).
    pub fn used(&self) -> usize {
        self.entries.values().map(|v| v.len() + 8).sum()
    }

    /// One 256 KiB copy: magic1, TLVs sorted by tag, zero fill, checksum, magic2.
    pub fn to_block(&self) -> Vec<u8> {
        let mut b = vec![0u8; ADV_LENGTH];
        b[0..4].copy_from_slice(&ADV_MAGIC1.to_be_bytes());
        let mut at = 4;
        for (tag, value) in &self.entries {
            // `set` keeps the total within capacity, so this always fits
            b[at..at + 4].copy_from_slice(&u32::from(*tag).to_be_bytes());
            b[at + 4..at + 8].copy_from_slice(&(value.len() as u32).to_be_bytes());
            b[at + 8..at + 8 + value.len()].copy_from_slice(value);
            at += 8 + value.len();
        }
        b[ADV_LENGTH - 4..].copy_from_slice(&ADV_MAGIC2.to_be_bytes());
        let sum = sha256(&b);
        b[ADV_CHECKSUM_OFFSET..ADV_CHECKSUM_OFFSET + 32].copy_from_slice(&sum);
        b
    }

    /// Parses one copy; `None` when a magic, the checksum or a TLV bound is wrong.
    pub fn from_block(block: &[u8]) -> Option<Adv> {
        if block.len() != ADV_LENGTH {
            return None;
        }
        let be32 = |at: usize| -> Option<u32> {
            block
                .get(at..at + 4)
                .and_then(|s| s.try_into().ok())
                .map(u32::from_be_bytes)
        };
        if be32(0)? != ADV_MAGIC1 || be32(ADV_LENGTH - 4)? != ADV_MAGIC2 {
            return None;
        }
        let mut copy = block.to_vec();
        copy[ADV_CHECKSUM_OFFSET..ADV_CHECKSUM_OFFSET + 32].fill(0);
        if sha256(&copy)[..] != block[ADV_CHECKSUM_OFFSET..ADV_CHECKSUM_OFFSET + 32] {
            return None;
        }
        let mut adv = Adv::new();
        let mut at = 4;
        while at + 8 <= ADV_CHECKSUM_OFFSET {
            let tag = be32(at)?;
            if tag == 0 {
                break;
            }
            let size = be32(at + 4)? as usize;
            let end = at.checked_add(8)?.checked_add(size)?;
            if end > ADV_CHECKSUM_OFFSET || tag > 255 {
                return None;
            }
            adv.entries.insert(tag as u8, block[at + 8..end].to_vec());
            at = end;
        }
        Some(adv)
    }

    /// Reads the ADV from the start of a META partition: copy 1, else copy 2, else empty.
    pub fn read(partition: &[u8]) -> Adv {
        let copy = |i: usize| partition.get(i * ADV_LENGTH..(i + 1) * ADV_LENGTH);
        copy(0)
            .and_then(Adv::from_block)
            .or_else(|| copy(1).and_then(Adv::from_block))
            .unwrap_or_default()
    }
}

/// The full 1 MiB META partition for `values` (applied in order, later duplicates win): all
/// zeros when there are none, else two ADV copies at 0 and the zeroed legacy ADV at the end.
pub fn meta_partition(values: &[(u8, String)]) -> Result<Vec<u8>, ImagerError> {
    let mut part = vec![0u8; META_PARTITION_SIZE];
    if values.is_empty() {
        return Ok(part);
    }
    let mut adv = Adv::new();
    for (k, v) in values {
        adv.set(*k, v.as_bytes())?;
    }
    let block = adv.to_block();
    part[..ADV_LENGTH].copy_from_slice(&block);
    part[ADV_LENGTH..2 * ADV_LENGTH].copy_from_slice(&block);
    // the legacy syslinux ADV (last LEGACY_ADV_SIZE bytes) stays zero, as upstream writes it
    Ok(part)
}

/// The META values a disk image gets (imager spec §4.5): the profile's `metaContents`, plus
/// `0x11 = dual-boot` for amd64, non-SecureBoot, target >= 1.10 dual-boot images.
pub fn disk_image_meta_values(profile: &Profile) -> Vec<(u8, String)> {
    let mut values: Vec<(u8, String)> = profile
        .customization
        .meta_contents
        .iter()
        .map(|MetaEntry { key, value }| (*key, value.clone()))
        .collect();
    let dual_boot = profile.output.kind == OutputKind::Image
        && profile
            .output
            .image_options
            .as_ref()
            .is_some_and(|o| o.bootloader == Bootloader::DualBoot);
    if profile.arch == Arch::Amd64
        && !profile.secureboot
        && profile.quirks().has(Quirk::UseSdBootForUefi)
        && dual_boot
    {
        values.push((KEY_DISK_IMAGE_BOOTLOADER, "dual-boot".into()));
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Version;
    use crate::imager::path::parse_path;

    fn sample() -> Vec<(u8, String)> {
        vec![
            (0x0c, "second".into()),
            (0x0a, "{\"externalIPs\":[\"1.2.3.4\"]}".into()),
            (0x0c, "third".into()),
        ]
    }

    #[test]
    fn round_trip_sorted_and_overwritten() {
        let part = meta_partition(&sample()).unwrap();
        assert_eq!(part.len(), META_PARTITION_SIZE);
        let adv = Adv::read(&part);
        let got: Vec<(u8, &[u8])> = adv.entries().collect();
        assert_eq!(
            got,
            vec![
                (0x0a, &b"{\"externalIPs\":[\"1.2.3.4\"]}"[..]),
                (0x0c, &b"third"[..])
            ]
        );
        // same values in another order give the same bytes
        let mut rev = sample();
        rev.swap(0, 1);
        assert_eq!(meta_partition(&rev).unwrap(), part);
    }

    #[test]
    fn exact_layout() {
        let part = meta_partition(&[(0x0a, "ab".into())]).unwrap();
        assert_eq!(&part[0..4], &[0x5A, 0x4B, 0x3C, 0x2D]);
        assert_eq!(&part[4..8], &[0, 0, 0, 0x0a]);
        assert_eq!(&part[8..12], &[0, 0, 0, 2]);
        assert_eq!(&part[12..14], b"ab");
        assert!(part[14..0x3FFDC].iter().all(|b| *b == 0));
        assert_eq!(&part[0x3FFFC..0x40000], &[0xA5, 0xB4, 0xC3, 0xD2]);
        let mut zeroed = part[..ADV_LENGTH].to_vec();
        zeroed[0x3FFDC..0x3FFFC].fill(0);
        assert_eq!(&part[0x3FFDC..0x3FFFC], &sha256(&zeroed)[..]);
        // copy 2 identical, rest (incl. legacy ADV) zero
        assert_eq!(part[..ADV_LENGTH], part[ADV_LENGTH..2 * ADV_LENGTH]);
        assert!(part[2 * ADV_LENGTH..].iter().all(|b| *b == 0));
    }

    #[test]
    fn empty_values_give_zeros() {
        assert!(meta_partition(&[]).unwrap().iter().all(|b| *b == 0));
        assert_eq!(Adv::read(&[0u8; META_PARTITION_SIZE]), Adv::new());
    }

    #[test]
    fn corrupted_copy1_falls_back_to_copy2() {
        let mut part = meta_partition(&[(0x0a, "net".into())]).unwrap();
        part[20] ^= 0xff; // checksum mismatch in copy 1
        assert_eq!(Adv::read(&part).get(0x0a), Some(&b"net"[..]));
        part[0] = 0; // bad magic in copy 1
        assert_eq!(Adv::read(&part).get(0x0a), Some(&b"net"[..]));
        part[ADV_LENGTH + ADV_LENGTH - 1] = 0; // and copy 2 broken too
        assert_eq!(Adv::read(&part), Adv::new());
    }

    #[test]
    fn capacity() {
        let mut adv = Adv::new();
        let big = vec![b'x'; ADV_DATA_CAPACITY - 8];
        adv.set(1, &big).unwrap();
        let err = adv.set(2, b"").unwrap_err();
        assert!(
            matches!(err, ImagerError::MetaTooLarge { needed, .. } if needed == ADV_DATA_CAPACITY + 8)
        );
        assert_eq!(adv.get(2), None);
        // a full ADV still round-trips
        assert_eq!(Adv::from_block(&adv.to_block()), Some(adv.clone()));
        let too_big = vec![(1u8, "y".repeat(ADV_DATA_CAPACITY))];
        assert!(meta_partition(&too_big).is_err());
        assert!(Adv::new().set(0, b"x").is_err());
    }

    #[test]
    fn dual_boot_key() {
        let v = |s: &str| Version::parse_strict(s).unwrap();
        let with = |path: &str, ver: &str| {
            let mut p = parse_path(path, &v(ver)).unwrap();
            p.apply_output_defaults();
            disk_image_meta_values(&p)
        };
        assert_eq!(
            with("metal-amd64.raw", "v1.10.0"),
            vec![(0x11, "dual-boot".to_string())]
        );
        assert!(with("metal-arm64.raw", "v1.10.0").is_empty()); // sd-boot
        assert!(with("metal-amd64.raw", "v1.9.0").is_empty()); // grub
    }
}
