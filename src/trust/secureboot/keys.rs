//! The Secure Boot key set (imager spec §1.3 defaults, §7.3, §7.4): the UKI signing key and
//! its X.509 certificate (Authenticode) and the PCR signing key (`.pcrsig`), all RSA, in
//! upstream's PEM files. Loaded and checked once at start: wrong key types, a certificate
//! outside its validity and a key that is not the certificate's are refused with the file
//! named. [`generate`] makes a new set for a site, as `talosctl gen secureboot` does.

use std::fmt;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _, RsaEncoding};

use super::SecureBootError;
use super::der::{self, Reader};
use super::pem;

/// Upstream's file name of the UKI signing key.
pub const SIGNING_KEY_FILE: &str = "uki-signing-key.pem";
/// Upstream's file name of the UKI signing certificate.
pub const SIGNING_CERT_FILE: &str = "uki-signing-cert.pem";
/// Upstream's file name of the PCR signing key.
pub const PCR_KEY_FILE: &str = "pcr-signing-key.pem";
/// Largest key or certificate file read.
const MAX_FILE: u64 = 64 << 10;

const RSA_ENCRYPTION: &[u64] = &[1, 2, 840, 113_549, 1, 1, 1];
const EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10_045, 2, 1];
/// `sha256WithRSAEncryption`.
pub const SHA256_WITH_RSA: &[u64] = &[1, 2, 840, 113_549, 1, 1, 11];

/// Where the three files are (`secureBoot.file.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureBootPaths {
    /// `signingKeyPath`: RSA private key (PKCS#1 or PKCS#8 PEM).
    pub signing_key: PathBuf,
    /// `signingCertPath`: the signing key's X.509 certificate (PEM).
    pub signing_cert: PathBuf,
    /// `pcrKeyPath`: RSA private key for PCR policy signatures.
    pub pcr_key: PathBuf,
}

impl SecureBootPaths {
    /// Upstream's three file names under `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        SecureBootPaths {
            signing_key: dir.join(SIGNING_KEY_FILE),
            signing_cert: dir.join(SIGNING_CERT_FILE),
            pcr_key: dir.join(PCR_KEY_FILE),
        }
    }
}

/// The fields of the signing certificate the signatures need.
struct Certificate {
    der: Vec<u8>,
    pem: String,
    /// The issuer `Name`, encoded.
    issuer: Vec<u8>,
    /// The serial number `INTEGER`, encoded.
    serial: Vec<u8>,
    /// The `RSAPublicKey` (PKCS#1) of the subject.
    public_key: Vec<u8>,
    not_before: i64,
    not_after: i64,
}

/// A loaded and validated Secure Boot key set.
pub struct SecureBootKeys {
    signing_key: KeyPair,
    cert: Certificate,
    pcr_key: KeyPair,
    pcr_public_pem: String,
    fingerprint: String,
}

impl fmt::Debug for SecureBootKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureBootKeys")
            .field("certificate_sha256", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn read(what: &'static str, path: &Path) -> Result<String, SecureBootError> {
    let read_err = |source| SecureBootError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read_err)?.len();
    if len > MAX_FILE {
        return Err(SecureBootError::Malformed {
            what,
            path: path.to_path_buf(),
            reason: format!("{len} bytes is more than a PEM key or certificate ({MAX_FILE})"),
            source: None,
        });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    String::from_utf8(bytes).map_err(|_| SecureBootError::WrongType {
        what,
        path: path.to_path_buf(),
        reason: "not a PEM file (binary content)".into(),
    })
}

fn malformed(
    what: &'static str,
    path: &Path,
    reason: impl Into<String>,
) -> impl FnOnce(der::DerError) -> SecureBootError {
    let (path, reason) = (path.to_path_buf(), reason.into());
    move |e| SecureBootError::Malformed {
        what,
        path,
        reason,
        source: Some(Box::new(e)),
    }
}

/// Loads an RSA private key from PEM (`RSA PRIVATE KEY` or an RSA `PRIVATE KEY`).
fn load_rsa_key(what: &'static str, path: &Path) -> Result<KeyPair, SecureBootError> {
    let text = read(what, path)?;
    let wrong = |reason: &str| SecureBootError::WrongType {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let (label, der) = pem::first_block(&text).ok_or_else(|| wrong("no PEM block found"))?;
    let rejected = |e: aws_lc_rs::error::KeyRejected| SecureBootError::Malformed {
        what,
        path: path.to_path_buf(),
        reason: format!("the RSA key is rejected: {e}"),
        source: None,
    };
    match label.as_str() {
        "RSA PRIVATE KEY" => KeyPair::from_der(&der).map_err(rejected),
        "PRIVATE KEY" => {
            let alg = pkcs8_algorithm(&der).map_err(malformed(what, path, "not PKCS#8"))?;
            if alg == der::oid(EC_PUBLIC_KEY) {
                return Err(wrong(
                    "an ECDSA key: UEFI firmware verifies Authenticode and PCR signatures with RSA; use an RSA key (talosctl gen secureboot and image-factory keys secureboot generate make RSA 4096)",
                ));
            }
            if alg != der::oid(RSA_ENCRYPTION) {
                return Err(wrong("not an RSA key"));
            }
            KeyPair::from_pkcs8(&der).map_err(rejected)
        }
        "EC PRIVATE KEY" => Err(wrong(
            "an ECDSA key: UEFI firmware verifies Authenticode and PCR signatures with RSA; use an RSA key",
        )),
        "ENCRYPTED PRIVATE KEY" => Err(wrong("an encrypted key: store it unencrypted (mode 0600)")),
        other => Err(wrong(&format!("a PEM {other:?} block, not a private key"))),
    }
}

/// The algorithm OID (encoded) of a PKCS#8 `PrivateKeyInfo`.
fn pkcs8_algorithm(der: &[u8]) -> Result<Vec<u8>, der::DerError> {
    let info = Reader::new(der).expect(der::SEQUENCE)?;
    let mut r = Reader::new(info.content);
    r.expect(der::INTEGER)?;
    let alg = r.expect(der::SEQUENCE)?;
    Ok(Reader::new(alg.content).expect(der::OID)?.raw.to_vec())
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo`.
fn pkcs8_to_pkcs1(der: &[u8]) -> Result<Vec<u8>, der::DerError> {
    let info = Reader::new(der).expect(der::SEQUENCE)?;
    let mut r = Reader::new(info.content);
    r.expect(der::INTEGER)?;
    r.expect(der::SEQUENCE)?;
    Ok(r.expect(der::OCTET_STRING)?.content.to_vec())
}

fn parse_certificate(text: &str, path: &Path) -> Result<Certificate, SecureBootError> {
    const WHAT: &str = "signing certificate (secureBoot.file.signingCertPath)";
    let wrong = |reason: &str| SecureBootError::WrongType {
        what: WHAT,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let (label, der_bytes) = pem::first_block(text).ok_or_else(|| wrong("no PEM block found"))?;
    if label != "CERTIFICATE" {
        return Err(wrong(&format!("a PEM {label:?} block, not a CERTIFICATE")));
    }
    let fields = (|| -> Result<_, der::DerError> {
        let cert = Reader::new(&der_bytes).expect(der::SEQUENCE)?;
        let tbs = Reader::new(cert.content).expect(der::SEQUENCE)?;
        let mut r = Reader::new(tbs.content);
        r.optional(der::context(0, true))?;
        let serial = r.expect(der::INTEGER)?.raw.to_vec();
        r.expect(der::SEQUENCE)?;
        let issuer = r.expect(der::SEQUENCE)?.raw.to_vec();
        let validity = r.expect(der::SEQUENCE)?;
        r.expect(der::SEQUENCE)?;
        let spki = r.expect(der::SEQUENCE)?;
        let mut v = Reader::new(validity.content);
        let not_before = der::parse_time(&v.any()?)?;
        let not_after = der::parse_time(&v.any()?)?;
        let mut s = Reader::new(spki.content);
        let alg = s.expect(der::SEQUENCE)?;
        let alg_oid = Reader::new(alg.content).expect(der::OID)?.raw.to_vec();
        let key_bits = s.expect(der::BIT_STRING)?;
        Ok((
            serial,
            issuer,
            not_before,
            not_after,
            alg_oid,
            key_bits.content.to_vec(),
        ))
    })()
    .map_err(malformed(WHAT, path, "not an X.509 certificate"))?;
    let (serial, issuer, not_before, not_after, alg_oid, key_bits) = fields;
    if alg_oid == der::oid(EC_PUBLIC_KEY) {
        return Err(wrong(
            "an ECDSA certificate: UEFI firmware verifies Authenticode signatures with RSA; use an RSA certificate",
        ));
    }
    if alg_oid != der::oid(RSA_ENCRYPTION) {
        return Err(wrong("not an RSA certificate"));
    }
    let public_key = match key_bits.split_first() {
        Some((0, key)) => key.to_vec(),
        _ => return Err(wrong("the public key BIT STRING has unused bits")),
    };
    Ok(Certificate {
        pem: pem::encode("CERTIFICATE", &der_bytes),
        der: der_bytes,
        issuer,
        serial,
        public_key,
        not_before,
        not_after,
    })
}

fn rfc3339(secs: i64) -> String {
    crate::clock::rfc3339_utc(secs.max(0) as u64)
}

impl SecureBootKeys {
    /// Loads the three files and validates them at time `now` (seconds since the epoch).
    pub fn load(paths: &SecureBootPaths, now: u64) -> Result<Self, SecureBootError> {
        let signing_key = load_rsa_key(
            "signing key (secureBoot.file.signingKeyPath)",
            &paths.signing_key,
        )?;
        let cert = parse_certificate(
            &read(
                "signing certificate (secureBoot.file.signingCertPath)",
                &paths.signing_cert,
            )?,
            &paths.signing_cert,
        )?;
        let now = now as i64;
        let state = if now > cert.not_after {
            Some("expired")
        } else if now < cert.not_before {
            Some("not yet valid")
        } else {
            None
        };
        if let Some(state) = state {
            return Err(SecureBootError::CertificateValidity {
                path: paths.signing_cert.clone(),
                state,
                not_before: rfc3339(cert.not_before),
                not_after: rfc3339(cert.not_after),
            });
        }
        if signing_key.public_key().as_ref() != cert.public_key.as_slice() {
            return Err(SecureBootError::KeyMismatch {
                key: paths.signing_key.clone(),
                cert: paths.signing_cert.clone(),
            });
        }
        let pcr_key = load_rsa_key("PCR key (secureBoot.file.pcrKeyPath)", &paths.pcr_key)?;
        Self::assemble(signing_key, cert, pcr_key)
    }

    fn assemble(
        signing_key: KeyPair,
        cert: Certificate,
        pcr_key: KeyPair,
    ) -> Result<Self, SecureBootError> {
        let spki = pcr_key
            .public_key()
            .as_der()
            .map_err(|_| SecureBootError::Crypto("public key encoding"))?;
        let pcr_public_pem = pem::encode("PUBLIC KEY", spki.as_ref());
        let fingerprint = crate::sha256::hex_digest(&cert.der);
        Ok(SecureBootKeys {
            signing_key,
            cert,
            pcr_key,
            pcr_public_pem,
            fingerprint,
        })
    }

    /// The signing certificate as one PEM `CERTIFICATE` block.
    pub fn certificate_pem(&self) -> &str {
        &self.cert.pem
    }

    /// The signing certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert.der
    }

    /// Hex SHA-256 of the signing certificate (DER): part of every Secure Boot cache key.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Start of the certificate's validity, seconds since the epoch.
    pub fn not_before(&self) -> i64 {
        self.cert.not_before
    }

    /// End of the certificate's validity, seconds since the epoch.
    pub fn not_after(&self) -> i64 {
        self.cert.not_after
    }

    /// The certificate's issuer `Name` and serial `INTEGER`, encoded (for `SignerInfo`).
    pub(crate) fn issuer_and_serial(&self) -> (&[u8], &[u8]) {
        (&self.cert.issuer, &self.cert.serial)
    }

    /// The PCR public key, PEM `PUBLIC KEY` (SPKI): the `.pcrpkey` section.
    pub fn pcr_public_pem(&self) -> &str {
        &self.pcr_public_pem
    }

    /// The PCR public key as PKCS#1 `RSAPublicKey` DER (its SHA-256 is `pkfp`).
    pub fn pcr_public_pkcs1(&self) -> &[u8] {
        self.pcr_key.public_key().as_ref()
    }

    /// RSA PKCS#1 v1.5 signature over `message` with the UKI signing key.
    pub(crate) fn sign_with_signing_key(
        &self,
        alg: &'static dyn RsaEncoding,
        message: &[u8],
    ) -> Result<Vec<u8>, SecureBootError> {
        rsa_sign(&self.signing_key, alg, message)
    }

    /// RSA PKCS#1 v1.5 signature over `message` with the PCR key.
    pub(crate) fn sign_with_pcr_key(
        &self,
        alg: &'static dyn RsaEncoding,
        message: &[u8],
    ) -> Result<Vec<u8>, SecureBootError> {
        rsa_sign(&self.pcr_key, alg, message)
    }
}

fn rsa_sign(
    key: &KeyPair,
    alg: &'static dyn RsaEncoding,
    message: &[u8],
) -> Result<Vec<u8>, SecureBootError> {
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(alg, &SystemRandom::new(), message, &mut sig)
        .map_err(|_| SecureBootError::Crypto("signing"))?;
    Ok(sig)
}

/// The files [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct GeneratedFiles {
    /// The three key files.
    pub paths: SecureBootPaths,
    /// Hex SHA-256 of the new certificate.
    pub fingerprint: String,
}

/// RSA key size of generated keys (upstream's `talosctl gen secureboot`: 4096).
pub const GENERATED_KEY_SIZE: KeySize = KeySize::Rsa4096;
/// Validity of a generated certificate (10 years).
pub const GENERATED_VALIDITY_SECS: u64 = 10 * 365 * 86_400;

/// Writes a new key set into `dir` under upstream's file names: an RSA signing key, its
/// self-signed certificate (`CN=<common_name>`, valid from an hour before `now` for
/// [`GENERATED_VALIDITY_SECS`]) and an RSA PCR key, keys mode 0600 as PKCS#1 PEM. Refuses to
/// overwrite any existing file.
pub fn generate(
    dir: &Path,
    common_name: &str,
    size: KeySize,
    now: u64,
) -> Result<GeneratedFiles, SecureBootError> {
    let paths = SecureBootPaths::in_dir(dir);
    for p in [&paths.signing_key, &paths.signing_cert, &paths.pcr_key] {
        if p.exists() {
            return Err(SecureBootError::Exists { path: p.clone() });
        }
    }
    let signing_key =
        KeyPair::generate(size).map_err(|_| SecureBootError::Crypto("key generation"))?;
    let pcr_key = KeyPair::generate(size).map_err(|_| SecureBootError::Crypto("key generation"))?;
    let cert_der = self_signed_certificate(&signing_key, common_name, now)?;
    let write = |path: &Path, text: &str, private: bool| {
        let result = if private {
            crate::trust::write_private(path, text.as_bytes())
        } else {
            std::fs::write(path, text)
        };
        result.map_err(|source| SecureBootError::Write {
            path: path.to_path_buf(),
            source,
        })
    };
    std::fs::create_dir_all(dir).map_err(|source| SecureBootError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    write(&paths.signing_key, &pkcs1_pem(&signing_key)?, true)?;
    write(&paths.pcr_key, &pkcs1_pem(&pcr_key)?, true)?;
    write(
        &paths.signing_cert,
        &pem::encode("CERTIFICATE", &cert_der),
        false,
    )?;
    Ok(GeneratedFiles {
        paths,
        fingerprint: crate::sha256::hex_digest(&cert_der),
    })
}

/// The key as PEM `RSA PRIVATE KEY` (PKCS#1), the form upstream's file signer reads.
fn pkcs1_pem(key: &KeyPair) -> Result<String, SecureBootError> {
    let pkcs8 = key
        .as_der()
        .map_err(|_| SecureBootError::Crypto("private key encoding"))?;
    let pkcs1 = pkcs8_to_pkcs1(pkcs8.as_ref())
        .map_err(|_| SecureBootError::Crypto("private key encoding"))?;
    Ok(pem::encode("RSA PRIVATE KEY", &pkcs1))
}

/// A self-signed X.509 v3 certificate for `key`: CA (it also signs the PK/KEK/db enrolment
/// lists), key usage digitalSignature + keyCertSign, extended key usage codeSigning.
fn self_signed_certificate(
    key: &KeyPair,
    common_name: &str,
    now: u64,
) -> Result<Vec<u8>, SecureBootError> {
    let mut serial = [0u8; 16];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| SecureBootError::Crypto("random serial"))?;
    serial[0] &= 0x7F;
    serial[0] |= 0x01;
    let name = der::seq(&[&der::set_of(&[&der::seq(&[
        &der::oid(&[2, 5, 4, 3]),
        &der::tlv(der::UTF8_STRING, common_name.as_bytes()),
    ])])]);
    let public = key.public_key().as_ref();
    let spki = der::seq(&[&der::algorithm(RSA_ENCRYPTION), &der::bits(public)]);
    let skid = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, public);
    let critical = [der::BOOLEAN, 1, 0xFF];
    let extension = |arcs: &[u64], critical_flag: bool, value: &[u8]| {
        let flag: &[u8] = if critical_flag { &critical } else { &[] };
        der::seq(&[&der::oid(arcs), flag, &der::octets(value)])
    };
    let extensions = der::seq(&[
        &extension(&[2, 5, 29, 19], true, &der::seq(&[&critical])),
        &extension(&[2, 5, 29, 15], true, &[der::BIT_STRING, 2, 2, 0x84]),
        &extension(
            &[2, 5, 29, 37],
            false,
            &der::seq(&[&der::oid(&[1, 3, 6, 1, 5, 5, 7, 3, 3])]),
        ),
        &extension(&[2, 5, 29, 14], false, &der::octets(skid.as_ref())),
    ]);
    let tbs = der::seq(&[
        &der::cons(der::context(0, true), &[&der::uint(&[2])]),
        &der::uint(&serial),
        &der::algorithm(SHA256_WITH_RSA),
        &name,
        &der::seq(&[
            &der::time(now.saturating_sub(3600)),
            &der::time(now + GENERATED_VALIDITY_SECS),
        ]),
        &name,
        &spki,
        &der::cons(der::context(3, true), &[&extensions]),
    ]);
    let sig = rsa_sign(key, &signature::RSA_PKCS1_SHA256, &tbs)?;
    Ok(der::seq(&[
        &tbs,
        &der::algorithm(SHA256_WITH_RSA),
        &der::bits(&sig),
    ]))
}

#[cfg(test)]
mod tests;
