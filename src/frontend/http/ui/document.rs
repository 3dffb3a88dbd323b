//! The wizard's schematic document (what it stores) and the values a stored schematic
//! pre-fills the wizard with (`?schematic-id=`).

use super::super::error::ApiError;
use super::super::state::AppState;
use super::wizard::{Prefill, Wizard};
use crate::schematic::{self, Schematic};

impl Wizard {
    /// The schematic document of the complete state: kernel arguments are the trimmed command
    /// line split on single spaces (upstream's rule), extensions sorted, the overlay from the
    /// board with its options, the bootloader unless `auto`, META and the embedded config.
    /// YAML whose scalars are JSON strings (a JSON string is a YAML double-quoted scalar), so
    /// no value can change the document's structure; the overlay options are the user's YAML,
    /// indented under `options:`.
    pub fn document(&self) -> String {
        let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
        let mut doc = String::new();
        if let Some(b) = &self.board {
            doc.push_str(&format!(
                "overlay:\n  name: {}\n  image: {}\n",
                q(&b.overlay),
                q(&b.image)
            ));
            if !self.overlay_options.trim().is_empty() {
                doc.push_str("  options:\n");
                for line in self.overlay_options.lines() {
                    doc.push_str("    ");
                    doc.push_str(line);
                    doc.push('\n');
                }
            }
        }
        let mut c = String::new();
        let cmdline = self.cmdline.trim();
        if !cmdline.is_empty() {
            let args: Vec<String> = cmdline.split(' ').map(q).collect();
            c.push_str(&format!("  extraKernelArgs: [{}]\n", args.join(", ")));
        }
        if !self.meta.is_empty() {
            c.push_str("  meta:\n");
            for (k, v) in &self.meta {
                c.push_str(&format!("    - key: {k}\n      value: {}\n", q(v)));
            }
        }
        if let Some(list) = self.extensions.as_ref().filter(|l| !l.is_empty()) {
            let names: Vec<String> = list.iter().map(|e| q(e)).collect();
            c.push_str(&format!(
                "  systemExtensions:\n    officialExtensions: [{}]\n",
                names.join(", ")
            ));
        }
        if self.bootloader != "auto" {
            c.push_str(&format!("  bootloader: {}\n", q(&self.bootloader)));
        }
        if !self.embedded_config.trim().is_empty() {
            c.push_str(&format!(
                "  embeddedMachineConfiguration: {}\n",
                q(&self.embedded_config)
            ));
        }
        if c.is_empty() {
            doc.push_str("customization: {}\n");
        } else {
            doc.push_str("customization:\n");
            doc.push_str(&c);
        }
        doc
    }
}

/// `path?k=v&...`, urlencoded (`path` alone when there are no pairs).
pub fn query_url(path: &str, pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return path.to_string();
    }
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    format!("{path}?{}", s.finish())
}

/// The stored schematic `id` as wizard values; `404` when it is not stored.
pub(super) fn prefill(st: &AppState, id: &str) -> Result<Prefill, ApiError> {
    if !schematic::is_valid_id(id) {
        return Err(ApiError::BadRequest(format!(
            "invalid schematic-id {id:?}: expected 64 lowercase hex digits"
        )));
    }
    let yaml = st
        .schematics()
        .get(id)?
        .ok_or_else(|| ApiError::NotFound(format!("schematic ID {id:?} not found")))?;
    let s = Schematic::parse(yaml.as_bytes())?;
    let c = &s.customization;
    let overlay = (!s.overlay.name.is_empty()).then(|| s.overlay.name.clone());
    Ok(Prefill {
        id: id.to_string(),
        extensions: c.system_extensions.official_extensions.clone(),
        cmdline: c.extra_kernel_args.join(" "),
        bootloader: match c.bootloader {
            schematic::Bootloader::None => "auto".into(),
            b => b.as_str().into(),
        },
        overlay,
        overlay_options: overlay_options_text(&yaml),
        meta: c
            .meta
            .iter()
            .map(|m| format!("0x{:x}={}\n", m.key, m.value))
            .collect(),
        embedded_config: c.embedded_machine_configuration.clone(),
    })
}

/// The `overlay.options` block of a canonical schematic, de-indented (the canonical layout
/// indents it by eight spaces under `    options:`).
fn overlay_options_text(canonical: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in canonical.lines() {
        if inside {
            match line.strip_prefix("        ") {
                Some(rest) => {
                    out.push_str(rest);
                    out.push('\n');
                }
                None => break,
            }
        } else if line == "    options:" {
            inside = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_block() {
        let c = "overlay:\n    image: i\n    name: n\n    options:\n        a: 1\n        b:\n            - x\ncustomization: {}\n";
        assert_eq!(overlay_options_text(c), "a: 1\nb:\n    - x\n");
    }
}
