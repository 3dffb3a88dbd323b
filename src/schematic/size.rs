//! An upper bound of a schematic's canonical size, known before it is emitted.
//!
//! The canonical form indents every line by its nesting level, so a document within the body
//! limit can ask for hundreds of MiB of output (a few hundred nested collections, or a
//! multi-line string deep inside them). Parsing refuses such schematics instead of writing them.

use super::Schematic;
use super::value::Value;

/// Most bytes a canonical form may have (16 times the request body limit).
pub(super) const MAX_CANONICAL_BYTES: u64 = 16 << 20;

/// At least the length of `s.canonical()`, following the emitter's layout: the indent of every
/// line, and an upper bound of each scalar's escaped text.
pub(super) fn canonical_bound(s: &Schematic) -> u64 {
    let c = &s.customization;
    // Single fields: `owner`, `overlay.image`, `customization.secureboot.enrollKeys`, ...
    let fields = [
        &s.owner,
        &s.overlay.image,
        &s.overlay.name,
        &c.embedded_machine_configuration,
        &c.secureboot.enroll_keys,
    ];
    let mut total: u64 = 1024;
    for t in fields {
        total = total.saturating_add(line(8, 32).saturating_add(text(t, 12)));
    }
    // `- item` at 8 under `customization.extraKernelArgs`, at 12 under `officialExtensions`.
    for t in &c.extra_kernel_args {
        total = total.saturating_add(line(8, 2).saturating_add(text(t, 10)));
    }
    for t in &c.system_extensions.official_extensions {
        total = total.saturating_add(line(12, 2).saturating_add(text(t, 14)));
    }
    // `- key: 255` at 8, `value: ...` at 10.
    for m in &c.meta {
        let lines = line(8, 10).saturating_add(line(10, 7));
        total = total.saturating_add(lines.saturating_add(text(&m.value, 12)));
    }
    // `overlay.options` entries at 8.
    for (k, v) in &s.overlay.options {
        let entry = entry(8, simple_key(k), text(k, 12), value(v, 8, false));
        total = total.saturating_add(entry);
    }
    total
}

/// A new line at `indent` starting with `prefix` bytes (`- `, `key: `).
fn line(indent: u64, prefix: u64) -> u64 {
    1 + indent + prefix
}

/// A mapping entry at `indent` whose key and value cost `key` and `value`.
fn entry(indent: u64, simple: bool, key: u64, value: u64) -> u64 {
    // A complex key (`? key`, then `: value`) takes a second line.
    let lines = if simple { 1 } else { 2 };
    (lines * line(indent, 2))
        .saturating_add(key)
        .saturating_add(value)
}

/// Whether a key is certainly written as a simple `key:` (the emitter's `key_is_complex`).
fn simple_key(k: &str) -> bool {
    k.len() <= 128 && !k.contains(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'])
}

/// The emitter's `child_indent` below a collection written at `indent`.
fn child_indent(indent: u64, seq_item: bool) -> u64 {
    if seq_item {
        indent + 2
    } else {
        4 * (indent / 4 + 1)
    }
}

/// A scalar whose continuation lines (block and single-quoted styles) are indented to
/// `indent`: a leading space, quotes or a block header, and the text escaped at worst.
fn text(s: &str, indent: u64) -> u64 {
    let mut bytes: u64 = 5;
    for c in s.chars() {
        bytes += match c {
            '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' => 2 + indent,
            '\'' | '"' | '\\' => 2,
            ' '..='~' => 1,
            // `\xXX` at worst.
            c if c.is_ascii() => 4,
            // `\uXXXX` or `\UXXXXXXXX` at worst.
            c if c.len_utf8() < 4 => 6,
            _ => 10,
        };
    }
    bytes
}

/// A free-form value written below a collection at `indent` (as a sequence item or not).
fn value(v: &Value, indent: u64, seq_item: bool) -> u64 {
    let inner = child_indent(indent, seq_item);
    match v {
        Value::Str(s) => text(s, inner),
        Value::Seq(items) => items.iter().fold(3, |sum, item| {
            sum.saturating_add(line(inner, 2))
                .saturating_add(value(item, inner, true))
        }),
        Value::Map(entries) => entries.iter().fold(3, |sum, (k, v)| {
            let simple = match k {
                Value::Str(k) => simple_key(k),
                Value::Seq(_) | Value::Map(_) => false,
                _ => true,
            };
            let key = value(k, inner, false);
            sum.saturating_add(entry(inner, simple, key, value(v, inner, false)))
        }),
        // ` ` and the longest spelling: `null`, `false`, `-9223372036854775808`,
        // `-2.2250738585072014e-308`, `2006-01-02T15:04:05.999999999-07:00`.
        Value::Null => 5,
        Value::Bool(_) => 6,
        Value::Int(_) | Value::Uint(_) => 21,
        Value::Float(_) => 25,
        Value::Timestamp(_) => 36,
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
            "overlay:\n  options:\n    a: [{a: }, {b: [{c: {d: [[x, y]]}}]}]\n    ? \"k\\nl\"\n    : {? \"m\\nn\" : [-9223372036854775808, -2.2250738585072014e-308]}\n",
            "customization:\n  extraKernelArgs: [x, '', \"\\x01\\x02\"]\n  systemExtensions: {officialExtensions: [a, b]}\n  secureboot: {enrollKeys: \"it's\"}\n  meta: [{key: 255, value: ''}]\n",
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
