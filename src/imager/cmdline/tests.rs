use super::*;
use crate::catalog::Version;
use crate::imager::path::{parse_path, parse_pxe_path};

const DEL: AppendAllOptions<'static> = AppendAllOptions {
    delete_negated: true,
    overwrite: &[],
};
const OVR: AppendAllOptions<'static> = AppendAllOptions {
    delete_negated: false,
    overwrite: &["console"],
};
const BOTH: AppendAllOptions<'static> = AppendAllOptions {
    delete_negated: true,
    overwrite: &["console"],
};

fn ver(s: &str) -> Version {
    Version::parse_strict(s).unwrap()
}

/// The command line of an asset path for a version, with extra args and META.
fn line(path: &str, v: &str, extra: &[&str], meta: &[(u8, &str)]) -> String {
    let mut p = parse_path(path, &ver(v)).unwrap();
    p.customization.extra_kernel_args = extra.iter().map(|s| s.to_string()).collect();
    p.customization.meta_contents = meta
        .iter()
        .map(|(k, v)| MetaEntry {
            key: *k,
            value: v.to_string(),
        })
        .collect();
    kernel_cmdline(&p, &[]).unwrap()
}

fn vanilla(path: &str, v: &str) -> String {
    line(path, v, &[], &[])
}

// ---- go-procfs data model (upstream procfs/cmdline_test.go vectors) ----

#[test]
fn procfs_parse_and_render() {
    let c = Cmdline::parse("boot=xyz root=/dev/abc nogui console=tty0 console=ttyS0,9600");
    assert_eq!(c.get("console").unwrap(), ["tty0", "ttyS0,9600"]);
    assert_eq!(c.get("nogui").unwrap(), [""]);
    assert_eq!(
        c.to_string(),
        "boot=xyz root=/dev/abc nogui console=tty0 console=ttyS0,9600"
    );
    let c = Cmdline::parse(" root=/dev/abc=1  nogui  \n");
    assert_eq!(c.get("root").unwrap(), ["/dev/abc=1"]);
    assert_eq!(c.to_string(), "root=/dev/abc=1 nogui");
    assert_eq!(Cmdline::parse("").to_string(), "");
    // repeated keys are grouped at the first position
    assert_eq!(Cmdline::parse("a=1 b c=3 a=2").to_string(), "a=1 a=2 b c=3");
}

#[test]
fn procfs_set_and_append() {
    let mut c = Cmdline::parse("root=/dev/sda root=/dev/sdb");
    c.set("root", vec!["/dev/sdc".into()]);
    assert_eq!(c.to_string(), "root=/dev/sdc");
    let mut c = Cmdline::parse("boot=xyz root=/dev/abc nogui console=tty0 console=ttyS0,9600");
    c.set("console", vec![String::new()]);
    assert_eq!(c.to_string(), "boot=xyz root=/dev/abc nogui console");
    let mut c = Cmdline::parse("");
    c.set("initrd", vec!["/ROOT-A/initramfs.xz".into()]);
    assert_eq!(c.to_string(), "initrd=/ROOT-A/initramfs.xz");
    let mut c = Cmdline::parse("root=/dev/sda root=/dev/sdb");
    c.append("root", "/dev/sdc");
    assert_eq!(c.get("root").unwrap(), ["/dev/sda", "/dev/sdb", "/dev/sdc"]);
    let mut c = Cmdline::parse("");
    c.set_all(&["root=/dev/sda", "root=/dev/sdb"]);
    assert_eq!(c.to_string(), "root=/dev/sda root=/dev/sdb");
    let mut c = Cmdline::parse("root=/dev/sdb root=/dev/sdc aye=sir");
    c.set_all(&["root=/dev/mmcblk0"]);
    assert_eq!(c.to_string(), "root=/dev/mmcblk0 aye=sir");
}

#[test]
fn procfs_delete() {
    let del = |init: &str, key: &str, vals: &[&str]| {
        let mut c = Cmdline::parse(init);
        let vals: Vec<String> = vals.iter().map(|s| s.to_string()).collect();
        c.delete(key, &vals);
        c.to_string()
    };
    assert_eq!(del("console=tty0", "console", &[""]), "console=tty0");
    assert_eq!(del("console=tty0", "console", &["tty"]), "console=tty0");
    assert_eq!(del("console=tty0", "console", &["tty0"]), "");
    assert_eq!(
        del(
            "console=tty0 console=ttyS0,9600 root=/dev/sda panic=0 console=ttyS0,115000",
            "console",
            &["ttyS0,9600"]
        ),
        "console=tty0 console=ttyS0,115000 root=/dev/sda panic=0"
    );
    assert_eq!(
        del(
            "console=tty0 console=ttyS0,9600 root=/dev/sda panic=0 console=ttyS0,115000",
            "consoles",
            &["ttyS0,9600"]
        ),
        "console=tty0 console=ttyS0,9600 console=ttyS0,115000 root=/dev/sda panic=0"
    );
    assert_eq!(
        del(
            "console=tty0 console=ttyS0,9600 root=/dev/sda panic=0 console=ttyS0,115000",
            "console",
            &["ttyS0,9600", "tty0"]
        ),
        "console=ttyS0,115000 root=/dev/sda panic=0"
    );
    let mut c = Cmdline::parse(
        "console=tty0 console=ttyS0,9600 root=/dev/sda panic=0 console=ttyS0,115000",
    );
    c.delete_all("console");
    assert_eq!(c.to_string(), "root=/dev/sda panic=0");
}

#[test]
fn procfs_append_all() {
    let cases: &[(&str, &[&str], AppendAllOptions<'_>, &str)] = &[
        (
            "ip=dhcp console=x root=/dev/sdc",
            &["root=/dev/sda", "root=/dev/sdb"],
            AppendAllOptions::default(),
            "ip=dhcp console=x root=/dev/sdc root=/dev/sda root=/dev/sdb",
        ),
        (
            "root=/dev/sdb",
            &["this=that=those"],
            AppendAllOptions::default(),
            "root=/dev/sdb this=that=those",
        ),
        (
            "console=tty0 console=ttyS0 root=/dev/sdb",
            &["console=tty0", "console=ttyS1,115200", "nogui"],
            AppendAllOptions::default(),
            "console=tty0 console=ttyS0 console=tty0 console=ttyS1,115200 root=/dev/sdb nogui",
        ),
        (
            "console=tty0 console=ttyS0 root=/dev/sdb",
            &["console=tty0", "console=ttyS1,115200", "nogui"],
            OVR,
            "console=tty0 console=ttyS1,115200 root=/dev/sdb nogui",
        ),
        (
            "console=tty0 console=ttyS0 root=/dev/sdb",
            &["-console", "nogui"],
            BOTH,
            "root=/dev/sdb nogui",
        ),
        (
            "console=tty0 console=ttyS0,9600 root=/dev/sdb",
            &["-console", "nogui"],
            DEL,
            "root=/dev/sdb nogui",
        ),
        (
            "console=tty0 console=ttyS0,9600 root=/dev/sdb",
            &["-console=ttyS0,9600", "nogui"],
            DEL,
            "console=tty0 root=/dev/sdb nogui",
        ),
        (
            "console=tty0 console=ttyS0 root=/dev/sdb",
            &["-console=tty0", "nogui"],
            BOTH,
            "console=ttyS0 root=/dev/sdb nogui",
        ),
        (
            "console=tty0 console=ttyS0 root=/dev/sdb",
            &["-console", "nogui", "console=ttyAMA0"],
            BOTH,
            "root=/dev/sdb nogui console=ttyAMA0",
        ),
        (
            "console=tty0 console=ttyS0 root=/dev/sdb",
            &["-console=tty0", "nogui", "console=ttyAMA0"],
            DEL,
            "console=ttyS0 console=ttyAMA0 root=/dev/sdb nogui",
        ),
        (
            "console=tty0 console=ttyS0 root=/dev/sdb",
            &["-console=tty0", "nogui", "console=ttyAMA0"],
            BOTH,
            "console=ttyAMA0 root=/dev/sdb nogui",
        ),
        // a bare `-` is a legal argument, not a negation
        ("a=1", &["-"], DEL, "a=1 -"),
        // without delete-negated, `-x` is just another key
        ("x=1", &["-x"], AppendAllOptions::default(), "x=1 -x"),
    ];
    for (init, args, opts, want) in cases {
        let mut c = Cmdline::parse(init);
        c.append_all(args, *opts);
        assert_eq!(c.to_string(), *want, "{init} + {args:?}");
    }
}

// ---- imager spec §1.5.4 vectors ----

#[test]
fn defaults_per_version() {
    assert_eq!(
        vanilla("cmdline-metal-amd64", "v1.7.0"),
        "talos.platform=metal console=ttyS0 console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512"
    );
    assert_eq!(
        vanilla("cmdline-metal-amd64", "v1.8.0"),
        "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512"
    );
    assert_eq!(
        vanilla("cmdline-metal-amd64", "v1.10.1"),
        "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512 selinux=1"
    );
    assert_eq!(
        vanilla("cmdline-metal-arm64", "v1.11.0"),
        "talos.platform=metal console=ttyAMA0 console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1"
    );
    assert_eq!(
        vanilla("cmdline-aws-amd64", "v1.13.0"),
        "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"
    );
    assert_eq!(
        vanilla("cmdline-metal-amd64", "v1.14.0"),
        "talos.platform=metal console=tty0 slab_nomerge pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"
    );
    assert_eq!(
        vanilla("cmdline-aws-amd64", "v1.14.0"),
        "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 nvme_core.io_timeout=4294967295 slab_nomerge pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"
    );
    // 1.12: module.sig_enforce=1 appended after selinux=1
    assert_eq!(
        vanilla("cmdline-metal-amd64", "v1.12.0"),
        "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 module.sig_enforce=1"
    );
}

// ---- api spec §3.7 and §4 vectors ----

const V1_11_METAL: &str = "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1";

#[test]
fn api_vectors() {
    assert_eq!(vanilla("cmdline-metal-amd64", "v1.11.0"), V1_11_METAL);
    let v15 = "talos.platform=metal console=ttyS0 console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512";
    assert_eq!(vanilla("cmdline-metal-amd64", "v1.5.0"), v15);
    assert_eq!(
        vanilla("cmdline-metal-amd64-secureboot", "v1.5.0"),
        format!("{v15} lockdown=confidentiality")
    );
    assert!(vanilla("cmdline-nocloud-amd64", "v1.11.0").starts_with(
        "talos.platform=nocloud console=tty1 console=ttyS0 net.ifnames=0 init_on_alloc=1"
    ));
    // schematic #3 and #5 of the upstream integration tests
    assert_eq!(
        line(
            "cmdline-metal-amd64",
            "v1.11.0",
            &["nolapic", "nomodeset"],
            &[]
        ),
        format!("{V1_11_METAL} nolapic nomodeset")
    );
    assert_eq!(
        line(
            "cmdline-metal-amd64",
            "v1.11.0",
            &[],
            &[(0x0a, r#"{"externalIPs":["1.2.3.4"]}"#)]
        ),
        format!(
            "{V1_11_METAL} talos.environment=INSTALLER_META_BASE64=MHhhPXsiZXh0ZXJuYWxJUHMiOlsiMS4yLjMuNCJdfQ=="
        )
    );
}

#[test]
fn pxe_line4_vectors() {
    let id = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
    for path in ["metal-amd64", "metal-x86_64"] {
        let p = parse_pxe_path(path, &ver("v1.11.0")).unwrap();
        let cmdline = kernel_cmdline(&p, &[]).unwrap();
        let assets = crate::imager::path::pxe_boot_assets(&p);
        let line4 = format!(
            "kernel https://pxe.example/image/{id}/v1.11.0/{} {cmdline}",
            assets[0]
        );
        assert_eq!(
            line4,
            format!("kernel https://pxe.example/image/{id}/v1.11.0/kernel-amd64 {V1_11_METAL}")
        );
        assert_eq!(assets[1], "initramfs-amd64.xz");
    }
    let eq = parse_pxe_path("equinixMetal-amd64", &ver("v1.11.0")).unwrap();
    assert!(
        kernel_cmdline(&eq, &[])
            .unwrap()
            .starts_with("talos.platform=equinixMetal console=ttyS1,115200n8 init_on_alloc=1 ")
    );
    let sb = parse_pxe_path("metal-amd64-secureboot", &ver("v1.11.0")).unwrap();
    assert_eq!(
        kernel_cmdline(&sb, &[]).unwrap(),
        format!("{V1_11_METAL} lockdown=confidentiality")
    );
    // >= 1.14 SecureBoot no longer forces lockdown
    let sb14 = parse_pxe_path("metal-amd64-secureboot", &ver("v1.14.0")).unwrap();
    assert!(!kernel_cmdline(&sb14, &[]).unwrap().contains("lockdown"));
}

#[test]
fn platform_args_vectors() {
    assert!(vanilla("cmdline-aws-amd64", "v1.11.0").starts_with(
        "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 init_on_alloc=1"
    ));
    assert!(vanilla("cmdline-digital-ocean-amd64", "v1.11.0").starts_with(
        "talos.platform=digital-ocean console=ttyS0 console=tty0 console=tty1 net.ifnames=0 init_on_alloc=1"
    ));
    assert!(
        vanilla("cmdline-packet-arm64", "v1.11.0")
            .starts_with("talos.platform=equinixMetal console=ttyAMA0,115200 init_on_alloc=1")
    );
    assert!(vanilla("cmdline-vmware-arm64", "v1.11.0").starts_with(
        "talos.platform=vmware talos.config=guestinfo console=tty0 console=ttyAMA0 net.ifnames=0 init_on_alloc=1"
    ));
    assert!(vanilla("cmdline-azure-amd64", "v1.11.0").starts_with(
        "talos.platform=azure console=ttyS0,115200n8 earlyprintk=ttyS0,115200 rootdelay=300 net.ifnames=0 talos.dashboard.disabled=1 sysctl.kernel.kexec_load_disabled=1 init_on_alloc=1"
    ));
    assert!(vanilla("cmdline-oracle-amd64", "v1.11.0").starts_with(
        "talos.platform=oracle console=tty1 console=ttyS0 net.ifnames=0 talos.dashboard.disabled=1 init_on_alloc=1"
    ));
    assert!(
        vanilla("cmdline-upcloud-amd64", "v1.11.0")
            .starts_with("talos.platform=upcloud net.ifnames=0 init_on_alloc=1")
    );
    assert!(
        vanilla("cmdline-container-amd64", "v1.11.0")
            .starts_with("talos.platform=container init_on_alloc=1")
    );
    let mut p = parse_path("cmdline-foo-amd64", &ver("v1.11.0")).unwrap();
    p.customization.extra_kernel_args.clear();
    assert_eq!(
        kernel_cmdline(&p, &[]).unwrap_err().to_string(),
        r#"unknown platform: "foo""#
    );
}

#[test]
fn iso_halt_if_installed() {
    let p = parse_path("metal-amd64.iso", &ver("v1.11.0")).unwrap();
    assert_eq!(
        kernel_cmdline(&p, &[]).unwrap(),
        "talos.platform=metal console=tty0 talos.halt_if_installed=1 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1"
    );
    let old = parse_path("metal-amd64.iso", &ver("v1.7.0")).unwrap();
    assert!(
        !kernel_cmdline(&old, &[])
            .unwrap()
            .contains("halt_if_installed")
    );
}

#[test]
fn extra_kernel_args_effects() {
    let v = "v1.11.0";
    let base = V1_11_METAL;
    assert_eq!(
        line("cmdline-metal-amd64", v, &["console=ttyS1,115200"], &[]),
        base.replace("console=tty0", "console=ttyS1,115200")
    );
    // replaces every console at the first console's position
    assert_eq!(
        line("cmdline-metal-arm64", v, &["console=ttyS1,115200"], &[]),
        base.replace("console=tty0", "console=ttyS1,115200")
    );
    assert_eq!(
        line("cmdline-metal-arm64", v, &["-console"], &[]),
        base.replace("console=tty0 ", "")
    );
    assert_eq!(
        line("cmdline-metal-arm64", v, &["-console=tty0"], &[]),
        base.replace("console=tty0", "console=ttyAMA0")
    );
    assert_eq!(
        line("cmdline-metal-amd64", v, &["-selinux"], &[]),
        base.replace(" selinux=1", "")
    );
    assert_eq!(
        line("cmdline-metal-amd64", v, &["talos.platform=foo"], &[]),
        base.replace("talos.platform=metal", "talos.platform=foo")
    );
    assert_eq!(
        line("cmdline-metal-amd64", v, &["foo=bar"], &[]),
        format!("{base} foo=bar")
    );
    // non-overwrite keys append next to their existing values
    assert_eq!(
        line("cmdline-metal-amd64", v, &["pti=off"], &[]),
        base.replace("pti=on", "pti=on pti=off")
    );
}

#[test]
fn overlay_args_are_set_before_defaults() {
    let p = parse_path("cmdline-metal-arm64", &ver("v1.11.0")).unwrap();
    let got = kernel_cmdline(
        &p,
        &[
            "console=ttyS2,1500000n8".into(),
            "sysctl.kernel.kexec_load_disabled=1".into(),
        ],
    )
    .unwrap();
    assert!(got.starts_with(
        "talos.platform=metal console=ttyS2,1500000n8 sysctl.kernel.kexec_load_disabled=1 init_on_alloc=1"
    ));
}

#[test]
fn meta_not_on_disk_image_cmdline() {
    let got = line("metal-amd64.raw", "v1.11.0", &[], &[(0x0a, "x")]);
    assert_eq!(got, V1_11_METAL);
}

#[test]
fn meta_encoding() {
    let q = Quirks::new("v1.11.0");
    let entry = |k: u8, v: &str| MetaEntry {
        key: k,
        value: v.into(),
    };
    let small = [entry(0x0a, r#"{"externalIPs":["1.2.3.4"]}"#)];
    assert_eq!(
        encode_meta(&small, &q).unwrap(),
        "MHhhPXsiZXh0ZXJuYWxJUHMiOlsiMS4yLjMuNCJdfQ=="
    );
    assert_eq!(
        decode_meta("MHhhPXsiZXh0ZXJuYWxJUHMiOlsiMS4yLjMuNCJdfQ==").unwrap(),
        small
    );
    // two keys, lowercase hex, no padding
    let two = [entry(0x0a, "a"), entry(0xc, "foo"), entry(0xff, "z")];
    let enc = encode_meta(&two, &q).unwrap();
    assert_eq!(BASE64.decode(&enc).unwrap(), b"0xa=a;0xc=foo;0xff=z");
    // > 256 bytes: gzip with Go's header, decodes back
    let big = [entry(0x0a, &"x".repeat(300))];
    let enc = encode_meta(&big, &q).unwrap();
    let raw = BASE64.decode(&enc).unwrap();
    assert_eq!(&raw[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);
    assert_eq!(decode_meta(&enc).unwrap(), big);
    // exactly 256 bytes stays plain
    let edge = [entry(0x0a, &"y".repeat(256 - 4))];
    assert_eq!(
        BASE64
            .decode(encode_meta(&edge, &q).unwrap())
            .unwrap()
            .len(),
        256
    );
    // targets < 1.6.3 never compress
    let old = encode_meta(&big, &Quirks::new("v1.6.2")).unwrap();
    assert!(BASE64.decode(&old).unwrap().starts_with(b"0xa=xxx"));
    // Go base-prefix key parsing
    assert_eq!(parse_go_uint8("0x0a"), Some(10));
    assert_eq!(parse_go_uint8("10"), Some(10));
    assert_eq!(parse_go_uint8("012"), Some(10));
    assert_eq!(parse_go_uint8("0"), Some(0));
    assert_eq!(parse_go_uint8("256"), None);
}
