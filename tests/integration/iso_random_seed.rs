//! UEFI ISOs of targets whose systemd-boot creates `loader/random-seed` when it is missing
//! (>= 261, Talos 1.14; talos#14029, quirk `IsoRandomSeed`) carry it already: 32 zero bytes,
//! read-only in `efiboot.img`, and in the ISO 9660 tree like every ESP file. Older targets do
//! not. Read back from the built ISOs with mtools and isoinfo.

use std::path::Path;

use crate::common::kit::{self, tool};

/// `(first sector, sectors)` of the ISO's EFI system partition (appended partition 2): an MBR
/// entry of type 0xEF, or, behind a protective MBR, the GPT entry of type EFI System.
fn esp_extent(iso: &[u8]) -> (u64, u64) {
    let u32_at = |o: usize| u64::from(u32::from_le_bytes(iso[o..o + 4].try_into().unwrap()));
    let u64_at = |o: usize| u64::from_le_bytes(iso[o..o + 8].try_into().unwrap());
    for i in 0..4 {
        let e = 446 + 16 * i;
        if iso[e + 4] == 0xEF {
            return (u32_at(e + 8), u32_at(e + 12));
        }
    }
    assert_eq!(&iso[512..520], b"EFI PART", "no 0xEF MBR entry and no GPT");
    let entries = u64_at(512 + 72) as usize * 512;
    let count = u32_at(512 + 80) as usize;
    let size = u32_at(512 + 84) as usize;
    // C12A7328-F81F-11D2-BA4B-00A0C93EC93B in GPT byte order
    let esp = [
        0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9,
        0x3B,
    ];
    for i in 0..count {
        let e = entries + i * size;
        if iso[e..e + 16] == esp {
            let (first, last) = (u64_at(e + 32), u64_at(e + 40));
            return (first, last - first + 1);
        }
    }
    panic!("no EFI system partition in the ISO's GPT");
}

/// Writes the ISO's `efiboot.img` next to it; returns its path.
fn efiboot(iso: &Path) -> String {
    let bytes = std::fs::read(iso).expect("read ISO");
    let (start, sectors) = esp_extent(&bytes);
    let img = iso.with_extension("efiboot.img");
    std::fs::write(
        &img,
        &bytes[(start * 512) as usize..((start + sectors) * 512) as usize],
    )
    .expect("write efiboot.img");
    img.to_string_lossy().into_owned()
}

#[test]
fn uefi_isos_carry_a_read_only_random_seed_from_1_14() {
    let Some(k) = kit::imported_versions(&["v1.13.0", "v1.14.0"], &["amd64"], 0) else {
        return;
    };
    if !testsupport::tools::have("mtype", "mtools")
        || !testsupport::tools::have("isoinfo", "genisoimage")
    {
        return;
    }
    let out = k.dir.path().join("out");
    for (version, expect) in [("v1.14.0", true), ("v1.13.0", false)] {
        let dir = out.join(version);
        kit::build(&k, version, &k.schematic, "metal-amd64.iso", &dir, false);
        let iso = dir.join("metal-amd64.iso");
        let img = efiboot(&iso);
        let listing = tool("mtools", "mdir", &["-i", &img, "-/", "-b", "::"]);
        assert!(
            listing.contains("::/loader/loader.conf"),
            "{version}: not the UEFI side:\n{listing}"
        );
        if !expect {
            assert!(
                !listing.contains("random-seed"),
                "{version}: random-seed on a target before 1.14:\n{listing}"
            );
            continue;
        }
        assert!(
            listing.contains("::/loader/random-seed"),
            "{version}: random-seed missing from efiboot.img:\n{listing}"
        );
        let seed = std::process::Command::new("mtype")
            .args(["-i", &img, "::/loader/random-seed"])
            .output()
            .expect("mtype");
        assert!(seed.status.success(), "{seed:?}");
        assert_eq!(seed.stdout, [0u8; 32], "{version}: seed content");
        // mattrib prints the attribute letters before the name: R = read-only
        let attrs = tool("mtools", "mattrib", &["-i", &img, "::/loader/random-seed"]);
        let flags = attrs.split("::").next().unwrap_or_default();
        assert!(flags.contains('R'), "{version}: not read-only: {attrs:?}");
        // the other ESP files stay writable
        let conf = tool("mtools", "mattrib", &["-i", &img, "::/loader/loader.conf"]);
        assert!(
            !conf.split("::").next().unwrap_or_default().contains('R'),
            "{conf:?}"
        );
        tool("dosfstools", "fsck.vfat", &["-n", &img]);
        // the ISO 9660 tree holds it too (upstream's xorriso run takes the whole scratch tree)
        let iso_s = iso.to_str().unwrap();
        let tree = std::process::Command::new("isoinfo")
            .args(["-R", "-i", iso_s, "-x", "/loader/random-seed"])
            .output()
            .expect("isoinfo");
        assert_eq!(tree.stdout, [0u8; 32], "{version}: ISO tree seed");
    }
}
