//! Installer images as registry content: the image index of a version (one installer image per
//! architecture the release holds, each exactly the config and layers of `installer-<arch>.tar`),
//! the digests it names recorded so later digest requests find them, and the cosign signature of
//! every index and manifest served, made once per digest and stored.

use serde_json::json;

use super::error::RegistryError;
use super::names::{Flavour, VANILLA_SCHEMATIC};
use super::store::{Entry, RegistryStore, Signed};
use crate::assets::{AssetRequest, InstallerManifest, Served};
use crate::frontend::http::AppState;
use crate::oci::{
    Descriptor, Digest, ImageIndex, MEDIA_COSIGN_SIMPLESIGNING, MEDIA_OCI_CONFIG, MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST, Platform,
};
use crate::trust::SignatureImage;

/// `artifactType` of the OCI 1.1 form of a cosign signature.
pub const COSIGN_SIG_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

/// A manifest (or index) ready to answer: its media type and exact bytes.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Media type.
    pub media_type: String,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// SHA-256 hex of the bytes.
    pub hex: String,
}

/// One repository of installer images.
pub struct Repo<'a> {
    /// Repository key (`<image>/<schematic>`).
    pub repo: &'a str,
    /// Which installer.
    pub flavour: &'a Flavour,
    /// Schematic ID.
    pub schematic: &'a str,
}

/// Stores the empty schematic if it is not stored yet: the default install image of every
/// Talos machine config names it, and every factory knows it.
pub async fn ensure_vanilla(st: &AppState, schematic: &str) -> Result<(), RegistryError> {
    if schematic != VANILLA_SCHEMATIC || st.schematics().get(schematic)?.is_some() {
        return Ok(());
    }
    let parsed = crate::schematic::Schematic::parse(b"customization: {}\n")
        .map_err(|e| RegistryError::caused("parsing the empty schematic", e))?;
    let canonical = parsed.canonical();
    if crate::schematic::id_of(&canonical) != VANILLA_SCHEMATIC {
        return Err(RegistryError::Api(
            crate::frontend::http::error::ApiError::internal(
                "the empty schematic does not have the vanilla ID",
            ),
        ));
    }
    st.schematics().put(VANILLA_SCHEMATIC, &canonical).await?;
    Ok(())
}

/// The installer asset of `repo` for `path` at `version` (built on a miss, admitted like any
/// build; the build is detached from this request).
pub async fn installer_asset(
    st: &AppState,
    schematic: &str,
    version: &str,
    path: &str,
) -> Result<Served, RegistryError> {
    ensure_vanilla(st, schematic).await?;
    Ok(st
        .assets()
        .get(AssetRequest::new(schematic, version, path))
        .await?)
}

/// The image index of `version` for `r` (building what is missing), its digests recorded and
/// everything it names signed.
pub async fn version_index(
    st: &AppState,
    store: &RegistryStore,
    r: &Repo<'_>,
    version: &str,
) -> Result<Manifest, RegistryError> {
    let unknown = || RegistryError::ManifestUnknown(format!("{}:{version}", r.repo));
    // A version only the on-demand registry has is imported first (node::on_demand).
    if let Some(v) = crate::catalog::Version::parse_strict(version) {
        st.node()
            .ensure_release(&v)
            .await
            .map_err(|e| RegistryError::Api(e.into()))?;
    }
    let release = st.releases().get(version)?.ok_or_else(unknown)?;
    let arches: Vec<&'static str> = release
        .arches
        .iter()
        .filter(|(_, a)| a.installer_base.is_some())
        .map(|(arch, _)| arch.as_str())
        .collect();
    if arches.is_empty() {
        return Err(unknown());
    }
    let paths: Vec<String> = arches.iter().map(|a| r.flavour.asset_path(a)).collect();
    let built = futures_util::future::join_all(
        paths
            .iter()
            .map(|p| installer_asset(st, r.schematic, version, p)),
    )
    .await;
    let mut manifests = Vec::with_capacity(arches.len());
    for ((arch, path), served) in arches.iter().zip(&paths).zip(built) {
        let served = served?;
        let image = st.assets().installer_manifest(&served).await?;
        record_image(store, r, version, path, &image)?;
        let mut d = Descriptor::for_bytes(MEDIA_OCI_MANIFEST, &image.bytes);
        d.platform = Some(Platform {
            architecture: (*arch).to_string(),
            os: "linux".into(),
            variant: None,
        });
        sign(st, store, r.repo, &d)?;
        manifests.push(d);
    }
    let index = ImageIndex {
        schema_version: 2,
        media_type: Some(MEDIA_OCI_INDEX.into()),
        manifests,
        annotations: Default::default(),
    };
    let bytes =
        serde_json::to_vec(&index).map_err(|e| RegistryError::caused("encoding the index", e))?;
    let d = Descriptor::for_bytes(MEDIA_OCI_INDEX, &bytes);
    let text = String::from_utf8(bytes.clone())
        .map_err(|e| RegistryError::caused("encoding the index", e))?;
    store.put_manifest(
        r.repo,
        d.digest.hex(),
        &Entry::Document {
            media_type: MEDIA_OCI_INDEX.into(),
            bytes: text,
        },
    )?;
    sign(st, store, r.repo, &d)?;
    Ok(Manifest {
        media_type: MEDIA_OCI_INDEX.into(),
        hex: d.digest.hex().to_string(),
        bytes,
    })
}

/// Records the digests of one installer image (manifest, config, layers) under `r`.
fn record_image(
    store: &RegistryStore,
    r: &Repo<'_>,
    version: &str,
    path: &str,
    image: &InstallerManifest,
) -> Result<(), RegistryError> {
    let entry = Entry::Installer {
        schematic: r.schematic.to_string(),
        version: version.to_string(),
        path: path.to_string(),
    };
    store.put_manifest(r.repo, &image.sha256, &entry)?;
    let m = &image.manifest;
    for d in std::iter::once(&m.config).chain(&m.layers) {
        store.put_blob(r.repo, d.digest.hex(), &entry)?;
    }
    Ok(())
}

/// The `<host>/<repo>` name signatures carry (`http.externalURL`'s host and port).
fn docker_reference(st: &AppState, repo: &str) -> String {
    let url = &st.node().config().http.external_url;
    let host = url::Url::parse(url)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_string();
            Some(match u.port() {
                Some(p) => format!("{host}:{p}"),
                None => host,
            })
        })
        .unwrap_or_else(|| "localhost".into());
    format!("{host}/{repo}")
}

fn document(media_type: &str, bytes: &[u8]) -> Result<Entry, RegistryError> {
    Ok(Entry::Document {
        media_type: media_type.to_string(),
        bytes: String::from_utf8(bytes.to_vec())
            .map_err(|e| RegistryError::caused("storing a signature", e))?,
    })
}

/// Signs `subject` in `repo` with the cluster key unless it is signed already: the cosign
/// `sha256-<hex>.sig` image, and the same signature as an OCI 1.1 referrer.
pub fn sign(
    st: &AppState,
    store: &RegistryStore,
    repo: &str,
    subject: &Descriptor,
) -> Result<(), RegistryError> {
    let hex = subject.digest.hex();
    if store.signature(repo, hex)?.is_some() {
        return Ok(());
    }
    let sig = SignatureImage::sign(
        st.node().signing_key(),
        &docker_reference(st, repo),
        &subject.digest,
    );
    store.put_blob(
        repo,
        sig.payload_descriptor.digest.hex(),
        &document(MEDIA_COSIGN_SIMPLESIGNING, &sig.payload)?,
    )?;
    store.put_blob(
        repo,
        sig.config_descriptor.digest.hex(),
        &document(MEDIA_OCI_CONFIG, &sig.config)?,
    )?;
    store.put_manifest(
        repo,
        sig.manifest_descriptor.digest.hex(),
        &document(MEDIA_OCI_MANIFEST, &sig.manifest)?,
    )?;
    let referrer = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "artifactType": COSIGN_SIG_ARTIFACT,
        "config": sig.config_descriptor,
        "layers": [sig.payload_descriptor],
        "subject": {
            "mediaType": subject.media_type,
            "digest": subject.digest,
            "size": subject.size,
        },
    });
    let bytes = serde_json::to_vec(&referrer)
        .map_err(|e| RegistryError::caused("encoding a signature", e))?;
    let referrer = Descriptor::for_bytes(MEDIA_OCI_MANIFEST, &bytes);
    store.put_manifest(
        repo,
        referrer.digest.hex(),
        &document(MEDIA_OCI_MANIFEST, &bytes)?,
    )?;
    store.put_signature(
        repo,
        hex,
        &Signed {
            tag_manifest: sig.manifest_descriptor.digest.hex().to_string(),
            referrer,
        },
    )?;
    Ok(())
}

/// The referrers index of `subject` in `repo`, filtered by `artifact_type`.
pub fn referrers(
    store: &RegistryStore,
    repo: &str,
    subject: &Digest,
    artifact_type: Option<&str>,
) -> Result<Vec<u8>, RegistryError> {
    let mut manifests = Vec::new();
    if let Some(s) = store.signature(repo, subject.hex())?
        && artifact_type.is_none_or(|t| t == COSIGN_SIG_ARTIFACT)
    {
        manifests.push(json!({
            "mediaType": s.referrer.media_type,
            "digest": s.referrer.digest,
            "size": s.referrer.size,
            "artifactType": COSIGN_SIG_ARTIFACT,
        }));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_INDEX,
        "manifests": manifests,
    });
    serde_json::to_vec(&index).map_err(|e| RegistryError::caused("encoding referrers", e))
}
