//! Which members a transfer fetches a blob from. Every member named is asked at once what it
//! holds of the blob (a tree request for no bytes): all of it, the start of it (a member
//! still fetching it, see `partial`), or nothing. When a member is still fetching it, the
//! transfer takes the blob from the one least far ahead, alone (a relay: members that start
//! together line up behind each other, and the members holding the whole blob send it about
//! once instead of once per member); those holding it whole wait in reserve and take over
//! when the relay fails. Otherwise the blob comes striped from every member holding it whole.
//! The blob's tree comes from the first member chosen and is checked against the blob's
//! BLAKE3. A member a transfer dropped as too slow (see `transfer`) waits in reserve in this
//! node's transfers for [`SLOW_FOR`], behind the members that are not, so that it costs one
//! stall and not one per blob.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use blake3::hazmat::ChainingValue;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use libp2p::{PeerId, Stream};

use super::blob_stream;
use super::protocol::{BlobId, BlobReply, BlobRequest, MAX_CHUNK};
use super::transfer::blob_name;
use super::tree;
use super::{Replication, ReplicationError};
use crate::causes::Causes;

/// How long the other members' answers are awaited once one member said it holds the blob.
const ANSWER_GRACE: Duration = Duration::from_millis(500);
/// How long a member dropped as too slow is kept in reserve.
pub(super) const SLOW_FOR: Duration = Duration::from_secs(600);
/// Most members remembered as slow at once (beyond, the oldest is forgotten).
const MAX_SLOW: usize = 256;

/// The members this node's transfers found too slow lately, and when.
#[derive(Debug, Default)]
pub(crate) struct SlowMembers(Mutex<HashMap<PeerId, Instant>>);

impl SlowMembers {
    /// Remembers `peer` as too slow, from now.
    pub(super) fn mark(&self, peer: PeerId) {
        let mut slow = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        slow.retain(|_, at| now.duration_since(*at) < SLOW_FOR);
        if slow.len() >= MAX_SLOW
            && let Some(oldest) = slow.iter().min_by_key(|(_, at)| **at).map(|(p, _)| *p)
        {
            slow.remove(&oldest);
        }
        slow.insert(peer, now);
    }

    /// The members found too slow within [`SLOW_FOR`].
    fn now(&self) -> HashSet<PeerId> {
        let slow = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        slow.iter()
            .filter(|(_, at)| at.elapsed() < SLOW_FOR)
            .map(|(p, _)| *p)
            .collect()
    }
}

/// A blob's tree as a member sent it, checked against the blob's BLAKE3.
pub(super) struct Tree {
    /// The blob's size.
    pub size: u64,
    /// Its BLAKE3.
    pub root: blake3::Hash,
    /// Its groups' chaining values (empty for a one-group blob).
    pub values: Vec<ChainingValue>,
}

impl Tree {
    /// What group `i`'s bytes must hash to.
    pub fn expected(&self, i: u64) -> ChainingValue {
        if self.values.is_empty() {
            *self.root.as_bytes()
        } else {
            self.values[i as usize]
        }
    }

    /// The chaining values, concatenated (as the blob protocol sends them).
    pub fn flat(&self) -> Vec<u8> {
        self.values.iter().flatten().copied().collect()
    }
}

/// The sources of a transfer: members it fetches from, members holding the whole blob kept
/// back behind a relay, and why the others left.
pub(super) struct Sources {
    pub live: Vec<PeerId>,
    /// Members holding the whole blob, asked once the relay in `live` failed.
    reserve: Vec<PeerId>,
    /// Members set aside as too slow, asked again only once no other is left.
    last_resort: Vec<PeerId>,
    /// The members that said they hold the blob (whole or in part) when it was planned: one
    /// that lacks it later failed (a relay that fell behind, a holder that lost it).
    promised: Vec<PeerId>,
    /// Members that refused a stream while planning (serving as many as they may): asked
    /// last, after those holding the blob whole.
    busy: Vec<PeerId>,
    /// Whether every member dropped so far only lacked the blob.
    all_missing: bool,
    last: Option<ReplicationError>,
}

impl Sources {
    /// No member yet, none dropped.
    fn new() -> Self {
        Self {
            live: Vec::new(),
            reserve: Vec::new(),
            last_resort: Vec::new(),
            promised: Vec::new(),
            busy: Vec::new(),
            all_missing: true,
            last: None,
        }
    }

    /// Drops `peer` from this transfer for `e` (counted when its bytes did not verify); the
    /// reserve takes over when no member is left.
    pub fn drop_peer(&mut self, rep: &Replication, peer: PeerId, id: &BlobId, e: ReplicationError) {
        self.remove(&peer);
        let fault = match &e {
            // Lacking it is no fault in a member asked whether it holds it; one that said it
            // does and then lacks it failed (the blob is not "held by nobody").
            ReplicationError::NotHeld { .. } if !self.promised.contains(&peer) => false,
            ReplicationError::Corrupt { .. } => {
                rep.metrics.verification_failures.increment(1);
                rep.metrics.chunks_rejected.increment(1);
                true
            }
            _ => true,
        };
        if fault {
            self.all_missing = false;
            tracing::warn!(peer_id = %peer, blob = %blob_name(id), error = %Causes(&e), sources_left = self.live.len(), "a member was dropped from a transfer");
        } else {
            tracing::debug!(peer_id = %peer, blob = %blob_name(id), sources_left = self.live.len(), "a member does not hold a blob");
        }
        self.last = Some(e);
    }

    /// Sets `peer` aside as too slow (it held up the chunk written next for `stall`): asked
    /// again only once every other member failed.
    pub fn demote(&mut self, peer: PeerId, id: &BlobId, stall: Duration) {
        self.live.retain(|p| *p != peer);
        self.reserve.retain(|p| *p != peer);
        if !self.last_resort.contains(&peer) {
            self.last_resort.push(peer);
        }
        self.refill();
        tracing::warn!(peer_id = %peer, blob = %blob_name(id), error = format!("too slow: the chunk written next took over {} s", stall.as_secs()), sources_left = self.live.len(), "a member was dropped from a transfer");
    }

    /// Takes `peer` out of every list, turning to the others as [`Sources::refill`] does.
    fn remove(&mut self, peer: &PeerId) {
        self.live.retain(|p| p != peer);
        self.reserve.retain(|p| p != peer);
        self.last_resort.retain(|p| p != peer);
        self.refill();
    }

    /// Turns to the reserve, then to the members set aside, when no member is live.
    fn refill(&mut self) {
        if self.live.is_empty() {
            self.live = if self.reserve.is_empty() {
                std::mem::take(&mut self.last_resort)
            } else {
                std::mem::take(&mut self.reserve)
            };
        }
    }

    /// Whether the transfer has a member to turn to besides `peer` (live, or in reserve).
    pub fn has_alternative(&self, peer: &PeerId) -> bool {
        self.live.iter().any(|p| p != peer) || !self.reserve.is_empty()
    }

    /// Why the transfer failed once no member is left.
    pub fn failure(self, id: &BlobId) -> ReplicationError {
        match self.last {
            Some(e @ ReplicationError::NotHeld { .. }) if self.all_missing => e,
            Some(e) => ReplicationError::NoSource {
                blob: blob_name(id),
                last: Box::new(e),
            },
            // No member to ask at all: not a sign that the cluster lacks the blob.
            None => ReplicationError::NoMember {
                blob: blob_name(id),
            },
        }
    }
}

/// Where a transfer's bytes come from.
pub(super) struct Plan {
    /// The blob's tree.
    pub tree: Tree,
    /// The member that sent the tree (the one to blame when a blob asked for by SHA-256
    /// hashes to the tree but not to its name).
    pub tree_from: PeerId,
    /// The members to fetch from.
    pub sources: Sources,
    /// Streams already open to them (a member's chunks go on the stream it answered on).
    pub streams: HashMap<PeerId, Stream>,
    /// The member still fetching the blob that the transfer takes it from, if any.
    pub relay: Option<PeerId>,
}

/// What a member said it holds of a blob: its size, BLAKE3, and the bytes from the start it
/// holds if it is still fetching it.
struct Holding {
    size: u64,
    blake3: String,
    held: Option<u64>,
}

/// Asks `peer` what it holds of blob `id` (`size` when known, at most `max`), on a new
/// stream that the transfer keeps for that member's chunks.
async fn ask_holding(
    rep: &Replication,
    peer: PeerId,
    id: &BlobId,
    size: Option<u64>,
    max: u64,
) -> Result<(Holding, Stream), ReplicationError> {
    let mut stream = blob_stream::open(rep, peer).await?;
    let request = BlobRequest {
        id: id.clone(),
        offset: 0,
        len: 0,
        tree: true,
    };
    let reply = blob_stream::ask(&mut stream, peer, &request).await?;
    let (s, b3, held) = tree_header(peer, id, reply, size, max)?;
    let holding = Holding {
        size: s,
        blake3: b3,
        held,
    };
    Ok((holding, stream))
}

/// The size, BLAKE3 and held bytes a tree answer of `peer` gives, checked against what the
/// transfer knows (`size`, at most `max`, the name asked for); an error for other answers.
fn tree_header(
    peer: PeerId,
    id: &BlobId,
    reply: BlobReply,
    size: Option<u64>,
    max: u64,
) -> Result<(u64, String, Option<u64>), ReplicationError> {
    let corrupt = |why: String| ReplicationError::Corrupt {
        peer: peer.to_string(),
        blob: blob_name(id),
        why,
    };
    let (s, b3, held) = match reply {
        BlobReply::Tree {
            size, blake3, held, ..
        } => (size, blake3, held),
        other => return Err(unexpected(peer, id, &other, "no tree")),
    };
    if s > max {
        return Err(corrupt(format!(
            "it says the blob has {s} bytes, more than the {max} allowed"
        )));
    }
    if let Some(n) = size
        && n != s
    {
        return Err(corrupt(format!("it says the blob has {s} bytes, not {n}")));
    }
    if let BlobId::Blake3(name) = id
        && *name != b3
    {
        return Err(corrupt(format!("it names the blob BLAKE3 {b3}")));
    }
    if held.is_some_and(|h| h > s) {
        return Err(corrupt(format!("it says it holds more than the {s} bytes")));
    }
    Ok((s, b3, held))
}

/// Why `peer`'s answer about blob `id` is not the one asked for (`wanted`, e.g. "no tree"):
/// the member lacks the blob, refused, or sent something else (counted as corrupt).
pub(super) fn unexpected(
    peer: PeerId,
    id: &BlobId,
    reply: &BlobReply,
    wanted: &str,
) -> ReplicationError {
    match reply {
        BlobReply::Missing => ReplicationError::NotHeld {
            peer: peer.to_string(),
            blob: blob_name(id),
        },
        BlobReply::Refused => ReplicationError::PeerFailed {
            peer: peer.to_string(),
            why: "it refused the request".into(),
        },
        _ => ReplicationError::Corrupt {
            peer: peer.to_string(),
            blob: blob_name(id),
            why: format!("it sent {wanted}"),
        },
    }
}

/// Fetches blob `id`'s tree from `peer` on `stream` (the size and BLAKE3 it gave: `head`);
/// checks that it merges to the blob's BLAKE3.
async fn fetch_tree(
    peer: PeerId,
    stream: &mut Stream,
    id: &BlobId,
    head: &Holding,
) -> Result<Tree, ReplicationError> {
    let corrupt = |why: String| ReplicationError::Corrupt {
        peer: peer.to_string(),
        blob: blob_name(id),
        why,
    };
    let want = tree::tree_len(head.size) * 32;
    let mut bytes: Vec<u8> = Vec::new();
    while (bytes.len() as u64) < want {
        let request = BlobRequest {
            id: id.clone(),
            offset: bytes.len() as u64,
            len: MAX_CHUNK,
            tree: true,
        };
        let data = match blob_stream::ask(stream, peer, &request).await? {
            BlobReply::Tree {
                size, blake3, data, ..
            } if (size, &blake3) == (head.size, &head.blake3) => data,
            BlobReply::Tree { .. } => return Err(corrupt("its tree pages disagree".into())),
            other => return Err(unexpected(peer, id, &other, "no tree")),
        };
        if data.is_empty() || bytes.len() as u64 + data.len() as u64 > want {
            return Err(corrupt(format!("its tree is not {want} bytes long")));
        }
        bytes.extend_from_slice(&data);
    }
    let root = blake3::Hash::from_hex(&head.blake3)
        .map_err(|_| corrupt(format!("{:?} is no BLAKE3", head.blake3)))?;
    let values = tree::values(&bytes).unwrap_or_default();
    if !values.is_empty() && tree::root(head.size, &values) != Some(root) {
        return Err(corrupt(
            "its tree does not merge to the blob's BLAKE3".into(),
        ));
    }
    Ok(Tree {
        size: head.size,
        root,
        values,
    })
}

/// Sets the members `src` starts with and keeps in reserve, from what the members of `order`
/// said they hold (`heads`): the member still fetching the blob least far ahead alone (first
/// named on a tie), those holding it whole in reserve; without one, those holding it whole.
/// Members found `slow` lately are chosen from only when no other holds anything, and are
/// otherwise last in reserve (those holding it whole). Returns the relay.
fn choose(
    order: &[PeerId],
    heads: &HashMap<PeerId, Holding>,
    slow: &HashSet<PeerId>,
    src: &mut Sources,
) -> Option<PeerId> {
    let (fast, slow): (Vec<PeerId>, Vec<PeerId>) = order.iter().partition(|p| !slow.contains(p));
    if !fast.iter().any(|p| heads.contains_key(p)) {
        return choose_among(&slow, heads, src);
    }
    let relay = choose_among(&fast, heads, src);
    src.reserve.extend(
        slow.iter()
            .filter(|p| heads.get(p).is_some_and(|h| h.held.is_none())),
    );
    relay
}

/// [`choose`] among `order`, every member alike.
fn choose_among(
    order: &[PeerId],
    heads: &HashMap<PeerId, Holding>,
    src: &mut Sources,
) -> Option<PeerId> {
    let relay = order
        .iter()
        .filter_map(|p| Some((*p, heads.get(p)?.held?)))
        .min_by_key(|(_, held)| *held)
        .map(|(p, _)| p);
    let whole: Vec<PeerId> = order
        .iter()
        .filter(|p| heads.get(p).is_some_and(|h| h.held.is_none()))
        .copied()
        .collect();
    match relay {
        Some(r) => {
            src.live = vec![r];
            src.reserve = whole;
        }
        None => {
            src.live = whole;
            src.reserve.clear();
        }
    }
    relay
}

/// Chooses where blob `id` (`size` when known, at most `max`) comes from among `sources` (in
/// order of preference), and fetches its tree.
pub(super) async fn plan(
    rep: &Replication,
    sources: &[PeerId],
    id: &BlobId,
    size: Option<u64>,
    max: u64,
) -> Result<Plan, ReplicationError> {
    let mut order: Vec<PeerId> = Vec::new();
    for p in sources {
        if !order.contains(p) && *p != rep.peer_id() {
            order.push(*p);
        }
    }
    let mut src = Sources::new();
    let mut asks: FuturesUnordered<_> = order
        .iter()
        .map(|&p| async move { (p, ask_holding(rep, p, id, size, max).await) })
        .collect();
    let mut heads: HashMap<PeerId, Holding> = HashMap::new();
    let mut streams: HashMap<PeerId, Stream> = HashMap::new();
    let mut until: Option<tokio::time::Instant> = None;
    loop {
        let next = match until {
            Some(t) => match tokio::time::timeout_at(t, asks.next()).await {
                Ok(n) => n,
                Err(_) => break,
            },
            None => asks.next().await,
        };
        let Some((peer, answer)) = next else {
            break;
        };
        match answer {
            Ok((head, stream)) => {
                heads.insert(peer, head);
                streams.insert(peer, stream);
                until.get_or_insert_with(|| tokio::time::Instant::now() + ANSWER_GRACE);
            }
            // Busy now: asked again once the others fail, rather than given up.
            Err(e @ ReplicationError::Busy { .. }) => {
                tracing::debug!(peer_id = %peer, blob = %blob_name(id), "a member is busy; kept in reserve");
                src.busy.push(peer);
                src.all_missing = false;
                src.last = Some(e);
            }
            Err(e) => src.drop_peer(rep, peer, id, e),
        }
    }
    drop(asks);
    let relay = choose(&order, &heads, &rep.slow.now(), &mut src);
    src.promised = heads.keys().copied().collect();
    let busy = std::mem::take(&mut src.busy);
    src.reserve.extend(busy);
    // The tree, from the first member chosen that sends a good one.
    let (tree, tree_from) = loop {
        let Some(&peer) = src.live.first() else {
            return Err(src.failure(id));
        };
        let (Some(head), Some(stream)) = (heads.get(&peer), streams.get_mut(&peer)) else {
            src.live.retain(|p| *p != peer);
            continue;
        };
        match fetch_tree(peer, stream, id, head).await {
            Ok(t) => break (t, peer),
            Err(e) => {
                streams.remove(&peer);
                src.drop_peer(rep, peer, id, e);
            }
        }
    };
    // A member naming other bytes than the tree's (possible when asked by SHA-256) is left
    // out: its chunks could not verify.
    let root = tree.root.to_hex().to_string();
    for (peer, head) in &heads {
        if (head.size, &head.blake3) != (tree.size, &root)
            && (src.live.contains(peer) || src.reserve.contains(peer))
        {
            let e = ReplicationError::Corrupt {
                peer: peer.to_string(),
                blob: blob_name(id),
                why: format!(
                    "it names BLAKE3 {} ({} bytes), the tree's member {root} ({} bytes)",
                    head.blake3, head.size, tree.size
                ),
            };
            streams.remove(peer);
            src.drop_peer(rep, *peer, id, e);
        }
    }
    let relay = relay.filter(|r| src.live.contains(r));
    if let Some(r) = relay {
        tracing::info!(peer_id = %r, blob = %blob_name(id), held = heads.get(&r).and_then(|h| h.held), reserve = src.reserve.len(), "a blob is fetched from a member still fetching it");
    }
    // Only the members asked first keep their streams: a member in reserve may wait past the
    // holder's idle bound (`blob_stream`), and an idle stream holds one of its serving places.
    // A member promoted later opens a new one.
    streams.retain(|p, _| src.live.contains(p));
    Ok(Plan {
        tree,
        tree_from,
        sources: src,
        streams,
        relay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holding(held: Option<u64>) -> Holding {
        Holding {
            size: 10 << 20,
            blake3: "a".repeat(64),
            held,
        }
    }

    #[test]
    fn the_member_least_far_ahead_relays_and_whole_holders_wait_in_reserve() {
        let [a, b, c, d, e] = [(); 5].map(|()| PeerId::random());
        let order = [a, b, c, d, e];
        // a and e whole, b and d still fetching (d less far), c lacks it (no answer kept).
        let heads = HashMap::from([
            (a, holding(None)),
            (b, holding(Some(5 << 20))),
            (d, holding(Some(2 << 20))),
            (e, holding(None)),
        ]);
        let mut src = Sources::new();
        let none = HashSet::new();
        assert_eq!(choose(&order, &heads, &none, &mut src), Some(d));
        assert_eq!(src.live, vec![d]);
        assert_eq!(src.reserve, vec![a, e]);
        // A tie goes to the member named first.
        let heads = HashMap::from([(b, holding(Some(0))), (d, holding(Some(0)))]);
        assert_eq!(choose(&order, &heads, &none, &mut src), Some(b));
        assert!(src.reserve.is_empty());
        // Nobody fetching it: striped over the whole holders, in the order given.
        let heads = HashMap::from([(e, holding(None)), (a, holding(None))]);
        assert_eq!(choose(&order, &heads, &none, &mut src), None);
        assert_eq!(src.live, vec![a, e]);
        assert!(src.reserve.is_empty());
    }

    #[test]
    fn a_member_set_aside_as_slow_is_asked_again_only_when_no_other_is_left() {
        let [a, b, r] = [(); 3].map(|()| PeerId::random());
        let id = BlobId::Blake3("a".repeat(64));
        let mut src = Sources::new();
        // A relay a, with b in reserve: a is set aside, b takes over.
        (src.live, src.reserve) = (vec![a], vec![b]);
        assert!(src.has_alternative(&a));
        src.demote(a, &id, Duration::from_secs(10));
        assert_eq!((src.live.clone(), src.reserve.clone()), (vec![b], vec![]));
        assert!(
            !src.has_alternative(&b),
            "a set-aside member is no alternative"
        );
        // b fails: a is asked again rather than the transfer failing.
        src.remove(&b);
        assert_eq!(src.live, vec![a]);
        // Striped over a and r: a set aside, r goes on alone.
        let mut src = Sources::new();
        src.live = vec![a, r];
        src.demote(a, &id, Duration::from_secs(10));
        assert_eq!(src.live, vec![r]);
    }

    #[test]
    fn a_member_found_slow_waits_in_reserve_unless_it_is_all_there_is() {
        let [a, b, c] = [(); 3].map(|()| PeerId::random());
        let order = [a, b, c];
        let slow = HashSet::from([a]);
        let mut src = Sources::new();
        // a and b whole, c fetching: c relays, b then a (slow, last) in reserve.
        let heads = HashMap::from([
            (a, holding(None)),
            (b, holding(None)),
            (c, holding(Some(0))),
        ]);
        assert_eq!(choose(&order, &heads, &slow, &mut src), Some(c));
        assert_eq!(
            (src.live.clone(), src.reserve.clone()),
            (vec![c], vec![b, a])
        );
        // a and b whole: striped over b alone, a in reserve.
        let heads = HashMap::from([(a, holding(None)), (b, holding(None))]);
        assert_eq!(choose(&order, &heads, &slow, &mut src), None);
        assert_eq!((src.live.clone(), src.reserve.clone()), (vec![b], vec![a]));
        // Only a holds it: a it is.
        let heads = HashMap::from([(a, holding(None))]);
        assert_eq!(choose(&order, &heads, &slow, &mut src), None);
        assert_eq!((src.live.clone(), src.reserve.clone()), (vec![a], vec![]));
        // Marked, remembered (until SLOW_FOR has passed).
        let marks = SlowMembers::default();
        marks.mark(a);
        assert_eq!(marks.now(), HashSet::from([a]));
    }
}
