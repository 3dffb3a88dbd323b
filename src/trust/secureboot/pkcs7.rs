//! The PKCS#7 `SignedData` of an Authenticode signature (Microsoft "Windows Authenticode
//! Portable Executable Signature Format"): `SpcIndirectDataContent` holding the image's
//! SHA-256, signed with the UKI signing key, the signing certificate embedded.

use aws_lc_rs::signature;

use super::SecureBootError;
use super::der::{self, algorithm, cons, context, octets, oid, seq, set_of, tlv, uint};
use super::keys::SecureBootKeys;

const SIGNED_DATA: &[u64] = &[1, 2, 840, 113_549, 1, 7, 2];
const SPC_INDIRECT_DATA: &[u64] = &[1, 3, 6, 1, 4, 1, 311, 2, 1, 4];
const SPC_PE_IMAGE_DATA: &[u64] = &[1, 3, 6, 1, 4, 1, 311, 2, 1, 15];
const SPC_SP_OPUS_INFO: &[u64] = &[1, 3, 6, 1, 4, 1, 311, 2, 1, 12];
const CONTENT_TYPE: &[u64] = &[1, 2, 840, 113_549, 1, 9, 3];
const MESSAGE_DIGEST: &[u64] = &[1, 2, 840, 113_549, 1, 9, 4];
const SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];
const RSA_ENCRYPTION: &[u64] = &[1, 2, 840, 113_549, 1, 1, 1];

/// The content octets of `SpcIndirectDataContent` for a PE image whose Authenticode SHA-256
/// is `image_digest` (without the outer `SEQUENCE` header: Authenticode's message digest is
/// over exactly these bytes).
fn indirect_data_content(image_digest: &[u8; 32]) -> Vec<u8> {
    // SpcPeImageData { flags: empty BIT STRING, file: [0] SpcLink.file [2] SpcString.unicode
    // [0] "<<<Obsolete>>>" } — what signtool, sbsign and osslsigncode write.
    let obsolete: Vec<u8> = "<<<Obsolete>>>"
        .encode_utf16()
        .flat_map(|u| u.to_be_bytes())
        .collect();
    let link = cons(
        context(0, true),
        &[&cons(
            context(2, true),
            &[&tlv(context(0, false), &obsolete)],
        )],
    );
    let pe_image_data = seq(&[&tlv(der::BIT_STRING, &[0]), &link]);
    let data = seq(&[&oid(SPC_PE_IMAGE_DATA), &pe_image_data]);
    let digest_info = seq(&[&algorithm(SHA256), &octets(image_digest)]);
    [data, digest_info].concat()
}

/// A DER `ContentInfo` with the Authenticode `SignedData` over `image_digest`.
pub fn authenticode_signed_data(
    image_digest: &[u8; 32],
    keys: &SecureBootKeys,
) -> Result<Vec<u8>, SecureBootError> {
    let content = indirect_data_content(image_digest);
    let indirect = tlv(der::SEQUENCE, &content);
    let message_digest = crate::sha256::digest(&content);
    let attribute = |arcs: &[u64], value: &[u8]| seq(&[&oid(arcs), &set_of(&[value])]);
    let attributes = set_of(&[
        &attribute(CONTENT_TYPE, &oid(SPC_INDIRECT_DATA)),
        &attribute(SPC_SP_OPUS_INFO, &seq(&[])),
        &attribute(MESSAGE_DIGEST, &octets(&message_digest)),
    ]);
    // The signature is over the attributes as a SET; in SignerInfo they are [0] IMPLICIT.
    let sig = keys.sign_with_signing_key(&signature::RSA_PKCS1_SHA256, &attributes)?;
    let mut implicit = attributes;
    implicit[0] = context(0, true);
    let (issuer, serial) = keys.issuer_and_serial();
    let signer_info = seq(&[
        &uint(&[1]),
        &seq(&[issuer, serial]),
        &algorithm(SHA256),
        &implicit,
        &algorithm(RSA_ENCRYPTION),
        &octets(&sig),
    ]);
    let signed_data = seq(&[
        &uint(&[1]),
        &set_of(&[&algorithm(SHA256)]),
        &seq(&[
            &oid(SPC_INDIRECT_DATA),
            &cons(context(0, true), &[&indirect]),
        ]),
        &cons(context(0, true), &[keys.certificate_der()]),
        &set_of(&[&signer_info]),
    ]);
    Ok(seq(&[
        &oid(SIGNED_DATA),
        &cons(context(0, true), &[&signed_data]),
    ]))
}

/// A DER `SignedData` (not wrapped in `ContentInfo`, as UEFI's `WIN_CERTIFICATE_UEFI_GUID`
/// wants it) with a detached RSA SHA-256 signature over `data` and no signed attributes, the
/// signing certificate embedded: what `sign-efi-sig-list` writes for authenticated variables.
pub fn detached_signed_data(
    data: &[u8],
    keys: &SecureBootKeys,
) -> Result<Vec<u8>, SecureBootError> {
    const DATA: &[u64] = &[1, 2, 840, 113_549, 1, 7, 1];
    let sig = keys.sign_with_signing_key(&signature::RSA_PKCS1_SHA256, data)?;
    let (issuer, serial) = keys.issuer_and_serial();
    let signer_info = seq(&[
        &uint(&[1]),
        &seq(&[issuer, serial]),
        &algorithm(SHA256),
        &algorithm(RSA_ENCRYPTION),
        &octets(&sig),
    ]);
    Ok(seq(&[
        &uint(&[1]),
        &set_of(&[&algorithm(SHA256)]),
        &seq(&[&oid(DATA)]),
        &cons(context(0, true), &[keys.certificate_der()]),
        &set_of(&[&signer_info]),
    ]))
}

/// `signed_data` wrapped in a `ContentInfo` (what `openssl cms -verify` reads).
pub fn content_info(signed_data: &[u8]) -> Vec<u8> {
    seq(&[&oid(SIGNED_DATA), &cons(context(0, true), &[signed_data])])
}
