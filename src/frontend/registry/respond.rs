//! Registry answers: manifests (the form negotiated from `Accept`), blobs (streamed as assets
//! are, `Range` included), tag lists with `n`/`last` pagination, referrers indexes.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::RegistryError;
use super::installer::Manifest;
use crate::assets::Served;
use crate::frontend::http::AppState;
use crate::frontend::http::image::asset_response;
use crate::frontend::http::ranges::{Selection, select};
use crate::oci::{Digest, ImageIndex, MEDIA_DOCKER_LIST, MEDIA_OCI_INDEX};

/// `Docker-Content-Digest`.
const CONTENT_DIGEST: &str = "docker-content-digest";

fn value(s: &str) -> Result<HeaderValue, RegistryError> {
    HeaderValue::from_str(s).map_err(|e| RegistryError::caused("building a header", e))
}

/// A small JSON answer (`HEAD`: headers only).
pub fn json(bytes: Vec<u8>, head: bool) -> Response {
    let len = bytes.len();
    let body = if head {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// A manifest with its digest, media type, length and `ETag`.
pub fn manifest(m: &Manifest, head: bool) -> Response {
    let digest = format!("sha256:{}", m.hex);
    let body = if head {
        Body::empty()
    } else {
        Body::from(m.bytes.clone())
    };
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&m.media_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(m.bytes.len()));
    if let Ok(v) = HeaderValue::from_str(&digest) {
        h.insert(CONTENT_DIGEST, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{digest}\"")) {
        h.insert(header::ETAG, v);
    }
    resp
}

/// Whether `media_type` is an index (OCI image index or Docker manifest list).
fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_OCI_INDEX || media_type == MEDIA_DOCKER_LIST
}

/// Whether a request's `Accept` takes an index as stored: it names the OCI index or the Docker
/// manifest-list type, or a wildcard. Parameters (`q` included) are ignored, as distribution
/// ignores them; a request without `Accept` names nothing.
pub fn accepts_index(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.split(';').next().unwrap_or_default().trim())
        .any(|t| is_index(t) || t == "*/*" || t == "application/*")
}

/// For a request by tag whose `Accept` does not take the index `m` (see [`accepts_index`]),
/// the digest of the manifest to answer instead, as distribution answers a manifest list: the
/// default platform's (`linux/amd64`), else the first image manifest listed. `None`: answer
/// `m` itself (not an index, accepted, or nothing else to offer).
pub fn platform_instead(m: &Manifest, headers: &HeaderMap) -> Option<Digest> {
    if !is_index(&m.media_type) || accepts_index(headers) {
        return None;
    }
    let index: ImageIndex = serde_json::from_slice(&m.bytes).ok()?;
    let images: Vec<_> = index
        .manifests
        .iter()
        .filter(|d| !is_index(&d.media_type))
        .collect();
    let amd64 = images.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
    });
    amd64.or(images.first()).map(|d| d.digest.clone())
}

/// The status and byte range a blob request gets (`Range`, `If-None-Match`).
fn selection(
    headers: &HeaderMap,
    digest: &Digest,
    size: u64,
) -> Result<(StatusCode, Option<(u64, u64)>), RegistryError> {
    match select(headers, size, &format!("\"{digest}\""), "") {
        Selection::NotModified => Ok((StatusCode::NOT_MODIFIED, None)),
        Selection::Full => Ok((StatusCode::OK, None)),
        Selection::Partial(s, e) => Ok((StatusCode::PARTIAL_CONTENT, Some((s, e)))),
        Selection::Unsatisfiable => Err(RegistryError::RangeNotSatisfiable {
            digest: digest.clone(),
            size,
        }),
    }
}

/// The headers every blob answer carries.
fn blob_headers(
    status: StatusCode,
    digest: &Digest,
    size: u64,
    range: Option<(u64, u64)>,
) -> Result<axum::http::response::Builder, RegistryError> {
    let etag = format!("\"{digest}\"");
    let mut b = Response::builder()
        .status(status)
        .header(CONTENT_DIGEST, value(digest.as_str())?)
        .header(header::ETAG, value(&etag)?)
        .header(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::NOT_MODIFIED {
        return Ok(b);
    }
    let (start, end) = range.unwrap_or((0, size));
    b = b
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )
        .header(header::CONTENT_LENGTH, end - start);
    if range.is_some() {
        b = b.header(
            header::CONTENT_RANGE,
            value(&format!("bytes {start}-{}/{size}", end.saturating_sub(1)))?,
        );
    }
    Ok(b)
}

/// A blob held in memory (a signature's payload or config: a few hundred bytes).
pub fn small_blob(
    digest: &Digest,
    bytes: Vec<u8>,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, RegistryError> {
    let size = bytes.len() as u64;
    let (status, range) = selection(headers, digest, size)?;
    let b = blob_headers(status, digest, size, range)?;
    let body = if head || status == StatusCode::NOT_MODIFIED {
        Body::empty()
    } else {
        let (s, e) = range.unwrap_or((0, size));
        Body::from(bytes[s as usize..e as usize].to_vec())
    };
    b.body(body)
        .map_err(|e| RegistryError::caused("building the response", e))
}

/// A stored blob, streamed as assets are (zero-copy where the connection allows it).
pub fn blob(
    st: &AppState,
    served: &Served,
    digest: &Digest,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, RegistryError> {
    let size = served.record.size;
    let (status, range) = selection(headers, digest, size)?;
    let b = blob_headers(status, digest, size, range)?;
    let empty = head || status == StatusCode::NOT_MODIFIED;
    asset_response(st, b, served, range, empty, |e| {
        RegistryError::caused("building the response", e)
    })
}

/// `n` of a tag list: absent (or empty) for every tag; otherwise a non-negative integer.
fn page_size(q: &HashMap<String, String>) -> Result<Option<usize>, RegistryError> {
    match q.get("n").map(String::as_str) {
        None | Some("") => Ok(None),
        Some(n) => n
            .parse::<usize>()
            .map(Some)
            .map_err(|_| RegistryError::PaginationNumberInvalid(n.to_string())),
    }
}

/// The `Link` to the page after `last`: the request's own query (`ns` included: a mirror's
/// next page is the mirror's) with `n` and `last` set.
fn next_link(name: &str, q: &HashMap<String, String>, n: usize, last: &str) -> String {
    let mut rest: Vec<(&String, &String)> = q
        .iter()
        .filter(|(k, _)| *k != "n" && *k != "last")
        .collect();
    rest.sort();
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("n", &n.to_string());
    query.append_pair("last", last);
    for (k, v) in rest {
        query.append_pair(k, v);
    }
    format!("</v2/{name}/tags/list?{}>; rel=\"next\"", query.finish())
}

/// `tags/list`: sorted, after `last`, at most `n`, with a `Link` to the next page.
pub fn tags(
    name: &str,
    mut tags: Vec<String>,
    q: &HashMap<String, String>,
    head: bool,
) -> Result<Response, RegistryError> {
    let n = page_size(q)?;
    tags.sort();
    tags.dedup();
    if let Some(last) = q.get("last") {
        tags.retain(|t| t.as_str() > last.as_str());
    }
    let mut next = None;
    if let Some(n) = n
        && tags.len() > n
    {
        tags.truncate(n);
        if let Some(last) = tags.last() {
            next = Some(next_link(name, q, n, last));
        }
    }
    let body = serde_json::to_vec(&serde_json::json!({"name": name, "tags": tags}))
        .map_err(|e| RegistryError::caused("encoding the tag list", e))?;
    let mut resp = json(body, head);
    if let Some(link) = next {
        resp.headers_mut().insert(header::LINK, value(&link)?);
    }
    Ok(resp)
}

/// A referrers index (`OCI-Filters-Applied: artifactType` when filtered).
pub fn referrers(body: Vec<u8>, filtered: bool, head: bool) -> Response {
    let hex = crate::sha256::hex_digest(&body);
    let mut resp = manifest(
        &Manifest {
            media_type: MEDIA_OCI_INDEX.into(),
            bytes: body,
            hex,
        },
        head,
    );
    resp.headers_mut().remove(header::ETAG);
    if filtered {
        resp.headers_mut().insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{Descriptor, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_MANIFEST, Platform};

    fn accept(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// An index of `media_type` listing image manifests for `arches` (in that order).
    fn index(media_type: &str, arches: &[&str]) -> (Manifest, Vec<Digest>) {
        let manifests: Vec<Descriptor> = arches
            .iter()
            .map(|a| {
                let mut d = Descriptor::for_bytes(MEDIA_OCI_MANIFEST, a.as_bytes());
                d.platform = Some(Platform {
                    architecture: (*a).to_string(),
                    os: "linux".into(),
                    variant: None,
                });
                d
            })
            .collect();
        let digests = manifests.iter().map(|d| d.digest.clone()).collect();
        let bytes = serde_json::to_vec(&ImageIndex {
            schema_version: 2,
            media_type: Some(media_type.into()),
            manifests,
            annotations: Default::default(),
        })
        .unwrap();
        let hex = crate::sha256::hex_digest(&bytes);
        let m = Manifest {
            media_type: media_type.into(),
            bytes,
            hex,
        };
        (m, digests)
    }

    #[test]
    fn an_index_is_answered_to_whoever_accepts_an_index_or_anything() {
        let (m, _) = index(MEDIA_OCI_INDEX, &["arm64", "amd64"]);
        for a in [
            vec![MEDIA_OCI_INDEX],
            vec![MEDIA_DOCKER_LIST],
            vec!["*/*"],
            vec!["application/*"],
            // Parameters ignored, several values, several headers.
            vec!["application/vnd.oci.image.index.v1+json; q=0.5"],
            vec![
                MEDIA_DOCKER_MANIFEST,
                "application/vnd.docker.distribution.manifest.list.v2+json , text/plain",
            ],
            vec![MEDIA_OCI_MANIFEST, MEDIA_OCI_INDEX],
        ] {
            assert_eq!(platform_instead(&m, &accept(&a)), None, "{a:?}");
        }
    }

    #[test]
    fn without_an_index_in_accept_a_tag_answers_the_default_platform() {
        let (m, d) = index(MEDIA_OCI_INDEX, &["arm64", "amd64"]);
        for a in [
            vec![],
            vec![MEDIA_OCI_MANIFEST],
            vec![MEDIA_DOCKER_MANIFEST],
            vec!["application/json"],
        ] {
            assert_eq!(
                platform_instead(&m, &accept(&a)),
                Some(d[1].clone()),
                "{a:?}"
            );
        }
        // A Docker manifest list is chosen from the same way.
        let (list, d) = index(MEDIA_DOCKER_LIST, &["amd64"]);
        assert_eq!(platform_instead(&list, &accept(&[])), Some(d[0].clone()));
        // No linux/amd64: the first image manifest.
        let (m, d) = index(MEDIA_OCI_INDEX, &["arm64", "riscv64"]);
        assert_eq!(
            platform_instead(&m, &accept(&[MEDIA_OCI_MANIFEST])),
            Some(d[0].clone())
        );
        // An image manifest is answered as it is, whatever the request accepts.
        let image = Manifest {
            media_type: MEDIA_OCI_MANIFEST.into(),
            bytes: b"{}".to_vec(),
            hex: crate::sha256::hex_digest(b"{}"),
        };
        assert_eq!(
            platform_instead(&image, &accept(&[MEDIA_DOCKER_MANIFEST])),
            None
        );
        // An empty index has nothing else to offer.
        let (empty, _) = index(MEDIA_OCI_INDEX, &[]);
        assert_eq!(platform_instead(&empty, &accept(&[])), None);
    }

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn tag_pages_link_to_the_next_page_keeping_the_mirror_namespace() {
        let all: Vec<String> = ["v1", "v2", "v3"].map(String::from).to_vec();
        let q = query(&[("n", "1"), ("ns", "ghcr.io")]);
        let resp = tags("siderolabs/imager", all.clone(), &q, false).unwrap();
        assert_eq!(
            resp.headers()[header::LINK],
            "</v2/siderolabs/imager/tags/list?n=1&last=v1&ns=ghcr.io>; rel=\"next\""
        );
        let q = query(&[("n", "2"), ("last", "v1")]);
        let resp = tags("a/b", all.clone(), &q, false).unwrap();
        assert!(resp.headers().get(header::LINK).is_none());
        // An empty `n` is no `n`.
        assert!(tags("a/b", all.clone(), &query(&[("n", "")]), false).is_ok());
    }

    #[test]
    fn a_tag_page_size_that_is_not_a_non_negative_integer_is_refused() {
        for n in ["abc", "-1", "1.5", "99999999999999999999999", " 1"] {
            let e = tags("a/b", vec!["v1".into()], &query(&[("n", n)]), false).unwrap_err();
            assert!(
                matches!(&e, RegistryError::PaginationNumberInvalid(got) if got == n),
                "{n}: {e}"
            );
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
            assert_eq!(e.code(), Some("PAGINATION_NUMBER_INVALID"));
        }
    }
}
