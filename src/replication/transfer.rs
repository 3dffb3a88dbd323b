//! Fetching blobs from a member: a pipeline of chunk requests over the blob protocol (a few
//! [`MAX_CHUNK`] requests in flight, so memory stays bounded and no message holds a file),
//! written as they arrive into a blob-store writer (a temporary file, hashed on the way) and
//! committed under the content name only once the whole blob hashes to the name it was asked
//! by. Bytes that do not verify never become visible: the temporary file is removed, the
//! failure counted, the transfer refused.
//!
//! A release fetched from a member: its record (verified against the cluster key by the
//! caller), then every blob it names that is not stored — boot assets and GRUB modules by
//! BLAKE3, the images by walking their indexes and manifests by SHA-256 — and the record last,
//! so the release is visible only when complete (as an import publishes it).
//!
//! The seam for point 6 (resumable, striped transfers): [`fetch_blob`] asks one member for
//! chunks by offset; resuming from another member at the offset reached, or striping offsets
//! over several, replaces its request loop, not its callers.

use std::collections::HashSet;
use std::io::Write as _;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;
use libp2p::PeerId;

use super::protocol::{BlobId, BlobReply, BlobRequest, MAX_CHUNK};
use super::{Replication, ReplicationError};
use crate::catalog::{Release, ReleaseStore};
use crate::store::{BlobInfo, BlobStore};

/// Chunk requests in flight per blob.
const PIPELINE: usize = 4;
/// Blobs of one release fetched at once.
const PARALLEL_BLOBS: usize = 4;
/// Largest blob fetched whose size is not known in advance (an image index or manifest).
const MAX_DOCUMENT: u64 = 4 << 20;
/// Largest blob fetched at all.
pub const MAX_BLOB: u64 = 64 << 30;
/// Most blobs one release may name.
const MAX_RELEASE_BLOBS: usize = 100_000;

/// What a fetch moved.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Fetched {
    /// Blobs fetched.
    pub blobs: u64,
    /// Bytes fetched.
    pub bytes: u64,
}

/// Fetches blob `id` from `peer` into `blobs`: `size` when known in advance (else at most
/// `max`). Returns its identity once it verified and is durable.
pub(crate) async fn fetch_blob(
    rep: &Replication,
    peer: PeerId,
    blobs: &BlobStore,
    id: &BlobId,
    size: Option<u64>,
    max: u64,
) -> Result<BlobInfo, ReplicationError> {
    let corrupt = |why: String| ReplicationError::Corrupt {
        peer: peer.to_string(),
        blob: blob_name(id),
        why,
    };
    let mut writer = Some(blobs.writer()?);
    let mut total = size;
    let mut next = 0u64;
    let mut received = 0u64;
    let mut inflight = FuturesOrdered::new();
    loop {
        while inflight.len() < PIPELINE && total.map_or(inflight.is_empty(), |t| next < t) {
            let request = BlobRequest {
                id: id.clone(),
                offset: next,
                len: MAX_CHUNK,
            };
            let offset = next;
            let rep = rep.clone();
            inflight.push_back(async move { (offset, rep.blob_chunk(peer, request).await) });
            next += u64::from(MAX_CHUNK);
        }
        let Some((offset, reply)) = inflight.next().await else {
            break;
        };
        match reply? {
            BlobReply::Chunk { size: s, data } => {
                if s > max {
                    return Err(corrupt(format!(
                        "it says the blob has {s} bytes, more than the {max} allowed"
                    )));
                }
                if total.is_some_and(|t| t != s) {
                    return Err(corrupt(format!(
                        "it says the blob has {s} bytes, not {}",
                        total.unwrap_or_default()
                    )));
                }
                total = Some(s);
                let expected = s.saturating_sub(offset).min(u64::from(MAX_CHUNK));
                if data.len() as u64 != expected {
                    return Err(corrupt(format!(
                        "{} bytes at offset {offset}, not {expected}",
                        data.len()
                    )));
                }
                received += expected;
                let Some(mut w) = writer.take() else {
                    return Err(ReplicationError::Stopped);
                };
                let w = tokio::task::spawn_blocking(move || w.write_all(&data).map(|()| w))
                    .await
                    .map_err(|e| ReplicationError::Task(e.to_string()))?
                    .map_err(|e| ReplicationError::Write { source: e })?;
                writer = Some(w);
                if Some(received) == total {
                    break;
                }
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
        }
    }
    let Some(w) = writer.take() else {
        return Err(ReplicationError::Stopped);
    };
    let blobs = blobs.clone();
    let id2 = id.clone();
    let verified = tokio::task::spawn_blocking(move || {
        let pending = w.finish_deferred()?;
        let info = pending.info().clone();
        let ok = match &id2 {
            BlobId::Blake3(b) => info.blake3 == *b,
            BlobId::Sha256(s) => info.sha256 == *s,
        } && size.is_none_or(|n| n == info.size);
        if !ok {
            // Dropping the pending blob removes its temporary file: nothing unverified stays.
            return Ok(Err(info));
        }
        blobs.commit_one(pending).map(Ok)
    })
    .await
    .map_err(|e| ReplicationError::Task(e.to_string()))??;
    verified.map_err(|got| {
        corrupt(format!(
            "its bytes hash to BLAKE3 {} / SHA-256 {} ({} bytes)",
            got.blake3, got.sha256, got.size
        ))
    })
}

fn blob_name(id: &BlobId) -> String {
    match id {
        BlobId::Blake3(b) => format!("blake3:{b}"),
        BlobId::Sha256(s) => format!("sha256:{s}"),
    }
}

/// Fetches from `peer` every blob of `release` that `blobs` does not hold, then stores the
/// record (already verified against the cluster key).
pub(crate) async fn fetch_release(
    rep: &Replication,
    peer: PeerId,
    release: &Release,
    blobs: &BlobStore,
    releases: &ReleaseStore,
) -> Result<Fetched, ReplicationError> {
    let mut done = Fetched::default();
    // Boot assets and GRUB modules: named by BLAKE3 with their size.
    let mut leaves: Vec<(BlobId, Option<u64>)> = Vec::new();
    for arch in release.arches.values() {
        for b in arch.assets.values().chain(arch.grub.values()) {
            if !crate::store::is_blob_name(&b.blake3) {
                return Err(ReplicationError::PeerFailed {
                    peer: peer.to_string(),
                    why: format!("the record names an invalid blob {:?}", b.blake3),
                });
            }
            if !blobs.contains(&b.blake3) {
                leaves.push((BlobId::Blake3(b.blake3.clone()), Some(b.size)));
            }
        }
    }
    // Images: indexes and manifests first (they name the rest), by SHA-256.
    let mut docs: Vec<String> = Vec::new();
    for image in release.image_records() {
        docs.push(image.digest.hex().to_string());
        docs.push(image.manifest.hex().to_string());
    }
    let mut seen = HashSet::new();
    while let Some(sha) = docs.pop() {
        if seen.len() >= MAX_RELEASE_BLOBS {
            return Err(ReplicationError::TooMany {
                what: "blobs in a release",
                max: MAX_RELEASE_BLOBS,
            });
        }
        if !is_hex64(&sha) || !seen.insert(sha.clone()) {
            continue;
        }
        if blobs.by_sha256(&sha)?.is_none() {
            match fetch_blob(
                rep,
                peer,
                blobs,
                &BlobId::Sha256(sha.clone()),
                None,
                MAX_DOCUMENT,
            )
            .await
            {
                Ok(info) => {
                    done.blobs += 1;
                    done.bytes += info.size;
                }
                // The member lacks it too (an image kept in part): so does this node.
                Err(ReplicationError::NotHeld { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        let Some(bytes) = blobs.read_sha256(&sha, MAX_DOCUMENT)? else {
            continue;
        };
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let is_index = doc["manifests"].is_array();
        let children = doc["config"].as_object().into_iter().chain(
            ["layers", "manifests"]
                .iter()
                .flat_map(|k| doc[*k].as_array().into_iter().flatten())
                .filter_map(|d| d.as_object()),
        );
        for d in children {
            let Some(hex) = d
                .get("digest")
                .and_then(|v| v.as_str())
                .and_then(|s| s.strip_prefix("sha256:"))
            else {
                continue;
            };
            if is_index {
                docs.push(hex.to_string());
            } else if is_hex64(hex)
                && seen.insert(hex.to_string())
                && blobs.by_sha256(hex)?.is_none()
            {
                let size = d.get("size").and_then(serde_json::Value::as_u64);
                leaves.push((BlobId::Sha256(hex.to_string()), size));
            }
        }
    }
    if leaves.len() > MAX_RELEASE_BLOBS {
        return Err(ReplicationError::TooMany {
            what: "blobs in a release",
            max: MAX_RELEASE_BLOBS,
        });
    }
    let image_blob = |id: &BlobId| matches!(id, BlobId::Sha256(_));
    let mut results = futures_util::stream::iter(leaves)
        .map(|(id, size)| async move {
            let r = fetch_blob(rep, peer, blobs, &id, size, MAX_BLOB).await;
            (id, r)
        })
        .buffer_unordered(PARALLEL_BLOBS);
    while let Some((id, r)) = results.next().await {
        match r {
            Ok(info) => {
                done.blobs += 1;
                done.bytes += info.size;
            }
            Err(ReplicationError::NotHeld { .. }) if image_blob(&id) => {}
            Err(e) => return Err(e),
        }
    }
    blobs.meta().flush().await?;
    releases.put(release).await?;
    Ok(done)
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
