//! Tiny builders for OCI test fixtures: tar layers (including malformed ones), images, layouts,
//! oci-archives and docker-archives.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use image_factory::oci::{
    ANNOTATION_REF_NAME, Descriptor, ImageIndex, ImageManifest, MEDIA_OCI_CONFIG, MEDIA_OCI_INDEX,
    MEDIA_OCI_LAYER_GZIP, MEDIA_OCI_LAYER_TAR, MEDIA_OCI_LAYER_ZSTD, MEDIA_OCI_MANIFEST,
};

/// One entry of a test tar.
pub enum E<'a> {
    File(&'a str, &'a [u8]),
    FileMode(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Fifo(&'a str),
    /// A file with a PAX `SCHILY.xattr.security.selinux` label.
    Labeled(&'a str, &'a [u8], &'a str),
}

/// Writes `name` straight into the header (bypassing the tar crate's path checks).
fn raw_header(name: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    let bytes = name.as_bytes();
    assert!(bytes.len() < 100, "test names must be short");
    {
        let gnu = h.as_gnu_mut().expect("gnu header");
        gnu.name = [0; 100];
        gnu.name[..bytes.len()].copy_from_slice(bytes);
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h
}

/// Builds an uncompressed tar from `entries`.
pub fn tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (name, kind, data, mode, link): (&str, tar::EntryType, &[u8], u32, Option<&str>) =
            match e {
                E::File(n, d) => (n, tar::EntryType::Regular, d, 0o644, None),
                E::FileMode(n, d, m) => (n, tar::EntryType::Regular, d, *m, None),
                E::Dir(n) => (n, tar::EntryType::Directory, b"", 0o755, None),
                E::Symlink(n, t) => (n, tar::EntryType::Symlink, b"", 0o777, Some(t)),
                E::Hardlink(n, t) => (n, tar::EntryType::Link, b"", 0o644, Some(t)),
                E::Fifo(n) => (n, tar::EntryType::Fifo, b"", 0o644, None),
                E::Labeled(n, d, label) => {
                    let mut value = label.as_bytes().to_vec();
                    value.push(0);
                    b.append_pax_extensions([("SCHILY.xattr.security.selinux", value.as_slice())])
                        .expect("pax");
                    (n, tar::EntryType::Regular, d, 0o644, None)
                }
            };
        let mut h = raw_header(name, kind, data.len() as u64, mode);
        if let Some(t) = link {
            let gnu = h.as_gnu_mut().expect("gnu header");
            gnu.linkname = [0; 100];
            gnu.linkname[..t.len()].copy_from_slice(t.as_bytes());
        }
        h.set_cksum();
        b.append(&h, data).expect("append");
    }
    b.into_inner().expect("finish tar")
}

/// Gzip-compresses `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// Zstd-compresses `data`.
pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd")
}

/// A test image: its blobs and descriptors.
pub struct Image {
    pub manifest: Vec<u8>,
    pub manifest_desc: Descriptor,
    pub config: Vec<u8>,
    pub layers: Vec<(Descriptor, Vec<u8>)>,
}

impl Image {
    /// An OCI image of `layers` (already compressed or not; media type guessed by magic).
    pub fn new(layers: Vec<Vec<u8>>) -> Image {
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .expect("config");
        let layers: Vec<(Descriptor, Vec<u8>)> = layers
            .into_iter()
            .map(|l| {
                let mt = if l.starts_with(&[0x1f, 0x8b]) {
                    MEDIA_OCI_LAYER_GZIP
                } else if l.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                    MEDIA_OCI_LAYER_ZSTD
                } else {
                    MEDIA_OCI_LAYER_TAR
                };
                (Descriptor::for_bytes(mt, &l), l)
            })
            .collect();
        let m = ImageManifest {
            schema_version: 2,
            media_type: Some(MEDIA_OCI_MANIFEST.into()),
            config: Descriptor::for_bytes(MEDIA_OCI_CONFIG, &config),
            layers: layers.iter().map(|(d, _)| d.clone()).collect(),
            annotations: BTreeMap::new(),
        };
        let manifest = serde_json::to_vec(&m).expect("manifest");
        Image {
            manifest_desc: Descriptor::for_bytes(MEDIA_OCI_MANIFEST, &manifest),
            manifest,
            config,
            layers,
        }
    }

    /// Every blob of the image.
    pub fn blobs(&self) -> Vec<Vec<u8>> {
        let mut v = vec![self.manifest.clone(), self.config.clone()];
        v.extend(self.layers.iter().map(|(_, b)| b.clone()));
        v
    }

    /// The layer descriptors.
    pub fn layer_descs(&self) -> Vec<Descriptor> {
        self.layers.iter().map(|(d, _)| d.clone()).collect()
    }
}

/// Writes an OCI layout directory holding `images`, each named by its ref names.
pub fn write_layout(dir: &Path, images: &[(&Image, &[&str])]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
    let mut manifests = Vec::new();
    for (img, names) in images {
        for b in img.blobs() {
            let d = image_factory::oci::Digest::of(&b);
            std::fs::write(blobs.join(d.hex()), &b).expect("write blob");
        }
        for n in names.iter() {
            let mut d = img.manifest_desc.clone();
            d.annotations
                .insert(ANNOTATION_REF_NAME.into(), n.to_string());
            manifests.push(d);
        }
    }
    let index = ImageIndex {
        schema_version: 2,
        media_type: Some(MEDIA_OCI_INDEX.into()),
        manifests,
        annotations: BTreeMap::new(),
    };
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("index"),
    )
    .expect("write");
}

/// Tars a directory tree (as `tar -C dir -cf out .` would, files sorted).
pub fn tar_dir(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(out).expect("create"));
    b.append_dir_all(".", dir).expect("tar dir");
    b.finish().expect("finish");
}

/// Writes a docker-archive: `manifest.json` + `<hex>.json` config + `<id>/layer.tar` layers
/// (uncompressed layers' digests are their diff IDs).
pub fn write_docker_archive(out: &Path, layers: &[Vec<u8>], tags: &[&str]) -> Vec<u8> {
    use sha2::Digest as _;
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", hex::encode(sha2::Sha256::digest(l))))
        .collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .expect("config");
    let config_name = format!("{}.json", hex::encode(sha2::Sha256::digest(&config)));
    let layer_names: Vec<String> = (0..layers.len())
        .map(|i| format!("layer{i}/layer.tar"))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name, "RepoTags": tags, "Layers": layer_names
    }]))
    .expect("manifest");
    let mut b = tar::Builder::new(std::fs::File::create(out).expect("create"));
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).expect("append");
    };
    add("manifest.json", &manifest);
    add(&config_name, &config);
    for (n, l) in layer_names.iter().zip(layers) {
        add(n, l);
    }
    b.finish().expect("finish");
    config
}
