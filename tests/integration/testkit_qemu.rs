//! Boots the test kit's initramfs in QEMU (TCG) and reads the marker line: the bare base
//! initramfs, and the base initramfs with an extension layer appended the way the imager appends
//! one (spec talos-imager.md §3.6), with META on the command line.

use std::io::Write;

use base64::Engine as _;
use image_factory::synth::{
    KitInputs, Marker, PROOF_DIR, Tree, default_kit_dir, extension_proof, initramfs,
};
use testsupport::qemu;

fn kit() -> KitInputs {
    KitInputs::locate(&default_kit_dir()).unwrap_or_else(|e| panic!("{e}"))
}

fn skip_without_qemu() -> bool {
    !testsupport::tools::qemu()
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
    // Layers like the imager writes them: 0.sqsh (a service, with the kit's proof file),
    // 1.sqsh (the schematic); plus 2.sqsh, not a squashfs, which must show as not mounted.
    let mut svc = Tree::new();
    svc.file(
        "usr/local/etc/containers/svc-test.yaml",
        0o644,
        &b"name: svc-test\n"[..],
    );
    svc.file(
        &format!("{PROOF_DIR}/svc-test.proof"),
        0o644,
        format!("{}\n", extension_proof("svc-test", "v1.0.0")).into_bytes(),
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
    appended.file("2.sqsh", 0o644, vec![0x5a; 8192]);
    appended.file("usr/lib/firmware/test/fw.bin", 0o644, &b"fw"[..]);
    appended.file(
        "extensions.yaml",
        0o644,
        format!(
            "layers:\n    - image: 0.sqsh\n      metadata:\n          name: svc-test\n          version: v1.0.0\n          author: kit\n          description: |\n              version: not-this-one\n          compatibility:\n              talos:\n                  version: '>= v1.10.0'\n    - image: 1.sqsh\n      metadata:\n          name: schematic\n          version: {id}\n          author: Image Factory\n          description: \"\"\n    - image: 2.sqsh\n      metadata:\n          name: broken\n          version: v0.0.1\n"
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
    assert_eq!(
        names,
        [
            ("svc-test", "v1.0.0"),
            ("schematic", id),
            ("broken", "v0.0.1")
        ]
    );
    // Each layer's content was read from its own mount; the broken one was not mounted, and
    // it is the only layer the check reports.
    let svc = &m.extensions[0];
    assert!(svc.mounted);
    assert_eq!(svc.proof, extension_proof("svc-test", "v1.0.0"));
    assert_eq!(
        svc.files,
        [
            "usr/local/etc/containers/svc-test.yaml".to_string(),
            format!("{PROOF_DIR}/svc-test.proof")
        ]
    );
    assert_eq!(
        m.extensions[1].files,
        [format!("usr/local/share/schematic/{id}")]
    );
    let broken = &m.extensions[2];
    assert!(!broken.mounted, "{broken:?}");
    assert!(broken.files.is_empty(), "{broken:?}");
    let e = m.check_layers().unwrap_err();
    assert_eq!(
        e.to_string(),
        "layer 2.sqsh (broken v0.0.1) was not mounted"
    );
    assert_eq!(m.schematic, id);
    assert_eq!(m.meta["0xa"], "addresses:\n  - 10.0.0.2/24\n");
    assert_eq!(m.meta["0xc"], "\"quoted\"");
    assert_eq!(m.firmware, ["test/fw.bin"]);
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for b in data {
        crc ^= *b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A 4 MiB raw disk with a GPT (primary only) holding one 1 MiB partition named META at LBA
/// 2048, whose first 256 KiB are `adv`.
fn meta_disk(adv: &[u8]) -> Vec<u8> {
    const SECTORS: u64 = 8192;
    let mut disk = vec![0u8; (SECTORS * 512) as usize];
    // Protective MBR.
    disk[446 + 4] = 0xEE;
    disk[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    disk[446 + 12..446 + 16].copy_from_slice(&((SECTORS - 1) as u32).to_le_bytes());
    disk[510] = 0x55;
    disk[511] = 0xAA;
    // Partition entry 0.
    let mut entries = vec![0u8; 128 * 128];
    let linux_data = [
        0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D,
        0xE4,
    ];
    entries[..16].copy_from_slice(&linux_data);
    entries[16..32].copy_from_slice(&[0x11; 16]);
    entries[32..40].copy_from_slice(&2048u64.to_le_bytes());
    entries[40..48].copy_from_slice(&(2048u64 + 2047).to_le_bytes());
    for (i, c) in "META".encode_utf16().enumerate() {
        entries[56 + 2 * i..58 + 2 * i].copy_from_slice(&c.to_le_bytes());
    }
    disk[1024..1024 + entries.len()].copy_from_slice(&entries);
    // Header.
    let mut h = vec![0u8; 92];
    h[..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&1u64.to_le_bytes());
    h[32..40].copy_from_slice(&(SECTORS - 1).to_le_bytes());
    h[40..48].copy_from_slice(&34u64.to_le_bytes());
    h[48..56].copy_from_slice(&(SECTORS - 34).to_le_bytes());
    h[56..72].copy_from_slice(&[0x22; 16]);
    h[72..80].copy_from_slice(&2u64.to_le_bytes());
    h[80..84].copy_from_slice(&128u32.to_le_bytes());
    h[84..88].copy_from_slice(&128u32.to_le_bytes());
    h[88..92].copy_from_slice(&crc32(&entries).to_le_bytes());
    let c = crc32(&h);
    h[16..20].copy_from_slice(&c.to_le_bytes());
    disk[512..512 + 92].copy_from_slice(&h);
    let start = 2048 * 512;
    disk[start..start + adv.len()].copy_from_slice(adv);
    disk
}

/// A Talos ADV block (spec talos-imager.md §4.2) with `values`.
fn adv(values: &[(u8, &[u8])]) -> Vec<u8> {
    const LEN: usize = 256 * 1024;
    let mut b = vec![0u8; LEN];
    b[..4].copy_from_slice(&0x5A4B_3C2Du32.to_be_bytes());
    let mut o = 4;
    for (tag, v) in values {
        b[o..o + 4].copy_from_slice(&(*tag as u32).to_be_bytes());
        b[o + 4..o + 8].copy_from_slice(&(v.len() as u32).to_be_bytes());
        b[o + 8..o + 8 + v.len()].copy_from_slice(v);
        o += 8 + v.len();
    }
    b[LEN - 4..].copy_from_slice(&0xA5B4_C3D2u32.to_be_bytes());
    use sha2::Digest as _;
    let sum = sha2::Sha256::digest(&b);
    b[LEN - 36..LEN - 4].copy_from_slice(&sum);
    b
}

#[test]
fn meta_partition_on_a_virtio_disk() {
    if skip_without_qemu() {
        return;
    }
    let inputs = kit();
    let initrd = initramfs::base_initramfs(&inputs, "v1.11.0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    std::fs::write(
        &disk,
        meta_disk(&adv(&[
            (0x0a, b"addresses: [10.0.0.9/24]\n"),
            (0x0c, b"user"),
        ])),
    )
    .unwrap();
    let ipath = dir.path().join("initramfs.xz");
    std::fs::write(&ipath, &initrd).unwrap();
    let mut b = qemu::Boot::direct(&inputs.vmlinuz, &ipath, "console=ttyS0 quiet");
    b.args = vec![
        "-drive".into(),
        format!("file={},format=raw,if=virtio", disk.display()),
    ];
    let out = b.run().unwrap();
    let m = Marker::find(&out.console)
        .unwrap_or_else(|| panic!("no marker; console:\n{}", out.console))
        .unwrap();
    let meta = m
        .meta_partition()
        .unwrap()
        .unwrap_or_else(|| panic!("META partition not found; console:\n{}", out.console));
    assert_eq!(meta[&0x0a], b"addresses: [10.0.0.9/24]\n");
    assert_eq!(meta[&0x0c], b"user");
}
