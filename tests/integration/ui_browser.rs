//! The web UI in headless Chromium (Debian's `chromium`, driven by npm's `playwright-core`
//! through `tests/ui/wizard.mjs`) against a server holding the imported test-kit release:
//! bare metal and a cloud platform walked with extensions and kernel arguments, the IDs equal
//! `image-factory schematic id` of the same YAML, every download link answers 200, the ISO the
//! browser downloads is `/image/…`'s bytes, keyboard alone reaches the result, no request
//! leaves the origin, and each step's screenshot lands in `target/ui-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use testsupport::tools;

use crate::common::{TestServer, client, kit};

/// Where `./test.sh` installs `playwright-core` (`IF_PLAYWRIGHT_DIR` overrides).
const PLAYWRIGHT_DIR: &str = "/var/cache/image-factory/node";
/// The browser the script drives (`IF_CHROMIUM` overrides).
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long the whole browser run may take (builds of ISOs and disk images included).
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

fn playwright_dir() -> PathBuf {
    std::env::var_os("IF_PLAYWRIGHT_DIR")
        .map_or_else(|| PathBuf::from(PLAYWRIGHT_DIR), PathBuf::from)
}

fn chromium() -> PathBuf {
    std::env::var_os("IF_CHROMIUM").map_or_else(|| PathBuf::from(CHROMIUM), PathBuf::from)
}

/// Whether Chromium, Node.js and playwright-core are installed (else skip, or fail under
/// `IF_REQUIRE_TOOLS=1`).
fn browser_tools() -> bool {
    tools::require(
        chromium().exists(),
        &format!(
            "{} is missing (Debian package chromium)",
            chromium().display()
        ),
    ) && tools::have("node", "nodejs")
        && tools::require(
            playwright_dir()
                .join("node_modules/playwright-core/package.json")
                .exists(),
            &format!(
                "playwright-core is not installed in {} (./test.sh installs it with npm)",
                playwright_dir().display()
            ),
        )
}

/// `target/ui-screenshots/` (under `CARGO_TARGET_DIR` when set), emptied.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    let dir = target.join("ui-screenshots");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

fn cli_id(yaml: &str) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("s.yaml");
    std::fs::write(&path, yaml).expect("write");
    kit::schematic_id(&path)
}

/// Checks one mouse-walked run: its ID, every link fetched with 200 and a body; `links` media
/// links plus one per `talosctl` binary of the release.
fn check_run(run: &Value, name: &str, yaml: &str, links: usize) -> String {
    let talosctl = run["links"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|l| {
                    l["href"]
                        .as_str()
                        .is_some_and(|h| h.starts_with("/talosctl/"))
                })
                .count()
        })
        .unwrap_or(0);
    assert!(
        talosctl > 0,
        "{name}: the kit release carries talosctl binaries"
    );
    let links = links + talosctl;
    let id = run["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(id, cli_id(yaml), "{name}: the wizard's ID");
    let fetched = run["fetched"].as_array().expect("fetched");
    assert_eq!(fetched.len(), links, "{name}: {fetched:?}");
    assert_eq!(run["links"].as_array().map(Vec::len), Some(links));
    for f in fetched {
        assert_eq!(f["status"], 200, "{name}: {f}");
        assert!(f["bytes"].as_u64().unwrap_or(0) > 0, "{name}: {f}");
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_walks_the_wizard_to_downloads() {
    if !browser_tools() {
        return;
    }
    let Some(k) = kit::imported(0) else { return };
    let data = k.data.display().to_string();
    let srv = TestServer::start_with(move |c| {
        c.storage.data_dir = data;
        // The operator page in the browser: the admin listener on loopback TCP.
        c.admin.listen_addr = "127.0.0.1:0".into();
    })
    .await;
    let base = format!("http://{}", srv.addrs.http);
    let image_factory::frontend::AdminAddr::Tcp(admin) = &srv.addrs.admin else {
        panic!("the admin listener is TCP here");
    };
    let token = std::fs::read_to_string(k.data.join("keys/admin-token")).expect("admin token");
    let out = screenshot_dir();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/wizard.mjs");
    let child = tokio::process::Command::new("node")
        .arg(&script)
        .env("IF_UI_BASE", &base)
        .env("IF_UI_OUT", &out)
        .env("IF_PLAYWRIGHT_DIR", playwright_dir())
        .env("IF_CHROMIUM", chromium())
        .env("IF_UI_ADMIN", format!("http://{admin}"))
        .env("IF_UI_ADMIN_TOKEN", token.trim())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .expect("the browser run finishes in time")
        .expect("node output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "node failed: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let r: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(r["errors"], serde_json::json!([]), "{stderr}");
    assert!(r["requests"].as_u64().unwrap_or(0) > 20, "{r}");
    assert_eq!(
        r["outside"],
        serde_json::json!([]),
        "requests left the origin"
    );

    let runs = &r["runs"];
    // Bare metal: disk image, qcow2, ISO, PXE script, kernel, cmdline, initramfs, UKI (and
    // talosctl).
    let metal = check_run(
        &runs["metal"],
        "metal",
        "customization:\n  extraKernelArgs: [console=ttyS0, if.test=hello]\n  systemExtensions:\n    officialExtensions: [siderolabs/fw-test, siderolabs/kmod-test]\n",
        8,
    );
    // Oracle Cloud: its qcow2, kernel, cmdline, initramfs, UKI.
    check_run(
        &runs["cloud"],
        "cloud",
        "customization:\n  extraKernelArgs: [console=ttyS1]\n  systemExtensions:\n    officialExtensions: [siderolabs/svc-test]\n",
        5,
    );
    assert_eq!(runs["metal-filter-visible"], 1, "the live filter");
    assert_eq!(runs["cloud-filter-visible"], 1, "the live filter");
    assert!(
        runs["cloud"]["installer"]
            .as_str()
            .unwrap_or_default()
            .contains("/oracle-installer/")
    );

    // The ISO the browser downloaded is /image/...'s.
    let iso = std::fs::read(runs["metal"]["iso"].as_str().expect("iso saved")).expect("read iso");
    let direct = client()
        .get(srv.url(&format!("/image/{metal}/v1.11.0/metal-amd64.iso")))
        .send()
        .await
        .expect("iso")
        .bytes()
        .await
        .expect("iso body");
    assert!(iso.len() > 1 << 20, "{}", iso.len());
    assert!(iso == direct, "the downloaded ISO differs from /image/'s");
    // Screenshots are the artefacts; the ISO is not kept.
    let _ = std::fs::remove_file(runs["metal"]["iso"].as_str().unwrap_or_default());

    // Keyboard only: an extension ticked with Space, kernel arguments typed.
    let kb = &runs["keyboard"];
    let ticked = kb["ticked"].as_str().expect("ticked");
    assert!(
        kb["url"]
            .as_str()
            .unwrap_or_default()
            .contains("/ui/schematics/")
    );
    assert_eq!(
        kb["id"].as_str(),
        Some(
            cli_id(&format!(
                "customization:\n  extraKernelArgs: [talos.dashboard.disabled=1]\n  systemExtensions:\n    officialExtensions: [{ticked}]\n"
            ))
            .as_str()
        )
    );

    // The operator page: 401 without the token, 200 with it (Basic), listing what was built.
    let a = &r["admin"];
    assert_eq!(a["unauthenticated"], 401, "{a}");
    assert_eq!(a["status"], 200, "{a}");
    assert!(a["builds"].as_u64().unwrap_or(0) >= 10, "{a}");
    assert_eq!(
        a["sections"],
        serde_json::json!([
            "Imported releases",
            "Cache",
            "Builds since start",
            "Cached assets, newest first",
            "Machine assignments",
            "Peers"
        ])
    );

    // A phone's viewport scrolls no sideways; the dark theme applies.
    assert!(r["phoneOverflow"].as_i64().unwrap_or(1) <= 0, "{r}");
    assert_eq!(r["darkBackground"], "rgb(13, 17, 23)");
    for name in [
        "metal-1-hardware",
        "metal-2-version",
        "metal-3-arch",
        "metal-4-extensions",
        "metal-5-customization",
        "metal-6-result",
        "cloud-3-platform",
        "cloud-6-result",
        "keyboard-result",
        "phone-dark-result",
        "admin-overview",
    ] {
        let png = out.join(format!("{name}.png"));
        let len = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "{} missing", png.display());
    }
    srv.stop().await;
}
