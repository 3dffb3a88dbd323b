//! The X.509 fields keyless verification reads (RFC 5280), parsed with the bounds-checked DER
//! reader of [`crate::trust::secureboot::der`], and ECDSA signature checks with aws-lc-rs.
//!
//! Only what Fulcio issues is understood: ECDSA P-256/P-384 keys, `ecdsa-with-SHA256/384`
//! signatures, the SAN email and URI names, basic constraints, extended key usage and Fulcio's
//! OIDC issuer extensions. Anything else is refused, not guessed.

use aws_lc_rs::signature::{self as sig, UnparsedPublicKey, VerificationAlgorithm};

use crate::trust::secureboot::der::{self, Element, Reader};

/// `id-ecPublicKey`.
pub const EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10_045, 2, 1];
/// `prime256v1` (P-256).
pub const P256: &[u64] = &[1, 2, 840, 10_045, 3, 1, 7];
/// `secp384r1` (P-384).
pub const P384: &[u64] = &[1, 3, 132, 0, 34];
/// `ecdsa-with-SHA256`.
pub const ECDSA_SHA256: &[u64] = &[1, 2, 840, 10_045, 4, 3, 2];
/// `ecdsa-with-SHA384`.
pub const ECDSA_SHA384: &[u64] = &[1, 2, 840, 10_045, 4, 3, 3];
/// `subjectAltName`.
pub const SAN: &[u64] = &[2, 5, 29, 17];
/// `basicConstraints`.
pub const BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
/// `keyUsage`.
pub const KEY_USAGE: &[u64] = &[2, 5, 29, 15];
/// `extKeyUsage`.
pub const EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
/// `id-kp-codeSigning`.
pub const CODE_SIGNING: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 3];
/// Fulcio's OIDC issuer extension, v1 (the value is the raw issuer URL).
pub const FULCIO_ISSUER_V1: &[u64] = &[1, 3, 6, 1, 4, 1, 57_264, 1, 1];
/// Fulcio's OIDC issuer extension, v2 (the value is a DER `UTF8String`).
pub const FULCIO_ISSUER_V2: &[u64] = &[1, 3, 6, 1, 4, 1, 57_264, 1, 8];

/// Largest certificate accepted (Fulcio's are about 1 KiB).
pub const MAX_CERT_BYTES: usize = 16 * 1024;

/// An elliptic curve this verifier knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256.
    P256,
    /// NIST P-384.
    P384,
}

/// An ECDSA public key: its curve and uncompressed point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The curve.
    pub curve: Curve,
    /// The SEC1 point (the `subjectPublicKey` bits).
    pub point: Vec<u8>,
}

/// A digest a signature is made over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
}

impl PublicKey {
    /// Parses a DER `SubjectPublicKeyInfo` (an ECDSA P-256 or P-384 key).
    pub fn from_spki(spki: &[u8]) -> Result<PublicKey, String> {
        let bad = |e: der::DerError| format!("public key: {e}");
        let outer = Reader::new(spki).expect(der::SEQUENCE).map_err(bad)?;
        let mut r = Reader::new(outer.content);
        let alg = r.expect(der::SEQUENCE).map_err(bad)?;
        let bits = r.expect(der::BIT_STRING).map_err(bad)?;
        let mut a = Reader::new(alg.content);
        let kind = a.expect(der::OID).map_err(bad)?;
        if !is_oid(&kind, EC_PUBLIC_KEY) {
            return Err("public key is not an elliptic-curve key".into());
        }
        let params = a.expect(der::OID).map_err(bad)?;
        let curve = if is_oid(&params, P256) {
            Curve::P256
        } else if is_oid(&params, P384) {
            Curve::P384
        } else {
            return Err("public key is on a curve other than P-256 or P-384".into());
        };
        let point = match bits.content.split_first() {
            Some((0, point)) if point.first() == Some(&4) => point.to_vec(),
            _ => return Err("public key is not an uncompressed EC point".into()),
        };
        Ok(PublicKey { curve, point })
    }

    /// The hash cosign and Rekor sign with for this key: SHA-256 on P-256, SHA-384 on P-384.
    pub fn default_hash(&self) -> Hash {
        match self.curve {
            Curve::P256 => Hash::Sha256,
            Curve::P384 => Hash::Sha384,
        }
    }

    /// Verifies an ASN.1 DER ECDSA signature over `message` hashed with `hash`.
    pub fn verify(&self, hash: Hash, message: &[u8], signature: &[u8]) -> Result<(), String> {
        let alg: &'static dyn VerificationAlgorithm = match (self.curve, hash) {
            (Curve::P256, Hash::Sha256) => &sig::ECDSA_P256_SHA256_ASN1,
            (Curve::P256, Hash::Sha384) => &sig::ECDSA_P256_SHA384_ASN1,
            (Curve::P384, Hash::Sha256) => &sig::ECDSA_P384_SHA256_ASN1,
            (Curve::P384, Hash::Sha384) => &sig::ECDSA_P384_SHA384_ASN1,
        };
        UnparsedPublicKey::new(alg, &self.point)
            .verify(message, signature)
            .map_err(|_| "the ECDSA signature does not verify".to_string())
    }
}

/// The fields of one certificate that keyless verification uses.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// The whole DER encoding.
    pub der: Vec<u8>,
    /// The `tbsCertificate` encoding (what the issuer signed).
    tbs: Vec<u8>,
    /// The hash of the issuer's signature.
    signature_hash: Hash,
    /// The issuer's signature (DER ECDSA).
    signature: Vec<u8>,
    /// The issuer `Name`, encoded.
    pub issuer: Vec<u8>,
    /// The subject `Name`, encoded.
    pub subject: Vec<u8>,
    /// Start of validity, seconds since the epoch.
    pub not_before: i64,
    /// End of validity, seconds since the epoch.
    pub not_after: i64,
    /// The subject's key.
    pub key: PublicKey,
    /// Basic constraints say this is a CA.
    pub is_ca: bool,
    /// SAN `rfc822Name` entries.
    pub emails: Vec<String>,
    /// SAN `uniformResourceIdentifier` entries.
    pub uris: Vec<String>,
    /// Fulcio issuer, v1 extension.
    pub issuer_v1: Option<String>,
    /// Fulcio issuer, v2 extension.
    pub issuer_v2: Option<String>,
    /// Extended key usages, if the extension is present (encoded OIDs).
    pub ext_key_usage: Option<Vec<Vec<u8>>>,
}

fn is_oid(e: &Element<'_>, arcs: &[u64]) -> bool {
    e.raw == der::oid(arcs).as_slice()
}

impl Certificate {
    /// Parses a DER certificate.
    pub fn from_der(bytes: &[u8]) -> Result<Certificate, String> {
        if bytes.len() > MAX_CERT_BYTES {
            return Err(format!(
                "certificate of {} bytes exceeds the {MAX_CERT_BYTES}-byte limit",
                bytes.len()
            ));
        }
        let bad = |e: der::DerError| format!("certificate: {e}");
        let mut top = Reader::new(bytes);
        let cert = top.expect(der::SEQUENCE).map_err(bad)?;
        if !top.is_empty() {
            return Err("certificate: trailing bytes".into());
        }
        let mut r = Reader::new(cert.content);
        let tbs = r.expect(der::SEQUENCE).map_err(bad)?;
        let alg = r.expect(der::SEQUENCE).map_err(bad)?;
        let sig_bits = r.expect(der::BIT_STRING).map_err(bad)?;
        let signature_hash = signature_hash(alg.content)?;
        let signature = match sig_bits.content.split_first() {
            Some((0, s)) => s.to_vec(),
            _ => return Err("certificate: malformed signature bits".into()),
        };

        let mut t = Reader::new(tbs.content);
        t.optional(der::context(0, true)).map_err(bad)?;
        t.expect(der::INTEGER).map_err(bad)?;
        let inner_alg = t.expect(der::SEQUENCE).map_err(bad)?;
        if inner_alg.raw != alg.raw {
            return Err("certificate: the two signature algorithms differ".into());
        }
        let issuer = t.expect(der::SEQUENCE).map_err(bad)?;
        let validity = t.expect(der::SEQUENCE).map_err(bad)?;
        let subject = t.expect(der::SEQUENCE).map_err(bad)?;
        let spki = t.expect(der::SEQUENCE).map_err(bad)?;
        let mut v = Reader::new(validity.content);
        let not_before = der::parse_time(&v.any().map_err(bad)?).map_err(bad)?;
        let not_after = der::parse_time(&v.any().map_err(bad)?).map_err(bad)?;
        let key = PublicKey::from_spki(spki.raw)?;
        t.optional(der::context(1, false)).map_err(bad)?;
        t.optional(der::context(2, false)).map_err(bad)?;
        let mut c = Certificate {
            der: bytes.to_vec(),
            tbs: tbs.raw.to_vec(),
            signature_hash,
            signature,
            issuer: issuer.raw.to_vec(),
            subject: subject.raw.to_vec(),
            not_before,
            not_after,
            key,
            is_ca: false,
            emails: Vec::new(),
            uris: Vec::new(),
            issuer_v1: None,
            issuer_v2: None,
            ext_key_usage: None,
        };
        if let Some(exts) = t.optional(der::context(3, true)).map_err(bad)? {
            let list = Reader::new(exts.content)
                .expect(der::SEQUENCE)
                .map_err(bad)?;
            let mut l = Reader::new(list.content);
            while !l.is_empty() {
                let ext = l.expect(der::SEQUENCE).map_err(bad)?;
                let mut e = Reader::new(ext.content);
                let id = e.expect(der::OID).map_err(bad)?;
                e.optional(der::BOOLEAN).map_err(bad)?;
                let value = e.expect(der::OCTET_STRING).map_err(bad)?.content;
                c.extension(&id, value)
                    .map_err(|m| format!("certificate: {m}"))?;
            }
        }
        Ok(c)
    }

    fn extension(&mut self, id: &Element<'_>, value: &[u8]) -> Result<(), String> {
        let bad = |e: der::DerError| e.to_string();
        if is_oid(id, SAN) {
            let names = Reader::new(value).expect(der::SEQUENCE).map_err(bad)?;
            let mut r = Reader::new(names.content);
            while !r.is_empty() {
                let name = r.any().map_err(bad)?;
                let text = || {
                    String::from_utf8(name.content.to_vec())
                        .map_err(|_| "subject alternative name is not text".to_string())
                };
                match name.tag {
                    0x81 => self.emails.push(text()?),
                    0x86 => self.uris.push(text()?),
                    _ => {}
                }
            }
        } else if is_oid(id, BASIC_CONSTRAINTS) {
            let bc = Reader::new(value).expect(der::SEQUENCE).map_err(bad)?;
            if let Some(ca) = Reader::new(bc.content)
                .optional(der::BOOLEAN)
                .map_err(bad)?
            {
                self.is_ca = ca.content.first().is_some_and(|&b| b != 0);
            }
        } else if is_oid(id, EXT_KEY_USAGE) {
            let list = Reader::new(value).expect(der::SEQUENCE).map_err(bad)?;
            let mut r = Reader::new(list.content);
            let mut usages = Vec::new();
            while !r.is_empty() {
                usages.push(r.expect(der::OID).map_err(bad)?.raw.to_vec());
            }
            self.ext_key_usage = Some(usages);
        } else if is_oid(id, FULCIO_ISSUER_V1) {
            self.issuer_v1 = Some(
                String::from_utf8(value.to_vec())
                    .map_err(|_| "Fulcio issuer (v1) is not text".to_string())?,
            );
        } else if is_oid(id, FULCIO_ISSUER_V2) {
            let s = Reader::new(value).expect(der::UTF8_STRING).map_err(bad)?;
            self.issuer_v2 = Some(
                String::from_utf8(s.content.to_vec())
                    .map_err(|_| "Fulcio issuer (v2) is not UTF-8".to_string())?,
            );
        }
        Ok(())
    }

    /// Whether `issuer` signed this certificate (names chain and the signature verifies).
    pub fn issued_by(&self, issuer: &Certificate) -> Result<(), String> {
        if self.issuer != issuer.subject {
            return Err("its issuer name is not the CA certificate's subject".into());
        }
        issuer
            .key
            .verify(self.signature_hash, &self.tbs, &self.signature)
            .map_err(|e| format!("the CA's signature on it: {e}"))
    }

    /// Whether `t` (seconds since the epoch) is within the validity period.
    pub fn valid_at(&self, t: i64) -> bool {
        self.not_before <= t && t <= self.not_after
    }

    /// The Fulcio OIDC issuer: the v2 extension, else v1; an error when both are present and
    /// differ.
    pub fn oidc_issuer(&self) -> Result<Option<&str>, String> {
        match (&self.issuer_v1, &self.issuer_v2) {
            (Some(a), Some(b)) if a != b => Err(format!(
                "the certificate names two OIDC issuers: {a:?} (1.3.6.1.4.1.57264.1.1) and {b:?} (1.3.6.1.4.1.57264.1.8)"
            )),
            (_, Some(b)) => Ok(Some(b)),
            (Some(a), None) => Ok(Some(a)),
            (None, None) => Ok(None),
        }
    }

    /// Whether the extended key usage allows code signing (Fulcio certificates carry it).
    pub fn allows_code_signing(&self) -> bool {
        let cs = der::oid(CODE_SIGNING);
        self.ext_key_usage.as_ref().is_some_and(|u| u.contains(&cs))
    }
}

fn signature_hash(alg: &[u8]) -> Result<Hash, String> {
    let mut r = Reader::new(alg);
    let id = r
        .expect(der::OID)
        .map_err(|e| format!("certificate: {e}"))?;
    if is_oid(&id, ECDSA_SHA256) {
        Ok(Hash::Sha256)
    } else if is_oid(&id, ECDSA_SHA384) {
        Ok(Hash::Sha384)
    } else {
        Err("certificate is not signed with ecdsa-with-SHA256 or ecdsa-with-SHA384".into())
    }
}

/// Every `CERTIFICATE` block of a PEM text, decoded (at most `max`).
pub fn pem_certificates(pem: &str, max: usize) -> Result<Vec<Vec<u8>>, String> {
    use base64::Engine as _;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        if out.len() == max {
            return Err(format!("more than {max} certificates"));
        }
        let body = &rest[start + BEGIN.len()..];
        let end = body
            .find(END)
            .ok_or_else(|| "unterminated CERTIFICATE block".to_string())?;
        let b64: String = body[..end].split_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("CERTIFICATE block is not base64: {e}"))?;
        out.push(der);
        rest = &body[end + END.len()..];
    }
    if out.is_empty() {
        return Err("no \"-----BEGIN CERTIFICATE-----\" block".into());
    }
    Ok(out)
}
