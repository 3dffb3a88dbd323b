//! Virtual extensions given to the build as plain tars: the factory's `schematic` extension
//! (api spec §6.4) and the imager's `embedded-config` extension (imager spec §3.7).

use crate::io_context::io_err;
use crate::sha256::hex_digest;

use super::InitramfsError;
use super::yaml::{Compatibility, Constraint, Manifest, Metadata, manifest_yaml};

/// Description of the `schematic` extension (factory ≥ v1.1.0 text, ends with the extension name).
pub const SCHEMATIC_DESCRIPTION: &str =
    "Virtual extension which specifies the schematic of the image built with schematic.";
/// Description of the `embedded-config` extension.
pub const EMBEDDED_CONFIG_DESCRIPTION: &str =
    "Virtual extension which embeds the machine configuration.";
/// SELinux label the embedded machine configuration carries.
pub const EMBEDDED_CONFIG_LABEL: &str = "system_u:object_r:system_state_t:s0";

/// One entry of a virtual extension tar.
enum Item<'a> {
    Dir(&'a str),
    File(&'a str, u32, &'a [u8], Option<&'a str>),
}

fn tar_of(items: &[Item<'_>]) -> Result<Vec<u8>, InitramfsError> {
    let err = |e: std::io::Error| InitramfsError::from(io_err("virtual extension tar")(e));
    let mut b = tar::Builder::new(Vec::new());
    for item in items {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        match item {
            Item::Dir(name) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, name, std::io::empty()).map_err(err)?;
            }
            Item::File(name, mode, data, label) => {
                if let Some(label) = label {
                    b.append_pax_extensions([("SCHILY.xattr.security.selinux", label.as_bytes())])
                        .map_err(err)?;
                }
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, *data).map_err(err)?;
            }
        }
    }
    b.into_inner().map_err(err)
}

/// The `manifest.yaml` of the schematic extension (go-yaml indent 4). `extra_info` is the
/// canonical schematic YAML for targets ≥ 1.7, empty before.
pub fn schematic_manifest(schematic_id: &str, external_url: &str, extra_info: &str) -> String {
    manifest_yaml(&Manifest {
        version: "v1alpha1".into(),
        metadata: Metadata {
            name: "schematic".into(),
            version: schematic_id.into(),
            author: format!("Image Factory ({external_url})"),
            description: SCHEMATIC_DESCRIPTION.into(),
            compatibility: Compatibility {
                talos: Constraint {
                    version: ">= 1.0.0".into(),
                },
            },
            extra_info: extra_info.into(),
        },
    })
}

/// The schematic extension tar: `manifest.yaml` (0644), `rootfs/` … `rootfs/usr/local/share/
/// schematic/` (0755) and the empty file `rootfs/usr/local/share/schematic/<ID>` (0644).
/// `canonical_yaml` goes to `extraInfo` and should be empty for targets < 1.7.
pub fn schematic_extension_tar(
    schematic_id: &str,
    external_url: &str,
    canonical_yaml: &str,
) -> Result<Vec<u8>, InitramfsError> {
    if schematic_id.is_empty() || schematic_id.contains(['/', '\0']) || schematic_id == ".." {
        return Err(InitramfsError::Invalid(format!(
            "invalid schematic ID {schematic_id:?}"
        )));
    }
    let manifest = schematic_manifest(schematic_id, external_url, canonical_yaml);
    let file = format!("rootfs/usr/local/share/schematic/{schematic_id}");
    tar_of(&[
        Item::File("manifest.yaml", 0o644, manifest.as_bytes(), None),
        Item::Dir("rootfs/"),
        Item::Dir("rootfs/usr/"),
        Item::Dir("rootfs/usr/local/"),
        Item::Dir("rootfs/usr/local/share/"),
        Item::Dir("rootfs/usr/local/share/schematic/"),
        Item::File(&file, 0o644, b"", None),
    ])
}

/// The `manifest.yaml` of the embedded-config extension for `config` bytes.
pub fn embedded_config_manifest(config: &[u8]) -> String {
    manifest_yaml(&Manifest {
        version: "v1alpha1".into(),
        metadata: Metadata {
            name: "embedded-config".into(),
            version: hex_digest(config),
            author: "Imager".into(),
            description: EMBEDDED_CONFIG_DESCRIPTION.into(),
            compatibility: Compatibility {
                talos: Constraint {
                    version: ">= 1.0.0".into(),
                },
            },
            extra_info: String::new(),
        },
    })
}

/// The embedded-config extension tar: `manifest.yaml`, directories `rootfs` …
/// `rootfs/usr/local/etc/talos` (0755) and `rootfs/usr/local/etc/talos/config.yaml` (0400)
/// with the PAX record `SCHILY.xattr.security.selinux=system_u:object_r:system_state_t:s0`.
pub fn embedded_config_extension_tar(config: &[u8]) -> Result<Vec<u8>, InitramfsError> {
    let manifest = embedded_config_manifest(config);
    tar_of(&[
        Item::File("manifest.yaml", 0o644, manifest.as_bytes(), None),
        Item::Dir("rootfs"),
        Item::Dir("rootfs/usr"),
        Item::Dir("rootfs/usr/local"),
        Item::Dir("rootfs/usr/local/etc"),
        Item::Dir("rootfs/usr/local/etc/talos"),
        Item::File(
            "rootfs/usr/local/etc/talos/config.yaml",
            0o400,
            config,
            Some(EMBEDDED_CONFIG_LABEL),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";

    #[test]
    fn schematic_manifest_text() {
        let m = schematic_manifest(ID, "https://factory.example", "customization: {}\n");
        assert_eq!(
            m,
            format!(
                "version: v1alpha1
metadata:
    name: schematic
    version: {ID}
    author: Image Factory (https://factory.example)
    description: Virtual extension which specifies the schematic of the image built with schematic.
    compatibility:
        talos:
            version: '>= 1.0.0'
    extraInfo: |
        customization: {{}}
"
            )
        );
        assert!(!schematic_manifest(ID, "x", "").contains("extraInfo"));
    }

    #[test]
    fn embedded_config_tar_has_label_and_mode() {
        let tar = embedded_config_extension_tar(b"machine: {}\n").unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let mut seen = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mode = e.header().mode().unwrap();
            let mut label = None;
            if let Some(exts) = e.pax_extensions().unwrap() {
                for x in exts {
                    let x = x.unwrap();
                    if x.key().unwrap() == "SCHILY.xattr.security.selinux" {
                        label = Some(x.value().unwrap().to_string());
                    }
                }
            }
            seen.push((path, mode, label));
        }
        assert_eq!(seen.len(), 7);
        assert_eq!(
            seen[6],
            (
                "rootfs/usr/local/etc/talos/config.yaml".to_string(),
                0o400,
                Some(EMBEDDED_CONFIG_LABEL.to_string())
            )
        );
        assert_eq!(seen[1].0, "rootfs");
        let m = embedded_config_manifest(b"machine: {}\n");
        let sha = hex_digest(b"machine: {}\n");
        assert!(m.contains(&format!("    version: {sha}\n")), "{m}");
        assert!(m.contains("    author: Imager\n"), "{m}");
    }

    #[test]
    fn rejects_bad_ids() {
        assert!(schematic_extension_tar("a/b", "x", "").is_err());
        assert!(schematic_extension_tar("", "x", "").is_err());
    }
}
