//! Reading a sparse raw disk image cheaply: file-system holes via `SEEK_DATA`/`SEEK_HOLE`,
//! content-defined data extents (all-zero chunks count as holes), positioned reads and
//! zero output without touching the disk.
//!
//! Every map this module returns depends only on the file's *bytes*, never on how the file
//! system happens to allocate it: a chunk is "data" iff it holds a non-zero byte. The
//! file-system map only saves reading chunks that are known to be holes. So two appliances
//! with different file systems produce the same output bytes.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::imager::disk::sparse::data_regions;
use crate::zeros::{is_zero, write_zeros};

/// Size of the read buffer and of the zero block written for holes.
pub(crate) const IO_CHUNK: usize = 1 << 20;

/// A byte range `[offset, offset + len)` of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Extent {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// An opened raw disk image.
#[derive(Debug)]
pub struct RawImage {
    file: File,
    size: u64,
}

impl RawImage {
    /// Opens `path` read-only.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        Ok(RawImage { file, size })
    }

    /// Wraps an open file (its current length is the disk size).
    pub fn from_file(file: File) -> io::Result<Self> {
        let size = file.metadata()?.len();
        Ok(RawImage { file, size })
    }

    /// The virtual disk size in bytes (the file length).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Fills `buf` from `offset`; bytes past the end of the file read as zero.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let avail = self.size.saturating_sub(offset).min(buf.len() as u64) as usize;
        self.file.read_exact_at(&mut buf[..avail], offset)?;
        buf[avail..].fill(0);
        Ok(())
    }

    /// The file system's data regions (`SEEK_DATA`/`SEEK_HOLE`), in order. Falls back to one
    /// region covering the whole file where the file system cannot report holes.
    pub fn fs_data_regions(&self) -> io::Result<Vec<Extent>> {
        Ok(data_regions(&self.file)?
            .into_iter()
            .filter_map(|(start, end)| {
                let end = end.min(self.size);
                (end > start).then_some(Extent {
                    offset: start,
                    len: end - start,
                })
            })
            .collect())
    }

    /// Content-defined data extents at `granularity` (a power of two): the disk is cut into
    /// `granularity`-sized chunks from offset 0 and every chunk holding a non-zero byte is
    /// data. Adjacent data chunks are merged; the last extent is clipped to the disk size.
    /// Only the file system's data regions are read.
    pub fn data_extents(&self, granularity: u64) -> io::Result<Vec<Extent>> {
        let g = granularity;
        let mut out: Vec<Extent> = Vec::new();
        let mut buf = vec![0u8; IO_CHUNK.max(g as usize)];
        let mut scanned_to = 0u64;
        for region in self.fs_data_regions()? {
            let start = (region.offset / g * g).max(scanned_to);
            let end = region.end().div_ceil(g).saturating_mul(g).min(self.size);
            let mut pos = start;
            while pos < end {
                // `buf` holds at least one chunk, so `n > 0`.
                let n = (end - pos).min(buf.len() as u64 / g * g) as usize;
                self.read_at(pos, &mut buf[..n])?;
                for (i, chunk) in buf[..n].chunks(g as usize).enumerate() {
                    if !is_zero(chunk) {
                        push_merged(
                            &mut out,
                            Extent {
                                offset: pos + (i as u64) * g,
                                len: chunk.len() as u64,
                            },
                        );
                    }
                }
                pos += n as u64;
            }
            scanned_to = scanned_to.max(end);
        }
        Ok(out)
    }

    /// Copies `len` bytes from `offset` into `out`, reading the disk only inside the file
    /// system's data `regions` (holes are written from a zero block).
    pub fn copy_range(
        &self,
        regions: &[Extent],
        offset: u64,
        len: u64,
        out: &mut dyn Write,
        buf: &mut Vec<u8>,
    ) -> io::Result<()> {
        buf.resize(IO_CHUNK, 0);
        let end = offset + len;
        let mut pos = offset;
        // First region that ends after `pos`.
        let mut idx = regions.partition_point(|r| r.end() <= pos);
        while pos < end {
            match regions.get(idx) {
                Some(r) if r.offset <= pos => {
                    let stop = r.end().min(end);
                    while pos < stop {
                        let n = (stop - pos).min(IO_CHUNK as u64) as usize;
                        self.read_at(pos, &mut buf[..n])?;
                        out.write_all(&buf[..n])?;
                        pos += n as u64;
                    }
                    idx += 1;
                }
                Some(r) => {
                    let stop = r.offset.min(end);
                    write_zeros(out, stop - pos)?;
                    pos = stop;
                }
                None => {
                    write_zeros(out, end - pos)?;
                    pos = end;
                }
            }
        }
        Ok(())
    }
}

/// A file writer that turns all-zero writes into holes (seeks past them) and sets the final
/// length on [`HoleWriter::finish`]; used for intermediate files in the scratch directory.
pub struct HoleWriter {
    file: File,
    pos: u64,
}

impl HoleWriter {
    /// Writes into `file` from offset 0.
    pub fn new(file: File) -> Self {
        HoleWriter { file, pos: 0 }
    }

    /// Sets the file length to the bytes written and returns the file.
    pub fn finish(self) -> io::Result<File> {
        self.file.set_len(self.pos)?;
        Ok(self.file)
    }
}

impl Write for HoleWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !is_zero(buf) {
            self.file.write_all_at(buf, self.pos)?;
        }
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Appends `e` to `list`, merging it into the last extent when they touch.
pub(crate) fn push_merged(list: &mut Vec<Extent>, e: Extent) {
    match list.last_mut() {
        Some(last) if last.end() == e.offset => last.len += e.len,
        _ => list.push(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom};

    fn sparse_file(size: u64, writes: &[(u64, &[u8])]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
        f.as_file().set_len(size).unwrap();
        for (off, data) in writes {
            f.seek(SeekFrom::Start(*off)).unwrap();
            f.write_all(data).unwrap();
        }
        f
    }

    #[test]
    fn extents_are_content_defined() {
        // Written zeros count as holes; data chunks merge; granularity cuts from 0.
        let f = sparse_file(
            1 << 22,
            &[
                (0, &[1u8; 10]),
                (8192, &[0u8; 65536]),
                (100_000, &[7u8; 5000]),
            ],
        );
        let img = RawImage::open(f.path()).unwrap();
        let ext = img.data_extents(4096).unwrap();
        assert_eq!(
            ext,
            vec![
                Extent {
                    offset: 0,
                    len: 4096
                },
                Extent {
                    offset: 98_304,
                    len: 8192
                },
            ]
        );
    }

    #[test]
    fn last_extent_clipped_to_size() {
        let f = sparse_file(10_000, &[(9_999, &[1])]);
        let img = RawImage::open(f.path()).unwrap();
        assert_eq!(
            img.data_extents(8192).unwrap(),
            vec![Extent {
                offset: 8192,
                len: 1808
            }]
        );
    }

    #[test]
    fn copy_range_fills_holes() {
        let f = sparse_file(3 << 20, &[(2 << 20, &[9u8; 3])]);
        let img = RawImage::open(f.path()).unwrap();
        let regions = img.fs_data_regions().unwrap();
        let mut out = Vec::new();
        let mut buf = Vec::new();
        img.copy_range(&regions, (2 << 20) - 2, 6, &mut out, &mut buf)
            .unwrap();
        assert_eq!(out, vec![0, 0, 9, 9, 9, 0]);
    }
}
