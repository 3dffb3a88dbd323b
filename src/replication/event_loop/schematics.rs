//! Schematics replicate to every member: a new schematic is announced by gossip (its ID) and
//! fetched from its announcer; on every new member connection, and once a minute with each
//! member, the ID sets are compared (count and digest first, then pages of sorted IDs) and what
//! is missing is fetched. A received schematic is stored only when its bytes hash to its ID.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::gossipsub::IdentTopic;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use tokio::sync::mpsc;

use super::EventLoop;
use crate::causes::Causes;
use crate::replication::protocol::{
    Gossip, MAX_GET, MAX_IDS_PAGE, SCHEMATIC_BATCH_BYTES, SchematicItem, SchematicReply,
    SchematicRequest,
};
use crate::schematic;
use crate::store::SchematicStore;

/// How often the ID sets are compared with each connected member.
pub(super) const SYNC_EVERY: Duration = Duration::from_secs(60);
/// Most schematics being fetched at once.
const MAX_FETCHING: usize = 256;

/// Work done off the event loop, reported back to it.
pub(crate) enum Job {
    /// An answer to a `Get`, read from the store.
    Serve {
        /// Where it goes.
        channel: ResponseChannel<SchematicReply>,
        /// The answer.
        reply: SchematicReply,
    },
    /// The store's IDs, re-read because a schematic created here was not announced.
    Listed(Vec<String>),
    /// A received schematic was checked and stored (`Ok(created)`) or rejected.
    Stored {
        /// Its ID.
        id: String,
        /// Who sent it.
        from: PeerId,
        /// What made this node ask for it.
        via: Via,
        /// The outcome.
        result: Result<bool, String>,
    },
}

/// What made this node fetch a schematic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Via {
    /// A member announced it.
    Announcement,
    /// Comparing ID sets found it missing.
    AntiEntropy,
}

impl Via {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Via::Announcement => "announcement",
            Via::AntiEntropy => "anti-entropy",
        }
    }
}

/// The schematic side of the event loop's state.
pub(crate) struct SchematicSync {
    store: SchematicStore,
    ids: BTreeSet<String>,
    digest: Option<(u64, String)>,
    /// Schematics being fetched, and what made this node ask.
    fetching: HashMap<String, Via>,
    gets: HashMap<OutboundRequestId, Vec<String>>,
    /// Pages of IDs asked for: where each starts (after which ID).
    walks: HashMap<OutboundRequestId, Option<String>>,
    /// Schematics a member was too busy to send, asked again in the next round.
    busy: Vec<(PeerId, String, Via)>,
    /// Page walks paused because [`MAX_FETCHING`] were being fetched: with which member, and
    /// after which ID they go on once half the fetches are done.
    paused: HashMap<PeerId, Option<String>>,
    jobs: mpsc::UnboundedSender<Job>,
    /// Set when a schematic created here did not reach the event loop (see
    /// `Replication::schematic_created`).
    unannounced: Arc<AtomicBool>,
    pub(super) topic: Option<IdentTopic>,
    pub(super) last_round: Instant,
}

impl SchematicSync {
    /// The state over `store`, whose IDs are `ids`; finished work goes to `jobs`; `unannounced`
    /// says when the store holds schematics `ids` may lack.
    pub(crate) fn new(
        store: SchematicStore,
        ids: Vec<String>,
        jobs: mpsc::UnboundedSender<Job>,
        unannounced: Arc<AtomicBool>,
    ) -> Self {
        Self {
            store,
            ids: ids.into_iter().collect(),
            digest: None,
            fetching: HashMap::new(),
            gets: HashMap::new(),
            walks: HashMap::new(),
            busy: Vec::new(),
            paused: HashMap::new(),
            jobs,
            unannounced,
            topic: None,
            last_round: Instant::now(),
        }
    }

    /// Schematics held.
    pub(super) fn count(&self) -> u64 {
        self.ids.len() as u64
    }

    fn digest(&mut self) -> (u64, String) {
        if let Some(d) = &self.digest {
            return d.clone();
        }
        let mut h = crate::sha256::Sha256::new();
        for id in &self.ids {
            h.update(id.as_bytes());
            h.update(b"\n");
        }
        let d = (self.ids.len() as u64, h.finalize_hex());
        self.digest = Some(d.clone());
        d
    }

    fn insert(&mut self, id: String) {
        if self.ids.insert(id) {
            self.digest = None;
        }
    }

    /// Re-reads the store's IDs off the loop when a schematic created here was not announced
    /// (they come back as [`Job::Listed`]).
    fn relist(&self) {
        if !self.unannounced.swap(false, Ordering::Relaxed) {
            return;
        }
        let (store, jobs) = (self.store.clone(), self.jobs.clone());
        tokio::task::spawn_blocking(move || match store.ids() {
            Ok(ids) => {
                let _ = jobs.send(Job::Listed(ids));
            }
            Err(e) => tracing::warn!(error = %Causes(&e), "cannot list the schematics"),
        });
    }

    fn page(&self, after: Option<&str>, limit: usize) -> (Vec<String>, bool) {
        let start = match after {
            Some(a) => Bound::Excluded(a.to_string()),
            None => Bound::Unbounded,
        };
        let limit = limit.clamp(1, MAX_IDS_PAGE);
        let mut it = self.ids.range((start, Bound::Unbounded));
        let ids: Vec<String> = it.by_ref().take(limit).cloned().collect();
        (ids, it.next().is_some())
    }
}

/// Whether `yaml` is the schematic `id`: its SHA-256 is the ID (so no member can plant other
/// bytes under an ID). They are not parsed again: the node that created the schematic holds
/// these bytes, and a few canonical forms do not read back to themselves (see design.md,
/// "Known divergence"), which a stricter check would keep from ever replicating.
pub(crate) fn check_schematic(id: &str, yaml: &str) -> Result<(), String> {
    if !schematic::is_valid_id(id) {
        return Err(format!("{id:?} is not a schematic ID"));
    }
    let hashed = schematic::id_of(yaml);
    if hashed != id {
        return Err(format!("its content hashes to {hashed}"));
    }
    Ok(())
}

impl EventLoop {
    /// Subscribes to the schematic topic of the cluster (once in one).
    pub(super) fn subscribe_schematics(&mut self, cluster: &str) {
        if self.sync.topic.is_some() {
            return;
        }
        let topic = IdentTopic::new(crate::replication::protocol::schematics_topic(cluster));
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.subscribe(&topic) {
            tracing::warn!(error = %e, "cannot subscribe to the schematic topic");
        }
        self.sync.topic = Some(topic);
    }

    /// A schematic was created here: remember it and announce it.
    pub(super) fn schematic_created(&mut self, id: String) {
        self.sync.insert(id.clone());
        let Some(topic) = self.sync.topic.clone() else {
            return;
        };
        let Ok(bytes) = serde_json::to_vec(&Gossip::Schematic { id }) else {
            return;
        };
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            tracing::debug!(error = %e, "schematic not announced (no member connected)");
        }
    }

    /// Compares ID sets with `peer` (a member just connected, or the periodic round), and
    /// its releases with this node's.
    pub(super) fn sync_schematics_with(&mut self, peer: PeerId) {
        self.swarm
            .behaviour_mut()
            .schematics
            .send_request(&peer, SchematicRequest::Digest);
        self.sync_releases_with(peer);
    }

    /// Once a minute, compares ID sets with every connected member (heals lost gossip).
    pub(super) fn schematic_round(&mut self, now: Instant) {
        self.sync.relist();
        self.ask_busy_again();
        if now.duration_since(self.sync.last_round) < SYNC_EVERY {
            return;
        }
        self.sync.last_round = now;
        let members: Vec<PeerId> = self.connected_members().into_iter().collect();
        for p in members {
            self.sync_schematics_with(p);
        }
    }

    /// `from` announced schematic `id` (first published by `source`): fetch it if missing.
    pub(super) fn schematic_announced(&mut self, from: PeerId, source: Option<PeerId>, id: String) {
        if !schematic::is_valid_id(&id) || self.sync.ids.contains(&id) {
            return;
        }
        // Ask the node that created it when it is a connected member; else the forwarder.
        let ask = source
            .filter(|s| self.connected_members().contains(s))
            .unwrap_or(from);
        self.fetch(ask, vec![id], Via::Announcement);
    }

    /// Asks `peer` for the `ids` not held and not being fetched already, as many as
    /// [`MAX_FETCHING`] leaves room for; returns the position in `ids` of the first one left
    /// out for want of room.
    fn fetch(&mut self, peer: PeerId, ids: Vec<String>, via: Via) -> Option<usize> {
        let room = MAX_FETCHING.saturating_sub(self.sync.fetching.len());
        let mut wanted: Vec<String> = Vec::new();
        let mut left_out = None;
        for (i, id) in ids.into_iter().enumerate() {
            if self.sync.ids.contains(&id) || self.sync.fetching.contains_key(&id) {
                continue;
            }
            if wanted.len() == room {
                left_out = Some(i);
                break;
            }
            wanted.push(id);
        }
        for chunk in wanted.chunks(MAX_GET) {
            let request = self.swarm.behaviour_mut().schematics.send_request(
                &peer,
                SchematicRequest::Get {
                    ids: chunk.to_vec(),
                },
            );
            self.sync
                .fetching
                .extend(chunk.iter().map(|id| (id.clone(), via)));
            self.sync.gets.insert(request, chunk.to_vec());
        }
        left_out
    }

    /// Asks `peer` for the page of IDs after `after`.
    fn ask_ids(&mut self, peer: PeerId, after: Option<String>) {
        let request = self.swarm.behaviour_mut().schematics.send_request(
            &peer,
            SchematicRequest::Ids {
                after: after.clone(),
                limit: MAX_IDS_PAGE,
            },
        );
        self.sync.walks.insert(request, after);
    }

    /// Asks again for the schematics members were too busy to send, in batches per member.
    fn ask_busy_again(&mut self) {
        let mut by_member: HashMap<(PeerId, Via), Vec<String>> = HashMap::new();
        for (peer, id, via) in std::mem::take(&mut self.sync.busy) {
            by_member.entry((peer, via)).or_default().push(id);
        }
        for ((peer, via), ids) in by_member {
            // Those left out for want of room wait for the next round.
            if let Some(i) = self.fetch(peer, ids.clone(), via) {
                let room = MAX_FETCHING.saturating_sub(self.sync.busy.len());
                let left = ids.into_iter().skip(i).take(room);
                self.sync.busy.extend(left.map(|id| (peer, id, via)));
            }
        }
    }

    /// Goes on with a paused page walk once half the fetches are done.
    fn resume_walk(&mut self) {
        if self.sync.fetching.len() > MAX_FETCHING / 2 {
            return;
        }
        let Some(peer) = self.sync.paused.keys().next().copied() else {
            return;
        };
        if let Some(after) = self.sync.paused.remove(&peer) {
            self.ask_ids(peer, after);
        }
    }

    pub(super) fn on_schematics_event(
        &mut self,
        event: request_response::Event<SchematicRequest, SchematicReply>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.on_schematic_request(peer, request, channel),
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let asked = self.sync.gets.remove(&request_id).unwrap_or_default();
                let page = self.sync.walks.remove(&request_id).unwrap_or_default();
                let verifying = self.on_schematic_reply(peer, response, &asked, page);
                // What was asked for and did not come (not held there, or another answer):
                // free to be fetched again, from this member or another.
                for id in asked {
                    if !verifying.contains(&id) {
                        self.sync.fetching.remove(&id);
                    }
                }
                self.resume_walk();
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(ids) = self.sync.gets.remove(&request_id) {
                    // A member still connected (the request timed out under load) is asked
                    // again in the next round, as a busy one is; one gone is left to the
                    // comparison of ID sets when it is back.
                    let again = self.connected_members().contains(&peer);
                    for id in ids {
                        if let Some(via) = self.sync.fetching.remove(&id)
                            && again
                            && self.sync.busy.len() < MAX_FETCHING
                        {
                            self.sync.busy.push((peer, id, via));
                        }
                    }
                }
                self.sync.walks.remove(&request_id);
                self.resume_walk();
                tracing::debug!(peer_id = %peer, error = %error, "schematic request failed");
            }
            _ => {}
        }
    }

    fn on_schematic_request(
        &mut self,
        peer: PeerId,
        request: SchematicRequest,
        channel: ResponseChannel<SchematicReply>,
    ) {
        let reply = if !self.is_member(&peer) {
            SchematicReply::Refused {
                reason: "not a member".into(),
            }
        } else {
            match request {
                SchematicRequest::Digest => {
                    let (count, digest) = self.sync.digest();
                    SchematicReply::Digest { count, digest }
                }
                SchematicRequest::Ids { after, limit } => {
                    let (ids, more) = self.sync.page(after.as_deref(), limit);
                    SchematicReply::Ids { ids, more }
                }
                SchematicRequest::Get { ids } => {
                    match self.answer_place(peer, super::Answer::Schematics) {
                        Some(place) => {
                            let store = self.sync.store.clone();
                            let jobs = self.sync.jobs.clone();
                            let ids: Vec<String> = ids.into_iter().take(MAX_GET).collect();
                            let delay = self.answer_delay;
                            tokio::task::spawn_blocking(move || {
                                if let Some(d) = delay {
                                    std::thread::sleep(d);
                                }
                                let reply = SchematicReply::Schematics {
                                    items: read_batch(&store, &ids),
                                };
                                drop(place);
                                let _ = jobs.send(Job::Serve { channel, reply });
                            });
                            return;
                        }
                        None => SchematicReply::Refused {
                            reason: super::BUSY.into(),
                        },
                    }
                }
            }
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .schematics
            .send_response(channel, reply);
    }

    /// Handles an answer to this node's request `asked` (the IDs of a `Get`) or `page` (where
    /// a page of IDs starts); returns the IDs handed to a check.
    fn on_schematic_reply(
        &mut self,
        peer: PeerId,
        reply: SchematicReply,
        asked: &[String],
        page: Option<String>,
    ) -> Vec<String> {
        let mut verifying = Vec::new();
        match reply {
            SchematicReply::Digest { count, digest } => {
                if (count, digest) != self.sync.digest() {
                    self.ask_ids(peer, None);
                }
            }
            SchematicReply::Ids { ids, more } => {
                let last = ids.last().cloned();
                let valid: Vec<String> = ids
                    .into_iter()
                    .take(MAX_IDS_PAGE)
                    .filter(|id| schematic::is_valid_id(id))
                    .collect();
                let resume = |valid: &[String], i: usize| match i.checked_sub(1) {
                    Some(before) => valid.get(before).cloned(),
                    None => page.clone(),
                };
                match self.fetch(peer, valid.clone(), Via::AntiEntropy) {
                    // No room for the rest: the walk goes on from there once there is.
                    Some(i) => {
                        self.sync.paused.insert(peer, resume(&valid, i));
                    }
                    None => {
                        if more && let Some(after) = last {
                            self.ask_ids(peer, Some(after));
                        }
                    }
                }
            }
            SchematicReply::Schematics { items } => {
                for item in items.into_iter().take(MAX_GET) {
                    let Some(via) = self.sync.fetching.get(&item.id).copied() else {
                        continue;
                    };
                    if !asked.contains(&item.id) || verifying.contains(&item.id) {
                        // Not asked of this member in this request, or sent twice: ignored.
                        continue;
                    }
                    verifying.push(item.id.clone());
                    let store = self.sync.store.clone();
                    let jobs = self.sync.jobs.clone();
                    tokio::spawn(async move {
                        let id = item.id.clone();
                        let result = verify_and_store(store, item).await;
                        let _ = jobs.send(Job::Stored {
                            id,
                            from: peer,
                            via,
                            result,
                        });
                    });
                }
            }
            SchematicReply::Refused { reason } => {
                tracing::debug!(peer_id = %peer, reason = %reason, "schematic request refused");
                // Busy (a burst of announcements asks one schematic each): asked again, in
                // batches, in the next second's round.
                if reason == super::BUSY {
                    for id in asked {
                        if self.sync.busy.len() >= MAX_FETCHING {
                            break;
                        }
                        if let Some(via) = self.sync.fetching.get(id) {
                            self.sync.busy.push((peer, id.clone(), *via));
                        }
                    }
                }
            }
        }
        verifying
    }

    /// Work finished off the loop.
    pub(super) fn on_job(&mut self, job: Job) {
        match job {
            Job::Serve { channel, reply } => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .schematics
                    .send_response(channel, reply);
            }
            Job::Listed(ids) => {
                for id in ids {
                    self.sync.insert(id);
                }
            }
            Job::Stored {
                id,
                from,
                via,
                result,
            } => {
                self.sync.fetching.remove(&id);
                self.resume_walk();
                match result {
                    Ok(created) => {
                        if created {
                            tracing::info!(schematic = %id, peer_id = %from, via = via.as_str(), "schematic replicated");
                            self.metrics.schematics_received.increment(1);
                        }
                        self.sync.insert(id);
                    }
                    Err(why) => {
                        tracing::warn!(schematic = %id, peer_id = %from, reason = %why, "a schematic from a member was rejected");
                        self.metrics.schematics_rejected.increment(1);
                    }
                }
            }
        }
    }
}

/// Reads the stored schematics among `ids`, up to [`SCHEMATIC_BATCH_BYTES`] of YAML (at least
/// one).
fn read_batch(store: &SchematicStore, ids: &[String]) -> Vec<SchematicItem> {
    let mut items = Vec::new();
    let mut bytes = 0usize;
    for id in ids {
        if bytes >= SCHEMATIC_BATCH_BYTES {
            break;
        }
        match store.get(id) {
            Ok(Some(yaml)) => {
                bytes += yaml.len();
                items.push(SchematicItem {
                    id: id.clone(),
                    yaml,
                });
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(schematic = %id, error = %Causes(&e), "a schematic could not be read for a member")
            }
        }
    }
    items
}

/// Checks a received schematic (on a blocking thread: parsing is CPU work) and stores it.
async fn verify_and_store(store: SchematicStore, item: SchematicItem) -> Result<bool, String> {
    let SchematicItem { id, yaml } = item;
    let (id, yaml) =
        tokio::task::spawn_blocking(move || check_schematic(&id, &yaml).map(|()| (id, yaml)))
            .await
            .map_err(|e| format!("the check failed: {e}"))??;
    store
        .put(&id, &yaml)
        .await
        .map(|o| o == crate::store::PutOutcome::Created)
        .map_err(|e| format!("storing it failed: {}", Causes(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_canonical_bytes_of_the_id_are_accepted() {
        let yaml = "customization:\n    extraKernelArgs:\n        - noapic\n";
        let id = schematic::id_of(yaml);
        assert_eq!(check_schematic(&id, yaml), Ok(()));
        // Other bytes under the ID.
        let other = "customization:\n    extraKernelArgs:\n        - nolapic\n";
        assert!(
            check_schematic(&id, other)
                .unwrap_err()
                .contains("hashes to")
        );
        // A canonical form that does not read back to itself (go-yaml's: a literal block
        // starting with a line break and a space) is the schematic its creator holds.
        let posted =
            crate::schematic::Schematic::parse(b"customization:\n  extraKernelArgs: [\"\\n a\"]\n")
                .unwrap();
        let canonical = posted.canonical();
        assert_ne!(
            crate::schematic::Schematic::parse(canonical.as_bytes())
                .map(|s| s.canonical())
                .ok(),
            Some(canonical.clone()),
            "the example reads back otherwise"
        );
        assert_eq!(
            check_schematic(&schematic::id_of(&canonical), &canonical),
            Ok(())
        );
        assert!(check_schematic("../x", yaml).is_err());
    }

    #[test]
    fn pages_of_ids_follow_each_other() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let dir = tempfile::tempdir().unwrap();
        let meta: std::sync::Arc<dyn crate::store::MetaStore> =
            std::sync::Arc::new(crate::store::SledStore::open(&dir.path().join("meta")).unwrap());
        let blobs = crate::store::BlobStore::open(&dir.path().join("blobs"), meta).unwrap();
        let store = SchematicStore::new(&blobs).unwrap();
        let ids: Vec<String> = (0..10).map(|i| format!("{i:064x}")).collect();
        let mut sync = SchematicSync::new(store, ids.clone(), tx, Arc::default());
        let (first, more) = sync.page(None, 4);
        assert_eq!((first.as_slice(), more), (&ids[..4], true));
        let (next, more) = sync.page(first.last().map(String::as_str), 100);
        assert_eq!((next.as_slice(), more), (&ids[4..], false));
        let d1 = sync.digest();
        sync.insert(format!("{:064x}", 99));
        assert_ne!(sync.digest(), d1);
        assert_eq!(sync.digest().0, 11);
    }

    #[tokio::test]
    async fn a_schematic_not_announced_is_found_in_the_store() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let dir = tempfile::tempdir().unwrap();
        let meta: std::sync::Arc<dyn crate::store::MetaStore> =
            std::sync::Arc::new(crate::store::SledStore::open(&dir.path().join("meta")).unwrap());
        let blobs = crate::store::BlobStore::open(&dir.path().join("blobs"), meta).unwrap();
        let store = SchematicStore::new(&blobs).unwrap();
        let yaml = "customization: {}\n";
        let id = schematic::id_of(yaml);
        store.put(&id, yaml).await.unwrap();
        let unannounced = Arc::new(AtomicBool::new(false));
        let mut sync = SchematicSync::new(store, Vec::new(), tx, Arc::clone(&unannounced));
        sync.relist();
        assert!(rx.try_recv().is_err(), "nothing to re-read");
        unannounced.store(true, Ordering::Relaxed);
        sync.relist();
        let Some(Job::Listed(ids)) = rx.recv().await else {
            panic!("the store's IDs come back");
        };
        for id in ids {
            sync.insert(id);
        }
        assert_eq!(sync.page(None, 10).0, vec![id]);
        assert!(!unannounced.load(Ordering::Relaxed));
    }
}
