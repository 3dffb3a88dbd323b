//! The asks to hold a copy of a model that this node sends (see `push`): each (member, key)
//! once at a time, at most [`PER_MEMBER`] unanswered per member so that a member catching up
//! on many copies is not flooded, asked again when busy (the member's flow
//! control: as long as it stays a member) or undelivered (backing off, [`MAX_TRIES`] at most);
//! and when the member list settles after a change, which members to re-place copies for.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::request_response::OutboundRequestId;

use crate::replication::rendezvous;

/// Asks waiting for their member to connect, or to go again.
pub(super) const MAX_WAITING: usize = 1024;
/// Re-placement asks not yet waiting (a member change can move a copy of most models held):
/// they wait in turn, while their member is connected, [`BACKLOG_PER_MEMBER`] per member and
/// while fewer than three quarters of [`MAX_WAITING`] wait, so asks of new builds keep their
/// room and a member away holds up no other.
pub(super) const MAX_BACKLOG: usize = 65_536;
/// Re-placement asks in the backlog for one member at most (one remembered member that never
/// connects leaves room for the others).
pub(super) const MAX_BACKLOG_PER_MEMBER: usize = MAX_BACKLOG / 4;
/// Re-placement asks waiting per member at most.
pub(super) const BACKLOG_PER_MEMBER: usize = 16;
/// Asks unanswered by one member at once (its fetches run 2 at once).
pub(super) const PER_MEMBER: usize = 2;
/// First wait before an undelivered ask goes again (it doubles each time, up to
/// [`RETRY_MAX`]); a busy member is asked again after this wait and up to as long again.
pub(super) const RETRY_FIRST: Duration = Duration::from_secs(2);
/// Longest wait between two tries of an undelivered ask.
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Undelivered tries of an ask before it is given up (about 25 minutes of backing off).
pub(super) const MAX_TRIES: u32 = 30;

/// An ask to hold a copy of a model: to whom, for which key, how often it went undelivered,
/// and not before when it goes again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ask {
    pub peer: PeerId,
    pub key: String,
    tries: u32,
    not_before: Instant,
}

/// What became of an ask added or put back.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Queued {
    /// Waiting (or sent) already: nothing added.
    Already,
    /// Waiting.
    Waiting,
    /// Waiting; the oldest waiting ask was dropped to make room.
    Displaced(Ask),
    /// Given up after [`MAX_TRIES`] undelivered tries.
    GivenUp(Ask),
}

/// Re-placement asks not yet waiting, by member, oldest first.
#[derive(Default)]
struct Backlog {
    by_member: HashMap<PeerId, VecDeque<String>>,
    len: usize,
}

impl Backlog {
    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Asks waiting or sent (under request IDs `Id`), each (member, key) once.
pub(super) struct AskQueue<Id = OutboundRequestId> {
    waiting: VecDeque<Ask>,
    backlog: Backlog,
    sent: HashMap<Id, Ask>,
    known: HashSet<(PeerId, String)>,
    /// Whether the keys asked for changed since [`AskQueue::changed_keys`] last looked.
    changed: bool,
}

impl<Id> Default for AskQueue<Id> {
    fn default() -> Self {
        Self {
            waiting: VecDeque::new(),
            backlog: Backlog::default(),
            sent: HashMap::new(),
            known: HashSet::new(),
            changed: false,
        }
    }
}

impl<Id: std::hash::Hash + Eq> AskQueue<Id> {
    /// Adds an ask for `peer` to hold `key`, due now, unless one is waiting or sent.
    pub(super) fn add(&mut self, peer: PeerId, key: String, now: Instant) -> Queued {
        if !self.known.insert((peer, key.clone())) {
            return Queued::Already;
        }
        self.changed = true;
        self.wait(Ask {
            peer,
            key,
            tries: 0,
            not_before: now,
        })
    }

    fn wait(&mut self, ask: Ask) -> Queued {
        let displaced = if self.waiting.len() >= MAX_WAITING {
            self.waiting.pop_front().inspect(|a| self.forget(a))
        } else {
            None
        };
        self.waiting.push_back(ask);
        match displaced {
            Some(a) => Queued::Displaced(a),
            None => Queued::Waiting,
        }
    }

    fn forget(&mut self, ask: &Ask) {
        self.known.remove(&(ask.peer, ask.key.clone()));
        self.changed = true;
    }

    /// The keys some member is asked (or is to be asked) to fetch from this node, when they
    /// changed since the last call: the copies others depend on (see
    /// `rendezvous::Placement::set_pending`).
    pub(super) fn changed_keys(&mut self) -> Option<HashSet<String>> {
        if !std::mem::take(&mut self.changed) {
            return None;
        }
        let mut keys: HashSet<String> = self.known.iter().map(|(_, k)| k.clone()).collect();
        for backlog in self.backlog.by_member.values() {
            keys.extend(backlog.iter().cloned());
        }
        Some(keys)
    }

    /// Whether no ask waits.
    pub(super) fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.backlog.is_empty()
    }

    /// Adds re-placement asks behind those waiting (see [`MAX_BACKLOG`]); how many did not
    /// fit.
    pub(super) fn add_backlog(&mut self, asks: Vec<(PeerId, String)>) -> usize {
        let mut over = 0;
        for (peer, key) in asks {
            let mine = self.backlog.by_member.entry(peer).or_default();
            if self.backlog.len >= MAX_BACKLOG || mine.len() >= MAX_BACKLOG_PER_MEMBER {
                over += 1;
                continue;
            }
            mine.push_back(key);
            self.backlog.len += 1;
            self.changed = true;
        }
        self.backlog.by_member.retain(|_, keys| !keys.is_empty());
        over
    }

    /// Moves backlog asks into the waiting ones, due at `now`, for each `connected` member
    /// with fewer than [`BACKLOG_PER_MEMBER`] waiting (see [`MAX_BACKLOG`]).
    pub(super) fn refill(&mut self, connected: &HashSet<PeerId>, now: Instant) {
        if self.backlog.is_empty() {
            return;
        }
        let mut per: HashMap<PeerId, usize> = HashMap::new();
        for a in &self.waiting {
            *per.entry(a.peer).or_default() += 1;
        }
        for peer in connected {
            let Some(keys) = self.backlog.by_member.get_mut(peer) else {
                continue;
            };
            let mut n = per.get(peer).copied().unwrap_or(0);
            while n < BACKLOG_PER_MEMBER && self.waiting.len() < MAX_WAITING * 3 / 4 {
                let Some(key) = keys.pop_front() else { break };
                self.backlog.len -= 1;
                // Asked already (waiting or sent): not twice.
                if !self.known.insert((*peer, key.clone())) {
                    self.changed = true;
                    continue;
                }
                self.waiting.push_back(Ask {
                    peer: *peer,
                    key,
                    tries: 0,
                    not_before: now,
                });
                n += 1;
            }
            if keys.is_empty() {
                self.backlog.by_member.remove(peer);
            }
        }
    }

    /// Drops the asks waiting or in the backlog of peers that are not among `members`
    /// (sorted); how many.
    pub(super) fn keep_members(&mut self, members: &[PeerId]) -> usize {
        let member = |p: &PeerId| members.binary_search(p).is_ok();
        let (keep, gone): (VecDeque<Ask>, VecDeque<Ask>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|a| member(&a.peer));
        self.waiting = keep;
        for a in &gone {
            self.forget(a);
        }
        let before = self.backlog.len;
        self.backlog.by_member.retain(|p, _| member(p));
        self.backlog.len = self.backlog.by_member.values().map(VecDeque::len).sum();
        self.changed |= self.backlog.len != before;
        gone.len() + before - self.backlog.len
    }

    /// The asks due by `now` whose member is `connected`, oldest first, so that at most
    /// [`PER_MEMBER`] are unanswered per member; taken out of the waiting ones (hand each to
    /// [`AskQueue::sent`]).
    pub(super) fn due(&mut self, connected: &HashSet<PeerId>, now: Instant) -> Vec<Ask> {
        let mut per: HashMap<PeerId, usize> = HashMap::new();
        for a in self.sent.values() {
            *per.entry(a.peer).or_default() += 1;
        }
        let mut out = Vec::new();
        let mut rest = VecDeque::with_capacity(self.waiting.len());
        for a in std::mem::take(&mut self.waiting) {
            let n = per.entry(a.peer).or_default();
            if a.not_before <= now && connected.contains(&a.peer) && *n < PER_MEMBER {
                *n += 1;
                out.push(a);
            } else {
                rest.push_back(a);
            }
        }
        self.waiting = rest;
        out
    }

    /// `ask` went out as request `id`.
    pub(super) fn sent(&mut self, id: Id, ask: Ask) {
        self.sent.insert(id, ask);
    }

    /// The ask request `id` carried, now answered (or failed).
    pub(super) fn answered(&mut self, id: &Id) -> Option<Ask> {
        self.sent.remove(id)
    }

    /// `ask` is done with (accepted, refused): it may be asked again later.
    pub(super) fn done(&mut self, ask: &Ask) {
        self.forget(ask);
    }

    /// `ask` was answered busy: it goes again after [`RETRY_FIRST`] and up to as long again
    /// (spread by key, so a member's asks do not come back in one wave).
    pub(super) fn busy(&mut self, mut ask: Ask, now: Instant) -> Queued {
        let spread = RETRY_FIRST.mul_f64(rendezvous::fraction(&ask.key, &ask.peer));
        ask.not_before = now + RETRY_FIRST + spread;
        self.wait(ask)
    }

    /// `ask` did not reach its member: it goes again later, backing off, unless it was tried
    /// [`MAX_TRIES`] times.
    pub(super) fn undelivered(&mut self, mut ask: Ask, now: Instant) -> Queued {
        ask.tries += 1;
        if ask.tries >= MAX_TRIES {
            self.forget(&ask);
            return Queued::GivenUp(ask);
        }
        let wait = RETRY_FIRST
            .saturating_mul(1 << (ask.tries - 1).min(8))
            .min(RETRY_MAX);
        ask.not_before = now + wait;
        self.wait(ask)
    }
}

/// When the ranked members settle after a change: copies are re-placed from the members last
/// placed over to the new ones once the list stayed unchanged for `settle` (a member that
/// drops out for a few seconds moves nothing).
pub(super) struct Settle {
    settle: Duration,
    placed: Vec<PeerId>,
    last: Vec<PeerId>,
    changed: Option<Instant>,
}

impl Settle {
    /// Copies were last placed over `placed` (the members remembered from the last run).
    pub(super) fn new(mut placed: Vec<PeerId>, settle: Duration) -> Self {
        placed.sort();
        placed.dedup();
        Self {
            settle,
            last: placed.clone(),
            placed,
            changed: None,
        }
    }

    /// The members copies were last placed over.
    pub(super) fn placed(&self) -> &[PeerId] {
        &self.placed
    }

    /// Copies were not re-placed from `old` (the store could not be read): they are placed
    /// over `old` still, and re-placed once the members stay unchanged for another settle
    /// time from `now`.
    pub(super) fn retry(&mut self, old: Vec<PeerId>, now: Instant) {
        self.placed = old;
        self.changed = Some(now);
    }

    /// The members are `members` (sorted) at `now`: the members placed over before, when
    /// copies should be re-placed over these now.
    pub(super) fn observe(&mut self, members: &[PeerId], now: Instant) -> Option<Vec<PeerId>> {
        if self.last != members {
            self.last = members.to_vec();
            self.changed = Some(now);
        }
        let since = self.changed?;
        if now.duration_since(since) < self.settle {
            return None;
        }
        self.changed = None;
        if self.placed == members {
            return None;
        }
        Some(std::mem::replace(&mut self.placed, members.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> String {
        format!("{i:064x}")
    }

    #[test]
    fn each_ask_once_at_most_two_per_member_per_round() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let now = Instant::now();
        let mut q: AskQueue<usize> = AskQueue::default();
        for i in 0..5 {
            assert_eq!(q.add(a, key(i), now), Queued::Waiting);
        }
        assert_eq!(q.add(a, key(0), now), Queued::Already, "a duplicate");
        assert_eq!(q.add(b, key(0), now), Queued::Waiting, "another member");
        let connected: HashSet<PeerId> = [a, b].into();
        let round = q.due(&connected, now);
        assert_eq!(round.iter().filter(|x| x.peer == a).count(), PER_MEMBER);
        assert_eq!(round.iter().filter(|x| x.peer == b).count(), 1);
        // Sent and still unanswered: not asked twice, and no more to that member.
        for (id, ask) in round.iter().cloned().enumerate() {
            q.sent(id, ask);
        }
        assert_eq!(q.add(a, key(0), now), Queued::Already);
        assert!(
            q.due(&connected, now).is_empty(),
            "their answers are awaited"
        );
        for id in 0..round.len() {
            let ask = q.answered(&id).unwrap();
            q.done(&ask);
        }
        // Answered: the next ones go; a member not connected waits.
        assert!(q.due(&[b].into(), now).is_empty());
        assert_eq!(q.due(&connected, now).len(), PER_MEMBER);
        assert_eq!(q.due(&connected, now).len(), 1);
        assert!(q.is_idle());
        // Done: may be asked again.
        assert_eq!(
            q.add(round[0].peer, round[0].key.clone(), now),
            Queued::Waiting
        );
    }

    #[test]
    fn busy_goes_again_for_as_long_as_it_takes_undelivered_gives_up() {
        let a = PeerId::random();
        let now = Instant::now();
        let mut q: AskQueue<usize> = AskQueue::default();
        q.add(a, key(1), now);
        let connected: HashSet<PeerId> = [a].into();
        let mut t = now;
        for _ in 0..(MAX_TRIES * 2) {
            let mut round = q.due(&connected, t);
            assert_eq!(round.len(), 1, "a busy ask is never given up");
            assert_eq!(q.busy(round.remove(0), t), Queued::Waiting);
            assert!(q.due(&connected, t).is_empty(), "not again at once");
            t += RETRY_FIRST * 2;
        }
        let mut ask = q.due(&connected, t).remove(0);
        for i in 1..MAX_TRIES {
            assert_eq!(q.undelivered(ask, t), Queued::Waiting, "try {i}");
            t += Duration::from_secs(3600);
            ask = q.due(&connected, t).remove(0);
        }
        assert!(matches!(q.undelivered(ask, t), Queued::GivenUp(_)));
        assert_eq!(
            q.add(a, key(1), t),
            Queued::Waiting,
            "forgotten once given up"
        );
    }

    #[test]
    fn the_oldest_makes_room_and_gone_members_are_dropped() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let now = Instant::now();
        let mut q: AskQueue<usize> = AskQueue::default();
        for i in 0..MAX_WAITING as u32 {
            q.add(a, key(i), now);
        }
        assert!(
            matches!(q.add(b, key(0), now), Queued::Displaced(x) if x.key == key(0) && x.peer == a)
        );
        assert_eq!(
            q.add(a, key(0), now),
            Queued::Displaced(Ask {
                peer: a,
                key: key(1),
                tries: 0,
                not_before: now,
            })
        );
        let mut members = vec![b];
        members.sort();
        assert_eq!(q.keep_members(&members), MAX_WAITING - 1);
        assert_eq!(
            q.add(a, key(5), now),
            Queued::Waiting,
            "forgotten when dropped"
        );
    }

    #[test]
    fn copies_are_re_placed_once_the_members_settle() {
        let p: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        let sorted = |mut v: Vec<PeerId>| {
            v.sort();
            v
        };
        let settle = Duration::from_secs(60);
        let t0 = Instant::now();
        let mut s = Settle::new(vec![p[0], p[1]], settle);
        // The remembered members, met again: nothing moves.
        assert_eq!(s.observe(&sorted(vec![p[0], p[1]]), t0), None);
        assert_eq!(s.observe(&sorted(vec![p[0], p[1]]), t0 + settle * 2), None);
        // A member drops out for a few seconds: nothing moves.
        assert_eq!(s.observe(&[p[0]], t0 + settle * 3), None);
        let back = sorted(vec![p[0], p[1]]);
        assert_eq!(
            s.observe(&back, t0 + settle * 3 + Duration::from_secs(5)),
            None
        );
        assert_eq!(s.observe(&back, t0 + settle * 5), None);
        // A member joins and stays: once settled, re-placed from the members before.
        let three = sorted(p.clone());
        let t1 = t0 + settle * 6;
        assert_eq!(s.observe(&three, t1), None);
        assert_eq!(s.observe(&three, t1 + settle / 2), None);
        assert_eq!(s.observe(&three, t1 + settle), Some(back.clone()));
        assert_eq!(s.observe(&three, t1 + settle * 2), None, "once");
        // The store could not be read: the same move comes again a settle time later.
        let t2 = t1 + settle * 2;
        s.retry(back.clone(), t2);
        assert_eq!(
            s.placed(),
            &back[..],
            "copies still placed over the old members"
        );
        assert_eq!(s.observe(&three, t2 + settle / 2), None);
        assert_eq!(s.observe(&three, t2 + settle), Some(back));
        assert_eq!(s.observe(&three, t2 + settle * 2), None, "once");
    }

    #[test]
    fn a_large_re_placement_waits_in_turn_and_leaves_room_for_builds() {
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let now = Instant::now();
        let mut q: AskQueue<usize> = AskQueue::default();
        let n = 3 * MAX_WAITING as u32;
        // Moves to a (connected) and to c (away), interleaved.
        let moves: Vec<(PeerId, String)> =
            (0..n).flat_map(|i| [(a, key(i)), (c, key(i))]).collect();
        assert_eq!(q.add_backlog(moves), 0);
        // Re-asked keys waiting or sent already are not asked twice.
        let connected = HashSet::from([a]);
        q.add(a, key(1), now);
        q.refill(&connected, now);
        assert_eq!(q.waiting.len(), BACKLOG_PER_MEMBER);
        // A new build's asks find room: nothing is displaced.
        for i in 0..MAX_WAITING as u32 / 2 {
            assert_eq!(q.add(b, key(i), now), Queued::Waiting);
        }
        // Answered in turn, every move is asked once, none lost.
        let mut asked = HashSet::new();
        let mut id = 0;
        for _ in 0..4 * n {
            q.refill(&connected, now);
            let due = q.due(&connected, now);
            if due.is_empty() {
                break;
            }
            for ask in due {
                assert!(asked.insert(ask.key.clone()), "{} asked twice", ask.key);
                id += 1;
                q.sent(id, ask);
                let done = q.answered(&id).unwrap();
                q.done(&done);
            }
        }
        // Every move to a was asked once, none lost, though c stayed away with its asks.
        assert_eq!(asked.len(), n as usize);
        // Three quarters waiting: moves wait, even for a connected member with none waiting.
        let d = PeerId::random();
        for i in 0..(MAX_WAITING * 3 / 4) as u32 - 512 {
            q.add(b, key(100_000 + i), now);
        }
        assert_eq!(q.add_backlog(vec![(d, key(7))]), 0);
        q.refill(&HashSet::from([a, d]), now);
        assert_eq!(
            q.waiting.len(),
            MAX_WAITING * 3 / 4,
            "nothing moved past the cap"
        );
        let mut abc = vec![a, b, c];
        abc.sort();
        assert_eq!(q.keep_members(&abc), 1, "d's move goes with d");
        assert_eq!(q.backlog.len, n as usize);
        // The backlog is bounded, and a member gone takes its asks with it.
        // One member's backlog is bounded, and so is the whole.
        let more: Vec<(PeerId, String)> = (n..MAX_BACKLOG_PER_MEMBER as u32 + 10)
            .map(|i| (c, key(i)))
            .collect();
        assert_eq!(q.add_backlog(more), 10);
        let others: Vec<(PeerId, String)> = (0..MAX_BACKLOG as u32)
            .map(|i| (PeerId::random(), key(i)))
            .collect();
        assert_eq!(
            q.add_backlog(others),
            MAX_BACKLOG_PER_MEMBER,
            "the whole is bounded"
        );
        let mut members = vec![a, b];
        members.sort();
        assert_eq!(q.keep_members(&members), MAX_BACKLOG);
        assert!(q.backlog.is_empty());
        // The keys others depend on this node for: reported when they changed.
        let keys = q.changed_keys().expect("changed");
        assert!(keys.contains(&key(100_000)) && !keys.contains(&key(n + 5)));
        assert_eq!(q.changed_keys(), None, "unchanged since");
    }
}
