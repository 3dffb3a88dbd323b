//! `import --from-registry` and `bundle create` against a real registry (Debian's
//! `docker-registry` on loopback), and the bundle it writes imported elsewhere: same release.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use crate::common::release::mini_release;
use image_factory::catalog::{Release, ReleaseStore};
use image_factory::store::{BlobStore, MetaStore, SledStore};
use image_factory::trust::SigningKey;

fn run(args: &[&str]) -> Output {
    Command::new(crate::common::bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run")
}

fn release(data: &Path, tag: &str) -> Option<std::sync::Arc<Release>> {
    let meta: Arc<dyn MetaStore> = Arc::new(SledStore::open(&data.join("meta")).expect("open"));
    let blobs = BlobStore::open(&data.join("blobs"), meta).expect("open blobs");
    ReleaseStore::new(&blobs).get(tag).expect("get")
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_import_and_bundle_round_trip() {
    let Some(reg) = crate::common::registry::start() else {
        return;
    };
    let t = tempfile::tempdir().expect("tmp");
    let key = SigningKey::from_seed(&[3; 32]);
    mini_release(&t.path().join("layout"), "v1.11.0", key.clone(), 1 << 20);
    let pubkey = t.path().join("k.pub");
    std::fs::write(&pubkey, key.public_key_pem().expect("pem")).expect("write");
    crate::common::registry::push_layout(&t.path().join("layout"), &reg.addr, "mirror").await;
    let from = format!("{}/mirror", reg.addr);

    // Direct import from the registry.
    let d1 = t.path().join("d1");
    let out = tokio::task::spawn_blocking({
        let (d1, from, pubkey) = (d1.clone(), from.clone(), pubkey.clone());
        move || {
            run(&[
                "import",
                "--from-registry",
                &from,
                "--version",
                "v1.11.0",
                "--data-dir",
                d1.to_str().unwrap(),
                "--trust-key",
                pubkey.to_str().unwrap(),
            ])
        }
    })
    .await
    .expect("join");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "registry import failed: {err}");
    assert!(
        err.contains(&format!(
            "importing Talos v1.11.0 from registry {}",
            reg.addr
        )),
        "{err}"
    );

    // Bundle on the "connected side", import on the "air-gapped side".
    let bundle = t.path().join("bundle.tar");
    let out = tokio::task::spawn_blocking({
        let (bundle, from) = (bundle.clone(), from.clone());
        move || {
            run(&[
                "bundle",
                "create",
                "--from-registry",
                &from,
                "--version",
                "v1.11.0",
                "--arch",
                "amd64",
                "--out",
                bundle.to_str().unwrap(),
            ])
        }
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "bundle create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(bundle.is_file());

    let d2 = t.path().join("d2");
    let out = run(&[
        "import",
        bundle.to_str().unwrap(),
        "--data-dir",
        d2.to_str().unwrap(),
        "--trust-key",
        pubkey.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "bundle import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let r1 = release(&d1, "v1.11.0").expect("registry release");
    let r2 = release(&d2, "v1.11.0").expect("bundle release");
    // Same release: same boot assets, images and catalogs (only the recorded source and the
    // reference spelling differ).
    assert_eq!(r1.arches["amd64"].assets, r2.arches["amd64"].assets);
    assert_eq!(r1.arches["amd64"].grub, r2.arches["amd64"].grub);
    let digests = |r: &Release| -> Vec<String> {
        r.image_records()
            .iter()
            .map(|i| format!("{}/{}", i.digest, i.manifest))
            .collect()
    };
    assert_eq!(digests(&r1), digests(&r2));
    assert_eq!(r1.extensions.len(), 3);
    assert_eq!(
        r1.extensions
            .iter()
            .map(|e| (&e.name, &e.digest))
            .collect::<Vec<_>>(),
        r2.extensions
            .iter()
            .map(|e| (&e.name, &e.digest))
            .collect::<Vec<_>>()
    );
}
