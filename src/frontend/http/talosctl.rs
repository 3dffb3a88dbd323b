//! `/talosctl/{version}` and `/talosctl/{version}/{file}`: the `talosctl` binaries of an
//! imported release (its `talosctl-all` image), listed as upstream lists them and downloaded.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::catalog::{json, offered_release};
use super::error::ApiError;
use super::gojson;
use super::state::AppState;

/// `GET /talosctl/{version}`: absolute download URLs of the release's binaries, sorted by name
/// (`[]` for a release without them, as upstream answers for versions before 1.11).
pub async fn list(
    State(st): State<AppState>,
    Path(version): Path<String>,
) -> Result<Response, ApiError> {
    let release = offered_release(&st, &version).await?;
    let base = st
        .node()
        .config()
        .http
        .external_url
        .trim_end_matches('/')
        .to_string();
    let urls: Vec<String> = release
        .talosctl
        .iter()
        .flat_map(|t| t.files.keys())
        .map(|name| format!("{base}/talosctl/{}/{name}", release.version))
        .collect();
    Ok(json(gojson::array_of_strings(&urls)))
}

/// `GET|HEAD /talosctl/{version}/{file}`: one binary.
pub async fn download(
    State(st): State<AppState>,
    method: Method,
    Path((version, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let release = offered_release(&st, &version).await?;
    let blob = release
        .talosctl
        .as_ref()
        .and_then(|t| t.files.get(&file))
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "talosctl file {file:?} is not in release {}",
                release.version
            ))
        })?;
    let opened = {
        let blobs = st.node().blobs().clone();
        let name = blob.blake3.clone();
        tokio::task::spawn_blocking(move || blobs.open_blob(&name))
            .await
            .map_err(|e| ApiError::caused("opening a talosctl binary", e))?
    };
    let f = opened.map_err(|e| ApiError::caused("opening a talosctl binary", e))?;
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from_stream(tokio_util::io::ReaderStream::new(
            tokio::fs::File::from_std(f),
        ))
    };
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{file}\""))
        .map_err(|e| ApiError::caused("naming a talosctl binary", e))?;
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(blob.size));
    h.insert(header::CONTENT_DISPOSITION, disposition);
    Ok(resp)
}
