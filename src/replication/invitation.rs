//! Invitations: everything a new node needs to join a cluster, in one file signed with the
//! cluster key — the cluster key itself (every member signs with it), the site's factory URL,
//! a fresh node identity and a credential for it, the credential's expiry, the addresses of
//! members to dial first, and the revocations known when it was written.
//!
//! The file holds two private keys: it must travel and be kept like one (it is written with
//! mode 0600). The signature binds its parts together; it does not prove who wrote it, since
//! the key that checks it is inside. `join --expect-cluster ID` pins the cluster a node may
//! join (the ID `/status` of any member shows).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use super::ReplicationError;
use super::cluster::{self, ClusterRecord, KnownPeer, MAX_ADDRS_PER_PEER, Membership};
use super::membership::{ClusterKey, Envelope, issue_credential};
use crate::trust::SigningKey;

/// `kind` of an invitation.
pub const INVITATION_KIND: &str = "image-factory/invitation/v1";
/// Largest invitation file read.
pub const MAX_INVITATION_BYTES: u64 = 1024 * 1024;
/// Validity of an invitation and its credential when `--days` is not given.
pub const DEFAULT_DAYS: u64 = 365;
/// Longest validity `--days` accepts (ten years).
pub const MAX_DAYS: u64 = 3650;
/// Most bootstrap addresses an invitation carries.
pub const MAX_BOOTSTRAP: usize = 32;

/// The invitation's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Invitation {
    /// [`INVITATION_KIND`].
    pub kind: String,
    /// Cluster ID.
    pub cluster: String,
    /// The cluster signing key, PKCS#8 PEM (secret).
    pub cluster_key: String,
    /// The site's factory URL.
    #[serde(rename = "factoryURL")]
    pub factory_url: String,
    /// When the cluster was founded, Unix seconds.
    pub founded: u64,
    /// The founder's peer ID.
    pub founder: String,
    /// The new member's peer ID.
    pub peer_id: String,
    /// The new member's identity, base64 of libp2p's protobuf key encoding (secret).
    pub node_key: String,
    /// The new member's credential.
    pub credential: Envelope,
    /// When the invitation was written, Unix seconds.
    pub issued: u64,
    /// When the invitation and the credential expire, Unix seconds.
    pub expires: u64,
    /// Members to dial first (multiaddrs ending in `/p2p/<peer id>`).
    pub bootstrap: Vec<String>,
    /// Revocations known when it was written.
    pub revocations: Vec<Envelope>,
}

/// A written invitation.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The file's bytes (JSON of the signed envelope).
    pub bytes: Vec<u8>,
    /// The new member's peer ID (what `cluster remove` takes to revoke the invitation).
    pub peer_id: PeerId,
    /// Expiry, Unix seconds.
    pub expires: u64,
    /// Cluster ID.
    pub cluster: String,
    /// Bootstrap addresses it carries.
    pub bootstrap: Vec<String>,
    /// Whether writing it founded the cluster.
    pub founded: bool,
}

/// Writes an invitation into the cluster `m` (signed with `key`).
pub(crate) fn create(
    key: &SigningKey,
    m: &Membership,
    days: u64,
    bootstrap: Vec<String>,
    now: u64,
) -> Result<Issued, ReplicationError> {
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ReplicationError::InvalidDays { days });
    }
    let mut bootstrap = bootstrap;
    bootstrap.sort();
    bootstrap.dedup();
    bootstrap.truncate(MAX_BOOTSTRAP);
    for a in &bootstrap {
        parse_bootstrap(a)?;
    }
    let node = Keypair::generate_ed25519();
    let peer = node.public().to_peer_id();
    let expires = now + days * 86_400;
    let json = |source| ReplicationError::Encode {
        what: "invitation",
        source,
    };
    let credential = issue_credential(key, &peer, now, Some(expires)).map_err(json)?;
    let node_key = node
        .to_protobuf_encoding()
        .map_err(|source| ReplicationError::KeyEncoding { source })?;
    let inv = Invitation {
        kind: INVITATION_KIND.into(),
        cluster: m.record.cluster.clone(),
        cluster_key: key.to_pkcs8_pem()?,
        factory_url: m.record.factory_url.clone(),
        founded: m.record.founded,
        founder: m.record.founder.clone(),
        peer_id: peer.to_string(),
        node_key: B64.encode(node_key),
        credential,
        issued: now,
        expires,
        bootstrap: bootstrap.clone(),
        revocations: m.revocations.values().map(|(_, e)| e.clone()).collect(),
    };
    let env = Envelope::seal(&inv, key).map_err(json)?;
    let mut bytes = serde_json::to_vec_pretty(&env).map_err(json)?;
    bytes.push(b'\n');
    Ok(Issued {
        bytes,
        peer_id: peer,
        expires,
        cluster: inv.cluster,
        bootstrap,
        founded: false,
    })
}

/// A multiaddr ending in `/p2p/<peer id>`: the peer and the address without it.
pub fn parse_bootstrap(text: &str) -> Result<(PeerId, Multiaddr), ReplicationError> {
    let bad = |why: &str| ReplicationError::BadAddress {
        addr: text.to_string(),
        why: why.to_string(),
    };
    let mut addr: Multiaddr = text.parse().map_err(|_| bad("not a multiaddr"))?;
    match addr.pop() {
        Some(Protocol::P2p(peer)) => Ok((peer, addr)),
        _ => Err(bad("does not end in /p2p/<peer id>")),
    }
}

/// An invitation whose signature, parts and expiry check out.
pub struct Opened {
    /// The payload.
    pub invitation: Invitation,
    /// The cluster key it carries.
    pub cluster_key: SigningKey,
    /// The new member's identity.
    pub node_key: Keypair,
}

/// Reads and checks an invitation at `now`: signed by the key it carries, consistent (the
/// identity is the credential's peer, the credential is the cluster's), not expired.
pub fn open(bytes: &[u8], now: u64) -> Result<Opened, ReplicationError> {
    let invalid = |why: String| ReplicationError::InvalidInvitation { why };
    let env: Envelope = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("not an invitation file: {e}")))?;
    let payload = env.unverified_bytes("invitation")?;
    let inv: Invitation = serde_json::from_slice(&payload)
        .map_err(|e| invalid(format!("malformed invitation: {e}")))?;
    if inv.kind != INVITATION_KIND {
        return Err(invalid(format!(
            "the file is a {:?}, not an invitation",
            inv.kind
        )));
    }
    let cluster_key = SigningKey::from_pem(&inv.cluster_key, Path::new("<invitation>"))?;
    let cluster = ClusterKey::new(cluster_key.verifying_key());
    env.verified_bytes("invitation", cluster.verifying_key())?;
    if inv.cluster != cluster.id() {
        return Err(invalid(format!(
            "it names cluster {} but carries the key of cluster {}",
            inv.cluster,
            cluster.id()
        )));
    }
    if inv.expires <= now {
        return Err(ReplicationError::InvitationExpired { at: inv.expires });
    }
    let raw = B64
        .decode(inv.node_key.as_bytes())
        .map_err(|e| invalid(format!("node key: {e}")))?;
    let node_key =
        Keypair::from_protobuf_encoding(&raw).map_err(|e| invalid(format!("node key: {e}")))?;
    let peer = node_key.public().to_peer_id();
    let (cred, named) = cluster.open_credential(&inv.credential)?;
    if named != peer || inv.peer_id != peer.to_string() {
        return Err(invalid(format!(
            "the credential is for {named}, the identity is {peer}"
        )));
    }
    if cred.expires.is_some_and(|at| at <= now) {
        return Err(ReplicationError::InvitationExpired {
            at: cred.expires.unwrap_or(inv.expires),
        });
    }
    for a in &inv.bootstrap {
        parse_bootstrap(a)?;
    }
    for r in &inv.revocations {
        cluster.open_revocation(r)?;
    }
    Ok(Opened {
        invitation: inv,
        cluster_key,
        node_key,
    })
}

/// What `cluster join` installed.
#[derive(Debug, Clone)]
pub struct Joined {
    /// Cluster ID.
    pub cluster: String,
    /// This node's peer ID from now on.
    pub peer_id: PeerId,
    /// The site's factory URL.
    pub factory_url: String,
    /// When the credential expires, Unix seconds.
    pub expires: u64,
    /// Bootstrap addresses installed.
    pub bootstrap: usize,
    /// Where a different signing key the directory held was moved.
    pub replaced_key: Option<PathBuf>,
}

/// Installs the invitation `bytes` in `data_dir` (whose signing key lives at `key_path`);
/// `expect_cluster` (a cluster ID or a prefix of at least 16 characters) refuses any other.
/// Refuses a directory already in a cluster. A different signing key is moved aside.
pub fn join(
    data_dir: &Path,
    key_path: &Path,
    bytes: &[u8],
    expect_cluster: Option<&str>,
    now: u64,
) -> Result<Joined, ReplicationError> {
    let opened = open(bytes, now)?;
    let inv = &opened.invitation;
    if let Some(want) = expect_cluster {
        let want = want.trim().to_ascii_lowercase();
        if want.len() < 16 || !inv.cluster.starts_with(&want) {
            return Err(ReplicationError::ClusterMismatch {
                expected: want,
                found: inv.cluster.clone(),
            });
        }
    }
    if let Some(r) = cluster::existing_record(data_dir)? {
        return Err(ReplicationError::AlreadyMember {
            dir: data_dir.to_path_buf(),
            cluster: r.cluster,
        });
    }
    let replaced_key = install_key(key_path, &opened.cluster_key, now)?;
    let record = ClusterRecord {
        cluster: inv.cluster.clone(),
        public_key: opened.cluster_key.public_key_pem()?,
        factory_url: inv.factory_url.clone(),
        founded: inv.founded,
        founder: inv.founder.clone(),
    };
    let mut peers: BTreeMap<PeerId, Vec<String>> = BTreeMap::new();
    for a in &inv.bootstrap {
        let (peer, addr) = parse_bootstrap(a)?;
        let addrs = peers.entry(peer).or_default();
        if addrs.len() < MAX_ADDRS_PER_PEER {
            addrs.push(addr.to_string());
        }
    }
    let peers: Vec<KnownPeer> = peers
        .into_iter()
        .map(|(p, addrs)| KnownPeer {
            peer_id: p.to_string(),
            addrs,
        })
        .collect();
    cluster::install(data_dir, inv, &opened.node_key, &record, &peers)?;
    Ok(Joined {
        cluster: inv.cluster.clone(),
        peer_id: opened.node_key.public().to_peer_id(),
        factory_url: inv.factory_url.clone(),
        expires: inv.expires,
        bootstrap: inv.bootstrap.len(),
        replaced_key,
    })
}

/// Writes the cluster key at `path`; a different key already there is renamed
/// `<name>.pre-join-<now>` (returned).
fn install_key(
    path: &Path,
    key: &SigningKey,
    now: u64,
) -> Result<Option<PathBuf>, ReplicationError> {
    let io = |source| ReplicationError::File {
        path: path.to_path_buf(),
        source,
    };
    let mut moved = None;
    match std::fs::read_to_string(path) {
        Ok(pem) => {
            let same = SigningKey::from_pem(&pem, path)
                .ok()
                .and_then(|k| k.public_key_pem().ok())
                .is_some_and(|p| key.public_key_pem().ok().as_deref() == Some(p.as_str()));
            if same {
                return Ok(None);
            }
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "signing-key.pem".into());
            let aside = path.with_file_name(format!("{name}.pre-join-{now}"));
            std::fs::rename(path, &aside).map_err(io)?;
            moved = Some(aside);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    crate::trust::write_private(path, key.to_pkcs8_pem()?.as_bytes()).map_err(io)?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::replication::cluster::Cluster;

    const NOW: u64 = 1_700_000_000;

    fn founder() -> (tempfile::TempDir, Cluster) {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(SigningKey::from_seed(&[7; 32]));
        let c = Cluster::open(dir.path(), key).unwrap();
        (dir, c)
    }

    #[test]
    fn invite_founds_then_join_installs_a_member() {
        let (_a, cluster) = founder();
        let issued = cluster
            .invite("http://factory.site/", 30, vec![], NOW)
            .unwrap();
        assert!(issued.founded);
        assert_eq!(issued.expires, NOW + 30 * 86_400);
        let m = cluster.membership().unwrap();
        assert_eq!(m.record.factory_url, "http://factory.site/");
        assert_eq!(m.expires, None, "the founder's credential does not expire");
        // A second invitation does not found again.
        let again = cluster.invite("http://other/", 1, vec![], NOW).unwrap();
        assert!(!again.founded);
        assert_ne!(again.peer_id, issued.peer_id);

        let b = tempfile::tempdir().unwrap();
        let key_path = b.path().join("keys/signing-key.pem");
        // B ran standalone before: it has a key of its own, which is moved aside.
        SigningKey::load_or_generate(&key_path).unwrap();
        let joined = join(
            b.path(),
            &key_path,
            &issued.bytes,
            Some(&m.record.cluster[..16]),
            NOW + 5,
        )
        .unwrap();
        assert_eq!(joined.peer_id, issued.peer_id);
        assert_eq!(joined.factory_url, "http://factory.site/");
        assert!(joined.replaced_key.is_some());
        let bkey = Arc::new(SigningKey::load_or_generate(&key_path).unwrap().0);
        let bc = Cluster::open(b.path(), bkey).unwrap();
        let bm = bc.membership().unwrap();
        assert_eq!(bm.record.cluster, m.record.cluster);
        assert_eq!(bm.expires, Some(issued.expires));
        assert_eq!(
            bc.identity().unwrap().0.public().to_peer_id(),
            issued.peer_id
        );
        // Joining twice is refused.
        let e = join(b.path(), &key_path, &issued.bytes, None, NOW + 5).unwrap_err();
        assert!(matches!(e, ReplicationError::AlreadyMember { .. }), "{e}");
    }

    #[test]
    fn an_expired_invitation_is_refused() {
        let (_a, cluster) = founder();
        let issued = cluster.invite("http://f/", 1, vec![], NOW).unwrap();
        let b = tempfile::tempdir().unwrap();
        let key_path = b.path().join("keys/signing-key.pem");
        let e = join(b.path(), &key_path, &issued.bytes, None, NOW + 86_400).unwrap_err();
        assert!(
            matches!(e, ReplicationError::InvitationExpired { .. }),
            "{e}"
        );
        assert!(!key_path.exists(), "nothing is installed");
        // One second before, it is fine.
        join(b.path(), &key_path, &issued.bytes, None, NOW + 86_399).unwrap();
    }

    #[test]
    fn a_tampered_invitation_or_wrong_cluster_is_refused() {
        let (_a, cluster) = founder();
        let issued = cluster.invite("http://f/", 1, vec![], NOW).unwrap();
        let mut env: Envelope = serde_json::from_slice(&issued.bytes).unwrap();
        let mut inv: Invitation =
            serde_json::from_slice(&env.unverified_bytes("i").unwrap()).unwrap();
        inv.expires += 10 * 86_400;
        env.payload = B64.encode(serde_json::to_vec(&inv).unwrap());
        let tampered = serde_json::to_vec(&env).unwrap();
        let b = tempfile::tempdir().unwrap();
        let key_path = b.path().join("keys/signing-key.pem");
        let e = join(b.path(), &key_path, &tampered, None, NOW).unwrap_err();
        assert!(
            e.to_string().contains("not signed by the cluster key"),
            "{e}"
        );
        let e = join(
            b.path(),
            &key_path,
            &issued.bytes,
            Some("0123456789abcdef"),
            NOW,
        )
        .unwrap_err();
        assert!(matches!(e, ReplicationError::ClusterMismatch { .. }), "{e}");
        let e = join(b.path(), &key_path, b"{}", None, NOW).unwrap_err();
        assert!(
            matches!(e, ReplicationError::InvalidInvitation { .. }),
            "{e}"
        );
        assert!(!key_path.exists(), "nothing is installed");
    }

    #[test]
    fn days_and_bootstrap_addresses_are_checked() {
        let (_a, cluster) = founder();
        let e = cluster.invite("http://f/", 0, vec![], NOW).unwrap_err();
        assert!(
            matches!(e, ReplicationError::InvalidDays { days: 0 }),
            "{e}"
        );
        let e = cluster
            .invite("http://f/", 1, vec!["/ip4/127.0.0.1/tcp/1".into()], NOW)
            .unwrap_err();
        assert!(e.to_string().contains("/p2p/"), "{e}");
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let addr = format!("/ip4/127.0.0.1/tcp/1/p2p/{peer}");
        let issued = cluster
            .invite("http://f/", 1, vec![addr.clone()], NOW)
            .unwrap();
        let opened = open(&issued.bytes, NOW).unwrap();
        assert_eq!(opened.invitation.bootstrap, vec![addr]);
    }

    #[test]
    fn a_removed_member_travels_in_later_invitations() {
        let (_a, cluster) = founder();
        let first = cluster.invite("http://f/", 1, vec![], NOW).unwrap();
        cluster.remove(&first.peer_id, NOW + 1).unwrap();
        let second = cluster.invite("http://f/", 1, vec![], NOW + 2).unwrap();
        let opened = open(&second.bytes, NOW + 2).unwrap();
        assert_eq!(opened.invitation.revocations.len(), 1);
        // Removing it again reports the first removal.
        assert_eq!(
            cluster.remove(&first.peer_id, NOW + 3).unwrap(),
            crate::replication::cluster::Removed::Already(NOW + 1)
        );
    }
}
