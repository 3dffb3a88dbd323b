//! Trust: the cluster signing key (ECDSA P-256) and cosign signatures of OCI images.
//!
//! * [`keys`]: the cluster [`SigningKey`] (PEM, generated on first start) and [`TrustError`];
//! * [`cosign`]: cosign's key-based "legacy tag" format — the simple-signing payload, signature
//!   images at `sha256-<hex>.sig`, [`TrustedKeys`], [`verify_signature`];
//! * [`policy`]: [`verify_image`] over an `oci::ImageSource` and the [`TrustPolicy`] the
//!   importer calls (the place keyless verification joins later);
//! * [`secureboot`]: Secure Boot keys (UKI signing, PCR), Authenticode and `.pcrsig`.

pub mod cosign;
mod keys;
pub mod policy;
pub mod secureboot;
mod token;

pub use cosign::{
    SignatureImage, SignedIdentity, TrustedKey, TrustedKeys, VerifiedBy, simple_signing_payload,
    verify_signature,
};
pub(crate) use keys::write_private;
pub use keys::{SigningKey, TrustError};
pub use policy::{TrustPolicy, Verification, Verifier, verify_image};
pub use token::{load_or_generate_token, token_matches};
