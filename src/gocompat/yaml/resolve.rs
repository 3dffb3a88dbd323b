//! Plain-scalar resolution with go-yaml's rules: what a plain scalar means when it is read back.
//!
//! The schematic decoder uses this to type plain scalars (integers, floats, booleans, nulls,
//! timestamps) and the emitter uses it to decide whether a string may be written plain or must be
//! quoted.

use std::fmt::Write as _;

/// What a plain scalar resolves to, following go-yaml's resolver (YAML 1.2 core schema plus
/// go-yaml's extensions: base-prefixed integers, `_` separators, timestamps).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Resolved {
    /// `~`, `null`, `Null`, `NULL` or the empty scalar.
    Null,
    /// `true`/`false` in their three spellings.
    Bool(bool),
    /// A signed integer that fits in 64 bits.
    Int(i64),
    /// An unsigned integer above `i64::MAX`.
    Uint(u64),
    /// A float (including `.inf`, `-.inf`, `.nan`).
    Float(f64),
    /// A timestamp (`YYYY-M-D`, optionally with a time).
    Timestamp(Timestamp),
    /// The merge key `<<`.
    Merge,
    /// Anything else: a string.
    Str,
}

impl Resolved {
    /// The YAML short tag of the resolved kind, as go-yaml prints it in errors.
    pub(crate) fn short_tag(&self) -> &'static str {
        match self {
            Resolved::Null => "!!null",
            Resolved::Bool(_) => "!!bool",
            Resolved::Int(_) | Resolved::Uint(_) => "!!int",
            Resolved::Float(_) => "!!float",
            Resolved::Timestamp(_) => "!!timestamp",
            Resolved::Merge => "!!merge",
            Resolved::Str => "!!str",
        }
    }
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

/// Resolves a plain (unquoted, untagged) scalar.
pub(crate) fn resolve_plain(s: &str) -> Resolved {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Resolved::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        "<<" => return Resolved::Merge,
        // yaml v4 maps negative zero to a float rather than the integer 0.
        "-0" | "-0.0" => return Resolved::Float(-0.0),
        _ => {}
    }
    let first = s.as_bytes()[0];
    match first {
        b'.' => {
            // go-yaml hands these straight to Go's ParseFloat, which allows `_` between digits.
            if let Some(plain) = go_underscores(s)
                && let Some(f) = parse_go_float(&plain)
            {
                return Resolved::Float(f);
            }
        }
        b'0'..=b'9' | b'+' | b'-' => {
            if let Some(t) = parse_timestamp(s) {
                return Resolved::Timestamp(t);
            }
            let plain: String = s.chars().filter(|&c| c != '_').collect();
            if let Some(i) = parse_go_int(&plain) {
                return i;
            }
            if is_yaml_style_float(&plain)
                && let Some(f) = parse_go_float(&plain)
            {
                return Resolved::Float(f);
            }
        }
        _ => {}
    }
    Resolved::Str
}

/// Removes `_` separators if each sits between two digits (Go literal syntax), else `None`.
fn go_underscores(s: &str) -> Option<String> {
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'_' {
            let before = i > 0 && b[i - 1].is_ascii_digit();
            let after = i + 1 < b.len() && b[i + 1].is_ascii_digit();
            if !(before && after) {
                return None;
            }
        }
    }
    Some(s.replace('_', ""))
}

/// Parses an integer like Go's `strconv.ParseInt(s, 0, 64)` then `ParseUint(s, 0, 64)`:
/// optional sign, base prefixes `0x`, `0o`, `0b`, and a leading `0` meaning octal.
fn parse_go_int(s: &str) -> Option<Resolved> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let lower = digits.to_ascii_lowercase();
    let (radix, body) = if let Some(rest) = lower.strip_prefix("0x") {
        (16, rest)
    } else if let Some(rest) = lower.strip_prefix("0o") {
        (8, rest)
    } else if let Some(rest) = lower.strip_prefix("0b") {
        (2, rest)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u128::from_str_radix(body, radix).ok()?;
    if neg {
        if magnitude <= i64::MAX as u128 + 1 {
            return Some(Resolved::Int((-(magnitude as i128)) as i64));
        }
        // ParseUint rejects signs, so a too-small negative number is not an integer.
        return None;
    }
    if magnitude <= i64::MAX as u128 {
        Some(Resolved::Int(magnitude as i64))
    } else if magnitude <= u64::MAX as u128 {
        // ParseUint accepts no sign at all, `+` included.
        if s.starts_with('+') {
            None
        } else {
            Some(Resolved::Uint(magnitude as u64))
        }
    } else {
        None
    }
}

/// go-yaml's `yamlStyleFloat`: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            digits(&mut i);
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Parses a float the way Go's `strconv.ParseFloat(s, 64)` accepts the forms that reach it here
/// (decimal with optional exponent; out-of-range values are errors, as in Go).
fn parse_go_float(s: &str) -> Option<f64> {
    if !is_yaml_style_float(s) {
        return None;
    }
    let f: f64 = s.parse().ok()?;
    if f.is_infinite() { None } else { Some(f) }
}

/// The YAML 1.1 boolean words that go-yaml quotes although they resolve to strings.
pub(crate) fn is_old_bool(s: &str) -> bool {
    matches!(
        s,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "on"
            | "On"
            | "ON"
            | "off"
            | "Off"
            | "OFF"
    )
}

/// YAML 1.1 truthy words accepted for typed booleans.
pub(crate) fn old_bool_value(s: &str) -> Option<bool> {
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// go-yaml's base-60 float check: `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`.
pub(crate) fn is_base60_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    if i >= b.len() || !b[i].is_ascii_digit() {
        return false;
    }
    i += 1;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
        i += 1;
    }
    let mut groups = 0;
    while i < b.len() && b[i] == b':' {
        i += 1;
        // [0-5]?[0-9]
        if i + 1 < b.len() && (b'0'..=b'5').contains(&b[i]) && b[i + 1].is_ascii_digit() {
            i += 2;
        } else if i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        } else {
            return false;
        }
        groups += 1;
    }
    if groups == 0 {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            i += 1;
        }
    }
    i == b.len()
}

/// Parses go-yaml's timestamp forms: `YYYY-M-D`, `YYYY-M-D h:m:s[.f]`, and
/// `YYYY-M-D[Tt]h:m:s[.f](Z|±hh:mm)`, with Go's range checks.
pub(crate) fn parse_timestamp(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    // Quick check used by go-yaml: exactly four digits then '-'.
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return None;
    }
    let mut p = Cursor { b, i: 5 };
    let year: i32 = s[..4].parse().ok()?;
    let month = p.num(1, 2)?;
    p.expect(b'-')?;
    let day = p.num(1, 2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut ts = Timestamp {
        year,
        month: month as u8,
        day: day as u8,
        hour: 0,
        minute: 0,
        second: 0,
        nanos: 0,
        offset_minutes: 0,
    };
    if p.done() {
        return Some(ts);
    }
    let sep = p.next()?;
    let zoned = match sep {
        b'T' | b't' => true,
        b' ' => false,
        _ => return None,
    };
    let hour = p.num(1, 2)?;
    p.expect(b':')?;
    let minute = p.num(1, 2)?;
    p.expect(b':')?;
    let second = p.num(1, 2)?;
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    ts.hour = hour as u8;
    ts.minute = minute as u8;
    ts.second = second as u8;
    if p.peek() == Some(b'.') {
        p.i += 1;
        let start = p.i;
        while p.peek().is_some_and(|c| c.is_ascii_digit()) {
            p.i += 1;
        }
        let frac = &s[start..p.i];
        if frac.is_empty() || frac.len() > 9 {
            return None;
        }
        ts.nanos = format!("{frac:0<9}").parse().ok()?;
    }
    if !zoned {
        return if p.done() { Some(ts) } else { None };
    }
    match p.next()? {
        b'Z' => {}
        sign @ (b'+' | b'-') => {
            let hh = p.num(2, 2)?;
            p.expect(b':')?;
            let mm = p.num(2, 2)?;
            if hh > 23 || mm > 59 {
                return None;
            }
            let total = (hh * 60 + mm) as i32;
            ts.offset_minutes = if sign == b'-' { -total } else { total };
        }
        _ => return None,
    }
    if p.done() { Some(ts) } else { None }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn done(&self) -> bool {
        self.i == self.b.len()
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }
    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }
    fn num(&mut self, min: usize, max: usize) -> Option<u32> {
        let start = self.i;
        while self.i - start < max && self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        if self.i - start < min {
            return None;
        }
        std::str::from_utf8(&self.b[start..self.i])
            .ok()?
            .parse()
            .ok()
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 {
                29
            } else {
                28
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_in_every_base() {
        for s in ["10", "0xa", "0XA", "0o12", "0b1010", "012", "+10"] {
            let plain: String = s.chars().filter(|&c| c != '_').collect();
            assert_eq!(parse_go_int(&plain), Some(Resolved::Int(10)), "{s}");
        }
        assert_eq!(resolve_plain("1_0"), Resolved::Int(10));
        assert_eq!(resolve_plain("-1"), Resolved::Int(-1));
        assert_eq!(
            resolve_plain("18446744073709551615"),
            Resolved::Uint(u64::MAX)
        );
        // Beyond 64 bits it is a float, as in go-yaml.
        assert!(matches!(
            resolve_plain("18446744073709551616"),
            Resolved::Float(_)
        ));
        // "08" is not octal, but it matches the float pattern.
        assert_eq!(resolve_plain("08"), Resolved::Float(8.0));
        assert_eq!(resolve_plain("0x"), Resolved::Str);
        assert_eq!(resolve_plain("1.2.3"), Resolved::Str);
    }

    #[test]
    fn special_words() {
        assert_eq!(resolve_plain("~"), Resolved::Null);
        assert_eq!(resolve_plain("TRUE"), Resolved::Bool(true));
        assert_eq!(resolve_plain("yes"), Resolved::Str);
        assert!(matches!(resolve_plain(".inf"), Resolved::Float(f) if f.is_infinite()));
        assert!(matches!(resolve_plain(".5"), Resolved::Float(f) if f == 0.5));
        assert!(matches!(resolve_plain("1e3"), Resolved::Float(f) if f == 1000.0));
        assert_eq!(resolve_plain("1e"), Resolved::Str);
    }

    #[test]
    fn timestamps() {
        assert!(parse_timestamp("2001-12-14").is_some());
        assert!(parse_timestamp("2001-1-2").is_some());
        assert!(parse_timestamp("2001-12-14t21:59:43.10-05:00").is_some());
        assert!(parse_timestamp("2001-12-14 21:59:43.10").is_some());
        assert!(parse_timestamp("2001-02-30").is_none());
        assert!(parse_timestamp("2000-02-29").is_some());
        assert!(parse_timestamp("1900-02-29").is_none());
        assert!(parse_timestamp("20011-12-14").is_none());
        assert!(parse_timestamp("2001-12-14 21:59:43 Z").is_none());
    }

    #[test]
    fn base60() {
        assert!(is_base60_float("1:20"));
        assert!(is_base60_float("190:20:30.15"));
        assert!(!is_base60_float("1:60"));
        assert!(!is_base60_float("a:20"));
        assert!(!is_base60_float("1"));
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
