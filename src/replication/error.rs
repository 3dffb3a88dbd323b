//! The replication layer's error type.

use std::path::PathBuf;

use super::{invitation, membership};

/// Errors of the replication layer.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The node identity file could not be read or written.
    #[error("node identity {path}")]
    Identity {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The node identity file does not hold a libp2p key.
    #[error(
        "node identity {path}: not a libp2p key (move the file away to let a new identity, and so a new peer ID, be generated)"
    )]
    IdentityDecode {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: libp2p::identity::DecodingError,
    },
    /// A cluster file could not be read or written.
    #[error("cluster file {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A cluster file is not the JSON it should be.
    #[error("cluster file {path}: malformed")]
    FileJson {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A document could not be encoded.
    #[error("encoding the {what}")]
    Encode {
        /// What.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A node key could not be encoded.
    #[error("encoding a node identity")]
    KeyEncoding {
        /// The encoder's error.
        #[source]
        source: libp2p::identity::DecodingError,
    },
    /// The cluster signing key could not be used.
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
    /// A signed document did not verify.
    #[error(transparent)]
    Document(#[from] membership::DocumentError),
    /// The data directory's cluster record names another key than its signing key.
    #[error(
        "{record} names cluster {cluster}, but the signing key is that of cluster {key}: the signing key was replaced after joining; restore it (see docs/operator-guide.md, \"Clusters\")"
    )]
    KeyMismatch {
        /// The record file.
        record: PathBuf,
        /// The cluster it names.
        cluster: String,
        /// The cluster of the key found.
        key: String,
    },
    /// The node is in no cluster.
    #[error(
        "this node is not in a cluster: `image-factory cluster invite` founds one, `image-factory cluster join` joins one"
    )]
    NotInCluster,
    /// `cluster invite` on a node that was removed or whose credential expired.
    #[error("this node cannot invite: {why}; invite from a member in good standing")]
    CannotInvite {
        /// Why.
        why: String,
    },
    /// `cluster remove` named this node itself.
    #[error(
        "{peer} is this node; remove it from another member (or stop it and delete its data directory)"
    )]
    RemoveSelf {
        /// The peer ID.
        peer: libp2p::PeerId,
    },
    /// A peer ID does not parse.
    #[error("{text:?} is not a peer ID (like 12D3KooW…, as /status shows)")]
    BadPeerId {
        /// The text.
        text: String,
    },
    /// A multiaddr is not usable.
    #[error("{addr:?}: {why}")]
    BadAddress {
        /// The address.
        addr: String,
        /// What is wrong.
        why: String,
    },
    /// `--days` out of range.
    #[error("--days {days}: must be between 1 and {max}", max = invitation::MAX_DAYS)]
    InvalidDays {
        /// The value.
        days: u64,
    },
    /// A limit was reached.
    #[error("too many {what} (at most {max})")]
    TooMany {
        /// What.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// The invitation file is not a valid invitation.
    #[error("invalid invitation: {why}")]
    InvalidInvitation {
        /// What is wrong.
        why: String,
    },
    /// The invitation has expired.
    #[error(
        "the invitation expired at {}; ask a member for a new one (`image-factory cluster invite`)",
        crate::clock::rfc3339_utc(*at)
    )]
    InvitationExpired {
        /// When, Unix seconds.
        at: u64,
    },
    /// The invitation is for another cluster than `--expect-cluster`.
    #[error("the invitation is for cluster {found}, not {expected} (--expect-cluster)")]
    ClusterMismatch {
        /// The expected ID (prefix).
        expected: String,
        /// The invitation's cluster.
        found: String,
    },
    /// `cluster join` on a directory already in a cluster.
    #[error(
        "{dir} is already a member of cluster {cluster}; a node joins once (use a fresh data directory, or remove its cluster/ directory and keys/node-key after removing it from the cluster)"
    )]
    AlreadyMember {
        /// The data directory.
        dir: PathBuf,
        /// Its cluster.
        cluster: String,
    },
    /// A listen address could not be bound.
    #[error("cannot listen on {addr} (replication.listenAddrs)")]
    Listen {
        /// The multiaddr.
        addr: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The swarm could not be built.
    #[error("starting the peer swarm: {what}")]
    Swarm {
        /// What failed.
        what: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The swarm task is not running (the node is stopping).
    #[error("the peer swarm is not running")]
    Stopped,
    /// A member sent bytes that do not verify; they were discarded and counted.
    #[error("member {peer} sent {blob} with bytes that do not verify: {why}")]
    Corrupt {
        /// The member.
        peer: String,
        /// The blob asked for.
        blob: String,
        /// What did not match.
        why: String,
    },
    /// A member does not hold a blob asked of it.
    #[error("member {peer} does not hold {blob}")]
    NotHeld {
        /// The member.
        peer: String,
        /// The blob asked for.
        blob: String,
    },
    /// A member refused a blob stream: it serves as many as it may.
    #[error("member {peer} refused a blob stream: it serves as many as it may")]
    Busy {
        /// The member.
        peer: String,
    },
    /// No member was connected to ask for a blob.
    #[error("no member is connected to send {blob}")]
    NoMember {
        /// The blob.
        blob: String,
    },
    /// Every member a blob was asked of lacked it, failed or sent bytes that did not verify.
    #[error("no member could send {blob}")]
    NoSource {
        /// The blob.
        blob: String,
        /// Why the last member was dropped.
        #[source]
        last: Box<ReplicationError>,
    },
    /// A request to a member failed (timeout, connection closed, refused, bad answer).
    #[error("member {peer}: {why}")]
    PeerFailed {
        /// The member.
        peer: String,
        /// What failed.
        why: String,
    },
    /// A background task failed.
    #[error("a replication task failed: {0}")]
    Task(String),
    /// Writing a fetched blob failed.
    #[error("writing a fetched blob")]
    Write {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The blob or metadata store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A release record could not be stored.
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
}

impl ReplicationError {
    /// Whether the request that caused this error was at fault (bad input, wrong state).
    pub fn is_invalid_request(&self) -> bool {
        matches!(
            self,
            ReplicationError::NotInCluster
                | ReplicationError::RemoveSelf { .. }
                | ReplicationError::BadPeerId { .. }
                | ReplicationError::BadAddress { .. }
                | ReplicationError::InvalidDays { .. }
        )
    }
}
