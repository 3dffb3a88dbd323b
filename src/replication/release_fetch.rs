//! A release fetched from members: its record (verified against the cluster key by the
//! caller), then every blob it names that is not stored — boot assets and GRUB modules by
//! BLAKE3, the images by walking their indexes and manifests (by the BLAKE3 the signed record
//! pairs with each SHA-256) — each through [`fetch_blob`] from every member holding it, and the
//! record last, so the release is visible only when complete (as an import publishes it).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::StreamExt as _;
use libp2p::PeerId;

use super::protocol::BlobId;
use super::transfer::{MAX_BLOB, blob_name, fetch_blob};
use super::{Replication, ReplicationError};
use crate::catalog::{Release, ReleaseStore};
use crate::store::{BlobInfo, BlobStore};

/// Blobs of one release fetched at once.
const PARALLEL_BLOBS: usize = 4;
/// Largest blob fetched whose size is not known in advance (an image index or manifest).
const MAX_DOCUMENT: u64 = 4 << 20;
/// Most blobs one release may name.
const MAX_RELEASE_BLOBS: usize = 100_000;
/// Blobs at least this large start at a moment staggered per member (see [`stagger`]).
const STAGGER_MIN: u64 = 16 << 20;
/// The longest stagger.
const STAGGER_MAX: Duration = Duration::from_millis(800);

/// How long this member waits before it starts on a large blob `id` of a release: a share of
/// [`STAGGER_MAX`] given by its rendezvous weight for the blob. Members that reach the blob at
/// the same moment (they start a release's replication together) then start on it one after
/// another, and each takes it from the one before as a relay (see `partial`) instead of all
/// from the same member.
fn stagger(local: &PeerId, id: &BlobId) -> Duration {
    STAGGER_MAX.mul_f64(super::rendezvous::fraction(&blob_name(id), local))
}

/// What a fetch moved.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Fetched {
    /// Blobs fetched.
    pub blobs: u64,
    /// Bytes fetched.
    pub bytes: u64,
    /// Whether the record was stored (not when a newer one was imported here meanwhile).
    pub stored: bool,
}

/// Fetches every blob of `release` that `blobs` does not hold from `peer` and the other
/// members that hold it, then stores the record (already verified against the cluster key).
pub(crate) async fn fetch_release(
    rep: &Replication,
    peer: PeerId,
    release: &Release,
    names: &super::event_loop::ReleaseNames,
    blobs: &BlobStore,
    releases: &ReleaseStore,
) -> Result<Fetched, ReplicationError> {
    // An image blob by its BLAKE3 when the signed record names it (each chunk then verifies
    // against a name the cluster signed), else by its SHA-256.
    let by_name = |sha: &str| match names.get(sha) {
        Some(b3) => BlobId::Blake3(b3.clone()),
        None => BlobId::Sha256(sha.to_string()),
    };
    let mut done = Fetched::default();
    let purpose = &format!("release {}", release.version);
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
    // The SHA-256 each image leaf must also have, by its index in `leaves`.
    let mut shas: HashMap<usize, String> = HashMap::new();
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
            match fetch_named(
                rep,
                &rep.sources(peer).await,
                blobs,
                &by_name(&sha),
                &sha,
                (None, MAX_DOCUMENT),
                purpose,
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
        let Some((is_index, children)) = children_of(&bytes) else {
            continue;
        };
        for (hex, size) in children {
            if is_index {
                docs.push(hex);
            } else if is_hex64(&hex) && seen.insert(hex.clone()) && blobs.by_sha256(&hex)?.is_none()
            {
                leaves.push((by_name(&hex), size));
                shas.insert(leaves.len() - 1, hex);
            }
        }
    }
    if leaves.len() > MAX_RELEASE_BLOBS {
        return Err(ReplicationError::TooMany {
            what: "blobs in a release",
            max: MAX_RELEASE_BLOBS,
        });
    }
    let shas = &shas;
    let mut results = futures_util::stream::iter(leaves.into_iter().enumerate())
        .map(|(i, (id, size))| async move {
            if size.is_some_and(|s| s >= STAGGER_MIN) {
                tokio::time::sleep(stagger(&rep.peer_id(), &id)).await;
            }
            // The members connected when the blob starts: striped over those that hold it.
            let sources = rep.sources(peer).await;
            let r = match shas.get(&i) {
                Some(sha) => {
                    fetch_named(rep, &sources, blobs, &id, sha, (size, MAX_BLOB), purpose).await
                }
                None => fetch_blob(rep, &sources, blobs, &id, (size, MAX_BLOB), purpose).await,
            };
            (shas.contains_key(&i), r)
        })
        .buffer_unordered(PARALLEL_BLOBS);
    while let Some((image_blob, r)) = results.next().await {
        match r {
            Ok(info) => {
                done.blobs += 1;
                done.bytes += info.size;
            }
            Err(ReplicationError::NotHeld { .. }) if image_blob => {}
            Err(e) => return Err(e),
        }
    }
    blobs.meta().flush().await?;
    // An import here since the record was asked for wrote a newer one: it stays.
    done.stored = releases.put_replicated(release).await?;
    Ok(done)
}

/// [`fetch_blob`] of an image blob that must also have SHA-256 `sha` (when asked by its
/// BLAKE3: the signed record's pairing of both names is checked too).
async fn fetch_named(
    rep: &Replication,
    sources: &[PeerId],
    blobs: &BlobStore,
    id: &BlobId,
    sha: &str,
    size_max: (Option<u64>, u64),
    purpose: &str,
) -> Result<BlobInfo, ReplicationError> {
    let info = fetch_blob(rep, sources, blobs, id, size_max, purpose).await?;
    if info.sha256 != sha {
        // Committed under a BLAKE3 the cluster signed, but not the image's blob: the record
        // paired the names wrongly. The blob stays (it is what its name says); the image does
        // not get it.
        return Err(ReplicationError::Corrupt {
            peer: sources.first().map(ToString::to_string).unwrap_or_default(),
            blob: format!("sha256:{sha}"),
            why: format!(
                "the signed record pairs it with a blob of SHA-256 {}",
                info.sha256
            ),
        });
    }
    Ok(info)
}

/// The BLAKE3 of every blob of `release`'s images held in `blobs`, by SHA-256 (indexes,
/// manifests, configs, layers): what a signed release record carries for its receivers.
pub(crate) fn image_blob_names(
    release: &Release,
    blobs: &BlobStore,
) -> super::event_loop::ReleaseNames {
    let mut out = super::event_loop::ReleaseNames::new();
    let mut docs: Vec<String> = Vec::new();
    for image in release.image_records() {
        docs.push(image.digest.hex().to_string());
        docs.push(image.manifest.hex().to_string());
    }
    let name = |sha: &str, out: &mut super::event_loop::ReleaseNames| {
        if out.len() < MAX_RELEASE_BLOBS
            && is_hex64(sha)
            && !out.contains_key(sha)
            && let Ok(Some(info)) = blobs.by_sha256(sha)
        {
            out.insert(sha.to_string(), info.blake3);
            return true;
        }
        false
    };
    while let Some(sha) = docs.pop() {
        if !name(&sha, &mut out) {
            continue;
        }
        let Ok(Some(bytes)) = blobs.read_sha256(&sha, MAX_DOCUMENT) else {
            continue;
        };
        let Some((is_index, children)) = children_of(&bytes) else {
            continue;
        };
        for (hex, _) in children {
            if is_index {
                docs.push(hex);
            } else {
                name(&hex, &mut out);
            }
        }
    }
    out
}

/// A descriptor an OCI document names: SHA-256 hex and size, when given.
type Child = (String, Option<u64>);

/// The descriptors an OCI index or manifest names (an index's manifests, a manifest's config
/// and layers), and whether it is an index; `None` when the bytes are not JSON.
fn children_of(bytes: &[u8]) -> Option<(bool, Vec<Child>)> {
    let doc = serde_json::from_slice::<serde_json::Value>(bytes).ok()?;
    let is_index = doc["manifests"].is_array();
    let children = doc["config"]
        .as_object()
        .into_iter()
        .chain(
            ["layers", "manifests"]
                .iter()
                .flat_map(|k| doc[*k].as_array().into_iter().flatten())
                .filter_map(|d| d.as_object()),
        )
        .filter_map(|d| {
            let hex = d.get("digest")?.as_str()?.strip_prefix("sha256:")?;
            Some((
                hex.to_string(),
                d.get("size").and_then(serde_json::Value::as_u64),
            ))
        })
        .collect();
    Some((is_index, children))
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
