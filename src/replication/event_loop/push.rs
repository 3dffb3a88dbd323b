//! Eager replication of models (`replication.factor`): when this node finishes a build, it asks
//! the members of the `factor` ranked highest for the cache key (itself included, see
//! `rendezvous`) to fetch the model from it; a member asked fetches it through find-before-build's fetch (the signed record
//! verified against the cluster key, the bytes chunk by chunk), at most
//! [`MAX_PUSH_FETCHES`] at once: further asks are answered busy, and the asking node asks
//! again later (see `asks`). When the ranked members change and stay changed for
//! [`SETTLE`], a node that holds a copy where it belongs asks the members that became
//! designated for the key to hold theirs (see [`rendezvous::moved_to`]).
//!
//! Best effort: a chosen member not connected at build time is asked when it connects again
//! in this run (at most [`asks::MAX_WAITING`] asks wait; the oldest go first); asks still
//! waiting when the node stops are lost, and find-before-build covers the rest.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::request_response;

use super::asks::{self, AskQueue, Queued, Settle};
use super::{EventLoop, State};
use crate::causes::Causes;
use crate::replication::find::ClusterPeers;
use crate::replication::protocol::{PushReply, PushRequest};
use crate::replication::rendezvous::{self, push_targets};
use crate::replication::{Replication, ReplicationError};

/// Models fetched at once because a member asked.
pub(super) const MAX_PUSH_FETCHES: usize = 2;
/// How long the ranked members must stay unchanged before copies are re-placed over them.
pub(super) const SETTLE: Duration = Duration::from_secs(60);
/// Longest [`SETTLE`] a test may ask for, in milliseconds.
const MAX_SETTLE_MS: u64 = 60_000;

/// The push side of the event loop's state.
pub(crate) struct PushSync {
    /// Members remembered from the last run (`peers.json`) and met in this one: members while
    /// they reconnect or stay away, until they are refused.
    pub(super) remembered: HashSet<PeerId>,
    /// Asks to hold a copy, waiting or sent.
    asks: AskQueue,
    /// When the members settle after a change (copies re-placed then).
    settle: Settle,
    /// Keys being fetched because a member asked.
    fetching: Admission,
    /// Fetches models for asks received.
    fetcher: Arc<ClusterPeers>,
}

impl PushSync {
    /// The state of a node that fetches with `fetcher`, remembering `remembered` as members.
    pub(crate) fn new(remembered: HashSet<PeerId>, fetcher: ClusterPeers) -> Self {
        let settle = crate::replication::test_settings::read(
            crate::replication::test_settings::PLACEMENT_SETTLE_ENV,
            MAX_SETTLE_MS,
            "copies are re-placed once the members stay unchanged this long (milliseconds)",
        )
        .map_or(SETTLE, Duration::from_millis);
        Self {
            settle: Settle::new(remembered.iter().copied().collect(), settle),
            remembered,
            asks: AskQueue::default(),
            fetching: Admission::default(),
            fetcher: Arc::new(fetcher),
        }
    }
}

/// The keys being fetched because a member asked, at most [`MAX_PUSH_FETCHES`] (shared with
/// the fetch tasks, which hold a [`Fetching`] each).
#[derive(Default)]
struct Admission(Arc<Mutex<HashSet<String>>>);

/// What [`Admission::admit`] decided.
enum Admit {
    /// Fetch it; the key stays admitted while this lives.
    Fetch(Fetching),
    /// It is being fetched already.
    Already,
    /// As many fetches run as allowed.
    Busy,
}

impl Admission {
    fn admit(&self, key: &str) -> Admit {
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if set.contains(key) {
            return Admit::Already;
        }
        if set.len() >= MAX_PUSH_FETCHES {
            return Admit::Busy;
        }
        set.insert(key.to_string());
        Admit::Fetch(Fetching {
            set: Arc::clone(&self.0),
            key: key.to_string(),
        })
    }
}

/// Removes its key from the keys being fetched when the fetch ends (or its task fails).
struct Fetching {
    set: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl Drop for Fetching {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

impl EventLoop {
    /// The cluster's members as rendezvous hashing ranks them: every member met in this run or
    /// remembered from the last, connected or not, unless refused since; never a removed one,
    /// never this node.
    pub(super) fn rendezvous_members(&self) -> Vec<PeerId> {
        let revoked = self
            .membership
            .as_ref()
            .map(|m| m.revoked())
            .unwrap_or_default();
        let mut out: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(id, p)| match p.state {
                State::Member { .. } => true,
                State::Known | State::Pending { .. } => self.push.remembered.contains(id),
                State::Refused { .. } | State::RefusedUs { .. } => false,
            })
            .map(|(id, _)| *id)
            .filter(|id| *id != self.local && !revoked.contains_key(id))
            .collect();
        out.sort();
        out
    }

    /// Shares the members with garbage collection (re-placing copies once they settle after a
    /// change); sends the asks whose member is connected and whose time came, and drops those
    /// whose peer is no member any more. Once a second.
    pub(super) fn push_round(&mut self) {
        for (id, p) in &self.peers {
            if matches!(p.state, State::Member { .. })
                && self.push.remembered.len() < super::MAX_PEERS
            {
                self.push.remembered.insert(*id);
            }
        }
        let members = self.rendezvous_members();
        self.rel.handle.placement.set_members(members.clone());
        if let Some(old) = self.push.settle.observe(&members, Instant::now()) {
            self.replace_copies(old, members.clone());
        }
        self.rel
            .handle
            .placement
            .set_settled(self.push.settle.placed().to_vec());
        let connected = self.connected_members();
        self.push.asks.refill(&connected, Instant::now());
        if let Some(keys) = self.push.asks.changed_keys() {
            self.rel.handle.placement.set_pending(keys);
        }
        if self.push.asks.is_idle() {
            return;
        }
        // Asks for a peer that is no member any more (removed, refused) are dropped.
        let dropped = self.push.asks.keep_members(&members);
        if dropped > 0 {
            self.metrics.pushes_failed.increment(dropped as u64);
            tracing::info!(
                asks = dropped,
                "asks to hold a copy dropped: their peer is no member any more"
            );
        }
        self.send_due();
    }

    /// Sends the asks due whose member is connected (a few per member).
    pub(super) fn send_due(&mut self) {
        let connected = self.connected_members();
        for ask in self.push.asks.due(&connected, Instant::now()) {
            let id = self.swarm.behaviour_mut().push.send_request(
                &ask.peer,
                PushRequest {
                    key: ask.key.clone(),
                },
            );
            self.metrics.pushes_sent.increment(1);
            tracing::info!(key = %ask.key, peer_id = %ask.peer, "asked a member to hold a copy of a model");
            self.push.asks.sent(id, ask);
        }
    }

    /// Counts and logs what became of an ask added or put back.
    fn queued(&self, q: Queued) {
        match q {
            Queued::Already | Queued::Waiting => {}
            Queued::Displaced(a) => {
                self.metrics.pushes_failed.increment(1);
                tracing::warn!(key = %a.key, peer_id = %a.peer, "an ask to hold a copy was dropped (too many wait)");
            }
            Queued::GivenUp(a) => {
                self.metrics.pushes_failed.increment(1);
                tracing::warn!(key = %a.key, peer_id = %a.peer, tries = asks::MAX_TRIES, "an ask to hold a copy was given up: it never reached the member");
            }
        }
    }

    /// The members settled from `old` to `new`: off the loop, finds the models held here for
    /// which this node is designated and some member became designated, and asks those
    /// members to hold a copy (as [`releases::Job::Replace`]).
    fn replace_copies(&self, old: Vec<PeerId>, new: Vec<PeerId>) {
        let factor = self.rel.handle.placement.factor();
        if factor <= 1 {
            return;
        }
        let local = self.local;
        let records = self.rel.records();
        let jobs = self.rel.jobs();
        tokio::task::spawn_blocking(move || match records.scan_raw() {
            Ok(all) => {
                let asks: Vec<(PeerId, String)> = all
                    .into_iter()
                    .map(|(k, _)| k)
                    .filter(|k| super::is_key(k))
                    .flat_map(|k| {
                        rendezvous::moved_to(&k, &local, &old, &new, factor)
                            .into_iter()
                            .map(move |p| (p, k.clone()))
                    })
                    .collect();
                if !asks.is_empty() {
                    let _ = jobs.send(super::releases::Job::Replace(asks));
                }
            }
            Err(e) => {
                tracing::warn!(error = %Causes(&e), "copies not re-placed after the members changed; trying again once they stay unchanged");
                let _ = jobs.send(super::releases::Job::ReplaceAgain(old));
            }
        });
    }

    /// Asks the members in `asks`, which became designated for their keys when the members
    /// changed, to hold a copy (in turn, behind the asks waiting).
    pub(super) fn replace_copies_asked(&mut self, asks: Vec<(PeerId, String)>) {
        let over = self.push.asks.add_backlog(asks);
        if over > 0 {
            self.metrics.pushes_failed.increment(over as u64);
            tracing::warn!(
                asks = over,
                max = asks::MAX_BACKLOG,
                "more copies to re-place than asks may wait; the rest are fetched on demand"
            );
        }
        let connected = self.connected_members();
        self.push.asks.refill(&connected, Instant::now());
        self.send_due();
    }

    /// The store could not be read to re-place copies from `old`: again once the members
    /// stay unchanged for the settle time.
    pub(super) fn replace_copies_again(&mut self, old: Vec<PeerId>) {
        self.push.settle.retry(old, Instant::now());
    }

    /// This node built `key`: asks the members chosen to hold its other copies.
    pub(super) fn push_built(&mut self, key: &str) {
        let factor = self.rel.handle.placement.factor();
        if factor <= 1 {
            return;
        }
        let members = self.rendezvous_members();
        let connected = self.connected_members();
        let now = Instant::now();
        for peer in push_targets(key, &self.local, &members, factor) {
            if !connected.contains(&peer) {
                tracing::info!(key = %key, peer_id = %peer, "the member chosen for a copy is not connected; it is asked when it connects");
            }
            let q = self.push.asks.add(peer, key.to_string(), now);
            self.queued(q);
        }
        self.send_due();
    }

    pub(super) fn on_push_event(&mut self, event: request_response::Event<PushRequest, PushReply>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let reply = self.push_asked(peer, request.key);
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .push
                    .send_response(channel, reply);
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let Some(ask) = self.push.asks.answered(&request_id) else {
                    return;
                };
                match response {
                    PushReply::Accepted => self.push.asks.done(&ask),
                    PushReply::Busy => {
                        tracing::debug!(key = %ask.key, peer_id = %peer, "a member is busy; the ask to hold a copy goes again later");
                        let q = self.push.asks.busy(ask, Instant::now());
                        self.queued(q);
                    }
                    // Refused: this node is not (yet) a member to it — a hello still on its
                    // way — or the key is not one. Asked again like an ask that did not
                    // arrive, so a race at reconnection loses nothing; a lasting refusal
                    // gives up after the tries.
                    PushReply::Refused => {
                        tracing::info!(key = %ask.key, peer_id = %peer, "a member refused the ask to hold a copy; it goes again later");
                        let q = self.push.asks.undelivered(ask, Instant::now());
                        self.queued(q);
                    }
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(ask) = self.push.asks.answered(&request_id) {
                    tracing::info!(key = %ask.key, peer_id = %peer, error = %error, "an ask to hold a copy did not reach the member; it goes again later");
                    let q = self.push.asks.undelivered(ask, Instant::now());
                    self.queued(q);
                }
            }
            _ => {}
        }
    }

    /// Member `peer` asks this node to fetch the model of `key` from it.
    fn push_asked(&mut self, peer: PeerId, key: String) -> PushReply {
        if !self.is_member(&peer) || !super::is_key(&key) {
            return PushReply::Refused;
        }
        // Held already (a copy re-placed back to a member that kept it): nothing to fetch.
        if matches!(self.rel.records().contains(&key), Ok(true)) {
            return PushReply::Accepted;
        }
        let guard = match self.push.fetching.admit(&key) {
            Admit::Fetch(guard) => guard,
            Admit::Already => return PushReply::Accepted,
            Admit::Busy => {
                self.metrics.requests_busy.increment(1);
                tracing::debug!(key = %key, peer_id = %peer, max = MAX_PUSH_FETCHES, "an ask to hold a copy answered busy: as many are being fetched as allowed");
                return PushReply::Busy;
            }
        };
        let fetcher = Arc::clone(&self.push.fetcher);
        let handle = self.rel.handle.clone();
        let records = self.rel.records();
        tokio::spawn(async move {
            let _guard = guard;
            pushed_fetch(&fetcher, &handle, &records, peer, &key).await;
        });
        PushReply::Accepted
    }
}

/// Fetches the model of `key` from `peer`, which asked, unless it is held here already;
/// logged and counted.
async fn pushed_fetch(
    fetcher: &ClusterPeers,
    handle: &Replication,
    records: &crate::assets::RecordStore,
    peer: PeerId,
    key: &str,
) {
    let m = &handle.metrics;
    let held = {
        let (records, k) = (records.clone(), key.to_string());
        tokio::task::spawn_blocking(move || records.contains(&k)).await
    };
    if matches!(held, Ok(Ok(true))) {
        tracing::debug!(key = %key, peer_id = %peer, "asked to hold a copy of a model held already");
        return;
    }
    match fetcher.fetch(peer, key).await {
        Ok(()) => {
            m.pushes_received.increment(1);
            tracing::info!(key = %key, peer_id = %peer, "model replicated at the request of a member");
        }
        Err(e) => {
            if matches!(e, ReplicationError::Corrupt { .. }) {
                m.verification_failures.increment(1);
            }
            m.pushes_failed.increment(1);
            tracing::warn!(key = %key, peer_id = %peer, error = %Causes(&e), "a model a member asked this node to hold was not fetched");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> String {
        format!("{i:064x}")
    }

    #[test]
    fn asks_beyond_the_budget_are_refused_not_queued_and_a_finished_fetch_frees_its_slot() {
        let a = Admission::default();
        let mut running: Vec<Fetching> = (0..MAX_PUSH_FETCHES as u8)
            .map(|i| match a.admit(&key(i)) {
                Admit::Fetch(g) => g,
                _ => panic!("ask {i} within the budget not admitted"),
            })
            .collect();
        // A flood of other keys: every one refused, none remembered.
        for i in 100..200 {
            assert!(matches!(a.admit(&key(i)), Admit::Busy), "ask {i} admitted");
        }
        // The same key again joins the fetch running.
        assert!(matches!(a.admit(&key(0)), Admit::Already));
        // A fetch ends (or its task dies): its slot is free, its key can be asked again.
        running.remove(0);
        assert!(matches!(a.admit(&key(150)), Admit::Fetch(_)));
        let again = a.admit(&key(0));
        assert!(matches!(again, Admit::Fetch(_)));
        assert!(matches!(a.admit(&key(1)), Admit::Already));
        assert_eq!(a.0.lock().unwrap().len(), MAX_PUSH_FETCHES);
    }
}
