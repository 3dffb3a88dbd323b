//! The imported source images (`siderolabs/imager`, `installer-base`, extensions, overlays,
//! catalogs) served by their upstream names, tags and digests, byte-identical to what was
//! imported: the mirror side of `ghcr.io`.
//!
//! What each repository holds (tags, manifests, config and layer blobs) is indexed once per set
//! of imported releases, on a blocking thread, and kept in memory ([`SourceCache`]); a request
//! is a lookup plus, for a manifest, one small read on a blocking thread (checked against its
//! digest), and blobs go through the asset send path. Every manifest held is signed with the
//! cluster key on first need (its `.sig` tag or referrers asked), stored like the installer's.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::response::Response;

use super::error::RegistryError;
use super::installer::{self, Manifest};
use super::respond;
use super::store::{RegistryStore, Signed};
use crate::catalog::{ImageRecord, Release};
use crate::frontend::http::AppState;
use crate::oci::{
    Descriptor, Digest, ImageManifest, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, Reference,
};

/// Largest manifest or index read.
const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

/// How long an index that left a damaged image out is used before it is built again (a
/// repair by re-import does not change the release record).
const RETRY_INCOMPLETE: Duration = Duration::from_secs(30);

/// Reads a stored manifest by digest (`None` when not stored).
type ReadManifest<'a> = dyn Fn(&Digest) -> Result<Option<Vec<u8>>, RegistryError> + 'a;

/// A manifest (or index) a source repository holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    /// Media type (declared, or from its shape).
    media_type: String,
    /// Size in bytes.
    size: u64,
    /// Whether a tag names it (an imported image's top-level digest), not only an index.
    top: bool,
}

/// What one source repository holds.
#[derive(Debug, Default, PartialEq, Eq)]
struct Repository {
    /// Tag → top-level digest.
    tags: BTreeMap<String, Digest>,
    /// Manifest SHA-256 hex → what it is.
    manifests: HashMap<String, Held>,
    /// Config or layer SHA-256 hex → the release holding it.
    blobs: HashMap<String, String>,
}

/// The imported source images by repository path (and every shorter path below a host or
/// mirror namespace: `mirror/siderolabs/imager` is also `siderolabs/imager`, as signature
/// identities match).
#[derive(Debug, Default)]
pub struct SourceIndex {
    repos: HashMap<String, Repository>,
    /// Whether an image was left out because its manifest could not be read.
    complete: bool,
}

/// The media type a manifest declares or, without `mediaType` (optional in OCI), the one its
/// shape says as distribution decides: `manifests` makes an index, anything else is an image
/// manifest. `None` when it is not JSON.
fn media_type_of(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if let Some(m) = v.get("mediaType").and_then(|m| m.as_str()) {
        return Some(m.to_string());
    }
    let index = v.get("manifests").is_some_and(|m| !m.is_null());
    Some(
        if index {
            MEDIA_OCI_INDEX
        } else {
            MEDIA_OCI_MANIFEST
        }
        .to_string(),
    )
}

/// The repository paths an image reference is served under.
fn repository_keys(repository: &str) -> impl Iterator<Item = &str> {
    std::iter::once(repository).chain(
        repository
            .match_indices('/')
            .map(move |(i, _)| &repository[i + 1..]),
    )
}

/// The tag of a reference (`host/path:tag[@digest]` or `path:tag`), if it has one.
fn tag_in(reference: &str) -> Option<&str> {
    let name = reference
        .split_once('@')
        .map_or(reference, |(name, _)| name);
    let (_, tag) = name.rsplit_once(':')?;
    (!tag.contains('/')).then_some(tag)
}

/// Every image record of `release`, with the tag its catalog lists it under (extensions and
/// overlays are imported by digest; their tags are the catalog's).
fn images_of(release: &Release) -> Vec<(&ImageRecord, Option<&str>)> {
    let mut out = Vec::new();
    for a in release.arches.values() {
        out.extend(a.imager.iter().chain(&a.installer_base).map(|i| (i, None)));
    }
    for e in &release.extensions {
        out.extend(e.images.values().map(|i| (i, tag_in(&e.reference))));
    }
    for o in &release.overlays {
        out.extend(o.images.values().map(|i| (i, tag_in(&o.reference))));
    }
    out.extend(release.catalogs.iter().map(|i| (i, None)));
    out.extend(release.talosctl.iter().map(|t| (&t.image, None)));
    out
}

/// A manifest read back: `None` when missing, damaged (another digest) or not a manifest.
fn checked(bytes: Option<Vec<u8>>, digest: &Digest) -> Option<(Vec<u8>, String)> {
    let bytes = bytes?;
    if crate::sha256::hex_digest(&bytes) != digest.hex() {
        return None;
    }
    let media_type = media_type_of(&bytes)?;
    Some((bytes, media_type))
}

impl SourceIndex {
    /// Indexes every image record of `releases` (oldest first: a tag two releases hold names
    /// the newer one's digest), reading manifests with `read` (SHA-256 hex → bytes). An image
    /// whose manifest is missing, damaged or unreadable is left out, with a warning.
    fn build(releases: &[Arc<Release>], read: &ReadManifest<'_>) -> SourceIndex {
        let mut index = SourceIndex {
            repos: HashMap::new(),
            complete: true,
        };
        for release in releases {
            for (image, tag) in images_of(release) {
                if let Err(e) = index.add(&release.version, image, tag, read) {
                    tracing::warn!(
                        reference = %image.reference,
                        version = %release.version,
                        error = %format!("{:#}", crate::causes::Causes(&e)),
                        "a source image is not served"
                    );
                    index.complete = false;
                }
            }
        }
        index
    }

    fn add(
        &mut self,
        version: &str,
        image: &ImageRecord,
        tag: Option<&str>,
        read: &ReadManifest<'_>,
    ) -> Result<(), RegistryError> {
        let reference: Reference = image
            .reference
            .parse()
            .map_err(|e| RegistryError::caused("parsing an imported reference", e))?;
        let load = |d: &Digest| {
            checked(read(d)?, d).ok_or_else(|| {
                RegistryError::ManifestUnknown(format!("{d} (missing, damaged or not JSON)"))
            })
        };
        let (top_bytes, top_type) = load(&image.digest)?;
        let (manifest_bytes, manifest_type) = if image.manifest == image.digest {
            (top_bytes.clone(), top_type.clone())
        } else {
            load(&image.manifest)?
        };
        let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| RegistryError::caused("decoding an imported image manifest", e))?;
        for key in repository_keys(&reference.repository) {
            let repo = self.repos.entry(key.to_string()).or_default();
            if let Some(tag) = tag.or(reference.tag.as_deref()) {
                repo.tags.insert(tag.to_string(), image.digest.clone());
            }
            let top = Held {
                media_type: top_type.clone(),
                size: top_bytes.len() as u64,
                top: true,
            };
            repo.manifests.insert(image.digest.hex().to_string(), top);
            repo.manifests
                .entry(image.manifest.hex().to_string())
                .or_insert_with(|| Held {
                    media_type: manifest_type.clone(),
                    size: manifest_bytes.len() as u64,
                    top: false,
                });
            for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
                repo.blobs
                    .insert(d.digest.hex().to_string(), version.to_string());
            }
        }
        Ok(())
    }

    /// The repository `name`, or `NAME_UNKNOWN`.
    fn repo(&self, name: &str) -> Result<&Repository, RegistryError> {
        self.repos
            .get(name)
            .ok_or_else(|| RegistryError::NameUnknown(name.to_string()))
    }
}

/// The source index of the imported releases, built when the set of releases changes.
#[derive(Default)]
pub struct SourceCache {
    current: Mutex<Option<Cached>>,
    /// One build at a time; the others wait for it.
    build: tokio::sync::Mutex<()>,
}

struct Cached {
    /// The release records it was built from (compared by identity: the release store hands
    /// out the same record until it changes).
    releases: Vec<Arc<Release>>,
    index: Arc<SourceIndex>,
    built: Instant,
}

impl SourceCache {
    fn fresh(&self, releases: &[Arc<Release>]) -> Option<Arc<SourceIndex>> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let c = current.as_ref()?;
        let same = c.releases.len() == releases.len()
            && c.releases
                .iter()
                .zip(releases)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        (same && (c.index.complete || c.built.elapsed() < RETRY_INCOMPLETE))
            .then(|| Arc::clone(&c.index))
    }

    /// The index of the releases `st` holds now.
    async fn index(&self, st: &AppState) -> Result<Arc<SourceIndex>, RegistryError> {
        let releases = st.releases().list()?;
        if let Some(index) = self.fresh(&releases) {
            return Ok(index);
        }
        let _building = self.build.lock().await;
        if let Some(index) = self.fresh(&releases) {
            return Ok(index);
        }
        let (st2, list) = (st.clone(), releases.clone());
        let index = tokio::task::spawn_blocking(move || {
            let read = |d: &Digest| Ok(st2.assets().read_small(d.hex(), MAX_MANIFEST)?);
            SourceIndex::build(&list, &read)
        })
        .await
        .map_err(|e| RegistryError::caused("indexing the source images", e))?;
        let index = Arc::new(index);
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(Cached {
            releases,
            index: Arc::clone(&index),
            built: Instant::now(),
        });
        Ok(index)
    }
}

/// The index of `st`'s source images.
async fn index(st: &AppState) -> Result<Arc<SourceIndex>, RegistryError> {
    st.source_images().index(st).await
}

/// Reads held manifest `digest` on a blocking thread; `None` when it no longer hashes to it.
async fn read_manifest(
    st: &AppState,
    digest: &Digest,
    held: &Held,
) -> Result<Option<Manifest>, RegistryError> {
    let (st2, hex) = (st.clone(), digest.hex().to_string());
    let bytes = tokio::task::spawn_blocking(move || st2.assets().read_small(&hex, MAX_MANIFEST))
        .await
        .map_err(|e| RegistryError::caused("reading a source manifest", e))??;
    let Some(bytes) = bytes else { return Ok(None) };
    let hex = crate::sha256::hex_digest(&bytes);
    if hex != digest.hex() {
        return Ok(None);
    }
    Ok(Some(Manifest {
        media_type: held.media_type.clone(),
        bytes,
        hex,
    }))
}

/// The signature of held manifest `hex` of `repository`, made (once, stored) if missing.
async fn signature(
    st: &AppState,
    store: &RegistryStore,
    repository: &str,
    hex: &str,
    held: &Held,
) -> Result<Signed, RegistryError> {
    if let Some(s) = store.signature(repository, hex)? {
        return Ok(s);
    }
    let digest = Digest::from_hex(hex).map_err(|e| RegistryError::caused("a held digest", e))?;
    let subject = Descriptor {
        media_type: held.media_type.clone(),
        digest,
        size: held.size,
        annotations: BTreeMap::new(),
        platform: None,
    };
    let (st2, store2, repo2) = (st.clone(), store.clone(), repository.to_string());
    tokio::task::spawn_blocking(move || installer::sign(&st2, &store2, &repo2, &subject))
        .await
        .map_err(|e| RegistryError::caused("signing a source manifest", e))??;
    store.signature(repository, hex)?.ok_or_else(|| {
        RegistryError::Api(crate::frontend::http::error::ApiError::internal(
            "a source manifest's signature was not stored",
        ))
    })
}

/// A manifest of a source image by tag, digest or signature tag, and whether it is an image's
/// top-level manifest (what a tag names: a pull).
pub async fn manifest(
    st: &AppState,
    store: &RegistryStore,
    repository: &str,
    reference: &str,
) -> Result<(Manifest, bool), RegistryError> {
    let unknown = || RegistryError::ManifestUnknown(format!("{repository}:{reference}"));
    let index = index(st).await?;
    let repo = index.repo(repository)?;
    if let Some(hex) = reference
        .strip_prefix("sha256-")
        .and_then(|s| s.strip_suffix(".sig"))
    {
        let held = repo.manifests.get(hex).ok_or_else(unknown)?;
        let signed = signature(st, store, repository, hex, held).await?;
        let m = super::by_digest(st, store, repository, &signed.tag_manifest).await?;
        return Ok((m, false));
    }
    let digest = match reference.parse::<Digest>() {
        Ok(d) => d,
        Err(_) => repo.tags.get(reference).cloned().ok_or_else(unknown)?,
    };
    match repo.manifests.get(digest.hex()) {
        Some(held) => {
            let m = read_manifest(st, &digest, held)
                .await?
                .ok_or_else(unknown)?;
            Ok((m, held.top))
        }
        // A signature document made here (the `.sig` manifest or the referrer).
        None => Ok((
            super::by_digest(st, store, repository, digest.hex()).await?,
            false,
        )),
    }
}

/// A config or layer blob of a source image (or a signature's payload or config).
pub async fn blob(
    st: &AppState,
    store: &RegistryStore,
    repository: &str,
    digest: &Digest,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, RegistryError> {
    let index = index(st).await?;
    let repo = index.repo(repository)?;
    let Some(version) = repo.blobs.get(digest.hex()) else {
        return super::installer_blob(st, store, repository, digest, head, headers).await;
    };
    let info = st
        .assets()
        .blob_by_sha256(digest.hex())?
        .ok_or_else(|| RegistryError::BlobUnknown(digest.to_string()))?;
    let part = st
        .assets()
        .release_part(version, &info, "application/octet-stream");
    respond::blob(st, &part, digest, head, headers)
}

/// The tags of a source image repository: the imported tags and the signature tag of every
/// manifest it holds (signed on first request).
pub async fn tags(st: &AppState, repository: &str) -> Result<Vec<String>, RegistryError> {
    let index = index(st).await?;
    let repo = index.repo(repository)?;
    Ok(repo
        .tags
        .keys()
        .cloned()
        .chain(repo.manifests.keys().map(|hex| format!("sha256-{hex}.sig")))
        .collect())
}

/// The referrers index of `subject` in a source repository (`NAME_UNKNOWN` for a repository
/// not held; the signature of a held manifest is made first if missing).
pub async fn referrers(
    st: &AppState,
    store: &RegistryStore,
    repository: &str,
    subject: &Digest,
    artifact_type: Option<&str>,
) -> Result<Vec<u8>, RegistryError> {
    let index = index(st).await?;
    let repo = index.repo(repository)?;
    if let Some(held) = repo.manifests.get(subject.hex()) {
        signature(st, store, repository, subject.hex(), held).await?;
    }
    installer::referrers(store, repository, subject, artifact_type)
}

#[cfg(test)]
mod tests;
