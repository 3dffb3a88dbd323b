//! Directory walking and streaming newc cpio output in the shape of
//! `cpio -H newc --create --reproducible --quiet -R +0:+0` fed by a sorted walk (imager spec
//! §3.6): paths relative without `./`, parents before children, names sorted per directory,
//! inodes renumbered from 1, device numbers 0, uid/gid 0, a fixed mtime, and the archive padded
//! with zeros to a multiple of 512 bytes.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::InitramfsError;
use super::process::sorted_names;
use crate::counting::Counting;
use crate::imager::SOURCE_DATE_EPOCH;
use crate::io_context::io_err;

/// What a walked entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory with this many subdirectories.
    Dir(u32),
    /// A regular file of this size.
    File(u64),
    /// A symbolic link to this target.
    Symlink(String),
}

/// One entry of a walked tree.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the walk root, `/`-separated.
    pub rel: String,
    /// Full path on disk.
    pub path: PathBuf,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Kind.
    pub kind: Kind,
}

/// Walks `root` depth first, names sorted bytewise in each directory, parents before children
/// (Go's `filepath.WalkDir` order). Symlinks are not followed; other special files are skipped.
pub fn walk(root: &Path) -> Result<Vec<Entry>, InitramfsError> {
    let mut out = Vec::new();
    walk_into(root, "", &mut out)?;
    Ok(out)
}

fn walk_into(dir: &Path, prefix: &str, out: &mut Vec<Entry>) -> Result<(), InitramfsError> {
    for name in sorted_names(dir)? {
        let path = dir.join(&name);
        let name = name.to_str().ok_or_else(|| {
            InitramfsError::Invalid(format!("{}: file name is not UTF-8", path.display()))
        })?;
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let meta =
            fs::symlink_metadata(&path).map_err(io_err(format!("stat {}", path.display())))?;
        let mode = meta.permissions().mode() & 0o7777;
        let ft = meta.file_type();
        if ft.is_dir() {
            let idx = out.len();
            out.push(Entry {
                rel: rel.clone(),
                path: path.clone(),
                mode,
                kind: Kind::Dir(0),
            });
            walk_into(&path, &rel, out)?;
            let subdirs = out[idx + 1..]
                .iter()
                .filter(|e| matches!(e.kind, Kind::Dir(_)) && !e.rel[rel.len() + 1..].contains('/'))
                .count() as u32;
            out[idx].kind = Kind::Dir(subdirs);
        } else if ft.is_file() {
            out.push(Entry {
                rel,
                path,
                mode,
                kind: Kind::File(meta.len()),
            });
        } else if ft.is_symlink() {
            let target =
                fs::read_link(&path).map_err(io_err(format!("readlink {}", path.display())))?;
            let target = target.to_str().ok_or_else(|| {
                InitramfsError::Invalid(format!("{}: symlink target is not UTF-8", path.display()))
            })?;
            out.push(Entry {
                rel,
                path,
                mode: 0o777,
                kind: Kind::Symlink(target.to_string()),
            });
        } else {
            tracing::warn!(path = %path.display(), "skipping special file");
        }
    }
    Ok(())
}

/// Writes `entries` as one newc archive (with trailer and 512-byte padding) to `out`, streaming
/// file contents from disk. Returns the archive size.
pub fn write_cpio<W: Write + ?Sized>(
    entries: &[&Entry],
    out: &mut W,
) -> Result<u64, InitramfsError> {
    let mut w = Counting::new(out);
    let mtime = SOURCE_DATE_EPOCH as u32;
    for (i, e) in entries.iter().enumerate() {
        let (type_bits, nlink, size) = match &e.kind {
            Kind::Dir(sub) => (0o040000, 2 + sub, 0u64),
            Kind::File(size) => (0o100000, 1, *size),
            Kind::Symlink(t) => (0o120000, 1, t.len() as u64),
        };
        let size32 = u32::try_from(size).map_err(|_| {
            InitramfsError::Invalid(format!(
                "{}: {size} bytes do not fit a newc cpio entry (4 GiB limit)",
                e.rel
            ))
        })?;
        let builder = cpio::newc::Builder::new(&e.rel)
            .ino(i as u32 + 1)
            .mode(type_bits | e.mode)
            .uid(0)
            .gid(0)
            .nlink(nlink)
            .mtime(mtime);
        let mut writer = builder.write(&mut w, size32);
        let ctx = || format!("cpio entry {}", e.rel);
        match &e.kind {
            Kind::Dir(_) => {}
            Kind::Symlink(t) => writer.write_all(t.as_bytes()).map_err(io_err(ctx()))?,
            Kind::File(_) => {
                let mut f =
                    File::open(&e.path).map_err(io_err(format!("open {}", e.path.display())))?;
                let copied =
                    io::copy(&mut (&mut f).take(size), &mut writer).map_err(io_err(ctx()))?;
                if copied != size {
                    return Err(InitramfsError::Invalid(format!(
                        "{}: changed size while archiving",
                        e.path.display()
                    )));
                }
            }
        }
        writer.finish().map_err(io_err(ctx()))?;
    }
    let w = cpio::newc::trailer(w).map_err(io_err("cpio trailer"))?;
    let pad = (512 - w.count() % 512) % 512;
    let mut w = w;
    w.write_all(&vec![0u8; pad as usize])
        .map_err(io_err("cpio padding"))?;
    Ok(w.count())
}

use std::io::Read as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_order_is_depth_first_sorted() {
        let d = tempfile::tempdir().unwrap();
        for p in ["a/x", "a-b", "b/c/d"] {
            fs::create_dir_all(d.path().join(p)).unwrap();
        }
        fs::write(d.path().join("a/x/f"), b"hi").unwrap();
        std::os::unix::fs::symlink("a", d.path().join("l")).unwrap();
        let rels: Vec<String> = walk(d.path()).unwrap().into_iter().map(|e| e.rel).collect();
        assert_eq!(rels, ["a", "a/x", "a/x/f", "a-b", "b", "b/c", "b/c/d", "l"]);
        let entries = walk(d.path()).unwrap();
        assert_eq!(entries[0].kind, Kind::Dir(1));
        let refs: Vec<&Entry> = entries.iter().collect();
        let mut out = Vec::new();
        let n = write_cpio(&refs, &mut out).unwrap();
        assert_eq!(n as usize, out.len());
        assert_eq!(out.len() % 512, 0);
        assert_eq!(&out[..6], b"070701");
        // Reads back with the cpio crate: names, inode numbers, uid/gid, mtime.
        let mut r = &out[..];
        let mut names = Vec::new();
        loop {
            let e = cpio::NewcReader::new(r).unwrap();
            if e.entry().is_trailer() {
                break;
            }
            assert_eq!((e.entry().uid(), e.entry().gid()), (0, 0));
            assert_eq!(e.entry().mtime(), SOURCE_DATE_EPOCH as u32);
            names.push((e.entry().ino(), e.entry().name().to_string()));
            r = e.finish().unwrap();
        }
        assert_eq!(names[0], (1, "a".to_string()));
        assert_eq!(names.len(), 8);
    }
}
