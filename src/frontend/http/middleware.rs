//! Server-wide response decoration: `Server`, `X-Request-ID`, and one log line per request
//! (for assets also whether it was a cache hit, a build, or a wait on another build).

use std::time::Instant;

use axum::body::HttpBody as _;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

use super::state::AppState;

/// The request/response header carrying the request ID.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest `X-Request-ID` echoed; a longer one is replaced by a fresh ID.
const MAX_REQUEST_ID: usize = 128;

/// The `Server` header value in upstream's form, `Image Factory v<version>`.
pub const SERVER_HEADER: &str = concat!("Image Factory v", env!("CARGO_PKG_VERSION"));

/// A route as upstream's httprouter spells it (`/image/:schematic/...`), for metric labels.
fn route_template(axum_route: &str) -> String {
    axum_route
        .split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => format!(":{name}"),
                None => seg.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// Adds `Server` and `X-Request-ID` (echoed or fresh UUIDv4), records the HTTP metrics and
/// logs the request.
pub async fn decorate(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let request_id = req
        .headers()
        .get(&X_REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID)
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
        });
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let handler = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "notfound".to_string(), |m| route_template(m.as_str()));
    let inflight = st.metrics().http_inflight(&handler);
    inflight.increment(1.0);
    // Everything the request causes — a build it starts included — logs its request ID.
    let span = tracing::info_span!(
        "request",
        request_id = request_id.to_str().unwrap_or("<non-ascii>")
    );
    let mut resp = next.run(req).instrument(span).await;
    inflight.decrement(1.0);
    let headers = resp.headers_mut();
    headers.insert(header::SERVER, HeaderValue::from_static(SERVER_HEADER));
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());

    let status = resp.status().as_u16();
    let bytes = resp.body().size_hint().exact().or_else(|| {
        resp.headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    });
    let cache = resp
        .extensions()
        .get::<super::image::AssetOutcome>()
        .map(|o| o.0.as_str());
    st.metrics().http_observe(
        &handler,
        method.as_str(),
        status,
        start.elapsed().as_secs_f64(),
        bytes.unwrap_or(0),
    );
    tracing::info!(
        target: "image_factory::http",
        method = %method,
        path = %path,
        status,
        bytes,
        cache,
        duration_ms = start.elapsed().as_secs_f64() * 1000.0,
        request_id = request_id.to_str().unwrap_or("<non-ascii>"),
        "request"
    );
    resp
}
