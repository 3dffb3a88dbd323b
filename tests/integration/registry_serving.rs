//! What the factory's registry adds to the spec: mirror namespaces, admission, builds detached
//! from their clients, digests that survive a restart, damage never served.

use std::time::Duration;

use crate::common::assets::{V, create_schematic, metric, metric_above_zero, sha256_hex};
use crate::common::kit;
use crate::common::oci::{ACCEPT, error_code, pull_manifests, request, setup};
use crate::common::{TestServer, client};

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
    // Extensions of a few MB make each build take seconds.
    let Some(k) = kit::imported(8) else { return };
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
    for i in 0..3 {
        let yaml = format!(
            "customization:\n  extraKernelArgs:\n    - if.busy={i}\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/kmod-test\n      - siderolabs/fw-test\n"
        );
        ids.push(create_schematic(&s, &yaml).await);
    }
    // Two slow builds: one holds the one slot, the other the one queue place. Admission is
    // full once the queue gauge shows the waiter (no guess at how long that takes).
    let mut busy = Vec::new();
    for id in &ids[..2] {
        let url = s.url(&format!("/image/{id}/{V}/metal-amd64.iso"));
        busy.push(tokio::spawn(async move {
            client()
                .get(url)
                .timeout(Duration::from_secs(600))
                .send()
                .await
        }));
    }
    let queued = metric_above_zero(&s, "image_factory_assets_build_queue_depth", &[]).await;
    assert_eq!(queued, 1.0, "the second build never waited for the slot");
    let g = request(
        &s,
        "GET",
        &format!("metal-installer/{}/manifests/{V}", ids[2]),
        &[],
    )
    .await;
    assert_eq!(g.status, 429, "{}", g.text());
    assert_eq!(error_code(&g), "TOOMANYREQUESTS");
    assert!(g.header("retry-after").parse::<u64>().is_ok_and(|n| n > 0));
    // Refused by admission, not by anything else.
    let refused = metric(&s, "image_factory_assets_build_refused_total", &[]).await;
    assert_eq!(refused, 1.0);
    for b in busy {
        b.abort();
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
    let quick = crate::common::impatient_client(Duration::from_millis(100));
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
    let index = request(&s, "GET", &format!("{name}/manifests/{V}"), &[ACCEPT]).await;
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
