//! The operator page (`GET /admin/ui`), served only on the admin listener: imported releases,
//! cache usage, recent builds, machine assignments with recent boots, and peers. A browser
//! authenticates with HTTP Basic (any user name, the admin token as password); the admin
//! API's bearer token works too.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use minijinja::context;
use serde::Serialize;

use super::super::admin::assignment_views;
use super::super::error::ApiError;
use super::super::handlers::{release_status, replication_status};
use super::super::state::AppState;
use super::{html, render, ser};
use crate::assets::{BuildEntry, BuildState};
use crate::trust::token_matches;

/// Recent builds listed.
const RECENT_BUILDS: usize = 25;
/// Recent boots listed.
const RECENT_BOOTS: usize = 25;

/// The token a request carries: `Bearer <token>`, or HTTP Basic with it as the password.
fn given_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.trim().to_string());
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_string())
}

/// `401` asking the browser for the token (Basic), as the admin API answers (plus Basic).
fn challenge() -> Response {
    let mut resp = ApiError::Unauthorized.into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            "Basic realm=\"image-factory admin (password: the admin token)\", charset=\"UTF-8\"",
        ),
    );
    resp
}

/// `n` bytes for people (`1.5 GiB`), with the exact count when under 1 KiB.
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// One cached asset as the page lists it.
#[derive(Serialize)]
struct Build {
    built: String,
    schematic: String,
    version: String,
    path: String,
    kind: String,
    size: String,
}

/// One build of this process as the page lists it.
#[derive(Serialize)]
struct Job {
    admitted: String,
    schematic: String,
    version: String,
    path: String,
    state: &'static str,
    duration: String,
    detail: String,
}

impl From<BuildEntry> for Job {
    fn from(e: BuildEntry) -> Self {
        let (state, detail) = match e.state {
            BuildState::Queued => ("queued", String::new()),
            BuildState::Running => ("running", String::new()),
            BuildState::Built { size } => ("built", human(size)),
            BuildState::Failed { error } => ("failed", error),
        };
        Self {
            admitted: crate::clock::rfc3339_utc(e.admitted),
            schematic: e.schematic,
            version: e.version,
            path: e.path,
            state,
            duration: format!("{:.1} s", e.seconds),
            detail,
        }
    }
}

/// Cache usage as the page shows it.
#[derive(Serialize)]
struct Cache {
    assets: usize,
    bytes: String,
    max_bytes: Option<String>,
    free_bytes: Option<String>,
    min_free_bytes: Option<String>,
    in_flight: usize,
}

/// `GET /admin/ui`: the operator page.
pub async fn page(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    match given_token(&headers) {
        Some(t) if token_matches(st.admin_token(), &t) => {}
        _ => return Ok(challenge()),
    }
    let releases = release_status(&st)?;
    let report = st.node().collect_garbage(true, None).await?;
    let (records, in_flight) = st.assets().recent_builds(RECENT_BUILDS).await?;
    let cache = Cache {
        assets: report.records,
        bytes: human(report.bytes_before),
        max_bytes: (report.max_bytes > 0).then(|| human(report.max_bytes)),
        free_bytes: report.free_bytes_before.map(human),
        min_free_bytes: (report.min_free_bytes > 0).then(|| human(report.min_free_bytes)),
        in_flight,
    };
    let builds: Vec<Build> = records
        .into_iter()
        .map(|r| Build {
            built: crate::clock::rfc3339_utc(r.created),
            schematic: r.schematic,
            version: r.version,
            path: r.path,
            kind: r.kind,
            size: human(r.size),
        })
        .collect();
    let jobs: Vec<Job> = st
        .assets()
        .build_journal()
        .into_iter()
        .map(Job::from)
        .collect();
    let machines = assignment_views(&st).await?;
    let m = st.machines().clone();
    let boots = tokio::task::spawn_blocking(move || m.boots().list(None, RECENT_BOOTS))
        .await
        .map_err(|e| ApiError::caused("reading boot records", e))??;
    let replication = replication_status(&st).await?;
    let ctx = context! {
        title => "Operator overview",
        admin => true,
        releases => ser(&releases),
        cache => ser(&cache),
        builds => ser(&builds),
        jobs => ser(&jobs),
        machines => ser(&machines),
        boots => ser(&boots),
        replication => ser(&replication),
        schematics => st.schematics().count(),
    };
    Ok(html(render("admin.html", ctx)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_for_people() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }

    #[test]
    fn bearer_or_basic_password() {
        let mut h = HeaderMap::new();
        assert_eq!(given_token(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc "),
        );
        assert_eq!(given_token(&h).as_deref(), Some("abc"));
        // "admin:s3:cret" -> the password keeps its colons.
        let basic = base64::engine::general_purpose::STANDARD.encode("admin:s3:cret");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {basic}")).expect("header"),
        );
        assert_eq!(given_token(&h).as_deref(), Some("s3:cret"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!"));
        assert_eq!(given_token(&h), None);
    }
}
