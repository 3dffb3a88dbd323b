//! qcow2 (version 3) written in one streaming pass (`qemu-img convert -O qcow2 -o
//! cluster_size=8k`; imager spec §5.9).
//!
//! A one-shot conversion knows every allocated cluster up front (a content scan at cluster
//! granularity), so the whole layout is computed first and then written strictly in order:
//!
//! | clusters | content |
//! | --- | --- |
//! | 1 | header (v3, 104 bytes, no extensions, 16-bit refcounts) |
//! | L1 | one entry per 2^(2·bits−3) bytes of disk |
//! | refcount table, refcount blocks | refcount 1 for every cluster of the file |
//! | L2 tables | only those covering at least one data cluster, in L1 order |
//! | data | every cluster holding a non-zero byte, in guest order |
//!
//! All-zero clusters stay unallocated (as qemu-img does). Every entry has the COPIED flag
//! (refcount exactly 1). Why native instead of imago or qemu-img: see `docs/imager-formats.md`.

use std::io::{self, Write};

use super::sparse::{Extent, RawImage};
use crate::imager::error::ImagerError;

/// qcow2 magic `QFI\xfb`.
const MAGIC: u32 = 0x5146_49fb;
/// "Refcount is exactly one" flag of L1/L2 entries.
const COPIED: u64 = 1 << 63;
/// qemu's default cluster size when no option is given.
pub const DEFAULT_CLUSTER_SIZE: u64 = 64 * 1024;

/// Parses qemu-img `-o` options for qcow2; only `cluster_size` is supported (the only one
/// upstream profiles use). Returns the cluster size in bytes.
pub fn parse_options(opts: &str) -> Result<u64, ImagerError> {
    let invalid = |text: String| ImagerError::Validation(text);
    let mut cluster = DEFAULT_CLUSTER_SIZE;
    for opt in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        match opt.split_once('=') {
            Some(("cluster_size", v)) => {
                cluster = parse_size(v).ok_or_else(|| invalid(format!("invalid size {v:?}")))?;
            }
            _ => return Err(invalid(format!("unsupported qcow2 option {opt:?}"))),
        }
    }
    if !cluster.is_power_of_two() || !(512..=2 << 20).contains(&cluster) {
        return Err(invalid(format!(
            "qcow2 cluster size {cluster} must be a power of two in 512..=2M"
        )));
    }
    Ok(cluster)
}

/// A qemu size: digits with an optional `k`, `M` or `G` suffix (powers of 1024).
fn parse_size(v: &str) -> Option<u64> {
    let (num, mul) = match v.char_indices().last() {
        Some((i, 'k' | 'K')) => (&v[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&v[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&v[..i], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>().ok().and_then(|n| n.checked_mul(mul))
}

/// The computed file layout (all offsets in bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Cluster size.
    pub cluster: u64,
    /// Virtual disk size.
    pub size: u64,
    /// L1 entries.
    pub l1_entries: u64,
    /// Clusters of the L1 table.
    pub l1_clusters: u64,
    /// Clusters of the refcount table.
    pub reftable_clusters: u64,
    /// Refcount blocks.
    pub refblocks: u64,
    /// L1 indices that get an L2 table, ascending.
    pub l2_indices: Vec<u64>,
    /// Allocated data clusters.
    pub data_clusters: u64,
}

impl Layout {
    /// Plans the file for a disk of `size` bytes whose non-zero clusters are `extents`
    /// (cluster-aligned, as [`RawImage::data_extents`] returns them).
    pub fn plan(size: u64, cluster: u64, extents: &[Extent]) -> Layout {
        let l2_entries = cluster / 8;
        let l2_span = cluster * l2_entries;
        let l1_entries = size.div_ceil(l2_span).max(1);
        let l1_clusters = (l1_entries * 8).div_ceil(cluster);
        let mut l2_indices: Vec<u64> = Vec::new();
        let mut data_clusters = 0;
        for e in extents {
            data_clusters += e.len.div_ceil(cluster);
            let first = e.offset / l2_span;
            let last = (e.end() - 1) / l2_span;
            for i in first..=last {
                if l2_indices.last() != Some(&i) {
                    l2_indices.push(i);
                }
            }
        }
        let fixed = 1 + l1_clusters + l2_indices.len() as u64 + data_clusters;
        let per_block = cluster * 8 / 16;
        let (mut reftable_clusters, mut refblocks) = (0, 0);
        loop {
            let total = fixed + reftable_clusters + refblocks;
            let rb = total.div_ceil(per_block);
            let rt = (rb * 8).div_ceil(cluster);
            if (rt, rb) == (reftable_clusters, refblocks) {
                break;
            }
            (reftable_clusters, refblocks) = (rt, rb);
        }
        Layout {
            cluster,
            size,
            l1_entries,
            l1_clusters,
            reftable_clusters,
            refblocks,
            l2_indices,
            data_clusters,
        }
    }

    fn l1_offset(&self) -> u64 {
        self.cluster
    }
    fn reftable_offset(&self) -> u64 {
        self.l1_offset() + self.l1_clusters * self.cluster
    }
    fn refblock_offset(&self) -> u64 {
        self.reftable_offset() + self.reftable_clusters * self.cluster
    }
    fn l2_offset(&self) -> u64 {
        self.refblock_offset() + self.refblocks * self.cluster
    }
    fn data_offset(&self) -> u64 {
        self.l2_offset() + self.l2_indices.len() as u64 * self.cluster
    }
    /// Clusters in the file.
    pub fn total_clusters(&self) -> u64 {
        self.data_offset() / self.cluster + self.data_clusters
    }
    /// The file size in bytes.
    pub fn file_size(&self) -> u64 {
        self.total_clusters() * self.cluster
    }

    fn header(&self) -> Vec<u8> {
        let mut h = vec![0u8; self.cluster as usize];
        let mut put = |off: usize, b: &[u8]| h[off..off + b.len()].copy_from_slice(b);
        put(0, &MAGIC.to_be_bytes());
        put(4, &3u32.to_be_bytes());
        put(20, &self.cluster.trailing_zeros().to_be_bytes());
        put(24, &self.size.to_be_bytes());
        put(36, &(self.l1_entries as u32).to_be_bytes());
        put(40, &self.l1_offset().to_be_bytes());
        put(48, &self.reftable_offset().to_be_bytes());
        put(56, &(self.reftable_clusters as u32).to_be_bytes());
        put(96, &4u32.to_be_bytes()); // refcount_order: 16-bit
        put(100, &104u32.to_be_bytes()); // header_length
        h
    }
}

/// Writes `img` as qcow2 with `cluster` bytes per cluster into `out`; returns the layout.
pub fn write_qcow2(img: &RawImage, cluster: u64, out: &mut dyn Write) -> io::Result<Layout> {
    let extents = img.data_extents(cluster)?;
    let layout = Layout::plan(img.size(), cluster, &extents);
    let c = cluster as usize;
    out.write_all(&layout.header())?;

    // L1 table.
    let mut table = Vec::with_capacity(layout.l1_clusters as usize * c);
    let mut l2s = layout.l2_indices.iter().enumerate().peekable();
    for i in 0..layout.l1_entries {
        let entry = match l2s.peek() {
            Some((k, idx)) if **idx == i => {
                let off = layout.l2_offset() + *k as u64 * cluster;
                l2s.next();
                off | COPIED
            }
            _ => 0,
        };
        table.extend_from_slice(&entry.to_be_bytes());
    }
    write_padded(out, &mut table, c)?;

    // Refcount table and blocks: every cluster of the file has refcount 1.
    for j in 0..layout.refblocks {
        table.extend_from_slice(&(layout.refblock_offset() + j * cluster).to_be_bytes());
    }
    write_padded(out, &mut table, c)?;
    let total = layout.total_clusters();
    for j in 0..layout.refblocks * cluster / 2 {
        let rc: u16 = if j < total { 1 } else { 0 };
        table.extend_from_slice(&rc.to_be_bytes());
    }
    write_padded(out, &mut table, c)?;

    // L2 tables: walk the data clusters in guest order alongside.
    let l2_entries = cluster / 8;
    let mut clusters = extents
        .iter()
        .flat_map(|e| (e.offset / cluster)..(e.end().div_ceil(cluster)))
        .enumerate()
        .peekable();
    for &i in &layout.l2_indices {
        for g in i * l2_entries..(i + 1) * l2_entries {
            let entry = match clusters.peek() {
                Some((k, gc)) if *gc == g => {
                    let off = layout.data_offset() + *k as u64 * cluster;
                    clusters.next();
                    off | COPIED
                }
                _ => 0,
            };
            table.extend_from_slice(&entry.to_be_bytes());
        }
        write_padded(out, &mut table, c)?;
    }

    // Data clusters.
    let regions = img.fs_data_regions()?;
    let mut buf = Vec::new();
    for e in &extents {
        img.copy_range(&regions, e.offset, e.len, out, &mut buf)?;
        let pad = e.len.div_ceil(cluster) * cluster - e.len;
        crate::zeros::write_zeros(out, pad)?;
    }
    Ok(layout)
}

/// Writes `table` zero-padded to a multiple of `unit` bytes and clears it.
fn write_padded(out: &mut dyn Write, table: &mut Vec<u8>, unit: usize) -> io::Result<()> {
    let len = table.len().div_ceil(unit).max(1) * unit;
    table.resize(len, 0);
    out.write_all(table)?;
    table.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        assert_eq!(parse_options("cluster_size=8k").unwrap(), 8192);
        assert_eq!(parse_options("").unwrap(), 65536);
        assert!(parse_options("cluster_size=3k").is_err());
        assert!(parse_options("compat=0.10").is_err());
        assert_eq!(
            parse_options("cluster_size=zz").unwrap_err().to_string(),
            r#"invalid size "zz""#
        );
    }

    #[test]
    fn plan_counts_metadata() {
        // 8 GiB, 8 KiB clusters: one L2 covers 8 MiB, the L1 has 1024 entries = 1 cluster.
        let ext = [
            Extent {
                offset: 0,
                len: 16384,
            },
            Extent {
                offset: 9 << 20,
                len: 8192,
            },
        ];
        let l = Layout::plan(8 << 30, 8192, &ext);
        assert_eq!((l.l1_entries, l.l1_clusters), (1024, 1));
        assert_eq!(l.l2_indices, vec![0, 1]);
        assert_eq!(l.data_clusters, 3);
        // 1 header + 1 L1 + 1 reftable + 1 refblock + 2 L2 + 3 data.
        assert_eq!((l.reftable_clusters, l.refblocks), (1, 1));
        assert_eq!(l.total_clusters(), 9);
    }
}
