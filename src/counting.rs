//! Counting the bytes that pass through a reader or a writer: one adapter for output sizes (a
//! plain count), counters shared with another reader, and progress displays.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a [`Counting`] adapter adds the number of bytes it passes on.
pub trait Tally {
    /// Adds `n` bytes.
    fn add(&mut self, n: u64);
}

impl Tally for u64 {
    fn add(&mut self, n: u64) {
        *self += n;
    }
}

/// A counter another owner reads while the bytes flow (e.g. compressed bytes consumed by a
/// decoder further down the chain).
impl Tally for Arc<AtomicU64> {
    fn add(&mut self, n: u64) {
        self.fetch_add(n, Ordering::Relaxed);
    }
}

/// A reader or writer that adds the bytes it passes on to a [`Tally`] (by default a count of
/// its own, see [`Counting::count`]).
pub struct Counting<T, C = u64> {
    inner: T,
    tally: C,
}

impl<T> Counting<T> {
    /// Wraps `inner` with a count of zero.
    pub fn new(inner: T) -> Self {
        Counting { inner, tally: 0 }
    }

    /// Bytes passed on so far.
    pub fn count(&self) -> u64 {
        self.tally
    }
}

impl<T, C: Tally> Counting<T, C> {
    /// Wraps `inner`, adding to `tally`.
    pub fn with_tally(inner: T, tally: C) -> Self {
        Counting { inner, tally }
    }
}

impl<R: Read, C: Tally> Read for Counting<R, C> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.tally.add(n as u64);
        Ok(n)
    }
}

impl<W: Write, C: Tally> Write for Counting<W, C> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.tally.add(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_passes() {
        let mut out = Vec::new();
        let mut w = Counting::new(&mut out);
        w.write_all(b"hello").unwrap();
        write!(w, " {}", 42).unwrap();
        assert_eq!(w.count(), 8);
        assert_eq!(out, b"hello 42");

        let shared = Arc::new(AtomicU64::new(0));
        let mut r = Counting::with_tally(&b"abcdef"[..], Arc::clone(&shared));
        let mut got = [0u8; 4];
        r.read_exact(&mut got).unwrap();
        assert_eq!(shared.load(Ordering::Relaxed), 4);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(shared.load(Ordering::Relaxed), 6);
    }
}
