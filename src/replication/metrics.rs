//! Metrics of the swarm: connected members and refused peers by reason, what moved to and
//! from each member, and how long fetches took.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, SharedString};

use super::membership::Refusal;

const META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// `image_factory_replication_peers_refused_total{reason}`.
pub const REFUSED: &str = "image_factory_replication_peers_refused_total";
/// `image_factory_replication_members_connected`.
pub const CONNECTED: &str = "image_factory_replication_members_connected";
/// `image_factory_replication_members_silent`.
pub const SILENT: &str = "image_factory_replication_members_silent";
/// `image_factory_replication_peer_bytes_received_total{peer}`.
pub const PEER_RECEIVED: &str = "image_factory_replication_peer_bytes_received_total";
/// `image_factory_replication_peer_bytes_sent_total{peer}`.
pub const PEER_SENT: &str = "image_factory_replication_peer_bytes_sent_total";
/// Most members with their own byte counters (beyond, a member counts under `peer="other"`).
const MAX_PEER_LABELS: usize = 256;

/// Per-member counters, registered on first use.
#[derive(Default)]
struct PeerCounters {
    received: HashMap<libp2p::PeerId, Counter>,
    sent: HashMap<libp2p::PeerId, Counter>,
    /// Bytes received from and sent to each member (for `/status`).
    totals: HashMap<libp2p::PeerId, (u64, u64)>,
}

/// Handles to the swarm's metrics.
#[derive(Clone)]
pub struct ReplicationMetrics {
    refused: BTreeMap<&'static str, Counter>,
    /// Members connected and answering now.
    pub connected: Gauge,
    /// Members connected that answer no ping.
    pub silent: Gauge,
    /// Schematics received from members and stored.
    pub schematics_received: Counter,
    /// Schematics from members that failed their check.
    pub schematics_rejected: Counter,
    /// Releases received from members, verified and stored.
    pub releases_received: Counter,
    /// Records and blobs from members that did not verify (discarded).
    pub verification_failures: Counter,
    /// Blob bytes received from members (verified).
    pub bytes_received: Counter,
    /// Blob bytes sent to members.
    pub bytes_sent: Counter,
    /// Models fetched from members instead of built here.
    pub builds_avoided: Counter,
    /// Misses that waited for a member's build.
    pub lease_waits: Counter,
    /// Chunks from members that did not verify (the member dropped from that transfer).
    pub chunks_rejected: Counter,
    /// Asks sent to members chosen to hold a copy of a model (each try).
    pub pushes_sent: Counter,
    /// Models fetched and stored because a member asked.
    pub pushes_received: Counter,
    /// Asks that failed: given up (undelivered or refused 30 times), dropped while waiting,
    /// or received and not fetched.
    pub pushes_failed: Counter,
    /// Provider records (a peer holds a model) announced by members and stored.
    pub providers_stored: Counter,
    /// Provider records not stored: from a non-member, or not for a model's key.
    pub providers_refused: Counter,
    /// Members' requests answered "busy": too many being answered at once.
    pub requests_busy: Counter,
    /// Seconds a blob fetch from members took (verified and stored).
    pub fetch_seconds: Histogram,
    recorder: Arc<dyn Recorder + Send + Sync>,
    peers: Arc<Mutex<PeerCounters>>,
}

impl ReplicationMetrics {
    /// Registers every metric with `recorder` (so all appear at zero).
    pub fn new(recorder: &Arc<dyn Recorder + Send + Sync>) -> Self {
        let r = recorder.as_ref();
        r.describe_counter(
            REFUSED.into(),
            None,
            SharedString::const_str(
                "Peers refused right after the handshake (not a member, expired, removed, …).",
            ),
        );
        let refused = Refusal::LABELS
            .iter()
            .map(|label| {
                let key = Key::from_parts(REFUSED, vec![Label::new("reason", *label)]);
                let c = r.register_counter(&key, &META);
                c.absolute(0);
                (*label, c)
            })
            .collect();
        r.describe_gauge(
            CONNECTED.into(),
            None,
            SharedString::const_str("Cluster members connected and answering pings now."),
        );
        let connected = r.register_gauge(&Key::from_static_name(CONNECTED), &META);
        connected.set(0.0);
        r.describe_gauge(
            SILENT.into(),
            None,
            SharedString::const_str(
                "Cluster members still connected that answered no ping lately (stopped or hung).",
            ),
        );
        let silent = r.register_gauge(&Key::from_static_name(SILENT), &META);
        silent.set(0.0);
        let counter = |name: &'static str, help: &'static str| {
            r.describe_counter(name.into(), None, SharedString::const_str(help));
            let c = r.register_counter(&Key::from_static_name(name), &META);
            c.absolute(0);
            c
        };
        for (name, help) in [
            (
                PEER_RECEIVED,
                "Blob bytes received from a member (each chunk verified), by member peer ID.",
            ),
            (PEER_SENT, "Blob bytes sent to a member, by member peer ID."),
        ] {
            r.describe_counter(name.into(), None, SharedString::const_str(help));
        }
        r.describe_histogram(
            "image_factory_replication_fetch_seconds".into(),
            Some(metrics::Unit::Seconds),
            SharedString::const_str(
                "Time of a blob fetch from members, from the first request to the verified blob stored.",
            ),
        );
        let fetch_seconds = r.register_histogram(
            &Key::from_static_name("image_factory_replication_fetch_seconds"),
            &META,
        );
        Self {
            refused,
            connected,
            silent,
            fetch_seconds,
            recorder: Arc::clone(recorder),
            peers: Arc::default(),
            chunks_rejected: counter(
                "image_factory_replication_chunks_rejected_total",
                "Chunks from members that did not verify against the blob's tree; the member was dropped from that transfer.",
            ),
            schematics_received: counter(
                "image_factory_replication_schematics_received_total",
                "Schematics received from members, checked and stored.",
            ),
            schematics_rejected: counter(
                "image_factory_replication_schematics_rejected_total",
                "Schematics from members rejected: not their ID's canonical bytes.",
            ),
            releases_received: counter(
                "image_factory_replication_releases_received_total",
                "Releases received from members: record verified, every blob verified and stored.",
            ),
            verification_failures: counter(
                "image_factory_replication_verification_failures_total",
                "Records and blobs from members that did not verify against the cluster key or their hash; discarded.",
            ),
            bytes_received: counter(
                "image_factory_replication_blob_bytes_received_total",
                "Blob bytes received from members and stored after verification.",
            ),
            bytes_sent: counter(
                "image_factory_replication_blob_bytes_sent_total",
                "Blob bytes sent to members.",
            ),
            builds_avoided: counter(
                "image_factory_replication_builds_avoided_total",
                "Models fetched from a member (or its finished build) instead of built here.",
            ),
            pushes_sent: counter(
                "image_factory_replication_pushes_sent_total",
                "Asks to hold a copy of a model (built here, or held here when the members changed), sent to the members chosen by rendezvous hashing (replication.factor); each try counted.",
            ),
            pushes_received: counter(
                "image_factory_replication_pushes_received_total",
                "Models fetched (record and bytes verified) and stored because the member that built them asked.",
            ),
            pushes_failed: counter(
                "image_factory_replication_pushes_failed_total",
                "Asks to hold a copy that failed: given up after 30 tries (undelivered or refused), dropped while waiting, or received and not fetched.",
            ),
            lease_waits: counter(
                "image_factory_replication_lease_waits_total",
                "Local misses that waited for a member's build (its lease) instead of building.",
            ),
            providers_stored: counter(
                "image_factory_replication_provider_records_stored_total",
                "Provider records (a member holds a model) announced by members over Kademlia and stored.",
            ),
            requests_busy: counter(
                "image_factory_replication_requests_busy_total",
                "Members' schematic, release and model requests answered busy: as many were being answered as this node allows, in all or for that member.",
            ),
            providers_refused: counter(
                "image_factory_replication_provider_records_refused_total",
                "Provider records not stored: announced by a non-member, or for a key that is not a model's.",
            ),
        }
    }

    /// Counts `n` blob bytes received from `peer`.
    pub fn peer_bytes_received(&self, peer: &libp2p::PeerId, n: u64) {
        self.peer_counter(peer, true, n).increment(n);
    }

    /// Counts `n` blob bytes sent to `peer`.
    pub fn peer_bytes_sent(&self, peer: &libp2p::PeerId, n: u64) {
        self.peer_counter(peer, false, n).increment(n);
    }

    /// Bytes received from (`received`) or sent to `peer` in this run.
    pub fn peer_total(&self, peer: &libp2p::PeerId, received: bool) -> u64 {
        let Ok(g) = self.peers.lock() else {
            return 0;
        };
        g.totals
            .get(peer)
            .map(|(r, s)| if received { *r } else { *s })
            .unwrap_or(0)
    }

    fn peer_counter(&self, peer: &libp2p::PeerId, received: bool, n: u64) -> Counter {
        let name = if received { PEER_RECEIVED } else { PEER_SENT };
        let Ok(mut g) = self.peers.lock() else {
            return Counter::noop();
        };
        if g.totals.len() < MAX_PEER_LABELS || g.totals.contains_key(peer) {
            let t = g.totals.entry(*peer).or_default();
            if received {
                t.0 += n;
            } else {
                t.1 += n;
            }
        }
        let map = if received {
            &mut g.received
        } else {
            &mut g.sent
        };
        if let Some(c) = map.get(peer) {
            return c.clone();
        }
        let label = if map.len() < MAX_PEER_LABELS {
            peer.to_string()
        } else {
            "other".to_string()
        };
        let key = Key::from_parts(name, vec![Label::new("peer", label)]);
        let c = self.recorder.register_counter(&key, &META);
        if map.len() < MAX_PEER_LABELS {
            map.insert(*peer, c.clone());
        }
        c
    }

    /// Counts one refusal.
    pub fn refused(&self, why: &Refusal) {
        if let Some(c) = self.refused.get(why.label()) {
            c.increment(1);
        }
    }
}
