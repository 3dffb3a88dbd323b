//! Sparse files: the data regions of a file (`SEEK_DATA`/`SEEK_HOLE`), a byte window over one
//! partition of a disk file, and copies that move only data and keep holes.
//!
//! A disk image is mostly zeros (a 4 GiB metal image holds a few dozen MiB of data), so
//! nothing here reads, writes or hashes more than the written regions, except
//! [`stream_into_blob`], whose hashes must cover every byte.

use std::fs::File;
use std::io::{self, Read, Seek, Write};

use rustix::fs::{SeekFrom, copy_file_range, seek};
use rustix::io::Errno;

use crate::store::BlobWriter;

/// Copy buffer size.
const CHUNK: usize = 1 << 20;

/// The `[start, end)` byte ranges of `f` that hold data (everything else reads as zeros), from
/// `SEEK_DATA`/`SEEK_HOLE`. Where the file system cannot report holes (`EINVAL`), the whole file
/// is one region.
pub fn data_regions(f: &File) -> io::Result<Vec<(u64, u64)>> {
    let len = f.metadata()?.len();
    let mut out = Vec::new();
    let mut pos: u64 = 0;
    while pos < len {
        let start = match seek(f, SeekFrom::Data(pos)) {
            Ok(start) if start < len => start,
            // Only a hole remains.
            Ok(_) | Err(Errno::NXIO) => break,
            Err(Errno::INVAL) if pos == 0 => return Ok(vec![(0, len)]),
            Err(e) => return Err(e.into()),
        };
        let end = seek(f, SeekFrom::Hole(start))?.min(len);
        if end > start {
            out.push((start, end));
        }
        pos = end.max(start + 1);
    }
    Ok(out)
}

/// Copies the data regions of `src` into `dst` at `dst_offset` (holes are skipped, so `dst`
/// must read as zeros there already, like a fresh sparse disk file).
pub fn copy_into(src: &mut File, dst: &mut File, dst_offset: u64) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    for (start, end) in data_regions(src)? {
        let mut pos = start;
        while pos < end {
            let n = ((end - pos) as usize).min(CHUNK);
            src.seek(io::SeekFrom::Start(pos))?;
            src.read_exact(&mut buf[..n])?;
            if buf[..n].iter().any(|b| *b != 0) {
                dst.seek(io::SeekFrom::Start(dst_offset + pos))?;
                dst.write_all(&buf[..n])?;
            }
            pos += n as u64;
        }
    }
    Ok(())
}

/// Copies all of `src` into the empty file `dst`: its data regions with `copy_file_range(2)`
/// (in the kernel, no copy through user space), its holes as holes; sets `dst`'s length.
pub fn copy_file_sparse(src: &File, dst: &File) -> io::Result<u64> {
    let len = src.metadata()?.len();
    for (start, end) in data_regions(src)? {
        copy_range(src, dst, start, end - start)?;
    }
    dst.set_len(len)?;
    Ok(len)
}

/// Copies `len` bytes at `offset` of `src` to the same offset of `dst`: `copy_file_range(2)`,
/// or positioned reads and writes where the kernel cannot (another filesystem type, old
/// kernels).
fn copy_range(src: &File, dst: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt as _;
    let (mut pos, end) = (offset, offset + len);
    while pos < end {
        let (mut off_in, mut off_out) = (pos, pos);
        let want = ((end - pos) as usize).min(1 << 30);
        match copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "source ended early",
                ));
            }
            Ok(n) => {
                pos += n as u64;
                continue;
            }
            Err(Errno::INTR) => continue,
            Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP) => {}
            Err(e) => return Err(e.into()),
        }
        // fallback: through a buffer
        let mut buf = vec![0u8; CHUNK];
        while pos < end {
            let n = ((end - pos) as usize).min(CHUNK);
            src.read_exact_at(&mut buf[..n], pos)?;
            dst.write_all_at(&buf[..n], pos)?;
            pos += n as u64;
        }
    }
    Ok(())
}

/// Streams all of `src` into a blob: data regions as bytes, holes (and all-zero chunks) as
/// holes of the blob file; both hashes see every byte.
pub fn stream_into_blob(src: &mut File, w: &mut BlobWriter) -> io::Result<()> {
    let len = src.metadata()?.len();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    for (start, end) in data_regions(src)? {
        w.write_zeros(start - pos)?;
        pos = start;
        while pos < end {
            let n = ((end - pos) as usize).min(CHUNK);
            src.seek(io::SeekFrom::Start(pos))?;
            src.read_exact(&mut buf[..n])?;
            if crate::zeros::is_zero(&buf[..n]) {
                w.write_zeros(n as u64)?;
            } else {
                w.write_all(&buf[..n])?;
            }
            pos += n as u64;
        }
    }
    w.write_zeros(len - pos)
}

/// A `Read + Write + Seek` window of `len` bytes at `start` of a file: one partition, for
/// filesystem writers that expect a whole device (`fatfs`). Writes past the end fail.
pub struct Window<'a> {
    file: &'a mut File,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a> Window<'a> {
    /// The window `[start, start + len)` of `file`.
    pub fn new(file: &'a mut File, start: u64, len: u64) -> Window<'a> {
        Window {
            file,
            start,
            len,
            pos: 0,
        }
    }
}

impl Read for Window<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.file.seek(io::SeekFrom::Start(self.start + self.pos))?;
        let got = self.file.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for Window<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pos + buf.len() as u64 > self.len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        self.file.seek(io::SeekFrom::Start(self.start + self.pos))?;
        let n = self.file.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Window<'_> {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let target = match to {
            io::SeekFrom::Start(o) => Some(o),
            io::SeekFrom::End(d) => self.len.checked_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(t) if t <= self.len => {
                self.pos = t;
                Ok(t)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_copy_and_window() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("src"))
            .unwrap();
        src.set_len(64 << 20).unwrap();
        src.seek(io::SeekFrom::Start(8 << 20)).unwrap();
        src.write_all(b"hello").unwrap();
        let regions = data_regions(&src).unwrap();
        assert_eq!(regions.len(), 1, "{regions:?}");
        assert!(regions[0].0 <= 8 << 20 && regions[0].1 >= (8 << 20) + 5);

        let mut dst = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("dst"))
            .unwrap();
        dst.set_len(128 << 20).unwrap();
        copy_into(&mut src, &mut dst, 1 << 20).unwrap();
        let mut w = Window::new(&mut dst, 9 << 20, 16);
        let mut got = [0u8; 5];
        w.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        assert_eq!(w.seek(io::SeekFrom::End(0)).unwrap(), 16);
        assert!(w.write_all(b"x").is_err());
        assert!(w.seek(io::SeekFrom::End(1)).is_err());
    }
}
