//! The builds of this process, newest last, for the operator page: what is queued, running,
//! built or failed, and how long each took. Bounded; kept in memory only (the cached assets
//! themselves are listed from their records).

use std::collections::VecDeque;
use std::time::Instant;

use serde::Serialize;

/// Builds remembered.
pub const JOURNAL_LEN: usize = 64;

/// Where a build stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum BuildState {
    /// Admitted, waiting for a build slot.
    Queued,
    /// Holding a slot.
    Running,
    /// Stored: the asset's size.
    Built {
        /// Bytes of the asset.
        size: u64,
    },
    /// Failed or timed out: why.
    Failed {
        /// The error, with its causes.
        error: String,
    },
}

/// One build as the journal keeps it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildEntry {
    /// Schematic ID.
    pub schematic: String,
    /// Talos version tag.
    pub version: String,
    /// The asset path requested.
    pub path: String,
    /// When it was admitted (Unix seconds).
    pub admitted: u64,
    /// Seconds from admission to now (still going) or to the end.
    pub seconds: f64,
    /// Where it stands.
    #[serde(flatten)]
    pub state: BuildState,
}

/// A journal entry and its private bookkeeping.
struct Slot {
    id: u64,
    admitted_at: Instant,
    ended: Option<f64>,
    entry: BuildEntry,
}

/// The bounded journal.
#[derive(Default)]
pub struct Journal {
    next: u64,
    slots: VecDeque<Slot>,
}

impl Journal {
    /// Records an admitted build; returns its handle for [`Journal::update`].
    pub fn admit(&mut self, schematic: &str, version: &str, path: &str) -> u64 {
        let id = self.next;
        self.next += 1;
        if self.slots.len() == JOURNAL_LEN {
            self.slots.pop_front();
        }
        self.slots.push_back(Slot {
            id,
            admitted_at: Instant::now(),
            ended: None,
            entry: BuildEntry {
                schematic: schematic.to_string(),
                version: version.to_string(),
                path: path.to_string(),
                admitted: crate::clock::now_secs(),
                seconds: 0.0,
                state: BuildState::Queued,
            },
        });
        id
    }

    /// Moves build `id` to `state` (a build that has left the journal is ignored); a final
    /// state stops its clock.
    pub fn update(&mut self, id: u64, state: BuildState) {
        if let Some(slot) = self.slots.iter_mut().find(|s| s.id == id) {
            if matches!(state, BuildState::Built { .. } | BuildState::Failed { .. }) {
                slot.ended = Some(slot.admitted_at.elapsed().as_secs_f64());
            }
            slot.entry.state = state;
        }
    }

    /// The builds, newest first, with their durations so far.
    pub fn list(&self) -> Vec<BuildEntry> {
        self.slots
            .iter()
            .rev()
            .map(|s| BuildEntry {
                seconds: s
                    .ended
                    .unwrap_or_else(|| s.admitted_at.elapsed().as_secs_f64()),
                ..s.entry.clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_durations_and_the_bound() {
        let mut j = Journal::default();
        let a = j.admit("s1", "v1.11.0", "kernel-amd64");
        let b = j.admit("s2", "v1.11.0", "metal-amd64.iso");
        j.update(a, BuildState::Running);
        j.update(a, BuildState::Built { size: 42 });
        j.update(
            b,
            BuildState::Failed {
                error: "no space".into(),
            },
        );
        let l = j.list();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].path, "metal-amd64.iso", "newest first");
        assert_eq!(l[1].state, BuildState::Built { size: 42 });
        let frozen = l[1].seconds;
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(j.list()[1].seconds, frozen, "an ended build's clock stops");

        let c = j.admit("s3", "v1.11.0", "cmdline-metal-amd64");
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(j.list()[0].seconds > 0.0, "a queued build's clock runs");
        assert_eq!(j.list()[0].state, BuildState::Queued);

        for i in 0..JOURNAL_LEN {
            j.admit("s", "v1.11.0", &format!("p{i}"));
        }
        assert_eq!(j.list().len(), JOURNAL_LEN);
        assert!(j.list().iter().all(|e| e.path.starts_with('p')));
        // An update of a build that left the journal changes nothing.
        j.update(c, BuildState::Running);
        assert!(j.list().iter().all(|e| e.state == BuildState::Queued));
    }
}
