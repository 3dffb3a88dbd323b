//! The task that owns the swarm: it answers commands, checks every new peer's credential right
//! after the handshake (the hello protocol), refuses non-members, expired and removed members
//! (disconnect, log, metric, and a deny at the next handshake), spreads revocations by gossip
//! and by anti-entropy on every hello, measures RTT, tells members that went silent (connected,
//! no ping answered) and keeps members connected.

mod asks;
mod holdings;
mod membership;
mod models;
mod peer;
mod push;
mod releases;
mod schematics;
mod upkeep;

pub(crate) use models::{LeaseView, is_key};
pub(crate) use releases::ReleaseNames;
pub use releases::ReleaseParts;

use peer::{Peer, State, without_peer};

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use libp2p::core::ConnectedPoint;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, identify, mdns, ping};
use tokio::sync::{mpsc, watch};

use super::cluster::{Cluster, Membership};

/// Requests sent to members and waiting for their answer (or failure), by request ID.
type Pending<T> = HashMap<
    libp2p::request_response::OutboundRequestId,
    tokio::sync::oneshot::Sender<Result<T, String>>,
>;

/// Hands `outcome` to whoever waits for request `id` (nothing if it stopped waiting).
fn settle<T>(
    pending: &mut Pending<T>,
    id: &libp2p::request_response::OutboundRequestId,
    outcome: Result<T, String>,
) {
    if let Some(waiter) = pending.remove(id) {
        let _ = waiter.send(outcome);
    }
}
use super::invitation::parse_bootstrap;
use super::metrics::ReplicationMetrics;
use super::places::{Place, Places};
use super::swarm::{Behaviour, BehaviourEvent};
use super::{ClusterStatus, Command, PeerStatus, ReplicationStatus};
use crate::causes::Causes;
use crate::config::ReplicationConfig;
use crate::node::worker::StopSignal;

/// How long a new peer has to present its credential.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Times this node's hello is sent again on one connection when it fails (closed under it,
/// or unanswered within the swarm's hello request timeout), so that all tries fit within the
/// peer's [`HELLO_TIMEOUT`].
const HELLO_RETRIES: u8 = 2;
/// How long a refusal's answer may take to reach the refused peer before it is cut off.
const REFUSAL_FLUSH: Duration = Duration::from_secs(2);
/// How long a refused peer stays connected once both hellos are answered.
const REFUSAL_LINGER: Duration = Duration::from_millis(250);
/// How long a refused peer's connections are denied at the handshake (a removed member's for
/// as long as it stays removed).
const REFUSED_FOR: Duration = Duration::from_secs(30);
/// How long this node waits before dialing a peer that refused it again.
const REFUSED_US_FOR: Duration = Duration::from_secs(60);
/// First and longest wait between dials of a member that is not connected.
const DIAL_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));
/// How often the known members' addresses are saved when they changed.
const SAVE_EVERY: Duration = Duration::from_secs(30);
/// Most peers tracked at once (members and peers being refused).
const MAX_PEERS: usize = 4096;
/// Members' requests of one kind answered off the loop at once (reading the store, signing):
/// each holds a blocking thread and its answer (up to a few MiB) until it is handed back.
const MAX_ANSWERING: usize = 32;
/// Requests of one member answered off the loop at once: a quarter of [`MAX_ANSWERING`], and
/// as many schematic batches as a member asks for at once (`MAX_FETCHING` / `MAX_GET`).
pub(crate) const MAX_ANSWERING_PER_PEER: usize = 8;
/// A kind of member request answered off the loop, each with its own places.
#[derive(Debug, Clone, Copy)]
pub(super) enum Answer {
    /// A batch of schematics.
    Schematics = 0,
    /// A release record, signed on the spot.
    Release = 1,
    /// A model's record.
    ModelRecord = 2,
}

/// Longest delay [`crate::replication::ANSWER_DELAY_ENV`] may ask for, in milliseconds.
const MAX_ANSWER_DELAY_MS: u64 = 10_000;
/// Why a request over those bounds is refused (the asker asks again in its next round).
const BUSY: &str = "busy: as many requests are being answered as this node allows";

/// A refused peer whose connections stay open until the answers are through.
#[derive(Debug)]
struct Refusing {
    /// When it is cut off regardless.
    deadline: Instant,
    /// Whether the answer to its hello was sent.
    answered: bool,
}

/// How a refused peer's connections end.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Once the answer to its hello is sent and its answer to this node's hello is in (or at
    /// [`REFUSAL_FLUSH`]), then denied at the handshake until its refusal ends.
    AfterAnswer,
    /// Now, then denied at the handshake until its refusal ends.
    Block,
    /// Now; its next connection gets a hello answer saying why.
    Disconnect,
}

/// The swarm's event loop (see the module documentation).
pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    cluster: Arc<Cluster>,
    membership: Option<Arc<Membership>>,
    changes: watch::Receiver<u64>,
    commands: mpsc::Receiver<Command>,
    metrics: ReplicationMetrics,
    local: PeerId,
    listen_addrs: Vec<Multiaddr>,
    peers: HashMap<PeerId, Peer>,
    topic: Option<IdentTopic>,
    /// Refused peers whose answer is on its way: cut off once it is sent, or at the deadline.
    refusing: HashMap<PeerId, Refusing>,
    /// Peers whose answer to this node's hello is awaited.
    asked: HashSet<PeerId>,
    /// Hellos to lose on purpose (tests only).
    ignored_hellos: membership::IgnoredHellos,
    /// Whether every hello is welcomed with a made-up member
    /// ([`crate::replication::WELCOME_STRANGERS_ENV`]).
    welcome_strangers: bool,
    /// Whether the members' addresses changed since the last save.
    dirty: bool,
    last_save: Instant,
    removed_self: bool,
    sync: schematics::SchematicSync,
    jobs: mpsc::UnboundedReceiver<schematics::Job>,
    rel: releases::ReleaseSync,
    models: models::ModelSync,
    rel_jobs: mpsc::UnboundedReceiver<releases::Job>,
    hold: holdings::HoldingsState,
    push: push::PushSync,
    /// Peers named by the configuration (`replication.bootstrapPeers`), saved as members or
    /// judged members in this run: their addresses are kept when they are refused (a member
    /// silent or expired for a while), everyone else's are forgotten.
    vouched: HashSet<PeerId>,
    /// Members' requests being answered off the loop, by protocol (a member fetching many
    /// schematic batches still has its model records and releases answered).
    answering: [Places; 3],
    /// How late each schematic batch is answered ([`crate::replication::ANSWER_DELAY_ENV`]).
    answer_delay: Option<Duration>,
}

impl EventLoop {
    /// The loop over `swarm` (already listening on `listen_addrs`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        cluster: Arc<Cluster>,
        config: &ReplicationConfig,
        listen_addrs: Vec<Multiaddr>,
        commands: mpsc::Receiver<Command>,
        metrics: ReplicationMetrics,
        (store, ids): (crate::store::SchematicStore, Vec<String>),
        (parts, handle): (ReleaseParts, super::Replication),
    ) -> Self {
        let (jobs_tx, jobs) = mpsc::unbounded_channel();
        let (rel_tx, rel_jobs) = mpsc::unbounded_channel();
        let unannounced = Arc::clone(&handle.unannounced);
        let fetcher = super::find::ClusterPeers::new(
            handle.clone(),
            parts.blobs.clone(),
            crate::assets::RecordStore::new(Arc::clone(parts.blobs.meta())),
            crate::assets::RecordVerifier::new(&cluster.signing_key().verifying_key()),
        );
        let remembered = cluster
            .known_peers()
            .iter()
            .filter_map(|kp| kp.peer_id.parse::<PeerId>().ok())
            .collect();
        let rel =
            releases::ReleaseSync::new(parts, Arc::clone(cluster.signing_key()), handle, rel_tx);
        let now = Instant::now();
        let local = *swarm.local_peer_id();
        let changes = cluster.subscribe();
        let mut me = Self {
            swarm,
            membership: None,
            changes,
            commands,
            metrics,
            local,
            listen_addrs,
            peers: HashMap::new(),
            topic: None,
            refusing: HashMap::new(),
            asked: HashSet::new(),
            ignored_hellos: membership::IgnoredHellos::from_env(),
            welcome_strangers: crate::replication::test_settings::read(
                crate::replication::WELCOME_STRANGERS_ENV,
                1,
                "every hello is welcomed, with a member that does not exist",
            ) == Some(1),
            dirty: false,
            last_save: now,
            removed_self: false,
            sync: schematics::SchematicSync::new(store, ids, jobs_tx, unannounced),
            jobs,
            rel,
            models: models::ModelSync::new(local),
            hold: holdings::HoldingsState::new(),
            push: push::PushSync::new(remembered, fetcher),
            rel_jobs,
            cluster,
            vouched: HashSet::new(),
            answering: [(); 3].map(|()| Places::new(MAX_ANSWERING, MAX_ANSWERING_PER_PEER)),
            answer_delay: crate::replication::test_settings::read(
                crate::replication::ANSWER_DELAY_ENV,
                MAX_ANSWER_DELAY_MS,
                "each schematic batch a member asks for is answered late (milliseconds)",
            )
            .map(Duration::from_millis),
        };
        let mut seeds: Vec<(PeerId, Multiaddr)> = Vec::new();
        for text in &config.bootstrap_peers {
            match parse_bootstrap(text) {
                Ok(pa) => seeds.push(pa),
                Err(e) => {
                    tracing::warn!(error = %Causes(&e), "replication.bootstrapPeers entry ignored")
                }
            }
        }
        for kp in me.cluster.known_peers() {
            let Ok(peer) = kp.peer_id.parse::<PeerId>() else {
                continue;
            };
            // A member remembered without an address (its addresses come from the others'
            // welcomes) is known all the same: it is ranked where copies go.
            if kp.addrs.is_empty() && peer != local {
                me.vouched.insert(peer);
                me.peers.entry(peer).or_insert_with(|| Peer::new(now));
            }
            for a in kp.addrs.iter().filter_map(|a| a.parse::<Multiaddr>().ok()) {
                seeds.push((peer, a));
            }
        }
        for (peer, addr) in seeds {
            if peer != local {
                me.vouched.insert(peer);
                me.peers
                    .entry(peer)
                    .or_insert_with(|| Peer::new(now))
                    .add_addr(addr);
            }
        }
        me.reload_membership();
        // Advertise the models held from before this start (bounded; the first republication
        // reaches the members once they connect).
        let records = me.rel.records();
        let jobs = me.rel.jobs();
        tokio::task::spawn_blocking(move || match records.scan_raw() {
            Ok(all) => {
                let keys: Vec<String> = all
                    .into_iter()
                    .map(|(k, _)| k)
                    .filter(|k| models::is_key(k))
                    .take(super::swarm::MAX_PROVIDED_KEYS)
                    .collect();
                let _ = jobs.send(releases::Job::Provide(keys));
            }
            Err(e) => {
                tracing::warn!(error = %Causes(&e), "the models held are not advertised to the cluster")
            }
        });
        me
    }

    /// Runs until `stop` turns true; saves the members' addresses on the way out.
    pub(crate) async fn run(mut self, stop: &mut StopSignal) {
        let serving = match self
            .swarm
            .behaviour()
            .blobs
            .new_control()
            .accept(crate::replication::blob_stream::protocol())
        {
            Ok(incoming) => Some(tokio::spawn(crate::replication::blob_stream::serve(
                incoming,
                self.rel.handle.clone(),
                self.rel.parts.blobs.clone(),
            ))),
            Err(e) => {
                tracing::error!(error = %e, "members' blob streams cannot be answered");
                None
            }
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.wait_for(|v| *v) => break,
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(cmd) = self.commands.recv() => self.on_command(cmd),
                Ok(()) = self.changes.changed() => self.reload_membership(),
                Some(job) = self.jobs.recv() => self.on_job(job),
                Some(job) = self.rel_jobs.recv() => self.on_release_job(job),
                _ = tick.tick() => self.on_tick(),
            }
        }
        if let Some(s) = serving {
            s.abort();
        }
        self.save_peers();
        tracing::info!("replication stopped");
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::SchematicCreated(id) => self.schematic_created(id),
            Command::ReleaseImported(v, revision) => self.announce_release(v, revision),
            Command::Members(reply) => {
                let _ = reply.send(self.connected_members().into_iter().collect());
            }
            Command::Providers { key, reply } => self.find_providers(key, reply),
            Command::Lease { key, reply } => {
                let _ = reply.send(self.lease_view(&key));
            }
            Command::Claim { key, lost, reply } => {
                let _ = reply.send(self.claim(key, lost));
            }
            Command::Built { key, ok } => self.built(key, ok),
            Command::Provide(key) => self.provide(key),
            Command::ModelRecord { peer, key, reply } => self.model_record(peer, key, reply),
        }
    }

    fn status(&self) -> ReplicationStatus {
        let cluster = self.membership.as_ref().map(|m| ClusterStatus {
            id: m.record.cluster.clone(),
            factory_url: m.record.factory_url.clone(),
            member: m.credential.is_some(),
            credential_expires: m.expires.map(crate::clock::rfc3339_utc),
            removed: self.removed_self,
            revocations: m.revocations.len(),
        });
        let now = Instant::now();
        let now_secs = crate::clock::now_secs();
        let mut peers: Vec<PeerStatus> = self
            .peers
            .iter()
            .map(|(id, p)| {
                let (state, reason) = match &p.state {
                    State::Known => ("known", None),
                    State::Pending { .. } => ("pending", None),
                    State::Member { .. } => ("member", None),
                    State::Refused { reason, .. } => ("refused", Some(reason.to_string())),
                    State::RefusedUs { reason, .. } => ("refusedUs", Some(reason.clone())),
                };
                PeerStatus {
                    peer_id: id.to_string(),
                    addrs: p.addrs.iter().map(ToString::to_string).collect(),
                    connected: p.connections > 0,
                    responding: p.responding(now),
                    last_answer: (p.connections > 0).then(|| {
                        let ago = now.duration_since(p.answered).as_secs();
                        crate::clock::rfc3339_utc(now_secs.saturating_sub(ago))
                    }),
                    rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1000.0),
                    state,
                    reason,
                    holds: self.hold.heard.get(id).copied(),
                    bytes_received: self.metrics.peer_total(id, true),
                    bytes_sent: self.metrics.peer_total(id, false),
                }
            })
            .collect();
        peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        ReplicationStatus {
            enabled: true,
            peer_id: Some(self.local.to_string()),
            listen_addrs: self.listen_addrs.iter().map(ToString::to_string).collect(),
            cluster,
            holds: self.hold.own,
            peers,
            // Filled by the handle, which sees the transfers (see `partial`).
            transfers: Vec::new(),
        }
    }

    fn peer(&mut self, id: PeerId) -> Option<&mut Peer> {
        if !self.peers.contains_key(&id) && self.peers.len() >= MAX_PEERS {
            // Forget one peer that is neither connected nor a member to make room.
            let victim = self
                .peers
                .iter()
                .find(|(_, p)| p.connections == 0 && !matches!(p.state, State::Member { .. }))
                .map(|(k, _)| *k);
            match victim {
                Some(v) => {
                    self.peers.remove(&v);
                }
                None => return None,
            }
        }
        Some(
            self.peers
                .entry(id)
                .or_insert_with(|| Peer::new(Instant::now())),
        )
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                let Some(p) = self.peer(peer_id) else {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                };
                p.connections = num_established.get() as usize;
                p.answered = Instant::now();
                p.backoff = DIAL_BACKOFF.0;
                if let ConnectedPoint::Dialer { address, .. } = &endpoint {
                    p.add_addr(without_peer(address.clone()));
                }
                if num_established.get() == 1 {
                    let now = Instant::now();
                    p.connected_since = now;
                    p.state = p.state.reconnected(now);
                    let member = matches!(p.state, State::Member { .. });
                    let standing = p.state.standing();
                    p.rtt = None;
                    p.welcomed = false;
                    p.hello_retries = 0;
                    self.send_hello(peer_id);
                    if member {
                        self.member_connected(peer_id);
                        self.update_gauge();
                    } else {
                        self.keep_out(peer_id, standing);
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if let Some(p) = self.peers.get_mut(&peer_id) {
                    p.connections = num_established as usize;
                    if num_established == 0 {
                        p.rtt = None;
                        p.welcome = None;
                        if matches!(p.state, State::Pending { .. }) {
                            p.state = State::Known;
                        }
                        if matches!(p.state, State::Member { .. }) {
                            tracing::info!(peer_id = %peer_id, "member disconnected");
                        }
                    }
                }
                self.update_gauge();
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer_id = ?peer_id, error = %error, "dial failed");
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::debug!(from = %send_back_addr, error = %error, "incoming connection failed or denied");
            }
            SwarmEvent::NewListenAddr { address, .. } if !self.listen_addrs.contains(&address) => {
                self.listen_addrs.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| *a != address);
            }
            SwarmEvent::Behaviour(e) => self.on_behaviour_event(e),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Hello(e) => self.on_hello_event(e),
            BehaviourEvent::Schematics(e) => self.on_schematics_event(e),
            BehaviourEvent::Releases(e) => self.on_releases_event(e),
            BehaviourEvent::Blobs(()) => {}
            BehaviourEvent::Models(e) => self.on_models_event(e),
            BehaviourEvent::Push(e) => self.on_push_event(e),
            BehaviourEvent::Kad(e) => self.on_kad_event(e),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                let is_member = self.is_member(&peer_id);
                let Some(p) = self.peers.get_mut(&peer_id) else {
                    return;
                };
                let mut added = Vec::new();
                for a in info.listen_addrs {
                    let a = without_peer(a);
                    if p.discovered(a.clone()) {
                        added.push(a);
                    }
                }
                if is_member && !added.is_empty() {
                    self.dirty = true;
                    self.admit(peer_id);
                }
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.rtt = Some(rtt);
                    p.answered = Instant::now();
                }
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let acceptance = self.on_gossip(&propagation_source, message.source, &message.data);
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    if peer == self.local {
                        continue;
                    }
                    if let Some(p) = self.peer(peer) {
                        p.discovered(addr);
                    }
                }
            }
            _ => {}
        }
    }

    /// The members connected and answering now (a silent one is no source and its lease
    /// counts for nothing).
    pub(super) fn connected_members(&self) -> HashSet<PeerId> {
        let now = Instant::now();
        self.peers
            .iter()
            .filter(|(_, p)| p.responding(now) && matches!(p.state, State::Member { .. }))
            .map(|(id, _)| *id)
            .collect()
    }

    /// A place to answer `peer`'s request of kind `what` off the loop, or none (logged and
    /// counted: the request is to be answered busy) while that kind's [`MAX_ANSWERING`] or its
    /// member's share are taken.
    pub(super) fn answer_place(&mut self, peer: PeerId, what: Answer) -> Option<Place> {
        let places = &self.answering[what as usize];
        match places.take(peer) {
            Ok(place) => Some(place),
            Err(full) => {
                self.metrics.requests_busy.increment(1);
                tracing::debug!(peer_id = %peer, what = ?what, of = ?full, max = places.max(&full), "a member's request answered busy");
                None
            }
        }
    }

    pub(super) fn is_member(&self, peer: &PeerId) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| matches!(p.state, State::Member { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::dialable;

    #[test]
    fn only_concrete_addresses_are_dialable() {
        let ok: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        assert!(dialable(&ok));
        let quic: Multiaddr = "/ip4/10.0.0.1/udp/4001/quic-v1".parse().unwrap();
        assert!(dialable(&quic));
        for bad in [
            "/ip4/0.0.0.0/tcp/4001",
            "/ip4/127.0.0.1/tcp/0",
            "/ip6/::/udp/4001/quic-v1",
            "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWPjceQrSwdWXPyLLeABRXmuqt69Rg3sBYbU1Nft9HyQ6X",
        ] {
            assert!(!dialable(&bad.parse().unwrap()), "{bad}");
        }
    }
}
