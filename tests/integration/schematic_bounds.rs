//! Hostile schematics within the request body limit: each is answered with bounded work, the
//! bombs refused with go-yaml's words and the valid one parsed to its upstream ID. The inputs
//! are sized so that a parser doing quadratic (or unbounded) work would not finish.

use image_factory::schematic::Schematic;

use crate::common::hostile;

fn refusal(doc: &str) -> String {
    assert!(doc.len() <= hostile::BODY_LIMIT, "{} bytes", doc.len());
    match Schematic::parse(doc.as_bytes()) {
        Ok(s) => panic!(
            "accepted as {} bytes of canonical YAML",
            s.canonical().len()
        ),
        Err(e) => e.0,
    }
}

#[test]
fn schematic_alias_bomb_is_refused() {
    assert_eq!(refusal(&hostile::alias_bomb()), hostile::ALIAS_BOMB_ERROR);
}

#[test]
fn schematic_duplicate_keys_are_reported_capped() {
    assert_eq!(
        refusal(&hostile::duplicate_keys()),
        hostile::duplicate_keys_error()
    );
}

#[test]
fn schematic_many_distinct_keys_parse() {
    let doc = hostile::distinct_keys();
    assert!(doc.len() <= hostile::BODY_LIMIT, "{} bytes", doc.len());
    let s = Schematic::parse(doc.as_bytes()).expect("a valid schematic");
    assert_eq!(s.overlay.options.len(), hostile::KEYS);
    assert_eq!(s.id(), hostile::DISTINCT_KEYS_ID);
    // The canonical form reads back to itself.
    let again = Schematic::parse(s.canonical().as_bytes()).expect("canonical form parses");
    assert_eq!(again.id(), hostile::DISTINCT_KEYS_ID);
}

#[test]
fn schematic_deep_alias_expansion_is_refused() {
    assert_eq!(refusal(&hostile::deep_alias()), hostile::DEEP_ALIAS_ERROR);
}
