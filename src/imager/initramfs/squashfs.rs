//! squashfs images of extension trees (`mksquashfs rootfs X.sqsh -all-root -noappend -comp zstd
//! -Xcompression-level 18`, imager spec §3.4 step 3) and reading a subtree out of the base
//! `rootfs.sqsh` (`unsquashfs -no-xattrs -d … rootfs.sqsh MOD`, §3.5 step 2), with `backhand`.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use backhand::compression::{CompressionOptions, Compressor, Zstd};
use backhand::{FilesystemCompressor, FilesystemReader, FilesystemWriter, InnerNode, NodeHeader};

use super::cpio::{Kind, walk};
use super::{InitramfsError, io_err};
use crate::imager::SOURCE_DATE_EPOCH;

fn sq_err(what: impl Into<String>) -> impl FnOnce(backhand::BackhandError) -> InitramfsError {
    let what = what.into();
    move |e| InitramfsError::Squashfs(format!("{what}: {e}"))
}

/// What one squashfs build produced.
#[derive(Debug, Clone, Default)]
pub struct SquashReport {
    /// Image size in bytes.
    pub size: u64,
}

/// Writes the tree under `rootfs` as a squashfs v4 image at `out`: zstd at `level` (compression
/// options recorded in the image), 128 KiB blocks, every entry owned by 0:0 with mtime
/// `SOURCE_DATE_EPOCH`, permission bits kept, entries sorted. File contents are read from disk
/// during the write, one file at a time.
pub fn build_squashfs(
    rootfs: &Path,
    out: &Path,
    level: u32,
) -> Result<SquashReport, InitramfsError> {
    let mtime = SOURCE_DATE_EPOCH as u32;
    let mut fs_w = FilesystemWriter::default();
    fs_w.set_time(mtime);
    let root_mode = fs::symlink_metadata(rootfs)
        .map_err(io_err(format!("stat {}", rootfs.display())))?
        .permissions()
        .mode()
        & 0o7777;
    fs_w.set_root_mode(root_mode as u16);
    fs_w.set_root_uid(0);
    fs_w.set_root_gid(0);
    fs_w.set_only_root_id();
    let compressor = FilesystemCompressor::new(
        Compressor::Zstd,
        Some(CompressionOptions::Zstd(Zstd {
            compression_level: level,
        })),
    )
    .map_err(sq_err("zstd compressor"))?;
    fs_w.set_compressor(compressor);
    let entries = walk(rootfs)?;
    let hdr = |mode: u32| NodeHeader::new(mode as u16, 0, 0, mtime);
    for e in &entries {
        match &e.kind {
            Kind::Dir(_) => fs_w.push_dir(&e.rel, hdr(e.mode)),
            Kind::File(_) => fs_w.push_file_from_path(e.path.clone(), &e.rel, hdr(e.mode)),
            Kind::Symlink(t) => fs_w.push_symlink(t, &e.rel, hdr(0o777)),
        }
        .map_err(sq_err(format!("add {}", e.rel)))?;
    }
    let file = File::create(out).map_err(io_err(format!("create {}", out.display())))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let (_, size) = fs_w
        .write(&mut w)
        .map_err(sq_err(format!("write {}", out.display())))?;
    let file = w
        .into_inner()
        .map_err(|e| InitramfsError::io(format!("flush {}", out.display()), e.into_error()))?;
    drop(file);
    Ok(SquashReport { size })
}

/// Builds every `(rootfs, out)` job with [`build_squashfs`] on up to as many threads as there
/// are CPUs; `done(i)` is called (on this thread) as job `i` finishes. Results are in job order.
pub fn build_all(
    jobs: &[(PathBuf, PathBuf)],
    level: u32,
    done: &mut dyn FnMut(usize),
) -> Result<Vec<SquashReport>, InitramfsError> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, Result<SquashReport, InitramfsError>)>();
    let mut results: Vec<Option<SquashReport>> = vec![None; jobs.len()];
    let mut first_err = None;
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((rootfs, out)) = jobs.get(i) else {
                        break;
                    };
                    let r = build_squashfs(rootfs, out, level);
                    let failed = r.is_err();
                    if tx.send((i, r)).is_err() || failed {
                        // Stop handing out work after a failure.
                        next.store(jobs.len(), Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (i, r) in rx {
            match r {
                Ok(rep) => {
                    results[i] = Some(rep);
                    done(i);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
    });
    if let Some(e) = first_err {
        return Err(e);
    }
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.ok_or_else(|| InitramfsError::Squashfs(format!("layer {i} was not built"))))
        .collect()
}

/// Whether `p` (an absolute squashfs path) is `/<prefix>` or below it; returns the relative path.
fn relative_under<'a>(p: &'a Path, prefix: &str) -> Option<&'a Path> {
    let rel = p.strip_prefix("/").ok()?;
    rel.starts_with(prefix).then_some(rel)
}

/// Extracts every entry under `prefix` (e.g. `usr/lib/modules`) of the squashfs image `image`
/// into `dest` (as `dest/<prefix>/…`). Regular files, directories and symlinks only; xattrs
/// are ignored. Returns the number of entries extracted.
pub fn extract_subtree(image: &Path, prefix: &str, dest: &Path) -> Result<u64, InitramfsError> {
    let file = File::open(image).map_err(io_err(format!("open {}", image.display())))?;
    let reader = FilesystemReader::from_reader(BufReader::with_capacity(1 << 20, file))
        .map_err(sq_err(format!("read {}", image.display())))?;
    let mut count = 0u64;
    for node in reader.files() {
        let Some(rel) = relative_under(&node.fullpath, prefix) else {
            continue;
        };
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(InitramfsError::Squashfs(format!(
                "{}: unsafe path {}",
                image.display(),
                node.fullpath.display()
            )));
        }
        let target = dest.join(rel);
        let mode = u32::from(node.header.permissions) & 0o7777;
        match &node.inner {
            InnerNode::Dir(_) => {
                fs::create_dir_all(&target)
                    .map_err(io_err(format!("create {}", target.display())))?;
                fs::set_permissions(&target, fs::Permissions::from_mode(mode | 0o700))
                    .map_err(io_err(format!("chmod {}", target.display())))?;
            }
            InnerNode::File(f) => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)
                        .map_err(io_err(format!("create {}", parent.display())))?;
                }
                let mut out = File::create(&target)
                    .map_err(io_err(format!("create {}", target.display())))?;
                let mut r = reader.file(f).reader();
                io::copy(&mut r, &mut out).map_err(io_err(format!(
                    "extract {} from {}",
                    node.fullpath.display(),
                    image.display()
                )))?;
                fs::set_permissions(&target, fs::Permissions::from_mode(mode | 0o400))
                    .map_err(io_err(format!("chmod {}", target.display())))?;
            }
            InnerNode::Symlink(s) => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)
                        .map_err(io_err(format!("create {}", parent.display())))?;
                }
                std::os::unix::fs::symlink(&s.link, &target)
                    .map_err(io_err(format!("symlink {}", target.display())))?;
            }
            _ => continue,
        }
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("rootfs");
        fs::create_dir_all(root.join("usr/lib/modules/6.1.0/extras")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("usr/lib/modules/6.1.0/extras/a.ko"), b"module").unwrap();
        fs::write(root.join("etc/x"), b"x").unwrap();
        std::os::unix::fs::symlink("../x", root.join("usr/lib/modules/6.1.0/build")).unwrap();
        let img = d.path().join("0.sqsh");
        let rep = build_squashfs(&root, &img, 18).unwrap();
        assert_eq!(rep.size, fs::metadata(&img).unwrap().len());
        let again = d.path().join("again.sqsh");
        build_squashfs(&root, &again, 18).unwrap();
        assert_eq!(fs::read(&img).unwrap(), fs::read(&again).unwrap());
        let out = d.path().join("out");
        let n = extract_subtree(&img, "usr/lib/modules", &out).unwrap();
        assert_eq!(n, 5);
        assert_eq!(
            fs::read(out.join("usr/lib/modules/6.1.0/extras/a.ko")).unwrap(),
            b"module"
        );
        assert!(!out.join("etc").exists());
        assert_eq!(
            fs::read_link(out.join("usr/lib/modules/6.1.0/build")).unwrap(),
            Path::new("../x")
        );
    }
}
