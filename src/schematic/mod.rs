//! Schematics: the customisation model, strict parsing, the canonical emitter and content IDs.
//!
//! A schematic's ID is the SHA-256 of its canonical YAML, which must equal what the official
//! Image Factory (v1.5.0, go-yaml v4) produces for the same document. Parsing follows go-yaml's
//! decoder (strict fields, duplicate keys rejected, source text kept for string fields) and the
//! emitter follows go-yaml's `Marshal` byte for byte; see `docs/design.md` for the details and the
//! few places where this implementation follows go-yaml's code rather than the written spec.

mod budget;
mod decode;
mod errors;
mod keys;
mod order;
mod size;
mod tree;
mod value;

pub use value::{Timestamp, Value};

use crate::gocompat::yaml::{self, Flavour, Node};

/// Error raised when a schematic document is rejected; the message is the upstream-compatible text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchematicError(pub String);

/// A schematic: the requested image customisation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Schematic {
    /// Owner (Enterprise only; the community edition rejects a non-empty owner).
    pub owner: String,
    /// Board overlay (single-board computers).
    pub overlay: Overlay,
    /// Talos image customisation.
    pub customization: Customization,
}

/// Overlay selection for single-board computers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Overlay {
    /// Overlay image repository (part of the ID, not used for lookup).
    pub image: String,
    /// Overlay name (used for lookup in the overlay catalog).
    pub name: String,
    /// Free-form overlay options (string keys, any YAML values), in canonical key order.
    pub options: Vec<(String, Value)>,
}

/// The Talos image customisation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Customization {
    /// Machine configuration embedded into the image (Talos >= 1.12).
    pub embedded_machine_configuration: String,
    /// Extra kernel command-line arguments, in input order.
    pub extra_kernel_args: Vec<String>,
    /// Initial META partition contents, in input order.
    pub meta: Vec<MetaValue>,
    /// System extensions to install.
    pub system_extensions: SystemExtensions,
    /// Bootloader for disk images and ISOs.
    pub bootloader: Bootloader,
    /// SecureBoot options.
    pub secureboot: SecureBoot,
    /// Disk image options.
    pub disk_image: DiskImage,
}

/// One META key and its value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetaValue {
    /// META key (0..=255).
    pub key: u8,
    /// META value.
    pub value: String,
}

/// System extensions to install.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SystemExtensions {
    /// Official extensions by repository path, e.g. `siderolabs/iscsi-tools`, in input order.
    pub official_extensions: Vec<String>,
}

/// Bootloader choice; `None` means "let the imager decide".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bootloader {
    /// Not set (omitted from the canonical form).
    #[default]
    None,
    /// GRUB for BIOS plus systemd-boot for UEFI.
    DualBoot,
    /// systemd-boot only.
    SdBoot,
    /// GRUB only.
    Grub,
}

impl Bootloader {
    /// The textual form used in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Bootloader::None => "none",
            Bootloader::DualBoot => "dual-boot",
            Bootloader::SdBoot => "sd-boot",
            Bootloader::Grub => "grub",
        }
    }

    /// Parses the textual form, case-insensitively (`auto` is not a value).
    pub fn parse(s: &str) -> Option<Bootloader> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Some(Bootloader::None),
            "dual-boot" => Some(Bootloader::DualBoot),
            "sd-boot" => Some(Bootloader::SdBoot),
            "grub" => Some(Bootloader::Grub),
            _ => None,
        }
    }
}

/// SecureBoot customisation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecureBoot {
    /// systemd-boot key enrolment mode (`off`, `manual`, `if-safe`, `force`); checked at build time.
    pub enroll_keys: String,
    /// Include well-known UEFI certificates in the enrolment databases.
    pub include_well_known_certificates: bool,
}

/// Disk image customisation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskImage {
    /// Logical sector size in bytes (0 = default 512).
    pub sector_size: u64,
}

impl Schematic {
    /// Parses a schematic document strictly (first YAML document only, unknown keys rejected).
    ///
    /// CPU-bound and synchronous: its time and memory grow linearly (at worst n log n) with the
    /// input, whatever the input (aliases, repeated keys, nesting; see docs/design.md, "Bounded
    /// work"), and it touches no shared state, so a server can run it on a blocking thread.
    /// A 1 MiB body costs at most ~1 s and ~200 MiB in a debug build.
    pub fn parse(input: &[u8]) -> Result<Schematic, SchematicError> {
        let schematic = decode::decode(input)?;
        if !schematic.owner.is_empty() {
            return Err(SchematicError(
                "owner field is only supported in Enterprise edition".into(),
            ));
        }
        if size::canonical_bound(&schematic) > size::MAX_CANONICAL_BYTES {
            return Err(SchematicError(format!(
                "schematic is too large: its canonical form would exceed {} bytes",
                size::MAX_CANONICAL_BYTES
            )));
        }
        Ok(schematic)
    }

    /// The canonical YAML bytes whose SHA-256 is the schematic ID.
    pub fn canonical(&self) -> String {
        self.marshal(Flavour::V4)
    }

    /// The schematic as go-yaml of `flavour` marshals it (v4 is the Image Factory's).
    fn marshal(&self, flavour: Flavour) -> String {
        let options = Value::Map(
            self.overlay
                .options
                .iter()
                .map(|(k, v)| (Value::Str(k.clone()), v.clone()))
                .collect(),
        )
        .sorted();
        let mut top: Vec<(&str, Node<'_>)> = Vec::new();
        if !self.owner.is_empty() {
            top.push(("owner", Node::Str(&self.owner)));
        }
        let o = &self.overlay;
        if !(o.image.is_empty() && o.name.is_empty() && o.options.is_empty()) {
            let mut m = vec![("image", Node::Str(&o.image)), ("name", Node::Str(&o.name))];
            if !o.options.is_empty() {
                m.push(("options", options.node()));
            }
            top.push(("overlay", Node::map(m)));
        }
        top.push(("customization", self.customization.node()));
        yaml::document(&Node::map(top), flavour)
    }

    /// The schematic ID: lowercase hex SHA-256 of the canonical YAML.
    pub fn id(&self) -> String {
        id_of(&self.canonical())
    }
}

impl Customization {
    fn node(&self) -> Node<'_> {
        let mut m: Vec<(&str, Node<'_>)> = Vec::new();
        if !self.embedded_machine_configuration.is_empty() {
            m.push((
                "embeddedMachineConfiguration",
                Node::Str(&self.embedded_machine_configuration),
            ));
        }
        if !self.extra_kernel_args.is_empty() {
            let items = self
                .extra_kernel_args
                .iter()
                .map(|s| Node::Str(s))
                .collect();
            m.push(("extraKernelArgs", Node::Seq(items)));
        }
        if !self.meta.is_empty() {
            let items = self
                .meta
                .iter()
                .map(|mv| {
                    Node::map(vec![
                        ("key", Node::Raw(mv.key.to_string())),
                        ("value", Node::Str(&mv.value)),
                    ])
                })
                .collect();
            m.push(("meta", Node::Seq(items)));
        }
        if !self.system_extensions.official_extensions.is_empty() {
            let items = self
                .system_extensions
                .official_extensions
                .iter()
                .map(|s| Node::Str(s))
                .collect();
            m.push((
                "systemExtensions",
                Node::map(vec![("officialExtensions", Node::Seq(items))]),
            ));
        }
        if self.bootloader != Bootloader::None {
            m.push(("bootloader", Node::Str(self.bootloader.as_str())));
        }
        let sb = &self.secureboot;
        if !sb.enroll_keys.is_empty() || sb.include_well_known_certificates {
            let mut s = Vec::new();
            if !sb.enroll_keys.is_empty() {
                s.push(("enrollKeys", Node::Str(&sb.enroll_keys)));
            }
            if sb.include_well_known_certificates {
                s.push(("includeWellKnownCertificates", Node::Raw("true".into())));
            }
            m.push(("secureboot", Node::map(s)));
        }
        if self.disk_image.sector_size != 0 {
            m.push((
                "diskImage",
                Node::map(vec![(
                    "sectorSize",
                    Node::Raw(self.disk_image.sector_size.to_string()),
                )]),
            ));
        }
        Node::map(m)
    }
}

/// Lowercase hex SHA-256 of canonical schematic bytes.
pub fn id_of(canonical: &str) -> String {
    crate::sha256::hex_digest(canonical.as_bytes())
}

/// Whether `s` is syntactically a schematic ID (64 lowercase hex characters).
pub fn is_valid_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests;
