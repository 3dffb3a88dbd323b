//! `GET /pxe/boot.ipxe`: the per-machine netboot entry point. iPXE asks it bare (the URL a
//! DHCP server or ProxyDHCP hands out) and is told to ask again with what it knows about the
//! machine; asked with identifiers, it answers the Talos boot script of the machine's
//! assignment (the same script as `/pxe/<id>/<v>/<platform>-<arch>`, with the assignment's
//! extra kernel arguments), or of the default, or a script that shows what is missing and
//! retries. Always `200` with `#!ipxe`, so iPXE runs whatever comes back; every answer to an
//! identified request is a boot record. Also the netboot part of `/status`.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use super::image::AssetOutcome;
use super::state::AppState;
use crate::causes::Causes;
use crate::netboot::{self, Assignment, BootRecord, Identity, Outcome};

/// Seconds a machine waits before asking again when nothing is assigned to it.
pub const RETRY_SECONDS: u64 = 30;
/// Bounds of the wait before asking again after a refusal that names one (a busy build queue).
const RETRY_RANGE: (u64, u64) = (5, 300);
/// Boot records `/status` shows.
const STATUS_BOOTS: usize = 5;

/// An iPXE script answer (never cached: it depends on the machine and on the moment).
fn script(text: String) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        text,
    )
        .into_response()
}

/// A boot record of what `id` said, before the answer is known.
fn record_of(id: &Identity) -> BootRecord {
    let now = crate::clock::now_secs();
    BootRecord {
        seq: 0,
        at: now,
        time: crate::clock::rfc3339_utc(now),
        machine: id.machine_key(),
        mac: id.mac.map(|m| m.to_string()),
        uuid: id.uuid.map(|u| u.to_string()),
        serial: id.serial.clone(),
        hostname: id.hostname.clone(),
        arch: id.boot_arch().to_string(),
        assignment: None,
        outcome: Outcome::Retry,
        schematic: None,
        version: None,
        path: None,
        extra_kernel_args: Vec::new(),
        reason: None,
    }
}

/// The identifiers refused, one phrase (never their values).
fn refused(id: &Identity) -> Option<String> {
    (!id.invalid.is_empty()).then(|| {
        let parts: Vec<String> = id.invalid.iter().map(ToString::to_string).collect();
        format!("refused identifiers: {}", parts.join(", "))
    })
}

/// Keeps the record (a failure to write one is logged; the machine is answered anyway).
fn keep(st: &AppState, record: BootRecord) {
    if let Err(e) = st.machines().boots().record(record) {
        tracing::warn!(error = %format!("{:#}", Causes(&e)), "boot record not written");
    }
}

/// Answers with a retry script showing `lines` (and the identifiers seen), and records it.
fn retry(
    st: &AppState,
    base: &str,
    id: &Identity,
    mut record: BootRecord,
    reason: &'static str,
    lines: Vec<String>,
    delay: u64,
) -> Response {
    let mut shown = lines;
    shown.push(format!("seen {}", id.describe()));
    if let Some(r) = refused(id) {
        shown.push(r);
    }
    record.outcome = Outcome::Retry;
    record.reason = Some(shown.join("; "));
    keep(st, record);
    st.metrics().netboot_retry(reason);
    script(netboot::retry_script(base, &shown, delay))
}

/// `GET /pxe/boot.ipxe[?mac=..&uuid=..&serial=..&hostname=..&arch=..]`.
pub async fn boot(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let base = st.pxe_base_url_for(&headers);
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return script(netboot::chain_script(&base));
    };
    let id = Identity::from_query(&query);
    let record = record_of(&id);
    if let Some(e) = id
        .invalid
        .iter()
        .find(|e| matches!(e.field, "arch" | "query"))
    {
        return retry(
            &st,
            &base,
            &id,
            record,
            "invalid",
            vec![format!("cannot boot this machine: {e}")],
            RETRY_SECONDS,
        );
    }
    let set = st.machines().current();
    let Some(assignment) = set.resolve(&id) else {
        let how = if id.identified() {
            "image-factory machines set NAME --mac MAC (or --uuid, --serial, --hostname) \
             --schematic ID --version vX.Y.Z, or set a default with --default"
        } else {
            "this request carried no machine identifier; set a default assignment \
             (image-factory machines set NAME --default --schematic ID --version vX.Y.Z)"
        };
        return retry(
            &st,
            &base,
            &id,
            record,
            "unassigned",
            vec![
                "no machine assignment matches this machine and there is no default".into(),
                format!("to assign it: {how}"),
            ],
            RETRY_SECONDS,
        );
    };
    serve_assignment(&st, &base, &id, record, assignment).await
}

/// Answers the boot script of `a` for the machine of `id`.
async fn serve_assignment(
    st: &AppState,
    base: &str,
    id: &Identity,
    mut record: BootRecord,
    a: &Assignment,
) -> Response {
    let arch = id.boot_arch();
    let path = a.pxe_path(arch);
    let version = a.boot.version.tag();
    record.assignment = Some(a.name.clone());
    record.schematic = Some(a.boot.schematic.clone());
    record.version = Some(version.clone());
    record.path = Some(path.clone());
    record.extra_kernel_args = a.boot.extra_kernel_args.clone();
    let failed = |e: ApiError| {
        tracing::warn!(
            assignment = %a.name,
            error = %format!("{:#}", Causes(&e)),
            "netboot: the assignment's boot script cannot be served"
        );
        let delay = e
            .retry_after()
            .map_or(RETRY_SECONDS, |s| s.clamp(RETRY_RANGE.0, RETRY_RANGE.1));
        retry(
            st,
            base,
            id,
            record.clone(),
            "unavailable",
            vec![format!(
                "assignment {} ({} {version} {path}) cannot be served now: {}",
                a.name,
                a.boot.schematic,
                e.public_message()
            )],
            delay,
        )
    };
    let boot = match st
        .assets()
        .pxe_boot(&a.boot.schematic, &version, &path)
        .await
    {
        Ok(boot) => boot,
        Err(e) => return failed(ApiError::from(e)),
    };
    let Some(text) = netboot::boot_script(&boot, base, &a.boot.extra_kernel_args) else {
        return failed(ApiError::internal("no boot assets for the profile"));
    };
    record.outcome = Outcome::Booted;
    record.reason = refused(id);
    tracing::info!(
        assignment = %a.name,
        machine = %record.machine,
        path = %path,
        "netboot: boot script served"
    );
    keep(st, record);
    st.metrics().netboot_boot(&a.name);
    let mut resp = script(text);
    resp.extensions_mut().insert(AssetOutcome(boot.outcome));
    resp
}

/// The netboot section of `GET /status`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetbootStatus {
    /// Assignments in force (admin API and machines file).
    pub assignments: usize,
    /// Of which from the machines file.
    pub from_file: usize,
    /// Name of the default assignment, if there is one.
    pub default: Option<String>,
    /// Boot scripts served since start.
    pub boots_since_start: u64,
    /// Retry scripts served since start.
    pub retries_since_start: u64,
    /// Boot records kept.
    pub records: usize,
    /// The newest boots, newest first.
    pub last_boots: Vec<BootSummary>,
}

/// A boot as `/status` shows it: the machine's key, not everything it reported (the whole
/// record is on the admin API).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BootSummary {
    /// When (RFC 3339).
    pub time: String,
    /// The machine (`mac:aa:bb:..`, …).
    pub machine: String,
    /// The assignment matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignment: Option<String>,
    /// What it was answered.
    pub outcome: Outcome,
    /// `/pxe` path served (`metal-amd64`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl From<BootRecord> for BootSummary {
    fn from(r: BootRecord) -> Self {
        BootSummary {
            time: r.time,
            machine: r.machine,
            assignment: r.assignment,
            outcome: r.outcome,
            path: r.path,
        }
    }
}

/// The netboot section of `/status`.
pub fn status(st: &AppState) -> NetbootStatus {
    let m = st.machines();
    let set = m.current();
    NetbootStatus {
        assignments: set.len(),
        from_file: set
            .iter()
            .filter(|a| a.source == netboot::Source::File)
            .count(),
        default: set.default_assignment().map(|a| a.name.clone()),
        boots_since_start: m.boots().booted_since_start(),
        retries_since_start: m.boots().retried_since_start(),
        records: m.boots().stored(),
        last_boots: m
            .boots()
            .recent(STATUS_BOOTS)
            .into_iter()
            .map(BootSummary::from)
            .collect(),
    }
}
