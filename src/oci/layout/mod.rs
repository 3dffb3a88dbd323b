//! `LayoutSource`: images from an OCI image-layout directory, an `oci-archive` tarball (a tar of
//! a layout) or a `docker-archive` tarball (`docker save`).
//!
//! Archives are indexed once (entry name → offset and size in the tar) and blobs are served by
//! seeking into the file; nothing is extracted and no blob is held in memory except the small
//! manifests synthesized for docker archives. Every blob read is verified against its digest.

mod archive;

use std::collections::HashMap;
use std::io::{Read, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};

use super::verify::{VerifyingReader, io_error_to_oci, verify_bytes};
use super::{
    ANNOTATION_REF_NAME, BlobReader, Descriptor, Digest, ImageIndex, ImageSource, MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST, OciError, Reference,
};
use archive::{index_tar, open_docker_archive, open_oci_archive};

/// Size budget for `index.json`, `manifest.json`, manifests and configs read from a layout.
pub const METADATA_LIMIT: u64 = 4 << 20;

/// What a `LayoutSource` reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutKind {
    /// An OCI image-layout directory.
    Directory,
    /// A tar of an OCI image layout.
    OciArchive,
    /// A `docker save` tarball.
    DockerArchive,
}

/// Where a blob's bytes are.
#[derive(Debug, Clone)]
enum BlobLoc {
    /// A byte range of the archive file.
    Tar { offset: u64, size: u64 },
    /// Synthesized content (docker-archive manifests).
    Memory(Arc<Vec<u8>>),
}

/// Images read from a local OCI layout, oci-archive or docker-archive.
pub struct LayoutSource {
    path: PathBuf,
    kind: LayoutKind,
    /// Blob locations (archives only; directories are looked up on demand).
    blobs: HashMap<Digest, BlobLoc>,
    /// `index.json` entries (or synthesized ones for docker archives).
    index: Vec<Descriptor>,
    /// Reference names (annotation or RepoTag) → descriptor.
    refs: Vec<(String, Descriptor)>,
}

impl LayoutSource {
    /// Opens a layout directory or archive, detecting which it is (blocking I/O: call it from
    /// `spawn_blocking` or use [`LayoutSource::open_async`] in async code).
    pub fn open(path: &Path) -> Result<LayoutSource, OciError> {
        let meta =
            std::fs::metadata(path).map_err(|e| OciError::io(path.display().to_string(), e))?;
        if meta.is_dir() {
            return open_directory(path);
        }
        let entries = index_tar(path)?;
        if entries.contains_key("index.json") {
            open_oci_archive(path, &entries)
        } else if entries.contains_key("manifest.json") {
            open_docker_archive(path, &entries)
        } else {
            Err(malformed(
                path,
                "neither an OCI layout (index.json) nor a docker archive (manifest.json)",
            ))
        }
    }

    /// [`LayoutSource::open`] on the blocking thread pool.
    pub async fn open_async(path: PathBuf) -> Result<LayoutSource, OciError> {
        tokio::task::spawn_blocking(move || LayoutSource::open(&path))
            .await
            .map_err(|e| OciError::io("layout open task", std::io::Error::other(e)))?
    }

    /// Which kind of layout this is.
    pub fn kind(&self) -> LayoutKind {
        self.kind
    }

    /// The descriptors listed in `index.json` (synthesized manifests for docker archives).
    pub fn index(&self) -> &[Descriptor] {
        &self.index
    }

    /// Every named image: (`org.opencontainers.image.ref.name` or RepoTag, descriptor).
    pub fn refs(&self) -> &[(String, Descriptor)] {
        &self.refs
    }

    /// Whether a blob with `digest` is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        match self.kind {
            LayoutKind::Directory => self.blob_path(digest).is_file(),
            _ => self.blobs.contains_key(digest),
        }
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.path.join("blobs").join("sha256").join(digest.hex())
    }

    /// Opens the raw (unverified) bytes of a blob and returns them with their stored size.
    async fn open_raw(
        &self,
        digest: &Digest,
    ) -> Result<Option<(std::pin::Pin<Box<dyn AsyncRead + Send>>, u64)>, OciError> {
        match self.kind {
            LayoutKind::Directory => {
                let path = self.blob_path(digest);
                let file = match tokio::fs::File::open(&path).await {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(OciError::io(path.display().to_string(), e)),
                };
                let meta = file
                    .metadata()
                    .await
                    .map_err(|e| OciError::io(path.display().to_string(), e))?;
                if !meta.is_file() {
                    return Err(OciError::Unsafe(format!(
                        "{} is not a regular file",
                        path.display()
                    )));
                }
                Ok(Some((Box::pin(file), meta.len())))
            }
            _ => match self.blobs.get(digest) {
                None => Ok(None),
                Some(BlobLoc::Memory(bytes)) => {
                    let size = bytes.len() as u64;
                    Ok(Some((
                        Box::pin(std::io::Cursor::new(bytes.as_ref().clone())),
                        size,
                    )))
                }
                Some(&BlobLoc::Tar { offset, size }) => {
                    let ctx = || self.path.display().to_string();
                    let mut file = tokio::fs::File::open(&self.path)
                        .await
                        .map_err(|e| OciError::io(ctx(), e))?;
                    file.seek(SeekFrom::Start(offset))
                        .await
                        .map_err(|e| OciError::io(ctx(), e))?;
                    Ok(Some((Box::pin(file.take(size)), size)))
                }
            },
        }
    }

    /// Reads a whole small blob (≤ `limit`), verified.
    async fn read_small(&self, digest: &Digest, limit: u64) -> Result<Option<Vec<u8>>, OciError> {
        let Some((mut reader, size)) = self.open_raw(digest).await? else {
            return Ok(None);
        };
        if size > limit {
            return Err(OciError::Limit(format!(
                "{digest} in {} is {size} bytes, more than the {limit}-byte limit",
                self.describe()
            )));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        reader
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| io_error_to_oci(format!("reading {digest}"), e))?;
        verify_bytes(&format!("blob {digest}"), &bytes, digest, size)?;
        Ok(Some(bytes))
    }

    fn find_ref(&self, reference: &Reference) -> Option<&Descriptor> {
        let full = reference.to_string();
        let tag = reference.tag.as_deref()?;
        let mut best: Option<(u8, &Descriptor)> = None;
        for (name, desc) in &self.refs {
            let score = if *name == full || *name == reference.with_tag(tag).to_string() {
                3
            } else if name_matches(name, &reference.repository, tag) {
                2
            } else if name == tag {
                1
            } else {
                0
            };
            if score > 0 && best.is_none_or(|(s, _)| score > s) {
                best = Some((score, desc));
            }
        }
        best.map(|(_, d)| d)
    }
}

/// Whether a ref name (`host/repo:tag`, `repo:tag`, docker short names) names `repository:tag`.
fn name_matches(name: &str, repository: &str, tag: &str) -> bool {
    let name = name.split_once('@').map_or(name, |(n, _)| n);
    let Some((path, t)) = name.rsplit_once(':').filter(|(_, t)| !t.contains('/')) else {
        return false;
    };
    if t != tag {
        return false;
    }
    let path = match path.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            rest
        }
        _ => path,
    };
    path == repository || format!("library/{path}") == repository
}

fn malformed(path: &Path, message: impl Into<String>) -> OciError {
    OciError::Malformed {
        what: path.display().to_string(),
        message: message.into(),
    }
}

/// Collects `(ref name, descriptor)` pairs from an index.
fn refs_of(index: &ImageIndex) -> Vec<(String, Descriptor)> {
    index
        .manifests
        .iter()
        .filter_map(|d| {
            d.annotations
                .get(ANNOTATION_REF_NAME)
                .map(|n| (n.clone(), d.clone()))
        })
        .collect()
}

fn parse_index(path: &Path, bytes: &[u8]) -> Result<ImageIndex, OciError> {
    serde_json::from_slice(bytes).map_err(OciError::decode(
        path.join("index.json").display().to_string(),
    ))
}

fn open_directory(path: &Path) -> Result<LayoutSource, OciError> {
    let index_path = path.join("index.json");
    let file = std::fs::File::open(&index_path)
        .map_err(|e| OciError::io(index_path.display().to_string(), e))?;
    let bytes = read_limited(file, METADATA_LIMIT, &index_path)?;
    let index = parse_index(path, &bytes)?;
    Ok(LayoutSource {
        path: path.to_path_buf(),
        kind: LayoutKind::Directory,
        blobs: HashMap::new(),
        refs: refs_of(&index),
        index: index.manifests,
    })
}

fn read_limited(reader: impl Read, limit: u64, what: &Path) -> Result<Vec<u8>, OciError> {
    let mut bytes = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| OciError::io(what.display().to_string(), e))?;
    if bytes.len() as u64 > limit {
        return Err(OciError::Limit(format!(
            "{} is larger than {limit} bytes",
            what.display()
        )));
    }
    Ok(bytes)
}

/// The media type a manifest or index declares (or implies).
fn declared_media_type(bytes: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if let Some(mt) = value.get("mediaType").and_then(|v| v.as_str()) {
        return Some(mt.to_string());
    }
    if value.get("manifests").is_some() {
        Some(MEDIA_OCI_INDEX.to_string())
    } else if value.get("config").is_some() && value.get("layers").is_some() {
        Some(MEDIA_OCI_MANIFEST.to_string())
    } else {
        None
    }
}

impl ImageSource for LayoutSource {
    fn describe(&self) -> String {
        let kind = match self.kind {
            LayoutKind::Directory => "OCI layout",
            LayoutKind::OciArchive => "oci-archive",
            LayoutKind::DockerArchive => "docker-archive",
        };
        format!("{kind} {}", self.path.display())
    }

    async fn resolve(&self, reference: &Reference) -> Result<Option<Descriptor>, OciError> {
        if let Some(digest) = &reference.digest {
            if let Some(d) = self
                .index
                .iter()
                .chain(self.refs.iter().map(|(_, d)| d))
                .find(|d| &d.digest == digest)
            {
                return Ok(Some(d.clone()));
            }
            if !self.has_blob(digest) {
                return Ok(None);
            }
            let Some(bytes) = self.read_small(digest, METADATA_LIMIT).await? else {
                return Ok(None);
            };
            let media_type = declared_media_type(&bytes).ok_or_else(|| OciError::Malformed {
                what: format!("{digest} in {}", self.describe()),
                message: "not a manifest or index".into(),
            })?;
            return Ok(Some(Descriptor::for_bytes(&media_type, &bytes)));
        }
        Ok(self.find_ref(reference).cloned())
    }

    async fn manifest(
        &self,
        _reference: &Reference,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>, OciError> {
        self.read_small(digest, limit)
            .await?
            .ok_or_else(|| OciError::NotFound(format!("manifest {digest} in {}", self.describe())))
    }

    async fn blob(
        &self,
        _reference: &Reference,
        descriptor: &Descriptor,
    ) -> Result<BlobReader, OciError> {
        let digest = &descriptor.digest;
        let Some((reader, size)) = self.open_raw(digest).await? else {
            return Err(OciError::NotFound(format!(
                "blob {digest} in {}",
                self.describe()
            )));
        };
        if size != descriptor.size {
            return Err(OciError::DigestMismatch {
                what: format!("blob {digest} in {}", self.describe()),
                expected: format!("{} bytes", descriptor.size),
                actual: format!("{size} bytes"),
            });
        }
        Ok(Box::pin(VerifyingReader::new(reader, digest.clone(), size)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_dots() {
        assert!(name_matches(
            "ghcr.io/siderolabs/imager:v1.11.0",
            "siderolabs/imager",
            "v1.11.0"
        ));
        assert!(name_matches("busybox:latest", "library/busybox", "latest"));
        assert!(name_matches("127.0.0.1:5000/a/b:t", "a/b", "t"));
        assert!(!name_matches(
            "ghcr.io/siderolabs/imager:v1.11.0",
            "siderolabs/installer",
            "v1.11.0"
        ));
        assert!(!name_matches("v1.11.0", "siderolabs/imager", "v1.11.0"));
    }
}
