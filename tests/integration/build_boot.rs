//! The real path end to end with the test kit: synthesize a signed release, import it, build
//! kernel + cmdline + initramfs (three extensions, the schematic extension, META) with
//! `image-factory build`, boot them in QEMU the way PXE delivers them, and read the marker the
//! kit's init prints; then the UKI through OVMF; builds are deterministic.

use std::path::PathBuf;
use std::process::Command;

use image_factory::synth::Marker;
use testsupport::{qemu, tools};

use testsupport::qemu::OVMF_VARS;

use crate::common::kit::bin;

/// The imported kit release and where builds are written.
struct Kit {
    kit: crate::common::kit::Kit,
    out: PathBuf,
}

/// Synthesizes and imports the kit release; `None` (with a notice) without kit inputs.
fn kit() -> Option<Kit> {
    let kit = crate::common::kit::imported(0)?;
    Some(Kit {
        out: kit.dir.path().join("out"),
        kit,
    })
}

fn sha_of(stderr: &str) -> String {
    stderr
        .split("sha256 ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_default()
        .to_string()
}

fn build(k: &Kit, path: &str) -> String {
    build_with(k, path, &[])
}

/// A fresh build even though the asset is cached (determinism checks).
fn rebuild(k: &Kit, path: &str) -> String {
    let err = build_with(k, path, &["--rebuild"]);
    assert!(err.contains("(built)"), "--rebuild did not build: {err}");
    err
}

fn build_with(k: &Kit, path: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "build",
        "--schematic",
        k.kit.schematic.to_str().unwrap(),
        "--version",
        "v1.11.0",
        "--path",
        path,
        "--data-dir",
        k.kit.data.to_str().unwrap(),
        "-o",
        k.out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    bin(&args)
}

fn marker(console: &str) -> Marker {
    Marker::find(console)
        .unwrap_or_else(|| panic!("no marker; console:\n{console}"))
        .unwrap_or_else(|e| panic!("{e}\nconsole:\n{console}"))
}

fn check(m: &Marker, id: &str, expect_meta: bool) {
    assert!(m.cmdline.contains("if.test=hello"), "{}", m.cmdline);
    assert!(m.cmdline.contains("talos.platform=metal"), "{}", m.cmdline);
    crate::common::kit::check_kit_extensions(m, "boot");
    let schematic_ext = m
        .extensions
        .iter()
        .find(|e| e.name == "schematic")
        .expect("schematic");
    assert_eq!(schematic_ext.version, id);
    assert_eq!(
        m.schematic, id,
        "schematic file not present in the merged root"
    );
    if expect_meta {
        assert_eq!(
            m.meta.get("0xa").map(String::as_str),
            Some("{\"addr\":\"1.2.3.4\"}")
        );
    } else {
        // UKIs never carry META (api spec §2.8): it is written by the installer instead.
        assert!(m.meta.is_empty(), "{:?}", m.meta);
    }
}

fn schematic_id(k: &Kit) -> String {
    let out = Command::new(crate::common::bin())
        .args(["schematic", "id", k.kit.schematic.to_str().unwrap()])
        .output()
        .expect("id");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn pxe_style_boot_shows_extensions_schematic_args_and_meta() {
    let Some(k) = kit() else { return };
    // Determinism, for every output kind this test boots: a rebuild gives the same bytes.
    for path in ["kernel-amd64", "cmdline-metal-amd64"] {
        let first = sha_of(&build(&k, path));
        let second = sha_of(&rebuild(&k, path));
        assert_eq!(first.len(), 64, "{path}");
        assert_eq!(first, second, "{path} builds differ");
    }
    let log = build(&k, "initramfs-amd64.xz");
    // Without a terminal the CLI prints each build stage as a line.
    for stage in [
        "  extracting extension 1/4 (",
        "  extracting extension 4/4 (schematic)",
        "  running depmod",
        "  squashing layers 0/5",
        "  squashing layers 5/5 (",
        "  writing the initramfs",
    ] {
        assert!(log.contains(stage), "{stage:?} not shown:\n{log}");
    }
    let first = sha_of(&log);
    let second = sha_of(&rebuild(&k, "initramfs-amd64.xz"));
    assert_eq!(first, second, "initramfs builds differ");
    assert_eq!(first.len(), 64);

    if !tools::qemu() {
        return;
    }
    let cmdline = std::fs::read_to_string(k.out.join("cmdline-metal-amd64")).expect("cmdline");
    let boot = qemu::Boot::direct(
        &k.out.join("kernel-amd64"),
        &k.out.join("initramfs-amd64.xz"),
        &format!("{cmdline} console=ttyS0"),
    );
    let run = boot.run().expect("qemu");
    check(&marker(&run.console), &schematic_id(&k), true);
}

#[test]
fn uki_boots_through_ovmf_with_extensions() {
    let Some(k) = kit() else { return };
    let log = build(&k, "metal-amd64-uki.efi");
    assert!(log.contains("  assembling the UKI"), "{log}");
    let a = sha_of(&log);
    let b = sha_of(&rebuild(&k, "metal-amd64-uki.efi"));
    assert_eq!(a, b, "UKI builds differ");
    let installer_a = sha_of(&build(&k, "installer-amd64.tar"));
    let installer_b = sha_of(&rebuild(&k, "installer-amd64.tar"));
    assert_eq!(installer_a, installer_b, "installer builds differ");

    if !tools::qemu_ovmf() {
        return;
    }
    let esp = k.out.join("esp");
    std::fs::create_dir_all(esp.join("EFI/BOOT")).expect("esp");
    std::fs::copy(
        k.out.join("metal-amd64-uki.efi"),
        esp.join("EFI/BOOT/BOOTX64.EFI"),
    )
    .expect("copy uki");
    let vars = k.out.join("vars.fd");
    std::fs::copy(OVMF_VARS, &vars).expect("vars");
    let boot = qemu::Boot::uefi_esp(&esp, &vars);
    let run = boot.run().expect("qemu");
    let m = marker(&run.console);
    // The UKI's own command line carries the schematic's args (the console comes from the
    // Talos default `console=tty0`, so the kit also prints on ttyS0 itself).
    check(&m, &schematic_id(&k), false);
}
