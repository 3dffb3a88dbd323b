//! A read-only distribution registry over an OCI layout directory, on loopback (port 0), for the
//! referrers tests: it serves the layout's images (`ghcr.io/<repo>:<tag>` names) as
//! `<namespace>/<repo>`, and its referrers either ONLY through the OCI 1.1 referrers API
//! (`GET /v2/<name>/referrers/<digest>`, the `sha256-<hex>` tags hidden, as ghcr.io holds what
//! cosign 3 attaches) or ONLY through the referrers tag schema (the API answers 404, as Debian's
//! `docker-registry` 2.8 does).
//!
//! The API answers what the layout stores at the referrers tag (filtered by `artifactType`,
//! with `OCI-Filters-Applied`), not an index computed from `subject` fields: so a test can make
//! it list a referrer of another image, as a buggy or hostile registry could.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use image_factory::oci::{ANNOTATION_REF_NAME, Digest, ImageIndex, MEDIA_OCI_INDEX, Reference};

/// How the registry serves referrers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Referrers {
    /// Only the referrers API; `sha256-<hex>` tags answer 404 and are not listed.
    ApiOnly,
    /// Only the referrers tag schema; the referrers API answers this status (404 as the spec
    /// says a registry without it does, 400 or 405 as some answer an unknown route).
    TagOnly(u16),
    /// Like `ApiOnly`, but the API's answer declares an image manifest's media type.
    ApiNotAnIndex,
}

impl Referrers {
    /// Whether the `sha256-<hex>` referrers tags are hidden.
    fn api_only(self) -> bool {
        matches!(self, Referrers::ApiOnly | Referrers::ApiNotAnIndex)
    }
}

struct Served {
    layout: PathBuf,
    namespace: String,
    mode: Referrers,
    /// `METHOD path?query` of every request, in order.
    log: Mutex<Vec<String>>,
}

/// A running registry; stopped on drop.
pub struct LayoutRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    served: Arc<Served>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LayoutRegistry {
    /// Serves the OCI layout directory `layout` under `namespace`, referrers as `mode` says.
    pub fn start(layout: &Path, namespace: &str, mode: Referrers) -> LayoutRegistry {
        let served = Arc::new(Served {
            layout: layout.to_path_buf(),
            namespace: namespace.to_string(),
            mode,
            log: Mutex::new(Vec::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr").to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&served));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("serve");
            });
        });
        LayoutRegistry {
            addr,
            served,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `METHOD path?query` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.served.log.lock().expect("log").clone()
    }
}

impl Drop for LayoutRegistry {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn error(status: StatusCode, code: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": code}]}).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn content(media_type: &str, bytes: Vec<u8>, digest: Option<&Digest>, head: bool) -> Response {
    let mut h = HeaderMap::new();
    let mt = HeaderValue::from_str(media_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, mt);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    if let Some(d) = digest.and_then(|d| HeaderValue::from_str(d.as_str()).ok()) {
        h.insert("docker-content-digest", d);
    }
    if head {
        (StatusCode::OK, h).into_response()
    } else {
        (StatusCode::OK, h, bytes).into_response()
    }
}

/// Whether `tag` is a referrers tag (`sha256-<64 hex>`, not the `.sig` tag).
fn is_referrers_tag(tag: &str) -> bool {
    tag.strip_prefix("sha256-")
        .is_some_and(|hex| Digest::from_hex(hex).is_ok())
}

impl Served {
    fn blob(&self, digest: &Digest) -> Option<Vec<u8>> {
        std::fs::read(self.layout.join("blobs/sha256").join(digest.hex())).ok()
    }

    /// `(ref name, digest)` of every `index.json` entry.
    fn refs(&self) -> Vec<(String, Digest)> {
        let bytes = std::fs::read(self.layout.join("index.json")).unwrap_or_default();
        let index: ImageIndex = serde_json::from_slice(&bytes).expect("layout index.json");
        index
            .manifests
            .into_iter()
            .filter_map(|d| Some((d.annotations.get(ANNOTATION_REF_NAME)?.clone(), d.digest)))
            .collect()
    }

    /// The digest `ghcr.io/<repo>:<tag>` names, as this registry shows tags.
    fn tagged(&self, repo: &str, tag: &str) -> Option<Digest> {
        if self.mode.api_only() && is_referrers_tag(tag) {
            return None;
        }
        self.refs()
            .into_iter()
            .find(|(name, _)| *name == format!("ghcr.io/{repo}:{tag}"))
            .map(|(_, d)| d)
    }

    fn manifest(&self, repo: &str, r: &str, head: bool) -> Response {
        let digest = match r.parse::<Digest>() {
            Ok(d) => Some(d),
            Err(_) => self.tagged(repo, r),
        };
        let Some((digest, bytes)) = digest.and_then(|d| Some((d.clone(), self.blob(&d)?))) else {
            return error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
        };
        let mt = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_string))
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
        content(&mt, bytes, Some(&digest), head)
    }

    fn referrers(
        &self,
        repo: &str,
        subject: &str,
        artifact_type: Option<&str>,
        head: bool,
    ) -> Response {
        if let Referrers::TagOnly(status) = self.mode {
            let status = StatusCode::from_u16(status).expect("status");
            return error(status, "UNSUPPORTED");
        }
        let Ok(subject) = subject.parse::<Digest>() else {
            return error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
        };
        let tag = image_factory::oci::referrers::tag(&subject);
        let stored = self
            .refs()
            .into_iter()
            .find(|(name, _)| *name == format!("ghcr.io/{repo}:{tag}"))
            .and_then(|(_, d)| self.blob(&d));
        let mut manifests: Vec<serde_json::Value> = stored
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["manifests"].as_array().cloned())
            .unwrap_or_default();
        if let Some(t) = artifact_type {
            manifests.retain(|m| m["artifactType"].as_str() == Some(t));
        }
        let media_type = match self.mode {
            Referrers::ApiNotAnIndex => "application/vnd.oci.image.manifest.v1+json",
            _ => MEDIA_OCI_INDEX,
        };
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": manifests,
        });
        let mut resp = content(MEDIA_OCI_INDEX, body.to_string().into_bytes(), None, head);
        if artifact_type.is_some() {
            resp.headers_mut().insert(
                "oci-filters-applied",
                HeaderValue::from_static("artifactType"),
            );
        }
        resp
    }

    fn tags(&self, repo: &str) -> Response {
        let tags: Vec<String> = self
            .refs()
            .into_iter()
            .filter_map(|(name, _)| {
                let r: Reference = name.parse().ok()?;
                (r.repository == repo).then_some(r.tag?)
            })
            .filter(|t| !(self.mode.api_only() && is_referrers_tag(t)))
            .collect();
        let body = serde_json::json!({"name": repo, "tags": tags}).to_string();
        content("application/json", body.into_bytes(), None, false)
    }
}

async fn handle(
    State(served): State<Arc<Served>>,
    method: Method,
    uri: Uri,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    served
        .log
        .lock()
        .expect("log")
        .push(format!("{method} {uri}"));
    let head = method == Method::HEAD;
    if method != Method::GET && !head {
        return error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED");
    }
    let path = uri.path();
    if path == "/v2/" || path == "/v2" {
        return content("application/json", b"{}".to_vec(), None, head);
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND");
    };
    let split = |marker: &str| rest.rsplit_once(marker);
    let (name, action, arg) = if let Some((n, r)) = split("/manifests/") {
        (n, "manifests", r)
    } else if let Some((n, r)) = split("/blobs/") {
        (n, "blobs", r)
    } else if let Some((n, r)) = split("/referrers/") {
        (n, "referrers", r)
    } else if let Some(n) = rest.strip_suffix("/tags/list") {
        (n, "tags", "")
    } else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND");
    };
    let Some(repo) = name.strip_prefix(&format!("{}/", served.namespace)) else {
        return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
    };
    match action {
        "manifests" => served.manifest(repo, arg, head),
        "blobs" => match arg
            .parse::<Digest>()
            .ok()
            .and_then(|d| Some((served.blob(&d)?, d)))
        {
            Some((bytes, d)) => content("application/octet-stream", bytes, Some(&d), head),
            None => error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
        },
        "referrers" => served.referrers(repo, arg, q.get("artifactType").map(String::as_str), head),
        _ => served.tags(repo),
    }
}
