//! Reading a stored blob while checking it against its own name: the BLAKE3 digest and size
//! recorded when it was written (and, for OCI blobs, when its SHA-256 was verified).
//!
//! Blobs read back from the store (layers flattened at import, extension layers and the base
//! initramfs at build time) are checked this way instead of by re-hashing SHA-256: the same
//! guarantee (any changed byte is caught), at several times the speed.

use std::io::{self, Read};

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
            format!("stored blob {} is damaged: {detail}", self.blake3),
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
