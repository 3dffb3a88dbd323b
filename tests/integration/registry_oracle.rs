//! Behaviour oracle: Debian's `docker-registry`, holding the same installer image (copied from
//! us with skopeo, digests preserved), must answer the same pull-side requests with the same
//! status codes, headers and error codes as our registry. Every intended difference is listed
//! here and in docs/api.md.

use crate::common::assets::{Got, V};
use crate::common::oci::{error_code, request, request_raw, setup};
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

/// Intended differences of a header where both answer the same status: (request label,
/// header, why).
const INTENDED: &[(&str, &str, &str)] = &[
    // A range past the end: both answer 416 in plain text with `Content-Range: bytes */<size>`
    // and the blob's digest and ETag; distribution declares the blob's length on its short
    // error text (Go's ServeContent), ours the text's.
    (
        "blob range past end",
        "content-length",
        "distribution declares the blob's length",
    ),
    // Error bodies: distribution's messages and `detail` objects differ from ours; the codes,
    // checked separately, are the same. Their lengths therefore differ.
    ("unknown tag", "content-length", "error text"),
    ("unknown manifest digest", "content-length", "error text"),
    ("unknown blob digest", "content-length", "error text"),
    ("unknown name", "content-length", "error text"),
    ("malformed blob digest", "content-length", "error text"),
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

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// `Accept` naming both OCI types (what registry clients send).
const OCI_ACCEPT: &str =
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json";
/// `Accept` of a client that knows Docker's types only.
const DOCKER_ACCEPT: &str = "application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
/// `Accept` of a client that takes an OCI image manifest and no index.
const OCI_MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json";

/// One compared request: label, method, path below `/v2/`, the request's headers (exactly).
type Compared<'a> = (&'a str, &'a str, String, Vec<(&'a str, &'a str)>);

/// What one side answers where the two differ by design.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// An error: status and envelope code (none for a `HEAD`, which has no body).
    Error(u16, String),
    /// A manifest: `Content-Type` and `Docker-Content-Digest`.
    Manifest(&'static str, String),
    /// A 200 that is not a manifest.
    Ok,
}

impl Answer {
    fn of(g: &Got, head: bool) -> Answer {
        if g.status >= 400 {
            let code = if head { String::new() } else { error_code(g) };
            return Answer::Error(g.status, code);
        }
        let digest = g.header("docker-content-digest").to_string();
        match (g.status, g.header("content-type")) {
            (200, INDEX) => Answer::Manifest(INDEX, digest),
            (200, MANIFEST) => Answer::Manifest(MANIFEST, digest),
            (200, _) => Answer::Ok,
            (status, _) => Answer::Error(status, String::new()),
        }
    }
}

/// One request answered differently by design: label, method, path, headers, our answer,
/// distribution's.
type Different<'a> = (
    &'a str,
    &'a str,
    String,
    Vec<(&'a str, &'a str)>,
    Answer,
    Answer,
);

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
    let index = request(
        &s,
        "GET",
        &format!("{name}/manifests/{V}"),
        &[("accept", OCI_ACCEPT)],
    )
    .await;
    assert_eq!(index.status, 200);
    let index_digest = index.header("docker-content-digest").to_string();
    let v: serde_json::Value = serde_json::from_slice(&index.body).unwrap();
    let arch_digest = v["manifests"][0]["digest"].as_str().unwrap().to_string();
    let arch = request(
        &s,
        "GET",
        &format!("{name}/manifests/{arch_digest}"),
        &[("accept", OCI_ACCEPT)],
    )
    .await;
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

    let manifest_accept = ("accept", OCI_ACCEPT);
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
            "malformed blob digest",
            "GET",
            format!("{name}/blobs/sha256:xyz"),
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
    let (ob, tb) = (s.addrs.http.to_string(), oracle.addr.clone());
    let mut diffs = Vec::new();
    for (label, method, path, headers) in &requests {
        let a = request_raw(&ob, method, path, headers).await;
        let b = request_raw(&tb, method, path, headers).await;
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
        if a.status == 416 {
            // Plain text on both sides (distribution's is cut short): no code to compare.
            assert!(a.text().contains("invalid range"), "{label}: {}", a.text());
        } else if a.status >= 400 && *method != "HEAD" {
            let (x, y) = (error_code(&a), error_code(&b));
            if !INTENDED_CODES.contains(&(label, x.as_str(), y.as_str())) {
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

    // Where the answers differ by design (docs/api.md lists each), both sides' answers are
    // checked: a docker-registry that changes its answer shows here.
    let by_tag = format!("{name}/manifests/{V}");
    let ours_index = Answer::Manifest(INDEX, index_digest.clone());
    let ours_arch = Answer::Manifest(MANIFEST, arch_digest.clone());
    // distribution answers an OCI index or manifest only to an Accept naming its type: no
    // wildcard, no default platform (that it does for a Docker manifest list only).
    let refused = Answer::Error(404, "MANIFEST_UNKNOWN".into());
    let refused_head = Answer::Error(404, String::new());
    let pagination = Answer::Error(400, "PAGINATION_NUMBER_INVALID".into());
    let different: Vec<Different> = vec![
        // Accept names the Docker list type: ours answers the index (the same schema).
        (
            "Docker-only Accept",
            "GET",
            by_tag.clone(),
            vec![("accept", DOCKER_ACCEPT)],
            ours_index.clone(),
            refused.clone(),
        ),
        (
            "Docker-only Accept, HEAD",
            "HEAD",
            by_tag.clone(),
            vec![("accept", DOCKER_ACCEPT)],
            ours_index.clone(),
            refused_head.clone(),
        ),
        // No index accepted: ours answers the default platform's manifest, as distribution
        // answers a Docker manifest list.
        (
            "OCI-manifest-only Accept",
            "GET",
            by_tag.clone(),
            vec![("accept", OCI_MANIFEST_ACCEPT)],
            ours_arch.clone(),
            refused.clone(),
        ),
        (
            "no Accept",
            "GET",
            by_tag.clone(),
            vec![],
            ours_arch.clone(),
            refused.clone(),
        ),
        (
            "no Accept, HEAD",
            "HEAD",
            by_tag.clone(),
            vec![],
            ours_arch.clone(),
            refused_head.clone(),
        ),
        // A wildcard takes the index as stored.
        (
            "wildcard Accept",
            "GET",
            by_tag.clone(),
            vec![("accept", "*/*")],
            ours_index.clone(),
            refused.clone(),
        ),
        // By digest: the bytes the digest names, whatever Accept says.
        (
            "index by digest, OCI-manifest-only Accept",
            "GET",
            format!("{name}/manifests/{index_digest}"),
            vec![("accept", OCI_MANIFEST_ACCEPT)],
            ours_index.clone(),
            refused.clone(),
        ),
        (
            "image manifest by digest, no Accept",
            "GET",
            format!("{name}/manifests/{arch_digest}"),
            vec![],
            ours_arch.clone(),
            refused.clone(),
        ),
        // A digest that does not parse: distribution fails reading it as a tag.
        (
            "malformed manifest digest",
            "GET",
            format!("{name}/manifests/sha256:xyz"),
            vec![],
            Answer::Error(400, "DIGEST_INVALID".into()),
            Answer::Error(500, "UNKNOWN".into()),
        ),
        // distribution 2.8 ignores `n`; ours refuses one that is not a non-negative integer,
        // as distribution 3 does.
        (
            "tags n=abc",
            "GET",
            format!("{name}/tags/list?n=abc"),
            vec![],
            pagination.clone(),
            Answer::Ok,
        ),
        (
            "tags n=-1",
            "GET",
            format!("{name}/tags/list?n=-1"),
            vec![],
            pagination.clone(),
            Answer::Ok,
        ),
    ];
    for (label, method, path, headers, ours, theirs) in &different {
        let head = *method == "HEAD";
        let a = request_raw(&ob, method, path, headers).await;
        let b = request_raw(&tb, method, path, headers).await;
        assert_eq!(Answer::of(&a, head), *ours, "{label}: ours: {}", a.text());
        assert_eq!(
            Answer::of(&b, head),
            *theirs,
            "{label}: theirs: {}",
            b.text()
        );
        assert_eq!(
            a.header("docker-distribution-api-version"),
            "registry/2.0",
            "{label}"
        );
        if head {
            assert!(a.body.is_empty(), "{label}");
        }
    }
    s.stop().await;
}
