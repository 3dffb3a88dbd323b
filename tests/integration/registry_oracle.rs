//! Behaviour oracle: Debian's `docker-registry`, holding the same installer image (copied from
//! us with skopeo, digests preserved), must answer the same pull-side requests with the same
//! status codes, headers and error codes as our registry. Every intended difference is listed
//! here and in docs/api.md.

use crate::common::assets::{Got, V};
use crate::common::client;
use crate::common::oci::{error_code, request, setup};
use crate::common::registry;

/// Headers compared on every answer (when either side sets them).
const COMPARED: [&str; 6] = [
    "content-type",
    "content-length",
    "docker-content-digest",
    "docker-distribution-api-version",
    "content-range",
    "etag",
];

/// Intended differences: (request label, header) pairs where ours differs by design.
const INTENDED: &[(&str, &str, &str)] = &[
    // A range past the end: distribution answers 416 with the blob's headers (digest, ETag,
    // its length) and a short text body; ours is an OCI error envelope (BLOB_UNKNOWN code,
    // `Content-Range: bytes */<size>` as both send) without the blob's headers.
    (
        "blob range past end",
        "docker-content-digest",
        "416 is an error answer",
    ),
    ("blob range past end", "etag", "416 is an error answer"),
    ("blob range past end", "content-length", "error text"),
    (
        "blob range past end",
        "content-type",
        "416 body is an error envelope",
    ),
    // Error bodies: distribution's messages and `detail` objects differ from ours; the codes,
    // checked separately, are the same. Their lengths therefore differ.
    ("unknown tag", "content-length", "error text"),
    ("unknown manifest digest", "content-length", "error text"),
    ("unknown blob digest", "content-length", "error text"),
    ("unknown name", "content-length", "error text"),
    // Tag lists: Debian's distribution (2.8) ignores `n` and `last` and lists every tag; ours
    // pages as the spec says (checked against the oracle's full list, cut by `last` and `n`),
    // with a `Link` to the next page. The JSON may differ in whitespace.
    ("tags", "content-length", "JSON formatting"),
    ("tags n=1", "content-length", "JSON formatting"),
    ("tags last", "content-length", "JSON formatting"),
];

/// Intended differences of error code: (request label, ours, theirs).
const INTENDED_CODES: &[(&str, &str, &str)] = &[
    // distribution answers a manifest of a repository it never saw with MANIFEST_UNKNOWN; ours
    // names the unknown repository (NAME_UNKNOWN), the spec's code for it.
    ("unknown name", "NAME_UNKNOWN", "MANIFEST_UNKNOWN"),
];

/// One compared request: label, method, path below `/v2/`, extra headers.
type Compared<'a> = (&'a str, &'a str, String, Vec<(&'a str, &'a str)>);

async fn get(base: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client().request(m, format!("{base}/v2/{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    // docker-registry's 416 declares the blob's length but sends a short error text (Go's
    // ServeContent): a body that ends early is read as far as it goes.
    let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    Got {
        status,
        headers,
        body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_registry_holding_the_same_image_answers_the_same_pull_requests() {
    if !testsupport::tools::have("skopeo", "skopeo") {
        return;
    }
    let Some(oracle) = registry::start() else {
        return;
    };
    let Some((_kit, s, id)) = setup().await else {
        return;
    };
    let name = format!("metal-installer/{id}");
    let index = request(&s, "GET", &format!("{name}/manifests/{V}"), &[]).await;
    assert_eq!(index.status, 200);
    let index_digest = index.header("docker-content-digest").to_string();
    let v: serde_json::Value = serde_json::from_slice(&index.body).unwrap();
    let arch_digest = v["manifests"][0]["digest"].as_str().unwrap().to_string();
    let arch = request(&s, "GET", &format!("{name}/manifests/{arch_digest}"), &[]).await;
    let m: serde_json::Value = serde_json::from_slice(&arch.body).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let layer_size = m["layers"][0]["size"].as_u64().unwrap();
    let config = m["config"]["digest"].as_str().unwrap().to_string();
    let sig_tags: Vec<String> = [&index_digest, &arch_digest]
        .iter()
        .map(|d| format!("sha256-{}.sig", d.strip_prefix("sha256:").unwrap()))
        .collect();

    // The oracle gets every tag we list, copied from us with its digest preserved.
    let ours = s.url("").trim_start_matches("http://").to_string();
    let theirs = oracle.addr.clone();
    let mut tags = vec![V.to_string(), "latest".to_string()];
    tags.extend(sig_tags.iter().cloned());
    let (name2, tags2) = (name.clone(), tags.clone());
    tokio::task::spawn_blocking(move || {
        for tag in &tags2 {
            let out = std::process::Command::new("skopeo")
                .args([
                    "copy",
                    "--all",
                    "--preserve-digests",
                    "--src-tls-verify=false",
                    "--dest-tls-verify=false",
                    &format!("docker://{ours}/{name2}:{tag}"),
                    &format!("docker://{theirs}/{name2}:{tag}"),
                ])
                .output()
                .expect("skopeo");
            assert!(
                out.status.success(),
                "skopeo copy {tag}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    })
    .await
    .unwrap();

    let manifest_accept = (
        "accept",
        "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
    );
    let zero = format!("sha256:{}", "0".repeat(64));
    let past = format!("bytes={}-", layer_size + 10);
    let requests: Vec<Compared> = vec![
        ("ping", "GET", String::new(), vec![]),
        ("ping head", "HEAD", String::new(), vec![]),
        (
            "manifest by tag",
            "GET",
            format!("{name}/manifests/{V}"),
            vec![manifest_accept],
        ),
        (
            "manifest head by tag",
            "HEAD",
            format!("{name}/manifests/{V}"),
            vec![manifest_accept],
        ),
        (
            "manifest by digest",
            "GET",
            format!("{name}/manifests/{index_digest}"),
            vec![manifest_accept],
        ),
        (
            "manifest head by digest",
            "HEAD",
            format!("{name}/manifests/{index_digest}"),
            vec![manifest_accept],
        ),
        (
            "image manifest",
            "GET",
            format!("{name}/manifests/{arch_digest}"),
            vec![manifest_accept],
        ),
        (
            "signature tag",
            "GET",
            format!("{name}/manifests/{}", sig_tags[0]),
            vec![manifest_accept],
        ),
        (
            "config blob",
            "GET",
            format!("{name}/blobs/{config}"),
            vec![],
        ),
        ("layer blob", "GET", format!("{name}/blobs/{layer}"), vec![]),
        (
            "layer blob head",
            "HEAD",
            format!("{name}/blobs/{layer}"),
            vec![],
        ),
        (
            "blob range",
            "GET",
            format!("{name}/blobs/{layer}"),
            vec![("range", "bytes=0-99")],
        ),
        (
            "blob range past end",
            "GET",
            format!("{name}/blobs/{layer}"),
            vec![("range", &past)],
        ),
        (
            "unknown tag",
            "GET",
            format!("{name}/manifests/v9.9.9"),
            vec![],
        ),
        (
            "unknown manifest digest",
            "GET",
            format!("{name}/manifests/{zero}"),
            vec![],
        ),
        (
            "unknown blob digest",
            "GET",
            format!("{name}/blobs/{zero}"),
            vec![],
        ),
        (
            "unknown name",
            "GET",
            format!("metal-installer/{}/manifests/{V}", "1".repeat(64)),
            vec![],
        ),
        ("tags", "GET", format!("{name}/tags/list"), vec![]),
        ("tags n=1", "GET", format!("{name}/tags/list?n=1"), vec![]),
        (
            "tags last",
            "GET",
            format!("{name}/tags/list?n=10&last={}", tags[0]),
            vec![],
        ),
    ];
    let (ob, tb) = (s.url(""), format!("http://{}", oracle.addr));
    let mut diffs = Vec::new();
    for (label, method, path, headers) in &requests {
        let a = get(&ob, method, path, headers).await;
        let b = get(&tb, method, path, headers).await;
        assert_eq!(
            a.status,
            b.status,
            "{label}: ours {} theirs {}: {}",
            a.status,
            b.status,
            b.text()
        );
        for h in COMPARED {
            let (x, y) = (a.header(h), b.header(h));
            if x != y && !INTENDED.iter().any(|(l, ih, _)| l == label && *ih == h) {
                diffs.push(format!("{label}: {h}: ours {x:?} theirs {y:?}"));
            }
            if x == y && INTENDED.iter().any(|(l, ih, _)| l == label && *ih == h) {
                diffs.push(format!("{label}: {h}: listed as different but equal"));
            }
        }
        if a.status >= 400 && *method != "HEAD" {
            let (x, y) = (
                error_code(&a),
                if a.status == 416 {
                    String::new()
                } else {
                    error_code(&b)
                },
            );
            if a.status != 416 && !INTENDED_CODES.contains(&(label, x.as_str(), y.as_str())) {
                assert_eq!(x, y, "{label}");
            }
        } else if !label.starts_with("tags") {
            assert_eq!(a.body, b.body, "{label}: bodies differ");
        } else {
            let (x, y): (serde_json::Value, serde_json::Value) = (
                serde_json::from_slice(&a.body).unwrap(),
                serde_json::from_slice(&b.body).unwrap(),
            );
            assert_eq!(x["name"], y["name"], "{label}");
            let mut all: Vec<String> = serde_json::from_value(y["tags"].clone()).unwrap();
            all.sort();
            let q: std::collections::HashMap<String, String> =
                url::form_urlencoded::parse(path.split_once('?').map_or("", |(_, q)| q).as_bytes())
                    .into_owned()
                    .collect();
            if let Some(last) = q.get("last") {
                all.retain(|t| t > last);
            }
            let cut = q
                .get("n")
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| all.len() > n);
            if let Some(n) = q.get("n").and_then(|n| n.parse::<usize>().ok()) {
                all.truncate(n);
            }
            assert_eq!(x["tags"], serde_json::json!(all), "{label}");
            assert_eq!(!a.header("link").is_empty(), cut, "{label}: Link");
        }
    }
    assert!(
        diffs.is_empty(),
        "unlisted differences:\n{}",
        diffs.join("\n")
    );
    s.stop().await;
}
