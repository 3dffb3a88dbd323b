//! The event loop's upkeep, once a second: refusals that are due, expired credentials,
//! silent peers (no credential in time) and silent members (no ping answered), redials with
//! backoff, the periodic schematic and release round, lease renewals, and saving the members'
//! addresses.

use std::time::Instant;

use libp2p::PeerId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};

use super::{Cut, DIAL_BACKOFF, EventLoop, HELLO_TIMEOUT, REFUSED_FOR, SAVE_EVERY, State};
use crate::causes::Causes;
use crate::replication::cluster::{KnownPeer, MAX_KNOWN_PEERS};
use crate::replication::membership::Refusal;

impl EventLoop {
    pub(super) fn on_tick(&mut self) {
        let now = Instant::now();
        let now_secs = crate::clock::now_secs();
        let due: Vec<PeerId> = self
            .refusing
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in due {
            self.refusing.remove(&p);
            self.cut_off(p);
        }
        let revoked = self
            .membership
            .as_ref()
            .map(|m| m.revoked())
            .unwrap_or_default();
        let mut silent = Vec::new();
        let mut expired = Vec::new();
        let mut unblock = Vec::new();
        let mut hang_up = Vec::new();
        let mut cut = Vec::new();
        for (id, p) in &mut self.peers {
            match &p.state {
                State::Pending { since } if p.connections > 0 && now - *since > HELLO_TIMEOUT => {
                    silent.push(*id);
                }
                State::Member {
                    expires: Some(at), ..
                } if *at <= now_secs => expired.push((*id, *at)),
                State::Refused { until, .. } if *until <= now => {
                    if let Some(at) = revoked.get(id) {
                        // Stays denied as long as it stays removed.
                        p.state = State::Refused {
                            reason: Refusal::Revoked(*at),
                            until: now + REFUSED_FOR,
                        };
                    } else {
                        p.state = State::Known;
                        unblock.push(*id);
                    }
                }
                State::RefusedUs { until, .. } if *until <= now => p.state = State::Known,
                State::RefusedUs { since, .. }
                    if p.connections > 0 && now - *since > HELLO_TIMEOUT =>
                {
                    hang_up.push(*id);
                }
                // Refused, connected, and no hello answered in time: cut off.
                State::Refused { .. }
                    if p.connections > 0
                        && now - p.connected_since > HELLO_TIMEOUT
                        && !self.refusing.contains_key(id) =>
                {
                    cut.push(*id);
                }
                _ => {}
            }
        }
        for id in silent {
            self.refuse(id, Refusal::Silent, Cut::Block);
        }
        for (id, at) in expired {
            self.refuse(id, Refusal::Expired(at), Cut::Block);
        }
        for id in unblock {
            self.swarm.behaviour_mut().gate.unblock_peer(id);
        }
        for id in hang_up {
            let _ = self.swarm.disconnect_peer_id(id);
        }
        for id in cut {
            self.cut_off(id);
        }
        self.watch_silence(now);
        self.redial(now);
        self.schematic_round(now);
        self.holdings_round(now);
        self.renew_leases(now);
        self.push_round();
        if self.dirty && now.duration_since(self.last_save) >= SAVE_EVERY {
            self.save_peers();
        }
    }

    /// Dials members and candidates that are not connected, each with its own backoff (not
    /// once this node was removed: members refuse it).
    fn redial(&mut self, now: Instant) {
        if self.removed_self {
            return;
        }
        let mut dials = Vec::new();
        for (id, p) in &mut self.peers {
            let wanted = matches!(p.state, State::Known | State::Member { .. });
            if !wanted || p.connections > 0 || p.addrs.is_empty() || p.next_dial > now {
                continue;
            }
            p.next_dial = now + p.backoff;
            p.backoff = (p.backoff * 2).min(DIAL_BACKOFF.1);
            dials.push((*id, p.addrs.iter().cloned().collect::<Vec<_>>()));
        }
        for (id, addrs) in dials {
            let opts = DialOpts::peer_id(id)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(peer_id = %id, error = %e, "dial not started");
            }
        }
    }

    /// Members and their addresses (without `except`).
    pub(super) fn known_members(&self, except: Option<&PeerId>) -> Vec<KnownPeer> {
        self.peers
            .iter()
            .filter(|(id, p)| {
                Some(*id) != except
                    && matches!(p.state, State::Member { .. })
                    && !p.addrs.is_empty()
            })
            .take(MAX_KNOWN_PEERS)
            .map(|(id, p)| KnownPeer {
                peer_id: id.to_string(),
                addrs: p.addrs.iter().map(ToString::to_string).collect(),
            })
            .collect()
    }

    pub(super) fn save_peers(&mut self) {
        let mut members = self.known_members(None);
        // The members remembered and not met in this run (down all along) are kept too: the
        // members that did not restart still rank them where copies go.
        for id in self.rendezvous_members() {
            let name = id.to_string();
            if members.len() >= MAX_KNOWN_PEERS || members.iter().any(|m| m.peer_id == name) {
                continue;
            }
            let addrs = self
                .peers
                .get(&id)
                .map(|p| p.addrs.iter().map(ToString::to_string).collect())
                .unwrap_or_default();
            members.push(KnownPeer {
                peer_id: name,
                addrs,
            });
        }
        members.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        if members.is_empty() && !self.dirty {
            return;
        }
        if let Err(e) = self.cluster.save_known_peers(&members) {
            tracing::warn!(error = %Causes(&e), "members' addresses not saved");
        }
        self.dirty = false;
        self.last_save = Instant::now();
    }

    pub(super) fn update_gauge(&self) {
        let now = Instant::now();
        let (mut answering, mut silent) = (0, 0);
        for p in self.peers.values() {
            if p.connections == 0 || !matches!(p.state, State::Member { .. }) {
                continue;
            }
            if p.responding(now) {
                answering += 1;
            } else {
                silent += 1;
            }
        }
        self.metrics.connected.set(f64::from(answering));
        self.metrics.silent.set(f64::from(silent));
    }

    /// Logs the members that went silent (connected, no ping answered within
    /// [`crate::replication::swarm::SILENT_AFTER`]) or answer again; the gauges follow.
    fn watch_silence(&mut self, now: Instant) {
        let mut changed = false;
        for (id, p) in &mut self.peers {
            let silent =
                p.connections > 0 && matches!(p.state, State::Member { .. }) && !p.responding(now);
            if silent == p.silent {
                continue;
            }
            p.silent = silent;
            changed = true;
            if silent {
                let secs = now.duration_since(p.answered).as_secs();
                tracing::warn!(peer_id = %id, silent_secs = secs, "member silent: connected but answers no ping; it is no source and its build lease counts for nothing");
            } else if p.connections > 0 {
                tracing::info!(peer_id = %id, "member answers again");
            }
        }
        if changed {
            self.update_gauge();
        }
    }
}
