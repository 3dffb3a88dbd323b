//! Blobs served on behalf of an asset or of an imported release: the manifest, config and
//! layers of a built installer image (its OCI form, which the registry frontend serves) and
//! the blobs of an imported source image. They stream exactly as assets do ([`Assets::open`]):
//! integrity-checked, kept from garbage collection while sent.

use std::io::Read as _;
use std::sync::Arc;

use super::error::AssetError;
use super::pipeline::{Assets, Outcome, Served};
use super::record::AssetRecord;
use crate::oci::{ImageManifest, MEDIA_OCI_MANIFEST};
use crate::store::BlobInfo;

/// Largest intermediate read while looking for an installer's image manifest.
const MAX_MANIFEST: u64 = 256 * 1024;

/// An installer image's OCI manifest: its exact bytes and SHA-256 hex.
#[derive(Debug, Clone)]
pub struct InstallerManifest {
    /// The manifest bytes as stored (their digest is the image's digest).
    pub bytes: Vec<u8>,
    /// SHA-256 hex of `bytes`.
    pub sha256: String,
    /// The decoded manifest.
    pub manifest: ImageManifest,
}

impl Assets {
    /// The OCI manifest of a built installer image (`installer-<arch>.tar`), found among the
    /// build's intermediates: the tarball and this image hold the same config and layers.
    pub async fn installer_manifest(
        &self,
        served: &Served,
    ) -> Result<InstallerManifest, AssetError> {
        let this = self.clone();
        let record = Arc::clone(&served.record);
        tokio::task::spawn_blocking(move || {
            for b in &record.intermediates {
                let Ok(mut file) = this.inner.blobs.open_blob(b) else {
                    continue;
                };
                let size = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
                if size > MAX_MANIFEST {
                    continue;
                }
                let mut bytes = Vec::with_capacity(size as usize);
                file.read_to_end(&mut bytes)
                    .map_err(|source| AssetError::Io {
                        context: format!("reading intermediate blob {b}"),
                        source,
                    })?;
                let hash = blake3::hash(&bytes).to_hex().to_string();
                if hash != *b {
                    // Damaged: set it and its installer aside; the next request rebuilds.
                    let blob = BlobInfo {
                        blake3: b.clone(),
                        sha256: String::new(),
                        size,
                    };
                    let reason = AssetError::BlobChanged {
                        blake3: b.clone(),
                        hash,
                    };
                    this.blob_failed(&derived(&record, &blob, ""), &reason);
                    return Err(AssetError::Gone(b.clone()));
                }
                let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&bytes) else {
                    continue;
                };
                if manifest.media_type.as_deref() == Some(MEDIA_OCI_MANIFEST) {
                    let sha256 = crate::sha256::hex_digest(&bytes);
                    return Ok(InstallerManifest {
                        bytes,
                        sha256,
                        manifest,
                    });
                }
            }
            Err(AssetError::NoInstallerManifest(record.key.clone()))
        })
        .await
        .map_err(AssetError::task("reading an installer manifest"))?
    }

    /// The stored blob with SHA-256 `sha256` (hex), if any.
    pub fn blob_by_sha256(&self, sha256: &str) -> Result<Option<BlobInfo>, AssetError> {
        Ok(self.inner.blobs.by_sha256(sha256)?)
    }

    /// Reads a small stored blob by SHA-256 (hex), refusing more than `limit` bytes.
    pub fn read_small(&self, sha256: &str, limit: u64) -> Result<Option<Vec<u8>>, AssetError> {
        Ok(self.inner.blobs.read_sha256(sha256, limit)?)
    }

    /// `blob`, a part of the asset `served` (an installer image's layer or config), ready for
    /// [`Assets::open`]: a damaged part sets the asset aside (it is rebuilt), and serving it
    /// counts as serving the asset.
    pub fn part(&self, served: &Served, blob: &BlobInfo, content_type: &str) -> Served {
        Served {
            record: Arc::new(derived(&served.record, blob, content_type)),
            outcome: served.outcome,
            verified_now: false,
            touches: true,
        }
    }

    /// `blob` of the imported release `version` (a source image's manifest, config or layer),
    /// ready for [`Assets::open`].
    pub fn release_part(&self, version: &str, blob: &BlobInfo, content_type: &str) -> Served {
        let record = AssetRecord {
            key: String::new(),
            schematic: String::new(),
            version: version.to_string(),
            path: String::new(),
            kind: "source-image".into(),
            arch: String::new(),
            size: 0,
            sha256: String::new(),
            blake3: String::new(),
            content_type: String::new(),
            created: 0,
            inputs: Default::default(),
            intermediates: Vec::new(),
        };
        Served {
            record: Arc::new(derived(&record, blob, content_type)),
            outcome: Outcome::Hit,
            verified_now: false,
            touches: false,
        }
    }
}

/// `parent` with `blob` as its bytes.
fn derived(parent: &AssetRecord, blob: &BlobInfo, content_type: &str) -> AssetRecord {
    AssetRecord {
        size: blob.size,
        sha256: blob.sha256.clone(),
        blake3: blob.blake3.clone(),
        content_type: content_type.to_string(),
        intermediates: Vec::new(),
        ..parent.clone()
    }
}
