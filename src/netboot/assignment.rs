//! Machine assignments: a selector (which machines) and what they boot. Parsed from the
//! wire form ([`AssignmentSpec`], the admin API's JSON and the machines file's YAML) into
//! checked values; the set of assignments resolves a boot request to at most one of them.
//!
//! A selector matches a machine when every field it names equals what the machine reported.
//! The most specific match wins: more fields named; between equally many, the one naming more
//! machine identifiers (`mac`, `uuid`, `serial`, `hostname`) rather than `arch`, so
//! `{arch: arm64}` is a default for arm64 machines beside `{mac: ..}` assignments. Two
//! assignments that could match one machine with the same specificity (no field both name
//! with different values) are a tie, refused when the second one is written. An assignment
//! with an empty selector matches every machine: it is the default.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::NetbootError;
use super::ident::{self, Identity, Mac, MachineUuid};
use crate::catalog::{Arch, Version};

/// Most assignments held (API and file together).
pub const MAX_ASSIGNMENTS: usize = 4096;
/// Longest assignment name.
pub const MAX_NAME: usize = 63;
/// Most extra kernel arguments per assignment.
pub const MAX_EXTRA_ARGS: usize = 32;
/// Longest extra kernel argument.
pub const MAX_EXTRA_ARG: usize = 256;
/// Most bytes of extra kernel arguments per assignment (joined by spaces).
pub const MAX_EXTRA_ARGS_BYTES: usize = 1024;
/// The platform booted when an assignment names none.
pub const DEFAULT_PLATFORM: &str = "metal";

/// Where an assignment comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The admin API (`image-factory machines set`), stored in the metadata store.
    Api,
    /// `netboot.machinesFile` (read-only through the API).
    File,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Api => "api",
            Source::File => "file",
        })
    }
}

/// The wire form of a selector: every field optional, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SelectorSpec {
    /// MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// SMBIOS UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// SMBIOS serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Architecture (`amd64`, `arm64`; iPXE's `x86_64`, `i386` are accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
}

/// What UEFI HTTP Boot firmware of an assigned machine is sent to by ProxyDHCP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpBoot {
    /// The UEFI iPXE binary, which then asks for `/pxe/boot.ipxe` (the default).
    #[default]
    Ipxe,
    /// The assignment's UKI (`<platform>-<arch>-uki.efi`), loaded by the firmware itself: no
    /// iPXE, and the command line is the one built into the UKI (extra arguments do not apply).
    Uki,
}

impl HttpBoot {
    fn is_ipxe(&self) -> bool {
        *self == HttpBoot::Ipxe
    }
}

/// The wire form of an assignment (admin API body, machines file entry, stored record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AssignmentSpec {
    /// Name (required in the file; in the API the path names it, and a body name must agree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Which machines (`{}`: every machine — the default assignment).
    pub selector: SelectorSpec,
    /// Schematic ID.
    pub schematic: String,
    /// Talos version (`v1.11.0`).
    pub version: String,
    /// Platform (default `metal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Kernel arguments appended to the schematic's command line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_kernel_args: Vec<String>,
    /// What UEFI HTTP Boot firmware loads (`ipxe`, the default, or `uki`).
    #[serde(default, skip_serializing_if = "HttpBoot::is_ipxe")]
    pub http_boot: HttpBoot,
}

/// Which machines an assignment applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// MAC address.
    pub mac: Option<Mac>,
    /// SMBIOS UUID.
    pub uuid: Option<MachineUuid>,
    /// Serial number (compared without regard to ASCII case).
    pub serial: Option<String>,
    /// Host name (lower case).
    pub hostname: Option<String>,
    /// Architecture.
    pub arch: Option<Arch>,
}

/// Whether two optional fields allow one machine to match both selectors: each may be unset,
/// or both set to the same value.
fn compatible<T>(a: &Option<T>, b: &Option<T>, eq: impl Fn(&T, &T) -> bool) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => eq(x, y),
        _ => true,
    }
}

/// Whether a selector field admits what the machine reported (unset admits anything).
fn admits<T>(want: &Option<T>, got: &Option<T>, eq: impl Fn(&T, &T) -> bool) -> bool {
    match (want, got) {
        (None, _) => true,
        (Some(w), Some(g)) => eq(w, g),
        (Some(_), None) => false,
    }
}

fn serial_eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl Selector {
    /// How specific the selector is: (fields named, machine identifiers among them). A
    /// match that is greater wins.
    pub fn specificity(&self) -> (usize, usize) {
        let identifiers = usize::from(self.mac.is_some())
            + usize::from(self.uuid.is_some())
            + usize::from(self.serial.is_some())
            + usize::from(self.hostname.is_some());
        (identifiers + usize::from(self.arch.is_some()), identifiers)
    }

    /// Whether this selector matches the machine that sent `id` (booting `id.boot_arch()`).
    pub fn matches(&self, id: &Identity) -> bool {
        admits(&self.mac, &id.mac, PartialEq::eq)
            && admits(&self.uuid, &id.uuid, PartialEq::eq)
            && admits(&self.serial, &id.serial, |a, b| serial_eq(a, b))
            && admits(&self.hostname, &id.hostname, PartialEq::eq)
            && admits(&self.arch, &Some(id.boot_arch()), PartialEq::eq)
    }

    /// Whether one machine could match both selectors with equal specificity (a tie).
    pub fn ties_with(&self, other: &Selector) -> bool {
        self.specificity() == other.specificity()
            && compatible(&self.mac, &other.mac, PartialEq::eq)
            && compatible(&self.uuid, &other.uuid, PartialEq::eq)
            && compatible(&self.serial, &other.serial, |a, b| serial_eq(a, b))
            && compatible(&self.hostname, &other.hostname, PartialEq::eq)
            && compatible(&self.arch, &other.arch, PartialEq::eq)
    }

    /// The wire form (normalised values).
    pub fn spec(&self) -> SelectorSpec {
        SelectorSpec {
            mac: self.mac.map(|m| m.to_string()),
            uuid: self.uuid.map(|u| u.to_string()),
            serial: self.serial.clone(),
            hostname: self.hostname.clone(),
            arch: self.arch.map(|a| a.to_string()),
        }
    }
}

impl fmt::Display for Selector {
    /// `mac=.. serial=..`, or `(default)` for the empty selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.spec();
        let parts: Vec<String> = [
            ("mac", s.mac),
            ("uuid", s.uuid),
            ("serial", s.serial),
            ("hostname", s.hostname),
            ("arch", s.arch),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
        .collect();
        if parts.is_empty() {
            f.write_str("(default)")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

/// What an assigned machine boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSpec {
    /// Schematic ID.
    pub schematic: String,
    /// Talos version.
    pub version: Version,
    /// Platform (`metal`, …).
    pub platform: String,
    /// Kernel arguments appended to the schematic's command line.
    pub extra_kernel_args: Vec<String>,
    /// What UEFI HTTP Boot firmware loads.
    pub http_boot: HttpBoot,
}

/// One assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Unique name (the metric label and the handle of `machines rm`).
    pub name: String,
    /// Which machines.
    pub selector: Selector,
    /// What they boot.
    pub boot: BootSpec,
    /// Where it comes from.
    pub source: Source,
}

fn invalid(name: &str, reason: impl Into<String>) -> NetbootError {
    NetbootError::Invalid {
        name: name.to_string(),
        reason: reason.into(),
    }
}

/// Checks an assignment name: 1–[`MAX_NAME`] characters of `[A-Za-z0-9._-]`, starting with a
/// letter or digit.
pub fn check_name(name: &str) -> Result<(), NetbootError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NetbootError::InvalidName {
            name: name.chars().take(MAX_NAME + 1).collect(),
        })
    }
}

/// Checks one extra kernel argument: 1–[`MAX_EXTRA_ARG`] characters, none of which iPXE
/// would expand, quote, split or end a command on (`$`, quotes, `\`, `#`, `;`, whitespace,
/// control characters, non-ASCII).
fn check_kernel_arg(arg: &str) -> Result<(), String> {
    if arg.is_empty() || arg.len() > MAX_EXTRA_ARG {
        return Err(format!(
            "an extra kernel argument must have 1 to {MAX_EXTRA_ARG} characters"
        ));
    }
    if arg.bytes().all(|b| {
        b.is_ascii_graphic() && !matches!(b, b'$' | b'"' | b'\'' | b'\\' | b'#' | b';' | b'`')
    }) {
        Ok(())
    } else {
        Err(
            "extra kernel arguments may use printable ASCII except whitespace, $, quotes, \
             backslash, backquote, # and ; (iPXE would expand or split them)"
                .to_string(),
        )
    }
}

impl Assignment {
    /// Checks `spec` as the assignment `name` from `source`. Checks everything that can be
    /// checked without the stores (the schematic's presence is checked by the caller).
    pub fn from_spec(
        name: &str,
        spec: &AssignmentSpec,
        source: Source,
    ) -> Result<Assignment, NetbootError> {
        check_name(name)?;
        if let Some(n) = &spec.name
            && n != name
        {
            return Err(invalid(
                name,
                format!("the body names {n:?}, the path {name:?}"),
            ));
        }
        let s = &spec.selector;
        let field = |e: ident::IdentError| invalid(name, format!("selector {e}"));
        let selector = Selector {
            mac: s
                .mac
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(field)?,
            uuid: s
                .uuid
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(field)?,
            serial: s
                .serial
                .as_deref()
                .map(ident::serial)
                .transpose()
                .map_err(field)?,
            hostname: s
                .hostname
                .as_deref()
                .map(ident::hostname)
                .transpose()
                .map_err(field)?,
            arch: s
                .arch
                .as_deref()
                .map(ident::arch)
                .transpose()
                .map_err(field)?,
        };
        if !crate::schematic::is_valid_id(&spec.schematic) {
            return Err(invalid(
                name,
                "schematic must be a schematic ID (64 lowercase hex digits)",
            ));
        }
        let version = Version::parse_strict(&spec.version)
            .ok_or_else(|| invalid(name, "version must be a Talos version like v1.11.0"))?;
        let platform = spec
            .platform
            .clone()
            .unwrap_or_else(|| DEFAULT_PLATFORM.to_string());
        if crate::imager::path::platform_defaults(&platform).is_none() {
            return Err(invalid(
                name,
                "platform is not a Talos platform (metal, aws, gcp, azure, vmware, openstack, \
                 nocloud, …)",
            ));
        }
        if spec.extra_kernel_args.len() > MAX_EXTRA_ARGS {
            return Err(invalid(
                name,
                format!("at most {MAX_EXTRA_ARGS} extra kernel arguments"),
            ));
        }
        for arg in &spec.extra_kernel_args {
            check_kernel_arg(arg).map_err(|r| invalid(name, r))?;
        }
        let total: usize = spec.extra_kernel_args.iter().map(|a| a.len() + 1).sum();
        if total > MAX_EXTRA_ARGS_BYTES {
            return Err(invalid(
                name,
                format!("extra kernel arguments exceed {MAX_EXTRA_ARGS_BYTES} bytes"),
            ));
        }
        Ok(Assignment {
            name: name.to_string(),
            selector,
            boot: BootSpec {
                schematic: spec.schematic.clone(),
                version,
                platform,
                extra_kernel_args: spec.extra_kernel_args.clone(),
                http_boot: spec.http_boot,
            },
            source,
        })
    }

    /// The wire form (normalised values; the name included).
    pub fn spec(&self) -> AssignmentSpec {
        AssignmentSpec {
            name: Some(self.name.clone()),
            selector: self.selector.spec(),
            schematic: self.boot.schematic.clone(),
            version: self.boot.version.tag(),
            platform: Some(self.boot.platform.clone()),
            extra_kernel_args: self.boot.extra_kernel_args.clone(),
            http_boot: self.boot.http_boot,
        }
    }

    /// The `/pxe` path booted on `arch` (`metal-amd64`).
    pub fn pxe_path(&self, arch: Arch) -> String {
        format!("{}-{arch}", self.boot.platform)
    }

    /// The `/image` path of the assignment's UKI on `arch`.
    pub fn uki_path(&self, arch: Arch) -> String {
        format!(
            "/image/{}/{}/{}-{arch}-uki.efi",
            self.boot.schematic,
            self.boot.version.tag(),
            self.boot.platform
        )
    }
}

/// Every assignment, by name, from both sources.
#[derive(Debug, Clone, Default)]
pub struct AssignmentSet {
    by_name: BTreeMap<String, Assignment>,
}

impl AssignmentSet {
    /// The set of `assignments`, refused if two share a name or tie, or there are too many.
    pub fn new(assignments: Vec<Assignment>) -> Result<AssignmentSet, NetbootError> {
        let mut set = AssignmentSet::default();
        for a in assignments {
            set.check_insert(&a)?;
            set.by_name.insert(a.name.clone(), a);
        }
        Ok(set)
    }

    /// Checks that `a` may join the set, replacing the assignment of the same name from the
    /// same source: the name is not another source's, the count stays within
    /// [`MAX_ASSIGNMENTS`], and no other assignment ties with it.
    pub fn check_insert(&self, a: &Assignment) -> Result<(), NetbootError> {
        match self.by_name.get(&a.name) {
            Some(old) if old.source != a.source => {
                return Err(NetbootError::NameTaken {
                    name: a.name.clone(),
                    source_of: old.source,
                });
            }
            Some(_) => {}
            None if self.by_name.len() >= MAX_ASSIGNMENTS => {
                return Err(NetbootError::TooMany {
                    max: MAX_ASSIGNMENTS,
                });
            }
            None => {}
        }
        if let Some(other) = self
            .by_name
            .values()
            .find(|o| o.name != a.name && o.selector.ties_with(&a.selector))
        {
            return Err(NetbootError::Tie {
                name: a.name.clone(),
                selector: a.selector.to_string(),
                other: other.name.clone(),
                other_selector: other.selector.to_string(),
                other_source: other.source,
            });
        }
        Ok(())
    }

    /// The set with `a` in it (replacing its namesake), if [`Self::check_insert`] allows.
    pub fn with(&self, a: Assignment) -> Result<AssignmentSet, NetbootError> {
        self.check_insert(&a)?;
        let mut next = self.clone();
        next.by_name.insert(a.name.clone(), a);
        Ok(next)
    }

    /// The set without the assignment `name`.
    pub fn without(&self, name: &str) -> AssignmentSet {
        let mut next = self.clone();
        next.by_name.remove(name);
        next
    }

    /// The set with every assignment of `source` replaced by `assignments`.
    pub fn replace_source(
        &self,
        source: Source,
        assignments: Vec<Assignment>,
    ) -> Result<AssignmentSet, NetbootError> {
        let kept = self
            .by_name
            .values()
            .filter(|a| a.source != source)
            .cloned();
        AssignmentSet::new(kept.chain(assignments).collect())
    }

    /// The assignment `name`.
    pub fn get(&self, name: &str) -> Option<&Assignment> {
        self.by_name.get(name)
    }

    /// Every assignment, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Assignment> {
        self.by_name.values()
    }

    /// Number of assignments.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The default assignment (empty selector), if any.
    pub fn default_assignment(&self) -> Option<&Assignment> {
        self.by_name
            .values()
            .find(|a| a.selector.specificity() == (0, 0))
    }

    /// The assignment the machine that sent `id` boots: the most specific match (ties cannot
    /// be written; were one there, the first name would win), which is the default when
    /// nothing more specific matches.
    pub fn resolve(&self, id: &Identity) -> Option<&Assignment> {
        let mut best: Option<&Assignment> = None;
        for a in self.by_name.values() {
            if a.selector.matches(id)
                && best.is_none_or(|b| a.selector.specificity() > b.selector.specificity())
            {
                best = Some(a);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests;
