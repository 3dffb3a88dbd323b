//! Unit tests of the ISO plan: generator choice, labels, EFI image size, grub.cfg, xorriso
//! arguments.

use super::grub::iso_grub_cfg;
use super::xorriso::{volume_uuid, xorriso_args};
use super::*;
use crate::catalog::Version;
use crate::imager::path::parse_path;

fn profile(path: &str, version: &str) -> Profile {
    let v = Version::parse_tolerant(version).unwrap();
    let mut p = parse_path(path, &v).unwrap();
    p.apply_output_defaults();
    p
}

#[test]
fn generator_per_target() {
    assert_eq!(
        IsoKind::of(&profile("metal-amd64.iso", "v1.9.5")).unwrap(),
        IsoKind::Grub
    );
    assert_eq!(
        IsoKind::of(&profile("metal-amd64.iso", "v1.10.0")).unwrap(),
        IsoKind::Hybrid
    );
    assert_eq!(
        IsoKind::of(&profile("metal-amd64.iso", "v1.11.0")).unwrap(),
        IsoKind::Hybrid
    );
    assert_eq!(
        IsoKind::of(&profile("metal-amd64.iso", "v1.12.0")).unwrap(),
        IsoKind::Hybrid
    );
    assert_eq!(
        IsoKind::of(&profile("metal-arm64.iso", "v1.12.0")).unwrap(),
        IsoKind::UefiOnly
    );
    assert_eq!(
        IsoKind::of(&profile("metal-amd64-secureboot.iso", "v1.11.0")).unwrap(),
        IsoKind::UefiOnly
    );
}

#[test]
fn labels() {
    let l = iso_labels(&profile("metal-amd64.iso", "v1.10.0")).unwrap();
    assert_eq!(l.volume_set, "Talos-v1.10.0");
    assert_eq!(l.volume_id, "TALOS_V1_10_0");
    let l = iso_labels(&profile("metal-amd64.iso", "v1.11.0-alpha.1")).unwrap();
    assert_eq!(l.volume_id, "TALOS_V1_11_0_ALPHA_1");
}

#[test]
fn efiboot_is_fat32_sized() {
    assert_eq!(efiboot_size(&[1, 1]), 34 << 20);
    assert_eq!(efiboot_size(&[200_000, 100 << 20]), 111 << 20);
    // 111 MiB = 227 328 sectors: 2 sectors per cluster keep >= 67 573 clusters, 4 do not
    assert_eq!(efiboot_cluster(111 << 20), 1024);
    assert_eq!(efiboot_cluster(34 << 20), 512);
    assert_eq!(efiboot_cluster(1 << 30), 4096);
}

#[test]
fn grub_cfg_format() {
    let cfg = iso_grub_cfg("talos.platform=metal a=$x", true);
    assert!(cfg.starts_with("set default=0\nset timeout=3\n\ninsmod all_video\n\n"));
    assert!(cfg.contains(
        "menuentry \"Talos ISO\" {\n\tset gfxmode=auto\n\tset gfxpayload=text\n\t\
         linux /boot/vmlinuz talos.platform=metal a=\\$x\n\tinitrd /boot/initramfs.xz\n}\n\n"
    ));
    assert!(cfg.contains("a=\\$x talos.experimental.wipe=system\n"));
    assert_eq!(iso_grub_cfg("x", false).matches("menuentry").count(), 1);
}

#[test]
fn uuid_is_the_epoch() {
    assert_eq!(volume_uuid(), "2019060121345200");
    assert_eq!(grub_iso_uuid(), "2019-06-01-21-34-52-00");
}

#[test]
fn hybrid_arguments() {
    let plan = IsoPlan {
        labels: iso_labels(&profile("metal-amd64.iso", "v1.11.0")),
        rock_ridge: true,
        bios: Some(super::grub::BiosBoot {
            eltorito: "/s/eltorito.img".into(),
            boot_hybrid: "/g/boot_hybrid.img".into(),
        }),
        efi_image: "/s/efiboot.img".into(),
        grafts: vec![("boot/vmlinuz".into(), "/b/a=b".into())],
        out: "/s/out.iso".into(),
    };
    let args: Vec<String> = xorriso_args(&plan)
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let line = args.join(" ");
    assert!(line.starts_with(
        "-pacifier interval=0.1 -as mkisofs -iso-level 3 -r \
             --modification-date=2019060121345200 -b "
    ));
    assert!(line.contains(
        "-b boot/grub/i386-pc/eltorito.img -no-emul-boot -boot-load-size 4 -boot-info-table \
         --grub2-boot-info --grub2-mbr /g/boot_hybrid.img -eltorito-alt-boot \
         -e --interval:appended_partition_2:all:: -no-emul-boot \
         -append_partition 2 0xef /s/efiboot.img -appended_part_as_gpt"
    ));
    assert!(line.contains("-graft-points boot/vmlinuz=/b/a\\=b"));
    assert!(line.ends_with(
        "-- -volume_date all_file_dates =1559424892 -volume_date uuid 2019060121345200 \
         -volid TALOS_V1_11_0 -volset_id Talos-v1.11.0"
    ));
}
