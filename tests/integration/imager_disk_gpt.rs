//! Disk-image partition tables (imager spec §5.2, §5.3) checked with an independent tool:
//! util-linux `sfdisk` (`--verify`, `-d`, `--json`) for 512-byte sectors and `fdisk -b 4096`
//! (verify command `v`, script dump `O`) for 4 KiB sectors, since sfdisk 2.38 (Debian 12) has
//! no `--sector-size`. Both come from the Debian package `fdisk`; a missing tool fails the test.
//!
//! The expected numbers are the spec's worked examples, written out here rather than taken
//! from the layout code, so the writer is compared with the spec and with util-linux.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use image_factory::catalog::Version;
use image_factory::imager::disk::{DiskLayout, LayoutRequest, create_sparse_disk, write_layout};
use image_factory::imager::disk::{write_meta, write_profile_meta};
use image_factory::imager::meta::{Adv, META_PARTITION_SIZE};
use image_factory::imager::path::parse_path;
use image_factory::imager::profile::{ImageOptions, MetaEntry, Profile};
use serde_json::Value;

const MIB: u64 = 1024 * 1024;

const EFI: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const BIOS: &str = "21686148-6449-6E6F-744E-656564454649";
const DATA: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
const DISK_GUID: &str = "D92D45B3-CDE9-8760-BE9F-A2A71FAC8D11";

/// The partition GUIDs of spec §5.2.
fn part_guid(label: &str) -> &'static str {
    match label {
        "EFI" => "BCA5174B-0118-8A6A-AF0B-2C6E1585ACAE",
        "BIOS" => "A2A02FF5-D88D-8E6E-9C95-26B9B6C80BC3",
        "BOOT" => "24C73076-4092-85DD-9D98-686A2DBF6D81",
        "META" => "CF04F137-101E-8EC6-9627-FA3F51CDABB8",
        other => panic!("no spec GUID for {other}"),
    }
}

/// One expected partition: name, type, first LBA, last LBA.
type Expected = (&'static str, &'static str, u64, u64);

/// One partition as util-linux reports it.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    start: u64,
    size: u64,
    ty: String,
    uuid: String,
    name: String,
    attrs: String,
}

fn expected_rows(parts: &[Expected]) -> Vec<Row> {
    parts
        .iter()
        .map(|(name, ty, first, last)| Row {
            start: *first,
            size: last - first + 1,
            ty: ty.to_string(),
            uuid: part_guid(name).to_string(),
            name: name.to_string(),
            attrs: if *name == "BIOS" {
                "LegacyBIOSBootable".into()
            } else {
                String::new()
            },
        })
        .collect()
}

/// Runs a util-linux tool; a missing tool fails with the package to install.
fn run(cmd: &mut Command, stdin: Option<&str>) -> Output {
    let name = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{name} could not be started ({e}): install the Debian package `fdisk` \
                 (util-linux's sfdisk/fdisk), e.g. `apt-get install fdisk`"
            )
        });
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A disk-image profile with defaults applied after `tweak`.
fn profile(path: &str, version: &str, tweak: impl FnOnce(&mut ImageOptions)) -> Profile {
    let mut p = parse_path(path, &Version::parse_strict(version).unwrap()).unwrap();
    tweak(p.output.image_options.as_mut().unwrap());
    p.apply_output_defaults();
    p
}

/// Writes a sparse disk with the GPT of `req` (and META of `profile`) into `dir`.
fn build(dir: &Path, name: &str, req: &LayoutRequest, profile: Option<&Profile>) -> PathBuf {
    let path = dir.join(name);
    let mut f = create_sparse_disk(&path, req.total_disk_size()).unwrap();
    let layout = write_layout(&mut f, req).unwrap();
    if let Some(p) = profile {
        write_profile_meta(&mut f, &layout, p).unwrap();
    }
    f.sync_all().unwrap();
    path
}

/// Parses one `sfdisk -d` partition line (`<dev> : start=…, size=…, type=…, …`).
fn parse_dump_line(line: &str) -> Row {
    let (_, fields) = line.split_once(" : ").unwrap();
    let mut row = Row {
        start: 0,
        size: 0,
        ty: String::new(),
        uuid: String::new(),
        name: String::new(),
        attrs: String::new(),
    };
    for field in fields.split(", ") {
        let (k, v) = field.split_once('=').unwrap();
        let v = v.trim().trim_matches('"');
        match k.trim() {
            "start" => row.start = v.parse().unwrap(),
            "size" => row.size = v.parse().unwrap(),
            "type" => row.ty = v.to_string(),
            "uuid" => row.uuid = v.to_string(),
            "name" => row.name = v.to_string(),
            "attrs" => row.attrs = v.to_string(),
            other => panic!("unexpected sfdisk field {other} in {line}"),
        }
    }
    row
}

/// Header lines (`key: value`) and partition rows of an sfdisk script.
fn parse_dump(dump: &str) -> (Vec<(String, String)>, Vec<Row>) {
    let mut header = Vec::new();
    let mut rows = Vec::new();
    for line in dump.lines().filter(|l| !l.trim().is_empty()) {
        if line.contains(" : ") {
            rows.push(parse_dump_line(line));
        } else if let Some((k, v)) = line.split_once(": ")
            && k != "device"
        {
            header.push((k.to_string(), v.trim().to_string()));
        }
    }
    (header, rows)
}

fn expected_header(first: u64, last: u64, sector: u64) -> Vec<(String, String)> {
    [
        ("label", "gpt".to_string()),
        ("label-id", DISK_GUID.to_string()),
        ("unit", "sectors".to_string()),
        ("first-lba", first.to_string()),
        ("last-lba", last.to_string()),
        ("sector-size", sector.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// `sfdisk --verify`, `-d` and `--json` on a 512-byte-sector image.
fn check_with_sfdisk(img: &Path, first_usable: u64, last_usable: u64, parts: &[Expected]) {
    let verify = run(Command::new("sfdisk").arg("--verify").arg(img), None);
    let out = text(&verify.stdout) + &text(&verify.stderr);
    assert!(verify.status.success(), "sfdisk --verify failed:\n{out}");
    assert!(
        out.contains("No errors detected."),
        "sfdisk --verify:\n{out}"
    );
    assert!(
        !out.to_lowercase().contains("warning") && !out.contains("not aligned"),
        "sfdisk --verify:\n{out}"
    );

    let dump = run(Command::new("sfdisk").arg("-d").arg(img), None);
    assert!(dump.status.success(), "sfdisk -d: {}", text(&dump.stderr));
    let (header, rows) = parse_dump(&text(&dump.stdout));
    assert_eq!(header, expected_header(first_usable, last_usable, 512));
    assert_eq!(rows, expected_rows(parts), "{}", text(&dump.stdout));

    let json = run(Command::new("sfdisk").arg("--json").arg(img), None);
    assert!(
        json.status.success(),
        "sfdisk --json: {}",
        text(&json.stderr)
    );
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    let t = &v["partitiontable"];
    assert_eq!(t["label"], "gpt");
    assert_eq!(t["id"], DISK_GUID);
    assert_eq!(t["unit"], "sectors");
    assert_eq!(t["firstlba"], first_usable);
    assert_eq!(t["lastlba"], last_usable);
    assert_eq!(t["sectorsize"], 512);
    let got: Vec<Row> = t["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Row {
            start: p["start"].as_u64().unwrap(),
            size: p["size"].as_u64().unwrap(),
            ty: p["type"].as_str().unwrap().to_string(),
            uuid: p["uuid"].as_str().unwrap().to_string(),
            name: p["name"].as_str().unwrap().to_string(),
            attrs: p["attrs"].as_str().unwrap_or("").to_string(),
        })
        .collect();
    assert_eq!(got, expected_rows(parts));
}

/// `fdisk -b <sector>`: the verify command and the sfdisk-format script dump (`O`).
fn check_with_fdisk(
    img: &Path,
    sector: u64,
    first_usable: u64,
    last_usable: u64,
    parts: &[Expected],
) {
    let script = img.with_extension("sfdisk");
    let input = format!("v\nO\n{}\nq\n", script.display());
    let out = run(
        Command::new("fdisk")
            .arg("-b")
            .arg(sector.to_string())
            .arg(img),
        Some(&input),
    );
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(out.status.success(), "fdisk failed:\n{all}");
    assert!(all.contains("No errors detected."), "fdisk verify:\n{all}");
    assert!(
        !all.contains("does not start on physical sector boundary") && !all.contains("corrupt"),
        "fdisk:\n{all}"
    );
    let dump = std::fs::read_to_string(&script)
        .unwrap_or_else(|e| panic!("fdisk wrote no script ({e}):\n{all}"));
    let (header, rows) = parse_dump(&dump);
    assert_eq!(header, expected_header(first_usable, last_usable, sector));
    assert_eq!(rows, expected_rows(parts), "{dump}");
}

/// The spec's worked example: metal amd64 1.15 (dual-boot), 8 697 856 sectors of 512 B.
const DUAL_BOOT_1_15: &[Expected] = &[
    ("EFI", EFI, 2048, 4_304_895),
    ("BIOS", BIOS, 4_304_896, 4_306_943),
    ("BOOT", DATA, 4_306_944, 8_402_943),
    ("META", DATA, 8_402_944, 8_404_991),
];

#[test]
fn sfdisk_reads_the_worked_example_dual_boot_1_15() {
    let dir = tempfile::tempdir().unwrap();
    let p = profile("metal-amd64.raw", "v1.15.0", |_| {});
    let req = LayoutRequest::from_profile(&p).unwrap();
    assert_eq!(req.total_disk_size(), 8_697_856 * 512);
    let img = build(dir.path(), "dual.raw", &req, Some(&p));
    // backup entries 8 697 823–8 697 854, backup header 8 697 855: last usable 8 697 822
    check_with_sfdisk(&img, 2048, 8_697_822, DUAL_BOOT_1_15);
}

#[test]
fn sfdisk_reads_the_legacy_grub_example_1_9() {
    let dir = tempfile::tempdir().unwrap();
    let p = profile("metal-amd64.raw", "v1.9.0", |_| {});
    let req = LayoutRequest::from_profile(&p).unwrap();
    assert_eq!(req.total_disk_size(), 2_551_808 * 512);
    let img = build(dir.path(), "grub.raw", &req, Some(&p));
    let parts: &[Expected] = &[
        ("EFI", EFI, 2048, 206_847),
        ("BIOS", BIOS, 206_848, 208_895),
        ("BOOT", DATA, 208_896, 2_256_895),
        ("META", DATA, 2_256_896, 2_258_943),
    ];
    check_with_sfdisk(&img, 2048, 2_551_808 - 34, parts);
}

#[test]
fn fdisk_reads_the_metal_4k_example() {
    // the worked example's bytes in 4 KiB sectors: 1 087 232 sectors, entries 2–5,
    // backup entries 1 087 227–1 087 230, backup header 1 087 231
    let dir = tempfile::tempdir().unwrap();
    let p = profile("metal-amd64.raw", "v1.15.0", |o| o.disk_sector_size = 4096);
    let req = LayoutRequest::from_profile(&p).unwrap();
    let img = build(dir.path(), "dual-4k.raw", &req, Some(&p));
    let parts: &[Expected] = &[
        ("EFI", EFI, 256, 538_111),
        ("BIOS", BIOS, 538_112, 538_367),
        ("BOOT", DATA, 538_368, 1_050_367),
        ("META", DATA, 1_050_368, 1_050_623),
    ];
    check_with_fdisk(&img, 4096, 256, 1_087_226, parts);
    // read with 512-byte sectors there is no GPT at LBA 1, only the protective MBR, whose
    // length counts 4 KiB sectors (last LBA 1 087 231)
    let dump = run(Command::new("sfdisk").arg("-d").arg(&img), None);
    let (out, err) = (text(&dump.stdout), text(&dump.stderr));
    assert!(out.starts_with("label: dos\n"), "{out}");
    assert!(
        out.contains("start=           1, size=     8697855, type=ee"),
        "{out}"
    );
    assert!(
        err.contains("GPT PMBR size mismatch (1087231 != 8697855)"),
        "{err}"
    );
}

#[test]
fn two_gib_sd_boot_images_with_meta_at_both_sector_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let meta = vec![
        MetaEntry {
            key: 0x0a,
            value: "addresses: [{address: 192.0.2.10/24}]".into(),
        },
        MetaEntry {
            key: 0x0c,
            value: "rack-7".into(),
        },
    ];
    for sector in [512u64, 4096] {
        // metal arm64 1.10: sd-boot, EFI 1101 MiB + META, on a 2 GiB disk
        let mut p = profile("metal-arm64.raw", "v1.10.0", |o| {
            o.disk_sector_size = sector
        });
        p.customization.meta_contents = meta.clone();
        let mut req = LayoutRequest::from_profile(&p).unwrap();
        req.disk_size = 2048 * MIB;
        let img = build(dir.path(), &format!("sdboot-{sector}.raw"), &req, Some(&p));
        let spm = MIB / sector; // sectors per MiB
        let sectors = 2048 * spm;
        let entry_lbas = 16384 / sector;
        let parts: &[Expected] = &[
            ("EFI", EFI, spm, spm + 1101 * spm - 1),
            ("META", DATA, 1102 * spm, 1103 * spm - 1),
        ];
        let last_usable = sectors - 1 - entry_lbas - 1;
        if sector == 512 {
            check_with_sfdisk(&img, spm, last_usable, parts);
        }
        check_with_fdisk(&img, sector, spm, last_usable, parts);

        // META holds the schematic's values at the partition offset, both ADV copies
        let off = 1102 * MIB;
        let region = read_region(&img, off, META_PARTITION_SIZE);
        let adv = Adv::read(&region);
        assert_eq!(adv.get(0x0a), Some(meta[0].value.as_bytes()));
        assert_eq!(adv.get(0x0c), Some(&b"rack-7"[..]));
        assert_eq!(
            adv.get(0x11),
            None,
            "arm64 sd-boot images carry no dual-boot key"
        );
        assert_eq!(&region[..4], &[0x5A, 0x4B, 0x3C, 0x2D]);
        assert_eq!(region[..256 * 1024], region[256 * 1024..512 * 1024]);
        // only the GPT regions and META were written: everything else is still a hole
        let backup = (sectors - 1 - entry_lbas) * sector;
        assert_only_written(
            &img,
            &[
                (0, 2 * sector + 16384),
                (off, off + META_PARTITION_SIZE as u64),
                (backup, sectors * sector),
            ],
        );
    }
}

#[test]
fn dual_boot_marker_and_empty_meta() {
    let dir = tempfile::tempdir().unwrap();
    let p = profile("metal-amd64.raw", "v1.15.0", |_| {});
    let req = LayoutRequest::from_profile(&p).unwrap();
    let img = build(dir.path(), "marker.raw", &req, Some(&p));
    let off = 8_402_944 * 512;
    let adv = Adv::read(&read_region(&img, off, META_PARTITION_SIZE));
    assert_eq!(adv.get(0x11), Some(&b"dual-boot"[..]));

    // no values: META stays zero, nothing is written
    let layout = DiskLayout::plan(&req).unwrap();
    let path = dir.path().join("empty.raw");
    let mut f = create_sparse_disk(&path, req.total_disk_size()).unwrap();
    layout.write_gpt(&mut f).unwrap();
    assert!(!write_meta(&mut f, &layout, &[]).unwrap());
    drop(f);
    let last = 8_697_856 * 512;
    assert_only_written(&path, &[(0, 2 * 512 + 16384), (last - 33 * 512, last)]);
    check_with_sfdisk(&path, 2048, 8_697_822, DUAL_BOOT_1_15);
}

/// `len` bytes of a file at `off`.
fn read_region(img: &Path, off: u64, len: usize) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(img).unwrap();
    f.seek(SeekFrom::Start(off)).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// The file's data extents (`SEEK_DATA`/`SEEK_HOLE`), as `[start, end)` byte ranges.
fn data_extents(img: &Path) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(img).unwrap();
    let len = f.metadata().unwrap().len() as i64;
    let fd = f.as_raw_fd();
    let mut extents = Vec::new();
    let mut at = 0i64;
    while at < len {
        // SAFETY: lseek on a file descriptor owned by `f`, which outlives the loop
        let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: no data after `at`
        }
        // SAFETY: as above
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        assert!(hole > data, "SEEK_HOLE after {data}");
        extents.push((data as u64, hole as u64));
        at = hole;
    }
    extents
}

/// Every data extent of the file lies within the `written` ranges (rounded out to 4 KiB
/// filesystem blocks): nothing but the table regions and META was written.
fn assert_only_written(img: &Path, written: &[(u64, u64)]) {
    const BLOCK: u64 = 4096;
    let extents = data_extents(img);
    assert!(!extents.is_empty(), "no data in {}", img.display());
    for (start, end) in &extents {
        let inside = written
            .iter()
            .any(|(ws, we)| *start >= ws / BLOCK * BLOCK && *end <= we.div_ceil(BLOCK) * BLOCK);
        assert!(
            inside,
            "data extent [{start}, {end}) outside the written regions {written:?}; all: {extents:?}"
        );
    }
}
