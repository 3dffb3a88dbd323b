//! Free-form YAML values, as kept in `overlay.options` (go-yaml's `map[string]any`).

use std::fmt::Write as _;

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

/// A parsed timestamp, re-emitted in RFC 3339 form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// Year (four digits).
    pub year: i32,
    /// Month 1..=12.
    pub month: u8,
    /// Day of month.
    pub day: u8,
    /// Hour 0..=23.
    pub hour: u8,
    /// Minute 0..=59.
    pub minute: u8,
    /// Second 0..=59.
    pub second: u8,
    /// Nanoseconds.
    pub nanos: u32,
    /// Offset from UTC in minutes (0 renders as `Z`).
    pub offset_minutes: i32,
}

impl Timestamp {
    /// Go's `time.RFC3339Nano` rendering (trailing fractional zeros removed, `Z` for UTC).
    pub fn rfc3339_nano(&self) -> String {
        let mut s = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        );
        if self.nanos != 0 {
            let frac = format!("{:09}", self.nanos);
            s.push('.');
            s.push_str(frac.trim_end_matches('0'));
        }
        if self.offset_minutes == 0 {
            s.push('Z');
        } else {
            let sign = if self.offset_minutes < 0 { '-' } else { '+' };
            let m = self.offset_minutes.unsigned_abs();
            let _ = write!(s, "{sign}{:02}:{:02}", m / 60, m % 60);
        }
        s
    }
}

impl Value {
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
    fn rfc3339() {
        let t = Timestamp {
            year: 2001,
            month: 12,
            day: 14,
            hour: 21,
            minute: 59,
            second: 43,
            nanos: 100_000_000,
            offset_minutes: -300,
        };
        assert_eq!(t.rfc3339_nano(), "2001-12-14T21:59:43.1-05:00");
    }
}
