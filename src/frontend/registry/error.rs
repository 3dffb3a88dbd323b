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
    /// 400 `DIGEST_INVALID`: a reference that should be a digest does not parse as one.
    #[error("invalid digest {reference:?}: content here is named sha256:<64 lowercase hex digits>")]
    DigestInvalid {
        /// The reference as sent.
        reference: String,
        /// Why it does not parse.
        #[source]
        source: crate::oci::OciError,
    },
    /// 400 `PAGINATION_NUMBER_INVALID` (distribution's code): `n` of a tag list is not a
    /// non-negative integer.
    #[error("invalid number of results requested: n={0:?} is not a non-negative integer")]
    PaginationNumberInvalid(String),
    /// 404 with the registry's plain path error (not a distribution endpoint).
    #[error("unknown registry path")]
    UnknownPath,
    /// 405 `UNSUPPORTED`: this registry is read-only.
    #[error(
        "the operation is unsupported: this registry is read-only (images are built by the factory, not pushed)"
    )]
    ReadOnly,
    /// 416 with `Content-Range: bytes */<size>` and the blob's digest and `ETag`, a plain-text
    /// body as distribution answers it (no error code: the blob is known, and the spec's codes
    /// have none for a range).
    #[error("invalid range: failed to overlap (the blob is {size} bytes)")]
    RangeNotSatisfiable {
        /// The blob.
        digest: crate::oci::Digest,
        /// Its size.
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
    /// Anything the HTTP API would answer (its status kept, its text in the envelope; a 404 is
    /// `MANIFEST_UNKNOWN`).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// [`RegistryError::Api`] on a blob route: a 404 is `BLOB_UNKNOWN`.
    #[error(transparent)]
    ApiOnBlob(ApiError),
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

    /// The same error answered on a blob route (what the build side could not find is the
    /// blob asked for, not a manifest).
    pub fn on_blob(self) -> Self {
        match self {
            RegistryError::Api(e) => RegistryError::ApiOnBlob(e),
            other => other,
        }
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        match self {
            RegistryError::NameUnknown(_)
            | RegistryError::ManifestUnknown(_)
            | RegistryError::BlobUnknown(_)
            | RegistryError::UnknownPath => StatusCode::NOT_FOUND,
            RegistryError::DigestInvalid { .. } | RegistryError::PaginationNumberInvalid(_) => {
                StatusCode::BAD_REQUEST
            }
            RegistryError::ReadOnly => StatusCode::METHOD_NOT_ALLOWED,
            RegistryError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            RegistryError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            RegistryError::Api(e) | RegistryError::ApiOnBlob(e) => e.status(),
        }
    }

    /// The envelope's error code; `None` for an answer in plain text (a `416`).
    pub fn code(&self) -> Option<&'static str> {
        let code = match self {
            RegistryError::NameUnknown(_) | RegistryError::UnknownPath => "NAME_UNKNOWN",
            RegistryError::ManifestUnknown(_) => "MANIFEST_UNKNOWN",
            RegistryError::BlobUnknown(_) => "BLOB_UNKNOWN",
            RegistryError::DigestInvalid { .. } => "DIGEST_INVALID",
            RegistryError::PaginationNumberInvalid(_) => "PAGINATION_NUMBER_INVALID",
            RegistryError::ReadOnly => "UNSUPPORTED",
            RegistryError::RangeNotSatisfiable { .. } => return None,
            RegistryError::TooManyRequests { .. } => "TOOMANYREQUESTS",
            RegistryError::Api(e) | RegistryError::ApiOnBlob(e) => match e.status() {
                StatusCode::NOT_FOUND if matches!(self, RegistryError::ApiOnBlob(_)) => {
                    "BLOB_UNKNOWN"
                }
                StatusCode::NOT_FOUND => "MANIFEST_UNKNOWN",
                StatusCode::BAD_REQUEST | StatusCode::NOT_IMPLEMENTED => "UNSUPPORTED",
                StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
                StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
                _ => "UNKNOWN",
            },
        };
        Some(code)
    }

    /// The text shown to the client.
    fn public_message(&self) -> String {
        match self {
            RegistryError::Api(e) | RegistryError::ApiOnBlob(e) => e.public_message(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code) = (self.status(), self.code());
        let retry_after = match &self {
            RegistryError::TooManyRequests { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        let range = match &self {
            RegistryError::RangeNotSatisfiable { digest, size } => Some((digest.clone(), *size)),
            _ => None,
        };
        let message = self.public_message();
        let mut resp = match self {
            // The HTTP API's answer keeps its headers (Retry-After, ...) and its log line.
            RegistryError::Api(e) | RegistryError::ApiOnBlob(e) => e.into_response(),
            other => {
                if status.is_server_error() {
                    tracing::error!(error = %format!("{:#}", Causes(&other)), "registry error");
                }
                status.into_response()
            }
        };
        let (body, content_type) = match code {
            Some(code) => (
                serde_json::json!({
                    "errors": [{"code": code, "message": message, "detail": null}]
                })
                .to_string(),
                "application/json; charset=utf-8",
            ),
            None => (format!("{message}\n"), "text/plain; charset=utf-8"),
        };
        let len = body.len();
        *resp.body_mut() = axum::body::Body::from(body);
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        headers.insert(
            "docker-distribution-api-version",
            HeaderValue::from_static(API_VERSION),
        );
        if let Some(s) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some((digest, size)) = range {
            // As distribution: the blob is known, so its digest and ETag come along.
            for (name, value) in [
                (header::CONTENT_RANGE, format!("bytes */{size}")),
                (header::ETAG, format!("\"{digest}\"")),
                (
                    header::HeaderName::from_static("docker-content-digest"),
                    digest.to_string(),
                ),
            ] {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(name, v);
                }
            }
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        resp
    }
}
