//! Hostile schematic documents: inputs within the 1 MiB request body limit that made the parser
//! do unbounded work (time, memory or stack). Shared by the schematic tests and the HTTP tests,
//! with the outcome each must have.

/// The request body limit the documents are sized to (`http.maxBodyBytes` default).
pub const BODY_LIMIT: usize = 1 << 20;

/// The refusal of [`alias_bomb`].
pub const ALIAS_BOMB_ERROR: &str = "yaml: document contains excessive aliasing";

/// The ID of [`distinct_keys`] (computed independently from go-yaml's key order).
pub const DISTINCT_KEYS_ID: &str =
    "3e963ba3f6c1e03977686819c79c62b0a6a08d6a92c26ce9c9ed9eb356f6afb7";

/// How many keys [`duplicate_keys`] and [`distinct_keys`] hold.
pub const KEYS: usize = 100_000;

const OVERLAY: &str = "overlay:\n  image: siderolabs/sbc-raspberrypi\n  name: rpi_generic\n";

/// One 256 KiB anchored string referenced as often as the body limit allows (~196,000 aliases,
/// ~48 GiB once expanded).
pub fn alias_bomb() -> String {
    let mut doc = String::from("customization:\n  extraKernelArgs: [&a ");
    doc.push_str(&"x".repeat(256 << 10));
    while doc.len() + ", *a".len() + "]\n".len() <= BODY_LIMIT {
        doc.push_str(", *a");
    }
    doc.push_str("]\n");
    doc
}

/// [`KEYS`] copies of one key in `overlay.options` (~5·10⁹ pairs of equal keys).
pub fn duplicate_keys() -> String {
    let mut doc = format!("{OVERLAY}  options:\n");
    for _ in 0..KEYS {
        doc.push_str("    k: 1\n");
    }
    doc
}

/// The refusal of [`duplicate_keys`]: the first 100 pairs, then how many more there are.
pub fn duplicate_keys_error() -> String {
    // The keys are on lines 5, 6, ...; go-yaml reports each later key against each earlier one.
    let listed: Vec<String> = (6..106)
        .map(|line| format!("line {line}: mapping key \"k\" already defined at line 5"))
        .collect();
    let pairs = (KEYS as u64) * (KEYS as u64 - 1) / 2;
    format!(
        "yaml: construct errors: {}; and {} more",
        listed.join("; "),
        pairs - 100
    )
}

/// [`KEYS`] distinct keys in `overlay.options` (`k0`, `k1`, … in base 36): a valid schematic
/// whose ID is [`DISTINCT_KEYS_ID`].
pub fn distinct_keys() -> String {
    let keys: Vec<String> = (0..KEYS).map(|i| format!("k{}: 0", base36(i))).collect();
    format!("{OVERLAY}  options: {{{}}}\n", keys.join(", "))
}

/// The refusal of [`deep_alias`].
pub const DEEP_ALIAS_ERROR: &str = "yaml: line 7: exceeded max depth of 512";

/// Anchors that each nest the previous one 200 levels deeper: aliases expand to a structure
/// tens of thousands of levels deep (a decoder recursing on it runs out of stack).
pub fn deep_alias() -> String {
    let mut doc = String::from("overlay:\n  image: i\n  name: n\n  options:\n");
    for i in 0..400 {
        let inner = if i == 0 {
            "x".to_string()
        } else {
            format!("*a{}", i - 1)
        };
        doc.push_str(&format!(
            "    k{i}: &a{i} {}{inner}{}\n",
            "[".repeat(200),
            "]".repeat(200)
        ));
    }
    doc
}

fn base36(mut i: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[i % 36]);
        i /= 36;
        if i == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}
