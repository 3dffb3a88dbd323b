//! Verified streaming over the blob store's own name: a blob's BLAKE3 hash is the root of a
//! Merkle tree, and every aligned [`GROUP`] (1 MiB, the transfer's chunk) of it is a subtree of
//! that tree. A member sends the chaining values of the groups (32 bytes per MiB: 32 KiB for a
//! 1 GiB blob); the receiver merges them the way BLAKE3 does and checks the result against the
//! BLAKE3 name it asked for, then checks each chunk as it arrives against its group's value.
//! A corrupted chunk is caught at that chunk, by whichever member sent it, with nothing stored
//! beyond the tree — the bao idea with 1 MiB groups, on the `blake3` crate's `hazmat` API (no
//! outboard files: the values are computed by the sender from the blob, and cached).

use blake3::hazmat::{
    ChainingValue, HasherExt as _, Mode, left_subtree_len, merge_subtrees_non_root,
    merge_subtrees_root,
};

/// Bytes per verified group: the transfer's chunk size.
pub const GROUP: u64 = super::protocol::MAX_CHUNK as u64;

/// Number of groups of a blob of `size` bytes (at least one).
pub fn groups(size: u64) -> u64 {
    size.div_ceil(GROUP).max(1)
}

/// Chaining values a blob of `size` bytes has in its tree (none when it is one group: its
/// root is then the plain hash of its bytes).
pub fn tree_len(size: u64) -> u64 {
    if size <= GROUP { 0 } else { groups(size) }
}

/// The chaining value of group `index` of a blob of `size` bytes whose bytes are `data`, or,
/// when the whole blob is one group, its root hash.
pub fn group_value(index: u64, size: u64, data: &[u8]) -> ChainingValue {
    if size <= GROUP {
        return *blake3::hash(data).as_bytes();
    }
    let mut h = blake3::Hasher::new();
    h.set_input_offset(index * GROUP);
    h.update(data);
    h.finalize_non_root()
}

/// The root hash of a blob of `size` bytes whose groups have the chaining values `values`
/// (`tree_len(size)` of them); `None` when their number does not fit the size.
pub fn root(size: u64, values: &[ChainingValue]) -> Option<blake3::Hash> {
    if size <= GROUP || values.len() as u64 != groups(size) {
        return None;
    }
    let split = left_subtree_len(size);
    let left_groups = (split / GROUP) as usize;
    let left = merge(&values[..left_groups], split);
    let right = merge(&values[left_groups..], size - split);
    Some(merge_subtrees_root(&left, &right, Mode::Hash))
}

/// The chaining value of the subtree of `len` bytes whose groups have `values`.
fn merge(values: &[ChainingValue], len: u64) -> ChainingValue {
    if len <= GROUP {
        return values[0];
    }
    let split = left_subtree_len(len);
    let left_groups = (split / GROUP) as usize;
    merge_subtrees_non_root(
        &merge(&values[..left_groups], split),
        &merge(&values[left_groups..], len - split),
        Mode::Hash,
    )
}

/// Computes the tree of the blob read from `r` (`size` bytes): its groups' chaining values,
/// concatenated (empty for a one-group blob). Reads one group at a time.
pub fn compute(r: &mut impl std::io::Read, size: u64) -> std::io::Result<Vec<u8>> {
    let n = tree_len(size);
    let mut out = Vec::with_capacity((n * 32) as usize);
    let mut buf = vec![0u8; GROUP as usize];
    for i in 0..n {
        let len = (size - i * GROUP).min(GROUP) as usize;
        r.read_exact(&mut buf[..len])?;
        out.extend_from_slice(&group_value(i, size, &buf[..len]));
    }
    Ok(out)
}

/// Splits concatenated chaining values; `None` when not a multiple of 32 bytes.
pub fn values(bytes: &[u8]) -> Option<Vec<ChainingValue>> {
    if !bytes.len().is_multiple_of(32) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(32)
            .map(|c| {
                let mut v = [0u8; 32];
                v.copy_from_slice(c);
                v
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(size: usize) -> Vec<u8> {
        (0..size).map(|i| (i * 31 + i / 4099) as u8).collect()
    }

    #[test]
    fn the_groups_merge_to_the_blake3_name_for_every_shape() {
        let g = GROUP as usize;
        for size in [
            g + 1,
            2 * g,
            2 * g + 1,
            3 * g - 7,
            4 * g,
            5 * g + 1024,
            7 * g + 3,
        ] {
            let data = blob(size);
            let tree = compute(&mut std::io::Cursor::new(&data), size as u64).unwrap();
            let vals = values(&tree).unwrap();
            assert_eq!(vals.len() as u64, groups(size as u64));
            assert_eq!(
                root(size as u64, &vals),
                Some(blake3::hash(&data)),
                "size {size}"
            );
        }
        // One group: no tree, the group's value is the name itself.
        let small = blob(1000);
        assert_eq!(tree_len(1000), 0);
        assert_eq!(
            &group_value(0, 1000, &small),
            blake3::hash(&small).as_bytes()
        );
    }

    #[test]
    fn a_corrupted_group_or_tree_does_not_verify() {
        let g = GROUP as usize;
        let size = 3 * g + 5;
        let data = blob(size);
        let tree = compute(&mut std::io::Cursor::new(&data), size as u64).unwrap();
        let vals = values(&tree).unwrap();
        let mut bad = data[g..2 * g].to_vec();
        bad[77] ^= 1;
        assert_eq!(group_value(1, size as u64, &data[g..2 * g]), vals[1]);
        assert_ne!(group_value(1, size as u64, &bad), vals[1]);
        // The same bytes at another offset are another group.
        assert_ne!(group_value(2, size as u64, &data[g..2 * g]), vals[1]);
        let mut lying = vals.clone();
        lying[3][0] ^= 1;
        assert_ne!(root(size as u64, &lying), Some(blake3::hash(&data)));
        assert_eq!(root(size as u64, &vals[..3]), None);
    }
}
