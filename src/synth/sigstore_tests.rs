//! Unit tests of the test kit's Sigstore stack and of each keyless check it exercises.
use super::*;
use crate::trust::keyless::{Check, KeylessPolicy, TrustedRoot, legacy};
use crate::trust::{SignedIdentity, TrustError};

fn policy(stack: &TestSigstore) -> KeylessPolicy {
    KeylessPolicy {
        root: TrustedRoot::parse(stack.trusted_root_json().as_bytes(), "kit").unwrap(),
        identities: vec![
            crate::trust::keyless::Identity::new(TEST_ISSUER, "", r"@test-kit\.example$").unwrap(),
        ],
    }
}

fn verify(
    stack: &TestSigstore,
    p: &KeylessPolicy,
    opts: &KeylessSign,
) -> Result<String, TrustError> {
    let d = Digest::of(b"image");
    let sig = stack.sign_image(None, "ghcr.io/siderolabs/imager", &d, opts);
    legacy::verify_manifest(
        p,
        "img",
        "sig",
        &SignedIdentity::repository("siderolabs/imager"),
        &d,
        &sig.manifest,
        |_| Ok(sig.payload.clone()),
    )
    .map(|by| by.key_fingerprint)
}

fn check_of(r: Result<String, TrustError>) -> Check {
    match r {
        Err(TrustError::Keyless { check, .. }) => check,
        other => panic!("expected a keyless refusal, got {other:?}"),
    }
}

#[test]
fn good_signature_verifies_and_each_bad_one_names_its_check() {
    let stack = TestSigstore::new("unit");
    let p = policy(&stack);
    assert_eq!(
        verify(&stack, &p, &KeylessSign::default()).unwrap(),
        format!("keyless:{TEST_SUBJECT} ({TEST_ISSUER})")
    );
    let bad = |f: &dyn Fn(&mut KeylessSign)| {
        let mut o = KeylessSign::default();
        f(&mut o);
        check_of(verify(&stack, &p, &o))
    };
    assert_eq!(
        bad(&|o| o.subject = "mallory@evil.example".into()),
        Check::Identity
    );
    assert_eq!(
        bad(&|o| o.issuer = "https://evil.example".into()),
        Check::Issuer
    );
    assert_eq!(
        bad(&|o| o.leaf_validity = (-1200, -600)),
        Check::CertificateValidity
    );
    assert_eq!(bad(&|o| o.forge_entry = true), Check::TransparencyLog);
    assert_eq!(
        bad(&|o| o.payload_digest = Some(Digest::of(b"other"))),
        Check::Digest
    );
    // Another CA (logged by our log, so only the chain check can refuse it).
    let other = TestSigstore::new("other");
    let mixed_stack = other.clone().with_log_of(&stack);
    assert_eq!(
        check_of(verify(&mixed_stack, &p, &KeylessSign::default())),
        Check::CertificateChain
    );
    // A CA outside its validFor at the integrated time is refused by the chain check too.
    let late = KeylessSign {
        integrated_time: CA_VALIDITY.1 as i64 + 10,
        ..KeylessSign::default()
    };
    assert_eq!(check_of(verify(&stack, &p, &late)), Check::CertificateChain);
    // The log's key from another stack: the SET check.
    assert_eq!(
        check_of(verify(
            &stack,
            &mixed_with_log(&p, &other),
            &KeylessSign::default()
        )),
        Check::TransparencyLog
    );
}

fn mixed_with_log(p: &KeylessPolicy, other: &TestSigstore) -> KeylessPolicy {
    let mut q = p.clone();
    q.root.logs = policy(other).root.logs;
    q
}

#[test]
fn rekor_body_must_record_this_signature() {
    let stack = TestSigstore::new("unit");
    let p = policy(&stack);
    let d = Digest::of(b"image");
    let (layer, payload) =
        stack.keyless_layer("ghcr.io/siderolabs/imager", &d, &KeylessSign::default());
    let mut ev = legacy::evidence(&layer, payload).unwrap();
    let id = SignedIdentity::repository("siderolabs/imager");
    assert!(p.verify("img", &id, &d, &ev).is_ok());
    // The same entry and SET, but a payload signed again (another ECDSA signature value
    // is not possible with RFC 6979; use a body that records another hash instead).
    let other = stack.keyless_layer(
        "ghcr.io/siderolabs/imager",
        &Digest::of(b"x"),
        &KeylessSign::default(),
    );
    let other_ev = legacy::evidence(&other.0, other.1).unwrap();
    ev.entry.body = other_ev.entry.body.clone();
    // Re-sign the entry with the log key so only the body check can refuse it.
    ev.entry.set = stack.log_key.sign_der(&ev.entry.signed_payload());
    match p.verify("img", &id, &d, &ev) {
        Err(TrustError::Keyless { check, .. }) => assert_eq!(check, Check::LogEntryBody),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bundle_verifies_and_bad_ones_name_their_check() {
    let stack = TestSigstore::new("unit");
    let p = policy(&stack);
    let subject = Descriptor::for_bytes(MEDIA_OCI_INDEX, b"image index");
    let id = SignedIdentity::repository("siderolabs/imager");
    let run = |opts: &KeylessSign| {
        let r = stack.bundle_referrer("ghcr.io/siderolabs/imager", &subject, opts);
        let ev = bundle::evidence(&r.bundle.0).unwrap();
        p.verify("img", &id, &subject.digest, &ev)
    };
    assert!(run(&KeylessSign::default()).is_ok());
    let check = |opts: KeylessSign| check_of(run(&opts).map(|b| b.key_fingerprint));
    assert_eq!(
        check(KeylessSign {
            subject: "x@evil.example".into(),
            ..KeylessSign::default()
        }),
        Check::Identity
    );
    assert_eq!(
        check(KeylessSign {
            forge_entry: true,
            ..KeylessSign::default()
        }),
        Check::TransparencyLog
    );
    assert_eq!(
        check(KeylessSign {
            payload_digest: Some(Digest::of(b"other")),
            ..KeylessSign::default()
        }),
        Check::Digest
    );
    assert_eq!(
        check(KeylessSign {
            leaf_validity: (-1200, -600),
            ..KeylessSign::default()
        }),
        Check::CertificateValidity
    );
    // A DSSE signature is over the PAE, not the bare payload: a bundle whose envelope
    // payload is swapped fails the signature check.
    let r = stack.bundle_referrer(
        "ghcr.io/siderolabs/imager",
        &subject,
        &KeylessSign::default(),
    );
    let mut ev = bundle::evidence(&r.bundle.0).unwrap();
    ev.payload = bundle::statement("ghcr.io/siderolabs/imager", &Digest::of(b"other"));
    assert_eq!(
        check_of(
            p.verify("img", &id, &subject.digest, &ev)
                .map(|b| b.key_fingerprint)
        ),
        Check::Signature
    );
}

#[test]
fn deterministic() {
    let a = TestSigstore::new("x");
    let b = TestSigstore::new("x");
    assert_eq!(a.trusted_root_json(), b.trusted_root_json());
    let d = Digest::of(b"i");
    assert_eq!(
        a.sign_image(None, "r", &d, &KeylessSign::default())
            .manifest,
        b.sign_image(None, "r", &d, &KeylessSign::default())
            .manifest
    );
}
