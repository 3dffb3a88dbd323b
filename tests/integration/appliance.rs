//! The appliance's packaging: the systemd unit as the Debian package installs it verifies and
//! keeps its hardening score, and `serve` tells systemd when it is ready and when it stops.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{bin, client, spawn_bin_with};

const UNIT: &str = "image-factory.service";
/// Highest `systemd-analyze security` exposure accepted, in tenths as `--threshold` takes it
/// (0 = locked down, 100 = unprotected); the unit scores 1.6 with systemd 252
/// (docs/operator-guide.md, "Install").
const MAX_EXPOSURE: &str = "20";

fn repo(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A root holding what the unit names, where the package puts it (merged /usr as Debian 12):
/// the unit, the binary, `kill` and this host's systemd units (the targets the unit orders
/// against).
fn installed_root(dir: &Path) {
    let units = dir.join("usr/lib/systemd/system");
    std::fs::create_dir_all(dir.join("usr/bin")).expect("mkdir");
    std::fs::create_dir_all(dir.join("usr/lib/systemd")).expect("mkdir");
    std::os::unix::fs::symlink("usr/bin", dir.join("bin")).expect("bin");
    std::os::unix::fs::symlink("usr/lib", dir.join("lib")).expect("lib");
    let copied = Command::new("cp")
        .args(["-a", "/lib/systemd/system"])
        .arg(dir.join("usr/lib/systemd"))
        .status()
        .expect("cp");
    assert!(copied.success());
    std::fs::copy(repo("appliance/image-factory.service"), units.join(UNIT)).expect("unit");
    std::fs::copy(bin(), dir.join("usr/bin/image-factory")).expect("binary");
    std::fs::copy("/usr/bin/kill", dir.join("usr/bin/kill")).expect("kill");
}

#[test]
fn the_installed_unit_verifies_and_keeps_its_hardening() {
    if !testsupport::tools::have("systemd-analyze", "systemd") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    installed_root(dir.path());
    let root = format!("--root={}", dir.path().display());
    let unit = dir.path().join("usr/lib/systemd/system").join(UNIT);
    verifies_silently(&[root.as_str(), &unit.display().to_string()]);
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", &root])
        .arg(format!("--threshold={MAX_EXPOSURE}"))
        .arg(UNIT)
        .output()
        .expect("systemd-analyze security");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exposure over {MAX_EXPOSURE}:\n{said}"
    );
    assert!(said.contains("Overall exposure level"), "{said}");
    // The one capability it keeps is the one for ports below 1024.
    assert!(said.contains("✗ CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)"));
    assert!(
        said.contains("✓ CapabilityBoundingSet=~CAP_SYS_ADMIN"),
        "{said}"
    );
}

#[tokio::test]
async fn serve_tells_systemd_it_is_ready_and_stopping() {
    let dir = tempfile::tempdir().expect("tmp");
    let socket = dir.path().join("notify.sock");
    let listener = UnixDatagram::bind(&socket).expect("bind notify socket");
    listener
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let path = socket.display().to_string();
    let srv = spawn_bin_with(&dir.path().join("data"), &[("NOTIFY_SOCKET", &path)], false)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 256];
    let n = listener.recv(&mut buf).expect("a notice");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "READY=1");
    // Ready means serving.
    let health = client()
        .get(format!("http://{}/healthz", srv.http))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let mut child = srv.child;
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let n = listener.recv(&mut buf).expect("a notice");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "STOPPING=1");
    assert!(child.wait().expect("wait").success());
}

/// The OS image's own units and the package unit's drop-in (`os-image/rootfs`, laid over the
/// package's files as `os-image/build.sh` does) verify, and its boot script parses; the image
/// build checks the same in the real root, this keeps it checked in the default run.
#[test]
fn the_os_image_units_verify_over_the_installed_unit() {
    if !testsupport::tools::have("systemd-analyze", "systemd") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    installed_root(dir.path());
    let copied = Command::new("cp")
        .args(["-a", "--no-preserve=ownership"])
        .arg(repo("os-image/rootfs/."))
        .arg(dir.path())
        .status()
        .expect("cp");
    assert!(copied.success());
    let script = dir.path().join("usr/lib/image-factory/os-image-boot");
    let parsed = Command::new("sh")
        .arg("-n")
        .arg(&script)
        .status()
        .expect("sh -n");
    assert!(parsed.success(), "{} does not parse", script.display());
    let root = format!("--root={}", dir.path().display());
    verifies_silently(&[
        "--man=no",
        &root,
        "image-factory.service",
        "image-factory-prepare.service",
        "image-factory-announce.service",
    ]);
}

/// `systemd-analyze verify ARGS` succeeds and says nothing.
fn verifies_silently(args: &[&str]) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(args)
        .output()
        .expect("systemd-analyze verify");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}
