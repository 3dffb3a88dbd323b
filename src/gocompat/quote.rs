//! Go's `strconv.Quote`, which both `%q` and `%#v` use for a string.

use std::fmt::Write as _;

/// Go's `strconv.Quote` (also `%q` and `%#v` of a string): double quotes, `\"` and `\\`, C escapes
/// for `\a\b\f\n\r\t\v`, `\xNN` for other ASCII controls, `\uNNNN`/`\UNNNNNNNN` for runes Go does
/// not consider printable.
///
/// Upstream's imager errors use `%q`; go-yaml's "mapping key ... already defined" uses `%#v`;
/// both end in `strconv.Quote`, so both callers share this one rule.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if !is_print(c) => {
                if (c as u32) < 0x10000 {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                } else {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `strconv.IsPrint` beyond ASCII: controls, format characters,
/// private-use and surrogate code points, and separators other than the ASCII space are not
/// printable (unassigned code points are treated as printable).
fn is_print(c: char) -> bool {
    if c.is_control() {
        return false;
    }
    let u = c as u32;
    !matches!(u,
        0x00ad | 0x0600..=0x0605 | 0x061c | 0x06dd | 0x070f | 0x180e
        | 0x200b..=0x200f | 0x2028..=0x202e | 0x2060..=0x2064 | 0x2066..=0x206f
        | 0xfeff | 0xfff9..=0xfffb | 0xe000..=0xf8ff | 0xd800..=0xdfff
        | 0xa0 | 0x1680 | 0x2000..=0x200a | 0x202f | 0x205f | 0x3000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_like_go() {
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quote("x\ny\u{1}\u{7f}"), r#""x\ny\x01\x7f""#);
        assert_eq!(quote("é\u{200b}"), "\"é\\u200b\"");
        assert_eq!(quote("\u{feff}\u{85}\u{1f600}"), "\"\\ufeff\\u0085😀\"");
    }

    #[test]
    fn separators_and_format_characters_are_escaped() {
        // strconv.Quote("a\u00a0b\u2028c\u00ad") == `"a\u00a0b\u2028c\u00ad"`
        assert_eq!(
            quote("a\u{a0}b\u{2028}c\u{ad}"),
            r#""a\u00a0b\u2028c\u00ad""#
        );
    }
}
