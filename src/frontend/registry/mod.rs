//! `/v2`: the pull side of the OCI distribution API, read-only, served from our own store —
//! installer images built on a miss through the asset pipeline (cosign-signed), and the
//! imported source images. Routes on the HTTP listener (same admission, timeouts and
//! connection caps); containerd's `?ns=<upstream host>` makes it a registry mirror.

mod error;
mod installer;
mod names;
mod respond;
mod sources;
mod store;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};

pub use error::{API_VERSION, RegistryError};
pub use names::{FACTORY_HOST, GHCR_HOST, VANILLA_SCHEMATIC};
pub use sources::SourceCache;

use crate::catalog::Release;
use crate::frontend::http::AppState;
use crate::oci::Digest;
use installer::{Manifest, Repo};
use names::{Request, Target};
use store::{Entry, RegistryStore};

/// Any method on `/v2`, `/v2/` and `/v2/...`.
pub async fn handle(
    State(st): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut resp = match serve(&st, &method, &uri, &headers).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static(API_VERSION),
    );
    resp
}

/// The query parameters the registry reads.
fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

async fn serve(
    st: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, RegistryError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(RegistryError::ReadOnly);
    }
    let rest = uri.path().strip_prefix("/v2").unwrap_or_default();
    let request = Request::parse(rest)?;
    let q = query(uri);
    let ns = q.get("ns").map(String::as_str).filter(|s| !s.is_empty());
    if !matches!(request, Request::Ping) {
        tracing::info!(target: "image_factory::registry", %method, path = uri.path(), ns, "registry request");
    }
    let store = RegistryStore::new(Arc::clone(st.node().meta()));
    let head = method == Method::HEAD;
    match request {
        Request::Ping => Ok(respond::json(b"{}".to_vec(), head)),
        Request::Manifest(name, reference) => {
            // A tag has no `:`; a reference with one names a digest, or nothing valid.
            let pinned = reference.contains(':');
            if pinned {
                parse_digest(&reference)?;
            }
            match names::route(&name, ns)? {
                Target::Installer {
                    repo,
                    flavour,
                    schematic,
                } => {
                    let r = Repo {
                        repo: &repo,
                        flavour: &flavour,
                        schematic: &schematic,
                    };
                    let mut m = installer_manifest(st, &store, &r, &reference).await?;
                    // A version's index is the only index an installer repository serves.
                    let top = matches!(
                        m.media_type.as_str(),
                        crate::oci::MEDIA_OCI_INDEX | crate::oci::MEDIA_DOCKER_LIST
                    );
                    if !pinned && let Some(d) = respond::platform_instead(&m, headers) {
                        m = by_digest(st, &store, &repo, d.hex()).await?;
                    }
                    count_pull(st, &repo_image(&repo), head, top);
                    Ok(respond::manifest(&m, head))
                }
                Target::Source { repository } => {
                    let (mut m, top) =
                        sources::manifest(st, &store, &repository, &reference).await?;
                    if !pinned && let Some(d) = respond::platform_instead(&m, headers) {
                        m = sources::manifest(st, &store, &repository, d.as_str())
                            .await?
                            .0;
                    }
                    count_pull(st, &repository, head, top);
                    Ok(respond::manifest(&m, head))
                }
            }
        }
        Request::Blob(name, reference) => {
            let digest = parse_digest(&reference)?;
            match names::route(&name, ns)? {
                Target::Installer { repo, .. } => {
                    installer_blob(st, &store, &repo, &digest, head, headers).await
                }
                Target::Source { repository } => {
                    sources::blob(st, &store, &repository, &digest, head, headers).await
                }
            }
            .map_err(RegistryError::on_blob)
        }
        Request::Tags(name) => {
            let tags = match names::route(&name, ns)? {
                Target::Installer {
                    repo, schematic, ..
                } => {
                    known_schematic(st, &name, &schematic).await?;
                    installer_tags(st, &store, &repo).await?
                }
                Target::Source { repository } => sources::tags(st, &repository).await?,
            };
            respond::tags(&name, tags, &q, head)
        }
        Request::Referrers(name, reference) => {
            let digest = parse_digest(&reference)?;
            let filter = q.get("artifactType").map(String::as_str);
            let body = match names::route(&name, ns)? {
                Target::Installer {
                    repo, schematic, ..
                } => {
                    known_schematic(st, &name, &schematic).await?;
                    installer::referrers(&store, &repo, &digest, filter)?
                }
                Target::Source { repository } => {
                    sources::referrers(st, &store, &repository, &digest, filter).await?
                }
            };
            Ok(respond::referrers(body, filter.is_some(), head))
        }
    }
}

/// `NAME_UNKNOWN` unless `schematic` is stored (the empty schematic always is).
async fn known_schematic(st: &AppState, name: &str, schematic: &str) -> Result<(), RegistryError> {
    installer::ensure_vanilla(st, schematic).await?;
    match st.schematics().get(schematic)? {
        Some(_) => Ok(()),
        None => Err(RegistryError::NameUnknown(name.to_string())),
    }
}

/// Counts a pull (`image_factory_registry_pulls_total`): one `GET` of an image's top-level
/// manifest, the one a tag names, by tag or by digest. `HEAD`s, the per-architecture manifests
/// below an index, signatures and referrers are not pulls, so `skopeo copy` (`GET` by tag) and
/// containerd (`HEAD` by tag, then `GET` by digest) each count once.
fn count_pull(st: &AppState, image: &str, head: bool, top: bool) {
    if !head && top {
        st.metrics().registry_pull(image);
    }
}

/// The image part of a repository key (`metal-installer` of `metal-installer/<id>`).
fn repo_image(repo: &str) -> String {
    repo.split_once('/').map_or(repo, |(i, _)| i).to_string()
}

fn parse_digest(reference: &str) -> Result<Digest, RegistryError> {
    reference
        .parse::<Digest>()
        .map_err(|source| RegistryError::DigestInvalid {
            reference: reference.to_string(),
            source,
        })
}

/// Whether the registry serves installer images of `release`: it holds an installer base for
/// at least one architecture. The one test for both the tag list and `latest`.
fn serves_installer(release: &Release) -> bool {
    release.arches.values().any(|a| a.installer_base.is_some())
}

/// The newest release without a pre-release part among those [`serves_installer`] admits.
fn latest_of(releases: &[Arc<Release>]) -> Option<String> {
    releases
        .iter()
        .filter(|r| serves_installer(r))
        .filter_map(|r| r.parsed_version())
        .filter(|v| !v.is_prerelease())
        .max()
        .map(|v| v.tag())
}

/// The version tags of an installer repository: every release [`serves_installer`] admits,
/// and `latest` when one of them is stable.
fn version_tags(releases: &[Arc<Release>]) -> Vec<String> {
    let mut tags: Vec<String> = releases
        .iter()
        .filter(|r| serves_installer(r))
        .map(|r| r.version.clone())
        .collect();
    if latest_of(releases).is_some() {
        tags.push("latest".into());
    }
    tags
}

/// A manifest of an installer repository by tag, digest or signature tag.
async fn installer_manifest(
    st: &AppState,
    store: &RegistryStore,
    r: &Repo<'_>,
    reference: &str,
) -> Result<Manifest, RegistryError> {
    let unknown = || RegistryError::ManifestUnknown(format!("{}:{reference}", r.repo));
    if let Ok(digest) = reference.parse::<Digest>() {
        return by_digest(st, store, r.repo, digest.hex()).await;
    }
    if let Some(hex) = reference
        .strip_prefix("sha256-")
        .and_then(|s| s.strip_suffix(".sig"))
    {
        let signed = store.signature(r.repo, hex)?.ok_or_else(unknown)?;
        return by_digest(st, store, r.repo, &signed.tag_manifest).await;
    }
    let version = if reference == "latest" {
        latest_of(&st.releases().list()?).ok_or_else(unknown)?
    } else if reference.starts_with('v') {
        reference.to_string()
    } else {
        return Err(unknown());
    };
    installer::version_index(st, store, r, &version).await
}

/// A recorded manifest of `repo` by digest.
async fn by_digest(
    st: &AppState,
    store: &RegistryStore,
    repo: &str,
    hex: &str,
) -> Result<Manifest, RegistryError> {
    let unknown = || RegistryError::ManifestUnknown(format!("{repo}@sha256:{hex}"));
    let m = match store.manifest(repo, hex)?.ok_or_else(unknown)? {
        Entry::Document { media_type, bytes } => Manifest {
            media_type,
            hex: crate::sha256::hex_digest(bytes.as_bytes()),
            bytes: bytes.into_bytes(),
        },
        Entry::Installer {
            schematic,
            version,
            path,
        } => {
            let served = installer::installer_asset(st, &schematic, &version, &path).await?;
            let image = st.assets().installer_manifest(&served).await?;
            Manifest {
                media_type: crate::oci::MEDIA_OCI_MANIFEST.into(),
                hex: image.sha256,
                bytes: image.bytes,
            }
        }
    };
    // A document that no longer hashes to its name (or an installer rebuilt to other bytes)
    // is not the manifest asked for.
    if m.hex != hex {
        return Err(unknown());
    }
    Ok(m)
}

/// A blob of an installer repository.
async fn installer_blob(
    st: &AppState,
    store: &RegistryStore,
    repo: &str,
    digest: &Digest,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, RegistryError> {
    let unknown = || RegistryError::BlobUnknown(digest.to_string());
    match store.blob(repo, digest.hex())?.ok_or_else(unknown)? {
        Entry::Document { bytes, .. } => {
            if crate::sha256::hex_digest(bytes.as_bytes()) != digest.hex() {
                return Err(unknown());
            }
            respond::small_blob(digest, bytes.into_bytes(), head, headers)
        }
        Entry::Installer {
            schematic,
            version,
            path,
        } => {
            let served = installer::installer_asset(st, &schematic, &version, &path).await?;
            let info = st
                .assets()
                .blob_by_sha256(digest.hex())?
                .ok_or_else(unknown)?;
            let part = st.assets().part(&served, &info, "application/octet-stream");
            respond::blob(st, &part, digest, head, headers)
        }
    }
}

/// The tags of an installer repository: every imported version, `latest`, and the signature
/// tags of what was served.
async fn installer_tags(
    st: &AppState,
    store: &RegistryStore,
    repo: &str,
) -> Result<Vec<String>, RegistryError> {
    let mut tags = version_tags(&st.releases().list()?);
    tags.extend(store.signature_tags(repo).await?);
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A release record of `version` whose amd64 arch has an installer base or not.
    fn release(version: &str, installer: bool) -> Arc<Release> {
        let image = serde_json::json!({
            "reference": "ghcr.io/siderolabs/installer-base:x",
            "digest": format!("sha256:{}", "a".repeat(64)),
            "manifest": format!("sha256:{}", "b".repeat(64)),
            "size": 1,
        });
        let base = if installer {
            image
        } else {
            serde_json::Value::Null
        };
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "version": version, "imported_at": "", "source": "test",
                "signatures": {"state": "skipped"}, "partial": false,
                "arches": {"amd64": {"imager": null, "installer_base": base,
                    "assets": {}, "grub": {}}},
                "extensions": [], "overlays": [],
            }))
            .unwrap(),
        )
    }

    #[test]
    fn latest_is_the_newest_stable_release_the_tag_list_shows() {
        // v1.12.0 was imported without an installer base: not listed, so not `latest` either.
        let releases = vec![
            release("v1.10.3", true),
            release("v1.11.0", true),
            release("v1.12.0", false),
            release("v1.13.0-beta.1", true),
        ];
        assert_eq!(latest_of(&releases).as_deref(), Some("v1.11.0"));
        let tags = version_tags(&releases);
        assert_eq!(tags, ["v1.10.3", "v1.11.0", "v1.13.0-beta.1", "latest"]);
        // Only a pre-release, or nothing installable: no `latest`, and none listed.
        let only_beta = vec![release("v1.13.0-beta.1", true), release("v1.12.0", false)];
        assert_eq!(latest_of(&only_beta), None);
        assert_eq!(version_tags(&only_beta), ["v1.13.0-beta.1"]);
    }
}
