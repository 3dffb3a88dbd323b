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

/// A key prepared for repeated comparisons: a string's runes and the ends of its digit runs
/// (both empty for other keys).
struct SortKey<'a> {
    value: &'a Value,
    runes: Vec<char>,
    /// For each rune, where the run of digits it starts ends (itself when not a digit).
    digits_end: Vec<u32>,
}

impl<'a> SortKey<'a> {
    fn new(value: &'a Value) -> SortKey<'a> {
        let runes: Vec<char> = match value {
            Value::Str(s) => s.chars().collect(),
            _ => Vec::new(),
        };
        let mut digits_end = vec![0u32; runes.len()];
        let mut end = runes.len();
        for i in (0..runes.len()).rev() {
            if !is_digit(runes[i]) {
                end = i;
            }
            digits_end[i] = end as u32;
        }
        SortKey {
            value,
            runes,
            digits_end,
        }
    }
}

/// `keyList.Less` from go-yaml: whether key `a` sorts before key `b`.
fn less(a: &SortKey<'_>, b: &SortKey<'_>) -> bool {
    let (ak, bk) = (kind(a.value), kind(b.value));
    if let (Some(af), Some(bf)) = (key_float(a.value), key_float(b.value)) {
        if af != bf {
            return af < bf;
        }
        if ak != bk {
            return ak < bk;
        }
        return num_less(a.value, b.value);
    }
    if !matches!((a.value, b.value), (Value::Str(_), Value::Str(_))) {
        return ak < bk;
    }
    let (ar, br) = (&a.runes, &b.runes);
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
        let (an, ai) = digit_run(ar, &a.digits_end, i, an);
        let (bn, bi) = digit_run(br, &b.digits_end, i, bn);
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

/// go-yaml's `an = an*10 + digit` over the digit run starting at `i` (wrapping like Go's int64),
/// and where the run ends. Only the last 64 digits can change a value modulo 2^64 (10^64 is a
/// multiple of it), so a long run costs no more than a short one.
fn digit_run(runes: &[char], digits_end: &[u32], i: usize, start: i64) -> (i64, usize) {
    let end = digits_end[i] as usize;
    let (mut n, from) = if end - i > 64 {
        (0i64, end - 64)
    } else {
        (start, i)
    };
    for &c in &runes[from..end] {
        n = n.wrapping_mul(10).wrapping_add(c as i64 - '0' as i64);
    }
    (n, end)
}

/// Map entries in go-yaml's natural key order.
///
/// A hand-written merge sort: the natural order is not guaranteed to be a total order for
/// arbitrary keys, and the standard library's sorts may panic on inconsistent comparators.
/// Keys are prepared once, so sorting costs O(n log n) comparisons of O(common prefix) each.
pub(crate) fn sorted_entries(entries: &[(Value, Value)]) -> Vec<&(Value, Value)> {
    let keys: Vec<SortKey<'_>> = entries.iter().map(|(k, _)| SortKey::new(k)).collect();
    let mut order: Vec<usize> = (0..entries.len()).collect();
    merge_sort(&mut order, &keys);
    order.into_iter().map(|i| &entries[i]).collect()
}

fn merge_sort(order: &mut Vec<usize>, keys: &[SortKey<'_>]) {
    if order.len() < 2 {
        return;
    }
    let mut right = order.split_off(order.len() / 2);
    let mut left = std::mem::take(order);
    merge_sort(&mut left, keys);
    merge_sort(&mut right, keys);
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut l = left.into_iter().peekable();
    let mut r = right.into_iter().peekable();
    loop {
        let take_right = match (l.peek(), r.peek()) {
            (Some(&a), Some(&b)) => less(&keys[b], &keys[a]),
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (None, None) => break,
        };
        let next = if take_right { r.next() } else { l.next() };
        out.extend(next);
    }
    *order = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(keys: &[&str]) -> Vec<String> {
        let e: Vec<(Value, Value)> = keys
            .iter()
            .map(|k| (Value::Str((*k).to_string()), Value::Null))
            .collect();
        sorted_entries(&e)
            .into_iter()
            .map(|(k, _)| match k {
                Value::Str(s) => s.clone(),
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
        let e = vec![
            (Value::Str("a".into()), Value::Null),
            (Value::Int(2), Value::Null),
            (Value::Bool(true), Value::Null),
            (Value::Float(1.5), Value::Null),
        ];
        let keys: Vec<Value> = sorted_entries(&e)
            .into_iter()
            .map(|(k, _)| k.clone())
            .collect();
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

    /// go-yaml's digit loop as written: every digit of the run, from `i` to its end.
    fn go_digit_run(runes: &[char], i: usize, start: i64) -> (i64, usize) {
        let (mut n, mut at) = (start, i);
        while at < runes.len() && is_digit(runes[at]) {
            n = n
                .wrapping_mul(10)
                .wrapping_add(runes[at] as i64 - '0' as i64);
            at += 1;
        }
        (n, at)
    }

    fn str_less(a: &str, b: &str) -> bool {
        let (a, b) = (Value::Str(a.into()), Value::Str(b.into()));
        less(&SortKey::new(&a), &SortKey::new(&b))
    }

    #[test]
    fn long_digit_runs_compare_by_their_wrapped_value() {
        let long = "9".repeat(100);
        assert!(str_less(&format!("a{long}"), &format!("a{long}1")));
        assert!(str_less(&format!("a{long}x"), &format!("a{long}y")));
        // 10^80 wraps to 0 in Go's int64 arithmetic, so it sorts before 2.
        let zeros = "0".repeat(80);
        assert!(str_less(&format!("x1{zeros}"), "x2"));
        assert!(!str_less("x2", &format!("x1{zeros}")));
    }

    #[test]
    fn an_intransitive_order_follows_the_input() {
        // 10^80 wraps to 0: long < x2 < x10 < long. The result depends on the input order
        // (as go-yaml's depends on Go's map iteration); it is deterministic for each order.
        let long = format!("x1{}", "0".repeat(80));
        assert!(str_less(&long, "x2") && str_less("x2", "x10") && str_less("x10", &long));
        assert_eq!(sorted(&["x2", "x10", &long]), ["x2", "x10", long.as_str()]);
        assert_eq!(sorted(&[&long, "x10", "x2"]), [long.as_str(), "x2", "x10"]);
    }

    proptest::proptest! {
        #[test]
        fn digit_runs_are_go_yaml_values(
            s in "[a0-9٣]{0,4}[0-9]{0,140}[a0-9]{0,3}",
            start in proptest::prelude::any::<bool>(),
            at in 0usize..160,
        ) {
            let key = Value::Str(s.clone());
            let k = SortKey::new(&key);
            let i = at.min(k.runes.len().saturating_sub(1));
            if !k.runes.is_empty() {
                let start = i64::from(start);
                proptest::prop_assert_eq!(
                    digit_run(&k.runes, &k.digits_end, i, start),
                    go_digit_run(&k.runes, i, start)
                );
            }
        }
    }
}
