//! What each member holds, for `image-factory peers` and `/status`: every member counts its
//! schematics, releases, models and blob bytes (off the loop, every [`HOLDINGS_EVERY`] and
//! soon after a member connects) and gossips the counts; the last counts heard from each
//! member are shown with its entry.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::EventLoop;
use super::releases::Job;
use crate::causes::Causes;
use crate::replication::protocol::{Gossip, Holdings};

/// How often a node counts and announces what it holds.
const HOLDINGS_EVERY: Duration = Duration::from_secs(30);
/// How soon after a member connects the counts are announced again.
const HOLDINGS_SOON: Duration = Duration::from_secs(2);
/// Most blobs counted (a larger store shows its bytes as at least this many blobs' worth).
const MAX_COUNTED_BLOBS: usize = 1_000_000;

/// The holdings side of the event loop's state.
pub(crate) struct HoldingsState {
    /// This node's last counts.
    pub(super) own: Option<Holdings>,
    /// The last counts each member announced.
    pub(super) heard: HashMap<PeerId, Holdings>,
    /// When the counts are due next.
    due: Instant,
    /// Whether a count is running.
    counting: bool,
}

impl HoldingsState {
    /// Counts due at once.
    pub(crate) fn new() -> Self {
        Self {
            own: None,
            heard: HashMap::new(),
            due: Instant::now(),
            counting: false,
        }
    }
}

/// Counts what the node holds (blocking: lists the stores).
fn count(
    schematics: u64,
    parts: &super::ReleaseParts,
    records: &crate::assets::RecordStore,
) -> Holdings {
    let releases = parts
        .releases
        .list()
        .map(|l| l.len() as u64)
        .unwrap_or_else(|e| {
            tracing::debug!(error = %Causes(&e), "releases not counted");
            0
        });
    let models = records
        .scan_raw()
        .map(|all| all.iter().filter(|(k, _)| super::models::is_key(k)).count() as u64)
        .unwrap_or(0);
    let bytes = parts
        .blobs
        .list_blobs()
        .map(|names| {
            names
                .iter()
                .take(MAX_COUNTED_BLOBS)
                .filter_map(|b| parts.blobs.path(b).ok())
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    Holdings {
        schematics,
        releases,
        models,
        bytes,
    }
}

impl EventLoop {
    /// Counts what this node holds when due (off the loop; the result comes back as a job).
    pub(super) fn holdings_round(&mut self, now: Instant) {
        if self.hold.counting || now < self.hold.due || self.sync.topic.is_none() {
            return;
        }
        self.hold.counting = true;
        self.hold.due = now + HOLDINGS_EVERY;
        let schematics = self.sync.count();
        let parts = self.rel.parts.clone();
        let records = self.rel.records();
        let jobs = self.rel.jobs();
        tokio::task::spawn_blocking(move || {
            let _ = jobs.send(Job::Holdings(count(schematics, &parts, &records)));
        });
    }

    /// A member connected: it hears this node's counts soon.
    pub(super) fn holdings_soon(&mut self) {
        self.hold.due = self.hold.due.min(Instant::now() + HOLDINGS_SOON);
    }

    /// This node's counts are in: keep and announce them.
    pub(super) fn holdings_counted(&mut self, holdings: Holdings) {
        self.hold.counting = false;
        self.hold.own = Some(holdings);
        let Some(topic) = self.sync.topic.clone() else {
            return;
        };
        let Ok(bytes) = serde_json::to_vec(&Gossip::Holdings { holdings }) else {
            return;
        };
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            tracing::debug!(error = %e, "holdings not announced (no member connected)");
        }
    }

    /// A member announced its counts (kept while it stays a member: dropped on refusal).
    pub(super) fn holdings_heard(&mut self, from: PeerId, holdings: Holdings) {
        if self.is_member(&from) {
            self.hold.heard.insert(from, holdings);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdings_travel_as_gossip_and_unknown_fields_are_refused() {
        let h = Holdings {
            schematics: 3,
            releases: 1,
            models: 2,
            bytes: 123_456,
        };
        let text = serde_json::to_string(&Gossip::Holdings { holdings: h }).unwrap();
        assert!(text.contains(r#""type":"holdings""#), "{text}");
        match serde_json::from_str::<Gossip>(&text).unwrap() {
            Gossip::Holdings { holdings } => assert_eq!(holdings, h),
            other => panic!("{other:?}"),
        }
        let extra = text.replace(r#""bytes":123456"#, r#""bytes":1,"evil":2"#);
        assert!(serde_json::from_str::<Gossip>(&extra).is_err());
    }
}
