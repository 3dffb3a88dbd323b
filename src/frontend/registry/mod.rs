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

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};

pub use error::{API_VERSION, RegistryError};
pub use names::{FACTORY_HOST, GHCR_HOST, VANILLA_SCHEMATIC};
pub use sources::SourceCache;

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
    let store = RegistryStore::new(std::sync::Arc::clone(st.node().meta()));
    let head = method == Method::HEAD;
    match request {
        Request::Ping => Ok(respond::json(b"{}".to_vec(), head)),
        Request::Manifest(name, reference) => match names::route(&name, ns)? {
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
                let m = installer_manifest(st, &store, &r, &reference).await?;
                // A version's index is the only index an installer repository serves.
                let top = matches!(
                    m.media_type.as_str(),
                    crate::oci::MEDIA_OCI_INDEX | crate::oci::MEDIA_DOCKER_LIST
                );
                count_pull(st, &repo_image(&repo), head, top);
                Ok(respond::manifest(&m, head))
            }
            Target::Source { repository } => {
                let (m, top) = sources::manifest(st, &store, &repository, &reference).await?;
                count_pull(st, &repository, head, top);
                Ok(respond::manifest(&m, head))
            }
        },
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
        .map_err(|_| RegistryError::DigestInvalid(reference.to_string()))
}

/// The newest imported version without a pre-release part.
fn latest(st: &AppState) -> Result<Option<String>, RegistryError> {
    Ok(st
        .releases()
        .list()?
        .iter()
        .filter_map(|r| r.parsed_version())
        .filter(|v| !v.is_prerelease())
        .max()
        .map(|v| v.tag()))
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
        latest(st)?.ok_or_else(unknown)?
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
    let mut tags: Vec<String> = st
        .releases()
        .list()?
        .iter()
        .filter(|r| r.arches.values().any(|a| a.installer_base.is_some()))
        .map(|r| r.version.clone())
        .collect();
    if latest(st)?.is_some() {
        tags.push("latest".into());
    }
    tags.extend(store.signature_tags(repo).await?);
    Ok(tags)
}
