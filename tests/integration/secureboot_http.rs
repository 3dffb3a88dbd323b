//! Secure Boot over HTTP: `/secureboot/signing-cert.pem`, the signed
//! `<platform>-<arch>-secureboot-uki.efi` (Authenticode checked by `sbverify` and
//! `osslsigncode`, `.pcrsig` checked against `systemd-measure` and `openssl`), the Secure Boot
//! PXE script, key rotation (cache keys cover the certificate), and the answers with Secure
//! Boot off or for outputs not built yet.

use std::path::Path;
use std::process::Command;

use image_factory::imager::pe::PeHeaders;
use image_factory::trust::secureboot::pcr::{Bank, SectionDigest, predict};
use sha2::Digest as _;
use testsupport::tools;

use crate::common::TestServer;
use crate::common::assets::{V, create_schematic, flip_byte, get};
use crate::common::kit::{self, Kit};
use crate::secureboot_sign::{assert_refused, assert_verifies, keys, verifiers};

const MEASURE: &str = "/usr/lib/systemd/systemd-measure";
const UKI: &str = "metal-amd64-secureboot-uki.efi";

pub async fn start_sb(k: &Kit, keys_dir: &Path) -> TestServer {
    let data = k.data.display().to_string();
    let dir = keys_dir.to_path_buf();
    TestServer::start_with(move |c| {
        c.storage.data_dir = data;
        c.http.external_url = "http://factory.test:8080/".into();
        c.cache.gc_interval_seconds = 0;
        c.cache.scrub_interval_seconds = 0;
        c.secure_boot.enabled = true;
        c.secure_boot.file.signing_key_path = dir.join("uki-signing-key.pem").display().to_string();
        c.secure_boot.file.signing_cert_path =
            dir.join("uki-signing-cert.pem").display().to_string();
        c.secure_boot.file.pcr_key_path = dir.join("pcr-signing-key.pem").display().to_string();
    })
    .await
}

/// Every section of a PE file: (name, in-memory bytes), in file order.
fn sections(file: &[u8]) -> Vec<(String, Vec<u8>)> {
    let h = PeHeaders::parse(file).expect("PE");
    h.sections
        .iter()
        .map(|s| (s.name_str(), h.section_bytes(file, s).unwrap().to_vec()))
        .collect()
}

/// PCR 11 after `enter-machined`, computed here from the spec's rules with the `sha2` crate
/// (independent of the appliance's code): sections in systemd-stub's measuring order.
fn pcr11_sha256(sections: &[(String, Vec<u8>)]) -> Vec<u8> {
    const ORDER: [&str; 13] = [
        ".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".splash", ".dtb", ".uname", ".sbat",
        ".pcrpkey", ".profile", ".dtbauto", ".hwids",
    ];
    let h = |parts: &[&[u8]]| {
        let mut d = sha2::Sha256::new();
        for p in parts {
            d.update(p);
        }
        d.finalize().to_vec()
    };
    let mut pcr = vec![0u8; 32];
    let mut extend = |m: &[u8]| pcr = h(&[&pcr, &h(&[m])]);
    for name in ORDER {
        if let Some((_, data)) = sections.iter().find(|(n, _)| n == name) {
            extend(&[name.as_bytes(), &[0]].concat());
            extend(data);
        }
    }
    for phase in ["enter-initrd", "leave-initrd", "enter-machined"] {
        extend(phase.as_bytes());
    }
    pcr
}

/// The expected SHA-256 `pol` of PCR 11 `pcr` (TPM2_PolicyPCR from a zero policy).
fn policy_sha256(pcr: &[u8]) -> String {
    let mut policy = vec![0u8; 32];
    policy.extend_from_slice(&[0, 0, 1, 0x7F, 0, 0, 0, 1, 0, 0x0B, 3, 0, 8, 0]);
    policy.extend_from_slice(&sha2::Sha256::digest(pcr));
    hex::encode(sha2::Sha256::digest(&policy))
}

/// A multi-profile UKI (the ISO's: `main`, then `reset` with its own `.cmdline`): each
/// profile's `.pcrsig` signs PCR 11 over the base sections, that profile's `.profile`, and its
/// own `.cmdline` in place of the base one — recomputed here from the file's sections.
fn check_profile_pcrsigs(uki: &[u8]) {
    let secs = sections(uki);
    let first = secs
        .iter()
        .position(|(n, _)| n == ".profile")
        .expect("profiles");
    let base = &secs[..first];
    let mut profiles: Vec<Vec<(String, Vec<u8>)>> = Vec::new();
    for s in &secs[first..] {
        if s.0 == ".profile" {
            profiles.push(Vec::new());
        }
        profiles.last_mut().unwrap().push(s.clone());
    }
    assert_eq!(profiles.len(), 2, "main and reset");
    for p in &profiles {
        let own_cmdline = p.iter().find(|(n, _)| n == ".cmdline");
        let mut set: Vec<(String, Vec<u8>)> = base
            .iter()
            .filter(|(n, _)| !(own_cmdline.is_some() && n == ".cmdline"))
            .cloned()
            .collect();
        set.extend(p.iter().filter(|(n, _)| n != ".pcrsig").cloned());
        let sig = &p
            .iter()
            .find(|(n, _)| n == ".pcrsig")
            .expect("a .pcrsig per profile")
            .1;
        let json: serde_json::Value = serde_json::from_slice(sig).unwrap();
        let profile = String::from_utf8_lossy(&p[0].1).into_owned();
        assert_eq!(
            json["sha256"][0]["pol"],
            policy_sha256(&pcr11_sha256(&set)),
            "profile {profile}"
        );
    }
    // The two profiles sign different values (reset's command line differs).
    let pol = |i: usize| {
        let sig = &profiles[i].iter().find(|(n, _)| n == ".pcrsig").unwrap().1;
        serde_json::from_slice::<serde_json::Value>(sig).unwrap()["sha256"][0]["pol"].clone()
    };
    assert_ne!(pol(0), pol(1));
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_uki_cert_and_pxe_over_http() {
    if !verifiers()
        || !tools::require(
            Path::new(MEASURE).exists(),
            "systemd-measure (Debian package systemd)",
        )
    {
        return;
    }
    let Some(k) = kit::imported(0) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (key_set, cert) = keys(&tmp.path().join("a"));
    let s = start_sb(&k, &tmp.path().join("a")).await;
    let id = create_schematic(&s, kit::SCHEMATIC).await;

    let c = get(&s, "/secureboot/signing-cert.pem", &[]).await;
    assert_eq!(c.status, 200);
    assert_eq!(c.header("content-type"), "application/x-pem-file");
    assert_eq!(c.text(), key_set.certificate_pem());
    assert_eq!(c.text(), std::fs::read_to_string(&cert).unwrap());

    let g = get(&s, &format!("/image/{id}/{V}/{UKI}"), &[]).await;
    assert_eq!(g.status, 200, "{}", g.text());
    assert_eq!(g.header("content-type"), "application/efi");
    let uki = tmp.path().join(UKI);
    std::fs::write(&uki, &g.body).unwrap();
    assert_verifies(&uki, &cert);
    let tampered = tmp.path().join("tampered.efi");
    std::fs::copy(&uki, &tampered).unwrap();
    // Inside .linux, far from the headers.
    let secs = sections(&g.body);
    let h = PeHeaders::parse(&g.body).unwrap();
    let linux = h.section(".linux").unwrap();
    flip_byte(&tampered, u64::from(linux.pointer_to_raw_data) + 4096);
    assert_refused(&tampered, &cert);

    // Sections: the PCR public key before .linux, one .pcrsig after the main profile.
    let names: Vec<&str> = secs.iter().map(|(n, _)| n.as_str()).collect();
    let tail: Vec<&str> = names
        .iter()
        .skip_while(|n| **n != ".osrel")
        .copied()
        .collect();
    assert_eq!(
        tail,
        [
            ".osrel", ".cmdline", ".uname", ".pcrpkey", ".linux", ".initrd", ".profile", ".pcrsig"
        ]
    );
    let section = |name: &str| &secs.iter().find(|(n, _)| n == name).unwrap().1;
    assert_eq!(section(".pcrpkey"), key_set.pcr_public_pem().as_bytes());
    let cmdline = String::from_utf8(section(".cmdline").clone()).unwrap();
    assert!(cmdline.contains("lockdown=confidentiality"), "{cmdline}");

    // systemd-measure agrees with the appliance's PCR rules over the sections it knows
    // (Debian's 252 predates .uname, .sbat and .profile).
    let dir = tmp.path().join("sections");
    std::fs::create_dir_all(&dir).unwrap();
    let mut args = vec![
        "calculate".to_string(),
        "--phase=enter-initrd:leave-initrd:enter-machined".into(),
    ];
    let mut known = Vec::new();
    for name in [".linux", ".osrel", ".cmdline", ".initrd", ".pcrpkey"] {
        let f = dir.join(&name[1..]);
        std::fs::write(&f, section(name)).unwrap();
        args.push(format!("--{}={}", &name[1..], f.display()));
        known.push(SectionDigest::of_bytes(name, section(name)));
    }
    for bank in Bank::ALL {
        let mut a = args.clone();
        a.push(format!("--bank={}", bank.name()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = run(MEASURE, &a);
        let expected = format!("11:{}={}", bank.name(), hex::encode(predict(bank, &known)));
        assert_eq!(out.trim(), expected, "systemd-measure, {}", bank.name());
    }

    // The signed policy is over PCR 11 of every measured section of the main profile, and
    // openssl verifies each bank's signature with the .pcrpkey key.
    let pcrsig: serde_json::Value = serde_json::from_slice(section(".pcrsig")).unwrap();
    let pcr = pcr11_sha256(&secs);
    let mut policy = vec![0u8; 32];
    policy.extend_from_slice(&[0, 0, 1, 0x7F, 0, 0, 0, 1, 0, 0x0B, 3, 0, 8, 0]);
    policy.extend_from_slice(&sha2::Sha256::digest(&pcr));
    let pol = hex::encode(sha2::Sha256::digest(&policy));
    let e = &pcrsig["sha256"][0];
    assert_eq!(e["pcrs"], serde_json::json!([11]));
    assert_eq!(e["pol"], pol, "pcrsig signs the PCR 11 value of this UKI");
    let pkey = dir.join("pcrpkey.pem");
    std::fs::write(&pkey, section(".pcrpkey")).unwrap();
    for (bank, dgst) in [
        ("sha256", "-sha256"),
        ("sha384", "-sha384"),
        ("sha512", "-sha512"),
    ] {
        let e = &pcrsig[bank][0];
        let pol_bin = dir.join(format!("pol-{bank}"));
        let sig_bin = dir.join(format!("sig-{bank}"));
        std::fs::write(&pol_bin, hex::decode(e["pol"].as_str().unwrap()).unwrap()).unwrap();
        use base64::Engine as _;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(e["sig"].as_str().unwrap())
            .unwrap();
        std::fs::write(&sig_bin, sig).unwrap();
        let out = run(
            "openssl",
            &[
                "dgst",
                dgst,
                "-verify",
                pkey.to_str().unwrap(),
                "-signature",
                sig_bin.to_str().unwrap(),
                pol_bin.to_str().unwrap(),
            ],
        );
        assert!(out.contains("Verified OK"), "{bank}: {out}");
        // pkfp: SHA-256 of the PCR key's PKCS#1 DER.
        assert_eq!(
            e["pkfp"],
            hex::encode(sha2::Sha256::digest(key_set.pcr_public_pkcs1()))
        );
    }

    // PXE chains the signed UKI.
    let pxe = get(&s, &format!("/pxe/{id}/{V}/metal-amd64-secureboot"), &[]).await;
    assert_eq!(pxe.status, 200, "{}", pxe.text());
    assert!(
        pxe.text().contains(&format!("/image/{id}/{V}/{UKI} ")),
        "{}",
        pxe.text()
    );

    // The Secure Boot disk image: signed systemd-boot and UKI on the ESP, enrolment files.
    check_disk(&s, &id, &tmp.path().join("disk"), &cert, &key_set).await;
    // The Secure Boot installer: both signed in the artifacts layer.
    check_installer(&s, &id, &tmp.path().join("installer"), &cert).await;
    // The registry serves the same Secure Boot installer.
    let m = get(
        &s,
        &format!("/v2/installer-secureboot/{id}/manifests/{V}"),
        &[(
            "accept",
            "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
        )],
    )
    .await;
    assert_eq!(m.status, 200, "{}", m.text());

    // The Secure Boot ISO: signed systemd-boot and UKI, the enrolment files, the cert.
    let iso = get(
        &s,
        &format!("/image/{id}/{V}/metal-amd64-secureboot.iso"),
        &[],
    )
    .await;
    assert_eq!(iso.status, 200, "{}", iso.text());
    let iso_path = tmp.path().join("sb.iso");
    std::fs::write(&iso_path, &iso.body).unwrap();
    let x = tmp.path().join("iso");
    for f in [
        "EFI/BOOT/BOOTX64.EFI",
        "EFI/Linux/Talos-v1.11.0.efi",
        "loader/loader.conf",
        "loader/keys/auto/PK.auth",
        "loader/keys/auto/KEK.auth",
        "loader/keys/auto/db.auth",
        "EFI/keys/uki-signing-cert.der",
    ] {
        std::fs::create_dir_all(x.join(f).parent().unwrap()).unwrap();
        run(
            "xorriso",
            &[
                "-osirrox",
                "on",
                "-indev",
                iso_path.to_str().unwrap(),
                "-extract",
                &format!("/{f}"),
                x.join(f).to_str().unwrap(),
            ],
        );
    }
    assert_verifies(&x.join("EFI/BOOT/BOOTX64.EFI"), &cert);
    assert_verifies(&x.join("EFI/Linux/Talos-v1.11.0.efi"), &cert);
    check_profile_pcrsigs(&std::fs::read(x.join("EFI/Linux/Talos-v1.11.0.efi")).unwrap());
    assert_eq!(
        std::fs::read_to_string(x.join("loader/loader.conf")).unwrap(),
        "# systemd-boot configuration\n\ntimeout 10\n\nsecure-boot-enroll if-safe\n"
    );
    assert_eq!(
        std::fs::read(x.join("EFI/keys/uki-signing-cert.der")).unwrap(),
        key_set.certificate_der()
    );
    let db = std::fs::read(x.join("loader/keys/auto/db.auth")).unwrap();
    assert!(
        db.windows(key_set.certificate_der().len())
            .any(|w| w == key_set.certificate_der()),
        "db.auth holds the certificate"
    );

    // Rotating the keys: the same request is rebuilt and signed by the new key only.
    s.stop().await;
    let (_, cert_b) = keys(&tmp.path().join("b"));
    let s = start_sb(&k, &tmp.path().join("b")).await;
    let g2 = get(&s, &format!("/image/{id}/{V}/{UKI}"), &[]).await;
    assert_eq!(g2.status, 200, "{}", g2.text());
    let uki_b = tmp.path().join("b.efi");
    std::fs::write(&uki_b, &g2.body).unwrap();
    assert_verifies(&uki_b, &cert_b);
    let out = Command::new("sbverify")
        .args(["--cert", cert.to_str().unwrap(), uki_b.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the UKI after rotation must not verify with the old cert"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secure_boot_off_answers_as_upstream() {
    let Some(k) = kit::imported(0) else { return };
    let s = crate::common::assets::start(&k).await;
    let id = create_schematic(&s, kit::SCHEMATIC).await;
    let c = get(&s, "/secureboot/signing-cert.pem", &[]).await;
    assert_eq!(c.status, 500, "{}", c.text());
    let g = get(&s, &format!("/image/{id}/{V}/{UKI}"), &[]).await;
    assert_eq!(g.status, 400, "{}", g.text());
    assert!(g.text().contains("secure boot is disabled"), "{}", g.text());
    s.stop().await;
}

#[test]
fn bad_keys_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    keys(&dir.path().join("a"));
    keys(&dir.path().join("b"));
    let cfg = dir.path().join("config.yaml");
    let key_a = dir.path().join("a/uki-signing-key.pem");
    let cert_b = dir.path().join("b/uki-signing-cert.pem");
    let pcr = dir.path().join("a/pcr-signing-key.pem");
    std::fs::write(
        &cfg,
        format!(
            "secureBoot:\n  enabled: true\n  file:\n    signingKeyPath: {}\n    signingCertPath: {}\n    pcrKeyPath: {}\n",
            key_a.display(),
            cert_b.display(),
            pcr.display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let out = Command::new(crate::common::bin())
        .args([
            "gc",
            "--dry-run",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("does not match the certificate"), "{err}");
    assert!(err.contains(&key_a.display().to_string()), "{err}");
    // Enabled without the files: the config names the missing key.
    std::fs::write(&cfg, "secureBoot:\n  enabled: true\n").unwrap();
    let out = Command::new(crate::common::bin())
        .args([
            "gc",
            "--dry-run",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("secureBoot.file.signingKeyPath"), "{err}");
}

/// `metal-amd64-secureboot.raw`: the ESP (found with `sfdisk`, read with mtools) holds signed
/// systemd-boot and UKI, `secure-boot-enroll if-safe` and the enrolment lists.
async fn check_disk(
    s: &TestServer,
    id: &str,
    dir: &Path,
    cert: &Path,
    keys: &image_factory::trust::secureboot::SecureBootKeys,
) {
    std::fs::create_dir_all(dir).unwrap();
    let g = get(
        s,
        &format!("/image/{id}/{V}/metal-amd64-secureboot.raw"),
        &[],
    )
    .await;
    assert_eq!(
        g.status,
        200,
        "{}",
        String::from_utf8_lossy(&g.body[..g.body.len().min(500)])
    );
    let disk = dir.join("disk.raw");
    std::fs::write(&disk, &g.body).unwrap();
    let table: serde_json::Value =
        serde_json::from_str(&run("sfdisk", &["--json", disk.to_str().unwrap()])).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    let efi = parts
        .iter()
        .find(|p| p["name"] == "EFI")
        .expect("EFI partition");
    let offset = efi["start"].as_u64().unwrap() * 512;
    let image = format!("{}@@{offset}", disk.display());
    for (src, name) in [
        ("::/EFI/boot/BOOTX64.efi", "boot.efi"),
        (&format!("::/EFI/Linux/Talos-{V}.efi") as &str, "uki.efi"),
        ("::/loader/loader.conf", "loader.conf"),
        ("::/loader/keys/auto/db.auth", "db.auth"),
        ("::/loader/keys/auto/PK.auth", "PK.auth"),
    ] {
        run(
            "mcopy",
            &["-n", "-i", &image, src, dir.join(name).to_str().unwrap()],
        );
    }
    assert_verifies(&dir.join("boot.efi"), cert);
    assert_verifies(&dir.join("uki.efi"), cert);
    assert_eq!(
        std::fs::read_to_string(dir.join("loader.conf")).unwrap(),
        "# systemd-boot configuration\n\ntimeout 10\n\nsecure-boot-enroll if-safe\n"
    );
    let db = std::fs::read(dir.join("db.auth")).unwrap();
    let der = keys.certificate_der();
    assert!(
        db.windows(der.len()).any(|w| w == der),
        "db.auth holds the certificate"
    );
}

/// Talos before 1.10 installs from its legacy installer image, which looks for the signed UKI
/// as `vmlinuz.efi.signed` (imager spec §8.1 step 4): a v1.9 Secure Boot installer carries it
/// and the signed systemd-boot in its artifacts layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_boot_installer_before_1_10_carries_vmlinuz_efi_signed() {
    let Some(k) = kit::imported_version("v1.9.5", 0) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (_, cert) = keys(&tmp.path().join("keys"));
    let s = start_sb(&k, &tmp.path().join("keys")).await;
    let id = create_schematic(&s, "customization: {}\n").await;
    let dir = tmp.path().join("installer");
    check_installer_of(&s, &id, "v1.9.5", "vmlinuz.efi.signed", &dir, &cert).await;
    s.stop().await;
}

/// `installer-amd64-secureboot.tar`: the artifacts layer's `vmlinuz.efi` and
/// `systemd-boot.efi` are both signed.
async fn check_installer(s: &TestServer, id: &str, dir: &Path, cert: &Path) {
    check_installer_of(s, id, V, "vmlinuz.efi", dir, cert).await
}

/// [`check_installer`] for `version`, whose UKI is `usr/install/amd64/<uki_name>`.
async fn check_installer_of(
    s: &TestServer,
    id: &str,
    version: &str,
    uki_name: &str,
    dir: &Path,
    cert: &Path,
) {
    std::fs::create_dir_all(dir).unwrap();
    let g = get(
        s,
        &format!("/image/{id}/{version}/installer-amd64-secureboot.tar"),
        &[],
    )
    .await;
    assert_eq!(g.status, 200, "{}", g.text());
    let mut archive = tar::Archive::new(&g.body[..]);
    let mut files = std::collections::BTreeMap::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut body).unwrap();
        files.insert(path, body);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let layer = manifest[0]["Layers"].as_array().unwrap().last().unwrap();
    let gz = flate2::read::GzDecoder::new(&files[layer.as_str().unwrap()][..]);
    let mut found = 0;
    let mut seen = Vec::new();
    for e in tar::Archive::new(gz).entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        seen.push(path.clone());
        let name = match path.strip_prefix("usr/install/amd64/") {
            Some(p) if p == uki_name => "vmlinuz.efi",
            Some("systemd-boot.efi") => "systemd-boot.efi",
            _ => continue,
        };
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut body).unwrap();
        std::fs::write(dir.join(name), body).unwrap();
        assert_verifies(&dir.join(name), cert);
        found += 1;
    }
    assert_eq!(
        found, 2,
        "the artifacts layer holds the UKI and systemd-boot.efi: {seen:?}"
    );
}

/// `doctor` reports the Secure Boot keys: fingerprint and expiry, or why they are refused.
#[test]
fn doctor_reports_secure_boot_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (good, _) = keys(&dir.path().join("a"));
    keys(&dir.path().join("b"));
    let cfg = dir.path().join("config.yaml");
    let data = dir.path().join("data");
    let doctor = |cert: &str| {
        std::fs::write(
            &cfg,
            format!(
                "secureBoot:\n  enabled: true\n  file:\n    signingKeyPath: {a}/uki-signing-key.pem\n    signingCertPath: {cert}\n    pcrKeyPath: {a}/pcr-signing-key.pem\n",
                a = dir.path().join("a").display(),
            ),
        )
        .unwrap();
        let out = Command::new(crate::common::bin())
            .args([
                "doctor",
                "--config",
                cfg.to_str().unwrap(),
                "--data-dir",
                data.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ok = doctor(
        &dir.path()
            .join("a/uki-signing-cert.pem")
            .display()
            .to_string(),
    );
    let line = ok
        .lines()
        .find(|l| l.contains("secure boot keys"))
        .unwrap_or_else(|| panic!("{ok}"));
    assert!(line.starts_with("[ ok ]"), "{line}");
    assert!(line.contains(good.fingerprint()), "{line}");
    assert!(line.contains("expires "), "{line}");
    let bad = doctor(
        &dir.path()
            .join("b/uki-signing-cert.pem")
            .display()
            .to_string(),
    );
    let line = bad
        .lines()
        .find(|l| l.contains("secure boot keys"))
        .unwrap_or_else(|| panic!("{bad}"));
    assert!(line.starts_with("[FAIL]"), "{line}");
    assert!(line.contains("does not match the certificate"), "{line}");
}
