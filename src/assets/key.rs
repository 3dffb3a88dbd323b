//! The cache key of an asset: SHA-256 over everything that can change its bytes.

use std::collections::BTreeMap;

use crate::catalog::Release;
use crate::imager::builder::BuilderOptions;
use crate::imager::profile::Profile;
use crate::sha256::Sha256;

/// Bumped whenever the builder's output changes for the same inputs; old records then miss
/// and are rebuilt (and later collected).
pub const BUILDER_EPOCH: &str = "image-factory builder epoch 1";

/// A cache key and the input digests it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// 64 lowercase hex characters.
    pub key: String,
    /// Input name → SHA-256 digest (kernel, initramfs, stubs, installer base, extensions).
    pub inputs: BTreeMap<String, String>,
}

/// Computes the key of the asset built from `profile` (enhanced) and `release`.
///
/// Covered: the builder epoch, the schematic ID, the canonical JSON encoding of the enhanced
/// profile (which carries the extension and overlay image digests), the builder settings that
/// shape output bytes, and the SHA-256 of every boot asset and the installer base of the arch.
pub fn cache_key(
    schematic_id: &str,
    profile: &Profile,
    release: &Release,
    opts: &BuilderOptions,
) -> Result<CacheKey, serde_json::Error> {
    let mut inputs = BTreeMap::new();
    if let Some(arch) = release.arches.get(profile.arch.as_str()) {
        for (name, blob) in arch.assets.iter().chain(arch.grub.iter()) {
            inputs.insert(format!("asset/{name}"), format!("sha256:{}", blob.sha256));
        }
        if let Some(base) = &arch.installer_base {
            inputs.insert("installer-base".into(), base.manifest.to_string());
        }
    }
    for ext in &profile.system_extensions {
        inputs.insert(
            format!("extension/{}", ext.name),
            ext.image.manifest.to_string(),
        );
    }
    if let Some(overlay) = &profile.overlay {
        for (arch, image) in &overlay.entry.images {
            inputs.insert(
                format!("overlay/{}/{arch}", overlay.entry.name),
                image.manifest.to_string(),
            );
        }
    }
    let profile_json = serde_json::to_vec(profile)?;
    let mut h = Sha256::new();
    let mut field = |name: &str, value: &[u8]| {
        // Length-prefixed fields: no two different inputs hash the same byte stream.
        h.update(name.as_bytes());
        h.update(&(value.len() as u64).to_be_bytes());
        h.update(value);
    };
    field("epoch", BUILDER_EPOCH.as_bytes());
    field("schematic", schematic_id.as_bytes());
    field("profile", &profile_json);
    field("externalURL", opts.external_url.as_bytes());
    field(
        "initramfsZstdLevel",
        &opts.initramfs_zstd_level.to_be_bytes(),
    );
    for (name, digest) in &inputs {
        field(name, digest.as_bytes());
    }
    Ok(CacheKey {
        key: h.finalize_hex(),
        inputs,
    })
}
