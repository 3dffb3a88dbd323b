//! Where a model missing here may come from before it is built: the cluster. The asset
//! pipeline asks, on a local miss, the [`Peers`] it was given (replication implements it) and
//! builds only when they answer that this node should.

use crate::store::BoxFuture;

/// The cluster as the asset pipeline sees it.
pub trait Peers: Send + Sync {
    /// Asks the cluster for the model of cache key `key`: `true` once a member's signed record
    /// and blob are stored here (both verified); `false` when this node should build it (no
    /// member has it, no member is building it, or the one building it went silent).
    fn find<'a>(&'a self, key: &'a str) -> BoxFuture<'a, bool>;

    /// This node finished building `key` (`ok`: it is stored and can be provided; otherwise
    /// its lease ends so waiting members build themselves).
    fn built(&self, key: &str, ok: bool);

    /// A check, over the cluster as known now, of whether this node holds one of the copies
    /// of a key the cluster keeps (`replication.factor`): garbage collection evicts those
    /// last. Nobody is designated by default.
    fn designation(&self) -> Box<dyn Fn(&str) -> bool + Send + Sync> {
        Box::new(|_| false)
    }
}
