//! The registry frontend against the OCI distribution spec's pull and content-discovery
//! requirements, one test per requirement, named by the spec's endpoint IDs (end-1 ping, end-2
//! blobs, end-3 manifests, end-8a/8b tag lists, end-12a/12b referrers) and `Range`; the push
//! endpoints and the error envelope are in `registry_errors.rs`. On the imported test kit:
//! installer images built on a miss, served from our store, identical to the installer tarball.

use crate::common::TestServer;
use crate::common::assets::{V, sha256_hex};
use crate::common::oci::{
    ACCEPT, DOCKER_LIST, DOCKER_MANIFEST, INDEX, MANIFEST, Pulled, SIG_ARTIFACT,
    assert_content_headers, error_code, installer_tarball, pull_manifests, request, request_raw,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_1_ping_answers_200_to_get_and_head() {
    let s = TestServer::start().await;
    for m in ["GET", "HEAD"] {
        let g = request(&s, m, "", &[]).await;
        assert_eq!(g.status, 200, "{m} /v2/");
        assert_eq!(g.header("docker-distribution-api-version"), "registry/2.0");
        let body: &[u8] = if m == "GET" { b"{}" } else { b"" };
        assert_eq!(g.body, body, "{m}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_2_blob_get_and_head_by_digest_answer_the_installer_tarball_content() {
    let Some(p) = Pulled::new().await else { return };
    let tarball = installer_tarball(&p.s.url(""), &p.id).await;
    // One build, two frontends: the config and every layer are the tarball's entries.
    let blobs = p.blobs();
    assert!(blobs.len() >= 3, "a config and two layers: {blobs:?}");
    let archive: serde_json::Value =
        serde_json::from_slice(&tarball["manifest.json"]).expect("manifest.json");
    assert_eq!(archive[0]["Config"], blobs[0]);
    for (i, digest) in blobs.iter().enumerate() {
        let entry = if i == 0 {
            digest.clone()
        } else {
            format!("{}.tar.gz", digest.strip_prefix("sha256:").unwrap())
        };
        let bytes = tarball
            .get(&entry)
            .unwrap_or_else(|| panic!("{entry} not in the tarball"));
        let g = p.get("GET", &format!("blobs/{digest}"), &[]).await;
        assert_eq!(g.status, 200, "{digest}: {}", g.text());
        assert_eq!(&g.body, bytes, "{digest}");
        assert_eq!(g.header("docker-content-digest"), digest.as_str());
        assert_eq!(g.header("content-length"), bytes.len().to_string());
        assert_eq!(g.header("content-type"), "application/octet-stream");
        assert_eq!(g.header("etag"), format!("\"{digest}\""));
        assert_eq!(g.header("docker-distribution-api-version"), "registry/2.0");
        // HEAD: GET's headers, no body.
        let h = p.get("HEAD", &format!("blobs/{digest}"), &[]).await;
        assert_eq!(h.status, 200);
        assert!(h.body.is_empty());
        for name in [
            "docker-content-digest",
            "content-length",
            "etag",
            "content-type",
        ] {
            assert_eq!(h.header(name), g.header(name), "HEAD {digest}: {name}");
        }
    }
    p.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_3_manifest_by_tag_is_an_index_over_the_release_architectures() {
    let Some(p) = Pulled::new().await else { return };
    assert_content_headers(&p.index, INDEX, "index");
    let v: serde_json::Value = serde_json::from_slice(&p.index.body).unwrap();
    assert_eq!(v["mediaType"], INDEX);
    let entries = v["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "the kit release holds amd64 only: {v}");
    assert_eq!(entries[0]["platform"]["architecture"], "amd64");
    assert_eq!(entries[0]["platform"]["os"], "linux");
    assert_eq!(entries[0]["mediaType"], MANIFEST);
    assert_eq!(entries[0]["digest"], p.manifest_digest());
    assert_eq!(entries[0]["size"], p.manifest.body.len());
    // `latest` is the newest stable imported version (the kit's only one).
    let latest = p.get("GET", "manifests/latest", &[ACCEPT]).await;
    assert_eq!(latest.status, 200);
    assert_eq!(latest.body, p.index.body);
    // The legacy name serves the same images (same profile, same cache key).
    let (_, legacy) = pull_manifests(&p.s, &format!("installer/{}", p.id)).await;
    assert_eq!(legacy.body, p.manifest.body);
    p.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_3_manifest_by_digest_is_the_same_bytes() {
    let Some(p) = Pulled::new().await else { return };
    // The per-arch image manifest by digest.
    assert_content_headers(&p.manifest, MANIFEST, "manifest");
    let m: serde_json::Value = serde_json::from_slice(&p.manifest.body).unwrap();
    assert_eq!(m["mediaType"], MANIFEST);
    // The index by its own digest is the bytes the tag answered.
    let again = p
        .get("GET", &format!("manifests/{}", p.index_digest()), &[ACCEPT])
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, p.index.body);
    assert_content_headers(&again, INDEX, "index by digest");
    p.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_3_manifest_head_answers_get_headers_without_a_body() {
    let Some(p) = Pulled::new().await else { return };
    for (reference, get) in [
        (V.to_string(), &p.index),
        (p.index_digest(), &p.index),
        (p.manifest_digest(), &p.manifest),
    ] {
        let head = p
            .get("HEAD", &format!("manifests/{reference}"), &[ACCEPT])
            .await;
        assert_eq!(head.status, 200, "HEAD {reference}");
        assert!(head.body.is_empty());
        for h in [
            "content-type",
            "docker-content-digest",
            "content-length",
            "etag",
            "docker-distribution-api-version",
        ] {
            assert_eq!(head.header(h), get.header(h), "HEAD {reference}: {h}");
        }
    }
    p.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_3_manifest_form_is_negotiated_from_accept() {
    let Some(p) = Pulled::new().await else { return };
    let (index, manifest) = (p.index_digest(), p.manifest_digest());
    let docker_only = format!("{DOCKER_LIST}, {DOCKER_MANIFEST}");
    // (Accept, the digest and type answered for the tag.)
    let cases: [(Option<&str>, &str, &str); 7] = [
        (Some(INDEX), &index, INDEX),
        (Some(&docker_only), &index, INDEX),
        (Some("*/*"), &index, INDEX),
        (
            Some("application/vnd.oci.image.index.v1+json;q=0.1"),
            &index,
            INDEX,
        ),
        // No index accepted: the default platform's manifest, as distribution answers a list.
        (Some(MANIFEST), &manifest, MANIFEST),
        (Some(DOCKER_MANIFEST), &manifest, MANIFEST),
        (None, &manifest, MANIFEST),
    ];
    let addr = p.s.addrs.http.to_string();
    for (accept, digest, media_type) in cases {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        for method in ["GET", "HEAD"] {
            let path = format!("{}/manifests/{V}", p.name);
            let g = request_raw(&addr, method, &path, &headers).await;
            assert_eq!(g.status, 200, "{method} {accept:?}: {}", g.text());
            assert_eq!(
                g.header("docker-content-digest"),
                digest,
                "{method} {accept:?}"
            );
            assert_eq!(g.header("content-type"), media_type, "{method} {accept:?}");
            if method == "GET" {
                assert_content_headers(&g, media_type, &format!("{accept:?}"));
            }
        }
    }
    // By digest the stored bytes are answered whatever Accept says: a digest names them.
    for accept in [vec![("accept", MANIFEST)], vec![]] {
        let path = format!("{}/manifests/{index}", p.name);
        let g = request_raw(&addr, "GET", &path, &accept).await;
        assert_eq!(g.status, 200);
        assert_eq!(g.body, p.index.body, "{accept:?}");
        assert_eq!(g.header("content-type"), INDEX);
    }
    // The mirror of ghcr.io negotiates the same way.
    let g = request(
        &p.s,
        "GET",
        &format!("siderolabs/installer/manifests/{V}?ns=ghcr.io"),
        &[("accept", MANIFEST)],
    )
    .await;
    assert_eq!(g.status, 200, "{}", g.text());
    assert_eq!(g.header("content-type"), MANIFEST);
    let m: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
    assert_eq!(m["mediaType"], MANIFEST);
    p.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_8a_tag_list_names_versions_latest_and_signature_tags_sorted() {
    let Some(p) = Pulled::new().await else { return };
    let g = p.get("GET", "tags/list", &[]).await;
    assert_eq!(g.status, 200, "{}", g.text());
    assert!(g.header("content-type").starts_with("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
    assert_eq!(v["name"], p.name);
    let tags = p.tags().await;
    let sig = |d: &str| format!("sha256-{}.sig", d.strip_prefix("sha256:").unwrap());
    let mut expected = vec![
        V.to_string(),
        "latest".to_string(),
        sig(&p.index_digest()),
        sig(&p.manifest_digest()),
    ];
    expected.sort();
    assert_eq!(tags, expected);
    p.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_8b_tag_list_pages_with_n_and_last_and_links_the_next_page() {
    let Some(p) = Pulled::new().await else { return };
    let tags = p.tags().await;
    assert!(tags.len() >= 3, "{tags:?}");
    // n=1: the first tag, and a Link to the page after it.
    let g = p.get("GET", "tags/list?n=1", &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
    assert_eq!(v["tags"], serde_json::json!([tags[0]]));
    assert_eq!(
        g.header("link"),
        format!(
            "</v2/{}/tags/list?n=1&last={}>; rel=\"next\"",
            p.name, tags[0]
        )
    );
    // last: the tags after it, at most n; the last page has no Link.
    let g = p
        .get("GET", &format!("tags/list?n=100&last={}", tags[0]), &[])
        .await;
    let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
    assert_eq!(v["tags"], serde_json::json!(tags[1..]));
    assert!(g.header("link").is_empty());
    let g = p.get("GET", "tags/list?n=0", &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
    assert_eq!(v["tags"], serde_json::json!([]));
    // Through the mirror, the Link keeps `ns`: following it walks the same list.
    let mut walked = Vec::new();
    let mut next = format!("/v2/{}/tags/list?n=2&ns=factory.talos.dev", p.name);
    for _ in 0..tags.len() {
        let g = crate::common::assets::get(&p.s, &next, &[]).await;
        assert_eq!(g.status, 200, "{next}: {}", g.text());
        let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
        walked.extend(serde_json::from_value::<Vec<String>>(v["tags"].clone()).unwrap());
        let link = g.header("link");
        if link.is_empty() {
            break;
        }
        assert!(link.contains("ns=factory.talos.dev"), "{link}");
        next = link
            .strip_prefix('<')
            .and_then(|l| l.split_once('>'))
            .map(|(u, _)| u.to_string())
            .unwrap();
    }
    assert_eq!(walked, tags);
    // An n that is not a non-negative integer is refused, as distribution refuses it.
    for n in ["abc", "-1", "1.5"] {
        let g = p.get("GET", &format!("tags/list?n={n}"), &[]).await;
        assert_eq!(g.status, 400, "n={n}: {}", g.text());
        assert_eq!(error_code(&g), "PAGINATION_NUMBER_INVALID", "n={n}");
    }
    p.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_12a_referrers_list_the_signature_as_an_index() {
    let Some(p) = Pulled::new().await else { return };
    for subject in [p.index_digest(), p.manifest_digest()] {
        let g = p.get("GET", &format!("referrers/{subject}"), &[]).await;
        assert_eq!(g.status, 200, "{}", g.text());
        // An answer computed per request: type, digest and length, no ETag.
        assert_eq!(g.header("content-type"), INDEX);
        assert_eq!(
            g.header("docker-content-digest"),
            format!("sha256:{}", sha256_hex(&g.body))
        );
        assert_eq!(g.header("content-length"), g.body.len().to_string());
        assert!(g.header("oci-filters-applied").is_empty());
        let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
        assert_eq!(v["mediaType"], INDEX);
        assert_eq!(v["manifests"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v["manifests"][0]["artifactType"], SIG_ARTIFACT);
        // The referrer is a manifest here whose subject is the digest asked about.
        let referrer = v["manifests"][0]["digest"].as_str().unwrap();
        let m = p
            .get("GET", &format!("manifests/{referrer}"), &[ACCEPT])
            .await;
        assert_eq!(m.status, 200);
        assert_eq!(
            m.body.len() as u64,
            v["manifests"][0]["size"].as_u64().unwrap()
        );
        let m: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(m["subject"]["digest"], subject);
        assert_eq!(m["artifactType"], SIG_ARTIFACT);
    }
    // An unknown subject has an empty referrers list, not an error.
    let zero = format!("sha256:{}", "0".repeat(64));
    let g = p.get("GET", &format!("referrers/{zero}"), &[]).await;
    assert_eq!(g.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
    assert_eq!(v["manifests"], serde_json::json!([]));
    p.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_12b_referrers_filter_by_artifact_type() {
    let Some(p) = Pulled::new().await else { return };
    let digest = p.index_digest();
    let sig = SIG_ARTIFACT.replace('+', "%2B");
    for (filter, count) in [(sig.as_str(), 1), ("application/x-other", 0)] {
        let g = p
            .get(
                "GET",
                &format!("referrers/{digest}?artifactType={filter}"),
                &[],
            )
            .await;
        assert_eq!(g.status, 200);
        assert_eq!(g.header("oci-filters-applied"), "artifactType", "{filter}");
        let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
        assert_eq!(
            v["manifests"].as_array().unwrap().len(),
            count,
            "{filter}: {v}"
        );
    }
    p.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn range_requests_answer_206_and_an_unsatisfiable_range_416_as_distribution() {
    let Some(p) = Pulled::new().await else { return };
    let digest = p.blobs().pop().unwrap();
    let whole = p.get("GET", &format!("blobs/{digest}"), &[]).await;
    let len = whole.body.len();
    let g = p
        .get(
            "GET",
            &format!("blobs/{digest}"),
            &[("range", "bytes=10-99")],
        )
        .await;
    assert_eq!(g.status, 206);
    assert_eq!(g.body, whole.body[10..100]);
    assert_eq!(g.header("content-range"), format!("bytes 10-99/{len}"));
    assert_eq!(g.header("content-length"), "90");
    assert_eq!(g.header("docker-content-digest"), digest);
    let suffix = p
        .get("GET", &format!("blobs/{digest}"), &[("range", "bytes=-5")])
        .await;
    assert_eq!(suffix.status, 206);
    assert_eq!(suffix.body, whole.body[len - 5..]);
    // Past the end: 416 with the blob's size, digest and ETag (the blob is known: no
    // BLOB_UNKNOWN), in plain text as distribution answers it.
    let past = format!("bytes={}-", len + 10);
    let g = p
        .get("GET", &format!("blobs/{digest}"), &[("range", &past)])
        .await;
    assert_eq!(g.status, 416);
    assert_eq!(g.header("content-range"), format!("bytes */{len}"));
    assert_eq!(g.header("docker-content-digest"), digest);
    assert_eq!(g.header("etag"), format!("\"{digest}\""));
    assert_eq!(g.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(g.header("content-length"), g.body.len().to_string());
    assert!(!g.text().contains("BLOB_UNKNOWN"), "{}", g.text());
    p.s.stop().await;
}
