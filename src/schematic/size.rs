//! An upper bound of a schematic's canonical size, known before it is emitted.
//!
//! The canonical form indents every line by its nesting level, so a document within the body
//! limit can ask for hundreds of MiB of output (a few hundred nested collections, or a
//! multi-line string deep inside them). Parsing refuses such schematics instead of writing them.

use super::Schematic;
use super::value::Value;

/// Most bytes a canonical form may have (16 times the request body limit).
pub(super) const MAX_CANONICAL_BYTES: u64 = 16 << 20;

/// Bytes per line beyond the indent: indicators, quotes, the line break.
const LINE: u64 = 8;
/// Indent of the typed fields' values (`customization.systemExtensions.officialExtensions`).
const TYPED_INDENT: u64 = 16;
/// Indent of `overlay.options` entries.
const OPTIONS_INDENT: u64 = 12;

/// At least the length of `s.canonical()`.
pub(super) fn canonical_bound(s: &Schematic) -> u64 {
    let c = &s.customization;
    let typed = [
        &s.owner,
        &s.overlay.image,
        &s.overlay.name,
        &c.embedded_machine_configuration,
        &c.secureboot.enroll_keys,
    ]
    .into_iter()
    .chain(&c.extra_kernel_args)
    .chain(c.meta.iter().map(|m| &m.value))
    .chain(&c.system_extensions.official_extensions);
    let mut total: u64 = 1024;
    for t in typed {
        total = total.saturating_add(text(t, TYPED_INDENT) + 2 * LINE);
    }
    for (k, v) in &s.overlay.options {
        total = total
            .saturating_add(text(k, OPTIONS_INDENT))
            .saturating_add(value(v, OPTIONS_INDENT));
    }
    total
}

/// A scalar written at `indent`: every line of a block or single-quoted scalar is indented.
fn text(s: &str, indent: u64) -> u64 {
    let mut bytes: u64 = 0;
    let mut lines: u64 = 1;
    for c in s.chars() {
        bytes += match c {
            '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' => {
                lines += 1;
                6
            }
            '\'' | '"' | '\\' => 2,
            ' '..='~' => 1,
            // `\xXX`, `\uXXXX` or `\UXXXXXXXX` at worst.
            c if c.is_ascii() => 4,
            c if c.len_utf8() < 4 => 6,
            _ => 10,
        };
    }
    bytes.saturating_add(lines.saturating_mul(indent + 4 + LINE))
}

/// A free-form value written at `indent`; each nesting level indents by at most 4.
fn value(v: &Value, indent: u64) -> u64 {
    let inner = indent + 4;
    let line = inner + LINE;
    match v {
        Value::Str(s) => text(s, indent),
        Value::Seq(items) => items.iter().fold(line, |sum, item| {
            sum.saturating_add(line).saturating_add(value(item, inner))
        }),
        Value::Map(entries) => entries.iter().fold(line, |sum, (k, v)| {
            sum.saturating_add(line)
                .saturating_add(value(k, inner))
                .saturating_add(value(v, inner))
        }),
        // Numbers, booleans, null and timestamps: at most ~40 characters.
        _ => line + 48,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(input: &str) -> Schematic {
        Schematic::parse(input.as_bytes()).expect("valid schematic")
    }

    #[test]
    fn bound_is_above_the_canonical_size() {
        let inputs = [
            "customization: {}\n",
            "customization:\n  extraKernelArgs: [\"a\\x01b\", \"\\U0001F600\", \"x'y\\\"z\"]\n",
            "customization:\n  embeddedMachineConfiguration: \"a\\nb\\n c\\n\\n\"\n  meta:\n    - {key: 1, value: \"x\\ny\"}\n",
            "overlay:\n  image: i\n  name: n\n  options:\n    a: [[[[\"x\\ny\\nz\"], {k: [1, 2.5, 2001-12-14]}]]]\n    b: {\"\\u2028\": [true, ~]}\n",
        ];
        for input in inputs {
            let s = doc(input);
            let len = s.canonical().len() as u64;
            assert!(canonical_bound(&s) >= len, "{input:?}");
        }
    }

    #[test]
    fn deep_lines_count_their_indentation() {
        let nested = format!("{}a\nb{}", "[".repeat(200), "]".repeat(200));
        let s = doc(&format!(
            "overlay:\n  image: i\n  name: n\n  options:\n    x: {}\n",
            nested.replace("a\nb", "\"a\\nb\"")
        ));
        let len = s.canonical().len() as u64;
        // Both lines of the block scalar are indented by two columns per level.
        assert!(len > 2 * 400, "{len}");
        assert!(canonical_bound(&s) >= len);
    }
}
