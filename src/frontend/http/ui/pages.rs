//! One function per wizard page: the values its template shows.

use minijinja::{Value, context};
use serde::Serialize;

use super::super::catalog::offered_versions;
use super::super::error::ApiError;
use super::super::state::AppState;
use super::document::query_url;
use super::media::{self, Boot, PLATFORMS, Platform, Target};
use super::ser;
use super::wizard::{
    BOOTLOADERS, Hardware, Step, Wizard, offers_bootloader, offers_embedded_config,
    offers_secureboot,
};
use crate::catalog::Version;

/// One radio choice.
#[derive(Serialize)]
struct Choice {
    value: String,
    label: String,
    hint: String,
    checked: bool,
}

/// A group of choices under a heading.
#[derive(Serialize)]
struct Group {
    label: String,
    options: Vec<Choice>,
}

/// One entry of the step list.
#[derive(Serialize)]
struct StepItem {
    label: &'static str,
    state: &'static str,
    href: Option<String>,
}

/// The values every wizard page shows: title, step list, hidden state, back link.
fn base(w: &Wizard, step: Step, title: &str) -> Value {
    let flow = w.flow();
    let steps: Vec<StepItem> = flow
        .iter()
        .map(|s| {
            let state = match s.cmp(&step) {
                std::cmp::Ordering::Less => "done",
                std::cmp::Ordering::Equal => "current",
                std::cmp::Ordering::Greater => "todo",
            };
            StepItem {
                label: s.label(),
                state,
                href: (state == "done").then(|| w.url(*s)),
            }
        })
        .collect();
    let back = flow
        .iter()
        .position(|s| *s == step)
        .and_then(|i| i.checked_sub(1))
        .map(|i| w.url(flow[i]));
    context! {
        title => title,
        steps => ser(&steps),
        hidden => ser(w.pairs(step)),
        back => back,
    }
}

/// The template name and values of the page for the wizard's current step (not `Result`).
pub fn step_page(st: &AppState, w: &Wizard) -> Result<(&'static str, Value), ApiError> {
    let step = w.step();
    Ok(match step {
        Step::Hardware => ("choose.html", hardware(w)),
        Step::Version => ("choose.html", version(st, w)?),
        Step::Platform => ("choose.html", platform(w)),
        Step::Board => ("choose.html", board(w)),
        Step::Arch => ("arch.html", arch(st, w)),
        Step::Extensions => ("extensions.html", extensions(w)),
        Step::Options | Step::Result => ("options.html", options(w)),
    })
}

fn hardware(w: &Wizard) -> Value {
    let sbc = w.prefill.as_ref().is_some_and(|p| p.overlay.is_some());
    let options = [
        (
            Hardware::Metal,
            "Bare metal machine",
            "ISO, disk image, PXE",
        ),
        (
            Hardware::Cloud,
            "Cloud server",
            "AWS, GCP, Azure, VMware, OpenStack, …",
        ),
        (
            Hardware::Sbc,
            "Single-board computer",
            "Raspberry Pi and other boards (overlays)",
        ),
    ]
    .into_iter()
    .map(|(h, label, hint)| Choice {
        value: h.as_str().into(),
        label: label.into(),
        hint: hint.into(),
        checked: if sbc {
            h == Hardware::Sbc
        } else {
            h == Hardware::Metal
        },
    })
    .collect();
    let groups = vec![Group {
        label: String::new(),
        options,
    }];
    context! {
        legend => "Hardware type",
        name => "target",
        groups => ser(&groups),
        intro => "Build Talos Linux boot media and installer images from the releases imported on this appliance.",
        ..base(w, Step::Hardware, "Hardware type")
    }
}

fn version(st: &AppState, w: &Wizard) -> Result<Value, ApiError> {
    let mut versions = offered_versions(st)?;
    if w.target == Some(Hardware::Sbc) {
        versions.retain(|v| v.at_least(1, 7));
    }
    versions.sort();
    versions.reverse();
    let default = versions
        .iter()
        .find(|v| !v.is_prerelease())
        .or(versions.first())
        .cloned();
    let mut groups: Vec<Group> = Vec::new();
    let mut pre = Vec::new();
    for v in &versions {
        let choice = Choice {
            value: v.to_string(),
            label: v.tag(),
            hint: String::new(),
            checked: Some(v) == default.as_ref(),
        };
        if v.is_prerelease() {
            pre.push(choice);
            continue;
        }
        let label = format!("Talos {}.{}", v.major, v.minor);
        match groups.last_mut() {
            Some(g) if g.label == label => g.options.push(choice),
            _ => groups.push(Group {
                label,
                options: vec![choice],
            }),
        }
    }
    if !pre.is_empty() {
        groups.push(Group {
            label: "Pre-releases".into(),
            options: pre,
        });
    }
    Ok(context! {
        legend => "Talos version",
        name => "version",
        groups => ser(&groups),
        empty => "No Talos release is imported on this appliance yet: an operator imports one \
                  (see the operator guide, 'Bring a Talos release across the air gap'). To try \
                  the appliance first, start it with `image-factory serve --demo`: it imports \
                  a synthetic test release (not Talos) whose media boot to a test marker.",
        ..base(w, Step::Version, "Talos version")
    })
}

fn boot_hint(p: &Platform) -> String {
    p.boot
        .iter()
        .map(|b| match b {
            Boot::Iso => "ISO",
            Boot::Disk => "disk image",
            Boot::Pxe => "PXE",
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn platform(w: &Wizard) -> Value {
    // Platforms of this version with an architecture the release holds.
    let imported = |p: &Platform| {
        w.release
            .as_ref()
            .is_some_and(|r| p.arches.iter().any(|a| r.arches.contains_key(*a)))
    };
    let options: Vec<Choice> = match &w.version {
        Some(v) => PLATFORMS
            .iter()
            .filter(|p| p.name != "metal" && p.available_in(v) && imported(p))
            .enumerate()
            .map(|(i, p)| Choice {
                value: p.name.into(),
                label: p.label.into(),
                hint: boot_hint(p),
                checked: i == 0,
            })
            .collect(),
        None => Vec::new(),
    };
    let groups = vec![Group {
        label: String::new(),
        options,
    }];
    context! {
        legend => "Cloud platform",
        name => "platform",
        groups => ser(&groups),
        ..base(w, Step::Platform, "Cloud platform")
    }
}

fn board(w: &Wizard) -> Value {
    let prefilled = w.prefill.as_ref().and_then(|p| p.overlay.clone());
    let options: Vec<Choice> = w
        .release
        .iter()
        .flat_map(|r| r.overlays.iter())
        .enumerate()
        .map(|(i, o)| Choice {
            value: o.name.clone(),
            label: o.name.clone(),
            hint: o.image.clone(),
            checked: prefilled.as_deref().map_or(i == 0, |p| p == o.name),
        })
        .collect();
    let groups: Vec<Group> = if options.is_empty() {
        Vec::new()
    } else {
        vec![Group {
            label: String::new(),
            options,
        }]
    };
    context! {
        legend => "Board",
        name => "board",
        groups => ser(&groups),
        empty => "The overlay catalog of this release is empty: no board can be chosen.",
        ..base(w, Step::Board, "Single-board computer")
    }
}

fn arch(st: &AppState, w: &Wizard) -> Value {
    let choices = w.arch_choices();
    let arches: Vec<Choice> = choices
        .iter()
        .enumerate()
        .map(|(i, a)| Choice {
            value: (*a).into(),
            label: (*a).into(),
            hint: match *a {
                "amd64" => "x86-64".into(),
                _ => "AArch64 (ARM 64-bit)".into(),
            },
            checked: i == 0,
        })
        .collect();
    let offered = match (&w.version, w.platform) {
        (Some(v), Some(p)) => offers_secureboot(v, p) && w.board.is_none(),
        _ => false,
    };
    let note = if secureboot_configured(st) {
        "SecureBoot media are signed with this appliance's SecureBoot key."
    } else {
        "This appliance has no SecureBoot signing keys configured: SecureBoot media would \
         answer 400 here."
    };
    context! {
        arches => ser(&arches),
        secureboot_offered => offered,
        secureboot => w.secureboot,
        secureboot_note => note,
        ..base(w, Step::Arch, "Architecture and SecureBoot")
    }
}

/// Whether SecureBoot signing is configured (not yet on this appliance: see docs/api.md).
fn secureboot_configured(_st: &AppState) -> bool {
    false
}

/// One extension row.
#[derive(Serialize)]
pub struct ExtensionItem {
    name: String,
    description: String,
    author: String,
    search: String,
    checked: bool,
    available: bool,
    filtered_out: bool,
}

impl ExtensionItem {
    /// Whether the filter keeps it.
    pub fn shown(&self) -> bool {
        !self.filtered_out
    }
}

/// The extension rows of `w`'s release for `arch`, filtered by `search`, `selected` ticked.
pub fn extension_items(
    w: &Wizard,
    arch: &str,
    search: &str,
    selected: &[String],
) -> Vec<ExtensionItem> {
    let q = search.trim().to_lowercase();
    w.release
        .iter()
        .flat_map(|r| r.extensions.iter())
        .map(|e| {
            let text = format!("{} {}", e.name, e.description).to_lowercase();
            ExtensionItem {
                name: e.name.clone(),
                description: e.description.trim().to_string(),
                author: e.author.clone(),
                filtered_out: !q.is_empty() && !text.contains(&q),
                search: text,
                checked: selected.contains(&e.name),
                available: arch.is_empty() || e.images.contains_key(arch),
            }
        })
        .collect()
}

fn extensions(w: &Wizard) -> Value {
    let arch = w.arch.clone().unwrap_or_default();
    let search = w.search.clone().unwrap_or_default();
    // After a filter the ticked boxes are the truth; on first view, the stored schematic's.
    let selected: Vec<String> = if w.search.is_some() {
        w.selected_extensions.clone()
    } else {
        w.prefill
            .as_ref()
            .map(|p| p.extensions.clone())
            .unwrap_or_default()
    };
    let items = extension_items(w, &arch, &search, &selected);
    let kept: Vec<&String> = items
        .iter()
        .filter(|i| i.checked && i.filtered_out)
        .map(|i| &i.name)
        .collect();
    let shown = items.iter().filter(|i| !i.filtered_out).count();
    context! {
        search => search,
        total => items.len(),
        shown => shown,
        kept => ser(&kept),
        arch => arch,
        extensions => ser(&items),
        ..base(w, Step::Extensions, "System extensions")
    }
}

fn options(w: &Wizard) -> Value {
    let pre = w.prefill.clone().unwrap_or_default();
    let given = w.cmdline_set;
    let pick = |mine: &str, theirs: String| if given { mine.to_string() } else { theirs };
    let version = w.version.clone();
    let bootloaders: Vec<&str> = if version.as_ref().is_some_and(offers_bootloader) {
        BOOTLOADERS.to_vec()
    } else {
        Vec::new()
    };
    context! {
        cmdline => pick(&w.cmdline, pre.cmdline),
        bootloaders => bootloaders,
        bootloader => pick(&w.bootloader, pre.bootloader),
        meta => pick(&w.meta_text, pre.meta),
        embedded_config_offered => version.as_ref().is_some_and(offers_embedded_config),
        embedded_config => pick(&w.embedded_config, pre.embedded_config),
        overlay => w.board.as_ref().map(|b| b.overlay.clone()),
        overlay_options => pick(&w.overlay_options, pre.overlay_options),
        ..base(w, Step::Options, "Customization")
    }
}

/// The values of the result page for the stored schematic `id` (`yaml`) and the wizard's
/// target (every step up to the architecture done); `host` is the appliance as the browser
/// reached it, `scheme` `http` or `https`.
pub fn result(
    w: &Wizard,
    id: &str,
    yaml: &str,
    host: &str,
    scheme: &str,
) -> Result<Value, ApiError> {
    let (Some(version), Some(platform), Some(arch)) = (&w.version, w.platform, &w.arch) else {
        return Err(ApiError::BadRequest(
            "the result page needs target, version, platform or board, and arch".into(),
        ));
    };
    let t = Target {
        id,
        version,
        platform,
        arch,
        secureboot: w.secureboot,
        overlay: w.board.as_ref().map(|b| b.overlay.as_str()),
    };
    let base_url = format!("{scheme}://{host}");
    let installer = media::installer_image(&t, host);
    let pxe = media::pxe_script(&t);
    // Talos' default image names, served by this appliance as their registry mirror (the
    // operator guide's recommended setup: nothing to mark insecure, upgrades keep working).
    let installer_factory = media::installer_image(&t, "factory.talos.dev");
    let snippet_install = format!(
        "machine:\n  install:\n    image: {installer_factory}\n  registries:\n    mirrors:\n      factory.talos.dev:\n        endpoints:\n          - {base_url}\n      ghcr.io:\n        endpoints:\n          - {base_url}\n"
    );
    let snippet_pxe = pxe
        .as_ref()
        .map(|p| format!("#!ipxe\nchain {base_url}{p}\n"));
    let mut edit: Vec<(&str, String)> = vec![("schematic-id", id.to_string())];
    if let Some(t) = w.target {
        edit.insert(0, ("target", t.as_str().to_string()));
    }
    let label = match &w.board {
        Some(b) => format!("{} (overlay {})", b.param, b.overlay),
        None => platform.label.to_string(),
    };
    Ok(context! {
        title => "Your schematic",
        id => id,
        yaml => yaml,
        version => version.tag(),
        platform_label => label,
        arch => arch,
        secureboot => w.secureboot,
        media => ser(media::boot_media(&t)),
        extras => ser(media::extra_assets(&t)),
        talosctl => ser(talosctl_links(w)),
        pxe_url => pxe.as_ref().map(|p| format!("{base_url}{p}")),
        pxe => pxe,
        installer => installer,
        installer_factory => installer_factory,
        snippet_install => snippet_install,
        snippet_pxe => snippet_pxe,
        edit => query_url("/", &edit),
    })
}

/// Download links of the release's `talosctl` binaries (none when it was imported without
/// them).
fn talosctl_links(w: &Wizard) -> Vec<media::Link> {
    let Some(release) = w.release.as_ref() else {
        return Vec::new();
    };
    release
        .talosctl
        .iter()
        .flat_map(|t| t.files.keys())
        .map(|name| media::Link {
            label: name.clone(),
            href: format!("/talosctl/{}/{name}", release.version),
            file: name.clone(),
            note: None,
        })
        .collect()
}

/// The `/ui/version-doc` fragment's values.
pub fn version_doc(v: &Version) -> Value {
    context! {
        version => v.tag(),
        minor => format!("v{}.{}", v.major, v.minor),
    }
}
