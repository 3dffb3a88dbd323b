//! A streaming `.zst` writer for disk images: runs of data become ordinary zstd frames
//! (multi-threaded, with checksums), runs of zeros become frames of RLE blocks written
//! directly (4 bytes per 128 KiB), never passed through the compressor.
//!
//! A metal disk image is ~4 GiB of which a few hundred MiB hold data; at level 18 the encoder
//! spent most of its time on the zeros. A `.zst` file may hold any number of frames, and every
//! decoder (`zstd -d`, libzstd, Go's klauspost/compress) reads them in sequence. Zero runs are
//! found on fixed [`BLOCK`]-aligned blocks, so the output depends only on the content.

use std::io::{self, Write};

use crate::zeros::is_zero;

/// Granularity of zero detection.
const BLOCK: usize = 1 << 20;
/// zstd frame magic number (little endian on the wire).
const MAGIC: u32 = 0xFD2F_B528;
/// Largest block a frame with a 128 KiB window may hold.
const RLE_MAX: u64 = 128 << 10;

/// Options of the data frames.
#[derive(Debug, Clone, Copy)]
pub struct ZstdOptions {
    /// Compression level.
    pub level: i32,
    /// Worker threads (at least 1: zstdmt output does not depend on the count).
    pub workers: u32,
}

/// Streams `.zst` into `out`; call [`ZstdFrameWriter::finish`] at the end.
pub struct ZstdFrameWriter<'a> {
    out: &'a mut dyn Write,
    opts: ZstdOptions,
    /// The block being filled.
    current: Vec<u8>,
    /// The data frame being written, if any.
    frame: Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
    /// Zero bytes seen since the last data, not yet written.
    zeros: u64,
    /// Whether any frame has been started (an empty input still gets one empty frame).
    started: bool,
}

impl<'a> ZstdFrameWriter<'a> {
    /// Starts writing into `out`.
    pub fn new(out: &'a mut dyn Write, opts: ZstdOptions) -> Self {
        ZstdFrameWriter {
            out,
            opts,
            current: Vec::with_capacity(BLOCK),
            frame: None,
            zeros: 0,
            started: false,
        }
    }

    /// Routes one block (full, or the last one) to a zero run or a data frame.
    fn take_block(&mut self) -> io::Result<()> {
        let block = std::mem::replace(&mut self.current, Vec::with_capacity(BLOCK));
        if is_zero(&block) {
            self.end_frame()?;
            self.zeros += block.len() as u64;
            return Ok(());
        }
        self.write_zeros()?;
        if self.frame.is_none() {
            self.started = true;
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), self.opts.level)?;
            enc.include_checksum(true)?;
            enc.multithread(self.opts.workers.max(1))?;
            self.frame = Some(enc);
        }
        if let Some(enc) = self.frame.as_mut() {
            enc.write_all(&block)?;
            let produced = enc.get_mut();
            self.out.write_all(produced)?;
            produced.clear();
        }
        Ok(())
    }

    /// Ends the data frame in progress.
    fn end_frame(&mut self) -> io::Result<()> {
        if let Some(enc) = self.frame.take() {
            let rest = enc.finish()?;
            self.out.write_all(&rest)?;
        }
        Ok(())
    }

    /// Writes the pending zero run as one frame of RLE blocks.
    fn write_zeros(&mut self) -> io::Result<()> {
        if self.zeros == 0 {
            return Ok(());
        }
        self.started = true;
        self.out.write_all(&rle_zero_frame(self.zeros))?;
        self.zeros = 0;
        Ok(())
    }

    /// Writes what is left and flushes `out`.
    pub fn finish(mut self) -> io::Result<()> {
        if !self.current.is_empty() {
            self.take_block()?;
        }
        if !self.started && self.zeros == 0 {
            // Empty input: one empty frame, as `zstd` writes, rather than an empty file.
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), self.opts.level)?;
            enc.include_checksum(true)?;
            self.out.write_all(&enc.finish()?)?;
        }
        self.end_frame()?;
        self.write_zeros()?;
        self.out.flush()
    }
}

impl Write for ZstdFrameWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.current.len());
        self.current.extend_from_slice(&buf[..n]);
        if self.current.len() == BLOCK {
            self.take_block()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A zstd frame that decodes to `len` zero bytes: a 128 KiB window, no content size, no
/// checksum, RLE blocks of at most 128 KiB (RFC 8878 §3.1.1).
fn rle_zero_frame(len: u64) -> Vec<u8> {
    let blocks = len.div_ceil(RLE_MAX);
    let mut f = Vec::with_capacity(6 + 4 * blocks as usize);
    f.extend_from_slice(&MAGIC.to_le_bytes());
    // Frame header descriptor: no content size, not single-segment, no checksum, no dictionary.
    f.push(0x00);
    // Window descriptor: exponent 7 (window log 17 = 128 KiB), mantissa 0.
    f.push(7 << 3);
    let mut left = len;
    while left > 0 {
        let size = left.min(RLE_MAX);
        left -= size;
        let last = u32::from(left == 0);
        // Block header (3 bytes LE): last flag, type 1 (RLE), size = bytes regenerated.
        let header = last | (1 << 1) | ((size as u32) << 3);
        f.extend_from_slice(&header.to_le_bytes()[..3]);
        f.push(0x00);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zst(data: &[u8], workers: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = ZstdFrameWriter::new(&mut out, ZstdOptions { level: 3, workers });
        for chunk in data.chunks(300_007) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap();
        out
    }

    fn sample() -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 5) as u8
                })
                .collect()
        };
        let mut v = noise(1_500_000);
        v.extend(std::iter::repeat_n(0u8, 5 << 20));
        v.extend(noise(2 << 20));
        v.extend(std::iter::repeat_n(0u8, 3 << 20));
        v.extend(b"a short tail that is not zero");
        v
    }

    #[test]
    fn libzstd_reads_back_every_shape() {
        let data = sample();
        assert!(zstd::decode_all(&zst(&data, 2)[..]).unwrap() == data);
        let zeros = vec![0u8; (3 << 20) + 12345];
        let out = zst(&zeros, 1);
        assert!(zstd::decode_all(&out[..]).unwrap() == zeros);
        assert!(out.len() < 200, "{}", out.len());
        assert!(zstd::decode_all(&zst(b"", 1)[..]).unwrap().is_empty());
        assert_eq!(zstd::decode_all(&zst(b"x", 1)[..]).unwrap(), b"x");
    }

    #[test]
    fn output_does_not_depend_on_workers_or_write_sizes() {
        let data = sample();
        let one = zst(&data, 1);
        assert_eq!(one, zst(&data, 3));
        let mut out = Vec::new();
        let mut w = ZstdFrameWriter::new(
            &mut out,
            ZstdOptions {
                level: 3,
                workers: 2,
            },
        );
        w.write_all(&data).unwrap();
        w.finish().unwrap();
        assert_eq!(one, out);
    }

    #[test]
    fn zero_frames_are_rle_blocks_of_128_kib() {
        let f = rle_zero_frame((256 << 10) + 5);
        assert_eq!(&f[..6], &[0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x38]);
        assert_eq!(f.len(), 6 + 3 * 4);
        // Two full non-last blocks, then a last one of 5 bytes.
        assert_eq!(&f[6..10], &[0x02, 0x00, 0x10, 0x00]);
        assert_eq!(&f[14..18], &[0x2B, 0x00, 0x00, 0x00]);
    }
}
