//! Fetching blobs from members: one blob stream per member (see `blob_stream`) with a few
//! chunk requests ahead of the answers, so memory stays bounded, no message holds a file and
//! no chunk waits a round trip. Chunks are written as they arrive into a blob-store writer (a
//! temporary file, hashed on the way) and the blob is committed under its content name only
//! once the whole blob hashes to the name it was asked by. Bytes that do not verify never
//! become visible: the temporary file is removed, the failure counted, the transfer refused.
//!
//! A blob comes from every member that holds it at once (striped: chunks go round-robin to
//! the members with room in their pipeline) and each chunk is checked as it arrives against
//! the blob's tree (see `tree`), fetched first and checked against the blob's BLAKE3. A
//! member whose chunk does not verify, that fails or that disappears is dropped for this
//! transfer and its chunks go to the others, so a transfer resumes from the offset reached;
//! at most [`WINDOW`] chunks are held (in flight, or verified and waiting for their turn to
//! be written), so memory stays bounded whatever the blob's size. All transfers of the node
//! together hold at most `replication.transferMemoryMiB` chunks (the buffers of the node's
//! chunk pool, see `chunk_pool`), and each at most one more: a buffer of its own, for the
//! group it writes next when the node's are all lent, so every transfer progresses however
//! many run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::sync::Arc;

use blake3::hazmat::ChainingValue;
use futures_util::{AsyncReadExt as _, AsyncWriteExt as _};
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::blob_stream;
use super::chunk_pool::{ChunkBuf, ChunkPool};
use super::protocol::{
    BlobId, BlobReply, BlobRequest, MAX_CHUNK, read_blob_reply_into, write_blob_request,
};
use super::tree;
use super::{Replication, ReplicationError};
use crate::causes::Causes;
use crate::store::{BlobInfo, BlobStore};

/// Chunk requests in flight per member.
const PIPELINE: usize = 4;
/// Chunks held at once per transfer: in flight, or verified and not yet written.
const WINDOW: u64 = 12;
/// Verified chunks queued for the writer.
const WRITE_QUEUE: usize = 2;
/// Largest blob fetched at all.
pub const MAX_BLOB: u64 = 64 << 30;

/// A blob's tree as a member sent it, checked against the blob's BLAKE3.
struct Tree {
    /// The blob's size.
    size: u64,
    /// Its BLAKE3.
    root: blake3::Hash,
    /// Its groups' chaining values (empty for a one-group blob).
    values: Vec<ChainingValue>,
}

impl Tree {
    /// What group `i`'s bytes must hash to.
    fn expected(&self, i: u64) -> ChainingValue {
        if self.values.is_empty() {
            *self.root.as_bytes()
        } else {
            self.values[i as usize]
        }
    }
}

/// Asks `peer` for the tree of blob `id` (`size` when known, at most `max`); checks that it
/// merges to the blob's BLAKE3 (the name asked for, or the one the member gives for a
/// SHA-256 name, which the SHA-256 of the whole then confirms). Returns the stream too: the
/// transfer asks the same member for chunks on it.
async fn fetch_tree(
    rep: &Replication,
    peer: PeerId,
    id: &BlobId,
    size: Option<u64>,
    max: u64,
) -> Result<(Tree, libp2p::Stream), ReplicationError> {
    let corrupt = |why: String| ReplicationError::Corrupt {
        peer: peer.to_string(),
        blob: blob_name(id),
        why,
    };
    let mut stream = blob_stream::open(rep, peer).await?;
    let mut bytes: Vec<u8> = Vec::new();
    let mut head: Option<(u64, String)> = None;
    loop {
        let request = BlobRequest {
            id: id.clone(),
            offset: bytes.len() as u64,
            len: MAX_CHUNK,
            tree: true,
        };
        let (s, b3, data) = match blob_stream::ask(&mut stream, peer, &request).await? {
            BlobReply::Tree { size, blake3, data } => (size, blake3, data),
            BlobReply::Chunk { .. } | BlobReply::Ready => {
                return Err(corrupt("it sent no tree".into()));
            }
            BlobReply::Missing => {
                return Err(ReplicationError::NotHeld {
                    peer: peer.to_string(),
                    blob: blob_name(id),
                });
            }
            BlobReply::Refused => {
                return Err(ReplicationError::PeerFailed {
                    peer: peer.to_string(),
                    why: "it refused the request".into(),
                });
            }
        };
        if s > max {
            return Err(corrupt(format!(
                "it says the blob has {s} bytes, more than the {max} allowed"
            )));
        }
        if size.is_some_and(|n| n != s) {
            return Err(corrupt(format!(
                "it says the blob has {s} bytes, not {}",
                size.unwrap_or_default()
            )));
        }
        match &head {
            Some(h) if *h != (s, b3.clone()) => {
                return Err(corrupt("its tree pages disagree".into()));
            }
            _ => head = Some((s, b3)),
        }
        let want = tree::tree_len(s) * 32;
        if bytes.len() as u64 + data.len() as u64 > want
            || (data.is_empty() && (bytes.len() as u64) < want)
        {
            return Err(corrupt(format!("its tree is not {want} bytes long")));
        }
        bytes.extend_from_slice(&data);
        if bytes.len() as u64 == want {
            break;
        }
    }
    let Some((size, b3)) = head else {
        return Err(corrupt("no tree".into()));
    };
    if let BlobId::Blake3(name) = id
        && *name != b3
    {
        return Err(corrupt(format!("it names the blob BLAKE3 {b3}")));
    }
    let root = blake3::Hash::from_hex(&b3).map_err(|_| corrupt(format!("{b3:?} is no BLAKE3")))?;
    let values = tree::values(&bytes).unwrap_or_default();
    if !values.is_empty() && tree::root(size, &values) != Some(root) {
        return Err(corrupt(
            "its tree does not merge to the blob's BLAKE3".into(),
        ));
    }
    Ok((Tree { size, root, values }, stream))
}

/// What a member's stream hands back: a group's verified bytes, or why the member failed.
type Done = (PeerId, u64, Result<ChunkBuf, ReplicationError>);

/// Fetches the groups named on `jobs` from `peer` over one blob stream (`opened`, or a new
/// one), keeping up to
/// [`PIPELINE`] requests ahead of the answers, and hands each group back on `done` once it
/// matches `tree`. The first failure is handed back (for any group) and ends the stream; the
/// transfer then gives the member's groups to others.
async fn member_stream(
    rep: Replication,
    peer: PeerId,
    id: BlobId,
    tree: Arc<Tree>,
    opened: Option<libp2p::Stream>,
    mut jobs: mpsc::Receiver<(u64, ChunkBuf)>,
    done: mpsc::Sender<Done>,
) {
    let opened = match opened {
        Some(s) => Ok(s),
        None => blob_stream::open(&rep, peer).await,
    };
    let stream = match opened {
        Ok(s) => s,
        Err(e) => {
            let _ = done.send((peer, u64::MAX, Err(e))).await;
            return;
        }
    };
    let (mut reader, mut writer) = stream.split();
    let (asked_tx, mut asked) = mpsc::channel::<(u64, ChunkBuf)>(PIPELINE);
    let io_failed = |e: std::io::Error| ReplicationError::PeerFailed {
        peer: peer.to_string(),
        why: format!("blob stream: {e}"),
    };
    let ask = async {
        while let Some((i, buf)) = jobs.recv().await {
            let request = BlobRequest {
                id: id.clone(),
                offset: i * tree::GROUP,
                len: MAX_CHUNK,
                tree: false,
            };
            write_blob_request(&mut writer, &request)
                .await
                .map_err(io_failed)?;
            writer.flush().await.map_err(io_failed)?;
            if asked_tx.send((i, buf)).await.is_err() {
                break;
            }
        }
        drop(asked_tx);
        Ok::<(), ReplicationError>(())
    };
    let receive = async {
        while let Some((i, mut buf)) = asked.recv().await {
            let reply = tokio::time::timeout(
                blob_stream::ANSWER_TIMEOUT,
                read_blob_reply_into(&mut reader, buf.vec_mut()),
            )
            .await
            .map_err(|_| ReplicationError::PeerFailed {
                peer: peer.to_string(),
                why: "no answer in time on the blob stream".into(),
            })?
            .map_err(io_failed)?;
            let data = check_group(peer, &id, &tree, i, reply, buf).await?;
            if done.send((peer, i, Ok(data))).await.is_err() {
                break;
            }
        }
        Ok::<(), ReplicationError>(())
    };
    if let Err(e) = futures_util::future::try_join(ask, receive).await {
        let _ = done.send((peer, u64::MAX, Err(e))).await;
    }
}

/// Checks a member's answer for group `i` (its bytes in `data`) against `tree` (hashing off
/// the runtime).
async fn check_group(
    peer: PeerId,
    id: &BlobId,
    tree: &Arc<Tree>,
    i: u64,
    reply: BlobReply,
    data: ChunkBuf,
) -> Result<ChunkBuf, ReplicationError> {
    let corrupt = |why: String| ReplicationError::Corrupt {
        peer: peer.to_string(),
        blob: blob_name(id),
        why,
    };
    let size = tree.size;
    let offset = i * tree::GROUP;
    match reply {
        BlobReply::Chunk { size: s, .. } => {
            if s != size {
                return Err(corrupt(format!(
                    "it says the blob has {s} bytes, not {size}"
                )));
            }
            let want = (size - offset).min(tree::GROUP);
            if data.bytes().len() as u64 != want {
                return Err(corrupt(format!(
                    "{} bytes at offset {offset}, not {want}",
                    data.bytes().len()
                )));
            }
            let expected = tree.expected(i);
            let (data, ok) = tokio::task::spawn_blocking(move || {
                let ok = tree::group_value(i, size, data.bytes()) == expected;
                (data, ok)
            })
            .await
            .map_err(|e| ReplicationError::Task(e.to_string()))?;
            if ok {
                Ok(data)
            } else {
                Err(corrupt(format!(
                    "the chunk at offset {offset} does not match the blob's tree"
                )))
            }
        }
        BlobReply::Tree { .. } | BlobReply::Ready => Err(corrupt("it sent no bytes".into())),
        BlobReply::Missing => Err(ReplicationError::NotHeld {
            peer: peer.to_string(),
            blob: blob_name(id),
        }),
        BlobReply::Refused => Err(ReplicationError::PeerFailed {
            peer: peer.to_string(),
            why: "it refused the request".into(),
        }),
    }
}

/// The sources of a transfer: members still in it, and why the others left.
struct Sources {
    live: Vec<PeerId>,
    /// Whether every member dropped so far only lacked the blob.
    all_missing: bool,
    last: Option<ReplicationError>,
}

impl Sources {
    /// Drops `peer` from this transfer for `e` (counted when its bytes did not verify).
    fn drop_peer(&mut self, rep: &Replication, peer: PeerId, id: &BlobId, e: ReplicationError) {
        self.live.retain(|p| *p != peer);
        match &e {
            ReplicationError::NotHeld { .. } => {}
            ReplicationError::Corrupt { .. } => {
                rep.metrics.verification_failures.increment(1);
                rep.metrics.chunks_rejected.increment(1);
                self.all_missing = false;
            }
            _ => self.all_missing = false,
        }
        tracing::warn!(peer_id = %peer, blob = %blob_name(id), error = %Causes(&e), sources_left = self.live.len(), "a member was dropped from a transfer");
        self.last = Some(e);
    }

    /// Why the transfer failed once no member is left.
    fn failure(self, id: &BlobId) -> ReplicationError {
        match self.last {
            Some(e @ ReplicationError::NotHeld { .. }) if self.all_missing => e,
            Some(e) => ReplicationError::NoSource {
                blob: blob_name(id),
                last: Box::new(e),
            },
            None => ReplicationError::NotHeld {
                peer: "no member".into(),
                blob: blob_name(id),
            },
        }
    }
}

/// Fetches blob `id` into `blobs` from the members `sources` (in order of preference; those
/// lacking it drop out): `size` when known in advance (else at most `max`). Each chunk is
/// verified as it arrives; the blob is committed under its name only once whole and hashing
/// to it. Returns its identity once durable.
pub(crate) async fn fetch_blob(
    rep: &Replication,
    sources: &[PeerId],
    blobs: &BlobStore,
    id: &BlobId,
    size: Option<u64>,
    max: u64,
) -> Result<BlobInfo, ReplicationError> {
    let started = std::time::Instant::now();
    let mut live: Vec<PeerId> = Vec::new();
    for p in sources {
        if !live.contains(p) && *p != rep.peer_id() {
            live.push(*p);
        }
    }
    let mut src = Sources {
        live,
        all_missing: true,
        last: None,
    };
    // The stream the tree came on, kept for that member's chunks.
    let (tree, mut tree_stream) = loop {
        let Some(&peer) = src.live.first() else {
            return Err(src.failure(id));
        };
        match fetch_tree(rep, peer, id, size, max).await {
            Ok((t, stream)) => break (Arc::new(t), Some((peer, stream))),
            Err(e) => src.drop_peer(rep, peer, id, e),
        }
    };
    let total = tree.size;
    let n = tree::groups(total);

    // The writer: a blocking task fed verified chunks in order.
    let writer = blobs.writer()?;
    // A chunk's buffer goes back to the node's pool once it is written.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ChunkBuf>(WRITE_QUEUE);
    let writing = tokio::task::spawn_blocking(move || {
        let mut w = writer;
        while let Some(data) = rx.blocking_recv() {
            w.write_all(data.bytes())?;
        }
        Ok::<_, std::io::Error>(w)
    });

    let mut pending: BTreeSet<u64> = (0..n).collect();
    let mut ready: BTreeMap<u64, ChunkBuf> = BTreeMap::new();
    let mut next_write = 0u64;
    // Groups asked of each member and not yet back.
    let mut assigned: BTreeMap<u64, PeerId> = BTreeMap::new();
    let mut load: HashMap<PeerId, usize> = HashMap::new();
    let mut moved: BTreeMap<PeerId, u64> = BTreeMap::new();
    let mut streams: HashMap<PeerId, mpsc::Sender<(u64, ChunkBuf)>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let (done_tx, mut done) = mpsc::channel::<Done>(WINDOW as usize + 1);
    let mut turn = 0usize;
    // The one buffer this transfer may hold beyond the node's pool.
    let own = Arc::new(ChunkPool::new(1));
    while next_write < n {
        // Hand out groups within the window to members with room, in turn.
        while let Some(&i) = pending.first() {
            if i >= next_write + WINDOW || src.live.is_empty() {
                break;
            }
            let count = src.live.len();
            let Some(peer) = (0..count)
                .map(|k| src.live[(turn + k) % count])
                .find(|p| load.get(p).copied().unwrap_or(0) < PIPELINE)
            else {
                break;
            };
            // The group written next may take this transfer's own buffer: it leaves as soon
            // as it arrives, and the buffer comes back once written.
            let buf = if i == next_write {
                own.try_take().or_else(|| rep.chunk_pool.try_take())
            } else {
                rep.chunk_pool.try_take()
            };
            let Some(buf) = buf else {
                break;
            };
            turn = turn.wrapping_add(1);
            let jobs = streams.entry(peer).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(PIPELINE);
                let opened = match &tree_stream {
                    Some((p, _)) if *p == peer => tree_stream.take().map(|(_, s)| s),
                    _ => None,
                };
                tasks.spawn(member_stream(
                    rep.clone(),
                    peer,
                    id.clone(),
                    Arc::clone(&tree),
                    opened,
                    rx,
                    done_tx.clone(),
                ));
                tx
            });
            // Room was checked (load < PIPELINE): only a stream that ended refuses.
            if jobs.try_send((i, buf)).is_err() {
                streams.remove(&peer);
                src.drop_peer(
                    rep,
                    peer,
                    id,
                    ReplicationError::PeerFailed {
                        peer: peer.to_string(),
                        why: "its blob stream ended".into(),
                    },
                );
                continue;
            }
            pending.remove(&i);
            assigned.insert(i, peer);
            *load.entry(peer).or_default() += 1;
        }
        // The group written next may be unasked because every buffer it may take is lent: its
        // own comes back from the writer, which always progresses. (It may also wait for a
        // member with room, after a member failed; then only an answer frees one.)
        let next_waits =
            pending.first() == Some(&next_write) && !src.live.is_empty() && !own.has_free();
        if assigned.is_empty() && !next_waits {
            // Nothing in flight and nobody to ask.
            return Err(src.failure(id));
        }
        let event = tokio::select! {
            d = done.recv() => d,
            Some(back) = own.take(), if next_waits => {
                drop(back);
                continue;
            }
        };
        let Some((peer, i, result)) = event else {
            return Err(src.failure(id));
        };
        match result {
            Ok(data) if assigned.get(&i) == Some(&peer) => {
                assigned.remove(&i);
                if let Some(l) = load.get_mut(&peer) {
                    *l = l.saturating_sub(1);
                }
                let len = data.bytes().len() as u64;
                *moved.entry(peer).or_default() += len;
                rep.metrics.peer_bytes_received(&peer, len);
                ready.insert(i, data);
            }
            Ok(_) => {}
            Err(e) => {
                // The member's stream ended: its groups go back to the others.
                streams.remove(&peer);
                load.remove(&peer);
                let back: Vec<u64> = assigned
                    .iter()
                    .filter(|(_, p)| **p == peer)
                    .map(|(i, _)| *i)
                    .collect();
                for i in back {
                    assigned.remove(&i);
                    pending.insert(i);
                }
                if src.live.contains(&peer) {
                    src.drop_peer(rep, peer, id, e);
                }
            }
        }
        while let Some(data) = ready.remove(&next_write) {
            if tx.send(data).await.is_err() {
                break;
            }
            next_write += 1;
        }
        if tx.is_closed() {
            break;
        }
    }
    drop(streams);
    tasks.abort_all();
    drop(tx);
    let w = writing
        .await
        .map_err(|e| ReplicationError::Task(e.to_string()))?
        .map_err(|e| ReplicationError::Write { source: e })?;
    if next_write < n {
        return Err(ReplicationError::Task("the blob writer stopped".into()));
    }
    let blobs = blobs.clone();
    let id2 = id.clone();
    let verified = tokio::task::spawn_blocking(move || {
        let pending = w.finish_deferred()?;
        let info = pending.info().clone();
        let ok = match &id2 {
            BlobId::Blake3(b) => info.blake3 == *b,
            BlobId::Sha256(s) => info.sha256 == *s,
        } && info.size == total;
        if !ok {
            // Dropping the pending blob removes its temporary file: nothing unverified stays.
            return Ok(Err(info));
        }
        blobs.commit_one(pending).map(Ok)
    })
    .await
    .map_err(|e| ReplicationError::Task(e.to_string()))??;
    let info = match verified {
        Ok(info) => info,
        Err(got) => {
            // Only a SHA-256 name can get here: its member gave a tree of other bytes.
            let peer = moved
                .keys()
                .next()
                .map(ToString::to_string)
                .unwrap_or_default();
            return Err(ReplicationError::Corrupt {
                peer,
                blob: blob_name(id),
                why: format!(
                    "its bytes hash to BLAKE3 {} / SHA-256 {} ({} bytes)",
                    got.blake3, got.sha256, got.size
                ),
            });
        }
    };
    let mut flat = Vec::with_capacity(tree.values.len() * 32);
    for v in &tree.values {
        flat.extend_from_slice(v);
    }
    rep.trees.insert(&info.blake3, flat);
    let secs = started.elapsed().as_secs_f64();
    rep.metrics.fetch_seconds.record(secs);
    let by: Vec<String> = moved.iter().map(|(p, b)| format!("{p}={b}")).collect();
    tracing::info!(blob = %blob_name(id), size = total, members = moved.len(), sources = %by.join(","), seconds = secs, "blob fetched from members");
    Ok(info)
}

/// A blob's name for messages: `blake3:…` or `sha256:…`.
pub(crate) fn blob_name(id: &BlobId) -> String {
    match id {
        BlobId::Blake3(b) => format!("blake3:{b}"),
        BlobId::Sha256(s) => format!("sha256:{s}"),
    }
}
