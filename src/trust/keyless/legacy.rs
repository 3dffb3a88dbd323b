//! Keyless signatures in cosign's legacy `.sig` tag form: a simple-signing layer whose
//! annotations carry the signature, the Fulcio certificate (`dev.sigstore.cosign/certificate`),
//! its chain (`dev.sigstore.cosign/chain`, informational: the trusted root's chain is what
//! counts) and the Rekor bundle (`dev.cosignproject.cosign/bundle`: the signed entry timestamp
//! and the entry it signs).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::rekor::Entry;
use super::{Check, Evidence, KeylessPolicy};
use crate::oci::{
    ANNOTATION_COSIGN_SIGNATURE, Descriptor, Digest, ImageManifest, MEDIA_COSIGN_SIMPLESIGNING,
};
use crate::trust::cosign::{MAX_PAYLOAD_BYTES, MAX_SIGNATURE_LAYERS};
use crate::trust::{SignedIdentity, TrustError, VerifiedBy};

/// The leaf certificate (PEM).
pub const ANNOTATION_CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
/// The certificate chain (PEM).
pub const ANNOTATION_CHAIN: &str = "dev.sigstore.cosign/chain";
/// The Rekor bundle (JSON).
pub const ANNOTATION_BUNDLE: &str = "dev.cosignproject.cosign/bundle";
/// Largest annotation value read.
pub const MAX_ANNOTATION_BYTES: usize = 64 * 1024;

/// cosign's `bundle.RekorBundle`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RekorBundle {
    /// Base64 DER ECDSA signature by the log key.
    #[serde(rename = "SignedEntryTimestamp")]
    pub signed_entry_timestamp: String,
    /// What it signs.
    #[serde(rename = "Payload")]
    pub payload: RekorPayload,
}

/// cosign's `bundle.RekorPayload`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RekorPayload {
    /// Base64 canonical entry body.
    pub body: String,
    /// Seconds since the epoch.
    pub integrated_time: i64,
    /// Index in the log.
    pub log_index: i64,
    /// Log ID, hex.
    #[serde(rename = "logID")]
    pub log_id: String,
}

impl RekorBundle {
    /// The bundle of `entry`.
    pub fn of(entry: &Entry) -> Self {
        RekorBundle {
            signed_entry_timestamp: B64.encode(&entry.set),
            payload: RekorPayload {
                body: entry.body.clone(),
                integrated_time: entry.integrated_time,
                log_index: entry.log_index,
                log_id: entry.log_id.clone(),
            },
        }
    }
}

/// Whether a layer carries a keyless signature (a certificate annotation).
pub fn is_keyless(layer: &Descriptor) -> bool {
    layer.annotations.contains_key(ANNOTATION_CERTIFICATE)
}

/// Reads the evidence of a keyless layer whose payload bytes are `payload`.
pub fn evidence(layer: &Descriptor, payload: Vec<u8>) -> Result<Evidence, String> {
    let get = |key: &str| -> Result<&str, String> {
        let v = layer
            .annotations
            .get(key)
            .ok_or_else(|| format!("layer {} has no {key} annotation", layer.digest))?;
        if v.len() > MAX_ANNOTATION_BYTES {
            return Err(format!(
                "layer {}: {key} annotation exceeds {MAX_ANNOTATION_BYTES} bytes",
                layer.digest
            ));
        }
        Ok(v)
    };
    let signature = B64
        .decode(get(ANNOTATION_COSIGN_SIGNATURE)?.trim())
        .map_err(|e| format!("signature is not base64: {e}"))?;
    let certs = super::x509::pem_certificates(get(ANNOTATION_CERTIFICATE)?, 1)
        .map_err(|e| format!("{ANNOTATION_CERTIFICATE}: {e}"))?;
    let certificate = certs.into_iter().next().unwrap_or_default();
    let bundle: RekorBundle = serde_json::from_str(get(ANNOTATION_BUNDLE)?)
        .map_err(|e| format!("{ANNOTATION_BUNDLE} is not a Rekor bundle: {e}"))?;
    let set = B64
        .decode(&bundle.signed_entry_timestamp)
        .map_err(|e| format!("SignedEntryTimestamp is not base64: {e}"))?;
    Ok(Evidence {
        certificate,
        payload,
        signature,
        dsse_type: None,
        entry: Entry {
            body: bundle.payload.body,
            integrated_time: bundle.payload.integrated_time,
            log_index: bundle.payload.log_index,
            log_id: bundle.payload.log_id,
            set,
        },
    })
}

/// Verifies the keyless signatures of a `.sig` manifest: accepts when one layer passes every
/// check; otherwise the first keyless layer's failure, or [`TrustError::NoKeylessSignature`]
/// when no layer carries a certificate. `fetch_payload` is as for
/// [`crate::trust::verify_signature`]; payload bytes are checked against the layer digest here.
pub fn verify_manifest<F>(
    policy: &KeylessPolicy,
    image: &str,
    signature_ref: &str,
    repository: &SignedIdentity,
    signed_digest: &Digest,
    sig_manifest: &[u8],
    mut fetch_payload: F,
) -> Result<VerifiedBy, TrustError>
where
    F: FnMut(&Descriptor) -> Result<Vec<u8>, TrustError>,
{
    let malformed = |reason: String| TrustError::Keyless {
        image: image.to_string(),
        check: Check::Malformed,
        reason,
    };
    let manifest: ImageManifest = serde_json::from_slice(sig_manifest)
        .map_err(|e| malformed(format!("signature manifest is not an image manifest: {e}")))?;
    let mut first_failure = None;
    for layer in manifest
        .layers
        .iter()
        .filter(|l| l.media_type == MEDIA_COSIGN_SIMPLESIGNING && is_keyless(l))
        .take(MAX_SIGNATURE_LAYERS)
    {
        let verdict = (|| {
            if layer.size > MAX_PAYLOAD_BYTES {
                return Err(malformed(format!(
                    "layer {}: payload of {} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit",
                    layer.digest, layer.size
                )));
            }
            let payload = fetch_payload(layer)?;
            if payload.len() as u64 != layer.size || Digest::of(&payload) != layer.digest {
                return Err(TrustError::tampered(
                    image,
                    format!("payload does not match its layer digest {}", layer.digest),
                ));
            }
            let ev = evidence(layer, payload).map_err(malformed)?;
            policy.verify(image, repository, signed_digest, &ev)
        })();
        match verdict {
            Ok(by) => {
                return Ok(VerifiedBy {
                    signature_manifest: Some(Digest::of(sig_manifest)),
                    ..by
                });
            }
            Err(e) => {
                first_failure.get_or_insert(e);
            }
        }
    }
    Err(
        first_failure.unwrap_or_else(|| TrustError::NoKeylessSignature {
            image: image.to_string(),
            signature_ref: signature_ref.to_string(),
        }),
    )
}
