//! The blob store: immutable files named by their BLAKE3 hash under `<dataDir>/blobs`, with a
//! SHA-256 index in the metadata store for OCI-addressed content.
//!
//! Writes go to `blobs/tmp/`, are fsynced, renamed into `blobs/<2 hex>/<64 hex>` and the parent
//! directory is fsynced, so a blob is either complete under its final name or not there at all.
//! Temporary files left by a crash are swept when the store opens. Every directory the store
//! creates (the store's root, `tmp/`, the fan-out directories) is fsynced into its parent
//! before a blob in it is acknowledged.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek as _, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::sha256::Sha256;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

pub use super::writer::{BlobWriter, PendingBlob};
use super::{MetaStore, StoreError, VerifiedBlob, create_dir, sync_dir};

/// Tree mapping a SHA-256 hex digest to the blob's `BlobInfo` (JSON).
pub(super) const SHA_TREE: &str = "blobs_by_sha256";
/// Copy buffer size for streaming writes.
pub(super) const CHUNK: usize = 256 * 1024;

/// Identity of a stored blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    /// BLAKE3 hex: the file name and internal identity.
    pub blake3: String,
    /// SHA-256 hex: the OCI / cosign identity.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// Content-addressed file storage.
#[derive(Clone)]
pub struct BlobStore {
    root: PathBuf,
    meta: Arc<dyn MetaStore>,
    /// Directories known to exist durably (created and fsynced into their parents, or found
    /// at open and fsynced then); others are created through [`create_dir`] before use.
    durable_dirs: Arc<Mutex<HashSet<PathBuf>>>,
}

use crate::io_context::io_err;

/// Whether `name` is a blob name: 64 lowercase hex digits (a BLAKE3 digest).
pub fn is_blob_name(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `name` if it is a blob name, else [`StoreError::InvalidBlobName`].
pub(super) fn blob_name(name: &str) -> Result<&str, StoreError> {
    if is_blob_name(name) {
        Ok(name)
    } else {
        Err(StoreError::InvalidBlobName {
            name: name.to_string(),
        })
    }
}

/// The files of a fan-out tree: `(name, path)` of every regular file in the subdirectories of
/// `dir` named by two hex digits (`blobs/<2 hex>/…`, `blobs/docs/<kind>/<2 hex>/…`). A missing
/// `dir` has none.
pub(super) fn fanout_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, StoreError> {
    let list = |d: &Path| io_err(format!("list {}", d.display()));
    let mut out = Vec::new();
    let subs = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(list(dir)(e).into()),
    };
    for sub in subs {
        let sub = sub.map_err(list(dir))?;
        let prefix = sub.file_name();
        let prefix = prefix.to_string_lossy();
        let fanout = prefix.len() == 2 && prefix.bytes().all(|b| b.is_ascii_hexdigit());
        if !fanout || !sub.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let sub = sub.path();
        for file in std::fs::read_dir(&sub).map_err(list(&sub))? {
            let file = file.map_err(list(&sub))?;
            if file.file_type().is_ok_and(|t| t.is_file()) {
                out.push((file.file_name().to_string_lossy().into_owned(), file.path()));
            }
        }
    }
    Ok(out)
}

impl BlobStore {
    /// Opens the store rooted at `root` (usually `<dataDir>/blobs`) and sweeps crash leftovers.
    pub fn open(root: &Path, meta: Arc<dyn MetaStore>) -> Result<Self, StoreError> {
        let tmp = root.join("tmp");
        create_dir(&tmp)?;
        // Fan-out directories a previous run created are durable from here on.
        sync_dir(root).map_err(io_err(format!("sync {}", root.display())))?;
        let mut swept = 0usize;
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                if std::fs::remove_file(entry.path()).is_ok() {
                    swept += 1;
                }
            }
        }
        if swept > 0 {
            tracing::info!(swept, dir = %tmp.display(), "removed temporary blob files left by an interrupted write");
        }
        let durable_dirs = HashSet::from([root.to_path_buf(), tmp]);
        Ok(Self {
            root: root.to_path_buf(),
            meta,
            durable_dirs: Arc::new(Mutex::new(durable_dirs)),
        })
    }

    /// The store's root directory (`<dataDir>/blobs`).
    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    /// The metadata store holding the SHA-256 index (and the catalog's small records).
    pub fn meta(&self) -> &Arc<dyn MetaStore> {
        &self.meta
    }

    /// The final path of the blob with BLAKE3 hex `blake3`; anything but a blob name (64
    /// lowercase hex digits) is refused, so no other path can be reached through it.
    pub fn path(&self, blake3: &str) -> Result<PathBuf, StoreError> {
        let name = blob_name(blake3)?;
        Ok(self.root.join(&name[..2]).join(name))
    }

    /// Whether the blob exists (`false` for anything but a blob name).
    pub fn contains(&self, blake3: &str) -> bool {
        self.path(blake3).is_ok_and(|p| p.is_file())
    }

    /// Opens a stored blob for reading.
    pub fn open_blob(&self, blake3: &str) -> Result<File, StoreError> {
        let path = self.path(blake3)?;
        Ok(File::open(path).map_err(io_err(format!("open blob {blake3}")))?)
    }

    /// Deletes the blob `blake3` (garbage collection) and, given its SHA-256 `sha256`, that
    /// index entry if it names this blob; `false` if the file was not there. Only blob names
    /// are accepted: nothing outside the store can be deleted through this. The entry goes
    /// first: a crash or a concurrent write of the same bytes between the two steps leaves at
    /// worst an entry naming a missing file, which reads as absent, never a stored blob the
    /// index has lost.
    pub fn remove_blob(&self, blake3: &str, sha256: Option<&str>) -> Result<bool, StoreError> {
        let path = self.path(blake3)?;
        if let Some(sha256) = sha256
            && let Some(raw) = self.meta.get(SHA_TREE, sha256.as_bytes())?
            && serde_json::from_slice::<BlobInfo>(&raw).is_ok_and(|info| info.blake3 == blake3)
        {
            self.meta.remove(SHA_TREE, sha256.as_bytes())?;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(format!("remove {}", path.display()))(e).into()),
        }
    }

    /// The SHA-256 index as BLAKE3 name → SHA-256 hex (entries that do not decode are left
    /// out), so that a collector can drop the entries of the blobs it removes.
    pub fn sha256_names(&self) -> Result<HashMap<String, String>, StoreError> {
        Ok(self
            .meta
            .scan(SHA_TREE)?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<BlobInfo>(&v).ok())
            .map(|info| (info.blake3, info.sha256))
            .collect())
    }

    /// Makes sure `dir` (inside the store) exists durably: created, and fsynced into its
    /// parent, at most once per process and directory.
    pub(super) fn ensure_dir(&self, dir: &Path) -> Result<(), StoreError> {
        let known = |dirs: &Mutex<HashSet<PathBuf>>| {
            dirs.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(dir)
        };
        if known(&self.durable_dirs) {
            return Ok(());
        }
        create_dir(dir)?;
        if !dir.starts_with(&self.root) || dir == self.root {
            return Ok(());
        }
        // Directories between the root and `dir` that existed already: fsync their parents
        // too (they may come from this run, created by a writer that has not synced yet).
        let mut at = dir;
        while at != self.root {
            let Some(parent) = at.parent() else { break };
            sync_dir(parent).map_err(io_err(format!("sync {}", parent.display())))?;
            at = parent;
        }
        self.durable_dirs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(dir.to_path_buf());
        Ok(())
    }

    /// Opens the blob with SHA-256 `sha256` for reading, checked against its BLAKE3 name while
    /// read; `None` if it is not stored. `size` (from a descriptor) must match the stored size.
    pub fn open_sha256(
        &self,
        sha256: &str,
        size: u64,
    ) -> Result<Option<VerifiedBlob<File>>, StoreError> {
        let Some(info) = self.by_sha256(sha256)? else {
            return Ok(None);
        };
        if info.size != size {
            return Err(StoreError::SizeMismatch {
                sha256: sha256.to_string(),
                stored: info.size,
                expected: size,
            });
        }
        let file = self.open_blob(&info.blake3)?;
        Ok(Some(VerifiedBlob::new(file, &info.blake3, info.size)))
    }

    /// Looks up a blob by its SHA-256 hex digest.
    pub fn by_sha256(&self, sha256: &str) -> Result<Option<BlobInfo>, StoreError> {
        match self.meta.get(SHA_TREE, sha256.as_bytes())? {
            None => Ok(None),
            Some(bytes) => {
                let info: BlobInfo =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                        tree: SHA_TREE.into(),
                        key: sha256.into(),
                        source: Box::new(e),
                    })?;
                // The index may outlive a blob removed by hand; treat that as absent.
                Ok(self.contains(&info.blake3).then_some(info))
            }
        }
    }

    /// Reads a whole (small) blob by SHA-256, refusing more than `limit` bytes.
    pub fn read_sha256(&self, sha256: &str, limit: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(info) = self.by_sha256(sha256)? else {
            return Ok(None);
        };
        if info.size > limit {
            return Err(StoreError::TooLarge {
                sha256: sha256.to_string(),
                size: info.size,
                limit,
            });
        }
        let mut buf = Vec::with_capacity(info.size as usize);
        self.open_blob(&info.blake3)?
            .read_to_end(&mut buf)
            .map_err(io_err(format!("read blob sha256:{sha256}")))?;
        Ok(Some(buf))
    }

    /// A fresh path under `blobs/tmp/` (swept at open if a crash leaves it behind), for a
    /// file a tool writes and [`BlobStore::adopt_file`] stores.
    pub fn temp_path(&self) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("{}.part", uuid::Uuid::new_v4()))
    }

    /// Starts a streaming write.
    pub fn writer(&self) -> Result<BlobWriter, StoreError> {
        let tmp = self.temp_path();
        let file = File::create(&tmp).map_err(io_err(format!("create {}", tmp.display())))?;
        Ok(BlobWriter::new(self.clone(), tmp, file))
    }

    /// Moves the file at `path` (on the same filesystem as the store) into the store as a
    /// deferred blob, hashing it on the way: no copy and no new file. Falls back to a copy when
    /// the rename crosses filesystems. Commit it with [`BlobStore::commit_batch`] (many) or
    /// [`BlobStore::commit_one`].
    pub fn adopt_file(&self, path: &Path) -> Result<PendingBlob, StoreError> {
        use std::os::unix::fs::PermissionsExt;
        let mut file = File::open(path).map_err(io_err(format!("open {}", path.display())))?;
        let mut blake3 = blake3::Hasher::new();
        let mut sha256 = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(io_err(format!("read {}", path.display())))?;
            if n == 0 {
                break;
            }
            blake3.update(&buf[..n]);
            sha256.update(&buf[..n]);
            size += n as u64;
        }
        let info = BlobInfo {
            blake3: blake3.finalize().to_hex().to_string(),
            sha256: sha256.finalize_hex(),
            size,
        };
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}.part", uuid::Uuid::new_v4()));
        if std::fs::rename(path, &tmp).is_err() {
            let mut w = self.writer()?;
            file.rewind()
                .map_err(io_err(format!("rewind {}", path.display())))?;
            io::copy(&mut file, &mut w).map_err(io_err(format!("copy {}", path.display())))?;
            return w.finish_deferred();
        }
        let pending = PendingBlob { tmp, info };
        std::fs::set_permissions(&pending.tmp, std::fs::Permissions::from_mode(0o644))
            .map_err(io_err(format!("chmod {}", pending.tmp.display())))?;
        Ok(pending)
    }

    /// Stores `bytes` and returns their identity.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<BlobInfo, StoreError> {
        let mut w = self.writer()?;
        w.write_all(bytes).map_err(io_err("write blob"))?;
        w.finish()
    }

    /// Streams `reader` into the store. When `expected_sha256` is given, a mismatch discards the
    /// data and fails.
    pub async fn put_stream<R: AsyncRead + Unpin>(
        &self,
        reader: R,
        expected_sha256: Option<&str>,
        progress: impl FnMut(u64),
    ) -> Result<BlobInfo, StoreError> {
        let w = self.write_stream(reader, expected_sha256, progress).await?;
        tokio::task::spawn_blocking(move || w.finish())
            .await
            .map_err(StoreError::task("blob writer"))?
    }

    /// Like [`BlobStore::put_stream`] but not yet durable: commit the result with
    /// [`BlobStore::commit_batch`] (many blobs, two syncs).
    pub async fn put_stream_deferred<R: AsyncRead + Unpin>(
        &self,
        reader: R,
        expected_sha256: Option<&str>,
        progress: impl FnMut(u64),
    ) -> Result<PendingBlob, StoreError> {
        self.write_stream(reader, expected_sha256, progress)
            .await?
            .finish_deferred()
    }

    /// Like [`BlobStore::put_stream_deferred`] for a reader that already verifies `sha256`
    /// (an `oci::ImageSource` blob stream fails its last read on a mismatch), so the content is
    /// hashed once instead of twice.
    pub async fn put_verified_stream_deferred<R: AsyncRead + Unpin>(
        &self,
        reader: R,
        sha256: &str,
        progress: impl FnMut(u64),
    ) -> Result<PendingBlob, StoreError> {
        let mut w = self.writer()?;
        w.vouch_sha256(sha256);
        copy_into(reader, &mut w, progress).await?;
        w.finish_deferred()
    }

    async fn write_stream<R: AsyncRead + Unpin>(
        &self,
        reader: R,
        expected_sha256: Option<&str>,
        progress: impl FnMut(u64),
    ) -> Result<BlobWriter, StoreError> {
        let mut w = self.writer()?;
        copy_into(reader, &mut w, progress).await?;
        if let Some(expected) = expected_sha256 {
            let actual = w.sha256_hex();
            if actual != expected {
                return Err(StoreError::DigestMismatch {
                    expected: expected.to_string(),
                    actual,
                });
            }
        }
        Ok(w)
    }

    /// Makes a batch of deferred blobs durable with two filesystem syncs in total instead of
    /// two per blob: sync the data of every temporary file, rename them all into place, then
    /// sync again for the directory entries. Used for trees of many small files.
    pub fn commit_batch(&self, pending: Vec<PendingBlob>) -> Result<Vec<BlobInfo>, StoreError> {
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        self.sync_filesystem()?;
        let mut out = Vec::with_capacity(pending.len());
        for mut p in pending {
            self.rename_into(&p.tmp, &self.path(&p.info.blake3)?)?;
            p.tmp = PathBuf::new();
            out.push(p.info.clone());
        }
        self.sync_filesystem()?;
        for info in &out {
            self.index(info)?;
        }
        Ok(out)
    }

    /// Records `info` in the SHA-256 index (durable after the next meta flush).
    pub(super) fn index(&self, info: &BlobInfo) -> Result<(), StoreError> {
        let record = serde_json::to_vec(info).map_err(|source| StoreError::Encode {
            what: "blob index entry",
            source,
        })?;
        self.meta.put(SHA_TREE, info.sha256.as_bytes(), &record)
    }

    /// Makes one deferred blob durable (its data synced, renamed into place, the directory
    /// synced) and returns its identity.
    pub fn commit_one(&self, mut pending: PendingBlob) -> Result<BlobInfo, StoreError> {
        pending.sync_data()?;
        self.commit(&pending.tmp, &pending.info)?;
        pending.tmp = PathBuf::new();
        Ok(pending.info.clone())
    }

    /// `syncfs(2)` on the filesystem holding the blobs.
    pub(super) fn sync_filesystem(&self) -> Result<(), StoreError> {
        let dir =
            File::open(&self.root).map_err(io_err(format!("open {}", self.root.display())))?;
        rustix::fs::syncfs(&dir)
            .map_err(|e| io_err(format!("syncfs {}", self.root.display()))(e.into()))?;
        Ok(())
    }

    /// Moves the synced temporary file `tmp` to its content name and indexes it.
    pub(super) fn commit(&self, tmp: &Path, info: &BlobInfo) -> Result<(), StoreError> {
        self.place(tmp, &self.path(&info.blake3)?)?;
        self.index(info)
    }

    /// Renames the synced temporary file `tmp` to `dest` (a content name: an existing file
    /// there holds the same bytes and is kept) and fsyncs the directory, which is created
    /// durably first if needed.
    pub(super) fn place(&self, tmp: &Path, dest: &Path) -> Result<(), StoreError> {
        self.rename_into(tmp, dest)?;
        // Also when the file was there: its writer may not have synced the directory yet.
        let dir = dest.parent().unwrap_or(&self.root);
        sync_dir(dir).map_err(io_err(format!("sync {}", dir.display())))?;
        Ok(())
    }

    /// Renames `tmp` to `dest` (a content name: an existing file there holds the same bytes
    /// and is kept, `tmp` removed), creating the directory durably first if needed. The
    /// rename itself is durable only after the directory (or the filesystem) is synced.
    pub(super) fn rename_into(&self, tmp: &Path, dest: &Path) -> Result<(), StoreError> {
        self.ensure_dir(dest.parent().unwrap_or(&self.root))?;
        if dest.is_file() {
            let _ = std::fs::remove_file(tmp);
            // The bytes were written again now: the garbage collector's grace period for
            // unreferenced blobs counts from here, not from the first write.
            touch(dest);
        } else {
            std::fs::rename(tmp, dest)
                .map_err(io_err(format!("rename into {}", dest.display())))?;
        }
        Ok(())
    }
}

/// Sets the modification time of `path` to now (best effort: a failure is logged).
fn touch(path: &Path) {
    let now = rustix::fs::Timespec {
        tv_sec: 0,
        tv_nsec: rustix::fs::UTIME_NOW,
    };
    let times = rustix::fs::Timestamps {
        last_access: now,
        last_modification: now,
    };
    if let Err(e) =
        rustix::fs::utimensat(rustix::fs::CWD, path, &times, rustix::fs::AtFlags::empty())
    {
        tracing::warn!(path = %path.display(), error = %e, "could not refresh the modification time of a blob written again");
    }
}

/// Copies `reader` into `w` in large chunks, reporting bytes to `progress`.
async fn copy_into<R: AsyncRead + Unpin>(
    mut reader: R,
    w: &mut BlobWriter,
    mut progress: impl FnMut(u64),
) -> Result<(), StoreError> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(io_err("read blob source"))?;
        if n == 0 {
            return Ok(());
        }
        // Local disk writes of one chunk are short; keeping them inline avoids a thread hop.
        w.write_all(&buf[..n]).map_err(io_err("write blob"))?;
        progress(n as u64);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::store::SledStore;

    /// An empty store in a temporary directory.
    pub(in crate::store) fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let meta: Arc<dyn MetaStore> = Arc::new(SledStore::open(&dir.path().join("meta")).unwrap());
        let blobs = BlobStore::open(&dir.path().join("blobs"), meta).unwrap();
        (dir, blobs)
    }

    #[test]
    fn adopted_files_move_into_the_store_with_both_digests() {
        let (dir, blobs) = store();
        let src = dir.path().join("extracted.mod");
        std::fs::write(&src, b"grub module bytes").unwrap();
        let pending = blobs.adopt_file(&src).unwrap();
        assert!(!src.exists(), "the file was copied, not moved");
        let infos = blobs.commit_batch(vec![pending]).unwrap();
        let expected = BlobInfo {
            blake3: blake3::hash(b"grub module bytes").to_hex().to_string(),
            sha256: crate::oci::Digest::of(b"grub module bytes")
                .hex()
                .to_string(),
            size: 17,
        };
        assert_eq!(infos, vec![expected.clone()]);
        assert_eq!(
            blobs.by_sha256(&expected.sha256).unwrap(),
            Some(expected.clone())
        );
        let mut back = Vec::new();
        blobs
            .open_blob(&expected.blake3)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, b"grub module bytes");
        // A second copy of the same content commits to the same blob.
        std::fs::write(&src, b"grub module bytes").unwrap();
        let again = blobs
            .commit_batch(vec![blobs.adopt_file(&src).unwrap()])
            .unwrap();
        assert_eq!(again, vec![expected]);
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs/tmp"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn one_adopted_file_commits_on_its_own() {
        let (dir, blobs) = store();
        let src = blobs.temp_path();
        std::fs::write(&src, b"an ISO a tool wrote").unwrap();
        let info = blobs.commit_one(blobs.adopt_file(&src).unwrap()).unwrap();
        assert!(!src.exists());
        assert_eq!(
            info.sha256,
            crate::sha256::hex_digest(b"an ISO a tool wrote")
        );
        assert_eq!(blobs.by_sha256(&info.sha256).unwrap(), Some(info.clone()));
        assert_eq!(
            std::fs::read(blobs.path(&info.blake3).unwrap()).unwrap(),
            b"an ISO a tool wrote"
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs/tmp"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn zeros_are_holes_and_hashed_like_bytes() {
        let (_d, s) = store();
        let mut w = s.writer().unwrap();
        w.write_all(b"ab").unwrap();
        w.write_zeros(3 << 20).unwrap();
        w.write_all(b"c").unwrap();
        w.write_zeros(5).unwrap();
        let info = w.finish().unwrap();
        let mut full = b"ab".to_vec();
        full.resize(2 + (3 << 20), 0);
        full.push(b'c');
        full.resize(full.len() + 5, 0);
        assert_eq!(info, s.put_bytes(&full).unwrap());
        assert_eq!(std::fs::read(s.path(&info.blake3).unwrap()).unwrap(), full);
    }

    #[test]
    fn put_and_read_back_by_both_hashes() {
        let (_d, s) = store();
        let info = s.put_bytes(b"hello").unwrap();
        assert_eq!(info.blake3, blake3::hash(b"hello").to_hex().to_string());
        assert_eq!(info.sha256, crate::sha256::hex_digest(b"hello"));
        assert!(s.contains(&info.blake3));
        assert_eq!(s.read_sha256(&info.sha256, 10).unwrap().unwrap(), b"hello");
        assert!(s.read_sha256(&info.sha256, 2).is_err());
        // Dedup: same content, same file, no temp left behind.
        let again = s.put_bytes(b"hello").unwrap();
        assert_eq!(again, info);
        assert_eq!(std::fs::read_dir(s.root.join("tmp")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn stream_with_digest_check() {
        let (_d, s) = store();
        let good = crate::sha256::hex_digest(b"abc");
        let mut seen = 0;
        let info = s
            .put_stream(&b"abc"[..], Some(&good), |n| seen += n)
            .await
            .unwrap();
        assert_eq!((info.size, seen), (3, 3));
        let err = s
            .put_stream(&b"abd"[..], Some(&good), |_| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        assert_eq!(std::fs::read_dir(s.root.join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn batch_commit() {
        let (_d, s) = store();
        let mut pending = Vec::new();
        for i in 0..20u8 {
            let mut w = s.writer().unwrap();
            w.write_all(&[i; 100]).unwrap();
            pending.push(w.finish_deferred().unwrap());
        }
        let infos = s.commit_batch(pending).unwrap();
        assert_eq!(infos.len(), 20);
        for (i, info) in infos.iter().enumerate() {
            assert_eq!(
                std::fs::read(s.path(&info.blake3).unwrap()).unwrap(),
                vec![i as u8; 100]
            );
            assert!(s.by_sha256(&info.sha256).unwrap().is_some());
        }
        assert_eq!(std::fs::read_dir(s.root.join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn removal_takes_the_index_entry_along_and_only_its_own() {
        let (_d, s) = store();
        let a = s.put_bytes(b"an evicted asset").unwrap();
        let b = s.put_bytes(b"a blob that stays").unwrap();
        assert_eq!(s.sha256_names().unwrap().get(&a.blake3), Some(&a.sha256));
        // An entry naming another blob is not this blob's to remove.
        assert!(s.remove_blob(&a.blake3, Some(&b.sha256)).unwrap());
        assert_eq!(s.by_sha256(&b.sha256).unwrap(), Some(b.clone()));
        assert!(s.meta.get(SHA_TREE, a.sha256.as_bytes()).unwrap().is_some());
        let a = s.put_bytes(b"an evicted asset").unwrap();
        assert!(s.remove_blob(&a.blake3, Some(&a.sha256)).unwrap());
        assert!(!s.contains(&a.blake3));
        assert!(s.meta.get(SHA_TREE, a.sha256.as_bytes()).unwrap().is_none());
        assert!(!s.sha256_names().unwrap().contains_key(&a.blake3));
        assert!(!s.remove_blob(&a.blake3, Some(&a.sha256)).unwrap());
        assert!(s.remove_blob("../keys/signing-key.pem", None).is_err());
    }

    #[test]
    fn writing_stored_bytes_again_refreshes_the_blob_mtime() {
        let (_d, s) = store();
        let info = s.put_bytes(b"an intermediate").unwrap();
        let path = s.path(&info.blake3).unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), old);
        s.put_bytes(b"an intermediate").unwrap();
        assert!(std::fs::metadata(&path).unwrap().modified().unwrap() > old);
    }

    #[test]
    fn crash_leftovers_are_swept() {
        let (d, s) = store();
        let w = s.writer().unwrap();
        std::mem::forget(w); // as if the process died mid-write
        assert_eq!(std::fs::read_dir(s.root.join("tmp")).unwrap().count(), 1);
        let meta: Arc<dyn MetaStore> = s.meta.clone();
        let reopened = BlobStore::open(&d.path().join("blobs"), meta).unwrap();
        assert_eq!(
            std::fs::read_dir(reopened.root.join("tmp"))
                .unwrap()
                .count(),
            0
        );
    }
}
