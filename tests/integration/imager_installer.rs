//! Installer images (imager spec §8.1): OCI blobs in a temporary blob store and the
//! docker-archive tarball, checked with our readers, GNU tar and (when installed) skopeo.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use flate2::read::GzDecoder;
use image_factory::imager::installer::{
    BaseImage, InstallerArtifacts, InstallerError, InstallerImage, InstallerInputs,
    build_installer, write_docker_archive,
};
use image_factory::oci::{
    Descriptor, Digest, ImageConfig, ImageManifest, MEDIA_OCI_CONFIG, MEDIA_OCI_LAYER_GZIP,
    MEDIA_OCI_MANIFEST, RootFs,
};
use image_factory::store::{BlobStore, SledStore};
use serde_json::json;

const BASE_REF: &str = "ghcr.io/siderolabs/installer-base:v1.11.0";

fn store(dir: &Path) -> BlobStore {
    let meta = Arc::new(SledStore::open(&dir.join("meta")).unwrap());
    BlobStore::open(&dir.join("blobs"), meta).unwrap()
}

/// A gzip'd single-file layer; returns (compressed bytes, diff ID).
fn layer(path: &str, content: &[u8]) -> (Vec<u8>, Digest) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path(path).unwrap();
    h.set_size(content.len() as u64);
    h.set_mode(0o755);
    h.set_cksum();
    tar.append(&h, content).unwrap();
    let raw = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    (gz.finish().unwrap(), Digest::of(&raw))
}

/// Puts a base image with `n` layers into `store`.
fn base_image(store: &BlobStore, n: usize) -> BaseImage {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for i in 0..n {
        let (gz, diff) = layer(
            &format!("usr/bin/tool{i}"),
            format!("#!/bin/sh\necho {i}\n").as_bytes(),
        );
        store.put_bytes(&gz).unwrap();
        let mut d = Descriptor::for_bytes(MEDIA_OCI_LAYER_GZIP, &gz);
        d.annotations.insert("org.example".into(), "dropped".into());
        layers.push(d);
        diff_ids.push(diff);
    }
    let runtime = json!({
        "Entrypoint": ["/usr/bin/installer"],
        "Env": ["PATH=/usr/bin:/bin", "TARGETARCH=amd64", "VERSION=v1.11.0"],
        "Labels": {"alpha.talos.dev/version": "v1.11.0"},
    });
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        created: Some("2025-01-01T00:00:00Z".into()),
        config: Some(runtime),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids,
        },
        extra: BTreeMap::new(),
    };
    let config_bytes = serde_json::to_vec(&config).unwrap();
    store.put_bytes(&config_bytes).unwrap();
    BaseImage {
        reference: BASE_REF.into(),
        manifest: ImageManifest {
            schema_version: 2,
            media_type: Some(MEDIA_OCI_MANIFEST.into()),
            config: Descriptor::for_bytes(MEDIA_OCI_CONFIG, &config_bytes),
            layers,
            annotations: BTreeMap::new(),
        },
        config,
    }
}

/// Deterministic artifact files: a 2 MiB "UKI" and a small "systemd-boot".
fn artifacts(dir: &Path) -> (InstallerArtifacts, Vec<u8>, Vec<u8>) {
    let uki: Vec<u8> = (0..2u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let boot = b"MZ systemd-boot".repeat(1000);
    std::fs::write(dir.join("uki.efi"), &uki).unwrap();
    std::fs::write(dir.join("systemd-boot.efi"), &boot).unwrap();
    let a = InstallerArtifacts::Uki {
        uki: dir.join("uki.efi"),
        systemd_boot: dir.join("systemd-boot.efi"),
        signed_name: false,
    };
    (a, uki, boot)
}

fn inputs<'a>(base: &'a BaseImage, artifacts: &'a InstallerArtifacts) -> InstallerInputs<'a> {
    InstallerInputs {
        base,
        arch: "amd64",
        artifacts,
        overlay: None,
        gzip_level: 1,
    }
}

fn blob(store: &BlobStore, d: &Descriptor) -> Vec<u8> {
    let bytes = store
        .read_sha256(d.digest.hex(), 1 << 30)
        .unwrap()
        .expect("blob stored");
    assert_eq!(Digest::of(&bytes), d.digest);
    assert_eq!(bytes.len() as u64, d.size);
    bytes
}

/// (path, mode, uid, gid, mtime, content) of every entry of a tar stream.
type Entry = (String, u32, u64, u64, u64, Vec<u8>);

fn tar_entries(r: impl Read) -> Vec<Entry> {
    let mut a = tar::Archive::new(r);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            assert_eq!(h.entry_type(), tar::EntryType::Regular);
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            (
                path,
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap(),
                data,
            )
        })
        .collect()
}

fn build_archive(dir: &Path, n_base: usize) -> (BlobStore, InstallerImage, BaseImage, PathBuf) {
    let s = store(dir);
    let base = base_image(&s, n_base);
    let (a, _, _) = artifacts(dir);
    let image = build_installer(&s, &inputs(&base, &a)).unwrap();
    let path = dir.join("installer-amd64.tar");
    let file = std::fs::File::create(&path).unwrap();
    write_docker_archive(&s, &image, std::io::BufWriter::new(file)).unwrap();
    (s, image, base, path)
}

#[test]
fn installer_image_blobs_and_archive() {
    let dir = tempfile::tempdir().unwrap();
    let (s, image, base, archive) = build_archive(dir.path(), 1);
    let (_, uki, boot) = artifacts(dir.path());

    // Manifest: OCI, base layer unchanged (annotations dropped) + one gzip artifacts layer.
    let manifest: ImageManifest = serde_json::from_slice(&blob(&s, &image.manifest)).unwrap();
    assert_eq!(image.manifest.media_type, MEDIA_OCI_MANIFEST);
    assert_eq!(manifest.media_type.as_deref(), Some(MEDIA_OCI_MANIFEST));
    assert_eq!(manifest.config, image.config);
    assert_eq!(manifest.config.media_type, MEDIA_OCI_CONFIG);
    assert_eq!(manifest.layers, image.layers);
    assert_eq!(manifest.layers.len(), 2);
    assert_eq!(manifest.layers[0].digest, base.manifest.layers[0].digest);
    assert!(manifest.layers[0].annotations.is_empty());
    assert_eq!(manifest.layers[1].media_type, MEDIA_OCI_LAYER_GZIP);

    // Config: arch/os, deep copy of the runtime config, fixed `created`, diff IDs.
    let config_bytes = blob(&s, &image.config);
    let config: serde_json::Value = serde_json::from_slice(&config_bytes).unwrap();
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["created"], "2019-06-01T21:34:52Z");
    assert_eq!(Some(&config["config"]), base.config.config.as_ref());
    let text = String::from_utf8(config_bytes).unwrap();
    assert!(
        text.starts_with(r#"{"architecture":"amd64","created":"#),
        "{text}"
    );

    // Artifacts layer: deterministic gzip header, sorted regular files, mode 0, no owner/mtime.
    let gz = blob(&s, &image.layers[1]);
    assert_eq!(&gz[..4], &[0x1f, 0x8b, 8, 0], "gzip without FNAME");
    assert_eq!(&gz[4..8], &[0, 0, 0, 0], "gzip mtime 0");
    let mut raw = Vec::new();
    GzDecoder::new(&gz[..]).read_to_end(&mut raw).unwrap();
    let diffs: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(
        diffs,
        [
            base.config.rootfs.diff_ids[0].to_string(),
            Digest::of(&raw).to_string()
        ]
    );
    assert_eq!(image.diff_ids.last(), Some(&Digest::of(&raw)));
    let entries = tar_entries(&raw[..]);
    let expect: Vec<Entry> = vec![
        (
            "usr/install/amd64/systemd-boot.efi".into(),
            0,
            0,
            0,
            0,
            boot,
        ),
        ("usr/install/amd64/vmlinuz.efi".into(), 0, 0, 0, 0, uki),
    ];
    assert!(entries == expect, "artifacts layer entries differ");

    // The docker archive: config, layers, manifest.json, as go-containerregistry writes them.
    let file = std::fs::read(&archive).unwrap();
    let entries = tar_entries(&file[..]);
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    let layer_names: Vec<String> = image
        .layers
        .iter()
        .map(|l| format!("{}.tar.gz", l.digest.hex()))
        .collect();
    assert_eq!(
        names,
        [
            image.config.digest.as_str(),
            &layer_names[0],
            &layer_names[1],
            "manifest.json"
        ]
    );
    for e in &entries {
        assert_eq!((e.1, e.2, e.3, e.4), (0o644, 0, 0, 0), "{}", e.0);
    }
    assert_eq!(Digest::of(&entries[1].5), image.layers[0].digest);
    assert_eq!(Digest::of(&entries[2].5), image.layers[1].digest);
    let want = format!(
        r#"[{{"Config":"{}","RepoTags":["{BASE_REF}"],"Layers":["{}","{}"]}}]"#,
        image.config.digest, layer_names[0], layer_names[1]
    );
    assert_eq!(String::from_utf8(entries[3].5.clone()).unwrap(), want);

    // GNU tar reads it too.
    let out = Command::new("tar")
        .arg("-tvf")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listing.lines().count(), 4, "{listing}");
    assert!(
        listing.lines().all(|l| l.starts_with("-rw-r--r-- 0/0")),
        "{listing}"
    );
    assert!(
        listing.contains(&layer_names[1]) && listing.contains("manifest.json"),
        "{listing}"
    );

    skopeo_checks(&archive, &image, dir.path());
}

/// `skopeo inspect` and `skopeo copy` (which checks layer digests) on the archive.
fn skopeo_checks(archive: &Path, image: &InstallerImage, dir: &Path) {
    if !testsupport::tools::have("skopeo", "skopeo") {
        return;
    }
    let src = format!("docker-archive:{}", archive.display());
    let out = Command::new("skopeo")
        .args(["inspect", &src])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Architecture"], "amd64");
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["Labels"]["alpha.talos.dev/version"], "v1.11.0");
    assert_eq!(v["Layers"].as_array().map(Vec::len), Some(2), "{v}");
    let out = Command::new("skopeo")
        .args(["inspect", "--config", &src])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect --config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let diffs: Vec<String> = image.diff_ids.iter().map(|d| d.to_string()).collect();
    assert_eq!(cfg["rootfs"]["diff_ids"], json!(diffs));

    let dest = format!("oci:{}:installer", dir.join("copied").display());
    let out = Command::new("skopeo")
        .args(["copy", &src, &dest])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn two_builds_are_identical() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_, ia, _, pa) = build_archive(a.path(), 1);
    let (_, ib, _, pb) = build_archive(b.path(), 1);
    assert_eq!(ia, ib);
    assert!(
        std::fs::read(pa).unwrap() == std::fs::read(pb).unwrap(),
        "archives differ"
    );
}

#[test]
fn legacy_two_layer_base_keeps_only_the_tools_layer() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let base = base_image(&s, 2);
    std::fs::write(dir.path().join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(dir.path().join("initramfs.xz"), b"initramfs").unwrap();
    let a = InstallerArtifacts::Legacy {
        kernel: dir.path().join("vmlinuz"),
        initramfs: dir.path().join("initramfs.xz"),
    };
    let image = build_installer(&s, &inputs(&base, &a)).unwrap();
    assert_eq!(image.layers.len(), 2);
    assert_eq!(image.layers[0].digest, base.manifest.layers[0].digest);
    assert_eq!(image.diff_ids[0], base.config.rootfs.diff_ids[0]);
    let mut raw = Vec::new();
    GzDecoder::new(&blob(&s, &image.layers[1])[..])
        .read_to_end(&mut raw)
        .unwrap();
    let names: Vec<String> = tar_entries(&raw[..]).into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        [
            "usr/install/amd64/initramfs.xz",
            "usr/install/amd64/vmlinuz"
        ]
    );
}

#[test]
fn bad_inputs_and_corrupt_blobs_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let (a, _, _) = artifacts(dir.path());

    let mut base = base_image(&s, 1);
    base.config.rootfs.diff_ids.clear();
    let e = build_installer(&s, &inputs(&base, &a)).unwrap_err();
    assert!(
        matches!(e, InstallerError::Base { .. }) && e.to_string().contains("diff_ids"),
        "{e}"
    );

    let mut base = base_image(&s, 1);
    let missing = Digest::of(b"not stored");
    base.manifest.layers[0].digest = missing.clone();
    let e = build_installer(&s, &inputs(&base, &a)).unwrap_err();
    assert!(
        matches!(e, InstallerError::MissingBlob(ref d) if *d == missing),
        "{e}"
    );

    let base = base_image(&s, 1);
    // A blob that rots in the store is caught while the archive is written.
    let image = build_installer(&s, &inputs(&base, &a)).unwrap();
    let info = s.by_sha256(image.layers[1].digest.hex()).unwrap().unwrap();
    let path = s.path(&info.blake3).expect("blob name");
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let e = write_docker_archive(&s, &image, std::io::sink()).unwrap_err();
    // Checked against the blob's BLAKE3 name, which the damaged content no longer hashes to.
    assert!(
        e.to_string()
            .contains(&format!("stored blob {} is damaged", info.blake3)),
        "{e}"
    );
}
