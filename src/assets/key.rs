//! The cache key of an asset: SHA-256 over everything that can change its bytes.

use std::collections::BTreeMap;

use crate::catalog::{BlobRef, Release};
use crate::imager::builder::BuilderOptions;
use crate::imager::profile::Profile;
use crate::sha256::Sha256;

/// Bumped whenever the builder's output changes for the same inputs; old records then miss
/// and are rebuilt (and later collected). 2: xz outputs in `XzWriter` blocks. 3: `.zst`
/// outputs as data frames and written zero frames. 4: BOOT XFS with the target config's
/// `rmapbt` (and `nrext64` when the release's GRUB reads it). 5: `extensions.yaml` in the
/// initramfs written by the shared go-yaml v3 emitter (nested mappings of sequence items at the
/// next multiple of four, as go-yaml indents them).
pub const BUILDER_EPOCH: &str = "image-factory builder epoch 5";

/// A cache key and the input digests it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// 64 lowercase hex characters.
    pub key: String,
    /// Input name → SHA-256 digest (kernel, initramfs, stubs, GRUB trees, installer base,
    /// extensions).
    pub inputs: BTreeMap<String, String>,
}

/// One digest for a release's GRUB module trees: SHA-256 over each file's length-prefixed path
/// and SHA-256, in path order. One input instead of one per module (~600) keeps every record
/// small, and with it the per-request work of reading and verifying records.
fn grub_tree_digest(grub: &BTreeMap<String, BlobRef>) -> String {
    let mut h = Sha256::new();
    for (path, blob) in grub {
        h.update(&(path.len() as u64).to_be_bytes());
        h.update(path.as_bytes());
        h.update(blob.sha256.as_bytes());
    }
    format!("sha256:{}", h.finalize_hex())
}

/// Computes the key of the asset built from `profile` (enhanced) and `release`.
///
/// Covered: the builder epoch, the schematic ID, the canonical JSON encoding of the enhanced
/// profile (which carries the extension and overlay image digests), the builder settings that
/// shape output bytes, the SHA-256 of every boot asset and the installer base of the arch, and
/// one digest of the arch's GRUB trees; for Secure Boot profiles, the SHA-256 of the signing
/// certificate and the PCR public key.
pub fn cache_key(
    schematic_id: &str,
    profile: &Profile,
    release: &Release,
    opts: &BuilderOptions,
) -> Result<CacheKey, serde_json::Error> {
    let mut inputs = BTreeMap::new();
    if let Some(arch) = release.arches.get(profile.arch.as_str()) {
        for (name, blob) in &arch.assets {
            inputs.insert(format!("asset/{name}"), format!("sha256:{}", blob.sha256));
        }
        if !arch.grub.is_empty() {
            inputs.insert("grub-tree".into(), grub_tree_digest(&arch.grub));
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
    // The factory identity (named "externalURL" in the hash since before clusters, so a
    // standalone node's keys did not change).
    field("externalURL", opts.factory_url.as_bytes());
    field(
        "initramfsZstdLevel",
        &opts.initramfs_zstd_level.to_be_bytes(),
    );
    // Thread counts change speed, never bytes: left out.
    let levels = crate::imager::formats::CompressionLevels {
        threads: 0,
        ..opts.compression
    };
    field("compression", &serde_json::to_vec(&levels)?);
    // A Secure Boot asset is signed: rotating the keys must never serve the old signature.
    if profile.secureboot
        && let Some(keys) = &opts.secure_boot
    {
        field("secureBootCertificate", keys.fingerprint().as_bytes());
        field("secureBootPcrKey", keys.pcr_public_pkcs1());
    }
    for (name, digest) in &inputs {
        field(name, digest.as_bytes());
    }
    Ok(CacheKey {
        key: h.finalize_hex(),
        inputs,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::catalog::{ArchRelease, Signatures, Version};
    use crate::imager::profile::{Arch, OutputKind};

    fn blob(sha256: &str) -> BlobRef {
        BlobRef {
            blake3: "b".repeat(64),
            sha256: sha256.into(),
            size: 1,
            mode: 0o644,
        }
    }

    fn release(kernel_sha: &str) -> Release {
        release_with_grub(kernel_sha, "cc")
    }

    fn release_with_grub(kernel_sha: &str, module_sha: &str) -> Release {
        let mut arch = ArchRelease::default();
        arch.assets.insert("vmlinuz".into(), blob(kernel_sha));
        arch.grub.insert("i386-pc/boot.img".into(), blob("dd"));
        arch.grub.insert("i386-pc/xfs.mod".into(), blob(module_sha));
        Release {
            version: "v1.11.0".into(),
            imported_at: "2026-01-01T00:00:00Z".into(),
            source: "test".into(),
            signatures: Signatures::Skipped,
            partial: false,
            arches: [(Arch::Amd64, arch)].into_iter().collect(),
            extensions: vec![],
            overlays: vec![],
            catalogs: Vec::new(),
            talosctl: None,
            revision: None,
        }
    }

    fn profile() -> Profile {
        let v = Version::parse_strict("v1.11.0").unwrap();
        Profile::new(Arch::Amd64, "metal", false, v, OutputKind::Initramfs)
    }

    fn opts() -> BuilderOptions {
        BuilderOptions {
            factory_url: "http://f/".into(),
            scratch: PathBuf::from("/tmp"),
            initramfs_zstd_level: 18,
            compression: Default::default(),
            tools: Default::default(),
            secure_boot: None,
        }
    }

    #[test]
    fn every_input_that_shapes_bytes_changes_the_key() {
        let key = |id: &str, p: &Profile, r: &Release, o: &BuilderOptions| {
            cache_key(id, p, r, o).unwrap().key
        };
        let base = key("s", &profile(), &release("aa"), &opts());
        assert_eq!(base.len(), 64);
        assert_eq!(
            base,
            key("s", &profile(), &release("aa"), &opts()),
            "not stable"
        );

        let mut others = vec![
            key("t", &profile(), &release("aa"), &opts()),
            key("s", &profile(), &release("ab"), &opts()),
            key("s", &profile(), &release_with_grub("aa", "ce"), &opts()),
        ];
        let mut p = profile();
        p.customization.extra_kernel_args.push("x=1".into());
        others.push(key("s", &p, &release("aa"), &opts()));
        let mut p = profile();
        p.arch = Arch::Arm64;
        others.push(key("s", &p, &release("aa"), &opts()));
        let mut o = opts();
        o.factory_url = "http://g/".into();
        others.push(key("s", &profile(), &release("aa"), &o));
        let mut o = opts();
        o.initramfs_zstd_level = 3;
        others.push(key("s", &profile(), &release("aa"), &o));
        let mut o = opts();
        o.compression.zstd = 19;
        others.push(key("s", &profile(), &release("aa"), &o));
        // Worker threads do not shape bytes.
        let mut o = opts();
        o.compression.threads = 7;
        assert_eq!(base, key("s", &profile(), &release("aa"), &o));
        // The scratch directory does not shape bytes.
        let mut o = opts();
        o.scratch = PathBuf::from("/elsewhere");
        assert_eq!(base, key("s", &profile(), &release("aa"), &o));

        let n = others.len();
        others.push(base.clone());
        others.sort();
        others.dedup();
        assert_eq!(others.len(), n + 1, "two different inputs share a key");
        let inputs = cache_key("s", &profile(), &release("aa"), &opts())
            .unwrap()
            .inputs;
        assert_eq!(inputs["asset/vmlinuz"], "sha256:aa");
        // the GRUB modules count as one input
        assert_eq!(inputs.len(), 2, "{inputs:?}");
        assert!(inputs["grub-tree"].starts_with("sha256:"));
        // a module moved to another path is another tree
        let mut moved = release("aa");
        let arch = moved.arches.get_mut("amd64").unwrap();
        let m = arch.grub.remove("i386-pc/xfs.mod").unwrap();
        arch.grub.insert("i386-pc/xfs2.mod".into(), m);
        assert_ne!(base, key("s", &profile(), &moved, &opts()));
    }
}
