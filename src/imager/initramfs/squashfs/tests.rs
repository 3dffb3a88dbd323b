//! Unit tests of the squashfs writer: metadata blocks, xattr table bytes, directory runs,
//! fragment packing, block boundaries and determinism, read back with `backhand`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::path::Path;

use backhand::{FilesystemReader, InnerNode};

use super::data::{BLOCK_SIZE, BLOCK_UNCOMPRESSED, Source, write_data};
use super::metadata::{Codec, METADATA_SIZE, METADATA_UNCOMPRESSED, MetaRef, MetaWriter};
use super::writer::{Content, Entry, Listed, Options, listing, write_image};
use super::xattr::XattrTable;
use super::*;
use crate::synth::pseudo_random;

const CODEC: Codec = Codec { level: 3 };

fn image(entries: &[Entry<'_>], threads: usize) -> Vec<u8> {
    let opts = Options {
        level: 3,
        mtime: SOURCE_DATE_EPOCH as u32,
        threads,
    };
    let mut out = Cursor::new(Vec::new());
    let n = write_image(entries, &opts, &mut out).unwrap();
    let bytes = out.into_inner();
    assert_eq!(n, bytes.len() as u64);
    assert_eq!(bytes.len() % 4096, 0);
    bytes
}

fn dir(path: &str) -> Entry<'_> {
    Entry {
        path,
        mode: 0o755,
        content: Content::Dir,
        xattrs: Vec::new(),
    }
}

fn file<'a>(path: &'a str, data: &'a [u8]) -> Entry<'a> {
    Entry {
        path,
        mode: 0o644,
        content: Content::File(Source::Bytes(data)),
        xattrs: Vec::new(),
    }
}

/// Every regular file's contents by absolute path, read back with backhand.
fn contents(img: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let r = FilesystemReader::from_reader(Cursor::new(img.to_vec())).unwrap();
    let mut out = BTreeMap::new();
    for node in r.files() {
        if let InnerNode::File(f) = &node.inner {
            let mut data = Vec::new();
            std::io::copy(&mut r.file(f).reader(), &mut data).unwrap();
            out.insert(node.fullpath.display().to_string(), data);
        }
    }
    out
}

#[test]
fn metadata_blocks_are_8k_with_size_headers() {
    let mut w = MetaWriter::new(CODEC).unwrap();
    assert_eq!(
        w.pos(),
        MetaRef {
            block: 0,
            offset: 0
        }
    );
    w.write(&[7u8; 100]).unwrap();
    assert_eq!(
        w.pos(),
        MetaRef {
            block: 0,
            offset: 100
        }
    );
    // Incompressible bytes crossing the block boundary: the first block is stored raw.
    w.write(&pseudo_random("squashfs-1", METADATA_SIZE))
        .unwrap();
    assert_eq!(
        w.pos(),
        MetaRef {
            block: 2 + METADATA_SIZE as u64,
            offset: 100
        }
    );
    let (bytes, blocks) = w.finish().unwrap();
    assert_eq!(blocks, [0, 2 + METADATA_SIZE as u64]);
    let h0 = u16::from_le_bytes([bytes[0], bytes[1]]);
    assert_eq!(h0, METADATA_SIZE as u16 | METADATA_UNCOMPRESSED);
    assert_eq!(&bytes[2..102], &[7u8; 100]);
    let second = &bytes[2 + METADATA_SIZE..];
    let h1 = u16::from_le_bytes([second[0], second[1]]);
    assert_eq!(
        h1,
        100 | METADATA_UNCOMPRESSED,
        "100 random bytes do not compress"
    );
    assert_eq!(second.len(), 102);
    // A compressible block is stored compressed: header without bit 15, zstd frame.
    let mut w = MetaWriter::new(CODEC).unwrap();
    w.write(&[0u8; 5000]).unwrap();
    let (bytes, _) = w.finish().unwrap();
    let h = u16::from_le_bytes([bytes[0], bytes[1]]);
    assert_eq!(h & METADATA_UNCOMPRESSED, 0);
    assert_eq!(usize::from(h), bytes.len() - 2);
    assert_eq!(zstd::decode_all(&bytes[2..]).unwrap(), vec![0u8; 5000]);
    assert_eq!(
        MetaRef {
            block: 3,
            offset: 5
        }
        .packed(),
        (3 << 16) | 5
    );
}

#[test]
fn xattr_table_bytes_for_a_small_case() {
    let mut t = XattrTable::default();
    let label = |l: &str| vec![("security.selinux".to_string(), l.as_bytes().to_vec())];
    assert_eq!(t.add(&label("a_t")).unwrap(), 0);
    assert_eq!(t.add(&label("b_t")).unwrap(), 1);
    assert_eq!(
        t.add(&label("a_t")).unwrap(),
        0,
        "identical sets share an index"
    );
    assert!(t.add(&[("system.x".into(), vec![])]).is_err());
    let at = 1000u64;
    let (bytes, header) = t.write(CODEC, at).unwrap();
    // kv block: two pairs of 2+2+7 (key) + 4+3 (value) = 18 bytes, stored raw.
    let pair = |v: &[u8]| {
        let mut p = vec![2, 0, 7, 0];
        p.extend_from_slice(b"selinux");
        p.extend_from_slice(&3u32.to_le_bytes());
        p.extend_from_slice(v);
        p
    };
    let mut kv = vec![];
    kv.extend(pair(b"a_t"));
    kv.extend(pair(b"b_t"));
    let mut expect = (36u16 | METADATA_UNCOMPRESSED).to_le_bytes().to_vec();
    expect.extend_from_slice(&kv);
    // id block: (ref, count, size) per set; set 1 starts at offset 18 of block 0.
    let mut ids = Vec::new();
    for (r, size) in [(0u64, 18u32), (18, 18)] {
        ids.extend_from_slice(&r.to_le_bytes());
        ids.extend_from_slice(&1u32.to_le_bytes());
        ids.extend_from_slice(&size.to_le_bytes());
    }
    expect.extend_from_slice(&(32u16 | METADATA_UNCOMPRESSED).to_le_bytes());
    expect.extend_from_slice(&ids);
    // header: kv start, id count, 0, then the id block location.
    expect.extend_from_slice(&at.to_le_bytes());
    expect.extend_from_slice(&2u32.to_le_bytes());
    expect.extend_from_slice(&0u32.to_le_bytes());
    expect.extend_from_slice(&(at + 38).to_le_bytes());
    assert_eq!(bytes, expect);
    assert_eq!(header, at + 38 + 34);
}

#[test]
fn directory_runs_split_at_256_entries_inode_blocks_and_number_gaps() {
    let names: Vec<String> = (0..600).map(|i| format!("f{i:04}")).collect();
    let entry = |i: usize, block: u64, ino: u32| Listed {
        name: &names[i],
        inode: MetaRef {
            block,
            offset: (i * 10 % 8192) as u16,
        },
        ino,
        kind: 2,
    };
    // Headers: (count - 1, start block, base inode) at the offsets we walk.
    let headers = |b: &[u8]| {
        let mut out = Vec::new();
        let mut off = 0;
        while off < b.len() {
            let count = u32::from_le_bytes(b[off..off + 4].try_into().unwrap()) + 1;
            let start = u32::from_le_bytes(b[off + 4..off + 8].try_into().unwrap());
            let base = u32::from_le_bytes(b[off + 8..off + 12].try_into().unwrap());
            out.push((count, start, base));
            off += 12;
            for _ in 0..count {
                let len = u16::from_le_bytes([b[off + 6], b[off + 7]]) as usize + 1;
                off += 8 + len;
            }
        }
        out
    };
    let all: Vec<Listed<'_>> = (0..600).map(|i| entry(i, 0, 10 + i as u32)).collect();
    assert_eq!(
        headers(&listing(&all, 0).bytes),
        [(256, 0, 10), (256, 0, 266), (88, 0, 522)]
    );
    // Starting 100 bytes before a directory block boundary: a new run at the first entry
    // that would start in the next block (header 12 + 6 entries of 13 bytes = 90).
    let l = listing(&all[..20], METADATA_SIZE - 100);
    assert_eq!(headers(&l.bytes), [(7, 0, 10), (13, 0, 17)]);
    assert_eq!(l.runs, [(0, 0), (12 + 7 * 13, 7)]);
    // Inode block changes after entry 3; a number gap > 32767 after entry 5.
    let mixed: Vec<Listed<'_>> = (0..8)
        .map(|i| match i {
            0..=3 => entry(i, 0, 1 + i as u32),
            4..=5 => entry(i, 8000, 1 + i as u32),
            _ => entry(i, 8000, 40_000 + i as u32),
        })
        .collect();
    let b = listing(&mixed, 0).bytes;
    assert_eq!(headers(&b), [(4, 0, 1), (2, 8000, 5), (2, 8000, 40_006)]);
    // One entry: offset, inode delta, type, name size - 1, name.
    assert_eq!(&b[12..20], &[0, 0, 0, 0, 2, 0, 4, 0]);
    assert_eq!(&b[20..25], b"f0000");
}

#[test]
fn fragments_pack_tails_and_block_boundaries() {
    let exact = pseudo_random("squashfs-2", BLOCK_SIZE);
    let plus_one = pseudo_random("squashfs-3", BLOCK_SIZE + 1);
    let small = b"hello".to_vec();
    let big_tail = pseudo_random("squashfs-4", BLOCK_SIZE - 5);
    let sources = [
        Source::Bytes(&[]),
        Source::Bytes(&exact),
        Source::Bytes(&plus_one),
        Source::Bytes(&small),
        Source::Bytes(&big_tail),
    ];
    let mut out = Vec::new();
    let l = write_data(&sources, CODEC, 2, 96, &mut out).unwrap();
    let f = &l.files;
    assert_eq!(f[0], Default::default(), "empty: no blocks, no fragment");
    assert_eq!(
        (f[1].size, f[1].blocks.len(), f[1].fragment),
        (BLOCK_SIZE as u64, 1, None)
    );
    assert_eq!(f[1].start, 96);
    assert_eq!(
        f[1].blocks[0],
        BLOCK_SIZE as u32 | BLOCK_UNCOMPRESSED,
        "noise is stored raw"
    );
    assert_eq!(f[2].blocks.len(), 1);
    assert_eq!(f[2].start, 96 + BLOCK_SIZE as u64);
    assert_eq!(f[2].fragment, Some((0, 0)));
    assert_eq!(f[3].fragment, Some((0, 1)), "packed after the 1-byte tail");
    // Does not fit in fragment block 0 (6 bytes used): starts fragment block 1.
    assert_eq!(f[4].fragment, Some((1, 0)));
    assert_eq!(l.fragments.len(), 2);
    assert_eq!(l.fragments[0].0, 96 + 2 * BLOCK_SIZE as u64);
    assert_eq!(l.end, 96 + out.len() as u64);
}

#[test]
fn sizes_around_the_block_size_read_back() {
    let sizes = [
        0,
        1,
        BLOCK_SIZE - 1,
        BLOCK_SIZE,
        BLOCK_SIZE + 1,
        5 * BLOCK_SIZE / 2,
        3 << 20,
    ];
    let datas: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            // Half compressible: both raw and compressed blocks occur.
            let mut d = pseudo_random(&format!("squashfs-{}", i as u64 + 10), *n);
            d.iter_mut().skip(*n / 2).for_each(|b| *b = 0);
            d
        })
        .collect();
    let names: Vec<String> = sizes.iter().map(|n| format!("d/f{n}")).collect();
    let mut entries = vec![dir("d")];
    for (n, d) in names.iter().zip(&datas) {
        entries.push(file(n, d));
    }
    let img = image(&entries, 2);
    let got = contents(&img);
    for (n, d) in names.iter().zip(&datas) {
        assert_eq!(got[&format!("/{n}")].as_slice(), d.as_slice(), "{n}");
    }
    // Determinism: thread count does not matter, entry order does not matter.
    assert_eq!(img, image(&entries, 1));
    entries.reverse();
    assert_eq!(img, image(&entries, 3));
}

#[test]
fn inode_kinds_xattr_flags_and_superblock() {
    let cfg = b"config".to_vec();
    let label = vec![(
        SELINUX_XATTR.to_string(),
        b"system_u:object_r:system_state_t:s0".to_vec(),
    )];
    let mut entries = vec![
        dir("etc"),
        Entry {
            xattrs: label.clone(),
            mode: 0o400,
            ..file("etc/config.yaml", &cfg)
        },
        Entry {
            path: "link",
            mode: 0o777,
            content: Content::Symlink("etc/config.yaml"),
            xattrs: Vec::new(),
        },
        Entry {
            path: "null",
            mode: 0o666,
            content: Content::CharDev(0x103),
            xattrs: Vec::new(),
        },
    ];
    let plain = image(&entries[..1], 1);
    let sb = |img: &[u8], at: usize, n: usize| {
        u64::from_le_bytes({
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(&img[at..at + n]);
            b
        })
    };
    assert_eq!(&plain[..4], b"hsqs");
    assert_eq!(sb(&plain, 12, 4), BLOCK_SIZE as u64);
    assert_eq!(sb(&plain, 20, 2), 6, "zstd");
    assert_eq!(sb(&plain, 22, 2), 17);
    assert_eq!(
        sb(&plain, 24, 2),
        0x0200 | 0x0400,
        "no xattrs, compressor options"
    );
    assert_eq!(sb(&plain, 56, 8), u64::MAX, "no xattr table");
    assert_eq!(sb(&plain, 88, 8), u64::MAX, "no export table");
    assert_eq!(
        &plain[96..102],
        &[4, 0x80, 3, 0, 0, 0],
        "options: level 3, raw block"
    );
    entries.push(Entry {
        xattrs: label.clone(),
        ..dir("")
    });
    let img = image(&entries, 2);
    assert_eq!(sb(&img, 24, 2), 0x0400);
    assert_eq!(sb(&img, 4, 4), 5, "inodes");
    let xt = sb(&img, 56, 8);
    let used = sb(&img, 40, 8);
    assert_eq!(
        xt + 16 + 8,
        used,
        "xattr id header and its one-block index end the image"
    );
    let r = FilesystemReader::from_reader(Cursor::new(img.clone())).unwrap();
    let mut seen = Vec::new();
    for node in r.files() {
        let kind = match &node.inner {
            InnerNode::Dir(_) => "d".to_string(),
            InnerNode::File(_) => "f".to_string(),
            InnerNode::Symlink(s) => format!("l {}", s.link.display()),
            InnerNode::CharacterDevice(d) => format!("c {:#x}", d.device_number),
            _ => "?".to_string(),
        };
        assert_eq!((node.header.uid, node.header.gid), (0, 0));
        assert_eq!(node.header.mtime, SOURCE_DATE_EPOCH as u32);
        seen.push((
            node.fullpath.display().to_string(),
            node.header.permissions,
            kind,
        ));
    }
    assert_eq!(
        seen,
        [
            ("/".to_string(), 0o755, "d".to_string()),
            ("/etc".to_string(), 0o755, "d".to_string()),
            ("/etc/config.yaml".to_string(), 0o400, "f".to_string()),
            ("/link".to_string(), 0o777, "l etc/config.yaml".to_string()),
            ("/null".to_string(), 0o666, "c 0x103".to_string()),
        ]
    );
    assert_eq!(contents(&img)["/etc/config.yaml"], cfg);
}

#[test]
fn invalid_trees_are_refused() {
    let opts = Options {
        level: 3,
        mtime: 0,
        threads: 1,
    };
    let bad = [file("a/b", b"x")];
    let dup = [file("a", b"x"), file("a", b"y")];
    let under_file = [file("a", b"x"), file("a/b", b"y")];
    for tree in [&bad[..], &dup[..], &under_file[..]] {
        assert!(write_image(tree, &opts, &mut Cursor::new(Vec::new())).is_err());
    }
}

#[test]
fn large_directories_read_back() {
    // 1000 entries: several directory runs and inode blocks; names sort bytewise.
    let names: Vec<String> = (0..1000).map(|i| format!("n{}", 1000 - i)).collect();
    let mut entries = vec![dir("big")];
    let paths: Vec<String> = names.iter().map(|n| format!("big/{n}")).collect();
    for p in &paths {
        entries.push(file(p, p.as_bytes()));
    }
    let img = image(&entries, 2);
    let got = contents(&img);
    assert_eq!(got.len(), 1000);
    for p in &paths {
        assert_eq!(got[&format!("/{p}")], p.as_bytes());
    }
}

#[test]
fn build_and_read_back() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("rootfs");
    fs::create_dir_all(root.join("usr/lib/modules/6.1.0/extras")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("usr/lib/modules/6.1.0/extras/a.ko"), b"module").unwrap();
    fs::write(root.join("etc/x"), b"x").unwrap();
    std::os::unix::fs::symlink("../x", root.join("usr/lib/modules/6.1.0/build")).unwrap();
    let labels = BTreeMap::from([("etc/x".to_string(), "l_t".to_string())]);
    let img = d.path().join("0.sqsh");
    let rep = build_squashfs(&root, &img, 18, &labels).unwrap();
    assert_eq!(rep.size, fs::metadata(&img).unwrap().len());
    assert_eq!(rep.labels, 1);
    let again = d.path().join("again.sqsh");
    build_squashfs(&root, &again, 18, &labels).unwrap();
    assert_eq!(fs::read(&img).unwrap(), fs::read(&again).unwrap());
    let out = d.path().join("out");
    let n = extract_subtree(&img, "usr/lib/modules", &out).unwrap();
    assert_eq!(n, 5);
    assert_eq!(
        fs::read(out.join("usr/lib/modules/6.1.0/extras/a.ko")).unwrap(),
        b"module"
    );
    assert!(!out.join("etc").exists());
    assert_eq!(
        fs::read_link(out.join("usr/lib/modules/6.1.0/build")).unwrap(),
        Path::new("../x")
    );
}
