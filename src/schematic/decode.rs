//! Strict decoding of schematic documents with go-yaml's semantics.
//!
//! The YAML text is parsed into a node tree (first document only), then decoded into the typed
//! model the way go-yaml's decoder with `KnownFields(true)` does: unknown and duplicate keys are
//! errors, string fields keep the scalar's source text, non-fatal errors are collected and
//! reported together as `yaml: construct errors:` with line numbers.

use std::collections::HashSet;

use saphyr_parser::ScalarStyle;

use super::budget::{AliasBudget, Scope};
use super::errors::Errors;
use super::keys::{KeyTexts, ValueMap};
use super::tree::{YKind, YNode, err, load};
use super::value::Value;
use super::{
    Bootloader, Customization, DiskImage, MetaValue, Overlay, Schematic, SchematicError,
    SecureBoot, SystemExtensions,
};
use crate::gocompat;
use crate::gocompat::yaml::{Resolved, old_bool_value, resolve_plain};

/// Decodes a schematic document (the first YAML document of `input`).
pub(super) fn decode(input: &[u8]) -> Result<Schematic, SchematicError> {
    let text = std::str::from_utf8(input)
        .map_err(|e| err(format!("yaml: invalid UTF-8 at offset {}", e.valid_up_to())))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Some(root) = load(text)? else {
        return Err(err("EOF"));
    };
    let mut d = Decoder::default();
    let schematic = d.schematic(&root)?;
    if d.errors.is_empty() {
        Ok(schematic)
    } else {
        // go-yaml v4 (the snapshot factory v1.5.0 pins) joins collected errors on one line.
        Err(err(d.errors.report()))
    }
}

#[derive(Default)]
struct Decoder {
    errors: Errors,
    budget: AliasBudget,
    keys: KeyTexts,
}

type Fatal<T> = Result<T, SchematicError>;

/// Truncates a scalar for error messages the way go-yaml does (10 bytes, else 7 and `...`).
fn error_value(v: &str) -> String {
    if v.len() > 10 {
        let mut end = 7;
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        format!(" `{}...`", &v[..end])
    } else {
        format!(" `{v}`")
    }
}

impl Decoder {
    /// Accounts for decoding `n`; keep the scope while decoding its content.
    fn visit(&mut self, n: &YNode) -> Fatal<Scope> {
        self.budget.enter(n)
    }

    /// Records a "cannot construct" error for `n` decoded into the Go type `into`.
    fn terror(&mut self, n: &YNode, into: &str) -> Fatal<()> {
        let described = match &n.kind {
            YKind::Scalar(v, _) => {
                let (_, tag) = self.resolve(n)?;
                format!("{tag}{}", error_value(v))
            }
            YKind::Seq(_) => n.tag.clone().unwrap_or_else(|| "!!seq".into()),
            YKind::Map(_) => n.tag.clone().unwrap_or_else(|| "!!map".into()),
        };
        self.errors.push(format!(
            "line {}: cannot construct {described} into {into}",
            n.line
        ));
        Ok(())
    }

    /// Resolves a scalar node to its value kind and the tag go-yaml reports for it.
    fn resolve(&self, n: &YNode) -> Fatal<(Resolved, String)> {
        let YKind::Scalar(v, style) = &n.kind else {
            return Ok((Resolved::Str, "!!str".into()));
        };
        match n.tag.as_deref() {
            None if *style == ScalarStyle::Plain => {
                let r = resolve_plain(v);
                let tag = r.short_tag().to_string();
                Ok((r, tag))
            }
            None | Some("!!str") | Some("!") => Ok((Resolved::Str, "!!str".into())),
            Some(t @ ("!!int" | "!!float" | "!!bool" | "!!null" | "!!timestamp")) => {
                let r = resolve_plain(v);
                let rtag = r.short_tag();
                match (t, &r) {
                    (_, _) if rtag == t => Ok((r, t.to_string())),
                    ("!!float", Resolved::Int(i)) => Ok((Resolved::Float(*i as f64), t.into())),
                    ("!!float", Resolved::Uint(u)) => Ok((Resolved::Float(*u as f64), t.into())),
                    _ => Err(err(format!("yaml: cannot decode {rtag} `{v}` as a {t}"))),
                }
            }
            Some("!!binary") => Ok((Resolved::Str, "!!binary".into())),
            Some(other) => Ok((Resolved::Str, other.to_string())),
        }
    }

    /// Reports duplicate keys (same node kind and text) as go-yaml does; true when any was found.
    fn duplicates(&mut self, entries: &[(YNode, YNode)]) -> bool {
        let found = self.keys.duplicates(entries);
        if found.pairs == 0 {
            return false;
        }
        let mut listed = 0;
        for (i, j) in found.pairs() {
            if self.errors.full() {
                break;
            }
            let (ki, kj) = (&entries[i].0, &entries[j].0);
            let text = match &ki.kind {
                YKind::Scalar(a, _) => a.as_str(),
                _ => "",
            };
            self.errors.push(format!(
                "line {}: mapping key {} already defined at line {}",
                kj.line,
                gocompat::quote(text),
                ki.line
            ));
            listed += 1;
        }
        self.errors.count_unlisted(found.pairs - listed);
        true
    }

    fn is_merge_key(n: &YNode) -> bool {
        matches!(&n.kind, YKind::Scalar(v, _) if v == "<<")
            && matches!(n.tag.as_deref(), None | Some("!") | Some("!!merge"))
    }

    /// Decodes a mapping into a struct: `field` handles each known key and returns false for
    /// unknown ones. Merge keys (`<<`) contribute keys that are not set explicitly.
    fn strukt(
        &mut self,
        n: &YNode,
        type_name: &str,
        field: &mut dyn FnMut(&mut Decoder, &str, &YNode) -> Fatal<bool>,
    ) -> Fatal<()> {
        let _alias = self.visit(n)?;
        let entries = match &n.kind {
            YKind::Map(entries) => entries,
            YKind::Scalar(..) => {
                if self.resolve(n)?.0 != Resolved::Null {
                    self.terror(n, type_name)?;
                }
                return Ok(());
            }
            YKind::Seq(_) => return self.terror(n, type_name),
        };
        if self.duplicates(entries) {
            return Ok(());
        }
        let mut merges = Vec::new();
        let mut explicit = HashSet::new();
        for (k, v) in entries {
            if Self::is_merge_key(k) {
                merges.push(v.clone());
                continue;
            }
            let Some(name) = self.string(k, "string")? else {
                continue;
            };
            explicit.insert(name.clone());
            if !field(self, &name, v)? {
                self.errors.push(format!(
                    "line {}: field {name} not found in type {type_name}",
                    k.line
                ));
            }
        }
        for m in merges {
            self.merge_into_struct(&m, type_name, &explicit, field)?;
        }
        Ok(())
    }

    fn merge_into_struct(
        &mut self,
        m: &YNode,
        type_name: &str,
        explicit: &HashSet<String>,
        field: &mut dyn FnMut(&mut Decoder, &str, &YNode) -> Fatal<bool>,
    ) -> Fatal<()> {
        let _alias = self.visit(m)?;
        match &m.kind {
            YKind::Map(entries) => {
                for (k, v) in entries {
                    let Some(name) = self.string(k, "string")? else {
                        continue;
                    };
                    if explicit.contains(&name) {
                        continue;
                    }
                    if !field(self, &name, v)? {
                        self.errors.push(format!(
                            "line {}: field {name} not found in type {type_name}",
                            k.line
                        ));
                    }
                }
                Ok(())
            }
            YKind::Seq(items) => {
                for item in items.iter().rev() {
                    if !matches!(item.kind, YKind::Map(_)) {
                        return Err(err(
                            "yaml: map merge requires map or sequence of maps as the value",
                        ));
                    }
                    self.merge_into_struct(item, type_name, explicit, field)?;
                }
                Ok(())
            }
            YKind::Scalar(..) => Err(err(
                "yaml: map merge requires map or sequence of maps as the value",
            )),
        }
    }

    /// The text of a `!!binary` scalar: base64-decoded, and required to be UTF-8 here.
    fn binary_text(n: &YNode, v: &str) -> Fatal<String> {
        use base64::Engine as _;
        let compact: String = v.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|e| {
                err(format!(
                    "yaml: line {}: invalid !!binary value: {e}",
                    n.line
                ))
            })?;
        String::from_utf8(bytes).map_err(|_| {
            err(format!(
                "yaml: line {}: !!binary values that are not UTF-8 text are not supported",
                n.line
            ))
        })
    }

    /// Decodes a node into a Go `string`: null is empty, scalars keep their source text.
    fn string(&mut self, n: &YNode, into: &str) -> Fatal<Option<String>> {
        let _alias = self.visit(n)?;
        if let YKind::Scalar(v, _) = &n.kind
            && n.tag.as_deref() == Some("!!binary")
        {
            return Self::binary_text(n, v).map(Some);
        }
        match &n.kind {
            YKind::Scalar(v, _) => match self.resolve(n)?.0 {
                Resolved::Null => Ok(Some(String::new())),
                Resolved::Timestamp(_) => {
                    self.terror(n, into)?;
                    Ok(None)
                }
                _ => Ok(Some(v.clone())),
            },
            _ => {
                self.terror(n, into)?;
                Ok(None)
            }
        }
    }

    fn is_null(&self, n: &YNode) -> Fatal<bool> {
        Ok(matches!(n.kind, YKind::Scalar(..)) && self.resolve(n)?.0 == Resolved::Null)
    }

    fn string_list(&mut self, n: &YNode) -> Fatal<Vec<String>> {
        let _alias = self.visit(n)?;
        let mut out = Vec::new();
        match &n.kind {
            YKind::Seq(items) => {
                for item in items {
                    // go-yaml drops null items of typed lists instead of zero-filling them.
                    if self.is_null(item)? {
                        continue;
                    }
                    if let Some(s) = self.string(item, "string")? {
                        out.push(s);
                    }
                }
            }
            YKind::Scalar(..) if self.resolve(n)?.0 == Resolved::Null => {}
            _ => self.terror(n, "[]string")?,
        }
        Ok(out)
    }

    /// Decodes an unsigned integer of `bits` bits (Go `uint8` or `uint`).
    fn uint(&mut self, n: &YNode, bits: u32, into: &str) -> Fatal<Option<u64>> {
        let _alias = self.visit(n)?;
        let max = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        let value = match &n.kind {
            YKind::Scalar(..) => match self.resolve(n)?.0 {
                Resolved::Null => Some(0),
                Resolved::Int(i) if i >= 0 => Some(i as u64),
                Resolved::Uint(u) => Some(u),
                Resolved::Float(f) if !f.is_nan() && f < 18_446_744_073_709_551_616.0 => {
                    let t = f.trunc();
                    if t >= 0.0 { Some(t as u64) } else { None }
                }
                _ => None,
            },
            _ => None,
        };
        match value {
            Some(v) if v <= max => Ok(Some(v)),
            _ => {
                self.terror(n, into)?;
                Ok(None)
            }
        }
    }

    fn boolean(&mut self, n: &YNode) -> Fatal<Option<bool>> {
        let _alias = self.visit(n)?;
        let value = match &n.kind {
            YKind::Scalar(v, _) => match self.resolve(n)?.0 {
                Resolved::Null => Some(false),
                Resolved::Bool(b) => Some(b),
                Resolved::Str => old_bool_value(v),
                _ => None,
            },
            _ => None,
        };
        if value.is_none() {
            self.terror(n, "bool")?;
        }
        Ok(value)
    }

    fn bootloader(&mut self, n: &YNode) -> Fatal<Bootloader> {
        let _alias = self.visit(n)?;
        match &n.kind {
            YKind::Scalar(v, _) => {
                if self.resolve(n)?.0 == Resolved::Null {
                    return Ok(Bootloader::None);
                }
                Bootloader::parse(v)
                    .ok_or_else(|| err(format!("{v} does not belong to BootloaderKind values")))
            }
            _ => {
                self.terror(n, "imageropts.BootloaderKind")?;
                Ok(Bootloader::None)
            }
        }
    }

    /// Decodes a node into Go's `any`.
    fn any(&mut self, n: &YNode) -> Fatal<Value> {
        let _alias = self.visit(n)?;
        match &n.kind {
            YKind::Scalar(v, _) if n.tag.as_deref() == Some("!!binary") => {
                Ok(Value::Str(Self::binary_text(n, v)?))
            }
            YKind::Scalar(v, _) => Ok(Value::from_resolved(self.resolve(n)?.0, v)),
            YKind::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(self.any(item)?);
                }
                Ok(Value::Seq(out))
            }
            YKind::Map(entries) => {
                // Looked at once the duplicate check has passed, so that a mapping with
                // repeated (aliased) keys costs no more than the check.
                let mut string_keys = None;
                let out = self.map_entries(entries, &mut |d, k| {
                    let string_keys = *string_keys.get_or_insert_with(|| {
                        entries.iter().all(|(k, _)| {
                            matches!(k.kind, YKind::Scalar(..))
                                && matches!(
                                    d.resolve(k).map(|(r, _)| r),
                                    Ok(Resolved::Str | Resolved::Merge)
                                )
                        })
                    });
                    if string_keys {
                        Ok(d.string(k, "string")?.map(Value::Str))
                    } else {
                        let key = d.any(k)?;
                        if matches!(key, Value::Seq(_) | Value::Map(_)) {
                            return Err(err(format!("yaml: line {}: invalid map key", k.line)));
                        }
                        Ok(Some(key))
                    }
                })?;
                Ok(Value::Map(out.into_entries()))
            }
        }
    }

    /// Decodes mapping entries (with duplicate checks and merges), later keys winning.
    fn map_entries(
        &mut self,
        entries: &[(YNode, YNode)],
        key_of: &mut dyn FnMut(&mut Decoder, &YNode) -> Fatal<Option<Value>>,
    ) -> Fatal<ValueMap> {
        let mut out = ValueMap::default();
        if self.duplicates(entries) {
            return Ok(out);
        }
        let mut merges = Vec::new();
        for (k, v) in entries {
            if Self::is_merge_key(k) {
                merges.push(v.clone());
                continue;
            }
            let Some(key) = key_of(self, k)? else {
                continue;
            };
            let value = self.any(v)?;
            out.insert(key, value);
        }
        // The keys set so far are the explicit ones; merged keys never replace them.
        let explicit = out.len();
        for m in merges {
            let maps: Vec<YNode> = match &m.kind {
                YKind::Map(_) => vec![m.clone()],
                YKind::Seq(items) if items.iter().all(|i| matches!(i.kind, YKind::Map(_))) => {
                    items.iter().rev().cloned().collect()
                }
                _ => {
                    return Err(err(
                        "yaml: map merge requires map or sequence of maps as the value",
                    ));
                }
            };
            for map in maps {
                let _alias = self.visit(&map)?;
                let YKind::Map(merged) = &map.kind else {
                    continue;
                };
                for (k, v) in self.map_entries(merged, key_of)?.into_entries() {
                    if out.position(&k).is_none_or(|at| at >= explicit) {
                        out.insert(k, v);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Decodes `overlay.options` (Go `map[string]any`).
    fn options(&mut self, n: &YNode) -> Fatal<Vec<(String, Value)>> {
        let _alias = self.visit(n)?;
        let entries = match &n.kind {
            YKind::Map(entries) => entries,
            YKind::Scalar(..) if self.resolve(n)?.0 == Resolved::Null => return Ok(Vec::new()),
            _ => {
                self.terror(n, "map[string]interface {}")?;
                return Ok(Vec::new());
            }
        };
        let out = self.map_entries(entries, &mut |d, k| {
            Ok(d.string(k, "string")?.map(Value::Str))
        })?;
        Ok(out
            .into_entries()
            .into_iter()
            .filter_map(|(k, v)| match k {
                Value::Str(s) => Some((s, v)),
                _ => None,
            })
            .collect())
    }

    fn schematic(&mut self, n: &YNode) -> Fatal<Schematic> {
        let mut s = Schematic::default();
        self.strukt(n, "schematic.Schematic", &mut |d, key, v| {
            match key {
                "owner" => s.owner = d.string(v, "string")?.unwrap_or_default(),
                "overlay" => s.overlay = d.overlay(v)?,
                "customization" => s.customization = d.customization(v)?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(s)
    }

    fn overlay(&mut self, n: &YNode) -> Fatal<Overlay> {
        let mut o = Overlay::default();
        self.strukt(n, "schematic.Overlay", &mut |d, key, v| {
            match key {
                "image" => o.image = d.string(v, "string")?.unwrap_or_default(),
                "name" => o.name = d.string(v, "string")?.unwrap_or_default(),
                "options" => o.options = d.options(v)?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(o)
    }

    fn customization(&mut self, n: &YNode) -> Fatal<Customization> {
        let mut c = Customization::default();
        self.strukt(n, "schematic.Customization", &mut |d, key, v| {
            match key {
                "embeddedMachineConfiguration" => {
                    c.embedded_machine_configuration = d.string(v, "string")?.unwrap_or_default()
                }
                "extraKernelArgs" => c.extra_kernel_args = d.string_list(v)?,
                "meta" => c.meta = d.meta_list(v)?,
                "systemExtensions" => c.system_extensions = d.system_extensions(v)?,
                "bootloader" => c.bootloader = d.bootloader(v)?,
                "secureboot" => c.secureboot = d.secureboot(v)?,
                "diskImage" => c.disk_image = d.disk_image(v)?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(c)
    }

    fn meta_list(&mut self, n: &YNode) -> Fatal<Vec<MetaValue>> {
        let _alias = self.visit(n)?;
        let mut out = Vec::new();
        match &n.kind {
            YKind::Seq(items) => {
                for item in items {
                    if self.is_null(item)? {
                        continue;
                    }
                    let mut m = MetaValue::default();
                    self.strukt(item, "schematic.MetaValue", &mut |d, key, v| {
                        match key {
                            "key" => m.key = d.uint(v, 8, "uint8")?.unwrap_or_default() as u8,
                            "value" => m.value = d.string(v, "string")?.unwrap_or_default(),
                            _ => return Ok(false),
                        }
                        Ok(true)
                    })?;
                    out.push(m);
                }
            }
            YKind::Scalar(..) if self.resolve(n)?.0 == Resolved::Null => {}
            _ => self.terror(n, "[]schematic.MetaValue")?,
        }
        Ok(out)
    }

    fn system_extensions(&mut self, n: &YNode) -> Fatal<SystemExtensions> {
        let mut s = SystemExtensions::default();
        self.strukt(n, "schematic.SystemExtensions", &mut |d, key, v| {
            match key {
                "officialExtensions" => s.official_extensions = d.string_list(v)?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(s)
    }

    fn secureboot(&mut self, n: &YNode) -> Fatal<SecureBoot> {
        let mut s = SecureBoot::default();
        self.strukt(n, "schematic.SecureBootCustomization", &mut |d, key, v| {
            match key {
                "enrollKeys" => s.enroll_keys = d.string(v, "string")?.unwrap_or_default(),
                "includeWellKnownCertificates" => {
                    s.include_well_known_certificates = d.boolean(v)?.unwrap_or_default()
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(s)
    }

    fn disk_image(&mut self, n: &YNode) -> Fatal<DiskImage> {
        let mut s = DiskImage::default();
        self.strukt(n, "schematic.DiskImage", &mut |d, key, v| {
            match key {
                "sectorSize" => s.sector_size = d.uint(v, 64, "uint")?.unwrap_or_default(),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(s)
    }
}
