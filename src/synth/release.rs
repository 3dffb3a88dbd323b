//! The images of one synthetic release.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::debian::{Arm64Inputs, KitInputs};
use super::images::{BuiltImage, ImageWriter, Layer, RuntimeConfig, pseudo_random};
use super::initramfs::{base_initramfs, base_initramfs_arm64};
use super::tree::Tree;
use super::{KitError, OVERLAY_TAG, PROOF_DIR, SynthOptions, extension_proof, parse_version};

const AUTHOR: &str = "Image Factory test kit";

/// The boot assets of one architecture (`usr/install/<arch>/`), shared by every version.
struct ArchAssets {
    vmlinuz: Arc<[u8]>,
    stub: Arc<[u8]>,
    boot: Arc<[u8]>,
}

/// Inputs shared by every version.
pub(super) struct Shared {
    amd64: ArchAssets,
    /// The arm64 Debian inputs, when the bundle holds arm64.
    arm64: Option<(Arm64Inputs, ArchAssets)>,
    grub: Tree,
    dummy_ko: Arc<[u8]>,
}

fn read(path: &Path) -> Result<Arc<[u8]>, KitError> {
    std::fs::read(path)
        .map(Into::into)
        .map_err(|e| KitError::io(format!("read {}", path.display()), e))
}

fn tree_from_dir(dir: &Path, prefix: &str, t: &mut Tree) -> Result<(), KitError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| KitError::io(format!("read {}", dir.display()), e))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    t.dir(prefix, 0o755);
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let rel = format!("{prefix}/{name}");
        let ft = e
            .file_type()
            .map_err(|err| KitError::io(format!("stat {}", path.display()), err))?;
        if ft.is_dir() {
            tree_from_dir(&path, &rel, t)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path)
                .map_err(|err| KitError::io(format!("readlink {}", path.display()), err))?;
            t.symlink(&rel, &target.to_string_lossy());
        } else if ft.is_file() {
            t.file(&rel, 0o644, read(&path)?);
        }
    }
    Ok(())
}

impl Shared {
    /// Loads the amd64 inputs and, when `arches` holds arm64, the arm64 ones from `kit_dir`.
    pub(super) fn load(
        inputs: &KitInputs,
        kit_dir: &Path,
        arches: &[String],
    ) -> Result<Shared, KitError> {
        let mut grub = Tree::new();
        tree_from_dir(&inputs.grub_pc, "usr/lib/grub/i386-pc", &mut grub)?;
        tree_from_dir(&inputs.grub_efi, "usr/lib/grub/x86_64-efi", &mut grub)?;
        let arm64 = match arches.iter().any(|a| a == "arm64") {
            true => {
                let a = Arm64Inputs::locate(kit_dir)?;
                // like the real imager image, which carries GRUB for both architectures
                tree_from_dir(&a.grub_efi, "usr/lib/grub/arm64-efi", &mut grub)?;
                let assets = ArchAssets {
                    vmlinuz: read(&a.vmlinuz)?,
                    stub: with_sbat_section(&read(&a.systemd_stub)?)?.into(),
                    boot: read(&a.systemd_boot)?,
                };
                Some((a, assets))
            }
            false => None,
        };
        let dummy = inputs
            .module_path("dummy")
            .ok_or_else(|| KitError::MissingInput {
                path: inputs.modules_dir.join("kernel/drivers/net/dummy.ko"),
                package: format!("linux-image-{}", inputs.kernel_release),
            })?;
        Ok(Shared {
            amd64: ArchAssets {
                vmlinuz: read(&inputs.vmlinuz)?,
                stub: read(&inputs.systemd_stub)?,
                boot: read(&inputs.systemd_boot)?,
            },
            arm64,
            grub,
            dummy_ko: read(&inputs.modules_dir.join(dummy))?,
        })
    }
}

/// The stub with a `.sbat` section. Debian 12's arm64 `linuxaa64.efi.stub` (systemd 252)
/// keeps its SBAT text inside `.data` instead of a section of its own, which every UKI stub
/// must have (imager spec §7.1; Talos' own arm64 stub has one): the text is added as a
/// `.sbat` section after the last one (a header in the header area's free space, data at the
/// end of the file). A stub that has a `.sbat` section is returned as is.
fn with_sbat_section(stub: &[u8]) -> Result<Vec<u8>, KitError> {
    let bad = |what: &str| KitError::Build(format!("arm64 systemd stub: {what}"));
    let u16_at = |o: usize| {
        stub.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or_else(|| bad("truncated"))
    };
    let u32_at = |o: usize| {
        stub.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| bad("truncated"))
    };
    let pe = u32_at(0x3c)? as usize;
    if stub.get(pe..pe + 4) != Some(&b"PE\0\0"[..]) {
        return Err(bad("no PE signature"));
    }
    let nsec = usize::from(u16_at(pe + 6)?);
    let opt = pe + 24;
    let table = opt + usize::from(u16_at(pe + 20)?);
    let (sect_align, file_align) = (u32_at(opt + 32)?, u32_at(opt + 36)?);
    let size_of_headers = u32_at(opt + 60)? as usize;
    let mut end_va = 0u32;
    for i in 0..nsec {
        let h = table + 40 * i;
        if stub
            .get(h..h + 8)
            .is_some_and(|n| n.starts_with(b".sbat\0"))
        {
            return Ok(stub.to_vec());
        }
        end_va = end_va.max(u32_at(h + 12)? + u32_at(h + 8)?);
    }
    let new_header = table + 40 * nsec;
    if new_header + 40 > size_of_headers {
        return Err(bad("no room for another section header"));
    }
    let start = stub
        .windows(7)
        .position(|w| w == b"sbat,1,")
        .ok_or_else(|| bad("no SBAT text"))?;
    let sbat = stub[start..].split(|b| *b == 0).next().unwrap_or_default();
    let align = |v: u32, a: u32| v.div_ceil(a) * a;
    let len = u32::try_from(sbat.len()).map_err(|_| bad("SBAT text too long"))?;
    let va = align(end_va, sect_align);
    let raw = align(
        u32::try_from(stub.len()).map_err(|_| bad("too big"))?,
        file_align,
    );
    let raw_size = align(len, file_align);
    let mut out = stub.to_vec();
    out.resize(raw as usize, 0);
    out.extend_from_slice(sbat);
    out.resize((raw + raw_size) as usize, 0);
    let mut header = [0u8; 40];
    header[..5].copy_from_slice(b".sbat");
    for (at, v) in [
        (8, len),
        (12, va),
        (16, raw_size),
        (20, raw),
        (36, 0x4000_0040),
    ] {
        header[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    out[new_header..new_header + 40].copy_from_slice(&header);
    let count = u16::try_from(nsec + 1).map_err(|_| bad("too many sections"))?;
    out[pe + 6..pe + 8].copy_from_slice(&count.to_le_bytes());
    let init_data = u32_at(opt + 8)? + raw_size;
    out[opt + 8..opt + 12].copy_from_slice(&init_data.to_le_bytes());
    out[opt + 56..opt + 60].copy_from_slice(&align(va + len, sect_align).to_le_bytes());
    Ok(out)
}

fn labels(version: &str) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("alpha.talos.dev/version".to_string(), version.to_string());
    l.insert(
        "org.opencontainers.image.source".to_string(),
        "https://github.com/siderolabs/talos".to_string(),
    );
    l
}

fn script(body: &str) -> Vec<u8> {
    format!("#!/bin/sh\n# Image Factory test kit placeholder.\n{body}\n").into_bytes()
}

/// The synthetic `siderolabs/talosctl-all:<v>`: `talosctl-<os>-<arch>` binaries at its root
/// (shell scripts for Linux, seeded bytes for the others), as the real image holds them.
fn talosctl_all(w: &mut ImageWriter<'_>, v: &str) -> Result<(), KitError> {
    let mut tree = Tree::new();
    for (name, mode) in [
        ("talosctl-linux-amd64", 0o755),
        ("talosctl-linux-arm64", 0o755),
        ("talosctl-darwin-arm64", 0o755),
        ("talosctl-windows-amd64.exe", 0o644),
    ] {
        let body = if name.starts_with("talosctl-linux-") {
            script(&format!("echo \"talosctl {v} (test kit)\""))
        } else {
            super::images::pseudo_random(&format!("{name}-{v}"), 4096)
        };
        tree.file(name, mode, body);
    }
    w.image(
        "siderolabs/talosctl-all",
        v,
        &[Layer::from_tree(&tree, false)?],
        &RuntimeConfig {
            labels: labels(v),
            ..Default::default()
        },
    )?;
    Ok(())
}

/// The overlay image `siderolabs/sbc-test:v0.1.0` (shared by every version). Its installer
/// `installers/test` is a shell script run by the image's own static busybox (`bin/busybox`,
/// Debian `busybox-static`): `get-options` answers [`super::SBC_TEST_KERNEL_ARGS`] and a GPT
/// offset of [`super::SBC_TEST_GPT_OFFSET`] LBAs; `install` writes `u-boot.bin`
/// ([`super::sbc_test_uboot`]) into the disk at LBA [`super::SBC_TEST_UBOOT_LBA`] (inside the
/// room the offset leaves) and drops `config.txt` and `u-boot.bin` into the ESP.
pub(super) fn overlay_image(
    w: &mut ImageWriter<'_>,
    inputs: &KitInputs,
) -> Result<BuiltImage, KitError> {
    let mut t = Tree::new();
    t.file(
        "artifacts/arm64/u-boot/test/u-boot.bin",
        0o644,
        super::sbc_test_uboot(),
    );
    let busybox = std::fs::read(&inputs.busybox)
        .map_err(|e| KitError::io(format!("read {}", inputs.busybox.display()), e))?;
    t.file("bin/busybox", 0o755, busybox);
    t.file(
        "artifacts/arm64/dtb/test/board.dtb",
        0o644,
        pseudo_random("sbc-test/dtb", 8 * 1024),
    );
    t.file(
        "artifacts/arm64/firmware/boot/config.txt",
        0o644,
        &b"# test board firmware config\narm_64bit=1\nkernel=u-boot.bin\n"[..],
    );
    let args: String = super::SBC_TEST_KERNEL_ARGS
        .iter()
        .map(|a| format!("  - {a}\\n"))
        .collect();
    t.file(
        "installers/test",
        0o755,
        format!(
            r#"#!/overlay/bin/busybox sh
# Overlay installer protocol (YAML over stdio): get-options | install.
B=/overlay/bin/busybox
case "$1" in
get-options)
    $B cat >/dev/null
    printf 'name: test\nkernelArgs:\n{args}partitionOptions:\n  offset: {offset}\n'
    ;;
install)
    in=$($B cat)
    disk=$(echo "$in" | $B sed -n 's/^installDisk: *//p')
    prefix=$(echo "$in" | $B sed -n 's/^mountPrefix: *//p')
    art=$(echo "$in" | $B sed -n 's/^artifactsPath: *//p')
    uboot="$art/arm64/u-boot/test/u-boot.bin"
    $B dd if="$uboot" of="$disk" bs=512 seek={lba} conv=notrunc || exit 1
    $B mkdir -p "$prefix/boot/EFI" || exit 1
    $B cp "$art/arm64/firmware/boot/config.txt" "$uboot" "$prefix/boot/EFI/" || exit 1
    ;;
*)
    echo "usage: $0 get-options|install" >&2
    exit 1
    ;;
esac
"#,
            offset = super::SBC_TEST_GPT_OFFSET,
            lba = super::SBC_TEST_UBOOT_LBA,
        )
        .into_bytes(),
    );
    t.file(
        "profiles/test.yaml",
        0o644,
        &b"arch: arm64\nplatform: metal\nsecureboot: false\noutput:\n  kind: image\n  outFormat: .xz\n  imageOptions:\n    diskSize: 1306525696\n    diskFormat: raw\n    bootloader: grub\n"[..],
    );
    let layer = Layer::from_tree(&t, false)?;
    w.image(
        "siderolabs/sbc-test",
        OVERLAY_TAG,
        &[layer],
        &RuntimeConfig::default(),
    )
}

struct Extension {
    name: String,
    version: String,
    description: String,
    rootfs: Tree,
}

fn extension_manifest(e: &Extension) -> String {
    let mut desc = String::new();
    for l in e.description.lines() {
        desc.push_str("    ");
        desc.push_str(l);
        desc.push('\n');
    }
    format!(
        "version: v1alpha1\nmetadata:\n  name: {}\n  version: {}\n  author: {AUTHOR}\n  description: |\n{desc}  compatibility:\n    talos:\n      version: '>= v1.10.0'\n",
        e.name, e.version
    )
}

fn extensions(inputs: &KitInputs, shared: &Shared, opts: &SynthOptions, v: &str) -> Vec<Extension> {
    let tied = format!("1.0.0-{v}");
    let mut out = Vec::new();
    let mut kmod = Tree::new();
    kmod.file(
        &format!("usr/lib/modules/{}/extras/dummy.ko", inputs.kernel_release),
        0o644,
        shared.dummy_ko.clone(),
    );
    out.push(Extension {
        name: "kmod-test".into(),
        version: tied.clone(),
        description: "[test kit] A kernel module (dummy.ko from the Debian kernel) under\nusr/lib/modules/<kver>/extras, for the modules.dep step.".into(),
        rootfs: kmod,
    });
    let mut fw = Tree::new();
    fw.file(
        "usr/lib/firmware/test/fw.bin",
        0o644,
        pseudo_random("fw-test/fw.bin", 4096),
    );
    fw.file(
        "usr/lib/firmware/intel-ucode/06-8e-0a",
        0o644,
        pseudo_random("fw-test/intel-ucode", 2048),
    );
    fw.file(
        "usr/lib/firmware/amd-ucode/microcode_amd_fam17h.bin",
        0o644,
        pseudo_random("fw-test/amd-ucode", 2048),
    );
    out.push(Extension {
        name: "fw-test".into(),
        version: tied.clone(),
        description: "[test kit] Firmware and early CPU microcode (Intel and AMD).".into(),
        rootfs: fw,
    });
    let mut svc = Tree::new();
    svc.file(
        "usr/local/etc/containers/svc-test.yaml",
        0o644,
        &b"name: svc-test\ncontainer:\n  entrypoint: ./svc-test\n  args:\n    - --listen=:9999\n  mounts: []\ndepends:\n  - network:\n      - addresses\nrestart: always\n"[..],
    );
    svc.file(
        "usr/local/lib/containers/svc-test/svc-test",
        0o755,
        script("echo svc-test running; exec sleep infinity"),
    );
    out.push(Extension {
        name: "svc-test".into(),
        version: "v1.0.0".into(),
        description: "[test kit] A plain extension service.".into(),
        rootfs: svc,
    });
    for i in 1..=opts.extensions {
        let name = format!("plain-{i}");
        let mut t = Tree::new();
        t.file(
            &format!("usr/local/share/{name}/README"),
            0o644,
            format!("{name}: a plain test-kit extension\n").into_bytes(),
        );
        out.push(Extension {
            name,
            version: "v1.0.0".into(),
            description: "[test kit] A plain extension.".into(),
            rootfs: t,
        });
    }
    out
}

/// Builds one extension image; with padding, the padding file is a separate base layer (shared
/// by every version of the extension, so the bundle holds it once).
fn extension_image(
    w: &mut ImageWriter<'_>,
    e: &Extension,
    padding_mb: u64,
) -> Result<BuiltImage, KitError> {
    let mut layers = Vec::new();
    if padding_mb > 0 {
        let mut pad = Tree::new();
        pad.file(
            &format!("rootfs/usr/local/share/{}/padding.bin", e.name),
            0o644,
            pseudo_random(&format!("padding/{}", e.name), (padding_mb << 20) as usize),
        );
        layers.push(Layer::from_tree(&pad, true)?);
    }
    let mut t = Tree::new();
    t.file("manifest.yaml", 0o644, extension_manifest(e).into_bytes());
    t.dir("rootfs", 0o755);
    t.merge("rootfs", &e.rootfs);
    t.file(
        &format!("rootfs/{PROOF_DIR}/{}.proof", e.name),
        0o644,
        format!("{}\n", extension_proof(&e.name, &e.version)).into_bytes(),
    );
    layers.push(Layer::from_tree(&t, false)?);
    w.image(
        &format!("siderolabs/{}", e.name),
        &e.version,
        &layers,
        &RuntimeConfig::default(),
    )
}

/// Every image of Talos `v`.
pub(super) fn version(
    w: &mut ImageWriter<'_>,
    inputs: &KitInputs,
    shared: &Shared,
    opts: &SynthOptions,
    v: &str,
    overlay: &BuiltImage,
) -> Result<(), KitError> {
    let (major, minor, _) = parse_version(v).expect("validated");
    let modern = (major, minor) >= (1, 10);
    let arches = w.arches.to_vec();
    let mut assets = Tree::new();
    for a in &arches {
        let (files, initramfs) = match (a.as_str(), &shared.arm64) {
            ("arm64", Some((inputs, files))) => (files, base_initramfs_arm64(inputs, v)?),
            ("amd64", _) => (&shared.amd64, base_initramfs(inputs, v)?),
            _ => {
                return Err(KitError::Invalid(format!(
                    "architecture {a:?}: no test-kit inputs"
                )));
            }
        };
        let d = format!("usr/install/{a}");
        assets.file(&format!("{d}/vmlinuz"), 0o644, files.vmlinuz.clone());
        assets.file(&format!("{d}/initramfs.xz"), 0o644, initramfs);
        assets.file(&format!("{d}/systemd-stub.efi"), 0o644, files.stub.clone());
        assets.file(&format!("{d}/systemd-boot.efi"), 0o644, files.boot.clone());
    }
    let mut tools = Tree::new();
    tools.file(
        "usr/bin/installer",
        0o755,
        script(&format!("echo \"installer {v} (test kit)\"")),
    );
    tools.symlink("usr/bin/imager", "installer");
    tools.symlink("bin", "usr/bin");
    tools.file(
        "etc/os-release",
        0o644,
        format!("NAME=Talos\nID=talos\nVERSION_ID={v}\n").into_bytes(),
    );

    // imager: tools + GRUB + boot assets (+ depmod config), one squashed layer.
    let mut imager = Tree::new();
    imager.merge("", &tools);
    imager.merge("", &shared.grub);
    imager.merge("", &assets);
    imager.file(
        "etc/modules.d/10-extra-modules.conf",
        0o644,
        &b"search extras built-in\n"[..],
    );
    let rc = |entry: &str| RuntimeConfig {
        entrypoint: vec![entry.to_string()],
        env: vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            format!("VERSION={v}"),
        ],
        labels: labels(v),
        target_arch_env: false,
    };
    w.image(
        "siderolabs/imager",
        v,
        &[Layer::from_tree(&imager, false)?],
        &rc("/bin/imager"),
    )?;
    if modern {
        let mut base_rc = rc("/bin/installer");
        base_rc.target_arch_env = true;
        w.image(
            "siderolabs/installer-base",
            v,
            &[Layer::from_tree(&tools, false)?],
            &base_rc,
        )?;
    } else {
        // Legacy installer: layer 1 tools + GRUB, layer 2 the boot assets.
        let mut l1 = tools.clone();
        l1.merge("", &shared.grub);
        w.image(
            "siderolabs/installer",
            v,
            &[
                Layer::from_tree(&l1, false)?,
                Layer::from_tree(&assets, false)?,
            ],
            &rc("/bin/installer"),
        )?;
    }

    // Extensions and their catalog (lines sorted by name, like upstream).
    let mut exts = extensions(inputs, shared, opts, v);
    exts.sort_by(|a, b| a.name.cmp(&b.name));
    let mut digests = String::new();
    let mut descriptions = serde_yaml::Mapping::new();
    for e in &exts {
        let img = extension_image(w, e, opts.extension_size_mb)?;
        let line = img.pinned();
        digests.push_str(&line);
        digests.push('\n');
        let mut d = serde_yaml::Mapping::new();
        d.insert("author".into(), AUTHOR.into());
        d.insert("description".into(), format!("{}\n", e.description).into());
        descriptions.insert(line.into(), serde_yaml::Value::Mapping(d));
    }
    let mut cat = Tree::new();
    cat.file("image-digests", 0o644, digests.into_bytes());
    cat.file(
        "descriptions.yaml",
        0o644,
        serde_yaml::to_string(&descriptions)
            .map_err(|source| KitError::Encode {
                what: "descriptions.yaml",
                source,
            })?
            .into_bytes(),
    );
    w.image(
        "siderolabs/extensions",
        v,
        &[Layer::from_tree(&cat, false)?],
        &RuntimeConfig {
            labels: labels(v),
            ..Default::default()
        },
    )?;

    let talosctl = crate::catalog::Version::parse_strict(v)
        .is_some_and(|version| crate::catalog::talosctl::has_talosctl_all(&version));
    if talosctl {
        talosctl_all(w, v)?;
    }

    let overlays = format!(
        "overlays:\n  - name: test\n    image: {}\n    digest: {}\n",
        overlay.reference(),
        overlay.index.digest
    );
    let mut ov = Tree::new();
    ov.file("overlays.yaml", 0o644, overlays.into_bytes());
    w.image(
        "siderolabs/overlays",
        v,
        &[Layer::from_tree(&ov, false)?],
        &RuntimeConfig {
            labels: labels(v),
            ..Default::default()
        },
    )?;
    Ok(())
}
