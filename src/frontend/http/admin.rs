//! The admin API: `POST /admin/import` imports a release into the running appliance (the offline
//! bundle streamed as the request body, or pulled from a registry), answering with a stream of
//! JSON progress lines. Authenticated with the admin bearer token.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::UnboundedSender;

use super::error::ApiError;
use super::handlers::AppState;
use crate::catalog::{ImportOptions, ImportProgress, Importer, Selection, Version};
use crate::oci::{ImageSource, LayoutSource, RegistryOptions, RegistrySource};
use crate::store::BlobStore;
use crate::trust::{TrustPolicy, TrustedKeys, token_matches};

/// Header carrying an extra trusted public key (base64 of the PEM) for one import.
pub const TRUST_KEY_HEADER: &str = "x-if-trust-key";

/// What the admin API needs.
pub struct AdminState {
    /// The admin bearer token.
    pub token: String,
    /// Blob store of the data directory.
    pub blobs: BlobStore,
    /// `trust.publicKeys` from the configuration.
    pub trusted_key_files: Vec<PathBuf>,
    /// Directory for uploads and extraction (on the data volume).
    pub scratch: PathBuf,
    /// One import at a time.
    pub lock: tokio::sync::Mutex<()>,
}

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

fn policy(admin: &AdminState, headers: &HeaderMap, skip: bool) -> Result<TrustPolicy, ApiError> {
    if skip {
        tracing::warn!("admin import with signature verification SKIPPED (insecure)");
        return Ok(TrustPolicy::insecure_skip());
    }
    let mut keys = TrustedKeys::new();
    for path in &admin.trusted_key_files {
        keys.add_file(path)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
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
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    if keys.is_empty() {
        return Err(ApiError::BadRequest(
            "no trusted keys: configure trust.publicKeys on the appliance or send the public key"
                .into(),
        ));
    }
    Ok(TrustPolicy::keys(keys))
}

/// Checks the admin bearer token.
fn authorize(admin: &AdminState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if token_matches(&admin.token, given.trim()) {
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
}

/// `POST /admin/gc[?dryRun=true]`: one garbage-collection pass now; answers the report (JSON).
pub async fn gc(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<GcQuery>,
) -> Result<Response, ApiError> {
    authorize(st.admin(), &headers)?;
    let report = st.assets().gc(q.dry_run).await?;
    let mut body = serde_json::to_string(&report).map_err(|e| ApiError::Internal(e.to_string()))?;
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

/// `POST /admin/import`.
pub async fn import(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ImportQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let admin = st.admin().clone();
    authorize(&admin, &headers)?;
    let versions: Vec<Version> = list(&q.version)
        .iter()
        .map(|v| {
            Version::parse_strict(v)
                .ok_or_else(|| ApiError::BadRequest(format!("invalid version {v:?}")))
        })
        .collect::<Result<_, _>>()?;
    let policy = policy(&admin, &headers, q.insecure_skip_signature_verification)?;
    let extensions = match q.extensions.as_deref() {
        None | Some("all") | Some("") => Selection::All,
        Some(_) => Selection::Only(list(&q.extensions)),
    };
    let arches = list(&q.arch);

    std::fs::create_dir_all(&admin.scratch).map_err(|e| ApiError::Internal(e.to_string()))?;
    let upload = match &q.from_registry {
        Some(_) => None,
        None => {
            let path = admin
                .scratch
                .join(format!("upload-{}.tar", uuid::Uuid::new_v4()));
            let mut file = tokio::fs::File::create(&path)
                .await
                .map_err(|e| ApiError::Internal(format!("create {}: {e}", path.display())))?;
            let mut stream = body.into_data_stream();
            let mut size = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| {
                    let _ = std::fs::remove_file(&path);
                    ApiError::BadRequest(format!("reading the bundle upload: {e}"))
                })?;
                size += chunk.len() as u64;
                file.write_all(&chunk)
                    .await
                    .map_err(|e| ApiError::Internal(format!("write upload: {e}")))?;
            }
            file.sync_all()
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            if size == 0 {
                let _ = std::fs::remove_file(&path);
                return Err(ApiError::BadRequest(
                    "empty body: send the bundle, or use fromRegistry".into(),
                ));
            }
            tracing::info!(bytes = size, "admin import: bundle received");
            Some(path)
        }
    };

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let releases = st.catalog().releases.clone();
    let registry_arg = q.from_registry.clone();
    let insecure_registry = q.insecure_registry;
    // Detached: the import finishes even if the client goes away.
    tokio::spawn(async move {
        let _guard = admin.lock.lock().await;
        let progress = ChannelProgress {
            tx,
            pending: AtomicU64::new(0),
        };
        let run = async {
            let scratch = admin.scratch.clone();
            match (&upload, &registry_arg) {
                (Some(path), _) => {
                    let layout = LayoutSource::open_async(path.clone())
                        .await
                        .map_err(|e| e.to_string())?;
                    let wanted = if versions.is_empty() {
                        crate::catalog::bundle_versions(&layout)
                    } else {
                        versions.clone()
                    };
                    if wanted.is_empty() {
                        return Err("the bundle holds no siderolabs/imager image".to_string());
                    }
                    run_versions(
                        &layout,
                        "ghcr.io",
                        &wanted,
                        &arches,
                        &extensions,
                        &admin.blobs,
                        &releases,
                        &policy,
                        &progress,
                        &scratch,
                    )
                    .await
                }
                (None, Some(host_ns)) => {
                    if versions.is_empty() {
                        return Err("fromRegistry needs version".to_string());
                    }
                    let host = host_ns.split('/').next().unwrap_or(host_ns);
                    let opts = RegistryOptions {
                        insecure: insecure_registry,
                        ..RegistryOptions::default()
                    };
                    let source = RegistrySource::new(host, opts).map_err(|e| e.to_string())?;
                    run_versions(
                        &source,
                        host_ns.trim_end_matches('/'),
                        &versions,
                        &arches,
                        &extensions,
                        &admin.blobs,
                        &releases,
                        &policy,
                        &progress,
                        &scratch,
                    )
                    .await
                }
                (None, None) => Err("nothing to import".to_string()),
            }
        };
        let result = run.await;
        progress.flush();
        match result {
            Ok(()) => progress.send(serde_json::json!({ "done": true })),
            Err(e) => {
                tracing::error!(error = %e, "admin import failed");
                progress.send(serde_json::json!({ "error": e }));
            }
        }
        if let Some(p) = upload {
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

fn tokio_stream_lines(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<String>,
) -> impl futures_util::Stream<Item = Result<String, std::convert::Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok)))
}

#[allow(clippy::too_many_arguments)]
async fn run_versions<S: ImageSource>(
    source: &S,
    registry: &str,
    versions: &[Version],
    arches: &[String],
    extensions: &Selection,
    blobs: &BlobStore,
    releases: &crate::catalog::ReleaseStore,
    policy: &TrustPolicy,
    progress: &ChannelProgress,
    scratch: &std::path::Path,
) -> Result<(), String> {
    for v in versions {
        let opts = ImportOptions {
            version: v.clone(),
            arches: arches.to_vec(),
            extensions: extensions.clone(),
            registry: registry.to_string(),
        };
        let s = Importer::new(source, blobs, releases, policy, progress, scratch)
            .run(&opts)
            .await
            .map_err(|e| format!("import of {} failed: {e}", v.tag()))?;
        progress.send(serde_json::json!({
            "imported": {
                "version": s.release.version,
                "arches": s.release.arches.keys().collect::<Vec<_>>(),
                "extensions": s.release.extensions.iter().filter(|e| !e.images.is_empty()).count(),
                "catalogExtensions": s.release.extensions.len(),
                "overlays": s.release.overlays.len(),
                "partial": s.release.partial,
                "verified": !policy.skip,
                "images": s.images,
                "blobsStored": s.blobs_stored,
                "blobsReused": s.blobs_reused,
                "bytesStored": s.bytes_stored,
            }
        }));
    }
    Ok(())
}
