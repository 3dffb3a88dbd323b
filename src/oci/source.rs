//! The `ImageSource` abstraction: anything images can be read from (an OCI layout, an archive,
//! a registry), with every byte checked against its digest.

use std::future::Future;
use std::pin::Pin;

use tokio::io::AsyncRead;

use super::referrers::{self, Referrers};
use super::{Descriptor, Digest, OciError, Reference};

/// A stream of blob bytes. Implementations verify size and digest and fail the read that reaches
/// the end of the stream when they do not match.
pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

/// A place images can be read from.
pub trait ImageSource: Send + Sync {
    /// A short description for logs and errors (e.g. `bundle /media/x.tar`, `registry 10.0.0.5:5000`).
    fn describe(&self) -> String;

    /// Resolves a reference (by tag or digest) to the descriptor of its top-level manifest or
    /// index; `Ok(None)` when the source does not have it.
    fn resolve(
        &self,
        reference: &Reference,
    ) -> impl Future<Output = Result<Option<Descriptor>, OciError>> + Send;

    /// Fetches a manifest or index by digest from the repository of `reference`; the bytes are
    /// verified against `digest`. At most `limit` bytes are accepted.
    fn manifest(
        &self,
        reference: &Reference,
        digest: &Digest,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<u8>, OciError>> + Send;

    /// Opens a blob of the repository of `reference` as a verified stream.
    fn blob(
        &self,
        reference: &Reference,
        descriptor: &Descriptor,
    ) -> impl Future<Output = Result<BlobReader, OciError>> + Send;

    /// The referrers of `subject` in the repository of `reference` (of `artifact_type`, when
    /// given); `Ok(None)` when none is listed. By default the referrers tag schema
    /// (`sha256-<hex>`); a registry asks its referrers API first.
    fn referrers(
        &self,
        reference: &Reference,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> impl Future<Output = Result<Option<Referrers>, OciError>> + Send {
        referrers::by_tag(self, reference, subject, artifact_type)
    }
}
