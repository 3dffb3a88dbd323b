//! `GET|HEAD /image/:schematic/:version/:path` (build on a miss, then stream), the iPXE
//! scripts of `/pxe/...`, and the key/certificate endpoints.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt as _;

use super::error::ApiError;
use super::handlers::AppState;
use super::ranges::{Selection, select};
use crate::assets::{AssetError, AssetRequest, DirectBody, Outcome, Served};
use crate::catalog::Version;
use crate::clock::http_date;
use crate::gocompat::quote as go_quote;
use crate::imager::path::{content_type, parse_pxe_path, pxe_boot_assets};
use crate::schematic;

/// Response extension telling the request log how an asset was answered.
#[derive(Debug, Clone, Copy)]
pub struct AssetOutcome(pub Outcome);

/// Largest cmdline asset read into an iPXE script.
const MAX_CMDLINE: usize = 64 * 1024;

/// The canonical YAML of a stored schematic, or upstream's 404.
fn load_schematic(st: &AppState, id: &str) -> Result<String, ApiError> {
    let not_found = || ApiError::NotFound(format!("schematic ID {} not found", go_quote(id)));
    if !schematic::is_valid_id(id) {
        return Err(not_found());
    }
    st.schematics().get(id)?.ok_or_else(not_found)
}

/// `:version` with a leading `v` added if missing; strict semver or upstream's 500.
fn parse_version(v: &str) -> Result<(Version, String), ApiError> {
    let tag = if v.starts_with('v') {
        v.to_string()
    } else {
        format!("v{v}")
    };
    let version = Version::parse_strict(&tag)
        .filter(|_| tag.len() > 1)
        .ok_or_else(|| ApiError::Internal(format!("invalid version {}", go_quote(v))))?;
    Ok((version, tag))
}

fn header_value(s: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(s).map_err(|e| ApiError::BadRequest(format!("invalid header value: {e}")))
}

/// `GET|HEAD /image/{schematic}/{version}/{path}`.
pub async fn image(
    State(st): State<AppState>,
    Path((id, version, path)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Upstream order (api spec §1.6): enterprise suffixes, schematic, version, path, build.
    if path.ends_with(".sigstore.json") {
        return Err(ApiError::PaymentRequired(
            "enterprise signing is not enabled: signature endpoint is not available".into(),
        ));
    }
    if path.ends_with(".sha256") || path.ends_with(".sha512") {
        return Err(ApiError::PaymentRequired(
            "enterprise not enabled: checksum endpoint is not available".into(),
        ));
    }
    let canonical = load_schematic(&st, &id)?;
    let (version, _) = parse_version(&version)?;
    let req = AssetRequest {
        schematic_id: id,
        canonical,
        version,
        path: path.clone(),
        rebuild: false,
    };
    let filename = query
        .get("filename")
        .filter(|f| !f.is_empty())
        .cloned()
        .unwrap_or_else(|| path.clone());
    let served = st.assets().get(req.clone()).await?;
    match respond(&st, &served, &path, &filename, &method, &headers) {
        // The blob was set aside (found damaged by a concurrent download) or collected between
        // the lookup and the open: asking once more rebuilds it or joins that rebuild.
        Err(Responding::Gone(_)) => {
            let served = st.assets().get(req).await?;
            respond(&st, &served, &path, &filename, &method, &headers).map_err(ApiError::from)
        }
        other => other.map_err(ApiError::from),
    }
}

/// Why [`respond`] failed: a blob gone under it (worth asking again), or an answer.
enum Responding {
    Gone(AssetError),
    Api(ApiError),
}

impl From<ApiError> for Responding {
    fn from(e: ApiError) -> Self {
        Responding::Api(e)
    }
}

impl From<AssetError> for Responding {
    fn from(e: AssetError) -> Self {
        match e {
            gone @ AssetError::Gone(_) => Responding::Gone(gone),
            other => Responding::Api(other.into()),
        }
    }
}

impl From<Responding> for ApiError {
    fn from(r: Responding) -> Self {
        match r {
            Responding::Gone(e) => e.into(),
            Responding::Api(e) => e,
        }
    }
}

/// Writes the headers (and, for GET, the body) for a verified asset.
fn respond(
    st: &AppState,
    served: &Served,
    path: &str,
    filename: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, Responding> {
    let record = &served.record;
    let etag = format!("\"{}\"", record.sha256);
    let last_modified = http_date(record.created);
    let selection = select(headers, record.size, &etag, &last_modified);
    let (status, range) = match selection {
        Selection::NotModified => (StatusCode::NOT_MODIFIED, None),
        Selection::Full => (StatusCode::OK, None),
        Selection::Partial(s, e) => (StatusCode::PARTIAL_CONTENT, Some((s, e))),
        Selection::Unsatisfiable => {
            return Err(ApiError::RangeNotSatisfiable { size: record.size }.into());
        }
    };
    let (start, end) = range.unwrap_or((0, record.size));
    // The open asset, also offered to the connection's zero-copy writer (see `direct`).
    let mut direct = None;
    let mut builder = Response::builder()
        .status(status)
        .header(header::ETAG, header_value(&etag)?)
        .header(header::LAST_MODIFIED, header_value(&last_modified)?)
        .header(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let body = if status == StatusCode::NOT_MODIFIED {
        Body::empty()
    } else {
        builder = builder
            .header(header::CONTENT_TYPE, content_type(path))
            .header(
                header::CONTENT_DISPOSITION,
                header_value(&format!("attachment; filename=\"{filename}\""))?,
            )
            .header(header::CONTENT_LENGTH, end - start);
        if range.is_some() {
            builder = builder.header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{}", end.saturating_sub(1), record.size),
            );
        }
        if method == Method::HEAD {
            Body::empty()
        } else {
            let opened = DirectBody::new(st.assets().open(served, range)?);
            let body = Body::from_stream(opened.lazy_stream());
            direct = Some(opened);
            body
        }
    };
    let mut resp = builder
        .body(body)
        .map_err(|e| ApiError::Internal(format!("response: {e}")))?;
    resp.extensions_mut().insert(AssetOutcome(served.outcome));
    if let Some(d) = direct {
        resp.extensions_mut().insert(d);
    }
    Ok(resp)
}

/// `GET /pxe/{schematic}/{version}/{path}`: the iPXE script booting kernel and initramfs (or
/// the UKI for SecureBoot) from this factory, with the asset's kernel command line.
pub async fn pxe(
    State(st): State<AppState>,
    Path((id, version, path)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let canonical = load_schematic(&st, &id)?;
    let (version, tag) = parse_version(&version)?;
    let served = st
        .assets()
        .get(AssetRequest {
            schematic_id: id.clone(),
            canonical,
            version: version.clone(),
            path: format!("cmdline-{path}"),
            rebuild: false,
        })
        .await?;
    if served.record.size > MAX_CMDLINE as u64 {
        return Err(ApiError::Internal(format!(
            "cmdline asset is {} bytes",
            served.record.size
        )));
    }
    let bytes: Vec<u8> = st
        .assets()
        .open(&served, None)?
        .into_stream()
        .try_fold(Vec::new(), |mut acc, chunk| async move {
            acc.extend_from_slice(&chunk);
            Ok(acc)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("read cmdline: {e}")))?;
    let cmdline = String::from_utf8_lossy(&bytes);
    let profile = parse_pxe_path(&path, &version)?;
    let base = st.pxe_base_url().trim_end_matches('/');
    let url = |file: &str| format!("{base}/image/{id}/{tag}/{file}");
    let files = pxe_boot_assets(&profile);
    let mut script = String::from("#!ipxe\n\nimgfree\n");
    match files.as_slice() {
        [kernel, initramfs] => {
            script.push_str(&format!("kernel {} {cmdline}\n", url(kernel)));
            script.push_str(&format!("initrd {}\n", url(initramfs)));
        }
        [uki] => script.push_str(&format!("kernel {} {cmdline}\n", url(uki))),
        _ => return Err(ApiError::Internal("no boot assets for the profile".into())),
    }
    script.push_str("boot\n");
    let mut resp = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        script,
    )
        .into_response();
    resp.extensions_mut().insert(AssetOutcome(served.outcome));
    Ok(resp)
}

/// `GET /oci/cosign/signing-key.pub`: the cluster public key (PKIX PEM).
pub async fn signing_key(State(st): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-pem-file"),
        )],
        st.signing_key_pem().to_string(),
    )
        .into_response()
}

/// `GET /secureboot/signing-cert.pem`: upstream answers 500 while SecureBoot is disabled.
pub async fn secureboot_cert() -> ApiError {
    ApiError::Internal("secure boot is not enabled on this appliance".into())
}
