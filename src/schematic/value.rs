//! Free-form YAML values, as kept in `overlay.options` (go-yaml's `map[string]any`).

use std::fmt::Write as _;

use super::order::sorted_entries;
pub use crate::gocompat::yaml::Timestamp;
use crate::gocompat::yaml::{Node, Resolved};

/// A YAML value with go-yaml's native types.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// An unsigned integer above `i64::MAX`.
    Uint(u64),
    /// A 64-bit float.
    Float(f64),
    /// A timestamp (yaml v4 decodes timestamp-looking plain scalars into time values).
    Timestamp(Timestamp),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Value>),
    /// A mapping; keys are unique and kept in canonical (emission) order.
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// A resolved plain scalar as a free-form value (strings keep `text`).
    pub(crate) fn from_resolved(resolved: Resolved, text: &str) -> Value {
        match resolved {
            Resolved::Null => Value::Null,
            Resolved::Bool(b) => Value::Bool(b),
            Resolved::Int(i) => Value::Int(i),
            Resolved::Uint(u) => Value::Uint(u),
            Resolved::Float(f) => Value::Float(f),
            Resolved::Timestamp(t) => Value::Timestamp(t),
            Resolved::Merge | Resolved::Str => Value::Str(text.to_string()),
        }
    }

    /// The value with every mapping's entries in go-yaml's emission order, recursively.
    pub(crate) fn sorted(&self) -> Value {
        match self {
            Value::Seq(items) => Value::Seq(items.iter().map(Value::sorted).collect()),
            Value::Map(entries) => Value::Map(
                sorted_entries(entries)
                    .into_iter()
                    .map(|(k, v)| (k.sorted(), v.sorted()))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// The node go-yaml's encoder makes of this value; maps keep their entry order (see
    /// [`Value::sorted`]).
    pub(crate) fn node(&self) -> Node<'_> {
        match self {
            Value::Null => Node::Raw("null".into()),
            Value::Bool(b) => Node::Raw(b.to_string()),
            Value::Int(i) => Node::Raw(i.to_string()),
            Value::Uint(u) => Node::Raw(u.to_string()),
            Value::Float(f) => Node::Raw(format_go_float(*f)),
            Value::Timestamp(t) => Node::Raw(t.rfc3339_nano()),
            Value::Str(s) => Node::Str(s),
            Value::Seq(items) => Node::Seq(items.iter().map(Value::node).collect()),
            Value::Map(entries) => {
                Node::Map(entries.iter().map(|(k, v)| (k.node(), v.node())).collect())
            }
        }
    }

    /// Whether go-yaml's `omitempty` would consider this value empty (only used for maps/seqs).
    pub fn is_empty_collection(&self) -> bool {
        match self {
            Value::Seq(v) => v.is_empty(),
            Value::Map(m) => m.is_empty(),
            _ => false,
        }
    }
}

/// Formats a float like Go's `strconv.FormatFloat(f, 'g', -1, 64)` with go-yaml's
/// replacements for infinities and NaN.
pub fn format_go_float(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            ".inf".into()
        } else {
            "-.inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // Shortest round-trip digits and decimal exponent, from Rust's `{:e}`.
    let sci = format!("{:e}", f);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    // Go's shortest 'g' formatting switches to %e when exp < -4 || exp >= 6.
    if !(-4..6).contains(&exp) {
        // %e form: d[.ddd]e±XX
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let point = (exp + 1) as usize;
        if digits.len() <= point {
            out.push_str(&digits);
            for _ in digits.len()..point {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..point]);
            out.push('.');
            out.push_str(&digits[point..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_float_formatting() {
        assert_eq!(format_go_float(1.0), "1");
        assert_eq!(format_go_float(2.5), "2.5");
        assert_eq!(format_go_float(-0.5), "-0.5");
        assert_eq!(format_go_float(1e6), "1e+06");
        assert_eq!(format_go_float(123456.0), "123456");
        assert_eq!(format_go_float(1234567.0), "1.234567e+06");
        assert_eq!(format_go_float(0.0001), "0.0001");
        assert_eq!(format_go_float(0.00001), "1e-05");
        assert_eq!(format_go_float(1e21), "1e+21");
        assert_eq!(format_go_float(1.5e300), "1.5e+300");
        assert_eq!(format_go_float(f64::INFINITY), ".inf");
        assert_eq!(format_go_float(-0.0), "-0");
    }

    #[test]
    fn nested_layout() {
        use crate::gocompat::yaml::{Flavour, document};
        let v = Value::Map(vec![
            (
                Value::Str("b".into()),
                Value::Seq(vec![
                    Value::Int(1),
                    Value::Map(vec![
                        (Value::Str("x".into()), Value::Null),
                        (Value::Str("w".into()), Value::Bool(true)),
                    ]),
                ]),
            ),
            (Value::Str("a".into()), Value::Map(vec![])),
            (
                Value::Str("c".into()),
                Value::Seq(vec![Value::Seq(vec![Value::Str("q".into())])]),
            ),
        ]);
        let sorted = v.sorted();
        let doc = document(&Node::map(vec![("o", sorted.node())]), Flavour::V4);
        assert_eq!(
            doc,
            "o:\n    a: {}\n    b:\n        - 1\n        - w: true\n          x: null\n    c:\n        - - q\n"
        );
    }
}
