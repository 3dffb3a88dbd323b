package main

// Input documents for the golden corpus. Each case is meant to exercise one
// decoder or emitter rule; names are stable identifiers for the Rust tests.

import "strings"

// args builds a schematic whose only content is extraKernelArgs, with each
// item given as raw YAML scalar text.
func args(items ...string) string {
	var b strings.Builder
	b.WriteString("customization:\n  extraKernelArgs:\n")
	for _, it := range items {
		b.WriteString("    - " + it + "\n")
	}
	return b.String()
}

// emc builds a schematic with embeddedMachineConfiguration given as raw YAML
// value text (may itself span several lines, e.g. a block scalar).
func emc(v string) string {
	return "customization:\n  embeddedMachineConfiguration: " + v + "\n"
}

func meta(key, value string) string {
	return "customization:\n  meta:\n    - key: " + key + "\n      value: " + value + "\n"
}

// opts builds an overlay with the given options body (already indented by 4).
func opts(body string) string {
	return "overlay:\n  image: siderolabs/sbc-raspberrypi\n  name: rpi_generic\n  options:\n" + body
}

type probe struct{ name, item, note string }

func allCases() []testCase {
	var cs []testCase
	add := func(name, input, note string) { cs = append(cs, testCase{name: name, input: input, note: note}) }

	// -----------------------------------------------------------------------
	// Spec §2.5 worked examples (inputs are the canonical forms themselves).
	add("spec_01_empty_customization", "customization: {}\n", "spec §2.5 #1")
	add("spec_02_kernel_args", "customization:\n    extraKernelArgs:\n        - noapic\n        - nolapic\n", "spec §2.5 #2")
	add("spec_03_kernel_args_nomodeset", "customization:\n    extraKernelArgs:\n        - nolapic\n        - nomodeset\n", "spec §2.5 #3")
	add("spec_04_meta", "customization:\n    meta:\n        - key: 10\n          value: foo\n", "spec §2.5 #4")
	add("spec_05_meta_json_value", "customization:\n    meta:\n        - key: 10\n          value: '{\"externalIPs\":[\"1.2.3.4\"]}'\n", "spec §2.5 #5")
	add("spec_06_secureboot_wellknown", "customization:\n    secureboot:\n        includeWellKnownCertificates: true\n", "spec §2.5 #6")
	add("spec_07_sector_size", "customization:\n    diskImage:\n        sectorSize: 4096\n", "spec §2.5 #7")
	add("spec_08_bootloader_grub", "customization:\n    bootloader: grub\n", "spec §2.5 #8")
	add("spec_09_bootloader_sdboot", "customization:\n    bootloader: sd-boot\n", "spec §2.5 #9")
	add("spec_10_extensions_unsorted", "customization:\n    systemExtensions:\n        officialExtensions:\n            - siderolabs/amd-ucode\n            - siderolabs/gvisor\n            - siderolabs/gasket-driver\n", "spec §2.5 #10: input order preserved, not sorted")
	add("spec_11_overlay_rpi_generic", "overlay:\n    image: siderolabs/sbc-raspberrypi\n    name: rpi_generic\ncustomization: {}\n", "spec §2.5 #11")
	add("spec_layout_rpi5_example", "overlay:\n    image: siderolabs/sbc-raspberrypi\n    name: rpi_5\n    options:\n        configTxtAppend: |\n            dtparam=cooling_fan=on\ncustomization:\n    systemExtensions:\n        officialExtensions:\n            - siderolabs/iscsi-tools\n            - siderolabs/util-linux-tools\n", "spec §2.3.1 layout example")
	add("spec_docs_vga791", "customization:\n  extraKernelArgs:\n    - vga=791\n", "spec §2.5 note: docs example, plain SHA-256 id")

	// Input equivalences from spec §2.5.
	add("eq_empty_flow_map", "{}\n", "spec §2.5: {} -> #1")
	add("eq_empty_ext_args_json", "customization: {\"extraKernelArgs\": []}\n", "spec §2.5: empty list omitted -> #1")
	add("eq_json_kernel_args", "{\"customization\": {\"extraKernelArgs\": [\"noapic\", \"nolapic\"]}}", "spec §2.5 -> #2 (JSON input, no trailing newline)")
	add("eq_json_kernel_args_empty_sysext", "{\"customization\": {\"extraKernelArgs\": [\"noapic\", \"nolapic\"], \"systemExtensions\": {}}}", "spec §2.5 -> #2")
	add("eq_json_meta", "{\"customization\": {\"meta\": [{\"key\": 10, \"value\": \"foo\"}], \"extraKernelArgs\": [], \"systemExtensions\": {}}}", "spec §2.5 -> #4")
	add("eq_json_overlay", "{\"overlay\": {\"name\": \"rpi_generic\", \"image\": \"siderolabs/sbc-raspberrypi\"}}", "spec §2.5 -> #11 (image/name reordered)")
	add("eq_json_overlay_with_customization", "{\"overlay\": {\"name\": \"rpi_generic\", \"image\": \"siderolabs/sbc-raspberrypi\"}, \"customization\": {}}", "spec §2.5 -> #11")
	add("eq_json_secureboot", "{\"customization\":{\"secureboot\": {\"includeWellKnownCertificates\": true}}}", "spec §2.5 -> #6")

	// -----------------------------------------------------------------------
	// Omitempty / zero rules, document-level forms.
	add("zero_customization_null", "customization:\n", "null customization -> zero struct")
	add("zero_customization_tilde", "customization: ~\n", "")
	add("zero_document_null", "~\n", "null document decodes to the zero schematic")
	add("zero_document_start_only", "---\n", "empty document after ---")
	add("zero_sysext_empty_map", "customization:\n  systemExtensions: {}\n", "omitted")
	add("zero_sysext_empty_list", "customization:\n  systemExtensions:\n    officialExtensions: []\n", "omitted")
	add("zero_secureboot_false", "customization:\n  secureboot:\n    includeWellKnownCertificates: false\n", "omitted")
	add("zero_secureboot_empty_enroll", "customization:\n  secureboot:\n    enrollKeys: \"\"\n", "omitted")
	add("zero_diskimage_zero", "customization:\n  diskImage:\n    sectorSize: 0\n", "omitted")
	add("zero_overlay_empty", "overlay: {}\ncustomization: {}\n", "empty overlay omitted")
	add("zero_overlay_options_empty", "overlay:\n  options: {}\n", "empty options map -> whole overlay omitted")
	add("zero_overlay_options_null", "overlay:\n  options: ~\n", "")
	add("zero_owner_empty", "owner: \"\"\ncustomization: {}\n", "empty owner is accepted and omitted")
	add("zero_bootloader_none", "customization:\n  bootloader: none\n", "none = zero value, omitted")
	add("zero_bootloader_null", "customization:\n  bootloader: ~\n", "null leaves the zero value")
	add("zero_meta_empty_list", "customization:\n  meta: []\n", "")
	add("overlay_name_only", "overlay:\n  name: rpi_generic\n", "image is not omitempty -> image: \"\"")
	add("overlay_image_only", "overlay:\n  image: siderolabs/sbc-raspberrypi\n", "name is not omitempty -> name: \"\"")
	add("overlay_options_only", "overlay:\n  options:\n    a: 1\n", "image/name emitted as \"\"")
	add("overlay_image_name_quoted_forms", "overlay:\n  image: 'siderolabs/sbc-raspberrypi'\n  name: \"rpi_generic\"\n", "quoted input styles do not matter -> #11")

	add("full_schematic_all_fields", `overlay:
  name: rpi_5
  image: siderolabs/sbc-raspberrypi
  options:
    configTxtAppend: |
      dtparam=cooling_fan=on
    zeta: 1
    alpha: true
customization:
  diskImage:
    sectorSize: 4096
  secureboot:
    includeWellKnownCertificates: true
    enrollKeys: force
  bootloader: dual-boot
  systemExtensions:
    officialExtensions:
      - siderolabs/iscsi-tools
      - siderolabs/util-linux-tools
  meta:
    - key: 0xa
      value: '{"externalIPs":["1.2.3.4"]}'
    - key: 12
      value: hello
  extraKernelArgs:
    - console=ttyS0,115200
    - talos.dashboard.disabled=1
  embeddedMachineConfiguration: |
    apiVersion: v1alpha1
    kind: HostnameConfig
    hostname: worker-1
`, "every field, input keys in non-canonical order")
	add("json_unicode_escapes", "{\"customization\":{\"extraKernelArgs\":[\"\\u00e9\",\"a\\tb\",\"\\u0041\\\"\\\\\"]}}", "JSON \\uXXXX, \\t, \\\" and \\\\ escapes are valid YAML double-quoted escapes")
	add("err_json_escaped_slash", "{\"customization\":{\"extraKernelArgs\":[\"a\\/b\"]}}", "JSON's \\/ escape is not a YAML 1.1 escape: yaml.v3 rejects it")
	add("err_json_surrogate_pair", "{\"customization\":{\"extraKernelArgs\":[\"\\ud83d\\ude00\"]}}", "JSON surrogate-pair escape of an emoji: yaml.v3 rejects UTF-16 surrogate escapes")
	add("full_schematic_json", `{"customization":{"extraKernelArgs":["net.ifnames=0","-x"],"meta":[{"key":10,"value":"foo"}],"systemExtensions":{"officialExtensions":["siderolabs/gvisor"]},"bootloader":"grub","secureboot":{"enrollKeys":"manual","includeWellKnownCertificates":true},"diskImage":{"sectorSize":4096},"embeddedMachineConfiguration":"a: b\nc: d\n"},"overlay":{"image":"x/y","name":"z","options":{"b":[1,2.5,"s",null,true],"a":{"m":{}}}}}`, "JSON form with every field")

	// -----------------------------------------------------------------------
	// extraKernelArgs: string scalar styles, one probe per case.
	probes := []probe{
		// plain
		{"plain_simple", "noapic", "plain"},
		{"plain_console_comma", "console=ttyS0,115200", "comma inside is fine in block context"},
		{"plain_url", "talos.config=https://x/y?a=b", "plain"},
		{"plain_dash_x", "-x", "dash not followed by space"},
		{"plain_colon_inside", "a:b", "colon not followed by space"},
		{"plain_version", "1.2.3", "not a float"},
		{"plain_hash_inside", "a#b", "hash not preceded by space"},
		{"plain_space_inside", "a b c", "inner spaces are plain"},
		{"plain_single_quote_inside", "it's", "quote not first char"},
		{"plain_double_quote_inside", "say \"hi\"", "raw double quotes inside are plain"},
		{"plain_backslash", "'a\\b'", "backslash is plain"},
		{"plain_colon_first_no_space", "':x'", "':' followed by non-space stays plain"},
		{"plain_question_first_no_space", "'?x'", "'?' followed by non-space stays plain"},
		{"plain_tilde_prefix", "'~x'", ""},
		{"plain_nbsp_inside", "\"a\\_b\"", "U+00A0 is printable and not a YAML space: emitted raw, plain"},
		{"plain_yes_mixed_case", "yES", "not one of the YAML-1.1 words"},
		{"plain_base60_bad_minutes", "1:60", "does not match base-60 regex"},
		{"plain_date_invalid_month", "2001-13-45", "looks like a date but is not a valid timestamp -> plain string in both libraries"},
		{"plain_five_digit_year", "12345-01-01", "not a timestamp (year must have 4 digits)"},
		{"plain_0b_invalid", "0b2", "not a binary integer"},
		{"plain_hex_float", "0x1p-2", "Go hex float syntax is not a YAML int/float"},
		{"dq_dot_underscore", "'.1_0'", "Go ParseFloat accepts underscores, so .1_0 is a float -> quoted"},
		{"plain_dot_infinity", "'.infinity'", ""},
		{"plain_inf_word", "inf", ""},
		{"plain_nan_word", "nan", ""},
		{"plain_minus_inf_word", "-inf", ""},
		{"plain_1e", "1e", "incomplete exponent"},
		{"plain_long_81_chars", "'" + strings.Repeat("word ", 20) + "end'", "longer than 80 columns with spaces: no line folding"},
		{"plain_unicode_e_acute", "café", "non-ASCII emitted raw"},
		{"plain_unicode_cjk", "日本語", ""},
		{"dq_astral_emoji", "\"\\U0001F600\"", "astral-plane character"},
		{"plain_private_use", "\"\\uE000x\"", "U+E000 is printable"},
		{"plain_combining", "\"e\\u0301\"", "combining mark"},

		// int-like -> double-quoted
		{"dq_int_123", "123", "plain int source text kept as string, re-emitted double-quoted"},
		{"dq_int_hex", "0x1f", ""},
		{"dq_int_hex_upper", "0X1F", "Go ParseInt base 0 accepts 0X"},
		{"dq_int_octal_0o", "0o17", ""},
		{"dq_int_binary", "0b101", ""},
		{"dq_int_neg_binary", "-0b101", ""},
		{"dq_int_underscore", "1_000", "underscores removed before int parsing"},
		{"dq_int_negative", "-5", ""},
		{"dq_int_plus", "+5", ""},
		{"dq_int_leading_zero", "007", "leading-0 octal"},
		{"dq_float_08", "08", "invalid octal, but matches the float regex -> float -> quoted"},
		{"dq_int_minus_zero", "-0", ""},
		{"dq_uint64_big", "9223372036854775808", "fits uint64 only"},
		{"dq_float_huge_int", "1_000_000_000_000_000_000_000", "too big for 64-bit ints, resolves as float"},
		{"dq_int_quoted_input", "\"10\"", "quoted input, same output as plain 10"},
		// float-like
		{"dq_float_1_5", "1.5", ""},
		{"dq_float_1e3", "1e3", ""},
		{"dq_float_1E3", "1E3", ""},
		{"dq_float_dot5", ".5", ""},
		{"dq_float_trailing_dot", "1.", ""},
		{"dq_float_minus_zero", "-0.0", ""},
		{"dq_float_underscore", "1_0.5", ""},
		{"dq_float_neg_inf", "-.inf", ""},
		{"dq_float_pos_inf_upper", "+.INF", ""},
		{"dq_float_inf_mixed", ".Inf", ""},
		{"dq_float_nan", ".nan", ""},
		{"dq_float_nan_mixed", ".NaN", ""},
		// bool / null words
		{"dq_true_plain_input", "true", "plain bool in a string field keeps its text"},
		{"dq_true_quoted", "\"true\"", ""},
		{"dq_True", "\"True\"", ""},
		{"dq_FALSE", "\"FALSE\"", ""},
		{"dq_null_quoted", "\"null\"", ""},
		{"dq_Null_quoted", "\"Null\"", ""},
		{"dq_tilde_quoted", "\"~\"", ""},
		{"dq_empty_string", "\"\"", "empty string -> \"\""},
		{"dq_date", "\"2001-12-14\"", "quoted date string (accepted by every version)"},
		{"date_plain", "2001-12-14", "unquoted date in a string field"},
		{"datetime_plain", "2001-12-14t21:59:43.10-05:00", "unquoted timestamp in a string field"},
		{"dq_datetime_t", "\"2001-12-14t21:59:43.10-05:00\"", "lower-case t timestamp"},
		{"dq_datetime_space", "\"2001-12-14 21:59:43.10\"", "space separated timestamp"},
		{"dq_date_short", "\"2001-1-1\"", "short date fields are still a timestamp"},
		{"merge_key_string", "\"<<\"", "merge key text as a string"},
		// YAML 1.1 words (v3 double-quotes; v1.5.0 single-quotes)
		{"yaml11_y", "\"y\"", ""}, {"yaml11_Y", "\"Y\"", ""}, {"yaml11_yes", "yes", "plain input"},
		{"yaml11_Yes", "\"Yes\"", ""}, {"yaml11_YES", "\"YES\"", ""}, {"yaml11_n", "\"n\"", ""},
		{"yaml11_N", "\"N\"", ""}, {"yaml11_no", "no", "plain input"}, {"yaml11_No", "\"No\"", ""},
		{"yaml11_NO", "\"NO\"", ""}, {"yaml11_on", "on", "plain input"}, {"yaml11_On", "\"On\"", ""},
		{"yaml11_ON", "\"ON\"", ""}, {"yaml11_off", "off", "plain input"}, {"yaml11_Off", "\"Off\"", ""},
		{"yaml11_OFF", "\"OFF\"", ""},
		{"base60_1_20", "1:20", "plain input"},
		{"base60_190_20_30", "\"190:20:30\"", ""},
		{"base60_frac", "\"1:20.5\"", ""},
		{"base60_negative", "\"-1:20\"", ""},
		// single-quoted
		{"sq_empty_braces", "'{}'", ""},
		{"sq_json_object", "'{\"externalIPs\":[\"1.2.3.4\"]}'", ""},
		{"sq_hash_first", "'#x'", ""},
		{"sq_gte_version", "'>= 1.0.0'", ""},
		{"sq_lone_dash", "'-'", ""},
		{"sq_dash_space", "'- x'", ""},
		{"sq_colon_space", "'foo: bar'", ""},
		{"sq_space_hash", "'a #b'", ""},
		{"sq_leading_space", "' lead'", ""},
		{"sq_trailing_space", "'trail '", ""},
		{"sq_only_space", "' '", ""},
		{"sq_brackets", "'[x]'", ""},
		{"sq_close_bracket", "']x'", ""},
		{"sq_close_brace", "'}x'", ""},
		{"sq_comma_first", "',x'", ""},
		{"sq_star", "'*x'", ""},
		{"sq_ampersand", "'&x'", ""},
		{"sq_bang", "'!x'", ""},
		{"sq_percent", "'%x'", ""},
		{"sq_at", "'@x'", ""},
		{"sq_backtick", "'`x'", ""},
		{"sq_pipe", "'|x'", ""},
		{"sq_gt", "'>x'", ""},
		{"sq_quote_first", "\"'x\"", "leading single quote is doubled inside single quotes"},
		{"sq_dquote_first", "'\"x'", ""},
		{"sq_question_space", "'? x'", ""},
		{"sq_colon_first_space", "': x'", ""},
		{"sq_lone_question", "'?'", ""},
		{"sq_lone_colon", "':'", ""},
		{"sq_trailing_colon", "'x:'", ""},
		{"sq_three_dashes_prefix", "'---x'", ""},
		{"sq_three_dots_prefix", "'...x'", ""},
		{"sq_three_dashes", "'---'", ""},
		{"sq_three_dots", "'...'", ""},
		{"sq_with_inner_quote", "'a: b ''c'''", "inner single quotes doubled"},
		{"sq_unicode_trailing_space", "'é '", ""},
		// double-quoted (non-printable / tab)
		{"dq_tab_inside", "\"a\\tb\"", ""},
		{"dq_tab_leading", "\"\\tx\"", ""},
		{"dq_tab_only", "\"\\t\"", ""},
		{"dq_ctrl_01", "\"a\\x01b\"", ""},
		{"dq_ctrl_esc", "\"\\e[0m\"", ""},
		{"dq_ctrl_bel_bs", "\"\\a\\b\"", ""},
		{"dq_ctrl_vt_ff", "\"\\v\\f\"", ""},
		{"dq_cr", "\"a\\rb\"", "CR is non-printable"},
		{"dq_nul", "\"a\\0b\"", ""},
		{"dq_del", "\"a\\x7fb\"", ""},
		{"dq_c1_control", "\"a\\x9bb\"", "C1 control U+009B"},
		{"dq_nel", "\"a\\Nb\"", "U+0085 NEL (printable line break)"},
		{"sq_line_separator", "\"a\\Lb\"", "U+2028"},
		{"sq_paragraph_separator", "\"a\\Pb\"", "U+2029"},
		{"dq_bom_inside", "\"a\\uFEFFb\"", "U+FEFF is non-printable for the emitter"},
		{"dq_noncharacter_fffe", "\"a\\uFFFEb\"", ""},
		{"dq_tab_and_quotes", "\"it's \\\"x\\\"\\t\"", "double-quote and backslash escaping"},
		{"dq_backslash_and_tab", "\"\\\\\\t\"", ""},
		{"dq_nbsp_with_tab", "\"\\_\\t\"", "NBSP is escaped as \\_ inside double quotes"},
		{"dq_latin1_ctrl_and_unicode", "\"é\\x01\"", ""},
		{"dq_astral_with_ctrl", "\"\\U0001F600\\x01\"", ""},
	}
	for _, p := range probes {
		add("arg_"+p.name, args(p.item), p.note)
	}

	// Lists: order, duplicates, nulls, anchors.
	add("list_order_and_duplicates", args("b", "a", "b", "a"), "input order kept, no de-duplication")
	add("list_null_items_dropped", args("a", "~", "b", "null", "c"), "yaml.v3 drops null items of a []string (d.null fails for string kind); the v4 constructor inspected has the same code")
	add("list_empty_item_dropped", "customization:\n  extraKernelArgs:\n    - a\n    -\n    - b\n", "an empty '-' item is null and is dropped")
	add("list_all_null", args("~"), "all items dropped -> empty list -> omitted")
	add("list_empty_string_kept", args("a", "\"\"", "b"), "empty string items are kept")
	add("list_flow", "customization: {extraKernelArgs: [a, 'b c', \"d\"]}\n", "flow sequence input")
	add("list_anchor_alias", "customization:\n  extraKernelArgs:\n    - &a foo\n    - *a\n", "alias expands to the anchored value")
	add("list_tagged_str", args("!!str 123", "!!str true"), "explicit !!str tags")
	add("list_custom_tag", args("!foo bar"), "unknown local tag: value kept as text")
	add("list_binary_ascii", args("!!binary aGVsbG8="), "!!binary decoded into a string field")
	add("list_binary_invalid_utf8", args("!!binary /w=="), "decodes to byte 0xFF (invalid UTF-8): yaml.v3 re-encodes it as a !!binary base64 scalar")
	add("list_many_kernel_args", args("console=tty0", "console=ttyS0,115200n8", "talos.platform=metal", "net.ifnames=0", "ip=10.0.0.2::10.0.0.1:255.255.255.0:node1:eth0:off", "talos.config=http://10.0.0.1:8080/config?uuid=${uuid}&mac=${mac}", "-talos.halt_if_installed", "init_on_alloc=1", "slab_nomerge", "pti=on"), "realistic mixture")
	add("list_sysext_quoting", "customization:\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/gvisor\n      - \"123\"\n      - yes\n      - '- x'\n", "officialExtensions follow the same string rules")

	// -----------------------------------------------------------------------
	// embeddedMachineConfiguration: multi-line strings.
	add("mls_clip", emc("\"a\\nb\\n\""), "ends with one newline -> |")
	add("mls_strip", emc("\"a\\nb\""), "no trailing newline -> |-")
	add("mls_keep", emc("\"a\\nb\\n\\n\""), "two trailing newlines -> |+ (last value in the document)")
	add("mls_keep_three", emc("\"a\\n\\n\\n\""), "three trailing newlines -> |+")
	add("mls_keep_not_last", "customization:\n  embeddedMachineConfiguration: \"a\\n\\n\"\n  extraKernelArgs: [x]\n", "|+ followed by another key")
	add("mls_leading_spaces", emc("\"  a\\nb\\n\""), "text starts with a space -> indentation indicator |4")
	add("mls_leading_space_strip", emc("\" a\\nb\""), "-> |4-")
	add("mls_blank_lines", emc("\"a\\n\\nb\\n\\n\\nc\\n\""), "blank lines emitted empty")
	add("mls_trailing_space_on_line", emc("\"a \\nb\\n\""), "space before a line break -> double-quoted")
	add("mls_ends_with_space", emc("\"a\\nb \""), "ends with a space -> double-quoted")
	add("mls_single_newline", emc("\"\\n\""), "a single line break")
	add("mls_two_newlines", emc("\"\\n\\n\""), "only line breaks")
	add("mls_space_newline", emc("\" \\n\""), "whitespace-only with space before break -> double-quoted in both")
	add("mls_newline_space", emc("\"\\n \""), "whitespace-only ending with a space -> double-quoted in both")
	add("mls_tab_newline", emc("\"\\t\\n\""), "whitespace-only (tab)")
	add("mls_leading_newline", emc("\"\\nfoo\\n\""), "text starts with a line break")
	add("mls_leading_two_newlines", emc("\"\\n\\nfoo\""), "text starts with line breaks, no trailing newline")
	add("mls_tab_inside", emc("\"a\\tb\\nc\\n\""), "tabs do not prevent a literal block")
	add("mls_indented_lines", emc("\"a\\n  b\\n    c\\n\""), "space after a break is allowed in a literal block")
	add("mls_crlf", emc("\"a\\r\\nb\\n\""), "CR is non-printable -> double-quoted")
	add("mls_nul", emc("\"a\\n\\0\""), "non-printable -> double-quoted")
	add("mls_nel_inside", emc("\"a\\Nb\\nc\\n\""), "NEL inside a literal block")
	add("mls_ls_inside", emc("\"a\\Lb\\nc\""), "U+2028 inside a multi-line string")
	add("mls_unicode", emc("\"é\\n日本\\n\\U0001F600\\n\""), "unicode in a literal block")
	add("mls_quotes_and_hashes", emc("\"# comment\\nkey: 'v' # x\\n\\\"q\\\": [1, {a: b}]\\n\""), "indicators are irrelevant in literal blocks")
	add("mls_long_line", emc("\""+strings.Repeat("abc ", 40)+"x\\nend\\n\""), "long line, no folding")
	add("mls_block_literal_input", "customization:\n  embeddedMachineConfiguration: |\n    version: v1alpha1\n    machine:\n      type: worker\n", "realistic machine config via literal block")
	add("mls_block_literal_strip_input", "customization:\n  embeddedMachineConfiguration: |-\n    a\n    b\n", "")
	add("mls_block_literal_keep_input", "customization:\n  embeddedMachineConfiguration: |+\n    a\n\n\n", "")
	add("mls_block_literal_indicator_input", "customization:\n  embeddedMachineConfiguration: |2\n     a\n    b\n", "explicit indentation indicator in input")
	add("mls_folded_input", "customization:\n  embeddedMachineConfiguration: >\n    a\n    b\n\n    c\n", "folded input becomes 'a b\\nc\\n'")
	add("mls_plain_multiline_input", "customization:\n  embeddedMachineConfiguration: a\n    b\n    c\n", "multi-line plain scalar folds to 'a b c'")
	add("mls_multidoc_config", emc("\"version: v1alpha1\\n---\\napiVersion: v1alpha1\\nkind: X\\n\""), "'---' inside a literal block is fine")
	add("emc_date_plain", emc("2024-01-01"), "")
	add("mls_single_line_value", emc("foo"), "single-line embeddedMachineConfiguration is plain")
	add("mls_in_meta_value", "customization:\n  meta:\n    - key: 12\n      value: |\n        line1\n        line2\n", "literal block inside a sequence-of-mappings item")
	add("mls_in_kernel_arg", args("\"a\\nb\""), "literal block as a sequence item")

	// -----------------------------------------------------------------------
	// meta
	for _, k := range []struct{ name, key, note string }{
		{"hex", "0xa", "re-emitted in decimal"},
		{"decimal", "10", ""},
		{"octal_0o", "0o12", ""},
		{"binary", "0b1010", ""},
		{"underscore", "1_0", ""},
		{"leading_zero_octal", "012", "leading-0 octal = 10"},
		{"hex_upper", "0x0A", ""},
		{"plus", "+10", ""},
		{"zero", "0", "key 0 is emitted (not omitempty)"},
		{"max", "255", ""},
		{"float_integral", "10.0", "float with integral value accepted"},
		{"float_exp", "1e1", ""},
		{"float_08", "08", "'08' resolves as float 8 and is accepted"},
		{"float_truncated", "10.9", "yaml.v3 truncates a non-integral float into uint8 (10); the v4 constructor inspected has the same code"},
		{"null", "~", "null key leaves 0"},
		{"explicit_int_tag", "!!int \"10\"", "explicit !!int tag on a quoted scalar"},
	} {
		add("meta_key_"+k.name, meta(k.key, "foo"), k.note)
	}
	add("meta_key_missing", "customization:\n  meta:\n    - value: foo\n", "missing key -> 0")
	add("meta_value_missing", "customization:\n  meta:\n    - key: 1\n", "missing value -> value: \"\"")
	add("meta_value_null", meta("1", "~"), "")
	add("meta_value_empty", meta("1", "\"\""), "")
	add("meta_value_int", meta("1", "123"), "")
	add("meta_value_yes", meta("1", "yes"), "")
	add("meta_value_date_plain", meta("1", "2024-01-01"), "")
	add("meta_value_tab", meta("1", "\"a\\tb\""), "")
	add("meta_value_colon", meta("1", "'a: b'"), "")
	add("meta_value_unicode", meta("1", "日本"), "")
	add("meta_multiple_order", "customization:\n  meta:\n    - key: 12\n      value: b\n    - key: 10\n      value: a\n    - key: 12\n      value: c\n", "order kept, duplicates kept")
	add("meta_flow_items", "customization:\n  meta: [{key: 10, value: foo}, {value: bar, key: 11}]\n", "")
	add("meta_null_item_dropped", "customization:\n  meta:\n    - ~\n    - key: 1\n      value: x\n", "null struct item dropped like null strings")

	// -----------------------------------------------------------------------
	// bootloader
	add("bootloader_upper_grub", "customization:\n  bootloader: GRUB\n", "case-insensitive")
	add("bootloader_mixed_sdboot", "customization:\n  bootloader: Sd-Boot\n", "")
	add("bootloader_dual_boot", "customization:\n  bootloader: dual-boot\n", "")
	add("bootloader_upper_dual_boot", "customization:\n  bootloader: DUAL-BOOT\n", "")
	add("bootloader_upper_none", "customization:\n  bootloader: NONE\n", "omitted")
	add("bootloader_quoted_grub", "customization:\n  bootloader: \"grub\"\n", "")

	// secureboot / diskImage
	for _, b := range []struct{ name, v string }{
		{"true", "true"}, {"True", "True"}, {"TRUE", "TRUE"}, {"false", "false"},
		{"yes", "yes"}, {"on", "on"}, {"Y", "Y"}, {"off", "off"}, {"no", "no"}, {"n", "n"},
	} {
		add("secureboot_wellknown_"+b.name, "customization:\n  secureboot:\n    includeWellKnownCertificates: "+b.v+"\n", "bool decoding (YAML-1.1 words accepted into typed bool)")
	}
	for _, e := range []string{"off", "manual", "if-safe", "force"} {
		add("secureboot_enrollkeys_"+strings.ReplaceAll(e, "-", "_"), "customization:\n  secureboot:\n    enrollKeys: "+e+"\n", "enrollKeys is a plain string field")
	}
	add("secureboot_both", "customization:\n  secureboot:\n    includeWellKnownCertificates: true\n    enrollKeys: if-safe\n", "canonical order enrollKeys, includeWellKnownCertificates")
	for _, d := range []struct{ name, v, note string }{
		{"4096", "4096", ""},
		{"float_4096_0", "4096.0", "yaml.v3 accepts an integral float for an uint field"},
		{"hex", "0x1000", ""},
		{"512", "512", "512 is still emitted (only 0 is omitted)"},
		{"float_non_integral", "4096.5", "yaml.v3 truncates to 4096; the v4 constructor inspected has the same code"},
		{"exp", "4.096e3", ""},
	} {
		add("diskimage_sector_"+d.name, "customization:\n  diskImage:\n    sectorSize: "+d.v+"\n", d.note)
	}

	// -----------------------------------------------------------------------
	// overlay.options
	add("opt_scalars", opts("    str: hello\n    int: 42\n    neg: -7\n    hex: 0x1f\n    big: 9223372036854775808\n    t: true\n    f: false\n    nul: null\n    tilde: ~\n    empty:\n"), "native types kept; nulls re-emitted as null")
	add("opt_floats", opts("    a: 1.0\n    b: 1e6\n    c: 2.5\n    d: 0.1\n    e: 100000.0\n    f: 1e21\n    g: 1e-7\n    h: -0.0\n    i: .inf\n    j: -.inf\n    k: .nan\n    l: 123456789.0\n    m: 1_000.5\n"), "floats re-emitted with Go %g shortest formatting")
	add("opt_nested_map", opts("    outer:\n      inner:\n        deep: 1\n      b: 2\n"), "")
	add("opt_lists", opts("    list:\n      - 1\n      - two\n      - [3, 4]\n      - {k: v}\n      - []\n      - {}\n    empty_list: []\n    empty_map: {}\n"), "empty list/map inside options emitted as [] / {}")
	add("opt_list_of_maps", opts("    items:\n      - name: a\n        value: 1\n      - value: 2\n        name: b\n"), "map items in a list: first key on the dash line, keys sorted")
	add("opt_strings_need_quotes", opts("    a: \"123\"\n    b: \"true\"\n    c: '{}'\n    d: \"\"\n    e: 'x: y'\n    f: \"a\\tb\"\n    g: \"null\"\n"), "")
	add("opt_multiline", opts("    configTxtAppend: |\n      dtparam=audio=on\n      dtoverlay=vc4-kms-v3d\n    strip: \"a\\nb\"\n    keep: \"a\\n\\n\"\n    lead: \"  x\\ny\\n\"\n"), "literal blocks nested in options")
	add("opt_multiline_in_list", opts("    l:\n      - \"a\\nb\\n\"\n      - x\n"), "")
	add("opt_key_ordering", opts("    a10: 1\n    a2: 2\n    a1: 3\n    b: 4\n    A: 5\n    _x: 6\n    \"1\": 7\n    \"10\": 8\n    \"2\": 9\n    x1y: 10\n    x01y: 11\n"), "go-yaml natural key order")
	add("opt_key_ordering_more", opts("    ab: 1\n    a_: 2\n    aB: 3\n    a01: 4\n    a001: 5\n    a1b: 6\n    a1_: 7\n    Z: 8\n    z: 9\n    é: 10\n    \"-x\": 11\n    10a: 12\n    1a: 13\n    1_: 14\n    \"1.5\": 15\n    a0: 16\n    a00: 17\n    a: 18\n    aa: 19\n    \"\": 20\n"), "letter vs non-letter and leading-zero rules of keyList.Less")
	add("opt_key_int_becomes_string", opts("    1: a\n    2: b\n    10: c\n    true: d\n"), "top-level options keys decode into string keys and are re-emitted quoted")
	add("opt_nested_non_string_keys", opts("    m:\n      10: a\n      2: b\n      1.5: c\n      true: d\n      b: e\n      a: f\n"), "nested map with non-string keys is map[any]any: numbers/bools sort before strings")
	var many strings.Builder
	for _, k := range []string{"k9", "k10", "k1", "k100", "k11", "k2", "key", "Key", "KEY", "k_1", "k-1", "k.1", "k01", "k001", "kk", "kA", "ka", "k", "l", "j", "m1", "m10", "m2", "m20", "m3", "x", "u", "z", "w", "v"} {
		many.WriteString("    " + k + ": " + "v\n")
	}
	add("opt_many_keys", opts(many.String()), "30 keys, natural ordering")
	add("opt_yaml11_values", opts("    a: yes\n    b: off\n    c: \"1:20\"\n"), "")
	add("opt_yaml11_key", opts("    on: 1\n"), "YAML-1.1 word as a key")
	add("opt_timestamp_value", opts("    d: 2024-01-01\n"), "")
	add("opt_timestamp_datetime_tz", opts("    d: 2001-12-14t21:59:43.10-05:00\n"), "")
	add("opt_timestamp_datetime_space", opts("    d: 2001-12-14 21:59:43.10\n"), "")
	add("opt_timestamp_in_list", opts("    l: [2001-1-2, x]\n"), "")
	add("opt_merge_key_string", opts("    \"<<\": 1\n"), "a quoted '<<' key is a plain string key")
	add("opt_timestamp_quoted", opts("    d: \"2024-01-01\"\n"), "quoted: string in every version")
	add("opt_anchor_alias", opts("    a: &x {k: 1}\n    b: *x\n"), "aliases expand")
	add("opt_merge", opts("    base: &b {p: 1, q: 2}\n    derived:\n      <<: *b\n      q: 3\n"), "merge keys resolved by the decoder")
	add("opt_long_key", opts("    "+strings.Repeat("k", 130)+": v\n"), "key longer than 128 chars -> complex key syntax")
	add("opt_multiline_key", opts("    \"a\\nb\": v\n"), "multi-line key -> complex key syntax")
	add("opt_json", "{\"overlay\":{\"image\":\"i\",\"name\":\"nm\",\"options\":{\"x\":{\"p\":[1,2,{\"z\":null}]},\"f\":1.0,\"s\":\"1.0\"}}}", "JSON options")
	add("opt_binary_value", opts("    b: !!binary /w==\n"), "invalid UTF-8 bytes re-emitted as !!binary")
	add("opt_custom_tag_value", opts("    t: !foo bar\n"), "")

	// Merge into typed structs.
	add("merge_into_customization", "customization:\n  <<: {extraKernelArgs: [a]}\n  bootloader: grub\n", "merge key into a struct")
	add("merge_override", "customization:\n  <<: {bootloader: grub}\n  bootloader: sd-boot\n", "explicit key wins over merged one")

	// -----------------------------------------------------------------------
	// Input syntax variations.
	add("syntax_crlf", "customization:\r\n  extraKernelArgs:\r\n    - a\r\n    - b\r\n", "CRLF line endings")
	add("syntax_bom", "\ufeffcustomization:\n  extraKernelArgs: [a]\n", "UTF-8 BOM at start of input")
	add("syntax_comments", "# header\ncustomization: # c\n  extraKernelArgs: # c\n    - a # c\n    - 'b # not a comment'\n", "")
	add("err_yaml_1_2_directive", "%YAML 1.2\n---\ncustomization: {}\n", "yaml.v3 only accepts %YAML 1.1 directives")
	add("syntax_doc_markers", "%YAML 1.1\n---\ncustomization:\n  extraKernelArgs: [a]\n...\n", "directive and document markers")
	add("syntax_quoted_keys", "\"customization\":\n  'extraKernelArgs':\n    - a\n", "")
	add("syntax_explicit_key", "? customization\n: extraKernelArgs: [a]\n", "explicit key syntax")
	add("syntax_flow_everything", "{customization: {extraKernelArgs: [a, b], meta: [{key: 1, value: v}]}, overlay: {name: nm, image: i}}\n", "")
	add("syntax_anchor_customization", "customization: &c\n  extraKernelArgs: [a]\n", "anchor without alias")
	add("multidoc_second_invalid", "customization:\n  extraKernelArgs: [a]\n---\nbogus: 1\n", "only the first document is read")
	add("multidoc_second_syntax_error", "customization:\n  extraKernelArgs: [a]\n---\n[unclosed\n", "only the first document is parsed")

	// -----------------------------------------------------------------------
	// Errors.
	add("err_unknown_top", "something:\n", "spec §1.2 example")
	add("err_unknown_top_with_valid", "customization: {}\nfoo: bar\n", "")
	add("err_unknown_case", "Customization: {}\n", "keys are case-sensitive")
	add("err_unknown_customization", "customization:\n  extraKernelArg: [a]\n", "")
	add("err_unknown_overlay", "overlay:\n  name: x\n  foo: y\n", "")
	add("err_unknown_meta_item", "customization:\n  meta:\n    - key: 1\n      value: x\n      extra: y\n", "")
	add("err_unknown_sysext", "customization:\n  systemExtensions:\n    extensions: [a]\n", "")
	add("err_unknown_secureboot", "customization:\n  secureboot:\n    enabled: true\n", "")
	add("err_unknown_diskimage", "customization:\n  diskImage:\n    size: 1\n", "")
	add("err_two_unknown", "a: 1\ncustomization:\n  b: 2\n", "several errors are joined")
	add("err_duplicate_top", "customization: {}\ncustomization: {}\n", "")
	add("err_duplicate_nested", "customization:\n  extraKernelArgs: [a]\n  extraKernelArgs: [b]\n", "")
	add("err_duplicate_options_key", opts("    a: 1\n    a: 2\n"), "duplicates rejected inside free-form maps too")
	add("err_duplicate_json", "{\"customization\": {}, \"customization\": {}}", "")
	add("err_owner_set", "owner: someone\ncustomization: {}\n", "")
	add("err_meta_key_256", meta("256", "foo"), "")
	add("err_meta_key_negative", meta("-1", "foo"), "")
	add("err_meta_key_quoted", meta("\"10\"", "foo"), "quoted number is a string")
	add("err_meta_key_single_quoted", meta("'10'", "foo"), "")
	add("err_meta_key_word", meta("foo", "bar"), "")
	add("err_meta_key_inf", meta(".inf", "bar"), "")
	add("err_meta_key_hex_too_big", meta("0x100", "bar"), "")
	add("err_meta_value_list", meta("1", "[a]"), "")
	add("err_bootloader_auto", "customization:\n  bootloader: auto\n", "TextUnmarshaler error is returned verbatim by yaml.v3 (no 'unmarshal errors' wrapper, no line)")
	add("err_bootloader_empty", "customization:\n  bootloader: \"\"\n", "")
	add("err_bootloader_int", "customization:\n  bootloader: 1\n", "")
	add("err_bootloader_map", "customization:\n  bootloader: {a: b}\n", "")
	add("err_wellknown_quoted", "customization:\n  secureboot:\n    includeWellKnownCertificates: \"true\"\n", "quoted bool is a string")
	add("err_wellknown_int", "customization:\n  secureboot:\n    includeWellKnownCertificates: 1\n", "")
	add("err_sector_quoted", "customization:\n  diskImage:\n    sectorSize: \"4096\"\n", "")
	add("err_sector_negative", "customization:\n  diskImage:\n    sectorSize: -1\n", "")
	add("err_kernel_args_scalar", "customization:\n  extraKernelArgs: foo\n", "")
	add("err_kernel_args_map", "customization:\n  extraKernelArgs: {a: b}\n", "")
	add("err_kernel_arg_list_item", args("[a]"), "")
	add("err_kernel_arg_map_item", args("a: b"), "")
	add("err_customization_list", "customization: []\n", "")
	add("err_overlay_scalar", "overlay: x\n", "")
	add("err_options_list", "overlay:\n  options: [a]\n", "")
	add("err_document_scalar", "foo\n", "")
	add("err_document_list", "- a\n", "")
	add("err_empty_body", "", "decoder returns io.EOF")
	add("err_whitespace_body", "  \n\n", "")
	add("err_comment_only", "# nothing here\n", "")
	add("err_syntax_unclosed_flow", "customization: {extraKernelArgs: [a}\n", "")
	add("err_syntax_tab_indent", "customization:\n\textraKernelArgs: [a]\n", "")
	add("err_syntax_bad_indent", "customization:\n  extraKernelArgs:\n    - a\n   - b\n", "")
	add("err_syntax_unterminated_quote", "customization:\n  extraKernelArgs: [\"a]\n", "")
	add("err_undefined_alias", "customization:\n  extraKernelArgs: [*nope]\n", "")
	add("err_binary_invalid_base64", args("!!binary '***'"), "")
	add("err_multiple_types", "customization:\n  extraKernelArgs: foo\n  meta: bar\n  diskImage:\n    sectorSize: x\n", "several type errors joined")

	return cs
}
