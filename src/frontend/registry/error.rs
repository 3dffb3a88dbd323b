//! The registry's error type and the one place where it becomes a status, the OCI error
//! envelope (`{"errors":[{"code","message","detail"}]}`) and its headers.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::assets::AssetError;
use crate::causes::Causes;
use crate::frontend::http::error::ApiError;
use crate::store::StoreError;

/// `Docker-Distribution-API-Version`, on every registry answer.
pub const API_VERSION: &str = "registry/2.0";

/// An error answered to a registry client.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// 404 `NAME_UNKNOWN`: no repository of that name here.
    #[error("repository name not known to registry: {0}")]
    NameUnknown(String),
    /// 404 `MANIFEST_UNKNOWN`.
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    /// 404 `BLOB_UNKNOWN`.
    #[error("blob unknown to registry: {0}")]
    BlobUnknown(String),
    /// 400 `DIGEST_INVALID`.
    #[error("provided digest did not match uploaded content: {0}")]
    DigestInvalid(String),
    /// 404 with the registry's plain path error (not a distribution endpoint).
    #[error("unknown registry path")]
    UnknownPath,
    /// 405 `UNSUPPORTED`: this registry is read-only.
    #[error(
        "the operation is unsupported: this registry is read-only (images are built by the factory, not pushed)"
    )]
    ReadOnly,
    /// 416 with `Content-Range: bytes */<size>`.
    #[error("requested range not satisfiable")]
    RangeNotSatisfiable {
        /// The blob size.
        size: u64,
    },
    /// 429 `TOOMANYREQUESTS` with `Retry-After`: the build this request needs was refused by
    /// admission (queue full).
    #[error("{message}")]
    TooManyRequests {
        /// The text.
        message: String,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// Anything the HTTP API would answer (its status kept, its text in the envelope).
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<AssetError> for RegistryError {
    fn from(e: AssetError) -> Self {
        match e {
            AssetError::SchematicNotFound(_) => RegistryError::NameUnknown(e.to_string()),
            AssetError::Busy { retry_after, .. } => RegistryError::TooManyRequests {
                message: e.to_string(),
                retry_after,
            },
            other => RegistryError::Api(other.into()),
        }
    }
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        RegistryError::Api(e.into())
    }
}

impl RegistryError {
    /// A 500: `context` failed because of `source`.
    pub fn caused(context: &str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        RegistryError::Api(ApiError::caused(context, source))
    }

    /// The status and the envelope's error code.
    pub fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            RegistryError::NameUnknown(_) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            RegistryError::ManifestUnknown(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            RegistryError::BlobUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
            RegistryError::DigestInvalid(_) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
            RegistryError::UnknownPath => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            RegistryError::ReadOnly => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            RegistryError::RangeNotSatisfiable { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UNKNOWN")
            }
            RegistryError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS")
            }
            RegistryError::Api(e) => {
                let status = e.status();
                let code = match status {
                    StatusCode::NOT_FOUND => "MANIFEST_UNKNOWN",
                    StatusCode::BAD_REQUEST | StatusCode::NOT_IMPLEMENTED => "UNSUPPORTED",
                    StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
                    StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
                    _ => "UNKNOWN",
                };
                (status, code)
            }
        }
    }

    /// The text shown to the client.
    fn public_message(&self) -> String {
        match self {
            RegistryError::Api(e) => e.public_message(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        let retry_after = match &self {
            RegistryError::TooManyRequests { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        let range_size = match &self {
            RegistryError::RangeNotSatisfiable { size } => Some(*size),
            _ => None,
        };
        let message = self.public_message();
        let mut resp = match self {
            // The HTTP API's answer keeps its headers (Retry-After, ...) and its log line.
            RegistryError::Api(e) => e.into_response(),
            other => {
                if status.is_server_error() {
                    tracing::error!(error = %format!("{:#}", Causes(&other)), "registry error");
                }
                status.into_response()
            }
        };
        let body = serde_json::json!({
            "errors": [{"code": code, "message": message, "detail": null}]
        })
        .to_string();
        *resp.body_mut() = axum::body::Body::from(body.clone());
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        headers.insert(
            "docker-distribution-api-version",
            HeaderValue::from_static(API_VERSION),
        );
        if let Some(s) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(size) = range_size
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            headers.insert(header::CONTENT_RANGE, v);
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        resp
    }
}
