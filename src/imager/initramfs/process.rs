//! Per-extension processing before the squashfs (imager spec §3.4 steps 1–2): early CPU
//! microcode out of the extension into `kernel/x86/microcode/`, and the firmware tree moved into
//! the initramfs tree.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::InitramfsError;
use super::extension::real_dir;
use crate::io_context::io_err;

/// Where early microcode goes in the work tree.
pub const MICROCODE_DIR: &str = "kernel/x86/microcode";

/// Creates `dir` and any missing parents with mode 0755 (independent of the umask).
pub fn mkdirs(dir: &Path) -> Result<(), InitramfsError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        mkdirs(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(io_err(format!("create {}", dir.display()))(e).into()),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(io_err(format!("chmod {}", dir.display())))?;
    Ok(())
}

/// Regular files in `dir` whose names match, sorted bytewise (Go's sorted `filepath.Glob`).
/// Directories, symlinks and special files are left alone.
fn matching_files(
    dir: &Path,
    matches: impl Fn(&str) -> bool,
) -> Result<Vec<std::path::PathBuf>, InitramfsError> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err(format!("read {}", dir.display())))? {
        let e = e.map_err(io_err(format!("read {}", dir.display())))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let ft = e
            .file_type()
            .map_err(io_err(format!("stat {}", e.path().display())))?;
        if ft.is_file() && matches(name) {
            out.push(e.path());
        } else if matches(name) {
            tracing::warn!(path = %e.path().display(), "microcode entry is not a regular file; left in the extension");
        }
    }
    out.sort();
    Ok(out)
}

/// Moves early microcode out of `rootfs/<fw>/`: `intel-ucode/*` is appended to
/// `<work>/kernel/x86/microcode/GenuineIntel.bin`, `amd-ucode/microcode_amd*.bin` to
/// `AuthenticAMD.bin` (across extensions, in processing order); the sources are deleted.
/// Returns the number of files consumed.
pub fn extract_microcode(rootfs: &Path, fw: &str, work: &Path) -> Result<usize, InitramfsError> {
    type Matcher = fn(&str) -> bool;
    let kinds: [(&str, Matcher, &str); 2] = [
        ("intel-ucode", |_| true, "GenuineIntel.bin"),
        (
            "amd-ucode",
            |n| n.starts_with("microcode_amd") && n.ends_with(".bin"),
            "AuthenticAMD.bin",
        ),
    ];
    let mut consumed = 0;
    for (sub, matcher, dest_name) in kinds {
        let Some(dir) = real_dir(rootfs, &format!("{fw}/{sub}"))? else {
            continue;
        };
        let files = matching_files(&dir, matcher)?;
        if files.is_empty() {
            continue;
        }
        let dest_dir = work.join(MICROCODE_DIR);
        mkdirs(&dest_dir)?;
        let dest = dest_dir.join(dest_name);
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(&dest)
            .map_err(io_err(format!("open {}", dest.display())))?;
        for f in files {
            let mut src = File::open(&f).map_err(io_err(format!("open {}", f.display())))?;
            io::copy(&mut src, &mut out).map_err(io_err(format!("copy {}", f.display())))?;
            fs::remove_file(&f).map_err(io_err(format!("remove {}", f.display())))?;
            consumed += 1;
        }
    }
    Ok(consumed)
}

/// The entry names of `dir`, sorted bytewise (the order every tree walk here follows).
pub(super) fn sorted_names(dir: &Path) -> Result<Vec<OsString>, InitramfsError> {
    let mut names: Vec<OsString> = fs::read_dir(dir)
        .map_err(io_err(format!("read {}", dir.display())))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err(format!("read {}", dir.display())))?;
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    Ok(names)
}

/// Removes whatever is at `p` (not following symlinks).
pub(super) fn remove_any(p: &Path) -> Result<(), InitramfsError> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            Ok(fs::remove_dir_all(p).map_err(io_err(format!("remove {}", p.display())))?)
        }
        Ok(_) => Ok(fs::remove_file(p).map_err(io_err(format!("remove {}", p.display())))?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("stat {}", p.display()))(e).into()),
    }
}

/// Makes `dir` a real directory (replacing a file or symlink in the way).
fn ensure_dir(dir: &Path) -> Result<(), InitramfsError> {
    if !fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        remove_any(dir)?;
        mkdirs(dir)?;
    }
    Ok(())
}

/// Moves the tree `src` into `dst`, merging directories (later files replace earlier ones).
/// Files keep their permission bits; directories are created (0755) only when a file lands in
/// them, like upstream's per-file `MkdirAll`. Returns files moved.
fn move_tree(src: &Path, dst: &Path) -> Result<u64, InitramfsError> {
    let mut moved = 0;
    for name in sorted_names(src)? {
        let (s, d) = (src.join(&name), dst.join(&name));
        let m = fs::symlink_metadata(&s).map_err(io_err(format!("stat {}", s.display())))?;
        if m.is_dir() {
            moved += move_tree(&s, &d)?;
        } else if m.is_file() || m.file_type().is_symlink() {
            ensure_dir(dst)?;
            remove_any(&d)?;
            fs::rename(&s, &d).map_err(io_err(format!("move {}", s.display())))?;
            moved += 1;
        }
    }
    fs::remove_dir_all(src).map_err(io_err(format!("remove {}", src.display())))?;
    Ok(moved)
}

/// Moves `rootfs/<fw>` (when it is a real directory) into `<work>/<fw>`. Returns files moved.
pub fn move_firmware(rootfs: &Path, fw: &str, work: &Path) -> Result<u64, InitramfsError> {
    match real_dir(rootfs, fw)? {
        Some(src) => move_tree(&src, &work.join(fw)),
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microcode_and_firmware() {
        let d = tempfile::tempdir().unwrap();
        let work = d.path().join("work");
        let fw = "usr/lib/firmware";
        for (i, root) in ["a", "b"].iter().enumerate() {
            let r = d.path().join(root);
            fs::create_dir_all(r.join(fw).join("intel-ucode")).unwrap();
            fs::create_dir_all(r.join(fw).join("amd-ucode")).unwrap();
            fs::create_dir_all(r.join(fw).join("test")).unwrap();
            fs::write(r.join(fw).join("intel-ucode/06-02"), format!("i{i}2")).unwrap();
            fs::write(r.join(fw).join("intel-ucode/06-01"), format!("i{i}1")).unwrap();
            fs::write(
                r.join(fw).join("amd-ucode/microcode_amd_fam17h.bin"),
                format!("a{i}"),
            )
            .unwrap();
            fs::write(r.join(fw).join("amd-ucode/README"), "doc").unwrap();
            fs::write(r.join(fw).join("test/fw.bin"), format!("fw{i}")).unwrap();
            let n = extract_microcode(&r, fw, &work).unwrap();
            assert_eq!(n, 3);
            assert!(!r.join(fw).join("intel-ucode/06-01").exists());
            assert!(r.join(fw).join("amd-ucode/README").exists());
            assert_eq!(move_firmware(&r, fw, &work).unwrap(), 2);
            assert!(!r.join(fw).exists());
        }
        let mc = work.join(MICROCODE_DIR);
        assert_eq!(
            fs::read_to_string(mc.join("GenuineIntel.bin")).unwrap(),
            "i01i02i11i12"
        );
        assert_eq!(
            fs::read_to_string(mc.join("AuthenticAMD.bin")).unwrap(),
            "a0a1"
        );
        assert_eq!(
            fs::read_to_string(work.join(fw).join("test/fw.bin")).unwrap(),
            "fw1"
        );
        assert_eq!(
            fs::read_to_string(work.join(fw).join("amd-ucode/README")).unwrap(),
            "doc"
        );
    }
}
