//! Catalog endpoints against the real server, with releases seeded into its data directory.

use std::collections::BTreeMap;
use std::sync::Arc;

use image_factory::catalog::{ExtensionEntry, OverlayEntry, Release, ReleaseStore, Signatures};
use image_factory::oci::Digest;
use image_factory::store::{BlobStore, MetaStore, SledStore};

fn release(version: &str) -> Release {
    let d = Digest::of(version.as_bytes());
    Release {
        version: version.into(),
        imported_at: "2026-11-26T00:00:00Z".into(),
        source: "test".into(),
        signatures: Signatures::Verified {
            keys: vec!["k".into()],
        },
        partial: false,
        arches: BTreeMap::new(),
        extensions: vec![
            ExtensionEntry {
                name: "siderolabs/kmod-test".into(),
                reference: "ghcr.io/siderolabs/kmod-test:1.0".into(),
                digest: d.clone(),
                author: "Test <a&b>".into(),
                description: "Kernel modules.\n".into(),
                images: BTreeMap::new(),
            },
            ExtensionEntry {
                name: "siderolabs/fw-test".into(),
                reference: "ghcr.io/siderolabs/fw-test:2.0".into(),
                digest: d.clone(),
                author: String::new(),
                description: String::new(),
                images: BTreeMap::new(),
            },
        ],
        overlays: vec![OverlayEntry {
            name: "test".into(),
            image: "siderolabs/sbc-test".into(),
            reference: "ghcr.io/siderolabs/sbc-test:v0.1.0".into(),
            digest: d,
            images: BTreeMap::new(),
        }],
        catalogs: Vec::new(),
        talosctl: None,
        revision: None,
    }
}

async fn seed(dir: &std::path::Path, versions: &[&str]) {
    let meta: Arc<dyn MetaStore> = Arc::new(SledStore::open(&dir.join("meta")).expect("open"));
    let blobs = BlobStore::open(&dir.join("blobs"), meta).expect("blobs");
    let releases = ReleaseStore::new(&blobs);
    for v in versions {
        releases.put(&release(v)).await.expect("seed");
    }
}

async fn get(url: String) -> (u16, String, String) {
    let r = reqwest::get(url).await.expect("request");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    (status, ct, r.text().await.expect("body"))
}

#[tokio::test]
async fn versions_extensions_and_overlays() {
    let data = tempfile::tempdir().expect("tempdir");
    seed(
        data.path(),
        &[
            "v1.11.0",
            "v1.10.3",
            "v1.6.0",
            "v1.1.0",
            "v1.12.0-alpha.1",
            "v1.9.0",
        ],
    )
    .await;
    let dir = data.path().display().to_string();
    let srv = crate::common::TestServer::start_with(move |c| {
        c.storage.data_dir = dir;
        c.build.broken_talos_versions = vec!["1.9.0".into()];
    })
    .await;
    let base = format!("http://{}", srv.addrs.http);

    let (s, ct, body) = get(format!("{base}/versions")).await;
    assert_eq!((s, ct.as_str()), (200, "application/json"));
    // v1.6.0 is imported but older than anything this appliance builds: not offered.
    assert_eq!(body, "[\"v1.10.3\",\"v1.11.0\",\"v1.12.0-alpha.1\"]\n");
    let (_, _, broken) = get(format!("{base}/versions?broken=true")).await;
    assert_eq!(broken, "[\"v1.9.0\"]\n");
    let (_, _, ignored) = get(format!("{base}/versions?broken=yes")).await;
    assert_eq!(ignored, body);

    let d = Digest::of(b"v1.11.0");
    let (s, _, ext) = get(format!("{base}/version/1.11.0/extensions/official")).await;
    assert_eq!(s, 200);
    assert_eq!(
        ext,
        format!(
            "[{{\"name\":\"siderolabs/kmod-test\",\"ref\":\"ghcr.io/siderolabs/kmod-test:1.0\",\"digest\":\"{d}\",\"author\":\"Test \\u003ca\\u0026b\\u003e\",\"description\":\"Kernel modules.\\n\"}},{{\"name\":\"siderolabs/fw-test\",\"ref\":\"ghcr.io/siderolabs/fw-test:2.0\",\"digest\":\"{d}\",\"author\":\"\",\"description\":\"\"}}]\n"
        )
    );
    let (s, _, ov) = get(format!("{base}/version/v1.11.0/overlays/official")).await;
    assert_eq!(s, 200);
    assert_eq!(
        ov,
        format!(
            "[{{\"name\":\"test\",\"image\":\"siderolabs/sbc-test\",\"ref\":\"ghcr.io/siderolabs/sbc-test:v0.1.0\",\"digest\":\"{d}\"}}]\n"
        )
    );
    // Before Talos 1.7 overlays are not supported: always [], imported or not, as upstream.
    for v in ["v1.6.0", "1.5.2"] {
        let (s, _, old) = get(format!("{base}/version/{v}/overlays/official")).await;
        assert_eq!((s, old.as_str()), (200, "[]\n"), "{v}");
    }

    // Not offered (broken, below minimum, never imported) -> 404; malformed -> 500.
    for v in ["v1.9.0", "v1.1.0", "v1.6.0", "v1.99.0"] {
        let (s, _, body) = get(format!("{base}/version/{v}/extensions/official")).await;
        assert_eq!(s, 404, "{v}: {body}");
        assert!(body.ends_with("is not available\n"), "{body}");
    }
    let (s, _, body) = get(format!("{base}/version/1.11/extensions/official")).await;
    assert_eq!((s, body.as_str()), (500, "internal server error\n"));
}
