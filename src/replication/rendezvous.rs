//! Where a model's copies belong (`replication.factor`): rendezvous (highest-random-weight)
//! hashing of its cache key over the cluster's members. Each member's weight for a key is the
//! BLAKE3 of the key and the member's peer ID; the members with the highest weights hold the
//! copies. Every member ranks the same members the same way without talking to the others,
//! and a member joining or leaving moves only the keys it wins or held.
//!
//! * a node that built a model asks the members ranked among the top `factor` (itself
//!   included) other than itself ([`push_targets`]): `factor - 1` of them when it ranks among
//!   the top itself, `factor` when it does not, so the copies are the designated ones;
//! * garbage collection evicts last the copies of the keys for which this node ranks among the
//!   top `factor` of the members and itself ([`Placement::designated`]).

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};

use libp2p::PeerId;

/// The weight of `peer` for `key`: BLAKE3 over the key, a zero byte and the peer ID's bytes.
fn weight(key: &str, peer: &PeerId) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(key.as_bytes());
    h.update(&[0]);
    h.update(&peer.to_bytes());
    *h.finalize().as_bytes()
}

/// `peer`'s weight for `key` as a fraction in [0, 1): spread evenly over members and keys.
pub(crate) fn fraction(key: &str, peer: &PeerId) -> f64 {
    let w = weight(key, peer);
    let mut first = [0u8; 8];
    first.copy_from_slice(&w[..8]);
    u64::from_be_bytes(first) as f64 / 2f64.powi(64)
}

/// The `n` peers of `candidates` ranked highest for `key`, highest first (duplicates count
/// once; equal weights, which BLAKE3 makes unheard of, fall back to the peer ID's bytes).
pub(crate) fn top(key: &str, candidates: &[PeerId], n: usize) -> Vec<PeerId> {
    let mut ranked: Vec<([u8; 32], PeerId)> =
        candidates.iter().map(|p| (weight(key, p), *p)).collect();
    ranked.sort_by(|a, b| match b.0.cmp(&a.0) {
        Ordering::Equal => a.1.to_bytes().cmp(&b.1.to_bytes()),
        o => o,
    });
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked.into_iter().take(n).map(|(_, p)| p).collect()
}

/// The members `local` asks to hold a model it built under `key`: those of the `factor` ranked
/// highest among the members and itself, other than itself (with a factor of 1, none).
pub(crate) fn push_targets(
    key: &str,
    local: &PeerId,
    members: &[PeerId],
    factor: u32,
) -> Vec<PeerId> {
    if factor <= 1 {
        return Vec::new();
    }
    let mut all = members.to_vec();
    all.push(*local);
    let mut holders = top(key, &all, factor as usize);
    holders.retain(|p| p != local);
    holders
}

/// The members `local` asks to hold a copy of a model it holds under `key` when the members
/// change from `old` to `new`: those designated now and not before. A holder asks when it is
/// designated now or was before (the copies where they belong), or when no member designated
/// before is a member any more (its copy may be the last); any other holder leaves the asking
/// to those. A member asked twice answers the second at no cost.
pub(crate) fn moved_to(
    key: &str,
    local: &PeerId,
    old: &[PeerId],
    new: &[PeerId],
    factor: u32,
) -> Vec<PeerId> {
    if factor <= 1 {
        return Vec::new();
    }
    let designated = |members: &[PeerId]| {
        let mut all = members.to_vec();
        all.push(*local);
        top(key, &all, factor as usize)
    };
    let now = designated(new);
    let before = designated(old);
    let asks =
        now.contains(local) || before.contains(local) || !before.iter().any(|p| new.contains(p));
    if !asks {
        return Vec::new();
    }
    now.into_iter()
        .filter(|p| p != local && !before.contains(p))
        .collect()
}

/// The replication factor and the members known now (connected or not), shared by the event
/// loop (which updates the members) and garbage collection (which reads them).
pub(crate) struct Placement {
    factor: u32,
    local: PeerId,
    members: RwLock<Arc<Vec<PeerId>>>,
    /// The members copies were last placed over (see `event_loop::asks::Settle`): until a
    /// change settles and copies move, a copy designated under these stays designated.
    settled: RwLock<Arc<Vec<PeerId>>>,
    /// The keys members are asked to fetch from this node (see `event_loop::asks`): its copy
    /// may be the one they depend on, so it counts as designated until they are answered.
    pending: RwLock<Arc<HashSet<String>>>,
}

impl Placement {
    /// For node `local` with `replication.factor` = `factor`, no member known yet.
    pub(crate) fn new(local: PeerId, factor: u32) -> Self {
        Self {
            factor,
            local,
            members: RwLock::default(),
            settled: RwLock::default(),
            pending: RwLock::default(),
        }
    }

    /// `replication.factor`.
    pub(crate) fn factor(&self) -> u32 {
        self.factor
    }

    /// The members other than this node, as last set.
    pub(crate) fn members(&self) -> Arc<Vec<PeerId>> {
        Arc::clone(&self.members.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the members (sorted, without this node); the members before, when they
    /// changed.
    pub(crate) fn set_members(&self, mut members: Vec<PeerId>) -> Option<Arc<Vec<PeerId>>> {
        members.retain(|p| *p != self.local);
        members.sort();
        members.dedup();
        let mut g = self.members.write().unwrap_or_else(PoisonError::into_inner);
        if **g == members {
            return None;
        }
        Some(std::mem::replace(&mut *g, Arc::new(members)))
    }

    /// Replaces the members copies were last placed over (sorted, without this node).
    pub(crate) fn set_settled(&self, mut members: Vec<PeerId>) {
        members.retain(|p| *p != self.local);
        let mut g = self.settled.write().unwrap_or_else(PoisonError::into_inner);
        if **g != members {
            *g = Arc::new(members);
        }
    }

    /// Replaces the keys members are asked to fetch from this node.
    pub(crate) fn set_pending(&self, keys: HashSet<String>) {
        *self.pending.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
    }

    /// A check of whether this node holds one of the `factor` copies of a key (ranks among
    /// the top `factor` of the members and itself), over the members known now or those
    /// copies were last placed over (while a change has not moved copies yet, both count),
    /// or whether members are asked to fetch the key from it (its copy may be the last).
    /// Always `false` with a factor of 1: nothing is pushed, every copy is alike.
    pub(crate) fn designated(&self) -> impl Fn(&str) -> bool + Send + Sync + 'static {
        let factor = self.factor as usize;
        let local = self.local;
        let with_local = |m: &Arc<Vec<PeerId>>| {
            let mut all: Vec<PeerId> = m.as_ref().clone();
            all.push(local);
            all
        };
        let now = with_local(&self.members());
        let settled = with_local(&Arc::clone(
            &self.settled.read().unwrap_or_else(PoisonError::into_inner),
        ));
        let pending = Arc::clone(&self.pending.read().unwrap_or_else(PoisonError::into_inner));
        move |key: &str| {
            factor > 1
                && (top(key, &now, factor).contains(&local)
                    || top(key, &settled, factor).contains(&local)
                    || pending.contains(key))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n)
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[0] = i as u8;
                seed[1] = 0xa5;
                libp2p::identity::Keypair::ed25519_from_bytes(seed)
                    .unwrap()
                    .public()
                    .to_peer_id()
            })
            .collect()
    }

    #[test]
    fn fractions_spread_members_over_the_unit_interval() {
        let members = peers(40);
        let f: Vec<f64> = members.iter().map(|p| fraction("blake3:abc", p)).collect();
        assert!(f.iter().all(|x| (0.0..1.0).contains(x)), "{f:?}");
        // Spread: every quarter of the interval gets some of forty members.
        for q in 0..4 {
            let lo = f64::from(q) / 4.0;
            assert!(
                f.iter().any(|x| (lo..lo + 0.25).contains(x)),
                "quarter {q}: {f:?}"
            );
        }
        // Per key: the same member gets another fraction for another blob.
        assert_ne!(
            fraction("blake3:abc", &members[0]),
            fraction("blake3:abd", &members[0])
        );
    }

    fn key(i: usize) -> String {
        format!("{:064x}", i * 7919 + 1)
    }

    #[test]
    fn the_choice_is_stable_and_independent_of_the_members_order() {
        let p = peers(6);
        let mut reversed = p.clone();
        reversed.reverse();
        for i in 0..50 {
            let k = key(i);
            let t = push_targets(&k, &p[0], &p, 3);
            let builder_holds = top(&k, &p, 3).contains(&p[0]);
            assert_eq!(t.len(), if builder_holds { 2 } else { 3 });
            assert_eq!(t, push_targets(&k, &p[0], &reversed, 3), "order matters");
            assert_eq!(t, push_targets(&k, &p[0], &p, 3), "not stable");
            // Duplicates in the list change nothing.
            let mut twice = p.clone();
            twice.extend(p.iter().copied());
            assert_eq!(t, push_targets(&k, &p[0], &twice, 3));
        }
    }

    #[test]
    fn the_builder_is_never_a_target_and_asks_one_more_when_it_holds_no_copy() {
        let p = peers(5);
        for i in 0..50 {
            let k = key(i);
            for local in &p {
                for factor in 1..=6u32 {
                    let t = push_targets(&k, local, &p, factor);
                    assert!(!t.contains(local), "{k}: pushed to itself");
                    let f = factor as usize;
                    let holds_one = top(&k, &p, f).contains(local);
                    let want = match (factor, holds_one) {
                        (1, _) => 0,
                        (_, true) => f - 1,
                        (_, false) => f,
                    };
                    assert_eq!(t.len(), want.min(p.len() - 1), "{k} factor {factor}");
                }
            }
        }
        // Alone in the cluster: nobody to ask.
        assert!(push_targets(&key(1), &p[0], &p[..1], 3).is_empty());
    }

    #[test]
    fn the_choice_spreads_over_the_members() {
        let p = peers(4);
        let mut chosen: HashMap<PeerId, usize> = HashMap::new();
        let n = 2000;
        for i in 0..n {
            for t in push_targets(&key(i), &p[0], &p, 2) {
                *chosen.entry(t).or_default() += 1;
            }
        }
        // Three candidates, each among the top two of four for about half the keys.
        assert_eq!(chosen.len(), 3, "{chosen:?}");
        for (peer, count) in &chosen {
            assert!(
                (n / 2 - n / 10..=n / 2 + n / 10).contains(count),
                "{peer} chosen for {count} of {n} keys"
            );
        }
    }

    #[test]
    fn a_member_leaving_moves_only_the_keys_it_held() {
        let p = peers(5);
        let gone = p[3];
        let rest: Vec<PeerId> = p.iter().filter(|x| **x != gone).copied().collect();
        for i in 0..200 {
            let k = key(i);
            let before = push_targets(&k, &p[0], &p, 2);
            let after = push_targets(&k, &p[0], &rest, 2);
            if !before.contains(&gone) {
                assert_eq!(before, after, "{k} moved though {gone} did not hold it");
            }
        }
    }

    #[test]
    fn the_builder_and_its_targets_agree_on_who_is_designated() {
        let p = peers(5);
        for i in 0..100 {
            let k = key(i);
            // The top `factor` of all members: each of them, and only they, is designated.
            let holders = top(&k, &p, 3);
            for me in &p {
                let placement = Placement::new(*me, 3);
                placement.set_members(p.clone());
                placement.set_settled(p.clone());
                assert_eq!(placement.designated()(&k), holders.contains(me), "{k}");
                // Any builder asks exactly the holders other than itself: the cluster keeps
                // `factor` designated copies whether or not the builder is one of them.
                let mut t = push_targets(&k, me, &p, 3);
                let mut others: Vec<PeerId> =
                    holders.iter().filter(|h| *h != me).copied().collect();
                t.sort();
                others.sort();
                assert_eq!(t, others);
            }
            let single = Placement::new(p[0], 1);
            single.set_members(p.clone());
            assert!(!single.designated()(&k), "factor 1 designates nobody");
        }
    }

    #[test]
    fn until_copies_move_a_copy_designated_before_or_now_stays_designated() {
        let p = peers(5);
        let (old, new) = (&p[..3], &p[..5]);
        let (mut kept, mut both) = (0, 0);
        for i in 0..200 {
            let k = key(i);
            let me = p[0];
            let placement = Placement::new(me, 2);
            placement.set_members(new.to_vec());
            placement.set_settled(old.to_vec());
            let before = top(&k, old, 2).contains(&me);
            let now = top(&k, new, 2).contains(&me);
            assert_eq!(placement.designated()(&k), before || now, "{k}");
            if before && !now {
                kept += 1;
            }
            // Once settled over the new members, only the new ranking counts...
            placement.set_settled(new.to_vec());
            assert_eq!(placement.designated()(&k), now, "{k}");
            // ...and the keys members are still asked to fetch from this node.
            placement.set_pending(HashSet::from([k.clone()]));
            assert!(placement.designated()(&k), "{k}: asked for, so kept");
            placement.set_pending(HashSet::new());
            assert_eq!(placement.designated()(&k), now, "{k}");
            both += 1;
        }
        assert!(kept > 0 && both == 200, "no key lost its place: {kept}");
    }

    #[test]
    fn setting_the_same_members_is_no_change() {
        let p = peers(3);
        let placement = Placement::new(p[0], 2);
        assert_eq!(
            placement.set_members(vec![p[2], p[1], p[0]]).as_deref(),
            Some(&Vec::new()),
            "the members before"
        );
        assert_eq!(*placement.members(), {
            let mut v = vec![p[1], p[2]];
            v.sort();
            v
        });
        assert!(placement.set_members(vec![p[1], p[2]]).is_none());
    }

    #[test]
    fn when_members_change_the_designated_holders_ask_the_newly_designated_ones() {
        let p = peers(6);
        let (old, joined) = (&p[..4], p[4]);
        let new: Vec<PeerId> = p[..5].to_vec();
        let factor = 2;
        let mut asked_joined = 0;
        let mut bumped = 0;
        for i in 0..300 {
            let k = key(i);
            let before = top(&k, old, factor);
            let after = top(&k, &new, factor);
            // What every holder asks: together, exactly the members designated now and not
            // before, each by every holder designated now.
            let mut asked: Vec<PeerId> = Vec::new();
            for me in &new {
                let others: Vec<PeerId> = new.iter().filter(|x| *x != me).copied().collect();
                let was: Vec<PeerId> = old.iter().filter(|x| *x != me).copied().collect();
                let t = moved_to(&k, me, &was, &others, factor as u32);
                if !after.contains(me) && !before.contains(me) {
                    assert!(t.is_empty(), "{k}: a holder never designated asks nobody");
                }
                for x in &t {
                    assert!(after.contains(x) && !before.contains(x), "{k}: {x} asked");
                }
                // A holder the new member took the place of asks too (its copy is the one the
                // new member needs most).
                if before.contains(me) && !after.contains(me) {
                    let want: Vec<PeerId> = after
                        .iter()
                        .filter(|x| !before.contains(x))
                        .copied()
                        .collect();
                    assert_eq!(t, want, "{k}: a holder that lost its place asks");
                    bumped += 1;
                }
                asked.extend(t);
            }
            let designated_now: Vec<PeerId> = after
                .iter()
                .filter(|x| !before.contains(x))
                .copied()
                .collect();
            for x in &designated_now {
                assert!(
                    asked.contains(x),
                    "{k}: {x} became designated and nobody asks it"
                );
            }
            if designated_now.contains(&joined) {
                asked_joined += 1;
            }
            // A member leaving: the one that takes its place is asked.
            let left: Vec<PeerId> = old.iter().filter(|x| **x != before[0]).copied().collect();
            let now = top(&k, &left, factor);
            let holder = now.iter().find(|x| before.contains(x)).copied();
            if let Some(h) = holder {
                let others: Vec<PeerId> = left.iter().filter(|x| **x != h).copied().collect();
                let was: Vec<PeerId> = old.iter().filter(|x| **x != h).copied().collect();
                let t = moved_to(&k, &h, &was, &others, factor as u32);
                let took: Vec<PeerId> = now
                    .iter()
                    .filter(|x| !before.contains(x))
                    .copied()
                    .collect();
                assert_eq!(t, took, "{k}");
            }
            // Every member designated before leaves: a holder that is not designated, and never
            // was, asks the members designated now (the builder's copy may be the last one).
            let before6 = top(&k, &p, factor);
            let stayed: Vec<PeerId> = p.iter().filter(|x| !before6.contains(x)).copied().collect();
            let now4 = top(&k, &stayed, factor);
            let builder = *stayed.iter().find(|x| !now4.contains(x)).unwrap();
            let others: Vec<PeerId> = stayed.iter().filter(|x| **x != builder).copied().collect();
            let was: Vec<PeerId> = p.iter().filter(|x| **x != builder).copied().collect();
            let t = moved_to(&k, &builder, &was, &others, factor as u32);
            assert_eq!(
                t, now4,
                "{k}: the last holder asks the members designated now"
            );
            // While one of them stays, it asks and the builder does not.
            let one_left: Vec<PeerId> = others.iter().chain([&before6[0]]).copied().collect();
            assert!(
                moved_to(&k, &builder, &was, &one_left, factor as u32).is_empty(),
                "{k}"
            );
            assert!(moved_to(&k, &p[0], old, &new, 1).is_empty(), "factor 1");
        }
        // A fifth member wins about 2 keys in 5, and takes a holder's place in each.
        assert!((60..=180).contains(&asked_joined), "{asked_joined}");
        assert_eq!(bumped, asked_joined);
    }
}
