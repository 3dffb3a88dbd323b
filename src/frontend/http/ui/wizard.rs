//! The wizard's state checked against the imported catalog, the step it is at, and the
//! schematic document it describes.

use std::sync::Arc;

use super::super::catalog::offered_versions;
use super::super::error::ApiError;
use super::super::state::AppState;
use super::document::{prefill, query_url};
use super::form::Params;
use super::media::{Platform, board_overlay};
use crate::catalog::{Release, Version};

/// Hardware types of the first step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hardware {
    /// Bare metal.
    Metal,
    /// A cloud platform.
    Cloud,
    /// A single-board computer.
    Sbc,
}

impl Hardware {
    /// The `target` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Hardware::Metal => "metal",
            Hardware::Cloud => "cloud",
            Hardware::Sbc => "sbc",
        }
    }

    fn parse(s: &str) -> Result<Hardware, ApiError> {
        match s {
            "metal" => Ok(Hardware::Metal),
            "cloud" => Ok(Hardware::Cloud),
            "sbc" => Ok(Hardware::Sbc),
            _ => Err(bad(format!(
                "invalid target {s:?}: expected metal, cloud or sbc"
            ))),
        }
    }
}

/// The wizard's steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Hardware type.
    Hardware,
    /// Talos version.
    Version,
    /// Cloud platform.
    Platform,
    /// SBC board.
    Board,
    /// Architecture and SecureBoot.
    Arch,
    /// System extensions.
    Extensions,
    /// Kernel arguments, bootloader, META, embedded config, overlay options.
    Options,
    /// The schematic is complete: create it and show the result.
    Result,
}

impl Step {
    /// The label in the step list.
    pub fn label(self) -> &'static str {
        match self {
            Step::Hardware => "Hardware",
            Step::Version => "Talos version",
            Step::Platform => "Platform",
            Step::Board => "Board",
            Step::Arch => "Architecture",
            Step::Extensions => "Extensions",
            Step::Options => "Customization",
            Step::Result => "Schematic",
        }
    }
}

/// An SBC board: its overlay from the release's catalog.
#[derive(Debug, Clone)]
pub struct Board {
    /// The `board` value as given.
    pub param: String,
    /// Overlay name.
    pub overlay: String,
    /// Overlay image (repository path).
    pub image: String,
}

/// Values of a stored schematic that pre-fill the wizard (`?schematic-id=`).
#[derive(Debug, Default, Clone)]
pub struct Prefill {
    /// Its ID.
    pub id: String,
    /// Official extensions.
    pub extensions: Vec<String>,
    /// Kernel arguments joined by spaces.
    pub cmdline: String,
    /// Bootloader (`auto` when unset).
    pub bootloader: String,
    /// Overlay name, if any.
    pub overlay: Option<String>,
    /// Overlay options as YAML text.
    pub overlay_options: String,
    /// META as `0xKEY=VALUE` lines.
    pub meta: String,
    /// Embedded machine configuration.
    pub embedded_config: String,
}

/// The wizard's state, every value checked.
pub struct Wizard {
    /// Hardware type.
    pub target: Option<Hardware>,
    /// Talos version (offered by this appliance).
    pub version: Option<Version>,
    /// Its imported release.
    pub release: Option<Arc<Release>>,
    /// Platform (`metal` for bare metal and SBCs).
    pub platform: Option<&'static Platform>,
    /// SBC board.
    pub board: Option<Board>,
    /// Architecture.
    pub arch: Option<String>,
    /// SecureBoot media.
    pub secureboot: bool,
    /// Official extensions, sorted; `None` before the extensions step.
    pub extensions: Option<Vec<String>>,
    /// The options step was submitted.
    pub cmdline_set: bool,
    /// Kernel command line text.
    pub cmdline: String,
    /// Bootloader (`auto` = unset).
    pub bootloader: String,
    /// Overlay options YAML text.
    pub overlay_options: String,
    /// META lines, each `KEY=VALUE`.
    pub meta: Vec<(u8, String)>,
    /// META as given.
    pub meta_text: String,
    /// Embedded machine configuration.
    pub embedded_config: String,
    /// Values of `?schematic-id=`.
    pub prefill: Option<Prefill>,
    /// The extension filter (`None` when the filter was not used).
    pub search: Option<String>,
    /// Extensions ticked on the extensions step before `Next`.
    pub selected_extensions: Vec<String>,
}

fn bad(message: String) -> ApiError {
    ApiError::BadRequest(message)
}

/// Bootloader values of the options step.
pub const BOOTLOADERS: &[&str] = &["auto", "dual-boot", "sd-boot", "grub"];

/// Whether `version` offers the bootloader choice (upstream: Talos >= 1.12.0-alpha.2).
pub fn offers_bootloader(version: &Version) -> bool {
    Version::parse_strict("1.12.0-alpha.2").is_some_and(|min| *version >= min)
}

/// Whether `version` takes an embedded machine configuration (Talos >= 1.12).
pub fn offers_embedded_config(version: &Version) -> bool {
    version.at_least(1, 12)
}

/// Whether SecureBoot media can be asked for: Talos >= 1.5 on a SecureBoot platform.
pub fn offers_secureboot(version: &Version, platform: &Platform) -> bool {
    platform.secureboot && version.at_least(1, 5)
}

/// Parses META lines `KEY=VALUE` (key decimal or `0x` hex, 0..=255; blank lines skipped).
fn parse_meta(text: &str) -> Result<Vec<(u8, String)>, ApiError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(bad(format!(
                "META line {}: expected KEY=VALUE (KEY 0..255, decimal or 0x hex)",
                n + 1
            )));
        };
        let k = k.trim();
        let key = match k.strip_prefix("0x").or_else(|| k.strip_prefix("0X")) {
            Some(hex) => u8::from_str_radix(hex, 16),
            None => k.parse::<u8>(),
        }
        .map_err(|_| {
            bad(format!(
                "META line {}: key {k:?} is not a number from 0 to 255",
                n + 1
            ))
        })?;
        out.push((key, v.to_string()));
    }
    Ok(out)
}

impl Wizard {
    /// Checks `p` against the catalog: every value given must be one the wizard offers.
    pub fn resolve(st: &AppState, p: Params) -> Result<Wizard, ApiError> {
        let target = p.target.as_deref().map(Hardware::parse).transpose()?;
        let (version, release) = match p.version.as_deref() {
            None => (None, None),
            Some(raw) => {
                let v = Version::parse_strict(raw)
                    .ok_or_else(|| bad(format!("invalid Talos version {raw:?}")))?;
                if !offered_versions(st)?.contains(&v) {
                    return Err(bad(format!(
                        "Talos version {} is not imported on this appliance",
                        v.tag()
                    )));
                }
                let release = st
                    .releases()
                    .get(&v.tag())?
                    .ok_or_else(|| bad(format!("Talos version {} is not imported", v.tag())))?;
                (Some(v), Some(release))
            }
        };
        let prefill = match p.schematic_id.as_deref() {
            None => None,
            Some(id) => Some(prefill(st, id)?),
        };
        let mut w = Wizard {
            target,
            version,
            release,
            platform: None,
            board: None,
            arch: None,
            secureboot: false,
            extensions: None,
            cmdline_set: p.cmdline_set,
            cmdline: p.cmdline.clone().unwrap_or_default(),
            bootloader: p.bootloader.clone().unwrap_or_else(|| "auto".into()),
            overlay_options: p.overlay_options.clone().unwrap_or_default(),
            meta: Vec::new(),
            meta_text: p.meta.clone().unwrap_or_default(),
            embedded_config: p.embedded_config.clone().unwrap_or_default(),
            prefill,
            search: p.search.clone(),
            selected_extensions: p.selected_extensions.clone(),
        };
        w.resolve_platform(&p)?;
        w.resolve_arch(&p)?;
        w.resolve_extensions(&p)?;
        w.resolve_options()?;
        Ok(w)
    }

    fn resolve_platform(&mut self, p: &Params) -> Result<(), ApiError> {
        let (Some(target), Some(version), Some(release)) =
            (self.target, self.version.as_ref(), self.release.as_ref())
        else {
            return Ok(());
        };
        match target {
            Hardware::Metal => self.platform = Platform::find("metal"),
            Hardware::Cloud => {
                if let Some(name) = p.platform.as_deref() {
                    let platform = Platform::find(name)
                        .filter(|pl| pl.name != "metal" && pl.available_in(version))
                        .ok_or_else(|| {
                            bad(format!(
                                "platform {name:?} is not a cloud platform of Talos {}",
                                version.tag()
                            ))
                        })?;
                    self.platform = Some(platform);
                }
            }
            Hardware::Sbc => {
                if !version.at_least(1, 7) {
                    return Err(bad(format!(
                        "single-board computers need Talos 1.7 or later, not {}",
                        version.tag()
                    )));
                }
                if let Some(board) = p.board.as_deref() {
                    let overlay = board_overlay(board);
                    let entry = release
                        .overlays
                        .iter()
                        .find(|o| o.name == overlay)
                        .ok_or_else(|| {
                            bad(format!(
                                "board {board:?} has no overlay in the catalog of Talos {}",
                                version.tag()
                            ))
                        })?;
                    self.board = Some(Board {
                        param: board.to_string(),
                        overlay: entry.name.clone(),
                        image: entry.image.clone(),
                    });
                    self.platform = Platform::find("metal");
                }
            }
        }
        Ok(())
    }

    /// Architectures offered: the platform's (arm64 alone for SBCs) that the release holds.
    pub fn arch_choices(&self) -> Vec<&'static str> {
        let (Some(platform), Some(release)) = (self.platform, self.release.as_ref()) else {
            return Vec::new();
        };
        let arches: &[&'static str] = if self.target == Some(Hardware::Sbc) {
            &["arm64"]
        } else {
            platform.arches
        };
        arches
            .iter()
            .copied()
            .filter(|a| release.arches.contains_key(*a))
            .collect()
    }

    /// Whether the architecture step is shown (more than one choice, or a SecureBoot platform).
    pub fn shows_arch_step(&self) -> bool {
        let sb = match (self.version.as_ref(), self.platform) {
            (Some(v), Some(p)) => offers_secureboot(v, p) && self.board.is_none(),
            _ => false,
        };
        self.arch_choices().len() > 1 || sb
    }

    fn resolve_arch(&mut self, p: &Params) -> Result<(), ApiError> {
        let Some(platform) = self.platform else {
            return Ok(());
        };
        let choices = self.arch_choices();
        if choices.is_empty() {
            return Err(bad(format!(
                "no architecture of {} is imported for this version",
                platform.label
            )));
        }
        match p.arch.as_deref() {
            Some(a) => {
                let a = choices.iter().find(|c| **c == a).ok_or_else(|| {
                    bad(format!(
                        "architecture {a:?} is not offered for {} (imported: {})",
                        platform.label,
                        choices.join(", ")
                    ))
                })?;
                self.arch = Some(a.to_string());
            }
            None if !self.shows_arch_step() => {
                self.arch = choices.first().map(|a| a.to_string());
            }
            None => {}
        }
        self.secureboot = match p.secureboot.as_deref() {
            None | Some("false") | Some("") => false,
            Some("true") | Some("on") => true,
            Some(other) => return Err(bad(format!("invalid secureboot value {other:?}"))),
        };
        if self.secureboot
            && !(self.version.as_ref()).is_some_and(|v| offers_secureboot(v, platform))
        {
            return Err(bad(format!(
                "SecureBoot is not offered for {} on this Talos version",
                platform.label
            )));
        }
        Ok(())
    }

    fn resolve_extensions(&mut self, p: &Params) -> Result<(), ApiError> {
        let chosen = if p.extensions_done {
            Some(p.selected_extensions.clone())
        } else {
            p.extensions.clone()
        };
        let Some(mut list) = chosen else {
            return Ok(());
        };
        list.retain(|e| e != "-");
        let release = self
            .release
            .as_ref()
            .ok_or_else(|| bad("extensions need a Talos version".into()))?;
        for e in &list {
            if !release.extensions.iter().any(|x| &x.name == e) {
                return Err(bad(format!(
                    "extension {e:?} is not in the catalog of Talos {}",
                    release.version
                )));
            }
        }
        list.sort();
        list.dedup();
        self.extensions = Some(list);
        Ok(())
    }

    fn resolve_options(&mut self) -> Result<(), ApiError> {
        if !BOOTLOADERS.contains(&self.bootloader.as_str()) {
            return Err(bad(format!(
                "invalid bootloader {:?}: expected one of {}",
                self.bootloader,
                BOOTLOADERS.join(", ")
            )));
        }
        self.meta = parse_meta(&self.meta_text)?;
        if !self.embedded_config.trim().is_empty()
            && !self.version.as_ref().is_some_and(offers_embedded_config)
        {
            return Err(bad(
                "an embedded machine configuration needs Talos 1.12 or later".into(),
            ));
        }
        if !self.overlay_options.trim().is_empty() && self.board.is_none() {
            return Err(bad("overlay options need a single-board computer".into()));
        }
        for line in self.overlay_options.lines() {
            if line.starts_with("---") || line.starts_with("...") {
                return Err(bad(
                    "overlay options: one YAML mapping, without document markers".into(),
                ));
            }
        }
        Ok(())
    }

    /// The step the state is at.
    pub fn step(&self) -> Step {
        let Some(target) = self.target else {
            return Step::Hardware;
        };
        if self.version.is_none() {
            return Step::Version;
        }
        match target {
            Hardware::Cloud if self.platform.is_none() => return Step::Platform,
            Hardware::Sbc if self.board.is_none() => return Step::Board,
            _ => {}
        }
        if self.arch.is_none() {
            return Step::Arch;
        }
        if self.extensions.is_none() {
            return Step::Extensions;
        }
        if !self.cmdline_set {
            return Step::Options;
        }
        Step::Result
    }

    /// The steps this state walks through, in order (the arch step only where shown).
    pub fn flow(&self) -> Vec<Step> {
        let mut out = vec![Step::Hardware, Step::Version];
        match self.target {
            Some(Hardware::Cloud) => out.push(Step::Platform),
            Some(Hardware::Sbc) => out.push(Step::Board),
            _ => {}
        }
        if self.platform.is_none() || self.shows_arch_step() {
            out.push(Step::Arch);
        }
        out.extend([Step::Extensions, Step::Options, Step::Result]);
        out
    }

    /// The parameters decided by the steps before `upto` (plus `schematic-id`), in URL order.
    pub fn pairs(&self, upto: Step) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if upto > Step::Hardware
            && let Some(t) = self.target
        {
            out.push(("target", t.as_str().to_string()));
        }
        if upto > Step::Version
            && let Some(v) = &self.version
        {
            out.push(("version", v.to_string()));
        }
        if upto > Step::Board {
            if let Some(b) = &self.board {
                out.push(("board", b.param.clone()));
            } else if self.target == Some(Hardware::Cloud)
                && let Some(p) = self.platform
            {
                out.push(("platform", p.name.to_string()));
            }
        }
        if upto > Step::Arch
            && let Some(a) = &self.arch
        {
            out.push(("arch", a.clone()));
            out.push(("secureboot", self.secureboot.to_string()));
        }
        if upto > Step::Extensions
            && let Some(list) = &self.extensions
        {
            if list.is_empty() {
                out.push(("extensions", "-".to_string()));
            }
            out.extend(list.iter().map(|e| ("extensions", e.clone())));
        }
        if upto > Step::Options {
            out.push(("cmdline-set", "true".to_string()));
            out.push(("cmdline", self.cmdline.clone()));
            if self.bootloader != "auto" {
                out.push(("bootloader", self.bootloader.clone()));
            }
            if !self.overlay_options.is_empty() {
                out.push(("overlay-options", self.overlay_options.clone()));
            }
            if !self.meta_text.is_empty() {
                out.push(("meta", self.meta_text.clone()));
            }
        }
        if let Some(p) = &self.prefill {
            out.push(("schematic-id", p.id.clone()));
        }
        out
    }

    /// `/?<pairs(upto)>`.
    pub fn url(&self, upto: Step) -> String {
        query_url("/", &self.pairs(upto))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_lines() {
        assert_eq!(
            parse_meta("0xa=x=y\n\n12= z").expect("parses"),
            [(10, "x=y".to_string()), (12, " z".to_string())]
        );
        assert!(parse_meta("256=x").is_err());
        assert!(parse_meta("novalue").is_err());
    }
}
