//! Places: a bound on work done for members at once, in all and for each member, so that no
//! member takes every place from the others. A place is held until dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use libp2p::PeerId;

/// The work being done: in all, and for each member (cheap to clone: one count).
#[derive(Debug, Clone)]
pub(crate) struct Places {
    counts: Arc<Mutex<Counts>>,
    max_all: usize,
    max_per_peer: usize,
}

#[derive(Debug, Default)]
struct Counts {
    all: usize,
    by_peer: HashMap<PeerId, usize>,
}

/// Which bound a piece of work found reached.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// All places are taken.
    Node,
    /// Its member's share is taken.
    Member,
}

impl Places {
    /// At most `max_all` places at once, and `max_per_peer` of one member.
    pub(crate) fn new(max_all: usize, max_per_peer: usize) -> Self {
        Self {
            counts: Arc::default(),
            max_all,
            max_per_peer,
        }
    }

    /// The bound that `full` names.
    pub(crate) fn max(&self, full: &Full) -> usize {
        match full {
            Full::Node => self.max_all,
            Full::Member => self.max_per_peer,
        }
    }

    /// A place for one more piece of `peer`'s work, held until dropped.
    pub(crate) fn take(&self, peer: PeerId) -> Result<Place, Full> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.all >= self.max_all {
            return Err(Full::Node);
        }
        let n = counts.by_peer.entry(peer).or_default();
        if *n >= self.max_per_peer {
            return Err(Full::Member);
        }
        *n += 1;
        counts.all += 1;
        Ok(Place {
            places: self.clone(),
            peer,
        })
    }
}

/// One piece of work's place.
#[derive(Debug)]
pub(crate) struct Place {
    places: Places,
    peer: PeerId,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut counts = self
            .places
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.all = counts.all.saturating_sub(1);
        if let Some(n) = counts.by_peer.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.by_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Full, Places};
    use libp2p::PeerId;

    #[test]
    fn a_member_gets_its_share_and_no_more_while_others_keep_theirs() {
        let shares = Places::new(64, 16);
        let (greedy, other) = (PeerId::random(), PeerId::random());
        let mut held: Vec<_> = (0..16)
            .map(|_| shares.take(greedy).expect("within the share"))
            .collect();
        assert_eq!(shares.take(greedy).err(), Some(Full::Member), "one over");
        let theirs = shares
            .take(other)
            .expect("another member's share is untouched");
        held.pop();
        assert!(
            shares.take(greedy).is_ok(),
            "a place comes back when the work ends"
        );
        drop(held);
        drop(theirs);
        assert!(
            shares.counts.lock().unwrap().by_peer.is_empty(),
            "no member left counted"
        );
    }

    #[test]
    fn the_node_bound_holds_across_members() {
        let places = Places::new(3, 2);
        let held: Vec<_> = (0..3)
            .map(|_| places.take(PeerId::random()).expect("within the bound"))
            .collect();
        assert_eq!(places.take(PeerId::random()).err(), Some(Full::Node));
        drop(held);
        assert!(places.take(PeerId::random()).is_ok());
    }
}
