//! `GET|HEAD /image/:schematic/:version/:path` (build on a miss, then stream), the iPXE
//! scripts of `/pxe/...`, and the key/certificate endpoints.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::ranges::{Selection, select};
use super::state::AppState;
use crate::assets::{AssetError, AssetRequest, DirectBody, Outcome, Served};
use crate::catalog::Version;
use crate::clock::http_date;
use crate::imager::error::ImagerError;
use crate::netboot;

/// Response extension telling the request log how an asset was answered.
#[derive(Debug, Clone, Copy)]
pub struct AssetOutcome(pub Outcome);

fn header_value(s: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(s)
        .map_err(|e| ApiError::rejected(StatusCode::BAD_REQUEST, "invalid header value: ", e))
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
    let mut req = AssetRequest::new(&id, &version, &path);
    // A HEAD answers from the cache or a build already admitted; it never starts one.
    req.build_on_miss = method != Method::HEAD;
    let filename = query
        .get("filename")
        .filter(|f| !f.is_empty())
        .cloned()
        .unwrap_or_else(|| path.clone());
    let served = with_release(&st, &version, || st.assets().get(req.clone())).await?;
    match respond(&st, &served, &filename, &method, &headers) {
        // The blob was set aside (found damaged by a concurrent download) or collected between
        // the lookup and the open: asking once more rebuilds it or joins that rebuild.
        Err(Responding::Gone(_)) => {
            let served = st.assets().get(req).await?;
            respond(&st, &served, &filename, &method, &headers).map_err(ApiError::from)
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
    let mut builder = Response::builder()
        .status(status)
        .header(header::ETAG, header_value(&etag)?)
        .header(header::LAST_MODIFIED, header_value(&last_modified)?)
        .header(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status != StatusCode::NOT_MODIFIED {
        builder = builder
            .header(header::CONTENT_TYPE, header_value(&record.content_type)?)
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
    }
    let empty = method == Method::HEAD || status == StatusCode::NOT_MODIFIED;
    asset_response(st, builder, served, range, empty, |e| {
        ApiError::caused("building the response", e).into()
    })
}

/// The answer carrying `served` (only its headers when `empty`): the body streams the asset
/// and is offered to the connection's zero-copy writer, and the answer is marked for the
/// request log. Every frontend that sends an asset's bytes answers through here.
pub fn asset_response<E: From<AssetError>>(
    st: &AppState,
    builder: axum::http::response::Builder,
    served: &Served,
    range: Option<(u64, u64)>,
    empty: bool,
    build_error: impl FnOnce(axum::http::Error) -> E,
) -> Result<Response, E> {
    let mut direct = None;
    let body = if empty {
        Body::empty()
    } else {
        let opened = DirectBody::new(st.assets().open(served, range)?);
        let body = Body::from_stream(opened.lazy_stream());
        direct = Some(opened);
        body
    };
    let mut resp = builder.body(body).map_err(build_error)?;
    resp.extensions_mut().insert(AssetOutcome(served.outcome));
    if let Some(d) = direct {
        resp.extensions_mut().insert(d);
    }
    Ok(resp)
}

/// Runs `attempt`; when it fails because `version` is not imported, imports it from the
/// on-demand registry if that lists it (`node::on_demand`) and runs it once more.
async fn with_release<T, F, Fut>(st: &AppState, version: &str, attempt: F) -> Result<T, ApiError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, AssetError>>,
{
    match attempt().await {
        Err(AssetError::Imager(ImagerError::VersionNotAvailable(_)))
            if st.node().on_demand().is_some() =>
        {
            if let Some(v) = Version::parse_strict(version) {
                st.node().ensure_release(&v).await?;
            }
            attempt().await.map_err(ApiError::from)
        }
        other => other.map_err(ApiError::from),
    }
}

/// `GET /pxe/{schematic}/{version}/{path}`: the iPXE script booting kernel and initramfs (or
/// the UKI for SecureBoot) from this factory, with the asset's kernel command line.
pub async fn pxe(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((id, version, path)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let boot = with_release(&st, &version, || st.assets().pxe_boot(&id, &version, &path)).await?;
    let script = netboot::ipxe_script(&boot, &st.pxe_base_url_for(&headers))
        .ok_or_else(|| ApiError::internal("no boot assets for the profile"))?;
    let mut resp = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        script,
    )
        .into_response();
    resp.extensions_mut().insert(AssetOutcome(boot.outcome));
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

/// `GET /secureboot/signing-cert.pem`: the Secure Boot signing certificate (PEM); upstream
/// answers 500 while SecureBoot is disabled, and so does this.
pub async fn secureboot_cert(State(st): State<AppState>) -> Response {
    match st.node().secure_boot() {
        Some(keys) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-pem-file"),
            )],
            keys.certificate_pem().to_string(),
        )
            .into_response(),
        None => ApiError::internal("secure boot is not enabled on this appliance").into_response(),
    }
}
