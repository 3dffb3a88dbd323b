//! Secure Boot signatures checked by independent verifiers: Authenticode on Debian's
//! systemd-boot (`sbverify --cert`, `osslsigncode verify`, each refusing a one-byte-flipped
//! copy), our image hash against osslsigncode's, and the generated certificate read by
//! `openssl`.

use std::path::{Path, PathBuf};
use std::process::Command;

use aws_lc_rs::rsa::KeySize;
use image_factory::trust::secureboot::{SecureBootKeys, authenticode, generate};
use testsupport::tools;

use crate::common::assets::flip_byte;

/// Debian's systemd-boot (package `systemd-boot-efi`), unsigned.
pub const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// A fresh 2048-bit key set in `dir`, loaded.
pub fn keys(dir: &Path) -> (SecureBootKeys, PathBuf) {
    let now = image_factory::clock::now_secs();
    let files = generate(dir, "image-factory test", KeySize::Rsa2048, now).expect("generate");
    let keys = SecureBootKeys::load(&files.paths, now).expect("load");
    (keys, files.paths.signing_cert)
}

/// Whether the verifiers are installed (else the test skips, or fails under IF_REQUIRE_TOOLS).
pub fn verifiers() -> bool {
    tools::have("sbverify", "sbsigntool")
        && tools::have("osslsigncode", "osslsigncode")
        && tools::have("openssl", "openssl")
}

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let (ok, stdout, stderr) = run_split(cmd, args);
    (ok, format!("{stdout}{stderr}"))
}

fn run_split(cmd: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts both verifiers accept `signed` against `cert`.
pub fn assert_verifies(signed: &Path, cert: &Path) {
    let (s, c) = (signed.to_str().unwrap(), cert.to_str().unwrap());
    let (ok, text) = run("sbverify", &["--cert", c, s]);
    assert!(ok, "sbverify refuses {s}:\n{text}");
    let (ok, text) = run("osslsigncode", &["verify", "-CAfile", c, "-in", s]);
    assert!(ok, "osslsigncode refuses {s}:\n{text}");
}

/// Asserts both verifiers refuse `signed`.
pub fn assert_refused(signed: &Path, cert: &Path) {
    let (s, c) = (signed.to_str().unwrap(), cert.to_str().unwrap());
    let (ok, text) = run("sbverify", &["--cert", c, s]);
    assert!(!ok, "sbverify accepts the tampered {s}:\n{text}");
    let (ok, text) = run("osslsigncode", &["verify", "-CAfile", c, "-in", s]);
    assert!(!ok, "osslsigncode accepts the tampered {s}:\n{text}");
}

/// The digest osslsigncode computes for a signed file ("Calculated message digest").
fn osslsigncode_digest(signed: &Path, cert: &Path) -> String {
    let (_, text) = run(
        "osslsigncode",
        &[
            "verify",
            "-CAfile",
            cert.to_str().unwrap(),
            "-in",
            signed.to_str().unwrap(),
        ],
    );
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Calculated message digest"))
        .map(|rest| rest.trim_start_matches([' ', ':']).trim().to_lowercase())
        .unwrap_or_else(|| panic!("no calculated digest in:\n{text}"))
}

#[test]
fn signed_systemd_boot_verifies_and_a_flipped_byte_does_not() {
    if !verifiers() || !tools::require(Path::new(SYSTEMD_BOOT).exists(), "systemd-boot-efi") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (keys, cert) = keys(&dir.path().join("keys"));
    let signed = dir.path().join("systemd-bootx64.efi.signed");
    std::fs::copy(SYSTEMD_BOOT, &signed).unwrap();
    // The unsigned original is refused (no signature at all).
    let (ok, _) = run(
        "sbverify",
        &["--cert", cert.to_str().unwrap(), SYSTEMD_BOOT],
    );
    assert!(!ok, "the unsigned original must not verify");

    // The hash of the unsigned image as the signer pads it (to 8 bytes; Debian's
    // systemd-boot is not aligned).
    let unsigned_digest = {
        let mut bytes = std::fs::read(SYSTEMD_BOOT).unwrap();
        assert_ne!(bytes.len() % 8, 0, "the test wants the padding path");
        bytes.resize(bytes.len().div_ceil(8) * 8, 0);
        let len = bytes.len() as u64;
        authenticode::image_digest(&mut std::io::Cursor::new(bytes), len).unwrap()
    };
    authenticode::sign_file(&signed, &keys).expect("sign");
    assert_verifies(&signed, &cert);
    assert_eq!(
        osslsigncode_digest(&signed, &cert),
        hex::encode(unsigned_digest),
        "our Authenticode hash is osslsigncode's"
    );
    // Signing twice is refused rather than stacking signatures.
    let again = authenticode::sign_file(&signed, &keys).unwrap_err();
    assert!(again.to_string().contains("already signed"), "{again}");

    // A byte flipped inside the first section's raw data (past the headers).
    let tampered = dir.path().join("tampered.efi");
    std::fs::copy(&signed, &tampered).unwrap();
    flip_byte(&tampered, 0x1000 + 17);
    assert_refused(&tampered, &cert);

    // Another site's certificate does not verify our signature.
    let (_, other_cert) = self::keys(&dir.path().join("other"));
    let (ok, text) = run(
        "sbverify",
        &[
            "--cert",
            other_cert.to_str().unwrap(),
            signed.to_str().unwrap(),
        ],
    );
    assert!(!ok, "sbverify accepts a foreign certificate:\n{text}");
}

#[test]
fn generated_certificate_reads_in_openssl() {
    if !tools::have("openssl", "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (keys, cert) = keys(dir.path());
    let c = cert.to_str().unwrap();
    let (ok, text) = run(
        "openssl",
        &[
            "x509",
            "-in",
            c,
            "-noout",
            "-text",
            "-fingerprint",
            "-sha256",
        ],
    );
    assert!(ok, "{text}");
    assert!(text.contains("CN = image-factory test"), "{text}");
    assert!(text.contains("Code Signing"), "{text}");
    let fp = text
        .lines()
        .find_map(|l| l.strip_prefix("sha256 Fingerprint="))
        .expect("fingerprint")
        .replace(':', "")
        .to_lowercase();
    assert_eq!(fp, keys.fingerprint());
    let (ok, text) = run("openssl", &["verify", "-CAfile", c, c]);
    assert!(
        ok,
        "the self-signed certificate verifies against itself: {text}"
    );
    // The key file is the certificate's key, as openssl sees it.
    let key = dir.path().join("uki-signing-key.pem");
    let (_, from_key, _) = run_split(
        "openssl",
        &[
            "rsa",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-outform",
            "DER",
        ],
    );
    let (_, from_cert, _) = run_split(
        "sh",
        &[
            "-c",
            &format!("openssl x509 -in {c} -pubkey -noout | openssl pkey -pubin -outform DER"),
        ],
    );
    assert!(!from_key.is_empty());
    assert_eq!(from_key, from_cert);
}

/// `keys secureboot generate`: the three PEM files and PK/KEK/db `.auth` files whose
/// signatures openssl verifies over the UEFI authenticated-variable payload.
#[test]
fn cli_generates_keys_and_enrolment_files() {
    if !tools::have("openssl", "openssl") {
        return;
    }
    use image_factory::trust::secureboot::enroll;
    use image_factory::trust::secureboot::pkcs7::content_info;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sb");
    let run_cli = || {
        Command::new(crate::common::bin())
            .args([
                "keys",
                "secureboot",
                "generate",
                "--out",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    let o = run_cli();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("signingCertPath: "), "{stdout}");
    let cert = out.join("uki-signing-cert.pem");
    let (ok, text) = run(
        "openssl",
        &["x509", "-in", cert.to_str().unwrap(), "-noout", "-text"],
    );
    assert!(ok && text.contains("Public-Key: (4096 bit)"), "{text}");
    let cert_der = Command::new("openssl")
        .args(["x509", "-in", cert.to_str().unwrap(), "-outform", "DER"])
        .output()
        .unwrap()
        .stdout;
    assert!(!cert_der.is_empty());
    for (file, variable, vendor) in [
        ("PK.auth", "PK", enroll::EFI_GLOBAL_VARIABLE),
        ("KEK.auth", "KEK", enroll::EFI_GLOBAL_VARIABLE),
        ("db.auth", "db", enroll::EFI_IMAGE_SECURITY_DATABASE),
    ] {
        let bytes = std::fs::read(out.join(file)).unwrap();
        let time: [u8; 16] = bytes[..16].try_into().unwrap();
        let len = u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as usize;
        assert_eq!(
            &bytes[20..24],
            &[0x00, 0x02, 0xF1, 0x0E],
            "{file}: revision, type"
        );
        let signed = &bytes[40..16 + len];
        let list = &bytes[16 + len..];
        // The list holds the certificate's DER after the 28-byte header and owner GUID.
        assert_eq!(&list[44..], cert_der.as_slice(), "{file}");
        let payload = enroll::signed_payload(variable, vendor, &time, list);
        let p7 = dir.path().join(format!("{file}.p7"));
        let data = dir.path().join(format!("{file}.data"));
        std::fs::write(&p7, content_info(signed)).unwrap();
        std::fs::write(&data, &payload).unwrap();
        let (ok, text) = run(
            "openssl",
            &[
                "cms",
                "-verify",
                "-binary",
                "-inform",
                "DER",
                "-in",
                p7.to_str().unwrap(),
                "-content",
                data.to_str().unwrap(),
                "-CAfile",
                cert.to_str().unwrap(),
                "-purpose",
                "any",
                "-out",
                "/dev/null",
            ],
        );
        assert!(ok, "{file}: {text}");
        // A changed payload (another variable name) does not verify.
        std::fs::write(&data, enroll::signed_payload("dbx", vendor, &time, list)).unwrap();
        let (ok, _) = run(
            "openssl",
            &[
                "cms",
                "-verify",
                "-binary",
                "-inform",
                "DER",
                "-in",
                p7.to_str().unwrap(),
                "-content",
                data.to_str().unwrap(),
                "-CAfile",
                cert.to_str().unwrap(),
                "-purpose",
                "any",
                "-out",
                "/dev/null",
            ],
        );
        assert!(!ok, "{file}: a payload for another variable verifies");
    }
    // A second run refuses to overwrite the keys.
    let o = run_cli();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
}
