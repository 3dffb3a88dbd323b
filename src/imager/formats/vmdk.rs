//! Stream-optimised VMDK (what open-vmdk's `vmdk-convert` and `qemu-img -O vmdk -o
//! subformat=streamOptimized` produce; VMware "Virtual Disk Format 5.0" §stream-optimized),
//! written in one streaming pass.
//!
//! File layout (sectors of 512 bytes):
//!
//! | where | content |
//! | --- | --- |
//! | 0 | sparse extent header, grain directory "at end" (`gdOffset = -1`) |
//! | 1..=20 | embedded descriptor (`createType="streamOptimized"`, adapter `lsilogic`) |
//! | 128.. | for every 64 KiB grain holding a non-zero byte: a grain marker (LBA, size) and the zlib-deflated grain, padded to a sector; after every 512 grains, a GT marker and that grain table |
//! | end | GD marker + grain directory, footer marker + header copy (real `gdOffset`), end-of-stream marker |
//!
//! Every grain table is written (all-zero ones too, as VMware's writers do). The descriptor's
//! CID and long content ID are fixed, so the output is reproducible.

use std::io::{self, Write};

use flate2::{Compress, Compression, FlushCompress, Status};

use super::sparse::{Extent, RawImage};

/// Sector size.
const SECTOR: u64 = 512;
/// Grain size in sectors (64 KiB).
pub const GRAIN_SECTORS: u64 = 128;
/// Grain table entries.
const GT_ENTRIES: u64 = 512;
/// Descriptor area (sectors 1..=20).
const DESCRIPTOR_SECTORS: u64 = 20;
/// First grain marker sector.
const OVERHEAD: u64 = 128;
/// Marker types.
const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;
/// Fixed content ID of the descriptor.
const CID: u32 = 0x7a1_05dd;

/// The 512-byte sparse extent header.
fn header(capacity: u64, gd_offset: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    let mut put = |off: usize, b: &[u8]| h[off..off + b.len()].copy_from_slice(b);
    put(0, b"KDMV");
    put(4, &3u32.to_le_bytes()); // version 3: stream-optimized
    put(8, &(1u32 | 1 << 16 | 1 << 17).to_le_bytes()); // newline test, compressed, markers
    put(12, &capacity.to_le_bytes());
    put(20, &GRAIN_SECTORS.to_le_bytes());
    put(28, &1u64.to_le_bytes()); // descriptor offset
    put(36, &DESCRIPTOR_SECTORS.to_le_bytes());
    put(44, &(GT_ENTRIES as u32).to_le_bytes());
    put(48, &0u64.to_le_bytes()); // redundant GD: none
    put(56, &gd_offset.to_le_bytes());
    put(64, &OVERHEAD.to_le_bytes());
    put(72, &[0, b'\n', b' ', b'\r', b'\n']); // clean shutdown, newline detection chars
    put(77, &1u16.to_le_bytes()); // compression: deflate
    h
}

/// The embedded descriptor text for `capacity` sectors (qemu's template, lsilogic adapter).
pub fn descriptor(capacity: u64) -> String {
    let cylinders = (capacity / (255 * 63)).min(65535);
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         CID={CID:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {capacity} SPARSE \"disk.vmdk\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.virtualHWVersion = \"4\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"255\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.adapterType = \"lsilogic\"\n\
         ddb.longContentID = \"{CID:08x}{CID:08x}{CID:08x}{CID:08x}\"\n"
    )
}

/// A metadata marker sector.
fn marker(num_sectors: u64, kind: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[0..8].copy_from_slice(&num_sectors.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

/// A writer that tracks its position in sectors.
struct Out<'a> {
    w: &'a mut dyn Write,
    pos: u64,
}

impl Out<'_> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }
    /// Pads with zeros to the next sector boundary.
    fn pad(&mut self) -> io::Result<()> {
        let pad = self.pos.div_ceil(SECTOR) * SECTOR - self.pos;
        crate::zeros::write_zeros(self.w, pad)?;
        self.pos += pad;
        Ok(())
    }
    fn sector(&self) -> u64 {
        self.pos / SECTOR
    }
    /// Writes u32 entries as whole sectors.
    fn put_table(&mut self, entries: &[u32]) -> io::Result<()> {
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        self.put(&bytes)?;
        self.pad()
    }
}

/// Writes `img` as a stream-optimised VMDK into `out` with deflate `level`; returns the bytes
/// written. The raw size must be a multiple of 512.
pub fn write_vmdk(img: &RawImage, level: u32, out: &mut dyn Write) -> io::Result<u64> {
    let size = img.size();
    if !size.is_multiple_of(SECTOR) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("VMDK needs a disk size that is a multiple of 512 bytes, got {size}"),
        ));
    }
    let capacity = size / SECTOR;
    let grain_bytes = GRAIN_SECTORS * SECTOR;
    let grains = capacity.div_ceil(GRAIN_SECTORS);
    let tables = grains.div_ceil(GT_ENTRIES);
    let extents = img.data_extents(grain_bytes)?;

    let mut o = Out { w: out, pos: 0 };
    o.put(&header(capacity, u64::MAX))?;
    let desc = descriptor(capacity);
    if desc.len() as u64 > DESCRIPTOR_SECTORS * SECTOR {
        return Err(io::Error::other("VMDK descriptor too long"));
    }
    o.put(desc.as_bytes())?;
    crate::zeros::write_zeros(o.w, OVERHEAD * SECTOR - o.pos)?;
    o.pos = OVERHEAD * SECTOR;

    let mut grain_list = extents
        .iter()
        .flat_map(|e: &Extent| (e.offset / grain_bytes)..e.end().div_ceil(grain_bytes))
        .peekable();
    let mut gd = Vec::with_capacity(tables as usize);
    let mut gt = vec![0u32; GT_ENTRIES as usize];
    let mut raw = vec![0u8; grain_bytes as usize];
    // Deflate expands incompressible data by a few bytes per 16 KiB block at most.
    let mut packed = Vec::with_capacity(2 * grain_bytes as usize);
    let mut z = Compress::new(Compression::new(level), true);
    for t in 0..tables {
        gt.fill(0);
        while let Some(&g) = grain_list.peek() {
            if g >= (t + 1) * GT_ENTRIES {
                break;
            }
            grain_list.next();
            img.read_at(g * grain_bytes, &mut raw)?;
            // The last grain of a disk that is not a multiple of 64 KiB: only its sectors.
            let len = (size - g * grain_bytes).min(grain_bytes) as usize;
            packed.clear();
            z.reset();
            let status = z
                .compress_vec(&raw[..len], &mut packed, FlushCompress::Finish)
                .map_err(io::Error::other)?;
            if status != Status::StreamEnd {
                return Err(io::Error::other(
                    "VMDK grain did not fit the deflate buffer",
                ));
            }
            gt[(g - t * GT_ENTRIES) as usize] = sector32(o.sector())?;
            o.put(&(g * GRAIN_SECTORS).to_le_bytes())?;
            o.put(&(packed.len() as u32).to_le_bytes())?;
            o.put(&packed)?;
            o.pad()?;
        }
        o.put(&marker(GT_ENTRIES * 4 / SECTOR, MARKER_GT))?;
        gd.push(sector32(o.sector())?);
        o.put_table(&gt)?;
    }
    let gd_sectors = (tables * 4).div_ceil(SECTOR);
    o.put(&marker(gd_sectors, MARKER_GD))?;
    let gd_offset = o.sector();
    o.put_table(&gd)?;
    o.put(&marker(1, MARKER_FOOTER))?;
    o.put(&header(capacity, gd_offset))?;
    o.put(&marker(0, MARKER_EOS))?;
    Ok(o.pos)
}

fn sector32(s: u64) -> io::Result<u32> {
    u32::try_from(s).map_err(|_| io::Error::other("VMDK larger than 2 TiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let h = header(2048, u64::MAX);
        assert_eq!(&h[0..4], b"KDMV");
        assert_eq!(u64::from_le_bytes(h[12..20].try_into().unwrap()), 2048);
        assert_eq!(&h[73..77], b"\n \r\n");
        assert_eq!(u16::from_le_bytes([h[77], h[78]]), 1);
    }

    #[test]
    fn descriptor_fits() {
        let d = descriptor(8 << 21);
        assert!(d.len() < 20 * 512);
        assert!(d.contains("RW 16777216 SPARSE \"disk.vmdk\""));
    }
}
