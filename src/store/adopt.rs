//! Adopting a file a tool writes under `blobs/tmp/`: [`BlobStore::adopt_following`] hashes it
//! while the tool is still appending to it, so that hashing a large output overlaps the tool's
//! run instead of following it, and commits it under its content name without copying it.

use std::fs::File;
use std::io::{self, Read as _};
use std::os::unix::fs::{FileExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use super::StoreError;
use super::blobs::{BlobInfo, BlobStore, io_err};

/// Read size of the hashing pass.
const ADOPT_CHUNK: usize = 1 << 20;
/// Bytes at the start of a followed file read again once its writer has finished: a tool
/// that patches its header after writing the rest (none we run does) is caught there.
const HEAD_GUARD: usize = 64 << 10;
/// Pause of a follower that has caught up with the writer.
const POLL: Duration = Duration::from_millis(2);

/// Whether the tool writing a file that [`BlobStore::adopt_following`] follows is still
/// running, has succeeded, or has failed.
#[derive(Debug, Default)]
pub struct WriteProgress(OnceLock<bool>);

impl WriteProgress {
    /// The writing side's guard: call [`WriterEnd::succeeded`] after the last write; dropped
    /// without it (an error, a panic), the write counts as failed.
    pub fn writer(&self) -> WriterEnd<'_> {
        WriterEnd(&self.0)
    }

    /// `None` while the writer runs, then whether it succeeded.
    fn outcome(&self) -> Option<bool> {
        self.0.get().copied()
    }
}

/// The writing side of a [`WriteProgress`].
#[derive(Debug)]
pub struct WriterEnd<'a>(&'a OnceLock<bool>);

impl WriterEnd<'_> {
    /// The tool has finished and every byte of the file is written.
    pub fn succeeded(self) {
        let _ = self.0.set(true);
    }
}

impl Drop for WriterEnd<'_> {
    fn drop(&mut self) {
        let _ = self.0.set(false);
    }
}

/// The error of a follower whose writer failed (the writer reports the cause itself).
fn writer_failed() -> io::Error {
    io::Error::other("the tool writing the file failed")
}

/// Opens `tmp` for reading and hole punching; a followed file may not exist yet.
fn open(tmp: &Path, follow: Option<&WriteProgress>) -> io::Result<File> {
    loop {
        let outcome = follow.map_or(Some(true), WriteProgress::outcome);
        match File::options().read(true).write(true).open(tmp) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && outcome.is_none() => {
                std::thread::sleep(POLL)
            }
            Err(_) if outcome == Some(false) => return Err(writer_failed()),
            r => return r,
        }
    }
}

/// Reads until `buf` is full or the file ends. A followed file ends only once its writer
/// has succeeded: until then an end of file means "not written yet". The outcome is read
/// before each read, so a read that finds the end after the writer's success is the real end.
fn fill(file: &mut File, buf: &mut [u8], follow: Option<&WriteProgress>) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let outcome = follow.map_or(Some(true), WriteProgress::outcome);
        if outcome == Some(false) {
            return Err(writer_failed());
        }
        match file.read(&mut buf[n..]) {
            Ok(0) if outcome == Some(true) => break,
            Ok(0) => std::thread::sleep(POLL),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl BlobStore {
    /// Stores `tmp` (a [`BlobStore::temp_path`]) that a tool is writing, strictly by appending
    /// (each byte once, in order), under its content name without copying it: one read pass
    /// behind the writer hashes it (BLAKE3 and SHA-256), and once `progress` reports success
    /// the file is fsynced and committed as [`super::BlobWriter::finish`] does. Fails
    /// (removing the file) when the writer fails. If the file's first bytes or size changed
    /// behind the pass, it is hashed again.
    pub fn adopt_following(
        &self,
        tmp: &Path,
        progress: &WriteProgress,
    ) -> Result<BlobInfo, StoreError> {
        let r = self.adopt(tmp, Some(progress));
        if r.is_err() {
            let _ = std::fs::remove_file(tmp);
        }
        r
    }

    /// Hashes and commits `tmp`: a finished file (`follow` is `None`), or one behind its writer.
    fn adopt(&self, tmp: &Path, follow: Option<&WriteProgress>) -> Result<BlobInfo, StoreError> {
        let ctx = || format!("adopt {}", tmp.display());
        let mut file = open(tmp, follow).map_err(io_err(ctx()))?;
        let mut blake3 = blake3::Hasher::new();
        let mut sha256 = crate::sha256::Sha256::new();
        let mut buf = vec![0u8; ADOPT_CHUNK];
        let mut head = Vec::new();
        let mut size = 0u64;
        let started = std::time::Instant::now();
        loop {
            let n = fill(&mut file, &mut buf, follow).map_err(io_err(ctx()))?;
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            blake3.update(chunk);
            sha256.update(chunk);
            if follow.is_some() && size == 0 {
                head.extend_from_slice(&chunk[..n.min(HEAD_GUARD)]);
            }
            size += n as u64;
            if n < buf.len() {
                break;
            }
        }
        if follow.is_some() {
            let mut again = vec![0u8; head.len()];
            file.read_exact_at(&mut again, 0).map_err(io_err(ctx()))?;
            let len = file.metadata().map_err(io_err(ctx()))?.len();
            if again != head || len != size {
                tracing::warn!(
                    file = %tmp.display(),
                    "the file changed behind the hashing pass (not written by appending only): hashing it again"
                );
                drop(file);
                return self.adopt(tmp, None);
            }
        }
        let hashed = started.elapsed();
        file.sync_all().map_err(io_err("sync blob"))?;
        drop(file);
        let info = BlobInfo {
            blake3: blake3.finalize().to_hex().to_string(),
            sha256: sha256.finalize_hex(),
            size,
        };
        tracing::debug!(
            size,
            read_ms = hashed.as_millis() as u64,
            synced_ms = started.elapsed().as_millis() as u64,
            "adopted a file"
        );
        std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o644))
            .map_err(io_err(ctx()))?;
        self.commit(tmp, &info)?;
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Seek as _, SeekFrom, Write as _};

    use super::*;
    use crate::store::blobs::tests::store;

    /// Data, 3 MiB of zeros, patterned data, a short tail.
    fn sample() -> Vec<u8> {
        let mut bytes = vec![7u8; (1 << 20) + 5];
        bytes.resize(bytes.len() + (3 << 20), 0);
        bytes.extend((0..(1u32 << 20)).map(|i| (i % 253) as u8));
        bytes.extend(b"tail");
        bytes
    }

    fn expected(bytes: &[u8]) -> BlobInfo {
        BlobInfo {
            blake3: blake3::hash(bytes).to_hex().to_string(),
            sha256: crate::oci::Digest::of(bytes).hex().to_string(),
            size: bytes.len() as u64,
        }
    }

    /// Follows `tmp` while `write` (given the writer's guard) runs on another thread.
    fn follow(
        blobs: &BlobStore,
        tmp: &Path,
        write: impl FnOnce(WriterEnd<'_>) + Send,
    ) -> Result<BlobInfo, StoreError> {
        let progress = WriteProgress::default();
        std::thread::scope(|s| {
            s.spawn(|| write(progress.writer()));
            blobs.adopt_following(tmp, &progress)
        })
    }

    #[test]
    fn files_adopted_in_place_get_both_digests_and_keep_their_bytes() {
        use std::os::unix::fs::MetadataExt as _;
        let (_dir, blobs) = store();
        let bytes = sample();
        let tmp = blobs.temp_path();
        std::fs::write(&tmp, &bytes).unwrap();
        // the writer finished before the pass started
        let progress = WriteProgress::default();
        progress.writer().succeeded();
        let info = blobs.adopt_following(&tmp, &progress).unwrap();
        assert!(!tmp.exists());
        let expected = expected(&bytes);
        assert_eq!(info, expected);
        assert_eq!(blobs.by_sha256(&expected.sha256).unwrap(), Some(expected));
        let path = blobs.path(&info.blake3);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o644);
    }

    #[test]
    fn a_file_still_being_appended_to_is_hashed_behind_its_writer() {
        let (_dir, blobs) = store();
        let bytes = sample();
        let tmp = blobs.temp_path();
        let info = follow(&blobs, &tmp, |end| {
            // the follower starts before the file exists, then catches up again and again
            std::thread::sleep(Duration::from_millis(20));
            let mut f = File::create(&tmp).unwrap();
            for piece in bytes.chunks(300_000) {
                f.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            end.succeeded();
        })
        .unwrap();
        assert_eq!(info, expected(&bytes));
        assert!(!tmp.exists());
        assert_eq!(std::fs::read(blobs.path(&info.blake3)).unwrap(), bytes);
    }

    #[test]
    fn a_failing_writer_fails_the_adoption_and_leaves_no_file() {
        let (_dir, blobs) = store();
        let tmp = blobs.temp_path();
        let err = follow(&blobs, &tmp, |_end| {
            std::fs::write(&tmp, vec![1u8; 3 << 20]).unwrap();
            // dropped without `succeeded`: the tool failed
        })
        .unwrap_err();
        assert!(err.to_string().contains("failed"), "{err}");
        assert!(!tmp.exists());
        // a writer that fails before creating the file ends the wait as well
        let err = follow(&blobs, &tmp, |end| drop(end)).unwrap_err();
        assert!(err.to_string().contains("failed"), "{err}");
    }

    #[test]
    fn a_header_patched_after_the_rest_is_hashed_again() {
        let (_dir, blobs) = store();
        let mut bytes = sample();
        let tmp = blobs.temp_path();
        let info = follow(&blobs, &tmp, |end| {
            let mut f = File::create(&tmp).unwrap();
            f.write_all(&bytes).unwrap();
            // give the follower time to hash the original first chunk, then patch it
            std::thread::sleep(Duration::from_millis(50));
            f.seek(SeekFrom::Start(100)).unwrap();
            f.write_all(b"patched").unwrap();
            end.succeeded();
        })
        .unwrap();
        bytes[100..107].copy_from_slice(b"patched");
        assert_eq!(info, expected(&bytes));
        assert_eq!(std::fs::read(blobs.path(&info.blake3)).unwrap(), bytes);
    }
}
