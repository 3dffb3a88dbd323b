//! Mapping keys: go-yaml's duplicate-key check and Go map assignment for free-form values, both
//! in O(n log n) or better for n keys (go-yaml compares every pair of keys).

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};

use super::tree::{YBody, YKind, YNode};
use super::value::Value;

/// What go-yaml compares to call two keys the same: the node kind and, for scalars, the text
/// (all sequence keys are the same key, and so are all mapping keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum KeyClass {
    Scalar(u32),
    Seq,
    Map,
}

/// Numbers the distinct key texts of a document, so keys compare in O(1) however often an
/// aliased key is looked at.
#[derive(Default)]
pub(super) struct KeyTexts {
    by_content: HashMap<*const YBody, u32>,
    by_text: HashMap<String, u32>,
}

/// The duplicate keys of one mapping.
pub(super) struct Duplicates {
    /// Key positions ordered by (class, position): a class's keys are adjacent.
    order: Vec<usize>,
    /// For each key position, its index in `order`.
    rank: Vec<usize>,
    /// For each index in `order`, where its class's run ends.
    run_end: Vec<usize>,
    /// How many pairs of equal keys there are.
    pub(super) pairs: u64,
}

impl KeyTexts {
    fn class(&mut self, key: &YNode) -> KeyClass {
        let text = match &key.kind {
            YKind::Seq(_) => return KeyClass::Seq,
            YKind::Map(_) => return KeyClass::Map,
            YKind::Scalar(text, _) => text,
        };
        let content = key.content_id();
        if let Some(&id) = self.by_content.get(&content) {
            return KeyClass::Scalar(id);
        }
        let id = match self.by_text.get(text.as_str()) {
            Some(&id) => id,
            None => {
                let id = self.by_text.len() as u32;
                self.by_text.insert(text.clone(), id);
                id
            }
        };
        self.by_content.insert(content, id);
        KeyClass::Scalar(id)
    }

    /// Finds the keys of `entries` that repeat an earlier key.
    pub(super) fn duplicates(&mut self, entries: &[(YNode, YNode)]) -> Duplicates {
        let classes: Vec<KeyClass> = entries.iter().map(|(k, _)| self.class(k)).collect();
        let mut counts: HashMap<KeyClass, u64> = HashMap::with_capacity(classes.len());
        for c in &classes {
            *counts.entry(*c).or_default() += 1;
        }
        let pairs = counts
            .values()
            .fold(0u64, |sum, &n| sum.saturating_add(n * (n - 1) / 2));
        if pairs == 0 {
            return Duplicates {
                order: Vec::new(),
                rank: Vec::new(),
                run_end: Vec::new(),
                pairs,
            };
        }
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_unstable_by_key(|&i| (classes[i], i));
        let mut rank = vec![0; order.len()];
        let mut run_end = vec![0; order.len()];
        let mut start = 0;
        for (at, &i) in order.iter().enumerate() {
            rank[i] = at;
            if at + 1 == order.len() || classes[order[at + 1]] != classes[i] {
                run_end[start..=at].fill(at + 1);
                start = at + 1;
            }
        }
        Duplicates {
            order,
            rank,
            run_end,
            pairs,
        }
    }
}

impl Duplicates {
    /// The pairs (earlier, later) of equal keys in go-yaml's report order: by the earlier key,
    /// then by the later one.
    pub(super) fn pairs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.rank.iter().enumerate().flat_map(move |(i, &at)| {
            self.order[at + 1..self.run_end[at]]
                .iter()
                .map(move |&j| (i, j))
        })
    }
}

/// A Go map filled in document order: assigning to a present key replaces its value in place.
/// Keys compare with `Value`'s equality (NaN never equals anything, `-0.0 == 0.0`).
#[derive(Default)]
pub(super) struct ValueMap {
    entries: Vec<(Value, Value)>,
    /// First entry of each key hash.
    index: HashMap<u64, usize>,
    hasher: RandomState,
}

impl ValueMap {
    /// Where `key` is, if present.
    pub(super) fn position(&self, key: &Value) -> Option<usize> {
        let hash = self.hash(key)?;
        let &at = self.index.get(&hash)?;
        if self.entries[at].0 == *key {
            Some(at)
        } else {
            // Another key with the same hash came first (or the key holds a NaN).
            self.entries.iter().position(|(k, _)| k == key)
        }
    }

    /// Go's `m[key] = value`.
    pub(super) fn insert(&mut self, key: Value, value: Value) {
        if let Some(at) = self.position(&key) {
            self.entries[at].1 = value;
            return;
        }
        if let Some(hash) = self.hash(&key) {
            self.index.entry(hash).or_insert(self.entries.len());
        }
        self.entries.push((key, value));
    }

    /// How many keys are set.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entries in order of first assignment.
    pub(super) fn into_entries(self) -> Vec<(Value, Value)> {
        self.entries
    }

    /// A hash consistent with `Value`'s equality; `None` for keys equal to nothing (NaN).
    fn hash(&self, key: &Value) -> Option<u64> {
        let mut h = self.hasher.build_hasher();
        hash_value(key, &mut h).then(|| h.finish())
    }
}

/// Feeds `v` to `h`; false when `v` is a NaN float, which equals nothing.
fn hash_value(v: &Value, h: &mut impl Hasher) -> bool {
    std::mem::discriminant(v).hash(h);
    match v {
        Value::Null => {}
        Value::Bool(b) => b.hash(h),
        Value::Int(i) => i.hash(h),
        Value::Uint(u) => u.hash(h),
        Value::Float(f) if f.is_nan() => return false,
        // `-0.0 == 0.0`: both hash as 0.0.
        Value::Float(f) => (f + 0.0).to_bits().hash(h),
        Value::Timestamp(t) => {
            (t.year, t.month, t.day, t.hour, t.minute, t.second).hash(h);
            (t.nanos, t.offset_minutes).hash(h);
        }
        Value::Str(s) => s.hash(h),
        Value::Seq(items) => {
            items.len().hash(h);
            return items.iter().all(|item| hash_value(item, h));
        }
        Value::Map(entries) => {
            entries.len().hash(h);
            return entries
                .iter()
                .all(|(k, v)| hash_value(k, h) && hash_value(v, h));
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(map: ValueMap) -> Vec<(Value, Value)> {
        map.into_entries()
    }

    #[test]
    fn assignment_replaces_in_place() {
        let mut m = ValueMap::default();
        m.insert(Value::Str("a".into()), Value::Int(1));
        m.insert(Value::Str("b".into()), Value::Int(2));
        m.insert(Value::Str("a".into()), Value::Int(3));
        assert_eq!(m.position(&Value::Str("b".into())), Some(1));
        assert_eq!(m.position(&Value::Str("c".into())), None);
        assert_eq!(
            keys(m),
            vec![
                (Value::Str("a".into()), Value::Int(3)),
                (Value::Str("b".into()), Value::Int(2)),
            ]
        );
    }

    #[test]
    fn keys_compare_like_value_equality() {
        let mut m = ValueMap::default();
        m.insert(Value::Float(f64::NAN), Value::Int(1));
        m.insert(Value::Float(f64::NAN), Value::Int(2));
        m.insert(Value::Float(0.0), Value::Int(3));
        m.insert(Value::Float(-0.0), Value::Int(4));
        m.insert(Value::Int(0), Value::Int(5));
        let got = keys(m);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[2], (Value::Float(0.0), Value::Int(4)));
        assert_eq!(got[3], (Value::Int(0), Value::Int(5)));
    }
}
