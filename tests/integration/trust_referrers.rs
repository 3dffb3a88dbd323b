//! Sigstore bundles found through the OCI 1.1 referrers API (issue 20 point 4), against a
//! registry that serves them ONLY through the API (no `sha256-<hex>` tag, as ghcr.io holds what
//! cosign 3 attaches) and, for the fallback, ONLY through the tag schema: registry import,
//! `bundle create` and its offline import, and a referrer filed under another image ignored.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::layout_registry::{LayoutRegistry, Referrers};
use crate::common::release::mini_release_signed;
use crate::import::{key, release, stderr};
use image_factory::oci::Digest;
use image_factory::synth::sigstore::{KeylessSign, TEST_ISSUER, TestSigstore};

const KIT: &str = "image-factory test kit";

/// A mini release signed keyless with Sigstore bundle referrers (made with `opts`), in
/// `dir/layout`, and the kit's trusted root at `dir/trusted_root.json`.
fn keyless_release(dir: &Path, opts: KeylessSign) {
    mini_release_signed(
        &dir.join("layout"),
        "v1.11.0",
        key(1),
        Some((TestSigstore::new(KIT), opts)),
        true,
        4096,
    );
    std::fs::write(
        dir.join("trusted_root.json"),
        TestSigstore::new(KIT).trusted_root_json(),
    )
    .expect("write root");
}

/// Runs the binary with `args`, trusting only the kit's trusted root (in `dir`) and identity.
fn run_keyless(dir: &Path, args: &[&str]) -> Output {
    let identities = serde_json::json!([
        {"issuer": TEST_ISSUER, "subjectRegExp": r"^release@test-kit\.example$"}
    ]);
    Command::new(crate::common::bin())
        .args(args)
        .env(
            "IF_TRUST_SIGSTORETRUSTEDROOT",
            dir.join("trusted_root.json"),
        )
        .env("IF_TRUST_IDENTITIES", identities.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run")
}

/// `bundle create` of the v1.11.0 amd64 release from the registry repository `from` into `out`.
fn bundle_create(dir: &Path, from: &str, out: &Path) -> Output {
    let out = out.to_str().expect("utf-8 path");
    run_keyless(
        dir,
        &[
            "bundle",
            "create",
            "--from-registry",
            from,
            "--version",
            "v1.11.0",
            "--arch",
            "amd64",
            "--out",
            out,
        ],
    )
}

/// `import --from-registry <reg>/mirror --version v1.11.0 --data-dir dir/<data>`.
fn import_from(dir: &Path, reg: &LayoutRegistry, data: &str) -> Output {
    let from = format!("{}/mirror", reg.addr);
    let data = dir.join(data);
    run_keyless(
        dir,
        &[
            "import",
            "--from-registry",
            &from,
            "--version",
            "v1.11.0",
            "--data-dir",
            data.to_str().expect("utf-8 path"),
        ],
    )
}

fn asked(reg: &LayoutRegistry, what: &str) -> usize {
    reg.requests().iter().filter(|r| r.contains(what)).count()
}

/// The release imports from a registry holding its bundles only behind the referrers API, and
/// (the spec's client fallback) from one holding them only at the referrers tag, whose API
/// answers 404, or 400/405 as for an unknown route.
#[test]
fn registry_import_finds_bundles_through_the_referrers_api() {
    let modes = [
        Referrers::ApiOnly,
        Referrers::TagOnly(404),
        Referrers::TagOnly(400),
        Referrers::TagOnly(405),
    ];
    for mode in modes {
        let t = tempfile::tempdir().expect("tmp");
        keyless_release(t.path(), KeylessSign::default());
        let reg = LayoutRegistry::start(&t.path().join("layout"), "mirror", mode);
        let out = import_from(t.path(), &reg, "data");
        let err = stderr(&out);
        assert!(out.status.success(), "{mode:?}: import failed: {err}");
        let r = release(&t.path().join("data"), "v1.11.0").expect("release visible");
        assert!(!r.partial);
        // Every image was asked about through the API, filtered to Sigstore bundles.
        assert!(
            asked(&reg, "/referrers/sha256:") >= 6,
            "{mode:?}: {:?}",
            reg.requests()
        );
        assert!(
            asked(
                &reg,
                "artifactType=application%2Fvnd.dev.sigstore.bundle.v0.3%2Bjson"
            ) >= 6,
            "{:?}",
            reg.requests()
        );
        // Referrers tag lookups (`sha256-<hex>`, not the `.sig` tag).
        let tag_lookups = reg
            .requests()
            .iter()
            .filter(|r| r.contains("/manifests/sha256-") && !r.ends_with(".sig"))
            .count();
        match mode {
            // The API listed them: the tag schema was never needed.
            Referrers::ApiOnly => assert_eq!(tag_lookups, 0, "{:?}", reg.requests()),
            _ => assert!(tag_lookups >= 6, "{:?}", reg.requests()),
        }
    }
}

/// A referrers API answer that is not an image index is refused with the check named (not
/// read as one, and not a fall back to the tag).
#[test]
fn a_referrers_answer_that_is_not_an_index_is_refused() {
    let t = tempfile::tempdir().expect("tmp");
    keyless_release(t.path(), KeylessSign::default());
    let reg = LayoutRegistry::start(&t.path().join("layout"), "mirror", Referrers::ApiNotAnIndex);
    let out = import_from(t.path(), &reg, "data");
    let err = stderr(&out);
    assert!(!out.status.success(), "import succeeded: {err}");
    assert!(
        err.contains("keyless signature rejected: signature material check failed"),
        "{err}"
    );
    assert!(
        err.contains("expected application/vnd.oci.image.index.v1+json"),
        "{err}"
    );
    assert!(release(&t.path().join("data"), "v1.11.0").is_none());
}

/// `bundle create` from an API-only registry stores the bundles at the referrers tag of the
/// offline layout, and the bundle imports with keyless verification and no network.
#[test]
fn bundle_create_from_an_api_only_registry_imports_offline() {
    let t = tempfile::tempdir().expect("tmp");
    keyless_release(t.path(), KeylessSign::default());
    let reg = LayoutRegistry::start(&t.path().join("layout"), "mirror", Referrers::ApiOnly);
    let from = format!("{}/mirror", reg.addr);
    let bundle = t.path().join("bundle.tar");
    let out = bundle_create(t.path(), &from, &bundle);
    assert!(
        out.status.success(),
        "bundle create failed: {}",
        stderr(&out)
    );
    drop(reg);
    let data = t.path().join("offline");
    let out = run_keyless(
        t.path(),
        &[
            "import",
            bundle.to_str().expect("utf-8 path"),
            "--data-dir",
            data.to_str().expect("utf-8 path"),
        ],
    );
    assert!(
        out.status.success(),
        "offline import failed: {}",
        stderr(&out)
    );
    assert!(release(&data, "v1.11.0").is_some());
}

/// A bundle referrer whose manifest's `subject` is another digest is ignored even though the
/// bundle itself signs the right image: the import (from the API, and from the layout's tag)
/// fails with the "no keyless signature" refusal, and `bundle create` refuses the image as
/// unsigned.
#[test]
fn a_referrer_of_another_digest_is_ignored() {
    let t = tempfile::tempdir().expect("tmp");
    keyless_release(
        t.path(),
        KeylessSign {
            referrer_subject: Some(Digest::of(b"another image")),
            ..KeylessSign::default()
        },
    );
    let no_signature = |out: &Output, what: &str| {
        let err = stderr(out);
        assert!(
            !out.status.success(),
            "{what}: unexpectedly succeeded: {err}"
        );
        assert!(err.contains("no keyless signature"), "{what}: {err}");
        assert!(!err.contains("keyless signature rejected"), "{what}: {err}");
    };
    let reg = LayoutRegistry::start(&t.path().join("layout"), "mirror", Referrers::ApiOnly);
    let out = import_from(t.path(), &reg, "data");
    no_signature(&out, "registry import");
    assert!(asked(&reg, "/referrers/sha256:") >= 1);
    assert!(release(&t.path().join("data"), "v1.11.0").is_none());

    let layout = t.path().join("layout");
    let data = t.path().join("data2");
    let out = run_keyless(
        t.path(),
        &[
            "import",
            layout.to_str().expect("utf-8 path"),
            "--data-dir",
            data.to_str().expect("utf-8 path"),
        ],
    );
    no_signature(&out, "layout import");

    let from = format!("{}/mirror", reg.addr);
    let bundle = t.path().join("bundle.tar");
    let out = bundle_create(t.path(), &from, &bundle);
    let err = stderr(&out);
    assert!(!out.status.success(), "bundle create succeeded: {err}");
    assert!(err.contains("no cosign signature"), "{err}");
}

/// Releases on demand (the server's own registry import path) verify Sigstore bundles that the
/// registry serves only through the referrers API.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_demand_import_finds_bundles_through_the_referrers_api() {
    use crate::common::assets::{create_schematic, get};
    use image_factory::config::IdentityConfig;

    let t = tempfile::tempdir().expect("tmp");
    keyless_release(t.path(), KeylessSign::default());
    let reg = LayoutRegistry::start(&t.path().join("layout"), "mirror", Referrers::ApiOnly);
    let (addr, root) = (
        reg.addr.clone(),
        t.path().join("trusted_root.json").display().to_string(),
    );
    let s = crate::common::TestServer::start_with(move |c| {
        c.artifacts.core.registry = addr;
        c.artifacts.core.namespace = "mirror".into();
        c.trust.sigstore_trusted_root = root;
        c.trust.identities = vec![IdentityConfig {
            issuer: TEST_ISSUER.into(),
            issuer_reg_exp: String::new(),
            subject_reg_exp: r"^release@test-kit\.example$".into(),
        }];
    })
    .await;
    let id = create_schematic(&s, "customization: {}\n").await;
    // The first request waits for the listing and the import.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let got = loop {
        let got = get(&s, &format!("/image/{id}/v1.11.0/kernel-amd64"), &[]).await;
        if got.status != 404 || std::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(got.status, 200, "{}", got.text());
    let st: serde_json::Value = crate::common::client()
        .get(s.url("/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(st["releases"][0]["verified"], true, "{st}");
    assert!(
        asked(&reg, "/referrers/sha256:") >= 6,
        "{:?}",
        reg.requests()
    );
    s.stop().await;
}
