//! squashfs metadata: the stream of records (inodes, directory listings, table entries) cut into
//! 8 KiB blocks, each stored behind a 16-bit header holding its on-disk size, with bit 15 set
//! when the block is stored uncompressed (because compressing did not make it smaller).

use std::io;

/// Uncompressed size of one metadata block.
pub const METADATA_SIZE: usize = 8192;
/// Header bit: the metadata block that follows is stored uncompressed.
pub const METADATA_UNCOMPRESSED: u16 = 0x8000;

/// The block compressor of one image (zstd at a fixed level).
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    /// zstd compression level.
    pub level: i32,
}

impl Codec {
    /// A compressor for one thread (its zstd context is reused for every block).
    pub fn packer(&self) -> io::Result<Packer> {
        Ok(Packer(zstd::bulk::Compressor::new(self.level)?))
    }
}

/// One thread's block compressor; every block is an independent zstd frame.
pub struct Packer(zstd::bulk::Compressor<'static>);

impl std::fmt::Debug for Packer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Packer")
    }
}

impl Packer {
    /// Compresses `data`; `None` when the result would not be smaller (store it raw).
    pub fn compress(&mut self, data: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let out = self.0.compress(data)?;
        Ok((out.len() < data.len()).then_some(out))
    }
}

/// Where a record starts: the offset of its metadata block (relative to the table start) and
/// the offset inside the uncompressed block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaRef {
    /// On-disk offset of the block's header, relative to the table start.
    pub block: u64,
    /// Offset in the uncompressed block (< 8192).
    pub offset: u16,
}

impl MetaRef {
    /// The 64-bit reference form (`block << 16 | offset`) used by inode and xattr references.
    pub fn packed(self) -> u64 {
        (self.block << 16) | u64::from(self.offset)
    }
}

/// Accumulates records and emits compressed 8 KiB metadata blocks.
#[derive(Debug)]
pub struct MetaWriter {
    packer: Packer,
    out: Vec<u8>,
    pending: Vec<u8>,
    blocks: Vec<u64>,
}

impl MetaWriter {
    /// An empty table.
    pub fn new(codec: Codec) -> io::Result<Self> {
        Ok(MetaWriter {
            packer: codec.packer()?,
            out: Vec::new(),
            pending: Vec::with_capacity(METADATA_SIZE),
            blocks: Vec::new(),
        })
    }

    /// Where the next record written will start.
    pub fn pos(&self) -> MetaRef {
        MetaRef {
            block: self.out.len() as u64,
            offset: self.pending.len() as u16,
        }
    }

    /// Appends `bytes` to the stream; records may cross block boundaries.
    pub fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let room = METADATA_SIZE - self.pending.len();
            let n = room.min(bytes.len());
            self.pending.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.pending.len() == METADATA_SIZE {
                self.flush_block()?;
            }
        }
        Ok(())
    }

    fn flush_block(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.blocks.push(self.out.len() as u64);
        match self.packer.compress(&self.pending)? {
            Some(c) => {
                self.out.extend_from_slice(&(c.len() as u16).to_le_bytes());
                self.out.extend_from_slice(&c);
            }
            None => {
                let header = self.pending.len() as u16 | METADATA_UNCOMPRESSED;
                self.out.extend_from_slice(&header.to_le_bytes());
                self.out.extend_from_slice(&self.pending);
            }
        }
        self.pending.clear();
        Ok(())
    }

    /// Flushes the last partial block; returns the table bytes and the offset of every block
    /// header relative to the table start.
    pub fn finish(mut self) -> io::Result<(Vec<u8>, Vec<u64>)> {
        self.flush_block()?;
        Ok((self.out, self.blocks))
    }
}

/// A lookup table (fragment, id, xattr id): the entries in metadata blocks at `at` (absolute),
/// followed by the uncompressed list of the blocks' absolute locations. Returns the bytes and
/// the absolute offset of that location list (what the superblock points to).
pub fn lookup_table(codec: Codec, entries: &[u8], at: u64) -> io::Result<(Vec<u8>, u64)> {
    let mut w = MetaWriter::new(codec)?;
    w.write(entries)?;
    let (mut bytes, blocks) = w.finish()?;
    let index_at = at + bytes.len() as u64;
    for b in blocks {
        bytes.extend_from_slice(&(at + b).to_le_bytes());
    }
    Ok((bytes, index_at))
}
