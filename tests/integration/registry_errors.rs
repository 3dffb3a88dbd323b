//! The registry's refusals: the push endpoints (read-only), the OCI error envelope and the
//! spec's codes for what is unknown or malformed, and the errors the build side answers.

use crate::common::TestServer;
use crate::common::assets::V;
use crate::common::oci::{Pulled, error_code, request, setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_and_deletes_answer_405_unsupported() {
    // end-4a/4b, 5, 6, 7, 9, 10, 11, 13, 14: this registry is read-only.
    let s = TestServer::start().await;
    let zero = format!("sha256:{}", "0".repeat(64));
    let name = format!("metal-installer/{}", "1".repeat(64));
    for (method, path) in [
        ("POST", format!("{name}/blobs/uploads/")),
        ("POST", format!("{name}/blobs/uploads/?digest={zero}")),
        (
            "POST",
            format!("{name}/blobs/uploads/?mount={zero}&from=x/y"),
        ),
        ("PATCH", format!("{name}/blobs/uploads/x")),
        ("PUT", format!("{name}/blobs/uploads/x?digest={zero}")),
        ("PUT", format!("{name}/manifests/v1.0.0")),
        ("DELETE", format!("{name}/manifests/{zero}")),
        ("DELETE", format!("{name}/blobs/{zero}")),
        ("DELETE", format!("{name}/blobs/uploads/x")),
    ] {
        let g = request(&s, method, &path, &[]).await;
        assert_eq!(g.status, 405, "{method} {path}: {}", g.text());
        assert_eq!(error_code(&g), "UNSUPPORTED", "{method} {path}");
        assert_eq!(g.header("allow"), "GET, HEAD");
        assert!(g.text().contains("read-only"), "{}", g.text());
    }
    // The upload status endpoint (end-13) is a GET of a path we do not serve.
    let g = request(&s, "GET", &format!("{name}/blobs/uploads/x"), &[]).await;
    assert_eq!(g.status, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn errors_answer_the_oci_envelope_with_the_spec_codes() {
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
        ("HEAD", format!("{name}/blobs/{zero}"), 404, ""),
        // Malformed digests.
        (
            "GET",
            format!("{name}/blobs/sha256:xyz"),
            400,
            "DIGEST_INVALID",
        ),
        (
            "GET",
            format!("{name}/blobs/sha512:{}", "0".repeat(128)),
            400,
            "DIGEST_INVALID",
        ),
        (
            "GET",
            format!("{name}/manifests/sha256:XYZ"),
            400,
            "DIGEST_INVALID",
        ),
        (
            "GET",
            format!("{name}/referrers/sha256:1"),
            400,
            "DIGEST_INVALID",
        ),
    ] {
        let g = request(&s, method, &path, &[]).await;
        assert_eq!(g.status, status, "{method} {path}: {}", g.text());
        assert_eq!(g.header("docker-distribution-api-version"), "registry/2.0");
        if method == "HEAD" {
            assert!(g.body.is_empty());
            continue;
        }
        assert_eq!(error_code(&g), code, "{method} {path}");
        assert_eq!(g.header("content-type"), "application/json; charset=utf-8");
        assert_eq!(g.header("content-length"), g.body.len().to_string());
        if code == "DIGEST_INVALID" {
            // Says what is wrong with the digest (not distribution's upload text).
            assert!(g.text().contains("invalid digest"), "{}", g.text());
            assert!(!g.text().contains("uploaded content"), "{}", g.text());
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secure_boot_names_answer_the_image_error() {
    let Some((_kit, s, id)) = setup().await else {
        return;
    };
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
async fn a_blob_whose_build_input_is_gone_is_blob_unknown() {
    let Some(p) = Pulled::new().await else { return };
    let layer = p.blobs().pop().unwrap();
    let Pulled { kit, s, name, .. } = p;
    s.stop().await;
    // The release is removed (index entry and document): the recorded blob's installer can
    // neither be served from the cache's view of the release nor rebuilt (a 404 below).
    {
        let meta = crate::common::open_data_dir_after_stop(&kit.data).await;
        image_factory::store::MetaStore::remove(&meta, "release_docs", V.as_bytes()).unwrap();
        image_factory::store::MetaStore::flush_blocking(&meta).unwrap();
    }
    std::fs::remove_dir_all(kit.data.join("blobs/docs/releases")).unwrap();
    let s = crate::common::assets::start(&kit).await;
    let g = request(&s, "GET", &format!("{name}/blobs/{layer}"), &[]).await;
    assert_eq!(g.status, 404, "{}", g.text());
    assert_eq!(error_code(&g), "BLOB_UNKNOWN", "{}", g.text());
    s.stop().await;
}
