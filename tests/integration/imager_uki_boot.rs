//! Boots a UKI we assembled (test kit kernel + base initramfs, Debian's systemd stub) through
//! OVMF in QEMU and checks that the kit's init saw the UKI's `.cmdline`.

use image_factory::imager::pe::{AssembleOptions, SymbolTable};
use image_factory::imager::uki::{
    Payload, UkiParts, UkiPurpose, assemble_uki, os_release, read_kernel_release, standard_profiles,
};
use image_factory::synth::{Marker, initramfs};
use testsupport::{qemu, tools};

use testsupport::qemu::OVMF_VARS;

#[test]
fn uki_boots_through_ovmf() {
    if !tools::qemu_ovmf() {
        return;
    }
    let Some(inputs) = crate::common::kit::kit_inputs() else {
        return;
    };
    let initrd = initramfs::base_initramfs(&inputs, "v1.11.0").expect("kit initramfs");
    let stub = std::fs::read(&inputs.systemd_stub).unwrap();
    let kernel = std::fs::File::open(&inputs.vmlinuz).unwrap();
    let uname = read_kernel_release(&kernel).unwrap();
    assert_eq!(uname.as_deref(), Some(inputs.kernel_release.as_str()));

    let cmdline = "console=ttyS0 talos.platform=metal uki.assembled=1";
    let dir = tempfile::tempdir().unwrap();
    let esp = dir.path().join("esp");
    std::fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
    let mut out = std::fs::File::create(esp.join("EFI/BOOT/BOOTX64.EFI")).unwrap();
    let parts = UkiParts {
        osrel: os_release("Talos", "v1.11.0"),
        cmdline: cmdline.into(),
        uname,
        kernel: Payload::file(&inputs.vmlinuz).unwrap(),
        initrd: Payload::bytes(&initrd),
        profiles: standard_profiles(UkiPurpose::Uki, cmdline, true),
        pcrpkey: None,
        pcrsigs: Vec::new(),
    };
    // Debian's stub keeps its COFF symbol table; drop it (upstream would refuse the stub).
    let opts = AssembleOptions {
        symbol_table: SymbolTable::Drop,
        ..AssembleOptions::default()
    };
    assemble_uki(&stub, parts, &opts, &mut out).expect("assemble UKI");
    drop(out);

    let vars = dir.path().join("vars.fd");
    std::fs::copy(OVMF_VARS, &vars).unwrap();
    let boot = qemu::Boot::uefi_esp(&esp, &vars);
    let run = boot.run().unwrap();
    let marker = Marker::find(&run.console)
        .unwrap_or_else(|| {
            panic!(
                "no marker (timed out: {}); console:\n{}",
                run.timed_out, run.console
            )
        })
        .unwrap_or_else(|e| panic!("{e}\nconsole:\n{}", run.console));
    assert!(
        marker.cmdline.contains("uki.assembled=1"),
        "{}",
        marker.cmdline
    );
    assert_eq!(marker.talos_version, "v1.11.0");
}
