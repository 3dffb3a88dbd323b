//! The canonical emitter: go-yaml's block layout (indent 4, indented sequences, no folding) and
//! its scalar style choice, reproduced byte for byte for the shapes a schematic can take.

use super::order::sorted_entries;
use super::resolve::{Resolved, is_base60_float, is_old_bool, resolve_plain};
use super::value::{Value, format_go_float};

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

/// A node to emit: either a free-form value or an ordered mapping of fixed keys.
pub(crate) enum Node<'a> {
    /// A string scalar (style chosen by the string rules).
    Str(&'a str),
    /// A scalar written plain as is (integers, booleans, `null`).
    Raw(String),
    /// A free-form value (overlay options).
    Value(&'a Value),
    /// A block sequence.
    Seq(Vec<Node<'a>>),
    /// A block mapping with keys in the given order.
    Map(Vec<(&'a str, Node<'a>)>),
}

/// Serialises a document whose root is a mapping.
pub(crate) fn document(root: Node<'_>) -> String {
    let mut e = Emitter {
        out: String::new(),
        column: 0,
        whitespace: true,
        indention: true,
    };
    e.node(&root, -1, Slot::MapValue);
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
            Node::Str(s) => self.string(s, indent, slot),
            Node::Raw(s) => self.scalar(s, Style::Plain, indent, slot),
            Node::Value(v) => self.value(v, indent, slot),
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
                    self.string(k, inner, Slot::Key);
                    self.write_indicator(":", false, false, false);
                    self.node(v, inner, Slot::MapValue);
                }
            }
        }
    }

    fn value(&mut self, v: &Value, indent: i64, slot: Slot) {
        match v {
            Value::Null => self.scalar("null", Style::Plain, indent, slot),
            Value::Bool(b) => self.scalar(
                if *b { "true" } else { "false" },
                Style::Plain,
                indent,
                slot,
            ),
            Value::Int(i) => self.scalar(&i.to_string(), Style::Plain, indent, slot),
            Value::Uint(u) => self.scalar(&u.to_string(), Style::Plain, indent, slot),
            Value::Float(f) => self.scalar(&format_go_float(*f), Style::Plain, indent, slot),
            Value::Timestamp(t) => self.scalar(&t.rfc3339_nano(), Style::Plain, indent, slot),
            Value::Str(s) => self.string(s, indent, slot),
            Value::Seq(items) => self.block_seq(items, indent, slot, |e, item, inner| {
                e.value(item, inner, Slot::SeqItem)
            }),
            Value::Map(entries) => {
                if entries.is_empty() {
                    return self.flow_empty("{", "}");
                }
                let inner = child_indent(indent, slot);
                for (k, val) in sorted_entries(entries) {
                    self.write_indent(inner);
                    if key_is_complex(k) {
                        self.write_indicator("?", true, false, true);
                        self.value(k, inner, Slot::MapValue);
                        self.write_indent(inner);
                        self.write_indicator(":", true, false, true);
                    } else {
                        self.value(k, inner, Slot::Key);
                        self.write_indicator(":", false, false, false);
                    }
                    self.value(val, inner, Slot::MapValue);
                }
            }
        }
    }

    fn flow_empty(&mut self, open: &str, close: &str) {
        self.write_indicator(open, true, true, false);
        self.write_indicator(close, false, false, false);
    }

    fn string(&mut self, s: &str, indent: i64, slot: Slot) {
        self.scalar(s, requested_string_style(s), indent, slot)
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
        if s.starts_with(' ') {
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
        self.put_break();
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

/// Whether a free-form map key must be written as a complex `? key` entry.
fn key_is_complex(k: &Value) -> bool {
    match k {
        Value::Str(s) => s.len() > MAX_SIMPLE_KEY || analyze(s).multiline,
        Value::Seq(v) => !v.is_empty(),
        Value::Map(m) => !m.is_empty(),
        _ => false,
    }
}

/// The style go-yaml's encoder requests for a string (before the emitter's downgrades).
fn requested_string_style(s: &str) -> Style {
    if s.contains('\n') {
        let literal = s.len() >= 2 && s.chars().any(|c| !c.is_whitespace());
        return if literal {
            Style::Literal
        } else {
            Style::Double
        };
    }
    if is_old_bool(s) || is_base60_float(s) || s == "<<" {
        return Style::Single;
    }
    if resolve_plain(s) != Resolved::Str {
        return Style::Double;
    }
    Style::Plain
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
        document(Node::Map(vec![("k", Node::Seq(vec![Node::Str(s)]))]))
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
        let doc = |s: &str| document(Node::Map(vec![("k", Node::Str(s))]));
        assert_eq!(doc("a\nb\n"), "k: |\n    a\n    b\n");
        assert_eq!(doc("a\nb"), "k: |-\n    a\n    b\n");
        assert_eq!(doc("a\n\nb\n"), "k: |\n    a\n\n    b\n");
        assert_eq!(doc("a\n\n"), "k: |+\n    a\n\n");
        assert_eq!(doc(" a\n"), "k: |4\n     a\n");
        assert_eq!(doc("a \nb"), "k: \"a \\nb\"\n");
        assert_eq!(doc("\n"), "k: \"\\n\"\n");
        assert_eq!(doc(" \n "), "k: \" \\n \"\n");
        let seq = document(Node::Map(vec![("k", Node::Seq(vec![Node::Str("a\nb\n")]))]));
        assert_eq!(seq, "k:\n    - |\n      a\n      b\n");
    }

    #[test]
    fn nested_layout() {
        let v = Value::Map(vec![
            (
                Value::Str("b".into()),
                Value::Seq(vec![
                    Value::Int(1),
                    Value::Map(vec![
                        (Value::Str("w".into()), Value::Bool(true)),
                        (Value::Str("x".into()), Value::Null),
                    ]),
                ]),
            ),
            (Value::Str("a".into()), Value::Map(vec![])),
            (
                Value::Str("c".into()),
                Value::Seq(vec![Value::Seq(vec![Value::Str("q".into())])]),
            ),
        ]);
        let doc = document(Node::Map(vec![("o", Node::Value(&v))]));
        assert_eq!(
            doc,
            "o:\n    a: {}\n    b:\n        - 1\n        - w: true\n          x: null\n    c:\n        - - q\n"
        );
    }
}
