//! Keyless (Sigstore) signatures verified offline against a local trusted root.
//!
//! A keyless signature is a short-lived Fulcio certificate naming the signer (SAN email or
//! URI, and the OIDC issuer in Fulcio's extensions), a signature by the certificate's key over
//! the cosign simple-signing payload, and a Rekor entry proving the signature was logged while
//! the certificate was valid. [`KeylessPolicy::verify`] checks, in this order, each failure
//! naming its [`Check`]:
//!
//! 1. the payload signature verifies with the leaf certificate's key ([`Check::Signature`]);
//! 2. the Rekor signed entry timestamp verifies with the log key of the trusted root whose
//!    log ID (SHA-256 of the key's DER) the entry names ([`Check::TransparencyLog`]);
//! 3. the entry's `hashedrekord` body names the payload's SHA-256, this signature and this
//!    certificate ([`Check::LogEntryBody`]);
//! 4. the leaf chains to a Fulcio CA of the trusted root, every certificate of the chain and
//!    the CA's `validFor` covering the integrated time ([`Check::CertificateChain`]);
//! 5. the leaf's validity covers the integrated time ([`Check::CertificateValidity`]);
//! 6. the leaf's OIDC issuer and subject match one `trust.identities` entry
//!    ([`Check::Issuer`], [`Check::Identity`]);
//! 7. the payload names the image digest ([`Check::Digest`]) and repository.
//!
//! [`legacy`] reads cosign's `.sig` tag form; [`bundle`] Sigstore bundles attached as OCI
//! referrers (DSSE envelope of an in-toto statement, `dsse` Rekor entry).

pub mod bundle;
pub mod legacy;
pub mod rekor;
pub mod root;
pub mod x509;

use std::path::Path;

use regex::Regex;

pub use root::TrustedRoot;
use x509::Certificate;

use super::cosign::SIMPLE_SIGNING_TYPE;
use super::{SignedIdentity, TrustError, VerifiedBy};
use crate::oci::Digest;

/// Longest identity pattern accepted.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Compiled size budget of one pattern.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// The check a keyless signature failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The signature material is malformed (certificate, bundle, annotations).
    Malformed,
    /// The payload signature does not verify with the certificate's key.
    Signature,
    /// The Rekor signed entry timestamp does not verify with a trusted log key.
    TransparencyLog,
    /// The Rekor entry body does not record this payload, signature and certificate.
    LogEntryBody,
    /// The certificate does not chain to a Fulcio CA of the trusted root at the integrated time.
    CertificateChain,
    /// The certificate was not valid at the integrated time.
    CertificateValidity,
    /// The OIDC issuer matches no trusted identity.
    Issuer,
    /// The subject matches no trusted identity (with this issuer).
    Identity,
    /// The signed payload names another image digest.
    Digest,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Check::Malformed => "signature material",
            Check::Signature => "payload signature",
            Check::TransparencyLog => "Rekor signed entry timestamp",
            Check::LogEntryBody => "Rekor entry body",
            Check::CertificateChain => "certificate chain",
            Check::CertificateValidity => "certificate validity at the integrated time",
            Check::Issuer => "identity issuer",
            Check::Identity => "identity subject",
            Check::Digest => "artifact digest",
        })
    }
}

/// Compiles a `trust.identities` pattern with the size budgets.
pub fn compile_pattern(pattern: &str) -> Result<Regex, TrustError> {
    let err = |source| TrustError::Pattern {
        pattern: pattern.chars().take(80).collect(),
        source,
    };
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(err(regex::Error::CompiledTooBig(MAX_PATTERN_LEN)));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(err)
}

/// One accepted signer.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The issuer, exactly (empty = any that matches `issuer_re`).
    pub issuer: String,
    issuer_re: Option<Regex>,
    subject_re: Regex,
}

impl Identity {
    /// An identity from upstream's fields (`issuer` and/or `issuerRegExp`, `subjectRegExp`).
    pub fn new(
        issuer: &str,
        issuer_reg_exp: &str,
        subject_reg_exp: &str,
    ) -> Result<Identity, TrustError> {
        let issuer_re = if issuer_reg_exp.is_empty() {
            None
        } else {
            Some(compile_pattern(issuer_reg_exp)?)
        };
        Ok(Identity {
            issuer: issuer.to_string(),
            issuer_re,
            subject_re: compile_pattern(subject_reg_exp)?,
        })
    }

    fn issuer_matches(&self, issuer: &str) -> bool {
        (self.issuer.is_empty() || self.issuer == issuer)
            && self.issuer_re.as_ref().is_none_or(|r| r.is_match(issuer))
            && !(self.issuer.is_empty() && self.issuer_re.is_none())
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let issuer = match &self.issuer_re {
            Some(r) if self.issuer.is_empty() => format!("issuer ~ /{r}/"),
            Some(r) => format!("issuer {} ~ /{r}/", self.issuer),
            None => format!("issuer {}", self.issuer),
        };
        write!(f, "{issuer}, subject ~ /{}/", self.subject_re)
    }
}

/// The evidence of one keyless signature, however it was carried.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// The leaf certificate (DER).
    pub certificate: Vec<u8>,
    /// The signed payload: simple-signing JSON, or a DSSE payload.
    pub payload: Vec<u8>,
    /// The signature over it (DER ECDSA); over DSSE's PAE when `dsse_type` is set.
    pub signature: Vec<u8>,
    /// A DSSE envelope's payload type: the payload is an in-toto statement (bundles).
    pub dsse_type: Option<String>,
    /// The Rekor entry.
    pub entry: rekor::Entry,
}

/// Keyless verification: a trusted root and the identities whose signatures are accepted.
#[derive(Debug, Clone)]
pub struct KeylessPolicy {
    /// The trusted root.
    pub root: TrustedRoot,
    /// Accepted signers (any one).
    pub identities: Vec<Identity>,
}

impl KeylessPolicy {
    /// Loads the trusted root at `path` and compiles `identities` (`issuer`, `issuerRegExp`,
    /// `subjectRegExp`).
    pub fn load(path: &Path, identities: &[(String, String, String)]) -> Result<Self, TrustError> {
        let root = TrustedRoot::load(path)?;
        let identities = identities
            .iter()
            .map(|(i, ir, s)| Identity::new(i, ir, s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KeylessPolicy { root, identities })
    }

    /// From `trust.sigstoreTrustedRoot` and `trust.identities`; `None` when no root is set.
    pub fn from_config(cfg: &crate::config::TrustConfig) -> Result<Option<Self>, TrustError> {
        if cfg.sigstore_trusted_root.is_empty() {
            return Ok(None);
        }
        let ids: Vec<_> = cfg
            .identities
            .iter()
            .map(|i| {
                (
                    i.issuer.clone(),
                    i.issuer_reg_exp.clone(),
                    i.subject_reg_exp.clone(),
                )
            })
            .collect();
        Self::load(Path::new(&cfg.sigstore_trusted_root), &ids).map(Some)
    }

    /// Verifies `ev` as a signature of `signed_digest` in the repository `identity` (see the
    /// module documentation for the checks and their order).
    pub fn verify(
        &self,
        image: &str,
        repository: &SignedIdentity,
        signed_digest: &Digest,
        ev: &Evidence,
    ) -> Result<VerifiedBy, TrustError> {
        let fail = |check: Check, reason: String| TrustError::Keyless {
            image: image.to_string(),
            check,
            reason,
        };
        let leaf = Certificate::from_der(&ev.certificate).map_err(|e| fail(Check::Malformed, e))?;
        let message = match &ev.dsse_type {
            Some(t) => bundle::pae(t, &ev.payload),
            None => ev.payload.clone(),
        };
        leaf.key
            .verify(leaf.key.default_hash(), &message, &ev.signature)
            .map_err(|e| fail(Check::Signature, format!("with the certificate's key: {e}")))?;
        let t = ev.entry.integrated_time;
        let when = crate::clock::rfc3339_utc(t.max(0) as u64);
        let log = ev
            .entry
            .verify_set(&self.root)
            .map_err(|e| fail(Check::TransparencyLog, e))?;
        match ev.dsse_type {
            Some(_) => {
                bundle::check_dsse_body(&ev.entry, &ev.payload, &ev.signature, &ev.certificate)
            }
            None => ev
                .entry
                .check_body(&ev.payload, &ev.signature, &ev.certificate),
        }
        .map_err(|e| fail(Check::LogEntryBody, e))?;
        let ca = self
            .chain(&leaf, t)
            .map_err(|e| fail(Check::CertificateChain, e))?;
        if !leaf.valid_at(t) {
            return Err(fail(
                Check::CertificateValidity,
                format!(
                    "the certificate is valid from {} to {}, the signature was logged at {when}",
                    crate::clock::rfc3339_utc(leaf.not_before.max(0) as u64),
                    crate::clock::rfc3339_utc(leaf.not_after.max(0) as u64),
                ),
            ));
        }
        if !leaf.allows_code_signing() {
            return Err(fail(
                Check::Malformed,
                "the certificate's extended key usage does not include code signing".into(),
            ));
        }
        let issuer = leaf
            .oidc_issuer()
            .map_err(|e| fail(Check::Issuer, e))?
            .ok_or_else(|| fail(Check::Issuer, "the certificate names no OIDC issuer".into()))?;
        let with_issuer: Vec<&Identity> = self
            .identities
            .iter()
            .filter(|i| i.issuer_matches(issuer))
            .collect();
        if with_issuer.is_empty() {
            return Err(fail(
                Check::Issuer,
                format!(
                    "OIDC issuer {issuer:?} is not trusted (trusted: {})",
                    self.trusted_list()
                ),
            ));
        }
        let subjects: Vec<&String> = leaf.emails.iter().chain(leaf.uris.iter()).collect();
        let subject = subjects
            .iter()
            .find(|s| with_issuer.iter().any(|i| i.subject_re.is_match(s)))
            .ok_or_else(|| {
                fail(
                    Check::Identity,
                    format!(
                        "subject {} (issuer {issuer}) matches no trusted identity (trusted: {})",
                        if subjects.is_empty() {
                            "none".to_string()
                        } else {
                            subjects
                                .iter()
                                .map(|s| format!("{s:?}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        },
                        self.trusted_list()
                    ),
                )
            })?;
        match ev.dsse_type {
            Some(_) => bundle::check_statement(&ev.payload, signed_digest).map_err(
                |(digest, reason)| {
                    fail(
                        if digest {
                            Check::Digest
                        } else {
                            Check::Malformed
                        },
                        reason,
                    )
                },
            )?,
            None => check_payload(image, repository, signed_digest, &ev.payload)?,
        }
        Ok(VerifiedBy {
            key_fingerprint: format!("keyless:{subject} ({issuer})"),
            key_source: format!(
                "Fulcio CA {}, Rekor log {} index {} at {when}",
                if ca.is_empty() { "?" } else { ca },
                log.log_id,
                ev.entry.log_index
            ),
            signature_manifest: None,
            payload: Digest::of(&ev.payload),
        })
    }

    fn trusted_list(&self) -> String {
        self.identities
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The URI of the authority whose chain issued `leaf` and was valid at `t`.
    fn chain(&self, leaf: &Certificate, t: i64) -> Result<&str, String> {
        let mut why = Vec::new();
        for ca in &self.root.authorities {
            let Some(first) = ca.chain.first() else {
                continue;
            };
            if leaf.issuer != first.subject {
                continue;
            }
            let verdict = (|| {
                leaf.issued_by(first)?;
                if !ca.valid_for.contains(t) {
                    return Err("the authority was not valid at the integrated time".to_string());
                }
                for (i, c) in ca.chain.iter().enumerate() {
                    if !c.valid_at(t) {
                        return Err(format!(
                            "chain certificate {i} was not valid at the integrated time"
                        ));
                    }
                    let parent = ca.chain.get(i + 1).unwrap_or(c);
                    c.issued_by(parent)
                        .map_err(|e| format!("chain certificate {i}: {e}"))?;
                }
                Ok(())
            })();
            match verdict {
                Ok(()) => return Ok(&ca.uri),
                Err(e) => why.push(e),
            }
        }
        Err(if why.is_empty() {
            format!(
                "no certificate authority of the trusted root {} issued the certificate",
                self.root.source
            )
        } else {
            why.join("; ")
        })
    }
}

/// Checks the simple-signing payload names `signed_digest` and the repository.
fn check_payload(
    image: &str,
    repository: &SignedIdentity,
    signed_digest: &Digest,
    payload: &[u8],
) -> Result<(), TrustError> {
    let fail = |check: Check, reason: String| TrustError::Keyless {
        image: image.to_string(),
        check,
        reason,
    };
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| fail(Check::Malformed, format!("signed payload is not JSON: {e}")))?;
    let critical = &value["critical"];
    if critical["type"].as_str() != Some(SIMPLE_SIGNING_TYPE) {
        return Err(fail(
            Check::Malformed,
            format!(
                "signed payload has critical.type {}, expected {SIMPLE_SIGNING_TYPE:?}",
                critical["type"]
            ),
        ));
    }
    let named = critical["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or("no digest");
    if named != signed_digest.as_str() {
        return Err(fail(
            Check::Digest,
            format!("the signed payload names {named}, the image is {signed_digest}"),
        ));
    }
    let named = critical["identity"]["docker-reference"]
        .as_str()
        .unwrap_or_default();
    if !repository.matches(named) {
        return Err(TrustError::IdentityMismatch {
            image: image.to_string(),
            signed: if named.is_empty() {
                "no docker-reference".into()
            } else {
                named.to_string()
            },
            expected: repository.to_string(),
        });
    }
    Ok(())
}
