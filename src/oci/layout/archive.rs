//! Archive indexing: oci-archive and docker-archive tarballs, read by offset without extraction.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use crate::sha256::Sha256;
use serde::Deserialize;

use super::{
    BlobLoc, LayoutKind, LayoutSource, METADATA_LIMIT, malformed, parse_index, read_limited,
    refs_of,
};
use crate::oci::tarwalk::{clean_entry_path, walk};
use crate::oci::{
    ANNOTATION_REF_NAME, Descriptor, Digest, ImageConfig, ImageManifest, MEDIA_DOCKER_CONFIG,
    MEDIA_DOCKER_LAYER_GZIP, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_LAYER_ZSTD, OciError,
};

/// Docker's media type for an uncompressed layer.
const MEDIA_DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// One indexed tar entry.
#[derive(Debug, Clone)]
pub(super) enum TarEntry {
    Regular { offset: u64, size: u64 },
    Symlink(String),
    Other,
}

/// Indexes a tar file: normalized entry name → entry. Refuses traversal and out-of-file ranges.
pub(super) fn index_tar(path: &Path) -> Result<HashMap<String, TarEntry>, OciError> {
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

pub(super) fn open_oci_archive(
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

pub(super) fn open_docker_archive(
    path: &Path,
    entries: &HashMap<String, TarEntry>,
) -> Result<LayoutSource, OciError> {
    let images: Vec<DockerImage> =
        serde_json::from_slice(&read_entry(path, entries, "manifest.json")?).map_err(
            OciError::decode(path.join("manifest.json").display().to_string()),
        )?;
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
        let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(
            OciError::decode(path.join(&config_name).display().to_string()),
        )?;
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
                    Digest::from_hex(&hasher.finalize_hex())?
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
        let bytes =
            serde_json::to_vec(&manifest).map_err(OciError::decode(path.display().to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_and_magic() {
        assert_eq!(resolve_dots("a/b/../c").as_deref(), Some("a/c"));
        assert_eq!(resolve_dots("a/../../c"), None);
        assert_eq!(
            layer_media_type(&[0x1f, 0x8b, 8, 0]),
            MEDIA_DOCKER_LAYER_GZIP
        );
        assert_eq!(layer_media_type(b"ustar"), MEDIA_DOCKER_LAYER_TAR);
    }
}
