//! A damaged release input never becomes a signed image: a flipped byte in the kernel blob
//! refuses the build (503 with a text saying what to do), marks the release damaged (in
//! `/status` and `doctor`), sets the blob aside, and a re-import restores it; the scrub finds a
//! flipped byte in a GRUB module blob on its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::common::assets::{V, create_schematic, flip_byte, get, metric};
use crate::common::{TestServer, kit};
use image_factory::assets::RecordStore;
use image_factory::catalog::{Arch, ReleaseStore};
use image_factory::store::{BlobStore, MetaStore};

/// The blob path of the kit release's boot asset `name` (or, with `grub`, its first GRUB
/// module), read from the stopped data directory.
async fn release_blob(data: &Path, name: &str, grub: bool) -> (String, PathBuf) {
    let meta: Arc<dyn MetaStore> = Arc::new(crate::common::open_data_dir_after_stop(data).await);
    let blobs = BlobStore::open(&data.join("blobs"), meta).expect("blobs");
    let releases = ReleaseStore::open(&blobs).expect("releases");
    let release = releases.get(V).expect("read").expect("imported");
    let arch = &release.arches[&Arch::Amd64];
    let blob = if grub {
        arch.grub
            .values()
            .max_by_key(|b| b.size)
            .expect("a GRUB module")
    } else {
        &arch.assets[name]
    };
    let path = blobs.path(&blob.blake3).expect("blob name");
    (blob.blake3.clone(), path)
}

async fn start(data: &Path, scrub_seconds: u64) -> TestServer {
    let data = data.display().to_string();
    TestServer::start_with(move |c| {
        c.storage.data_dir = data;
        c.http.external_url = "http://factory.test:8080/".into();
        c.cache.gc_interval_seconds = 0;
        c.cache.scrub_interval_seconds = scrub_seconds;
    })
    .await
}

/// The damage mark `/status` shows for the kit release (JSON null when none).
async fn status_damage(s: &TestServer) -> serde_json::Value {
    let release = s.status().await["releases"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["version"] == V))
        .cloned()
        .expect("release listed");
    release["damaged"].clone()
}

fn quarantined(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("quarantine"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn asset_records(data: &Path) -> usize {
    let meta: Arc<dyn MetaStore> = Arc::new(crate::common::open_data_dir_after_stop(data).await);
    RecordStore::new(meta).scan_raw().expect("scan").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flipped_kernel_byte_refuses_the_build_and_marks_the_release_until_reimported() {
    let Some(k) = kit::imported(0) else { return };
    let (kernel, kernel_path) = release_blob(&k.data, "vmlinuz", false).await;
    flip_byte(&kernel_path, 4096);

    let s = start(&k.data, 0).await;
    let id = create_schematic(&s, kit::SCHEMATIC).await;
    let iso = format!("/image/{id}/{V}/metal-amd64.iso");
    let refused = get(&s, &iso, &[]).await;
    assert_eq!(refused.status, 503, "{:.300}", refused.text());
    assert!(!refused.header("retry-after").is_empty());
    let text = refused.text();
    assert!(
        text.contains("failed verification") && text.contains(&kernel),
        "the refusal names the damaged blob: {text}"
    );
    assert!(text.contains("imported again"), "says what to do: {text}");

    // Marked: /status names the blob, other builds of the release are refused by the mark
    // (the blob is set aside, nothing of it left where a build could read it).
    let damage = status_damage(&s).await;
    assert_eq!(damage["blob"], kernel.as_str(), "{damage}");
    assert!(!kernel_path.exists(), "the damaged blob is still in place");
    assert_eq!(quarantined(&k.data).len(), 1);
    let uki = get(&s, &format!("/image/{id}/{V}/metal-amd64-uki.efi"), &[]).await;
    assert_eq!(uki.status, 503, "{}", uki.text());
    assert!(uki.text().contains("is damaged"), "{}", uki.text());
    let kernel_asset = get(&s, &format!("/image/{id}/{V}/kernel-amd64"), &[]).await;
    assert_eq!(kernel_asset.status, 503, "{}", kernel_asset.text());
    assert!(
        metric(
            &s,
            "image_factory_assets_verification_failures_total",
            &["what=\"release\""]
        )
        .await
            >= 1.0
    );
    s.stop().await;
    assert_eq!(asset_records(&k.data).await, 0, "an image was signed");

    // doctor says so and fails.
    let out = std::process::Command::new(crate::common::bin())
        .args(["doctor", "--data-dir", k.data.to_str().unwrap()])
        .output()
        .expect("doctor");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{printed}");
    assert!(
        printed.contains(&format!("{V} is damaged")) && printed.contains(&kernel),
        "{printed}"
    );

    // Importing the release again writes the blob anew and clears the mark.
    kit::bin(&[
        "import",
        k.dir.path().join("kit/bundle.tar").to_str().unwrap(),
        "--data-dir",
        k.data.to_str().unwrap(),
        "--trust-key",
        k.dir.path().join("kit/signing-key.pub").to_str().unwrap(),
    ]);
    assert!(kernel_path.is_file(), "re-import did not restore the blob");
    let s = start(&k.data, 0).await;
    assert!(status_damage(&s).await.is_null());
    let built = get(&s, &iso, &[]).await;
    assert_eq!(built.status, 200, "{}", built.text());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scrub_finds_a_flipped_grub_module_byte_and_marks_the_release() {
    let Some(k) = kit::imported(0) else { return };
    let (module, module_path) = release_blob(&k.data, "", true).await;
    flip_byte(&module_path, 0);
    let s = start(&k.data, 1).await;
    let mut damage = serde_json::Value::Null;
    // Bounded: the scrub runs every second; 60 s is far beyond one pass over the kit.
    for _ in 0..120 {
        damage = status_damage(&s).await;
        if !damage.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(damage["blob"], module.as_str(), "{damage}");
    assert!(
        damage["reason"]
            .as_str()
            .is_some_and(|r| r.contains("hashes to")),
        "{damage}"
    );
    assert!(!module_path.exists());
    let id = create_schematic(&s, kit::SCHEMATIC).await;
    let disk = get(&s, &format!("/image/{id}/{V}/metal-amd64.raw.zst"), &[]).await;
    assert_eq!(disk.status, 503, "{}", disk.text());
    s.stop().await;
}
