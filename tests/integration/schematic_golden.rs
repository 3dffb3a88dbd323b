//! The schematic parser and emitter against a corpus generated with go-yaml itself
//! (`tests/golden/`): every case that factory v1.5.0 handles like go-yaml v3 must give the same
//! canonical bytes and ID, or be rejected when go-yaml rejects it.

use image_factory::schematic::Schematic;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    input: String,
    canonical: Option<String>,
    id: Option<String>,
    error: Option<String>,
    v3_only: bool,
}

/// Cases where this implementation deliberately differs from go-yaml, with the reason; each is
/// still checked (it must be rejected with a clear error).
const KNOWN_DEVIATIONS: &[(&str, &str)] = &[
    (
        "list_binary_invalid_utf8",
        "!!binary data that is not UTF-8 is refused: schematic strings are text",
    ),
    (
        "opt_binary_value",
        "!!binary data that is not UTF-8 is refused: schematic strings are text",
    ),
];

fn corpus() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/schematics.json");
    let text = std::fs::read_to_string(path).expect("golden corpus present");
    serde_json::from_str(&text).expect("golden corpus parses")
}

#[test]
fn golden_corpus_matches_go_yaml() {
    let cases = corpus();
    assert!(
        cases.len() > 300,
        "corpus unexpectedly small: {}",
        cases.len()
    );
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in cases.iter().filter(|c| !c.v3_only) {
        checked += 1;
        let ours = Schematic::parse(case.input.as_bytes());
        if KNOWN_DEVIATIONS.iter().any(|(name, _)| *name == case.name) {
            match ours {
                Err(e) if e.0.contains("not UTF-8") => {}
                other => failures.push(format!("{}: deviation changed: {other:?}", case.name)),
            }
            continue;
        }
        match (&case.canonical, &case.id, &case.error, ours) {
            (Some(canonical), Some(id), None, Ok(s)) => {
                if s.canonical() != *canonical || s.id() != *id {
                    failures.push(format!(
                        "{}: input {:?}\n  go:   {:?}\n  ours: {:?}",
                        case.name,
                        case.input,
                        canonical,
                        s.canonical()
                    ));
                }
            }
            (Some(_), _, None, Err(e)) => failures.push(format!(
                "{}: input {:?} rejected: {e}",
                case.name, case.input
            )),
            (None, _, Some(_), Ok(s)) => failures.push(format!(
                "{}: input {:?} accepted as {:?}, go-yaml rejects it",
                case.name,
                case.input,
                s.canonical()
            )),
            (None, _, Some(_), Err(_)) => {}
            _ => failures.push(format!("{}: malformed corpus entry", case.name)),
        }
    }
    assert!(checked > 250, "too few comparable cases: {checked}");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The YAML 1.1 words and base-60 numbers that go-yaml v3 double-quotes and factory v1.5.0
/// (go-yaml v4) single-quotes: with that one substitution the v3 corpus predicts our output.
#[test]
fn v4_single_quotes_yaml11_words() {
    const WORDS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
        "OFF",
    ];
    let mut compared = 0;
    for case in corpus().iter().filter(|c| c.v3_only) {
        let Some(go) = &case.canonical else { continue };
        let mut expected = go.clone();
        let base60: Vec<String> = go
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|x| {
                x.contains(':') && x.chars().all(|c| c.is_ascii_digit() || ":._+-".contains(c))
            })
            .map(str::to_string)
            .collect();
        for w in WORDS
            .iter()
            .copied()
            .chain(base60.iter().map(String::as_str))
        {
            expected = expected
                .replace(&format!(": \"{w}\"\n"), &format!(": '{w}'\n"))
                .replace(&format!("- \"{w}\"\n"), &format!("- '{w}'\n"))
                .replace(&format!("\"{w}\": "), &format!("'{w}': "));
        }
        if expected == *go {
            continue;
        }
        compared += 1;
        let ours = Schematic::parse(case.input.as_bytes())
            .unwrap_or_else(|e| panic!("{}: rejected: {e}", case.name));
        assert_eq!(ours.canonical(), expected, "{}", case.name);
    }
    assert!(
        compared >= 10,
        "only {compared} YAML 1.1 word cases compared"
    );
}
