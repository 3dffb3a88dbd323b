//! `image-factory dev synth-release`: the bundle holds every image and signature under its
//! upstream name, in the upstream shapes, verifiable with the kit key; the initramfs is a Talos
//! one (GNU cpio and unsquashfs read it); the same inputs give the same bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use image_factory::oci::{
    Descriptor, Digest, ImageIndex, ImageManifest, ImageSource, LayoutSource, Reference,
};
use image_factory::synth::{SynthOptions, SynthReport, synth_release};
use image_factory::trust::{SignedIdentity, SigningKey, TrustedKeys, verify_image};

const KEY_SEED: [u8; 32] = [42; 32];

struct Built {
    _dir: tempfile::TempDir,
    report: SynthReport,
    files: HashMap<String, Vec<u8>>,
}

fn options(out: &Path) -> SynthOptions {
    let mut o = SynthOptions::new(out);
    o.versions = vec!["v1.9.6".into(), "v1.11.0".into()];
    o.extensions = 1;
    o.key = Some(SigningKey::from_seed(&KEY_SEED));
    o
}

fn read_tar(path: &Path) -> HashMap<String, Vec<u8>> {
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut out = HashMap::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut b = Vec::new();
        e.read_to_end(&mut b).unwrap();
        assert!(
            out.insert(name.clone(), b).is_none(),
            "duplicate entry {name}"
        );
    }
    out
}

fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let report = synth_release(&options(dir.path())).unwrap_or_else(|e| panic!("{e}"));
        let files = read_tar(&report.bundle);
        Built {
            _dir: dir,
            report,
            files,
        }
    })
}

impl Built {
    fn blob(&self, d: &Digest) -> &[u8] {
        let b = self
            .files
            .get(&format!("blobs/sha256/{}", d.hex()))
            .unwrap_or_else(|| panic!("blob {d} missing"));
        assert_eq!(&Digest::of(b), d);
        b
    }
    fn index_json(&self) -> ImageIndex {
        serde_json::from_slice(&self.files["index.json"]).unwrap()
    }
    fn root(&self, name: &str) -> Descriptor {
        self.index_json()
            .manifests
            .into_iter()
            .find(|d| {
                d.annotations.get("org.opencontainers.image.ref.name") == Some(&name.to_string())
            })
            .unwrap_or_else(|| panic!("{name} not in index.json"))
    }
    /// The amd64 manifest of the index at `d`.
    fn amd64(&self, d: &Digest) -> ImageManifest {
        let idx: ImageIndex = serde_json::from_slice(self.blob(d)).unwrap();
        let m = idx.select("amd64").expect("linux/amd64 manifest");
        serde_json::from_slice(self.blob(&m.digest)).unwrap()
    }
    /// Flattened files (name → bytes) of the amd64 image at `d`; no whiteouts in the kit.
    fn flat(&self, d: &Digest) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for l in self.amd64(d).layers {
            assert_eq!(l.media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
            let gz = flate2::read::GzDecoder::new(self.blob(&l.digest));
            let mut a = tar::Archive::new(gz);
            for e in a.entries().unwrap() {
                let mut e = e.unwrap();
                let name = e
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_end_matches('/')
                    .to_string();
                let mut b = Vec::new();
                e.read_to_end(&mut b).unwrap();
                out.insert(name, b);
            }
        }
        out
    }
    fn flat_ref(&self, name: &str) -> BTreeMap<String, Vec<u8>> {
        self.flat(&self.root(name).digest)
    }
}

#[test]
fn bundle_layout_and_ref_names() {
    let b = built();
    assert_eq!(b.files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
    let idx = b.index_json();
    let mut names = BTreeSet::new();
    for d in &idx.manifests {
        b.blob(&d.digest);
        assert_eq!(d.size as usize, b.blob(&d.digest).len());
        names.insert(d.annotations["org.opencontainers.image.ref.name"].clone());
    }
    for v in ["v1.9.6", "v1.11.0"] {
        for repo in ["imager", "extensions", "overlays"] {
            assert!(
                names.contains(&format!("ghcr.io/siderolabs/{repo}:{v}")),
                "{repo}:{v}"
            );
        }
        for e in ["kmod-test", "fw-test"] {
            assert!(names.contains(&format!("ghcr.io/siderolabs/{e}:1.0.0-{v}")));
        }
    }
    assert!(names.contains("ghcr.io/siderolabs/installer:v1.9.6"));
    assert!(names.contains("ghcr.io/siderolabs/installer-base:v1.11.0"));
    assert!(!names.contains("ghcr.io/siderolabs/installer-base:v1.9.6"));
    assert!(names.contains("ghcr.io/siderolabs/svc-test:v1.0.0"));
    assert!(names.contains("ghcr.io/siderolabs/plain-1:v1.0.0"));
    assert!(names.contains("ghcr.io/siderolabs/sbc-test:v0.1.0"));
    // Every image has its signature under the tag convention, and vice versa.
    let images: Vec<&String> = names.iter().filter(|n| !n.ends_with(".sig")).collect();
    assert_eq!(images.len() * 2, names.len());
    for n in images {
        let d = b.root(n).digest;
        let repo = n.rsplit_once(':').unwrap().0;
        assert!(
            names.contains(&format!("{repo}:{}", d.signature_tag())),
            "{n}"
        );
    }
    // Every blob is referenced once in the tar (no duplicates; checked while reading).
    assert_eq!(b.report.images.len() * 2, idx.manifests.len());
}

#[test]
fn every_image_verifies_with_the_kit_key() {
    let b = built();
    let keys = TrustedKeys::from_files(&[&b.report.public_key]).unwrap();
    let src = LayoutSource::open(&b.report.bundle).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut n = 0;
    for i in &b.report.images {
        let r: Reference = i.reference().parse().unwrap();
        let resolved = rt.block_on(src.resolve(&r)).unwrap().unwrap();
        assert_eq!(resolved.digest, i.index.digest);
        assert!(resolved.is_index(), "{} is an index", i.reference());
        rt.block_on(verify_image(
            &src,
            &keys,
            &r,
            &SignedIdentity::of(&r),
            &resolved.digest,
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        n += 1;
    }
    assert!(n >= 14, "{n}");
    // Another key does not verify them.
    let mut other = TrustedKeys::new();
    other
        .add_signing_key(&SigningKey::from_seed(&[1; 32]), "other")
        .unwrap();
    let i = &b.report.images[0];
    let r: Reference = i.reference().parse().unwrap();
    assert!(
        rt.block_on(verify_image(
            &src,
            &other,
            &r,
            &SignedIdentity::of(&r),
            &i.index.digest
        ))
        .is_err()
    );
}

#[test]
fn imager_installer_and_configs() {
    let b = built();
    let f = b.flat_ref("ghcr.io/siderolabs/imager:v1.11.0");
    for a in [
        "vmlinuz",
        "initramfs.xz",
        "systemd-stub.efi",
        "systemd-boot.efi",
    ] {
        assert!(f.contains_key(&format!("usr/install/amd64/{a}")), "{a}");
    }
    assert_eq!(&f["usr/install/amd64/vmlinuz"][0x202..0x206], b"HdrS");
    assert_eq!(&f["usr/install/amd64/systemd-stub.efi"][..2], b"MZ");
    assert_eq!(
        &f["usr/install/amd64/initramfs.xz"][..4],
        &[0x28, 0xb5, 0x2f, 0xfd]
    );
    assert!(f.contains_key("usr/lib/grub/i386-pc/normal.mod"));
    assert!(f.contains_key("usr/lib/grub/x86_64-efi/normal.mod"));
    assert_eq!(
        f["etc/modules.d/10-extra-modules.conf"],
        b"search extras built-in\n"
    );
    let m = b.amd64(&b.root("ghcr.io/siderolabs/imager:v1.11.0").digest);
    let cfg: serde_json::Value = serde_json::from_slice(b.blob(&m.config.digest)).unwrap();
    assert_eq!(cfg["architecture"], "amd64");
    assert_eq!(
        cfg["config"]["Labels"]["alpha.talos.dev/version"],
        "v1.11.0"
    );
    assert_eq!(cfg["config"]["Entrypoint"][0], "/bin/imager");

    let base = b.flat_ref("ghcr.io/siderolabs/installer-base:v1.11.0");
    assert!(base.contains_key("usr/bin/installer"));
    assert!(!base.keys().any(|k| k.starts_with("usr/install")));
    // Legacy installer: two layers, the second is the boot assets.
    let legacy = b.amd64(&b.root("ghcr.io/siderolabs/installer:v1.9.6").digest);
    assert_eq!(legacy.layers.len(), 2);
    let f = b.flat_ref("ghcr.io/siderolabs/installer:v1.9.6");
    assert!(f.contains_key("usr/install/amd64/initramfs.xz"));
}

#[test]
fn catalogs_and_extension_images() {
    let b = built();
    for v in ["v1.9.6", "v1.11.0"] {
        let cat = b.flat_ref(&format!("ghcr.io/siderolabs/extensions:{v}"));
        let digests = String::from_utf8(cat["image-digests"].clone()).unwrap();
        let desc: serde_yaml::Mapping = serde_yaml::from_slice(&cat["descriptions.yaml"]).unwrap();
        let lines: Vec<&str> = digests.lines().collect();
        assert_eq!(lines.len(), 4, "{digests}");
        let mut names = Vec::new();
        for line in &lines {
            let (tagged, digest) = line.split_once('@').unwrap();
            let d: Digest = digest.parse().unwrap();
            // Pulled by digest: the index is in the bundle and the tag names the same digest.
            assert_eq!(b.root(tagged).digest, d);
            let entry = &desc[&serde_yaml::Value::from(*line)];
            assert_eq!(entry["author"].as_str(), Some("Image Factory test kit"));
            assert!(
                entry["description"]
                    .as_str()
                    .unwrap()
                    .starts_with("[test kit]")
            );
            let flat = b.flat(&d);
            let top: BTreeSet<&str> = flat.keys().map(|k| k.split('/').next().unwrap()).collect();
            assert_eq!(top, BTreeSet::from(["manifest.yaml", "rootfs"]), "{line}");
            let manifest: serde_yaml::Value =
                serde_yaml::from_slice(&flat["manifest.yaml"]).unwrap();
            assert_eq!(manifest["version"].as_str(), Some("v1alpha1"));
            assert_eq!(
                manifest["metadata"]["compatibility"]["talos"]["version"].as_str(),
                Some(">= v1.10.0")
            );
            let name = manifest["metadata"]["name"].as_str().unwrap().to_string();
            assert_eq!(
                tagged,
                format!(
                    "ghcr.io/siderolabs/{name}:{}",
                    manifest["metadata"]["version"].as_str().unwrap()
                )
            );
            match name.as_str() {
                "kmod-test" => {
                    let ko = format!(
                        "rootfs/usr/lib/modules/{}/extras/dummy.ko",
                        b.report.kernel_release
                    );
                    assert_eq!(&flat[&ko][..4], b"\x7fELF");
                }
                "fw-test" => {
                    for p in [
                        "rootfs/usr/lib/firmware/test/fw.bin",
                        "rootfs/usr/lib/firmware/intel-ucode/06-8e-0a",
                        "rootfs/usr/lib/firmware/amd-ucode/microcode_amd_fam17h.bin",
                    ] {
                        assert!(flat.contains_key(p), "{p}");
                    }
                }
                "svc-test" => {
                    assert!(flat.contains_key("rootfs/usr/local/etc/containers/svc-test.yaml"));
                    assert!(flat.contains_key("rootfs/usr/local/lib/containers/svc-test/svc-test"));
                }
                _ => assert!(name.starts_with("plain-")),
            }
            names.push(name);
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);

        let ov = b.flat_ref(&format!("ghcr.io/siderolabs/overlays:{v}"));
        let y: serde_yaml::Value = serde_yaml::from_slice(&ov["overlays.yaml"]).unwrap();
        let o = &y["overlays"][0];
        assert_eq!(o["name"].as_str(), Some("test"));
        assert_eq!(
            o["image"].as_str(),
            Some("ghcr.io/siderolabs/sbc-test:v0.1.0")
        );
        let d: Digest = o["digest"].as_str().unwrap().parse().unwrap();
        assert_eq!(b.root("ghcr.io/siderolabs/sbc-test:v0.1.0").digest, d);
        let sbc = b.flat(&d);
        assert!(sbc.contains_key("installers/test"));
        assert!(sbc.contains_key("profiles/test.yaml"));
        assert!(sbc.keys().any(|k| k.starts_with("artifacts/arm64/")));
    }
}

fn tool(name: &str, package: &str) -> Command {
    // Always a failure, whatever IF_REQUIRE_TOOLS says.
    assert!(
        testsupport::tools::on_path(name),
        "{name} is not installed: install Debian package {package} (test.sh does)"
    );
    Command::new(name)
}

fn run_with_input(mut cmd: Command, input: &[u8]) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn initramfs_is_talos_shaped_for_gnu_cpio_and_unsquashfs() {
    let b = built();
    let f = b.flat_ref("ghcr.io/siderolabs/imager:v1.11.0");
    let initramfs = &f["usr/install/amd64/initramfs.xz"];
    let cpio_bytes = zstd::decode_all(initramfs.as_slice()).unwrap();
    assert_eq!(cpio_bytes.len() % 512, 0);
    let mut cpio = tool("cpio", "cpio");
    cpio.args(["-t", "--quiet"]);
    let listing = run_with_input(cpio, &cpio_bytes);
    let names: Vec<&str> = listing.lines().collect();
    assert_eq!(names[0], ".");
    for n in ["init", "rootfs.sqsh", "bin/busybox", "dev/console"] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    let kver = &b.report.kernel_release;
    assert!(
        names.contains(&format!("lib/modules/{kver}/kernel/drivers/block/loop.ko").as_str()),
        "{names:?}"
    );
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "LC_ALL=C sort order");

    // rootfs.sqsh: read it back out with the cpio crate and list it with unsquashfs.
    let mut rd = cpio_bytes.as_slice();
    let mut sqsh = None;
    loop {
        let e = cpio::NewcReader::new(rd).unwrap();
        if e.entry().is_trailer() {
            break;
        }
        let name = e.entry().name().to_string();
        let mut buf = Vec::new();
        let mut e = e;
        e.read_to_end(&mut buf).unwrap();
        if name == "init" {
            let init = String::from_utf8(buf.clone()).unwrap();
            assert!(init.starts_with("#!/bin/busybox sh\n"));
            assert!(init.contains("IF-TESTKIT-MARKER"));
        }
        if name == "rootfs.sqsh" {
            sqsh = Some(buf);
        }
        rd = e.finish().unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let p: PathBuf = dir.path().join("rootfs.sqsh");
    std::fs::write(&p, sqsh.expect("rootfs.sqsh")).unwrap();
    let out = tool("unsquashfs", "squashfs-tools")
        .args(["-l", "-d", ""])
        .arg(&p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = String::from_utf8(out.stdout).unwrap();
    for want in [
        "/etc/os-release".to_string(),
        format!("/usr/lib/modules/{kver}/modules.dep"),
        format!("/usr/lib/modules/{kver}/modules.builtin"),
        format!("/usr/lib/modules/{kver}/kernel/fs/overlayfs/overlay.ko"),
    ] {
        assert!(
            list.lines().any(|l| l.ends_with(&want)),
            "{want} in\n{list}"
        );
    }
    // The modules.dep step (spec §3.5) needs exactly one kernel directory.
    let kdirs: BTreeSet<&str> = list
        .lines()
        .filter_map(|l| l.split("/usr/lib/modules/").nth(1))
        .map(|r| r.split('/').next().unwrap())
        .collect();
    assert_eq!(kdirs, BTreeSet::from([kver.as_str()]));
}

#[test]
fn same_inputs_same_bytes_and_padding_shared() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let again = synth_release(&options(dir.path())).unwrap();
    assert!(
        std::fs::read(&again.bundle).unwrap() == std::fs::read(&b.report.bundle).unwrap(),
        "two builds from the same inputs differ"
    );

    // Padding: a separate base layer, incompressible, shared across versions.
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.versions = vec!["v1.10.3".into(), "v1.11.0".into()];
    o.extensions = 0;
    o.extension_size_mb = 1;
    let r = synth_release(&o).unwrap();
    let files = read_tar(&r.bundle);
    let manifest_of = |tag: &str| -> ImageManifest {
        let i = r.images.iter().find(|i| i.reference() == tag).unwrap();
        let idx: ImageIndex =
            serde_json::from_slice(&files[&format!("blobs/sha256/{}", i.index.digest.hex())])
                .unwrap();
        serde_json::from_slice(&files[&format!("blobs/sha256/{}", idx.manifests[0].digest.hex())])
            .unwrap()
    };
    let a = manifest_of("ghcr.io/siderolabs/kmod-test:1.0.0-v1.10.3");
    let c = manifest_of("ghcr.io/siderolabs/kmod-test:1.0.0-v1.11.0");
    assert_eq!(a.layers.len(), 2);
    assert_eq!(a.layers[0].digest, c.layers[0].digest);
    assert_ne!(a.layers[1].digest, c.layers[1].digest);
    assert!(
        a.layers[0].size > 1 << 20,
        "incompressible: {}",
        a.layers[0].size
    );
}

#[test]
fn missing_inputs_name_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = SynthOptions::new(dir.path());
    o.kit_dir = dir.path().join("no-kit");
    let err = synth_release(&o).unwrap_err().to_string();
    assert!(err.starts_with("missing test-kit input "), "{err}");
    assert!(err.contains("install Debian package linux-image"), "{err}");
    assert!(err.contains("tests/kit/fetch-debian.sh"), "{err}");
}

#[test]
fn cli_writes_bundle_and_reuses_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_image-factory"))
            .args(["dev", "synth-release", "--version", "v1.11.0", "--out"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            stdout.contains("ghcr.io/siderolabs/imager:v1.11.0@sha256:"),
            "{stdout}"
        );
        (
            std::fs::read(dir.path().join("bundle.tar")).unwrap(),
            std::fs::read_to_string(dir.path().join("signing-key.pub")).unwrap(),
        )
    };
    let (b1, k1) = run();
    assert!(k1.starts_with("-----BEGIN PUBLIC KEY-----"));
    assert!(dir.path().join("signing-key.pem").exists());
    let (b2, k2) = run();
    assert_eq!(k1, k2, "the key in signing-key.pem is reused");
    assert!(b1 == b2, "same key and inputs, same bundle");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "no temporary files left: {names:?}");
}
