//! Alias budgets, duplicate keys and free-form map assignment: go-yaml's outcomes kept, with
//! the work bounded (the large hostile inputs are in tests/integration/schematic_bounds.rs).

use super::*;

const OPTIONS: &str = "overlay:\n  image: i\n  name: n\n  options:\n";

/// `levels` anchors, each a list of ten aliases of the previous one (10^levels strings).
fn laughs(levels: usize) -> String {
    let mut doc = format!("{OPTIONS}    a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..=levels {
        let items = vec![format!("*a{}", i - 1); 10].join(", ");
        doc.push_str(&format!("    a{i}: &a{i} [{items}]\n"));
    }
    doc
}

#[test]
fn go_yaml_alias_ratio_decides() {
    // 1,320 of ~1,360 decoded nodes come from aliases (97 %): go-yaml accepts it.
    assert_eq!(
        Schematic::parse(laughs(2).as_bytes())
            .expect("accepted")
            .overlay
            .options
            .len(),
        3
    );
    // One level more and more than 99 % of the nodes come from aliases.
    assert_eq!(
        error(&laughs(3)),
        "yaml: document contains excessive aliasing"
    );
}

#[test]
fn alias_expansion_is_charged_in_bytes() {
    let big = "x".repeat(64 << 10);
    // 64 KiB referenced 60 times is ~4 MiB, the most aliases may add.
    let ok = format!(
        "customization:\n  extraKernelArgs: [&a {big}{}]\n",
        ", *a".repeat(60)
    );
    let s = Schematic::parse(ok.as_bytes()).expect("within the budget");
    assert_eq!(s.customization.extra_kernel_args.len(), 61);
    let over = format!(
        "customization:\n  extraKernelArgs: [&a {big}{}]\n",
        ", *a".repeat(70)
    );
    assert_eq!(error(&over), "yaml: document contains excessive aliasing");
}

#[test]
fn alias_expansion_may_not_nest_deeper_than_writing() {
    let deep = format!("{}x{}", "[".repeat(200), "]".repeat(200));
    let ok = format!("{OPTIONS}    a: &a {deep}\n    b: [[*a]]\n");
    assert!(Schematic::parse(ok.as_bytes()).is_ok());
    // The canonical form of an accepted schematic reads back: nesting stays within 512.
    let over = format!(
        "{OPTIONS}    a: &a {deep}\n    b: &b {}*a{}\n    c: {}*b{}\n",
        "[".repeat(200),
        "]".repeat(200),
        "[".repeat(120),
        "]".repeat(120)
    );
    // `c` nests 120 levels, its alias 400 more, below the three of the document.
    assert_eq!(error(&over), "yaml: line 7: exceeded max depth of 512");
}

#[test]
fn duplicate_keys_are_reported_in_go_yaml_order() {
    let doc = format!("{OPTIONS}    a: 1\n    b: 2\n    a: 3\n    b: 4\n    a: 5\n    c: 6\n");
    assert_eq!(
        error(&doc),
        "yaml: construct errors: line 7: mapping key \"a\" already defined at line 5; \
         line 9: mapping key \"a\" already defined at line 5; \
         line 8: mapping key \"b\" already defined at line 6; \
         line 9: mapping key \"a\" already defined at line 7"
    );
    // Aliased keys are the anchored key; sequence keys all count as the same key.
    assert_eq!(
        error(&format!("{OPTIONS}    &k key: 1\n    *k : 2\n")),
        "yaml: construct errors: line 5: mapping key \"key\" already defined at line 5"
    );
    assert_eq!(
        error("? [a]\n: 1\n? [b]\n: 2\n"),
        "yaml: construct errors: line 3: mapping key \"\" already defined at line 1"
    );
}

#[test]
fn long_reports_end_with_a_count() {
    let doc = format!("{OPTIONS}{}", "    k: 1\n".repeat(30));
    let report = error(&doc);
    // 435 pairs: the first 100 are listed.
    assert_eq!(report.matches("already defined").count(), 100);
    assert!(report.ends_with("line 24: mapping key \"k\" already defined at line 8; and 335 more"));
}

#[test]
fn free_form_keys_are_go_map_keys() {
    // Equal values replace each other in place; a NaN key never equals another (nor sorts).
    let doc =
        format!("{OPTIONS}    m: {{1: a, 0x1: b, 01: c, .nan: d, .NaN: e, 0.0: f, -0.0: g}}\n");
    assert_eq!(
        canon(&doc),
        "overlay:\n    image: i\n    name: 'n'\n    options:\n        m:\n            1: c\n            .nan: d\n            .nan: e\n            0: g\ncustomization: {}\n"
    );
    // Merged keys never replace explicit ones; later merges replace earlier merged ones.
    let merged = format!(
        "{OPTIONS}    b: &b {{x: 1, y: 2}}\n    o: &o {{y: 5, z: 6}}\n    m:\n      <<: [*b, *o]\n      x: 3\n"
    );
    assert!(canon(&merged).ends_with("        m:\n            x: 3\n            'y': 2\n            z: 6\n        o:\n            'y': 5\n            z: 6\ncustomization: {}\n"));
}
