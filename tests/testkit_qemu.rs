//! Boots the test kit's initramfs in QEMU (TCG) and reads the marker line: the bare base
//! initramfs, and the base initramfs with an extension layer appended the way the imager appends
//! one (spec talos-imager.md §3.6), with META on the command line.

use std::io::Write;

use base64::Engine as _;
use image_factory::testkit::{KitInputs, Marker, Tree, default_kit_dir, initramfs, qemu};

fn kit() -> KitInputs {
    KitInputs::locate(&default_kit_dir()).unwrap_or_else(|e| panic!("{e}"))
}

fn skip_without_qemu() -> bool {
    if !qemu::available() {
        println!("SKIPPED: {} is not installed", qemu::QEMU);
        return true;
    }
    false
}

fn boot(inputs: &KitInputs, initrd: &[u8], append: &str) -> Marker {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("initramfs.xz");
    std::fs::write(&path, initrd).unwrap();
    let out = qemu::Boot::direct(&inputs.vmlinuz, &path, append)
        .run()
        .unwrap();
    let marker = Marker::find(&out.console)
        .unwrap_or_else(|| {
            panic!(
                "no marker line after {:?} (timed out: {}); console:\n{}",
                out.elapsed, out.timed_out, out.console
            )
        })
        .unwrap_or_else(|e| panic!("{e}\nconsole:\n{}", out.console));
    assert!(
        out.exit_ok,
        "qemu did not exit cleanly after the marker; console:\n{}",
        out.console
    );
    marker
}

#[test]
fn base_initramfs_boots_and_prints_marker() {
    if skip_without_qemu() {
        return;
    }
    let inputs = kit();
    let initrd = initramfs::base_initramfs(&inputs, "v1.11.0").unwrap();
    let m = boot(&inputs, &initrd, "console=ttyS0 quiet");
    assert_eq!(m.extensions, []);
    assert_eq!(m.schematic, "");
    assert!(m.meta.is_empty());
    assert_eq!(m.meta_partition().unwrap(), None);
    assert_eq!(m.talos_version, "v1.11.0");
    assert!(m.cmdline.contains("console=ttyS0"), "{}", m.cmdline);
}

#[test]
fn extension_layer_overlay_schematic_and_cmdline_meta() {
    if skip_without_qemu() {
        return;
    }
    let inputs = kit();
    let base = initramfs::base_initramfs(&inputs, "v1.11.0").unwrap();
    let id = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
    // Two layers, like the imager writes them: 0.sqsh (a service), 1.sqsh (the schematic).
    let mut svc = Tree::new();
    svc.file(
        "usr/local/etc/containers/svc-test.yaml",
        0o644,
        &b"name: svc-test\n"[..],
    );
    let mut schematic = Tree::new();
    schematic.file(
        &format!("usr/local/share/schematic/{id}"),
        0o644,
        Vec::new(),
    );
    let mut appended = Tree::new();
    appended.file("0.sqsh", 0o644, svc.to_squashfs().unwrap());
    appended.file("1.sqsh", 0o644, schematic.to_squashfs().unwrap());
    appended.file("usr/lib/firmware/test/fw.bin", 0o644, &b"fw"[..]);
    appended.file(
        "extensions.yaml",
        0o644,
        format!(
            "layers:\n    - image: 0.sqsh\n      metadata:\n          name: svc-test\n          version: v1.0.0\n          author: kit\n          description: |\n              version: not-this-one\n          compatibility:\n              talos:\n                  version: '>= v1.10.0'\n    - image: 1.sqsh\n      metadata:\n          name: schematic\n          version: {id}\n          author: Image Factory\n          description: \"\"\n"
        )
        .into_bytes(),
    );
    let mut initrd = base;
    initrd.extend(zstd::bulk::compress(&appended.to_cpio().unwrap(), 3).unwrap());
    // META on the command line (§4.6): 0xa (multi-line YAML) and 0xc.
    let raw = "0xa=addresses:\n  - 10.0.0.2/24\n;0xc=\"quoted\"";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(raw.as_bytes()).unwrap();
    let payload = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
    let m = boot(
        &inputs,
        &initrd,
        &format!("console=ttyS0 quiet talos.environment=INSTALLER_META_BASE64={payload}"),
    );
    let names: Vec<(&str, &str)> = m
        .extensions
        .iter()
        .map(|e| (e.name.as_str(), e.version.as_str()))
        .collect();
    assert_eq!(names, [("svc-test", "v1.0.0"), ("schematic", id)]);
    assert_eq!(m.schematic, id);
    assert_eq!(m.meta["0xa"], "addresses:\n  - 10.0.0.2/24\n");
    assert_eq!(m.meta["0xc"], "\"quoted\"");
    assert_eq!(m.firmware, ["test/fw.bin"]);
}
