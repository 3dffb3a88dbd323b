//! The Sigstore trusted root (`trusted_root.json`, protobuf-specs `TrustedRoot` in its JSON
//! form): the Fulcio certificate authorities and the Rekor transparency log keys keyless
//! signatures are checked against. Read with budgets: the file size, the number of
//! authorities, logs and certificates per chain; CT logs and timestamp authorities are not used.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::x509::{Certificate, PublicKey};
use crate::trust::TrustError;

/// Largest `trusted_root.json` read (the public-good one is about 10 KiB).
pub const MAX_TRUSTED_ROOT_BYTES: u64 = 1024 * 1024;
/// Most certificate authorities or transparency logs read.
pub const MAX_ENTRIES: usize = 64;
/// Most certificates in one authority's chain.
pub const MAX_CHAIN: usize = 8;
/// `mediaType` of the trusted root this reader knows.
pub const TRUSTED_ROOT_MEDIA_TYPE: &str =
    "application/vnd.dev.sigstore.trustedroot+json;version=0.1";

/// A validity window, seconds since the epoch (`end` open when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start.
    pub start: i64,
    /// End, if any.
    pub end: Option<i64>,
}

impl Window {
    /// Whether `t` is inside.
    pub fn contains(&self, t: i64) -> bool {
        self.start <= t && self.end.is_none_or(|e| t <= e)
    }
}

/// A Fulcio certificate authority: its chain (issuing certificate first, root last).
#[derive(Debug, Clone)]
pub struct Authority {
    /// Where it is (`uri`), for messages.
    pub uri: String,
    /// The chain.
    pub chain: Vec<Certificate>,
    /// When it issued certificates.
    pub valid_for: Window,
}

/// A Rekor transparency log key.
#[derive(Debug, Clone)]
pub struct Log {
    /// Where it is (`baseUrl`), for messages.
    pub url: String,
    /// Its log ID: SHA-256 of the key's DER `SubjectPublicKeyInfo`, hex.
    pub log_id: String,
    /// The key.
    pub key: PublicKey,
    /// When the key signed entries.
    pub valid_for: Window,
}

/// A loaded trusted root.
#[derive(Debug, Clone)]
pub struct TrustedRoot {
    /// Where it was read from, for messages.
    pub source: String,
    /// Fulcio CAs.
    pub authorities: Vec<Authority>,
    /// Rekor logs.
    pub logs: Vec<Log>,
}

/// `TrustedRoot` as JSON (the fields used).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawRoot {
    /// `mediaType`.
    #[serde(default)]
    pub media_type: String,
    /// `tlogs`.
    #[serde(default)]
    pub tlogs: Vec<RawLog>,
    /// `certificateAuthorities`.
    #[serde(default)]
    pub certificate_authorities: Vec<RawAuthority>,
}

/// `TransparencyLogInstance`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawLog {
    /// `baseUrl`.
    #[serde(default)]
    pub base_url: String,
    /// `hashAlgorithm`.
    #[serde(default)]
    pub hash_algorithm: String,
    /// `publicKey`.
    pub public_key: RawKey,
    /// `logId`.
    pub log_id: RawLogId,
}

/// `PublicKey`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawKey {
    /// `rawBytes`: base64 DER `SubjectPublicKeyInfo`.
    pub raw_bytes: String,
    /// `keyDetails`.
    #[serde(default)]
    pub key_details: String,
    /// `validFor`.
    #[serde(default)]
    pub valid_for: Option<RawWindow>,
}

/// `LogId`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawLogId {
    /// `keyId`: base64 of the log ID bytes.
    pub key_id: String,
}

/// `CertificateAuthority`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawAuthority {
    /// `uri`.
    #[serde(default)]
    pub uri: String,
    /// `certChain`.
    pub cert_chain: RawChain,
    /// `validFor`.
    #[serde(default)]
    pub valid_for: Option<RawWindow>,
}

/// `X509CertificateChain`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RawChain {
    /// `certificates`.
    pub certificates: Vec<RawCert>,
}

/// `X509Certificate`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawCert {
    /// `rawBytes`: base64 DER.
    pub raw_bytes: String,
}

/// `TimeRange`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RawWindow {
    /// `start`, RFC 3339.
    #[serde(default)]
    pub start: Option<String>,
    /// `end`, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac]Z` (UTC only, as protobuf's JSON `Timestamp` writes it).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let frac = &s[19..s.len() - 1];
    if !(frac.is_empty()
        || frac.len() > 1 && frac.starts_with('.') && frac[1..].bytes().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d, h, mi, sec) = (
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(
        crate::trust::secureboot::der::days_from_civil(y, mo, d) * 86_400
            + h * 3600
            + mi * 60
            + sec,
    )
}

fn window(raw: &Option<RawWindow>, what: &str) -> Result<Window, String> {
    let Some(w) = raw else {
        return Ok(Window {
            start: i64::MIN,
            end: None,
        });
    };
    let time = |t: &Option<String>| -> Result<Option<i64>, String> {
        t.as_deref()
            .map(|s| {
                parse_rfc3339(s).ok_or_else(|| format!("{what}: {s:?} is not an RFC 3339 UTC time"))
            })
            .transpose()
    };
    Ok(Window {
        start: time(&w.start)?.unwrap_or(i64::MIN),
        end: time(&w.end)?,
    })
}

impl TrustedRoot {
    /// Reads and checks `path` (at most [`MAX_TRUSTED_ROOT_BYTES`]).
    pub fn load(path: &Path) -> Result<TrustedRoot, TrustError> {
        let source = path.display().to_string();
        let err = |reason: String, e: Option<Box<dyn std::error::Error + Send + Sync>>| {
            TrustError::TrustedRoot {
                path: source.clone(),
                reason,
                source: e,
            }
        };
        let meta =
            std::fs::metadata(path).map_err(|e| err("cannot read".into(), Some(Box::new(e))))?;
        if meta.len() > MAX_TRUSTED_ROOT_BYTES {
            return Err(err(
                format!(
                    "{} bytes exceeds the {MAX_TRUSTED_ROOT_BYTES}-byte limit",
                    meta.len()
                ),
                None,
            ));
        }
        let bytes =
            std::fs::read(path).map_err(|e| err("cannot read".into(), Some(Box::new(e))))?;
        Self::parse(&bytes, &source)
    }

    /// Parses the JSON of a trusted root; `source` names it in messages.
    pub fn parse(bytes: &[u8], source: &str) -> Result<TrustedRoot, TrustError> {
        let err = |reason: String| TrustError::TrustedRoot {
            path: source.to_string(),
            reason,
            source: None,
        };
        if bytes.len() as u64 > MAX_TRUSTED_ROOT_BYTES {
            return Err(err(format!(
                "{} bytes exceeds the {MAX_TRUSTED_ROOT_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let raw: RawRoot = serde_json::from_slice(bytes).map_err(|e| TrustError::TrustedRoot {
            path: source.to_string(),
            reason: "not a Sigstore trusted_root.json".into(),
            source: Some(Box::new(e)),
        })?;
        if !raw.media_type.is_empty()
            && !raw
                .media_type
                .starts_with("application/vnd.dev.sigstore.trustedroot")
        {
            return Err(err(format!(
                "mediaType {:?} is not a Sigstore trusted root",
                raw.media_type
            )));
        }
        if raw.tlogs.len() > MAX_ENTRIES || raw.certificate_authorities.len() > MAX_ENTRIES {
            return Err(err(format!(
                "more than {MAX_ENTRIES} transparency logs or certificate authorities"
            )));
        }
        let mut logs = Vec::new();
        for (i, l) in raw.tlogs.iter().enumerate() {
            let what = format!("tlogs[{i}]");
            let der = B64
                .decode(&l.public_key.raw_bytes)
                .map_err(|e| err(format!("{what}.publicKey.rawBytes is not base64: {e}")))?;
            let key = PublicKey::from_spki(&der).map_err(|e| err(format!("{what}: {e}")))?;
            let log_id = hex::encode(crate::sha256::digest(&der));
            let claimed = B64
                .decode(&l.log_id.key_id)
                .map_err(|e| err(format!("{what}.logId.keyId is not base64: {e}")))?;
            if hex::encode(&claimed) != log_id {
                return Err(err(format!(
                    "{what}: logId.keyId is not the SHA-256 of its public key"
                )));
            }
            logs.push(Log {
                url: l.base_url.clone(),
                log_id,
                key,
                valid_for: window(&l.public_key.valid_for, &what).map_err(err)?,
            });
        }
        let mut authorities = Vec::new();
        for (i, a) in raw.certificate_authorities.iter().enumerate() {
            let what = format!("certificateAuthorities[{i}]");
            let certs = &a.cert_chain.certificates;
            if certs.is_empty() || certs.len() > MAX_CHAIN {
                return Err(err(format!(
                    "{what}: a chain of {} certificates (1 to {MAX_CHAIN} expected)",
                    certs.len()
                )));
            }
            let mut chain = Vec::new();
            for (j, c) in certs.iter().enumerate() {
                let der = B64.decode(&c.raw_bytes).map_err(|e| {
                    err(format!(
                        "{what}.certChain.certificates[{j}] is not base64: {e}"
                    ))
                })?;
                let cert = Certificate::from_der(&der)
                    .map_err(|e| err(format!("{what}.certChain.certificates[{j}]: {e}")))?;
                if !cert.is_ca {
                    return Err(err(format!(
                        "{what}.certChain.certificates[{j}] is not a CA certificate"
                    )));
                }
                chain.push(cert);
            }
            authorities.push(Authority {
                uri: a.uri.clone(),
                chain,
                valid_for: window(&a.valid_for, &what).map_err(err)?,
            });
        }
        if authorities.is_empty() || logs.is_empty() {
            return Err(err(
                "needs at least one certificate authority and one transparency log".into(),
            ));
        }
        Ok(TrustedRoot {
            source: source.to_string(),
            authorities,
            logs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_utc_only() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2021-01-12T11:53:27.000Z"),
            Some(1_610_452_407)
        );
        assert_eq!(parse_rfc3339("2021-01-12T11:53:27+01:00"), None);
        assert_eq!(parse_rfc3339("2021-13-12T11:53:27Z"), None);
        assert_eq!(parse_rfc3339("2021-01-12T11:53:27.Z"), None);
        assert_eq!(parse_rfc3339("2021-01-12 11:53:27Z"), None);
    }

    #[test]
    fn refuses_oversized_and_empty_roots() {
        let big = vec![b' '; MAX_TRUSTED_ROOT_BYTES as usize + 1];
        let e = TrustedRoot::parse(&big, "r.json").unwrap_err().to_string();
        assert!(e.contains("exceeds the 1048576-byte limit"), "{e}");
        let e = TrustedRoot::parse(b"{}", "r.json").unwrap_err().to_string();
        assert!(e.contains("at least one certificate authority"), "{e}");
        let e = TrustedRoot::parse(b"\"x\"", "r.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a Sigstore trusted_root.json"), "{e}");
    }
}
