use super::*;

const NOW: u64 = 1_800_000_000;

fn fresh(dir: &Path) -> SecureBootPaths {
    generate(dir, "test site", KeySize::Rsa2048, NOW)
        .expect("generate")
        .paths
}

#[test]
fn generated_keys_load_and_refuse_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let paths = fresh(dir.path());
    assert_eq!(paths, SecureBootPaths::in_dir(dir.path()));
    let keys = SecureBootKeys::load(&paths, NOW).expect("load");
    assert_eq!(keys.fingerprint().len(), 64);
    assert!(
        keys.certificate_pem()
            .starts_with("-----BEGIN CERTIFICATE-----\n")
    );
    assert!(
        keys.pcr_public_pem()
            .starts_with("-----BEGIN PUBLIC KEY-----\n")
    );
    assert_eq!(keys.not_after(), (NOW + GENERATED_VALIDITY_SECS) as i64);
    let key_text = std::fs::read_to_string(&paths.signing_key).unwrap();
    assert!(key_text.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&paths.pcr_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = generate(dir.path(), "x", KeySize::Rsa2048, NOW).unwrap_err();
    assert!(matches!(again, SecureBootError::Exists { .. }), "{again}");
}

#[test]
fn validity_is_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let paths = fresh(dir.path());
    let expired = SecureBootKeys::load(&paths, NOW + GENERATED_VALIDITY_SECS + 1).unwrap_err();
    assert!(
        matches!(
            expired,
            SecureBootError::CertificateValidity {
                state: "expired",
                ..
            }
        ),
        "{expired}"
    );
    assert!(expired.to_string().contains("expired"), "{expired}");
    let early = SecureBootKeys::load(&paths, NOW - 7200).unwrap_err();
    assert!(
        matches!(
            early,
            SecureBootError::CertificateValidity {
                state: "not yet valid",
                ..
            }
        ),
        "{early}"
    );
}

#[test]
fn key_and_certificate_must_match() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (pa, pb) = (fresh(a.path()), fresh(b.path()));
    let mixed = SecureBootPaths {
        signing_key: pa.signing_key.clone(),
        signing_cert: pb.signing_cert.clone(),
        pcr_key: pa.pcr_key.clone(),
    };
    let e = SecureBootKeys::load(&mixed, NOW).unwrap_err();
    assert!(matches!(e, SecureBootError::KeyMismatch { .. }), "{e}");
    // A PCR key that differs from the signing key is normal.
    let other_pcr = SecureBootPaths {
        pcr_key: pb.pcr_key.clone(),
        ..pa
    };
    SecureBootKeys::load(&other_pcr, NOW).expect("any RSA PCR key");
}

#[test]
fn wrong_key_types_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let paths = fresh(dir.path());
    let ec = dir.path().join("ec.pem");
    let ec_key = crate::trust::SigningKey::generate().unwrap();
    std::fs::write(&ec, ec_key.to_pkcs8_pem().unwrap()).unwrap();
    for (field, path) in [
        ("signing", &ec),
        ("pcr", &ec),
        ("cert-as-key", &paths.signing_cert),
    ] {
        let mut p = paths.clone();
        match field {
            "pcr" => p.pcr_key = path.clone(),
            _ => p.signing_key = path.clone(),
        }
        let e = SecureBootKeys::load(&p, NOW).unwrap_err();
        assert!(
            matches!(e, SecureBootError::WrongType { .. }),
            "{field}: {e}"
        );
        let text = e.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        if path == &ec {
            assert!(text.contains("ECDSA"), "{text}");
        } else {
            assert!(text.contains("not a private key"), "{text}");
        }
    }
    let mut p = paths.clone();
    p.signing_cert = paths.signing_key.clone();
    let e = SecureBootKeys::load(&p, NOW).unwrap_err();
    assert!(e.to_string().contains("not a CERTIFICATE"), "{e}");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    p.signing_cert = garbage;
    let e = SecureBootKeys::load(&p, NOW).unwrap_err();
    assert!(matches!(e, SecureBootError::Malformed { .. }), "{e}");
    p.signing_cert = dir.path().join("missing.pem");
    let e = SecureBootKeys::load(&p, NOW).unwrap_err();
    assert!(matches!(e, SecureBootError::Read { .. }), "{e}");
}

#[test]
fn pkcs8_rsa_keys_load_too() {
    let dir = tempfile::tempdir().unwrap();
    let paths = fresh(dir.path());
    let pkcs1 = std::fs::read_to_string(&paths.pcr_key).unwrap();
    let (_, der) = pem::first_block(&pkcs1).unwrap();
    let key = KeyPair::from_der(&der).unwrap();
    let pkcs8 = key.as_der().unwrap();
    std::fs::write(&paths.pcr_key, pem::encode("PRIVATE KEY", pkcs8.as_ref())).unwrap();
    let keys = SecureBootKeys::load(&paths, NOW).expect("PKCS#8 PCR key");
    assert_eq!(keys.pcr_public_pkcs1(), key.public_key().as_ref());
}
