//! Request handlers: schematics, health, status, metrics.

use std::collections::BTreeMap;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use super::gojson;
use super::parse_pool::PoolError;
use super::state::AppState;
use crate::node::WorkerStatus;
use crate::schematic::{self, Schematic};
use crate::store::PutOutcome;

/// Reads the whole body, enforcing `limit` (413 with our text when exceeded).
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match axum::body::to_bytes(body, limit_usize).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                Err(ApiError::PayloadTooLarge { limit })
            } else {
                Err(ApiError::rejected(
                    StatusCode::BAD_REQUEST,
                    "error reading request body: ",
                    e,
                ))
            }
        }
    }
}

/// How long a schematic upload may take to arrive.
pub(super) const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A permit to read one upload (schematic or UI form): uploads being read are bounded (each
/// holds up to `http.maxBodyBytes`; the others wait with their bodies unread).
pub(super) async fn intake_permit(
    st: &AppState,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    let intake = st.intake().clone();
    tokio::time::timeout(BODY_TIMEOUT, intake.acquire_owned())
        .await
        .map_err(|_| ApiError::Unavailable {
            message: "too many schematic uploads in progress, retry".into(),
            retry_after: 1,
        })?
        .map_err(|_| ApiError::internal("the schematic intake is shut down"))
}

/// Parses, canonicalises and durably stores a schematic document: the one path every
/// schematic takes (`POST /schematics` and the web UI), so both give the same ID. Parsing and
/// hashing run on the blocking pool, a few at a time. Returns `(id, canonical YAML)`.
pub(crate) async fn store_schematic(
    st: &AppState,
    bytes: Bytes,
) -> Result<(String, String), ApiError> {
    let (canonical, id) = st
        .parses()
        .run(move || {
            Schematic::parse(&bytes).map(|parsed| {
                let canonical = parsed.canonical();
                let id = schematic::id_of(&canonical);
                (canonical, id)
            })
        })
        .await
        .map_err(|e| match e {
            // Not expected: every queued parse holds an intake slot, and there are as many
            // slots as the queue holds.
            PoolError::Full => ApiError::Unavailable {
                message: e.to_string(),
                retry_after: 1,
            },
            PoolError::Closed => ApiError::caused("parsing the schematic", e),
        })??;
    let m = st.metrics();
    match st.schematics().put(&id, &canonical).await? {
        PutOutcome::Created => {
            m.schematic_create.increment(1);
            if let Some(r) = st.node().replication() {
                r.schematic_created(&id);
            }
        }
        PutOutcome::Existed => m.schematic_duplicate_create.increment(1),
    }
    m.schematic_cache_size.set(st.schematics().count() as f64);
    Ok((id, canonical))
}

/// `POST /schematics`: parse, canonicalise, store durably, answer 201 `{"id","schematic"}`.
pub async fn create_schematic(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let _intake = intake_permit(&st).await?;
    let bytes = tokio::time::timeout(BODY_TIMEOUT, read_body(&headers, body, st.max_body_bytes()))
        .await
        .map_err(|_| ApiError::RequestTimeout)??;
    let (id, canonical) = store_schematic(&st, bytes).await?;
    let body = gojson::object_of_strings(&[("id", &id), ("schematic", &canonical)]);
    Ok((
        StatusCode::CREATED,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// `GET /schematics/{id}`: the stored canonical YAML, 404 `schematic not found` otherwise.
pub async fn get_schematic(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    st.metrics().schematic_get.increment(1);
    let not_found = || ApiError::NotFound("schematic not found".into());
    if !schematic::is_valid_id(&id) {
        return Err(not_found());
    }
    let yaml = st.schematics().get(&id)?.ok_or_else(not_found)?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/yaml"),
        )],
        yaml,
    )
        .into_response())
}

/// `GET|HEAD /healthz` and `/readyz`: 200, empty body.
pub async fn health() -> StatusCode {
    StatusCode::OK
}

/// Body of `GET /status`: what any client may see (no filesystem paths).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status<'a> {
    /// Crate version.
    pub version: &'static str,
    /// Bound address of every network listener, by name (a Unix socket shows as `unix`).
    pub listeners: &'a BTreeMap<String, String>,
    /// Number of stored schematics.
    pub schematics: u64,
    /// Imported releases.
    pub releases: Vec<ReleaseStatus>,
    /// Background workers and their state.
    pub workers: Vec<WorkerStatus>,
    /// What the storage check at start found (lost metadata restored, or damage).
    pub storage: crate::node::StorageSummary,
    /// Whether the ProxyDHCP responder runs, on which interface and address.
    pub proxy_dhcp: crate::frontend::dhcp::Status,
    /// Machine assignments and the latest boots.
    pub netboot: super::netboot::NetbootStatus,
    /// The peer swarm: this node's peer ID, bound addresses, cluster and peers.
    pub replication: crate::replication::ReplicationStatus,
    /// Releases on demand: the registry, the versions it lists, imports running (`null` when
    /// `artifacts.core.registry` is not set).
    pub on_demand: Option<crate::node::on_demand::OnDemandStatus>,
    /// Whether the release offered is `serve --demo`'s synthetic test-kit release (not Talos).
    pub demo: bool,
}

/// One imported release as `/status` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStatus {
    /// Version tag.
    pub version: String,
    /// Architectures.
    pub arches: Vec<crate::catalog::Arch>,
    /// Extensions with imported images / extensions in the catalog.
    pub extensions: String,
    /// Whether only a subset of the catalog was imported.
    pub partial: bool,
    /// Whether every image's signature was verified.
    pub verified: bool,
    /// When it was first imported.
    pub imported_at: String,
    /// Its record's revision: members of a cluster settle on the highest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<crate::catalog::Revision>,
    /// Set when one of its blobs failed verification: builds from it are refused until it is
    /// imported again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged: Option<crate::catalog::Damage>,
}

/// The imported releases as `/status` lists them.
pub fn release_status(st: &AppState) -> Result<Vec<ReleaseStatus>, ApiError> {
    let mut damaged = st.releases().damaged()?;
    Ok(st
        .releases()
        .list()?
        .iter()
        .map(|r| ReleaseStatus {
            version: r.version.clone(),
            arches: r.arches.keys().copied().collect(),
            extensions: format!(
                "{}/{}",
                r.extensions.iter().filter(|e| !e.images.is_empty()).count(),
                r.extensions.len()
            ),
            partial: r.partial,
            verified: matches!(r.signatures, crate::catalog::Signatures::Verified { .. }),
            imported_at: r.imported_at.clone(),
            revision: r.revision.clone(),
            damaged: damaged.remove(&r.version),
        })
        .collect())
}

/// A value as a JSON response body (with a trailing newline).
pub fn json_response(value: &impl Serialize) -> Result<Response, ApiError> {
    let mut body = serde_json::to_string(value).map_err(ApiError::json)?;
    body.push('\n');
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// The swarm's part of `/status` (`enabled: false` when it does not run).
pub async fn replication_status(
    st: &AppState,
) -> Result<crate::replication::ReplicationStatus, ApiError> {
    match st.node().replication() {
        Some(r) => Ok(r.status().await?),
        None => Ok(crate::replication::ReplicationStatus::disabled()),
    }
}

/// `GET /status` (ours): version, bound addresses, counts, releases, workers, peers.
pub async fn status(State(st): State<AppState>) -> Result<Response, ApiError> {
    json_response(&Status {
        releases: release_status(&st)?,
        version: env!("CARGO_PKG_VERSION"),
        listeners: st.public_listeners(),
        schematics: st.schematics().count(),
        workers: st.node().workers().status(),
        storage: st.node().storage().summary(),
        proxy_dhcp: st.proxy_dhcp(),
        netboot: super::netboot::status(&st),
        replication: replication_status(&st).await?,
        on_demand: st.node().on_demand().map(|od| od.status()),
        demo: st.node().is_demo(),
    })
}

/// `GET /metrics` on the metrics listener.
pub async fn metrics(State(st): State<AppState>) -> Response {
    // Schematics also arrive from cluster members, not only through this node's API.
    st.metrics()
        .schematic_cache_size
        .set(st.schematics().count() as f64);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        st.metrics().render(),
    )
        .into_response()
}

/// Fallback for unknown paths: Go's `404 page not found`.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("404 page not found".into())
}

/// `HEAD` of a route upstream serves to `GET` only (its router has no `HEAD` route there).
pub async fn get_only() -> impl IntoResponse {
    (
        [(axum::http::header::ALLOW, "GET, OPTIONS")],
        ApiError::MethodNotAllowed,
    )
}

/// Fallback for a known path with a wrong method (the router adds `Allow`).
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
