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
use crate::trust::secureboot::SecureBootPaths;

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
    /// The cluster's Secure Boot keys (secret), when the inviting member signs with them:
    /// they change a model's bytes, so every member must hold the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<SecureBootPems>,
}

/// Secure Boot key files as PEM text (upstream's three files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecureBootPems {
    /// `uki-signing-key.pem` (secret).
    pub signing_key: String,
    /// `uki-signing-cert.pem`.
    pub signing_cert: String,
    /// `pcr-signing-key.pem` (secret).
    pub pcr_key: String,
}

/// Largest Secure Boot key file an invitation carries.
const MAX_SECURE_BOOT_FILE: u64 = 64 * 1024;

impl SecureBootPems {
    /// Reads the three files of `paths`.
    pub fn read(paths: &SecureBootPaths) -> Result<Self, ReplicationError> {
        let read = |path: &Path| -> Result<String, ReplicationError> {
            let file = |source| ReplicationError::File {
                path: path.to_path_buf(),
                source,
            };
            let bytes = super::read_capped(path, MAX_SECURE_BOOT_FILE).map_err(file)?;
            if bytes.len() as u64 > MAX_SECURE_BOOT_FILE {
                return Err(ReplicationError::InvalidInvitation {
                    why: format!("{} is larger than a PEM key file", path.display()),
                });
            }
            String::from_utf8(bytes).map_err(|_| ReplicationError::InvalidInvitation {
                why: format!("{} is not PEM text", path.display()),
            })
        };
        Ok(Self {
            signing_key: read(&paths.signing_key)?,
            signing_cert: read(&paths.signing_cert)?,
            pcr_key: read(&paths.pcr_key)?,
        })
    }

    /// Writes the files into `dir` under upstream's names (keys 0600). A file there with
    /// other contents is moved aside first (`<name>.before-join-<now>`); returns those moved.
    fn install(&self, dir: &Path, now: u64) -> Result<Vec<PathBuf>, ReplicationError> {
        let file = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ReplicationError::File { path, source }
        };
        std::fs::create_dir_all(dir).map_err(file(dir))?;
        let paths = SecureBootPaths::in_dir(dir);
        let mut moved = Vec::new();
        for (path, text, secret) in [
            (&paths.signing_key, &self.signing_key, true),
            (&paths.signing_cert, &self.signing_cert, false),
            (&paths.pcr_key, &self.pcr_key, true),
        ] {
            match std::fs::read(path) {
                Ok(old) if old == text.as_bytes() => continue,
                Ok(_) => {
                    let mut aside = path.clone().into_os_string();
                    aside.push(format!(".before-join-{now}"));
                    let aside = PathBuf::from(aside);
                    std::fs::rename(path, &aside).map_err(file(path))?;
                    moved.push(aside);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(file(path)(e)),
            }
            let written = if secret {
                crate::trust::write_private(path, text.as_bytes())
            } else {
                std::fs::write(path, text.as_bytes())
            };
            written.map_err(file(path))?;
        }
        Ok(moved)
    }
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
    secure_boot: Option<SecureBootPems>,
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
    // Never beyond the inviter's own credential: a member cannot outlast itself by proxy.
    let expires = (now + days * 86_400).min(m.expires.unwrap_or(u64::MAX));
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
        secure_boot,
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
    // An invitation carries the cluster's revocations: its own budget, not a document's.
    env.verified_bytes_within(
        "invitation",
        cluster.verifying_key(),
        MAX_INVITATION_BYTES as usize,
    )?;
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
    /// Where the cluster's Secure Boot keys were installed, when the invitation carried them.
    pub secure_boot_dir: Option<PathBuf>,
    /// Secure Boot key files the directory held with other contents, moved aside.
    pub replaced_secure_boot: Vec<PathBuf>,
}

/// Installs the invitation `bytes` in `data_dir` (whose signing key lives at `key_path`);
/// `expect_cluster` (a cluster ID or a prefix of at least 16 characters) refuses any other.
/// Refuses a directory already in a cluster. A different signing key is moved aside.
pub fn join(
    data_dir: &Path,
    key_path: &Path,
    secure_boot_dir: &Path,
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
    let replaced_secure_boot = match &inv.secure_boot {
        Some(pems) => pems.install(secure_boot_dir, now)?,
        None => Vec::new(),
    };
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
        secure_boot_dir: inv
            .secure_boot
            .is_some()
            .then(|| secure_boot_dir.to_path_buf()),
        replaced_secure_boot,
    })
}

/// Writes the cluster key at `path`; a different key already there is kept as
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
            // A second name first: the key is replaced in one rename below, so a failure or a
            // crash in between never leaves the node without one (the next start would
            // generate a new key).
            std::fs::hard_link(path, &aside).map_err(io)?;
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
    fn the_cluster_secure_boot_keys_travel_with_the_invitation() {
        let (_a, cluster) = founder();
        let pems = SecureBootPems {
            signing_key: "-----BEGIN PRIVATE KEY-----\nA\n-----END PRIVATE KEY-----\n".into(),
            signing_cert: "-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n".into(),
            pcr_key: "-----BEGIN PRIVATE KEY-----\nC\n-----END PRIVATE KEY-----\n".into(),
        };
        let issued = cluster
            .invite("http://f/", 1, vec![], Some(pems.clone()), NOW)
            .unwrap();
        let b = tempfile::tempdir().unwrap();
        let sb = b.path().join("keys/secureboot");
        // B had Secure Boot keys of its own: they are moved aside, not lost.
        std::fs::create_dir_all(&sb).unwrap();
        std::fs::write(sb.join("uki-signing-cert.pem"), "old").unwrap();
        let joined = join(
            b.path(),
            &b.path().join("keys/signing-key.pem"),
            &sb,
            &issued.bytes,
            None,
            NOW + 5,
        )
        .unwrap();
        assert_eq!(joined.secure_boot_dir.as_deref(), Some(sb.as_path()));
        let read = SecureBootPems::read(&SecureBootPaths::in_dir(&sb)).unwrap();
        assert_eq!(read, pems);
        assert_eq!(joined.replaced_secure_boot.len(), 1);
        assert_eq!(
            std::fs::read(&joined.replaced_secure_boot[0]).unwrap(),
            b"old"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(sb.join("uki-signing-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the private key is not readable by others");

        // Without keys, nothing is written.
        let (_c, other) = founder();
        let plain = other.invite("http://f/", 1, vec![], None, NOW).unwrap();
        let d = tempfile::tempdir().unwrap();
        let joined = join(
            d.path(),
            &d.path().join("keys/signing-key.pem"),
            &d.path().join("keys/secureboot"),
            &plain.bytes,
            None,
            NOW + 5,
        )
        .unwrap();
        assert_eq!(joined.secure_boot_dir, None);
        assert!(!d.path().join("keys/secureboot").exists());
    }

    #[test]
    fn invite_founds_then_join_installs_a_member() {
        let (_a, cluster) = founder();
        let issued = cluster
            .invite("http://factory.site/", 30, vec![], None, NOW)
            .unwrap();
        assert!(issued.founded);
        assert_eq!(issued.expires, NOW + 30 * 86_400);
        let m = cluster.membership().unwrap();
        assert_eq!(m.record.factory_url, "http://factory.site/");
        assert_eq!(m.expires, None, "the founder's credential does not expire");
        // A second invitation does not found again.
        let again = cluster
            .invite("http://other/", 1, vec![], None, NOW)
            .unwrap();
        assert!(!again.founded);
        assert_ne!(again.peer_id, issued.peer_id);

        let b = tempfile::tempdir().unwrap();
        let key_path = b.path().join("keys/signing-key.pem");
        // B ran standalone before: it has a key of its own, which is moved aside.
        SigningKey::load_or_generate(&key_path).unwrap();
        let joined = join(
            b.path(),
            &key_path,
            &b.path().join("keys/secureboot"),
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
        let e = join(
            b.path(),
            &key_path,
            &b.path().join("keys/secureboot"),
            &issued.bytes,
            None,
            NOW + 5,
        )
        .unwrap_err();
        assert!(matches!(e, ReplicationError::AlreadyMember { .. }), "{e}");
    }

    #[test]
    fn a_failed_key_install_leaves_the_old_key_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing-key.pem");
        let (old, _) = SigningKey::load_or_generate(&path).unwrap();
        let old_pem = std::fs::read(&path).unwrap();
        // The new key cannot be written: its temporary name is taken by a directory.
        let blocked = dir
            .path()
            .join(format!(".signing-key.pem.tmp-{}", std::process::id()));
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"").unwrap();
        let new = SigningKey::from_seed(&[9; 32]);
        assert!(install_key(&path, &new, NOW).is_err());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            old_pem,
            "the node still has its key"
        );
        // Once it can be written, the new key replaces the old one, which is kept aside.
        std::fs::remove_dir_all(&blocked).unwrap();
        let aside = install_key(&path, &new, NOW + 1).unwrap().unwrap();
        assert_eq!(std::fs::read(&aside).unwrap(), old_pem);
        let installed = SigningKey::load_or_generate(&path).unwrap().0;
        assert_eq!(
            installed.public_key_pem().unwrap(),
            new.public_key_pem().unwrap()
        );
        assert_ne!(old.public_key_pem().unwrap(), new.public_key_pem().unwrap());
    }

    #[test]
    fn an_expired_invitation_is_refused() {
        let (_a, cluster) = founder();
        let issued = cluster.invite("http://f/", 1, vec![], None, NOW).unwrap();
        let b = tempfile::tempdir().unwrap();
        let key_path = b.path().join("keys/signing-key.pem");
        let e = join(
            b.path(),
            &key_path,
            &b.path().join("keys/secureboot"),
            &issued.bytes,
            None,
            NOW + 86_400,
        )
        .unwrap_err();
        assert!(
            matches!(e, ReplicationError::InvitationExpired { .. }),
            "{e}"
        );
        assert!(!key_path.exists(), "nothing is installed");
        // One second before, it is fine.
        join(
            b.path(),
            &key_path,
            &b.path().join("keys/secureboot"),
            &issued.bytes,
            None,
            NOW + 86_399,
        )
        .unwrap();
    }

    #[test]
    fn a_tampered_invitation_or_wrong_cluster_is_refused() {
        let (_a, cluster) = founder();
        let issued = cluster.invite("http://f/", 1, vec![], None, NOW).unwrap();
        let mut env: Envelope = serde_json::from_slice(&issued.bytes).unwrap();
        let mut inv: Invitation =
            serde_json::from_slice(&env.unverified_bytes("i").unwrap()).unwrap();
        inv.expires += 10 * 86_400;
        env.payload = B64.encode(serde_json::to_vec(&inv).unwrap());
        let tampered = serde_json::to_vec(&env).unwrap();
        let b = tempfile::tempdir().unwrap();
        let key_path = b.path().join("keys/signing-key.pem");
        let e = join(
            b.path(),
            &key_path,
            &b.path().join("keys/secureboot"),
            &tampered,
            None,
            NOW,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("not signed by the cluster key"),
            "{e}"
        );
        let e = join(
            b.path(),
            &key_path,
            &b.path().join("keys/secureboot"),
            &issued.bytes,
            Some("0123456789abcdef"),
            NOW,
        )
        .unwrap_err();
        assert!(matches!(e, ReplicationError::ClusterMismatch { .. }), "{e}");
        let e = join(
            b.path(),
            &key_path,
            &b.path().join("keys/secureboot"),
            b"{}",
            None,
            NOW,
        )
        .unwrap_err();
        assert!(
            matches!(e, ReplicationError::InvalidInvitation { .. }),
            "{e}"
        );
        assert!(!key_path.exists(), "nothing is installed");
    }

    #[test]
    fn days_and_bootstrap_addresses_are_checked() {
        let (_a, cluster) = founder();
        let e = cluster
            .invite("http://f/", 0, vec![], None, NOW)
            .unwrap_err();
        assert!(
            matches!(e, ReplicationError::InvalidDays { days: 0 }),
            "{e}"
        );
        let e = cluster
            .invite(
                "http://f/",
                1,
                vec!["/ip4/127.0.0.1/tcp/1".into()],
                None,
                NOW,
            )
            .unwrap_err();
        assert!(e.to_string().contains("/p2p/"), "{e}");
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let addr = format!("/ip4/127.0.0.1/tcp/1/p2p/{peer}");
        let issued = cluster
            .invite("http://f/", 1, vec![addr.clone()], None, NOW)
            .unwrap();
        let opened = open(&issued.bytes, NOW).unwrap();
        assert_eq!(opened.invitation.bootstrap, vec![addr]);
    }

    #[test]
    fn a_member_invites_no_further_than_its_own_credential_and_not_once_out() {
        let (_a, cluster) = founder();
        let issued = cluster.invite("http://f/", 2, vec![], None, NOW).unwrap();
        let b = tempfile::tempdir().unwrap();
        let key_path = b.path().join("keys/signing-key.pem");
        let sb = b.path().join("keys/secureboot");
        join(b.path(), &key_path, &sb, &issued.bytes, None, NOW + 5).unwrap();
        let bkey = Arc::new(SigningKey::load_or_generate(&key_path).unwrap().0);
        let bc = Cluster::open(b.path(), bkey).unwrap();
        // B's credential ends 2 days after NOW: so does any invitation it writes.
        let capped = bc.invite("http://f/", 30, vec![], None, NOW + 10).unwrap();
        assert_eq!(capped.expires, issued.expires);
        let opened = open(&capped.bytes, NOW + 10).unwrap();
        assert_eq!(opened.invitation.expires, issued.expires);
        // Expired: it writes none.
        let e = bc
            .invite("http://f/", 1, vec![], None, issued.expires)
            .unwrap_err();
        assert!(matches!(e, ReplicationError::CannotInvite { .. }), "{e}");
        // Removed (and told so): none either, though it still holds the key.
        let crate::replication::cluster::Removed::Now(env) =
            cluster.remove(&issued.peer_id, NOW + 20).unwrap()
        else {
            panic!("B was removed already");
        };
        bc.add_revocation(&env).unwrap();
        let e = bc
            .invite("http://f/", 1, vec![], None, NOW + 30)
            .unwrap_err();
        assert!(e.to_string().contains("removed from the cluster"), "{e}");
    }

    #[test]
    fn an_invitation_carrying_hundreds_of_removals_opens() {
        let (_a, cluster) = founder();
        cluster.invite("http://f/", 1, vec![], None, NOW).unwrap();
        for i in 0..200 {
            let peer = Keypair::generate_ed25519().public().to_peer_id();
            cluster.remove(&peer, NOW + i).unwrap();
        }
        let issued = cluster
            .invite("http://f/", 1, vec![], None, NOW + 300)
            .unwrap();
        assert!(
            issued.bytes.len() > crate::replication::membership::MAX_ENVELOPE_BYTES,
            "the test needs an invitation over a document's limit"
        );
        let opened = open(&issued.bytes, NOW + 300).unwrap();
        assert_eq!(opened.invitation.revocations.len(), 200);
    }

    #[test]
    fn a_removed_member_travels_in_later_invitations() {
        let (_a, cluster) = founder();
        let first = cluster.invite("http://f/", 1, vec![], None, NOW).unwrap();
        cluster.remove(&first.peer_id, NOW + 1).unwrap();
        let second = cluster
            .invite("http://f/", 1, vec![], None, NOW + 2)
            .unwrap();
        let opened = open(&second.bytes, NOW + 2).unwrap();
        assert_eq!(opened.invitation.revocations.len(), 1);
        // Removing it again reports the first removal.
        assert_eq!(
            cluster.remove(&first.peer_id, NOW + 3).unwrap(),
            crate::replication::cluster::Removed::Already(NOW + 1)
        );
    }
}
