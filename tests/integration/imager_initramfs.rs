//! The initramfs with system extensions (imager spec §3), checked with independent tools:
//! Debian's `cpio -it` on each segment, `zstd -d`, `unsquashfs -s` / `-lln` on each layer, and
//! (with the test kit's Debian kernel) `depmod` output inside the `modules.dep` layer.

mod support;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use image_factory::catalog::{Arch, ExtensionEntry, ImageRecord};
use image_factory::imager::initramfs::{
    EMBEDDED_CONFIG_LABEL, ExtensionSource, InitramfsError, check_tools,
    embedded_config_extension_tar, schematic_extension_tar, schematic_manifest,
};
use image_factory::synth::Tree;
use sha2::{Digest as _, Sha256};
use support::*;

#[test]
fn layout_microcode_firmware_and_layers() {
    if !have(&["cpio", "zstd", "unsquashfs"]) {
        return;
    }
    let e = env(synthetic_base());
    let fw = tar_src(
        "fw-test",
        &[
            ("usr/lib/firmware/intel-ucode/06-8e-0a", 0o644, b"INTEL-A"),
            (
                "usr/lib/firmware/amd-ucode/microcode_amd_fam17h.bin",
                0o644,
                b"AMD-A",
            ),
            ("usr/lib/firmware/test/fw.bin", 0o600, b"firmware"),
            ("usr/local/share/fw-test/README", 0o644, b"readme"),
        ],
    );
    let fw2 = tar_src(
        "fw2",
        &[("usr/lib/firmware/intel-ucode/06-8e-0b", 0o644, b"INTEL-B")],
    );
    let svc = store_image(
        &e.blobs,
        &ext_tar(
            "svc-test",
            ">= v1.10.0",
            &[("usr/local/etc/containers/svc.yaml", 0o644, b"name: svc\n")],
        ),
    );
    let svc = ExtensionSource::catalog(
        &ExtensionEntry {
            name: "siderolabs/svc-test".into(),
            reference: "ghcr.io/siderolabs/svc-test:v1.0.0".into(),
            digest: svc.clone(),
            author: String::new(),
            description: String::new(),
            images: [(
                Arch::Amd64,
                ImageRecord {
                    reference: "x".into(),
                    digest: svc.clone(),
                    manifest: svc,
                    size: 0,
                },
            )]
            .into(),
        },
        "amd64",
    )
    .unwrap();
    let schematic = ExtensionSource::Tar {
        name: "schematic".into(),
        tar: schematic_extension_tar(ID, "http://factory.test", "customization: {}\n").unwrap(),
    };
    let (out, r) = build(&e, vec![fw, fw2, svc, schematic], "v1.11.0");
    assert_eq!(r.microcode_files, 3);
    assert_eq!(r.firmware_files, 1);
    assert_eq!(r.modules_kver, None);
    let (mc, _, tail) = split(&e, &out, &r);
    assert_eq!(&mc[..6], b"070701");
    assert_eq!(mc.len() % 512, 0);

    let d = tempfile::tempdir().unwrap();
    assert_eq!(
        cpio_list(mc, d.path(), "mc.cpio"),
        [
            "kernel",
            "kernel/x86",
            "kernel/x86/microcode",
            "kernel/x86/microcode/AuthenticAMD.bin",
            "kernel/x86/microcode/GenuineIntel.bin"
        ]
    );
    let base_list = cpio_list(&zstd::decode_all(&e.base_bytes[..]).unwrap(), d.path(), "b");
    assert_eq!(base_list, [".", "init", "rootfs.sqsh"]);
    let root = d.path().join("tail");
    let listed = unpack_tail(tail, d.path(), &root);
    assert_eq!(
        listed,
        [
            "0.sqsh",
            "1.sqsh",
            "2.sqsh",
            "3.sqsh",
            "extensions.yaml",
            "usr",
            "usr/lib",
            "usr/lib/firmware",
            "usr/lib/firmware/test",
            "usr/lib/firmware/test/fw.bin"
        ]
    );
    // Microcode concatenated in processing order; firmware keeps its mode.
    let mc_dir = d.path().join("mc");
    fs::create_dir_all(&mc_dir).unwrap();
    run(Command::new("sh").arg("-c").arg(format!(
        "cd {} && cpio -id --quiet < {}",
        mc_dir.display(),
        d.path().join("mc.cpio").display()
    )));
    let ucode = mc_dir.join("kernel/x86/microcode");
    assert_eq!(
        fs::read(ucode.join("GenuineIntel.bin")).unwrap(),
        b"INTEL-AINTEL-B"
    );
    assert_eq!(fs::read(ucode.join("AuthenticAMD.bin")).unwrap(), b"AMD-A");
    let fwv = run(Command::new("sh").arg("-c").arg(format!(
        "cpio -itv --quiet < {} | grep fw.bin",
        d.path().join("tail.cpio").display()
    )));
    assert!(fwv.starts_with("-rw-------"), "{fwv}");
    assert!(fwv.contains(" root "), "{fwv}");

    // extensions.yaml: layers in order with go-yaml v3's layout (inside a `- ` item, nested
    // mappings align to the next multiple of four: 6 -> 8).
    let y = fs::read_to_string(root.join("extensions.yaml")).unwrap();
    assert!(
        y.starts_with("layers:\n    - image: 0.sqsh\n      metadata:\n        name: fw-test\n"),
        "{y}"
    );
    assert!(
        y.contains("    - image: 2.sqsh\n      metadata:\n        name: svc-test\n"),
        "{y}"
    );
    assert!(
        y.contains("        description: |\n            [test] fw-test\n"),
        "{y}"
    );
    assert!(y.contains("                version: '>= v1.10.0'\n"), "{y}");
    assert!(
        y.contains(&format!("        name: schematic\n        version: {ID}\n")),
        "{y}"
    );
    assert!(
        y.contains("        extraInfo: |\n            customization: {}\n"),
        "{y}"
    );

    // Each layer: zstd level 18, every entry 0/0, firmware and microcode gone.
    for (i, layer) in ["0.sqsh", "1.sqsh", "2.sqsh", "3.sqsh"].iter().enumerate() {
        let p = root.join(layer);
        let s = run(Command::new("unsquashfs").arg("-s").arg(&p));
        assert!(s.contains("Compression zstd"), "{s}");
        assert!(s.contains("compression-level 18"), "{s}");
        let l = run(Command::new("unsquashfs").arg("-lln").arg(&p));
        let lines: Vec<&str> = l.lines().filter(|x| x.contains("squashfs-root")).collect();
        assert!(!lines.is_empty());
        for line in &lines {
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cols[1], "0/0", "{line}");
            assert_eq!(cols[3], "2019-06-01", "{line}");
        }
        match i {
            0 => {
                assert!(
                    l.contains("squashfs-root/usr/local/share/fw-test/README"),
                    "{l}"
                );
                assert!(!l.contains("firmware/test"), "{l}");
                assert!(!l.contains("intel-ucode/06"), "{l}");
            }
            3 => assert!(
                l.contains(&format!("squashfs-root/usr/local/share/schematic/{ID}")),
                "{l}"
            ),
            _ => {}
        }
    }
}

#[test]
fn eleven_extensions_use_lexicographic_order_and_builds_are_deterministic() {
    let e = env(synthetic_base());
    let exts = || {
        (0..11)
            .map(|i| {
                let name = format!("plain-{i}");
                let path = format!("usr/local/share/{name}/README");
                tar_src(&name, &[(&path, 0o644, name.as_bytes())])
            })
            .collect::<Vec<_>>()
    };
    let (a, r) = build(&e, exts(), "v1.10.3");
    let images: Vec<(&str, &str)> = r
        .layers
        .iter()
        .map(|l| (l.image.as_str(), l.metadata.name.as_str()))
        .collect();
    assert_eq!(
        images[..4],
        [
            ("0.sqsh", "plain-0"),
            ("1.sqsh", "plain-1"),
            ("10.sqsh", "plain-10"),
            ("2.sqsh", "plain-2")
        ]
    );
    assert_eq!(r.microcode_cpio_size, 0);
    assert_eq!(&a[..e.base_bytes.len()], &e.base_bytes[..]);
    let (b, _) = build(&e, exts(), "v1.10.3");
    assert_eq!(
        Sha256::digest(&a),
        Sha256::digest(&b),
        "two builds must be identical"
    );
}

#[test]
fn incompatible_and_malformed_extensions_are_refused() {
    let e = env(synthetic_base());
    let bad = ExtensionSource::Tar {
        name: "future".into(),
        tar: ext_tar("future-ext", ">= v1.12.0", &[("usr/local/x", 0o644, b"x")]),
    };
    let err = try_build(&e, vec![bad], "v1.11.2").unwrap_err().to_string();
    assert!(err.contains("\"future-ext\""), "{err}");
    assert!(
        err.contains("version constraint >= 1.12.0 can't be satisfied with Talos version 1.11.2"),
        "{err}"
    );

    let mut t = Tree::new();
    t.file(
        "manifest.yaml",
        0o644,
        manifest("x", ">= 1.0.0").into_bytes(),
    );
    t.dir("rootfs", 0o755);
    t.file("extra.txt", 0o644, &b"no"[..]);
    let extra = ExtensionSource::Tar {
        name: "extra".into(),
        tar: t.to_tar().unwrap(),
    };
    let err = try_build(&e, vec![extra], "v1.11.0")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unexpected file \"extra.txt\""), "{err}");

    let old = try_build(&e, vec![tar_src("a", &[])], "v1.7.4").unwrap_err();
    assert!(matches!(old, InitramfsError::Unsupported(_)), "{old}");

    // No extensions: the base initramfs unchanged.
    let (out, _) = build(&e, vec![], "v1.11.0");
    assert_eq!(out, e.base_bytes);
}

#[test]
fn schematic_extension_tar_bytes() {
    let canonical = "customization:\n    extraKernelArgs:\n        - noapic\n";
    let tar = schematic_extension_tar(ID, "https://f.example", canonical).unwrap();
    assert_eq!(tar.len() % 512, 0);
    let oct = |b: &[u8]| {
        let s = std::str::from_utf8(b)
            .unwrap()
            .trim_matches(|c| c == '\0' || c == ' ');
        u64::from_str_radix(s, 8).unwrap()
    };
    let mut off = 0;
    let mut got = Vec::new();
    while off + 512 <= tar.len() && tar[off..off + 512].iter().any(|b| *b != 0) {
        let h = &tar[off..off + 512];
        let name_end = h[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let name = String::from_utf8(h[..name_end].to_vec()).unwrap();
        assert_eq!(&h[257..263], b"ustar\0", "ustar magic for {name}");
        assert_eq!(&h[263..265], b"00");
        assert_eq!(oct(&h[108..116]), 0, "uid");
        assert_eq!(oct(&h[116..124]), 0, "gid");
        let size = oct(&h[124..136]);
        got.push((name, oct(&h[100..108]), h[156], size));
        off += 512 + (size as usize).div_ceil(512) * 512;
    }
    assert!(tar[off..].iter().all(|b| *b == 0) && tar.len() - off >= 1024);
    let manifest = schematic_manifest(ID, "https://f.example", canonical);
    assert_eq!(
        got,
        [
            (
                "manifest.yaml".to_string(),
                0o644,
                b'0',
                manifest.len() as u64
            ),
            ("rootfs/".to_string(), 0o755, b'5', 0),
            ("rootfs/usr/".to_string(), 0o755, b'5', 0),
            ("rootfs/usr/local/".to_string(), 0o755, b'5', 0),
            ("rootfs/usr/local/share/".to_string(), 0o755, b'5', 0),
            (
                "rootfs/usr/local/share/schematic/".to_string(),
                0o755,
                b'5',
                0
            ),
            (
                format!("rootfs/usr/local/share/schematic/{ID}"),
                0o644,
                b'0',
                0
            ),
        ]
    );
    assert_eq!(&tar[512..512 + manifest.len()], manifest.as_bytes());
    assert!(manifest.contains(
        "    extraInfo: |\n        customization:\n            extraKernelArgs:\n                - noapic\n"
    ));
}

#[test]
fn embedded_config_layer_keeps_mode_and_carries_its_selinux_label() {
    need_rdsquashfs();
    if !have(&["cpio", "zstd", "unsquashfs"]) {
        return;
    }
    let e = env(synthetic_base());
    let cfg = ExtensionSource::Tar {
        name: "embedded-config".into(),
        tar: embedded_config_extension_tar(b"version: v1alpha1\nmachine: {}\n").unwrap(),
    };
    let (out, r) = build(&e, vec![cfg], "v1.12.0");
    assert_eq!(r.layers.len(), 1);
    assert_eq!(r.layers[0].metadata.name, "embedded-config");
    assert_eq!(r.layers[0].metadata.author, "Imager");
    assert_eq!(r.layers[0].labels, 1);
    let (_, _, tail) = split(&e, &out, &r);
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("t");
    unpack_tail(tail, d.path(), &root);
    let layer = root.join("0.sqsh");
    let l = run(Command::new("unsquashfs").arg("-lln").arg(&layer));
    let line = l
        .lines()
        .find(|x| x.ends_with("usr/local/etc/talos/config.yaml"))
        .unwrap();
    assert!(line.starts_with("-r-------- 0/0"), "{line}");
    // The label upstream passes to mksquashfs as a pseudo xattr, read by squashfs-tools-ng.
    assert_eq!(
        xattrs(&layer, "/usr/local/etc/talos/config.yaml"),
        format!("security.selinux={EMBEDDED_CONFIG_LABEL}")
    );
    assert_eq!(xattrs(&layer, "/usr/local/etc/talos"), "");
    assert_eq!(xattrs(&layer, "/"), "");
}

#[test]
fn pax_selinux_labels_of_an_extension_land_in_its_layer() {
    need_rdsquashfs();
    if !have(&["cpio", "zstd", "unsquashfs"]) {
        return;
    }
    let e = env(synthetic_base());
    // An extension image (non-root owner in the tar) whose layer labels the root, a directory
    // and a file.
    let mut b = tar::Builder::new(Vec::new());
    let mut add =
        |name: &str, kind: tar::EntryType, mode: u32, data: &[u8], label: Option<&str>| {
            if let Some(label) = label {
                b.append_pax_extensions([("SCHILY.xattr.security.selinux", label.as_bytes())])
                    .unwrap();
            }
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(1000);
            h.set_gid(1000);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, data).unwrap();
        };
    let manifest = manifest("labelled", ">= v1.8.0");
    add(
        "manifest.yaml",
        tar::EntryType::Regular,
        0o644,
        manifest.as_bytes(),
        None,
    );
    add(
        "rootfs/",
        tar::EntryType::Directory,
        0o755,
        b"",
        Some("system_u:object_r:root_t:s0"),
    );
    add("rootfs/usr/", tar::EntryType::Directory, 0o755, b"", None);
    add(
        "rootfs/usr/local/",
        tar::EntryType::Directory,
        0o755,
        b"",
        None,
    );
    add(
        "rootfs/usr/local/lib/",
        tar::EntryType::Directory,
        0o755,
        b"",
        Some("system_u:object_r:lib_t:s0"),
    );
    add(
        "rootfs/usr/local/lib/containers/",
        tar::EntryType::Directory,
        0o755,
        b"",
        None,
    );
    add(
        "rootfs/usr/local/lib/containers/svc",
        tar::EntryType::Regular,
        0o755,
        b"#!/bin/sh\n",
        Some("system_u:object_r:svc_exec_t:s0"),
    );
    add(
        "rootfs/usr/local/lib/plain",
        tar::EntryType::Regular,
        0o644,
        b"plain",
        None,
    );
    let tar = b.into_inner().unwrap();
    let digest = store_image(&e.blobs, &tar);
    let src = ExtensionSource::Image {
        name: "siderolabs/labelled".into(),
        manifest: digest,
    };
    let (out, r) = build(&e, vec![src], "v1.11.0");
    assert_eq!(r.layers[0].labels, 3);
    let (_, _, tail) = split(&e, &out, &r);
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("t");
    unpack_tail(tail, d.path(), &root);
    let layer = root.join("0.sqsh");
    assert_eq!(
        xattrs(&layer, "/usr/local/lib/containers/svc"),
        "security.selinux=system_u:object_r:svc_exec_t:s0"
    );
    assert_eq!(
        xattrs(&layer, "/usr/local/lib"),
        "security.selinux=system_u:object_r:lib_t:s0"
    );
    assert_eq!(
        xattrs(&layer, "/"),
        "security.selinux=system_u:object_r:root_t:s0"
    );
    assert_eq!(xattrs(&layer, "/usr/local/lib/plain"), "");
    assert_eq!(xattrs(&layer, "/usr/local"), "");
    // Still root-owned, contents intact.
    let l = run(Command::new("unsquashfs").arg("-lln").arg(&layer));
    assert!(
        l.lines()
            .filter(|x| x.contains("squashfs-root"))
            .all(|x| x.contains(" 0/0 ")),
        "{l}"
    );
    let svc = run(Command::new("rdsquashfs")
        .args(["-c", "/usr/local/lib/containers/svc"])
        .arg(&layer));
    assert_eq!(svc, "#!/bin/sh\n");
}

/// Builds with `exts` carrying kernel modules and returns the unpacked modules.dep layer.
fn modules_dep_layer(
    e: &Env,
    exts: Vec<ExtensionSource>,
    kver: &str,
) -> (PathBuf, tempfile::TempDir) {
    let (out, r) = build(e, exts, "v1.11.0");
    assert_eq!(r.modules_kver.as_deref(), Some(kver));
    let last = r.layers.last().unwrap();
    assert_eq!(last.image, "modules.dep.sqsh");
    assert_eq!(last.metadata.name, "modules.dep");
    assert_eq!(last.metadata.version, kver);
    assert_eq!(last.metadata.author, "Talos Machinery");
    let (_, _, tail) = split(e, &out, &r);
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("t");
    unpack_tail(tail, d.path(), &root);
    let y = fs::read_to_string(root.join("extensions.yaml")).unwrap();
    assert!(
        y.contains("    - image: modules.dep.sqsh\n      metadata:\n        name: modules.dep\n"),
        "{y}"
    );
    let x = d.path().join("x");
    run(Command::new("unsquashfs")
        .args(["-q", "-d"])
        .arg(&x)
        .arg(root.join("modules.dep.sqsh")));
    (x.join(format!("usr/lib/modules/{kver}")), d)
}

#[test]
fn modules_dep_with_synthetic_tree() {
    if !have(&["cpio", "zstd", "unsquashfs", "depmod"]) {
        return;
    }
    check_tools().unwrap();
    let e = env(synthetic_base());
    let kmod = tar_src(
        "kmod",
        &[(
            &format!("usr/lib/modules/{KVER}/extras/README"),
            0o644,
            b"no modules here",
        )],
    );
    let (dir, _keep) = modules_dep_layer(&e, vec![kmod], KVER);
    for f in [
        "modules.dep",
        "modules.dep.bin",
        "modules.alias",
        "modules.builtin",
        "modules.order",
    ] {
        assert!(
            dir.join(f).is_file(),
            "{f} missing in the modules.dep layer"
        );
    }
    assert!(
        !dir.join("extras").exists(),
        "only top-level modules.* files"
    );
}

#[test]
fn modules_dep_with_debian_kernel_from_the_test_kit() {
    if !have(&["cpio", "zstd", "unsquashfs", "depmod"]) {
        return;
    }
    let Some(inputs) = crate::common::kit::kit_inputs() else {
        return;
    };
    let base = image_factory::synth::initramfs::base_initramfs(&inputs, "v1.11.0").unwrap();
    let e = env(base);
    let dummy = inputs
        .module_path("dummy")
        .expect("dummy.ko in the Debian kernel");
    let ko = fs::read(inputs.modules_dir.join(dummy)).unwrap();
    let kver = inputs.kernel_release.clone();
    let kmod = tar_src(
        "kmod-test",
        &[(
            &format!("usr/lib/modules/{kver}/extras/dummy.ko"),
            0o644,
            &ko,
        )],
    );
    let (dir, _keep) = modules_dep_layer(&e, vec![kmod], &kver);
    let dep = fs::read_to_string(dir.join("modules.dep")).unwrap();
    assert!(dep.lines().any(|l| l == "extras/dummy.ko:"), "{dep}");
    assert!(dep.contains("kernel/fs/squashfs/squashfs.ko:"), "{dep}");
    let alias = fs::read_to_string(dir.join("modules.alias")).unwrap();
    assert!(alias.contains(" dummy"), "{alias}");
}
