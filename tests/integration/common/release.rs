//! A minimal signed Talos release written as an OCI layout directory — a stand-in with fake
//! boot-asset bytes for import tests that need no Debian inputs (the full synthetic release
//! with a real kernel is the test kit, `image-factory dev synth-release`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use image_factory::oci::{
    ANNOTATION_REF_NAME, Descriptor, Digest, ImageIndex, MEDIA_OCI_CONFIG, MEDIA_OCI_INDEX,
    MEDIA_OCI_LAYER_GZIP, MEDIA_OCI_LAYER_TAR, MEDIA_OCI_MANIFEST, Platform,
};
use image_factory::synth::Tree;
use image_factory::synth::sigstore::{KeylessSign, TestSigstore};
use image_factory::trust::{SignatureImage, SigningKey};

/// A file in an image layer: path, mode, content.
pub type File = (String, u32, Vec<u8>);

/// Builds a layout directory image by image.
pub struct LayoutBuilder {
    /// Layout root.
    pub dir: PathBuf,
    /// The key that signs every image.
    pub key: SigningKey,
    roots: Vec<Descriptor>,
    /// Top-level digest of each image by reference.
    pub digests: BTreeMap<String, Digest>,
    /// Layer descriptors of each image by reference.
    pub layers: BTreeMap<String, Vec<Descriptor>>,
    /// Sign keyless with this Sigstore stack and these options instead of with `key`.
    pub keyless: Option<(TestSigstore, KeylessSign)>,
    /// With `keyless`: attach Sigstore bundles as OCI referrers instead of `.sig` tags.
    pub bundles: bool,
}

fn tar_gz(files: &[File]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    {
        let mut b = tar::Builder::new(&mut gz);
        for (path, mode, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, data.as_slice())
                .expect("tar append");
        }
        b.finish().expect("tar finish");
    }
    gz.finish().expect("gzip finish")
}

impl LayoutBuilder {
    /// A new, empty layout in `dir`.
    pub fn new(dir: &Path, key: SigningKey) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
        std::fs::write(dir.join("oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}")
            .expect("write");
        LayoutBuilder {
            dir: dir.to_path_buf(),
            key,
            roots: Vec::new(),
            digests: BTreeMap::new(),
            layers: BTreeMap::new(),
            keyless: None,
            bundles: false,
        }
    }

    /// Writes a blob and returns its descriptor.
    pub fn blob(&mut self, media_type: &str, bytes: &[u8]) -> Descriptor {
        let d = Descriptor::for_bytes(media_type, bytes);
        std::fs::write(self.blob_path(&d.digest), bytes).expect("write blob");
        d
    }

    /// Path of a blob file.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.hex())
    }

    /// Adds a single-layer linux/amd64 image inside an index, signed unless `signed` is false;
    /// `reference` is the upstream reference (`ghcr.io/...:tag` or `...@digest` is computed).
    pub fn image(&mut self, repo: &str, tag: Option<&str>, files: &[File], signed: bool) -> Digest {
        let layer = tar_gz(files);
        self.image_layer(repo, tag, MEDIA_OCI_LAYER_GZIP, &layer, signed)
    }

    /// Like [`LayoutBuilder::image`], with `tree` (symlinks and all) as an uncompressed layer.
    pub fn image_tree(
        &mut self,
        repo: &str,
        tag: Option<&str>,
        tree: &Tree,
        signed: bool,
    ) -> Digest {
        let layer = tree.to_tar().expect("tar of tree");
        self.image_layer(repo, tag, MEDIA_OCI_LAYER_TAR, &layer, signed)
    }

    fn image_layer(
        &mut self,
        repo: &str,
        tag: Option<&str>,
        media_type: &str,
        layer: &[u8],
        signed: bool,
    ) -> Digest {
        let layer_d = self.blob(media_type, layer);
        let config = r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#;
        let config_d = self.blob(MEDIA_OCI_CONFIG, config.as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "config": config_d,
            "layers": [layer_d],
        });
        let manifest_bytes = serde_json::to_vec(&manifest).expect("json");
        let mut manifest_d = self.blob(MEDIA_OCI_MANIFEST, &manifest_bytes);
        manifest_d.platform = Some(Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
        });
        let index = ImageIndex {
            schema_version: 2,
            media_type: Some(MEDIA_OCI_INDEX.into()),
            manifests: vec![manifest_d],
            annotations: BTreeMap::new(),
        };
        let index_bytes = serde_json::to_vec(&index).expect("json");
        let index_d = self.blob(MEDIA_OCI_INDEX, &index_bytes);
        let name = format!("ghcr.io/{repo}");
        let reference = match tag {
            Some(t) => format!("{name}:{t}"),
            None => format!("{name}@{}", index_d.digest),
        };
        self.root(&index_d, &reference);
        if signed && self.bundles {
            self.attach_bundle(repo, &index_d);
        } else if signed {
            self.sign(repo, &index_d.digest, &self.key.clone());
        }
        self.digests
            .insert(reference.clone(), index_d.digest.clone());
        self.layers.insert(reference, vec![layer_d]);
        index_d.digest
    }

    /// Adds a cosign signature of `digest` in `repo`, made with `key`.
    pub fn sign(&mut self, repo: &str, digest: &Digest, key: &SigningKey) {
        self.sign_as(repo, &format!("ghcr.io/{repo}"), digest, key);
    }

    /// Adds a cosign signature of `digest` in `repo` whose payload names `signed_as` (the
    /// docker-reference), made with `key`.
    pub fn sign_as(&mut self, repo: &str, signed_as: &str, digest: &Digest, key: &SigningKey) {
        let name = format!("ghcr.io/{repo}");
        let sig = match &self.keyless {
            Some((stack, opts)) => stack.sign_image(None, signed_as, digest, opts),
            None => SignatureImage::sign(key, signed_as, digest),
        };
        self.blob(&sig.payload_descriptor.media_type.clone(), &sig.payload);
        self.blob(MEDIA_OCI_CONFIG, &sig.config);
        let d = self.blob(MEDIA_OCI_MANIFEST, &sig.manifest);
        self.root(&d, &format!("{name}:{}", sig.tag));
    }

    /// Attaches a keyless Sigstore bundle to `subject` as a referrer (referrers tag schema).
    pub fn attach_bundle(&mut self, repo: &str, subject: &Descriptor) {
        let name = format!("ghcr.io/{repo}");
        let (stack, opts) = self.keyless.clone().expect("bundles need a Sigstore stack");
        let r = stack.bundle_referrer(&name, subject, &opts);
        for (bytes, d) in [&r.bundle, &r.config, &r.manifest, &r.index] {
            self.blob(&d.media_type.clone(), bytes);
        }
        self.root(&r.index.1, &format!("{name}:{}", r.tag));
    }

    /// Adds an `index.json` entry `to` naming what the entry `from` names.
    pub fn alias(&mut self, from: &str, to: &str) {
        let d = self
            .roots
            .iter()
            .find(|d| d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) == Some(from))
            .cloned()
            .unwrap_or_else(|| panic!("no root {from}"));
        self.root(&d, to);
    }

    /// Drops every `index.json` entry named `reference` (e.g. to remove a signature).
    pub fn remove_root(&mut self, reference: &str) {
        self.roots.retain(|d| {
            d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) != Some(reference)
        });
    }

    fn root(&mut self, d: &Descriptor, reference: &str) {
        let mut d = d.clone();
        d.platform = None;
        d.annotations
            .insert(ANNOTATION_REF_NAME.into(), reference.into());
        self.roots.push(d);
    }

    /// Writes `index.json`.
    pub fn finish(&self) {
        let index = ImageIndex {
            schema_version: 2,
            media_type: Some(MEDIA_OCI_INDEX.into()),
            manifests: self.roots.clone(),
            annotations: BTreeMap::new(),
        };
        let mut f = std::fs::File::create(self.dir.join("index.json")).expect("index");
        f.write_all(&serde_json::to_vec(&index).expect("json"))
            .expect("write");
    }
}

/// What `mini_release` wrote.
pub struct Mini {
    /// The builder (layout dir, digests, key).
    pub layout: LayoutBuilder,
    /// Contents of `usr/install/amd64/vmlinuz`.
    pub vmlinuz: Vec<u8>,
}

/// Writes a release `version` with three extensions (`kmod-test`, `fw-test`, `svc-test`), an
/// overlay catalog with one overlay, and an imager whose `vmlinuz` has `vmlinuz_size` bytes.
pub fn mini_release(dir: &Path, version: &str, key: SigningKey, vmlinuz_size: usize) -> Mini {
    mini_release_signed(dir, version, key, None, false, vmlinuz_size)
}

/// Like [`mini_release`], signed keyless by `keyless` instead of with `key` when given: in
/// `.sig` tags, or as Sigstore bundle referrers when `bundles`.
pub fn mini_release_signed(
    dir: &Path,
    version: &str,
    key: SigningKey,
    keyless: Option<(TestSigstore, KeylessSign)>,
    bundles: bool,
    vmlinuz_size: usize,
) -> Mini {
    let mut b = LayoutBuilder::new(dir, key);
    b.bundles = bundles;
    b.keyless = keyless;
    let vmlinuz: Vec<u8> = (0..vmlinuz_size).map(|i| (i * 7 % 251) as u8).collect();
    let f = |p: &str, m: u32, d: &[u8]| (p.to_string(), m, d.to_vec());
    b.image(
        "siderolabs/imager",
        Some(version),
        &[
            f("usr/install/amd64/vmlinuz", 0o644, &vmlinuz),
            f("usr/install/amd64/initramfs.xz", 0o644, b"initramfs"),
            f("usr/install/amd64/systemd-stub.efi", 0o644, b"stub"),
            f("usr/install/amd64/systemd-boot.efi", 0o644, b"boot"),
            f("usr/lib/grub/i386-pc/boot.img", 0o644, b"bootimg"),
            f("usr/bin/imager", 0o755, b"#!/bin/sh\n"),
        ],
        true,
    );
    b.image(
        "siderolabs/installer-base",
        Some(version),
        &[f("usr/bin/installer", 0o755, b"#!/bin/sh\n")],
        true,
    );
    let mut lines = String::new();
    let mut descriptions = String::new();
    for name in ["kmod-test", "fw-test", "svc-test"] {
        let manifest = format!(
            "version: v1alpha1\nmetadata:\n  name: {name}\n  version: 1.0.0\n  author: Test Kit\n  description: {name} extension\n  compatibility:\n    talos:\n      version: '>= v1.10.0'\n"
        );
        let d = b.image(
            &format!("siderolabs/{name}"),
            None,
            &[
                f("manifest.yaml", 0o644, manifest.as_bytes()),
                f(
                    &format!("rootfs/usr/local/share/{name}/data"),
                    0o644,
                    name.as_bytes(),
                ),
            ],
            true,
        );
        let line = format!("ghcr.io/siderolabs/{name}:1.0.0@{d}");
        descriptions.push_str(&format!(
            "{line}:\n  author: Test Kit\n  description: |\n    The {name} extension.\n"
        ));
        lines.push_str(&line);
        lines.push('\n');
    }
    b.image(
        "siderolabs/extensions",
        Some(version),
        &[
            f("image-digests", 0o644, lines.as_bytes()),
            f("descriptions.yaml", 0o644, descriptions.as_bytes()),
        ],
        true,
    );
    let overlay = b.image(
        "siderolabs/sbc-test",
        None,
        &[f("profiles/test.yaml", 0o644, b"arch: arm64\n")],
        true,
    );
    let overlays = format!(
        "overlays:\n  - name: test\n    image: ghcr.io/siderolabs/sbc-test:v0.1.0\n    digest: {overlay}\n"
    );
    b.image(
        "siderolabs/overlays",
        Some(version),
        &[f("overlays.yaml", 0o644, overlays.as_bytes())],
        true,
    );
    b.finish();
    Mini { layout: b, vmlinuz }
}
