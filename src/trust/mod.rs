//! Trust: the cluster signing key (ECDSA P-256) and cosign signatures of OCI images.
//!
//! * [`keys`]: the cluster [`SigningKey`] (PEM, generated on first start) and [`TrustError`];
//! * [`cosign`]: cosign's key-based "legacy tag" format — the simple-signing payload, signature
//!   images at `sha256-<hex>.sig`, [`TrustedKeys`], [`verify_signature`];
//! * [`keyless`]: Sigstore keyless signatures (Fulcio certificate, Rekor entry) verified
//!   offline against a local `trusted_root.json` and identity policy;
//! * [`policy`]: [`verify_image`] / [`verify_image_keyless`] over an `oci::ImageSource` and the
//!   [`TrustPolicy`] the importer calls;
//! * [`secureboot`]: Secure Boot keys (UKI signing, PCR), Authenticode and `.pcrsig`.

pub mod cosign;
pub mod keyless;
mod keys;
pub mod policy;
pub mod secureboot;
mod token;

pub use cosign::{
    SignatureImage, SignedIdentity, TrustedKey, TrustedKeys, VerifiedBy, simple_signing_payload,
    verify_signature,
};
pub use keyless::KeylessPolicy;
pub(crate) use keys::write_private;
pub use keys::{SigningKey, TrustError};
pub use policy::{TrustPolicy, Verification, Verifier, verify_image, verify_image_keyless};
pub use token::{load_or_generate_token, token_matches};
