//! OCI and Docker image data types: digests, references, descriptors, manifests, indexes.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::OciError;

/// OCI image index media type.
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest media type.
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config media type.
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer media type.
pub const MEDIA_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer media type.
pub const MEDIA_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI uncompressed layer media type.
pub const MEDIA_OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Docker manifest list media type.
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 2 manifest media type.
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image config media type.
pub const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer media type.
pub const MEDIA_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Cosign simple-signing payload media type.
pub const MEDIA_COSIGN_SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Annotation carrying an image reference in an OCI layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation carrying a cosign signature (base64 DER ECDSA) on a signature layer.
pub const ANNOTATION_COSIGN_SIGNATURE: &str = "dev.cosignproject.cosign/signature";

/// A `sha256:<64 lowercase hex>` content digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", crate::sha256::hex_digest(bytes)))
    }

    /// Builds a digest from a 64-hex SHA-256 value.
    pub fn from_hex(hex: &str) -> Result<Digest, OciError> {
        Digest::from_str(&format!("sha256:{hex}"))
    }

    /// The hex part (without `sha256:`).
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The full `sha256:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The cosign signature tag for this digest: `sha256-<hex>.sig`.
    pub fn signature_tag(&self) -> String {
        format!("sha256-{}.sig", self.hex())
    }
}

impl FromStr for Digest {
    type Err = OciError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = s.len() == 71
            && s.starts_with("sha256:")
            && s[7..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if valid {
            Ok(Digest(s.to_string()))
        } else {
            Err(OciError::InvalidDigest(s.to_string()))
        }
    }
}

impl TryFrom<String> for Digest {
    type Error = OciError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An image reference: `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host (with optional port), e.g. `ghcr.io` or `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path, e.g. `siderolabs/imager`.
    pub repository: String,
    /// Tag, e.g. `v1.11.0`.
    pub tag: Option<String>,
    /// Digest, when pinned.
    pub digest: Option<Digest>,
}

impl Reference {
    /// A reference by tag.
    pub fn tagged(registry: &str, repository: &str, tag: &str) -> Reference {
        Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: Some(tag.to_string()),
            digest: None,
        }
    }

    /// A reference by digest.
    pub fn pinned(registry: &str, repository: &str, digest: Digest) -> Reference {
        Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// `registry/repository` without tag or digest (cosign's docker-reference).
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference::tagged(&self.registry, &self.repository, tag)
    }

    /// The same repository pinned to `digest` (and no tag).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference::pinned(&self.registry, &self.repository, digest)
    }
}

impl FromStr for Reference {
    type Err = OciError;
    /// Parses `host[:port]/path[:tag][@sha256:hex]`; the first component must look like a host
    /// (contain `.` or `:`, or be `localhost`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || OciError::InvalidReference(s.to_string());
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let (registry, path) = rest.split_once('/').ok_or_else(bad)?;
        if registry.is_empty()
            || !(registry.contains('.') || registry.contains(':') || registry == "localhost")
        {
            return Err(bad());
        }
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_string())),
            _ => (path, None),
        };
        let repo_ok = repository.split('/').all(repository_component);
        let tag_ok = tag.as_deref().is_none_or(|t| {
            // `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`: never `.` or `..`.
            t.len() <= 128
                && t.bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
        if !repo_ok || !tag_ok || (tag.is_none() && digest.is_none()) {
            return Err(bad());
        }
        Ok(Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }
}

/// Whether `c` is a repository path component as the distribution spec defines it,
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`: never empty, `.` or `..`.
fn repository_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if !(b.first().is_some_and(|&x| alnum(x)) && b.last().is_some_and(|&x| alnum(x))) {
        return false;
    }
    c.split(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        .filter(|sep| !sep.is_empty())
        .all(|sep| matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-'))
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// A platform (`os/architecture[/variant]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture, e.g. `amd64`.
    pub architecture: String,
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// Variant, e.g. `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Platform (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// A descriptor for `bytes` with `media_type`.
    pub fn for_bytes(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        }
    }

    /// Whether this descriptor points at an index (OCI or Docker manifest list).
    pub fn is_index(&self) -> bool {
        self.media_type == MEDIA_OCI_INDEX || self.media_type == MEDIA_DOCKER_LIST
    }
}

/// An image manifest (OCI or Docker schema 2; same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// Media type (present in OCI and Docker manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config blob.
    pub config: Descriptor,
    /// Layer blobs, base first.
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index (OCI index or Docker manifest list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// Media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Per-platform manifests (or, in an OCI layout's `index.json`, the stored images).
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageIndex {
    /// The manifest for `linux/<arch>`, if the index has one.
    pub fn select(&self, arch: &str) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
    }
}

/// The parts of an image config the factory reads and writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ImageConfig {
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// Creation time (RFC 3339), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The runtime config (Env, Entrypoint, Labels, ...), kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// Layer diff IDs.
    #[serde(default)]
    pub rootfs: RootFs,
    /// Everything else, kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The `rootfs` section of an image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Uncompressed layer digests, base first.
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r: Reference = "ghcr.io/siderolabs/imager:v1.11.0".parse().unwrap();
        assert_eq!(r.registry, "ghcr.io");
        assert_eq!(r.repository, "siderolabs/imager");
        assert_eq!(r.tag.as_deref(), Some("v1.11.0"));
        let d = Digest::of(b"x");
        let p: Reference = format!("127.0.0.1:5000/a/b@{d}").parse().unwrap();
        assert_eq!(p.digest, Some(d.clone()));
        assert_eq!(p.to_string(), format!("127.0.0.1:5000/a/b@{d}"));
        let both: Reference = format!("localhost/a:t@{d}").parse().unwrap();
        for ok in [
            "ghcr.io/siderolabs/sbc-raspberrypi:v0.1.0",
            "ghcr.io/a.b/c_d/e__f/g--h:_t",
            "ghcr.io/siderolabs/gvisor:20231214.0-v1.6.0",
        ] {
            ok.parse::<Reference>()
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        assert_eq!(both.tag.as_deref(), Some("t"));
        for bad in [
            "imager:v1",
            "ghcr.io/",
            "ghcr.io/A/b:t",
            "ghcr.io/a",
            "ghcr.io/a:b c",
            "ghcr.io/../keys:t",
            "ghcr.io/a/../../keys:t",
            "ghcr.io/a/./b:t",
            "ghcr.io/.a:t",
            "ghcr.io/a-:t",
            "ghcr.io/a..b:t",
            "ghcr.io/a___b:t",
            "ghcr.io/a:..",
            "ghcr.io/a:.x",
            "ghcr.io/a:-x",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
    }

    #[test]
    fn digests() {
        let d = Digest::of(b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.signature_tag(), format!("sha256-{}.sig", d.hex()));
        assert!("sha256:ABC".parse::<Digest>().is_err());
        assert!("sha512:00".parse::<Digest>().is_err());
    }
}
