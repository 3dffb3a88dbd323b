//! Kademlia answered for members only. libp2p's Kademlia answers every peer's FIND_NODE and
//! GET_PROVIDERS itself, from the routing table (members) and the provider store (who holds
//! which model), so a stranger in its hello window could list the members and their
//! addresses. [`KadGate`] wraps the behaviour: a request from a peer judged a member goes
//! through, one from a peer still being judged waits (bounded) for the verdict, and any other
//! is reset, so the asker learns nothing. The gate keeps the judged members in [`Admitted`],
//! which the blob streams read too.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::{Deref, DerefMut};
use std::task::{Context, Poll, Waker};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::kad;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

use super::admitted::Admitted;

/// The Kademlia behaviour the swarm runs.
type Kad = kad::Behaviour<kad::store::MemoryStore>;
/// What a Kademlia connection handler reports (a remote's requests among it).
type KadOut = THandlerOutEvent<Kad>;
/// What a Kademlia connection handler is told (answers, resets).
type KadIn = THandlerInEvent<Kad>;

/// Requests held for one peer still being judged: a member's first queries are a few.
const MAX_HELD_PER_PEER: usize = 8;
/// Requests held for all peers being judged.
const MAX_HELD: usize = 1024;

/// Where a peer stands, as the membership check tells the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Judged a member: answered.
    Member,
    /// Its hello is not judged yet: its requests wait.
    Judging,
    /// Anything else (refused, refused us, unknown): its requests are reset.
    Outsider,
}

/// What becomes of a remote's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Answered (a member's).
    Pass,
    /// Kept until its peer's verdict.
    Hold,
    /// Reset unanswered.
    Reset,
}

/// A remote's Kademlia request waiting for its peer's verdict.
struct Held {
    connection: ConnectionId,
    event: KadOut,
}

/// Kademlia, answering members only (see the module documentation).
pub(crate) struct KadGate {
    inner: Kad,
    members: Admitted,
    held: HashMap<PeerId, Vec<Held>>,
    held_count: usize,
    /// Connected peers judged outsiders (forgotten when their last connection closes: a
    /// subset of `connected`, so the swarm's connection limits bound it too).
    outsiders: HashSet<PeerId>,
    /// Peers with a connection open (bounded by the swarm's connection limits).
    connected: HashSet<PeerId>,
    resets: VecDeque<ToSwarm<kad::Event, KadIn>>,
    waker: Option<Waker>,
}

impl KadGate {
    /// Wraps `inner`, recording its verdicts in `members`.
    pub(crate) fn new(inner: Kad, members: Admitted) -> Self {
        Self {
            inner,
            members,
            held: HashMap::new(),
            held_count: 0,
            outsiders: HashSet::new(),
            connected: HashSet::new(),
            resets: VecDeque::new(),
            waker: None,
        }
    }

    /// Records `peer`'s standing: a member's held requests are answered, an outsider's reset
    /// (as are its later ones, and it leaves the routing table: members' lookups do not name
    /// it).
    pub(crate) fn judge(&mut self, peer: PeerId, standing: Standing) {
        if standing != Standing::Outsider {
            self.outsiders.remove(&peer);
        }
        match standing {
            Standing::Member => {
                self.members.insert(peer);
                for h in self.release(&peer) {
                    self.inner
                        .on_connection_handler_event(peer, h.connection, h.event);
                }
            }
            Standing::Judging => {
                self.members.remove(&peer);
            }
            Standing::Outsider => {
                self.members.remove(&peer);
                // Remembered while connected only: a peer judged away would stay for ever.
                if self.connected.contains(&peer) {
                    self.outsiders.insert(peer);
                }
                self.inner.remove_peer(&peer);
                for h in self.release(&peer) {
                    self.reset(peer, h.connection, h.event);
                }
            }
        }
        self.wake();
    }

    fn release(&mut self, peer: &PeerId) -> Vec<Held> {
        let held = self.held.remove(peer).unwrap_or_default();
        self.held_count -= held.len();
        held
    }

    /// Tells the handler to reset the stream of `event` if it is a request awaiting an answer
    /// (a provider announcement has none: it is dropped).
    fn reset(&mut self, peer: PeerId, connection: ConnectionId, event: KadOut) {
        let request_id = match event {
            KadOut::FindNodeReq { request_id, .. }
            | KadOut::GetProvidersReq { request_id, .. }
            | KadOut::GetRecord { request_id, .. }
            | KadOut::PutRecord { request_id, .. } => request_id,
            _ => return,
        };
        self.resets.push_back(ToSwarm::NotifyHandler {
            peer_id: peer,
            handler: NotifyHandler::One(connection),
            event: KadIn::Reset(request_id),
        });
    }

    /// What becomes of a request from `peer` now.
    fn route(&self, peer: &PeerId) -> Route {
        if self.members.contains(peer) {
            return Route::Pass;
        }
        let for_peer = self.held.get(peer).map_or(0, Vec::len);
        if self.outsiders.contains(peer)
            || for_peer >= MAX_HELD_PER_PEER
            || self.held_count >= MAX_HELD
        {
            Route::Reset
        } else {
            Route::Hold
        }
    }

    /// `peer` opened a connection.
    fn came(&mut self, peer: PeerId) {
        self.connected.insert(peer);
    }

    /// `peer`'s last connection closed: it is judged again when it comes back.
    fn gone(&mut self, peer: &PeerId) {
        self.connected.remove(peer);
        self.outsiders.remove(peer);
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// Whether `event` is a remote's request (answered from this node's tables) rather than news
/// of the connection or an answer to this node's own query.
fn is_request(event: &KadOut) -> bool {
    matches!(
        event,
        KadOut::FindNodeReq { .. }
            | KadOut::GetProvidersReq { .. }
            | KadOut::AddProvider { .. }
            | KadOut::GetRecord { .. }
            | KadOut::PutRecord { .. }
    )
}

impl Deref for KadGate {
    type Target = Kad;

    fn deref(&self) -> &Kad {
        &self.inner
    }
}

impl DerefMut for KadGate {
    fn deref_mut(&mut self) -> &mut Kad {
        &mut self.inner
    }
}

impl NetworkBehaviour for KadGate {
    type ConnectionHandler = THandler<Kad>;
    type ToSwarm = kad::Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match &event {
            FromSwarm::ConnectionEstablished(c) => self.came(c.peer_id),
            FromSwarm::ConnectionClosed(c) => {
                if c.remaining_established == 0 {
                    self.gone(&c.peer_id);
                }
                if let Some(held) = self.held.get_mut(&c.peer_id) {
                    // Its streams went with it: nothing left to answer or reset.
                    let before = held.len();
                    held.retain(|h| h.connection != c.connection_id);
                    self.held_count -= before - held.len();
                    if held.is_empty() {
                        self.held.remove(&c.peer_id);
                    }
                }
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: KadOut,
    ) {
        let route = if is_request(&event) {
            self.route(&peer)
        } else {
            Route::Pass
        };
        match route {
            Route::Pass => self
                .inner
                .on_connection_handler_event(peer, connection, event),
            Route::Reset => {
                self.reset(peer, connection, event);
                self.wake();
            }
            Route::Hold => {
                self.held
                    .entry(peer)
                    .or_default()
                    .push(Held { connection, event });
                self.held_count += 1;
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<kad::Event, KadIn>> {
        if let Some(r) = self.resets.pop_front() {
            return Poll::Ready(r);
        }
        self.waker = Some(cx.waker().clone());
        self.inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> KadGate {
        let me = PeerId::random();
        KadGate::new(
            Kad::new(me, kad::store::MemoryStore::new(me)),
            Admitted::default(),
        )
    }

    /// Peers in the routing table.
    fn routed(g: &mut KadGate) -> usize {
        g.inner.kbuckets().map(|b| b.num_entries()).sum()
    }

    #[test]
    fn a_peer_judged_an_outsider_is_reset_until_it_goes_and_leaves_the_routing_table() {
        let mut g = gate();
        let p = PeerId::random();
        g.came(p);
        // Unjudged: held.
        assert_eq!(g.route(&p), Route::Hold);
        g.judge(p, Standing::Member);
        assert_eq!(g.route(&p), Route::Pass);
        g.inner
            .add_address(&p, "/ip4/127.0.0.1/tcp/1".parse().unwrap());
        assert_eq!(routed(&mut g), 1);
        // Refused: reset at once (not held until its connection closes), and gone from the
        // table that members' lookups are answered from.
        g.judge(p, Standing::Outsider);
        assert_eq!(g.route(&p), Route::Reset);
        assert_eq!(routed(&mut g), 0);
        // Back after its last connection closed: judged again.
        g.gone(&p);
        assert_eq!(g.route(&p), Route::Hold);
        g.came(p);
        g.judge(p, Standing::Outsider);
        g.judge(p, Standing::Judging);
        assert_eq!(g.route(&p), Route::Hold);
        // Judged an outsider while not connected (an expiry, a revocation): not remembered,
        // so the set holds connected peers only.
        let away = PeerId::random();
        g.judge(away, Standing::Outsider);
        assert!(!g.outsiders.contains(&away));
    }
}
