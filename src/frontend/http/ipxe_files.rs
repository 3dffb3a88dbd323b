//! `GET|HEAD /pxe/ipxe/{file}`: the iPXE binaries of `tftp.root` over HTTP, for UEFI HTTP
//! Boot clients (the ProxyDHCP responder hands them this URL). Names resolve exactly as over
//! TFTP (`frontend::tftp::Root`), except that generated chain scripts are not served here.

use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::AppState;
use crate::frontend::tftp::{ResolveError, Root};

/// `GET|HEAD /pxe/ipxe/{*file}`: a file of `tftp.root`, streamed.
pub async fn ipxe_file(
    State(st): State<AppState>,
    method: Method,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let root = Root::new(PathBuf::from(&st.node().config().tftp.root), "");
    let name = file.clone();
    let opened = tokio::task::spawn_blocking(move || root.open_file(&name))
        .await
        .map_err(|e| ApiError::caused("opening an iPXE binary", e))?;
    let (f, len) = match opened {
        Ok(x) => x,
        Err(ResolveError::NotFound | ResolveError::Outside(_)) => {
            return Err(ApiError::NotFound("file not found".into()));
        }
        Err(ResolveError::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::warn!(file, error = %e, "an iPXE binary in tftp.root is not readable");
            return Err(ApiError::NotFound("file not found".into()));
        }
        Err(e) => return Err(ApiError::caused("opening an iPXE binary", e)),
    };
    let content_type = if file.to_ascii_lowercase().ends_with(".efi") {
        // EDK2's HTTP Boot takes this type as "an EFI application".
        "application/efi"
    } else {
        "application/octet-stream"
    };
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from_stream(tokio_util::io::ReaderStream::new(
            tokio::fs::File::from_std(f),
        ))
    };
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Ok(resp)
}
