//! Schematic vectors from the upstream factory and go-yaml behaviours the ID depends on.

use super::*;

fn canon(input: &str) -> String {
    match Schematic::parse(input.as_bytes()) {
        Ok(s) => s.canonical(),
        Err(e) => panic!("{input:?} failed: {e}"),
    }
}

fn error(input: &str) -> String {
    match Schematic::parse(input.as_bytes()) {
        Ok(s) => panic!("{input:?} unexpectedly parsed to {:?}", s.canonical()),
        Err(e) => e.0,
    }
}

/// The eleven canonical forms and IDs of the API spec (§2.5).
const VECTORS: &[(&str, &str)] = &[
    (
        "customization: {}\n",
        "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba",
    ),
    (
        "customization:\n    extraKernelArgs:\n        - noapic\n        - nolapic\n",
        "9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c",
    ),
    (
        "customization:\n    extraKernelArgs:\n        - nolapic\n        - nomodeset\n",
        "e0fb1129bbbdfb5d002e94af4cdce712a8370e850950a33a242d4c3f178c532d",
    ),
    (
        "customization:\n    meta:\n        - key: 10\n          value: foo\n",
        "d308a2a5ee2277bed5fbaa104fcbc8d59122abfa737df987a95b4ca763459a7f",
    ),
    (
        "customization:\n    meta:\n        - key: 10\n          value: '{\"externalIPs\":[\"1.2.3.4\"]}'\n",
        "fe866116408a5a13dab7d5003eb57a00954ea81ebeec3fbbcd1a6d4462a00036",
    ),
    (
        "customization:\n    secureboot:\n        includeWellKnownCertificates: true\n",
        "fa8e05f142a851d3ee568eb0a8e5841eaf6b0ebc8df9a63df16ac5ed2c04f3e6",
    ),
    (
        "customization:\n    diskImage:\n        sectorSize: 4096\n",
        "92833e9ddd9bb9e11b2464fa5525429f01866306d52ebd882ee08d7918f6d1ea",
    ),
    (
        "customization:\n    bootloader: grub\n",
        "39d496b2cbdb6265d3b714514c5334bf010f1b4d31b23b9e38c80fb2f3ad7ecb",
    ),
    (
        "customization:\n    bootloader: sd-boot\n",
        "9ed5fecdacb36b5c5427b87d409f1065cfb2df69b0f71c58b868d9d466d8dab3",
    ),
    (
        "customization:\n    systemExtensions:\n        officialExtensions:\n            - siderolabs/amd-ucode\n            - siderolabs/gvisor\n            - siderolabs/gasket-driver\n",
        "51ff3e49313773332729a5c04e57af0dbe2e6d3f65ff638e6d4c3a05065fefff",
    ),
    (
        "overlay:\n    image: siderolabs/sbc-raspberrypi\n    name: rpi_generic\ncustomization: {}\n",
        "ee21ef4a5ef808a9b7484cc0dda0f25075021691c8c09a276591eedb638ea1f9",
    ),
];

#[test]
fn spec_vectors_are_fixed_points_with_upstream_ids() {
    for (canonical, id) in VECTORS {
        assert_eq!(id_of(canonical), *id, "vector hash");
        let parsed = Schematic::parse(canonical.as_bytes()).expect("vector parses");
        assert_eq!(parsed.canonical(), *canonical);
        assert_eq!(parsed.id(), *id);
    }
}

#[test]
fn spec_input_equivalences() {
    let eq = |inputs: &[&str], vector: usize| {
        for input in inputs {
            assert_eq!(canon(input), VECTORS[vector].0, "input {input:?}");
        }
    };
    eq(
        &[
            "{}",
            "customization: {}",
            "customization: {\"extraKernelArgs\": []}",
        ],
        0,
    );
    eq(
        &[
            r#"{"customization": {"extraKernelArgs": ["noapic", "nolapic"]}}"#,
            r#"{"customization": {"extraKernelArgs": ["noapic", "nolapic"], "systemExtensions": {}}}"#,
        ],
        1,
    );
    eq(
        &[
            r#"{"customization": {"meta": [{"key": 10, "value": "foo"}], "extraKernelArgs": [], "systemExtensions": {}}}"#,
            "customization:\n  meta:\n    - key: 0xa\n      value: foo\n",
        ],
        3,
    );
    eq(
        &[
            r#"{"overlay": {"name": "rpi_generic", "image": "siderolabs/sbc-raspberrypi"}}"#,
            r#"{"overlay": {"name": "rpi_generic", "image": "siderolabs/sbc-raspberrypi"}, "customization":{}}"#,
        ],
        10,
    );
    eq(
        &[r#"{"customization":{"secureboot": {"includeWellKnownCertificates": true}}}"#],
        5,
    );
    eq(
        &[
            "customization: {bootloader: GRUB}",
            "customization: {bootloader: Grub}",
        ],
        7,
    );
    eq(&["customization: {diskImage: {sectorSize: 4096.0}}"], 6);
}

#[test]
fn vga_example_from_the_docs() {
    assert_eq!(
        Schematic::parse(b"customization:\n  extraKernelArgs:\n    - vga=791\n").map(|s| s.id()),
        Ok("eea1f9534c46d95c4715a2f13d17eacb927c13a42ef087c79b22c3bd0c49d073".to_string())
    );
}

#[test]
fn meta_key_integer_forms() {
    for key in ["10", "0xa", "0o12", "0b1010", "1_0", "012", "+10", "10.0"] {
        let doc = format!("customization: {{meta: [{{key: {key}, value: foo}}]}}");
        assert_eq!(canon(&doc), VECTORS[3].0, "key {key}");
    }
    for key in ["256", "-1", "\"10\"", "abc", "[1]"] {
        let doc = format!("customization: {{meta: [{{key: {key}, value: foo}}]}}");
        let e = error(&doc);
        assert!(
            e.starts_with("yaml: construct errors: line 1: cannot construct"),
            "{key}: {e}"
        );
        assert!(e.ends_with("into uint8"), "{key}: {e}");
    }
}

#[test]
fn yaml11_bool_words_for_well_known_certificates() {
    for word in ["true", "y", "Y", "yes", "Yes", "YES", "on", "On", "ON"] {
        let doc =
            format!("customization: {{secureboot: {{includeWellKnownCertificates: {word}}}}}");
        assert_eq!(canon(&doc), VECTORS[5].0, "{word}");
    }
    for word in [
        "false", "n", "N", "no", "No", "NO", "off", "Off", "OFF", "~",
    ] {
        let doc =
            format!("customization: {{secureboot: {{includeWellKnownCertificates: {word}}}}}");
        assert_eq!(canon(&doc), VECTORS[0].0, "{word}");
    }
    let e = error("customization: {secureboot: {includeWellKnownCertificates: maybe}}");
    assert_eq!(
        e,
        "yaml: construct errors: line 1: cannot construct !!str `maybe` into bool"
    );
}

#[test]
fn strict_parsing_errors() {
    assert_eq!(
        error("something:"),
        "yaml: construct errors: line 1: field something not found in type schematic.Schematic"
    );
    assert_eq!(
        error("customization:\n  extraKernelArgs: [a]\n  foo: 1\n  bar: 2\n"),
        "yaml: construct errors: line 3: field foo not found in type schematic.Customization; line 4: field bar not found in type schematic.Customization"
    );
    assert_eq!(
        error("customization: {}\ncustomization: {}\n"),
        "yaml: construct errors: line 2: mapping key \"customization\" already defined at line 1"
    );
    assert_eq!(
        error("owner: me\n"),
        "owner field is only supported in Enterprise edition"
    );
    assert_eq!(
        error("customization: {bootloader: auto}"),
        "auto does not belong to BootloaderKind values"
    );
    assert_eq!(error(""), "EOF");
    assert_eq!(error("# just a comment\n"), "EOF");
    assert_eq!(
        error("customization: {extraKernelArgs: [2024-01-01]}"),
        "yaml: construct errors: line 1: cannot construct !!timestamp `2024-01-01` into string"
    );
    assert_eq!(
        error("customization: hello"),
        "yaml: construct errors: line 1: cannot construct !!str `hello` into schematic.Customization"
    );
    assert_eq!(
        error("customization: {extraKernelArgs: averyveryverylongstring}"),
        "yaml: construct errors: line 1: cannot construct !!str `averyve...` into []string"
    );
    assert!(error("customization: [").starts_with("yaml: line "));
}

#[test]
fn only_first_document_is_read() {
    assert_eq!(canon("customization: {}\n---\nfoo: bar\n"), VECTORS[0].0);
    assert_eq!(
        canon("---\ncustomization: {}\n...\n--- [broken\n"),
        VECTORS[0].0
    );
    // A null document is an empty schematic.
    assert_eq!(canon("---\n"), VECTORS[0].0);
}

#[test]
fn string_fields_keep_source_text() {
    let doc =
        "customization:\n  extraKernelArgs: [123, true, yes, ~, 1.0, 0x1f, 'quoted', \"dq\"]\n";
    assert_eq!(
        canon(doc),
        "customization:\n    extraKernelArgs:\n        - \"123\"\n        - \"true\"\n        - 'yes'\n        - \"1.0\"\n        - \"0x1f\"\n        - quoted\n        - dq\n"
    );
}

#[test]
fn overlay_options_keep_types_and_natural_order() {
    let doc = "overlay:\n  name: rpi_5\n  image: siderolabs/sbc-raspberrypi\n  options:\n    z: 1.0\n    a10: 1e6\n    a2: [x, {b: 2, a: null}]\n    configTxtAppend: |\n      dtparam=cooling_fan=on\n    flag: yes\n    t: 2001-12-14\n";
    assert_eq!(
        canon(doc),
        "overlay:\n    image: siderolabs/sbc-raspberrypi\n    name: rpi_5\n    options:\n        a2:\n            - x\n            - a: null\n              b: 2\n        a10: 1e+06\n        configTxtAppend: |\n            dtparam=cooling_fan=on\n        flag: 'yes'\n        t: 2001-12-14T00:00:00Z\n        z: 1\ncustomization: {}\n"
    );
}

#[test]
fn spec_layout_example_17() {
    let doc = "overlay:\n  image: siderolabs/sbc-raspberrypi\n  name: rpi_5\n  options:\n    configTxtAppend: \"dtparam=cooling_fan=on\\n\"\ncustomization:\n  systemExtensions:\n    officialExtensions: [siderolabs/iscsi-tools, siderolabs/util-linux-tools]\n";
    assert_eq!(
        canon(doc),
        "overlay:\n    image: siderolabs/sbc-raspberrypi\n    name: rpi_5\n    options:\n        configTxtAppend: |\n            dtparam=cooling_fan=on\ncustomization:\n    systemExtensions:\n        officialExtensions:\n            - siderolabs/iscsi-tools\n            - siderolabs/util-linux-tools\n"
    );
}

#[test]
fn embedded_config_and_meta_literals() {
    let doc = "customization:\n  embeddedMachineConfiguration: |\n    version: v1alpha1\n    machine: {}\n  meta:\n    - key: 12\n      value: \"a\\nb\\n\"\n";
    assert_eq!(
        canon(doc),
        "customization:\n    embeddedMachineConfiguration: |\n        version: v1alpha1\n        machine: {}\n    meta:\n        - key: 12\n          value: |\n            a\n            b\n"
    );
}

#[test]
fn leading_space_literal_in_sequence() {
    let s = Schematic {
        customization: Customization {
            extra_kernel_args: vec![" a\n".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(
        s.canonical(),
        "customization:\n    extraKernelArgs:\n        - |4\n           a\n"
    );
}

#[test]
fn literal_ending_in_a_line_separator_ends_the_document() {
    // U+2028 is printable for go-yaml, so the block keeps it raw as the last character and the
    // document ends without a line break (go-yaml's write_break and final write_indent).
    let doc = "customization:\n  embeddedMachineConfiguration: \"a\\nb\\u2028\"\n";
    assert_eq!(
        canon(doc),
        "customization:\n    embeddedMachineConfiguration: |\n        a\n        b\u{2028}"
    );
}

#[test]
fn aliases_and_merges() {
    let doc = "customization:\n  extraKernelArgs: &args [noapic, nolapic]\n  systemExtensions:\n    officialExtensions: *args\n";
    assert_eq!(
        canon(doc),
        "customization:\n    extraKernelArgs:\n        - noapic\n        - nolapic\n    systemExtensions:\n        officialExtensions:\n            - noapic\n            - nolapic\n"
    );
    let merged =
        "customization:\n  <<: {extraKernelArgs: [a], bootloader: sd-boot}\n  bootloader: grub\n";
    assert_eq!(
        canon(merged),
        "customization:\n    extraKernelArgs:\n        - a\n    bootloader: grub\n"
    );
}

#[test]
fn alias_bombs_are_refused() {
    let mut doc =
        String::from("overlay:\n  options:\n    a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        doc.push_str(&format!(
            "    a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    assert_eq!(error(&doc), "yaml: document contains excessive aliasing");
}

mod bounds;

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A multi-line string that starts with a space, possibly after line breaks (see the
    /// quirks above; `|4` is only relative to the right column in some positions).
    fn quirky(t: &str) -> bool {
        (t.contains('\n') && t.trim_start_matches('\n').starts_with(' '))
            // go-yaml (YAML 1.1) treats U+2028/U+2029 as line breaks inside single quotes; our
            // YAML 1.2 parser does not, so such strings do not read back (docs/design.md).
            || t.contains(['\u{2028}', '\u{2029}'])
    }

    fn value_quirky(v: &Value) -> bool {
        match v {
            Value::Str(t) => quirky(t),
            Value::Seq(items) => items.iter().any(value_quirky),
            Value::Map(m) => m.iter().any(|(k, v)| value_quirky(k) || value_quirky(v)),
            _ => false,
        }
    }

    fn has_break_then_space(s: &Schematic) -> bool {
        let c = &s.customization;
        quirky(&s.overlay.image)
            || quirky(&s.overlay.name)
            || s.overlay
                .options
                .iter()
                .any(|(k, v)| quirky(k) || value_quirky(v))
            || quirky(&c.embedded_machine_configuration)
            || c.extra_kernel_args.iter().any(|t| quirky(t))
            || c.meta.iter().any(|m| quirky(&m.value))
            || c.system_extensions
                .official_extensions
                .iter()
                .any(|t| quirky(t))
            || quirky(&c.secureboot.enroll_keys)
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9=,._/:-]{0,12}",
            "[ -~]{0,16}",
            "[ -~\n\t]{0,24}",
            Just("yes".to_string()),
            Just("0x1f".to_string()),
            Just("null".to_string()),
            Just("2001-12-14".to_string()),
            Just("1:20".to_string()),
            "\\PC{0,8}",
            "[a-z\n ]{1,20}\n",
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (-1e9f64..1e9).prop_map(Value::Float),
            text().prop_map(Value::Str),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Seq),
                prop::collection::vec(("[a-z0-9_]{1,6}", inner), 0..4).prop_map(|kv| {
                    let mut out: Vec<(Value, Value)> = Vec::new();
                    for (k, v) in kv {
                        if !out.iter().any(|(ek, _)| *ek == Value::Str(k.clone())) {
                            out.push((Value::Str(k), v));
                        }
                    }
                    Value::Map(out)
                }),
            ]
        })
    }

    fn schematic() -> impl Strategy<Value = Schematic> {
        (
            (
                text(),
                text(),
                prop::collection::vec(("[a-zA-Z0-9_]{1,8}", value()), 0..4),
            ),
            text(),
            prop::collection::vec(text(), 0..4),
            prop::collection::vec((any::<u8>(), text()), 0..3),
            prop::collection::vec(text(), 0..3),
            (
                0u8..4,
                text(),
                any::<bool>(),
                prop_oneof![Just(0u64), Just(512), Just(4096)],
            ),
        )
            .prop_map(
                |((image, name, opts), emc, args, meta, exts, (bl, ek, wk, ss))| {
                    let mut options: Vec<(String, Value)> = Vec::new();
                    for (k, v) in opts {
                        if !options.iter().any(|(ek, _)| *ek == k) {
                            options.push((k, v));
                        }
                    }
                    Schematic {
                        owner: String::new(),
                        overlay: Overlay {
                            image,
                            name,
                            options,
                        },
                        customization: Customization {
                            embedded_machine_configuration: emc,
                            extra_kernel_args: args,
                            meta: meta
                                .into_iter()
                                .map(|(key, value)| MetaValue { key, value })
                                .collect(),
                            system_extensions: SystemExtensions {
                                official_extensions: exts,
                            },
                            bootloader: [
                                Bootloader::None,
                                Bootloader::DualBoot,
                                Bootloader::SdBoot,
                                Bootloader::Grub,
                            ][bl as usize],
                            secureboot: SecureBoot {
                                enroll_keys: ek,
                                include_well_known_certificates: wk,
                            },
                            disk_image: DiskImage { sector_size: ss },
                        },
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn canonical_is_a_fixed_point(s in schematic()) {
            let c1 = s.canonical();
            // Two go-yaml v4 quirks make some literal blocks read back differently: `|4` is
            // relative to the wrong column inside sequence items, and a literal starting with
            // a line break then a space gets no indentation indicator at all. Upstream IDs
            // depend on these bytes, so they are kept (see `leading_space_literal_in_sequence`).
            prop_assume!(!has_break_then_space(&s));
            let reparsed = Schematic::parse(c1.as_bytes())
                .map_err(|e| TestCaseError::fail(format!("{e}\n---\n{c1}")))?;
            let c2 = reparsed.canonical();
            prop_assert_eq!(&c1, &c2);
        }

        #[test]
        fn parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = Schematic::parse(&bytes);
        }
    }
}

/// The shared emitter in go-yaml v3 mode reproduces the v3 corpus byte for byte, the cases where
/// v4 differs included: the v3 rules that `extensions.yaml` relies on are checked on every
/// schematic shape the corpus has.
#[test]
fn golden_corpus_in_go_yaml_v3_mode() {
    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        input: String,
        canonical: Option<String>,
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/schematics.json");
    let text = std::fs::read_to_string(path).expect("golden corpus present");
    let cases: Vec<Case> = serde_json::from_str(&text).expect("golden corpus parses");
    let mut failures = Vec::new();
    let mut compared = 0;
    for case in &cases {
        let Some(go) = &case.canonical else { continue };
        let Ok(ours) = Schematic::parse(case.input.as_bytes()) else {
            continue;
        };
        compared += 1;
        let v3 = ours.marshal(yaml::Flavour::V3);
        if v3 != *go {
            failures.push(format!("{}:\n  go: {go:?}\n  v3: {v3:?}", case.name));
        }
    }
    assert!(compared > 300, "only {compared} cases compared");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
