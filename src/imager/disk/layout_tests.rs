use super::*;
use crate::catalog::Version;
use crate::imager::disk::gpt::ATTR_LEGACY_BIOS_BOOTABLE;
use crate::imager::path::parse_path;
use crate::imager::profile::ImageOptions;

/// A disk-image profile for `path` and `version` with output defaults applied after `tweak`.
fn profile(path: &str, version: &str, tweak: impl FnOnce(&mut ImageOptions)) -> Profile {
    let mut p = parse_path(path, &Version::parse_strict(version).unwrap()).unwrap();
    tweak(p.output.image_options.as_mut().unwrap());
    p.apply_output_defaults();
    p
}

fn plan(path: &str, version: &str, tweak: impl FnOnce(&mut ImageOptions)) -> DiskLayout {
    DiskLayout::plan(&LayoutRequest::from_profile(&profile(path, version, tweak)).unwrap()).unwrap()
}

/// (label, first LBA, last LBA) of every partition.
fn lbas(l: &DiskLayout) -> Vec<(&'static str, u64, u64)> {
    l.partitions
        .iter()
        .map(|p| (p.label, p.first_lba, p.last_lba))
        .collect()
}

const EFI_TYPE: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
const BIOS_TYPE: &str = "21686148-6449-6e6f-744e-656564454649";
const DATA_TYPE: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";

/// The spec §5.2 GUID of a label.
fn spec_guid(label: &str) -> &'static str {
    match label {
        "EFI" => "bca5174b-0118-8a6a-af0b-2c6e1585acae",
        "BIOS" => "a2a02ff5-d88d-8e6e-9c95-26b9b6c80bc3",
        "BOOT" => "24c73076-4092-85dd-9d98-686a2dbf6d81",
        "META" => "cf04f137-101e-8ec6-9627-fa3f51cdabb8",
        "STATE" => "f7f88648-df7c-8acb-b4d2-6f124659d923",
        "EPHEMERAL" => "c5e02400-0e5e-80bc-99ec-53b3e45ad6c4",
        "IMAGECACHE" => "3b5449bc-c21f-8009-8b51-18945967f8df",
        _ => unreachable!("{label}"),
    }
}

/// Types, GUIDs, attributes, contents and byte offsets agree with the labels and LBAs.
fn check_identity(l: &DiskLayout) {
    assert_eq!(
        l.gpt().disk_guid().to_string(),
        "d92d45b3-cde9-8760-be9f-a2a71fac8d11"
    );
    let ss = l.sector_size();
    for (i, p) in l.partitions.iter().enumerate() {
        assert_eq!(p.number, i + 1);
        assert_eq!(p.part_guid.to_string(), spec_guid(p.label), "{}", p.label);
        let (ty, attrs, content) = match p.label {
            "EFI" => (EFI_TYPE, 0, Content::Vfat),
            "BIOS" => (BIOS_TYPE, ATTR_LEGACY_BIOS_BOOTABLE, Content::Zeroes),
            "BOOT" => (DATA_TYPE, 0, Content::Xfs),
            "META" => (DATA_TYPE, 0, Content::Zeroes),
            "IMAGECACHE" => (DATA_TYPE, 0, Content::Ext4),
            _ => (DATA_TYPE, 0, Content::Unformatted),
        };
        assert_eq!(p.type_guid.to_string(), ty, "{}", p.label);
        assert_eq!(p.attributes, attrs, "{}", p.label);
        assert_eq!(p.content, content, "{}", p.label);
        assert_eq!(p.offset, p.first_lba * ss);
        assert_eq!(p.size, (p.last_lba - p.first_lba + 1) * ss);
    }
}

#[test]
fn worked_example_amd64_1_15_dual_boot() {
    // spec §5.3: metal amd64 target 1.15, 512 B sectors, 8 697 856 sectors total
    let l = plan("metal-amd64.raw", "v1.15.0", |_| {});
    assert_eq!(l.bootloader, Bootloader::DualBoot);
    assert_eq!(l.disk_size, 4_453_302_272);
    assert_eq!(l.disk_size / 512, 8_697_856);
    assert_eq!(
        lbas(&l),
        vec![
            ("EFI", 2048, 4_304_895),
            ("BIOS", 4_304_896, 4_306_943),
            ("BOOT", 4_306_944, 8_402_943),
            ("META", 8_402_944, 8_404_991),
        ]
    );
    let g = l.geometry();
    assert_eq!(
        (
            g.primary_entries_lba,
            g.primary_entries_lba + g.entry_lbas - 1
        ),
        (2, 33)
    );
    assert_eq!(
        (
            g.backup_entries_lba,
            g.backup_entries_lba + g.entry_lbas - 1
        ),
        (8_697_823, 8_697_854)
    );
    assert_eq!(g.backup_header_lba, 8_697_855);
    assert_eq!(g.first_usable_lba, 2048);
    check_identity(&l);
    assert!(l.embeds_bios_boot_code());
    let boot = l.partition("BOOT").unwrap();
    assert_eq!(boot.number, 3, "GRUB's prefix is (hd0,gpt3)/grub");
    assert_eq!(boot.size, 2000 * MIB);
    assert_eq!(l.partition("EFI").unwrap().size, 2101 * MIB);
}

#[test]
fn worked_example_legacy_grub_1_9() {
    // spec §5.3: legacy grub example (1.9, 2 551 808 sectors)
    let l = plan("metal-amd64.raw", "v1.9.0", |_| {});
    assert_eq!(l.bootloader, Bootloader::Grub);
    assert_eq!(l.disk_size / 512, 2_551_808);
    assert_eq!(
        lbas(&l),
        vec![
            ("EFI", 2048, 206_847),
            ("BIOS", 206_848, 208_895),
            ("BOOT", 208_896, 2_256_895),
            ("META", 2_256_896, 2_258_943),
        ]
    );
    check_identity(&l);
}

#[test]
fn sd_boot_arm64_and_secureboot() {
    // spec §1.2: metal arm64 1.15 (sd-boot) = 2246 MiB
    let arm = plan("metal-arm64.raw", "v1.15.0", |_| {});
    assert_eq!(arm.bootloader, Bootloader::SdBoot);
    assert_eq!(arm.disk_size, 2246 * MIB);
    assert_eq!(
        lbas(&arm),
        vec![("EFI", 2048, 4_304_895), ("META", 4_304_896, 4_306_943)]
    );
    check_identity(&arm);
    assert!(!arm.embeds_bios_boot_code());
    // amd64 SecureBoot is forced to sd-boot: the same layout
    let sb = plan("metal-amd64-secureboot.raw", "v1.15.0", |_| {});
    assert_eq!(sb.bootloader, Bootloader::SdBoot);
    assert_eq!(lbas(&sb), lbas(&arm));
    assert!(!sb.embeds_bios_boot_code());
}

#[test]
fn dual_boot_1_10_small_boot() {
    // spec §1.2: metal amd64 1.10 (dual-boot) = 2247 MiB; BOOT 1000 MiB, EFI 1101 MiB
    let l = plan("metal-amd64.raw", "v1.10.0", |_| {});
    assert_eq!(l.disk_size, 2247 * MIB);
    assert_eq!(
        lbas(&l),
        vec![
            ("EFI", 2048, 2_256_895),
            ("BIOS", 2_256_896, 2_258_943),
            ("BOOT", 2_258_944, 4_306_943),
            ("META", 4_306_944, 4_308_991),
        ]
    );
    check_identity(&l);
}

#[test]
fn explicit_grub_on_1_15_and_arm64() {
    let l = plan("metal-amd64.raw", "v1.15.0", |o| {
        o.bootloader = Bootloader::Grub
    });
    assert_eq!(l.disk_size, 2246 * MIB);
    assert_eq!(
        lbas(&l),
        vec![
            ("EFI", 2048, 206_847),
            ("BIOS", 206_848, 208_895),
            ("BOOT", 208_896, 4_304_895),
            ("META", 4_304_896, 4_306_943),
        ]
    );
    check_identity(&l);
    // arm64 GRUB (targets < 1.10): same layout, BIOS stays zero
    let arm = plan("metal-arm64.raw", "v1.9.0", |_| {});
    assert_eq!(arm.bootloader, Bootloader::Grub);
    assert_eq!(lbas(&arm), lbas(&plan("metal-amd64.raw", "v1.9.0", |_| {})));
    assert!(!arm.embeds_bios_boot_code());
}

#[test]
fn sector_4096_metal_4k() {
    // the metal-4k profile: the same byte layout, LBAs counted in 4 KiB sectors
    let l = plan("metal-amd64.raw", "v1.15.0", |o| o.disk_sector_size = 4096);
    assert_eq!(l.sector_size(), 4096);
    assert_eq!(l.disk_size / 4096, 1_087_232);
    assert_eq!(
        lbas(&l),
        vec![
            ("EFI", 256, 538_111),
            ("BIOS", 538_112, 538_367),
            ("BOOT", 538_368, 1_050_367),
            ("META", 1_050_368, 1_050_623),
        ]
    );
    let g = l.geometry();
    assert_eq!((g.primary_entries_lba, g.entry_lbas), (2, 4));
    assert_eq!(
        (g.backup_entries_lba, g.backup_header_lba),
        (1_087_227, 1_087_231)
    );
    check_identity(&l);
    // byte offsets are those of the 512 B layout
    let l512 = plan("metal-amd64.raw", "v1.15.0", |_| {});
    for (a, b) in l.partitions.iter().zip(&l512.partitions) {
        assert_eq!((a.offset, a.size), (b.offset, b.size), "{}", a.label);
    }
}

#[test]
fn data_partitions_before_1_8() {
    let req = LayoutRequest {
        disk_size: 1246 * MIB,
        sector_size: 0,
        bootloader: Bootloader::Grub,
        arch: Arch::Amd64,
        boot_size: 1000 * MIB,
        data_partitions: true,
        image_cache_size: None,
        skip_lbas: 0,
    };
    let l = DiskLayout::plan(&req).unwrap();
    // last usable LBA 2 551 774, aligned down to 2 549 760: EPHEMERAL takes the rest
    assert_eq!(
        lbas(&l),
        vec![
            ("EFI", 2048, 206_847),
            ("BIOS", 206_848, 208_895),
            ("BOOT", 208_896, 2_256_895),
            ("META", 2_256_896, 2_258_943),
            ("STATE", 2_258_944, 2_463_743),
            ("EPHEMERAL", 2_463_744, 2_549_759),
        ]
    );
    check_identity(&l);
}

#[test]
fn image_cache() {
    assert_eq!(image_cache_partition_size(0), 0);
    assert_eq!(image_cache_partition_size(1000), MIB);
    assert_eq!(image_cache_partition_size(10 * MIB), 12 * MIB);
    assert_eq!(image_cache_partition_size(10 * MIB + 1), 13 * MIB);
    let mut req =
        LayoutRequest::from_profile(&profile("metal-amd64.raw", "v1.15.0", |_| {})).unwrap();
    req.image_cache_size = Some(12 * MIB);
    assert_eq!(req.total_disk_size(), 4259 * MIB);
    let l = DiskLayout::plan(&req).unwrap();
    assert_eq!(l.disk_size, 4259 * MIB);
    let ic = l.partition("IMAGECACHE").unwrap();
    assert_eq!(ic.number, 5);
    assert_eq!((ic.first_lba, ic.last_lba), (8_404_992, 8_429_567));
    check_identity(&l);
    // sd-boot: IMAGECACHE is partition 3
    let mut req =
        LayoutRequest::from_profile(&profile("metal-arm64.raw", "v1.15.0", |_| {})).unwrap();
    req.image_cache_size = Some(12 * MIB);
    let l = DiskLayout::plan(&req).unwrap();
    assert_eq!(l.partition("IMAGECACHE").unwrap().number, 3);
}

#[test]
fn overlay_offset() {
    let mut req =
        LayoutRequest::from_profile(&profile("metal-arm64.raw", "v1.9.0", |_| {})).unwrap();
    req.skip_lbas = 4096; // e.g. 2 MiB reserved for u-boot after the primary header
    let l = DiskLayout::plan(&req).unwrap();
    assert_eq!(l.geometry().primary_entries_lba, 4098);
    assert_eq!(l.partitions[0].first_lba, 6144);
}

#[test]
fn errors() {
    let mut req =
        LayoutRequest::from_profile(&profile("metal-amd64.raw", "v1.15.0", |_| {})).unwrap();
    req.bootloader = Bootloader::None;
    assert!(DiskLayout::plan(&req).is_err());
    // a disk too small for the partitions
    let mut req =
        LayoutRequest::from_profile(&profile("metal-amd64.raw", "v1.15.0", |_| {})).unwrap();
    req.disk_size = 2200 * MIB;
    let err = DiskLayout::plan(&req).unwrap_err();
    assert!(err.to_string().contains("partition BOOT"), "{err}");
    // not a disk image
    let iso = parse_path(
        "metal-amd64.iso",
        &Version::parse_strict("v1.15.0").unwrap(),
    )
    .unwrap();
    assert!(LayoutRequest::from_profile(&iso).is_err());
}

#[test]
fn sparse_file_and_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.raw");
    let req = LayoutRequest::from_profile(&profile("metal-amd64.raw", "v1.15.0", |_| {})).unwrap();
    let mut f = create_sparse_disk(&path, req.total_disk_size()).unwrap();
    let l = write_layout(&mut f, &req).unwrap();
    drop(f);
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!(md.len(), 4_453_302_272);
    let mut f = File::open(&path).unwrap();
    let back = Gpt::read(&mut f, md.len(), 512).unwrap();
    assert_eq!(&back, l.gpt());
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // only the table regions are allocated (a few KiB), not 4 GiB
        assert!(md.blocks() * 512 < 1024 * 1024, "{} blocks", md.blocks());
    }
}
