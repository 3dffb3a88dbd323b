//! The peers judged members: written by the event loop, which checks every peer's credential,
//! and read by what answers members outside it (Kademlia's gate, the blob streams) without a
//! round trip to the loop.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};

use libp2p::PeerId;

/// The peers judged members now (cheap to clone: one set).
#[derive(Debug, Clone, Default)]
pub(crate) struct Admitted(Arc<RwLock<HashSet<PeerId>>>);

impl Admitted {
    /// Whether `peer` is judged a member.
    pub(crate) fn contains(&self, peer: &PeerId) -> bool {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(peer)
    }

    /// Judges `peer` a member; whether it was not one already.
    pub(crate) fn insert(&self, peer: PeerId) -> bool {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(peer)
    }

    /// Judges `peer` no (longer a) member; whether it was one.
    pub(crate) fn remove(&self, peer: &PeerId) -> bool {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(peer)
    }
}
