//! Flattening image layers into a directory, hostile-input safe, and reading single files out of
//! a layer stack.
//!
//! Layers are gzip, zstd or plain tar, detected by their magic bytes. Docker/OCI whiteouts are
//! applied (`.wh.<name>` removes the lower entry, `.wh..wh..opq` hides a directory's lower
//! content). Nothing is ever written outside the destination: paths with `..` or a leading `/`
//! are refused, no path component may be a symlink when an entry is created (checked with
//! `symlink_metadata`), hardlinks must point at regular files already extracted inside the root,
//! device nodes and FIFOs are skipped. A total-size budget and a decompression-ratio guard bound
//! the work, and a truncated tar is an error. Every layer is read to its end so the opener's
//! verifying reader checks its digest.
//!
//! Symlinks inside the extracted tree are created as the image says (they may point anywhere);
//! whoever reads the tree afterwards lists it with [`regular_files`], which never follows one.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

mod read;
mod walk;

use super::tarwalk::{TarItem, clean_entry_path, walk};
use super::verify::{io_error_to_oci, oci_to_io_error};
use super::{Descriptor, ImageSource, OciError, Reference};
use crate::counting::Counting;

pub use read::read_file;
pub use walk::{TreeFile, regular_files};

/// Opens a layer blob as a (verified) byte stream.
pub type LayerOpener<'a> = dyn FnMut(&Descriptor) -> Result<Box<dyn Read + Send>, OciError> + 'a;

/// Limits and filters for [`flatten`] and [`read_file`].
#[derive(Debug, Clone)]
pub struct FlattenOptions {
    /// Extract only entries under these path prefixes (e.g. `usr/install/amd64/`); empty = all.
    pub prefixes: Vec<String>,
    /// Record `security.selinux` PAX xattrs per path in the report.
    pub record_selinux: bool,
    /// Budget of uncompressed tar bytes over all layers.
    pub max_total_bytes: u64,
    /// Largest accepted uncompressed/compressed ratio of a compressed layer...
    pub max_ratio: u64,
    /// ...once more than this many uncompressed bytes have been produced.
    pub ratio_floor: u64,
}

impl Default for FlattenOptions {
    fn default() -> Self {
        FlattenOptions {
            prefixes: Vec::new(),
            record_selinux: false,
            max_total_bytes: 16 << 30,
            max_ratio: 200,
            ratio_floor: 16 << 20,
        }
    }
}

/// What [`flatten`] did.
#[derive(Debug, Default, Clone)]
pub struct FlattenReport {
    /// Entries created (files, directories, links).
    pub entries: u64,
    /// Regular-file bytes written.
    pub bytes: u64,
    /// `security.selinux` labels by relative path (when requested), for entries still present.
    pub selinux_labels: BTreeMap<String, String>,
    /// Entries skipped (device nodes, FIFOs, hardlinks to filtered-out files), with the reason.
    pub skipped: Vec<String>,
}

/// The decompressed stream of one layer, enforcing the size budget and the ratio guard.
struct LayerStream {
    inner: Box<dyn Read + Send>,
    compressed: Option<Arc<AtomicU64>>,
    produced: u64,
    budget: u64,
    max_ratio: u64,
    ratio_floor: u64,
    what: String,
}

impl Read for LayerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.produced += n as u64;
        if self.produced > self.budget {
            return Err(oci_to_io_error(OciError::Limit(format!(
                "{}: uncompressed content exceeds the size budget",
                self.what
            ))));
        }
        if let Some(c) = &self.compressed {
            let c = c.load(Ordering::Relaxed).max(1);
            if self.produced > self.ratio_floor && self.produced / c > self.max_ratio {
                return Err(oci_to_io_error(OciError::Limit(format!(
                    "{}: decompression ratio above {}:1 (possible decompression bomb)",
                    self.what, self.max_ratio
                ))));
            }
        }
        Ok(n)
    }
}

/// Opens a layer and wraps it in the matching decompressor, detected by magic bytes.
fn open_layer(
    desc: &Descriptor,
    open: &mut LayerOpener<'_>,
    opts: &FlattenOptions,
    budget: u64,
) -> Result<LayerStream, OciError> {
    let raw = open(desc)?;
    let count = Arc::new(AtomicU64::new(0));
    let mut counted = Counting::with_tally(raw, Arc::clone(&count));
    let mut magic = Vec::with_capacity(4);
    (&mut counted)
        .take(4)
        .read_to_end(&mut magic)
        .map_err(|e| io_error_to_oci(format!("layer {}", desc.digest), e))?;
    let stream = io::Cursor::new(magic.clone()).chain(counted);
    let (inner, compressed): (Box<dyn Read + Send>, bool) = if magic.starts_with(&[0x1f, 0x8b]) {
        (Box::new(flate2::read::MultiGzDecoder::new(stream)), true)
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let dec = zstd::stream::read::Decoder::new(stream)
            .map_err(|e| io_error_to_oci(format!("layer {}", desc.digest), e))?;
        (Box::new(dec), true)
    } else {
        (Box::new(stream), false)
    };
    Ok(LayerStream {
        inner,
        compressed: compressed.then_some(count),
        produced: 0,
        budget,
        max_ratio: opts.max_ratio,
        ratio_floor: opts.ratio_floor,
        what: format!("layer {}", desc.digest),
    })
}

/// Walks one layer's tar, then checks it ended properly and reads the stream to its end.
/// Returns the uncompressed bytes consumed.
fn for_each_entry(
    mut stream: LayerStream,
    mut f: impl FnMut(&TarItem, &mut tar::Entry<'_, &mut LayerStream>) -> Result<(), OciError>,
) -> Result<u64, OciError> {
    let what = stream.what.clone();
    let end = {
        let mut archive = tar::Archive::new(&mut stream);
        let entries = archive
            .entries()
            .map_err(|e| io_error_to_oci(what.clone(), e))?;
        walk(entries, &mut f)?
    };
    // The end-of-archive marker is a zero block right after the last entry; a stream that
    // simply stops there was cut (an empty stream is an empty layer).
    if stream.produced != 0 && stream.produced < end + 512 {
        return Err(OciError::Malformed {
            what,
            message: "truncated tar (no end-of-archive marker)".into(),
        });
    }
    io::copy(&mut stream, &mut io::sink()).map_err(|e| io_error_to_oci(what, e))?;
    Ok(stream.produced)
}

/// Whether `path` is under one of `prefixes` or an ancestor directory of one.
fn in_scope(path: &str, prefixes: &[String]) -> bool {
    prefixes.is_empty()
        || prefixes.iter().any(|p| {
            let p = p.trim_matches('/');
            p.is_empty()
                || path == p
                || path.starts_with(&format!("{p}/"))
                || p.starts_with(&format!("{path}/"))
        })
}

/// Whether `path` is strictly under one of `prefixes` (not merely an ancestor).
fn under_prefix(path: &str, prefixes: &[String]) -> bool {
    prefixes.is_empty()
        || prefixes.iter().any(|p| {
            let p = p.trim_matches('/');
            p.is_empty() || path == p || path.starts_with(&format!("{p}/"))
        })
}

fn io_at(path: &Path, e: io::Error) -> OciError {
    io_error_to_oci(path.display().to_string(), e)
}

/// Extraction state over the layer stack.
struct Extractor<'a> {
    root: &'a Path,
    opts: &'a FlattenOptions,
    report: FlattenReport,
    /// Paths created by the current layer (with their ancestors): opaque/whiteouts spare them.
    this_layer: HashSet<String>,
}

impl Extractor<'_> {
    /// Makes sure every component of `rel`'s parent is a real directory (never a symlink),
    /// creating missing ones; returns the full path of `rel`.
    fn prepare_parent(&mut self, rel: &str) -> Result<PathBuf, OciError> {
        let mut full = self.root.to_path_buf();
        let mut sofar = String::new();
        let comps: Vec<&str> = rel.split('/').collect();
        for (i, c) in comps.iter().enumerate() {
            full.push(c);
            if i + 1 == comps.len() {
                break;
            }
            if !sofar.is_empty() {
                sofar.push('/');
            }
            sofar.push_str(c);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(OciError::Unsafe(format!(
                        "{rel}: parent {sofar} is a symlink; refusing to write through it"
                    )));
                }
                Ok(_) => {
                    return Err(OciError::Unsafe(format!(
                        "{rel}: parent {sofar} is not a directory"
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&full).map_err(|e| io_at(&full, e))?;
                    fs::set_permissions(&full, fs::Permissions::from_mode(0o755))
                        .map_err(|e| io_at(&full, e))?;
                }
                Err(e) => return Err(io_at(&full, e)),
            }
            self.this_layer.insert(sofar.clone());
        }
        Ok(full)
    }

    /// The full path of `rel` if its parents exist as real directories (never creating any);
    /// `None` when a parent is missing. A symlinked parent is refused.
    fn existing_path(&self, rel: &str) -> Result<Option<PathBuf>, OciError> {
        let mut full = self.root.to_path_buf();
        let comps: Vec<&str> = rel.split('/').collect();
        for (i, c) in comps.iter().enumerate() {
            full.push(c);
            if i + 1 == comps.len() {
                break;
            }
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(OciError::Unsafe(format!(
                        "{rel}: parent is a symlink; refusing to work through it"
                    )));
                }
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_at(&full, e)),
            }
        }
        Ok(Some(full))
    }

    /// Removes whatever is at `full` (not following symlinks) and forgets its labels.
    fn remove(&mut self, rel: &str, full: &Path) -> Result<(), OciError> {
        match fs::symlink_metadata(full) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(full).map_err(|e| io_at(full, e))?,
            Ok(_) => fs::remove_file(full).map_err(|e| io_at(full, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(full, e)),
        }
        let labels = &mut self.report.selinux_labels;
        let doomed: Vec<String> = labels
            .range(rel.to_string()..)
            .take_while(|(k, _)| k.starts_with(rel))
            .filter(|(k, _)| *k == rel || k.as_bytes().get(rel.len()) == Some(&b'/'))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            labels.remove(&k);
        }
        Ok(())
    }

    /// Hides the lower-layer content of directory `rel` (recursively sparing this layer's).
    fn make_opaque(&mut self, rel: &str) -> Result<(), OciError> {
        let dir = if rel.is_empty() {
            self.root.to_path_buf()
        } else {
            match self.existing_path(rel)? {
                Some(p) => p,
                None => return Ok(()),
            }
        };
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            _ => return Ok(()),
        }
        let children = fs::read_dir(&dir).map_err(|e| io_at(&dir, e))?;
        for child in children {
            let child = child.map_err(|e| io_at(&dir, e))?;
            let name = child.file_name();
            let Some(name) = name.to_str() else { continue };
            let child_rel = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            if self.this_layer.contains(&child_rel) {
                if child.file_type().map_err(|e| io_at(&dir, e))?.is_dir() {
                    self.make_opaque(&child_rel)?;
                }
            } else {
                self.remove(&child_rel, &child.path())?;
            }
        }
        Ok(())
    }

    /// Applies one tar entry.
    fn apply(&mut self, item: &TarItem, entry: &mut dyn Read) -> Result<(), OciError> {
        let Some(rel) = item.path.as_deref() else {
            return Ok(()); // the root directory itself
        };
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        if let Some(target) = name.strip_prefix(".wh.") {
            if target == ".wh..opq" {
                if in_scope(parent, &self.opts.prefixes) {
                    self.make_opaque(parent)?;
                }
                return Ok(());
            }
            if target.is_empty() || target == "." || target == ".." || target.starts_with(".wh.") {
                return Err(OciError::Unsafe(format!("invalid whiteout {rel}")));
            }
            let victim = if parent.is_empty() {
                target.to_string()
            } else {
                format!("{parent}/{target}")
            };
            if in_scope(&victim, &self.opts.prefixes)
                && !self.this_layer.contains(&victim)
                && let Some(full) = self.existing_path(&victim)?
            {
                self.remove(&victim, &full)?;
            }
            return Ok(());
        }
        if !in_scope(rel, &self.opts.prefixes) {
            return Ok(());
        }
        let kind = item.kind;
        // Ancestors of a filter prefix are created only as directories.
        if !under_prefix(rel, &self.opts.prefixes) && !kind.is_dir() {
            return Ok(());
        }
        let full = self.prepare_parent(rel)?;
        let existing = fs::symlink_metadata(&full).ok();
        if kind.is_dir() {
            if !existing.as_ref().is_some_and(|m| m.is_dir()) {
                self.remove(rel, &full)?;
                fs::create_dir(&full).map_err(|e| io_at(&full, e))?;
                self.report.entries += 1;
            }
            let mode = (item.mode & 0o1777) | 0o700;
            fs::set_permissions(&full, fs::Permissions::from_mode(mode))
                .map_err(|e| io_at(&full, e))?;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            self.remove(rel, &full)?;
            // `create_new` already refuses an existing symlink; O_NOFOLLOW states it.
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&full)
                .map_err(|e| io_at(&full, e))?;
            let copied =
                io::copy(entry, &mut file).map_err(|e| io_error_to_oci(rel.to_string(), e))?;
            if copied != item.size {
                return Err(OciError::Malformed {
                    what: rel.to_string(),
                    message: format!("truncated tar entry ({copied} of {} bytes)", item.size),
                });
            }
            file.set_permissions(fs::Permissions::from_mode((item.mode & 0o777) | 0o400))
                .map_err(|e| io_at(&full, e))?;
            self.report.entries += 1;
            self.report.bytes += copied;
        } else if kind.is_symlink() {
            let target = item.link.clone().unwrap_or_default();
            if target.is_empty() || target.len() > 4095 || target.contains(&0) {
                return Err(OciError::Unsafe(format!("{rel}: invalid symlink target")));
            }
            self.remove(rel, &full)?;
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &full)
                .map_err(|e| io_at(&full, e))?;
            self.report.entries += 1;
        } else if kind.is_hard_link() {
            let target = clean_entry_path(item.link.as_deref().unwrap_or_default())?
                .ok_or_else(|| OciError::Unsafe(format!("{rel}: hardlink to the root")))?;
            let source = self.existing_regular(&target);
            let Some(source) = source? else {
                if !under_prefix(&target, &self.opts.prefixes) {
                    self.report
                        .skipped
                        .push(format!("{rel}: hardlink to filtered-out {target}"));
                    return Ok(());
                }
                return Err(OciError::Unsafe(format!(
                    "{rel}: hardlink target {target} is not a regular file extracted inside the root"
                )));
            };
            self.remove(rel, &full)?;
            fs::hard_link(&source, &full).map_err(|e| io_at(&full, e))?;
            self.report.entries += 1;
        } else {
            tracing::warn!(path = rel, kind = ?kind, "skipping special file in layer");
            self.report
                .skipped
                .push(format!("{rel}: {kind:?} not supported"));
            return Ok(());
        }
        self.this_layer.insert(rel.to_string());
        if self.opts.record_selinux {
            match &item.selinux {
                Some(label) => self
                    .report
                    .selinux_labels
                    .insert(rel.to_string(), label.clone()),
                None => self.report.selinux_labels.remove(rel),
            };
        }
        Ok(())
    }

    /// The full path of `rel` when it is a regular file reached through real directories only.
    fn existing_regular(&self, rel: &str) -> Result<Option<PathBuf>, OciError> {
        let mut full = self.root.to_path_buf();
        let comps: Vec<&str> = rel.split('/').collect();
        for (i, c) in comps.iter().enumerate() {
            full.push(c);
            let meta = match fs::symlink_metadata(&full) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_at(&full, e)),
            };
            let last = i + 1 == comps.len();
            if (last && !meta.is_file()) || (!last && !meta.is_dir()) {
                return Ok(None);
            }
        }
        Ok(Some(full))
    }
}

/// Extracts `layers` (base first) into `dest` (created if missing), applying whiteouts.
/// Blocking: run it on a blocking thread.
pub fn flatten(
    layers: &[Descriptor],
    open: &mut LayerOpener<'_>,
    dest: &Path,
    opts: &FlattenOptions,
) -> Result<FlattenReport, OciError> {
    fs::create_dir_all(dest).map_err(|e| io_at(dest, e))?;
    match fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => {}
        _ => {
            return Err(OciError::Unsafe(format!(
                "{} is not a directory",
                dest.display()
            )));
        }
    }
    let mut ex = Extractor {
        root: dest,
        opts,
        report: FlattenReport::default(),
        this_layer: HashSet::new(),
    };
    let mut used = 0u64;
    for layer in layers {
        ex.this_layer.clear();
        let stream = open_layer(layer, open, opts, opts.max_total_bytes.saturating_sub(used))?;
        used += for_each_entry(stream, |item, entry| ex.apply(item, entry))?;
    }
    Ok(ex.report)
}

/// A [`LayerOpener`] reading blobs of `reference` from an async `source`; for use on a blocking
/// thread (`spawn_blocking`) of the runtime `handle`.
pub fn source_opener<'a, S: ImageSource>(
    source: &'a S,
    reference: &'a Reference,
    handle: tokio::runtime::Handle,
) -> impl FnMut(&Descriptor) -> Result<Box<dyn Read + Send>, OciError> + 'a {
    move |desc| {
        let reader = handle.block_on(source.blob(reference, desc))?;
        Ok(Box::new(tokio_util::io::SyncIoBridge::new_with_handle(
            reader,
            handle.clone(),
        )) as Box<dyn Read + Send>)
    }
}
