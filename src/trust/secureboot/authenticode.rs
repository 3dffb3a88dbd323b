//! Authenticode signing of PE files (Microsoft "Windows Authenticode Portable Executable
//! Signature Format"; imager spec §7.4): the image hash, and the signature appended as a
//! `WIN_CERTIFICATE` with the certificate-table data directory pointing at it — what `sbsign`
//! and upstream's go-uefi write, and what UEFI firmware checks against `db`.
//!
//! The image hash covers the headers except the CheckSum field and the certificate-table
//! directory entry, then every section's raw data in file order, then whatever follows the
//! last section (the file is first zero-padded to a multiple of 8, as `sbsign` does). Files
//! are read in chunks: a UKI is as large as its kernel and initramfs.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::SecureBootError as AuthenticodeError;
use super::keys::SecureBootKeys;
use super::pkcs7::authenticode_signed_data;

/// Index of the certificate table in the data directories.
const DIR_SECURITY: usize = 4;
/// Largest PE header region read (`SizeOfHeaders`).
const MAX_HEADERS: u64 = 1 << 20;
/// `WIN_CERT_REVISION_2_0`.
const WIN_CERT_REVISION_2_0: u16 = 0x0200;
/// `WIN_CERT_TYPE_PKCS_SIGNED_DATA`.
const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;

/// The parts of a PE header the image hash needs.
#[derive(Debug, Clone)]
struct Layout {
    headers: Vec<u8>,
    /// File offset of the optional header's CheckSum.
    checksum_at: usize,
    /// File offset of the certificate-table data directory entry.
    security_at: usize,
    /// (PointerToRawData, SizeOfRawData) of every section with raw data, in file order.
    sections: Vec<(u64, u64)>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl Layout {
    fn read(f: &mut (impl Read + Seek), len: u64) -> Result<Layout, AuthenticodeError> {
        let bad = |m: &str| AuthenticodeError::NotPe(m.to_string());
        let mut head = vec![0u8; len.min(4096) as usize];
        f.seek(SeekFrom::Start(0))?;
        f.read_exact(&mut head)?;
        if head.get(..2) != Some(b"MZ") {
            return Err(bad("no MZ signature"));
        }
        let pe = u32_at(&head, 0x3C).ok_or_else(|| bad("truncated DOS header"))? as usize;
        if head.get(pe..pe + 4) != Some(b"PE\0\0") {
            return Err(bad("no PE signature"));
        }
        let sections = usize::from(u16_at(&head, pe + 6).ok_or_else(|| bad("truncated COFF"))?);
        let opt_len = usize::from(u16_at(&head, pe + 20).ok_or_else(|| bad("truncated COFF"))?);
        let opt = pe + 24;
        if u16_at(&head, opt) != Some(0x20B) {
            return Err(bad("not PE32+"));
        }
        let size_of_headers = u64::from(u32_at(&head, opt + 60).ok_or_else(|| bad("truncated"))?);
        let dirs = u32_at(&head, opt + 108).ok_or_else(|| bad("truncated"))? as usize;
        let table = opt + opt_len;
        if dirs <= DIR_SECURITY || 112 + dirs * 8 > opt_len {
            return Err(bad("no certificate table directory"));
        }
        if size_of_headers > MAX_HEADERS
            || size_of_headers > len
            || (table + sections * 40) as u64 > size_of_headers
        {
            return Err(bad("SizeOfHeaders does not hold the section table"));
        }
        let mut headers = vec![0u8; size_of_headers as usize];
        f.seek(SeekFrom::Start(0))?;
        f.read_exact(&mut headers)?;
        let security_at = opt + 112 + DIR_SECURITY * 8;
        let mut list = Vec::with_capacity(sections);
        for i in 0..sections {
            let at = table + i * 40;
            let raw = u64::from(u32_at(&headers, at + 16).ok_or_else(|| bad("section"))?);
            let ptr = u64::from(u32_at(&headers, at + 20).ok_or_else(|| bad("section"))?);
            if raw == 0 {
                continue;
            }
            if ptr < size_of_headers || ptr + raw > len {
                return Err(bad("a section's raw data lies outside the file"));
            }
            list.push((ptr, raw));
        }
        list.sort_unstable();
        Ok(Layout {
            headers,
            checksum_at: opt + 64,
            security_at,
            sections: list,
        })
    }

    fn security(&self) -> (u32, u32) {
        (
            u32_at(&self.headers, self.security_at).unwrap_or(0),
            u32_at(&self.headers, self.security_at + 4).unwrap_or(0),
        )
    }
}

fn hash_range(
    f: &mut (impl Read + Seek),
    h: &mut crate::sha256::Sha256,
    start: u64,
    len: u64,
) -> std::io::Result<()> {
    f.seek(SeekFrom::Start(start))?;
    let mut buf = vec![0u8; (1 << 20).min(len as usize).max(1)];
    let mut left = len;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        f.read_exact(&mut buf[..n])?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

/// The Authenticode SHA-256 of the unsigned PE image in `f` (`len` bytes; a multiple of 8 as
/// [`sign_file`] leaves it). Refuses a signed image.
pub fn image_digest(f: &mut (impl Read + Seek), len: u64) -> Result<[u8; 32], AuthenticodeError> {
    let layout = Layout::read(f, len)?;
    let (_, size) = layout.security();
    if size != 0 {
        return Err(AuthenticodeError::AlreadySigned(size));
    }
    let h = &layout.headers;
    let mut sha = crate::sha256::Sha256::new();
    sha.update(&h[..layout.checksum_at]);
    sha.update(&h[layout.checksum_at + 4..layout.security_at]);
    sha.update(&h[layout.security_at + 8..]);
    let mut end = h.len() as u64;
    for &(ptr, raw) in &layout.sections {
        hash_range(f, &mut sha, ptr, raw)?;
        end = end.max(ptr + raw);
    }
    if len > end {
        hash_range(f, &mut sha, end, len - end)?;
    }
    Ok(sha.finalize())
}

/// Signs the PE file at `path` in place: pads it to 8 bytes, appends the `WIN_CERTIFICATE`
/// holding the Authenticode `SignedData` (padded to 8), and points data directory 4 at it.
pub fn sign_file(path: &Path, keys: &SecureBootKeys) -> Result<(), AuthenticodeError> {
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    sign(&mut f, keys)?;
    f.sync_all()?;
    Ok(())
}

/// [`sign_file`] over an open file.
pub fn sign(f: &mut File, keys: &SecureBootKeys) -> Result<(), AuthenticodeError> {
    let mut len = f.metadata()?.len();
    let layout = Layout::read(f, len)?;
    if layout.security().1 != 0 {
        return Err(AuthenticodeError::AlreadySigned(layout.security().1));
    }
    let pad = (8 - len % 8) % 8;
    if pad != 0 {
        f.seek(SeekFrom::Start(len))?;
        f.write_all(&vec![0u8; pad as usize])?;
        len += pad;
    }
    let digest = image_digest(f, len)?;
    let signed = authenticode_signed_data(&digest, keys)?;
    let cert_len = 8 + signed.len();
    let padded = cert_len.div_ceil(8) * 8;
    let mut entry = Vec::with_capacity(padded);
    entry.extend_from_slice(&(cert_len as u32).to_le_bytes());
    entry.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
    entry.extend_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes());
    entry.extend_from_slice(&signed);
    entry.resize(padded, 0);
    let offset =
        u32::try_from(len).map_err(|_| AuthenticodeError::NotPe("larger than 4 GiB".into()))?;
    f.seek(SeekFrom::Start(len))?;
    f.write_all(&entry)?;
    let mut dir = Vec::with_capacity(8);
    dir.extend_from_slice(&offset.to_le_bytes());
    dir.extend_from_slice(&(padded as u32).to_le_bytes());
    f.seek(SeekFrom::Start(layout.security_at as u64))?;
    f.write_all(&dir)?;
    Ok(())
}
