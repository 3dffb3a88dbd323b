//! Documents: schematics and release records kept as content-addressed files in the blob
//! store, with only a small reference in the metadata store.
//!
//! A document lives at `blobs/docs/<kind>s/<2 hex>/<64 hex>` (its BLAKE3 name), written like
//! every blob: temporary file, fsync, rename, directory fsync. Its first line is a header
//! naming its kind, its key and a generation, so it can be found and understood without the
//! index: `image-factory-document/1 release v1.11.0 1718000000000000000`. The metadata store
//! holds `key → {blake3, size, generation}` ([`DocRef`]), written and flushed only after the
//! document is durable. Values stay small in the metadata store (its large values are not
//! durable, see `sled_store.rs`), and the index can be checked against the documents and
//! rebuilt from them ([`DocStore::check`]).
//!
//! Schematics are immutable (generation 0: the same schematic is the same file). A release
//! record is replaced on re-import: its generation grows, the superseded file is removed once
//! the new reference is durable, and a check that finds several documents for one key keeps
//! the highest generation.
//!
//! A small schematic (its reference with the body inline at most `store::SMALL_VALUE`, which
//! the metadata store keeps durable with its log) is the exception to "document first": its
//! reference carries the body, is acknowledged once the log is synced, and its document is
//! appended afterwards to the kind's copy log (`copies.rs`) by a background thread
//! (`lazy.rs`); the start-up check writes any copy a crash prevented. Reads of such
//! schematics never touch a file.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod check;
mod copies;
mod lazy;

pub use check::DocCheck;
use copies::CopyLog;
use lazy::LazyWriter;

use super::blobs::{BlobStore, is_blob_name};
use super::{MetaStore, SMALL_VALUE, StoreError, VerifiedBlob};
use crate::io_context::io_err;

/// First word of every document's header line.
const MAGIC: &str = "image-factory-document/1";
/// Longest header line accepted.
const MAX_HEADER: usize = 256;
/// Largest document read (schematics are at most 1 MiB, release records far less).
const MAX_DOCUMENT: u64 = 64 << 20;
/// Records moved out of the metadata store per batch when migrating.
const MIGRATION_BATCH: usize = 4096;

/// What a document holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocKind {
    /// A schematic's canonical YAML, keyed by schematic ID.
    Schematic,
    /// A release record (JSON), keyed by version tag.
    Release,
}

impl DocKind {
    /// The kind's name in headers and reports.
    pub fn name(self) -> &'static str {
        match self {
            DocKind::Schematic => "schematic",
            DocKind::Release => "release",
        }
    }

    /// Directory under `blobs/docs/`.
    fn dir(self) -> &'static str {
        match self {
            DocKind::Schematic => "schematics",
            DocKind::Release => "releases",
        }
    }

    /// Metadata tree of references.
    fn index_tree(self) -> &'static str {
        match self {
            DocKind::Schematic => "schematic_docs",
            DocKind::Release => "release_docs",
        }
    }

    /// Whether a key can name a document of this kind.
    fn valid_key(self, key: &str) -> bool {
        match self {
            DocKind::Schematic => is_blob_name(key),
            DocKind::Release => {
                !key.is_empty()
                    && key.len() <= 128
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
            }
        }
    }

    /// Whether documents of this kind never change once written.
    fn immutable(self) -> bool {
        self == DocKind::Schematic
    }

    /// Whether small documents of this kind are kept inline in their index entry (immutable
    /// kinds only: the file written later is then always the same).
    fn inlines(self) -> bool {
        self == DocKind::Schematic
    }

    /// The parsed kind of a header word.
    fn from_name(name: &str) -> Option<DocKind> {
        [DocKind::Schematic, DocKind::Release]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

/// The metadata store's reference to a document (stored as [`FileRef`] or [`INLINE`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocRef {
    /// BLAKE3 hex of the document file (header included).
    pub blake3: String,
    /// Size of the file in bytes.
    pub size: u64,
    /// Generation: 0 for immutable kinds, growing with each replacement otherwise.
    pub generation: u64,
    /// The body itself, for a small document of a kind kept inline (its copy is in the copy
    /// log).
    pub inline: Option<String>,
}

/// A document read back and checked.
struct Parsed {
    key: String,
    generation: u64,
    body: Vec<u8>,
}

/// The documents of one kind and their index.
#[derive(Clone)]
pub struct DocStore {
    kind: DocKind,
    blobs: BlobStore,
    meta: Arc<dyn MetaStore>,
    /// The copies of inline documents (kinds kept inline only), and their background writer.
    copies: Option<(Arc<CopyLog>, Arc<LazyWriter>)>,
}

/// First byte of an inline reference as the metadata store holds it: the tag, then the body
/// (its name and size follow from it). A reference to a file is JSON ([`FileRef`]).
const INLINE: u8 = 1;

/// A reference to a document file as the metadata store holds it.
#[derive(Serialize, Deserialize)]
struct FileRef {
    /// BLAKE3 hex of the file.
    blake3: String,
    /// Its size.
    size: u64,
    /// Its generation.
    generation: u64,
}

/// The stored form of `r` (see [`INLINE`]).
fn encode_ref(r: &DocRef) -> Result<Vec<u8>, StoreError> {
    if let Some(inline) = &r.inline {
        let mut out = Vec::with_capacity(1 + inline.len());
        out.push(INLINE);
        out.extend_from_slice(inline.as_bytes());
        return Ok(out);
    }
    let stored = FileRef {
        blake3: r.blake3.clone(),
        size: r.size,
        generation: r.generation,
    };
    serde_json::to_vec(&stored).map_err(|source| StoreError::Encode {
        what: "document reference",
        source,
    })
}

/// Nanoseconds since the Unix epoch (a replaced document's generation).
fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl DocStore {
    /// The documents of `kind` in `blobs` (whose metadata store holds the index).
    /// (Kinds kept inline open their copy log and start its writer, which can fail.)
    pub fn new(kind: DocKind, blobs: BlobStore) -> Result<Self, StoreError> {
        let mut store = Self::without_copies(kind, blobs);
        if kind.inlines() {
            let log = Arc::new(CopyLog::open(store.dir().join("copies"))?);
            let name = format!("{}-copies", kind.name());
            let writer = LazyWriter::start(name, Arc::clone(&log))
                .map_err(io_err("start the document copy thread"))?;
            store.copies = Some((log, Arc::new(writer)));
        }
        Ok(store)
    }

    /// The release records of `blobs` (a kind never kept inline: nothing to open).
    pub fn releases(blobs: BlobStore) -> Self {
        Self::without_copies(DocKind::Release, blobs)
    }

    fn without_copies(kind: DocKind, blobs: BlobStore) -> Self {
        let meta = Arc::clone(blobs.meta());
        DocStore {
            kind,
            blobs,
            meta,
            copies: None,
        }
    }

    /// The kind of document.
    pub fn kind(&self) -> DocKind {
        self.kind
    }

    /// `blobs/docs/<kind>s`.
    fn dir(&self) -> PathBuf {
        self.blobs.root().join("docs").join(self.kind.dir())
    }

    /// Path of the document file named `blake3`.
    fn path(&self, blake3: &str) -> Result<PathBuf, StoreError> {
        let name = super::blobs::blob_name(blake3)?;
        Ok(self.dir().join(&name[..2]).join(name))
    }

    fn check_key<'k>(&self, key: &'k str) -> Result<&'k str, StoreError> {
        if self.kind.valid_key(key) {
            Ok(key)
        } else {
            Err(StoreError::InvalidDocumentKey {
                kind: self.kind.name(),
                key: key.to_string(),
            })
        }
    }

    /// Makes the index and the document files written so far durable (see
    /// [`MetaStore::flush_blocking`]).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.copies_durable();
        self.meta.flush_blocking()
    }

    /// Makes the index and the document files written so far durable (see
    /// [`MetaStore::flush`]).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.copies_durable())
            .await
            .map_err(StoreError::task("document copies"))?;
        self.meta.flush().await
    }

    /// Number of indexed documents.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.meta.count(self.kind.index_tree())
    }

    /// The index's reference for `key`.
    pub fn get_ref(&self, key: &str) -> Result<Option<DocRef>, StoreError> {
        self.meta
            .get(self.kind.index_tree(), key.as_bytes())?
            .map(|bytes| self.parse_ref(key, &bytes))
            .transpose()
    }

    /// Every indexed key and its reference, in key order.
    pub fn refs(&self) -> Result<Vec<(String, DocRef)>, StoreError> {
        self.meta
            .scan(self.kind.index_tree())?
            .into_iter()
            .map(|(k, v)| {
                let key = String::from_utf8_lossy(&k).into_owned();
                let r = self.parse_ref(&key, &v)?;
                Ok((key, r))
            })
            .collect()
    }

    /// The body of the document `key` names, if indexed; checked against its BLAKE3 name and
    /// its header. A missing or damaged document is an error (the index says it exists).
    pub fn get(&self, key: &str) -> Result<Option<(DocRef, Vec<u8>)>, StoreError> {
        let Some(r) = self.get_ref(key)? else {
            return Ok(None);
        };
        if let Some(body) = &r.inline {
            let body = body.as_bytes().to_vec();
            return Ok(Some((r, body)));
        }
        match self.read(key, &r) {
            Ok(body) => Ok(Some((r, body))),
            Err(e) => match self.get_ref(key)? {
                // Replaced meanwhile (the old file is removed once the new one is durable).
                Some(now) if now != r => {
                    let body = self.read(key, &now)?;
                    Ok(Some((now, body)))
                }
                _ => Err(e),
            },
        }
    }

    /// The body of the document `r` (the reference of `key`).
    pub fn read(&self, key: &str, r: &DocRef) -> Result<Vec<u8>, StoreError> {
        if let Some(body) = &r.inline {
            return Ok(body.as_bytes().to_vec());
        }
        let path = self.path(&r.blake3)?;
        let parsed = self.read_file(&path, &r.blake3, Some(r.size))?;
        if parsed.key != key {
            return Err(self.corrupt(
                key,
                format!("document {} is the one of {:?}", r.blake3, parsed.key),
            ));
        }
        Ok(parsed.body)
    }

    fn corrupt(&self, key: &str, message: String) -> StoreError {
        StoreError::Corrupt {
            tree: self.kind.index_tree().into(),
            key: key.to_string(),
            source: message.into(),
        }
    }

    /// Reads and verifies a document file: content hashing to `blake3` (of `size` bytes when
    /// known) and a header of this kind.
    fn read_file(
        &self,
        path: &Path,
        blake3: &str,
        size: Option<u64>,
    ) -> Result<Parsed, StoreError> {
        let ctx = || format!("read {} document {}", self.kind.name(), path.display());
        let file = std::fs::File::open(path).map_err(io_err(ctx()))?;
        let len = file.metadata().map_err(io_err(ctx()))?.len();
        let size = size.unwrap_or(len);
        if size > MAX_DOCUMENT {
            return Err(self.corrupt(blake3, format!("document of {size} bytes")));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        VerifiedBlob::new(file, blake3, size)
            .read_to_end(&mut bytes)
            .map_err(io_err(ctx()))?;
        self.parse(blake3, bytes)
    }

    /// Splits a document into header fields and body.
    fn parse(&self, name: &str, mut bytes: Vec<u8>) -> Result<Parsed, StoreError> {
        let bad = |what: &str| self.corrupt(name, format!("document header: {what}"));
        let end = bytes
            .iter()
            .take(MAX_HEADER)
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("no header line"))?;
        let header = std::str::from_utf8(&bytes[..end]).map_err(|_| bad("not UTF-8"))?;
        let fields: Vec<&str> = header.split(' ').collect();
        let [magic, kind, key, generation] = fields[..] else {
            return Err(bad("not four fields"));
        };
        if magic != MAGIC {
            return Err(bad("unknown format"));
        }
        if DocKind::from_name(kind) != Some(self.kind) {
            return Err(bad(&format!(
                "a {kind} document among {}s",
                self.kind.name()
            )));
        }
        if !self.kind.valid_key(key) {
            return Err(bad("invalid key"));
        }
        let generation = generation.parse().map_err(|_| bad("invalid generation"))?;
        let key = key.to_string();
        bytes.drain(..=end);
        Ok(Parsed {
            key,
            generation,
            body: bytes,
        })
    }

    /// The file of the document for `key`: its reference and its destination path, with its
    /// bytes written to a temporary file (synced when `sync`).
    fn stage(
        &self,
        key: &str,
        generation: u64,
        body: &[u8],
        sync: bool,
    ) -> Result<(DocRef, PathBuf, PathBuf), StoreError> {
        let (bytes, r) = self.encode(key, generation, body);
        let dest = self.path(&r.blake3)?;
        let tmp = self.blobs.temp_path();
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(&bytes)?;
            if sync { f.sync_all() } else { Ok(()) }
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(format!("write {}", tmp.display()))(e).into());
        }
        Ok((r, tmp, dest))
    }

    /// The file bytes of the document for `key` and its reference (without inline body).
    fn encode(&self, key: &str, generation: u64, body: &[u8]) -> (Vec<u8>, DocRef) {
        let mut bytes = format!("{MAGIC} {} {key} {generation}\n", self.kind.name()).into_bytes();
        bytes.extend_from_slice(body);
        let r = DocRef {
            blake3: blake3::hash(&bytes).to_hex().to_string(),
            size: bytes.len() as u64,
            generation,
            inline: None,
        };
        (bytes, r)
    }

    /// The reference of `body` under `key` with the body inline, if this kind keeps it inline
    /// and it is small enough.
    fn inline_ref(&self, key: &str, body: &[u8]) -> Option<DocRef> {
        if !self.kind.inlines() {
            return None;
        }
        let text = std::str::from_utf8(body).ok()?;
        let (_, mut r) = self.encode(key, 0, body);
        r.inline = Some(text.to_string());
        let len = encode_ref(&r).ok()?.len();
        (len <= SMALL_VALUE).then_some(r)
    }

    /// The reference of `key` from its stored form.
    fn parse_ref(&self, key: &str, bytes: &[u8]) -> Result<DocRef, StoreError> {
        let corrupt = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Corrupt {
            tree: self.kind.index_tree().into(),
            key: key.to_string(),
            source,
        };
        if let Some(body) = bytes.strip_prefix(&[INLINE]) {
            let inline = String::from_utf8(body.to_vec()).map_err(|e| corrupt(Box::new(e)))?;
            let (_, mut r) = self.encode(key, 0, body);
            r.inline = Some(inline);
            return Ok(r);
        }
        let stored: FileRef = serde_json::from_slice(bytes).map_err(|e| corrupt(Box::new(e)))?;
        Ok(DocRef {
            blake3: stored.blake3,
            size: stored.size,
            generation: stored.generation,
            inline: None,
        })
    }

    /// The body of `key` as text, if indexed: [`DocStore::get`] without the reference (an
    /// inline body is returned as stored, without naming or copying it again).
    pub fn get_text(&self, key: &str) -> Result<Option<String>, StoreError> {
        let Some(bytes) = self.meta.get(self.kind.index_tree(), key.as_bytes())? else {
            return Ok(None);
        };
        let corrupt = |e: std::string::FromUtf8Error| StoreError::Corrupt {
            tree: self.kind.index_tree().into(),
            key: key.to_string(),
            source: Box::new(e),
        };
        let body = match bytes.strip_prefix(&[INLINE]) {
            Some(_) => {
                let mut bytes = bytes;
                bytes.remove(0);
                bytes
            }
            None => match self.get(key)? {
                Some((_, body)) => body,
                None => return Ok(None),
            },
        };
        String::from_utf8(body).map(Some).map_err(corrupt)
    }

    /// Has the copy of the inline document `key` appended to the copy log: by the
    /// background writer, or here (durably, on the blocking pool) when its queue is full.
    async fn copy_later(&self, key: &str, body: &[u8]) -> Result<(), StoreError> {
        let Some((log, writer)) = &self.copies else {
            return Ok(());
        };
        let (document, _) = self.encode(key, 0, body);
        let Err(document) = writer.submit(document) else {
            return Ok(());
        };
        let log = Arc::clone(log);
        tokio::task::spawn_blocking(move || log.append(&[document]))
            .await
            .map_err(StoreError::task("document copy"))?
    }

    /// Appends the copies of the inline entries `(key, body)` to the copy log, durably.
    fn append_copies(&self, entries: &[(&str, &[u8])]) -> Result<(), StoreError> {
        let Some((log, _)) = &self.copies else {
            return Ok(());
        };
        let documents: Vec<Vec<u8>> = entries
            .iter()
            .map(|(key, body)| self.encode(key, 0, body).0)
            .collect();
        log.append(&documents)
    }

    /// Waits until every copy queued for the background writer is durable.
    fn copies_durable(&self) {
        if let Some((_, writer)) = &self.copies {
            writer.barrier();
        }
    }

    /// Writes the document for `key` durably (not yet indexed).
    fn write(&self, key: &str, generation: u64, body: &[u8]) -> Result<DocRef, StoreError> {
        let (r, tmp, dest) = self.stage(key, generation, body, true)?;
        if let Err(e) = self.blobs.place(&tmp, &dest) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(r)
    }

    /// Stores `body` under `key`, durable document first, then its reference (visible at
    /// once, durable after the next flush). Immutable kinds keep an existing document
    /// (`created` is false); other kinds replace it. Returns whether a reference was created,
    /// the reference, and the one it replaced. Blocking.
    pub fn put_blocking(
        &self,
        key: &str,
        body: &[u8],
    ) -> Result<(bool, DocRef, Option<DocRef>), StoreError> {
        let key = self.check_key(key)?;
        let previous = self.get_ref(key)?;
        if self.kind.immutable() {
            if let Some(existing) = previous {
                return Ok((false, existing, None));
            }
            let r = self.write(key, 0, body)?;
            let created = self.put_ref(key, &r, true)?;
            return Ok((created, r, None));
        }
        let generation = now_nanos().max(previous.as_ref().map_or(0, |p| p.generation + 1));
        let r = self.write(key, generation, body)?;
        self.put_ref(key, &r, false)?;
        Ok((previous.is_none(), r, previous))
    }

    /// Indexes `r` under `key` (only if absent when `if_absent`); returns whether it was
    /// written. Visible at once, durable after the next flush.
    fn put_ref(&self, key: &str, r: &DocRef, if_absent: bool) -> Result<bool, StoreError> {
        let value = encode_ref(r)?;
        let tree = self.kind.index_tree();
        if if_absent {
            self.meta.put_if_absent(tree, key.as_bytes(), &value)
        } else {
            self.meta.put(tree, key.as_bytes(), &value).map(|()| true)
        }
    }

    /// [`DocStore::put_blocking`] on the blocking pool, then a flush: durable when it returns.
    /// A replaced document's file is removed afterwards. Returns whether the key was new.
    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<(bool, DocRef), StoreError> {
        if self.kind.immutable()
            && let Some(existing) = self.get_ref(key)?
        {
            // Flush anyway: the first writer may not have flushed yet.
            self.meta.flush().await?;
            return Ok((false, existing));
        }
        if let Some(r) = self.inline_ref(self.check_key(key)?, &body) {
            // Durable with the log; the document file is its copy, written afterwards.
            let created = self.put_ref(key, &r, true)?;
            self.meta.flush().await?;
            if created {
                self.copy_later(key, &body).await?;
            }
            return Ok((created, r));
        }
        let this = self.clone();
        let owned = key.to_string();
        let (created, r, previous) =
            tokio::task::spawn_blocking(move || this.put_blocking(&owned, &body))
                .await
                .map_err(StoreError::task("document write"))??;
        // Flush even when nothing was created: the first writer may not have flushed yet.
        self.meta.flush().await?;
        if let Some(previous) = previous {
            self.remove_superseded(&previous, &r);
        }
        Ok((created, r))
    }

    /// Removes the file of `old` after `new` replaced it durably (best effort: a file left
    /// behind is found superseded by the next check).
    fn remove_superseded(&self, old: &DocRef, new: &DocRef) {
        if old.blake3 == new.blake3 {
            return;
        }
        if let Ok(path) = self.path(&old.blake3)
            && let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a superseded document");
        }
    }

    /// Moves records an older version kept in the metadata store itself (`legacy_tree`: key →
    /// body) into documents; returns how many. Blocking; durable when it returns.
    ///
    /// Batches of documents are made durable together (two filesystem syncs per batch, not two
    /// fsyncs per document), so a store of many schematics migrates in seconds.
    pub fn migrate_legacy(&self, legacy_tree: &str) -> Result<usize, StoreError> {
        let records = self.meta.scan(legacy_tree)?;
        for batch in records.chunks(MIGRATION_BATCH) {
            let mut staged = Vec::new();
            let mut inline = Vec::new();
            for (key, body) in batch {
                let key = String::from_utf8_lossy(key).into_owned();
                let key = self.check_key(&key)?.to_string();
                if self.get_ref(&key)?.is_some() {
                    continue;
                }
                let generation = if self.kind.immutable() {
                    0
                } else {
                    now_nanos()
                };
                match self.inline_ref(&key, body) {
                    Some(r) => inline.push((key, r)),
                    None => staged.push((key.clone(), self.stage(&key, generation, body, false)?)),
                }
            }
            let copies: Vec<(&str, &[u8])> = inline
                .iter()
                .filter_map(|(k, r)| Some((k.as_str(), r.inline.as_deref()?.as_bytes())))
                .collect();
            self.append_copies(&copies)?;
            if !staged.is_empty() {
                self.blobs.sync_filesystem()?;
                for (_, (_, tmp, dest)) in &staged {
                    self.blobs.rename_into(tmp, dest)?;
                }
                self.blobs.sync_filesystem()?;
            }
            for (key, (r, _, _)) in &staged {
                self.put_ref(key, r, false)?;
            }
            for (key, r) in &inline {
                self.put_ref(key, r, false)?;
            }
            self.meta.flush_blocking()?;
            for (key, _) in batch {
                self.meta.remove(legacy_tree, key)?;
            }
            self.meta.flush_blocking()?;
        }
        Ok(records.len())
    }
}

#[cfg(test)]
mod tests;
