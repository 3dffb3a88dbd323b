use super::*;
use crate::imager::profile::MIB;

fn v() -> Version {
    Version::parse_strict("v1.11.0").unwrap()
}

fn p(path: &str) -> Profile {
    parse_path(path, &v()).unwrap()
}

fn err(path: &str) -> String {
    parse_path(path, &v()).unwrap_err().to_string()
}

/// (platform, arch, secureboot, kind, out format)
fn summary(pr: &Profile) -> (String, Arch, bool, OutputKind, OutFormat) {
    (
        pr.platform.clone(),
        pr.arch,
        pr.secureboot,
        pr.output.kind,
        pr.output.out_format,
    )
}

#[test]
fn simple_kinds() {
    use Arch::*;
    use OutFormat::Raw;
    use OutputKind::*;
    let cases: &[(&str, &str, Arch, bool, OutputKind)] = &[
        ("kernel-amd64", "metal", Amd64, false, Kernel),
        ("kernel-arm64", "metal", Arm64, false, Kernel),
        ("kernel-x86_64", "metal", Amd64, false, Kernel),
        ("cmdline-metal-amd64", "metal", Amd64, false, Cmdline),
        ("cmdline-aws-arm64-secureboot", "aws", Arm64, true, Cmdline),
        (
            "cmdline-digital-ocean-amd64",
            "digital-ocean",
            Amd64,
            false,
            Cmdline,
        ),
        (
            "cmdline-equinixMetal-i386",
            "equinixMetal",
            Amd64,
            false,
            Cmdline,
        ),
        ("initramfs-amd64.xz", "metal", Amd64, false, Initramfs),
        ("initramfs-arm64.xz", "metal", Arm64, false, Initramfs),
        ("metal-amd64.iso", "metal", Amd64, false, Iso),
        ("metal-amd64-secureboot.iso", "metal", Amd64, true, Iso),
        ("nocloud-arm64.iso", "nocloud", Arm64, false, Iso),
        ("metal-amd64-uki.efi", "metal", Amd64, false, Uki),
        ("metal-arm64-secureboot-uki.efi", "metal", Arm64, true, Uki),
        ("installer-amd64.tar", "metal", Amd64, false, Installer),
        (
            "installer-arm64-secureboot.tar",
            "metal",
            Arm64,
            true,
            Installer,
        ),
        ("aws-installer-amd64.tar", "aws", Amd64, false, Installer),
        (
            "metal-installer-arm64-secureboot.tar",
            "metal",
            Arm64,
            true,
            Installer,
        ),
    ];
    for (path, platform, arch, sb, kind) in cases {
        let pr = p(path);
        assert_eq!(
            summary(&pr),
            (platform.to_string(), *arch, *sb, *kind, Raw),
            "{path}"
        );
        assert!(pr.output.image_options.is_none(), "{path}");
        assert_eq!(pr.version, v());
    }
}

/// (path, platform, arch, secureboot, out format, disk format, size MiB, options)
type DiskCase = (
    &'static str,
    &'static str,
    Arch,
    bool,
    OutFormat,
    DiskFormat,
    u64,
    &'static str,
);

#[test]
fn disk_images() {
    use DiskFormat::*;
    use OutFormat::*;
    // (path, platform, arch, secureboot, out format, disk format, size MiB, options)
    let cases: &[DiskCase] = &[
        (
            "metal-amd64.raw",
            "metal",
            Arch::Amd64,
            false,
            OutFormat::Raw,
            DiskFormat::Raw,
            1246,
            "",
        ),
        (
            "metal-amd64.raw.zst",
            "metal",
            Arch::Amd64,
            false,
            Zst,
            DiskFormat::Raw,
            1246,
            "",
        ),
        (
            "metal-arm64.raw.xz",
            "metal",
            Arch::Arm64,
            false,
            Xz,
            DiskFormat::Raw,
            1246,
            "",
        ),
        (
            "metal-amd64.raw.gz",
            "metal",
            Arch::Amd64,
            false,
            Gz,
            DiskFormat::Raw,
            1246,
            "",
        ),
        (
            "metal-amd64.qcow2",
            "metal",
            Arch::Amd64,
            false,
            OutFormat::Raw,
            Qcow2,
            1246,
            "cluster_size=8k",
        ),
        (
            "aws-amd64.raw.xz",
            "aws",
            Arch::Amd64,
            false,
            Xz,
            DiskFormat::Raw,
            8192,
            "",
        ),
        (
            "aws-amd64.qcow2",
            "aws",
            Arch::Amd64,
            false,
            OutFormat::Raw,
            Qcow2,
            8192,
            "cluster_size=8k",
        ),
        (
            "aws-amd64-secureboot.qcow2.tar.gz",
            "aws",
            Arch::Amd64,
            true,
            TarGz,
            Qcow2,
            8192,
            "cluster_size=8k",
        ),
        (
            "gcp-amd64.raw.tar.gz",
            "gcp",
            Arch::Amd64,
            false,
            TarGz,
            DiskFormat::Raw,
            8192,
            "",
        ),
        (
            "azure-amd64.vhd.xz",
            "azure",
            Arch::Amd64,
            false,
            Xz,
            Vhd,
            8192,
            "subformat=fixed,force_size",
        ),
        // azure's VPC options override qcow2's cluster size (fails later at build time upstream)
        (
            "azure-amd64.qcow2",
            "azure",
            Arch::Amd64,
            false,
            OutFormat::Raw,
            Qcow2,
            8192,
            "subformat=fixed,force_size",
        ),
        (
            "digital-ocean-amd64.raw.gz",
            "digital-ocean",
            Arch::Amd64,
            false,
            Gz,
            DiskFormat::Raw,
            8192,
            "",
        ),
        (
            "exoscale-arm64.qcow2",
            "exoscale",
            Arch::Arm64,
            false,
            OutFormat::Raw,
            Qcow2,
            10240,
            "cluster_size=8k",
        ),
        (
            "oracle-amd64.qcow2",
            "oracle",
            Arch::Amd64,
            false,
            OutFormat::Raw,
            Qcow2,
            8192,
            "cluster_size=8k",
        ),
        (
            "alibabacloud-amd64.qcow2",
            "alibabacloud",
            Arch::Amd64,
            false,
            OutFormat::Raw,
            Qcow2,
            1246,
            "cluster_size=8k",
        ),
        (
            "vmware-amd64.ova",
            "vmware",
            Arch::Amd64,
            false,
            OutFormat::Raw,
            Ova,
            8192,
            "",
        ),
        (
            "hcloud-amd64.raw.xz",
            "hcloud",
            Arch::Amd64,
            false,
            Xz,
            DiskFormat::Raw,
            1246,
            "",
        ),
        (
            "opennebula-amd64.raw.zst",
            "opennebula",
            Arch::Amd64,
            false,
            Zst,
            DiskFormat::Raw,
            1246,
            "",
        ),
        (
            "equinixMetal-amd64.raw",
            "equinixMetal",
            Arch::Amd64,
            false,
            OutFormat::Raw,
            DiskFormat::Raw,
            8192,
            "",
        ),
        (
            "metal-x86_64.raw.zst",
            "metal",
            Arch::Amd64,
            false,
            Zst,
            DiskFormat::Raw,
            1246,
            "",
        ),
    ];
    for (path, platform, arch, sb, of, df, size, opts) in cases {
        let pr = p(path);
        assert_eq!(
            summary(&pr),
            (platform.to_string(), *arch, *sb, OutputKind::Image, *of),
            "{path}"
        );
        let o = pr.output.image_options.as_ref().unwrap();
        assert_eq!(o.disk_format, *df, "{path}");
        assert_eq!(o.disk_size, size * MIB, "{path}");
        assert_eq!(o.disk_format_options, *opts, "{path}");
        assert_eq!(o.bootloader, Bootloader::None, "{path}");
    }
}

#[test]
fn error_texts() {
    assert_eq!(
        err("metal-amd64.ssd"),
        r#"invalid profile path: "metal-amd64.ssd""#
    );
    // the compression suffix is stripped before the disk-format check
    assert_eq!(
        err("metal-amd64.ssd.tar.gz"),
        r#"invalid profile path: "metal-amd64.ssd""#
    );
    assert_eq!(
        err("metal-amd64.zst"),
        r#"invalid profile path: "metal-amd64""#
    );
    assert_eq!(err("kernel-riscv64"), r#"invalid architecture: "riscv64""#);
    assert_eq!(
        err("kernel-amd64.iso"),
        r#"invalid architecture: "amd64.iso""#
    );
    assert_eq!(
        err("metal-rpi_generic-arm64.raw.xz"),
        r#"invalid architecture: "rpi_generic-arm64""#
    );
    assert_eq!(err("metal.iso"), r#"invalid platform-arch: "metal""#);
    assert_eq!(
        err("cmdline-metal-secureboot"),
        r#"invalid platform-arch: "metal""#
    );
    assert_eq!(
        err("installer-amd64-foo.tar"),
        r#"invalid architecture: "amd64-foo""#
    );
    assert_eq!(err("metal.raw"), r#"invalid platform-arch: "metal""#);
    assert_eq!(err("digital-ocean.raw"), r#"invalid architecture: "ocean""#);
    // initramfs without .xz falls through to the disk-image rule
    assert_eq!(
        err("initramfs-amd64"),
        r#"invalid profile path: "initramfs-amd64""#
    );
    for path in ["metal-amd64.ssd", "kernel-x", "metal.iso"] {
        let e = parse_path(path, &v()).unwrap_err();
        assert!(e.is_path_error());
        assert_eq!(e.kind(), crate::imager::error::ErrorKind::InvalidRequest);
    }
}

#[test]
fn pxe_paths() {
    for path in ["metal-amd64", "metal-x86_64", "metal-i386"] {
        let pr = parse_pxe_path(path, &v()).unwrap();
        assert_eq!(pr.output.kind, OutputKind::Cmdline);
        assert_eq!(pr.arch, Arch::Amd64);
        assert_eq!(pxe_boot_assets(&pr), ["kernel-amd64", "initramfs-amd64.xz"]);
    }
    let sb = parse_pxe_path("metal-amd64-secureboot", &v()).unwrap();
    assert!(sb.secureboot);
    assert_eq!(pxe_boot_assets(&sb), ["metal-amd64-secureboot-uki.efi"]);
    let eq = parse_pxe_path("equinixMetal-arm64", &v()).unwrap();
    assert_eq!(eq.platform, "equinixMetal");
    assert_eq!(
        parse_pxe_path("metal", &v()).unwrap_err().to_string(),
        r#"invalid platform-arch: "metal""#
    );
}

#[test]
fn output_file_names() {
    let cases = [
        ("metal-amd64.iso", "metal-amd64.iso"),
        ("metal-amd64-secureboot.iso", "metal-amd64-secureboot.iso"),
        ("metal-amd64.raw.zst", "metal-amd64.raw.zst"),
        ("gcp-amd64.raw.tar.gz", "gcp-amd64.raw.tar.gz"),
        ("azure-amd64.vhd.xz", "azure-amd64.vhd.xz"),
        ("installer-amd64.tar", "installer-amd64.tar"),
        ("aws-installer-arm64.tar", "installer-arm64.tar"),
        ("kernel-arm64", "kernel-arm64"),
        ("initramfs-amd64.xz", "initramfs-metal-amd64.xz"),
        ("aws-amd64-uki.efi", "aws-amd64-uki.efi"),
        (
            "cmdline-metal-amd64-secureboot",
            "cmdline-metal-amd64-secureboot",
        ),
    ];
    for (path, name) in cases {
        assert_eq!(p(path).output_file_name(), name, "{path}");
    }
}

#[test]
fn content_types() {
    let cases = [
        ("metal-amd64-uki.efi", "application/efi"),
        ("metal-amd64.iso", "application/x-iso9660-image"),
        ("initramfs-amd64.xz", "application/x-xz"),
        ("metal-amd64.raw.xz", "application/x-xz"),
        ("metal-amd64.raw.gz", "application/gzip"),
        ("gcp-amd64.raw.tar.gz", "application/gzip"),
        ("metal-amd64.qcow2", "application/x-qemu-disk"),
        ("installer-amd64.tar", "application/octet-stream"),
        ("metal-amd64.raw.zst", "application/octet-stream"),
        ("metal-amd64.raw", "application/octet-stream"),
        ("vmware-amd64.ova", "application/octet-stream"),
        ("azure-amd64.vhd", "application/octet-stream"),
        ("kernel-amd64", "application/octet-stream"),
        ("cmdline-metal-amd64", "application/octet-stream"),
    ];
    for (path, ct) in cases {
        assert_eq!(content_type(path), ct, "{path}");
    }
}

#[test]
fn platform_defaults_table() {
    let d = platform_defaults("exoscale").unwrap();
    assert_eq!(d.disk_size, 10240 * MIB);
    assert_eq!(d.disk_format_options, "cluster_size=8k");
    assert_eq!(platform_defaults("metal").unwrap().disk_size, 1_306_525_696);
    assert!(platform_defaults("equinixMetal").is_none());
}
