//! Selectors, specificity, ties and validation of assignments.

use super::*;

const ID: &str = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";

fn spec(selector: SelectorSpec) -> AssignmentSpec {
    AssignmentSpec {
        name: None,
        selector,
        schematic: ID.into(),
        version: "v1.11.0".into(),
        platform: None,
        extra_kernel_args: vec![],
        http_boot: Default::default(),
    }
}

fn a(name: &str, selector: SelectorSpec) -> Assignment {
    Assignment::from_spec(name, &spec(selector), Source::Api).unwrap()
}

fn mac(m: &str) -> SelectorSpec {
    SelectorSpec {
        mac: Some(m.into()),
        ..Default::default()
    }
}

#[test]
fn the_most_specific_match_wins_and_the_default_catches_the_rest() {
    let set = AssignmentSet::new(vec![
        a("default", SelectorSpec::default()),
        a(
            "arm",
            SelectorSpec {
                arch: Some("arm64".into()),
                ..Default::default()
            },
        ),
        a("node1", mac("52:54:00:00:00:01")),
        a(
            "node1-arm",
            SelectorSpec {
                mac: Some("52:54:00:00:00:01".into()),
                arch: Some("aarch64".into()),
                ..Default::default()
            },
        ),
    ])
    .unwrap();
    let id = |q: &str| Identity::from_query(q);
    let pick = |q: &str| set.resolve(&id(q)).map(|a| a.name.as_str());
    assert_eq!(pick("mac=52-54-00-00-00-01&arch=x86_64"), Some("node1"));
    assert_eq!(pick("mac=52:54:00:00:00:01&arch=arm64"), Some("node1-arm"));
    assert_eq!(pick("mac=52:54:00:00:00:02&arch=arm64"), Some("arm"));
    assert_eq!(pick("mac=52:54:00:00:00:02&arch=i386"), Some("default"));
    assert_eq!(pick(""), Some("default"));
    assert_eq!(
        set.default_assignment().map(|a| a.name.as_str()),
        Some("default")
    );
    // Without a default, an unknown machine matches nothing.
    let no_default = set.without("default");
    assert_eq!(no_default.resolve(&id("mac=52:54:00:00:00:02")), None);
}

#[test]
fn ties_are_refused_at_write_time() {
    let set = AssignmentSet::new(vec![a("by-mac", mac("52:54:00:00:00:01"))]).unwrap();
    // One machine could have this MAC and this serial: equal specificity, a tie.
    let by_serial = a(
        "by-serial",
        SelectorSpec {
            serial: Some("S1".into()),
            ..Default::default()
        },
    );
    let err = set.with(by_serial).unwrap_err();
    assert!(
        matches!(&err, NetbootError::Tie { other, .. } if other == "by-mac"),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("by-serial") && text.contains("mac=52:54:00:00:00:01"),
        "{text}"
    );
    // The same MAC in another spelling is the same selector.
    assert!(set.with(a("again", mac("52-54-00-00-00-01"))).is_err());
    // Another MAC cannot match the same machine; a more specific selector wins over it.
    let set = set.with(a("other-mac", mac("52:54:00:00:00:02"))).unwrap();
    let set = set
        .with(a(
            "narrower",
            SelectorSpec {
                mac: Some("52:54:00:00:00:01".into()),
                serial: Some("S1".into()),
                ..Default::default()
            },
        ))
        .unwrap();
    // An arch-only selector is less specific than a MAC (both name one field): no tie,
    // and the MAC wins; two arch-only selectors of one arch tie.
    let set = set
        .with(a(
            "arm",
            SelectorSpec {
                arch: Some("arm64".into()),
                ..Default::default()
            },
        ))
        .unwrap();
    assert!(
        set.with(a(
            "arm-again",
            SelectorSpec {
                arch: Some("aarch64".into()),
                ..Default::default()
            }
        ))
        .is_err()
    );
    let set = set.without("arm");
    // Replacing an assignment is not a tie with itself.
    let set = set.with(a("by-mac", mac("52:54:00:00:00:01"))).unwrap();
    assert_eq!(set.len(), 3);
    // Two defaults tie; so do serials that differ only in case.
    let d = set.with(a("d1", SelectorSpec::default())).unwrap();
    assert!(d.with(a("d2", SelectorSpec::default())).is_err());
    let s = AssignmentSet::new(vec![a(
        "s1",
        SelectorSpec {
            serial: Some("abc".into()),
            ..Default::default()
        },
    )])
    .unwrap();
    assert!(
        s.with(a(
            "s2",
            SelectorSpec {
                serial: Some("ABC".into()),
                ..Default::default()
            }
        ))
        .is_err()
    );
    // AssignmentSet::new refuses a tie inside one batch (a machines file).
    assert!(
        AssignmentSet::new(vec![
            a("x", mac("52:54:00:00:00:09")),
            a(
                "y",
                SelectorSpec {
                    uuid: Some("4c4c4544-0042-4a10-8058-b4c04f4d4e31".into()),
                    ..Default::default()
                }
            ),
        ])
        .is_err()
    );
}

#[test]
fn names_of_another_source_are_not_taken_over() {
    let set = AssignmentSet::new(vec![a("n", mac("52:54:00:00:00:01"))]).unwrap();
    let mut from_file = a("n", mac("52:54:00:00:00:02"));
    from_file.source = Source::File;
    assert!(matches!(
        set.with(from_file),
        Err(NetbootError::NameTaken { .. })
    ));
}

#[test]
fn specs_are_validated() {
    let bad = |f: &dyn Fn(&mut AssignmentSpec)| {
        let mut s = spec(SelectorSpec::default());
        f(&mut s);
        Assignment::from_spec("n", &s, Source::Api)
            .unwrap_err()
            .to_string()
    };
    assert!(bad(&|s| s.schematic = "abc".into()).contains("schematic"));
    assert!(bad(&|s| s.version = "latest".into()).contains("version"));
    assert!(bad(&|s| s.platform = Some("../x".into())).contains("platform"));
    assert!(bad(&|s| s.selector.mac = Some("zz".into())).contains("mac"));
    assert!(bad(&|s| s.selector.arch = Some("riscv64".into())).contains("arch"));
    for arg in ["a b", "${x}", "a\nb", "", "x;y", "#", "\"q\""] {
        let text = bad(&|s| s.extra_kernel_args = vec![arg.to_string()]);
        assert!(text.contains("kernel argument"), "{arg:?}: {text}");
    }
    assert!(
        bad(&|s| s.extra_kernel_args = vec!["a".into(); MAX_EXTRA_ARGS + 1]).contains("at most")
    );
    assert!(bad(&|s| s.name = Some("other".into())).contains("body names"));
    for name in ["", "-x", "a b", "a/b", &"x".repeat(MAX_NAME + 1)] {
        assert!(
            Assignment::from_spec(name, &spec(SelectorSpec::default()), Source::Api).is_err(),
            "{name:?}"
        );
    }
    let ok = Assignment::from_spec(
        "rack1.node-3",
        &AssignmentSpec {
            extra_kernel_args: vec!["talos.config=http://10.0.0.1/c.yaml?x=1&y=2".into()],
            http_boot: Default::default(),
            platform: Some("metal".into()),
            ..spec(mac("AA-BB-CC-DD-EE-FF"))
        },
        Source::Api,
    )
    .unwrap();
    assert_eq!(ok.selector.to_string(), "mac=aa:bb:cc:dd:ee:ff");
    assert_eq!(ok.pxe_path(Arch::Arm64), "metal-arm64");
    // The wire form round-trips to the same assignment.
    assert_eq!(
        Assignment::from_spec("rack1.node-3", &ok.spec(), Source::Api).unwrap(),
        ok
    );
}
