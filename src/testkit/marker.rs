//! The marker line the kit's init prints, and the Talos ADV decoder for its `meta_raw`.
//!
//! ```text
//! IF-TESTKIT-MARKER {"cmdline":"…","extensions":[{"name":"…","version":"…"}],"schematic":"<id or empty>",
//!   "meta":{"0xa":"…"},"meta_raw":"<base64 gzip of the META partition's first 256 KiB, or empty>",
//!   "firmware":["test/fw.bin",…],"microcode":["GenuineIntel.bin",…],"extra_modules":["extras/dummy.ko",…],
//!   "talos_version":"v1.11.0"}
//! ```
//!
//! (one line). `meta` holds the values decoded from `talos.environment=INSTALLER_META_BASE64=` on
//! the command line; `meta_raw` the META partition as found by its GPT name, decoded with
//! [`Marker::meta_partition`].

use std::collections::BTreeMap;
use std::io::Read;

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::MARKER_PREFIX;

/// One mounted extension.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MarkerExtension {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.version`.
    pub version: String,
}

/// The parsed marker line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Marker {
    /// `/proc/cmdline`.
    pub cmdline: String,
    /// Extensions from `/extensions.yaml`, in layer order (each was mounted).
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
    pub fn find(console: &str) -> Option<Result<Marker, String>> {
        let start = console.find(&format!("{MARKER_PREFIX} "))?;
        let line = console[start + MARKER_PREFIX.len() + 1..]
            .lines()
            .next()
            .unwrap_or_default()
            .trim_end_matches('\r');
        Some(serde_json::from_str(line).map_err(|e| format!("{e} in marker line {line:?}")))
    }

    /// Decodes `meta_raw`: `Ok(None)` when no META partition was found, else the tag → value map
    /// of its Talos ADV (spec talos-imager.md §4.2; empty for an all-zero partition).
    pub fn meta_partition(&self) -> Result<Option<BTreeMap<u8, Vec<u8>>>, String> {
        if self.meta_raw.is_empty() {
            return Ok(None);
        }
        let gz = base64::engine::general_purpose::STANDARD
            .decode(&self.meta_raw)
            .map_err(|e| format!("meta_raw is not base64: {e}"))?;
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut raw)
            .map_err(|e| format!("meta_raw is not gzip: {e}"))?;
        if raw.iter().all(|b| *b == 0) {
            return Ok(Some(BTreeMap::new()));
        }
        parse_adv(&raw).map(Some)
    }
}

/// Parses one Talos ADV copy (256 KiB): magics, SHA-256 checksum, then tag/size/value entries
/// (big-endian u32s) up to tag 0.
pub fn parse_adv(block: &[u8]) -> Result<BTreeMap<u8, Vec<u8>>, String> {
    const LEN: usize = 256 * 1024;
    if block.len() < LEN {
        return Err(format!(
            "ADV block is {} bytes, expected {LEN}",
            block.len()
        ));
    }
    let block = &block[..LEN];
    let be = |o: usize| u32::from_be_bytes(block[o..o + 4].try_into().unwrap());
    if be(0) != 0x5A4B_3C2D || be(LEN - 4) != 0xA5B4_C3D2 {
        return Err("ADV magic mismatch".into());
    }
    let mut copy = block.to_vec();
    copy[LEN - 36..LEN - 4].fill(0);
    if Sha256::digest(&copy).as_slice() != &block[LEN - 36..LEN - 4] {
        return Err("ADV checksum mismatch".into());
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
            return Err(format!("ADV entry {tag} at {o} overruns the data area"));
        }
        out.insert(tag as u8, block[o + 8..end].to_vec());
        o = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let sum = Sha256::digest(&b);
        b[n - 36..n - 4].copy_from_slice(&sum);
        let m = parse_adv(&b).unwrap();
        assert_eq!(m[&10], b"abc");
        b[100] = 1;
        assert!(parse_adv(&b).is_err());
    }
}
