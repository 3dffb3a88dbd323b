//! go-yaml's "natural" ordering of mapping keys, used when emitting free-form maps.
//!
//! Numbers and booleans sort before strings (by Go reflect kind), numbers by value, and strings
//! rune by rune with embedded decimal numbers compared numerically.

use super::value::Value;

/// Go `reflect.Kind` numbers of the types a decoded key can have; only their order matters.
fn kind(v: &Value) -> u8 {
    match v {
        Value::Bool(_) => 1,
        Value::Int(_) => 2,
        Value::Uint(_) => 11,
        Value::Float(_) => 14,
        Value::Null => 20,
        Value::Map(_) => 21,
        Value::Seq(_) => 23,
        Value::Str(_) => 24,
        Value::Timestamp(_) => 25,
    }
}

fn key_float(v: &Value) -> Option<f64> {
    match v {
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::Int(i) => Some(*i as f64),
        Value::Uint(u) => Some(*u as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn num_less(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x < y,
        (Value::Uint(x), Value::Uint(y)) => x < y,
        (Value::Float(x), Value::Float(y)) => x < y,
        (Value::Bool(x), Value::Bool(y)) => !x && *y,
        _ => false,
    }
}

/// Go's `unicode.IsDigit` (decimal digits; non-ASCII digits approximated by `is_numeric`).
fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

/// Go's `unicode.IsLetter`.
fn is_letter(c: char) -> bool {
    c.is_alphabetic()
}

/// `keyList.Less` from go-yaml: whether key `a` sorts before key `b`.
pub(crate) fn key_less(a: &Value, b: &Value) -> bool {
    let (ak, bk) = (kind(a), kind(b));
    if let (Some(af), Some(bf)) = (key_float(a), key_float(b)) {
        if af != bf {
            return af < bf;
        }
        if ak != bk {
            return ak < bk;
        }
        return num_less(a, b);
    }
    let (Value::Str(sa), Value::Str(sb)) = (a, b) else {
        return ak < bk;
    };
    let ar: Vec<char> = sa.chars().collect();
    let br: Vec<char> = sb.chars().collect();
    let mut digits = false;
    let n = ar.len().min(br.len());
    for i in 0..n {
        if ar[i] == br[i] {
            digits = is_digit(ar[i]);
            continue;
        }
        let al = is_letter(ar[i]);
        let bl = is_letter(br[i]);
        if al && bl {
            return ar[i] < br[i];
        }
        if al || bl {
            return if digits { al } else { bl };
        }
        let (mut an, mut bn): (i64, i64) = (0, 0);
        if ar[i] == '0' || br[i] == '0' {
            let mut j = i;
            while j > 0 && is_digit(ar[j - 1]) {
                j -= 1;
                if ar[j] != '0' {
                    an = 1;
                    bn = 1;
                    break;
                }
            }
        }
        let mut ai = i;
        while ai < ar.len() && is_digit(ar[ai]) {
            an = an.wrapping_mul(10).wrapping_add(ar[ai] as i64 - '0' as i64);
            ai += 1;
        }
        let mut bi = i;
        while bi < br.len() && is_digit(br[bi]) {
            bn = bn.wrapping_mul(10).wrapping_add(br[bi] as i64 - '0' as i64);
            bi += 1;
        }
        if an != bn {
            return an < bn;
        }
        if ai != bi {
            return ai < bi;
        }
        return ar[i] < br[i];
    }
    ar.len() < br.len()
}

/// Sorts map entries by key in go-yaml's natural order.
///
/// A hand-written merge sort: the natural order is not guaranteed to be a total order for
/// arbitrary keys, and the standard library's sorts may panic on inconsistent comparators.
pub(crate) fn sort_entries(entries: &mut Vec<(Value, Value)>) {
    if entries.len() < 2 {
        return;
    }
    let right = entries.split_off(entries.len() / 2);
    let mut left = std::mem::take(entries);
    sort_entries(&mut left);
    let mut right = right;
    sort_entries(&mut right);
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut l = left.into_iter().peekable();
    let mut r = right.into_iter().peekable();
    loop {
        let take_right = match (l.peek(), r.peek()) {
            (Some((a, _)), Some((b, _))) => key_less(b, a),
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (None, None) => break,
        };
        let next = if take_right { r.next() } else { l.next() };
        out.extend(next);
    }
    *entries = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(keys: &[&str]) -> Vec<String> {
        let mut e: Vec<(Value, Value)> = keys
            .iter()
            .map(|k| (Value::Str((*k).to_string()), Value::Null))
            .collect();
        sort_entries(&mut e);
        e.into_iter()
            .map(|(k, _)| match k {
                Value::Str(s) => s,
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn natural_order() {
        assert_eq!(sorted(&["a10", "a2", "a1", "b"]), ["a1", "a2", "a10", "b"]);
        assert_eq!(sorted(&["b", "a", "B", "A"]), ["A", "B", "a", "b"]);
        assert_eq!(sorted(&["ab", "a"]), ["a", "ab"]);
        assert_eq!(sorted(&["10", "2", "1"]), ["1", "2", "10"]);
        // A non-letter sorts before a letter unless the previous equal rune was a digit.
        assert_eq!(sorted(&["ab", "a_"]), ["a_", "ab"]);
        assert_eq!(sorted(&["1_", "1b"]), ["1b", "1_"]);
    }

    #[test]
    fn numbers_before_strings() {
        let mut e = vec![
            (Value::Str("a".into()), Value::Null),
            (Value::Int(2), Value::Null),
            (Value::Bool(true), Value::Null),
            (Value::Float(1.5), Value::Null),
        ];
        sort_entries(&mut e);
        let keys: Vec<Value> = e.into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            vec![
                Value::Bool(true),
                Value::Float(1.5),
                Value::Int(2),
                Value::Str("a".into())
            ]
        );
    }
}
