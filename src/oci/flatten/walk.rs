//! Listing a subtree of an extracted image without following symlinks.
//!
//! Every directory is opened relative to its parent with `O_NOFOLLOW | O_DIRECTORY`, starting
//! at the extraction root, so the walk never reaches anything outside that root: a layer can
//! make `usr/lib/grub` a symlink to `/etc`, but the walk refuses it instead of listing `/etc`.
//! A symlink (or any special file) anywhere on the way to or inside the listed subtree is
//! refused with an error naming its path; only real directories and regular files are accepted.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::oci::OciError;

/// A regular file found by [`regular_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Path relative to the listed subtree (`i386-pc/boot.img`).
    pub rel: String,
    /// Full path below the extraction root, reached through real directories only.
    pub path: PathBuf,
    /// Permission bits.
    pub mode: u32,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn io_at(path: &Path, e: Errno) -> OciError {
    OciError::io(path.display().to_string(), e.into())
}

/// What is at `name` in `dir`, not following a symlink; the refusal when it is not a directory.
fn refuse_non_dir(dir: impl AsFd, name: &OsStr, rel: &str, full: &Path) -> OciError {
    let st = match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(e) => return io_at(full, e),
    };
    refusal(
        &dir,
        name,
        rel,
        FileType::from_raw_mode(st.st_mode),
        "a directory",
    )
}

/// The error for entry `name` of `dir` (at `rel`) of type `found` where `wanted` belongs.
fn refusal(dir: impl AsFd, name: &OsStr, rel: &str, found: FileType, wanted: &str) -> OciError {
    if found == FileType::Symlink {
        let target = rustix::fs::readlinkat(&dir, name, Vec::new())
            .map(|t| String::from_utf8_lossy(t.as_bytes()).into_owned())
            .unwrap_or_else(|_| "?".into());
        return OciError::Symlink {
            path: rel.to_string(),
            target,
        };
    }
    OciError::Unsafe(format!("{rel} is a {found:?}, not {wanted}"))
}

/// Lists every regular file below `root/sub` (`sub` like `usr/lib/grub`), never following a
/// symlink: each component of `sub` and each directory below must be a real directory, each
/// other entry a regular file; anything else is refused, naming its path relative to `root`.
/// `Ok(None)` when `sub` does not exist. Files are listed in name order.
pub fn regular_files(root: &Path, sub: &str) -> Result<Option<Vec<TreeFile>>, OciError> {
    let mut fd = rustix::fs::open(root, DIR_FLAGS, Mode::empty()).map_err(|e| io_at(root, e))?;
    let mut at = String::new();
    let mut full = root.to_path_buf();
    for c in sub.split('/').filter(|c| !c.is_empty()) {
        if c == "." || c == ".." {
            return Err(OciError::Unsafe(format!("{sub}: dot component")));
        }
        if !at.is_empty() {
            at.push('/');
        }
        at.push_str(c);
        full.push(c);
        fd = match rustix::fs::openat(&fd, c, DIR_FLAGS, Mode::empty()) {
            Ok(next) => next,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP | Errno::NOTDIR) => {
                return Err(refuse_non_dir(&fd, OsStr::new(c), &at, &full));
            }
            Err(e) => return Err(io_at(&full, e)),
        };
    }
    let mut out = Vec::new();
    list(fd, &at, "", &full, &mut out)?;
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(Some(out))
}

/// Appends the regular files of directory `fd` (at `base/prefix`, `full` on disk) to `out`.
fn list(
    fd: OwnedFd,
    base: &str,
    prefix: &str,
    full: &Path,
    out: &mut Vec<TreeFile>,
) -> Result<(), OciError> {
    let mut dir = Dir::read_from(&fd).map_err(|e| io_at(full, e))?;
    let mut subdirs = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry.map_err(|e| io_at(full, e))?;
        let raw = entry.file_name().to_bytes();
        if raw == b"." || raw == b".." {
            continue;
        }
        let name = OsStr::from_bytes(raw);
        let Some(text) = name.to_str() else {
            return Err(OciError::Unsafe(format!(
                "{base}/{prefix}{}: file name is not UTF-8",
                name.to_string_lossy()
            )));
        };
        let rel = format!("{prefix}{text}");
        let shown = format!("{base}/{rel}");
        let path = full.join(name);
        let st = rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_at(&path, e))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => out.push(TreeFile {
                rel,
                path,
                mode: st.st_mode & 0o7777,
            }),
            FileType::Directory => subdirs.push((name.to_os_string(), rel, path)),
            other => return Err(refusal(&fd, name, &shown, other, "a file or directory")),
        }
    }
    for (name, rel, path) in subdirs {
        let child = match rustix::fs::openat(&fd, &name, DIR_FLAGS, Mode::empty()) {
            Ok(child) => child,
            // Replaced since it was listed: look again, refusing whatever it is now.
            Err(Errno::LOOP | Errno::NOTDIR) => {
                return Err(refuse_non_dir(&fd, &name, &format!("{base}/{rel}"), &path));
            }
            Err(e) => return Err(io_at(&path, e)),
        };
        list(child, base, &format!("{rel}/"), &path, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(root.join("usr/lib/grub/i386-pc")).unwrap();
        std::fs::write(root.join("usr/lib/grub/i386-pc/boot.img"), b"boot").unwrap();
        std::fs::write(root.join("usr/lib/grub/top"), b"top").unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"secret").unwrap();
        (t, root, outside)
    }

    #[test]
    fn lists_regular_files_in_order() {
        let (_t, root, _) = setup();
        let files = regular_files(&root, "usr/lib/grub").unwrap().unwrap();
        let rels: Vec<&str> = files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, ["i386-pc/boot.img", "top"]);
        assert_eq!(files[0].path, root.join("usr/lib/grub/i386-pc/boot.img"));
        assert_eq!(regular_files(&root, "usr/install/amd64").unwrap(), None);
    }

    /// Lists `sub` after `link` (relative to the root) was made a symlink to `target(outside)`,
    /// expecting a refusal naming `link`; the outside file stays in place.
    fn refused(sub: &str, link: &str, target: impl FnOnce(&Path) -> PathBuf) {
        let (_t, root, outside) = setup();
        let to = target(&outside);
        if let Some(parent) = Path::new(link).parent() {
            std::fs::create_dir_all(root.join(parent)).unwrap();
        }
        symlink(&to, root.join(link)).unwrap();
        let e = regular_files(&root, sub).unwrap_err();
        assert!(
            matches!(&e, OciError::Symlink { path, .. } if path == link),
            "{link}: {e}"
        );
        assert!(e.to_string().contains(&to.display().to_string()), "{e}");
        assert!(outside.join("secret").exists());
    }

    #[test]
    fn symlinks_on_the_way_or_inside_are_refused() {
        // The listed directory itself, a directory on the way, a file or directory inside.
        refused("usr/install/amd64", "usr/install/amd64", Path::to_path_buf);
        refused("x/lib/grub", "x/lib", Path::to_path_buf);
        refused("usr/lib/grub", "usr/lib/grub/i386-pc/x.mod", |o| {
            o.join("secret")
        });
        refused("usr/lib/grub", "usr/lib/grub/arm64-efi", Path::to_path_buf);
        refused("usr/lib/grub", "usr/lib/grub/up", |_| {
            PathBuf::from("../../..")
        });
        // A FIFO is not a file.
        let (_t, root, _) = setup();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("usr/lib/grub/fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(matches!(
            regular_files(&root, "usr/lib/grub"),
            Err(OciError::Unsafe(_))
        ));
    }
}
