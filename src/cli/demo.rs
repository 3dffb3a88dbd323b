//! `serve --demo`: a first run that shows the main job. An empty factory serves nothing, so the
//! demo makes the synthetic test-kit release (Talos-shaped images built from Debian packages:
//! a Debian kernel, busybox, systemd-boot — NOT Talos) and imports it, verified with the key
//! it was signed with; ISOs, disk images and PXE scripts then build and boot to the kit's
//! marker. Everything it adds is labelled as the demo: the bundle's name (the release's
//! source in `/status`), the log at every start, and the web UI's banner.

use std::path::Path;
use std::process::{Command, Stdio};

use super::error::CliError;
use super::import::import_direct;
use crate::catalog::Selection;
use crate::config::Config;
use crate::node::{DEMO_DIR, DEMO_IMPORTED as IMPORTED, ImportFrom, ImportJob};
use crate::synth::{self, KitInputs, SynthOptions};
use crate::trust::{TrustPolicy, TrustedKeys};

/// The version the demo release carries.
pub const DEMO_VERSION: &str = "v1.11.0";
/// The demo bundle's name, which is also the release's source wherever it is shown.
const BUNDLE: &str = "DEMO-synthetic-test-kit-release-NOT-TALOS.tar";
/// The test kit's fetch script (the test suite runs the same one).
const FETCH: &str = include_str!("../../tests/kit/fetch-debian.sh");

/// Makes and imports the demo release unless the data directory has it already.
pub fn prepare(cfg: &Config) -> Result<(), CliError> {
    let dir = cfg.data_dir().join(DEMO_DIR);
    if dir.join(IMPORTED).exists() {
        warn_banner();
        return Ok(());
    }
    let kit = synth::default_kit_dir();
    if KitInputs::locate(&kit).is_err() {
        fetch_kit(&kit)?;
    }
    KitInputs::locate(&kit)?;
    eprintln!(
        "demo: building the synthetic test-kit release {DEMO_VERSION} (Debian packages, not Talos)"
    );
    let mut opts = SynthOptions::new(&dir);
    opts.versions = vec![DEMO_VERSION.to_string()];
    opts.arches = vec!["amd64".to_string()];
    opts.kit_dir = kit;
    let report = synth::synth_release(&opts)?;
    let bundle = dir.join(BUNDLE);
    std::fs::rename(&report.bundle, &bundle)
        .map_err(CliError::io("renaming the demo bundle to", &bundle))?;
    let mut keys = TrustedKeys::new();
    keys.add_file(&report.public_key)?;
    let job = ImportJob {
        from: ImportFrom::Bundle(bundle.clone()),
        versions: Vec::new(),
        arches: Vec::new(),
        extensions: Selection::All,
        policy: TrustPolicy::keys(keys),
    };
    import_direct(cfg.clone(), &job)?;
    // The import copied what it needs; the bundle is kept only as the source's name.
    std::fs::write(&bundle, b"").map_err(CliError::io("emptying", &bundle))?;
    std::fs::write(dir.join(IMPORTED), format!("{DEMO_VERSION}\n"))
        .map_err(CliError::io("writing", &dir.join(IMPORTED)))?;
    warn_banner();
    Ok(())
}

fn warn_banner() {
    tracing::warn!(
        version = DEMO_VERSION,
        "DEMO: release {DEMO_VERSION} is the synthetic test-kit release built from Debian packages (a Debian kernel and busybox), NOT Talos; its images boot to a test marker. Import real releases with `image-factory import`."
    );
}

/// Runs the test kit's fetch script (downloads five Debian packages with apt-get and unpacks
/// them into `kit`).
fn fetch_kit(kit: &Path) -> Result<(), CliError> {
    eprintln!(
        "demo: fetching the test kit's Debian inputs into {} (apt-get download)",
        kit.display()
    );
    let mut child = Command::new("bash")
        .args(["-s", "--"])
        .arg(kit)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(CliError::io(
            "running the test kit's fetch script with",
            Path::new("bash"),
        ))?;
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, FETCH.as_bytes()).map_err(CliError::io(
            "passing the fetch script to",
            Path::new("bash"),
        ))?;
    }
    let status = child.wait().map_err(CliError::io(
        "waiting for the fetch script in",
        Path::new("bash"),
    ))?;
    if !status.success() {
        return Err(CliError::Usage(format!(
            "serve --demo needs the test kit's Debian inputs in {} and could not fetch them \
             (apt-get download of linux-image-amd64, systemd-boot-efi, busybox-static, \
             grub-pc-bin, grub-efi-amd64-bin; {status}); fetch them where a Debian mirror is \
             reachable and set IF_TESTKIT_DIR",
            kit.display()
        )));
    }
    Ok(())
}
