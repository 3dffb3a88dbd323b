//! Release catalog endpoints: `/versions`, `/version/:v/extensions/official`,
//! `/version/:v/overlays/official`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use super::gojson;
use super::state::AppState;
use crate::catalog::{CatalogError, Release, Version, version};

/// Query of `GET /versions`.
#[derive(Deserialize)]
pub struct VersionsQuery {
    broken: Option<String>,
}

pub(super) fn json(body: String) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The versions this appliance offers: imported releases and those the on-demand registry
/// lists, filtered by the configured rules.
pub fn offered_versions(st: &AppState) -> Result<Vec<Version>, ApiError> {
    let rules = st.version_rules();
    // Only versions this appliance can build: an imported release older than the imager's
    // oldest target would be listed and then refused by every build.
    let mut known: Vec<Version> = st
        .releases()
        .list()?
        .iter()
        .filter_map(|r| r.parsed_version())
        .collect();
    if let Some(od) = st.node().on_demand() {
        known.extend(od.listed());
    }
    known.retain(|v| (v.major, v.minor) >= crate::imager::quirks::MIN_SUPPORTED);
    Ok(version::offered(&known, &rules.min_version, &rules.broken))
}

/// Resolves the `:version` path parameter: `v` added, strict semver (else 500), offered (else
/// 404), imported first if only the on-demand registry has it.
pub(super) async fn offered_release(
    st: &AppState,
    raw: &str,
) -> Result<std::sync::Arc<Release>, ApiError> {
    let v = Version::parse_strict(raw)
        .ok_or_else(|| ApiError::from(CatalogError::InvalidVersion(raw.to_string())))?;
    let not_available = || ApiError::from(CatalogError::VersionNotAvailable(v.to_string()));
    if !offered_versions(st)?.contains(&v) {
        return Err(not_available());
    }
    st.node().ensure_release(&v).await?;
    st.releases().get(&v.tag())?.ok_or_else(not_available)
}

/// `GET /versions` (or the configured broken list with `?broken=true`).
pub async fn versions(
    State(st): State<AppState>,
    Query(q): Query<VersionsQuery>,
) -> Result<Response, ApiError> {
    let list: Vec<String> = if q.broken.as_deref() == Some("true") {
        st.version_rules().broken.iter().map(Version::tag).collect()
    } else {
        offered_versions(&st)?.iter().map(Version::tag).collect()
    };
    Ok(json(gojson::array_of_strings(&list)))
}

/// `GET /version/:version/extensions/official`.
pub async fn extensions(
    State(st): State<AppState>,
    Path(version): Path<String>,
) -> Result<Response, ApiError> {
    let release = offered_release(&st, &version).await?;
    let items: Vec<Vec<(&str, &str)>> = release
        .extensions
        .iter()
        .map(|e| {
            vec![
                ("name", e.name.as_str()),
                ("ref", e.reference.as_str()),
                ("digest", e.digest.as_str()),
                ("author", e.author.as_str()),
                ("description", e.description.as_str()),
            ]
        })
        .collect();
    Ok(json(gojson::array_of_objects(&items)))
}

/// `GET /version/:version/overlays/official` (always `[]` before Talos 1.7).
pub async fn overlays(
    State(st): State<AppState>,
    Path(version): Path<String>,
) -> Result<Response, ApiError> {
    // Upstream answers `[]` for versions before overlays (1.7) without looking them up.
    if Version::parse_strict(&version).is_some_and(|v| !v.at_least(1, 7)) {
        return Ok(json("[]\n".to_string()));
    }
    let release = offered_release(&st, &version).await?;
    let items: Vec<Vec<(&str, &str)>> = release
        .overlays
        .iter()
        .map(|o| {
            vec![
                ("name", o.name.as_str()),
                ("image", o.image.as_str()),
                ("ref", o.reference.as_str()),
                ("digest", o.digest.as_str()),
            ]
        })
        .collect();
    Ok(json(gojson::array_of_objects(&items)))
}
