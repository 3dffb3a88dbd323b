//! arm64 as upstream builds it, booted for real: the test kit's arm64 release carries Debian's
//! arm64 kernel (an EFI-stub `Image`), busybox, systemd-boot and GRUB, and what the appliance
//! builds from it boots in `qemu-system-aarch64 -M virt -cpu max` under TCG, with AAVMF for
//! the UEFI boots: direct kernel + initramfs (PXE-style), UKI, raw disk image and ISO. Each
//! boot must reach the kit's marker with the schematic's kernel argument on the command line.
//!
//! The arm64 kit takes only the kernel image from Debian's package (no modules), so the
//! init cannot mount the root or extension layers there: the marker shows the command line
//! and the layers listed in `/extensions.yaml` (the schematic's own among them), not mounted.
//! Each boot is bounded (`Boot::timeout`); the measured time is printed.

use std::io::Read;
use std::path::PathBuf;

use image_factory::synth::{self, Marker};
use testsupport::qemu::{AAVMF_VARS, Boot};
use testsupport::tools;

use crate::common::kit::{self, Kit};

/// The release version the boots use (hybrid ISO, sd-boot disk image).
const V: &str = "v1.11.0";
/// The schematic's kernel argument the marker must show.
const ARG: &str = "if.test=arm64-boot";

/// An imported amd64 + arm64 kit release and an arm64 schematic (one kernel argument).
struct Arm64Kit {
    kit: Kit,
    schematic: PathBuf,
    id: String,
    out: PathBuf,
}

/// Synthesizes and imports the kit release `version` for amd64 and arm64; `None` (with a
/// notice, or a failure under `IF_REQUIRE_TOOLS=1`) without the arm64 kit inputs.
fn arm64_kit(version: &str) -> Option<Arm64Kit> {
    if let Err(e) = synth::debian::Arm64Inputs::locate(&synth::default_kit_dir()) {
        tools::require(false, &format!("arm64 test kit inputs missing: {e}"));
        return None;
    }
    let kit = kit::imported_arches(version, &["amd64", "arm64"], 0)?;
    let schematic = kit.dir.path().join("arm64.yaml");
    std::fs::write(
        &schematic,
        format!("customization:\n  extraKernelArgs:\n    - {ARG}\n"),
    )
    .expect("write schematic");
    let id = kit::schematic_id(&schematic);
    let out = kit.dir.path().join("out");
    Some(Arm64Kit {
        kit,
        schematic,
        id,
        out,
    })
}

impl Arm64Kit {
    /// Builds `path` of [`V`] into `out`; returns the file.
    fn build(&self, path: &str) -> PathBuf {
        self.build_version(V, path)
    }

    fn build_version(&self, version: &str, path: &str) -> PathBuf {
        let sha = kit::build(&self.kit, version, &self.schematic, path, &self.out, false);
        assert_eq!(sha.len(), 64, "{path}: no sha256 reported");
        self.out.join(path)
    }

    /// A fresh copy of the AAVMF variable store.
    fn vars(&self, name: &str) -> PathBuf {
        let vars = self.out.join(format!("{name}-vars.fd"));
        std::fs::copy(AAVMF_VARS, &vars).expect("copy AAVMF vars");
        vars
    }

    /// Boots `boot` in qemu-system-aarch64 and checks the marker shows the schematic's
    /// argument (and its extension layer); `what` names the boot in failures and the timing.
    fn boot_and_check(&self, what: &str, boot: Boot) -> Marker {
        let run = boot.run_aarch64().expect("qemu-system-aarch64");
        println!(
            "arm64 {what} boot: {:.1} s (timed out: {})",
            run.elapsed.as_secs_f64(),
            run.timed_out
        );
        let m = Marker::find(&run.console)
            .unwrap_or_else(|| panic!("{what}: no marker; console:\n{}", run.console))
            .unwrap_or_else(|e| panic!("{what}: {e}\nconsole:\n{}", run.console));
        let args: Vec<&str> = m.cmdline.split_whitespace().collect();
        for want in [ARG, "talos.platform=metal", "console=ttyAMA0"] {
            assert!(args.contains(&want), "{what}: {want} not in {}", m.cmdline);
        }
        assert!(
            m.extensions
                .iter()
                .any(|e| e.name == "schematic" && e.version == self.id),
            "{what}: no schematic layer {} in {:?}",
            self.id,
            m.extensions
        );
        m
    }
}

fn u16_le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// The PE machine of an EFI executable.
fn pe_machine(b: &[u8]) -> u16 {
    assert_eq!(&b[..2], b"MZ", "not a PE file");
    let pe = u32::from_le_bytes(b[0x3c..0x40].try_into().unwrap()) as usize;
    assert_eq!(&b[pe..pe + 4], b"PE\0\0");
    u16_le(b, pe + 4)
}

/// The named entries of the newc cpio archives in `data` (concatenated, zero padding skipped).
fn cpio_file(data: &[u8], name: &str) -> Option<Vec<u8>> {
    let hex = |b: &[u8]| usize::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap();
    let mut at = 0;
    while at + 110 <= data.len() {
        if data[at] == 0 {
            at += 1;
            continue;
        }
        assert_eq!(&data[at..at + 6], b"070701", "newc magic at {at}");
        let size = hex(&data[at + 54..at + 62]);
        let namesize = hex(&data[at + 94..at + 102]);
        let n = &data[at + 110..at + 110 + namesize - 1];
        let body = (at + 110 + namesize).div_ceil(4) * 4;
        if n == name.as_bytes() {
            return Some(data[body..body + size].to_vec());
        }
        at = (body + size).div_ceil(4) * 4;
    }
    None
}

/// The kit's arm64 artefacts are real arm64 ones: the kernel an EFI-stub arm64 `Image`, the
/// UKI an arm64 PE (built on Debian's arm64 stub, given its `.sbat` section), the initramfs'
/// busybox an AArch64 ELF. Without the arm64 kit inputs these were amd64 bytes.
#[test]
fn arm64_kit_artefacts_are_arm64() {
    let Some(k) = arm64_kit(V) else { return };
    let kernel = std::fs::read(k.build("kernel-arm64")).expect("kernel");
    // arm64 boot protocol: "ARM\x64" at 0x38; an EFI stub also starts with "MZ"
    assert_eq!(&kernel[0x38..0x3c], b"ARM\x64", "not an arm64 Image");
    assert_eq!(pe_machine(&kernel), 0xAA64, "kernel EFI stub machine");

    let uki = std::fs::read(k.build("metal-arm64-uki.efi")).expect("uki");
    assert_eq!(pe_machine(&uki), 0xAA64, "UKI machine");

    let initramfs = std::fs::read(k.build("initramfs-arm64.xz")).expect("initramfs");
    assert_eq!(&initramfs[..4], [0x28, 0xB5, 0x2F, 0xFD], "zstd initramfs");
    let mut cpio = Vec::new();
    zstd::stream::read::Decoder::new(&initramfs[..])
        .expect("zstd")
        .read_to_end(&mut cpio)
        .expect("unzstd");
    let busybox = cpio_file(&cpio, "bin/busybox").expect("bin/busybox in the initramfs");
    assert_eq!(&busybox[..4], b"\x7fELF");
    assert_eq!(
        u16_le(&busybox, 18),
        0xB7,
        "busybox e_machine is not AArch64"
    );
}

/// PXE-style: the kernel and initramfs the factory serves, the `cmdline-metal-arm64` text as
/// the kernel command line, on `qemu-system-aarch64` without firmware.
#[test]
fn arm64_direct_kernel_boot_reaches_the_marker() {
    let Some(k) = arm64_kit(V) else { return };
    let kernel = k.build("kernel-arm64");
    let initramfs = k.build("initramfs-arm64.xz");
    let cmdline = std::fs::read_to_string(k.build("cmdline-metal-arm64")).expect("cmdline");
    if !tools::qemu_aarch64_aavmf() {
        return;
    }
    let boot = Boot::aarch64_direct(&kernel, &initramfs, &format!("{cmdline} console=ttyAMA0"));
    k.boot_and_check("direct kernel", boot);
}

/// The UKI as the loader of an EFI system partition, through AAVMF.
#[test]
fn arm64_uki_boots_through_aavmf() {
    let Some(k) = arm64_kit(V) else { return };
    let uki = k.build("metal-arm64-uki.efi");
    if !tools::qemu_aarch64_aavmf() {
        return;
    }
    let esp = k.out.join("esp");
    std::fs::create_dir_all(esp.join("EFI/BOOT")).expect("esp");
    std::fs::copy(&uki, esp.join("EFI/BOOT/BOOTAA64.EFI")).expect("copy uki");
    let boot = Boot::aavmf_esp(&esp, &k.vars("uki"));
    k.boot_and_check("UKI", boot);
}

/// The raw disk image (sd-boot on arm64) through AAVMF.
#[test]
fn arm64_raw_disk_boots_through_aavmf() {
    let Some(k) = arm64_kit(V) else { return };
    let disk = k.build("metal-arm64.raw");
    if !tools::qemu_aarch64_aavmf() {
        return;
    }
    let boot = Boot::aavmf_disk(&disk, &k.vars("disk"));
    k.boot_and_check("raw disk", boot);
}

/// `metal-arm64.iso` of a 1.10–1.11 target is upstream's hybrid ISO (GRUB's BIOS El Torito
/// entry, systemd-boot + UKI for UEFI at `EFI/BOOT/BOOTAA64.EFI`), no longer refused: it boots
/// through AAVMF from a CD-ROM.
#[test]
fn arm64_hybrid_iso_boots_through_aavmf() {
    let Some(k) = arm64_kit(V) else { return };
    let iso = k.build("metal-arm64.iso");
    if !tools::qemu_aarch64_aavmf() {
        return;
    }
    let boot = Boot::aavmf_cdrom(&iso, &k.vars("hybrid-iso"));
    let m = k.boot_and_check("hybrid ISO (v1.11)", boot);
    assert!(
        m.cmdline.contains("talos.halt_if_installed=1"),
        "not the ISO command line: {}",
        m.cmdline
    );
}

/// A 1.8–1.9 target's `metal-arm64.iso` is a GRUB ISO whose UEFI loader is GRUB's
/// `arm64-efi` image (from the release's GRUB tree): it boots through AAVMF from a CD-ROM, and
/// GRUB (`BOOT_IMAGE=`) starts the kernel.
#[test]
fn arm64_grub_iso_boots_through_aavmf() {
    let Some(k) = arm64_kit("v1.9.0") else {
        return;
    };
    let iso = k.build_version("v1.9.0", "metal-arm64.iso");
    if !tools::qemu_aarch64_aavmf() {
        return;
    }
    let boot = Boot::aavmf_cdrom(&iso, &k.vars("grub-iso"));
    let m = k.boot_and_check("GRUB ISO (v1.9)", boot);
    assert!(
        m.cmdline.starts_with("BOOT_IMAGE=/boot/vmlinuz "),
        "not booted by GRUB: {}",
        m.cmdline
    );
}
