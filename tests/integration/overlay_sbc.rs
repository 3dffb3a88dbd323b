//! SBC overlays through the real server (issue 21 point 2): the kit's `sbc-test` overlay, whose
//! installer (a busybox script in the overlay image, run in the bwrap sandbox) announces
//! kernel args and a GPT offset and writes its u-boot at a fixed LBA. Checked in the built
//! `metal-<arch>.raw.xz`: the u-boot bytes at that LBA, the GPT moved by the offset and still
//! valid (`sfdisk`), the args in the GRUB command line, the boot files in the ESP (`mtools`);
//! and in the installer image: the overlay layer and the args in its UKI. A build whose sandbox
//! cannot be set up is refused with a clear 500.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};

use image_factory::synth::{
    SBC_TEST_GPT_OFFSET, SBC_TEST_KERNEL_ARGS, SBC_TEST_UBOOT_LBA, sbc_test_uboot,
};

use crate::common::TestServer;
use crate::common::assets::{V, create_schematic, get};
use crate::common::kit;

const SCHEMATIC: &str = "overlay:
  image: siderolabs/sbc-test
  name: test
  options:
    board: rev2
customization:
  extraKernelArgs:
    - if.test=hello
";

fn run(cmd: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(cmd)
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

async fn start(k: &kit::Kit, tool_dirs: Vec<String>) -> TestServer {
    let data = k.data.display().to_string();
    TestServer::start_with(move |c| {
        c.storage.data_dir = data;
        c.http.external_url = "http://factory.test:8080/".into();
        c.cache.gc_interval_seconds = 0;
        c.cache.scrub_interval_seconds = 0;
        c.build.tool_dirs = tool_dirs;
    })
    .await
}

/// Checks a decompressed overlay disk image.
fn check_disk(disk: &Path, what: &str) {
    let bytes = std::fs::read(disk).expect("read disk");
    // u-boot where the installer put it, and the GPT moved by the announced offset
    let at = (SBC_TEST_UBOOT_LBA * 512) as usize;
    let uboot = sbc_test_uboot();
    assert!(
        bytes[at..at + uboot.len()] == uboot[..],
        "{what}: the overlay's u-boot is not at LBA {SBC_TEST_UBOOT_LBA}"
    );
    assert_eq!(&bytes[512..520], b"EFI PART", "{what}");
    let entries = le64(&bytes, 512 + 72);
    assert_eq!(
        entries,
        2 + SBC_TEST_GPT_OFFSET,
        "{what}: partition entry LBA"
    );
    assert!(
        le64(&bytes, 512 + 40) > (SBC_TEST_UBOOT_LBA * 512 + uboot.len() as u64) / 512,
        "{what}: the first usable LBA lies before the end of u-boot"
    );
    // the GPT is still valid (sfdisk checks both headers and CRCs)
    let dump = String::from_utf8(run("sfdisk", &["-d", &disk.display().to_string()])).unwrap();
    assert!(dump.contains("name=\"EFI\""), "{what}: {dump}");
    assert!(dump.contains("name=\"BOOT\""), "{what}: {dump}");
    // get-options' kernel args (and the schematic's) in the GRUB command line on BOOT
    let line = bytes
        .windows(b"sbc.test=1".len())
        .position(|w| w == b"sbc.test=1")
        .map(|p| {
            let start = bytes[..p]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |s| s + 1);
            let end = p + bytes[p..].iter().position(|&b| b == b'\n').unwrap_or(0);
            String::from_utf8_lossy(&bytes[start..end]).into_owned()
        })
        .unwrap_or_else(|| panic!("{what}: no sbc.test=1 in the image"));
    assert!(line.trim_start().starts_with("linux "), "{what}: {line}");
    for arg in SBC_TEST_KERNEL_ARGS.iter().chain(&["if.test=hello"]) {
        assert!(
            line.split_whitespace().any(|a| a == *arg),
            "{what}: {arg} not in {line}"
        );
    }
    // the files the installer dropped into <mountPrefix>/boot/EFI are at the ESP's root
    let efi_first = le64(&bytes, (entries * 512) as usize + 32);
    let image = format!("{}@@{}", disk.display(), efi_first * 512);
    let listing = String::from_utf8(run("mdir", &["-b", "-i", &image, "::/"])).unwrap();
    assert!(listing.contains("config.txt"), "{what}: {listing}");
    assert!(listing.contains("u-boot.bin"), "{what}: {listing}");
    let uboot_in_esp = run("mtype", &["-i", &image, "::/u-boot.bin"]);
    assert!(
        uboot_in_esp == uboot,
        "{what}: u-boot.bin in the ESP differs"
    );
}

async fn fetch_disk(s: &TestServer, id: &str, name: &str, dir: &Path) -> std::path::PathBuf {
    let g = get(s, &format!("/image/{id}/{V}/{name}"), &[]).await;
    assert_eq!(g.status, 200, "{name}: {}", g.text());
    let xz = dir.join(name);
    std::fs::write(&xz, &g.body).unwrap();
    let raw = dir.join(name.trim_end_matches(".xz"));
    let out = run("xz", &["-dc", &xz.display().to_string()]);
    std::fs::write(&raw, out).unwrap();
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_overlay_disk_image_carries_the_installers_uboot_args_and_boot_files() {
    if !testsupport::tools::require(
        testsupport::tools::on_path("bwrap"),
        "bwrap (Debian bubblewrap) not installed",
    ) {
        return;
    }
    let Some(k) = kit::imported_arches(V, &["amd64", "arm64"], 0) else {
        return;
    };
    let s = start(&k, Vec::new()).await;
    let id = create_schematic(&s, SCHEMATIC).await;
    let dir = tempfile::tempdir().unwrap();

    let raw = fetch_disk(&s, &id, "metal-amd64.raw.xz", dir.path()).await;
    check_disk(&raw, "metal-amd64.raw.xz");

    // arm64: the kit's release carries real arm64 inputs (GRUB's arm64-efi tree among them)
    let raw = fetch_disk(&s, &id, "metal-arm64.raw.xz", dir.path()).await;
    check_disk(&raw, "metal-arm64.raw.xz");

    // the overlay-aware installer: the overlay layer (target arch) and the args in its UKI
    let g = get(&s, &format!("/image/{id}/{V}/installer-arm64.tar"), &[]).await;
    assert_eq!(g.status, 200, "{}", g.text());
    let mut archive = tar::Archive::new(&g.body[..]);
    let mut blobs = std::collections::BTreeMap::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut b = Vec::new();
        e.read_to_end(&mut b).unwrap();
        blobs.insert(name, b);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&blobs["manifest.json"]).unwrap();
    let layers: Vec<String> = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    let layer_files = |name: &str| {
        let mut out = std::collections::BTreeMap::new();
        let gz = flate2::read::GzDecoder::new(&blobs[name][..]);
        for e in tar::Archive::new(gz).entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let mode = e.header().mode().unwrap();
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            out.insert(path, (mode, b));
        }
        out
    };
    let overlay = layer_files(layers.last().unwrap());
    let (mode, _) = &overlay["overlay/installers/default"];
    assert_eq!(mode & 0o111, 0o111, "the installer is executable");
    assert_eq!(
        overlay["overlay/artifacts/arm64/u-boot/test/u-boot.bin"].1,
        sbc_test_uboot()
    );
    let options = String::from_utf8(overlay["overlay/extra-options"].1.clone()).unwrap();
    assert_eq!(options.trim(), "board: rev2");
    let artifacts = layer_files(&layers[layers.len() - 2]);
    let uki = &artifacts["usr/install/arm64/vmlinuz.efi"].1;
    for arg in SBC_TEST_KERNEL_ARGS {
        assert!(
            uki.windows(arg.len()).any(|w| w == arg.as_bytes()),
            "{arg} not in the installer's UKI"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_overlay_build_without_a_sandbox_is_refused() {
    let Some(k) = kit::imported(0) else { return };
    // a bwrap that cannot set up namespaces (as where user namespaces are disabled)
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("bwrap");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    // the command line build says why
    let cfg = bin.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!("build:\n  toolDirs:\n    - {}\n", bin.path().display()),
    )
    .unwrap();
    let schematic = bin.path().join("schematic.yaml");
    std::fs::write(&schematic, SCHEMATIC).unwrap();
    let out = Command::new(crate::common::bin())
        .args(["build", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&k.data)
        .arg("--schematic")
        .arg(&schematic)
        .args(["--version", V, "--path", "metal-amd64.raw.xz"])
        .stdin(Stdio::null())
        .output()
        .expect("run build");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("the sandbox for its installer cannot be set up")
            && err.contains("No permissions to create new namespace"),
        "{err}"
    );
    // the server answers 500 (an appliance failure, not the request's)
    let s = start(&k, vec![bin.path().display().to_string()]).await;
    let id = create_schematic(&s, SCHEMATIC).await;
    let g = get(&s, &format!("/image/{id}/{V}/metal-amd64.raw.xz"), &[]).await;
    assert_eq!(g.status, 500, "{}", g.text());
}
