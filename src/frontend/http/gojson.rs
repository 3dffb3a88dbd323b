//! A tiny JSON writer that reproduces Go's `json.Encoder` output byte for byte
//! (compact, HTML-safe escaping of `<`, `>`, `&`, U+2028, U+2029, trailing newline).

use std::fmt::Write;

/// Appends `s` as a Go-escaped JSON string literal (with quotes) to `out`.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Encodes an object of string members in the given order, like Go's encoder of a struct.
pub fn object_of_strings(members: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(members.iter().map(|(k, v)| k.len() + v.len() + 8).sum());
    out.push('{');
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(&mut out, k);
        out.push(':');
        push_str(&mut out, v);
    }
    out.push_str("}\n");
    out
}

/// Encodes an array of strings, like Go's encoder of a `[]string` (`null` never: empty is `[]`).
pub fn array_of_strings<S: AsRef<str>>(items: &[S]) -> String {
    let mut out = String::from("[");
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(&mut out, s.as_ref());
    }
    out.push_str("]\n");
    out
}

/// Encodes an array of objects of string members (each in the given member order).
pub fn array_of_objects(items: &[Vec<(&str, &str)>]) -> String {
    let mut out = String::from("[");
    for (i, members) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let obj = object_of_strings(members);
        out.push_str(obj.trim_end_matches('\n'));
    }
    out.push_str("]\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_compatible_escaping() {
        assert_eq!(
            object_of_strings(&[("id", "x"), ("schematic", "customization: {}\n")]),
            "{\"id\":\"x\",\"schematic\":\"customization: {}\\n\"}\n"
        );
        let mut s = String::new();
        push_str(
            &mut s,
            "<a>&\"\\\u{1}\u{8}\u{c}\t\r\u{2028}\u{2029}é€😀\u{7f}",
        );
        let expected = concat!(
            r#""\u003ca\u003e\u0026\"\\\u0001\b\f\t\r\u2028\u2029é€😀"#,
            "\u{7f}\""
        );
        assert_eq!(s, expected);
    }
}
