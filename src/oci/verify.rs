//! Readers that check a stream against an expected SHA-256 digest and size while it is read.
//!
//! The check happens on the read that delivers the last expected byte (the digest is compared
//! there, so a caller that stops after exactly `size` bytes still gets the verdict), on the read
//! that delivers bytes past the expected size, and on a premature end of stream. Failures are
//! `io::ErrorKind::InvalidData` errors wrapping an [`OciError::DigestMismatch`] that names the
//! digest; [`io_error_to_oci`] unwraps it again.

use std::io::{self, Read};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::sha256::Sha256;
use tokio::io::{AsyncRead, ReadBuf};

use super::{Descriptor, Digest, OciError};

/// Shared state of the async and sync verifying readers.
struct Check {
    hasher: Sha256,
    expected: Digest,
    size: u64,
    seen: u64,
    verified: bool,
}

impl Check {
    fn new(expected: Digest, size: u64) -> Check {
        Check {
            hasher: Sha256::new(),
            expected,
            size,
            seen: 0,
            verified: false,
        }
    }

    fn mismatch(&self, expected: String, actual: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            OciError::DigestMismatch {
                what: format!("blob {}", self.expected),
                expected,
                actual,
            },
        )
    }

    /// Accounts for `data` just read (empty = end of stream).
    fn update(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            if self.seen != self.size {
                return Err(self.mismatch(
                    format!("{} bytes", self.size),
                    format!("{} bytes (stream ended early)", self.seen),
                ));
            }
            return self.finish();
        }
        self.seen += data.len() as u64;
        if self.seen > self.size {
            return Err(self.mismatch(
                format!("{} bytes", self.size),
                format!("at least {} bytes", self.seen),
            ));
        }
        self.hasher.update(data);
        if self.seen == self.size {
            self.finish()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.verified {
            return Ok(());
        }
        let actual = format!("sha256:{}", self.hasher.clone().finalize_hex());
        if actual != self.expected.as_str() {
            return Err(self.mismatch(self.expected.to_string(), actual));
        }
        self.verified = true;
        Ok(())
    }
}

/// An `AsyncRead` that verifies the SHA-256 digest and size of everything read through it.
pub struct VerifyingReader<R> {
    inner: R,
    check: Check,
}

impl<R> VerifyingReader<R> {
    /// Wraps `inner`, expecting exactly `size` bytes with SHA-256 `digest`.
    pub fn new(inner: R, digest: Digest, size: u64) -> VerifyingReader<R> {
        VerifyingReader {
            inner,
            check: Check::new(digest, size),
        }
    }

    /// Wraps `inner`, expecting the content `descriptor` names.
    pub fn for_descriptor(inner: R, descriptor: &Descriptor) -> VerifyingReader<R> {
        VerifyingReader::new(inner, descriptor.digest.clone(), descriptor.size)
    }

    /// Whether the full content has been read and matched its digest.
    pub fn is_verified(&self) -> bool {
        self.check.verified
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.check.seen
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for VerifyingReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let result = this.check.update(&buf.filled()[before..]);
                if result.is_err() {
                    buf.set_filled(before);
                }
                Poll::Ready(result)
            }
            other => other,
        }
    }
}

/// A `std::io::Read` that verifies the SHA-256 digest and size of everything read through it.
pub struct SyncVerifyingReader<R> {
    inner: R,
    check: Check,
}

impl<R> SyncVerifyingReader<R> {
    /// Wraps `inner`, expecting exactly `size` bytes with SHA-256 `digest`.
    pub fn new(inner: R, digest: Digest, size: u64) -> SyncVerifyingReader<R> {
        SyncVerifyingReader {
            inner,
            check: Check::new(digest, size),
        }
    }

    /// Wraps `inner`, expecting the content `descriptor` names.
    pub fn for_descriptor(inner: R, descriptor: &Descriptor) -> SyncVerifyingReader<R> {
        SyncVerifyingReader::new(inner, descriptor.digest.clone(), descriptor.size)
    }

    /// Whether the full content has been read and matched its digest.
    pub fn is_verified(&self) -> bool {
        self.check.verified
    }
}

impl<R: Read> Read for SyncVerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.check.update(&buf[..n])?;
        Ok(n)
    }
}

/// Checks in-memory `bytes` against `digest` and `size`.
pub fn verify_bytes(what: &str, bytes: &[u8], digest: &Digest, size: u64) -> Result<(), OciError> {
    if bytes.len() as u64 != size {
        return Err(OciError::DigestMismatch {
            what: what.to_string(),
            expected: format!("{size} bytes"),
            actual: format!("{} bytes", bytes.len()),
        });
    }
    let actual = Digest::of(bytes);
    if &actual != digest {
        return Err(OciError::DigestMismatch {
            what: what.to_string(),
            expected: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// Converts an I/O error to an `OciError`, unwrapping an `OciError` carried inside it (as the
/// verifying readers and the layer flattener produce).
pub fn io_error_to_oci(context: impl Into<String>, err: io::Error) -> OciError {
    let carries_oci = err
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<OciError>().is_some());
    if !carries_oci {
        return OciError::io(context, err);
    }
    let kind = err.kind();
    match err.into_inner().map(|inner| inner.downcast::<OciError>()) {
        Some(Ok(oci)) => *oci,
        Some(Err(other)) => OciError::io(context, io::Error::new(kind, other)),
        None => OciError::io(context, io::Error::from(kind)),
    }
}

/// Wraps an `OciError` into an `io::Error` (kind InvalidData) so it can cross `Read` boundaries.
pub fn oci_to_io_error(err: OciError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn async_reader_accepts_good_and_rejects_bad() {
        let data = b"hello world".to_vec();
        let d = Digest::of(&data);
        let mut r = VerifyingReader::new(&data[..], d.clone(), data.len() as u64);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert!(r.is_verified());
        assert_eq!(out, data);

        // Wrong content of the right size: fails on the last byte.
        let mut r = VerifyingReader::new(&b"hello worle"[..], d.clone(), 11);
        let err = r.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains(d.as_str()), "{err}");
        assert!(matches!(
            io_error_to_oci("x", err),
            OciError::DigestMismatch { .. }
        ));

        // Too short and too long.
        let mut r = VerifyingReader::new(&data[..5], d.clone(), 11);
        assert!(r.read_to_end(&mut Vec::new()).await.is_err());
        let long = b"hello world!".to_vec();
        let mut r = VerifyingReader::new(&long[..], d.clone(), 11);
        assert!(r.read_to_end(&mut Vec::new()).await.is_err());
    }

    #[test]
    fn sync_reader_and_bytes() {
        let data = vec![7u8; 100_000];
        let d = Digest::of(&data);
        let mut r = SyncVerifyingReader::new(&data[..], d.clone(), 100_000);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert!(r.is_verified());
        let mut bad = data.clone();
        bad[50_000] = 8;
        let mut r = SyncVerifyingReader::new(&bad[..], d.clone(), 100_000);
        assert!(r.read_to_end(&mut Vec::new()).is_err());
        assert!(verify_bytes("x", &data, &d, 100_000).is_ok());
        assert!(verify_bytes("x", &bad, &d, 100_000).is_err());
        assert!(verify_bytes("x", &data, &d, 99).is_err());
    }
}
