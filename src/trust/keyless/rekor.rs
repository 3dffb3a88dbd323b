//! Rekor evidence checked offline: the signed entry timestamp (SET) a log key of the trusted
//! root made over the entry, and the entry's `hashedrekord` body naming the payload hash, the
//! signature and the certificate.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::root::{Log, TrustedRoot};

/// Largest Rekor entry body read (a `hashedrekord` with a certificate is about 2 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// One Rekor entry as carried next to a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The canonicalized entry body, base64 (as the log returned it).
    pub body: String,
    /// When the log integrated the entry, seconds since the epoch.
    pub integrated_time: i64,
    /// Its index in the log.
    pub log_index: i64,
    /// The log's ID: SHA-256 of its key, hex.
    pub log_id: String,
    /// The signed entry timestamp (DER ECDSA by the log key).
    pub set: Vec<u8>,
}

impl Entry {
    /// The bytes the SET signs: the RFC 8785 canonical JSON of
    /// `{body, integratedTime, logID, logIndex}` (keys sorted, no spaces).
    pub fn signed_payload(&self) -> Vec<u8> {
        let s = |v: &str| serde_json::Value::String(v.to_string()).to_string();
        format!(
            "{{\"body\":{},\"integratedTime\":{},\"logID\":{},\"logIndex\":{}}}",
            s(&self.body),
            self.integrated_time,
            s(&self.log_id),
            self.log_index
        )
        .into_bytes()
    }

    /// Checks the SET with the log key of the trusted root whose ID the entry names; that key
    /// must have been valid at the integrated time.
    pub fn verify_set<'r>(&self, root: &'r TrustedRoot) -> Result<&'r Log, String> {
        let log = root
            .logs
            .iter()
            .find(|l| l.log_id.eq_ignore_ascii_case(&self.log_id))
            .ok_or_else(|| {
                format!(
                    "the entry names log {}, which is not a transparency log of the trusted root",
                    self.log_id
                )
            })?;
        if !log.valid_for.contains(self.integrated_time) {
            return Err(format!(
                "log {} was not valid at the integrated time {}",
                log.log_id,
                crate::clock::rfc3339_utc(self.integrated_time.max(0) as u64)
            ));
        }
        log.key
            .verify(log.key.default_hash(), &self.signed_payload(), &self.set)
            .map_err(|e| format!("signed entry timestamp by log {}: {e}", log.log_id))?;
        Ok(log)
    }

    /// Checks that the body is a `hashedrekord` of `payload` hashed with SHA-256, signed with
    /// `signature` by the certificate `cert_der`.
    pub fn check_body(
        &self,
        payload: &[u8],
        signature: &[u8],
        cert_der: &[u8],
    ) -> Result<(), String> {
        let body = B64
            .decode(&self.body)
            .map_err(|e| format!("entry body is not base64: {e}"))?;
        if body.len() > MAX_BODY_BYTES {
            return Err(format!(
                "entry body of {} bytes exceeds the {MAX_BODY_BYTES}-byte limit",
                body.len()
            ));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("entry body is not JSON: {e}"))?;
        if v["kind"] != "hashedrekord" || v["apiVersion"] != "0.0.1" {
            return Err(format!(
                "entry is {} {}, expected hashedrekord 0.0.1",
                v["kind"], v["apiVersion"]
            ));
        }
        let spec = &v["spec"];
        let hash = &spec["data"]["hash"];
        let want = crate::sha256::hex_digest(payload);
        if hash["algorithm"] != "sha256" || hash["value"].as_str() != Some(want.as_str()) {
            return Err(format!(
                "entry records hash {}:{}, the signed payload is sha256:{want}",
                hash["algorithm"].as_str().unwrap_or("?"),
                hash["value"].as_str().unwrap_or("?")
            ));
        }
        let logged_sig = spec["signature"]["content"]
            .as_str()
            .and_then(|s| B64.decode(s).ok())
            .ok_or("entry has no base64 signature content")?;
        if logged_sig != signature {
            return Err("entry records another signature".into());
        }
        let logged_key = spec["signature"]["publicKey"]["content"]
            .as_str()
            .and_then(|s| B64.decode(s).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or("entry has no base64 PEM public key content")?;
        let certs = super::x509::pem_certificates(&logged_key, 1)
            .map_err(|e| format!("entry's public key: {e}"))?;
        if certs.first().map(Vec::as_slice) != Some(cert_der) {
            return Err("entry records another certificate".into());
        }
        Ok(())
    }

    /// A `hashedrekord` 0.0.1 body for `payload`, `signature` and `cert_pem`, base64 (the test
    /// kit's log writes these).
    pub fn hashedrekord_body(payload: &[u8], signature: &[u8], cert_pem: &str) -> String {
        let body = serde_json::json!({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": crate::sha256::hex_digest(payload)}},
                "signature": {
                    "content": B64.encode(signature),
                    "publicKey": {"content": B64.encode(cert_pem)},
                },
            },
        });
        B64.encode(body.to_string())
    }
}
