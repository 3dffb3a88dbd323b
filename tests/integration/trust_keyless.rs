//! Keyless (Sigstore) verification offline, through `image-factory import` with the real
//! binary: a release signed keyless by the test kit's Sigstore stack imports against the kit's
//! `trusted_root.json` and identity; each bad signature is refused with the check it failed
//! named, and nothing is stored.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::release::mini_release_signed;
use crate::import::{key, release, stderr};
use image_factory::oci::Digest;
use image_factory::synth::sigstore::{KeylessSign, TEST_ISSUER, TestSigstore};

const KIT: &str = "image-factory test kit";

/// Writes `stack`'s trusted root and runs `import` of the layout `dir/layout` with it and the
/// kit identity (no trusted key at all).
fn import_keyless(dir: &Path, stack: &TestSigstore) -> Output {
    let root = dir.join("trusted_root.json");
    std::fs::write(&root, stack.trusted_root_json()).expect("write root");
    import_trusting_root(&dir.join("layout"), &dir.join("data"), &root)
}

/// Runs `import SOURCE --data-dir DATA` trusting only the trusted root `root` and the kit
/// identity.
fn import_trusting_root(source: &Path, data: &Path, root: &Path) -> Output {
    let identities = serde_json::json!([
        {"issuer": TEST_ISSUER, "subjectRegExp": r"^release@test-kit\.example$"}
    ]);
    Command::new(crate::common::bin())
        .arg("import")
        .arg(source)
        .arg("--data-dir")
        .arg(data)
        .env("IF_TRUST_SIGSTORETRUSTEDROOT", root)
        .env("IF_TRUST_IDENTITIES", identities.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run import")
}

/// A mini release signed keyless with `opts` by the stack of `signer`, imported trusting the
/// stack of `trusted`.
fn import_signed(
    signer: TestSigstore,
    trusted: &str,
    opts: KeylessSign,
) -> (tempfile::TempDir, Output) {
    import_signed_as(signer, trusted, opts, false)
}

/// [`import_signed`] with the signatures as `.sig` tags or, when `bundles`, as Sigstore
/// bundle referrers.
fn import_signed_as(
    signer: TestSigstore,
    trusted: &str,
    opts: KeylessSign,
    bundles: bool,
) -> (tempfile::TempDir, Output) {
    let t = tempfile::tempdir().expect("tmp");
    mini_release_signed(
        &t.path().join("layout"),
        "v1.11.0",
        key(1),
        Some((signer, opts)),
        bundles,
        4096,
    );
    let out = import_keyless(t.path(), &TestSigstore::new(trusted));
    (t, out)
}

fn refused(opts: KeylessSign, signer: TestSigstore, expect: &[&str]) {
    refused_as(opts, signer, false, expect)
}

fn refused_as(opts: KeylessSign, signer: TestSigstore, bundles: bool, expect: &[&str]) {
    let (t, out) = import_signed_as(signer, KIT, opts, bundles);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "import unexpectedly succeeded: {err}"
    );
    assert!(
        err.contains("keyless signature rejected"),
        "not a keyless refusal: {err}"
    );
    for e in expect {
        assert!(err.contains(e), "expected {e:?} in: {err}");
    }
    let data = t.path().join("data");
    assert!(
        release(&data, "v1.11.0").is_none(),
        "a refused import became visible"
    );
    // Nothing stored: no blob files at all.
    let stored = walk_files(&data.join("blobs"));
    assert!(stored.is_empty(), "refused import stored {stored:?}");
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn keyless_signed_release_imports_offline() {
    let (t, out) = import_signed(TestSigstore::new(KIT), KIT, KeylessSign::default());
    let err = stderr(&out);
    assert!(out.status.success(), "import failed: {err}");
    assert!(err.contains("imported v1.11.0"), "{err}");
    let r = release(&t.path().join("data"), "v1.11.0").expect("release visible");
    assert!(!r.partial);
}

#[test]
fn wrong_identity_is_refused() {
    refused(
        KeylessSign {
            subject: "mallory@test-kit.example.evil".into(),
            ..KeylessSign::default()
        },
        TestSigstore::new(KIT),
        &[
            "identity subject check failed",
            "mallory@test-kit.example.evil",
        ],
    );
}

#[test]
fn wrong_issuer_is_refused() {
    refused(
        KeylessSign {
            issuer: "https://accounts.evil.example".into(),
            ..KeylessSign::default()
        },
        TestSigstore::new(KIT),
        &[
            "identity issuer check failed",
            "https://accounts.evil.example",
        ],
    );
}

#[test]
fn certificate_outside_validity_at_integrated_time_is_refused() {
    refused(
        KeylessSign {
            leaf_validity: (-1200, -600),
            ..KeylessSign::default()
        },
        TestSigstore::new(KIT),
        &["certificate validity at the integrated time check failed"],
    );
}

#[test]
fn forged_rekor_entry_is_refused() {
    refused(
        KeylessSign {
            forge_entry: true,
            ..KeylessSign::default()
        },
        TestSigstore::new(KIT),
        &["Rekor signed entry timestamp check failed"],
    );
}

#[test]
fn digest_mismatch_is_refused() {
    refused(
        KeylessSign {
            payload_digest: Some(Digest::of(b"another image")),
            ..KeylessSign::default()
        },
        TestSigstore::new(KIT),
        &["artifact digest check failed"],
    );
}

#[test]
fn chain_to_an_unknown_root_is_refused() {
    // Another CA, logged by the trusted log: only the chain check can refuse it.
    refused(
        KeylessSign::default(),
        TestSigstore::new("someone else's fulcio").with_log_of(&TestSigstore::new(KIT)),
        &[
            "certificate chain check failed",
            "no certificate authority of the trusted root",
        ],
    );
}

#[test]
fn entries_of_an_unknown_log_are_refused() {
    refused(
        KeylessSign::default(),
        TestSigstore::new("someone else's sigstore"),
        &[
            "Rekor signed entry timestamp check failed",
            "not a transparency log of the trusted root",
        ],
    );
}

#[test]
fn default_identity_is_sideros() {
    // With no trust.identities the identity is upstream's Sidero default, which the kit's
    // signer is not.
    let t = tempfile::tempdir().expect("tmp");
    mini_release_signed(
        &t.path().join("layout"),
        "v1.11.0",
        key(1),
        Some((TestSigstore::new(KIT), KeylessSign::default())),
        false,
        4096,
    );
    let root = t.path().join("trusted_root.json");
    std::fs::write(&root, TestSigstore::new(KIT).trusted_root_json()).expect("write");
    let out = Command::new(crate::common::bin())
        .arg("import")
        .arg(t.path().join("layout"))
        .arg("--data-dir")
        .arg(t.path().join("data"))
        .env("IF_TRUST_SIGSTORETRUSTEDROOT", &root)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("identity issuer check failed"), "{err}");
    assert!(err.contains("https://accounts.google.com"), "{err}");
    assert!(err.contains(TEST_ISSUER), "{err}");
}

#[test]
fn sigstore_bundle_referrers_import_offline() {
    let (t, out) = import_signed_as(TestSigstore::new(KIT), KIT, KeylessSign::default(), true);
    let err = stderr(&out);
    assert!(out.status.success(), "import failed: {err}");
    assert!(release(&t.path().join("data"), "v1.11.0").is_some());
}

#[test]
fn bad_sigstore_bundles_are_refused() {
    refused_as(
        KeylessSign {
            issuer: "https://accounts.evil.example".into(),
            ..KeylessSign::default()
        },
        TestSigstore::new(KIT),
        true,
        &["identity issuer check failed"],
    );
    refused_as(
        KeylessSign {
            payload_digest: Some(Digest::of(b"another image")),
            ..KeylessSign::default()
        },
        TestSigstore::new(KIT),
        true,
        &["artifact digest check failed"],
    );
    refused_as(
        KeylessSign {
            forge_entry: true,
            ..KeylessSign::default()
        },
        TestSigstore::new(KIT),
        true,
        &["Rekor signed entry timestamp check failed"],
    );
}

/// `bundle create` from a registry copies the `.sig` tags and the Sigstore bundle referrers,
/// and the bundle imports with keyless verification and no network.
#[tokio::test(flavor = "multi_thread")]
async fn bundle_create_carries_keyless_signatures_and_bundles() {
    for bundles in [false, true] {
        let Some(reg) = crate::common::registry::start() else {
            return;
        };
        let t = tempfile::tempdir().expect("tmp");
        mini_release_signed(
            &t.path().join("layout"),
            "v1.11.0",
            key(1),
            Some((TestSigstore::new(KIT), KeylessSign::default())),
            bundles,
            4096,
        );
        crate::common::registry::push_layout(&t.path().join("layout"), &reg.addr, "mirror").await;
        let from = format!("{}/mirror", reg.addr);
        let out_path = t.path().join("bundle.tar");
        let out = tokio::task::spawn_blocking({
            let (out_path, from) = (out_path.clone(), from.clone());
            move || {
                Command::new(crate::common::bin())
                    .args(["bundle", "create", "--from-registry", &from])
                    .args(["--version", "v1.11.0", "--arch", "amd64", "--out"])
                    .arg(&out_path)
                    .stdin(Stdio::null())
                    .output()
                    .expect("run")
            }
        })
        .await
        .expect("join");
        assert!(
            out.status.success(),
            "bundle create failed (bundles: {bundles}): {}",
            stderr(&out)
        );
        drop(reg);
        // The air-gapped side: the bundle alone, keyless trust only.
        let side = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(side.path()).expect("mkdir");
        let root = side.path().join("trusted_root.json");
        std::fs::write(&root, TestSigstore::new(KIT).trusted_root_json()).expect("write");
        let out = import_trusting_root(&out_path, &side.path().join("data"), &root);
        assert!(
            out.status.success(),
            "bundle import failed (bundles: {bundles}): {}",
            stderr(&out)
        );
        assert!(release(&side.path().join("data"), "v1.11.0").is_some());
    }
}

/// The test kit's release, signed both ways (`dev synth-release --keyless`, with the keyless
/// signatures as `.sig` layers or as bundle referrers), imports with the site key alone and
/// with the kit's trusted root alone.
#[test]
fn testkit_release_signed_both_ways_imports_either_way() {
    if crate::common::kit::kit_inputs().is_none() {
        return;
    }
    for bundles in [false, true] {
        let t = tempfile::tempdir().expect("tmp");
        let mut opts = image_factory::synth::SynthOptions::new(&t.path().join("kit"));
        opts.versions = vec!["v1.11.0".into()];
        opts.keyless = true;
        opts.keyless_bundles = bundles;
        let report = image_factory::synth::synth_release(&opts).expect("synth");
        let root = report.trusted_root.expect("trusted root written");
        let keyed = Command::new(crate::common::bin())
            .arg("import")
            .arg(&report.bundle)
            .arg("--data-dir")
            .arg(t.path().join("keyed"))
            .arg("--trust-key")
            .arg(&report.public_key)
            .stdin(Stdio::null())
            .output()
            .expect("run");
        assert!(keyed.status.success(), "key import: {}", stderr(&keyed));
        let keyless = import_trusting_root(&report.bundle, &t.path().join("keyless"), &root);
        assert!(
            keyless.status.success(),
            "keyless import (bundles: {bundles}): {}",
            stderr(&keyless)
        );
        assert!(release(&t.path().join("keyless"), "v1.11.0").is_some());
    }
}
