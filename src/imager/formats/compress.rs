//! Output compression (`.xz`, `.gz`, `.zst`; imager spec §1.6) as streaming writers, and the
//! configurable [`CompressionLevels`].
//!
//! Every encoder is deterministic and its bytes do not depend on the thread count: xz is
//! written in blocks of a fixed size (the block size, not the number of workers, decides the
//! output; see [`super::xz`]), zstd always runs with at least one worker (the
//! zstdmt job layout does not depend on the number of workers), and gzip has a zero mtime.
//! So two appliances with different core counts build the same bytes.

use std::io::{self, Write};

use flate2::{Compression, GzBuilder};
use serde::{Deserialize, Serialize};

use super::xz::XzWriter;
use super::zstd_frames::{ZstdFrameWriter, ZstdOptions};
use crate::imager::error::ImagerError;

/// Compression levels and threads for disk-image outputs (defaults measured in
/// `docs/imager-formats.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CompressionLevels {
    /// xz preset 0–9 (upstream: 0).
    pub xz: u32,
    /// gzip level 0–9 (upstream: pigz 6).
    pub gzip: u32,
    /// zstd level 1–22 (upstream: 18).
    pub zstd: i32,
    /// zstd long-distance matching window as log2 bytes (27 = 128 MiB, the largest a stock
    /// `zstd -d` accepts without `--long`); 0 turns long-distance matching off (upstream).
    pub zstd_window_log: u32,
    /// deflate level of stream-optimised VMDK grains (OVA).
    pub vmdk_deflate: u32,
    /// Worker threads for xz and zstd. Changes speed only, never the output bytes.
    pub threads: u32,
}

/// Uncompressed bytes per xz block; fixed so the output does not depend on `threads`.
pub const XZ_BLOCK_SIZE: u64 = 8 << 20;

impl Default for CompressionLevels {
    /// The measured defaults: as small as upstream's output or smaller, many times faster.
    fn default() -> Self {
        CompressionLevels {
            xz: 0,
            gzip: 6,
            zstd: 1,
            zstd_window_log: 0,
            vmdk_deflate: 1,
            threads: 2,
        }
    }
}

impl CompressionLevels {
    /// The levels the upstream imager uses (`xz -0`, `pigz -6`, `zstd -18`, no long mode).
    pub fn upstream() -> Self {
        CompressionLevels {
            xz: 0,
            gzip: 6,
            zstd: 18,
            zstd_window_log: 0,
            vmdk_deflate: 6,
            threads: 2,
        }
    }

    /// Checks the ranges of every field.
    pub fn validate(&self) -> Result<(), ImagerError> {
        let invalid = |text: String| Err(ImagerError::Validation(text));
        if self.xz > 9 {
            return invalid(format!("xz level {} is not in 0..=9", self.xz));
        }
        if self.gzip > 9 || self.vmdk_deflate > 9 {
            return invalid(format!(
                "gzip/vmdk deflate levels {}/{} are not in 0..=9",
                self.gzip, self.vmdk_deflate
            ));
        }
        if !(1..=22).contains(&self.zstd) {
            return invalid(format!("zstd level {} is not in 1..=22", self.zstd));
        }
        if self.zstd_window_log != 0 && !(10..=30).contains(&self.zstd_window_log) {
            return invalid(format!(
                "zstd window log {} is not 0 or in 10..=30",
                self.zstd_window_log
            ));
        }
        Ok(())
    }

    fn workers(&self) -> u32 {
        self.threads.max(1)
    }
}

/// Which codec to apply to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// No compression.
    None,
    /// xz (LZMA2 blocks in parallel, zero blocks encoded once, CRC64 like `xz`).
    Xz,
    /// gzip (zero mtime, no name).
    Gzip,
    /// zstd (multi-threaded, with checksum like `zstd`).
    Zstd,
}

/// A streaming compressor over a borrowed writer; call [`Compressor::finish`] at the end.
pub enum Compressor<'a> {
    /// Pass-through.
    None(&'a mut dyn Write),
    /// xz.
    Xz(XzWriter<'a>),
    /// gzip.
    Gzip(flate2::write::GzEncoder<&'a mut dyn Write>),
    /// zstd with long-distance matching: one frame, zeros included.
    Zstd(zstd::stream::write::Encoder<'static, &'a mut dyn Write>),
    /// zstd without long-distance matching: data frames and written zero frames.
    ZstdFrames(ZstdFrameWriter<'a>),
}

impl<'a> Compressor<'a> {
    /// Starts a `codec` stream into `out` with `levels`.
    pub fn new(
        codec: Codec,
        levels: &CompressionLevels,
        out: &'a mut dyn Write,
    ) -> io::Result<Self> {
        levels.validate().map_err(io::Error::other)?;
        Ok(match codec {
            Codec::None => Compressor::None(out),
            Codec::Xz => Compressor::Xz(XzWriter::new(
                out,
                levels.xz,
                XZ_BLOCK_SIZE as usize,
                levels.workers() as usize,
            )?),
            Codec::Gzip => Compressor::Gzip(
                GzBuilder::new()
                    .mtime(0)
                    .operating_system(3)
                    .write(out, Compression::new(levels.gzip)),
            ),
            Codec::Zstd if levels.zstd_window_log == 0 => {
                Compressor::ZstdFrames(ZstdFrameWriter::new(
                    out,
                    ZstdOptions {
                        level: levels.zstd,
                        workers: levels.workers(),
                    },
                ))
            }
            Codec::Zstd => {
                // Long mode matches across the zero gaps (the second boot partition's copy
                // of kernel and initramfs), so the image stays one frame.
                let mut enc = zstd::stream::write::Encoder::new(out, levels.zstd)?;
                enc.include_checksum(true)?;
                enc.multithread(levels.workers())?;
                if levels.zstd_window_log != 0 {
                    enc.long_distance_matching(true)?;
                    enc.window_log(levels.zstd_window_log)?;
                }
                Compressor::Zstd(enc)
            }
        })
    }

    /// Ends the stream (writes trailers) and flushes the inner writer.
    pub fn finish(self) -> io::Result<()> {
        let inner = match self {
            Compressor::None(w) => w,
            Compressor::Xz(e) => return e.finish(),
            Compressor::Gzip(e) => e.finish()?,
            Compressor::Zstd(e) => e.finish()?,
            Compressor::ZstdFrames(e) => return e.finish(),
        };
        inner.flush()
    }
}

impl Write for Compressor<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Xz(e) => e.write(buf),
            Compressor::Gzip(e) => e.write(buf),
            Compressor::Zstd(e) => e.write(buf),
            Compressor::ZstdFrames(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Xz(e) => e.flush(),
            Compressor::Gzip(e) => e.flush(),
            Compressor::Zstd(e) => e.flush(),
            Compressor::ZstdFrames(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(codec: Codec, levels: &CompressionLevels, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut c = Compressor::new(codec, levels, &mut out).unwrap();
        for chunk in data.chunks(100_000) {
            c.write_all(chunk).unwrap();
        }
        c.finish().unwrap();
        out
    }

    fn sample() -> Vec<u8> {
        // 20 MiB: pseudo-random, zeros, and a repeat of the first part.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut v: Vec<u8> = (0..6 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        v.extend(std::iter::repeat_n(0u8, 8 << 20));
        let head = v[..6 << 20].to_vec();
        v.extend(head);
        v
    }

    #[test]
    fn output_does_not_depend_on_threads() {
        let data = sample();
        for codec in [Codec::Xz, Codec::Zstd, Codec::Gzip] {
            let one = CompressionLevels {
                threads: 1,
                zstd_window_log: 27,
                ..CompressionLevels::default()
            };
            let three = CompressionLevels { threads: 3, ..one };
            assert_eq!(
                compress(codec, &one, &data),
                compress(codec, &three, &data),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn round_trips() {
        let data = sample();
        let l = CompressionLevels::default();
        let xz = compress(Codec::Xz, &l, &data);
        let mut back = Vec::new();
        io::copy(&mut liblzma::read::XzDecoder::new(&xz[..]), &mut back).unwrap();
        assert!(back == data);
        let zst = compress(Codec::Zstd, &l, &data);
        assert!(zstd::decode_all(&zst[..]).unwrap() == data);
        assert!(zst.len() > 12 << 20, "{}", zst.len());
        // Long mode finds the repeated 6 MiB at 14 MiB distance.
        let long = CompressionLevels {
            zstd_window_log: 27,
            ..l
        };
        let zst = compress(Codec::Zstd, &long, &data);
        assert!(zstd::decode_all(&zst[..]).unwrap() == data);
        assert!(zst.len() < 7 << 20, "{}", zst.len());
        let gz = compress(Codec::Gzip, &l, &data);
        let mut back = Vec::new();
        io::copy(&mut flate2::read::GzDecoder::new(&gz[..]), &mut back).unwrap();
        assert!(back == data);
        assert_eq!(&gz[4..8], &[0, 0, 0, 0], "gzip mtime is zero");
    }

    #[test]
    fn rejects_bad_levels() {
        let bad = CompressionLevels {
            zstd: 0,
            ..CompressionLevels::default()
        };
        assert!(bad.validate().is_err());
        assert!(CompressionLevels::upstream().validate().is_ok());
    }
}
