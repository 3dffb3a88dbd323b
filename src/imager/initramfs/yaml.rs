//! A go-yaml (v3, indent 4) compatible emitter for the two fixed documents of this module: an
//! extension `manifest.yaml` and `extensions.yaml` (imager spec §3.6.1, api spec §6.4).
//!
//! Only string-valued fixed structures are written, so the emitter is small: it reproduces
//! go-yaml's scalar style choice (plain, single-quoted, double-quoted, literal block with
//! chomping and indentation indicators) and its block layout (sequences indented under their
//! key, `- ` items whose mapping continues at the item's column + 2, nested mappings +4).

use serde::Deserialize;

/// Extension metadata (Talos `extensions.Metadata`), field order as serialized.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Metadata {
    /// `name`.
    pub name: String,
    /// `version` (free-form).
    pub version: String,
    /// `author`.
    pub author: String,
    /// `description`.
    pub description: String,
    /// `compatibility`.
    pub compatibility: Compatibility,
    /// `extraInfo` (written only when non-empty).
    #[serde(rename = "extraInfo")]
    pub extra_info: String,
}

/// `compatibility` of [`Metadata`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Compatibility {
    /// `talos`.
    pub talos: Constraint,
}

/// `compatibility.talos` of [`Metadata`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Constraint {
    /// `version`: a blang semver range, possibly empty.
    pub version: String,
}

/// An extension manifest (`manifest.yaml`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Manifest {
    /// `version`: only `v1alpha1` is accepted.
    pub version: String,
    /// `metadata`.
    pub metadata: Metadata,
}

/// go-yaml's final scalar styles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

/// libyaml's `is_printable` on a char (with go-yaml's unicode output enabled).
fn printable(c: char) -> bool {
    let u = c as u32;
    u == 0x0A
        || (0x20..=0x7E).contains(&u)
        || (0xA0..=0xD7FF).contains(&u)
        || ((0xE000..=0xFFFD).contains(&u) && u != 0xFEFF)
}

fn all_digits(s: &str, radix: u32) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_digit(radix))
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$` (go-yaml's `yamlStyleFloat`).
fn yaml_style_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mant, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mant_ok = match mant.split_once('.') {
        Some(("", frac)) => all_digits(frac, 10),
        Some((int, frac)) => all_digits(int, 10) && (frac.is_empty() || all_digits(frac, 10)),
        None => all_digits(mant, 10),
    };
    mant_ok && exp.is_none_or(|e| all_digits(e.strip_prefix(['-', '+']).unwrap_or(e), 10))
}

/// Whether a plain scalar `s` would resolve to something other than a string in go-yaml v3
/// (null, bool, int, float, timestamp), or is one of the YAML 1.1 forms it quotes anyway.
fn needs_quotes(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "", "~", "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE", "y",
        "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
        "OFF", ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf",
        "-.Inf", "-.INF", "<<",
    ];
    if WORDS.contains(&s) {
        return true;
    }
    let Some(first) = s.chars().next() else {
        return true;
    };
    if !(first.is_ascii_digit() || matches!(first, '+' | '-' | '.')) {
        return false;
    }
    // Timestamps: four digits then `-` (dates like 2001-12-14, with optional time).
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 4 && s.as_bytes().get(4) == Some(&b'-') {
        let rest = &s[5..];
        let date: Vec<&str> = rest.splitn(3, '-').collect();
        if date.len() == 2 && date.iter().all(|p| (1..=2).contains(&p.len())) {
            let day = date[1].split(['T', 't', ' ']).next().unwrap_or_default();
            if all_digits(date[0], 10) && all_digits(day, 10) {
                return true;
            }
        }
    }
    let plain = s.replace('_', "");
    let unsigned = plain.strip_prefix(['-', '+']).unwrap_or(&plain);
    let int = all_digits(unsigned, 10)
        || unsigned
            .strip_prefix("0x")
            .or_else(|| unsigned.strip_prefix("0X"))
            .is_some_and(|h| all_digits(h, 16))
        || unsigned
            .strip_prefix("0o")
            .or_else(|| unsigned.strip_prefix("0O"))
            .is_some_and(|h| all_digits(h, 8))
        || unsigned
            .strip_prefix("0b")
            .or_else(|| unsigned.strip_prefix("0B"))
            .is_some_and(|h| all_digits(h, 2));
    if int || yaml_style_float(&plain) {
        return true;
    }
    // Base-60 floats (`1:20`), quoted by go-yaml for YAML 1.1 readers.
    let mut parts = unsigned.split(':');
    let head = parts.next().unwrap_or_default();
    let tail: Vec<&str> = parts.collect();
    !tail.is_empty()
        && all_digits(head, 10)
        && tail.iter().enumerate().all(|(i, p)| {
            let p = if i + 1 == tail.len() {
                p.split('.').next().unwrap_or_default()
            } else {
                p
            };
            (1..=2).contains(&p.len()) && all_digits(p, 10)
        })
}

/// go-yaml's style for a string value in block context.
fn style(s: &str) -> Style {
    let chars: Vec<char> = s.chars().collect();
    let special = chars.iter().any(|c| !printable(*c));
    let multiline = s.contains('\n');
    let space_break = s.contains(" \n");
    let break_space = s.contains("\n ");
    let trailing_space = s.ends_with(' ');
    if multiline {
        return if special || space_break || trailing_space {
            Style::Double
        } else {
            Style::Literal
        };
    }
    let single_ok = !(special || space_break || break_space);
    if needs_quotes(s) {
        return Style::Double;
    }
    let mut block_indicators = s.starts_with("---") || s.starts_with("...");
    for (i, &c) in chars.iter().enumerate() {
        let followed_by_ws = chars.get(i + 1).is_none_or(|n| *n == ' ' || *n == '\n');
        let preceded_by_ws = i == 0 || chars[i - 1] == ' ';
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => block_indicators = true,
                '?' | ':' | '-' if followed_by_ws => block_indicators = true,
                _ => {}
            }
        } else if (c == ':' && followed_by_ws) || (c == '#' && preceded_by_ws) {
            block_indicators = true;
        }
    }
    let leading_space = s.starts_with(' ');
    if leading_space || trailing_space || special || block_indicators {
        if single_ok {
            Style::Single
        } else {
            Style::Double
        }
    } else {
        Style::Plain
    }
}

/// libyaml's double-quoted writer (no folding: go-yaml v3 has an unlimited line width).
fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\0' => out.push_str("\\0"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\x0B' => out.push_str("\\v"),
            '\x0C' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '\x1B' => out.push_str("\\e"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{85}' => out.push_str("\\N"),
            '\u{A0}' => out.push_str("\\_"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if printable(c) => out.push(c),
            c if (c as u32) <= 0xFF => out.push_str(&format!("\\x{:02X}", c as u32)),
            c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Appends `key: <value>` at `indent` spaces; literal block content goes 4 deeper.
fn scalar(out: &mut String, indent: usize, key: &str, value: &str) {
    let pad = " ".repeat(indent);
    match style(value) {
        Style::Plain => out.push_str(&format!("{pad}{key}: {value}\n")),
        Style::Single => out.push_str(&format!("{pad}{key}: '{}'\n", value.replace('\'', "''"))),
        Style::Double => out.push_str(&format!("{pad}{key}: {}\n", double_quoted(value))),
        Style::Literal => {
            let indicator = if value.starts_with([' ', '\n']) {
                "4"
            } else {
                ""
            };
            let chomp = if !value.ends_with('\n') {
                "-"
            } else if value.len() == 1 || value.ends_with("\n\n") {
                "+"
            } else {
                ""
            };
            out.push_str(&format!("{pad}{key}: |{indicator}{chomp}\n"));
            let body = value.strip_suffix('\n').unwrap_or(value);
            let inner = " ".repeat(indent + 4);
            for line in body.split('\n') {
                if !line.is_empty() {
                    out.push_str(&inner);
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
    }
}

/// Appends the fields of `m` at `indent`.
fn metadata(out: &mut String, indent: usize, m: &Metadata) {
    scalar(out, indent, "name", &m.name);
    scalar(out, indent, "version", &m.version);
    scalar(out, indent, "author", &m.author);
    scalar(out, indent, "description", &m.description);
    let pad = " ".repeat(indent);
    out.push_str(&format!("{pad}compatibility:\n{pad}    talos:\n"));
    scalar(out, indent + 8, "version", &m.compatibility.talos.version);
    if !m.extra_info.is_empty() {
        scalar(out, indent, "extraInfo", &m.extra_info);
    }
}

/// An extension `manifest.yaml` as go-yaml (indent 4) writes it.
pub fn manifest_yaml(m: &Manifest) -> String {
    let mut out = String::new();
    scalar(&mut out, 0, "version", &m.version);
    out.push_str("metadata:\n");
    metadata(&mut out, 4, &m.metadata);
    out
}

/// `extensions.yaml`: `layers` of `(image, metadata)` in processing order.
pub fn extensions_yaml(layers: &[(String, Metadata)]) -> String {
    if layers.is_empty() {
        return "layers: []\n".to_string();
    }
    let mut out = String::from("layers:\n");
    for (image, m) in layers {
        let mut item = String::new();
        scalar(&mut item, 6, "image", image);
        item.push_str("      metadata:\n");
        metadata(&mut item, 10, m);
        // The first line of the item carries the `- ` marker in place of its indentation.
        out.push_str("    - ");
        out.push_str(&item[6..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_styles_follow_go_yaml() {
        assert_eq!(style("iscsi-tools"), Style::Plain);
        assert_eq!(style("v0.2.0"), Style::Plain);
        assert_eq!(style("2.1.12-v1.10.0"), Style::Plain);
        assert_eq!(style("Image Factory (http://127.0.0.1:8080)"), Style::Plain);
        assert_eq!(style(">= v1.1.0"), Style::Single);
        assert_eq!(style("[core] x"), Style::Single);
        assert_eq!(style("a: b"), Style::Single);
        assert_eq!(style("a #b"), Style::Single);
        assert_eq!(style("a#b"), Style::Plain);
        assert_eq!(style("- x"), Style::Single);
        assert_eq!(style("-x"), Style::Plain);
        assert_eq!(style(""), Style::Double);
        assert_eq!(style("1.2"), Style::Double);
        assert_eq!(style("20230804"), Style::Double);
        assert_eq!(style("0x1F"), Style::Double);
        assert_eq!(style("true"), Style::Double);
        assert_eq!(style("yes"), Style::Double);
        assert_eq!(style("2001-12-14"), Style::Double);
        assert_eq!(style("1:20"), Style::Double);
        assert_eq!(style("6.1.0-56-amd64"), Style::Plain);
        assert_eq!(style("a\tb"), Style::Double);
        assert_eq!(style("a\nb\n"), Style::Literal);
        assert_eq!(style("a \nb\n"), Style::Double);
    }

    #[test]
    fn literal_blocks_and_chomping() {
        let mut o = String::new();
        scalar(&mut o, 4, "d", "x\ny\n");
        assert_eq!(o, "    d: |\n        x\n        y\n");
        let mut o = String::new();
        scalar(&mut o, 0, "d", "x\n\ny");
        assert_eq!(o, "d: |-\n    x\n\n    y\n");
        let mut o = String::new();
        scalar(&mut o, 0, "d", " x\n");
        assert_eq!(o, "d: |4\n     x\n");
        let mut o = String::new();
        scalar(&mut o, 0, "d", "x\n\n");
        assert_eq!(o, "d: |+\n    x\n\n");
    }

    #[test]
    fn extensions_yaml_layout() {
        let m = Metadata {
            name: "iscsi-tools".into(),
            version: "v0.2.0".into(),
            author: "Sidero Labs".into(),
            description: "[core] This system extension provides iscsi-tools.\n".into(),
            compatibility: Compatibility {
                talos: Constraint {
                    version: ">= v1.1.0".into(),
                },
            },
            extra_info: String::new(),
        };
        let dep = Metadata {
            name: "modules.dep".into(),
            version: "6.1.0-56-amd64".into(),
            author: "Talos Machinery".into(),
            description: "Combined modules.dep for all extensions".into(),
            ..Metadata::default()
        };
        let y = extensions_yaml(&[("0.sqsh".into(), m), ("modules.dep.sqsh".into(), dep)]);
        assert_eq!(
            y,
            "layers:
    - image: 0.sqsh
      metadata:
          name: iscsi-tools
          version: v0.2.0
          author: Sidero Labs
          description: |
              [core] This system extension provides iscsi-tools.
          compatibility:
              talos:
                  version: '>= v1.1.0'
    - image: modules.dep.sqsh
      metadata:
          name: modules.dep
          version: 6.1.0-56-amd64
          author: Talos Machinery
          description: Combined modules.dep for all extensions
          compatibility:
              talos:
                  version: \"\"
"
        );
        let back: serde_yaml::Value = serde_yaml::from_str(&y).unwrap();
        assert_eq!(
            back["layers"][1]["metadata"]["compatibility"]["talos"]["version"],
            ""
        );
    }
}
