//! What members say to each other: the hello exchanged right after the transport handshake
//! (the credential check) and the gossip messages.

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
