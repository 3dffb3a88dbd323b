//! Repairs what `fatfs` 0.3.6 gets wrong on FAT32, so that `fsck.vfat -n` (dosfstools) finds
//! nothing to fix:
//!
//! * with the `alloc` feature it writes long-name (LFN) entries for every name, including a
//!   new directory's `.` and `..`, so `.` is not in slot 0 and `..` not in slot 1;
//! * `..` of a directory in the root points at the root cluster instead of cluster 0;
//! * FSInfo's free-cluster count stays "unknown" (`0xFFFFFFFF`).
//!
//! [`fix_volume`] runs after the volume is unmounted: it rewrites every subdirectory's entries
//! as `.`, `..` (correct clusters, no LFN), then the other entries in their order, and sets
//! the FSInfo counters from the FAT.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// Size of a directory entry.
const ENTRY: usize = 32;
/// Attribute byte value of an LFN entry.
const ATTR_LFN: u8 = 0x0F;
/// Read-only attribute bit.
const ATTR_READ_ONLY: u8 = 0x01;
/// Directory attribute bit.
const ATTR_DIR: u8 = 0x10;
/// Volume label attribute bit.
const ATTR_VOLUME: u8 = 0x08;
const DOT: &[u8; 11] = b".          ";
const DOTDOT: &[u8; 11] = b"..         ";

struct Bpb {
    bytes_per_sector: u64,
    cluster_size: u64,
    fat_offset: u64,
    data_offset: u64,
    root_cluster: u32,
    fs_info_offset: u64,
    clusters: u32,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("FAT32 fixup: {what}"))
}

impl Bpb {
    fn read<V: Read + Seek>(v: &mut V) -> io::Result<Bpb> {
        let mut b = [0u8; 512];
        v.seek(SeekFrom::Start(0))?;
        v.read_exact(&mut b)?;
        let bps = u64::from(u16_at(&b, 0x0B));
        let spc = u64::from(b[0x0D]);
        let reserved = u64::from(u16_at(&b, 0x0E));
        let fats = u64::from(b[0x10]);
        let total = if u16_at(&b, 0x13) != 0 {
            u64::from(u16_at(&b, 0x13))
        } else {
            u64::from(u32_at(&b, 0x20))
        };
        let fat_sectors = u64::from(u32_at(&b, 0x24));
        if bps < 512 || spc == 0 || fat_sectors == 0 || u16_at(&b, 0x16) != 0 {
            return Err(invalid("not a FAT32 boot sector"));
        }
        let data_sector = reserved + fats * fat_sectors;
        let clusters = (total.saturating_sub(data_sector) / spc) as u32;
        Ok(Bpb {
            bytes_per_sector: bps,
            cluster_size: bps * spc,
            fat_offset: reserved * bps,
            data_offset: data_sector * bps,
            root_cluster: u32_at(&b, 0x2C),
            fs_info_offset: u64::from(u16_at(&b, 0x30)) * bps,
            clusters,
        })
    }

    fn cluster_offset(&self, c: u32) -> u64 {
        self.data_offset + u64::from(c - 2) * self.cluster_size
    }
}

/// The first FAT (one `u32` per cluster, index = cluster number).
fn read_fat<V: Read + Seek>(v: &mut V, bpb: &Bpb) -> io::Result<Vec<u32>> {
    let mut raw = vec![0u8; (bpb.clusters as usize + 2) * 4];
    v.seek(SeekFrom::Start(bpb.fat_offset))?;
    v.read_exact(&mut raw)?;
    Ok(raw
        .chunks_exact(4)
        .map(|c| u32_at(c, 0) & 0x0FFF_FFFF)
        .collect())
}

fn chain(fat: &[u32], first: u32) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    let mut c = first;
    while (2..0x0FFF_FFF8).contains(&c) {
        if out.len() > fat.len() {
            return Err(invalid("cluster chain loops"));
        }
        out.push(c);
        c = *fat
            .get(c as usize)
            .ok_or_else(|| invalid("cluster out of range"))?;
    }
    Ok(out)
}

fn first_cluster(e: &[u8]) -> u32 {
    (u32::from(u16_at(e, 20)) << 16) | u32::from(u16_at(e, 26))
}

fn set_first_cluster(e: &mut [u8], c: u32) {
    e[20..22].copy_from_slice(&((c >> 16) as u16).to_le_bytes());
    e[26..28].copy_from_slice(&(c as u16).to_le_bytes());
}

/// The LFN checksum of an 8.3 name.
fn lfn_checksum(name: &[u8]) -> u8 {
    name.iter().fold(0u8, |s, b| {
        ((s & 1) << 7).wrapping_add(s >> 1).wrapping_add(*b)
    })
}

/// Rewrites directory `dir` (not the root) and recurses; `parent` is `..`'s target (0 = root).
fn fix_dir<V: Read + Write + Seek>(
    v: &mut V,
    bpb: &Bpb,
    fat: &[u32],
    dir: u32,
    parent: u32,
    depth: usize,
) -> io::Result<()> {
    if depth > 32 {
        return Err(invalid("directories nest too deep"));
    }
    let clusters = chain(fat, dir)?;
    let mut bytes = Vec::with_capacity(clusters.len() * bpb.cluster_size as usize);
    for c in &clusters {
        let mut buf = vec![0u8; bpb.cluster_size as usize];
        v.seek(SeekFrom::Start(bpb.cluster_offset(*c)))?;
        v.read_exact(&mut buf)?;
        bytes.extend_from_slice(&buf);
    }
    let is_root = dir == bpb.root_cluster;
    let entries: Vec<&[u8]> = bytes
        .chunks_exact(ENTRY)
        .take_while(|e| e[0] != 0)
        .collect();
    let mut subdirs = Vec::new();
    for e in &entries {
        let name = &e[..11];
        if e[0] != 0xE5
            && e[11] != ATTR_LFN
            && e[11] & ATTR_DIR != 0
            && e[11] & ATTR_VOLUME == 0
            && name != DOT
            && name != DOTDOT
        {
            subdirs.push(first_cluster(e));
        }
    }
    if !is_root {
        let dot_sums = [lfn_checksum(DOT), lfn_checksum(DOTDOT)];
        let mut dot = None;
        let mut dotdot = None;
        let mut rest: Vec<Vec<u8>> = Vec::new();
        for e in &entries {
            let name = &e[..11];
            if name == DOT {
                dot = Some(e.to_vec());
            } else if name == DOTDOT {
                dotdot = Some(e.to_vec());
            } else if e[11] == ATTR_LFN && dot_sums.contains(&e[13]) && e[0] & 0x1F == 1 {
                // a one-entry LFN for "." or ".."
            } else {
                rest.push(e.to_vec());
            }
        }
        let (Some(mut dot), Some(mut dotdot)) = (dot, dotdot) else {
            return Err(invalid("directory without . and .."));
        };
        set_first_cluster(&mut dot, dir);
        set_first_cluster(&mut dotdot, parent);
        let mut out = Vec::with_capacity(bytes.len());
        out.extend_from_slice(&dot);
        out.extend_from_slice(&dotdot);
        for e in rest {
            out.extend_from_slice(&e);
        }
        out.resize(bytes.len(), 0);
        for (i, c) in clusters.iter().enumerate() {
            let cs = bpb.cluster_size as usize;
            v.seek(SeekFrom::Start(bpb.cluster_offset(*c)))?;
            v.write_all(&out[i * cs..(i + 1) * cs])?;
        }
    }
    for sub in subdirs {
        fix_dir(v, bpb, fat, sub, if is_root { 0 } else { dir }, depth + 1)?;
    }
    Ok(())
}

/// Fixes the `.`/`..` entries of every directory and the FSInfo counters of a FAT32 volume.
pub fn fix_volume<V: Read + Write + Seek>(v: &mut V) -> io::Result<()> {
    let bpb = Bpb::read(v)?;
    let fat = read_fat(v, &bpb)?;
    fix_dir(v, &bpb, &fat, bpb.root_cluster, 0, 0)?;
    let free = fat[2..].iter().filter(|e| **e == 0).count() as u32;
    let next = fat
        .iter()
        .enumerate()
        .skip(2)
        .find(|(_, e)| **e == 0)
        .map_or(0xFFFF_FFFF, |(i, _)| i as u32);
    let mut info = vec![0u8; bpb.bytes_per_sector as usize];
    v.seek(SeekFrom::Start(bpb.fs_info_offset))?;
    v.read_exact(&mut info)?;
    if &info[..4] != b"RRaA" || &info[484..488] != b"rrAa" {
        return Err(invalid("no FSInfo sector"));
    }
    info[488..492].copy_from_slice(&free.to_le_bytes());
    info[492..496].copy_from_slice(&next.to_le_bytes());
    v.seek(SeekFrom::Start(bpb.fs_info_offset))?;
    v.write_all(&info)?;
    v.flush()
}

/// The long name an LFN entry run spells (entries in on-disk order, i.e. last part first).
fn lfn_name(run: &[[u8; ENTRY]]) -> String {
    let mut units = Vec::new();
    for e in run.iter().rev() {
        for o in (1..11)
            .step_by(2)
            .chain((14..26).step_by(2))
            .chain((28..32).step_by(2))
        {
            units.push(u16_at(e, o));
        }
    }
    let end = units
        .iter()
        .position(|u| *u == 0 || *u == 0xFFFF)
        .unwrap_or(units.len());
    String::from_utf16_lossy(&units[..end])
}

/// The 8.3 name of a short entry as `NAME.EXT` (no padding).
fn short_name(e: &[u8]) -> String {
    let base = String::from_utf8_lossy(&e[..8]).trim_end().to_string();
    let ext = String::from_utf8_lossy(&e[8..11]).trim_end().to_string();
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

/// Sets the read-only attribute of the file at `path` (`/`-separated, names compared without
/// regard to case, long or 8.3) on a FAT32 volume: what `mattrib +r` does.
pub fn set_read_only<V: Read + Write + Seek>(v: &mut V, path: &str) -> io::Result<()> {
    let bpb = Bpb::read(v)?;
    let fat = read_fat(v, &bpb)?;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let mut dir = bpb.root_cluster;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let clusters = chain(&fat, dir)?;
        let mut found = None;
        let mut run: Vec<[u8; ENTRY]> = Vec::new();
        'scan: for c in &clusters {
            let mut buf = vec![0u8; bpb.cluster_size as usize];
            let at = bpb.cluster_offset(*c);
            v.seek(SeekFrom::Start(at))?;
            v.read_exact(&mut buf)?;
            for (k, e) in buf.chunks_exact(ENTRY).enumerate() {
                if e[0] == 0 {
                    break 'scan;
                }
                if e[0] == 0xE5 {
                    run.clear();
                    continue;
                }
                if e[11] == ATTR_LFN {
                    run.push(e.try_into().map_err(|_| invalid("entry size"))?);
                    continue;
                }
                let long = lfn_name(&run);
                run.clear();
                if e[11] & ATTR_VOLUME != 0 {
                    continue;
                }
                if long.eq_ignore_ascii_case(part) || short_name(e).eq_ignore_ascii_case(part) {
                    found = Some((at + (k * ENTRY) as u64, e[11], first_cluster(e)));
                    break 'scan;
                }
            }
        }
        let Some((offset, attr, first)) = found else {
            return Err(invalid(&format!("{path}: {part} not found")));
        };
        if !last {
            if attr & ATTR_DIR == 0 {
                return Err(invalid(&format!("{path}: {part} is not a directory")));
            }
            dir = first;
            continue;
        }
        v.seek(SeekFrom::Start(offset + 11))?;
        v.write_all(&[attr | ATTR_READ_ONLY])?;
    }
    v.flush()
}
