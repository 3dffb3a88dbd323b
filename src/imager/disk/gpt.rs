//! A GPT writer (and verifying reader) that reproduces go-blockdevice's `partitioning/gpt`, the
//! writer upstream's imager uses for disk images (imager spec §5.2).
//!
//! Only the table regions are written: the protective MBR entry and signature in sector 0, the
//! primary header (LBA 1) and entry array (LBA `2 + skip`), the backup entry array and the backup
//! header (last LBA). Everything else is left as it is, so a sparse file stays sparse and the
//! caller writes partition contents at the offsets [`Partition::offset`] returns.
//!
//! Upstream facts reproduced here, which a generic GPT library gets "wrong":
//! * `firstUsableLBA` is rounded **up** to the 1 MiB alignment and written so (2048 at 512 B
//!   sectors, 256 at 4 KiB), not the classic 34;
//! * allocation takes the *smallest* aligned free range that fits (`[align_up(prev.last + 1),
//!   align_down(next.first − 1)]`, size `(high − low) × sector`);
//! * the entry array is always 128 × 128 bytes, placed right after the header (plus the
//!   overlay's `skipLBAs`) and right before the backup header;
//! * the protective MBR is read-modify-write: only the first partition record and `55 AA` change.

use std::io::{Read, Seek, SeekFrom, Write};

use uuid::Uuid;

use super::guid::{from_gpt_bytes, to_gpt_bytes};
use crate::imager::error::ImagerError;

/// Number of partition entries in the array.
pub const ENTRY_COUNT: usize = 128;
/// Size of one partition entry.
pub const ENTRY_SIZE: usize = 128;
/// Size of the whole entry array (16 KiB).
pub const ENTRIES_BYTES: usize = ENTRY_COUNT * ENTRY_SIZE;
/// Size of the header covered by the header CRC.
pub const HEADER_SIZE: usize = 92;
/// `EFI PART`.
pub const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Header revision 1.0.
pub const REVISION: u32 = 0x0001_0000;
/// Partition alignment in bytes (the device I/O size is never larger for files).
pub const ALIGNMENT_BYTES: u64 = 1024 * 1024;
/// Attribute bit 2, "legacy BIOS bootable" (set on the BIOS boot partition).
pub const ATTR_LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;
/// Longest partition name, in UTF-16 code units.
pub const MAX_NAME_UNITS: usize = 36;
/// Offset of the protective MBR's first partition record in sector 0.
pub const MBR_ENTRY_OFFSET: u64 = 446;

/// Where everything of a GPT lives on a disk of a given size and logical sector size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Logical sector size in bytes (512 or 4096).
    pub sector_size: u64,
    /// `size / sector_size − 1`.
    pub last_lba: u64,
    /// LBAs the entry array takes (32 at 512 B, 4 at 4 KiB).
    pub entry_lbas: u64,
    /// Primary header LBA (always 1).
    pub primary_header_lba: u64,
    /// Primary entry array LBA (`2 + skip_lbas`).
    pub primary_entries_lba: u64,
    /// Backup entry array LBA (`last_lba − entry_lbas`).
    pub backup_entries_lba: u64,
    /// Backup header LBA (`last_lba`).
    pub backup_header_lba: u64,
    /// First usable LBA, already rounded up to the alignment (this is what the header holds).
    pub first_usable_lba: u64,
    /// Last usable LBA (`backup_entries_lba − 1`).
    pub last_usable_lba: u64,
    /// Partition alignment in LBAs (2048 at 512 B, 256 at 4 KiB).
    pub alignment: u64,
}

impl Geometry {
    /// The geometry of a disk of `disk_size` bytes; `skip_lbas` is the overlay's
    /// `partitionOptions.offset` (normally 0).
    pub fn new(disk_size: u64, sector_size: u64, skip_lbas: u64) -> Result<Geometry, ImagerError> {
        if sector_size < 512 || !sector_size.is_power_of_two() {
            return Err(ImagerError::Validation(format!(
                "invalid disk sector size {sector_size}: must be a power of two >= 512"
            )));
        }
        let sectors = disk_size / sector_size;
        if sectors < 34 {
            return Err(ImagerError::Validation(format!(
                "disk of {disk_size} bytes is too small for GPT"
            )));
        }
        let last_lba = sectors - 1;
        if skip_lbas >= last_lba {
            return Err(ImagerError::Validation(format!(
                "partition table offset of {skip_lbas} sectors does not fit a disk of {disk_size} bytes"
            )));
        }
        let entry_lbas = (ENTRIES_BYTES as u64).div_ceil(sector_size);
        let primary_entries_lba = 2 + skip_lbas;
        let backup_entries_lba = last_lba - entry_lbas;
        let alignment = ALIGNMENT_BYTES.max(sector_size).div_ceil(sector_size);
        let first_usable_lba = align_up(primary_entries_lba + entry_lbas, alignment);
        let last_usable_lba = backup_entries_lba - 1;
        if first_usable_lba > last_usable_lba {
            return Err(ImagerError::Validation(format!(
                "disk of {disk_size} bytes leaves no usable space after the GPT"
            )));
        }
        Ok(Geometry {
            sector_size,
            last_lba,
            entry_lbas,
            primary_header_lba: 1,
            primary_entries_lba,
            backup_entries_lba,
            backup_header_lba: last_lba,
            first_usable_lba,
            last_usable_lba,
            alignment,
        })
    }
}

/// `v` rounded up to a multiple of `a`.
fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// `v` rounded down to a multiple of `a`.
fn align_down(v: u64, a: u64) -> u64 {
    v / a * a
}

/// One partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Partition name (the Talos label: `EFI`, `BIOS`, `BOOT`, `META`, …).
    pub name: String,
    /// Partition type GUID.
    pub type_guid: Uuid,
    /// Unique partition GUID.
    pub part_guid: Uuid,
    /// First LBA (inclusive).
    pub first_lba: u64,
    /// Last LBA (inclusive).
    pub last_lba: u64,
    /// Attribute flags ([`ATTR_LEGACY_BIOS_BOOTABLE`], …).
    pub attributes: u64,
}

impl Partition {
    /// Number of sectors.
    pub fn sectors(&self) -> u64 {
        self.last_lba - self.first_lba + 1
    }

    /// Byte offset of the partition on the disk.
    pub fn offset(&self, sector_size: u64) -> u64 {
        self.first_lba * sector_size
    }

    /// Size of the partition in bytes.
    pub fn size(&self, sector_size: u64) -> u64 {
        self.sectors() * sector_size
    }
}

/// A free, aligned range of the table (`allocatableRange` upstream).
#[derive(Debug, Clone, Copy)]
struct FreeRange {
    low: u64,
    high: u64,
    /// Index the next partition allocated in this range gets.
    index: usize,
    /// `(high − low) × sector size`.
    size: u64,
}

/// A GPT being built: geometry, disk GUID and partitions in entry order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpt {
    geometry: Geometry,
    disk_guid: Uuid,
    partitions: Vec<Partition>,
}

impl Gpt {
    /// An empty table.
    pub fn new(geometry: Geometry, disk_guid: Uuid) -> Gpt {
        Gpt {
            geometry,
            disk_guid,
            partitions: Vec::new(),
        }
    }

    /// The geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The disk GUID.
    pub fn disk_guid(&self) -> Uuid {
        self.disk_guid
    }

    /// The partitions in entry order (entry `i` is partition number `i + 1`).
    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }

    fn free_ranges(&self) -> Vec<FreeRange> {
        let g = &self.geometry;
        let mut ranges = Vec::new();
        let mut low = g.first_usable_lba;
        for index in 0..=self.partitions.len() {
            let high = match self.partitions.get(index) {
                Some(p) => p.first_lba.saturating_sub(1),
                None => g.last_usable_lba,
            };
            let (lo, hi) = (align_up(low, g.alignment), align_down(high, g.alignment));
            if hi > lo {
                ranges.push(FreeRange {
                    low: lo,
                    high: hi,
                    index,
                    size: (hi - lo) * g.sector_size,
                });
            }
            if let Some(p) = self.partitions.get(index) {
                low = p.last_lba + 1;
            }
        }
        ranges
    }

    /// Bytes of the largest free range (`LargestContiguousAllocatable`).
    pub fn largest_free(&self) -> u64 {
        self.free_ranges().iter().map(|r| r.size).max().unwrap_or(0)
    }

    /// Allocates a partition of `size` bytes in the smallest free range that fits; a size of 0
    /// takes the largest free range (what Talos' partition layer does for EPHEMERAL). Returns
    /// the 1-based partition number.
    pub fn allocate(
        &mut self,
        size: u64,
        name: &str,
        type_guid: Uuid,
        part_guid: Uuid,
        attributes: u64,
    ) -> Result<usize, ImagerError> {
        encode_name(name)?;
        let ss = self.geometry.sector_size;
        let size = if size == 0 { self.largest_free() } else { size };
        if size < ss {
            return Err(ImagerError::Validation(format!(
                "partition {name}: size {size} is smaller than a sector"
            )));
        }
        let best = self
            .free_ranges()
            .into_iter()
            .filter(|r| r.size >= size)
            .fold(None::<FreeRange>, |best, r| match best {
                Some(b) if b.size <= r.size => Some(b),
                _ => Some(r),
            });
        let Some(range) = best else {
            return Err(ImagerError::Validation(format!(
                "partition {name}: no free range of {size} bytes on a disk of {} bytes",
                (self.geometry.last_lba + 1) * ss
            )));
        };
        debug_assert!(range.low + size / ss - 1 < range.high);
        self.partitions.insert(
            range.index,
            Partition {
                name: name.to_string(),
                type_guid,
                part_guid,
                first_lba: range.low,
                last_lba: range.low + size / ss - 1,
                attributes,
            },
        );
        Ok(range.index + 1)
    }

    /// The 16 KiB entry array.
    pub fn entries_array(&self) -> Result<Vec<u8>, ImagerError> {
        if self.partitions.len() > ENTRY_COUNT {
            return Err(ImagerError::Validation(format!(
                "{} partitions do not fit into {ENTRY_COUNT} GPT entries",
                self.partitions.len()
            )));
        }
        let mut buf = vec![0u8; ENTRIES_BYTES];
        for (i, p) in self.partitions.iter().enumerate() {
            let e = &mut buf[i * ENTRY_SIZE..(i + 1) * ENTRY_SIZE];
            e[0..16].copy_from_slice(&to_gpt_bytes(&p.type_guid));
            e[16..32].copy_from_slice(&to_gpt_bytes(&p.part_guid));
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
            let name = encode_name(&p.name)?;
            e[56..56 + name.len()].copy_from_slice(&name);
        }
        Ok(buf)
    }

    /// One header sector (zero-padded to the sector size) with both CRCs filled in.
    pub fn header_sector(&self, primary: bool, entries: &[u8]) -> Vec<u8> {
        let g = &self.geometry;
        let (my, alternate, entries_lba) = if primary {
            (
                g.primary_header_lba,
                g.backup_header_lba,
                g.primary_entries_lba,
            )
        } else {
            (
                g.backup_header_lba,
                g.primary_header_lba,
                g.backup_entries_lba,
            )
        };
        let mut h = vec![0u8; g.sector_size as usize];
        h[0..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&REVISION.to_le_bytes());
        h[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        // 16..20 header CRC (below), 20..24 reserved
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alternate.to_le_bytes());
        h[40..48].copy_from_slice(&g.first_usable_lba.to_le_bytes());
        h[48..56].copy_from_slice(&g.last_usable_lba.to_le_bytes());
        h[56..72].copy_from_slice(&to_gpt_bytes(&self.disk_guid));
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRY_COUNT as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&crc32fast::hash(entries).to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_SIZE]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Writes the protective MBR record, both headers and both entry arrays; nothing else.
    pub fn write<W: Write + Seek>(&self, w: &mut W) -> Result<(), ImagerError> {
        let g = &self.geometry;
        let entries = self.entries_array()?;
        let at = |lba: u64| lba * g.sector_size;
        write_at(
            w,
            at(g.primary_header_lba),
            &self.header_sector(true, &entries),
        )?;
        write_at(w, at(g.primary_entries_lba), &entries)?;
        write_at(w, at(g.backup_entries_lba), &entries)?;
        write_at(
            w,
            at(g.backup_header_lba),
            &self.header_sector(false, &entries),
        )?;
        // protective MBR: upstream reads sector 0, patches record 1 and the signature and
        // writes it back; writing just those bytes keeps the rest (boot code) the same way
        write_at(w, MBR_ENTRY_OFFSET, &protective_mbr_record(g.last_lba))?;
        write_at(w, 510, &[0x55, 0xAA])?;
        Ok(())
    }

    /// Reads and verifies the primary GPT of a disk (signature, header CRC, entry CRC) and
    /// checks that the backup header and entries agree with it.
    pub fn read<R: Read + Seek>(
        r: &mut R,
        disk_size: u64,
        sector_size: u64,
    ) -> Result<Gpt, ImagerError> {
        let bad = |what: &str| ImagerError::Inconsistent(format!("invalid GPT: {what}"));
        let probe = Geometry::new(disk_size, sector_size, 0)?;
        let primary = read_at(r, sector_size, sector_size as usize)?;
        let field = |h: &[u8], at: usize| -> u64 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let field32 = |h: &[u8], at: usize| -> u32 {
            let mut b = [0u8; 4];
            b.copy_from_slice(&h[at..at + 4]);
            u32::from_le_bytes(b)
        };
        let check_header = |h: &[u8], my: u64| -> Result<(), ImagerError> {
            if &h[0..8] != SIGNATURE || field32(h, 12) as usize != HEADER_SIZE {
                return Err(bad("no EFI PART header"));
            }
            let mut copy = h[..HEADER_SIZE].to_vec();
            copy[16..20].fill(0);
            if crc32fast::hash(&copy) != field32(h, 16) {
                return Err(bad("header CRC mismatch"));
            }
            if field(h, 24) != my
                || field32(h, 80) as usize != ENTRY_COUNT
                || field32(h, 84) as usize != ENTRY_SIZE
            {
                return Err(bad("unexpected header fields"));
            }
            Ok(())
        };
        check_header(&primary, 1)?;
        let entries_lba = field(&primary, 72);
        let geometry = Geometry::new(disk_size, sector_size, entries_lba.saturating_sub(2))?;
        let entries = read_at(r, entries_lba * sector_size, ENTRIES_BYTES)?;
        if crc32fast::hash(&entries) != field32(&primary, 88) {
            return Err(bad("entry array CRC mismatch"));
        }
        if field(&primary, 32) != probe.last_lba
            || field(&primary, 40) != geometry.first_usable_lba
            || field(&primary, 48) != geometry.last_usable_lba
        {
            return Err(bad("header LBAs do not match the disk size"));
        }
        let backup = read_at(r, probe.last_lba * sector_size, sector_size as usize)?;
        check_header(&backup, probe.last_lba)?;
        let backup_entries = read_at(r, field(&backup, 72) * sector_size, ENTRIES_BYTES)?;
        if backup_entries != entries || field32(&backup, 88) != field32(&primary, 88) {
            return Err(bad("backup entry array differs from the primary"));
        }
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&primary[56..72]);
        let mut gpt = Gpt::new(geometry, from_gpt_bytes(guid));
        for e in entries.chunks_exact(ENTRY_SIZE) {
            if e[0..16].iter().all(|b| *b == 0) {
                continue;
            }
            let mut t = [0u8; 16];
            t.copy_from_slice(&e[0..16]);
            let mut u = [0u8; 16];
            u.copy_from_slice(&e[16..32]);
            let units: Vec<u16> = e[56..128]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|c| *c != 0)
                .collect();
            gpt.partitions.push(Partition {
                name: String::from_utf16(&units).map_err(|_| bad("partition name"))?,
                type_guid: from_gpt_bytes(t),
                part_guid: from_gpt_bytes(u),
                first_lba: field(e, 32),
                last_lba: field(e, 40),
                attributes: field(e, 48),
            });
        }
        Ok(gpt)
    }
}

/// The protective MBR's partition record: status 0, CHS `00 02 00`, type `EE`, CHS `FF FF FF`,
/// start LBA 1, length `min(last_lba, 0xFFFFFFFF)`.
pub fn protective_mbr_record(last_lba: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    b[4] = 0xEE;
    b[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    let len = u32::try_from(last_lba).unwrap_or(u32::MAX);
    b[12..16].copy_from_slice(&len.to_le_bytes());
    b
}

/// A partition name as UTF-16LE, refusing more than [`MAX_NAME_UNITS`] code units.
fn encode_name(name: &str) -> Result<Vec<u8>, ImagerError> {
    let units: Vec<u16> = name.encode_utf16().collect();
    if units.len() > MAX_NAME_UNITS {
        return Err(ImagerError::Validation(format!(
            "partition name {name:?} too long: {} bytes",
            units.len() * 2
        )));
    }
    Ok(units.iter().flat_map(|u| u.to_le_bytes()).collect())
}

/// Writes `data` at byte offset `at`.
pub(crate) fn write_at<W: Write + Seek>(w: &mut W, at: u64, data: &[u8]) -> std::io::Result<()> {
    w.seek(SeekFrom::Start(at))?;
    w.write_all(data)
}

/// Reads `len` bytes at byte offset `at`.
fn read_at<R: Read + Seek>(r: &mut R, at: u64, len: usize) -> std::io::Result<Vec<u8>> {
    r.seek(SeekFrom::Start(at))?;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
#[path = "gpt_tests.rs"]
mod tests;
