//! Assembles a squashfs 4.0 image: superblock, compressor options, data blocks and fragments,
//! inode table, directory table, fragment table, id table (one id, 0) and, when any entry has
//! extended attributes, the xattr table. No export table (`mksquashfs -no-exports`).
//!
//! Inodes are written children first (post-order), numbered in that order, so a directory's
//! listing can refer to its children's inodes and the root gets the last number. Basic inode
//! types are used unless an entry has xattrs, needs 64-bit fields or (directories) a directory
//! index because its listing spans metadata blocks.

use std::collections::HashMap;
use std::io::{self, Seek, SeekFrom, Write};

use super::data::{self, BLOCK_SIZE, DataLayout, Source};
use super::metadata::{Codec, METADATA_SIZE, MetaRef, MetaWriter, lookup_table};
use super::xattr::{Xattr, XattrTable};

const MAGIC: u32 = 0x7371_7368;
const ZSTD_ID: u16 = 6;
const ZSTD_DEFAULT_LEVEL: i32 = 15;
const FLAG_NO_XATTRS: u16 = 0x0200;
const FLAG_COMPRESSOR_OPTIONS: u16 = 0x0400;
const NO_TABLE: u64 = u64::MAX;
const NO_FRAGMENT: u32 = u32::MAX;
const NO_XATTR: u32 = u32::MAX;
/// Images are zero-padded to a multiple of this (loop devices read whole 4 KiB blocks).
const PAD: u64 = 4096;
/// Most entries one directory header may announce.
const DIR_RUN: usize = 256;

/// What an entry is.
#[derive(Debug, Clone)]
pub enum Content<'a> {
    /// A directory.
    Dir,
    /// A regular file.
    File(Source<'a>),
    /// A symbolic link to this target.
    Symlink(&'a str),
    /// A character device with this Linux device number (`new_encode_dev`).
    CharDev(u32),
}

/// One entry of the tree to write.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// Path relative to the image root, `/`-separated; `""` is the root directory itself.
    pub path: &'a str,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Kind and contents.
    pub content: Content<'a>,
    /// Extended attributes (`security.selinux`, …).
    pub xattrs: Vec<Xattr>,
}

/// Image-wide settings.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// zstd level of data and metadata blocks.
    pub level: i32,
    /// mtime of every inode and of the superblock.
    pub mtime: u32,
    /// Compression threads for data blocks.
    pub threads: usize,
}

struct Node<'a> {
    name: &'a str,
    mode: u16,
    content: Content<'a>,
    xattr: u32,
    children: Vec<usize>,
    file: usize,
    ino: u32,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The tree as nodes (index 0 = root), children sorted by name bytes.
fn build_tree<'a>(entries: &'a [Entry<'a>], xattrs: &mut XattrTable) -> io::Result<Vec<Node<'a>>> {
    let mut nodes = vec![Node {
        name: "",
        mode: 0o755,
        content: Content::Dir,
        xattr: NO_XATTR,
        children: Vec::new(),
        file: 0,
        ino: 0,
    }];
    let mut by_path: HashMap<&str, usize> = HashMap::from([("", 0)]);
    let mut sorted: Vec<&Entry<'a>> = entries.iter().collect();
    // Parents sort before their children.
    sorted.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    for e in sorted {
        let xattr = if e.xattrs.is_empty() {
            NO_XATTR
        } else {
            xattrs.add(&e.xattrs)?
        };
        if e.path.is_empty() {
            if !matches!(e.content, Content::Dir) {
                return Err(invalid("the root must be a directory".into()));
            }
            nodes[0].mode = (e.mode & 0o7777) as u16;
            nodes[0].xattr = xattr;
            continue;
        }
        let (parent, name) = e.path.rsplit_once('/').unwrap_or(("", e.path));
        if name.is_empty() || name == "." || name == ".." || name.len() > 256 {
            return Err(invalid(format!("{:?}: invalid name", e.path)));
        }
        let Some(&p) = by_path.get(parent) else {
            return Err(invalid(format!("{}: parent directory missing", e.path)));
        };
        if !matches!(nodes[p].content, Content::Dir) {
            return Err(invalid(format!("{}: parent is not a directory", e.path)));
        }
        let idx = nodes.len();
        if by_path.insert(e.path, idx).is_some() {
            return Err(invalid(format!("{}: duplicate entry", e.path)));
        }
        nodes.push(Node {
            name,
            mode: (e.mode & 0o7777) as u16,
            content: e.content.clone(),
            xattr,
            children: Vec::new(),
            file: 0,
            ino: 0,
        });
        nodes[p].children.push(idx);
    }
    for i in 0..nodes.len() {
        let mut kids = std::mem::take(&mut nodes[i].children);
        kids.sort_by(|a, b| nodes[*a].name.as_bytes().cmp(nodes[*b].name.as_bytes()));
        nodes[i].children = kids;
    }
    Ok(nodes)
}

/// Numbers inodes in post-order (children before their directory, root last) and lists file
/// sources in pre-order (the order their data is written).
fn number<'a>(nodes: &mut [Node<'a>]) -> Vec<Source<'a>> {
    let mut sources = Vec::new();
    let mut next = 1u32;
    let mut stack = vec![(0usize, false)];
    while let Some((i, expanded)) = stack.pop() {
        if expanded {
            nodes[i].ino = next;
            next += 1;
            continue;
        }
        if let Content::File(src) = nodes[i].content {
            nodes[i].file = sources.len();
            sources.push(src);
        }
        stack.push((i, true));
        for &c in nodes[i].children.iter().rev() {
            stack.push((c, false));
        }
    }
    sources
}

struct Tables {
    inodes: MetaWriter,
    dirs: MetaWriter,
    mtime: u32,
    inode_count: u32,
}

/// The basic type code of a node (what directory entries store).
fn basic_type(c: &Content<'_>) -> u16 {
    match c {
        Content::Dir => 1,
        Content::File(_) => 2,
        Content::Symlink(_) => 3,
        Content::CharDev(_) => 5,
    }
}

fn put16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

/// One child of a directory as its listing needs it.
pub struct Listed<'a> {
    /// Entry name.
    pub name: &'a str,
    /// Where its inode is.
    pub inode: MetaRef,
    /// Its inode number.
    pub ino: u32,
    /// Its basic type code.
    pub kind: u16,
}

/// A directory listing and where its runs start.
pub struct Listing {
    /// The listing bytes (headers and entries).
    pub bytes: Vec<u8>,
    /// Per run: offset of its header in `bytes` and index of its first child.
    pub runs: Vec<(usize, usize)>,
}

/// A directory listing starting at offset `start` of an uncompressed metadata block: runs of at
/// most 256 entries whose inodes share one inode metadata block, whose numbers are within
/// ±32767 of the run's header, and which stay in one directory metadata block (so the directory
/// index can point at every block's first run).
pub fn listing(children: &[Listed<'_>], start: usize) -> Listing {
    let mut b = Vec::new();
    let mut runs = Vec::new();
    let block_of = |len: usize| (start + len) / METADATA_SIZE;
    let mut i = 0;
    while i < children.len() {
        let first = &children[i];
        let header_at = b.len();
        runs.push((header_at, i));
        let header_block = block_of(header_at);
        put32(&mut b, 0); // count, patched below
        put32(&mut b, first.inode.block as u32);
        put32(&mut b, first.ino);
        let mut j = i;
        while j < children.len() {
            let c = &children[j];
            let fits = j == i
                || (j - i < DIR_RUN
                    && c.inode.block == first.inode.block
                    && i16::try_from(i64::from(c.ino) - i64::from(first.ino)).is_ok()
                    && block_of(b.len()) == header_block);
            if !fits {
                break;
            }
            put16(&mut b, c.inode.offset);
            b.extend_from_slice(&((i64::from(c.ino) - i64::from(first.ino)) as i16).to_le_bytes());
            put16(&mut b, c.kind);
            put16(&mut b, (c.name.len() - 1) as u16);
            b.extend_from_slice(c.name.as_bytes());
            j += 1;
        }
        b[header_at..header_at + 4].copy_from_slice(&((j - i - 1) as u32).to_le_bytes());
        i = j;
    }
    Listing { bytes: b, runs }
}

impl Tables {
    fn header(&self, b: &mut Vec<u8>, kind: u16, n: &Node<'_>) {
        put16(b, kind);
        put16(b, n.mode);
        put16(b, 0); // uid index: the id table's only entry, 0
        put16(b, 0); // gid index
        put32(b, self.mtime);
        put32(b, n.ino);
    }

    /// Writes the inodes of `i`'s subtree (and its directory listings); returns `i`'s inode.
    fn emit(
        &mut self,
        nodes: &[Node<'_>],
        layout: &DataLayout,
        i: usize,
        parent: u32,
    ) -> io::Result<MetaRef> {
        let n = &nodes[i];
        let mut b = Vec::with_capacity(64);
        match &n.content {
            Content::Dir => {
                let mut listed = Vec::with_capacity(n.children.len());
                for &c in &n.children {
                    let inode = self.emit(nodes, layout, c, n.ino)?;
                    let cn = &nodes[c];
                    listed.push(Listed {
                        name: cn.name,
                        inode,
                        ino: cn.ino,
                        kind: basic_type(&cn.content),
                    });
                }
                let at = self.dirs.pos();
                let l = listing(&listed, usize::from(at.offset));
                // Directory index: one entry per run that starts in a later metadata block.
                let mut index = Vec::new();
                let mut index_count = 0u16;
                let mut written = 0;
                for &(off, first) in &l.runs {
                    self.dirs.write(&l.bytes[written..off])?;
                    written = off;
                    let here = self.dirs.pos();
                    if here.block != at.block && index_count < u16::MAX {
                        let name = listed[first].name;
                        put32(&mut index, off as u32);
                        put32(&mut index, here.block as u32);
                        put32(&mut index, (name.len() - 1) as u32);
                        index.extend_from_slice(name.as_bytes());
                        index_count += 1;
                    }
                }
                self.dirs.write(&l.bytes[written..])?;
                let size = l.bytes.len() as u64 + 3;
                let links = 2 + n
                    .children
                    .iter()
                    .filter(|c| matches!(nodes[**c].content, Content::Dir))
                    .count() as u32;
                let block = u32::try_from(at.block)
                    .map_err(|_| invalid("directory table too large".into()))?;
                if n.xattr == NO_XATTR && index_count == 0 && size <= u64::from(u16::MAX) {
                    self.header(&mut b, 1, n);
                    put32(&mut b, block);
                    put32(&mut b, links);
                    put16(&mut b, size as u16);
                    put16(&mut b, at.offset);
                    put32(&mut b, parent);
                } else {
                    let size = u32::try_from(size)
                        .map_err(|_| invalid(format!("{}: directory too large", n.name)))?;
                    self.header(&mut b, 8, n);
                    put32(&mut b, links);
                    put32(&mut b, size);
                    put32(&mut b, block);
                    put32(&mut b, parent);
                    put16(&mut b, index_count);
                    put16(&mut b, at.offset);
                    put32(&mut b, n.xattr);
                    b.extend_from_slice(&index);
                }
            }
            Content::File(_) => {
                let f = &layout.files[n.file];
                let (frag, frag_off) = f.fragment.unwrap_or((NO_FRAGMENT, 0));
                if n.xattr == NO_XATTR
                    && f.start <= u64::from(u32::MAX)
                    && f.size <= u64::from(u32::MAX)
                {
                    self.header(&mut b, 2, n);
                    put32(&mut b, f.start as u32);
                    put32(&mut b, frag);
                    put32(&mut b, frag_off);
                    put32(&mut b, f.size as u32);
                } else {
                    self.header(&mut b, 9, n);
                    put64(&mut b, f.start);
                    put64(&mut b, f.size);
                    put64(&mut b, 0); // sparse bytes
                    put32(&mut b, 1); // links
                    put32(&mut b, frag);
                    put32(&mut b, frag_off);
                    put32(&mut b, n.xattr);
                }
                for w in &f.blocks {
                    put32(&mut b, *w);
                }
            }
            Content::Symlink(target) => {
                self.header(&mut b, if n.xattr == NO_XATTR { 3 } else { 10 }, n);
                put32(&mut b, 1);
                put32(&mut b, target.len() as u32);
                b.extend_from_slice(target.as_bytes());
                if n.xattr != NO_XATTR {
                    put32(&mut b, n.xattr);
                }
            }
            Content::CharDev(dev) => {
                self.header(&mut b, if n.xattr == NO_XATTR { 5 } else { 12 }, n);
                put32(&mut b, 1);
                put32(&mut b, *dev);
                if n.xattr != NO_XATTR {
                    put32(&mut b, n.xattr);
                }
            }
        }
        let at = self.inodes.pos();
        self.inodes.write(&b)?;
        Ok(at)
    }
}

/// The 96-byte superblock.
struct Superblock {
    inode_count: u32,
    mtime: u32,
    fragments: u32,
    flags: u16,
    root: u64,
    bytes_used: u64,
    id_table: u64,
    xattr_table: u64,
    inode_table: u64,
    dir_table: u64,
    fragment_table: u64,
}

impl Superblock {
    fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(96);
        put32(&mut b, MAGIC);
        put32(&mut b, self.inode_count);
        put32(&mut b, self.mtime);
        put32(&mut b, BLOCK_SIZE as u32);
        put32(&mut b, self.fragments);
        put16(&mut b, ZSTD_ID);
        put16(&mut b, BLOCK_SIZE.trailing_zeros() as u16);
        put16(&mut b, self.flags);
        put16(&mut b, 1); // ids
        put16(&mut b, 4);
        put16(&mut b, 0);
        for v in [
            self.root,
            self.bytes_used,
            self.id_table,
            self.xattr_table,
            self.inode_table,
            self.dir_table,
            self.fragment_table,
            NO_TABLE, // export table
        ] {
            put64(&mut b, v);
        }
        b
    }
}

/// Writes the image of `entries` to `out` (from its current position, taken as offset 0);
/// returns the image size including the padding to 4 KiB.
pub fn write_image<W: Write + Seek + ?Sized>(
    entries: &[Entry<'_>],
    opts: &Options,
    out: &mut W,
) -> io::Result<u64> {
    let codec = Codec { level: opts.level };
    let mut xattrs = XattrTable::default();
    let mut nodes = build_tree(entries, &mut xattrs)?;
    let sources = number(&mut nodes);
    let inode_count = nodes.len() as u32;
    let base = out.stream_position()?;
    out.write_all(&[0u8; 96])?;
    let mut pos = 96u64;
    let mut flags = 0u16;
    if opts.level != ZSTD_DEFAULT_LEVEL {
        // Compressor options (like mksquashfs for a non-default level): one uncompressed
        // metadata block holding the level.
        flags |= FLAG_COMPRESSOR_OPTIONS;
        out.write_all(&(4u16 | super::metadata::METADATA_UNCOMPRESSED).to_le_bytes())?;
        out.write_all(&(opts.level as u32).to_le_bytes())?;
        pos += 6;
    }
    let layout = data::write_data(&sources, codec, opts.threads, pos, out)?;
    pos = layout.end;

    let mut t = Tables {
        inodes: MetaWriter::new(codec)?,
        dirs: MetaWriter::new(codec)?,
        mtime: opts.mtime,
        inode_count,
    };
    let root = t.emit(&nodes, &layout, 0, t.inode_count + 1)?;
    let (inode_bytes, _) = t.inodes.finish()?;
    let (dir_bytes, _) = t.dirs.finish()?;
    let inode_table = pos;
    out.write_all(&inode_bytes)?;
    pos += inode_bytes.len() as u64;
    let dir_table = pos;
    out.write_all(&dir_bytes)?;
    pos += dir_bytes.len() as u64;

    let mut frag_entries = Vec::with_capacity(layout.fragments.len() * 16);
    for (start, word) in &layout.fragments {
        put64(&mut frag_entries, *start);
        put32(&mut frag_entries, *word);
        put32(&mut frag_entries, 0);
    }
    let (frag_bytes, fragment_table) = lookup_table(codec, &frag_entries, pos)?;
    out.write_all(&frag_bytes)?;
    pos += frag_bytes.len() as u64;

    let (id_bytes, id_table) = lookup_table(codec, &0u32.to_le_bytes(), pos)?;
    out.write_all(&id_bytes)?;
    pos += id_bytes.len() as u64;

    let xattr_table = if xattrs.is_empty() {
        flags |= FLAG_NO_XATTRS;
        NO_TABLE
    } else {
        let (bytes, header) = xattrs.write(codec, pos)?;
        out.write_all(&bytes)?;
        pos += bytes.len() as u64;
        header
    };
    let bytes_used = pos;
    let padded = bytes_used.div_ceil(PAD) * PAD;
    out.write_all(&vec![0u8; (padded - bytes_used) as usize])?;
    let sb = Superblock {
        inode_count,
        mtime: opts.mtime,
        fragments: layout.fragments.len() as u32,
        flags,
        root: root.packed(),
        bytes_used,
        id_table,
        xattr_table,
        inode_table,
        dir_table,
        fragment_table,
    };
    out.seek(SeekFrom::Start(base))?;
    out.write_all(&sb.bytes())?;
    out.seek(SeekFrom::Start(base + padded))?;
    out.flush()?;
    Ok(padded)
}
