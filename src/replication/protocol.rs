//! What members say to each other: the hello exchanged right after the transport handshake
//! (the credential check) and the gossip messages.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::cluster::KnownPeer;
use super::membership::Envelope;

/// The hello protocol (request-response, JSON).
pub const HELLO_PROTOCOL: &str = "/image-factory/hello/1";
/// Largest hello request (a credential).
pub const MAX_HELLO_REQUEST: u64 = 64 * 1024;
/// Largest hello reply (the revocations and the members' addresses).
pub const MAX_HELLO_REPLY: u64 = 2 * 1024 * 1024;
/// Largest gossip message.
pub const MAX_GOSSIP: usize = 64 * 1024;
/// identify's protocol version.
pub const IDENTIFY_VERSION: &str = "/image-factory/1.0.0";

/// Sent by both sides on a new connection: who we are in which cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hello {
    /// The sender's cluster ID (`None`: in no cluster).
    pub cluster: Option<String>,
    /// The sender's credential.
    pub credential: Option<Envelope>,
}

/// The answer to a [`Hello`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "result", deny_unknown_fields)]
pub enum HelloReply {
    /// The sender is a member: here is what we know (anti-entropy of the membership).
    Welcome {
        /// Every revocation we hold.
        revocations: Vec<Envelope>,
        /// Other members and their addresses.
        peers: Vec<KnownPeer>,
    },
    /// The sender is refused, and why.
    Refused {
        /// The reason, for the refused node's log.
        reason: String,
        /// The revocation, when the sender was removed (so it learns of its removal).
        revocation: Option<Envelope>,
    },
}

/// The schematic protocol (request-response, JSON): anti-entropy over ID sets and fetches.
pub const SCHEMATICS_PROTOCOL: &str = "/image-factory/schematics/1";
/// Largest schematic request.
pub const MAX_SCHEMATICS_REQUEST: u64 = 64 * 1024;
/// Largest schematic reply (a batch stops growing past [`SCHEMATIC_BATCH_BYTES`], and one
/// canonical schematic is at most 16 MiB; JSON escaping can grow it).
pub const MAX_SCHEMATICS_REPLY: u64 = 96 * 1024 * 1024;
/// IDs per page of an ID listing.
pub const MAX_IDS_PAGE: usize = 4096;
/// Schematics asked for in one request.
pub const MAX_GET: usize = 32;
/// A batch of schematics stops growing once it holds this many bytes of YAML.
pub const SCHEMATIC_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// A request of the schematic protocol (members only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields)]
pub enum SchematicRequest {
    /// How many schematics, and a digest of their sorted IDs.
    Digest,
    /// A page of sorted IDs after `after`.
    Ids {
        /// Exclusive start.
        after: Option<String>,
        /// Most IDs wanted (capped at [`MAX_IDS_PAGE`]).
        limit: usize,
    },
    /// These schematics (at most [`MAX_GET`]).
    Get {
        /// Schematic IDs.
        ids: Vec<String>,
    },
}

/// One schematic: its ID and canonical YAML.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchematicItem {
    /// Schematic ID (SHA-256 of the YAML).
    pub id: String,
    /// Canonical YAML.
    pub yaml: String,
}

/// An answer of the schematic protocol.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields)]
pub enum SchematicReply {
    /// Count and digest of the ID set.
    Digest {
        /// Number of schematics.
        count: u64,
        /// Hex SHA-256 of the sorted IDs, one per line.
        digest: String,
    },
    /// A page of IDs.
    Ids {
        /// Sorted IDs.
        ids: Vec<String>,
        /// Whether more follow.
        more: bool,
    },
    /// The schematics asked for that are stored (missing ones are left out).
    Schematics {
        /// The schematics.
        items: Vec<SchematicItem>,
    },
    /// The requester is not a member.
    Refused {
        /// Why.
        reason: String,
    },
}

/// A gossip message (topics `/image-factory/<cluster>/membership/1` and `…/schematics/1`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields)]
pub enum Gossip {
    /// A member was removed.
    Revocation {
        /// The signed revocation.
        revocation: Envelope,
    },
    /// A schematic was created (fetch it from the announcer with the schematic protocol).
    Schematic {
        /// Its ID.
        id: String,
    },
    /// A release was imported (fetch its record from the announcer with the release protocol).
    Release {
        /// Its version tag.
        version: String,
        /// Its record's revision (a member holding an older one fetches it too).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<crate::catalog::Revision>,
    },
    /// The sender is building the model of a cache key (a lease; renewed while it builds).
    Lease {
        /// Cache key.
        key: String,
    },
    /// The sender's build of a cache key ended (`ok`: fetch it from the sender).
    Built {
        /// Cache key.
        key: String,
        /// Whether it succeeded.
        ok: bool,
    },
    /// What the sender holds (announced periodically).
    Holdings {
        /// Its counts.
        holdings: Holdings,
    },
}

/// What a member holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Holdings {
    /// Schematics.
    pub schematics: u64,
    /// Complete releases.
    pub releases: u64,
    /// Models (built or fetched assets with their records).
    pub models: u64,
    /// Bytes of its blob store.
    pub bytes: u64,
}

/// The membership topic of cluster `id`.
pub fn membership_topic(cluster: &str) -> String {
    format!(
        "/image-factory/{}/membership/1",
        &cluster[..cluster.len().min(16)]
    )
}

/// The schematic topic of cluster `id`.
pub fn schematics_topic(cluster: &str) -> String {
    format!(
        "/image-factory/{}/schematics/1",
        &cluster[..cluster.len().min(16)]
    )
}

/// The release protocol (request-response, JSON): anti-entropy over version sets and signed
/// release records.
pub const RELEASES_PROTOCOL: &str = "/image-factory/releases/1";
/// Largest release request.
pub const MAX_RELEASES_REQUEST: u64 = 4 * 1024;
/// Largest release reply (a record names every blob of a release — hundreds of GRUB modules
/// and extension images — and travels base64-encoded in its envelope).
pub const MAX_RELEASES_REPLY: u64 = 32 * 1024 * 1024;
/// Largest release record accepted (bytes of its JSON payload).
pub const MAX_RELEASE_RECORD: usize = 16 * 1024 * 1024;
/// Most versions listed.
pub const MAX_RELEASES: usize = 1024;
/// `kind` of a signed release record.
pub const RELEASE_KIND: &str = "image-factory/release-record/v1";

/// A request of the release protocol (members only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields)]
pub enum ReleaseRequest {
    /// The versions held.
    List,
    /// One release record.
    Get {
        /// Version tag.
        version: String,
    },
}

/// An answer of the release protocol.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields)]
pub enum ReleaseReply {
    /// The versions held (complete, undamaged releases).
    List {
        /// Version tags.
        versions: Vec<String>,
        /// The revision of each listed record that has one.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        revisions: BTreeMap<String, crate::catalog::Revision>,
    },
    /// The record, signed with the cluster key.
    Record {
        /// An envelope over a [`SignedRelease`].
        record: Envelope,
    },
    /// Not held.
    Missing,
    /// The requester is not a member.
    Refused {
        /// Why.
        reason: String,
    },
}

/// The payload of a signed release record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignedRelease {
    /// [`RELEASE_KIND`].
    pub kind: String,
    /// Cluster ID.
    pub cluster: String,
    /// The record as stored.
    pub release: crate::catalog::Release,
    /// The BLAKE3 of each blob of the release's images, by SHA-256 (their OCI name): the name
    /// the receiver verifies their chunks against (see `tree`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub blobs: std::collections::BTreeMap<String, String>,
}

/// The blob protocol (a stream per transfer and member): the fetching member writes requests
/// (length-prefixed JSON), a few ahead; the holder answers each in order with a header and, for
/// bytes, at most [`MAX_CHUNK`] of them, so no message holds a whole file and the bytes flow
/// without a round trip per chunk.
pub const BLOBS_PROTOCOL: &str = "/image-factory/blobs/2";
/// Largest chunk asked for or sent.
pub const MAX_CHUNK: u32 = 1024 * 1024;
/// Largest blob request, and largest answer header.
pub const MAX_BLOB_HEADER: usize = 1024;

/// A blob by one of its names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum BlobId {
    /// BLAKE3 hex (the blob store's name).
    Blake3(String),
    /// SHA-256 hex (the OCI name).
    Sha256(String),
}

/// A request of the blob protocol (members only): `len` bytes from `offset` of the blob, or
/// of its tree (the chaining values of its 1 MiB groups, see `tree`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlobRequest {
    /// Which blob.
    pub id: BlobId,
    /// First byte.
    pub offset: u64,
    /// Bytes wanted (at most [`MAX_CHUNK`]).
    pub len: u32,
    /// Whether the bytes are of the blob's tree rather than the blob.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tree: bool,
}

/// An answer of the blob protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobReply {
    /// Bytes from the offset asked for; `size` is the whole blob's.
    Chunk {
        /// The blob's size.
        size: u64,
        /// The bytes (fewer than asked only at the end of the blob).
        data: Vec<u8>,
    },
    /// Bytes of the blob's tree from the offset asked for.
    Tree {
        /// The blob's size.
        size: u64,
        /// The blob's BLAKE3 (hex): the root the tree must merge to.
        blake3: String,
        /// Concatenated chaining values (fewer than asked only at the end of the tree; none
        /// when none were asked: a question about what the member holds).
        data: Vec<u8>,
        /// Set by a member still fetching the blob: the bytes from its start it holds (it
        /// answers chunks below that at once, the others once it holds them, within a bound).
        held: Option<u64>,
    },
    /// Not held.
    Missing,
    /// The requester is not a member, or the request is out of bounds.
    Refused,
    /// The stream is accepted: the holder's first message on every stream it answers.
    Ready,
}

/// The header sent before a chunk's bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields)]
enum BlobHeader {
    Chunk {
        size: u64,
        len: u32,
    },
    Tree {
        size: u64,
        blake3: String,
        len: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        held: Option<u64>,
    },
    Missing,
    Refused,
    Ready,
}

async fn read_prefixed<T: futures_util::AsyncRead + Unpin>(
    io: &mut T,
    max: usize,
) -> std::io::Result<Vec<u8>> {
    let len = read_len(io).await?;
    read_body(io, len, max).await
}

/// Reads a message's length prefix.
async fn read_len<T: futures_util::AsyncRead + Unpin>(io: &mut T) -> std::io::Result<usize> {
    use futures_util::AsyncReadExt as _;
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    Ok(u32::from_be_bytes(len) as usize)
}

/// Reads a message of `len` bytes (refused beyond `max` before anything is allocated).
async fn read_body<T: futures_util::AsyncRead + Unpin>(
    io: &mut T,
    len: usize,
    max: usize,
) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    read_body_into(io, len, max, &mut buf).await?;
    Ok(buf)
}

/// Reads a message of `len` bytes into `buf`, which then holds exactly those bytes (refused
/// beyond `max` before anything is allocated; only bytes `buf` never held are zeroed first).
async fn read_body_into<T: futures_util::AsyncRead + Unpin>(
    io: &mut T,
    len: usize,
    max: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    use futures_util::AsyncReadExt as _;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a message of {len} bytes exceeds the limit of {max}"),
        ));
    }
    // `read_exact` into a buffer of the exact size: `read_to_end` would grow a full buffer
    // to twice its size (copying it) to probe for more bytes, for every 1 MiB chunk.
    buf.resize(len, 0);
    io.read_exact(buf).await
}

async fn write_prefixed<T: futures_util::AsyncWrite + Unpin>(
    io: &mut T,
    bytes: &[u8],
) -> std::io::Result<()> {
    use futures_util::AsyncWriteExt as _;
    let len = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "message too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await
}

fn invalid(e: serde_json::Error) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

/// Writes one blob request (not flushed).
pub async fn write_blob_request<T: futures_util::AsyncWrite + Unpin>(
    io: &mut T,
    req: &BlobRequest,
) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(req).map_err(invalid)?;
    write_prefixed(io, &bytes).await
}

/// Reads the next blob request; `None` when the member closed the stream between requests.
pub async fn read_blob_request<T: futures_util::AsyncRead + Unpin>(
    io: &mut T,
) -> std::io::Result<Option<BlobRequest>> {
    use futures_util::AsyncReadExt as _;
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < len.len() {
        match io.read(&mut len[got..]).await? {
            0 if got == 0 => return Ok(None),
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    let bytes = read_body(io, u32::from_be_bytes(len) as usize, MAX_BLOB_HEADER).await?;
    serde_json::from_slice(&bytes).map(Some).map_err(invalid)
}

/// Reads one blob answer.
pub async fn read_blob_reply<T: futures_util::AsyncRead + Unpin>(
    io: &mut T,
) -> std::io::Result<BlobReply> {
    let mut chunk = Vec::new();
    let mut reply = read_blob_reply_into(io, &mut chunk).await?;
    if let BlobReply::Chunk { data, .. } = &mut reply {
        *data = chunk;
    }
    Ok(reply)
}

/// Reads one blob answer, a chunk's bytes into `chunk` (reused: only bytes it never held are
/// zeroed first); the `Chunk` answer returned then carries no bytes of its own.
pub async fn read_blob_reply_into<T: futures_util::AsyncRead + Unpin>(
    io: &mut T,
    chunk: &mut Vec<u8>,
) -> std::io::Result<BlobReply> {
    let bytes = read_prefixed(io, MAX_BLOB_HEADER).await?;
    match serde_json::from_slice::<BlobHeader>(&bytes).map_err(invalid)? {
        BlobHeader::Chunk { size, len } => {
            if len > MAX_CHUNK {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a chunk of {len} bytes exceeds the limit of {MAX_CHUNK}"),
                ));
            }
            let n = read_len(io).await?;
            read_body_into(io, n, len as usize, chunk).await?;
            Ok(BlobReply::Chunk {
                size,
                data: Vec::new(),
            })
        }
        BlobHeader::Tree {
            size,
            blake3,
            len,
            held,
        } => {
            if len > MAX_CHUNK {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a tree page of {len} bytes exceeds the limit of {MAX_CHUNK}"),
                ));
            }
            let data = read_prefixed(io, len as usize).await?;
            Ok(BlobReply::Tree {
                size,
                blake3,
                data,
                held,
            })
        }
        BlobHeader::Missing => Ok(BlobReply::Missing),
        BlobHeader::Refused => Ok(BlobReply::Refused),
        BlobHeader::Ready => Ok(BlobReply::Ready),
    }
}

/// Writes one blob answer (not flushed).
pub async fn write_blob_reply<T: futures_util::AsyncWrite + Unpin>(
    io: &mut T,
    reply: &BlobReply,
) -> std::io::Result<()> {
    let (header, data) = match reply {
        BlobReply::Chunk { size, data } => {
            let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
            (BlobHeader::Chunk { size: *size, len }, Some(data))
        }
        BlobReply::Tree {
            size,
            blake3,
            data,
            held,
        } => {
            let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
            (
                BlobHeader::Tree {
                    size: *size,
                    blake3: blake3.clone(),
                    len,
                    held: *held,
                },
                Some(data),
            )
        }
        BlobReply::Missing => (BlobHeader::Missing, None),
        BlobReply::Refused => (BlobHeader::Refused, None),
        BlobReply::Ready => (BlobHeader::Ready, None),
    };
    let bytes = serde_json::to_vec(&header).map_err(invalid)?;
    write_prefixed(io, &bytes).await?;
    if let Some(data) = data {
        write_prefixed(io, data).await?;
    }
    Ok(())
}

/// The model protocol (request-response, JSON): a built asset's signed record by cache key
/// (its bytes then come by the blob protocol).
pub const MODELS_PROTOCOL: &str = "/image-factory/models/1";
/// Largest model request.
pub const MAX_MODEL_REQUEST: u64 = 1024;
/// Largest model reply (a signed asset record).
pub const MAX_MODEL_REPLY: u64 = 1024 * 1024;
/// The Kademlia protocol of the cluster (provider records of cache keys).
pub const KAD_PROTOCOL: &str = "/image-factory/kad/1";

/// A request of the model protocol (members only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelRequest {
    /// Cache key (hex SHA-256).
    pub key: String,
}

/// An answer of the model protocol.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields)]
pub enum ModelReply {
    /// The asset record as stored: its signed envelope's JSON.
    Record {
        /// The envelope's JSON text.
        record: String,
    },
    /// Not held.
    Missing,
    /// The requester is not a member.
    Refused,
}

/// The push protocol (request-response, JSON): a member that built a model asks each member
/// chosen to hold a copy of it (`replication.factor`) to fetch it from the asker.
pub const PUSH_PROTOCOL: &str = "/image-factory/push/1";
/// Largest push request.
pub const MAX_PUSH_REQUEST: u64 = 1024;
/// Largest push reply.
pub const MAX_PUSH_REPLY: u64 = 1024;

/// A request of the push protocol (members only): fetch the model of `key` from me.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushRequest {
    /// Cache key (hex SHA-256).
    pub key: String,
}

/// An answer of the push protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields)]
pub enum PushReply {
    /// The member fetches it now (or holds it, or fetches it already).
    Accepted,
    /// The member runs as many pushed fetches as it allows; the asker asks again later.
    Busy,
    /// The asker is not a member, or the key is not a cache key.
    Refused,
}

#[cfg(test)]
mod tests {
    use futures_util::io::Cursor;

    use super::*;

    #[tokio::test]
    async fn chunks_round_trip_and_oversized_messages_are_refused() {
        let reply = BlobReply::Chunk {
            size: 10,
            data: b"0123456789".to_vec(),
        };
        let mut buf = Vec::new();
        write_blob_reply(&mut Cursor::new(&mut buf), &reply)
            .await
            .unwrap();
        let back = read_blob_reply(&mut Cursor::new(&buf)).await.unwrap();
        assert_eq!(back, reply);
        // A tree page says how much a member still fetching the blob holds; a whole blob's
        // says nothing of it (as before members relayed).
        for held in [Some(5u64 << 20), None] {
            let tree = BlobReply::Tree {
                size: 10 << 20,
                blake3: "c".repeat(64),
                data: vec![1; 64],
                held,
            };
            let mut buf = Vec::new();
            write_blob_reply(&mut Cursor::new(&mut buf), &tree)
                .await
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&buf).contains("held"),
                held.is_some()
            );
            assert_eq!(read_blob_reply(&mut Cursor::new(&buf)).await.unwrap(), tree);
        }
        // A full chunk is read into a buffer of its size, not one grown to twice it.
        let full = BlobReply::Chunk {
            size: u64::from(MAX_CHUNK),
            data: vec![7u8; MAX_CHUNK as usize],
        };
        let mut buf = Vec::new();
        write_blob_reply(&mut Cursor::new(&mut buf), &full)
            .await
            .unwrap();
        let BlobReply::Chunk { data, .. } = read_blob_reply(&mut Cursor::new(&buf)).await.unwrap()
        else {
            panic!("not a chunk");
        };
        assert_eq!(data.len(), MAX_CHUNK as usize);
        assert_eq!(data.capacity(), MAX_CHUNK as usize);

        // A header announcing more than a chunk is refused before anything is allocated.
        let header = serde_json::to_vec(&BlobHeader::Chunk {
            size: 1 << 40,
            len: MAX_CHUNK + 1,
        })
        .unwrap();
        let mut big = (header.len() as u32).to_be_bytes().to_vec();
        big.extend_from_slice(&header);
        let e = read_blob_reply(&mut Cursor::new(&big)).await.unwrap_err();
        assert!(e.to_string().contains("exceeds the limit"), "{e}");
        // Bytes beyond what the header announced are refused too.
        let header = serde_json::to_vec(&BlobHeader::Chunk { size: 10, len: 2 }).unwrap();
        let mut lying = (header.len() as u32).to_be_bytes().to_vec();
        lying.extend_from_slice(&header);
        lying.extend_from_slice(&10u32.to_be_bytes());
        lying.extend_from_slice(b"0123456789");
        assert!(read_blob_reply(&mut Cursor::new(&lying)).await.is_err());
        // A stream cut inside an answer's bytes is an error, not a short chunk.
        let mut cut = Vec::new();
        write_blob_reply(&mut Cursor::new(&mut cut), &reply)
            .await
            .unwrap();
        cut.truncate(cut.len() - 3);
        assert!(read_blob_reply(&mut Cursor::new(&cut)).await.is_err());
    }

    #[tokio::test]
    async fn a_reused_buffer_holds_exactly_the_chunk_just_read() {
        let mut w = Cursor::new(Vec::new());
        for data in [
            b"0123456789".to_vec(),
            b"abcd".to_vec(),
            b"ABCDEFGHIJKL".to_vec(),
        ] {
            let reply = BlobReply::Chunk { size: 100, data };
            write_blob_reply(&mut w, &reply).await.unwrap();
        }
        let mut io = Cursor::new(w.into_inner());
        let mut buf = Vec::new();
        for want in [&b"0123456789"[..], b"abcd", b"ABCDEFGHIJKL"] {
            let reply = read_blob_reply_into(&mut io, &mut buf).await.unwrap();
            assert_eq!(
                reply,
                BlobReply::Chunk {
                    size: 100,
                    data: Vec::new()
                }
            );
            assert_eq!(buf, want);
        }
        // Other answers leave the buffer alone.
        let mut wire = Vec::new();
        write_blob_reply(&mut Cursor::new(&mut wire), &BlobReply::Missing)
            .await
            .unwrap();
        let reply = read_blob_reply_into(&mut Cursor::new(&wire), &mut buf)
            .await
            .unwrap();
        assert_eq!(reply, BlobReply::Missing);
        assert_eq!(buf, b"ABCDEFGHIJKL");
    }

    #[tokio::test]
    async fn requests_follow_one_another_and_a_closed_stream_ends_them() {
        let req = |offset| BlobRequest {
            id: BlobId::Blake3("a".repeat(64)),
            offset,
            len: MAX_CHUNK,
            tree: false,
        };
        let mut w = Cursor::new(Vec::new());
        for o in [0, MAX_CHUNK as u64] {
            write_blob_request(&mut w, &req(o)).await.unwrap();
        }
        let mut io = Cursor::new(w.into_inner());
        for o in [0, MAX_CHUNK as u64] {
            let got = read_blob_request(&mut io).await.unwrap().unwrap();
            assert_eq!(got.offset, o);
        }
        assert!(read_blob_request(&mut io).await.unwrap().is_none());
        // A request larger than its budget, and one cut in its length prefix.
        let mut big = ((MAX_BLOB_HEADER + 1) as u32).to_be_bytes().to_vec();
        big.resize(4 + MAX_BLOB_HEADER + 1, b' ');
        assert!(read_blob_request(&mut Cursor::new(&big)).await.is_err());
        assert!(
            read_blob_request(&mut Cursor::new(&[0u8, 0]))
                .await
                .is_err()
        );
    }
}
