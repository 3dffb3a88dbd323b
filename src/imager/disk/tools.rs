//! External tools of disk images, for `image-factory doctor` and clear build errors.
//!
//! Only GRUB images (grub, dual-boot: the amd64 default) and ISOs need them; sd-boot disk
//! images and every FAT volume are built natively.

use std::path::PathBuf;

use crate::imager::tool::ToolError;

/// An external tool: its name, the Debian package that ships it and what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    /// Executable name.
    pub name: &'static str,
    /// Debian package.
    pub package: &'static str,
    /// What needs it.
    pub purpose: &'static str,
}

/// The tools disk images and ISOs use.
pub const TOOLS: &[Tool] = &[
    Tool {
        name: super::xfs::MKFS_XFS,
        package: "xfsprogs",
        purpose: "BOOT partition of grub and dual-boot disk images",
    },
    Tool {
        name: super::grub::GRUB_MKIMAGE,
        package: "grub-common",
        purpose: "GRUB core images of grub and dual-boot disk images and of ISOs",
    },
    Tool {
        name: crate::imager::iso::xorriso::XORRISO,
        package: "xorriso",
        purpose: "ISO images (metal-<arch>.iso)",
    },
    Tool {
        name: crate::imager::overlay::sandbox::BWRAP,
        package: "bubblewrap",
        purpose: "the sandbox SBC overlay installers run in (schematics with an overlay)",
    },
];

/// The tool on `PATH` (or in the sbin directories), if any.
pub fn find(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Each tool with where it was found, or the error that says how to install it.
pub fn check() -> Vec<(Tool, Result<PathBuf, ToolError>)> {
    TOOLS
        .iter()
        .map(|t| {
            let found = find(t.name).ok_or(ToolError::NotFound {
                tool: t.name,
                package: t.package,
                purpose: t.purpose,
            });
            (*t, found)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debian_package_depends_on_every_tool() {
        let manifest = include_str!("../../../Cargo.toml");
        let depends = manifest
            .lines()
            .find_map(|l| l.strip_prefix("depends = \""))
            .and_then(|l| l.strip_suffix('"'))
            .expect("[package.metadata.deb] depends");
        let packages: Vec<&str> = depends.split(',').map(str::trim).collect();
        for t in TOOLS {
            assert!(packages.contains(&t.package), "{} ({})", t.package, t.name);
        }
    }
}
