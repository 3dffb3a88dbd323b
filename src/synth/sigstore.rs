//! The test kit's Sigstore stack: a Fulcio-like CA (root and intermediate), a Rekor-like log
//! key, the `trusted_root.json` naming them, and keyless cosign signatures in the legacy `.sig`
//! form (certificate, chain and Rekor bundle annotations). Every key is derived from a seed, and
//! ECDSA signatures are deterministic (RFC 6979): the same seed gives the same bytes.
//!
//! [`KeylessSign`] can also make the bad signatures the tests need: another identity or
//! issuer, a certificate that expired before the integrated time, a forged log entry, a payload
//! for another digest; a stack from another seed is a CA the trusted root does not know.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use p256::pkcs8::EncodePublicKey as _;

use crate::oci::{
    ANNOTATION_COSIGN_SIGNATURE, Descriptor, Digest, ImageManifest, MEDIA_COSIGN_SIMPLESIGNING,
    MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST,
};
use crate::trust::keyless::bundle;
use crate::trust::keyless::legacy::{
    ANNOTATION_BUNDLE, ANNOTATION_CERTIFICATE, ANNOTATION_CHAIN, RekorBundle,
};
use crate::trust::keyless::rekor::Entry;
use crate::trust::keyless::root::{
    RawAuthority, RawCert, RawChain, RawKey, RawLog, RawLogId, RawRoot, RawWindow,
    TRUSTED_ROOT_MEDIA_TYPE,
};
use crate::trust::keyless::x509;
use crate::trust::secureboot::der;
use crate::trust::{SignatureImage, SigningKey, simple_signing_payload};

use super::SOURCE_DATE_EPOCH;

/// The subject (SAN email) of the kit's keyless signatures.
pub const TEST_SUBJECT: &str = "release@test-kit.example";
/// The OIDC issuer of the kit's keyless signatures.
pub const TEST_ISSUER: &str = "https://issuer.test-kit.example";
/// The kit CA's validity: 2019-01-01 to 2039-01-01.
const CA_VALIDITY: (u64, u64) = (1_546_300_800, 2_177_452_800);
/// Fulcio's leaf lifetime.
const LEAF_LIFETIME: i64 = 600;

/// How one keyless signature is made (the default is a good one).
#[derive(Debug, Clone)]
pub struct KeylessSign {
    /// The SAN email.
    pub subject: String,
    /// The OIDC issuer (both Fulcio issuer extensions).
    pub issuer: String,
    /// The Rekor integrated time.
    pub integrated_time: i64,
    /// The leaf's validity, relative to `integrated_time` (seconds).
    pub leaf_validity: (i64, i64),
    /// Alter the log entry after the log signed it (a forged SET).
    pub forge_entry: bool,
    /// Sign a payload naming this digest instead of the image's.
    pub payload_digest: Option<Digest>,
    /// File the bundle referrer under the image (its referrers tag) but give its manifest
    /// this `subject` digest instead of the image's (a misfiled or planted referrer).
    pub referrer_subject: Option<Digest>,
}

impl Default for KeylessSign {
    fn default() -> Self {
        KeylessSign {
            subject: TEST_SUBJECT.into(),
            issuer: TEST_ISSUER.into(),
            integrated_time: SOURCE_DATE_EPOCH as i64,
            leaf_validity: (-60, LEAF_LIFETIME - 60),
            forge_entry: false,
            payload_digest: None,
            referrer_subject: None,
        }
    }
}

/// A Fulcio-like CA and a Rekor-like log.
#[derive(Clone)]
pub struct TestSigstore {
    seed: String,
    root_key: SigningKey,
    intermediate_key: SigningKey,
    log_key: SigningKey,
    root_cert: Vec<u8>,
    intermediate_cert: Vec<u8>,
}

impl std::fmt::Debug for TestSigstore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestSigstore")
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

fn key(seed: &str, role: &str) -> SigningKey {
    SigningKey::from_seed(&crate::sha256::digest(format!("{seed}/{role}").as_bytes()))
}

fn spki(k: &SigningKey) -> Vec<u8> {
    k.verifying_key()
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .unwrap_or_default()
}

fn name(cn: &str) -> Vec<u8> {
    let atv = der::seq(&[
        &der::oid(&[2, 5, 4, 10]),
        &der::tlv(der::UTF8_STRING, b"test-kit.example"),
    ]);
    let cn = der::seq(&[
        &der::oid(&[2, 5, 4, 3]),
        &der::tlv(der::UTF8_STRING, cn.as_bytes()),
    ]);
    der::seq(&[&der::cons(der::SET, &[&atv]), &der::cons(der::SET, &[&cn])])
}

fn extension(arcs: &[u64], critical: bool, value: &[u8]) -> Vec<u8> {
    let crit = if critical {
        der::tlv(der::BOOLEAN, &[0xFF])
    } else {
        Vec::new()
    };
    der::seq(&[&der::oid(arcs), &crit, &der::octets(value)])
}

/// A certificate: `subject` with `subject_key`, signed by `issuer_key` as `issuer`.
fn certificate(
    serial_seed: &str,
    issuer: &[u8],
    issuer_key: &SigningKey,
    subject: &[u8],
    subject_key: &SigningKey,
    validity: (u64, u64),
    extensions: &[Vec<u8>],
) -> Vec<u8> {
    let alg = der::seq(&[&der::oid(x509::ECDSA_SHA256)]);
    let serial = crate::sha256::digest(serial_seed.as_bytes());
    let exts: Vec<&[u8]> = extensions.iter().map(Vec::as_slice).collect();
    let tbs = der::seq(&[
        &der::tlv(der::context(0, true), &der::uint(&[2])),
        &der::uint(&serial[..16]),
        &alg,
        issuer,
        &der::seq(&[&der::time(validity.0), &der::time(validity.1)]),
        subject,
        &spki(subject_key),
        &der::tlv(der::context(3, true), &der::seq(&exts)),
    ]);
    let signature = issuer_key.sign_der(&tbs);
    der::seq(&[&tbs, &alg, &der::bits(&signature)])
}

fn ca_extensions() -> Vec<Vec<u8>> {
    vec![
        extension(
            x509::BASIC_CONSTRAINTS,
            true,
            &der::seq(&[&der::tlv(der::BOOLEAN, &[0xFF])]),
        ),
        extension(
            x509::KEY_USAGE,
            true,
            &der::tlv(der::BIT_STRING, &[0x01, 0x06]),
        ),
    ]
}

/// PEM of one DER certificate.
pub fn pem(der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

impl TestSigstore {
    /// The stack of `seed` (another seed is another, untrusted, stack).
    pub fn new(seed: &str) -> Self {
        let root_key = key(seed, "fulcio-root");
        let intermediate_key = key(seed, "fulcio-intermediate");
        let log_key = key(seed, "rekor");
        let root_name = name(&format!("{seed} fulcio root"));
        let intermediate_name = name(&format!("{seed} fulcio intermediate"));
        let root_cert = certificate(
            &format!("{seed}/root"),
            &root_name,
            &root_key,
            &root_name,
            &root_key,
            CA_VALIDITY,
            &ca_extensions(),
        );
        let intermediate_cert = certificate(
            &format!("{seed}/intermediate"),
            &root_name,
            &root_key,
            &intermediate_name,
            &intermediate_key,
            CA_VALIDITY,
            &ca_extensions(),
        );
        TestSigstore {
            seed: seed.to_string(),
            root_key,
            intermediate_key,
            log_key,
            root_cert,
            intermediate_cert,
        }
    }

    /// The same CA, logging to `other`'s log (a CA the other's trusted root does not know,
    /// with entries its log key signs).
    pub fn with_log_of(mut self, other: &TestSigstore) -> Self {
        self.log_key = other.log_key.clone();
        self
    }

    /// The log's ID: SHA-256 of its key's DER, hex.
    pub fn log_id(&self) -> String {
        crate::sha256::hex_digest(&spki(&self.log_key))
    }

    /// `trusted_root.json` naming this CA and log.
    pub fn trusted_root_json(&self) -> String {
        let start = Some(crate::clock::rfc3339_utc(CA_VALIDITY.0));
        let root = RawRoot {
            media_type: TRUSTED_ROOT_MEDIA_TYPE.into(),
            tlogs: vec![RawLog {
                base_url: "https://rekor.test-kit.example".into(),
                hash_algorithm: "SHA2_256".into(),
                public_key: RawKey {
                    raw_bytes: B64.encode(spki(&self.log_key)),
                    key_details: "PKIX_ECDSA_P256_SHA_256".into(),
                    valid_for: Some(RawWindow {
                        start: start.clone(),
                        end: None,
                    }),
                },
                log_id: RawLogId {
                    key_id: B64.encode(crate::sha256::digest(&spki(&self.log_key))),
                },
            }],
            certificate_authorities: vec![RawAuthority {
                uri: "https://fulcio.test-kit.example".into(),
                cert_chain: RawChain {
                    certificates: vec![
                        RawCert {
                            raw_bytes: B64.encode(&self.intermediate_cert),
                        },
                        RawCert {
                            raw_bytes: B64.encode(&self.root_cert),
                        },
                    ],
                },
                valid_for: Some(RawWindow { start, end: None }),
            }],
        };
        serde_json::to_string_pretty(&root).unwrap_or_default()
    }

    /// A Fulcio leaf certificate for `opts`' identity, for `leaf_key`.
    pub fn leaf(&self, opts: &KeylessSign, leaf_key: &SigningKey) -> Vec<u8> {
        let t = opts.integrated_time;
        let validity = (
            (t + opts.leaf_validity.0).max(0) as u64,
            (t + opts.leaf_validity.1).max(0) as u64,
        );
        let san = der::seq(&[&der::tlv(0x81, opts.subject.as_bytes())]);
        let exts = vec![
            extension(
                x509::KEY_USAGE,
                true,
                &der::tlv(der::BIT_STRING, &[0x07, 0x80]),
            ),
            extension(
                x509::EXT_KEY_USAGE,
                false,
                &der::seq(&[&der::oid(x509::CODE_SIGNING)]),
            ),
            extension(x509::SAN, true, &san),
            extension(x509::FULCIO_ISSUER_V1, false, opts.issuer.as_bytes()),
            extension(
                x509::FULCIO_ISSUER_V2,
                false,
                &der::tlv(der::UTF8_STRING, opts.issuer.as_bytes()),
            ),
        ];
        certificate(
            &format!("{}/leaf/{}/{t}", self.seed, opts.subject),
            &name(&format!("{} fulcio intermediate", self.seed)),
            &self.intermediate_key,
            &der::seq(&[]),
            leaf_key,
            validity,
            &exts,
        )
    }

    /// The keyless layer (payload descriptor with its annotations) signing `manifest_digest`
    /// of `docker_reference`; also returns the payload.
    pub fn keyless_layer(
        &self,
        docker_reference: &str,
        manifest_digest: &Digest,
        opts: &KeylessSign,
    ) -> (Descriptor, Vec<u8>) {
        let named = opts.payload_digest.as_ref().unwrap_or(manifest_digest);
        let payload = simple_signing_payload(docker_reference, named);
        let leaf_key = key(&self.seed, &format!("leaf/{}/{named}", opts.subject));
        let cert = self.leaf(opts, &leaf_key);
        let cert_pem = pem(&cert);
        let signature = leaf_key.sign_der(&payload);
        let mut entry = Entry {
            body: Entry::hashedrekord_body(&payload, &signature, &cert_pem),
            integrated_time: opts.integrated_time,
            log_index: i64::from(u32::from_be_bytes(
                manifest_digest.hex().as_bytes()[..4]
                    .try_into()
                    .unwrap_or([0; 4]),
            )),
            log_id: self.log_id(),
            set: Vec::new(),
        };
        entry.set = self.log_key.sign_der(&entry.signed_payload());
        if opts.forge_entry {
            entry.integrated_time += 1;
        }
        let mut d = Descriptor::for_bytes(MEDIA_COSIGN_SIMPLESIGNING, &payload);
        let a = &mut d.annotations;
        a.insert(ANNOTATION_COSIGN_SIGNATURE.into(), B64.encode(&signature));
        a.insert(ANNOTATION_CERTIFICATE.into(), cert_pem);
        a.insert(
            ANNOTATION_CHAIN.into(),
            format!("{}{}", pem(&self.intermediate_cert), pem(&self.root_cert)),
        );
        a.insert(
            ANNOTATION_BUNDLE.into(),
            serde_json::to_string(&RekorBundle::of(&entry)).unwrap_or_default(),
        );
        (d, payload)
    }

    /// The `.sig` image of `manifest_digest`: a keyless layer made with `opts`, after a
    /// key-based layer when `key` is given (cosign appends signatures as layers).
    pub fn sign_image(
        &self,
        key: Option<&SigningKey>,
        docker_reference: &str,
        manifest_digest: &Digest,
        opts: &KeylessSign,
    ) -> SignatureImage {
        let base = SignatureImage::sign(
            key.unwrap_or(&self.root_key),
            docker_reference,
            manifest_digest,
        );
        let (layer, payload) = self.keyless_layer(docker_reference, manifest_digest, opts);
        let mut layers = Vec::new();
        if key.is_some() {
            layers.push(base.payload_descriptor.clone());
        }
        layers.push(layer.clone());
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(MEDIA_OCI_MANIFEST.into()),
            config: base.config_descriptor.clone(),
            layers,
            annotations: Default::default(),
        };
        let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
        SignatureImage {
            manifest_descriptor: Descriptor::for_bytes(MEDIA_OCI_MANIFEST, &manifest),
            manifest,
            payload,
            payload_descriptor: layer,
            ..base
        }
    }
}

/// A Sigstore bundle attached as an OCI referrer, with the referrers-tag index listing it.
#[derive(Debug, Clone)]
pub struct BundleReferrer {
    /// The referrers tag (`sha256-<hex>` of the subject).
    pub tag: String,
    /// The bundle JSON (the referrer's layer) and its descriptor.
    pub bundle: (Vec<u8>, Descriptor),
    /// The empty config (`{}`) and its descriptor.
    pub config: (Vec<u8>, Descriptor),
    /// The referrer manifest and its descriptor.
    pub manifest: (Vec<u8>, Descriptor),
    /// The referrers index and its descriptor.
    pub index: (Vec<u8>, Descriptor),
}

impl TestSigstore {
    /// A Sigstore bundle signing `subject` (the image's top-level descriptor) of
    /// `docker_reference` as cosign 3 does: a DSSE envelope of an in-toto statement, logged as
    /// a `dsse` entry, attached as a referrer.
    pub fn bundle_referrer(
        &self,
        docker_reference: &str,
        subject: &Descriptor,
        opts: &KeylessSign,
    ) -> BundleReferrer {
        let named = opts.payload_digest.as_ref().unwrap_or(&subject.digest);
        let payload = bundle::statement(docker_reference, named);
        let leaf_key = key(&self.seed, &format!("bundle-leaf/{}/{named}", opts.subject));
        let cert = self.leaf(opts, &leaf_key);
        let signature = leaf_key.sign_der(&bundle::pae(bundle::PAYLOAD_TYPE_INTOTO, &payload));
        let mut entry = Entry {
            body: bundle::dsse_body(&payload, &signature, &pem(&cert)),
            integrated_time: opts.integrated_time,
            log_index: 7,
            log_id: self.log_id(),
            set: Vec::new(),
        };
        entry.set = self.log_key.sign_der(&entry.signed_payload());
        if opts.forge_entry {
            entry.integrated_time += 1;
        }
        let log_id = hex::decode(&entry.log_id).unwrap_or_default();
        let json = serde_json::json!({
            "mediaType": bundle::MEDIA_BUNDLE,
            "verificationMaterial": {
                "certificate": {"rawBytes": B64.encode(&cert)},
                "tlogEntries": [{
                    "logIndex": entry.log_index.to_string(),
                    "logId": {"keyId": B64.encode(log_id)},
                    "kindVersion": {"kind": "dsse", "version": "0.0.1"},
                    "integratedTime": entry.integrated_time.to_string(),
                    "inclusionPromise": {"signedEntryTimestamp": B64.encode(&entry.set)},
                    "canonicalizedBody": entry.body,
                }],
            },
            "dsseEnvelope": {
                "payload": B64.encode(&payload),
                "payloadType": bundle::PAYLOAD_TYPE_INTOTO,
                "signatures": [{"sig": B64.encode(&signature)}],
            },
        });
        let bundle_bytes = json.to_string().into_bytes();
        let bundle_d = Descriptor::for_bytes(bundle::MEDIA_BUNDLE, &bundle_bytes);
        let config = b"{}".to_vec();
        let config_d = Descriptor::for_bytes(MEDIA_OCI_EMPTY, &config);
        let tag = bundle::referrers_tag(&subject.digest);
        let mut subject = subject.clone();
        subject.annotations.clear();
        subject.platform = None;
        if let Some(d) = &opts.referrer_subject {
            subject.digest = d.clone();
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "artifactType": bundle::MEDIA_BUNDLE,
            "config": config_d,
            "layers": [bundle_d],
            "subject": subject,
            "annotations": {
                "dev.sigstore.bundle.content": "dsse-envelope",
                "dev.sigstore.bundle.predicateType": bundle::PREDICATE_COSIGN_SIGN,
            },
        })
        .to_string()
        .into_bytes();
        let manifest_d = Descriptor::for_bytes(MEDIA_OCI_MANIFEST, &manifest);
        let mut listed = serde_json::to_value(&manifest_d).unwrap_or_default();
        listed["artifactType"] = bundle::MEDIA_BUNDLE.into();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_INDEX,
            "manifests": [listed],
        })
        .to_string()
        .into_bytes();
        let index_d = Descriptor::for_bytes(MEDIA_OCI_INDEX, &index);
        BundleReferrer {
            tag,
            bundle: (bundle_bytes, bundle_d),
            config: (config, config_d),
            manifest: (manifest, manifest_d),
            index: (index, index_d),
        }
    }
}

/// The OCI empty descriptor's media type.
const MEDIA_OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

#[cfg(test)]
#[path = "sigstore_tests.rs"]
mod tests;
