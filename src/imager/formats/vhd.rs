//! Fixed VHD (`qemu-img convert -O vpc -o subformat=fixed,force_size`; imager spec §5.9):
//! the raw bytes followed by a 512-byte "conectix" footer.
//!
//! The footer matches qemu's for `force_size` field by field (creator `qem2`, version
//! 0x00050003, host `Wi2k`, maximal CHS geometry, original and current size = the
//! raw size exactly) except two fields qemu fills from the clock and the RNG: the timestamp is
//! [`SOURCE_DATE_EPOCH`](crate::imager::SOURCE_DATE_EPOCH) and the UUID is derived from the
//! label `talos-image-vhd`, so the output is reproducible.

use std::io::{self, Write};

use crate::imager::SOURCE_DATE_EPOCH;
use crate::imager::disk::guid::guid_from_label;

use super::sparse::RawImage;

/// Seconds between the Unix epoch and the VHD epoch (2000-01-01T00:00:00Z).
const VHD_EPOCH: u64 = 946_684_800;
/// The CHS geometry qemu writes with `force_size` (the maximum: 65535/16/255), which tells
/// readers to use the current-size field instead of CHS.
const FORCE_SIZE_CHS: (u16, u8, u8) = (65535, 16, 255);

/// The 512-byte footer of a fixed VHD of `size` bytes.
pub fn footer(size: u64) -> [u8; 512] {
    let mut f = [0u8; 512];
    f[0..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes()); // features: reserved bit
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // format version
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes()); // data offset: none (fixed)
    let ts = SOURCE_DATE_EPOCH.saturating_sub(VHD_EPOCH) as u32;
    f[24..28].copy_from_slice(&ts.to_be_bytes());
    f[28..32].copy_from_slice(b"qem2"); // qemu's creator app when force_size is set
    f[32..36].copy_from_slice(&0x0005_0003u32.to_be_bytes());
    f[36..40].copy_from_slice(b"Wi2k");
    f[40..48].copy_from_slice(&size.to_be_bytes()); // original size
    f[48..56].copy_from_slice(&size.to_be_bytes()); // current size
    let (c, h, s) = FORCE_SIZE_CHS;
    f[56..58].copy_from_slice(&c.to_be_bytes());
    f[58] = h;
    f[59] = s;
    f[60..64].copy_from_slice(&2u32.to_be_bytes()); // disk type: fixed
    f[68..84].copy_from_slice(guid_from_label("talos-image-vhd").as_bytes());
    let sum = f.iter().fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
    f[64..68].copy_from_slice(&(!sum).to_be_bytes());
    f
}

/// Writes `img` as a fixed VHD into `out`; the raw size must be a multiple of 512.
pub fn write_vhd(img: &RawImage, out: &mut dyn Write) -> io::Result<()> {
    let size = img.size();
    if !size.is_multiple_of(512) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("VHD needs a disk size that is a multiple of 512 bytes, got {size}"),
        ));
    }
    let regions = img.fs_data_regions()?;
    let mut buf = Vec::new();
    img.copy_range(&regions, 0, size, out, &mut buf)?;
    out.write_all(&footer(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_fields() {
        let f = footer(1246 << 20);
        assert_eq!(&f[0..8], b"conectix");
        assert_eq!(&f[28..32], b"qem2");
        assert_eq!(&f[48..56], &(1246u64 << 20).to_be_bytes());
        assert_eq!(&f[56..60], &[0xff, 0xff, 0x10, 0xff]);
    }

    #[test]
    fn checksum_is_ones_complement() {
        let f = footer(1 << 30);
        let mut g = f;
        g[64..68].fill(0);
        let sum = g.iter().fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
        assert_eq!(u32::from_be_bytes([f[64], f[65], f[66], f[67]]), !sum);
    }
}
