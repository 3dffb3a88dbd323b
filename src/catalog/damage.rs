//! Damaged releases: which blobs a release needs, and the marks left on a release when one of
//! them fails verification (in a build or a scrub).
//!
//! A mark is a small record in the metadata store, so it survives a restart and `doctor`
//! (another process) reads it. While a release is marked, builds from it are refused with the
//! mark's text instead of running on bytes that no longer hash to their names; re-importing
//! the release (which writes the blobs again, since a damaged one is set aside) clears it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::release::{Release, ReleaseStore};
use crate::store::{BlobStore, StoreError};

/// Metadata tree of damage marks, keyed by version tag.
const TREE: &str = "release_damage";
/// Largest manifest read while collecting a release's image blobs.
const MAX_MANIFEST: u64 = 4 << 20;

/// Why a release is marked damaged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Damage {
    /// BLAKE3 name of the blob that failed verification.
    pub blob: String,
    /// What the check found (the verification error's chain, one line).
    pub reason: String,
    /// When it was found (Unix seconds).
    pub at: u64,
}

impl Release {
    /// Every blob the release needs, BLAKE3 name to size: boot assets, GRUB trees, and the
    /// manifests, configs and layers of its images (found through the SHA-256 index; an
    /// image blob that is not stored is not listed).
    pub fn needed_blobs(&self, blobs: &BlobStore) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut out = BTreeMap::new();
        for arch in self.arches.values() {
            for b in arch.assets.values().chain(arch.grub.values()) {
                out.insert(b.blake3.clone(), b.size);
            }
        }
        for b in self.talosctl.iter().flat_map(|t| t.files.values()) {
            out.insert(b.blake3.clone(), b.size);
        }
        let mut manifests: Vec<String> = Vec::new();
        for image in self.image_records() {
            manifests.push(image.digest.hex().to_string());
            manifests.push(image.manifest.hex().to_string());
        }
        let add = |sha: &str, out: &mut BTreeMap<String, u64>| -> Result<(), StoreError> {
            if let Some(info) = blobs.by_sha256(sha)? {
                out.insert(info.blake3, info.size);
            }
            Ok(())
        };
        let mut seen = std::collections::HashSet::new();
        while let Some(sha) = manifests.pop() {
            if !seen.insert(sha.clone()) {
                continue;
            }
            add(&sha, &mut out)?;
            let Ok(Some(bytes)) = blobs.read_sha256(&sha, MAX_MANIFEST) else {
                continue;
            };
            let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            let digests = doc["config"]["digest"].as_str().into_iter().chain(
                ["layers", "manifests"]
                    .iter()
                    .flat_map(|k| doc[*k].as_array().into_iter().flatten())
                    .filter_map(|d| d["digest"].as_str()),
            );
            for d in digests {
                if let Some(hex) = d.strip_prefix("sha256:") {
                    if doc["manifests"].is_array() {
                        manifests.push(hex.to_string());
                    } else {
                        add(hex, &mut out)?;
                    }
                }
            }
        }
        Ok(out)
    }
}

impl ReleaseStore {
    /// Marks release `version` damaged (the first mark stays until the release is imported
    /// again). Durable before it returns.
    pub async fn mark_damaged(&self, version: &str, damage: &Damage) -> Result<(), StoreError> {
        let meta = self.meta();
        let bytes = serde_json::to_vec(damage).map_err(|source| StoreError::Encode {
            what: "release damage mark",
            source,
        })?;
        if meta.put_if_absent(TREE, version.as_bytes(), &bytes)? {
            meta.flush().await?;
        }
        Ok(())
    }

    /// The damage mark of release `version`, if any.
    pub fn damage(&self, version: &str) -> Result<Option<Damage>, StoreError> {
        self.meta()
            .get(TREE, version.as_bytes())?
            .map(|bytes| decode(version, &bytes))
            .transpose()
    }

    /// Every damaged release with its mark, by version tag.
    pub fn damaged(&self) -> Result<BTreeMap<String, Damage>, StoreError> {
        let mut out = BTreeMap::new();
        for (key, bytes) in self.meta().scan(TREE)? {
            let version = String::from_utf8_lossy(&key).into_owned();
            let damage = decode(&version, &bytes)?;
            out.insert(version, damage);
        }
        Ok(out)
    }

    /// Removes the mark of `version` (its blobs were written again). Durable with the next
    /// flush of the metadata store.
    pub(super) fn clear_damage(&self, version: &str) -> Result<(), StoreError> {
        self.meta().remove(TREE, version.as_bytes()).map(|_| ())
    }
}

fn decode(version: &str, bytes: &[u8]) -> Result<Damage, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree: TREE.into(),
        key: version.into(),
        source: Box::new(e),
    })
}
