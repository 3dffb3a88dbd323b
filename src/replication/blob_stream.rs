//! The blob protocol's streams (see `protocol::BLOBS_PROTOCOL`). A transfer opens one stream
//! per member it fetches from and keeps a few requests ahead of the answers, so bytes flow
//! without a round trip per chunk and never through the task that owns the swarm. This node
//! answers members' streams from its store, and from the blobs it is still fetching (see
//! `partial`): members only (judged before a stream takes a place), at most [`MAX_SERVING`] at
//! once and [`MAX_SERVING_PER_PEER`] of one member (so that no member takes every place from
//! the others), each answer read off the runtime, with a deadline for every request to come and
//! every answer to leave.
//!
//! A stream is in use only once its holder said `Ready`: libp2p-stream drops an inbound
//! stream when the accepting task has not taken the previous one yet, so a stream that ends
//! before that word is opened again (a few times, backing off).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{AsyncWriteExt as _, StreamExt as _};
use libp2p::{PeerId, Stream, StreamProtocol};

use super::chunks::BlobReader;
use super::partial::{self, PARTIAL_WAIT};
use super::places::Places;
use super::protocol::{
    BLOBS_PROTOCOL, BlobReply, BlobRequest, MAX_CHUNK, read_blob_reply, read_blob_request,
    write_blob_reply, write_blob_request,
};
use super::test_settings::{self, BLOB_ANSWER_DELAY_ENV};
use super::{Replication, ReplicationError};
use crate::store::BlobStore;

/// Members' streams answered at once (each holds one chunk at a time).
pub(crate) const MAX_SERVING: usize = 64;
/// Streams of one member answered at once: a quarter of [`MAX_SERVING`] (a transfer takes
/// one stream per member it fetches from).
pub(crate) const MAX_SERVING_PER_PEER: usize = 16;
/// How long a stream may wait for its next request before this node closes it.
const REQUEST_IDLE: Duration = Duration::from_secs(60);
/// How long one answer may take to leave, or to arrive.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long opening a stream to a member may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refusal may take to leave.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Streams opened to a member before giving up on it (dropped before they were accepted).
const OPEN_ATTEMPTS: u32 = 6;
/// Longest delay [`BLOB_ANSWER_DELAY_ENV`] may ask for, in milliseconds: under
/// [`ANSWER_TIMEOUT`], so the source is slow but never late.
const MAX_ANSWER_DELAY_MS: u64 = 25_000;

/// The protocol's name for libp2p.
pub(crate) fn protocol() -> StreamProtocol {
    StreamProtocol::new(BLOBS_PROTOCOL)
}

/// Opens a blob stream to `peer` (a connected member).
pub(crate) async fn open(rep: &Replication, peer: PeerId) -> Result<Stream, ReplicationError> {
    let failed = |why: String| ReplicationError::PeerFailed {
        peer: peer.to_string(),
        why,
    };
    if !rep.is_member(&peer) {
        return Err(failed("not a member".into()));
    }
    let mut control = rep.streams.clone();
    let mut last = String::new();
    for attempt in 0..OPEN_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
        }
        let opened = tokio::time::timeout(OPEN_TIMEOUT, async {
            let mut s = control
                .open_stream(peer, protocol())
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let first = read_blob_reply(&mut s).await?;
            Ok::<_, std::io::Error>((s, first))
        })
        .await;
        match opened {
            Ok(Ok((s, BlobReply::Ready))) => return Ok(s),
            Ok(Ok((_, BlobReply::Refused))) => {
                return Err(ReplicationError::Busy {
                    peer: peer.to_string(),
                });
            }
            Ok(Ok((_, other))) => {
                return Err(failed(format!(
                    "it began a stream with {other:?} instead of Ready"
                )));
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => return Err(failed("opening a blob stream timed out".into())),
        }
    }
    Err(failed(format!(
        "no blob stream after {OPEN_ATTEMPTS} attempts: {last}"
    )))
}

/// Sends `req` on `stream` and reads its answer (one at a time: tree pages).
pub(crate) async fn ask(
    stream: &mut Stream,
    peer: PeerId,
    req: &BlobRequest,
) -> Result<BlobReply, ReplicationError> {
    let exchange = async {
        write_blob_request(stream, req).await?;
        stream.flush().await?;
        read_blob_reply(stream).await
    };
    match tokio::time::timeout(ANSWER_TIMEOUT, exchange).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(ReplicationError::PeerFailed {
            peer: peer.to_string(),
            why: format!("blob stream: {e}"),
        }),
        Err(_) => Err(ReplicationError::PeerFailed {
            peer: peer.to_string(),
            why: "no answer in time on the blob stream".into(),
        }),
    }
}

/// Answers members' blob streams from `blobs` until `incoming` ends.
pub(crate) async fn serve(
    mut incoming: libp2p_stream::IncomingStreams,
    rep: Replication,
    blobs: BlobStore,
) {
    let places = Places::new(MAX_SERVING, MAX_SERVING_PER_PEER);
    let delay = test_settings::read(
        BLOB_ANSWER_DELAY_ENV,
        MAX_ANSWER_DELAY_MS,
        "each chunk of a stored blob larger than one chunk leaves late (milliseconds)",
    )
    .map(Duration::from_millis);
    while let Some((peer, stream)) = incoming.next().await {
        if !rep.is_member(&peer) {
            tracing::debug!(peer_id = %peer, "blob stream of a non-member refused");
            tokio::spawn(refuse(stream));
            continue;
        }
        let place = match places.take(peer) {
            Ok(place) => place,
            Err(full) => {
                let max = places.max(&full);
                tracing::warn!(peer_id = %peer, max, of = ?full, "blob stream refused: this node serves as many as it may");
                tokio::spawn(refuse(stream));
                continue;
            }
        };
        let (rep, blobs) = (rep.clone(), blobs.clone());
        tokio::spawn(async move {
            let _place = place;
            serve_stream(&rep, &blobs, peer, stream, delay).await;
        });
    }
}

/// Tells the member its stream is refused, and closes it.
async fn refuse(mut stream: Stream) {
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        write_blob_reply(&mut stream, &BlobReply::Refused).await?;
        stream.close().await
    })
    .await;
}

/// Answers one member's stream, request after request, until it closes or stalls (in tests,
/// each chunk of a stored blob of more than one chunk `delay` late).
async fn serve_stream(
    rep: &Replication,
    blobs: &BlobStore,
    peer: PeerId,
    mut stream: Stream,
    delay: Option<Duration>,
) {
    let ready = tokio::time::timeout(ANSWER_TIMEOUT, async {
        write_blob_reply(&mut stream, &BlobReply::Ready).await?;
        stream.flush().await
    })
    .await;
    if !matches!(ready, Ok(Ok(()))) {
        return;
    }
    let mut reader = Some(BlobReader::default());
    loop {
        let req = match tokio::time::timeout(REQUEST_IDLE, read_blob_request(&mut stream)).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) | Err(_) => break,
            Ok(Err(e)) => {
                tracing::debug!(peer_id = %peer, error = %e, "a member's blob request could not be read");
                break;
            }
        };
        // A blob this node is still fetching answers from what it holds so far.
        let relayed = match rep.partials.get(&req.id) {
            Some(p) if req.len <= MAX_CHUNK => partial::answer(p, &req, PARTIAL_WAIT).await,
            _ => None,
        };
        let reply = if let Some(reply) = relayed {
            reply
        } else if req.len > MAX_CHUNK {
            BlobReply::Refused
        } else {
            let (b, trees) = (blobs.clone(), Arc::clone(&rep.trees));
            let mut r = reader.take().unwrap_or_default();
            let reply =
                match tokio::task::spawn_blocking(move || (r.read(&b, &trees, &req), r)).await {
                    Ok((reply, r)) => {
                        reader = Some(r);
                        reply
                    }
                    Err(_) => break,
                };
            if let (Some(d), BlobReply::Chunk { size, .. }) = (delay, &reply)
                && *size > u64::from(MAX_CHUNK)
            {
                tokio::time::sleep(d).await;
            }
            reply
        };
        if let BlobReply::Chunk { data, .. } | BlobReply::Tree { data, .. } = &reply {
            rep.metrics.bytes_sent.increment(data.len() as u64);
            rep.metrics.peer_bytes_sent(&peer, data.len() as u64);
        }
        let sent = tokio::time::timeout(ANSWER_TIMEOUT, async {
            write_blob_reply(&mut stream, &reply).await?;
            stream.flush().await
        })
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::debug!(peer_id = %peer, "a blob answer could not be sent in time");
            return;
        }
    }
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, stream.close()).await;
}
