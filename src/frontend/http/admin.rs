//! The admin API: `POST /admin/import` imports a release into the running appliance (the offline
//! bundle streamed as the request body, or pulled from a registry), answering with a stream of
//! JSON progress lines; `POST /admin/gc`; `GET /admin/status`; machine assignments
//! (`/admin/machines[/{name}]`) and boot records (`/admin/netboot/...`). Authenticated with the
//! admin bearer token.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::UnboundedSender;

use super::error::ApiError;
use super::handlers::{Status, json_response, read_body, release_status, replication_status};
use super::state::AppState;
use crate::catalog::{Arch, CatalogError, ImportProgress, ImportSummary, Selection, Version};
use crate::causes::Causes;
use crate::netboot::{AssignmentSpec, AssignmentView, BootRecord, FileStatus, MAX_BOOTS};
use crate::node::{ImportFrom, ImportJob};
use crate::oci::RegistryOptions;
use crate::trust::{TrustPolicy, TrustedKeys, token_matches};

/// Header carrying an extra trusted public key (base64 of the PEM) for one import.
pub const TRUST_KEY_HEADER: &str = "x-if-trust-key";

/// Query of `POST /admin/import`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImportQuery {
    /// Comma-separated versions (default: every version in the bundle).
    version: Option<String>,
    /// Comma-separated architectures.
    arch: Option<String>,
    /// `all` or comma-separated extension names.
    extensions: Option<String>,
    /// Pull from this registry (`HOST[/namespace]`) instead of reading the body.
    from_registry: Option<String>,
    /// Allow plain HTTP to a non-loopback registry.
    #[serde(default)]
    insecure_registry: bool,
    /// Skip signature verification (insecure).
    #[serde(default)]
    insecure_skip_signature_verification: bool,
}

fn list(s: &Option<String>) -> Vec<String> {
    s.as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// Sends progress as JSON lines; byte progress is batched to bound the line rate.
struct ChannelProgress {
    tx: UnboundedSender<String>,
    pending: AtomicU64,
}

const BATCH: u64 = 4 << 20;

impl ChannelProgress {
    fn send(&self, value: serde_json::Value) {
        let _ = self.tx.send(format!("{value}\n"));
    }
    fn flush(&self) {
        let n = self.pending.swap(0, Ordering::AcqRel);
        if n > 0 {
            self.send(serde_json::json!({ "advance": n }));
        }
    }
}

impl ImportProgress for ChannelProgress {
    fn step(&self, message: &str) {
        self.flush();
        tracing::info!(step = message, "admin import");
        self.send(serde_json::json!({ "step": message }));
    }
    fn add_total(&self, bytes: u64) {
        self.send(serde_json::json!({ "total": bytes }));
    }
    fn advance(&self, bytes: u64) {
        if self.pending.fetch_add(bytes, Ordering::AcqRel) + bytes >= BATCH {
            self.flush();
        }
    }
}

fn policy(st: &AppState, headers: &HeaderMap, skip: bool) -> Result<TrustPolicy, ApiError> {
    if skip {
        tracing::warn!("admin import with signature verification SKIPPED (insecure)");
        return Ok(TrustPolicy::insecure_skip());
    }
    let mut keys = TrustedKeys::new();
    for path in &st.node().config().trust.public_keys {
        keys.add_file(std::path::Path::new(path))?;
    }
    for (i, v) in headers.get_all(TRUST_KEY_HEADER).iter().enumerate() {
        let pem = v
            .to_str()
            .ok()
            .and_then(|s| {
                base64::engine::general_purpose::STANDARD
                    .decode(s.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                ApiError::BadRequest(format!("{TRUST_KEY_HEADER} #{i}: not base64 PEM"))
            })?;
        keys.add_pem(&pem, &format!("{TRUST_KEY_HEADER} #{i}"))
            .map_err(ApiError::bad_trust_key)?;
    }
    let keyless = crate::trust::KeylessPolicy::from_config(&st.node().config().trust)?
        .map(std::sync::Arc::new);
    if keys.is_empty() && keyless.is_none() {
        return Err(ApiError::BadRequest(
            "no trusted keys: configure trust.publicKeys or trust.sigstoreTrustedRoot on the appliance or send the public key"
                .into(),
        ));
    }
    Ok(TrustPolicy::keys_or_keyless(keys, keyless))
}

/// Checks the admin bearer token.
pub(super) fn authorize(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if token_matches(st.admin_token(), given.trim()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Query of `POST /admin/gc`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct GcQuery {
    /// Report what would be evicted without deleting anything.
    #[serde(default)]
    dry_run: bool,
    /// A quota for this pass instead of `cache.maxBytes` (0 = none).
    max_bytes: Option<u64>,
}

/// `POST /admin/gc[?dryRun=true][&maxBytes=N]`: one garbage-collection pass now; answers the
/// report (JSON).
pub async fn gc(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<GcQuery>,
) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    let report = st.node().collect_garbage(q.dry_run, q.max_bytes).await?;
    json_response(&report)
}

/// Body of `GET /admin/status`: the public status plus what only operators may see.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminStatus<'a> {
    /// What `GET /status` shows.
    #[serde(flatten)]
    pub public: Status<'a>,
    /// Every listener, Unix socket paths included.
    pub all_listeners: &'a std::collections::BTreeMap<String, String>,
    /// The data directory.
    pub data_dir: String,
}

/// `GET /admin/status`: the status with filesystem paths.
pub async fn status(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    let dir = st.node().data_dir();
    let data_dir = std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string();
    json_response(&AdminStatus {
        public: Status {
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
        },
        all_listeners: st.listeners(),
        data_dir,
    })
}

/// `POST /admin/import`.
pub async fn import(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ImportQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    let versions: Vec<Version> = list(&q.version)
        .iter()
        .map(|v| {
            Version::parse_strict(v)
                .ok_or_else(|| ApiError::BadRequest(format!("invalid version {v:?}")))
        })
        .collect::<Result<_, _>>()?;
    let arches: Vec<Arch> = list(&q.arch)
        .iter()
        .map(|a| a.parse())
        .collect::<Result<_, CatalogError>>()?;
    let policy = policy(&st, &headers, q.insecure_skip_signature_verification)?;
    let extensions = match q.extensions.as_deref() {
        None | Some("all") | Some("") => Selection::All,
        Some(_) => Selection::Only(list(&q.extensions)),
    };
    let from = match &q.from_registry {
        Some(host_ns) => {
            if versions.is_empty() {
                return Err(ApiError::BadRequest("fromRegistry needs version".into()));
            }
            ImportFrom::Registry {
                host_ns: host_ns.clone(),
                options: RegistryOptions {
                    insecure: q.insecure_registry,
                    ..RegistryOptions::default()
                },
            }
        }
        None => ImportFrom::Bundle(receive_upload(&st, body).await?),
    };
    let job = ImportJob {
        from,
        versions,
        arches,
        extensions,
        policy,
    };

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    // Detached: the import finishes even if the client goes away.
    tokio::spawn(async move {
        let _guard = st.import_lock().lock().await;
        let progress = ChannelProgress {
            tx,
            pending: AtomicU64::new(0),
        };
        let verified = !job.policy.skip;
        let result = job
            .run(st.node(), &progress, |s| {
                progress.flush();
                progress.send(imported_line(s, verified));
            })
            .await;
        progress.flush();
        match result {
            Ok(()) => progress.send(serde_json::json!({ "done": true })),
            Err(e) => {
                let text = format!("{:#}", Causes(&e));
                tracing::error!(error = %text, "admin import failed");
                progress.send(serde_json::json!({ "error": text }));
            }
        }
        if let ImportFrom::Bundle(p) = &job.from {
            let _ = tokio::fs::remove_file(p).await;
        }
    });
    let stream = tokio_stream_lines(rx);
    let mut resp = Body::from_stream(stream).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}

/// Writes the request body (a bundle) to a scratch file on the data volume and syncs it.
async fn receive_upload(st: &AppState, body: Body) -> Result<std::path::PathBuf, ApiError> {
    let scratch = st.node().scratch_dir();
    tokio::fs::create_dir_all(&scratch)
        .await
        .map_err(|e| ApiError::io("creating the upload directory", e))?;
    let path = scratch.join(format!("upload-{}.tar", uuid::Uuid::new_v4()));
    let written = write_upload(&path, body).await;
    match written {
        Ok(0) => {
            let _ = tokio::fs::remove_file(&path).await;
            Err(ApiError::BadRequest(
                "empty body: send the bundle, or use fromRegistry".into(),
            ))
        }
        Ok(size) => {
            tracing::info!(bytes = size, "admin import: bundle received");
            Ok(path)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            if matches!(e, ApiError::InsufficientStorage { .. }) {
                st.assets().report_out_of_space();
            }
            Err(e)
        }
    }
}

async fn write_upload(path: &std::path::Path, body: Body) -> Result<u64, ApiError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| ApiError::io("creating the upload file", e))?;
    let mut stream = body.into_data_stream();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::rejected(StatusCode::BAD_REQUEST, "reading the bundle upload: ", e)
        })?;
        size += chunk.len() as u64;
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::io("writing the upload", e))?;
    }
    file.sync_all()
        .await
        .map_err(|e| ApiError::io("syncing the upload", e))?;
    Ok(size)
}

fn tokio_stream_lines(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<String>,
) -> impl futures_util::Stream<Item = Result<String, std::convert::Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok)))
}

/// The progress line announcing one imported version.
fn imported_line(s: &ImportSummary, verified: bool) -> serde_json::Value {
    serde_json::json!({
        "imported": {
            "version": s.release.version,
            "arches": s.release.arches.keys().collect::<Vec<_>>(),
            "extensions": s.release.extensions.iter().filter(|e| !e.images.is_empty()).count(),
            "catalogExtensions": s.release.extensions.len(),
            "overlays": s.release.overlays.len(),
            "partial": s.release.partial,
            "verified": verified,
            "images": s.images,
            "blobsStored": s.blobs_stored,
            "blobsReused": s.blobs_reused,
            "bytesStored": s.bytes_stored,
        }
    })
}

/// Largest assignment body read (`PUT /admin/machines/{name}`).
const MAX_ASSIGNMENT_BODY: u64 = 64 << 10;
/// Boot records answered when the request names no `limit`.
const DEFAULT_BOOTS: usize = 50;

/// Body of `GET /admin/machines`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachinesList {
    /// Every assignment with its latest boot, by name.
    pub assignments: Vec<AssignmentView>,
    /// What the last load of `netboot.machinesFile` did.
    pub machines_file: FileStatus,
}

/// Every assignment with its latest boot (reads the boot records: on a blocking thread).
pub(super) async fn assignment_views(st: &AppState) -> Result<Vec<AssignmentView>, ApiError> {
    let m = st.machines().clone();
    Ok(tokio::task::spawn_blocking(move || m.list())
        .await
        .map_err(|e| ApiError::caused("listing machine assignments", e))??)
}

/// `GET /admin/machines`: every assignment (admin API and machines file) with its latest boot.
pub async fn machines(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    json_response(&MachinesList {
        assignments: assignment_views(&st).await?,
        machines_file: st.machines().file_status(),
    })
}

/// `GET /admin/machines/{name}`: one assignment with its latest boot.
pub async fn machine(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    let view = assignment_views(&st)
        .await?
        .into_iter()
        .find(|v| v.name == name)
        .ok_or_else(|| crate::netboot::NetbootError::NotFound {
            name: name.chars().take(64).collect(),
        })?;
    json_response(&view)
}

/// `PUT /admin/machines/{name}`: writes an assignment (JSON body, [`AssignmentSpec`]);
/// `201` when new, `200` when it replaced one; answers the assignment.
pub async fn set_machine(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    let bytes = read_body(&headers, body, MAX_ASSIGNMENT_BODY).await?;
    let spec: AssignmentSpec = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::rejected(StatusCode::BAD_REQUEST, "invalid assignment: ", e))?;
    let (a, created) = st.machines().set(&name, &spec).await?;
    let mut resp = json_response(&AssignmentView::new(&a, None))?;
    if created {
        *resp.status_mut() = StatusCode::CREATED;
    }
    Ok(resp)
}

/// `DELETE /admin/machines/{name}`: removes an admin-API assignment; answers it.
pub async fn remove_machine(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    let a = st.machines().remove(&name).await?;
    json_response(&serde_json::json!({ "removed": AssignmentView::new(&a, None) }))
}

/// `POST /admin/netboot/reload`: reads `netboot.machinesFile` again (as SIGHUP does).
pub async fn reload_machines(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    let n = st.machines().reload_file().await?;
    json_response(&serde_json::json!({ "assignments": n }))
}

/// Query of `GET /admin/netboot/boots`.
#[derive(Debug, Deserialize, Default)]
pub struct BootsQuery {
    /// Only this machine's records (`mac:aa:bb:..`, as records name it).
    machine: Option<String>,
    /// At most this many (default 50).
    limit: Option<usize>,
}

/// Body of `GET /admin/netboot/boots`.
#[derive(Debug, Serialize, Deserialize)]
pub struct BootsList {
    /// Boot records, newest first.
    pub boots: Vec<BootRecord>,
}

/// `GET /admin/netboot/boots[?machine=KEY][&limit=N]`: boot records, newest first.
pub async fn boots(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<BootsQuery>,
) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    let limit = q.limit.unwrap_or(DEFAULT_BOOTS).min(MAX_BOOTS);
    let m = st.machines().clone();
    let boots = tokio::task::spawn_blocking(move || m.boots().list(q.machine.as_deref(), limit))
        .await
        .map_err(|e| ApiError::caused("reading boot records", e))??;
    json_response(&BootsList { boots })
}
