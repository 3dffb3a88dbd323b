//! Secure Boot signing material and the signatures made with it (imager spec §7.3, §7.4):
//!
//! * [`keys`]: the UKI signing key and certificate and the PCR signing key — loaded from
//!   upstream's PEM files and validated at start, or generated for a new site;
//! * [`authenticode`]: the Authenticode image hash of a PE file and signing it in place
//!   (a PKCS#7 `SignedData` in a `WIN_CERTIFICATE`, as `sbsign` writes it);
//! * [`pcr`]: the expected TPM PCR 11 values of a UKI and the signed `.pcrsig` policy;
//! * [`enroll`]: `PK.auth`, `KEK.auth`, `db.auth` for setup-mode enrolment;
//! * [`pkcs7`]: the `SignedData` structures of both;
//! * [`der`]: the few DER shapes the others write and read.
//!
//! All RSA operations are aws-lc-rs (already the TLS provider); ASN.1 is written by hand
//! (`der.rs`) instead of pulling the RustCrypto `cms`/`x509-cert`/`rsa` release candidates that
//! would match this tree's `der` 0.8: the structures are fixed, and the tests check every one of
//! them with `sbverify`, `osslsigncode` and `openssl`.

pub mod authenticode;
pub mod der;
pub mod enroll;
pub mod keys;
pub mod pcr;
mod pem;
pub mod pkcs7;

pub use keys::{GeneratedFiles, SecureBootKeys, SecureBootPaths, generate};

use std::path::PathBuf;

/// Why Secure Boot keys cannot be loaded, generated or used.
#[derive(Debug, thiserror::Error)]
pub enum SecureBootError {
    /// A key or certificate file cannot be read.
    #[error("secure boot {what} {path}: cannot read")]
    Read {
        /// Which file (`signing key`, `signing certificate`, `PCR key`).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file holds the wrong kind of key or is not PEM.
    #[error("secure boot {what} {path}: {reason}")]
    WrongType {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// A key or certificate does not parse.
    #[error("secure boot {what} {path}: {reason}")]
    Malformed {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
        /// The parser's error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The signing certificate is outside its validity period.
    #[error(
        "secure boot signing certificate {path}: {state} (valid from {not_before} to {not_after}); generate new keys with `image-factory keys secureboot generate`"
    )]
    CertificateValidity {
        /// The certificate file.
        path: PathBuf,
        /// `expired` or `not yet valid`.
        state: &'static str,
        /// Start of validity, RFC 3339.
        not_before: String,
        /// End of validity, RFC 3339.
        not_after: String,
    },
    /// The signing key is not the key of the signing certificate.
    #[error(
        "secure boot signing key {key} does not match the certificate {cert}: the certificate's public key is another key's"
    )]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// `secureBoot.enabled` without all three file paths.
    #[error("secureBoot.enabled needs secureBoot.file.{missing}")]
    Incomplete {
        /// The missing key name.
        missing: &'static str,
    },
    /// An RSA operation failed.
    #[error("secure boot: RSA {0} failed")]
    Crypto(&'static str),
    /// Writing generated keys failed.
    #[error("secure boot: cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The output directory already holds key files.
    #[error("{path} already exists: refusing to overwrite Secure Boot keys")]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// A file to sign is not a PE32+ image this signer understands.
    #[error("not a signable PE32+ image: {0}")]
    NotPe(String),
    /// A file to sign already carries a signature.
    #[error("the PE image is already signed (certificate table of {0} bytes)")]
    AlreadySigned(u32),
    /// Reading or writing a file to sign failed.
    #[error("authenticode: reading or writing the PE file")]
    Io(#[from] std::io::Error),
}
