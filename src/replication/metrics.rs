//! Metrics of the swarm: connected members and refused peers by reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use metrics::{Counter, Gauge, Key, Label, Level, Metadata, Recorder, SharedString};

use super::membership::Refusal;

const META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// `image_factory_replication_peers_refused_total{reason}`.
pub const REFUSED: &str = "image_factory_replication_peers_refused_total";
/// `image_factory_replication_members_connected`.
pub const CONNECTED: &str = "image_factory_replication_members_connected";

/// Handles to the swarm's metrics.
#[derive(Clone)]
pub struct ReplicationMetrics {
    refused: BTreeMap<&'static str, Counter>,
    /// Members connected now.
    pub connected: Gauge,
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
            SharedString::const_str("Cluster members connected now."),
        );
        let connected = r.register_gauge(&Key::from_static_name(CONNECTED), &META);
        connected.set(0.0);
        let counter = |name: &'static str, help: &'static str| {
            r.describe_counter(name.into(), None, SharedString::const_str(help));
            let c = r.register_counter(&Key::from_static_name(name), &META);
            c.absolute(0);
            c
        };
        Self {
            refused,
            connected,
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
            lease_waits: counter(
                "image_factory_replication_lease_waits_total",
                "Local misses that waited for a member's build (its lease) instead of building.",
            ),
        }
    }

    /// Counts one refusal.
    pub fn refused(&self, why: &Refusal) {
        if let Some(c) = self.refused.get(why.label()) {
            c.increment(1);
        }
    }
}
