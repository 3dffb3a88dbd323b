//! The synthetic test-kit release, signed and imported into a fresh data directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use image_factory::synth::{self, Marker, SynthOptions};

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

/// The kit's Debian inputs (`tests/kit/fetch-debian.sh`), or `None` after
/// [`testsupport::tools::require`] has reported them missing.
pub fn kit_inputs() -> Option<synth::KitInputs> {
    match synth::KitInputs::locate(&synth::default_kit_dir()) {
        Ok(inputs) => Some(inputs),
        Err(e) => {
            testsupport::tools::require(false, &format!("test kit inputs missing: {e}"));
            None
        }
    }
}

/// Synthesizes (`extension_size_mb` of payload per extension) and imports the kit release
/// v1.11.0/amd64; `None` (with a notice) without kit inputs.
pub fn imported(extension_size_mb: u64) -> Option<Kit> {
    imported_version("v1.11.0", extension_size_mb)
}

/// Like [`imported`], for the kit release `version` (amd64).
#[allow(dead_code)]
pub fn imported_version(version: &str, extension_size_mb: u64) -> Option<Kit> {
    imported_arches(version, &["amd64"], extension_size_mb)
}

/// Like [`imported_version`], for a release holding `arches` (arm64 from the kit's Debian
/// arm64 inputs, `fetch-debian.sh`).
pub fn imported_arches(version: &str, arches: &[&str], extension_size_mb: u64) -> Option<Kit> {
    imported_versions(&[version], arches, extension_size_mb)
}

/// Like [`imported_arches`], for a release bundle holding several `versions`.
pub fn imported_versions(
    versions: &[&str],
    arches: &[&str],
    extension_size_mb: u64,
) -> Option<Kit> {
    let kit_dir = synth::default_kit_dir();
    kit_inputs()?;
    let dir = tempfile::tempdir().expect("tmp");
    let opts = SynthOptions {
        out: dir.path().join("kit"),
        versions: versions.iter().map(|v| v.to_string()).collect(),
        arches: arches.iter().map(|a| a.to_string()).collect(),
        extensions: 0,
        extension_size_mb,
        kit_dir,
        key: None,
        keyless: false,
        keyless_bundles: false,
    };
    synth::synth_release(&opts).expect("synth release");
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

/// The schematic ID `image-factory schematic id` prints for the YAML file at `path`.
pub fn schematic_id(path: &Path) -> String {
    let out = Command::new(super::bin())
        .args(["schematic", "id", path.to_str().unwrap()])
        .output()
        .expect("id");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `image-factory build` of `path` for `schematic` and `version` into `out` on the kit's data
/// directory (with `--rebuild`, checked to have built); returns the sha256 the CLI reports.
pub fn build(
    k: &Kit,
    version: &str,
    schematic: &Path,
    path: &str,
    out: &Path,
    rebuild: bool,
) -> String {
    let mut args = vec![
        "build",
        "--schematic",
        schematic.to_str().unwrap(),
        "--version",
        version,
        "--path",
        path,
        "--data-dir",
        k.data.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    if rebuild {
        args.push("--rebuild");
    }
    let err = bin(&args);
    if rebuild {
        assert!(err.contains("(built)"), "--rebuild did not build: {err}");
    }
    err.split("sha256 ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_default()
        .to_string()
}

/// Runs a Debian tool; panics with its output (and the package to install) on failure.
pub fn tool(package: &str, cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}: install Debian package {package}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd} {args:?} failed:\n{text}");
    text
}

/// Checks what a boot of an image built from [`SCHEMATIC`] shows (`ctx` names the boot in
/// failures): every layer mounted with its own content ([`Marker::check_layers`]), the kit's
/// three extensions plus the `schematic` and `modules.dep` layers, and what the extensions
/// bring: `fw-test`'s firmware moved into the initramfs and its Intel and AMD microcode in
/// the early cpio (the sources consumed), `kmod-test`'s `extras/dummy.ko` in the merged
/// root's `modules.dep`.
#[allow(dead_code)]
pub fn check_kit_extensions(m: &Marker, ctx: &str) {
    if let Err(e) = m.check_layers() {
        panic!("{ctx}: {e}");
    }
    let names: Vec<&str> = m.extensions.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "kmod-test",
            "fw-test",
            "svc-test",
            "schematic",
            "modules.dep"
        ],
        "{ctx}: layers"
    );
    assert_eq!(m.firmware, ["test/fw.bin"], "{ctx}: firmware");
    assert_eq!(
        m.microcode,
        ["AuthenticAMD.bin", "GenuineIntel.bin"],
        "{ctx}: microcode"
    );
    assert_eq!(m.extra_modules, ["extras/dummy.ko"], "{ctx}: extra modules");
}
