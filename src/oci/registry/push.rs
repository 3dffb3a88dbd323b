//! The push side (monolithic blob upload, manifest PUT), used by tests and the test kit.

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use tokio::io::AsyncRead;

use super::{RegistrySource, check_repository, check_tag_or_digest};
use crate::oci::verify::VerifyingReader;
use crate::oci::{Descriptor, Digest, OciError};

impl RegistrySource {
    /// Whether `repository` has the blob `digest`.
    pub async fn has_blob(&self, repository: &str, digest: &Digest) -> Result<bool, OciError> {
        check_repository(repository)?;
        let url = self.url(&format!("/v2/{repository}/blobs/{digest}"))?;
        let resp = self
            .send(repository, false, || {
                self.request(Method::HEAD, url.clone())
                    .timeout(self.opts.timeout)
            })
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.err(format!("HEAD blob {digest}: HTTP {s}"))),
        }
    }

    /// Uploads a blob (monolithic: POST an upload, PUT the bytes with `?digest=`); skipped when
    /// the registry already has it.
    pub async fn push_blob(
        &self,
        repository: &str,
        desc: &Descriptor,
        reader: impl AsyncRead + Send + 'static,
    ) -> Result<(), OciError> {
        check_repository(repository)?;
        let scope = Self::scope(repository, true);
        let url = self.url(&format!("/v2/{repository}/blobs/uploads/"))?;
        let resp = self
            .send(repository, true, || {
                self.request(Method::POST, url.clone())
                    .header(CONTENT_LENGTH, 0)
                    .timeout(self.opts.timeout)
            })
            .await?;
        let resp = self
            .check(resp, &format!("starting upload of {}", desc.digest))
            .await?;
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.err("upload response has no Location"))?;
        let mut put = url
            .join(location)
            .map_err(self.failed(Some(format!("bad upload Location {location}"))))?;
        put.query_pairs_mut()
            .append_pair("digest", desc.digest.as_str());
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(
            VerifyingReader::for_descriptor(Box::pin(reader), desc),
        ));
        let mut rb = self
            .request(Method::PUT, put.clone())
            .header(CONTENT_LENGTH, desc.size)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body);
        if self.same_origin(&put) {
            rb = self.authorize(rb, &scope);
        }
        let resp = rb
            .send()
            .await
            .map_err(self.failed(Some(format!("uploading {}", desc.digest))))?;
        self.check(resp, &format!("uploading {}", desc.digest))
            .await?;
        Ok(())
    }

    /// Uploads a manifest under `reference` (tag or digest); returns its digest.
    pub async fn push_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<Digest, OciError> {
        check_repository(repository)?;
        check_tag_or_digest(reference)?;
        let digest = Digest::of(&bytes);
        let url = self.url(&format!("/v2/{repository}/manifests/{reference}"))?;
        let resp = self
            .send(repository, true, || {
                self.request(Method::PUT, url.clone())
                    .header(CONTENT_TYPE, media_type)
                    .body(bytes.clone())
                    .timeout(self.opts.timeout)
            })
            .await?;
        self.check(resp, &format!("pushing manifest {repository}:{reference}"))
            .await?;
        Ok(digest)
    }
}
