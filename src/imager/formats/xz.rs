//! A streaming `.xz` writer that encodes fixed-size blocks itself: one xz stream (CRC64 checks,
//! LZMA2 blocks of [`XZ_BLOCK_SIZE`](super::compress::XZ_BLOCK_SIZE) uncompressed bytes, the
//! layout `xz -T` writes) in which a block of zeros is encoded once and its bytes reused.
//!
//! Cloud disk images are ~11 GiB and almost all holes: liblzma spends ~45 s compressing those
//! zeros, this writer ~1 s copying them. Blocks that hold data are compressed in parallel by
//! `threads` workers; block boundaries are fixed, so the output does not depend on `threads`.

use std::io::{self, Write};

use liblzma::stream::{Action, Filters, LzmaOptions, Status, Stream};

use crate::zeros::is_zero;

/// xz stream header magic.
const MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0x00];
/// Stream flags: check type CRC64.
const FLAGS: [u8; 2] = [0x00, 0x04];
/// LZMA2 filter ID.
const LZMA2: u8 = 0x21;
/// Size of the CRC64 check after each block.
const CHECK_LEN: u64 = 8;

/// One encoded block: its bytes (header, data, padding, check) and its index record.
#[derive(Clone)]
struct Block {
    bytes: Vec<u8>,
    unpadded: u64,
    uncompressed: u64,
}

/// Streams `.xz` into `out`; call [`XzWriter::finish`] to write the index and footer.
pub struct XzWriter<'a> {
    out: &'a mut dyn Write,
    preset: u32,
    block_size: usize,
    threads: usize,
    /// The block being filled.
    current: Vec<u8>,
    /// Full data blocks waiting to be compressed together.
    pending: Vec<Vec<u8>>,
    /// The encoding of a full block of zeros, once one has been seen.
    zero_block: Option<Block>,
    /// (unpadded size, uncompressed size) of every block written, for the index.
    records: Vec<(u64, u64)>,
}

impl<'a> XzWriter<'a> {
    /// Starts a stream at `preset` (0–9) with blocks of `block_size` bytes into `out`.
    pub fn new(
        out: &'a mut dyn Write,
        preset: u32,
        block_size: usize,
        threads: usize,
    ) -> io::Result<Self> {
        if preset > 9 || block_size == 0 {
            return Err(io::Error::other(format!(
                "xz preset {preset} / block size {block_size} out of range"
            )));
        }
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&FLAGS);
        header.extend_from_slice(&crc32(&FLAGS).to_le_bytes());
        out.write_all(&header)?;
        Ok(XzWriter {
            out,
            preset,
            block_size,
            threads: threads.max(1),
            current: Vec::with_capacity(block_size),
            pending: Vec::new(),
            zero_block: None,
            records: Vec::new(),
        })
    }

    /// Takes the full current block: queued for compression, or the cached zero encoding.
    fn take_full_block(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.current, Vec::with_capacity(self.block_size));
        if is_zero(&data) {
            self.flush_pending()?;
            let block = match &self.zero_block {
                Some(b) => b.clone(),
                None => {
                    let b = encode_block(&data, self.preset)?;
                    self.zero_block = Some(b.clone());
                    b
                }
            };
            self.emit(&block)
        } else {
            self.pending.push(data);
            if self.pending.len() >= self.threads {
                self.flush_pending()?;
            }
            Ok(())
        }
    }

    /// Compresses the queued data blocks (in parallel) and writes them in order.
    fn flush_pending(&mut self) -> io::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let preset = self.preset;
        let blocks: Vec<io::Result<Block>> = if pending.len() <= 1 {
            pending.iter().map(|d| encode_block(d, preset)).collect()
        } else {
            std::thread::scope(|s| {
                let workers: Vec<_> = pending
                    .iter()
                    .map(|d| s.spawn(move || encode_block(d, preset)))
                    .collect();
                workers
                    .into_iter()
                    .map(|w| {
                        w.join()
                            .unwrap_or_else(|_| Err(io::Error::other("xz worker panicked")))
                    })
                    .collect()
            })
        };
        for block in blocks {
            self.emit(&block?)?;
        }
        Ok(())
    }

    fn emit(&mut self, block: &Block) -> io::Result<()> {
        self.out.write_all(&block.bytes)?;
        self.records.push((block.unpadded, block.uncompressed));
        Ok(())
    }

    /// Writes the last block, the index and the stream footer; flushes `out`.
    pub fn finish(mut self) -> io::Result<()> {
        self.flush_pending()?;
        if !self.current.is_empty() {
            let last = encode_block(&self.current, self.preset)?;
            self.emit(&last)?;
        }
        let mut index = vec![0x00];
        put_varint(&mut index, self.records.len() as u64);
        for &(unpadded, uncompressed) in &self.records {
            put_varint(&mut index, unpadded);
            put_varint(&mut index, uncompressed);
        }
        pad4(&mut index);
        index.extend_from_slice(&crc32(&index).to_le_bytes());
        let backward = u32::try_from(index.len() / 4 - 1)
            .map_err(|_| io::Error::other("xz index too large"))?;
        let mut footer = backward.to_le_bytes().to_vec();
        footer.extend_from_slice(&FLAGS);
        let crc = crc32(&footer);
        self.out.write_all(&index)?;
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&footer)?;
        self.out.write_all(b"YZ")?;
        self.out.flush()
    }
}

impl Write for XzWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.block_size - self.current.len();
        let n = buf.len().min(room);
        self.current.extend_from_slice(&buf[..n]);
        if self.current.len() == self.block_size {
            self.take_full_block()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Blocks are whole units: nothing can be flushed before one is full.
        Ok(())
    }
}

/// Encodes one block: header, raw LZMA2 data, padding to 4 bytes, CRC64 of `data`.
fn encode_block(data: &[u8], preset: u32) -> io::Result<Block> {
    let opts = LzmaOptions::new_preset(preset).map_err(io::Error::other)?;
    let mut filters = Filters::new();
    filters.lzma2(&opts);
    let mut stream = Stream::new_raw_encoder(&filters).map_err(io::Error::other)?;
    // Block header: size, flags (one filter, no size fields), LZMA2 with its dictionary byte.
    let mut bytes = vec![0u8, 0x00, LZMA2, 0x01, dict_byte(preset)];
    pad4(&mut bytes);
    // The size byte counts the header with its CRC32, in units of 4 bytes, minus one.
    bytes[0] = ((bytes.len() + 4) / 4 - 1) as u8;
    let crc = crc32(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes.reserve(data.len() / 2 + 4096);
    let mut input = data;
    loop {
        if bytes.capacity() - bytes.len() < 4096 {
            bytes.reserve(bytes.capacity());
        }
        let before = stream.total_in();
        let status = stream
            .process_vec(input, &mut bytes, Action::Finish)
            .map_err(io::Error::other)?;
        input = &input[(stream.total_in() - before) as usize..];
        if status == Status::StreamEnd {
            break;
        }
    }
    let unpadded = bytes.len() as u64 + CHECK_LEN;
    pad4(&mut bytes);
    bytes.extend_from_slice(&crc64(data).to_le_bytes());
    Ok(Block {
        bytes,
        unpadded,
        uncompressed: data.len() as u64,
    })
}

/// The LZMA2 dictionary-size property byte of a preset's dictionary (xz format §5.3.1).
fn dict_byte(preset: u32) -> u8 {
    // Dictionary sizes of presets 0–9: 256 KiB, 1, 2, 4, 4, 8, 8, 16, 32, 64 MiB.
    const LOG2: [u8; 10] = [18, 20, 21, 22, 22, 23, 23, 24, 25, 26];
    // A power of two 2^n is encoded as 2 * (n - 12).
    2 * (LOG2[preset as usize] - 12)
}

fn pad4(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

fn put_varint(v: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        v.push((n as u8) | 0x80);
        n >>= 7;
    }
    v.push(n as u8);
}

/// CRC32 (IEEE) of the xz headers, index and footer.
fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// CRC64 (ECMA-182) of a block's uncompressed data: liblzma's own, which the `liblzma` crate
/// does not wrap; it runs over every input byte, so the vectorised C version is kept.
fn crc64(data: &[u8]) -> u64 {
    // SAFETY: `lzma_crc64` reads exactly `size` bytes starting at `buf` and keeps no pointer
    // after returning; `data` is a live slice of `data.len()` initialised bytes for the whole
    // call, and a CRC of an empty slice reads nothing.
    unsafe { liblzma_sys::lzma_crc64(data.as_ptr(), data.len(), 0) }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn xz(data: &[u8], preset: u32, block: usize, threads: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = XzWriter::new(&mut out, preset, block, threads).unwrap();
        for chunk in data.chunks(70_001) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap();
        out
    }

    fn unxz(bytes: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        liblzma::read::XzDecoder::new(bytes)
            .read_to_end(&mut back)
            .unwrap();
        back
    }

    fn sample() -> Vec<u8> {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut v: Vec<u8> = (0..3 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 7) as u8
            })
            .collect();
        v.extend(std::iter::repeat_n(0u8, 5 << 20));
        v.extend(b"tail that ends mid-block");
        v
    }

    #[test]
    fn liblzma_reads_back_every_shape() {
        let data = sample();
        for (preset, block) in [(0, 1 << 20), (6, 1 << 20), (0, 3 << 20), (1, 16 << 20)] {
            let out = xz(&data, preset, block, 2);
            assert!(unxz(&out) == data, "preset {preset} block {block}");
        }
        assert!(unxz(&xz(b"", 0, 1 << 20, 1)).is_empty());
        assert_eq!(unxz(&xz(b"x", 9, 1 << 20, 1)), b"x");
    }

    #[test]
    fn zero_blocks_are_encoded_once_and_reused() {
        let zeros = vec![0u8; 8 << 20];
        let out = xz(&zeros, 0, 1 << 20, 2);
        assert!(unxz(&out) == zeros);
        // Eight identical blocks follow the 12-byte stream header.
        let one = encode_block(&zeros[..1 << 20], 0).unwrap().bytes;
        for i in 0..8 {
            assert!(
                out[12 + i * one.len()..12 + (i + 1) * one.len()] == one[..],
                "block {i}"
            );
        }
        assert!(out.len() < 8 * 1024, "{}", out.len());
    }

    #[test]
    fn output_does_not_depend_on_threads() {
        let data = sample();
        let one = xz(&data, 0, 1 << 20, 1);
        assert_eq!(one, xz(&data, 0, 1 << 20, 2));
        assert_eq!(one, xz(&data, 0, 1 << 20, 5));
    }

    #[test]
    fn bad_parameters_are_refused() {
        let mut out = Vec::new();
        assert!(XzWriter::new(&mut out, 10, 1 << 20, 1).is_err());
        assert!(XzWriter::new(&mut out, 0, 0, 1).is_err());
    }
}
