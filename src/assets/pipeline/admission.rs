//! What the asset service remembers between requests, each with a bound: failed builds (with
//! backoff, so a failing key costs one build per backoff period, not one per request), the
//! blobs already hashed since start, and when each asset was last recorded as served. Also the
//! estimate behind `Retry-After` when the build queue is full.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::super::error::BuildFailure;

/// Most failed keys remembered (the soonest to expire are forgotten first beyond it).
pub(crate) const MAX_FAILURES: usize = 4096;
/// Most entries of the hashed-blob and last-served memories.
pub(crate) const MAX_REMEMBERED: usize = 65_536;
/// How long a deterministic failure (the request's fault) is answered from memory.
pub(crate) const CLIENT_ERROR_TTL: Duration = Duration::from_secs(60);
/// First backoff after an internal failure; doubled per repeat up to [`MAX_BACKOFF`].
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// Longest backoff after repeated internal failures.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// A remembered failure.
struct Failed {
    failure: BuildFailure,
    until: Instant,
    strikes: u32,
}

/// Failed builds by cache key, answered from memory until their backoff ends.
#[derive(Default)]
pub(crate) struct Failures {
    by_key: HashMap<String, Failed>,
}

impl Failures {
    /// The remembered failure of `key` and how long it still holds, if it does.
    pub(crate) fn check(&mut self, key: &str, now: Instant) -> Option<(BuildFailure, Duration)> {
        let f = self.by_key.get(key)?;
        if f.until > now {
            return Some((f.failure.clone(), f.until - now));
        }
        None
    }

    /// Remembers that `key` failed with `failure` (`internal`: the appliance's fault, backed
    /// off exponentially per repeat; otherwise the request's, for a fixed time).
    pub(crate) fn record(
        &mut self,
        key: &str,
        failure: BuildFailure,
        internal: bool,
        now: Instant,
    ) {
        let strikes = self.by_key.get(key).map_or(0, |f| f.strikes) + 1;
        let hold = if internal {
            backoff(strikes)
        } else {
            CLIENT_ERROR_TTL
        };
        self.by_key.insert(
            key.to_string(),
            Failed {
                failure,
                until: now + hold,
                strikes,
            },
        );
        if self.by_key.len() > MAX_FAILURES {
            self.by_key.retain(|_, f| f.until > now);
        }
        while self.by_key.len() > MAX_FAILURES {
            let Some(soonest) = self
                .by_key
                .iter()
                .min_by_key(|(_, f)| f.until)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.by_key.remove(&soonest);
        }
    }

    /// Forgets `key` (it built successfully).
    pub(crate) fn clear(&mut self, key: &str) {
        self.by_key.remove(key);
    }

    /// Forgets the failures caused by a full disk (space was freed since); answers how many.
    pub(crate) fn forget_no_space(&mut self) -> usize {
        let before = self.by_key.len();
        self.by_key
            .retain(|_, f| !crate::causes::is_no_space(&f.failure));
        before - self.by_key.len()
    }

    /// Keys remembered now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
}

/// The backoff after the `strikes`-th internal failure in a row.
pub(crate) fn backoff(strikes: u32) -> Duration {
    let doublings = strikes.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// A set with a size bound: beyond it, the oldest half is forgotten (the facts it holds can be
/// learnt again — a blob hashed once more, a last-served time written once more).
pub(crate) struct Bounded<V> {
    entries: HashMap<String, (u64, V)>,
    clock: u64,
    cap: usize,
}

impl<V: Copy> Bounded<V> {
    /// An empty memory holding at most `cap` entries.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            entries: HashMap::new(),
            clock: 0,
            cap: cap.max(2),
        }
    }

    /// The value of `key`, if remembered.
    pub(crate) fn get(&self, key: &str) -> Option<V> {
        self.entries.get(key).map(|(_, v)| *v)
    }

    /// Remembers `key` with `value`.
    pub(crate) fn insert(&mut self, key: &str, value: V) {
        self.clock += 1;
        self.entries.insert(key.to_string(), (self.clock, value));
        if self.entries.len() > self.cap {
            let mut ages: Vec<u64> = self.entries.values().map(|(t, _)| *t).collect();
            let mid = ages.len() / 2;
            let (_, cut, _) = ages.select_nth_unstable(mid);
            let cut = *cut;
            self.entries.retain(|_, (t, _)| *t > cut);
        }
    }

    /// Forgets `key`.
    pub(crate) fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Entries remembered now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Exponential moving average of build durations, for `Retry-After`.
pub(crate) struct BuildTimes {
    average_ms: f64,
}

impl Default for BuildTimes {
    fn default() -> Self {
        // Before any build: a guess of the typical cold build here (ISO, disk image).
        Self {
            average_ms: 10_000.0,
        }
    }
}

impl BuildTimes {
    /// Adds one build's duration.
    pub(crate) fn add(&mut self, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        self.average_ms = 0.8 * self.average_ms + 0.2 * ms;
    }

    /// Seconds until a build admitted behind `ahead` others, `concurrency` at a time, may be
    /// admitted: rounds of builds ahead times the average build, between 1 s and 10 min.
    pub(crate) fn retry_after(&self, ahead: usize, concurrency: usize) -> u64 {
        let rounds = (ahead / concurrency.max(1)).max(1) as f64;
        let secs = (rounds * self.average_ms / 1000.0).round();
        (secs as u64).clamp(1, 600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::error::BuildError;

    fn failure() -> BuildFailure {
        BuildError::TimedOut(1).into()
    }

    #[test]
    fn internal_failures_back_off_exponentially_and_clear_on_success() {
        let mut f = Failures::default();
        let t0 = Instant::now();
        f.record("k", failure(), true, t0);
        assert_eq!(f.check("k", t0).map(|(_, d)| d), Some(FIRST_BACKOFF));
        assert!(f.check("k", t0 + FIRST_BACKOFF).is_none(), "backoff over");
        f.record("k", failure(), true, t0 + FIRST_BACKOFF);
        let (_, left) = f.check("k", t0 + FIRST_BACKOFF).unwrap();
        assert_eq!(left, FIRST_BACKOFF * 2);
        assert_eq!(backoff(30), MAX_BACKOFF);
        f.clear("k");
        assert!(f.check("k", t0).is_none());
        f.record("c", failure(), false, t0);
        assert_eq!(f.check("c", t0).map(|(_, d)| d), Some(CLIENT_ERROR_TTL));
    }

    #[test]
    fn failures_for_lack_of_space_are_forgotten_once_space_is_freed() {
        let mut f = Failures::default();
        let t0 = Instant::now();
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let store = crate::store::StoreError::from(crate::io_context::io_err("write blob")(full));
        f.record("full", BuildError::Store(store).into(), true, t0);
        f.record("other", failure(), true, t0);
        assert_eq!(f.forget_no_space(), 1);
        assert!(f.check("full", t0).is_none());
        assert!(f.check("other", t0).is_some());
    }

    #[test]
    fn failures_stay_bounded() {
        let mut f = Failures::default();
        let t0 = Instant::now();
        for i in 0..(MAX_FAILURES * 3) {
            f.record(&format!("k{i}"), failure(), true, t0);
        }
        assert!(f.len() <= MAX_FAILURES, "{}", f.len());
    }

    #[test]
    fn bounded_memory_forgets_the_oldest_half() {
        let mut m = Bounded::new(100);
        for i in 0..1000u32 {
            m.insert(&format!("b{i}"), i);
        }
        assert!(m.len() <= 100, "{}", m.len());
        assert_eq!(m.get("b999"), Some(999), "the newest is kept");
        assert_eq!(m.get("b0"), None, "the oldest is forgotten");
    }

    #[test]
    fn retry_after_follows_the_queue_and_build_times() {
        let mut t = BuildTimes::default();
        for _ in 0..50 {
            t.add(Duration::from_secs(4));
        }
        assert_eq!(t.retry_after(0, 2), 4);
        assert_eq!(t.retry_after(8, 2), 16);
        assert_eq!(t.retry_after(100_000, 1), 600);
    }
}
