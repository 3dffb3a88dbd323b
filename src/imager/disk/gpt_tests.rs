use std::io::{Cursor, Seek, SeekFrom, Write};

use super::*;
use crate::imager::disk::guid::{
    BIOS_BOOT_PARTITION, EFI_SYSTEM_PARTITION, LINUX_FILESYSTEM_DATA, disk_guid, guid_from_label,
};

const MIB: u64 = 1024 * 1024;

/// The spec's worked example disk: 4247 MiB = 8 697 856 sectors of 512 B.
const WORKED_SIZE: u64 = 4247 * MIB;

#[test]
fn geometry_512() {
    let g = Geometry::new(WORKED_SIZE, 512, 0).unwrap();
    assert_eq!(g.last_lba, 8_697_855);
    assert_eq!(g.entry_lbas, 32);
    assert_eq!((g.primary_header_lba, g.primary_entries_lba), (1, 2));
    assert_eq!(g.backup_entries_lba, 8_697_823);
    assert_eq!(g.backup_header_lba, 8_697_855);
    assert_eq!(g.first_usable_lba, 2048); // 34 rounded up to the 1 MiB alignment
    assert_eq!(g.last_usable_lba, 8_697_822);
    assert_eq!(g.alignment, 2048);
}

#[test]
fn geometry_4096() {
    let g = Geometry::new(WORKED_SIZE, 4096, 0).unwrap();
    assert_eq!(g.last_lba, 1_087_231);
    assert_eq!(g.entry_lbas, 4);
    assert_eq!(g.primary_entries_lba, 2);
    assert_eq!(g.backup_entries_lba, 1_087_227);
    assert_eq!(g.first_usable_lba, 256);
    assert_eq!(g.last_usable_lba, 1_087_226);
    assert_eq!(g.alignment, 256);
}

#[test]
fn geometry_skip_lbas_and_limits() {
    // an overlay reserving room (e.g. for u-boot) pushes the entries and the first usable LBA
    let g = Geometry::new(WORKED_SIZE, 512, 2048).unwrap();
    assert_eq!(g.primary_entries_lba, 2050);
    assert_eq!(g.first_usable_lba, 4096);
    // a size that is not a multiple of the sector size: the tail is ignored
    let g = Geometry::new(WORKED_SIZE + 100, 512, 0).unwrap();
    assert_eq!(g.last_lba, 8_697_855);
    assert!(Geometry::new(33 * 512, 512, 0).is_err());
    assert!(Geometry::new(WORKED_SIZE, 1000, 0).is_err());
    assert!(Geometry::new(WORKED_SIZE, 256, 0).is_err());
    // 34 sectors: a table, but nothing usable after aligning to 1 MiB
    assert!(Geometry::new(34 * 512, 512, 0).is_err());
    assert!(Geometry::new(3 * MIB, 512, 0).is_ok());
    assert!(Geometry::new(3 * MIB, 512, 4096).is_err());
    assert!(Geometry::new(3 * MIB, 512, u64::MAX).is_err());
}

fn worked_example(sector: u64) -> Gpt {
    let mut gpt = Gpt::new(Geometry::new(WORKED_SIZE, sector, 0).unwrap(), disk_guid());
    let parts: [(&str, u64, Uuid, u64); 4] = [
        ("EFI", 2101 * MIB, EFI_SYSTEM_PARTITION, 0),
        ("BIOS", MIB, BIOS_BOOT_PARTITION, ATTR_LEGACY_BIOS_BOOTABLE),
        ("BOOT", 2000 * MIB, LINUX_FILESYSTEM_DATA, 0),
        ("META", MIB, LINUX_FILESYSTEM_DATA, 0),
    ];
    for (i, (name, size, ty, attrs)) in parts.into_iter().enumerate() {
        let n = gpt
            .allocate(size, name, ty, guid_from_label(name), attrs)
            .unwrap();
        assert_eq!(n, i + 1);
    }
    gpt
}

#[test]
fn sequential_allocation_matches_spec_example() {
    let gpt = worked_example(512);
    let got: Vec<(&str, u64, u64)> = gpt
        .partitions()
        .iter()
        .map(|p| (p.name.as_str(), p.first_lba, p.last_lba))
        .collect();
    assert_eq!(
        got,
        vec![
            ("EFI", 2048, 4_304_895),
            ("BIOS", 4_304_896, 4_306_943),
            ("BOOT", 4_306_944, 8_402_943),
            ("META", 8_402_944, 8_404_991),
        ]
    );
    let meta = &gpt.partitions()[3];
    assert_eq!(meta.offset(512), 8_402_944 * 512);
    assert_eq!(meta.size(512), MIB);
}

fn manual(name: &str, first: u64, last: u64) -> Partition {
    Partition {
        name: name.into(),
        type_guid: LINUX_FILESYSTEM_DATA,
        part_guid: guid_from_label(name),
        first_lba: first,
        last_lba: last,
        attributes: 0,
    }
}

#[test]
fn allocation_takes_smallest_fitting_range() {
    let mut gpt = Gpt::new(Geometry::new(64 * MIB, 512, 0).unwrap(), disk_guid());
    // gaps [2048, 10240) and [12288, 16384): upstream aligns `next.first − 1` *down*, so they
    // count as [2048, 8192) = 3 MiB and [12288, 14336) = 1 MiB; then the tail
    gpt.partitions = vec![manual("A", 10240, 12287), manual("B", 16384, 20479)];
    let n = gpt
        .allocate(MIB, "C", LINUX_FILESYSTEM_DATA, Uuid::nil(), 0)
        .unwrap();
    assert_eq!(n, 2, "inserted between A and B");
    assert_eq!(
        (gpt.partitions[1].first_lba, gpt.partitions[1].last_lba),
        (12288, 14335)
    );
    // 3 MiB fits only in the first gap (3 MiB) or the tail; the first gap is smaller
    let n = gpt
        .allocate(3 * MIB, "D", LINUX_FILESYSTEM_DATA, Uuid::nil(), 0)
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(gpt.partitions[0].first_lba, 2048);
    // an unaligned partition end: the next range starts at the next 1 MiB boundary
    let mut gpt = Gpt::new(Geometry::new(64 * MIB, 512, 0).unwrap(), disk_guid());
    gpt.allocate(1000, "odd", LINUX_FILESYSTEM_DATA, Uuid::nil(), 0)
        .unwrap();
    assert_eq!(gpt.partitions[0].last_lba, 2048, "1000 bytes = 1 sector");
    gpt.allocate(MIB, "next", LINUX_FILESYSTEM_DATA, Uuid::nil(), 0)
        .unwrap();
    assert_eq!(gpt.partitions[1].first_lba, 4096);
}

#[test]
fn zero_size_takes_largest_range_and_full_disk_fails() {
    let mut gpt = Gpt::new(Geometry::new(64 * MIB, 512, 0).unwrap(), disk_guid());
    gpt.allocate(MIB, "META", LINUX_FILESYSTEM_DATA, Uuid::nil(), 0)
        .unwrap();
    let largest = gpt.largest_free();
    // last usable LBA 131038 aligned down to 129024: [4096, 129024)
    assert_eq!(largest, (129_024 - 4096) * 512);
    gpt.allocate(0, "EPHEMERAL", LINUX_FILESYSTEM_DATA, Uuid::nil(), 0)
        .unwrap();
    assert_eq!(
        (gpt.partitions[1].first_lba, gpt.partitions[1].last_lba),
        (4096, 129_023)
    );
    assert_eq!(gpt.largest_free(), 0);
    let err = gpt
        .allocate(MIB, "X", LINUX_FILESYSTEM_DATA, Uuid::nil(), 0)
        .unwrap_err();
    assert!(err.to_string().contains("no free range"), "{err}");
    assert!(
        gpt.allocate(0, "Y", LINUX_FILESYSTEM_DATA, Uuid::nil(), 0)
            .is_err()
    );
}

#[test]
fn names() {
    let mut gpt = Gpt::new(Geometry::new(64 * MIB, 512, 0).unwrap(), disk_guid());
    let long = "x".repeat(MAX_NAME_UNITS + 1);
    assert!(
        gpt.allocate(MIB, &long, LINUX_FILESYSTEM_DATA, Uuid::nil(), 0)
            .is_err()
    );
    let max = "é".repeat(MAX_NAME_UNITS);
    gpt.allocate(MIB, &max, LINUX_FILESYSTEM_DATA, Uuid::nil(), 0)
        .unwrap();
    let entries = gpt.entries_array().unwrap();
    assert_eq!(&entries[56..60], &[0xE9, 0x00, 0xE9, 0x00]);
    assert_eq!(&entries[126..128], &[0xE9, 0x00]);
}

#[test]
fn entry_and_header_bytes() {
    let gpt = worked_example(512);
    let entries = gpt.entries_array().unwrap();
    assert_eq!(entries.len(), 16384);
    // entry 2 = BIOS: type "Hah!IdontNeedEFI", attributes 4, name "BIOS" in UTF-16LE
    let e = &entries[128..256];
    assert_eq!(&e[0..16], b"Hah!IdontNeedEFI");
    assert_eq!(&e[16..32], &guid_from_label("BIOS").to_bytes_le());
    assert_eq!(&e[32..40], &4_304_896u64.to_le_bytes());
    assert_eq!(&e[40..48], &4_306_943u64.to_le_bytes());
    assert_eq!(&e[48..56], &4u64.to_le_bytes());
    assert_eq!(&e[56..66], b"B\0I\0O\0S\0\0\0");
    assert!(entries[4 * 128..].iter().all(|b| *b == 0));

    let h = gpt.header_sector(true, &entries);
    assert_eq!(h.len(), 512);
    assert_eq!(&h[0..8], b"EFI PART");
    assert_eq!(&h[8..12], &[0, 0, 1, 0]);
    assert_eq!(&h[12..16], &92u32.to_le_bytes());
    assert_eq!(&h[20..24], &[0; 4]);
    assert_eq!(&h[24..32], &1u64.to_le_bytes());
    assert_eq!(&h[32..40], &8_697_855u64.to_le_bytes());
    assert_eq!(&h[40..48], &2048u64.to_le_bytes());
    assert_eq!(&h[48..56], &8_697_822u64.to_le_bytes());
    assert_eq!(&h[56..72], &disk_guid().to_bytes_le());
    assert_eq!(&h[72..80], &2u64.to_le_bytes());
    assert_eq!(&h[80..88], &[128, 0, 0, 0, 128, 0, 0, 0]);
    assert_eq!(&h[88..92], &crc32fast::hash(&entries).to_le_bytes());
    assert!(h[92..].iter().all(|b| *b == 0));
    let mut zeroed = h[..92].to_vec();
    zeroed[16..20].fill(0);
    assert_eq!(&h[16..20], &crc32fast::hash(&zeroed).to_le_bytes());

    let b = gpt.header_sector(false, &entries);
    assert_eq!(&b[24..32], &8_697_855u64.to_le_bytes());
    assert_eq!(&b[32..40], &1u64.to_le_bytes());
    assert_eq!(&b[72..80], &8_697_823u64.to_le_bytes());
    assert_eq!(gpt.header_sector(true, &entries).len(), 512);
    assert_eq!(
        worked_example(4096).header_sector(true, &entries).len(),
        4096
    );
}

#[test]
fn crc32_is_ieee() {
    // the standard check value of CRC-32/IEEE (ISO-HDLC)
    assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
}

#[test]
fn protective_mbr() {
    let r = protective_mbr_record(8_697_855);
    assert_eq!(
        r,
        [
            0x00, 0x00, 0x02, 0x00, 0xEE, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0, 0xFF, 0xB7, 0x84, 0x00
        ]
    );
    // a disk past 2 TiB caps the length
    assert_eq!(&protective_mbr_record(1 << 40)[12..16], &[0xFF; 4]);
}

/// A `Write + Seek` that records every write instead of keeping the bytes.
#[derive(Default)]
struct Recorder {
    pos: u64,
    writes: Vec<(u64, usize)>,
}

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writes.push((self.pos, buf.len()));
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for Recorder {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        match to {
            SeekFrom::Start(p) => self.pos = p,
            _ => unreachable!("the writer seeks from the start only"),
        }
        Ok(self.pos)
    }
}

#[test]
fn writes_only_the_table_regions() {
    for sector in [512u64, 4096] {
        let gpt = worked_example(sector);
        let mut rec = Recorder::default();
        gpt.write(&mut rec).unwrap();
        let mut writes = rec.writes.clone();
        writes.sort();
        let last = WORKED_SIZE / sector - 1;
        let s = sector as usize;
        assert_eq!(
            writes,
            vec![
                (446, 16),
                (510, 2),
                (sector, s),
                (2 * sector, 16384),
                ((last - 16384 / sector) * sector, 16384),
                (last * sector, s),
            ],
            "sector {sector}"
        );
    }
}

#[test]
fn round_trip_and_boot_code_preserved() {
    for sector in [512u64, 4096] {
        let size = 64 * MIB;
        let mut disk = Cursor::new(vec![0u8; size as usize]);
        disk.get_mut()[..446].fill(0xCC); // boot code an overlay or GRUB put there
        disk.get_mut()[462..510].fill(0x11); // other MBR records: preserved like upstream
        let mut gpt = Gpt::new(Geometry::new(size, sector, 0).unwrap(), disk_guid());
        gpt.allocate(MIB, "BIOS", BIOS_BOOT_PARTITION, guid_from_label("BIOS"), 4)
            .unwrap();
        gpt.allocate(
            2 * MIB,
            "META",
            LINUX_FILESYSTEM_DATA,
            guid_from_label("META"),
            0,
        )
        .unwrap();
        gpt.write(&mut disk).unwrap();
        let bytes = disk.get_ref();
        assert!(bytes[..446].iter().all(|b| *b == 0xCC));
        assert!(bytes[462..510].iter().all(|b| *b == 0x11));
        assert_eq!(&bytes[510..512], &[0x55, 0xAA]);
        assert_eq!(bytes[446 + 4], 0xEE);
        let back = Gpt::read(&mut disk, size, sector).unwrap();
        assert_eq!(back, gpt);
        // a flipped bit in the entries is caught
        let at = (2 * sector + 60) as usize;
        disk.get_mut()[at] ^= 1;
        assert!(Gpt::read(&mut disk, size, sector).is_err());
    }
}

#[test]
fn read_rejects_garbage() {
    let mut disk = Cursor::new(vec![0u8; (4 * MIB) as usize]);
    let err = Gpt::read(&mut disk, 4 * MIB, 512).unwrap_err();
    assert!(err.to_string().contains("no EFI PART header"), "{err}");
    // a 512-byte-sector table read as 4096 is not found either
    let gpt = Gpt::new(Geometry::new(4 * MIB, 512, 0).unwrap(), disk_guid());
    gpt.write(&mut disk).unwrap();
    assert!(Gpt::read(&mut disk, 4 * MIB, 512).is_ok());
    assert!(Gpt::read(&mut disk, 4 * MIB, 4096).is_err());
    disk.flush().unwrap();
}

/// An in-memory sparse disk: reads are zeros except where something was written.
#[derive(Default)]
struct SparseDisk {
    pos: u64,
    chunks: Vec<(u64, Vec<u8>)>,
}

impl Write for SparseDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.chunks.push((self.pos, buf.to_vec()));
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Read for SparseDisk {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        buf.fill(0);
        let (start, end) = (self.pos, self.pos + buf.len() as u64);
        for (at, data) in &self.chunks {
            let (lo, hi) = ((*at).max(start), (at + data.len() as u64).min(end));
            if lo < hi {
                buf[(lo - start) as usize..(hi - start) as usize]
                    .copy_from_slice(&data[(lo - at) as usize..(hi - at) as usize]);
            }
        }
        self.pos = end;
        Ok(buf.len())
    }
}

impl Seek for SparseDisk {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        match to {
            SeekFrom::Start(p) => self.pos = p,
            _ => unreachable!("seeks from the start only"),
        }
        Ok(self.pos)
    }
}

proptest::proptest! {
    /// Any disk (up to 4 TiB) and any sequence of partition sizes: partitions are aligned,
    /// in order, inside the usable range, never overlap, and the table reads back unchanged.
    #[test]
    fn allocation_invariants_and_round_trip(
        disk_mib in 3u64..4 * 1024 * 1024,
        odd_bytes in 0u64..4096,
        big_sectors in proptest::bool::ANY,
        skip in 0u64..4096,
        sizes in proptest::collection::vec(0u64..64 * 1024 * MIB, 0..10),
    ) {
        let sector = if big_sectors { 4096 } else { 512 };
        let size = disk_mib * MIB + odd_bytes;
        let Ok(geometry) = Geometry::new(size, sector, skip) else {
            return Ok(());
        };
        let mut gpt = Gpt::new(geometry, disk_guid());
        for (i, s) in sizes.iter().enumerate() {
            let name = format!("P{i}");
            let _ = gpt.allocate(*s, &name, LINUX_FILESYSTEM_DATA, guid_from_label(&name), 0);
        }
        let g = *gpt.geometry();
        let mut prev_last = 0;
        for p in gpt.partitions() {
            proptest::prop_assert_eq!(p.first_lba % g.alignment, 0);
            proptest::prop_assert!(p.first_lba >= g.first_usable_lba);
            proptest::prop_assert!(p.last_lba <= g.last_usable_lba);
            proptest::prop_assert!(p.first_lba <= p.last_lba);
            proptest::prop_assert!(p.first_lba > prev_last);
            prev_last = p.last_lba;
        }
        let mut disk = SparseDisk::default();
        gpt.write(&mut disk).unwrap();
        let back = Gpt::read(&mut disk, size, sector).unwrap();
        proptest::prop_assert_eq!(back, gpt);
    }
}
