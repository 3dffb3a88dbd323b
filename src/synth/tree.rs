//! An in-memory file tree rendered deterministically as a tar layer, a newc cpio archive or a
//! squashfs image. Paths are relative, `/`-separated, without `./`; parents are created on
//! demand (mode 0755) and every entry is owned by 0:0 with the fixed mtime [`SOURCE_DATE_EPOCH`].

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::sync::Arc;

use super::KitError;

/// The fixed timestamp of every entry (Talos' `SOURCE_DATE_EPOCH`).
pub const SOURCE_DATE_EPOCH: u32 = 1_559_424_892;

/// One entry of a [`Tree`].
#[derive(Debug, Clone)]
pub enum Node {
    /// A directory with its permission bits.
    Dir(u32),
    /// A regular file with its permission bits and contents.
    File(u32, Arc<[u8]>),
    /// A symbolic link to the target.
    Symlink(String),
    /// A character device `(major, minor)` with its permission bits.
    CharDev(u32, u32, u32),
}

/// A sorted file tree.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

fn clean(path: &str) -> String {
    path.trim_start_matches("./")
        .trim_matches('/')
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    fn parents(&mut self, path: &str) {
        let mut acc = String::new();
        let comps: Vec<&str> = path.split('/').collect();
        for c in &comps[..comps.len().saturating_sub(1)] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            self.nodes.entry(acc.clone()).or_insert(Node::Dir(0o755));
        }
    }

    /// Adds (or replaces) a directory.
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let p = clean(path);
        if p.is_empty() {
            return self;
        }
        self.parents(&p);
        self.nodes.insert(p, Node::Dir(mode));
        self
    }

    /// Adds (or replaces) a regular file.
    pub fn file(&mut self, path: &str, mode: u32, data: impl Into<Arc<[u8]>>) -> &mut Self {
        let p = clean(path);
        self.parents(&p);
        self.nodes.insert(p, Node::File(mode, data.into()));
        self
    }

    /// Adds (or replaces) a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let p = clean(path);
        self.parents(&p);
        self.nodes.insert(p, Node::Symlink(target.to_string()));
        self
    }

    /// Adds a character device node.
    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> &mut Self {
        let p = clean(path);
        self.parents(&p);
        self.nodes.insert(p, Node::CharDev(mode, major, minor));
        self
    }

    /// Copies every entry of `other` under `prefix` (empty = at the root).
    pub fn merge(&mut self, prefix: &str, other: &Tree) -> &mut Self {
        let prefix = clean(prefix);
        if !prefix.is_empty() {
            self.dir(&prefix, 0o755);
        }
        for (p, n) in &other.nodes {
            let full = if prefix.is_empty() {
                p.clone()
            } else {
                format!("{prefix}/{p}")
            };
            self.parents(&full);
            self.nodes.insert(full, n.clone());
        }
        self
    }

    /// The entries, sorted by path (parents before children).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(p, n)| (p.as_str(), n))
    }

    /// The file at `path`, if any.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(&clean(path))
    }

    /// Total size of the regular files.
    pub fn file_bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| match n {
                Node::File(_, d) => d.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// An uncompressed tar (ustar) of the tree, as an OCI layer's diff.
    pub fn to_tar(&self) -> Result<Vec<u8>, KitError> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, node) in &self.nodes {
            let mut h = tar::Header::new_ustar();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(SOURCE_DATE_EPOCH as u64);
            let r = match node {
                Node::Dir(mode) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_size(0);
                    b.append_data(&mut h, format!("{path}/"), std::io::empty())
                }
                Node::File(mode, data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, &data[..])
                }
                Node::Symlink(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, path, target)
                }
                Node::CharDev(mode, major, minor) => {
                    h.set_entry_type(tar::EntryType::Char);
                    h.set_mode(*mode);
                    h.set_size(0);
                    h.set_device_major(*major).ok();
                    h.set_device_minor(*minor).ok();
                    b.append_data(&mut h, path, std::io::empty())
                }
            };
            r.map_err(|e| KitError::io(format!("building test kit content: tar entry {path}"), e))?;
        }
        b.into_inner()
            .map_err(|e| KitError::io("building test kit content: tar", e))
    }

    /// A newc cpio archive of the tree in the shape of `find . | LC_ALL=C sort | cpio
    /// --reproducible -H newc -o`: first the entry `.`, then every path sorted, inodes numbered
    /// from 1 in order, dev numbers 0, mtime [`SOURCE_DATE_EPOCH`], the `TRAILER!!!` entry, and
    /// zero padding to a 512-byte multiple.
    pub fn to_cpio(&self) -> Result<Vec<u8>, KitError> {
        let io = |e: std::io::Error| KitError::io("building test kit content: cpio", e);
        let mut out: Vec<u8> = Vec::new();
        let mut ino = 1u32;
        let mut entry = |out: &mut Vec<u8>,
                         name: &str,
                         mode: u32,
                         rdev: (u32, u32),
                         data: &[u8]|
         -> std::io::Result<()> {
            let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
            let mut w = cpio::newc::Builder::new(name)
                .ino(ino)
                .mode(mode)
                .uid(0)
                .gid(0)
                .nlink(nlink)
                .mtime(SOURCE_DATE_EPOCH)
                .rdev_major(rdev.0)
                .rdev_minor(rdev.1)
                .write(&mut *out, data.len() as u32);
            w.write_all(data)?;
            w.finish()?;
            ino += 1;
            Ok(())
        };
        entry(&mut out, ".", 0o040755, (0, 0), &[]).map_err(io)?;
        for (path, node) in &self.nodes {
            match node {
                Node::Dir(mode) => entry(&mut out, path, 0o040000 | mode, (0, 0), &[]),
                Node::File(mode, data) => entry(&mut out, path, 0o100000 | mode, (0, 0), data),
                Node::Symlink(t) => entry(&mut out, path, 0o120777, (0, 0), t.as_bytes()),
                Node::CharDev(mode, ma, mi) => {
                    entry(&mut out, path, 0o020000 | mode, (*ma, *mi), &[])
                }
            }
            .map_err(io)?;
        }
        let mut out = cpio::newc::trailer(out).map_err(io)?;
        let pad = (512 - out.len() % 512) % 512;
        out.resize(out.len() + pad, 0);
        Ok(out)
    }

    /// A squashfs (v4, zstd, 128 KiB blocks) image of the tree, all entries 0:0 and mtime
    /// [`SOURCE_DATE_EPOCH`], written by the imager's own squashfs writer (so the boot tests'
    /// kernels mount images in its format).
    pub fn to_squashfs(&self) -> Result<Vec<u8>, KitError> {
        use crate::imager::initramfs::squashfs::{Content, Entry, Options, Source, write_image};
        // The writer adds the root directory (0755, unlabelled) itself.
        let mut entries = Vec::with_capacity(self.nodes.len());
        for (path, node) in &self.nodes {
            let (mode, content) = match node {
                Node::Dir(mode) => (*mode, Content::Dir),
                Node::File(mode, data) => (*mode, Content::File(Source::Bytes(data))),
                Node::Symlink(t) => (0o777, Content::Symlink(t)),
                // Linux new_encode_dev.
                Node::CharDev(mode, ma, mi) => (
                    *mode,
                    Content::CharDev((mi & 0xff) | (ma << 8) | ((mi & !0xff) << 12)),
                ),
            };
            entries.push(Entry {
                path,
                mode,
                content,
                xattrs: Vec::new(),
            });
        }
        let opts = Options {
            level: 3,
            mtime: SOURCE_DATE_EPOCH,
            threads: crate::imager::initramfs::squashfs::threads(),
        };
        let mut out = Cursor::new(Vec::new());
        write_image(&entries, &opts, &mut out)
            .map_err(|e| KitError::io("building test kit content: squashfs", e))?;
        Ok(out.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_and_order() {
        let mut t = Tree::new();
        t.file("./a/b/c.txt", 0o644, &b"x"[..]).symlink("a-l", "a");
        let names: Vec<&str> = t.entries().map(|(p, _)| p).collect();
        assert_eq!(names, ["a", "a-l", "a/b", "a/b/c.txt"]);
        let cpio = t.to_cpio().unwrap();
        assert_eq!(cpio.len() % 512, 0);
        assert_eq!(&cpio[..6], b"070701");
        assert_eq!(t.to_squashfs().unwrap(), t.to_squashfs().unwrap());
    }
}
