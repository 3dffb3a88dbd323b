//! GUIDs of disk images (imager spec §5.2): the deterministic disk and partition GUIDs of
//! imager >= 1.13 (`GUIDFromLabel`), the partition type GUIDs, and the mixed-endian on-disk
//! form GPT stores them in.
//!
//! `GUIDFromLabel(x)` is google/uuid's `NewHash(sha256, Nil, x, 8)`: the first 16 bytes of
//! SHA-256(16 zero bytes ‖ x), version nibble 8, RFC 4122 variant. The same GUID is used as the
//! XFS/ext4 filesystem UUID of the partition with that label.

use crate::sha256::Sha256;
use uuid::Uuid;

/// The label whose GUID is the disk GUID of every image (`diskImageLabel` upstream).
pub const DISK_IMAGE_LABEL: &str = "talos-image-disk";

/// EFI System partition type `C12A7328-F81F-11D2-BA4B-00A0C93EC93B`.
pub const EFI_SYSTEM_PARTITION: Uuid = Uuid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B);
/// BIOS boot partition type `21686148-6449-6E6F-744E-656564454649` (GRUB's core.img).
pub const BIOS_BOOT_PARTITION: Uuid = Uuid::from_u128(0x21686148_6449_6E6F_744E_656564454649);
/// Linux filesystem data type `0FC63DAF-8483-4772-8E79-3D69D8477DE4` (BOOT, META, …).
pub const LINUX_FILESYSTEM_DATA: Uuid = Uuid::from_u128(0x0FC63DAF_8483_4772_8E79_3D69D8477DE4);

/// `GUIDFromLabel`: the deterministic GUID of a partition (or disk) label.
pub fn guid_from_label(label: &str) -> Uuid {
    let mut h = Sha256::new();
    h.update(&[0u8; 16]);
    h.update(label.as_bytes());
    let digest = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0F) | 0x80;
    b[8] = (b[8] & 0x3F) | 0x80;
    Uuid::from_bytes(b)
}

/// The disk GUID of every image: `GUIDFromLabel("talos-image-disk")`.
pub fn disk_guid() -> Uuid {
    guid_from_label(DISK_IMAGE_LABEL)
}

/// The 16 bytes GPT stores for a GUID: the first three fields little-endian, the rest as is.
pub fn to_gpt_bytes(g: &Uuid) -> [u8; 16] {
    g.to_bytes_le()
}

/// The GUID of 16 bytes in GPT's mixed-endian layout (inverse of [`to_gpt_bytes`]).
pub fn from_gpt_bytes(b: [u8; 16]) -> Uuid {
    Uuid::from_bytes_le(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of imager spec §5.2 ("verified against upstream tests").
    const VECTORS: &[(&str, &str)] = &[
        ("talos-image-disk", "d92d45b3-cde9-8760-be9f-a2a71fac8d11"),
        ("EFI", "bca5174b-0118-8a6a-af0b-2c6e1585acae"),
        ("BIOS", "a2a02ff5-d88d-8e6e-9c95-26b9b6c80bc3"),
        ("BOOT", "24c73076-4092-85dd-9d98-686a2dbf6d81"),
        ("META", "cf04f137-101e-8ec6-9627-fa3f51cdabb8"),
        ("STATE", "f7f88648-df7c-8acb-b4d2-6f124659d923"),
        ("EPHEMERAL", "c5e02400-0e5e-80bc-99ec-53b3e45ad6c4"),
        ("IMAGECACHE", "3b5449bc-c21f-8009-8b51-18945967f8df"),
    ];

    #[test]
    fn spec_vectors() {
        for (label, want) in VECTORS {
            let g = guid_from_label(label);
            assert_eq!(g.to_string(), *want, "GUIDFromLabel({label})");
            assert_eq!(g.get_version_num(), 8, "{label}");
            assert_eq!(g.get_variant(), uuid::Variant::RFC4122, "{label}");
        }
        assert_eq!(disk_guid().to_string(), VECTORS[0].1);
    }

    #[test]
    fn mixed_endian_layout() {
        // EFI System: C12A7328-F81F-11D2-BA4B-00A0C93EC93B is stored as 28 73 2A C1 1F F8 D2 11 BA 4B …
        let b = to_gpt_bytes(&EFI_SYSTEM_PARTITION);
        assert_eq!(
            b,
            [
                0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
                0xC9, 0x3B
            ]
        );
        // "Hah!IdontNeedEFI" is the famous on-disk form of the BIOS boot type
        assert_eq!(&to_gpt_bytes(&BIOS_BOOT_PARTITION), b"Hah!IdontNeedEFI");
        for (label, _) in VECTORS {
            let g = guid_from_label(label);
            assert_eq!(from_gpt_bytes(to_gpt_bytes(&g)), g);
        }
    }

    #[test]
    fn type_guid_strings() {
        assert_eq!(
            EFI_SYSTEM_PARTITION.to_string().to_uppercase(),
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
        );
        assert_eq!(
            BIOS_BOOT_PARTITION.to_string().to_uppercase(),
            "21686148-6449-6E6F-744E-656564454649"
        );
        assert_eq!(
            LINUX_FILESYSTEM_DATA.to_string().to_uppercase(),
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
        );
    }
}
