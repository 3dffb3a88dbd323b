//! The kernel-module dependency extension `modules.dep` (imager spec §3.5): the base
//! `rootfs.sqsh` module tree merged with every extension's modules, `depmod` from Debian's kmod,
//! and the top-level `modules.*` files packaged as one more layer.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::InitramfsError;
use super::extension::{Loaded, real_dir};
use super::process::{mkdirs, remove_any, sorted_names};
use super::squashfs::extract_subtree;
use super::yaml::{Manifest, Metadata};
use crate::io_context::io_err;

/// The depmod configuration the imager image ships (`/etc/modules.d/10-extra-modules.conf`).
pub const DEPMOD_CONFIG: &str = "search extras built-in\n";
/// xz stream magic (`FD 37 7A 58 5A 00`).
const XZ_MAGIC: &[u8] = &[0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00];

/// Finds `depmod` on `PATH` or in the sbin directories (Debian keeps it in `/usr/sbin`).
pub fn find_depmod() -> Result<PathBuf, InitramfsError> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("depmod"))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .ok_or(InitramfsError::DepmodMissing)
}

/// Streams the base initramfs (zstd, or xz by magic) as newc cpio and copies the entry named
/// exactly `rootfs.sqsh` to `dest`.
pub fn extract_rootfs_sqsh(base: impl Read, dest: &Path) -> Result<(), InitramfsError> {
    let mut base = BufReader::with_capacity(1 << 20, base);
    let mut magic = Vec::with_capacity(6);
    (&mut base)
        .take(6)
        .read_to_end(&mut magic)
        .map_err(io_err("read base initramfs"))?;
    let stream = io::Cursor::new(magic.clone()).chain(base);
    let mut reader: Box<dyn Read> = if magic == XZ_MAGIC {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(stream))
    } else {
        Box::new(zstd::stream::read::Decoder::new(stream).map_err(io_err("base initramfs zstd"))?)
    };
    loop {
        let entry = cpio::NewcReader::new(reader).map_err(io_err(
            "base initramfs: reading cpio (no rootfs.sqsh found)",
        ))?;
        if entry.entry().is_trailer() {
            return Err(InitramfsError::BaseInitramfs(
                "no rootfs.sqsh entry in the base initramfs".into(),
            ));
        }
        if entry.entry().name() == "rootfs.sqsh" {
            let out = File::create(dest).map_err(io_err(format!("create {}", dest.display())))?;
            let mut out = io::BufWriter::new(out);
            entry
                .to_writer(&mut out)
                .map_err(io_err("base initramfs: extract rootfs.sqsh"))?;
            io::Write::flush(&mut out).map_err(io_err(format!("write {}", dest.display())))?;
            return Ok(());
        }
        reader = entry
            .finish()
            .map_err(io_err("base initramfs: reading cpio"))?;
    }
}

/// Copies the tree `src` into `dst` (merging; files and symlinks replace existing ones).
fn copy_tree(src: &Path, dst: &Path) -> Result<(), InitramfsError> {
    mkdirs(dst)?;
    for name in sorted_names(src)? {
        let (s, d) = (src.join(&name), dst.join(&name));
        let m = fs::symlink_metadata(&s).map_err(io_err(format!("stat {}", s.display())))?;
        if m.is_dir() {
            if fs::symlink_metadata(&d).is_ok_and(|dm| !dm.is_dir()) {
                fs::remove_file(&d).map_err(io_err(format!("remove {}", d.display())))?;
            }
            copy_tree(&s, &d)?;
            continue;
        }
        remove_any(&d)?;
        if m.is_file() {
            fs::copy(&s, &d).map_err(io_err(format!("copy {}", s.display())))?;
        } else if m.file_type().is_symlink() {
            let t = fs::read_link(&s).map_err(io_err(format!("readlink {}", s.display())))?;
            std::os::unix::fs::symlink(t, &d)
                .map_err(io_err(format!("symlink {}", d.display())))?;
        }
    }
    Ok(())
}

/// The single kernel-version directory under `dir`.
fn single_kver(dir: &Path) -> Result<String, InitramfsError> {
    let mut kvers = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err("base initramfs: no module tree in rootfs.sqsh"))? {
        let e = e.map_err(io_err(format!("read {}", dir.display())))?;
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            kvers.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    match kvers.as_slice() {
        [k] => Ok(k.clone()),
        _ => Err(InitramfsError::BaseInitramfs(format!(
            "expected exactly one kernel version under the module directory, found {kvers:?}"
        ))),
    }
}

/// Builds the `modules.dep` extension from the base initramfs and the extensions carrying
/// `<modules>` (e.g. `usr/lib/modules`); everything happens under `scratch`. Returns the
/// synthetic extension (directory name `modules.dep`) and the kernel version.
pub fn build_modules_dep(
    base: impl Read,
    exts: &[&Loaded],
    modules: &str,
    scratch: &Path,
    depmod: &Path,
    run: &crate::imager::tool::ToolRun,
) -> Result<(Loaded, String), InitramfsError> {
    let sqsh = scratch.join("rootfs.sqsh");
    extract_rootfs_sqsh(base, &sqsh)?;
    let tree = scratch.join("modules");
    extract_subtree(&sqsh, modules, &tree)?;
    fs::remove_file(&sqsh).map_err(io_err(format!("remove {}", sqsh.display())))?;
    let mod_dir = tree.join(modules);
    let kver = single_kver(&mod_dir)?;
    for ext in exts {
        if let Some(src) = real_dir(&ext.rootfs, &format!("{modules}/{kver}"))? {
            copy_tree(&src, &mod_dir.join(&kver))?;
        } else {
            tracing::warn!(extension = %ext.manifest.metadata.name, kver = %kver,
                "extension carries kernel modules, but not for the base kernel version");
        }
    }
    let basedir = match modules.strip_suffix("lib/modules") {
        Some(prefix) => tree.join(prefix.trim_end_matches('/')),
        None => {
            return Err(InitramfsError::Invalid(format!(
                "module path {modules} does not end in lib/modules"
            )));
        }
    };
    let config = scratch.join("depmod.conf");
    fs::write(&config, DEPMOD_CONFIG).map_err(io_err(format!("write {}", config.display())))?;
    let mut cmd = Command::new(depmod);
    cmd.arg("--all")
        .arg("--basedir")
        .arg(&basedir)
        .arg("--config")
        .arg(&config)
        .arg(&kver)
        .env("LC_ALL", "C");
    run.run("depmod", cmd)?;
    let ext_dir = scratch.join("modules.dep");
    let staged = ext_dir.join("rootfs").join(modules).join(&kver);
    mkdirs(&staged)?;
    let kdir = mod_dir.join(&kver);
    let mut names: Vec<String> = fs::read_dir(&kdir)
        .map_err(io_err(format!("read {}", kdir.display())))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("modules."))
        .collect();
    names.sort();
    for n in &names {
        let (s, d) = (kdir.join(n), staged.join(n));
        fs::rename(&s, &d).map_err(io_err(format!("move {}", s.display())))?;
        fs::set_permissions(&d, fs::Permissions::from_mode(0o644))
            .map_err(io_err(format!("chmod {}", d.display())))?;
    }
    fs::remove_dir_all(&tree).map_err(io_err(format!("remove {}", tree.display())))?;
    let manifest = Manifest {
        version: kver.clone(),
        metadata: Metadata {
            name: "modules.dep".into(),
            version: kver.clone(),
            author: "Talos Machinery".into(),
            description: "Combined modules.dep for all extensions".into(),
            ..Metadata::default()
        },
    };
    let loaded = Loaded {
        dir: "modules.dep".into(),
        rootfs: ext_dir.join("rootfs"),
        manifest,
        labels: Default::default(),
    };
    Ok((loaded, kver))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newc(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (name, data)) in entries.iter().enumerate() {
            let mut w = cpio::newc::Builder::new(name)
                .ino(i as u32 + 1)
                .mode(0o100644)
                .write(&mut out, data.len() as u32);
            io::Write::write_all(&mut w, data).unwrap();
            w.finish().unwrap();
        }
        cpio::newc::trailer(out).unwrap()
    }

    #[test]
    fn finds_rootfs_sqsh_in_zstd_and_xz() {
        let cpio = newc(&[
            ("init", b"#!/bin/sh"),
            ("rootfs.sqsh", b"SQSH"),
            ("z", b"z"),
        ]);
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("r");
        let zst = zstd::bulk::compress(&cpio, 3).unwrap();
        extract_rootfs_sqsh(&zst[..], &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"SQSH");
        let mut xz = Vec::new();
        liblzma::read::XzEncoder::new(&cpio[..], 1)
            .read_to_end(&mut xz)
            .unwrap();
        fs::remove_file(&dest).unwrap();
        extract_rootfs_sqsh(&xz[..], &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"SQSH");
        let none = zstd::bulk::compress(&newc(&[("./rootfs.sqsh", b"x")]), 3).unwrap();
        let e = extract_rootfs_sqsh(&none[..], &dest)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no rootfs.sqsh"), "{e}");
    }
}
