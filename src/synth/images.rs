//! Writes multi-arch OCI images and their cosign signatures into a bundle.

use std::collections::BTreeMap;
use std::io::Write;

use flate2::Compression;

use super::KitError;
use super::sigstore::{KeylessSign, TestSigstore};
use super::tree::{SOURCE_DATE_EPOCH, Tree};
use crate::oci::{
    BundleWriter, Descriptor, Digest, ImageConfig, ImageIndex, ImageManifest, MEDIA_OCI_CONFIG,
    MEDIA_OCI_INDEX, MEDIA_OCI_LAYER_GZIP, MEDIA_OCI_MANIFEST, Platform, RootFs,
};
use crate::trust::{SignatureImage, SigningKey};

/// The registry every kit reference names.
pub const REGISTRY: &str = "ghcr.io";

/// A compressed layer ready to go into a bundle.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Gzip bytes.
    pub blob: Vec<u8>,
    /// Descriptor of `blob`.
    pub descriptor: Descriptor,
    /// SHA-256 of the uncompressed tar.
    pub diff_id: Digest,
}

impl Layer {
    /// Tars and gzips `tree` (`fast` = gzip level 1, for incompressible padding).
    pub fn from_tree(tree: &Tree, fast: bool) -> Result<Layer, KitError> {
        let tar = tree.to_tar()?;
        let diff_id = Digest::of(&tar);
        let level = if fast {
            Compression::fast()
        } else {
            Compression::default()
        };
        // flate2's GzEncoder writes mtime 0 and no file name: deterministic.
        let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(tar.len() / 2), level);
        gz.write_all(&tar)
            .map_err(|e| KitError::io("gzip layer", e))?;
        let blob = gz.finish().map_err(|e| KitError::io("gzip layer", e))?;
        let descriptor = Descriptor::for_bytes(MEDIA_OCI_LAYER_GZIP, &blob);
        Ok(Layer {
            blob,
            descriptor,
            diff_id,
        })
    }
}

/// An image built into the bundle.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// `registry/repository` (cosign's docker-reference).
    pub name: String,
    /// The tag.
    pub tag: String,
    /// Descriptor of the image index.
    pub index: Descriptor,
    /// Descriptor of the signature manifest (at tag `sha256-<hex>.sig`).
    pub signature: Descriptor,
}

impl BuiltImage {
    /// `registry/repository:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }

    /// `registry/repository:tag@sha256:…` (the catalog line form).
    pub fn pinned(&self) -> String {
        format!("{}:{}@{}", self.name, self.tag, self.index.digest)
    }
}

/// Writes images (one index of per-arch manifests each) and signs them.
pub struct ImageWriter<'a> {
    /// The bundle.
    pub bundle: &'a mut BundleWriter,
    /// The key every image is signed with.
    pub key: &'a SigningKey,
    /// The Sigstore stack that also signs every image keyless, if any.
    pub sigstore: Option<&'a TestSigstore>,
    /// With `sigstore`: attach the keyless signatures as Sigstore bundle referrers instead of
    /// `.sig` layers.
    pub bundles: bool,
    /// Architectures (one manifest each).
    pub arches: &'a [String],
    /// Every image written, in order.
    pub images: Vec<BuiltImage>,
}

/// Runtime config of an image (`Entrypoint`, `Env`, `Labels`).
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Environment (`K=V`); `TARGETARCH` is added per arch when `target_arch_env`.
    pub env: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Add `TARGETARCH=<arch>` to the environment.
    pub target_arch_env: bool,
}

impl ImageWriter<'_> {
    /// Writes `siderolabs/<repo>:<tag>` with `layers` (base first; the same layers for every
    /// arch), signs the index and lists both in the bundle. An image already written (same
    /// repository and tag) is returned as is.
    pub fn image(
        &mut self,
        repo: &str,
        tag: &str,
        layers: &[Layer],
        runtime: &RuntimeConfig,
    ) -> Result<BuiltImage, KitError> {
        let name = format!("{REGISTRY}/{repo}");
        if let Some(existing) = self.images.iter().find(|i| i.name == name && i.tag == tag) {
            return Ok(existing.clone());
        }
        for l in layers {
            self.bundle.add_blob(&l.descriptor, l.blob.as_slice())?;
        }
        let mut manifests = Vec::new();
        for arch in self.arches {
            let mut env = runtime.env.clone();
            if runtime.target_arch_env {
                env.push(format!("TARGETARCH={arch}"));
            }
            let mut rc = serde_json::Map::new();
            if !env.is_empty() {
                rc.insert("Env".into(), serde_json::json!(env));
            }
            if !runtime.entrypoint.is_empty() {
                rc.insert("Entrypoint".into(), serde_json::json!(runtime.entrypoint));
            }
            if !runtime.labels.is_empty() {
                rc.insert("Labels".into(), serde_json::json!(runtime.labels));
            }
            let created = epoch_rfc3339();
            let mut extra = BTreeMap::new();
            extra.insert(
                "history".to_string(),
                serde_json::Value::Array(
                    layers
                        .iter()
                        .map(|_| {
                            serde_json::json!({"created": created, "created_by": "image-factory test kit"})
                        })
                        .collect(),
                ),
            );
            let config = ImageConfig {
                architecture: arch.clone(),
                os: "linux".into(),
                created: Some(created.into()),
                config: Some(serde_json::Value::Object(rc)),
                rootfs: RootFs {
                    kind: "layers".into(),
                    diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
                },
                extra,
            };
            let config_bytes = serde_json::to_vec(&config).expect("config serializes");
            let config_desc = self.bundle.add_bytes(MEDIA_OCI_CONFIG, &config_bytes)?;
            let manifest = ImageManifest {
                schema_version: 2,
                media_type: Some(MEDIA_OCI_MANIFEST.into()),
                config: config_desc,
                layers: layers.iter().map(|l| l.descriptor.clone()).collect(),
                annotations: BTreeMap::new(),
            };
            let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest serializes");
            let mut desc = self.bundle.add_bytes(MEDIA_OCI_MANIFEST, &manifest_bytes)?;
            desc.platform = Some(Platform {
                architecture: arch.clone(),
                os: "linux".into(),
                variant: None,
            });
            manifests.push(desc);
        }
        let index = ImageIndex {
            schema_version: 2,
            media_type: Some(MEDIA_OCI_INDEX.into()),
            manifests,
            annotations: BTreeMap::new(),
        };
        let index_bytes = serde_json::to_vec(&index).expect("index serializes");
        let index_desc = self.bundle.add_bytes(MEDIA_OCI_INDEX, &index_bytes)?;
        let sig = match self.sigstore {
            Some(stack) if self.bundles => {
                let r = stack.bundle_referrer(&name, &index_desc, &KeylessSign::default());
                for (bytes, d) in [&r.bundle, &r.config, &r.manifest, &r.index] {
                    self.bundle.add_blob(d, bytes.as_slice())?;
                }
                self.bundle
                    .add_root(&r.index.1, Some(format!("{name}:{}", r.tag)));
                SignatureImage::sign(self.key, &name, &index_desc.digest)
            }
            Some(stack) => stack.sign_image(
                Some(self.key),
                &name,
                &index_desc.digest,
                &KeylessSign::default(),
            ),
            None => SignatureImage::sign(self.key, &name, &index_desc.digest),
        };
        self.bundle
            .add_blob(&sig.config_descriptor, sig.config.as_slice())?;
        self.bundle
            .add_blob(&sig.payload_descriptor, sig.payload.as_slice())?;
        self.bundle
            .add_blob(&sig.manifest_descriptor, sig.manifest.as_slice())?;
        self.bundle
            .add_root(&index_desc, Some(format!("{name}:{tag}")));
        self.bundle.add_root(
            &sig.manifest_descriptor,
            Some(format!("{name}:{}", sig.tag)),
        );
        let built = BuiltImage {
            name,
            tag: tag.to_string(),
            index: index_desc,
            signature: sig.manifest_descriptor,
        };
        self.images.push(built.clone());
        Ok(built)
    }
}

/// Deterministic pseudo-random bytes (SplitMix64 seeded from SHA-256 of `seed`): incompressible
/// padding that is the same on every run.
pub fn pseudo_random(seed: &str, len: usize) -> Vec<u8> {
    let h = Digest::of(seed.as_bytes());
    let mut state = u64::from_str_radix(&h.hex()[..16], 16).expect("hex");
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `SOURCE_DATE_EPOCH` as RFC 3339, for configs.
pub fn epoch_rfc3339() -> &'static str {
    debug_assert_eq!(SOURCE_DATE_EPOCH, 1_559_424_892);
    "2019-06-01T21:34:52Z"
}
