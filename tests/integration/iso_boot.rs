//! ISOs end to end with the test kit: `image-factory build metal-amd64.iso` for a 1.11 target
//! (hybrid: GRUB for BIOS, systemd-boot + UKI for UEFI) and a 1.9 target (GRUB only). The
//! images are checked with independent tools (`xorriso -report_el_torito` /
//! `-report_system_area`, `xorriso -find`, `isoinfo`, `fsck.vfat` and mtools on the EFI boot
//! image), two builds give the same bytes, and each ISO boots in QEMU as a CD-ROM and as a
//! USB-stick-like disk, on SeaBIOS and on OVMF. The kit's init prints the command line, the
//! mounted extensions, the schematic and the META values it decoded from the command line.

use std::path::{Path, PathBuf};

use crate::common::kit::{self, Kit, schematic_id, tool};
use image_factory::synth::Marker;
use testsupport::qemu::{Boot, OVMF_VARS};

fn schematic_file(k: &Kit, name: &str, body: &str) -> PathBuf {
    let p = k.dir.path().join(name);
    std::fs::write(&p, body).expect("schematic");
    p
}

/// Builds `metal-amd64.iso` of `version` into `out`; returns the sha256 the CLI reports.
fn build(k: &Kit, version: &str, schematic: &Path, out: &Path, rebuild: bool) -> String {
    kit::build(k, version, schematic, "metal-amd64.iso", out, rebuild)
}

/// Builds twice (the second with `--rebuild`) and checks both give the same bytes.
fn build_twice(k: &Kit, version: &str, schematic: &Path, name: &str) -> PathBuf {
    let out = k.dir.path().join(name);
    let first = build(k, version, schematic, &out, false);
    let iso = out.join("metal-amd64.iso");
    let copy = k.dir.path().join(format!("{name}-first.iso"));
    std::fs::rename(&iso, &copy).unwrap();
    let second = build(k, version, schematic, &out, true);
    assert_eq!(first.len(), 64);
    assert_eq!(first, second, "two ISO builds differ");
    assert!(
        std::fs::read(&copy).unwrap() == std::fs::read(&iso).unwrap(),
        "the written ISOs differ"
    );
    std::fs::remove_file(&copy).unwrap();
    // Both builds removed their scratch directories and left no temporary blob file.
    for dir in ["tmp", "blobs/tmp"] {
        let left: Vec<PathBuf> = std::fs::read_dir(k.data.join(dir))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{dir} keeps {left:?}");
    }
    iso
}

/// El Torito (BIOS GRUB + UEFI entries), system area (GRUB hybrid MBR, protective MBR, GPT
/// with the ISO and the EFI boot image) and labels; returns the EFI partition's (start, size)
/// in 512-byte sectors.
fn check_boot_records(iso: &str, version: &str) -> (u64, u64) {
    let rep = tool(
        "xorriso",
        "xorriso",
        &[
            "-indev",
            iso,
            "-report_el_torito",
            "plain",
            "-report_system_area",
            "plain",
        ],
    );
    let line = |prefix: &str| -> Vec<String> {
        rep.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|l| l.starts_with(prefix))
            .collect()
    };
    let imgs = line("El Torito boot img :");
    assert_eq!(imgs.len(), 2, "{rep}");
    assert!(imgs[0].contains(": 1 BIOS y none 0x0000 0x00 4 "), "{rep}");
    assert!(imgs[1].contains(": 2 UEFI y none"), "{rep}");
    assert_eq!(
        line("El Torito img path :"),
        ["El Torito img path : 1 /boot/grub/i386-pc/eltorito.img"]
    );
    assert_eq!(
        line("El Torito img opts :"),
        ["El Torito img opts : 1 boot-info-table grub2-boot-info"]
    );
    assert_eq!(
        line("System area summary:"),
        ["System area summary: MBR protective-msdos-label grub2-mbr cyl-align-off GPT"]
    );
    assert_eq!(
        line("MBR partition :"),
        [format!(
            "MBR partition : 1 0x00 0xee 1 {}",
            std::fs::metadata(iso).unwrap().len() / 512 - 1
        )]
    );
    let names = line("GPT partname local :");
    assert!(names[0].ends_with("1 ISO9660"), "{rep}");
    assert!(names[1].ends_with("2 Appended2"), "{rep}");
    let types = line("GPT type GUID :");
    // EFI System C12A7328-F81F-11D2-BA4B-00A0C93EC93B, as stored on disk
    assert!(
        types[1].ends_with("2 28732ac11ff8d211ba4b00a0c93ec93b"),
        "{rep}"
    );
    let efi: Vec<u64> = line("GPT start and size :")[1]
        .rsplit(' ')
        .take(2)
        .map(|n| n.parse().unwrap())
        .collect();

    let info = tool("genisoimage", "isoinfo", &["-d", "-i", iso]);
    let label = version.to_uppercase().replace('.', "_");
    assert!(
        info.contains(&format!("Volume id: TALOS_{label}\n")),
        "{info}"
    );
    assert!(
        info.contains(&format!("Volume set id: Talos-{version}\n")),
        "{info}"
    );
    assert!(info.contains("Rock Ridge signatures"), "{info}");
    (efi[1], efi[0])
}

/// `xorriso -find` lists `want`; returns `boot/grub/grub.cfg` read back with `isoinfo -R -x`.
fn check_tree(iso: &str, want: &[&str]) -> String {
    let list = tool(
        "xorriso",
        "xorriso",
        &["-indev", iso, "-find", "/", "-type", "f"],
    );
    for w in want {
        assert!(
            list.lines().any(|l| l.trim_matches('\'') == *w),
            "{w} missing from the ISO:\n{list}"
        );
    }
    tool(
        "genisoimage",
        "isoinfo",
        &["-R", "-i", iso, "-x", "/boot/grub/grub.cfg"],
    )
}

/// The EFI boot image (appended partition 2) passes `fsck.vfat` and holds `files`.
fn check_efiboot(k: &Kit, iso: &Path, (start, size): (u64, u64), files: &[&str]) {
    let bytes = std::fs::read(iso).unwrap();
    let img = k.dir.path().join("efiboot.img");
    std::fs::write(
        &img,
        &bytes[(start * 512) as usize..((start + size) * 512) as usize],
    )
    .unwrap();
    let img = img.to_str().unwrap();
    tool("dosfstools", "fsck.vfat", &["-n", img]);
    let listing = tool("mtools", "mdir", &["-i", img, "-/", "-b", "::"]);
    for f in files {
        assert!(
            listing.contains(f),
            "{f} missing from efiboot.img:\n{listing}"
        );
    }
    let info = tool("mtools", "minfo", &["-i", img, "::"]);
    assert!(info.contains("serial number: 1234ABCD"), "{info}");
}

fn marker(console: &str) -> Marker {
    Marker::find(console)
        .unwrap_or_else(|| panic!("no marker; console:\n{console}"))
        .unwrap_or_else(|e| panic!("{e}\nconsole:\n{console}"))
}

fn can_boot() -> bool {
    testsupport::tools::qemu_ovmf()
}

/// Boots `iso` as a CD-ROM and as a disk, on SeaBIOS and OVMF; returns the four markers.
fn boot_all(iso: &Path, work: &Path) -> Vec<(String, Marker)> {
    let vars = work.join("vars.fd");
    let mut out = Vec::new();
    for (name, cd, uefi) in [
        ("cdrom/seabios", true, false),
        ("cdrom/ovmf", true, true),
        ("usb/seabios", false, false),
        ("usb/ovmf", false, true),
    ] {
        std::fs::copy(OVMF_VARS, &vars).expect("vars");
        let v = uefi.then_some(vars.as_path());
        let boot = if cd {
            Boot::cdrom(iso, v)
        } else {
            Boot::raw_disk(iso, v)
        };
        let run = boot.run().expect("qemu");
        out.push((name.to_string(), marker(&run.console)));
    }
    out
}

#[test]
fn hybrid_iso_is_valid_deterministic_and_boots_everywhere() {
    let Some(k) = kit::imported(0) else { return };
    let schematic = schematic_file(&k, "iso.yaml", kit::SCHEMATIC);
    let iso = build_twice(&k, "v1.11.0", &schematic, "out-hybrid");
    let iso_s = iso.to_str().unwrap();

    let efi = check_boot_records(iso_s, "v1.11.0");
    let cfg = check_tree(
        iso_s,
        &[
            "/boot/vmlinuz",
            "/boot/initramfs.xz",
            "/boot/grub/grub.cfg",
            "/boot/grub/i386-pc/eltorito.img",
            "/boot/grub/i386-pc/normal.mod",
            "/EFI/BOOT/BOOTX64.EFI",
            "/EFI/Linux/Talos-v1.11.0.efi",
            "/loader/loader.conf",
        ],
    );
    assert!(cfg.starts_with("set default=0\nset timeout=3\n"), "{cfg}");
    assert!(cfg.contains("menuentry \"Talos ISO\" {"), "{cfg}");
    assert!(
        cfg.contains("menuentry \"Reset Talos installation\" {"),
        "{cfg}"
    );
    assert!(
        cfg.contains("talos.halt_if_installed=1") && cfg.contains("if.test=hello"),
        "{cfg}"
    );
    check_efiboot(
        &k,
        &iso,
        efi,
        &[
            "::/EFI/BOOT/BOOTX64.EFI",
            "::/EFI/Linux/Talos-v1.11.0.efi",
            "::/loader/loader.conf",
        ],
    );

    if !can_boot() {
        return;
    }
    let id = schematic_id(&schematic);
    for (how, m) in boot_all(&iso, k.dir.path()) {
        for arg in [
            "talos.platform=metal",
            "talos.halt_if_installed=1",
            "if.test=hello",
            "talos.environment=INSTALLER_META_BASE64=",
        ] {
            assert!(
                m.cmdline.contains(arg),
                "{how}: {arg} missing: {}",
                m.cmdline
            );
        }
        kit::check_kit_extensions(&m, &how);
        assert_eq!(
            m.schematic, id,
            "{how}: schematic file not in the merged root"
        );
        assert_eq!(
            m.meta.get("0xa").map(String::as_str),
            Some("{\"addr\":\"1.2.3.4\"}"),
            "{how}: META from the command line"
        );
        // BIOS boots GRUB (BOOT_IMAGE=), UEFI boots systemd-boot + the UKI (no BOOT_IMAGE)
        assert_eq!(
            m.cmdline.starts_with("BOOT_IMAGE=/boot/vmlinuz "),
            how.ends_with("seabios"),
            "{how}: {}",
            m.cmdline
        );
    }
}

#[test]
fn grub_iso_for_1_9_is_valid_deterministic_and_boots_everywhere() {
    let Some(k) = kit::imported_version("v1.9.5", 0) else {
        return;
    };
    // the kit's kmod-test needs >= 1.10
    let schematic = schematic_file(
        &k,
        "iso19.yaml",
        "customization:\n  extraKernelArgs:\n    - if.test=hello\n",
    );
    let iso = build_twice(&k, "v1.9.5", &schematic, "out-grub");
    let iso_s = iso.to_str().unwrap();
    let efi = check_boot_records(iso_s, "v1.9.5");
    let cfg = check_tree(
        iso_s,
        &[
            "/boot/vmlinuz",
            "/boot/initramfs.xz",
            "/boot/grub/grub.cfg",
            "/boot/grub/i386-pc/eltorito.img",
            "/EFI/BOOT/BOOTX64.EFI",
        ],
    );
    assert!(cfg.contains("talos.halt_if_installed=1"), "{cfg}");
    check_efiboot(&k, &iso, efi, &["::/EFI/BOOT/BOOTX64.EFI"]);
    if !can_boot() {
        return;
    }
    let id = schematic_id(&schematic);
    for (how, m) in boot_all(&iso, k.dir.path()) {
        // GRUB everywhere: BIOS (eltorito.img) and UEFI (GRUB's EFI image)
        assert!(
            m.cmdline
                .starts_with("BOOT_IMAGE=/boot/vmlinuz talos.platform=metal"),
            "{how}: {}",
            m.cmdline
        );
        assert!(m.cmdline.contains("talos.halt_if_installed=1"), "{how}");
        assert!(m.cmdline.contains("if.test=hello"), "{how}");
        assert_eq!(m.schematic, id, "{how}");
        // No extensions: the schematic layer alone, mounted with its file.
        if let Err(e) = m.check_layers() {
            panic!("{how}: {e}");
        }
        let names: Vec<&str> = m.extensions.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["schematic"], "{how}");
    }
}
