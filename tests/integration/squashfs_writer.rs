//! The native squashfs writer checked with independent readers: Debian's `unsquashfs` (4.5,
//! squashfs-tools) for the superblock, the long listing and a byte-for-byte extraction;
//! `rdsquashfs` (squashfs-tools-ng) for listings and the `security.selinux` xattrs; and
//! `sqfsdiff` against `mksquashfs` output of the same tree.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use image_factory::imager::initramfs::squashfs::build_squashfs;
use image_factory::synth::pseudo_random;

/// Runs `cmd` (from Debian package `package`); panics with a clear message when it is missing
/// or fails; returns stdout.
fn run(package: &str, cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}: install Debian package {package} (test.sh does)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A tree with every size class around the 128 KiB block, a 600-entry directory (listing over
/// 8 KiB: several runs and a directory index), symlinks, odd modes and nesting.
fn sample_tree(root: &Path) {
    let mk = |p: &str| fs::create_dir_all(root.join(p)).unwrap();
    let put = |p: &str, data: &[u8], mode: u32| {
        fs::write(root.join(p), data).unwrap();
        fs::set_permissions(root.join(p), fs::Permissions::from_mode(mode)).unwrap();
    };
    mk("usr/local/etc/talos");
    mk("usr/lib/firmware/x");
    mk("empty");
    mk("many");
    put(
        "usr/local/etc/talos/config.yaml",
        b"version: v1alpha1\n",
        0o400,
    );
    put("usr/lib/zero", b"", 0o644);
    put("usr/lib/one", b"1", 0o755);
    let block = 128 * 1024;
    put("usr/lib/exact", &pseudo_random("squashfs-1", block), 0o644);
    let mut plus = vec![b'a'; block];
    plus.push(b'z');
    put("usr/lib/plus-one", &plus, 0o600);
    let mut big = pseudo_random("squashfs-2", 5 << 20);
    big[1 << 20..3 << 20].fill(0);
    put("usr/lib/firmware/x/big.bin", &big, 0o644);
    for i in 0..600 {
        put(
            &format!("many/entry-with-a-longer-name-{i:03}"),
            format!("{i}\n").as_bytes(),
            0o644,
        );
    }
    symlink("../etc/talos/config.yaml", root.join("usr/local/config")).unwrap();
    symlink("/nonexistent/target", root.join("dangling")).unwrap();
    fs::set_permissions(root.join("empty"), fs::Permissions::from_mode(0o1777)).unwrap();
}

/// (relative path, kind and mode, contents or link target) of every entry under `root`.
fn describe(root: &Path) -> BTreeMap<String, (String, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            let v = if m.file_type().is_symlink() {
                (
                    "l".to_string(),
                    fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if m.is_dir() {
                stack.push(p.clone());
                (format!("d{mode:o}"), Vec::new())
            } else {
                (format!("f{mode:o}"), fs::read(&p).unwrap())
            };
            out.insert(rel, v);
        }
    }
    out
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("".to_string(), "system_u:object_r:root_t:s0".to_string()),
        (
            "usr/local/etc/talos/config.yaml".to_string(),
            "system_u:object_r:system_state_t:s0".to_string(),
        ),
        (
            "usr/local/config".to_string(),
            "system_u:object_r:link_t:s0".to_string(),
        ),
        (
            "usr/lib/one".to_string(),
            "system_u:object_r:system_state_t:s0".to_string(),
        ),
        (
            "missing/path".to_string(),
            "system_u:object_r:gone_t:s0".to_string(),
        ),
    ])
}

#[test]
fn unsquashfs_reads_our_images_byte_for_byte() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    sample_tree(&src);
    let img = d.path().join("img.sqsh");
    let rep = build_squashfs(&src, &img, 18, &labels()).unwrap();
    assert_eq!(rep.labels, 4, "labels of missing paths are ignored");
    let img_s = img.to_str().unwrap();

    let s = run("squashfs-tools", "unsquashfs", &["-s", img_s]);
    assert!(s.contains("Compression zstd"), "{s}");
    assert!(s.contains("compression-level 18"), "{s}");
    assert!(s.contains("Block size 131072"), "{s}");
    assert!(s.contains("Xattrs are compressed"), "{s}");
    assert!(s.contains("Number of ids 1"), "{s}");

    let l = run("squashfs-tools", "unsquashfs", &["-lln", img_s]);
    let lines: Vec<&str> = l.lines().filter(|x| x.contains("squashfs-root")).collect();
    assert_eq!(lines.len(), describe(&src).len() + 1, "{l}");
    for line in &lines {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1], "0/0", "{line}");
        assert_eq!(cols[3], "2019-06-01", "{line}");
    }
    assert!(l.contains("drwxrwxrwt 0/0"), "sticky bit kept: {l}");

    let out = d.path().join("out");
    run(
        "squashfs-tools",
        "unsquashfs",
        &["-q", "-no-xattrs", "-d", out.to_str().unwrap(), img_s],
    );
    let (want, got) = (describe(&src), describe(&out));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (k, v) in &want {
        assert!(got[k] == *v, "{k} differs after unsquashfs");
    }
}

#[test]
fn rdsquashfs_shows_selinux_labels_only_where_set() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    sample_tree(&src);
    let img = d.path().join("img.sqsh");
    build_squashfs(&src, &img, 18, &labels()).unwrap();
    let img_s = img.to_str().unwrap();
    let x = |p: &str| run("squashfs-tools-ng", "rdsquashfs", &["-x", p, img_s]);
    assert_eq!(
        x("/usr/local/etc/talos/config.yaml").trim(),
        "security.selinux=system_u:object_r:system_state_t:s0"
    );
    assert_eq!(
        x("/usr/lib/one").trim(),
        "security.selinux=system_u:object_r:system_state_t:s0"
    );
    assert_eq!(
        x("/usr/local/config").trim(),
        "security.selinux=system_u:object_r:link_t:s0"
    );
    assert_eq!(
        x("/").trim(),
        "security.selinux=system_u:object_r:root_t:s0"
    );
    for unlabelled in [
        "/usr",
        "/usr/lib/zero",
        "/many/entry-with-a-longer-name-007",
        "/dangling",
        "/empty",
    ] {
        assert_eq!(x(unlabelled).trim(), "", "{unlabelled} has no xattrs");
    }
    let l = run("squashfs-tools-ng", "rdsquashfs", &["-l", "/", img_s]);
    for name in ["dangling", "empty", "many", "usr"] {
        assert!(
            l.lines()
                .any(|x| x.ends_with(&format!(" {name}")) || x.contains(&format!(" {name} "))),
            "{name}: {l}"
        );
    }
    let many = run("squashfs-tools-ng", "rdsquashfs", &["-l", "/many", img_s]);
    assert_eq!(
        many.lines().filter(|x| x.contains("entry-")).count(),
        600,
        "{many}"
    );
    let cat = Command::new("rdsquashfs")
        .args(["-c", "/usr/lib/firmware/x/big.bin", img_s])
        .output()
        .unwrap();
    assert_eq!(
        cat.stdout,
        fs::read(src.join("usr/lib/firmware/x/big.bin")).unwrap()
    );

    // Without labels: no xattr table at all.
    let plain = d.path().join("plain.sqsh");
    build_squashfs(&src, &plain, 18, &BTreeMap::new()).unwrap();
    let s = run(
        "squashfs-tools",
        "unsquashfs",
        &["-s", plain.to_str().unwrap()],
    );
    assert!(s.contains("Xattrs are not stored"), "{s}");
}

#[test]
fn sqfsdiff_finds_no_difference_to_mksquashfs() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    sample_tree(&src);
    let ours = d.path().join("ours.sqsh");
    build_squashfs(&src, &ours, 18, &BTreeMap::new()).unwrap();
    let theirs = d.path().join("theirs.sqsh");
    fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).unwrap();
    run(
        "squashfs-tools",
        "mksquashfs",
        &[
            src.to_str().unwrap(),
            theirs.to_str().unwrap(),
            "-all-root",
            "-noappend",
            "-no-progress",
            "-no-xattrs",
            "-comp",
            "zstd",
            "-Xcompression-level",
            "18",
            "-all-time",
            "1559424892",
            "-quiet",
        ],
    );
    // Contents, owners, permissions and timestamps compared by a third implementation.
    let out = Command::new("sqfsdiff")
        .args([
            "-T",
            "-a",
            theirs.to_str().unwrap(),
            "-b",
            ours.to_str().unwrap(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("sqfsdiff: {e}: install Debian package squashfs-tools-ng"));
    assert!(
        out.status.success(),
        "sqfsdiff reports differences:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of xattr `name` of `path` (not following symlinks), `None` when it has none.
fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated and `buf` is writable for `buf.len()` bytes.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

/// Unmounts on drop.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The running kernel mounts our image (loop device): the same tree byte for byte, lookups in
/// the 600-entry directory (directory index), and the labels through getxattr. Needs root and
/// loop devices; skipped (with a notice) where mounting is not permitted.
#[test]
fn the_kernel_mounts_our_images_and_reads_the_labels() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    sample_tree(&src);
    let img = d.path().join("img.sqsh");
    build_squashfs(&src, &img, 18, &labels()).unwrap();
    let mnt = d.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let out = Command::new("mount")
        .args(["-t", "squashfs", "-o", "loop,ro"])
        .arg(&img)
        .arg(&mnt)
        .output()
        .expect("mount (Debian package mount)");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("permission denied")
            || err.contains("must be superuser")
            || err.contains("only root")
            || err.contains("failed to setup loop")
        {
            println!("SKIPPED: cannot loop-mount here: {err}");
            return;
        }
        panic!("the kernel refused our image: {err}");
    }
    let guard = Mounted(mnt.clone());
    let (want, got) = (describe(&src), describe(&mnt));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (k, v) in &want {
        assert!(got[k] == *v, "{k} differs in the kernel's view");
    }
    // Direct lookups (not readdir) in the big directory, first, middle and last run.
    for i in [0, 299, 599] {
        let p = mnt.join(format!("many/entry-with-a-longer-name-{i:03}"));
        assert_eq!(fs::read_to_string(&p).unwrap(), format!("{i}\n"));
    }
    assert!(!mnt.join("many/entry-with-a-longer-name-600").exists());
    let label = |p: &str| lgetxattr(&mnt.join(p), "security.selinux");
    assert_eq!(
        label("usr/local/etc/talos/config.yaml").as_deref(),
        Some(&b"system_u:object_r:system_state_t:s0"[..])
    );
    assert_eq!(
        label("").as_deref(),
        Some(&b"system_u:object_r:root_t:s0"[..])
    );
    assert_eq!(
        label("usr/local/config").as_deref(),
        Some(&b"system_u:object_r:link_t:s0"[..])
    );
    assert_eq!(label("usr/lib/zero"), None);
    let meta = fs::metadata(mnt.join("usr/lib/one")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mtime()),
        (0, 0, 1_559_424_892)
    );
    drop(guard);
}

/// A file over 4 GiB needs the extended file inode (64-bit size and block start): a sparse
/// 4 GiB + 5 bytes file, compressed at level 1, read back by squashfs-tools-ng and unsquashfs.
#[test]
fn files_over_4_gib_use_the_extended_inode() {
    use std::io::{Seek, SeekFrom, Write};
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir(&src).unwrap();
    let size = (4u64 << 30) + 5;
    let mut f = fs::File::create(src.join("big")).unwrap();
    f.seek(SeekFrom::Start(size - 5)).unwrap();
    f.write_all(b"tail!").unwrap();
    drop(f);
    fs::write(src.join("small"), b"small").unwrap();
    let img = d.path().join("img.sqsh");
    build_squashfs(&src, &img, 1, &BTreeMap::new()).unwrap();
    let img_s = img.to_str().unwrap();
    let s = run("squashfs-tools-ng", "rdsquashfs", &["-s", "/big", img_s]);
    assert!(s.contains("Inode type: extended file"), "{s}");
    assert!(s.contains("Xattr index: 0xFFFFFFFF"), "{s}");
    assert!(s.contains(&format!("File size: {size}")), "{s}");
    assert!(s.contains("Block count: 32768"), "{s}");
    let small = run("squashfs-tools-ng", "rdsquashfs", &["-c", "/small", img_s]);
    assert_eq!(small, "small");
    let l = run("squashfs-tools", "unsquashfs", &["-lln", img_s]);
    let line = l
        .lines()
        .find(|x| x.ends_with("squashfs-root/big"))
        .unwrap();
    assert!(line.contains(&format!(" {size} ")), "{line}");
    // The tail (in a fragment) read through the 64-bit inode.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("rdsquashfs -c /big {img_s} | tail -c 5"))
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"tail!");
}
