//! The referrers API client (`GET /v2/<name>/referrers/<digest>`, OCI distribution 1.1), with
//! the spec's client fallback to the referrers tag schema.

use reqwest::header::ACCEPT;
use reqwest::{Method, StatusCode};

use super::{RegistrySource, check_repository, media_type_of};
use crate::oci::referrers::{self, MAX_INDEX_BYTES, Referrers};
use crate::oci::{Digest, MEDIA_OCI_INDEX, OciError, Reference};

impl RegistrySource {
    /// Asks the referrers API for the referrers of `subject` (filtered by `artifact_type` when
    /// given; a registry that does not filter is filtered here). `Ok(None)` when the registry
    /// has no referrers API: it answers 404 (as the spec says such a registry does) or 400/405
    /// (an unknown route).
    async fn referrers_api(
        &self,
        reference: &Reference,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Referrers>, OciError> {
        let repo = reference.repository.as_str();
        check_repository(repo)?;
        let mut url = self.url(&format!("/v2/{repo}/referrers/{subject}"))?;
        if let Some(t) = artifact_type {
            url.query_pairs_mut().append_pair("artifactType", t);
        }
        let resp = self
            .send(repo, false, || {
                self.request(Method::GET, url.clone())
                    .header(ACCEPT, MEDIA_OCI_INDEX)
                    .timeout(self.opts.timeout)
            })
            .await?;
        let location = format!("{}/{repo}/referrers/{subject}", self.host);
        if matches!(
            resp.status(),
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED
        ) {
            tracing::debug!(
                status = %resp.status(),
                "{location}: no referrers API, using the referrers tag schema"
            );
            return Ok(None);
        }
        let resp = self.check(resp, &format!("referrers {location}")).await?;
        if let Some(ct) = media_type_of(resp.headers()).filter(|m| m != MEDIA_OCI_INDEX) {
            return Err(OciError::Malformed {
                what: format!("referrers index {location}"),
                message: format!("served as {ct}, expected {MEDIA_OCI_INDEX}"),
            });
        }
        let bytes = self.read_limited(resp, MAX_INDEX_BYTES).await?;
        Referrers::parse(&bytes, location, artifact_type).map(Some)
    }

    /// The referrers of `subject`: the referrers API's answer when it lists any, else the
    /// referrers tag schema (a registry without the API, or a mirror made by a tool that
    /// copied tags only).
    pub(super) async fn find_referrers(
        &self,
        reference: &Reference,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Referrers>, OciError> {
        if let Some(r) = self
            .referrers_api(reference, subject, artifact_type)
            .await?
            .filter(|r| !r.listed.is_empty())
        {
            return Ok(Some(r));
        }
        referrers::by_tag(self, reference, subject, artifact_type).await
    }
}
