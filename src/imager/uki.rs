//! Unified kernel images (imager spec §7.1, §7.2, §7.5): the release's systemd stub with
//! `.osrel`, `.cmdline`, `.uname`, `.linux`, `.initrd` and (target ≥ 1.10) the UKI profile
//! sections appended, and for Secure Boot `.pcrpkey` and `.pcrsig` (computed by
//! `signed_uki`); the Authenticode signature is a separate step over the produced file.
//!
//! Deviation: upstream also appends `.splash` (Sidero's 640 KB BMP); we do not ship that image,
//! so no `.splash` section is written (see `docs/imager-uki.md`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

pub use super::pe::{AssembleOptions as UkiOptions, PeError as UkiError, PeLayout as UkiLayout};
use super::pe::{NewSection, append_sections};

/// A section payload: a reader that yields exactly `len` bytes (streamed, never buffered whole).
pub struct Payload<'a> {
    reader: Box<dyn Read + 'a>,
    len: u64,
}

impl<'a> Payload<'a> {
    /// A payload from a reader and its exact length.
    pub fn reader(reader: impl Read + 'a, len: u64) -> Payload<'a> {
        Payload {
            reader: Box::new(reader),
            len,
        }
    }

    /// A payload from in-memory bytes.
    pub fn bytes(bytes: impl AsRef<[u8]> + 'a) -> Payload<'a> {
        let len = bytes.as_ref().len() as u64;
        Payload::reader(io::Cursor::new(bytes), len)
    }

    /// The exact length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Payload<'static> {
    /// A payload streamed from the file at `path`.
    pub fn file(path: &Path) -> io::Result<Payload<'static>> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Payload::reader(file, len))
    }
}

/// One UKI profile (systemd ≥ 257 multi-profile UKIs; Talos target ≥ 1.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UkiProfile {
    /// Profile ID (`main`, `reset`, `reset-maintenance`).
    pub id: String,
    /// Menu title, when set.
    pub title: Option<String>,
    /// The profile's own kernel command line (replaces the base `.cmdline`), when set.
    pub cmdline: Option<String>,
}

impl UkiProfile {
    /// The default `main` profile (no title, base cmdline).
    pub fn main() -> UkiProfile {
        UkiProfile {
            id: "main".into(),
            title: None,
            cmdline: None,
        }
    }

    /// The ISO's `reset` profile: wipes the system disk.
    pub fn reset(base_cmdline: &str) -> UkiProfile {
        UkiProfile {
            id: "reset".into(),
            title: Some("Reset system disk".into()),
            cmdline: Some(format!("{base_cmdline} talos.experimental.wipe=system")),
        }
    }

    /// The disk image / installer `reset-maintenance` profile: wipes EPHEMERAL and STATE.
    pub fn reset_maintenance(base_cmdline: &str) -> UkiProfile {
        UkiProfile {
            id: "reset-maintenance".into(),
            title: Some("Reset to maintenance mode".into()),
            cmdline: Some(format!(
                "{base_cmdline} talos.experimental.wipe=system:EPHEMERAL,STATE"
            )),
        }
    }

    /// The `.profile` section text: `ID=<id>` plus `\nTITLE=<title>`, no trailing newline.
    pub fn section_text(&self) -> String {
        match &self.title {
            Some(t) => format!("ID={}\nTITLE={t}", self.id),
            None => format!("ID={}", self.id),
        }
    }
}

/// What the UKI is built for; selects the extra profile (imager spec §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UkiPurpose {
    /// The `<platform>-<arch>-uki.efi` output: `main` only.
    Uki,
    /// Inside an ISO: `main` + `reset`.
    Iso,
    /// Inside a disk image: `main` + `reset-maintenance`.
    DiskImage,
    /// Inside an installer image: `main` + `reset-maintenance`.
    Installer,
}

/// The profiles for `purpose`; empty when the target has no UKI profiles (target < 1.10).
pub fn standard_profiles(
    purpose: UkiPurpose,
    base_cmdline: &str,
    target_has_profiles: bool,
) -> Vec<UkiProfile> {
    if !target_has_profiles {
        return Vec::new();
    }
    let mut profiles = vec![UkiProfile::main()];
    match purpose {
        UkiPurpose::Uki => {}
        UkiPurpose::Iso => profiles.push(UkiProfile::reset(base_cmdline)),
        UkiPurpose::DiskImage | UkiPurpose::Installer => {
            profiles.push(UkiProfile::reset_maintenance(base_cmdline))
        }
    }
    profiles
}

/// The `.osrel` text for product `name` (default `Talos`) at `version`, each line newline-terminated.
pub fn os_release(name: &str, version: &str) -> String {
    let id = name.to_lowercase().replace(' ', "_");
    format!(
        "NAME=\"{name}\"\n\
         ID={id}\n\
         VERSION_ID={version}\n\
         PRETTY_NAME=\"{name} ({version})\"\n\
         HOME_URL=\"https://www.talos.dev/\"\n\
         BUG_REPORT_URL=\"https://github.com/siderolabs/talos/issues\"\n\
         VENDOR_NAME=\"Sidero Labs\"\n\
         VENDOR_URL=\"https://www.siderolabs.com/\"\n"
    )
}

/// Bytes of a kernel's head [`kernel_release`] may need (setup_sects ≤ 255, plus the boot sector).
pub const KERNEL_HEAD_LEN: usize = 256 * 512;

/// The kernel release (`6.18.45-talos`) from an x86 bzImage's setup header, or `None` when the
/// kernel is not a bzImage (arm64) or carries no version string. `head` = the file's first bytes.
pub fn kernel_release(head: &[u8]) -> Option<String> {
    if head.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let setup_sects = usize::from(*head.get(0x1F1)?);
    let pointer = usize::from(u16::from_le_bytes([*head.get(0x20E)?, *head.get(0x20F)?]));
    if pointer == 0 || pointer > setup_sects * 512 {
        return None;
    }
    let start = pointer + 0x200;
    let rest = head.get(start..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    let release = text.split(' ').next().unwrap_or("");
    (!release.is_empty()).then(|| release.to_string())
}

/// Reads the head of a kernel from `reader` and extracts its release (see [`kernel_release`]).
pub fn read_kernel_release(reader: impl Read) -> io::Result<Option<String>> {
    let mut head = Vec::with_capacity(KERNEL_HEAD_LEN);
    reader.take(KERNEL_HEAD_LEN as u64).read_to_end(&mut head)?;
    Ok(kernel_release(&head))
}

/// Everything a UKI is made of (besides the stub).
pub struct UkiParts<'a> {
    /// `.osrel` text (see [`os_release`]).
    pub osrel: String,
    /// Base kernel command line (no trailing newline).
    pub cmdline: String,
    /// Kernel release for `.uname`; omitted when `None`.
    pub uname: Option<String>,
    /// The kernel (`.linux`).
    pub kernel: Payload<'a>,
    /// The initramfs with extensions (`.initrd`).
    pub initrd: Payload<'a>,
    /// UKI profiles in order (empty for target < 1.10); see [`standard_profiles`].
    pub profiles: Vec<UkiProfile>,
    /// Secure Boot: the PCR public key (`.pcrpkey`, before `.linux`).
    pub pcrpkey: Option<String>,
    /// Secure Boot: one `.pcrsig` per profile, each after its profile's sections (without
    /// profiles: one, placed last). Empty for unsigned UKIs.
    pub pcrsigs: Vec<String>,
}

/// The appended sections in file order, for `parts` (shared by assembly and tests).
pub fn section_names(parts: &UkiParts<'_>) -> Vec<&'static str> {
    let mut names = vec![".osrel", ".cmdline"];
    if parts.uname.is_some() {
        names.push(".uname");
    }
    if parts.pcrpkey.is_some() {
        names.push(".pcrpkey");
    }
    names.extend([".linux", ".initrd"]);
    for (i, p) in parts.profiles.iter().enumerate() {
        names.push(".profile");
        if p.cmdline.is_some() {
            names.push(".cmdline");
        }
        if i < parts.pcrsigs.len() {
            names.push(".pcrsig");
        }
    }
    if parts.profiles.is_empty() && !parts.pcrsigs.is_empty() {
        names.push(".pcrsig");
    }
    names
}

/// Assembles an unsigned UKI from `stub` (the release's `systemd-stub.efi`) and `parts` into
/// `out`, streaming kernel and initramfs. Returns the layout (for checks and later signing).
pub fn assemble_uki(
    stub: &[u8],
    parts: UkiParts<'_>,
    opts: &UkiOptions,
    out: &mut impl Write,
) -> Result<UkiLayout, UkiError> {
    let UkiParts {
        osrel,
        cmdline,
        uname,
        kernel,
        initrd,
        profiles,
        pcrpkey,
        pcrsigs,
    } = parts;
    let mut sections = vec![
        NewSection::bytes(".osrel", osrel.into_bytes()),
        NewSection::bytes(".cmdline", cmdline.into_bytes()),
    ];
    if let Some(uname) = uname {
        sections.push(NewSection::bytes(".uname", uname.into_bytes()));
    }
    if let Some(key) = pcrpkey {
        sections.push(NewSection::bytes(".pcrpkey", key.into_bytes()));
    }
    for (name, p) in [(".linux", kernel), (".initrd", initrd)] {
        sections.push(NewSection {
            name: name.into(),
            len: p.len,
            data: p.reader,
        });
    }
    let no_profiles = profiles.is_empty();
    let mut pcrsigs = pcrsigs.into_iter();
    for p in profiles {
        sections.push(NewSection::bytes(".profile", p.section_text().into_bytes()));
        if let Some(c) = p.cmdline {
            sections.push(NewSection::bytes(".cmdline", c.into_bytes()));
        }
        if let Some(sig) = pcrsigs.next() {
            sections.push(NewSection::bytes(".pcrsig", sig.into_bytes()));
        }
    }
    if no_profiles && let Some(sig) = pcrsigs.next() {
        sections.push(NewSection::bytes(".pcrsig", sig.into_bytes()));
    }
    append_sections(stub, sections, opts, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osrel_text() {
        assert_eq!(
            os_release("Talos", "v1.10.0"),
            "NAME=\"Talos\"\nID=talos\nVERSION_ID=v1.10.0\nPRETTY_NAME=\"Talos (v1.10.0)\"\n\
             HOME_URL=\"https://www.talos.dev/\"\n\
             BUG_REPORT_URL=\"https://github.com/siderolabs/talos/issues\"\n\
             VENDOR_NAME=\"Sidero Labs\"\nVENDOR_URL=\"https://www.siderolabs.com/\"\n"
        );
        assert!(os_release("My OS", "1").contains("ID=my_os\n"));
    }

    #[test]
    fn profiles_per_purpose() {
        assert!(standard_profiles(UkiPurpose::Iso, "a", false).is_empty());
        assert_eq!(
            standard_profiles(UkiPurpose::Uki, "a", true),
            vec![UkiProfile::main()]
        );
        let iso = standard_profiles(UkiPurpose::Iso, "a=1", true);
        assert_eq!(iso[1].section_text(), "ID=reset\nTITLE=Reset system disk");
        assert_eq!(
            iso[1].cmdline.as_deref(),
            Some("a=1 talos.experimental.wipe=system")
        );
        let inst = standard_profiles(UkiPurpose::Installer, "a=1", true);
        assert_eq!(
            inst[1].section_text(),
            "ID=reset-maintenance\nTITLE=Reset to maintenance mode"
        );
        assert_eq!(
            inst[1].cmdline.as_deref(),
            Some("a=1 talos.experimental.wipe=system:EPHEMERAL,STATE")
        );
        assert_eq!(UkiProfile::main().section_text(), "ID=main");
    }

    fn bzimage_head(version: &[u8], pointer: u16, setup_sects: u8) -> Vec<u8> {
        let mut h = vec![0u8; 0x200 + usize::from(setup_sects) * 512];
        h[0x1F1] = setup_sects;
        h[0x202..0x206].copy_from_slice(b"HdrS");
        h[0x20E..0x210].copy_from_slice(&pointer.to_le_bytes());
        let at = usize::from(pointer) + 0x200;
        if h.len() < at + version.len() {
            h.resize(at + version.len(), 0);
        }
        h[at..at + version.len()].copy_from_slice(version);
        h
    }

    #[test]
    fn uname_from_bzimage_header() {
        let h = bzimage_head(b"6.18.45-talos (builder@x) #1 SMP\0", 0x1000, 16);
        assert_eq!(kernel_release(&h).as_deref(), Some("6.18.45-talos"));
        // Pointer past the setup sectors, no HdrS, no NUL: unknown.
        assert_eq!(kernel_release(&bzimage_head(b"x\0", 0x1000, 7)), None);
        assert_eq!(kernel_release(&bzimage_head(b"x\0", 0, 7)), None);
        let mut no_magic = h.clone();
        no_magic[0x202] = b'X';
        assert_eq!(kernel_release(&no_magic), None);
        // Cut inside the version string: no terminating NUL, unknown.
        assert_eq!(kernel_release(&h[..0x1205]), None);
        assert_eq!(kernel_release(b"MZ"), None);
        assert_eq!(
            read_kernel_release(&h[..]).unwrap().as_deref(),
            Some("6.18.45-talos")
        );
    }
}
