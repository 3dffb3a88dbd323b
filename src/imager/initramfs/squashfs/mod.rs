//! squashfs images of extension trees (`mksquashfs rootfs X.sqsh -all-root -noappend -comp zstd
//! -Xcompression-level 18`, plus `security.selinux` pseudo xattrs from the extension's PAX
//! records; imager spec §3.4 step 3) with our own squashfs 4.0 writer, and reading a subtree out
//! of the base `rootfs.sqsh` (`unsquashfs -no-xattrs -d … rootfs.sqsh MOD`, §3.5 step 2) with
//! `backhand`.
//!
//! The writer is split along the format's seams: [`metadata`] (8 KiB metadata blocks and lookup
//! tables), [`data`] (data blocks and fragments, compressed in parallel), [`xattr`] (the xattr
//! table) and [`writer`] (inodes, directories, superblock). See `docs/imager-initramfs.md`.

mod data;
mod metadata;
#[cfg(test)]
mod tests;
mod writer;
mod xattr;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use backhand::{FilesystemReader, InnerNode};

pub use data::Source;
pub use writer::{Content, Entry, Options, write_image};

use super::InitramfsError;
use super::cpio::{Kind, walk};
use crate::imager::SOURCE_DATE_EPOCH;
use crate::io_context::io_err;

/// The xattr name SELinux labels are stored under.
pub const SELINUX_XATTR: &str = "security.selinux";

/// What one squashfs build produced.
#[derive(Debug, Clone, Default)]
pub struct SquashReport {
    /// Image size in bytes.
    pub size: u64,
    /// Entries that carry a `security.selinux` label.
    pub labels: usize,
}

/// The CPUs this process may use (compression threads of one image).
pub(crate) fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Writes the tree under `rootfs` as a squashfs v4 image at `out`: zstd at `level` (compression
/// options recorded in the image), 128 KiB blocks, every entry owned by 0:0 with mtime
/// `SOURCE_DATE_EPOCH`, permission bits kept, entries sorted. `labels` maps paths relative to
/// `rootfs` (`""` = the root directory, no leading `/`) to SELinux labels, stored as
/// `security.selinux` xattrs; labels of paths that do not exist are ignored.
pub fn build_squashfs(
    rootfs: &Path,
    out: &Path,
    level: u32,
    labels: &BTreeMap<String, String>,
) -> Result<SquashReport, InitramfsError> {
    build_squashfs_on(rootfs, out, level, labels, threads())
}

/// [`build_squashfs`] with `threads` compression threads.
fn build_squashfs_on(
    rootfs: &Path,
    out: &Path,
    level: u32,
    labels: &BTreeMap<String, String>,
    threads: usize,
) -> Result<SquashReport, InitramfsError> {
    let root_mode = fs::symlink_metadata(rootfs)
        .map_err(io_err(format!("stat {}", rootfs.display())))?
        .permissions()
        .mode()
        & 0o7777;
    let walked = walk(rootfs)?;
    let label = |rel: &str| match labels.get(rel) {
        Some(l) => vec![(SELINUX_XATTR.to_string(), l.as_bytes().to_vec())],
        None => Vec::new(),
    };
    let mut entries = Vec::with_capacity(walked.len() + 1);
    entries.push(Entry {
        path: "",
        mode: root_mode,
        content: Content::Dir,
        xattrs: label(""),
    });
    for e in &walked {
        let content = match &e.kind {
            Kind::Dir(_) => Content::Dir,
            Kind::File(_) => Content::File(Source::Path(&e.path)),
            Kind::Symlink(t) => Content::Symlink(t),
        };
        entries.push(Entry {
            path: &e.rel,
            mode: e.mode,
            content,
            xattrs: label(&e.rel),
        });
    }
    let labelled = entries.iter().filter(|e| !e.xattrs.is_empty()).count();
    let level = i32::try_from(level)
        .map_err(|_| InitramfsError::Invalid(format!("zstd level {level} out of range")))?;
    let opts = Options {
        level,
        mtime: SOURCE_DATE_EPOCH as u32,
        threads,
    };
    let file = File::create(out).map_err(io_err(format!("create {}", out.display())))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let size = write_image(&entries, &opts, &mut w)
        .map_err(io_err(format!("squashfs: write {}", out.display())))?;
    w.into_inner()
        .map_err(|e| io_err(format!("flush {}", out.display()))(e.into_error()))?;
    Ok(SquashReport {
        size,
        labels: labelled,
    })
}

/// Builds every `(rootfs, out, labels)` job with [`build_squashfs`] on up to as many threads as there
/// are CPUs; `done(i)` is called (on this thread) as job `i` finishes. Results are in job order.
pub fn build_all(
    jobs: &[(PathBuf, PathBuf, BTreeMap<String, String>)],
    level: u32,
    done: &mut dyn FnMut(usize),
) -> Result<Vec<SquashReport>, InitramfsError> {
    let workers = threads().min(jobs.len()).max(1);
    // The CPUs are shared between the images built at once (output bytes do not depend on it).
    let per_image = threads().div_ceil(workers);
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
                    let Some((rootfs, out, labels)) = jobs.get(i) else {
                        break;
                    };
                    let r = build_squashfs_on(rootfs, out, level, labels, per_image);
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
    let reader = FilesystemReader::from_reader(BufReader::with_capacity(1 << 20, file)).map_err(
        |source| InitramfsError::SquashfsRead {
            context: format!("read {}", image.display()),
            source,
        },
    )?;
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
