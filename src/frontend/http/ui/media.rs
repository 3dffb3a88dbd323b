//! What the wizard offers per platform (api spec §3.4, Talos' `platforms` metadata) and the
//! boot media, installer reference and snippets of the result page.

use serde::Serialize;

use crate::catalog::Version;

/// How a platform boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    /// An ISO.
    Iso,
    /// A disk image.
    Disk,
    /// An iPXE script.
    Pxe,
}

/// One platform the wizard offers.
#[derive(Debug)]
pub struct Platform {
    /// Talos platform name (path component).
    pub name: &'static str,
    /// Label shown.
    pub label: &'static str,
    /// Architectures Talos publishes it for.
    pub arches: &'static [&'static str],
    /// Disk image suffix of the UI's default path.
    pub disk_suffix: Option<&'static str>,
    /// Boot methods.
    pub boot: &'static [Boot],
    /// Whether SecureBoot media exist for it.
    pub secureboot: bool,
    /// Oldest Talos version that has it (`major, minor, patch, pre-release`).
    pub min: Option<&'static str>,
}

use Boot::{Disk, Iso, Pxe};

const BOTH: &[&str] = &["amd64", "arm64"];
const AMD64: &[&str] = &["amd64"];

/// Bare metal and the cloud platforms, in upstream's order.
pub const PLATFORMS: &[Platform] = &[
    p(
        "metal",
        "Bare Metal",
        BOTH,
        Some("raw.zst"),
        &[Iso, Disk, Pxe],
        true,
        None,
    ),
    p(
        "aws",
        "Amazon Web Services (AWS)",
        BOTH,
        Some("raw.xz"),
        &[Disk],
        false,
        None,
    ),
    p(
        "gcp",
        "Google Cloud (GCP)",
        BOTH,
        Some("raw.tar.gz"),
        &[Disk],
        false,
        None,
    ),
    p(
        "equinixMetal",
        "Equinix Metal",
        BOTH,
        None,
        &[Pxe],
        false,
        None,
    ),
    p(
        "azure",
        "Microsoft Azure",
        BOTH,
        Some("vhd.xz"),
        &[Disk],
        true,
        None,
    ),
    p(
        "digital-ocean",
        "Digital Ocean",
        AMD64,
        Some("raw.gz"),
        &[Disk],
        false,
        None,
    ),
    p(
        "nocloud",
        "Nocloud",
        BOTH,
        Some("raw.xz"),
        &[Disk, Iso, Pxe],
        true,
        None,
    ),
    p(
        "openstack",
        "OpenStack",
        BOTH,
        Some("raw.xz"),
        &[Disk, Iso, Pxe],
        false,
        None,
    ),
    p(
        "vmware",
        "VMWare",
        BOTH,
        Some("ova"),
        &[Disk, Iso],
        false,
        None,
    ),
    p(
        "akamai",
        "Akamai",
        AMD64,
        Some("raw.gz"),
        &[Disk],
        false,
        Some("1.7.0"),
    ),
    p(
        "cloudstack",
        "Apache CloudStack",
        BOTH,
        Some("raw.gz"),
        &[Disk],
        true,
        Some("1.8.0-alpha.2"),
    ),
    p(
        "hcloud",
        "Hetzner",
        AMD64,
        Some("raw.xz"),
        &[Disk],
        false,
        None,
    ),
    p(
        "oracle",
        "Oracle Cloud",
        BOTH,
        Some("qcow2"),
        &[Disk],
        false,
        None,
    ),
    p(
        "upcloud",
        "UpCloud",
        AMD64,
        Some("raw.xz"),
        &[Disk],
        false,
        None,
    ),
    p("vultr", "Vultr", AMD64, None, &[Iso, Pxe], false, None),
    p(
        "exoscale",
        "Exoscale",
        BOTH,
        Some("qcow2"),
        &[Disk],
        false,
        Some("1.3.0"),
    ),
    p(
        "opennebula",
        "OpenNebula",
        BOTH,
        Some("raw.zst"),
        &[Disk, Iso],
        false,
        Some("1.7.0"),
    ),
    p(
        "scaleway",
        "Scaleway",
        BOTH,
        Some("raw.zst"),
        &[Disk, Iso],
        false,
        None,
    ),
    p(
        "alibabacloud",
        "AlibabaCloud",
        BOTH,
        Some("qcow2"),
        &[Disk],
        false,
        Some("1.14.0-beta.2"),
    ),
];

#[allow(clippy::too_many_arguments)]
const fn p(
    name: &'static str,
    label: &'static str,
    arches: &'static [&'static str],
    disk_suffix: Option<&'static str>,
    boot: &'static [Boot],
    secureboot: bool,
    min: Option<&'static str>,
) -> Platform {
    Platform {
        name,
        label,
        arches,
        disk_suffix,
        boot,
        secureboot,
        min,
    }
}

/// Upstream board names whose overlay has another name (api spec §3.4); every other board
/// is its overlay's name.
const BOARD_OVERLAYS: &[(&str, &str)] = &[
    ("nanopi_r4s", "nanopi-r4s"),
    ("nanopi_r5s", "nanopi-r5s"),
    ("orangepi_r1_plus_lts", "orangepi-r1-plus-lts"),
    ("rockpi_4", "rockpi4"),
    ("rockpi_4c", "rockpi4c"),
];

/// The overlay name of an upstream board name.
pub fn board_overlay(board: &str) -> &str {
    BOARD_OVERLAYS
        .iter()
        .find(|(b, _)| *b == board)
        .map_or(board, |(_, o)| o)
}

impl Platform {
    /// The platform of this name.
    pub fn find(name: &str) -> Option<&'static Platform> {
        PLATFORMS.iter().find(|p| p.name == name)
    }

    /// Whether `version` has this platform.
    pub fn available_in(&self, version: &Version) -> bool {
        self.min
            .and_then(Version::parse_strict)
            .is_none_or(|min| *version >= min)
    }

    /// Whether it boots with `method`.
    pub fn boots(&self, method: Boot) -> bool {
        self.boot.contains(&method)
    }
}

/// One download link of the result page.
#[derive(Debug, Serialize)]
pub struct Link {
    /// What it is.
    pub label: String,
    /// Same-origin path.
    pub href: String,
    /// The file name.
    pub file: String,
    /// Why it may not answer `200` here (shown beside it), if it may not.
    pub note: Option<String>,
}

/// What the result page needs to compute links.
pub struct Target<'a> {
    /// Schematic ID.
    pub id: &'a str,
    /// Version.
    pub version: &'a Version,
    /// Platform (`metal` for SBCs, whose board comes from the overlay).
    pub platform: &'a Platform,
    /// Architecture.
    pub arch: &'a str,
    /// SecureBoot media.
    pub secureboot: bool,
    /// SBC overlay name, if any.
    pub overlay: Option<&'a str>,
}

fn link(t: &Target<'_>, label: &str, file: String, note: Option<String>) -> Link {
    Link {
        label: label.to_string(),
        href: format!("/image/{}/{}/{file}", t.id, t.version.tag()),
        file,
        note,
    }
}

const OVERLAY_NOTE: &str = "answers 501 here: this appliance does not build SBC overlays yet";
const SECUREBOOT_NOTE: &str =
    "answers 400 here: SecureBoot signing keys are not configured on this appliance";

/// The boot media of the platform (disk images, ISO), in the result page's order.
pub fn boot_media(t: &Target<'_>) -> Vec<Link> {
    let (p, a) = (t.platform.name, t.arch);
    let sb = if t.secureboot { "-secureboot" } else { "" };
    let sb_note = t.secureboot.then(|| SECUREBOOT_NOTE.to_string());
    let mut out = Vec::new();
    if t.overlay.is_some() {
        let note = Some(OVERLAY_NOTE.to_string());
        out.push(link(t, "Disk image", format!("metal-{a}.raw.xz"), note));
        return out;
    }
    if let Some(suffix) = t.platform.disk_suffix
        && t.platform.boots(Disk)
    {
        out.push(link(
            t,
            "Disk image",
            format!("{p}-{a}{sb}.{suffix}"),
            sb_note.clone(),
        ));
        if p == "metal" && !t.secureboot {
            out.push(link(
                t,
                "Disk image (qcow2)",
                format!("{p}-{a}.qcow2"),
                None,
            ));
        }
    }
    if t.platform.boots(Iso) {
        out.push(link(t, "ISO", format!("{p}-{a}{sb}.iso"), sb_note));
    }
    out
}

/// Kernel, initramfs, command line and UKI (every platform but an SBC's overlay ones).
pub fn extra_assets(t: &Target<'_>) -> Vec<Link> {
    let (p, a) = (t.platform.name, t.arch);
    if t.secureboot {
        let note = Some(SECUREBOOT_NOTE.to_string());
        return vec![link(
            t,
            "UKI (SecureBoot)",
            format!("{p}-{a}-secureboot-uki.efi"),
            note,
        )];
    }
    let mut out = vec![
        link(t, "Kernel", format!("kernel-{a}"), None),
        link(t, "Kernel command line", format!("cmdline-{p}-{a}"), None),
        link(t, "Initramfs", format!("initramfs-{a}.xz"), None),
    ];
    if t.overlay.is_none() {
        out.push(link(
            t,
            "Unified kernel image (UKI)",
            format!("{p}-{a}-uki.efi"),
            None,
        ));
    }
    out
}

/// The PXE script path (same origin), when the platform boots over PXE.
pub fn pxe_script(t: &Target<'_>) -> Option<String> {
    if !t.platform.boots(Pxe) || t.overlay.is_some() {
        return None;
    }
    let sb = if t.secureboot { "-secureboot" } else { "" };
    Some(format!(
        "/pxe/{}/{}/{}-{}{sb}",
        t.id,
        t.version.tag(),
        t.platform.name,
        t.arch
    ))
}

/// The installer image reference at `host` (api spec §5.2: `installer` before Talos 1.10,
/// `<platform>-installer` from 1.10 on).
pub fn installer_image(t: &Target<'_>, host: &str) -> String {
    let sb = if t.secureboot { "-secureboot" } else { "" };
    let name = if t.version.at_least(1, 10) {
        format!("{}-installer{sb}", t.platform.name)
    } else {
        format!("installer{sb}")
    };
    format!("{host}/{name}/{}:{}", t.id, t.version.tag())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse_strict(s).expect("version")
    }

    #[test]
    fn metal_links_and_installer() {
        let version = v("1.11.0");
        let t = Target {
            id: "abc",
            version: &version,
            platform: Platform::find("metal").expect("metal"),
            arch: "amd64",
            secureboot: false,
            overlay: None,
        };
        let files: Vec<String> = boot_media(&t).into_iter().map(|l| l.file).collect();
        assert_eq!(
            files,
            [
                "metal-amd64.raw.zst",
                "metal-amd64.qcow2",
                "metal-amd64.iso"
            ]
        );
        assert_eq!(
            pxe_script(&t).as_deref(),
            Some("/pxe/abc/v1.11.0/metal-amd64")
        );
        assert_eq!(
            installer_image(&t, "h:1"),
            "h:1/metal-installer/abc:v1.11.0"
        );
        let old = v("1.9.0");
        let t = Target { version: &old, ..t };
        assert_eq!(installer_image(&t, "h"), "h/installer/abc:v1.9.0");
    }

    #[test]
    fn platform_minimum_versions_and_boards() {
        let akamai = Platform::find("akamai").expect("akamai");
        assert!(!akamai.available_in(&v("1.6.9")));
        assert!(akamai.available_in(&v("1.7.0")));
        assert!(
            Platform::find("metal")
                .expect("m")
                .available_in(&v("1.0.0"))
        );
        assert_eq!(board_overlay("rockpi_4"), "rockpi4");
        assert_eq!(board_overlay("rpi_generic"), "rpi_generic");
    }
}
