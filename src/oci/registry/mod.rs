//! `RegistrySource`: a distribution v2 (OCI distribution) registry client.
//!
//! Pull side for importing (resolve, manifests, streamed and verified blobs, tag listing with
//! pagination, referrers through the referrers API with the tag-schema fallback) and a small push side used by tests and the test kit. Authentication: anonymous,
//! basic, and the bearer-token flow (`WWW-Authenticate: Bearer realm=…,service=…,scope=…`, tokens
//! cached per scope). HTTPS by default; plain HTTP only for loopback hosts or when `insecure`.
//!
//! The registry part of a `Reference` is ignored: a `RegistrySource` talks to one host, so a
//! reference such as `ghcr.io/siderolabs/imager:v1.11.0` is looked up as repository
//! `siderolabs/imager` on that host (which is how a mirror is used).

mod auth;
mod push;
mod referrers;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures_util::TryStreamExt;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, LINK};
use reqwest::{Method, StatusCode};
use url::Url;

pub use auth::is_loopback;

use super::layout::METADATA_LIMIT;
use super::verify::VerifyingReader;
use super::{
    BlobReader, Descriptor, Digest, ImageSource, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, OciError, Reference, Referrers,
};

/// The manifest media types asked for, in order of preference.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
/// Upper bound on tag-list pages followed.
const MAX_TAG_PAGES: usize = 10_000;

/// How to reach a registry.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Allow plain HTTP to non-loopback hosts and accept invalid TLS certificates.
    pub insecure: bool,
    /// Username and password for basic auth and for the token endpoint.
    pub credentials: Option<(String, String)>,
    /// Connect and per-read timeout; also the total timeout of non-blob requests.
    pub timeout: Duration,
    /// Largest manifest, index or token response accepted.
    pub manifest_limit: u64,
    /// The User-Agent header.
    pub user_agent: String,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure: false,
            credentials: None,
            timeout: Duration::from_secs(60),
            manifest_limit: METADATA_LIMIT,
            user_agent: format!("image-factory/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// A distribution v2 registry.
pub struct RegistrySource {
    host: String,
    base: Url,
    client: reqwest::Client,
    opts: RegistryOptions,
    /// Bearer tokens by scope (`repository:<repo>:pull` or `…:pull,push`).
    tokens: Mutex<HashMap<String, String>>,
    /// The registry asked for basic auth once; send it up front from then on.
    basic: AtomicBool,
}

/// Checks a repository path (`a/b-c/d_e`), as it goes into URLs.
fn check_repository(repo: &str) -> Result<(), OciError> {
    let ok = !repo.is_empty()
        && repo.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c != "."
                && c != ".."
        });
    if ok {
        Ok(())
    } else {
        Err(OciError::InvalidReference(repo.to_string()))
    }
}

/// Checks a tag or digest used as a manifest reference.
fn check_tag_or_digest(r: &str) -> Result<(), OciError> {
    let tag_ok = !r.is_empty()
        && r.len() <= 128
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if tag_ok || r.parse::<Digest>().is_ok() {
        Ok(())
    } else {
        Err(OciError::InvalidReference(r.to_string()))
    }
}

/// The `rel="next"` target of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .contains("rel=\"next\"")
            .then(|| url.to_string())
            .or_else(|| params.contains("rel=next").then(|| url.to_string()))
    })
}

fn media_type_of(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let mt = ct.split(';').next()?.trim();
    (!mt.is_empty() && mt != "application/json" && mt != "text/plain").then(|| mt.to_string())
}

impl RegistrySource {
    /// A client for `registry` (`host[:port]`, or `http://…` / `https://…`). Without a scheme
    /// HTTPS is used, except for loopback hosts or with `insecure`, which use plain HTTP.
    pub fn new(registry: &str, opts: RegistryOptions) -> Result<RegistrySource, OciError> {
        let err = |message: String| OciError::Registry {
            registry: registry.to_string(),
            message,
        };
        let bad_address = |e: url::ParseError| OciError::Request {
            registry: registry.to_string(),
            context: None,
            source: Box::new(e),
        };
        let with_scheme = if registry.starts_with("http://") || registry.starts_with("https://") {
            registry.to_string()
        } else {
            let host = Url::parse(&format!("https://{registry}")).map_err(bad_address)?;
            let plain = opts.insecure || host.host_str().is_some_and(is_loopback);
            format!("{}://{registry}", if plain { "http" } else { "https" })
        };
        let base = Url::parse(&with_scheme).map_err(bad_address)?;
        let host_name = base
            .host_str()
            .ok_or_else(|| err("no host".into()))?
            .to_string();
        if base.path() != "/" || base.query().is_some() {
            return Err(err(
                "a registry address has no path; put namespaces in the repository".into(),
            ));
        }
        if base.scheme() == "http" && !opts.insecure && !is_loopback(&host_name) {
            return Err(err(format!(
                "plain HTTP to {host_name} is refused: use https, or configure this registry as insecure"
            )));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(opts.timeout)
            .read_timeout(opts.timeout)
            .user_agent(opts.user_agent.clone())
            .tls_danger_accept_invalid_certs(opts.insecure)
            .build()
            .map_err(|e| OciError::Request {
                registry: registry.to_string(),
                context: Some("HTTP client".into()),
                source: Box::new(e),
            })?;
        let host = match base.port() {
            Some(p) => format!("{host_name}:{p}"),
            None => host_name,
        };
        Ok(RegistrySource {
            host,
            base,
            client,
            opts,
            tokens: Mutex::new(HashMap::new()),
            basic: AtomicBool::new(false),
        })
    }

    /// The registry host (`host[:port]`).
    pub fn host(&self) -> &str {
        &self.host
    }

    fn err(&self, message: impl Into<String>) -> OciError {
        OciError::Registry {
            registry: self.host.clone(),
            message: message.into(),
        }
    }

    /// Maps a failure below HTTP, while doing `context` if the cause does not say (for
    /// `map_err`).
    fn failed<E>(&self, context: Option<String>) -> impl FnOnce(E) -> OciError + use<E>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let registry = self.host.clone();
        move |source| OciError::Request {
            registry,
            context,
            source: Box::new(source),
        }
    }

    fn url(&self, path: &str) -> Result<Url, OciError> {
        self.base
            .join(path)
            .map_err(self.failed(Some(format!("bad URL {path}"))))
    }

    fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.base.scheme()
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default()
    }

    /// Lists every tag of `repository`, following `Link` pagination.
    pub async fn list_tags(&self, repository: &str) -> Result<Vec<String>, OciError> {
        check_repository(repository)?;
        let mut url = self.url(&format!("/v2/{repository}/tags/list"))?;
        url.query_pairs_mut().append_pair("n", "1000");
        let mut tags = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let u = url.clone();
            let resp = self
                .send(repository, false, || {
                    self.request(Method::GET, u.clone())
                        .timeout(self.opts.timeout)
                })
                .await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(tags);
            }
            let resp = self.check(resp, &format!("tags of {repository}")).await?;
            let next = next_link(resp.headers());
            let body = self.read_limited(resp, self.opts.manifest_limit).await?;
            let json: serde_json::Value =
                serde_json::from_slice(&body).map_err(self.failed(Some("tag list".into())))?;
            if let Some(list) = json.get("tags").and_then(|t| t.as_array()) {
                tags.extend(list.iter().filter_map(|t| t.as_str().map(str::to_string)));
            }
            let Some(next) = next else { return Ok(tags) };
            let next = url
                .join(&next)
                .map_err(self.failed(Some(format!("bad Link {next}"))))?;
            if !self.same_origin(&next) || next == url {
                return Err(self.err(format!("refusing tag-list pagination to {next}")));
            }
            url = next;
        }
        Err(self.err(format!(
            "tag list of {repository} has more than {MAX_TAG_PAGES} pages"
        )))
    }

    /// GETs a manifest by tag or digest: (bytes, media type from the response).
    async fn get_manifest(
        &self,
        repo: &str,
        r: &str,
        limit: u64,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, OciError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{r}"))?;
        let resp = self
            .send(repo, false, || {
                self.request(Method::GET, url.clone())
                    .header(ACCEPT, MANIFEST_ACCEPT)
                    .timeout(self.opts.timeout)
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self.check(resp, &format!("manifest {repo}:{r}")).await?;
        let mt = media_type_of(resp.headers());
        Ok(Some((self.read_limited(resp, limit).await?, mt)))
    }
}

/// The media type a manifest body declares (or implies).
fn declared_media_type(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if let Some(mt) = v.get("mediaType").and_then(|m| m.as_str()) {
        return Some(mt.to_string());
    }
    Some(
        if v.get("manifests").is_some() {
            MEDIA_OCI_INDEX
        } else {
            MEDIA_OCI_MANIFEST
        }
        .to_string(),
    )
}

/// Whether a media type is one of the manifest/index types we understand.
fn known_manifest_type(mt: &str) -> bool {
    [
        MEDIA_OCI_INDEX,
        MEDIA_OCI_MANIFEST,
        MEDIA_DOCKER_LIST,
        MEDIA_DOCKER_MANIFEST,
    ]
    .contains(&mt)
}

impl ImageSource for RegistrySource {
    fn describe(&self) -> String {
        format!("registry {}", self.host)
    }

    async fn resolve(&self, reference: &Reference) -> Result<Option<Descriptor>, OciError> {
        let repo = reference.repository.as_str();
        check_repository(repo)?;
        let r = match (&reference.digest, &reference.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => return Err(OciError::InvalidReference(reference.to_string())),
        };
        check_tag_or_digest(&r)?;
        let url = self.url(&format!("/v2/{repo}/manifests/{r}"))?;
        let resp = self
            .send(repo, false, || {
                self.request(Method::HEAD, url.clone())
                    .header(ACCEPT, MANIFEST_ACCEPT)
                    .timeout(self.opts.timeout)
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self.check(resp, &format!("manifest {reference}")).await?;
        let h = resp.headers();
        let digest = h
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|d| d.parse::<Digest>().ok());
        let size = h
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| l.parse::<u64>().ok());
        let mt = media_type_of(h).filter(|m| known_manifest_type(m));
        if let (Some(digest), Some(size), Some(media_type)) = (digest, size, mt) {
            if reference.digest.as_ref().is_some_and(|d| *d != digest) {
                return Err(OciError::DigestMismatch {
                    what: format!("manifest {reference}"),
                    expected: r,
                    actual: digest.to_string(),
                });
            }
            if size > self.opts.manifest_limit {
                return Err(OciError::Limit(format!(
                    "manifest {reference} is {size} bytes"
                )));
            }
            return Ok(Some(Descriptor {
                media_type,
                digest,
                size,
                annotations: Default::default(),
                platform: None,
            }));
        }
        // The HEAD answer was incomplete: fetch the manifest and describe it ourselves.
        let Some((bytes, mt)) = self
            .get_manifest(repo, &r, self.opts.manifest_limit)
            .await?
        else {
            return Ok(None);
        };
        let desc = Descriptor::for_bytes(
            &mt.filter(|m| known_manifest_type(m))
                .or_else(|| declared_media_type(&bytes))
                .unwrap_or_default(),
            &bytes,
        );
        if reference.digest.as_ref().is_some_and(|d| *d != desc.digest) {
            return Err(OciError::DigestMismatch {
                what: format!("manifest {reference}"),
                expected: r,
                actual: desc.digest.to_string(),
            });
        }
        Ok(Some(desc))
    }

    async fn manifest(
        &self,
        reference: &Reference,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>, OciError> {
        let repo = reference.repository.as_str();
        check_repository(repo)?;
        let (bytes, _) = self
            .get_manifest(repo, digest.as_str(), limit)
            .await?
            .ok_or_else(|| {
                OciError::NotFound(format!("manifest {digest} in {}/{repo}", self.host))
            })?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(OciError::DigestMismatch {
                what: format!("manifest of {repo}"),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    async fn blob(
        &self,
        reference: &Reference,
        descriptor: &Descriptor,
    ) -> Result<BlobReader, OciError> {
        let repo = reference.repository.as_str();
        check_repository(repo)?;
        let digest = &descriptor.digest;
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        let resp = self
            .send(repo, false, || self.request(Method::GET, url.clone()))
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(OciError::NotFound(format!(
                "blob {digest} in {}/{repo}",
                self.host
            )));
        }
        let resp = self.check(resp, &format!("blob {digest}")).await?;
        if let Some(len) = resp.content_length().filter(|l| *l != descriptor.size) {
            return Err(OciError::DigestMismatch {
                what: format!("blob {digest}"),
                expected: format!("{} bytes", descriptor.size),
                actual: format!("{len} bytes"),
            });
        }
        let stream = resp.bytes_stream().map_err(std::io::Error::other);
        let reader = tokio_util::io::StreamReader::new(stream);
        Ok(Box::pin(VerifyingReader::new(
            reader,
            digest.clone(),
            descriptor.size,
        )))
    }

    async fn referrers(
        &self,
        reference: &Reference,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Referrers>, OciError> {
        self.find_referrers(reference, subject, artifact_type).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_and_names() {
        assert!(
            is_loopback("127.0.0.5")
                && is_loopback("::1")
                && is_loopback("[::1]")
                && is_loopback("localhost")
        );
        assert!(!is_loopback("10.0.0.1") && !is_loopback("example.com"));
        let opts = RegistryOptions::default();
        assert_eq!(
            RegistrySource::new("127.0.0.1:5000", opts.clone())
                .unwrap()
                .base
                .scheme(),
            "http"
        );
        assert_eq!(
            RegistrySource::new("ghcr.io", opts.clone())
                .unwrap()
                .base
                .scheme(),
            "https"
        );
        assert!(RegistrySource::new("http://10.0.0.1:5000", opts.clone()).is_err());
        assert!(RegistrySource::new("ghcr.io/siderolabs", opts.clone()).is_err());
        let insecure = RegistryOptions {
            insecure: true,
            ..opts
        };
        assert_eq!(
            RegistrySource::new("10.0.0.1:5000", insecure)
                .unwrap()
                .base
                .scheme(),
            "http"
        );
        assert!(check_repository("siderolabs/imager").is_ok());
        assert!(
            check_repository("a/../b").is_err()
                && check_repository("A").is_err()
                && check_repository("a//b").is_err()
        );
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            "</v2/a/tags/list?n=2&last=b>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(next_link(&h).as_deref(), Some("/v2/a/tags/list?n=2&last=b"));
    }
}
