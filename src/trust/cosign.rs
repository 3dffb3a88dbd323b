//! Cosign key-based signatures in the legacy tag format (`spec/image-factory-api.md` §6.5–§6.6,
//! `spec/peers.md` C.3).
//!
//! A signature of the manifest (or index) `sha256:<hex>` of `<registry>/<repository>` is an OCI
//! image manifest at tag `sha256-<hex>.sig` of the same repository. Each of its layers of media
//! type `application/vnd.dev.cosign.simplesigning.v1+json` is a signature: the layer blob is the
//! simple-signing JSON payload, and the layer descriptor's annotation
//! `dev.cosignproject.cosign/signature` holds the base64 ASN.1 DER ECDSA-P256-SHA256 signature over
//! the payload bytes. This is what `cosign sign --key k.key --tlog-upload=false` writes and
//! `cosign verify --key k.pub --offline --insecure-ignore-tlog` accepts.
//!
//! Callers go through [`TrustPolicy::verify`]; [`Verifier`] is the place where keyless
//! verification (Fulcio certificate + Rekor entry under an offline trust root) joins later,
//! without touching callers.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};

use super::{SigningKey, TrustError};
use crate::oci::{
    ANNOTATION_COSIGN_SIGNATURE, Descriptor, Digest, ImageManifest, MEDIA_COSIGN_SIMPLESIGNING,
    MEDIA_OCI_CONFIG, MEDIA_OCI_MANIFEST, Reference,
};

/// `critical.type` of a cosign simple-signing payload.
pub const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";
/// Largest simple-signing payload accepted (real ones are ~250 bytes).
pub const MAX_PAYLOAD_BYTES: u64 = 64 * 1024;
/// Largest signature manifest accepted.
pub const MAX_SIGNATURE_MANIFEST_BYTES: u64 = 1024 * 1024;
/// Most signature layers looked at in one signature manifest.
pub const MAX_SIGNATURE_LAYERS: usize = 64;

/// The simple-signing payload cosign signs, byte for byte as Go's `encoding/json` writes cosign's
/// `payload.SimpleContainerImage` (compact, struct field order, `"optional":null`):
///
/// `{"critical":{"identity":{"docker-reference":"<ref>"},"image":{"docker-manifest-digest":"sha256:<hex>"},"type":"cosign container image signature"},"optional":null}`
pub fn simple_signing_payload(docker_reference: &str, manifest_digest: &Digest) -> Vec<u8> {
    format!(
        "{{\"critical\":{{\"identity\":{{\"docker-reference\":{}}},\"image\":{{\"docker-manifest-digest\":{}}},\"type\":{}}},\"optional\":null}}",
        go_json_string(docker_reference),
        go_json_string(manifest_digest.as_str()),
        go_json_string(SIMPLE_SIGNING_TYPE),
    )
    .into_bytes()
}

/// A JSON string as Go's `encoding/json` escapes it (HTML-safe: `<`, `>`, `&`, U+2028, U+2029).
fn go_json_string(s: &str) -> String {
    let plain = serde_json::to_string(s).expect("strings always serialize");
    let mut out = String::with_capacity(plain.len());
    for c in plain.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The identity a signature must name: the image's repository path below the registry host
/// and any mirror namespace, e.g. `siderolabs/imager`.
///
/// A signed payload's `critical.identity.docker-reference` (tag or digest ignored) matches when
/// it is this path or ends with `/` and this path: `ghcr.io/siderolabs/imager` and
/// `registry.local:5000/mirror/siderolabs/imager` (an image re-signed at its mirror's name)
/// both match `siderolabs/imager`; `ghcr.io/siderolabs/installer` does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIdentity(String);

impl SignedIdentity {
    /// Signatures must name `repository` (e.g. `siderolabs/imager`) below some host and
    /// namespace.
    pub fn repository(repository: &str) -> SignedIdentity {
        SignedIdentity(repository.trim_matches('/').to_string())
    }

    /// Signatures must name the whole repository path of `reference` (no mirror namespace is
    /// looked past).
    pub fn of(reference: &Reference) -> SignedIdentity {
        SignedIdentity::repository(&reference.repository)
    }

    /// The repository path.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a payload's `docker-reference` names this repository.
    pub fn matches(&self, docker_reference: &str) -> bool {
        let name = docker_reference
            .split_once('@')
            .map_or(docker_reference, |(name, _)| name);
        // A tag follows the last `:` only when no `/` comes after it (`host:port/...` is not one).
        let name = match name.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => repo,
            _ => name,
        };
        !self.0.is_empty()
            && (name == self.0
                || name
                    .strip_suffix(self.0.as_str())
                    .is_some_and(|above| above.ends_with('/')))
    }
}

impl std::fmt::Display for SignedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A cosign signature image for one signed digest, ready to push or to put in a bundle.
#[derive(Debug, Clone)]
pub struct SignatureImage {
    /// The tag it belongs at: `sha256-<hex>.sig`.
    pub tag: String,
    /// The simple-signing payload (the layer blob).
    pub payload: Vec<u8>,
    /// The layer descriptor, carrying the signature annotation.
    pub payload_descriptor: Descriptor,
    /// The image config blob.
    pub config: Vec<u8>,
    /// Its descriptor.
    pub config_descriptor: Descriptor,
    /// The OCI image manifest bytes.
    pub manifest: Vec<u8>,
    /// Its descriptor (media type OCI manifest).
    pub manifest_descriptor: Descriptor,
}

impl SignatureImage {
    /// Signs `manifest_digest` of repository `docker_reference` (`registry/repository`, no tag)
    /// with `key`, in the shape `cosign sign --key` produces: an OCI manifest whose config is
    /// go-containerregistry's empty image config with the payload's diff ID, and one
    /// simple-signing layer annotated with the base64 DER signature. Deterministic (RFC 6979).
    pub fn sign(key: &SigningKey, docker_reference: &str, manifest_digest: &Digest) -> Self {
        let payload = simple_signing_payload(docker_reference, manifest_digest);
        let signature = B64.encode(key.sign_der(&payload));
        let mut payload_descriptor = Descriptor::for_bytes(MEDIA_COSIGN_SIMPLESIGNING, &payload);
        payload_descriptor
            .annotations
            .insert(ANNOTATION_COSIGN_SIGNATURE.to_string(), signature.clone());
        let config = format!(
            "{{\"architecture\":\"\",\"created\":\"0001-01-01T00:00:00Z\",\"history\":[{{\"created\":\"0001-01-01T00:00:00Z\"}}],\"os\":\"\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"{}\"]}},\"config\":{{}}}}",
            payload_descriptor.digest
        )
        .into_bytes();
        let config_descriptor = Descriptor::for_bytes(MEDIA_OCI_CONFIG, &config);
        // go-containerregistry's field order: mediaType, size, digest, annotations.
        let manifest = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{MEDIA_OCI_MANIFEST}\",\"config\":{{\"mediaType\":\"{MEDIA_OCI_CONFIG}\",\"size\":{},\"digest\":\"{}\"}},\"layers\":[{{\"mediaType\":\"{MEDIA_COSIGN_SIMPLESIGNING}\",\"size\":{},\"digest\":\"{}\",\"annotations\":{{\"{ANNOTATION_COSIGN_SIGNATURE}\":{}}}}}]}}",
            config_descriptor.size,
            config_descriptor.digest,
            payload_descriptor.size,
            payload_descriptor.digest,
            go_json_string(&signature),
        )
        .into_bytes();
        let manifest_descriptor = Descriptor::for_bytes(MEDIA_OCI_MANIFEST, &manifest);
        SignatureImage {
            tag: manifest_digest.signature_tag(),
            payload,
            payload_descriptor,
            config,
            config_descriptor,
            manifest,
            manifest_descriptor,
        }
    }
}

/// One trusted ECDSA P-256 public key.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// `sha256:<hex>` of the PKIX (SubjectPublicKeyInfo) DER encoding.
    pub fingerprint: String,
    /// Where it came from (file path or config key), for messages.
    pub source: String,
    key: p256::ecdsa::VerifyingKey,
}

/// The set of public keys whose cosign signatures are accepted.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<TrustedKey>,
}

impl TrustedKeys {
    /// An empty set (verifies nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every PKIX `PUBLIC KEY` PEM block found in `pem` (at least one); `source` names it in
    /// messages. A key already present is not added twice.
    pub fn add_pem(&mut self, pem: &str, source: &str) -> Result<usize, TrustError> {
        let bad = |message: String| TrustError::PublicKey {
            source_name: source.to_string(),
            message,
        };
        const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
        const END: &str = "-----END PUBLIC KEY-----";
        let mut added = 0;
        let mut rest = pem;
        let mut found = 0;
        while let Some(start) = rest.find(BEGIN) {
            let tail = &rest[start..];
            let end = tail
                .find(END)
                .ok_or_else(|| bad("unterminated PUBLIC KEY block".into()))?;
            let block = &tail[..end + END.len()];
            rest = &tail[end + END.len()..];
            found += 1;
            let key = p256::ecdsa::VerifyingKey::from_public_key_pem(block).map_err(|e| {
                TrustError::PublicKeyPem {
                    source_name: source.to_string(),
                    source: e,
                }
            })?;
            if self.add_key(key, source)? {
                added += 1;
            }
        }
        if found == 0 {
            return Err(bad(
                "no \"-----BEGIN PUBLIC KEY-----\" block (expected an ECDSA P-256 PKIX public key in PEM)"
                    .into(),
            ));
        }
        Ok(added)
    }

    /// Reads a PEM public key file (see [`TrustedKeys::add_pem`]).
    pub fn add_file(&mut self, path: &Path) -> Result<usize, TrustError> {
        let pem = std::fs::read_to_string(path).map_err(|source| TrustError::PublicKeyFile {
            source_name: path.display().to_string(),
            source,
        })?;
        self.add_pem(&pem, &path.display().to_string())
    }

    /// Loads every file in `paths`.
    pub fn from_files<P: AsRef<Path>>(paths: &[P]) -> Result<Self, TrustError> {
        let mut keys = Self::new();
        for p in paths {
            keys.add_file(p.as_ref())?;
        }
        Ok(keys)
    }

    /// Trusts the public half of `key` (tests; an appliance trusting its own signatures).
    pub fn add_signing_key(&mut self, key: &SigningKey, source: &str) -> Result<bool, TrustError> {
        self.add_key(key.verifying_key(), source)
    }

    fn add_key(
        &mut self,
        key: p256::ecdsa::VerifyingKey,
        source: &str,
    ) -> Result<bool, TrustError> {
        let der = key.to_public_key_der().map_err(TrustError::crypto)?;
        let fingerprint = Digest::of(der.as_bytes()).to_string();
        if self.keys.iter().any(|k| k.fingerprint == fingerprint) {
            return Ok(false);
        }
        self.keys.push(TrustedKey {
            fingerprint,
            source: source.to_string(),
            key,
        });
        Ok(true)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys.
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }
}

/// Which signature verified, for logs and the import summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBy {
    /// Fingerprint (`sha256:` of the PKIX DER) of the key that verified.
    pub key_fingerprint: String,
    /// Where that key came from.
    pub key_source: String,
    /// Digest of the signature manifest (the `.sig` image), when known.
    pub signature_manifest: Option<Digest>,
    /// Digest of the payload layer that verified.
    pub payload: Digest,
}

/// Verifies a cosign signature manifest for `signed_digest` of the repository `identity`.
///
/// `image` names the image in errors. `fetch_payload` returns the bytes of a simple-signing
/// layer (it is called only for layers of that media type, at most [`MAX_SIGNATURE_LAYERS`], and
/// never for one whose descriptor claims more than [`MAX_PAYLOAD_BYTES`]); the bytes are checked
/// against the layer digest here. Accepts when at least one layer's payload verifies under one
/// trusted key and names `signed_digest` and `identity` with the cosign type; otherwise the most
/// telling failure is returned: a trusted signature over another digest
/// ([`TrustError::DigestMismatch`]) or for another repository ([`TrustError::IdentityMismatch`]),
/// then altered or malformed content ([`TrustError::Tampered`]), then
/// [`TrustError::UnknownKey`].
pub fn verify_signature<F>(
    trusted: &TrustedKeys,
    image: &str,
    identity: &SignedIdentity,
    signed_digest: &Digest,
    sig_manifest: &[u8],
    mut fetch_payload: F,
) -> Result<VerifiedBy, TrustError>
where
    F: FnMut(&Descriptor) -> Result<Vec<u8>, TrustError>,
{
    let tampered = |reason: String| TrustError::tampered(image, reason);
    if trusted.is_empty() {
        return Err(TrustError::NoTrustedKeys {
            image: image.to_string(),
        });
    }
    let manifest: ImageManifest = serde_json::from_slice(sig_manifest).map_err(|e| {
        TrustError::tampered_by(image, "signature manifest is not an image manifest", e)
    })?;
    let layers: Vec<&Descriptor> = manifest
        .layers
        .iter()
        .filter(|l| l.media_type == MEDIA_COSIGN_SIMPLESIGNING)
        .take(MAX_SIGNATURE_LAYERS)
        .collect();
    if layers.is_empty() {
        return Err(tampered(format!(
            "signature manifest has no {MEDIA_COSIGN_SIMPLESIGNING} layer"
        )));
    }
    let mut mismatch: Option<TrustError> = None;
    let mut first_tamper: Option<TrustError> = None;
    let mut checked = 0usize;
    for layer in layers {
        match verify_layer(
            trusted,
            image,
            identity,
            signed_digest,
            layer,
            &mut fetch_payload,
        ) {
            Ok(by) => {
                return Ok(VerifiedBy {
                    signature_manifest: Some(Digest::of(sig_manifest)),
                    ..by
                });
            }
            Err(LayerFailure::Untrusted) => checked += 1,
            Err(LayerFailure::Rejected(
                e @ (TrustError::DigestMismatch { .. } | TrustError::IdentityMismatch { .. }),
            )) => {
                mismatch.get_or_insert(e);
            }
            Err(LayerFailure::Rejected(e)) => {
                first_tamper.get_or_insert(e);
            }
        }
    }
    Err(mismatch.or(first_tamper).unwrap_or(TrustError::UnknownKey {
        image: image.to_string(),
        signatures: checked,
        keys: trusted.len(),
    }))
}

enum LayerFailure {
    /// Well-formed, but no trusted key verifies it.
    Untrusted,
    /// A definite verdict (tampered, digest mismatch, fetch failure).
    Rejected(TrustError),
}

fn verify_layer<F>(
    trusted: &TrustedKeys,
    image: &str,
    identity: &SignedIdentity,
    signed_digest: &Digest,
    layer: &Descriptor,
    fetch_payload: &mut F,
) -> Result<VerifiedBy, LayerFailure>
where
    F: FnMut(&Descriptor) -> Result<Vec<u8>, TrustError>,
{
    let tampered = |reason: String| LayerFailure::Rejected(TrustError::tampered(image, reason));
    let sig_b64 = layer
        .annotations
        .get(ANNOTATION_COSIGN_SIGNATURE)
        .ok_or_else(|| {
            tampered(format!(
                "layer {} has no {ANNOTATION_COSIGN_SIGNATURE} annotation",
                layer.digest
            ))
        })?;
    let sig_der = B64.decode(sig_b64.trim()).map_err(|e| {
        LayerFailure::Rejected(TrustError::tampered_by(
            image,
            format!("layer {}: signature is not base64", layer.digest),
            e,
        ))
    })?;
    let signature = p256::ecdsa::DerSignature::from_bytes(&sig_der).map_err(|_| {
        tampered(format!(
            "layer {}: signature is not an ASN.1 DER ECDSA signature",
            layer.digest
        ))
    })?;
    if layer.size > MAX_PAYLOAD_BYTES {
        return Err(tampered(format!(
            "layer {}: payload of {} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit",
            layer.digest, layer.size
        )));
    }
    let payload = fetch_payload(layer).map_err(LayerFailure::Rejected)?;
    if payload.len() as u64 != layer.size || Digest::of(&payload) != layer.digest {
        return Err(tampered(format!(
            "payload does not match its layer digest {} (got {} bytes, {})",
            layer.digest,
            payload.len(),
            Digest::of(&payload)
        )));
    }
    let key = trusted
        .keys
        .iter()
        .find(|k| k.key.verify(&payload, &signature).is_ok())
        .ok_or(LayerFailure::Untrusted)?;
    // Signed by a trusted key: now the claims must match.
    let value: serde_json::Value = serde_json::from_slice(&payload).map_err(|e| {
        LayerFailure::Rejected(TrustError::tampered_by(
            image,
            "signed payload is not JSON",
            e,
        ))
    })?;
    let critical = &value["critical"];
    if critical["type"].as_str() != Some(SIMPLE_SIGNING_TYPE) {
        return Err(tampered(format!(
            "signed payload has critical.type {}, expected {SIMPLE_SIGNING_TYPE:?}",
            critical["type"]
        )));
    }
    let named = critical["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or_default();
    if named != signed_digest.as_str() {
        return Err(LayerFailure::Rejected(TrustError::DigestMismatch {
            image: image.to_string(),
            expected: signed_digest.to_string(),
            signed: if named.is_empty() {
                "no digest".into()
            } else {
                named.to_string()
            },
        }));
    }
    // The same content may be signed under several names; the name must be the one asked for.
    let named = critical["identity"]["docker-reference"]
        .as_str()
        .unwrap_or_default();
    if !identity.matches(named) {
        return Err(LayerFailure::Rejected(TrustError::IdentityMismatch {
            image: image.to_string(),
            signed: if named.is_empty() {
                "no docker-reference".into()
            } else {
                named.to_string()
            },
            expected: identity.to_string(),
        }));
    }
    Ok(VerifiedBy {
        key_fingerprint: key.fingerprint.clone(),
        key_source: key.source.clone(),
        signature_manifest: None,
        payload: layer.digest.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_bytes_and_go_escaping() {
        let d = Digest::of(b"x");
        let p = simple_signing_payload("ghcr.io/siderolabs/imager", &d);
        assert_eq!(
            String::from_utf8(p).unwrap(),
            format!(
                "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"ghcr.io/siderolabs/imager\"}},\"image\":{{\"docker-manifest-digest\":\"{d}\"}},\"type\":\"cosign container image signature\"}},\"optional\":null}}"
            )
        );
        assert_eq!(
            go_json_string("a<b>&\"\u{2028}"),
            "\"a\\u003cb\\u003e\\u0026\\\"\\u2028\""
        );
    }

    #[test]
    fn identity_matches_below_host_and_namespace_only() {
        let id = SignedIdentity::repository("siderolabs/imager");
        for yes in [
            "siderolabs/imager",
            "ghcr.io/siderolabs/imager",
            "ghcr.io/siderolabs/imager:v1.11.0",
            "ghcr.io/siderolabs/imager@sha256:0123",
            "ghcr.io/siderolabs/imager:v1.11.0@sha256:0123",
            "registry.local:5000/mirror/siderolabs/imager",
            "registry.local:5000/a/b/siderolabs/imager:v1",
        ] {
            assert!(id.matches(yes), "{yes}");
        }
        for no in [
            "",
            "ghcr.io/siderolabs/installer",
            "ghcr.io/siderolabs/imager-evil",
            "ghcr.io/xsiderolabs/imager",
            "ghcr.io/siderolabs/imager/extra",
            "ghcr.io/imager",
            "registry.local:5000/siderolabs",
        ] {
            assert!(!id.matches(no), "{no}");
        }
        assert!(!SignedIdentity::repository("").matches("ghcr.io/"));
    }

    #[test]
    fn sign_then_verify_and_high_s_accepted() {
        let key = SigningKey::from_seed(&[7; 32]);
        let mut keys = TrustedKeys::new();
        keys.add_pem(&key.public_key_pem().unwrap(), "test")
            .unwrap();
        let d = Digest::of(b"image");
        let sig = SignatureImage::sign(&key, "ghcr.io/a/b", &d);
        let id = SignedIdentity::repository("a/b");
        let by = verify_signature(&keys, "img", &id, &d, &sig.manifest, |_| {
            Ok(sig.payload.clone())
        })
        .unwrap();
        assert_eq!(by.payload, sig.payload_descriptor.digest);
        // Go does not normalise s; a high-s signature (n - s) must verify too.
        let der = key.sign_der(&sig.payload);
        let parsed = p256::ecdsa::Signature::from_der(&der).unwrap();
        let (r, s) = parsed.split_scalars();
        let high = p256::ecdsa::Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).unwrap();
        let vk = key.verifying_key();
        assert!(vk.verify(&sig.payload, &high).is_ok());
    }
}
