//! Find before build, the event loop's side: provider records of cache keys (Kademlia), the
//! build leases members announce by gossip, and the signed asset records this node hands to
//! members that fetch a model from it. The decisions (fetch, wait, build) are made off the loop
//! by `find` through commands; this side only keeps state and answers.
//!
//! Leases: a node about to build a key announces `Lease{key}` and renews it every
//! [`LEASE_RENEW`] while it builds; `Built{key, ok}` ends it. Two nodes that claim the same
//! key at once settle on the lower peer ID: a claim from a lower ID replaces the current holder
//! while the holder's claim is younger than [`CLAIM_SETTLE`]. A lease not renewed for
//! [`LEASE_SILENT`] is over (its holder went silent), and members waiting for it build.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::kad::{self, GetProvidersOk, QueryResult};
use libp2p::request_response::{self, OutboundRequestId};
use tokio::sync::oneshot;

use super::EventLoop;
use crate::replication::protocol::{Gossip, ModelReply, ModelRequest};

/// How often the holder of a lease renews it.
pub(crate) const LEASE_RENEW: Duration = Duration::from_secs(5);
/// A lease not renewed for this long is over.
pub(crate) const LEASE_SILENT: Duration = Duration::from_secs(20);
/// How long after a claim a lower peer ID's claim still wins: the time gossip takes to reach
/// every member (milliseconds on a LAN) with a wide margin.
pub(crate) const CLAIM_SETTLE: Duration = Duration::from_millis(1500);
/// Leases and build outcomes remembered.
const MAX_LEASES: usize = 4096;
/// How long a finished build is remembered (who holds the model; provider records take over).
const BUILT_FOR: Duration = Duration::from_secs(600);
/// Provider lookups running at once.
const MAX_QUERIES: usize = 256;

/// What this node knows of a key's build in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LeaseState {
    /// Nothing known.
    None,
    /// A member (or this node, `mine`) is building it.
    Held {
        /// The builder.
        holder: PeerId,
        /// Whether it is this node.
        mine: bool,
    },
    /// A member built it.
    Built {
        /// The builder.
        by: PeerId,
    },
    /// The builder's build failed.
    Failed,
}

/// The answer to a lease question: the state and how many members are connected.
#[derive(Debug, Clone)]
pub(crate) struct LeaseView {
    /// The key's state.
    pub state: LeaseState,
    /// Members connected now.
    pub members: usize,
}

#[derive(Debug)]
struct Lease {
    holder: PeerId,
    claimed: Instant,
    renewed: Instant,
    outcome: Option<(Instant, Option<PeerId>)>,
}

/// The model side of the event loop's state.
#[derive(Default)]
pub(crate) struct ModelSync {
    leases: HashMap<String, Lease>,
    /// Keys this node holds the lease of (renewed on the tick), and when it last renewed.
    own: HashMap<String, Instant>,
    queries: HashMap<kad::QueryId, (HashSet<PeerId>, oneshot::Sender<Vec<PeerId>>)>,
    gets: HashMap<OutboundRequestId, oneshot::Sender<Result<ModelReply, String>>>,
}

/// Whether `key` is a cache key (hex SHA-256).
pub(crate) fn is_key(key: &str) -> bool {
    key.len() == 64 && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl EventLoop {
    fn lease_state(&self, key: &str, now: Instant) -> LeaseState {
        let Some(l) = self.models.leases.get(key) else {
            return LeaseState::None;
        };
        match l.outcome {
            Some((_, Some(by))) => LeaseState::Built { by },
            Some((_, None)) => LeaseState::Failed,
            None if l.holder == self.local => LeaseState::Held {
                holder: l.holder,
                mine: true,
            },
            None if now.duration_since(l.renewed) < LEASE_SILENT && self.is_member(&l.holder) => {
                LeaseState::Held {
                    holder: l.holder,
                    mine: false,
                }
            }
            None => LeaseState::None,
        }
    }

    /// The lease view of `key`.
    pub(super) fn lease_view(&self, key: &str) -> LeaseView {
        LeaseView {
            state: self.lease_state(key, Instant::now()),
            members: self.connected_members().len(),
        }
    }

    /// Claims `key` for a build unless a member holds it; answers the view after.
    pub(super) fn claim(&mut self, key: String) -> LeaseView {
        let now = Instant::now();
        match self.lease_state(&key, now) {
            LeaseState::Held { .. } | LeaseState::Built { .. } => return self.lease_view(&key),
            LeaseState::None | LeaseState::Failed => {}
        }
        self.make_room(now);
        self.models.leases.insert(
            key.clone(),
            Lease {
                holder: self.local,
                claimed: now,
                renewed: now,
                outcome: None,
            },
        );
        self.models.own.insert(key.clone(), now);
        self.publish_model_gossip(&Gossip::Lease { key: key.clone() });
        self.lease_view(&key)
    }

    /// This node's build of `key` ended: tell the members, provide it when it succeeded.
    pub(super) fn built(&mut self, key: String, ok: bool) {
        let now = Instant::now();
        self.models.own.remove(&key);
        if let Some(l) = self.models.leases.get_mut(&key)
            && l.holder == self.local
        {
            l.outcome = Some((now, ok.then_some(self.local)));
        }
        self.publish_model_gossip(&Gossip::Built {
            key: key.clone(),
            ok,
        });
        if ok {
            self.provide(key);
        }
    }

    /// Advertises that this node holds the model of `key`.
    pub(super) fn provide(&mut self, key: String) {
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .kad
            .start_providing(kad::RecordKey::new(&key))
        {
            tracing::warn!(key = %key, error = %e, "the model is not advertised to the cluster");
        }
    }

    /// Looks up the members that provide `key`.
    pub(super) fn find_providers(&mut self, key: String, reply: oneshot::Sender<Vec<PeerId>>) {
        if self.models.queries.len() >= MAX_QUERIES || self.connected_members().is_empty() {
            let _ = reply.send(Vec::new());
            return;
        }
        let id = self
            .swarm
            .behaviour_mut()
            .kad
            .get_providers(kad::RecordKey::new(&key));
        self.models.queries.insert(id, (HashSet::new(), reply));
    }

    /// Asks `peer` for the signed record of `key`.
    pub(super) fn model_record(
        &mut self,
        peer: PeerId,
        key: String,
        reply: oneshot::Sender<Result<ModelReply, String>>,
    ) {
        if !self.is_member(&peer) {
            let _ = reply.send(Err("not a connected member".into()));
            return;
        }
        let id = self
            .swarm
            .behaviour_mut()
            .models
            .send_request(&peer, ModelRequest { key });
        self.models.gets.insert(id, reply);
    }

    fn publish_model_gossip(&mut self, msg: &Gossip) {
        let Some(topic) = self.sync.topic.clone() else {
            return;
        };
        let Ok(bytes) = serde_json::to_vec(msg) else {
            return;
        };
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            tracing::debug!(error = %e, "lease not announced (no member connected)");
        }
    }

    /// Forgets finished and silent leases beyond the bound.
    fn make_room(&mut self, now: Instant) {
        if self.models.leases.len() < MAX_LEASES {
            return;
        }
        let own = &self.models.own;
        self.models.leases.retain(|k, l| {
            own.contains_key(k)
                || match l.outcome {
                    Some((at, _)) => now.duration_since(at) < BUILT_FOR,
                    None => now.duration_since(l.renewed) < LEASE_SILENT,
                }
        });
        if self.models.leases.len() >= MAX_LEASES {
            let oldest = self
                .models
                .leases
                .iter()
                .filter(|(k, _)| !own.contains_key(*k))
                .min_by_key(|(_, l)| l.renewed)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.models.leases.remove(&k);
            }
        }
    }

    /// A member announced a lease or the end of a build.
    pub(super) fn model_gossip(&mut self, from: PeerId, gossip: Gossip) {
        let now = Instant::now();
        match gossip {
            Gossip::Lease { key } if is_key(&key) => {
                if from == self.local {
                    return;
                }
                self.make_room(now);
                let entry = self.models.leases.entry(key.clone());
                let l = entry.or_insert(Lease {
                    holder: from,
                    claimed: now,
                    renewed: now,
                    outcome: None,
                });
                if l.holder == from {
                    l.renewed = now;
                    l.outcome = None;
                } else if l.outcome.is_some()
                    || now.duration_since(l.renewed) >= LEASE_SILENT
                    || (from < l.holder && now.duration_since(l.claimed) < CLAIM_SETTLE)
                {
                    // A finished or silent lease, or a simultaneous claim by a lower ID.
                    *l = Lease {
                        holder: from,
                        claimed: now,
                        renewed: now,
                        outcome: None,
                    };
                    if self.models.own.remove(&key).is_some() {
                        tracing::debug!(key = %key, peer_id = %from, "another member builds this model");
                    }
                }
            }
            Gossip::Built { key, ok } if is_key(&key) => {
                self.make_room(now);
                let l = self.models.leases.entry(key).or_insert(Lease {
                    holder: from,
                    claimed: now,
                    renewed: now,
                    outcome: None,
                });
                if l.holder == from || ok {
                    l.holder = from;
                    l.outcome = Some((now, ok.then_some(from)));
                }
            }
            _ => {}
        }
    }

    /// Renews the leases of the builds this node runs.
    pub(super) fn renew_leases(&mut self, now: Instant) {
        let due: Vec<String> = self
            .models
            .own
            .iter()
            .filter(|(_, at)| now.duration_since(**at) >= LEASE_RENEW)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.models.own.insert(key.clone(), now);
            if let Some(l) = self.models.leases.get_mut(&key) {
                l.renewed = now;
            }
            self.publish_model_gossip(&Gossip::Lease { key });
        }
    }

    /// Adds a member's addresses to the routing table (members only are in it).
    pub(super) fn kad_add(&mut self, peer: PeerId) {
        let addrs: Vec<_> = self
            .peers
            .get(&peer)
            .map(|p| p.addrs.iter().cloned().collect())
            .unwrap_or_default();
        for a in addrs {
            self.swarm.behaviour_mut().kad.add_address(&peer, a);
        }
    }

    pub(super) fn on_kad_event(&mut self, event: kad::Event) {
        if let kad::Event::OutboundQueryProgressed {
            id, result, step, ..
        } = event
        {
            let QueryResult::GetProviders(result) = result else {
                return;
            };
            let local = self.local;
            let members = self.connected_members();
            if let Some((found, _)) = self.models.queries.get_mut(&id)
                && let Ok(GetProvidersOk::FoundProviders { providers, .. }) = result
            {
                found.extend(
                    providers
                        .into_iter()
                        .filter(|p| *p != local && members.contains(p)),
                );
            }
            let done = step.last
                || self
                    .models
                    .queries
                    .get(&id)
                    .is_some_and(|(f, _)| !f.is_empty());
            if done && let Some((found, reply)) = self.models.queries.remove(&id) {
                if !step.last
                    && let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id)
                {
                    q.finish();
                }
                let _ = reply.send(found.into_iter().collect());
            }
        }
    }

    pub(super) fn on_models_event(
        &mut self,
        event: request_response::Event<ModelRequest, ModelReply>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                if !self.is_member(&peer) || !is_key(&request.key) {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .models
                        .send_response(channel, ModelReply::Refused);
                    return;
                }
                let records = self.rel.records();
                let jobs = self.rel.jobs();
                tokio::task::spawn_blocking(move || {
                    let reply = match records.get_raw(&request.key) {
                        Ok(Some(raw)) => match String::from_utf8(raw) {
                            Ok(record) => ModelReply::Record { record },
                            Err(_) => ModelReply::Missing,
                        },
                        _ => ModelReply::Missing,
                    };
                    let _ = jobs.send(super::releases::Job::ServeModel { channel, reply });
                });
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(w) = self.models.gets.remove(&request_id) {
                    let _ = w.send(Ok(response));
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(w) = self.models.gets.remove(&request_id) {
                    let _ = w.send(Err(error.to_string()));
                }
            }
            _ => {}
        }
    }
}
