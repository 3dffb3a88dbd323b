//! `LayoutSource`: images from an OCI image-layout directory, an `oci-archive` tarball (a tar of
//! a layout) or a `docker-archive` tarball (`docker save`).
//!
//! Archives are indexed once (entry name → offset and size in the tar) and blobs are served by
//! seeking into the file; nothing is extracted and no blob is held in memory except the small
//! manifests synthesized for docker archives. Every blob read is verified against its digest.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};

use super::tarwalk::{clean_entry_path, walk};
use super::verify::{VerifyingReader, io_error_to_oci, verify_bytes};
use super::{
    ANNOTATION_REF_NAME, BlobReader, Descriptor, Digest, ImageConfig, ImageIndex, ImageManifest,
    ImageSource, MEDIA_DOCKER_CONFIG, MEDIA_DOCKER_LAYER_GZIP, MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX, MEDIA_OCI_LAYER_ZSTD, MEDIA_OCI_MANIFEST, OciError, Reference,
};

/// Size budget for `index.json`, `manifest.json`, manifests and configs read from a layout.
pub const METADATA_LIMIT: u64 = 4 << 20;

/// Docker's media type for an uncompressed layer.
const MEDIA_DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

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

/// One indexed tar entry.
#[derive(Debug, Clone)]
enum TarEntry {
    Regular { offset: u64, size: u64 },
    Symlink(String),
    Other,
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
    serde_json::from_slice(bytes).map_err(|e| malformed(&path.join("index.json"), e.to_string()))
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

/// Indexes a tar file: normalized entry name → entry. Refuses traversal and out-of-file ranges.
fn index_tar(path: &Path) -> Result<HashMap<String, TarEntry>, OciError> {
    let ctx = || path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| OciError::io(ctx(), e))?;
    let file_len = file.metadata().map_err(|e| OciError::io(ctx(), e))?.len();
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut out = HashMap::new();
    let entries = archive
        .entries_with_seek()
        .map_err(|e| OciError::io(ctx(), e))?;
    let end = walk(entries, |item, entry_data| {
        let Some(name) = item.path.clone() else {
            return Ok(());
        };
        let kind = item.kind;
        let entry = if kind.is_file() || kind == tar::EntryType::Continuous {
            let (offset, size) = (entry_data.raw_file_position(), item.size);
            if offset.checked_add(size).is_none_or(|end| end > file_len) {
                return Err(malformed(
                    path,
                    format!("entry {name} extends past the end of the file (truncated archive)"),
                ));
            }
            TarEntry::Regular { offset, size }
        } else if kind.is_symlink() {
            let target = item.link.clone().unwrap_or_default();
            TarEntry::Symlink(String::from_utf8_lossy(&target).into_owned())
        } else {
            TarEntry::Other
        };
        out.insert(name, entry);
        Ok(())
    })?;
    // The tar crate stops quietly at end of file; a complete archive has its zero-block marker.
    if end > 0 && file_len < end + 512 {
        return Err(malformed(
            path,
            "truncated archive (no end-of-archive marker)",
        ));
    }
    Ok(out)
}

/// Follows symlinks inside the archive (relative to the link's directory) to a regular entry.
fn lookup(entries: &HashMap<String, TarEntry>, name: &str) -> Result<(u64, u64), OciError> {
    let mut current = name.to_string();
    for _ in 0..8 {
        match entries.get(&current) {
            Some(TarEntry::Regular { offset, size }) => return Ok((*offset, *size)),
            Some(TarEntry::Symlink(target)) => {
                let dir = current.rsplit_once('/').map_or("", |(d, _)| d);
                let joined = if target.starts_with('/') {
                    target.clone()
                } else {
                    format!("{dir}/{target}")
                };
                current = resolve_dots(&joined).ok_or_else(|| {
                    OciError::Unsafe(format!("archive symlink {name} points outside the archive"))
                })?;
            }
            Some(TarEntry::Other) => {
                return Err(OciError::Unsafe(format!(
                    "archive entry {name} is not a regular file"
                )));
            }
            None => return Err(OciError::NotFound(format!("archive entry {name}"))),
        }
    }
    Err(OciError::Unsafe(format!(
        "archive entry {name}: too many symlinks"
    )))
}

/// Resolves `.` and `..` in a slash path; `None` when it climbs above the root.
fn resolve_dots(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// Reads a small regular entry of the archive.
fn read_entry(
    path: &Path,
    entries: &HashMap<String, TarEntry>,
    name: &str,
) -> Result<Vec<u8>, OciError> {
    let (offset, size) = lookup(entries, name)?;
    if size > METADATA_LIMIT {
        return Err(OciError::Limit(format!(
            "{name} in {} is larger than {METADATA_LIMIT} bytes",
            path.display()
        )));
    }
    let mut file =
        std::fs::File::open(path).map_err(|e| OciError::io(path.display().to_string(), e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| OciError::io(path.display().to_string(), e))?;
    read_limited(file.take(size), size, path)
}

fn open_oci_archive(
    path: &Path,
    entries: &HashMap<String, TarEntry>,
) -> Result<LayoutSource, OciError> {
    let index = parse_index(path, &read_entry(path, entries, "index.json")?)?;
    let mut blobs = HashMap::new();
    for (name, entry) in entries {
        let Some(hex) = name.strip_prefix("blobs/sha256/") else {
            continue;
        };
        let Ok(digest) = Digest::from_hex(hex) else {
            continue;
        };
        match entry {
            TarEntry::Regular { offset, size } => {
                blobs.insert(
                    digest,
                    BlobLoc::Tar {
                        offset: *offset,
                        size: *size,
                    },
                );
            }
            _ => {
                return Err(OciError::Unsafe(format!(
                    "blob entry {name} in {} is not a regular file",
                    path.display()
                )));
            }
        }
    }
    Ok(LayoutSource {
        path: path.to_path_buf(),
        kind: LayoutKind::OciArchive,
        blobs,
        refs: refs_of(&index),
        index: index.manifests,
    })
}

/// One image of a docker-archive `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Compression of a stream judged by its first bytes.
fn layer_media_type(magic: &[u8]) -> &'static str {
    if magic.starts_with(&[0x1f, 0x8b]) {
        MEDIA_DOCKER_LAYER_GZIP
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        MEDIA_OCI_LAYER_ZSTD
    } else {
        MEDIA_DOCKER_LAYER_TAR
    }
}

fn open_docker_archive(
    path: &Path,
    entries: &HashMap<String, TarEntry>,
) -> Result<LayoutSource, OciError> {
    let images: Vec<DockerImage> =
        serde_json::from_slice(&read_entry(path, entries, "manifest.json")?)
            .map_err(|e| malformed(&path.join("manifest.json"), e.to_string()))?;
    let ctx = || path.display().to_string();
    let mut file = std::fs::File::open(path).map_err(|e| OciError::io(ctx(), e))?;
    let mut blobs = HashMap::new();
    let mut index = Vec::new();
    let mut refs = Vec::new();
    for image in images {
        let config_name = clean_entry_path(image.config.as_bytes())?.unwrap_or_default();
        let config_bytes = read_entry(path, entries, &config_name)?;
        let (offset, size) = lookup(entries, &config_name)?;
        let config_desc = Descriptor::for_bytes(MEDIA_DOCKER_CONFIG, &config_bytes);
        blobs.insert(config_desc.digest.clone(), BlobLoc::Tar { offset, size });
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| malformed(&path.join(&config_name), e.to_string()))?;
        let mut layers = Vec::new();
        for (i, layer) in image.layers.iter().enumerate() {
            let name = clean_entry_path(layer.as_bytes())?.unwrap_or_default();
            let (offset, size) = lookup(entries, &name)?;
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| OciError::io(ctx(), e))?;
            let mut magic = Vec::with_capacity(4);
            (&mut file)
                .take(size.min(4))
                .read_to_end(&mut magic)
                .map_err(|e| OciError::io(ctx(), e))?;
            let media_type = layer_media_type(&magic);
            let from_name = name
                .strip_prefix("blobs/sha256/")
                .and_then(|h| Digest::from_hex(h).ok());
            let digest = match (from_name, config.rootfs.diff_ids.get(i)) {
                (Some(d), _) => d,
                // An uncompressed layer's digest is its diff ID; verified when read.
                (None, Some(diff)) if media_type == MEDIA_DOCKER_LAYER_TAR => diff.clone(),
                _ => {
                    file.seek(SeekFrom::Start(offset))
                        .map_err(|e| OciError::io(ctx(), e))?;
                    let mut hasher = Sha256::new();
                    let mut take = (&mut file).take(size);
                    std::io::copy(&mut take, &mut HashWriter(&mut hasher))
                        .map_err(|e| OciError::io(ctx(), e))?;
                    Digest::from_hex(&hex::encode(hasher.finalize()))?
                }
            };
            blobs.insert(digest.clone(), BlobLoc::Tar { offset, size });
            layers.push(Descriptor {
                media_type: media_type.to_string(),
                digest,
                size,
                annotations: Default::default(),
                platform: None,
            });
        }
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(MEDIA_DOCKER_MANIFEST.to_string()),
            config: config_desc,
            layers,
            annotations: Default::default(),
        };
        let bytes = serde_json::to_vec(&manifest).map_err(|e| malformed(path, e.to_string()))?;
        let desc = Descriptor::for_bytes(MEDIA_DOCKER_MANIFEST, &bytes);
        blobs.insert(desc.digest.clone(), BlobLoc::Memory(Arc::new(bytes)));
        for tag in image.repo_tags.unwrap_or_default() {
            let mut named = desc.clone();
            named
                .annotations
                .insert(ANNOTATION_REF_NAME.to_string(), tag.clone());
            refs.push((tag, named));
        }
        index.push(desc);
    }
    Ok(LayoutSource {
        path: path.to_path_buf(),
        kind: LayoutKind::DockerArchive,
        blobs,
        index,
        refs,
    })
}

/// Adapts a hasher to `io::Write`.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
        assert_eq!(resolve_dots("a/b/../c").as_deref(), Some("a/c"));
        assert_eq!(resolve_dots("a/../../c"), None);
        assert_eq!(
            layer_media_type(&[0x1f, 0x8b, 8, 0]),
            MEDIA_DOCKER_LAYER_GZIP
        );
    }
}
