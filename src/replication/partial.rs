//! Blobs this node is fetching, served to other members before they are whole: a member that
//! starts on a blob another member is still fetching takes it from that member as its bytes
//! arrive (a relay) instead of asking the same sources again, so a release or model that
//! several members fetch at once crosses the source's link about once.
//!
//! A transfer registers its blob once it has the blob's verified tree and a temporary file
//! (see `transfer`), and publishes how many bytes from the start are in that file; the same
//! registrations are the transfers `/status` lists with their progress. A member's
//! question (a tree request for no bytes) is answered with that count; a chunk below it at
//! once, one above it once it is held, waiting at most [`PARTIAL_WAIT`]; when the transfer
//! ends short, the store answers (the blob is missing). Every chunk sent verified against the
//! tree when it arrived here, and the receiver checks it again.
//!
//! No two transfers wait for each other: a transfer chooses its sources before it registers,
//! so a member registered when another chose it registered before that other one; and a
//! transfer whose relay fails goes on from members holding the whole blob only.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileExt as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::TransferStatus;
use super::chunks::tree_page;
use super::protocol::{BlobId, BlobReply, BlobRequest, MAX_CHUNK};
use super::transfer::blob_name;

/// Longest wait for bytes a member asked of a blob this node is still fetching (then it is
/// told the blob is missing, and goes on from members holding it whole).
pub(crate) const PARTIAL_WAIT: Duration = Duration::from_secs(20);

/// A blob being fetched, as its requesters see it.
pub(crate) struct Partial {
    /// The blob's size.
    pub size: u64,
    /// Its BLAKE3 (hex).
    pub blake3: String,
    /// Its tree, verified (concatenated chaining values; empty for a one-group blob).
    pub tree: Arc<Vec<u8>>,
    /// The temporary file its bytes are written to, open for reading (`None`: not served to
    /// members meanwhile, only shown).
    pub file: Option<std::fs::File>,
    /// Bytes from the start in that file; the sender goes away when the transfer ends.
    pub held: watch::Receiver<u64>,
    /// What it is fetched for (`release v1.11.0`, `model KEY`).
    pub purpose: String,
    /// When its transfer started, seconds since the epoch.
    pub started: u64,
}

/// The blobs this node is fetching: by the names members ask for them, and all of them in the
/// order they started.
#[derive(Default)]
pub(crate) struct PartialBlobs {
    inner: Mutex<Registered>,
}

#[derive(Default)]
struct Registered {
    by_name: HashMap<String, Arc<Partial>>,
    all: BTreeMap<u64, Arc<Partial>>,
    next: u64,
}

/// A blob registered while it is fetched; dropping it ends the registration.
pub(crate) struct Registration {
    blobs: Arc<PartialBlobs>,
    serial: u64,
    names: Vec<String>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut r = self
            .blobs
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        r.all.remove(&self.serial);
        for name in &self.names {
            r.by_name.remove(name);
        }
    }
}

impl PartialBlobs {
    /// Registers `partial`, served under the names `ids` when it has a file (those another
    /// transfer of the same blob holds already stay with it).
    pub(crate) fn register(self: &Arc<Self>, ids: &[BlobId], partial: Partial) -> Registration {
        let partial = Arc::new(partial);
        let mut names = Vec::new();
        let mut r = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if partial.file.is_some() {
            for id in ids {
                let name = blob_name(id);
                if !r.by_name.contains_key(&name) && !names.contains(&name) {
                    r.by_name.insert(name.clone(), Arc::clone(&partial));
                    names.push(name);
                }
            }
        }
        let serial = r.next;
        r.next += 1;
        r.all.insert(serial, partial);
        Registration {
            blobs: Arc::clone(self),
            serial,
            names,
        }
    }

    /// The blob `id` if this node is fetching it and serves it meanwhile.
    pub(crate) fn get(&self, id: &BlobId) -> Option<Arc<Partial>> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_name
            .get(&blob_name(id))
            .cloned()
    }

    /// Every blob being fetched, oldest first, with its progress.
    pub(crate) fn transfers(&self) -> Vec<TransferStatus> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .all
            .values()
            .map(|p| TransferStatus {
                blob: p.blake3.clone(),
                purpose: p.purpose.clone(),
                size: p.size,
                received: *p.held.borrow(),
                started_at: crate::clock::rfc3339_utc(p.started),
            })
            .collect()
    }
}

/// Answers `req` from the blob being fetched: a tree page (with the bytes held), or a chunk
/// once held (waiting at most `wait`). `None` when the transfer ended without those bytes: the
/// store answers then.
pub(crate) async fn answer(
    partial: Arc<Partial>,
    req: &BlobRequest,
    wait: Duration,
) -> Option<BlobReply> {
    if req.tree {
        let Some(data) = tree_page(&partial.tree, req) else {
            return Some(BlobReply::Refused);
        };
        return Some(BlobReply::Tree {
            size: partial.size,
            blake3: partial.blake3.clone(),
            data,
            held: Some(*partial.held.borrow()),
        });
    }
    if req.offset > partial.size {
        return Some(BlobReply::Refused);
    }
    let end = (req.offset + u64::from(req.len.min(MAX_CHUNK))).min(partial.size);
    let mut held = partial.held.clone();
    match tokio::time::timeout(wait, held.wait_for(|h| *h >= end)).await {
        Ok(Ok(_)) => {}
        // The transfer ended: whole (the store answers) or short (the blob is missing).
        Ok(Err(_)) => return None,
        Err(_) => {
            tracing::debug!(blob = %partial.blake3, offset = req.offset, "bytes of a blob being fetched did not arrive in time for a member");
            return Some(BlobReply::Missing);
        }
    }
    let (offset, size) = (req.offset, partial.size);
    let read = tokio::task::spawn_blocking(move || {
        let mut data = vec![0; (end - offset) as usize];
        let file = partial.file.as_ref().ok_or(std::io::ErrorKind::NotFound)?;
        file.read_exact_at(&mut data, offset).map(|()| data)
    })
    .await;
    match read {
        Ok(Ok(data)) => Some(BlobReply::Chunk { size, data }),
        _ => Some(BlobReply::Missing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3-group blob's partial, its file holding `held` bytes; the sender publishes more.
    fn partial(dir: &std::path::Path, bytes: &[u8]) -> (Arc<Partial>, watch::Sender<u64>) {
        let path = dir.join("blob.tmp");
        std::fs::write(&path, bytes).unwrap();
        let (tx, rx) = watch::channel(0);
        let p = Partial {
            size: bytes.len() as u64,
            blake3: blake3::hash(bytes).to_hex().to_string(),
            tree: Arc::new(vec![7; 96]),
            file: Some(std::fs::File::open(&path).unwrap()),
            held: rx,
            purpose: "release v1.2.3".into(),
            started: 1_700_000_000,
        };
        (Arc::new(p), tx)
    }

    fn chunk(offset: u64) -> BlobRequest {
        BlobRequest {
            id: BlobId::Blake3("a".repeat(64)),
            offset,
            len: MAX_CHUNK,
            tree: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunk_is_answered_once_held_and_missing_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..(2 * MAX_CHUNK + 100)).map(|i| i as u8).collect();
        let (p, tx) = partial(dir.path(), &bytes);
        tx.send_replace(u64::from(MAX_CHUNK));
        // Held: at once, the bytes of the file.
        let Some(BlobReply::Chunk { size, data }) =
            answer(Arc::clone(&p), &chunk(0), PARTIAL_WAIT).await
        else {
            panic!("no chunk");
        };
        assert_eq!(size, bytes.len() as u64);
        assert_eq!(data, bytes[..MAX_CHUNK as usize]);
        // Not held yet: answered once the transfer holds it.
        let later = tokio::spawn({
            let p = Arc::clone(&p);
            async move { answer(p, &chunk(u64::from(MAX_CHUNK)), PARTIAL_WAIT).await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!later.is_finished(), "answered before the bytes were held");
        tx.send_replace(2 * u64::from(MAX_CHUNK));
        let Some(BlobReply::Chunk { data, .. }) = later.await.unwrap() else {
            panic!("no chunk");
        };
        assert_eq!(data, bytes[MAX_CHUNK as usize..2 * MAX_CHUNK as usize]);
        // Never held within the wait: missing.
        let last = chunk(2 * u64::from(MAX_CHUNK));
        assert_eq!(
            answer(Arc::clone(&p), &last, PARTIAL_WAIT).await,
            Some(BlobReply::Missing)
        );
        // The question: what is held, with the tree's pages.
        let mut q = chunk(0);
        q.tree = true;
        q.len = 0;
        assert_eq!(
            answer(Arc::clone(&p), &q, PARTIAL_WAIT).await,
            Some(BlobReply::Tree {
                size: bytes.len() as u64,
                blake3: p.blake3.clone(),
                data: Vec::new(),
                held: Some(2 * u64::from(MAX_CHUNK)),
            })
        );
        // The transfer ended short: the store answers.
        drop(tx);
        assert_eq!(answer(Arc::clone(&p), &last, PARTIAL_WAIT).await, None);
    }

    #[test]
    fn a_registration_ends_when_dropped_and_keeps_an_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Arc::new(PartialBlobs::default());
        let (p1, _t1) = partial(dir.path(), b"one");
        let id = BlobId::Blake3(p1.blake3.clone());
        let sha = BlobId::Sha256("b".repeat(64));
        let take = |p: &Arc<Partial>| Partial {
            size: p.size,
            blake3: p.blake3.clone(),
            tree: Arc::clone(&p.tree),
            file: p.file.as_ref().map(|f| f.try_clone().unwrap()),
            held: p.held.clone(),
            purpose: p.purpose.clone(),
            started: p.started,
        };
        let first = blobs.register(&[id.clone(), sha.clone()], take(&p1));
        let second = blobs.register(std::slice::from_ref(&id), take(&p1));
        drop(second);
        assert!(blobs.get(&id).is_some(), "the second took the first's name");
        drop(first);
        assert!(blobs.get(&id).is_none());
        assert!(blobs.get(&sha).is_none());
    }

    #[test]
    fn every_transfer_is_listed_with_its_progress_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Arc::new(PartialBlobs::default());
        let (p1, t1) = partial(dir.path(), &[1; 300]);
        let first = blobs.register(
            &[BlobId::Blake3(p1.blake3.clone())],
            Partial {
                size: p1.size,
                blake3: p1.blake3.clone(),
                tree: Arc::clone(&p1.tree),
                file: p1.file.as_ref().map(|f| f.try_clone().unwrap()),
                held: p1.held.clone(),
                purpose: "release v1.2.3".into(),
                started: 1_700_000_000,
            },
        );
        // Not served (no file to read from), still shown.
        let (t2, _) = watch::channel(0u64);
        let unserved = Partial {
            size: 5 << 20,
            blake3: "c".repeat(64),
            tree: Arc::new(Vec::new()),
            file: None,
            held: t2.subscribe(),
            purpose: "model k".into(),
            started: 1_700_000_060,
        };
        let second = blobs.register(&[BlobId::Blake3("c".repeat(64))], unserved);
        assert!(blobs.get(&BlobId::Blake3("c".repeat(64))).is_none());
        t1.send_replace(100);
        t2.send_replace(1 << 20);
        let list = blobs.transfers();
        assert_eq!(
            list,
            vec![
                TransferStatus {
                    blob: p1.blake3.clone(),
                    purpose: "release v1.2.3".into(),
                    size: 300,
                    received: 100,
                    started_at: "2023-11-14T22:13:20Z".into(),
                },
                TransferStatus {
                    blob: "c".repeat(64),
                    purpose: "model k".into(),
                    size: 5 << 20,
                    received: 1 << 20,
                    started_at: "2023-11-14T22:14:20Z".into(),
                },
            ]
        );
        drop(first);
        assert_eq!(blobs.transfers().len(), 1);
        drop(second);
        assert!(blobs.transfers().is_empty());
    }
}
