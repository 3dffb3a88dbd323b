//! What the event loop keeps per peer: its state with this node (known, pending, member,
//! refused either way), its addresses and connections, and its signs of life.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

use super::DIAL_BACKOFF;
use crate::replication::cluster::{KnownPeer, MAX_ADDRS_PER_PEER};
use crate::replication::dialable;
use crate::replication::kad_gate::Standing;
use crate::replication::membership::{Envelope, Refusal};
use crate::replication::swarm::SILENT_AFTER;

/// Where a peer stands with this node.
#[derive(Debug, Clone)]
pub(super) enum State {
    /// Remembered or discovered, not connected in this run.
    Known,
    /// Connected; its credential has not been checked yet.
    Pending { since: Instant },
    /// A member (its credential's expiry).
    Member { expires: Option<u64> },
    /// Refused by this node, until then.
    Refused { reason: Refusal, until: Instant },
    /// It refused this node.
    RefusedUs {
        reason: String,
        since: Instant,
        until: Instant,
    },
}

impl State {
    /// Where a peer in this state stands for the members-only protocols (Kademlia, gossip).
    pub(super) fn standing(&self) -> Standing {
        match self {
            State::Member { .. } => Standing::Member,
            State::Pending { .. } => Standing::Judging,
            State::Known | State::Refused { .. } | State::RefusedUs { .. } => Standing::Outsider,
        }
    }

    /// The state a peer takes when its first connection opens. A member stays one: its
    /// credential was checked, and expiry and revocation still end it; the peer may not have
    /// seen the old connections close, and then sends no new hello. A peer refused a moment
    /// ago (its connection got in before the deny) stays refused; its hello is judged again
    /// and answered with the reason. Any other peer has [`super::HELLO_TIMEOUT`] to present
    /// one.
    pub(super) fn reconnected(&self, now: Instant) -> State {
        match self {
            State::Member { .. } | State::Refused { .. } => self.clone(),
            State::Known | State::Pending { .. } | State::RefusedUs { .. } => {
                State::Pending { since: now }
            }
        }
    }
}

/// What this node knows of one peer.
#[derive(Debug)]
pub(super) struct Peer {
    pub(super) addrs: BTreeSet<Multiaddr>,
    pub(super) connections: usize,
    pub(super) state: State,
    pub(super) rtt: Option<Duration>,
    /// When it last answered a ping (or opened a connection): a sign of life.
    pub(super) answered: Instant,
    /// Whether it was last seen connected but silent (see [`Peer::responding`]).
    pub(super) silent: bool,
    /// Whether it welcomed this node on the current connection.
    pub(super) welcomed: bool,
    /// What its welcome brought before its own hello showed it to be a member: applied then,
    /// dropped when it is refused or disconnects (a stranger's lists are never used).
    pub(super) welcome: Option<Box<Welcome>>,
    /// When its first open connection was established.
    pub(super) connected_since: Instant,
    /// Times this node's hello was sent again since then.
    pub(super) hello_retries: u8,
    pub(super) next_dial: Instant,
    pub(super) backoff: Duration,
}

/// The membership news a peer's welcome carries (already cut to their bounds).
#[derive(Debug)]
pub(super) struct Welcome {
    /// Revocations it holds.
    pub revocations: Vec<Envelope>,
    /// Members it knows, with their addresses.
    pub peers: Vec<KnownPeer>,
}

impl Peer {
    /// A peer first heard of at `now`: known, not connected.
    pub(super) fn new(now: Instant) -> Self {
        Self {
            addrs: BTreeSet::new(),
            connections: 0,
            state: State::Known,
            rtt: None,
            answered: now,
            silent: false,
            welcomed: false,
            welcome: None,
            connected_since: now,
            hello_retries: 0,
            next_dial: now,
            backoff: DIAL_BACKOFF.0,
        }
    }

    /// Adds a dialable address (up to the bound); whether it was new.
    pub(super) fn add_addr(&mut self, a: Multiaddr) -> bool {
        if self.addrs.len() >= MAX_ADDRS_PER_PEER || !dialable(&a) {
            return false;
        }
        self.addrs.insert(a)
    }

    /// Adds an address a discovery source (identify, mDNS) reported, unless the peer is
    /// refused: a refused peer is not dialled back while its refusal lasts. Whether it was new.
    pub(super) fn discovered(&mut self, a: Multiaddr) -> bool {
        !matches!(self.state, State::Refused { .. }) && self.add_addr(a)
    }

    /// Whether it is connected and showed a sign of life within [`SILENT_AFTER`]: a stopped
    /// or hung process keeps its connections open but answers no ping.
    pub(super) fn responding(&self, now: Instant) -> bool {
        self.connections > 0 && now.duration_since(self.answered) < SILENT_AFTER
    }
}

/// `a` without a trailing `/p2p/…`.
pub(super) fn without_peer(mut a: Multiaddr) -> Multiaddr {
    if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
        a.pop();
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connected_peer_without_an_answer_for_the_bound_is_not_responding() {
        let start = Instant::now();
        let mut p = Peer::new(start);
        assert!(!p.responding(start), "not connected");
        p.connections = 1;
        assert!(p.responding(start + SILENT_AFTER / 2));
        assert!(!p.responding(start + SILENT_AFTER));
        // A ping answer makes it responding again.
        p.answered = start + SILENT_AFTER;
        assert!(p.responding(start + SILENT_AFTER + Duration::from_secs(1)));
    }

    #[test]
    fn a_member_stays_one_when_it_reconnects_and_others_present_a_credential_again() {
        let then = Instant::now();
        let now = then + Duration::from_secs(5);
        let member = State::Member { expires: Some(7) };
        assert!(matches!(
            member.reconnected(now),
            State::Member { expires: Some(7) }
        ));
        let refused = State::Refused {
            reason: Refusal::Silent,
            until: now,
        };
        assert!(matches!(
            refused.reconnected(now),
            State::Refused {
                reason: Refusal::Silent,
                ..
            }
        ));
        for other in [
            State::Known,
            State::Pending { since: then },
            State::RefusedUs {
                reason: "no".into(),
                since: then,
                until: now,
            },
        ] {
            assert!(
                matches!(other.reconnected(now), State::Pending { since } if since == now),
                "{other:?}"
            );
        }
    }

    #[test]
    fn the_peer_part_is_dropped() {
        let peer = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let a: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{peer}").parse().unwrap();
        assert_eq!(without_peer(a).to_string(), "/ip4/127.0.0.1/tcp/1");
    }
}
