//! The registry as a mirror of `ghcr.io` for the imported source images, and its operations:
//! every source image of the kit (imager, installer-base, each extension, the overlay, both
//! catalogs) pulled through `?ns=ghcr.io` byte for byte against the bundle it was imported
//! from, their cosign signatures checked with openssl, unknown repositories answered
//! `NAME_UNKNOWN`, blob requests answered from the index (no manifest re-read), and the pull
//! count after `skopeo copy` and containerd pulls.

use std::collections::{BTreeSet, HashMap};
use std::io::Read as _;
use std::process::Command;

use base64::Engine as _;
use serde_json::Value;

use crate::common::TestServer;
use crate::common::assets::{Got, V, flip_byte, get, metric, sha256_hex};
use crate::common::kit::Kit;
use crate::common::oci::{error_code, request, setup};
use crate::registry_clients::{containerd_pull, openssl_verify, run};

/// The kit's source image repositories (one release, amd64).
const KIT_REPOSITORIES: &[&str] = &[
    "siderolabs/imager",
    "siderolabs/installer-base",
    "siderolabs/extensions",
    "siderolabs/kmod-test",
    "siderolabs/fw-test",
    "siderolabs/svc-test",
    "siderolabs/overlays",
    "siderolabs/sbc-test",
];

/// A root image of the bundle (not a signature).
struct Root {
    /// `siderolabs/imager`.
    repository: String,
    tag: String,
    /// Its `index.json` descriptor.
    descriptor: Value,
}

/// The bundle the kit was imported from: its blobs by digest and its root images.
struct Bundle {
    blobs: HashMap<String, Vec<u8>>,
    roots: Vec<Root>,
}

impl Bundle {
    fn read(k: &Kit) -> Bundle {
        let file = std::fs::File::open(k.dir.path().join("kit/bundle.tar")).expect("bundle");
        let mut blobs = HashMap::new();
        let mut index = None;
        for entry in tar::Archive::new(file).entries().expect("tar") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").display().to_string();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).expect("read");
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                blobs.insert(format!("sha256:{hex}"), bytes);
            } else if path == "index.json" {
                index = Some(bytes);
            }
        }
        let index: Value = serde_json::from_slice(&index.expect("index.json")).unwrap();
        let mut roots = Vec::new();
        for d in index["manifests"].as_array().unwrap() {
            let name = d["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap();
            let (repository, tag) = name
                .strip_prefix("ghcr.io/")
                .and_then(|n| n.rsplit_once(':'))
                .unwrap_or_else(|| panic!("{name}"));
            if tag.ends_with(".sig") {
                continue;
            }
            roots.push(Root {
                repository: repository.to_string(),
                tag: tag.to_string(),
                descriptor: d.clone(),
            });
        }
        Bundle { blobs, roots }
    }

    fn blob(&self, digest: &str) -> &[u8] {
        self.blobs
            .get(digest)
            .unwrap_or_else(|| panic!("{digest} is not in the bundle"))
    }

    /// The image manifests below `root` that were imported (linux/amd64), as descriptors.
    fn imported_manifests(&self, root: &Root) -> Vec<Value> {
        let d = &root.descriptor;
        if !is_index(d["mediaType"].as_str().unwrap()) {
            return vec![d.clone()];
        }
        let index: Value =
            serde_json::from_slice(self.blob(d["digest"].as_str().unwrap())).unwrap();
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["platform"]["architecture"] == "amd64" && m["platform"]["os"] == "linux")
            .cloned()
            .collect()
    }
}

fn is_index(media_type: &str) -> bool {
    media_type.ends_with("index.v1+json") || media_type.ends_with("manifest.list.v2+json")
}

/// `GET /v2/<path>?ns=ghcr.io` (or `&ns=` after a query), asserting 200.
async fn ghcr(s: &TestServer, path: &str) -> Got {
    let sep = if path.contains('?') { '&' } else { '?' };
    let g = request(s, "GET", &format!("{path}{sep}ns=ghcr.io"), &[]).await;
    assert_eq!(g.status, 200, "{path}: {}", g.text());
    g
}

/// The config and layer digests of an image manifest.
fn blob_digests(manifest: &[u8]) -> Vec<String> {
    let m: Value = serde_json::from_slice(manifest).unwrap();
    std::iter::once(&m["config"])
        .chain(m["layers"].as_array().unwrap())
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_imported_source_image_is_served_through_ghcr_byte_identical_to_the_bundle() {
    let Some((k, s, _)) = setup().await else {
        return;
    };
    let bundle = Bundle::read(&k);
    let mut seen = BTreeSet::new();
    for root in &bundle.roots {
        let name = &root.repository;
        let digest = root.descriptor["digest"].as_str().unwrap();
        let media_type = root.descriptor["mediaType"].as_str().unwrap();
        // The tag names the imported top-level digest, with the bytes and media type imported.
        for reference in [root.tag.as_str(), digest] {
            let top = ghcr(&s, &format!("{name}/manifests/{reference}")).await;
            assert_eq!(top.body, bundle.blob(digest), "{name}:{reference}");
            assert_eq!(top.header("content-type"), media_type, "{name}:{reference}");
            assert_eq!(top.header("docker-content-digest"), digest, "{name}");
        }
        let manifests = bundle.imported_manifests(root);
        assert!(!manifests.is_empty(), "{name}: no linux/amd64 manifest");
        for m in manifests {
            let md = m["digest"].as_str().unwrap();
            let got = ghcr(&s, &format!("{name}/manifests/{md}")).await;
            assert_eq!(got.body, bundle.blob(md), "{name}@{md}");
            assert_eq!(got.header("content-type"), m["mediaType"].as_str().unwrap());
            for b in blob_digests(&got.body) {
                let blob = ghcr(&s, &format!("{name}/blobs/{b}")).await;
                assert_eq!(blob.body, bundle.blob(&b), "{name} blob {b}");
                assert_eq!(blob.header("docker-content-digest"), b);
                assert_eq!(format!("sha256:{}", sha256_hex(&blob.body)), b);
                // A range of it is that range of the imported bytes.
                let len = blob.body.len();
                if len > 2 {
                    let range = format!("bytes=1-{}", len - 2);
                    let part = request(
                        &s,
                        "GET",
                        &format!("{name}/blobs/{b}?ns=ghcr.io"),
                        &[("range", &range)],
                    )
                    .await;
                    assert_eq!(part.status, 206, "{name} blob {b}");
                    assert_eq!(part.body, &bundle.blob(&b)[1..len - 1]);
                }
            }
        }
        seen.insert(name.clone());
    }
    for r in KIT_REPOSITORIES {
        assert!(seen.contains(*r), "the bundle has no {r}: {seen:?}");
    }
    s.stop().await;
}

/// Checks that `signed` in `name` (as asked with `?ns=ghcr.io`) has a cosign signature made
/// with the published key, at its `.sig` tag and as a referrer.
async fn assert_signed(s: &TestServer, name: &str, signed: &str, dir: &std::path::Path) {
    let hex = signed.strip_prefix("sha256:").unwrap();
    let sig = ghcr(s, &format!("{name}/manifests/sha256-{hex}.sig")).await;
    let tag_form: Value = serde_json::from_slice(&sig.body).unwrap();
    // Stored once: asked again, the same bytes.
    assert_eq!(
        ghcr(s, &format!("{name}/manifests/sha256-{hex}.sig"))
            .await
            .body,
        sig.body
    );
    let refs = ghcr(s, &format!("{name}/referrers/{signed}")).await;
    let refs: Value = serde_json::from_slice(&refs.body).unwrap();
    let referrer = refs["manifests"][0]["digest"].as_str().expect("a referrer");
    let referrer = ghcr(s, &format!("{name}/manifests/{referrer}")).await;
    let referrer: Value = serde_json::from_slice(&referrer.body).unwrap();
    assert_eq!(referrer["subject"]["digest"].as_str(), Some(signed));
    for m in [&tag_form, &referrer] {
        let layer = &m["layers"][0];
        let payload = ghcr(
            s,
            &format!("{name}/blobs/{}", layer["digest"].as_str().unwrap()),
        )
        .await;
        let p: Value = serde_json::from_slice(&payload.body).unwrap();
        assert_eq!(
            p["critical"]["image"]["docker-manifest-digest"].as_str(),
            Some(signed)
        );
        assert_eq!(
            p["critical"]["identity"]["docker-reference"].as_str(),
            Some(format!("factory.test:8080/{name}").as_str())
        );
        let signature = base64::engine::general_purpose::STANDARD
            .decode(
                layer["annotations"]["dev.cosignproject.cosign/signature"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        std::fs::write(dir.join("payload"), &payload.body).unwrap();
        std::fs::write(dir.join("sig.der"), &signature).unwrap();
        let out = openssl_verify(dir);
        assert!(out.status.success(), "{name} {signed}: {out:?}");
        let mut forged = payload.body.clone();
        forged[0] ^= 1;
        std::fs::write(dir.join("payload"), &forged).unwrap();
        assert!(!openssl_verify(dir).status.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn source_manifests_have_cosign_signatures_that_verify_with_openssl() {
    let Some((k, s, _)) = setup().await else {
        return;
    };
    let bundle = Bundle::read(&k);
    let key = get(&s, "/oci/cosign/signing-key.pub", &[]).await.text();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.pub"), &key).unwrap();
    for root in &bundle.roots {
        let name = &root.repository;
        let top = root.descriptor["digest"].as_str().unwrap().to_string();
        let mut signed = vec![top.clone()];
        for m in bundle.imported_manifests(root) {
            signed.push(m["digest"].as_str().unwrap().to_string());
        }
        for d in &signed {
            assert_signed(&s, name, d, dir.path()).await;
        }
        // The tag list names the signature tags.
        let tags = ghcr(&s, &format!("{name}/tags/list")).await;
        let tags: Value = serde_json::from_slice(&tags.body).unwrap();
        let tags: Vec<&str> = tags["tags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(tags.contains(&root.tag.as_str()), "{name}: {tags:?}");
        let sig = format!("sha256-{}.sig", top.strip_prefix("sha256:").unwrap());
        assert!(tags.contains(&sig.as_str()), "{name}: {tags:?}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_repository_we_do_not_hold_is_name_unknown_for_every_endpoint() {
    let Some((_k, s, _)) = setup().await else {
        return;
    };
    let zero = format!("sha256:{}", "0".repeat(64));
    for ns in ["?ns=ghcr.io", ""] {
        for path in [
            format!("siderolabs/talos/referrers/{zero}"),
            "siderolabs/talos/tags/list".to_string(),
            "siderolabs/talos/manifests/v1.11.0".to_string(),
            format!("siderolabs/talos/manifests/{zero}"),
            format!("siderolabs/talos/blobs/{zero}"),
        ] {
            let g = request(&s, "GET", &format!("{path}{ns}"), &[]).await;
            assert_eq!(g.status, 404, "{path}{ns}: {}", g.text());
            assert_eq!(error_code(&g), "NAME_UNKNOWN", "{path}{ns}");
        }
    }
    // A repository we hold answers referrers of an unknown subject with an empty index.
    let g = request(
        &s,
        "GET",
        &format!("siderolabs/imager/referrers/{zero}?ns=ghcr.io"),
        &[],
    )
    .await;
    assert_eq!(g.status, 200, "{}", g.text());
    let v: Value = serde_json::from_slice(&g.body).unwrap();
    assert_eq!(v["manifests"], serde_json::json!([]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn source_blobs_are_found_in_the_index_without_reading_manifests_again() {
    let Some((k, s, _)) = setup().await else {
        return;
    };
    let bundle = Bundle::read(&k);
    let root = bundle
        .roots
        .iter()
        .find(|r| r.repository == "siderolabs/imager")
        .expect("imager");
    let manifest = bundle.imported_manifests(root).remove(0);
    let md = manifest["digest"].as_str().unwrap().to_string();
    let got = ghcr(&s, &format!("siderolabs/imager/manifests/{md}")).await;
    let blobs = blob_digests(&got.body);
    // Damage the stored manifest: a manifest request reads it and refuses it, a blob request
    // does not read it at all.
    let name = blake3::hash(&got.body).to_hex().to_string();
    let stored = k.data.join("blobs").join(&name[..2]).join(&name);
    assert!(stored.is_file(), "{}", stored.display());
    flip_byte(&stored, 2);
    let g = request(
        &s,
        "GET",
        &format!("siderolabs/imager/manifests/{md}?ns=ghcr.io"),
        &[],
    )
    .await;
    assert_eq!(g.status, 404, "{}", g.text());
    assert_eq!(error_code(&g), "MANIFEST_UNKNOWN");
    for b in &blobs {
        let blob = ghcr(&s, &format!("siderolabs/imager/blobs/{b}")).await;
        assert_eq!(blob.body, bundle.blob(b), "{b}");
    }
    s.stop().await;
}

/// `image_factory_registry_pulls_total{image="<image>"}`.
async fn pulls(s: &TestServer, image: &str) -> f64 {
    metric(
        s,
        "image_factory_registry_pulls_total",
        &[&format!("image=\"{image}\"")],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_counts_once_for_skopeo_copy_and_containerd_installers_and_sources_alike() {
    if !testsupport::tools::have("skopeo", "skopeo")
        || !testsupport::tools::have("containerd", "containerd")
        || !testsupport::tools::have("ctr", "containerd")
    {
        return;
    }
    let Some((k, s, id)) = setup().await else {
        return;
    };
    let bundle = Bundle::read(&k);
    let addr = s.addrs.http.to_string();
    let kmod = bundle
        .roots
        .iter()
        .find(|r| r.repository == "siderolabs/kmod-test")
        .expect("kmod-test");
    // skopeo copy: an installer (built on this first pull) and a source image.
    let dir = tempfile::tempdir().unwrap();
    let copies = [
        (format!("metal-installer/{id}:{V}"), "installer"),
        (format!("siderolabs/imager:{V}"), "imager"),
    ];
    let d = dir.path().to_path_buf();
    let a = addr.clone();
    tokio::task::spawn_blocking(move || {
        for (image, layout) in &copies {
            let dest = format!("oci:{}:{layout}", d.join(layout).display());
            run(Command::new("skopeo").args([
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{a}/{image}"),
                &dest,
            ]));
        }
    })
    .await
    .unwrap();
    assert_eq!(pulls(&s, "metal-installer").await, 1.0, "skopeo copy");
    assert_eq!(pulls(&s, "siderolabs/imager").await, 1.0, "skopeo copy");
    // What skopeo copied of the source image is what was imported.
    let imager = bundle
        .roots
        .iter()
        .find(|r| r.repository == "siderolabs/imager")
        .expect("imager");
    for m in bundle.imported_manifests(imager) {
        for b in blob_digests(bundle.blob(m["digest"].as_str().unwrap())) {
            let hex = b.strip_prefix("sha256:").unwrap();
            let copied = std::fs::read(dir.path().join("imager/blobs/sha256").join(hex)).unwrap();
            assert_eq!(copied, bundle.blob(&b), "{b}");
        }
    }
    // containerd through the mirror: ghcr.io's installer (the empty schematic) and an extension.
    let images = vec![
        format!("ghcr.io/siderolabs/installer:{V}"),
        format!("ghcr.io/{}:{}", kmod.repository, kmod.tag),
    ];
    let a = addr.clone();
    let contents = tokio::task::spawn_blocking(move || containerd_pull(&a, &images).contents)
        .await
        .unwrap();
    assert_eq!(pulls(&s, "installer").await, 1.0, "containerd");
    assert_eq!(pulls(&s, "siderolabs/kmod-test").await, 1.0, "containerd");
    assert_eq!(
        metric(&s, "image_factory_registry_pulls_total", &[]).await,
        4.0,
        "four pulls in all"
    );
    // containerd stored the extension as imported, byte for byte.
    let top = kmod.descriptor["digest"].as_str().unwrap();
    assert_eq!(contents.get(top).map(Vec::as_slice), Some(bundle.blob(top)));
    for m in bundle.imported_manifests(kmod) {
        let md = m["digest"].as_str().unwrap();
        assert_eq!(contents.get(md).map(Vec::as_slice), Some(bundle.blob(md)));
        for b in blob_digests(bundle.blob(md)) {
            assert_eq!(
                contents.get(&b).map(Vec::as_slice),
                Some(bundle.blob(&b)),
                "{b}"
            );
        }
    }
    // HEADs, per-architecture manifests and signatures are not pulls.
    let name = format!("metal-installer/{id}");
    let head = request(&s, "HEAD", &format!("{name}/manifests/{V}"), &[]).await;
    assert_eq!(head.status, 200);
    let index = request(&s, "GET", &format!("{name}/manifests/{V}"), &[]).await;
    let v: Value = serde_json::from_slice(&index.body).unwrap();
    let arch = v["manifests"][0]["digest"].as_str().unwrap();
    assert_eq!(
        request(&s, "GET", &format!("{name}/manifests/{arch}"), &[])
            .await
            .status,
        200
    );
    let hex = index
        .header("docker-content-digest")
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    assert_eq!(
        request(
            &s,
            "GET",
            &format!("{name}/manifests/sha256-{hex}.sig"),
            &[]
        )
        .await
        .status,
        200
    );
    assert_eq!(
        pulls(&s, "metal-installer").await,
        2.0,
        "only the tag GET counted"
    );
    s.stop().await;
}
