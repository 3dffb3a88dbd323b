//! Reading a stored blob while checking it against its own name: the BLAKE3 digest and size
//! recorded when it was written (and, for OCI blobs, when its SHA-256 was verified).
//!
//! Blobs read back from the store (layers flattened at import, extension layers and the base
//! initramfs at build time) are checked this way instead of by re-hashing SHA-256: the same
//! guarantee (any changed byte is caught), at several times the speed.

use std::io::{self, Read};
use std::path::PathBuf;

use super::{BlobStore, StoreError};
use crate::io_context::io_err;

/// A stored blob is not what its name says: bytes changed, missing or added, the file gone,
/// or the medium failing to return it. Carried inside the I/O error of a [`VerifiedBlob`]
/// read, so whoever handles a failure can find it in the cause chain
/// (`causes::find::<BlobDamage>`) and knows which blob to set aside.
#[derive(Debug, thiserror::Error)]
#[error("stored blob {blake3} is damaged: {detail}")]
pub struct BlobDamage {
    /// BLAKE3 name of the blob.
    pub blake3: String,
    /// What was found.
    pub detail: String,
    /// The I/O error behind it, when there is one.
    #[source]
    pub cause: Option<io::Error>,
}

/// Read size when a whole blob is checked.
const CHECK_CHUNK: usize = 1 << 20;

impl BlobStore {
    /// Reads the blob `blake3` whole and checks that it holds `size` bytes hashing to its
    /// name. A missing or changed blob is [`StoreError::BlobDamaged`]; other failures (no free
    /// file descriptors, say) say nothing about the blob and keep their own error.
    pub fn check(&self, blake3: &str, size: u64) -> Result<(), StoreError> {
        let damaged = |detail: &str, cause: io::Error| BlobDamage {
            blake3: blake3.to_string(),
            detail: detail.to_string(),
            cause: Some(cause),
        };
        let path = self.path(blake3)?;
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::BlobDamaged(damaged("the file is missing", e)));
            }
            Err(e) => return Err(io_err(format!("open blob {blake3}"))(e).into()),
        };
        let mut reader = VerifiedBlob::new(file, blake3, size);
        let mut buf = vec![0u8; CHECK_CHUNK];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    let invalid = io::ErrorKind::InvalidData;
                    return Err(StoreError::BlobDamaged(
                        match e.into_inner().map(|inner| inner.downcast::<BlobDamage>()) {
                            Some(Ok(damage)) => *damage,
                            Some(Err(other)) => damaged(
                                "its content does not verify",
                                io::Error::new(invalid, other),
                            ),
                            None => damaged("its content does not verify", invalid.into()),
                        },
                    ));
                }
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
                    return Err(StoreError::BlobDamaged(damaged(
                        "the medium failed to read it",
                        e,
                    )));
                }
                Err(e) => return Err(io_err(format!("read blob {blake3}"))(e).into()),
            }
        }
    }

    /// The path of the blob `blake3` once [`BlobStore::check`] has passed: for inputs handed
    /// by path to code or tools that read them without checking.
    pub fn checked_path(&self, blake3: &str, size: u64) -> Result<PathBuf, StoreError> {
        self.check(blake3, size)?;
        self.path(blake3)
    }
}

/// A reader over a stored blob that fails the read which completes it if the content does
/// not hash to the blob's BLAKE3 name or has a different size.
pub struct VerifiedBlob<R> {
    inner: R,
    blake3: String,
    size: u64,
    seen: u64,
    hasher: blake3::Hasher,
    verified: bool,
}

impl<R> VerifiedBlob<R> {
    /// Wraps `inner`, expecting exactly `size` bytes hashing to `blake3` (hex).
    pub fn new(inner: R, blake3: &str, size: u64) -> Self {
        VerifiedBlob {
            inner,
            blake3: blake3.to_string(),
            size,
            seen: 0,
            hasher: blake3::Hasher::new(),
            verified: false,
        }
    }

    /// Whether the whole content has been read and matched.
    pub fn is_verified(&self) -> bool {
        self.verified
    }

    fn damaged(&self, detail: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            BlobDamage {
                blake3: self.blake3.clone(),
                detail,
                cause: None,
            },
        )
    }
}

impl<R: Read> Read for VerifiedBlob<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.seen += n as u64;
        if self.seen > self.size {
            return Err(self.damaged(format!("more than {} bytes", self.size)));
        }
        self.hasher.update(&buf[..n]);
        if n == 0 && self.seen < self.size {
            return Err(self.damaged(format!("{} of {} bytes", self.seen, self.size)));
        }
        if self.seen == self.size && !self.verified {
            let actual = self.hasher.finalize().to_hex();
            if actual.as_str() != self.blake3 {
                return Err(self.damaged(format!("content hashes to {actual}")));
            }
            self.verified = true;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(data: &[u8], name: &str, size: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut r = VerifiedBlob::new(data, name, size);
        r.read_to_end(&mut out)?;
        assert!(r.is_verified());
        Ok(out)
    }

    #[test]
    fn intact_content_reads_and_verifies() {
        let data = vec![7u8; 300_000];
        let name = blake3::hash(&data).to_hex().to_string();
        assert_eq!(read_all(&data, &name, 300_000).unwrap(), data);
        let empty = blake3::hash(b"").to_hex().to_string();
        assert!(read_all(b"", &empty, 0).unwrap().is_empty());
    }

    #[test]
    fn changed_truncated_or_longer_content_fails() {
        let data = vec![7u8; 300_000];
        let name = blake3::hash(&data).to_hex().to_string();
        let mut flipped = data.clone();
        flipped[150_000] ^= 1;
        let e = read_all(&flipped, &name, 300_000).unwrap_err();
        assert!(e.to_string().contains("hashes to"), "{e}");
        let e = read_all(&data[..299_999], &name, 300_000).unwrap_err();
        assert!(e.to_string().contains("299999 of 300000"), "{e}");
        let e = read_all(&data, &name, 299_999).unwrap_err();
        assert!(e.to_string().contains("more than"), "{e}");
    }
}
