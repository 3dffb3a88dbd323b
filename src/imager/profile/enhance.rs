//! Schematic → profile (api spec §2.8, imager spec §1.8): upstream's `EnhanceFromSchematic`
//! against an imported release, followed by the imager's output defaults and validation.

use crate::catalog::Release;
use crate::schematic::{Bootloader, Schematic, Value};

use super::super::error::ImagerError;
use super::super::quirks::{self, Quirk};
use super::{EnrollKeys, MetaEntry, OutputKind, Profile, ProfileOverlay, ResolvedExtension};

/// Renamed or misnamed extensions: (requested, catalog name), tried when the name is absent.
pub const EXTENSION_ALIASES: &[(&str, &str)] = &[
    ("siderolabs/v4l-uvc", "siderolabs/v4l-uvc-drivers"),
    ("siderolabs/usb-modem", "siderolabs/usb-modem-drivers"),
    ("siderolabs/gasket", "siderolabs/gasket-driver"),
    (
        "siderolabs/talos-vmtoolsd",
        "siderolabs/vmtoolsd-guest-agent",
    ),
    (
        "siderolabs/xe-guest-utilities",
        "siderolabs/xen-guest-agent",
    ),
    (
        "siderolabs/nvidia-container-toolkit",
        "siderolabs/nvidia-container-toolkit-lts",
    ),
    (
        "siderolabs/nvidia-open-gpu-kernel-modules",
        "siderolabs/nvidia-open-gpu-kernel-modules-lts",
    ),
    (
        "siderolabs/nonfree-kmod-nvidia",
        "siderolabs/nonfree-kmod-nvidia-lts",
    ),
    (
        "siderolabs/nvidia-fabricmanager",
        "siderolabs/nvidia-fabric-manager-lts",
    ),
    ("siderolabs/i915-ucode", "siderolabs/i915"),
    ("siderolabs/amdgpu-firmware", "siderolabs/amdgpu"),
];

/// Parses `secureboot.enrollKeys` case-insensitively (`off`, `manual`, `if-safe`, `force`).
pub fn parse_enroll_keys(value: &str) -> Result<EnrollKeys, ImagerError> {
    match value.to_ascii_lowercase().as_str() {
        "if-safe" => Ok(EnrollKeys::IfSafe),
        "manual" => Ok(EnrollKeys::Manual),
        "force" => Ok(EnrollKeys::Force),
        "off" => Ok(EnrollKeys::Off),
        _ => Err(ImagerError::InvalidEnrollKeys {
            value: value.to_string(),
            reason: "must be one of off, manual, if-safe, force".into(),
        }),
    }
}

/// Applies a schematic to a parsed profile for the given imported release, then applies the
/// output defaults and validates. Errors carry upstream's texts; the order of checks follows
/// upstream (SecureBoot, overlay gate, embedded-config gate, extensions, overlay lookup).
///
/// SecureBoot assets are refused with `secure boot is disabled` unless `secure_boot` (the
/// appliance holds signing keys); with it, the schematic's `secureboot.enrollKeys` goes into
/// the ISO and disk-image options and `includeWellKnownCertificates` into the profile.
pub fn enhance_from_schematic(
    mut profile: Profile,
    schematic: &Schematic,
    release: &Release,
    secure_boot: bool,
) -> Result<Profile, ImagerError> {
    quirks::ensure_supported(&profile.version)?;
    let tag = profile.version.tag();
    if release.parsed_version().as_ref() != Some(&profile.version) {
        return Err(ImagerError::Inconsistent(format!(
            "release {} does not match the requested version {tag}",
            release.version
        )));
    }
    let q = profile.quirks();
    let c = &schematic.customization;
    let kind = profile.output.kind;

    let mut enroll_keys = None;
    if profile.secureboot {
        if !secure_boot {
            return Err(ImagerError::SecureBootDisabled);
        }
        if !c.secureboot.enroll_keys.is_empty() {
            enroll_keys = Some(parse_enroll_keys(&c.secureboot.enroll_keys)?);
        }
        profile.include_well_known_certs = c.secureboot.include_well_known_certificates;
    }

    if !schematic.overlay.name.is_empty() && !q.has(Quirk::SupportsOverlay) {
        return Err(ImagerError::OverlayNotSupported { version: tag });
    }

    let carries_inputs = !matches!(kind, OutputKind::Cmdline | OutputKind::Kernel);

    if carries_inputs && !c.embedded_machine_configuration.is_empty() {
        if !q.has(Quirk::SupportsEmbeddedConfig) {
            return Err(ImagerError::EmbeddedConfigNotSupported { version: tag });
        }
        profile.customization.embedded_machine_configuration =
            c.embedded_machine_configuration.clone();
    }

    if carries_inputs {
        for requested in &c.system_extensions.official_extensions {
            let ext = resolve_extension(&profile, requested, release, &tag)?;
            profile.system_extensions.push(ext);
        }
        profile.schematic_extension = Some(schematic.id());

        if !schematic.overlay.name.is_empty() {
            let Some(entry) = release
                .overlays
                .iter()
                .find(|o| o.name == schematic.overlay.name)
            else {
                return Err(ImagerError::OverlayNotAvailable {
                    name: schematic.overlay.name.clone(),
                    version: tag,
                });
            };
            let options = serde_json::Value::Object(
                schematic
                    .overlay
                    .options
                    .iter()
                    .map(|(k, v)| (k.clone(), to_json(v)))
                    .collect(),
            );
            profile.overlay = Some(ProfileOverlay {
                entry: entry.clone(),
                options,
                kernel_args: Vec::new(),
                partition_offset: 0,
            });
        }
    }

    let takes_args = match kind {
        OutputKind::Initramfs | OutputKind::Kernel => false,
        OutputKind::Installer | OutputKind::Uki => {
            profile.secureboot || q.has(Quirk::SupportsUnifiedInstaller)
        }
        OutputKind::Iso | OutputKind::Image | OutputKind::Cmdline => true,
    };
    let takes_meta = matches!(
        kind,
        OutputKind::Iso | OutputKind::Image | OutputKind::Cmdline
    );
    if takes_args {
        profile
            .customization
            .extra_kernel_args
            .extend(c.extra_kernel_args.iter().cloned());
    }
    if takes_meta {
        profile
            .customization
            .meta_contents
            .extend(c.meta.iter().map(|m| MetaEntry {
                key: m.key,
                value: m.value.clone(),
            }));
    }

    // An overlay's profile chooses grub (every upstream board profile does, and the overlay's
    // `install` step runs only in GRUB mode, imager spec §5.8) unless the schematic chooses.
    if c.bootloader == Bootloader::None
        && kind == OutputKind::Image
        && profile.overlay.is_some()
        && let Some(o) = profile.output.image_options.as_mut()
    {
        o.bootloader = Bootloader::Grub;
    }
    if c.bootloader != Bootloader::None {
        match kind {
            OutputKind::Image => {
                if let Some(o) = profile.output.image_options.as_mut() {
                    o.bootloader = c.bootloader;
                }
            }
            OutputKind::Iso if q.has(Quirk::IsoSupportsSettingBootloader) => {
                profile
                    .output
                    .iso_options
                    .get_or_insert_with(Default::default)
                    .bootloader = c.bootloader;
            }
            _ => {}
        }
    }
    if kind == OutputKind::Image
        && let Some(o) = profile.output.image_options.as_mut()
    {
        o.disk_sector_size = c.disk_image.sector_size;
    }

    if let Some(keys) = enroll_keys {
        match kind {
            OutputKind::Image => {
                if let Some(o) = profile.output.image_options.as_mut() {
                    o.sd_boot_enroll_keys = keys;
                }
            }
            OutputKind::Iso => {
                profile
                    .output
                    .iso_options
                    .get_or_insert_with(Default::default)
                    .sd_boot_enroll_keys = keys;
            }
            _ => {}
        }
    }

    profile.apply_output_defaults();
    profile.validate()?;
    Ok(profile)
}

/// Finds an extension by catalog name, then through [`EXTENSION_ALIASES`].
fn resolve_extension(
    profile: &Profile,
    requested: &str,
    release: &Release,
    tag: &str,
) -> Result<ResolvedExtension, ImagerError> {
    let find = |name: &str| release.extensions.iter().find(|e| e.name == name);
    let entry = find(requested).or_else(|| {
        EXTENSION_ALIASES
            .iter()
            .find(|(from, _)| *from == requested)
            .and_then(|(_, to)| find(to))
    });
    let Some(entry) = entry else {
        return Err(ImagerError::ExtensionNotAvailable {
            name: requested.to_string(),
            version: tag.to_string(),
        });
    };
    let arch = profile.arch.as_str();
    let Some(image) = entry.images.get(arch) else {
        return Err(ImagerError::ExtensionNotImported {
            name: entry.name.clone(),
            arch: arch.to_string(),
            version: tag.to_string(),
        });
    };
    Ok(ResolvedExtension {
        requested: requested.to_string(),
        name: entry.name.clone(),
        reference: entry.reference.clone(),
        digest: entry.digest.clone(),
        image: image.clone(),
    })
}

/// Converts a schematic option value to JSON (timestamps as RFC 3339 text, non-finite floats
/// as text, non-string map keys in their YAML text form).
fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Uint(u) => J::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .unwrap_or_else(|| J::String(f.to_string())),
        Value::Timestamp(t) => J::String(t.rfc3339_nano()),
        Value::Str(s) => J::String(s.clone()),
        Value::Seq(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::Str(s) => s.clone(),
                        other => match to_json(other) {
                            J::String(s) => s,
                            j => j.to_string(),
                        },
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
    }
}
