//! The HTTP error type and the one place where errors become status codes and bodies.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::assets::AssetError;
use crate::catalog::CatalogError;
use crate::causes::Causes;
use crate::imager::error::{ErrorKind, ImagerError};
use crate::netboot::NetbootError;
use crate::schematic::SchematicError;
use crate::store::StoreError;

/// An error answered to an HTTP client (Go `http.Error` style: text body plus newline).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404 with the given text.
    #[error("{0}")]
    NotFound(String),
    /// 400 with the given text.
    #[error("{0}")]
    BadRequest(String),
    /// 413: the body exceeded `http.maxBodyBytes`.
    #[error("request body too large: limit is {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit in bytes.
        limit: u64,
    },
    /// 408: the request body did not arrive in time.
    #[error("request body not received in time")]
    RequestTimeout,
    /// 401: the admin API needs a valid bearer token.
    #[error("unauthorized: a valid admin bearer token is required")]
    Unauthorized,
    /// 402: an Enterprise-only endpoint (checksums, signatures).
    #[error("{0}")]
    PaymentRequired(String),
    /// 416: the `Range` lies outside the asset (`Content-Range: bytes */<size>` is added).
    #[error("requested range not satisfiable")]
    RangeNotSatisfiable {
        /// The asset size.
        size: u64,
    },
    /// 405: known path, wrong method (the router adds `Allow`).
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    /// An error of a lower layer the client caused or must wait out, answered with `status`
    /// and the error's text (with its causes) between `prefix` and `suffix`: 400 for an invalid
    /// request, 404 for something not here, 501 for a valid request this appliance does not
    /// build (upstream never answers it, so no upstream text is at stake), 503 for a transient
    /// condition.
    #[error("{prefix}{source}{suffix}")]
    Rejected {
        /// The status.
        status: StatusCode,
        /// Text before the error's (upstream's wording where it has one).
        prefix: &'static str,
        /// Text after it.
        suffix: &'static str,
        /// The error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// 503 with `Retry-After`: a transient condition of the frontend itself (too many uploads
    /// in progress); the text is shown.
    #[error("{message}")]
    Unavailable {
        /// The text.
        message: String,
        /// Seconds to wait before retrying.
        retry_after: u64,
    },
    /// 507 with `Retry-After`: the data volume is full (space is being freed by eviction).
    #[error(
        "insufficient storage: the appliance's data volume is full; retry after space is freed"
    )]
    InsufficientStorage {
        /// What ran out of space.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An error answered with `Retry-After` (a failed build, not tried again before then).
    #[error("{source}")]
    Retry {
        /// The error answered.
        #[source]
        source: Box<ApiError>,
        /// Seconds to wait before retrying.
        retry_after: u64,
    },
    /// 500: logged with its causes, answered `internal server error`.
    #[error("internal server error: {context}")]
    Internal {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl From<crate::replication::ReplicationError> for ApiError {
    fn from(e: crate::replication::ReplicationError) -> Self {
        use crate::replication::ReplicationError as R;
        match e {
            e if e.is_invalid_request() => ApiError::rejected(StatusCode::BAD_REQUEST, "", e),
            R::Stopped => ApiError::rejected(StatusCode::SERVICE_UNAVAILABLE, "", e),
            // This node's standing forbids it, not the request.
            R::CannotInvite { .. } => ApiError::rejected(StatusCode::CONFLICT, "", e),
            other => ApiError::caused("changing the cluster membership", other),
        }
    }
}

impl From<crate::node::on_demand::OnDemandError> for ApiError {
    /// 503 with `Retry-After` until the failure is forgotten (a minute): the registry may come
    /// back, and the import is tried again then.
    fn from(e: crate::node::on_demand::OnDemandError) -> Self {
        ApiError::Retry {
            source: Box::new(ApiError::rejected(StatusCode::SERVICE_UNAVAILABLE, "", e)),
            retry_after: 60,
        }
    }
}

impl From<SchematicError> for ApiError {
    fn from(e: SchematicError) -> Self {
        ApiError::rejected(StatusCode::BAD_REQUEST, "", e)
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::VersionNotAvailable(_) | CatalogError::ImageNotFound { .. } => {
                ApiError::rejected(StatusCode::NOT_FOUND, "", e)
            }
            // A request naming an architecture or path that must not reach the filesystem.
            CatalogError::InvalidArch(_) | CatalogError::UnsafePath { .. } => {
                ApiError::rejected(StatusCode::BAD_REQUEST, "", e)
            }
            // Upstream answers a malformed version with 500; kept for compatibility.
            other => ApiError::caused("reading the release catalog", other),
        }
    }
}

impl From<ImagerError> for ApiError {
    fn from(e: ImagerError) -> Self {
        match imager_answer(&e) {
            Some((status, prefix)) => ApiError::imager_rejected(status, prefix, e),
            None => ApiError::caused("building the asset", e),
        }
    }
}

/// How an imager error the client caused is answered (its text shown, after upstream's
/// prefix): 400 for an invalid request, 404 for a missing input, 501 for what this appliance
/// does not build; `None` for the imager's failures (500, as upstream answers them).
fn imager_answer(e: &ImagerError) -> Option<(StatusCode, &'static str)> {
    if e.is_path_error() {
        return Some((StatusCode::BAD_REQUEST, "error parsing profile from path: "));
    }
    if let ImagerError::ReleaseDamaged { .. } | ImagerError::DamagedInput(_) = e {
        // Not the client's fault, and not a transient one: the operator imports the release
        // again. The text says so; the status says "not now" (see `imager_rejected`).
        return Some((StatusCode::SERVICE_UNAVAILABLE, ""));
    }
    match e.kind() {
        ErrorKind::InvalidRequest => Some((
            StatusCode::BAD_REQUEST,
            "error enhancing profile from schematic: ",
        )),
        ErrorKind::MissingInput => Some((StatusCode::NOT_FOUND, "")),
        ErrorKind::NotSupported => Some((StatusCode::NOT_IMPLEMENTED, "")),
        ErrorKind::Internal => None,
    }
}

/// `Retry-After` of a build refused because its release is damaged (an operator must import
/// the release again).
const DAMAGED_RELEASE_RETRY: u64 = 600;

/// `Retry-After` of a `507`: long enough for a garbage-collection pass to free space.
const NO_SPACE_RETRY: u64 = 30;

impl From<AssetError> for ApiError {
    fn from(e: AssetError) -> Self {
        if crate::causes::is_no_space(&e) {
            return ApiError::InsufficientStorage {
                source: Box::new(e),
            };
        }
        match e {
            AssetError::SchematicNotFound(_) | AssetError::NotBuilt => {
                ApiError::rejected(StatusCode::NOT_FOUND, "", e)
            }
            // Upstream answers a malformed version with 500; kept for compatibility.
            AssetError::InvalidVersion(_) => ApiError::caused("resolving the request", e),
            AssetError::Imager(e) => e.into(),
            AssetError::Build(f) => match f.imager().and_then(imager_answer) {
                Some((status, prefix)) => ApiError::imager_rejected(status, prefix, f),
                None => ApiError::caused("building the asset", f),
            },
            AssetError::Gone(_) => ApiError::Retry {
                source: Box::new(ApiError::Rejected {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    prefix: "",
                    suffix: ": it is being rebuilt, try again in a few seconds",
                    source: Box::new(e),
                }),
                retry_after: 5,
            },
            AssetError::Busy { retry_after, .. } => ApiError::Retry {
                source: Box::new(ApiError::rejected(StatusCode::SERVICE_UNAVAILABLE, "", e)),
                retry_after,
            },
            AssetError::Failed {
                failure,
                retry_after,
            } => match failure.imager().and_then(imager_answer) {
                Some((status, prefix)) => ApiError::imager_rejected(status, prefix, failure),
                None => ApiError::Retry {
                    source: Box::new(ApiError::caused("building the asset", failure)),
                    retry_after,
                },
            },
            other => ApiError::caused("serving the asset", other),
        }
    }
}

impl From<NetbootError> for ApiError {
    fn from(e: NetbootError) -> Self {
        if !e.is_invalid() {
            return ApiError::caused("machine assignments", e);
        }
        let status = match &e {
            NetbootError::NotFound { .. } => StatusCode::NOT_FOUND,
            NetbootError::Tie { .. } | NetbootError::NameTaken { .. } => StatusCode::CONFLICT,
            // Everything else, a refused machines file included (whatever made it so).
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::rejected(status, "", e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::caused("storage", e)
    }
}

impl From<crate::trust::TrustError> for ApiError {
    fn from(e: crate::trust::TrustError) -> Self {
        ApiError::caused("loading trusted keys", e)
    }
}

impl ApiError {
    /// An answer with `status` and the text of `source` (after `prefix`), which the client
    /// caused or must wait out.
    pub fn rejected(
        status: StatusCode,
        prefix: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        ApiError::Rejected {
            status,
            prefix,
            suffix: "",
            source: Box::new(source),
        }
    }

    /// [`ApiError::rejected`] for an answer of [`imager_answer`]: a `503` (a damaged release,
    /// which an operator must import again) also carries `Retry-After`.
    fn imager_rejected(
        status: StatusCode,
        prefix: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let rejected = ApiError::rejected(status, prefix, source);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            ApiError::Retry {
                source: Box::new(rejected),
                retry_after: DAMAGED_RELEASE_RETRY,
            }
        } else {
            rejected
        }
    }

    /// A 500 with no cause beyond `context`.
    pub fn internal(context: impl Into<String>) -> Self {
        ApiError::Internal {
            context: context.into(),
            source: None,
        }
    }

    /// A 500: `context` failed because of `source`.
    pub fn caused(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        if crate::causes::is_no_space(&source) {
            return ApiError::InsufficientStorage {
                source: Box::new(source),
            };
        }
        ApiError::Internal {
            context: context.into(),
            source: Some(Box::new(source)),
        }
    }

    /// A 500 for a failed file operation.
    pub fn io(context: &str, source: std::io::Error) -> Self {
        Self::caused(context, source)
    }

    /// A 500 for a response that could not be encoded as JSON.
    pub fn json(source: serde_json::Error) -> Self {
        Self::caused("encoding the JSON answer", source)
    }

    /// A 400 for a trusted key sent with a request that does not parse.
    pub fn bad_trust_key(source: crate::trust::TrustError) -> Self {
        ApiError::rejected(StatusCode::BAD_REQUEST, "", source)
    }

    /// The `Retry-After` this error is answered with, if any.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Unavailable { retry_after, .. } | ApiError::Retry { retry_after, .. } => {
                Some(*retry_after)
            }
            ApiError::InsufficientStorage { .. } => Some(NO_SPACE_RETRY),
            _ => None,
        }
    }

    /// Whether this is the appliance's failure (logged with its causes), not the client's.
    fn is_server_failure(&self) -> bool {
        match self {
            ApiError::Internal { .. } | ApiError::InsufficientStorage { .. } => true,
            ApiError::Retry { source, .. } => source.is_server_failure(),
            _ => false,
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PaymentRequired(_) => StatusCode::PAYMENT_REQUIRED,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::InsufficientStorage { .. } => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Rejected { status, .. } => *status,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Retry { source, .. } => source.status(),
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The text written to the client (without the trailing newline).
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Internal { .. } => "internal server error".to_string(),
            ApiError::Retry { source, .. } => source.public_message(),
            ApiError::Rejected {
                prefix,
                suffix,
                source,
                ..
            } => format!("{prefix}{:#}{suffix}", Causes(&**source)),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.is_server_failure() {
            tracing::error!(error = %format!("{:#}", Causes(&self)), "internal server error");
        }
        let status = self.status();
        let mut body = self.public_message();
        body.push('\n');
        let mut resp = (status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if let ApiError::RangeNotSatisfiable { size } = &self
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            headers.insert(header::CONTENT_RANGE, v);
        }
        if let ApiError::Unavailable { retry_after, .. } | ApiError::Retry { retry_after, .. } =
            &self
        {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        if let ApiError::InsufficientStorage { .. } = &self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(NO_SPACE_RETRY));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"image-factory admin\""),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_gone_twice_is_a_503_to_retry() {
        let gone = ApiError::from(AssetError::Gone("ab12".into()));
        assert_eq!(
            gone.public_message(),
            "asset blob ab12 is no longer stored: it is being rebuilt, try again in a few seconds"
        );
        assert!(!gone.is_server_failure());
        let resp = gone.into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "5");
        let other = ApiError::from(AssetError::NoResult("x".into())).into_response();
        assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(other.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn an_overlay_is_a_501_with_its_text_and_no_upstream_prefix() {
        let overlay = || ImagerError::OverlayNotBuilt {
            name: "rpi_generic".into(),
        };
        let want = "overlay \"rpi_generic\" is not built into this output by this factory: overlays are built into disk images and installers only";
        // Refused while resolving the request, and (for direct callers) by the build itself.
        for e in [
            ApiError::from(overlay()),
            ApiError::from(AssetError::Imager(overlay())),
            ApiError::from(AssetError::Build(overlay().into())),
        ] {
            assert_eq!(e.status(), StatusCode::NOT_IMPLEMENTED);
            assert_eq!(e.public_message(), want);
        }
        // Upstream's 400 texts keep their prefix.
        let bad = ApiError::from(ImagerError::SecureBootDisabled);
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            bad.public_message(),
            "error enhancing profile from schematic: secure boot is disabled"
        );
    }
}
