use std::collections::BTreeMap;

use super::*;
use crate::catalog::{ExtensionEntry, Release, Signatures};
use crate::imager::error::ErrorKind;
use crate::imager::path::parse_path;
use crate::schematic::Schematic;

fn ver(s: &str) -> Version {
    Version::parse_strict(s).unwrap()
}

fn image(name: &str, arch: &str) -> ImageRecord {
    ImageRecord {
        reference: format!("ghcr.io/{name}:1"),
        digest: Digest::of(format!("{name}/{arch}").as_bytes()),
        manifest: Digest::of(format!("{name}/{arch}/m").as_bytes()),
        size: 1,
    }
}

fn ext(name: &str, arches: &[&str]) -> ExtensionEntry {
    ExtensionEntry {
        name: name.into(),
        reference: format!("ghcr.io/{name}:1"),
        digest: Digest::of(name.as_bytes()),
        author: String::new(),
        description: String::new(),
        images: arches
            .iter()
            .map(|a| (a.parse().unwrap(), image(name, a)))
            .collect(),
    }
}

fn release(v: &str) -> Release {
    Release {
        version: v.into(),
        imported_at: "2026-01-01T00:00:00Z".into(),
        source: "test".into(),
        signatures: Signatures::Skipped,
        partial: false,
        arches: BTreeMap::new(),
        extensions: vec![
            ext("siderolabs/iscsi-tools", &["amd64", "arm64"]),
            ext("siderolabs/gasket-driver", &["amd64", "arm64"]),
            ext("siderolabs/amdgpu", &["amd64"]),
            ext("siderolabs/amd-ucode", &["amd64"]),
        ],
        overlays: vec![OverlayEntry {
            name: "rpi_generic".into(),
            image: "siderolabs/sbc-raspberrypi".into(),
            reference: "ghcr.io/siderolabs/sbc-raspberrypi:v0.1.0".into(),
            digest: Digest::of(b"rpi"),
            images: BTreeMap::new(),
        }],
        catalogs: Vec::new(),
        talosctl: None,
        revision: None,
    }
}

fn schematic(yaml: &str) -> Schematic {
    Schematic::parse(yaml.as_bytes()).unwrap()
}

fn enhance(path: &str, v: &str, yaml: &str) -> Result<Profile, ImagerError> {
    enhance_from_schematic(
        parse_path(path, &ver(v))?,
        &schematic(yaml),
        &release(v),
        false,
    )
}

fn enhance_sb(path: &str, v: &str, yaml: &str) -> Result<Profile, ImagerError> {
    enhance_from_schematic(
        parse_path(path, &ver(v))?,
        &schematic(yaml),
        &release(v),
        true,
    )
}

const EXTS: &str = "customization:\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/gasket\n      - siderolabs/iscsi-tools\n      - siderolabs/gasket\n  extraKernelArgs: [nolapic]\n  meta:\n    - key: 10\n      value: foo\n";

#[test]
fn extensions_in_order_with_aliases_and_duplicates() {
    let p = enhance("initramfs-amd64.xz", "v1.11.0", EXTS).unwrap();
    let names: Vec<(&str, &str)> = p
        .system_extensions
        .iter()
        .map(|e| (e.requested.as_str(), e.name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("siderolabs/gasket", "siderolabs/gasket-driver"),
            ("siderolabs/iscsi-tools", "siderolabs/iscsi-tools"),
            ("siderolabs/gasket", "siderolabs/gasket-driver"),
        ]
    );
    assert_eq!(
        p.system_extensions[0].image,
        image("siderolabs/gasket-driver", "amd64")
    );
    assert_eq!(p.schematic_extension, Some(schematic(EXTS).id()));
    // initramfs takes neither kernel args nor META
    assert!(p.customization.extra_kernel_args.is_empty());
    assert!(p.customization.meta_contents.is_empty());
}

#[test]
fn kernel_and_cmdline_carry_no_inputs() {
    let k = enhance("kernel-amd64", "v1.11.0", EXTS).unwrap();
    assert!(k.system_extensions.is_empty() && k.schematic_extension.is_none());
    assert!(k.customization.extra_kernel_args.is_empty());
    let c = enhance("cmdline-metal-amd64", "v1.11.0", EXTS).unwrap();
    assert!(c.system_extensions.is_empty() && c.schematic_extension.is_none());
    assert_eq!(c.customization.extra_kernel_args, ["nolapic"]);
    assert_eq!(c.customization.meta_contents.len(), 1);
    // unknown extensions do not matter for kinds that carry none
    let unknown =
        "customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/nope]\n";
    assert!(enhance("cmdline-metal-amd64", "v1.11.0", unknown).is_ok());
}

#[test]
fn args_and_meta_per_kind() {
    let get = |path: &str, v: &str| {
        let p = enhance(path, v, EXTS).unwrap();
        (
            p.customization.extra_kernel_args.len(),
            p.customization.meta_contents.len(),
        )
    };
    assert_eq!(get("metal-amd64.iso", "v1.11.0"), (1, 1));
    assert_eq!(get("metal-amd64.raw.zst", "v1.11.0"), (1, 1));
    assert_eq!(get("cmdline-metal-amd64", "v1.8.0"), (1, 1));
    assert_eq!(get("metal-amd64-uki.efi", "v1.10.0"), (1, 0));
    assert_eq!(get("installer-amd64.tar", "v1.10.0"), (1, 0));
    assert_eq!(get("metal-amd64-uki.efi", "v1.9.5"), (0, 0));
    assert_eq!(get("installer-amd64.tar", "v1.9.5"), (0, 0));
    assert_eq!(get("kernel-amd64", "v1.11.0"), (0, 0));
}

#[test]
fn error_texts_and_kinds() {
    let e = enhance(
        "metal-amd64.iso",
        "v1.11.0",
        "customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/cni-plugins]\n",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"official extension "siderolabs/cni-plugins" is not available for Talos version v1.11.0"#
    );
    assert_eq!(e.kind(), ErrorKind::InvalidRequest);

    let e = enhance(
        "metal-arm64.iso",
        "v1.11.0",
        "customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/amdgpu-firmware]\n",
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingInput, "{e}");

    let e = enhance(
        "metal-amd64.iso",
        "v1.11.0",
        "customization:\n  embeddedMachineConfiguration: 'machine: {}'\n",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "embedding configuration is not supported for Talos version v1.11.0"
    );
    // ... but it is ignored for kinds that do not carry it
    assert!(
        enhance(
            "cmdline-metal-amd64",
            "v1.11.0",
            "customization:\n  embeddedMachineConfiguration: 'machine: {}'\n"
        )
        .is_ok()
    );
    let p = enhance(
        "metal-amd64.iso",
        "v1.12.0",
        "customization:\n  embeddedMachineConfiguration: 'machine: {}'\n",
    )
    .unwrap();
    assert_eq!(
        p.customization.embedded_machine_configuration,
        "machine: {}"
    );

    let e = enhance("metal-amd64-secureboot.iso", "v1.11.0", "{}").unwrap_err();
    assert_eq!(e.to_string(), "secure boot is disabled");
    assert_eq!(e.kind(), ErrorKind::InvalidRequest);
    // With keys: enrollKeys reaches the ISO options, well-known certificates the profile;
    // a bad enrollKeys value is the client's error.
    let sb = "customization:\n  secureboot:\n    enrollKeys: Force\n    includeWellKnownCertificates: true\n";
    let p = enhance_sb("metal-amd64-secureboot.iso", "v1.11.0", sb).unwrap();
    assert!(p.secureboot && p.include_well_known_certs);
    assert_eq!(
        p.output.iso_options.as_ref().map(|o| o.sd_boot_enroll_keys),
        Some(EnrollKeys::Force)
    );
    let p = enhance_sb("metal-amd64-secureboot-uki.efi", "v1.11.0", "{}").unwrap();
    assert!(p.secureboot && !p.include_well_known_certs);
    let bad = "customization:\n  secureboot:\n    enrollKeys: maybe\n";
    let e = enhance_sb("metal-amd64-secureboot.raw", "v1.11.0", bad).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidRequest);
    // Not a Secure Boot asset: the value is not looked at.
    enhance_sb("metal-amd64.raw", "v1.11.0", bad).unwrap();

    let e = enhance("metal-amd64.iso", "v1.7.6", "{}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported Talos version v1.7.6: this appliance builds Talos 1.8 and later"
    );

    let e = enhance(
        "metal-arm64.raw.xz",
        "v1.11.0",
        "overlay:\n  image: siderolabs/sbc-foo\n  name: nope\n",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"official overlay "nope" is not available for Talos version v1.11.0"#
    );

    let e = enhance("cmdline-foo-amd64", "v1.11.0", "{}").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);

    let e = enhance_from_schematic(
        parse_path("metal-amd64.iso", &ver("v1.11.0")).unwrap(),
        &schematic("{}"),
        &release("v1.12.0"),
        false,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);
}

#[test]
fn overlay_resolved_with_options() {
    let p = enhance(
        "metal-arm64.raw.xz",
        "v1.11.0",
        "overlay:\n  image: siderolabs/sbc-raspberrypi\n  name: rpi_generic\n  options:\n    configTxtAppend: dtoverlay=foo\n    n: 3\n",
    )
    .unwrap();
    let o = p.overlay.unwrap();
    assert_eq!(o.entry.name, "rpi_generic");
    assert_eq!(
        o.options,
        serde_json::json!({"configTxtAppend": "dtoverlay=foo", "n": 3})
    );
}

#[test]
fn image_defaults_match_upstream_sizes() {
    let size = |path: &str, v: &str, yaml: &str| {
        let p = enhance(path, v, yaml).unwrap();
        let o = p.output.image_options.unwrap();
        (o.disk_size / MIB, o.bootloader)
    };
    use Bootloader::*;
    assert_eq!(
        size("metal-amd64.raw.zst", "v1.15.0", "{}"),
        (4247, DualBoot)
    );
    assert_eq!(
        size("metal-amd64.raw.zst", "v1.15.0", "{}").0 * MIB,
        4_453_302_272
    );
    assert_eq!(size("metal-arm64.raw.zst", "v1.15.0", "{}"), (2246, SdBoot));
    assert_eq!(
        size("metal-amd64.raw.zst", "v1.10.0", "{}"),
        (2247, DualBoot)
    );
    assert_eq!(size("metal-amd64.raw.zst", "v1.9.0", "{}"), (1246, Grub));
    assert_eq!(size("aws-amd64.raw.xz", "v1.15.0", "{}"), (11193, DualBoot));
    assert_eq!(
        size("gcp-amd64.raw.tar.gz", "v1.15.0", "{}"),
        (11193, DualBoot)
    );
    assert_eq!(size("vmware-amd64.ova", "v1.15.0", "{}"), (11193, DualBoot));
    // schematic bootloader is kept (no secureboot)
    assert_eq!(
        size(
            "metal-amd64.raw",
            "v1.11.0",
            "customization:\n  bootloader: sd-boot\n"
        ),
        (2246, SdBoot)
    );
    assert_eq!(
        size(
            "metal-amd64.raw",
            "v1.11.0",
            "customization:\n  bootloader: grub\n"
        ),
        (2246, Grub)
    );
    let p = enhance(
        "metal-amd64.raw",
        "v1.14.0",
        "customization:\n  diskImage:\n    sectorSize: 4096\n",
    )
    .unwrap();
    assert_eq!(p.output.image_options.unwrap().disk_sector_size, 4096);
}

#[test]
fn bootloader_choice_rules() {
    let q = |v: &str| Quirks::new(v);
    use Bootloader::*;
    // secureboot forces sd-boot even over an explicit choice
    assert_eq!(
        choose_bootloader(Grub, true, Arch::Amd64, &q("v1.15.0")),
        SdBoot
    );
    assert_eq!(
        choose_bootloader(None, true, Arch::Amd64, &q("v1.9.0")),
        SdBoot
    );
    assert_eq!(
        choose_bootloader(Grub, false, Arch::Amd64, &q("v1.15.0")),
        Grub
    );
    assert_eq!(
        choose_bootloader(None, false, Arch::Arm64, &q("v1.10.0")),
        SdBoot
    );
    assert_eq!(
        choose_bootloader(None, false, Arch::Arm64, &q("v1.9.0")),
        Grub
    );
    assert_eq!(
        choose_bootloader(None, false, Arch::Amd64, &q("v1.10.0")),
        DualBoot
    );
    // secureboot-azure 1.15: 8192 + 1000 (no dual-boot bump)
    let mut p = parse_path("azure-amd64-secureboot.vhd", &ver("v1.15.0")).unwrap();
    p.apply_output_defaults();
    let o = p.output.image_options.as_ref().unwrap();
    assert_eq!((o.disk_size, o.bootloader), (9_638_510_592, SdBoot));
}

#[test]
fn dual_boot_is_refused_on_arm64_only() {
    let yaml = "customization:\n  bootloader: dual-boot\n";
    for path in ["metal-arm64.raw.xz", "metal-arm64.iso"] {
        let e = enhance(path, "v1.12.0", yaml).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidRequest, "{path}");
        assert!(
            e.to_string()
                .starts_with("dual-boot bootloader is not supported for arm64"),
            "{e}"
        );
    }
    enhance("metal-amd64.raw.xz", "v1.12.0", yaml).unwrap();
    enhance("metal-amd64.iso", "v1.12.0", yaml).unwrap();
    // arm64 without a bootloader in the schematic still builds (sd-boot).
    let p = enhance("metal-arm64.raw.xz", "v1.12.0", "customization: {}\n").unwrap();
    assert_eq!(
        p.output.image_options.map(|o| o.bootloader),
        Some(Bootloader::SdBoot)
    );
}

#[test]
fn iso_options_from_1_12() {
    let p = enhance(
        "metal-amd64.iso",
        "v1.11.0",
        "customization:\n  bootloader: grub\n",
    )
    .unwrap();
    assert!(p.output.iso_options.is_none());
    let p = enhance("metal-amd64.iso", "v1.12.0", "{}").unwrap();
    assert_eq!(
        p.output.iso_options.unwrap().bootloader,
        Bootloader::DualBoot
    );
    let p = enhance(
        "metal-amd64.iso",
        "v1.12.0",
        "customization:\n  bootloader: grub\n",
    )
    .unwrap();
    assert_eq!(p.output.iso_options.unwrap().bootloader, Bootloader::Grub);
}

#[test]
fn validation_in_order() {
    let v = ver("v1.11.0");
    let mut p = Profile::new(Arch::Amd64, "", false, v.clone(), OutputKind::Iso);
    assert_eq!(
        p.validate().unwrap_err().to_string(),
        "platform is required"
    );
    p.platform = "metal".into();
    assert!(p.validate().is_ok());
    let mut k = Profile::new(Arch::Amd64, "metal", false, v.clone(), OutputKind::Kernel);
    k.customization.extra_kernel_args.push("x".into());
    assert!(k.validate().is_err());
    let mut i = Profile::new(
        Arch::Amd64,
        "metal",
        false,
        v.clone(),
        OutputKind::Installer,
    );
    i.customization.meta_contents.push(MetaEntry {
        key: 10,
        value: "x".into(),
    });
    assert!(i.validate().is_err());
    let img = Profile::new(Arch::Amd64, "metal", false, v.clone(), OutputKind::Image);
    assert_eq!(
        img.validate().unwrap_err().to_string(),
        "image options are required"
    );
    let mut img = parse_path("metal-amd64.raw", &v).unwrap();
    assert!(img.validate().is_err()); // bootloader not chosen yet
    img.apply_output_defaults();
    assert!(img.validate().is_ok());
    let iso12 = Profile::new(Arch::Amd64, "metal", false, ver("v1.12.0"), OutputKind::Iso);
    assert!(iso12.validate().is_err());
    let unknown = Profile::new(Arch::Amd64, "nope", false, v, OutputKind::Uki);
    assert!(matches!(
        unknown.validate(),
        Err(ImagerError::UnknownPlatform(_))
    ));
}

#[test]
fn enroll_keys() {
    assert_eq!(parse_enroll_keys("IF-SAFE").unwrap(), EnrollKeys::IfSafe);
    assert_eq!(parse_enroll_keys("force").unwrap(), EnrollKeys::Force);
    let e = parse_enroll_keys("maybe").unwrap_err();
    assert!(
        e.to_string()
            .starts_with(r#"invalid secureboot enrollKeys value "maybe": "#)
    );
    assert_eq!(e.kind(), ErrorKind::InvalidRequest);
}

#[test]
fn canonical_json_is_sorted_and_stable() {
    let p = enhance("metal-amd64.raw.zst", "v1.11.0", EXTS).unwrap();
    let a = p.canonical_json().unwrap();
    let b = p.clone().canonical_json().unwrap();
    assert_eq!(a, b);
    assert!(a.starts_with(r#"{"arch":"amd64","customization":{"embeddedMachineConfiguration":"","extraKernelArgs":["nolapic"],"metaContents":[{"key":10,"value":"foo"}]},"includeWellKnownCerts":false,"output":{"imageOptions":{"bootloader":"dual-boot","diskFormat":"raw","diskFormatOptions":"","diskSectorSize":0,"diskSize":"#), "{a}");
    assert!(a.contains(r#""outFormat":".zst""#));
    assert!(a.contains(r#""version":"v1.11.0""#));
    // round-trips through serde
    let back: Profile = serde_json::from_str(&a).unwrap();
    assert_eq!(back, p);
    // a different schematic gives a different key
    let other = enhance("metal-amd64.raw.zst", "v1.11.0", "{}").unwrap();
    assert_ne!(other.canonical_json().unwrap(), a);
}
