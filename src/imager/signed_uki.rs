//! Secure Boot UKIs (imager spec §7.3, §7.4): the measured sections of every UKI profile, the
//! `.pcrsig` signed for each, and the Authenticode signature over the assembled file.

use std::fs::File;
use std::path::Path;

use crate::trust::secureboot::SecureBootKeys;
use crate::trust::secureboot::pcr::{SectionDigest, pcrsig};

use super::error::ImagerError;
use super::pe::PeHeaders;
use super::uki::UkiProfile;

/// What PCR 11 measures of a UKI, besides its profiles.
pub struct MeasuredParts<'a> {
    /// `.osrel` text.
    pub osrel: &'a str,
    /// Base `.cmdline`.
    pub cmdline: &'a str,
    /// `.uname`, when present.
    pub uname: Option<&'a str>,
    /// The stub's `.sbat` bytes (see [`stub_sbat`]).
    pub sbat: &'a [u8],
    /// The kernel file (`.linux`).
    pub kernel: &'a Path,
    /// The initramfs file (`.initrd`).
    pub initrd: &'a Path,
}

/// The stub's `.sbat` section as measured: its first VirtualSize bytes.
pub fn stub_sbat(stub: &[u8]) -> Result<Vec<u8>, ImagerError> {
    let headers = PeHeaders::parse(stub).map_err(ImagerError::internal("systemd stub"))?;
    let section = headers.section(".sbat").ok_or_else(|| {
        ImagerError::internal("systemd stub")(super::pe::PeError::MissingSection(".sbat".into()))
    })?;
    Ok(headers
        .section_bytes(stub, section)
        .map_err(ImagerError::internal("systemd stub"))?
        .to_vec())
}

/// The section digests of the base UKI (kernel and initramfs streamed once each).
fn base_sections(
    keys: &SecureBootKeys,
    parts: &MeasuredParts<'_>,
) -> Result<Vec<SectionDigest>, ImagerError> {
    let mut sections = vec![
        SectionDigest::of_reader(".linux", File::open(parts.kernel)?)?,
        SectionDigest::of_bytes(".osrel", parts.osrel.as_bytes()),
        SectionDigest::of_bytes(".cmdline", parts.cmdline.as_bytes()),
        SectionDigest::of_reader(".initrd", File::open(parts.initrd)?)?,
    ];
    if let Some(uname) = parts.uname {
        sections.push(SectionDigest::of_bytes(".uname", uname.as_bytes()));
    }
    sections.push(SectionDigest::of_bytes(".sbat", parts.sbat));
    sections.push(SectionDigest::of_bytes(
        ".pcrpkey",
        keys.pcr_public_pem().as_bytes(),
    ));
    Ok(sections)
}

/// The measured section set of each profile: the base sections, the profile's `.profile`, and
/// its own `.cmdline` in place of the base one. Without profiles: the base set alone.
pub fn measured_sets(base: &[SectionDigest], profiles: &[UkiProfile]) -> Vec<Vec<SectionDigest>> {
    if profiles.is_empty() {
        return vec![base.to_vec()];
    }
    profiles
        .iter()
        .map(|p| {
            let mut set: Vec<SectionDigest> = base
                .iter()
                .filter(|s| !(p.cmdline.is_some() && s.name == ".cmdline"))
                .cloned()
                .collect();
            if let Some(c) = &p.cmdline {
                set.push(SectionDigest::of_bytes(".cmdline", c.as_bytes()));
            }
            set.push(SectionDigest::of_bytes(
                ".profile",
                p.section_text().as_bytes(),
            ));
            set
        })
        .collect()
}

/// The `.pcrsig` texts, one per profile (one in all without profiles).
pub fn pcr_signatures(
    keys: &SecureBootKeys,
    parts: &MeasuredParts<'_>,
    profiles: &[UkiProfile],
) -> Result<Vec<String>, ImagerError> {
    let base = base_sections(keys, parts)?;
    measured_sets(&base, profiles)
        .iter()
        .map(|set| pcrsig(keys, set).map_err(ImagerError::internal("PCR signature")))
        .collect()
}
