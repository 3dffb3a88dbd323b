//! Compressed and cloud disk images by path through the real server (issue 6 §5):
//! `metal-amd64.raw.zst`, `aws-amd64.raw.xz`, `gcp-amd64.raw.tar.gz`, `azure-amd64.vhd.xz`
//! and `vmware-amd64.ova`, each checked with the independent tool for its format (zstd, xz,
//! GNU tar) and for the disk inside (protective MBR, GPT header, platform disk size).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::assets::{V, create_schematic, get, start};
use crate::common::kit;

const MIB: u64 = 1 << 20;
/// Disk size of cloud platforms for v1.11, dual-boot (imager spec §1.3: 8192 MiB, + 1000 MiB
/// for the 2000 MiB boot partition of ≥ 1.11, + 1 MiB BIOS + 2000 MiB second boot partition).
const CLOUD_DISK: u64 = 11193 * MIB;
/// Disk size of `metal` for v1.11, dual-boot: 1246 MiB + the same 3001 MiB.
const METAL_DISK: u64 = 4247 * MIB;

/// Runs `sh -c script` and returns stdout; fails the test on a non-zero exit.
fn sh(script: &str) -> Vec<u8> {
    let out = Command::new("sh")
        .args(["-c", script])
        .stderr(Stdio::piped())
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// A GPT disk starts with a protective MBR and the primary header.
fn assert_gpt_head(head: &[u8], what: &str) {
    assert!(head.len() >= 1024, "{what}: only {} bytes", head.len());
    assert_eq!(&head[510..512], &[0x55, 0xaa], "{what}: no MBR signature");
    assert_eq!(&head[512..520], b"EFI PART", "{what}: no GPT header");
}

/// Uncompressed size an xz file's index declares (`xz --robot -l`, reads the index only).
fn xz_size(file: &Path) -> u64 {
    let out = String::from_utf8(sh(&format!("xz --robot -l {}", p(file)))).expect("utf8");
    let totals = out
        .lines()
        .find(|l| l.starts_with("totals\t"))
        .expect("totals line");
    totals
        .split('\t')
        .nth(4)
        .expect("size")
        .parse()
        .expect("number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cloud_and_compressed_disk_images_download_by_path() {
    let Some(k) = kit::imported(0) else { return };
    let s = start(&k).await;
    let id = create_schematic(&s, kit::SCHEMATIC).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let fetch = |name: &'static str, content_type: &'static str| {
        let s = &s;
        let id = &id;
        let dir = dir.path().to_path_buf();
        async move {
            let g = get(s, &format!("/image/{id}/{V}/{name}"), &[]).await;
            assert_eq!(g.status, 200, "{name}: {}", g.text());
            assert_eq!(g.header("content-type"), content_type, "{name}");
            assert_eq!(
                g.header("content-length"),
                g.body.len().to_string(),
                "{name}"
            );
            let file = dir.join(name);
            std::fs::write(&file, &g.body).expect("write");
            file
        }
    };

    // metal raw.zst: a zstd frame that holds the whole metal disk.
    let zst = fetch("metal-amd64.raw.zst", "application/octet-stream").await;
    sh(&format!("zstd -q -t {}", p(&zst)));
    let size: u64 = String::from_utf8(sh(&format!("zstd -dc {} | wc -c", p(&zst))))
        .expect("utf8")
        .trim()
        .parse()
        .expect("number");
    assert_eq!(size, METAL_DISK);
    assert_gpt_head(
        &sh(&format!("zstd -dc {} | head -c 1024", p(&zst))),
        "raw.zst",
    );

    // aws raw.xz: the index says a full cloud disk; the disk starts with a GPT.
    let aws = fetch("aws-amd64.raw.xz", "application/x-xz").await;
    assert_eq!(xz_size(&aws), CLOUD_DISK);
    assert_gpt_head(
        &sh(&format!("xz -dc {} | head -c 1024", p(&aws))),
        "aws raw.xz",
    );

    // azure vhd.xz: a fixed VHD, the raw disk plus a 512-byte `conectix` footer. Decompressing
    // the whole stream checks every block's CRC64 on the way to the footer.
    let azure = fetch("azure-amd64.vhd.xz", "application/x-xz").await;
    assert_eq!(xz_size(&azure), CLOUD_DISK + 512);
    let footer = sh(&format!("xz -dc {} | tail -c 512", p(&azure)));
    assert_eq!(&footer[..8], b"conectix", "no VHD footer");
    assert_gpt_head(
        &sh(&format!("xz -dc {} | head -c 1024", p(&azure))),
        "azure vhd.xz",
    );

    // gcp raw.tar.gz: one sparse member `disk.raw` of the full size.
    let gcp = fetch("gcp-amd64.raw.tar.gz", "application/gzip").await;
    let listing = String::from_utf8(sh(&format!("tar -tvzf {}", p(&gcp)))).expect("utf8");
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 1, "{listing}");
    assert!(lines[0].ends_with(" disk.raw"), "{listing}");
    assert!(
        lines[0].contains(&format!(" {CLOUD_DISK} ")),
        "size not {CLOUD_DISK}: {listing}"
    );
    assert_gpt_head(
        &sh(&format!("tar -xzOf {} disk.raw | head -c 1024", p(&gcp))),
        "gcp disk.raw",
    );

    // vmware ova: a tar of the OVF descriptor, the manifest and a stream-optimised VMDK whose
    // virtual size is the cloud disk.
    let ova = fetch("vmware-amd64.ova", "application/octet-stream").await;
    let listing = String::from_utf8(sh(&format!("tar -tf {}", p(&ova)))).expect("utf8");
    let names: Vec<&str> = listing.lines().collect();
    assert!(names[0].ends_with(".ovf"), "OVF must come first: {listing}");
    assert!(names.iter().any(|n| n.ends_with(".mf")), "{listing}");
    let vmdk = names
        .iter()
        .find(|n| n.ends_with(".vmdk"))
        .unwrap_or_else(|| panic!("no vmdk in {listing}"));
    sh(&format!(
        "cd {} && tar -xf {} {vmdk}",
        p(dir.path()),
        p(&ova)
    ));
    let info = String::from_utf8(sh(&format!(
        "qemu-img info --output=json {}",
        p(&dir.path().join(vmdk))
    )))
    .expect("utf8");
    let info: serde_json::Value = serde_json::from_str(&info).expect("json");
    assert_eq!(info["format"], "vmdk");
    assert_eq!(info["virtual-size"].as_u64(), Some(CLOUD_DISK));
    s.stop().await;
}
