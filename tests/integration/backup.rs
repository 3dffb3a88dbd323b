//! The backup procedure of the operator guide, as an operator runs it: stop the appliance,
//! archive its data directory with tar, restore the archive elsewhere, start there. The
//! restored appliance has the same identity, schematics, releases and built assets.

use std::process::Command;

use crate::common::assets::{V, create_schematic, get, metric, start_in};
use crate::common::{bin, kit};

#[tokio::test]
async fn a_tar_of_the_stopped_data_directory_restores_everything() {
    let Some(k) = kit::imported(0) else { return };
    let s = start_in(&k.data, 0).await;
    let id = create_schematic(&s, kit::SCHEMATIC).await;
    let kernel = get(&s, &format!("/image/{id}/{V}/cmdline-metal-amd64"), &[]).await;
    assert_eq!(kernel.status, 200);
    let key = get(&s, "/oci/cosign/signing-key.pub", &[]).await.text();
    let versions = get(&s, "/versions", &[]).await.text();
    s.stop().await;

    // Backup: tar of the stopped data directory (operator guide §2, "Backup and restore").
    let work = tempfile::tempdir().expect("tmp");
    let archive = work.path().join("backup.tar");
    let made = Command::new("tar")
        .arg("-C")
        .arg(&k.data)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .expect("tar");
    assert!(made.success());
    // Restore onto another machine's (empty) data directory.
    let restored = work.path().join("restored");
    std::fs::create_dir(&restored).expect("mkdir");
    let unpacked = Command::new("tar")
        .arg("-C")
        .arg(&restored)
        .arg("-xpf")
        .arg(&archive)
        .status()
        .expect("tar x");
    assert!(unpacked.success());
    let doctor = Command::new(bin())
        .args(["doctor", "--data-dir"])
        .arg(&restored)
        .env_remove("RUST_LOG")
        .output()
        .expect("doctor");
    assert!(
        doctor.status.success(),
        "{}{}",
        String::from_utf8_lossy(&doctor.stdout),
        String::from_utf8_lossy(&doctor.stderr)
    );

    let s = start_in(&restored, 0).await;
    assert_eq!(
        get(&s, "/oci/cosign/signing-key.pub", &[]).await.text(),
        key
    );
    assert_eq!(get(&s, "/versions", &[]).await.text(), versions);
    let schematic = get(&s, &format!("/schematics/{id}"), &[]).await;
    assert_eq!(schematic.status, 200);
    let again = get(&s, &format!("/image/{id}/{V}/cmdline-metal-amd64"), &[]).await;
    assert_eq!(again.body, kernel.body);
    // Served from the restored cache, not built again.
    assert_eq!(
        metric(&s, "image_factory_assets_built_total", &[]).await,
        0.0
    );
    s.stop().await;
}
