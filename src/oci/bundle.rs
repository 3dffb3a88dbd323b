//! The offline bundle writer: an OCI image layout streamed into one tar file.
//!
//! Layout (as `skopeo copy … oci-archive:` and `oras` read it):
//!
//! ```text
//! oci-layout                 {"imageLayoutVersion":"1.0.0"}
//! blobs/sha256/<hex>         every blob, once
//! index.json                 written last; one entry per root image, annotated with
//!                            org.opencontainers.image.ref.name = the full upstream reference
//! ```
//!
//! Deterministic: tar headers are ustar with mtime 0, uid/gid 0, mode 0644 (0755 for the two
//! directories), blobs in the order added, `index.json` entries sorted by (ref name, digest) —
//! the same content added in the same order gives the same bytes. Crash-safe: the tar is written
//! under a temporary name next to the target and renamed into place by [`BundleWriter::finish`]
//! after an fsync; a writer dropped before `finish` removes its temporary file.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

use super::verify::{SyncVerifyingReader, io_error_to_oci};
use super::{ANNOTATION_REF_NAME, Descriptor, Digest, ImageIndex, MEDIA_OCI_INDEX, OciError};

/// Contents of the `oci-layout` file.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Streams an OCI image layout into a tar file.
pub struct BundleWriter {
    path: PathBuf,
    tmp: PathBuf,
    tar: Option<tar::Builder<BufWriter<File>>>,
    blobs: HashSet<Digest>,
    roots: Vec<Descriptor>,
    bytes_written: u64,
}

impl std::fmt::Debug for BundleWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleWriter")
            .field("path", &self.path)
            .field("blobs", &self.blobs.len())
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(kind);
    h
}

impl BundleWriter {
    /// Starts a bundle that will appear at `path` when [`BundleWriter::finish`] succeeds.
    pub fn create(path: &Path) -> Result<Self, OciError> {
        let dir = parent_dir(path);
        std::fs::create_dir_all(dir)
            .map_err(|e| OciError::io(format!("create {}", dir.display()), e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "bundle.tar".into());
        let tmp = dir.join(format!(".{name}.partial-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| OciError::io(format!("create {}", tmp.display()), e))?;
        let mut writer = BundleWriter {
            path: path.to_path_buf(),
            tmp,
            tar: Some(tar::Builder::new(BufWriter::with_capacity(1 << 20, file))),
            blobs: HashSet::new(),
            roots: Vec::new(),
            bytes_written: 0,
        };
        writer.append("oci-layout", OCI_LAYOUT.len() as u64, OCI_LAYOUT)?;
        for d in ["blobs/", "blobs/sha256/"] {
            let mut h = header(0, 0o755, tar::EntryType::Directory);
            writer
                .builder()
                .append_data(&mut h, d, std::io::empty())
                .map_err(|e| OciError::io(format!("write {d} to bundle"), e))?;
        }
        Ok(writer)
    }

    fn builder(&mut self) -> &mut tar::Builder<BufWriter<File>> {
        self.tar.as_mut().expect("bundle writer used after finish")
    }

    fn append(&mut self, name: &str, size: u64, data: impl Read) -> Result<(), OciError> {
        let mut h = header(size, 0o644, tar::EntryType::Regular);
        self.builder()
            .append_data(&mut h, name, data)
            .map_err(|e| OciError::io(format!("write {name} to bundle"), e))?;
        self.bytes_written += size;
        Ok(())
    }

    /// Whether the blob is already in the bundle.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blobs.contains(digest)
    }

    /// Blob bytes written so far (payload, without tar overhead).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Copies a blob of `descriptor.size` bytes from `reader`, verifying size and SHA-256 while
    /// copying. Returns `false` (and does not read) when the blob is already in the bundle. A
    /// mismatch fails the call and leaves the bundle unusable (drop it; nothing is renamed).
    pub fn add_blob(
        &mut self,
        descriptor: &Descriptor,
        reader: impl Read,
    ) -> Result<bool, OciError> {
        if self.blobs.contains(&descriptor.digest) {
            return Ok(false);
        }
        let mut verifying =
            SyncVerifyingReader::for_descriptor(reader.take(descriptor.size), descriptor);
        let name = format!("blobs/sha256/{}", descriptor.digest.hex());
        self.append(&name, descriptor.size, &mut verifying)
            .map_err(|e| match e {
                // The verifying reader's mismatch, carried through the tar writer.
                OciError::Io { context, source } => io_error_to_oci(context, source),
                e => e,
            })?;
        self.blobs.insert(descriptor.digest.clone());
        Ok(true)
    }

    /// Adds an in-memory blob and returns its descriptor.
    pub fn add_bytes(&mut self, media_type: &str, bytes: &[u8]) -> Result<Descriptor, OciError> {
        let d = Descriptor::for_bytes(media_type, bytes);
        self.add_blob(&d, bytes)?;
        Ok(d)
    }

    /// Lists `descriptor` (a manifest or index already added as a blob) in `index.json`, with
    /// `ref_name` (the full upstream reference, e.g. `ghcr.io/siderolabs/imager:v1.11.0`) as its
    /// `org.opencontainers.image.ref.name` annotation. The same (ref, digest) pair is listed once.
    pub fn add_root(&mut self, descriptor: &Descriptor, ref_name: Option<String>) {
        let mut d = Descriptor {
            media_type: descriptor.media_type.clone(),
            digest: descriptor.digest.clone(),
            size: descriptor.size,
            annotations: BTreeMap::new(),
            platform: descriptor.platform.clone(),
        };
        if let Some(r) = ref_name {
            d.annotations.insert(ANNOTATION_REF_NAME.to_string(), r);
        }
        if !self.roots.contains(&d) {
            self.roots.push(d);
        }
    }

    /// Writes `index.json`, fsyncs, and renames the bundle into place. Fails when a root's blob
    /// was never added, or when two roots claim the same ref name with different digests.
    pub fn finish(mut self) -> Result<PathBuf, OciError> {
        let mut roots = std::mem::take(&mut self.roots);
        roots.sort_by(|a, b| {
            let ra = a.annotations.get(ANNOTATION_REF_NAME);
            let rb = b.annotations.get(ANNOTATION_REF_NAME);
            (ra, &a.digest).cmp(&(rb, &b.digest))
        });
        for r in &roots {
            if !self.blobs.contains(&r.digest) {
                return Err(OciError::NotFound(format!(
                    "bundle root {} ({}) was listed but its manifest blob was never added",
                    r.annotations
                        .get(ANNOTATION_REF_NAME)
                        .map(String::as_str)
                        .unwrap_or("<no ref name>"),
                    r.digest
                )));
            }
        }
        for w in roots.windows(2) {
            let (ra, rb) = (
                w[0].annotations.get(ANNOTATION_REF_NAME),
                w[1].annotations.get(ANNOTATION_REF_NAME),
            );
            if let Some(name) = ra
                && ra == rb
            {
                return Err(OciError::Malformed {
                    what: "bundle index".into(),
                    message: format!(
                        "ref name {name} points at two digests ({} and {})",
                        w[0].digest, w[1].digest
                    ),
                });
            }
        }
        let index = ImageIndex {
            schema_version: 2,
            media_type: Some(MEDIA_OCI_INDEX.to_string()),
            manifests: roots,
            annotations: BTreeMap::new(),
        };
        let json = serde_json::to_vec(&index).expect("index serializes");
        self.append("index.json", json.len() as u64, json.as_slice())?;
        let tar = self.tar.take().expect("finish called once");
        let ctx = |what: &str| format!("{what} {}", self.tmp.display());
        let buf = tar
            .into_inner()
            .map_err(|e| OciError::io(ctx("write"), e))?;
        let file = buf
            .into_inner()
            .map_err(|e| OciError::io(ctx("write"), e.into_error()))?;
        file.sync_all().map_err(|e| OciError::io(ctx("fsync"), e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| {
            OciError::io(
                format!("rename {} to {}", self.tmp.display(), self.path.display()),
                e,
            )
        })?;
        let dir = parent_dir(&self.path);
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| OciError::io(format!("fsync {}", dir.display()), e))?;
        Ok(self.path.clone())
    }
}

impl Drop for BundleWriter {
    fn drop(&mut self) {
        if self.tar.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.tar");
        let mut w = BundleWriter::create(&path).unwrap();
        let mut d = Descriptor::for_bytes("x", b"hello");
        d.digest = Digest::of(b"other");
        let err = w.add_blob(&d, &b"hello"[..]).unwrap_err();
        assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
        let short = Descriptor {
            size: 10,
            ..Descriptor::for_bytes("x", b"hello")
        };
        assert!(w.add_blob(&short, &b"hello"[..]).is_err());
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
