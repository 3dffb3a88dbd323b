//! The marker line the kit's init prints, and the Talos ADV decoder for its `meta_raw`.
//!
//! ```text
//! IF-TESTKIT-MARKER {"cmdline":"…","extensions":[{"image":"0.sqsh","name":"…","version":"…",
//!   "mounted":true,"proof":"if-testkit extension … …","files":["usr/…",…]}],"schematic":"<id or empty>",
//!   "meta":{"0xa":"…"},"meta_raw":"<base64 gzip of the META partition's first 256 KiB, or empty>",
//!   "firmware":["test/fw.bin",…],"microcode":["GenuineIntel.bin",…],"extra_modules":["extras/dummy.ko",…],
//!   "talos_version":"v1.11.0"}
//! ```
//!
//! (one line). Each entry of `extensions` is one layer of `/extensions.yaml`: `mounted` is
//! whether its mount point is in `/proc/mounts` at the end, `proof` the content of
//! `<PROOF_DIR>/<name>.proof` and `files` every non-directory entry, both read from the mounted
//! layer itself (an unmounted layer shows an empty directory). [`Marker::check_layers`] checks
//! them. `meta` holds the values decoded from `talos.environment=INSTALLER_META_BASE64=` on
//! the command line; `meta_raw` the META partition as found by its GPT name, decoded with
//! [`Marker::meta_partition`].

use std::collections::BTreeMap;
use std::io::Read;

use crate::sha256::digest as sha256;
use base64::Engine as _;
use serde::Deserialize;

use super::{KitError, MARKER_PREFIX, extension_proof};

/// Bytes of one Talos ADV copy.
pub(crate) const ADV_LEN: usize = 256 * 1024;

/// One extension layer as the init found it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MarkerExtension {
    /// Layer image (`0.sqsh`).
    pub image: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.version`.
    pub version: String,
    /// Whether the layer's mount point was mounted.
    pub mounted: bool,
    /// The kit proof file read from the mounted layer (empty when absent).
    pub proof: String,
    /// Every non-directory entry of the mounted layer, sorted, relative to its root.
    pub files: Vec<String>,
}

/// The parsed marker line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Marker {
    /// `/proc/cmdline`.
    pub cmdline: String,
    /// Extensions from `/extensions.yaml`, in layer order, with what was mounted (see
    /// [`Marker::check_layers`]).
    pub extensions: Vec<MarkerExtension>,
    /// The file name in `<root>/usr/local/share/schematic/`, or empty.
    pub schematic: String,
    /// META values from `INSTALLER_META_BASE64` (`"0xa"` → value).
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Base64 of gzip of the first 256 KiB of the META partition, or empty.
    #[serde(default)]
    pub meta_raw: String,
    /// Files under `/usr/lib/firmware` of the initramfs.
    #[serde(default)]
    pub firmware: Vec<String>,
    /// Files under `/kernel/x86/microcode` of the initramfs (early microcode).
    #[serde(default)]
    pub microcode: Vec<String>,
    /// `extras/…` entries of the merged root's `modules.dep`.
    #[serde(default)]
    pub extra_modules: Vec<String>,
    /// `VERSION_ID` of the merged root's `/etc/os-release`.
    #[serde(default)]
    pub talos_version: String,
}

impl Marker {
    /// Finds and parses the first marker line in serial console output.
    pub fn find(console: &str) -> Option<Result<Marker, KitError>> {
        let start = console.find(&format!("{MARKER_PREFIX} "))?;
        let line = console[start + MARKER_PREFIX.len() + 1..]
            .lines()
            .next()
            .unwrap_or_default()
            .trim_end_matches('\r');
        Some(
            serde_json::from_str(line).map_err(|source| KitError::Marker {
                line: line.to_string(),
                source,
            }),
        )
    }

    /// Checks that every layer was mounted and that the mounted layer shows its own content:
    /// a kit extension its proof file ([`extension_proof`]), the `schematic` layer
    /// `usr/local/share/schematic/<id>`, the `modules.dep` layer a `modules.dep`, any other
    /// layer (`embedded-config`) at least one file. The error lists every failing layer.
    pub fn check_layers(&self) -> Result<(), KitError> {
        let mut problems = Vec::new();
        for e in &self.extensions {
            let what = format!("layer {} ({} {})", e.image, e.name, e.version);
            if !e.mounted {
                problems.push(format!("{what} was not mounted"));
                continue;
            }
            let ok = match e.name.as_str() {
                "schematic" => e
                    .files
                    .contains(&format!("usr/local/share/schematic/{}", e.version)),
                "modules.dep" => e
                    .files
                    .iter()
                    .any(|f| f.starts_with("usr/lib/modules/") && f.ends_with("/modules.dep")),
                "embedded-config" => !e.files.is_empty(),
                name => e.proof == extension_proof(name, &e.version),
            };
            if !ok {
                problems.push(format!(
                    "{what} is mounted but does not hold its content: proof {:?}, files {:?}",
                    e.proof, e.files
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(KitError::Layers(problems))
        }
    }

    /// Decodes `meta_raw`: `Ok(None)` when no META partition was found, else the tag → value map
    /// of its Talos ADV (spec talos-imager.md §4.2; empty for an all-zero partition).
    pub fn meta_partition(&self) -> Result<Option<BTreeMap<u8, Vec<u8>>>, KitError> {
        if self.meta_raw.is_empty() {
            return Ok(None);
        }
        let gz = base64::engine::general_purpose::STANDARD
            .decode(&self.meta_raw)
            .map_err(KitError::MetaBase64)?;
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut raw)
            .map_err(KitError::MetaGzip)?;
        if raw.iter().all(|b| *b == 0) {
            return Ok(Some(BTreeMap::new()));
        }
        parse_adv(&raw).map(Some)
    }
}

/// Parses one Talos ADV copy (256 KiB): magics, SHA-256 checksum, then tag/size/value entries
/// (big-endian u32s) up to tag 0.
pub fn parse_adv(block: &[u8]) -> Result<BTreeMap<u8, Vec<u8>>, KitError> {
    const LEN: usize = ADV_LEN;
    if block.len() < LEN {
        return Err(KitError::AdvSize(block.len()));
    }
    let block = &block[..LEN];
    let be = |o: usize| u32::from_be_bytes(block[o..o + 4].try_into().unwrap());
    if be(0) != 0x5A4B_3C2D || be(LEN - 4) != 0xA5B4_C3D2 {
        return Err(KitError::AdvMagic);
    }
    let mut copy = block.to_vec();
    copy[LEN - 36..LEN - 4].fill(0);
    if sha256(&copy).as_slice() != &block[LEN - 36..LEN - 4] {
        return Err(KitError::AdvChecksum);
    }
    let mut out = BTreeMap::new();
    let mut o = 4;
    while o + 8 <= LEN - 36 {
        let tag = be(o);
        if tag == 0 {
            break;
        }
        let size = be(o + 4) as usize;
        let end = o + 8 + size;
        if end > LEN - 36 || tag > 255 {
            return Err(KitError::AdvOverrun { tag, offset: o });
        }
        out.insert(tag as u8, block[o + 8..end].to_vec());
        o = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, version: &str, mounted: bool, proof: &str, files: &[&str]) -> String {
        serde_json::json!({
            "image": "0.sqsh", "name": name, "version": version, "mounted": mounted,
            "proof": proof, "files": files,
        })
        .to_string()
    }

    fn marker(layers: &[String]) -> Marker {
        let line = format!(
            "{MARKER_PREFIX} {{\"cmdline\":\"\",\"extensions\":[{}],\"schematic\":\"\"}}",
            layers.join(",")
        );
        Marker::find(&line).unwrap().unwrap()
    }

    #[test]
    fn layers_must_be_mounted_and_show_their_content() {
        let proof = extension_proof("kmod-test", "1.0.0");
        let good = [
            layer("kmod-test", "1.0.0", true, &proof, &["x"]),
            layer(
                "schematic",
                "abc",
                true,
                "",
                &["usr/local/share/schematic/abc"],
            ),
            layer(
                "modules.dep",
                "6.1",
                true,
                "",
                &["usr/lib/modules/6.1/modules.dep"],
            ),
            layer("embedded-config", "v1", true, "", &["usr/local/etc/config"]),
        ];
        marker(&good).check_layers().unwrap();

        let bad = [
            layer("kmod-test", "1.0.0", false, "", &[]),
            layer("fw-test", "1.0.0", true, "", &[]),
            layer("svc-test", "1.0.0", true, &proof, &["x"]),
            layer(
                "schematic",
                "abc",
                true,
                "",
                &["usr/local/share/schematic/other"],
            ),
            layer("modules.dep", "6.1", true, "", &[]),
            layer("embedded-config", "v1", true, "", &[]),
        ];
        let e = marker(&bad).check_layers().unwrap_err().to_string();
        for name in [
            "kmod-test 1.0.0) was not mounted",
            "fw-test",
            "svc-test",
            "schematic",
            "modules.dep",
            "embedded-config",
        ] {
            assert!(e.contains(name), "{name} not reported: {e}");
        }
    }

    #[test]
    fn finds_marker_and_parses_adv() {
        let console = "boot...\r\nIF-TESTKIT-MARKER {\"cmdline\":\"console=ttyS0\",\"extensions\":[],\"schematic\":\"\",\"meta\":{\"0xa\":\"x\"},\"meta_raw\":\"\"}\r\nmore";
        let m = Marker::find(console).unwrap().unwrap();
        assert_eq!(m.cmdline, "console=ttyS0");
        assert_eq!(m.meta["0xa"], "x");
        assert_eq!(m.meta_partition().unwrap(), None);

        let mut b = vec![0u8; 256 * 1024];
        b[..4].copy_from_slice(&0x5A4B_3C2Du32.to_be_bytes());
        b[4..8].copy_from_slice(&10u32.to_be_bytes());
        b[8..12].copy_from_slice(&3u32.to_be_bytes());
        b[12..15].copy_from_slice(b"abc");
        let n = b.len();
        b[n - 4..].copy_from_slice(&0xA5B4_C3D2u32.to_be_bytes());
        let sum = sha256(&b);
        b[n - 36..n - 4].copy_from_slice(&sum);
        let m = parse_adv(&b).unwrap();
        assert_eq!(m[&10], b"abc");
        b[100] = 1;
        assert!(matches!(parse_adv(&b), Err(KitError::AdvChecksum)));
    }
}
