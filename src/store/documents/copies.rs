//! The copy log: the documents of entries kept inline, appended to segment files
//! `blobs/docs/<kind>s/copies/<16 hex>.log` instead of one file each (a file per small
//! schematic cost more CPU than the rest of `POST /schematics` together, and a 4 KiB block
//! for 100 bytes). Each record is `IFC1`, the document's length (u32, little endian), its
//! BLAKE3 (32 bytes) and the document bytes (header line and body, as a document file holds
//! them), so the log is read without the index and every record verifies itself. An append
//! is one write and one `fdatasync`; a new segment is fsynced into its directory first. A torn
//! record at the end of the last segment (a crash during an append) is cut off when the log
//! opens; its copies are written again from the index by the next check.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::io_context::io_err;
use crate::store::{StoreError, create_dir, sync_dir};

/// First bytes of every record.
const MAGIC: &[u8; 4] = b"IFC1";
/// Bytes before a record's document.
const HEAD: usize = 4 + 4 + 32;
/// A segment is closed once it holds this much.
const SEGMENT: u64 = 64 << 20;

/// A verified record found by [`CopyLog::scan`].
pub(super) struct Record<'a> {
    /// The segment holding it.
    pub segment: &'a Path,
    /// BLAKE3 hex of the document.
    pub blake3: String,
    /// The document bytes.
    pub document: &'a [u8],
}

/// What a scan found besides the records.
#[derive(Default)]
pub(super) struct ScanReport {
    /// Segments with a record that does not verify (not the torn end of the last one): the
    /// records after it in that segment are unreadable.
    pub damaged: Vec<PathBuf>,
}

/// The active segment.
struct Active {
    seq: u64,
    file: Option<File>,
    len: u64,
}

/// The copy log of one document kind.
pub(super) struct CopyLog {
    dir: PathBuf,
    active: Mutex<Active>,
}

/// The segment file of number `seq`.
fn segment(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.log"))
}

/// The segment numbers in `dir`, ascending.
fn segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(format!("list {}", dir.display()))(e).into()),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(format!("list {}", dir.display())))?;
        let name = entry.file_name();
        let seq = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .filter(|n| n.len() == 16)
            .and_then(|n| u64::from_str_radix(n, 16).ok());
        out.extend(seq);
    }
    out.sort_unstable();
    Ok(out)
}

/// Calls `each` for every record of `bytes` that verifies, in order; returns the length of
/// the verified prefix.
fn records(segment: &Path, bytes: &[u8], mut each: impl FnMut(Record<'_>)) -> usize {
    let mut at = 0;
    while bytes.len() - at >= HEAD && &bytes[at..at + 4] == MAGIC {
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[at + 4..at + 8]);
        let len = u32::from_le_bytes(len) as usize;
        let Some(document) = bytes.get(at + HEAD..at + HEAD + len) else {
            break;
        };
        let hash = blake3::hash(document);
        if hash.as_bytes()[..] != bytes[at + 8..at + HEAD] {
            break;
        }
        each(Record {
            segment,
            blake3: hash.to_hex().to_string(),
            document,
        });
        at += HEAD + len;
    }
    at
}

impl CopyLog {
    /// The log in `dir`; a torn record at the end of its last segment is cut off.
    pub(super) fn open(dir: PathBuf) -> Result<CopyLog, StoreError> {
        let seq = segments(&dir)?.last().copied().unwrap_or(0);
        let path = segment(&dir, seq);
        let len = match std::fs::read(&path) {
            Ok(bytes) => {
                let valid = records(&path, &bytes, |_| {}) as u64;
                if valid < bytes.len() as u64 {
                    tracing::warn!(
                        segment = %path.display(),
                        cut = bytes.len() as u64 - valid,
                        "cut off a torn end of the document copy log (an append a crash interrupted)"
                    );
                    let f = File::options()
                        .write(true)
                        .open(&path)
                        .map_err(io_err(format!("open {}", path.display())))?;
                    f.set_len(valid)
                        .and_then(|()| f.sync_all())
                        .map_err(io_err(format!("truncate {}", path.display())))?;
                }
                valid
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_err(format!("read {}", path.display()))(e).into()),
        };
        Ok(CopyLog {
            dir,
            active: Mutex::new(Active {
                seq,
                file: None,
                len,
            }),
        })
    }

    /// Appends `documents` durably: one write and one `fdatasync` (plus a directory fsync
    /// when a segment is started).
    pub(super) fn append(&self, documents: &[Vec<u8>]) -> Result<(), StoreError> {
        if documents.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(documents.iter().map(|d| HEAD + d.len()).sum());
        for d in documents {
            // Only documents kept inline are copied: a few KiB at most.
            let len = d.len() as u32;
            buf.extend_from_slice(MAGIC);
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(blake3::hash(d).as_bytes());
            buf.extend_from_slice(d);
        }
        let mut active = self
            .active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if active.len > 0 && active.len + buf.len() as u64 > SEGMENT {
            active.seq += 1;
            active.file = None;
            active.len = 0;
        }
        let path = segment(&self.dir, active.seq);
        if active.file.is_none() {
            create_dir(&self.dir)?;
            let mut f = File::options()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_err(format!("open {}", path.display())))?;
            f.seek(SeekFrom::End(0))
                .map_err(io_err(format!("open {}", path.display())))?;
            sync_dir(&self.dir).map_err(io_err(format!("sync {}", self.dir.display())))?;
            active.file = Some(f);
        }
        let Some(f) = active.file.as_mut() else {
            return Ok(());
        };
        let written = f.write_all(&buf).and_then(|()| f.sync_data());
        if let Err(e) = written {
            // Whatever part reached the file is cut off when the log next opens.
            active.file = None;
            return Err(io_err(format!("append to {}", path.display()))(e).into());
        }
        active.len += buf.len() as u64;
        Ok(())
    }

    /// Calls `each` for every record of every segment, oldest first. Blocking.
    pub(super) fn scan(&self, mut each: impl FnMut(Record<'_>)) -> Result<ScanReport, StoreError> {
        let mut report = ScanReport::default();
        let seqs = segments(&self.dir)?;
        for (i, seq) in seqs.iter().enumerate() {
            let path = segment(&self.dir, *seq);
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io_err(format!("read {}", path.display())))?;
            let valid = records(&path, &bytes, &mut each);
            // The last segment may be appended to concurrently: its end is not damage.
            if valid < bytes.len() && i + 1 < seqs.len() {
                tracing::error!(segment = %path.display(), offset = valid, "the document copy log is damaged");
                report.damaged.push(path);
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_records_scan_back_and_a_torn_end_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path().join("copies");
        let log = CopyLog::open(logdir.clone()).unwrap();
        log.append(&[b"one".to_vec(), b"two".to_vec()]).unwrap();
        log.append(&[b"three".to_vec()]).unwrap();
        let mut seen = Vec::new();
        log.scan(|r| seen.push((r.blake3, r.document.to_vec())))
            .unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[2].0, blake3::hash(b"three").to_hex().to_string());
        // A crash in the middle of an append: the next open cuts the torn record off.
        let path = segment(&logdir, 0);
        let mut f = File::options().append(true).open(&path).unwrap();
        f.write_all(b"IFC1\x05\x00\x00\x00partial").unwrap();
        drop(log);
        let log = CopyLog::open(logdir.clone()).unwrap();
        log.append(&[b"four".to_vec()]).unwrap();
        let mut docs = Vec::new();
        let report = log.scan(|r| docs.push(r.document.to_vec())).unwrap();
        assert!(report.damaged.is_empty());
        assert_eq!(docs, [&b"one"[..], b"two", b"three", b"four"]);
    }
}
