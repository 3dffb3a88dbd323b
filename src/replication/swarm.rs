//! Building and starting the swarm: QUIC with TCP + noise + yamux as fallback; identify, ping
//! (RTT), the hello protocol (membership), gossipsub and mDNS behind `replication.mdns`.
//! Members find each other through the hello's peer exchange; Kademlia joins with provider
//! records (find before build). [`start`] binds every listen address before it returns, so a bad or
//! busy address is a startup error; the event loop then runs as a node worker.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, StreamProtocol, Swarm, allow_block_list, connection_limits, gossipsub, identify,
    kad, mdns, noise, ping, request_response, tcp, yamux,
};
use metrics::Recorder;
use tokio::sync::mpsc;

use super::admitted::Admitted;
use super::cluster::Cluster;
use super::event_loop::{EventLoop, ReleaseParts};
use super::kad_gate::KadGate;
use super::metrics::ReplicationMetrics;
use super::protocol::{
    HELLO_PROTOCOL, Hello, HelloReply, IDENTIFY_VERSION, KAD_PROTOCOL, MAX_GOSSIP, MAX_HELLO_REPLY,
    MAX_HELLO_REQUEST, MAX_MODEL_REPLY, MAX_MODEL_REQUEST, MAX_PUSH_REPLY, MAX_PUSH_REQUEST,
    MAX_RELEASES_REPLY, MAX_RELEASES_REQUEST, MAX_SCHEMATICS_REPLY, MAX_SCHEMATICS_REQUEST,
    MODELS_PROTOCOL, ModelReply, ModelRequest, PUSH_PROTOCOL, PushReply, PushRequest,
    RELEASES_PROTOCOL, ReleaseReply, ReleaseRequest, SCHEMATICS_PROTOCOL, SchematicReply,
    SchematicRequest,
};
use super::{Replication, ReplicationError};
use crate::config::ReplicationConfig;
use crate::node::worker::StopSignal;
use crate::node::{WorkError, Worker, WorkerState};
use crate::store::BoxFuture;
use crate::store::SchematicStore;

/// How long a connection with nothing to do stays open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Seconds between the pings that measure RTT and tell a silent member.
const PING_INTERVAL_SECS: u64 = 5;
/// Interval of the pings that measure RTT and tell a silent member.
const PING_INTERVAL: Duration = Duration::from_secs(PING_INTERVAL_SECS);
/// How long a ping's answer may take.
const PING_TIMEOUT: Duration = Duration::from_secs(2 * PING_INTERVAL_SECS);
/// A connected member that answered no ping for this long is silent: a stopped or hung
/// process keeps its sockets open, so the transport (TCP, and QUIC only after its own idle
/// timeout) does not notice. Three intervals, so one lost or late answer is not silence.
pub(crate) const SILENT_AFTER: Duration = Duration::from_secs(3 * PING_INTERVAL_SECS);
/// Incoming connections in their handshake at once.
const MAX_PENDING_INCOMING: u32 = 64;
/// Dials in progress at once (each a socket, and a handshake): beyond, a dial is denied and
/// the member dialled again after its backoff.
const MAX_PENDING_OUTGOING: u32 = 64;
/// How long a connection may take to connect and finish its handshake (TCP: noise, yamux;
/// QUIC has its own 5 s inside): a connection that never finishes holds one of the
/// [`MAX_PENDING_INCOMING`] places until then, so silent sockets cannot shut peers out for long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Incoming connections open at once (members and peers being checked).
const MAX_INCOMING: u32 = 512;
/// How long a hello waits for its answer: short, so that the retries after a lost one still
/// reach the peer before it refuses this node as silent (10 s after connecting).
const HELLO_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections to one peer (both sides may dial, over QUIC and TCP).
const MAX_PER_PEER: u32 = 8;
/// How long a provider lookup may take.
const KAD_QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a provider record lives on the members that store it. A record outliving its
/// model (collected by the GC) costs one refused fetch and a local build; a record lost early
/// costs a build the cluster did not need. Models are kept for days, so hours are right.
pub(crate) const PROVIDER_TTL: Duration = Duration::from_secs(6 * 3600);
/// How often a node republishes the records of what it holds: well inside the TTL, so one
/// lost republication (a member restarting) never lets a record lapse.
pub(crate) const PROVIDER_REPUBLISH: Duration = Duration::from_secs(2 * 3600);
/// The gossip score of a peer not judged a member: below gossipsub's default graylist
/// (-80), publish (-50) and gossip (-10) thresholds.
pub(crate) const OUTSIDER_SCORE: f64 = -100.0;
/// Providers remembered per key (a cluster has tens of members, not thousands).
const MAX_PROVIDERS_PER_KEY: usize = 64;
/// Keys this node provides (one per model it holds).
pub(crate) const MAX_PROVIDED_KEYS: usize = 100_000;
/// Requests in flight on one connection, both ways together, per request-response protocol
/// (libp2p's default is 100): a stream beyond is dropped, and its request fails. Well above
/// what a member asks at once (8 schematic batches); the answering bound (`event_loop`)
/// answers busy beyond its share of the work.
const MAX_STREAMS_PER_CONNECTION: usize = 32;
/// How long binding the listen addresses may take.
const LISTEN_DEADLINE: Duration = Duration::from_secs(10);

/// Every protocol the swarm speaks.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// Denies connections of refused peers at the handshake.
    pub gate: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    /// Bounds connections (strangers can open them before they are refused).
    pub limits: connection_limits::Behaviour,
    /// Exchanges listen addresses.
    pub identify: identify::Behaviour,
    /// Measures RTT.
    pub ping: ping::Behaviour,
    /// The membership check.
    pub hello: request_response::Behaviour<request_response::json::codec::Codec<Hello, HelloReply>>,
    /// Schematic anti-entropy and fetches.
    pub schematics: request_response::Behaviour<
        request_response::json::codec::Codec<SchematicRequest, SchematicReply>,
    >,
    /// Release anti-entropy and signed records.
    pub releases: request_response::Behaviour<
        request_response::json::codec::Codec<ReleaseRequest, ReleaseReply>,
    >,
    /// Blob streams (see `blob_stream`).
    pub blobs: libp2p_stream::Behaviour,
    /// Built assets' signed records by cache key.
    pub models:
        request_response::Behaviour<request_response::json::codec::Codec<ModelRequest, ModelReply>>,
    /// Asks to fetch a model this node built (`replication.factor`).
    pub push:
        request_response::Behaviour<request_response::json::codec::Codec<PushRequest, PushReply>>,
    /// Provider records of cache keys (find before build), answered for members only.
    pub kad: KadGate,
    /// Announcements (revocations, new schematics).
    pub gossipsub: gossipsub::Behaviour,
    /// Local-link discovery, when `replication.mdns` is set.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
}

fn swarm_error<E>(what: &'static str) -> impl FnOnce(E) -> ReplicationError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| ReplicationError::Swarm {
        what,
        source: Box::new(e),
    }
}

fn behaviour(
    key: &libp2p::identity::Keypair,
    mdns_on: bool,
    admitted: Admitted,
) -> Result<Behaviour, ReplicationError> {
    let local = key.public().to_peer_id();
    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_VERSION.into(), key.public())
            .with_agent_version(format!("image-factory/{}", env!("CARGO_PKG_VERSION"))),
    );
    let hello = request_response::Behaviour::with_codec(
        request_response::json::codec::Codec::default()
            .set_request_size_maximum(MAX_HELLO_REQUEST)
            .set_response_size_maximum(MAX_HELLO_REPLY),
        [(
            StreamProtocol::new(HELLO_PROTOCOL),
            request_response::ProtocolSupport::Full,
        )],
        request_response::Config::default().with_request_timeout(HELLO_REQUEST_TIMEOUT),
    );
    let schematics = request_response::Behaviour::with_codec(
        request_response::json::codec::Codec::default()
            .set_request_size_maximum(MAX_SCHEMATICS_REQUEST)
            .set_response_size_maximum(MAX_SCHEMATICS_REPLY),
        [(
            StreamProtocol::new(SCHEMATICS_PROTOCOL),
            request_response::ProtocolSupport::Full,
        )],
        request_response::Config::default()
            .with_request_timeout(Duration::from_secs(60))
            .with_max_concurrent_streams(MAX_STREAMS_PER_CONNECTION),
    );
    let releases = request_response::Behaviour::with_codec(
        request_response::json::codec::Codec::default()
            .set_request_size_maximum(MAX_RELEASES_REQUEST)
            .set_response_size_maximum(MAX_RELEASES_REPLY),
        [(
            StreamProtocol::new(RELEASES_PROTOCOL),
            request_response::ProtocolSupport::Full,
        )],
        request_response::Config::default()
            .with_request_timeout(Duration::from_secs(60))
            .with_max_concurrent_streams(MAX_STREAMS_PER_CONNECTION),
    );
    let blobs = libp2p_stream::Behaviour::new();
    let models = request_response::Behaviour::with_codec(
        request_response::json::codec::Codec::default()
            .set_request_size_maximum(MAX_MODEL_REQUEST)
            .set_response_size_maximum(MAX_MODEL_REPLY),
        [(
            StreamProtocol::new(MODELS_PROTOCOL),
            request_response::ProtocolSupport::Full,
        )],
        request_response::Config::default()
            .with_request_timeout(Duration::from_secs(10))
            .with_max_concurrent_streams(MAX_STREAMS_PER_CONNECTION),
    );
    let push = request_response::Behaviour::with_codec(
        request_response::json::codec::Codec::default()
            .set_request_size_maximum(MAX_PUSH_REQUEST)
            .set_response_size_maximum(MAX_PUSH_REPLY),
        [(
            StreamProtocol::new(PUSH_PROTOCOL),
            request_response::ProtocolSupport::Full,
        )],
        request_response::Config::default()
            .with_request_timeout(Duration::from_secs(10))
            .with_max_concurrent_streams(MAX_STREAMS_PER_CONNECTION),
    );
    let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
    kad_config
        .set_query_timeout(KAD_QUERY_TIMEOUT)
        .set_provider_record_ttl(Some(PROVIDER_TTL))
        .set_provider_publication_interval(Some(PROVIDER_REPUBLISH))
        .set_record_ttl(Some(PROVIDER_TTL))
        .set_publication_interval(None)
        .set_replication_interval(None)
        // Only members enter the routing table (added once their credential checked).
        .set_kbucket_inserts(kad::BucketInserts::Manual)
        // Provider records are stored by the event loop, members' and for models' keys only.
        .set_record_filtering(kad::StoreInserts::FilterBoth);
    let store = kad::store::MemoryStore::with_config(
        local,
        kad::store::MemoryStoreConfig {
            max_records: 0,
            max_value_bytes: 0,
            max_providers_per_key: MAX_PROVIDERS_PER_KEY,
            max_provided_keys: MAX_PROVIDED_KEYS,
        },
    );
    let mut kad = kad::Behaviour::with_config(local, store, kad_config);
    // Members answer each other's queries whatever addresses they can confirm (loopback).
    kad.set_mode(Some(kad::Mode::Server));
    let gossip_config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(MAX_GOSSIP)
        .heartbeat_interval(Duration::from_secs(1))
        .build()
        .map_err(swarm_error("gossipsub configuration"))?;
    let mut gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        gossip_config,
    )
    .map_err(|e| ReplicationError::Swarm {
        what: "gossipsub",
        source: e.into(),
    })?;
    // Scores decide who hears the gossip: a peer not (yet) judged a member is scored below
    // every threshold (no message, no IHAVE, no mesh place, its own RPCs ignored), a member at
    // zero. Only the application's score counts: the penalties meant for open networks (IP
    // colocation, on loopback every member; behaviour; slowness) could otherwise silence a
    // member.
    let params = gossipsub::PeerScoreParams {
        app_specific_weight: 1.0,
        ip_colocation_factor_weight: 0.0,
        behaviour_penalty_weight: 0.0,
        slow_peer_weight: 0.0,
        ..Default::default()
    };
    gossipsub
        .with_peer_score(params, gossipsub::PeerScoreThresholds::default())
        .map_err(|e| ReplicationError::Swarm {
            what: "gossipsub scores",
            source: e.into(),
        })?;
    let mdns = if mdns_on {
        Some(
            mdns::tokio::Behaviour::new(mdns::Config::default(), local)
                .map_err(swarm_error("mDNS (replication.mdns)"))?,
        )
    } else {
        None
    };
    Ok(Behaviour {
        gate: allow_block_list::Behaviour::default(),
        limits: connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
                .with_max_pending_outgoing(Some(MAX_PENDING_OUTGOING))
                .with_max_established_incoming(Some(MAX_INCOMING))
                .with_max_established_per_peer(Some(MAX_PER_PEER)),
        ),
        identify,
        ping: ping::Behaviour::new(
            ping::Config::new()
                .with_interval(PING_INTERVAL)
                .with_timeout(PING_TIMEOUT),
        ),
        hello,
        schematics,
        releases,
        blobs,
        models,
        push,
        kad: KadGate::new(kad, admitted),
        gossipsub,
        mdns: Toggle::from(mdns),
    })
}

fn build(
    key: libp2p::identity::Keypair,
    mdns_on: bool,
    admitted: Admitted,
) -> Result<Swarm<Behaviour>, ReplicationError> {
    let behaviour = behaviour(&key, mdns_on, admitted)?;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::new().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(swarm_error("the TCP transport"))?
        .with_quic()
        .with_behaviour(|_| behaviour)
        .map_err(|e| ReplicationError::Swarm {
            what: "the behaviour",
            source: Box::new(e),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .with_connection_timeout(HANDSHAKE_TIMEOUT)
        .build();
    Ok(swarm)
}

/// Builds the swarm for `config` on the node identity of `cluster`, binds every listen
/// address (waiting until each reports its bound address) and returns the handle and the
/// worker that runs the event loop.
pub async fn start(
    config: &ReplicationConfig,
    cluster: Arc<Cluster>,
    schematics: SchematicStore,
    releases: ReleaseParts,
    recorder: &Arc<dyn Recorder + Send + Sync>,
) -> Result<(Replication, SwarmWorker), ReplicationError> {
    let store = schematics.clone();
    let ids = tokio::task::spawn_blocking(move || store.ids())
        .await
        .map_err(swarm_error("listing the schematics"))?
        .map_err(swarm_error("listing the schematics"))?;
    let (key, created) = cluster.identity()?;
    let local = key.public().to_peer_id();
    if created {
        tracing::info!(peer_id = %local, "generated the node identity");
    }
    let admitted = Admitted::default();
    let mut swarm = build(key, config.mdns, admitted.clone())?;
    let mut pending = HashSet::new();
    for text in &config.listen_addrs {
        let addr: Multiaddr = text.parse().map_err(|e| ReplicationError::Listen {
            addr: text.clone(),
            source: Box::new(e),
        })?;
        let id = swarm
            .listen_on(addr)
            .map_err(|e| ReplicationError::Listen {
                addr: text.clone(),
                source: Box::new(e),
            })?;
        pending.insert((id, text.clone()));
    }
    let mut bound = Vec::new();
    let deadline = tokio::time::Instant::now() + LISTEN_DEADLINE;
    while !pending.is_empty() {
        let event = match tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
            Ok(e) => e,
            Err(_) => {
                let addrs: Vec<&str> = pending.iter().map(|(_, a)| a.as_str()).collect();
                return Err(ReplicationError::Listen {
                    addr: addrs.join(", "),
                    source: "no bound address reported in time".into(),
                });
            }
        };
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                pending.retain(|(id, _)| *id != listener_id);
                bound.push(address);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason: Err(e),
                ..
            }
            | SwarmEvent::ListenerError {
                listener_id,
                error: e,
            } => {
                let addr = pending
                    .iter()
                    .find(|(id, _)| *id == listener_id)
                    .map(|(_, a)| a.clone())
                    .unwrap_or_default();
                return Err(ReplicationError::Listen {
                    addr,
                    source: Box::new(e),
                });
            }
            _ => {}
        }
    }
    for a in &bound {
        tracing::info!(addr = %a, peer_id = %local, "replication listener bound");
    }
    let (tx, rx) = mpsc::channel(64);
    let metrics = ReplicationMetrics::new(recorder);
    let handle = Replication {
        tx,
        peer_id: local,
        admitted,
        metrics: metrics.clone(),
        trees: Arc::default(),
        partials: Arc::default(),
        streams: swarm.behaviour().blobs.new_control(),
        slow: Arc::default(),
        chunk_pool: Arc::new(super::chunk_pool::ChunkPool::new(
            config.transfer_memory_mib as usize,
        )),
        placement: Arc::new(super::rendezvous::Placement::new(local, config.factor)),
        unannounced: Arc::default(),
    };
    let event_loop = EventLoop::new(
        swarm,
        cluster,
        config,
        bound,
        rx,
        metrics,
        (schematics, ids),
        (releases, handle.clone()),
    );
    Ok((
        handle,
        SwarmWorker {
            event_loop: Some(event_loop),
        },
    ))
}

/// The node worker that runs the swarm's event loop until the node stops.
pub struct SwarmWorker {
    event_loop: Option<EventLoop>,
}

impl Worker for SwarmWorker {
    fn name(&self) -> &str {
        "replication"
    }

    fn work<'a>(
        &'a mut self,
        stop: &'a mut StopSignal,
    ) -> BoxFuture<'a, Result<WorkerState, WorkError>> {
        Box::pin(async move {
            if let Some(event_loop) = self.event_loop.take() {
                event_loop.run(stop).await;
            }
            Ok(WorkerState::Done)
        })
    }

    fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::pending())
    }
}
