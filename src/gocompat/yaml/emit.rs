//! The emitter: go-yaml's block layout (indent 4, indented sequences, no folding), the style its
//! encoder requests for a string and the emitter's downgrades of that style, byte for byte.

use super::Flavour;
use super::resolve::{Resolved, is_base60_float, is_old_bool, resolve_plain};

/// Longest key go-yaml writes as a simple `key:`; longer keys become `? key` entries.
const MAX_SIMPLE_KEY: usize = 128;

/// Scalar styles, as go-yaml's encoder requests them and its emitter finally writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

/// Where a node is written: as a sequence item, as a mapping value, or as a mapping key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    SeqItem,
    MapValue,
    Key,
}

/// A node to emit, as go-yaml's encoder sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    /// A string scalar (style chosen by go-yaml's string rules for the [`Flavour`]).
    Str(&'a str),
    /// A non-string scalar written plain as is (integers, floats, booleans, `null`, timestamps).
    Raw(String),
    /// A block sequence (`[]` when empty).
    Seq(Vec<Node<'a>>),
    /// A block mapping with its entries in the given order (`{}` when empty).
    Map(Vec<(Node<'a>, Node<'a>)>),
}

impl<'a> Node<'a> {
    /// A mapping with string keys, in the given order.
    pub fn map(entries: Vec<(&'a str, Node<'a>)>) -> Node<'a> {
        Node::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Node::Str(k), v))
                .collect(),
        )
    }
}

/// Serialises a document whose root is a mapping, as go-yaml of `flavour` marshals it.
pub fn document(root: &Node<'_>, flavour: Flavour) -> String {
    let mut e = Emitter {
        out: String::new(),
        column: 0,
        whitespace: true,
        indention: true,
        flavour,
    };
    e.node(root, -1, Slot::MapValue);
    // Document end: finish the last line (go-yaml writes no `...` marker here, even after a
    // keep-chomped literal block; checked against the golden corpus).
    e.write_indent(0);
    e.out
}

/// The emitter state go-yaml's layout decisions depend on.
struct Emitter {
    out: String,
    /// Column of the next character.
    column: usize,
    /// The last character written was whitespace (or nothing yet on this line).
    whitespace: bool,
    /// Only indentation has been written on the current line so far.
    indention: bool,
    /// Whose string style rules apply.
    flavour: Flavour,
}

/// go-yaml's indentation rule: the first indent inside a sequence item skips `- `, everything
/// else aligns to the next multiple of four.
fn child_indent(indent: i64, slot: Slot) -> i64 {
    if indent < 0 {
        0
    } else if slot == Slot::SeqItem {
        indent + 2
    } else {
        4 * ((indent + 4) / 4)
    }
}

impl Emitter {
    fn put_char(&mut self, c: char) {
        self.out.push(c);
        self.column += 1;
    }

    fn put_break(&mut self) {
        self.out.push('\n');
        self.column = 0;
        self.indention = true;
    }

    /// A line break that is part of a scalar's content.
    fn write_break(&mut self, c: char) {
        if c == '\n' {
            self.put_break();
        } else {
            self.out.push(c);
            self.column = 0;
            self.indention = true;
        }
    }

    /// `yaml_emitter_write_indent`: start a new line if needed, then pad to `indent`.
    fn write_indent(&mut self, indent: i64) {
        let indent = indent.max(0) as usize;
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.put_break();
        }
        while self.column < indent {
            self.put_char(' ');
        }
        self.whitespace = true;
        self.indention = true;
    }

    /// `yaml_emitter_write_indicator`.
    fn write_indicator(&mut self, text: &str, need_ws: bool, is_ws: bool, is_indention: bool) {
        if need_ws && !self.whitespace {
            self.put_char(' ');
        }
        for c in text.chars() {
            self.put_char(c);
        }
        self.whitespace = is_ws;
        self.indention = self.indention && is_indention;
    }

    /// A block sequence (or `[]` when empty); `item` writes one element at the items' indent.
    fn block_seq<T>(
        &mut self,
        items: &[T],
        indent: i64,
        slot: Slot,
        mut item: impl FnMut(&mut Self, &T, i64),
    ) {
        if items.is_empty() {
            return self.flow_empty("[", "]");
        }
        let inner = child_indent(indent, slot);
        for it in items {
            self.write_indent(inner);
            self.write_indicator("-", true, false, true);
            item(self, it, inner);
        }
    }

    /// Writes `node` in `slot`; `indent` is the indent of the enclosing collection.
    fn node(&mut self, node: &Node<'_>, indent: i64, slot: Slot) {
        match node {
            Node::Str(s) => self.scalar(s, requested_string_style(s, self.flavour), indent, slot),
            Node::Raw(s) => self.scalar(s, Style::Plain, indent, slot),
            Node::Seq(items) => self.block_seq(items, indent, slot, |e, item, inner| {
                e.node(item, inner, Slot::SeqItem)
            }),
            Node::Map(entries) => {
                if entries.is_empty() {
                    return self.flow_empty("{", "}");
                }
                let inner = child_indent(indent, slot);
                for (k, v) in entries {
                    self.write_indent(inner);
                    if key_is_complex(k) {
                        self.write_indicator("?", true, false, true);
                        self.node(k, inner, Slot::MapValue);
                        self.write_indent(inner);
                        self.write_indicator(":", true, false, true);
                    } else {
                        self.node(k, inner, Slot::Key);
                        self.write_indicator(":", false, false, false);
                    }
                    self.node(v, inner, Slot::MapValue);
                }
            }
        }
    }

    fn flow_empty(&mut self, open: &str, close: &str) {
        self.write_indicator(open, true, true, false);
        self.write_indicator(close, false, false, false);
    }

    /// Writes a scalar with the requested style, downgraded as go-yaml's emitter does.
    fn scalar(&mut self, s: &str, requested: Style, indent: i64, slot: Slot) {
        let a = analyze(s);
        let simple_key = slot == Slot::Key;
        let mut style = requested;
        if simple_key && a.multiline {
            style = Style::Double;
        }
        if style == Style::Plain && (!a.block_plain_allowed || (s.is_empty() && simple_key)) {
            style = Style::Single;
        }
        if style == Style::Single && !a.single_quoted_allowed {
            style = Style::Double;
        }
        if style == Style::Literal && (!a.block_allowed || simple_key) {
            style = Style::Double;
        }
        // Scalars are written one indentation step in, which only shows in continuation lines.
        let scalar_indent = child_indent(indent, if simple_key { Slot::MapValue } else { slot });
        match style {
            Style::Plain => {
                if !s.is_empty() && !self.whitespace {
                    self.put_char(' ');
                }
                for c in s.chars() {
                    self.put_char(c);
                }
                self.whitespace = false;
                self.indention = false;
            }
            Style::Single => self.single_quoted(s, scalar_indent),
            Style::Double => self.double_quoted(s),
            Style::Literal => self.literal(s, scalar_indent),
        }
    }

    fn single_quoted(&mut self, s: &str, indent: i64) {
        self.write_indicator("'", true, false, false);
        let mut breaks = false;
        for c in s.chars() {
            if is_break(c) {
                if !breaks && c == '\n' {
                    self.put_break();
                }
                self.write_break(c);
                breaks = true;
            } else {
                if breaks {
                    self.write_indent(indent);
                }
                if c == '\'' {
                    self.put_char('\'');
                }
                self.put_char(c);
                self.indention = false;
                breaks = false;
            }
        }
        self.write_indicator("'", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn double_quoted(&mut self, s: &str) {
        self.write_indicator("\"", true, false, false);
        for c in s.chars() {
            if !is_printable(c) || is_break(c) || c == '"' || c == '\\' {
                self.put_char('\\');
                let escaped = match c {
                    '\0' => "0".to_string(),
                    '\u{7}' => "a".to_string(),
                    '\u{8}' => "b".to_string(),
                    '\t' => "t".to_string(),
                    '\n' => "n".to_string(),
                    '\u{b}' => "v".to_string(),
                    '\u{c}' => "f".to_string(),
                    '\r' => "r".to_string(),
                    '\u{1b}' => "e".to_string(),
                    '"' => "\"".to_string(),
                    '\\' => "\\".to_string(),
                    '\u{85}' => "N".to_string(),
                    '\u{a0}' => "_".to_string(),
                    '\u{2028}' => "L".to_string(),
                    '\u{2029}' => "P".to_string(),
                    _ => {
                        let v = c as u32;
                        if v <= 0xFF {
                            format!("x{v:02X}")
                        } else if v <= 0xFFFF {
                            format!("u{v:04X}")
                        } else {
                            format!("U{v:08X}")
                        }
                    }
                };
                for e in escaped.chars() {
                    self.put_char(e);
                }
            } else {
                self.put_char(c);
            }
        }
        self.write_indicator("\"", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn literal(&mut self, s: &str, indent: i64) {
        self.write_indicator("|", true, false, false);
        // The indentation indicator: v3 writes it for content that starts with a space or a
        // line break, v4 only for a leading space.
        let hint = match self.flavour {
            Flavour::V3 => s.starts_with(' ') || s.starts_with(is_break),
            Flavour::V4 => s.starts_with(' '),
        };
        if hint {
            self.put_char('4');
        }
        let chars: Vec<char> = s.chars().collect();
        let mut keep = false;
        match chars.last() {
            None => self.put_char('-'),
            Some(&last) if !is_break(last) => self.put_char('-'),
            Some(_) if chars.len() == 1 => keep = true,
            Some(_) => keep = is_break(chars[chars.len() - 2]),
        }
        if keep {
            self.put_char('+');
        }
        // v3 writes no line break after the header: a leading break of the content ends the
        // header line (so one leading empty line is lost, as in go-yaml v3.0.1); v4 breaks here.
        if self.flavour == Flavour::V4 {
            self.put_break();
        }
        self.whitespace = true;
        let mut breaks = true;
        for &c in &chars {
            if is_break(c) {
                self.write_break(c);
                breaks = true;
            } else {
                if breaks {
                    self.write_indent(indent);
                    breaks = false;
                }
                self.put_char(c);
                self.indention = false;
            }
        }
    }
}

/// Whether a map key must be written as a complex `? key` entry (`yaml_emitter_check_simple_key`).
fn key_is_complex(k: &Node<'_>) -> bool {
    match k {
        Node::Str(s) => s.len() > MAX_SIMPLE_KEY || analyze(s).multiline,
        Node::Raw(s) => s.len() > MAX_SIMPLE_KEY,
        Node::Seq(v) => !v.is_empty(),
        Node::Map(m) => !m.is_empty(),
    }
}

/// The style go-yaml's encoder requests for a string (before the emitter's downgrades).
fn requested_string_style(s: &str, flavour: Flavour) -> Style {
    match flavour {
        // v3 `encoder.stringv`: a newline asks for a literal block; a plain scalar that would
        // resolve to another type (but `<<`, which stays plain) or reads as a YAML 1.1 boolean
        // or base-60 float is double-quoted.
        Flavour::V3 => {
            if s.contains('\n') {
                Style::Literal
            } else if !matches!(resolve_plain(s), Resolved::Str | Resolved::Merge)
                || is_old_bool(s)
                || is_base60_float(s)
            {
                Style::Double
            } else {
                Style::Plain
            }
        }
        // v4: literal blocks only for text with something besides whitespace; the YAML 1.1 words,
        // base-60 floats and `<<` are single-quoted.
        Flavour::V4 => {
            if s.contains('\n') {
                let literal = s.len() >= 2 && s.chars().any(|c| !c.is_whitespace());
                if literal {
                    Style::Literal
                } else {
                    Style::Double
                }
            } else if is_old_bool(s) || is_base60_float(s) || s == "<<" {
                Style::Single
            } else if resolve_plain(s) != Resolved::Str {
                Style::Double
            } else {
                Style::Plain
            }
        }
    }
}

struct Analysis {
    multiline: bool,
    block_plain_allowed: bool,
    single_quoted_allowed: bool,
    block_allowed: bool,
}

fn is_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// go-yaml's `is_printable` (note: NEL and characters beyond the BMP are not printable there).
fn is_printable(c: char) -> bool {
    let v = c as u32;
    c == '\n'
        || (0x20..=0x7E).contains(&v)
        || (0xA0..=0xD7FF).contains(&v)
        || ((0xE000..=0xFFFD).contains(&v) && v != 0xFEFF)
}

/// `yaml_emitter_analyze_scalar`: which styles can represent `s` in block context.
fn analyze(s: &str) -> Analysis {
    if s.is_empty() {
        return Analysis {
            multiline: false,
            block_plain_allowed: true,
            single_quoted_allowed: true,
            block_allowed: false,
        };
    }
    let chars: Vec<char> = s.chars().collect();
    let mut block_indicators = s.starts_with("---") || s.starts_with("...");
    let (mut line_breaks, mut special, mut tabs) = (false, false, false);
    let (mut leading_space, mut leading_break, mut trailing_space, mut trailing_break) =
        (false, false, false, false);
    let (mut break_space, mut space_break) = (false, false);
    let (mut previous_space, mut previous_break) = (false, false);
    let mut preceded_by_ws = true;
    let blankz = |c: char| c == ' ' || c == '\t' || is_break(c) || c == '\0';
    for (i, &c) in chars.iter().enumerate() {
        let followed_by_ws = i + 1 >= chars.len() || matches!(chars[i + 1], ' ' | '\t');
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => block_indicators = true,
                '?' | ':' if followed_by_ws => block_indicators = true,
                '-' if followed_by_ws => block_indicators = true,
                _ => {}
            }
        } else {
            match c {
                ':' if followed_by_ws => block_indicators = true,
                '#' if preceded_by_ws => block_indicators = true,
                _ => {}
            }
        }
        if c == '\t' {
            tabs = true;
        } else if !is_printable(c) {
            special = true;
        }
        if c == ' ' {
            if i == 0 {
                leading_space = true;
            }
            if i + 1 == chars.len() {
                trailing_space = true;
            }
            if previous_break {
                break_space = true;
            }
            previous_space = true;
            previous_break = false;
        } else if is_break(c) {
            line_breaks = true;
            if i == 0 {
                leading_break = true;
            }
            if i + 1 == chars.len() {
                trailing_break = true;
            }
            if previous_space {
                space_break = true;
            }
            previous_space = false;
            previous_break = true;
        } else {
            previous_space = false;
            previous_break = false;
        }
        preceded_by_ws = blankz(c);
    }
    let mut a = Analysis {
        multiline: line_breaks,
        block_plain_allowed: true,
        single_quoted_allowed: true,
        block_allowed: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.block_plain_allowed = false;
    }
    if trailing_space {
        a.block_allowed = false;
    }
    if break_space {
        a.block_plain_allowed = false;
        a.single_quoted_allowed = false;
    }
    if space_break || tabs || special {
        a.block_plain_allowed = false;
        a.single_quoted_allowed = false;
    }
    if space_break || special {
        a.block_allowed = false;
    }
    if line_breaks || block_indicators {
        a.block_plain_allowed = false;
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(s: &str) -> String {
        document(
            &Node::map(vec![("k", Node::Seq(vec![Node::Str(s)]))]),
            Flavour::V4,
        )
    }

    /// `k: <value>` as go-yaml of `flavour` writes it.
    fn doc(flavour: Flavour, s: &str) -> String {
        document(&Node::map(vec![("k", Node::Str(s))]), flavour)
    }

    #[test]
    fn string_styles() {
        assert_eq!(item("vga=791"), "k:\n    - vga=791\n");
        assert_eq!(item("{}"), "k:\n    - '{}'\n");
        assert_eq!(item("it's: x"), "k:\n    - 'it''s: x'\n");
        assert_eq!(item("10"), "k:\n    - \"10\"\n");
        assert_eq!(item(""), "k:\n    - \"\"\n");
        assert_eq!(item("yes"), "k:\n    - 'yes'\n");
        assert_eq!(item("1:20"), "k:\n    - '1:20'\n");
        assert_eq!(item("a\tb"), "k:\n    - \"a\\tb\"\n");
        assert_eq!(item("-"), "k:\n    - '-'\n");
        assert_eq!(item("-x"), "k:\n    - -x\n");
        assert_eq!(item("a:b"), "k:\n    - a:b\n");
        assert_eq!(item("a #b"), "k:\n    - 'a #b'\n");
        assert_eq!(item("a#b"), "k:\n    - a#b\n");
        assert_eq!(item(" x"), "k:\n    - ' x'\n");
        assert_eq!(item("2001-12-14"), "k:\n    - \"2001-12-14\"\n");
        assert_eq!(item("é日本"), "k:\n    - é日本\n");
        assert_eq!(item("😀"), "k:\n    - \"\\U0001F600\"\n");
        assert_eq!(item("\u{feff}x"), "k:\n    - \"\\uFEFFx\"\n");
    }

    #[test]
    fn literal_blocks() {
        let doc = |s: &str| doc(Flavour::V4, s);
        assert_eq!(doc("a\nb\n"), "k: |\n    a\n    b\n");
        assert_eq!(doc("a\nb"), "k: |-\n    a\n    b\n");
        assert_eq!(doc("a\n\nb\n"), "k: |\n    a\n\n    b\n");
        assert_eq!(doc("a\n\n"), "k: |+\n    a\n\n");
        assert_eq!(doc(" a\n"), "k: |4\n     a\n");
        assert_eq!(doc("\na\n"), "k: |\n\n    a\n");
        assert_eq!(doc("a \nb"), "k: \"a \\nb\"\n");
        assert_eq!(doc("\n"), "k: \"\\n\"\n");
        assert_eq!(doc(" \n "), "k: \" \\n \"\n");
        let seq = document(
            &Node::map(vec![("k", Node::Seq(vec![Node::Str("a\nb\n")]))]),
            Flavour::V4,
        );
        assert_eq!(seq, "k:\n    - |\n      a\n      b\n");
    }

    /// go-yaml v3 (Talos's manifests and `extensions.yaml`): the same emitter, with v3's encoder
    /// choices for YAML 1.1 words, base-60 floats, `<<` and whitespace-only multi-line text.
    #[test]
    fn v3_string_styles() {
        let v3 = |s: &str| doc(Flavour::V3, s);
        assert_eq!(v3("iscsi-tools"), "k: iscsi-tools\n");
        assert_eq!(v3("v0.2.0"), "k: v0.2.0\n");
        assert_eq!(v3("2.1.12-v1.10.0"), "k: 2.1.12-v1.10.0\n");
        assert_eq!(
            v3("Image Factory (http://127.0.0.1:8080)"),
            "k: Image Factory (http://127.0.0.1:8080)\n"
        );
        assert_eq!(v3(">= v1.1.0"), "k: '>= v1.1.0'\n");
        assert_eq!(v3("[core] x"), "k: '[core] x'\n");
        assert_eq!(v3("a: b"), "k: 'a: b'\n");
        assert_eq!(v3("a #b"), "k: 'a #b'\n");
        assert_eq!(v3("a#b"), "k: a#b\n");
        assert_eq!(v3("- x"), "k: '- x'\n");
        assert_eq!(v3("-x"), "k: -x\n");
        assert_eq!(v3(""), "k: \"\"\n");
        assert_eq!(v3("1.2"), "k: \"1.2\"\n");
        assert_eq!(v3("20230804"), "k: \"20230804\"\n");
        assert_eq!(v3("0x1F"), "k: \"0x1F\"\n");
        assert_eq!(v3("true"), "k: \"true\"\n");
        assert_eq!(v3("yes"), "k: \"yes\"\n");
        assert_eq!(v3("<<"), "k: <<\n");
        assert_eq!(v3("2001-12-14"), "k: \"2001-12-14\"\n");
        assert_eq!(v3("1:20"), "k: \"1:20\"\n");
        assert_eq!(v3("6.1.0-56-amd64"), "k: 6.1.0-56-amd64\n");
        assert_eq!(v3("a\tb"), "k: \"a\\tb\"\n");
        assert_eq!(v3("a\nb\n"), "k: |\n    a\n    b\n");
        assert_eq!(v3("a \nb\n"), "k: \"a \\nb\\n\"\n");
        assert_eq!(v3("\n"), "k: |4+\n");
        assert_eq!(v3("\nfoo\n"), "k: |4\n    foo\n");
    }

    #[test]
    fn v3_literal_blocks_and_chomping() {
        let v3 = |s: &str| doc(Flavour::V3, s);
        assert_eq!(v3("x\n\ny"), "k: |-\n    x\n\n    y\n");
        assert_eq!(v3(" x\n"), "k: |4\n     x\n");
        assert_eq!(v3("x\n\n"), "k: |+\n    x\n\n");
        let nested = document(
            &Node::map(vec![("m", Node::map(vec![("d", Node::Str("x\ny\n"))]))]),
            Flavour::V3,
        );
        assert_eq!(nested, "m:\n    d: |\n        x\n        y\n");
    }

    /// Indentation inside a sequence item: the item's mapping starts after `- `, anything nested
    /// in it aligns to the next multiple of four (go-yaml's `yaml_emitter_increase_indent`).
    #[test]
    fn nested_in_sequence_items() {
        let d = document(
            &Node::map(vec![(
                "l",
                Node::Seq(vec![Node::map(vec![
                    ("a", Node::Str("x")),
                    ("m", Node::map(vec![("b", Node::Str("y\nz\n"))])),
                ])]),
            )]),
            Flavour::V3,
        );
        assert_eq!(
            d,
            "l:\n    - a: x\n      m:\n        b: |\n            y\n            z\n"
        );
    }

    #[test]
    fn complex_and_empty_keys() {
        let long = "k".repeat(MAX_SIMPLE_KEY + 1);
        let d = document(
            &Node::Map(vec![
                (Node::Str(&long), Node::Raw("1".into())),
                (Node::Seq(vec![]), Node::Map(vec![])),
            ]),
            Flavour::V4,
        );
        assert_eq!(d, format!("? {long}\n: 1\n[]: {{}}\n"));
    }
}
