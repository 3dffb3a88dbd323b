//! OCI 1.1 referrers of an image: the artifacts (cosign signatures, Sigstore bundles, SBOMs)
//! whose manifest's `subject` is the image. A registry with the referrers API answers
//! `GET /v2/<name>/referrers/<digest>` with an index of them; everything else (registries
//! without the API, OCI layouts, archives, offline bundles) holds the same index under the
//! referrers tag schema, tagged `sha256-<hex>`. [`super::ImageSource::referrers`] finds it.
//!
//! An index is only a list of candidates: whoever lists a referrer can list anything, so a
//! referrer manifest is read with [`ReferrerManifest::parse_for`], which refuses one whose
//! `subject` is not the image asked about.

use serde::{Deserialize, Serialize};

use super::{Descriptor, Digest, ImageSource, MEDIA_OCI_INDEX, OciError, Reference};

/// Largest referrers index read (from the API or at the tag).
pub const MAX_INDEX_BYTES: u64 = 1024 * 1024;
/// Most referrers kept from one index, after the artifact-type filter.
pub const MAX_LISTED: usize = 16;

/// The referrers tag schema's tag for `digest` (`sha256-<hex>`).
pub fn tag(digest: &Digest) -> String {
    format!("sha256-{}", digest.hex())
}

/// One referrer as an index lists it: its manifest descriptor and artifact type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    /// The referrer manifest.
    #[serde(flatten)]
    pub descriptor: Descriptor,
    /// Its artifact type, when the index says.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
}

/// The referrers of one image, as one index listed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrers {
    /// What was asked, for messages (`<host>/<repo>/referrers/<digest>` or the tag reference).
    pub location: String,
    /// The referrers listed, in order: of the artifact type asked for (or not saying), at most
    /// [`MAX_LISTED`].
    pub listed: Vec<Listed>,
}

/// The part of an index this reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    #[serde(default)]
    media_type: Option<String>,
    manifests: Vec<serde_json::Value>,
}

impl Referrers {
    /// Reads a referrers index found at `location`, keeping the referrers of `artifact_type`
    /// (and those whose type the index does not give; a registry may not filter). The index
    /// must be an OCI image index; entries that are not descriptors are skipped.
    pub fn parse(
        bytes: &[u8],
        location: String,
        artifact_type: Option<&str>,
    ) -> Result<Referrers, OciError> {
        if bytes.len() as u64 > MAX_INDEX_BYTES {
            return Err(OciError::Limit(format!(
                "referrers index {location} exceeds {MAX_INDEX_BYTES} bytes"
            )));
        }
        let index: Index = serde_json::from_slice(bytes)
            .map_err(OciError::decode(format!("referrers index {location}")))?;
        if let Some(mt) = index
            .media_type
            .as_deref()
            .filter(|m| *m != MEDIA_OCI_INDEX)
        {
            return Err(OciError::Malformed {
                what: format!("referrers index {location}"),
                message: format!("media type {mt}, expected {MEDIA_OCI_INDEX}"),
            });
        }
        let listed = index
            .manifests
            .into_iter()
            .filter_map(|v| serde_json::from_value::<Listed>(v).ok())
            .filter(|l| {
                artifact_type
                    .is_none_or(|want| l.artifact_type.as_deref().is_none_or(|t| t == want))
            })
            .take(MAX_LISTED)
            .collect();
        Ok(Referrers { location, listed })
    }

    /// An OCI index listing `listed` (what an offline bundle stores at the referrers tag), with
    /// its descriptor.
    pub fn index_of(listed: &[Listed]) -> Result<(Vec<u8>, Descriptor), OciError> {
        let bytes = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_INDEX,
            "manifests": listed,
        }))
        .map_err(OciError::decode("referrers index"))?;
        let d = Descriptor::for_bytes(MEDIA_OCI_INDEX, &bytes);
        Ok((bytes, d))
    }
}

/// A referrer manifest: what it carries and what it refers to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferrerManifest {
    /// Its artifact type, when set.
    #[serde(default)]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layer blobs (a Sigstore bundle referrer has one, the bundle).
    pub layers: Vec<Descriptor>,
    /// The manifest it refers to.
    #[serde(default)]
    pub subject: Option<Descriptor>,
}

impl ReferrerManifest {
    /// Reads a referrer manifest of the image `subject`: `Err` (why) when it does not parse or
    /// its `subject` is missing or another manifest (a misfiled or planted referrer).
    pub fn parse_for(bytes: &[u8], subject: &Digest) -> Result<ReferrerManifest, String> {
        let m: ReferrerManifest =
            serde_json::from_slice(bytes).map_err(|e| format!("not a referrer manifest: {e}"))?;
        match &m.subject {
            Some(s) if &s.digest == subject => Ok(m),
            Some(s) => Err(format!("its subject is {}, not {subject}", s.digest)),
            None => Err("it has no subject".into()),
        }
    }
}

/// The referrers tag schema lookup: the index tagged `sha256-<hex>` of `subject` in the
/// repository of `reference` (what [`super::ImageSource::referrers`] does by default).
pub async fn by_tag<S: ImageSource + ?Sized>(
    source: &S,
    reference: &Reference,
    subject: &Digest,
    artifact_type: Option<&str>,
) -> Result<Option<Referrers>, OciError> {
    let tag_ref = reference.with_tag(&tag(subject));
    let d = match source.resolve(&tag_ref).await {
        Ok(Some(d)) => d,
        Ok(None) | Err(OciError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    if !d.is_index() {
        return Err(OciError::Malformed {
            what: tag_ref.to_string(),
            message: format!("a {}, not a referrers index", d.media_type),
        });
    }
    let bytes = source
        .manifest(&tag_ref, &d.digest, MAX_INDEX_BYTES)
        .await?;
    let r = Referrers::parse(&bytes, tag_ref.to_string(), artifact_type)?;
    Ok((!r.listed.is_empty()).then_some(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(artifact_type: Option<&str>, n: u8) -> serde_json::Value {
        let d = Descriptor::for_bytes(super::super::MEDIA_OCI_MANIFEST, &[n]);
        let mut v = serde_json::to_value(&d).unwrap();
        if let Some(t) = artifact_type {
            v["artifactType"] = t.into();
        }
        v
    }

    #[test]
    fn filters_budgets_and_checks_the_media_type() {
        let mut manifests = vec![entry(Some("a/b"), 0), entry(Some("c/d"), 1), entry(None, 2)];
        manifests.push(serde_json::json!({"not": "a descriptor"}));
        manifests.extend((3..40).map(|n| entry(Some("a/b"), n)));
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": manifests});
        let bytes = serde_json::to_vec(&index).unwrap();
        let r = Referrers::parse(&bytes, "x".into(), Some("a/b")).unwrap();
        assert_eq!(r.listed.len(), MAX_LISTED);
        assert!(
            r.listed
                .iter()
                .all(|l| l.artifact_type.as_deref() != Some("c/d"))
        );
        assert_eq!(r.listed[1].artifact_type, None);
        let all = Referrers::parse(&bytes, "x".into(), None).unwrap();
        assert_eq!(all.listed[1].artifact_type.as_deref(), Some("c/d"));
        // What an offline bundle stores reads back the same.
        let (again, d) = Referrers::index_of(&r.listed).unwrap();
        assert_eq!(d.digest, Digest::of(&again));
        let back = Referrers::parse(&again, "y".into(), Some("a/b")).unwrap();
        assert_eq!(back.listed, r.listed);

        let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": super::super::MEDIA_OCI_MANIFEST, "manifests": []});
        let err = Referrers::parse(&serde_json::to_vec(&manifest).unwrap(), "x".into(), None)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("expected application/vnd.oci.image.index.v1+json"),
            "{err}"
        );
        let big = vec![b' '; MAX_INDEX_BYTES as usize + 1];
        assert!(matches!(
            Referrers::parse(&big, "x".into(), None),
            Err(OciError::Limit(_))
        ));
    }

    #[test]
    fn a_referrer_of_another_image_is_refused() {
        let image = Digest::of(b"image");
        let other = Digest::of(b"other");
        let manifest = |subject: Option<&Digest>| {
            let mut v = serde_json::json!({
                "schemaVersion": 2,
                "config": Descriptor::for_bytes("application/vnd.oci.empty.v1+json", b"{}"),
                "layers": [],
            });
            if let Some(s) = subject {
                v["subject"] = serde_json::to_value(Descriptor::for_bytes(
                    MEDIA_OCI_INDEX,
                    s.as_str().as_bytes(),
                ))
                .unwrap();
                v["subject"]["digest"] = s.as_str().into();
            }
            serde_json::to_vec(&v).unwrap()
        };
        assert!(ReferrerManifest::parse_for(&manifest(Some(&image)), &image).is_ok());
        let err = ReferrerManifest::parse_for(&manifest(Some(&other)), &image).unwrap_err();
        assert!(err.contains(other.as_str()), "{err}");
        assert!(ReferrerManifest::parse_for(&manifest(None), &image).is_err());
        assert!(ReferrerManifest::parse_for(b"[]", &image).is_err());
    }
}
