//! Fuzzes the schematic parser and canonical emitter: no input may panic, whatever the parser
//! accepts must serialise, and its canonical form must read back to the same canonical form and
//! ID (`canonical(parse(canonical(x))) == canonical(x)`), except for the documented divergences
//! (docs/design.md, "Known divergence" and "Known, deliberate deviation").
//!
//! Run it with the body limit as `-max_len` and with memory and time limits (docs/fuzzing.md), so
//! that inputs which make the parser do unbounded work are reported, not just panics.
#![no_main]

use image_factory::schematic::{Schematic, Value, is_valid_id};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(schematic) = Schematic::parse(data) else {
        return;
    };
    let canonical = schematic.canonical();
    let id = schematic.id();
    assert!(is_valid_id(&id), "{id}");
    if !reads_back(&schematic) {
        return;
    }
    // Not before: a literal block ending in U+2028/U+2029 ends the document without a line
    // break, as go-yaml writes it (the U+2028 divergence of docs/design.md).
    assert!(canonical.ends_with('\n'), "{canonical:?}");
    let again = match Schematic::parse(canonical.as_bytes()) {
        Ok(again) => again,
        Err(e) => panic!("canonical form refused: {e}\n---\n{canonical}"),
    };
    if again.canonical() == canonical {
        assert_eq!(again.id(), id);
        return;
    }
    // go-yaml's natural key order is not transitive for some keys (digit runs past 64 bits,
    // digits mixed with punctuation): go-yaml then follows Go's random map iteration and this
    // emitter the document's order, so the canonical form can read back in another key order
    // (docs/design.md, "Known divergence"). Nothing else may differ: put every map in one
    // fixed order first and the two must agree.
    assert_eq!(
        fixed_order(&again).canonical(),
        fixed_order(&schematic).canonical(),
        "canonical form is not a fixed point\n---\n{canonical}"
    );
});

/// Whether the canonical form is expected to read back to itself: false when a string hits one
/// of the go-yaml quirks the emitter reproduces on purpose (docs/design.md), or when a free-form
/// map holds two distinct keys that go-yaml writes alike.
fn reads_back(s: &Schematic) -> bool {
    let c = &s.customization;
    let texts = [
        &s.overlay.image,
        &s.overlay.name,
        &c.embedded_machine_configuration,
        &c.secureboot.enroll_keys,
    ];
    texts.into_iter().all(|t| plain_text(t))
        && c.extra_kernel_args.iter().all(|t| plain_text(t))
        && c.meta.iter().all(|m| plain_text(&m.value))
        && c.system_extensions
            .official_extensions
            .iter()
            .all(|t| plain_text(t))
        && s.overlay
            .options
            .iter()
            .all(|(k, v)| plain_text(k) && plain_value(v))
}

/// `s` with the entries of every free-form map ordered by their written key.
fn fixed_order(s: &Schematic) -> Schematic {
    let mut fixed = s.clone();
    fixed.overlay.options.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, v) in &mut fixed.overlay.options {
        *v = fixed_value(v);
    }
    fixed
}

fn fixed_value(v: &Value) -> Value {
    match v {
        Value::Seq(items) => Value::Seq(items.iter().map(fixed_value).collect()),
        Value::Map(entries) => {
            let mut fixed: Vec<(String, Value, Value)> = entries
                .iter()
                .map(|(k, v)| (scalar_text(k), k.clone(), fixed_value(v)))
                .collect();
            fixed.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Map(fixed.into_iter().map(|(_, k, v)| (k, v)).collect())
        }
        other => other.clone(),
    }
}

/// A string whose canonical form reads back: not one of the two literal-block quirks (`|4`
/// relative to the wrong column in sequence items; a block starting with a line break then a
/// space), and no U+2028/U+2029, which go-yaml (YAML 1.1) treats as line breaks.
fn plain_text(t: &str) -> bool {
    !((t.contains('\n') && t.trim_start_matches('\n').starts_with(' '))
        || t.contains(['\u{2028}', '\u{2029}']))
}

fn plain_value(v: &Value) -> bool {
    match v {
        Value::Str(t) => plain_text(t),
        Value::Seq(items) => items.iter().all(plain_value),
        Value::Map(entries) => {
            // go-yaml keeps distinct Go map keys that it then writes alike: NaN keys (never
            // equal to each other) and equal numbers of different Go types (`0` and `-0`,
            // `1` and `1.0`). The canonical form then repeats a key, which any strict reader,
            // go-yaml included, refuses (docs/design.md, "Known divergence").
            let mut written = std::collections::HashSet::new();
            entries
                .iter()
                .all(|(k, v)| plain_value(k) && plain_value(v) && written.insert(scalar_text(k)))
        }
        _ => true,
    }
}

/// The text go-yaml writes for a scalar key (only used to spot keys that are written alike).
fn scalar_text(v: &Value) -> String {
    let doc = Schematic {
        overlay: image_factory::schematic::Overlay {
            options: vec![("k".into(), v.clone())],
            ..Default::default()
        },
        ..Default::default()
    };
    doc.canonical()
}
