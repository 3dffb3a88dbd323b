//! Helpers for registry tests: a server on the imported kit with a schematic, `/v2` requests,
//! and the content of an installer tarball.

use std::collections::BTreeMap;
use std::io::Read as _;

use super::assets::{Got, V, create_schematic, send, sha256_hex, start};
use super::kit::{self, Kit};
use super::{TestServer, client};

/// A freshly imported kit (keep it alive), a server on it, and the kit schematic's ID; `None`
/// without kit inputs.
pub async fn setup() -> Option<(Kit, TestServer, String)> {
    let kit = kit::imported(0)?;
    let server = start(&kit).await;
    let id = create_schematic(&server, kit::SCHEMATIC).await;
    Some((kit, server, id))
}

/// `method` of `/v2/<path>` with extra headers.
pub async fn request(s: &TestServer, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    send(client().request(m, s.url(&format!("/v2/{path}"))), headers).await
}

/// The error code of an OCI error envelope.
pub fn error_code(g: &Got) -> String {
    let v: serde_json::Value = serde_json::from_slice(&g.body)
        .unwrap_or_else(|e| panic!("not an error envelope ({e}): {}", g.text()));
    v["errors"][0]["code"].as_str().expect("code").to_string()
}

/// The entries of the installer tarball `installer-amd64.tar` of `id` from the server at
/// `base` (`http://<addr>`), by name.
pub async fn installer_tarball(base: &str, id: &str) -> BTreeMap<String, Vec<u8>> {
    installer_tarball_of(base, id, "amd64").await
}

/// Like [`installer_tarball`], for `installer-<arch>.tar`.
pub async fn installer_tarball_of(base: &str, id: &str, arch: &str) -> BTreeMap<String, Vec<u8>> {
    let url = format!("{base}/image/{id}/{V}/installer-{arch}.tar");
    let g = send(client().get(url), &[]).await;
    assert_eq!(g.status, 200, "{}", g.text());
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(&g.body[..]);
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read");
        out.insert(name, bytes);
    }
    out
}

/// OCI image index.
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest (schema 2).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// `artifactType` of cosign's OCI 1.1 signature.
pub const SIG_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// The `Accept` registry clients send: both OCI manifest types.
pub const ACCEPT: (&str, &str) = (
    "accept",
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
);

/// Headers every successful content answer carries.
pub fn assert_content_headers(g: &Got, media_type: &str, what: &str) {
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
pub async fn pull_manifests(s: &TestServer, name: &str) -> (Got, Got) {
    let index = request(s, "GET", &format!("{name}/manifests/{V}"), &[ACCEPT]).await;
    assert_eq!(index.status, 200, "{}", index.text());
    let v: serde_json::Value = serde_json::from_slice(&index.body).expect("index json");
    let digest = v["manifests"][0]["digest"].as_str().expect("digest");
    let manifest = request(s, "GET", &format!("{name}/manifests/{digest}"), &[ACCEPT]).await;
    assert_eq!(manifest.status, 200, "{}", manifest.text());
    (index, manifest)
}

/// The shared setup of the registry tests: a server on the imported kit, the kit
/// schematic's `metal-installer` pulled once (which builds it), its index and amd64 manifest.
pub struct Pulled {
    /// The imported kit (its data directory is the server's).
    pub kit: Kit,
    /// The server.
    pub s: TestServer,
    /// The kit schematic's ID.
    pub id: String,
    /// `metal-installer/<id>`.
    pub name: String,
    /// `GET <name>:V` with [`ACCEPT`]: the index.
    pub index: Got,
    /// `GET` of the index's amd64 manifest by digest.
    pub manifest: Got,
}

impl Pulled {
    /// `None` without kit inputs.
    pub async fn new() -> Option<Pulled> {
        let (kit, s, id) = setup().await?;
        let name = format!("metal-installer/{id}");
        let (index, manifest) = pull_manifests(&s, &name).await;
        Some(Pulled {
            kit,
            s,
            id,
            name,
            index,
            manifest,
        })
    }

    /// `Docker-Content-Digest` of the index.
    pub fn index_digest(&self) -> String {
        self.index.header("docker-content-digest").to_string()
    }

    /// `Docker-Content-Digest` of the amd64 manifest.
    pub fn manifest_digest(&self) -> String {
        self.manifest.header("docker-content-digest").to_string()
    }

    /// The manifest's blobs: the config, then the layers, with their digests.
    pub fn blobs(&self) -> Vec<String> {
        let m: serde_json::Value = serde_json::from_slice(&self.manifest.body).unwrap();
        let mut out = vec![m["config"]["digest"].as_str().unwrap().to_string()];
        for l in m["layers"].as_array().unwrap() {
            out.push(l["digest"].as_str().unwrap().to_string());
        }
        out
    }

    /// `method` of `/v2/<name>/<rest>`.
    pub async fn get(&self, method: &str, rest: &str, headers: &[(&str, &str)]) -> Got {
        request(&self.s, method, &format!("{}/{rest}", self.name), headers).await
    }

    /// The sorted tag list of the repository.
    pub async fn tags(&self) -> Vec<String> {
        let g = self.get("GET", "tags/list", &[]).await;
        assert_eq!(g.status, 200, "{}", g.text());
        let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
        serde_json::from_value(v["tags"].clone()).unwrap()
    }
}

/// `method` of `http://<addr>/v2/<path>` sent as raw HTTP/1.1 with exactly `headers` (reqwest
/// always adds `Accept: */*`; this is how a request without `Accept` is made).
pub async fn request_raw(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut raw = format!("{method} /v2/{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    sock.write_all(raw.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(600),
        sock.read_to_end(&mut out),
    )
    .await
    .expect("answered in time")
    .expect("read");
    let mut parsed = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut parsed);
    let httparse::Status::Complete(head_len) = resp.parse(&out).expect("an HTTP answer") else {
        panic!("a partial HTTP answer: {}", String::from_utf8_lossy(&out));
    };
    let mut map = reqwest::header::HeaderMap::new();
    for h in resp.headers.iter() {
        map.append(
            reqwest::header::HeaderName::from_bytes(h.name.as_bytes()).expect("header name"),
            reqwest::header::HeaderValue::from_bytes(h.value).expect("header value"),
        );
    }
    let status = resp.code.expect("status");
    let mut body = out[head_len..].to_vec();
    if map
        .get("transfer-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        body = dechunk(&body);
    }
    Got {
        status,
        headers: map,
        body,
    }
}

/// The payload of a chunked body.
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .expect("chunk size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
        rest = &rest[eol + 2 + size + 2..];
    }
}
