//! Verifying images found in an [`ImageSource`]: fetch the `sha256-<hex>.sig` signature image
//! and its payloads, then [`verify_signature`]; and the importer's [`TrustPolicy`].

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::io::AsyncReadExt as _;

use super::TrustError;
use super::cosign::{
    MAX_PAYLOAD_BYTES, MAX_SIGNATURE_LAYERS, MAX_SIGNATURE_MANIFEST_BYTES, SignedIdentity,
    TrustedKeys, VerifiedBy, verify_signature,
};
use super::keyless::{Check, KeylessPolicy, bundle, legacy};
use crate::oci::{
    Descriptor, Digest, ImageManifest, ImageSource, MEDIA_COSIGN_SIMPLESIGNING, OciError,
    Reference, ReferrerManifest,
};

/// Verifies the cosign signature of `signed_digest` in the repository of `reference`, reading
/// the `sha256-<hex>.sig` manifest and its payloads from `source`; the signature must name
/// `identity` (the repository asked for, below any registry host and mirror namespace).
pub async fn verify_image<S: ImageSource>(
    source: &S,
    trusted: &TrustedKeys,
    reference: &Reference,
    identity: &SignedIdentity,
    signed_digest: &Digest,
) -> Result<VerifiedBy, TrustError> {
    if trusted.is_empty() {
        return Err(TrustError::NoTrustedKeys {
            image: image_name(reference, signed_digest),
        });
    }
    verify_sig_tag(
        source,
        reference,
        signed_digest,
        |image, _, manifest, fetch| {
            verify_signature(trusted, image, identity, signed_digest, manifest, fetch)
        },
    )
    .await
}

/// Verifies the keyless signature of `signed_digest` (see [`verify_image`]) under `policy`:
/// the `.sig` tag form first, then Sigstore bundles among the image's referrers.
pub async fn verify_image_keyless<S: ImageSource>(
    source: &S,
    policy: &KeylessPolicy,
    reference: &Reference,
    identity: &SignedIdentity,
    signed_digest: &Digest,
) -> Result<VerifiedBy, TrustError> {
    match verify_sig_tag_keyless(source, policy, reference, identity, signed_digest).await {
        Err(TrustError::Unsigned { signature_ref, .. })
        | Err(TrustError::NoKeylessSignature { signature_ref, .. }) => {
            match verify_referrers(source, policy, reference, identity, signed_digest).await? {
                Some(by) => Ok(by),
                None => Err(TrustError::NoKeylessSignature {
                    image: image_name(reference, signed_digest),
                    signature_ref,
                }),
            }
        }
        other => other,
    }
}

/// Verifies the Sigstore bundles among the referrers of `signed_digest` (the referrers API of
/// a registry, else the referrers tag `sha256-<hex>`): `Ok(None)` when there is none; the
/// first bundle that passes, or the first bundle's refusal. A referrer whose `subject` is not
/// `signed_digest` is ignored, whatever it carries.
async fn verify_referrers<S: ImageSource>(
    source: &S,
    policy: &KeylessPolicy,
    reference: &Reference,
    identity: &SignedIdentity,
    signed_digest: &Digest,
) -> Result<Option<VerifiedBy>, TrustError> {
    let image = image_name(reference, signed_digest);
    let malformed = |reason: String| TrustError::Keyless {
        image: image.clone(),
        check: Check::Malformed,
        reason,
    };
    let referrers = match source
        .referrers(reference, signed_digest, Some(bundle::MEDIA_BUNDLE))
        .await
    {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(e @ (OciError::Malformed { .. } | OciError::Decode { .. })) => {
            return Err(malformed(e.to_string()));
        }
        Err(source) => {
            return Err(TrustError::Fetch {
                image: image.clone(),
                signature_ref: reference
                    .with_tag(&bundle::referrers_tag(signed_digest))
                    .to_string(),
                source,
            });
        }
    };
    let fetch_err = |source: OciError| TrustError::Fetch {
        image: image.clone(),
        signature_ref: referrers.location.clone(),
        source,
    };
    let mut first_failure = None;
    for d in referrers.listed.iter().take(bundle::MAX_REFERRERS) {
        let d = &d.descriptor;
        let m = source
            .manifest(reference, &d.digest, MAX_SIGNATURE_MANIFEST_BYTES)
            .await
            .map_err(fetch_err)?;
        let m = match ReferrerManifest::parse_for(&m, signed_digest) {
            Ok(m) => m,
            Err(why) => {
                tracing::warn!(
                    "{image}: referrer {} listed at {} ignored: {why}",
                    d.digest,
                    referrers.location
                );
                continue;
            }
        };
        let Some(layer) = m
            .layers
            .first()
            .filter(|l| l.media_type == bundle::MEDIA_BUNDLE)
        else {
            continue;
        };
        let verdict = match read_blob(source, reference, layer, bundle::MAX_BUNDLE_BYTES).await {
            Ok(b) => bundle::evidence(&b)
                .map_err(&malformed)
                .and_then(|ev| policy.verify(&image, identity, signed_digest, &ev)),
            Err(PayloadFailure::Fetch(e)) => Err(fetch_err(e)),
            Err(PayloadFailure::Tampered { what, source }) => Err(TrustError::Tampered {
                image: image.clone(),
                reason: what,
                source: Some(source),
            }),
        };
        match verdict {
            Ok(by) => {
                return Ok(Some(VerifiedBy {
                    signature_manifest: Some(d.digest.clone()),
                    ..by
                }));
            }
            Err(e) => {
                first_failure.get_or_insert(e);
            }
        }
    }
    match first_failure {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// The `.sig` tag form of [`verify_image_keyless`].
async fn verify_sig_tag_keyless<S: ImageSource>(
    source: &S,
    policy: &KeylessPolicy,
    reference: &Reference,
    identity: &SignedIdentity,
    signed_digest: &Digest,
) -> Result<VerifiedBy, TrustError> {
    verify_sig_tag(
        source,
        reference,
        signed_digest,
        |image, sig_ref, manifest, fetch| {
            legacy::verify_manifest(
                policy,
                image,
                sig_ref,
                identity,
                signed_digest,
                manifest,
                fetch,
            )
        },
    )
    .await
}

fn image_name(reference: &Reference, signed_digest: &Digest) -> String {
    Reference {
        digest: Some(signed_digest.clone()),
        ..reference.clone()
    }
    .to_string()
}

/// The payload reader handed to a signature check.
type FetchPayload<'a> = dyn FnMut(&Descriptor) -> Result<Vec<u8>, TrustError> + 'a;

/// Fetches the `sha256-<hex>.sig` manifest of `signed_digest` and its simple-signing payloads,
/// then runs `check(image, signature_ref, manifest, fetch_payload)`.
async fn verify_sig_tag<S, C>(
    source: &S,
    reference: &Reference,
    signed_digest: &Digest,
    check: C,
) -> Result<VerifiedBy, TrustError>
where
    S: ImageSource,
    C: FnOnce(&str, &str, &[u8], &mut FetchPayload<'_>) -> Result<VerifiedBy, TrustError>,
{
    let image = image_name(reference, signed_digest);
    let sig_ref = reference.with_tag(&signed_digest.signature_tag());
    let fetch_err = |source: OciError| TrustError::Fetch {
        image: image.clone(),
        signature_ref: sig_ref.to_string(),
        source,
    };
    let tampered = |reason: String| TrustError::tampered(&image, reason);
    let descriptor = match source.resolve(&sig_ref).await {
        Ok(Some(d)) => d,
        Ok(None) | Err(OciError::NotFound(_)) => {
            return Err(TrustError::Unsigned {
                image: image.clone(),
                signature_ref: sig_ref.to_string(),
            });
        }
        Err(e) => return Err(fetch_err(e)),
    };
    if descriptor.is_index() {
        return Err(tampered(format!(
            "{sig_ref} is an index ({}), not a signature manifest",
            descriptor.media_type
        )));
    }
    let manifest = match source
        .manifest(&sig_ref, &descriptor.digest, MAX_SIGNATURE_MANIFEST_BYTES)
        .await
    {
        Ok(m) => m,
        Err(e @ (OciError::DigestMismatch { .. } | OciError::Limit(_))) => {
            return Err(TrustError::tampered_by(
                &image,
                format!("signature manifest {sig_ref}"),
                e,
            ));
        }
        Err(e) => return Err(fetch_err(e)),
    };
    // Fetch the payloads up front (async), then verify synchronously.
    let mut payloads: BTreeMap<Digest, Result<Vec<u8>, PayloadFailure>> = BTreeMap::new();
    if let Ok(parsed) = serde_json::from_slice::<ImageManifest>(&manifest) {
        for layer in parsed
            .layers
            .iter()
            .filter(|l| l.media_type == MEDIA_COSIGN_SIMPLESIGNING)
            .take(MAX_SIGNATURE_LAYERS)
        {
            if layer.size > MAX_PAYLOAD_BYTES || payloads.contains_key(&layer.digest) {
                continue;
            }
            let got = read_blob(source, &sig_ref, layer, MAX_PAYLOAD_BYTES).await;
            payloads.insert(layer.digest.clone(), got);
        }
    }
    let sig_ref_text = sig_ref.to_string();
    let by = check(
        &image,
        &sig_ref_text,
        &manifest,
        &mut |layer: &Descriptor| match payloads.get(&layer.digest) {
            Some(Ok(bytes)) => Ok(bytes.clone()),
            Some(Err(_)) => match payloads.remove(&layer.digest) {
                Some(Err(PayloadFailure::Tampered { what, source })) => Err(TrustError::Tampered {
                    image: image.clone(),
                    reason: what,
                    source: Some(source),
                }),
                Some(Err(PayloadFailure::Fetch(source))) => Err(TrustError::Fetch {
                    image: image.clone(),
                    signature_ref: sig_ref.to_string(),
                    source,
                }),
                _ => unreachable!("checked above"),
            },
            None => Err(TrustError::tampered(
                &image,
                format!("payload {} was not fetched", layer.digest),
            )),
        },
    )?;
    Ok(VerifiedBy {
        signature_manifest: Some(descriptor.digest),
        ..by
    })
}

/// Why a payload could not be read.
enum PayloadFailure {
    /// The content is wrong or missing (a source reports a digest mismatch as `InvalidData`).
    Tampered {
        /// The payload.
        what: String,
        /// What the source reported.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The source failed (network, I/O): no verdict on the signature.
    Fetch(OciError),
}

/// Reads one payload or bundle blob, at most `limit` + 1 bytes.
async fn read_blob<S: ImageSource>(
    source: &S,
    sig_ref: &Reference,
    layer: &Descriptor,
    limit: u64,
) -> Result<Vec<u8>, PayloadFailure> {
    let what = format!("payload {} of {sig_ref}", layer.digest);
    let reader = source.blob(sig_ref, layer).await.map_err(|e| match e {
        OciError::DigestMismatch { .. } | OciError::Limit(_) | OciError::NotFound(_) => {
            PayloadFailure::Tampered {
                what: what.clone(),
                source: Box::new(e),
            }
        }
        e => PayloadFailure::Fetch(e),
    })?;
    let mut buf = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                PayloadFailure::Tampered {
                    what: what.clone(),
                    source: Box::new(e),
                }
            } else {
                PayloadFailure::Fetch(OciError::io(what.clone(), e))
            }
        })?;
    Ok(buf)
}

/// How signatures are checked.
#[derive(Debug, Clone)]
pub enum Verifier {
    /// Cosign key-based signatures (legacy `.sig` tags) by one of these keys.
    Keys(TrustedKeys),
    /// Keyless signatures (Fulcio certificate, Rekor entry) under an offline trusted root.
    Keyless(Arc<KeylessPolicy>),
    /// A signature by one of these keys, or else a keyless one.
    Either(TrustedKeys, Arc<KeylessPolicy>),
}

/// The outcome of [`TrustPolicy::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// A signature verified.
    Verified(VerifiedBy),
    /// Verification is switched off (`--insecure-skip-signature-verification`).
    Skipped,
}

impl Verification {
    /// Whether the content was verified.
    pub fn is_verified(&self) -> bool {
        matches!(self, Verification::Verified(_))
    }
}

/// The importer's signature policy: what to verify with, or an explicit skip.
#[derive(Debug, Clone)]
pub struct TrustPolicy {
    /// The verifier.
    pub verifier: Verifier,
    /// Skip verification entirely (insecure, explicit).
    pub skip: bool,
}

impl TrustPolicy {
    /// Verify with these keys.
    pub fn keys(keys: TrustedKeys) -> Self {
        TrustPolicy {
            verifier: Verifier::Keys(keys),
            skip: false,
        }
    }

    /// Verify with these keys and, when `keyless` is given, keyless signatures under it
    /// (a key signature is tried first).
    pub fn keys_or_keyless(keys: TrustedKeys, keyless: Option<Arc<KeylessPolicy>>) -> Self {
        let verifier = match keyless {
            None => Verifier::Keys(keys),
            Some(k) if keys.is_empty() => Verifier::Keyless(k),
            Some(k) => Verifier::Either(keys, k),
        };
        TrustPolicy {
            verifier,
            skip: false,
        }
    }

    /// Whether anything can verify (a key, or a keyless policy).
    pub fn can_verify(&self) -> bool {
        match &self.verifier {
            Verifier::Keys(k) => !k.is_empty(),
            Verifier::Keyless(_) | Verifier::Either(..) => true,
        }
    }

    /// Verify nothing (`--insecure-skip-signature-verification`).
    pub fn insecure_skip() -> Self {
        TrustPolicy {
            verifier: Verifier::Keys(TrustedKeys::new()),
            skip: true,
        }
    }

    /// Verifies the signature of `digest` (the top-level manifest or index that `reference`
    /// resolved to) as found in `source`, made for the repository `identity`.
    pub async fn verify<S: ImageSource>(
        &self,
        source: &S,
        reference: &Reference,
        identity: &SignedIdentity,
        digest: &Digest,
    ) -> Result<Verification, TrustError> {
        if self.skip {
            return Ok(Verification::Skipped);
        }
        let by = match &self.verifier {
            Verifier::Keys(keys) => verify_image(source, keys, reference, identity, digest).await,
            Verifier::Keyless(policy) => {
                verify_image_keyless(source, policy, reference, identity, digest).await
            }
            Verifier::Either(keys, policy) => {
                match verify_image(source, keys, reference, identity, digest).await {
                    Err(TrustError::UnknownKey { .. } | TrustError::NoTrustedKeys { .. }) => {
                        verify_image_keyless(source, policy, reference, identity, digest).await
                    }
                    other => other,
                }
            }
        };
        by.map(Verification::Verified)
    }
}
