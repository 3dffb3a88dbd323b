//! Trust: the cluster signing key (ECDSA P-256) and cosign signatures of OCI images.
//!
//! * [`keys`]: the cluster [`SigningKey`] (PEM, generated on first start) and [`TrustError`];
//! * [`cosign`]: cosign's key-based "legacy tag" format — the simple-signing payload, signature
//!   images at `sha256-<hex>.sig`, [`TrustedKeys`] and the [`TrustPolicy`] the importer calls.

pub mod cosign;
mod keys;
mod token;

pub use cosign::{
    SignatureImage, TrustPolicy, TrustedKey, TrustedKeys, Verification, VerifiedBy, Verifier,
    simple_signing_payload, verify_image, verify_signature,
};
pub(crate) use keys::write_private;
pub use keys::{SigningKey, TrustError};
pub use token::{load_or_generate_token, token_matches};
