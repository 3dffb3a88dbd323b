//! The registry's image index over several architectures (issue 16, "the manifest of a version
//! is an OCI image index over the per-architecture installer images of the architectures the
//! release holds; the image config and layers are exactly what `installer-<arch>.tar` holds"),
//! on a kit release holding amd64 and arm64 (each with the kit's Debian boot files of its
//! architecture).

use std::collections::BTreeMap;
use std::process::Command;

use base64::Engine as _;
use image_factory::oci::{ImageIndex, ImageManifest};

use crate::common::TestServer;
use crate::common::assets::{V, create_schematic, get, metric, start};
use crate::common::kit;
use crate::common::oci::{
    ACCEPT, INDEX, MANIFEST, assert_content_headers, installer_tarball_of, request,
};
use crate::registry_clients::{openssl_verify, run};

/// The architectures of the release under test.
const ARCHES: [&str; 2] = ["amd64", "arm64"];

/// `manifest.json` of a docker archive: the config's and the layers' entry names.
fn archive_entry(tarball: &BTreeMap<String, Vec<u8>>) -> (String, Vec<String>) {
    let m: serde_json::Value =
        serde_json::from_slice(&tarball["manifest.json"]).expect("manifest.json");
    let entries = m.as_array().expect("manifest.json is a list");
    assert_eq!(entries.len(), 1, "{m}");
    let config = entries[0]["Config"].as_str().expect("Config").to_string();
    let layers = entries[0]["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .map(|l| l.as_str().expect("layer name").to_string())
        .collect();
    (config, layers)
}

/// Checks that `digest` in `name` has a cosign signature at `sha256-<hex>.sig` whose payload
/// names `digest` and verifies (openssl) against the key in `dir/key.pub`.
async fn assert_signed(s: &TestServer, name: &str, digest: &str, dir: &std::path::Path) {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let sig = request(s, "GET", &format!("{name}/manifests/sha256-{hex}.sig"), &[]).await;
    assert_eq!(sig.status, 200, "signature of {digest}: {}", sig.text());
    let sig: serde_json::Value = serde_json::from_slice(&sig.body).expect("signature json");
    let layer = &sig["layers"][0];
    let payload = request(
        s,
        "GET",
        &format!("{name}/blobs/{}", layer["digest"].as_str().expect("digest")),
        &[],
    )
    .await;
    assert_eq!(payload.status, 200, "{}", payload.text());
    let p: serde_json::Value = serde_json::from_slice(&payload.body).expect("payload json");
    assert_eq!(
        p["critical"]["image"]["docker-manifest-digest"].as_str(),
        Some(digest)
    );
    let signature = base64::engine::general_purpose::STANDARD
        .decode(
            layer["annotations"]["dev.cosignproject.cosign/signature"]
                .as_str()
                .expect("signature annotation"),
        )
        .expect("base64 signature");
    std::fs::write(dir.join("payload"), &payload.body).unwrap();
    std::fs::write(dir.join("sig.der"), &signature).unwrap();
    let out = openssl_verify(dir);
    assert!(out.status.success(), "signature of {digest}: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_index_holds_amd64_and_arm64_each_exactly_its_installer_tarball_and_is_signed() {
    let Some(k) = kit::imported_arches(V, &ARCHES, 0) else {
        return;
    };
    let s = start(&k).await;
    let id = create_schematic(&s, kit::SCHEMATIC).await;
    let name = format!("metal-installer/{id}");
    let index = request(&s, "GET", &format!("{name}/manifests/{V}"), &[ACCEPT]).await;
    assert_eq!(index.status, 200, "{}", index.text());
    assert_content_headers(&index, INDEX, "index");
    let parsed: ImageIndex = serde_json::from_slice(&index.body).expect("index json");
    let platforms: Vec<(String, String, Option<String>)> = parsed
        .manifests
        .iter()
        .map(|d| {
            let p = d.platform.clone().expect("every entry names its platform");
            (p.os, p.architecture, p.variant)
        })
        .collect();
    assert_eq!(
        platforms,
        ARCHES.map(|a| ("linux".to_string(), a.to_string(), None)),
        "{}",
        index.text()
    );

    let key = get(&s, "/oci/cosign/signing-key.pub", &[]).await.text();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.pub"), &key).unwrap();
    let mut arm64 = None;
    for (d, arch) in parsed.manifests.iter().zip(ARCHES) {
        let digest = d.digest.to_string();
        let m = request(&s, "GET", &format!("{name}/manifests/{digest}"), &[ACCEPT]).await;
        assert_eq!(m.status, 200, "{arch}: {}", m.text());
        assert_content_headers(&m, MANIFEST, arch);
        assert_eq!(m.header("docker-content-digest"), digest, "{arch}");
        assert_eq!(m.body.len() as u64, d.size, "{arch}");
        let manifest: ImageManifest = serde_json::from_slice(&m.body).expect("manifest json");

        // Exactly the config and layers of installer-<arch>.tar, in its order, byte for byte.
        let tarball = installer_tarball_of(&s.url(""), &id, arch).await;
        let (config_entry, layer_entries) = archive_entry(&tarball);
        assert_eq!(config_entry, manifest.config.digest.to_string(), "{arch}");
        let config = request(
            &s,
            "GET",
            &format!("{name}/blobs/{}", manifest.config.digest),
            &[],
        )
        .await;
        assert_eq!(config.status, 200, "{arch}: {}", config.text());
        assert_eq!(config.body, tarball[&config_entry], "{arch} config");
        let c: serde_json::Value = serde_json::from_slice(&config.body).expect("config json");
        assert_eq!(
            (c["os"].as_str(), c["architecture"].as_str()),
            (Some("linux"), Some(arch))
        );
        let names: Vec<String> = manifest
            .layers
            .iter()
            .map(|l| format!("{}.tar.gz", l.digest.hex()))
            .collect();
        assert_eq!(names, layer_entries, "{arch} layers");
        for (l, entry) in manifest.layers.iter().zip(&layer_entries) {
            let blob = request(&s, "GET", &format!("{name}/blobs/{}", l.digest), &[]).await;
            assert_eq!(blob.status, 200, "{arch} {}: {}", l.digest, blob.text());
            assert_eq!(blob.body, tarball[entry], "{arch} layer {}", l.digest);
        }
        assert_signed(&s, &name, &digest, dir.path()).await;
        if arch == "arm64" {
            arm64 = Some((digest, manifest, tarball));
        }
    }
    let index_digest = index.header("docker-content-digest").to_string();
    assert_signed(&s, &name, &index_digest, dir.path()).await;
    // One build per architecture, shared by /v2 and /image.
    assert_eq!(
        metric(
            &s,
            "image_factory_assets_built_total",
            &["output_kind=\"installer\""]
        )
        .await,
        ARCHES.len() as f64
    );

    // A real client picks the arm64 image out of the index.
    let (arm64_digest, arm64_manifest, arm64_tarball) = arm64.expect("arm64 in the index");
    if testsupport::tools::have("skopeo", "skopeo") {
        let src = format!("docker://{}/{name}:{V}", s.addrs.http);
        let layout = dir.path().join("layout");
        let dest = format!("oci:{}:installer", layout.display());
        tokio::task::spawn_blocking(move || {
            run(Command::new("skopeo").args([
                "copy",
                "--src-tls-verify=false",
                "--override-os",
                "linux",
                "--override-arch",
                "arm64",
                &src,
                &dest,
            ]))
        })
        .await
        .unwrap();
        let layout_index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        assert_eq!(
            layout_index["manifests"][0]["digest"].as_str(),
            Some(arm64_digest.as_str()),
            "{layout_index}"
        );
        let blob = |hex: &str| std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
        let (config_entry, layer_entries) = archive_entry(&arm64_tarball);
        assert_eq!(
            blob(arm64_manifest.config.digest.hex()),
            arm64_tarball[&config_entry]
        );
        for (l, entry) in arm64_manifest.layers.iter().zip(&layer_entries) {
            assert_eq!(blob(l.digest.hex()), arm64_tarball[entry], "{}", l.digest);
        }
    }
    s.stop().await;
}
