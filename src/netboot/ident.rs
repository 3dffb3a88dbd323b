//! Machine identifiers as firmware reports them, normalised so that every spelling of one
//! machine compares equal: MAC addresses (`aa:bb:..`, `aa-bb-..`, `aabb.ccdd.eeff`, bare hex,
//! any case → `aa:bb:cc:dd:ee:ff`), SMBIOS UUIDs (any case, with or without hyphens or braces
//! → hyphenated lower case), serial numbers, host names, and iPXE's `${buildarch}`.
//!
//! Everything here comes from the network (a boot request) or an operator (an assignment);
//! every value has a length budget and a character set, so no parsed value can carry text
//! that iPXE would expand or split when a script shows it.

use std::fmt;
use std::str::FromStr;

use crate::catalog::Arch;

/// Longest serial number accepted (SMBIOS strings are at most 64 bytes in practice).
pub const MAX_SERIAL: usize = 128;
/// Longest host name accepted (a DNS name).
pub const MAX_HOSTNAME: usize = 253;
/// Longest raw query value looked at (a value beyond is refused unread).
pub const MAX_VALUE: usize = 256;
/// Longest boot query looked at (a query beyond is refused unread).
pub const MAX_QUERY: usize = 4096;

/// Why an identifier was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct IdentError {
    /// Which identifier (`mac`, `uuid`, `serial`, `hostname`, `arch`).
    pub field: &'static str,
    /// What is wrong with it (never the value itself: it may be hostile).
    pub reason: String,
}

fn refuse(field: &'static str, reason: impl Into<String>) -> IdentError {
    IdentError {
        field,
        reason: reason.into(),
    }
}

/// A 48-bit MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac([u8; 6]);

impl TryFrom<&[u8]> for Mac {
    type Error = IdentError;

    /// A hardware address of exactly six bytes (a DHCP `chaddr` of an Ethernet client).
    fn try_from(b: &[u8]) -> Result<Mac, IdentError> {
        <[u8; 6]>::try_from(b)
            .map(Mac)
            .map_err(|_| refuse("mac", "not a 6-byte hardware address"))
    }
}

impl FromStr for Mac {
    type Err = IdentError;

    /// `aa:bb:cc:dd:ee:ff`, `aa-bb-cc-dd-ee-ff` (iPXE's `hexhyp`), `aabb.ccdd.eeff`, or twelve
    /// bare hex digits, in any case; one separator kind throughout.
    fn from_str(s: &str) -> Result<Mac, IdentError> {
        let bad = || refuse("mac", "not a MAC address like aa:bb:cc:dd:ee:ff");
        let s = s.trim();
        if s.len() > 17 {
            return Err(bad());
        }
        let groups: Vec<&str> = match (s.contains(':'), s.contains('-'), s.contains('.')) {
            (true, false, false) => s.split(':').collect(),
            (false, true, false) => s.split('-').collect(),
            (false, false, true) => s.split('.').collect(),
            (false, false, false) => vec![s],
            _ => return Err(bad()),
        };
        let width = match groups.len() {
            6 => 2,
            3 => 4,
            1 => 12,
            _ => return Err(bad()),
        };
        let mut hex = String::with_capacity(12);
        for g in &groups {
            if g.len() != width || !g.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            hex.push_str(g);
        }
        let mut out = [0u8; 6];
        hex::decode_to_slice(&hex, &mut out).map_err(|_| bad())?;
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// An SMBIOS system UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MachineUuid(uuid::Uuid);

impl FromStr for MachineUuid {
    type Err = IdentError;

    /// Hyphenated, simple (32 hex digits), braced or `urn:uuid:` form, any case.
    fn from_str(s: &str) -> Result<MachineUuid, IdentError> {
        let s = s.trim();
        if s.len() > 45 {
            return Err(refuse("uuid", "longer than a UUID"));
        }
        uuid::Uuid::try_parse(s).map(MachineUuid).map_err(|_| {
            refuse(
                "uuid",
                "not a UUID like 01234567-89ab-cdef-0123-456789abcdef",
            )
        })
    }
}

impl fmt::Display for MachineUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

/// A serial number: without surrounding spaces, 1–[`MAX_SERIAL`] printable ASCII characters
/// other than `$`, quotes and backslash (kept as given; compared without regard to ASCII
/// case). Control characters are refused anywhere, the ends included.
pub fn serial(s: &str) -> Result<String, IdentError> {
    let s = s.trim_matches(' ');
    if s.is_empty() {
        return Err(refuse("serial", "empty"));
    }
    if s.len() > MAX_SERIAL {
        return Err(refuse(
            "serial",
            format!("longer than {MAX_SERIAL} characters"),
        ));
    }
    if !s
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && !matches!(b, b'$' | b'"' | b'\'' | b'\\'))
    {
        return Err(refuse(
            "serial",
            "only printable ASCII without dollar signs, quotes or backslashes",
        ));
    }
    Ok(s.to_string())
}

/// A host name: without surrounding spaces, lower-cased, 1–[`MAX_HOSTNAME`] characters of
/// `[a-z0-9._-]`.
pub fn hostname(s: &str) -> Result<String, IdentError> {
    let s = s.trim_matches(' ');
    if s.is_empty() {
        return Err(refuse("hostname", "empty"));
    }
    if s.len() > MAX_HOSTNAME {
        return Err(refuse(
            "hostname",
            format!("longer than {MAX_HOSTNAME} characters"),
        ));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(refuse(
            "hostname",
            "only letters, digits, dots, hyphens and underscores",
        ));
    }
    Ok(s.to_ascii_lowercase())
}

/// The architecture of an iPXE `${buildarch}` (`x86_64`, `i386` → amd64; `arm64` → arm64)
/// or of a Talos name (`amd64`, `arm64`; `aarch64` too). An i386 iPXE (`undionly.kpxe`) runs
/// on x86-64 machines, which boot amd64 Talos.
pub fn arch(s: &str) -> Result<Arch, IdentError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "amd64" | "x86_64" | "x86-64" | "i386" | "x86" => Ok(Arch::Amd64),
        "arm64" | "aarch64" => Ok(Arch::Arm64),
        _ => Err(refuse(
            "arch",
            "unsupported architecture (Talos boots amd64 and arm64: iPXE's x86_64, i386 or arm64)",
        )),
    }
}

/// What a boot request said about the machine: each identifier it carried, normalised, and
/// the ones it carried in a form that was not accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// MAC address of the booting interface.
    pub mac: Option<Mac>,
    /// SMBIOS UUID.
    pub uuid: Option<MachineUuid>,
    /// SMBIOS serial number.
    pub serial: Option<String>,
    /// Host name (from DHCP).
    pub hostname: Option<String>,
    /// Architecture, if the request named one.
    pub arch: Option<Arch>,
    /// Identifiers present but refused (the whole query, as `query`, when over its budget).
    pub invalid: Vec<IdentError>,
}

impl Identity {
    /// Parses a boot query (`mac=..&uuid=..&serial=..&hostname=..&arch=..`). Empty values are
    /// absent ones (iPXE expands an unset setting to nothing), unknown keys are ignored, a
    /// repeated key counts once (the first), and a value that does not parse is recorded in
    /// [`Identity::invalid`] instead of being used.
    pub fn from_query(raw: &str) -> Identity {
        let mut id = Identity::default();
        if raw.len() > MAX_QUERY {
            id.invalid.push(refuse(
                "query",
                format!("longer than {MAX_QUERY} bytes: not read"),
            ));
            return id;
        }
        let mut seen: Vec<&'static str> = Vec::new();
        for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            let field: &'static str = match key.as_ref() {
                "mac" => "mac",
                "uuid" => "uuid",
                "serial" => "serial",
                "hostname" => "hostname",
                "arch" => "arch",
                _ => continue,
            };
            if seen.contains(&field) {
                continue;
            }
            seen.push(field);
            if value.trim().is_empty() {
                continue;
            }
            if value.len() > MAX_VALUE {
                id.invalid
                    .push(refuse(field, format!("longer than {MAX_VALUE} bytes")));
                continue;
            }
            let parsed = match field {
                "mac" => value.parse().map(|m| id.mac = Some(m)),
                "uuid" => value.parse().map(|u| id.uuid = Some(u)),
                "serial" => serial(&value).map(|s| id.serial = Some(s)),
                "hostname" => hostname(&value).map(|h| id.hostname = Some(h)),
                _ => arch(&value).map(|a| id.arch = Some(a)),
            };
            if let Err(e) = parsed {
                id.invalid.push(e);
            }
        }
        id
    }

    /// Whether the request identified the machine at all (any valid identifier but `arch`).
    pub fn identified(&self) -> bool {
        self.mac.is_some()
            || self.uuid.is_some()
            || self.serial.is_some()
            || self.hostname.is_some()
    }

    /// The architecture booted: the one named, else amd64.
    pub fn boot_arch(&self) -> Arch {
        self.arch.unwrap_or(Arch::Amd64)
    }

    /// The key boot records of this machine are kept under: its MAC, else UUID, serial, host
    /// name (`mac:aa:bb:..`), or `unknown`.
    pub fn machine_key(&self) -> String {
        if let Some(m) = &self.mac {
            format!("mac:{m}")
        } else if let Some(u) = &self.uuid {
            format!("uuid:{u}")
        } else if let Some(s) = &self.serial {
            format!("serial:{s}")
        } else if let Some(h) = &self.hostname {
            format!("hostname:{h}")
        } else {
            "unknown".to_string()
        }
    }

    /// The identifiers as one line (`mac=aa:.. uuid=(none) ..`), for a script to show.
    pub fn describe(&self) -> String {
        let none = || "(none)".to_string();
        let invalid = |f: &str| self.invalid.iter().any(|e| e.field == f);
        let show = |f: &'static str, v: Option<String>| {
            let v = match v {
                Some(v) => v,
                None if invalid(f) => "(invalid)".to_string(),
                None => none(),
            };
            format!("{f}={v}")
        };
        [
            show("mac", self.mac.map(|m| m.to_string())),
            show("uuid", self.uuid.map(|u| u.to_string())),
            show("serial", self.serial.clone()),
            show("hostname", self.hostname.clone()),
            show("arch", self.arch.map(|a| a.to_string())),
        ]
        .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mac_spelling_is_one_machine() {
        let want = "aa:bb:cc:0d:ee:ff";
        for s in [
            "aa:bb:cc:0d:ee:ff",
            "AA:BB:CC:0D:EE:FF",
            "aa-bb-cc-0d-ee-ff",
            "AA-BB-CC-0D-EE-FF",
            "aabb.cc0d.eeff",
            "aabbcc0deeff",
            " aa:bb:cc:0d:ee:ff ",
        ] {
            assert_eq!(s.parse::<Mac>().unwrap().to_string(), want, "{s}");
        }
        for s in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb-cc:dd:ee:ff",
            "a:bb:cc:dd:ee:fff",
            "gg:bb:cc:dd:ee:ff",
            "aa:bb:cc:dd:ee:f$",
            "aabbccddeef",
            "${net0/mac}",
        ] {
            assert!(s.parse::<Mac>().is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn uuids_compare_without_case_or_form() {
        let want = "4c4c4544-0042-4a10-8058-b4c04f4d4e31";
        for s in [
            "4c4c4544-0042-4a10-8058-b4c04f4d4e31",
            "4C4C4544-0042-4A10-8058-B4C04F4D4E31",
            "4c4c454400424a108058b4c04f4d4e31",
            "{4C4C4544-0042-4A10-8058-B4C04F4D4E31}",
            "urn:uuid:4c4c4544-0042-4a10-8058-b4c04f4d4e31",
        ] {
            assert_eq!(s.parse::<MachineUuid>().unwrap().to_string(), want, "{s}");
        }
        assert!("4c4c4544-0042-4a10-8058".parse::<MachineUuid>().is_err());
        assert!("x".repeat(100).parse::<MachineUuid>().is_err());
    }

    #[test]
    fn buildarch_maps_to_talos_arches() {
        for (s, a) in [
            ("x86_64", Arch::Amd64),
            ("i386", Arch::Amd64),
            ("amd64", Arch::Amd64),
            ("arm64", Arch::Arm64),
            ("AArch64", Arch::Arm64),
        ] {
            assert_eq!(arch(s).unwrap(), a, "{s}");
        }
        for s in ["arm32", "riscv64", "", "amd64;"] {
            assert!(arch(s).is_err(), "{s}");
        }
    }

    #[test]
    fn serials_and_hostnames_have_a_budget_and_a_character_set() {
        assert_eq!(
            serial("  To Be Filled By O.E.M. ").unwrap(),
            "To Be Filled By O.E.M."
        );
        assert!(serial(&"9".repeat(MAX_SERIAL + 1)).is_err());
        for bad in ["${x}", "a\nb", "\nab", "ab\t", "a\"b", "a\\b", "é", ""] {
            assert!(serial(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            hostname("Node-1.Rack.example").unwrap(),
            "node-1.rack.example"
        );
        for bad in ["a b", "a$b", "a/b", "", &"a".repeat(MAX_HOSTNAME + 1)] {
            assert!(hostname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_query_is_parsed_with_budgets_and_empty_values_are_absent() {
        let id = Identity::from_query(
            "mac=52-54-00-12-34-56&uuid=&serial=ABC%20123&hostname=&arch=x86_64&other=1&mac=00:00:00:00:00:01",
        );
        assert_eq!(id.mac.unwrap().to_string(), "52:54:00:12:34:56");
        assert_eq!(id.uuid, None);
        assert_eq!(id.serial.as_deref(), Some("ABC 123"));
        assert_eq!(id.hostname, None);
        assert_eq!(id.arch, Some(Arch::Amd64));
        assert!(id.invalid.is_empty());
        assert_eq!(id.machine_key(), "mac:52:54:00:12:34:56");

        let hostile = Identity::from_query(&format!(
            "mac=%24%7Bx%7D&serial={}&hostname=a%0Aimgexec&arch=arm32",
            "9".repeat(MAX_VALUE + 1)
        ));
        assert!(!hostile.identified());
        let fields: Vec<&str> = hostile.invalid.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["mac", "serial", "hostname", "arch"]);
        let line = hostile.describe();
        assert_eq!(
            line,
            "mac=(invalid) uuid=(none) serial=(invalid) hostname=(invalid) arch=(invalid)"
        );
        let long = Identity::from_query(&"a".repeat(MAX_QUERY + 1));
        assert_eq!(long.invalid[0].field, "query");
    }
}
