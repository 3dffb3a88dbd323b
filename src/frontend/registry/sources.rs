//! The imported source images (`siderolabs/imager`, `installer-base`, extensions, overlays)
//! served by their upstream names, tags and digests, byte-identical to what was imported: the
//! mirror side of `ghcr.io`.

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::response::Response;

use super::error::RegistryError;
use super::installer::Manifest;
use super::respond;
use crate::catalog::{ImageRecord, Release};
use crate::frontend::http::AppState;
use crate::oci::{Digest, ImageManifest, MEDIA_OCI_MANIFEST, Reference};
use crate::trust::SignedIdentity;

/// Largest manifest or index read.
const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

/// Every imported image of `repository` with the release holding it.
fn images(
    st: &AppState,
    repository: &str,
) -> Result<Vec<(Arc<Release>, ImageRecord)>, RegistryError> {
    let identity = SignedIdentity::repository(repository);
    let mut out = Vec::new();
    for release in st.releases().list()? {
        for image in release.image_records() {
            if identity.matches(&image.reference) {
                out.push((Arc::clone(&release), image.clone()));
            }
        }
    }
    Ok(out)
}

/// The tag an image was imported under.
fn tag_of(image: &ImageRecord) -> Option<String> {
    image.reference.parse::<Reference>().ok()?.tag
}

/// Reads a stored manifest or index by digest, with the media type it declares.
fn read_manifest(st: &AppState, digest: &Digest) -> Result<Option<Manifest>, RegistryError> {
    let Some(bytes) = st.assets().read_small(digest.hex(), MAX_MANIFEST)? else {
        return Ok(None);
    };
    let hex = crate::sha256::hex_digest(&bytes);
    if hex != digest.hex() {
        return Ok(None);
    }
    let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
        .unwrap_or_else(|| MEDIA_OCI_MANIFEST.to_string());
    Ok(Some(Manifest {
        media_type,
        bytes,
        hex,
    }))
}

/// A manifest of a source image by tag or digest.
pub fn manifest(
    st: &AppState,
    repository: &str,
    reference: &str,
) -> Result<Manifest, RegistryError> {
    let unknown = || RegistryError::ManifestUnknown(format!("{repository}:{reference}"));
    let images = images(st, repository)?;
    if images.is_empty() {
        return Err(RegistryError::NameUnknown(repository.to_string()));
    }
    let digest = match reference.parse::<Digest>() {
        Ok(d) => images
            .iter()
            .any(|(_, i)| i.digest == d || i.manifest == d)
            .then_some(d),
        Err(_) => images
            .iter()
            .find(|(_, i)| tag_of(i).as_deref() == Some(reference))
            .map(|(_, i)| i.digest.clone()),
    };
    read_manifest(st, &digest.ok_or_else(unknown)?)?.ok_or_else(unknown)
}

/// A config or layer blob of a source image.
pub fn blob(
    st: &AppState,
    repository: &str,
    digest: &Digest,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, RegistryError> {
    let unknown = || RegistryError::BlobUnknown(digest.to_string());
    let images = images(st, repository)?;
    if images.is_empty() {
        return Err(RegistryError::NameUnknown(repository.to_string()));
    }
    for (release, image) in &images {
        let Some(m) = read_manifest(st, &image.manifest)? else {
            continue;
        };
        let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&m.bytes) else {
            continue;
        };
        let held = std::iter::once(&manifest.config)
            .chain(&manifest.layers)
            .any(|d| &d.digest == digest);
        if held {
            let info = st
                .assets()
                .blob_by_sha256(digest.hex())?
                .ok_or_else(unknown)?;
            let part =
                st.assets()
                    .release_part(&release.version, &info, "application/octet-stream");
            return respond::blob(st, &part, digest, head, headers);
        }
    }
    Err(unknown())
}

/// The tags of a source image repository.
pub fn tags(st: &AppState, repository: &str) -> Result<Vec<String>, RegistryError> {
    let images = images(st, repository)?;
    if images.is_empty() {
        return Err(RegistryError::NameUnknown(repository.to_string()));
    }
    Ok(images.iter().filter_map(|(_, i)| tag_of(i)).collect())
}
