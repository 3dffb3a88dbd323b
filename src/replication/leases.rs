//! Build leases: what a node knows of who builds which cache key in the cluster. Pure state
//! (no I/O, the time passed in), kept by the event loop and fed by gossip.
//!
//! A node about to build a key claims it and announces `Lease{key}`, renewed every
//! [`LEASE_RENEW`] while it builds; `Built{key, ok}` ends it. Two nodes that claim the same key
//! at once settle on the lower peer ID: a claim from a lower ID replaces the current holder
//! while the holder's claim is younger than [`CLAIM_SETTLE`]. A lease not renewed for
//! [`LEASE_SILENT`] is over (its holder went silent), and the members waiting for it build.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// How often the holder of a lease renews it.
pub const LEASE_RENEW: Duration = Duration::from_secs(5);
/// A lease not renewed for this long is over.
pub const LEASE_SILENT: Duration = Duration::from_secs(20);
/// How long after a claim a lower peer ID's claim still wins: the time gossip takes to reach
/// every member (milliseconds on a LAN) with a wide margin. A claimer waits as long before it
/// builds (`find`), so a claim it yields to never comes after it started.
pub const CLAIM_SETTLE: Duration = Duration::from_secs(1);
/// Leases and build outcomes remembered.
pub const MAX_LEASES: usize = 4096;
/// How long a finished build counts (who holds the model); after, provider records answer
/// (the builder may have evicted it since).
const BUILT_FOR: Duration = Duration::from_secs(600);

/// What this node knows of a key's build in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// Nothing known (or the holder went silent).
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

#[derive(Debug)]
struct Lease {
    holder: PeerId,
    claimed: Instant,
    renewed: Instant,
    outcome: Option<(Instant, Option<PeerId>)>,
}

impl Lease {
    fn new(holder: PeerId, now: Instant) -> Self {
        Self {
            holder,
            claimed: now,
            renewed: now,
            outcome: None,
        }
    }
}

/// The leases this node knows of.
#[derive(Debug)]
pub struct LeaseTable {
    local: PeerId,
    leases: HashMap<String, Lease>,
    /// Keys this node holds the lease of, and when it last renewed each.
    own: HashMap<String, Instant>,
}

impl LeaseTable {
    /// The table of node `local`.
    pub fn new(local: PeerId) -> Self {
        Self {
            local,
            leases: HashMap::new(),
            own: HashMap::new(),
        }
    }

    /// The state of `key`; `member` says whether a peer is a connected member that answers (a
    /// lease of one that is not counts for nothing, and a model it built is no source).
    pub fn state(&self, key: &str, now: Instant, member: impl Fn(&PeerId) -> bool) -> LeaseState {
        let Some(l) = self.leases.get(key) else {
            return LeaseState::None;
        };
        match l.outcome {
            Some((at, Some(_))) if now.duration_since(at) >= BUILT_FOR => LeaseState::None,
            Some((_, Some(by))) if by == self.local || member(&by) => LeaseState::Built { by },
            Some((_, Some(_))) => LeaseState::None,
            Some((_, None)) => LeaseState::Failed,
            None if l.holder == self.local => LeaseState::Held {
                holder: l.holder,
                mine: true,
            },
            None if now.duration_since(l.renewed) < LEASE_SILENT && member(&l.holder) => {
                LeaseState::Held {
                    holder: l.holder,
                    mine: false,
                }
            }
            None => LeaseState::None,
        }
    }

    /// Claims `key` for this node unless a member holds it, or built it and still has it (a
    /// build counts for nothing when it was this node's, whose miss is why it claims, or the
    /// builder's, `lost`, that this node could not fetch it from); whether it did (then the
    /// caller announces the lease).
    pub fn claim(
        &mut self,
        key: &str,
        now: Instant,
        member: impl Fn(&PeerId) -> bool,
        lost: Option<PeerId>,
    ) -> bool {
        match self.state(key, now, member) {
            LeaseState::Held { .. } => return false,
            LeaseState::Built { by } if by != self.local && Some(by) != lost => return false,
            LeaseState::None | LeaseState::Failed | LeaseState::Built { .. } => {}
        }
        self.make_room(now);
        self.leases
            .insert(key.to_string(), Lease::new(self.local, now));
        self.own.insert(key.to_string(), now);
        true
    }

    /// This node's build of `key` ended.
    pub fn finish(&mut self, key: &str, ok: bool, now: Instant) {
        self.own.remove(key);
        let local = self.local;
        let l = self
            .leases
            .entry(key.to_string())
            .or_insert_with(|| Lease::new(local, now));
        if l.holder == local {
            l.outcome = Some((now, ok.then_some(local)));
        }
    }

    /// `from` announced (or renewed) a lease of `key`.
    pub fn heard_lease(&mut self, from: PeerId, key: &str, now: Instant) {
        if from == self.local {
            return;
        }
        self.make_room(now);
        let l = self
            .leases
            .entry(key.to_string())
            .or_insert_with(|| Lease::new(from, now));
        if l.holder == from {
            l.renewed = now;
            l.outcome = None;
        } else if l.outcome.is_some()
            || now.duration_since(l.renewed) >= LEASE_SILENT
            || (from < l.holder && now.duration_since(l.claimed) < CLAIM_SETTLE)
        {
            // A finished or silent lease, or a simultaneous claim by a lower ID.
            *l = Lease::new(from, now);
            self.own.remove(key);
        }
    }

    /// `from` announced the end of its build of `key`.
    pub fn heard_built(&mut self, from: PeerId, key: &str, ok: bool, now: Instant) {
        self.make_room(now);
        let l = self
            .leases
            .entry(key.to_string())
            .or_insert_with(|| Lease::new(from, now));
        // A success is news from anyone; a failure only ends the failing holder's lease.
        if l.holder == from || ok {
            if l.holder == self.local && from != self.local {
                // This node's claim is over: it fetches the model instead of renewing a
                // lease that would keep every member waiting on it.
                self.own.remove(key);
            }
            l.holder = from;
            l.outcome = Some((now, ok.then_some(from)));
        }
    }

    /// The leases of this node due for renewal (marked renewed now).
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let due: Vec<String> = self
            .own
            .iter()
            .filter(|(_, at)| now.duration_since(**at) >= LEASE_RENEW)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &due {
            self.own.insert(key.clone(), now);
            if let Some(l) = self.leases.get_mut(key) {
                l.renewed = now;
            }
        }
        due
    }

    /// Forgets finished and silent leases beyond the bound.
    fn make_room(&mut self, now: Instant) {
        if self.leases.len() < MAX_LEASES {
            return;
        }
        let own = &self.own;
        self.leases.retain(|k, l| {
            own.contains_key(k)
                || match l.outcome {
                    Some((at, _)) => now.duration_since(at) < BUILT_FOR,
                    None => now.duration_since(l.renewed) < LEASE_SILENT,
                }
        });
        while self.leases.len() >= MAX_LEASES {
            let oldest = self
                .leases
                .iter()
                .filter(|(k, _)| !own.contains_key(*k))
                .min_by_key(|(_, l)| l.renewed)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    self.leases.remove(&k);
                }
                None => break,
            }
        }
    }

    /// Leases remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.leases.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers() -> (PeerId, PeerId) {
        let a = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let b = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        if a < b { (a, b) } else { (b, a) }
    }

    const K: &str = "7f22cf9168c1af6b21196a9d9ebd9731566302bd2bd7c5ef2809f16b20a2f0ee";

    #[test]
    fn simultaneous_claims_settle_on_the_lower_peer_id_on_both_sides() {
        let (low, high) = peers();
        let all = |_: &PeerId| true;
        let t = Instant::now();
        let mut on_low = LeaseTable::new(low);
        let mut on_high = LeaseTable::new(high);
        assert!(on_low.claim(K, t, all, None));
        assert!(on_high.claim(K, t, all, None));
        // Each hears the other's claim.
        on_low.heard_lease(high, K, t + Duration::from_millis(5));
        on_high.heard_lease(low, K, t + Duration::from_millis(5));
        let now = t + Duration::from_millis(500);
        assert_eq!(
            on_low.state(K, now, all),
            LeaseState::Held {
                holder: low,
                mine: true
            }
        );
        assert_eq!(
            on_high.state(K, now, all),
            LeaseState::Held {
                holder: low,
                mine: false
            }
        );
        // Only the holder renews.
        let later = t + LEASE_RENEW + Duration::from_secs(1);
        assert_eq!(on_low.due(later), vec![K.to_string()]);
        assert!(on_high.due(later).is_empty());
        // A member that already holds a lease is not displaced by a late claim.
        let mut third = LeaseTable::new(high);
        third.heard_lease(low, K, t);
        assert!(!third.claim(K, t, all, None));
    }

    #[test]
    fn a_settled_lease_ends_by_its_outcome_or_its_silence() {
        let (low, high) = peers();
        let all = |_: &PeerId| true;
        let t = Instant::now();
        let mut table = LeaseTable::new(low);
        table.heard_lease(high, K, t);
        assert!(matches!(
            table.state(K, t + CLAIM_SETTLE, all),
            LeaseState::Held { mine: false, .. }
        ));
        // Silence ends it; so does a lease of a peer that is not a connected member.
        assert_eq!(table.state(K, t + LEASE_SILENT, all), LeaseState::None);
        assert_eq!(table.state(K, t, |_| false), LeaseState::None);
        table.heard_lease(high, K, t + LEASE_SILENT);
        assert!(matches!(
            table.state(K, t + LEASE_SILENT, all),
            LeaseState::Held { mine: false, .. }
        ));
        table.heard_built(high, K, true, t + LEASE_SILENT);
        assert_eq!(
            table.state(K, t + LEASE_SILENT, all),
            LeaseState::Built { by: high }
        );
        // A builder that went silent (or away) is no source: others may claim the build.
        assert_eq!(
            table.state(K, t + LEASE_SILENT, |_| false),
            LeaseState::None
        );
        // A failure of someone else's build does not erase a success.
        let (third, _) = peers();
        table.heard_built(third, K, false, t + LEASE_SILENT);
        assert_eq!(
            table.state(K, t + LEASE_SILENT, all),
            LeaseState::Built { by: high }
        );
        // This node's own failed build ends its lease, so waiters build.
        let mut mine = LeaseTable::new(low);
        assert!(mine.claim(K, t, all, None));
        mine.finish(K, false, t);
        assert_eq!(mine.state(K, t, all), LeaseState::Failed);
        assert!(mine.due(t + LEASE_RENEW).is_empty());
        // A model built by a member that is silent now is claimed here instead of awaited.
        let mut other = LeaseTable::new(low);
        other.heard_built(high, K, true, t);
        assert!(!other.claim(K, t, all, None));
        assert!(other.claim(K, t, |p| *p != high, None));
        // This node's own finished build stays known whoever answers.
        mine.heard_built(low, K, true, t);
        assert_eq!(mine.state(K, t, |_| false), LeaseState::Built { by: low });
    }

    #[test]
    fn a_claim_ends_when_a_member_built_the_model_and_old_or_lost_builds_do_not_block() {
        let (low, high) = peers();
        let all = |_: &PeerId| true;
        let t = Instant::now();
        // This node claimed; a member's build then finished: the claim is not renewed (it
        // would keep every member waiting on a build that never comes).
        let mut table = LeaseTable::new(high);
        assert!(table.claim(K, t, all, None));
        table.heard_built(low, K, true, t + Duration::from_millis(100));
        assert_eq!(table.state(K, t, all), LeaseState::Built { by: low });
        assert!(table.due(t + LEASE_RENEW).is_empty());
        // A build the member could not be fetched from (evicted since) is claimed over.
        assert!(!table.claim(K, t, all, None));
        assert!(table.claim(K, t, all, Some(low)));
        assert!(matches!(
            table.state(K, t, all),
            LeaseState::Held { mine: true, .. }
        ));
        // This node's own finished build does not stop its claim after a miss here.
        let mut mine = LeaseTable::new(low);
        mine.finish(K, true, t);
        assert!(mine.claim(K, t, all, None));
        // A build older than BUILT_FOR counts no more: provider records answer then.
        let mut old = LeaseTable::new(low);
        old.heard_built(high, K, true, t);
        assert_eq!(old.state(K, t + BUILT_FOR, all), LeaseState::None);
        assert!(old.claim(K, t + BUILT_FOR, all, None));
    }

    #[test]
    fn a_lower_id_takes_a_lease_only_while_the_claim_is_fresh() {
        let mut ids: Vec<PeerId> = (0..3)
            .map(|_| {
                libp2p::identity::Keypair::generate_ed25519()
                    .public()
                    .to_peer_id()
            })
            .collect();
        ids.sort();
        let (p0, p1, p2) = (ids[0], ids[1], ids[2]);
        let all = |_: &PeerId| true;
        let t = Instant::now();
        let mut late = LeaseTable::new(p2);
        late.heard_lease(p1, K, t);
        late.heard_lease(p0, K, t + CLAIM_SETTLE);
        assert_eq!(
            late.state(K, t + CLAIM_SETTLE, all),
            LeaseState::Held {
                holder: p1,
                mine: false
            }
        );
        let mut fresh = LeaseTable::new(p2);
        fresh.heard_lease(p1, K, t);
        fresh.heard_lease(p0, K, t + Duration::from_millis(10));
        assert_eq!(
            fresh.state(K, t + Duration::from_millis(10), all),
            LeaseState::Held {
                holder: p0,
                mine: false
            }
        );
    }

    #[test]
    fn the_table_stays_within_its_bound() {
        let (low, high) = peers();
        let t = Instant::now();
        let mut table = LeaseTable::new(low);
        for i in 0..MAX_LEASES + 10 {
            table.heard_lease(high, &format!("{i:064x}"), t);
        }
        assert!(table.len() <= MAX_LEASES);
    }
}
