//! The GCP output (`.tar.gz`, imager spec §1.6): a tar with one member `disk.raw` stored as a
//! GNU sparse file (type `S`, the "old GNU" format GNU tar writes for `--sparse` with its
//! default archive format), gzip-compressed by the caller.
//!
//! Header fields follow upstream's `tar --sort=name --owner=0 --group=0 --numeric-owner
//! --mtime=@SOURCE_DATE_EPOCH`: uid/gid 0, no user/group names, mode 0644, mtime
//! [`SOURCE_DATE_EPOCH`](crate::imager::SOURCE_DATE_EPOCH). The sparse map is
//! content-defined at 4 KiB (see [`super::sparse`]): only chunks with a non-zero byte are
//! stored, and the map ends with the (real size, 0) entry when the disk ends in a hole, as
//! GNU tar does. Numbers too large for 11 octal digits (disks of 8 GiB and more) use GNU's
//! base-256 encoding. The archive is padded to GNU tar's 10 KiB record size.

use std::io::{self, Write};

use super::ova::member_header;
use super::sparse::{Extent, RawImage};
use crate::zeros::write_zeros;

/// The member name upstream uses.
pub const MEMBER: &str = "disk.raw";
/// Granularity of the stored sparse map.
pub const SPARSE_GRANULARITY: u64 = 4096;
/// GNU tar's default record size (blocking factor 20).
const RECORD: u64 = 10240;
/// Sparse entries in the main header and in each extension header.
const MAIN_ENTRIES: usize = 4;
const EXT_ENTRIES: usize = 21;

/// Encodes `v` into a 12-byte numeric field: octal when it fits 11 digits, else base-256.
fn numeric(field: &mut [u8], v: u64) {
    if v < 1 << 33 {
        let s = format!("{v:011o}\0");
        field.copy_from_slice(s.as_bytes());
    } else {
        field.fill(0);
        field[0] = 0x80;
        let n = field.len();
        field[n - 8..].copy_from_slice(&v.to_be_bytes());
    }
}

/// Writes one sparse entry (offset, numbytes) at `at` of a 512-byte block.
fn entry(block: &mut [u8], at: usize, e: &Extent) {
    numeric(&mut block[at..at + 12], e.offset);
    numeric(&mut block[at + 12..at + 24], e.len);
}

/// The member's sparse map: the data extents, plus the terminating (size, 0) entry when the
/// disk ends in a hole (or has no data at all).
pub fn sparse_map(img: &RawImage) -> io::Result<Vec<Extent>> {
    let mut map = img.data_extents(SPARSE_GRANULARITY)?;
    if map.last().is_none_or(|e| e.end() < img.size()) {
        map.push(Extent {
            offset: img.size(),
            len: 0,
        });
    }
    Ok(map)
}

/// Writes the tar archive (uncompressed) holding `img` as the sparse member `name`.
pub fn write_sparse_tar(img: &RawImage, name: &str, out: &mut dyn Write) -> io::Result<u64> {
    let map = sparse_map(img)?;
    let stored: u64 = map.iter().map(|e| e.len).sum();
    let mut header = member_header(name, stored)?;
    header.set_entry_type(tar::EntryType::GNUSparse);
    {
        let b = header.as_mut_bytes();
        for (i, e) in map.iter().take(MAIN_ENTRIES).enumerate() {
            entry(b, 386 + 24 * i, e);
        }
        b[482] = u8::from(map.len() > MAIN_ENTRIES);
        numeric(&mut b[483..495], img.size());
    }
    header.set_cksum();
    let mut written = 0u64;
    out.write_all(header.as_bytes())?;
    written += 512;

    let rest = map.get(MAIN_ENTRIES..).unwrap_or(&[]);
    let chunks: Vec<&[Extent]> = rest.chunks(EXT_ENTRIES).collect();
    for (k, chunk) in chunks.iter().enumerate() {
        let mut block = [0u8; 512];
        for (i, e) in chunk.iter().enumerate() {
            entry(&mut block, 24 * i, e);
        }
        block[504] = u8::from(k + 1 < chunks.len());
        out.write_all(&block)?;
        written += 512;
    }

    let regions = img.fs_data_regions()?;
    let mut buf = Vec::new();
    for e in map.iter().filter(|e| e.len > 0) {
        img.copy_range(&regions, e.offset, e.len, out, &mut buf)?;
    }
    let data_padded = stored.div_ceil(512) * 512;
    write_zeros(out, data_padded - stored)?;
    written += data_padded;
    // End-of-archive (two zero blocks), then pad to a whole record.
    let end = (written + 1024).div_ceil(RECORD) * RECORD;
    write_zeros(out, end - written)?;
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let mut f = [0u8; 12];
        numeric(&mut f, 8 << 20);
        assert_eq!(&f, b"00040000000\0");
        numeric(&mut f, 8 << 30);
        assert_eq!(f[0], 0x80);
        assert_eq!(u64::from_be_bytes(f[4..12].try_into().unwrap()), 8 << 30);
    }
}
