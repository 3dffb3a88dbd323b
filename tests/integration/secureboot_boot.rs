//! Secure Boot in QEMU: OVMF's Secure Boot build (`OVMF_CODE_4M.secboot.fd`) starts with an
//! empty variable store (setup mode) and boots our `metal-amd64-secureboot.iso`, whose signed
//! systemd-boot enrols the site's `PK.auth`/`KEK.auth`/`db.auth` (`secure-boot-enroll force`,
//! from the schematic) and resets. The next boot of the ISO runs with Secure Boot enforcing:
//! firmware checks the ISO's systemd-boot and UKI against the enrolled `db`, the kit's kernel
//! reports Secure Boot on and its init prints the marker; so does the `-secureboot` disk image
//! on the enrolled machine. A UKI signed by another key is refused by the firmware.

use std::path::{Path, PathBuf};
use std::time::Duration;

use image_factory::synth::Marker;
use image_factory::trust::secureboot::authenticode;
use image_factory::trust::secureboot::enroll::enrolment_files;
use testsupport::qemu::Boot;
use testsupport::tools;

use crate::common::assets::{V, create_schematic, get};
use crate::common::kit;
use crate::secureboot_http::start_sb;
use crate::secureboot_sign::{SYSTEMD_BOOT, keys};

const CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
const VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const SCHEMATIC: &str = "customization:\n  extraKernelArgs:\n    - console=ttyS0\n  secureboot:\n    enrollKeys: force\n";

/// A QEMU run of OVMF's Secure Boot build (SMM) with `vars`, booting the FAT directory `esp`.
fn secboot(esp: &Path, vars: &Path) -> Boot {
    let mut boot = secboot_iso(esp, vars);
    let n = boot.args.len();
    boot.args[n - 2] = "-drive".into();
    boot.args[n - 1] = format!(
        "if=virtio,format=raw,readonly=on,file=fat:{}",
        esp.display()
    );
    boot
}

/// A QEMU run of OVMF's Secure Boot build (SMM) with `vars`, booting the ISO `iso` (CD-ROM).
fn secboot_iso(iso: &Path, vars: &Path) -> Boot {
    Boot {
        kernel: None,
        initrd: None,
        append: None,
        args: vec![
            // No NIC: nothing to network-boot before the disk on a later run.
            "-nic".into(),
            "none".into(),
            "-machine".into(),
            "q35,smm=on".into(),
            "-global".into(),
            "driver=cfi.pflash01,property=secure,value=on".into(),
            "-drive".into(),
            format!("if=pflash,format=raw,unit=0,readonly=on,file={CODE}"),
            "-drive".into(),
            format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
            "-cdrom".into(),
            iso.display().to_string(),
        ],
        memory_mb: 1024,
        timeout: Duration::from_secs(300),
        wrapper: Vec::new(),
    }
}

/// An ESP: our signed systemd-boot, the enrolment files, `uki` as the only boot entry.
fn esp(dir: &Path, signed_boot: &Path, auth: &[(String, Vec<u8>)], uki: &Path) -> PathBuf {
    let esp = dir.join("esp");
    std::fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
    std::fs::create_dir_all(esp.join("EFI/Linux")).unwrap();
    std::fs::create_dir_all(esp.join("loader/keys/auto")).unwrap();
    std::fs::copy(signed_boot, esp.join("EFI/BOOT/BOOTX64.EFI")).unwrap();
    std::fs::copy(uki, esp.join("EFI/Linux/talos.efi")).unwrap();
    for (name, bytes) in auth {
        std::fs::write(esp.join("loader/keys/auto").join(name), bytes).unwrap();
    }
    // Debian's systemd-boot 252 knows `force` (not `if-safe`).
    std::fs::write(
        esp.join("loader/loader.conf"),
        "timeout 0\nsecure-boot-enroll force\n",
    )
    .unwrap();
    esp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secure_boot_enrols_then_enforces() {
    if !tools::qemu()
        || !tools::require(
            Path::new(CODE).exists(),
            "OVMF_CODE_4M.secboot.fd (Debian package ovmf)",
        )
        || !tools::require(Path::new(SYSTEMD_BOOT).exists(), "systemd-boot-efi")
    {
        return;
    }
    let Some(k) = kit::imported(0) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (keys_a, _) = keys(&tmp.path().join("a"));
    keys(&tmp.path().join("b"));

    // The Secure Boot ISO from the appliance, and a UKI from an appliance with other keys.
    let mut got = Vec::new();
    for (name, path) in [
        ("a", "metal-amd64-secureboot.iso"),
        ("a", "metal-amd64-secureboot.raw"),
        ("b", "metal-amd64-secureboot-uki.efi"),
    ] {
        let s = start_sb(&k, &tmp.path().join(name)).await;
        let id = create_schematic(&s, SCHEMATIC).await;
        let g = get(&s, &format!("/image/{id}/{V}/{path}"), &[]).await;
        assert_eq!(g.status, 200, "{path}");
        let file = tmp.path().join(path);
        std::fs::write(&file, &g.body).unwrap();
        got.push(file);
        s.stop().await;
    }
    let (iso, disk, foreign_uki) = (got[0].clone(), got[1].clone(), got[2].clone());

    // 1. Setup mode: the ISO's systemd-boot enrols the keys and resets (QEMU exits:
    // -no-reboot).
    let vars = tmp.path().join("vars.fd");
    std::fs::copy(VARS, &vars).unwrap();
    let run = tokio::task::spawn_blocking({
        let (iso, vars) = (iso.clone(), vars.clone());
        move || secboot_iso(&iso, &vars).run().unwrap()
    })
    .await
    .unwrap();
    assert!(
        !run.timed_out,
        "enrolment did not reset; console:\n{}",
        run.console
    );
    assert!(
        run.console.contains("Enrolling secure boot keys"),
        "systemd-boot did not enrol; console:\n{}",
        run.console
    );

    // 2. Secure Boot enforcing: the ISO's systemd-boot and UKI pass the firmware's db check.
    let run = tokio::task::spawn_blocking({
        let (iso, vars) = (iso.clone(), vars.clone());
        move || secboot_iso(&iso, &vars).run().unwrap()
    })
    .await
    .unwrap();
    let marker = Marker::find(&run.console)
        .unwrap_or_else(|| {
            panic!(
                "no marker (timed out: {}); console:\n{}",
                run.timed_out, run.console
            )
        })
        .unwrap_or_else(|e| panic!("{e}\nconsole:\n{}", run.console));
    assert_eq!(marker.talos_version, V);
    assert!(
        run.console.contains("Secure boot enabled"),
        "the kernel does not report Secure Boot on; console:\n{}",
        run.console
    );

    // 3. The Secure Boot disk image on the same (enrolled) machine: enforcing boot.
    let mut boot = secboot_iso(&iso, &vars);
    let n = boot.args.len();
    boot.args[n - 2] = "-drive".into();
    boot.args[n - 1] = format!("if=virtio,format=raw,snapshot=on,file={}", disk.display());
    let run = tokio::task::spawn_blocking(move || boot.run().unwrap())
        .await
        .unwrap();
    let marker = Marker::find(&run.console)
        .unwrap_or_else(|| {
            panic!(
                "disk: no marker (timed out: {}); console:\n{}",
                run.timed_out, run.console
            )
        })
        .unwrap_or_else(|e| panic!("{e}\nconsole:\n{}", run.console));
    assert_eq!(marker.talos_version, V);
    assert!(
        run.console.contains("Secure boot enabled"),
        "disk: the kernel does not report Secure Boot on; console:\n{}",
        run.console
    );

    // 4. On the same machine, our signed systemd-boot from a plain ESP.
    let signed_boot = tmp.path().join("systemd-bootx64.efi");
    std::fs::copy(SYSTEMD_BOOT, &signed_boot).unwrap();
    authenticode::sign_file(&signed_boot, &keys_a).unwrap();
    let auth: Vec<(String, Vec<u8>)> = enrolment_files(&keys_a, image_factory::clock::now_secs())
        .unwrap()
        .into_iter()
        .map(|f| (f.name.to_string(), f.bytes))
        .collect();
    let ukis = [foreign_uki];
    // A UKI signed by another key is refused by the firmware: no kernel starts.
    let bad = esp(&tmp.path().join("bad"), &signed_boot, &auth, &ukis[0]);
    let mut boot = secboot(&bad, &vars);
    boot.timeout = Duration::from_secs(90);
    let run = tokio::task::spawn_blocking(move || boot.run().unwrap())
        .await
        .unwrap();
    assert!(
        Marker::find(&run.console).is_none() && !run.console.contains("Linux version"),
        "a UKI signed by another key booted; console:\n{}",
        run.console
    );
    assert!(
        run.console.contains("talos.efi: Access Denied"),
        "systemd-boot does not report the firmware's refusal; console:\n{}",
        run.console
    );
}
