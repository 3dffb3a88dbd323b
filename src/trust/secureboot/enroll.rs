//! Secure Boot enrolment material (imager spec §7.6): `PK.auth`, `KEK.auth` and `db.auth`,
//! each an EFI signature list holding the signing certificate, wrapped as a time-based
//! authenticated variable signed with the signing key — what systemd-boot's
//! `secure-boot-enroll` writes into a machine in setup mode, and what firmware key managers
//! import. Unlike upstream the lists hold the certificate's DER, not its PEM text (spec §7.6
//! quirk; OVMF refuses PEM entries). Microsoft's well-known certificates are not added.

use super::SecureBootError;
use super::keys::SecureBootKeys;
use super::pkcs7::detached_signed_data;

/// `EFI_CERT_X509_GUID`.
const EFI_CERT_X509: &str = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072";
/// `EFI_CERT_TYPE_PKCS7_GUID`.
const EFI_CERT_TYPE_PKCS7: &str = "4aafd29d-68df-49ee-8aa9-347d375665a7";
/// `EFI_GLOBAL_VARIABLE` (PK, KEK).
pub const EFI_GLOBAL_VARIABLE: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// `EFI_IMAGE_SECURITY_DATABASE_GUID` (db).
pub const EFI_IMAGE_SECURITY_DATABASE: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";
/// The X.500 name-space UUID the owner GUID is derived in.
const NAMESPACE_X500: &str = "6ba7b814-9dad-11d1-80b4-00c04fd430c8";
/// NV | BOOTSERVICE_ACCESS | RUNTIME_ACCESS | TIME_BASED_AUTHENTICATED_WRITE_ACCESS.
pub const ATTRIBUTES: u32 = 0x27;
/// `WIN_CERT_TYPE_EFI_GUID`.
const WIN_CERT_TYPE_EFI_GUID: u16 = 0x0EF1;

/// One enrolment file: its name and bytes.
#[derive(Debug, Clone)]
pub struct AuthFile {
    /// `PK.auth`, `KEK.auth` or `db.auth`.
    pub name: &'static str,
    /// The variable name (`PK`, `KEK`, `db`).
    pub variable: &'static str,
    /// The vendor GUID of the variable.
    pub vendor: &'static str,
    /// `EFI_VARIABLE_AUTHENTICATION_2` followed by the signature list.
    pub bytes: Vec<u8>,
}

/// A GUID in EFI's mixed-endian byte order.
fn guid(text: &str) -> [u8; 16] {
    uuid::Uuid::parse_str(text)
        .map(|u| u.to_bytes_le())
        .unwrap_or_default()
}

/// The owner GUID of the certificate's list entry: a version-4-style UUID from SHA-256 over the
/// X.500 name space and the certificate (DER), in EFI byte order.
pub fn owner_guid(cert_der: &[u8]) -> [u8; 16] {
    let ns = uuid::Uuid::parse_str(NAMESPACE_X500).unwrap_or_default();
    let mut input = ns.as_bytes().to_vec();
    input.extend_from_slice(cert_der);
    let hash = crate::sha256::digest(&input);
    let mut b = [0u8; 16];
    b.copy_from_slice(&hash[..16]);
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    uuid::Uuid::from_bytes(b).to_bytes_le()
}

/// An `EFI_SIGNATURE_LIST` of type X.509 with one entry (`owner`, `cert_der`).
pub fn signature_list(owner: [u8; 16], cert_der: &[u8]) -> Vec<u8> {
    let entry_size = 16 + cert_der.len();
    let list_size = 28 + entry_size;
    let mut out = Vec::with_capacity(list_size);
    out.extend_from_slice(&guid(EFI_CERT_X509));
    out.extend_from_slice(&(list_size as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(entry_size as u32).to_le_bytes());
    out.extend_from_slice(&owner);
    out.extend_from_slice(cert_der);
    out
}

/// An `EFI_TIME` for `secs` since the epoch (UTC, no nanoseconds, time zone 0).
pub fn efi_time(secs: u64) -> [u8; 16] {
    let (y, m, d) = crate::clock::civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let mut t = [0u8; 16];
    t[0..2].copy_from_slice(&(y as u16).to_le_bytes());
    t[2] = m as u8;
    t[3] = d as u8;
    t[4] = (rem / 3600) as u8;
    t[5] = (rem % 3600 / 60) as u8;
    t[6] = (rem % 60) as u8;
    t
}

/// The bytes an authenticated-variable signature covers: the variable name (UTF-16LE, no
/// terminator), its vendor GUID, the attributes, the timestamp and the data.
pub fn signed_payload(variable: &str, vendor: &str, time: &[u8; 16], data: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = variable.encode_utf16().flat_map(u16::to_le_bytes).collect();
    out.extend_from_slice(&guid(vendor));
    out.extend_from_slice(&ATTRIBUTES.to_le_bytes());
    out.extend_from_slice(time);
    out.extend_from_slice(data);
    out
}

/// `PK.auth`, `KEK.auth` and `db.auth` for the signing certificate, timestamped `now`.
pub fn enrolment_files(keys: &SecureBootKeys, now: u64) -> Result<Vec<AuthFile>, SecureBootError> {
    let cert = keys.certificate_der();
    let list = signature_list(owner_guid(cert), cert);
    let time = efi_time(now);
    [
        ("PK.auth", "PK", EFI_GLOBAL_VARIABLE),
        ("KEK.auth", "KEK", EFI_GLOBAL_VARIABLE),
        ("db.auth", "db", EFI_IMAGE_SECURITY_DATABASE),
    ]
    .into_iter()
    .map(|(name, variable, vendor)| {
        let payload = signed_payload(variable, vendor, &time, &list);
        let signed = detached_signed_data(&payload, keys)?;
        let mut bytes = Vec::with_capacity(16 + 24 + signed.len() + list.len());
        bytes.extend_from_slice(&time);
        bytes.extend_from_slice(&((24 + signed.len()) as u32).to_le_bytes());
        bytes.extend_from_slice(&0x0200u16.to_le_bytes());
        bytes.extend_from_slice(&WIN_CERT_TYPE_EFI_GUID.to_le_bytes());
        bytes.extend_from_slice(&guid(EFI_CERT_TYPE_PKCS7));
        bytes.extend_from_slice(&signed);
        bytes.extend_from_slice(&list);
        Ok(AuthFile {
            name,
            variable,
            vendor,
            bytes,
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_mixed_endian_and_owner_is_v4() {
        assert_eq!(
            hex::encode(guid(EFI_CERT_X509)),
            "a159c0a5e494a74a87b5ab155c2bf072"
        );
        let owner = owner_guid(b"cert");
        let u = uuid::Uuid::from_bytes_le(owner);
        assert_eq!(u.get_version_num(), 4);
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
        assert_ne!(owner, owner_guid(b"other cert"));
        let t = efi_time(1_767_225_599); // 2025-12-31T23:59:59Z
        assert_eq!(t[..7], [0xE9, 0x07, 12, 31, 23, 59, 59]);
        let list = signature_list(owner, b"DER");
        assert_eq!(
            u32::from_le_bytes(list[16..20].try_into().unwrap()) as usize,
            list.len()
        );
        assert_eq!(&list[44..], b"DER");
    }
}
