//! The cluster signing key (ECDSA P-256), loaded from PEM or generated on first start, and the
//! errors of the trust layer.

use std::io::Write;
use std::path::{Path, PathBuf};

use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};

use crate::oci::OciError;

/// Errors of the trust layer.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The key file could not be read or written.
    #[error("signing key {path}: {source}")]
    Io {
        /// Key file path.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The key file is not a P-256 private key in PEM form.
    #[error(
        "signing key {path}: not an ECDSA P-256 private key in PEM (PKCS#8 \"PRIVATE KEY\" or SEC1 \"EC PRIVATE KEY\"): {source}"
    )]
    Parse {
        /// Key file path.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A key or token could not be made.
    #[error("signing key: {0}")]
    Crypto(String),
    /// Encoding a key or drawing randomness failed.
    #[error("signing key: {0}")]
    CryptoFailed(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A trusted public key is not usable.
    #[error("trusted public key {source_name}: {message}")]
    PublicKey {
        /// Where the key came from (file path or config key).
        source_name: String,
        /// What is wrong with it.
        message: String,
    },
    /// A trusted public key file could not be read.
    #[error("trusted public key {source_name}: {source}")]
    PublicKeyFile {
        /// The file.
        source_name: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A trusted public key's PEM block is not an ECDSA P-256 PKIX public key.
    #[error("trusted public key {source_name}: not an ECDSA P-256 PKIX public key: {source}")]
    PublicKeyPem {
        /// Where the key came from (file path or config key).
        source_name: String,
        /// The decoder's error.
        #[source]
        source: p256::pkcs8::spki::Error,
    },
    /// The image has no cosign signature (no `sha256-<hex>.sig` manifest in its repository).
    #[error("image {image}: not signed (no cosign signature {signature_ref})")]
    Unsigned {
        /// The signed image (reference with digest).
        image: String,
        /// Where the signature was looked for.
        signature_ref: String,
    },
    /// The signature image is altered or malformed: a payload that does not match its layer
    /// digest, an undecodable signature, a missing simple-signing layer, a malformed payload.
    #[error(
        "image {image}: signature rejected, signature image tampered or malformed: {reason}{}",
        .source.as_ref().map(|s| format!(": {s}")).unwrap_or_default()
    )]
    Tampered {
        /// The signed image.
        image: String,
        /// What was found wrong.
        reason: String,
        /// The decoder's or reader's error, if one found it.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A trusted key signed a payload for another manifest digest (a replayed signature).
    #[error(
        "image {image}: signature is for another image: the signed payload names {signed}, expected {expected}"
    )]
    DigestMismatch {
        /// The signed image.
        image: String,
        /// The digest that was fetched and should have been signed.
        expected: String,
        /// The digest the signed payload names.
        signed: String,
    },
    /// A trusted key signed this digest for another repository (the payload's
    /// `critical.identity.docker-reference`): a signature replayed under another image's name.
    #[error(
        "image {image}: signature names another repository: the signed payload is for {signed}, expected {expected} (below any registry host and mirror namespace)"
    )]
    IdentityMismatch {
        /// The signed image.
        image: String,
        /// The docker-reference the signed payload names.
        signed: String,
        /// The repository path the image must be signed as.
        expected: String,
    },
    /// Well-formed signatures, but none verifies under any trusted key.
    #[error(
        "image {image}: not signed by a trusted key ({signatures} signature(s) checked against {keys} trusted key(s))"
    )]
    UnknownKey {
        /// The signed image.
        image: String,
        /// Signatures checked.
        signatures: usize,
        /// Trusted keys tried.
        keys: usize,
    },
    /// A keyless signature failed one of the checks (named by `check`).
    #[error("image {image}: keyless signature rejected: {check} check failed: {reason}")]
    Keyless {
        /// The signed image.
        image: String,
        /// Which check refused it.
        check: crate::trust::keyless::Check,
        /// What was found.
        reason: String,
    },
    /// No keyless signature was found (no `.sig` layer with a certificate, no Sigstore bundle).
    #[error(
        "image {image}: no keyless signature: neither a cosign signature with a certificate at {signature_ref} nor a Sigstore bundle among its referrers"
    )]
    NoKeylessSignature {
        /// The signed image.
        image: String,
        /// Where the `.sig` signature was looked for.
        signature_ref: String,
    },
    /// The Sigstore trusted root (`trust.sigstoreTrustedRoot`) cannot be used.
    #[error("sigstore trusted root {path}: {reason}")]
    TrustedRoot {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
        /// The reader's or parser's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A `trust.identities` pattern does not compile.
    #[error("trust.identities: {pattern:?}: {source}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// The regex error.
        #[source]
        source: regex::Error,
    },
    /// No trusted key is configured, so nothing can verify.
    #[error("image {image}: cannot verify signature: no trusted public keys configured")]
    NoTrustedKeys {
        /// The signed image.
        image: String,
    },
    /// Fetching the signature image failed (not a verdict on the signature).
    #[error("image {image}: cannot fetch signature {signature_ref}: {source}")]
    Fetch {
        /// The signed image.
        image: String,
        /// The signature reference.
        signature_ref: String,
        /// Underlying error.
        source: OciError,
    },
}

impl TrustError {
    /// `image`'s signature image is altered or malformed: `reason`.
    pub(crate) fn tampered(image: &str, reason: impl Into<String>) -> Self {
        TrustError::Tampered {
            image: image.to_string(),
            reason: reason.into(),
            source: None,
        }
    }

    /// `image`'s signature image is altered or malformed: `reason`, found by `source`.
    pub(crate) fn tampered_by<E>(image: &str, reason: impl Into<String>, source: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        TrustError::Tampered {
            image: image.to_string(),
            reason: reason.into(),
            source: Some(Box::new(source)),
        }
    }

    /// Maps a failure to draw randomness or encode a key (for `map_err`).
    pub(crate) fn crypto<E>(source: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        TrustError::CryptoFailed(Box::new(source))
    }
}

/// The cluster signing key.
#[derive(Clone)]
pub struct SigningKey {
    secret: p256::SecretKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a fresh key from OS randomness.
    pub fn generate() -> Result<Self, TrustError> {
        // A random 32-byte string is a valid scalar except with negligible probability; retry then.
        for _ in 0..16 {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(TrustError::crypto)?;
            if let Ok(secret) = p256::SecretKey::from_slice(&bytes) {
                return Ok(Self { secret });
            }
        }
        Err(TrustError::Crypto(
            "could not generate a valid P-256 scalar".into(),
        ))
    }

    /// Parses a PEM private key: PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`.
    pub fn from_pem(pem: &str, path: &Path) -> Result<Self, TrustError> {
        let parse = |source: Box<dyn std::error::Error + Send + Sync>| TrustError::Parse {
            path: path.to_path_buf(),
            source,
        };
        let secret = if pem.contains("-----BEGIN EC PRIVATE KEY-----") {
            p256::SecretKey::from_sec1_pem(pem).map_err(|e| parse(Box::new(e)))?
        } else {
            p256::SecretKey::from_pkcs8_pem(pem).map_err(|e| parse(Box::new(e)))?
        };
        Ok(Self { secret })
    }

    /// The private key as PKCS#8 PEM.
    pub fn to_pkcs8_pem(&self) -> Result<String, TrustError> {
        self.secret
            .to_pkcs8_pem(LineEnding::LF)
            .map(|z| z.to_string())
            .map_err(TrustError::crypto)
    }

    /// The public key as PKIX (`PUBLIC KEY`) PEM.
    pub fn public_key_pem(&self) -> Result<String, TrustError> {
        self.secret
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(TrustError::crypto)
    }

    /// Derives a key deterministically from a 32-byte seed (tests and the test kit only; the seed
    /// is reduced until it is a valid scalar).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let mut bytes = *seed;
        loop {
            if let Ok(secret) = p256::SecretKey::from_slice(&bytes) {
                return Self { secret };
            }
            bytes = crate::sha256::digest(&bytes);
        }
    }

    /// Signs `message` with ECDSA P-256 / SHA-256 (RFC 6979 deterministic nonces); returns the
    /// ASN.1 DER signature, the form cosign and Go's `ecdsa.SignASN1` produce.
    pub fn sign_der(&self, message: &[u8]) -> Vec<u8> {
        let key = p256::ecdsa::SigningKey::from(&self.secret);
        let sig: p256::ecdsa::DerSignature = key.sign(message);
        sig.as_bytes().to_vec()
    }

    /// The public half, for verification.
    pub fn verifying_key(&self) -> p256::ecdsa::VerifyingKey {
        p256::ecdsa::VerifyingKey::from(&p256::ecdsa::SigningKey::from(&self.secret))
    }

    /// Loads the key at `path`, or generates and writes one (mode 0600) if the file is missing.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), TrustError> {
        let io = |source| TrustError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(pem) => Ok((Self::from_pem(&pem, path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                let pem = key.to_pkcs8_pem()?;
                write_private(path, pem.as_bytes()).map_err(io)?;
                Ok((key, true))
            }
            Err(e) => Err(io(e)),
        }
    }
}

/// Writes `bytes` to `path` atomically (temp file with mode 0600, fsync, rename, fsync dir;
/// a directory it creates is fsynced into its parent).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::store::create_dir_all_durable(dir)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "key".into());
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_reload_same_public_key_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/signing-key.pem");
        let (k1, created) = SigningKey::load_or_generate(&path).unwrap();
        assert!(created);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let (k2, created) = SigningKey::load_or_generate(&path).unwrap();
        assert!(!created);
        let pub1 = k1.public_key_pem().unwrap();
        assert!(pub1.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(pub1, k2.public_key_pem().unwrap());
    }

    #[test]
    fn accepts_sec1_and_rejects_garbage() {
        let key = SigningKey::generate().unwrap();
        let sec1 = key.secret.to_sec1_pem(LineEnding::LF).unwrap();
        let back = SigningKey::from_pem(&sec1, Path::new("x.pem")).unwrap();
        assert_eq!(
            key.public_key_pem().unwrap(),
            back.public_key_pem().unwrap()
        );
        let err = SigningKey::from_pem("hello", Path::new("x.pem")).unwrap_err();
        assert!(err.to_string().contains("x.pem"));
        assert!(std::error::Error::source(&err).is_some(), "{err:?}");
    }

    #[test]
    fn a_tampered_verdict_keeps_what_found_it() {
        let found = std::io::Error::new(std::io::ErrorKind::InvalidData, "digest mismatch");
        let e = TrustError::tampered_by("img", "payload sha256:ab of img.sig", found);
        assert_eq!(
            e.to_string(),
            "image img: signature rejected, signature image tampered or malformed: payload sha256:ab of img.sig: digest mismatch"
        );
        let cause = std::error::Error::source(&e).and_then(|c| c.downcast_ref::<std::io::Error>());
        assert_eq!(
            cause.map(std::io::Error::kind),
            Some(std::io::ErrorKind::InvalidData)
        );
        let plain = TrustError::tampered("img", "no layer");
        assert_eq!(
            plain.to_string(),
            "image img: signature rejected, signature image tampered or malformed: no layer"
        );
        assert!(std::error::Error::source(&plain).is_none());
    }
}
