//! Peer replication: the libp2p swarm a node runs when `replication.enabled` is set, and the
//! cluster membership that decides which peers take part.
//!
//! * [`identity`]: the node's persisted ed25519 identity (its peer ID);
//! * [`membership`]: credentials and revocations signed with the cluster key, and the check
//!   of a peer's credential right after the handshake;
//! * [`cluster`]: a data directory's cluster state (`<dataDir>/cluster/`), shared by the
//!   offline CLI, the admin API and the swarm;
//! * [`invitation`]: `cluster invite` and `cluster join`;
//! * `swarm`: the one task that owns the swarm, and [`Replication`], the cloneable handle
//!   the rest of the program talks to it through (typed commands, oneshot replies);
//! * `event_loop`: that task — membership, schematic and release anti-entropy, the model
//!   protocol, provider records and build leases;
//! * `kad_gate`: Kademlia answered for members only; `admitted`: the members it judged,
//!   read by the blob streams too;
//! * `places`: bounds on work done for members at once (in all, and per member);
//! * `blob_stream`: the blob protocol's streams, opened by transfers and answered (from
//!   `chunks`: a stored blob's chunks and tree pages) outside the event loop;
//! * `transfer`: blob fetches striped over members, verified chunk by chunk against the
//!   blob's tree (`tree`), resumed from the others when a member fails;
//! * `release_fetch`: a release's blobs, then its record;
//! * `find`: [`ClusterPeers`], find before build for the asset pipeline;
//! * `leases`: the build-lease table;
//! * `rendezvous`: which members hold a model's copies (`replication.factor`);
//! * [`factory_identity`]: the factory URL that goes into model bytes and cache keys.
//! * `error`: [`ReplicationError`], the layer's error enum.

mod admitted;
mod blob_stream;
mod chunk_pool;
mod chunks;
pub mod cluster;
mod error;
mod event_loop;
mod files;
mod find;
pub mod identity;
pub mod invitation;
mod kad_gate;
mod leases;
pub mod membership;
mod metrics;
mod partial;
mod places;
pub mod protocol;
mod release_fetch;
mod rendezvous;
mod sources;
mod swarm;
mod test_settings;
mod transfer;
mod tree;

pub use cluster::{Cluster, ClusterRecord, KnownPeer, Membership, Removed};
pub use error::ReplicationError;
pub use event_loop::ReleaseParts;
pub use files::read_capped;
pub use find::ClusterPeers;
pub use invitation::{Issued, Joined};
pub use membership::{DocumentError, Envelope, Refusal};
pub use swarm::{SwarmWorker, start};
pub use test_settings::{
    ANSWER_DELAY_ENV, BLOB_ANSWER_DELAY_ENV, BUILD_DELAY_ENV, IGNORE_HELLOS_ENV,
    PLACEMENT_SETTLE_ENV, WELCOME_STRANGERS_ENV,
};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// An address worth dialing: a concrete IP (or DNS name) and port, no `/p2p/` part.
pub fn dialable(a: &libp2p::Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    let mut ip = false;
    let mut port = false;
    for p in a.iter() {
        match p {
            Protocol::Ip4(i) => ip = !i.is_unspecified(),
            Protocol::Ip6(i) => ip = !i.is_unspecified(),
            Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) => ip = true,
            Protocol::Tcp(n) | Protocol::Udp(n) => port = n != 0,
            Protocol::P2p(_) => return false,
            _ => {}
        }
    }
    ip && port
}

/// The factory identity: what goes into a model's bytes (the schematic extension's author) and
/// its cache key, the one source of both. On a cluster member it is the cluster's factory URL
/// (the founder's `http.externalURL` when it founded the cluster, carried by every invitation),
/// so every member builds the same bytes under the same key; on a standalone node it is its own
/// `http.externalURL`, as before clusters. What must point at the node itself (PXE scripts,
/// `/status`, registry references) keeps using the node's own URL.
pub fn factory_identity(config: &crate::config::Config, cluster: Option<&Membership>) -> String {
    match cluster {
        Some(m) if !m.record.factory_url.is_empty() => m.record.factory_url.clone(),
        _ => config.http.external_url.clone(),
    }
}

/// Parses a peer ID given by an operator.
pub fn parse_peer_id(text: &str) -> Result<libp2p::PeerId, ReplicationError> {
    text.trim()
        .parse()
        .map_err(|_| ReplicationError::BadPeerId {
            text: text.to_string(),
        })
}

/// What the swarm reports in `GET /status` (`replication`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationStatus {
    /// Whether the swarm runs.
    pub enabled: bool,
    /// This node's peer ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
    /// Bound listen addresses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listen_addrs: Vec<String>,
    /// The cluster, if this node is in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
    /// What this node holds, as it last counted (and announced to the members).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holds: Option<protocol::Holdings>,
    /// Peers known in this run (members, refused peers, peers being checked).
    pub peers: Vec<PeerStatus>,
    /// Blobs this node is fetching from members now, oldest first.
    pub transfers: Vec<TransferStatus>,
}

impl ReplicationStatus {
    /// The status of a node whose swarm does not run.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            peer_id: None,
            listen_addrs: Vec::new(),
            cluster: None,
            holds: None,
            peers: Vec::new(),
            transfers: Vec::new(),
        }
    }
}

/// A blob this node is fetching from members, as `/status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TransferStatus {
    /// The blob's BLAKE3 (its name in the store).
    pub blob: String,
    /// What it is fetched for: `release VERSION` or `model KEY`.
    pub purpose: String,
    /// Its size in bytes.
    pub size: u64,
    /// Bytes received, verified and written so far.
    pub received: u64,
    /// When its transfer started (RFC 3339).
    pub started_at: String,
}

/// The cluster as `/status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Cluster ID.
    pub id: String,
    /// The site's factory URL.
    #[serde(rename = "factoryURL")]
    pub factory_url: String,
    /// Whether this node holds a credential.
    pub member: bool,
    /// When this node's credential expires (RFC 3339; absent = until removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_expires: Option<String>,
    /// Set when this node was removed from the cluster.
    pub removed: bool,
    /// Members removed so far.
    pub revocations: usize,
}

/// One peer as `/status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    /// Peer ID.
    pub peer_id: String,
    /// Its known addresses.
    pub addrs: Vec<String>,
    /// Whether a connection is open.
    pub connected: bool,
    /// Whether it is connected and answered a ping within the silence bound (three ping
    /// intervals); a connected member that does not (a stopped or hung process) is silent:
    /// no source of models, and its build leases count for nothing.
    pub responding: bool,
    /// When it last answered a ping or opened a connection (RFC 3339; connected peers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_answer: Option<String>,
    /// Round-trip time of the last ping, milliseconds.
    pub rtt_ms: Option<f64>,
    /// `member`, `pending` (credential being checked), `refused` (by this node),
    /// `refusedUs` (it refused this node) or `known` (remembered, not connected this run).
    pub state: &'static str,
    /// Why it was refused, or why it refused this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What it holds, as it last announced (members only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holds: Option<protocol::Holdings>,
    /// Blob bytes received from it in this run (each chunk verified).
    pub bytes_received: u64,
    /// Blob bytes sent to it in this run.
    pub bytes_sent: u64,
}

/// Requests to the swarm task.
pub(crate) enum Command {
    /// The status for `/status`.
    Status(oneshot::Sender<ReplicationStatus>),
    /// A schematic was created on this node.
    SchematicCreated(String),
    /// A release was imported on this node.
    ReleaseImported(String, Option<crate::catalog::Revision>),
    /// Members that provide a cache key.
    Providers {
        /// Cache key.
        key: String,
        /// The members.
        reply: oneshot::Sender<Vec<libp2p::PeerId>>,
    },
    /// What is known of a key's build.
    Lease {
        /// Cache key.
        key: String,
        /// The view.
        reply: oneshot::Sender<event_loop::LeaseView>,
    },
    /// Claim a key's build unless a member holds it (or built it and still has it).
    Claim {
        /// Cache key.
        key: String,
        /// A member whose finished build this node could not fetch.
        lost: Option<libp2p::PeerId>,
        /// The view after.
        reply: oneshot::Sender<event_loop::LeaseView>,
    },
    /// This node's build of a key ended.
    Built {
        /// Cache key.
        key: String,
        /// Whether it succeeded.
        ok: bool,
    },
    /// This node holds a key's model (fetched).
    Provide(String),
    /// Ask a member for a model's signed record.
    ModelRecord {
        /// The member.
        peer: libp2p::PeerId,
        /// Cache key.
        key: String,
        /// Its answer, or why there is none.
        reply: oneshot::Sender<Result<protocol::ModelReply, String>>,
    },
    /// The members connected now.
    Members(oneshot::Sender<Vec<libp2p::PeerId>>),
}

/// A handle on the running swarm (cheap to clone).
#[derive(Clone)]
pub struct Replication {
    tx: mpsc::Sender<Command>,
    peer_id: libp2p::PeerId,
    /// The peers judged members (see `kad_gate`).
    admitted: admitted::Admitted,
    metrics: metrics::ReplicationMetrics,
    /// Trees of blobs this node serves (see `tree`), shared with its transfers.
    trees: std::sync::Arc<chunks::TreeCache>,
    /// Blobs this node is fetching, served to members meanwhile (see `partial`).
    partials: std::sync::Arc<partial::PartialBlobs>,
    /// Opens blob streams to members (see `blob_stream`).
    streams: libp2p_stream::Control,
    /// Members this node's transfers found too slow lately (see `sources`).
    slow: std::sync::Arc<sources::SlowMembers>,
    /// The chunk buffers this node's transfers share (see `chunk_pool`).
    chunk_pool: std::sync::Arc<chunk_pool::ChunkPool>,
    /// The replication factor and the members its copies are placed over.
    placement: std::sync::Arc<rendezvous::Placement>,
    /// Set when a schematic's notice could not reach the swarm: its next round re-reads the
    /// store's IDs, so the schematic is offered to members all the same.
    unannounced: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Replication {
    /// This node's peer ID.
    pub fn peer_id(&self) -> libp2p::PeerId {
        self.peer_id
    }

    /// The swarm's status.
    pub async fn status(&self) -> Result<ReplicationStatus, ReplicationError> {
        let mut status = self.ask(Command::Status).await?;
        status.transfers = self.partials.transfers();
        Ok(status)
    }

    /// Announces a schematic created on this node (never waits: when the swarm is busy it
    /// re-reads the store's IDs in its next round, and anti-entropy carries the schematic).
    pub fn schematic_created(&self, id: &str) {
        if let Err(e) = self.tx.try_send(Command::SchematicCreated(id.to_string())) {
            self.unannounced
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(schematic = %id, error = %e, "schematic not announced now; the next round carries it");
        }
    }

    /// Announces a release imported on this node, of record revision `revision` (never waits,
    /// like [`Replication::schematic_created`]).
    pub fn release_imported(&self, version: &str, revision: Option<&crate::catalog::Revision>) {
        if let Err(e) = self.tx.try_send(Command::ReleaseImported(
            version.to_string(),
            revision.cloned(),
        )) {
            tracing::debug!(version = %version, error = %e, "release not announced now; the next round carries it");
        }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ReplicationError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| ReplicationError::Stopped)?;
        rx.await.map_err(|_| ReplicationError::Stopped)
    }

    /// The members that provide cache key `key` (a Kademlia lookup, bounded by its timeout).
    pub(crate) async fn providers(
        &self,
        key: &str,
    ) -> Result<Vec<libp2p::PeerId>, ReplicationError> {
        let key = key.to_string();
        self.ask(|reply| Command::Providers { key, reply }).await
    }

    /// What is known of `key`'s build in the cluster.
    pub(crate) async fn lease(&self, key: &str) -> Result<event_loop::LeaseView, ReplicationError> {
        let key = key.to_string();
        self.ask(|reply| Command::Lease { key, reply }).await
    }

    /// Claims `key`'s build unless a member holds it, or built it and is not `lost` (a member
    /// this node could not fetch the model from).
    pub(crate) async fn claim(
        &self,
        key: &str,
        lost: Option<libp2p::PeerId>,
    ) -> Result<event_loop::LeaseView, ReplicationError> {
        let key = key.to_string();
        self.ask(|reply| Command::Claim { key, lost, reply }).await
    }

    /// A member's signed record of `key`.
    pub(crate) async fn model_record(
        &self,
        peer: libp2p::PeerId,
        key: &str,
    ) -> Result<protocol::ModelReply, ReplicationError> {
        let key = key.to_string();
        self.ask(|reply| Command::ModelRecord { peer, key, reply })
            .await?
            .map_err(|why| ReplicationError::PeerFailed {
                peer: peer.to_string(),
                why,
            })
    }

    /// Tells the swarm without waiting. A full channel does not drop the message (an ended
    /// build left unsaid would be renewed as a lease for ever): a task delivers it once
    /// there is room. Callers are bounded (one per build or fetch that ends).
    fn tell(&self, cmd: Command) {
        match self.tx.try_send(cmd) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(cmd)) => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(cmd).await;
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("replication command dropped: the swarm has stopped");
            }
        }
    }

    /// The members connected now.
    pub(crate) async fn members(&self) -> Result<Vec<libp2p::PeerId>, ReplicationError> {
        self.ask(Command::Members).await
    }

    /// `first`, then every other member connected now: who to ask for a blob `first` has
    /// (`first` left out once it is no longer connected: a dead member costs no dial).
    pub(crate) async fn sources(&self, first: libp2p::PeerId) -> Vec<libp2p::PeerId> {
        let members = self.members().await.unwrap_or_default();
        let mut out = Vec::with_capacity(members.len());
        if members.contains(&first) {
            out.push(first);
        }
        out.extend(members.into_iter().filter(|p| *p != first));
        out
    }

    /// Whether `peer` is judged a member (its credential checked, not refused since).
    pub(crate) fn is_member(&self, peer: &libp2p::PeerId) -> bool {
        self.admitted.contains(peer)
    }

    /// Multiaddrs (with `/p2p/`) at which members reach this node and the members it is
    /// connected to: what an invitation lists to dial first.
    pub async fn bootstrap_addrs(&self) -> Result<Vec<String>, ReplicationError> {
        let st = self.status().await?;
        let mut out: Vec<String> = st
            .listen_addrs
            .iter()
            .map(|a| format!("{a}/p2p/{}", self.peer_id))
            .collect();
        for p in st.peers.iter().filter(|p| p.state == "member") {
            out.extend(p.addrs.iter().map(|a| format!("{a}/p2p/{}", p.peer_id)));
        }
        Ok(out)
    }
}
