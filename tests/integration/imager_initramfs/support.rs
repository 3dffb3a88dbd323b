//! Helpers for `tests/integration/imager_initramfs.rs`: a blob store with a base initramfs, extension tars
//! and images, building, splitting the output into its segments, and running Debian tools.
#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use image_factory::catalog::{BlobRef, Version};
use image_factory::imager::initramfs::{
    ExtensionSource, InitramfsError, InitramfsInputs, InitramfsReport, Progress, build_initramfs,
};
use image_factory::oci::Digest;
use image_factory::store::{BlobStore, MetaStore, SledStore};
use image_factory::synth::Tree;

pub const KVER: &str = "6.1.0-99-test";
pub const ID: &str = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";

/// Whether every tool is installed; a missing one skips the test (fails it under
/// `IF_REQUIRE_TOOLS=1`, see `testsupport::tools`).
pub fn have(tools: &[&str]) -> bool {
    tools
        .iter()
        .all(|t| testsupport::tools::have(t, "cpio, zstd, squashfs-tools or kmod"))
}

/// A blob store holding the base initramfs.
pub struct Env {
    dir: tempfile::TempDir,
    pub blobs: BlobStore,
    pub base: BlobRef,
    pub base_bytes: Vec<u8>,
}

pub fn env(base_bytes: Vec<u8>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let meta: Arc<dyn MetaStore> = Arc::new(SledStore::open(&dir.path().join("meta")).unwrap());
    let blobs = BlobStore::open(&dir.path().join("blobs"), meta).unwrap();
    let info = blobs.put_bytes(&base_bytes).unwrap();
    let base = BlobRef {
        blake3: info.blake3,
        sha256: info.sha256,
        size: info.size,
        mode: 0o644,
    };
    Env {
        dir,
        blobs,
        base,
        base_bytes,
    }
}

/// A Talos-shaped base initramfs: zstd of a newc cpio with `.`, `init`, `rootfs.sqsh` whose
/// module tree is `usr/lib/modules/<KVER>/` with a `modules.order`.
pub fn synthetic_base() -> Vec<u8> {
    let mut root = Tree::new();
    root.file("etc/os-release", 0o644, &b"NAME=Talos\n"[..]);
    root.file(
        &format!("usr/lib/modules/{KVER}/modules.order"),
        0o644,
        &b""[..],
    );
    root.file(
        &format!("usr/lib/modules/{KVER}/modules.builtin"),
        0o644,
        &b"kernel/fs/ext4/ext4.ko\n"[..],
    );
    let mut t = Tree::new();
    t.file("init", 0o755, &b"#!/bin/sh\n"[..]);
    t.file("rootfs.sqsh", 0o644, root.to_squashfs().unwrap());
    zstd::bulk::compress(&t.to_cpio().unwrap(), 3).unwrap()
}

pub fn manifest(name: &str, constraint: &str) -> String {
    format!(
        "version: v1alpha1\nmetadata:\n  name: {name}\n  version: v1.0.0\n  author: Test\n  description: |\n    [test] {name}\n  compatibility:\n    talos:\n      version: '{constraint}'\n"
    )
}

/// An extension tar: `manifest.yaml` + `rootfs/` with `files`.
pub fn ext_tar(name: &str, constraint: &str, files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut t = Tree::new();
    t.file(
        "manifest.yaml",
        0o644,
        manifest(name, constraint).into_bytes(),
    );
    t.dir("rootfs", 0o755);
    for (p, mode, data) in files {
        t.file(&format!("rootfs/{p}"), *mode, data.to_vec());
    }
    t.to_tar().unwrap()
}

pub fn tar_src(name: &str, files: &[(&str, u32, &[u8])]) -> ExtensionSource {
    ExtensionSource::Tar {
        name: name.into(),
        tar: ext_tar(name, ">= v1.8.0", files),
    }
}

/// Stores `layer_tar` as a one-layer OCI image; returns the manifest digest.
pub fn store_image(blobs: &BlobStore, layer_tar: &[u8]) -> Digest {
    let layer = blobs.put_bytes(layer_tar).unwrap();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cfg = blobs.put_bytes(config).unwrap();
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", cfg.sha256), "size": cfg.size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{}", layer.sha256), "size": layer.size}],
    });
    let bytes = serde_json::to_vec(&m).unwrap();
    blobs.put_bytes(&bytes).unwrap();
    Digest::of(&bytes)
}

pub fn build(e: &Env, exts: Vec<ExtensionSource>, version: &str) -> (Vec<u8>, InitramfsReport) {
    try_build(e, exts, version).unwrap()
}

pub fn try_build(
    e: &Env,
    exts: Vec<ExtensionSource>,
    version: &str,
) -> Result<(Vec<u8>, InitramfsReport), InitramfsError> {
    let mut inputs = InitramfsInputs::new(
        Version::parse_strict(version).unwrap(),
        e.base.clone(),
        exts,
    );
    inputs.scratch = Some(e.dir.path().join("scratch"));
    let mut out = Vec::new();
    let mut stages = Vec::new();
    let report = build_initramfs(&inputs, &e.blobs, &mut out, &mut |p| stages.push(p))?;
    assert_eq!(report.size, out.len() as u64);
    assert_eq!(stages.last(), Some(&Progress::Writing));
    check_stages(&stages, inputs.extensions.len(), &report);
    Ok((out, report))
}

/// The stages a build reports: every input extracted in order (`i/n`), depmod exactly when a
/// `modules.dep` layer was built, the squashfs layers counted `0/n` … `n/n`, then writing.
fn check_stages(stages: &[Progress], inputs: usize, report: &InitramfsReport) {
    if inputs == 0 {
        assert_eq!(stages, [Progress::Writing]);
        return;
    }
    let mut extracted = Vec::new();
    let mut squashed = Vec::new();
    for p in stages {
        match p {
            Progress::Extracting { index, count, .. } => {
                assert_eq!(*count, inputs, "{p}");
                extracted.push(*index);
            }
            Progress::Squashing { done, count, .. } => squashed.push((*done, *count)),
            Progress::Depmod | Progress::Writing => {}
        }
    }
    assert_eq!(extracted, (0..inputs).collect::<Vec<_>>(), "{stages:?}");
    let layers = report.layers.len();
    assert_eq!(
        squashed,
        (0..=layers).map(|d| (d, layers)).collect::<Vec<_>>(),
        "{stages:?}"
    );
    assert_eq!(
        stages.contains(&Progress::Depmod),
        report.modules_kver.is_some(),
        "{stages:?}"
    );
}

/// The three segments: (uncompressed microcode cpio, base, compressed cpio).
pub fn split<'a>(e: &Env, out: &'a [u8], r: &InitramfsReport) -> (&'a [u8], &'a [u8], &'a [u8]) {
    let mc = r.microcode_cpio_size as usize;
    let base_end = mc + e.base_bytes.len();
    assert_eq!(
        &out[mc..base_end],
        &e.base_bytes[..],
        "base initramfs must be unchanged"
    );
    (&out[..mc], &out[mc..base_end], &out[base_end..])
}

pub fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

pub fn cpio_list(bytes: &[u8], dir: &Path, name: &str) -> Vec<String> {
    let f = dir.join(name);
    fs::write(&f, bytes).unwrap();
    run(Command::new("sh")
        .arg("-c")
        .arg(format!("cpio -it --quiet < {}", f.display())))
    .lines()
    .map(str::to_string)
    .collect()
}

/// Unpacks the compressed segment with `zstd -d | cpio -id` into `dest`; returns `cpio -t`.
pub fn unpack_tail(tail: &[u8], dir: &Path, dest: &Path) -> Vec<String> {
    let z = dir.join("tail.zst");
    fs::write(&z, tail).unwrap();
    let raw = dir.join("tail.cpio");
    run(Command::new("zstd")
        .args(["-d", "-q", "-f", "-o"])
        .arg(&raw)
        .arg(&z));
    fs::create_dir_all(dest).unwrap();
    run(Command::new("sh").arg("-c").arg(format!(
        "cd {} && cpio -id --quiet < {}",
        dest.display(),
        raw.display()
    )));
    cpio_list(&fs::read(&raw).unwrap(), dir, "tail.list.cpio")
}

/// Fails (rather than skips, whatever `IF_REQUIRE_TOOLS` says) when squashfs-tools-ng is
/// missing: the xattr checks need it.
pub fn need_rdsquashfs() {
    assert!(
        testsupport::tools::on_path("rdsquashfs"),
        "rdsquashfs is not installed: install Debian package squashfs-tools-ng (test.sh does)"
    );
}

/// `rdsquashfs -x <path> <image>`: the xattrs of one entry as `name=value` lines, trimmed.
pub fn xattrs(image: &Path, path: &str) -> String {
    run(Command::new("rdsquashfs").args(["-x", path]).arg(image))
        .trim()
        .to_string()
}
