//! Disk images end to end with the test kit: `image-factory build metal-amd64.raw` for an
//! sd-boot and a dual-boot schematic; the images are checked with independent tools
//! (`sfdisk --verify`, `fsck.vfat -n` and mtools on the ESP, `xfs_repair -n` on BOOT), META
//! is read back, two builds give the same bytes, and the images boot in QEMU: sd-boot on OVMF,
//! dual-boot on SeaBIOS (GRUB) and OVMF (systemd-boot). The kit's init prints the command
//! line, the mounted extensions, the schematic and the META partition it found on the disk.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::common::kit::{self, Kit, schematic_id, tool};
use image_factory::synth::{Marker, parse_adv};
use testsupport::qemu::{self, OVMF_VARS};

const VERSION: &str = "v1.11.0";

/// Sizes of metal amd64 images for target 1.11 (spec §1.2/§1.3: 1246 MiB + 1000 MiB BOOT bump,
/// dual-boot adds BIOS + BOOT).
const SD_BOOT_SIZE: u64 = 2246 << 20;
const DUAL_BOOT_SIZE: u64 = 4247 << 20;

fn schematic_file(k: &Kit, name: &str, extra: &str) -> PathBuf {
    let p = k.dir.path().join(name);
    std::fs::write(&p, format!("{}{extra}", kit::SCHEMATIC)).expect("schematic");
    p
}

/// Builds `metal-amd64.raw` for `schematic` into `out`; returns the sha256 the CLI reports.
fn build(k: &Kit, schematic: &Path, out: &Path, rebuild: bool) -> String {
    build_path(k, schematic, out, rebuild, "metal-amd64.raw")
}

/// Builds `path` for `schematic` into `out`; returns the sha256 the CLI reports.
fn build_path(k: &Kit, schematic: &Path, out: &Path, rebuild: bool, path: &str) -> String {
    kit::build(k, VERSION, schematic, path, out, rebuild)
}

/// `sfdisk --verify` passes; returns name → (byte offset, byte size) from `sfdisk --json`.
fn partitions(disk: &Path) -> BTreeMap<String, (u64, u64)> {
    let verify = tool("fdisk", "sfdisk", &["--verify", disk.to_str().unwrap()]);
    assert!(verify.contains("No errors detected"), "{verify}");
    let json: serde_json::Value = serde_json::from_str(&tool(
        "fdisk",
        "sfdisk",
        &["--json", disk.to_str().unwrap()],
    ))
    .expect("sfdisk json");
    let table = &json["partitiontable"];
    assert_eq!(table["label"], "gpt");
    assert_eq!(table["sectorsize"], 512);
    table["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                (
                    p["start"].as_u64().unwrap() * 512,
                    p["size"].as_u64().unwrap() * 512,
                ),
            )
        })
        .collect()
}

/// Copies `size` bytes at `offset` of `disk` into a sparse file `dest`.
fn extract(disk: &Path, (offset, size): (u64, u64), dest: &Path) {
    let mut src = File::open(disk).expect("open disk");
    src.seek(SeekFrom::Start(offset)).unwrap();
    let mut out = File::create(dest).expect("create");
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        src.read_exact(&mut buf[..n]).unwrap();
        if buf[..n].iter().any(|b| *b != 0) {
            out.write_all(&buf[..n]).unwrap();
        } else {
            out.seek(SeekFrom::Current(n as i64)).unwrap();
        }
        left -= n as u64;
    }
    out.set_len(size).unwrap();
}

fn read_region(disk: &Path, (offset, size): (u64, u64)) -> Vec<u8> {
    let mut f = File::open(disk).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; size as usize];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// Checks the ESP with dosfstools and mtools: FAT32 that fsck accepts, holding systemd-boot,
/// the UKI and loader.conf.
fn check_esp(esp: &Path) {
    let esp = esp.to_str().unwrap();
    tool("dosfstools", "fsck.vfat", &["-n", esp]);
    let listing = tool("mtools", "mdir", &["-i", esp, "-/", "-b", "::"]);
    for want in [
        "::/EFI/boot/BOOTX64.efi",
        &format!("::/EFI/Linux/Talos-{VERSION}.efi"),
        "::/loader/loader.conf",
    ] {
        assert!(
            listing.contains(want),
            "{want} missing from the ESP:\n{listing}"
        );
    }
    let conf = tool("mtools", "mtype", &["-i", esp, "::/loader/loader.conf"]);
    assert_eq!(conf, "# systemd-boot configuration\n\ntimeout 10\n");
    let info = tool("mtools", "minfo", &["-i", esp, "::"]);
    assert!(info.contains("serial number: 1234ABCD"), "{info}");
}

/// The META partition's ADV (both copies identical) as tag → value.
fn meta_values(disk: &Path, region: (u64, u64)) -> BTreeMap<u8, Vec<u8>> {
    let bytes = read_region(disk, region);
    let first = parse_adv(&bytes[..256 << 10]).expect("META copy 1");
    let second = parse_adv(&bytes[256 << 10..512 << 10]).expect("META copy 2");
    assert_eq!(first, second);
    assert!(bytes[512 << 10..].iter().all(|b| *b == 0));
    first
}

fn marker(console: &str) -> Marker {
    Marker::find(console)
        .unwrap_or_else(|| panic!("no marker; console:\n{console}"))
        .unwrap_or_else(|e| panic!("{e}\nconsole:\n{console}"))
}

/// The marker shows the schematic's args, extensions and file, and META read from the disk.
fn check_boot(m: &Marker, id: &str, dual_boot: bool) {
    assert!(m.cmdline.contains("if.test=hello"), "{}", m.cmdline);
    assert!(m.cmdline.contains("talos.platform=metal"), "{}", m.cmdline);
    assert!(
        !m.cmdline.contains("INSTALLER_META_BASE64"),
        "disk images carry META in the partition, not the command line: {}",
        m.cmdline
    );
    kit::check_kit_extensions(m, "disk boot");
    assert_eq!(m.schematic, id, "schematic file not in the merged root");
    let meta = m
        .meta_partition()
        .expect("META decodes")
        .expect("the kit found no META partition on the disk");
    assert_eq!(
        meta.get(&0x0a).map(Vec::as_slice),
        Some(&b"{\"addr\":\"1.2.3.4\"}"[..])
    );
    assert_eq!(
        meta.get(&0x11).map(Vec::as_slice),
        dual_boot.then_some(&b"dual-boot"[..])
    );
}

fn can_boot() -> bool {
    testsupport::tools::qemu_ovmf()
}

fn boot_ovmf(disk: &Path, work: &Path) -> Marker {
    let vars = work.join("vars.fd");
    std::fs::copy(OVMF_VARS, &vars).expect("vars");
    let run = qemu::Boot::raw_disk(disk, Some(&vars)).run().expect("qemu");
    marker(&run.console)
}

#[test]
fn sd_boot_image_is_valid_deterministic_and_boots_on_ovmf() {
    let Some(k) = kit::imported(0) else { return };
    let schematic = schematic_file(&k, "sd-boot.yaml", "  bootloader: sd-boot\n");
    let out = k.dir.path().join("out-sd");
    let first = build(&k, &schematic, &out, false);
    let disk = out.join("metal-amd64.raw");
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), SD_BOOT_SIZE);
    let copy = k.dir.path().join("first.raw");
    std::fs::rename(&disk, &copy).unwrap();
    let second = build(&k, &schematic, &out, true);
    assert_eq!(first, second, "two sd-boot builds differ");
    assert_eq!(first.len(), 64);
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(&disk).unwrap(),
        "the written files differ"
    );
    std::fs::remove_file(&copy).unwrap();

    let parts = partitions(&disk);
    assert_eq!(parts.keys().collect::<Vec<_>>(), ["EFI", "META"]);
    let esp = k.dir.path().join("esp.img");
    extract(&disk, parts["EFI"], &esp);
    check_esp(&esp);
    let meta = meta_values(&disk, parts["META"]);
    assert_eq!(
        meta.into_iter().collect::<Vec<_>>(),
        vec![(0x0a, b"{\"addr\":\"1.2.3.4\"}".to_vec())]
    );
    // no GRUB boot code in sector 0
    assert!(read_region(&disk, (0, 446)).iter().all(|b| *b == 0));

    if can_boot() {
        let m = boot_ovmf(&disk, k.dir.path());
        check_boot(&m, &schematic_id(&schematic), false);
    }
}

#[test]
fn dual_boot_image_is_valid_deterministic_and_boots_on_seabios_and_ovmf() {
    let Some(k) = kit::imported(0) else { return };
    // no bootloader: amd64 >= 1.10 defaults to dual-boot
    let schematic = schematic_file(&k, "dual.yaml", "");
    let out = k.dir.path().join("out-dual");
    let first = build(&k, &schematic, &out, false);
    let second = build(&k, &schematic, &out, true);
    assert_eq!(first, second, "two dual-boot builds differ");
    let disk = out.join("metal-amd64.raw");
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), DUAL_BOOT_SIZE);

    let parts = partitions(&disk);
    assert_eq!(
        parts.keys().collect::<Vec<_>>(),
        ["BIOS", "BOOT", "EFI", "META"]
    );
    let esp = k.dir.path().join("esp.img");
    extract(&disk, parts["EFI"], &esp);
    check_esp(&esp);
    std::fs::remove_file(&esp).unwrap();

    let boot = k.dir.path().join("boot.img");
    extract(&disk, parts["BOOT"], &boot);
    tool(
        "xfsprogs",
        "xfs_repair",
        &["-n", "-f", boot.to_str().unwrap()],
    );
    let boot_s = boot.to_str().unwrap();
    let label = tool(
        "xfsprogs",
        "xfs_db",
        &["-r", "-c", "label", "-c", "uuid", "-c", "version", boot_s],
    );
    assert!(label.contains("\"BOOT\""), "{label}");
    // lts_6.6+ features for v1.11 (rmapbt), but no nrext64: the kit's GRUB 2.06 cannot read it
    for want in ["RMAPBT", "REFLINK", "BIGTIME", "INOBTCNT", "FTYPE"] {
        assert!(label.contains(want), "BOOT lacks {want}: {label}");
    }
    assert!(!label.contains("NREXT64"), "{label}");
    assert!(
        label.contains("24c73076-4092-85dd-9d98-686a2dbf6d81"),
        "{label}"
    );
    let ls = tool(
        "xfsprogs",
        "xfs_db",
        &["-r", "-c", "ls /A", "-c", "ls /grub", boot_s],
    );
    for want in ["vmlinuz", "initramfs.xz", "grub.cfg"] {
        assert!(ls.contains(want), "{want} missing on BOOT:\n{ls}");
    }
    std::fs::remove_file(&boot).unwrap();

    let meta = meta_values(&disk, parts["META"]);
    assert_eq!(meta.get(&0x11).map(Vec::as_slice), Some(&b"dual-boot"[..]));
    assert!(meta.contains_key(&0x0a));
    // boot.img in sector 0 points at core.img in the BIOS partition (spec §5.5.3)
    let mbr = read_region(&disk, (0, 512));
    let bios_lba = parts["BIOS"].0 / 512;
    assert_eq!(&mbr[0x5C..0x64], &bios_lba.to_le_bytes());
    assert_eq!(&mbr[0x66..0x68], &[0x90, 0x90]);
    assert_eq!(&mbr[510..], &[0x55, 0xAA]);
    let core = read_region(&disk, (parts["BIOS"].0, 512));
    assert_eq!(&core[0x1F4..0x1FC], &(bios_lba + 1).to_le_bytes());

    if can_boot() {
        let id = schematic_id(&schematic);
        let run = qemu::Boot::raw_disk(&disk, None).run().expect("qemu");
        check_boot(&marker(&run.console), &id, true);
        let m = boot_ovmf(&disk, k.dir.path());
        check_boot(&m, &id, true);
    }
}

#[test]
fn qcow2_image_is_valid_and_boots_on_ovmf() {
    let Some(k) = kit::imported(0) else { return };
    let schematic = schematic_file(&k, "qcow2.yaml", "");
    let out = k.dir.path().join("out-qcow2");
    build_path(&k, &schematic, &out, false, "metal-amd64.qcow2");
    let disk = out.join("metal-amd64.qcow2");
    tool("qemu-utils", "qemu-img", &["check", disk.to_str().unwrap()]);
    let info = tool(
        "qemu-utils",
        "qemu-img",
        &["info", "--output=json", disk.to_str().unwrap()],
    );
    let info: serde_json::Value = serde_json::from_str(&info).expect("qemu-img info json");
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["cluster-size"], 8192);
    assert_eq!(info["virtual-size"], DUAL_BOOT_SIZE);
    if can_boot() {
        let vars = k.dir.path().join("vars.fd");
        std::fs::copy(OVMF_VARS, &vars).expect("vars");
        let run = qemu::Boot::disk(&disk, "qcow2", Some(&vars))
            .run()
            .expect("qemu");
        check_boot(&marker(&run.console), &schematic_id(&schematic), true);
    }
}
