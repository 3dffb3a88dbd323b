//! HTTP API against a real in-process server (loopback, port 0).

use crate::common::{TestServer, VECTORS, client};
use reqwest::StatusCode;

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

async fn assert_go_error(resp: reqwest::Response, status: StatusCode, body: &str) {
    assert_eq!(resp.status(), status);
    assert_eq!(header(&resp, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
    assert_eq!(resp.text().await.unwrap(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_then_get_round_trip() {
    let srv = TestServer::start().await;
    let c = client();
    for (input, canonical, id) in VECTORS {
        let resp = c
            .post(srv.url("/schematics"))
            .header("content-type", "application/yaml")
            .body(*input)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "input {input:?}");
        assert_eq!(header(&resp, "content-type"), "application/json");
        let expected = format!(
            "{{\"id\":\"{id}\",\"schematic\":{}}}\n",
            serde_json::to_string(canonical).unwrap()
        );
        assert_eq!(resp.text().await.unwrap(), expected, "input {input:?}");

        let resp = c
            .get(srv.url(&format!("/schematics/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header(&resp, "content-type"), "application/yaml");
        assert_eq!(resp.text().await.unwrap(), *canonical);
    }
    // Re-posting is idempotent: 201 again with the same ID.
    let resp = c
        .post(srv.url("/schematics"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert!(resp.text().await.unwrap().contains(VECTORS[0].2));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_parallel_posts_all_correct() {
    let srv = TestServer::start().await;
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..100usize {
        let (input, _, id) = VECTORS[i % VECTORS.len()];
        let (c, url) = (c.clone(), srv.url("/schematics"));
        tasks.push(tokio::spawn(async move {
            let resp = c.post(url).body(input).send().await.unwrap();
            let status = resp.status();
            let body: serde_json::Value = resp.json().await.unwrap();
            (
                status,
                body["id"].as_str().unwrap_or_default().to_string(),
                id,
            )
        }));
    }
    for t in tasks {
        let (status, got, want) = t.await.unwrap();
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(got, want);
    }
    let status: serde_json::Value = c
        .get(srv.url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["schematics"], VECTORS.len());
    for (_, canonical, id) in VECTORS {
        let body = c
            .get(srv.url(&format!("/schematics/{id}")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, *canonical);
    }
    srv.stop().await;
}

#[tokio::test]
async fn invalid_schematics_are_400_with_upstream_text() {
    let srv = TestServer::start().await;
    let c = client();
    let resp = c
        .post(srv.url("/schematics"))
        .body("something:")
        .send()
        .await
        .unwrap();
    assert_go_error(
        resp,
        StatusCode::BAD_REQUEST,
        "yaml: construct errors: line 1: field something not found in type schematic.Schematic\n",
    )
    .await;
    let resp = c
        .post(srv.url("/schematics"))
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    srv.stop().await;
}

#[tokio::test]
async fn body_limit_is_ours_and_exact() {
    let srv = TestServer::start().await;
    let c = client();
    const LIMIT: usize = 1024 * 1024;
    // Exactly at the limit: read and parsed (a comment-only document is rejected as empty).
    let at_limit = format!("#{}", "a".repeat(LIMIT - 1));
    let resp = c
        .post(srv.url("/schematics"))
        .body(at_limit)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // One byte over, and far over axum's own 2 MB default: our 413 text.
    for size in [LIMIT + 1, 3 * LIMIT] {
        let body = format!("#{}", "a".repeat(size - 1));
        let resp = c
            .post(srv.url("/schematics"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_go_error(
            resp,
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large: limit is 1048576 bytes\n",
        )
        .await;
    }
    srv.stop().await;
}

#[tokio::test]
async fn body_limit_applies_to_chunked_bodies() {
    let srv = TestServer::start_with(|c| c.http.max_body_bytes = 100).await;
    let chunks: Vec<Result<&'static str, std::io::Error>> = (0..3)
        .map(|_| Ok("#aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"))
        .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let resp = client()
        .post(srv.url("/schematics"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_go_error(
        resp,
        StatusCode::PAYLOAD_TOO_LARGE,
        "request body too large: limit is 100 bytes\n",
    )
    .await;
    srv.stop().await;
}

#[tokio::test]
async fn not_found_and_method_not_allowed_texts() {
    let srv = TestServer::start().await;
    let c = client();
    let resp = c.get(srv.url("/nope")).send().await.unwrap();
    assert_go_error(resp, StatusCode::NOT_FOUND, "404 page not found\n").await;
    let unknown = "0".repeat(64);
    for id in [
        unknown.as_str(),
        "zzz",
        "376567988AD370138AD8B2698212367B8EDCB69B5FD68C80BE1F2EC7D603B4BA",
    ] {
        let resp = c
            .get(srv.url(&format!("/schematics/{id}")))
            .send()
            .await
            .unwrap();
        assert_go_error(resp, StatusCode::NOT_FOUND, "schematic not found\n").await;
    }
    let resp = c.delete(srv.url("/schematics")).send().await.unwrap();
    assert_eq!(header(&resp, "allow"), "POST");
    assert_go_error(resp, StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n").await;
    let resp = c.get(srv.url("/schematics")).send().await.unwrap();
    assert_eq!(header(&resp, "allow"), "POST");
    assert_go_error(resp, StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n").await;
    let resp = c
        .post(srv.url(&format!("/schematics/{unknown}")))
        .send()
        .await
        .unwrap();
    assert!(header(&resp, "allow").contains("GET"));
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    srv.stop().await;
}

#[tokio::test]
async fn near_miss_paths_redirect_and_head_only_where_upstream_has_it() {
    let srv = TestServer::start().await;
    let c = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (path, to) in [
        ("/versions/", "/versions"),
        ("/VERSIONS", "/versions"),
        ("//versions", "/versions"),
        ("/Versions/?broken=true", "/versions?broken=true"),
        ("/HEALTHZ", "/healthz"),
        ("/Schematics/AbC", "/schematics/AbC"),
    ] {
        let resp = c.get(srv.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::MOVED_PERMANENTLY, "{path}");
        assert_eq!(header(&resp, "location"), to, "{path}");
        assert!(resp.text().await.unwrap().contains("Moved Permanently"));
    }
    // Other methods keep their method and body: 307.
    let resp = c
        .post(srv.url("/SCHEMATICS"))
        .body("customization: {}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(header(&resp, "location"), "/schematics");
    // Nothing near: 404.
    let resp = c.get(srv.url("/versionz")).send().await.unwrap();
    assert_go_error(resp, StatusCode::NOT_FOUND, "404 page not found\n").await;

    // HEAD where upstream's router has it, 405 where it has GET only.
    for (path, status) in [
        ("/healthz", StatusCode::OK),
        ("/readyz", StatusCode::OK),
        ("/versions", StatusCode::METHOD_NOT_ALLOWED),
        (
            "/version/v1.11.0/extensions/official",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "/oci/cosign/signing-key.pub",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            &format!("/schematics/{}", "0".repeat(64)),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            &format!("/pxe/{}/v1.11.0/metal-amd64", "0".repeat(64)),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            &format!("/image/{}/v1.11.0/metal-amd64.iso", "0".repeat(64)),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let resp = c.head(srv.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), status, "HEAD {path}");
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert_eq!(header(&resp, "allow"), "GET, OPTIONS", "HEAD {path}");
        }
    }
    srv.stop().await;
}

#[tokio::test]
async fn server_header_and_request_id() {
    let srv = TestServer::start().await;
    let c = client();
    let resp = c
        .get(srv.url("/healthz"))
        .header("X-Request-ID", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&resp, "x-request-id"), "abc-123");
    assert_eq!(
        header(&resp, "server"),
        concat!("Image Factory v", env!("CARGO_PKG_VERSION"))
    );
    // Fresh UUIDv4 when absent, also on error responses.
    let resp = c.get(srv.url("/nope")).send().await.unwrap();
    let rid = uuid::Uuid::parse_str(header(&resp, "x-request-id")).expect("uuid");
    assert_eq!(rid.get_version_num(), 4);
    assert!(!header(&resp, "server").is_empty());
    srv.stop().await;
}

#[tokio::test]
async fn cors_preflight_and_simple_requests() {
    let srv = TestServer::start().await;
    let c = client();
    let resp = c
        .request(reqwest::Method::OPTIONS, srv.url("/schematics/abc"))
        .header("Origin", "http://ui.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "cache-control")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(header(&resp, "access-control-allow-origin"), "*");
    assert!(header(&resp, "access-control-allow-methods").contains("GET"));
    assert!(
        header(&resp, "access-control-allow-headers")
            .to_ascii_lowercase()
            .contains("cache-control")
    );

    let resp = c
        .get(srv.url("/healthz"))
        .header("Origin", "http://ui.example")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&resp, "access-control-allow-origin"), "*");
    let exposed = header(&resp, "access-control-expose-headers").to_ascii_lowercase();
    for h in ["content-disposition", "content-length", "content-type"] {
        assert!(exposed.contains(h), "{exposed}");
    }
    srv.stop().await;

    // A restricted origin list: other origins get no CORS headers.
    let srv =
        TestServer::start_with(|c| c.http.allowed_origins = vec!["http://ok.example".into()]).await;
    let resp = c
        .get(srv.url("/healthz"))
        .header("Origin", "http://ok.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&resp, "access-control-allow-origin"),
        "http://ok.example"
    );
    let resp = c
        .get(srv.url("/healthz"))
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&resp, "access-control-allow-origin"), "");
    srv.stop().await;
}

#[tokio::test]
async fn health_status_and_metrics() {
    let srv = TestServer::start().await;
    let c = client();
    for path in ["/healthz", "/readyz"] {
        let resp = c.get(srv.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.text().await.unwrap(), "");
        let resp = c.head(srv.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }

    c.post(srv.url("/schematics"))
        .body("{}")
        .send()
        .await
        .unwrap();
    c.post(srv.url("/schematics"))
        .body("customization: {}")
        .send()
        .await
        .unwrap();
    c.get(srv.url(&format!("/schematics/{}", VECTORS[0].2)))
        .send()
        .await
        .unwrap();

    let status: serde_json::Value = c
        .get(srv.url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["listeners"]["http"], srv.addrs.http.to_string());
    assert_eq!(
        status["listeners"]["metrics"],
        srv.addrs.metrics.unwrap().to_string()
    );
    assert_eq!(status["schematics"], 1);
    // No filesystem path reaches an anonymous client; the admin listener shows them.
    assert_eq!(status["listeners"]["admin"], "unix");
    let text = status.to_string();
    let data_dir = std::fs::canonicalize(srv.dir.path()).unwrap();
    assert!(!text.contains(&data_dir.display().to_string()), "{text}");
    assert!(
        !text.contains(&srv.dir.path().display().to_string()),
        "{text}"
    );
    let token = std::fs::read_to_string(srv.dir.path().join("keys/admin-token")).unwrap();
    let (admin, url) = srv.admin("/admin/status");
    let full: serde_json::Value = admin
        .get(url)
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(full["dataDir"], data_dir.display().to_string());
    assert_eq!(full["schematics"], 1);
    assert_eq!(full["allListeners"]["admin"], srv.admin_server_arg());
    assert!(
        srv.admin_server_arg()
            .ends_with(&format!("{}/admin.sock", srv.dir.path().display()))
    );
    assert!(srv.dir.path().join("blobs").is_dir());
    assert!(srv.dir.path().join("meta").is_dir());
    assert!(srv.dir.path().join("keys/signing-key.pem").is_file());

    let text = c
        .get(srv.metrics_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "image_factory_schematic_create_total 1",
        "image_factory_schematic_duplicate_create_total 1",
        "image_factory_schematic_get_total 1",
        "image_factory_schematic_cache_size 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    // The standard process metrics, with this process's values.
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("missing {name} in:\n{text}"))
    };
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_open_fds") >= 3.0);
    assert!(value("process_threads") >= 1.0);
    assert!(value("process_start_time_seconds") > 1.7e9);
    value("process_cpu_seconds_total");
    let resp = c.get(srv.metrics_url("/other")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    srv.stop().await;
}

#[tokio::test]
async fn data_survives_graceful_restart_and_lock_is_reported() {
    let srv = TestServer::start().await;
    let c = client();
    let (input, canonical, id) = VECTORS[1];
    c.post(srv.url("/schematics"))
        .body(input)
        .send()
        .await
        .unwrap();
    let dir = srv.dir.path().to_path_buf();

    // A second server on the same data directory is refused with a clear message.
    let mut cfg = image_factory::config::Config::default();
    cfg.storage.data_dir = dir.display().to_string();
    cfg.http.http_listen_addr = "127.0.0.1:0".into();
    cfg.metrics.addr = String::new();
    let err = image_factory::frontend::serve(cfg, std::future::pending())
        .await
        .err()
        .expect("second server must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("locked") && msg.contains(&dir.join("meta").display().to_string()),
        "{msg}"
    );

    let tmp = srv.stop_keep_dir().await;
    let srv =
        TestServer::start_with(|c| c.storage.data_dir = tmp.path().display().to_string()).await;
    let body = c
        .get(srv.url(&format!("/schematics/{id}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, canonical);
    srv.stop().await;
    drop(tmp);
}
