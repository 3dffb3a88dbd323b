//! Writing blobs: [`BlobWriter`] streams bytes into a temporary file under `blobs/tmp/` while
//! hashing them with BLAKE3 and SHA-256 (inline, or SHA-256 on a helper thread for large
//! outputs), and commits the file under its BLAKE3 name; [`PendingBlob`] is a written blob
//! whose commit is deferred to a batch.
//!
//! Bytes reach the file in aligned [`WRITE_CHUNK`] pieces whatever the caller's write sizes:
//! the kernel sizes a file's page-cache folios by the writes that create them. Serving a blob
//! with `sendfile(2)` costs CPU per folio, which 64 KiB folios already keep low; folios of
//! 1 MiB and more are taken from free blocks that a VM's free-page reporting may have handed
//! back to its host, so writing them costs a host fault per page (see docs/benchmarks.md,
//! "Fresh pages", and docs/benchmarks-history.md, "Page-cache folios").

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use crate::sha256::Sha256;

use super::StoreError;
use super::blobs::{BlobInfo, BlobStore};
use crate::io_context::io_err;

/// Size and alignment of the pieces a [`BlobWriter`] writes to its file (and the most it
/// holds back per blob).
pub const WRITE_CHUNK: usize = 256 << 10;

/// A fully written but not yet durable blob (see [`BlobStore::commit_batch`]).
pub struct PendingBlob {
    pub(super) tmp: PathBuf,
    pub(super) info: BlobInfo,
}

impl Drop for PendingBlob {
    /// An uncommitted blob (import failed or was abandoned) leaves no temporary file behind.
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl PendingBlob {
    /// The blob's identity once committed.
    pub fn info(&self) -> &BlobInfo {
        &self.info
    }

    /// Makes the data durable now (`fdatasync`), so that the batch commit's sync has little
    /// left to do; lets callers overlap syncing with other transfers.
    pub fn sync_data(&self) -> Result<(), StoreError> {
        File::open(&self.tmp)
            .and_then(|f| f.sync_data())
            .map_err(io_err(format!("sync {}", self.tmp.display())))?;
        Ok(())
    }
}

/// How a [`BlobWriter`] computes SHA-256.
enum ShaState {
    /// On the writing thread.
    Inline(Sha256),
    /// On a helper thread.
    Thread(crate::sha256::Sha256Thread),
}

/// A blob being written: hashes with BLAKE3 and SHA-256 as bytes arrive.
pub struct BlobWriter {
    store: BlobStore,
    tmp: PathBuf,
    file: Option<File>,
    /// Bytes hashed but not yet written; they end at `size`.
    pending: Vec<u8>,
    blake3: blake3::Hasher,
    /// SHA-256 being computed (`None` when the caller vouches for it, see `known_sha256`).
    sha256: Option<ShaState>,
    /// SHA-256 given by a caller whose reader already verifies it.
    known_sha256: Option<String>,
    size: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.file.is_none() {
            return Err(io::Error::other("blob writer already finished or failed"));
        }
        // Up to the next chunk boundary of the file, so every full piece stays aligned.
        let room = WRITE_CHUNK - (self.size % WRITE_CHUNK as u64) as usize;
        let n = buf.len().min(room);
        let piece = &buf[..n];
        if n == room && self.pending.is_empty() {
            self.write_out(piece)?;
        } else {
            self.pending.extend_from_slice(piece);
            if n == room {
                self.write_pending()?;
            }
        }
        self.blake3.update(piece);
        match self.sha256.as_mut() {
            Some(ShaState::Inline(h)) => h.update(piece),
            Some(ShaState::Thread(h)) => h.update(piece),
            None => {}
        }
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_pending()
    }
}

impl BlobWriter {
    /// A writer into the temporary file `tmp` (`file`) of `store`.
    pub(super) fn new(store: BlobStore, tmp: PathBuf, file: File) -> BlobWriter {
        BlobWriter {
            store,
            tmp,
            file: Some(file),
            pending: Vec::new(),
            blake3: blake3::Hasher::new(),
            sha256: Some(ShaState::Inline(Sha256::new())),
            known_sha256: None,
            size: 0,
        }
    }

    /// Takes `sha256` as the digest instead of computing it (the caller's reader verifies it).
    pub(super) fn vouch_sha256(&mut self, sha256: &str) {
        self.sha256 = None;
        self.known_sha256 = Some(sha256.to_string());
    }

    /// The SHA-256 hex of what was written (or the one the caller vouched for).
    pub(super) fn sha256_hex(&self) -> String {
        match (&self.known_sha256, &self.sha256) {
            (Some(known), _) => known.clone(),
            (None, Some(ShaState::Inline(h))) => h.clone().finalize_hex(),
            (None, Some(ShaState::Thread(_)) | None) => String::new(),
        }
    }

    /// Computes SHA-256 on a helper thread from now on (before any byte is written; large
    /// outputs: BLAKE3 and SHA-256 then run on two cores). Keeps hashing inline if the
    /// thread cannot start.
    pub fn hash_sha256_on_thread(&mut self) {
        if self.size != 0 || !matches!(self.sha256, Some(ShaState::Inline(_))) {
            return;
        }
        match crate::sha256::Sha256Thread::spawn() {
            Ok(t) => self.sha256 = Some(ShaState::Thread(t)),
            Err(e) => tracing::debug!(error = %e, "SHA-256 thread not started; hashing inline"),
        }
    }

    /// Ends a threaded SHA-256: its digest becomes `known_sha256`.
    fn settle_sha256(&mut self) -> Result<(), StoreError> {
        if let Some(ShaState::Thread(_)) = &self.sha256
            && let Some(ShaState::Thread(t)) = self.sha256.take()
        {
            let hex = t
                .finalize_hex()
                .ok_or(StoreError::Thread { what: "SHA-256" })?;
            self.known_sha256 = Some(hex);
        }
        Ok(())
    }

    /// Writes the bytes held back to the file.
    fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.write_out(&pending)?;
        self.pending = pending;
        self.pending.clear();
        Ok(())
    }

    /// Writes `bytes` at the file's end; a failure ends the writer (its file is removed).
    fn write_out(&mut self, bytes: &[u8]) -> io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already finished or failed"))?;
        if let Err(e) = file.write_all(bytes) {
            self.file = None;
            let _ = std::fs::remove_file(&self.tmp);
            return Err(e);
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes written so far that are in the file (the rest is held back until its piece is
    /// whole, or until [`Write::flush`]).
    pub fn in_file(&self) -> u64 {
        self.size - self.pending.len() as u64
    }

    /// The temporary file opened again for reading (what [`Self::in_file`] counts can be read
    /// from it while the writer goes on).
    pub fn open_read(&self) -> io::Result<File> {
        File::open(&self.tmp)
    }

    /// Appends `len` zero bytes as a hole (the blob file stays sparse); hashes them like data.
    pub fn write_zeros(&mut self, len: u64) -> io::Result<()> {
        self.write_pending()?;
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already finished"))?;
        let offset = i64::try_from(len).map_err(io::Error::other)?;
        io::Seek::seek(file, io::SeekFrom::Current(offset))?;
        if let Some(ShaState::Thread(h)) = self.sha256.as_mut() {
            h.update_zeros(len);
        }
        let (blake3, sha256) = (&mut self.blake3, &mut self.sha256);
        crate::zeros::feed_zeros(len, |z| {
            blake3.update(z);
            if let Some(ShaState::Inline(h)) = sha256.as_mut() {
                h.update(z);
            }
        });
        self.size += len;
        // a trailing hole only exists once the length is set
        file.set_len(self.size)
    }

    /// Makes the blob durable under its content name (index durable after the next meta flush).
    pub fn finish(mut self) -> Result<BlobInfo, StoreError> {
        self.write_pending().map_err(io_err("write blob"))?;
        let file = self.file.take().ok_or(StoreError::WriterFinished)?;
        file.sync_all().map_err(io_err("sync blob"))?;
        drop(file);
        self.settle_sha256()?;
        let info = BlobInfo {
            blake3: self.blake3.finalize().to_hex().to_string(),
            sha256: self.sha256_hex(),
            size: self.size,
        };
        self.store.commit(&self.tmp, &info)?;
        Ok(info)
    }
}

impl BlobWriter {
    /// Ends the write without syncing; commit it with [`BlobStore::commit_batch`].
    pub fn finish_deferred(mut self) -> Result<PendingBlob, StoreError> {
        self.write_pending().map_err(io_err("write blob"))?;
        let file = self.file.take().ok_or(StoreError::WriterFinished)?;
        drop(file);
        self.settle_sha256()?;
        Ok(PendingBlob {
            tmp: std::mem::take(&mut self.tmp),
            info: BlobInfo {
                blake3: self.blake3.finalize().to_hex().to_string(),
                sha256: self.sha256_hex(),
                size: self.size,
            },
        })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::WRITE_CHUNK;
    use crate::store::blobs::tests::store;
    use crate::synth::pseudo_random;

    #[test]
    fn bytes_reach_the_file_in_aligned_chunks_whatever_the_write_sizes() {
        let (_d, s) = store();
        let data = pseudo_random("blob-writer", 3 * WRITE_CHUNK + 12345);
        let mut w = s.writer().unwrap();
        let on_disk = |w: &super::BlobWriter| std::fs::metadata(&w.tmp).unwrap().len();
        w.write_all(&data[..WRITE_CHUNK - 1]).unwrap();
        assert_eq!(on_disk(&w), 0, "a partial chunk is held back");
        w.write_all(&data[WRITE_CHUNK - 1..WRITE_CHUNK + 10])
            .unwrap();
        assert_eq!(
            on_disk(&w) as usize,
            WRITE_CHUNK,
            "a full chunk goes out whole"
        );
        // An explicit flush writes what is held; later pieces realign at the next boundary.
        w.flush().unwrap();
        assert_eq!(on_disk(&w) as usize, WRITE_CHUNK + 10);
        let mut at = WRITE_CHUNK + 10;
        for size in [1usize, 4095, 8192, WRITE_CHUNK + 7, 3] {
            w.write_all(&data[at..at + size]).unwrap();
            at += size;
        }
        assert_eq!(on_disk(&w) as usize, 2 * WRITE_CHUNK);
        w.write_all(&data[at..]).unwrap();
        w.write_zeros(5).unwrap();
        let info = w.finish().unwrap();
        let mut expected = data.clone();
        expected.extend_from_slice(&[0; 5]);
        assert_eq!(
            std::fs::read(s.path(&info.blake3).unwrap()).unwrap(),
            expected
        );
        assert_eq!(info, s.put_bytes(&expected).unwrap());
    }
}
