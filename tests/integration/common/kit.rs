//! The synthetic test-kit release, signed and imported into a fresh data directory.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use image_factory::testkit::{self, SynthOptions};

/// A schematic with args, META and the kit's three extensions.
pub const SCHEMATIC: &str = "customization:
  extraKernelArgs:
    - if.test=hello
  meta:
    - key: 0xa
      value: '{\"addr\":\"1.2.3.4\"}'
  systemExtensions:
    officialExtensions:
      - siderolabs/kmod-test
      - siderolabs/fw-test
      - siderolabs/svc-test
";

/// An imported kit release.
pub struct Kit {
    /// Keeps the temp directory alive.
    pub dir: tempfile::TempDir,
    /// Data directory holding the imported release.
    pub data: PathBuf,
    /// `SCHEMATIC` written to a file.
    pub schematic: PathBuf,
}

/// Runs the real binary; panics with its stderr on failure; returns stderr.
pub fn bin(args: &[&str]) -> String {
    let out = Command::new(super::bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?} failed: {err}");
    err
}

/// Synthesizes (`extension_size_mb` of payload per extension) and imports the kit release
/// v1.11.0/amd64; `None` (with a notice) without kit inputs.
pub fn imported(extension_size_mb: u64) -> Option<Kit> {
    imported_version("v1.11.0", extension_size_mb)
}

/// Like [`imported`], for the kit release `version` (amd64).
#[allow(dead_code)]
pub fn imported_version(version: &str, extension_size_mb: u64) -> Option<Kit> {
    let kit_dir = testkit::default_kit_dir();
    if testkit::KitInputs::locate(&kit_dir).is_err() {
        println!("SKIPPED: test kit inputs missing; run tests/kit/fetch-debian.sh");
        return None;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let opts = SynthOptions {
        out: dir.path().join("kit"),
        versions: vec![version.into()],
        arches: vec!["amd64".into()],
        extensions: 0,
        extension_size_mb,
        kit_dir,
        key: None,
    };
    testkit::synth_release(&opts).expect("synth release");
    let data = dir.path().join("data");
    bin(&[
        "import",
        dir.path().join("kit/bundle.tar").to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--trust-key",
        dir.path().join("kit/signing-key.pub").to_str().unwrap(),
    ]);
    let schematic = dir.path().join("schematic.yaml");
    std::fs::write(&schematic, SCHEMATIC).expect("write schematic");
    Some(Kit {
        data,
        schematic,
        dir,
    })
}
