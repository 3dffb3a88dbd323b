//! Registry answers: manifests, blobs (streamed as assets are, `Range` included), tag lists
//! with `n`/`last` pagination, referrers indexes.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::RegistryError;
use super::installer::Manifest;
use crate::assets::{DirectBody, Served};
use crate::frontend::http::AppState;
use crate::frontend::http::image::AssetOutcome;
use crate::frontend::http::ranges::{Selection, select};
use crate::oci::{Digest, MEDIA_OCI_INDEX};

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

/// The status and byte range a blob request gets (`Range`, `If-None-Match`).
fn selection(
    headers: &HeaderMap,
    size: u64,
    etag: &str,
) -> Result<(StatusCode, Option<(u64, u64)>), RegistryError> {
    match select(headers, size, etag, "") {
        Selection::NotModified => Ok((StatusCode::NOT_MODIFIED, None)),
        Selection::Full => Ok((StatusCode::OK, None)),
        Selection::Partial(s, e) => Ok((StatusCode::PARTIAL_CONTENT, Some((s, e)))),
        Selection::Unsatisfiable => Err(RegistryError::RangeNotSatisfiable { size }),
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
    let (status, range) = selection(headers, size, &format!("\"{digest}\""))?;
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
    let (status, range) = selection(headers, size, &format!("\"{digest}\""))?;
    let b = blob_headers(status, digest, size, range)?;
    let mut direct = None;
    let body = if head || status == StatusCode::NOT_MODIFIED {
        Body::empty()
    } else {
        let opened = DirectBody::new(st.assets().open(served, range)?);
        let body = Body::from_stream(opened.lazy_stream());
        direct = Some(opened);
        body
    };
    let mut resp = b
        .body(body)
        .map_err(|e| RegistryError::caused("building the response", e))?;
    resp.extensions_mut().insert(AssetOutcome(served.outcome));
    if let Some(d) = direct {
        resp.extensions_mut().insert(d);
    }
    Ok(resp)
}

/// `tags/list`: sorted, after `last`, at most `n`, with a `Link` to the next page.
pub fn tags(
    name: &str,
    mut tags: Vec<String>,
    q: &HashMap<String, String>,
    head: bool,
) -> Result<Response, RegistryError> {
    tags.sort();
    tags.dedup();
    if let Some(last) = q.get("last") {
        tags.retain(|t| t.as_str() > last.as_str());
    }
    let mut next = None;
    if let Some(n) = q.get("n").and_then(|n| n.parse::<usize>().ok())
        && tags.len() > n
    {
        tags.truncate(n);
        if let Some(last) = tags.last() {
            next = Some(format!(
                "</v2/{name}/tags/list?n={n}&last={}>; rel=\"next\"",
                url::form_urlencoded::byte_serialize(last.as_bytes()).collect::<String>()
            ));
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
