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

/// A gossip message (topic `/image-factory/<cluster>/membership/1`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields)]
pub enum Gossip {
    /// A member was removed.
    Revocation {
        /// The signed revocation.
        revocation: Envelope,
    },
}

/// The membership topic of cluster `id`.
pub fn membership_topic(cluster: &str) -> String {
    format!(
        "/image-factory/{}/membership/1",
        &cluster[..cluster.len().min(16)]
    )
}
