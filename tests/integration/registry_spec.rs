//! The registry frontend against the OCI distribution spec's pull and content-discovery
//! requirements (each test names the requirements it checks), on the imported test kit:
//! installer images built on a miss, served from our store, identical to the installer tarball.

use std::time::Duration;

use crate::common::assets::{Got, V, create_schematic, metric, metric_above_zero, sha256_hex};
use crate::common::kit;
use crate::common::oci::{error_code, installer_tarball, request, setup};
use crate::common::{TestServer, client};

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const ACCEPT: (&str, &str) = (
    "accept",
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
);

/// Headers every successful content answer carries.
fn assert_content_headers(g: &Got, media_type: &str, what: &str) {
    assert_eq!(g.header("content-type"), media_type, "{what}");
    assert_eq!(
        g.header("docker-content-digest"),
        format!("sha256:{}", sha256_hex(&g.body)),
        "{what}"
    );
    assert_eq!(
        g.header("content-length"),
        g.body.len().to_string(),
        "{what}"
    );
    assert_eq!(
        g.header("etag"),
        format!("\"sha256:{}\"", sha256_hex(&g.body)),
        "{what}"
    );
    assert_eq!(
        g.header("docker-distribution-api-version"),
        "registry/2.0",
        "{what}"
    );
}

/// The index of `name:V` and its amd64 manifest.
async fn pull_manifests(s: &TestServer, name: &str) -> (Got, Got) {
    let index = request(s, "GET", &format!("{name}/manifests/{V}"), &[ACCEPT]).await;
    assert_eq!(index.status, 200, "{}", index.text());
    let v: serde_json::Value = serde_json::from_slice(&index.body).expect("index json");
    let digest = v["manifests"][0]["digest"].as_str().expect("digest");
    let manifest = request(s, "GET", &format!("{name}/manifests/{digest}"), &[ACCEPT]).await;
    assert_eq!(manifest.status, 200, "{}", manifest.text());
    (index, manifest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spec_pull_ping_manifests_by_tag_and_digest_and_head_equals_get() {
    let Some((_kit, s, id)) = setup().await else {
        return;
    };
    // end-1: GET and HEAD /v2/ answer 200.
    for m in ["GET", "HEAD"] {
        let g = request(&s, m, "", &[]).await;
        assert_eq!(g.status, 200, "{m} /v2/");
        assert_eq!(g.header("docker-distribution-api-version"), "registry/2.0");
    }
    let name = format!("metal-installer/{id}");
    // end-3 (tag): the first pull builds; the answer is an index over the release's arches.
    let (index, manifest) = pull_manifests(&s, &name).await;
    assert_content_headers(&index, INDEX, "index");
    let v: serde_json::Value = serde_json::from_slice(&index.body).unwrap();
    assert_eq!(v["mediaType"], INDEX);
    let entries = v["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "the kit release holds amd64 only: {v}");
    assert_eq!(entries[0]["platform"]["architecture"], "amd64");
    assert_eq!(entries[0]["platform"]["os"], "linux");
    assert_eq!(entries[0]["mediaType"], MANIFEST);
    assert_eq!(entries[0]["size"], manifest.body.len());
    // end-3 (digest): the per-arch manifest by digest.
    assert_content_headers(&manifest, MANIFEST, "manifest");
    // The index by its own digest is the same bytes.
    let digest = index.header("docker-content-digest").to_string();
    let again = request(&s, "GET", &format!("{name}/manifests/{digest}"), &[ACCEPT]).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, index.body);
    // HEAD answers GET's headers without a body (end-2: manifest existence by HEAD).
    for reference in [V, digest.as_str()] {
        let head = request(
            &s,
            "HEAD",
            &format!("{name}/manifests/{reference}"),
            &[ACCEPT],
        )
        .await;
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
        for h in [
            "content-type",
            "docker-content-digest",
            "content-length",
            "etag",
        ] {
            assert_eq!(head.header(h), index.header(h), "HEAD {reference}: {h}");
        }
    }
    // `latest` is the newest stable imported version.
    let latest = request(&s, "GET", &format!("{name}/manifests/latest"), &[ACCEPT]).await;
    assert_eq!(latest.status, 200);
    assert_eq!(latest.body, index.body);
    // The legacy name serves the same images (same profile, same cache key).
    let (_, legacy) = pull_manifests(&s, &format!("installer/{id}")).await;
    assert_eq!(legacy.body, manifest.body);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spec_pull_blobs_by_digest_with_range_are_the_installer_tarball_content() {
    let Some((_kit, s, id)) = setup().await else {
        return;
    };
    let name = format!("metal-installer/{id}");
    let (_, manifest) = pull_manifests(&s, &name).await;
    let m: serde_json::Value = serde_json::from_slice(&manifest.body).unwrap();
    let tarball = installer_tarball(&s.url(""), &id).await;
    // One build, two frontends: the config and every layer are the tarball's entries.
    let config = m["config"]["digest"].as_str().unwrap();
    let layers: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert!(layers.len() >= 2, "{m}");
    let archive: serde_json::Value =
        serde_json::from_slice(&tarball["manifest.json"]).expect("manifest.json");
    assert_eq!(archive[0]["Config"], config);
    let mut expected = vec![(config.to_string(), tarball[config].clone())];
    for l in &layers {
        let hex = l.strip_prefix("sha256:").unwrap();
        expected.push((l.to_string(), tarball[&format!("{hex}.tar.gz")].clone()));
    }
    for (digest, bytes) in &expected {
        // end-2 (HEAD) and pull blob GET: digest header, exact length, exact bytes.
        let g = request(&s, "GET", &format!("{name}/blobs/{digest}"), &[]).await;
        assert_eq!(g.status, 200, "{digest}: {}", g.text());
        assert_eq!(&g.body, bytes, "{digest}");
        assert_eq!(g.header("docker-content-digest"), digest.as_str());
        assert_eq!(g.header("content-length"), bytes.len().to_string());
        assert_eq!(g.header("docker-distribution-api-version"), "registry/2.0");
        let h = request(&s, "HEAD", &format!("{name}/blobs/{digest}"), &[]).await;
        assert_eq!(h.status, 200);
        assert!(h.body.is_empty());
        assert_eq!(h.header("content-length"), bytes.len().to_string());
    }
    // Range: a partial blob with Content-Range (end-2 GET with Range).
    let (digest, bytes) = expected.last().unwrap();
    let len = bytes.len();
    let g = request(
        &s,
        "GET",
        &format!("{name}/blobs/{digest}"),
        &[("range", "bytes=10-99")],
    )
    .await;
    assert_eq!(g.status, 206);
    assert_eq!(g.body, bytes[10..100]);
    assert_eq!(g.header("content-range"), format!("bytes 10-99/{len}"));
    let past = format!("bytes={}-", len + 10);
    let g = request(
        &s,
        "GET",
        &format!("{name}/blobs/{digest}"),
        &[("range", &past)],
    )
    .await;
    assert_eq!(g.status, 416);
    assert_eq!(g.header("content-range"), format!("bytes */{len}"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spec_errors_unknown_names_tags_digests_and_pushes_use_the_error_envelope() {
    let Some((_kit, s, id)) = setup().await else {
        return;
    };
    let zero = format!("sha256:{}", "0".repeat(64));
    let name = format!("metal-installer/{id}");
    let other = "1".repeat(64);
    for (method, path, status, code) in [
        // Unknown repository names: not an installer, an unknown schematic, another registry.
        (
            "GET",
            "library/alpine/manifests/latest".to_string(),
            404,
            "NAME_UNKNOWN",
        ),
        (
            "GET",
            format!("metal-installer/{other}/manifests/{V}"),
            404,
            "NAME_UNKNOWN",
        ),
        (
            "GET",
            format!("imager/{id}/manifests/{V}"),
            404,
            "NAME_UNKNOWN",
        ),
        (
            "GET",
            format!("metal-installer/{other}/tags/list"),
            404,
            "NAME_UNKNOWN",
        ),
        (
            "GET",
            format!("metal-installer/{other}/referrers/{zero}"),
            404,
            "NAME_UNKNOWN",
        ),
        (
            "GET",
            "siderolabs/nothing/manifests/v1".to_string(),
            404,
            "NAME_UNKNOWN",
        ),
        // Unknown tags and digests.
        (
            "GET",
            format!("{name}/manifests/v9.9.9"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        ("HEAD", format!("{name}/manifests/v9.9.9"), 404, ""),
        (
            "GET",
            format!("{name}/manifests/{zero}"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "GET",
            format!("{name}/manifests/sha256-{}.sig", "0".repeat(64)),
            404,
            "MANIFEST_UNKNOWN",
        ),
        ("GET", format!("{name}/blobs/{zero}"), 404, "BLOB_UNKNOWN"),
        (
            "GET",
            format!("{name}/blobs/sha256:xyz"),
            400,
            "DIGEST_INVALID",
        ),
        // The push side: read-only.
        ("POST", format!("{name}/blobs/uploads/"), 405, "UNSUPPORTED"),
        (
            "PUT",
            format!("{name}/manifests/v1.0.0"),
            405,
            "UNSUPPORTED",
        ),
        (
            "PATCH",
            format!("{name}/blobs/uploads/x"),
            405,
            "UNSUPPORTED",
        ),
        (
            "DELETE",
            format!("{name}/manifests/{zero}"),
            405,
            "UNSUPPORTED",
        ),
    ] {
        let g = request(&s, method, &path, &[]).await;
        assert_eq!(g.status, status, "{method} {path}: {}", g.text());
        assert_eq!(g.header("docker-distribution-api-version"), "registry/2.0");
        if method != "HEAD" {
            assert_eq!(error_code(&g), code, "{method} {path}");
            assert!(g.header("content-type").starts_with("application/json"));
        }
        if status == 405 {
            assert_eq!(g.header("allow"), "GET, HEAD");
            assert!(g.text().contains("read-only"), "{}", g.text());
        }
    }
    // Secure Boot names answer /image's error for the same installer.
    let sb = request(
        &s,
        "GET",
        &format!("metal-installer-secureboot/{id}/manifests/{V}"),
        &[],
    )
    .await;
    let image = crate::common::assets::get(
        &s,
        &format!("/image/{id}/{V}/metal-installer-amd64-secureboot.tar"),
        &[],
    )
    .await;
    assert_eq!(sb.status, image.status);
    let v: serde_json::Value = serde_json::from_slice(&sb.body).unwrap();
    assert_eq!(
        v["errors"][0]["message"].as_str().unwrap(),
        image.text().trim_end()
    );
    assert!(image.text().contains("secure boot is disabled"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spec_discovery_tag_list_paginates_and_referrers_list_signatures() {
    let Some((_kit, s, id)) = setup().await else {
        return;
    };
    let name = format!("metal-installer/{id}");
    let (index, _) = pull_manifests(&s, &name).await;
    let digest = index.header("docker-content-digest").to_string();
    let hex = digest.strip_prefix("sha256:").unwrap();
    // Tag list: every imported version, `latest`, and the signature tags, sorted.
    let g = request(&s, "GET", &format!("{name}/tags/list"), &[]).await;
    assert_eq!(g.status, 200, "{}", g.text());
    let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
    assert_eq!(v["name"], name);
    let tags: Vec<String> = serde_json::from_value(v["tags"].clone()).unwrap();
    assert!(tags.contains(&V.to_string()) && tags.contains(&"latest".to_string()));
    assert!(tags.contains(&format!("sha256-{hex}.sig")), "{tags:?}");
    let mut sorted = tags.clone();
    sorted.sort();
    assert_eq!(tags, sorted);
    // Pagination: n, then last, with a Link to the next page.
    let g = request(&s, "GET", &format!("{name}/tags/list?n=1"), &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
    assert_eq!(v["tags"], serde_json::json!([tags[0]]));
    assert!(
        g.header("link").contains(&format!("last={}", tags[0]))
            && g.header("link").contains("rel=\"next\""),
        "{}",
        g.header("link")
    );
    let g = request(
        &s,
        "GET",
        &format!("{name}/tags/list?n=100&last={}", tags[0]),
        &[],
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
    assert_eq!(v["tags"], serde_json::json!(tags[1..]));
    assert!(g.header("link").is_empty());
    let g = request(&s, "GET", &format!("{name}/tags/list?n=0"), &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
    assert_eq!(v["tags"], serde_json::json!([]));

    // Referrers: the signature, as an index; filtered by artifactType.
    let sig_type = "application/vnd.dev.cosign.artifact.sig.v1+json";
    let g = request(&s, "GET", &format!("{name}/referrers/{digest}"), &[]).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.header("content-type"), INDEX);
    assert!(g.header("oci-filters-applied").is_empty());
    let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["manifests"][0]["artifactType"], sig_type);
    let referrer = v["manifests"][0]["digest"].as_str().unwrap().to_string();
    let m = request(&s, "GET", &format!("{name}/manifests/{referrer}"), &[]).await;
    assert_eq!(m.status, 200);
    let m: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
    assert_eq!(m["subject"]["digest"], digest);
    assert_eq!(m["artifactType"], sig_type);
    let g = request(
        &s,
        "GET",
        &format!(
            "{name}/referrers/{digest}?artifactType={}",
            sig_type.replace('+', "%2B")
        ),
        &[],
    )
    .await;
    assert_eq!(g.header("oci-filters-applied"), "artifactType");
    let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    let g = request(
        &s,
        "GET",
        &format!("{name}/referrers/{digest}?artifactType=application/x-other"),
        &[],
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 0);
    // An unknown subject has an empty referrers list, not an error.
    let zero = format!("sha256:{}", "0".repeat(64));
    let g = request(&s, "GET", &format!("{name}/referrers/{zero}"), &[]).await;
    assert_eq!(g.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
    assert_eq!(v["manifests"], serde_json::json!([]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirror_namespaces_route_factory_and_ghcr_names_and_refuse_others_fast() {
    let Some((_kit, s, id)) = setup().await else {
        return;
    };
    let name = format!("metal-installer/{id}");
    let (index, _) = pull_manifests(&s, &name).await;
    let via = request(
        &s,
        "GET",
        &format!("{name}/manifests/{V}?ns=factory.talos.dev"),
        &[ACCEPT],
    )
    .await;
    assert_eq!(via.status, 200);
    assert_eq!(via.body, index.body);
    // ghcr.io's installer is our build of the vanilla schematic (stored on first use).
    let vanilla = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
    let ghcr = request(
        &s,
        "GET",
        &format!("siderolabs/installer/manifests/{V}?ns=ghcr.io"),
        &[ACCEPT],
    )
    .await;
    assert_eq!(ghcr.status, 200, "{}", ghcr.text());
    let direct = request(
        &s,
        "GET",
        &format!("installer/{vanilla}/manifests/{V}"),
        &[ACCEPT],
    )
    .await;
    assert_eq!(ghcr.body, direct.body);
    // Imported source images by their upstream names, byte-identical.
    let imager = request(
        &s,
        "GET",
        &format!("siderolabs/imager/manifests/{V}?ns=ghcr.io"),
        &[ACCEPT],
    )
    .await;
    assert_eq!(imager.status, 200, "{}", imager.text());
    let digest = imager.header("docker-content-digest").to_string();
    assert_eq!(digest, format!("sha256:{}", sha256_hex(&imager.body)));
    let tags = request(&s, "GET", "siderolabs/imager/tags/list?ns=ghcr.io", &[]).await;
    assert!(tags.text().contains(V), "{}", tags.text());
    // Anything we do not hold: NAME_UNKNOWN at once.
    for (path, ns) in [
        ("library/alpine/manifests/3", "docker.io"),
        ("siderolabs/talos/manifests/v1", "ghcr.io"),
        ("someone/else/manifests/v1", "ghcr.io"),
        (&format!("{name}/manifests/{V}") as &str, "quay.io"),
    ] {
        let t = std::time::Instant::now();
        let g = request(&s, "GET", &format!("{path}?ns={ns}"), &[]).await;
        assert_eq!(g.status, 404, "{path} ns={ns}");
        assert_eq!(error_code(&g), "NAME_UNKNOWN", "{path} ns={ns}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_build_refused_by_admission_is_429_toomanyrequests_with_retry_after() {
    // Large extensions make each build take seconds.
    let Some(k) = kit::imported(24) else { return };
    let data = k.data.display().to_string();
    let s = TestServer::start_with(move |c| {
        c.storage.data_dir = data;
        c.cache.gc_interval_seconds = 0;
        c.cache.scrub_interval_seconds = 0;
        c.build.max_concurrency = 1;
        c.build.max_queue = 1;
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let yaml = format!(
            "customization:\n  extraKernelArgs:\n    - if.busy={i}\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/kmod-test\n      - siderolabs/fw-test\n"
        );
        ids.push(create_schematic(&s, &yaml).await);
    }
    // Two slow builds hold the one slot and the one queue place.
    let mut busy = Vec::new();
    for id in &ids[..2] {
        let url = s.url(&format!("/image/{id}/{V}/metal-amd64.iso"));
        busy.push(tokio::spawn(async move {
            client()
                .get(url)
                .timeout(Duration::from_secs(600))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let g = request(
        &s,
        "GET",
        &format!("metal-installer/{}/manifests/{V}", ids[3]),
        &[],
    )
    .await;
    assert_eq!(g.status, 429, "{}", g.text());
    assert_eq!(error_code(&g), "TOOMANYREQUESTS");
    assert!(g.header("retry-after").parse::<u64>().is_ok_and(|n| n > 0));
    for b in busy {
        assert!([200, 503].contains(&b.await.unwrap().unwrap()));
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registry_build_outlives_its_client_and_runs_once() {
    // Extensions of a few MB make the build outlast the client's 100 ms.
    let Some(k) = kit::imported(4) else { return };
    let s = crate::common::assets::start(&k).await;
    let id = create_schematic(&s, kit::SCHEMATIC).await;
    let url = s.url(&format!("/v2/metal-installer/{id}/manifests/{V}"));
    // containerd resolves with HEAD; this one gives up long before the installer is built.
    let quick = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    assert!(
        quick.head(&url).send().await.is_err(),
        "built too fast to test"
    );
    let built = metric_above_zero(
        &s,
        "image_factory_assets_built_total",
        &["output_kind=\"installer\""],
    )
    .await;
    assert_eq!(built, 1.0, "the abandoned build did not finish");
    // Concurrent pulls of the built version all get the same index; nothing is built again.
    let path = format!("metal-installer/{id}/manifests/{V}");
    let pulls = (0..8).map(|_| request(&s, "GET", &path, &[]));
    let answers = futures_util::future::join_all(pulls).await;
    assert!(
        answers
            .iter()
            .all(|g| g.status == 200 && g.body == answers[0].body)
    );
    assert_eq!(
        metric(
            &s,
            "image_factory_assets_built_total",
            &["output_kind=\"installer\""]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &s,
            "image_factory_registry_pulls_total",
            &["image=\"metal-installer\""]
        )
        .await,
        8.0
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn digests_and_signatures_answer_after_a_restart_without_a_tag_request() {
    let Some((k, s, id)) = setup().await else {
        return;
    };
    let name = format!("metal-installer/{id}");
    let index = request(&s, "GET", &format!("{name}/manifests/{V}"), &[]).await;
    let digest = index.header("docker-content-digest").to_string();
    let sig_tag = format!("sha256-{}.sig", digest.strip_prefix("sha256:").unwrap());
    let sig = request(&s, "GET", &format!("{name}/manifests/{sig_tag}"), &[]).await;
    assert_eq!(sig.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&index.body).unwrap();
    let arch = v["manifests"][0]["digest"].as_str().unwrap().to_string();
    let m = request(&s, "GET", &format!("{name}/manifests/{arch}"), &[]).await;
    let m: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    s.stop().await;

    let s = crate::common::assets::start(&k).await;
    for (path, body) in [
        (format!("{name}/manifests/{digest}"), Some(&index.body)),
        (format!("{name}/manifests/{sig_tag}"), Some(&sig.body)),
        (format!("{name}/manifests/{arch}"), None),
        (format!("{name}/blobs/{layer}"), None),
    ] {
        let g = request(&s, "GET", &path, &[]).await;
        assert_eq!(g.status, 200, "{path}: {}", g.text());
        if let Some(b) = body {
            // The stored signature, not a new one.
            assert_eq!(&g.body, b, "{path}");
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_layer_or_manifest_is_never_served_and_is_rebuilt_identical() {
    let Some((k, s, id)) = setup().await else {
        return;
    };
    let name = format!("metal-installer/{id}");
    let (_, manifest) = pull_manifests(&s, &name).await;
    let m: serde_json::Value = serde_json::from_slice(&manifest.body).unwrap();
    let layer = m["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let good = request(&s, "GET", &format!("{name}/blobs/{layer}"), &[]).await;
    assert_eq!(good.status, 200);
    let blob_file = |bytes: &[u8]| {
        let h = blake3::hash(bytes).to_hex().to_string();
        k.data.join("blobs").join(&h[..2]).join(&h)
    };
    // The artifacts layer, damaged on disk: the download is cut short, never complete.
    crate::common::assets::flip_byte(&blob_file(&good.body), good.body.len() as u64 / 2);
    let resp = client()
        .get(s.url(&format!("/v2/{name}/blobs/{layer}")))
        .send()
        .await
        .unwrap();
    assert!(
        resp.bytes().await.is_err(),
        "a damaged layer was served whole"
    );
    // Set aside with its installer; the next pull rebuilds the same bytes.
    let again = request(&s, "GET", &format!("{name}/blobs/{layer}"), &[]).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.body, good.body);

    // The image manifest, damaged on disk: refused (503, retry), then rebuilt identical.
    crate::common::assets::flip_byte(&blob_file(&manifest.body), 10);
    let digest = format!("sha256:{}", sha256_hex(&manifest.body));
    let refused = request(&s, "GET", &format!("{name}/manifests/{digest}"), &[]).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(!refused.header("retry-after").is_empty());
    let rebuilt = request(&s, "GET", &format!("{name}/manifests/{digest}"), &[]).await;
    assert_eq!(rebuilt.status, 200, "{}", rebuilt.text());
    assert_eq!(rebuilt.body, manifest.body);
    assert!(
        metric(
            &s,
            "image_factory_assets_verification_failures_total",
            &["what=\"blob\""]
        )
        .await
            >= 2.0
    );
    s.stop().await;
}
