//! What this node answers on members' blob streams (see `blob_stream`): a chunk of a stored
//! blob, or a page of its tree. A blob's tree (see `tree`) is computed once from its bytes and
//! kept in a bounded cache, so members fetching the same blob at once cost one read of it.

use std::collections::{HashMap, VecDeque};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::sync::{Arc, Mutex, OnceLock};

use super::protocol::{BlobId, BlobReply, BlobRequest, MAX_CHUNK};
use super::tree;
use crate::store::BlobStore;

/// Bytes of trees kept (a 1 GiB blob's tree is 32 KiB; the largest blob's, 2 MiB).
const TREE_CACHE_BYTES: usize = 16 << 20;

/// A tree being computed or computed (`None`: the blob could not be read).
type Slot = Arc<OnceLock<Option<Arc<Vec<u8>>>>>;

/// Trees of blobs served lately, by BLAKE3; the oldest leave first past
/// [`TREE_CACHE_BYTES`].
#[derive(Default)]
pub(crate) struct TreeCache {
    inner: Mutex<Trees>,
}

/// The cache's contents: slots by BLAKE3, the order they were filled in, and their bytes.
#[derive(Default)]
struct Trees {
    slots: HashMap<String, Slot>,
    order: VecDeque<(String, usize)>,
    total: usize,
}

impl TreeCache {
    /// Keeps the tree of blob `blake3` (just fetched and verified), so this node serves it to
    /// members without reading the blob.
    pub(crate) fn insert(&self, blake3: &str, tree: Arc<Vec<u8>>) {
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        if g.slots.contains_key(blake3) {
            return;
        }
        let slot: Slot = Arc::default();
        let len = tree.len();
        let _ = slot.set(Some(tree));
        g.slots.insert(blake3.to_string(), slot);
        g.order.push_back((blake3.to_string(), len));
        g.total += len;
        g.evict();
    }

    /// The tree of blob `blake3` (`size` bytes) in `blobs`, computed on first use (callers
    /// asking for the same blob meanwhile wait for that one computation).
    fn get(&self, blobs: &BlobStore, blake3: &str, size: u64) -> Option<Arc<Vec<u8>>> {
        let slot = {
            let Ok(mut g) = self.inner.lock() else {
                return None;
            };
            Arc::clone(g.slots.entry(blake3.to_string()).or_default())
        };
        let mut fresh = false;
        let tree = slot
            .get_or_init(|| {
                fresh = true;
                let mut f = blobs.open_blob(blake3).ok()?;
                tree::compute(&mut f, size).ok().map(Arc::new)
            })
            .clone();
        if let Ok(mut g) = self.inner.lock() {
            let g = &mut *g;
            match &tree {
                None => {
                    g.slots.remove(blake3);
                }
                Some(t) if fresh => {
                    g.order.push_back((blake3.to_string(), t.len()));
                    g.total += t.len();
                    g.evict();
                }
                Some(_) => {}
            }
        }
        tree
    }
}

impl Trees {
    /// Drops the oldest trees past [`TREE_CACHE_BYTES`].
    fn evict(&mut self) {
        while self.total > TREE_CACHE_BYTES {
            let Some((old, len)) = self.order.pop_front() else {
                break;
            };
            self.slots.remove(&old);
            self.total -= len;
        }
    }
}

/// The page of `tree` (concatenated chaining values) that `req` asks for; `None` past its end.
pub(crate) fn tree_page(tree: &[u8], req: &BlobRequest) -> Option<Vec<u8>> {
    let rest = (tree.len() as u64).checked_sub(req.offset)?;
    let start = req.offset as usize;
    let len = rest.min(u64::from(req.len.min(MAX_CHUNK))) as usize;
    Some(tree[start..start + len].to_vec())
}

/// Answers `req` from the store for a member.
#[cfg(test)]
pub(crate) fn read_chunk(blobs: &BlobStore, trees: &TreeCache, req: &BlobRequest) -> BlobReply {
    BlobReader::default().read(blobs, trees, req)
}

/// Answers one member's stream: keeps the blob it last read open (with its size and BLAKE3),
/// so the chunks of one transfer cost one open and one name lookup, not one per chunk.
#[derive(Default)]
pub(crate) struct BlobReader {
    open: Option<(BlobId, String, std::fs::File, u64)>,
}

impl BlobReader {
    /// Answers `req` from `blobs` (trees from `trees`).
    pub(crate) fn read(
        &mut self,
        blobs: &BlobStore,
        trees: &TreeCache,
        req: &BlobRequest,
    ) -> BlobReply {
        if self.open.as_ref().is_none_or(|(id, ..)| *id != req.id) {
            self.open = None;
            let blake3 = match &req.id {
                BlobId::Blake3(b) if crate::store::is_blob_name(b) => b.clone(),
                BlobId::Sha256(s) if crate::store::is_blob_name(s) => match blobs.by_sha256(s) {
                    Ok(Some(info)) => info.blake3,
                    Ok(None) => return BlobReply::Missing,
                    Err(_) => return BlobReply::Missing,
                },
                _ => return BlobReply::Refused,
            };
            let Ok(file) = blobs.open_blob(&blake3) else {
                return BlobReply::Missing;
            };
            let Ok(size) = file.metadata().map(|m| m.len()) else {
                return BlobReply::Missing;
            };
            self.open = Some((req.id.clone(), blake3, file, size));
        }
        let Some((_, blake3, file, size)) = self.open.as_mut() else {
            return BlobReply::Missing;
        };
        let size = *size;
        let want = u64::from(req.len.min(MAX_CHUNK));
        if req.tree && req.len == 0 {
            // What this node holds, without the tree (not computed for a question).
            return BlobReply::Tree {
                size,
                blake3: blake3.clone(),
                data: Vec::new(),
                held: None,
            };
        }
        if req.tree {
            let Some(t) = trees.get(blobs, blake3, size) else {
                return BlobReply::Missing;
            };
            let Some(data) = tree_page(&t, req) else {
                return BlobReply::Refused;
            };
            return BlobReply::Tree {
                size,
                blake3: blake3.clone(),
                data,
                held: None,
            };
        }
        if req.offset > size {
            return BlobReply::Refused;
        }
        let len = (size - req.offset).min(want) as usize;
        let mut data = Vec::with_capacity(len);
        if file.seek(SeekFrom::Start(req.offset)).is_err()
            || file.take(len as u64).read_to_end(&mut data).is_err()
            || data.len() != len
        {
            return BlobReply::Missing;
        }
        BlobReply::Chunk { size, data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_read_within_its_store_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let meta: Arc<dyn crate::store::MetaStore> =
            Arc::new(crate::store::SledStore::open(&dir.path().join("meta")).unwrap());
        let blobs = BlobStore::open(&dir.path().join("blobs"), meta).unwrap();
        let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let info = blobs.put_bytes(&data).unwrap();
        let trees = TreeCache::default();
        let ask = |id: BlobId, offset: u64, len: u32| {
            read_chunk(
                &blobs,
                &trees,
                &BlobRequest {
                    id,
                    offset,
                    len,
                    tree: false,
                },
            )
        };
        let by_b3 = BlobId::Blake3(info.blake3.clone());
        assert_eq!(
            ask(by_b3.clone(), 1000, 500),
            BlobReply::Chunk {
                size: 3000,
                data: data[1000..1500].to_vec()
            }
        );
        // The tail is short; the end is empty; past the end is refused.
        assert_eq!(
            ask(BlobId::Sha256(info.sha256.clone()), 2500, 4096),
            BlobReply::Chunk {
                size: 3000,
                data: data[2500..].to_vec()
            }
        );
        assert_eq!(
            ask(by_b3.clone(), 3000, 10),
            BlobReply::Chunk {
                size: 3000,
                data: Vec::new()
            }
        );
        assert_eq!(ask(by_b3, 3001, 10), BlobReply::Refused);
        // Names that are not hashes never reach the filesystem; unknown ones are missing.
        assert_eq!(
            ask(BlobId::Blake3("../../keys".into()), 0, 1),
            BlobReply::Refused
        );
        assert_eq!(
            ask(BlobId::Blake3("c".repeat(64)), 0, 1),
            BlobReply::Missing
        );
    }

    #[test]
    fn a_tree_is_served_in_pages_and_merges_to_the_blob_name() {
        let dir = tempfile::tempdir().unwrap();
        let meta: Arc<dyn crate::store::MetaStore> =
            Arc::new(crate::store::SledStore::open(&dir.path().join("meta")).unwrap());
        let blobs = BlobStore::open(&dir.path().join("blobs"), meta).unwrap();
        let size = 2 * tree::GROUP as usize + 12345;
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let info = blobs.put_bytes(&data).unwrap();
        let trees = TreeCache::default();
        let ask = |offset: u64, len: u32| {
            read_chunk(
                &blobs,
                &trees,
                &BlobRequest {
                    id: BlobId::Sha256(info.sha256.clone()),
                    offset,
                    len,
                    tree: true,
                },
            )
        };
        let mut all = Vec::new();
        for (offset, len) in [(0u64, 40u32), (40, 40), (80, 40)] {
            let BlobReply::Tree {
                size: s,
                blake3,
                data,
                held: None,
            } = ask(offset, len)
            else {
                panic!("no tree");
            };
            assert_eq!(s, size as u64);
            assert_eq!(blake3, info.blake3);
            all.extend(data);
        }
        assert_eq!(all.len(), 96);
        let vals = tree::values(&all).unwrap();
        assert_eq!(tree::root(size as u64, &vals), Some(blake3::hash(&data)));
        // Past the tree's end is refused.
        assert_eq!(ask(97, 10), BlobReply::Refused);
        // Asked for none of it: what the node holds, the tree not computed.
        let fresh = TreeCache::default();
        let question = BlobReader::default().read(
            &blobs,
            &fresh,
            &BlobRequest {
                id: BlobId::Blake3(info.blake3.clone()),
                offset: 0,
                len: 0,
                tree: true,
            },
        );
        assert_eq!(
            question,
            BlobReply::Tree {
                size: size as u64,
                blake3: info.blake3.clone(),
                data: Vec::new(),
                held: None,
            }
        );
        assert_eq!(
            fresh.inner.lock().unwrap().total,
            0,
            "the tree was computed"
        );
    }
}
