//! Parsers for the catalog files inside the `extensions` and `overlays` images.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::oci::{Digest, Reference};

use super::CatalogError;

/// One `image-digests` line: `<registry>/<repo>:<tag>@sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestLine {
    /// The full line as written (the key of `descriptions.yaml`).
    pub line: String,
    /// The parsed reference (tag and digest both set).
    pub reference: Reference,
}

impl DigestLine {
    /// Repository path without registry, e.g. `siderolabs/amd-ucode`.
    pub fn name(&self) -> &str {
        &self.reference.repository
    }

    /// The pinned digest.
    pub fn digest(&self) -> &Digest {
        // Lines without a digest are rejected by `parse_image_digests`.
        self.reference
            .digest
            .as_ref()
            .unwrap_or_else(|| unreachable!())
    }

    /// `<registry>/<repo>:<tag>` without the digest.
    pub fn tagged(&self) -> String {
        let r = &self.reference;
        match &r.tag {
            Some(t) => format!("{}/{}:{t}", r.registry, r.repository),
            None => format!("{}/{}", r.registry, r.repository),
        }
    }
}

/// Parses `image-digests`: one line per extension; blank lines and lines without `@` are skipped,
/// lines that do not parse as pinned references are errors.
pub fn parse_image_digests(text: &str) -> Result<Vec<DigestLine>, CatalogError> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || !line.contains('@') {
            continue;
        }
        let reference: Reference = line
            .parse()
            .map_err(CatalogError::file(format!("image-digests line {}", n + 1)))?;
        if reference.digest.is_none() {
            return Err(CatalogError::Catalog(format!(
                "image-digests line {}: {line:?} has no digest",
                n + 1
            )));
        }
        out.push(DigestLine {
            line: line.to_string(),
            reference,
        });
    }
    Ok(out)
}

/// Author and description of an extension, from `descriptions.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Description {
    /// Author (empty if absent).
    #[serde(default)]
    pub author: String,
    /// Description (may end with a newline from a block scalar).
    #[serde(default)]
    pub description: String,
}

/// Parses `descriptions.yaml`: a mapping from the full `image-digests` line to its description.
pub fn parse_descriptions(text: &str) -> Result<BTreeMap<String, Description>, CatalogError> {
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let map: Option<BTreeMap<String, Option<Description>>> =
        serde_yaml::from_str(text).map_err(CatalogError::file("descriptions.yaml"))?;
    Ok(map
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

/// One overlay of `overlays.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OverlayLine {
    /// Overlay name, e.g. `rpi_generic`.
    pub name: String,
    /// Full tagged image reference, e.g. `ghcr.io/siderolabs/sbc-raspberrypi:v0.1.0`.
    pub image: String,
    /// Digest of the overlay image.
    pub digest: Digest,
}

impl OverlayLine {
    /// The parsed image reference pinned to the digest.
    pub fn reference(&self) -> Result<Reference, CatalogError> {
        let r: Reference = self.image.parse().map_err(CatalogError::file(format!(
            "overlays.yaml: overlay {}",
            self.name
        )))?;
        Ok(r.with_digest(self.digest.clone()))
    }
}

#[derive(Deserialize)]
struct OverlaysFile {
    #[serde(default)]
    overlays: Vec<OverlayLine>,
}

/// Parses `overlays.yaml` (`overlays:` list of `{name, image, digest}`).
pub fn parse_overlays(text: &str) -> Result<Vec<OverlayLine>, CatalogError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let f: OverlaysFile =
        serde_yaml::from_str(text).map_err(CatalogError::file("overlays.yaml"))?;
    Ok(f.overlays)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn image_digests_lines() {
        let text = format!(
            "ghcr.io/siderolabs/amd-ucode:20230804@{D}\n\n# comment without at sign\nghcr.io/siderolabs/gvisor:20231214.0-v1.6.0@{D}\n"
        );
        let lines = parse_image_digests(&text).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].name(), "siderolabs/amd-ucode");
        assert_eq!(lines[0].tagged(), "ghcr.io/siderolabs/amd-ucode:20230804");
        assert_eq!(lines[1].digest().as_str(), D);
        assert!(parse_image_digests("ghcr.io/x@sha256:zz\n").is_err());
    }

    #[test]
    fn descriptions_and_overlays() {
        let line = format!("ghcr.io/siderolabs/amd-ucode:20230804@{D}");
        let d = parse_descriptions(&format!(
            "{line}:\n  author: Sidero Labs\n  description: |\n    AMD microcode.\n"
        ))
        .unwrap();
        assert_eq!(d[&line].author, "Sidero Labs");
        assert_eq!(d[&line].description, "AMD microcode.\n");
        let o = parse_overlays(&format!(
            "overlays:\n  - name: rpi_generic\n    image: ghcr.io/siderolabs/sbc-raspberrypi:v0.1.0\n    digest: {D}\n"
        ))
        .unwrap();
        assert_eq!(o[0].name, "rpi_generic");
        assert_eq!(
            o[0].reference().unwrap().repository,
            "siderolabs/sbc-raspberrypi"
        );
    }
}
