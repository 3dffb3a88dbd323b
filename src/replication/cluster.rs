//! The cluster state of one data directory (`<dataDir>/cluster/`): the cluster record, this
//! node's credential, the revocations and the members' last known addresses. The same type
//! serves the offline CLI (on a stopped node's directory, under its lock) and the running node
//! (admin API and swarm), which learns of every change through [`Cluster::subscribe`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use libp2p::PeerId;
use libp2p::identity::Keypair;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::ReplicationError;
use super::files::{read_json, write_json};
use super::identity;
use super::invitation::{self, Invitation, Issued};
use super::membership::{ClusterKey, Envelope, check_member, issue_credential, issue_revocation};
use crate::trust::SigningKey;

/// Most revocations a cluster keeps (each is a few hundred bytes and travels in every hello).
pub const MAX_REVOCATIONS: usize = 1024;
/// Most members whose addresses are remembered.
pub const MAX_KNOWN_PEERS: usize = 256;
/// Most addresses remembered per member.
pub const MAX_ADDRS_PER_PEER: usize = 8;
/// Largest cluster file read.
const MAX_FILE: u64 = 1024 * 1024;

/// What founded the cluster: its key, its factory URL, who and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterRecord {
    /// Cluster ID (hex SHA-256 of the public key's DER).
    pub cluster: String,
    /// The cluster public key, PKIX PEM.
    pub public_key: String,
    /// The site's factory URL: `http.externalURL` of the founder when it founded the cluster.
    #[serde(rename = "factoryURL")]
    pub factory_url: String,
    /// When it was founded, Unix seconds.
    pub founded: u64,
    /// The founder's peer ID.
    pub founder: String,
}

/// A member's last known addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KnownPeer {
    /// Peer ID.
    pub peer_id: String,
    /// Multiaddrs (without `/p2p/`).
    pub addrs: Vec<String>,
}

/// The cluster as this node knows it (a snapshot; cheap to clone behind an `Arc`).
#[derive(Debug, Clone)]
pub struct Membership {
    /// The cluster record.
    pub record: ClusterRecord,
    /// The cluster's public key and ID.
    pub key: ClusterKey,
    /// This node's credential, if it has one.
    pub credential: Option<Envelope>,
    /// Its expiry (Unix seconds; `None` = until removed).
    pub expires: Option<u64>,
    /// Removed members: peer → (when, the signed revocation).
    pub revocations: BTreeMap<PeerId, (u64, Envelope)>,
}

impl Membership {
    /// Removed peers and when.
    pub fn revoked(&self) -> BTreeMap<PeerId, u64> {
        self.revocations
            .iter()
            .map(|(p, (at, _))| (*p, *at))
            .collect()
    }
}

struct Paths {
    record: PathBuf,
    credential: PathBuf,
    revocations: PathBuf,
    peers: PathBuf,
    identity: PathBuf,
}

impl Paths {
    fn new(data_dir: &Path) -> Self {
        let dir = data_dir.join("cluster");
        Self {
            record: dir.join("cluster.json"),
            credential: dir.join("credential.json"),
            revocations: dir.join("revocations.json"),
            peers: dir.join("peers.json"),
            identity: identity::path(data_dir),
        }
    }
}

/// The cluster state of a data directory.
pub struct Cluster {
    paths: Paths,
    key: Arc<SigningKey>,
    state: Mutex<Option<Arc<Membership>>>,
    /// Held by every change (founding, a revocation), so two never interleave.
    ops: Mutex<()>,
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

/// What [`Cluster::remove`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// The peer was removed now, with this revocation.
    Now(Envelope),
    /// The peer had been removed before, at this time.
    Already(u64),
}

impl Cluster {
    /// Reads the cluster state of `data_dir`; `key` is the node's signing key, which must be
    /// the cluster key of a data directory in a cluster.
    pub fn open(data_dir: &Path, key: Arc<SigningKey>) -> Result<Self, ReplicationError> {
        let paths = Paths::new(data_dir);
        let state = load(&paths, &key)?;
        Ok(Self {
            paths,
            key,
            state: Mutex::new(state.map(Arc::new)),
            ops: Mutex::new(()),
            changed: watch::channel(0).0,
        })
    }

    /// The cluster as known now (`None`: not in a cluster).
    pub fn membership(&self) -> Option<Arc<Membership>> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Notified after every change of the membership (founding, a revocation).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The node's identity (generated on first use).
    pub fn identity(&self) -> Result<(Keypair, bool), ReplicationError> {
        identity::load_or_generate(&self.paths.identity)
    }

    /// The cluster signing key.
    pub fn signing_key(&self) -> &Arc<SigningKey> {
        &self.key
    }

    fn set(&self, m: Membership) -> Arc<Membership> {
        let m = Arc::new(m);
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&m));
        self.changed.send_modify(|v| *v += 1);
        m
    }

    /// Founds a cluster with this node's signing key and `factory_url` (no-op when already in
    /// one); returns the membership and whether it was founded now.
    pub fn found(
        &self,
        factory_url: &str,
        now: u64,
    ) -> Result<(Arc<Membership>, bool), ReplicationError> {
        let _ops = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = self.membership() {
            return Ok((m, false));
        }
        let (node, _) = self.identity()?;
        let me = node.public().to_peer_id();
        let cluster = ClusterKey::new(self.key.verifying_key());
        let record = ClusterRecord {
            cluster: cluster.id().to_string(),
            public_key: self.key.public_key_pem()?,
            factory_url: factory_url.to_string(),
            founded: now,
            founder: me.to_string(),
        };
        let credential = issue_credential(&self.key, &me, now, None).map_err(|source| {
            ReplicationError::FileJson {
                path: self.paths.credential.clone(),
                source,
            }
        })?;
        write_json(&self.paths.credential, &credential)?;
        write_json(&self.paths.revocations, &Vec::<Envelope>::new())?;
        // The record last: its presence is what "in a cluster" means.
        write_json(&self.paths.record, &record)?;
        tracing::info!(
            cluster = %record.cluster,
            factory_url = %record.factory_url,
            peer_id = %me,
            "founded a cluster with this node's signing key"
        );
        let m = self.set(Membership {
            record,
            key: cluster,
            credential: Some(credential),
            expires: None,
            revocations: BTreeMap::new(),
        });
        Ok((m, true))
    }

    /// Writes an invitation for a new member valid for `days` days, and never beyond this
    /// node's own credential (founding the cluster with `factory_url` first if this node is in
    /// none; refused once this node was removed or expired); `bootstrap` are multiaddrs with
    /// `/p2p/` the new member dials first; `secure_boot` are the cluster's Secure Boot keys.
    pub fn invite(
        &self,
        factory_url: &str,
        days: u64,
        bootstrap: Vec<String>,
        secure_boot: Option<invitation::SecureBootPems>,
        now: u64,
    ) -> Result<Issued, ReplicationError> {
        let (m, founded) = self.found(factory_url, now)?;
        // A node removed or expired holds the key still, but speaks for the cluster no more:
        // it must pass the check its members would apply to it.
        let (node, _) = self.identity()?;
        let me = node.public().to_peer_id();
        check_member(&m.key, &m.revoked(), &me, m.credential.as_ref(), now)
            .map_err(|r| ReplicationError::CannotInvite { why: r.to_string() })?;
        let mut issued = invitation::create(&self.key, &m, days, bootstrap, secure_boot, now)?;
        issued.founded = founded;
        tracing::info!(
            peer_id = %issued.peer_id,
            expires = %crate::clock::rfc3339_utc(issued.expires),
            "invitation issued for a new member"
        );
        Ok(issued)
    }

    /// Removes `peer` from the cluster: a signed revocation, stored and (through the swarm)
    /// sent to every member. Refuses to remove this node itself.
    pub fn remove(&self, peer: &PeerId, now: u64) -> Result<Removed, ReplicationError> {
        let m = self.membership().ok_or(ReplicationError::NotInCluster)?;
        let (node, _) = self.identity()?;
        if node.public().to_peer_id() == *peer {
            return Err(ReplicationError::RemoveSelf { peer: *peer });
        }
        if let Some((at, _)) = m.revocations.get(peer) {
            return Ok(Removed::Already(*at));
        }
        let env = issue_revocation(&self.key, peer, now).map_err(|source| {
            ReplicationError::FileJson {
                path: self.paths.revocations.clone(),
                source,
            }
        })?;
        self.add_revocation(&env)?;
        tracing::warn!(peer_id = %peer, "member removed from the cluster");
        Ok(Removed::Now(env))
    }

    /// Stores a revocation (from this node, a peer's gossip or hello) once it verifies; returns
    /// the peer it removes when it is new.
    pub fn add_revocation(&self, env: &Envelope) -> Result<Option<PeerId>, ReplicationError> {
        let _ops = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(m) = self.membership() else {
            return Ok(None);
        };
        let (r, peer) = m.key.open_revocation(env)?;
        if m.revocations.contains_key(&peer) {
            return Ok(None);
        }
        if m.revocations.len() >= MAX_REVOCATIONS {
            return Err(ReplicationError::TooMany {
                what: "revocations",
                max: MAX_REVOCATIONS,
            });
        }
        let mut next = (*m).clone();
        next.revocations.insert(peer, (r.revoked, env.clone()));
        let list: Vec<&Envelope> = next.revocations.values().map(|(_, e)| e).collect();
        write_json(&self.paths.revocations, &list)?;
        self.set(next);
        Ok(Some(peer))
    }

    /// The members' last known addresses.
    pub fn known_peers(&self) -> Vec<KnownPeer> {
        match read_json::<Vec<KnownPeer>>(&self.paths.peers, MAX_FILE) {
            Ok(Some(mut v)) => {
                v.truncate(MAX_KNOWN_PEERS);
                v
            }
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::warn!(error = %crate::causes::Causes(&e), "known peers not read; starting from the bootstrap peers");
                Vec::new()
            }
        }
    }

    /// Remembers the members' addresses for the next start.
    pub fn save_known_peers(&self, peers: &[KnownPeer]) -> Result<(), ReplicationError> {
        let peers = &peers[..peers.len().min(MAX_KNOWN_PEERS)];
        write_json(&self.paths.peers, &peers)
    }
}

/// Reads the cluster files; `None` when the directory is in no cluster.
fn load(paths: &Paths, key: &SigningKey) -> Result<Option<Membership>, ReplicationError> {
    let Some(record) = read_json::<ClusterRecord>(&paths.record, MAX_FILE)? else {
        return Ok(None);
    };
    let cluster = ClusterKey::new(key.verifying_key());
    if record.cluster != cluster.id() {
        return Err(ReplicationError::KeyMismatch {
            record: paths.record.clone(),
            cluster: record.cluster,
            key: cluster.id().to_string(),
        });
    }
    let credential: Option<Envelope> = read_json(&paths.credential, MAX_FILE)?;
    let mut expires = None;
    if let Some(env) = &credential {
        let (c, _) = cluster.open_credential(env)?;
        expires = c.expires;
    }
    let list: Vec<Envelope> = read_json(&paths.revocations, MAX_FILE)?.unwrap_or_default();
    let mut revocations = BTreeMap::new();
    for env in list.into_iter().take(MAX_REVOCATIONS) {
        match cluster.open_revocation(&env) {
            Ok((r, peer)) => {
                revocations.insert(peer, (r.revoked, env));
            }
            Err(e) => tracing::warn!(
                file = %paths.revocations.display(),
                error = %crate::causes::Causes(&e),
                "a stored revocation does not verify; ignored"
            ),
        }
    }
    Ok(Some(Membership {
        record,
        key: cluster,
        credential,
        expires,
        revocations,
    }))
}

/// Installs an invitation's state in `data_dir` (used by `cluster join`).
pub(crate) fn install(
    data_dir: &Path,
    inv: &Invitation,
    node_key: &Keypair,
    record: &ClusterRecord,
    peers: &[KnownPeer],
) -> Result<(), ReplicationError> {
    let paths = Paths::new(data_dir);
    identity::store(&paths.identity, node_key)?;
    write_json(&paths.credential, &inv.credential)?;
    write_json(&paths.revocations, &inv.revocations)?;
    write_json(&paths.peers, &peers)?;
    write_json(&paths.record, record)
}

/// Whether `data_dir` is in a cluster already, and which.
pub(crate) fn existing_record(data_dir: &Path) -> Result<Option<ClusterRecord>, ReplicationError> {
    read_json(&Paths::new(data_dir).record, MAX_FILE)
}
