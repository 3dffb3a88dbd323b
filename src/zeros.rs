//! Runs of zero bytes: one shared zero block, a fast all-zero test and a zero writer, used
//! wherever images stay sparse (blob store, disk and FAT writers, compressors, `build -o`).

use std::io::{self, Write};

/// A shared, never-written block of zeros.
pub static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Whether every byte of `b` is zero (`memcmp` against [`ZEROS`], fast in any build).
pub fn is_zero(b: &[u8]) -> bool {
    b.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}

/// Writes `n` zero bytes to `out` from [`ZEROS`].
pub fn write_zeros(out: &mut (impl Write + ?Sized), mut n: u64) -> io::Result<()> {
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// Feeds `n` zero bytes to `update` in [`ZEROS`]-sized pieces (hashing a hole).
pub fn feed_zeros(mut n: u64, mut update: impl FnMut(&[u8])) {
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        update(&ZEROS[..k]);
        n -= k as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_test_sees_one_byte_anywhere() {
        let mut v = vec![0u8; 3 * ZEROS.len() + 17];
        assert!(is_zero(&v));
        assert!(is_zero(&[]));
        for at in [0, ZEROS.len() - 1, ZEROS.len(), v.len() - 1] {
            v[at] = 1;
            assert!(!is_zero(&v), "byte {at}");
            v[at] = 0;
        }
    }

    #[test]
    fn zeros_are_written_and_fed_in_full() {
        let mut out = Vec::new();
        write_zeros(&mut out, 150_001).unwrap();
        assert_eq!(out.len(), 150_001);
        assert!(is_zero(&out));
        let mut fed = 0usize;
        feed_zeros(150_001, |b| {
            assert!(is_zero(b));
            fed += b.len();
        });
        assert_eq!(fed, 150_001);
    }
}
