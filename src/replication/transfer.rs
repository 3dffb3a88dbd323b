//! Fetching blobs from members: one blob stream per member (see `blob_stream`) with a few
//! chunk requests ahead of the answers, so memory stays bounded, no message holds a file and
//! no chunk waits a round trip. Chunks are written as they arrive into a blob-store writer (a
//! temporary file, hashed on the way) and the blob is committed under its content name only
//! once the whole blob hashes to the name it was asked by. Bytes that do not verify never
//! become visible: the temporary file is removed, the failure counted, the transfer refused.
//!
//! A blob comes from the members `sources` chooses: every member holding it whole at once
//! (striped: chunks go round-robin to the members with room in their pipeline), or a member
//! still fetching it (a relay, see `partial`) with those in reserve. While it is fetched,
//! this node serves it to other members in turn. Each chunk is checked as it arrives against
//! the blob's tree (see `tree`), fetched first and checked against the blob's BLAKE3. A
//! member whose chunk does not verify, that fails or that disappears is dropped for this
//! transfer and its chunks go to the others, so a transfer resumes from the offset reached;
//! at most [`WINDOW`] chunks are held (in flight, or verified and waiting for their turn to
//! be written), so memory stays bounded whatever the blob's size. A member that holds up the
//! chunk written next for [`STALL`] while another could send it is set aside the same way,
//! but kept as the last resort. All transfers of the node
//! together hold at most `replication.transferMemoryMiB` chunks (the buffers of the node's
//! chunk pool, see `chunk_pool`), and each at most one more: a buffer of its own, for the
//! group it writes next when the node's are all lent, so every transfer progresses however
//! many run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::sync::Arc;

use futures_util::{AsyncReadExt as _, AsyncWriteExt as _};
use libp2p::PeerId;
use tokio::sync::{mpsc, watch};
use tokio::task;

use super::blob_stream;
use super::chunk_pool::{ChunkBuf, ChunkPool};
use super::partial::Partial;
use super::protocol::{
    BlobId, BlobReply, BlobRequest, MAX_CHUNK, read_blob_reply_into, write_blob_request,
};
use super::sources::{self, Plan, Tree};
use super::tree;
use super::{Replication, ReplicationError};
use crate::store::{BlobInfo, BlobStore};

/// Chunk requests in flight per member.
const PIPELINE: usize = 4;
/// Chunks held at once per transfer: in flight, or verified and not yet written.
const WINDOW: u64 = 12;
/// Verified chunks queued for the writer.
const WRITE_QUEUE: usize = 2;
/// Largest blob fetched at all.
pub const MAX_BLOB: u64 = 64 << 30;
/// How long the chunk written next may be awaited from one member, from when it was asked for
/// or the member last delivered one, while the transfer has another to turn to: a member that
/// trickles (answering each chunk just within `blob_stream::ANSWER_TIMEOUT`, or a relay
/// falling far behind) is set aside, last in reserve, and its chunks go to the others. A chunk
/// is 1 MiB: a floor of about 100 KiB/s per member.
const STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// What a member's stream hands back: the member, the stream's task (so that what a stream
/// set aside or ended sent meanwhile is told from what its successor sends), the group, and
/// the group's verified bytes or why the member failed.
type Done = (PeerId, task::Id, u64, Result<ChunkBuf, ReplicationError>);

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
            let _ = done.send((peer, task::id(), u64::MAX, Err(e))).await;
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
            if done.send((peer, task::id(), i, Ok(data))).await.is_err() {
                break;
            }
        }
        Ok::<(), ReplicationError>(())
    };
    if let Err(e) = futures_util::future::try_join(ask, receive).await {
        let _ = done.send((peer, task::id(), u64::MAX, Err(e))).await;
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
        other => Err(sources::unexpected(peer, id, &other, "no bytes")),
    }
}

/// Fetches blob `id` into `blobs` from the members `sources` (in order of preference; those
/// lacking it drop out): `size` when known in advance (else at most `max`), for `purpose`
/// (what `/status` says it is fetched for). Each chunk is verified as it arrives; the blob is
/// committed under its name only once whole and hashing to it. Returns its identity once
/// durable.
pub(crate) async fn fetch_blob(
    rep: &Replication,
    sources: &[PeerId],
    blobs: &BlobStore,
    id: &BlobId,
    (size, max): (Option<u64>, u64),
    purpose: &str,
) -> Result<BlobInfo, ReplicationError> {
    let started = std::time::Instant::now();
    let Plan {
        tree,
        tree_from,
        sources: mut src,
        streams: mut opened,
        relay,
    } = sources::plan(rep, sources, id, size, max).await?;
    let tree = Arc::new(tree);
    let total = tree.size;
    let n = tree::groups(total);

    // The writer: a blocking task fed verified chunks in order.
    let writer = blobs.writer()?;
    // Members starting on the same blob meanwhile may take it from here (see `partial`), and
    // `/status` shows its progress: the writer publishes the bytes in the file as it goes.
    let flat = Arc::new(tree.flat());
    let (held_tx, held_rx) = watch::channel(0u64);
    let file = writer
        .open_read()
        .inspect_err(|e| tracing::debug!(blob = %blob_name(id), error = %e, "a blob being fetched is not served meanwhile"))
        .ok();
    let root = tree.root.to_hex().to_string();
    let names = [id.clone(), BlobId::Blake3(root.clone())];
    let partial = Partial {
        size: total,
        blake3: root,
        tree: Arc::clone(&flat),
        file,
        held: held_rx,
        purpose: purpose.to_string(),
        started: crate::clock::now_secs(),
    };
    let _registered = rep.partials.register(&names, partial);
    // A chunk's buffer goes back to the node's pool once it is written.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ChunkBuf>(WRITE_QUEUE);
    let writing = tokio::task::spawn_blocking(move || {
        let mut w = writer;
        while let Some(data) = rx.blocking_recv() {
            w.write_all(data.bytes())?;
            drop(data);
            held_tx.send_replace(w.in_file());
        }
        w.flush()?;
        held_tx.send_replace(w.in_file());
        Ok::<_, std::io::Error>(w)
    });

    let mut pending: BTreeSet<u64> = (0..n).collect();
    let mut ready: BTreeMap<u64, ChunkBuf> = BTreeMap::new();
    let mut next_write = 0u64;
    // Groups asked of a member and not yet back: which member, and when they were asked for.
    let mut assigned: BTreeMap<u64, (PeerId, tokio::time::Instant)> = BTreeMap::new();
    let mut load: HashMap<PeerId, usize> = HashMap::new();
    let mut moved: BTreeMap<PeerId, u64> = BTreeMap::new();
    // Each member's stream: where its groups are handed, and its task.
    let mut streams: HashMap<PeerId, (mpsc::Sender<(u64, ChunkBuf)>, tokio::task::AbortHandle)> =
        HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    // When each member last delivered a group.
    let mut delivered: HashMap<PeerId, tokio::time::Instant> = HashMap::new();
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
            let (jobs, _) = streams.entry(peer).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(PIPELINE);
                let task = tasks.spawn(member_stream(
                    rep.clone(),
                    peer,
                    id.clone(),
                    Arc::clone(&tree),
                    opened.remove(&peer),
                    rx,
                    done_tx.clone(),
                ));
                (tx, task)
            });
            // Room was checked (load < PIPELINE): only a stream that ended refuses.
            if jobs.try_send((i, buf)).is_err() {
                streams.remove(&peer);
                load.remove(&peer);
                take_back(peer, &mut assigned, &mut pending);
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
            assigned.insert(i, (peer, tokio::time::Instant::now()));
            *load.entry(peer).or_default() += 1;
        }
        // The group written next may be unasked because every buffer it may take is lent: its
        // own comes back from the writer, which always progresses. (It may also wait for a
        // member with room, after a member failed; then only an answer frees one.) With
        // nothing in flight it waits for its own buffer even when that looks free: it may have
        // come back (from a member's stream that ended) just after it was asked for.
        let next_waits = pending.first() == Some(&next_write)
            && !src.live.is_empty()
            && (assigned.is_empty() || !own.has_free());
        if assigned.is_empty() && !next_waits {
            // Nothing in flight and nobody to ask.
            return Err(src.failure(id));
        }
        // The member holding up the chunk written next, and until when it may (10 s after it
        // was asked for it or last delivered a chunk, whichever is later), when the transfer
        // has another member to turn to.
        let stalling = assigned
            .get(&next_write)
            .filter(|(p, _)| src.has_alternative(p))
            .map(|&(p, asked)| {
                let since = delivered.get(&p).map_or(asked, |d| asked.max(*d));
                (p, since + STALL)
            });
        let event = tokio::select! {
            // Answers first: one already in is never passed over for the stall deadline.
            biased;
            d = done.recv() => d,
            Some(back) = own.take(), if next_waits => {
                drop(back);
                continue;
            }
            () = sleep_until(stalling.map(|(_, at)| at)), if stalling.is_some() => {
                if let Some((peer, _)) = stalling {
                    // Its stream goes now, with the buffers of its chunks in flight. It is
                    // asked again only if every other member fails, and this node's next
                    // transfers keep it in reserve for a while.
                    if let Some((_, task)) = streams.remove(&peer) {
                        task.abort();
                    }
                    load.remove(&peer);
                    take_back(peer, &mut assigned, &mut pending);
                    rep.slow.mark(peer);
                    src.demote(peer, id, STALL);
                }
                continue;
            }
        };
        let Some((peer, sender, i, result)) = event else {
            return Err(src.failure(id));
        };
        // A stream aborted (set aside) or ended may have sent before it went: what it sent is
        // old news (its groups went back, or to the member's next stream).
        let current = streams.get(&peer).is_some_and(|(_, t)| t.id() == sender);
        match result {
            Ok(data) if current && assigned.get(&i).is_some_and(|(p, _)| *p == peer) => {
                assigned.remove(&i);
                delivered.insert(peer, tokio::time::Instant::now());
                if let Some(l) = load.get_mut(&peer) {
                    *l = l.saturating_sub(1);
                }
                let len = data.bytes().len() as u64;
                *moved.entry(peer).or_default() += len;
                rep.metrics.peer_bytes_received(&peer, len);
                ready.insert(i, data);
            }
            Ok(_) => {}
            Err(_) if !current => {}
            Err(e) => {
                // The member's stream ended: its groups go back to the others.
                streams.remove(&peer);
                load.remove(&peer);
                take_back(peer, &mut assigned, &mut pending);
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
            // Only a SHA-256 name can get here: the member that sent the tree gave one of
            // other bytes (every chunk matched it).
            return Err(ReplicationError::Corrupt {
                peer: tree_from.to_string(),
                blob: blob_name(id),
                why: format!(
                    "its bytes hash to BLAKE3 {} / SHA-256 {} ({} bytes)",
                    got.blake3, got.sha256, got.size
                ),
            });
        }
    };
    rep.trees.insert(&info.blake3, flat);
    let secs = started.elapsed().as_secs_f64();
    rep.metrics.fetch_seconds.record(secs);
    let by: Vec<String> = moved.iter().map(|(p, b)| format!("{p}={b}")).collect();
    tracing::info!(blob = %blob_name(id), size = total, members = moved.len(), sources = %by.join(","), relay = relay.map(|r| r.to_string()), seconds = secs, "blob fetched from members");
    Ok(info)
}

/// Puts the groups asked of `peer` and not yet back among those still to ask for.
fn take_back(
    peer: PeerId,
    assigned: &mut BTreeMap<u64, (PeerId, tokio::time::Instant)>,
    pending: &mut BTreeSet<u64>,
) {
    assigned.retain(|i, (p, _)| {
        let theirs = *p == peer;
        if theirs {
            pending.insert(*i);
        }
        !theirs
    });
}

/// Sleeps until `at` (for ever when `None`).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A blob's name for messages: `blake3:…` or `sha256:…`.
pub(crate) fn blob_name(id: &BlobId) -> String {
    match id {
        BlobId::Blake3(b) => format!("blake3:{b}"),
        BlobId::Sha256(s) => format!("sha256:{s}"),
    }
}
