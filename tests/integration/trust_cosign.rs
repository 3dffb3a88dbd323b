//! Cosign key-based signatures: sign → verify round trip, and every rejection with its own
//! message, through an in-memory `ImageSource` that serves what a registry or bundle would.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use image_factory::oci::{
    BlobReader, Descriptor, Digest, ImageManifest, ImageSource, MEDIA_OCI_INDEX, OciError,
    Reference,
};
use image_factory::trust::{
    SignatureImage, SignedIdentity, SigningKey, TrustError, TrustPolicy, TrustedKeys, Verification,
    simple_signing_payload, verify_image, verify_signature,
};

/// Tags → descriptors and digests → bytes of one repository.
#[derive(Default)]
struct MemSource {
    tags: Mutex<HashMap<String, Descriptor>>,
    blobs: Mutex<HashMap<Digest, Vec<u8>>>,
    /// Make every blob read fail with this kind.
    fail_reads: Mutex<Option<std::io::ErrorKind>>,
}

/// A reader that fails at once.
struct Failing(std::io::ErrorKind);

impl tokio::io::AsyncRead for Failing {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        _buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Err(std::io::Error::new(self.0, "read failed")))
    }
}

impl MemSource {
    fn put(&self, bytes: &[u8]) {
        self.blobs
            .lock()
            .unwrap()
            .insert(Digest::of(bytes), bytes.to_vec());
    }
    /// Stores `sig` at its tag; `payload` lets a test serve other payload bytes.
    fn put_signature(&self, sig: &SignatureImage, payload: &[u8]) {
        self.blobs
            .lock()
            .unwrap()
            .insert(sig.payload_descriptor.digest.clone(), payload.to_vec());
        self.put(&sig.config);
        self.put(&sig.manifest);
        self.tags
            .lock()
            .unwrap()
            .insert(sig.tag.clone(), sig.manifest_descriptor.clone());
    }
}

impl ImageSource for MemSource {
    fn describe(&self) -> String {
        "memory".into()
    }
    async fn resolve(&self, reference: &Reference) -> Result<Option<Descriptor>, OciError> {
        let tag = reference.tag.clone().unwrap_or_default();
        Ok(self.tags.lock().unwrap().get(&tag).cloned())
    }
    async fn manifest(
        &self,
        _reference: &Reference,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>, OciError> {
        let b = self
            .blobs
            .lock()
            .unwrap()
            .get(digest)
            .cloned()
            .ok_or_else(|| OciError::NotFound(digest.to_string()))?;
        if b.len() as u64 > limit {
            return Err(OciError::Limit("manifest".into()));
        }
        if &Digest::of(&b) != digest {
            return Err(OciError::DigestMismatch {
                what: "manifest".into(),
                expected: digest.to_string(),
                actual: Digest::of(&b).to_string(),
            });
        }
        Ok(b)
    }
    async fn blob(
        &self,
        _reference: &Reference,
        descriptor: &Descriptor,
    ) -> Result<BlobReader, OciError> {
        if let Some(kind) = *self.fail_reads.lock().unwrap() {
            return Ok(Box::pin(Failing(kind)));
        }
        // Deliberately unverified: the verifier must check payload digests itself.
        let b = self
            .blobs
            .lock()
            .unwrap()
            .get(&descriptor.digest)
            .cloned()
            .ok_or_else(|| OciError::NotFound(descriptor.digest.to_string()))?;
        Ok(Box::pin(std::io::Cursor::new(b)))
    }
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_seed(&[seed; 32])
}

fn trusted(k: &SigningKey) -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.add_pem(&k.public_key_pem().unwrap(), "test.pub").unwrap();
    t
}

/// Signatures must name the whole repository of `r` (no mirror namespace).
fn id(r: &Reference) -> SignedIdentity {
    SignedIdentity::of(r)
}

fn imager() -> (Reference, Digest) {
    let r: Reference = "ghcr.io/siderolabs/imager:v1.11.0".parse().unwrap();
    (r, Digest::of(b"the imager index"))
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn payload_is_byte_exact() {
    let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        .parse()
        .unwrap();
    assert_eq!(
        String::from_utf8(simple_signing_payload("ghcr.io/siderolabs/imager", &d)).unwrap(),
        r#"{"critical":{"identity":{"docker-reference":"ghcr.io/siderolabs/imager"},"image":{"docker-manifest-digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},"type":"cosign container image signature"},"optional":null}"#
    );
}

#[test]
fn signature_image_shape_matches_cosign() {
    let (r, d) = imager();
    let sig = SignatureImage::sign(&key(1), &r.name(), &d);
    assert_eq!(sig.tag, format!("sha256-{}.sig", d.hex()));
    let m: ImageManifest = serde_json::from_slice(&sig.manifest).unwrap();
    assert_eq!(
        m.media_type.as_deref(),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    assert_eq!(
        m.config.media_type,
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(m.layers.len(), 1);
    let l = &m.layers[0];
    assert_eq!(
        l.media_type,
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    assert_eq!(l.digest, Digest::of(&sig.payload));
    let b64 = &l.annotations["dev.cosignproject.cosign/signature"];
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(der[0], 0x30, "ASN.1 DER SEQUENCE");
    // The config names the payload as its only diff ID, like go-containerregistry's.
    let cfg: serde_json::Value = serde_json::from_slice(&sig.config).unwrap();
    assert_eq!(
        cfg["rootfs"]["diff_ids"][0].as_str().unwrap(),
        l.digest.as_str()
    );
    // RFC 6979: the same input signs to the same bytes.
    assert_eq!(
        sig.manifest,
        SignatureImage::sign(&key(1), &r.name(), &d).manifest
    );
}

#[test]
fn round_trip_through_a_source() {
    let (r, d) = imager();
    let k = key(1);
    let src = MemSource::default();
    let sig = SignatureImage::sign(&k, &r.name(), &d);
    src.put_signature(&sig, &sig.payload);
    let by = block_on(verify_image(&src, &trusted(&k), &r, &id(&r), &d)).unwrap();
    assert_eq!(by.signature_manifest, Some(sig.manifest_descriptor.digest));
    assert_eq!(by.key_source, "test.pub");
    let policy = TrustPolicy::keys(trusted(&k));
    assert!(
        block_on(policy.verify(&src, &r, &id(&r), &d))
            .unwrap()
            .is_verified()
    );
    assert_eq!(
        block_on(TrustPolicy::insecure_skip().verify(&MemSource::default(), &r, &id(&r), &d))
            .unwrap(),
        Verification::Skipped
    );
}

#[test]
fn unsigned_is_rejected() {
    let (r, d) = imager();
    let err = block_on(verify_image(
        &MemSource::default(),
        &trusted(&key(1)),
        &r,
        &id(&r),
        &d,
    ))
    .unwrap_err();
    assert!(matches!(err, TrustError::Unsigned { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("ghcr.io/siderolabs/imager:v1.11.0@sha256:"),
        "{msg}"
    );
    assert!(msg.contains("not signed"), "{msg}");
    assert!(msg.contains(&d.signature_tag()), "{msg}");
}

#[test]
fn tampered_payload_is_rejected() {
    let (r, d) = imager();
    let k = key(1);
    let src = MemSource::default();
    let sig = SignatureImage::sign(&k, &r.name(), &d);
    let mut evil = sig.payload.clone();
    evil[10] ^= 1;
    src.put_signature(&sig, &evil);
    let err = block_on(verify_image(&src, &trusted(&k), &r, &id(&r), &d)).unwrap_err();
    assert!(matches!(err, TrustError::Tampered { .. }), "{err}");
    assert!(err.to_string().contains("tampered"), "{err}");
    assert!(
        err.to_string().contains("does not match its layer digest"),
        "{err}"
    );
}

#[test]
fn tampered_signature_annotation_is_rejected() {
    let (r, d) = imager();
    let k = key(1);
    let sig = SignatureImage::sign(&k, &r.name(), &d);
    let mut m: serde_json::Value = serde_json::from_slice(&sig.manifest).unwrap();
    m["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"] = "!!notbase64".into();
    let bytes = serde_json::to_vec(&m).unwrap();
    let err = verify_signature(&trusted(&k), "img", &id(&r), &d, &bytes, |_| {
        Ok(sig.payload.clone())
    })
    .unwrap_err();
    assert!(matches!(err, TrustError::Tampered { .. }), "{err}");
    assert!(err.to_string().starts_with("image img:"), "{err}");
}

#[test]
fn signature_for_another_digest_is_rejected() {
    let (r, d) = imager();
    let k = key(1);
    let src = MemSource::default();
    // A valid signature of another digest, replayed at this digest's tag.
    let other = SignatureImage::sign(&k, &r.name(), &Digest::of(b"another image"));
    let mut replay = other.clone();
    replay.tag = d.signature_tag();
    src.put_signature(&replay, &other.payload);
    let err = block_on(verify_image(&src, &trusted(&k), &r, &id(&r), &d)).unwrap_err();
    assert!(matches!(err, TrustError::DigestMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("signature is for another image"),
        "{err}"
    );
}

#[test]
fn unknown_key_is_rejected() {
    let (r, d) = imager();
    let src = MemSource::default();
    let sig = SignatureImage::sign(&key(2), &r.name(), &d);
    src.put_signature(&sig, &sig.payload);
    let err = block_on(verify_image(&src, &trusted(&key(1)), &r, &id(&r), &d)).unwrap_err();
    assert!(matches!(err, TrustError::UnknownKey { .. }), "{err}");
    assert!(
        err.to_string().contains("not signed by a trusted key"),
        "{err}"
    );
    // Trusting both keys accepts it.
    let mut both = trusted(&key(1));
    both.add_signing_key(&key(2), "second").unwrap();
    let by = block_on(verify_image(&src, &both, &r, &id(&r), &d)).unwrap();
    assert_eq!(by.key_source, "second");
}

#[test]
fn tampered_signature_manifest_is_rejected() {
    let (r, d) = imager();
    let k = key(1);
    let src = MemSource::default();
    let sig = SignatureImage::sign(&k, &r.name(), &d);
    src.put_signature(&sig, &sig.payload);
    // The tag still names the original digest, but the stored bytes changed.
    let mut evil = sig.manifest.clone();
    let n = evil.len();
    evil[n - 3] = b' ';
    src.blobs
        .lock()
        .unwrap()
        .insert(sig.manifest_descriptor.digest.clone(), evil);
    let err = block_on(verify_image(&src, &trusted(&k), &r, &id(&r), &d)).unwrap_err();
    assert!(matches!(err, TrustError::Tampered { .. }), "{err}");
}

#[test]
fn index_at_signature_tag_and_no_keys_are_rejected() {
    let (r, d) = imager();
    let src = MemSource::default();
    src.tags.lock().unwrap().insert(
        d.signature_tag(),
        Descriptor::for_bytes(MEDIA_OCI_INDEX, b"{}"),
    );
    let err = block_on(verify_image(&src, &trusted(&key(1)), &r, &id(&r), &d)).unwrap_err();
    assert!(matches!(err, TrustError::Tampered { .. }), "{err}");
    let err = block_on(verify_image(&src, &TrustedKeys::new(), &r, &id(&r), &d)).unwrap_err();
    assert!(matches!(err, TrustError::NoTrustedKeys { .. }), "{err}");
}

#[test]
fn distinct_messages() {
    let (r, d) = imager();
    let k = key(1);
    let mut messages = Vec::new();
    // unsigned
    messages.push(
        block_on(verify_image(
            &MemSource::default(),
            &trusted(&k),
            &r,
            &id(&r),
            &d,
        ))
        .unwrap_err()
        .to_string(),
    );
    // tampered
    let s = MemSource::default();
    let sig = SignatureImage::sign(&k, &r.name(), &d);
    s.put_signature(&sig, b"x");
    messages.push(
        block_on(verify_image(&s, &trusted(&k), &r, &id(&r), &d))
            .unwrap_err()
            .to_string(),
    );
    // unknown key
    let s = MemSource::default();
    let sig = SignatureImage::sign(&key(9), &r.name(), &d);
    s.put_signature(&sig, &sig.payload);
    messages.push(
        block_on(verify_image(&s, &trusted(&k), &r, &id(&r), &d))
            .unwrap_err()
            .to_string(),
    );
    // signed for another repository
    let s = MemSource::default();
    let sig = SignatureImage::sign(&k, "ghcr.io/siderolabs/installer", &d);
    s.put_signature(&sig, &sig.payload);
    messages.push(
        block_on(verify_image(&s, &trusted(&k), &r, &id(&r), &d))
            .unwrap_err()
            .to_string(),
    );
    let reasons: Vec<String> = messages
        .iter()
        .map(|m| m.split_once(": ").unwrap().1.chars().take(20).collect())
        .collect();
    for (i, a) in reasons.iter().enumerate() {
        for b in &reasons[i + 1..] {
            assert_ne!(a, b, "{messages:?}");
        }
    }
}

#[test]
fn trusted_keys_parsing() {
    let k1 = key(1);
    let k2 = key(2);
    let both = format!(
        "{}{}",
        k1.public_key_pem().unwrap(),
        k2.public_key_pem().unwrap()
    );
    let mut t = TrustedKeys::new();
    assert_eq!(t.add_pem(&both, "both.pub").unwrap(), 2);
    assert_eq!(
        t.add_pem(&k1.public_key_pem().unwrap(), "again").unwrap(),
        0
    );
    assert_eq!(t.len(), 2);
    assert!(t.keys()[0].fingerprint.starts_with("sha256:"));
    let err = t.add_pem("hello", "bad.pub").unwrap_err();
    assert!(err.to_string().contains("bad.pub"), "{err}");
    // A private key is not a trusted public key.
    let err = t
        .add_pem(&k1.to_pkcs8_pem().unwrap(), "priv.pem")
        .unwrap_err();
    assert!(err.to_string().contains("priv.pem"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.pub");
    std::fs::write(&p, k1.public_key_pem().unwrap()).unwrap();
    assert_eq!(TrustedKeys::from_files(&[&p]).unwrap().len(), 1);
    assert!(TrustedKeys::from_files(&[dir.path().join("missing.pub")]).is_err());
}

#[test]
fn payload_read_errors_are_classified() {
    let (r, d) = imager();
    let k = key(1);
    let src = MemSource::default();
    let sig = SignatureImage::sign(&k, &r.name(), &d);
    src.put_signature(&sig, &sig.payload);
    // A source reports content that does not match its digest as InvalidData: tampered.
    *src.fail_reads.lock().unwrap() = Some(std::io::ErrorKind::InvalidData);
    let err = block_on(verify_image(&src, &trusted(&k), &r, &id(&r), &d)).unwrap_err();
    assert!(matches!(err, TrustError::Tampered { .. }), "{err}");
    // A broken connection is no verdict on the signature.
    *src.fail_reads.lock().unwrap() = Some(std::io::ErrorKind::ConnectionReset);
    let err = block_on(verify_image(&src, &trusted(&k), &r, &id(&r), &d)).unwrap_err();
    assert!(matches!(err, TrustError::Fetch { .. }), "{err}");
    assert!(err.to_string().contains("cannot fetch signature"), "{err}");
}

#[test]
fn signature_of_another_repository_is_refused() {
    let (r, d) = imager();
    let k = key(1);
    // A valid signature of this very digest, but made for the installer (or any other image
    // the key signs), replayed at the imager's signature tag.
    for other in [
        "ghcr.io/siderolabs/installer",
        "ghcr.io/siderolabs/imager-evil",
        "ghcr.io/siderolabs/iscsi-tools",
        "registry.local:5000/mirror/siderolabs/installer",
    ] {
        let src = MemSource::default();
        let sig = SignatureImage::sign(&k, other, &d);
        src.put_signature(&sig, &sig.payload);
        let err = block_on(verify_image(&src, &trusted(&k), &r, &id(&r), &d)).unwrap_err();
        assert!(
            matches!(&err, TrustError::IdentityMismatch { signed, expected, .. }
                if signed == other && expected == "siderolabs/imager"),
            "{other}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("signature names another repository"), "{msg}");
        assert!(msg.contains(other), "{msg}");
    }
    // A payload without an identity names nothing.
    let src = MemSource::default();
    let sig = SignatureImage::sign(&k, "", &d);
    src.put_signature(&sig, &sig.payload);
    let err = block_on(verify_image(&src, &trusted(&k), &r, &id(&r), &d)).unwrap_err();
    assert!(
        matches!(&err, TrustError::IdentityMismatch { signed, .. } if signed == "no docker-reference"),
        "{err}"
    );
}

#[test]
fn signatures_made_at_a_mirror_name_verify() {
    let k = key(1);
    let d = Digest::of(b"the imager index");
    let upstream: Reference = "ghcr.io/siderolabs/imager:v1.11.0".parse().unwrap();
    let mirrored: Reference = "registry.local:5000/mirror/siderolabs/imager:v1.11.0"
        .parse()
        .unwrap();
    let identity = SignedIdentity::repository("siderolabs/imager");
    for (asked, signed_as) in [
        // Re-signed at the mirror's name, read from a bundle (upstream names) or the mirror.
        (&upstream, "registry.local:5000/mirror/siderolabs/imager"),
        (&mirrored, "registry.local:5000/mirror/siderolabs/imager"),
        // Signed upstream, read through the mirror.
        (&mirrored, "ghcr.io/siderolabs/imager"),
        // A docker-reference carrying a tag or digest names the same repository.
        (&upstream, "ghcr.io/siderolabs/imager:v1.11.0"),
    ] {
        let src = MemSource::default();
        let sig = SignatureImage::sign(&k, signed_as, &d);
        src.put_signature(&sig, &sig.payload);
        block_on(verify_image(&src, &trusted(&k), asked, &identity, &d))
            .unwrap_or_else(|e| panic!("{asked} signed as {signed_as}: {e}"));
    }
    // Without the namespace looked past, the mirror path must be signed as such.
    let src = MemSource::default();
    let sig = SignatureImage::sign(&k, "ghcr.io/siderolabs/imager", &d);
    src.put_signature(&sig, &sig.payload);
    let err = block_on(verify_image(
        &src,
        &trusted(&k),
        &mirrored,
        &id(&mirrored),
        &d,
    ));
    assert!(
        matches!(err, Err(TrustError::IdentityMismatch { .. })),
        "{err:?}"
    );
}
