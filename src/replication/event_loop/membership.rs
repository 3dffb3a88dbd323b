//! The membership side of the event loop: the hello exchanged on every new connection (the
//! credential check), refusals and how a refused peer is cut off, and revocations — received by
//! gossip or in a hello, applied when the cluster state changes.

use std::time::Instant;

use libp2p::PeerId;
use libp2p::gossipsub::{IdentTopic, MessageAcceptance};
use libp2p::request_response::{self, OutboundFailure, ResponseChannel};

use super::models::is_key;
use super::peer::Welcome;
use super::{
    Cut, EventLoop, HELLO_RETRIES, REFUSAL_FLUSH, REFUSAL_LINGER, REFUSED_FOR, REFUSED_US_FOR,
    Refusing, State,
};
use crate::catalog::Version;
use crate::causes::Causes;
use crate::replication::cluster::{KnownPeer, MAX_KNOWN_PEERS, MAX_REVOCATIONS};
use crate::replication::kad_gate::Standing;
use crate::replication::membership::{Refusal, check_member};
use crate::replication::protocol::{Gossip, Hello, HelloReply, membership_topic};
use crate::replication::test_settings::{self, IGNORE_HELLOS_ENV, WELCOME_STRANGERS_ENV};

/// Most hellos [`IGNORE_HELLOS_ENV`] may ask to ignore.
const MAX_IGNORED_HELLOS: u64 = 8;

/// The hellos still to ignore, and those held ([`IGNORE_HELLOS_ENV`]).
#[derive(Default)]
pub(super) struct IgnoredHellos {
    left: usize,
    held: Vec<ResponseChannel<HelloReply>>,
}

impl IgnoredHellos {
    /// What [`IGNORE_HELLOS_ENV`] asks for (bounded); none when unset or invalid.
    pub(super) fn from_env() -> Self {
        let n = test_settings::read(
            IGNORE_HELLOS_ENV,
            MAX_IGNORED_HELLOS,
            "the first hellos received are ignored",
        );
        Self {
            left: n.unwrap_or(0) as usize,
            held: Vec::new(),
        }
    }

    /// Holds `channel` unanswered if hellos are still to be ignored; else gives it back.
    fn ignore(
        &mut self,
        channel: ResponseChannel<HelloReply>,
    ) -> Option<ResponseChannel<HelloReply>> {
        if self.left == 0 {
            return Some(channel);
        }
        self.left -= 1;
        self.held.push(channel);
        None
    }
}

impl EventLoop {
    /// Takes the cluster's current membership: subscribes to the cluster's topic once in
    /// one, and applies new revocations (refuse, and tell the members).
    pub(super) fn reload_membership(&mut self) {
        let next = self.cluster.membership();
        let prev = std::mem::replace(&mut self.membership, next.clone());
        let Some(m) = next else {
            return;
        };
        if self.topic.is_none() {
            let topic = IdentTopic::new(membership_topic(&m.record.cluster));
            if let Err(e) = self.swarm.behaviour_mut().gossipsub.subscribe(&topic) {
                tracing::warn!(error = %e, "cannot subscribe to the membership topic");
            }
            self.topic = Some(topic);
            self.subscribe_schematics(&m.record.cluster);
            if prev.is_none() {
                // Founded or joined while running: say hello again to whoever is connected.
                let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                for p in connected {
                    self.send_hello(p);
                }
            }
        }
        let Some(prev) = prev else {
            // The state this node starts with: nothing new to tell or to refuse.
            if m.revocations.contains_key(&self.local) {
                self.removed_self = true;
                tracing::error!("this node was removed from the cluster: members refuse it");
            }
            let now = Instant::now();
            for (peer, (at, _)) in &m.revocations {
                if let Some(p) = self.peers.get_mut(peer) {
                    p.state = State::Refused {
                        reason: Refusal::Revoked(*at),
                        until: now + REFUSED_FOR,
                    };
                }
            }
            return;
        };
        for (peer, (at, env)) in &m.revocations {
            if prev.revocations.contains_key(peer) {
                continue;
            }
            if let Some(topic) = &self.topic {
                let msg = Gossip::Revocation {
                    revocation: env.clone(),
                };
                if let Ok(bytes) = serde_json::to_vec(&msg)
                    && let Err(e) = self
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(topic.clone(), bytes)
                {
                    tracing::debug!(error = %e, "revocation not published (no members connected, or known already)");
                }
            }
            if *peer == self.local {
                self.removed_self = true;
                tracing::error!(
                    "this node has been removed from the cluster: members refuse it from now on"
                );
            } else if self.peers.contains_key(peer) {
                // Not denied at the handshake yet: its next hello is answered with the
                // revocation, so the removed node learns of it.
                self.refuse(*peer, Refusal::Revoked(*at), Cut::Disconnect);
            }
        }
    }

    pub(super) fn send_hello(&mut self, peer: PeerId) {
        if self.welcome_strangers {
            // The lying stranger of the tests stays quiet: its welcome arrives unjudged.
            return;
        }
        let (cluster, credential) = match &self.membership {
            Some(m) => (Some(m.record.cluster.clone()), m.credential.clone()),
            None => (None, None),
        };
        self.swarm.behaviour_mut().hello.send_request(
            &peer,
            Hello {
                cluster,
                credential,
            },
        );
        self.asked.insert(peer);
    }

    /// Sends this node's hello to `peer` again after it failed, while `peer` is connected, has
    /// not welcomed this node on this connection, is not refused either way, and the retries
    /// are not spent: a hello lost to a connection that closed under it (both sides may dial
    /// at once, over QUIC and TCP) would otherwise leave the peer waiting until it refuses this
    /// node as silent. Whether it was sent.
    fn hello_again(&mut self, peer: PeerId) -> bool {
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        let retry = p.connections > 0
            && !p.welcomed
            && p.hello_retries < HELLO_RETRIES
            && !matches!(p.state, State::Refused { .. } | State::RefusedUs { .. });
        if retry {
            p.hello_retries += 1;
            self.send_hello(peer);
        }
        retry
    }

    /// A member's connection opened (its first, or a new one after all closed): log it, and
    /// tell the members what this node holds soon.
    pub(super) fn member_connected(&mut self, peer: PeerId) {
        tracing::info!(peer_id = %peer, "member connected");
        self.holdings_soon();
    }

    /// Cuts a refused peer off shortly after its hello is answered and this node's is too (so
    /// each side learns why the other refused it: closing a QUIC connection at once could drop
    /// the answer still in flight), or at the deadline; the tick does the cutting.
    pub(super) fn cut_when_done(&mut self, peer: PeerId) {
        let asked = self.asked.contains(&peer);
        if let Some(r) = self.refusing.get_mut(&peer)
            && r.answered
            && !asked
        {
            r.deadline = r.deadline.min(Instant::now() + REFUSAL_LINGER);
        }
    }

    /// A gossip message: taken (and forwarded) only from members, and only when well formed.
    pub(super) fn on_gossip(
        &mut self,
        from: &PeerId,
        source: Option<PeerId>,
        data: &[u8],
    ) -> MessageAcceptance {
        if !self.is_member(from) {
            return MessageAcceptance::Reject;
        }
        let gossip = match serde_json::from_slice::<Gossip>(data) {
            Ok(g) if well_formed(&g) => g,
            Ok(g) => {
                tracing::warn!(peer_id = %from, message = ?g, "ill-formed gossip message");
                return MessageAcceptance::Reject;
            }
            Err(e) => {
                tracing::warn!(peer_id = %from, error = %e, "malformed gossip message");
                return MessageAcceptance::Reject;
            }
        };
        let author = source.unwrap_or(*from);
        match gossip {
            Gossip::Revocation { revocation } => match self.cluster.add_revocation(&revocation) {
                Ok(_) => MessageAcceptance::Accept,
                Err(e) => {
                    tracing::warn!(peer_id = %from, error = %Causes(&e), "gossiped revocation rejected");
                    MessageAcceptance::Reject
                }
            },
            Gossip::Schematic { id } => {
                self.schematic_announced(*from, source, id);
                MessageAcceptance::Accept
            }
            Gossip::Release { version, revision } => {
                self.release_announced(*from, source, version, revision);
                MessageAcceptance::Accept
            }
            // Passed on even when its author is not judged here (yet): members may reach each
            // other only through others. Holdings are kept for members only.
            Gossip::Holdings { holdings } => {
                self.holdings_heard(author, holdings);
                MessageAcceptance::Accept
            }
            g @ (Gossip::Lease { .. } | Gossip::Built { .. }) => {
                self.model_gossip(author, g);
                MessageAcceptance::Accept
            }
        }
    }

    pub(super) fn on_hello_event(&mut self, event: request_response::Event<Hello, HelloReply>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.on_hello(peer, request, channel),
            request_response::Event::Message {
                peer,
                message: request_response::Message::Response { response, .. },
                ..
            } => {
                self.asked.remove(&peer);
                self.on_hello_reply(peer, response);
                self.cut_when_done(peer);
            }
            request_response::Event::OutboundFailure {
                peer,
                error: OutboundFailure::UnsupportedProtocols,
                ..
            } => {
                // Not our software, or not a version that checks membership.
                self.asked.remove(&peer);
                self.refuse(peer, Refusal::Silent, Cut::Block);
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                self.asked.remove(&peer);
                if self.hello_again(peer) {
                    tracing::debug!(peer_id = %peer, error = %error, "hello not answered: sent again");
                } else {
                    tracing::debug!(peer_id = %peer, error = %error, "hello not answered");
                    self.cut_when_done(peer);
                }
            }
            request_response::Event::ResponseSent { peer, .. }
            | request_response::Event::InboundFailure { peer, .. } => {
                if let Some(r) = self.refusing.get_mut(&peer) {
                    r.answered = true;
                }
                self.cut_when_done(peer);
            }
        }
    }

    /// A peer's hello: check its credential; welcome a member with what this node knows.
    pub(super) fn on_hello(
        &mut self,
        peer: PeerId,
        hello: Hello,
        channel: ResponseChannel<HelloReply>,
    ) {
        let Some(channel) = self.ignored_hellos.ignore(channel) else {
            tracing::warn!(peer_id = %peer, "a hello ignored ({IGNORE_HELLOS_ENV})");
            return;
        };
        if self.welcome_strangers {
            let made_up = KnownPeer {
                peer_id: PeerId::random().to_string(),
                addrs: vec!["/ip4/127.0.0.1/tcp/9".into()],
            };
            tracing::warn!(peer_id = %peer, made_up = %made_up.peer_id, "a hello welcomed blindly ({WELCOME_STRANGERS_ENV})");
            let reply = HelloReply::Welcome {
                revocations: Vec::new(),
                peers: vec![made_up],
            };
            let _ = self
                .swarm
                .behaviour_mut()
                .hello
                .send_response(channel, reply);
            return;
        }
        let verdict = match &self.membership {
            None => Err(Refusal::NotInCluster),
            Some(m) => check_member(
                &m.key,
                &m.revoked(),
                &peer,
                hello.credential.as_ref(),
                crate::clock::now_secs(),
            ),
        };
        let reply = match verdict {
            Ok(_)
                if matches!(
                    self.peers.get(&peer).map(|p| &p.state),
                    Some(State::RefusedUs { .. })
                ) =>
            {
                // A member by its credential, but it refused this node: nothing to do together.
                let _ = self.swarm.disconnect_peer_id(peer);
                return;
            }
            Ok(expires) => {
                let was_member = self.is_member(&peer);
                let Some(p) = self.peer(peer) else {
                    return;
                };
                p.state = State::Member { expires };
                let welcomed = p.welcomed;
                let welcome = p.welcome.take();
                self.dirty = true;
                if !was_member {
                    self.member_connected(peer);
                }
                if welcomed {
                    self.sync_schematics_with(peer);
                }
                if let Some(w) = welcome {
                    self.apply_welcome(peer, *w);
                }
                self.admit(peer);
                self.update_gauge();
                HelloReply::Welcome {
                    revocations: self
                        .membership
                        .as_ref()
                        .map(|m| m.revocations.values().map(|(_, e)| e.clone()).collect())
                        .unwrap_or_default(),
                    peers: self.known_members(Some(&peer)),
                }
            }
            Err(reason) => {
                let text = reason.to_string();
                let revocation = match (&reason, &self.membership) {
                    (Refusal::Revoked(_), Some(m)) => {
                        m.revocations.get(&peer).map(|(_, e)| e.clone())
                    }
                    _ => None,
                };
                self.refuse(peer, reason, Cut::AfterAnswer);
                HelloReply::Refused {
                    reason: text,
                    revocation,
                }
            }
        };
        if self
            .swarm
            .behaviour_mut()
            .hello
            .send_response(channel, reply)
            .is_err()
        {
            tracing::debug!(peer_id = %peer, "hello answer not sent: the connection closed");
        }
    }

    /// Takes in the news of a member's welcome: its revocations and the members it knows.
    fn apply_welcome(&mut self, peer: PeerId, welcome: Welcome) {
        for env in &welcome.revocations {
            if let Err(e) = self.cluster.add_revocation(env) {
                tracing::warn!(peer_id = %peer, error = %Causes(&e), "a revocation from a member was not accepted");
            }
        }
        for kp in welcome.peers {
            let Ok(id) = kp.peer_id.parse::<PeerId>() else {
                continue;
            };
            if id == self.local {
                continue;
            }
            let Some(p) = self.peer(id) else { break };
            for a in kp.addrs.iter().filter_map(|a| a.parse().ok()) {
                p.add_addr(a);
            }
        }
    }

    /// The answer to this node's hello.
    pub(super) fn on_hello_reply(&mut self, peer: PeerId, reply: HelloReply) {
        match reply {
            HelloReply::Welcome {
                mut revocations,
                mut peers,
            } => {
                // Both sides accept each other once each has the other's welcome and
                // verdict: then their schematics are compared.
                revocations.truncate(MAX_REVOCATIONS);
                peers.truncate(MAX_KNOWN_PEERS);
                let welcome = Welcome { revocations, peers };
                let member = self.is_member(&peer);
                let Some(p) = self.peers.get_mut(&peer) else {
                    return;
                };
                p.welcomed = true;
                if member {
                    self.sync_schematics_with(peer);
                    self.admit(peer);
                    self.apply_welcome(peer, welcome);
                } else if !matches!(p.state, State::Refused { .. }) {
                    // Its hello is not judged yet: its news waits for the verdict.
                    p.welcome = Some(Box::new(welcome));
                }
            }
            HelloReply::Refused { reason, revocation } => {
                tracing::error!(peer_id = %peer, reason = %reason, "a peer refused this node");
                if let Some(env) = revocation
                    && let Err(e) = self.cluster.add_revocation(&env)
                {
                    tracing::warn!(peer_id = %peer, error = %Causes(&e), "the revocation a peer sent was not accepted");
                }
                let Some(p) = self.peers.get_mut(&peer) else {
                    return;
                };
                // This node's own verdict on the peer, once made, is what `/status` shows.
                let keep = match p.state {
                    State::Refused { .. } => return,
                    // Its hello is still to be judged (bounded by the hello timeout): the
                    // verdict then decides, whatever the order the two answers came in.
                    State::Pending { .. } => true,
                    _ => false,
                };
                let now = Instant::now();
                p.state = State::RefusedUs {
                    reason,
                    since: now,
                    until: now + REFUSED_US_FOR,
                };
                // It takes no copies from this node until it is a member to it again.
                self.push.remembered.remove(&peer);
                if !keep {
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                self.keep_out(peer, Standing::Outsider);
                self.update_gauge();
            }
        }
    }

    /// Refuses `peer`: log, metric, state, and its connections cut as `cut` says.
    pub(super) fn refuse(&mut self, peer: PeerId, reason: Refusal, cut: Cut) {
        let already = matches!(
            self.peers.get(&peer).map(|p| &p.state),
            Some(State::Refused { reason: r, .. }) if *r == reason
        );
        if !already {
            tracing::warn!(peer_id = %peer, reason = %reason, "peer refused");
        }
        self.metrics.refused(&reason);
        let until = Instant::now() + REFUSED_FOR;
        let vouched = self.vouched.contains(&peer);
        if let Some(p) = self.peer(peer) {
            p.state = State::Refused { reason, until };
            p.welcome = None;
            if !vouched {
                // Where a refused peer listens is of no use: it would be dialled again once
                // its refusal ends, and again, for ever (a stranger that connected once).
                p.addrs.clear();
            }
        }
        self.hold.heard.remove(&peer);
        // Copies are no longer placed on it until it is a member again.
        self.push.remembered.remove(&peer);
        self.keep_out(peer, Standing::Outsider);
        match cut {
            Cut::AfterAnswer => {
                self.refusing.insert(
                    peer,
                    Refusing {
                        deadline: Instant::now() + REFUSAL_FLUSH,
                        answered: false,
                    },
                );
            }
            Cut::Block => self.cut_off(peer),
            Cut::Disconnect => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
        self.dirty = true;
        self.update_gauge();
    }

    /// Closes `peer`'s connections and denies new ones until its refusal ends.
    pub(super) fn cut_off(&mut self, peer: PeerId) {
        self.swarm.behaviour_mut().gate.block_peer(peer);
    }
}

/// Whether a gossip message's content is well formed: IDs, versions and keys as they are
/// written (a member forwards nothing else).
fn well_formed(gossip: &Gossip) -> bool {
    match gossip {
        Gossip::Revocation { .. } | Gossip::Holdings { .. } => true,
        Gossip::Schematic { id } => crate::schematic::is_valid_id(id),
        Gossip::Release { version, revision } => {
            Version::parse_strict(version).is_some()
                && revision.as_ref().is_none_or(|r| r.is_well_formed())
        }
        Gossip::Lease { key } | Gossip::Built { key, .. } => is_key(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(tag: &str) -> crate::catalog::Revision {
        crate::catalog::Revision {
            number: 2,
            tag: tag.into(),
        }
    }

    #[test]
    fn only_well_formed_gossip_is_taken() {
        let key = "ab".repeat(32);
        for good in [
            Gossip::Schematic { id: key.clone() },
            Gossip::Release {
                version: "v1.9.0".into(),
                revision: None,
            },
            Gossip::Release {
                version: "v1.9.0".into(),
                revision: Some(revision("0123456789abcdef0123456789abcdef")),
            },
            Gossip::Lease { key: key.clone() },
            Gossip::Built {
                key: key.clone(),
                ok: true,
            },
        ] {
            assert!(well_formed(&good), "{good:?}");
        }
        for bad in [
            Gossip::Schematic { id: "../x".into() },
            Gossip::Schematic {
                id: key.to_uppercase(),
            },
            Gossip::Release {
                version: "latest".into(),
                revision: None,
            },
            Gossip::Release {
                version: "v1.9.0/../../x".into(),
                revision: None,
            },
            Gossip::Release {
                version: "v1.9.0".into(),
                revision: Some(revision("../x")),
            },
            Gossip::Release {
                version: "v1.9.0".into(),
                revision: Some(revision(&"a".repeat(4096))),
            },
            Gossip::Lease { key: "".into() },
            Gossip::Built {
                key: format!("{key}0"),
                ok: false,
            },
        ] {
            assert!(!well_formed(&bad), "{bad:?}");
        }
    }
}
