//! Signed membership documents: a member's credential and a member's revocation, both signed
//! with the cluster key (the node signing key every member holds), and the check a node makes
//! of a peer's credential right after the transport handshake.
//!
//! A document is stored and sent as an envelope: the exact JSON bytes of the payload (base64)
//! and an ECDSA P-256 / SHA-256 signature over them, the form asset records use. Each payload
//! names its kind and its cluster, so a signature over one kind of document never passes for
//! another, nor for another cluster.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use libp2p::PeerId;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{DerSignature, VerifyingKey};
use p256::pkcs8::EncodePublicKey;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::trust::SigningKey;

/// `kind` of a member credential.
pub const CREDENTIAL_KIND: &str = "image-factory/member-credential/v1";
/// `kind` of a member revocation.
pub const REVOCATION_KIND: &str = "image-factory/member-revocation/v1";
/// Largest envelope accepted from a peer or a file (bytes of its JSON).
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;

/// Why a signed document was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// The envelope or its payload is not the JSON it should be.
    #[error("malformed {what}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// The decoder's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The envelope is larger than its limit ([`MAX_ENVELOPE_BYTES`] unless the caller set one).
    #[error("{what} of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// What was being read.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The signature does not verify under the cluster key.
    #[error("{what} is not signed by the cluster key")]
    BadSignature {
        /// What was being read.
        what: &'static str,
    },
    /// The payload is another kind of document.
    #[error("{what}: the document is a {found:?}, not a {expected:?}")]
    WrongKind {
        /// What was being read.
        what: &'static str,
        /// The expected kind.
        expected: &'static str,
        /// The kind found.
        found: String,
    },
    /// The payload names another cluster.
    #[error("{what} belongs to cluster {found}, not to this cluster {expected}")]
    OtherCluster {
        /// What was being read.
        what: &'static str,
        /// This cluster's ID.
        expected: String,
        /// The cluster named.
        found: String,
    },
    /// The payload's peer ID does not parse.
    #[error("{what} names an invalid peer ID {peer:?}")]
    BadPeerId {
        /// What was being read.
        what: &'static str,
        /// The text found.
        peer: String,
    },
}

/// A signed document as stored and sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Base64 of the payload's JSON bytes.
    pub payload: String,
    /// Base64 of the ASN.1 DER ECDSA P-256 / SHA-256 signature over those bytes.
    pub signature: String,
}

impl Envelope {
    /// Signs `payload`'s JSON with `key`.
    pub fn seal<T: Serialize>(payload: &T, key: &SigningKey) -> Result<Self, serde_json::Error> {
        let bytes = serde_json::to_vec(payload)?;
        let signature = key.sign_der(&bytes);
        Ok(Self {
            payload: B64.encode(&bytes),
            signature: B64.encode(signature),
        })
    }

    /// The payload's bytes once the signature verifies under `key`.
    pub fn verified_bytes(
        &self,
        what: &'static str,
        key: &VerifyingKey,
    ) -> Result<Vec<u8>, DocumentError> {
        self.verified_bytes_within(what, key, MAX_ENVELOPE_BYTES)
    }

    /// [`Envelope::verified_bytes`] with another size limit (the caller's budget).
    pub fn verified_bytes_within(
        &self,
        what: &'static str,
        key: &VerifyingKey,
        max: usize,
    ) -> Result<Vec<u8>, DocumentError> {
        if self.payload.len() + self.signature.len() > max {
            return Err(DocumentError::TooLarge {
                what,
                size: self.payload.len() + self.signature.len(),
                max,
            });
        }
        let bytes = self.unverified_bytes(what)?;
        let sig = B64
            .decode(self.signature.as_bytes())
            .map_err(|e| malformed(what, e))?;
        let sig = DerSignature::from_bytes(&sig).map_err(|e| malformed(what, e))?;
        key.verify(&bytes, &sig)
            .map_err(|_| DocumentError::BadSignature { what })?;
        Ok(bytes)
    }

    /// The payload's bytes, not verified (to find the key an invitation carries).
    pub fn unverified_bytes(&self, what: &'static str) -> Result<Vec<u8>, DocumentError> {
        B64.decode(self.payload.as_bytes())
            .map_err(|e| malformed(what, e))
    }

    /// [`Envelope::open`] with another size limit (the caller's budget).
    pub fn open_within<T: DeserializeOwned>(
        &self,
        what: &'static str,
        key: &VerifyingKey,
        max: usize,
    ) -> Result<T, DocumentError> {
        let bytes = self.verified_bytes_within(what, key, max)?;
        serde_json::from_slice(&bytes).map_err(|e| malformed(what, e))
    }

    /// Verifies the signature under `key` and decodes the payload.
    pub fn open<T: DeserializeOwned>(
        &self,
        what: &'static str,
        key: &VerifyingKey,
    ) -> Result<T, DocumentError> {
        let bytes = self.verified_bytes(what, key)?;
        serde_json::from_slice(&bytes).map_err(|e| malformed(what, e))
    }
}

fn malformed<E>(what: &'static str, e: E) -> DocumentError
where
    E: std::error::Error + Send + Sync + 'static,
{
    DocumentError::Malformed {
        what,
        source: Box::new(e),
    }
}

/// The cluster's ID: hex SHA-256 of the DER (SPKI) encoding of the cluster public key.
pub fn cluster_id(key: &VerifyingKey) -> String {
    match key.to_public_key_der() {
        Ok(der) => crate::sha256::hex_digest(der.as_bytes()),
        // Encoding a valid P-256 point cannot fail; fall back to the raw point.
        Err(_) => crate::sha256::hex_digest(key.to_sec1_point(false).as_bytes()),
    }
}

/// Statement that one peer ID is a member of a cluster, until `expires`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Credential {
    /// [`CREDENTIAL_KIND`].
    pub kind: String,
    /// Cluster ID.
    pub cluster: String,
    /// The member's libp2p peer ID.
    pub peer_id: String,
    /// When it was issued, Unix seconds.
    pub issued: u64,
    /// When it stops being valid, Unix seconds (`None`: the founder's, valid until removed).
    pub expires: Option<u64>,
}

/// Statement that a peer ID is no longer a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Revocation {
    /// [`REVOCATION_KIND`].
    pub kind: String,
    /// Cluster ID.
    pub cluster: String,
    /// The removed peer ID.
    pub peer_id: String,
    /// When it was removed, Unix seconds.
    pub revoked: u64,
}

/// The public side of a cluster: its key and ID, enough to check documents.
#[derive(Debug, Clone)]
pub struct ClusterKey {
    key: VerifyingKey,
    id: String,
}

impl ClusterKey {
    /// The cluster whose key is `key`.
    pub fn new(key: VerifyingKey) -> Self {
        let id = cluster_id(&key);
        Self { key, id }
    }

    /// The cluster ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    fn check_header(
        &self,
        what: &'static str,
        expected: &'static str,
        kind: &str,
        cluster: &str,
    ) -> Result<(), DocumentError> {
        if kind != expected {
            return Err(DocumentError::WrongKind {
                what,
                expected,
                found: kind.to_string(),
            });
        }
        if cluster != self.id {
            return Err(DocumentError::OtherCluster {
                what,
                expected: self.id.clone(),
                found: cluster.to_string(),
            });
        }
        Ok(())
    }

    /// Opens a credential: signed by this cluster, of the right kind, naming a valid peer ID.
    pub fn open_credential(&self, env: &Envelope) -> Result<(Credential, PeerId), DocumentError> {
        let what = "member credential";
        let c: Credential = env.open(what, &self.key)?;
        self.check_header(what, CREDENTIAL_KIND, &c.kind, &c.cluster)?;
        let peer = parse_peer(what, &c.peer_id)?;
        Ok((c, peer))
    }

    /// Opens a revocation: signed by this cluster, of the right kind, naming a valid peer ID.
    pub fn open_revocation(&self, env: &Envelope) -> Result<(Revocation, PeerId), DocumentError> {
        let what = "member revocation";
        let r: Revocation = env.open(what, &self.key)?;
        self.check_header(what, REVOCATION_KIND, &r.kind, &r.cluster)?;
        let peer = parse_peer(what, &r.peer_id)?;
        Ok((r, peer))
    }
}

fn parse_peer(what: &'static str, text: &str) -> Result<PeerId, DocumentError> {
    text.parse().map_err(|_| DocumentError::BadPeerId {
        what,
        peer: text.to_string(),
    })
}

/// Issues a credential for `peer` in the cluster of `key`.
pub fn issue_credential(
    key: &SigningKey,
    peer: &PeerId,
    issued: u64,
    expires: Option<u64>,
) -> Result<Envelope, serde_json::Error> {
    let cluster = cluster_id(&key.verifying_key());
    Envelope::seal(
        &Credential {
            kind: CREDENTIAL_KIND.into(),
            cluster,
            peer_id: peer.to_string(),
            issued,
            expires,
        },
        key,
    )
}

/// Issues a revocation of `peer` in the cluster of `key`.
pub fn issue_revocation(
    key: &SigningKey,
    peer: &PeerId,
    revoked: u64,
) -> Result<Envelope, serde_json::Error> {
    let cluster = cluster_id(&key.verifying_key());
    Envelope::seal(
        &Revocation {
            kind: REVOCATION_KIND.into(),
            cluster,
            peer_id: peer.to_string(),
            revoked,
        },
        key,
    )
}

/// Why a peer was refused after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It presented no credential (it never joined a cluster).
    NoCredential,
    /// Its credential is for another cluster.
    OtherCluster(String),
    /// Its credential does not verify, or is for another peer ID.
    Invalid(String),
    /// Its credential expired at this time (Unix seconds).
    Expired(u64),
    /// It was removed at this time (Unix seconds).
    Revoked(u64),
    /// It did not present a credential in time, or does not speak the membership protocol.
    Silent,
    /// This node is not a member of any cluster, so it accepts no one.
    NotInCluster,
}

impl Refusal {
    /// The metric label (`reason`) of this refusal.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::NoCredential => "not_member",
            Refusal::OtherCluster(_) => "other_cluster",
            Refusal::Invalid(_) => "invalid",
            Refusal::Expired(_) => "expired",
            Refusal::Revoked(_) => "revoked",
            Refusal::Silent => "silent",
            Refusal::NotInCluster => "not_in_cluster",
        }
    }

    /// Every label, so the counters exist at zero.
    pub const LABELS: [&'static str; 7] = [
        "not_member",
        "other_cluster",
        "invalid",
        "expired",
        "revoked",
        "silent",
        "not_in_cluster",
    ];
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoCredential => f.write_str("not a member: it presented no credential"),
            Refusal::OtherCluster(c) => {
                write!(f, "not a member: its credential is for cluster {c}")
            }
            Refusal::Invalid(why) => write!(f, "invalid credential: {why}"),
            Refusal::Expired(at) => write!(
                f,
                "membership expired at {}",
                crate::clock::rfc3339_utc(*at)
            ),
            Refusal::Revoked(at) => write!(
                f,
                "removed from the cluster at {}",
                crate::clock::rfc3339_utc(*at)
            ),
            Refusal::Silent => f.write_str("presented no credential in time"),
            Refusal::NotInCluster => {
                f.write_str("not checked: the refusing node is in no cluster (it never joined one)")
            }
        }
    }
}

/// Checks the credential `peer` presented: signed by `cluster`, for `peer`, not expired at
/// `now`, not revoked. Returns the credential's expiry.
pub fn check_member(
    cluster: &ClusterKey,
    revoked: &BTreeMap<PeerId, u64>,
    peer: &PeerId,
    credential: Option<&Envelope>,
    now: u64,
) -> Result<Option<u64>, Refusal> {
    if let Some(at) = revoked.get(peer) {
        return Err(Refusal::Revoked(*at));
    }
    let env = credential.ok_or(Refusal::NoCredential)?;
    let (c, named) = match cluster.open_credential(env) {
        Ok(v) => v,
        Err(DocumentError::OtherCluster { found, .. }) => {
            return Err(Refusal::OtherCluster(found));
        }
        // Signed by another key: say which cluster it claims, if the payload decodes.
        Err(DocumentError::BadSignature { .. }) => {
            let claimed = env
                .unverified_bytes("member credential")
                .ok()
                .and_then(|b| serde_json::from_slice::<Credential>(&b).ok())
                .map(|c| c.cluster);
            return Err(match claimed {
                Some(other) if other != cluster.id() => Refusal::OtherCluster(other),
                _ => Refusal::Invalid("not signed by the cluster key".into()),
            });
        }
        Err(e) => return Err(Refusal::Invalid(crate::causes::Causes(&e).to_string())),
    };
    if named != *peer {
        return Err(Refusal::Invalid(format!(
            "the credential is for peer {named}, presented by {peer}"
        )));
    }
    match c.expires {
        Some(at) if at <= now => Err(Refusal::Expired(at)),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    #[test]
    fn a_credential_verifies_only_for_its_cluster_peer_and_time() {
        let key = SigningKey::from_seed(&[1; 32]);
        let cluster = ClusterKey::new(key.verifying_key());
        let p = peer();
        let env = issue_credential(&key, &p, 100, Some(200)).unwrap();
        let none = BTreeMap::new();
        assert_eq!(
            check_member(&cluster, &none, &p, Some(&env), 150),
            Ok(Some(200))
        );
        // Expired at its expiry.
        assert_eq!(
            check_member(&cluster, &none, &p, Some(&env), 200),
            Err(Refusal::Expired(200))
        );
        // Presented by another peer.
        let other = peer();
        assert!(matches!(
            check_member(&cluster, &none, &other, Some(&env), 150),
            Err(Refusal::Invalid(_))
        ));
        // No credential at all.
        assert_eq!(
            check_member(&cluster, &none, &p, None, 150),
            Err(Refusal::NoCredential)
        );
        // Revoked wins over a valid credential.
        let revoked = BTreeMap::from([(p, 120)]);
        assert_eq!(
            check_member(&cluster, &revoked, &p, Some(&env), 150),
            Err(Refusal::Revoked(120))
        );
    }

    #[test]
    fn another_clusters_credential_is_refused_as_such() {
        let ours = SigningKey::from_seed(&[1; 32]);
        let theirs = SigningKey::from_seed(&[2; 32]);
        let cluster = ClusterKey::new(ours.verifying_key());
        let p = peer();
        let env = issue_credential(&theirs, &p, 100, None).unwrap();
        let got = check_member(&cluster, &BTreeMap::new(), &p, Some(&env), 150);
        assert_eq!(
            got,
            Err(Refusal::OtherCluster(cluster_id(&theirs.verifying_key())))
        );
    }

    #[test]
    fn a_tampered_payload_or_swapped_kind_is_refused() {
        let key = SigningKey::from_seed(&[1; 32]);
        let cluster = ClusterKey::new(key.verifying_key());
        let p = peer();
        let mut env = issue_credential(&key, &p, 100, Some(200)).unwrap();
        // Extend the expiry without re-signing.
        let mut c: Credential =
            serde_json::from_slice(&env.unverified_bytes("c").unwrap()).unwrap();
        c.expires = Some(10_000);
        env.payload = B64.encode(serde_json::to_vec(&c).unwrap());
        assert!(matches!(
            check_member(&cluster, &BTreeMap::new(), &p, Some(&env), 150),
            Err(Refusal::Invalid(_))
        ));
        // A revocation is no credential, although the same key signed it.
        let rev = issue_revocation(&key, &p, 100).unwrap();
        let err = cluster.open_credential(&rev).unwrap_err();
        assert!(
            matches!(
                err,
                DocumentError::Malformed { .. } | DocumentError::WrongKind { .. }
            ),
            "{err}"
        );
        let (r, named) = cluster.open_revocation(&rev).unwrap();
        assert_eq!((r.revoked, named), (100, p));
    }
}
