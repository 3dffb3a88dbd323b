//! Find before build, the event loop's side: provider records of cache keys (Kademlia), the
//! build leases members announce by gossip, and the signed asset records this node hands to
//! members that fetch a model from it. The decisions (fetch, wait, build) are made off the loop
//! by `find` through commands; this side only keeps state and answers.
//!
//! Leases are kept in a `leases::LeaseTable` (how claims settle and end is described there).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use libp2p::PeerId;
use libp2p::kad::{self, GetProvidersOk, QueryResult};
use libp2p::request_response;
use tokio::sync::oneshot;

use super::EventLoop;
use crate::replication::kad_gate::Standing;
use crate::replication::leases::{LeaseState, LeaseTable};
use crate::replication::protocol::{Gossip, ModelReply, ModelRequest};

/// Provider lookups running at once.
const MAX_QUERIES: usize = 256;

/// The answer to a lease question: the state and how many members are connected.
#[derive(Debug, Clone)]
pub(crate) struct LeaseView {
    /// The key's state.
    pub state: LeaseState,
    /// Members connected now.
    pub members: usize,
}

/// The model side of the event loop's state.
pub(crate) struct ModelSync {
    leases: LeaseTable,
    queries: HashMap<kad::QueryId, (HashSet<PeerId>, oneshot::Sender<Vec<PeerId>>)>,
    gets: super::Pending<ModelReply>,
}

impl ModelSync {
    /// The state of node `local`.
    pub(crate) fn new(local: PeerId) -> Self {
        Self {
            leases: LeaseTable::new(local),
            queries: HashMap::new(),
            gets: HashMap::new(),
        }
    }
}

/// Whether `key` is a cache key (hex SHA-256).
pub(crate) fn is_key(key: &str) -> bool {
    key.len() == 64 && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl EventLoop {
    /// The lease view of `key`.
    pub(super) fn lease_view(&self, key: &str) -> LeaseView {
        let members = self.connected_members();
        LeaseView {
            state: self
                .models
                .leases
                .state(key, Instant::now(), |p| members.contains(p)),
            members: members.len(),
        }
    }

    /// Claims `key` for a build unless a member holds it (or built it, unless this node could
    /// not fetch it from that member, `lost`); answers the view after.
    pub(super) fn claim(&mut self, key: String, lost: Option<PeerId>) -> LeaseView {
        let members = self.connected_members();
        if self
            .models
            .leases
            .claim(&key, Instant::now(), |p| members.contains(p), lost)
        {
            self.publish_model_gossip(&Gossip::Lease { key: key.clone() });
        }
        self.lease_view(&key)
    }

    /// This node's build of `key` ended: tell the members; when it succeeded, ask the members
    /// chosen for its other copies (`replication.factor`) and provide it.
    pub(super) fn built(&mut self, key: String, ok: bool) {
        self.models.leases.finish(&key, ok, Instant::now());
        self.publish_model_gossip(&Gossip::Built {
            key: key.clone(),
            ok,
        });
        if ok {
            self.push_built(&key);
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

    /// A member announced a lease or the end of a build.
    pub(super) fn model_gossip(&mut self, from: PeerId, gossip: Gossip) {
        // Only a member's word on its own builds counts: an outsider's (a revoked member's,
        // passed on by a member that has not heard of the revocation yet) would otherwise
        // replace a member's lease or build in the table.
        if !self.is_member(&from) {
            return;
        }
        let now = Instant::now();
        match gossip {
            Gossip::Lease { key } if is_key(&key) => {
                self.models.leases.heard_lease(from, &key, now)
            }
            Gossip::Built { key, ok } if is_key(&key) => {
                self.models.leases.heard_built(from, &key, ok, now)
            }
            _ => {}
        }
    }

    /// Renews the leases of the builds this node runs.
    pub(super) fn renew_leases(&mut self, now: Instant) {
        for key in self.models.leases.due(now) {
            self.publish_model_gossip(&Gossip::Lease { key });
        }
    }

    /// A member judged: Kademlia answers it and routes to its addresses (members only are in
    /// the routing table), and gossip reaches it.
    pub(super) fn admit(&mut self, peer: PeerId) {
        let addrs: Vec<_> = self
            .peers
            .get(&peer)
            .map(|p| p.addrs.iter().cloned().collect())
            .unwrap_or_default();
        self.vouched.insert(peer);
        let behaviour = self.swarm.behaviour_mut();
        behaviour.gossipsub.set_application_score(&peer, 0.0);
        behaviour.kad.judge(peer, Standing::Member);
        for a in addrs {
            behaviour.kad.add_address(&peer, a);
        }
    }

    /// A peer not (or no longer) judged a member: gossip does not reach it, and Kademlia
    /// does not answer it (`standing` says whether it waits for its verdict).
    pub(super) fn keep_out(&mut self, peer: PeerId, standing: Standing) {
        let behaviour = self.swarm.behaviour_mut();
        behaviour
            .gossipsub
            .set_application_score(&peer, crate::replication::swarm::OUTSIDER_SCORE);
        behaviour.kad.judge(peer, standing);
    }

    pub(super) fn on_kad_event(&mut self, event: kad::Event) {
        if let kad::Event::InboundRequest {
            request:
                kad::InboundRequest::AddProvider {
                    record: Some(record),
                },
        } = event
        {
            self.on_provider_record(record);
            return;
        }
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

    /// Stores a provider record a peer announced (libp2p checked that it names the sender)
    /// when the sender is a member and the key a model's: a stranger's records, or a member's
    /// junk keys, would fill the store's key bound and keep this node from advertising its own.
    fn on_provider_record(&mut self, record: kad::ProviderRecord) {
        let key_ok = std::str::from_utf8(record.key.as_ref()).is_ok_and(is_key);
        let member = self.is_member(&record.provider);
        if !key_ok || !member {
            tracing::debug!(peer_id = %record.provider, member, key_ok, "a provider record not stored");
            self.metrics.providers_refused.increment(1);
            return;
        }
        if let Err(e) = kad::store::RecordStore::add_provider(
            self.swarm.behaviour_mut().kad.store_mut(),
            record,
        ) {
            tracing::debug!(error = %e, "a member's provider record not stored");
            self.metrics.providers_refused.increment(1);
        } else {
            self.metrics.providers_stored.increment(1);
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
                let place = if self.is_member(&peer) && is_key(&request.key) {
                    self.answer_place(peer, super::Answer::ModelRecord)
                } else {
                    None
                };
                let Some(place) = place else {
                    // Not a member, not a model's key, or busy: the asker takes the record
                    // from another holder, or builds.
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .models
                        .send_response(channel, ModelReply::Refused);
                    return;
                };
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
                    drop(place);
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
                super::settle(&mut self.models.gets, &request_id, Ok(response));
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                super::settle(&mut self.models.gets, &request_id, Err(error.to_string()));
            }
            _ => {}
        }
    }
}
